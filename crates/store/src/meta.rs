//! What the store knows about a journey without reading its positions.

use crate::StoreError;

const LEN: usize = 64;
const NONE: i64 = i64::MIN;

/// A journey's summary, updated in the same write as each batch of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JourneyMeta {
    /// When the device said the journey started, if it did.
    pub started_us: Option<i64>,
    /// When the device said the journey ended, if it did.
    pub ended_us: Option<i64>,
    /// Earliest and latest fix time stored (any order of arrival).
    pub first_fix_us: Option<i64>,
    pub last_fix_us: Option<i64>,
    pub positions: u64,
    pub batches: u32,
    pub flagged: u32,
    /// When the server last stored anything of this journey.
    pub last_received_us: i64,
}

impl JourneyMeta {
    pub fn encode(&self) -> [u8; LEN] {
        let mut out = [0u8; LEN];
        out[0] = 1;
        let opt = |v: Option<i64>| v.unwrap_or(NONE).to_le_bytes();
        out[8..16].copy_from_slice(&opt(self.started_us));
        out[16..24].copy_from_slice(&opt(self.ended_us));
        out[24..32].copy_from_slice(&opt(self.first_fix_us));
        out[32..40].copy_from_slice(&opt(self.last_fix_us));
        out[40..48].copy_from_slice(&self.positions.to_le_bytes());
        out[48..52].copy_from_slice(&self.batches.to_le_bytes());
        out[52..56].copy_from_slice(&self.flagged.to_le_bytes());
        out[56..64].copy_from_slice(&self.last_received_us.to_le_bytes());
        out
    }

    pub fn decode(key: &[u8], b: &[u8]) -> Result<Self, StoreError> {
        if b.len() != LEN || b[0] != 1 {
            return Err(StoreError::corrupt(
                "journey meta",
                key,
                format!("{} bytes, format {:?}", b.len(), b.first()),
            ));
        }
        let i = |at: usize| i64::from_le_bytes(b[at..at + 8].try_into().expect("8-byte slice"));
        let u = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4-byte slice"));
        let opt = |at: usize| Some(i(at)).filter(|v| *v != NONE);
        Ok(Self {
            started_us: opt(8),
            ended_us: opt(16),
            first_fix_us: opt(24),
            last_fix_us: opt(32),
            positions: i(40) as u64,
            batches: u(48),
            flagged: u(52),
            last_received_us: i(56),
        })
    }

    /// Whether a fix time lies within the stored fixes' span, so that it may already be stored.
    pub fn may_hold(&self, fix_us: i64) -> bool {
        matches!((self.first_fix_us, self.last_fix_us), (Some(a), Some(b)) if a <= fix_us && fix_us <= b)
    }

    /// Adds a stored batch's fix-time span and counts.
    pub fn add_batch(
        &mut self,
        first: i64,
        last: i64,
        positions: u64,
        flagged: u32,
        received_us: i64,
    ) {
        self.first_fix_us = Some(self.first_fix_us.map_or(first, |v| v.min(first)));
        self.last_fix_us = Some(self.last_fix_us.map_or(last, |v| v.max(last)));
        self.positions += positions;
        self.batches += 1;
        self.flagged += flagged;
        self.last_received_us = self.last_received_us.max(received_us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips() {
        let mut m = JourneyMeta {
            started_us: Some(5),
            ..Default::default()
        };
        m.add_batch(10, 20, 3, 1, 99);
        m.add_batch(2, 8, 1, 0, 50);
        let back = JourneyMeta::decode(b"k", &m.encode()).unwrap();
        assert_eq!(back, m);
        assert_eq!(
            (
                back.first_fix_us,
                back.last_fix_us,
                back.positions,
                back.batches
            ),
            (Some(2), Some(20), 4, 2)
        );
        assert!(JourneyMeta::decode(b"k", &[0; 3]).is_err());
    }
}
