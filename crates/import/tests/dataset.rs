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

#[test]
fn gpx_placeholder_year_and_sub_second_times_pass_through() {
    let Some(file) = read("gpx/Mojstrovka.gpx") else {
        return;
    };
    assert_eq!(file.format, Format::Gpx);
    assert_eq!(file.tracks[0].device, "Mojstrovka");
    assert_eq!(file.fix_count(), 184);
    let f = first_fix(&file);
    assert!(close(f.lat, 46.434981) && close(f.lon, 13.748273), "{f:?}");
    assert_eq!(f.altitude_m, Some(1614.678));
    // <time>1901-12-13T20:45:52.2073437Z</time>: kept, truncated to the microsecond.
    assert_eq!(f.fix_time_us, Some(utc(1901, 12, 13, 20, 45, 52, 207_343)));
    assert_eq!(
        file.tracks[0].fixes[1].fix_time_us,
        Some(utc(1901, 12, 13, 20, 45, 52, 207_000))
    );
}

#[test]
fn gpx_times_with_offsets_become_utc() {
    let Some(file) = read("gpx/track-with-less-sec-time.gpx") else {
        return;
    };
    let times: Vec<_> = file.tracks[0].fixes.iter().map(|f| f.fix_time_us).collect();
    // 2015-12-11T15:43:13.000+01:00 and 15:43:13.994+01:00
    let t = utc(2015, 12, 11, 14, 43, 13, 0);
    assert_eq!(times, vec![Some(t), Some(t + 994_000)]);
}

#[test]
fn gpx_course_speed_and_hdop() {
    // GPX 1.0 with <course>: the gpx crate refuses it, the lenient reader reads it.
    let Some(file) = read("gpx/cetus-track~gpx.gpx") else {
        return;
    };
    let f = first_fix(&file);
    assert!(close(f.lat, 48.8401717) && close(f.lon, 2.5415733), "{f:?}");
    assert_eq!(f.fix_time_us, Some(utc(2005, 7, 27, 16, 10, 5, 580_000)));
    // <course>184.899994</course> <speed>3.601111</speed>
    assert!(
        f.heading_deg.is_some_and(|h| (h - 184.9).abs() < 1e-4),
        "{f:?}"
    );
    assert!(
        f.speed_mps.is_some_and(|s| (s - 3.601_111).abs() < 1e-6),
        "{f:?}"
    );
    assert_eq!(file.warnings.len(), 1, "{:?}", file.warnings);

    // <gpx> without a version attribute and with a BOM.
    let Some(file) = read("gpx/unicode_with_bom.gpx") else {
        return;
    };
    let f = first_fix(&file);
    assert!(close(f.lat, 43.309634) && close(f.lon, 3.515386), "{f:?}");
    assert_eq!(f.fix_time_us, Some(utc(2016, 5, 27, 10, 8, 47, 800_000)));
    assert_eq!(f.altitude_m, Some(-14.6));

    let Some(file) = read("gpx/with_accuracy.gpx") else {
        return;
    };
    let accuracy: Vec<_> = file.tracks[0].fixes.iter().map(|f| f.accuracy_m).collect();
    assert_eq!(accuracy, vec![Some(25.0), Some(18.0), None]);

    let Some(file) = read("gpx/cerknicko-without-times.gpx") else {
        return;
    };
    assert!(file.tracks[0].fixes.iter().any(|f| f.fix_time_us.is_none()));

    let Some(file) = read("gpx/route.gpx") else {
        return;
    };
    assert_eq!(
        file.fix_count(),
        55,
        "route points when there are no track points"
    );
}

#[test]
fn fit_semicircles_and_enhanced_fields() {
    let Some(file) = read("fit/garmin-edge-500-activity.fit") else {
        return;
    };
    assert_eq!(file.format, Format::Fit);
    assert!(file.warnings.is_empty(), "{:?}", file.warnings);
    let f = first_fix(&file);
    // The first record: position_lat 521521093, position_long -946874053 semicircles.
    let semicircle = 180.0 / 2f64.powi(31);
    assert!(close(f.lat, 521_521_093.0 * semicircle), "{f:?}");
    assert!(close(f.lon, -946_874_053.0 * semicircle), "{f:?}");
    assert!(
        (f.lat - 43.713_393).abs() < 1e-6 && (f.lon + 79.366_066).abs() < 1e-6,
        "{f:?}"
    );
    assert_eq!(f.fix_time_us, Some(utc(2011, 9, 25, 13, 0, 22, 0)));
    assert_eq!(f.speed_mps, Some(5.888));
    assert!(
        f.altitude_m.is_some_and(|a| (a - 75.2).abs() < 1e-3),
        "{f:?}"
    );
}

#[test]
fn fit_damage_keeps_what_was_read() {
    let Some(file) = read("fit/activity-unexpected-eof.fit") else {
        return;
    };
    assert_eq!(file.fix_count(), 14);
    assert!(
        file.warnings
            .iter()
            .any(|w| w.message.contains("truncated")),
        "{:?}",
        file.warnings
    );

    let Some(file) = read("fit/activity-settings-corruptheader.fit") else {
        return;
    };
    assert_eq!(file.fix_count(), 14);
    assert_eq!(file.warnings.len(), 1, "{:?}", file.warnings);

    // Two chained files, the second with a bad data checksum.
    let Some(file) = read("fit/activity-activity-filecrc.fit") else {
        return;
    };
    assert_eq!(file.fix_count(), 28);
    assert!(
        file.warnings[0].message.contains("checksum"),
        "{:?}",
        file.warnings
    );

    // Records appended after a broken definition are found again.
    let Some(file) = read("fit/lezyne_super_gps-garmin_fit-sample-bad-endian.fit") else {
        return;
    };
    assert!(file.fix_count() > 1_700, "{}", file.fix_count());
}

#[test]
fn fit_relative_times_use_the_correlation() {
    let Some(file) = read("fit/garmin-virb-ultra-30.fit") else {
        return;
    };
    let f = first_fix(&file);
    // The first record with a position is at system time 67 s (timestamp 1989-12-31T00:01:07);
    // timestamp_correlation: 2017-06-28T02:34:13.000Z is system time 69.109 s.
    assert_eq!(f.fix_time_us, Some(utc(2017, 6, 28, 2, 34, 10, 891_000)));
    assert!(file.tracks[0].fixes.iter().all(|f| f.fix_time_us.is_some()));
}

#[test]
fn nmea_dates_from_rmc() {
    let Some(file) = read("nmea/amod.nmea") else {
        return;
    };
    assert_eq!(file.format, Format::Nmea);
    let f = first_fix(&file);
    // $GPRMC,200641.000,A,3549.4991,N,08650.8239,W,0.00,224.45,050608,,,A*76
    assert_eq!(f.fix_time_us, Some(utc(2008, 6, 5, 20, 6, 41, 0)));
    assert!(close(f.lat, 35.0 + 49.4991 / 60.0) && close(f.lon, -(86.0 + 50.8239 / 60.0)));
    assert_eq!((f.speed_mps, f.heading_deg), (Some(0.0), Some(224.45)));
    // The next second merges GGA (altitude, HDOP) with RMC.
    let g = file.tracks[0].fixes[1];
    assert_eq!(g.fix_time_us, Some(utc(2008, 6, 5, 20, 6, 42, 0)));
    assert_eq!((g.altitude_m, g.accuracy_m), (Some(269.9), Some(5.5)));
    assert_eq!(g.heading_deg, Some(224.45));

    // GGA only: no date anywhere.
    let Some(file) = read("nmea/adddate.nmea") else {
        return;
    };
    assert_eq!(file.fix_count(), 500);
    assert!(file.tracks[0].fixes.iter().all(|f| f.fix_time_us.is_none()));

    // Bad checksums and garbage of a cold boot are warnings. The first fix is a GGA whose date
    // comes from the next readable RMC (000345.03 ... 070419).
    let Some(file) = read("nmea/gp-320fw-2019-04-07-coldboot.nmea") else {
        return;
    };
    assert!(file.warnings.iter().any(|w| w.message.contains("checksum")));
    let f = first_fix(&file);
    assert_eq!(f.fix_time_us, Some(utc(2019, 4, 7, 0, 3, 43, 30_000)));
}

#[test]
fn csv_bus_fleet_splits_per_vehicle() {
    let Some(file) = read("csv/route14_outbound.csv") else {
        return;
    };
    let names: Vec<&str> = file.tracks.iter().map(|t| t.device.as_str()).collect();
    assert_eq!(
        names,
        [4716, 4720, 4722, 4733, 4803, 4836, 4841, 4842].map(|v| format!("route14_outbound/{v}"))
    );
    let counts: Vec<usize> = file.tracks.iter().map(|t| t.fixes.len()).collect();
    assert_eq!(counts, vec![136, 278, 110, 245, 183, 187, 159, 235]);
    // 23811684,"4716","1091","2026-01-26 15:57:02",53.44451,-2.925173,,...
    let f = first_fix(&file);
    assert_eq!(f.fix_time_us, Some(utc(2026, 1, 26, 15, 57, 2, 0)));
    assert!(close(f.lat, 53.44451) && close(f.lon, -2.925173));
    assert_eq!(f.heading_deg, None);
    assert_eq!(file.tracks[0].fixes[1].heading_deg, Some(53.0));
}

#[test]
fn csv_ais_splits_per_mmsi_and_drops_sentinel_headings() {
    let Some(file) = read("csv/NYHarbor_2020_06_30_first_hour.csv") else {
        return;
    };
    assert_eq!(file.tracks.len(), 295);
    assert_eq!(file.fix_count(), 8689);
    let track = |mmsi: &str| {
        let name = format!("NYHarbor_2020_06_30_first_hour/{mmsi}");
        file.tracks
            .iter()
            .find(|t| t.device == name)
            .expect("vessel track")
    };
    // 2020-06-30T00:00:00,-74.07281,40.63668,367022550,0.1,-146.0,511.0,...
    let f = track("367022550").fixes[0];
    assert_eq!(f.fix_time_us, Some(utc(2020, 6, 30, 0, 0, 0, 0)));
    assert!(close(f.lat, 40.63668) && close(f.lon, -74.07281));
    assert_eq!(f.heading_deg, None, "heading 511 means not available");
    assert!(
        f.speed_mps.is_some_and(|s| (s - 0.051_444).abs() < 1e-5),
        "0.1 knots: {f:?}"
    );
    let g = &track("367000140").fixes;
    assert_eq!(
        (g[0].heading_deg, g[1].fix_time_us),
        (Some(246.0), Some(utc(2020, 6, 30, 0, 1, 10, 0)))
    );
    let sentinels = file
        .tracks
        .iter()
        .flat_map(|t| &t.fixes)
        .filter(|f| f.heading_deg.is_none());
    assert_eq!(sentinels.count(), 3606);
}

#[test]
fn csv_units_local_times_and_nanoseconds() {
    // Garmin G1000: local time plus offset, feet and knots from the units row.
    let Some(file) = read("csv/garmin_g1000.csv") else {
        return;
    };
    let f = first_fix(&file);
    assert_eq!(f.fix_time_us, Some(utc(2014, 3, 29, 22, 50, 22, 0)));
    assert!(close(f.lat, 40.2171326) && close(f.lon, -111.7177124));
    assert!(
        f.altitude_m
            .is_some_and(|a| (a - 4503.9 * 0.3048).abs() < 1e-3),
        "{f:?}"
    );
    assert!(
        f.speed_mps
            .is_some_and(|s| (s - 3.5 * 1852.0 / 3600.0).abs() < 1e-5),
        "{f:?}"
    );

    // MTK logger: units inside values, N/S and E/W columns, HDOP.
    let Some(file) = read("csv/mtk_logger_m241.csv") else {
        return;
    };
    let f = first_fix(&file);
    assert_eq!(f.fix_time_us, Some(utc(2008, 5, 4, 12, 52, 47, 0)));
    assert!(close(f.lat, 41.805592) && close(f.lon, 12.679832));
    assert_eq!(f.altitude_m, Some(374.812));
    assert!(
        f.speed_mps.is_some_and(|s| (s - 0.865 / 3.6).abs() < 1e-6),
        "{f:?}"
    );
    assert_eq!(f.accuracy_m, Some(4.25));

    // iBlue 747: speed in km/h without a unit.
    let Some(file) = read("csv/iblue747.csv") else {
        return;
    };
    let f = file.tracks[0].fixes[1];
    assert!(
        f.speed_mps.is_some_and(|s| (s - 4.2 / 3.6).abs() < 1e-6),
        "{f:?}"
    );

    // Posmo: semicolons, nanosecond fractions, accuracy.
    let Some(file) = read("csv/posmo_trajectory.csv") else {
        return;
    };
    let f = first_fix(&file);
    assert_eq!(f.fix_time_us, Some(utc(2019, 1, 25, 20, 0, 16, 178_999)));
    assert!(close(f.lat, 47.0516249) && close(f.lon, 7.0389004));
    assert_eq!(f.accuracy_m, Some(0.0));
}

#[test]
fn csv_oziexplorer_plt_in_latin1() {
    let Some(file) = read("csv/20070813_short.plt") else {
        return;
    };
    assert_eq!(file.format, Format::Csv);
    assert_eq!(file.tracks[0].device, "20070813_short");
    assert_eq!(file.fix_count(), 44);
    // 47.466222, 3.747318,0, 1258.8,39307.3279977, 13-août-07, 07:52:19
    let f = first_fix(&file);
    assert!(close(f.lat, 47.466222) && close(f.lon, 3.747318));
    assert!(
        f.altitude_m
            .is_some_and(|a| (a - 1258.8 * 0.3048).abs() < 1e-3),
        "{f:?}"
    );
    assert_eq!(f.fix_time_us, Some(utc(2007, 8, 13, 7, 52, 19, 0)));
}

#[test]
fn geojson_line_strings_without_times() {
    let Some(file) = read("geojson/segmented_tracks.geojson") else {
        return;
    };
    assert_eq!(file.format, Format::GeoJson);
    assert_eq!(file.fix_count(), 46);
    let f = first_fix(&file);
    assert!(close(f.lat, 35.826145641) && close(f.lon, -86.84413961));
    assert!(file.tracks[0].fixes.iter().all(|f| f.fix_time_us.is_none()));
}
