//! Reads recorded GPS tracks (GPX, FIT, NMEA 0183, CSV, GeoJSON) into plain fixes.
//!
//! This crate does no network I/O and knows nothing of the wire protocol or the store: it turns
//! files into [`Track`]s of [`Fix`]es. Deciding what is plausible is the server's job (the
//! validation rules of journeyd-wire); this crate reports what a file says, passes odd values
//! through as read (a latitude of 91, a 1901 placeholder time, a GPS week-rollover date) and says
//! what it could not read: a value that cannot be parsed never becomes NaN, it becomes a
//! [`Warning`] and the record is skipped or the optional field is `None`.
//!
//! # Map
//!
//! | file | what |
//! | --- | --- |
//! | `lib.rs` | the public types, [`read_file`], [`read_bytes`], format detection |
//! | `error.rs` | [`ImportError`], and the capped warning list every reader fills |
//! | `values.rs` | numbers with units, times in the many shapes files write them |
//! | `gpx.rs`, `gpx_lenient.rs` | GPX through the gpx crate; a lenient reader for what it refuses |
//! | `fit.rs`, `fit_resync.rs` | FIT through fitparser; chained files, damage, resynchronisation |
//! | `nmea.rs` | NMEA 0183 logs: sentence merging by time of day, dates from RMC/ZDA |
//! | `csv.rs`, `columns.rs`, `plt.rs` | delimited text with guessed columns; OziExplorer `.plt` |
//! | `geojson.rs` | GeoJSON geometries, features and collections |
//!
//! # Contract
//!
//! - One [`Track`] per file, named after the file stem, or one per vehicle when a CSV file has a
//!   vehicle column (`MMSI`, `VehicleRef`, `vehicle_id`, `device`, ...), named `stem/vehicle`.
//! - Fixes stay in file order: nothing is sorted, merged across tracks or deduplicated.
//! - A file that is readable but holds no positions gives `Ok` with no tracks and a warning; a file
//!   that cannot be read at all gives an [`ImportError`] naming the file and, where it applies, the
//!   line, record or byte offset.
//! - No input makes a reader panic. The FIT reader, which wraps a parser of binary input, also
//!   catches an unexpected panic of that parser: it counts as damage at that message.

mod columns;
mod csv;
mod error;
mod fit;
mod fit_resync;
mod geojson;
mod gpx;
mod gpx_lenient;
mod nmea;
mod plt;
mod values;

use std::fmt;
use std::path::{Path, PathBuf};

pub use error::{ImportError, MAX_WARNINGS};
pub use values::HDOP_TO_METRES;

/// One position as a file records it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fix {
    /// Microseconds since the Unix epoch, UTC; `None` where the file has no time for this point.
    pub fix_time_us: Option<i64>,
    /// Degrees north, WGS 84, as read (not range-checked).
    pub lat: f64,
    /// Degrees east, WGS 84, as read (not range-checked).
    pub lon: f64,
    /// Metres above mean sea level (or whatever height the device wrote).
    pub altitude_m: Option<f32>,
    /// Speed over ground in metres per second.
    pub speed_mps: Option<f32>,
    /// Direction of travel or heading in degrees clockwise from north, as the file gives it.
    pub heading_deg: Option<f32>,
    /// Horizontal accuracy in metres: the file's own figure, or HDOP × [`HDOP_TO_METRES`].
    pub accuracy_m: Option<f32>,
}

impl Fix {
    /// A fix at `lat`, `lon` with every optional field empty.
    pub fn at(lat: f64, lon: f64) -> Self {
        Fix {
            fix_time_us: None,
            lat,
            lon,
            altitude_m: None,
            speed_mps: None,
            heading_deg: None,
            accuracy_m: None,
        }
    }
}

/// The fixes of one device, in file order.
#[derive(Clone, Debug, PartialEq)]
pub struct Track {
    /// The file stem (`route14_outbound`), plus `/<vehicle id>` when a CSV file is split by a
    /// vehicle column (`route14_outbound/4716`).
    pub device: String,
    pub fixes: Vec<Fix>,
}

/// Everything read from one file.
#[derive(Clone, Debug, PartialEq)]
pub struct FileTracks {
    pub path: PathBuf,
    pub format: Format,
    pub tracks: Vec<Track>,
    /// Records skipped or fields left empty, and why: at most [`MAX_WARNINGS`], then one that
    /// counts the rest, and one more when the file has no positions at all.
    pub warnings: Vec<Warning>,
}

impl FileTracks {
    /// Fixes over all tracks.
    pub fn fix_count(&self) -> usize {
        self.tracks.iter().map(|t| t.fixes.len()).sum()
    }
}

/// The track formats this crate reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Gpx,
    Fit,
    Nmea,
    Csv,
    GeoJson,
}

impl Format {
    /// Lower-case name, as used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Format::Gpx => "gpx",
            Format::Fit => "fit",
            Format::Nmea => "nmea",
            Format::Csv => "csv",
            Format::GeoJson => "geojson",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Something in a file that was skipped or could not be read, without failing the whole file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// Where: `line 17`, `record 1234`, `byte 0x5b5d`, or `file`.
    pub location: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Reads the track file at `path`; the format comes from the extension, else from the content.
pub fn read_file(path: &Path) -> Result<FileTracks, ImportError> {
    let bytes = std::fs::read(path).map_err(|cause| ImportError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    read_named(path, &bytes)
}

/// Like [`read_file`], from memory: `name` gives the extension for format detection, the device
/// name and the file name in messages.
pub fn read_bytes(name: &str, bytes: &[u8]) -> Result<FileTracks, ImportError> {
    read_named(Path::new(name), bytes)
}

fn read_named(path: &Path, bytes: &[u8]) -> Result<FileTracks, ImportError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ImportError::Empty {
            path: path.to_path_buf(),
        });
    }
    let format = detect_format(path, bytes).ok_or_else(|| ImportError::UnknownFormat {
        path: path.to_path_buf(),
    })?;
    let ctx = Source {
        path,
        device: device_name(path),
    };
    let (tracks, warnings) = match format {
        Format::Gpx => gpx::read(&ctx, bytes)?,
        Format::Fit => fit::read(&ctx, bytes)?,
        Format::Nmea => nmea::read(&ctx, bytes)?,
        Format::Csv if plt::is_plt(path, bytes) => plt::read(&ctx, bytes)?,
        Format::Csv => csv::read(&ctx, bytes)?,
        Format::GeoJson => geojson::read(&ctx, bytes)?,
    };
    let tracks: Vec<Track> = tracks.into_iter().filter(|t| !t.fixes.is_empty()).collect();
    let mut warnings = warnings.into_vec();
    if tracks.is_empty() {
        warnings.push(Warning {
            location: "file".to_string(),
            message: format!("no positions in this {format} file"),
        });
    }
    Ok(FileTracks {
        path: path.to_path_buf(),
        format,
        tracks,
        warnings,
    })
}

/// What every reader needs to know about the file besides its bytes.
#[derive(Debug)]
pub(crate) struct Source<'a> {
    pub(crate) path: &'a Path,
    /// The device name of the file's track, from the file stem.
    pub(crate) device: String,
}

impl Source<'_> {
    /// An [`ImportError::Malformed`] for this file.
    pub(crate) fn malformed(
        &self,
        format: Format,
        location: impl Into<String>,
        message: impl Into<String>,
    ) -> ImportError {
        ImportError::Malformed {
            path: self.path.to_path_buf(),
            format,
            location: location.into(),
            message: message.into(),
        }
    }
}

/// The result every format reader returns: tracks, possibly empty, and warnings.
pub(crate) type ReadResult = Result<(Vec<Track>, error::Warnings), ImportError>;

fn device_name(path: &Path) -> String {
    match path.file_stem().map(|s| s.to_string_lossy()) {
        Some(stem) if !stem.is_empty() => stem.into_owned(),
        _ => "track".to_string(),
    }
}

/// The format named by the extension, else the one the content looks like.
pub fn detect_format(path: &Path, bytes: &[u8]) -> Option<Format> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "gpx" => Some(Format::Gpx),
        "fit" => Some(Format::Fit),
        "nmea" | "nmea0183" | "nma" => Some(Format::Nmea),
        "csv" | "tsv" | "plt" => Some(Format::Csv),
        "geojson" | "json" => Some(Format::GeoJson),
        "txt" | "log" if looks_like_nmea(bytes) => Some(Format::Nmea),
        "txt" => Some(Format::Csv),
        _ => sniff_format(bytes),
    }
}

fn sniff_format(bytes: &[u8]) -> Option<Format> {
    if bytes.len() >= 12 && &bytes[8..12] == b".FIT" {
        return Some(Format::Fit);
    }
    let head = &bytes[..bytes.len().min(4096)];
    let text = String::from_utf8_lossy(head);
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('<') && text.contains("<gpx") {
        return Some(Format::Gpx);
    }
    if trimmed.starts_with('{') {
        return Some(Format::GeoJson);
    }
    if looks_like_nmea(bytes) {
        return Some(Format::Nmea);
    }
    let printable = head
        .iter()
        .filter(|b| b.is_ascii_graphic() || b.is_ascii_whitespace() || **b >= 0x80)
        .count();
    if printable * 100 >= head.len() * 98 && (text.contains(',') || text.contains(';')) {
        return Some(Format::Csv);
    }
    None
}

/// True when one of the first lines is an NMEA sentence (`$GPGGA,...`, `$GNRMC,...`).
fn looks_like_nmea(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(16 * 1024)];
    head.split(|b| *b == b'\n').take(200).any(|line| {
        let line = line.trim_ascii();
        line.len() > 7
            && line[0] == b'$'
            && line[1..6].iter().all(u8::is_ascii_alphanumeric)
            && line[6] == b','
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_wins_then_content() {
        assert_eq!(detect_format(Path::new("a.GPX"), b""), Some(Format::Gpx));
        assert_eq!(detect_format(Path::new("a.plt"), b""), Some(Format::Csv));
        let nmea = b"hello\n$GPGGA,1,2,3*00\n";
        assert_eq!(detect_format(Path::new("a.log"), nmea), Some(Format::Nmea));
        assert_eq!(
            detect_format(Path::new("a.txt"), b"lat,lon\n1,2\n"),
            Some(Format::Csv)
        );
        assert_eq!(
            detect_format(Path::new("a"), b"\xef\xbb\xbf<?xml?><gpx>"),
            Some(Format::Gpx)
        );
        assert_eq!(
            detect_format(Path::new("a"), b" {\"type\":1}"),
            Some(Format::GeoJson)
        );
        let fit = b"\x0e\x10\x00\x00\x00\x00\x00\x00.FIT\x00\x00";
        assert_eq!(detect_format(Path::new("a.bin"), fit), Some(Format::Fit));
        assert_eq!(
            detect_format(Path::new("a.bin"), &[0u8, 1, 2, 3, 255]),
            None
        );
    }

    #[test]
    fn device_names_come_from_the_stem() {
        assert_eq!(
            device_name(Path::new("/x/route14_outbound.csv")),
            "route14_outbound"
        );
        assert_eq!(device_name(Path::new("")), "track");
    }
}
