use proptest::prelude::*;

use super::*;
use crate::session::decode_ack;

/// Builds a Batch frame by hand, following schemas/wire-v1.md and nothing else, so the document
/// and the rkyv encoding cannot drift apart.
fn hand_encoded_batch(seq: u64, journey: u64, positions: &[Position]) -> Vec<u8> {
    let mut body = Vec::new();
    for p in positions {
        body.extend_from_slice(&p.fix_time_us.to_le_bytes());
        body.extend_from_slice(&p.lat.to_le_bytes());
        body.extend_from_slice(&p.lon.to_le_bytes());
        body.extend_from_slice(&p.altitude_m.to_le_bytes());
        body.extend_from_slice(&p.speed_mps.to_le_bytes());
        body.extend_from_slice(&p.heading_deg.to_le_bytes());
        body.extend_from_slice(&p.accuracy_m.to_le_bytes());
        body.extend_from_slice(&p.fields.to_le_bytes());
        body.extend_from_slice(&p.quality.to_le_bytes());
    }
    let root = body.len();
    body.extend_from_slice(&journey.to_le_bytes());
    let offset_field = root + 8;
    // Elements start at body offset 0, also when there are none.
    let rel = -(offset_field as i32);
    body.extend_from_slice(&rel.to_le_bytes());
    body.extend_from_slice(&(positions.len() as u32).to_le_bytes());

    let mut frame = Vec::new();
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&[FrameKind::Batch as u8, 0, 0, 0]);
    frame.extend_from_slice(&seq.to_le_bytes());
    frame.extend_from_slice(&body);
    frame
}

fn sample_positions() -> Vec<Position> {
    vec![
        Position::new(1_710_072_000_123_456, 51.501_234_5, -0.141_234_5).with_accuracy(4.5),
        Position::new(1_710_072_001_000_000, 51.501_3, -0.141_3)
            .with_speed(1.25)
            .with_heading(270.0),
        Position::new(1_710_072_002_000_000, -33.9, 151.2).with_altitude(12.0),
    ]
}

fn split(frame: &[u8]) -> (FrameHeader, AlignedVec) {
    let header = FrameHeader::decode(frame).unwrap();
    assert_eq!(header.body_len as usize, frame.len() - HEADER_LEN);
    (header, aligned(&frame[HEADER_LEN..]))
}

#[test]
fn batch_matches_the_documented_layout_byte_for_byte() {
    for positions in [sample_positions(), vec![sample_positions()[0]]] {
        let batch = Batch {
            journey: 0x0102_0304_0506_0708,
            positions: positions.clone(),
        };
        let encoded = encode_frame(FrameKind::Batch, 42, &batch);
        assert_eq!(encoded, hand_encoded_batch(42, batch.journey, &positions));
    }
}

#[test]
fn hand_encoded_empty_batch_decodes() {
    let frame = hand_encoded_batch(1, 9, &[]);
    let (header, body) = split(&frame);
    let batch = decode_body::<ArchivedBatch>(header.kind, &body).unwrap();
    assert_eq!(batch.journey.to_native(), 9);
    assert!(batch.positions.is_empty());
}

#[test]
fn batch_round_trips() {
    let batch = Batch {
        journey: 7,
        positions: sample_positions(),
    };
    let frame = encode_frame(FrameKind::Batch, 3, &batch);
    let (header, body) = split(&frame);
    assert_eq!(header.kind, FrameKind::Batch);
    assert_eq!(header.seq, 3);
    let archived = decode_body::<ArchivedBatch>(header.kind, &body).unwrap();
    let back: Vec<Position> = archived.positions.iter().map(|p| p.to_native()).collect();
    assert_eq!(back, batch.positions);
}

#[test]
fn ack_round_trips() {
    let refusals = [Refusal {
        index: 1,
        reason: 4,
        reserved: 0,
    }];
    let frame = crate::session::ack_stored(12, 2, 1, 0, &refusals);
    let (header, body) = split(&frame);
    assert_eq!((header.kind, header.seq), (FrameKind::Ack, 12));
    let ack = decode_ack(&body).unwrap();
    assert_eq!(ack.stored, 2);
    assert_eq!(ack.duplicates, 1);
    assert_eq!(ack.refusals, refusals);
}

#[test]
fn header_rejects_unknown_kind_flags_and_short_input() {
    let mut h = FrameHeader {
        body_len: 0,
        kind: FrameKind::Ping,
        seq: 0,
    }
    .encode();
    assert!(FrameHeader::decode(&h[..15]).is_err());
    h[5] = 1;
    assert_eq!(FrameHeader::decode(&h), Err(FrameError::NonZeroFlags(1)));
    h[5] = 0;
    h[4] = 200;
    assert_eq!(FrameHeader::decode(&h), Err(FrameError::UnknownKind(200)));
}

#[test]
fn truncated_or_lying_bodies_are_errors() {
    let frame = encode_frame(
        FrameKind::Batch,
        1,
        &Batch {
            journey: 1,
            positions: sample_positions(),
        },
    );
    let body = &frame[HEADER_LEN..];
    for cut in [0, 1, 8, 16, body.len() - 1] {
        let b = aligned(&body[..cut]);
        assert!(
            decode_body::<ArchivedBatch>(FrameKind::Batch, &b).is_err(),
            "cut at {cut}"
        );
    }
    // A length that points past the end.
    let mut lying = body.to_vec();
    let n = lying.len();
    lying[n - 4..].copy_from_slice(&1000u32.to_le_bytes());
    assert!(decode_body::<ArchivedBatch>(FrameKind::Batch, &aligned(&lying)).is_err());
}

/// Frames saved from wire version 1 (schemas/frames-v1/) must decode forever.
#[test]
fn frames_saved_from_version_1_still_decode() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/frames-v1");
    let read = |name: &str| {
        let text = std::fs::read_to_string(format!("{dir}/{name}.hex"))
            .unwrap_or_else(|e| panic!("{dir}/{name}.hex: {e}"));
        hex::decode(text.split_whitespace().collect::<String>()).unwrap()
    };

    let (h, body) = split(&read("batch"));
    assert_eq!((h.kind, h.seq), (FrameKind::Batch, 42));
    let batch = decode_body::<ArchivedBatch>(h.kind, &body).unwrap();
    assert_eq!(batch.journey.to_native(), 1_710_072_000_000_000);
    let back: Vec<Position> = batch.positions.iter().map(|p| p.to_native()).collect();
    assert_eq!(back, sample_positions());

    let (h, body) = split(&read("hello"));
    let hello = decode_body::<ArchivedHello>(h.kind, &body).unwrap();
    assert_eq!(hello.device_id.to_native(), 7);
    assert_eq!(hello.secret, [0xab; 32]);

    let (h, body) = split(&read("ack"));
    assert_eq!((h.kind, h.seq), (FrameKind::Ack, 42));
    let ack = decode_ack(&body).unwrap();
    assert_eq!(
        ack.refusals,
        vec![Refusal {
            index: 1,
            reason: 4,
            reserved: 0
        }]
    );

    let (h, body) = split(&read("journey-start"));
    let mark = decode_body::<ArchivedJourneyMark>(h.kind, &body).unwrap();
    assert_eq!(mark.journey.to_native(), 1_710_072_000_000_000);
}

/// Writes the golden frames; run once per wire version with JOURNEYD_BLESS=1.
#[test]
fn bless_frames_v1() {
    if std::env::var_os("JOURNEYD_BLESS").is_none() {
        return;
    }
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/frames-v1");
    std::fs::create_dir_all(dir).unwrap();
    let write = |name: &str, bytes: Vec<u8>| {
        let text: Vec<String> = bytes.chunks(16).map(hex::encode).collect();
        std::fs::write(format!("{dir}/{name}.hex"), text.join("\n") + "\n").unwrap();
    };
    let journey = 1_710_072_000_000_000;
    write(
        "batch",
        encode_frame(
            FrameKind::Batch,
            42,
            &Batch {
                journey,
                positions: sample_positions(),
            },
        ),
    );
    let hello = Hello {
        device_id: 7,
        secret: [0xab; 32],
        protocol_version: 1,
        reserved: 0,
    };
    write("hello", encode_frame(FrameKind::Hello, 0, &hello));
    write(
        "ack",
        crate::session::ack_stored(
            42,
            2,
            0,
            0,
            &[Refusal {
                index: 1,
                reason: 4,
                reserved: 0,
            }],
        ),
    );
    write(
        "journey-start",
        encode_frame(
            FrameKind::JourneyStart,
            41,
            &JourneyMark {
                journey,
                at_us: journey as i64,
            },
        ),
    );
}

proptest! {
    /// Whatever bytes arrive, decoding returns a value or an error, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = FrameHeader::decode(&bytes);
        let body = aligned(&bytes);
        let _ = decode_body::<ArchivedBatch>(FrameKind::Batch, &body);
        let _ = decode_body::<ArchivedHello>(FrameKind::Hello, &body);
        let _ = decode_body::<ArchivedEnrol>(FrameKind::Enrol, &body);
        let _ = decode_ack(&body);
    }

    #[test]
    fn batches_round_trip(
        journey in any::<u64>(),
        raw in proptest::collection::vec((any::<i64>(), any::<f64>(), any::<f64>(), any::<f32>(), any::<u32>()), 0..50),
    ) {
        let positions: Vec<Position> = raw.iter().map(|&(t, lat, lon, s, f)| Position {
            speed_mps: s, fields: f, ..Position::new(t, lat, lon)
        }).collect();
        let frame = encode_frame(FrameKind::Batch, 1, &Batch { journey, positions: positions.clone() });
        let (h, body) = split(&frame);
        let archived = decode_body::<ArchivedBatch>(h.kind, &body).unwrap();
        prop_assert_eq!(archived.journey.to_native(), journey);
        let back: Vec<Position> = archived.positions.iter().map(|p| p.to_native()).collect();
        prop_assert_eq!(back.len(), positions.len());
        for (a, b) in back.iter().zip(&positions) {
            prop_assert_eq!(a.fix_time_us, b.fix_time_us);
            prop_assert_eq!(a.lat.to_bits(), b.lat.to_bits());
            prop_assert_eq!(a.lon.to_bits(), b.lon.to_bits());
            prop_assert_eq!(a.speed_mps.to_bits(), b.speed_mps.to_bits());
            prop_assert_eq!(a.fields, b.fields);
        }
    }
}

#[test]
fn the_little_endian_form_is_the_archived_form() {
    for p in sample_positions() {
        let frame = encode_frame(
            FrameKind::Batch,
            1,
            &Batch {
                journey: 1,
                positions: vec![p],
            },
        );
        assert_eq!(&frame[HEADER_LEN..HEADER_LEN + 48], &p.to_le_bytes());
        assert_eq!(Position::from_le_bytes(&p.to_le_bytes()), p);
    }
}
