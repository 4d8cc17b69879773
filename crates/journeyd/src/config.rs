//! The configuration file, as typed structs with their defaults. `config/journeyd.toml` is the
//! commented copy of these defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

/// The whole configuration. Every field has a default, so an empty file (or none) works.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JourneydConfig {
    /// Folder for the hot store, TLS material and state. Default `journeyd-data`, relative to the
    /// folder journeyd starts in.
    pub data_dir: PathBuf,
    pub ingest: IngestSection,
    pub store: StoreSection,
    pub api: ApiSection,
    pub tls: TlsSection,
    pub demo: DemoSection,
    pub keys: KeysSection,
    pub archive: ArchiveSection,
}

impl Default for JourneydConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("journeyd-data"),
            ingest: IngestSection::default(),
            store: StoreSection::default(),
            api: ApiSection::default(),
            tls: TlsSection::default(),
            demo: DemoSection::default(),
            keys: KeysSection::default(),
            archive: ArchiveSection::default(),
        }
    }
}

/// `[ingest]`: the QUIC endpoint devices connect to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSection {
    /// UDP address to listen on. Default `0.0.0.0:4433`.
    pub listen: SocketAddr,
    /// A connection silent this long is closed. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Time a new connection has to send its hello. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub hello_timeout: Duration,
    /// Most positions in one batch; larger batches get "split and resend". Default 10000.
    pub max_batch_positions: u32,
    /// Records a device may have unacked at once. Default 64.
    pub max_in_flight: u32,
    /// Positions waiting for the store across all devices before batches are refused with
    /// "retry later". Default 2000000.
    pub max_queued_positions: u64,
    /// Most connections at once. Default 50000.
    pub max_connections: u64,
    /// QUIC endpoints sharing `listen` (SO_REUSEPORT), each driven by its own task. Default 1.
    pub endpoints: usize,
    /// Receive and send buffer of the UDP socket, bytes. Default 64 MiB. The kernel caps it at
    /// `net.core.rmem_max` unless journeyd may administer the network (CAP_NET_ADMIN).
    pub udp_buffer_bytes: usize,
    /// How far past the server clock a fix time may be. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub future_tolerance: Duration,
    /// How long devices may hold positions before sending them (device buffer plus slack);
    /// also the window of the GPS week-rollover rule. Default `8d`.
    #[serde(with = "humantime_serde")]
    pub device_buffer: Duration,
}

impl Default for IngestSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 4433)),
            idle_timeout: Duration::from_secs(30),
            hello_timeout: Duration::from_secs(10),
            max_batch_positions: 10_000,
            max_in_flight: 64,
            max_queued_positions: 2_000_000,
            max_connections: 50_000,
            endpoints: journeyd_ingest::DEFAULT_ENDPOINTS,
            udp_buffer_bytes: journeyd_ingest::UDP_BUFFER_BYTES,
            future_tolerance: Duration::from_secs(300),
            device_buffer: Duration::from_secs(8 * 86_400),
        }
    }
}

/// `[api]`: the HTTPS query API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// TCP address to listen on (HTTPS only). Default `0.0.0.0:8443`.
    pub listen: SocketAddr,
    /// Lifetime of a login token. Default `1h`.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Failed logins in a row that lock an account. Default 5.
    pub max_failed_logins: u32,
    /// Failed logins from one address within `lockout` that lock that address. Default 20.
    pub max_failed_logins_per_source: u32,
    /// How long a locked account or address stays locked. Default `15m`.
    #[serde(with = "humantime_serde")]
    pub lockout: Duration,
    /// Silence between fixes that reports show as a gap rather than as driving. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub gap: Duration,
    /// Shortest stay within `stop_radius_m` that reports show as a stop. Default `3m`.
    #[serde(with = "humantime_serde")]
    pub stop_min: Duration,
    /// Default 50.
    pub stop_radius_m: f64,
}

impl Default for ApiSection {
    fn default() -> Self {
        let d = journeyd_api::ApiConfig::default();
        Self {
            listen: d.listen,
            token_ttl: d.token_ttl,
            max_failed_logins: d.max_failed_logins,
            max_failed_logins_per_source: d.max_failed_logins_per_source,
            lockout: d.lockout,
            gap: d.gap,
            stop_min: d.stop_min,
            stop_radius_m: d.stop_radius_m,
        }
    }
}

impl ApiSection {
    pub fn to_config(&self) -> journeyd_api::ApiConfig {
        journeyd_api::ApiConfig {
            listen: self.listen,
            token_ttl: self.token_ttl,
            max_failed_logins: self.max_failed_logins,
            max_failed_logins_per_source: self.max_failed_logins_per_source,
            lockout: self.lockout,
            gap: self.gap,
            stop_min: self.stop_min,
            stop_radius_m: self.stop_radius_m,
        }
    }
}

/// `[store]`: the RocksDB hot store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Sync the write-ahead log before every ack. Default true. Turning it off breaks the
    /// promise that acked positions survive a power loss; only benchmarks do.
    pub sync: bool,
    /// Records waiting for the writer before devices are refused with "retry later", split
    /// evenly over the writer's threads. Default 4096.
    pub queue_capacity: usize,
    /// Most records in one group commit. Default 2048.
    pub max_group: usize,
    /// Writer threads, each committing the records of its share of the devices; their synced
    /// writes overlap, so one seals and stages while another waits for the disk. Default 2.
    pub writer_shards: usize,
    /// Memtable size. Default 64 MiB.
    pub write_buffer_bytes: usize,
    /// Benchmarks only: ack every record without storing it, to measure the network path
    /// alone. Nothing acked is kept. Default false.
    pub ack_without_storing: bool,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            sync: true,
            queue_capacity: 4096,
            max_group: 2048,
            writer_shards: 2,
            write_buffer_bytes: 64 << 20,
            ack_without_storing: false,
        }
    }
}

/// `[tls]`: the server certificate. Default: a self-signed one generated at first start and
/// kept in `<data_dir>/tls/`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// PEM certificate chain. Default `<data_dir>/tls/cert.pem`.
    pub cert: Option<PathBuf>,
    /// PEM private key. Default `<data_dir>/tls/key.pem`.
    pub key: Option<PathBuf>,
}

/// `[keys]`: the master key that wraps every tenant's data key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysSection {
    /// File holding the master key as 64 hex digits. Default `<data_dir>/master.key`, created at
    /// first start. `JOURNEYD_MASTER_KEY` in the environment takes precedence over any file.
    pub master_key_file: Option<PathBuf>,
}

/// `[archive]`: where journeys past the hot retention and backups go, and how often.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveSection {
    /// Archive into this local folder when no S3 bucket is set. Default `<data_dir>/archive`.
    pub dir: Option<PathBuf>,
    /// How long after a journey's end its late positions may still arrive (the device buffer);
    /// a journey is archived only after max(its tenant's hot retention, this). At least 7 days.
    #[serde(with = "humantime_serde")]
    pub late_arrival_window: Duration,
    /// How often `serve` runs the compactor. "0s" turns it off.
    #[serde(with = "humantime_serde")]
    pub compact_every: Duration,
    /// How often `serve` takes a backup. "0s" turns it off.
    #[serde(with = "humantime_serde")]
    pub backup_every: Duration,
    /// Attempts per object store call before a run gives up (it is retried at the next run).
    pub attempts: u32,
    pub s3: S3Section,
}

impl Default for ArchiveSection {
    fn default() -> Self {
        Self {
            dir: None,
            late_arrival_window: Duration::from_secs(8 * 86_400),
            compact_every: Duration::from_secs(3600),
            backup_every: Duration::from_secs(86_400),
            attempts: 6,
            s3: S3Section::default(),
        }
    }
}

/// `[archive.s3]`: an S3 bucket (AWS, or any S3-compatible store such as MinIO, Garage or Ceph).
/// Used when `bucket` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Section {
    pub bucket: String,
    /// Empty for AWS; e.g. "http://127.0.0.1:3900" for a local server.
    pub endpoint: String,
    pub region: String,
    /// Prefix of every object name, e.g. "journeyd/".
    pub prefix: String,
    /// Path-style addressing (most S3-compatible servers want it).
    pub path_style: bool,
    /// Credentials. Empty: taken from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Objects above this size are uploaded in parts of this size. At least 5 MiB.
    pub part_bytes: usize,
    /// Longest one attempt of one call may take before it is abandoned and retried.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for S3Section {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            endpoint: String::new(),
            region: "us-east-1".into(),
            prefix: String::new(),
            path_style: false,
            access_key_id: String::new(),
            secret_access_key: String::new(),
            part_bytes: 16 << 20,
            timeout: Duration::from_secs(120),
        }
    }
}

/// `[demo]`: the company created on first start, so that devices can enrol at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoSection {
    /// Create the tenant if the store has none. Default true.
    pub enabled: bool,
    /// Its name. Default `demo`.
    pub tenant: String,
}

impl Default for DemoSection {
    fn default() -> Self {
        Self {
            enabled: true,
            tenant: "demo".into(),
        }
    }
}

impl JourneydConfig {
    /// Reads a config file; a missing `path` means the embedded defaults.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("config {}", path.display()))
    }

    /// Parses and checks a config text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Self = toml::from_str(text).map_err(|e| {
            let hint = if e.to_string().contains("socket address") {
                "\n(an address is a literal IP and port, e.g. \"127.0.0.1:4433\" or \"[::1]:4433\")"
            } else {
                ""
            };
            anyhow::anyhow!("{e}{hint}")
        })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.ingest.max_batch_positions >= 1,
            "ingest.max_batch_positions must be at least 1"
        );
        anyhow::ensure!(
            self.ingest.max_batch_positions <= 100_000,
            "ingest.max_batch_positions must be at most 100000"
        );
        anyhow::ensure!(
            self.ingest.max_in_flight >= 1,
            "ingest.max_in_flight must be at least 1"
        );
        anyhow::ensure!(
            self.ingest.idle_timeout >= Duration::from_secs(1),
            "ingest.idle_timeout must be at least 1s"
        );
        anyhow::ensure!(
            (1..=64).contains(&self.ingest.endpoints),
            "ingest.endpoints must be 1 to 64"
        );
        anyhow::ensure!(
            (64 << 10..=1 << 30).contains(&self.ingest.udp_buffer_bytes),
            "ingest.udp_buffer_bytes must be 64 KiB to 1 GiB"
        );
        anyhow::ensure!(
            self.store.queue_capacity >= 1
                && self.store.max_group >= 1
                && (1..=64).contains(&self.store.writer_shards),
            "store.queue_capacity and store.max_group must be at least 1, store.writer_shards 1 to 64"
        );
        anyhow::ensure!(
            self.archive.late_arrival_window >= self.ingest.device_buffer,
            "archive.late_arrival_window must be at least ingest.device_buffer ({}), so positions a device buffered still land hot",
            humantime::format_duration(self.ingest.device_buffer)
        );
        anyhow::ensure!(
            self.archive.late_arrival_window <= Duration::from_secs(3650 * 86_400),
            "archive.late_arrival_window must be at most 10 years"
        );
        anyhow::ensure!(
            self.archive
                .dir
                .as_ref()
                .is_none_or(|d| !d.as_os_str().is_empty()),
            "archive.dir must not be empty (leave it out for <data_dir>/archive)"
        );
        let s3 = &self.archive.s3;
        anyhow::ensure!(
            !s3.prefix.split('/').any(|p| p == ".." || p == "."),
            "archive.s3.prefix must not contain . or .. segments"
        );
        anyhow::ensure!(
            s3.endpoint.is_empty()
                || s3.endpoint.starts_with("http://")
                || s3.endpoint.starts_with("https://"),
            "archive.s3.endpoint must start with http:// or https:// (or be empty for AWS)"
        );
        anyhow::ensure!(
            s3.timeout >= Duration::from_secs(1),
            "archive.s3.timeout must be at least 1s"
        );
        anyhow::ensure!(
            self.archive.s3.part_bytes >= 5 << 20,
            "archive.s3.part_bytes must be at least 5 MiB (5242880)"
        );
        anyhow::ensure!(
            self.archive.attempts >= 1,
            "archive.attempts must be at least 1"
        );
        Ok(())
    }

    pub fn cert_path(&self) -> PathBuf {
        self.tls
            .cert
            .clone()
            .unwrap_or_else(|| self.data_dir.join("tls/cert.pem"))
    }

    pub fn key_path(&self) -> PathBuf {
        self.tls
            .key
            .clone()
            .unwrap_or_else(|| self.data_dir.join("tls/key.pem"))
    }

    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("hot")
    }

    /// Where the master key comes from: the environment if set, else the key file.
    pub fn master_key_source(&self) -> journeyd_keys::MasterKeySource {
        if std::env::var_os(journeyd_keys::MASTER_KEY_ENV).is_some() {
            return journeyd_keys::MasterKeySource::Environment;
        }
        match &self.keys.master_key_file {
            Some(path) => journeyd_keys::MasterKeySource::File {
                path: path.clone(),
                create: false,
            },
            // Made at first start only: a store that exists and has lost its key must say so,
            // not get a new key that opens nothing.
            None => journeyd_keys::MasterKeySource::File {
                path: self.data_dir.join("master.key"),
                create: !self.store_path().join("CURRENT").exists(),
            },
        }
    }

    /// The store's config.
    pub fn store_config(&self) -> journeyd_store::StoreConfig {
        journeyd_store::StoreConfig {
            path: self.store_path(),
            sync: self.store.sync,
            write_buffer_bytes: self.store.write_buffer_bytes,
            master_key: self.master_key_source(),
        }
    }

    /// Where archived journeys and backups go.
    pub fn object_store_config(&self) -> anyhow::Result<journeyd_objects::ObjectStoreConfig> {
        let s3 = &self.archive.s3;
        if s3.bucket.is_empty() {
            return Ok(journeyd_objects::ObjectStoreConfig::Local {
                dir: self
                    .archive
                    .dir
                    .clone()
                    .unwrap_or_else(|| self.data_dir.join("archive")),
            });
        }
        let from_env = |value: &str, var: &str| {
            if value.is_empty() {
                std::env::var(var).unwrap_or_default()
            } else {
                value.to_owned()
            }
        };
        Ok(journeyd_objects::ObjectStoreConfig::S3(
            journeyd_objects::S3Config {
                endpoint: s3.endpoint.clone(),
                region: s3.region.clone(),
                bucket: s3.bucket.clone(),
                prefix: s3.prefix.clone(),
                path_style: s3.path_style,
                access_key_id: from_env(&s3.access_key_id, "AWS_ACCESS_KEY_ID"),
                secret_access_key: from_env(&s3.secret_access_key, "AWS_SECRET_ACCESS_KEY"),
                part_bytes: s3.part_bytes,
                attempt_timeout: s3.timeout,
            },
        ))
    }

    /// Where serve writes the demo tenant's enrolment code on first start.
    pub fn enrolment_code_path(&self) -> PathBuf {
        self.data_dir.join("demo-enrolment-code")
    }

    /// Where serve writes the demo admin's first password on first start.
    pub fn admin_password_path(&self) -> PathBuf {
        self.data_dir.join("demo-admin-password")
    }

    /// Where serve writes its bound addresses once it is ready.
    pub fn ready_path(&self) -> PathBuf {
        self.data_dir.join("ready.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_to_the_defaults() {
        let text = include_str!("../../../config/journeyd.toml");
        let parsed = JourneydConfig::parse(text).unwrap();
        let defaults = JourneydConfig::default();
        assert_eq!(format!("{parsed:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn mistakes_are_named() {
        let e = JourneydConfig::parse("[ingest]\nmax_batch_positon = 5\n").unwrap_err();
        assert!(format!("{e:#}").contains("max_batch_positon"), "{e:#}");
        let e = JourneydConfig::parse("[ingest]\nidle_timeout = \"soon\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("idle_timeout"), "{e:#}");
        let e = JourneydConfig::parse("[ingest]\nmax_batch_positions = 0\n").unwrap_err();
        assert!(format!("{e:#}").contains("max_batch_positions"), "{e:#}");
    }
}
