//! The journeyd command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use journeyd::config::JourneydConfig;
use journeyd::{bench, replay, serve};
use journeyd_store::{DeviceId, HotStore};

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
    /// Also run the raw storage ceiling (a plain RocksDB loop, same records and sync policy)
    /// in the same run and print journeyd's ratio to it.
    #[arg(long)]
    baselines: bool,
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

#[expect(clippy::print_stdout, reason = "printing is what these commands do")]
fn run(cli: Cli) -> anyhow::Result<()> {
    let config = JourneydConfig::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => runtime()?.block_on(serve::run(config)),
        Command::Device(cmd) => device(&config, cmd),
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
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                println!(
                    "tenants {}\ndevices {}\njourneys {}\npositions {} ({} flagged)\nbatches {}\nstore bytes {}",
                    stats.tenants,
                    stats.devices,
                    stats.journeys,
                    stats.positions,
                    stats.flagged_positions,
                    stats.batches,
                    stats.disk_bytes
                );
            }
            Ok(())
        }
        Command::Replay(args) => {
            let json = args.json;
            let opts = replay_options(&config, &args)?;
            let summary = runtime()?.block_on(replay::replay(&args.paths, opts));
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", summary.render());
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
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(())
        }
        Command::DemoTracks { out, devices } => {
            let files = replay::write_demo_tracks(&out, devices, serve::now_us())?;
            println!("wrote {files} files to {}", out.display());
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

#[expect(clippy::print_stdout, reason = "printing is what these commands do")]
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
            println!(
                "device {} ({}) enrolled in tenant {}",
                record.id.0, record.name, tenant.name
            );
            println!(
                "credential (shown once; only its hash is kept): {}",
                credential.to_token()
            );
        }
        DeviceCommand::List { json } => {
            let devices = store.devices(None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&devices)?);
            } else {
                for d in devices {
                    println!(
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
            println!("device {id} blocked");
        }
        DeviceCommand::Unblock { id } => {
            store.set_blocked(DeviceId(id), false)?;
            println!("device {id} unblocked");
        }
    }
    Ok(())
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

#[expect(clippy::print_stdout, reason = "printing is what these commands do")]
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
            println!("user {username} ({role:?}) added to tenant {}", tenant.name);
            println!("password (shown once): {password}");
        }
        UserCommand::List { tenant } => {
            let tenant = only_tenant(&store, tenant.as_deref())?;
            for u in store.users(tenant.id)? {
                println!(
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
