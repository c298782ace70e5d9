//! The desktop chat in the real window: a message typed there gets its reply as it is written,
//! an approval is answered in place, the quick chat opens by its shortcut and by its command,
//! Esc closes it, a restart keeps the history; and the demo a first run starts shows the whole
//! loop.

use std::process::Command;

use switchboard_testkit::stakpak::{FakeOptions, FakeStakpak};

use crate::app::{self, x_windows, App, Files};
use crate::{env, launch_connected, wait_notification, Fakes, TURN};

/// Waits until an X window titled `pattern` is on the display (or gone, with `present` false).
fn wait_x_window(what: &str, pattern: &str, present: bool) {
    if let Err(e) = env::wait_until(what, app::WAIT, || x_windows(pattern).is_empty() != present) {
        panic!("{e}");
    }
}

/// The main window's X id.
fn main_window() -> u64 {
    match x_windows("^Switchboard$").first() {
        Some(window) => *window,
        None => panic!("no main window on the display"),
    }
}

/// An X window's size, as `xdotool getwindowgeometry` tells it.
fn window_size(window: u64) -> Option<(u32, u32)> {
    let out = Command::new("xdotool")
        .args(["getwindowgeometry", "--shell", &window.to_string()])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.trim().parse().ok())
    };
    Some((value("WIDTH")?, value("HEIGHT")?))
}

/// Types `text` in the chat box and sends it.
async fn say(app: &App, text: &str) {
    app.fill("[data-testid=chat-input]", text).await;
    app.click("[data-testid=chat-send]").await;
    // Shown at once as the person's line, whatever the message before it is still doing.
    app.wait_text("[data-testid=messages]", text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desktop_chat_streams_asks_in_place_keeps_its_history_and_has_a_quick_chat() {
    let Some(env) = env::get() else { return };
    let _turn = TURN.lock().await;
    let fakes = Fakes::start().await;
    let files = Files::new("desktop-chat");
    let app = launch_connected(env, &files, &fakes).await;
    app.page("chat").await;
    app.wait_for("the empty chat's hint", "[data-testid=chat-hint]")
        .await;

    // A reply the model streams: shown while it is written, then whole.
    say(&app, "DRIP 12 3 tell me about the machine").await;
    app.wait_for(
        "the reply shown while it is written",
        "[data-testid=chat-reply-live]",
    )
    .await;
    app.wait_text(
        "[data-testid=chat-reply]",
        "echo: DRIP 12 3 tell me about the machine",
    )
    .await;
    assert!(
        app.find_all("[data-testid=chat-reply-live]")
            .await
            .is_empty(),
        "the reply is finished in place"
    );

    // A message the engine refuses (too long), and one written after it while it was on its
    // way: neither is sent (the second would arrive first), both go back in the box, in order.
    let too_long = "x".repeat(100_001);
    app.script(
        "const box = document.querySelector('[data-testid=chat-input]');
         const enter = () => box.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true }));
         box.value = arguments[0]; enter();
         box.value = 'and what came after it'; enter();",
        vec![serde_json::json!(too_long)],
    )
    .await;
    app.wait_text("[data-testid=notice]", "text is too long (100001 bytes")
        .await;
    let back = app.value("[data-testid=chat-input]").await;
    assert!(
        back.starts_with("xxxx") && back.ends_with("\n\nand what came after it"),
        "both back in the box, in order: {}…{}",
        &back[..10.min(back.len())],
        &back[back.len().saturating_sub(40)..]
    );
    assert!(
        !app.page_text().await.contains("and what came after it"),
        "neither is shown as sent"
    );
    app.script(
        "document.querySelector('[data-testid=chat-input]').value = ''",
        vec![],
    )
    .await;

    // A tool call: asked in the chat (and as a notification), approved there.
    let before = env.notifications.all().len();
    say(&app, r#"USE_TOOL run_command {"command": "ls"}"#).await;
    app.wait_for(
        "the approval in the chat",
        "[data-testid=chat-approval][data-state=pending] [data-testid=chat-approve]",
    )
    .await;
    let asked = wait_notification(env, before, |n| n.actions.iter().any(|a| a == "approve")).await;
    assert!(asked.summary.ends_with("asks to run `ls`"), "{asked:?}");
    app.click("[data-testid=chat-approval] [data-testid=chat-approve]")
        .await;
    app.wait_text("[data-testid=chat-approval-outcome]", "approved by")
        .await;
    app.wait_text("[data-testid=messages]", "done:").await;
    assert_eq!(fakes.stakpak.decisions().len(), 1, "one decision");
    app.screenshot("chat").await;

    // The quick chat, by its shortcut (a key grab on this X server): it opens on the same chat.
    let pressed = Command::new("xdotool")
        .args(["key", "ctrl+alt+space"])
        .status();
    assert!(pressed.is_ok_and(|s| s.success()), "xdotool key failed");
    wait_x_window("the quick chat to open", "Quick chat", true);
    app.follow_window("[data-testid=quick-chat]").await;
    app.wait_text("[data-testid=messages]", "done:").await;
    // Two in a row, each ended with Enter, typed in one go: both are shown, answered, and reach
    // the agent in the order they were written.
    app.fill(
        "[data-testid=chat-input]",
        "and from the quick chat\u{E007}and one more\u{E007}",
    )
    .await;
    app.wait_text("[data-testid=messages]", "and one more")
        .await;
    assert_eq!(
        app.value("[data-testid=chat-input]").await,
        "",
        "nothing is left in the box"
    );
    app.wait_text("[data-testid=chat-reply]:last-child", "and one more")
        .await;
    app.wait_text("[data-testid=messages]", "echo: and from the quick chat")
        .await;
    let posted: String = fakes
        .stakpak
        .posted_messages()
        .iter()
        .map(|m| m.text.as_str())
        .collect();
    let first = posted.find("and from the quick chat");
    let second = posted.find("and one more");
    assert!(
        first.is_some() && first < second,
        "both reached the agent, in order: {posted}"
    );
    app.screenshot("quick-chat").await;
    // Two more, and Esc straight after: the window closes only once both are stored, so
    // neither goes with it.
    app.fill(
        "[data-testid=chat-input]",
        "one for the road\u{E007}and one for the way home\u{E007}",
    )
    .await;
    app.escape("[data-testid=chat-input]").await;
    wait_x_window("Esc to close the quick chat", "Quick chat", false);
    fakes
        .stakpak
        .wait_for("both reach the agent, though the window closed", |s| {
            let posted: String = s.posted_messages().iter().map(|m| m.text.clone()).collect();
            posted.contains("one for the road") && posted.contains("and one for the way home")
        })
        .await;

    // By its command: a second launch hands over to the running app.
    let launched = Command::new(env::app_binary())
        .arg("--config")
        .arg(files.config())
        .arg("--data-dir")
        .arg(files.data())
        .arg("--quick-chat")
        .env("HOME", files.root.join("home"))
        .env("XDG_CONFIG_HOME", files.root.join("xdg-config"))
        .status();
    assert!(
        launched.is_ok_and(|s| s.success()),
        "the second launch hands over and exits"
    );
    wait_x_window("the quick chat opened by its command", "Quick chat", true);
    app.follow_window("[data-testid=quick-chat]").await;
    app.wait_text("[data-testid=messages]", "echo: and from the quick chat")
        .await;
    app.escape("[data-testid=chat-input]").await;
    wait_x_window("the quick chat closed again", "Quick chat", false);
    app.follow_window("[data-testid=status-text]").await;
    // The person makes the window bigger; it comes back so.
    let window = main_window();
    let resized = Command::new("xdotool")
        .args(["windowsize", &window.to_string(), "1100", "760"])
        .status();
    assert!(resized.is_ok_and(|s| s.success()), "xdotool windowsize");
    if let Err(e) = env::wait_until("the new size", app::WAIT, || {
        window_size(main_window()) == Some((1100, 760))
    }) {
        panic!("{e}");
    }
    // Closed as a person does, then the app ends.
    app.close_window().await;
    let runs = fakes.stakpak.runs_started();
    app.quit().await;

    // A restart keeps the whole chat, and the window comes back on it, as big as it was.
    let app = App::launch(env, &files).await;
    app.wait_for("the window back on the chat", "[data-page=chat]")
        .await;
    assert_eq!(
        window_size(main_window()),
        Some((1100, 760)),
        "the window keeps its size across a restart"
    );
    let history = app
        .wait_text("[data-testid=messages]", "echo: and from the quick chat")
        .await;
    for said in [
        "tell me about the machine",
        "echo: DRIP 12 3 tell me about the machine",
        "done:",
        "approved by",
    ] {
        assert!(
            history.contains(said),
            "{said:?} is still there after a restart: {history}"
        );
    }
    assert_eq!(
        fakes.stakpak.runs_started(),
        runs,
        "nothing was posted again after the restart"
    );
    assert!(
        !fakes
            .stakpak
            .posted_messages()
            .iter()
            .any(|m| m.text.contains("and what came after it")),
        "what was given back was never sent"
    );
    // Settings says how the shortcut is registered here.
    app.page("settings").await;
    app.wait_text(
        "[data-testid=quick-chat-status]",
        "In use: Ctrl+Alt+Space, with a key grab on the X server",
    )
    .await;
    app.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_the_whole_loop_on_a_first_run() {
    let Some(env) = env::get() else { return };
    let _turn = TURN.lock().await;
    let demo = FakeStakpak::start_with(FakeOptions {
        demo: true,
        ..FakeOptions::default()
    })
    .await;
    let files = Files::new("demo");
    // As `scripts/run.sh` writes it: the demo server, nothing else.
    files.write_config(&format!(
        "# The demo\n[server]\nurl = \"{}\"\ntoken = \"{}\"\n\n[gateway]\napproval_mode = \"ask\"\n\n[api]\nlisten = \"127.0.0.1:0\"\n",
        demo.url(),
        demo.token().unwrap_or_default()
    ));
    let app = App::launch_with(env, &files, &["--demo"]).await;
    app.wait_for("the window on the desktop chat", "[data-page=chat]")
        .await;
    let banner = app
        .wait_text("[data-testid=demo-banner]", "This is a demo")
        .await;
    assert!(
        banner.contains("stakpak up"),
        "the window says how to connect a real agent: {banner}"
    );
    app.wait_text("[data-testid=chat-hint]", "check the disk space")
        .await;

    say(&app, "hello").await;
    app.wait_text("[data-testid=chat-reply]", "I'm the demo agent")
        .await;

    let before = env.notifications.all().len();
    say(&app, "Can you check the disk space?").await;
    app.wait_text("[data-testid=messages]", "I'll run df -h")
        .await;
    app.wait_for(
        "the approval in the chat",
        "[data-testid=chat-approval][data-state=pending]",
    )
    .await;
    // Approved from its notification, through the daemon.
    let asked = wait_notification(env, before, |n| n.actions.iter().any(|a| a == "approve")).await;
    assert!(asked.summary.contains("df -h"), "{asked:?}");
    if let Err(e) = std::fs::write(env.dir.join("pick"), "Approve") {
        panic!("cannot choose the action: {e}");
    }
    let invoked = Command::new("dunstctl").arg("context").status();
    assert!(invoked.is_ok_and(|s| s.success()), "dunstctl context");
    app.wait_text("[data-testid=chat-approval-outcome]", "approved by")
        .await;
    app.wait_text("[data-testid=messages]", "Here is what df -h shows")
        .await;
    let reply = app
        .wait_text("[data-testid=chat-reply]:last-child", "nothing ran")
        .await;
    assert!(reply.contains("64% /"), "the scripted output: {reply}");
    app.screenshot("demo").await;
    assert!(
        !files.read_config().contains("[channels"),
        "the demo adds nothing to its configuration"
    );
    app.quit().await;
}

/// Waits for the agent's answer to `words` in the test user's chat, and checks the agent had
/// the watch's context with them.
async fn answered_with_context(fakes: &Fakes, words: &str) {
    fakes
        .telegram
        .wait_for("the agent's answer in the chat", |tg| {
            tg.sent_to(crate::USER)
                .iter()
                .any(|s| s.text.contains(words) && s.text.starts_with("echo:"))
        })
        .await;
    let posted = fakes.stakpak.posted_messages();
    let last = &posted.last().expect("posted").text;
    assert!(
        last.contains("disk 95% full") && last.contains(words),
        "the agent got the watch's context with the words: {last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_is_answered_in_place_or_from_the_quick_chat() {
    let Some(env) = env::get() else { return };
    let _turn = TURN.lock().await;

    // A server without inline replies (dunst): Reply opens the quick chat on the conversation.
    let fakes = Fakes::start().await;
    let files = Files::new("reply-quick");
    let app = launch_connected(env, &files, &fakes).await;
    fakes.telegram.send_dm(crate::USER, "Ada", "hi");
    fakes.reply_in_chat("echo: hi").await;
    let before = env.notifications.all().len();
    crate::watch_notification(&fakes, "Disk check failed on web-1").await;
    let shown = wait_notification(env, before, |n| n.body == "Disk check failed on web-1").await;
    assert!(
        shown.actions.iter().any(|a| a == "reply"),
        "the notification offers Reply: {shown:?}"
    );
    if let Err(e) = std::fs::write(env.dir.join("pick"), "Reply") {
        panic!("cannot choose the action: {e}");
    }
    let invoked = Command::new("dunstctl").arg("context").status();
    assert!(invoked.is_ok_and(|s| s.success()), "dunstctl context");
    wait_x_window("the quick chat opened by Reply", "Quick chat", true);
    app.follow_window("[data-testid=quick-chat]").await;
    app.wait_text("[data-testid=messages]", "hi").await;
    say(&app, "what should I do?").await;
    answered_with_context(&fakes, "what should I do?").await;
    app.escape("[data-testid=chat-input]").await;
    wait_x_window("the quick chat closed", "Quick chat", false);
    app.follow_window("[data-testid=status-text]").await;
    app.quit().await;

    // A server with inline replies (KDE Plasma's kind): the answer is typed into the
    // notification itself.
    let notifier = crate::notifier::Notifier::start().await;
    let fakes = Fakes::start().await;
    let files = Files::new("reply-inline");
    files.write_config(&fakes.config());
    let app = App::launch_on(env, &files, &[], Some(&notifier.address)).await;
    app.wait_for(
        "Telegram connected",
        "[data-testid=channel-telegram][data-state=connected]",
    )
    .await;
    fakes.telegram.send_dm(crate::USER, "Ada", "hi");
    fakes.reply_in_chat("echo: hi").await;
    crate::watch_notification(&fakes, "Disk check failed on web-1").await;
    let deadline = std::time::Instant::now() + app::WAIT;
    let shown = loop {
        if let Some(found) = notifier
            .shown()
            .into_iter()
            .find(|n| n.body == "Disk check failed on web-1")
        {
            break found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no watch notification on the inline-reply server: {:?}",
            notifier.shown()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        shown.actions.iter().any(|a| a == "inline-reply") && shown.summary == "telegram/4242",
        "the notification asks for an answer in place: {shown:?}"
    );
    notifier.reply(shown.id, "what is filling it?").await;
    answered_with_context(&fakes, "what is filling it?").await;
    app.quit().await;
}
