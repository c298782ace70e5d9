//! Soak: the real `switchboard-gateway` binary, as a separate process, against the fake agent server
//! and each platform's fake, with steady chat traffic for a few minutes. Prints how many messages
//! were answered, lost or duplicated, and the gateway's memory over time; ends with SIGTERM and
//! checks the process stops cleanly.
//!
//! `cargo bench -p switchboard-gateway --bench soak -- [--secs 180] [--rate 10] [--platform telegram]`

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchboard_testkit::discord::FakeDiscord;
use switchboard_testkit::slack::FakeSlack;
use switchboard_testkit::stakpak::FakeStakpak;
use switchboard_testkit::telegram::FakeTelegram;

const USERS: usize = 20;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Platform {
    Telegram,
    Slack,
    Discord,
}

/// One platform's fake, seen as a chat: send a DM as a user, read what the bot posted.
enum Chat {
    Telegram(FakeTelegram),
    Slack(FakeSlack),
    Discord(FakeDiscord),
}

impl Chat {
    fn config(&self) -> String {
        match self {
            Chat::Telegram(tg) => format!("[channels.telegram]\ndm_policy = \"open\"\ntoken = \"{}\"\napi_base = \"{}\"\n", tg.token(), tg.api_base()),
            Chat::Slack(s) => format!(
                "[channels.slack]\ndm_policy = \"open\"\nbot_token = \"{}\"\napp_token = \"{}\"\napi_base = \"{}\"\n",
                s.bot_token(),
                s.app_token(),
                s.api_base()
            ),
            Chat::Discord(d) => format!("[channels.discord]\ndm_policy = \"open\"\ntoken = \"{}\"\napi_base = \"{}\"\n", d.token(), d.api_base()),
        }
    }

    fn send(&self, user: usize, text: &str) {
        match self {
            Chat::Telegram(tg) => {
                tg.send_dm(10_000 + user as i64, &format!("user{user}"), text);
            }
            Chat::Slack(s) => {
                s.send_dm(&format!("U{user:05}"), text);
            }
            Chat::Discord(d) => {
                d.send_dm(
                    &format!("{}", 900_000_000_000_000_000u64 + user as u64),
                    text,
                );
            }
        }
    }

    /// Every text the bot posted (replies, and nothing else in a DM-only soak).
    fn posted(&self) -> Vec<String> {
        match self {
            Chat::Telegram(tg) => (0..USERS)
                .flat_map(|u| tg.sent_to(10_000 + u as i64))
                .map(|s| s.text)
                .collect(),
            Chat::Slack(s) => s.posted().into_iter().map(|p| p.text).collect(),
            Chat::Discord(d) => d.posted().into_iter().map(|p| p.content).collect(),
        }
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let secs: u64 = arg("--secs").and_then(|s| s.parse().ok()).unwrap_or(180);
    let rate: u64 = arg("--rate").and_then(|s| s.parse().ok()).unwrap_or(10);
    let platforms: Vec<Platform> = match arg("--platform").as_deref() {
        Some("telegram") => vec![Platform::Telegram],
        Some("slack") => vec![Platform::Slack],
        Some("discord") => vec![Platform::Discord],
        _ => vec![Platform::Telegram, Platform::Slack, Platform::Discord],
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for platform in platforms {
        runtime.block_on(soak(platform, Duration::from_secs(secs), rate));
    }
}

fn start_gateway(dir: &Path, config: &str) -> Child {
    let path = dir.join("config.toml");
    std::fs::write(&path, config).expect("write config");
    Command::new(env!("CARGO_BIN_EXE_switchboard-gateway"))
        .arg("--config")
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("SWITCHBOARD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start switchboard-gateway")
}

async fn soak(platform: Platform, duration: Duration, rate: u64) {
    let agent = FakeStakpak::start().await;
    let chat = match platform {
        Platform::Telegram => Chat::Telegram(FakeTelegram::start().await),
        Platform::Slack => Chat::Slack(FakeSlack::start().await),
        Platform::Discord => Chat::Discord(FakeDiscord::start().await),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "[server]\nurl = \"{}\"\ntoken = \"{}\"\n[gateway]\napproval_mode = \"allow_all\"\n[api]\nlisten = \"127.0.0.1:0\"\n{}",
        agent.url(),
        agent.token().unwrap_or_default(),
        chat.config()
    );
    let mut gateway = start_gateway(dir.path(), &config);
    let pid = gateway.id();

    // Warm up: one message, answered, before measuring.
    chat.send(0, &format!("warmup-{platform:?}"));
    wait_until(Duration::from_secs(30), || !chat.posted().is_empty()).await;
    let baseline = rss_kib(pid).unwrap_or(0);

    let started = Instant::now();
    let interval = Duration::from_micros(1_000_000 / rate.max(1));
    let mut sent = Vec::new();
    let mut samples = vec![(0u64, baseline)];
    let mut next_sample = Duration::from_secs(15);
    let mut n = 0usize;
    while started.elapsed() < duration {
        let text = format!("soak-{platform:?}-{n}");
        chat.send(n % USERS, &text);
        sent.push(text);
        n += 1;
        if started.elapsed() >= next_sample {
            samples.push((started.elapsed().as_secs(), rss_kib(pid).unwrap_or(0)));
            next_sample += Duration::from_secs(15);
        }
        tokio::time::sleep(interval).await;
    }
    let answered = |posted: &[String]| -> HashMap<String, usize> {
        let mut seen = HashMap::new();
        for text in posted {
            for part in text.trim_start_matches("echo: ").split("\n\n") {
                *seen.entry(part.to_string()).or_insert(0) += 1;
            }
        }
        seen
    };
    wait_until(Duration::from_secs(120), || {
        let seen = answered(&chat.posted());
        sent.iter().all(|t| seen.contains_key(t))
    })
    .await;
    let drained = started.elapsed();
    samples.push((drained.as_secs(), rss_kib(pid).unwrap_or(0)));
    let seen = answered(&chat.posted());
    let lost = sent.iter().filter(|t| !seen.contains_key(*t)).count();
    let duplicated = sent
        .iter()
        .filter(|t| seen.get(*t).is_some_and(|c| *c > 1))
        .count();

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let stopped = Instant::now();
    let status = loop {
        if let Ok(Some(status)) = gateway.try_wait() {
            break Some(status);
        }
        if stopped.elapsed() > Duration::from_secs(20) {
            let _ = gateway.kill();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let rss: Vec<String> = samples
        .iter()
        .map(|(t, kib)| format!("{t}s:{:.1}MB", *kib as f64 / 1024.0))
        .collect();
    println!(
        "soak {platform:?}: {} messages from {USERS} users at {rate}/s for {}s (all answered after {:.0}s); lost {lost}, duplicated {duplicated}, agent runs {}; gateway RSS {}; SIGTERM -> {} in {:.2}s",
        sent.len(),
        duration.as_secs(),
        drained.as_secs_f64(),
        agent.runs_started(),
        rss.join(" "),
        match status {
            Some(s) if s.success() => "clean exit".to_string(),
            Some(s) => format!("exit {s}"),
            None => "killed after 20s".to_string(),
        },
        stopped.elapsed().as_secs_f64(),
    );
    assert_eq!(lost, 0, "no message may be lost");
    assert_eq!(duplicated, 0, "no message may be answered twice");
}

async fn wait_until(limit: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
