//! `/metrics` in the Prometheus text format, read from the counters ingest and the writer keep.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use journeyd_ingest::{LATENCY_BOUNDS_US, LatencyHistogram};

use crate::AppState;

fn counter(out: &mut String, name: &str, help: &str, kind: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

fn histogram(out: &mut String, name: &str, help: &str, h: &LatencyHistogram) {
    let (cumulative, sum_us, count) = h.snapshot();
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (bound, n) in LATENCY_BOUNDS_US.iter().zip(&cumulative) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {n}", *bound as f64 / 1e6);
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{le=\"+Inf\"}} {}",
        cumulative.last().copied().unwrap_or(0)
    );
    let _ = writeln!(
        out,
        "{name}_sum {}\n{name}_count {count}",
        sum_us as f64 / 1e6
    );
}

pub(crate) fn render(state: &AppState) -> String {
    let s = state.ingest.stats();
    let w = state.ingest.writer_stats();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::new();
    counter(
        &mut out,
        "journeyd_connections_open",
        "Device connections open now.",
        "gauge",
        load(&s.connections_open),
    );
    counter(
        &mut out,
        "journeyd_connections_total",
        "Device connections accepted.",
        "counter",
        load(&s.connections_accepted),
    );
    counter(
        &mut out,
        "journeyd_auth_failures_total",
        "Hellos with an unknown device or wrong secret.",
        "counter",
        load(&s.auth_failures),
    );
    counter(
        &mut out,
        "journeyd_blocked_refused_total",
        "Connections of blocked devices refused.",
        "counter",
        load(&s.blocked_refused),
    );
    counter(
        &mut out,
        "journeyd_malformed_closes_total",
        "Connections closed for malformed frames or protocol violations.",
        "counter",
        load(&s.malformed_closes),
    );
    counter(
        &mut out,
        "journeyd_records_acked_total",
        "Records (batches, journey marks) acked as stored.",
        "counter",
        load(&s.records_acked),
    );
    counter(
        &mut out,
        "journeyd_records_replayed_total",
        "Acked records whose sequence number was already stored.",
        "counter",
        load(&s.records_replayed),
    );
    counter(
        &mut out,
        "journeyd_positions_stored_total",
        "Positions newly stored.",
        "counter",
        load(&s.positions_stored),
    );
    counter(
        &mut out,
        "journeyd_positions_duplicate_total",
        "Positions not stored because their journey held the fix time.",
        "counter",
        load(&s.positions_duplicate),
    );
    counter(
        &mut out,
        "journeyd_positions_flagged_total",
        "Positions stored with a quality flag.",
        "counter",
        load(&s.positions_flagged),
    );
    let _ = writeln!(
        out,
        "# HELP journeyd_positions_refused_total Positions refused, by reason.\n# TYPE journeyd_positions_refused_total counter"
    );
    for (reason, n) in s.refused() {
        let _ = writeln!(
            out,
            "journeyd_positions_refused_total{{reason=\"{}\"}} {n}",
            reason.name()
        );
    }
    counter(
        &mut out,
        "journeyd_retry_later_total",
        "Records refused with retry-later (overload or store failure).",
        "counter",
        load(&s.retry_later),
    );
    counter(
        &mut out,
        "journeyd_split_requests_total",
        "Batches refused as too large (split and resend).",
        "counter",
        load(&s.split_requests),
    );
    counter(
        &mut out,
        "journeyd_queued_positions",
        "Positions waiting for the writer.",
        "gauge",
        load(&s.queued_positions),
    );
    let (queued, capacity) = state.ingest.writer_queue();
    counter(
        &mut out,
        "journeyd_writer_queue",
        "Records waiting in the writer's queue.",
        "gauge",
        queued as u64,
    );
    counter(
        &mut out,
        "journeyd_writer_queue_capacity",
        "Capacity of the writer's queue.",
        "gauge",
        capacity as u64,
    );
    counter(
        &mut out,
        "journeyd_group_commits_total",
        "Synced group commits.",
        "counter",
        load(&w.groups),
    );
    counter(
        &mut out,
        "journeyd_group_commit_failures_total",
        "Group commits that failed (nothing of them was acked).",
        "counter",
        load(&w.failed_groups),
    );
    counter(
        &mut out,
        "journeyd_ready",
        "1 when ingest can store, 0 when it pushes back.",
        "gauge",
        state.ingest.is_ready() as u64,
    );

    histogram(
        &mut out,
        "journeyd_ack_latency_seconds",
        "From a record's arrival to its ack.",
        &s.ack_latency,
    );
    histogram(
        &mut out,
        "journeyd_writer_queue_wait_seconds",
        "A record's wait in the writer's queue, from its submission to the start of its group.",
        &w.queue_latency,
    );
    histogram(
        &mut out,
        "journeyd_group_commit_seconds",
        "A group commit from its first record taken off the queue to its write done.",
        &w.commit_latency,
    );
    histogram(
        &mut out,
        "journeyd_wal_sync_seconds",
        "The synced write of a group commit alone (WAL append, fsync and any write stall).",
        &w.sync_latency,
    );

    match state.store.engine_stats() {
        Ok(e) => {
            counter(
                &mut out,
                "journeyd_store_bytes",
                "Bytes of SST files and memtables.",
                "gauge",
                e.bytes,
            );
            counter(
                &mut out,
                "journeyd_store_write_stopped",
                "1 while RocksDB stops writes (too many memtables or L0 files).",
                "gauge",
                e.write_stopped,
            );
            counter(
                &mut out,
                "journeyd_store_delayed_write_rate",
                "Bytes per second RocksDB slows writes to, 0 when it does not.",
                "gauge",
                e.delayed_write_rate,
            );
        }
        Err(e) => tracing::warn!(error = %e, "cannot read store properties for metrics"),
    }
    if let Some(archive) = &state.archive {
        let o = archive.objects.stats();
        let c = &archive.compactor;
        for (name, help, kind, value) in [
            (
                "journeyd_archive_object_retries_total",
                "Object store calls that failed and were retried (outages, timeouts, 5xx).",
                "counter",
                load(&o.retries),
            ),
            (
                "journeyd_archive_object_failures_total",
                "Object store calls that failed for good (after their retries).",
                "counter",
                load(&o.failures),
            ),
            (
                "journeyd_archive_bytes_uploaded_total",
                "Bytes uploaded to the archive's object store.",
                "counter",
                load(&o.bytes_uploaded),
            ),
            (
                "journeyd_compaction_runs_total",
                "Compaction runs started.",
                "counter",
                load(&c.runs),
            ),
            (
                "journeyd_compaction_failed_runs_total",
                "Compaction runs that stopped on an error (nothing of their failed object was deleted).",
                "counter",
                load(&c.failed_runs),
            ),
            (
                "journeyd_archived_journeys_total",
                "Journeys moved into the archive.",
                "counter",
                load(&c.journeys_archived),
            ),
            (
                "journeyd_archived_positions_total",
                "Positions moved into the archive.",
                "counter",
                load(&c.rows_archived),
            ),
            (
                "journeyd_compaction_last_success_seconds",
                "When the last compaction run succeeded, Unix seconds (0: never).",
                "gauge",
                (c.last_success_us.load(Ordering::Relaxed).max(0) / 1_000_000) as u64,
            ),
        ] {
            counter(&mut out, name, help, kind, value);
        }
    }
    out
}
