//! The IPC commands through real Tauri IPC (`tauri::test`, the app's own context and capability),
//! against the real engine, the fake agent server and an in-memory chat. No display, no bus.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use switchboard_engine::channels::memory::MemoryChannel;
use switchboard_engine::chunk::{LengthUnit, TextLimit};
use switchboard_engine::config::Paths;
use switchboard_engine::EngineOptions;
use switchboard_testkit::stakpak::FakeStakpak;
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{get_ipc_response, mock_builder, INVOKE_KEY};
use tauri::webview::InvokeRequest;
use tauri::{App, Manager, WebviewWindow, WebviewWindowBuilder};

use crate::autostart::Autostart;
use crate::commands::{commands, COMMAND_NAMES};
use crate::notify::{Question, Toast};
use crate::shell::{Host, Shell, ShellOptions};
use crate::tray::TrayModel;
use crate::views::{PairingOutcome, UiEvent};
use switchboard_engine::approvals::{ApprovalState, Surface};

const WAIT: Duration = Duration::from_secs(15);

/// Records what the shell shows.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<UiEvent>>,
    trays: Mutex<Vec<TrayModel>>,
    toasts: Mutex<Vec<Toast>>,
    shown: Mutex<usize>,
    withdrawn: Mutex<Vec<Question>>,
    /// The quick chat: opened on (a conversation, or the last desktop chat), and closed.
    quick: Mutex<Vec<Option<Option<String>>>>,
    /// The shortcuts the settings asked for.
    shortcuts: Mutex<Vec<String>>,
}

impl Host for Recorder {
    fn emit(&self, event: UiEvent) {
        self.events.lock().expect("lock").push(event);
    }
    fn update_tray(&self, model: &TrayModel, _force: bool) {
        self.trays.lock().expect("lock").push(model.clone());
    }
    fn notify(&self, toast: Toast) {
        self.toasts.lock().expect("lock").push(toast);
    }
    fn show_window(&self, _page: Option<crate::views::Page>, _routing_key: Option<String>) {
        *self.shown.lock().expect("lock") += 1;
    }
    fn withdraw(&self, question: &Question) {
        self.withdrawn.lock().expect("lock").push(question.clone());
    }
    fn open_quick_chat(&self, routing_key: Option<String>) {
        self.quick.lock().expect("lock").push(Some(routing_key));
    }
    fn close_quick_chat(&self) {
        self.quick.lock().expect("lock").push(None);
    }
    fn settings_applied(&self, config: &switchboard_engine::config::Config) {
        self.shortcuts
            .lock()
            .expect("lock")
            .push(config.desktop.quick_chat_shortcut.clone());
    }
}

impl Recorder {
    fn last_tray(&self) -> Option<TrayModel> {
        self.trays.lock().expect("lock").last().cloned()
    }
    fn toasts(&self) -> Vec<Toast> {
        self.toasts.lock().expect("lock").clone()
    }
    fn withdrawn(&self) -> Vec<Question> {
        self.withdrawn.lock().expect("lock").clone()
    }
    fn events(&self) -> Vec<UiEvent> {
        self.events.lock().expect("lock").clone()
    }
}

/// One app under test: the shell, its recorder, a mock Tauri app with the real commands and
/// capability, and the fakes.
struct Rig {
    _dir: tempfile::TempDir,
    root: PathBuf,
    host: Arc<Recorder>,
    chat: MemoryChannel,
    fake: Option<FakeStakpak>,
    _app: App<tauri::test::MockRuntime>,
    window: WebviewWindow<tauri::test::MockRuntime>,
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tauri::async_runtime::block_on(future)
}

fn fast_options() -> EngineOptions {
    EngineOptions {
        watchdog: Duration::from_millis(800),
        settle_grace: Duration::from_millis(300),
        approval_grace: Duration::from_millis(100),
        typing_interval: Duration::from_millis(500),
        busy_poll: Duration::from_millis(100),
        retry_base: Duration::from_millis(50),
        retry_cap: Duration::from_millis(500),
        delivery_attempts: 3,
        ..EngineOptions::default()
    }
}

/// A configuration file for the fake server (none when `fake` is `None` and `text` is `None`).
fn config_text(fake: &FakeStakpak) -> String {
    format!(
        "# written by the test\n[server]\nurl = \"{}\"\ntoken = \"{}\"\n\n[gateway]\napproval_mode = \"ask\"\n\n[api]\nlisten = \"127.0.0.1:0\"\ntoken = \"test-token\"\n",
        fake.url(),
        fake.token().unwrap_or_default()
    )
}

impl Rig {
    /// Starts the shell with the configuration `text` (no file when `None`); `with_fake` starts the
    /// fake agent server and writes a configuration for it when `text` is `None`.
    fn start(text: Option<&str>, with_fake: bool) -> Rig {
        Rig::start_with(text, with_fake, fast_options())
    }

    /// [`Rig::start`] with the engine's timings given.
    fn start_with(text: Option<&str>, with_fake: bool, engine: EngineOptions) -> Rig {
        Rig::start_full(text, with_fake, engine, "chat", "")
    }

    /// The in-memory chat in the place of the configured Telegram channel, whose access settings
    /// it keeps: strangers get a pairing code, 42 is allowed, 9999 is an owner.
    fn start_pairing() -> Rig {
        Rig::start_full(
            None,
            true,
            fast_options(),
            "telegram",
            "\n[channels.telegram]\ntoken = \"1:tauri-test\"\nallowed_users = [\"42\"]\nowners = [\"9999\"]\n",
        )
    }

    /// Starts the shell: the configuration `text` (or one for the fake server followed by `extra`),
    /// the in-memory chat named `channel`.
    fn start_full(
        text: Option<&str>,
        with_fake: bool,
        engine: EngineOptions,
        channel: &str,
        extra: &str,
    ) -> Rig {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_path_buf();
        let fake = with_fake.then(|| block_on(FakeStakpak::start()));
        let config_file = root.join("config").join("config.toml");
        std::fs::create_dir_all(config_file.parent().expect("parent")).expect("config dir");
        match (text, &fake) {
            (Some(text), _) => std::fs::write(&config_file, text).expect("config"),
            (None, Some(fake)) => {
                std::fs::write(&config_file, config_text(fake) + extra).expect("config")
            }
            (None, None) => {}
        }
        let chat = MemoryChannel::new(
            channel,
            TextLimit {
                max: 4096,
                unit: LengthUnit::Chars,
            },
        );
        let shell = Shell::new(ShellOptions {
            paths: Paths {
                config_file,
                data_dir: root.join("data"),
                log_dir: root.join("data/logs"),
            },
            engine,
            autostart: Autostart::new(
                &root.join("autostart"),
                vec!["switchboard".into(), "--hidden".into()],
            ),
            autopilot_file: Some(root.join("autopilot.toml")),
            extra_channels: vec![Arc::new(chat.clone())],
            demo: false,
        });
        let host = Arc::new(Recorder::default());
        shell.set_host(host.clone());
        let app = mock_builder()
            .manage(Arc::clone(&shell))
            .invoke_handler(commands())
            .build(crate::window::context())
            .expect("the app builds");
        let window = match app.get_webview_window(crate::MAIN_WINDOW) {
            Some(window) => window,
            None => WebviewWindowBuilder::new(&app, crate::MAIN_WINDOW, Default::default())
                .build()
                .expect("the window"),
        };
        block_on(shell.start());
        Rig {
            _dir: dir,
            root,
            host,
            chat,
            fake,
            _app: app,
            window,
        }
    }

    fn config_file(&self) -> PathBuf {
        self.root.join("config").join("config.toml")
    }

    fn invoke(&self, cmd: &str, args: Value) -> Result<Value, Value> {
        let request = InvokeRequest {
            cmd: cmd.into(),
            callback: CallbackFn(0),
            error: CallbackFn(1),
            url: "tauri://localhost".parse().expect("url"),
            body: InvokeBody::Json(args),
            headers: Default::default(),
            invoke_key: INVOKE_KEY.to_string(),
        };
        get_ipc_response(&self.window, request)
            .map(|body| body.deserialize::<Value>().expect("json"))
    }

    fn ok(&self, cmd: &str, args: Value) -> Value {
        match self.invoke(cmd, args) {
            Ok(value) => value,
            Err(error) => panic!("{cmd} failed: {error}"),
        }
    }

    fn err(&self, cmd: &str, args: Value) -> Value {
        match self.invoke(cmd, args) {
            Ok(value) => panic!("{cmd} should fail, but returned {value}"),
            Err(error) => error,
        }
    }

    /// Polls the snapshot command until `check` holds.
    fn wait_snapshot(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        wait(what, || {
            let snapshot = self.ok("snapshot", json!({}));
            check(&snapshot).then_some(snapshot)
        })
    }
}

fn wait<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn every_command_is_registered_and_granted_to_the_window() {
    let rig = Rig::start(None, false);
    for name in COMMAND_NAMES {
        // Wrong or missing arguments are fine here; what must not happen is the command being
        // unknown or refused by the capability.
        if let Err(error) = rig.invoke(name, json!({})) {
            let text = error.to_string();
            assert!(
                !text.contains("not found") && !text.contains("not allowed"),
                "{name}: {text}"
            );
        }
    }
    // The window may listen to events, and nothing else of Tauri's own.
    let refused = rig.err("plugin:window|close", json!({"label": "main"}));
    assert!(
        refused.to_string().contains("not allowed"),
        "commands beyond Switchboard's are refused: {refused}"
    );
    let refused = rig.err("plugin:webview|create_webview_window", json!({}));
    assert!(refused.to_string().contains("not allowed"), "{refused}");
}

#[test]
fn the_snapshot_shows_the_engine_its_channels_and_the_server() {
    let rig = Rig::start(None, true);
    let snapshot = rig.wait_snapshot("the server reported reachable", |s| {
        s["server"]["state"] == "ok"
    });
    assert_eq!(snapshot["config"]["state"], "loaded");
    assert_eq!(snapshot["engine_running"], true);
    assert_eq!(snapshot["start_page"], "channels");
    assert_eq!(snapshot["approval_mode"], "ask");
    let channels = snapshot["channels"].as_array().expect("channels");
    assert_eq!(channels.len(), 1);
    assert_eq!(channels[0]["name"], "chat");
    let tray = rig.host.last_tray().expect("the tray was updated");
    assert_eq!(tray.channels.len(), 1, "the tray lists the channel");
    let identity = rig.ok("test_channel", json!({"name": "chat", "settings": null}));
    assert_eq!(identity["name"], "chat bot");
    let missing = rig.err("test_channel", json!({"name": "nope", "settings": null}));
    assert_eq!(missing["code"], "not_found");
    // Unsaved settings are tested as they are, without touching the running channels: a Telegram
    // bot whose API cannot be reached fails, and a channel the settings do not describe is tested
    // as it runs.
    let mut draft = rig.ok("settings", json!({}))["config"].clone();
    draft["channels"]["telegram"] = json!({"token": "1:x", "api_base": "http://127.0.0.1:9"});
    let unreachable = rig.err(
        "test_channel",
        json!({"name": "telegram", "settings": draft}),
    );
    assert_eq!(unreachable["code"], "channel_failed", "{unreachable}");
    // An address that is not one, or an enabled bot without its token, is refused before
    // anything is sent, naming the setting.
    for (telegram, field) in [
        (
            json!({"token": "1:x", "api_base": "file:///etc/passwd"}),
            "channels.telegram.api_base",
        ),
        (
            json!({"token": "", "api_base": "http://127.0.0.1:9"}),
            "channels.telegram.token",
        ),
    ] {
        let mut wrong = draft.clone();
        wrong["channels"]["telegram"] = telegram;
        let refused = rig.err(
            "test_channel",
            json!({"name": "telegram", "settings": wrong}),
        );
        assert_eq!(refused["code"], "invalid_settings", "{refused}");
        assert_eq!(refused["field"], field, "{refused}");
    }
    let identity = rig.ok("test_channel", json!({"name": "chat", "settings": draft}));
    assert_eq!(identity["name"], "chat bot");
    assert!(
        !read(&rig.config_file()).contains("telegram"),
        "testing saves nothing"
    );
    let server = rig.fake.as_ref().expect("fake");
    let check = rig.ok(
        "test_connection",
        json!({"url": server.url(), "token": server.token().unwrap_or_default()}),
    );
    assert!(check["version"].as_str().is_some_and(|v| !v.is_empty()));
    let refused = rig.err(
        "test_connection",
        json!({"url": "http://127.0.0.1:9", "token": ""}),
    );
    assert_eq!(refused["code"], "server_failed");
}

#[test]
fn a_chat_message_appears_in_conversations_and_history_with_its_reply() {
    let rig = Rig::start(None, true);
    block_on(
        rig.chat
            .inject(rig.chat.dm("42", "m1", "hello from the chat")),
    )
    .expect("accepted");
    block_on(
        rig.chat
            .wait_until("the reply", WAIT, |sent| !sent.is_empty()),
    );
    assert_eq!(rig.chat.sent_to("42"), ["echo: hello from the chat"]);
    let conversations = rig.ok("conversations", json!({}));
    let list = conversations.as_array().expect("a list");
    assert_eq!(list.len(), 1);
    let key = list[0]["routing_key"].as_str().expect("key").to_owned();
    assert_eq!(list[0]["channel"], "chat");
    assert_eq!(list[0]["peer"]["id"], "42");
    let history = wait("the journal entry marked replied", || {
        let history = rig.ok("history", json!({"routingKey": key}));
        (history["journal"][0]["state"] == "replied").then_some(history)
    });
    let texts: Vec<&str> = history["server"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert!(texts.contains(&"hello from the chat"), "{texts:?}");
    assert!(texts.contains(&"echo: hello from the chat"), "{texts:?}");
    assert_eq!(history["journal"][0]["text"], "hello from the chat");
    // The engine's event reaches the shell on its own task, maybe after the journal is updated.
    wait("the reply in the activity log", || {
        let activity = rig.ok("activity", json!({}));
        activity
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["kind"] == "reply_delivered")
            .then_some(())
    });
    assert!(
        rig.host.events.lock().expect("lock").iter().any(
            |e| matches!(e, UiEvent::ConversationsChanged { routing_key: Some(k) } if *k == key)
        ),
        "the window was told the conversation changed"
    );
    assert_eq!(
        rig.ok("cancel_run", json!({"routingKey": key})),
        json!(false),
        "nothing runs now"
    );
}

#[test]
fn toggles_change_the_engine_the_file_and_the_tray() {
    let rig = Rig::start(None, true);
    let snapshot = rig.ok("set_approval_mode", json!({"mode": "allow_all"}));
    assert_eq!(snapshot["approval_mode"], "allow_all");
    assert!(
        read(&rig.config_file()).contains("approval_mode = \"allow_all\""),
        "{}",
        read(&rig.config_file())
    );
    assert!(
        read(&rig.config_file()).starts_with("# written by the test"),
        "the file's comments are kept"
    );
    assert_eq!(
        rig.host.last_tray().expect("tray").mode,
        switchboard_engine::config::ApprovalMode::AllowAll
    );
    let bad = rig.err("set_approval_mode", json!({"mode": "sometimes"}));
    assert!(bad.to_string().contains("sometimes"), "{bad}");

    wait("the chat channel running", || {
        rig.chat.is_running().then_some(())
    });
    let snapshot = rig.ok(
        "set_channel_enabled",
        json!({"name": "chat", "enabled": false}),
    );
    assert_eq!(snapshot["channels"][0]["enabled"], false);
    assert_eq!(snapshot["channels"][0]["state"], "disabled");
    wait("the chat channel stopped", || {
        (!rig.chat.is_running()).then_some(())
    });
    assert!(
        !rig.host.last_tray().expect("tray").channels[0].enabled,
        "the tray shows it off"
    );
    rig.ok(
        "set_channel_enabled",
        json!({"name": "chat", "enabled": true}),
    );
    wait("the chat channel running again", || {
        rig.chat.is_running().then_some(())
    });

    let snapshot = rig.ok("set_paused", json!({"paused": true}));
    assert_eq!(snapshot["paused"], true);
    assert_eq!(
        rig.host.last_tray().expect("tray").icon,
        crate::tray::TrayIconState::Paused
    );
    rig.ok("set_paused", json!({"paused": false}));

    let snapshot = rig.ok("set_do_not_disturb", json!({"on": true}));
    assert_eq!(snapshot["do_not_disturb"], true);
    assert!(
        read(&rig.config_file()).contains("do_not_disturb = true"),
        "{}",
        read(&rig.config_file())
    );

    let snapshot = rig.ok("set_autostart", json!({"on": true}));
    assert_eq!(snapshot["autostart"], true);
    let entry = read(&rig.root.join("autostart/switchboard.desktop"));
    assert!(entry.contains("Exec=switchboard --hidden"), "{entry}");
    rig.ok("set_autostart", json!({"on": false}));
    assert!(!rig.root.join("autostart/switchboard.desktop").exists());
}

#[test]
fn settings_are_checked_saved_and_applied_without_a_restart() {
    let rig = Rig::start(None, true);
    let view = rig.ok("settings", json!({}));
    assert_eq!(view["exists"], true);
    assert!(view["problem"].is_null());
    let mut config = view["config"].clone();
    config["api"]["listen"] = json!("0.0.0.0");
    let refused = rig.err("save_settings", json!({"config": config}));
    assert_eq!(refused["code"], "invalid_settings");
    assert_eq!(refused["field"], "api.listen");
    assert!(
        !read(&rig.config_file()).contains("0.0.0.0"),
        "nothing is written when the settings are wrong"
    );

    let mut config = view["config"].clone();
    config["gateway"]["model"] = json!("e2e-model");
    config["gateway"]["approval_mode"] = json!("deny_all");
    config["notifications"]["quiet_hours_start"] = json!("22:00");
    config["notifications"]["quiet_hours_end"] = json!("07:00");
    let outcome = rig.ok("save_settings", json!({"config": config}));
    assert_eq!(
        outcome["snapshot"]["approval_mode"], "deny_all",
        "applied at once"
    );
    assert_eq!(outcome["restart_needed"], json!([]));
    let text = read(&rig.config_file());
    assert!(text.contains("model = \"e2e-model\""), "{text}");
    assert!(text.contains("quiet_hours_start = \"22:00\""), "{text}");
    assert!(
        text.starts_with("# written by the test"),
        "comments survive saving: {text}"
    );
    let again = rig.ok("settings", json!({}));
    assert_eq!(again["config"]["gateway"]["model"], "e2e-model");
    assert_eq!(
        rig.host.last_tray().expect("tray").mode,
        switchboard_engine::config::ApprovalMode::DenyAll
    );
}

#[test]
fn a_first_run_opens_settings_imports_autopilot_and_starts_on_save() {
    let rig = Rig::start(None, false);
    let snapshot = rig.ok("snapshot", json!({}));
    assert_eq!(snapshot["config"]["state"], "missing");
    assert_eq!(snapshot["engine_running"], false);
    assert_eq!(snapshot["start_page"], "settings");
    // About: the version and where the files are, even before there is a configuration.
    assert_eq!(snapshot["about"]["version"], env!("CARGO_PKG_VERSION"));
    for dir in ["data_dir", "log_dir"] {
        assert!(
            snapshot["about"][dir]
                .as_str()
                .is_some_and(|d| std::path::Path::new(d).is_absolute()),
            "{dir}: {}",
            snapshot["about"]
        );
    }
    assert!(
        snapshot["config"]["missing"]
            .as_array()
            .is_some_and(|m| !m.is_empty()),
        "it says what is missing"
    );
    assert!(
        snapshot["config"]["autopilot"].is_null(),
        "no autopilot.toml yet"
    );
    let not_running = rig.err("conversations", json!({}));
    assert_eq!(not_running["code"], "not_running");
    assert_eq!(
        rig.host.last_tray().expect("tray").icon,
        crate::tray::TrayIconState::Attention
    );

    let fake = block_on(FakeStakpak::start());
    std::fs::write(
        rig.root.join("autopilot.toml"),
        format!(
            "[server]\nurl = \"{}\"\ntoken = \"{}\"\n",
            fake.url(),
            fake.token().unwrap_or_default()
        ),
    )
    .expect("autopilot");
    let view = rig.ok("settings", json!({}));
    assert_eq!(view["exists"], false);
    assert!(view["autopilot"]
        .as_str()
        .is_some_and(|p| p.ends_with("autopilot.toml")));
    let mut draft = view["config"].clone();
    draft["api"]["listen"] = json!("127.0.0.1:0");
    let imported = rig.ok("import_autopilot", json!({"into": draft}));
    assert_eq!(imported["imported"], json!(["server.url", "server.token"]));
    assert_eq!(imported["config"]["server"]["url"], fake.url());
    assert!(!rig.config_file().exists(), "importing saves nothing");

    let outcome = rig.ok("save_settings", json!({"config": imported["config"]}));
    assert_eq!(outcome["snapshot"]["engine_running"], true);
    assert_eq!(outcome["snapshot"]["config"]["state"], "loaded");
    assert!(read(&rig.config_file()).contains(&fake.url()));
    rig.wait_snapshot("the server reachable", |s| s["server"]["state"] == "ok");
    rig.ok("conversations", json!({}));

    // The Stakpak watch scheduler is pointed at Switchboard's second address, in its own file.
    let snapshot = rig.wait_snapshot("the scheduler address", |s| {
        s["autopilot_lines"].is_string()
    });
    let lines = snapshot["autopilot_lines"].as_str().unwrap_or_default();
    assert!(
        lines.contains("gateway_url = \"http://127.0.0.2:"),
        "the lines name the address the scheduler keeps: {lines}"
    );
    let changed = rig.ok("connect_autopilot", json!({}));
    assert_eq!(
        changed,
        json!(["notifications.gateway_url", "notifications.channel"])
    );
    let written = read(&rig.root.join("autopilot.toml"));
    assert!(
        written.starts_with("[server]") && written.contains("gateway_url = \"http://127.0.0.2:"),
        "{written}"
    );
    assert_eq!(rig.ok("connect_autopilot", json!({})), json!([]));
}

#[test]
fn an_invalid_file_still_starts_and_names_the_field() {
    let rig = Rig::start(
        Some("[gateway]\napproval_mode = \"sometimes\"\nmodel = \"kept\"\n"),
        false,
    );
    let snapshot = rig.ok("snapshot", json!({}));
    assert_eq!(snapshot["config"]["state"], "invalid");
    assert_eq!(snapshot["config"]["field"], "gateway.approval_mode");
    assert!(
        snapshot["config"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("allow_all")),
        "the message says the fix: {snapshot}"
    );
    assert_eq!(snapshot["start_page"], "settings");
    assert_eq!(
        rig.host.last_tray().expect("tray").icon,
        crate::tray::TrayIconState::Problem
    );
    let view = rig.ok("settings", json!({}));
    assert_eq!(view["problem"]["field"], "gateway.approval_mode");
}

#[test]
fn an_unreachable_server_is_a_state_with_its_reason() {
    let rig = Rig::start(
        Some("[server]\nurl = \"http://127.0.0.1:9\"\n\n[api]\nlisten = \"127.0.0.1:0\"\n"),
        false,
    );
    let snapshot = rig.wait_snapshot("the server reported unreachable", |s| {
        s["server"]["state"] == "unreachable"
    });
    assert!(
        snapshot["server"]["detail"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "the reason is given: {snapshot}"
    );
    assert_eq!(snapshot["engine_running"], true, "the app keeps running");
    // The tray is redrawn right after the window is told.
    let tray = wait("the tray showing the problem", || {
        rig.host
            .last_tray()
            .filter(|t| t.icon == crate::tray::TrayIconState::Problem)
    });
    assert_eq!(tray.status, "Agent server unreachable");
    rig.ok("check_server", json!({}));
}

#[test]
fn watch_notifications_and_the_reply_to_them_raise_native_notifications() {
    let rig = Rig::start(None, true);
    let snapshot = rig.wait_snapshot("the gateway API listening", |s| s["api_addr"].is_string());
    let api = snapshot["api_addr"]
        .as_str()
        .expect("api address")
        .to_owned();
    let client = switchboard_engine::http::client();
    let send = client
        .post(format!("http://{api}/v1/gateway/send"))
        .bearer_auth("test-token")
        .json(&json!({"channel": "chat", "target": "77", "text": "Disk check failed on web-1",
                      "context": {"trigger": "disk-check", "status": "failed", "summary": "disk 95% full"}}));
    let response = block_on(send.send()).expect("sent");
    assert!(response.status().is_success(), "{}", response.status());
    let first = wait("the watch notification", || {
        rig.host.toasts().first().cloned()
    });
    assert_eq!(first.summary, "chat/77");
    assert_eq!(first.body, "Disk check failed on web-1");

    block_on(rig.chat.inject(rig.chat.dm("77", "m1", "what happened?"))).expect("accepted");
    let second = wait("the reply notification", || {
        rig.host.toasts().get(1).cloned()
    });
    assert_eq!(second.summary, "Reply in chat/77");
    assert!(second.body.starts_with("echo:"), "{second:?}");
    let key = second.open.expect("a click opens the conversation");
    let conversations = rig.ok("conversations", json!({}));
    assert_eq!(conversations[0]["routing_key"], key.as_str());
    assert_eq!(rig.host.toasts().len(), 2, "nothing is raised twice");
}

// ----- approvals ----------------------------------------------------------------------------------

/// A run that proposes a `run_command` call, which waits for a decision in `ask` mode.
const RUN_LS: &str = r#"USE_TOOL run_command {"command": "ls", "token": "abc123"}"#;

impl Rig {
    fn shell(&self) -> Arc<Shell> {
        Arc::clone(self._app.state::<Arc<Shell>>().inner())
    }

    /// Sends `text` from peer 42 and waits until the Approvals page lists a pending call.
    fn ask(&self, message_id: &str, text: &str) -> Value {
        block_on(self.chat.inject(self.chat.dm("42", message_id, text))).expect("accepted");
        wait("a pending approval", || {
            let view = self.ok("approvals", json!({}));
            let pending = view["pending"].as_array()?.first()?.clone();
            Some(pending)
        })
    }

    /// The replies the chat received that finish a run (`done: …`).
    fn wait_done(&self, count: usize) -> Vec<String> {
        block_on(self.chat.wait_until("the run's reply", WAIT, |sent| {
            sent.iter().filter(|s| s.text.starts_with("done:")).count() >= count
        }));
        self.chat
            .sent_to("42")
            .into_iter()
            .filter(|t| t.starts_with("done:"))
            .collect()
    }

    fn fake(&self) -> &FakeStakpak {
        self.fake.as_ref().expect("the fake server")
    }
}

#[test]
fn an_approval_is_listed_masked_decided_once_from_the_window_and_the_run_finishes() {
    let rig = Rig::start(None, true);
    let pending = rig.ask("m1", RUN_LS);
    assert_eq!(pending["tool"], "stakpak__run_command");
    assert_eq!(
        pending["arguments"], "command: ls\ntoken: ••••••",
        "readable, the secret masked"
    );
    assert!(
        pending["arguments_whole"]
            .as_str()
            .is_some_and(|w| w.contains("\"command\": \"ls\"") && w.contains("abc123")),
        "the arguments exactly as sent, for the window's Show masked values: {pending}"
    );
    assert_eq!(pending["requester"], "42");
    assert_eq!(pending["channel"], "chat");
    assert!(pending["session_id"].is_string(), "{pending}");
    let key = pending["routing_key"].as_str().expect("key").to_owned();
    assert!(
        pending["deadline_ms"].as_i64().expect("deadline") > switchboard_engine::model::now_ms(),
        "the deadline is ahead"
    );
    let id = pending["id"].as_str().expect("id").to_owned();
    let conversations = rig.ok("conversations", json!({}));
    assert_eq!(conversations[0]["routing_key"], key.as_str());

    // The window was told, a notification with the approval was raised, the tray counts it.
    wait("the window told of the request", || {
        rig.host
            .events()
            .iter()
            .any(|e| matches!(e, UiEvent::ApprovalRequested { approval } if approval.id == id && approval.arguments.contains("••••••")))
            .then_some(())
    });
    let toast = wait("the approval notification", || {
        rig.host
            .toasts()
            .into_iter()
            .find(|t| t.question == Some(Question::Approval(id.clone())))
    });
    assert_eq!(toast.summary, "42 asks to run `ls`");
    assert!(!toast.body.contains("abc123"), "{}", toast.body);
    let tray = wait("the tray counting it", || {
        rig.host.last_tray().filter(|t| t.approvals == 1)
    });
    assert_eq!(tray.icon, crate::tray::TrayIconState::Attention);
    assert!(tray.approvals_enabled());
    assert!(rig.fake().decisions().is_empty(), "nothing decided yet");

    let outcome = rig.ok(
        "decide_approval",
        json!({"approvalId": id, "choice": "approve"}),
    );
    assert_eq!(outcome["outcome"], "decided", "{outcome}");
    assert_eq!(outcome["action"], "accept");
    assert!(
        rig.ok("approvals", json!({}))["rules"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "allowing once makes no rule"
    );
    let again = rig.ok(
        "decide_approval",
        json!({"approvalId": id, "choice": "reject"}),
    );
    assert_eq!(again["outcome"], "already_decided", "{again}");
    assert_eq!(again["action"], "accept");
    assert_eq!(again["decided_by"], crate::shell::local_user().as_str());
    assert_eq!(again["surface"], "window");
    assert!(
        again["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Already decided")
                && m.contains("approved by")
                && m.contains("(window)")),
        "{again}"
    );

    let done = rig.wait_done(1);
    assert_eq!(done.len(), 1, "{done:?}");
    let actions: Vec<String> = rig
        .fake()
        .decisions()
        .iter()
        .map(|d| d.action.clone())
        .collect();
    assert_eq!(
        actions,
        ["accept"],
        "exactly one decision reached the server"
    );
    assert!(rig.fake().misdecisions().is_empty());

    wait("the notification withdrawn", || {
        rig.host
            .withdrawn()
            .contains(&Question::Approval(id.clone()))
            .then_some(())
    });
    assert!(rig.host.events().iter().any(|e| matches!(e,
        UiEvent::ApprovalResolved { approval_id, action, surface, .. }
            if *approval_id == id && *action == ApprovalState::Accepted && *surface == Surface::Window)));
    let view = rig.ok("approvals", json!({}));
    assert_eq!(view["pending"], json!([]));
    assert_eq!(view["history"][0]["tool"], "stakpak__run_command");
    assert_eq!(view["history"][0]["action"], "accept");
    assert_eq!(view["history"][0]["surface"], "window");
    assert_eq!(
        view["history"][0]["decided_by"],
        crate::shell::local_user().as_str()
    );
    wait("the tray count back to zero", || {
        rig.host.last_tray().filter(|t| t.approvals == 0)
    });
    let missing = rig.err(
        "decide_approval",
        json!({"approvalId": "0b6c1f9e-3a4d-4c2e-9f7a-2d5e8b1c4a90", "choice": "approve"}),
    );
    assert_eq!(missing["code"], "not_found");
    assert_eq!(missing["field"], "approvalId");
    let bad = rig.err(
        "decide_approval",
        json!({"approvalId": id, "choice": "maybe"}),
    );
    assert!(bad.to_string().contains("maybe"), "{bad}");
}

#[test]
fn always_allow_can_be_narrowed_to_matching_arguments() {
    let rig = Rig::start(None, true);
    let pending = rig.ask("m1", RUN_LS);
    let outcome = rig.ok(
        "decide_approval",
        // Several arguments: a pattern names the one it is about (a bare glob is for the command).
        json!({"approvalId": pending["id"], "choice": "always_allow", "pattern": "  command=ls  "}),
    );
    assert_eq!(outcome["outcome"], "decided", "{outcome}");
    rig.wait_done(1);
    let rules = rig.ok("approvals", json!({}))["rules"].clone();
    assert_eq!(
        rules[0]["arg_pattern"], "command=ls",
        "the pattern is kept, trimmed: {rules}"
    );

    // A call the pattern covers passes; one it does not cover asks.
    block_on(rig.chat.inject(rig.chat.dm("42", "m2", RUN_LS))).expect("accepted");
    rig.wait_done(2);
    let other = rig.ask("m3", r#"USE_TOOL run_command {"command": "rm -rf /tmp/x"}"#);
    assert_eq!(other["tool"], "stakpak__run_command");

    let refused = rig.err(
        "decide_approval",
        json!({"approvalId": other["id"], "choice": "always_allow", "pattern": "a\nb"}),
    );
    assert_eq!(refused["code"], "invalid_argument", "{refused}");
}

#[test]
fn always_allow_creates_a_rule_the_next_call_passes_and_revoking_asks_again() {
    let rig = Rig::start(None, true);
    let pending = rig.ask("m1", RUN_LS);
    let outcome = rig.ok(
        "decide_approval",
        json!({"approvalId": pending["id"], "choice": "always_allow"}),
    );
    assert_eq!(outcome["outcome"], "decided", "{outcome}");
    rig.wait_done(1);
    let rules = rig.ok("approvals", json!({}))["rules"].clone();
    assert_eq!(rules.as_array().map(Vec::len), Some(1), "{rules}");
    let rule_id = rules[0]["id"].as_i64().expect("a rule");
    assert!(
        rules[0]["channel"].is_null(),
        "a rule made at the desktop covers every channel: {rules}"
    );
    assert_eq!(rules[0]["tool"], "stakpak__run_command");
    assert_eq!(rules[0]["created_by"], crate::shell::local_user().as_str());

    // The next call of that tool passes without asking.
    block_on(rig.chat.inject(rig.chat.dm("42", "m2", RUN_LS))).expect("accepted");
    rig.wait_done(2);
    let asked = rig
        .host
        .events()
        .iter()
        .filter(|e| matches!(e, UiEvent::ApprovalRequested { .. }))
        .count();
    assert_eq!(asked, 1, "the second call was not asked about");
    assert_eq!(rig.fake().decisions().len(), 2);
    assert!(rig.fake().misdecisions().is_empty());

    assert_eq!(rig.ok("remove_rule", json!({"id": rule_id})), json!(true));
    assert_eq!(rig.ok("approvals", json!({}))["rules"], json!([]));
    assert_eq!(rig.ok("remove_rule", json!({"id": rule_id})), json!(false));
    // Revoked: the tool asks again.
    let again = rig.ask("m3", RUN_LS);
    assert_eq!(again["tool"], "stakpak__run_command");
}

#[test]
fn an_approval_decided_elsewhere_leaves_the_window_and_its_notification() {
    let rig = Rig::start(None, true);
    let pending = rig.ask("m1", RUN_LS);
    let id = pending["id"].as_str().expect("id").to_owned();
    // Decided from the chat's button by the person who asked.
    let clicked = block_on(rig.chat.click(
        &id,
        switchboard_engine::approvals::ChatChoice::Reject,
        "42",
    ));
    assert!(
        matches!(
            clicked,
            switchboard_engine::approvals::ChoiceOutcome::Decided(_)
        ),
        "{clicked:?}"
    );
    wait("the notification withdrawn", || {
        rig.host
            .withdrawn()
            .contains(&Question::Approval(id.clone()))
            .then_some(())
    });
    assert!(rig.host.events().iter().any(|e| matches!(e,
        UiEvent::ApprovalResolved { approval_id, action, surface, .. }
            if *approval_id == id && *action == ApprovalState::Rejected && *surface == Surface::Chat)));
    let view = rig.ok("approvals", json!({}));
    assert_eq!(view["pending"], json!([]), "it left the list");
    assert_eq!(view["history"][0]["surface"], "chat");
    assert_eq!(view["history"][0]["decided_by"], "42");
    let late = rig.ok(
        "decide_approval",
        json!({"approvalId": id, "choice": "approve"}),
    );
    assert_eq!(late["outcome"], "already_decided");
    assert!(
        late["message"].as_str().is_some_and(
            |m| m.starts_with("Already decided") && m.contains("rejected by 42 (chat)")
        ),
        "{late}"
    );
    let late_always = rig.ok(
        "decide_approval",
        json!({"approvalId": id, "choice": "always_allow"}),
    );
    assert_eq!(late_always["outcome"], "already_decided");
    assert_eq!(
        rig.ok("approvals", json!({}))["rules"],
        json!([]),
        "an answer that came too late creates no rule"
    );
    let done = rig.wait_done(1);
    assert!(done[0].contains("rejected"), "{done:?}");
    assert_eq!(rig.fake().decisions().len(), 1);

    // The notification's Approve action decides from the "notification" surface.
    let second = rig.ask("m2", RUN_LS);
    let second_id = second["id"].as_str().expect("id").to_owned();
    // As the app does it: the action's answer, on the async runtime.
    let shell = rig.shell();
    let message = block_on(async move {
        shell.answer(
            &Question::Approval(second_id),
            crate::notify::Answer::Approve,
        )
    })
    .expect("decided");
    assert!(message.contains("approved by"), "{message}");
    rig.wait_done(2);
    let view = rig.ok("approvals", json!({}));
    assert_eq!(view["history"][0]["surface"], "notification");
    assert_eq!(
        rig.host
            .toasts()
            .iter()
            .filter(|t| matches!(t.question, Some(Question::Approval(_))))
            .count(),
        2,
        "one notification per approval"
    );
    assert!(rig.fake().misdecisions().is_empty());
}

#[test]
fn approvals_raise_no_notification_under_do_not_disturb() {
    let rig = Rig::start(None, true);
    rig.ok("set_do_not_disturb", json!({"on": true}));
    let pending = rig.ask("m1", RUN_LS);
    assert_eq!(pending["tool"], "stakpak__run_command");
    assert!(
        rig.host.toasts().iter().all(|t| t.question.is_none()),
        "silent under do not disturb"
    );
    // The window still lists it and decides it.
    rig.ok(
        "decide_approval",
        json!({"approvalId": pending["id"], "choice": "approve"}),
    );
    rig.wait_done(1);
}

#[test]
fn an_expired_approval_leaves_the_window_and_withdraws_its_notification() {
    let rig = Rig::start_with(
        None,
        true,
        EngineOptions {
            approval_timeout: Some(Duration::from_millis(1500)),
            ..fast_options()
        },
    );
    let pending = rig.ask("m1", RUN_LS);
    let id = pending["id"].as_str().expect("id").to_owned();
    wait("the notification raised", || {
        rig.host
            .toasts()
            .iter()
            .any(|t| t.question == Some(Question::Approval(id.clone())))
            .then_some(())
    });
    wait("the notification withdrawn at expiry", || {
        rig.host
            .withdrawn()
            .contains(&Question::Approval(id.clone()))
            .then_some(())
    });
    assert!(rig.host.events().iter().any(|e| matches!(e,
        UiEvent::ApprovalResolved { approval_id, action, .. }
            if *approval_id == id && *action == ApprovalState::Expired)));
    let view = rig.ok("approvals", json!({}));
    assert_eq!(view["pending"], json!([]));
    assert_eq!(view["history"][0]["action"], "expired");
    let late = rig.ok(
        "decide_approval",
        json!({"approvalId": id, "choice": "approve"}),
    );
    assert_eq!(late["outcome"], "already_decided");
    assert_eq!(late["action"], "expired");
    assert!(
        late["message"]
            .as_str()
            .is_some_and(|m| m.contains("not answered in time")),
        "{late}"
    );
    // The rejection travels to the server on the engine's own task.
    let actions: Vec<String> = wait("the server told of the rejection", || {
        let decisions = rig.fake().decisions();
        (!decisions.is_empty()).then(|| decisions.iter().map(|d| d.action.clone()).collect())
    });
    assert_eq!(actions, ["reject"], "an expired call is rejected, once");
}

// ----- pairing requests -------------------------------------------------------------------------

/// The pairing code in the reply a stranger gets.
fn code_in(reply: &str) -> String {
    let at = reply
        .find("pairing code is ")
        .map(|i| i + "pairing code is ".len())
        .unwrap_or_else(|| panic!("no code in {reply:?}"));
    reply[at..].chars().take(8).collect()
}

impl Rig {
    /// A direct message from `id` (named `name`), handled by the engine's access gate before this
    /// returns.
    fn dm_from(
        &self,
        id: &str,
        name: &str,
        message_id: &str,
        text: &str,
    ) -> switchboard_engine::channels::Accepted {
        let mut message = self.chat.dm(id, message_id, text);
        message.peer.name = Some(name.to_owned());
        block_on(self.chat.inject(message)).expect("handled")
    }

    /// A stranger writes; the pairing code they got back.
    fn stranger(&self, id: &str, name: &str, text: &str) -> String {
        let accepted = self.dm_from(id, name, &format!("{id}-first"), text);
        assert!(
            matches!(accepted, switchboard_engine::channels::Accepted::Refused),
            "a stranger's message is not passed on: {accepted:?}"
        );
        // The gate answers beside the receive path: wait for it.
        let replies = wait("the pairing code", || {
            let sent = self.chat.sent_to(id);
            (!sent.is_empty()).then_some(sent)
        });
        assert_eq!(replies.len(), 1, "one reply, the code: {replies:?}");
        code_in(&replies[0])
    }

    /// The texts the fake agent server received.
    fn posted(&self) -> Vec<String> {
        self.fake()
            .posted_messages()
            .into_iter()
            .map(|m| m.text)
            .collect()
    }
}

fn pairing(channel: &str, code: &str) -> Question {
    Question::Pairing {
        channel: channel.into(),
        code: code.into(),
    }
}

#[test]
fn a_stranger_is_listed_and_admitting_from_the_window_lets_the_next_message_through() {
    let rig = Rig::start_pairing();
    let code = rig.stranger("1111", "Ann", "hello, <b>run</b> ls for me");
    assert!(
        rig.posted().is_empty(),
        "nothing of a stranger reaches the agent server"
    );

    let list = rig.ok("pairing_requests", json!({}));
    let list = list.as_array().expect("a list");
    assert_eq!(list.len(), 1, "{list:?}");
    let request = &list[0];
    assert_eq!(request["channel"], "telegram");
    assert_eq!(request["peer_id"], "1111");
    assert_eq!(request["peer_name"], "Ann");
    assert_eq!(request["code"], code.as_str());
    assert_eq!(
        request["first_message"], "hello, <b>run</b> ls for me",
        "the text as sent (the page puts it in as text)"
    );
    assert!(
        request["expires_ms"].as_i64().expect("expiry") > switchboard_engine::model::now_ms(),
        "{request}"
    );

    // The window, the notification and the tray are told.
    wait("the window told of the request", || {
        rig.host
            .events()
            .iter()
            .any(|e| matches!(e, UiEvent::PairingRequested { request } if request.code == code && request.peer_name == "Ann"))
            .then_some(())
    });
    let toast = wait("the pairing notification", || {
        rig.host
            .toasts()
            .into_iter()
            .find(|t| t.question == Some(pairing("telegram", &code)))
    });
    assert_eq!(toast.summary, "Ann asks to talk to the agent");
    assert!(toast.body.contains(&code), "{}", toast.body);
    let tray = wait("the tray counting the request", || {
        rig.host.last_tray().filter(|t| t.pairings == 1)
    });
    assert_eq!(tray.icon, crate::tray::TrayIconState::Attention);
    assert_eq!(tray.status, "1 asking to talk to the agent");
    assert!(tray.approvals_enabled(), "the tray item opens the list");
    assert_eq!(rig.ok("snapshot", json!({}))["pending_pairings"], 1);

    // Admitted from the window (the code as a person might type it).
    let typed = format!("{}-{}", &code[..4], &code[4..]).to_lowercase();
    let decision = rig.ok(
        "admit_pairing",
        json!({"channel": "telegram", "code": typed}),
    );
    assert_eq!(decision["state"], "admitted", "{decision}");
    assert_eq!(decision["request"]["peer_id"], "1111");
    assert!(
        decision["message"]
            .as_str()
            .is_some_and(|m| m.contains("Ann (1111) is admitted")),
        "{decision}"
    );
    wait("the notification withdrawn", || {
        rig.host
            .withdrawn()
            .contains(&pairing("telegram", &code))
            .then_some(())
    });
    wait("the window told it was admitted", || {
        rig.host
            .events()
            .iter()
            .any(|e| {
                matches!(e, UiEvent::PairingResolved { code: c, state, decided_by, .. }
                if *c == code && *state == PairingOutcome::Admitted && *decided_by == crate::shell::local_user())
            })
            .then_some(())
    });
    assert_eq!(rig.ok("pairing_requests", json!({})), json!([]));
    wait("the tray count back to zero", || {
        rig.host.last_tray().filter(|t| t.pairings == 0)
    });
    let again = rig.err(
        "admit_pairing",
        json!({"channel": "telegram", "code": code}),
    );
    assert_eq!(again["code"], "not_found", "{again}");
    assert_eq!(again["field"], "code");
    assert!(
        rig.posted().is_empty(),
        "admitting sends nothing to the agent by itself"
    );

    // Their next message goes through, and it is the only one the agent server ever saw.
    let accepted = rig.dm_from("1111", "Ann", "m2", "now?");
    assert!(
        matches!(accepted, switchboard_engine::channels::Accepted::New(_)),
        "{accepted:?}"
    );
    block_on(rig.chat.wait_until("the agent's reply", WAIT, |sent| {
        sent.iter().any(|s| s.text == "echo: now?")
    }));
    assert_eq!(
        rig.posted(),
        ["now?"],
        "only the message after admission reached the agent"
    );
}

#[test]
fn a_stranger_refused_from_the_window_is_ignored_silently() {
    let rig = Rig::start_pairing();
    let code = rig.stranger("2222", "Bo", "let me in");
    let decision = rig.ok(
        "refuse_pairing",
        json!({"channel": "telegram", "code": code}),
    );
    assert_eq!(decision["state"], "refused", "{decision}");
    wait("the notification withdrawn", || {
        rig.host
            .withdrawn()
            .contains(&pairing("telegram", &code))
            .then_some(())
    });
    assert_eq!(rig.ok("pairing_requests", json!({})), json!([]));

    let accepted = rig.dm_from("2222", "Bo", "m2", "please?");
    assert!(
        matches!(accepted, switchboard_engine::channels::Accepted::Refused),
        "{accepted:?}"
    );
    // Someone allowed writes after them and is answered: the engine is working, and still Bo got
    // nothing more than the first code.
    rig.dm_from("42", "Cy", "m3", "hi");
    block_on(
        rig.chat
            .wait_until("the allowed user's reply", WAIT, |sent| {
                sent.iter().any(|s| s.text == "echo: hi")
            }),
    );
    assert_eq!(
        rig.chat.sent_to("2222").len(),
        1,
        "no reply, no new code: {:?}",
        rig.chat.sent_to("2222")
    );
    assert_eq!(
        rig.posted(),
        ["hi"],
        "nothing of Bo reached the agent server"
    );
    assert_eq!(
        rig.ok("pairing_requests", json!({})),
        json!([]),
        "a refused sender makes no new request"
    );
}

#[test]
fn the_notification_admits_and_a_chat_admission_leaves_the_window_and_notification() {
    let rig = Rig::start_pairing();
    let code = rig.stranger("3333", "Di", "hi there");
    let question = wait("the pairing notification", || {
        rig.host
            .toasts()
            .into_iter()
            .find_map(|t| t.question.filter(|q| *q == pairing("telegram", &code)))
    });

    // The notification's answers, as the app carries them out: on the async runtime.
    let shell = rig.shell();
    let wrong = {
        let (shell, question) = (Arc::clone(&shell), question.clone());
        block_on(async move { shell.answer(&question, crate::notify::Answer::Approve) })
    };
    assert_eq!(
        wrong.expect_err("Approve does not answer a pairing").code,
        crate::views::ErrorCode::InvalidArgument
    );
    let message = {
        let (shell, question) = (Arc::clone(&shell), question.clone());
        block_on(async move { shell.answer(&question, crate::notify::Answer::Admit) })
    }
    .expect("admitted");
    assert!(message.contains("Di (3333) is admitted"), "{message}");
    wait("the notification withdrawn", || {
        rig.host.withdrawn().contains(&question).then_some(())
    });
    let late = block_on(async move { shell.answer(&question, crate::notify::Answer::Refuse) });
    assert_eq!(
        late.expect_err("already admitted").code,
        crate::views::ErrorCode::NotFound
    );
    rig.dm_from("3333", "Di", "m2", "thanks");
    block_on(rig.chat.wait_until("the agent's reply", WAIT, |sent| {
        sent.iter().any(|s| s.text == "echo: thanks")
    }));
    assert_eq!(rig.posted(), ["thanks"]);

    // An owner admits another stranger from the chat: the window's list and the notification
    // follow.
    let other = rig.stranger("4444", "Ed", "me too");
    assert_eq!(
        rig.ok("pairing_requests", json!({}))
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    rig.dm_from("9999", "Owner", "o1", &format!("/admit {other}"));
    wait("the window told of the chat's admission", || {
        rig.host
            .events()
            .iter()
            .any(|e| {
                matches!(e, UiEvent::PairingResolved { code, state, decided_by, .. }
                if *code == other && *state == PairingOutcome::Admitted && decided_by.contains("Owner"))
            })
            .then_some(())
    });
    wait("its notification withdrawn", || {
        rig.host
            .withdrawn()
            .contains(&pairing("telegram", &other))
            .then_some(())
    });
    assert_eq!(rig.ok("pairing_requests", json!({})), json!([]));
}

/// The value of "no such approval": well formed, unknown.
const UNKNOWN_APPROVAL: &str = "0b6c1f9e-3a4d-4c2e-9f7a-2d5e8b1c4a90";

#[test]
fn the_desktop_chat_is_answered_through_ipc_and_the_quick_chat_opens_and_closes() {
    let rig = Rig::start(None, true);
    rig.wait_snapshot("the engine running", |s| s["engine_running"] == true);
    assert_eq!(
        rig.ok(
            "desktop_send",
            json!({"chatId": "c1", "text": "hello desktop", "clientId": "m1"})
        ),
        true,
        "a new message"
    );
    assert_eq!(
        rig.ok(
            "desktop_send",
            json!({"chatId": "c1", "text": "hello desktop", "clientId": "m1"})
        ),
        false,
        "the same message sent again is one message"
    );
    let transcript = wait("the reply in the transcript", || {
        let lines = rig.ok("desktop_transcript", json!({"chatId": "c1"}));
        let replied = lines.as_array().is_some_and(|l| {
            l.iter().any(|line| {
                line["from"] == "agent" && line["message"]["text"] == "echo: hello desktop"
            })
        });
        replied.then_some(lines)
    });
    assert_eq!(transcript[0]["from"], "person");
    assert_eq!(transcript[0]["text"], "hello desktop");
    assert!(
        rig.host.events().iter().any(|e| matches!(
            e,
            UiEvent::DesktopMessage { message } if message.text == "echo: hello desktop"
        )),
        "the window is told as the reply arrives"
    );
    let conversations = rig.ok("conversations", json!({}));
    let desktop = conversations
        .as_array()
        .and_then(|c| c.iter().find(|c| c["routing_key"] == "desktop:c1").cloned())
        .expect("the desktop chat is a conversation");
    assert_eq!(desktop["title"], "Desktop: hello desktop");
    assert_eq!(
        rig.ok("snapshot", json!({}))["channels"]
            .as_array()
            .map(|c| c.len()),
        Some(1),
        "the desktop chat is not a channel to switch"
    );
    // The person writes into the chat's conversation from the desktop (a notification's reply).
    block_on(rig.chat.inject(rig.chat.dm("ann", "1", "hi"))).expect("accepted");
    block_on(
        rig.chat
            .wait_until("the first reply", WAIT, |sent| sent.len() == 1),
    );
    assert_eq!(
        rig.ok(
            "say",
            json!({"routingKey": "chat:dm:ann", "text": "from the desktop", "clientId": "n1"})
        ),
        true
    );
    let sent = block_on(
        rig.chat
            .wait_until("the answer", WAIT, |sent| sent.len() == 2),
    );
    assert_eq!(
        sent[1].text, "echo: from the desktop",
        "the agent answers in the chat"
    );

    rig.ok("open_quick_chat", json!({"routingKey": "desktop:c1"}));
    rig.ok("open_quick_chat", json!({}));
    rig.ok("close_quick_chat", json!({}));
    assert_eq!(
        *rig.host.quick.lock().expect("lock"),
        vec![Some(Some("desktop:c1".to_owned())), Some(None), None]
    );
    assert_eq!(
        *rig.host.shortcuts.lock().expect("lock"),
        vec!["Ctrl+Alt+Space".to_owned()],
        "the host was given the shortcut when the engine started"
    );
}

#[test]
fn bad_arguments_are_refused_with_an_error_naming_them() {
    let rig = Rig::start_pairing();
    let long = "x".repeat(5000);
    // (command, arguments, error code, the argument named)
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        ("history", json!({}), "invalid_argument", "routingKey"),
        (
            "history",
            json!({"routingKey": ""}),
            "invalid_argument",
            "routingKey",
        ),
        (
            "history",
            json!({"routingKey": 42}),
            "invalid_argument",
            "routingKey",
        ),
        (
            "history",
            json!({"routingKey": "a\nb"}),
            "invalid_argument",
            "routingKey",
        ),
        (
            "history",
            json!({"routingKey": long}),
            "invalid_argument",
            "routingKey",
        ),
        (
            "cancel_run",
            json!({"routingKey": "   "}),
            "invalid_argument",
            "routingKey",
        ),
        (
            "set_paused",
            json!({"paused": "yes"}),
            "invalid_argument",
            "paused",
        ),
        (
            "set_approval_mode",
            json!({"mode": "sometimes"}),
            "invalid_argument",
            "mode",
        ),
        (
            "set_channel_enabled",
            json!({"name": "", "enabled": true}),
            "invalid_argument",
            "name",
        ),
        (
            "set_channel_enabled",
            json!({"name": "tele gram", "enabled": true}),
            "invalid_argument",
            "name",
        ),
        (
            "set_channel_enabled",
            json!({"name": "irc", "enabled": true}),
            "not_found",
            "name",
        ),
        (
            "set_channel_enabled",
            json!({"name": "telegram", "enabled": null}),
            "invalid_argument",
            "enabled",
        ),
        (
            "set_do_not_disturb",
            json!({"on": 1}),
            "invalid_argument",
            "on",
        ),
        ("set_autostart", json!({}), "invalid_argument", "on"),
        (
            "test_channel",
            json!({"name": long, "settings": null}),
            "invalid_argument",
            "name",
        ),
        (
            "test_channel",
            json!({"name": "irc", "settings": null}),
            "not_found",
            "name",
        ),
        (
            "test_channel",
            json!({"name": "telegram", "settings": {"server": 5}}),
            "invalid_argument",
            "settings",
        ),
        (
            "test_connection",
            json!({"url": "", "token": ""}),
            "invalid_argument",
            "url",
        ),
        (
            "test_connection",
            json!({"url": "127.0.0.1:4096", "token": ""}),
            "invalid_argument",
            "url",
        ),
        (
            "test_connection",
            json!({"url": "file:///etc/passwd", "token": ""}),
            "invalid_argument",
            "url",
        ),
        (
            "test_connection",
            json!({"url": "http://127.0.0.1:9", "token": "t0k\r\nX-Evil: 1"}),
            "invalid_argument",
            "token",
        ),
        (
            "test_connection",
            json!({"url": "http://127.0.0.1:9", "token": long}),
            "invalid_argument",
            "token",
        ),
        (
            "test_connection",
            json!({"url": "http://127.0.0.1:9"}),
            "invalid_argument",
            "token",
        ),
        (
            "save_settings",
            json!({"config": "not a config"}),
            "invalid_argument",
            "config",
        ),
        ("save_settings", json!({}), "invalid_argument", "config"),
        (
            "import_autopilot",
            json!({"into": 7}),
            "invalid_argument",
            "into",
        ),
        (
            "decide_approval",
            json!({"approvalId": "", "choice": "approve"}),
            "invalid_argument",
            "approvalId",
        ),
        (
            "decide_approval",
            json!({"approvalId": "../../etc/passwd", "choice": "approve"}),
            "invalid_argument",
            "approvalId",
        ),
        (
            "decide_approval",
            json!({"approvalId": UNKNOWN_APPROVAL, "choice": "maybe"}),
            "invalid_argument",
            "choice",
        ),
        (
            "decide_approval",
            json!({"approvalId": UNKNOWN_APPROVAL, "choice": "always_allow", "pattern": "a\nb"}),
            "invalid_argument",
            "pattern",
        ),
        (
            "decide_approval",
            json!({"approvalId": UNKNOWN_APPROVAL, "choice": "always_allow", "pattern": long}),
            "invalid_argument",
            "pattern",
        ),
        (
            "decide_approval",
            json!({"approvalId": UNKNOWN_APPROVAL, "choice": "approve"}),
            "not_found",
            "approvalId",
        ),
        ("remove_rule", json!({"id": 0}), "invalid_argument", "id"),
        ("remove_rule", json!({"id": "1"}), "invalid_argument", "id"),
        ("remove_rule", json!({"id": 1.5}), "invalid_argument", "id"),
        (
            "admit_pairing",
            json!({"channel": "telegram", "code": ""}),
            "invalid_argument",
            "code",
        ),
        (
            "admit_pairing",
            json!({"channel": "telegram", "code": "ABCD0000"}),
            "invalid_argument",
            "code",
        ),
        (
            "admit_pairing",
            json!({"channel": "telegram", "code": "ABC"}),
            "invalid_argument",
            "code",
        ),
        (
            "admit_pairing",
            json!({"channel": "telegram", "code": long}),
            "invalid_argument",
            "code",
        ),
        (
            "admit_pairing",
            json!({"channel": "", "code": "ABCD2345"}),
            "invalid_argument",
            "channel",
        ),
        (
            "admit_pairing",
            json!({"channel": "irc", "code": "ABCD2345"}),
            "not_found",
            "channel",
        ),
        (
            "admit_pairing",
            json!({"channel": "telegram", "code": "ABCD2345"}),
            "not_found",
            "code",
        ),
        (
            "refuse_pairing",
            json!({"channel": "telegram", "code": ["ABCD2345"]}),
            "invalid_argument",
            "code",
        ),
        (
            "refuse_pairing",
            json!({"channel": "telegram"}),
            "invalid_argument",
            "code",
        ),
        (
            "desktop_send",
            json!({"chatId": "../etc", "text": "hi", "clientId": "m1"}),
            "invalid_argument",
            "chatId",
        ),
        (
            "desktop_send",
            json!({"chatId": "c1", "text": "   ", "clientId": "m1"}),
            "invalid_argument",
            "text",
        ),
        (
            "desktop_send",
            json!({"chatId": "c1", "text": "hi", "clientId": "a\nb"}),
            "invalid_argument",
            "clientId",
        ),
        (
            "desktop_send",
            json!({"chatId": "c1", "text": "x".repeat(100_001), "clientId": "m1"}),
            "invalid_argument",
            "text",
        ),
        (
            "desktop_transcript",
            json!({"chatId": long}),
            "invalid_argument",
            "chatId",
        ),
        (
            "say",
            json!({"routingKey": "telegram:dm:nobody", "text": "hi", "clientId": "m1"}),
            "not_found",
            "routingKey",
        ),
        (
            "open_quick_chat",
            json!({"routingKey": ""}),
            "invalid_argument",
            "routingKey",
        ),
    ];
    for (command, args, code, field) in cases {
        let error = rig.err(command, args.clone());
        assert_eq!(
            (error["code"].as_str(), error["field"].as_str()),
            (Some(code), Some(field)),
            "{command} {args}: {error}"
        );
        let message = error["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{command}: the error says why");
        assert!(
            !message.contains("X-Evil") && !message.contains(&long[..40]),
            "a refused value is not repeated at length: {message}"
        );
    }
    // Nothing was changed by the refused calls, and the app still answers.
    let snapshot = rig.ok("snapshot", json!({}));
    assert_eq!(snapshot["engine_running"], true);
    assert_eq!(snapshot["paused"], false);
    assert_eq!(snapshot["channels"][0]["enabled"], true);
}

/// Every command's arguments, as the page names them.
const ARGUMENTS: &[(&str, &[&str])] = &[
    ("snapshot", &[]),
    ("conversations", &[]),
    ("history", &["routingKey"]),
    ("cancel_run", &["routingKey"]),
    ("set_paused", &["paused"]),
    ("set_approval_mode", &["mode"]),
    ("set_channel_enabled", &["name", "enabled"]),
    ("set_do_not_disturb", &["on"]),
    ("set_autostart", &["on"]),
    ("test_channel", &["name", "settings"]),
    ("test_connection", &["url", "token"]),
    ("check_server", &[]),
    ("settings", &[]),
    ("save_settings", &["config"]),
    ("import_autopilot", &["into"]),
    ("connect_autopilot", &[]),
    ("activity", &[]),
    ("approvals", &[]),
    ("decide_approval", &["approvalId", "choice", "pattern"]),
    ("remove_rule", &["id"]),
    ("pairing_requests", &[]),
    ("admit_pairing", &["channel", "code"]),
    ("refuse_pairing", &["channel", "code"]),
    ("desktop_transcript", &["chatId"]),
    ("desktop_send", &["chatId", "text", "clientId"]),
    ("say", &["routingKey", "text", "clientId"]),
    ("open_quick_chat", &["routingKey"]),
    ("close_quick_chat", &[]),
];

#[test]
fn no_command_panics_or_answers_an_untyped_error_on_odd_input() {
    let names: Vec<&str> = ARGUMENTS.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, COMMAND_NAMES, "every command is in this table");
    let rig = Rig::start_pairing();
    let odd = [
        json!(null),
        json!(-1),
        json!(i64::MAX),
        json!(9.75),
        json!(""),
        json!("\u{0}\u{202e}\u{fffd}"),
        json!("x".repeat(100_000)),
        json!({"nested": [[[]]]}),
    ];
    for (command, arguments) in ARGUMENTS {
        for value in &odd {
            let args: serde_json::Map<String, Value> = arguments
                .iter()
                .map(|name| ((*name).to_owned(), value.clone()))
                .collect();
            if let Err(error) = rig.invoke(command, Value::Object(args)) {
                assert!(
                    error["code"].is_string() && error["message"].is_string(),
                    "{command} with {value}: a typed error, not {error}"
                );
            }
        }
    }
    assert_eq!(rig.ok("snapshot", json!({}))["engine_running"], true);
}
