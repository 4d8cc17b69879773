//! What a user would pick instead: PostgreSQL from the distribution's packages, started by the
//! benchmark on a Unix socket in a temporary folder, loading the same rows with `COPY` into a
//! table indexed by (device, fix time), one `COPY` (one synchronously committed transaction) per
//! batch, from as many sessions as the raw storage baseline uses writers.
//!
//! When run as root, PostgreSQL (which refuses root) runs as the `postgres` user the package
//! creates, through `runuser`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

/// The figures of the PostgreSQL baseline.
#[derive(Debug, Clone, Serialize)]
pub struct PostgresBaseline {
    pub version: String,
    pub sessions: usize,
    pub rows: u64,
    pub rows_per_sec: f64,
    /// journeyd's acked positions per second divided by this.
    pub journeyd_ratio: f64,
}

/// The folder of PostgreSQL's server programs: `JOURNEYD_PG_BIN`, the newest
/// `/usr/lib/postgresql/<version>/bin`, or the `PATH`.
fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("JOURNEYD_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let which = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .context("looking for initdb")?;
    let path = String::from_utf8_lossy(&which.stdout).trim().to_owned();
    anyhow::ensure!(
        !path.is_empty(),
        "PostgreSQL is not installed (apt-get install postgresql), or set JOURNEYD_PG_BIN"
    );
    Ok(PathBuf::from(path)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command that runs as the PostgreSQL user when we are root.
fn pg_command(program: &Path, as_postgres: bool) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run_ok(mut c: Command, what: &str) -> anyhow::Result<String> {
    let out = c.output().with_context(|| format!("running {what}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A running PostgreSQL on a temporary folder, stopped and removed on drop.
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    as_postgres: bool,
}

impl Cluster {
    fn start() -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!("journeyd-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        if as_postgres {
            run_ok(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres"]).arg(&dir);
                    c
                },
                "chown of the PostgreSQL folder",
            )?;
        }
        let cluster = Self {
            bin,
            dir,
            as_postgres,
        };
        let data = cluster.dir.join("data");
        let mut initdb = pg_command(&cluster.bin.join("initdb"), as_postgres);
        initdb
            .args(["-A", "trust", "-U", "bench", "--no-sync", "-D"])
            .arg(&data);
        run_ok(initdb, "initdb")?;
        let mut start = pg_command(&cluster.bin.join("pg_ctl"), as_postgres);
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(cluster.dir.join("log"))
            .arg("-o")
            .arg(format!(
                "-k {} -c listen_addresses='' -c fsync=on -c synchronous_commit=on -c max_wal_size=4GB -c shared_buffers=256MB",
                cluster.dir.display()
            ))
            .args(["-w", "start"]);
        run_ok(start, "pg_ctl start")?;
        cluster.sql(
            "CREATE TABLE positions (device bigint NOT NULL, journey bigint NOT NULL, \
             fix_time timestamptz NOT NULL, lat double precision NOT NULL, lon double precision NOT NULL, \
             altitude_m real, speed_mps real, heading_deg real, accuracy_m real, quality integer NOT NULL); \
             CREATE INDEX positions_device_time ON positions (device, fix_time);",
        )?;
        Ok(cluster)
    }

    fn psql(&self) -> Command {
        let mut c = pg_command(&self.bin.join("psql"), self.as_postgres);
        c.arg("-h").arg(&self.dir).args([
            "-U",
            "bench",
            "-d",
            "postgres",
            "-q",
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
        ]);
        c
    }

    fn sql(&self, sql: &str) -> anyhow::Result<String> {
        let mut c = self.psql();
        c.args(["-A", "-t", "-c", sql]);
        run_ok(c, "psql")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut stop = pg_command(&self.bin.join("pg_ctl"), self.as_postgres);
        stop.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"]);
        let _ = stop.output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One batch of rows as CSV, like the load generator's positions.
fn batch_csv(device: u64, k: u64, batch: usize, t0: i64, out: &mut String) {
    use std::fmt::Write as _;
    out.clear();
    for i in 0..batch {
        let t = t0 + (k * batch as u64 + i as u64) as i64 * 1000;
        let time = chrono::DateTime::from_timestamp_micros(t)
            .map(|d| d.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{device},1,{time},{},{},12.5,3.2,90,5,0",
            50.0 + i as f64 * 1e-5,
            8.0
        );
    }
}

/// Loads rows with one COPY per batch from `sessions` psql sessions for `duration`.
pub fn postgres_copy_baseline(
    sessions: usize,
    batch: usize,
    duration: Duration,
    journeyd_per_sec: f64,
) -> anyhow::Result<PostgresBaseline> {
    let cluster = Cluster::start()?;
    let version = cluster.sql("SHOW server_version")?.trim().to_owned();
    let t0 = crate::serve::now_us() - 3_600_000_000;
    let started = Instant::now();
    let deadline = started + duration;
    let threads: Vec<_> = (0..sessions)
        .map(|s| {
            let mut psql = cluster.psql();
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let mut child = psql
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .context("starting psql")?;
                let mut stdin = std::io::BufWriter::with_capacity(
                    1 << 20,
                    child.stdin.take().context("psql's stdin")?,
                );
                let mut csv = String::new();
                let mut rows = 0u64;
                let mut k = 0u64;
                while Instant::now() < deadline {
                    batch_csv(s as u64 + 1, k, batch, t0, &mut csv);
                    stdin.write_all(b"COPY positions FROM STDIN WITH (FORMAT csv);\n")?;
                    stdin.write_all(csv.as_bytes())?;
                    stdin.write_all(b"\\.\n")?;
                    rows += batch as u64;
                    k += 1;
                }
                drop(stdin);
                let out = child.wait_with_output()?;
                anyhow::ensure!(
                    out.status.success(),
                    "psql session failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                Ok(rows)
            })
        })
        .collect();
    let mut written = 0;
    for t in threads {
        written += t
            .join()
            .map_err(|_| anyhow::anyhow!("a COPY thread panicked"))??;
    }
    // Every COPY has committed once its session has exited.
    let seconds = started.elapsed().as_secs_f64();
    let stored: u64 = cluster
        .sql("SELECT count(*) FROM positions")?
        .trim()
        .parse()
        .context("counting rows")?;
    anyhow::ensure!(
        stored == written,
        "PostgreSQL holds {stored} rows, {written} were sent"
    );
    let rows_per_sec = written as f64 / seconds;
    Ok(PostgresBaseline {
        version,
        sessions,
        rows: written,
        rows_per_sec,
        journeyd_ratio: journeyd_per_sec / rows_per_sec,
    })
}
