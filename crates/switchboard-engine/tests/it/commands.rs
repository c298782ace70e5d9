//! Chat commands through the real engine and the Telegram adapter: each answers in the chat and
//! none reaches the agent.

use std::path::Path;

use crate::harness::{config_for, open_discord, open_slack, settle, Running};
use switchboard_engine::config::{ApprovalMode, Config, TelegramConfig};
use switchboard_testkit::stakpak::{FakeStakpak, Route};
use switchboard_testkit::telegram::{FakeTelegram, Person};

const OWNER: i64 = 4242;
const ANN: i64 = 1111;
const BOB: i64 = 2222;
const GROUP: i64 = -1005550001;

fn config(agent: &FakeStakpak, tg: &FakeTelegram) -> Config {
    let mut config = config_for(agent);
    config.gateway.approval_mode = ApprovalMode::Ask;
    config.channels.telegram = Some(TelegramConfig {
        token: tg.token(),
        api_base: tg.api_base(),
        owners: vec![OWNER.to_string()],
        allowed_users: vec![ANN.to_string()],
        open_groups: vec![GROUP.to_string()],
        require_mention: false,
        ..TelegramConfig::default()
    });
    config
}

/// Sends `text` as Ann and waits for the `n`-th message to her chat; returns it.
async fn ask(tg: &FakeTelegram, text: &str, n: usize) -> String {
    tg.send_dm(ANN, "Ann", text);
    nth(tg, ANN, n).await
}

async fn nth(tg: &FakeTelegram, chat: i64, n: usize) -> String {
    tg.wait_for(&format!("message {n} in chat {chat}"), |t| {
        t.sent_to(chat).len() >= n
    })
    .await;
    tg.sent_to(chat)[n - 1].text.clone()
}

fn texts(agent: &FakeStakpak) -> Vec<String> {
    agent
        .posted_messages()
        .into_iter()
        .map(|p| p.text)
        .collect()
}

#[tokio::test]
async fn help_status_usage_and_model_answer_in_the_chat_and_never_reach_the_agent() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&agent, &tg);
    let bridge = Running::polling(config.clone(), dir.path(), &tg).await;

    let help = ask(&tg, "/help", 1).await;
    for command in [
        "/status",
        "/stop",
        "/new",
        "/resume N",
        "/model [name]",
        "/usage",
    ] {
        assert!(help.contains(command), "{command} in {help}");
    }
    let status = ask(&tg, "/status", 2).await;
    assert!(status.contains("Session: none yet"), "{status}");
    assert!(status.contains("Run: idle"), "{status}");
    let usage = ask(&tg, "/usage", 3).await;
    assert!(usage.contains("No run"), "{usage}");

    assert_eq!(ask(&tg, "hello", 4).await, "echo: hello");
    let usage = ask(&tg, "/usage", 5).await;
    assert!(
        usage.starts_with("Last run: ") && usage.contains("over 1 runs"),
        "the run's reported usage: {usage}"
    );
    let status = ask(&tg, "/status", 6).await;
    assert!(status.contains("Agent server: reachable"), "{status}");
    assert!(status.contains("Session: "), "{status}");
    assert!(!status.contains("none yet"), "{status}");

    let set = ask(&tg, "/model fake-large", 7).await;
    assert!(set.contains("fake-large"), "{set}");
    assert_eq!(ask(&tg, "which model?", 8).await, "echo: which model?");
    bridge.stop().await;

    // The model survives a restart and goes with the next run.
    let bridge = Running::polling(config, dir.path(), &tg).await;
    assert_eq!(ask(&tg, "still?", 9).await, "echo: still?");
    let models: Vec<Option<String>> = agent
        .posted_messages()
        .into_iter()
        .map(|p| p.model)
        .collect();
    assert_eq!(
        models,
        vec![None, Some("fake-large".into()), Some("fake-large".into())]
    );
    let shown = ask(&tg, "/model", 10).await;
    assert!(
        shown.contains("fake-large (set for this conversation)"),
        "{shown}"
    );
    let cleared = ask(&tg, "/model default", 11).await;
    assert!(cleared.contains("again"), "{cleared}");
    assert_eq!(
        texts(&agent),
        vec!["hello", "which model?", "still?"],
        "no command reached the agent"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn stop_ends_the_run_on_the_server_rejects_its_waiting_call_and_drops_the_queue() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Running::polling(config(&agent, &tg), dir.path(), &tg).await;

    tg.send_dm(
        ANN,
        "Ann",
        r#"USE_TOOL run_command {"command": "rm -rf build"}"#,
    );
    tg.wait_for("the approval prompt", |t| {
        t.sent_to(ANN).iter().any(|s| s.reply_markup.is_some())
    })
    .await;
    tg.send_dm(ANN, "Ann", "and after that, this");
    tg.wait_for("the queued note", |t| t.sent_to(ANN).len() >= 2)
        .await;
    let status = ask(&tg, "/status", 3).await;
    assert!(status.contains("Run: running for"), "{status}");
    assert!(status.contains("Queued: 1"), "{status}");
    assert!(
        status.contains("Waiting for approval: stakpak__run_command ["),
        "{status}"
    );

    tg.send_dm(ANN, "Ann", "/stop");
    tg.wait_for("the stop's answer", |t| {
        t.sent_to(ANN)
            .iter()
            .any(|s| s.text.starts_with("⏹ Stopping"))
    })
    .await;
    let stopped = tg
        .sent_to(ANN)
        .into_iter()
        .find(|s| s.text.starts_with("⏹ Stopping"))
        .expect("answer")
        .text;
    assert!(
        stopped.contains("1 queued message was dropped"),
        "{stopped}"
    );
    let session = agent.posted_messages()[0].session_id.clone();
    let mut idle = false;
    for _ in 0..80 {
        if agent.run_state(&session).as_deref() == Some("idle") {
            idle = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(idle, "the run ended on the server");
    assert!(
        agent.decisions().iter().all(|d| d.action == "reject"),
        "the waiting call was rejected, nothing accepted: {:?}",
        agent.decisions()
    );
    settle().await;
    assert_eq!(
        texts(&agent).len(),
        1,
        "the queued message was dropped, not sent"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn new_starts_a_session_and_resume_goes_back() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Running::polling(config(&agent, &tg), dir.path(), &tg).await;

    assert_eq!(ask(&tg, "first", 1).await, "echo: first");
    let fresh = ask(&tg, "/new", 2).await;
    assert!(fresh.contains("new agent session"), "{fresh}");
    assert_eq!(ask(&tg, "second", 3).await, "echo: second");
    let posted = agent.posted_messages();
    let (old, new) = (posted[0].session_id.clone(), posted[1].session_id.clone());
    assert_ne!(old, new, "the message after /new went to a new session");

    let list = ask(&tg, "/sessions", 4).await;
    assert!(
        list.contains("1. ") && list.contains(&new) && list.contains(&old),
        "{list}"
    );
    assert!(list.contains(&format!("{new} (current)")), "{list}");
    let back = ask(&tg, "/resume 2", 5).await;
    assert!(back.starts_with("↩️ Back to session 2"), "{back}");
    assert_eq!(ask(&tg, "third", 6).await, "echo: third");
    assert_eq!(
        agent.posted_messages()[2].session_id,
        old,
        "/resume went back to the first session"
    );
    let wrong = ask(&tg, "/resume 9", 7).await;
    assert!(wrong.contains("no session 9"), "{wrong}");
    bridge.stop().await;
}

#[tokio::test]
async fn approve_by_text_has_the_buttons_authority() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Running::polling(config(&agent, &tg), dir.path(), &tg).await;
    let ann = Person::new(ANN, "Ann");

    tg.send_group(
        GROUP,
        &ann,
        r#"USE_TOOL run_command {"command": "ls"}"#,
        false,
    );
    tg.wait_for("the prompt", |t| {
        t.sent_to(GROUP).iter().any(|s| s.reply_markup.is_some())
    })
    .await;
    let before = tg.sent_to(GROUP).len();

    // Bob may talk here (an open group), but not approve Ann's call.
    tg.send_group(GROUP, &Person::new(BOB, "Bob"), "/approve", false);
    let refused = nth(&tg, GROUP, before + 1).await;
    assert!(refused.starts_with("Sorry, only Ann"), "{refused}");
    // Ann asked, but this channel's owners approve.
    tg.send_group(GROUP, &ann, "/approve", false);
    let not_hers = nth(&tg, GROUP, before + 2).await;
    assert!(not_hers.contains("Only an owner"), "{not_hers}");
    assert!(agent.decisions().is_empty(), "nothing decided yet");

    tg.send_group(GROUP, &Person::new(OWNER, "Olga"), "/approve", false);
    let approved = nth(&tg, GROUP, before + 3).await;
    assert!(approved.contains("approved by Olga"), "{approved}");
    tg.wait_for("the run's reply", |t| {
        t.sent_to(GROUP).iter().any(|s| s.text.starts_with("done:"))
    })
    .await;
    assert_eq!(agent.decisions()[0].action, "accept");
    assert!(
        texts(&agent).iter().all(|t| !t.starts_with('/')),
        "no command reached the agent"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn the_command_menu_is_set_once_not_at_every_restart() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&agent, &tg);
    let bridge = Running::polling(config.clone(), dir.path(), &tg).await;
    assert_eq!(tg.requests_for("setMyCommands").len(), 1);
    let menu = tg.commands();
    assert!(menu
        .iter()
        .any(|c| c["command"] == "stop" && c["description"].is_string()));
    bridge.stop().await;

    let bridge = Running::polling(config, dir.path(), &tg).await;
    settle().await;
    assert_eq!(
        tg.requests_for("setMyCommands").len(),
        1,
        "a restart does not send the same menu again"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn slack_slash_commands_are_answered_where_they_were_typed() {
    use switchboard_testkit::slack::FakeSlack;

    let agent = FakeStakpak::start().await;
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_for(&agent);
    config.channels.slack = Some(open_slack(&slack));
    let running = Running::start(config, dir.path()).await;
    slack.wait_for("the socket", |s| s.open_sockets() > 0).await;

    slack.send_dm("U1ANN", "hello");
    slack
        .wait_for("the reply", |s| s.posted_in("D1ANN").len() == 1)
        .await;
    let envelope = slack.slash_command("D1ANN", "U1ANN", "/status", "");
    slack
        .wait_for("the status", |s| s.posted_in("D1ANN").len() == 2)
        .await;
    let status = slack.posted_in("D1ANN")[1].text.clone();
    assert!(
        status.contains("Agent server: reachable") && status.contains("Run: idle"),
        "{status}"
    );
    assert!(
        slack.acks().iter().any(|a| a.envelope_id == envelope),
        "the envelope was acknowledged"
    );
    slack.slash_command("D1ANN", "U1ANN", "/model", "fake-small");
    slack
        .wait_for("the model's answer", |s| s.posted_in("D1ANN").len() == 3)
        .await;
    slack.send_dm("U1ANN", "again");
    slack
        .wait_for("the reply", |s| s.posted_in("D1ANN").len() == 4)
        .await;
    let posted = agent.posted_messages();
    assert_eq!(
        posted.iter().map(|p| p.text.as_str()).collect::<Vec<_>>(),
        vec!["hello", "again"],
        "no command reached the agent"
    );
    assert_eq!(
        posted[1].model.as_deref(),
        Some("fake-small"),
        "a slash command set the DM conversation's model"
    );
    running.stop().await;
}

#[tokio::test]
async fn with_the_usage_footer_each_reply_says_what_it_cost() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(&agent, &tg);
    config.gateway.usage_footer = true;
    let bridge = Running::polling(config, dir.path(), &tg).await;
    let reply = ask(&tg, "hello", 1).await;
    let (text, footer) = reply.split_once("\n\n— ").expect("a footer");
    assert_eq!(text, "echo: hello");
    assert!(
        footer.contains(" tokens (") && footer.ends_with(" out)"),
        "{footer}"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn discord_slash_commands_are_registered_once_and_answered_in_place() {
    use switchboard_testkit::discord::FakeDiscord;

    let agent = FakeStakpak::start().await;
    let dc = FakeDiscord::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_for(&agent);
    config.channels.discord = Some(open_discord(&dc));
    let running = Running::start(config.clone(), dir.path()).await;
    dc.wait_for("the commands registered", |d| !d.command_puts().is_empty())
        .await;
    let registered = dc.command_puts().remove(0);
    let names: Vec<&str> = registered
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(
        names.contains(&"status") && names.contains(&"resume"),
        "{names:?}"
    );

    let dm = dc.dm_channel("900000000000000042");
    let id = dc.slash_command(&dm, "900000000000000042", "status", serde_json::json!([]));
    dc.wait_for("the answer in place", |d| {
        d.ephemerals()
            .iter()
            .any(|e| e.interaction == id && e.content.contains("Run: idle"))
    })
    .await;
    let id = dc.slash_command(
        &dm,
        "900000000000000042",
        "model",
        serde_json::json!([{"name": "name", "type": 3, "value": "fake-tiny"}]),
    );
    dc.wait_for("the model's answer", |d| {
        d.ephemerals()
            .iter()
            .any(|e| e.interaction == id && e.content.contains("fake-tiny"))
    })
    .await;
    assert!(
        agent.posted_messages().is_empty(),
        "no command reached the agent"
    );
    running.stop().await;

    let running = Running::start(config, dir.path()).await;
    dc.wait_for("the bot to connect again", |d| {
        d.identifies().len() + d.resumes().len() >= 2
    })
    .await;
    settle().await;
    assert_eq!(
        dc.command_puts().len(),
        1,
        "a restart does not register the same commands again"
    );
    running.stop().await;
}

/// A bridge whose first message ("delete the old backups", from Ann) waits for its session:
/// the server fails every session creation until healed, so the run retries with its message
/// queued.
async fn waiting_for_its_session(agent: &FakeStakpak, tg: &FakeTelegram, dir: &Path) -> Running {
    agent.fail_next(Route::Sessions, 10_000);
    let bridge = Running::polling(config(agent, tg), dir, tg).await;
    tg.send_dm(ANN, "Ann", "delete the old backups");
    agent
        .wait_for("a session asked for", |a| {
            a.requests()
                .iter()
                .any(|r| r.method == "POST" && r.path == "/v1/sessions")
        })
        .await;
    bridge
}

/// Lets the server create sessions again, and checks the stopped message never reached it.
async fn healed_and_nothing_sent(agent: &FakeStakpak) {
    agent.heal();
    agent
        .wait_for("the session created", |a| !a.sessions().is_empty())
        .await;
    settle().await;
    assert!(
        texts(agent).is_empty(),
        "the stopped message reached the agent: {:?}",
        texts(agent)
    );
}

#[tokio::test]
async fn a_message_stopped_while_its_run_waits_for_the_server_is_never_sent() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = waiting_for_its_session(&agent, &tg, dir.path()).await;
    let stopped = ask(&tg, "/stop", 1).await;
    assert!(
        stopped.starts_with("⏹ Stopping") && !stopped.contains("dropped"),
        "{stopped}"
    );
    healed_and_nothing_sent(&agent).await;

    // The conversation goes on in the session created meanwhile.
    assert_eq!(ask(&tg, "never mind", 2).await, "echo: never mind");
    let posted = agent.posted_messages();
    assert_eq!(texts(&agent), vec!["never mind"]);
    assert_eq!(agent.sessions().len(), 1, "{:?}", agent.sessions());
    assert_eq!(posted[0].session_id, agent.sessions()[0].0);
    bridge.stop().await;
}

#[tokio::test]
async fn the_windows_stop_button_stops_a_run_still_waiting_for_the_server_too() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = waiting_for_its_session(&agent, &tg, dir.path()).await;
    let key = format!("telegram:dm:{ANN}");
    assert!(
        bridge.engine.cancel(&key),
        "the task being prepared is there to stop"
    );
    healed_and_nothing_sent(&agent).await;
    assert_eq!(ask(&tg, "never mind", 1).await, "echo: never mind");
    assert_eq!(texts(&agent), vec!["never mind"]);
    bridge.stop().await;
}

#[tokio::test]
async fn a_message_stopped_while_its_post_is_retried_is_never_sent_not_even_after_a_restart() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&agent, &tg);
    let posts = |a: &FakeStakpak| {
        a.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/messages"))
            .count()
    };
    // The server refuses every message (503) until healed: the run is in flight, retrying.
    agent.fail_next(Route::Messages, 10_000);
    let bridge = Running::polling(config.clone(), dir.path(), &tg).await;
    tg.send_dm(ANN, "Ann", "delete the old backups");
    agent.wait_for("a POST refused", |a| posts(a) >= 1).await;
    let stopped = ask(&tg, "/stop", 1).await;
    assert!(stopped.starts_with("⏹ Stopping"), "{stopped}");
    assert!(
        !stopped.contains("dropped"),
        "the run's own message is the task stopped, not a queued one: {stopped}"
    );
    agent.heal();
    settle().await;
    assert!(
        texts(&agent).is_empty(),
        "the stopped message reached the agent: {:?}",
        texts(&agent)
    );

    // Again, but the app ends before the run does (the stop recorded, the run left posting):
    // after the restart it is not posted either.
    agent.fail_next(Route::Messages, 10_000);
    let before = posts(&agent);
    tg.send_dm(ANN, "Ann", "and wipe the logs");
    agent
        .wait_for("another POST refused", |a| posts(a) > before)
        .await;
    bridge.stop().await;
    {
        let store = switchboard_engine::store::Store::open(dir.path()).expect("store");
        let left = store.unfinished_runs().expect("runs");
        assert_eq!(left.len(), 1, "the run left posting: {left:?}");
        assert_eq!(
            store
                .drop_queued(
                    &left[0].routing_key,
                    "dropped by /stop before it was sent",
                    &[]
                )
                .expect("drop"),
            0,
            "the run's message, marked but not counted as one waiting"
        );
    }
    agent.heal();
    let bridge = Running::polling(config, dir.path(), &tg).await;
    assert_eq!(ask(&tg, "status?", 2).await, "echo: status?");
    assert_eq!(
        texts(&agent),
        vec!["status?"],
        "only the message sent after"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_run_stopped_while_its_lost_post_is_retried_is_cancelled_on_the_server_not_abandoned() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Retries wait long enough for the stop to come between two attempts.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let engine = switchboard_engine::Engine::builder(config(&agent, &tg), dir.path())
        .options(switchboard_engine::EngineOptions {
            retry_base: std::time::Duration::from_secs(5),
            retry_cap: std::time::Duration::from_secs(5),
            ..crate::harness::fast_options()
        })
        .start(shutdown.clone())
        .await
        .expect("the engine starts");
    let bridge = Running { engine, shutdown };
    tg.wait_for("the bot to poll", |t| t.active_polls() > 0)
        .await;

    // The POST reaches the server and starts a long run, but its answer is lost: whether the
    // message went out is not known here.
    agent.lose_next_answer(Route::Messages);
    tg.send_dm(ANN, "Ann", "SLOW 30 reorganise the whole disk");
    agent
        .wait_for("the message posted", |a| a.posted_messages().len() == 1)
        .await;
    let session = agent.posted_messages()[0].session_id.clone();
    assert_eq!(agent.run_state(&session).as_deref(), Some("running"));
    let stopped = ask(&tg, "/stop", 1).await;
    assert!(stopped.starts_with("⏹ Stopping"), "{stopped}");
    // Found going, followed and cancelled there: not left working with nobody following it,
    // and not posted again.
    let cancel = format!("/v1/sessions/{session}/cancel");
    agent
        .wait_for("the run cancelled on the server", |a| {
            a.requests()
                .iter()
                .any(|r| r.method == "POST" && r.path == cancel && r.status == 200)
        })
        .await;
    assert_eq!(agent.posted_messages().len(), 1);
    bridge.stop().await;
}
