//! The memory floor of a connection: a bare quinn server with journeyd's TLS and transport
//! settings that accepts a connection, answers one message on its one stream and holds it, run
//! as its own process so that its resident memory growth per connection is what quinn and rustls
//! alone cost. journeyd's memory per idle device is read beside it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::current_rss_kib;

/// What the floor server writes once it listens.
#[derive(Serialize, Deserialize)]
struct FloorReady {
    pid: u32,
    quic: SocketAddr,
    cert: PathBuf,
}

/// Runs the bare server in `dir` until killed (`journeyd bench-quic-floor-server`).
pub async fn serve(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let cert = dir.join("cert.pem");
    let (certs, key) = journeyd_ingest::tls::load_or_generate(&cert, &dir.join("key.pem"))?;
    let config = journeyd_ingest::server_config(
        certs,
        key,
        &journeyd_wire::session::SessionLimits::default(),
    )?;
    let socket = journeyd_ingest::udp_socket(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        journeyd_ingest::UDP_BUFFER_BYTES,
    )?;
    let runtime = quinn::default_runtime().context("no async runtime for quinn")?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        runtime,
    )?;
    let ready = FloorReady {
        pid: std::process::id(),
        quic: endpoint.local_addr()?,
        cert,
    };
    let tmp = dir.join("ready.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&ready)?)?;
    std::fs::rename(&tmp, dir.join("ready.json"))?;
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            let Ok((mut send, mut recv)) = conn.accept_bi().await else {
                return;
            };
            let mut hello = [0u8; 256];
            if recv.read(&mut hello).await.is_ok() && send.write_all(b"ok").await.is_ok() {
                conn.closed().await;
            }
        });
    }
    Ok(())
}

/// Connects `connections` clients to a fresh floor server, each sending one hello-sized message
/// on one stream and reading the answer, and returns the server's resident memory growth per
/// connection, KiB.
pub async fn kib_per_connection(
    connections: usize,
    client_endpoints: usize,
) -> anyhow::Result<f64> {
    let exe = std::env::current_exe()?;
    let temp = tempfile::Builder::new()
        .prefix("journeyd-quic-floor-")
        .tempdir()?;
    let dir = temp.path().join("server");
    let child = std::process::Command::new(&exe)
        .args(["--log", "warn", "bench-quic-floor-server"])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let mut child = KillOnDrop(child);
    let started = Instant::now();
    let ready: FloorReady = loop {
        if let Ok(text) = std::fs::read(dir.join("ready.json"))
            && let Ok(ready) = serde_json::from_slice::<FloorReady>(&text)
        {
            break ready;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the QUIC floor server did not get ready in 30 s"
        );
        if let Some(status) = child.0.try_wait()? {
            anyhow::bail!("the QUIC floor server ended: {status}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let trust = super::load_certs(&ready.cert)?;
    let mut client = journeyd_device::client_crypto(&trust)?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(0u32.into())
        .max_concurrent_uni_streams(0u32.into());
    client.transport_config(Arc::new(transport));
    let endpoints: Vec<quinn::Endpoint> = (0..client_endpoints.max(1))
        .map(|_| journeyd_device::client_endpoint(SocketAddr::from(([127, 0, 0, 1], 0))))
        .collect::<Result<_, _>>()?;

    let before = current_rss_kib(ready.pid);
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let endpoint = endpoints[i % endpoints.len()].clone();
            let client = client.clone();
            tokio::spawn(async move {
                let conn = endpoint
                    .connect_with(client, ready.quic, "localhost")?
                    .await?;
                let (mut send, mut recv) = conn.open_bi().await?;
                // About the size of a device's hello.
                send.write_all(&[0u8; 64]).await?;
                let mut answer = [0u8; 2];
                recv.read_exact(&mut answer).await?;
                anyhow::Ok((conn, send, recv))
            })
        })
        .collect();
    let mut held = Vec::with_capacity(connections);
    for t in tasks {
        held.push(t.await??);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = current_rss_kib(ready.pid);
    for (conn, _, _) in &held {
        conn.close(0u32.into(), b"done");
    }
    Ok(after.saturating_sub(before) as f64 / connections.max(1) as f64)
}

/// The floor server, killed when the measurement ends (its folder goes with the `TempDir`).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
