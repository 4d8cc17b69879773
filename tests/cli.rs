//! The command line as an operator uses it: offline administration and clear config errors.

mod support;

use support::*;

fn journeyd(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(binary())
        .args(["--log", "warn", "--config"])
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn offline_administration_prints_credentials_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path());
    let config = server.config_path.clone();
    // With the server running, offline commands refuse and say why.
    let busy = journeyd(&config, &["device", "add", "--name", "van"]);
    assert!(!busy.status.success());
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("stop journeyd serve first"),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
    server.kill9();

    let out = journeyd(&config, &["device", "add", "--name", "van 7"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let token = text
        .split_whitespace()
        .find(|w| w.starts_with("jd1."))
        .expect("a credential");
    let credential = journeyd_device::Credential::parse(token).unwrap();
    let listed = String::from_utf8(journeyd(&config, &["device", "list"]).stdout).unwrap();
    assert!(
        listed.contains("van 7") && !listed.contains(&hex::encode(credential.secret)),
        "only a hash is kept"
    );

    let out = journeyd(
        &config,
        &["user", "add", "--username", "rita", "--role", "reporter"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("password (shown once)")
    );
    let again = journeyd(
        &config,
        &["user", "add", "--username", "rita", "--role", "reporter"],
    );
    assert!(!again.status.success());
    let bad_role = journeyd(
        &config,
        &["user", "add", "--username", "x", "--role", "boss"],
    );
    assert!(
        String::from_utf8_lossy(&bad_role.stderr)
            .contains("expected reporter, investigator or admin")
    );

    assert!(
        journeyd(&config, &["device", "block", "1"])
            .status
            .success()
    );
    assert!(
        String::from_utf8(journeyd(&config, &["device", "list"]).stdout)
            .unwrap()
            .contains("blocked")
    );

    // The device's credential works against the restarted server, until it is blocked.
    let server = ChildServer::start(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut d = journeyd_device::Device::open(
            journeyd_device::DeviceConfig::new(server.addr, server.trust()),
            journeyd_device::Outbox::memory(),
            journeyd_device::Identity::Credential(credential),
        )
        .unwrap();
        d.record(
            1,
            &[journeyd_wire::Position::new(now_us() - MINUTE, 1.0, 1.0)],
        )
        .unwrap();
        assert_eq!(
            d.flush().await.unwrap_err().refusal(),
            Some(journeyd_wire::CloseCode::DeviceBlocked)
        );
    });
}

#[test]
fn config_mistakes_name_the_key_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    for (text, expect) in [
        (
            "[ingest]\nlisten = \"127.0.0.1:0\"\nidel_timeout = \"5s\"\n",
            "idel_timeout",
        ),
        (
            "[ingest]\nmax_batch_positions = \"many\"\n",
            "max_batch_positions",
        ),
        ("[store]\nsync = yes\n", "line 2"),
        ("[api]\nlockout = \"forever\"\n", "lockout"),
    ] {
        std::fs::write(&path, text).unwrap();
        let out = journeyd(&path, &["serve"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(expect) && err.contains("bad.toml"),
            "for {text:?}: {err}"
        );
    }
    let out = journeyd(&dir.path().join("missing.toml"), &["serve"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn enrolling_before_the_first_start_keeps_the_enrolment_code() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("journeyd.toml");
    let data = dir.path().join("data");
    std::fs::write(&config, format!("data_dir = {:?}\n[ingest]\nlisten = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n", data.display().to_string())).unwrap();
    let stats = journeyd(&config, &["stats"]);
    assert!(
        String::from_utf8_lossy(&stats.stderr).contains("no hot store"),
        "{}",
        String::from_utf8_lossy(&stats.stderr)
    );
    assert!(!data.join("hot").exists(), "a failed stats creates nothing");
    assert!(
        journeyd(&config, &["device", "add", "--name", "first"])
            .status
            .success()
    );
    assert!(data.join("demo-enrolment-code").exists() && data.join("demo-admin-password").exists());
    let server = ChildServer::start(dir.path());
    let summary = server.command(&[
        "replay",
        "--json",
        dir.path().join("journeyd.toml").to_str().unwrap(),
    ]);
    // A config file is no track: the replay names it and goes on; the enrolment code was found.
    assert!(summary.contains("journeyd.toml"), "{summary}");
}
