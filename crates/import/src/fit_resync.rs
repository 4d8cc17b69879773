//! Finding the message boundaries of a FIT file again after damage.
//!
//! FIT has no sync marker: each message's length comes from its definition, so one missing or
//! extra byte makes every later message misframed, and fitparser stops at the first header byte
//! that names no definition. Real files do this (a phone app that wrote one record a byte
//! short, a device that appended messages with a broken definition).
//!
//! What this module does: while reading, [`Framing`] keeps the raw bytes of the current
//! definition messages and of the developer-field messages. After damage, [`find`] tries the
//! byte offsets from just after the last good message onwards; at each offset whose first byte
//! could be a message header it replays the definitions into a fresh parser followed by the bytes
//! from that offset, and accepts the offset when [`CLEAN_RUN`] messages in a row frame and decode
//! cleanly (or the data section ends cleanly). [`restart_buffer`] then builds the buffer to go on
//! reading from: a made-up 12-byte header, the replayed messages, and the rest of the file.
//!
//! TODO(fit-resync): records right after a restart that use compressed timestamp headers get
//! times relative to an unknown base until the next full timestamp; none of the test files do
//! this, so they are not treated specially.

use fitparser::de::FitFileHeader;
use fitparser::de::{DecodeOption, FitObject, FitStreamProcessor};

/// Messages that must frame cleanly in a row for an offset to count as a boundary.
const CLEAN_RUN: usize = 32;
/// Bytes tried after the damage before giving up.
const MAX_SCAN: usize = 64 * 1024;
/// Bytes handed to a trial parse.
const WINDOW: usize = 16 * 1024;

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
    /// Original offset of the last message that framed cleanly.
    last_start: Option<usize>,
}

impl Framing {
    pub(crate) fn expects_header(&self) -> bool {
        !self.in_data
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
        self.last_start = Some(at);
        if genuine && !raw.is_empty() {
            self.definitions[usize::from(raw[0] & 0x0f)] = Some(raw.to_vec());
        }
    }

    pub(crate) fn on_data(&mut self, at: usize) {
        self.last_start = Some(at);
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

/// The first offset after the damage at `at` where messages frame cleanly again.
pub(crate) fn find(bytes: &[u8], framing: &Framing, at: usize) -> Option<usize> {
    let end = framing.data_end.min(bytes.len());
    if !framing.in_data || at >= end {
        return None;
    }
    let replay = framing.replay();
    let from = framing.last_start.map_or(at, |s| s + 1);
    let to = at.saturating_add(MAX_SCAN).min(end);
    (from..to).filter(|&s| s != at).find(|&s| {
        could_start_message(bytes[s], &framing.definitions) && {
            let window_end = (s + WINDOW).min(end);
            frames_cleanly(
                &replay,
                &bytes[s..window_end],
                window_end == framing.data_end,
            )
        }
    })
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

/// True when `body`, after the replayed definitions, starts with [`CLEAN_RUN`] messages that
/// frame and decode, or frames cleanly up to the end of the data section (`reaches_end`).
fn frames_cleanly(replay: &[u8], body: &[u8], reaches_end: bool) -> bool {
    let mut buf = synthetic_header(replay.len() + body.len());
    buf.extend_from_slice(replay);
    let body_start = buf.len();
    buf.extend_from_slice(body);
    buf.extend_from_slice(&[0, 0]);
    let mut processor = FitStreamProcessor::new();
    processor.add_option(DecodeOption::SkipDataCrcValidation);
    let (mut pos, mut clean) = (0, 0);
    while pos < buf.len() {
        let Ok((rest, object)) = processor.deserialize_next(&buf[pos..]) else {
            return false;
        };
        let start = pos;
        pos = buf.len() - rest.len();
        match object {
            FitObject::Crc(_) => return reaches_end,
            FitObject::DataMessage(message) => {
                if processor.decode_message(message).is_err() {
                    return false;
                }
                clean += usize::from(start >= body_start);
            }
            FitObject::DefinitionMessage(_) => clean += usize::from(start >= body_start),
            FitObject::Header(_) => {}
        }
        if clean >= CLEAN_RUN {
            return true;
        }
    }
    false
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
