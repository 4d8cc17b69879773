//! The archive: compaction into encrypted Parquet on a real S3-compatible server (started by
//! the test command) and on the local-folder default, crash safety at every step, outages,
//! retrieval, restore, outside readers, backups; cases B18, F35, F38, F40.

#![allow(
    clippy::print_stderr,
    reason = "tests say what they skipped or measured"
)]

mod support;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

use journeyd::config::JourneydConfig;
use journeyd_device::{Device, DeviceConfig, Identity, Outbox};
use journeyd_store::{DeviceId, HotStore, JourneyId, Role, TenantId};
use journeyd_wire::Position;
use serde_json::json;
use support::*;

const SECOND: i64 = 1_000_000;
const DAY: i64 = 86_400 * SECOND;

fn ramp(start: i64, n: i64, step_s: i64, lat0: f64) -> Vec<Position> {
    (0..n)
        .map(|i| {
            Position::new(start + i * step_s * SECOND, lat0 + i as f64 * 1e-4, 10.0)
                .with_accuracy(5.0)
                .with_speed(3.0)
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Every journey's track: (tenant, device, journey) → positions.
type Tracks = BTreeMap<(TenantId, DeviceId, JourneyId), Vec<Position>>;

fn hot_tracks(store: &HotStore) -> Tracks {
    store
        .all_journeys()
        .unwrap()
        .into_iter()
        .map(|(t, d, j, _)| ((t, d, j), store.track(t, d, j).unwrap()))
        .filter(|(_, track)| !track.is_empty())
        .collect()
}

fn archived_tracks(store: &HotStore, objects: &journeyd_objects::ObjectStore) -> Tracks {
    let rt = runtime();
    let mut out = Tracks::new();
    for t in store.tenants().unwrap() {
        for e in store.archived_journeys(t.id, None).unwrap() {
            let track = rt
                .block_on(journeyd_archiver::retrieve::fetch_journey(
                    store, objects, &e, false,
                ))
                .unwrap();
            out.insert((e.tenant, e.device, JourneyId(e.journey)), track);
        }
    }
    out
}

/// Sends `journeys` (each a list of positions, started and ended) as one enrolled device.
fn send_journeys(server: &ChildServer, name: &str, journeys: &[(u64, Vec<Position>)]) {
    let rt = runtime();
    rt.block_on(async {
        let mut device = Device::open(
            DeviceConfig::new(server.addr, server.trust()),
            Outbox::memory(),
            Identity::Enrol {
                code: server.code(),
                name: name.into(),
            },
        )
        .unwrap();
        for (j, positions) in journeys {
            device.start_journey(*j, positions[0].fix_time_us).unwrap();
            device.record(*j, positions).unwrap();
            device
                .end_journey(*j, positions[positions.len() - 1].fix_time_us)
                .unwrap();
        }
        device.flush().await.unwrap();
    });
}

fn journeyd(config: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(binary())
        .args(["--log", "info", "--config"])
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn journeyd_ok(config: &Path, args: &[&str]) -> String {
    let out = journeyd(config, args);
    assert!(
        out.status.success(),
        "journeyd {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Opens a stopped node's store and object store from its config file.
fn open_node(config_path: &Path) -> (HotStore, Arc<journeyd_objects::ObjectStore>) {
    let config = JourneydConfig::load(Some(config_path)).unwrap();
    let store = writable_store(&config.store_path());
    let objects = journeyd::archive_cmd::open_objects(&config).unwrap();
    (store, objects)
}

/// A node with three old journeys on two devices, stopped. Returns its config path.
fn node_with_old_journeys(dir: &Path, extra: &str) -> std::path::PathBuf {
    let server = ChildServer::start_with_config(dir, extra);
    let t0 = now_us() - 200 * DAY;
    send_journeys(
        &server,
        "van-1",
        &[
            (1, ramp(t0, 300, 2, 51.0)),
            (2, ramp(t0 + DAY, 200, 2, 51.5)),
        ],
    );
    send_journeys(&server, "van-2", &[(7, ramp(t0 + 2 * DAY, 150, 2, 52.0))]);
    let config = server.config_path.clone();
    drop(server);
    config
}

fn all_objects(objects: &journeyd_objects::ObjectStore) -> Vec<String> {
    runtime()
        .block_on(objects.list("tenant="))
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect()
}

/// Every position is in exactly one place: nothing hot, the archive holds `expected` once, and
/// every object is one the index names.
fn assert_archived_once(config: &Path, expected: &Tracks) {
    let (store, objects) = open_node(config);
    assert!(
        hot_tracks(&store).is_empty(),
        "nothing stays hot once archived"
    );
    assert_eq!(&archived_tracks(&store, &objects), expected);
    let indexed: std::collections::BTreeSet<String> = store
        .tenants()
        .unwrap()
        .into_iter()
        .flat_map(|t| store.archived_journeys(t.id, None).unwrap())
        .flat_map(|e| e.parts.into_iter().map(|p| p.object))
        .collect();
    let listed: std::collections::BTreeSet<String> = all_objects(&objects).into_iter().collect();
    assert_eq!(indexed, listed, "no object outside the index, none missing");
    assert!(store.pending_uploads().unwrap().is_empty());
    let total: usize = expected.values().map(Vec::len).sum();
    let mut in_objects = 0;
    let rt = runtime();
    for name in &listed {
        let tenant = journeyd_archiver::tenant_of_object(name).unwrap();
        let bytes = rt.block_on(objects.get(name)).unwrap();
        in_objects += journeyd_archive::summarize(
            bytes,
            &journeyd_archive::ReadOptions {
                key: Some(store.tenant_key(TenantId(tenant)).unwrap()),
                ..Default::default()
            },
        )
        .unwrap()
        .rows as usize;
    }
    assert_eq!(in_objects, total, "no row archived twice");
}

#[test]
fn compaction_survives_kill_9_at_every_step_on_s3() {
    for step in [
        "intent-recorded",
        "file-written",
        "uploaded",
        "verified",
        "committed",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let bucket = bucket_name(&format!("crash-{step}"));
        create_bucket(&bucket);
        let config = node_with_old_journeys(dir.path(), &s3_section(&bucket));
        let expected = {
            let (store, _) = open_node(&config);
            hot_tracks(&store)
        };
        assert_eq!(expected.len(), 3);

        let mut child = std::process::Command::new(binary())
            .args(["--log", "info", "--config"])
            .arg(&config)
            .arg("compact")
            .env("JOURNEYD_FAILPOINT", format!("compact:{step}"))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let marker = format!("failpoint compact:{step} reached");
        let mut seen = Vec::new();
        for line in stderr.lines() {
            let line = line.unwrap();
            let hit = line.contains(&marker);
            seen.push(line);
            if hit {
                break;
            }
        }
        assert!(
            seen.iter().any(|l| l.contains(&marker)),
            "step {step} never reached: {seen:#?}"
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // Mid-way, every position is hot, or archived and verified.
        {
            let (store, objects) = open_node(&config);
            let mut union = hot_tracks(&store);
            if step == "committed" {
                union.extend(archived_tracks(&store, &objects));
            }
            assert_eq!(union, expected, "after a kill at {step}");
        }
        let out = journeyd_ok(&config, &["compact", "--json"]);
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        eprintln!("rerun after {step}: {report}");
        assert_archived_once(&config, &expected);
    }
}

#[test]
fn an_unreachable_object_store_deletes_nothing_and_the_next_run_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!(
        "attempts = 3\n[archive.s3]\nbucket = \"nowhere\"\nendpoint = \"http://127.0.0.1:{dead_port}\"\nregion = \"r\"\npath_style = true\naccess_key_id = \"k\"\nsecret_access_key = \"s\"\n"
    );
    let config = node_with_old_journeys(dir.path(), &dead);
    let expected = {
        let (store, _) = open_node(&config);
        hot_tracks(&store)
    };
    let out = journeyd(&config, &["compact"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("retrying"), "{stderr}");
    assert!(stderr.contains("object store unavailable"), "{stderr}");
    {
        let (store, _) = open_node(&config);
        assert_eq!(hot_tracks(&store), expected, "nothing deleted");
    }
    // The store comes back (here: the real server under the same config file).
    let bucket = bucket_name("recovers");
    create_bucket(&bucket);
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text[..text.find("attempts = 3").unwrap()].to_owned() + &s3_section(&bucket);
    std::fs::write(&config, text).unwrap();
    journeyd_ok(&config, &["compact"]);
    assert_archived_once(&config, &expected);
}

#[test]
fn every_real_track_round_trips_through_the_s3_archive() {
    let Some(tracks) = shared_tracks() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bucket = bucket_name("round-trip");
    create_bucket(&bucket);
    let server = ChildServer::start_with_config(dir.path(), &s3_section(&bucket));
    server.command(&["replay", "--json", tracks.to_str().unwrap()]);
    let config = server.config_path.clone();
    drop(server);
    let expected = {
        let (store, _) = open_node(&config);
        hot_tracks(&store)
    };
    assert!(expected.len() > 100);
    // The tracks are years old: all past the hot retention.
    journeyd_ok(&config, &["compact"]);
    assert_archived_once(&config, &expected);

    // Every journey restored into the hot store reads back position by position.
    let (store, objects) = open_node(&config);
    let rt = runtime();
    let now = now_us();
    for t in store.tenants().unwrap() {
        for e in store.archived_journeys(t.id, None).unwrap() {
            rt.block_on(journeyd_archiver::retrieve::restore(
                &store,
                &objects,
                &e,
                now + DAY,
                now,
            ))
            .unwrap();
        }
    }
    assert_eq!(hot_tracks(&store), expected);

    // The index rebuilt from the objects alone names the same journeys.
    let before: Vec<_> = store
        .archived_journeys(store.tenants().unwrap()[0].id, None)
        .unwrap()
        .into_iter()
        .map(|e| (e.device, e.journey, e.positions, e.parts))
        .collect();
    let report = rt
        .block_on(journeyd_archiver::retrieve::rebuild_index(&store, &objects))
        .unwrap();
    assert_eq!(report.journeys as usize, expected.len());
    let after: Vec<_> = store
        .archived_journeys(store.tenants().unwrap()[0].id, None)
        .unwrap()
        .into_iter()
        .map(|e| (e.device, e.journey, e.positions, e.parts))
        .collect();
    assert_eq!(before, after);
}

#[test]
fn backup_wipe_restore_compare_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = bucket_name("backup");
    create_bucket(&bucket);
    let server = ChildServer::start_with_config(dir.path(), &s3_section(&bucket));
    let t0 = now_us() - 3 * DAY;
    send_journeys(&server, "van-1", &[(1, ramp(t0, 500, 1, 51.0))]);
    send_journeys(&server, "van-2", &[(2, ramp(t0, 400, 1, 52.0))]);
    let config = server.config_path.clone();
    let data_dir = server.data_dir.clone();
    drop(server);
    let out = journeyd_ok(&config, &["backup", "--now", "2030-01-01T00:00:00Z"]);
    assert!(out.starts_with("backups/"), "{out}");
    // A later backup, with more data, is the one restored (whatever clock a drill used before).
    let server = ChildServer::start_with_config(dir.path(), &s3_section(&bucket));
    send_journeys(&server, "van-3", &[(3, ramp(t0, 100, 1, 53.0))]);
    drop(server);
    let (expected, users, devices) = {
        let (store, _) = open_node(&config);
        let users = store.users(store.tenants().unwrap()[0].id).unwrap().len();
        (
            hot_tracks(&store),
            users,
            store.devices(None).unwrap().len(),
        )
    };
    journeyd_ok(&config, &["backup"]);

    // A fresh machine: only the config and the master key survive.
    std::fs::remove_dir_all(data_dir.join("hot")).unwrap();
    journeyd_ok(&config, &["restore-backup"]);
    let (store, _) = open_node(&config);
    assert_eq!(hot_tracks(&store), expected);
    assert_eq!(store.devices(None).unwrap().len(), devices);
    assert_eq!(
        store.users(store.tenants().unwrap()[0].id).unwrap().len(),
        users
    );
    drop(store);
    // And it serves again.
    let server = ChildServer::start_with_config(dir.path(), &s3_section(&bucket));
    let stats: serde_json::Value =
        serde_json::from_str(&server.command(&["stats", "--json"])).unwrap();
    assert_eq!(stats["positions"], 1000);
}

/// An in-process server whose clock reads `start` now; returns it and the clock.
fn server_at(start: &str) -> (TestServer, TestClock) {
    let clock = TestClock::default();
    clock.advance(at(start) - now_us());
    let ts = TestServer::start_with_clock(|_| {}, clock.clock());
    (ts, clock)
}

fn compact(ts: &TestServer, clock: &TestClock) -> journeyd_archiver::RunReport {
    let now = (clock.clock())();
    ts.server
        .compactor
        .run_blocking(now)
        .expect("compaction run")
}

#[tokio::test(flavor = "multi_thread")]
async fn f35_retention_on_read() {
    let (ts, clock) = server_at("2026-01-10T08:00:00Z");
    let t0 = at("2026-01-10T07:00:00Z");
    let id = journey(&ts, "dev-F35", 1, &ramp(t0, 30, 60, 48.0)).await;
    let t = ts.tenant();
    ts.add_user(t, "rita", Role::Reporter, "a long enough password 1");
    ts.add_user(t, "ivan", Role::Investigator, "a long enough password 2");
    let api = ts.api();
    let track_path = format!("/api/v1/devices/{}/journeys/1/track", id.0);

    // Within the retention: hot, nothing to do.
    clock.advance(59 * DAY);
    let report = tokio::task::block_in_place(|| compact(&ts, &clock));
    assert_eq!(report.journeys, 0);
    let rita = api.login("demo", "rita", "a long enough password 1").await;
    let (status, _) = api.json("GET", &track_path, Some(&rita), None).await;
    assert_eq!(status, 200);

    // Past 60 days: archived, and gone from the hot store.
    clock.advance(2 * DAY);
    let rita = api.login("demo", "rita", "a long enough password 1").await;
    let ivan = api.login("demo", "ivan", "a long enough password 2").await;
    let report = tokio::task::block_in_place(|| compact(&ts, &clock));
    assert_eq!((report.journeys, report.rows), (1, 30));
    assert!(ts.store().track(t, id, JourneyId(1)).unwrap().is_empty());
    assert!(ts.store().journey(t, id, JourneyId(1)).unwrap().is_none());
    let (_, list) = api.json("GET", "/api/v1/journeys", Some(&rita), None).await;
    assert_eq!(list["journeys"].as_array().unwrap().len(), 0, "{list}");
    // A reporter is told it is archived; an investigator reads it from the archive.
    let (status, body) = api.json("GET", &track_path, Some(&rita), None).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.to_string().contains("archived"), "{body}");
    let (status, body) = api.json("GET", &track_path, Some(&ivan), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["positions"].as_array().unwrap().len(), 30);
    let (status, search) = api
        .json("GET", "/api/v1/archive/journeys", Some(&ivan), None)
        .await;
    assert_eq!(status, 200, "{search}");
    assert_eq!(search["journeys"][0]["positions"], 30);
    let (status, _) = api
        .json("GET", "/api/v1/archive/journeys", Some(&rita), None)
        .await;
    assert_eq!(status, 403);

    // Restored for 3 days: served hot to investigators, then dropped again by the compactor.
    let (status, body) = api
        .json(
            "POST",
            &format!("/api/v1/archive/devices/{}/journeys/1/restore", id.0),
            Some(&ivan),
            Some(json!({"days": 3})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.json("GET", &track_path, Some(&ivan), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["positions"].as_array().unwrap().len(), 30);
    // Past its retention, a restored copy is still the investigator's alone.
    let (status, body) = api.json("GET", &track_path, Some(&rita), None).await;
    assert_eq!(status, 403, "{body}");
    let (_, list) = api.json("GET", "/api/v1/journeys", Some(&rita), None).await;
    assert_eq!(list["journeys"].as_array().unwrap().len(), 0, "{list}");
    tokio::task::block_in_place(|| compact(&ts, &clock));
    assert_eq!(ts.store().track(t, id, JourneyId(1)).unwrap().len(), 30);
    clock.advance(4 * DAY);
    let report = tokio::task::block_in_place(|| compact(&ts, &clock));
    assert_eq!(report.restored_dropped, 1);
    assert_eq!(
        report.journeys, 0,
        "a restored copy is never archived twice"
    );
    assert!(ts.store().track(t, id, JourneyId(1)).unwrap().is_empty());

    // Every search and restore is in the audit log.
    let admin = api.login("demo", "admin", &ts.admin_password()).await;
    let (_, audit) = api.json("GET", "/api/v1/audit", Some(&admin), None).await;
    let text = audit.to_string();
    assert!(text.contains("/api/v1/archive/journeys"), "{text}");
    assert!(text.contains("/restore"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn b18_late_upload_across_a_month() {
    let (ts, clock) = server_at("2027-01-30T09:00:00Z");
    let t = ts.tenant();
    let mut policy = ts.store().tenant(t).unwrap().unwrap().policy;
    policy.hot_retention_days = 1;
    ts.store().set_policy(t, policy).unwrap();
    let cred = ts.enrol("dev-B18");
    let id = DeviceId(cred.device_id);
    let open = |cred: journeyd_device::Credential| {
        Device::open(
            ts.device_config(),
            Outbox::memory(),
            Identity::Credential(cred),
        )
        .unwrap()
    };
    // 30 January: the journey starts and the first fixes arrive.
    let mut phone = open(cred.clone());
    let start = at("2027-01-30T08:00:00Z");
    phone.start_journey(1, start).unwrap();
    phone.record(1, &ramp(start, 10, 60, 40.0)).unwrap();
    phone.flush().await.unwrap();
    // Offline from then until 2 February: the rest of 30–31 January arrives late, with the end.
    clock.advance(at("2027-02-01T12:00:00Z") - at("2027-01-30T09:00:00Z"));
    let report = tokio::task::block_in_place(|| compact(&ts, &clock));
    assert_eq!(report.journeys, 0, "the late-arrival window holds it hot");
    clock.advance(DAY);
    let late = ramp(at("2027-01-31T20:00:00Z"), 20, 60, 40.1);
    phone.record(1, &late).unwrap();
    phone
        .end_journey(1, late[late.len() - 1].fix_time_us)
        .unwrap();
    phone.flush().await.unwrap();
    assert_eq!(ts.store().track(t, id, JourneyId(1)).unwrap().len(), 30);

    // Seven days after its end, it is archived whole, under January.
    clock.advance(8 * DAY);
    let report = tokio::task::block_in_place(|| compact(&ts, &clock));
    assert_eq!((report.journeys, report.rows), (1, 30));
    let entry = ts.store().archived(t, id, JourneyId(1)).unwrap().unwrap();
    assert_eq!(entry.positions, 30);
    assert!(
        entry.parts[0]
            .object
            .starts_with(&format!("tenant={}/date=2027-01-30/", t.0)),
        "{:?}",
        entry.parts
    );
}

/// An archived fix at 2024-03-10T12:00:00.123456Z, its tenant key and the object's path.
async fn archived_f38() -> (TestServer, TestClock, DeviceId, std::path::PathBuf, String) {
    let (ts, clock) = server_at("2024-03-10T12:05:00Z");
    let instant = at("2024-03-10T12:00:00.123456Z");
    let id = journey(
        &ts,
        "dev-F38",
        1,
        &[
            Position::new(instant, 51.5, -0.12).with_accuracy(4.0),
            Position::new(instant + SECOND, 51.5001, -0.12),
        ],
    )
    .await;
    clock.advance(70 * DAY);
    let report = tokio::task::block_in_place(|| compact(&ts, &clock));
    assert_eq!(report.rows, 2);
    let t = ts.tenant();
    let entry = ts.store().archived(t, id, JourneyId(1)).unwrap().unwrap();
    let path = ts
        .server
        .config
        .data_dir
        .join("archive")
        .join(&entry.parts[0].object);
    assert!(path.exists(), "{}", path.display());
    let key = ts.store().tenant_key(t).unwrap().to_hex();
    (ts, clock, id, path, key)
}

fn python_read(path: &Path, key: &str) -> std::process::Output {
    std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../interop/read_archive.py"
        ))
        .arg(path)
        .arg(key)
        .arg("--csv")
        .output()
        .expect("python3 runs (scripts/test.sh installs pyarrow and cryptography)")
}

#[tokio::test(flavor = "multi_thread")]
async fn f38_timestamp_unit() {
    let (ts, _clock, id, path, key) = archived_f38().await;
    // pyarrow with the key: the same instant, microseconds and UTC intact.
    let out = python_read(&path, &key);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(csv.contains("2024-03-10 12:00:00.123456Z"), "{csv}");
    // journeyd archive read, with no server.
    let out = std::process::Command::new(binary())
        .args(["archive", "read"])
        .arg(&path)
        .args(["--key", &key])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(csv.contains("2024-03-10T12:00:00.123456Z"), "{csv}");
    // Restored: the same instant through the API.
    ts.add_user(
        ts.tenant(),
        "ivan",
        Role::Investigator,
        "a long enough password 2",
    );
    let api = ts.api();
    let ivan = api.login("demo", "ivan", "a long enough password 2").await;
    let (status, body) = api
        .json(
            "POST",
            &format!("/api/v1/archive/devices/{}/journeys/1/restore", id.0),
            Some(&ivan),
            Some(json!({"days": 1})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, track) = api
        .json(
            "GET",
            &format!(
                "/api/v1/devices/{}/journeys/1/track?from=2024-03-10T12:00:00.123456Z&to=2024-03-10T12:00:00.123456Z",
                id.0
            ),
            Some(&ivan),
            None,
        )
        .await;
    assert_eq!(
        track["positions"][0]["fix_time"], "2024-03-10T12:00:00.123456Z",
        "{track}"
    );
    assert_eq!(track["positions"].as_array().unwrap().len(), 1);
    // A wrong key: a clear error, not garbage.
    let out = python_read(&path, &"ab".repeat(32));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wrong key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(binary())
        .args(["archive", "read"])
        .arg(&path)
        .args(["--key", &"ab".repeat(32)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wrong key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn f40_encrypted_archive_with_page_index() {
    let (ts, _clock, id, path, key) = archived_f38().await;
    let t = ts.tenant();
    let entry = ts.store().archived(t, id, JourneyId(1)).unwrap().unwrap();
    let objects = &ts.server.objects;
    let with = journeyd_archiver::retrieve::fetch_journey(ts.store(), objects, &entry, true)
        .await
        .unwrap();
    let without = journeyd_archiver::retrieve::fetch_journey(ts.store(), objects, &entry, false)
        .await
        .unwrap();
    assert_eq!(with.len(), 2);
    assert_eq!(with, without);
    let out = python_read(&path, &key);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 3);
}

/// A TCP proxy on loopback in front of `upstream`: the first `stall` connections are accepted
/// and never answered (a hung or very slow S3), the rest are forwarded.
fn stalling_proxy(upstream: std::net::SocketAddr, stall: usize) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(client) = conn else { continue };
            if n < stall {
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_secs(30));
                    drop(client);
                });
                continue;
            }
            let Ok(server) = std::net::TcpStream::connect(upstream) else {
                continue;
            };
            let (mut c1, mut s1) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut c2, mut s2) = (client, server);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c1, &mut s1);
                let _ = s1.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

#[test]
fn a_hung_object_store_is_timed_out_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = bucket_name("slow");
    create_bucket(&bucket);
    let config = node_with_old_journeys(dir.path(), &s3_section(&bucket));
    let expected = {
        let (store, _) = open_node(&config);
        hot_tracks(&store)
    };
    // Point the node at a proxy whose first two connections hang.
    let endpoint = std::env::var("JOURNEYD_TEST_S3_ENDPOINT").unwrap();
    let upstream: std::net::SocketAddr = endpoint.trim_start_matches("http://").parse().unwrap();
    let proxy = stalling_proxy(upstream, 2);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&endpoint, &format!("http://{proxy}"))
        .replace("[archive.s3]\n", "[archive.s3]\ntimeout = \"1s\"\n");
    std::fs::write(&config, text).unwrap();
    let out = journeyd(&config, &["compact"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("retrying"), "{stderr}");
    assert_archived_once(&config, &expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_store_outage_shows_in_the_metrics() {
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let clock = TestClock::default();
    let ts = TestServer::start_with_clock(
        |c| {
            c.archive.attempts = 2;
            c.archive.s3.bucket = "nowhere".into();
            c.archive.s3.endpoint = format!("http://127.0.0.1:{dead_port}");
            c.archive.s3.path_style = true;
            c.archive.s3.access_key_id = "k".into();
            c.archive.s3.secret_access_key = "s".into();
        },
        clock.clock(),
    );
    let id = journey(&ts, "dev-outage", 1, &ramp(now_us() - DAY, 20, 60, 45.0)).await;
    clock.advance(90 * DAY);
    let now = (clock.clock())();
    let e = tokio::task::block_in_place(|| ts.server.compactor.run_blocking(now)).unwrap_err();
    assert!(e.to_string().contains("gave up after 2 attempts"), "{e}");
    assert_eq!(
        ts.store()
            .track(ts.tenant(), id, JourneyId(1))
            .unwrap()
            .len(),
        20,
        "nothing deleted"
    );
    let (status, _, metrics) = ts.api().call("GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    for line in [
        "journeyd_archive_object_failures_total 1",
        "journeyd_archive_object_retries_total 1",
        "journeyd_compaction_failed_runs_total 1",
        "journeyd_archived_journeys_total 0",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[test]
fn large_objects_go_up_in_parts_and_come_back_whole() {
    let bucket = bucket_name("multipart");
    create_bucket(&bucket);
    let config = JourneydConfig::parse(&s3_section(&bucket)).unwrap();
    let objects = journeyd::archive_cmd::open_objects(&config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big");
    // 12 MiB and a bit: three parts of 5 MiB (the section sets part_bytes to 5 MiB).
    let data: Vec<u8> = (0..(12 << 20) + 12_345u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&file, &data).unwrap();
    let rt = runtime();
    let up = rt
        .block_on(objects.put_file("tenant=1/big.bin", &file))
        .unwrap();
    assert_eq!(up.size, data.len() as u64);
    assert_eq!(
        rt.block_on(objects.size("tenant=1/big.bin")).unwrap(),
        Some(data.len() as u64)
    );
    let back = rt.block_on(objects.get("tenant=1/big.bin")).unwrap();
    assert_eq!(journeyd_objects::sha256_hex(&back), up.sha256);
    let to = dir.path().join("back");
    rt.block_on(objects.get_to_file("tenant=1/big.bin", &to))
        .unwrap();
    assert_eq!(std::fs::read(&to).unwrap(), data);
    rt.block_on(objects.delete("tenant=1/big.bin")).unwrap();
    assert_eq!(rt.block_on(objects.size("tenant=1/big.bin")).unwrap(), None);
}

/// Sends `positions` to journey `j` (no start or end mark) and checks none was refused.
async fn send_more(phone: &mut Device, j: u64, positions: &[Position]) {
    phone.record(j, positions).unwrap();
    let report = phone.flush().await.unwrap();
    assert_eq!(report.rejected_records, 0, "{report:?}");
    assert!(report.refused.is_empty(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn late_positions_of_an_archived_journey_are_kept_once_through_restores() {
    let (ts, clock) = server_at("2026-01-10T08:00:00Z");
    let t = ts.tenant();
    let (mut phone, id) = ts.device("van");
    let t0 = at("2026-01-10T07:00:00Z");
    let first = ramp(t0, 10, 5, 50.0);
    send_more(&mut phone, 1, &first).await;
    clock.advance(70 * DAY);
    assert_eq!(
        tokio::task::block_in_place(|| compact(&ts, &clock)).rows,
        10
    );

    // The device resends the ten archived fixes and five new ones, under new sequence numbers.
    let mut all = first.clone();
    all.extend(ramp(t0 + 50 * SECOND, 5, 5, 50.1));
    send_more(&mut phone, 1, &all).await;
    assert_eq!(ts.store().track(t, id, JourneyId(1)).unwrap().len(), 15);

    // A restore keeps what arrived since, adding only what the hot store lacks.
    let entry = ts.store().archived(t, id, JourneyId(1)).unwrap().unwrap();
    let now = (clock.clock())();
    journeyd_archiver::retrieve::restore(ts.store(), &ts.server.objects, &entry, now + DAY, now)
        .await
        .unwrap();
    assert_eq!(ts.store().track(t, id, JourneyId(1)).unwrap().len(), 15);
    // More arrives while restored.
    send_more(&mut phone, 1, &ramp(t0 + 100 * SECOND, 3, 5, 50.2)).await;
    assert_eq!(ts.store().track(t, id, JourneyId(1)).unwrap().len(), 18);

    // The restore ends: the copy goes, the device's own positions stay and are archived once.
    clock.advance(2 * DAY + 30 * DAY);
    let report = tokio::task::block_in_place(|| compact(&ts, &clock));
    assert_eq!(report.restored_dropped, 1);
    assert_eq!(
        report.rows, 8,
        "only the fixes the archive lacked: {report:?}"
    );
    assert!(ts.store().track(t, id, JourneyId(1)).unwrap().is_empty());
    let entry = ts.store().archived(t, id, JourneyId(1)).unwrap().unwrap();
    assert_eq!(entry.positions, 18);
    let archived =
        journeyd_archiver::retrieve::fetch_journey(ts.store(), &ts.server.objects, &entry, true)
            .await
            .unwrap();
    assert_eq!(archived.len(), 18);
    let mut expected = all.clone();
    expected.extend(ramp(t0 + 100 * SECOND, 3, 5, 50.2));
    expected.sort_by_key(|p| p.fix_time_us);
    assert_eq!(archived, expected);

    // Resending everything again adds nothing to the archive, and restoring still works.
    send_more(&mut phone, 1, &expected).await;
    clock.advance(70 * DAY);
    let report = tokio::task::block_in_place(|| compact(&ts, &clock));
    assert_eq!((report.journeys, report.rows), (1, 0), "{report:?}");
    let entry = ts.store().archived(t, id, JourneyId(1)).unwrap().unwrap();
    assert_eq!(entry.positions, 18);
    let now = (clock.clock())();
    journeyd_archiver::retrieve::restore(ts.store(), &ts.server.objects, &entry, now + DAY, now)
        .await
        .unwrap();
    assert_eq!(ts.store().track(t, id, JourneyId(1)).unwrap(), expected);
}

#[test]
fn rebuilding_the_index_from_an_empty_place_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = node_with_old_journeys(dir.path(), "");
    journeyd_ok(&config, &["compact"]);
    let listed = journeyd_ok(&config, &["archive", "list"]);
    assert_eq!(listed.lines().count(), 3);
    let text = std::fs::read_to_string(&config).unwrap();
    let empty = dir.path().join("elsewhere");
    std::fs::write(
        &config,
        text.replace(
            "[archive]\n",
            &format!("[archive]\ndir = {:?}\n", empty.display().to_string()),
        ),
    )
    .unwrap();
    let out = journeyd(&config, &["archive", "rebuild-index"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no archive objects found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(journeyd_ok(&config, &["archive", "list"]), listed);
}

#[test]
fn serve_compacts_and_backs_up_on_its_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let config = node_with_old_journeys(dir.path(), "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("compact_every = \"0s\"", "compact_every = \"1s\"")
        .replace("backup_every = \"0s\"", "backup_every = \"2s\"");
    std::fs::write(&config, text).unwrap();
    let mut child = std::process::Command::new(binary())
        .args(["--log", "warn", "--config"])
        .arg(&config)
        .arg("serve")
        .spawn()
        .unwrap();
    let backups = dir.path().join("data/archive/backups");
    let started = std::time::Instant::now();
    let mut archived = 0;
    while started.elapsed() < std::time::Duration::from_secs(60) {
        let out = journeyd(&config, &["stats", "--json"]);
        if out.status.success() {
            let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            archived = stats["archived_journeys"].as_u64().unwrap_or(0);
        }
        let backed_up = std::fs::read_dir(&backups).is_ok_and(|mut d| d.next().is_some());
        if archived == 3 && backed_up {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(archived, 3, "serve archived the old journeys on its own");
    assert!(
        std::fs::read_dir(&backups).unwrap().next().is_some(),
        "serve took a backup on its own"
    );
}
