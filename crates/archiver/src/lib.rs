//! The archive's jobs, between the hot store and object storage:
//!
//! - [`compact`]: journeys past their tenant's hot retention (and the late-arrival window) move
//!   into encrypted Parquet objects, verified before the hot copy goes;
//! - [`retrieve`]: search, read straight from the archive, restore into the hot store for a
//!   while, and rebuild the index from the objects alone;
//! - [`backup`]: an encrypted RocksDB checkpoint up to object storage, and a node rebuilt from it.
//!
//! Objects are laid out Hive-style so that Spark, Trino, DuckDB or DataFusion read the folder as
//! a table (given the tenant key): `tenant=<id>/date=<YYYY-MM-DD>/part-<µs>-<random>.parquet`,
//! the date being the UTC day of the journey's first fix. Backups live under `backups/`.
//!
//! Never: deletes a hot journey before its archive copy is verified, or writes an index entry
//! for an object it has not read back.

pub mod backup;
pub mod compact;
pub mod retrieve;

pub use compact::{Compactor, CompactorConfig, CompactorStats, Progress, RunReport};

/// What went wrong in an archive job.
#[derive(Debug, thiserror::Error)]
pub enum ArchiverError {
    #[error(transparent)]
    Store(#[from] journeyd_store::StoreError),
    #[error(transparent)]
    Objects(#[from] journeyd_objects::ObjectError),
    #[error("archive file {object}: {source}")]
    File {
        object: String,
        source: journeyd_archive::ArchiveError,
    },
    #[error("archive file {object} failed verification: {detail}")]
    Verification { object: String, detail: String },
    #[error(transparent)]
    Key(#[from] journeyd_keys::KeyError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ArchiverError {
    let what = what.into();
    move |source| ArchiverError::Io { what, source }
}

/// The UTC day of a time in µs, as `YYYY-MM-DD`.
pub(crate) fn utc_date(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".into())
}

/// The tenant an object name's `tenant=<id>/` says it belongs to.
pub fn tenant_of_object(name: &str) -> Option<u32> {
    name.strip_prefix("tenant=")?
        .split('/')
        .next()?
        .parse()
        .ok()
}

pub(crate) fn random_suffix() -> String {
    let mut b = [0u8; 6];
    // Uniqueness only; a failure of the OS source falls back to the clock in the caller's name.
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}
