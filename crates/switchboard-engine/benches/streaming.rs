//! Streaming benchmark: how many Telegram calls a reply costs in each `streaming` mode, for the
//! two shapes of run the engine meets — Stakpak 0.3.88's (a turn of text in one delta, a tool
//! that runs a while, the next turn) and a server that streams tokens (a reply in 20 deltas over
//! 2 s) — and how soon the chat first shows text. Prints numbers; asserts only that the final
//! text arrived.
//!
//! `cargo bench -p switchboard-engine --bench streaming`

use std::time::{Duration, Instant};

use switchboard_engine::config::{ApprovalMode, Config, Streaming, TelegramConfig};
use switchboard_engine::Engine;
use switchboard_testkit::stakpak::FakeStakpak;
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
        println!("Telegram calls per reply (sendMessage + editMessageText), first text shown after:");
        for (shape, prompt, ends) in shapes {
            for mode in [Streaming::Off, Streaming::Paragraphs, Streaming::Edit] {
                let (sends, edits, first, whole) = one_reply(mode, prompt, ends).await;
                println!(
                    "  {shape:<34} {:<10} {sends} sends + {edits} edits; first text after {:.2} s, whole after {:.2} s",
                    format!("{mode:?}").to_lowercase(),
                    first.as_secs_f64(),
                    whole.as_secs_f64(),
                );
            }
        }
    });
}

/// One reply in `mode`: the calls it cost, when the chat first showed text, when it was whole.
async fn one_reply(
    mode: Streaming,
    prompt: &str,
    ends: &str,
) -> (usize, usize, Duration, Duration) {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::default();
    config.server.url = agent.url();
    config.server.token = agent.token().unwrap_or_default();
    config.api.listen = "127.0.0.1:0".into();
    config.gateway.approval_mode = ApprovalMode::AllowAll;
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
    let mut first = None;
    loop {
        let shown = !tg.sent_to(CHAT).is_empty();
        if shown && first.is_none() {
            first = Some(started.elapsed());
        }
        let texts: Vec<String> = tg
            .sent_to(CHAT)
            .into_iter()
            .map(|s| s.text)
            .chain(tg.edits().into_iter().filter_map(|e| e.text))
            .collect();
        if texts.iter().any(|t| t.contains(ends))
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
    let calls = &tg.requests()[before..];
    let count = |method: &str| calls.iter().filter(|r| r.method == method).count();
    let result = (
        count("sendMessage"),
        count("editMessageText"),
        first.unwrap_or(whole),
        whole,
    );
    shutdown.cancel();
    engine.stopped().await;
    result
}
