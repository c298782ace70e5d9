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
use crate::ipc::{commands, UiEvent, COMMAND_NAMES};
use crate::notify::Toast;
use crate::shell::{Host, Shell, ShellOptions};
use crate::tray::TrayModel;

const WAIT: Duration = Duration::from_secs(15);

/// Records what the shell shows.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<UiEvent>>,
    trays: Mutex<Vec<TrayModel>>,
    toasts: Mutex<Vec<Toast>>,
    shown: Mutex<usize>,
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
    fn show_window(&self, _page: Option<crate::ipc::Page>, _routing_key: Option<String>) {
        *self.shown.lock().expect("lock") += 1;
    }
}

impl Recorder {
    fn last_tray(&self) -> Option<TrayModel> {
        self.trays.lock().expect("lock").last().cloned()
    }
    fn toasts(&self) -> Vec<Toast> {
        self.toasts.lock().expect("lock").clone()
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
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_path_buf();
        let fake = with_fake.then(|| block_on(FakeStakpak::start()));
        let config_file = root.join("config").join("config.toml");
        std::fs::create_dir_all(config_file.parent().expect("parent")).expect("config dir");
        match (text, &fake) {
            (Some(text), _) => std::fs::write(&config_file, text).expect("config"),
            (None, Some(fake)) => std::fs::write(&config_file, config_text(fake)).expect("config"),
            (None, None) => {}
        }
        let chat = MemoryChannel::new(
            "chat",
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
            engine: fast_options(),
            autostart: Autostart::new(
                &root.join("autostart"),
                vec!["switchboard".into(), "--hidden".into()],
            ),
            autopilot_file: Some(root.join("autopilot.toml")),
            extra_channels: vec![Arc::new(chat.clone())],
        });
        let host = Arc::new(Recorder::default());
        shell.set_host(host.clone());
        let app = mock_builder()
            .manage(Arc::clone(&shell))
            .invoke_handler(commands())
            .build(tauri::generate_context!("tauri.conf.json"))
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
    let activity = rig.ok("activity", json!({}));
    assert!(
        activity
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["kind"] == "reply_delivered"),
        "the reply is in the activity log"
    );
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
    config["api"]["listen"] = json!("0.0.0.0:4097");
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
    let tray = rig.host.last_tray().expect("tray");
    assert_eq!(tray.icon, crate::tray::TrayIconState::Problem);
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
    let client = reqwest::Client::new();
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
