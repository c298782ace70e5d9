//! The security review's cases against the real `switchboard-gateway` binary, the fakes and the
//! HTTP API, each asserting the safe outcome: the API refuses what a web page or a stranger sends,
//! a stranger's flood does not hold up the owner, a stranger in a private topic gets a code, no
//! log carries the bot token, and the data on disk is private.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use switchboard_testkit::process::KillOnDrop;
use switchboard_testkit::stakpak::FakeStakpak;
use switchboard_testkit::telegram::{FakeTelegram, Person};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-gateway");
const API_TOKEN: &str = "sb_hardening_test_token";
const OWNER: i64 = 4242;
const STRANGER: i64 = 6666;

/// The gateway binary running from a config file in a temporary directory.
struct Gateway {
    process: KillOnDrop,
    dir: tempfile::TempDir,
    api: String,
}

impl Gateway {
    /// Starts the gateway with `[server]`, `[api]` and `rest` (more TOML) and waits for its API.
    async fn start(agent: &FakeStakpak, rest: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = format!(
            "[server]\nurl = \"{}\"\ntoken = \"{}\"\n[api]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{API_TOKEN}\"\n{rest}",
            agent.url(),
            agent.token().unwrap_or_default(),
        );
        std::fs::write(dir.path().join("config.toml"), config).expect("write config");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr file");
        let mut command = Command::new(BIN);
        command
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env_remove("SWITCHBOARD_LOG")
            .stdout(Stdio::null())
            .stderr(stderr);
        for (key, value) in env {
            command.env(key, value);
        }
        let process = KillOnDrop(command.spawn().expect("start the gateway"));
        let gateway = Gateway {
            process,
            dir,
            api: format!("http://127.0.0.1:{port}"),
        };
        gateway.wait_for_api().await;
        gateway
    }

    async fn wait_for_api(&self) {
        let http = switchboard_engine::http::client();
        for _ in 0..400 {
            let up = http
                .get(format!("{}/v1/gateway/status", self.api))
                .bearer_auth(API_TOKEN)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gateway API never answered; stderr: {}", self.stderr());
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Stops the gateway with SIGTERM and waits for it, so its logs are complete.
    async fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.process.0.id().to_string())
            .status();
        for _ in 0..200 {
            if let Ok(Some(_)) = self.process.0.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gateway did not stop on SIGTERM");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn telegram_section(tg: &FakeTelegram, extra: &str) -> String {
    format!(
        "[channels.telegram]\ntoken = \"{}\"\napi_base = \"{}\"\nowners = [\"{OWNER}\"]\n{extra}",
        tg.token(),
        tg.api_base()
    )
}

#[tokio::test]
async fn the_api_refuses_what_a_web_page_or_a_stranger_sends() {
    let agent = FakeStakpak::start().await;
    let mut gateway = Gateway::start(&agent, "", &[]).await;
    let http = switchboard_engine::http::client();
    let status = format!("{}/v1/gateway/status", gateway.api);

    for host in ["rebind.attacker.test", "localhost.", "foo.localhost"] {
        let response = http
            .get(&status)
            .bearer_auth(API_TOKEN)
            .header("Host", host)
            .send()
            .await
            .expect("request");
        assert_eq!(
            response.status(),
            403,
            "a page on {host} (DNS rebinding) gets nothing, token or not"
        );
    }

    let preflight = http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/gateway/send", gateway.api),
        )
        .header("Origin", "http://evil.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("preflight");
    assert!(
        !preflight.status().is_success(),
        "a foreign page's preflight is refused: {}",
        preflight.status()
    );
    let allowing: Vec<String> = preflight
        .headers()
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-allow"))
        .collect();
    assert!(
        allowing.is_empty(),
        "no CORS permission is granted: {allowing:?}"
    );

    let unknown = http
        .get(format!("{}/no/such/route", gateway.api))
        .send()
        .await
        .expect("request");
    assert_eq!(
        unknown.status(),
        401,
        "an unknown path without a token says nothing more"
    );

    // Raw requests that announce a 2 MB body and wait to be asked for it (`Expect:
    // 100-continue`): a refusal comes without reading it, so the answer is never lost to a
    // connection closed mid-upload.
    let without_token = announce_body(&gateway.api, None, 2 * 1024 * 1024);
    assert_eq!(
        without_token, 401,
        "no token: refused before the body is read"
    );
    let with_token = announce_body(&gateway.api, Some(API_TOKEN), 2 * 1024 * 1024);
    assert_eq!(with_token, 413, "a 2 MB body is too large");
    gateway.stop().await;
}

/// POSTs to `/v1/gateway/send` a request that announces a body of `length` bytes and sends it
/// only when asked (`100 Continue`); returns the final status.
fn announce_body(api: &str, token: Option<&str>, length: usize) -> u16 {
    let addr = api.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /v1/gateway/send HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let mut body_sent = false;
    loop {
        let n = stream.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen).to_string();
        let statuses: Vec<u16> = text
            .split("HTTP/1.1 ")
            .skip(1)
            .filter_map(|rest| rest.get(..3)?.parse().ok())
            .collect();
        if let Some(status) = statuses.iter().find(|s| **s != 100) {
            return *status;
        }
        if statuses.contains(&100) && !body_sent {
            // Asked for the body: send it (the server may stop reading), then read the answer.
            body_sent = true;
            let _ = stream.write_all(&vec![b'x'; length]);
        }
    }
    panic!("no answer: {}", String::from_utf8_lossy(&seen));
}

/// The text of the buttons' message in `chat` (the approval prompt), once it is there.
async fn prompt_in(tg: &FakeTelegram, chat: i64) -> i64 {
    tg.wait_for("an approval prompt", |t| {
        t.sent_to(chat).iter().any(|s| s.reply_markup.is_some())
    })
    .await;
    tg.sent_to(chat)
        .into_iter()
        .find(|s| s.reply_markup.is_some())
        .map(|s| s.message_id)
        .expect("a prompt")
}

#[tokio::test]
async fn a_stranger_flooding_the_bot_does_not_hold_up_the_owner() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let rest = format!(
        "[gateway]\napproval_mode = \"ask\"\n{}",
        telegram_section(&tg, "")
    );
    let mut gateway = Gateway::start(&agent, &rest, &[]).await;
    let owner = Person::new(OWNER, "Olga");

    tg.send_dm_from(&owner, r#"USE_TOOL run_command {"command": "ls"}"#);
    let prompt = prompt_in(&tg, OWNER).await;

    // One batch: a hundred messages from a stranger, then the owner's click and message.
    let flood_at = Instant::now();
    for i in 0..100 {
        tg.send_dm(STRANGER, "Mallory", &format!("forwarded message {i}"));
    }
    tg.press(OWNER, prompt, &owner, "Approve");
    tg.send_dm_from(&owner, "ping");
    tg.wait_for("the owner's run and their ping answered", |t| {
        // As the owner sees the chat: the tool's progress line may be edited into the reply.
        let texts = t.shown_to(OWNER);
        texts.iter().any(|t| t.starts_with("done:")) && texts.iter().any(|t| t == "echo: ping")
    })
    .await;
    eprintln!(
        "owner answered {:?} after a stranger's 100 messages",
        flood_at.elapsed()
    );
    tg.wait_for("every message read", |t| t.pending_updates() == 0)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let to_stranger = tg.sent_to(STRANGER);
    assert_eq!(
        to_stranger.len(),
        1,
        "the stranger is told their code once: {to_stranger:#?}"
    );
    assert!(to_stranger[0].text.contains("pairing code is"));
    assert!(
        agent
            .posted_messages()
            .iter()
            .all(|m| !m.text.contains("forwarded message")),
        "nothing of the stranger's reached the agent"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_stranger_in_a_private_topic_gets_a_code_and_the_owner_can_admit_it() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let mut gateway = Gateway::start(&agent, &telegram_section(&tg, ""), &[]).await;
    let stranger = Person::new(STRANGER, "Ann");

    tg.send_private_topic(&stranger, 12, "hello from a topic");
    tg.wait_for("the pairing code", |t| !t.sent_to(STRANGER).is_empty())
        .await;
    let reply = tg.sent_to(STRANGER).remove(0);
    let at = reply.text.find("pairing code is ").expect("a code") + "pairing code is ".len();
    let code = reply.text[at..at + 8].to_string();
    assert_eq!(
        reply.thread_id,
        Some(12),
        "answered in the topic it came from"
    );

    // The owner admits it from a topic of their own private chat too.
    tg.send_private_topic(&Person::new(OWNER, "Olga"), 3, &format!("/admit {code}"));
    tg.wait_for("the owner's confirmation", |t| !t.sent_to(OWNER).is_empty())
        .await;
    assert_eq!(tg.sent_to(OWNER)[0].text, "Done: Ann is admitted.");
    tg.send_private_topic(&stranger, 12, "now?");
    tg.wait_for("the agent's answer", |t| t.sent_to(STRANGER).len() == 2)
        .await;
    assert_eq!(tg.sent_to(STRANGER)[1].text, "echo: now?");
    gateway.stop().await;
}

/// A Telegram "server" that redirects every request to another address with the path (and so
/// the token) in it; counts the requests it answered.
fn redirecting_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 8192];
            let n = stream.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let response = format!(
                "HTTP/1.1 302 Found\r\nLocation: http://{addr}/elsewhere{path}?again={path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(response.as_bytes());
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (format!("http://{addr}"), seen)
}

/// Every form a token could be logged in.
fn token_forms(token: &str) -> Vec<String> {
    let percent: String = token
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let hex_lower: String = token.bytes().map(|b| format!("{b:02x}")).collect();
    let hex_upper = hex_lower.to_uppercase();
    let secret_part = token.split(':').nth(1).unwrap_or(token).to_owned();
    vec![token.to_owned(), percent, hex_lower, hex_upper, secret_part]
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test]
async fn no_log_carries_the_bot_token_and_the_data_is_private() {
    let agent = FakeStakpak::start().await;
    let (base, seen) = redirecting_server();
    let token = "7000001:AAHsecretTOKENvalue_with-parts";
    let rest = format!("[channels.telegram]\ntoken = \"{token}\"\napi_base = \"{base}\"\n");
    let mut gateway = Gateway::start(&agent, &rest, &[("SWITCHBOARD_LOG", "trace")]).await;
    // The bot tries, is redirected, and tries again after a backoff.
    for _ in 0..200 {
        if seen.load(std::sync::atomic::Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the bot called the redirecting server"
    );
    gateway.stop().await;

    let data = gateway.data();
    let mut logs = vec![gateway.dir.path().join("stderr.log")];
    logs.extend(files_under(&data.join("logs")));
    assert!(logs.len() >= 2, "a log file was written: {logs:?}");
    let mut all = String::new();
    for log in &logs {
        all.push_str(&std::fs::read_to_string(log).unwrap_or_default());
    }
    assert!(
        all.contains("TRACE") || all.contains("DEBUG"),
        "the log runs at the level asked for"
    );
    assert!(
        all.contains("telegram"),
        "the channel's trouble is in the log"
    );
    for form in token_forms(token) {
        assert!(!all.contains(&form), "the log holds the token as {form:?}");
    }
    assert!(
        !all.contains("elsewhere"),
        "the redirect was not followed (its target is nowhere in the log either)"
    );

    let mode = |path: &Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&data), 0o700, "the data directory is the user's alone");
    assert_eq!(mode(&data.join("logs")), 0o700);
    for file in files_under(&data) {
        assert_eq!(mode(&file), 0o600, "{} is the user's alone", file.display());
    }
}
