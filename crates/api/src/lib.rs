//! The journeyd query API: HTTPS only (rustls), JSON, for the web portal, reporting tools,
//! company admins and investigators. Documented in `schemas/openapi.json`.
//!
//! Every request passes one middleware ([`audit`]) that resolves the caller from the bearer
//! token and appends one audit entry when the answer is known; handlers only check the role and
//! the tenant. Every object is looked up within the caller's tenant: an id from another tenant
//! answers 404 exactly as an id that does not exist.
//!
//! Never: writes positions, opens RocksDB itself (it reads through journeyd-store), or serves
//! plain HTTP.

mod audit;
pub mod auth;
mod error;
pub mod export;
mod metrics;
pub mod report;
mod routes;
mod serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use error::ApiError;
use journeyd_ingest::{Clock, IngestServer};
use journeyd_store::HotStore;
pub use serve::ApiServer;

/// Settings of the query API (config `[api]`).
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// TCP address to listen on. Default `0.0.0.0:8443`.
    pub listen: SocketAddr,
    /// Lifetime of a login token. Default 1 h.
    pub token_ttl: Duration,
    /// Failed logins in a row that lock an account. Default 5.
    pub max_failed_logins: u32,
    /// Failed logins from one source address within `lockout` that lock that source. Default 20.
    pub max_failed_logins_per_source: u32,
    /// How long a locked account or source stays locked. Default 15 min.
    pub lockout: Duration,
    /// Silence between fixes that reports show as a gap, not as driving. Default 5 min.
    pub gap: Duration,
    /// A stop: this long within `stop_radius_m`. Default 3 min.
    pub stop_min: Duration,
    /// Default 50 m.
    pub stop_radius_m: f64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            token_ttl: Duration::from_secs(3600),
            max_failed_logins: 5,
            max_failed_logins_per_source: 20,
            lockout: Duration::from_secs(15 * 60),
            gap: Duration::from_secs(5 * 60),
            stop_min: Duration::from_secs(3 * 60),
            stop_radius_m: 50.0,
        }
    }
}

/// What every handler shares.
pub(crate) struct AppState {
    pub(crate) store: Arc<HotStore>,
    pub(crate) ingest: IngestServer,
    pub(crate) config: ApiConfig,
    pub(crate) clock: Clock,
    pub(crate) sessions: auth::Sessions,
    pub(crate) archive: Option<ArchiveAccess>,
}

/// The archive, as the API reads it.
#[derive(Debug, Clone)]
pub struct ArchiveAccess {
    pub objects: Arc<journeyd_objects::ObjectStore>,
    pub compactor: Arc<journeyd_archiver::CompactorStats>,
}

impl AppState {
    pub(crate) fn now(&self) -> i64 {
        (self.clock)()
    }
}
