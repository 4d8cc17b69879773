//! The journeyd wire protocol, version 1.
//!
//! A device talks to journeyd over one QUIC connection (ALPN [`ALPN`]) and one long-lived
//! bidirectional stream on it. Every message on that stream is a *frame*: a 16-byte header
//! ([`FrameHeader`]) followed by a body that is an rkyv archive of the frame's type. The whole
//! format is written down byte by byte in `schemas/wire-v1.md`.
//!
//! This crate does no I/O and reads no clock: callers pass bytes and `now` in, and get decoded
//! frames, validation verdicts and session decisions out ([`session::ServerSession`]). The QUIC
//! code in journeyd-ingest and journeyd-device is a thin shell around it.

pub mod codes;
mod error;
pub mod frame;
pub mod position;
pub mod session;
pub mod validate;

pub use codes::{AckStatus, CloseCode, QualityFlags, RefusalReason};
pub use error::FrameError;
pub use frame::{
    Ack, Batch, Enrol, Enrolled, FrameHeader, FrameKind, Hello, JourneyMark, Refusal, Welcome,
    decode_body, encode_frame,
};
pub use position::{OptionalFields, Position};
pub use validate::{ValidationRules, Verdict};

/// ALPN protocol id of wire version 1.
pub const ALPN: &[u8] = b"journeyd/1";

/// The protocol version a [`Hello`] or [`Enrol`] carries.
pub const PROTOCOL_VERSION: u32 = 1;

/// Microseconds since the Unix epoch, UTC: the one time unit of the protocol.
pub type Micros = i64;

/// Microseconds in one second.
pub const MICROS_PER_SEC: i64 = 1_000_000;
