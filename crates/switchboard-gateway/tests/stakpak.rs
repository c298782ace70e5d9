//! Switchboard with the real Stakpak: the `switchboard-gateway` binary in front of a real
//! `stakpak autopilot up` (its agent server and its watch scheduler), the model replaced by the
//! test kit's OpenAI-compatible stand-in and Telegram by its fake. It checks what README's "Using
//! Switchboard with `stakpak autopilot`" promises: the scheduler, pointed at Switchboard's
//! 127.0.0.2 address with the `[notifications]` lines `check` prints, reaches the chat with its
//! silent notifications (and the answer to one carries its context) and runs its interactive
//! schedules in the chat, following them to the end; the person's next message continues the
//! session.
//!
//! It needs a `stakpak` binary (0.3.88 was used): `STAKPAK_BIN=/path/to/stakpak cargo test -p
//! switchboard-gateway --test stakpak`. Without one it says so and passes; CI has none (no
//! network to fetch it, and building it takes most of an hour).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use switchboard_testkit::model::FakeModel;
use switchboard_testkit::process::KillOnDrop;
use switchboard_testkit::telegram::FakeTelegram;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-gateway");
const API_TOKEN: &str = "sb_real_stakpak_test_token";
const ADA: i64 = 4242;
/// How long a step may take: the scheduler polls an interactive session every 15 s.
const WAIT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The real `stakpak autopilot`, in a home of its own.
struct Stakpak {
    bin: PathBuf,
    home: PathBuf,
    _process: KillOnDrop,
    url: String,
    token: String,
}

impl Stakpak {
    async fn start(bin: &Path, dir: &Path, model: &FakeModel, gateway: &str) -> Stakpak {
        let home = dir.join("home");
        let stakpak = home.join(".stakpak");
        std::fs::create_dir_all(&stakpak).expect("stakpak's home");
        let check = dir.join("check.sh");
        std::fs::write(&check, "#!/bin/sh\necho 'disk usage 42%'\n").expect("check script");
        make_executable(&check);
        std::fs::write(
            stakpak.join("config.toml"),
            format!(
                "[settings]\nmachine_name = \"switchboard-test\"\nauto_append_gitignore = false\ncollect_telemetry = false\n\n\
                 [profiles.default]\nprovider = \"local\"\nmodel = \"fake/test-model\"\napi_endpoint = \"http://127.0.0.1:9\"\n\n\
                 [profiles.default.providers.fake]\ntype = \"custom\"\napi_endpoint = \"{}/v1\"\napi_key = \"sk-fake\"\n",
                model.url()
            ),
        )
        .expect("config.toml");
        let port = free_port();
        // The schedules never fire by themselves (1 January only); the test triggers them.
        let schedule = |name: &str, interaction: &str| {
            format!(
                "[[schedules]]\nname = \"{name}\"\ncron = \"0 0 1 1 *\"\ncheck = \"{}\"\ntrigger_on = \"success\"\n\
                 prompt = \"Look at the disk and say what to do.\"\ninteraction = \"{interaction}\"\n\n",
                check.display()
            )
        };
        std::fs::write(
            stakpak.join("autopilot.toml"),
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\nshow_token = true\nsandbox_mode = \"ephemeral\"\n\n{gateway}\n{}{}",
                schedule("disk-silent", "silent"),
                schedule("disk-interactive", "interactive"),
            ),
        )
        .expect("autopilot.toml");
        let out = dir.join("stakpak.out");
        let stdout = std::fs::File::create(&out).expect("stakpak's output");
        let stderr = stdout.try_clone().expect("stakpak's output");
        // `--from-service` skips the start-up checks that want Docker; the settings are in the
        // file (any flag makes `up` rewrite it, dropping each schedule's `interaction`).
        let process = KillOnDrop(
            Command::new(bin)
                .args(["autopilot", "up", "--from-service"])
                .env("HOME", &home)
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .expect("start stakpak"),
        );
        let token = wait_until("stakpak's token", || {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            text.split("Bearer ")
                .nth(1)
                .map(|rest| {
                    rest.chars()
                        .take_while(char::is_ascii_alphanumeric)
                        .collect::<String>()
                })
                .filter(|t| t.len() >= 32)
        })
        .await;
        let url = format!("http://127.0.0.1:{port}");
        let http = switchboard_engine::http::client();
        let deadline = Instant::now() + WAIT;
        while !http
            .get(format!("{url}/v1/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < deadline, "stakpak's server never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Stakpak {
            bin: bin.to_owned(),
            home,
            _process: process,
            url,
            token,
        }
    }

    /// Runs `stakpak autopilot …` against the running scheduler; its output.
    fn autopilot(&self, args: &[&str]) -> String {
        let out = Command::new(&self.bin)
            .arg("autopilot")
            .args(args)
            .env("HOME", &self.home)
            .output()
            .expect("run stakpak");
        assert!(out.status.success(), "stakpak autopilot {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The latest run of a schedule, as `schedule history` shows it (colours removed).
    fn last_run(&self, schedule: &str) -> String {
        let history = self.autopilot(&["schedule", "history", schedule, "--limit", "1"]);
        let plain: String = strip_colours(&history);
        plain
            .lines()
            .find(|l| l.contains(schedule) && !l.starts_with("Run history"))
            .unwrap_or_default()
            .to_owned()
    }

    async fn get(&self, path: &str) -> serde_json::Value {
        switchboard_engine::http::client()
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("stakpak answers")
            .json()
            .await
            .expect("json")
    }
}

fn strip_colours(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Waits for a message from the bot to Ada that `check` accepts; returns its text.
async fn in_chat(tg: &FakeTelegram, what: &str, check: impl Fn(&str) -> bool) -> String {
    wait_until(what, || {
        tg.sent_to(ADA)
            .into_iter()
            .map(|s| s.text)
            .find(|t| check(t))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_watch_scheduler_reaches_the_chat_and_runs_interactive_schedules_there() {
    let Some(bin) = std::env::var_os("STAKPAK_BIN").map(PathBuf::from) else {
        eprintln!("skipped: set STAKPAK_BIN to a stakpak binary (0.3.88) to run Switchboard against the real Stakpak");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let model = FakeModel::start().await;
    let tg = FakeTelegram::start().await;
    let api_port = free_port();

    // Switchboard's configuration first, so `check` prints the lines for the scheduler.
    let config = dir.path().join("config.toml");
    let write_config = |server: &str, token: &str| {
        std::fs::write(
            &config,
            format!(
                "[server]\nurl = \"{server}\"\ntoken = \"{token}\"\n\n[api]\nlisten = \"127.0.0.1:{api_port}\"\ntoken = \"{API_TOKEN}\"\n\n\
                 [channels.telegram]\ntoken = \"{}\"\napi_base = \"{}\"\ndm_policy = \"allowlist\"\nallowed_users = [\"{ADA}\"]\n",
                tg.token(),
                tg.api_base()
            ),
        )
        .expect("write the configuration")
    };
    write_config("http://127.0.0.1:9", "");
    let check = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("check")
        .output()
        .expect("run check");
    let printed = String::from_utf8_lossy(&check.stdout).into_owned();
    let lines_start = printed
        .find("[notifications]")
        .unwrap_or_else(|| panic!("check prints the [notifications] lines: {printed}"));
    let notifications: String = printed[lines_start..]
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        notifications.contains(&format!("gateway_url = \"http://127.0.0.2:{api_port}\"")),
        "the scheduler is pointed at the 127.0.0.2 address: {notifications}"
    );
    let notifications =
        notifications.replace("chat_id = \"<chat id>\"", &format!("chat_id = \"{ADA}\""));

    let stakpak = Stakpak::start(&bin, dir.path(), &model, &notifications).await;
    write_config(&stakpak.url, &stakpak.token);
    let stderr = std::fs::File::create(dir.path().join("gateway.log")).expect("log");
    let _gateway = KillOnDrop(
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start the gateway"),
    );
    tg.wait_for("the bot to poll", |tg| tg.active_polls() > 0)
        .await;

    // Ada has written to the bot before (a bot cannot start a chat); the real server answers.
    tg.send_dm(ADA, "Ada", "hello");
    in_chat(&tg, "the agent's answer", |t| t == "model: hello").await;

    // A silent schedule: its notification reaches the chat, and Ada's answer carries its context.
    stakpak.autopilot(&["schedule", "trigger", "disk-silent"]);
    let notice = in_chat(&tg, "the silent schedule's notification", |t| {
        t.starts_with("✅ disk-silent completed")
    })
    .await;
    assert!(notice.contains("Check exit code: 0"), "{notice}");
    tg.send_dm(ADA, "Ada", "what should I do?");
    in_chat(&tg, "the answer to the notification", |t| {
        t == "model: what should I do?"
    })
    .await;
    let told = model
        .requests()
        .into_iter()
        .rev()
        .find(|r| r["messages"].to_string().contains("what should I do?"))
        .expect("the model was asked");
    assert!(
        told["messages"].to_string().contains("disk usage 42%"),
        "the agent got the watch's context with Ada's words"
    );

    // An interactive schedule: the notice and the check output in the chat, then the run in the
    // chat's conversation, followed by the scheduler to its end.
    stakpak.autopilot(&["schedule", "trigger", "disk-interactive"]);
    let notice = in_chat(&tg, "the interactive schedule's notice", |t| {
        t.contains("disk-interactive") && t.contains("manual trigger")
    })
    .await;
    assert!(
        notice.contains("disk usage 42%"),
        "the check output: {notice}"
    );
    in_chat(&tg, "the interactive run's answer", |t| {
        t == "model: disk usage 42%"
    })
    .await;
    let run = wait_until("the scheduler to see the run end", || {
        let run = stakpak.last_run("disk-interactive");
        (run.contains("completed") || run.contains("failed")).then_some(run)
    })
    .await;
    assert!(
        run.contains("completed"),
        "the scheduler closed the run as completed: {run}"
    );

    // Ada's next message continues the schedule's session: the one the scheduler followed (its
    // history shows the id's start), which is her conversation's.
    tg.send_dm(ADA, "Ada", "and now?");
    in_chat(&tg, "the follow-up's answer", |t| t == "model: and now?").await;
    let followed = run
        .split_whitespace()
        .find(|w| w.ends_with("...") && w.contains('-'))
        .map(|w| w.trim_end_matches('.').to_owned())
        .unwrap_or_else(|| panic!("the run names its session: {run}"));
    let conversations: serde_json::Value = switchboard_engine::http::client()
        .get(format!("http://127.0.0.1:{api_port}/v1/gateway/sessions"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("the gateway answers")
        .json()
        .await
        .expect("json");
    let session = conversations
        .to_string()
        .split('"')
        .find(|s| s.starts_with(&followed))
        .unwrap_or_else(|| panic!("no conversation has session {followed}…: {conversations}"))
        .to_owned();
    let messages = stakpak
        .get(&format!("/v1/sessions/{session}/messages"))
        .await
        .to_string();
    assert!(
        messages.contains("Look at the disk") && messages.contains("and now?"),
        "the schedule's prompt and the follow-up are in one session: {messages}"
    );
}
