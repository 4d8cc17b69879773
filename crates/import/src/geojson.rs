//! GeoJSON (RFC 7946) through the `geojson` crate.
//!
//! A FeatureCollection, a Feature or a bare Geometry; the positions of every Point, MultiPoint,
//! LineString and MultiLineString (also inside GeometryCollections) make one track in file order.
//! Coordinates are `[lon, lat, alt?]`.
//!
//! Quirks handled:
//! - times are usually absent (`fix_time_us: None`); a feature whose properties hold a `times` or
//!   `coordTimes` array (also under `coordinateProperties`, as togeojson writes it), flat or one
//!   array per line, gets one time per position: ISO 8601 strings or epoch numbers. An array
//!   whose length does not match the positions is ignored with a warning;
//! - polygons are areas, not tracks: skipped with a warning;
//! - a UTF-8 byte-order mark is dropped.

use geojson::{Feature, GeoJson, GeometryValue, JsonObject, JsonValue, Position};

use crate::error::{Warnings, lower_first};
use crate::values::{epoch_to_micros, finite_f32, parse_time};
use crate::{Fix, Format, ReadResult, Source, Track};

pub(crate) fn read(src: &Source<'_>, bytes: &[u8]) -> ReadResult {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let message = format!("not utf-8 text ({e})");
        src.malformed(
            Format::GeoJson,
            format!("byte {}", e.valid_up_to()),
            message,
        )
    })?;
    let doc: GeoJson = text.parse().map_err(|e: geojson::Error| {
        let location = match &e {
            geojson::Error::MalformedGeoJson(json) if json.line() > 0 => {
                format!("line {}", json.line())
            }
            _ => "file".to_string(),
        };
        src.malformed(Format::GeoJson, location, lower_first(&e.to_string()))
    })?;
    let features = match doc {
        GeoJson::FeatureCollection(collection) => collection.features,
        GeoJson::Feature(feature) => vec![feature],
        GeoJson::Geometry(geometry) => vec![Feature::from(geometry)],
    };
    let mut warnings = Warnings::default();
    let mut fixes = Vec::new();
    for (index, feature) in features.iter().enumerate() {
        let location = format!("feature {}", index + 1);
        fixes.extend(feature_fixes(feature, &location, &mut warnings));
    }
    let track = Track {
        device: src.device.clone(),
        fixes,
    };
    Ok((vec![track], warnings))
}

fn feature_fixes(feature: &Feature, location: &str, warnings: &mut Warnings) -> Vec<Fix> {
    let Some(geometry) = &feature.geometry else {
        return Vec::new();
    };
    let mut positions = Vec::new();
    collect_positions(&geometry.value, &mut positions, location, warnings);
    let mut fixes = Vec::with_capacity(positions.len());
    for (i, position) in positions.iter().enumerate() {
        match position.as_slice() {
            [lon, lat, rest @ ..] => {
                let mut fix = Fix::at(*lat, *lon);
                fix.altitude_m = rest.first().copied().and_then(finite_f32);
                fixes.push(fix);
            }
            _ => {
                let note = format!("position {} has fewer than two coordinates; skipped", i + 1);
                warnings.push(location, note);
            }
        }
    }
    if let Some(times) = feature.properties.as_ref().and_then(times_of) {
        if times.len() == fixes.len() {
            for (fix, time) in fixes.iter_mut().zip(times) {
                fix.fix_time_us = time;
            }
        } else {
            let note = format!(
                "{} times for {} positions; times ignored",
                times.len(),
                fixes.len()
            );
            warnings.push(location, note);
        }
    }
    fixes
}

fn collect_positions<'a>(
    value: &'a GeometryValue,
    out: &mut Vec<&'a Position>,
    location: &str,
    warnings: &mut Warnings,
) {
    match value {
        GeometryValue::Point { coordinates } => out.push(coordinates),
        GeometryValue::MultiPoint { coordinates } | GeometryValue::LineString { coordinates } => {
            out.extend(coordinates);
        }
        GeometryValue::MultiLineString { coordinates } => out.extend(coordinates.iter().flatten()),
        GeometryValue::GeometryCollection { geometries } => {
            for geometry in geometries {
                collect_positions(&geometry.value, out, location, warnings);
            }
        }
        GeometryValue::Polygon { .. } | GeometryValue::MultiPolygon { .. } => {
            let note = format!("{} is an area, not a track; skipped", value.type_name());
            warnings.push(location, note);
        }
    }
}

/// The per-position times of a feature, flattened, if its properties have them.
fn times_of(properties: &JsonObject) -> Option<Vec<Option<i64>>> {
    let nested = properties
        .get("coordinateProperties")
        .and_then(JsonValue::as_object);
    let array = ["coordTimes", "times"]
        .iter()
        .find_map(|key| properties.get(*key).or_else(|| nested?.get(*key)))?
        .as_array()?;
    let mut out = Vec::new();
    for item in array {
        match item {
            JsonValue::Array(inner) => out.extend(inner.iter().map(time_of)),
            other => out.push(time_of(other)),
        }
    }
    Some(out)
}

fn time_of(value: &JsonValue) -> Option<i64> {
    match value {
        JsonValue::String(s) => parse_time(s, None),
        JsonValue::Number(n) => epoch_to_micros(&n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn read_text(text: &str) -> (Vec<Fix>, Vec<crate::Warning>) {
        let src = Source {
            path: Path::new("g.geojson"),
            device: "g".into(),
        };
        let (tracks, warnings) = read(&src, text.as_bytes()).expect("readable");
        (
            tracks.into_iter().flat_map(|t| t.fixes).collect(),
            warnings.into_vec(),
        )
    }

    #[test]
    fn lines_points_and_times() {
        let (fixes, warnings) = read_text(
            r#"{"type":"FeatureCollection","features":[
            {"type":"Feature","properties":{"coordTimes":[["2020-01-01T00:00:00Z"],[1577836801]]},
             "geometry":{"type":"MultiLineString","coordinates":[[[1,2,3]],[[4,5]]]}},
            {"type":"Feature","properties":null,"geometry":{"type":"Point","coordinates":[6,7]}},
            {"type":"Feature","properties":{"times":[1]},
             "geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[0,1],[0,0]]]}}]}"#,
        );
        assert_eq!(fixes.len(), 3);
        assert_eq!(
            (fixes[0].lat, fixes[0].lon, fixes[0].altitude_m),
            (2.0, 1.0, Some(3.0))
        );
        assert_eq!(fixes[0].fix_time_us, Some(1_577_836_800_000_000));
        assert_eq!(fixes[1].fix_time_us, Some(1_577_836_801_000_000));
        assert_eq!(fixes[2].fix_time_us, None);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert_eq!(warnings[0].location, "feature 3");
    }
}
