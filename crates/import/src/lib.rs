//! Reads recorded GPS tracks (GPX, FIT, NMEA 0183, CSV, GeoJSON) into plain fixes.
//!
//! This crate does no network I/O and knows nothing of the wire protocol or the store: it turns
//! files into [`Track`]s. Deciding what is plausible is the server's job (journeyd-wire's
//! validation rules); this crate only reports what a file says and what it could not read.
//!
//! INTERFACE CONTRACT (the rest of journeyd builds on it):
//! - `pub fn read_file(path: &Path) -> Result<FileTracks, ImportError>`
//! - `pub struct FileTracks { pub path: PathBuf, pub format: Format, pub tracks: Vec<Track>, pub warnings: Vec<Warning> }`
//! - `pub struct Track { pub device: String, pub fixes: Vec<Fix> }` (one per file, or per vehicle id column)
//! - `pub struct Fix { pub fix_time_us: Option<i64>, pub lat: f64, pub lon: f64,
//!    pub altitude_m: Option<f32>, pub speed_mps: Option<f32>, pub heading_deg: Option<f32>,
//!    pub accuracy_m: Option<f32> }`
//! - `pub enum Format { Gpx, Fit, Nmea, Csv, GeoJson }` detected from extension then content.
//! - `ImportError` (thiserror) names the file and the line or record that could not be read.
