//! Malformed input: every reader must answer with an error that names the file (or with the
//! positions it could read and a warning), never with a panic. The FIT cases use a small FIT
//! file built here byte by byte, so that they do not depend on the data set.

use std::path::Path;

use journeyd_import::{FileTracks, Format, ImportError, read_bytes, read_file};
use proptest::prelude::*;

/// FIT epoch (1989-12-31T00:00:00Z) in Unix seconds.
const FIT_EPOCH: i64 = 631_065_600;

fn fit_crc(bytes: &[u8]) -> u16 {
    const TABLE: [u16; 16] = [
        0x0000, 0xcc01, 0xd801, 0x1400, 0xf001, 0x3c00, 0x2800, 0xe401, 0xa001, 0x6c00, 0x7800,
        0xb401, 0x5000, 0x9c01, 0x8801, 0x4400,
    ];
    bytes.iter().fold(0u16, |mut crc, byte| {
        for nibble in [byte & 0x0f, byte >> 4] {
            let tmp = TABLE[usize::from(crc & 0x0f)];
            crc = (crc >> 4) & 0x0fff;
            crc = crc ^ tmp ^ TABLE[usize::from(nibble)];
        }
        crc
    })
}

/// A FIT file of `n` record messages (timestamp, position) with a valid 12-byte header and CRC.
fn fit_file(n: u32) -> Vec<u8> {
    let mut data = vec![0x40, 0, 0, 20, 0, 3, 253, 4, 0x86, 0, 4, 0x85, 1, 4, 0x85];
    for i in 0..n {
        data.push(0x00);
        data.extend_from_slice(&(1_000_000_000u32 + i).to_le_bytes());
        // From 45 degrees north, 90 degrees west, a few metres a second.
        let step = i as i32;
        data.extend_from_slice(&(536_870_912 + step * 123_457).to_le_bytes());
        data.extend_from_slice(&(-1_073_741_824 - step * 234_567).to_le_bytes());
    }
    let mut file = vec![12, 0x10];
    file.extend_from_slice(&2100u16.to_le_bytes());
    file.extend_from_slice(&(data.len() as u32).to_le_bytes());
    file.extend_from_slice(b".FIT");
    file.extend_from_slice(&data);
    let crc = fit_crc(&file);
    file.extend_from_slice(&crc.to_le_bytes());
    file
}

fn expect_error(name: &str, bytes: &[u8]) -> ImportError {
    match read_bytes(name, bytes) {
        Ok(file) => panic!("{name} should not be readable, got {file:?}"),
        Err(e) => {
            assert!(
                e.to_string().contains(name),
                "the error does not name {name}: {e}"
            );
            assert_eq!(e.path(), Path::new(name));
            e
        }
    }
}

/// Anything but a panic; fixes that come back are finite.
fn read_anything(name: &str, bytes: &[u8]) -> Option<FileTracks> {
    match read_bytes(name, bytes) {
        Ok(file) => {
            for fix in file.tracks.iter().flat_map(|t| &t.fixes) {
                assert!(
                    fix.lat.is_finite() && fix.lon.is_finite(),
                    "{name}: {fix:?}"
                );
            }
            Some(file)
        }
        Err(e) => {
            assert!(
                e.to_string().contains(name),
                "the error does not name {name}: {e}"
            );
            None
        }
    }
}

#[test]
fn built_fit_file_reads_cleanly() {
    let file = read_bytes("ride.fit", &fit_file(3)).expect("valid fit file");
    assert_eq!(file.format, Format::Fit);
    assert!(file.warnings.is_empty(), "{:?}", file.warnings);
    let fixes = &file.tracks[0].fixes;
    assert_eq!(fixes.len(), 3);
    assert_eq!(
        fixes[0].fix_time_us,
        Some((FIT_EPOCH + 1_000_000_000) * 1_000_000)
    );
    assert_eq!((fixes[0].lat, fixes[0].lon), (45.0, -90.0));

    // Two files one after the other.
    let chained = [fit_file(2), fit_file(3)].concat();
    let file = read_bytes("chained.fit", &chained).expect("chained fit files");
    assert_eq!(file.fix_count(), 5);
    assert!(file.warnings.is_empty(), "{:?}", file.warnings);
}

#[test]
fn truncated_fit_keeps_what_came_before() {
    let full = fit_file(20);
    for len in 0..full.len() {
        let name = format!("cut{len}.fit");
        match read_bytes(&name, &full[..len]) {
            Ok(file) => {
                assert!(
                    file.fix_count() <= (len.saturating_sub(27) / 13).min(20),
                    "{name}"
                );
                assert!(!file.warnings.is_empty(), "{name} gave no warning");
            }
            Err(e) => assert!(e.to_string().contains(&name), "{e}"),
        }
    }
    // Cut inside the tenth record: nine positions and a warning that says so.
    let file = read_bytes("cut.fit", &full[..12 + 15 + 9 * 13 + 5]).expect("partly readable");
    assert_eq!(file.fix_count(), 9);
    assert!(
        file.warnings[0].message.contains("truncated"),
        "{:?}",
        file.warnings
    );
}

#[test]
fn fit_damage_in_the_middle_is_skipped() {
    let mut file = fit_file(80);
    // Remove one byte from the fortieth record: later messages are misframed until the
    // reader finds the boundaries again.
    file.remove(12 + 15 + 39 * 13 + 6);
    let read = read_bytes("damaged.fit", &file).expect("readable");
    let seconds: Vec<i64> = read.tracks[0]
        .fixes
        .iter()
        .filter_map(|f| f.fix_time_us)
        .map(|t| t / 1_000_000 - FIT_EPOCH - 1_000_000_000)
        .collect();
    // Record 39 is lost (it was read misframed and dropped); everything else is there.
    let expected: Vec<i64> = (0..39).chain(40..80).collect();
    assert_eq!(seconds, expected);
    // The header still counts the removed byte, so the CRC is read as a message at the end.
    assert!(
        read.warnings[0].message.contains("resumed at byte"),
        "{:?}",
        read.warnings
    );
}

#[test]
fn garbage_is_an_error_naming_the_file() {
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for name in [
        "noise.fit",
        "noise.gpx",
        "noise.csv",
        "noise.geojson",
        "noise.nmea",
    ] {
        expect_error(name, &garbage);
    }
    let e = expect_error("noise.bin", &garbage);
    assert!(matches!(e, ImportError::UnknownFormat { .. }), "{e}");
}

#[test]
fn empty_files_are_errors() {
    for name in [
        "e.gpx",
        "e.fit",
        "e.nmea",
        "e.csv",
        "e.plt",
        "e.geojson",
        "e",
    ] {
        let e = expect_error(name, b"");
        assert!(matches!(e, ImportError::Empty { .. }), "{e}");
        expect_error(name, b" \n\r\n");
    }
}

#[test]
fn truncated_xml_names_the_line() {
    let xml = "<?xml version=\"1.0\"?>\n<gpx version=\"1.1\" creator=\"t\">\n<trk><trkseg>\n\
               <trkpt lat=\"1\" lon=\"2\"><ele>3</ele>";
    let e = expect_error("cut.gpx", xml.as_bytes());
    let text = e.to_string();
    assert!(text.starts_with("cut.gpx: line "), "{text}");
    assert!(
        matches!(
            e,
            ImportError::Malformed {
                format: Format::Gpx,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn csv_without_position_columns() {
    let e = expect_error("table.csv", b"name,age\nann,32\n");
    assert!(matches!(e, ImportError::MissingColumns { .. }), "{e}");
    assert!(e.to_string().contains("line 1"), "{e}");
    assert!(e.to_string().contains("name, age"), "{e}");
}

#[test]
fn odd_but_readable_inputs() {
    // A header and no rows, a GPX without points: readable, no tracks, a warning.
    for (name, bytes) in [
        ("rows.csv", &b"lat,lon\n"[..]),
        ("none.gpx", &b"<gpx version=\"1.1\"></gpx>"[..]),
        ("nofix.nmea", &b"$GPGSA,A,1,,,,,,,,,,,,,,,*1E\n"[..]),
        (
            "empty.geojson",
            &b"{\"type\":\"FeatureCollection\",\"features\":[]}"[..],
        ),
    ] {
        let file = read_bytes(name, bytes).expect(name);
        assert!(file.tracks.is_empty(), "{name}");
        assert_eq!(file.warnings.len(), 1, "{name}: {:?}", file.warnings);
    }
    // Unparsable values are warnings, never NaN.
    let file = read_bytes("nan.csv", b"lat,lon,alt\nNaN,1,2\n1,2,nan\n1,2,inf\n").expect("csv");
    assert_eq!(file.fix_count(), 2);
    assert!(file.tracks[0].fixes.iter().all(|f| f.altitude_m.is_none()));
    assert_eq!(file.warnings.len(), 3, "{:?}", file.warnings);
}

#[test]
fn missing_file_is_an_io_error() {
    let e = read_file(Path::new("/nonexistent/track.gpx")).unwrap_err();
    assert!(matches!(e, ImportError::Io { .. }));
    assert!(
        e.to_string()
            .starts_with("cannot read /nonexistent/track.gpx: "),
        "{e}"
    );
}

#[test]
fn read_file_reads_a_temporary_file() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("walk.csv");
    std::fs::write(&path, "time,lat,lon\n2020-01-01T00:00:00Z,1,2\n").expect("written");
    let file = read_file(&path).expect("readable");
    assert_eq!(file.path, path);
    assert_eq!(file.tracks[0].device, "walk");
    assert_eq!(
        file.tracks[0].fixes[0].fix_time_us,
        Some(1_577_836_800_000_000)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        ext in prop::sample::select(vec!["gpx", "fit", "nmea", "csv", "plt", "geojson", "txt"]),
    ) {
        read_anything(&format!("random.{ext}"), &bytes);
    }

    #[test]
    fn plausible_prefixes_with_random_tails_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..512),
        which in 0usize..6,
    ) {
        let (name, head): (&str, Vec<u8>) = match which {
            0 => ("p.gpx", b"<gpx version=\"1.0\"><trk><trkseg><trkpt lat=\"1\" lon=\"2\">".into()),
            1 => ("p.fit", fit_file(2)[..12].to_vec()),
            2 => ("p.nmea", b"$GPGGA,120000.00,4807.038,N,01131.000,E,1,08,0.9,5,M,4,M,*".into()),
            3 => ("p.csv", b"time;lat;lon;speed\n".to_vec()),
            4 => ("p.plt", b"OziExplorer Track Point File Version 2.1\n1\n2\n3\n4\n5\n".to_vec()),
            _ => ("p.geojson", b"{\"type\":\"LineString\",\"coordinates\":[[1,2],".to_vec()),
        };
        read_anything(name, &[head, tail].concat());
    }

    #[test]
    fn mutated_fit_files_never_panic(
        edits in proptest::collection::vec((0usize..1000, any::<u8>()), 1..8),
        cut in 0usize..1000,
    ) {
        let mut file = fit_file(60);
        for (at, byte) in edits {
            let at = at % file.len();
            file[at] = byte;
        }
        file.truncate(file.len() - cut % file.len());
        read_anything("mutated.fit", &file);
    }
}
