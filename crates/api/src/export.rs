//! Export formats, written piece by piece so an export streams: a head, one piece per journey,
//! a tail. Times are RFC 3339 UTC with microseconds.
//!
//! - GPX 1.1: one `trk` per journey, one `trkseg`, `trkpt` with `ele` and `time`.
//! - GeoJSON (RFC 7946): a FeatureCollection, one LineString feature per journey with
//!   `[lon, lat(, alt)]` coordinates and the fix times in `properties.times`.
//! - CSV: one row per position, with its quality flags.
//! - Parquet: journeyd-archive's schema version 1, one row per position (written by
//!   [`ParquetSink`], not by the text pieces below).

use std::fmt::Write;

use journeyd_wire::Position;

use crate::routes::rfc3339;

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Gpx,
    GeoJson,
    Csv,
    Parquet,
}

impl Format {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "gpx" => Some(Self::Gpx),
            "geojson" => Some(Self::GeoJson),
            "csv" => Some(Self::Csv),
            "parquet" => Some(Self::Parquet),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Gpx => "application/gpx+xml",
            Self::GeoJson => "application/geo+json",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Parquet => "application/vnd.apache.parquet",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Gpx => "gpx",
            Self::GeoJson => "geojson",
            Self::Csv => "csv",
            Self::Parquet => "parquet",
        }
    }

    pub fn head(self, title: &str) -> String {
        match self {
            Self::Gpx => format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<gpx version=\"1.1\" creator=\"journeyd\" xmlns=\"http://www.topografix.com/GPX/1/1\">\n<metadata><name>{}</name></metadata>\n",
                xml_escape(title)
            ),
            Self::GeoJson => "{\"type\":\"FeatureCollection\",\"features\":[".into(),
            Self::Csv => "device,journey,fix_time,lat,lon,altitude_m,speed_mps,heading_deg,accuracy_m,quality\n".into(),
            Self::Parquet => String::new(),
        }
    }

    /// One journey's positions (usable or not: exports hold everything, with flags in CSV;
    /// GPX and GeoJSON, which draw lines, leave flagged positions out).
    pub fn journey(self, device: u64, journey: u64, positions: &[Position], first: bool) -> String {
        let mut out = String::new();
        match self {
            Self::Gpx => {
                let _ = writeln!(
                    out,
                    "<trk><name>device {device} journey {journey}</name><trkseg>"
                );
                for p in positions
                    .iter()
                    .filter(|p| p.quality().is_usable_for_track())
                {
                    // GPX longitudes are -180 <= lon < 180: the antimeridian is written as -180.
                    let lon = if p.lon == 180.0 { -180.0 } else { p.lon };
                    let _ = write!(out, "<trkpt lat=\"{}\" lon=\"{lon}\">", p.lat);
                    if let Some(e) = p.altitude() {
                        let _ = write!(out, "<ele>{e}</ele>");
                    }
                    let _ = writeln!(out, "<time>{}</time></trkpt>", rfc3339(p.fix_time_us));
                }
                out.push_str("</trkseg></trk>\n");
            }
            Self::GeoJson => {
                if !first {
                    out.push(',');
                }
                let usable: Vec<&Position> = positions
                    .iter()
                    .filter(|p| p.quality().is_usable_for_track())
                    .collect();
                let coordinates: Vec<serde_json::Value> = usable
                    .iter()
                    .map(|p| match p.altitude() {
                        Some(a) => serde_json::json!([p.lon, p.lat, a]),
                        None => serde_json::json!([p.lon, p.lat]),
                    })
                    .collect();
                let times: Vec<String> = usable.iter().map(|p| rfc3339(p.fix_time_us)).collect();
                // RFC 7946: a LineString needs two or more positions; a lone fix is a Point.
                let geometry = match coordinates.len() {
                    0 => serde_json::Value::Null,
                    1 => serde_json::json!({"type": "Point", "coordinates": coordinates[0]}),
                    _ => serde_json::json!({"type": "LineString", "coordinates": coordinates}),
                };
                let feature = serde_json::json!({
                    "type": "Feature",
                    "geometry": geometry,
                    "properties": {"device": device, "journey": journey.to_string(), "times": times},
                });
                out.push_str(&feature.to_string());
            }
            Self::Parquet => {}
            Self::Csv => {
                for p in positions {
                    let opt = |v: Option<f32>| v.map(|v| v.to_string()).unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "{device},{journey},{},{},{},{},{},{},{},{}",
                        rfc3339(p.fix_time_us),
                        p.lat,
                        p.lon,
                        opt(p.altitude()),
                        opt(p.speed()),
                        opt(p.heading()),
                        opt(p.accuracy()),
                        p.quality
                    );
                }
            }
        }
        out
    }

    pub fn tail(self) -> &'static str {
        match self {
            Self::Gpx => "</gpx>\n",
            Self::GeoJson => "]}\n",
            Self::Csv | Self::Parquet => "",
        }
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A `Write` that hands what it is given to a response stream in pieces of about 256 KiB.
pub struct ParquetSink {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for ParquetSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetSink")
            .field("buffered", &self.buf.len())
            .finish()
    }
}

const SINK_PIECE: usize = 256 * 1024;

impl ParquetSink {
    pub fn new(tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(SINK_PIECE),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = bytes::Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(SINK_PIECE),
        ));
        self.tx.blocking_send(Ok(piece)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl std::io::Write for ParquetSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= SINK_PIECE {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}
