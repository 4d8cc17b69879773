//! OziExplorer track files (`.plt`).
//!
//! Layout: six header lines (`OziExplorer Track Point File Version 2.1`, datum, `Altitude is in
//! Feet`, reserved, track settings, point count), then one point per line:
//! `lat, lon, segment flag, altitude in feet, days since 1899-12-30, date text, time text`.
//!
//! Quirks handled:
//! - the files are Windows ANSI (Latin-1): `13-août-07` and track names with accents decode;
//! - the date text is localised (French month names), so the date comes from the day count; the
//!   time of day comes from the time text when it agrees with the day count to within two
//!   seconds (the day count has only seven decimals, about 9 ms), else from the day count
//!   rounded to the millisecond; times are taken as UTC;
//! - altitude -777 means "none"; feet become metres;
//! - the segment flag (a new segment starts) is ignored: one file, one track.

use std::path::Path;

use chrono::{NaiveTime, Timelike};

use crate::error::Warnings;
use crate::values::{MICROS, finite_f32, parse_number};
use crate::{Fix, Format, ReadResult, Source, Track, csv};

const SIGNATURE: &str = "OziExplorer Track Point File";
/// Header lines before the first point.
const HEADER_LINES: usize = 6;
/// Days from 1899-12-30 (the OLE/Delphi day 0) to 1970-01-01.
const DAYS_TO_UNIX_EPOCH: f64 = 25_569.0;
const NO_ALTITUDE: f64 = -777.0;
const FEET: f64 = 0.3048;

/// True for `.plt` files and for content that starts like one.
pub(crate) fn is_plt(path: &Path, bytes: &[u8]) -> bool {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    ext.as_deref() == Some("plt") || bytes.starts_with(SIGNATURE.as_bytes())
}

pub(crate) fn read(src: &Source<'_>, bytes: &[u8]) -> ReadResult {
    let text = csv::decode(bytes);
    let mut lines = text.lines();
    if !lines
        .next()
        .is_some_and(|l| l.trim().starts_with(SIGNATURE))
    {
        let message = format!("the first line is not {SIGNATURE:?}");
        return Err(src.malformed(Format::Csv, "line 1", message));
    }
    let mut warnings = Warnings::default();
    let mut fixes = Vec::new();
    for (index, line) in text.lines().enumerate().skip(HEADER_LINES) {
        if line.trim().is_empty() {
            continue;
        }
        let location = format!("line {}", index + 1);
        if let Some(fix) = point(line, &location, &mut warnings) {
            fixes.push(fix);
        }
    }
    let track = Track {
        device: src.device.clone(),
        fixes,
    };
    Ok((vec![track], warnings))
}

fn point(line: &str, location: &str, warnings: &mut Warnings) -> Option<Fix> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or("");
    let (Some(lat), Some(lon)) = (parse_number(field(0)), parse_number(field(1))) else {
        let message = format!(
            "unreadable position {:?}, {:?}; point skipped",
            field(0),
            field(1)
        );
        warnings.push(location, message);
        return None;
    };
    let mut fix = Fix::at(lat, lon);
    match parse_number(field(3)) {
        Some(feet) if feet != NO_ALTITUDE => fix.altitude_m = finite_f32(feet * FEET),
        Some(_) => {}
        None if field(3).is_empty() => {}
        None => warnings.push(location, format!("unreadable altitude {:?}", field(3))),
    }
    if !field(4).is_empty() {
        fix.fix_time_us = time(field(4), field(6));
        if fix.fix_time_us.is_none() {
            warnings.push(location, format!("unreadable day count {:?}", field(4)));
        }
    }
    Some(fix)
}

/// µs since the epoch from the day count, refined by the time text where they agree.
fn time(days_text: &str, time_text: &str) -> Option<i64> {
    let days = parse_number(days_text)?;
    let unix_days = days - DAYS_TO_UNIX_EPOCH;
    if unix_days.abs() > 1e6 {
        return None;
    }
    let from_count = (unix_days * 86_400_000.0).round() as i64 * 1_000;
    let whole_days = unix_days.floor();
    let seconds_in_day = (unix_days - whole_days) * 86_400.0;
    let from_text = NaiveTime::parse_from_str(time_text, "%H:%M:%S")
        .ok()
        .map(|t| f64::from(t.num_seconds_from_midnight()))
        .filter(|s| (s - seconds_in_day).abs() <= 2.0);
    Some(match from_text {
        Some(s) => (whole_days as i64 * 86_400 + s as i64) * MICROS,
        None => from_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_counts_and_time_text() {
        // 2007-08-13T07:52:19Z
        let t = 1_186_991_539 * MICROS;
        assert_eq!(time("39307.3279977", "07:52:19"), Some(t));
        assert_eq!(time("39307.3279977", ""), Some(t + 1_000));
        assert_eq!(time("39307.3279977", "09:00:00"), Some(t + 1_000));
        assert_eq!(time("soon", "07:52:19"), None);
    }

    #[test]
    fn reads_latin1_points() {
        let src = Source {
            path: Path::new("t.plt"),
            device: "t".into(),
        };
        let file = b"OziExplorer Track Point File Version 2.1\r\nWGS 84\r\nAltitude is in Feet\r\n\
            Reserved 3\r\n0,2,255,V\xe9zelay,1,0,2,8421376,0\r\n2\r\n\
            47.5, 3.75,0, 1000.0,39307.3279977, 13-ao\xfbt-07, 07:52:19\r\n\
            x, 3.75,0,-777,39307.5, 13-ao\xfbt-07, 12:00:00\r\n\
            47.5, 3.75,1,-777,,,\r\n";
        let (tracks, warnings) = read(&src, file).expect("readable");
        let fixes = &tracks[0].fixes;
        assert_eq!(fixes.len(), 2);
        assert_eq!(fixes[0].altitude_m, Some(304.8));
        assert_eq!(fixes[1].altitude_m, None);
        assert_eq!(fixes[1].fix_time_us, None);
        let warnings = warnings.into_vec();
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].location, "line 8");
    }
}
