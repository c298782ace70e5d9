//! End to end: the real desktop app — its window driven over WebDriver, its tray over dbusmenu,
//! its notifications on a real daemon — with the real engine, the fake agent server and the fake
//! Telegram Bot API from the test kit.
//!
//! Runs under `scripts/test.sh` (Xvfb, a D-Bus session, `SWITCHBOARD_E2E=1`); elsewhere each test
//! prints why it skips and passes. The tests take turns: there is one app instance at a time.

mod app;
mod chat;
mod env;
mod notifier;
mod tray;

use std::time::Duration;

use serde_json::json;
use switchboard_testkit::stakpak::FakeStakpak;
use switchboard_testkit::telegram::FakeTelegram;

use app::{free_port, App, Files};
use tray::Tray;

/// One app at a time (the app is single-instance, and the tray and the bus are shared).
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A one-pixel PNG (red), as a phone would send a screenshot.
const TINY_PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x00, 0x00, 0x00, 0x90, 0x77, 0x53,
    0xDE, 0x00, 0x00, 0x00, 0x0C, 0x49, 0x44, 0x41, 0x54, 0x08, 0xD7, 0x63, 0xF8, 0xCF, 0xC0, 0x00,
    0x00, 0x03, 0x01, 0x01, 0x00, 0x18, 0xDD, 0x8D, 0xB0, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E,
    0x44, 0xAE, 0x42, 0x60, 0x82,
];

/// The user writing to the bot in the tests.
const USER: i64 = 4242;
const API_TOKEN: &str = "e2e-api-token";

struct Fakes {
    stakpak: FakeStakpak,
    telegram: FakeTelegram,
    api_port: u16,
}

impl Fakes {
    async fn start() -> Fakes {
        Fakes {
            stakpak: FakeStakpak::start().await,
            telegram: FakeTelegram::start().await,
            api_port: free_port(),
        }
    }

    /// A configuration for the fakes, with a comment that must survive every save.
    fn config(&self) -> String {
        format!(
            "# Switchboard e2e configuration (this comment must survive saving)\n\
             [server]\nurl = \"{}\"\ntoken = \"{}\"\n\n\
             [gateway]\napproval_mode = \"ask\"\n\n\
             [api]\nlisten = \"127.0.0.1:{}\"\ntoken = \"{API_TOKEN}\"\n\n\
             [channels.telegram]\ntoken = \"{}\"\napi_base = \"{}\"\ndm_policy = \"open\"\nallowed_users = [{USER}]\nowners = [{USER}]\n",
            self.stakpak.url(),
            self.stakpak.token().unwrap_or_default(),
            self.api_port,
            self.telegram.token(),
            self.telegram.api_base(),
        )
    }

    /// Waits until the bot's reply reached the user's chat on the fake platform.
    async fn reply_in_chat(&self, expected: &str) {
        let expected = expected.to_owned();
        self.telegram
            .wait_for(&format!("the reply {expected:?} in the chat"), |tg| {
                tg.sent_to(USER).iter().any(|s| s.text == expected)
            })
            .await;
    }
}

/// How many of the bot's messages in the test user's chat now start with `prefix`, as people
/// see them (a reply may be a message that showed the tool at work, edited into the answer).
fn shown_in_chat(tg: &FakeTelegram, prefix: &str) -> usize {
    tg.shown_to(USER)
        .iter()
        .filter(|text| text.starts_with(prefix))
        .count()
}

/// Starts the app on the fakes' configuration and waits until Telegram is connected.
async fn launch_connected(env: &env::Env, files: &Files, fakes: &Fakes) -> App {
    files.write_config(&fakes.config());
    let app = App::launch(env, files).await;
    app.wait_for(
        "Telegram connected",
        "[data-testid=channel-telegram][data-state=connected]",
    )
    .await;
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_message_shows_in_sessions_with_its_reply() {
    let Some(env) = env::get() else { return };
    let _turn = TURN.lock().await;
    let fakes = Fakes::start().await;
    let files = Files::new("chat");
    let app = launch_connected(env, &files, &fakes).await;
    app.screenshot("channels").await;

    fakes.telegram.send_dm(USER, "Ada", "hello switchboard");
    fakes.reply_in_chat("echo: hello switchboard").await;

    app.page("sessions").await;
    // Found again if the list is redrawn as the reply's events arrive.
    app.click("[data-testid^=conversation-]").await;
    let messages = app
        .wait_text("[data-testid=messages]", "echo: hello switchboard")
        .await;
    assert!(
        messages.contains("hello switchboard"),
        "the user's message is in the history: {messages}"
    );
    let journal = app.wait_text(".journal", "replied").await;
    assert!(
        journal.contains("hello switchboard"),
        "the journal shows what the chat sent: {journal}"
    );

    // A photo and a file: the history shows the picture and names the file.
    fakes.telegram.send_media_dm(
        &switchboard_testkit::telegram::Person::new(USER, "Ada"),
        switchboard_testkit::telegram::Media::Photo(TINY_PNG.to_vec()),
        Some("see this"),
    );
    fakes
        .telegram
        .wait_for("the answer to the photo", |tg| {
            tg.sent_to(USER)
                .iter()
                .any(|s| s.text.starts_with("echo: see this"))
        })
        .await;
    fakes.telegram.send_media_dm(
        &switchboard_testkit::telegram::Person::new(USER, "Ada"),
        switchboard_testkit::telegram::Media::Document {
            name: "deploy.log".into(),
            mime: "text/plain".into(),
            bytes: b"step 1 ok\nstep 2 failed\n".to_vec(),
        },
        None,
    );
    app.wait_for(
        "the photo shown in the history",
        "[data-testid=attachment][data-kind=image] [data-testid=thumbnail]",
    )
    .await;
    let files = app
        .wait_text("[data-testid=attachment][data-kind=document]", "deploy.log")
        .await;
    assert!(files.contains("B"), "the file's size is shown: {files}");

    // A run that waits: the window shows it running, with the reply being written, then the reply.
    fakes
        .telegram
        .send_dm(USER, "Ada", "HOLD e2e-gate think first");
    app.wait_for("the live reply", "[data-testid=live-reply]")
        .await;
    app.wait_for(
        "the cancel button enabled",
        "[data-testid=cancel-run]:not([disabled])",
    )
    .await;
    app.screenshot("sessions").await;
    fakes.stakpak.release("e2e-gate");
    app.wait_text("[data-testid=messages]", "echo: HOLD e2e-gate think first")
        .await;
    fakes.reply_in_chat("echo: HOLD e2e-gate think first").await;

    app.page("activity").await;
    app.wait_text(".activity-list", "Reply delivered to telegram")
        .await;
    app.fill("[data-testid=activity-search]", "reply delivered")
        .await;
    let entries = app.find_all("[data-testid=activity-entry]").await;
    assert!(!entries.is_empty());
    for entry in entries {
        let kind = entry
            .attr("data-kind")
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        assert_eq!(
            kind, "reply_delivered",
            "the search keeps only matching entries"
        );
    }
    app.screenshot("activity").await;
    app.page("approvals").await;
    app.wait_text("[data-testid=no-approvals]", "Nothing waits")
        .await;
    app.page("settings").await;
    app.find("[data-testid=settings-form]").await;
    app.screenshot("settings").await;
    app.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_a_channel_off_in_the_tray_shows_everywhere_and_disconnects() {
    let Some(env) = env::get() else { return };
    let _turn = TURN.lock().await;
    let fakes = Fakes::start().await;
    let files = Files::new("tray-channel");
    let app = launch_connected(env, &files, &fakes).await;
    fakes
        .telegram
        .wait_for("the bot polling for updates", |tg| tg.active_polls() > 0)
        .await;

    let tray = Tray::find();
    let item = tray.wait_item("Telegram connected in the tray", "Telegram", |i| {
        i.label == "Telegram (connected)"
    });
    assert_eq!(
        item.toggle_state,
        Some(1),
        "the channel's item is checked while it is on"
    );
    tray.click("Telegram");

    app.wait_for(
        "Telegram off in the window",
        "[data-testid=channel-telegram][data-enabled=false][data-state=disabled]",
    )
    .await;
    tray.wait_item("Telegram unchecked in the tray", "Telegram", |i| {
        i.toggle_state == Some(0) && i.label == "Telegram (off)"
    });
    fakes
        .telegram
        .wait_for("the bot to stop polling", |tg| tg.active_polls() == 0)
        .await;
    let polls = fakes.telegram.requests_for("getUpdates").len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        fakes.telegram.requests_for("getUpdates").len(),
        polls,
        "a channel turned off stops polling the platform"
    );
    assert!(
        files.read_config().contains("enabled = false"),
        "the choice is saved:\n{}",
        files.read_config()
    );

    // And back on, from the window this time.
    app.click("label[for=channel-toggle-telegram]").await;
    app.wait_for(
        "Telegram connected again",
        "[data-testid=channel-telegram][data-state=connected]",
    )
    .await;
    tray.wait_item("Telegram checked again in the tray", "Telegram", |i| {
        i.toggle_state == Some(1)
    });
    fakes
        .telegram
        .wait_for("the bot polling again", |tg| tg.active_polls() > 0)
        .await;
    app.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approval_mode_set_in_the_window_shows_in_the_tray_and_back() {
    let Some(env) = env::get() else { return };
    let _turn = TURN.lock().await;
    let fakes = Fakes::start().await;
    let files = Files::new("approval-mode");
    let app = launch_connected(env, &files, &fakes).await;
    let tray = Tray::find();
    assert_eq!(
        tray.item("Ask").toggle_state,
        Some(1),
        "the configuration says ask"
    );

    let select = app.find("[data-testid=approval-mode]").await;
    select
        .select_by_value("allow_all")
        .await
        .unwrap_or_else(|e| panic!("cannot choose a mode: {e}"));
    tray.wait_item("Allow all checked in the tray", "Allow all", |i| {
        i.toggle_state == Some(1)
    });
    for other in ["Ask", "Allowlist", "Deny all"] {
        assert_eq!(
            tray.item(other).toggle_state,
            Some(0),
            "{other} is unchecked: the modes act as radio items"
        );
    }
    assert!(
        files
            .read_config()
            .contains("approval_mode = \"allow_all\""),
        "{}",
        files.read_config()
    );

    tray.click("Deny all");
    let deadline = std::time::Instant::now() + app::WAIT;
    while app.value("[data-testid=approval-mode]").await != "deny_all" {
        assert!(
            std::time::Instant::now() < deadline,
            "the window never showed the mode chosen in the tray"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    tray.wait_item("Allow all unchecked", "Allow all", |i| {
        i.toggle_state == Some(0)
    });
    app.quit().await;
}

/// Waits for the window process to be started ahead of a click (the tray menu opened, a
/// notification shown), and checks that no window shows before the click.
fn wait_started_ahead(app: &App) {
    if let Err(e) = env::wait_until("the window process started ahead", app::WAIT, || {
        app.children()
            .iter()
            .any(|name| name.starts_with("switchboard-win"))
    }) {
        panic!("{e}: {:?}", app.children());
    }
    assert!(
        app::x_windows("^Switchboard").is_empty(),
        "no window before the click"
    );
}

/// Sends watch notification `text` with a context to the test user's Telegram chat, as
/// Stakpak's watch scheduler does.
async fn watch_notification(fakes: &Fakes, text: &str) {
    let response = switchboard_engine::http::client()
        .post(format!("http://127.0.0.1:{}/v1/gateway/send", fakes.api_port))
        .bearer_auth(API_TOKEN)
        .json(&json!({
            "channel": "telegram",
            "target": USER.to_string(),
            "text": text,
            "context": {"schedule": "disk", "status": "failed", "summary": "disk 95% full", "check_output": "/dev/sda1 95%"}
        }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("the gateway API did not answer: {e}"));
    assert!(
        response.status().is_success(),
        "send: {}",
        response.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_notification_and_the_reply_to_it_raise_notifications() {
    let Some(env) = env::get() else { return };
    let _turn = TURN.lock().await;
    let fakes = Fakes::start().await;
    let files = Files::new("notifications");
    let app = launch_connected(env, &files, &fakes).await;
    // The user has written to the bot before (a bot cannot start a private chat).
    fakes.telegram.send_dm(USER, "Ada", "hi");
    fakes.reply_in_chat("echo: hi").await;
    let before = env.notifications.all().len();

    watch_notification(&fakes, "Disk check failed on web-1").await;
    fakes
        .telegram
        .wait_for("the notification in the chat", |tg| {
            tg.sent_to(USER)
                .iter()
                .any(|s| s.text == "Disk check failed on web-1")
        })
        .await;

    let summary = format!("telegram/{USER}");
    let first = wait_notification(env, before, |n| n.summary == summary).await;
    assert_eq!(first.app, "Switchboard");
    assert_eq!(first.body, "Disk check failed on web-1");

    fakes.telegram.send_dm(USER, "Ada", "what should I do?");
    fakes
        .telegram
        .wait_for("the agent's reply in the chat", |tg| {
            tg.sent_to(USER)
                .iter()
                .any(|s| s.text.starts_with("echo: [Watch notification context]"))
        })
        .await;
    let reply_summary = format!("Reply in telegram/{USER}");
    let second = wait_notification(env, before, |n| n.summary == reply_summary).await;
    assert!(
        second
            .body
            .starts_with("echo: [Watch notification context]"),
        "the start of the reply: {second:?}"
    );
    assert!(
        second.actions.iter().any(|a| a == "default"),
        "a click opens the conversation: {second:?}"
    );
    let raised: Vec<_> = env.notifications.all().into_iter().skip(before).collect();
    assert_eq!(
        raised.len(),
        2,
        "each event raises one notification: {raised:#?}"
    );

    // The window is closed (its webview goes; the tray and the engine stay): a click on the
    // notification, through the daemon, opens a new window on the conversation.
    app.page("channels").await;
    app.close_window().await;
    let tray = Tray::find();
    assert!(
        tray.item("Open Switchboard").enabled,
        "the app is still in the tray"
    );
    // A notification that opens a conversation, shown while no window is open, has the window
    // process started ahead of the click; no window shows until then.
    if let Err(e) = env::wait_until("the window process to end", app::WAIT, || {
        app.children().is_empty()
    }) {
        panic!("{e}: {:?}", app.children());
    }
    let shown = env.notifications.all().len();
    watch_notification(&fakes, "Disk check failed on web-2").await;
    wait_notification(env, shown, |n| n.body == "Disk check failed on web-2").await;
    wait_started_ahead(&app);
    if let Err(e) = std::fs::write(env.dir.join("pick"), "Open conversation") {
        panic!("cannot choose the action: {e}");
    }
    let clicked = std::process::Command::new("dunstctl")
        .arg("context")
        .status();
    assert!(
        clicked.is_ok_and(|s| s.success()),
        "dunstctl context failed"
    );
    app.follow_new_window().await;
    app.wait_for("the Sessions page", "[data-page=sessions]")
        .await;
    app.wait_for(
        "the conversation open",
        "[data-testid^=conversation-][aria-current=true]",
    )
    .await;
    app.wait_text("[data-testid=messages]", "what should I do?")
        .await;

    // Closed and opened again from the tray, the window comes back where it was. The menu
    // opening starts the window process ahead of the click; no window shows before it.
    app.close_window().await;
    tray.open_menu();
    wait_started_ahead(&app);
    tray.click("Open Switchboard");
    app.follow_new_window().await;
    app.wait_for("the Sessions page again", "[data-page=sessions]")
        .await;
    app.wait_text("[data-testid=messages]", "what should I do?")
        .await;

    // A menu opened and closed without asking for a window: the process started ahead ends by
    // itself (10 s), and the tray weighs what it did.
    app.close_window().await;
    tray.open_menu();
    if let Err(e) = env::wait_until("the window process started ahead", app::WAIT, || {
        !app.children().is_empty()
    }) {
        panic!("{e}");
    }
    if let Err(e) = env::wait_until("the unused window process to end", app::WAIT, || {
        app.children().is_empty()
    }) {
        panic!("{e}: {:?}", app.children());
    }
    assert!(
        app::x_windows("^Switchboard").is_empty(),
        "no window was shown"
    );
    app.quit().await;
}

/// A message whose run proposes a `run_command` call (with a secret in it), which waits for a
/// decision in `ask` mode.
const RUN_LS: &str = r#"USE_TOOL run_command {"command": "ls", "api_token": "abc123"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_decided_from_the_window_and_from_the_notification() {
    let Some(env) = env::get() else { return };
    let _turn = TURN.lock().await;
    let fakes = Fakes::start().await;
    let files = Files::new("approvals");
    let app = launch_connected(env, &files, &fakes).await;
    let tray = Tray::find();
    let before = env.notifications.all().len();

    // A call waits: the Approvals page lists it, readable and masked, with its countdown.
    fakes.telegram.send_dm(USER, "Ada", RUN_LS);
    app.page("approvals").await;
    let card = app
        .wait_text("[data-testid=approval]", "stakpak__run_command")
        .await;
    assert!(
        card.contains("api_token: ••••••") && card.contains("command: ls"),
        "readable arguments: {card}"
    );
    assert!(!card.contains("abc123"), "the secret is masked: {card}");
    // Asked for, the window shows the arguments exactly as sent.
    app.click("[data-testid=approval] details summary").await;
    app.click("[data-testid=approval] [data-testid=reveal-arguments]")
        .await;
    app.wait_text(
        "[data-testid=approval] [data-testid=approval-arguments]",
        "abc123",
    )
    .await;
    app.wait_for("the countdown", "[data-testid=countdown][data-deadline]")
        .await;
    // The tray counts it and its item opens the page.
    let item = tray.wait_item("the count in the tray", "Pending approvals", |i| {
        i.label == "Pending approvals (1)" && i.enabled
    });
    assert!(item.enabled);
    // A notification with the two actions is on the bus.
    let first = wait_notification(env, before, |n| n.summary.ends_with("asks to run `ls`")).await;
    assert_eq!(first.app, "Switchboard");
    assert!(!first.body.contains("abc123"), "{first:?}");
    assert_eq!(
        first.actions,
        ["open", "Open Switchboard", "reject", "Reject"],
        "a call with a masked secret is not approved unseen: Open and Reject: {first:?}"
    );
    app.screenshot("approvals").await;

    // Approve in the window: the run finishes with its reply in the chat, the decision is in the
    // history, and the notification is withdrawn.
    let withdrawn = env.notifications.withdrawn();
    app.click("[data-testid=approval] [data-testid=approve]")
        .await;
    fakes
        .telegram
        .wait_for("the run's reply in the chat", |tg| {
            shown_in_chat(tg, "done:") >= 1
        })
        .await;
    app.wait_text("[data-testid=decision]", "Approved").await;
    app.wait_for("the list empty", "[data-testid=no-approvals]")
        .await;
    assert_eq!(fakes.stakpak.decisions().len(), 1, "one decision");
    let deadline = std::time::Instant::now() + app::WAIT;
    while env.notifications.withdrawn() <= withdrawn {
        assert!(
            std::time::Instant::now() < deadline,
            "the notification of the approval decided in the window was not withdrawn"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tray.wait_item("the count back to zero", "Pending approvals", |i| {
        i.label == "Pending approvals (0)" && !i.enabled
    });

    // Another call, shown whole this time; Approve is invoked on its notification through the
    // daemon.
    app.page("channels").await;
    let before = env.notifications.all().len();
    fakes
        .telegram
        .send_dm(USER, "Ada", r#"USE_TOOL run_command {"command": "ls"}"#);
    let second = wait_notification(env, before, |n| n.actions.iter().any(|a| a == "approve")).await;
    assert!(second.summary.ends_with("asks to run `ls`"), "{second:?}");
    tray.wait_item("the count in the tray again", "Pending approvals", |i| {
        i.label == "Pending approvals (1)"
    });
    tray.click("Pending approvals");
    app.wait_for(
        "the Approvals page opened from the tray",
        "[data-page=approvals]",
    )
    .await;
    app.wait_for("the second call listed", "[data-testid=approval]")
        .await;
    if let Err(e) = std::fs::write(env.dir.join("pick"), "Approve") {
        panic!("cannot choose the action: {e}");
    }
    let invoked = std::process::Command::new("dunstctl")
        .arg("context")
        .status();
    assert!(
        invoked.is_ok_and(|s| s.success()),
        "dunstctl context failed"
    );
    fakes
        .telegram
        .wait_for("the second run's reply in the chat", |tg| {
            shown_in_chat(tg, "done:") >= 2
        })
        .await;
    app.wait_for("the list empty again", "[data-testid=no-approvals]")
        .await;
    app.wait_for(
        "the decision from the notification in the history",
        "[data-testid=decision][data-surface=notification]",
    )
    .await;
    assert_eq!(fakes.stakpak.decisions().len(), 2, "one decision per call");
    assert!(fakes.stakpak.misdecisions().is_empty());
    app.screenshot("approvals-history").await;
    app.quit().await;
}

/// Someone the user has not admitted (not in `allowed_users`).
const STRANGER: i64 = 5151;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_is_admitted_from_the_window_and_then_answered() {
    let Some(env) = env::get() else { return };
    let _turn = TURN.lock().await;
    let fakes = Fakes::start().await;
    let files = Files::new("pairing");
    // Strangers get a pairing code (the default policy); the user stays allowed.
    files.write_config(
        &fakes
            .config()
            .replace("dm_policy = \"open\"", "dm_policy = \"pairing\""),
    );
    let app = App::launch(env, &files).await;
    app.wait_for(
        "Telegram connected",
        "[data-testid=channel-telegram][data-state=connected]",
    )
    .await;
    let tray = Tray::find();
    let before = env.notifications.all().len();

    fakes
        .telegram
        .send_dm(STRANGER, "Bea", "hello <b>agent</b>, are you there?");
    fakes
        .telegram
        .wait_for("the pairing code in the stranger's chat", |tg| {
            !tg.sent_to(STRANGER).is_empty()
        })
        .await;
    let reply = fakes.telegram.sent_to(STRANGER)[0].text.clone();
    let code: String = match reply.find("pairing code is ") {
        Some(at) => reply[at + "pairing code is ".len()..]
            .chars()
            .take(8)
            .collect(),
        None => panic!("no pairing code in {reply:?}"),
    };

    // The window says so on any page, and lists the request where approvals are.
    app.click("[data-testid=pairing-banner] button").await;
    app.wait_for("the Approvals page", "[data-page=approvals]")
        .await;
    let card = app.wait_text("[data-testid=pairing]", "Bea").await;
    assert!(
        card.contains("Telegram")
            && card.contains(&code)
            && card.contains("hello <b>agent</b>, are you there?"),
        "the sender, channel, code and first message, as text: {card}"
    );
    // A notification with Admit and Refuse, the stranger's markup escaped; the tray counts it.
    let shown = wait_notification(env, before, |n| {
        n.summary.ends_with("asks to talk to the agent")
    })
    .await;
    assert_eq!(
        shown.actions,
        ["admit", "Admit", "refuse", "Refuse"],
        "{shown:?}"
    );
    assert!(
        shown.body.contains("&lt;b&gt;agent&lt;/b&gt;") && shown.body.contains(&code),
        "{shown:?}"
    );
    tray.wait_item(
        "the request counted in the tray",
        "Pending approvals",
        |i| i.label == "Pending approvals (0) · pairing requests (1)" && i.enabled,
    );
    app.screenshot("pairing").await;
    assert!(
        fakes.stakpak.posted_messages().is_empty(),
        "nothing of a stranger reaches the agent server"
    );

    // Admit: the request leaves the list and its notification, and the next message is answered.
    let withdrawn = env.notifications.withdrawn();
    app.click("[data-testid=pairing] [data-testid=admit]").await;
    app.wait_for("the list empty", "[data-testid=no-pairings]")
        .await;
    let deadline = std::time::Instant::now() + app::WAIT;
    while env.notifications.withdrawn() <= withdrawn {
        assert!(
            std::time::Instant::now() < deadline,
            "the notification of the request admitted in the window was not withdrawn"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fakes.telegram.send_dm(STRANGER, "Bea", "now?");
    fakes
        .telegram
        .wait_for("the agent's reply to the admitted sender", |tg| {
            tg.sent_to(STRANGER).iter().any(|s| s.text == "echo: now?")
        })
        .await;
    let posted: Vec<String> = fakes
        .stakpak
        .posted_messages()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(
        posted,
        ["now?"],
        "only the message after admission reached the agent"
    );
    tray.wait_item("the tray count back to zero", "Pending approvals", |i| {
        i.label == "Pending approvals (0)"
    });
    app.quit().await;
}

/// Waits for a notification after the first `skip` that matches `check`.
async fn wait_notification(
    env: &env::Env,
    skip: usize,
    check: impl Fn(&env::Notification) -> bool,
) -> env::Notification {
    let deadline = std::time::Instant::now() + app::WAIT;
    loop {
        if let Some(found) = env.notifications.all().into_iter().skip(skip).find(&check) {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no such notification on the bus; seen: {:#?}",
            env.notifications.all()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_saved_in_the_window_are_in_the_file_and_survive_a_restart() {
    let Some(env) = env::get() else { return };
    let _turn = TURN.lock().await;
    let fakes = Fakes::start().await;
    let files = Files::new("settings");
    let app = launch_connected(env, &files, &fakes).await;
    app.page("settings").await;
    // Tokens are masked until revealed, and the file kept references, not tokens, since start.
    let tg_token = fakes.telegram.token();
    let server_token = fakes.stakpak.token().unwrap_or_default();
    let token_field = "[data-testid=field-channels-telegram-token]";
    assert_eq!(
        app.attr(token_field, "type").await.as_deref(),
        Some("password")
    );
    assert!(
        !app.page_text().await.contains(&tg_token),
        "no token on the page"
    );
    app.click("[data-key=field-channels-telegram-token-reveal]")
        .await;
    assert_eq!(app.attr(token_field, "type").await.as_deref(), Some("text"));
    assert_eq!(
        app.value(token_field).await,
        tg_token,
        "revealed on request"
    );
    app.click("[data-key=field-channels-telegram-token-reveal]")
        .await;
    app.fill("[data-testid=field-gateway-model]", "e2e-model")
        .await;
    app.fill(
        "[data-testid=field-notifications-quiet_hours_start]",
        "22:00",
    )
    .await;
    app.fill("[data-testid=field-notifications-quiet_hours_end]", "07:00")
        .await;
    app.fill(
        "[data-testid=field-gateway-approval_allowlist]",
        "view, read_file",
    )
    .await;
    app.click("[data-testid=settings-save]").await;
    app.wait_text("[data-testid=notice]", "Settings saved")
        .await;

    let text = files.read_config();
    assert!(text.contains("model = \"e2e-model\""), "{text}");
    assert!(text.contains("quiet_hours_start = \"22:00\""), "{text}");
    assert!(text.contains("quiet_hours_end = \"07:00\""), "{text}");
    assert!(
        text.contains("approval_allowlist = [\"view\", \"read_file\"]"),
        "{text}"
    );
    assert!(
        text.starts_with("# Switchboard e2e configuration"),
        "the file's comments are kept: {text}"
    );
    for token in [&tg_token, &server_token] {
        assert!(
            !text.contains(token.as_str()),
            "no token in the file: {text}"
        );
    }
    assert!(
        text.contains(":channels.telegram.token\"") && text.contains(":server.token\""),
        "the file refers to where the tokens are: {text}"
    );

    // A mistake is refused, named, and not written.
    app.fill("[data-testid=field-api-listen]", "localhost:4097")
        .await;
    app.click("[data-testid=settings-save]").await;
    app.wait_text("[data-testid=field-problem]", "IP address")
        .await;
    assert!(
        !files.read_config().contains("localhost:4097"),
        "nothing is written when the settings are wrong"
    );

    // The window is closed with that edit unsaved (its page goes with it) and opened again from
    // the tray: Settings comes back with the edit, and says so, scrolled where it was (down to
    // the field the mistake was in).
    let scrolled = app.scroll_top("#content").await;
    assert!(scrolled > 100.0, "scrolled to the mistake: {scrolled}");
    app.close_window().await;
    let tray = Tray::find();
    tray.open_menu();
    tray.click("Open Switchboard");
    app.follow_new_window().await;
    app.wait_for("Settings again", "[data-page=settings]").await;
    app.wait_text("[data-testid=notice]", "Your unsaved settings are back")
        .await;
    assert_eq!(
        app.value("[data-testid=field-api-listen]").await,
        "localhost:4097",
        "the unsaved edit is back"
    );
    assert_eq!(
        app.value("[data-testid=field-gateway-model]").await,
        "e2e-model",
        "what was saved is there too"
    );
    let back = app.scroll_top("#content").await;
    assert!(
        (back - scrolled).abs() < 50.0,
        "scrolled where it was: {back}, was {scrolled}"
    );
    app.quit().await;
    let log = files.app_log();
    assert!(log.contains("settings saved"), "the scan covers the log");
    for token in [&tg_token, &server_token] {
        assert!(!log.contains(token.as_str()), "no token in the app's log");
    }

    let app = App::launch(env, &files).await;
    app.page("settings").await;
    assert_eq!(
        app.value("[data-testid=field-gateway-model]").await,
        "e2e-model"
    );
    assert_eq!(
        app.value("[data-testid=field-notifications-quiet_hours_start]")
            .await,
        "22:00"
    );
    assert_eq!(
        app.value("[data-testid=field-notifications-quiet_hours_end]")
            .await,
        "07:00"
    );
    assert_eq!(
        app.value("[data-testid=field-gateway-approval_allowlist]")
            .await,
        "view, read_file"
    );

    // About names the version and the files; the diagnostics have the channels and no token.
    let about = app.wait_text("[data-testid=about]", "Version").await;
    assert!(about.contains(env!("CARGO_PKG_VERSION")), "{about}");
    assert!(
        about.contains(&files.data().display().to_string()),
        "{about}"
    );
    app.click("[data-testid=copy-diagnostics]").await;
    app.wait_for("the diagnostics", "[data-testid=diagnostics]")
        .await;
    let report = app.value("[data-testid=diagnostics]").await;
    assert!(report.contains("telegram:"), "{report}");
    for token in [&tg_token, &server_token] {
        assert!(
            !report.contains(token.as_str()),
            "no token in the diagnostics"
        );
    }
    app.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_run_and_a_broken_file_open_on_settings_and_say_why() {
    let Some(env) = env::get() else { return };
    let _turn = TURN.lock().await;
    let files = Files::new("first-run");
    let app = App::launch(env, &files).await;
    app.wait_for("the Settings page", "[data-page=settings]")
        .await;
    let welcome = app
        .wait_text("[data-testid=first-run]", "no configuration yet")
        .await;
    assert!(
        welcome.contains("agent server"),
        "it explains what is missing: {welcome}"
    );
    app.screenshot("first-run").await;
    app.quit().await;

    // With Stakpak's autopilot.toml in the home directory, the first run offers to import it; saving
    // then creates the file and starts Switchboard on it.
    let stakpak = FakeStakpak::start().await;
    let autopilot = files.root.join("home/.stakpak/autopilot.toml");
    let text = format!(
        "[server]\nurl = \"{}\"\ntoken = \"{}\"\n",
        stakpak.url(),
        stakpak.token().unwrap_or_default()
    );
    if let Err(e) = std::fs::create_dir_all(files.root.join("home/.stakpak"))
        .and_then(|_| std::fs::write(&autopilot, text))
    {
        panic!("cannot write autopilot.toml: {e}");
    }
    let app = App::launch(env, &files).await;
    app.click("[data-testid=import-autopilot]").await;
    app.wait_text("[data-testid=notice]", "Imported server.url")
        .await;
    assert_eq!(
        app.value("[data-testid=field-server-url]").await,
        stakpak.url()
    );
    app.fill(
        "[data-testid=field-api-listen]",
        &format!("127.0.0.1:{}", free_port()),
    )
    .await;
    app.click("[data-testid=settings-save]").await;
    app.wait_text("[data-testid=status-text]", "Running").await;
    assert!(
        files.read_config().contains(&stakpak.url()),
        "saved: {}",
        files.read_config()
    );
    app.page("channels").await;
    app.wait_text("[data-testid=server-state]", "Reachable")
        .await;
    app.quit().await;

    // A file with a mistake: the window still opens, on Settings, naming the field and the fix.

    files.write_config("[gateway]\napproval_mode = \"sometimes\"\n");
    let app = App::launch(env, &files).await;
    let problem = app
        .wait_text("[data-testid=config-problem]", "gateway.approval_mode")
        .await;
    assert!(
        problem.contains("allow_all"),
        "the message says the fix: {problem}"
    );
    app.quit().await;
}
