//! What the server saw of a run: its latency histograms from `/metrics`, read over HTTPS at the
//! start and end of the measured window so that connecting devices do not count.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Cumulative bucket counts of every histogram in one scrape, by metric name.
#[derive(Debug, Default, Clone)]
pub(crate) struct Scrape {
    histograms: HashMap<String, Vec<(f64, u64)>>,
}

/// The server's own view of the measured window: the bucket bound (ms) under which 99 % of
/// each histogram's observations fell.
#[derive(Debug, Clone, Serialize)]
pub struct ServerSide {
    /// From a record's arrival to its ack being queued for sending.
    pub ack_p99_ms: f64,
    /// A record's wait in the writer's queue.
    pub queue_wait_p99_ms: f64,
    /// A group commit, whole.
    pub group_commit_p99_ms: f64,
    /// The synced write of a group commit alone.
    pub wal_sync_p99_ms: f64,
    /// The bucket of the slowest synced write.
    pub wal_sync_max_ms: f64,
    /// Group commits in the window, and records per commit.
    pub group_commits: u64,
    pub records_per_commit: f64,
}

/// Reads `/metrics` from the server's API, within 10 s.
pub(crate) async fn scrape(
    api: SocketAddr,
    trust: &[rustls::pki_types::CertificateDer<'static>],
) -> anyhow::Result<Scrape> {
    tokio::time::timeout(std::time::Duration::from_secs(10), scrape_now(api, trust))
        .await
        .context("the metrics did not answer in 10 s")?
}

async fn scrape_now(
    api: SocketAddr,
    trust: &[rustls::pki_types::CertificateDer<'static>],
) -> anyhow::Result<Scrape> {
    let mut roots = rustls::RootCertStore::empty();
    for c in trust {
        roots.add(c.clone())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(api).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    tls.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    // The server may close without a TLS close_notify once the body is sent; any other error
    // is a response cut short.
    if let Err(e) = tls.read_to_end(&mut response).await
        && e.kind() != std::io::ErrorKind::UnexpectedEof
    {
        return Err(e).context("reading the metrics");
    }
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("the metrics response has no header end")?;
    anyhow::ensure!(
        head.lines().next().is_some_and(|l| l.contains(" 200 ")),
        "metrics answered {}",
        head.lines().next().unwrap_or("")
    );
    anyhow::ensure!(
        body.contains("journeyd_ack_latency_seconds_bucket{le=\"+Inf\"}"),
        "the metrics response is incomplete"
    );
    Ok(parse(body))
}

/// Parses the histogram buckets of a Prometheus text exposition; lines that are not bucket
/// samples are skipped.
pub(crate) fn parse(text: &str) -> Scrape {
    let mut histograms: HashMap<String, Vec<(f64, u64)>> = HashMap::new();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once("_bucket{le=\"") else {
            continue;
        };
        let Some((bound, count)) = rest.split_once("\"} ") else {
            continue;
        };
        let bound = if bound == "+Inf" {
            f64::INFINITY
        } else {
            match bound.parse() {
                Ok(b) => b,
                Err(_) => continue,
            }
        };
        if let Ok(count) = count.trim().parse() {
            histograms
                .entry(name.to_owned())
                .or_default()
                .push((bound, count));
        }
    }
    Scrape { histograms }
}

impl Scrape {
    /// The bucket bound (ms) under which the fraction `q` of the observations made between
    /// `earlier` and this scrape fell; `None` without observations. `INFINITY` when above the
    /// largest bound.
    pub(crate) fn quantile_ms_since(&self, earlier: &Scrape, name: &str, q: f64) -> Option<f64> {
        let now = self.histograms.get(name)?;
        let before = earlier.histograms.get(name);
        let delta: Vec<(f64, u64)> = now
            .iter()
            .enumerate()
            .map(|(i, (b, n))| {
                let was = before.and_then(|v| v.get(i)).map_or(0, |(_, n)| *n);
                (*b, n.saturating_sub(was))
            })
            .collect();
        let total = delta.last()?.1;
        if total == 0 {
            return None;
        }
        let want = (q * total as f64).ceil() as u64;
        delta
            .iter()
            .find(|(_, n)| *n >= want)
            .map(|(b, _)| b * 1000.0)
    }

    /// Observations of `name` between `earlier` and this scrape.
    pub(crate) fn count_since(&self, earlier: &Scrape, name: &str) -> u64 {
        let last = |s: &Scrape| {
            s.histograms
                .get(name)
                .and_then(|v| v.last())
                .map_or(0, |(_, n)| *n)
        };
        last(self).saturating_sub(last(earlier))
    }

    /// The server's view of the window between `earlier` and this scrape.
    pub(crate) fn server_side_since(&self, earlier: &Scrape) -> Option<ServerSide> {
        let q = |name| self.quantile_ms_since(earlier, name, 0.99);
        let commits = self.count_since(earlier, "journeyd_group_commit_seconds");
        let records = self.count_since(earlier, "journeyd_writer_queue_wait_seconds");
        Some(ServerSide {
            ack_p99_ms: q("journeyd_ack_latency_seconds")?,
            queue_wait_p99_ms: q("journeyd_writer_queue_wait_seconds")?,
            group_commit_p99_ms: q("journeyd_group_commit_seconds")?,
            wal_sync_p99_ms: q("journeyd_wal_sync_seconds")?,
            wal_sync_max_ms: self.quantile_ms_since(earlier, "journeyd_wal_sync_seconds", 1.0)?,
            group_commits: commits,
            records_per_commit: records as f64 / commits.max(1) as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str =
        "x_bucket{le=\"0.001\"} 10\nx_bucket{le=\"0.01\"} 10\nx_bucket{le=\"+Inf\"} 10\n";
    const AFTER: &str = "# HELP x y\nx_bucket{le=\"0.001\"} 50\nx_bucket{le=\"0.01\"} 108\nx_bucket{le=\"+Inf\"} 110\nx_sum 1\n";

    #[test]
    fn quantiles_count_only_the_window() {
        let (before, after) = (parse(BEFORE), parse(AFTER));
        // 100 observations in the window: 40 ≤ 1 ms, 58 more ≤ 10 ms, 2 above.
        assert_eq!(after.count_since(&before, "x"), 100);
        assert_eq!(after.quantile_ms_since(&before, "x", 0.4), Some(1.0));
        assert_eq!(after.quantile_ms_since(&before, "x", 0.5), Some(10.0));
        assert_eq!(after.quantile_ms_since(&before, "x", 0.98), Some(10.0));
        assert_eq!(
            after.quantile_ms_since(&before, "x", 0.99),
            Some(f64::INFINITY)
        );
        assert_eq!(after.quantile_ms_since(&after, "x", 0.99), None);
        assert_eq!(after.quantile_ms_since(&before, "missing", 0.99), None);
    }

    #[test]
    fn lines_that_are_not_buckets_are_skipped() {
        let s = parse("garbage\nx_bucket{le=\"oops\"} 3\nx_bucket{le=\"0.5\"} many\n");
        assert!(s.histograms.is_empty());
    }
}
