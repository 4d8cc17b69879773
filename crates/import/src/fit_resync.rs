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
//! just after the oldest of those recent messages onwards (up to [`MAX_SCAN`] bytes): a cheap walk
//! through message lengths first, then, where that frames, a real parse that replays the
//! definitions into a fresh fitparser followed by the bytes from that offset. It accepts the
//! first offset whose messages run cleanly through the damage and [`CLEAN_RUN`] messages past
//! it (or to the exact end of the data section).
//! [`restart_buffer`] then builds the buffer to go on reading from: a made-up 12-byte header,
//! the replayed messages, and the rest of the file. The reader drops the positions it had read
//! from messages that overlap the restart point: they were misframed.
//!
//! TODO(fit-resync): records right after a restart that use compressed timestamp headers get
//! times relative to an unknown base until the next full timestamp; none of the test files do
//! this, so they are not treated specially.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};

use fitparser::de::FitFileHeader;
use fitparser::de::{DecodeOption, FitObject, FitStreamProcessor};

/// Messages that must frame cleanly in a row for an offset to count as a boundary.
const CLEAN_RUN: usize = 32;
/// Bytes searched after the damage before giving up on the rest of the file.
const MAX_SCAN: usize = 1 << 20;
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

    /// True for an offset beyond the end of the data section while still inside it: the last
    /// message overran the section.
    pub(crate) fn past_data_end(&self, at: usize) -> bool {
        self.in_data && at > self.data_end
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

    /// The data message size per local message number, from the current definitions.
    fn message_sizes(&self) -> [Option<usize>; 16] {
        let mut sizes = [None; 16];
        for (size, definition) in sizes.iter_mut().zip(&self.definitions) {
            *size = definition
                .as_deref()
                .and_then(definition_lengths)
                .map(|(_, s)| s);
        }
        sizes
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

/// Runs a call into fitparser; `None` if it panicked.
pub(crate) fn guarded<T>(call: impl FnOnce() -> T) -> Option<T> {
    catch_unwind(AssertUnwindSafe(call)).ok()
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
/// message one byte short is read "successfully" and the damage shows only later, and goes on
/// for [`MAX_SCAN`] bytes or to the end of the data section. Each offset is first walked cheaply
/// through the message lengths the definitions give ([`clean_run_end`]); only an offset that
/// frames [`CLEAN_RUN`] messages at or after `at` (or reaches the end of the data section
/// exactly) is then parsed and decoded by fitparser. Offsets before the damage that are fine by
/// themselves run into it again and fail.
pub(crate) fn find(bytes: &[u8], framing: &Framing, at: usize) -> Option<usize> {
    let end = framing.data_end.min(bytes.len());
    if !framing.in_data || at >= end {
        return None;
    }
    let replay = framing.replay();
    let sizes = framing.message_sizes();
    let from = framing.recent.front().map_or(at, |s| s + 1);
    let to = at.saturating_add(MAX_SCAN).min(end);
    (from..to).filter(|&s| s != at).find(|&s| {
        clean_run_end(&bytes[..end], s, at, sizes).is_some_and(|run_end| {
            let trial = Trial {
                replay: &replay,
                body: &bytes[s..run_end],
            };
            trial.frames_cleanly()
        })
    })
}

/// Where a run of messages from `start` ends once [`CLEAN_RUN`] of them started at or after
/// `count_from`, or at the exact end of `data`; `None` if a header is impossible or a message
/// overruns the data. Uses only header bytes and message lengths: cheap enough for every
/// offset of a file.
fn clean_run_end(
    data: &[u8],
    start: usize,
    count_from: usize,
    mut sizes: [Option<usize>; 16],
) -> Option<usize> {
    let (mut pos, mut clean) = (start, 0);
    while clean < CLEAN_RUN {
        if pos == data.len() {
            return Some(pos);
        }
        let header = *data.get(pos)?;
        let length = if header & 0x80 != 0 {
            1 + sizes[local_number(header)]?
        } else if header & 0x40 != 0 {
            let message = &data[pos..];
            if header & 0x10 != 0 || definition_problem(message).is_some() {
                return None;
            }
            let (length, size) = definition_lengths(message)?;
            sizes[local_number(header)] = Some(size);
            length
        } else if header & 0x30 == 0 {
            1 + sizes[local_number(header)]?
        } else {
            return None;
        };
        clean += usize::from(pos >= count_from);
        pos += length;
        if pos > data.len() {
            return None;
        }
    }
    Some(pos)
}

/// The length of a definition message and the size of the data messages it defines.
fn definition_lengths(raw: &[u8]) -> Option<(usize, usize)> {
    let count = usize::from(*raw.get(5)?);
    let fields = raw.get(6..6 + 3 * count)?;
    let mut length = 6 + 3 * count;
    let mut size: usize = fields.chunks_exact(3).map(|f| usize::from(f[1])).sum();
    if raw[0] & 0x20 != 0 {
        let developer_count = usize::from(*raw.get(length)?);
        let developer = raw.get(length + 1..length + 1 + 3 * developer_count)?;
        size += developer
            .chunks_exact(3)
            .map(|f| usize::from(f[1]))
            .sum::<usize>();
        length += 1 + 3 * developer_count;
    }
    Some((length, size))
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

/// A trial parse by fitparser of `body` (which [`clean_run_end`] found to frame) after the
/// replayed definitions: every message must parse and decode.
struct Trial<'a> {
    replay: &'a [u8],
    body: &'a [u8],
}

impl Trial<'_> {
    fn frames_cleanly(&self) -> bool {
        let mut buf = synthetic_header(self.replay.len() + self.body.len());
        buf.extend_from_slice(self.replay);
        buf.extend_from_slice(self.body);
        buf.extend_from_slice(&[0, 0]);
        let mut processor = FitStreamProcessor::new();
        processor.add_option(DecodeOption::SkipDataCrcValidation);
        let mut pos = 0;
        while pos < buf.len() {
            let start = pos;
            if start + 2 > buf.len() {
                // Past the data section: fitparser framed differently from the walk.
                return false;
            }
            if start > 0 && start + 2 < buf.len() && !plausible_message(&buf[start..]) {
                return false;
            }
            let Some(Ok((rest, object))) = guarded(|| processor.deserialize_next(&buf[start..]))
            else {
                return false;
            };
            pos = buf.len() - rest.len();
            match object {
                FitObject::Crc(_) => return true,
                FitObject::DataMessage(message) => {
                    if guarded(|| processor.decode_message(message)).is_none_or(|r| r.is_err()) {
                        return false;
                    }
                }
                FitObject::DefinitionMessage(_) | FitObject::Header(_) => {}
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
    fn cheap_framing_walk() {
        let mut sizes = [None; 16];
        sizes[1] = Some(2);
        // Three data messages of local 1 and a compressed one, then the end of the data.
        let data = [0x01, 9, 9, 0x01, 9, 9, 0xa0, 9, 9, 0x01, 9, 9];
        assert_eq!(clean_run_end(&data, 0, 0, sizes), Some(12));
        assert_eq!(clean_run_end(&data, 1, 0, sizes), None);
        // A definition of local 2 (one 4-byte field) and a message that uses it.
        let data = [0x42, 0, 0, 20, 0, 1, 253, 4, 0x86, 0x02, 1, 2, 3, 4];
        assert_eq!(clean_run_end(&data, 0, 0, [None; 16]), Some(14));
        // Reserved bits set; a message running past the end.
        assert_eq!(clean_run_end(&[0x21, 9, 9], 0, 0, sizes), None);
        assert_eq!(clean_run_end(&[0x01, 9], 0, 0, sizes), None);
    }
}
