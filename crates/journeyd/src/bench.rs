//! `journeyd bench`: many simulated devices over real QUIC connections against a real server
//! with synced acks, reporting acked positions per second and ack latency.
//!
//! The server runs as a child process (`journeyd serve` on a temporary data folder), so its
//! memory and CPU time are its own. Each device sends one batch, waits for its ack (the latency
//! measured), and sends the next, at the configured rate or as fast as acks come.

mod postgres;
pub mod quic_floor;
mod server_side;
pub mod sweep;

pub use postgres::{PostgresBaseline, postgres_copy_baseline};
pub use server_side::ServerSide;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use journeyd_device::{Device, DeviceConfig, Identity, Outbox};
use journeyd_wire::Position;
use serde::Serialize;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub devices: usize,
    pub batch_positions: usize,
    /// Batches per second per device; 0 sends the next batch as soon as the ack arrives.
    pub rate: f64,
    pub duration: Duration,
    /// Client UDP sockets the devices share.
    pub client_endpoints: usize,
    /// Also run the raw storage ceiling in the same run, and print the ratio.
    pub baselines: bool,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub devices: usize,
    pub batch_positions: usize,
    pub seconds: f64,
    pub acked_positions: u64,
    pub acked_positions_per_sec: f64,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    pub ack_p999_ms: f64,
    pub ack_max_ms: f64,
    pub server_peak_rss_mib: f64,
    pub server_cpu_seconds: f64,
    pub disk_bytes_per_position: f64,
    /// Server resident memory grown per connected, idle device (connections, TLS, tasks, state).
    pub server_kib_per_idle_device: f64,
    pub failed_devices: usize,
    /// CPU seconds the server and the load generator used in the measured window, and the CPU
    /// seconds the machine had in it (cores × seconds).
    pub window_cpu: WindowCpu,
    /// The server's latency histograms over the measured window, when `/metrics` answered.
    pub server_side: Option<ServerSide>,
    /// The raw storage ceiling of the same run, when asked for.
    pub baseline: Option<RawStoreBaseline>,
    /// The network ceiling of the same run (acked positions/s of a server that stores nothing),
    /// when asked for.
    pub network_ceiling: Option<f64>,
    /// PostgreSQL loading the same rows with COPY, when asked for.
    pub postgres: Option<PostgresBaseline>,
    /// Memory per connection of a bare quinn server with the same TLS and transport settings
    /// (one stream, one message each way), KiB, when asked for.
    pub quic_floor_kib_per_connection: Option<f64>,
}

/// Where the machine's CPU went during the measured window.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct WindowCpu {
    pub server_seconds: f64,
    pub load_generator_seconds: f64,
    pub available_seconds: f64,
}

/// A plain RocksDB loop writing the same chunks a batch per value with a synced WAL, from
/// several writer threads (RocksDB groups their syncs), with nothing else on the machine's cores.
#[derive(Debug, Clone, Serialize)]
pub struct RawStoreBaseline {
    pub writers: usize,
    pub positions_per_sec: f64,
    /// journeyd's acked positions per second divided by this.
    pub journeyd_ratio: f64,
}

/// Runs the raw storage ceiling for `duration` in a temporary folder.
pub fn raw_store_baseline(writers: usize, batch: usize, duration: Duration) -> anyhow::Result<f64> {
    let dir = std::env::temp_dir().join(format!("journeyd-raw-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let db = std::sync::Arc::new(journeyd_store::HotStore::open(
        &journeyd_store::StoreConfig::new(&dir),
    )?);
    let cipher = journeyd_keys::DataKey::generate()?.chunk_cipher();
    let deadline = Instant::now() + duration;
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let db = db.clone();
            let cipher = cipher.clone();
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let mut written = 0u64;
                let mut buf = Vec::new();
                let mut k = 0u64;
                let t0 = crate::serve::now_us() - 3_600_000_000;
                while Instant::now() < deadline {
                    let ps: Vec<Position> = (0..batch)
                        .map(|i| {
                            Position::new(
                                t0 + (k * batch as u64 + i as u64) as i64 * 1000,
                                50.0,
                                8.0,
                            )
                        })
                        .collect();
                    let mut key = [0u8; 16];
                    key[..8].copy_from_slice(&(w as u64).to_be_bytes());
                    key[8..].copy_from_slice(&k.to_be_bytes());
                    // Sealed like journeyd's chunks, so both write the same bytes.
                    journeyd_store::chunk::encode(&cipher, &key, &ps, t0, &mut buf)?;
                    db.raw_put_synced(&key, &buf)?;
                    written += batch as u64;
                    k += 1;
                }
                Ok(written)
            })
        })
        .collect();
    let mut total = 0;
    for t in threads {
        total += t
            .join()
            .map_err(|_| anyhow::anyhow!("baseline writer panicked"))??;
    }
    db.stop_background_work();
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(total as f64 / duration.as_secs_f64())
}

impl BenchReport {
    pub fn render(&self) -> String {
        format!(
            "devices {}  batch {}  {:.1} s\n\
             acked positions/s  {:.0}  ({} acked)\n\
             ack latency ms     p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\n\
             server             peak RSS {:.1} MiB  CPU {:.1} s  disk {:.1} bytes/position\n\
             CPU in the window  server {:.1} s, load generator {:.1} s, of {:.1} s the cores had\n\
             idle device        {:.1} KiB of server memory each, connected and authenticated\n\
             failed devices     {}\n",
            self.devices,
            self.batch_positions,
            self.seconds,
            self.acked_positions_per_sec,
            self.acked_positions,
            self.ack_p50_ms,
            self.ack_p99_ms,
            self.ack_p999_ms,
            self.ack_max_ms,
            self.server_peak_rss_mib,
            self.server_cpu_seconds,
            self.disk_bytes_per_position,
            self.window_cpu.server_seconds,
            self.window_cpu.load_generator_seconds,
            self.window_cpu.available_seconds,
            self.server_kib_per_idle_device,
            self.failed_devices
        ) + &self
            .server_side
            .as_ref()
            .map(|s| {
                format!(
                    "server side p99    ack {} ms, writer queue wait {} ms, group commit {} ms, WAL sync {} ms (slowest {} ms) ({} commits, {:.1} records each)\n",
                    bound(s.ack_p99_ms),
                    bound(s.queue_wait_p99_ms),
                    bound(s.group_commit_p99_ms),
                    bound(s.wal_sync_p99_ms),
                    bound(s.wal_sync_max_ms),
                    s.group_commits,
                    s.records_per_commit
                )
            })
            .unwrap_or_default()
            + &self
            .baseline
            .as_ref()
            .map(|b| {
                format!(
                    "baseline           raw RocksDB batch-per-value loop, synced, {} writers: {:.0} positions/s; journeyd = {:.2} x baseline\n",
                    b.writers, b.positions_per_sec, b.journeyd_ratio
                )
            })
            .unwrap_or_default()
            + &self
                .network_ceiling
                .map(|n| {
                    format!(
                        "baseline           network ceiling (same load, server acks without storing): {n:.0} positions/s; journeyd = {:.2} x\n",
                        self.acked_positions_per_sec / n
                    )
                })
                .unwrap_or_default()
            + &self
                .postgres
                .as_ref()
                .map(|p| {
                    format!(
                        "baseline           PostgreSQL {} COPY, a synchronous commit per batch, {} sessions, indexed (device, time): {:.0} rows/s; journeyd = {:.2} x\n",
                        p.version, p.sessions, p.rows_per_sec, p.journeyd_ratio
                    )
                })
                .unwrap_or_default()
            + &self
                .quic_floor_kib_per_connection
                .filter(|f| *f > 0.0)
                .map(|f| {
                    format!(
                        "baseline           bare QUIC connection (quinn + rustls, same settings, one stream, one message each way): {f:.1} KiB of server memory each; an idle journeyd device = {:.2} x\n",
                        self.server_kib_per_idle_device / f
                    )
                })
                .unwrap_or_default()
    }
}

/// A histogram bucket bound as "≤ x", or "> 1000" above the largest.
fn bound(ms: f64) -> String {
    if ms.is_finite() {
        format!("≤ {ms}")
    } else {
        "> 1000".into()
    }
}

/// A `journeyd serve` child on a temporary folder.
struct ChildServer {
    child: std::process::Child,
    dir: PathBuf,
    addr: SocketAddr,
    api: SocketAddr,
    cert: PathBuf,
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_child(exe: &Path, ack_without_storing: bool) -> anyhow::Result<ChildServer> {
    let dir = std::env::temp_dir().join(format!("journeyd-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    write_child_config(
        &dir,
        &format!("[store]\nack_without_storing = {ack_without_storing}\n"),
    )?;
    spawn_child(exe, dir)
}

fn write_child_config(dir: &Path, extra: &str) -> anyhow::Result<()> {
    std::fs::write(
        dir.join("journeyd.toml"),
        format!(
            "data_dir = {:?}\n[ingest]\nlisten = \"127.0.0.1:0\"\nmax_in_flight = 64\n[api]\nlisten = \"127.0.0.1:0\"\n[archive]\ncompact_every = \"0s\"\nbackup_every = \"0s\"\n{extra}",
            dir.join("data").display().to_string()
        ),
    )?;
    Ok(())
}

/// Starts `journeyd serve` on the config in `dir` and waits until it is ready.
fn spawn_child(exe: &Path, dir: PathBuf) -> anyhow::Result<ChildServer> {
    let ready_path = dir.join("data/ready.json");
    let _ = std::fs::remove_file(&ready_path);
    let child = std::process::Command::new(exe)
        .args(["--log", "warn", "serve", "--config"])
        .arg(dir.join("journeyd.toml"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready_path)
            && let Ok(ready) = serde_json::from_str::<crate::serve::Ready>(&text)
            && ready.pid == child.id()
        {
            return Ok(ChildServer {
                child,
                addr: ready.quic,
                api: ready.api,
                cert: ready.cert,
                dir,
            });
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "the server did not get ready in 120 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Resident memory (VmRSS) of a process now, KiB.
fn current_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds this process has used (user and system), from /proc.
fn own_cpu_seconds() -> f64 {
    process_usage(std::process::id()).1
}

/// Peak resident memory (VmHWM) and CPU seconds of a process, from /proc.
pub fn process_usage(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i))
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    (hwm_kib / 1024.0, ticks / 100.0)
}

fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                dir_bytes(&path)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

/// Runs the benchmark against a fresh child server.
pub async fn run(opts: BenchOptions) -> anyhow::Result<BenchReport> {
    run_against(opts, false).await
}

/// The network ceiling: the same load against a server that acks without storing.
pub async fn run_network_ceiling(opts: BenchOptions) -> anyhow::Result<f64> {
    Ok(run_against(opts, true).await?.acked_positions_per_sec)
}

async fn run_against(opts: BenchOptions, ack_without_storing: bool) -> anyhow::Result<BenchReport> {
    let exe = std::env::current_exe()?;
    let server = start_child(&exe, ack_without_storing)?;
    let code = journeyd_device::parse_code(&std::fs::read_to_string(
        server.dir.join("data/demo-enrolment-code"),
    )?)?;
    let trust = load_certs(&server.cert)?;

    let bind: SocketAddr = "127.0.0.1:0".parse()?;
    let endpoints: Vec<quinn::Endpoint> = (0..opts.client_endpoints.max(1))
        .map(|_| journeyd_device::client_endpoint(bind))
        .collect::<Result<_, _>>()?;

    // Enrol and connect every device first, so the measured window is steady load only.
    let rss_before_connect = current_rss_kib(server.child.id());
    let mut devices = Vec::with_capacity(opts.devices);
    for i in 0..opts.devices {
        let mut config = DeviceConfig::new(server.addr, trust.clone());
        config.endpoint = Some(endpoints[i % endpoints.len()].clone());
        config.max_batch_positions = opts.batch_positions as u32;
        config.flush_timeout = Duration::from_secs(120);
        let identity = Identity::Enrol {
            code,
            name: format!("bench-{i}"),
        };
        let mut d = Device::open(config, Outbox::memory(), identity)?;
        let now = crate::serve::now_us();
        d.start_journey(1, now)?;
        devices.push(d);
    }
    let connects: Vec<_> = devices
        .into_iter()
        .map(|mut d| tokio::spawn(async move { d.flush().await.map(|_| d) }))
        .collect();
    let mut ready = Vec::new();
    for c in connects {
        ready.push(c.await??);
    }
    // Every device is connected, authenticated and idle now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_connected = current_rss_kib(server.child.id());
    let per_device_kib =
        rss_connected.saturating_sub(rss_before_connect) as f64 / opts.devices.max(1) as f64;

    let metrics_before = server_side::scrape(server.api, &trust).await;
    let cpu_before = (process_usage(server.child.id()).1, own_cpu_seconds());
    let started = Instant::now();
    let deadline = started + opts.duration;
    let tasks: Vec<_> = ready
        .into_iter()
        .enumerate()
        .map(|(i, d)| tokio::spawn(device_loop(i, d, opts.clone(), deadline)))
        .collect();
    // The window closes at the deadline: what the server and this process used and saw until
    // then is read then, and acks that arrive later (batches in flight at the deadline) count
    // for latency only.
    tokio::time::sleep_until(deadline.into()).await;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_at_deadline = (process_usage(server.child.id()).1, own_cpu_seconds());
    let metrics_after = server_side::scrape(server.api, &trust).await;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut acked = 0;
    let mut stored = 0;
    let mut failed = 0;
    for t in tasks {
        match t.await? {
            Ok((h, in_window, all)) => {
                hist.add(&h)?;
                acked += in_window;
                stored += all;
            }
            Err(e) => {
                failed += 1;
                tracing::warn!(error = %e, "bench device failed");
            }
        }
    }
    let (rss, cpu) = process_usage(server.child.id());
    let window_cpu = WindowCpu {
        server_seconds: cpu_at_deadline.0 - cpu_before.0,
        load_generator_seconds: cpu_at_deadline.1 - cpu_before.1,
        available_seconds: seconds
            * std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
    };
    let server_side = match (metrics_before, metrics_after) {
        (Ok(before), Ok(after)) => after.server_side_since(&before),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot read the server's metrics");
            None
        }
    };
    let disk = dir_bytes(&server.dir.join("data/hot"));
    let ms = |v: u64| v as f64 / 1000.0;
    Ok(BenchReport {
        devices: opts.devices,
        batch_positions: opts.batch_positions,
        seconds,
        acked_positions: acked,
        acked_positions_per_sec: acked as f64 / seconds,
        ack_p50_ms: ms(hist.value_at_quantile(0.5)),
        ack_p99_ms: ms(hist.value_at_quantile(0.99)),
        ack_p999_ms: ms(hist.value_at_quantile(0.999)),
        ack_max_ms: ms(hist.max()),
        server_peak_rss_mib: rss,
        server_cpu_seconds: cpu,
        server_kib_per_idle_device: per_device_kib,
        disk_bytes_per_position: if stored > 0 {
            disk as f64 / stored as f64
        } else {
            0.0
        },
        failed_devices: failed,
        window_cpu,
        server_side,
        baseline: None,
        network_ceiling: None,
        postgres: None,
        quic_floor_kib_per_connection: None,
    })
}

/// One device sending batches until the deadline: its latency histogram, the positions acked
/// within the window, and all it got acked (batches in flight at the deadline included).
async fn device_loop(
    i: usize,
    mut d: Device,
    opts: BenchOptions,
    deadline: Instant,
) -> anyhow::Result<(Histogram<u64>, u64, u64)> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut acked = 0u64;
    let mut acked_in_window = 0u64;
    let interval = (opts.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / opts.rate));
    let mut next = Instant::now();
    if let Some(iv) = interval {
        // Devices in the field are not in step: spread the first sends evenly over one interval,
        // or every device would send at the same instant and each ack would wait for a burst of
        // the whole fleet to be stored.
        next += iv.mul_f64(i as f64 / opts.devices.max(1) as f64);
        tokio::time::sleep_until(next.into()).await;
    }
    let mut positions = Vec::with_capacity(opts.batch_positions);
    let mut t = crate::serve::now_us() - 3_600_000_000;
    while Instant::now() < deadline {
        positions.clear();
        for k in 0..opts.batch_positions {
            t += 1000;
            let lat = 50.0 + (i % 100) as f64 * 0.01 + k as f64 * 1e-6;
            positions.push(
                Position::new(t, lat, 8.0 + (i / 100) as f64 * 0.01)
                    .with_speed(12.5)
                    .with_accuracy(5.0),
            );
        }
        d.record(1, &positions)?;
        let sent = Instant::now();
        let report = d.flush().await?;
        hist.record(sent.elapsed().as_micros().max(1) as u64)?;
        acked += report.stored + report.duplicates;
        if Instant::now() <= deadline {
            acked_in_window += report.stored + report.duplicates;
        }
        if let Some(iv) = interval {
            next += iv;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    d.close().await;
    Ok((hist, acked_in_window, acked))
}

pub fn load_certs(path: &Path) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{}: no certificate", path.display());
    Ok(certs)
}

/// How fast a node comes back after kill -9 under load.
#[derive(Debug, Clone, Serialize)]
pub struct RestartReport {
    pub devices: usize,
    pub load_seconds: f64,
    pub positions_held_after_kill: u64,
    /// Write-ahead log files in the hot store when the server was killed.
    pub wal_bytes_at_kill: u64,
    /// From starting the new process to its ready.json (WAL replayed, listening).
    pub ready_ms: f64,
    /// From starting the new process to a device's first ack.
    pub first_ack_ms: f64,
    pub positions_after_restart: u64,
}

impl RestartReport {
    pub fn render(&self) -> String {
        format!(
            "restart under load: {} devices for {:.1} s, {} positions held after the kill, WAL {:.1} MiB at kill -9\n\
             ready (WAL replayed, listening) {:.0} ms; first ack {:.0} ms; {} positions stored after restart\n",
            self.devices,
            self.load_seconds,
            self.positions_held_after_kill,
            self.wal_bytes_at_kill as f64 / (1 << 20) as f64,
            self.ready_ms,
            self.first_ack_ms,
            self.positions_after_restart
        )
    }
}

fn wal_bytes(hot: &Path) -> u64 {
    std::fs::read_dir(hot)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Loads a server (memtables of 1 GiB, so the write-ahead log grows) for `opts.duration`, kills
/// it with SIGKILL under load, restarts it on the same folder, and times readiness and the first
/// ack.
pub async fn restart(opts: BenchOptions) -> anyhow::Result<RestartReport> {
    let exe = std::env::current_exe()?;
    let dir = std::env::temp_dir().join(format!("journeyd-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    write_child_config(&dir, "[store]\nwrite_buffer_bytes = 1073741824\n")?;
    let mut server = spawn_child(&exe, dir.clone())?;
    let code = journeyd_device::parse_code(&std::fs::read_to_string(
        dir.join("data/demo-enrolment-code"),
    )?)?;
    let trust = load_certs(&server.cert)?;
    let bind: SocketAddr = "127.0.0.1:0".parse()?;
    let endpoint = journeyd_device::client_endpoint(bind)?;
    let started = Instant::now();
    let deadline = started + opts.duration;
    let mut tasks = Vec::new();
    for i in 0..opts.devices {
        let mut config = DeviceConfig::new(server.addr, trust.clone());
        config.endpoint = Some(endpoint.clone());
        config.max_batch_positions = opts.batch_positions as u32;
        let mut d = Device::open(
            config,
            Outbox::memory(),
            Identity::Enrol {
                code,
                name: format!("restart-{i}"),
            },
        )?;
        d.start_journey(1, crate::serve::now_us())?;
        let opts = opts.clone();
        // Far past the kill: the loop ends when the server goes away.
        tasks.push(tokio::spawn(device_loop(
            i,
            d,
            opts,
            deadline + Duration::from_secs(3600),
        )));
    }
    tokio::time::sleep_until(deadline.into()).await;
    let wal_bytes_at_kill = wal_bytes(&dir.join("data/hot"));
    server.child.kill()?; // SIGKILL, under load
    server.child.wait()?;
    let load_seconds = started.elapsed().as_secs_f64();
    for t in &tasks {
        t.abort();
    }
    let before = {
        let store = journeyd_store::HotStore::open_read_only(&dir.join("data/hot"), None)?;
        store.stats()?.positions
    };
    // The same folder, a new process: keep the folder when the old handle goes.
    let old = std::mem::replace(&mut server.dir, PathBuf::new());
    drop(server);
    let restarted_at = Instant::now();
    let server = spawn_child(&exe, old)?;
    let ready_ms = restarted_at.elapsed().as_secs_f64() * 1e3;
    let mut config = DeviceConfig::new(server.addr, trust.clone());
    config.endpoint = Some(endpoint.clone());
    let mut probe = Device::open(
        config,
        Outbox::memory(),
        Identity::Enrol {
            code,
            name: "restart-probe".into(),
        },
    )?;
    probe.record(1, &[Position::new(crate::serve::now_us(), 50.0, 8.0)])?;
    probe.flush().await?;
    let first_ack_ms = restarted_at.elapsed().as_secs_f64() * 1e3;
    probe.close().await;
    let after = {
        let store = journeyd_store::HotStore::open_read_only(&server.dir.join("data/hot"), None)?;
        store.stats()?.positions
    };
    Ok(RestartReport {
        devices: opts.devices,
        load_seconds,
        positions_held_after_kill: before,
        wal_bytes_at_kill,
        ready_ms,
        first_ack_ms,
        positions_after_restart: after,
    })
}
