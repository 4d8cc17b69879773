//! Arbitrary bytes from a device, read the way journeyd-ingest reads them: a 16-byte header
//! through `FrameHeader::decode`, the header through `ServerSession::on_header`, the body (copied
//! into an aligned buffer) through `ServerSession::on_body`, then the next frame, and so on.
//!
//! Every input is played against three sessions: a fresh one (waiting for Hello or Enrol), one
//! opened by a valid Hello and `authenticated`, and an opened one with small limits so that the
//! split-and-resend path is reachable with short inputs. Besides "never panics", the target
//! checks what the session promises about what it lets through.

#![no_main]

use journeyd_wire::frame::{
    self, ArchivedBatch, ArchivedWelcome, FrameHeader, FrameKind, HEADER_LEN, Hello,
};
use journeyd_wire::position::OptionalFields;
use journeyd_wire::session::{
    HeaderVerdict, Record, ServerSession, SessionEvent, SessionLimits, SessionState, decode_ack,
};
use journeyd_wire::validate::{ValidatedBatch, YEAR_2000_US};
use journeyd_wire::{AckStatus, QualityFlags, RefusalReason, ValidationRules};
use libfuzzer_sys::fuzz_target;

/// The server's clock for every call: 2026-05-28.
const NOW: i64 = 1_780_000_000_000_000;
/// Largest body of a frame other than a batch (private in journeyd-wire).
const MAX_SMALL_BODY: u32 = 4096;
/// Frames played per session and input; inputs are short, so this is rarely reached.
const MAX_FRAMES: usize = 64;

fn opened(limits: SessionLimits) -> ServerSession {
    let mut s = ServerSession::new(limits, ValidationRules::default());
    let hello = frame::encode_frame(
        FrameKind::Hello,
        0,
        &Hello {
            device_id: 5,
            secret: [1; 32],
            protocol_version: 1,
            reserved: 0,
        },
    );
    let header = FrameHeader::decode(&hello).expect("a valid hello header");
    assert_eq!(s.on_header(&header), HeaderVerdict::ReadBody);
    let event = s
        .on_body(&header, &frame::aligned(&hello[HEADER_LEN..]), NOW)
        .expect("a valid hello body");
    assert!(matches!(event, SessionEvent::Authenticate { device_id: 5, .. }));
    check_welcome(&s.authenticated(5, NOW), s.limits(), 5);
    s
}

fn check_welcome(frame_bytes: &[u8], limits: SessionLimits, device_id: u64) {
    let header = FrameHeader::decode(frame_bytes).expect("welcome header");
    assert_eq!(header.kind, FrameKind::Welcome);
    assert_eq!(header.body_len as usize, frame_bytes.len() - HEADER_LEN);
    let body = frame::aligned(&frame_bytes[HEADER_LEN..]);
    let w = frame::decode_body::<ArchivedWelcome>(header.kind, &body).expect("welcome body");
    assert_eq!(w.device_id.to_native(), device_id);
    assert_eq!(w.max_batch_positions.to_native(), limits.max_batch_positions);
    assert_eq!(w.max_in_flight.to_native(), limits.max_in_flight);
    assert_eq!(w.idle_timeout_ms.to_native(), limits.idle_timeout_ms);
}

/// What `on_header` promises about a frame it lets the shell read.
fn check_read_body(s: &ServerSession, h: &FrameHeader) {
    assert!((h.kind as u8) < 64, "server frame {:?} let through", h.kind);
    assert!(
        matches!(s.state(), SessionState::Open { .. })
            || matches!(h.kind, FrameKind::Hello | FrameKind::Enrol)
    );
    if h.kind.is_sequenced() {
        assert_ne!(h.seq, 0, "sequenced frame with seq 0 let through");
    }
    match h.kind {
        FrameKind::Batch => assert!(h.body_len <= s.limits().max_batch_body()),
        FrameKind::Ping => assert_eq!(h.body_len, 0),
        _ => assert!(h.body_len <= MAX_SMALL_BODY),
    }
}

fn check_split_reply(reply: &[u8], h: &FrameHeader, limits: SessionLimits) {
    assert_eq!(h.kind, FrameKind::Batch);
    assert!(h.body_len > limits.max_batch_body());
    let rh = FrameHeader::decode(reply).expect("split ack header");
    assert_eq!((rh.kind, rh.seq), (FrameKind::Ack, h.seq));
    let ack = decode_ack(&frame::aligned(&reply[HEADER_LEN..])).expect("split ack body");
    assert_eq!(ack.status, AckStatus::SplitAndResend as u16);
    assert_eq!(ack.max_batch_positions, limits.max_batch_positions);
}

/// What the validation rules promise about a batch they pass to the store.
fn check_batch(body: &[u8], v: &ValidatedBatch) {
    let sent = frame::decode_body::<ArchivedBatch>(FrameKind::Batch, body)
        .expect("on_body accepted this body, so it decodes")
        .positions
        .len();
    assert_eq!(v.kept.len() + v.refusals.len(), sent, "a position vanished");
    for pair in v.refusals.windows(2) {
        assert!(pair[0].index < pair[1].index, "refusals not strictly ascending");
    }
    for r in &v.refusals {
        assert!((r.index as usize) < sent);
        assert!(RefusalReason::from_u16(r.reason).is_some(), "reason {}", r.reason);
        assert_eq!(r.reserved, 0);
    }
    for pair in v.kept.windows(2) {
        assert!(pair[0].fix_time_us < pair[1].fix_time_us, "kept not strictly by fix time");
    }
    let known_flags =
        QualityFlags::NULL_ISLAND | QualityFlags::ROLLOVER_CORRECTED | QualityFlags::FIELD_DROPPED;
    let tolerance = ValidationRules::default().future_tolerance_us;
    for p in &v.kept {
        assert!(p.lat.is_finite() && (-90.0..=90.0).contains(&p.lat));
        assert!(p.lon.is_finite() && (-180.0..=180.0).contains(&p.lon));
        assert!(p.fix_time_us >= YEAR_2000_US && p.fix_time_us <= NOW + tolerance);
        assert_eq!(p.fields & !OptionalFields::ALL, 0, "unknown field bits kept");
        assert_eq!(p.quality & !known_flags, 0, "unknown quality bits");
        for (bit, value, min, max) in [
            (OptionalFields::ALTITUDE, p.altitude_m, -12_000.0, 100_000.0),
            (OptionalFields::SPEED, p.speed_mps, 0.0, 1_500.0),
            (OptionalFields::HEADING, p.heading_deg, 0.0, 360.0),
            (OptionalFields::ACCURACY, p.accuracy_m, 0.0, 1_000_000.0),
        ] {
            if p.fields & bit != 0 {
                assert!(value.is_finite() && (min..=max).contains(&value));
            } else {
                assert_eq!(value.to_bits(), 0, "absent field not zeroed");
            }
        }
    }
    let flagged = v.kept.iter().filter(|p| p.quality != 0).count() as u32;
    assert_eq!(v.flagged, flagged);
}

/// Plays `input` as a stream of frames from one device, as the ingest shell would.
fn play(s: &mut ServerSession, mut input: &[u8]) {
    for _ in 0..MAX_FRAMES {
        let Ok(header) = FrameHeader::decode(input) else {
            return;
        };
        let encoded = header.encode();
        assert_eq!(encoded[..6], input[..6], "header does not round-trip");
        assert_eq!(encoded[8..], input[8..HEADER_LEN], "header does not round-trip");
        let rest = &input[HEADER_LEN..];
        let len = header.body_len as usize;
        match s.on_header(&header) {
            HeaderVerdict::Close(_) => return,
            HeaderVerdict::SkipAndReply(reply) => {
                check_split_reply(&reply, &header, s.limits());
                match rest.get(len..) {
                    Some(next) => {
                        input = next;
                        continue;
                    }
                    None => return,
                }
            }
            HeaderVerdict::ReadBody => check_read_body(s, &header),
        }
        // The shell reads exactly body_len bytes. When the input ends sooner, still hand over
        // what there is: on_body must cope with any slice.
        let (body, next) = match (rest.get(..len), rest.get(len..)) {
            (Some(body), Some(next)) => (body, Some(next)),
            _ => (rest, None),
        };
        let body = frame::aligned(body);
        match s.on_body(&header, &body, NOW) {
            Err(_) => return,
            Ok(SessionEvent::Authenticate { device_id, .. }) => {
                assert_eq!(header.kind, FrameKind::Hello);
                assert_eq!(s.state(), SessionState::Authenticating);
                check_welcome(&s.authenticated(device_id, NOW), s.limits(), device_id);
            }
            Ok(SessionEvent::Enrol { device_name, .. }) => {
                assert_eq!(header.kind, FrameKind::Enrol);
                assert!(!device_name.is_empty() && device_name.len() <= 128);
                check_welcome(&s.authenticated(1, NOW), s.limits(), 1);
            }
            Ok(SessionEvent::Store { seq, record }) => {
                assert_eq!(seq, header.seq);
                match (&record, header.kind) {
                    (Record::Batch { validated, .. }, FrameKind::Batch) => {
                        check_batch(&body, validated)
                    }
                    (Record::JourneyStart(_), FrameKind::JourneyStart)
                    | (Record::JourneyEnd(_), FrameKind::JourneyEnd) => {}
                    (r, k) => panic!("{k:?} frame became record {r:?}"),
                }
            }
            Ok(SessionEvent::Nothing) => assert_eq!(header.kind, FrameKind::Ping),
        }
        match next {
            Some(n) => input = n,
            None => return,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The bare header decoder on its own.
    if let Ok(h) = FrameHeader::decode(data) {
        assert_eq!(h.kind as u8, data[4]);
        assert_eq!(data[5], 0);
    }

    let fresh = ServerSession::new(SessionLimits::default(), ValidationRules::default());
    play(&mut fresh.clone(), data);

    play(&mut opened(SessionLimits::default()), data);

    let small = SessionLimits {
        max_batch_positions: 3,
        max_in_flight: 2,
        idle_timeout_ms: 1_000,
    };
    play(&mut opened(small), data);
});
