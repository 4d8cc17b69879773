//! The journeyd device SDK: what a phone app or logger does to get positions to journeyd
//! without losing or doubling any.
//!
//! - Positions go into a persistent [`Outbox`] before anything is sent; a record leaves it only
//!   when the server acks it as stored (or refuses it for good). Records older than 7 days
//!   expire.
//! - [`Device::flush`] connects (reconnecting with backoff), resends everything unacked in
//!   sequence order with a window of records in flight, obeys every ack status (retry later,
//!   split and resend, rejected), and stops for good on `DeviceBlocked` or `BadCredential`.
//! - While connected it pings at a third of the idle timeout the server announced, so pauses
//!   in a journey do not drop the connection.
//!
//! The replay tool, the load generator and the tests all use this crate, so they behave as a
//! real device does.

mod client;
mod credential;
mod error;
mod outbox;

pub use client::{Device, DeviceConfig, FlushReport, client_crypto, client_endpoint};
pub use credential::{Credential, Identity, parse_code};
pub use error::DeviceError;
pub use outbox::Outbox;
