//! A latency histogram many threads update without locks, for metrics.

use std::sync::atomic::{AtomicU64, Ordering};

/// A fixed-bucket latency histogram that many tasks update without locks.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// Upper bounds of the latency buckets, µs.
pub const LATENCY_BOUNDS_US: [u64; 12] = [
    250, 500, 1_000, 2_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
];

impl LatencyHistogram {
    pub fn record(&self, us: u64) {
        let i = LATENCY_BOUNDS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Cumulative counts per bound (the last is +Inf), the sum in µs, and the count.
    pub fn snapshot(&self) -> (Vec<u64>, u64, u64) {
        let mut acc = 0;
        let cumulative = self.buckets.iter().map(|b| {
            acc += b.load(Ordering::Relaxed);
            acc
        });
        (
            cumulative.collect(),
            self.sum_us.load(Ordering::Relaxed),
            self.count.load(Ordering::Relaxed),
        )
    }
}
