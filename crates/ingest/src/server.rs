//! The endpoint: binds, accepts connections, tracks them per device, and cuts off blocked ones.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use journeyd_store::{DeviceId, HotStore, LatencyHistogram, Writer};
use journeyd_wire::session::SessionLimits;
use journeyd_wire::{CloseCode, RefusalReason, ValidationRules};
use quinn::{Endpoint, VarInt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{IngestError, connection};

/// Default socket buffer size asked for on the server's UDP socket. Thousands of devices
/// sending a batch at once queue tens of megabytes of datagrams before the endpoint task reads
/// them, and every datagram dropped costs a QUIC loss-recovery timeout: at 10,000 devices an
/// 8 MiB buffer dropped 6 % of datagrams and halved throughput; 64 MiB dropped none
/// (BENCHMARKS.md). The buffer is memory only while datagrams wait in it.
pub const UDP_BUFFER_BYTES: usize = 64 << 20;

/// A UDP socket bound to `addr` with large send and receive buffers.
pub fn udp_socket(addr: SocketAddr, buffer_bytes: usize) -> std::io::Result<std::net::UdpSocket> {
    bind_udp(addr, buffer_bytes, false)
}

/// [`udp_socket`], with `SO_REUSEPORT` when `reuse_port`: several sockets then share one address
/// and the kernel spreads datagrams across them by a hash of the sender's address and port.
fn bind_udp(
    addr: SocketAddr,
    buffer_bytes: usize,
    reuse_port: bool,
) -> std::io::Result<std::net::UdpSocket> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    set_buffers(&socket, buffer_bytes);
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The QUIC server settings of ingest: its TLS and transport (one bidirectional stream per
/// connection, windows sized to one batch of the largest size).
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    limits: &SessionLimits,
) -> Result<quinn::ServerConfig, IngestError> {
    let crypto = crate::tls::server_crypto(certs, key)?;
    let mut server_config = quinn::ServerConfig::with_crypto(crypto);
    let mut transport = quinn::TransportConfig::default();
    let idle = Duration::from_millis(limits.idle_timeout_ms as u64);
    transport
        .max_idle_timeout(Some(
            idle.try_into()
                .map_err(|_| IngestError::Tls("idle timeout too large".into()))?,
        ))
        .max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        // One batch of the largest size fits the stream window; the windows, not the
        // connection count, bound memory, since quinn allocates only for data received.
        .stream_receive_window(VarInt::from_u32(
            limits.max_batch_body().saturating_add(64 * 1024),
        ))
        .receive_window(VarInt::from_u32(limits.max_batch_body().saturating_mul(2)))
        .send_window(256 * 1024);
    server_config.transport_config(Arc::new(transport));
    Ok(server_config)
}

/// Asks for `bytes` of receive and send buffer. The kernel caps what a process may ask for at
/// `net.core.rmem_max` / `wmem_max` (often 200 KiB to 4 MiB); a process allowed to administer the
/// network (CAP_NET_ADMIN) may go past the cap, and is made to. Best effort either way: a kernel
/// that refuses keeps what it allows, and the buffer is memory only while datagrams wait in it.
fn set_buffers(socket: &socket2::Socket, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        use rustix::net::sockopt::{
            set_socket_recv_buffer_size_force, set_socket_send_buffer_size_force,
        };
        if set_socket_recv_buffer_size_force(socket, bytes).is_err() {
            socket.set_recv_buffer_size(bytes).ok();
        }
        if set_socket_send_buffer_size_force(socket, bytes).is_err() {
            socket.set_send_buffer_size(bytes).ok();
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        socket.set_recv_buffer_size(bytes).ok();
        socket.set_send_buffer_size(bytes).ok();
    }
}

/// Logs the buffer the kernel granted; warns when it is less than asked for.
fn warn_if_capped(socket: &std::net::UdpSocket, asked: usize) {
    let socket = socket2::SockRef::from(socket);
    // Linux reports twice what it grants (the other half is its bookkeeping).
    let granted = if cfg!(target_os = "linux") {
        socket.recv_buffer_size().unwrap_or(0) / 2
    } else {
        socket.recv_buffer_size().unwrap_or(0)
    };
    if granted < asked {
        tracing::warn!(
            asked,
            granted,
            "the kernel capped the UDP receive buffer: bursts from many devices may be dropped and resent; raise net.core.rmem_max (or run with CAP_NET_ADMIN)"
        );
    } else {
        tracing::debug!(granted, "UDP receive buffer");
    }
}

/// Where "now" comes from: the system clock, or a test's.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock in microseconds since the Unix epoch.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0)
    })
}

/// Settings of the ingest endpoint (config `[ingest]`).
#[derive(Clone)]
pub struct IngestConfig {
    /// UDP address to listen on. Default `0.0.0.0:4433`.
    pub listen: SocketAddr,
    pub limits: SessionLimits,
    pub rules: ValidationRules,
    /// How long a new connection may take to send its hello. Default 10 s.
    pub hello_timeout: Duration,
    /// Positions that may wait for the writer across all connections before batches are refused
    /// with a retryable code. Default 2,000,000 (about 100 MB).
    pub max_queued_positions: u64,
    /// Most connections at once; more are refused with `Busy`. Default 50,000.
    pub max_connections: u64,
    /// QUIC endpoints sharing `listen` through `SO_REUSEPORT`, each driven by its own task, so
    /// that packet handling for many connections can spread over the cores. Default 1. A device
    /// whose address changes mid-connection (NAT rebinding) may land on another endpoint; it
    /// reconnects and resends what was not acked.
    pub endpoints: usize,
    /// Receive and send buffer asked for on each UDP socket ([`UDP_BUFFER_BYTES`]).
    pub udp_buffer_bytes: usize,
    pub clock: Clock,
}

impl std::fmt::Debug for IngestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestConfig")
            .field("listen", &self.listen)
            .field("limits", &self.limits)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 4433)),
            limits: SessionLimits::default(),
            rules: ValidationRules::default(),
            hello_timeout: Duration::from_secs(10),
            max_queued_positions: 2_000_000,
            max_connections: 50_000,
            endpoints: DEFAULT_ENDPOINTS,
            udp_buffer_bytes: UDP_BUFFER_BYTES,
            clock: system_clock(),
        }
    }
}

/// Default number of QUIC endpoints: on a two-core machine shared with the load generator, two
/// were no faster (BENCHMARKS.md); machines with cores to spare may set more.
pub const DEFAULT_ENDPOINTS: usize = 1;

/// Counters of the endpoint, read by /metrics and the bench.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub connections_accepted: AtomicU64,
    pub connections_open: AtomicU64,
    pub auth_failures: AtomicU64,
    pub blocked_refused: AtomicU64,
    pub malformed_closes: AtomicU64,
    pub records_acked: AtomicU64,
    pub records_replayed: AtomicU64,
    pub positions_stored: AtomicU64,
    pub positions_duplicate: AtomicU64,
    pub positions_flagged: AtomicU64,
    pub retry_later: AtomicU64,
    pub split_requests: AtomicU64,
    pub queued_positions: AtomicU64,
    /// When ingest last pushed a batch back for lack of room (µs since the epoch).
    pub last_pushback_us: AtomicU64,
    /// Time from a record's arrival to its ack being queued for sending.
    pub ack_latency: LatencyHistogram,
    refused: [AtomicU64; 8],
}

impl IngestStats {
    pub(crate) fn count_refusal(&self, reason: u16) {
        if let Some(c) = self.refused.get(reason as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Positions refused so far, by reason.
    pub fn refused(&self) -> Vec<(RefusalReason, u64)> {
        RefusalReason::ALL
            .iter()
            .map(|r| (*r, self.refused[*r as usize].load(Ordering::Relaxed)))
            .collect()
    }
}

pub(crate) struct Shared {
    pub(crate) store: Arc<HotStore>,
    pub(crate) writer: Writer,
    pub(crate) config: IngestConfig,
    pub(crate) stats: Arc<IngestStats>,
    /// Open connections per device, so that a block reaches every one of them.
    pub(crate) live: Mutex<HashMap<DeviceId, Vec<quinn::Connection>>>,
}

impl Shared {
    pub(crate) fn now(&self) -> i64 {
        (self.config.clock)()
    }
}

/// A running ingest endpoint.
#[derive(Clone)]
pub struct IngestServer {
    shared: Arc<Shared>,
    /// The first endpoint is bound first and names the address; the others share it.
    endpoints: Vec<Endpoint>,
}

impl std::fmt::Debug for IngestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestServer")
            .field("addr", &self.endpoints[0].local_addr().ok())
            .field("endpoints", &self.endpoints.len())
            .finish_non_exhaustive()
    }
}

impl IngestServer {
    /// Binds the endpoint and starts accepting connections on the current tokio runtime.
    pub fn start(
        config: IngestConfig,
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        store: Arc<HotStore>,
        writer: Writer,
    ) -> Result<Self, IngestError> {
        let server_config = server_config(certs, key, &config.limits)?;
        let bind_err = |source| IngestError::Bind {
            addr: config.listen,
            source,
        };
        let runtime = quinn::default_runtime()
            .ok_or_else(|| IngestError::Tls("no async runtime for quinn".into()))?;
        let count = config.endpoints.clamp(1, 64);
        let mut endpoints: Vec<Endpoint> = Vec::with_capacity(count);
        let mut addr = config.listen;
        for _ in 0..count {
            let socket = bind_udp(addr, config.udp_buffer_bytes, count > 1).map_err(bind_err)?;
            warn_if_capped(&socket, config.udp_buffer_bytes);
            // With port 0 the first socket picks the port; the others join it.
            addr = socket.local_addr().map_err(bind_err)?;
            endpoints.push(
                Endpoint::new(
                    quinn::EndpointConfig::default(),
                    Some(server_config.clone()),
                    socket,
                    runtime.clone(),
                )
                .map_err(bind_err)?,
            );
        }
        let shared = Arc::new(Shared {
            store,
            writer,
            config,
            stats: Arc::new(IngestStats::default()),
            live: Mutex::new(HashMap::new()),
        });
        for endpoint in &endpoints {
            tokio::spawn(accept_loop(endpoint.clone(), shared.clone()));
        }
        tracing::info!(%addr, endpoints = endpoints.len(), "ingest listening");
        Ok(Self { shared, endpoints })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.endpoints[0]
            .local_addr()
            .expect("a bound endpoint has an address")
    }

    pub fn stats(&self) -> &Arc<IngestStats> {
        &self.shared.stats
    }

    /// Counters of the group-commit writer.
    pub fn writer_stats(&self) -> &journeyd_store::WriterStats {
        self.shared.writer.stats()
    }

    /// Requests waiting for the writer, and its queue's capacity.
    pub fn writer_queue(&self) -> (usize, usize) {
        (self.shared.writer.queued(), self.shared.writer.capacity())
    }

    /// Whether ingest can store now: every writer shard's last write succeeded, no shard's
    /// queue is full, and no batch was pushed back for lack of room in the last second.
    pub fn is_ready(&self) -> bool {
        let w = &self.shared.writer;
        let stats = &self.shared.stats;
        let pushed_back = stats.last_pushback_us.load(Ordering::Relaxed) as i64;
        w.stats().healthy()
            && !w.any_queue_full()
            && stats.queued_positions.load(Ordering::Relaxed)
                < self.shared.config.max_queued_positions
            && self.shared.now() - pushed_back > 1_000_000
    }

    /// Blocks a device: records it in the store, then closes its open connections with
    /// `DeviceBlocked`. New connections are refused at the hello from the stored flag.
    pub fn block_device(&self, device: DeviceId) -> Result<(), IngestError> {
        self.shared.store.set_blocked(device, true)?;
        let conns = self
            .shared
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&device)
            .unwrap_or_default();
        for c in &conns {
            c.close(
                VarInt::from_u32(CloseCode::DeviceBlocked as u32),
                b"device blocked by an admin",
            );
        }
        tracing::info!(device = device.0, closed = conns.len(), "device blocked");
        Ok(())
    }

    /// Stops accepting and closes every connection with `ShuttingDown`, without waiting.
    pub fn close(&self) {
        for endpoint in &self.endpoints {
            endpoint.close(
                VarInt::from_u32(CloseCode::ShuttingDown as u32),
                b"server shutting down",
            );
        }
    }

    /// Stops accepting, closes every connection with `ShuttingDown`, and waits briefly for
    /// the close to reach the devices.
    pub async fn shutdown(&self) {
        self.close();
        // One after the other: each endpoint's driver is its own task, so they drain together.
        let idle = async {
            for endpoint in &self.endpoints {
                endpoint.wait_idle().await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), idle).await;
    }
}

async fn accept_loop(endpoint: Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        if shared.stats.connections_open.load(Ordering::Relaxed) >= shared.config.max_connections {
            incoming.refuse();
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            match incoming.await {
                Ok(conn) => connection::serve(conn, shared).await,
                Err(e) => tracing::debug!(error = %e, "handshake failed"),
            }
        });
    }
}
