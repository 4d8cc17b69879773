//! The server side of one device connection, without I/O.
//!
//! The QUIC shell reads a 16-byte header and asks [`ServerSession::on_header`] what to do with
//! the body (read it, skip it and reply, or close). It reads the body into an aligned buffer and
//! hands it to [`ServerSession::on_body`] with `now`, which returns what the shell must do next:
//! check a credential, enrol a device, store a validated record, or nothing. Acks are built by
//! the `ack_*` functions once the store has answered. Every decision about frames (state, limits,
//! validation) lives here; the shell only moves bytes and awaits the store.

use rkyv::rancor::Error as RkyvError;

use crate::codes::{AckStatus, CloseCode};
use crate::frame::{
    self, Ack, ArchivedBatch, ArchivedEnrol, ArchivedHello, ArchivedJourneyMark, FrameHeader,
    FrameKind, JourneyMark, Refusal, Welcome,
};
use crate::position::ARCHIVED_POSITION_SIZE;
use crate::validate::{ValidatedBatch, ValidationRules};
use crate::{Micros, PROTOCOL_VERSION};

/// Largest body of any frame other than a batch.
const MAX_SMALL_BODY: u32 = 4096;
/// Size of the archived Batch root that follows the positions.
const BATCH_ROOT_SIZE: u32 = 16;
/// Longest device name an [`crate::Enrol`] may carry.
pub const MAX_DEVICE_NAME: usize = 128;

/// Limits of a session, announced to the device in the [`Welcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    pub max_batch_positions: u32,
    pub max_in_flight: u32,
    pub idle_timeout_ms: u32,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_batch_positions: 10_000,
            max_in_flight: 64,
            idle_timeout_ms: 30_000,
        }
    }
}

impl SessionLimits {
    /// Largest batch body the server reads: the positions plus room for the archive's root.
    pub fn max_batch_body(&self) -> u32 {
        self.max_batch_positions
            .saturating_mul(ARCHIVED_POSITION_SIZE as u32)
            .saturating_add(BATCH_ROOT_SIZE)
    }
}

/// Where the session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Waiting for Hello or Enrol.
    AwaitingHello,
    /// The shell is checking the credential or enrolling.
    Authenticating,
    /// Authenticated as this device; sequenced frames are accepted.
    Open { device_id: u64 },
}

/// Why the session must end: the shell closes the connection with this code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: CloseCode,
    pub reason: String,
}

impl Close {
    fn new(code: CloseCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// What to do with the body that follows a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderVerdict {
    /// Read `body_len` bytes and pass them to [`ServerSession::on_body`].
    ReadBody,
    /// Read and throw away `body_len` bytes, then send `reply`.
    SkipAndReply(Vec<u8>),
    Close(Close),
}

/// A validated record a device sent, ready for the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    JourneyStart(JourneyMark),
    JourneyEnd(JourneyMark),
    Batch {
        journey: u64,
        validated: ValidatedBatch,
    },
}

/// What the shell must do after a body.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// Check this credential, then call [`ServerSession::authenticated`] or close with
    /// [`CloseCode::BadCredential`] / [`CloseCode::DeviceBlocked`].
    Authenticate { device_id: u64, secret: [u8; 32] },
    /// Enrol a new device with this company enrolment code and name.
    Enrol { code: [u8; 32], device_name: String },
    /// Store this record durably, then send the ack built by [`ack_stored`].
    Store { seq: u64, record: Record },
    /// Send this frame to the device; nothing to store (an ack refusing the frame).
    Reply(Vec<u8>),
    /// Nothing to do (a ping).
    Nothing,
}

/// One device connection's protocol state.
#[derive(Debug, Clone)]
pub struct ServerSession {
    state: SessionState,
    limits: SessionLimits,
    rules: ValidationRules,
}

impl ServerSession {
    pub fn new(limits: SessionLimits, rules: ValidationRules) -> Self {
        Self {
            state: SessionState::AwaitingHello,
            limits,
            rules,
        }
    }

    pub fn state(&self) -> SessionState {
        self.state
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// Decides about a frame from its header alone, before its body is read.
    pub fn on_header(&self, header: &FrameHeader) -> HeaderVerdict {
        let kind = header.kind;
        if kind as u8 >= FrameKind::Welcome as u8 {
            return HeaderVerdict::Close(Close::new(
                CloseCode::ProtocolViolation,
                format!("{kind:?} is a server frame; a device may not send it"),
            ));
        }
        let opening = matches!(kind, FrameKind::Hello | FrameKind::Enrol);
        match (self.state, opening) {
            (SessionState::AwaitingHello, false) => {
                return HeaderVerdict::Close(Close::new(
                    CloseCode::ProtocolViolation,
                    format!("{kind:?} before Hello"),
                ));
            }
            (SessionState::AwaitingHello, true) => {}
            (_, true) => {
                return HeaderVerdict::Close(Close::new(
                    CloseCode::ProtocolViolation,
                    format!("second {kind:?} on one connection"),
                ));
            }
            (SessionState::Authenticating, false) => {
                return HeaderVerdict::Close(Close::new(
                    CloseCode::ProtocolViolation,
                    format!("{kind:?} before the Welcome"),
                ));
            }
            (SessionState::Open { .. }, false) => {}
        }
        if kind.is_sequenced() && header.seq == 0 {
            return HeaderVerdict::Close(Close::new(
                CloseCode::ProtocolViolation,
                format!("{kind:?} with sequence number 0; sequence numbers start at 1"),
            ));
        }
        if kind == FrameKind::Batch && header.body_len > self.limits.max_batch_body() {
            return HeaderVerdict::SkipAndReply(ack_split(
                header.seq,
                self.limits.max_batch_positions,
            ));
        }
        if kind == FrameKind::Ping && header.body_len != 0 {
            return HeaderVerdict::Close(Close::new(
                CloseCode::MalformedFrame,
                format!("Ping body must be empty, got {} bytes", header.body_len),
            ));
        }
        if kind != FrameKind::Batch && header.body_len > MAX_SMALL_BODY {
            return HeaderVerdict::Close(Close::new(
                CloseCode::MalformedFrame,
                format!(
                    "{kind:?} body of {} bytes exceeds {MAX_SMALL_BODY}",
                    header.body_len
                ),
            ));
        }
        HeaderVerdict::ReadBody
    }

    /// Handles a frame's body. `body` must be 16-byte aligned ([`frame::aligned`]).
    pub fn on_body(
        &mut self,
        header: &FrameHeader,
        body: &[u8],
        now_us: Micros,
    ) -> Result<SessionEvent, Close> {
        let kind = header.kind;
        let malformed = |e: crate::FrameError| Close::new(CloseCode::MalformedFrame, e.to_string());
        match kind {
            FrameKind::Hello => {
                let hello = frame::decode_body::<ArchivedHello>(kind, body).map_err(malformed)?;
                check_version(hello.protocol_version.to_native())?;
                self.state = SessionState::Authenticating;
                Ok(SessionEvent::Authenticate {
                    device_id: hello.device_id.to_native(),
                    secret: hello.secret,
                })
            }
            FrameKind::Enrol => {
                let enrol = frame::decode_body::<ArchivedEnrol>(kind, body).map_err(malformed)?;
                check_version(enrol.protocol_version.to_native())?;
                let name = std::str::from_utf8(enrol.device_name.as_slice()).map_err(|e| {
                    Close::new(CloseCode::MalformedFrame, format!("Enrol device_name: {e}"))
                })?;
                if name.is_empty() || name.len() > MAX_DEVICE_NAME {
                    return Err(Close::new(
                        CloseCode::MalformedFrame,
                        format!("Enrol device_name must be 1 to {MAX_DEVICE_NAME} bytes"),
                    ));
                }
                self.state = SessionState::Authenticating;
                Ok(SessionEvent::Enrol {
                    code: enrol.enrolment_code,
                    device_name: name.into(),
                })
            }
            FrameKind::JourneyStart | FrameKind::JourneyEnd => {
                let mark =
                    frame::decode_body::<ArchivedJourneyMark>(kind, body).map_err(malformed)?;
                let mark = JourneyMark {
                    journey: mark.journey.to_native(),
                    at_us: mark.at_us.to_native(),
                };
                if !self.rules.is_plausible_time(mark.at_us, now_us) {
                    // A journey mark carries one time and nothing else: an impossible one can
                    // never be stored, so the device must drop it rather than resend it.
                    return Ok(SessionEvent::Reply(ack_rejected(header.seq)));
                }
                let record = if kind == FrameKind::JourneyStart {
                    Record::JourneyStart(mark)
                } else {
                    Record::JourneyEnd(mark)
                };
                Ok(SessionEvent::Store {
                    seq: header.seq,
                    record,
                })
            }
            FrameKind::Batch => {
                let batch = frame::decode_body::<ArchivedBatch>(kind, body).map_err(malformed)?;
                if batch.positions.len() > self.limits.max_batch_positions as usize {
                    return Ok(SessionEvent::Reply(ack_split(
                        header.seq,
                        self.limits.max_batch_positions,
                    )));
                }
                let positions = batch.positions.iter().map(|p| p.to_native());
                let validated = self.rules.check_batch(positions, now_us);
                Ok(SessionEvent::Store {
                    seq: header.seq,
                    record: Record::Batch {
                        journey: batch.journey.to_native(),
                        validated,
                    },
                })
            }
            FrameKind::Ping => Ok(SessionEvent::Nothing),
            FrameKind::Welcome | FrameKind::Enrolled | FrameKind::Ack => Err(Close::new(
                CloseCode::ProtocolViolation,
                format!("{kind:?} is a server frame; a device may not send it"),
            )),
        }
    }

    /// The credential was good: the session opens and this Welcome frame goes to the device.
    pub fn authenticated(&mut self, device_id: u64, now_us: Micros) -> Vec<u8> {
        self.state = SessionState::Open { device_id };
        let welcome = Welcome {
            protocol_version: PROTOCOL_VERSION,
            idle_timeout_ms: self.limits.idle_timeout_ms,
            max_batch_positions: self.limits.max_batch_positions,
            max_in_flight: self.limits.max_in_flight,
            server_time_us: now_us,
            device_id,
        };
        frame::encode_frame(FrameKind::Welcome, 0, &welcome)
    }
}

fn check_version(version: u32) -> Result<(), Close> {
    if version == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(Close::new(
            CloseCode::UnsupportedVersion,
            format!(
                "protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}"
            ),
        ))
    }
}

fn ack(seq: u64, ack: &Ack) -> Vec<u8> {
    frame::encode_frame(FrameKind::Ack, seq, ack)
}

/// The ack for a record that is durably stored.
pub fn ack_stored(
    seq: u64,
    stored: u32,
    duplicates: u32,
    flagged: u32,
    refusals: &[Refusal],
) -> Vec<u8> {
    ack(
        seq,
        &Ack {
            status: AckStatus::Stored as u16,
            stored,
            duplicates,
            flagged,
            refusals: refusals.to_vec(),
            ..Ack::default()
        },
    )
}

/// The ack for a record the server could not store now.
pub fn ack_retry_later(seq: u64, retry_after_ms: u32) -> Vec<u8> {
    ack(
        seq,
        &Ack {
            status: AckStatus::RetryLater as u16,
            retry_after_ms,
            ..Ack::default()
        },
    )
}

/// The ack for a batch larger than the server takes.
pub fn ack_split(seq: u64, max_batch_positions: u32) -> Vec<u8> {
    ack(
        seq,
        &Ack {
            status: AckStatus::SplitAndResend as u16,
            max_batch_positions,
            ..Ack::default()
        },
    )
}

/// The ack for a record that will never be stored.
pub fn ack_rejected(seq: u64) -> Vec<u8> {
    ack(
        seq,
        &Ack {
            status: AckStatus::Rejected as u16,
            ..Ack::default()
        },
    )
}

/// Decodes an ack on the device side into a native value.
pub fn decode_ack(body: &[u8]) -> Result<Ack, crate::FrameError> {
    let archived = frame::decode_body::<frame::ArchivedAck>(FrameKind::Ack, body)?;
    rkyv::deserialize::<Ack, RkyvError>(archived).map_err(|e| crate::FrameError::InvalidBody {
        kind: FrameKind::Ack,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
