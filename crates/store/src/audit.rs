//! The audit log: who read, exported, blocked or changed what, and when. Append-only: this
//! module offers no way to change or remove an entry.
//!
//! Key: tenant u32 BE · time µs (i64 with the sign bit flipped, BE) · counter u64 BE, so a
//! tenant's entries are in time order and a time range is one scan.

use std::sync::atomic::{AtomicU64, Ordering};

use rocksdb::{Direction, IteratorMode, WriteOptions};
use serde::{Deserialize, Serialize};

use crate::keys::CF_AUDIT;
use crate::{HotStore, StoreError, TenantId};

/// One audited action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When, µs since the epoch, UTC.
    pub at_us: i64,
    pub tenant: TenantId,
    /// Who: `user:<name>`, `device:<id>`, `anonymous`, or `system`.
    pub actor: String,
    /// What, e.g. `journey.track`, `device.block`, `auth.login`.
    pub action: String,
    /// On what, e.g. `device/7/journey/1700000000000000`.
    pub target: String,
    /// `ok`, or what went wrong (`denied`, `not_found`, `locked`, ...).
    pub result: String,
    /// Where from (the client's address), when known.
    #[serde(default)]
    pub source: String,
}

/// Which entries to read.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub from_us: Option<i64>,
    pub to_us: Option<i64>,
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Continue after this key (from a previous page).
    pub after: Option<Vec<u8>>,
    pub limit: usize,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn time_part(at_us: i64) -> [u8; 8] {
    ((at_us as u64) ^ (1 << 63)).to_be_bytes()
}

fn key(tenant: TenantId, at_us: i64, n: u64) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..4].copy_from_slice(&tenant.0.to_be_bytes());
    k[4..12].copy_from_slice(&time_part(at_us));
    k[12..].copy_from_slice(&n.to_be_bytes());
    k
}

impl HotStore {
    /// Appends an entry. Written to the WAL at once and synced with the next group commit (or
    /// the next synced write), like every other write of the node.
    pub fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let bytes = serde_json::to_vec(entry).expect("audit entries serialise");
        self.db.put_cf_opt(
            self.cf(CF_AUDIT),
            key(entry.tenant, entry.at_us, n),
            bytes,
            &WriteOptions::default(),
        )?;
        Ok(())
    }

    /// A tenant's entries in time order, filtered, with the key to continue after.
    pub fn audit(
        &self,
        tenant: TenantId,
        q: &AuditQuery,
    ) -> Result<(Vec<AuditEntry>, Option<Vec<u8>>), StoreError> {
        let start = match &q.after {
            Some(k) => {
                let mut k = k.clone();
                k.push(0);
                k
            }
            None => key(tenant, q.from_us.unwrap_or(i64::MIN), 0).to_vec(),
        };
        let prefix = tenant.0.to_be_bytes();
        let mut out = Vec::new();
        let mut last_key = None;
        for item in self.db.iterator_cf(
            self.cf(CF_AUDIT),
            IteratorMode::From(&start, Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let e: AuditEntry = serde_json::from_slice(&v)
                .map_err(|e| StoreError::corrupt("audit entry", &k, e.to_string()))?;
            if q.to_us.is_some_and(|to| e.at_us > to) {
                break;
            }
            if q.actor.as_ref().is_some_and(|a| *a != e.actor)
                || q.action.as_ref().is_some_and(|a| *a != e.action)
            {
                continue;
            }
            if q.limit > 0 && out.len() == q.limit {
                return Ok((out, last_key));
            }
            last_key = Some(k.to_vec());
            out.push(e);
        }
        Ok((out, None))
    }
}
