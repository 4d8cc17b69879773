//! The archive's commands: `compact`, `archive …`, `keys …`, `backup`, `restore-backup`, and
//! the wiring `serve` uses to run the compactor and backups on a schedule.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use journeyd_archiver::{Compactor, CompactorConfig, Progress, RunReport};
use journeyd_objects::{ObjectStore, RetryPolicy};
use journeyd_store::{DeviceId, HotStore, JourneyId, TenantId};

use crate::config::JourneydConfig;

/// Opens the archive's object store as configured (creating an S3 bucket is left to the
/// operator; a local folder is created).
pub fn open_objects(config: &JourneydConfig) -> anyhow::Result<Arc<ObjectStore>> {
    let objects = ObjectStore::open(
        &config.object_store_config()?,
        RetryPolicy {
            attempts: config.archive.attempts,
            ..RetryPolicy::default()
        },
    )
    .context("opening the archive's object store")?;
    Ok(Arc::new(objects))
}

/// Where the compactor and backups write files before uploading them.
pub fn work_dir(config: &JourneydConfig) -> PathBuf {
    config.data_dir.join("work")
}

pub fn compactor(
    config: &JourneydConfig,
    store: Arc<HotStore>,
    objects: Arc<ObjectStore>,
) -> Compactor {
    Compactor::new(
        store,
        objects,
        CompactorConfig {
            late_arrival_window: config.archive.late_arrival_window,
            max_rows_per_object: 4_000_000,
            work_dir: work_dir(config),
        },
    )
}

/// A progress bar on a terminal.
struct BarProgress {
    bar: indicatif::ProgressBar,
    started: std::time::Instant,
    rows: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
}

impl Progress for BarProgress {
    fn begin(&self, journeys_total: u64, _rows_total: u64) {
        self.bar.set_length(journeys_total);
        self.bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} journeys  {msg}  {elapsed}",
            )
            .expect("template is valid"),
        );
    }
    fn advance(&self, journeys: u64, rows: u64, bytes: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let rows = self.rows.fetch_add(rows, Relaxed) + rows;
        let bytes = self.bytes.fetch_add(bytes, Relaxed) + bytes;
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        self.bar.inc(journeys);
        self.bar.set_message(format!(
            "{rows} rows  {:.1} MiB  {:.0} rows/s",
            bytes as f64 / (1 << 20) as f64,
            rows as f64 / secs
        ));
    }
    fn finish(&self, _report: &RunReport) {
        self.bar.finish();
    }
}

fn progress() -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Box::new(BarProgress {
            bar: indicatif::ProgressBar::new(0),
            started: std::time::Instant::now(),
            rows: Default::default(),
            bytes: Default::default(),
        })
    } else {
        Box::new(journeyd_archiver::compact::LogProgress)
    }
}

/// Parses `--now` (RFC 3339), or the clock.
pub fn now_or(now: Option<&str>) -> anyhow::Result<i64> {
    match now {
        None => Ok(crate::serve::now_us()),
        Some(text) => Ok(chrono::DateTime::parse_from_rfc3339(text)
            .with_context(|| {
                format!("--now {text:?}: expected an RFC 3339 time such as 2027-03-01T00:00:00Z")
            })?
            .timestamp_micros()),
    }
}

/// `journeyd compact`.
pub async fn compact(
    config: &JourneydConfig,
    store: Arc<HotStore>,
    now_us: i64,
) -> anyhow::Result<RunReport> {
    let objects = open_objects(config)?;
    let compactor = compactor(config, store, objects);
    let progress = progress();
    Ok(compactor.run(now_us, progress.as_ref()).await?)
}

/// Finds a tenant by name, or the only one.
pub fn tenant(store: &HotStore, name: Option<&str>) -> anyhow::Result<TenantId> {
    let tenants = store.tenants()?;
    match name {
        Some(n) => tenants
            .iter()
            .find(|t| t.name == n)
            .map(|t| t.id)
            .with_context(|| format!("no tenant named {n:?}")),
        None if tenants.len() == 1 => Ok(tenants[0].id),
        None => anyhow::bail!("{} tenants: name one with --tenant", tenants.len()),
    }
}

/// `journeyd archive restore`.
pub async fn restore(
    config: &JourneydConfig,
    store: &HotStore,
    tenant: TenantId,
    device: u64,
    journey: u64,
    days: u32,
    now_us: i64,
) -> anyhow::Result<usize> {
    let entry = store
        .archived(tenant, DeviceId(device), JourneyId(journey))?
        .with_context(|| format!("journey {journey} of device {device} is not in the archive"))?;
    anyhow::ensure!(
        (1..=90).contains(&days),
        "--days {days}: a restore lasts 1 to 90 days"
    );
    let objects = open_objects(config)?;
    let until = now_us.saturating_add(days as i64 * 86_400_000_000);
    Ok(journeyd_archiver::retrieve::restore(store, &objects, &entry, until, now_us).await?)
}

/// `journeyd archive read FILE`: the positions of an archive file (or a clear export) as CSV.
pub fn read_file(
    path: &Path,
    key: Option<journeyd_keys::DataKey>,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<usize> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let rows = journeyd_archive::read_positions_with(
        bytes.into(),
        &journeyd_archive::ReadOptions {
            key,
            page_index: false,
            only: None,
        },
    )
    .with_context(|| format!("{}", path.display()))?;
    writeln!(
        out,
        "device,journey,fix_time,lat,lon,altitude_m,speed_mps,heading_deg,accuracy_m,quality"
    )?;
    use journeyd_wire::OptionalFields as F;
    for (device, journey, p) in &rows {
        let time = chrono::DateTime::from_timestamp_micros(p.fix_time_us)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            .unwrap_or_default();
        let opt = |bit: u32, v: f32| {
            if p.fields & bit != 0 {
                v.to_string()
            } else {
                String::new()
            }
        };
        writeln!(
            out,
            "{device},{journey},{time},{},{},{},{},{},{},{}",
            p.lat,
            p.lon,
            opt(F::ALTITUDE, p.altitude_m),
            opt(F::SPEED, p.speed_mps),
            opt(F::HEADING, p.heading_deg),
            opt(F::ACCURACY, p.accuracy_m),
            p.quality
        )?;
    }
    Ok(rows.len())
}

/// Runs the compactor and backups on their schedules inside `serve`, until the task is dropped.
pub async fn schedule(
    config: JourneydConfig,
    store: Arc<HotStore>,
    objects: Arc<ObjectStore>,
    compactor: Arc<Compactor>,
    master: journeyd_keys::MasterKey,
    clock: journeyd_ingest::Clock,
) {
    let compact_every = config.archive.compact_every;
    let backup_every = config.archive.backup_every;
    if compact_every.is_zero() && backup_every.is_zero() {
        return;
    }
    let tick = [compact_every, backup_every]
        .into_iter()
        .filter(|d| !d.is_zero())
        .min()
        .unwrap_or_default()
        .min(std::time::Duration::from_secs(60));
    let mut next_compact =
        std::time::Instant::now() + compact_every.min(std::time::Duration::from_secs(30));
    let mut next_backup = std::time::Instant::now() + backup_every;
    loop {
        tokio::time::sleep(tick).await;
        let now = std::time::Instant::now();
        if !compact_every.is_zero() && now >= next_compact {
            next_compact = now + compact_every;
            let _ = compactor
                .run(clock(), &journeyd_archiver::compact::LogProgress)
                .await;
        }
        if !backup_every.is_zero() && now >= next_backup {
            next_backup = now + backup_every;
            if let Err(e) = journeyd_archiver::backup::backup(
                &store,
                &objects,
                &master,
                &work_dir(&config),
                clock(),
            )
            .await
            {
                tracing::error!(error = %e, "backup failed; the next one is tried on schedule");
            }
        }
    }
}
