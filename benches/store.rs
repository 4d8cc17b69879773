//! The hot store's write path: chunk encoding and sealing (XChaCha20-Poly1305), and synced group commits through the writer
//! beside a plain RocksDB loop writing the same chunks a batch per value with the same sync
//! policy (the raw storage ceiling).

use std::sync::Arc;
use std::sync::mpsc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use journeyd_store::{
    BatchSeq, DeviceId, HotStore, StoreConfig, TenantId, WriteRequest, Writer, WriterConfig, chunk,
};
use journeyd_wire::Position;
use journeyd_wire::session::Record;
use journeyd_wire::validate::ValidatedBatch;

const NOW: i64 = 1_780_000_000_000_000;

fn positions(n: usize, offset: i64) -> Vec<Position> {
    (0..n)
        .map(|i| {
            Position::new(
                NOW + offset + i as i64 * 1_000_000,
                51.0 + i as f64 * 1e-5,
                -1.0,
            )
            .with_speed(10.0)
        })
        .collect()
}

fn chunks(c: &mut Criterion) {
    let ps = positions(100, 0);
    let cipher = journeyd_keys::DataKey::generate().unwrap().chunk_cipher();
    let mut buf = Vec::new();
    let mut group = c.benchmark_group("chunk");
    group.throughput(Throughput::Elements(100));
    group.bench_function("encode_seal_100", |b| {
        b.iter(|| chunk::encode(&cipher, b"k", std::hint::black_box(&ps), NOW, &mut buf))
    });
    chunk::encode(&cipher, b"k", &ps, NOW, &mut buf).unwrap();
    group.bench_function("open_decode_100", |b| {
        b.iter(|| {
            chunk::decode(&cipher, b"k", std::hint::black_box(&buf)).map(|c| c.positions.len())
        })
    });
    group.finish();
}

/// 64 writers' worth of batches of 100 positions, committed through the group-commit writer.
fn writer(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(HotStore::open(&StoreConfig::new(dir.path().join("db"))).unwrap());
    store.create_tenant("bench", NOW).unwrap();
    let w = Writer::start(store.clone(), WriterConfig::default());
    let mut seq = 0u64;
    let mut group = c.benchmark_group("store_write");
    let devices = 64u64;
    group.throughput(Throughput::Elements(devices * 100));
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("writer_group_commit", devices), |b| {
        b.iter(|| {
            seq += 1;
            let (tx, rx) = mpsc::channel();
            for d in 0..devices {
                let tx = tx.clone();
                let record = Record::Batch {
                    journey: 1,
                    validated: ValidatedBatch {
                        kept: positions(100, seq as i64 * 200_000_000),
                        ..Default::default()
                    },
                };
                let req = WriteRequest {
                    tenant: TenantId(1),
                    device: DeviceId(d),
                    seq: BatchSeq(seq),
                    record,
                    received_us: NOW,
                    reply: Box::new(move |r| {
                        let _ = tx.send(r.is_ok());
                    }),
                };
                w.try_submit(req).expect("queue has room");
            }
            drop(tx);
            rx.iter().filter(|ok| *ok).count()
        })
    });

    let raw = rocksdb::DB::open_default(dir.path().join("raw")).unwrap();
    let mut sync = rocksdb::WriteOptions::default();
    sync.set_sync(true);
    let mut buf = Vec::new();
    let mut key = 0u64;
    let cipher = journeyd_keys::DataKey::generate().unwrap().chunk_cipher();
    group.bench_function(
        BenchmarkId::new("baseline_rocksdb_batch_per_value", devices),
        |b| {
            b.iter(|| {
                let mut batch = rocksdb::WriteBatch::default();
                for _ in 0..devices {
                    key += 1;
                    let k = key.to_be_bytes();
                    chunk::encode(
                        &cipher,
                        &k,
                        &positions(100, key as i64 * 1000),
                        NOW,
                        &mut buf,
                    )
                    .unwrap();
                    batch.put(key.to_be_bytes(), &buf);
                }
                raw.write_opt(batch, &sync).unwrap();
            })
        },
    );
    group.finish();
    w.shutdown();
    store.stop_background_work();
}

criterion_group!(benches, chunks, writer);
criterion_main!(benches);
