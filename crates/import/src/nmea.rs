//! NMEA 0183 logs: GGA, RMC, GLL, GNS, VTG, ZDA and GST from any talker (GP, GN, GL, GA, BD,
//! GB, ...), through the `nmea` crate.
//!
//! Sentences that share a time of day make one fix, whatever their talker: the position comes
//! from GGA, else GNS, else RMC, else GLL (the first valid one of the best kind); RMC and VTG add
//! speed and course, GGA and GNS altitude and HDOP, GST a measured accuracy. GGA carries only a
//! time of day, so dates come from RMC or ZDA and are carried forward.
//!
//! Quirks handled:
//! - a line may hold several sentences run together, or garbage before the `$` (cold boots,
//!   serial line noise); each `$` starts a candidate, text after the checksum is dropped;
//!   comment lines (`#`) and encapsulated sentences (`!AIVDM`) are passed over;
//! - a sentence of a kind read here with a bad checksum, or one that does not parse, is skipped
//!   with a warning; other kinds (GSV, GSA, proprietary `$P...`) are passed over quietly;
//! - GGA without fix quality, GNS without a fix mode, void RMC (`V`) and GLL give no position;
//! - logs with no date at all give `fix_time_us: None`; fixes before the first date get it
//!   backwards; when the time of day goes back by more than 12 hours without a new date, the
//!   log crossed midnight and the date moves on a day;
//! - GPS week-rollover dates (1999, 2006 for a 2019 log) are kept as read: judging them is the
//!   server's job.

use chrono::{NaiveDate, NaiveTime, TimeDelta};
use nmea::ParseResult;
use nmea::sentences::FixType;

use crate::error::Warnings;
use crate::values::{finite_f32, hdop_to_accuracy, naive_to_micros};
use crate::{Fix, Format, ReadResult, Source, Track};

const KNOTS_TO_MPS: f64 = 1852.0 / 3600.0;
/// The sentence kinds this reader uses.
const USED: &[&str] = &["GGA", "RMC", "GLL", "GNS", "VTG", "ZDA", "GST"];

/// Sentences of one time of day, merged.
#[derive(Debug)]
struct Cycle {
    tod: NaiveTime,
    /// Position and the rank of the sentence that gave it (lower is better).
    position: Option<(f64, f64, u8)>,
    date: Option<NaiveDate>,
    altitude: Option<f32>,
    speed_knots: Option<f32>,
    course: Option<f32>,
    hdop: Option<f32>,
    accuracy: Option<f32>,
}

impl Cycle {
    fn new(tod: NaiveTime) -> Self {
        Cycle {
            tod,
            position: None,
            date: None,
            altitude: None,
            speed_knots: None,
            course: None,
            hdop: None,
            accuracy: None,
        }
    }

    fn offer_position(&mut self, lat: Option<f64>, lon: Option<f64>, rank: u8) {
        if let (Some(lat), Some(lon)) = (lat, lon) {
            if self.position.is_none_or(|(_, _, r)| rank < r) {
                self.position = Some((lat, lon, rank));
            }
        }
    }
}

/// A fix with its time of day, or a date seen without a position, in log order.
#[derive(Debug)]
enum Entry {
    Fix(Fix, NaiveTime, Option<NaiveDate>),
    Date(NaiveTime, NaiveDate),
}

pub(crate) fn read(src: &Source<'_>, bytes: &[u8]) -> ReadResult {
    let mut warnings = Warnings::default();
    let mut reader = Reader::default();
    let mut sentences = 0usize;
    for (index, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = String::from_utf8_lossy(raw);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('!') {
            // Encapsulated sentences (AIS !AIVDM): NMEA, but no own position.
            sentences += 1;
            continue;
        }
        let location = || format!("line {}", index + 1);
        let Some(first) = line.find('$') else {
            warnings.push(location(), "not an nmea sentence; ignored");
            continue;
        };
        for piece in line[first..].split('$').skip(1) {
            let piece = until_checksum(piece);
            let address = piece.split(',').next().unwrap_or_default();
            let well_formed = (5..=6).contains(&address.len())
                && address
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
                && piece.len() > address.len();
            sentences += usize::from(well_formed);
            let used = well_formed && address.len() == 5 && USED.contains(&&address[2..]);
            if !used {
                continue;
            }
            let sentence = with_gll_mode(piece).unwrap_or_else(|| format!("${piece}"));
            let error = match nmea::parse_str(&sentence) {
                Ok(parsed) => {
                    reader.take(parsed);
                    continue;
                }
                Err(error) => error,
            };
            reader.interrupted = true;
            let note = match error {
                nmea::Error::ChecksumMismatch { calculated, found } => format!(
                    "{address} checksum {found:02X} does not match the computed \
                     {calculated:02X}; sentence skipped"
                ),
                // The crate often cannot read the placeholder fields of a no-fix sentence,
                // which would give no position anyway.
                _ if says_no_fix(&address[2..], piece) => continue,
                other => {
                    format!("{address} sentence the nmea crate cannot read ({other}); skipped")
                }
            };
            warnings.push(location(), note);
        }
    }
    if sentences == 0 {
        let message = "no nmea sentences ($ and a five-letter address such as $GPGGA) found";
        return Err(src.malformed(Format::Nmea, "file", message));
    }
    let fixes = resolve_dates(reader.finish());
    let track = Track {
        device: src.device.clone(),
        fixes,
    };
    Ok((vec![track], warnings))
}

/// `GPGGA,...*5C` from `GPGGA,...*5C<junk>`: nothing after the two checksum digits.
fn until_checksum(piece: &str) -> &str {
    let Some(star) = piece.find('*') else {
        return piece.trim_end();
    };
    let end = piece[star + 1..]
        .char_indices()
        .nth(2)
        .map_or(piece.len(), |(i, _)| star + 1 + i);
    &piece[..end]
}

/// True for a GGA, RMC, GNS or GLL sentence (`GPGGA,...`) that says it has no fix.
fn says_no_fix(kind: &str, piece: &str) -> bool {
    let body = piece.split('*').next().unwrap_or_default();
    let fields: Vec<&str> = body.split(',').collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or_default();
    match kind {
        "GGA" => matches!(field(6), "" | "0"),
        "RMC" => field(2) == "V",
        "GNS" => field(6).chars().all(|c| c == 'N'),
        "GLL" => field(6) == "V",
        _ => false,
    }
}

/// A GLL sentence of NMEA before 2.3 (no mode field, which the nmea crate requires) with the
/// mode field added and the checksum recomputed; `None` for anything else, or when the
/// original checksum is wrong (the parse then reports it).
fn with_gll_mode(piece: &str) -> Option<String> {
    let (body, sum) = piece.split_once('*')?;
    if body.get(2..6) != Some("GLL,") || body.split(',').count() != 7 {
        return None;
    }
    let checksum = |text: &str| text.bytes().fold(0u8, |a, b| a ^ b);
    let stored = u8::from_str_radix(sum.get(..2)?, 16).ok()?;
    if checksum(body) != stored {
        return None;
    }
    let status = body.rsplit(',').next().unwrap_or_default();
    let body = format!("{body},{}", if status == "A" { "A" } else { "N" });
    Some(format!("${body}*{:02X}", checksum(&body)))
}

#[derive(Debug, Default)]
struct Reader {
    cycle: Option<Cycle>,
    entries: Vec<Entry>,
    /// A sentence could not be read since the open cycle was last touched: a following VTG
    /// (which has no time) may belong to that sentence's cycle, not the open one.
    interrupted: bool,
}

impl Reader {
    /// The cycle for `tod`: the open one if it has that time, else a new one.
    fn cycle_at(&mut self, tod: NaiveTime) -> &mut Cycle {
        self.interrupted = false;
        if self.cycle.as_ref().is_some_and(|c| c.tod != tod) {
            self.flush();
        }
        self.cycle.get_or_insert_with(|| Cycle::new(tod))
    }

    fn flush(&mut self) {
        let Some(c) = self.cycle.take() else { return };
        match c.position {
            Some((lat, lon, _)) => {
                let fix = Fix {
                    fix_time_us: None,
                    lat,
                    lon,
                    altitude_m: c.altitude,
                    speed_mps: c
                        .speed_knots
                        .and_then(|k| finite_f32(f64::from(k) * KNOTS_TO_MPS)),
                    heading_deg: c.course,
                    accuracy_m: c
                        .accuracy
                        .or_else(|| c.hdop.and_then(|h| hdop_to_accuracy(f64::from(h)))),
                };
                self.entries.push(Entry::Fix(fix, c.tod, c.date));
            }
            None => {
                if let Some(date) = c.date {
                    self.entries.push(Entry::Date(c.tod, date));
                }
            }
        }
    }

    fn finish(mut self) -> Vec<Entry> {
        self.flush();
        self.entries
    }

    fn take(&mut self, parsed: ParseResult) {
        match parsed {
            ParseResult::GGA(g) => {
                let Some(tod) = g.fix_time else { return };
                let c = self.cycle_at(tod);
                if g.fix_type.is_some_and(|t| t != FixType::Invalid) {
                    c.offer_position(g.latitude, g.longitude, 0);
                    c.altitude = c.altitude.or(g.altitude);
                    c.hdop = c.hdop.or(g.hdop);
                }
            }
            ParseResult::GNS(g) => {
                let Some(tod) = g.fix_time else { return };
                let c = self.cycle_at(tod);
                if FixType::from(g.faa_modes) != FixType::Invalid {
                    c.offer_position(g.lat, g.lon, 1);
                    c.altitude = c.altitude.or(g.alt);
                    c.hdop = c.hdop.or(g.hdop);
                }
            }
            ParseResult::RMC(r) => {
                let Some(tod) = r.fix_time else { return };
                if r.status_of_fix == nmea::sentences::rmc::RmcStatusOfFix::Invalid {
                    return;
                }
                let c = self.cycle_at(tod);
                c.offer_position(r.lat, r.lon, 2);
                c.date = c.date.or(r.fix_date);
                c.speed_knots = c.speed_knots.or(r.speed_over_ground);
                c.course = c.course.or(r.true_course);
            }
            ParseResult::GLL(g) => {
                let Some(tod) = g.fix_time else { return };
                let c = self.cycle_at(tod);
                if g.valid {
                    c.offer_position(g.latitude, g.longitude, 3);
                }
            }
            ParseResult::VTG(v) => {
                // VTG has no time: it belongs to the cycle it follows.
                if let Some(c) = self.cycle.as_mut().filter(|_| !self.interrupted) {
                    c.speed_knots = c.speed_knots.or(v.speed_over_ground);
                    c.course = c.course.or(v.true_course);
                }
            }
            ParseResult::ZDA(z) => {
                let (Some(tod), Some(date)) = (z.utc_time, z.utc_date()) else {
                    return;
                };
                let c = self.cycle_at(tod);
                c.date = c.date.or(Some(date));
            }
            ParseResult::GST(g) => {
                let Some(tod) = g.time else { return };
                let c = self.cycle_at(tod);
                if let (Some(lat), Some(lon)) = (g.lat_sd, g.long_sd) {
                    c.accuracy = c
                        .accuracy
                        .or(finite_f32(f64::from(lat).hypot(f64::from(lon))));
                }
            }
            _ => {}
        }
    }
}

/// Fixes with dates carried forward (and across midnight) and backward from the first date.
fn resolve_dates(entries: Vec<Entry>) -> Vec<Fix> {
    let half_day = TimeDelta::hours(12);
    let mut dates: Vec<Option<NaiveDate>> = Vec::with_capacity(entries.len());
    let mut current: Option<(NaiveDate, NaiveTime)> = None;
    for entry in &entries {
        let (tod, own) = match entry {
            Entry::Fix(_, tod, date) => (*tod, *date),
            Entry::Date(tod, date) => (*tod, Some(*date)),
        };
        let date = own.or_else(|| {
            current.map(|(date, previous)| {
                let crossed = previous - tod > half_day;
                if crossed {
                    date.succ_opt().unwrap_or(date)
                } else {
                    date
                }
            })
        });
        if let Some(date) = date {
            current = Some((date, tod));
        }
        dates.push(date);
    }
    if let Some(first) = dates.iter().position(Option::is_some) {
        let mut next = (dates[first].unwrap_or_default(), tod_of(&entries[first]));
        for i in (0..first).rev() {
            let tod = tod_of(&entries[i]);
            let crossed = tod - next.1 > half_day;
            let date = if crossed {
                next.0.pred_opt().unwrap_or(next.0)
            } else {
                next.0
            };
            dates[i] = Some(date);
            next = (date, tod);
        }
    }
    entries
        .into_iter()
        .zip(dates)
        .filter_map(|(entry, date)| match entry {
            Entry::Fix(mut fix, tod, _) => {
                fix.fix_time_us = date.and_then(|d| naive_to_micros(d.and_time(tod), 0));
                Some(fix)
            }
            Entry::Date(..) => None,
        })
        .collect()
}

fn tod_of(entry: &Entry) -> NaiveTime {
    match entry {
        Entry::Fix(_, tod, _) | Entry::Date(tod, _) => *tod,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn read_log(text: &str) -> (Vec<Fix>, Vec<crate::Warning>) {
        let src = Source {
            path: Path::new("t.nmea"),
            device: "t".into(),
        };
        let (tracks, warnings) = read(&src, text.as_bytes()).expect("readable");
        (
            tracks.into_iter().flat_map(|t| t.fixes).collect(),
            warnings.into_vec(),
        )
    }

    /// Appends the checksum to a sentence body (`GPGGA,...`).
    fn s(body: &str) -> String {
        let sum = body.bytes().fold(0u8, |a, b| a ^ b);
        format!("${body}*{sum:02X}\n")
    }

    #[test]
    fn gga_and_rmc_of_one_time_merge() {
        let log = s("GPGGA,120000.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")
            + &s("GNRMC,120000.00,A,4807.040,N,01131.000,E,10.0,84.4,230394,,,A");
        let (fixes, warnings) = read_log(&log);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(fixes.len(), 1);
        let f = fixes[0];
        assert!(
            (f.lat - 48.1173).abs() < 1e-9,
            "the GGA position wins: {}",
            f.lat
        );
        assert_eq!(f.altitude_m, Some(545.4));
        assert_eq!(f.accuracy_m, Some(4.5));
        assert!((f.speed_mps.unwrap_or(0.0) - 5.144_444).abs() < 1e-4);
        assert_eq!(f.heading_deg, Some(84.4));
        assert_eq!(f.fix_time_us, Some(764_424_000 * 1_000_000));
    }

    #[test]
    fn dates_go_back_to_the_start_and_over_midnight() {
        let log = s("GPGGA,235959,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")
            + &s("GPRMC,000001,A,4807.038,N,01131.000,E,0,0,240394,,,A")
            + &s("GPGGA,235959,4807.038,N,01131.000,E,0,08,0.9,545.4,M,46.9,M,,")
            + &s("GPGGA,000002,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,");
        let (fixes, _) = read_log(&log);
        let times: Vec<_> = fixes.iter().map(|f| f.fix_time_us).collect();
        let midnight = 764_467_200 * 1_000_000; // 1994-03-24T00:00:00Z
        assert_eq!(
            times,
            vec![
                Some(midnight - 1_000_000),
                Some(midnight + 1_000_000),
                Some(midnight + 2_000_000)
            ]
        );
    }

    #[test]
    fn no_date_means_no_time_and_garbage_warns() {
        let log = "hello there\n".to_string()
            + &s("GPGGA,000001,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")
            + "$GPGGA,000002,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*00\n"
            + "$GPGSA,A,1,,,*1E"
            + &s("GPGGA,000003,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,");
        let (fixes, warnings) = read_log(&log);
        assert_eq!(fixes.len(), 2);
        assert!(fixes.iter().all(|f| f.fix_time_us.is_none()));
        let locations: Vec<_> = warnings.iter().map(|w| w.location.as_str()).collect();
        assert_eq!(locations, vec!["line 1", "line 3"]);
        assert!(warnings[1].message.contains("checksum"), "{warnings:?}");
    }

    #[test]
    fn old_gll_and_silent_no_fix() {
        let log = s("GPGLL,3908.8199,N,00023.0832,W,120824.758,A")
            + &s("GPRMC,000417.984,V,36000.0000,N,72000.0000,E,0.000000,,260120,,");
        let (fixes, warnings) = read_log(&log);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(fixes.len(), 1);
        assert!((fixes[0].lon + 0.384_72).abs() < 1e-5, "{:?}", fixes[0]);
    }
}
