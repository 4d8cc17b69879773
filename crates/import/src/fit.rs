//! FIT activity files through fitparser's streaming processor.
//!
//! Every `record` message with a position becomes a fix: `position_lat`/`position_long` in
//! semicircles (degrees = v × 180 / 2^31), `timestamp`, `enhanced_altitude` else `altitude`,
//! `enhanced_speed` else `speed`, and `gps_accuracy` as the accuracy. Records without a position
//! (heart rate or power samples before the first fix) are not fixes and are passed over quietly.
//!
//! Quirks handled:
//! - chained files (several FIT files one after the other) are read one after another, the
//!   message definitions reset at each file boundary;
//! - big-endian definitions and compressed-timestamp headers are fitparser's job;
//! - a checksum that does not match (header or data) is a warning; the messages stay;
//! - a file that ends inside a message (truncated) keeps what came before, with a warning;
//! - damage in the middle of a file: the reader looks for the next place where messages frame
//!   cleanly again (see `fit_resync.rs`) and carries on from there with a warning, so that one bad
//!   byte does not cost the rest of the ride; it gives up after [`MAX_RESYNCS`] restarts, or when
//!   nothing frames within 1 MiB of the damage. Messages misframed before the damage showed and
//!   that happened to frame without an error (a record one byte short, in one phone app's files)
//!   are decoded as their bytes say: they carry impossible values (years like 2061, latitudes
//!   beyond 90) that the server's plausibility rules reject;
//! - a file with nothing readable at all is an error naming the byte offset and the reason;
//! - times below 0x10000000 are device-relative ("seconds since power on", e.g. action cameras):
//!   they are converted through the file's `timestamp_correlation` message, or left `None` with a
//!   warning when the file has none;
//! - fitparser must not take the process down on hostile input: file headers and definitions
//!   are checked before they are handed to it (which avoids the panics known in its header
//!   code), each call into it runs under `catch_unwind` and a panic there counts as damage at
//!   that message (the positions read before it are kept), and the whole read runs under
//!   `catch_unwind` too, as a last resort that gives [`ImportError::ParserPanic`].

use std::panic::{AssertUnwindSafe, catch_unwind};

use fitparser::de::{DecodeOption, FitObject, FitStreamProcessor};
use fitparser::profile::MesgNum;
use fitparser::{ErrorKind, FitDataRecord, Value};

use crate::error::{Warnings, lower_first};
use crate::fit_resync::{self, Framing, guarded};
use crate::values::{MICROS, finite_f32};
use crate::{Fix, Format, ImportError, ReadResult, Source, Track};

/// 1989-12-31T00:00:00Z, the FIT epoch, in Unix seconds.
const FIT_EPOCH_SECS: i64 = 631_065_600;
/// FIT date_time values below this are device-relative seconds, not dates.
const RELATIVE_BELOW: i64 = 0x1000_0000;
/// Resynchronisations per file before giving up on the rest (each costs a scan of at most
/// 1 MiB, mostly a cheap walk through message lengths).
const MAX_RESYNCS: usize = 64;

pub(crate) fn read(src: &Source<'_>, bytes: &[u8]) -> ReadResult {
    match catch_unwind(AssertUnwindSafe(|| read_all(src, bytes))) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic without a message".to_string());
            Err(ImportError::ParserPanic {
                path: src.path.to_path_buf(),
                format: Format::Fit,
                message,
            })
        }
    }
}

/// A fix read from a record, before relative times are resolved.
#[derive(Debug)]
struct Pending {
    fix: Fix,
    /// Device-relative time in µs, when the record's time was one.
    relative_us: Option<i64>,
    /// Original byte range of the message it came from.
    from: (usize, usize),
}

#[derive(Debug, Default)]
pub(crate) struct State {
    fixes: Vec<Pending>,
    /// Absolute minus device-relative time, µs, from a timestamp_correlation message.
    correlation_us: Option<i64>,
    pub(crate) warnings: Warnings,
}

/// How one pass over a buffer ended.
pub(crate) enum End {
    Clean,
    Damaged {
        at: usize,
        message: String,
        eof: bool,
    },
}

/// A buffer being read: the file itself, or a synthetic restart after damage, whose first
/// `prefix` bytes are made up and whose byte `prefix` is byte `origin` of the file.
#[derive(Clone, Copy)]
pub(crate) struct Segment<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) prefix: usize,
    pub(crate) origin: usize,
}

impl Segment<'_> {
    fn original(&self, pos: usize) -> usize {
        self.origin + pos.saturating_sub(self.prefix)
    }
}

fn read_all(src: &Source<'_>, bytes: &[u8]) -> ReadResult {
    if let Some(problem) = fit_resync::header_problem(bytes) {
        return Err(src.malformed(Format::Fit, "byte 0x0", problem));
    }
    let mut state = State::default();
    let mut framing = Framing::default();
    let mut restart: Option<(Vec<u8>, usize, usize)> = None;
    let mut processor = FitStreamProcessor::new();
    let mut first_damage: Option<(usize, String)> = None;
    for attempt in 0.. {
        let seg = match &restart {
            Some((buf, prefix, origin)) => Segment {
                buf,
                prefix: *prefix,
                origin: *origin,
            },
            None => Segment {
                buf: bytes,
                prefix: 0,
                origin: 0,
            },
        };
        let (at, message, eof) = match run(seg, &mut processor, &mut state, &mut framing) {
            End::Clean => {
                if framing.in_data() {
                    let note = "the file ends before its data section does (truncated)";
                    state
                        .warnings
                        .push(format!("byte {:#x}", bytes.len()), note);
                }
                break;
            }
            End::Damaged { at, message, eof } => (at, message, eof),
        };
        first_damage.get_or_insert((at, message.clone()));
        let read_so_far = state.fixes.len();
        let found = if eof || attempt >= MAX_RESYNCS {
            None
        } else {
            fit_resync::find(bytes, &framing, at)
        };
        let Some(resume) = found else {
            let what = if eof {
                "the file ends inside a message (truncated)".to_string()
            } else {
                message
            };
            let note = format!("{what}; stopped reading, {read_so_far} positions read before");
            state.warnings.push(format!("byte {at:#x}"), note);
            break;
        };
        let mut note = format!("{message}; resumed at byte {resume:#x}");
        let misframed = state
            .fixes
            .iter()
            .rev()
            .take_while(|p| p.from.1 > resume)
            .count();
        if misframed > 0 {
            state.fixes.truncate(state.fixes.len() - misframed);
            note.push_str(&format!(
                ", dropping {misframed} positions read from misframed bytes"
            ));
        }
        state.warnings.push(format!("byte {at:#x}"), note);
        let (buf, prefix) = fit_resync::restart_buffer(bytes, &framing, resume);
        restart = Some((buf, prefix, resume));
        processor = FitStreamProcessor::new();
        processor.add_option(DecodeOption::SkipDataCrcValidation);
    }
    if state.fixes.is_empty() {
        if let Some((at, message)) = first_damage {
            return Err(src.malformed(Format::Fit, format!("byte {at:#x}"), message));
        }
    }
    let fixes = state.resolve_relative_times();
    let track = Track {
        device: src.device.clone(),
        fixes,
    };
    Ok((vec![track], state.warnings))
}

/// Reads objects from `seg` until its end or the first damage.
fn run(
    seg: Segment<'_>,
    processor: &mut FitStreamProcessor,
    state: &mut State,
    framing: &mut Framing,
) -> End {
    let mut pos = 0;
    while pos < seg.buf.len() {
        let start = pos;
        let at = seg.original(start);
        // Check what fitparser would trust blindly: file headers, and definitions (a garbage
        // definition read from misframed bytes would spoil every later message).
        let problem = if framing.expects_header() {
            fit_resync::header_problem(&seg.buf[start..])
        } else if framing.past_data_end(at) {
            Some("a message runs past the end of the data section".to_string())
        } else if seg.buf[start] & 0xc0 == 0x40 && !framing.at_crc(at) {
            fit_resync::definition_problem(&seg.buf[start..])
        } else {
            None
        };
        if let Some(message) = problem {
            return End::Damaged {
                at,
                message,
                eof: false,
            };
        }
        let parsed = guarded(|| processor.deserialize_next(&seg.buf[start..]));
        let Some(parsed) = parsed else {
            return End::Damaged {
                at,
                message: "fitparser panicked on this message".to_string(),
                eof: false,
            };
        };
        let (rest_len, object) = match parsed {
            Ok((rest, object)) => (rest.len(), object),
            Err(error) => match *error {
                ErrorKind::InvalidCrc((rest, object, stored, computed)) => {
                    let what = match object {
                        FitObject::Header(_) => "header",
                        _ => "data",
                    };
                    let note = format!(
                        "{what} checksum {stored:#06x} does not match the computed {computed:#06x}"
                    );
                    state.warnings.push(format!("byte {at:#x}"), note);
                    (rest.len(), object)
                }
                other => {
                    let eof = matches!(other, ErrorKind::UnexpectedEof(_));
                    return End::Damaged {
                        at,
                        message: describe(&other),
                        eof,
                    };
                }
            },
        };
        pos = seg.buf.len() - rest_len;
        let raw = &seg.buf[start..pos];
        let genuine = start >= seg.prefix;
        match object {
            FitObject::Header(header) => framing.on_header(genuine, at, &header),
            FitObject::Crc(_) => {
                processor.reset();
                framing.on_crc();
            }
            FitObject::DefinitionMessage(_) => framing.on_definition(genuine, at, raw),
            FitObject::DataMessage(message) => {
                framing.on_data(at);
                let decoded = guarded(|| processor.decode_message(message));
                let Some(decoded) = decoded else {
                    return End::Damaged {
                        at,
                        message: "fitparser panicked decoding this message".to_string(),
                        eof: false,
                    };
                };
                match decoded {
                    Ok(record) => {
                        let kind = record.kind();
                        if genuine
                            && matches!(kind, MesgNum::DeveloperDataId | MesgNum::FieldDescription)
                        {
                            framing.keep_developer_message(raw);
                        }
                        state.take(&record, (at, seg.original(pos)));
                    }
                    Err(error) => {
                        let note = format!("cannot decode this message: {}", describe(&error));
                        state.warnings.push(format!("byte {at:#x}"), note);
                    }
                }
            }
        }
    }
    End::Clean
}

impl State {
    /// Takes what journeyd needs from one decoded message.
    fn take(&mut self, record: &FitDataRecord, from: (usize, usize)) {
        match record.kind() {
            MesgNum::Record => self.take_record(record, from),
            MesgNum::TimestampCorrelation => self.take_correlation(record),
            _ => {}
        }
    }

    fn take_record(&mut self, record: &FitDataRecord, from: (usize, usize)) {
        let (mut lat, mut lon, mut secs) = (None, None, None);
        let (mut altitude, mut enhanced_altitude, mut speed, mut enhanced_speed) =
            (None, None, None, None);
        let mut accuracy = None;
        for field in record.fields() {
            let value = field.value();
            match field.name() {
                "position_lat" => lat = number(value),
                "position_long" => lon = number(value),
                "timestamp" => secs = seconds(value),
                "altitude" => altitude = number(value),
                "enhanced_altitude" => enhanced_altitude = number(value),
                "speed" => speed = number(value),
                "enhanced_speed" => enhanced_speed = number(value),
                "gps_accuracy" => accuracy = number(value),
                _ => {}
            }
        }
        let (Some(lat), Some(lon)) = (lat, lon) else {
            return;
        };
        let semicircles = 180.0 / 2_147_483_648.0;
        let mut fix = Fix::at(lat * semicircles, lon * semicircles);
        fix.altitude_m = enhanced_altitude.or(altitude).and_then(finite_f32);
        fix.speed_mps = enhanced_speed.or(speed).and_then(finite_f32);
        fix.accuracy_m = accuracy.and_then(finite_f32);
        let mut relative_us = None;
        if let Some(secs) = secs {
            if secs - FIT_EPOCH_SECS < RELATIVE_BELOW {
                relative_us = Some((secs - FIT_EPOCH_SECS) * MICROS);
            } else {
                fix.fix_time_us = Some(secs * MICROS);
            }
        }
        self.fixes.push(Pending {
            fix,
            relative_us,
            from,
        });
    }

    fn take_correlation(&mut self, record: &FitDataRecord) {
        let (mut absolute, mut absolute_ms, mut system, mut system_ms) = (None, 0.0, None, 0.0);
        for field in record.fields() {
            let value = field.value();
            match field.name() {
                "timestamp" => absolute = seconds(value),
                "timestamp_ms" => absolute_ms = number(value).unwrap_or(0.0),
                "system_timestamp" => system = seconds(value),
                "system_timestamp_ms" => system_ms = number(value).unwrap_or(0.0),
                _ => {}
            }
        }
        if let (Some(absolute), Some(system), None) = (absolute, system, self.correlation_us) {
            let absolute_us = absolute * MICROS + (absolute_ms * 1e3) as i64;
            let system_us = (system - FIT_EPOCH_SECS) * MICROS + (system_ms * 1e3) as i64;
            self.correlation_us = Some(absolute_us - system_us);
        }
    }

    /// The fixes, with device-relative times made absolute where the file allows it.
    fn resolve_relative_times(&mut self) -> Vec<Fix> {
        let relative = self
            .fixes
            .iter()
            .filter(|p| p.relative_us.is_some())
            .count();
        if relative > 0 && self.correlation_us.is_none() {
            let note = format!(
                "{relative} records have device-relative times and the file has no \
                 timestamp_correlation message; their times are left empty"
            );
            self.warnings.push("file", note);
        }
        let correlation = self.correlation_us;
        self.fixes
            .iter()
            .map(|p| {
                let mut fix = p.fix;
                if let (Some(rel), Some(offset)) = (p.relative_us, correlation) {
                    fix.fix_time_us = Some(offset + rel);
                }
                fix
            })
            .collect()
    }
}

/// fitparser's message for an error, without its own offset (which counts from the start of
/// the buffer it was given, not of the file; the warning names the file offset) and starting
/// lower-case.
fn describe(error: &ErrorKind) -> String {
    let text = error.to_string();
    let text = match text.find(" at position") {
        Some(cut) => &text[..cut],
        None => &text,
    };
    lower_first(text)
}

/// A field value as a finite number.
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Timestamp(t) => Some(t.timestamp() as f64),
        Value::String(_) | Value::Array(_) | Value::Invalid => None,
        other => TryInto::<f64>::try_into(other.clone())
            .ok()
            .filter(|v| v.is_finite()),
    }
}

/// A date_time field as Unix seconds.
fn seconds(value: &Value) -> Option<i64> {
    match value {
        Value::Timestamp(t) => Some(t.timestamp()),
        other => number(other).map(|v| v as i64 + FIT_EPOCH_SECS),
    }
}
