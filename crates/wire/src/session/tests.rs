use super::*;
use crate::frame::{Batch, Enrol, Hello, JourneyMark, aligned, encode_frame};
use crate::{Position, RefusalReason};

const NOW: i64 = 1_780_000_000_000_000;

fn body_of(frame: &[u8]) -> (FrameHeader, rkyv::util::AlignedVec) {
    let h = FrameHeader::decode(frame).unwrap();
    (h, aligned(&frame[16..]))
}

fn feed(s: &mut ServerSession, frame: &[u8]) -> Result<SessionEvent, Close> {
    let (h, body) = body_of(frame);
    match s.on_header(&h) {
        HeaderVerdict::ReadBody => s.on_body(&h, &body, NOW),
        HeaderVerdict::Close(c) => Err(c),
        HeaderVerdict::SkipAndReply(_) => panic!("unexpected skip"),
    }
}

fn hello() -> Vec<u8> {
    encode_frame(
        FrameKind::Hello,
        0,
        &Hello {
            device_id: 5,
            secret: [1; 32],
            protocol_version: 1,
            reserved: 0,
        },
    )
}

fn open_session() -> ServerSession {
    let mut s = ServerSession::new(SessionLimits::default(), ValidationRules::default());
    let ev = feed(&mut s, &hello()).unwrap();
    assert_eq!(
        ev,
        SessionEvent::Authenticate {
            device_id: 5,
            secret: [1; 32]
        }
    );
    s.authenticated(5, NOW);
    s
}

#[test]
fn batch_before_hello_is_a_protocol_violation() {
    let mut s = ServerSession::new(SessionLimits::default(), ValidationRules::default());
    let frame = encode_frame(
        FrameKind::Batch,
        1,
        &Batch {
            journey: 1,
            positions: vec![],
        },
    );
    let close = feed(&mut s, &frame).unwrap_err();
    assert_eq!(close.code, CloseCode::ProtocolViolation);
    assert!(close.reason.contains("before Hello"), "{}", close.reason);
}

#[test]
fn wrong_version_is_refused() {
    let mut s = ServerSession::new(SessionLimits::default(), ValidationRules::default());
    let frame = encode_frame(
        FrameKind::Hello,
        0,
        &Hello {
            device_id: 5,
            secret: [1; 32],
            protocol_version: 9,
            reserved: 0,
        },
    );
    assert_eq!(
        feed(&mut s, &frame).unwrap_err().code,
        CloseCode::UnsupportedVersion
    );
}

#[test]
fn enrol_carries_the_name() {
    let mut s = ServerSession::new(SessionLimits::default(), ValidationRules::default());
    let frame = encode_frame(
        FrameKind::Enrol,
        0,
        &Enrol {
            enrolment_code: [2; 32],
            protocol_version: 1,
            reserved: 0,
            device_name: b"van 7".to_vec(),
        },
    );
    assert_eq!(
        feed(&mut s, &frame).unwrap(),
        SessionEvent::Enrol {
            code: [2; 32],
            device_name: "van 7".into()
        }
    );
}

#[test]
fn batch_is_validated_in_the_session() {
    let mut s = open_session();
    let positions = vec![
        Position::new(NOW - 2_000_000, 10.0, 10.0),
        Position::new(0, 10.0, 10.0),
        Position::new(NOW - 1_000_000, 10.0, 10.0),
    ];
    let frame = encode_frame(
        FrameKind::Batch,
        9,
        &Batch {
            journey: 3,
            positions,
        },
    );
    let SessionEvent::Store {
        seq,
        record: Record::Batch { journey, validated },
    } = feed(&mut s, &frame).unwrap()
    else {
        panic!("expected a batch to store")
    };
    assert_eq!((seq, journey), (9, 3));
    assert_eq!(validated.kept.len(), 2);
    assert_eq!(validated.refusals[0].index, 1);
    assert_eq!(
        validated.refusals[0].reason,
        RefusalReason::TimeBefore2000 as u16
    );
}

#[test]
fn oversized_batch_is_skipped_with_a_split_ack() {
    let s = open_session();
    let header = FrameHeader {
        body_len: 600_000 * 48 + 16,
        kind: FrameKind::Batch,
        seq: 4,
    };
    let HeaderVerdict::SkipAndReply(reply) = s.on_header(&header) else {
        panic!("expected skip")
    };
    let (h, body) = body_of(&reply);
    assert_eq!(h.seq, 4);
    let ack = decode_ack(&body).unwrap();
    assert_eq!(ack.status, AckStatus::SplitAndResend as u16);
    assert_eq!(
        ack.max_batch_positions,
        SessionLimits::default().max_batch_positions
    );
}

#[test]
fn sequence_zero_and_second_hello_are_violations() {
    let mut s = open_session();
    let frame = encode_frame(
        FrameKind::Batch,
        0,
        &Batch {
            journey: 1,
            positions: vec![],
        },
    );
    assert_eq!(
        feed(&mut s, &frame).unwrap_err().code,
        CloseCode::ProtocolViolation
    );
    assert_eq!(
        feed(&mut s, &hello()).unwrap_err().code,
        CloseCode::ProtocolViolation
    );
}

#[test]
fn garbage_body_is_malformed_not_a_panic() {
    let mut s = open_session();
    let h = FrameHeader {
        body_len: 40,
        kind: FrameKind::Batch,
        seq: 2,
    };
    let body = aligned(&[0xff; 40]);
    let close = s.on_body(&h, &body, NOW).unwrap_err();
    assert_eq!(close.code, CloseCode::MalformedFrame);
}

#[test]
fn one_position_over_the_limit_is_split_not_stored() {
    let limits = SessionLimits {
        max_batch_positions: 3,
        ..SessionLimits::default()
    };
    let mut s = ServerSession::new(limits, ValidationRules::default());
    feed(&mut s, &hello()).unwrap();
    s.authenticated(5, NOW);
    let positions = vec![Position::new(NOW - 1_000_000, 1.0, 1.0); 4];
    let frame = encode_frame(
        FrameKind::Batch,
        2,
        &Batch {
            journey: 1,
            positions,
        },
    );
    let (h, body) = body_of(&frame);
    let reply = match s.on_header(&h) {
        HeaderVerdict::SkipAndReply(r) => r,
        HeaderVerdict::ReadBody => match s.on_body(&h, &body, NOW).unwrap() {
            SessionEvent::Reply(r) => r,
            other => panic!("a 4-position batch over a limit of 3 was let through: {other:?}"),
        },
        HeaderVerdict::Close(c) => panic!("{c:?}"),
    };
    let (_, ack_body) = body_of(&reply);
    assert_eq!(
        decode_ack(&ack_body).unwrap().status,
        AckStatus::SplitAndResend as u16
    );
}

#[test]
fn impossible_journey_marks_are_rejected() {
    let mut s = open_session();
    let mark = JourneyMark {
        journey: 1,
        at_us: i64::MIN,
    };
    let frame = encode_frame(FrameKind::JourneyStart, 3, &mark);
    let SessionEvent::Reply(reply) = feed(&mut s, &frame).unwrap() else {
        panic!("expected a reply")
    };
    let (_, body) = body_of(&reply);
    assert_eq!(
        decode_ack(&body).unwrap().status,
        AckStatus::Rejected as u16
    );
}
