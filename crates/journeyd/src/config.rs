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
    /// Records waiting for the writer before devices are refused with "retry later".
    /// Default 4096.
    pub queue_capacity: usize,
    /// Most records in one group commit. Default 2048.
    pub max_group: usize,
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
            self.store.queue_capacity >= 1 && self.store.max_group >= 1,
            "store.queue_capacity and store.max_group must be at least 1"
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
