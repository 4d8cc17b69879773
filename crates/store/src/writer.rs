//! The group-commit writer: threads that each turn every request waiting in their queue into one
//! RocksDB write batch with one synced WAL write, then answer each request.
//!
//! Devices are spread over the threads (shards) by their id, and every key a record touches
//! (chunk, journey metadata, sequence number, last position) belongs to one device, so each
//! shard owns its devices' keys alone and its cache of them stays exact. While one shard waits
//! for its fsync, another seals and stages its next group; RocksDB folds the shards' synced
//! writes that meet into one WAL write. A device's records stay in order: one shard takes them
//! all.
//!
//! Requests arrive through bounded crossbeam channels, one per shard. When a queue is full,
//! [`Writer::try_submit`] hands the request back, and the caller refuses with a retryable code
//! instead of queueing without bound (case A7). A failed write answers every request of its
//! group with the error and leaves no trace in the writer's caches (case A6).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use journeyd_wire::Position;
use journeyd_wire::session::Record;
use rocksdb::WriteBatch;

use crate::keys::{self, CF_CHUNKS, CF_JOURNEYS, CF_LAST, CF_SEQS};
use crate::{
    BatchSeq, DeviceId, HotStore, JourneyId, JourneyMeta, LatencyHistogram, StoreError, TenantId,
    chunk,
};

/// Tuning of the writer (config `[store]`).
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Requests the queues hold before submitters are refused, split evenly over the shards.
    /// Default 4096.
    pub queue_capacity: usize,
    /// Most requests in one group commit. Default 2048.
    pub max_group: usize,
    /// Writer threads; devices are spread over them by id. Default 2.
    pub shards: usize,
    /// Benchmarks only: answer every request as stored without writing anything, so a load
    /// test measures the network path alone (the "network ceiling"). Default false.
    pub ack_without_storing: bool,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 4096,
            max_group: 2048,
            shards: 2,
            ack_without_storing: false,
        }
    }
}

/// What a stored record amounted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteOutcome {
    /// Positions newly stored.
    pub stored: u32,
    /// Positions not stored because the journey already held their fix time.
    pub duplicates: u32,
    /// Positions stored with a quality flag.
    pub flagged: u32,
    /// The record's sequence number was already stored: nothing was written.
    pub replayed: bool,
}

type Reply = Box<dyn FnOnce(Result<WriteOutcome, StoreError>) + Send>;

/// One record to store, and where to send the outcome.
pub struct WriteRequest {
    pub tenant: TenantId,
    pub device: DeviceId,
    pub seq: BatchSeq,
    pub record: Record,
    pub received_us: i64,
    pub reply: Reply,
}

impl std::fmt::Debug for WriteRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteRequest")
            .field("tenant", &self.tenant)
            .field("device", &self.device)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// Counters the writer keeps for metrics and readiness.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub groups: AtomicU64,
    pub records: AtomicU64,
    pub positions: AtomicU64,
    pub failed_groups: AtomicU64,
    /// A record's wait in the queue, from its submission to the start of its group.
    pub queue_latency: LatencyHistogram,
    /// A group's whole commit: reads, sealing, staging and the synced write.
    pub commit_latency: LatencyHistogram,
    /// The synced write alone (RocksDB's WAL append and fsync, and any write stall).
    pub sync_latency: LatencyHistogram,
    /// One bit per shard whose last write failed; readiness is red while any is set.
    failing: AtomicU64,
    /// Set by [`Writer::shutdown`]: the threads write what is queued, then end.
    stopping: AtomicBool,
}

/// Handle to the writer threads. [`Writer::shutdown`] (or dropping every handle) stops the
/// threads after they have written everything queued.
#[derive(Debug, Clone)]
pub struct Writer {
    shards: Arc<[Sender<(Instant, WriteRequest)>]>,
    stats: Arc<WriterStats>,
    thread: Arc<WriterThread>,
}

/// The threads, stopped and joined when the last handle goes.
#[derive(Debug)]
struct WriterThread {
    handles: std::sync::Mutex<Vec<JoinHandle<()>>>,
    stats: Arc<WriterStats>,
}

impl WriterThread {
    fn stop(&self) {
        self.stats.stopping.store(true, Ordering::SeqCst);
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|p| p.into_inner()));
        for t in handles {
            let _ = t.join();
        }
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        self.stop();
    }
}

impl WriterStats {
    /// False from a shard's failed write until that shard's next good one: readiness goes red
    /// meanwhile.
    pub fn healthy(&self) -> bool {
        self.failing.load(Ordering::Relaxed) == 0
    }
}

impl Writer {
    pub fn start(store: Arc<HotStore>, config: WriterConfig) -> Self {
        let stats = Arc::new(WriterStats::default());
        let count = config.shards.clamp(1, 64);
        // The capacity is the node's; each shard holds an even part of it.
        let per_shard = (config.queue_capacity / count).max(1);
        let mut shards = Vec::with_capacity(count);
        let mut handles = Vec::with_capacity(count);
        for i in 0..count {
            let (tx, rx) = crossbeam_channel::bounded(per_shard);
            let (store, stats) = (store.clone(), stats.clone());
            let handle = std::thread::Builder::new()
                .name(format!("journeyd-writer-{i}"))
                .spawn(move || run(&store, &rx, config, &stats, 1 << i))
                .expect("spawning a writer thread");
            shards.push(tx);
            handles.push(handle);
        }
        Self {
            shards: shards.into(),
            stats: stats.clone(),
            thread: Arc::new(WriterThread {
                handles: std::sync::Mutex::new(handles),
                stats,
            }),
        }
    }

    /// Queues a request on its device's shard, or hands it back when that queue is full or the
    /// writer has stopped.
    pub fn try_submit(&self, req: WriteRequest) -> Result<(), WriteRequest> {
        self.shards[shard_of(req.device, self.shards.len())]
            .try_send((Instant::now(), req))
            .map_err(|e| match e {
                TrySendError::Full((_, r)) | TrySendError::Disconnected((_, r)) => r,
            })
    }

    /// Whether any shard's queue is full (its devices are being refused).
    pub fn any_queue_full(&self) -> bool {
        self.shards.iter().any(|s| s.is_full())
    }

    /// Requests waiting in the queues.
    pub fn queued(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    pub fn capacity(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.capacity().unwrap_or(usize::MAX))
            .fold(0, usize::saturating_add)
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Writes everything queued, then stops the threads and waits for them, whatever other clones
    /// of this handle exist. Requests submitted afterwards are handed back.
    pub fn shutdown(&self) {
        self.thread.stop();
    }
}

/// The shard that writes a device's records: its id, mixed so that ids given out in sequence
/// spread evenly.
fn shard_of(device: DeviceId, shards: usize) -> usize {
    ((device.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % shards as u64) as usize
}

fn run(
    store: &HotStore,
    rx: &Receiver<(Instant, WriteRequest)>,
    config: WriterConfig,
    stats: &WriterStats,
    shard_bit: u64,
) {
    let mut cache = MetaCache::default();
    let mut group = Vec::with_capacity(config.max_group);
    loop {
        let first = match rx.recv_timeout(std::time::Duration::from_millis(20)) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) if stats.stopping.load(Ordering::SeqCst) => break,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let started = Instant::now();
        let mut next = Some(first);
        while let Some((queued, req)) = next {
            stats
                .queue_latency
                .record(started.saturating_duration_since(queued).as_micros() as u64);
            group.push(req);
            next = if group.len() < config.max_group {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        let n = group.len();
        let result = if config.ack_without_storing {
            Ok(group
                .iter()
                .map(|r| {
                    Ok(WriteOutcome {
                        stored: record_positions(&r.record),
                        ..WriteOutcome::default()
                    })
                })
                .collect())
        } else {
            // The compactor deletes hot journeys holding this lock exclusively; after it did,
            // what this thread cached about them is stale. Shards share it with each other.
            let _shared = store.hot_lock.read().unwrap_or_else(|p| p.into_inner());
            let epoch = store.archive_epoch.load(Ordering::SeqCst);
            if epoch != cache.epoch {
                cache.metas.clear();
                cache.last.clear();
                cache.epoch = epoch;
            }
            // Keys near key order (chunk, journey and last keys start with tenant and device,
            // sequence keys with the device; one device's records keep their order): each
            // memtable insert then starts near where the last one ended instead of searching
            // the whole skip list.
            group.sort_by_key(|r| (r.tenant, r.device));
            commit(store, &mut cache, &mut group, &stats.sync_latency)
        };
        match result {
            Ok(outcomes) => {
                let positions: u64 = outcomes.iter().flatten().map(|o| o.stored as u64).sum();
                stats.groups.fetch_add(1, Ordering::Relaxed);
                stats.records.fetch_add(n as u64, Ordering::Relaxed);
                stats.positions.fetch_add(positions, Ordering::Relaxed);
                stats.failing.fetch_and(!shard_bit, Ordering::Relaxed);
                stats
                    .commit_latency
                    .record(started.elapsed().as_micros() as u64);
                tracing::trace!(
                    records = n,
                    positions,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "group committed"
                );
                for (req, outcome) in group.drain(..).zip(outcomes) {
                    (req.reply)(outcome);
                }
            }
            Err(e) => {
                stats.failed_groups.fetch_add(1, Ordering::Relaxed);
                stats.failing.fetch_or(shard_bit, Ordering::Relaxed);
                tracing::warn!(records = n, error = %e, "group commit failed; nothing of it was acked");
                let message = e.to_string();
                for req in group.drain(..) {
                    (req.reply)(Err(StoreError::WriteFailed {
                        retryable: true,
                        message: message.clone(),
                    }));
                }
            }
        }
    }
}

fn record_positions(record: &Record) -> u32 {
    match record {
        Record::Batch { validated, .. } => validated.kept.len() as u32,
        _ => 0,
    }
}

/// Journey metadata and last positions the writer has read or written, so that a busy journey
/// costs no read per batch. Among the writer's threads only this one writes its devices' keys;
/// whatever else rewrites them (the compactor, restores) holds the hot lock exclusively and bumps
/// the archive epoch, which empties the cache before the next group. So the cache is exact.
#[derive(Default)]
struct MetaCache {
    metas: HashMap<[u8; 20], JourneyMeta>,
    last: HashMap<[u8; 12], i64>,
    /// The store's archive epoch the entries were read under.
    epoch: u64,
}

impl MetaCache {
    const MAX_ENTRIES: usize = 200_000;

    fn trim(&mut self) {
        if self.metas.len() > Self::MAX_ENTRIES {
            self.metas.clear();
        }
        if self.last.len() > Self::MAX_ENTRIES {
            self.last.clear();
        }
    }
}

/// What one request will write, worked out from reads before anything is staged, so that a
/// request whose reads fail (a corrupt value) fails alone and leaves no trace in the group.
#[expect(
    clippy::large_enum_variant,
    reason = "one short-lived value per request"
)]
enum Prepared {
    /// The sequence number is already stored: nothing to write.
    Replayed,
    Write(Plan),
}

/// What one new record writes.
struct Plan {
    seq_key: [u8; 16],
    journey: u64,
    jkey: [u8; 20],
    meta: JourneyMeta,
    /// The positions to store (fix times not yet held), sorted by fix time.
    fresh: Option<Vec<Position>>,
    /// The device's new last position, when this batch holds a newer usable one.
    newest: Option<Position>,
    outcome: WriteOutcome,
}

/// Staged state of a group: what earlier requests of the group will write.
#[derive(Default)]
struct Staged {
    metas: HashMap<[u8; 20], JourneyMeta>,
    /// Ordered, so that the last positions reach the memtable in key order.
    last: BTreeMap<[u8; 12], (i64, Position)>,
    seqs: HashSet<[u8; 16]>,
    chunks: Vec<([u8; 20], Vec<i64>)>,
}

fn prepare(
    store: &HotStore,
    cache: &MetaCache,
    staged: &Staged,
    req: &mut WriteRequest,
) -> Result<Prepared, StoreError> {
    let seq_key = keys::seq_key(req.device, req.seq);
    if staged.seqs.contains(&seq_key)
        || store
            .db
            .get_pinned_cf(store.cf(CF_SEQS), seq_key)?
            .is_some()
    {
        return Ok(Prepared::Replayed);
    }
    let journey = match &req.record {
        Record::JourneyStart(m) | Record::JourneyEnd(m) => m.journey,
        Record::Batch { journey, .. } => *journey,
    };
    let jkey = keys::journey_key(req.tenant, req.device, JourneyId(journey));
    let mut meta = match staged.metas.get(&jkey).or_else(|| cache.metas.get(&jkey)) {
        Some(m) => *m,
        None => match store.db.get_pinned_cf(store.cf(CF_JOURNEYS), jkey)? {
            Some(v) => JourneyMeta::decode(&jkey, &v)?,
            None => JourneyMeta::default(),
        },
    };

    let mut outcome = WriteOutcome::default();
    let mut fresh = None;
    let mut newest = None;
    match &mut req.record {
        Record::JourneyStart(m) => {
            meta.started_us = Some(meta.started_us.map_or(m.at_us, |v| v.min(m.at_us)))
        }
        Record::JourneyEnd(m) => {
            meta.ended_us = Some(meta.ended_us.map_or(m.at_us, |v| v.max(m.at_us)))
        }
        Record::Batch { validated, .. } => {
            // The writer owns the request now: its positions move into the chunk, uncopied.
            let kept = std::mem::take(&mut validated.kept);
            let offered = kept.len();
            let positions: Vec<Position> = if kept.iter().any(|p| meta.may_hold(p.fix_time_us)) {
                let held = held_fix_times(store, &jkey, &staged.chunks)?;
                kept.into_iter()
                    .filter(|p| !held.contains(&p.fix_time_us))
                    .collect()
            } else {
                kept
            };
            outcome.duplicates = (offered - positions.len()) as u32;
            if let (Some(first), Some(last)) = (positions.first(), positions.last()) {
                let flagged = positions.iter().filter(|p| p.quality != 0).count() as u32;
                meta.add_batch(
                    first.fix_time_us,
                    last.fix_time_us,
                    positions.len() as u64,
                    flagged,
                    req.received_us,
                );
                outcome.stored = positions.len() as u32;
                outcome.flagged = flagged;
                if let Some(candidate) = positions
                    .iter()
                    .rev()
                    .find(|p| p.quality().is_usable_for_track())
                {
                    let dkey = keys::device_prefix(req.tenant, req.device);
                    if last_fix_time(store, cache, staged, &dkey)?
                        .is_none_or(|t| candidate.fix_time_us > t)
                    {
                        newest = Some(*candidate);
                    }
                }
                fresh = Some(positions);
            }
        }
    }
    Ok(Prepared::Write(Plan {
        seq_key,
        journey,
        jkey,
        meta,
        fresh,
        newest,
        outcome,
    }))
}

/// Builds one write batch from a group, writes it synced, and returns each request's outcome.
/// Changes to the cache are applied only after the write succeeded. A failed write fails every
/// request of the group; a request whose own reads fail fails alone.
fn commit(
    store: &HotStore,
    cache: &mut MetaCache,
    group: &mut [WriteRequest],
    sync_latency: &LatencyHistogram,
) -> Result<Vec<Result<WriteOutcome, StoreError>>, StoreError> {
    let mut batch = WriteBatch::default();
    let mut staged = Staged::default();
    let mut outcomes = Vec::with_capacity(group.len());
    let mut buf = Vec::new();

    for req in group.iter_mut() {
        let plan = match prepare(store, cache, &staged, req) {
            Ok(Prepared::Replayed) => {
                outcomes.push(Ok(WriteOutcome {
                    replayed: true,
                    ..WriteOutcome::default()
                }));
                continue;
            }
            Ok(Prepared::Write(plan)) => plan,
            Err(e) => {
                tracing::error!(device = req.device.0, seq = req.seq.0, error = %e, "cannot store a record; the device will resend it");
                outcomes.push(Err(e));
                continue;
            }
        };
        if let Some(positions) = plan.fresh {
            let key = keys::chunk_key(req.tenant, req.device, JourneyId(plan.journey), req.seq);
            if let Err(e) = store
                .chunk_cipher(req.tenant)
                .and_then(|c| chunk::encode(&c, &key, &positions, req.received_us, &mut buf))
            {
                tracing::error!(device = req.device.0, seq = req.seq.0, error = %e, "cannot seal a chunk; the device will resend it");
                outcomes.push(Err(e));
                continue;
            }
            batch.put_cf(store.cf(CF_CHUNKS), key, &buf);
            staged
                .chunks
                .push((plan.jkey, positions.iter().map(|p| p.fix_time_us).collect()));
        }
        if let Some(p) = plan.newest {
            staged.last.insert(
                keys::device_prefix(req.tenant, req.device),
                (p.fix_time_us, p),
            );
        }
        batch.put_cf(store.cf(CF_JOURNEYS), plan.jkey, plan.meta.encode());
        batch.put_cf(store.cf(CF_SEQS), plan.seq_key, plan.journey.to_be_bytes());
        staged.metas.insert(plan.jkey, plan.meta);
        staged.seqs.insert(plan.seq_key);
        outcomes.push(Ok(plan.outcome));
    }

    for (key, (_, p)) in &staged.last {
        let tenant = TenantId(keys::u32_at(key, 0).expect("12-byte device prefix"));
        // A tenant whose key cannot be had failed its records above; nothing of it is staged.
        if let Ok(cipher) = store.chunk_cipher(tenant) {
            chunk::encode(&cipher, key, std::slice::from_ref(p), 0, &mut buf)?;
            batch.put_cf(store.cf(CF_LAST), key, &buf);
        }
    }

    store.wait_while_stalled();
    if store.take_injected_failure() {
        return Err(StoreError::Injected("injected write failure"));
    }
    if !batch.is_empty() {
        let started = Instant::now();
        store.db.write_opt(batch, &store.sync_write)?;
        sync_latency.record(started.elapsed().as_micros() as u64);
    }

    cache.trim();
    cache.metas.extend(staged.metas);
    cache
        .last
        .extend(staged.last.into_iter().map(|(k, (t, _))| (k, t)));
    Ok(outcomes)
}

/// The newest fix time stored for a device: staged in this group, cached, or read.
fn last_fix_time(
    store: &HotStore,
    cache: &MetaCache,
    staged: &Staged,
    key: &[u8; 12],
) -> Result<Option<i64>, StoreError> {
    if let Some((t, _)) = staged.last.get(key) {
        return Ok(Some(*t));
    }
    if let Some(t) = cache.last.get(key) {
        return Ok(Some(*t));
    }
    match store.db.get_pinned_cf(store.cf(CF_LAST), key)? {
        Some(v) => {
            let tenant = TenantId(keys::u32_at(key, 0).expect("12-byte device prefix"));
            Ok(chunk::fix_times(&store.chunk_cipher(tenant)?, key, &v)?
                .first()
                .copied())
        }
        None => Ok(None),
    }
}

/// Fix times a journey already holds: in the store and earlier in this group.
fn held_fix_times(
    store: &HotStore,
    jkey: &[u8; 20],
    pending: &[([u8; 20], Vec<i64>)],
) -> Result<HashSet<i64>, StoreError> {
    let mut held = HashSet::new();
    let tenant = TenantId(keys::u32_at(jkey, 0).expect("20-byte journey key"));
    let cipher = store.chunk_cipher(tenant)?;
    for item in store.db.iterator_cf(
        store.cf(CF_CHUNKS),
        rocksdb::IteratorMode::From(jkey, rocksdb::Direction::Forward),
    ) {
        let (k, v) = item?;
        if !k.starts_with(jkey) {
            break;
        }
        held.extend(chunk::fix_times(&cipher, &k, &v)?);
    }
    for (k, times) in pending {
        if k == jkey {
            held.extend(times);
        }
    }
    Ok(held)
}

#[cfg(test)]
mod tests;
