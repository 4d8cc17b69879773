use std::sync::mpsc;

use journeyd_wire::session::Record;
use journeyd_wire::validate::ValidatedBatch;
use journeyd_wire::{JourneyMark, Position};

use super::*;
use crate::StoreConfig;

const T0: i64 = 1_780_000_000_000_000;

fn open() -> (tempfile::TempDir, Arc<HotStore>, Writer) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(HotStore::open(&StoreConfig::new(dir.path().join("db"))).unwrap());
    store.create_tenant("one", T0).unwrap();
    let writer = Writer::start(store.clone(), WriterConfig::default());
    (dir, store, writer)
}

fn batch(journey: u64, times: &[i64]) -> Record {
    let kept = times
        .iter()
        .map(|t| Position::new(T0 + t, 10.0, 10.0 + *t as f64 * 1e-9))
        .collect();
    Record::Batch {
        journey,
        validated: ValidatedBatch {
            kept,
            ..Default::default()
        },
    }
}

fn write(w: &Writer, device: u64, seq: u64, record: Record) -> Result<WriteOutcome, StoreError> {
    write_for(w, TenantId(1), device, seq, record)
}

fn write_for(
    w: &Writer,
    tenant: TenantId,
    device: u64,
    seq: u64,
    record: Record,
) -> Result<WriteOutcome, StoreError> {
    let (tx, rx) = mpsc::channel();
    let req = WriteRequest {
        tenant,
        device: DeviceId(device),
        seq: BatchSeq(seq),
        record,
        received_us: T0,
        reply: Box::new(move |r| {
            let _ = tx.send(r);
        }),
    };
    w.try_submit(req).map_err(|_| StoreError::WriterStopped)?;
    rx.recv().unwrap()
}

#[test]
fn stores_and_reads_back_in_fix_time_order() {
    let (_d, store, w) = open();
    write(
        &w,
        1,
        1,
        Record::JourneyStart(JourneyMark {
            journey: 7,
            at_us: T0,
        }),
    )
    .unwrap();
    assert_eq!(write(&w, 1, 3, batch(7, &[30, 40])).unwrap().stored, 2);
    assert_eq!(write(&w, 1, 2, batch(7, &[10, 20])).unwrap().stored, 2);
    let track = store.track(TenantId(1), DeviceId(1), JourneyId(7)).unwrap();
    let times: Vec<i64> = track.iter().map(|p| p.fix_time_us - T0).collect();
    assert_eq!(times, vec![10, 20, 30, 40]);
    let meta = store
        .journey(TenantId(1), DeviceId(1), JourneyId(7))
        .unwrap()
        .unwrap();
    assert_eq!(
        (meta.positions, meta.batches, meta.started_us),
        (4, 2, Some(T0))
    );
    assert_eq!(
        store
            .last_position(TenantId(1), DeviceId(1))
            .unwrap()
            .unwrap()
            .fix_time_us,
        T0 + 40
    );
}

#[test]
fn a_resent_sequence_number_is_not_stored_again() {
    let (_d, store, w) = open();
    assert_eq!(write(&w, 1, 1, batch(7, &[1, 2, 3])).unwrap().stored, 3);
    let again = write(&w, 1, 1, batch(7, &[1, 2, 3])).unwrap();
    assert!(again.replayed);
    assert_eq!(again.stored, 0);
    assert_eq!(store.stats().unwrap().positions, 3);
    assert_eq!(
        store
            .track(TenantId(1), DeviceId(1), JourneyId(7))
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn fixes_already_held_are_not_stored_twice_under_a_new_sequence_number() {
    let (_d, store, w) = open();
    write(&w, 1, 1, batch(7, &[1, 2, 3])).unwrap();
    let o = write(&w, 1, 2, batch(7, &[2, 3, 4])).unwrap();
    assert_eq!((o.stored, o.duplicates), (1, 2));
    let o = write(&w, 1, 3, batch(7, &[1, 2, 3])).unwrap();
    assert_eq!((o.stored, o.duplicates), (0, 3));
    assert_eq!(store.stats().unwrap().positions, 4);
}

#[test]
fn a_failed_write_acks_nothing_and_the_resend_lands_once() {
    let (_d, store, w) = open();
    store.fail_next_writes(1);
    let err = write(&w, 1, 7, batch(1, &[1, 2])).unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(!w.stats().healthy());
    assert!(!store.is_stored(DeviceId(1), BatchSeq(7)).unwrap());
    assert_eq!(store.stats().unwrap().positions, 0);
    let o = write(&w, 1, 7, batch(1, &[1, 2])).unwrap();
    assert_eq!(o.stored, 2);
    assert!(w.stats().healthy());
    assert_eq!(store.stats().unwrap().positions, 2);
}

#[test]
fn concurrent_writers_share_group_commits() {
    let (_d, store, w) = open();
    let threads: Vec<_> = (0..8u64)
        .map(|dev| {
            let w = w.clone();
            std::thread::spawn(move || {
                for seq in 1..=50u64 {
                    let t = seq as i64 * 1000;
                    write(&w, dev, seq, batch(1, &[t, t + 1])).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(store.stats().unwrap().positions, 8 * 50 * 2);
    assert_eq!(w.stats().records.load(Ordering::SeqCst), 400);
}

#[test]
fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig::new(dir.path().join("db"));
    {
        let store = Arc::new(HotStore::open(&cfg).unwrap());
        store.create_tenant("one", T0).unwrap();
        let w = Writer::start(store.clone(), WriterConfig::default());
        write(&w, 3, 1, batch(9, &[5, 6])).unwrap();
        w.shutdown();
    }
    let store = HotStore::open(&cfg).unwrap();
    assert_eq!(
        store
            .track(TenantId(1), DeviceId(3), JourneyId(9))
            .unwrap()
            .len(),
        2
    );
    assert!(store.is_stored(DeviceId(3), BatchSeq(1)).unwrap());
}

#[test]
fn a_destroyed_tenant_key_makes_that_tenant_unreadable_and_nobody_else() {
    let (_d, store, w) = open();
    store.create_tenant("two", T0).unwrap();
    write_for(&w, TenantId(1), 1, 1, batch(7, &[10, 20])).unwrap();
    write_for(&w, TenantId(2), 2, 1, batch(8, &[10, 20])).unwrap();
    store.destroy_tenant_key(TenantId(1)).unwrap();
    let e = store
        .track(TenantId(1), DeviceId(1), JourneyId(7))
        .unwrap_err();
    assert!(matches!(e, StoreError::NoTenantKey(1)), "{e}");
    assert!(!e.is_retryable());
    let e = write_for(&w, TenantId(1), 1, 2, batch(7, &[30])).unwrap_err();
    assert!(matches!(e, StoreError::NoTenantKey(1)), "{e}");
    assert_eq!(
        store
            .track(TenantId(2), DeviceId(2), JourneyId(8))
            .unwrap()
            .len(),
        2
    );
    write_for(&w, TenantId(2), 2, 2, batch(8, &[30])).unwrap();
    // The store opens again: only that tenant stays dark.
    let path = store.path().to_path_buf();
    w.shutdown();
    drop(w);
    drop(store);
    let store = HotStore::open(&StoreConfig::new(&path)).unwrap();
    assert!(store.track(TenantId(1), DeviceId(1), JourneyId(7)).is_err());
    assert_eq!(
        store
            .track(TenantId(2), DeviceId(2), JourneyId(8))
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn rotating_the_master_key_rewraps_and_rewrites_no_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let old_key = dir.path().join("old.key");
    let new_key = dir.path().join("new.key");
    let config = |key: &std::path::Path, create: bool| StoreConfig {
        master_key: journeyd_keys::MasterKeySource::File {
            path: key.to_path_buf(),
            create,
        },
        ..StoreConfig::new(&path)
    };
    {
        let store = Arc::new(HotStore::open(&config(&old_key, true)).unwrap());
        store.create_tenant("one", T0).unwrap();
        let w = Writer::start(store.clone(), WriterConfig::default());
        write(&w, 1, 1, batch(7, &[10, 20])).unwrap();
        w.shutdown();
        let chunks_before: Vec<_> = store
            .db
            .iterator_cf(store.cf(CF_CHUNKS), rocksdb::IteratorMode::Start)
            .map(|i| i.unwrap())
            .collect();
        let new = journeyd_keys::MasterKey::load(&journeyd_keys::MasterKeySource::File {
            path: new_key.clone(),
            create: true,
        })
        .unwrap();
        assert_eq!(store.rotate_master_key(&new, T0).unwrap(), 1);
        let chunks_after: Vec<_> = store
            .db
            .iterator_cf(store.cf(CF_CHUNKS), rocksdb::IteratorMode::Start)
            .map(|i| i.unwrap())
            .collect();
        assert_eq!(chunks_before, chunks_after);
    }
    let e = HotStore::open(&config(&old_key, false)).unwrap_err();
    assert!(e.to_string().contains("wrong key"), "{e}");
    let store = HotStore::open(&config(&new_key, false)).unwrap();
    assert_eq!(
        store
            .track(TenantId(1), DeviceId(1), JourneyId(7))
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn shards_share_the_devices_and_each_record_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(HotStore::open(&StoreConfig::new(dir.path().join("db"))).unwrap());
    store.create_tenant("one", T0).unwrap();
    let w = Writer::start(
        store.clone(),
        WriterConfig {
            shards: 4,
            ..WriterConfig::default()
        },
    );
    assert_eq!(w.capacity(), 4096);
    // Devices numbered in sequence land on every shard.
    let used: HashSet<usize> = (1..=40).map(|d| shard_of(DeviceId(d), 4)).collect();
    assert_eq!(used.len(), 4);

    // Every device sends 20 batches without waiting, then all of them again (a resend after a
    // lost ack): the first are stored, the second found as replays.
    for round in 0..2 {
        let (tx, rx) = mpsc::channel();
        for device in 1..=40u64 {
            for seq in 1..=20u64 {
                let tx = tx.clone();
                let t = seq as i64 * 1000;
                let req = WriteRequest {
                    tenant: TenantId(1),
                    device: DeviceId(device),
                    seq: BatchSeq(seq),
                    record: batch(1, &[t, t + 1]),
                    received_us: T0,
                    reply: Box::new(move |r| {
                        let _ = tx.send(r);
                    }),
                };
                assert!(w.try_submit(req).is_ok());
            }
        }
        drop(tx);
        let outcomes: Vec<WriteOutcome> = rx.iter().map(|r| r.unwrap()).collect();
        assert_eq!(outcomes.len(), 800);
        if round == 0 {
            assert!(outcomes.iter().all(|o| o.stored == 2 && !o.replayed));
        } else {
            assert!(outcomes.iter().all(|o| o.replayed && o.stored == 0));
        }
    }
    for device in 1..=40u64 {
        let track = store
            .track(TenantId(1), DeviceId(device), JourneyId(1))
            .unwrap();
        assert_eq!(track.len(), 40, "device {device}");
        let meta = store
            .journey(TenantId(1), DeviceId(device), JourneyId(1))
            .unwrap()
            .unwrap();
        assert_eq!(meta.positions, 40, "device {device}");
    }
    w.shutdown();
}

#[test]
fn a_journey_end_acked_while_the_journey_is_archived_reaches_the_index() {
    let (_d, store, w) = open();
    let start = JourneyMark {
        journey: 5,
        at_us: T0,
    };
    write(&w, 1, 1, Record::JourneyStart(start)).unwrap();
    write(&w, 1, 2, batch(5, &[10, 20])).unwrap();
    // The compactor read the journey (no end yet) and wrote its object...
    let pending = crate::PendingUpload {
        object: "tenant=1/part".into(),
        tenant: TenantId(1),
        journeys: vec![crate::PendingJourney {
            device: DeviceId(1),
            journey: 5,
            rows: 2,
            hot_rows: 2,
        }],
        begun_us: T0,
    };
    store.begin_upload(&pending).unwrap();
    let entry = crate::ArchivedJourney {
        tenant: TenantId(1),
        device: DeviceId(1),
        journey: 5,
        started_us: Some(T0),
        ended_us: None,
        first_fix_us: T0 + 10,
        last_fix_us: T0 + 20,
        positions: 2,
        parts: Vec::new(),
        archived_us: T0,
        restored_until_us: None,
    };
    // ...when the device's end mark arrived and was acked.
    let end = JourneyMark {
        journey: 5,
        at_us: T0 + 30,
    };
    write(&w, 1, 3, Record::JourneyEnd(end)).unwrap();
    store.commit_archive(&pending, vec![entry]).unwrap();
    let archived = store
        .archived(TenantId(1), DeviceId(1), JourneyId(5))
        .unwrap()
        .unwrap();
    assert_eq!(archived.started_us, Some(T0));
    assert_eq!(archived.ended_us, Some(T0 + 30));
    assert!(
        store
            .journey(TenantId(1), DeviceId(1), JourneyId(5))
            .unwrap()
            .is_none()
    );
}
