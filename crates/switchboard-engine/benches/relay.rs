//! Relay benchmark: how much time the engine adds between a chat and the agent server, and how many
//! messages it moves per second across many conversations. Prints numbers; asserts only that no
//! message was lost or duplicated.
//!
//! `cargo bench -p switchboard-engine --bench relay` (add `-- --quick` for a short run,
//! `-- --unmerged-only` for the unmerged workloads alone; `SHAPES=50x10,200x5` for other unmerged
//! workloads, as conversations x messages each).
//!
//! The unmerged workloads send each conversation's next message only after its reply, so no two
//! messages merge into one run: every message is a run, as when people wait for answers. The
//! model answers 50 ms after each message (`SLOW 0.05`). Their latency is also split where the
//! time goes: before the server has the message, at the server, and after it said it was done.
//! A last workload (full runs only) makes every POST of one of 200 conversations take 2 s to
//! answer and prints the other conversations' latency apart: one slow POST must not delay them.
//! The first unmerged workload runs once more before them all, printed as the warm-up: a fresh
//! process's first burst, whose new memory costs page faults a running gateway paid long ago.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use switchboard_engine::channels::memory::MemoryChannel;
use switchboard_engine::channels::{Channel, ChannelContext, ChannelError, SentMessage};
use switchboard_engine::chunk::{LengthUnit, TextLimit};
use switchboard_engine::config::{ApprovalMode, Config};
use switchboard_engine::model::{ChatType, DeliveryTarget, Identity, InboundMessage, Peer};
use switchboard_engine::{Engine, EngineHandle, EngineOptions};
use switchboard_testkit::stakpak::FakeStakpak;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

// The allocator the binaries use (switchboard, switchboard-gateway), so the numbers are theirs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        let unmerged_only = std::env::args().any(|a| a == "--unmerged-only");
        if !unmerged_only {
            latency(latency_messages).await;
            if !std::env::args().any(|a| a == "--latency-only") {
                throughput(conversations, per_conversation).await;
            }
        }
        // SHAPES=50x10,200x5: other unmerged workloads (conversations x messages each).
        let custom = custom_shapes();
        let shapes: &[(usize, usize)] = if !custom.is_empty() {
            &custom
        } else if quick {
            &[(100, 3)]
        } else {
            &[(200, 5), (1000, 2)]
        };
        // A fresh process's first burst also pays for memory it has never touched (page faults
        // that zero new pages, about 40 ms of CPU for 200 x 5, docs/BENCHMARKS.md): a gateway
        // pays that once, at its start. Run once first, printed apart, so that the engine and the
        // naive client after it are both measured in a warm process.
        if let Some(&(conversations, per_conversation)) = shapes.first() {
            println!("warm-up, the process's first burst (not the measurement):");
            unmerged(conversations, per_conversation, false).await;
            println!("measured:");
        }
        for &(conversations, per_conversation) in shapes {
            unmerged(conversations, per_conversation, false).await;
            // The same workload through a client with no store at all, measured in the same run
            // on the same machine: the bar the engine's durability is paid against.
            if !std::env::args().any(|a| a == "--no-naive") {
                naive(conversations, per_conversation).await;
            }
        }
        // One conversation whose every POST takes 2 s to answer: the others must not notice.
        if custom.is_empty() && !quick {
            unmerged(200, 5, true).await;
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

/// Where one conversation's replies go: their text and when they were sent.
type Lane = mpsc::UnboundedSender<(String, Instant)>;

/// The workloads asked for in `SHAPES` (`200x5,1000x2`); none when it is unset or unreadable.
fn custom_shapes() -> Vec<(usize, usize)> {
    let Ok(list) = std::env::var("SHAPES") else {
        return Vec::new();
    };
    list.split(',')
        .filter_map(|shape| {
            let (conversations, messages) = shape.trim().split_once('x')?;
            Some((conversations.parse().ok()?, messages.parse().ok()?))
        })
        .collect()
}

/// A chat for the unmerged workloads: each reply is handed straight to the conversation waiting
/// for it (no shared list to scan), so the harness costs next to nothing beside the engine.
#[derive(Clone)]
struct LaneChannel {
    ctx: watch::Sender<Option<ChannelContext>>,
    lanes: Arc<Mutex<HashMap<String, Lane>>>,
}

impl LaneChannel {
    fn new() -> Self {
        LaneChannel {
            ctx: watch::channel(None).0,
            lanes: Arc::default(),
        }
    }

    /// The replies to conversation `peer`, as they are sent.
    fn lane(&self, peer: &str) -> mpsc::UnboundedReceiver<(String, Instant)> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lanes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer.to_owned(), tx);
        rx
    }

    async fn context(&self) -> ChannelContext {
        let mut ctx = self.ctx.subscribe();
        loop {
            if let Some(ctx) = ctx.borrow_and_update().clone() {
                return ctx;
            }
            ctx.changed().await.expect("the channel runs");
        }
    }
}

#[async_trait]
impl Channel for LaneChannel {
    fn name(&self) -> &str {
        "lanes"
    }

    fn text_limit(&self) -> TextLimit {
        TextLimit {
            max: 4096,
            unit: LengthUnit::Chars,
        }
    }

    async fn run(&self, ctx: ChannelContext) {
        let shutdown = ctx.shutdown.clone();
        self.ctx.send_replace(Some(ctx));
        shutdown.cancelled().await;
    }

    async fn send(&self, target: &DeliveryTarget, text: &str) -> Result<SentMessage, ChannelError> {
        let lane = self
            .lanes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&target.chat_id)
            .cloned();
        if let Some(lane) = lane {
            let _ = lane.send((text.to_owned(), Instant::now()));
        }
        Ok(SentMessage { id: String::new() })
    }

    async fn test(&self) -> Result<Identity, ChannelError> {
        Ok(Identity {
            id: "lanes".into(),
            name: "lanes".into(),
        })
    }

    fn parse_target(&self, target: &str) -> Result<DeliveryTarget, String> {
        Ok(DeliveryTarget::chat(target))
    }
}

/// The unmerged workload through a client that keeps nothing: for each message, subscribe to its
/// conversation's session, post, read the stream to `run_completed`. What the engine adds beyond
/// this is the price of its durability (and of its bookkeeping).
async fn naive(conversations: usize, per_conversation: usize) {
    use switchboard_engine::agent::{AgentClient, AgentEvent, StreamItem, Timeouts};
    let fake = FakeStakpak::start().await;
    let client = AgentClient::new(
        &fake.url(),
        &fake.token().unwrap_or_default(),
        Timeouts::default(),
    )
    .expect("client");
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..conversations {
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            let session = client
                .create_session(&format!("naive {c}"), &format!("naive-{c}"))
                .await
                .expect("session")
                .id;
            let mut latencies = Vec::with_capacity(per_conversation);
            for m in 0..per_conversation {
                let at = Instant::now();
                let text = format!("SLOW 0.05 naive-{c}-{m}");
                let mut stream = client.subscribe(&session, None).await.expect("subscribe");
                client
                    .post_message(&session, &text, &[], None, &format!("naive-{c}-{m}"))
                    .await
                    .expect("post");
                let mut reply = String::new();
                while let Some(Ok(item)) = stream.next().await {
                    if let StreamItem::Event(envelope) = item {
                        match envelope.event {
                            AgentEvent::TextDelta { delta, .. } => reply.push_str(&delta),
                            AgentEvent::RunCompleted { .. } => break,
                            _ => {}
                        }
                    }
                }
                assert_eq!(reply, format!("echo: {text}"));
                latencies.push(at.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await.expect("conversation"));
    }
    let elapsed = started.elapsed();
    let total = conversations * per_conversation;
    println!(
        "naive client (no store): {conversations} x {per_conversation}: {total} replies in {:.2} s = {:.0} replies/s",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
    );
    report("  message posted -> its reply read", latencies);
}

/// `conversations` conversations, each sending `per_conversation` messages one after the other,
/// the next only once the reply to the last arrived; the model takes 50 ms. Prints replies per
/// second and the latency from handing a message in to its reply. With `slow_post`, the server
/// answers every POST of the first conversation only after 2 s (`SLOW_POST 2`), and the others'
/// latency is printed apart.
async fn unmerged(conversations: usize, per_conversation: usize, slow_post: bool) {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::default();
    config.server.url = fake.url();
    config.server.token = fake.token().unwrap_or_default();
    config.gateway.approval_mode = ApprovalMode::AllowAll;
    let chat = LaneChannel::new();
    let shutdown = CancellationToken::new();
    let engine = Engine::builder(config, dir.path())
        .options(EngineOptions::default())
        .channel(Arc::new(chat.clone()))
        .start(shutdown.clone())
        .await
        .expect("engine starts");
    let ctx = chat.context().await;
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..conversations {
        let ctx = ctx.clone();
        let peer = format!("u{c}");
        let mut replies = chat.lane(&peer);
        handles.push(tokio::spawn(async move {
            let mut stamps = Vec::with_capacity(per_conversation);
            let mut answered = 0;
            for m in 0..per_conversation {
                let text = if slow_post && c == 0 {
                    format!("SLOW 0.05 SLOW_POST 2 un-{c}-{m}")
                } else {
                    format!("SLOW 0.05 un-{c}-{m}")
                };
                let message = InboundMessage {
                    channel: "lanes".into(),
                    peer: Peer::new(peer.clone()),
                    chat: ChatType::Direct,
                    text: text.clone(),
                    target: DeliveryTarget::chat(peer.clone()),
                    dedup_keys: vec![format!("lanes:{c}:{m}")],
                    received_at_ms: switchboard_engine::model::now_ms(),
                    attachments: Vec::new(),
                };
                let at = Instant::now();
                ctx.accept(message).await.expect("accept");
                let Some((reply, when)) = replies.recv().await else {
                    break;
                };
                if reply == format!("echo: {text}") {
                    answered += 1;
                }
                stamps.push((text, at, when));
            }
            (stamps, answered)
        }));
    }
    let mut stamps = Vec::new();
    let mut answered = 0;
    for handle in handles {
        let (s, a) = handle.await.expect("conversation");
        stamps.extend(s);
        answered += a;
    }
    let elapsed = started.elapsed();
    let total = conversations * per_conversation;
    println!(
        "unmerged: {conversations} conversations x {per_conversation} messages, model 50 ms{}: {total} replies in {:.2} s = {:.0} replies/s; runs: {}; wrong or lost: {}",
        if slow_post { ", the first one's POSTs answered after 2 s" } else { "" },
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        fake.runs_started(),
        total - answered,
    );
    if slow_post {
        let (slow, others): (Vec<_>, Vec<_>) = stamps
            .iter()
            .partition(|(text, _, _)| text.contains("SLOW_POST"));
        let latency = |stamps: Vec<&(String, Instant, Instant)>| {
            stamps
                .iter()
                .map(|(_, at, when)| when.saturating_duration_since(*at))
                .collect()
        };
        report(
            "  the other conversations: handed in -> reply sent",
            latency(others),
        );
        report("  the slow one: handed in -> reply sent", latency(slow));
    }
    let latencies = stamps
        .iter()
        .map(|(_, at, when)| when.saturating_duration_since(*at))
        .collect();
    report("  message handed in -> its reply sent", latencies);
    // Where the time goes: before the server has the message, at the server (the model's 50 ms
    // and the fake's own work), and after the server said it was done.
    let timings: HashMap<String, (Instant, Option<Instant>)> = fake
        .run_timings()
        .into_iter()
        .map(|t| (t.text, (t.posted_at, t.completed_at)))
        .collect();
    let (mut before, mut at_server, mut after) = (Vec::new(), Vec::new(), Vec::new());
    for (text, at, when) in &stamps {
        if let Some((posted, Some(done))) = timings.get(text) {
            before.push(posted.saturating_duration_since(*at));
            at_server.push(done.saturating_duration_since(*posted));
            after.push(when.saturating_duration_since(*done));
        }
    }
    report("    handed in -> POST received by the server", before);
    report("    POST received -> run_completed sent", at_server);
    report("    run_completed sent -> reply sent", after);
    assert_eq!(answered, total, "every message answered with its own reply");
    shutdown.cancel();
    engine.stopped().await;
}
