//! Numbers with units and times in the many shapes track files write them.
//!
//! Quirks handled:
//! - units inside values (`374.812 m`, `0.865 km/h`, `12kn`), in header names (`speed (km/h)`) or
//!   in a separate units row; speeds become m/s, lengths metres;
//! - epoch times in seconds, milliseconds, microseconds or nanoseconds, told apart by magnitude
//!   (a value below 10^11 is seconds, which covers every date before the year 5138);
//! - ISO 8601 / RFC 3339 times with `Z`, with `+hh:mm`, `+hhmm` or `+hh` offsets, with a space
//!   instead of the `T`, with up to nine fractional digits (nanoseconds are truncated to µs);
//! - naive times, which are UTC unless the file gives an offset (a UTC-offset column).
//!
//! Nothing here produces NaN or infinity: a value that does not parse is `None`.

use chrono::{DateTime, NaiveDateTime};

/// Metres of horizontal accuracy per unit of HDOP, used where a file gives only HDOP: a
/// conventional user-equivalent range error for consumer GPS receivers.
pub const HDOP_TO_METRES: f32 = 5.0;

/// Microseconds per second.
pub(crate) const MICROS: i64 = 1_000_000;

/// Accuracy in metres from an HDOP value, or `None` if it is not a finite non-negative number.
pub(crate) fn hdop_to_accuracy(hdop: f64) -> Option<f32> {
    finite_f32(hdop * f64::from(HDOP_TO_METRES))
}

/// `v` as f32 when both are finite.
pub(crate) fn finite_f32(v: f64) -> Option<f32> {
    let f = v as f32;
    (v.is_finite() && f.is_finite()).then_some(f)
}

/// A plain decimal number (`-12.5`, `+3`, `1e-5`); `None` for text, NaN and infinities.
pub(crate) fn parse_number(s: &str) -> Option<f64> {
    let s = s.trim();
    let plain = s
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
    if s.is_empty() || !plain {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// A number optionally followed (or, for hemispheres, preceded) by a unit: `374.812 m` gives
/// `(374.812, "m")`, `12` gives `(12.0, "")`. The unit comes back lower-case without spaces.
pub(crate) fn parse_with_unit(s: &str) -> Option<(f64, String)> {
    let s = s.trim();
    let end = s
        .char_indices()
        .find(|&(i, c)| {
            !(c.is_ascii_digit()
                || c == '.'
                || ((c == '-' || c == '+') && (i == 0 || s[..i].ends_with(['e', 'E'])))
                || ((c == 'e' || c == 'E')
                    && i > 0
                    && s[i + 1..]
                        .starts_with(|d: char| d.is_ascii_digit() || d == '-' || d == '+')))
        })
        .map_or(s.len(), |(i, _)| i);
    let value = parse_number(&s[..end])?;
    let unit: String = s[end..]
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect();
    Some((value, unit))
}

/// Units of speed a file may name, as a factor to m/s.
pub(crate) fn speed_factor(unit: &str) -> Option<f64> {
    let unit = normalise_unit(unit);
    Some(match unit.as_str() {
        "" | "m/s" | "mps" | "ms" | "ms-1" | "m/sec" => 1.0,
        "km/h" | "kmh" | "kph" | "kmph" | "km/hr" => 1.0 / 3.6,
        "kn" | "kt" | "kts" | "knot" | "knots" => 1852.0 / 3600.0,
        "mph" | "mi/h" => 0.44704,
        "ft/s" | "fps" => 0.3048,
        _ => return None,
    })
}

/// Units of length a file may name, as a factor to metres (`ft msl` counts as feet).
pub(crate) fn length_factor(unit: &str) -> Option<f64> {
    let unit = normalise_unit(unit);
    let unit = unit
        .strip_suffix("msl")
        .or_else(|| unit.strip_suffix("wgs"))
        .or_else(|| unit.strip_suffix("baro"))
        .unwrap_or(&unit);
    Some(match unit {
        "" | "m" | "meter" | "meters" | "metre" | "metres" => 1.0,
        "ft" | "feet" | "foot" => 0.3048,
        "km" => 1000.0,
        "mi" | "mile" | "miles" => 1609.344,
        "nm" | "nmi" => 1852.0,
        _ => return None,
    })
}

fn normalise_unit(unit: &str) -> String {
    unit.chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '(' | ')' | '[' | ']'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Microseconds since the epoch from an epoch number, its unit told by magnitude.
pub(crate) fn epoch_to_micros(s: &str) -> Option<i64> {
    let s = s.trim();
    let digits = s.strip_prefix('-').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        // Integers keep full precision through i128 (nanoseconds overflow f64's 53 bits).
        let v: i128 = s.parse().ok()?;
        let micros = match v.unsigned_abs() {
            m if m < 100_000_000_000 => v * 1_000_000,
            m if m < 100_000_000_000_000 => v * 1_000,
            m if m < 100_000_000_000_000_000 => v,
            _ => v.div_euclid(1_000),
        };
        return i64::try_from(micros).ok();
    }
    let v = parse_number(s)?;
    let micros = match v.abs() {
        m if m < 1e11 => v * 1e6,
        m if m < 1e14 => v * 1e3,
        m if m < 1e17 => v,
        _ => v / 1e3,
    };
    (micros.abs() < 9.2e18).then(|| micros.round() as i64)
}

/// Microseconds since the epoch of a naive date and time at UTC offset `offset_secs`.
pub(crate) fn naive_to_micros(t: NaiveDateTime, offset_secs: i32) -> Option<i64> {
    let utc = t.and_utc();
    let micros = utc.timestamp().checked_mul(MICROS)?;
    micros
        .checked_add(i64::from(utc.timestamp_subsec_micros()))?
        .checked_sub(i64::from(offset_secs).checked_mul(MICROS)?)
}

/// Naive date-time layouts, most common first. `%.f` also accepts no fraction.
const NAIVE_FORMATS: &[&str] = &[
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y/%m/%d %H:%M:%S%.f",
    "%Y/%m/%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y%m%dT%H%M%S%.f",
    "%Y%m%d %H%M%S%.f",
    "%d.%m.%Y %H:%M:%S%.f",
];

/// Layouts with an explicit offset that RFC 3339 parsing does not take.
const OFFSET_FORMATS: &[&str] = &[
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S%.f %#z",
    "%Y/%m/%d %H:%M:%S%.f%#z",
];

/// Microseconds since the epoch from a time as text: an epoch number, an ISO 8601 time with or
/// without offset, or a naive local time. A naive time is taken at `offset_secs` east of UTC
/// (`None`: UTC).
pub(crate) fn parse_time(s: &str, offset_secs: Option<i32>) -> Option<i64> {
    let s = s.trim().trim_matches('"').trim();
    if s.is_empty() {
        return None;
    }
    if s.bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
        && !s[1..].contains('-')
    {
        return epoch_to_micros(s);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return naive_to_micros(t.naive_utc(), 0);
    }
    for fmt in OFFSET_FORMATS {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return naive_to_micros(t.naive_utc(), 0);
        }
    }
    let (body, utc) = match strip_utc_suffix(s) {
        Some(body) => (body, true),
        None => (s, false),
    };
    let naive = parse_naive(body)?;
    naive_to_micros(naive, if utc { 0 } else { offset_secs.unwrap_or(0) })
}

fn strip_utc_suffix(s: &str) -> Option<&str> {
    ["Z", "z", " UTC", " GMT", "UTC"]
        .iter()
        .find_map(|suffix| s.strip_suffix(suffix))
        .map(str::trim_end)
}

/// A naive date-time in one of [`NAIVE_FORMATS`].
pub(crate) fn parse_naive(s: &str) -> Option<NaiveDateTime> {
    NAIVE_FORMATS
        .iter()
        .find_map(|fmt| NaiveDateTime::parse_from_str(s, fmt).ok())
}

/// A UTC offset such as `+02:00`, `-0700`, `+5`, `-03:30`, `Z`, in seconds east of UTC.
pub(crate) fn parse_offset(s: &str) -> Option<i32> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("z") || s.eq_ignore_ascii_case("utc") {
        return Some(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => (1, s),
    };
    let (h, m) = match rest.split_once(':') {
        Some((h, m)) => (h, m),
        None if rest.len() == 4 => rest.split_at(2),
        None => (rest, "0"),
    };
    let (h, m): (i32, i32) = (h.trim().parse().ok()?, m.trim().parse().ok()?);
    ((0..=18).contains(&h) && (0..60).contains(&m)).then_some(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_199_145_600 * MICROS; // 2008-01-01T00:00:00Z

    #[test]
    fn numbers_and_units() {
        assert_eq!(parse_number(" 12.5 "), Some(12.5));
        assert_eq!(parse_number("NaN"), None);
        assert_eq!(parse_number("inf"), None);
        assert_eq!(parse_number(""), None);
        assert_eq!(parse_with_unit("374.812 m"), Some((374.812, "m".into())));
        assert_eq!(parse_with_unit("0.865 km/h"), Some((0.865, "km/h".into())));
        assert_eq!(parse_with_unit("-1.5e-3kn"), Some((-1.5e-3, "kn".into())));
        assert_eq!(parse_with_unit("12"), Some((12.0, String::new())));
        assert_eq!(parse_with_unit("m"), None);
        assert_eq!(speed_factor("km/h"), Some(1.0 / 3.6));
        assert_eq!(speed_factor("KT"), Some(1852.0 / 3600.0));
        assert_eq!(speed_factor("furlongs"), None);
        assert_eq!(length_factor("ft msl"), Some(0.3048));
        assert_eq!(hdop_to_accuracy(f64::NAN), None);
    }

    #[test]
    fn epoch_magnitudes() {
        assert_eq!(epoch_to_micros("1199145600"), Some(T0));
        assert_eq!(epoch_to_micros("1199145600000"), Some(T0));
        assert_eq!(epoch_to_micros("1199145600000000"), Some(T0));
        assert_eq!(epoch_to_micros("1199145600000000123"), Some(T0));
        assert_eq!(epoch_to_micros("1199145600.5"), Some(T0 + 500_000));
        assert_eq!(epoch_to_micros("99999999999999999999999"), None);
    }

    #[test]
    fn iso_times() {
        assert_eq!(parse_time("2008-01-01T00:00:00Z", None), Some(T0));
        assert_eq!(parse_time("2008-01-01 00:00:00Z", None), Some(T0));
        assert_eq!(parse_time("2008-01-01T01:00:00+01:00", None), Some(T0));
        assert_eq!(parse_time("2008-01-01T01:00:00+0100", None), Some(T0));
        assert_eq!(parse_time("2008-01-01 01:00:00 +01", None), Some(T0));
        assert_eq!(parse_time("2008-01-01T00:00:00", None), Some(T0));
        assert_eq!(
            parse_time("2008/01/01 00:00:00.25", None),
            Some(T0 + 250_000)
        );
        assert_eq!(
            parse_time("2008-01-01 00:00:16.178999901", None),
            Some(T0 + 16_178_999)
        );
        assert_eq!(parse_time("2007-12-31 17:00:00", Some(-7 * 3600)), Some(T0));
        assert_eq!(parse_time("2008-01-01 00:00:00 UTC", Some(3600)), Some(T0));
        assert_eq!(parse_time("yesterday", None), None);
        assert_eq!(parse_time("2008-13-01T00:00:00Z", None), None);
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("+00:00"), Some(0));
        assert_eq!(parse_offset("-07:00"), Some(-25_200));
        assert_eq!(parse_offset("+0530"), Some(19_800));
        assert_eq!(parse_offset("2"), Some(7200));
        assert_eq!(parse_offset("+25:00"), None);
        assert_eq!(parse_offset("x"), None);
    }
}
