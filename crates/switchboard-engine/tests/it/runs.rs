//! Runs: a message becomes a run on the agent server and its reply reaches the chat.

use switchboard_engine::channels::memory::MemoryChannel;
use switchboard_engine::channels::Notice;
use switchboard_engine::chunk::{LengthUnit, TextLimit};
use switchboard_engine::EngineEvent;
use switchboard_testkit::stakpak::FakeStakpak;

use crate::harness::{config_for, settle, Gateway};

#[tokio::test]
async fn a_dm_creates_a_titled_session_and_the_reply_reaches_the_chat() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;

    gw.dm("ann", "1", "hello there").await;

    assert_eq!(
        gw.replies("ann", 1).await,
        vec!["echo: hello there"],
        "the agent's reply reaches the same chat"
    );
    let sessions = fake.sessions();
    assert_eq!(sessions.len(), 1, "one session for the conversation");
    assert_eq!(
        sessions[0].1, "chat / ann",
        "the title follows the default template"
    );
    let posted = fake.posted_messages();
    assert!(
        posted.iter().all(|p| p.idempotency_key.is_some()),
        "every POST carries an Idempotency-Key"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_new_conversations_at_once_each_get_a_session_and_ask_the_server_its_start_once() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;

    let peers: Vec<String> = (0..20).map(|i| format!("peer{i}")).collect();
    for (i, peer) in peers.iter().enumerate() {
        gw.dm(peer, &i.to_string(), &format!("hello from {peer}"))
            .await;
    }
    for peer in &peers {
        assert_eq!(
            gw.replies(peer, 1).await,
            vec![format!("echo: hello from {peer}")]
        );
    }
    assert_eq!(fake.sessions().len(), 20, "one session each");
    // The server's start time tells its restarts apart; the engine learns it from its first
    // check (or one ask), not from one ask per new conversation.
    let asked = fake
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/health")
        .count();
    assert!(asked <= 2, "{asked} health requests for 20 first messages");
    gw.stop().await;
}

#[tokio::test]
async fn a_second_message_reuses_the_session() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;

    gw.dm("ann", "1", "one").await;
    gw.replies("ann", 1).await;
    gw.dm("ann", "2", "two").await;

    assert_eq!(gw.replies("ann", 2).await, vec!["echo: one", "echo: two"]);
    assert_eq!(
        fake.sessions().len(),
        1,
        "the second message goes to the same session"
    );
    let sessions: Vec<String> = fake
        .posted_messages()
        .iter()
        .map(|p| p.session_id.clone())
        .collect();
    assert_eq!(sessions[0], sessions[1]);
    gw.stop().await;
}

/// How many times the engine subscribed to a session's events.
fn subscriptions(fake: &FakeStakpak) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/events"))
        .count()
}

#[tokio::test]
async fn the_next_message_of_a_conversation_is_followed_on_the_stream_kept_open() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;

    for (i, text) in ["one", "two", "three"].into_iter().enumerate() {
        gw.dm("ann", &(i + 1).to_string(), text).await;
        gw.replies("ann", i + 1).await;
    }

    assert_eq!(
        gw.replies("ann", 3).await,
        vec!["echo: one", "echo: two", "echo: three"],
        "each message gets its own reply, once"
    );
    assert_eq!(
        subscriptions(&fake),
        1,
        "the runs after the first one need no new subscription"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_foreign_run_a_cut_stream_or_a_restart_between_messages_loses_and_repeats_nothing() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;
    gw.dm("ann", "1", "one").await;
    gw.replies("ann", 1).await;
    let session = fake.sessions()[0].0.clone();

    // Someone uses the session elsewhere between two messages: its events come down the kept
    // stream and are not taken for the next run's.
    fake.start_foreign_run(&session, 0.2).await;
    fake.wait_for("the other run to end", |f| {
        f.run_state(&session).as_deref() == Some("idle")
    })
    .await;
    gw.dm("ann", "2", "two").await;
    assert_eq!(gw.replies("ann", 2).await[1], "echo: two");

    // The connection is cut between two messages: the next run subscribes again.
    fake.drop_streams();
    gw.dm("ann", "3", "three").await;
    assert_eq!(gw.replies("ann", 3).await[2], "echo: three");

    // The server restarts between two messages (event ids start over at 1).
    fake.restart().await;
    gw.dm("ann", "4", "four").await;
    assert_eq!(
        gw.replies("ann", 4).await,
        vec!["echo: one", "echo: two", "echo: three", "echo: four"],
        "every message answered once, in order"
    );
    assert!(
        subscriptions(&fake) >= 3,
        "a cut stream is replaced by a new subscription"
    );
    gw.stop().await;
}

#[tokio::test]
async fn messages_during_a_run_are_queued_and_merged_into_one_follow_up() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::start(config_for(&fake), dir.path()).await;

    gw.dm("ann", "1", "HOLD first").await;
    gw.event("the first run to start", |e| {
        matches!(e, EngineEvent::RunStarted { .. }).then_some(())
    })
    .await;
    gw.dm("ann", "2", "second").await;
    gw.dm("ann", "3", "third").await;
    // Told once they have waited a moment (a run about to end takes a message without a note).
    let queued = |gw: &Gateway| {
        gw.chat
            .notices()
            .iter()
            .filter(|(_, n)| *n == Notice::Queued)
            .count()
    };
    tokio::time::timeout(crate::harness::WAIT, async {
        while queued(&gw) < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("two queued notices");
    fake.release("first");

    let replies = gw.replies("ann", 2).await;
    assert_eq!(
        replies,
        vec!["echo: HOLD first", "echo: second\n\nthird"],
        "the queue drains as one message"
    );
    let texts: Vec<String> = fake
        .posted_messages()
        .iter()
        .map(|p| p.text.clone())
        .collect();
    assert_eq!(
        texts,
        vec!["HOLD first", "second\n\nthird"],
        "one follow-up run for the two queued messages"
    );
    let queued_notices = gw
        .chat
        .notices()
        .iter()
        .filter(|(_, n)| *n == Notice::Queued)
        .count();
    assert_eq!(
        queued_notices, 2,
        "the chat is told each queued message waits"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_run_started_elsewhere_queues_the_message_until_the_session_is_idle() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;
    gw.dm("ann", "1", "hi").await;
    gw.replies("ann", 1).await;
    let session = fake.sessions()[0].0.clone();

    fake.start_foreign_run(&session, 1.0).await;
    gw.dm("ann", "2", "while busy").await;

    assert_eq!(
        gw.replies("ann", 2).await[1],
        "echo: while busy",
        "the queued message is sent once the session is idle"
    );
    let conflicts = fake
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/messages") && r.method == "POST" && r.status == 409)
        .count();
    assert!(
        conflicts >= 1,
        "the server answered 409 while the other run went on"
    );
    assert!(
        gw.chat.notices().iter().any(|(_, n)| *n == Notice::Queued),
        "the chat was told the message is queued"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_run_error_reaches_the_chat_as_a_warning() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;

    gw.dm("ann", "1", "FAIL_500 please").await;
    let reply = gw.replies("ann", 1).await.remove(0);
    assert!(
        reply.starts_with("⚠️ "),
        "a failed run is announced with a warning, got {reply:?}"
    );

    gw.dm("ann", "2", "and now?").await;
    assert_eq!(
        gw.replies("ann", 2).await[1],
        "echo: and now?",
        "the next message works after a failed run"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_empty_reply_falls_back_to_the_latest_assistant_message() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;
    // Some history first, so "latest" must come from the end of the list (offset counts from the
    // oldest message).
    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        gw.dm("ann", &i.to_string(), text).await;
        gw.replies("ann", i + 1).await;
    }

    gw.dm("ann", "9", "EMPTY_REPLY now").await;

    assert_eq!(gw.replies("ann", 4).await[3], "fallback: EMPTY_REPLY now");
    gw.stop().await;
}

#[tokio::test]
async fn paused_stores_messages_and_resume_answers_them_in_order() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;

    gw.engine.set_paused(true).expect("pause");
    gw.dm("ann", "1", "first").await;
    gw.dm("ann", "2", "second").await;
    settle().await;
    assert!(
        fake.posted_messages().is_empty(),
        "nothing runs while paused"
    );
    assert_eq!(
        gw.engine.conversations().expect("list")[0].queued,
        2,
        "both messages are stored"
    );

    gw.engine.set_paused(false).expect("resume");
    assert_eq!(
        gw.replies("ann", 1).await,
        vec!["echo: first\n\nsecond"],
        "resume processes them in order"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_long_multibyte_reply_is_split_within_the_limit_and_arrives_intact() {
    let fake = FakeStakpak::start_with(switchboard_testkit::stakpak::FakeOptions {
        split_writes: true,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let chat = MemoryChannel::new(
        "chat",
        TextLimit {
            max: 500,
            unit: LengthUnit::Utf16,
        },
    );
    let gw = Gateway::start_with(config_for(&fake), dir.path(), chat).await;

    let text: String = (0..300).map(|i| format!("héllo 👋 wörld {i}. ")).collect();
    gw.dm("ann", "1", &text).await;

    let want = format!("echo: {text}");
    let sent = gw
        .chat
        .wait_until("the whole reply", crate::harness::WAIT, |sent| {
            let got: String = sent
                .iter()
                .flat_map(|s| s.text.chars())
                .filter(|c| !c.is_whitespace())
                .collect();
            got.len()
                >= want
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect::<String>()
                    .len()
        })
        .await;
    assert!(sent.len() > 1, "the reply was split");
    for chunk in &sent {
        assert!(
            chunk.text.encode_utf16().count() <= 500,
            "every chunk fits the limit"
        );
        assert!(
            !chunk.text.contains('\u{FFFD}'),
            "no character was broken: {:?}",
            chunk.text
        );
    }
    let got: String = sent
        .iter()
        .flat_map(|s| s.text.chars())
        .filter(|c| !c.is_whitespace())
        .collect();
    let expected: String = want.chars().filter(|c| !c.is_whitespace()).collect();
    assert_eq!(got, expected, "nothing was lost, repeated or reordered");
    gw.stop().await;
}

#[tokio::test]
async fn a_held_up_session_does_not_delay_another() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;

    gw.dm("ann", "1", "HOLD slow").await;
    gw.dm("bob", "2", "quick").await;

    // Bob's reply must arrive while Ann's run is still held by the server.
    assert_eq!(gw.replies("bob", 1).await, vec!["echo: quick"]);
    assert!(
        gw.chat.sent_to("ann").is_empty(),
        "ann's run is still held when bob's reply arrived"
    );
    fake.release("slow");
    assert_eq!(gw.replies("ann", 1).await, vec!["echo: HOLD slow"]);
    gw.stop().await;
}

#[tokio::test]
async fn a_conversations_history_has_the_server_messages_and_the_journal() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::start(config_for(&fake), dir.path()).await;
    gw.dm("ann", "1", "first").await;
    gw.replies("ann", 1).await;
    gw.dm("ann", "2", "second").await;
    // Delivered means in the chat and recorded (the event comes after the commit).
    gw.event("the second reply delivered", |e| match e {
        EngineEvent::ReplyDelivered { text, .. } if text == "echo: second" => Some(()),
        _ => None,
    })
    .await;

    let history = gw.engine.history("chat:dm:ann").await.expect("history");
    let server = history.server.expect("the server's messages");
    let texts: Vec<(String, String)> = server.iter().map(|m| (m.role.clone(), m.text())).collect();
    assert!(
        texts.contains(&("assistant".into(), "echo: second".into())),
        "{texts:?}"
    );
    let journal: Vec<(String, &str)> = history
        .journal
        .iter()
        .map(|j| (j.text.clone(), j.state.as_str()))
        .collect();
    assert_eq!(
        journal,
        vec![
            ("first".to_string(), "replied"),
            ("second".to_string(), "replied")
        ]
    );
    gw.stop().await;
}
