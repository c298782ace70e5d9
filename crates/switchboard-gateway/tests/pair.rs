//! The headless binary end to end: `switchboard-gateway` runs against the fake agent server and the
//! fake Telegram; a stranger gets a pairing code; `switchboard-gateway pair approve` (a second
//! process, while the first runs) admits them; their next message reaches the agent; SIGTERM stops
//! the gateway cleanly.

use std::process::{Command, Stdio};
use std::time::Duration;

use switchboard_testkit::process::KillOnDrop;
use switchboard_testkit::stakpak::FakeStakpak;
use switchboard_testkit::telegram::FakeTelegram;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-gateway");

#[tokio::test]
async fn a_code_admitted_with_the_pair_subcommand_lets_the_next_message_through() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "[server]\nurl = \"{}\"\ntoken = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n[channels.telegram]\ntoken = \"{}\"\napi_base = \"{}\"\n",
            agent.url(),
            agent.token().unwrap_or_default(),
            tg.token(),
            tg.api_base()
        ),
    )
    .expect("write config");
    let mut gateway = KillOnDrop(
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the gateway"),
    );

    tg.send_dm(1111, "Ann", "hello");
    tg.wait_for("the pairing code", |t| !t.sent_to(1111).is_empty())
        .await;
    let reply = tg.sent_to(1111).remove(0).text;
    let at = reply.find("pairing code is ").expect("a code") + "pairing code is ".len();
    let code = reply[at..at + 8].to_string();
    assert!(
        agent.posted_messages().is_empty(),
        "nothing reached the agent before admission"
    );

    let list = Command::new(BIN)
        .args(["pair", "list", "--data-dir"])
        .arg(&data)
        .output()
        .expect("pair list");
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed.contains(&code) && listed.contains("Ann") && listed.contains("hello"),
        "{listed}"
    );

    let wrong = Command::new(BIN)
        .args(["pair", "approve", "telegram", "ZZZZZZZZ", "--data-dir"])
        .arg(&data)
        .output()
        .expect("pair");
    assert!(!wrong.status.success(), "an unknown code is an error");

    let approve = Command::new(BIN)
        .args([
            "pair",
            "approve",
            "telegram",
            &code.to_lowercase(),
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .expect("pair approve");
    assert!(
        approve.status.success(),
        "{}",
        String::from_utf8_lossy(&approve.stderr)
    );
    assert!(String::from_utf8_lossy(&approve.stdout).contains("Ann (1111) on telegram is admitted"));

    tg.send_dm(1111, "Ann", "let's go");
    tg.wait_for("the agent's answer", |t| t.sent_to(1111).len() == 2)
        .await;
    assert_eq!(tg.sent_to(1111)[1].text, "echo: let's go");

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(gateway.0.id().to_string())
        .status();
    let mut stopped = None;
    for _ in 0..200 {
        if let Ok(Some(status)) = gateway.0.try_wait() {
            stopped = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = gateway.0.kill();
    assert!(
        stopped.is_some_and(|s| s.success()),
        "SIGTERM stops the gateway cleanly: {stopped:?}"
    );
}
