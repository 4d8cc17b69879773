//! The field cases of shared/cases/CASES.md that belong to ingest, each a test named after its
//! id. Real QUIC on loopback, real RocksDB, the real device SDK.

#![allow(
    clippy::print_stderr,
    reason = "tests say what they skipped or measured"
)]

mod support;

use std::time::Duration;

use journeyd_device::{Device, Identity, Outbox};
use journeyd_store::{BatchSeq, JourneyId};
use journeyd_wire::{AckStatus, CloseCode, Position, QualityFlags, RefusalReason};
use support::*;

/// A time today, `minutes_ago` before now, on a whole minute, so fractions are the test's own.
fn minute_ago(minutes_ago: i64) -> i64 {
    let now = now_us();
    now - now % MINUTE - minutes_ago * MINUTE
}

#[tokio::test(flavor = "multi_thread")]
async fn a1_lost_ack() {
    let ts = TestServer::start();
    let cred = ts.enrol("dev-A");
    let t = minute_ago(30);
    let positions: Vec<Position> = (0..3)
        .map(|i| Position::new(t + i * SECOND, 51.5 + i as f64 * 1e-4, -0.1))
        .collect();

    // The batch is stored, but the connection dies before the device reads the ack.
    let mut c = RawClient::hello(ts.addr(), &ts.trust, &cred).await;
    c.send_batch(1, 7, positions.clone()).await;
    let device = journeyd_store::DeviceId(cred.device_id);
    for _ in 0..500 {
        if ts.store().is_stored(device, BatchSeq(1)).unwrap() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.conn.close(0u32.into(), b"network gone");

    // The device reconnects and sends seq 1 again, byte for byte.
    let mut c = RawClient::hello(ts.addr(), &ts.trust, &cred).await;
    c.send_batch(1, 7, positions).await;
    let (seq, ack) = c.read_ack().await;
    assert_eq!(seq, 1);
    assert_eq!(
        ack.status,
        AckStatus::Stored as u16,
        "the resend is acked as if new"
    );
    assert!(ack.refusals.is_empty());
    assert_eq!(ts.positions(device).len(), 3, "3 positions stored, not 6");
    assert_eq!(ts.store().stats().unwrap().positions, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a3_two_fixes_in_one_second() {
    let ts = TestServer::start();
    let (mut d, id) = ts.device("dev-A3");
    let t = minute_ago(10);
    d.record(
        1,
        &[
            Position::new(t + 100_000, 48.1, 11.5),
            Position::new(t + 900_000, 48.2, 11.6),
        ],
    )
    .unwrap();
    let r = d.flush().await.unwrap();
    assert_eq!(r.stored, 2);
    let stored = ts.positions(id);
    assert_eq!(stored.len(), 2);
    assert_eq!(
        (stored[0].fix_time_us, stored[0].lat, stored[0].lon),
        (t + 100_000, 48.1, 11.5)
    );
    assert_eq!(
        (stored[1].fix_time_us, stored[1].lat, stored[1].lon),
        (t + 900_000, 48.2, 11.6)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a4_stale_fix_resent_as_new() {
    let ts = TestServer::start();
    let (mut d, id) = ts.device("dev-A4");
    let stale = minute_ago(12 * 60 + 32); // 08:59 when it is 21:31
    let fix = Position::new(stale, 53.4, -2.2);
    d.start_journey(1, stale).unwrap();
    let mut report = journeyd_device::FlushReport::default();
    for _ in 0..3 {
        // Three sends at 21:31, 21:36 and 21:41, each a new batch with a new sequence number.
        d.record(1, &[fix]).unwrap();
        report.add(&d.flush().await.unwrap());
    }
    assert_eq!((report.stored, report.duplicates), (1, 2));
    assert_eq!(ts.positions(id).len(), 1, "one fix in reports");
    let meta = ts
        .store()
        .journey(ts.tenant(), id, JourneyId(1))
        .unwrap()
        .unwrap();
    assert_eq!(
        (meta.first_fix_us, meta.last_fix_us),
        (Some(stale), Some(stale)),
        "the journey does not stretch"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a6_store_fails() {
    let ts = TestServer::start();
    let cred = ts.enrol("dev-A6");
    let device = journeyd_store::DeviceId(cred.device_id);
    let t = minute_ago(5);
    let positions: Vec<Position> = (0..4)
        .map(|i| Position::new(t + i * SECOND, 40.0, -74.0))
        .collect();
    let mut c = RawClient::hello(ts.addr(), &ts.trust, &cred).await;

    ts.store().fail_next_writes(1);
    c.send_batch(7, 1, positions.clone()).await;
    let (seq, ack) = c.read_ack().await;
    assert_eq!(seq, 7);
    assert_eq!(
        ack.status,
        AckStatus::RetryLater as u16,
        "no positive ack for seq 7"
    );
    assert!(ack.retry_after_ms > 0);
    assert!(!ts.store().is_stored(device, BatchSeq(7)).unwrap());
    assert!(
        !ts.server.ingest.is_ready(),
        "readiness goes red while the store fails"
    );

    // The store has recovered; the resend lands exactly once.
    c.send_batch(7, 1, positions.clone()).await;
    let (_, ack) = c.read_ack().await;
    assert_eq!((ack.status, ack.stored), (AckStatus::Stored as u16, 4));
    c.send_batch(7, 1, positions).await;
    let (_, ack) = c.read_ack().await;
    assert_eq!((ack.status, ack.stored), (AckStatus::Stored as u16, 0));
    assert_eq!(ts.positions(device).len(), 4);
    assert!(ts.server.ingest.is_ready());

    // The SDK obeys the same refusal on its own.
    let (mut d, id) = ts.device("dev-A6-sdk");
    ts.store().fail_next_writes(2);
    d.record(1, &[Position::new(t, 1.0, 1.0)]).unwrap();
    let r = d.flush().await.unwrap();
    assert_eq!((r.retries, r.stored), (2, 1));
    assert_eq!(ts.positions(id).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a7_overloaded_server() {
    let ts = TestServer::start_with(|c| c.ingest.max_queued_positions = 250);
    let cred = ts.enrol("dev-A7");
    let device = journeyd_store::DeviceId(cred.device_id);
    let t = minute_ago(20);
    let batch = |k: i64| {
        (0..100)
            .map(|i| Position::new(t + (k * 100 + i) * SECOND, 10.0, 10.0))
            .collect::<Vec<_>>()
    };

    ts.store().stall_writes(true);
    let mut c = RawClient::hello(ts.addr(), &ts.trust, &cred).await;
    for k in 1..=4 {
        c.send_batch(k as u64, 1, batch(k)).await;
    }
    // Two batches fit the memory budget and wait for the stalled store; the others are pushed
    // back. Nothing is acked as stored while the store holds.
    let mut refused = Vec::new();
    for _ in 0..2 {
        let (seq, ack) = c.read_ack().await;
        assert_eq!(
            ack.status,
            AckStatus::RetryLater as u16,
            "seq {seq} acked while the store is stalled"
        );
        refused.push(seq);
    }
    assert!(
        !ts.server.ingest.is_ready(),
        "readiness is red while the queue is full"
    );
    let early = tokio::time::timeout(Duration::from_millis(300), c.read_ack()).await;
    assert!(early.is_err(), "no ack may arrive for what is not stored");
    for k in 1..=4 {
        assert!(!ts.store().is_stored(device, BatchSeq(k)).unwrap());
    }

    ts.store().stall_writes(false);
    for _ in 0..2 {
        let (_, ack) = c.read_ack().await;
        assert_eq!((ack.status, ack.stored), (AckStatus::Stored as u16, 100));
    }
    for seq in refused {
        c.send_batch(seq, 1, batch(seq as i64)).await;
        let (s, ack) = c.read_ack().await;
        assert_eq!(
            (s, ack.status, ack.stored),
            (seq, AckStatus::Stored as u16, 100)
        );
    }
    assert_eq!(ts.positions(device).len(), 400);
    let mut ready = false;
    for _ in 0..300 {
        ready = ts.server.ingest.is_ready();
        if ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        ready,
        "readiness turns green again once the pressure is gone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a8_device_restart() {
    let ts = TestServer::start();
    let cred = ts.enrol("dev-A8");
    let id = journeyd_store::DeviceId(cred.device_id);
    let state = tempfile::tempdir().unwrap();
    let t = minute_ago(90);
    {
        // Offline: 50 positions queued, then the app process dies without sending.
        let mut d = Device::open(
            ts.device_config(),
            Outbox::open(state.path()).unwrap(),
            Identity::Credential(cred.clone()),
        )
        .unwrap();
        d.start_journey(3, t).unwrap();
        for k in 0..5 {
            let ps: Vec<Position> = (0..10)
                .map(|i| Position::new(t + (k * 10 + i) * SECOND, 59.3, 18.0 + i as f64 * 1e-4))
                .collect();
            d.record(3, &ps).unwrap();
        }
        assert_eq!(d.pending(), 6);
    }
    let mut d = Device::open(
        ts.device_config(),
        Outbox::open(state.path()).unwrap(),
        Identity::Credential(cred),
    )
    .unwrap();
    assert_eq!(d.pending(), 6, "the outbox survived the restart");
    let r = d.flush().await.unwrap();
    assert_eq!(r.stored, 50);
    assert_eq!(d.pending(), 0);
    assert_eq!(ts.positions(id).len(), 50, "all 50 arrive exactly once");
    // A second flush after another restart sends nothing again.
    drop(d);
    let mut d = Device::open(
        ts.device_config(),
        Outbox::open(state.path()).unwrap(),
        Identity::Enrol {
            code: ts.code,
            name: "x".into(),
        },
    )
    .unwrap();
    assert_eq!(d.flush().await.unwrap().acked_records, 0);
    assert_eq!(ts.positions(id).len(), 50);
}

#[tokio::test(flavor = "multi_thread")]
async fn a10_oversized_batch() {
    let ts = TestServer::start();
    let (d, id) = ts.device("dev-A10");
    drop(d);
    let cred = ts.enrol("dev-A10b");
    let id2 = journeyd_store::DeviceId(cred.device_id);
    let mut config = ts.device_config();
    config.split_before_sending = false;
    config.max_batch_positions = u32::MAX;
    config.flush_timeout = Duration::from_secs(120);
    let mut d = Device::open(config, Outbox::memory(), Identity::Credential(cred)).unwrap();
    // A week offline: 600,000 positions in one batch, one a second.
    let start = minute_ago(7 * 24 * 60);
    let ps: Vec<Position> = (0..600_000)
        .map(|i| Position::new(start + i * SECOND, 45.0 + (i % 1000) as f64 * 1e-5, 7.0))
        .collect();
    d.record(1, &ps).unwrap();
    let r = d.flush().await.unwrap();
    assert_eq!(
        r.splits, 1,
        "refused once with split-and-resend, then obeyed"
    );
    assert_eq!(r.stored, 600_000);
    assert_eq!(
        r.acked_records, 60,
        "split into batches of the server's 10,000"
    );
    assert_eq!(
        ts.store()
            .journey(ts.tenant(), id2, JourneyId(1))
            .unwrap()
            .unwrap()
            .positions,
        600_000
    );
    assert!(ts.positions(id).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn b11_future_fix() {
    let ts = TestServer::start();
    let (mut d, id) = ts.device("dev-B11");
    let t = minute_ago(10);
    let future = t + 3 * 365 * 24 * 60 * MINUTE;
    d.record(1, &[Position::new(future, 1.0, 1.0)]).unwrap();
    d.record(
        1,
        &[
            Position::new(t, 1.0, 1.0),
            Position::new(t + MINUTE, 1.1, 1.1),
        ],
    )
    .unwrap();
    let r = d.flush().await.unwrap();
    assert_eq!(r.refused.get(&RefusalReason::TimeInFuture), Some(&1));
    assert_eq!(r.stored, 2);
    let last = ts.store().last_position(ts.tenant(), id).unwrap().unwrap();
    assert_eq!(
        (last.fix_time_us, last.lat),
        (t + MINUTE, 1.1),
        "last known position moves with the valid fixes"
    );
    d.record(1, &[Position::new(t + 2 * MINUTE, 1.2, 1.2)])
        .unwrap();
    d.flush().await.unwrap();
    assert_eq!(
        ts.store()
            .last_position(ts.tenant(), id)
            .unwrap()
            .unwrap()
            .lat,
        1.2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn b13_gps_week_rollover() {
    let ts = TestServer::start();
    let (mut d, id) = ts.device("dev-B13");
    let rollover = journeyd_wire::validate::GPS_ROLLOVER_US;
    let real = minute_ago(15);
    let ps = [
        Position::new(real - rollover - 7 * SECOND, 52.0, 4.0),
        Position::new(real - rollover + 7 * SECOND, 52.0, 4.001),
    ];
    d.record(1, &ps).unwrap();
    let r = d.flush().await.unwrap();
    assert_eq!((r.stored, r.flagged), (2, 2));
    let stored = ts.positions(id);
    assert_eq!(
        stored[0].fix_time_us,
        real - 7 * SECOND,
        "corrected by 1024 weeks"
    );
    assert!(
        stored
            .iter()
            .all(|p| p.quality().contains(QualityFlags::ROLLOVER_CORRECTED))
    );
    let meta = ts
        .store()
        .journey(ts.tenant(), id, JourneyId(1))
        .unwrap()
        .unwrap();
    assert!(
        meta.first_fix_us.unwrap() > now_us() - 24 * 60 * MINUTE,
        "never stored as a journey in 2007"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn b14_epoch_zero() {
    let ts = TestServer::start();
    let cred = ts.enrol("dev-B14");
    let id = journeyd_store::DeviceId(cred.device_id);
    let t = minute_ago(3);
    let mut c = RawClient::hello(ts.addr(), &ts.trust, &cred).await;
    c.send_batch(
        1,
        1,
        vec![
            Position::new(t, 1.0, 1.0),
            Position::new(0, 1.0, 1.0),
            Position::new(t + SECOND, 1.0, 1.0),
        ],
    )
    .await;
    let (_, ack) = c.read_ack().await;
    assert_eq!((ack.status, ack.stored), (AckStatus::Stored as u16, 2));
    assert_eq!(ack.refusals.len(), 1);
    assert_eq!(
        (ack.refusals[0].index, ack.refusals[0].reason),
        (1, RefusalReason::TimeBefore2000 as u16)
    );
    assert_eq!(ts.positions(id).len(), 2);

    // Through the SDK: the refused position is reported and never resent.
    let (mut d, id) = ts.device("dev-B14-sdk");
    d.record(
        1,
        &[
            Position::new(t, 1.0, 1.0),
            Position::new(0, 1.0, 1.0),
            Position::new(t + SECOND, 1.0, 1.0),
        ],
    )
    .unwrap();
    let r = d.flush().await.unwrap();
    assert_eq!(r.refused.get(&RefusalReason::TimeBefore2000), Some(&1));
    assert_eq!(d.pending(), 0);
    assert_eq!(d.flush().await.unwrap().acked_records, 0);
    assert_eq!(ts.positions(id).len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn b15_arrival_order() {
    let ts = TestServer::start();
    let (mut d, id) = ts.device("dev-B15");
    let t = minute_ago(60);
    let a = Position::new(t, 10.0, 10.0);
    let b = Position::new(t + MINUTE, 10.009, 10.0);
    let c = Position::new(t + 2 * MINUTE, 10.018, 10.0);
    d.record(1, &[a, c]).unwrap();
    d.flush().await.unwrap();
    d.record(1, &[b]).unwrap();
    d.flush().await.unwrap();
    let track = ts.store().track(ts.tenant(), id, JourneyId(1)).unwrap();
    let lats: Vec<f64> = track.iter().map(|p| p.lat).collect();
    assert_eq!(lats, vec![10.0, 10.009, 10.018], "the track reads A, B, C");
    let distance: f64 = track.windows(2).map(|w| haversine_m(&w[0], &w[1])).sum();
    assert!(
        (distance - 2_000.0).abs() < 20.0,
        "about 2.0 km in fix order, got {distance}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn b21_precision() {
    let ts = TestServer::start();
    let (mut d, id) = ts.device("dev-B21");
    let base = minute_ago(60);
    let last = base + 49 * SECOND + 633_838; // hh:mm:49.633838
    d.record(
        1,
        &[Position::new(base, 1.0, 1.0), Position::new(last, 1.0, 1.0)],
    )
    .unwrap();
    d.flush().await.unwrap();
    let track = ts.positions(id);
    assert_eq!(
        track[1].fix_time_us, last,
        "microseconds survive the hot store"
    );
    let bounded = ts
        .store()
        .track_between(ts.tenant(), id, JourneyId(1), base + SECOND, last)
        .unwrap();
    assert_eq!(
        bounded.len(),
        1,
        "a query bounded exactly at the instant includes it"
    );
    assert_eq!(bounded[0].fix_time_us, last);
}

#[tokio::test(flavor = "multi_thread")]
async fn c22_null_island() {
    let ts = TestServer::start();
    let (mut d, id) = ts.device("dev-C22");
    let t = minute_ago(30);
    d.record(
        1,
        &[
            Position::new(t, 6.5, 3.4),
            Position::new(t + SECOND, 0.0, 0.0),
            Position::new(t + 2 * SECOND, 6.5001, 3.4),
        ],
    )
    .unwrap();
    let r = d.flush().await.unwrap();
    assert_eq!((r.stored, r.flagged), (3, 1));
    let track = ts.positions(id);
    assert!(track[1].quality().contains(QualityFlags::NULL_ISLAND));
    assert!(!track[1].quality().is_usable_for_track());
    assert!(track[0].quality().is_usable_for_track() && track[2].quality().is_usable_for_track());
    // A null-island fix never becomes the last known position.
    d.record(1, &[Position::new(t + 3 * SECOND, 0.0, 0.0)])
        .unwrap();
    d.flush().await.unwrap();
    assert_eq!(
        ts.store()
            .last_position(ts.tenant(), id)
            .unwrap()
            .unwrap()
            .lat,
        6.5001
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn c23_out_of_range() {
    let ts = TestServer::start();
    let (mut d, id) = ts.device("dev-C23");
    let t = minute_ago(30);
    let ps = [
        Position::new(t, 10.0, -270.6),
        Position::new(t + SECOND, 91.0, 5.0),
        Position::new(t + 2 * SECOND, 10.0, 5.0),
    ];
    d.record(1, &ps).unwrap();
    let r = d.flush().await.unwrap();
    assert_eq!(r.refused.get(&RefusalReason::LongitudeOutOfRange), Some(&1));
    assert_eq!(r.refused.get(&RefusalReason::LatitudeOutOfRange), Some(&1));
    assert_eq!(r.stored, 1);
    assert_eq!(ts.positions(id).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn e31_keepalive_versus_idle_timeout() {
    let ts = TestServer::start_with(|c| c.ingest.idle_timeout = Duration::from_secs(3));
    let (mut d, id) = ts.device("dev-E31");
    let t = minute_ago(10);
    d.record(1, &[Position::new(t, 1.0, 1.0)]).unwrap();
    assert_eq!(d.flush().await.unwrap().connects, 1);
    // The device pauses for three idle timeouts mid-journey.
    tokio::time::sleep(Duration::from_secs(9)).await;
    d.record(1, &[Position::new(t + SECOND, 1.0, 1.0)]).unwrap();
    let r = d.flush().await.unwrap();
    assert_eq!(r.stored, 1, "the next batch is delivered once");
    assert_eq!(
        r.connects, 0,
        "pings kept the connection alive within the negotiated timeout"
    );
    assert_eq!(ts.positions(id).len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn e32_network_change() {
    let ts = TestServer::start();
    let cred = ts.enrol("dev-E32");
    let id = journeyd_store::DeviceId(cred.device_id);
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut config = ts.device_config();
    config.endpoint = Some(endpoint.clone());
    config.max_in_flight = 2;
    let mut d = Device::open(config, Outbox::memory(), Identity::Credential(cred)).unwrap();
    let t = minute_ago(240);
    for k in 0..200 {
        let ps: Vec<Position> = (0..50)
            .map(|i| Position::new(t + (k * 50 + i) * SECOND, 35.0, 139.0))
            .collect();
        d.record(1, &ps).unwrap();
    }
    let before = endpoint.local_addr().unwrap();
    let upload = tokio::spawn(async move { d.flush().await });
    // Mid-upload, the phone moves to another network: its UDP socket gets a new port.
    let store = ts.store().clone();
    let tenant = ts.tenant();
    while store
        .journey(tenant, id, JourneyId(1))
        .unwrap()
        .map_or(0, |m| m.positions)
        < 1000
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    endpoint
        .rebind(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .unwrap();
    assert_ne!(endpoint.local_addr().unwrap(), before);
    let r = upload.await.unwrap().unwrap();
    assert_eq!(r.stored, 10_000);
    assert!(r.refused.is_empty(), "{r:?}");
    assert_eq!(ts.positions(id).len(), 10_000, "every batch stored once");
    let meta = ts
        .store()
        .journey(tenant, id, JourneyId(1))
        .unwrap()
        .unwrap();
    assert_eq!(meta.positions, 10_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn e34_replayed_early_data() {
    let ts = TestServer::start();
    let cred = ts.enrol("dev-E34");
    let id = journeyd_store::DeviceId(cred.device_id);

    // A client that would use 0-RTT if the server allowed it.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ts.trust[0].clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![journeyd_wire::ALPN.to_vec()];
    tls.enable_early_data = true;
    let client = quinn::ClientConfig::new(std::sync::Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(client);
    let first = endpoint
        .connect(ts.addr(), "localhost")
        .unwrap()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await; // let session tickets arrive
    first.close(0u32.into(), b"");
    let second = endpoint.connect(ts.addr(), "localhost").unwrap();
    assert!(
        second.into_0rtt().is_err(),
        "the server accepts no early data, so no batch can ride in it"
    );

    // The same seq 9 arriving twice (as a replayed flight would) is stored once.
    let t = minute_ago(5);
    for _ in 0..2 {
        let mut c = RawClient::hello(ts.addr(), &ts.trust, &cred).await;
        c.send_batch(
            9,
            1,
            vec![
                Position::new(t, 1.0, 1.0),
                Position::new(t + SECOND, 1.0, 1.0),
            ],
        )
        .await;
        let (seq, ack) = c.read_ack().await;
        assert_eq!((seq, ack.status), (9, AckStatus::Stored as u16));
    }
    assert_eq!(ts.positions(id).len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_credentials_and_blocked_devices_get_distinct_codes() {
    let ts = TestServer::start();
    let mut cred = ts.enrol("dev-G");
    let good = cred.clone();
    cred.secret[0] ^= 1;
    let mut c = RawClient::connect(ts.addr(), &ts.trust).await;
    let hello = journeyd_wire::Hello {
        device_id: cred.device_id,
        secret: cred.secret,
        protocol_version: 1,
        reserved: 0,
    };
    c.send_raw(&journeyd_wire::frame::encode_frame(
        journeyd_wire::FrameKind::Hello,
        0,
        &hello,
    ))
    .await;
    assert_eq!(c.close_code().await, Some(CloseCode::BadCredential as u64));

    // Blocking closes the open connection with "blocked", and the SDK stops for good.
    let c = RawClient::hello(ts.addr(), &ts.trust, &good).await;
    ts.server
        .ingest
        .block_device(journeyd_store::DeviceId(good.device_id))
        .unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), c.close_code())
            .await
            .unwrap(),
        Some(CloseCode::DeviceBlocked as u64)
    );
    let mut d = Device::open(
        ts.device_config(),
        Outbox::memory(),
        Identity::Credential(good),
    )
    .unwrap();
    d.record(1, &[Position::new(minute_ago(1), 1.0, 1.0)])
        .unwrap();
    let e = d.flush().await.unwrap_err();
    assert_eq!(e.refusal(), Some(CloseCode::DeviceBlocked));
    assert_eq!(
        d.flush().await.unwrap_err().refusal(),
        Some(CloseCode::DeviceBlocked),
        "no endless retry"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_frames_close_with_a_reason() {
    let ts = TestServer::start();
    let cred = ts.enrol("dev-M");
    let mut c = RawClient::hello(ts.addr(), &ts.trust, &cred).await;
    let mut garbage = journeyd_wire::FrameHeader {
        body_len: 40,
        kind: journeyd_wire::FrameKind::Batch,
        seq: 1,
    }
    .encode()
    .to_vec();
    garbage.extend_from_slice(&[0xff; 40]);
    c.send_raw(&garbage).await;
    match c.conn.closed().await {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                close.error_code.into_inner(),
                CloseCode::MalformedFrame as u64
            );
            assert!(
                String::from_utf8_lossy(&close.reason).contains("Batch body is invalid"),
                "{:?}",
                close.reason
            );
        }
        other => panic!("unexpected close {other:?}"),
    }
    // The server is still fine.
    let (mut d, _) = ts.device("dev-after");
    d.record(1, &[Position::new(minute_ago(1), 1.0, 1.0)])
        .unwrap();
    assert_eq!(d.flush().await.unwrap().stored, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn positions_outside_journeys_follow_the_company_policy() {
    let ts = TestServer::start();
    let t = minute_ago(20);
    // Default policy: tracking only during journeys. Journey 0 means "no journey".
    let (mut d, id) = ts.device("policy-journeys");
    d.record(0, &[Position::new(t, 1.0, 1.0)]).unwrap();
    d.record(5, &[Position::new(t + SECOND, 1.0, 1.0)]).unwrap();
    let r = d.flush().await.unwrap();
    assert_eq!((r.rejected_records, r.stored), (1, 1));
    assert_eq!(ts.positions(id).len(), 1);

    let tenant = ts.tenant();
    let mut policy = ts.store().tenant(tenant).unwrap().unwrap().policy;
    policy.tracking = "always".into();
    ts.store().set_policy(tenant, policy).unwrap();
    let (mut d, id) = ts.device("policy-always");
    d.record(0, &[Position::new(t, 1.0, 1.0)]).unwrap();
    assert_eq!(d.flush().await.unwrap().stored, 1);
    assert_eq!(ts.positions(id).len(), 1);
}

/// With several endpoints on one address (SO_REUSEPORT), devices on different client sockets land
/// on different endpoints and everything they send is stored once.
#[tokio::test(flavor = "multi_thread")]
async fn several_endpoints_share_one_address() {
    let ts = TestServer::start_with(|c| c.ingest.endpoints = 3);
    let t = now_us() - 3_600_000_000;
    let mut ids = Vec::new();
    for i in 0..12 {
        let (mut d, id) = ts.device(&format!("van-{i}"));
        let positions: Vec<Position> = (0..50)
            .map(|k| Position::new(t + k * 1_000_000, 50.0 + i as f64 * 0.01, 8.0))
            .collect();
        d.record(1, &positions).unwrap();
        d.flush().await.unwrap();
        ids.push(id);
    }
    for id in ids {
        assert_eq!(ts.positions(id).len(), 50);
    }
}
