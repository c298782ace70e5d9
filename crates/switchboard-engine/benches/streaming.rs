//! Streaming benchmark: how many Telegram and Slack calls a reply costs in each `streaming` mode, for the
//! two shapes of run the engine meets — Stakpak 0.3.88's (a turn of text in one delta, a tool
//! that runs a while, the next turn) and a server that streams tokens (a reply in 20 deltas over
//! 2 s) — and how soon the chat first shows text. Prints numbers; asserts only that the final
//! text arrived.
//!
//! `cargo bench -p switchboard-engine --bench streaming`

use std::time::{Duration, Instant};

use switchboard_engine::config::{
    ApprovalMode, Config, DmPolicy, SlackConfig, Streaming, TelegramConfig,
};
use switchboard_engine::Engine;
use switchboard_testkit::slack::FakeSlack;
use switchboard_testkit::stakpak::FakeStakpak;

// The allocator the binaries use, so the numbers are theirs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use switchboard_testkit::telegram::FakeTelegram;
use tokio_util::sync::CancellationToken;

const CHAT: i64 = 4242;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let shapes = [
            (
                "0.3.88 (turn, 2 s tool, turn)",
                "SAY_FIRST TOOL_SECS 2\nUSE_TOOL run_command {\"command\": \"cargo test\"}",
                "done:",
            ),
            (
                "token stream (20 deltas over 2 s)",
                "DRIP 20 2 tell me about the weather in some detail please",
                "echo: DRIP",
            ),
        ];
        println!("Telegram calls per reply (sendMessage + editMessageText + sendMessageDraft), first text shown after:");
        for (shape, prompt, ends) in shapes {
            for mode in [Streaming::Off, Streaming::Paragraphs, Streaming::Edit, Streaming::Auto] {
                let (calls, first, whole) = one_reply(mode, prompt, ends).await;
                print_row(shape, mode, &calls, first, whole);
            }
        }
        println!("Slack calls per reply (chat.postMessage + chat.update; chat.startStream + appendStream + stopStream):");
        for (shape, prompt, ends) in shapes {
            for mode in [Streaming::Edit, Streaming::Auto] {
                let (calls, first, whole) = slack_reply(mode, prompt, ends).await;
                print_row(shape, mode, &calls, first, whole);
            }
        }
    });
}

fn print_row(shape: &str, mode: Streaming, calls: &[usize], first: Duration, whole: Duration) {
    let calls: Vec<String> = calls.iter().map(usize::to_string).collect();
    println!(
        "  {shape:<34} {:<10} {} calls; first text after {:.2} s, whole after {:.2} s",
        format!("{mode:?}").to_lowercase(),
        calls.join(" + "),
        first.as_secs_f64(),
        whole.as_secs_f64(),
    );
}

fn engine_config(agent: &FakeStakpak) -> Config {
    let mut config = Config::default();
    config.server.url = agent.url();
    config.server.token = agent.token().unwrap_or_default();
    config.api.listen = "127.0.0.1:0".into();
    config.gateway.approval_mode = ApprovalMode::AllowAll;
    config
}

/// Waits until a reply holding `ends` is in the chat (`texts`) and no run is left; how long that
/// took from `started`, and when `shown` first said something was in the chat.
async fn wait_for_reply(
    engine: &switchboard_engine::EngineHandle,
    started: Instant,
    ends: &str,
    shown: impl Fn() -> bool,
    texts: impl Fn() -> Vec<String>,
) -> (Duration, Duration) {
    let mut first = None;
    loop {
        if shown() && first.is_none() {
            first = Some(started.elapsed());
        }
        if texts().iter().any(|t| t.contains(ends))
            && !engine
                .conversations()
                .expect("list")
                .iter()
                .any(|c| c.state == "running")
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the reply never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let whole = started.elapsed();
    (first.unwrap_or(whole), whole)
}

/// One Slack reply (in a DM) in `mode`: the calls it cost, when the chat first showed text,
/// when it was whole.
async fn slack_reply(
    mode: Streaming,
    prompt: &str,
    ends: &str,
) -> (Vec<usize>, Duration, Duration) {
    let agent = FakeStakpak::start().await;
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = engine_config(&agent);
    config.channels.slack = Some(SlackConfig {
        bot_token: slack.bot_token(),
        app_token: slack.app_token(),
        api_base: slack.api_base(),
        dm_policy: DmPolicy::Open,
        streaming: mode,
        ..SlackConfig::default()
    });
    let shutdown = CancellationToken::new();
    let engine = Engine::builder(config, dir.path())
        .start(shutdown.clone())
        .await
        .expect("engine");
    slack.wait_for("the socket", |s| s.open_sockets() > 0).await;
    let before = slack.requests().len();
    let started = Instant::now();
    slack.send_dm("U1ANN", prompt);
    let (first, whole) = wait_for_reply(
        &engine,
        started,
        ends,
        || !slack.posted().is_empty() || !slack.stream_calls().is_empty(),
        || {
            let dm = slack.dm_channel("U1ANN");
            let mut ts: Vec<String> = slack.posted_in(&dm).into_iter().map(|p| p.ts).collect();
            ts.extend(slack.stream_calls().into_iter().map(|c| c.ts));
            ts.iter()
                .filter_map(|ts| slack.message(&dm, ts))
                .map(|m| m.text)
                .collect()
        },
    )
    .await;
    let calls = &slack.requests()[before..];
    let count = |method: &str| calls.iter().filter(|r| r.method == method).count();
    let result = [
        "chat.postMessage",
        "chat.update",
        "chat.startStream",
        "chat.appendStream",
        "chat.stopStream",
    ]
    .map(count)
    .to_vec();
    shutdown.cancel();
    engine.stopped().await;
    (result, first, whole)
}

/// One Telegram reply in `mode` (with `auto`, in a private chat where the bot may stream
/// drafts): the calls it cost, when the chat first showed text, when it was whole.
async fn one_reply(mode: Streaming, prompt: &str, ends: &str) -> (Vec<usize>, Duration, Duration) {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    tg.set_drafts(mode == Streaming::Auto);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = engine_config(&agent);
    config.channels.telegram = Some(TelegramConfig {
        token: tg.token(),
        api_base: tg.api_base(),
        allowed_users: vec![CHAT.to_string()],
        streaming: mode,
        ..TelegramConfig::default()
    });
    let shutdown = CancellationToken::new();
    let engine = Engine::builder(config, dir.path())
        .start(shutdown.clone())
        .await
        .expect("engine");
    tg.wait_for("the bot to poll", |t| t.active_polls() > 0)
        .await;
    let before = tg.requests().len();
    let started = Instant::now();
    tg.send_dm(CHAT, "Olga", prompt);
    let (first, whole) = wait_for_reply(
        &engine,
        started,
        ends,
        || !tg.sent_to(CHAT).is_empty() || !tg.drafts().is_empty(),
        || {
            tg.sent_to(CHAT)
                .into_iter()
                .map(|s| s.text)
                .chain(tg.edits().into_iter().filter_map(|e| e.text))
                .collect()
        },
    )
    .await;
    let calls = &tg.requests()[before..];
    let count = |method: &str| calls.iter().filter(|r| r.method == method).count();
    let result = ["sendMessage", "editMessageText", "sendMessageDraft"]
        .map(count)
        .to_vec();
    shutdown.cancel();
    engine.stopped().await;
    (result, first, whole)
}
