//! Reads every file of the real-track data set beside the checkout (`../shared/data/tracks`,
//! see its README) and checks a handful of them against values read off the raw files.
//! The tests skip, saying so, where that folder is absent.

#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the data-set test reports per-file counts"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use journeyd_import::{FileTracks, Fix, Format, read_file};

fn data_dir() -> Option<PathBuf> {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/tracks"
    ));
    if dir.is_dir() {
        Some(dir.to_path_buf())
    } else {
        eprintln!(
            "skipping: the track data set is absent (looked for {})",
            dir.display()
        );
        None
    }
}

fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("data folder is listable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn read(rel: &str) -> Option<FileTracks> {
    let dir = data_dir()?;
    match read_file(&dir.join(rel)) {
        Ok(tracks) => Some(tracks),
        Err(e) => panic!("{rel} should be readable: {e}"),
    }
}

fn first_fix(tracks: &FileTracks) -> Fix {
    tracks.tracks[0].fixes[0]
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-7
}

/// Unix microseconds of a UTC date and time.
fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, micros: i64) -> i64 {
    let t = chrono::NaiveDate::from_ymd_opt(y, mo, d)
        .and_then(|d| d.and_hms_opt(h, mi, s))
        .expect("valid date");
    t.and_utc().timestamp() * 1_000_000 + micros
}

#[test]
fn every_file_reads_without_panic() {
    let Some(dir) = data_dir() else { return };
    let mut totals: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
    let mut errors = Vec::new();
    for path in all_files(&dir) {
        let rel = path
            .strip_prefix(&dir)
            .unwrap_or(&path)
            .display()
            .to_string();
        match read_file(&path) {
            Ok(file) => {
                let fixes = file.fix_count();
                let timed = file
                    .tracks
                    .iter()
                    .flat_map(|t| &t.fixes)
                    .filter(|f| f.fix_time_us.is_some())
                    .count();
                println!(
                    "{rel:70} {:8} tracks {:4} fixes {fixes:6} timed {timed:6} warnings {}",
                    file.format.name(),
                    file.tracks.len(),
                    file.warnings.len()
                );
                for w in file.warnings.iter().take(3) {
                    println!("    {w}");
                }
                for fix in file.tracks.iter().flat_map(|t| &t.fixes) {
                    assert!(fix.lat.is_finite() && fix.lon.is_finite(), "{rel}: {fix:?}");
                    for v in [
                        fix.altitude_m,
                        fix.speed_mps,
                        fix.heading_deg,
                        fix.accuracy_m,
                    ] {
                        assert!(v.is_none_or(f32::is_finite), "{rel}: {fix:?}");
                    }
                }
                let entry = totals.entry(file.format.name()).or_default();
                entry.0 += 1;
                entry.1 += fixes;
            }
            Err(e) => {
                println!("{rel:70} ERROR {e}");
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                assert!(e.to_string().contains(&name.unwrap_or_default()), "{e}");
                errors.push(rel);
            }
        }
    }
    let mut total = 0;
    for (format, (files, fixes)) in &totals {
        println!("{format:8} {files:3} files {fixes:7} fixes");
        total += fixes;
    }
    println!(
        "total    {total:7} fixes; {} files gave errors: {errors:?}",
        errors.len()
    );
    assert!(errors.is_empty(), "files that gave errors: {errors:?}");
    assert!(total > 100_000, "only {total} fixes read from the data set");
}
