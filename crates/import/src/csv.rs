//! Delimited text (CSV, semicolon- or tab-separated) with guessed columns.
//!
//! The header is the first line among the first [`HEADER_SEARCH`] whose names include a latitude
//! and a longitude (see `columns.rs` for the names known); lines before it are preamble. A
//! `#` comment line right before the header with as many fields is a units row (Garmin G1000:
//! `ft msl`, `kt`). A file whose first lines have no such names is an
//! [`ImportError::MissingColumns`] naming the line and the columns it found.
//!
//! Quirks handled:
//! - UTF-8 with or without BOM; anything else is decoded as Latin-1 (Windows-1252);
//! - the delimiter is whichever of `,` `;` tab `|` the header line has most of;
//! - fields are trimmed, rows may be ragged, quoted fields are unquoted;
//! - latitude and longitude with hemisphere letters in the value (`41.8N`) or in `N/S`, `E/W`
//!   columns;
//! - times: see `values.rs`; a date and a time-of-day column are joined; a naive time with a
//!   UTC-offset column is local time at that offset, without one it is UTC;
//! - units inside values (`374.812 m`, `0.865 km/h`), in header brackets, in a units row or
//!   implied by the name (`SOG` is knots, `speed_kmh`); speeds become m/s, lengths metres;
//! - AIS exports (an `MMSI` column): heading 511 and course 360 mean "not available" and become
//!   `None`, as does speed 102.3 knots;
//! - a vehicle column splits the file into one track per vehicle, in order of first appearance,
//!   named `stem/vehicle`; rows with an empty vehicle go to the track named `stem`;
//! - a row without latitude or longitude is skipped and counted in one warning; a value that
//!   does not parse is a warning naming the line (the row is skipped for a coordinate, the field
//!   is `None` otherwise).

use std::borrow::Cow;
use std::collections::HashMap;

use ::csv::{ReaderBuilder, StringRecord, Trim};

use crate::columns::{self, Col, Columns};
use crate::error::Warnings;
use crate::values::{
    finite_f32, hdop_to_accuracy, length_factor, parse_number, parse_offset, parse_time,
    parse_with_unit, speed_factor,
};
use crate::{Fix, ImportError, ReadResult, Source, Track};

/// Lines searched for the header.
const HEADER_SEARCH: usize = 50;

/// The header line and what comes with it.
#[derive(Debug)]
struct Header {
    /// 0-based line index.
    line: usize,
    /// Byte offset of the header line in the text.
    offset: usize,
    delimiter: u8,
    columns: Columns,
}

/// Text from bytes: UTF-8 (BOM dropped), else Latin-1.
pub(crate) fn decode(bytes: &[u8]) -> Cow<'_, str> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => {
            encoding_rs::WINDOWS_1252
                .decode_without_bom_handling(bytes)
                .0
        }
    }
}

pub(crate) fn read(src: &Source<'_>, bytes: &[u8]) -> ReadResult {
    let text = decode(bytes);
    let header = find_header(src, &text)?;
    let cols = &header.columns;
    let mut reader = ReaderBuilder::new()
        .delimiter(header.delimiter)
        .has_headers(true)
        .flexible(true)
        .trim(Trim::All)
        .comment(Some(b'#'))
        .from_reader(text[header.offset..].as_bytes());
    let mut warnings = Warnings::default();
    let mut rows: Vec<(String, Fix)> = Vec::new();
    let mut without_position = 0usize;
    for result in reader.records() {
        let record = match result {
            Ok(record) => record,
            Err(error) => {
                let line = error.position().map_or(0, |p| p.line() as usize);
                let location = format!("line {}", header.line + line);
                warnings.push(location, format!("unreadable row: {error}"));
                continue;
            }
        };
        let line = header.line + record.position().map_or(0, |p| p.line() as usize);
        let mut row = Row {
            record: &record,
            line,
            warnings: &mut warnings,
        };
        match row.fix(cols) {
            RowFix::Fix(fix) => {
                let vehicle = cols.vehicle.map(|i| row.get(i).to_string());
                rows.push((vehicle.unwrap_or_default(), fix));
            }
            RowFix::NoPosition => without_position += 1,
            RowFix::Unreadable => {}
        }
    }
    if without_position > 0 {
        let note = format!("{without_position} rows without a latitude or longitude skipped");
        warnings.push("file", note);
    }
    Ok((split_tracks(src, cols, rows), warnings))
}

/// The first line among the first [`HEADER_SEARCH`] that names a latitude and a longitude.
fn find_header(src: &Source<'_>, text: &str) -> Result<Header, ImportError> {
    let mut offset = 0;
    let mut comment: Option<&str> = None;
    let mut first: Option<(usize, Vec<String>)> = None;
    for (index, raw) in text.split('\n').enumerate().take(HEADER_SEARCH) {
        let line_offset = offset;
        offset += raw.len() + 1;
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            comment = Some(rest);
            continue;
        }
        let delimiter = guess_delimiter(line);
        let fields = split_line(line, delimiter);
        let units = comment
            .take()
            .map(|c| split_line(c, delimiter))
            .filter(|u| u.len() == fields.len());
        let columns = columns::map(&fields, units.as_deref());
        if columns.lat.is_some() && columns.lon.is_some() {
            return Ok(Header {
                line: index,
                offset: line_offset,
                delimiter,
                columns,
            });
        }
        first.get_or_insert((index, fields));
    }
    let (index, fields) = first.unwrap_or_default();
    let mut shown = fields.join(", ");
    if shown.chars().count() > 200 {
        shown = shown.chars().take(200).collect::<String>() + "...";
    }
    Err(ImportError::MissingColumns {
        path: src.path.to_path_buf(),
        location: format!("line {}", index + 1),
        columns: shown.escape_debug().to_string(),
    })
}

fn guess_delimiter(line: &str) -> u8 {
    [b',', b';', b'\t', b'|']
        .into_iter()
        .max_by_key(|d| (line.bytes().filter(|b| b == d).count(), *d == b','))
        .unwrap_or(b',')
}

/// The fields of one line, unquoted and trimmed.
fn split_line(line: &str, delimiter: u8) -> Vec<String> {
    let mut reader = ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .trim(Trim::All)
        .from_reader(line.as_bytes());
    match reader.records().next() {
        Some(Ok(record)) => record.iter().map(str::to_string).collect(),
        _ => line
            .split(char::from(delimiter))
            .map(|f| f.trim().to_string())
            .collect(),
    }
}

enum RowFix {
    Fix(Fix),
    NoPosition,
    Unreadable,
}

/// One data row being read.
struct Row<'a> {
    record: &'a StringRecord,
    /// 1-based line number, for warnings.
    line: usize,
    warnings: &'a mut Warnings,
}

impl Row<'_> {
    fn get(&self, index: usize) -> &str {
        self.record.get(index).unwrap_or("")
    }

    fn warn(&mut self, message: String) {
        self.warnings.push(format!("line {}", self.line), message);
    }

    fn fix(&mut self, cols: &Columns) -> RowFix {
        let (Some(lat_col), Some(lon_col)) = (&cols.lat, &cols.lon) else {
            return RowFix::Unreadable;
        };
        let (lat_text, lon_text) = (self.get(lat_col.index), self.get(lon_col.index));
        if lat_text.is_empty() || lon_text.is_empty() {
            return RowFix::NoPosition;
        }
        let (Some(mut lat), Some(mut lon)) = (coordinate(lat_text), coordinate(lon_text)) else {
            self.warn(format!(
                "unreadable position {lat_text:?}, {lon_text:?}; row skipped"
            ));
            return RowFix::Unreadable;
        };
        if cols
            .north_south
            .is_some_and(|i| self.get(i).starts_with(['S', 's']))
        {
            lat = -lat.abs();
        }
        if cols
            .east_west
            .is_some_and(|i| self.get(i).starts_with(['W', 'w']))
        {
            lon = -lon.abs();
        }
        let mut fix = Fix::at(lat, lon);
        fix.fix_time_us = self.time(cols);
        fix.altitude_m = self.measure("altitude", cols.altitude.as_ref(), length_factor);
        fix.speed_mps = self.measure("speed", cols.speed.as_ref(), speed_factor);
        fix.heading_deg = self.measure("heading", cols.heading.as_ref(), degrees);
        fix.accuracy_m = self.measure("accuracy", cols.accuracy.as_ref(), length_factor);
        if fix.accuracy_m.is_none() {
            let hdop = cols.hdop.map(|index| Col {
                index,
                unit: String::new(),
            });
            fix.accuracy_m = self
                .measure("hdop", hdop.as_ref(), |_| Some(1.0))
                .and_then(|h| hdop_to_accuracy(f64::from(h)));
        }
        if cols.ais {
            // AIS "not available" values.
            fix.heading_deg = fix.heading_deg.filter(|h| *h < 360.0);
            fix.speed_mps = fix.speed_mps.filter(|s| *s < 102.25 * 1852.0 / 3600.0);
        }
        RowFix::Fix(fix)
    }

    fn time(&mut self, cols: &Columns) -> Option<i64> {
        let text = match (cols.date, cols.time_of_day, cols.time) {
            (Some(d), Some(t), _) => {
                let (date, time) = (self.get(d), self.get(t));
                if date.is_empty() || time.is_empty() {
                    return None;
                }
                format!("{date} {time}")
            }
            (_, _, Some(t)) if !self.get(t).is_empty() => self.get(t).to_string(),
            _ => return None,
        };
        let offset_text = cols.offset.map(|i| self.get(i)).unwrap_or("");
        let offset = if offset_text.is_empty() {
            None
        } else {
            let offset = parse_offset(offset_text);
            if offset.is_none() {
                self.warn(format!(
                    "unreadable utc offset {offset_text:?}; taken as utc"
                ));
            }
            offset
        };
        let time = parse_time(&text, offset);
        if time.is_none() {
            self.warn(format!("unreadable time {text:?}"));
        }
        time
    }

    /// The value of an optional column in SI units, or `None` (with a warning if it was there
    /// but did not parse).
    fn measure(
        &mut self,
        what: &str,
        col: Option<&Col>,
        factor: fn(&str) -> Option<f64>,
    ) -> Option<f32> {
        let col = col?;
        let text = self.get(col.index);
        if text.is_empty() {
            return None;
        }
        let Some((value, unit)) = parse_with_unit(text) else {
            self.warn(format!("unreadable {what} {text:?}"));
            return None;
        };
        let unit = if unit.is_empty() {
            col.unit.as_str()
        } else {
            unit.as_str()
        };
        let Some(factor) = factor(unit) else {
            self.warn(format!("unknown {what} unit {unit:?} in {text:?}"));
            return None;
        };
        finite_f32(value * factor)
    }
}

/// Degrees, with or without a degree sign.
fn degrees(unit: &str) -> Option<f64> {
    matches!(unit, "" | "deg" | "degrees" | "°" | "degt" | "°t" | "t").then_some(1.0)
}

/// A coordinate in decimal degrees, with an optional hemisphere letter before or after.
fn coordinate(text: &str) -> Option<f64> {
    let text = text.trim().trim_end_matches('°');
    let (sign, body) = match (text.chars().next(), text.chars().last()) {
        (Some(c @ ('N' | 'S' | 'E' | 'W')), _) => (hemisphere_sign(c), &text[1..]),
        (_, Some(c @ ('N' | 'S' | 'E' | 'W'))) => (hemisphere_sign(c), &text[..text.len() - 1]),
        _ => (1.0, text),
    };
    let value = parse_number(body.trim().trim_end_matches('°'))?;
    Some(if sign < 0.0 { -value.abs() } else { value })
}

fn hemisphere_sign(c: char) -> f64 {
    if matches!(c, 'S' | 'W') { -1.0 } else { 1.0 }
}

/// Rows into tracks: one per vehicle when the file has a vehicle column (a bare `id` column
/// only when its values repeat, else it is a row id), else one.
fn split_tracks(src: &Source<'_>, cols: &Columns, rows: Vec<(String, Fix)>) -> Vec<Track> {
    let split = cols.vehicle.is_some() && {
        if cols.vehicle_is_bare_id {
            let mut distinct: Vec<&str> = rows.iter().map(|(v, _)| v.as_str()).collect();
            distinct.sort_unstable();
            distinct.dedup();
            rows.len() >= 2 && distinct.len() * 2 <= rows.len()
        } else {
            true
        }
    };
    let mut tracks: Vec<Track> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (vehicle, fix) in rows {
        let key = if split { vehicle } else { String::new() };
        let slot = *index.entry(key.clone()).or_insert_with(|| {
            let device = if key.is_empty() {
                src.device.clone()
            } else {
                format!("{}/{key}", src.device)
            };
            tracks.push(Track {
                device,
                fixes: Vec::new(),
            });
            tracks.len() - 1
        });
        tracks[slot].fixes.push(fix);
    }
    tracks
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn read_text(text: &str) -> Result<(Vec<Track>, Vec<crate::Warning>), ImportError> {
        let src = Source {
            path: Path::new("f.csv"),
            device: "f".into(),
        };
        read(&src, text.as_bytes()).map(|(t, w)| (t, w.into_vec()))
    }

    #[test]
    fn semicolons_units_and_hemispheres() {
        let (tracks, warnings) = read_text(
            "note: exported\nLAT;N/S;LON;E/W;Height;Speed;time\n\
             41.5;S;12.25;W;374.8 m;36 km/h;2008-05-04T12:52:47Z\n\
             ;N;;E;;;\n\
             x;N;1;E;1;1;\n",
        )
        .expect("readable");
        assert_eq!(tracks.len(), 1);
        let f = tracks[0].fixes[0];
        assert_eq!((f.lat, f.lon), (-41.5, -12.25));
        assert_eq!(f.altitude_m, Some(374.8));
        assert_eq!(f.speed_mps, Some(10.0));
        assert_eq!(f.fix_time_us, Some(1_209_905_567_000_000));
        let text: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec![
                "line 5: unreadable position \"x\", \"1\"; row skipped",
                "file: 1 rows without a latitude or longitude skipped"
            ]
        );
    }

    #[test]
    fn vehicles_split_and_bare_ids_do_not() {
        let (tracks, _) = read_text("id,lat,lon\n1,1,1\n2,2,2\n3,3,3\n").expect("readable");
        assert_eq!(tracks.len(), 1);
        let (tracks, _) =
            read_text("MMSI,lat,lon,heading\n7,1,1,511\n8,2,2,90\n7,3,3,1\n").expect("readable");
        let names: Vec<&str> = tracks.iter().map(|t| t.device.as_str()).collect();
        assert_eq!(names, vec!["f/7", "f/8"]);
        assert_eq!(tracks[0].fixes[0].heading_deg, None);
        assert_eq!(tracks[0].fixes[1].heading_deg, Some(1.0));
    }

    #[test]
    fn missing_columns_name_the_line() {
        let err = read_text("# comment\n\na,b,c\n1,2,3\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "f.csv: line 3: no latitude and longitude columns found (columns: a, b, c)"
        );
    }

    #[test]
    fn coordinates() {
        assert_eq!(coordinate("41.5N"), Some(41.5));
        assert_eq!(coordinate("W12.5"), Some(-12.5));
        assert_eq!(coordinate("12.5°"), Some(12.5));
        assert_eq!(coordinate("north"), None);
    }
}
