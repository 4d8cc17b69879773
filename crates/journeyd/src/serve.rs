//! `journeyd serve`: the store, its writer and the ingest endpoint, started together.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use journeyd_ingest::{Clock, IngestConfig, IngestServer, system_clock};
use journeyd_store::{HotStore, Writer, WriterConfig};
use journeyd_wire::ValidationRules;
use journeyd_wire::session::SessionLimits;

use crate::config::JourneydConfig;

/// A running node.
#[derive(Debug)]
pub struct Server {
    pub store: Arc<HotStore>,
    pub writer: Writer,
    pub ingest: IngestServer,
    pub api: journeyd_api::ApiServer,
    pub objects: Arc<journeyd_objects::ObjectStore>,
    pub compactor: Arc<journeyd_archiver::Compactor>,
    pub config: JourneydConfig,
    archive_jobs: tokio::task::JoinHandle<()>,
}

/// What serve writes to `ready.json` once it listens.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Ready {
    pub pid: u32,
    pub quic: std::net::SocketAddr,
    pub api: std::net::SocketAddr,
    pub cert: std::path::PathBuf,
}

pub fn now_us() -> i64 {
    (system_clock())()
}

impl Server {
    /// Opens the store, creates the demo tenant on first start, and starts ingest on the
    /// current tokio runtime.
    pub fn start(config: JourneydConfig) -> anyhow::Result<Self> {
        Self::start_with_clock(config, system_clock())
    }

    pub fn start_with_clock(config: JourneydConfig, clock: Clock) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        let started = std::time::Instant::now();
        let store_config = config.store_config();
        let new_master_key = match &store_config.master_key {
            journeyd_keys::MasterKeySource::File { path, create: true } if !path.exists() => {
                Some(path.clone())
            }
            _ => None,
        };
        if config.store.ack_without_storing {
            tracing::warn!(
                "store.ack_without_storing is on: records are acked and thrown away (benchmarks only)"
            );
        }
        let store = Arc::new(HotStore::open(&store_config).with_context(|| {
            format!(
                "opening the hot store in {} (is another journeyd using it?)",
                store_config.path.display()
            )
        })?);
        if let Some(path) = new_master_key {
            tracing::warn!(
                file = %path.display(),
                "created the master key beside the data: keep a copy somewhere safe (without it nothing here can be read) and, for real use, keep it off this disk (keys.master_key_file or JOURNEYD_MASTER_KEY)"
            );
        }
        ensure_demo_tenant(&config, &store, clock())?;

        let writer = Writer::start(
            store.clone(),
            WriterConfig {
                queue_capacity: config.store.queue_capacity,
                max_group: config.store.max_group,
                shards: config.store.writer_shards,
                ack_without_storing: config.store.ack_without_storing,
            },
        );
        let (certs, key) =
            journeyd_ingest::tls::load_or_generate(&config.cert_path(), &config.key_path())?;
        let ingest_config = IngestConfig {
            listen: config.ingest.listen,
            limits: SessionLimits {
                max_batch_positions: config.ingest.max_batch_positions,
                max_in_flight: config.ingest.max_in_flight,
                idle_timeout_ms: config.ingest.idle_timeout.as_millis().min(u32::MAX as u128)
                    as u32,
            },
            rules: ValidationRules {
                future_tolerance_us: config.ingest.future_tolerance.as_micros() as i64,
                device_buffer_us: config.ingest.device_buffer.as_micros() as i64,
            },
            hello_timeout: config.ingest.hello_timeout,
            max_queued_positions: config.ingest.max_queued_positions,
            max_connections: config.ingest.max_connections,
            endpoints: config.ingest.endpoints,
            udp_buffer_bytes: config.ingest.udp_buffer_bytes,
            clock: clock.clone(),
        };
        let ingest = IngestServer::start(
            ingest_config,
            certs.clone(),
            key.clone_key(),
            store.clone(),
            writer.clone(),
        )?;
        let objects = crate::archive_cmd::open_objects(&config)?;
        let compactor = Arc::new(crate::archive_cmd::compactor(
            &config,
            store.clone(),
            objects.clone(),
        ));
        let master = journeyd_keys::MasterKey::load(&config.master_key_source())?;
        let archive_jobs = tokio::spawn(crate::archive_cmd::schedule(
            config.clone(),
            store.clone(),
            objects.clone(),
            compactor.clone(),
            master,
            clock.clone(),
        ));
        tracing::info!(at = objects.describe(), "archive");
        let api = journeyd_api::ApiServer::start(
            config.api.to_config(),
            certs,
            key,
            store.clone(),
            ingest.clone(),
            journeyd_api::ArchiveAccess {
                objects: objects.clone(),
                compactor: compactor.stats().clone(),
            },
            clock,
        )?;
        let ready = Ready {
            pid: std::process::id(),
            quic: ingest.local_addr(),
            api: api.local_addr(),
            cert: config.cert_path(),
        };
        write_atomically(&config.ready_path(), &serde_json::to_vec_pretty(&ready)?)?;
        tracing::info!(quic = %ready.quic, api = %ready.api, data_dir = %config.data_dir.display(), startup_ms = started.elapsed().as_millis() as u64, "journeyd ready");
        Ok(Self {
            store,
            writer,
            ingest,
            api,
            objects,
            compactor,
            config,
            archive_jobs,
        })
    }

    /// Stops ingest, lets the writer finish what it holds, and flushes the store.
    pub async fn shutdown(self) {
        self.archive_jobs.abort();
        self.ingest.shutdown().await;
        let Self {
            store,
            writer,
            config,
            ..
        } = self;
        let _ = std::fs::remove_file(config.ready_path());
        tokio::task::spawn_blocking(move || close_store(&writer, &store))
            .await
            .ok();
        tracing::info!("journeyd stopped");
    }

    /// The same, without waiting for devices to hear the close: for drops and tests.
    pub fn stop_now(&self) {
        self.archive_jobs.abort();
        self.ingest.close();
        close_store(&self.writer, &self.store);
    }
}

/// Writes what is queued, flushes memtables, and stops RocksDB's background work so that the
/// process can exit cleanly.
fn close_store(writer: &Writer, store: &HotStore) {
    writer.shutdown();
    if let Err(e) = store.flush() {
        tracing::warn!(error = %e, "flushing the store at shutdown");
    }
    store.stop_background_work();
}

/// On a store without tenants, creates the demo tenant and its admin, and writes the enrolment
/// code and admin password files. Does nothing when disabled or when a tenant exists.
pub fn ensure_demo_tenant(
    config: &JourneydConfig,
    store: &HotStore,
    now: i64,
) -> anyhow::Result<()> {
    if !config.demo.enabled || !store.tenants()?.is_empty() {
        return Ok(());
    }
    let (tenant, code) = store.create_tenant(&config.demo.tenant, now)?;
    write_private(&config.enrolment_code_path(), hex::encode(code).as_bytes())?;
    let password = journeyd_api::auth::random_password()?;
    let admin = journeyd_api::auth::new_user(
        tenant.id,
        "admin",
        journeyd_store::Role::Admin,
        &password,
        now,
    )?;
    store.put_user(&admin)?;
    write_private(&config.admin_password_path(), password.as_bytes())?;
    tracing::info!(
        tenant = %tenant.name,
        code_file = %config.enrolment_code_path().display(),
        admin_password_file = %config.admin_password_path().display(),
        "created the demo tenant and its admin; devices enrol with the code in the file"
    );
    Ok(())
}

pub(crate) fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Runs until SIGINT or SIGTERM, then shuts down cleanly.
pub async fn run(config: JourneydConfig) -> anyhow::Result<()> {
    let server = Server::start(config)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    tokio::time::timeout(Duration::from_secs(30), server.shutdown())
        .await
        .ok();
    Ok(())
}
