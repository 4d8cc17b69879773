//! The outbox: every record a device sends, kept until the server acks it.
//!
//! On disk (the persistent kind) it is a folder:
//!
//! | file | content |
//! | --- | --- |
//! | `seq` | the highest sequence number reserved so far, decimal; reserved in blocks of 1024, so a restart never reuses a number the server may have seen |
//! | `credential` | the device credential token, once enrolled |
//! | `<seq, 20 digits>.rec` | created time (i64 LE, µs) then the whole encoded frame |
//!
//! Every record file is synced before the record is first sent, and removed only after its ack.
//! A file cut short by a crash was never sent, and is dropped on open.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use journeyd_wire::frame::{FrameHeader, HEADER_LEN};

use crate::{Credential, DeviceError};

const SEQ_BLOCK: u64 = 1024;

/// A record waiting for its ack.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) created_us: i64,
    pub(crate) frame: Vec<u8>,
}

/// Records waiting for their ack, in sequence order.
#[derive(Debug)]
pub struct Outbox {
    dir: Option<PathBuf>,
    records: BTreeMap<u64, Pending>,
    next_seq: u64,
    reserved_to: u64,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> DeviceError + '_ {
    move |source| DeviceError::Outbox {
        path: path.display().to_string(),
        source,
    }
}

impl Outbox {
    /// An outbox that lives only in memory (load generators, short-lived tools).
    pub fn memory() -> Self {
        Self {
            dir: None,
            records: BTreeMap::new(),
            next_seq: 1,
            reserved_to: u64::MAX,
        }
    }

    /// Opens (or creates) a persistent outbox in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, DeviceError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let seq_path = dir.join("seq");
        let reserved = match std::fs::read_to_string(&seq_path) {
            Ok(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|e| DeviceError::CorruptOutbox {
                    path: seq_path.display().to_string(),
                    detail: format!("not a number: {e}"),
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_err(&seq_path)(e)),
        };
        let mut records = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let path = entry.map_err(io_err(&dir))?.path();
            let Some(seq) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".rec"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let bytes = std::fs::read(&path).map_err(io_err(&path))?;
            match parse_record(&bytes) {
                Some(p) => {
                    records.insert(seq, p);
                }
                None => {
                    tracing::warn!(path = %path.display(), "dropping a record cut short before it was sent");
                    std::fs::remove_file(&path).map_err(io_err(&path))?;
                }
            }
        }
        let highest = records
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(reserved);
        let mut outbox = Self {
            dir: Some(dir),
            records,
            next_seq: highest + 1,
            reserved_to: highest,
        };
        outbox.reserve()?;
        Ok(outbox)
    }

    fn reserve(&mut self) -> Result<(), DeviceError> {
        if self.next_seq <= self.reserved_to {
            return Ok(());
        }
        let Some(dir) = &self.dir else { return Ok(()) };
        let to = self.next_seq + SEQ_BLOCK - 1;
        write_synced(&dir.join("seq"), to.to_string().as_bytes())?;
        self.reserved_to = to;
        Ok(())
    }

    /// Adds a record and returns its sequence number. `encode` builds the frame for that
    /// number. The record is on disk (synced) when this returns.
    pub(crate) fn push(
        &mut self,
        created_us: i64,
        encode: impl FnOnce(u64) -> Vec<u8>,
    ) -> Result<u64, DeviceError> {
        self.reserve()?;
        let seq = self.next_seq;
        self.next_seq += 1;
        let frame = encode(seq);
        if let Some(dir) = &self.dir {
            let mut bytes = Vec::with_capacity(8 + frame.len());
            bytes.extend_from_slice(&created_us.to_le_bytes());
            bytes.extend_from_slice(&frame);
            write_synced(&dir.join(format!("{seq:020}.rec")), &bytes)?;
        }
        self.records.insert(seq, Pending { created_us, frame });
        Ok(seq)
    }

    /// Removes an acked (or refused-for-good) record.
    pub(crate) fn remove(&mut self, seq: u64) -> Result<Option<Pending>, DeviceError> {
        let removed = self.records.remove(&seq);
        if removed.is_some()
            && let Some(dir) = &self.dir
        {
            let path = dir.join(format!("{seq:020}.rec"));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Ok(removed)
    }

    pub(crate) fn get(&self, seq: u64) -> Option<&Pending> {
        self.records.get(&seq)
    }

    /// Sequence numbers waiting, lowest first.
    pub(crate) fn seqs(&self) -> Vec<u64> {
        self.records.keys().copied().collect()
    }

    /// Sequence numbers of the records waiting for their ack, lowest first.
    pub fn pending_seqs(&self) -> Vec<u64> {
        self.seqs()
    }

    /// Records waiting for their ack.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Drops records created before `cutoff_us` (the device buffer is 7 days). Returns how many.
    pub(crate) fn expire(&mut self, cutoff_us: i64) -> Result<usize, DeviceError> {
        let old: Vec<u64> = self
            .records
            .iter()
            .filter(|(_, p)| p.created_us < cutoff_us)
            .map(|(s, _)| *s)
            .collect();
        for seq in &old {
            tracing::warn!(seq, "outbox record expired unsent");
            self.remove(*seq)?;
        }
        Ok(old.len())
    }

    /// The stored credential, if this device has enrolled.
    pub fn credential(&self) -> Result<Option<Credential>, DeviceError> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let path = dir.join("credential");
        match std::fs::read_to_string(&path) {
            Ok(s) => Credential::parse(&s).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    pub(crate) fn save_credential(&self, c: &Credential) -> Result<(), DeviceError> {
        match &self.dir {
            Some(dir) => write_synced(&dir.join("credential"), c.to_token().as_bytes()),
            None => Ok(()),
        }
    }
}

fn parse_record(bytes: &[u8]) -> Option<Pending> {
    let created_us = i64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let frame = bytes.get(8..)?;
    let header = FrameHeader::decode(frame).ok()?;
    (frame.len() == HEADER_LEN + header.body_len as usize).then(|| Pending {
        created_us,
        frame: frame.to_vec(),
    })
}

/// Writes a file through a temporary name, synced, so a crash leaves the old or the new one.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), DeviceError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_data().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use journeyd_wire::frame::{FrameKind, JourneyMark, encode_frame};

    use super::*;

    fn mark(seq: u64) -> Vec<u8> {
        encode_frame(
            FrameKind::JourneyStart,
            seq,
            &JourneyMark {
                journey: 1,
                at_us: 5,
            },
        )
    }

    #[test]
    fn records_survive_reopen_and_sequence_numbers_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(dir.path()).unwrap();
        let a = o.push(1, mark).unwrap();
        let b = o.push(2, mark).unwrap();
        o.remove(a).unwrap();
        drop(o);
        let mut o = Outbox::open(dir.path()).unwrap();
        assert_eq!(o.seqs(), vec![b]);
        o.remove(b).unwrap();
        drop(o);
        let mut o = Outbox::open(dir.path()).unwrap();
        assert!(o.is_empty());
        let c = o.push(3, mark).unwrap();
        assert!(c > b, "{c} must be above {b}");
    }

    #[test]
    fn torn_records_are_dropped_and_old_ones_expire() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(dir.path()).unwrap();
        o.push(10, mark).unwrap();
        o.push(1_000, mark).unwrap();
        std::fs::write(dir.path().join(format!("{:020}.rec", 99)), [1, 2, 3]).unwrap();
        drop(o);
        let mut o = Outbox::open(dir.path()).unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(o.expire(500).unwrap(), 1);
        assert_eq!(o.len(), 1);
    }
}
