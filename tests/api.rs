//! The HTTPS query API over real sockets: roles, tenants, lockout, expiry, audit, reports,
//! exports, and the field cases that belong to reports.

#![allow(
    clippy::print_stderr,
    reason = "tests say what they skipped or measured"
)]

mod support;

use std::time::Duration;

use journeyd_store::{DeviceId, Role, TenantId};
use journeyd_wire::{CloseCode, Position};
use serde_json::{Value, json};
use support::*;

const PASSWORD: &str = "correct horse battery";

fn ramp(start: i64, n: i64, step_s: i64, lat0: f64, dlat: f64) -> Vec<Position> {
    (0..n)
        .map(|i| {
            Position::new(start + i * step_s * SECOND, lat0 + i as f64 * dlat, 10.0)
                .with_accuracy(5.0)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ts = TestServer::start();
    let mut tcp = tokio::net::TcpStream::connect(ts.server.api.local_addr())
        .await
        .unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"),
        "plain http must not be served"
    );
    assert!(
        !String::from_utf8_lossy(&buf).contains("HTTP/1.1 30"),
        "nor redirected"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_metrics() {
    let ts = TestServer::start();
    let api = ts.api();
    assert_eq!(api.call("GET", "/healthz", None, None).await.0, 200);
    assert_eq!(api.call("GET", "/readyz", None, None).await.0, 200);
    journey(
        &ts,
        "m",
        1,
        &ramp(now_us() - 3_600 * SECOND, 5, 10, 50.0, 1e-4),
    )
    .await;
    let (status, ctype, body) = api.call("GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain"));
    let text = String::from_utf8(body.to_vec()).unwrap();
    for name in [
        "journeyd_connections_open",
        "journeyd_positions_stored_total 5",
        "journeyd_ack_latency_seconds_bucket",
        // One journey: its start, one batch and its end, each a record the writer took.
        "journeyd_writer_queue_wait_seconds_count 3\n",
        "journeyd_group_commit_seconds_bucket{le=\"+Inf\"}",
        "journeyd_wal_sync_seconds_bucket{le=\"+Inf\"}",
        "journeyd_positions_refused_total{reason=\"time_in_future\"}",
        "journeyd_store_bytes",
        "journeyd_store_write_stopped",
    ] {
        assert!(text.contains(name), "metrics lack {name}:\n{text}");
    }
    ts.store().fail_next_writes(1);
    let (mut d, _) = ts.device("m2");
    d.record(1, &[Position::new(now_us() - SECOND, 1.0, 1.0)])
        .unwrap();
    let _ = d.flush().await;
    // The failure was retried and stored; readiness is green again after a good write.
    assert_eq!(api.call("GET", "/readyz", None, None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn role_matrix_over_every_endpoint() {
    let ts = TestServer::start();
    let t = ts.tenant();
    let dev = journey(
        &ts,
        "van",
        7,
        &ramp(now_us() - 7_200 * SECOND, 10, 30, 51.0, 1e-3),
    )
    .await;
    ts.add_user(t, "rita", Role::Reporter, PASSWORD);
    ts.add_user(t, "ivan", Role::Investigator, PASSWORD);
    let api = ts.api();
    let admin = api.login("demo", "admin", &ts.admin_password()).await;
    let reporter = api.login("demo", "rita", PASSWORD).await;
    let investigator = api.login("demo", "ivan", PASSWORD).await;
    let d = dev.0;

    // (method, path, body, allowed for reporter/investigator, allowed for admin)
    let reads = [
        "/api/v1/journeys".to_string(),
        format!("/api/v1/devices/{d}/journeys/7"),
        format!("/api/v1/devices/{d}/journeys/7/track"),
        format!("/api/v1/devices/{d}/journeys/7/summary"),
        format!("/api/v1/devices/{d}/journeys/7/export/gpx"),
        format!("/api/v1/devices/{d}/journeys/7/export/geojson"),
        format!("/api/v1/devices/{d}/journeys/7/export/csv"),
        format!("/api/v1/devices/{d}/journeys/7/export/parquet"),
        format!("/api/v1/devices/{d}/export/csv"),
        format!("/api/v1/devices/{d}/days/2026-01-01"),
        "/api/v1/live".to_string(),
    ];
    let admin_gets = [
        "/api/v1/devices",
        "/api/v1/users",
        "/api/v1/policy",
        "/api/v1/audit",
        "/api/v1/audit/export.csv",
    ];
    for path in &reads {
        for (who, token, allowed) in [
            ("reporter", &reporter, true),
            ("investigator", &investigator, true),
            ("admin", &admin, false),
        ] {
            let (status, _, _) = api.call("GET", path, Some(token), None).await;
            assert_eq!(status == 200, allowed, "{who} GET {path} gave {status}");
            if !allowed {
                assert_eq!(status, 403);
            }
        }
        assert_eq!(
            api.call("GET", path, None, None).await.0,
            401,
            "anonymous GET {path}"
        );
        assert_eq!(
            api.call("GET", path, Some("not-a-token"), None).await.0,
            401
        );
    }
    for path in admin_gets {
        for (who, token, allowed) in [
            ("reporter", &reporter, false),
            ("investigator", &investigator, false),
            ("admin", &admin, true),
        ] {
            let (status, _, _) = api.call("GET", path, Some(token), None).await;
            assert_eq!(status, if allowed { 200 } else { 403 }, "{who} GET {path}");
        }
        assert_eq!(api.call("GET", path, None, None).await.0, 401);
    }
    let writes = [
        (
            "POST",
            "/api/v1/devices".to_string(),
            json!({"name": "new phone"}),
        ),
        ("POST", format!("/api/v1/devices/{d}/block"), json!({})),
        ("POST", format!("/api/v1/devices/{d}/unblock"), json!({})),
        (
            "POST",
            "/api/v1/sources/10.1.2.3/unlock".to_string(),
            json!({}),
        ),
        (
            "POST",
            "/api/v1/users".to_string(),
            json!({"username": "new.user", "role": "reporter"}),
        ),
        ("POST", "/api/v1/users/rita/unlock".to_string(), json!({})),
        (
            "PUT",
            "/api/v1/policy".to_string(),
            json!({"time_zone": "Europe/London", "hot_retention_days": 60, "password_max_age_days": 90, "tracking": "journeys", "journey_silence_minutes": 30}),
        ),
    ];
    for (method, path, body) in &writes {
        for token in [&reporter, &investigator] {
            assert_eq!(
                api.json(method, path, Some(token), Some(body.clone()))
                    .await
                    .0,
                403,
                "{method} {path}"
            );
        }
        assert_eq!(
            api.json(method, path, None, Some(body.clone())).await.0,
            401
        );
        let (status, answer) = api
            .json(method, path, Some(&admin), Some(body.clone()))
            .await;
        assert!(
            status == 200 || status == 201,
            "admin {method} {path}: {status} {answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_are_isolated_on_every_endpoint() {
    let ts = TestServer::start();
    let a = ts.tenant();
    let (b, _) = ts.store().create_tenant("other-co", now_us()).unwrap();
    ts.add_user(a, "rita", Role::Reporter, PASSWORD);
    ts.add_user(b.id, "bob", Role::Reporter, PASSWORD);
    ts.add_user(b.id, "boss", Role::Admin, PASSWORD);
    // A device of company B with a journey.
    let (rec, secret) = ts.store().add_device(b.id, "b-van", now_us()).unwrap();
    let cred = journeyd_device::Credential {
        device_id: rec.id.0,
        secret,
    };
    let mut dev = journeyd_device::Device::open(
        ts.device_config(),
        journeyd_device::Outbox::memory(),
        journeyd_device::Identity::Credential(cred),
    )
    .unwrap();
    dev.record(9, &ramp(now_us() - 3_600 * SECOND, 5, 10, 40.0, 1e-4))
        .unwrap();
    dev.flush().await.unwrap();
    let own = journey(
        &ts,
        "a-van",
        9,
        &ramp(now_us() - 3_600 * SECOND, 5, 10, 50.0, 1e-4),
    )
    .await;

    let api = ts.api();
    let rita = api.login("demo", "rita", PASSWORD).await;
    let admin_a = api.login("demo", "admin", &ts.admin_password()).await;
    let bd = rec.id.0;
    // Every endpoint that takes an id, with company B's id, from company A's users: 404, the
    // same answer as an id that does not exist.
    for path in [
        format!("/api/v1/devices/{bd}/journeys/9"),
        format!("/api/v1/devices/{bd}/journeys/9/track"),
        format!("/api/v1/devices/{bd}/journeys/9/summary"),
        format!("/api/v1/devices/{bd}/journeys/9/export/gpx"),
        format!("/api/v1/devices/{bd}/export/csv"),
        format!("/api/v1/devices/{bd}/days/2026-01-01"),
    ] {
        let (status, body) = api.json("GET", &path, Some(&rita), None).await;
        assert_eq!(status, 404, "GET {path}: {body}");
        let missing = path.replace(&format!("/devices/{bd}/"), "/devices/999999/");
        assert_eq!(
            api.json("GET", &missing, Some(&rita), None).await,
            (404, body),
            "another company's id must look missing"
        );
    }
    for path in [
        format!("/api/v1/devices/{bd}/block"),
        format!("/api/v1/devices/{bd}/unblock"),
        "/api/v1/users/bob/unlock".to_string(),
    ] {
        assert_eq!(
            api.json("POST", &path, Some(&admin_a), Some(json!({})))
                .await
                .0,
            404,
            "POST {path}"
        );
    }
    assert!(!ts.store().device(rec.id).unwrap().unwrap().blocked);
    // Lists and counts hold only the caller's company.
    let (_, list) = api.json("GET", "/api/v1/journeys", Some(&rita), None).await;
    let devices: Vec<u64> = list["journeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["device"].as_u64().unwrap())
        .collect();
    assert_eq!(devices, vec![own.0]);
    let (_, live) = api.json("GET", "/api/v1/live", Some(&rita), None).await;
    assert!(
        live["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["device"].as_u64() != Some(bd))
    );
    let (_, devs) = api
        .json("GET", "/api/v1/devices", Some(&admin_a), None)
        .await;
    assert!(
        devs["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["id"].as_u64() != Some(bd))
    );
    let (_, users) = api.json("GET", "/api/v1/users", Some(&admin_a), None).await;
    assert!(
        users["users"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["username"] != "bob" && u["username"] != "boss")
    );
    let (_, audit) = api.json("GET", "/api/v1/audit", Some(&admin_a), None).await;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor"] != "user:bob")
    );
    // B's admin sees B's device, not A's.
    let boss = api.login("other-co", "boss", PASSWORD).await;
    let (_, devs) = api.json("GET", "/api/v1/devices", Some(&boss), None).await;
    let ids: Vec<u64> = devs["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![bd]);
    // A user name of one company is no login for another.
    let (status, _) = api
        .json(
            "POST",
            "/api/v1/login",
            None,
            Some(json!({"tenant": "demo", "username": "bob", "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn lockout_per_account_and_per_source_and_admin_lifts_it() {
    let ts = TestServer::start_with(|c| c.api.max_failed_logins_per_source = 12);
    ts.add_user(ts.tenant(), "rita", Role::Reporter, PASSWORD);
    let api = ts.api();
    let wrong = json!({"tenant": "demo", "username": "rita", "password": "wrong password!"});
    for _ in 0..5 {
        assert_eq!(
            api.json("POST", "/api/v1/login", None, Some(wrong.clone()))
                .await
                .0,
            401
        );
    }
    // Locked now: even the right password is refused.
    let right = json!({"tenant": "demo", "username": "rita", "password": PASSWORD});
    let (status, body) = api
        .json("POST", "/api/v1/login", None, Some(right.clone()))
        .await;
    assert_eq!(status, 423, "{body}");
    let admin = api.login("demo", "admin", &ts.admin_password()).await;
    let (_, users) = api.json("GET", "/api/v1/users", Some(&admin), None).await;
    let rita = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "rita")
        .unwrap()
        .clone();
    assert_eq!(rita["locked"], true, "the admin sees the lock: {rita}");
    assert_eq!(
        api.json(
            "POST",
            "/api/v1/users/rita/unlock",
            Some(&admin),
            Some(json!({}))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        api.json("POST", "/api/v1/login", None, Some(right.clone()))
            .await
            .0,
        200
    );

    // Per source: failures from one address count whatever name they try; with the five
    // above, seven probes of names that do not exist reach the limit of 12.
    for i in 0..7 {
        let probe = json!({"tenant": "demo", "username": format!("nobody{i}"), "password": "x"});
        assert_eq!(
            api.json("POST", "/api/v1/login", None, Some(probe)).await.0,
            401,
            "probe {i}"
        );
    }
    assert_eq!(
        api.json("POST", "/api/v1/login", None, Some(right.clone()))
            .await
            .0,
        429
    );
    let (_, users) = api.json("GET", "/api/v1/users", Some(&admin), None).await;
    assert_eq!(users["locked_sources"][0]["source"], "127.0.0.1");
    assert_eq!(
        api.json(
            "POST",
            "/api/v1/sources/127.0.0.1/unlock",
            Some(&admin),
            Some(json!({}))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        api.json("POST", "/api/v1/login", None, Some(right)).await.0,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_password_only_allows_changing_it() {
    let ts = TestServer::start();
    let t = ts.tenant();
    ts.add_user(t, "rita", Role::Reporter, PASSWORD);
    let mut policy = ts.store().tenant(t).unwrap().unwrap().policy;
    policy.password_max_age_days = 30;
    ts.store().set_policy(t, policy).unwrap();
    let mut user = ts.store().user(t, "rita").unwrap().unwrap();
    user.password_changed_us = now_us() - 31 * 86_400 * SECOND;
    ts.store().put_user(&user).unwrap();

    let api = ts.api();
    let (status, body) = api
        .json(
            "POST",
            "/api/v1/login",
            None,
            Some(json!({"tenant": "demo", "username": "rita", "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["password_expired"], true);
    let token = body["token"].as_str().unwrap().to_owned();
    let (status, body) = api
        .json("GET", "/api/v1/journeys", Some(&token), None)
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("expired"));
    let change = json!({"old_password": PASSWORD, "new_password": "a much newer password"});
    assert_eq!(
        api.json("POST", "/api/v1/password", Some(&token), Some(change))
            .await
            .0,
        200
    );
    assert_eq!(
        api.json("GET", "/api/v1/journeys", Some(&token), None)
            .await
            .0,
        401,
        "the old session ended"
    );
    let fresh = api.login("demo", "rita", "a much newer password").await;
    assert_eq!(
        api.json("GET", "/api/v1/journeys", Some(&fresh), None)
            .await
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_call_is_audited_once_and_the_log_cannot_be_changed() {
    let ts = TestServer::start();
    ts.add_user(ts.tenant(), "rita", Role::Reporter, PASSWORD);
    let dev = journey(
        &ts,
        "van",
        3,
        &ramp(now_us() - 3_600 * SECOND, 5, 10, 50.0, 1e-4),
    )
    .await;
    let api = ts.api();
    let admin = api.login("demo", "admin", &ts.admin_password()).await;
    let rita = api.login("demo", "rita", PASSWORD).await;
    let calls = [
        (
            "GET",
            format!("/api/v1/devices/{}/journeys/3/track", dev.0),
            &rita,
        ),
        (
            "GET",
            format!("/api/v1/devices/{}/journeys/3/export/gpx", dev.0),
            &rita,
        ),
        ("GET", "/api/v1/journeys".to_string(), &rita),
        ("GET", "/api/v1/devices".to_string(), &rita),
        ("GET", "/api/v1/devices".to_string(), &admin),
    ];
    for (m, p, t) in &calls {
        api.call(m, p, Some(t), None).await;
    }
    for (m, p) in [
        ("DELETE", "/api/v1/audit"),
        ("PUT", "/api/v1/audit"),
        ("POST", "/api/v1/audit"),
    ] {
        let (status, _) = api.json(m, p, Some(&admin), Some(json!({}))).await;
        assert!(status == 405 || status == 404, "{m} {p} gave {status}");
    }
    let (_, log) = api
        .json("GET", "/api/v1/audit?limit=1000", Some(&admin), None)
        .await;
    let entries = log["entries"].as_array().unwrap();
    // Two logins, five calls, three refused attempts to change the log.
    assert_eq!(entries.len(), 2 + 5 + 3, "{entries:#?}");
    let track = entries
        .iter()
        .filter(|e| e["target"].as_str().unwrap().ends_with("/journeys/3/track"))
        .count();
    assert_eq!(track, 1);
    let denied = entries
        .iter()
        .find(|e| e["actor"] == "user:rita" && e["action"] == "GET /api/v1/devices")
        .unwrap();
    assert_eq!(denied["result"], "403");
    // Filter by user and action, and export as CSV.
    let (_, mine) = api.json("GET", "/api/v1/audit?actor=user:rita&action=GET%20/api/v1/devices/%7Bdevice%7D/journeys/%7Bjourney%7D/export/%7Bformat%7D", Some(&admin), None).await;
    assert_eq!(mine["entries"].as_array().unwrap().len(), 1, "{mine}");
    let (status, ctype, csv) = api
        .call("GET", "/api/v1/audit/export.csv", Some(&admin), None)
        .await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/csv"));
    assert!(String::from_utf8_lossy(&csv).lines().count() >= 11);
}

async fn reporter(ts: &TestServer) -> (Https, String) {
    ts.add_user(ts.tenant(), "rita", Role::Reporter, PASSWORD);
    let api = ts.api();
    let token = api.login("demo", "rita", PASSWORD).await;
    (api, token)
}

#[tokio::test(flavor = "multi_thread")]
async fn b15_arrival_order_report() {
    let ts = TestServer::start();
    let (mut d, id) = ts.device("dev-B15");
    let t = now_us() - 3_600 * SECOND;
    d.record(
        1,
        &[
            Position::new(t, 10.0, 10.0),
            Position::new(t + 120 * SECOND, 10.018, 10.0),
        ],
    )
    .unwrap();
    d.flush().await.unwrap();
    d.record(1, &[Position::new(t + 60 * SECOND, 10.009, 10.0)])
        .unwrap();
    d.flush().await.unwrap();
    let (api, token) = reporter(&ts).await;
    let (_, s) = api
        .json(
            "GET",
            &format!("/api/v1/devices/{}/journeys/1/summary", id.0),
            Some(&token),
            None,
        )
        .await;
    let distance = s["summary"]["distance_m"].as_f64().unwrap();
    assert!(
        (distance - 2_000.0).abs() < 20.0,
        "about 2.0 km, got {distance}"
    );
    let (_, track) = api
        .json(
            "GET",
            &format!("/api/v1/devices/{}/journeys/1/track", id.0),
            Some(&token),
            None,
        )
        .await;
    let lats: Vec<f64> = track["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["lat"].as_f64().unwrap())
        .collect();
    assert_eq!(lats, vec![10.0, 10.009, 10.018]);
}

#[tokio::test(flavor = "multi_thread")]
async fn b19_local_midnight() {
    let ts = TestServer::start();
    let t = ts.tenant();
    let mut policy = ts.store().tenant(t).unwrap().unwrap().policy;
    policy.time_zone = "Pacific/Auckland".into();
    ts.store().set_policy(t, policy).unwrap();
    // 00:30 to 01:30 on 1 January in Auckland is 11:30 to 12:30 UTC on 31 December.
    let start = at("2025-12-31T11:30:00Z");
    let id = journey(&ts, "dev-B19", 1, &ramp(start, 61, 60, -36.85, 1e-4)).await;
    let (api, token) = reporter(&ts).await;
    let (status, day) = api
        .json(
            "GET",
            &format!("/api/v1/devices/{}/days/2026-01-01", id.0),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{day}");
    assert_eq!(day["summary"]["positions"], 61, "{day}");
    assert_eq!(day["from"], "2025-12-31T11:00:00.000000Z");
    let (_, before) = api
        .json(
            "GET",
            &format!("/api/v1/devices/{}/days/2025-12-31", id.0),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(before["summary"]["positions"], 0);
    let (_, track) = api
        .json(
            "GET",
            &format!("/api/v1/devices/{}/journeys/1/track", id.0),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        track["positions"][0]["fix_time"], "2025-12-31T11:30:00.000000Z",
        "stored in UTC"
    );
    // A day with a clock change is 25 or 23 hours long.
    let (_, dst_end) = api
        .json(
            "GET",
            &format!("/api/v1/devices/{}/days/2026-04-05", id.0),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(dst_end["hours"], 25.0);
    let (_, dst_start) = api
        .json(
            "GET",
            &format!("/api/v1/devices/{}/days/2026-09-27", id.0),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(dst_start["hours"], 23.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn c22_null_island_report() {
    let ts = TestServer::start();
    let t = now_us() - 3_600 * SECOND;
    let id = journey(
        &ts,
        "dev-C22",
        1,
        &[
            Position::new(t, 6.5, 3.4),
            Position::new(t + 60 * SECOND, 0.0, 0.0),
            Position::new(t + 120 * SECOND, 6.5, 3.401),
        ],
    )
    .await;
    let (api, token) = reporter(&ts).await;
    let (_, s) = api
        .json(
            "GET",
            &format!("/api/v1/devices/{}/journeys/1/summary", id.0),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s["summary"]["flagged_positions"], 1);
    assert!(s["summary"]["distance_m"].as_f64().unwrap() < 200.0, "{s}");
    let (_, track) = api
        .json(
            "GET",
            &format!("/api/v1/devices/{}/journeys/1/track", id.0),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(track["positions"][1]["flags"], json!(["null_island"]));
    let (_, _, gpx) = api
        .call(
            "GET",
            &format!("/api/v1/devices/{}/journeys/1/export/gpx", id.0),
            Some(&token),
            None,
        )
        .await;
    assert!(
        !String::from_utf8_lossy(&gpx).contains("lat=\"0\""),
        "left out of maps"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn c26_jitter_at_rest() {
    let ts = TestServer::start();
    let t = now_us() - 3_600 * SECOND;
    let positions: Vec<Position> = (0..60)
        .map(|i| {
            let (dx, dy) = (((i * 37) % 11) as f64 - 5.0, ((i * 53) % 9) as f64 - 4.0);
            Position::new(t + i * 10 * SECOND, 51.5 + dy * 1.2e-5, -0.12 + dx * 1.9e-5)
                .with_accuracy(20.0)
                .with_speed(((i % 9) as f32) / 10.0)
        })
        .collect();
    let id = journey(&ts, "dev-C26", 1, &positions).await;
    let (api, token) = reporter(&ts).await;
    let (_, s) = api
        .json(
            "GET",
            &format!("/api/v1/devices/{}/journeys/1/summary", id.0),
            Some(&token),
            None,
        )
        .await;
    assert!(
        s["summary"]["distance_m"].as_f64().unwrap() < 5.0,
        "distance near zero: {s}"
    );
    assert_eq!(
        s["summary"]["stops"].as_array().unwrap().len(),
        1,
        "one stop: {s}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn d28_journey_never_closed() {
    let clock = TestClock::default();
    let ts = TestServer::start_with_clock(|_| {}, clock.clock());
    let start = now_us() - 100 * 60 * SECOND;
    let (mut d, id) = ts.device("dev-D28");
    d.start_journey(1, start).unwrap();
    let positions = ramp(start, 91, 60, 48.0, 5e-4);
    d.record(1, &positions).unwrap();
    d.flush().await.unwrap();
    let (api, token) = reporter(&ts).await;
    let path = format!("/api/v1/devices/{}/journeys/1", id.0);
    let (_, open) = api.json("GET", &path, Some(&token), None).await;
    assert_eq!(open["journey"]["status"], "open", "{open}");
    // Silence longer than the tenant's rule (30 minutes by default).
    clock.advance(31 * 60 * SECOND);
    let (_, closed) = api.json("GET", &path, Some(&token), None).await;
    assert_eq!(closed["journey"]["status"], "closed");
    assert_eq!(closed["journey"]["end_reason"], "silence");
    assert_eq!(
        closed["journey"]["ended_at"], closed["journey"]["last_fix"],
        "its true end: the last fix"
    );
    let (_, list) = api
        .json("GET", "/api/v1/journeys", Some(&token), None)
        .await;
    assert_eq!(list["journeys"][0]["status"], "closed");
}

#[tokio::test(flavor = "multi_thread")]
async fn d29_gap_inside_a_day() {
    let ts = TestServer::start();
    let day = "2026-11-20";
    let t = |hm: &str| at(&format!("{day}T{hm}:00Z"));
    let mut positions = ramp(t("09:43"), 6, 60, 52.0, 5e-4);
    positions.extend(ramp(t("11:05"), 127, 60, 52.5, 5e-4));
    let id = journey(&ts, "dev-D29", 1, &positions).await;
    let (api, token) = reporter(&ts).await;
    let (_, s) = api
        .json(
            "GET",
            &format!("/api/v1/devices/{}/journeys/1/summary", id.0),
            Some(&token),
            None,
        )
        .await;
    let gaps = s["summary"]["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{s}");
    assert_eq!(gaps[0]["from"], "2026-11-20T09:48:00.000000Z");
    assert_eq!(gaps[0]["to"], "2026-11-20T11:05:00.000000Z");
    let driven = 5.0 * 55.6 + 126.0 * 55.6;
    let distance = s["summary"]["distance_m"].as_f64().unwrap();
    assert!(
        (distance - driven).abs() < 200.0,
        "no straight line across the gap: {distance} vs {driven}"
    );
    let (_, daily) = api
        .json(
            "GET",
            &format!("/api/v1/devices/{}/days/{day}", id.0),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(daily["summary"]["gaps"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn g43_lost_phone() {
    let ts = TestServer::start();
    let cred = ts.enrol("dev-C");
    let id = DeviceId(cred.device_id);
    let t = now_us() - 3 * 86_400 * SECOND;
    let mut phone = journeyd_device::Device::open(
        ts.device_config(),
        journeyd_device::Outbox::memory(),
        journeyd_device::Identity::Credential(cred.clone()),
    )
    .unwrap();
    phone.record(1, &ramp(t, 10, 60, 45.0, 1e-4)).unwrap();
    phone.flush().await.unwrap();
    let raw = RawClient::hello(ts.addr(), &ts.trust, &cred).await;

    // The admin blocks the phone while it still holds three days of unsent data.
    let api = ts.api();
    let admin = api.login("demo", "admin", &ts.admin_password()).await;
    let (status, body) = api
        .json(
            "POST",
            &format!("/api/v1/devices/{}/block", id.0),
            Some(&admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The block closes connections at once (no timer is involved); the generous bound only
    // keeps a loaded test machine from failing the test.
    let code = tokio::time::timeout(Duration::from_secs(5), raw.close_code())
        .await
        .expect("closed at once");
    assert_eq!(code, Some(CloseCode::DeviceBlocked as u64));

    phone
        .record(1, &ramp(t + 3_600 * SECOND, 100, 60, 45.1, 1e-4))
        .unwrap();
    let e = phone.flush().await.unwrap_err();
    assert_eq!(
        e.refusal(),
        Some(CloseCode::DeviceBlocked),
        "a distinct, non-retryable code"
    );
    assert!(phone.flush().await.is_err(), "the SDK stops retrying");
    assert_eq!(
        ts.positions(id).len(),
        10,
        "nothing sent after the block enters reports"
    );
    // A later attempt from the lost phone (a new connection with its credential) is refused
    // with the same code and audited.
    let mut later = RawClient::connect(ts.addr(), &ts.trust).await;
    let hello = journeyd_wire::Hello {
        device_id: cred.device_id,
        secret: cred.secret,
        protocol_version: 1,
        reserved: 0,
    };
    later
        .send_raw(&journeyd_wire::frame::encode_frame(
            journeyd_wire::FrameKind::Hello,
            0,
            &hello,
        ))
        .await;
    assert_eq!(
        later.close_code().await,
        Some(CloseCode::DeviceBlocked as u64)
    );

    let (_, log) = api.json("GET", "/api/v1/audit", Some(&admin), None).await;
    let entries = log["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "POST /api/v1/devices/{device}/block" && e["result"] == "200"),
        "{entries:#?}"
    );
    let attempts = entries
        .iter()
        .filter(|e| e["actor"] == format!("device:{}", id.0) && e["result"] == "blocked")
        .count();
    assert!(attempts >= 1, "later attempts are audited: {entries:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn exports_read_back() {
    let ts = TestServer::start();
    let t = now_us() - 3_600 * SECOND;
    let positions: Vec<Position> = ramp(t, 50, 10, 51.0, 1e-4)
        .into_iter()
        .map(|p| p.with_altitude(12.5))
        .collect();
    let id = journey(&ts, "dev-X", 5, &positions).await;
    let (api, token) = reporter(&ts).await;
    let base = format!("/api/v1/devices/{}/journeys/5/export", id.0);

    let (status, ctype, csv) = api
        .call("GET", &format!("{base}/csv"), Some(&token), None)
        .await;
    assert_eq!((status, ctype.as_str()), (200, "text/csv; charset=utf-8"));
    let text = String::from_utf8(csv.to_vec()).unwrap();
    assert_eq!(text.lines().count(), 51);
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .contains(&format!("{},5,", id.0))
    );

    let (status, _, geo) = api
        .call("GET", &format!("{base}/geojson"), Some(&token), None)
        .await;
    assert_eq!(status, 200);
    let geo: Value = serde_json::from_slice(&geo).unwrap();
    assert_eq!(geo["type"], "FeatureCollection");
    let coords = geo["features"][0]["geometry"]["coordinates"]
        .as_array()
        .unwrap();
    assert_eq!(coords.len(), 50);
    assert_eq!(
        coords[0],
        json!([10.0, 51.0, 12.5]),
        "RFC 7946 order: lon, lat, alt"
    );

    let (status, _, gpx) = api
        .call("GET", &format!("{base}/gpx"), Some(&token), None)
        .await;
    assert_eq!(status, 200);
    let gpx = String::from_utf8(gpx.to_vec()).unwrap();
    assert!(
        gpx.starts_with("<?xml") && gpx.contains("xmlns=\"http://www.topografix.com/GPX/1/1\"")
    );
    assert_eq!(gpx.matches("<trkpt ").count(), 50);
    // Read back by the project's own GPX reader, position for position.
    let read = journeyd_import::read_bytes("export.gpx", gpx.as_bytes()).unwrap();
    let fixes = &read.tracks[0].fixes;
    assert_eq!(fixes.len(), 50);
    assert_eq!(fixes[7].fix_time_us, Some(positions[7].fix_time_us));
    assert_eq!(
        (fixes[7].lat, fixes[7].lon),
        (positions[7].lat, positions[7].lon)
    );

    let (status, body) = api
        .json("GET", &format!("{base}/kml"), Some(&token), None)
        .await;
    assert_eq!(status, 400, "{body}");
    let (_, _, range) = api
        .call(
            "GET",
            &format!(
                "/api/v1/devices/{}/export/csv?from=2000-01-01T00:00:00Z&to={}",
                id.0,
                chrono::DateTime::from_timestamp_micros(t + 95 * SECOND)
                    .unwrap()
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        String::from_utf8_lossy(&range).lines().count(),
        1 + 10,
        "a time range bounds the export"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_say_what_is_wrong() {
    let ts = TestServer::start();
    let (api, token) = reporter(&ts).await;
    let (status, body) = api
        .json("GET", "/api/v1/journeys?from=yesterday", Some(&token), None)
        .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("from"), "{body}");
    let (status, _) = api
        .json(
            "GET",
            "/api/v1/devices/1/days/2026-13-45",
            Some(&token),
            None,
        )
        .await;
    assert!(status == 400 || status == 404);
    let (status, body) = api
        .json("GET", "/api/v1/nothing/here", Some(&token), None)
        .await;
    assert_eq!(status, 404, "{body}");
    let _ = TenantId(0);
}

/// Checks a JSON value against the subset of JSON Schema the OpenAPI document uses.
fn conforms(spec: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/components/schemas/");
        return conforms(spec, &spec["components"]["schemas"][name], v, at);
    }
    if v.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
        return Ok(());
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        return all.iter().try_for_each(|s| conforms(spec, s, v, at));
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(v)
    {
        return Err(format!("{at}: {v} is not one of {options:?}"));
    }
    let ok = match schema.get("type").and_then(Value::as_str) {
        None => true,
        Some("object") => {
            let Some(obj) = v.as_object() else {
                return Err(format!("{at}: expected an object, got {v}"));
            };
            for key in schema["required"].as_array().into_iter().flatten() {
                let key = key.as_str().unwrap();
                if !obj.contains_key(key) {
                    return Err(format!("{at}: missing required {key}"));
                }
            }
            for (key, value) in obj {
                if let Some(s) = schema["properties"].get(key) {
                    conforms(spec, s, value, &format!("{at}.{key}"))?;
                }
            }
            true
        }
        Some("array") => {
            let Some(items) = v.as_array() else {
                return Err(format!("{at}: expected an array, got {v}"));
            };
            for (i, item) in items.iter().enumerate() {
                conforms(spec, &schema["items"], item, &format!("{at}[{i}]"))?;
            }
            true
        }
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some(other) => return Err(format!("{at}: the checker does not know type {other}")),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{at}: {v} is not a {}", schema["type"]))
    }
}

/// The documented path template that a concrete path matches.
fn template<'a>(spec: &'a Value, path: &str) -> Option<&'a str> {
    let path = path.split('?').next().unwrap();
    let parts: Vec<&str> = path.split('/').collect();
    spec["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .find(|t| {
            let tp: Vec<&str> = t.split('/').collect();
            tp.len() == parts.len()
                && tp
                    .iter()
                    .zip(&parts)
                    .all(|(a, b)| a == b || (a.starts_with('{') && a.ends_with('}')))
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_match_the_openapi_document() {
    let spec: Value = serde_json::from_str(include_str!("../schemas/openapi.json")).unwrap();
    let ts = TestServer::start();
    ts.add_user(ts.tenant(), "rita", Role::Reporter, PASSWORD);
    ts.add_user(ts.tenant(), "ines", Role::Investigator, PASSWORD);
    let t = now_us() - 3_600 * SECOND;
    let id = journey(&ts, "van", 7, &ramp(t, 20, 30, 51.0, 1e-3)).await.0;
    // A journey of 120 days ago, archived.
    let old = journey(
        &ts,
        "old-van",
        9,
        &ramp(t - 120 * 86_400 * SECOND, 20, 30, 51.0, 1e-3),
    )
    .await
    .0;
    let report =
        tokio::task::block_in_place(|| ts.server.compactor.run_blocking(now_us())).unwrap();
    assert_eq!(report.journeys, 1);
    let api = ts.api();
    let admin = api.login("demo", "admin", &ts.admin_password()).await;
    let rita = api.login("demo", "rita", PASSWORD).await;
    let ines = api.login("demo", "ines", PASSWORD).await;
    let login = json!({"tenant": "demo", "username": "rita", "password": PASSWORD});
    let policy = json!({"time_zone": "Europe/Oslo", "hot_retention_days": 60, "password_max_age_days": 90, "tracking": "journeys", "journey_silence_minutes": 30});
    let calls: Vec<(&str, String, Option<&String>, Option<Value>)> = vec![
        ("GET", "/healthz".into(), None, None),
        ("GET", "/readyz".into(), None, None),
        ("GET", "/metrics".into(), None, None),
        ("POST", "/api/v1/login".into(), None, Some(login)),
        (
            "POST",
            "/api/v1/login".into(),
            None,
            Some(json!({"tenant": "demo", "username": "rita", "password": "nope"})),
        ),
        ("GET", "/api/v1/journeys".into(), Some(&rita), None),
        ("GET", "/api/v1/journeys?from=bad".into(), Some(&rita), None),
        (
            "GET",
            format!("/api/v1/devices/{id}/journeys/7"),
            Some(&rita),
            None,
        ),
        (
            "GET",
            format!("/api/v1/devices/{id}/journeys/8"),
            Some(&rita),
            None,
        ),
        (
            "GET",
            format!("/api/v1/devices/{id}/journeys/7/track"),
            Some(&rita),
            None,
        ),
        (
            "GET",
            format!("/api/v1/devices/{id}/journeys/7/summary"),
            Some(&rita),
            None,
        ),
        (
            "GET",
            format!("/api/v1/devices/{id}/journeys/7/export/geojson"),
            Some(&rita),
            None,
        ),
        (
            "GET",
            format!("/api/v1/devices/{id}/journeys/7/export/gpx"),
            Some(&rita),
            None,
        ),
        (
            "GET",
            format!("/api/v1/devices/{id}/export/csv"),
            Some(&rita),
            None,
        ),
        (
            "GET",
            format!("/api/v1/devices/{id}/days/2026-03-29"),
            Some(&rita),
            None,
        ),
        ("GET", "/api/v1/live".into(), Some(&rita), None),
        ("GET", "/api/v1/archive/journeys".into(), Some(&ines), None),
        ("GET", "/api/v1/archive/journeys".into(), Some(&rita), None),
        (
            "GET",
            format!("/api/v1/archive/devices/{old}/journeys/9"),
            Some(&ines),
            None,
        ),
        (
            "GET",
            format!("/api/v1/archive/devices/{old}/journeys/10"),
            Some(&ines),
            None,
        ),
        (
            "GET",
            format!("/api/v1/devices/{old}/journeys/9/track"),
            Some(&ines),
            None,
        ),
        (
            "POST",
            format!("/api/v1/archive/devices/{old}/journeys/9/restore"),
            Some(&ines),
            Some(json!({"days": 0})),
        ),
        (
            "POST",
            format!("/api/v1/archive/devices/{old}/journeys/9/restore"),
            Some(&ines),
            Some(json!({"days": 2})),
        ),
        ("GET", "/api/v1/devices".into(), Some(&rita), None),
        ("GET", "/api/v1/devices".into(), Some(&admin), None),
        (
            "POST",
            "/api/v1/devices".into(),
            Some(&admin),
            Some(json!({"name": "spare"})),
        ),
        (
            "POST",
            format!("/api/v1/devices/{id}/block"),
            Some(&admin),
            Some(json!({})),
        ),
        (
            "POST",
            format!("/api/v1/devices/{id}/unblock"),
            Some(&admin),
            Some(json!({})),
        ),
        ("GET", "/api/v1/users".into(), Some(&admin), None),
        (
            "POST",
            "/api/v1/users".into(),
            Some(&admin),
            Some(json!({"username": "ivan", "role": "investigator"})),
        ),
        (
            "POST",
            "/api/v1/users".into(),
            Some(&admin),
            Some(json!({"username": "ivan", "role": "investigator"})),
        ),
        (
            "POST",
            "/api/v1/users/rita/unlock".into(),
            Some(&admin),
            Some(json!({})),
        ),
        (
            "POST",
            "/api/v1/sources/127.0.0.1/unlock".into(),
            Some(&admin),
            Some(json!({})),
        ),
        ("GET", "/api/v1/policy".into(), Some(&admin), None),
        ("PUT", "/api/v1/policy".into(), Some(&admin), Some(policy)),
        ("GET", "/api/v1/audit".into(), Some(&admin), None),
        ("GET", "/api/v1/audit/export.csv".into(), Some(&admin), None),
        (
            "POST",
            "/api/v1/password".into(),
            Some(&rita),
            Some(json!({"old_password": PASSWORD, "new_password": "short"})),
        ),
    ];
    let mut covered = std::collections::BTreeSet::new();
    for (method, path, token, body) in calls {
        let (status, ctype, bytes) = api
            .call(method, &path, token.map(String::as_str), body.as_ref())
            .await;
        let tpl = template(&spec, &path).unwrap_or_else(|| panic!("{path} is not documented"));
        let op = &spec["paths"][tpl][method.to_lowercase()];
        assert!(op.is_object(), "{method} {tpl} is not documented");
        let response = &op["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{method} {path} answered {status}, which is not documented"
        );
        let media = ctype.split(';').next().unwrap().trim();
        let content = &response["content"][media];
        assert!(
            content.is_object(),
            "{method} {path} answered {media}, not documented for {status}"
        );
        if media.ends_with("json") {
            let value: Value = serde_json::from_slice(&bytes).unwrap();
            if let Err(e) = conforms(&spec, &content["schema"], &value, "body") {
                panic!("{method} {path} ({status}) does not match the document: {e}\n{value}");
            }
        }
        covered.insert(format!("{method} {tpl}"));
    }
    let documented: std::collections::BTreeSet<String> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| format!("{} {p}", m.to_uppercase()))
        })
        .collect();
    assert_eq!(covered, documented, "every documented operation is checked");
}

/// Runs a Python snippet (with pyarrow and geojson, which scripts/test.sh installs) on a file.
fn python(script: &str, file: &std::path::Path) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(file)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed (scripts/test.sh installs pyarrow and geojson): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn exports_are_read_by_outside_readers() {
    let ts = TestServer::start();
    let t = at("2024-03-10T12:00:00.123456Z");
    let mut positions: Vec<Position> = ramp(t, 30, 10, 51.0, 1e-4)
        .into_iter()
        .map(|p| p.with_speed(4.5))
        .collect();
    positions[3].fields = 0;
    let id = journey(&ts, "dev-P", 5, &positions).await;
    let (api, token) = reporter(&ts).await;
    let dir = tempfile::tempdir().unwrap();

    let (status, ctype, parquet) = api
        .call(
            "GET",
            &format!("/api/v1/devices/{}/journeys/5/export/parquet", id.0),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (status, ctype.as_str()),
        (200, "application/vnd.apache.parquet")
    );
    let back = journeyd_archive::read_positions(parquet.clone()).unwrap();
    assert_eq!(back.len(), 30);
    assert_eq!(back[0].2.fix_time_us, t);
    let path = dir.path().join("export.parquet");
    std::fs::write(&path, &parquet).unwrap();
    let out = python(
        "import sys, pyarrow.parquet as pq\n\
         t = pq.read_table(sys.argv[1])\n\
         f = t.schema.field('fix_time')\n\
         print(t.num_rows, f.type.unit, f.type.tz, t.column('fix_time')[0].as_py().isoformat(), t.column('speed_mps')[3].as_py())",
        &path,
    );
    assert_eq!(
        out.trim(),
        "30 us UTC 2024-03-10T12:00:00.123456+00:00 None",
        "pyarrow reads the same instant"
    );

    let (_, _, geojson) = api
        .call(
            "GET",
            &format!("/api/v1/devices/{}/export/geojson", id.0),
            Some(&token),
            None,
        )
        .await;
    let path = dir.path().join("export.geojson");
    std::fs::write(&path, &geojson).unwrap();
    let out = python(
        "import sys, geojson\n\
         g = geojson.load(open(sys.argv[1]))\n\
         print(g.is_valid, g['type'], len(g['features'][0]['geometry']['coordinates']))",
        &path,
    );
    assert_eq!(out.trim(), "True FeatureCollection 30");

    let (_, _, gpx) = api
        .call(
            "GET",
            &format!("/api/v1/devices/{}/journeys/5/export/gpx", id.0),
            Some(&token),
            None,
        )
        .await;
    let path = dir.path().join("export.gpx");
    std::fs::write(&path, &gpx).unwrap();
    let out = python(
        "import sys, gpxpy\n\
         g = gpxpy.parse(open(sys.argv[1]))\n\
         p = g.tracks[0].segments[0].points\n\
         print(g.version, len(p), p[0].time.isoformat())",
        &path,
    );
    assert_eq!(
        out.trim(),
        "1.1 30 2024-03-10T12:00:00.123456+00:00",
        "gpxpy reads the GPX"
    );
}

/// Compares an answer with its snapshot in tests/snapshots/NAME.json; `JOURNEYD_BLESS=1`
/// writes the snapshot instead. Keys named in `volatile` are replaced by "<volatile>" first.
fn assert_snapshot(name: &str, mut value: Value, volatile: &[&str]) {
    fn scrub(v: &mut Value, volatile: &[&str]) {
        match v {
            Value::Object(map) => {
                for (k, inner) in map.iter_mut() {
                    if volatile.contains(&k.as_str()) {
                        *inner = json!("<volatile>");
                    } else {
                        scrub(inner, volatile);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| scrub(i, volatile)),
            _ => {}
        }
    }
    scrub(&mut value, volatile);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../tests/snapshots/{name}.json"));
    let text = serde_json::to_string_pretty(&value).unwrap() + "\n";
    if std::env::var_os("JOURNEYD_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with JOURNEYD_BLESS=1 to write it)",
            path.display()
        )
    });
    assert_eq!(text, expected, "answer {name} differs from its snapshot");
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_of_representative_answers() {
    let ts = TestServer::start();
    let start = at("2026-06-01T08:00:00Z");
    let mut positions: Vec<Position> = ramp(start, 12, 30, 59.9, 2e-4)
        .into_iter()
        .map(|p| p.with_speed(7.5))
        .collect();
    positions.extend(ramp(start + 1_800 * SECOND, 8, 30, 59.9024, 0.0));
    positions[4] = Position::new(positions[4].fix_time_us, 0.0, 0.0);
    let id = journey(&ts, "snapshot-van", 1_780_000_000_000_000, &positions).await;
    let (api, token) = reporter(&ts).await;
    let j = 1_780_000_000_000_000u64;
    let volatile = ["device", "created_at"];
    let (_, details) = api
        .json(
            "GET",
            &format!("/api/v1/devices/{}/journeys/{j}", id.0),
            Some(&token),
            None,
        )
        .await;
    assert_snapshot("journey", details, &volatile);
    let (_, summary) = api
        .json(
            "GET",
            &format!("/api/v1/devices/{}/journeys/{j}/summary", id.0),
            Some(&token),
            None,
        )
        .await;
    assert_snapshot("summary", summary, &volatile);
    let (_, mut track) = api
        .json(
            "GET",
            &format!("/api/v1/devices/{}/journeys/{j}/track", id.0),
            Some(&token),
            None,
        )
        .await;
    track["positions"].as_array_mut().unwrap().truncate(6);
    assert_snapshot("track", track, &volatile);
    let (_, day) = api
        .json(
            "GET",
            &format!("/api/v1/devices/{}/days/2026-06-01", id.0),
            Some(&token),
            None,
        )
        .await;
    assert_snapshot("day", day, &volatile);
    let (_, error) = api
        .json("GET", "/api/v1/journeys?from=soon", Some(&token), None)
        .await;
    assert_snapshot("error", error, &volatile);
    let (_, login) = api
        .json(
            "POST",
            "/api/v1/login",
            None,
            Some(json!({"tenant": "demo", "username": "rita", "password": PASSWORD})),
        )
        .await;
    assert_snapshot("login", login, &["token", "expires_at"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_json_errors() {
    let ts = TestServer::start();
    let api = ts.api();
    let admin = api.login("demo", "admin", &ts.admin_password()).await;
    // A body that is JSON of the wrong shape, and one that is not JSON at all.
    for body in [json!({"name": 7}), json!("not an object")] {
        let (status, ctype, bytes) = api
            .call("POST", "/api/v1/devices", Some(&admin), Some(&body))
            .await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&bytes));
        assert!(ctype.starts_with("application/json"), "{ctype}");
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    // A path parameter that does not parse.
    let (status, ctype, bytes) = api
        .call(
            "GET",
            "/api/v1/devices/not-a-number/journeys/1",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&bytes));
    assert!(ctype.starts_with("application/json"), "{ctype}");
}
