//! Connecting, sending, and obeying acks.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use journeyd_wire::frame::{
    self, ArchivedEnrolled, ArchivedWelcome, Batch, Enrol, FrameHeader, FrameKind, HEADER_LEN,
    Hello, JourneyMark,
};
use journeyd_wire::session::decode_ack;
use journeyd_wire::{AckStatus, CloseCode, PROTOCOL_VERSION, Position, RefusalReason};
use quinn::{Connection, ConnectionError, Endpoint, RecvStream, SendStream};
use rustls::pki_types::CertificateDer;
use tokio::sync::Mutex;

use crate::{Credential, DeviceError, Identity, Outbox};

/// How a device reaches its server.
#[derive(Clone)]
pub struct DeviceConfig {
    pub server: SocketAddr,
    /// Name in the server certificate. Default `localhost`.
    pub server_name: String,
    /// Certificates to trust (the server's own, or its CA).
    pub trust: Vec<CertificateDer<'static>>,
    /// Longest idle time this device allows; the connection uses the smaller of this and the
    /// server's. Default 60 s.
    pub idle_timeout: Duration,
    /// Records sent and not yet acked, at most (also capped by the server). Default 32.
    pub max_in_flight: u32,
    /// Positions per batch, at most (also capped by the server). Default 1000.
    pub max_batch_positions: u32,
    /// Split batches to the server's limit before sending. Default true; tests switch it off
    /// to see the server refuse an oversized batch.
    pub split_before_sending: bool,
    /// How long [`Device::flush`] keeps trying to reach the server. Default 60 s.
    pub flush_timeout: Duration,
    /// First and longest wait between connection attempts. Default 100 ms and 10 s.
    pub backoff: (Duration, Duration),
    /// Records older than this are dropped unsent. Default 7 days.
    pub expire_after: Duration,
    /// A shared client endpoint; by default each device binds its own UDP socket.
    pub endpoint: Option<Endpoint>,
    pub clock: Arc<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for DeviceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceConfig")
            .field("server", &self.server)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl DeviceConfig {
    pub fn new(server: SocketAddr, trust: Vec<CertificateDer<'static>>) -> Self {
        Self {
            server,
            server_name: "localhost".into(),
            trust,
            idle_timeout: Duration::from_secs(60),
            max_in_flight: 32,
            max_batch_positions: 1000,
            split_before_sending: true,
            flush_timeout: Duration::from_secs(60),
            backoff: (Duration::from_millis(100), Duration::from_secs(10)),
            expire_after: Duration::from_secs(7 * 86_400),
            endpoint: None,
            clock: Arc::new(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_micros() as i64)
                    .unwrap_or(0)
            }),
        }
    }
}

/// What a flush achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Records the server acked as stored.
    pub acked_records: u64,
    /// Positions newly stored.
    pub stored: u64,
    /// Positions the server already held.
    pub duplicates: u64,
    /// Positions stored with a quality flag.
    pub flagged: u64,
    /// Positions refused, by reason.
    pub refused: BTreeMap<RefusalReason, u64>,
    /// Records the server rejected for good.
    pub rejected_records: u64,
    /// Records the server asked to resend later.
    pub retries: u64,
    /// Batches split on the server's request.
    pub splits: u64,
    /// Connections made.
    pub connects: u64,
    /// Records dropped unsent because they were too old.
    pub expired: u64,
}

impl FlushReport {
    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }

    pub fn add(&mut self, other: &FlushReport) {
        self.acked_records += other.acked_records;
        self.stored += other.stored;
        self.duplicates += other.duplicates;
        self.flagged += other.flagged;
        for (r, n) in &other.refused {
            *self.refused.entry(*r).or_default() += n;
        }
        self.rejected_records += other.rejected_records;
        self.retries += other.retries;
        self.splits += other.splits;
        self.connects += other.connects;
        self.expired += other.expired;
    }
}

struct Live {
    conn: Connection,
    send: Arc<Mutex<SendStream>>,
    recv: RecvStream,
    max_in_flight: u32,
    pinger: tokio::task::JoinHandle<()>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.pinger.abort();
    }
}

/// A device: its identity, its outbox, and its connection when it has one.
pub struct Device {
    config: DeviceConfig,
    outbox: Outbox,
    identity: Identity,
    endpoint: Endpoint,
    live: Option<Live>,
    server_max_batch: u32,
    stopped: Option<(CloseCode, String)>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("identity", &self.identity)
            .field("pending", &self.outbox.len())
            .finish_non_exhaustive()
    }
}

/// A client endpoint on a UDP socket with large buffers, so that a burst of acks is not dropped
/// (the kernel caps the size at `net.core.rmem_max`).
pub fn client_endpoint(bind: SocketAddr) -> std::io::Result<Endpoint> {
    let domain = if bind.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    socket.set_recv_buffer_size(4 << 20).ok();
    socket.set_send_buffer_size(4 << 20).ok();
    socket.bind(&bind.into())?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for quinn"))?;
    Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket.into(),
        runtime,
    )
}

/// The rustls side of a device connection: TLS 1.3, ALPN `journeyd/1`, no early data.
pub fn client_crypto(
    trust: &[CertificateDer<'static>],
) -> Result<quinn::ClientConfig, DeviceError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in trust {
        roots
            .add(c.clone())
            .map_err(|e| DeviceError::Tls(format!("cannot trust certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| DeviceError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![journeyd_wire::ALPN.to_vec()];
    tls.enable_early_data = false;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| DeviceError::Tls(e.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

fn io(e: std::io::Error) -> DeviceError {
    DeviceError::Outbox {
        path: "udp socket".into(),
        source: e,
    }
}

impl Device {
    /// A device with this outbox. A persistent outbox that already holds a credential uses it,
    /// whatever `identity` says.
    pub fn open(
        config: DeviceConfig,
        outbox: Outbox,
        identity: Identity,
    ) -> Result<Self, DeviceError> {
        let identity = match outbox.credential()? {
            Some(c) => Identity::Credential(c),
            None => identity,
        };
        let endpoint = match &config.endpoint {
            Some(e) => e.clone(),
            None => {
                let bind: SocketAddr = if config.server.ip().is_loopback() {
                    if config.server.is_ipv4() {
                        "127.0.0.1:0"
                    } else {
                        "[::1]:0"
                    }
                } else if config.server.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                }
                .parse()
                .expect("literal socket address");
                client_endpoint(bind).map_err(io)?
            }
        };
        Ok(Self {
            config,
            outbox,
            identity,
            endpoint,
            live: None,
            server_max_batch: u32::MAX,
            stopped: None,
        })
    }

    /// The credential, once the device has one.
    pub fn credential(&self) -> Option<&Credential> {
        match &self.identity {
            Identity::Credential(c) => Some(c),
            Identity::Enrol { .. } => None,
        }
    }

    /// Sequence numbers not yet acked, lowest first.
    pub fn pending_seqs(&self) -> Vec<u64> {
        self.outbox.pending_seqs()
    }

    /// Records not yet acked.
    pub fn pending(&self) -> usize {
        self.outbox.len()
    }

    fn now(&self) -> i64 {
        (self.config.clock)()
    }

    /// Queues a journey start.
    pub fn start_journey(&mut self, journey: u64, at_us: i64) -> Result<u64, DeviceError> {
        let mark = JourneyMark { journey, at_us };
        self.outbox.push(self.now(), |seq| {
            frame::encode_frame(FrameKind::JourneyStart, seq, &mark)
        })
    }

    /// Queues a journey end.
    pub fn end_journey(&mut self, journey: u64, at_us: i64) -> Result<u64, DeviceError> {
        let mark = JourneyMark { journey, at_us };
        self.outbox.push(self.now(), |seq| {
            frame::encode_frame(FrameKind::JourneyEnd, seq, &mark)
        })
    }

    fn batch_limit(&self) -> usize {
        self.config
            .max_batch_positions
            .min(self.server_max_batch)
            .max(1) as usize
    }

    /// Queues positions of a journey, in batches of at most the batch limit.
    pub fn record(
        &mut self,
        journey: u64,
        positions: &[Position],
    ) -> Result<Vec<u64>, DeviceError> {
        let limit = if self.config.split_before_sending {
            self.batch_limit()
        } else {
            usize::MAX
        };
        let now = self.now();
        let mut seqs = Vec::new();
        for part in positions.chunks(limit.max(1)) {
            let batch = Batch {
                journey,
                positions: part.to_vec(),
            };
            seqs.push(self.outbox.push(now, |seq| {
                frame::encode_frame(FrameKind::Batch, seq, &batch)
            })?);
        }
        Ok(seqs)
    }

    /// Rebinds the device's UDP socket to a new local port, as a phone does when it moves from
    /// Wi-Fi to mobile data. QUIC migrates the connection.
    pub fn rebind(&self) -> Result<(), DeviceError> {
        let addr = self.endpoint.local_addr().map_err(io)?;
        let socket = std::net::UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).map_err(io)?;
        self.endpoint.rebind(socket).map_err(io)
    }

    /// The local address of the device's socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    /// Sends everything in the outbox and waits for every ack, reconnecting as needed.
    pub async fn flush(&mut self) -> Result<FlushReport, DeviceError> {
        let mut report = FlushReport::default();
        if let Some((code, reason)) = &self.stopped {
            return Err(DeviceError::Refused {
                code: *code,
                reason: reason.clone(),
            });
        }
        let cutoff = self.now() - self.config.expire_after.as_micros() as i64;
        report.expired += self.outbox.expire(cutoff)? as u64;

        let deadline = tokio::time::Instant::now() + self.config.flush_timeout;
        let mut backoff = self.config.backoff.0;
        let mut attempts = 0;
        let mut last_error;
        while !self.outbox.is_empty() {
            if self
                .live
                .as_ref()
                .is_some_and(|l| l.conn.close_reason().is_some())
            {
                self.live = None;
            }
            if self.live.is_none() {
                attempts += 1;
                let connect = tokio::time::timeout_at(deadline, self.connect(&mut report)).await;
                let connect = connect.unwrap_or_else(|_| {
                    Err(DeviceError::Protocol(
                        "no handshake before the flush deadline".into(),
                    ))
                });
                match connect {
                    Ok(live) => {
                        self.live = Some(live);
                        backoff = self.config.backoff.0;
                    }
                    Err(e @ DeviceError::Refused { .. }) => return Err(e),
                    Err(e) => {
                        last_error = e.to_string();
                        tracing::debug!(error = %e, "connect failed; backing off");
                        if tokio::time::Instant::now() + backoff > deadline {
                            return Err(DeviceError::Unreachable {
                                attempts,
                                last_error,
                            });
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(self.config.backoff.1);
                        continue;
                    }
                }
            }
            let exchange = tokio::time::timeout_at(deadline, self.exchange(&mut report)).await;
            let Ok(exchange) = exchange else {
                self.live = None;
                return Err(DeviceError::Unreachable {
                    attempts,
                    last_error: "no acks before the flush deadline".into(),
                });
            };
            match exchange {
                Ok(()) => {}
                Err(e @ DeviceError::Refused { .. }) => return Err(e),
                Err(e) => {
                    last_error = e.to_string();
                    tracing::debug!(error = %e, "connection lost; will resend what is unacked");
                    self.live = None;
                    if tokio::time::Instant::now() + backoff >= deadline {
                        return Err(DeviceError::Unreachable {
                            attempts,
                            last_error,
                        });
                    }
                    // A server that keeps closing the connection must not be hammered.
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.config.backoff.1);
                }
            }
        }
        Ok(report)
    }

    /// Closes the connection politely.
    pub async fn close(&mut self) {
        if let Some(live) = self.live.take() {
            live.conn
                .close(quinn::VarInt::from_u32(CloseCode::Normal as u32), b"done");
        }
    }

    async fn connect(&mut self, report: &mut FlushReport) -> Result<Live, DeviceError> {
        let mut client = client_crypto(&self.config.trust)?;
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(self.config.idle_timeout.try_into().ok())
            .max_concurrent_bidi_streams(0u32.into())
            .max_concurrent_uni_streams(0u32.into());
        client.transport_config(Arc::new(transport));
        let connecting = self
            .endpoint
            .connect_with(client, self.config.server, &self.config.server_name)
            .map_err(|e| DeviceError::Protocol(format!("cannot connect: {e}")))?;
        let conn = connecting.await.map_err(|e| self.connection_error(e))?;
        report.connects += 1;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| self.connection_error(e))?;

        let hello = match &self.identity {
            Identity::Credential(c) => frame::encode_frame(
                FrameKind::Hello,
                0,
                &Hello {
                    device_id: c.device_id,
                    secret: c.secret,
                    protocol_version: PROTOCOL_VERSION,
                    reserved: 0,
                },
            ),
            Identity::Enrol { code, name } => frame::encode_frame(
                FrameKind::Enrol,
                0,
                &Enrol {
                    enrolment_code: *code,
                    protocol_version: PROTOCOL_VERSION,
                    reserved: 0,
                    device_name: name.clone().into_bytes(),
                },
            ),
        };
        send.write_all(&hello)
            .await
            .map_err(|e| DeviceError::Protocol(format!("sending hello: {e}")))?;

        let (mut header, mut body) = self.read_frame(&conn, &mut recv).await?;
        if header.kind == FrameKind::Enrolled {
            let enrolled = frame::decode_body::<ArchivedEnrolled>(header.kind, &body)
                .map_err(|e| DeviceError::Protocol(e.to_string()))?;
            let credential = Credential {
                device_id: enrolled.device_id.to_native(),
                secret: enrolled.secret,
            };
            self.outbox.save_credential(&credential)?;
            tracing::info!(device = credential.device_id, "enrolled");
            self.identity = Identity::Credential(credential);
            (header, body) = self.read_frame(&conn, &mut recv).await?;
        }
        if header.kind != FrameKind::Welcome {
            return Err(DeviceError::Protocol(format!(
                "expected Welcome, got {:?}",
                header.kind
            )));
        }
        let welcome = frame::decode_body::<ArchivedWelcome>(header.kind, &body)
            .map_err(|e| DeviceError::Protocol(e.to_string()))?;
        self.server_max_batch = welcome.max_batch_positions.to_native().max(1);
        let idle_ms = (welcome.idle_timeout_ms.to_native() as u128)
            .min(self.config.idle_timeout.as_millis())
            .max(300);
        let max_in_flight = self
            .config
            .max_in_flight
            .min(welcome.max_in_flight.to_native())
            .max(1);

        let send = Arc::new(Mutex::new(send));
        let pinger = tokio::spawn(ping(
            send.clone(),
            Duration::from_millis((idle_ms / 3) as u64),
        ));
        Ok(Live {
            conn,
            send,
            recv,
            max_in_flight,
            pinger,
        })
    }

    fn connection_error(&mut self, e: ConnectionError) -> DeviceError {
        if let ConnectionError::ApplicationClosed(close) = &e
            && let Ok(code) = u32::try_from(close.error_code.into_inner())
            && let Some(code) = CloseCode::from_u32(code)
            && !code.is_retryable()
        {
            let reason = String::from_utf8_lossy(&close.reason).into_owned();
            tracing::warn!(?code, %reason, "server refused this device; not retrying");
            self.stopped = Some((code, reason.clone()));
            self.live = None;
            return DeviceError::Refused { code, reason };
        }
        DeviceError::Protocol(format!("connection: {e}"))
    }

    async fn read_frame(
        &mut self,
        conn: &Connection,
        recv: &mut RecvStream,
    ) -> Result<(FrameHeader, rkyv::util::AlignedVec), DeviceError> {
        let mut h = [0u8; HEADER_LEN];
        if let Err(e) = recv.read_exact(&mut h).await {
            return Err(match conn.close_reason() {
                Some(reason) => self.connection_error(reason),
                None => DeviceError::Protocol(format!("reading: {e}")),
            });
        }
        let header = FrameHeader::decode(&h).map_err(|e| DeviceError::Protocol(e.to_string()))?;
        if header.body_len > 16 << 20 {
            return Err(DeviceError::Protocol(format!(
                "server frame of {} bytes",
                header.body_len
            )));
        }
        let mut body = rkyv::util::AlignedVec::<16>::new();
        body.resize(header.body_len as usize, 0);
        if let Err(e) = recv.read_exact(&mut body[..]).await {
            return Err(match conn.close_reason() {
                Some(reason) => self.connection_error(reason),
                None => DeviceError::Protocol(format!("reading: {e}")),
            });
        }
        Ok((header, body))
    }

    /// Sends every outbox record on the live connection and handles acks until none is left.
    async fn exchange(&mut self, report: &mut FlushReport) -> Result<(), DeviceError> {
        let mut live = self
            .live
            .take()
            .ok_or_else(|| DeviceError::Protocol("not connected".into()))?;
        let result = self.exchange_on(&mut live, report).await;
        if result.is_ok() {
            self.live = Some(live);
        }
        result
    }

    async fn exchange_on(
        &mut self,
        live: &mut Live,
        report: &mut FlushReport,
    ) -> Result<(), DeviceError> {
        let mut queue: VecDeque<u64> = self.outbox.seqs().into();
        let mut in_flight = 0u32;
        while !queue.is_empty() || in_flight > 0 {
            while in_flight < live.max_in_flight
                && let Some(seq) = queue.pop_front()
            {
                let Some(p) = self.outbox.get(seq) else {
                    continue;
                };
                // Written straight from the outbox: no copy of the frame per send.
                let written = live.send.lock().await.write_all(&p.frame).await;
                if let Err(e) = written {
                    return Err(match live.conn.close_reason() {
                        Some(reason) => self.connection_error(reason),
                        None => DeviceError::Protocol(format!("sending: {e}")),
                    });
                }
                in_flight += 1;
            }
            let conn = live.conn.clone();
            let (header, body) = self.read_frame(&conn, &mut live.recv).await?;
            if header.kind != FrameKind::Ack {
                return Err(DeviceError::Protocol(format!(
                    "expected Ack, got {:?}",
                    header.kind
                )));
            }
            let ack = decode_ack(&body).map_err(|e| DeviceError::Protocol(e.to_string()))?;
            in_flight = in_flight.saturating_sub(1);
            let seq = header.seq;
            match AckStatus::from_u16(ack.status) {
                Some(AckStatus::Stored) => {
                    self.outbox.remove(seq)?;
                    report.acked_records += 1;
                    report.stored += ack.stored as u64;
                    report.duplicates += ack.duplicates as u64;
                    report.flagged += ack.flagged as u64;
                    for r in &ack.refusals {
                        if let Some(reason) = RefusalReason::from_u16(r.reason) {
                            *report.refused.entry(reason).or_default() += 1;
                        }
                    }
                }
                Some(AckStatus::RetryLater) => {
                    report.retries += 1;
                    tokio::time::sleep(Duration::from_millis(
                        ack.retry_after_ms.clamp(10, 60_000) as u64
                    ))
                    .await;
                    queue.push_back(seq);
                }
                Some(AckStatus::SplitAndResend) => {
                    report.splits += 1;
                    self.server_max_batch = ack.max_batch_positions.max(1);
                    for new in self.split(seq)? {
                        queue.push_back(new);
                    }
                }
                Some(AckStatus::Rejected) => {
                    tracing::debug!(
                        device = self.credential().map(|c| c.device_id),
                        seq,
                        "record rejected for good (an impossible journey start or end time); dropping it"
                    );
                    self.outbox.remove(seq)?;
                    report.rejected_records += 1;
                }
                None => {
                    // A status from a newer server: keep the record and try again later rather
                    // than lose it.
                    tracing::warn!(seq, status = ack.status, "unknown ack status; will resend");
                    report.retries += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    queue.push_back(seq);
                }
            }
        }
        Ok(())
    }

    /// Replaces an oversized batch by batches within the server's limit, under new sequence
    /// numbers; the old one is dropped only once its parts are in the outbox.
    fn split(&mut self, seq: u64) -> Result<Vec<u64>, DeviceError> {
        let Some(p) = self.outbox.get(seq) else {
            return Ok(Vec::new());
        };
        let body = frame::aligned(&p.frame[HEADER_LEN..]);
        let batch = frame::decode_body::<frame::ArchivedBatch>(FrameKind::Batch, &body)
            .map_err(|e| DeviceError::Protocol(e.to_string()))?;
        let journey = batch.journey.to_native();
        let positions: Vec<Position> = batch.positions.iter().map(|p| p.to_native()).collect();
        let limit = self.batch_limit();
        let now = self.now();
        let mut seqs = Vec::new();
        for part in positions.chunks(limit) {
            let b = Batch {
                journey,
                positions: part.to_vec(),
            };
            seqs.push(
                self.outbox
                    .push(now, |s| frame::encode_frame(FrameKind::Batch, s, &b))?,
            );
        }
        self.outbox.remove(seq)?;
        tracing::info!(seq, parts = seqs.len(), limit, "split an oversized batch");
        Ok(seqs)
    }
}

/// Keeps a quiet connection alive with pings at a third of the negotiated idle timeout.
async fn ping(send: Arc<Mutex<SendStream>>, every: Duration) {
    let frame = frame::encode_empty(FrameKind::Ping, 0);
    loop {
        tokio::time::sleep(every).await;
        if send.lock().await.write_all(&frame).await.is_err() {
            return;
        }
    }
}
