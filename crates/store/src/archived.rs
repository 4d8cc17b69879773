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
    pub journeys: Vec<PendingJourney>,
    pub begun_us: i64,
}

/// One journey of a pending upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingJourney {
    pub device: DeviceId,
    pub journey: u64,
    /// Rows written to the object: the hot positions the archive does not hold yet (none, when
    /// a device only resent what was archived).
    pub rows: u64,
    /// Positions the journey held hot when the object was written.
    pub hot_rows: u64,
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

    /// Commits a verified upload in one synced write: the index entries in (merged with any
    /// earlier parts, and with the start and end marks the hot metadata holds now, so that a
    /// mark acked while the object was written is kept), the journeys' hot chunks and metadata
    /// out, the pending record gone.
    /// Refused, with nothing written, if any journey's hot rows no longer equal what was read
    /// when the object was written (a late batch arrived meanwhile): the caller drops that object
    /// and archives again later.
    pub fn commit_archive(
        &self,
        pending: &PendingUpload,
        entries: Vec<ArchivedJourney>,
    ) -> Result<(), StoreError> {
        let _exclusive = self.hot_lock.write().unwrap_or_else(|p| p.into_inner());
        let mut batch = WriteBatch::default();
        for mut entry in entries {
            let j = JourneyId(entry.journey);
            let rows = self.hot_rows(entry.tenant, entry.device, j)?;
            let expected = pending
                .journeys
                .iter()
                .find(|p| p.device == entry.device && p.journey == entry.journey)
                .map_or(u64::MAX, |p| p.hot_rows);
            if rows != expected {
                return Err(StoreError::Invalid(format!(
                    "journey {} of device {} holds {rows} positions hot, {expected} when {} was written; not committed",
                    entry.journey, entry.device.0, pending.object
                )));
            }
            let jkey = keys::journey_key(entry.tenant, entry.device, j);
            if let Some(v) = self.db.get_pinned_cf(self.cf(CF_JOURNEYS), jkey)? {
                let meta = JourneyMeta::decode(&jkey, &v)?;
                entry.started_us = match (entry.started_us, meta.started_us) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                entry.ended_us = entry.ended_us.max(meta.ended_us);
            }
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
        batch.delete_cf(self.cf(CF_PENDING), pending.object.as_bytes());
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
        let _exclusive = self.hot_lock.write().unwrap_or_else(|p| p.into_inner());
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

    /// The device's own chunks of a journey (not restored copies), decoded.
    fn own_chunks(
        &self,
        t: TenantId,
        d: DeviceId,
        j: JourneyId,
    ) -> Result<Vec<chunk::Chunk>, StoreError> {
        let mut out = Vec::new();
        self.for_each_chunk(&keys::journey_key(t, d, j), |k, c| {
            if keys::u64_at(k, 20).is_some_and(|seq| seq < RESTORED_SEQ_BASE) {
                out.push(c);
            }
        })?;
        Ok(out)
    }

    /// A journey's metadata recomputed from chunks, with the marks of `marks`.
    fn meta_of<'a>(
        marks: &JourneyMeta,
        chunks: impl Iterator<Item = (&'a [Position], i64)>,
    ) -> JourneyMeta {
        let mut meta = JourneyMeta {
            started_us: marks.started_us,
            ended_us: marks.ended_us,
            ..JourneyMeta::default()
        };
        for (positions, received_us) in chunks {
            if let (Some(first), Some(last)) = (
                positions.iter().map(|p| p.fix_time_us).min(),
                positions.iter().map(|p| p.fix_time_us).max(),
            ) {
                let flagged = positions.iter().filter(|p| p.quality != 0).count() as u32;
                meta.add_batch(first, last, positions.len() as u64, flagged, received_us);
            }
        }
        meta
    }

    /// The key range of a journey's restored chunks.
    fn restored_range(t: TenantId, d: DeviceId, j: JourneyId) -> ([u8; 28], [u8; 20]) {
        let mut end = keys::journey_key(t, d, j);
        increment(&mut end);
        (keys::chunk_key(t, d, j, BatchSeq(RESTORED_SEQ_BASE)), end)
    }

    /// Brings an archived journey's positions back into the hot store until `until_us`, in one
    /// write, beside whatever the device sent to the journey since it was archived (fix times the
    /// hot store holds are not copied again). Reads then serve it like any hot journey; the
    /// compactor drops the copy after, keeping the device's own positions.
    pub fn restore_into_hot(
        &self,
        entry: &ArchivedJourney,
        positions: &[Position],
        until_us: i64,
        now_us: i64,
    ) -> Result<(), StoreError> {
        let _exclusive = self.hot_lock.write().unwrap_or_else(|p| p.into_inner());
        let (t, d, j) = (entry.tenant, entry.device, JourneyId(entry.journey));
        let jkey = keys::journey_key(t, d, j);
        let own = self.own_chunks(t, d, j)?;
        let held: std::collections::HashSet<i64> = own
            .iter()
            .flat_map(|c| c.positions.iter().map(|p| p.fix_time_us))
            .collect();
        let copy: Vec<Position> = positions
            .iter()
            .filter(|p| !held.contains(&p.fix_time_us))
            .copied()
            .collect();
        let cipher = self.chunk_cipher(t)?;
        let mut batch = WriteBatch::default();
        // A second restore replaces the first copy.
        let (from, to) = Self::restored_range(t, d, j);
        batch.delete_range_cf(self.cf(CF_CHUNKS), &from[..], &to[..]);
        let mut buf = Vec::new();
        for (i, part) in copy.chunks(RESTORED_CHUNK_POSITIONS).enumerate() {
            let key = keys::chunk_key(t, d, j, BatchSeq(RESTORED_SEQ_BASE + i as u64));
            chunk::encode(&cipher, &key, part, now_us, &mut buf)?;
            batch.put_cf(self.cf(CF_CHUNKS), key, &buf);
        }
        let marks = self.journey(t, d, j)?.unwrap_or(JourneyMeta {
            started_us: entry.started_us,
            ended_us: entry.ended_us,
            ..JourneyMeta::default()
        });
        let meta = Self::meta_of(
            &marks,
            own.iter()
                .map(|c| (c.positions.as_slice(), c.received_us))
                .chain(copy.chunks(RESTORED_CHUNK_POSITIONS).map(|p| (p, now_us))),
        );
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

    /// Drops the restored copy of a journey (its restore time is over); the archive keeps it,
    /// and positions the device sent meanwhile stay hot (archived on a later run).
    pub fn drop_restored(&self, entry: &ArchivedJourney) -> Result<(), StoreError> {
        let _exclusive = self.hot_lock.write().unwrap_or_else(|p| p.into_inner());
        let (t, d, j) = (entry.tenant, entry.device, JourneyId(entry.journey));
        let jkey = keys::journey_key(t, d, j);
        let own = self.own_chunks(t, d, j)?;
        let mut batch = WriteBatch::default();
        let (from, to) = Self::restored_range(t, d, j);
        batch.delete_range_cf(self.cf(CF_CHUNKS), &from[..], &to[..]);
        if own.is_empty() {
            batch.delete_cf(self.cf(CF_JOURNEYS), jkey);
        } else {
            let marks = self.journey(t, d, j)?.unwrap_or_default();
            let meta = Self::meta_of(
                &marks,
                own.iter().map(|c| (c.positions.as_slice(), c.received_us)),
            );
            batch.put_cf(self.cf(CF_JOURNEYS), jkey, meta.encode());
        }
        self.write_with_entry(batch, entry, None)
    }

    /// Drops a hot journey the archive already holds in full (a node rebuilt from a backup
    /// taken before the journey was archived).
    pub fn drop_hot_copy(&self, entry: &ArchivedJourney) -> Result<(), StoreError> {
        let _exclusive = self.hot_lock.write().unwrap_or_else(|p| p.into_inner());
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
