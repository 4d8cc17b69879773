//! kill -9 of the real server binary in the middle of an upload (case F36).

#![allow(
    clippy::print_stderr,
    reason = "tests say what they skipped or measured"
)]

mod support;

use std::time::Duration;

use journeyd_device::{Device, DeviceConfig, Identity, Outbox};
use journeyd_store::{BatchSeq, DeviceId, HotStore, JourneyId};
use journeyd_wire::Position;
use support::*;

const BATCHES: i64 = 600;
const PER_BATCH: i64 = 100;

fn device(server: &ChildServer, state: &std::path::Path) -> Device {
    let mut config = DeviceConfig::new(server.addr, server.trust());
    config.flush_timeout = Duration::from_secs(2);
    config.idle_timeout = Duration::from_secs(3);
    // One record in flight at a time: each waits for its own synced ack, so the upload lasts
    // long enough for the kill to land in its middle.
    config.max_in_flight = 1;
    config.backoff = (Duration::from_millis(50), Duration::from_millis(200));
    let identity = Identity::Enrol {
        code: server.code(),
        name: "dev-F36".into(),
    };
    Device::open(config, Outbox::open(state).unwrap(), identity).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn f36_kill_after_ack() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("device");
    let server = ChildServer::start(dir.path());

    let mut d = device(&server, &state);
    let t = now_us() - 24 * 3600 * SECOND;
    d.start_journey(1, t).unwrap();
    for k in 0..BATCHES {
        let ps: Vec<Position> = (0..PER_BATCH)
            .map(|i| {
                Position::new(
                    t + (k * PER_BATCH + i) * SECOND,
                    47.0,
                    8.0 + i as f64 * 1e-5,
                )
            })
            .collect();
        d.record(1, &ps).unwrap();
    }
    let total = d.pending() as u64;

    // Upload, and kill the server with SIGKILL once part of it is acked.
    let upload = tokio::spawn(async move {
        let result = d.flush().await;
        (d, result)
    });
    let state_for_watch = state.clone();
    loop {
        let pending = Outbox::open(&state_for_watch)
            .map(|o| o.len() as u64)
            .unwrap_or(total);
        if pending < total * 2 / 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let data_dir = server.data_dir.clone();
    server.kill9();
    let (d, result) = upload.await.unwrap();
    assert!(result.is_err(), "the upload cannot finish without a server");
    let unacked: Vec<u64> = d.pending_seqs();
    let credential = d
        .credential()
        .cloned()
        .expect("the device enrolled before the kill");
    drop(d);
    assert!(
        !unacked.is_empty() && (unacked.len() as u64) < total,
        "the kill came mid-upload"
    );

    // Every record the device saw acked is in the store after the crash.
    {
        let store = writable_store(&data_dir.join("hot"));
        let device = DeviceId(credential.device_id);
        for seq in 1..=total {
            if !unacked.contains(&seq) {
                assert!(
                    store.is_stored(device, BatchSeq(seq)).unwrap(),
                    "acked seq {seq} lost"
                );
            }
        }
    }

    // Restart, finish: every position present, none twice.
    let server = ChildServer::start(dir.path());
    let mut d = device(&server, &state);
    d.flush().await.unwrap();
    assert_eq!(d.pending(), 0);
    drop(server);

    let store = read_only_store(&data_dir.join("hot"));
    let tenant = store.tenants().unwrap()[0].id;
    let track = store
        .track(tenant, DeviceId(credential.device_id), JourneyId(1))
        .unwrap();
    assert_eq!(track.len() as i64, BATCHES * PER_BATCH);
    assert!(
        track
            .windows(2)
            .all(|w| w[0].fix_time_us < w[1].fix_time_us),
        "no fix twice, in fix-time order"
    );
    assert_eq!(store.stats().unwrap().positions as i64, BATCHES * PER_BATCH);
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_after_kill_serves_again_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path());
    server.kill9();
    let started = std::time::Instant::now();
    let server = ChildServer::start(dir.path());
    let elapsed = started.elapsed();
    eprintln!("restart after kill -9 to ready: {elapsed:?}");
    let mut d = device(&server, &dir.path().join("device"));
    d.record(1, &[Position::new(now_us() - MINUTE, 1.0, 1.0)])
        .unwrap();
    assert_eq!(d.flush().await.unwrap().stored, 1);
}

#[test]
fn f36_kill_mid_replay_of_real_tracks() {
    let Some(tracks) = shared_tracks() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path());
    let (_, expected) = expected_positions(&tracks);

    let replay = std::process::Command::new(binary())
        .args(["--log", "error", "--config"])
        .arg(&server.config_path)
        .args([
            "replay",
            "--json",
            "--batch",
            "50",
            "--concurrency",
            "2",
            "--timeout",
            "3s",
        ])
        .arg(&tracks)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let hot = server.data_dir.join("hot");
    let started = std::time::Instant::now();
    loop {
        let stored = HotStore::open_read_only(&hot, None)
            .ok()
            .and_then(|s| s.stats().ok())
            .map_or(0, |s| s.positions);
        if stored > expected / 4 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "replay made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill9();
    let out = replay.wait_with_output().unwrap();
    let first: journeyd::replay::ReplaySummary = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        first.files_failed > 0 && first.stored < expected,
        "the kill came mid-replay: {}",
        first.render()
    );

    // Restart and finish: the devices resend what was not acked; nothing is stored twice.
    let server = ChildServer::start(dir.path());
    let second: journeyd::replay::ReplaySummary =
        serde_json::from_str(&server.command(&["replay", "--json", tracks.to_str().unwrap()]))
            .unwrap();
    assert_eq!(second.files_failed, 0, "{}", second.render());
    let stats: serde_json::Value =
        serde_json::from_str(&server.command(&["stats", "--json"])).unwrap();
    assert_eq!(
        stats["positions"].as_u64(),
        Some(expected),
        "every position present, none twice"
    );
    drop(server);
    let store = read_only_store(&hot);
    for d in store.devices(None).unwrap() {
        let all = store.device_positions(d.tenant, d.id).unwrap();
        assert!(
            all.windows(2).all(|w| w[0].fix_time_us < w[1].fix_time_us),
            "device {} holds a fix twice",
            d.name
        );
    }
}
