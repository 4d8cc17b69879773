//! The journeyd hot store: two months of positions in RocksDB, written durably in groups.
//!
//! | column family | key | value |
//! | --- | --- | --- |
//! | `chunks` | tenant u32 BE · device u64 BE · journey u64 BE · seq u64 BE | a chunk: one batch's positions ([`chunk`]) |
//! | `journeys` | tenant · device · journey | [`JourneyMeta`], 64 bytes |
//! | `seqs` | device u64 BE · seq u64 BE | journey u64 BE: the record with this sequence number is stored |
//! | `last` | tenant · device | the device's newest usable position, as a one-position chunk (64 bytes) |
//! | `devices` | device u64 BE | [`DeviceRecord`] as JSON |
//! | `tenants` | tenant u32 BE | [`TenantRecord`] as JSON, with its [`TenantPolicy`] |
//! | `users` | tenant u32 BE · username | [`UserRecord`] as JSON |
//! | `audit` | tenant u32 BE · time · counter | [`AuditEntry`] as JSON, append-only |
//! | `keys` | tenant u32 BE | the tenant's data key, wrapped by the master key, as JSON |
//! | `archived` | tenant · device · journey | [`ArchivedJourney`]: where the journey lives in the archive |
//! | `pending` | object name | [`PendingUpload`]: an archive upload begun and not yet committed |
//!
//! Chunks and the `last` positions are sealed with the tenant's data key (`journeyd-keys`).
//!
//! A batch costs one put of its chunk, one of its journey's metadata and one of its sequence
//! number (and its device's last position, once per group), all in one write batch that shares
//! a synced WAL write with every other batch of its writer thread that arrived meanwhile, and
//! often with the other threads' too ([`writer`]). Keys derived from (device, seq) make a
//! resend find itself.
//!
//! This crate never touches the network and never decides what is plausible: it stores what
//! journeyd-wire's rules kept.

mod accounts;
mod archived;
mod audit;
pub mod chunk;
mod error;
mod keyring;
mod keys;
mod latency;
mod meta;
mod registry;
mod store;
pub mod writer;

pub use accounts::{Role, UserRecord};
pub use archived::{
    ArchivePart, ArchivedJourney, PendingJourney, PendingUpload, RESTORED_SEQ_BASE,
};
pub use audit::{AuditEntry, AuditQuery};
pub use error::StoreError;
pub use latency::{LATENCY_BOUNDS_US, LatencyHistogram};
pub use meta::JourneyMeta;
pub use registry::{AuthFailure, DeviceRecord, TenantPolicy, TenantRecord, hash_secret};
pub use store::{DEFAULT_MASTER_KEY_FILE, EngineStats, HotStore, StoreConfig, StoreStats};
pub use writer::{WriteOutcome, WriteRequest, Writer, WriterConfig, WriterStats};

/// A company using journeyd.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct TenantId(pub u32);

/// A device, as numbered by the server at enrolment.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct DeviceId(pub u64);

/// A journey, as numbered by its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JourneyId(pub u64);

/// A device's sequence number of a record it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchSeq(pub u64);
