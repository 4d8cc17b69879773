//! TLS material: the server certificate, generated once and kept, or the operator's own.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::IngestError;

/// Names the generated certificate is valid for.
pub const SELF_SIGNED_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

fn io(path: &Path) -> impl Fn(std::io::Error) -> IngestError + '_ {
    move |source| IngestError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Loads `cert` and `key` (PEM); when neither exists, generates a self-signed pair for
/// [`SELF_SIGNED_NAMES`] and writes both (the key readable by its owner only).
pub fn load_or_generate(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), IngestError> {
    if !cert.exists() && !key.exists() {
        let names: Vec<String> = SELF_SIGNED_NAMES.iter().map(|s| s.to_string()).collect();
        let generated = rcgen::generate_simple_self_signed(names)
            .map_err(|e| IngestError::Tls(format!("generating a certificate: {e}")))?;
        if let Some(dir) = cert.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        write_private(key, generated.signing_key.serialize_pem().as_bytes())?;
        std::fs::write(cert, generated.cert.pem()).map_err(io(cert))?;
        tracing::info!(cert = %cert.display(), "generated a self-signed certificate");
    }
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| IngestError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(IngestError::Tls(format!(
            "{}: no certificate in the file",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| IngestError::Tls(format!("{}: {e}", key.display())))?;
    Ok((certs, key))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), IngestError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// The rustls side of the QUIC server: TLS 1.3 only, ALPN `journeyd/1`, no 0-RTT.
pub fn server_crypto(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<quinn::crypto::rustls::QuicServerConfig>, IngestError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| IngestError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| IngestError::Tls(format!("certificate and key do not fit: {e}")))?;
    tls.alpn_protocols = vec![journeyd_wire::ALPN.to_vec()];
    // Early data could be replayed by anyone on the path (case E34): batches never ride in it.
    tls.max_early_data_size = 0;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| IngestError::Tls(e.to_string()))?;
    Ok(Arc::new(quic))
}
