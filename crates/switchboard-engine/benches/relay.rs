//! Relay benchmark: how much time the engine adds between a chat and the agent server, and how many
//! messages it moves per second across many conversations. Prints numbers; asserts only that no
//! message was lost or duplicated.
//!
//! `cargo bench -p switchboard-engine --bench relay` (add `-- --quick` for a short run).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_engine::channels::memory::MemoryChannel;
use switchboard_engine::chunk::{LengthUnit, TextLimit};
use switchboard_engine::config::{ApprovalMode, Config};
use switchboard_engine::{Engine, EngineHandle, EngineOptions};
use switchboard_testkit::stakpak::FakeStakpak;
use tokio_util::sync::CancellationToken;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (latency_messages, conversations, per_conversation) = if quick {
            (300, 200, 2)
        } else {
            (2000, 1000, 3)
        };
        latency(latency_messages).await;
        if !std::env::args().any(|a| a == "--latency-only") {
            throughput(conversations, per_conversation).await;
        }
    });
}

async fn start(
    fake: &FakeStakpak,
    dir: &std::path::Path,
) -> (EngineHandle, MemoryChannel, CancellationToken) {
    let mut config = Config::default();
    config.server.url = fake.url();
    config.server.token = fake.token().unwrap_or_default();
    config.gateway.approval_mode = ApprovalMode::AllowAll;
    let chat = MemoryChannel::new(
        "chat",
        TextLimit {
            max: 4096,
            unit: LengthUnit::Chars,
        },
    );
    let shutdown = CancellationToken::new();
    let options = EngineOptions {
        ..EngineOptions::default()
    };
    let engine = Engine::builder(config, dir)
        .options(options)
        .channel(Arc::new(chat.clone()))
        .start(shutdown.clone())
        .await
        .expect("engine starts");
    (engine, chat, shutdown)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name}: n={} p50={:.3} ms p90={:.3} ms p99={:.3} ms max={:.3} ms",
        samples.len(),
        percentile(&samples, 0.50).as_secs_f64() * 1e3,
        percentile(&samples, 0.90).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

/// One message at a time per conversation, a few conversations in parallel: the time from the
/// channel handing a message in to the server receiving the POST, and from the server sending
/// `run_completed` to the channel receiving the reply.
async fn latency(messages: usize) {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, chat, shutdown) = start(&fake, dir.path()).await;
    // Warm up: sessions exist and connections are pooled, as in steady use.
    let lanes: usize = std::env::args()
        .skip_while(|a| a != "--lanes")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(8);
    for lane in 0..lanes {
        chat.inject(chat.dm(&format!("peer{lane}"), &format!("warm{lane}"), "warm up"))
            .await
            .expect("accept");
    }
    chat.wait_until("warm-up replies", Duration::from_secs(30), |sent| {
        sent.len() >= lanes
    })
    .await;

    let mut injected: HashMap<String, Instant> = HashMap::new();
    let per_lane = messages / lanes;
    let mut handles = Vec::new();
    for lane in 0..lanes {
        let chat = chat.clone();
        handles.push(tokio::spawn(async move {
            let mut stamps = Vec::new();
            for i in 0..per_lane {
                let text = format!("lat-{lane}-{i}");
                let peer = format!("peer{lane}");
                let before = chat.sent_to(&peer).len();
                let at = Instant::now();
                chat.inject(chat.dm(&peer, &text, &text))
                    .await
                    .expect("accept");
                stamps.push((text, at));
                let want = before + 1;
                chat.wait_until("the reply", Duration::from_secs(30), |sent| {
                    sent.iter().filter(|s| s.target.chat_id == peer).count() >= want
                })
                .await;
            }
            stamps
        }));
    }
    for handle in handles {
        for (text, at) in handle.await.expect("lane") {
            injected.insert(text, at);
        }
    }
    let timings = fake.run_timings();
    let sent = chat.sent();
    let mut inbound = Vec::new();
    let mut outbound = Vec::new();
    for timing in &timings {
        let Some(at) = injected.get(&timing.text) else {
            continue;
        };
        inbound.push(timing.posted_at.saturating_duration_since(*at));
        let reply = format!("echo: {}", timing.text);
        if let (Some(done), Some(s)) = (timing.completed_at, sent.iter().find(|s| s.text == reply))
        {
            outbound.push(s.at.saturating_duration_since(done));
        }
    }
    println!("relay overhead over {} runs on loopback:", inbound.len());
    report("  inbound accepted -> POST received by the server", inbound);
    report(
        "  run_completed sent by the server -> reply handed to the channel",
        outbound,
    );
    shutdown.cancel();
    engine.stopped().await;
}

/// Many conversations at once, several messages each, all injected as fast as possible.
async fn throughput(conversations: usize, per_conversation: usize) {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, chat, shutdown) = start(&fake, dir.path()).await;
    let total = conversations * per_conversation;
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..conversations {
        let chat = chat.clone();
        handles.push(tokio::spawn(async move {
            for m in 0..per_conversation {
                let text = format!("tp-{c}-{m}");
                chat.inject(chat.dm(&format!("user{c}"), &text, &text))
                    .await
                    .expect("accept");
            }
        }));
    }
    for handle in handles {
        handle.await.expect("injector");
    }
    let accepted = started.elapsed();
    // Replies merge messages that queued behind a run ("a\n\nb"), so count message texts.
    let count = |sent: &[switchboard_engine::channels::memory::Sent]| -> usize {
        sent.iter()
            .map(|s| s.text.trim_start_matches("echo: ").split("\n\n").count())
            .sum()
    };
    chat.wait_until("every reply", Duration::from_secs(300), |sent| {
        count(sent) >= total
    })
    .await;
    let elapsed = started.elapsed();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for sent in chat.sent() {
        for part in sent.text.trim_start_matches("echo: ").split("\n\n") {
            *seen.entry(part.to_string()).or_default() += 1;
        }
    }
    let lost = (0..conversations)
        .flat_map(|c| (0..per_conversation).map(move |m| format!("tp-{c}-{m}")))
        .filter(|t| !seen.contains_key(t))
        .count();
    let duplicated = seen.values().filter(|n| **n > 1).count();
    println!(
        "throughput: {total} messages in {conversations} conversations: accepted in {:.2} s, all answered in {:.2} s = {:.0} messages/s; runs: {}; lost: {lost}; duplicated: {duplicated}",
        accepted.as_secs_f64(),
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        fake.runs_started(),
    );
    assert_eq!(lost, 0, "no message may be lost");
    assert_eq!(duplicated, 0, "no message may be answered twice");
    shutdown.cancel();
    engine.stopped().await;
}
