//! The compactor: moves journeys past their tenant's hot retention into encrypted Parquet on
//! object storage, one object per tenant and day per run.
//!
//! Each object goes through these steps; a crash between any two leaves every position hot, or
//! archived and verified, never neither, and a rerun never archives a journey twice:
//!
//! 1. `intent-recorded`: a pending record (object name, journeys, rows) is written, synced;
//! 2. `file-written`: the journeys are written to a local encrypted Parquet file;
//! 3. `uploaded`: the file goes up (multipart when large), retried with backoff;
//! 4. `verified`: the object is read back: size and SHA-256 equal the file's, the footer
//!    decrypts with the tenant key, and its rows per journey equal the hot store's;
//! 5. `committed`: one RocksDB write adds the index entries, deletes the hot chunks and
//!    metadata, and the pending record.
//!
//! A run first settles the pending records of an earlier run that stopped: an object that is
//! there and verifies is committed, anything else is deleted and its journeys stay hot.
//!
//! `JOURNEYD_FAILPOINT=compact:<step>` makes the process stop after that step (printing
//! `failpoint compact:<step> reached` and sleeping) so crash tests can kill -9 it there.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use journeyd_archive::{PositionsWriter, ReadOptions};
use journeyd_objects::ObjectStore;
use journeyd_store::{
    ArchivePart, ArchivedJourney, DeviceId, HotStore, JourneyId, JourneyMeta, PendingJourney,
    PendingUpload, TenantId,
};

/// Names of the compactor's files in the work folder start with this.
const WORK_FILE_PREFIX: &str = "archive-";

use crate::{ArchiverError, io, random_suffix, utc_date};

/// How the compactor runs (config `[archive]`).
#[derive(Debug, Clone)]
pub struct CompactorConfig {
    /// Journeys wait at least this long after their end, whatever the retention (the device
    /// buffer, so late uploads still land hot: case B18).
    pub late_arrival_window: Duration,
    /// Most rows in one object; a day with more is split.
    pub max_rows_per_object: u64,
    /// Where files are written before upload.
    pub work_dir: PathBuf,
}

/// Counters for metrics, over the process's life.
#[derive(Debug, Default)]
pub struct CompactorStats {
    pub runs: AtomicU64,
    pub failed_runs: AtomicU64,
    pub journeys_archived: AtomicU64,
    pub rows_archived: AtomicU64,
    pub objects_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub restored_copies_dropped: AtomicU64,
    /// When the last run finished without error, µs since the epoch (0: never).
    pub last_success_us: AtomicI64,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunReport {
    pub journeys: u64,
    pub rows: u64,
    pub objects: u64,
    pub bytes: u64,
    /// Uploads of an earlier, interrupted run: committed, or dropped.
    pub pending_committed: u64,
    pub pending_dropped: u64,
    /// Restored copies whose time was over, dropped from the hot store.
    pub restored_dropped: u64,
    /// Journeys past retention left hot this time (e.g. they changed during the run).
    pub deferred: u64,
}

/// Where a run reports its progress: a terminal bar, or logs.
pub trait Progress: Send + Sync {
    /// `journeys_total` is known once selection is done.
    fn begin(&self, journeys_total: u64, rows_total: u64);
    fn advance(&self, journeys: u64, rows: u64, bytes: u64);
    fn finish(&self, report: &RunReport);
}

/// Progress as structured log lines.
#[derive(Debug, Default)]
pub struct LogProgress;

impl Progress for LogProgress {
    fn begin(&self, journeys_total: u64, rows_total: u64) {
        if journeys_total > 0 {
            tracing::info!(
                journeys = journeys_total,
                rows = rows_total,
                "compaction selected journeys"
            );
        }
    }
    fn advance(&self, journeys: u64, rows: u64, bytes: u64) {
        tracing::info!(journeys, rows, bytes, "archive object committed");
    }
    fn finish(&self, report: &RunReport) {
        tracing::info!(
            journeys = report.journeys,
            rows = report.rows,
            objects = report.objects,
            bytes = report.bytes,
            pending_committed = report.pending_committed,
            pending_dropped = report.pending_dropped,
            restored_dropped = report.restored_dropped,
            deferred = report.deferred,
            "compaction run finished"
        );
    }
}

fn failpoint(step: &str) {
    if let Ok(v) = std::env::var("JOURNEYD_FAILPOINT")
        && v.strip_prefix("compact:") == Some(step)
    {
        #[expect(clippy::print_stderr, reason = "crash tests wait for this line")]
        {
            eprintln!("failpoint compact:{step} reached");
        }
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// A journey chosen for archiving.
#[derive(Debug, Clone)]
struct Candidate {
    tenant: TenantId,
    device: DeviceId,
    journey: JourneyId,
    meta: JourneyMeta,
    end_us: i64,
}

/// Moves old journeys from the hot store into the archive.
#[derive(Debug)]
pub struct Compactor {
    store: Arc<HotStore>,
    objects: Arc<ObjectStore>,
    config: CompactorConfig,
    stats: Arc<CompactorStats>,
}

impl Compactor {
    pub fn new(store: Arc<HotStore>, objects: Arc<ObjectStore>, config: CompactorConfig) -> Self {
        Self {
            store,
            objects,
            config,
            stats: Arc::new(CompactorStats::default()),
        }
    }

    pub fn stats(&self) -> &Arc<CompactorStats> {
        &self.stats
    }

    /// [`Compactor::run`] from outside a runtime (tests, tools), logging its progress.
    pub fn run_blocking(&self, now_us: i64) -> Result<RunReport, ArchiverError> {
        let handle = tokio::runtime::Handle::try_current();
        match handle {
            Ok(h) => h.block_on(self.run(now_us, &LogProgress)),
            Err(_) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(io("starting a runtime"))?
                .block_on(self.run(now_us, &LogProgress)),
        }
    }

    /// One run at `now_us`. On an object store outage the run stops at the first failed
    /// object; nothing of that object is deleted from the hot store, and the next run goes on.
    pub async fn run(
        &self,
        now_us: i64,
        progress: &dyn Progress,
    ) -> Result<RunReport, ArchiverError> {
        self.stats.runs.fetch_add(1, Ordering::Relaxed);
        let result = self.run_inner(now_us, progress).await;
        match &result {
            Ok(report) => {
                self.stats.last_success_us.store(now_us, Ordering::Relaxed);
                progress.finish(report);
            }
            Err(e) => {
                self.stats.failed_runs.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "compaction run failed; hot data is untouched and the next run retries");
            }
        }
        result
    }

    async fn run_inner(
        &self,
        now_us: i64,
        progress: &dyn Progress,
    ) -> Result<RunReport, ArchiverError> {
        let mut report = RunReport::default();
        self.clean_work_dir();
        self.settle_pending(&mut report).await?;
        self.drop_expired_restores(now_us, &mut report)?;

        let candidates = self.select(now_us)?;
        let groups = self.group(candidates);
        let total_rows: u64 = groups
            .iter()
            .flat_map(|(_, g)| g.iter().map(|c| c.meta.positions))
            .sum();
        progress.begin(groups.iter().map(|(_, g)| g.len() as u64).sum(), total_rows);
        std::fs::create_dir_all(&self.config.work_dir)
            .map_err(io(format!("creating {}", self.config.work_dir.display())))?;
        for ((tenant, date), group) in groups {
            let object = format!(
                "tenant={}/date={date}/part-{now_us}-{}.parquet",
                tenant.0,
                random_suffix()
            );
            match self.archive_group(tenant, &object, &group, now_us).await? {
                Some((rows, bytes)) => {
                    report.journeys += group.len() as u64;
                    report.rows += rows;
                    report.objects += 1;
                    report.bytes += bytes;
                    self.stats
                        .journeys_archived
                        .fetch_add(group.len() as u64, Ordering::Relaxed);
                    self.stats.rows_archived.fetch_add(rows, Ordering::Relaxed);
                    self.stats.objects_written.fetch_add(1, Ordering::Relaxed);
                    self.stats.bytes_written.fetch_add(bytes, Ordering::Relaxed);
                    progress.advance(group.len() as u64, rows, bytes);
                }
                None => report.deferred += group.len() as u64,
            }
        }
        Ok(report)
    }

    /// Journeys whose end (or, with none, the silence rule's end) is past both the tenant's hot
    /// retention and the late-arrival window, and that are not a restored copy.
    fn select(&self, now_us: i64) -> Result<Vec<Candidate>, ArchiverError> {
        let tenants: BTreeMap<TenantId, journeyd_store::TenantPolicy> = self
            .store
            .tenants()?
            .into_iter()
            .map(|t| (t.id, t.policy))
            .collect();
        let late_us =
            i64::try_from(self.config.late_arrival_window.as_micros()).unwrap_or(i64::MAX);
        let mut out = Vec::new();
        for (tenant, device, journey, meta) in self.store.all_journeys()? {
            let Some(policy) = tenants.get(&tenant) else {
                continue;
            };
            let Some(last_fix) = meta.last_fix_us else {
                continue; // marks only, no positions: nothing to archive
            };
            let silence_us = policy.journey_silence_minutes as i64 * 60_000_000;
            let end_us = match meta.ended_us {
                Some(end) => end.max(last_fix),
                None if now_us - meta.last_received_us > silence_us => last_fix,
                None => continue, // still going
            };
            let retention_us = policy.hot_retention_days as i64 * 86_400_000_000;
            if now_us < end_us.saturating_add(retention_us.max(late_us)) {
                continue;
            }
            if let Some(entry) = self.store.archived(tenant, device, journey)?
                && entry.restored_until_us.is_some()
            {
                continue; // a restored copy: dropped when its time is over, never re-archived
            }
            out.push(Candidate {
                tenant,
                device,
                journey,
                meta,
                end_us,
            });
        }
        Ok(out)
    }

    /// By tenant and UTC day of first fix; days over the row limit are split.
    fn group(&self, candidates: Vec<Candidate>) -> Vec<((TenantId, String), Vec<Candidate>)> {
        let mut by_day: BTreeMap<(TenantId, String), Vec<Candidate>> = BTreeMap::new();
        for c in candidates {
            let day = utc_date(c.meta.first_fix_us.unwrap_or(c.end_us));
            by_day.entry((c.tenant, day)).or_default().push(c);
        }
        let mut out = Vec::new();
        for (key, list) in by_day {
            let mut current = Vec::new();
            let mut rows = 0u64;
            for c in list {
                if !current.is_empty() && rows + c.meta.positions > self.config.max_rows_per_object
                {
                    out.push((key.clone(), std::mem::take(&mut current)));
                    rows = 0;
                }
                rows += c.meta.positions;
                current.push(c);
            }
            if !current.is_empty() {
                out.push((key, current));
            }
        }
        out
    }

    /// Steps 1–5 for one object. `Ok(None)`: the journeys changed meanwhile and stay hot.
    async fn archive_group(
        &self,
        tenant: TenantId,
        object: &str,
        group: &[Candidate],
        now_us: i64,
    ) -> Result<Option<(u64, u64)>, ArchiverError> {
        // The tracks, read before the intent so the intent names exact row counts. A journey
        // amended after it was archived keeps only the fixes the archive does not hold (a device
        // may resend what was archived under new sequence numbers).
        let mut tracks = Vec::with_capacity(group.len());
        let mut journeys = Vec::with_capacity(group.len());
        for c in group {
            let mut track = self.store.track(c.tenant, c.device, c.journey)?;
            let hot_rows = track.len() as u64;
            if let Some(entry) = self.store.archived(c.tenant, c.device, c.journey)? {
                let held: std::collections::HashSet<i64> =
                    crate::retrieve::fetch_journey(&self.store, &self.objects, &entry, false)
                        .await?
                        .iter()
                        .map(|p| p.fix_time_us)
                        .collect();
                track.retain(|p| !held.contains(&p.fix_time_us));
            }
            journeys.push(PendingJourney {
                device: c.device,
                journey: c.journey.0,
                rows: track.len() as u64,
                hot_rows,
            });
            tracks.push(track);
        }
        let pending = PendingUpload {
            object: object.to_owned(),
            tenant,
            journeys,
            begun_us: now_us,
        };
        self.store.begin_upload(&pending)?;
        failpoint("intent-recorded");

        let rows: u64 = pending.journeys.iter().map(|j| j.rows).sum();
        let (summary, bytes) = if rows == 0 {
            // Only resends of archived fixes: nothing to upload, the hot copies just go.
            (journeyd_archive::FileSummary::default(), 0)
        } else {
            let uploaded = self
                .write_and_upload(tenant, object, group, &tracks)
                .await?;
            match self.verify(&pending, Some(&uploaded)).await {
                Ok(s) => (s, uploaded.size),
                Err(ArchiverError::Verification { detail, .. }) => {
                    tracing::warn!(object, %detail, "archive object does not match the hot store; deleting it, the journeys stay hot");
                    self.objects.delete(object).await?;
                    self.store.abandon_upload(object)?;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        };
        failpoint("verified");

        let entries = entries_for(&pending, &summary, group, now_us);
        if let Err(e) = self.store.commit_archive(&pending, entries) {
            if matches!(e, journeyd_store::StoreError::Invalid(_)) {
                tracing::warn!(object, error = %e, "journeys changed while archiving; deleting the object, they stay hot");
                self.objects.delete(object).await?;
                self.store.abandon_upload(object)?;
                return Ok(None);
            }
            return Err(e.into());
        }
        failpoint("committed");
        tracing::info!(
            object,
            journeys = group.len(),
            rows = summary.rows,
            bytes,
            "journeys archived"
        );
        Ok(Some((summary.rows, bytes)))
    }

    /// Steps 2 and 3: the encrypted file, then its upload.
    async fn write_and_upload(
        &self,
        tenant: TenantId,
        object: &str,
        group: &[Candidate],
        tracks: &[Vec<journeyd_wire::Position>],
    ) -> Result<journeyd_objects::Uploaded, ArchiverError> {
        let key = self.store.tenant_key(tenant)?;
        let file = tempfile::Builder::new()
            .prefix(WORK_FILE_PREFIX)
            .suffix(".parquet")
            .tempfile_in(&self.config.work_dir)
            .map_err(io(format!("a file in {}", self.config.work_dir.display())))?;
        let file_error = |source| ArchiverError::File {
            object: object.into(),
            source,
        };
        {
            let sink = std::io::BufWriter::new(
                file.reopen()
                    .map_err(io(format!("{}", file.path().display())))?,
            );
            let mut writer =
                PositionsWriter::new_encrypted(sink, tenant.0, &key).map_err(file_error)?;
            for (c, track) in group.iter().zip(tracks) {
                writer
                    .write_journey(c.device.0, c.journey.0, track)
                    .map_err(file_error)?;
            }
            let sink = writer.finish().map_err(file_error)?;
            let f = sink
                .into_inner()
                .map_err(|e| ArchiverError::Invalid(format!("flushing {object}: {e}")))?;
            f.sync_all()
                .map_err(io(format!("{}", file.path().display())))?;
        }
        failpoint("file-written");
        let uploaded = self.objects.put_file(object, file.path()).await?;
        failpoint("uploaded");
        Ok(uploaded)
    }

    /// Reads an object back and checks it against the hot store and, when known, the file that
    /// was uploaded.
    async fn verify(
        &self,
        pending: &PendingUpload,
        uploaded: Option<&journeyd_objects::Uploaded>,
    ) -> Result<journeyd_archive::FileSummary, ArchiverError> {
        let object = &pending.object;
        let failed = |detail: String| ArchiverError::Verification {
            object: object.clone(),
            detail,
        };
        let size = self.objects.size(object).await?;
        let bytes = self.objects.get(object).await?;
        if let Some(up) = uploaded {
            if size != Some(up.size) || bytes.len() as u64 != up.size {
                return Err(failed(format!(
                    "size {size:?} (read {}), uploaded {}",
                    bytes.len(),
                    up.size
                )));
            }
            let digest = journeyd_objects::sha256_hex(&bytes);
            if digest != up.sha256 {
                return Err(failed(format!("SHA-256 {digest}, uploaded {}", up.sha256)));
            }
        }
        let key = self.store.tenant_key(pending.tenant)?;
        let summary = journeyd_archive::summarize(
            bytes,
            &ReadOptions {
                key: Some(key),
                ..ReadOptions::default()
            },
        )
        .map_err(|e| failed(format!("footer or rows do not read: {e}")))?;
        let written = pending.journeys.iter().filter(|j| j.rows > 0).count();
        if summary.journeys.len() != written {
            return Err(failed(format!(
                "{} journeys in the object, {written} intended",
                summary.journeys.len(),
            )));
        }
        for j in &pending.journeys {
            let in_object = summary
                .journeys
                .get(&(j.device.0, j.journey))
                .map_or(0, |e| e.0);
            let hot = self
                .store
                .hot_rows(pending.tenant, j.device, JourneyId(j.journey))?;
            if in_object != j.rows || hot != j.hot_rows {
                return Err(failed(format!(
                    "journey {} of device {}: {in_object} rows in the object, {} intended; {hot} hot, {} when written",
                    j.journey, j.device.0, j.rows, j.hot_rows
                )));
            }
        }
        Ok(summary)
    }

    /// Settles uploads an earlier run began and did not commit.
    async fn settle_pending(&self, report: &mut RunReport) -> Result<(), ArchiverError> {
        for pending in self.store.pending_uploads()? {
            let object = pending.object.clone();
            let nothing_to_upload = pending.journeys.iter().all(|j| j.rows == 0);
            let verified = if nothing_to_upload {
                Ok(journeyd_archive::FileSummary::default())
            } else if self.objects.size(&object).await?.is_none() {
                tracing::info!(
                    object,
                    "an earlier run stopped before its upload; forgetting it, the journeys stay hot"
                );
                self.store.abandon_upload(&object)?;
                report.pending_dropped += 1;
                continue;
            } else {
                self.verify(&pending, None).await
            };
            match verified {
                Ok(summary) => {
                    let mut candidates = Vec::new();
                    for j in &pending.journeys {
                        let meta = self
                            .store
                            .journey(pending.tenant, j.device, JourneyId(j.journey))?
                            .unwrap_or_default();
                        candidates.push(Candidate {
                            tenant: pending.tenant,
                            device: j.device,
                            journey: JourneyId(j.journey),
                            meta,
                            end_us: 0,
                        });
                    }
                    let entries = entries_for(&pending, &summary, &candidates, pending.begun_us);
                    match self.store.commit_archive(&pending, entries) {
                        Ok(()) => {
                            tracing::info!(
                                object,
                                "committed the verified upload of an earlier, interrupted run"
                            );
                            report.pending_committed += 1;
                            report.journeys += pending.journeys.len() as u64;
                            report.rows += summary.rows;
                        }
                        Err(journeyd_store::StoreError::Invalid(detail)) => {
                            tracing::warn!(object, %detail, "an earlier upload no longer matches; deleting it");
                            self.objects.delete(&object).await?;
                            self.store.abandon_upload(&object)?;
                            report.pending_dropped += 1;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(ArchiverError::Verification { detail, .. }) => {
                    tracing::warn!(object, %detail, "an earlier upload does not verify; deleting it, the journeys stay hot");
                    self.objects.delete(&object).await?;
                    self.store.abandon_upload(&object)?;
                    report.pending_dropped += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Files an interrupted run left in the work folder (only one run works at a time: the
    /// store's lock or serve's schedule sees to it).
    fn clean_work_dir(&self) {
        let Ok(entries) = std::fs::read_dir(&self.config.work_dir) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(WORK_FILE_PREFIX))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    fn drop_expired_restores(
        &self,
        now_us: i64,
        report: &mut RunReport,
    ) -> Result<(), ArchiverError> {
        for t in self.store.tenants()? {
            for entry in self.store.archived_journeys(t.id, None)? {
                if entry.restored_until_us.is_some_and(|until| until <= now_us) {
                    self.store.drop_restored(&entry)?;
                    self.stats
                        .restored_copies_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    report.restored_dropped += 1;
                    tracing::info!(
                        tenant = t.id.0,
                        device = entry.device.0,
                        journey = entry.journey,
                        "restored copy's time is over; dropped from the hot store"
                    );
                }
            }
        }
        Ok(())
    }
}

fn entries_for(
    pending: &PendingUpload,
    summary: &journeyd_archive::FileSummary,
    group: &[Candidate],
    now_us: i64,
) -> Vec<ArchivedJourney> {
    group
        .iter()
        .map(|c| {
            let part = summary.journeys.get(&(c.device.0, c.journey.0)).copied();
            let (rows, first, last) = part.unwrap_or((0, i64::MAX, i64::MIN));
            ArchivedJourney {
                tenant: pending.tenant,
                device: c.device,
                journey: c.journey.0,
                started_us: c.meta.started_us,
                ended_us: c.meta.ended_us,
                first_fix_us: first,
                last_fix_us: last,
                positions: rows,
                parts: part
                    .map(|_| ArchivePart {
                        object: pending.object.clone(),
                        rows,
                        first_fix_us: first,
                        last_fix_us: last,
                    })
                    .into_iter()
                    .collect(),
                archived_us: now_us,
                restored_until_us: None,
            }
        })
        .collect()
}
