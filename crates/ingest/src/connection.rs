//! One device connection: read frames, ask the session what they mean, store, ack.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use journeyd_store::{
    AuthFailure, BatchSeq, DeviceId, DeviceRecord, StoreError, WriteOutcome, WriteRequest,
};
use journeyd_wire::CloseCode;
use journeyd_wire::frame::{self, Enrolled, FrameHeader, FrameKind, HEADER_LEN};
use journeyd_wire::session::{self, Close, HeaderVerdict, Record, ServerSession, SessionEvent};
use quinn::{Connection, RecvStream, SendStream, VarInt};
use rkyv::util::AlignedVec;
use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;

use crate::server::Shared;

/// How long a device waits before resending after a retryable refusal.
const RETRY_AFTER_MS: u32 = 250;

pub(crate) async fn serve(conn: Connection, shared: Arc<Shared>) {
    let stats = shared.stats.clone();
    stats.connections_accepted.fetch_add(1, Ordering::Relaxed);
    stats.connections_open.fetch_add(1, Ordering::Relaxed);
    let span = tracing::debug_span!("connection", remote = %conn.remote_address(), device = tracing::field::Empty);
    let device = run(&conn, &shared).instrument(span).await;
    if let Some(device) = device {
        let mut live = shared.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = live.get_mut(&device) {
            list.retain(|c| c.stable_id() != conn.stable_id());
            if list.is_empty() {
                live.remove(&device);
            }
        }
    }
    stats.connections_open.fetch_sub(1, Ordering::Relaxed);
}

fn close_with(conn: &Connection, shared: &Shared, code: CloseCode, reason: impl Into<String>) {
    close(
        conn,
        shared,
        &Close {
            code,
            reason: reason.into(),
        },
    );
}

fn close(conn: &Connection, shared: &Shared, c: &Close) {
    if matches!(
        c.code,
        CloseCode::MalformedFrame | CloseCode::ProtocolViolation
    ) {
        shared
            .stats
            .malformed_closes
            .fetch_add(1, Ordering::Relaxed);
    }
    tracing::debug!(code = ?c.code, reason = %c.reason, "closing connection");
    conn.close(VarInt::from_u32(c.code as u32), c.reason.as_bytes());
}

/// Serves the connection until it ends; returns the device it authenticated as, if any.
async fn run(conn: &Connection, shared: &Arc<Shared>) -> Option<DeviceId> {
    let (send, mut recv) =
        match tokio::time::timeout(shared.config.hello_timeout, conn.accept_bi()).await {
            Ok(Ok(streams)) => streams,
            Ok(Err(_)) => return None,
            Err(_) => {
                close_with(
                    conn,
                    shared,
                    CloseCode::HelloTimeout,
                    "no stream opened in time",
                );
                return None;
            }
        };
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(send_acks(send, ack_rx));

    let mut session = ServerSession::new(shared.config.limits, shared.config.rules);
    let in_flight = Arc::new(Semaphore::new(shared.config.limits.max_in_flight as usize));
    let mut device: Option<DeviceRecord> = None;
    let mut journeys_only = false;
    let mut header_buf = [0u8; HEADER_LEN];
    let mut body = AlignedVec::<16>::new();

    // The whole hello (header and body) must arrive within the hello timeout.
    let hello_deadline = tokio::time::Instant::now() + shared.config.hello_timeout;
    loop {
        let deadline = device.is_none().then_some(hello_deadline);
        let read = match within(deadline, recv.read_exact(&mut header_buf)).await {
            Some(r) => r,
            None => {
                close_with(conn, shared, CloseCode::HelloTimeout, "no hello in time");
                break;
            }
        };
        if read.is_err() {
            break;
        }
        let header = match FrameHeader::decode(&header_buf) {
            Ok(h) => h,
            Err(e) => {
                close_with(conn, shared, CloseCode::MalformedFrame, e.to_string());
                break;
            }
        };
        match session.on_header(&header) {
            HeaderVerdict::ReadBody => {}
            HeaderVerdict::SkipAndReply(reply) => {
                if skip(&mut recv, header.body_len as u64).await.is_err() {
                    break;
                }
                shared.stats.split_requests.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    seq = header.seq,
                    body_len = header.body_len,
                    "batch too large; asked to split"
                );
                let _ = ack_tx.send(reply);
                continue;
            }
            HeaderVerdict::Close(c) => {
                close(conn, shared, &c);
                break;
            }
        }
        body.clear();
        body.resize(header.body_len as usize, 0);
        match within(deadline, recv.read_exact(&mut body[..])).await {
            Some(Ok(())) => {}
            Some(Err(_)) => break,
            None => {
                close_with(conn, shared, CloseCode::HelloTimeout, "no hello in time");
                break;
            }
        }
        let now = shared.now();
        let event = match session.on_body(&header, &body, now) {
            Ok(ev) => ev,
            Err(c) => {
                close(conn, shared, &c);
                break;
            }
        };
        match event {
            SessionEvent::Nothing => {}
            SessionEvent::Reply(frame) => {
                let _ = ack_tx.send(frame);
            }
            SessionEvent::Authenticate { device_id, secret } => {
                match authenticate(conn, shared, device_id, &secret) {
                    Ok(record) => {
                        let _ = ack_tx.send(session.authenticated(record.id.0, now));
                        journeys_only = open(conn, shared, &record);
                        device = Some(record);
                    }
                    Err(c) => {
                        close(conn, shared, &c);
                        break;
                    }
                }
            }
            SessionEvent::Enrol { code, device_name } => {
                match enrol(shared, &code, &device_name, now) {
                    Ok((record, secret)) => {
                        let enrolled = Enrolled {
                            device_id: record.id.0,
                            secret,
                        };
                        let _ = ack_tx.send(frame::encode_frame(FrameKind::Enrolled, 0, &enrolled));
                        let _ = ack_tx.send(session.authenticated(record.id.0, now));
                        journeys_only = open(conn, shared, &record);
                        device = Some(record);
                    }
                    Err(c) => {
                        close(conn, shared, &c);
                        break;
                    }
                }
            }
            SessionEvent::Store { seq, record } => {
                let Some(dev) = &device else {
                    close_with(
                        conn,
                        shared,
                        CloseCode::ProtocolViolation,
                        "record before hello",
                    );
                    break;
                };
                // A company that tracks only during journeys takes no positions outside one
                // (journey 0): the device is told so and drops them (read at connection time).
                if journeys_only && matches!(&record, Record::Batch { journey: 0, .. }) {
                    let _ = ack_tx.send(session::ack_rejected(seq));
                    continue;
                }
                // Waiting here for a free slot stops reading the stream, so QUIC flow control
                // pushes back on the device.
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    break;
                };
                submit(shared, dev, seq, record, now, ack_tx.clone(), permit);
            }
        }
    }
    device.map(|d| d.id)
}

/// Registers an authenticated connection so a block reaches it. Returns whether the device's
/// company tracks only during journeys (its policy, read once per connection).
fn open(conn: &Connection, shared: &Shared, record: &DeviceRecord) -> bool {
    tracing::Span::current().record("device", record.id.0);
    tracing::debug!(tenant = record.tenant.0, "device authenticated");
    shared
        .live
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(record.id)
        .or_default()
        .push(conn.clone());
    match shared.store.tenant(record.tenant) {
        Ok(Some(t)) => t.policy.tracking == "journeys",
        _ => true,
    }
}

/// Checks a hello's credential; a refusal is counted, audited for a known device (case G43) and
/// returned as the close to send.
fn authenticate(
    conn: &Connection,
    shared: &Shared,
    device_id: u64,
    secret: &[u8; 32],
) -> Result<DeviceRecord, Close> {
    let failure = match shared.store.authenticate(DeviceId(device_id), secret) {
        Ok(Ok(record)) => return Ok(record),
        Ok(Err(failure)) => failure,
        Err(e) => {
            return Err(Close {
                code: CloseCode::Busy,
                reason: format!("store unavailable: {e}"),
            });
        }
    };
    let (code, reason) = match failure {
        AuthFailure::Blocked => {
            shared.stats.blocked_refused.fetch_add(1, Ordering::Relaxed);
            (CloseCode::DeviceBlocked, "device blocked by an admin")
        }
        AuthFailure::UnknownOrWrongSecret => {
            shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
            (CloseCode::BadCredential, "unknown device or wrong secret")
        }
    };
    tracing::info!(device = device_id, ?code, "device refused");
    // Attempts of a known device are audited in its company's log (case G43).
    if let Ok(Some(d)) = shared.store.device(DeviceId(device_id)) {
        let entry = journeyd_store::AuditEntry {
            at_us: shared.now(),
            tenant: d.tenant,
            actor: format!("device:{device_id}"),
            action: "device.connect".into(),
            target: format!("device/{device_id}"),
            result: if code == CloseCode::DeviceBlocked {
                "blocked".into()
            } else {
                "bad_credential".into()
            },
            source: conn.remote_address().ip().to_string(),
        };
        if let Err(e) = shared.store.append_audit(&entry) {
            tracing::error!(error = %e, "cannot append to the audit log");
        }
    }
    Err(Close {
        code,
        reason: reason.into(),
    })
}

/// Enrols a new device with its company's enrolment code.
fn enrol(
    shared: &Shared,
    code: &[u8; 32],
    name: &str,
    now: i64,
) -> Result<(DeviceRecord, [u8; 32]), Close> {
    let busy = |e: StoreError| Close {
        code: CloseCode::Busy,
        reason: format!("store unavailable: {e}"),
    };
    let Some(tenant) = shared.store.tenant_by_enrolment_code(code).map_err(busy)? else {
        shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
        return Err(Close {
            code: CloseCode::BadCredential,
            reason: "unknown enrolment code".into(),
        });
    };
    let (record, secret) = shared
        .store
        .add_device(tenant.id, name, now)
        .map_err(busy)?;
    tracing::info!(
        device = record.id.0,
        tenant = tenant.id.0,
        name,
        "device enrolled"
    );
    Ok((record, secret))
}

/// Hands a record to the writer; its ack goes out when the writer answers.
fn submit(
    shared: &Arc<Shared>,
    dev: &DeviceRecord,
    seq: u64,
    record: Record,
    now: i64,
    acks: mpsc::UnboundedSender<Vec<u8>>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let stats = shared.stats.clone();
    let (kept, refusals) = match &record {
        Record::Batch { validated, .. } => {
            (validated.kept.len() as u64, validated.refusals.clone())
        }
        _ => (0, Vec::new()),
    };
    if stats.queued_positions.load(Ordering::Relaxed) + kept > shared.config.max_queued_positions {
        stats.retry_later.fetch_add(1, Ordering::Relaxed);
        stats
            .last_pushback_us
            .store(now.max(0) as u64, Ordering::Relaxed);
        tracing::debug!(
            seq,
            queued = stats.queued_positions.load(Ordering::Relaxed),
            "memory budget full; batch pushed back"
        );
        let _ = acks.send(session::ack_retry_later(seq, RETRY_AFTER_MS));
        return;
    }
    stats.queued_positions.fetch_add(kept, Ordering::Relaxed);
    let reply_stats = stats.clone();
    let arrived = std::time::Instant::now();
    let reply = move |result: Result<WriteOutcome, StoreError>| {
        reply_stats
            .queued_positions
            .fetch_sub(kept, Ordering::Relaxed);
        let frame = match result {
            Ok(o) => {
                reply_stats.records_acked.fetch_add(1, Ordering::Relaxed);
                if o.replayed {
                    reply_stats.records_replayed.fetch_add(1, Ordering::Relaxed);
                    session::ack_stored(seq, 0, kept as u32, 0, &refusals)
                } else {
                    reply_stats
                        .positions_stored
                        .fetch_add(o.stored as u64, Ordering::Relaxed);
                    reply_stats
                        .positions_duplicate
                        .fetch_add(o.duplicates as u64, Ordering::Relaxed);
                    reply_stats
                        .positions_flagged
                        .fetch_add(o.flagged as u64, Ordering::Relaxed);
                    for r in &refusals {
                        reply_stats.count_refusal(r.reason);
                    }
                    session::ack_stored(seq, o.stored, o.duplicates, o.flagged, &refusals)
                }
            }
            // Whatever the store's trouble, the device keeps its copy and resends: an error here
            // is never a reason to lose what a device holds.
            Err(e) => {
                reply_stats.retry_later.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(seq, error = %e, "record not stored; asked to retry");
                session::ack_retry_later(seq, RETRY_AFTER_MS)
            }
        };
        reply_stats
            .ack_latency
            .record(arrived.elapsed().as_micros() as u64);
        let _ = acks.send(frame);
        drop(permit);
    };
    let req = WriteRequest {
        tenant: dev.tenant,
        device: dev.id,
        seq: BatchSeq(seq),
        record,
        received_us: now,
        reply: Box::new(reply),
    };
    if let Err(req) = shared.writer.try_submit(req) {
        stats
            .last_pushback_us
            .store(now.max(0) as u64, Ordering::Relaxed);
        (req.reply)(Err(StoreError::WriteFailed {
            retryable: true,
            message: "writer queue full".into(),
        }));
    }
}

/// Runs `fut` to its end, or until `deadline` if there is one (then `None`).
async fn within<T>(
    deadline: Option<tokio::time::Instant>,
    fut: impl Future<Output = T>,
) -> Option<T> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, fut).await.ok(),
        None => Some(fut.await),
    }
}

/// Reads and discards `len` bytes of a body the session refused to read.
async fn skip(recv: &mut RecvStream, mut len: u64) -> Result<(), quinn::ReadExactError> {
    let mut scratch = vec![0u8; 64 * 1024];
    while len > 0 {
        let n = len.min(scratch.len() as u64) as usize;
        recv.read_exact(&mut scratch[..n]).await?;
        len -= n as u64;
    }
    Ok(())
}

/// Writes acks (and the welcome) to the device as they come, several per write when they queue.
async fn send_acks(mut send: SendStream, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut buf = Vec::new();
    while let Some(frame) = rx.recv().await {
        buf.clear();
        buf.extend_from_slice(&frame);
        while buf.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(more) => buf.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if send.write_all(&buf).await.is_err() {
            break;
        }
    }
    let _ = send.finish();
}
