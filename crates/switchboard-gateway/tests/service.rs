//! `switchboard-gateway service install | uninstall` with the real binary: the unit lands in the
//! user's systemd directory, systemctl is asked to reload and to enable and start it (a recording
//! stand-in on `PATH`: there is no user systemd here), `systemd-analyze verify` accepts the unit
//! where it is installed, the unit's `ExecStart` really runs the gateway on the same
//! configuration (a path with a space in it), and uninstall takes it away.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use switchboard_testkit::process::KillOnDrop;
use switchboard_testkit::stakpak::FakeStakpak;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-gateway");

/// A `systemctl` that records its arguments, one call per line.
fn fake_systemctl(bin: &Path, log: &Path) {
    let script = format!("#!/bin/sh\necho \"$*\" >> '{}'\nexit 0\n", log.display());
    let path = bin.join("systemctl");
    std::fs::write(&path, script).expect("write systemctl");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

/// The words of an `ExecStart=` line as systemd reads them: double-quoted, `\\`, `\"` and `%%`.
fn exec_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut word = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => word.extend(chars.next()),
                '%' => {
                    chars.next();
                    word.push('%');
                }
                c => word.push(c),
            }
        }
        words.push(word);
    }
    words
}

#[tokio::test]
async fn install_writes_a_unit_that_runs_the_gateway_and_uninstall_removes_it() {
    let agent = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("my home");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let calls = dir.path().join("systemctl.log");
    fake_systemctl(&bin, &calls);
    let config = home.join("switchboard config.toml");
    std::fs::create_dir_all(&home).expect("home");
    std::fs::write(
        &config,
        format!(
            "[server]\nurl = \"{}\"\ntoken = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n",
            agent.url(),
            agent.token().unwrap_or_default()
        ),
    )
    .expect("write config");
    let data = home.join("data");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |args: &[&str]| {
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .env("HOME", &home)
            .env_remove("XDG_CONFIG_HOME")
            .env("PATH", &path)
            .output()
            .expect("run the gateway")
    };

    let installed = run(&["service", "install"]);
    assert!(
        installed.status.success(),
        "install: {}",
        String::from_utf8_lossy(&installed.stderr)
    );
    let unit = home.join(".config/systemd/user/switchboard-gateway.service");
    let text = std::fs::read_to_string(&unit).expect("the unit is written");
    let recorded = std::fs::read_to_string(&calls).expect("systemctl was called");
    assert_eq!(
        recorded.lines().collect::<Vec<_>>(),
        [
            "--user daemon-reload",
            "--user enable --now switchboard-gateway.service"
        ]
    );

    // systemd itself reads the unit without a complaint, where its tools are installed.
    if let Ok(verify) = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
    {
        assert!(
            verify.status.success(),
            "systemd-analyze verify: {}{}",
            String::from_utf8_lossy(&verify.stdout),
            String::from_utf8_lossy(&verify.stderr)
        );
    }

    // What the unit runs is the gateway on this configuration: it starts and stops cleanly.
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let words = exec_words(exec);
    assert_eq!(
        words[1..],
        [
            "--config".to_owned(),
            config.display().to_string(),
            "--data-dir".to_owned(),
            data.display().to_string(),
            "run".to_owned()
        ]
    );
    let log = dir.path().join("service.log");
    let mut service = KillOnDrop(
        Command::new(&words[0])
            .args(&words[1..])
            .env("HOME", &home)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("run the unit's command"),
    );
    let started = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("switchboard-gateway running")
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the unit's command did not start the gateway: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = Command::new("kill")
        .arg(service.0.id().to_string())
        .status();
    let status = service.0.wait().expect("wait");
    assert!(status.success(), "SIGTERM stops it cleanly: {status}");

    let removed = run(&["service", "uninstall"]);
    assert!(removed.status.success());
    assert!(!unit.exists(), "the unit is gone");
    let recorded = std::fs::read_to_string(&calls).expect("systemctl log");
    assert!(recorded.contains("--user disable --now switchboard-gateway.service"));
    assert!(recorded.trim_end().ends_with("--user daemon-reload"));
}

#[tokio::test]
async fn install_without_a_configuration_says_what_to_do_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .args(["service", "install", "--no-start"])
        .env("HOME", dir.path())
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no configuration at") && stderr.contains("switchboard-gateway check"),
        "{stderr}"
    );
    assert!(!dir.path().join(".config/systemd").exists());
}
