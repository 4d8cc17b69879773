//! Shared pieces of the end-to-end tests: servers (in-process or the real binary), devices,
//! and a raw protocol client for the cases the SDK would hide.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a part of the support"
)]
#![allow(clippy::print_stderr, reason = "a skipped test says why")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use journeyd::config::JourneydConfig;
use journeyd::serve::{Ready, Server};
use journeyd_device::{Credential, Device, DeviceConfig, Identity, Outbox};
use journeyd_store::{DeviceId, HotStore, TenantId};
use journeyd_wire::frame::{self, FrameHeader, FrameKind, HEADER_LEN, Hello};
use journeyd_wire::{Ack, Position};
use rustls::pki_types::CertificateDer;

pub const SECOND: i64 = 1_000_000;
pub const MINUTE: i64 = 60 * SECOND;

pub fn now_us() -> i64 {
    journeyd::serve::now_us()
}

/// A config for tests: a temp data folder, loopback, a free port.
pub fn test_config(dir: &Path) -> JourneydConfig {
    let mut c = JourneydConfig {
        data_dir: dir.join("data"),
        ..JourneydConfig::default()
    };
    c.ingest.listen = "127.0.0.1:0".parse().unwrap();
    c.api.listen = "127.0.0.1:0".parse().unwrap();
    // Tests run the compactor and backups themselves, at the times they choose.
    c.archive.compact_every = Duration::ZERO;
    c.archive.backup_every = Duration::ZERO;
    c
}

/// journeyd running inside the test process: real QUIC, real RocksDB.
pub struct TestServer {
    pub server: Server,
    pub dir: tempfile::TempDir,
    pub trust: Vec<CertificateDer<'static>>,
    pub code: [u8; 32],
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    pub fn start_with(tweak: impl FnOnce(&mut JourneydConfig)) -> Self {
        Self::start_with_clock(tweak, journeyd_ingest::system_clock())
    }

    /// A server whose clock the test moves: `clock` is read for every "now".
    pub fn start_with_clock(
        tweak: impl FnOnce(&mut JourneydConfig),
        clock: journeyd_ingest::Clock,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let code_path = config.enrolment_code_path();
        let cert_path = config.cert_path();
        let server = Server::start_with_clock(config, clock).unwrap();
        let code =
            journeyd_device::parse_code(&std::fs::read_to_string(code_path).unwrap()).unwrap();
        let trust = journeyd::bench::load_certs(&cert_path).unwrap();
        Self {
            server,
            dir,
            trust,
            code,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.ingest.local_addr()
    }

    pub fn store(&self) -> &Arc<HotStore> {
        &self.server.store
    }

    pub fn tenant(&self) -> TenantId {
        self.store().tenants().unwrap()[0].id
    }

    /// Enrols a device directly in the store and returns its credential.
    pub fn enrol(&self, name: &str) -> Credential {
        let (rec, secret) = self
            .store()
            .add_device(self.tenant(), name, now_us())
            .unwrap();
        Credential {
            device_id: rec.id.0,
            secret,
        }
    }

    pub fn device_config(&self) -> DeviceConfig {
        let mut c = DeviceConfig::new(self.addr(), self.trust.clone());
        c.flush_timeout = Duration::from_secs(30);
        c
    }

    /// A device with an in-memory outbox and a fresh credential.
    pub fn device(&self, name: &str) -> (Device, DeviceId) {
        let cred = self.enrol(name);
        let id = DeviceId(cred.device_id);
        (
            Device::open(
                self.device_config(),
                Outbox::memory(),
                Identity::Credential(cred),
            )
            .unwrap(),
            id,
        )
    }

    /// All stored positions of a device, in fix-time order.
    pub fn positions(&self, device: DeviceId) -> Vec<Position> {
        self.store()
            .device_positions(self.tenant(), device)
            .unwrap()
    }
}

impl Drop for TestServer {
    /// Stops the writer and RocksDB's background work before the process exits, which RocksDB
    /// needs to exit cleanly.
    fn drop(&mut self) {
        self.server.stop_now();
    }
}

/// The real binary as a child process, for kill -9 and CLI tests.
pub struct ChildServer {
    pub child: std::process::Child,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    pub addr: SocketAddr,
    pub cert: PathBuf,
}

/// Writes `<dir>/journeyd.toml` for a child server: loopback, free ports, no scheduled archive
/// jobs, plus `extra`. Returns the config path and the data folder.
pub fn write_child_config(dir: &Path, extra: &str) -> (PathBuf, PathBuf) {
    let data_dir = dir.join("data");
    let config_path = dir.join("journeyd.toml");
    std::fs::write(
        &config_path,
        format!(
            "data_dir = {:?}\n[ingest]\nlisten = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n[archive]\ncompact_every = \"0s\"\nbackup_every = \"0s\"\n{extra}",
            data_dir.display().to_string()
        ),
    )
    .unwrap();
    (config_path, data_dir)
}

/// The `[archive.s3]` section for the S3-compatible server the test command started
/// (scripts/s3-test-server.sh), with a bucket of this test's own.
pub fn s3_section(bucket: &str) -> String {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run the tests with scripts/test.sh, which starts a local S3-compatible server")
        })
    };
    format!(
        "[archive.s3]\nbucket = {bucket:?}\nendpoint = {:?}\nregion = {:?}\npath_style = true\naccess_key_id = {:?}\nsecret_access_key = {:?}\npart_bytes = 5242880\nprefix = \"journeyd/\"\n",
        var("JOURNEYD_TEST_S3_ENDPOINT"),
        var("JOURNEYD_TEST_S3_REGION"),
        var("JOURNEYD_TEST_S3_ACCESS_KEY_ID"),
        var("JOURNEYD_TEST_S3_SECRET_ACCESS_KEY"),
    )
}

/// Creates a bucket on the test S3 server.
pub fn create_bucket(bucket: &str) {
    let config = JourneydConfig::parse(&s3_section(bucket)).unwrap();
    let objects = journeyd::archive_cmd::open_objects(&config).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(objects.ensure_bucket())
        .unwrap();
}

/// A bucket name unique to this test run.
pub fn bucket_name(test: &str) -> String {
    format!("{test}-{}", now_us() % 1_000_000_000).replace('_', "-")
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_journeyd")
}

impl ChildServer {
    /// Starts `journeyd serve` on `dir` (reusing what is there) and waits until it is ready.
    pub fn start(dir: &Path) -> Self {
        Self::start_with_config(dir, "")
    }

    /// Writes the test config (plus `extra` TOML, e.g. an `[archive.s3]` section) and starts.
    pub fn start_with_config(dir: &Path, extra: &str) -> Self {
        let (config_path, data_dir) = write_child_config(dir, extra);
        let ready_path = data_dir.join("ready.json");
        let _ = std::fs::remove_file(&ready_path);
        #[expect(
            clippy::zombie_processes,
            reason = "Drop kills and waits for the child"
        )]
        let child = std::process::Command::new(binary())
            .args(["--log", "warn", "serve", "--config"])
            .arg(&config_path)
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready_path)
                && let Ok(ready) = serde_json::from_str::<Ready>(&text)
                && ready.pid == child.id()
            {
                return Self {
                    child,
                    config_path,
                    data_dir,
                    addr: ready.quic,
                    cert: ready.cert,
                };
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "server not ready in 60 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn code(&self) -> [u8; 32] {
        journeyd_device::parse_code(
            &std::fs::read_to_string(self.data_dir.join("demo-enrolment-code")).unwrap(),
        )
        .unwrap()
    }

    pub fn trust(&self) -> Vec<CertificateDer<'static>> {
        journeyd::bench::load_certs(&self.cert).unwrap()
    }

    /// Runs a journeyd subcommand against this server's config and returns its stdout.
    pub fn command(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(binary())
            .args(["--log", "warn", "--config"])
            .arg(&self.config_path)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "journeyd {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bare protocol client: frames in, frames out, nothing hidden.
pub struct RawClient {
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    pub endpoint: quinn::Endpoint,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr, trust: &[CertificateDer<'static>]) -> Self {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(journeyd_device::client_crypto(trust).unwrap());
        let conn = endpoint.connect(addr, "localhost").unwrap().await.unwrap();
        let (send, recv) = conn.open_bi().await.unwrap();
        Self {
            conn,
            send,
            recv,
            endpoint,
        }
    }

    /// Connects and says hello; returns once the Welcome arrived.
    pub async fn hello(
        addr: SocketAddr,
        trust: &[CertificateDer<'static>],
        cred: &Credential,
    ) -> Self {
        let mut c = Self::connect(addr, trust).await;
        let hello = Hello {
            device_id: cred.device_id,
            secret: cred.secret,
            protocol_version: 1,
            reserved: 0,
        };
        c.send_raw(&frame::encode_frame(FrameKind::Hello, 0, &hello))
            .await;
        let (h, _) = c.read_frame().await.expect("a welcome");
        assert_eq!(h.kind, FrameKind::Welcome);
        c
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.send.write_all(bytes).await.unwrap();
    }

    pub async fn send_batch(&mut self, seq: u64, journey: u64, positions: Vec<Position>) {
        let f = frame::encode_frame(
            FrameKind::Batch,
            seq,
            &journeyd_wire::Batch { journey, positions },
        );
        self.send_raw(&f).await;
    }

    pub async fn read_frame(&mut self) -> Option<(FrameHeader, rkyv::util::AlignedVec)> {
        let mut h = [0u8; HEADER_LEN];
        self.recv.read_exact(&mut h).await.ok()?;
        let header = FrameHeader::decode(&h).ok()?;
        let mut body = vec![0u8; header.body_len as usize];
        self.recv.read_exact(&mut body).await.ok()?;
        Some((header, frame::aligned(&body)))
    }

    pub async fn read_ack(&mut self) -> (u64, Ack) {
        let (h, body) = self.read_frame().await.expect("an ack");
        assert_eq!(h.kind, FrameKind::Ack);
        (h.seq, journeyd_wire::session::decode_ack(&body).unwrap())
    }

    /// The application close code the server closed with.
    pub async fn close_code(&self) -> Option<u64> {
        match self.conn.closed().await {
            quinn::ConnectionError::ApplicationClosed(c) => Some(c.error_code.into_inner()),
            _ => None,
        }
    }
}

/// Great-circle distance in metres.
pub fn haversine_m(a: &Position, b: &Position) -> f64 {
    let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
    let dla = la2 - la1;
    let dlo = (b.lon - a.lon).to_radians();
    let h = (dla / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlo / 2.0).sin().powi(2);
    2.0 * 6_371_008.8 * h.sqrt().asin()
}

pub fn shared_tracks() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/tracks");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "skipping: {} is absent (the real tracks live beside the checkout)",
            p.display()
        );
        None
    }
}

/// What the store must hold, counted here from the parsers' output and the documented rules:
/// per track (one device each), the distinct fix times of the positions the rules keep.
pub fn expected_positions(tracks_dir: &Path) -> (u64, u64) {
    let rules = journeyd_wire::ValidationRules::default();
    let now = now_us();
    let (mut parsed, mut expected) = (0u64, 0u64);
    for file in journeyd::replay::collect_files(&[tracks_dir.to_owned()]) {
        let Ok(read) = journeyd_import::read_file(&file) else {
            continue;
        };
        for track in &read.tracks {
            let mut times = std::collections::HashSet::new();
            for fix in &track.fixes {
                let Some(t) = fix.fix_time_us else { continue };
                parsed += 1;
                let mut p = journeyd::replay::to_position(fix, t);
                if let journeyd_wire::Verdict::Keep(_) = rules.check(&mut p, now) {
                    times.insert(p.fix_time_us);
                }
            }
            expected += times.len() as u64;
        }
    }
    (parsed, expected)
}

/// A small HTTPS client for the query API: one TLS connection per request, real sockets.
pub struct Https {
    pub addr: SocketAddr,
    connector: tokio_rustls::TlsConnector,
}

impl Https {
    pub fn new(addr: SocketAddr, trust: &[CertificateDer<'static>]) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for c in trust {
            roots.add(c.clone()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Self {
            addr,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }

    /// Sends a request; returns the status, the content type and the body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> (u16, String, bytes::Bytes) {
        use http_body_util::BodyExt;
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = self.connector.connect(name, tcp).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                http_body_util::Full::new(bytes::Bytes::from(b.to_string()))
            }
            None => http_body_util::Full::new(bytes::Bytes::new()),
        };
        let resp = sender.send_request(req.body(body).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, ctype, bytes)
    }

    /// A JSON call; the body parsed (or `null` when it is not JSON).
    pub async fn json(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let (status, _, bytes) = self.call(method, path, token, body.as_ref()).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    pub async fn login(&self, tenant: &str, username: &str, password: &str) -> String {
        let (status, body) = self.json("POST", "/api/v1/login", None, Some(serde_json::json!({"tenant": tenant, "username": username, "password": password}))).await;
        assert_eq!(status, 200, "login of {username}: {body}");
        body["token"].as_str().unwrap().to_owned()
    }
}

impl TestServer {
    pub fn api(&self) -> Https {
        Https::new(self.server.api.local_addr(), &self.trust)
    }

    /// The demo tenant admin's password, written at first start.
    pub fn admin_password(&self) -> String {
        std::fs::read_to_string(self.server.config.admin_password_path()).unwrap()
    }

    /// Creates a user directly in the store.
    pub fn add_user(
        &self,
        tenant: TenantId,
        username: &str,
        role: journeyd_store::Role,
        password: &str,
    ) {
        let u = journeyd_api::auth::new_user(tenant, username, role, password, now_us()).unwrap();
        self.store().put_user(&u).unwrap();
    }
}

/// A clock that runs with the system clock plus an offset the test can move forward.
#[derive(Clone, Default)]
pub struct TestClock(pub Arc<std::sync::atomic::AtomicI64>);

impl TestClock {
    pub fn clock(&self) -> journeyd_ingest::Clock {
        let offset = self.0.clone();
        Arc::new(move || now_us() + offset.load(std::sync::atomic::Ordering::SeqCst))
    }

    pub fn advance(&self, us: i64) {
        self.0.fetch_add(us, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The master key of a server's data folder (the embedded default, `<data_dir>/master.key`).
pub fn master_key_of(hot: &Path) -> journeyd_keys::MasterKey {
    let data_dir = hot
        .parent()
        .expect("the hot store lives in the data folder");
    journeyd_keys::MasterKey::load(&journeyd_keys::MasterKeySource::File {
        path: data_dir.join("master.key"),
        create: false,
    })
    .expect("the server made its master key")
}

/// Opens a stopped (or running) server's hot store for reading, with its master key.
pub fn read_only_store(hot: &Path) -> HotStore {
    HotStore::open_read_only(hot, Some(master_key_of(hot))).expect("the hot store opens")
}

/// Opens a stopped server's hot store for writing, with its master key.
pub fn writable_store(hot: &Path) -> HotStore {
    let data_dir = hot
        .parent()
        .expect("the hot store lives in the data folder");
    HotStore::open(&journeyd_store::StoreConfig {
        master_key: journeyd_keys::MasterKeySource::File {
            path: data_dir.join("master.key"),
            create: false,
        },
        ..journeyd_store::StoreConfig::new(hot)
    })
    .expect("the hot store opens")
}

/// An RFC 3339 time in µs.
pub fn at(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_micros()
}

/// Stores one journey (start, positions, end) for a new device of the demo tenant; returns its id.
pub async fn journey(
    ts: &TestServer,
    name: &str,
    journey: u64,
    positions: &[Position],
) -> DeviceId {
    let (mut d, id) = ts.device(name);
    d.start_journey(journey, positions[0].fix_time_us).unwrap();
    d.record(journey, positions).unwrap();
    d.end_journey(journey, positions[positions.len() - 1].fix_time_us)
        .unwrap();
    d.flush().await.unwrap();
    id
}
