//! Replies turn by turn: with the real server's shape (each turn's text in one delta, then tool
//! calls, then the next turn), each finished turn is in the chat while the run goes on, the final
//! message holds only what was not sent, and a restart repeats nothing.

use crate::harness::{config_for, open_discord, open_slack, settle, Running};
use switchboard_engine::config::{ApprovalMode, Config, Streaming, TelegramConfig};
use switchboard_testkit::stakpak::FakeStakpak;
use switchboard_testkit::telegram::{FakeTelegram, Person};

const OWNER: i64 = 4242;
const CALL: &str = "SAY_FIRST\nUSE_TOOL run_command {\"command\": \"cargo test\"}";

fn config(agent: &FakeStakpak, tg: &FakeTelegram, streaming: Streaming) -> Config {
    let mut config = config_for(agent);
    config.gateway.approval_mode = ApprovalMode::Ask;
    config.channels.telegram = Some(TelegramConfig {
        token: tg.token(),
        api_base: tg.api_base(),
        owners: vec![OWNER.to_string()],
        streaming,
        ..TelegramConfig::default()
    });
    config
}

fn texts(tg: &FakeTelegram) -> Vec<String> {
    tg.sent_to(OWNER).into_iter().map(|s| s.text).collect()
}

/// Presses Approve on the prompt in the owner's chat.
async fn approve(tg: &FakeTelegram) {
    tg.wait_for("the approval prompt", |t| {
        t.sent_to(OWNER).iter().any(|s| s.reply_markup.is_some())
    })
    .await;
    let prompt = tg
        .sent_to(OWNER)
        .into_iter()
        .find(|s| s.reply_markup.is_some())
        .expect("prompt");
    tg.press(
        OWNER,
        prompt.message_id,
        &Person::new(OWNER, "Olga"),
        "Approve",
    );
}

#[tokio::test]
async fn each_finished_turn_is_in_the_chat_while_the_run_goes_on() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let running =
        Running::polling(config(&agent, &tg, Streaming::Paragraphs), dir.path(), &tg).await;

    tg.send_dm(OWNER, "Olga", CALL);
    // While the call waits for a person, the first turn is already in the chat, before its
    // prompt.
    tg.wait_for("the approval prompt", |t| {
        t.sent_to(OWNER).iter().any(|s| s.reply_markup.is_some())
    })
    .await;
    let before = tg.sent_to(OWNER);
    assert_eq!(before[0].text, "I'll look into it.", "{before:#?}");
    assert!(before[0].reply_markup.is_none());
    approve(&tg).await;
    tg.wait_for("the final turn", |t| {
        t.sent_to(OWNER).iter().any(|s| s.text.starts_with("done:"))
    })
    .await;
    settle().await;
    let all = texts(&tg);
    let first_turn = all
        .iter()
        .filter(|t| t.contains("I'll look into it."))
        .count();
    assert_eq!(
        first_turn, 1,
        "the first turn is in the chat once: {all:#?}"
    );
    let last = all.last().expect("a reply");
    assert!(
        last.starts_with("done:") && !last.contains("I'll look into it."),
        "the final message holds only the last turn: {all:#?}"
    );
    running.stop().await;
}

#[tokio::test]
async fn with_streaming_off_the_whole_reply_comes_at_the_end() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let running = Running::polling(config(&agent, &tg, Streaming::Off), dir.path(), &tg).await;

    tg.send_dm(OWNER, "Olga", CALL);
    approve(&tg).await;
    tg.wait_for("the reply", |t| {
        t.sent_to(OWNER).iter().any(|s| s.text.contains("done:"))
    })
    .await;
    let all = texts(&tg);
    let reply = all.iter().find(|t| t.contains("done:")).expect("reply");
    assert!(
        reply.starts_with("I'll look into it.\n\ndone:"),
        "both turns in one message, a blank line between: {all:#?}"
    );
    assert_eq!(
        all.iter()
            .filter(|t| t.contains("I'll look into it."))
            .count(),
        1
    );
    running.stop().await;
}

#[tokio::test]
async fn a_restart_after_a_turn_was_sent_repeats_nothing() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(&agent, &tg, Streaming::Paragraphs);
    let running = Running::polling(config.clone(), dir.path(), &tg).await;

    tg.send_dm(OWNER, "Olga", CALL);
    tg.wait_for("the approval prompt", |t| {
        t.sent_to(OWNER).iter().any(|s| s.reply_markup.is_some())
    })
    .await;
    assert_eq!(texts(&tg)[0], "I'll look into it.");
    running.stop().await;

    let running = Running::polling(config, dir.path(), &tg).await;
    // The prompt may be posted again for the resumed run; any one of them decides.
    approve(&tg).await;
    tg.wait_for("the final turn", |t| {
        t.sent_to(OWNER).iter().any(|s| s.text.starts_with("done:"))
    })
    .await;
    settle().await;
    let all = texts(&tg);
    assert_eq!(
        all.iter()
            .filter(|t| t.contains("I'll look into it."))
            .count(),
        1,
        "the turn sent before the restart is not sent again: {all:#?}"
    );
    assert_eq!(all.iter().filter(|t| t.starts_with("done:")).count(), 1);
    running.stop().await;
}

/// The message a reply grows in: what the chat shows for it now (its last edit, or as sent).
fn shown(tg: &FakeTelegram, message_id: i64) -> String {
    tg.edits()
        .into_iter()
        .rev()
        .filter(|e| e.chat_id == OWNER && e.message_id == message_id)
        .find_map(|e| e.text)
        .unwrap_or_else(|| {
            tg.sent_to(OWNER)
                .into_iter()
                .find(|s| s.message_id == message_id)
                .map(|s| s.text)
                .unwrap_or_default()
        })
}

/// Waits until the chat's first message from the bot shows `want`, then checks that it was the
/// only one: the reply was completed in place, not sent again.
async fn ends_whole_in_its_first_message(tg: &FakeTelegram, want: &str) {
    let first = tg.sent_to(OWNER)[0].message_id;
    tg.wait_for("the whole reply in the first message", |t| {
        shown(t, first) == want
    })
    .await;
    settle().await;
    assert_eq!(
        tg.sent_to(OWNER).len(),
        1,
        "completed in place, not sent again: {:#?}",
        tg.sent_to(OWNER)
    );
}

#[tokio::test]
async fn in_edit_mode_the_reply_grows_in_one_message_and_ends_whole() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(&agent, &tg, Streaming::Edit);
    config.gateway.approval_mode = ApprovalMode::AllowAll;
    let running = Running::polling(config, dir.path(), &tg).await;

    let text = "DRIP 20 2.5 please write a long and careful answer about the weather today";
    tg.send_dm(OWNER, "Olga", text);
    // Text shows well before the run ends, and grows.
    tg.wait_for("the reply to start", |t| !t.sent_to(OWNER).is_empty())
        .await;
    let first = tg.sent_to(OWNER)[0].clone();
    let want = format!("echo: {text}");
    assert!(
        want.starts_with(&first.text) && first.text.len() < want.len(),
        "a part of the reply, not all of it: {first:?}"
    );
    ends_whole_in_its_first_message(&tg, &want).await;
    let edits = tg
        .edits()
        .into_iter()
        .filter(|e| e.message_id == first.message_id)
        .count();
    assert!(
        (1..=6).contains(&edits),
        "about one edit a second over 2.5 s, not one per delta: {edits}"
    );
    running.stop().await;
}

#[tokio::test]
async fn in_edit_mode_a_wait_and_a_running_tool_show_as_lines_and_the_rest_comes_below_the_prompt()
{
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let running = Running::polling(config(&agent, &tg, Streaming::Edit), dir.path(), &tg).await;

    tg.send_dm(OWNER, "Olga", &format!("TOOL_SECS 1.5 {CALL}"));
    approve(&tg).await;
    let message_ids = |t: &FakeTelegram| -> Vec<i64> {
        t.sent_to(OWNER)
            .iter()
            .filter(|s| s.reply_markup.is_none())
            .map(|s| s.message_id)
            .collect()
    };
    tg.wait_for("the final reply", |t| {
        message_ids(t)
            .iter()
            .any(|id| shown(t, *id).starts_with("done:"))
    })
    .await;
    settle().await;
    let sent = tg.sent_to(OWNER);
    let prompt = sent.iter().position(|s| s.reply_markup.is_some());
    assert_eq!(
        sent.iter()
            .map(|s| s.reply_markup.is_some())
            .collect::<Vec<_>>(),
        [false, true, false],
        "the first turn, the prompt, then the rest: {sent:#?}"
    );
    let (first, rest) = (sent[0].message_id, sent[2].message_id);
    assert_eq!(prompt, Some(1));
    let texts_of = |id: i64| -> Vec<String> {
        let mut all = vec![sent
            .iter()
            .find(|s| s.message_id == id)
            .expect("sent")
            .text
            .clone()];
        all.extend(
            tg.edits()
                .into_iter()
                .filter(|e| e.chat_id == OWNER && e.message_id == id)
                .filter_map(|e| e.text),
        );
        all
    };
    assert!(
        texts_of(first)
            .iter()
            .any(|t| t.starts_with("I'll look into it.")
                && t.contains("⏸ Waiting for your approval")),
        "while the call waited, the message said so: {:#?}",
        texts_of(first)
    );
    assert_eq!(
        shown(&tg, first),
        "I'll look into it.",
        "once decided, the first message keeps only its text"
    );
    assert!(
        texts_of(rest)
            .iter()
            .any(|t| t.contains("⚙️ run `cargo test`…")),
        "the running tool showed: {:#?}",
        texts_of(rest)
    );
    let last = shown(&tg, rest);
    assert!(
        last.starts_with("done:") && !last.contains("⚙️") && !last.contains("I'll look"),
        "the rest of the reply, without the tool line, each turn once: {last}"
    );
    running.stop().await;
}

#[tokio::test]
async fn in_edit_mode_a_long_reply_goes_on_in_new_messages_with_nothing_lost() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(&agent, &tg, Streaming::Edit);
    config.gateway.approval_mode = ApprovalMode::AllowAll;
    let running = Running::polling(config, dir.path(), &tg).await;

    tg.send_dm(OWNER, "Olga", "LONG_REPLY 44 DRIP 10 1");
    tg.wait_for("the run to end", |t| t.sent_to(OWNER).len() >= 3)
        .await;
    settle().await;
    settle().await;
    let messages: Vec<String> = tg
        .sent_to(OWNER)
        .into_iter()
        .map(|s| shown(&tg, s.message_id))
        .collect();
    assert!(
        messages.iter().all(|m| m.chars().count() <= 4096),
        "every message within Telegram's limit"
    );
    let joined: String = messages.join("\n\n");
    let paragraphs = |t: &str| -> Vec<String> {
        t.split("\n\n")
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect()
    };
    let got = paragraphs(&joined);
    // Each of the 44 paragraphs has its text and its list: 88 blocks, each once.
    assert_eq!(got.len(), 88, "every block once: {}", got.len());
    let unique: std::collections::HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), 88, "nothing repeated");
    running.stop().await;
}

#[tokio::test]
async fn in_edit_mode_a_restart_mid_stream_completes_the_same_message() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(&agent, &tg, Streaming::Edit);
    config.gateway.approval_mode = ApprovalMode::AllowAll;
    let running = Running::polling(config.clone(), dir.path(), &tg).await;

    let text = "DRIP 12 3 a reply that is still being written when the engine stops";
    tg.send_dm(OWNER, "Olga", text);
    tg.wait_for("the reply to start", |t| !t.sent_to(OWNER).is_empty())
        .await;
    running.stop().await;

    let running = Running::polling(config, dir.path(), &tg).await;
    ends_whole_in_its_first_message(&tg, &format!("echo: {text}")).await;
    running.stop().await;
}

const GROWING: &str = "DRIP 12 2 an answer that grows while the agent writes it";

#[tokio::test]
async fn in_edit_mode_slack_grows_one_message_with_chat_update() {
    use switchboard_engine::config::SlackConfig;
    use switchboard_testkit::slack::FakeSlack;

    let agent = FakeStakpak::start().await;
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_for(&agent);
    config.channels.slack = Some(SlackConfig {
        streaming: Streaming::Edit,
        ..open_slack(&slack)
    });
    let running = Running::start(config, dir.path()).await;
    slack.wait_for("the socket", |s| s.open_sockets() > 0).await;
    slack.send_dm("U1ANN", GROWING);
    let want = format!("echo: {GROWING}");
    slack
        .wait_for("the whole reply in place", |s| {
            s.updates().last().is_some_and(|u| u.text == want)
        })
        .await;
    settle().await;
    let posted = slack.posted_in("D1ANN");
    assert_eq!(posted.len(), 1, "one message: {posted:#?}");
    assert!(want.starts_with(&posted[0].text) && posted[0].text.len() < want.len());
    assert!(slack.updates().iter().all(|u| u.ts == posted[0].ts));
    running.stop().await;
}

#[tokio::test]
async fn in_edit_mode_discord_grows_one_message_with_edits() {
    use switchboard_engine::config::DiscordConfig;
    use switchboard_testkit::discord::FakeDiscord;

    let agent = FakeStakpak::start().await;
    let dc = FakeDiscord::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_for(&agent);
    config.channels.discord = Some(DiscordConfig {
        streaming: Streaming::Edit,
        ..open_discord(&dc)
    });
    let running = Running::start(config, dir.path()).await;
    dc.wait_for("the bot to connect", |d| d.is_connected())
        .await;
    let user = "900000000000000042";
    dc.send_dm(user, GROWING);
    let want = format!("echo: {GROWING}");
    dc.wait_for("the whole reply in place", |d| {
        d.edits().last().is_some_and(|e| e.content == want)
    })
    .await;
    settle().await;
    let dm = dc.dm_channel(user);
    let posted = dc.posted_to(&dm);
    assert_eq!(posted.len(), 1, "one message: {posted:#?}");
    assert!(want.starts_with(&posted[0]) && posted[0].len() < want.len());
    running.stop().await;
}

#[tokio::test]
async fn in_edit_mode_a_storm_of_429s_on_edits_still_ends_with_the_whole_reply_once() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(&agent, &tg, Streaming::Edit);
    config.gateway.approval_mode = ApprovalMode::AllowAll;
    let running = Running::polling(config, dir.path(), &tg).await;
    for _ in 0..6 {
        tg.fail_next(
            "editMessageText",
            429,
            "Too Many Requests: retry after 1",
            Some(1),
        );
    }
    tg.send_dm(OWNER, "Olga", GROWING);
    tg.wait_for("the reply to start", |t| !t.sent_to(OWNER).is_empty())
        .await;
    ends_whole_in_its_first_message(&tg, &format!("echo: {GROWING}")).await;
    running.stop().await;
}

#[tokio::test]
async fn by_default_a_private_telegram_chat_streams_a_draft_then_sends_the_reply_once() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    tg.set_drafts(true);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(&agent, &tg, Streaming::Auto);
    config.gateway.approval_mode = ApprovalMode::AllowAll;
    let running = Running::polling(config, dir.path(), &tg).await;

    tg.send_dm(OWNER, "Olga", GROWING);
    let want = format!("echo: {GROWING}");
    tg.wait_for("a draft while it is written", |t| !t.drafts().is_empty())
        .await;
    assert!(
        tg.sent_to(OWNER).is_empty(),
        "a draft, not a message, while the reply is written"
    );
    tg.wait_for("the reply", |t| !t.sent_to(OWNER).is_empty())
        .await;
    settle().await;
    let drafts = tg.drafts();
    assert!(
        drafts
            .iter()
            .all(|d| d.chat_id == OWNER && want.starts_with(&d.text)),
        "each draft is the reply so far: {drafts:#?}"
    );
    assert_eq!(
        drafts
            .iter()
            .map(|d| d.draft_id)
            .collect::<std::collections::HashSet<_>>()
            .len(),
        1,
        "one draft, updated"
    );
    let sent: Vec<String> = texts(&tg);
    assert_eq!(sent, vec![want], "the final reply is sent once, whole");
    assert!(tg.edits().is_empty(), "no edits with drafts");
    running.stop().await;
}

/// A tool that runs 1.5 s after the first turn, approved by the gateway's policy.
const SLOW_CALL: &str =
    "TOOL_SECS 1.5 SAY_FIRST\nUSE_TOOL run_command {\"command\": \"cargo test\"}";

async fn slack_streaming(
    allowed: bool,
) -> (
    FakeStakpak,
    switchboard_testkit::slack::FakeSlack,
    tempfile::TempDir,
    Running,
) {
    use switchboard_engine::config::SlackConfig;
    use switchboard_testkit::slack::FakeSlack;

    let agent = FakeStakpak::start().await;
    let slack = FakeSlack::start().await;
    slack.add_channel("C1TEAM");
    slack.set_streams(allowed);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_for(&agent);
    config.gateway.approval_mode = ApprovalMode::AllowAll;
    // The default `streaming = "auto"`.
    config.channels.slack = Some(SlackConfig {
        open_groups: vec!["*".to_owned()],
        ..open_slack(&slack)
    });
    let running = Running::start(config, dir.path()).await;
    slack.wait_for("the socket", |s| s.open_sockets() > 0).await;
    (agent, slack, dir, running)
}

#[tokio::test]
async fn by_default_slack_streams_the_reply_natively_with_the_tool_as_a_task_and_ends_whole() {
    let (_agent, slack, _dir, running) = slack_streaming(true).await;
    let mention = slack.send_channel("C1TEAM", "U1ANN", SLOW_CALL, true);
    slack
        .wait_for("the stream to stop", |s| {
            s.stream_calls()
                .iter()
                .any(|c| c.method == "chat.stopStream")
        })
        .await;
    settle().await;
    let calls = slack.stream_calls();
    let start = &calls[0];
    assert_eq!(start.method, "chat.startStream", "{calls:#?}");
    assert_eq!(
        start.body["thread_ts"],
        mention.as_str(),
        "in the mention's thread"
    );
    assert_eq!(
        start.body["recipient_user_id"], "U1ANN",
        "a stream in a channel names who it answers"
    );
    assert!(start.body["recipient_team_id"].is_string());
    assert!(
        start.text.starts_with("I'll look into it."),
        "the first turn showed while the tool ran: {calls:#?}"
    );
    assert!(
        calls
            .iter()
            .flat_map(|c| &c.tasks)
            .any(|t| t["status"] == "in_progress"
                && t["title"]
                    .as_str()
                    .is_some_and(|x| x.contains("cargo test"))),
        "the running tool showed as a task: {calls:#?}"
    );
    assert!(
        calls.iter().all(|c| c.ts == start.ts),
        "one streaming message: {calls:#?}"
    );
    let message = slack.message("C1TEAM", &start.ts).expect("the message");
    assert!(!message.streaming, "the stream was stopped");
    assert!(
        message.text.starts_with("I'll look into it.\n\ndone:"),
        "the whole reply, each turn once: {:?}",
        message.text
    );
    assert_eq!(message.text.matches("I'll look into it.").count(), 1);
    assert!(
        message.tasks.iter().all(|t| t["status"] == "complete"),
        "no task is left running: {:#?}",
        message.tasks
    );
    let posted: Vec<String> = slack
        .posted_in("C1TEAM")
        .into_iter()
        .map(|p| p.text)
        .collect();
    assert!(
        posted.iter().all(|t| !t.contains("done:")),
        "the reply was not posted a second time: {posted:#?}"
    );
    running.stop().await;
}

#[tokio::test]
async fn where_slack_refuses_streams_the_reply_grows_by_updates() {
    let (_agent, slack, _dir, running) = slack_streaming(false).await;
    slack.send_dm("U1ANN", SLOW_CALL);
    slack
        .wait_for("the whole reply in place", |s| {
            s.updates()
                .last()
                .is_some_and(|u| u.text.starts_with("I'll look into it.\n\ndone:"))
        })
        .await;
    settle().await;
    assert!(slack.stream_calls().is_empty());
    let posted = slack.posted_in("D1ANN");
    assert_eq!(posted.len(), 1, "one message, updated: {posted:#?}");
    assert!(posted[0].text.starts_with("I'll look into it."));
    let shown = slack.message("D1ANN", &posted[0].ts).expect("message");
    assert!(
        !shown.text.contains("⚙️"),
        "no tool line is left: {}",
        shown.text
    );
    running.stop().await;
}

#[tokio::test]
async fn a_restart_mid_stream_on_slack_completes_the_same_message() {
    let (agent, slack, dir, running) = slack_streaming(true).await;
    let text = "DRIP 12 3 a reply that is still being written when the engine stops";
    slack.send_dm("U1ANN", text);
    slack
        .wait_for("the stream to start", |s| !s.stream_calls().is_empty())
        .await;
    running.stop().await;

    let mut config = config_for(&agent);
    config.gateway.approval_mode = ApprovalMode::AllowAll;
    config.channels.slack = Some(open_slack(&slack));
    let running = Running::start(config, dir.path()).await;
    let ts = slack.stream_calls()[0].ts.clone();
    let want = format!("echo: {text}");
    slack
        .wait_for("the whole reply in the same message", |s| {
            s.message("D1ANN", &ts)
                .is_some_and(|m| m.text == want && !m.streaming)
        })
        .await;
    settle().await;
    let posted = slack.posted_in("D1ANN");
    assert!(
        posted.iter().all(|p| !p.text.contains("echo:")),
        "completed in place, not posted again: {posted:#?}"
    );
    running.stop().await;
}

#[tokio::test]
async fn typing_shows_as_soon_as_a_message_is_in_even_while_the_agent_server_is_away() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(&agent, &tg, Streaming::Auto);
    // Nothing listens there: the message waits in the journal for the server.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    config.server.url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let running = Running::polling(config, dir.path(), &tg).await;

    tg.send_dm(OWNER, "Olga", "are you there?");
    tg.wait_for("typing in the chat", |t| {
        t.chat_actions()
            .iter()
            .any(|a| a.chat_id == OWNER && a.action == "typing")
    })
    .await;
    assert!(agent.posted_messages().is_empty());
    running.stop().await;
}

#[tokio::test]
async fn in_paragraph_mode_a_streamed_reply_arrives_paragraph_by_paragraph() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(&agent, &tg, Streaming::Paragraphs);
    config.gateway.approval_mode = ApprovalMode::AllowAll;
    let running = Running::polling(config, dir.path(), &tg).await;

    tg.send_dm(OWNER, "Olga", "DRIP 16 3 LONG_REPLY 4");
    // The first paragraph is in the chat while the rest is still being written.
    tg.wait_for("the first paragraph", |t| !t.sent_to(OWNER).is_empty())
        .await;
    let sessions = agent.sessions();
    let (session, _) = sessions.first().expect("a session");
    assert_eq!(
        agent.run_state(session).as_deref(),
        Some("running"),
        "the run was still going"
    );
    tg.wait_for("the last paragraph", |t| {
        t.sent_to(OWNER).iter().any(|s| s.text.contains("item 4.b"))
    })
    .await;
    settle().await;
    let all = texts(&tg);
    assert!(all.len() >= 3, "the reply came in parts: {all:#?}");
    let joined = all.join("\n\n");
    for i in 1..=4 {
        for part in [
            format!("Paragraph {i} of 4"),
            format!("- item {i}.a"),
            format!("- item {i}.b"),
        ] {
            assert_eq!(joined.matches(&part).count(), 1, "{part} once: {all:#?}");
        }
    }
    for message in &all {
        assert!(!message.trim().is_empty(), "{all:#?}");
    }
    running.stop().await;
}

#[tokio::test]
async fn by_default_discord_grows_one_message_with_the_running_tool_and_ends_whole() {
    use switchboard_testkit::discord::FakeDiscord;

    let agent = FakeStakpak::start().await;
    let dc = FakeDiscord::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_for(&agent);
    config.gateway.approval_mode = ApprovalMode::AllowAll;
    config.channels.discord = Some(open_discord(&dc));
    let running = Running::start(config, dir.path()).await;
    dc.wait_for("the bot to connect", |d| d.is_connected())
        .await;
    let user = "900000000000000042";
    dc.send_dm(user, SLOW_CALL);
    dc.wait_for("the whole reply in place", |d| {
        d.edits()
            .last()
            .is_some_and(|e| e.content.starts_with("I'll look into it.\n\ndone:"))
    })
    .await;
    settle().await;
    let dm = dc.dm_channel(user);
    let posted = dc.posted_to(&dm);
    assert_eq!(posted.len(), 1, "one message: {posted:#?}");
    let edits: Vec<String> = dc.edits().into_iter().map(|e| e.content).collect();
    assert!(
        posted
            .iter()
            .chain(&edits)
            .any(|t| t.contains("⚙️ run `cargo test`…")),
        "the running tool showed: {posted:#?} {edits:#?}"
    );
    let last = edits.last().expect("an edit");
    assert!(!last.contains("⚙️"), "the tool line went: {last}");
    running.stop().await;
}
