//! What the store knows of the archive: an index entry per archived journey, and uploads begun
//! and not yet committed. The compactor moves a journey out in one write (index entry in, hot
//! chunks and metadata out) so a journey is always hot, archived, or both while restored.

use rocksdb::{IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use journeyd_wire::Position;

use crate::keys::{self, CF_ARCHIVED, CF_CHUNKS, CF_JOURNEYS, CF_PENDING};
use crate::{BatchSeq, DeviceId, HotStore, JourneyId, JourneyMeta, StoreError, TenantId, chunk};

/// Sequence numbers of chunks brought back from the archive: far above any a device uses, so
/// they never meet a device's own.
pub const RESTORED_SEQ_BASE: u64 = 1 << 62;
const RESTORED_CHUNK_POSITIONS: usize = 1000;

/// One object holding (part of) a journey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivePart {
    /// Object name, relative to the archive's prefix.
    pub object: String,
    pub rows: u64,
    pub first_fix_us: i64,
    pub last_fix_us: i64,
}

/// Where an archived journey lives, with what a search needs without opening an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedJourney {
    pub tenant: TenantId,
    pub device: DeviceId,
    pub journey: u64,
    pub started_us: Option<i64>,
    pub ended_us: Option<i64>,
    pub first_fix_us: i64,
    pub last_fix_us: i64,
    pub positions: u64,
    /// Usually one; a journey amended by positions that arrived after it was archived has more.
    pub parts: Vec<ArchivePart>,
    pub archived_us: i64,
    /// A copy is back in the hot store until then (an investigator restored it).
    pub restored_until_us: Option<i64>,
}

impl ArchivedJourney {
    /// Adds the part of another object to this entry (a late amendment).
    pub fn merge(&mut self, other: ArchivedJourney) {
        self.started_us = match (self.started_us, other.started_us) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.ended_us = self.ended_us.max(other.ended_us);
        self.first_fix_us = self.first_fix_us.min(other.first_fix_us);
        self.last_fix_us = self.last_fix_us.max(other.last_fix_us);
        self.positions += other.positions;
        for part in other.parts {
            if !self.parts.iter().any(|p| p.object == part.object) {
                self.parts.push(part);
            }
        }
        self.archived_us = self.archived_us.max(other.archived_us);
    }
}

/// An upload begun and not committed: which journeys the object holds, with their rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingUpload {
    pub object: String,
    pub tenant: TenantId,
    /// (device, journey, rows written).
    pub journeys: Vec<(DeviceId, u64, u64)>,
    pub begun_us: i64,
}

impl HotStore {
    /// Every hot journey of every tenant, in key order.
    pub fn all_journeys(
        &self,
    ) -> Result<Vec<(TenantId, DeviceId, JourneyId, JourneyMeta)>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_JOURNEYS), IteratorMode::Start)
        {
            let (k, v) = item?;
            let (t, d, j) = keys::parse_journey_key(&k)
                .ok_or_else(|| StoreError::corrupt("journey key", &k, "wrong length"))?;
            out.push((t, d, j, JourneyMeta::decode(&k, &v)?));
        }
        Ok(out)
    }

    /// Records, synced, that an upload is about to begin.
    pub fn begin_upload(&self, pending: &PendingUpload) -> Result<(), StoreError> {
        self.put_json(CF_PENDING, pending.object.as_bytes(), pending)
    }

    pub fn pending_uploads(&self) -> Result<Vec<PendingUpload>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_PENDING), IteratorMode::Start)
        {
            let (k, v) = item?;
            out.push(
                serde_json::from_slice(&v)
                    .map_err(|e| StoreError::corrupt("pending upload", &k, e.to_string()))?,
            );
        }
        Ok(out)
    }

    /// Forgets an upload that was not committed (its object is gone or was deleted).
    pub fn abandon_upload(&self, object: &str) -> Result<(), StoreError> {
        self.db
            .delete_cf_opt(self.cf(CF_PENDING), object.as_bytes(), &self.sync_write)?;
        Ok(())
    }

    /// The positions a hot journey holds right now, counted from its chunks' headers.
    pub fn hot_rows(&self, t: TenantId, d: DeviceId, j: JourneyId) -> Result<u64, StoreError> {
        let prefix = keys::journey_key(t, d, j);
        let mut n = 0u64;
        for item in self.db.iterator_cf(
            self.cf(CF_CHUNKS),
            IteratorMode::From(&prefix, rocksdb::Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            n += chunk::count(&k, &v)? as u64;
        }
        Ok(n)
    }

    /// Commits a verified upload in one synced write: the index entries in, the journeys' hot
    /// chunks and metadata out, the pending record gone. Refused, with nothing written, if any
    /// journey's hot rows no longer equal what the object holds (a late batch arrived meanwhile):
    /// the caller drops that object and archives again later.
    pub fn commit_archive(
        &self,
        object: &str,
        entries: Vec<ArchivedJourney>,
    ) -> Result<(), StoreError> {
        let _exclusive = self.hot_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = WriteBatch::default();
        for entry in entries {
            let j = JourneyId(entry.journey);
            let rows = self.hot_rows(entry.tenant, entry.device, j)?;
            let in_object: u64 = entry
                .parts
                .iter()
                .filter(|p| p.object == object)
                .map(|p| p.rows)
                .sum();
            if rows != in_object {
                return Err(StoreError::Invalid(format!(
                    "journey {} of device {} holds {rows} positions hot but {in_object} in {object}; not committed",
                    entry.journey, entry.device.0
                )));
            }
            let jkey = keys::journey_key(entry.tenant, entry.device, j);
            let mut end = jkey;
            increment(&mut end);
            let merged = match self.archived(entry.tenant, entry.device, j)? {
                Some(mut old) => {
                    old.merge(entry);
                    old
                }
                None => entry,
            };
            batch.put_cf(
                self.cf(CF_ARCHIVED),
                jkey,
                serde_json::to_vec(&merged).expect("plain struct serialises"),
            );
            batch.delete_range_cf(self.cf(CF_CHUNKS), jkey, end);
            batch.delete_cf(self.cf(CF_JOURNEYS), jkey);
        }
        batch.delete_cf(self.cf(CF_PENDING), object.as_bytes());
        self.db.write_opt(batch, &self.sync_write)?;
        self.archive_epoch
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// The index entry of an archived journey.
    pub fn archived(
        &self,
        t: TenantId,
        d: DeviceId,
        j: JourneyId,
    ) -> Result<Option<ArchivedJourney>, StoreError> {
        let key = keys::journey_key(t, d, j);
        match self.db.get_pinned_cf(self.cf(CF_ARCHIVED), key)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::corrupt("archive entry", &key, e.to_string())),
        }
    }

    /// Archived journeys of a tenant (of one device, if given), in key order.
    pub fn archived_journeys(
        &self,
        t: TenantId,
        device: Option<DeviceId>,
    ) -> Result<Vec<ArchivedJourney>, StoreError> {
        let prefix: Vec<u8> = match device {
            Some(d) => keys::device_prefix(t, d).to_vec(),
            None => t.0.to_be_bytes().to_vec(),
        };
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            self.cf(CF_ARCHIVED),
            IteratorMode::From(&prefix, rocksdb::Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(
                serde_json::from_slice(&v)
                    .map_err(|e| StoreError::corrupt("archive entry", &k, e.to_string()))?,
            );
        }
        Ok(out)
    }

    /// Replaces the whole archive index (after a rebuild from the objects).
    pub fn replace_archive_index(&self, entries: &[ArchivedJourney]) -> Result<(), StoreError> {
        let _exclusive = self.hot_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_ARCHIVED), &[0u8; 20][..], &[0xffu8; 21][..]);
        for e in entries {
            batch.put_cf(
                self.cf(CF_ARCHIVED),
                keys::journey_key(e.tenant, e.device, JourneyId(e.journey)),
                serde_json::to_vec(e).expect("plain struct serialises"),
            );
        }
        self.db.write_opt(batch, &self.sync_write)?;
        Ok(())
    }

    /// Brings an archived journey's positions back into the hot store until `until_us`, in one
    /// write. Reads then serve it like any hot journey; the compactor drops the copy after.
    pub fn restore_into_hot(
        &self,
        entry: &ArchivedJourney,
        positions: &[Position],
        until_us: i64,
        now_us: i64,
    ) -> Result<(), StoreError> {
        let _exclusive = self.hot_lock.lock().unwrap_or_else(|p| p.into_inner());
        let j = JourneyId(entry.journey);
        let jkey = keys::journey_key(entry.tenant, entry.device, j);
        let mut end = jkey;
        increment(&mut end);
        let cipher = self.chunk_cipher(entry.tenant)?;
        let mut batch = WriteBatch::default();
        // A second restore replaces the first copy.
        batch.delete_range_cf(self.cf(CF_CHUNKS), jkey, end);
        let mut meta = JourneyMeta {
            started_us: entry.started_us,
            ended_us: entry.ended_us,
            ..JourneyMeta::default()
        };
        let mut buf = Vec::new();
        for (i, part) in positions.chunks(RESTORED_CHUNK_POSITIONS).enumerate() {
            let key = keys::chunk_key(
                entry.tenant,
                entry.device,
                j,
                BatchSeq(RESTORED_SEQ_BASE + i as u64),
            );
            chunk::encode(&cipher, &key, part, now_us, &mut buf)?;
            batch.put_cf(self.cf(CF_CHUNKS), key, &buf);
            let flagged = part.iter().filter(|p| p.quality != 0).count() as u32;
            if let (Some(first), Some(last)) = (part.first(), part.last()) {
                meta.add_batch(
                    first.fix_time_us,
                    last.fix_time_us,
                    part.len() as u64,
                    flagged,
                    now_us,
                );
            }
        }
        batch.put_cf(self.cf(CF_JOURNEYS), jkey, meta.encode());
        self.write_with_entry(batch, entry, Some(until_us))
    }

    /// Adds `entry` (with `restored_until_us`) to `batch`, writes it synced, and tells the
    /// writer its cache of hot journeys is stale.
    fn write_with_entry(
        &self,
        mut batch: WriteBatch,
        entry: &ArchivedJourney,
        restored_until_us: Option<i64>,
    ) -> Result<(), StoreError> {
        let updated = ArchivedJourney {
            restored_until_us,
            ..entry.clone()
        };
        batch.put_cf(
            self.cf(CF_ARCHIVED),
            keys::journey_key(entry.tenant, entry.device, JourneyId(entry.journey)),
            serde_json::to_vec(&updated).expect("plain struct serialises"),
        );
        self.db.write_opt(batch, &self.sync_write)?;
        self.archive_epoch
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Drops the hot copy of a restored journey (its restore time is over); the archive keeps it.
    pub fn drop_restored(&self, entry: &ArchivedJourney) -> Result<(), StoreError> {
        let _exclusive = self.hot_lock.lock().unwrap_or_else(|p| p.into_inner());
        let jkey = keys::journey_key(entry.tenant, entry.device, JourneyId(entry.journey));
        let mut end = jkey;
        increment(&mut end);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_CHUNKS), jkey, end);
        batch.delete_cf(self.cf(CF_JOURNEYS), jkey);
        self.write_with_entry(batch, entry, None)
    }

    /// A consistent copy of the whole store in `dir` (hard links where it can), for backups.
    pub fn checkpoint(&self, dir: &std::path::Path) -> Result<(), StoreError> {
        let cp = rocksdb::checkpoint::Checkpoint::new(&self.db)?;
        cp.create_checkpoint(dir)?;
        Ok(())
    }
}

/// The next key of the same length: the exclusive end of a prefix range.
fn increment(key: &mut [u8; 20]) {
    for b in key.iter_mut().rev() {
        if *b == 0xff {
            *b = 0;
        } else {
            *b += 1;
            return;
        }
    }
}
