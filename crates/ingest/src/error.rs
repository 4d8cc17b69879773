/// Why the ingest endpoint could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("tls: {0}")]
    Tls(String),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] journeyd_store::StoreError),
}
