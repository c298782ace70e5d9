//! The Slack channel end to end: the real engine, its Slack adapter talking Socket Mode and the
//! Web API to the fake Slack, and the fake agent server.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use switchboard_engine::approvals::{parse_callback, ChatChoice};
use switchboard_engine::approvals::{Actor, Answer, Surface};
use switchboard_engine::channels::slack::{SlackChannel, SlackOptions};
use switchboard_engine::channels::ChannelError;
use switchboard_engine::config::DmPolicy;
use switchboard_engine::config::{ApprovalMode, Config, SlackConfig};
use switchboard_engine::model::{ChannelState, ChannelStatus, ChatType, Identity};
use switchboard_engine::store::Resolution;
use switchboard_engine::{Engine, EngineEvent, EngineOptions};
use switchboard_testkit::slack::{
    Failure, FakeSlack, FakeSlackOptions, PostedMessage, SlackMessage, BOT_USER_ID,
};
use switchboard_testkit::stakpak::FakeStakpak;
use tokio_util::sync::CancellationToken;

use crate::harness::{config_for, fast_options, settle, Gateway, API_TOKEN, WAIT};

/// The fake Slack redelivers unacknowledged envelopes after 300 ms instead of 3 s.
fn fake_options() -> FakeSlackOptions {
    FakeSlackOptions {
        redeliver_after: Duration::from_millis(300),
        frozen_for: Duration::from_secs(2),
        ..FakeSlackOptions::default()
    }
}

fn slack_config(slack: &FakeSlack) -> SlackConfig {
    SlackConfig {
        bot_token: slack.bot_token(),
        app_token: slack.app_token(),
        api_base: slack.api_base(),
        // These tests are about the platform's protocol, not access control: anyone may talk.
        dm_policy: DmPolicy::Open,
        open_groups: vec!["*".to_owned()],
        ..SlackConfig::default()
    }
}

fn config_with(agent: &FakeStakpak, slack: SlackConfig) -> Config {
    let mut config = config_for(agent);
    config.channels.slack = Some(slack);
    config
}

/// An engine with the Slack channel from the configuration, a fake Slack and a fake agent.
struct Setup {
    gw: Gateway,
    slack: FakeSlack,
    agent: FakeStakpak,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Setup {
        Setup::start_with(fake_options(), |_| {}).await
    }

    async fn start_with(options: FakeSlackOptions, change: impl FnOnce(&mut SlackConfig)) -> Setup {
        let slack = FakeSlack::start_with(options).await;
        let agent = FakeStakpak::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut channel = slack_config(&slack);
        change(&mut channel);
        let gw = Gateway::start(config_with(&agent, channel), dir.path()).await;
        Setup {
            gw,
            slack,
            agent,
            dir,
        }
    }

    /// Waits until the bot holds one socket and Slack said hello on it.
    async fn connected(&self) {
        self.slack
            .wait_for("the bot to connect", |s| s.open_sockets() == 1)
            .await;
        wait_state(&self.gw, ChannelState::Connected).await;
    }

    /// Waits for `n` messages from the bot in `channel` and returns them.
    async fn posted_in(
        &self,
        channel: &str,
        n: usize,
    ) -> Vec<switchboard_testkit::slack::PostedMessage> {
        self.slack
            .wait_for(&format!("{n} messages in {channel}"), |s| {
                s.posted_in(channel).len() >= n
            })
            .await;
        self.slack.posted_in(channel)
    }

    /// The texts the agent server received, in order.
    fn agent_texts(&self) -> Vec<String> {
        self.agent
            .posted_messages()
            .iter()
            .map(|p| p.text.clone())
            .collect()
    }

    async fn restart(self) -> Setup {
        let Setup {
            gw,
            slack,
            agent,
            dir,
        } = self;
        gw.stop().await;
        let gw = Gateway::start(config_with(&agent, slack_config(&slack)), dir.path()).await;
        Setup {
            gw,
            slack,
            agent,
            dir,
        }
    }
}

fn slack_status(gw: &Gateway) -> ChannelStatus {
    gw.engine
        .channels()
        .into_iter()
        .find(|c| c.name == "slack")
        .expect("the slack channel is listed")
}

/// Polls the channel's status until it is `state`.
async fn wait_state(gw: &Gateway, state: ChannelState) -> ChannelStatus {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = slack_status(gw);
        if status.state == state {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for slack to be {state:?}; it is {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Slack's escaping undone, to compare what a user reads.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[tokio::test]
async fn a_dm_round_trip() {
    let t = Setup::start().await;
    t.connected().await;
    t.slack.set_user_name("U1ANN", "Ann");

    let ts = t.slack.send_dm("U1ANN", "hello there");

    let dm = t.slack.dm_channel("U1ANN");
    let posted = t.posted_in(&dm, 1).await;
    assert_eq!(
        posted[0].text, "echo: hello there",
        "the agent's reply reaches the DM"
    );
    assert_eq!(posted[0].thread_ts, None, "a DM is answered flat");
    assert_eq!(
        posted[0].body,
        json!({"channel": dm, "text": "echo: hello there"}),
        "the exact chat.postMessage body"
    );
    let request = t
        .slack
        .requests()
        .into_iter()
        .find(|r| r.method == "chat.postMessage")
        .expect("a post");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {}", t.slack.bot_token()).as_str())
    );
    t.slack
        .wait_for("the eyes reaction", |s| !s.reactions().is_empty())
        .await;
    let reaction = &t.slack.reactions()[0];
    assert_eq!(
        (
            reaction.channel.as_str(),
            reaction.timestamp.as_str(),
            reaction.name.as_str()
        ),
        (dm.as_str(), ts.as_str(), "eyes"),
        "the message is marked as received"
    );
    let sessions = t.agent.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        sessions[0].1, "slack / Ann",
        "the session is titled with the user's Slack name"
    );
    let status = slack_status(&t.gw);
    assert_eq!(
        status.identity,
        Some(Identity {
            id: BOT_USER_ID.into(),
            name: "switchboard".into()
        }),
        "auth.test gave the identity"
    );
    let opens = t
        .slack
        .requests()
        .into_iter()
        .filter(|r| r.method == "apps.connections.open")
        .collect::<Vec<_>>();
    assert_eq!(
        opens[0].header("authorization"),
        Some(format!("Bearer {}", t.slack.app_token()).as_str()),
        "the app token opens sockets"
    );
    t.slack
        .wait_for("every envelope to be acknowledged", |s| s.unacked() == 0)
        .await;
    t.gw.stop().await;
}

#[tokio::test]
async fn in_a_channel_only_a_mention_is_answered_and_in_a_thread_under_it() {
    let t = Setup::start().await;
    t.connected().await;

    t.slack
        .send_channel("C1TEAM", "U1ANN", "anyone around?", false);
    let mention = t
        .slack
        .send_channel("C1TEAM", "U1ANN", "status please", true);

    let posted = t.posted_in("C1TEAM", 1).await;
    settle().await;
    let posted_after = t.slack.posted_in("C1TEAM");
    assert_eq!(
        posted_after.len(),
        1,
        "one reply, to the mention only: {posted_after:?}"
    );
    assert_eq!(
        posted[0].text, "echo: status please",
        "the mention is stripped from what the agent reads"
    );
    assert_eq!(
        posted[0].thread_ts.as_deref(),
        Some(mention.as_str()),
        "the answer starts a thread under the mention"
    );
    assert_eq!(
        t.agent_texts(),
        vec!["status please"],
        "the unaddressed message never reached the agent"
    );
    let copies: Vec<String> = t
        .slack
        .deliveries()
        .iter()
        .map(|d| d.event_type.clone())
        .collect();
    assert!(
        copies.contains(&"app_mention".to_owned()),
        "Slack sent the mention twice: {copies:?}"
    );
    assert_eq!(
        t.agent.runs_started(),
        1,
        "the message and app_mention copies make one run"
    );
    t.gw.stop().await;
}

#[tokio::test]
async fn a_thread_is_its_own_conversation_and_replies_stay_in_it() {
    let t = Setup::start().await;
    t.connected().await;

    // A mention starts a thread; a follow-up there needs no mention.
    let started = t
        .slack
        .send_channel("C1TEAM", "U1ANN", "first question", true);
    t.posted_in("C1TEAM", 1).await;
    t.slack
        .send_thread_reply("C1TEAM", &started, "U2BOB", "and a follow-up");
    let posted = t.posted_in("C1TEAM", 2).await;
    assert_eq!(posted[1].text, "echo: and a follow-up");
    assert_eq!(
        posted[1].thread_ts.as_deref(),
        Some(started.as_str()),
        "the follow-up is answered in the same thread"
    );

    // A thread people started: the bot joins when mentioned there, and answers in it.
    let parent = t
        .slack
        .send_channel("C1TEAM", "U3CAT", "the deploy went wrong", false);
    t.slack
        .send_thread_reply("C1TEAM", &parent, "U1ANN", "<@UBOT> can you look?");
    let posted = t.posted_in("C1TEAM", 3).await;
    assert_eq!(posted[2].text, "echo: can you look?");
    assert_eq!(
        posted[2].thread_ts.as_deref(),
        Some(parent.as_str()),
        "the reply goes to the parent ts, not the reply's"
    );

    // A thread the bot is not part of is not its business.
    let other = t.slack.send_channel("C1TEAM", "U3CAT", "lunch?", false);
    t.slack.send_thread_reply("C1TEAM", &other, "U1ANN", "sure");
    // And a DM is a conversation of its own.
    t.slack.send_dm("U1ANN", "privately");
    t.posted_in(&t.slack.dm_channel("U1ANN"), 1).await;
    settle().await;

    assert_eq!(
        t.agent_texts(),
        vec![
            "first question",
            "and a follow-up",
            "can you look?",
            "privately"
        ]
    );
    let sessions: Vec<String> = t
        .agent
        .posted_messages()
        .iter()
        .map(|p| p.session_id.clone())
        .collect();
    assert_eq!(
        sessions[0], sessions[1],
        "a follow-up in a thread continues its session"
    );
    assert_ne!(
        sessions[1], sessions[2],
        "another thread is another session"
    );
    assert_ne!(sessions[2], sessions[3], "the DM is another session");
    assert_ne!(sessions[0], sessions[3]);
    let conversations = t.gw.engine.conversations().expect("conversations");
    let threads = conversations
        .iter()
        .filter(|c| matches!(&c.chat, ChatType::Thread { group_id, .. } if group_id == "C1TEAM"))
        .count();
    assert_eq!(
        threads, 2,
        "each thread is a thread conversation: {conversations:?}"
    );
    assert_eq!(
        t.slack.posted_in("C1TEAM").len(),
        3,
        "nothing answered in the thread the bot is not in"
    );
    t.gw.stop().await;
}

#[tokio::test]
async fn a_long_reply_arrives_complete_in_order_and_within_the_limit() {
    let mut t = Setup::start().await;
    t.connected().await;

    t.slack.send_dm("U1ANN", "LONG_REPLY 40");

    let (reply, chunks) =
        t.gw.event("the long reply", |e| match e {
            EngineEvent::ReplyDelivered {
                channel,
                text,
                chunks,
                ..
            } if channel == "slack" => Some((text.clone(), *chunks)),
            _ => None,
        })
        .await;
    assert!(
        reply.chars().count() >= 10_000,
        "the reply is long: {} chars",
        reply.chars().count()
    );
    let posted = t.slack.posted_in(&t.slack.dm_channel("U1ANN"));
    assert_eq!(posted.len(), chunks, "every chunk was posted once");
    assert!(posted.len() >= 3);
    for message in &posted {
        assert!(
            message.text.chars().count() <= 4000,
            "each message fits Slack's limit: {}",
            message.text.chars().count()
        );
    }
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let joined = posted
        .iter()
        .map(|p| unescape(&p.text))
        .collect::<Vec<_>>()
        .join("\n\n");
    assert_eq!(
        squash(&joined),
        squash(&reply),
        "the messages, in order, are the whole reply"
    );
    t.gw.stop().await;
}

#[tokio::test]
async fn a_rate_limited_reply_waits_for_retry_after_and_arrives_once() {
    let t = Setup::start().await;
    t.connected().await;
    t.slack.fail(
        "chat.postMessage",
        Failure::RateLimited {
            retry_after_secs: 1,
        },
        1,
    );

    t.slack.send_dm("U1ANN", "hi");

    let dm = t.slack.dm_channel("U1ANN");
    let posted = t.posted_in(&dm, 1).await;
    settle().await;
    assert_eq!(posted[0].text, "echo: hi");
    assert_eq!(
        t.slack.posted_in(&dm).len(),
        1,
        "the reply arrives exactly once"
    );
    let statuses: Vec<u16> = t
        .slack
        .requests()
        .iter()
        .filter(|r| r.method == "chat.postMessage")
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses,
        vec![429, 200],
        "one 429, then the retry after Retry-After"
    );
    let limited = t
        .slack
        .requests()
        .into_iter()
        .find(|r| r.status == 429)
        .expect("the 429");
    assert_eq!(
        limited.response,
        json!({"ok": false, "error": "ratelimited"})
    );
    t.gw.stop().await;
}

#[tokio::test]
async fn an_unacknowledged_envelope_is_redelivered_and_still_makes_one_run_and_one_reply() {
    let t = Setup::start().await;
    t.connected().await;
    t.slack.lose_acks(1);

    t.slack.send_dm("U1ANN", "once please");

    t.slack
        .wait_for("the redelivery to be acknowledged", |s| {
            s.deliveries()
                .iter()
                .any(|d| d.retry_attempt == 1 && s.acked(&d.envelope_id))
        })
        .await;
    let dm = t.slack.dm_channel("U1ANN");
    t.posted_in(&dm, 1).await;
    settle().await;
    let redelivered = t
        .slack
        .deliveries()
        .into_iter()
        .find(|d| d.retry_attempt == 1)
        .expect("a redelivery");
    assert_eq!(redelivered.event_type, "message");
    assert_eq!(
        t.agent.runs_started(),
        1,
        "the redelivered event made no second run"
    );
    assert_eq!(t.slack.posted_in(&dm).len(), 1, "and no second reply");
    t.gw.stop().await;
}

#[tokio::test]
async fn a_restart_does_not_reprocess_old_events_and_remembers_threads() {
    let t = Setup::start().await;
    t.connected().await;
    let dm = t.slack.dm_channel("U1ANN");
    t.slack.send_dm("U1ANN", "one");
    t.posted_in(&dm, 1).await;
    let thread = t.slack.send_channel("C1TEAM", "U1ANN", "in a thread", true);
    t.posted_in("C1TEAM", 1).await;
    // Every envelope so far: both messages, the mention's app_mention copy, the bot's own posts.
    let old: Vec<String> = t
        .slack
        .deliveries()
        .iter()
        .map(|d| d.envelope_id.clone())
        .collect();

    let t = t.restart().await;
    t.slack
        .wait_for("the new engine to connect", |s| {
            s.sockets_opened() == 2 && s.open_sockets() == 1
        })
        .await;
    // Slack sends old events again (as after a lost ack), then new ones.
    for envelope in &old {
        t.slack.redeliver(envelope);
    }
    t.slack.send_dm("U1ANN", "two");
    t.slack
        .send_thread_reply("C1TEAM", &thread, "U2BOB", "follow-up after the restart");

    t.posted_in(&dm, 2).await;
    t.posted_in("C1TEAM", 2).await;
    t.slack
        .wait_for("the old events to be acknowledged again", |s| {
            old.iter().all(|e| s.acked(e))
        })
        .await;
    settle().await;
    let mut texts = t.agent_texts();
    texts.sort();
    assert_eq!(
        texts,
        vec!["follow-up after the restart", "in a thread", "one", "two"],
        "old events were not processed again"
    );
    assert_eq!(t.slack.posted_in(&dm).len(), 2);
    let in_thread = t.slack.posted_in("C1TEAM");
    assert_eq!(in_thread.len(), 2);
    assert_eq!(
        in_thread[1].thread_ts.as_deref(),
        Some(thread.as_str()),
        "the bot still knows it is in the thread"
    );
    t.gw.stop().await;
}

#[tokio::test]
async fn a_bad_bot_token_is_auth_failed_without_a_reconnect_storm() {
    let t = Setup::start_with(fake_options(), |c| c.bot_token = "xoxb-wrong".into()).await;

    let status = wait_state(&t.gw, ChannelState::AuthFailed).await;
    let error = status.last_error.expect("a last error");
    assert!(
        error.contains("invalid_auth") && error.contains("bot token"),
        "a readable error: {error}"
    );
    assert!(
        !error.contains("xoxb-wrong"),
        "the token is never shown: {error}"
    );
    settle().await;
    settle().await;
    assert_eq!(
        t.slack.calls("auth.test"),
        1,
        "no retry with a refused token"
    );
    assert_eq!(
        t.slack.calls("apps.connections.open"),
        0,
        "no socket without a bot"
    );
    let tested = t.gw.engine.test_channel("slack").await;
    assert!(
        matches!(tested, Err(ChannelError::Auth(_))),
        "the Test button says the same: {tested:?}"
    );
    t.gw.stop().await;
}

#[tokio::test]
async fn a_bad_app_token_is_auth_failed_after_one_attempt() {
    let t = Setup::start_with(fake_options(), |c| c.app_token = "xapp-1-wrong".into()).await;

    let status = wait_state(&t.gw, ChannelState::AuthFailed).await;
    let error = status.last_error.expect("a last error");
    assert!(
        error.contains("invalid_auth") && error.contains("app-level token"),
        "a readable error: {error}"
    );
    settle().await;
    settle().await;
    assert_eq!(
        t.slack.calls("apps.connections.open"),
        1,
        "no retry with a refused app token"
    );
    assert_eq!(t.slack.sockets_opened(), 0);
    t.gw.stop().await;
}

#[tokio::test]
async fn disabling_closes_the_socket_and_enabling_reconnects_and_delivers_what_was_missed() {
    let t = Setup::start().await;
    t.connected().await;

    t.gw.engine
        .set_channel_enabled("slack", false)
        .expect("disable");
    t.slack
        .wait_for("the socket to close", |s| s.open_sockets() == 0)
        .await;
    assert_eq!(slack_status(&t.gw).state, ChannelState::Disabled);
    let missed = t.slack.send_dm("U1ANN", "while you were away");
    settle().await;
    assert!(
        t.slack.posted().is_empty(),
        "nothing is answered while disabled"
    );

    t.gw.engine
        .set_channel_enabled("slack", true)
        .expect("enable");
    t.slack
        .wait_for("a new socket", |s| {
            s.sockets_opened() == 2 && s.open_sockets() == 1
        })
        .await;
    let dm = t.slack.dm_channel("U1ANN");
    let posted = t.posted_in(&dm, 1).await;
    assert_eq!(
        posted[0].text, "echo: while you were away",
        "the event Slack could not push arrives as a retry and is answered"
    );
    let reactions = t.slack.reactions();
    assert!(
        reactions.iter().any(|r| r.timestamp == missed),
        "{reactions:?}"
    );
    let retried = t
        .slack
        .deliveries()
        .into_iter()
        .find(|d| d.event_type == "message")
        .expect("the delivery");
    assert!(
        retried.retry_attempt >= 1,
        "it came as a retry, which is not dropped: {retried:?}"
    );
    wait_state(&t.gw, ChannelState::Connected).await;
    t.gw.stop().await;
}

#[tokio::test]
async fn gateway_send_reaches_channels_threads_and_users() {
    let t = Setup::start().await;
    t.connected().await;
    t.slack.add_channel("C0ALERTS");
    let http = switchboard_engine::http::client();
    let url = format!(
        "http://{}/v1/gateway/send",
        t.gw.engine.api_addr().expect("the API listens")
    );
    let send = |target: &str, text: &str| {
        http.post(&url)
            .bearer_auth(API_TOKEN)
            .json(&json!({"channel": "slack", "target": target, "text": text}))
            .send()
    };

    let response = send("C0ALERTS", "build <42> done & green")
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let posted = t.slack.posted_in("C0ALERTS");
    assert_eq!(
        posted[0].text, "build &lt;42&gt; done &amp; green",
        "escaped so Slack shows it as written"
    );
    assert_eq!(posted[0].thread_ts, None);

    let parent = posted[0].ts.clone();
    let response = send(&format!("C0ALERTS:{parent}"), "details in the thread")
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(
        t.slack.posted_in("C0ALERTS")[1].thread_ts.as_deref(),
        Some(parent.as_str())
    );

    let response = send("U1ANN", "a word in private").await.expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(
        t.slack.posted_in("D1ANN")[0].text,
        "a word in private",
        "a user id reaches the user's DM"
    );

    let unknown = send("#alerts", "x").await.expect("request");
    assert_eq!(unknown.status(), 400);
    let body: Value = unknown.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no Slack channel named #alerts"),
        "an unknown name is a clear 400: {body}"
    );
    t.slack.name_channel("C0ALERTS", "alerts");
    let named = send("#alerts", "by name").await.expect("request");
    assert_eq!(named.status(), 200, "a channel name is looked up");
    assert_eq!(
        t.slack.posted_in("C0ALERTS").last().map(|p| p.text.clone()),
        Some("by name".to_owned())
    );
    let bad = send("not a target", "x").await.expect("request");
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("<channel_id>:<thread_ts>"),
        "the error says the format: {body}"
    );
    let missing = send("C0NOWHERE", "x").await.expect("request");
    assert_eq!(missing.status(), 502);
    let body: Value = missing.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("channel_not_found"),
        "{body}"
    );

    // A reply in the notification's thread reaches the agent without a mention.
    t.slack
        .send_thread_reply("C0ALERTS", &parent, "U1ANN", "what failed?");
    let posted = t.posted_in("C0ALERTS", 4).await;
    assert_eq!(posted[3].text, "echo: what failed?");
    assert_eq!(posted[3].thread_ts.as_deref(), Some(parent.as_str()));
    t.gw.stop().await;
}

#[tokio::test]
async fn a_refresh_opens_the_next_socket_first_and_loses_no_event() {
    // Redelivery is far off: an event lost in the refresh would never be answered.
    let options = FakeSlackOptions {
        redeliver_after: Duration::from_secs(60),
        ..fake_options()
    };
    let t = Setup::start_with(options, |_| {}).await;
    t.connected().await;

    // Three people, three conversations, so no message waits behind another's run.
    t.slack.refresh();
    t.slack.send_dm("U1ANN", "sent with the warning");
    t.slack
        .wait_for("the next socket", |s| s.sockets_opened() == 2)
        .await;
    t.slack.send_dm("U2BOB", "sent as the new socket opened");
    t.slack
        .wait_for("the old socket to go", |s| s.open_sockets() == 1)
        .await;
    t.slack.send_dm("U3CAT", "sent after the refresh");

    for (user, text) in [
        ("U1ANN", "sent with the warning"),
        ("U2BOB", "sent as the new socket opened"),
        ("U3CAT", "sent after the refresh"),
    ] {
        let posted = t.posted_in(&t.slack.dm_channel(user), 1).await;
        assert_eq!(posted[0].text, format!("echo: {text}"));
    }
    settle().await;
    assert_eq!(
        t.slack.posted().len(),
        3,
        "each event answered once: {:?}",
        t.slack.posted()
    );
    assert_eq!(t.agent.runs_started(), 3);
    assert!(
        t.slack.deliveries().iter().all(|d| d.retry_attempt == 0),
        "no event needed a redelivery: {:?}",
        t.slack.deliveries()
    );
    assert_eq!(
        t.slack.calls("apps.connections.open"),
        2,
        "exactly one new socket for the refresh"
    );
    assert_eq!(t.slack.open_sockets(), 1);
    t.gw.stop().await;
}

#[tokio::test]
async fn link_disabled_stops_reconnecting() {
    let t = Setup::start().await;
    t.connected().await;

    t.slack.disable_link();

    let status = wait_state(&t.gw, ChannelState::AuthFailed).await;
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("link_disabled"),
        "{status:?}"
    );
    t.slack
        .wait_for("the socket to close", |s| s.open_sockets() == 0)
        .await;
    settle().await;
    settle().await;
    assert_eq!(
        t.slack.calls("apps.connections.open"),
        1,
        "no new socket after link_disabled"
    );
    assert_eq!(t.slack.open_sockets(), 0);
    t.gw.stop().await;
}

#[tokio::test]
async fn a_dropped_socket_is_replaced_and_nothing_is_lost() {
    let t = Setup::start().await;
    t.connected().await;

    t.slack.drop_sockets();
    t.slack.send_dm("U1ANN", "are you there?");

    let posted = t.posted_in(&t.slack.dm_channel("U1ANN"), 1).await;
    assert_eq!(posted[0].text, "echo: are you there?");
    assert_eq!(t.slack.sockets_opened(), 2, "one new socket");
    wait_state(&t.gw, ChannelState::Connected).await;
    t.gw.stop().await;
}

#[tokio::test]
async fn a_half_open_socket_is_noticed_by_its_pings() {
    // Slack keeps retrying (in truth a minute apart) until the bot has a live socket again.
    let slack = FakeSlack::start_with(FakeSlackOptions {
        max_retries: 100,
        ..fake_options()
    })
    .await;
    let agent = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let options = SlackOptions {
        ping_every: Duration::from_millis(100),
        silence_limit: Duration::from_millis(500),
        retry_base: Duration::from_millis(100),
        ..SlackOptions::default()
    };
    let (engine, shutdown) = start_with_channel(
        config_with(&agent, slack_config(&slack)),
        dir.path(),
        SlackChannel::with_options(&slack_config(&slack), options),
    )
    .await;
    slack
        .wait_for("the bot to connect", |s| s.open_sockets() == 1)
        .await;

    slack.freeze_sockets();
    slack.send_dm("U1ANN", "hello?");

    slack
        .wait_for("a second socket", |s| s.sockets_opened() == 2)
        .await;
    slack.wait_for("the reply", |s| s.posted().len() == 1).await;
    assert_eq!(
        slack.posted()[0].text,
        "echo: hello?",
        "the event lost in the dead socket came again on the new one"
    );
    let status = engine
        .channels()
        .into_iter()
        .find(|c| c.name == "slack")
        .expect("listed");
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("half-open"),
        "{status:?}"
    );
    shutdown.cancel();
    engine.stopped().await;
}

async fn start_with_channel(
    config: Config,
    dir: &Path,
    channel: SlackChannel,
) -> (switchboard_engine::EngineHandle, CancellationToken) {
    let shutdown = CancellationToken::new();
    let engine = Engine::builder(config, dir)
        .options(fast_options())
        .channel(Arc::new(channel))
        .start(shutdown.clone())
        .await
        .expect("the engine starts");
    switchboard_engine::api::start(&engine, shutdown.clone()).await;
    (engine, shutdown)
}

#[tokio::test]
async fn other_bots_edits_and_joins_are_not_answered() {
    let t = Setup::start().await;
    t.connected().await;
    let ts = "1767225600.000100";
    let ignored = [
        t.slack.send_event(json!({"type":"message","channel":"D1ANN","channel_type":"im","user":"U9BOT","bot_id":"B9","text":"beep","ts":ts})),
        t.slack.send_event(json!({"type":"message","subtype":"bot_message","channel":"D1ANN","channel_type":"im","bot_id":"B9","text":"beep","ts":ts})),
        t.slack.send_event(json!({"type":"message","subtype":"message_changed","hidden":true,"channel":"D1ANN","channel_type":"im","ts":ts,
            "message":{"type":"message","user":"U1ANN","text":"edited","ts":ts}})),
        t.slack.send_event(json!({"type":"message","subtype":"channel_join","channel":"C1TEAM","channel_type":"channel","user":"U1ANN","text":"<@U1ANN> has joined the channel","ts":ts})),
        t.slack.send_event(json!({"type":"message","channel":"D1ANN","channel_type":"im","user":BOT_USER_ID,"bot_id":"B0BOT","text":"my own words","ts":ts})),
    ];
    t.slack.send_dm("U1ANN", "a real question");

    t.posted_in("D1ANN", 1).await;
    settle().await;
    assert_eq!(
        t.agent_texts(),
        vec!["a real question"],
        "only the person's message reached the agent"
    );
    for envelope in &ignored {
        assert!(
            t.slack.acked(envelope),
            "ignored envelopes are acknowledged too"
        );
    }
    t.gw.stop().await;
}

#[tokio::test]
async fn a_button_click_is_decoded_and_acknowledged() {
    let t = Setup::start().await;
    t.connected().await;
    t.slack.send_dm("U1ANN", "hi");
    let reply = t.posted_in("D1ANN", 1).await.remove(0);

    let envelope = t.slack.click("D1ANN", &reply.ts, "U1ANN", "approve", "17");

    t.slack
        .wait_for("the click to be acknowledged", |s| s.acked(&envelope))
        .await;
    settle().await;
    assert_eq!(
        t.agent.runs_started(),
        1,
        "a click is not a message for the agent"
    );
    assert!(
        t.slack.updates().is_empty() && t.slack.ephemerals().is_empty(),
        "a button that is not an approval's is left alone"
    );
    t.gw.stop().await;
}

#[tokio::test]
async fn a_queued_message_gets_an_hourglass() {
    let mut t = Setup::start().await;
    t.connected().await;

    t.slack.send_dm("U1ANN", "HOLD slack-first please");
    t.gw.event("the first run", |e| {
        matches!(e, EngineEvent::RunStarted { .. }).then_some(())
    })
    .await;
    let second = t.slack.send_dm("U1ANN", "and this too");
    t.slack
        .wait_for("the hourglass", |s| {
            s.reactions()
                .iter()
                .any(|r| r.timestamp == second && r.name == "hourglass_flowing_sand")
        })
        .await;
    t.agent.release("slack-first");

    let posted = t.posted_in("D1ANN", 2).await;
    assert_eq!(posted[1].text, "echo: and this too");
    t.gw.stop().await;
}

#[tokio::test]
async fn without_require_mention_every_channel_message_is_answered_in_its_thread() {
    let t = Setup::start_with(fake_options(), |c| c.require_mention = false).await;
    t.connected().await;

    let ts = t
        .slack
        .send_channel("C1TEAM", "U1ANN", "no mention needed", false);

    let posted = t.posted_in("C1TEAM", 1).await;
    assert_eq!(posted[0].text, "echo: no mention needed");
    assert_eq!(posted[0].thread_ts.as_deref(), Some(ts.as_str()));
    t.gw.stop().await;
}

#[tokio::test]
async fn slow_name_lookups_and_failing_reactions_do_not_block_replies() {
    // Slack's own 3 s ack deadline: the name lookup must give up well before it.
    let t = Setup::start_with(
        FakeSlackOptions {
            redeliver_after: Duration::from_secs(3),
            ..fake_options()
        },
        |_| {},
    )
    .await;
    t.connected().await;
    t.slack.set_slow("users.info", Duration::from_secs(5));
    t.slack.fail(
        "reactions.add",
        Failure::Error("message_not_found".into()),
        1,
    );
    t.slack.fail("chat.postMessage", Failure::Status(503), 1);

    t.slack.send_dm("U1ANN", "still there?");

    let posted = t.posted_in("D1ANN", 1).await;
    assert_eq!(
        posted[0].text, "echo: still there?",
        "a 503 on the first post is retried"
    );
    assert_eq!(
        t.agent.sessions()[0].1,
        "slack / U1ANN",
        "without a name in time, the user id stands in"
    );
    t.slack
        .wait_for("every envelope to be acknowledged", |s| s.unacked() == 0)
        .await;
    assert!(
        t.slack.deliveries().iter().all(|d| d.retry_attempt == 0),
        "acknowledged within Slack's deadline although users.info hung: {:?}",
        t.slack.deliveries()
    );
    t.gw.stop().await;
}

// ----- approvals ---------------------------------------------------------------------------------

const RUN_LS: &str = r#"USE_TOOL run_command {"command": "ls"}"#;

impl Setup {
    /// An engine in `ask` mode with these Slack owners; Ann (`U1ANN`) has her display name.
    async fn asking(owners: &[&str], options: EngineOptions) -> Setup {
        let slack = FakeSlack::start_with(fake_options()).await;
        let agent = FakeStakpak::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = ask_config(&agent, &slack, owners);
        let gw = Gateway::start_with_options(config, dir.path(), options).await;
        slack.set_user_name("U1ANN", "Ann");
        let t = Setup {
            gw,
            slack,
            agent,
            dir,
        };
        t.connected().await;
        t
    }

    /// Stops the engine and starts a new one on the same data, still in `ask` mode.
    async fn restart_asking(self) -> Setup {
        let Setup {
            gw,
            slack,
            agent,
            dir,
        } = self;
        gw.stop().await;
        let config = ask_config(&agent, &slack, &[]);
        let gw = Gateway::start_with_options(config, dir.path(), fast_options()).await;
        Setup {
            gw,
            slack,
            agent,
            dir,
        }
    }

    /// Waits for the approval prompt (a message with buttons) in `channel`.
    async fn prompt_in(&self, channel: &str) -> PostedMessage {
        self.slack
            .wait_for(&format!("an approval prompt in {channel}"), |s| {
                s.posted_in(channel).iter().any(|p| !p.blocks.is_empty())
            })
            .await;
        self.slack
            .posted_in(channel)
            .into_iter()
            .find(|p| !p.blocks.is_empty())
            .expect("the prompt")
    }

    /// The prompt as people see it now.
    fn shown(&self, prompt: &PostedMessage) -> SlackMessage {
        self.slack
            .message(&prompt.channel, &prompt.ts)
            .expect("the prompt is in the conversation")
    }

    /// Waits until the prompt has no buttons left, and returns what it shows.
    async fn closed(&self, prompt: &PostedMessage) -> String {
        self.slack
            .wait_for("the prompt to show the outcome without buttons", |s| {
                s.message(&prompt.channel, &prompt.ts)
                    .is_some_and(|m| m.buttons().is_empty())
            })
            .await;
        unescape(&self.shown(prompt).shown())
    }

    /// Waits for the run's last reply (`done: …`) in `channel`.
    /// The run's reply as people see it: posted whole, or written in a streaming message (which
    /// `auto` starts once a run has taken a second, as one waiting for a decision may on a slow
    /// machine).
    async fn finished_in(&self, channel: &str) -> SlackMessage {
        let reply = |s: &FakeSlack| {
            let posted = s.posted_in(channel).into_iter().map(|p| p.ts);
            let streamed = s
                .stream_calls()
                .into_iter()
                .filter(|c| c.method == "chat.startStream" && c.channel == channel)
                .map(|c| c.ts);
            posted
                .chain(streamed)
                .filter_map(|ts| s.message(channel, &ts))
                .find(|m| m.text.starts_with("done:"))
        };
        self.slack
            .wait_for("the run's reply", |s| reply(s).is_some())
            .await;
        reply(&self.slack).expect("the reply")
    }

    fn actions(&self) -> Vec<String> {
        self.agent
            .decisions()
            .iter()
            .map(|d| d.action.clone())
            .collect()
    }
}

fn ask_config(agent: &FakeStakpak, slack: &FakeSlack, owners: &[&str]) -> Config {
    let mut channel = slack_config(slack);
    channel.owners = owners.iter().map(|o| o.to_string()).collect();
    let mut config = config_with(agent, channel);
    config.gateway.approval_mode = ApprovalMode::Ask;
    config
}

/// The approval id the prompt's buttons carry (all three the same).
fn approval_id(prompt: &PostedMessage) -> String {
    let message = SlackMessage {
        channel: prompt.channel.clone(),
        ts: prompt.ts.clone(),
        user: BOT_USER_ID.into(),
        text: prompt.text.clone(),
        thread_ts: prompt.thread_ts.clone(),
        blocks: prompt.blocks.clone(),
        streaming: false,
        tasks: Vec::new(),
    };
    let ids: Vec<String> = message
        .buttons()
        .iter()
        .filter_map(|b| b.value.as_deref().and_then(parse_callback))
        .map(|(_, id)| id)
        .collect();
    assert_eq!(ids.len(), 4, "four buttons with our payloads: {message:?}");
    assert!(ids.iter().all(|id| *id == ids[0]));
    ids[0].clone()
}

#[tokio::test]
async fn the_requester_approves_in_the_thread_and_the_prompt_shows_who() {
    let t = Setup::asking(&[], fast_options()).await;
    let mention = t.slack.send_channel("C1TEAM", "U1ANN", RUN_LS, true);

    let prompt = t.prompt_in("C1TEAM").await;
    assert_eq!(
        prompt.thread_ts.as_deref(),
        Some(mention.as_str()),
        "the prompt is in the conversation's thread"
    );
    let shown = t.shown(&prompt);
    let labels: Vec<(String, Option<String>)> = shown
        .buttons()
        .into_iter()
        .map(|b| (b.text, b.style))
        .collect();
    assert_eq!(
        labels,
        vec![
            ("Approve".to_owned(), Some("primary".to_owned())),
            ("Reject".to_owned(), Some("danger".to_owned())),
            ("Allow in this chat".to_owned(), None),
            ("Always allow".to_owned(), None),
        ]
    );
    let seen = unescape(&shown.shown());
    for part in [
        "stakpak__run_command",
        "$ ls",
        "Requested by Ann",
        "expires in 30 min",
    ] {
        assert!(seen.contains(part), "the prompt shows {part:?}: {seen}");
    }
    assert!(
        prompt.text.contains("stakpak__run_command"),
        "the notification text names the tool: {}",
        prompt.text
    );
    assert_eq!(prompt.body["unfurl_links"], false);
    assert!(t.actions().is_empty(), "nothing decided before a click");

    let click = t
        .slack
        .click_button("C1TEAM", &prompt.ts, "U1ANN", "Approve");

    let reply = t.finished_in("C1TEAM").await;
    assert_eq!(
        reply.thread_ts.as_deref(),
        Some(mention.as_str()),
        "the run's reply follows in the thread"
    );
    assert!(t.slack.acked(&click), "the click was acknowledged");
    assert_eq!(t.actions(), vec!["accept"], "exactly one decision");
    let closed = t.closed(&prompt).await;
    assert!(
        closed.contains("approved by Ann (slack)"),
        "the prompt says who decided, where: {closed}"
    );
    assert!(
        closed.contains("$ ls"),
        "and still shows what was approved: {closed}"
    );
    assert!(
        t.slack.ephemerals().is_empty(),
        "nothing private to say to the requester"
    );
    assert!(t.agent.misdecisions().is_empty());
    t.gw.stop().await;
}

#[tokio::test]
async fn a_strangers_click_is_refused_to_them_alone_and_changes_nothing() {
    let t = Setup::asking(&[], fast_options()).await;
    let mention = t.slack.send_channel("C1TEAM", "U1ANN", RUN_LS, true);
    let prompt = t.prompt_in("C1TEAM").await;
    let before = t.shown(&prompt);

    // The ack of this click is lost: Slack sends the click again, and it is refused once.
    t.slack.lose_acks(1);
    let click = t
        .slack
        .click_button("C1TEAM", &prompt.ts, "U2BOB", "Approve");

    t.slack
        .wait_for("the refusal", |s| !s.ephemerals().is_empty())
        .await;
    let refusal = t.slack.ephemerals().remove(0);
    assert_eq!(
        (
            refusal.channel.as_str(),
            refusal.user.as_str(),
            refusal.thread_ts.as_deref()
        ),
        ("C1TEAM", "U2BOB", Some(mention.as_str())),
        "only the clicker sees it, in the thread"
    );
    assert!(
        refusal.text.contains("only Ann or an owner"),
        "a polite refusal: {}",
        refusal.text
    );
    t.slack
        .wait_for("the redelivered click to be acknowledged", |s| {
            s.deliveries()
                .iter()
                .any(|d| d.envelope_id == click && d.retry_attempt == 1)
                && s.acked(&click)
        })
        .await;
    settle().await;
    assert_eq!(t.slack.ephemerals().len(), 1, "one click, one refusal");
    assert!(t.actions().is_empty(), "the stranger decided nothing");
    assert_eq!(t.shown(&prompt), before, "the prompt is unchanged");
    assert!(t.slack.updates().is_empty());
    assert_eq!(
        t.gw.engine.pending_approvals().expect("pending").len(),
        1,
        "still pending"
    );

    // Ann can still decide.
    t.slack
        .click_button("C1TEAM", &prompt.ts, "U1ANN", "Approve");
    t.finished_in("C1TEAM").await;
    assert_eq!(t.actions(), vec!["accept"]);
    t.gw.stop().await;
}

#[tokio::test]
async fn an_owner_may_decide_for_the_requester() {
    let t = Setup::asking(&["U9BOSS"], fast_options()).await;
    t.slack.set_user_name("U9BOSS", "Boss");
    t.slack.send_channel("C1TEAM", "U1ANN", RUN_LS, true);
    let prompt = t.prompt_in("C1TEAM").await;

    t.slack
        .click_button("C1TEAM", &prompt.ts, "U9BOSS", "Reject");

    let reply = t.finished_in("C1TEAM").await;
    assert!(
        reply.text.contains("rejected"),
        "the run went on with the rejection: {}",
        reply.text
    );
    assert_eq!(t.actions(), vec!["reject"]);
    let closed = t.closed(&prompt).await;
    assert!(closed.contains("rejected by Boss (slack)"), "{closed}");
    assert!(t.slack.ephemerals().is_empty());
    t.gw.stop().await;
}

#[tokio::test]
async fn always_allow_from_slack_lets_the_next_call_pass() {
    // Only an owner makes a rule from a chat; Ann owns this bot.
    let t = Setup::asking(&["U1ANN"], fast_options()).await;
    t.slack.send_dm("U1ANN", RUN_LS);
    let prompt = t.prompt_in("D1ANN").await;
    assert_eq!(
        prompt.thread_ts, None,
        "a DM prompt is flat, like the replies"
    );

    t.slack
        .click_button("D1ANN", &prompt.ts, "U1ANN", "Always allow");
    t.finished_in("D1ANN").await;
    let rules = t.gw.engine.rules().expect("rules");
    assert_eq!(rules[0].tool, "stakpak__run_command");
    assert_eq!(
        rules[0].channel.as_deref(),
        Some("slack"),
        "a rule made in a chat covers that channel only"
    );

    t.slack.send_dm("U1ANN", RUN_LS);
    t.slack
        .wait_for("the second run's reply", |s| {
            s.posted_in("D1ANN")
                .iter()
                .filter(|p| p.text.starts_with("done:"))
                .count()
                == 2
        })
        .await;
    let prompts = t
        .slack
        .posted_in("D1ANN")
        .iter()
        .filter(|p| !p.blocks.is_empty())
        .count();
    assert_eq!(prompts, 1, "no second prompt");
    assert_eq!(
        t.actions(),
        vec!["accept", "accept"],
        "the rule accepted the second call without asking anyone"
    );
    t.gw.stop().await;
}

#[tokio::test]
async fn a_decision_in_the_window_closes_the_prompt_and_a_late_click_is_told() {
    let t = Setup::asking(&[], fast_options()).await;
    t.slack.send_dm("U1ANN", RUN_LS);
    let prompt = t.prompt_in("D1ANN").await;
    let id = approval_id(&prompt);

    let decided =
        t.gw.engine
            .decide(
                &id,
                &Answer::AllowOnce,
                &Actor::local("me"),
                Surface::Window,
            )
            .expect("decide");
    assert!(matches!(decided, Resolution::Decided(_)));

    let closed = t.closed(&prompt).await;
    assert!(
        closed.contains("approved by me (window)"),
        "the chat sees who decided where: {closed}"
    );
    t.finished_in("D1ANN").await;

    // Ann's client still showed the buttons: her click comes late.
    t.slack.click(
        "D1ANN",
        &prompt.ts,
        "U1ANN",
        "sb_reject",
        &switchboard_engine::approvals::callback_data(ChatChoice::Reject, &id),
    );
    t.slack
        .wait_for("the late clicker to be told", |s| {
            !s.ephemerals().is_empty()
        })
        .await;
    let told = t.slack.ephemerals().remove(0);
    assert_eq!(told.user, "U1ANN");
    assert!(
        told.text.contains("Already decided") && told.text.contains("me (window)"),
        "{}",
        told.text
    );
    settle().await;
    assert_eq!(
        t.actions(),
        vec!["accept"],
        "the late click decided nothing"
    );
    assert_eq!(
        unescape(&t.shown(&prompt).shown()),
        closed,
        "the prompt still shows the first answer"
    );
    assert_eq!(
        t.slack
            .updates()
            .iter()
            .filter(|u| u.ts == prompt.ts)
            .count(),
        1,
        "the prompt was closed once; closing again is skipped"
    );
    t.gw.stop().await;
}

#[tokio::test]
async fn an_expired_approval_closes_the_prompt_and_the_chat_is_told() {
    let options = EngineOptions {
        approval_timeout: Some(Duration::from_millis(500)),
        ..fast_options()
    };
    let t = Setup::asking(&[], options).await;
    let mention = t.slack.send_channel("C1TEAM", "U1ANN", RUN_LS, true);
    let prompt = t.prompt_in("C1TEAM").await;

    let closed = t.closed(&prompt).await;
    assert!(closed.contains("not answered in time"), "{closed}");
    t.finished_in("C1TEAM").await;
    let told = t
        .slack
        .posted_in("C1TEAM")
        .into_iter()
        .find(|p| p.text.contains("Nobody approved"))
        .expect("the chat is told");
    assert!(
        told.text.contains("Send your message again"),
        "and how to retry: {}",
        told.text
    );
    assert_eq!(told.thread_ts.as_deref(), Some(mention.as_str()));
    assert_eq!(t.actions(), vec!["reject"]);
    t.gw.stop().await;
}

#[tokio::test]
async fn a_refusal_goes_through_the_response_url_when_ephemeral_messages_fail() {
    let t = Setup::asking(&[], fast_options()).await;
    t.slack.send_channel("C1TEAM", "U1ANN", RUN_LS, true);
    let prompt = t.prompt_in("C1TEAM").await;
    t.slack.fail(
        "chat.postEphemeral",
        Failure::Error("user_not_in_channel".into()),
        1,
    );

    t.slack
        .click_button("C1TEAM", &prompt.ts, "U2BOB", "Reject");

    t.slack
        .wait_for("the refusal", |s| !s.responses().is_empty())
        .await;
    let response = t.slack.responses().remove(0).body;
    assert_eq!(response["response_type"], "ephemeral");
    assert_eq!(response["replace_original"], false);
    assert!(
        response["text"]
            .as_str()
            .unwrap_or_default()
            .contains("only Ann"),
        "{response}"
    );
    assert!(t.actions().is_empty());
    assert_eq!(
        t.shown(&prompt).buttons().len(),
        4,
        "the prompt is unchanged"
    );
    t.gw.stop().await;
}

#[tokio::test]
async fn a_prompt_from_before_a_restart_still_decides_and_keeps_the_call_on_it() {
    let t = Setup::asking(&[], fast_options()).await;
    t.slack.send_dm("U1ANN", RUN_LS);
    let prompt = t.prompt_in("D1ANN").await;

    let t = t.restart_asking().await;
    t.slack
        .wait_for("the new engine to connect", |s| {
            s.sockets_opened() == 2 && s.open_sockets() == 1
        })
        .await;
    t.slack
        .click_button("D1ANN", &prompt.ts, "U1ANN", "Approve");

    t.finished_in("D1ANN").await;
    assert_eq!(t.actions(), vec!["accept"], "exactly one decision");
    let closed = t.closed(&prompt).await;
    assert!(
        closed.contains("approved by Ann (slack)") && closed.contains("$ ls"),
        "the new engine knew the prompt from the click: {closed}"
    );
    let prompts = t
        .slack
        .posted_in("D1ANN")
        .iter()
        .filter(|p| !p.blocks.is_empty())
        .count();
    assert_eq!(prompts, 1, "the restart posted no second prompt");
    t.gw.stop().await;
}
