//! GPX 1.0 and 1.1 through the `gpx` crate, with a lenient fallback.
//!
//! All track points of all tracks and segments make one track, in file order; a file without
//! track points gives its route points, and one without those its waypoints.
//!
//! Quirks handled:
//! - a UTF-8 byte-order mark before the XML declaration is dropped;
//! - times with offsets (`+01:00`) and fractions (`.994`) become UTC microseconds; a time-less
//!   point has `fix_time_us: None`; placeholder times (1901, 1970) pass through as written;
//! - `<ele/>` and other empty elements are `None`;
//! - HDOP becomes `accuracy_m` through [`crate::HDOP_TO_METRES`];
//! - the gpx crate refuses several kinds of real files: `<gpx>` without a `version` attribute,
//!   GPX 1.0 `<course>`, `<speed>` in a GPX 1.1 file, coordinates out of range (which this crate
//!   passes through), unknown child elements. Those files are read again by the lenient reader in
//!   `gpx_lenient.rs`, which also reads `<course>`, and a warning says so. Only when the lenient
//!   reader fails too (the XML itself is broken) is the file an error.

use std::io::BufReader;

use time::OffsetDateTime;

use crate::error::Warnings;
use crate::values::{finite_f32, hdop_to_accuracy};
use crate::{Fix, ReadResult, Source, Track, gpx_lenient};

pub(crate) fn read(src: &Source<'_>, bytes: &[u8]) -> ReadResult {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let mut warnings = Warnings::default();
    let fixes = match ::gpx::read(BufReader::new(bytes)) {
        Ok(doc) => from_document(&doc),
        Err(refused) => {
            let fixes = gpx_lenient::read(src, bytes, &mut warnings)?;
            warnings.push(
                "file",
                format!("the gpx crate refused this file ({refused}); read it leniently instead"),
            );
            fixes
        }
    };
    let track = Track {
        device: src.device.clone(),
        fixes,
    };
    Ok((vec![track], warnings))
}

/// Track points, else route points, else waypoints, of a parsed document.
fn from_document(doc: &::gpx::Gpx) -> Vec<Fix> {
    let track_points: Vec<Fix> = doc
        .tracks
        .iter()
        .flat_map(|t| &t.segments)
        .flat_map(|s| &s.points)
        .map(from_waypoint)
        .collect();
    if !track_points.is_empty() {
        return track_points;
    }
    let route_points: Vec<Fix> = doc
        .routes
        .iter()
        .flat_map(|r| &r.points)
        .map(from_waypoint)
        .collect();
    if !route_points.is_empty() {
        return route_points;
    }
    doc.waypoints.iter().map(from_waypoint).collect()
}

fn from_waypoint(w: &::gpx::Waypoint) -> Fix {
    let point = w.point();
    Fix {
        fix_time_us: w.time.and_then(|t| micros(t.into())),
        lat: point.y(),
        lon: point.x(),
        altitude_m: w.elevation.and_then(finite_f32),
        speed_mps: w.speed.and_then(finite_f32),
        heading_deg: None,
        accuracy_m: w.hdop.and_then(hdop_to_accuracy),
    }
}

/// Microseconds since the epoch of a `time` date-time (always fits: `time` stops at year 9999).
pub(crate) fn micros(t: OffsetDateTime) -> Option<i64> {
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000)).ok()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn read_str(xml: &str) -> (Vec<Fix>, Vec<crate::Warning>) {
        let src = Source {
            path: Path::new("t.gpx"),
            device: "t".into(),
        };
        let (tracks, warnings) = read(&src, xml.as_bytes()).expect("readable");
        (
            tracks.into_iter().flat_map(|t| t.fixes).collect(),
            warnings.into_vec(),
        )
    }

    #[test]
    fn track_points_with_offset_and_fraction() {
        let (fixes, warnings) = read_str(
            r#"<?xml version="1.0"?><gpx version="1.1" creator="x"><trk><trkseg>
            <trkpt lat="57.011456" lon="9.992872"><ele>23.5</ele>
            <time>2015-12-11T15:43:13.994+01:00</time><hdop>2</hdop></trkpt>
            </trkseg><trkseg/></trk></gpx>"#,
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(fixes.len(), 1);
        assert_eq!(fixes[0].fix_time_us, Some(1_449_844_993_994_000));
        assert_eq!(fixes[0].altitude_m, Some(23.5));
        assert_eq!(fixes[0].accuracy_m, Some(10.0));
    }

    #[test]
    fn route_points_when_no_track_points() {
        let (fixes, _) = read_str(
            r#"<gpx version="1.0"><wpt lat="1" lon="2"/><rte><rtept lat="3" lon="4"/></rte></gpx>"#,
        );
        assert_eq!(fixes, vec![Fix::at(3.0, 4.0)]);
    }

    #[test]
    fn refused_files_fall_back_with_a_warning() {
        let (fixes, warnings) = read_str(
            "\u{feff}<gpx><trk><trkseg><trkpt lat=\"91\" lon=\"180\"><course>12.5</course>\
             <speed>3</speed></trkpt></trkseg></trk></gpx>",
        );
        assert_eq!(fixes.len(), 1);
        assert_eq!((fixes[0].lat, fixes[0].lon), (91.0, 180.0));
        assert_eq!(fixes[0].heading_deg, Some(12.5));
        assert_eq!(fixes[0].speed_mps, Some(3.0));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].message.contains("gpx crate refused"));
    }
}

/// The lenient reader must agree with the gpx crate wherever the crate reads a file, or the
/// same file would read differently depending on an unrelated quirk elsewhere in it.
#[cfg(test)]
mod agreement {
    use std::path::Path;

    use super::*;

    fn check(name: &str, bytes: &[u8]) {
        let Ok(doc) = ::gpx::read(BufReader::new(bytes)) else {
            return;
        };
        let src = Source {
            path: Path::new(name),
            device: "t".into(),
        };
        let mut warnings = Warnings::default();
        let lenient = gpx_lenient::read(&src, bytes, &mut warnings).expect("lenient read");
        assert_eq!(from_document(&doc), lenient, "{name}");
        assert!(warnings.into_vec().is_empty(), "{name}");
    }

    #[test]
    fn on_small_documents() {
        check(
            "a.gpx",
            br#"<gpx version="1.1"><wpt lat="1" lon="2"><time>2001-10-26T21:32:52</time>
            </wpt><trk><trkseg><trkpt lat="-1.5" lon="-2.5"><ele/><hdop>0.7</hdop>
            <time>1996-12-19T16:39:57-08:00</time><extensions><x>1</x></extensions>
            </trkpt></trkseg></trk></gpx>"#,
        );
        check(
            "b.gpx",
            br#"<gpx version="1.0"><rte><rtept lat="1" lon="2"><ele>3.25</ele>
            <speed>4</speed></rtept></rte></gpx>"#,
        );
    }

    #[test]
    fn on_the_data_set() {
        let dir = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/tracks/gpx"
        ));
        let Ok(entries) = std::fs::read_dir(dir) else {
            // The data set is optional; tests/dataset.rs says so when it is absent.
            return;
        };
        for entry in entries.flatten() {
            let bytes = std::fs::read(entry.path()).expect("readable file");
            let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
            check(&entry.path().display().to_string(), bytes);
        }
    }
}
