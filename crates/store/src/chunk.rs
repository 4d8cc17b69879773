//! A chunk: the positions of one stored batch, the value under a `chunks` key.
//!
//! ```text
//! offset  size  field
//!      0     1  format       1
//!      1     3  reserved     zero
//!      4     4  count        u32 LE, positions that follow
//!      8     8  received_us  i64 LE, when the server stored the batch
//!     16  48·n  positions    the wire layout of journeyd-wire's Position (little-endian,
//!                            48 bytes each), sorted by fix time, `quality` set by the server
//! ```
//! RocksDB compresses chunks with LZ4 below the memtable.
// TODO(encryption): seal chunks with the tenant's data key (AES-256-GCM, fresh nonce per chunk),
// which the archive issue brings together with per-tenant key management.

use journeyd_wire::Position;

use crate::StoreError;

pub const FORMAT: u8 = 1;
const HEADER: usize = 16;
const POSITION: usize = journeyd_wire::position::ARCHIVED_POSITION_SIZE;

/// Encodes positions into a chunk.
pub fn encode(positions: &[Position], received_us: i64, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(HEADER + POSITION * positions.len());
    out.extend_from_slice(&[FORMAT, 0, 0, 0]);
    out.extend_from_slice(&(positions.len() as u32).to_le_bytes());
    out.extend_from_slice(&received_us.to_le_bytes());
    for p in positions {
        out.extend_from_slice(&p.to_le_bytes());
    }
}

/// A decoded chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub received_us: i64,
    pub positions: Vec<Position>,
}

/// Decodes a chunk, checking its format and length.
pub fn decode(key: &[u8], bytes: &[u8]) -> Result<Chunk, StoreError> {
    let corrupt = |detail: String| StoreError::corrupt("chunk", key, detail);
    if bytes.len() < HEADER {
        return Err(corrupt(format!(
            "{} bytes is shorter than the header",
            bytes.len()
        )));
    }
    if bytes[0] != FORMAT {
        return Err(corrupt(format!("unknown chunk format {}", bytes[0])));
    }
    let count = u32::from_le_bytes(bytes[4..8].try_into().expect("4-byte slice")) as usize;
    let received_us = i64::from_le_bytes(bytes[8..16].try_into().expect("8-byte slice"));
    let body = &bytes[HEADER..];
    if body.len() != count * POSITION {
        return Err(corrupt(format!(
            "{count} positions need {} bytes, found {}",
            count * POSITION,
            body.len()
        )));
    }
    let positions = body.chunks_exact(POSITION).map(decode_position).collect();
    Ok(Chunk {
        received_us,
        positions,
    })
}

/// Only the fix times of a chunk, for duplicate checks.
pub fn fix_times<'a>(
    key: &[u8],
    bytes: &'a [u8],
) -> Result<impl Iterator<Item = i64> + 'a, StoreError> {
    decode_header_len(key, bytes)?;
    Ok(bytes[HEADER..]
        .chunks_exact(POSITION)
        .map(|p| i64::from_le_bytes(p[0..8].try_into().expect("8-byte slice"))))
}

fn decode_header_len(key: &[u8], bytes: &[u8]) -> Result<usize, StoreError> {
    if bytes.len() < HEADER || bytes[0] != FORMAT || (bytes.len() - HEADER) % POSITION != 0 {
        return Err(StoreError::corrupt("chunk", key, "bad header or length"));
    }
    Ok((bytes.len() - HEADER) / POSITION)
}

/// Number of positions in a chunk, from its header.
pub fn count(key: &[u8], bytes: &[u8]) -> Result<usize, StoreError> {
    decode_header_len(key, bytes)
}

fn decode_position(b: &[u8]) -> Position {
    let bytes: &[u8; POSITION] = b.try_into().expect("chunks_exact yields 48-byte slices");
    Position::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn chunks_round_trip(raw in proptest::collection::vec((any::<i64>(), -90.0f64..90.0, -180.0f64..180.0, any::<u32>()), 0..100), at in any::<i64>()) {
            let positions: Vec<Position> = raw.iter().map(|&(t, lat, lon, q)| Position { quality: q, ..Position::new(t, lat, lon).with_speed(2.0) }).collect();
            let mut buf = Vec::new();
            encode(&positions, at, &mut buf);
            let chunk = decode(b"k", &buf).unwrap();
            prop_assert_eq!(chunk.received_us, at);
            prop_assert_eq!(chunk.positions, positions);
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(b"k", &bytes);
            let _ = count(b"k", &bytes);
        }
    }
}
