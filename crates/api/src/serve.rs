//! TLS listener: rustls in front of the axum router, one task per connection. A client that
//! speaks plain HTTP fails the TLS handshake and is closed; nothing is served in the clear.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use journeyd_ingest::{Clock, IngestServer};
use journeyd_store::HotStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::{ApiConfig, ApiError, AppState, auth, routes};

/// A running query API.
#[derive(Debug, Clone)]
pub struct ApiServer {
    addr: SocketAddr,
}

impl ApiServer {
    /// Binds and starts serving on the current tokio runtime.
    pub fn start(
        config: ApiConfig,
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        store: Arc<HotStore>,
        ingest: IngestServer,
        archive: crate::ArchiveAccess,
        clock: Clock,
    ) -> Result<Self, ApiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| ApiError::Internal(format!("certificate and key do not fit: {e}")))?;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let bind_err =
            |e: std::io::Error| ApiError::Internal(format!("cannot bind {}: {e}", config.listen));
        let std_listener = std::net::TcpListener::bind(config.listen).map_err(bind_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let listener = TcpListener::from_std(std_listener).map_err(bind_err)?;
        let addr = listener
            .local_addr()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let state = Arc::new(AppState {
            store,
            ingest,
            config,
            clock,
            sessions: auth::Sessions::default(),
            archive: Some(archive),
        });
        let app = routes::router(state);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(tcp),
                    )
                    .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "tls handshake failed (plain http is not served)");
                            return;
                        }
                        Err(_) => return,
                    };
                    let service = TowerToHyperService::new(
                        app.layer(axum::Extension(crate::audit::Peer(peer))),
                    );
                    if let Err(e) = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await
                    {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        });
        tracing::info!(%addr, "query api listening (https)");
        Ok(Self { addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}
