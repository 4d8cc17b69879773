//! Key layouts. Big-endian so that RocksDB's byte order is numeric order.

use crate::{BatchSeq, DeviceId, JourneyId, TenantId};

pub(crate) const CF_CHUNKS: &str = "chunks";
pub(crate) const CF_JOURNEYS: &str = "journeys";
pub(crate) const CF_SEQS: &str = "seqs";
pub(crate) const CF_LAST: &str = "last";
pub(crate) const CF_DEVICES: &str = "devices";
pub(crate) const CF_TENANTS: &str = "tenants";
pub(crate) const CF_USERS: &str = "users";
pub(crate) const CF_AUDIT: &str = "audit";
pub(crate) const CF_KEYS: &str = "keys";
pub(crate) const CF_ARCHIVED: &str = "archived";
pub(crate) const CF_PENDING: &str = "pending";
pub(crate) const ALL_CFS: [&str; 11] = [
    CF_CHUNKS,
    CF_JOURNEYS,
    CF_SEQS,
    CF_LAST,
    CF_DEVICES,
    CF_TENANTS,
    CF_USERS,
    CF_AUDIT,
    CF_KEYS,
    CF_ARCHIVED,
    CF_PENDING,
];

pub(crate) fn device_prefix(t: TenantId, d: DeviceId) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&t.0.to_be_bytes());
    k[4..].copy_from_slice(&d.0.to_be_bytes());
    k
}

pub(crate) fn journey_key(t: TenantId, d: DeviceId, j: JourneyId) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..12].copy_from_slice(&device_prefix(t, d));
    k[12..].copy_from_slice(&j.0.to_be_bytes());
    k
}

pub(crate) fn chunk_key(t: TenantId, d: DeviceId, j: JourneyId, s: BatchSeq) -> [u8; 28] {
    let mut k = [0u8; 28];
    k[..20].copy_from_slice(&journey_key(t, d, j));
    k[20..].copy_from_slice(&s.0.to_be_bytes());
    k
}

pub(crate) fn seq_key(d: DeviceId, s: BatchSeq) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&d.0.to_be_bytes());
    k[8..].copy_from_slice(&s.0.to_be_bytes());
    k
}

pub(crate) fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

pub(crate) fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The (tenant, device, journey) a `journeys` key names.
pub(crate) fn parse_journey_key(k: &[u8]) -> Option<(TenantId, DeviceId, JourneyId)> {
    if k.len() != 20 {
        return None;
    }
    Some((
        TenantId(u32_at(k, 0)?),
        DeviceId(u64_at(k, 4)?),
        JourneyId(u64_at(k, 12)?),
    ))
}
