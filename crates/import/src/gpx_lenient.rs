//! A lenient GPX reader for the files the `gpx` crate refuses.
//!
//! It walks the XML events (xml-rs, the parser under the gpx crate) and reads the points that
//! GPX 1.0 and 1.1 define, whatever else the file holds: the root must be `<gpx>`, but its
//! `version` may be missing, unknown child elements are skipped, GPX 1.0 `<course>` and
//! `<speed>` are read in either version, and coordinates are not range-checked. A value that does
//! not parse is a warning and `None` (or, for `lat`/`lon`, a skipped point); broken XML is an
//! error naming the line.

use time::format_description::well_known::Iso8601;
use time::{OffsetDateTime, PrimitiveDateTime};
use xml::reader::{ParserConfig, XmlEvent};

use crate::error::{Warnings, lower_first};
use crate::values::{finite_f32, hdop_to_accuracy, parse_number, parse_time};
use crate::{Fix, Format, ImportError, Source};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Track,
    Route,
    Waypoint,
}

/// A point being read: its fix so far, where it started, and the child element being read.
struct Open {
    kind: Kind,
    fix: Fix,
    line: u64,
    depth: usize,
    child: Option<String>,
    text: String,
}

/// Track points, else route points, else waypoints, in file order.
pub(crate) fn read(
    src: &Source<'_>,
    bytes: &[u8],
    warnings: &mut Warnings,
) -> Result<Vec<Fix>, ImportError> {
    let mut reader = ParserConfig::new()
        .cdata_to_characters(true)
        .ignore_comments(true)
        .create_reader(bytes);
    let mut points: [Vec<Fix>; 3] = Default::default();
    let mut depth = 0usize;
    let mut open: Option<Open> = None;
    // A point with unreadable coordinates is skipped down to its end tag at this depth.
    let mut skipping: Option<usize> = None;
    loop {
        let event = reader.next().map_err(|e| {
            let row = xml::common::Position::position(&e).row + 1;
            src.malformed(Format::Gpx, format!("line {row}"), lower_first(e.msg()))
        })?;
        let line = xml::common::Position::position(&reader).row + 1;
        match event {
            XmlEvent::StartElement {
                name, attributes, ..
            } => {
                depth += 1;
                let local = name.local_name.as_str();
                if depth == 1 && local != "gpx" {
                    let message = format!("the root element is <{local}>, not <gpx>");
                    return Err(src.malformed(Format::Gpx, format!("line {line}"), message));
                }
                if skipping.is_some() {
                    continue;
                }
                if let Some(p) = open.as_mut() {
                    if depth == p.depth + 1 {
                        p.child = Some(local.to_string());
                        p.text.clear();
                    }
                    continue;
                }
                let kind = match local {
                    "trkpt" => Kind::Track,
                    "rtept" => Kind::Route,
                    "wpt" => Kind::Waypoint,
                    _ => continue,
                };
                let coord = |key: &str| {
                    attributes
                        .iter()
                        .find(|a| a.name.local_name == key)
                        .and_then(|a| parse_number(&a.value))
                };
                match (coord("lat"), coord("lon")) {
                    (Some(lat), Some(lon)) => {
                        open = Some(Open {
                            kind,
                            fix: Fix::at(lat, lon),
                            line,
                            depth,
                            child: None,
                            text: String::new(),
                        });
                    }
                    _ => {
                        let message = format!("<{local}> without a readable lat and lon; skipped");
                        warnings.push(format!("line {line}"), message);
                        skipping = Some(depth);
                    }
                }
            }
            XmlEvent::Characters(text) => {
                if let Some(p) = open.as_mut().filter(|p| depth == p.depth + 1) {
                    p.text.push_str(&text);
                }
            }
            XmlEvent::EndElement { .. } => {
                if skipping == Some(depth) {
                    skipping = None;
                } else if let Some(mut p) = open.take() {
                    if depth == p.depth + 1 {
                        apply_child(&mut p, warnings);
                        open = Some(p);
                    } else if depth == p.depth {
                        points[p.kind as usize].push(p.fix);
                    } else {
                        open = Some(p);
                    }
                }
                depth = depth.saturating_sub(1);
            }
            XmlEvent::EndDocument => break,
            _ => {}
        }
    }
    let [track, route, waypoints] = points;
    Ok(if !track.is_empty() {
        track
    } else if !route.is_empty() {
        route
    } else {
        waypoints
    })
}

/// Stores the text of the point's child element that just ended.
fn apply_child(p: &mut Open, warnings: &mut Warnings) {
    let Some(child) = p.child.take() else { return };
    let text = p.text.trim();
    if text.is_empty() {
        return;
    }
    let number = || parse_number(text).and_then(finite_f32);
    let parsed = match child.as_str() {
        "ele" => number().map(|v| p.fix.altitude_m = Some(v)),
        "speed" => number().map(|v| p.fix.speed_mps = Some(v)),
        "course" => number().map(|v| p.fix.heading_deg = Some(v)),
        "hdop" => parse_number(text)
            .and_then(hdop_to_accuracy)
            .map(|v| p.fix.accuracy_m = Some(v)),
        "time" => parse_gpx_time(text).map(|v| p.fix.fix_time_us = Some(v)),
        _ => Some(()),
    };
    if parsed.is_none() {
        let message = format!("unreadable <{child}> {text:?} in the point starting here");
        warnings.push(format!("line {}", p.line), message);
    }
}

/// An xsd:dateTime the way the gpx crate reads it (ISO 8601, UTC when no offset is given),
/// else any time [`parse_time`] understands.
fn parse_gpx_time(text: &str) -> Option<i64> {
    OffsetDateTime::parse(text, &Iso8601::PARSING)
        .or_else(|_| PrimitiveDateTime::parse(text, &Iso8601::PARSING).map(|t| t.assume_utc()))
        .ok()
        .and_then(crate::gpx::micros)
        .or_else(|| parse_time(text, None))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn read_str(xml: &str) -> Result<(Vec<Fix>, Vec<crate::Warning>), ImportError> {
        let src = Source {
            path: Path::new("t.gpx"),
            device: "t".into(),
        };
        let mut warnings = Warnings::default();
        let fixes = read(&src, xml.as_bytes(), &mut warnings)?;
        Ok((fixes, warnings.into_vec()))
    }

    #[test]
    fn reads_points_and_skips_extensions() {
        let (fixes, warnings) = read_str(
            r#"<gpx><trk><trkseg><trkpt lat="1.5" lon="2.5"><ele>10</ele>
            <time>2020-01-01T00:00:00.5Z</time><extensions><ele>99</ele></extensions>
            <hdop>1.2</hdop></trkpt></trkseg></trk><wpt lat="0" lon="0"/></gpx>"#,
        )
        .expect("readable");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(fixes.len(), 1);
        assert_eq!(fixes[0].altitude_m, Some(10.0));
        assert_eq!(fixes[0].fix_time_us, Some(1_577_836_800_500_000));
        assert_eq!(fixes[0].accuracy_m, Some(6.0));
    }

    #[test]
    fn bad_values_warn_and_bad_points_are_skipped() {
        let (fixes, warnings) = read_str(
            "<gpx>\n<wpt lat=\"x\" lon=\"1\"><ele>1</ele></wpt>\n\
             <wpt lat=\"1\" lon=\"2\"><ele>high</ele><time>noon</time></wpt></gpx>",
        )
        .expect("readable");
        assert_eq!(fixes, vec![Fix::at(1.0, 2.0)]);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert_eq!(warnings[0].location, "line 2");
        assert_eq!(warnings[1].location, "line 3");
    }

    #[test]
    fn broken_xml_is_an_error_with_a_line() {
        let err = read_str("<gpx>\n<trk><trkseg><trkpt lat=\"1\" lon=\"2\">").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("t.gpx: line "), "{text}");
        let err = read_str("<kml></kml>").unwrap_err();
        assert!(err.to_string().contains("not <gpx>"), "{err}");
    }
}
