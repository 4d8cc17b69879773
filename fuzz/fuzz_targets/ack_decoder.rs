//! Arbitrary bytes as the body of an Ack, decoded the way the device SDK decodes it
//! (`journeyd_wire::session::decode_ack`, on an aligned copy). Whatever decodes must encode
//! back to an ack that decodes to the same value.

#![no_main]

use journeyd_wire::frame::{self, FrameHeader, FrameKind, HEADER_LEN};
use journeyd_wire::session::decode_ack;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = frame::aligned(data);
    let Ok(ack) = decode_ack(&body) else {
        return;
    };
    let again = frame::encode_frame(FrameKind::Ack, 1, &ack);
    let header = FrameHeader::decode(&again).expect("an encoded header decodes");
    assert_eq!(header.body_len as usize, again.len() - HEADER_LEN);
    let back = decode_ack(&frame::aligned(&again[HEADER_LEN..])).expect("a re-encoded ack decodes");
    assert_eq!(back, ack);
});
