//! The desktop chat: the person at the machine talks to the agent through the same engine as any
//! chat — journaled, answered once, the reply shown while it is written, approvals as messages
//! of their own, and the whole of it kept across a crash.

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_engine::approvals::{Actor, Answer, Surface};
use switchboard_engine::channels::desktop::{DesktopKind, DesktopLine, DesktopMessage};
use switchboard_engine::channels::memory::MemoryChannel;
use switchboard_engine::channels::Accepted;
use switchboard_engine::chunk::{LengthUnit, TextLimit};
use switchboard_engine::config::ApprovalMode;
use switchboard_engine::model::Peer;
use switchboard_engine::{Engine, EngineEvent, EngineHandle};
use switchboard_testkit::stakpak::FakeStakpak;
use tokio_util::sync::CancellationToken;

use crate::harness::{config_for, fast_options, runtime, WAIT};

fn person() -> Peer {
    Peer {
        id: "local".into(),
        name: Some("Ada".into()),
    }
}

fn memory_chat() -> MemoryChannel {
    MemoryChannel::new(
        "chat",
        TextLimit {
            max: 4096,
            unit: LengthUnit::Chars,
        },
    )
}

struct Desk {
    engine: EngineHandle,
    chat: MemoryChannel,
    shutdown: CancellationToken,
    events: tokio::sync::broadcast::Receiver<EngineEvent>,
}

impl Desk {
    async fn start(config: switchboard_engine::config::Config, dir: &std::path::Path) -> Desk {
        let shutdown = CancellationToken::new();
        let chat = memory_chat();
        let engine = Engine::builder(config, dir)
            .options(fast_options())
            .desktop(person())
            .channel(Arc::new(chat.clone()))
            .start(shutdown.clone())
            .await
            .expect("the engine starts");
        switchboard_engine::api::start(&engine, shutdown.clone()).await;
        let events = engine.subscribe();
        Desk {
            engine,
            chat,
            shutdown,
            events,
        }
    }

    /// Waits for a desktop message that `pick` accepts.
    async fn said(&mut self, what: &str, pick: impl Fn(&DesktopMessage) -> bool) -> DesktopMessage {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Ok(EngineEvent::DesktopMessage { message })) if pick(&message) => {
                    return message
                }
                Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(e)) => panic!("events closed while waiting for {what}: {e}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    /// Waits for two desktop messages, `first` and `second`, which may come in either order.
    async fn said_both(
        &mut self,
        what: &str,
        first: impl Fn(&DesktopMessage) -> bool,
        second: impl Fn(&DesktopMessage) -> bool,
    ) -> (DesktopMessage, DesktopMessage) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let (mut a, mut b): (Option<DesktopMessage>, Option<DesktopMessage>) = (None, None);
        loop {
            if let (Some(a), Some(b)) = (&a, &b) {
                return (a.clone(), b.clone());
            }
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Ok(EngineEvent::DesktopMessage { message })) => {
                    if a.is_none() && first(&message) {
                        a = Some(message);
                    } else if b.is_none() && second(&message) {
                        b = Some(message);
                    }
                }
                Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(e)) => panic!("events closed while waiting for {what}: {e}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    /// Waits until the chat's transcript satisfies `check`, and returns it.
    async fn transcript_until(
        &self,
        chat: &str,
        what: &str,
        check: impl Fn(&[DesktopLine]) -> bool,
    ) -> Vec<DesktopLine> {
        wait_transcript(&self.engine, chat, what, check).await
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.engine.stopped().await;
    }
}

async fn wait_transcript(
    engine: &EngineHandle,
    chat: &str,
    what: &str,
    check: impl Fn(&[DesktopLine]) -> bool,
) -> Vec<DesktopLine> {
    let deadline = Instant::now() + WAIT;
    loop {
        let lines = engine.desktop_transcript(chat, 100).expect("transcript");
        if check(&lines) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; the transcript: {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The agent side's finished replies in a transcript.
fn replies(lines: &[DesktopLine]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| match l {
            DesktopLine::Agent { message }
                if message.kind == DesktopKind::Reply && !message.streaming =>
            {
                Some(message.text.clone())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desktop_message_is_answered_in_its_own_chat_with_the_reply_shown_while_written() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut desk = Desk::start(config_for(&fake), dir.path()).await;

    let accepted = desk
        .engine
        .desktop_send("first", "DRIP 6 1.2 tell me about the disks", "m-1")
        .await
        .expect("taken");
    assert!(
        matches!(accepted, Accepted::New(_)),
        "a new message is journaled"
    );
    let growing = desk
        .said("the reply shown while it is written", |m| {
            m.streaming && !m.text.is_empty()
        })
        .await;
    assert!(
        "echo: DRIP 6 1.2 tell me about the disks".starts_with(&growing.text),
        "the growing message shows the start of the reply: {:?}",
        growing.text
    );
    let done = desk
        .said("the finished reply", |m| m.id == growing.id && !m.streaming)
        .await;
    assert_eq!(
        done.text, "echo: DRIP 6 1.2 tell me about the disks",
        "the same message is completed with the whole reply"
    );

    // A second chat is a conversation of its own, with a session of its own.
    desk.engine
        .desktop_send("second", "and the network?", "m-2")
        .await
        .expect("taken");
    let lines = desk
        .transcript_until("second", "the second chat's reply", |l| {
            !replies(l).is_empty()
        })
        .await;
    assert_eq!(replies(&lines), ["echo: and the network?"]);
    let first = desk
        .transcript_until("first", "the first chat's message replied", |l| {
            l.iter().any(|l| {
                matches!(l, DesktopLine::Person { state, .. } if *state == switchboard_engine::model::JournalState::Replied)
            })
        })
        .await;
    assert_eq!(
        first.len(),
        2,
        "the first chat holds its question and one reply: {first:#?}"
    );
    let titles: Vec<String> = fake.sessions().into_iter().map(|(_, t)| t).collect();
    assert_eq!(
        titles,
        [
            "Desktop: DRIP 6 1.2 tell me about the disks",
            "Desktop: and the network?"
        ],
        "each desktop chat has its own session, named after what it is about"
    );
    let keys: Vec<String> = desk
        .engine
        .conversations()
        .expect("conversations")
        .into_iter()
        .map(|c| c.routing_key)
        .collect();
    assert!(
        keys.contains(&"desktop:first".to_owned()) && keys.contains(&"desktop:second".to_owned())
    );
    assert!(
        desk.engine.channels().iter().all(|c| c.name != "desktop"),
        "the desktop chat is not among the channels a person switches"
    );
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_sent_twice_is_answered_once() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let desk = Desk::start(config_for(&fake), dir.path()).await;
    let first = desk
        .engine
        .desktop_send("c", "hello", "same-id")
        .await
        .expect("taken");
    let again = desk
        .engine
        .desktop_send("c", "hello", "same-id")
        .await
        .expect("taken");
    assert!(matches!(first, Accepted::New(_)));
    assert_eq!(again, Accepted::Duplicate, "a retried call is one message");
    let lines = desk
        .transcript_until("c", "the reply", |l| !replies(l).is_empty())
        .await;
    crate::harness::settle().await;
    assert_eq!(fake.runs_started(), 1, "one run for one message");
    assert_eq!(replies(&lines), ["echo: hello"]);
    for bad in [("c", "   "), ("a:b", "hi")] {
        assert!(
            desk.engine.desktop_send(bad.0, bad.1, "x").await.is_err(),
            "{bad:?} is refused"
        );
    }
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_shows_in_the_desktop_chat_and_its_outcome_when_decided_from_the_window() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_for(&fake);
    config.gateway.approval_mode = ApprovalMode::Ask;
    let mut desk = Desk::start(config, dir.path()).await;

    desk.engine
        .desktop_send(
            "ops",
            "SAY_FIRST\nUSE_TOOL stakpak__run_command {\"command\":\"df -h\"}",
            "m-1",
        )
        .await
        .expect("taken");
    // The prompt and the growing reply that says it waits, in whichever order they come.
    let (prompt, waiting) = desk
        .said_both(
            "the approval prompt and the growing reply that says it waits",
            |m| m.kind == DesktopKind::Approval,
            |m| {
                m.kind == DesktopKind::Reply && m.tasks.iter().any(|t| t.title.contains("approval"))
            },
        )
        .await;
    assert!(
        prompt.text.contains("df -h"),
        "the prompt says what will run: {prompt:?}"
    );
    let approval = prompt
        .approval_id
        .clone()
        .expect("the prompt names its approval");
    assert!(
        waiting.streaming && waiting.text.contains("I'll look into it."),
        "what the agent said before its call shows, with the wait as a task: {waiting:?}"
    );

    desk.engine
        .decide(
            &approval,
            &Answer::AllowOnce,
            &Actor::local("Ada"),
            Surface::Window,
        )
        .expect("decided");
    let closed = desk
        .said("the prompt's outcome", |m| {
            m.id == prompt.id && m.outcome.is_some()
        })
        .await;
    assert!(
        closed.outcome.as_deref().is_some_and(|o| o.contains("Ada")),
        "the prompt says who decided: {closed:?}"
    );
    let lines = desk
        .transcript_until("ops", "the final reply", |l| {
            replies(l).iter().any(|r| r.starts_with("done:"))
        })
        .await;
    assert_eq!(
        lines
            .iter()
            .filter(|l| matches!(l, DesktopLine::Agent { message } if message.kind == DesktopKind::Approval))
            .count(),
        1,
        "one prompt: {lines:#?}"
    );
    let order: Vec<String> = lines
        .iter()
        .map(|l| match l {
            DesktopLine::Person { .. } => "person".to_owned(),
            DesktopLine::Agent { message } if message.kind == DesktopKind::Approval => {
                "prompt".to_owned()
            }
            DesktopLine::Agent { message } => message.text.clone(),
        })
        .collect();
    assert_eq!(
        order,
        [
            "person",
            "I'll look into it.",
            "prompt",
            "done: (fake) ran: df -h"
        ],
        "the message above the prompt ends where it was; the rest of the reply comes below it"
    );
    assert_eq!(fake.decisions().len(), 1, "one decision reached the server");
    desk.stop().await;
}

/// The person at the desktop answers a watch notification that went to a chat: their words go
/// into that chat's conversation with the watch context, and the agent answers in the chat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_from_the_desktop_continues_a_chats_conversation_with_its_watch_context() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let desk = Desk::start(config_for(&fake), dir.path()).await;
    desk.chat
        .inject(desk.chat.dm("ann", "1", "hi"))
        .await
        .expect("accepted");
    desk.chat
        .wait_until("the first reply", WAIT, |s| s.len() == 1)
        .await;
    let api = desk.engine.api_addr().expect("api");
    let sent = switchboard_engine::http::client()
        .post(format!("http://{api}/v1/gateway/send"))
        .bearer_auth(crate::harness::API_TOKEN)
        .json(&serde_json::json!({
            "channel": "chat", "target": "ann", "text": "Disk almost full on web-1",
            "context": {"schedule": "disk", "status": "failed", "summary": "disk 95% full", "check_output": "/dev/sda1 95%"}
        }))
        .send()
        .await
        .expect("send");
    assert_eq!(sent.status(), 200);

    let accepted = desk
        .engine
        .say("chat:dm:ann", "what is filling it?", "n-1")
        .await
        .expect("taken");
    assert!(matches!(accepted, Accepted::New(_)));
    let sent = desk
        .chat
        .wait_until("the answer in the chat", WAIT, |s| s.len() == 3)
        .await;
    assert!(
        sent[2].text.contains("what is filling it?"),
        "the answer goes to the chat: {sent:?}"
    );
    let posted = fake.posted_messages();
    let last = &posted.last().expect("posted").text;
    assert!(
        last.contains("disk 95% full") && last.contains("what is filling it?"),
        "the agent got the watch context with the words: {last}"
    );
    let conversations = desk.engine.conversations().expect("conversations");
    let with_ann = conversations
        .iter()
        .find(|c| c.routing_key == "chat:dm:ann")
        .expect("the chat's conversation");
    assert_eq!(
        with_ann.peer.id, "ann",
        "the conversation is still with the person in the chat, not the one at the desktop"
    );
    assert!(
        desk.engine
            .say("chat:dm:nobody", "hi", "n-2")
            .await
            .is_err(),
        "no conversation, nothing to say into"
    );
    desk.stop().await;
}

/// The app is killed while the agent answers a desktop message; after the restart the reply
/// completes in the same chat, once.
#[test]
fn a_desktop_chat_killed_mid_run_gets_its_reply_once_after_restart() {
    let server_rt = runtime();
    let fake = server_rt.block_on(FakeStakpak::start());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_for(&fake);

    let crashed = runtime();
    crashed.block_on(async {
        let engine = Engine::builder(config.clone(), dir.path())
            .options(fast_options())
            .desktop(person())
            .start(CancellationToken::new())
            .await
            .expect("starts");
        engine
            .desktop_send("kept", "HOLD crash what runs?", "m-1")
            .await
            .expect("taken");
    });
    let deadline = Instant::now() + WAIT;
    while fake.posted_messages().is_empty() {
        assert!(Instant::now() < deadline, "the run was never posted");
        std::thread::sleep(Duration::from_millis(20));
    }
    crashed.shutdown_background();
    fake.release("crash");

    let restarted = runtime();
    restarted.block_on(async {
        let shutdown = CancellationToken::new();
        let engine = Engine::builder(config, dir.path())
            .options(fast_options())
            .desktop(person())
            .start(shutdown.clone())
            .await
            .expect("restarts");
        let lines = wait_transcript(&engine, "kept", "the reply after the restart", |l| {
            !replies(l).is_empty()
        })
        .await;
        crate::harness::settle().await;
        let lines_after = engine.desktop_transcript("kept", 100).expect("transcript");
        assert_eq!(lines, lines_after, "nothing more arrives");
        assert_eq!(replies(&lines), ["echo: HOLD crash what runs?"]);
        assert!(
            matches!(&lines[0], DesktopLine::Person { text, .. } if text == "HOLD crash what runs?"),
            "the person's message is still there: {lines:#?}"
        );
        assert_eq!(fake.runs_started(), 1, "the run was not posted again");
        shutdown.cancel();
        engine.stopped().await;
    });
}
