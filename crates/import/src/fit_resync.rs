//! Finding the message boundaries of a FIT file again after damage.
//!
//! FIT has no sync marker: each message's length comes from its definition, so one missing or
//! extra byte makes every later message misframed, and fitparser stops at the first header byte
//! that names no definition. Real files do this (a phone app that wrote one record a byte
//! short, a device that appended messages with a broken definition).
//!
//! What this module does: while reading, [`Framing`] keeps the raw bytes of the current
//! definition messages and of the developer-field messages, and the offsets of the last few
//! messages. A definition that cannot be genuine ([`definition_problem`]) counts as damage at
//! once, before it can spoil later messages. After damage, [`find`] tries the byte offsets from
//! just after the oldest of those recent messages onwards; at each offset whose first byte could
//! be a message header it replays the definitions into a fresh parser followed by the bytes from
//! that offset, and accepts the offset when the parse runs cleanly through the damage and
//! [`CLEAN_RUN`] messages past it (or to the clean end of the data section).
//! [`restart_buffer`] then builds the buffer to go on reading from: a made-up 12-byte header,
//! the replayed messages, and the rest of the file. The reader drops the positions it had read
//! from messages that overlap the restart point: they were misframed.
//!
//! TODO(fit-resync): records right after a restart that use compressed timestamp headers get
//! times relative to an unknown base until the next full timestamp; none of the test files do
//! this, so they are not treated specially.

use std::collections::VecDeque;

use fitparser::de::FitFileHeader;
use fitparser::de::{DecodeOption, FitObject, FitStreamProcessor};

/// Messages that must frame cleanly in a row for an offset to count as a boundary.
const CLEAN_RUN: usize = 32;
/// Bytes tried after the damage before giving up.
const MAX_SCAN: usize = 64 * 1024;
/// Bytes handed to a trial parse past the damage.
const WINDOW: usize = 16 * 1024;
/// Messages before the damage that are suspect: misframing often shows only a few messages
/// after it began.
const SUSPECT: usize = 8;

/// What the reader knows about message framing at the current point of the file.
#[derive(Debug, Default)]
pub(crate) struct Framing {
    /// Raw definition message per local message number.
    definitions: [Option<Vec<u8>>; 16],
    /// Raw developer_data_id and field_description messages, each after its definition.
    developer: Vec<u8>,
    /// Original offset where the data section of the current file ends.
    data_end: usize,
    /// Between a header and its CRC.
    in_data: bool,
    /// Original offsets of the last messages that framed, oldest first.
    recent: VecDeque<usize>,
}

impl Framing {
    pub(crate) fn expects_header(&self) -> bool {
        !self.in_data
    }

    /// Between a header and its CRC.
    pub(crate) fn in_data(&self) -> bool {
        self.in_data
    }

    /// True at the end of the data section, where the data CRC is.
    pub(crate) fn at_crc(&self, at: usize) -> bool {
        self.in_data && at == self.data_end
    }

    pub(crate) fn on_header(&mut self, genuine: bool, at: usize, header: &FitFileHeader) {
        self.in_data = true;
        if genuine {
            self.data_end = at + usize::from(header.header_size()) + header.data_size() as usize;
            self.definitions = Default::default();
            self.developer.clear();
        }
    }

    pub(crate) fn on_crc(&mut self) {
        self.in_data = false;
    }

    pub(crate) fn on_definition(&mut self, genuine: bool, at: usize, raw: &[u8]) {
        self.on_data(at);
        if genuine && !raw.is_empty() {
            self.definitions[usize::from(raw[0] & 0x0f)] = Some(raw.to_vec());
        }
    }

    pub(crate) fn on_data(&mut self, at: usize) {
        if self.recent.len() == SUSPECT {
            self.recent.pop_front();
        }
        self.recent.push_back(at);
    }

    pub(crate) fn keep_developer_message(&mut self, raw: &[u8]) {
        let Some(&header) = raw.first() else { return };
        if let Some(definition) = &self.definitions[local_number(header)] {
            self.developer.extend_from_slice(definition);
            self.developer.extend_from_slice(raw);
        }
    }

    /// The messages to replay before restarting: developer fields, then current definitions.
    fn replay(&self) -> Vec<u8> {
        let mut out = self.developer.clone();
        for definition in self.definitions.iter().flatten() {
            out.extend_from_slice(definition);
        }
        out
    }
}

fn local_number(header: u8) -> usize {
    if header & 0x80 != 0 {
        usize::from((header >> 5) & 0x03)
    } else {
        usize::from(header & 0x0f)
    }
}

/// Why `bytes` does not start with a FIT file header fitparser can safely read, if it does not.
pub(crate) fn header_problem(bytes: &[u8]) -> Option<String> {
    if bytes.len() < 12 {
        return Some(format!(
            "{} bytes where a fit file header (12 or 14 bytes) should start",
            bytes.len()
        ));
    }
    if &bytes[8..12] != b".FIT" {
        return Some("no fit file header here (no \".FIT\" signature)".to_string());
    }
    let size = usize::from(bytes[0]);
    if size < 12 {
        return Some(format!(
            "fit file header size {size} is below the minimum of 12"
        ));
    }
    (bytes.len() < size).then(|| "the file ends inside its fit file header".to_string())
}

/// Why a definition message cannot be genuine, if it cannot: an architecture byte other than 0
/// or 1, or a base type FIT does not have. Misframed bytes read as a definition usually fail
/// this, and catching them keeps garbage definitions out of the replay.
pub(crate) fn definition_problem(raw: &[u8]) -> Option<String> {
    let (Some(&architecture), Some(&count)) = (raw.get(2), raw.get(5)) else {
        return Some("definition message too short".to_string());
    };
    if architecture > 1 {
        return Some(format!(
            "definition message with architecture byte {architecture}"
        ));
    }
    let Some(fields) = raw.get(6..6 + 3 * usize::from(count)) else {
        return Some("definition message too short".to_string());
    };
    fields.chunks_exact(3).find_map(|field| {
        let base_type = field[2];
        (base_type & 0x60 != 0 || base_type & 0x1f > 16)
            .then(|| format!("definition message with unknown base type {base_type:#04x}"))
    })
}

/// The first offset from which messages frame cleanly through and past the damage at `at`.
///
/// The search starts just after the oldest of the last few messages that framed, because a
/// message one byte short is read "successfully" and the damage shows only later. An offset is
/// accepted when a trial parse from it reaches [`CLEAN_RUN`] messages at or after `at` (or the
/// clean end of the data section) without an error or an impossible definition; offsets before
/// the damage that are fine by themselves run into it again and fail.
pub(crate) fn find(bytes: &[u8], framing: &Framing, at: usize) -> Option<usize> {
    let end = framing.data_end.min(bytes.len());
    if !framing.in_data || at >= end {
        return None;
    }
    let replay = framing.replay();
    let from = framing.recent.front().map_or(at, |s| s + 1);
    let to = at.saturating_add(MAX_SCAN).min(end);
    let window_end = at.saturating_add(WINDOW).min(end);
    (from..to).filter(|&s| s != at).find(|&s| {
        could_start_message(bytes[s], &framing.definitions) && {
            let window_end = window_end.max((s + WINDOW).min(end));
            let trial = Trial {
                replay: &replay,
                body: &bytes[s..window_end],
                count_from: at.saturating_sub(s),
                reaches_end: window_end == framing.data_end,
            };
            trial.frames_cleanly()
        }
    })
}

/// Stricter than fitparser, for trial parses only: reserved header bits clear, and a
/// definition that could be genuine.
fn plausible_message(bytes: &[u8]) -> bool {
    match bytes[0] {
        h if h & 0x80 != 0 => true,
        h if h & 0x40 != 0 => h & 0x10 == 0 && definition_problem(bytes).is_none(),
        h => h & 0x30 == 0,
    }
}

/// Cheap test of a byte as a message header, before a trial parse.
fn could_start_message(header: u8, definitions: &[Option<Vec<u8>>; 16]) -> bool {
    if header & 0x80 != 0 {
        definitions[local_number(header)].is_some()
    } else if header & 0x40 != 0 {
        header & 0x10 == 0
    } else {
        header & 0x30 == 0 && definitions[local_number(header)].is_some()
    }
}

/// A trial parse of `body` after the replayed definitions.
struct Trial<'a> {
    replay: &'a [u8],
    body: &'a [u8],
    /// Messages starting this many bytes into `body` or later count towards [`CLEAN_RUN`].
    count_from: usize,
    /// `body` ends where the data section ends.
    reaches_end: bool,
}

impl Trial<'_> {
    fn frames_cleanly(&self) -> bool {
        let mut buf = synthetic_header(self.replay.len() + self.body.len());
        buf.extend_from_slice(self.replay);
        let body_start = buf.len();
        let count_from = body_start + self.count_from;
        buf.extend_from_slice(self.body);
        buf.extend_from_slice(&[0, 0]);
        let mut processor = FitStreamProcessor::new();
        processor.add_option(DecodeOption::SkipDataCrcValidation);
        let (mut pos, mut clean) = (0, 0);
        while pos < buf.len() {
            let start = pos;
            if start > 0 && start + 2 < buf.len() && !plausible_message(&buf[start..]) {
                return false;
            }
            let Ok((rest, object)) = processor.deserialize_next(&buf[start..]) else {
                return false;
            };
            pos = buf.len() - rest.len();
            match object {
                FitObject::Crc(_) => return self.reaches_end,
                FitObject::DataMessage(message) => {
                    if processor.decode_message(message).is_err() {
                        return false;
                    }
                }
                FitObject::DefinitionMessage(_) => {}
                FitObject::Header(_) => continue,
            }
            clean += usize::from(start >= count_from);
            if clean >= CLEAN_RUN {
                return true;
            }
        }
        false
    }
}

/// The buffer to go on reading from after resuming at `resume`, and the length of its made-up
/// start.
pub(crate) fn restart_buffer(bytes: &[u8], framing: &Framing, resume: usize) -> (Vec<u8>, usize) {
    let replay = framing.replay();
    let body = framing.data_end.saturating_sub(resume);
    let mut buf = synthetic_header(replay.len() + body);
    buf.extend_from_slice(&replay);
    let prefix = buf.len();
    buf.extend_from_slice(&bytes[resume..]);
    (buf, prefix)
}

/// A 12-byte FIT file header (protocol 1.0, profile 21.00, no header CRC).
fn synthetic_header(data_size: usize) -> Vec<u8> {
    let mut header = vec![12, 0x10];
    header.extend_from_slice(&2100u16.to_le_bytes());
    header.extend_from_slice(&u32::try_from(data_size).unwrap_or(u32::MAX).to_le_bytes());
    header.extend_from_slice(b".FIT");
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_problems_are_named() {
        assert!(header_problem(b"short").is_some_and(|p| p.contains("5 bytes")));
        let mut h = synthetic_header(0);
        assert_eq!(header_problem(&h), None);
        h[0] = 3;
        assert!(header_problem(&h).is_some_and(|p| p.contains("size 3")));
        h[0] = 14;
        assert!(header_problem(&h).is_some_and(|p| p.contains("ends inside")));
        h[8] = b'X';
        assert!(header_problem(&h).is_some_and(|p| p.contains(".FIT")));
    }

    #[test]
    fn impossible_definitions() {
        let good = [0x40, 0, 0, 20, 0, 2, 253, 4, 0x86, 0, 4, 0x85];
        assert_eq!(definition_problem(&good), None);
        let mut bad = good;
        bad[2] = 229;
        assert!(definition_problem(&bad).is_some_and(|p| p.contains("architecture byte 229")));
        let mut bad = good;
        bad[8] = 0x3f;
        assert!(definition_problem(&bad).is_some_and(|p| p.contains("base type 0x3f")));
        assert!(definition_problem(&good[..3]).is_some());
    }

    #[test]
    fn header_bytes_classify() {
        let mut defs: [Option<Vec<u8>>; 16] = Default::default();
        defs[1] = Some(vec![0x41]);
        assert!(could_start_message(0x01, &defs));
        assert!(!could_start_message(0x02, &defs));
        assert!(could_start_message(0x45, &defs));
        assert!(could_start_message(0xa0, &defs)); // compressed, local 1
        assert!(!could_start_message(0xc0, &defs)); // compressed, local 2
        assert!(!could_start_message(0x21, &defs)); // reserved bit set
    }
}
