//! `journeyd replay`: recorded tracks fed through the device SDK to a server, as devices.
//!
//! One device per track (a file, or a vehicle of a fleet file), enrolled with the tenant's
//! enrolment code the first time and remembered in the state folder, so replaying the same
//! files again is the same devices resending the same journeys: the server stores nothing new.
//! Journeys are split where the track is silent for longer than the gap (default 30 min); a
//! journey's id is the time of its first fix, so it is the same on every replay.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use journeyd_device::{Device, DeviceConfig, DeviceError, FlushReport, Identity, Outbox};
use journeyd_import::{Fix, Track};
use journeyd_wire::Position;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub server: SocketAddr,
    pub server_name: String,
    pub trust: Vec<CertificateDer<'static>>,
    pub enrolment_code: [u8; 32],
    /// Where device credentials and outboxes live between runs.
    pub state_dir: PathBuf,
    /// Move each file's times so that its last fix is now.
    pub shift_to_now: bool,
    /// Replay at this multiple of real time; `None` sends as fast as acks come.
    pub speed: Option<f64>,
    /// Silence that splits a track into journeys.
    pub journey_gap: Duration,
    /// Files replayed at once.
    pub concurrency: usize,
    /// Positions per batch.
    pub batch_positions: u32,
    /// How long a device keeps trying to reach the server.
    pub flush_timeout: Duration,
}

/// What a replay did, in numbers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplaySummary {
    pub files: u64,
    pub files_failed: u64,
    pub devices: u64,
    pub journeys: u64,
    pub positions_read: u64,
    /// Fixes without a time: not positions a device could send.
    pub positions_without_time: u64,
    pub positions_sent: u64,
    /// Positions the server acked: newly stored plus already held.
    pub positions_acked: u64,
    pub stored: u64,
    pub duplicates: u64,
    pub flagged: u64,
    pub refused: BTreeMap<String, u64>,
    /// Records the server refused for good: journey starts or ends with impossible times (a
    /// track whose times are placeholders, say). Their positions are counted above.
    #[serde(default)]
    pub records_rejected: u64,
    pub errors: Vec<FileError>,
}

/// A file that could not be read or sent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileError {
    pub file: String,
    pub error: String,
}

impl ReplaySummary {
    fn add_report(&mut self, r: &FlushReport) {
        self.stored += r.stored;
        self.duplicates += r.duplicates;
        self.positions_acked += r.stored + r.duplicates;
        self.flagged += r.flagged;
        self.records_rejected += r.rejected_records;
        for (reason, n) in &r.refused {
            *self.refused.entry(reason.name().to_owned()).or_default() += n;
        }
    }

    fn merge(&mut self, o: ReplaySummary) {
        self.files += o.files;
        self.files_failed += o.files_failed;
        self.devices += o.devices;
        self.journeys += o.journeys;
        self.positions_read += o.positions_read;
        self.positions_without_time += o.positions_without_time;
        self.positions_sent += o.positions_sent;
        self.positions_acked += o.positions_acked;
        self.stored += o.stored;
        self.duplicates += o.duplicates;
        self.flagged += o.flagged;
        self.records_rejected += o.records_rejected;
        for (k, v) in o.refused {
            *self.refused.entry(k).or_default() += v;
        }
        self.errors.extend(o.errors);
    }

    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }

    /// The summary as an operator reads it.
    pub fn render(&self) -> String {
        let mut s = format!(
            "replayed {} files ({} failed) as {} devices, {} journeys\n\
             positions: {} read, {} without time (skipped), {} sent, {} acked ({} stored, {} already held), {} flagged, {} refused\n",
            self.files,
            self.files_failed,
            self.devices,
            self.journeys,
            self.positions_read,
            self.positions_without_time,
            self.positions_sent,
            self.positions_acked,
            self.stored,
            self.duplicates,
            self.flagged,
            self.refused_total()
        );
        for (reason, n) in &self.refused {
            s.push_str(&format!("  refused {reason}: {n}\n"));
        }
        if self.records_rejected > 0 {
            s.push_str(&format!(
                "  journey starts/ends rejected (impossible times): {}\n",
                self.records_rejected
            ));
        }
        for e in &self.errors {
            s.push_str(&format!("  error: {}: {}\n", e.file, e.error));
        }
        s
    }
}

/// Every file under `paths` (folders are walked), sorted.
pub fn collect_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect();
            entries.sort();
            for e in entries {
                walk(&e, out);
            }
        } else {
            out.push(p.to_owned());
        }
    }
    let mut out = Vec::new();
    for p in paths {
        walk(p, &mut out);
    }
    out
}

/// Replays files; a file that fails is reported and the others go on. Once the server has been
/// unreachable for a device's whole timeout, the files not yet started are reported as not sent
/// rather than each waiting out its own timeout; their devices resend on the next replay.
pub async fn replay(paths: &[PathBuf], opts: ReplayOptions) -> ReplaySummary {
    let files = collect_files(paths);
    let server_down = Arc::new(AtomicBool::new(false));
    let opts = Arc::new(opts);
    let permits = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut tasks = Vec::new();
    for file in files {
        let opts = opts.clone();
        let permits = permits.clone();
        let server_down = server_down.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            replay_file(&file, &opts, &server_down).await
        }));
    }
    let mut total = ReplaySummary::default();
    for t in tasks {
        match t.await {
            Ok(s) => total.merge(s),
            Err(e) => total.errors.push(FileError {
                file: "?".into(),
                error: format!("replay task failed: {e}"),
            }),
        }
    }
    total
}

async fn replay_file(file: &Path, opts: &ReplayOptions, server_down: &AtomicBool) -> ReplaySummary {
    let mut summary = ReplaySummary {
        files: 1,
        ..ReplaySummary::default()
    };
    let name = file.display().to_string();
    let read = {
        let file = file.to_owned();
        tokio::task::spawn_blocking(move || journeyd_import::read_file(&file)).await
    };
    let tracks = match read {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return failed(summary, &name, e.to_string()),
        Err(e) => return failed(summary, &name, format!("reader crashed: {e}")),
    };
    let shift = if opts.shift_to_now {
        shift_for(&tracks.tracks)
    } else {
        0
    };
    for track in &tracks.tracks {
        summary.positions_read += track.fixes.len() as u64;
        if server_down.load(Ordering::Relaxed) {
            summary.files_failed = 1;
            summary.errors.push(FileError {
                file: name.clone(),
                error: format!(
                    "device {}: not sent: the server is unreachable",
                    track.device
                ),
            });
            continue;
        }
        if let Err(e) = replay_track(file, track, shift, opts, &mut summary).await {
            if matches!(
                e.downcast_ref::<DeviceError>(),
                Some(DeviceError::Unreachable { .. })
            ) {
                server_down.store(true, Ordering::Relaxed);
            }
            summary.files_failed = 1;
            summary.errors.push(FileError {
                file: name.clone(),
                error: format!("device {}: {e}", track.device),
            });
        }
    }
    summary
}

fn failed(mut s: ReplaySummary, file: &str, error: String) -> ReplaySummary {
    tracing::warn!(file, %error, "cannot replay file");
    s.files_failed = 1;
    s.errors.push(FileError {
        file: file.to_owned(),
        error,
    });
    s
}

/// The shift that moves a file's last fix to now.
fn shift_for(tracks: &[Track]) -> i64 {
    let last = tracks
        .iter()
        .flat_map(|t| t.fixes.iter().filter_map(|f| f.fix_time_us))
        .max();
    last.map_or(0, |l| crate::serve::now_us() - l)
}

pub fn to_position(f: &Fix, fix_time_us: i64) -> Position {
    let mut p = Position::new(fix_time_us, f.lat, f.lon);
    if let Some(v) = f.altitude_m {
        p = p.with_altitude(v);
    }
    if let Some(v) = f.speed_mps {
        p = p.with_speed(v);
    }
    if let Some(v) = f.heading_deg {
        p = p.with_heading(v);
    }
    if let Some(v) = f.accuracy_m {
        p = p.with_accuracy(v);
    }
    p
}

/// A track's positions in fix-time order, split into journeys at silences longer than `gap`.
/// Each journey's id is its first fix time.
pub fn journeys_of(
    track: &Track,
    shift_us: i64,
    gap: Duration,
) -> (Vec<(u64, Vec<Position>)>, u64) {
    let mut with_time: Vec<Position> = track
        .fixes
        .iter()
        .filter_map(|f| {
            f.fix_time_us
                .map(|t| to_position(f, t.saturating_add(shift_us)))
        })
        .collect();
    let without_time = (track.fixes.len() - with_time.len()) as u64;
    with_time.sort_by_key(|p| p.fix_time_us);
    let gap_us = gap.as_micros() as i64;
    let mut journeys: Vec<(u64, Vec<Position>)> = Vec::new();
    for p in with_time {
        match journeys.last_mut() {
            Some((_, ps))
                if ps
                    .last()
                    .is_some_and(|l| p.fix_time_us - l.fix_time_us <= gap_us) =>
            {
                ps.push(p)
            }
            _ => journeys.push((p.fix_time_us as u64, vec![p])),
        }
    }
    (journeys, without_time)
}

fn state_folder(file: &Path, device: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{}\n{device}", file.display()).as_bytes());
    let clean: String = device
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    format!("{clean}-{}", hex::encode(&digest[..6]))
}

async fn replay_track(
    file: &Path,
    track: &Track,
    shift: i64,
    opts: &ReplayOptions,
    summary: &mut ReplaySummary,
) -> anyhow::Result<()> {
    let (journeys, without_time) = journeys_of(track, shift, opts.journey_gap);
    summary.positions_without_time += without_time;
    if journeys.is_empty() {
        return Ok(());
    }
    let outbox = Outbox::open(opts.state_dir.join(state_folder(file, &track.device)))?;
    let mut config = DeviceConfig::new(opts.server, opts.trust.clone());
    config.server_name = opts.server_name.clone();
    config.max_batch_positions = opts.batch_positions;
    config.flush_timeout = opts.flush_timeout;
    let identity = Identity::Enrol {
        code: opts.enrolment_code,
        name: track.device.chars().take(128).collect(),
    };
    let mut device = Device::open(config, outbox, identity)?;
    summary.devices += 1;

    // Whatever an earlier, interrupted replay left unacked goes first.
    if device.pending() > 0 {
        summary.add_report(&device.flush().await?);
    }
    for (journey, positions) in journeys {
        summary.journeys += 1;
        let (first, last) = (
            positions[0].fix_time_us,
            positions[positions.len() - 1].fix_time_us,
        );
        device.start_journey(journey, first)?;
        match opts.speed {
            None => {
                device.record(journey, &positions)?;
                summary.positions_sent += positions.len() as u64;
            }
            Some(speed) => {
                let mut sent_until = first;
                for window in positions.chunk_by(|a, b| {
                    (b.fix_time_us - a.fix_time_us) < 1_000_000
                        && a.fix_time_us / 10_000_000 == b.fix_time_us / 10_000_000
                }) {
                    let t = window[0].fix_time_us;
                    let wait = Duration::from_micros(
                        ((t - sent_until).max(0) as f64 / speed.max(1e-6)) as u64,
                    );
                    tokio::time::sleep(wait.min(Duration::from_secs(60))).await;
                    sent_until = t;
                    device.record(journey, window)?;
                    summary.positions_sent += window.len() as u64;
                    summary.add_report(&device.flush().await?);
                }
            }
        }
        device.end_journey(journey, last)?;
        summary.add_report(&device.flush().await?);
    }
    device.close().await;
    Ok(())
}

/// Writes `devices` CSV files of generated journeys (a drive of about 20 minutes each, one fix
/// every 5 s, ending an hour before `now_us`), for demos on machines without recorded tracks.
pub fn write_demo_tracks(out: &Path, devices: usize, now_us: i64) -> anyhow::Result<usize> {
    std::fs::create_dir_all(out)?;
    for d in 0..devices {
        let mut text = String::from("time,lat,lon,speed\n");
        let start = now_us / 1_000_000 - 3_600 - 1_200 - d as i64 * 60;
        let (mut lat, mut lon) = (51.45 + d as f64 * 0.02, -2.6 + d as f64 * 0.03);
        for i in 0..240i64 {
            let heading = (i as f64 / 40.0 + d as f64).sin();
            lat += 0.0004 * heading.cos();
            lon += 0.0006 * heading.sin();
            text.push_str(&format!("{},{lat:.6},{lon:.6},12.5\n", start + i * 5));
        }
        std::fs::write(out.join(format!("demo-van-{}.csv", d + 1)), text)?;
    }
    Ok(devices)
}
