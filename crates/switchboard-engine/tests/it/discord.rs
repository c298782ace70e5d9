//! Discord end to end: the real engine with its Discord adapter, against the fake Discord (REST and
//! Gateway) and the fake agent server. Every check is something a person in the chat would notice,
//! or what the Gateway saw of the bot.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use switchboard_engine::channels::discord::{DiscordChannel, DiscordOptions};
use switchboard_engine::config::DmPolicy;
use switchboard_engine::config::{Config, DiscordConfig};
use switchboard_engine::model::{ChannelState, ChannelStatus};
use switchboard_engine::{Engine, EngineEvent, EngineHandle, EngineOptions};
use switchboard_testkit::discord::{Closed, Failure, FakeDiscord, UserMessage};
use switchboard_testkit::stakpak::FakeStakpak;
use tokio_util::sync::CancellationToken;

use crate::harness::{config_for, fast_options, settle, API_TOKEN, WAIT};

const GUILD: &str = "1100000000000000001";
const OTHER_GUILD: &str = "1100000000000000009";
const CHANNEL: &str = "1200000000000000001";
const THREAD: &str = "1210000000000000001";
const ANN: &str = "900000000000000001";
const BOB: &str = "900000000000000002";

fn discord_config(dc: &FakeDiscord) -> DiscordConfig {
    DiscordConfig {
        token: dc.token(),
        api_base: dc.api_base(),
        guilds: vec![GUILD.to_owned()],
        // These tests are about the platform's protocol, not access control: anyone may talk.
        dm_policy: DmPolicy::Open,
        open_groups: vec!["*".to_owned()],
        ..DiscordConfig::default()
    }
}

fn config(agent: &FakeStakpak, dc: &FakeDiscord) -> Config {
    let mut config = config_for(agent);
    config.channels.discord = Some(discord_config(dc));
    config
}

/// An engine whose only channel is Discord.
struct Bridge {
    engine: EngineHandle,
    shutdown: CancellationToken,
}

impl Bridge {
    /// Built from the configuration, as a user's engine is.
    async fn start(config: Config, data_dir: &Path) -> Bridge {
        Bridge::start_engine(Engine::builder(config, data_dir), fast_options()).await
    }

    /// Built from the configuration, with the engine's timings given.
    async fn start_with_options(config: Config, data_dir: &Path, options: EngineOptions) -> Bridge {
        Bridge::start_engine(Engine::builder(config, data_dir), options).await
    }

    /// With an adapter given its own timings (the configuration has no Discord table then).
    async fn start_with(config: Config, data_dir: &Path, channel: DiscordChannel) -> Bridge {
        Bridge::start_engine(
            Engine::builder(config, data_dir).channel(Arc::new(channel)),
            fast_options(),
        )
        .await
    }

    async fn start_engine(
        builder: switchboard_engine::EngineBuilder,
        options: EngineOptions,
    ) -> Bridge {
        let shutdown = CancellationToken::new();
        let engine = builder
            .options(options)
            .start(shutdown.clone())
            .await
            .expect("the engine starts");
        switchboard_engine::api::start(&engine, shutdown.clone()).await;
        Bridge { engine, shutdown }
    }

    /// Waits until the Discord channel's status satisfies `check`.
    async fn channel(&self, what: &str, check: impl Fn(&ChannelStatus) -> bool) -> ChannelStatus {
        crate::harness::wait_channel(&self.engine, "discord", what, check).await
    }

    async fn connected(&self, dc: &FakeDiscord) {
        self.channel("connected", |s| s.state == ChannelState::Connected)
            .await;
        dc.wait_for("the bot on the gateway", FakeDiscord::is_connected)
            .await;
    }

    async fn api(&self, path: &str, body: Value) -> (u16, Value) {
        let addr = self.engine.api_addr().expect("the API listens");
        let response = switchboard_engine::http::client()
            .post(format!("http://{addr}{path}"))
            .bearer_auth(API_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("the API answers");
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.engine.stopped().await;
    }
}

/// Waits until `n` messages were posted to `channel`, and returns their texts.
async fn replies(dc: &FakeDiscord, channel: &str, n: usize) -> Vec<String> {
    dc.wait_for(&format!("{n} messages in {channel}"), |dc| {
        dc.posted_to(channel).len() >= n
    })
    .await;
    dc.posted_to(channel)
}

fn agent_texts(agent: &FakeStakpak) -> Vec<String> {
    agent
        .posted_messages()
        .into_iter()
        .map(|p| p.text)
        .collect()
}

/// Whether the bot left a connection on its own with a code that keeps the session resumable.
fn left_resumably(closed: &Option<Closed>) -> bool {
    matches!(closed, Some(Closed::ByClient(Some(code))) if *code != 1000 && *code != 1001)
}

#[tokio::test]
async fn a_dm_is_answered_in_the_dm_replying_to_the_message() {
    let agent = FakeStakpak::start().await;
    let dc = FakeDiscord::start().await;
    dc.set_user_name(ANN, "Ann");
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Bridge::start(config(&agent, &dc), dir.path()).await;
    bridge.connected(&dc).await;

    let asked = dc.send_dm(ANN, "hello there SLOW 0.6");
    let dm = dc.dm_channel(ANN);

    assert_eq!(
        replies(&dc, &dm, 1).await,
        vec!["echo: hello there SLOW 0.6"],
        "the agent's reply reaches the DM"
    );
    let reply = &dc.posted()[0];
    assert_eq!(
        reply.replies_to(),
        Some(asked.as_str()),
        "it replies to the message that asked"
    );
    assert_eq!(
        reply.body["message_reference"]["fail_if_not_exists"], false,
        "a deleted question does not fail the reply"
    );
    assert_eq!(
        reply.allowed_mentions,
        Some(json!({"parse": []})),
        "agent text can never ping anyone"
    );
    assert!(
        dc.typing().contains(&dm),
        "the bot showed it was typing while the agent worked"
    );

    let identify = &dc.identifies()[0];
    assert_eq!(
        identify.intents,
        Some(37377),
        "GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT"
    );
    assert!(identify.token_ok && identify.path == "/gateway");
    assert_eq!(dc.connections()[0].query, "v=10&encoding=json");
    for request in dc.requests() {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bot {}", dc.token()).as_str()),
            "{}",
            request.path
        );
        let agent = request.header("user-agent").unwrap_or_default();
        assert!(
            agent.starts_with("DiscordBot (https://"),
            "{}: {agent}",
            request.path
        );
    }
    let status = bridge
        .channel("connected", |s| s.state == ChannelState::Connected)
        .await;
    assert_eq!(
        status.identity.map(|i| i.id),
        Some(dc.bot_id()),
        "the bot's identity is reported"
    );

    settle().await;
    assert_eq!(
        agent_texts(&agent),
        vec!["hello there SLOW 0.6"],
        "the bot's own echoed reply is not a message to answer"
    );
    assert_eq!(
        agent.sessions()[0].1,
        "discord / Ann",
        "the session is titled with the person's name"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn guild_messages_are_answered_only_when_addressed_in_allowed_guilds() {
    let agent = FakeStakpak::start().await;
    let dc = FakeDiscord::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Bridge::start(config(&agent, &dc), dir.path()).await;
    bridge.connected(&dc).await;

    dc.send_guild(GUILD, CHANNEL, ANN, "just chatting among ourselves", false);
    dc.send_guild(
        OTHER_GUILD,
        "1300000000000000001",
        ANN,
        "a guild it may not answer in",
        true,
    );
    dc.send_message(UserMessage {
        guild: Some(GUILD.into()),
        channel: CHANNEL.into(),
        author: "700000000000000001".into(),
        author_is_bot: true,
        text: "another bot talking".into(),
        mention_bot: true,
        ..UserMessage::default()
    });
    let asked = dc.send_guild(GUILD, CHANNEL, ANN, "status?", true);

    assert_eq!(
        replies(&dc, CHANNEL, 1).await,
        vec!["echo: status?"],
        "the mention is stripped from what the agent sees"
    );
    assert_eq!(dc.posted()[0].replies_to(), Some(asked.as_str()));

    // Replying to the bot's message addresses it without a mention.
    let bot_message = dc.posted()[0].id.clone();
    dc.send_message(UserMessage {
        guild: Some(GUILD.into()),
        channel: CHANNEL.into(),
        author: BOB.into(),
        text: "and the logs?".into(),
        reply_to: Some(bot_message),
        ..UserMessage::default()
    });
    assert_eq!(replies(&dc, CHANNEL, 2).await[1], "echo: and the logs?");
    // A click on a button that is not an approval's starts nothing and is left unanswered.
    dc.click(CHANNEL, &dc.posted()[0].id, ANN, "approve:1");

    settle().await;
    assert_eq!(
        agent_texts(&agent),
        vec!["status?", "and the logs?"],
        "only the addressed messages reached the agent"
    );
    assert_eq!(dc.posted().len(), 2, "nothing else was said anywhere");
    assert!(dc.interaction_callbacks().is_empty());
    assert_eq!(
        agent.sessions().len(),
        1,
        "one conversation for the channel"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_thread_gets_its_own_session_and_replies_land_in_the_thread() {
    let agent = FakeStakpak::start().await;
    let dc = FakeDiscord::start().await;
    // Without `channel_type` in the events the bot must look the channels up.
    dc.set_include_channel_type(false);
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Bridge::start(config(&agent, &dc), dir.path()).await;
    bridge.connected(&dc).await;

    dc.send_guild(GUILD, CHANNEL, ANN, "in the channel", true);
    assert_eq!(replies(&dc, CHANNEL, 1).await, vec!["echo: in the channel"]);
    let asked = dc.send_thread(GUILD, CHANNEL, THREAD, ANN, "in the thread", true);
    assert_eq!(
        replies(&dc, THREAD, 1).await,
        vec!["echo: in the thread"],
        "the reply lands in the thread"
    );
    assert_eq!(dc.posted_to(CHANNEL).len(), 1, "not in the parent channel");
    assert_eq!(
        dc.posted()
            .last()
            .and_then(|p| p.replies_to().map(str::to_owned)),
        Some(asked)
    );

    // The bot is part of the thread now: no mention needed.
    dc.send_thread(GUILD, CHANNEL, THREAD, BOB, "and a follow-up", false);
    assert_eq!(replies(&dc, THREAD, 2).await[1], "echo: and a follow-up");
    // A thread the bot is not in, without a mention: not for it.
    dc.send_thread(
        GUILD,
        CHANNEL,
        "1210000000000000002",
        ANN,
        "talking among ourselves",
        false,
    );

    settle().await;
    let posted = agent.posted_messages();
    assert_eq!(posted.len(), 3, "{:?}", agent_texts(&agent));
    assert_ne!(
        posted[0].session_id, posted[1].session_id,
        "the thread has its own session"
    );
    assert_eq!(
        posted[1].session_id, posted[2].session_id,
        "the thread's messages share it"
    );
    let lookups = dc
        .requests()
        .iter()
        .filter(|r| r.path == format!("/channels/{THREAD}"))
        .count();
    assert_eq!(
        lookups, 1,
        "the thread's parent is looked up once and remembered"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_long_reply_arrives_complete_in_order_and_within_the_limit() {
    let agent = FakeStakpak::start().await;
    let dc = FakeDiscord::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Bridge::start(config(&agent, &dc), dir.path()).await;
    let mut events = bridge.engine.subscribe();
    bridge.connected(&dc).await;

    dc.send_dm(ANN, "LONG_REPLY 40");
    let full = loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Ok(EngineEvent::ReplyDelivered { text, .. })) => break text,
            Ok(_) => continue,
            Err(_) => panic!("no reply delivered; posted {:?}", dc.posted()),
        }
    };

    let chunks = dc.posted_to(&dc.dm_channel(ANN));
    assert!(
        full.chars().count() > 10_000,
        "the reply is long: {}",
        full.chars().count()
    );
    assert!(
        chunks.len() >= 6,
        "split into several messages: {}",
        chunks.len()
    );
    for chunk in &chunks {
        assert!(
            chunk.chars().count() <= 2000,
            "each message fits Discord's 2000 characters"
        );
    }
    let joined: String = chunks.concat();
    let mut at = 0;
    for n in 1..=40 {
        let marker = format!("Paragraph {n} of 40 ");
        assert_eq!(joined.matches(&marker).count(), 1, "{marker} exactly once");
        let found = joined.find(&marker).unwrap_or(0);
        assert!(found >= at, "{marker} in order");
        at = found;
    }
    let squeeze = |s: &str| s.split_whitespace().collect::<String>();
    assert_eq!(squeeze(&joined), squeeze(&full), "nothing lost or repeated");
    let rejected = dc.requests().iter().filter(|r| r.status == 429).count();
    assert_eq!(
        rejected, 0,
        "the burst was paced by the rate-limit headers, never refused"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_429_and_a_server_error_are_waited_out_and_the_reply_arrives_once() {
    let agent = FakeStakpak::start().await;
    let dc = FakeDiscord::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Bridge::start(config(&agent, &dc), dir.path()).await;
    let mut events = bridge.engine.subscribe();
    bridge.connected(&dc).await;

    dc.fail_next(
        "POST",
        "/messages",
        Failure::RateLimited {
            retry_after: 0.35,
            global: false,
        },
        1,
    );
    dc.fail_next("POST", "/messages", Failure::Status(502), 1);
    dc.send_dm(ANN, "hello");

    assert_eq!(
        replies(&dc, &dc.dm_channel(ANN), 1).await,
        vec!["echo: hello"]
    );
    settle().await;
    assert_eq!(dc.posted().len(), 1, "delivered once");
    let statuses: Vec<u16> = dc
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/messages"))
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses,
        vec![429, 502, 200],
        "waited out the 429, retried the 502"
    );
    let mut limited = false;
    while let Ok(event) = events.try_recv() {
        if let EngineEvent::ChannelState { status } = event {
            limited |= status.name == "discord" && status.state == ChannelState::RateLimited;
        }
    }
    assert!(limited, "the channel reported it was rate limited");
    bridge
        .channel("connected again", |s| s.state == ChannelState::Connected)
        .await;
    bridge.stop().await;
}

#[tokio::test]
async fn a_redelivered_message_produces_one_run_and_one_reply() {
    let agent = FakeStakpak::start().await;
    let dc = FakeDiscord::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Bridge::start(config(&agent, &dc), dir.path()).await;
    bridge.connected(&dc).await;

    let id = dc.send_dm(ANN, "once please");
    replies(&dc, &dc.dm_channel(ANN), 1).await;
    dc.redeliver(&id);
    dc.redeliver(&id);

    settle().await;
    assert_eq!(agent.runs_started(), 1, "one run");
    assert_eq!(dc.posted().len(), 1, "one reply");
    bridge.stop().await;
}

#[tokio::test]
async fn a_restart_resumes_the_session_and_answers_only_what_is_new() {
    let agent = FakeStakpak::start().await;
    let dc = FakeDiscord::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Bridge::start(config(&agent, &dc), dir.path()).await;
    bridge.connected(&dc).await;
    dc.send_dm(ANN, "before the restart");
    let dm = dc.dm_channel(ANN);
    replies(&dc, &dm, 1).await;
    bridge.stop().await;
    assert!(
        left_resumably(&dc.connections()[0].closed),
        "stopping keeps the session resumable: {:?}",
        dc.connections()
    );

    // Written while the engine was down.
    dc.send_dm(ANN, "while you were away");
    let bridge = Bridge::start(config(&agent, &dc), dir.path()).await;

    assert_eq!(replies(&dc, &dm, 2).await[1], "echo: while you were away");
    let resume = dc.resumes().pop().expect("the new engine resumed");
    assert!(resume.accepted && resume.path == "/resume", "{resume:?}");
    assert!(
        resume.replayed >= 1,
        "what was missed came through the replay: {resume:?}"
    );
    assert_eq!(dc.identifies().len(), 1, "no new session was needed");
    settle().await;
    assert_eq!(
        agent_texts(&agent),
        vec!["before the restart", "while you were away"],
        "the old message is not processed again"
    );
    assert_eq!(dc.posted().len(), 2);
    bridge.stop().await;
}

#[tokio::test]
async fn bad_credentials_give_auth_failed_without_a_reconnect_storm() {
    let agent = FakeStakpak::start().await;
    let dc = FakeDiscord::start().await;
    let mut config = config(&agent, &dc);
    if let Some(discord) = config.channels.discord.as_mut() {
        discord.token = "not-the-token".into();
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Bridge::start(config, dir.path()).await;

    let status = bridge
        .channel("auth_failed", |s| s.state == ChannelState::AuthFailed)
        .await;
    let error = status.last_error.unwrap_or_default();
    assert!(
        error.contains("401") && error.contains("token"),
        "a readable error: {error}"
    );
    assert!(
        !error.contains("not-the-token"),
        "the token is never shown: {error}"
    );
    settle().await;
    assert_eq!(
        dc.requests().len(),
        1,
        "one refused check, then nothing: {:?}",
        dc.requests()
    );
    assert!(
        dc.connections().is_empty(),
        "no gateway connection with a bad token"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn gateway_refusals_stop_the_bot_for_good() {
    // 4004 on a running connection: authentication failed.
    let agent = FakeStakpak::start().await;
    let dc = FakeDiscord::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Bridge::start(config(&agent, &dc), dir.path()).await;
    bridge.connected(&dc).await;
    dc.close_with(4004);
    let status = bridge
        .channel("auth_failed", |s| s.state == ChannelState::AuthFailed)
        .await;
    let error = status.last_error.unwrap_or_default();
    assert!(error.contains("4004") && error.contains("token"), "{error}");
    settle().await;
    assert_eq!(dc.connections().len(), 1, "no reconnect after 4004");
    bridge.stop().await;

    // 4014 at IDENTIFY: the Message Content intent is not enabled.
    let dc = FakeDiscord::start().await;
    dc.reject_identify(4014);
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Bridge::start(config(&agent, &dc), dir.path()).await;
    let status = bridge
        .channel("auth_failed", |s| s.state == ChannelState::AuthFailed)
        .await;
    let error = status.last_error.unwrap_or_default();
    assert!(
        error.contains("enable the Message Content intent in the Developer Portal"),
        "{error}"
    );
    settle().await;
    assert_eq!(dc.connections().len(), 1, "no reconnect after 4014");
    bridge.stop().await;
}

#[tokio::test]
async fn disabling_disconnects_and_enabling_reconnects() {
    let agent = FakeStakpak::start().await;
    let dc = FakeDiscord::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Bridge::start(config(&agent, &dc), dir.path()).await;
    bridge.connected(&dc).await;

    bridge
        .engine
        .set_channel_enabled("discord", false)
        .expect("disable");
    dc.wait_for("the bot to leave the gateway", |dc| {
        dc.open_connections() == 0
    })
    .await;
    assert!(
        left_resumably(&dc.connections()[0].closed),
        "{:?}",
        dc.connections()
    );
    bridge
        .channel("disabled", |s| s.state == ChannelState::Disabled)
        .await;

    bridge
        .engine
        .set_channel_enabled("discord", true)
        .expect("enable");
    bridge.connected(&dc).await;
    assert_eq!(dc.connections().len(), 2, "one new connection");
    dc.send_dm(ANN, "are you back?");
    assert_eq!(
        replies(&dc, &dc.dm_channel(ANN), 1).await,
        vec!["echo: are you back?"]
    );
    bridge.stop().await;
}

#[tokio::test]
async fn gateway_send_reaches_a_channel_and_a_dm() {
    let agent = FakeStakpak::start().await;
    let dc = FakeDiscord::start().await;
    dc.add_channel(GUILD, CHANNEL);
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Bridge::start(config(&agent, &dc), dir.path()).await;
    bridge.connected(&dc).await;

    let send =
        |target: &str, text: &str| json!({"channel": "discord", "target": target, "text": text});
    let (status, _) = bridge
        .api(
            "/v1/gateway/send",
            send(CHANNEL, "deploy finished @everyone"),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = bridge
        .api(
            "/v1/gateway/send",
            send(&format!("dm:{ANN}"), "your build is green"),
        )
        .await;
    assert_eq!(status, 200);

    assert_eq!(dc.posted_to(CHANNEL), vec!["deploy finished @everyone"]);
    assert_eq!(
        dc.posted()[0].allowed_mentions,
        Some(json!({"parse": []})),
        "@everyone pings nobody"
    );
    assert_eq!(
        dc.posted()[0].message_reference,
        None,
        "a notification replies to nothing"
    );
    assert_eq!(dc.dm_opens(), vec![ANN], "the DM channel was opened");
    assert_eq!(
        dc.posted_to(&dc.dm_channel(ANN)),
        vec!["your build is green"]
    );

    let (status, body) = bridge.api("/v1/gateway/send", send("general", "x")).await;
    assert_eq!(status, 400);
    let message = body["error"]
        .as_str()
        .or(body["message"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("dm:<user id>"),
        "the error says which targets work: {body}"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn op_7_reconnects_resumes_and_replays_a_message_sent_meanwhile() {
    let agent = FakeStakpak::start().await;
    let dc = FakeDiscord::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Bridge::start(config(&agent, &dc), dir.path()).await;
    bridge.connected(&dc).await;

    dc.hold_connections(true);
    dc.send_reconnect();
    dc.wait_for("the bot to leave the old connection", |dc| {
        dc.connections()[0].closed.is_some()
    })
    .await;
    assert!(
        left_resumably(&dc.connections()[0].closed),
        "never 1000/1001 on a planned reconnect: {:?}",
        dc.connections()
    );
    dc.send_dm(ANN, "sent while reconnecting");
    dc.hold_connections(false);

    assert_eq!(
        replies(&dc, &dc.dm_channel(ANN), 1).await,
        vec!["echo: sent while reconnecting"]
    );
    let resume = dc.resumes().pop().expect("a RESUME");
    assert!(
        resume.accepted && resume.path == "/resume" && resume.replayed >= 1,
        "{resume:?}"
    );
    assert_eq!(dc.identifies().len(), 1, "resumed, not identified again");
    settle().await;
    assert_eq!(dc.posted().len(), 1, "answered once");
    bridge.stop().await;
}

#[tokio::test]
async fn a_dropped_connection_resumes_without_missing_a_message() {
    let agent = FakeStakpak::start().await;
    let dc = FakeDiscord::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Bridge::start(config(&agent, &dc), dir.path()).await;
    bridge.connected(&dc).await;
    dc.send_dm(ANN, "first");
    let dm = dc.dm_channel(ANN);
    replies(&dc, &dm, 1).await;

    dc.hold_connections(true);
    dc.drop_connection();
    dc.wait_for("the drop", |dc| {
        dc.connections()[0].closed == Some(Closed::DroppedByServer)
    })
    .await;
    dc.send_dm(ANN, "second, while the bot is away");
    dc.hold_connections(false);

    assert_eq!(
        replies(&dc, &dm, 2).await[1],
        "echo: second, while the bot is away"
    );
    let resume = dc.resumes().pop().expect("a RESUME");
    assert!(resume.accepted && resume.replayed >= 1, "{resume:?}");
    settle().await;
    assert_eq!(
        agent_texts(&agent),
        vec!["first", "second, while the bot is away"],
        "each answered once"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn invalid_sessions_resume_or_identify_afresh() {
    let agent = FakeStakpak::start().await;
    let dc = FakeDiscord::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Discord asks for 1–5 s before identifying again; this adapter waits 10–50 ms.
    let options = DiscordOptions {
        invalid_session_delay: (Duration::from_millis(10), Duration::from_millis(50)),
        ..DiscordOptions::default()
    };
    let channel = DiscordChannel::with_options(&discord_config(&dc), options);
    let bridge = Bridge::start_with(config(&agent, &dc), dir.path(), channel).await;
    bridge.connected(&dc).await;

    dc.invalidate_session(true);
    dc.wait_for("a RESUME", |dc| dc.resumes().iter().any(|r| r.accepted))
        .await;
    bridge.connected(&dc).await;
    assert_eq!(dc.identifies().len(), 1, "op 9 true resumes");

    dc.invalidate_session(false);
    dc.wait_for("a new IDENTIFY", |dc| dc.identifies().len() == 2)
        .await;
    assert_eq!(
        dc.identifies()[1].path,
        "/gateway",
        "a new session starts on the /gateway/bot URL, not the resume URL"
    );
    bridge.connected(&dc).await;
    dc.send_dm(ANN, "still there?");
    assert_eq!(
        replies(&dc, &dc.dm_channel(ANN), 1).await,
        vec!["echo: still there?"]
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_zombie_connection_is_closed_and_resumed() {
    let agent = FakeStakpak::start().await;
    let dc = FakeDiscord::start().await;
    dc.set_heartbeat_interval(Duration::from_millis(300));
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Bridge::start(config(&agent, &dc), dir.path()).await;
    bridge.connected(&dc).await;

    dc.stop_acking();
    dc.send_dm(ANN, "sent to a dead socket");
    dc.wait_for("the bot to give up on the silent connection", |dc| {
        dc.connections()[0].closed.is_some()
    })
    .await;
    assert!(
        left_resumably(&dc.connections()[0].closed),
        "{:?}",
        dc.connections()
    );

    assert_eq!(
        replies(&dc, &dc.dm_channel(ANN), 1).await,
        vec!["echo: sent to a dead socket"]
    );
    let resume = dc.resumes().pop().expect("a RESUME");
    assert!(resume.accepted && resume.replayed >= 1, "{resume:?}");
    assert!(
        dc.heartbeats().iter().any(|h| h.connection == 1),
        "heartbeats were sent"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_message_queued_behind_a_run_gets_an_hourglass() {
    let agent = FakeStakpak::start().await;
    let dc = FakeDiscord::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Bridge::start(config(&agent, &dc), dir.path()).await;
    let mut events = bridge.engine.subscribe();
    bridge.connected(&dc).await;

    dc.send_dm(ANN, "HOLD first");
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Ok(EngineEvent::RunStarted { .. })) => break,
            Ok(_) => continue,
            Err(_) => panic!("the first run never started"),
        }
    }
    let queued = dc.send_dm(ANN, "second");
    dc.wait_for("a reaction", |dc| !dc.reactions().is_empty())
        .await;
    let reaction = &dc.reactions()[0];
    assert_eq!(
        (reaction.message.as_str(), reaction.emoji.as_str()),
        (queued.as_str(), "⏳")
    );
    agent.release("first");
    assert_eq!(
        replies(&dc, &dc.dm_channel(ANN), 2).await,
        vec!["echo: HOLD first", "echo: second"]
    );
    bridge.stop().await;
}

/// Tool approvals answered with Discord buttons.
mod approvals {
    use std::time::Duration;

    use serde_json::{json, Value};
    use switchboard_engine::approvals::{parse_callback, ChatChoice};
    use switchboard_engine::approvals::{Actor, Answer, Surface};
    use switchboard_engine::channels::discord::{DiscordChannel, DiscordOptions};
    use switchboard_engine::config::{ApprovalMode, Config};
    use switchboard_engine::store::Resolution;
    use switchboard_engine::EngineOptions;
    use switchboard_testkit::discord::{FakeDiscord, PostedMessage};
    use switchboard_testkit::stakpak::FakeStakpak;

    use super::{config, discord_config, replies, Bridge, ANN, BOB, CHANNEL, GUILD, THREAD};
    use crate::harness::{fast_options, settle};

    const MALLORY: &str = "900000000000000003";
    const RUN_LS: &str = r#"USE_TOOL run_command {"command": "ls"}"#;

    /// Ask mode, with these owners in `[channels.discord]`.
    fn ask(agent: &FakeStakpak, dc: &FakeDiscord, owners: &[&str]) -> Config {
        let mut config = config(agent, dc);
        config.gateway.approval_mode = ApprovalMode::Ask;
        if let Some(discord) = config.channels.discord.as_mut() {
            discord.owners = owners.iter().map(|o| o.to_string()).collect();
        }
        config
    }

    fn name_people(dc: &FakeDiscord) {
        dc.set_user_name(ANN, "Ann");
        dc.set_user_name(BOB, "Bob");
        dc.set_user_name(MALLORY, "Mallory");
    }

    /// Text as Discord shows it: a backslash before punctuation escapes it and is not shown.
    fn shown(text: &str) -> String {
        let mut out = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match chars.peek() {
                Some(next) if c == '\\' && next.is_ascii_punctuation() => {
                    out.push(*next);
                    chars.next();
                }
                _ => out.push(c),
            }
        }
        out
    }

    /// What a message shows now: its text (as rendered) and its buttons' labels.
    fn seen(dc: &FakeDiscord, message: &str) -> (String, Vec<String>) {
        let text = dc
            .message(message)
            .and_then(|m| m["content"].as_str().map(shown))
            .unwrap_or_default();
        let buttons = dc.buttons(message).into_iter().map(|b| b.label).collect();
        (text, buttons)
    }

    /// Waits for the bot's message with buttons in `channel`.
    async fn prompt_in(dc: &FakeDiscord, channel: &str) -> PostedMessage {
        let is_prompt =
            |p: &PostedMessage| p.channel == channel && p.body.get("components").is_some();
        dc.wait_for(&format!("an approval prompt in {channel}"), |dc| {
            dc.posted().iter().any(is_prompt)
        })
        .await;
        dc.posted()
            .into_iter()
            .find(is_prompt)
            .expect("the prompt was posted")
    }

    /// Waits until the prompt shows `outcome` and has no buttons left.
    async fn closed_with(dc: &FakeDiscord, message: &str, outcome: &str) -> String {
        dc.wait_for(&format!("the prompt to show {outcome:?}"), |dc| {
            let (text, buttons) = seen(dc, message);
            text.contains(outcome) && buttons.is_empty()
        })
        .await;
        seen(dc, message).0
    }

    fn actions(agent: &FakeStakpak) -> Vec<String> {
        agent.decisions().into_iter().map(|d| d.action).collect()
    }

    /// The interaction callbacks the bot sent, waiting for at least `n`.
    async fn callbacks(dc: &FakeDiscord, n: usize) -> Vec<Value> {
        dc.wait_for(&format!("{n} interaction answers"), |dc| {
            dc.interaction_callbacks().len() >= n
        })
        .await;
        dc.interaction_callbacks()
            .into_iter()
            .map(|c| {
                assert_eq!(c.status, 204, "Discord took the answer: {:?}", c.body);
                c.body
            })
            .collect()
    }

    #[tokio::test]
    async fn the_requester_approves_in_the_thread_and_the_prompt_shows_it() {
        let agent = FakeStakpak::start().await;
        let dc = FakeDiscord::start().await;
        name_people(&dc);
        let dir = tempfile::tempdir().expect("tempdir");
        let bridge = Bridge::start(ask(&agent, &dc, &[]), dir.path()).await;
        bridge.connected(&dc).await;

        let asked = dc.send_thread(GUILD, CHANNEL, THREAD, ANN, RUN_LS, true);
        let prompt = prompt_in(&dc, THREAD).await;
        assert_eq!(
            prompt.replies_to(),
            Some(asked.as_str()),
            "the prompt answers the message that asked, in its thread"
        );
        assert!(
            dc.posted_to(CHANNEL).is_empty(),
            "not in the parent channel"
        );
        assert_eq!(prompt.allowed_mentions, Some(json!({"parse": []})));
        let (text, labels) = seen(&dc, &prompt.id);
        assert!(
            text.starts_with("🔐 The agent wants to run `ls` (**stakpak__run_command**)\n```\n$ ls\n```\nRequested by Ann · expires in "),
            "the tool, its arguments, who asked and the expiry: {text}"
        );
        assert_eq!(
            labels,
            ["Approve", "Reject", "Allow in this chat", "Always allow"]
        );
        let pending = bridge.engine.pending_approvals().expect("pending");
        let styles: Vec<(u64, Option<(ChatChoice, String)>)> = dc
            .buttons(&prompt.id)
            .into_iter()
            .map(|b| (b.style, b.custom_id.as_deref().and_then(parse_callback)))
            .collect();
        let id = pending[0].id.clone();
        assert_eq!(
            styles,
            vec![
                (3, Some((ChatChoice::Approve, id.clone()))),
                (4, Some((ChatChoice::Reject, id.clone()))),
                (2, Some((ChatChoice::AllowHere, id.clone()))),
                (2, Some((ChatChoice::AlwaysAllow, id.clone()))),
            ],
            "green, red and grey buttons for this approval"
        );
        assert!(
            agent.decisions().is_empty(),
            "nothing decided before a click"
        );

        dc.click_button(&prompt.id, ANN, "Approve");
        let answers = callbacks(&dc, 1).await;
        assert_eq!(
            answers[0]["type"], 7,
            "the click updates the prompt at once"
        );
        assert_eq!(answers[0]["data"]["components"], json!([]));
        let text = closed_with(
            &dc,
            &prompt.id,
            "✅ stakpak__run_command: approved by Ann (discord)",
        )
        .await;
        assert!(
            text.contains("```\n$ ls\n```"),
            "what was approved stays readable: {text}"
        );
        let thread = replies(&dc, THREAD, 2).await;
        assert!(
            thread[1].starts_with("done:"),
            "the run finished: {thread:?}"
        );
        assert_eq!(actions(&agent), ["accept"], "exactly one decision");
        assert!(agent.misdecisions().is_empty());

        // The engine closes the prompt too; it says the same.
        dc.wait_for("the engine's edit of the prompt", |dc| {
            !dc.edits().is_empty()
        })
        .await;
        settle().await;
        assert_eq!(shown(&dc.edits()[0].content), text, "both paths agree");
        assert_eq!(seen(&dc, &prompt.id).0, text);
        assert_eq!(dc.interaction_callbacks().len(), 1, "one answer per click");
        assert!(dc.ephemerals().is_empty());
        bridge.stop().await;
    }

    #[tokio::test]
    async fn a_stranger_is_refused_privately_and_an_owner_decides() {
        let agent = FakeStakpak::start().await;
        let dc = FakeDiscord::start().await;
        name_people(&dc);
        let dir = tempfile::tempdir().expect("tempdir");
        let bridge = Bridge::start(ask(&agent, &dc, &[BOB]), dir.path()).await;
        bridge.connected(&dc).await;

        dc.send_guild(GUILD, CHANNEL, ANN, RUN_LS, true);
        let prompt = prompt_in(&dc, CHANNEL).await;
        let before = dc.message(&prompt.id).expect("the prompt");

        dc.click_button(&prompt.id, MALLORY, "Approve");
        let answers = callbacks(&dc, 1).await;
        assert_eq!(
            (
                answers[0]["type"].clone(),
                answers[0]["data"]["flags"].clone()
            ),
            (json!(4), json!(64)),
            "a message only the clicker sees"
        );
        let refusal = &dc.ephemerals()[0];
        assert_eq!(refusal.user, MALLORY);
        assert_eq!(
            shown(&refusal.content),
            "Sorry, only Ann or an owner of this bot can decide this request."
        );
        settle().await;
        assert!(agent.decisions().is_empty(), "the stranger decided nothing");
        assert_eq!(bridge.engine.pending_approvals().expect("pending").len(), 1);
        assert_eq!(
            dc.message(&prompt.id),
            Some(before),
            "the prompt is unchanged, buttons and all"
        );
        assert!(dc.edits().is_empty());

        dc.click_button(&prompt.id, BOB, "Reject");
        closed_with(
            &dc,
            &prompt.id,
            "❌ stakpak__run_command: rejected by Bob (discord)",
        )
        .await;
        let channel = replies(&dc, CHANNEL, 2).await;
        assert!(channel[1].starts_with("done:"), "{channel:?}");
        assert_eq!(actions(&agent), ["reject"], "the owner's decision, once");
        assert_eq!(dc.ephemerals().len(), 1, "the owner was not refused");
        bridge.stop().await;
    }

    #[tokio::test]
    async fn a_decision_in_the_window_closes_the_prompt_and_a_late_click_is_told() {
        let agent = FakeStakpak::start().await;
        let dc = FakeDiscord::start().await;
        name_people(&dc);
        let dir = tempfile::tempdir().expect("tempdir");
        let bridge = Bridge::start(ask(&agent, &dc, &[]), dir.path()).await;
        bridge.connected(&dc).await;

        dc.send_dm(ANN, RUN_LS);
        let dm = dc.dm_channel(ANN);
        let prompt = prompt_in(&dc, &dm).await;
        let approve = dc.buttons(&prompt.id)[0]
            .custom_id
            .clone()
            .expect("the Approve payload");
        let id = bridge.engine.pending_approvals().expect("pending")[0]
            .id
            .clone();

        let decided = bridge
            .engine
            .decide(
                &id,
                &Answer::AllowOnce,
                &Actor::local("me"),
                Surface::Window,
            )
            .expect("decide");
        assert!(matches!(decided, Resolution::Decided(_)));
        closed_with(
            &dc,
            &prompt.id,
            "✅ stakpak__run_command: approved by me (window)",
        )
        .await;
        assert!(replies(&dc, &dm, 2).await[1].starts_with("done:"));

        // Ann's client still showed the buttons when she clicked.
        dc.click(&dm, &prompt.id, ANN, &approve);
        let answers = callbacks(&dc, 1).await;
        assert_eq!(answers[0]["type"], 7);
        let told = shown(answers[0]["data"]["content"].as_str().unwrap_or_default());
        assert!(
            told.ends_with("Already decided: ✅ stakpak__run_command: approved by me (window)"),
            "who decided, where: {told}"
        );
        assert_eq!(seen(&dc, &prompt.id).1, Vec::<String>::new(), "no buttons");
        settle().await;
        assert_eq!(actions(&agent), ["accept"], "one decision");
        assert_eq!(bridge.engine.decisions(10).expect("audit").len(), 1);
        bridge.stop().await;
    }

    #[tokio::test]
    async fn a_prompt_from_before_a_restart_is_still_closed_with_what_it_asked() {
        let agent = FakeStakpak::start().await;
        let dc = FakeDiscord::start().await;
        name_people(&dc);
        let dir = tempfile::tempdir().expect("tempdir");
        let bridge = Bridge::start(ask(&agent, &dc, &[]), dir.path()).await;
        bridge.connected(&dc).await;
        dc.send_dm(ANN, RUN_LS);
        let dm = dc.dm_channel(ANN);
        let prompt = prompt_in(&dc, &dm).await;
        bridge.stop().await;

        let bridge = Bridge::start(ask(&agent, &dc, &[]), dir.path()).await;
        bridge.connected(&dc).await;
        let id = bridge.engine.pending_approvals().expect("pending")[0]
            .id
            .clone();
        bridge
            .engine
            .decide(&id, &Answer::Reject, &Actor::local("me"), Surface::Window)
            .expect("decide");
        let text = closed_with(
            &dc,
            &prompt.id,
            "❌ stakpak__run_command: rejected by me (window)",
        )
        .await;
        assert!(
            text.contains("```\n$ ls\n```"),
            "the prompt keeps what it asked: {text}"
        );
        let read = format!("/channels/{dm}/messages/{}", prompt.id);
        assert!(
            dc.requests()
                .iter()
                .any(|r| r.method == "GET" && r.path == read),
            "the prompt was read back from Discord after the restart"
        );
        assert!(replies(&dc, &dm, 2).await[1].starts_with("done:"));
        assert_eq!(actions(&agent), ["reject"]);
        bridge.stop().await;
    }

    #[tokio::test]
    async fn an_expired_approval_closes_the_prompt_and_the_chat_is_told() {
        let agent = FakeStakpak::start().await;
        let dc = FakeDiscord::start().await;
        name_people(&dc);
        let dir = tempfile::tempdir().expect("tempdir");
        let options = EngineOptions {
            approval_timeout: Some(Duration::from_millis(400)),
            ..fast_options()
        };
        let bridge = Bridge::start_with_options(ask(&agent, &dc, &[]), dir.path(), options).await;
        bridge.connected(&dc).await;

        dc.send_dm(ANN, RUN_LS);
        let dm = dc.dm_channel(ANN);
        let prompt = prompt_in(&dc, &dm).await;
        closed_with(
            &dc,
            &prompt.id,
            "⏱ stakpak__run_command: not answered in time, rejected",
        )
        .await;
        dc.wait_for("the run's end", |dc| {
            dc.posted_to(&dm).iter().any(|t| t.starts_with("done:"))
        })
        .await;
        let said = dc.posted_to(&dm);
        assert!(
            said.iter()
                .any(|t| t.contains("was rejected") && t.contains("Send your message again")),
            "the chat is told why and how to retry: {said:?}"
        );
        assert_eq!(actions(&agent), ["reject"]);
        assert!(dc.interaction_callbacks().is_empty());
        bridge.stop().await;
    }

    #[tokio::test]
    async fn a_slow_decision_is_acknowledged_first_then_followed_up() {
        let agent = FakeStakpak::start().await;
        let dc = FakeDiscord::start().await;
        name_people(&dc);
        let dir = tempfile::tempdir().expect("tempdir");
        // Acknowledge every click before deciding, as when the engine is slow to answer.
        let options = DiscordOptions {
            click_answer_within: Duration::ZERO,
            ..DiscordOptions::default()
        };
        let channel = DiscordChannel::with_options(&discord_config(&dc), options);
        let mut config = config(&agent, &dc);
        config.gateway.approval_mode = ApprovalMode::Ask;
        let bridge = Bridge::start_with(config, dir.path(), channel).await;
        bridge.connected(&dc).await;

        dc.send_guild(GUILD, CHANNEL, ANN, RUN_LS, true);
        let prompt = prompt_in(&dc, CHANNEL).await;
        let before = dc.message(&prompt.id).expect("the prompt");

        dc.click_button(&prompt.id, MALLORY, "Always allow");
        dc.wait_for("a private refusal", |dc| !dc.ephemerals().is_empty())
            .await;
        assert_eq!(callbacks(&dc, 1).await[0], json!({"type": 6}));
        let refusal = &dc.ephemerals()[0];
        assert_eq!(refusal.user, MALLORY);
        assert!(shown(&refusal.content).contains("only Ann"), "{refusal:?}");
        assert_eq!(dc.message(&prompt.id), Some(before), "unchanged");

        dc.click_button(&prompt.id, ANN, "Approve");
        closed_with(&dc, &prompt.id, "approved by Ann (discord)").await;
        assert_eq!(callbacks(&dc, 2).await[1], json!({"type": 6}));
        assert!(
            dc.requests().iter().any(|r| r.method == "PATCH"
                && r.path.ends_with("/messages/@original")
                && r.status == 200),
            "the prompt was updated through the interaction"
        );
        assert!(replies(&dc, CHANNEL, 2).await[1].starts_with("done:"));
        assert_eq!(actions(&agent), ["accept"]);
        bridge.stop().await;
    }
}
