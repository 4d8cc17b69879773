//! Frames: a 16-byte header, then an rkyv archive of the frame's type.
//!
//! ```text
//! offset  size  field
//!      0     4  body_len   u32 LE, bytes of body after this header
//!      4     1  kind       FrameKind
//!      5     1  flags      zero in version 1
//!      6     2  reserved   zero in version 1
//!      8     8  seq        u64 LE; the device's sequence number for JourneyStart, Batch and
//!                          JourneyEnd, echoed in the Ack; zero in every other frame
//! ```
//!
//! Bodies are decoded with rkyv's validating `access` (bytecheck) into an aligned buffer, so a
//! malformed body is an error, never undefined behaviour.

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::rancor::Error as RkyvError;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Portable, Serialize};

use crate::{FrameError, Micros, Position};

/// Size of [`FrameHeader`] on the wire.
pub const HEADER_LEN: usize = 16;

/// What a frame is. Device-to-server kinds are below 64, server-to-device kinds 64 and up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    Hello = 1,
    Enrol = 2,
    JourneyStart = 3,
    Batch = 4,
    JourneyEnd = 5,
    Ping = 6,
    Welcome = 64,
    Enrolled = 65,
    Ack = 66,
}

impl FrameKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Hello,
            2 => Self::Enrol,
            3 => Self::JourneyStart,
            4 => Self::Batch,
            5 => Self::JourneyEnd,
            6 => Self::Ping,
            64 => Self::Welcome,
            65 => Self::Enrolled,
            66 => Self::Ack,
            _ => return None,
        })
    }

    /// Frames that carry a device sequence number and get an [`Ack`].
    pub fn is_sequenced(self) -> bool {
        matches!(self, Self::JourneyStart | Self::Batch | Self::JourneyEnd)
    }
}

/// The fixed 16-byte header in front of every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub body_len: u32,
    pub kind: FrameKind,
    pub seq: u64,
}

impl FrameHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&self.body_len.to_le_bytes());
        out[4] = self.kind as u8;
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        let Some(bytes) = bytes.get(..HEADER_LEN) else {
            return Err(FrameError::ShortHeader(bytes.len()));
        };
        let kind = FrameKind::from_u8(bytes[4]).ok_or(FrameError::UnknownKind(bytes[4]))?;
        if bytes[5] != 0 {
            return Err(FrameError::NonZeroFlags(bytes[5]));
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&bytes[0..4]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&bytes[8..16]);
        Ok(Self {
            body_len: u32::from_le_bytes(len),
            kind,
            seq: u64::from_le_bytes(seq),
        })
    }
}

/// First frame of a connection: who the device is.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The id the server assigned at enrolment.
    pub device_id: u64,
    /// The 32-byte secret the server handed out once at enrolment.
    pub secret: [u8; 32],
    pub protocol_version: u32,
    /// Zero in version 1.
    pub reserved: u32,
}

/// First frame of a connection for a device that has no credential yet: enrol it with the
/// company's enrolment code.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Enrol {
    pub enrolment_code: [u8; 32],
    pub protocol_version: u32,
    pub reserved: u32,
    /// A human name for the device, UTF-8, at most 128 bytes.
    pub device_name: Vec<u8>,
}

/// The server's answer to a good [`Hello`]: the limits of this session.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub protocol_version: u32,
    /// The server closes a connection that stays silent this long; keep it busier than that.
    pub idle_timeout_ms: u32,
    /// Most positions the server takes in one batch.
    pub max_batch_positions: u32,
    /// Most sequenced frames a device may have sent and not yet had acked.
    pub max_in_flight: u32,
    pub server_time_us: Micros,
    pub device_id: u64,
}

/// The server's answer to a good [`Enrol`]: the device's credential, shown this once.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub device_id: u64,
    pub secret: [u8; 32],
}

/// Start or end of a journey (kinds JourneyStart and JourneyEnd share this body).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct JourneyMark {
    /// The device's own id for the journey, unique per device (the SDK uses the start time
    /// in microseconds).
    pub journey: u64,
    pub at_us: Micros,
}

/// Positions of one journey, taken by the device in any order.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Batch {
    pub journey: u64,
    pub positions: Vec<Position>,
}

/// One position the server refused, by its index in the batch.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Refusal {
    pub index: u32,
    /// A [`crate::RefusalReason`].
    pub reason: u16,
    pub reserved: u16,
}

/// The server's answer to a sequenced frame; the header's `seq` names the frame.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Ack {
    /// An [`crate::AckStatus`].
    pub status: u16,
    /// Zero in version 1.
    pub reserved: u16,
    /// With `RetryLater`: wait at least this long before resending.
    pub retry_after_ms: u32,
    /// Positions newly stored by this frame.
    pub stored: u32,
    /// Positions whose fix time the journey already held: not stored again.
    pub duplicates: u32,
    /// Positions stored with a quality flag.
    pub flagged: u32,
    /// With `SplitAndResend`: the most positions a batch may hold.
    pub max_batch_positions: u32,
    /// Positions refused, with the reason for each. Never resend them.
    pub refusals: Vec<Refusal>,
}

/// Encodes a whole frame: header, then the rkyv archive of `body`.
pub fn encode_frame<T>(kind: FrameKind, seq: u64, body: &T) -> Vec<u8>
where
    T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, RkyvError>>,
{
    let body = rkyv::to_bytes::<RkyvError>(body)
        .expect("serialising plain structs into memory cannot fail");
    let header = FrameHeader {
        body_len: body.len() as u32,
        kind,
        seq,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(&body);
    out
}

/// Encodes a frame with an empty body (Ping).
pub fn encode_empty(kind: FrameKind, seq: u64) -> [u8; HEADER_LEN] {
    FrameHeader {
        body_len: 0,
        kind,
        seq,
    }
    .encode()
}

/// Validates `body` as the archive of `T` and returns a view of it. `body` must be 16-byte
/// aligned (use [`AlignedVec`]); an unaligned buffer is reported as an invalid body.
pub fn decode_body<'a, T>(kind: FrameKind, body: &'a [u8]) -> Result<&'a T, FrameError>
where
    T: Portable + for<'b> rkyv::bytecheck::CheckBytes<HighValidator<'b, RkyvError>>,
{
    if body.is_empty() {
        return Err(FrameError::InvalidBody {
            kind,
            detail: "body is empty".into(),
        });
    }
    rkyv::access::<T, RkyvError>(body).map_err(|e| FrameError::InvalidBody {
        kind,
        detail: e.to_string(),
    })
}

/// Copies a body read from the network into an aligned buffer that [`decode_body`] accepts.
pub fn aligned(body: &[u8]) -> AlignedVec {
    let mut v = AlignedVec::with_capacity(body.len());
    v.extend_from_slice(body);
    v
}

#[cfg(test)]
mod tests;
