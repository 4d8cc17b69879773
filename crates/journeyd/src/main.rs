//! The journeyd command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use journeyd::config::JourneydConfig;
use journeyd::{bench, replay, serve};
use journeyd_store::{DeviceId, HotStore};

/// Prints a line on stdout. A reader that went away (`| head`) ends the command quietly: the
/// error reaches `main`, which treats a broken pipe as success.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?;
    }};
}

/// Prints on stdout, as [`outln`] without the newline.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)?;
    }};
}

#[derive(Parser, Debug)]
#[command(
    name = "journeyd",
    version,
    about = "GPS telemetry ingestion for journey-management safety systems"
)]
struct Cli {
    /// Configuration file (TOML). Without one, journeyd runs on its embedded defaults.
    #[arg(long, global = true, env = "JOURNEYD_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `journeyd=debug`.
    #[arg(long, global = true, default_value = "info", env = "JOURNEYD_LOG")]
    log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the node: QUIC ingest on the hot store.
    Serve,
    /// Enrol, list, block and unblock devices (with the server stopped).
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Add users of the query API (with the server stopped; online, admins use the API).
    #[command(subcommand)]
    User(UserCommand),
    /// Feed recorded tracks (GPX, FIT, NMEA, CSV, GeoJSON) to a server as devices.
    Replay(ReplayArgs),
    /// What the hot store holds.
    Stats {
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drive simulated devices against a fresh server and print throughput and ack latency.
    Bench(BenchArgs),
    /// For `bench --baselines`: a bare QUIC server with ingest's settings, to measure the memory
    /// of a connection with nothing of journeyd in it.
    #[command(hide = true)]
    BenchQuicFloorServer { dir: PathBuf },
    /// Archive journeys past their hot retention now (serve does it on a schedule). With the
    /// server stopped.
    Compact {
        /// Act as if it were this time (RFC 3339), e.g. to archive "now" in a demo.
        #[arg(long)]
        now: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Search, read and restore archived journeys; rebuild the archive index.
    #[command(subcommand)]
    Archive(ArchiveCommand),
    /// The master key and the tenants' data keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Take an encrypted backup of the hot store into the archive's object store (with the
    /// server stopped; serve takes one daily).
    Backup {
        #[arg(long)]
        now: Option<String>,
    },
    /// Rebuild this node from the latest backup plus the archive, into an empty data folder.
    RestoreBackup {
        /// A backup's object name (`backups/…`). Default: the latest.
        #[arg(long)]
        name: Option<String>,
    },
    /// Write a set of generated journeys as CSV files into a folder, for demos.
    DemoTracks {
        /// Folder to write the CSV files into.
        out: PathBuf,
        /// How many devices (one file each).
        #[arg(long, default_value_t = 5)]
        devices: usize,
    },
}

#[derive(Subcommand, Debug)]
enum ArchiveCommand {
    /// List archived journeys.
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        device: Option<u64>,
        /// Only devices assigned to this user.
        #[arg(long)]
        user: Option<String>,
        /// Only journeys with fixes at or after this time (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Only journeys with fixes at or before this time (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print an archive file (or any journeyd Parquet file) as CSV, without a server.
    Read {
        file: PathBuf,
        /// The tenant key, 64 hex digits (`journeyd keys export`). Or `--key-file`.
        #[arg(long, env = "JOURNEYD_TENANT_KEY")]
        key: Option<String>,
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Bring an archived journey back into the hot store for some days.
    Restore {
        #[arg(long)]
        device: u64,
        #[arg(long)]
        journey: u64,
        #[arg(long, default_value_t = 7)]
        days: u32,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        now: Option<String>,
    },
    /// Rebuild the archive index from the objects alone.
    RebuildIndex,
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Print a new random master key (64 hex digits) for a key file or JOURNEYD_MASTER_KEY.
    New,
    /// Re-wrap every tenant key under a new master key (no data is rewritten). Then point
    /// keys.master_key_file (or JOURNEYD_MASTER_KEY) at the new key.
    Rotate {
        /// File with the new master key; created when missing.
        #[arg(long)]
        new_key_file: PathBuf,
    },
    /// Print a tenant's data key (64 hex digits), for reading its archive files elsewhere.
    Export {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Destroy a tenant's data key: all its positions, hot and archived, become unreadable for
    /// good. Nobody else's are touched.
    Destroy {
        #[arg(long)]
        tenant: String,
        /// Confirms that this cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
enum DeviceCommand {
    /// Enrol a device and print its credential (shown this once).
    Add {
        #[arg(long)]
        name: String,
        /// Tenant name. Default: the only tenant, or `demo`.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List devices.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Block a device: it can no longer connect.
    Block { id: u64 },
    /// Unblock a device.
    Unblock { id: u64 },
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Add a user and print a generated password (shown once).
    Add {
        #[arg(long)]
        username: String,
        /// reporter, investigator or admin.
        #[arg(long, value_parser = parse_role)]
        role: journeyd_store::Role,
        /// Tenant name. Default: the only tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List a tenant's users.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
}

fn parse_role(s: &str) -> Result<journeyd_store::Role, String> {
    match s {
        "reporter" => Ok(journeyd_store::Role::Reporter),
        "investigator" => Ok(journeyd_store::Role::Investigator),
        "admin" => Ok(journeyd_store::Role::Admin),
        _ => Err(format!("{s}: expected reporter, investigator or admin")),
    }
}

#[derive(clap::Args, Debug)]
struct ReplayArgs {
    /// Files or folders of tracks.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Server address. Default: the local server's, from `<data_dir>/ready.json`.
    #[arg(long)]
    server: Option<SocketAddr>,
    /// Name in the server certificate.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Certificate to trust. Default: the local server's.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Enrolment code (64 hex digits). Default: `<data_dir>/demo-enrolment-code`.
    #[arg(long, env = "JOURNEYD_ENROLMENT_CODE")]
    enrolment_code: Option<String>,
    /// Device state (credentials, outboxes). Default: `<data_dir>/replay-devices`.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Move each file's times so that its last fix is now.
    #[arg(long)]
    shift_to_now: bool,
    /// Replay at this multiple of real time (e.g. 60). Default: as fast as acks come.
    #[arg(long)]
    speed: Option<f64>,
    /// Silence that splits a track into journeys.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    gap: Duration,
    /// Files replayed at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Positions per batch (the server may ask for fewer).
    #[arg(long, default_value_t = 500)]
    batch: u32,
    /// How long each device keeps trying to reach the server before its file counts as failed
    /// (its unacked records stay in the state folder for the next replay).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// Simulated devices, each on its own QUIC connection.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Positions per batch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Batches per second per device; 0 = as fast as acks come.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// How long to measure, after every device has connected.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// UDP sockets the simulated devices share.
    #[arg(long, default_value_t = 4)]
    client_endpoints: usize,
    /// Also run, in the same run, the raw storage ceiling (a plain RocksDB loop, same records
    /// and sync policy), the network ceiling (a server that acks without storing) and
    /// PostgreSQL COPY of the same rows, and print journeyd's ratio to each.
    #[arg(long)]
    baselines: bool,
    /// Run a grid instead of one point: every device count of --sweep-devices with every batch
    /// size of --sweep-batches, each for --duration; print a table and draw --chart.
    #[arg(long)]
    sweep: bool,
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    sweep_devices: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
    sweep_batches: Vec<usize>,
    /// Instead: load a server (large memtables, so the write-ahead log grows) for --duration,
    /// kill -9 it under load, restart it, and time readiness and the first ack.
    #[arg(long)]
    restart: bool,
    /// Where the sweep's SVG chart goes.
    #[arg(long, default_value = "bench-sweep.svg")]
    chart: PathBuf,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let cli_json = cli.log_json;
    init_logging(&cli.log, cli.log_json);
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader of our output went away (`journeyd archive read … | head`): not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            // With JSON logs the error is a log line too, for log collectors; on a terminal it
            // is printed once.
            if cli_json {
                tracing::error!(error = format!("{e:#}"), "command failed");
            }
            #[expect(clippy::print_stderr, reason = "the error is the command's answer")]
            {
                eprintln!("error: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = JourneydConfig::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => runtime()?.block_on(serve::run(config)),
        Command::Device(cmd) => device(&config, cmd),
        Command::Compact { now, json } => {
            let now = journeyd::archive_cmd::now_or(now.as_deref())?;
            let store = std::sync::Arc::new(open_store_offline(&config, false)?);
            let report =
                runtime()?.block_on(journeyd::archive_cmd::compact(&config, store, now))?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                outln!(
                    "archived {} journeys, {} positions, {} objects, {} bytes",
                    report.journeys,
                    report.rows,
                    report.objects,
                    report.bytes
                );
            }
            Ok(())
        }
        Command::Archive(cmd) => archive(&config, cmd),
        Command::Keys(cmd) => keys(&config, cmd),
        Command::Backup { now } => {
            let now = journeyd::archive_cmd::now_or(now.as_deref())?;
            let store = open_store_offline(&config, false)?;
            let objects = journeyd::archive_cmd::open_objects(&config)?;
            let master = journeyd_keys::MasterKey::load(&config.master_key_source())?;
            let report = runtime()?.block_on(journeyd_archiver::backup::backup(
                &store,
                &objects,
                &master,
                &journeyd::archive_cmd::work_dir(&config),
                now,
            ))?;
            outln!("{} ({} bytes)", report.object, report.bytes);
            Ok(())
        }
        Command::RestoreBackup { name } => {
            let objects = journeyd::archive_cmd::open_objects(&config)?;
            let master = journeyd_keys::MasterKey::load(&config.master_key_source())
                .context("restore-backup needs the master key the backup was taken with")?;
            let rt = runtime()?;
            let name = rt.block_on(journeyd_archiver::backup::restore_backup(
                &objects,
                &master,
                &config.store_path(),
                name.as_deref(),
            ))?;
            let store = open_store_offline(&config, false)?;
            let rebuilt =
                rt.block_on(journeyd_archiver::retrieve::rebuild_index(&store, &objects))?;
            outln!(
                "restored {name}; archive index rebuilt: {} journeys in {} objects ({} hot copies the archive already held dropped)",
                rebuilt.journeys,
                rebuilt.objects,
                rebuilt.hot_copies_dropped
            );
            Ok(())
        }
        Command::User(cmd) => user(&config, cmd),
        Command::Stats { json } => {
            anyhow::ensure!(
                config.store_path().join("CURRENT").exists(),
                "no hot store in {} (has journeyd serve run with this data_dir?)",
                config.store_path().display()
            );
            let store =
                HotStore::open_read_only(&config.store_path(), None).with_context(|| {
                    format!(
                        "opening {} (has journeyd serve run here?)",
                        config.store_path().display()
                    )
                })?;
            let stats = store.stats()?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                outln!(
                    "tenants {}\ndevices {}\njourneys {}\npositions {} ({} flagged)\nbatches {}\nstore bytes {}\narchived journeys {} ({} positions)",
                    stats.tenants,
                    stats.devices,
                    stats.journeys,
                    stats.positions,
                    stats.flagged_positions,
                    stats.batches,
                    stats.disk_bytes,
                    stats.archived_journeys,
                    stats.archived_positions
                );
            }
            Ok(())
        }
        Command::Replay(args) => {
            let json = args.json;
            let opts = replay_options(&config, &args)?;
            let summary = runtime()?.block_on(replay::replay(&args.paths, opts));
            if json {
                outln!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                out!("{}", summary.render());
            }
            Ok(())
        }
        Command::Bench(args) => {
            let opts = bench::BenchOptions {
                devices: args.devices,
                batch_positions: args.batch,
                rate: args.rate,
                duration: args.duration,
                client_endpoints: args.client_endpoints,
                baselines: args.baselines,
            };
            let baselines = opts.baselines;
            let (duration, devices, batch) = (opts.duration, opts.devices, opts.batch_positions);
            let rt = runtime()?;
            if args.restart {
                let report = rt.block_on(bench::restart(opts))?;
                if args.json {
                    outln!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    out!("{}", report.render());
                }
                return Ok(());
            }
            if args.sweep {
                let reports = rt.block_on(bench::sweep::sweep(
                    &opts,
                    &args.sweep_devices,
                    &args.sweep_batches,
                ))?;
                let caption = format!(
                    "journeyd bench --sweep, {} s per point, synced acks, load generator on the same machine ({} cores)",
                    duration.as_secs_f64(),
                    std::thread::available_parallelism().map_or(0, |n| n.get())
                );
                std::fs::write(&args.chart, bench::sweep::chart(&reports, &caption))
                    .with_context(|| format!("writing {}", args.chart.display()))?;
                if args.json {
                    outln!("{}", serde_json::to_string_pretty(&reports)?);
                } else {
                    out!("{}", bench::sweep::table(&reports));
                    outln!("chart: {}", args.chart.display());
                }
                return Ok(());
            }
            let mut report = rt.block_on(bench::run(opts.clone()))?;
            if baselines {
                report.network_ceiling = Some(rt.block_on(bench::run_network_ceiling(opts))?);
                let writers = devices.clamp(1, 64);
                let raw = bench::raw_store_baseline(writers, batch, duration)?;
                report.baseline = Some(bench::RawStoreBaseline {
                    writers,
                    positions_per_sec: raw,
                    journeyd_ratio: report.acked_positions_per_sec / raw,
                });
                report.postgres = Some(bench::postgres_copy_baseline(
                    writers,
                    batch,
                    duration,
                    report.acked_positions_per_sec,
                )?);
                report.quic_floor_kib_per_connection = Some(rt.block_on(
                    bench::quic_floor::kib_per_connection(devices, args.client_endpoints),
                )?);
            }
            if args.json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out!("{}", report.render());
            }
            Ok(())
        }
        Command::BenchQuicFloorServer { dir } => {
            runtime()?.block_on(bench::quic_floor::serve(&dir))
        }
        Command::DemoTracks { out, devices } => {
            let files = replay::write_demo_tracks(&out, devices, serve::now_us())?;
            outln!("wrote {files} files to {}", out.display());
            Ok(())
        }
    }
}

fn replay_options(
    config: &JourneydConfig,
    args: &ReplayArgs,
) -> anyhow::Result<replay::ReplayOptions> {
    let local: Option<serve::Ready> = std::fs::read_to_string(config.ready_path())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let server = match (args.server, &local) {
        (Some(s), _) => s,
        (None, Some(r)) => loopback_of(r.quic),
        (None, None) => anyhow::bail!(
            "no --server given and no running server in {}",
            config.data_dir.display()
        ),
    };
    let cert = args.cert.clone().unwrap_or_else(|| config.cert_path());
    let code_text = match &args.enrolment_code {
        Some(c) => c.clone(),
        None => std::fs::read_to_string(config.enrolment_code_path()).with_context(|| {
            format!(
                "no --enrolment-code given and none in {}",
                config.enrolment_code_path().display()
            )
        })?,
    };
    Ok(replay::ReplayOptions {
        server,
        server_name: args.server_name.clone(),
        trust: bench::load_certs(&cert)?,
        enrolment_code: journeyd_device::parse_code(&code_text)?,
        state_dir: args
            .state
            .clone()
            .unwrap_or_else(|| config.data_dir.join("replay-devices")),
        shift_to_now: args.shift_to_now,
        speed: args.speed,
        journey_gap: args.gap,
        concurrency: args.concurrency,
        batch_positions: args.batch,
        flush_timeout: args.timeout,
    })
}

/// A wildcard listen address reached through loopback.
fn loopback_of(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

fn device(config: &JourneydConfig, cmd: DeviceCommand) -> anyhow::Result<()> {
    let creates = matches!(cmd, DeviceCommand::Add { .. });
    let store = open_store_offline(config, creates)?;
    match cmd {
        DeviceCommand::Add { name, tenant } => {
            // Enrolling before the first serve sets up the demo tenant exactly as serve would,
            // enrolment code and admin password files included.
            serve::ensure_demo_tenant(config, &store, serve::now_us())?;
            let tenant = only_tenant(&store, tenant.as_deref())?;
            let (record, secret) = store.add_device(tenant.id, &name, serve::now_us())?;
            let credential = journeyd_device::Credential {
                device_id: record.id.0,
                secret,
            };
            outln!(
                "device {} ({}) enrolled in tenant {}",
                record.id.0,
                record.name,
                tenant.name
            );
            outln!(
                "credential (shown once; only its hash is kept): {}",
                credential.to_token()
            );
        }
        DeviceCommand::List { json } => {
            let devices = store.devices(None)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&devices)?);
            } else {
                for d in devices {
                    outln!(
                        "{}\ttenant {}\t{}\t{}",
                        d.id.0,
                        d.tenant.0,
                        if d.blocked { "blocked" } else { "active" },
                        d.name
                    );
                }
            }
        }
        DeviceCommand::Block { id } => {
            store.set_blocked(DeviceId(id), true)?;
            outln!("device {id} blocked");
        }
        DeviceCommand::Unblock { id } => {
            store.set_blocked(DeviceId(id), false)?;
            outln!("device {id} unblocked");
        }
    }
    Ok(())
}

fn archive(config: &JourneydConfig, cmd: ArchiveCommand) -> anyhow::Result<()> {
    match cmd {
        ArchiveCommand::List {
            tenant,
            device,
            user,
            from,
            to,
            json,
        } => {
            use std::io::Write;
            let store = open_store_offline(config, false)?;
            let t = journeyd::archive_cmd::tenant(&store, tenant.as_deref())?;
            let time = |v: Option<String>| {
                v.as_deref()
                    .map(|v| journeyd::archive_cmd::now_or(Some(v)))
                    .transpose()
            };
            let (from, to) = (time(from)?, time(to)?);
            let mut found =
                journeyd_archiver::retrieve::search(&store, t, device.map(DeviceId), from, to)?;
            if let Some(user) = user {
                let devices: std::collections::HashSet<DeviceId> = store
                    .devices(Some(t))?
                    .into_iter()
                    .filter(|d| d.user.as_deref() == Some(user.as_str()))
                    .map(|d| d.id)
                    .collect();
                found.retain(|e| devices.contains(&e.device));
            }
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&found)?)?;
            } else {
                for e in found {
                    writeln!(
                        out,
                        "device {} journey {}: {} positions, {} object(s){}",
                        e.device.0,
                        e.journey,
                        e.positions,
                        e.parts.len(),
                        if e.restored_until_us.is_some() {
                            ", restored"
                        } else {
                            ""
                        }
                    )?;
                }
            }
            Ok(())
        }
        ArchiveCommand::Read {
            file,
            key,
            key_file,
        } => {
            let key = match (key, key_file) {
                (Some(k), _) => Some(journeyd_keys::DataKey::from_hex(&k, "--key")?),
                (None, Some(f)) => {
                    let text = std::fs::read_to_string(&f)
                        .with_context(|| format!("reading {}", f.display()))?;
                    Some(journeyd_keys::DataKey::from_hex(
                        &text,
                        &f.display().to_string(),
                    )?)
                }
                (None, None) => None,
            };
            let mut out = std::io::stdout().lock();
            journeyd::archive_cmd::read_file(&file, key, &mut out)?;
            Ok(())
        }
        ArchiveCommand::Restore {
            device,
            journey,
            days,
            tenant,
            now,
        } => {
            let now = journeyd::archive_cmd::now_or(now.as_deref())?;
            let store = open_store_offline(config, false)?;
            let t = journeyd::archive_cmd::tenant(&store, tenant.as_deref())?;
            let n = runtime()?.block_on(journeyd::archive_cmd::restore(
                config, &store, t, device, journey, days, now,
            ))?;
            outln!("restored {n} positions for {days} days");
            Ok(())
        }
        ArchiveCommand::RebuildIndex => {
            let store = open_store_offline(config, false)?;
            let objects = journeyd::archive_cmd::open_objects(config)?;
            let report = runtime()?
                .block_on(journeyd_archiver::retrieve::rebuild_index(&store, &objects))?;
            outln!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}

fn keys(config: &JourneydConfig, cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::New => {
            outln!("{}", journeyd_keys::MasterKey::generate()?.to_hex());
            Ok(())
        }
        KeysCommand::Rotate { new_key_file } => {
            let store = open_store_offline(config, false)?;
            let new = journeyd_keys::MasterKey::load(&journeyd_keys::MasterKeySource::File {
                path: new_key_file.clone(),
                create: true,
            })?;
            let n = store.rotate_master_key(&new, serve::now_us())?;
            outln!(
                "re-wrapped {n} tenant keys under master key {}; now set keys.master_key_file = {:?} (or JOURNEYD_MASTER_KEY) and keep the old key until you have checked a start",
                new.id(),
                new_key_file.display().to_string()
            );
            Ok(())
        }
        KeysCommand::Export { tenant } => {
            let store = open_store_offline(config, false)?;
            let t = journeyd::archive_cmd::tenant(&store, tenant.as_deref())?;
            outln!("{}", store.tenant_key(t)?.to_hex());
            Ok(())
        }
        KeysCommand::Destroy { tenant, yes } => {
            anyhow::ensure!(
                yes,
                "destroying a tenant key makes its data unreadable for good; add --yes to confirm"
            );
            let store = open_store_offline(config, false)?;
            let t = journeyd::archive_cmd::tenant(&store, Some(&tenant))?;
            store.destroy_tenant_key(t)?;
            outln!("tenant {tenant}'s data key is destroyed");
            Ok(())
        }
    }
}

/// Opens the store for an offline command. Only commands that enrol may create it.
fn open_store_offline(config: &JourneydConfig, may_create: bool) -> anyhow::Result<HotStore> {
    let path = config.store_path();
    anyhow::ensure!(
        may_create || path.join("CURRENT").exists(),
        "no hot store in {} (has journeyd serve run with this data_dir?)",
        path.display()
    );
    HotStore::open(&config.store_config()).with_context(|| {
        format!(
            "opening {} (stop journeyd serve first, or use the query API)",
            path.display()
        )
    })
}

fn only_tenant(
    store: &HotStore,
    name: Option<&str>,
) -> anyhow::Result<journeyd_store::TenantRecord> {
    let tenants = store.tenants()?;
    match name {
        Some(n) => tenants
            .into_iter()
            .find(|t| t.name == n)
            .with_context(|| format!("no tenant named {n}")),
        None if tenants.len() == 1 => Ok(tenants.into_iter().next().expect("one tenant")),
        None if tenants.is_empty() => {
            anyhow::bail!("no tenant yet: start journeyd serve once, or enrol a device")
        }
        None => anyhow::bail!("{} tenants: say which with --tenant", tenants.len()),
    }
}

fn user(config: &JourneydConfig, cmd: UserCommand) -> anyhow::Result<()> {
    let store = open_store_offline(config, false)?;
    match cmd {
        UserCommand::Add {
            username,
            role,
            tenant,
        } => {
            let tenant = only_tenant(&store, tenant.as_deref())?;
            anyhow::ensure!(
                store.user(tenant.id, &username)?.is_none(),
                "user {username} exists in {}",
                tenant.name
            );
            let password = journeyd_api::auth::random_password()?;
            let user = journeyd_api::auth::new_user(
                tenant.id,
                &username,
                role,
                &password,
                serve::now_us(),
            )?;
            store.put_user(&user)?;
            outln!("user {username} ({role:?}) added to tenant {}", tenant.name);
            outln!("password (shown once): {password}");
        }
        UserCommand::List { tenant } => {
            let tenant = only_tenant(&store, tenant.as_deref())?;
            for u in store.users(tenant.id)? {
                outln!(
                    "{}\t{:?}\t{}",
                    u.username,
                    u.role,
                    if u.locked_until_us > serve::now_us() {
                        "locked"
                    } else {
                        "active"
                    }
                );
            }
        }
    }
    Ok(())
}
