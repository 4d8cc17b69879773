//! A chunk: the positions of one stored batch, the value under a `chunks` key, sealed with the
//! tenant's data key.
//!
//! ```text
//! offset  size  field
//!      0     1  format       2
//!      1     3  reserved     zero
//!      4     4  count        u32 LE, positions sealed inside
//!      8    24  nonce        random, XChaCha20-Poly1305
//!     32     …  sealed       received_us i64 LE (when the server stored the batch), then the
//!                            positions in the wire layout of journeyd-wire's Position (48 bytes
//!                            each, little-endian), sorted by fix time, `quality` set by the server
//!    end    16  tag          Poly1305; the associated data is the chunk's RocksDB key
//! ```
//! The count stays outside the seal so that statistics need no key; every coordinate and time is
//! inside. The `chunks` column family is not compressed: sealed bytes do not shrink.

use journeyd_keys::ChunkCipher;
use journeyd_wire::Position;

use crate::StoreError;

pub const FORMAT: u8 = 2;
const HEADER: usize = 8;
const POSITION: usize = journeyd_wire::position::ARCHIVED_POSITION_SIZE;

/// Encodes positions into a sealed chunk stored under `key`.
pub fn encode(
    cipher: &ChunkCipher,
    key: &[u8],
    positions: &[Position],
    received_us: i64,
    out: &mut Vec<u8>,
) -> Result<(), StoreError> {
    out.clear();
    out.reserve(HEADER + 8 + POSITION * positions.len() + ChunkCipher::OVERHEAD);
    out.extend_from_slice(&[FORMAT, 0, 0, 0]);
    out.extend_from_slice(&(positions.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; ChunkCipher::NONCE_LEN]);
    out.extend_from_slice(&received_us.to_le_bytes());
    for p in positions {
        out.extend_from_slice(&p.to_le_bytes());
    }
    cipher.seal_in_place(key, out, HEADER)?;
    Ok(())
}

/// A decoded chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub received_us: i64,
    pub positions: Vec<Position>,
}

/// Opens a chunk and checks its layout; `plain` is scratch space reused between calls.
fn open<'a>(
    cipher: &ChunkCipher,
    key: &[u8],
    bytes: &[u8],
    plain: &'a mut Vec<u8>,
) -> Result<(i64, &'a [u8]), StoreError> {
    let count = count(key, bytes)?;
    cipher
        .open_into(key, &bytes[HEADER..], plain, "chunk")
        .map_err(|e| StoreError::corrupt("chunk", key, e.to_string()))?;
    if plain.len() != 8 + count * POSITION {
        return Err(StoreError::corrupt(
            "chunk",
            key,
            format!(
                "{count} positions need {} bytes, found {}",
                8 + count * POSITION,
                plain.len()
            ),
        ));
    }
    let received_us = i64::from_le_bytes(plain[..8].try_into().expect("8-byte slice"));
    Ok((received_us, &plain[8..]))
}

/// Decodes a sealed chunk, checking its format, seal and length.
pub fn decode(cipher: &ChunkCipher, key: &[u8], bytes: &[u8]) -> Result<Chunk, StoreError> {
    let mut plain = Vec::new();
    let (received_us, body) = open(cipher, key, bytes, &mut plain)?;
    Ok(Chunk {
        received_us,
        positions: body.chunks_exact(POSITION).map(decode_position).collect(),
    })
}

/// Only the fix times of a chunk, for duplicate checks.
pub fn fix_times(cipher: &ChunkCipher, key: &[u8], bytes: &[u8]) -> Result<Vec<i64>, StoreError> {
    let mut plain = Vec::new();
    let (_, body) = open(cipher, key, bytes, &mut plain)?;
    Ok(body
        .chunks_exact(POSITION)
        .map(|p| i64::from_le_bytes(p[0..8].try_into().expect("8-byte slice")))
        .collect())
}

/// Number of positions in a chunk, from its header (no key needed).
pub fn count(key: &[u8], bytes: &[u8]) -> Result<usize, StoreError> {
    if bytes.len() < HEADER + ChunkCipher::OVERHEAD + 8 {
        return Err(StoreError::corrupt(
            "chunk",
            key,
            format!("{} bytes is shorter than a sealed chunk", bytes.len()),
        ));
    }
    if bytes[0] != FORMAT {
        return Err(StoreError::corrupt(
            "chunk",
            key,
            format!("unknown chunk format {}", bytes[0]),
        ));
    }
    Ok(u32::from_le_bytes(bytes[4..8].try_into().expect("4-byte slice")) as usize)
}

fn decode_position(b: &[u8]) -> Position {
    let bytes: &[u8; POSITION] = b.try_into().expect("chunks_exact yields 48-byte slices");
    Position::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use journeyd_keys::DataKey;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn chunks_round_trip(raw in proptest::collection::vec((any::<i64>(), -90.0f64..90.0, -180.0f64..180.0, any::<u32>()), 0..100), at in any::<i64>()) {
            let cipher = DataKey::generate().unwrap().chunk_cipher();
            let positions: Vec<Position> = raw.iter().map(|&(t, lat, lon, q)| Position { quality: q, ..Position::new(t, lat, lon).with_speed(2.0) }).collect();
            let mut buf = Vec::new();
            encode(&cipher, b"k", &positions, at, &mut buf).unwrap();
            let chunk = decode(&cipher, b"k", &buf).unwrap();
            prop_assert_eq!(chunk.received_us, at);
            prop_assert_eq!(&chunk.positions, &positions);
            prop_assert_eq!(count(b"k", &buf).unwrap(), positions.len());
            let times = fix_times(&cipher, b"k", &buf).unwrap();
            prop_assert_eq!(times, positions.iter().map(|p| p.fix_time_us).collect::<Vec<_>>());
            // Under another key, or moved to another RocksDB key, it does not open.
            prop_assert!(decode(&cipher, b"other", &buf).is_err());
            let other = DataKey::generate().unwrap().chunk_cipher();
            prop_assert!(decode(&other, b"k", &buf).is_err());
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let cipher = DataKey::generate().unwrap().chunk_cipher();
            let _ = decode(&cipher, b"k", &bytes);
            let _ = count(b"k", &bytes);
        }
    }

    #[test]
    fn no_coordinate_is_stored_in_clear() {
        let cipher = DataKey::generate().unwrap().chunk_cipher();
        let p = Position::new(1_700_000_000_000_000, 51.501_234, -0.141_234);
        let mut buf = Vec::new();
        encode(&cipher, b"k", &[p], 5, &mut buf).unwrap();
        let clear = p.to_le_bytes();
        assert!(
            !buf.windows(8).any(|w| w == &clear[8..16]),
            "latitude in clear"
        );
        assert!(
            !buf.windows(8).any(|w| w == &clear[0..8]),
            "fix time in clear"
        );
    }
}
