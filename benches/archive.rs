//! The archive's Parquet writer: 100,000 positions (ten journeys) written in clear and with
//! modular encryption, beside the baseline of copying the same positions' 48-byte layout into a
//! buffer (what moving the data costs with no columnar encoding, compression or encryption).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use journeyd_archive::PositionsWriter;
use journeyd_wire::Position;

const NOW: i64 = 1_780_000_000_000_000;
const JOURNEYS: u64 = 10;
const PER_JOURNEY: usize = 10_000;

fn journeys() -> Vec<Vec<Position>> {
    (0..JOURNEYS)
        .map(|j| {
            (0..PER_JOURNEY)
                .map(|i| {
                    Position::new(
                        NOW + (j as i64 * PER_JOURNEY as i64 + i as i64) * 1_000_000,
                        51.0 + i as f64 * 1e-5,
                        -1.0 + j as f64 * 1e-3,
                    )
                    .with_speed(10.0)
                    .with_accuracy(4.0)
                })
                .collect()
        })
        .collect()
}

fn parquet(c: &mut Criterion) {
    let data = journeys();
    let key = journeyd_keys::DataKey::generate().unwrap();
    let mut group = c.benchmark_group("parquet_writer");
    group.throughput(Throughput::Elements(JOURNEYS * PER_JOURNEY as u64));
    group.sample_size(10);
    group.bench_function("baseline_copy_48_byte_layout", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(48 * PER_JOURNEY * JOURNEYS as usize);
            for track in &data {
                for p in track {
                    out.extend_from_slice(&p.to_le_bytes());
                }
            }
            out.len()
        })
    });
    group.bench_function("clear", |b| {
        b.iter(|| {
            let mut w = PositionsWriter::new(Vec::new()).unwrap();
            for (j, track) in data.iter().enumerate() {
                w.write_journey(7, j as u64, track).unwrap();
            }
            w.finish().unwrap().len()
        })
    });
    group.bench_function("encrypted", |b| {
        b.iter(|| {
            let mut w = PositionsWriter::new_encrypted(Vec::new(), 1, &key).unwrap();
            for (j, track) in data.iter().enumerate() {
                w.write_journey(7, j as u64, track).unwrap();
            }
            w.finish().unwrap().len()
        })
    });
    group.finish();
}

criterion_group!(benches, parquet);
criterion_main!(benches);
