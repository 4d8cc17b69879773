//! Opening the database and reading what it holds.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use journeyd_keys::{MasterKey, MasterKeySource};
use journeyd_wire::Position;
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteOptions,
};

use crate::keyring::Keyring;
use crate::keys::{self, ALL_CFS, CF_CHUNKS, CF_JOURNEYS, CF_LAST};
use crate::{DeviceId, JourneyId, JourneyMeta, StoreError, TenantId, chunk};

/// The master key file of the embedded default, inside the store's folder.
pub const DEFAULT_MASTER_KEY_FILE: &str = "MASTER-KEY";

/// How the hot store is opened (config `[store]`).
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Folder of the RocksDB instance.
    pub path: PathBuf,
    /// Sync the write-ahead log before acking. Default true; false only for benchmarks of the
    /// unsynced ceiling.
    pub sync: bool,
    /// Memtable size per column family. Default 64 MiB.
    pub write_buffer_bytes: usize,
    /// Where the master key comes from. Default: a key file inside the store's folder, created
    /// on first start (demo and test friendly; an operator points this elsewhere).
    pub master_key: MasterKeySource,
}

impl StoreConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        Self {
            master_key: MasterKeySource::File {
                path: path.join(DEFAULT_MASTER_KEY_FILE),
                create: true,
            },
            path,
            sync: true,
            write_buffer_bytes: 64 << 20,
        }
    }
}

/// The RocksDB hot store of one node.
pub struct HotStore {
    pub(crate) db: DB,
    pub(crate) sync_write: WriteOptions,
    pub(crate) admin: Mutex<()>,
    pub(crate) fail_next_writes: AtomicU32,
    pub(crate) stall_writes: std::sync::atomic::AtomicBool,
    pub(crate) keyring: Keyring,
    /// Held shared by each writer shard around its group commit and exclusively by whoever
    /// deletes or rewrites hot journeys (the compactor), so neither sees the other half-done.
    pub(crate) hot_lock: std::sync::RwLock<()>,
    /// Bumped each time hot journeys are deleted or rewritten outside the writer.
    pub(crate) archive_epoch: std::sync::atomic::AtomicU64,
    path: PathBuf,
}

impl std::fmt::Debug for HotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What RocksDB says about its own state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub bytes: u64,
    pub write_stopped: u64,
    pub delayed_write_rate: u64,
}

/// Totals of what the store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    pub tenants: u64,
    pub devices: u64,
    pub journeys: u64,
    pub positions: u64,
    pub flagged_positions: u64,
    pub batches: u64,
    /// Live SST and memtable bytes as RocksDB estimates them.
    pub disk_bytes: u64,
    /// Journeys in the archive index, and their positions.
    pub archived_journeys: u64,
    pub archived_positions: u64,
}

impl HotStore {
    pub fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&config.path).map_err(|e| {
            StoreError::Invalid(format!("cannot create {}: {e}", config.path.display()))
        })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.increase_parallelism(2);
        opts.set_max_background_jobs(2);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.set_write_buffer_size(config.write_buffer_bytes);
        // Recovery replays the write-ahead log at about 5 ms per MiB here: 256 MiB at most keeps
        // a restart after a crash under load within about 1.5 s (`journeyd bench --restart`).
        opts.set_max_total_wal_size(256 << 20);
        opts.set_keep_log_file_num(4);
        let cfs = ALL_CFS.iter().map(|name| {
            let mut o = Options::default();
            // Sealed values (chunks, last positions) are ciphertext and do not shrink: LZ4 on
            // them would cost CPU for nothing.
            o.set_compression_type(if *name == CF_CHUNKS || *name == CF_LAST {
                rocksdb::DBCompressionType::None
            } else {
                rocksdb::DBCompressionType::Lz4
            });
            o.set_write_buffer_size(config.write_buffer_bytes);
            // Every record looks its sequence number up before it is written; a bloom filter
            // answers "not stored" without reading a block.
            let mut table = rocksdb::BlockBasedOptions::default();
            table.set_bloom_filter(10.0, false);
            table.set_cache_index_and_filter_blocks(true);
            o.set_block_based_table_factory(&table);
            ColumnFamilyDescriptor::new(*name, o)
        });
        let master = MasterKey::load(&config.master_key)?;
        let db = DB::open_cf_descriptors(&opts, &config.path, cfs)?;
        let mut sync_write = WriteOptions::default();
        sync_write.set_sync(config.sync);
        // Writer threads' batches meet in RocksDB's concurrent memtable insert, which forgets
        // where the previous key went unless asked to keep it per batch.
        sync_write.set_memtable_insert_hint_per_batch(true);
        let store = Self {
            db,
            sync_write,
            admin: Mutex::new(()),
            fail_next_writes: AtomicU32::new(0),
            stall_writes: std::sync::atomic::AtomicBool::new(false),
            keyring: Keyring::new(Some(master)),
            hot_lock: std::sync::RwLock::new(()),
            archive_epoch: std::sync::atomic::AtomicU64::new(0),
            path: config.path.clone(),
        };
        store.check_master_key()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every column family is created at open")
    }

    /// Makes the next `n` group commits fail before they reach RocksDB, as a full disk or a
    /// failing device would. For failure tests (cases A6, F37) and drills.
    pub fn fail_next_writes(&self, n: u32) {
        self.fail_next_writes.store(n, Ordering::SeqCst);
    }

    /// Holds every group commit until called again with `false`, as a slow disk would. For
    /// back-pressure tests (case A7) and drills.
    pub fn stall_writes(&self, stalled: bool) {
        self.stall_writes.store(stalled, Ordering::SeqCst);
    }

    pub(crate) fn wait_while_stalled(&self) {
        while self.stall_writes.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Opens an existing store for reading only, beside a running server. Without the master
    /// key it reads counts and the registry, not positions.
    pub fn open_read_only(path: &Path, master: Option<MasterKey>) -> Result<Self, StoreError> {
        let opts = Options::default();
        let db = DB::open_cf_for_read_only(&opts, path, ALL_CFS, false)?;
        Ok(Self {
            db,
            sync_write: WriteOptions::default(),
            admin: Mutex::new(()),
            fail_next_writes: AtomicU32::new(0),
            stall_writes: std::sync::atomic::AtomicBool::new(false),
            keyring: Keyring::new(master),
            hot_lock: std::sync::RwLock::new(()),
            archive_epoch: std::sync::atomic::AtomicU64::new(0),
            path: path.to_owned(),
        })
    }

    pub(crate) fn take_injected_failure(&self) -> bool {
        self.fail_next_writes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    pub fn journey(
        &self,
        t: TenantId,
        d: DeviceId,
        j: JourneyId,
    ) -> Result<Option<JourneyMeta>, StoreError> {
        let key = keys::journey_key(t, d, j);
        match self.db.get_pinned_cf(self.cf(CF_JOURNEYS), key)? {
            Some(v) => Ok(Some(JourneyMeta::decode(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// A device's journeys, oldest journey id first.
    pub fn journeys(
        &self,
        t: TenantId,
        d: DeviceId,
    ) -> Result<Vec<(JourneyId, JourneyMeta)>, StoreError> {
        let prefix = keys::device_prefix(t, d);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            self.cf(CF_JOURNEYS),
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let (_, _, j) = keys::parse_journey_key(&k)
                .ok_or_else(|| StoreError::corrupt("journey key", &k, "wrong length"))?;
            out.push((j, JourneyMeta::decode(&k, &v)?));
        }
        Ok(out)
    }

    /// A journey's positions in fix-time order, whatever order they arrived in.
    pub fn track(
        &self,
        t: TenantId,
        d: DeviceId,
        j: JourneyId,
    ) -> Result<Vec<Position>, StoreError> {
        let prefix = keys::journey_key(t, d, j);
        let mut out = Vec::new();
        self.for_each_chunk(&prefix, |_, c| out.extend(c.positions))?;
        // Each fix time is stored once per journey (the writer drops repeats), so a stable
        // sort is all that is needed.
        out.sort_by_key(|p| p.fix_time_us);
        Ok(out)
    }

    /// A journey's positions with fix times in `from_us..=to_us` (both bounds included), in
    /// fix-time order.
    pub fn track_between(
        &self,
        t: TenantId,
        d: DeviceId,
        j: JourneyId,
        from_us: i64,
        to_us: i64,
    ) -> Result<Vec<Position>, StoreError> {
        let mut track = self.track(t, d, j)?;
        track.retain(|p| (from_us..=to_us).contains(&p.fix_time_us));
        Ok(track)
    }

    /// Every position of a device, in fix-time order.
    pub fn device_positions(&self, t: TenantId, d: DeviceId) -> Result<Vec<Position>, StoreError> {
        let prefix = keys::device_prefix(t, d);
        let mut out = Vec::new();
        self.for_each_chunk(&prefix, |_, c| out.extend(c.positions))?;
        out.sort_by_key(|p| p.fix_time_us);
        Ok(out)
    }

    pub(crate) fn for_each_chunk(
        &self,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], chunk::Chunk),
    ) -> Result<(), StoreError> {
        for item in self.db.iterator_cf(
            self.cf(CF_CHUNKS),
            IteratorMode::From(prefix, Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            let tenant = keys::u32_at(&k, 0)
                .ok_or_else(|| StoreError::corrupt("chunk key", &k, "too short"))?;
            f(
                &k,
                chunk::decode(&self.chunk_cipher(TenantId(tenant))?, &k, &v)?,
            );
        }
        Ok(())
    }

    /// The newest usable position of a device.
    pub fn last_position(&self, t: TenantId, d: DeviceId) -> Result<Option<Position>, StoreError> {
        let key = keys::device_prefix(t, d);
        match self.db.get_pinned_cf(self.cf(CF_LAST), key)? {
            None => Ok(None),
            Some(v) => {
                let c = chunk::decode(&self.chunk_cipher(t)?, &key, &v)?;
                Ok(c.positions.into_iter().next())
            }
        }
    }

    /// Whether the record with this sequence number of this device is stored.
    pub fn is_stored(&self, d: DeviceId, seq: crate::BatchSeq) -> Result<bool, StoreError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(keys::CF_SEQS), keys::seq_key(d, seq))?
            .is_some())
    }

    /// Counts what the store holds, from journey metadata and the registry.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut s = StoreStats {
            tenants: self.tenants()?.len() as u64,
            devices: self.devices(None)?.len() as u64,
            ..StoreStats::default()
        };
        for item in self
            .db
            .iterator_cf(self.cf(CF_JOURNEYS), IteratorMode::Start)
        {
            let (k, v) = item?;
            let m = JourneyMeta::decode(&k, &v)?;
            s.journeys += 1;
            s.positions += m.positions;
            s.flagged_positions += m.flagged as u64;
            s.batches += m.batches as u64;
        }
        for item in self
            .db
            .iterator_cf(self.cf(keys::CF_ARCHIVED), IteratorMode::Start)
        {
            let (k, v) = item?;
            let e: crate::ArchivedJourney = serde_json::from_slice(&v)
                .map_err(|e| StoreError::corrupt("archive entry", &k, e.to_string()))?;
            s.archived_journeys += 1;
            s.archived_positions += e.positions;
        }
        for cf in ALL_CFS {
            let cf = self.cf(cf);
            let sst = self
                .db
                .property_int_value_cf(cf, "rocksdb.total-sst-files-size")?
                .unwrap_or(0);
            let mem = self
                .db
                .property_int_value_cf(cf, "rocksdb.cur-size-all-mem-tables")?
                .unwrap_or(0);
            s.disk_bytes += sst + mem;
        }
        Ok(s)
    }

    /// One synced put into the chunks column family, outside the writer: for the raw storage
    /// baseline of `journeyd bench`.
    pub fn raw_put_synced(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.db
            .put_cf_opt(self.cf(CF_CHUNKS), key, value, &self.sync_write)?;
        Ok(())
    }

    /// Figures RocksDB keeps about itself, for metrics.
    pub fn engine_stats(&self) -> Result<EngineStats, StoreError> {
        let mut e = EngineStats::default();
        for cf in ALL_CFS {
            let cf = self.cf(cf);
            let int = |name: &str| {
                self.db
                    .property_int_value_cf(cf, name)
                    .map(|v| v.unwrap_or(0))
            };
            e.bytes +=
                int("rocksdb.total-sst-files-size")? + int("rocksdb.cur-size-all-mem-tables")?;
            e.write_stopped = e.write_stopped.max(int("rocksdb.is-write-stopped")?);
            e.delayed_write_rate = e
                .delayed_write_rate
                .max(int("rocksdb.actual-delayed-write-rate")?);
        }
        Ok(e)
    }

    /// Stops RocksDB's background compactions and flushes, waiting for running ones, so the
    /// process can exit without racing them. Call last, after the writer has stopped.
    pub fn stop_background_work(&self) {
        self.db.cancel_all_background_work(true);
    }

    /// Flushes memtables to SST files (for clean shutdowns and stats).
    pub fn flush(&self) -> Result<(), StoreError> {
        for cf in ALL_CFS {
            self.db.flush_cf(self.cf(cf))?;
        }
        Ok(())
    }
}
