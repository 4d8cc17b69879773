//! Every real track of ../shared/data/tracks through the real binary, twice.

#![allow(
    clippy::print_stderr,
    reason = "tests say what they skipped or measured"
)]

mod support;

use journeyd::replay::ReplaySummary;
use support::*;

#[test]
fn replay_every_real_track_twice() {
    let Some(tracks) = shared_tracks() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path());

    let first: ReplaySummary =
        serde_json::from_str(&server.command(&["replay", "--json", tracks.to_str().unwrap()]))
            .unwrap();
    let (parsed, expected) = expected_positions(&tracks);
    eprintln!("{}", first.render());
    assert!(first.files >= 100, "{first:?}");
    assert_eq!(
        first.positions_sent, parsed,
        "every timed fix the parsers produced was sent"
    );
    assert_eq!(
        first.positions_sent,
        first.positions_acked + first.refused_total(),
        "every sent position was acked or refused with a reason"
    );
    assert_eq!(
        first.stored, expected,
        "stored = parsed minus refused minus repeated fix times, counted independently"
    );

    let stats_text = server.command(&["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_str(&stats_text).unwrap();
    assert_eq!(stats["positions"].as_u64(), Some(expected));

    // Replaying everything a second time changes nothing.
    let second: ReplaySummary =
        serde_json::from_str(&server.command(&["replay", "--json", tracks.to_str().unwrap()]))
            .unwrap();
    assert_eq!(second.stored, 0, "{}", second.render());
    assert_eq!(second.positions_acked, first.positions_acked);
    let again: serde_json::Value =
        serde_json::from_str(&server.command(&["stats", "--json"])).unwrap();
    assert_eq!(again["positions"], stats["positions"]);
    assert_eq!(again["journeys"], stats["journeys"]);
    assert_eq!(again["devices"], stats["devices"]);

    // Tracks read back in fix-time order with no fix twice.
    let data_dir = server.data_dir.clone();
    drop(server);
    let store = read_only_store(&data_dir.join("hot"));
    for d in store.devices(None).unwrap() {
        for (j, _) in store.journeys(d.tenant, d.id).unwrap() {
            let track = store.track(d.tenant, d.id, j).unwrap();
            assert!(
                track
                    .windows(2)
                    .all(|w| w[0].fix_time_us < w[1].fix_time_us),
                "device {} journey {}",
                d.id.0,
                j.0
            );
        }
    }
}

#[test]
fn unreadable_files_are_named_and_the_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path());
    let input = dir.path().join("input");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("broken.gpx"), "<gpx><trk><trkseg><trkpt lat=").unwrap();
    std::fs::write(input.join("garbage.fit"), [0x0e, 0x10, 0xff, 0xff, 1, 2, 3]).unwrap();
    journeyd::replay::write_demo_tracks(&input, 2, now_us()).unwrap();
    let summary: ReplaySummary =
        serde_json::from_str(&server.command(&["replay", "--json", input.to_str().unwrap()]))
            .unwrap();
    assert_eq!(summary.files, 4);
    assert_eq!(summary.files_failed, 2, "{}", summary.render());
    assert!(
        summary
            .errors
            .iter()
            .any(|e| e.file.ends_with("broken.gpx"))
    );
    assert!(
        summary
            .errors
            .iter()
            .any(|e| e.file.ends_with("garbage.fit"))
    );
    assert_eq!(summary.stored, 480, "the good files went on");
}
