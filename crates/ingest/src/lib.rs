//! The journeyd QUIC ingest endpoint.
//!
//! Accepts device connections (TLS 1.3, ALPN `journeyd/1`), runs each through journeyd-wire's
//! sans-IO [`ServerSession`](journeyd_wire::session::ServerSession), hands validated records to
//! the hot store's group-commit writer, and writes each ack only once the writer reports the
//! record durable. It never opens RocksDB itself and never decides what a frame means.

mod connection;
mod error;
mod server;
pub mod tls;

pub use error::IngestError;
pub use journeyd_store::{LATENCY_BOUNDS_US, LatencyHistogram};
pub use server::{
    Clock, DEFAULT_ENDPOINTS, IngestConfig, IngestServer, IngestStats, UDP_BUFFER_BYTES,
    server_config, system_clock, udp_socket,
};
