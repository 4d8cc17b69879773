//! Frame encode, decode and validation of one batch, beside a plain copy of the same bytes (the
//! baseline: what moving the batch costs with no protocol work at all).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use journeyd_wire::frame::{self, ArchivedBatch, FrameKind, HEADER_LEN};
use journeyd_wire::{Batch, Position, ValidationRules};

const NOW: i64 = 1_780_000_000_000_000;

fn batch(n: usize) -> Batch {
    let positions = (0..n)
        .map(|i| {
            Position::new(
                NOW - 3_600_000_000 + i as i64 * 1_000_000,
                51.0 + i as f64 * 1e-5,
                -1.0,
            )
            .with_speed(10.0)
            .with_accuracy(4.0)
        })
        .collect();
    Batch {
        journey: 1,
        positions,
    }
}

fn frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    for n in [1usize, 100, 1000] {
        let b = batch(n);
        let encoded = frame::encode_frame(FrameKind::Batch, 1, &b);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(
            BenchmarkId::new("baseline_copy", n),
            &encoded,
            |bench, e| bench.iter(|| frame::aligned(std::hint::black_box(e))),
        );
        group.bench_with_input(BenchmarkId::new("encode", n), &b, |bench, b| {
            bench.iter(|| frame::encode_frame(FrameKind::Batch, 1, std::hint::black_box(b)))
        });
        group.bench_with_input(
            BenchmarkId::new("copy_and_check", n),
            &encoded,
            |bench, e| {
                bench.iter(|| {
                    let body = frame::aligned(&e[HEADER_LEN..]);
                    frame::decode_body::<ArchivedBatch>(FrameKind::Batch, &body)
                        .map(|a| a.positions.len())
                        .unwrap_or(0)
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("copy_check_validate", n),
            &encoded,
            |bench, e| {
                let rules = ValidationRules::default();
                bench.iter(|| {
                    let body = frame::aligned(&e[HEADER_LEN..]);
                    let archived =
                        frame::decode_body::<ArchivedBatch>(FrameKind::Batch, &body).unwrap();
                    rules
                        .check_batch(archived.positions.iter().map(|p| p.to_native()), NOW)
                        .kept
                        .len()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, frames);
criterion_main!(benches);
