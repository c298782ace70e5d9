//! Tokens end to end, through the real `switchboard-gateway` binary: a configuration written with
//! every token in it is started against the fake agent server and the three fake platforms, with
//! its own D-Bus session bus and a real Secret Service (gnome-keyring) on it. The tokens move to
//! the keyring and the file keeps references; messages flow on every platform, also after a
//! restart that reads the tokens back from the keyring; and no token appears in any log line, any
//! gateway API response (including refusals) or the output of `check`. Without a keyring the
//! tokens go to a file only the user can read, and move to the keyring once one is there.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use switchboard_testkit::discord::{Failure, FakeDiscord};
use switchboard_testkit::process::KillOnDrop;
use switchboard_testkit::slack::FakeSlack;
use switchboard_testkit::stakpak::FakeStakpak;
use switchboard_testkit::telegram::FakeTelegram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-gateway");
const API_TOKEN: &str = "sb_api_token_known_to_the_test_7f3a";
const SETTINGS: [&str; 5] = [
    "server.token",
    "channels.telegram.token",
    "channels.slack.bot_token",
    "channels.slack.app_token",
    "channels.discord.token",
];

/// A private D-Bus session bus, optionally with gnome-keyring's Secret Service on it, unlocked.
struct SessionBus {
    dir: tempfile::TempDir,
    address: String,
    daemons: Vec<KillOnDrop>,
}

impl SessionBus {
    fn start(with_keyring: bool) -> SessionBus {
        let dir = tempfile::tempdir().expect("tempdir");
        // A bus of its own that starts nothing by itself: D-Bus activation would race the
        // keyring started below with a second, locked one.
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" \
                 \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
                 <busconfig><type>session</type><listen>unix:path={}</listen>\
                 <policy context=\"default\"><allow send_destination=\"*\" eavesdrop=\"true\"/>\
                 <allow eavesdrop=\"true\"/><allow own=\"*\"/></policy></busconfig>\n",
                dir.path().join("bus").display()
            ),
        )
        .expect("bus config");
        let mut bus = Command::new("dbus-daemon")
            .args(["--nofork", "--print-address=1"])
            .arg(format!("--config-file={}", config.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon is missing; run scripts/setup.sh (package dbus)");
        let mut address = String::new();
        BufReader::new(bus.stdout.take().expect("stdout"))
            .read_line(&mut address)
            .expect("the bus address");
        let mut session = SessionBus {
            address: address.trim().to_owned(),
            dir,
            daemons: vec![KillOnDrop(bus)],
        };
        if with_keyring {
            session.start_keyring();
        }
        session
    }

    fn env(&self, command: &mut Command) {
        let home = self.dir.path();
        command
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .env("HOME", home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_RUNTIME_DIR", home.join("run"))
            .env_remove("SWITCHBOARD_KEYRING");
    }

    fn start_keyring(&mut self) {
        let run = self.dir.path().join("run");
        std::fs::create_dir_all(&run).expect("runtime dir");
        let mut command = Command::new("gnome-keyring-daemon");
        command
            .args(["--foreground", "--unlock", "--components=secrets"])
            .arg(format!(
                "--control-directory={}",
                run.join("keyring").display()
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.env(&mut command);
        let mut keyring = command.spawn().expect(
            "gnome-keyring-daemon is missing; run scripts/setup.sh (package gnome-keyring)",
        );
        // The login keyring's password, then end of input: it is created and unlocked with it.
        let mut stdin = keyring.stdin.take().expect("stdin");
        stdin.write_all(b"test-password").expect("password");
        drop(stdin);
        self.daemons.push(KillOnDrop(keyring));
        // Ready once the login keyring is the default one.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut ask = Command::new("dbus-send");
            ask.args([
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.secrets",
                "/org/freedesktop/secrets",
                "org.freedesktop.Secret.Service.ReadAlias",
                "string:default",
            ]);
            self.env(&mut ask);
            let answer = ask.output().expect("dbus-send (package dbus)");
            if String::from_utf8_lossy(&answer.stdout).contains("/collection/") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the login keyring did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `secret-tool` (libsecret, independent of Switchboard) on this bus; None when it fails.
    fn secret_tool(&self, args: &[&str]) -> Option<String> {
        let mut command = Command::new("secret-tool");
        command.args(args);
        self.env(&mut command);
        let output = command
            .output()
            .expect("secret-tool is missing; run scripts/setup.sh (package libsecret-tools)");
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn lookup(&self, config: &Path, setting: &str) -> Option<String> {
        let config = config.display().to_string();
        self.secret_tool(&[
            "lookup",
            "application",
            "switchboard",
            "config",
            &config,
            "setting",
            setting,
        ])
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        // The keyring before its bus.
        while self.daemons.pop().is_some() {}
    }
}

/// The fakes, and the tokens the test knows.
struct World {
    agent: FakeStakpak,
    tg: FakeTelegram,
    slack: FakeSlack,
    discord: FakeDiscord,
}

impl World {
    async fn start() -> World {
        World {
            agent: FakeStakpak::start().await,
            tg: FakeTelegram::start().await,
            slack: FakeSlack::start().await,
            discord: FakeDiscord::start().await,
        }
    }

    /// Every token, by setting, as the configuration first holds them.
    fn tokens(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "server.token",
                self.agent.token().expect("the fake has a token"),
            ),
            ("channels.telegram.token", self.tg.token()),
            ("channels.slack.bot_token", self.slack.bot_token()),
            ("channels.slack.app_token", self.slack.app_token()),
            ("channels.discord.token", self.discord.token()),
        ]
    }

    /// Strings that must never be shown: each token, the secret half of the Telegram token, and
    /// the gateway API's token.
    fn never_shown(&self) -> Vec<String> {
        let mut secrets: Vec<String> = self.tokens().into_iter().map(|(_, t)| t).collect();
        let telegram = self.tg.token();
        if let Some((_, secret)) = telegram.split_once(':') {
            secrets.push(secret.to_owned());
        }
        secrets.push(API_TOKEN.to_owned());
        secrets
    }

    fn config(&self, port: u16) -> String {
        format!(
            "# Written by hand, tokens and all.\n\
             [server]\nurl = \"{}\"\ntoken = \"{}\" # from the server's admin page\n\
             [gateway]\napproval_mode = \"allow_all\"\n\
             [api]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{API_TOKEN}\"\n\
             [channels.telegram]\ndm_policy = \"open\"\ntoken = \"{}\" # @BotFather\napi_base = \"{}\"\n\
             [channels.slack]\ndm_policy = \"open\"\nbot_token = \"{}\"\napp_token = \"{}\"\napi_base = \"{}\"\n\
             [channels.discord]\ndm_policy = \"open\"\ntoken = \"{}\"\napi_base = \"{}\"\n",
            self.agent.url(),
            self.agent.token().expect("token"),
            self.tg.token(),
            self.tg.api_base(),
            self.slack.bot_token(),
            self.slack.app_token(),
            self.slack.api_base(),
            self.discord.token(),
            self.discord.api_base(),
        )
    }

    /// One message on each platform, answered by the agent.
    async fn talk(&self, round: &str) {
        let text = format!("hello {round}");
        let expected = format!("echo: {text}");
        // Discord delivers only to a connected bot; the others keep messages until asked.
        self.discord
            .wait_for("the bot's gateway connection", |d| d.is_connected())
            .await;
        self.tg.send_dm(4242, "Ann", &text);
        self.slack.send_dm("U04242", &text);
        self.discord.send_dm("904242", &text);
        self.tg
            .wait_for("the Telegram reply", |t| {
                t.sent_to(4242).iter().any(|s| s.text == expected)
            })
            .await;
        self.slack
            .wait_for("the Slack reply", |s| {
                s.posted().iter().any(|p| p.text == expected)
            })
            .await;
        self.discord
            .wait_for("the Discord reply", |d| {
                d.posted().iter().any(|p| p.content == expected)
            })
            .await;
    }
}

struct Install {
    dir: tempfile::TempDir,
}

impl Install {
    fn new(config: &str) -> Install {
        let dir = tempfile::tempdir().expect("tempdir");
        let install = Install { dir };
        std::fs::write(install.config(), config).expect("write config");
        install
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, bus: Option<&SessionBus>) -> Command {
        let mut command = Command::new(BIN);
        command
            .arg("--config")
            .arg(self.config())
            .arg("--data-dir")
            .arg(self.data())
            .env("SWITCHBOARD_LOG", "debug");
        match bus {
            Some(bus) => bus.env(&mut command),
            None => {
                command
                    .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
                    .env_remove("SWITCHBOARD_KEYRING");
            }
        }
        command
    }

    fn start(&self, bus: Option<&SessionBus>, round: &str) -> KillOnDrop {
        let stderr = std::fs::File::create(self.dir.path().join(format!("stderr-{round}.log")))
            .expect("stderr file");
        KillOnDrop(
            self.command(bus)
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("start the gateway"),
        )
    }

    /// Everything the gateway wrote: its stderr of every run and its log files.
    fn all_logs(&self) -> String {
        let mut text = String::new();
        for dir in [self.dir.path().to_owned(), self.data().join("logs")] {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                if path.is_file() && (name.ends_with(".log") || dir.ends_with("logs")) {
                    let mut file = std::fs::File::open(&path).expect("open log");
                    file.read_to_string(&mut text).expect("read log");
                }
            }
        }
        text
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One raw HTTP/1.1 exchange, so the test controls every header; the whole response as text.
async fn http(port: u16, request: String) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stream = loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the gateway API never listened: {e}"),
        }
    };
    // A refused request may be answered and closed before all of it is sent; what came back
    // is the answer either way.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    text
}

/// Every route, and every refusal the API gives; the responses, for the leak scan.
async fn exercise_api(port: u16) -> Vec<String> {
    let auth = format!("Bearer {API_TOKEN}");
    let host = format!("127.0.0.1:{port}");
    let good = [("Host", host.as_str()), ("Authorization", auth.as_str())];
    let mut responses = Vec::new();
    for path in [
        "/v1/gateway/status",
        "/v1/gateway/channels",
        "/v1/gateway/sessions",
        "/v1/gateway/nothing-here",
    ] {
        responses.push(http(port, request("GET", path, &good, "")).await);
    }
    let json = [
        ("Host", host.as_str()),
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let sent = http(
        port,
        request(
            "POST",
            "/v1/gateway/send",
            &json,
            r#"{"channel":"telegram","target":"4242","text":"a watch says hi"}"#,
        ),
    )
    .await;
    responses.push(sent);
    let missing_token = http(
        port,
        request(
            "GET",
            "/v1/gateway/channels",
            &[("Host", host.as_str())],
            "",
        ),
    )
    .await;
    assert!(missing_token.starts_with("HTTP/1.1 401"), "{missing_token}");
    let wrong_token = http(
        port,
        request(
            "GET",
            "/v1/gateway/channels",
            &[("Host", host.as_str()), ("Authorization", "Bearer nope")],
            "",
        ),
    )
    .await;
    assert!(wrong_token.starts_with("HTTP/1.1 401"), "{wrong_token}");
    let foreign_host = http(
        port,
        request(
            "GET",
            "/v1/gateway/channels",
            &[
                ("Host", "evil.example:80"),
                ("Authorization", auth.as_str()),
            ],
            "",
        ),
    )
    .await;
    assert!(foreign_host.starts_with("HTTP/1.1 403"), "{foreign_host}");
    let oversized = http(
        port,
        request(
            "POST",
            "/v1/gateway/send",
            &json,
            &"x".repeat(2 * 1024 * 1024),
        ),
    )
    .await;
    assert!(oversized.starts_with("HTTP/1.1 413"), "{oversized}");
    let malformed = http(
        port,
        request("POST", "/v1/gateway/send", &json, "{\"channel\":"),
    )
    .await;
    assert!(malformed.starts_with("HTTP/1.1 400"), "{malformed}");
    responses.extend([
        missing_token,
        wrong_token,
        foreign_host,
        oversized,
        malformed,
    ]);
    let channels = &responses[1];
    for name in ["telegram", "slack", "discord"] {
        assert!(
            channels.contains(name),
            "/channels lists {name}: {channels}"
        );
    }
    responses
}

fn stop(mut gateway: KillOnDrop) {
    let gateway = &mut gateway.0;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(gateway.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(status)) = gateway.try_wait() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = gateway.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.is_some_and(|s| s.success()),
        "clean stop: {status:?}"
    );
}

fn assert_never_shown(world: &World, place: &str, text: &str) {
    for secret in world.never_shown() {
        assert!(
            !text.contains(&secret),
            "a token appears in {place}: …{}…",
            text.find(&secret)
                .map(|at| &text[at.saturating_sub(80)..(at + secret.len() + 20).min(text.len())])
                .unwrap_or_default()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_move_to_the_keyring_and_never_show_in_logs_or_the_api() {
    let bus = SessionBus::start(true);
    let world = World::start().await;
    let port = free_port();
    let install = Install::new(&world.config(port));

    let gateway = install.start(Some(&bus), "first");
    world.talk("first").await;
    // Trouble on every side, so error paths get logged too.
    world
        .tg
        .fail_next("sendMessage", 500, "Internal Server Error", None);
    world
        .discord
        .fail_next("POST", "/messages", Failure::Status(502), 1);
    world.slack.drop_sockets();
    world.talk("after trouble").await;
    let responses = exercise_api(port).await;
    world
        .tg
        .wait_for("the watch notification", |t| {
            t.sent_to(4242)
                .iter()
                .any(|s| s.text.contains("a watch says hi"))
        })
        .await;
    stop(gateway);

    // The file keeps references, its comments, and no token.
    let config = std::fs::read_to_string(install.config()).expect("config");
    for setting in SETTINGS {
        let key = setting.rsplit('.').next().expect("key");
        assert!(
            config.contains(&format!("{key} = \"keyring:{setting}\"")),
            "{setting} is a reference: {config}"
        );
    }
    assert!(config.contains("# from the server's admin page") && config.contains("# @BotFather"));
    assert!(
        config.contains(API_TOKEN),
        "the API token stays in the file for scripts"
    );
    for (setting, token) in world.tokens() {
        assert!(!config.contains(&token), "{setting} left the file");
        // libsecret, not Switchboard, finds it in the keyring.
        let stored = bus.lookup(&install.config(), setting);
        assert_eq!(
            stored.as_deref(),
            Some(token.as_str()),
            "{setting} is in the keyring"
        );
    }
    assert!(
        !install.dir.path().join("secrets.toml").exists(),
        "no fallback file while a keyring is there"
    );

    // A restart reads the tokens back from the keyring.
    let gateway = install.start(Some(&bus), "second");
    world.talk("after restart").await;
    let more = exercise_api(port).await;
    stop(gateway);

    let check = install
        .command(Some(&bus))
        .arg("check")
        .output()
        .expect("check");
    let check_out = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "{check_out}");

    let logs = install.all_logs();
    assert!(
        logs.contains("moved a token out of the configuration file") && logs.contains("DEBUG"),
        "the scan covers real, detailed logs"
    );
    assert_never_shown(&world, "the logs", &logs);
    for response in responses.iter().chain(&more) {
        assert_never_shown(&world, "an API response", response);
    }
    assert_never_shown(&world, "the output of check", &check_out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_keyring_tokens_go_to_a_private_file_and_move_to_the_keyring_later() {
    let world = World::start().await;
    let port = free_port();
    let install = Install::new(&world.config(port));

    let gateway = install.start(None, "no-keyring");
    world.talk("no keyring").await;
    stop(gateway);

    let fallback = install.dir.path().join("secrets.toml");
    let text = std::fs::read_to_string(&fallback).expect("the fallback file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&fallback)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "only the user can read it");
    }
    let config = std::fs::read_to_string(install.config()).expect("config");
    for (setting, token) in world.tokens() {
        assert!(text.contains(&token), "{setting} is in the fallback file");
        assert!(!config.contains(&token), "{setting} left the config file");
        assert!(
            config.contains(&format!("\"secrets-file:{setting}\"")),
            "{config}"
        );
    }

    // Restarted without a keyring: the tokens come from the file.
    let gateway = install.start(None, "no-keyring-again");
    world.talk("still no keyring").await;
    stop(gateway);

    // A keyring appears: the tokens move into it and leave the file.
    let bus = SessionBus::start(true);
    let gateway = install.start(Some(&bus), "keyring");
    world.talk("with a keyring").await;
    stop(gateway);
    let config = std::fs::read_to_string(install.config()).expect("config");
    let left = std::fs::read_to_string(&fallback).expect("fallback");
    for (setting, token) in world.tokens() {
        assert!(
            config.contains(&format!("\"keyring:{setting}\"")),
            "{config}\n{}",
            install.all_logs()
        );
        assert!(!left.contains(&token), "{setting} left the fallback file");
        assert_eq!(
            bus.lookup(&install.config(), setting).as_deref(),
            Some(token.as_str())
        );
    }
    assert_never_shown(&world, "the logs", &install.all_logs());
}
