//! The agent server misbehaves as the contract says it can; nothing is lost or repeated.

use switchboard_engine::EngineEvent;
use switchboard_testkit::stakpak::{FakeOptions, FakeStakpak};

use crate::harness::{config_for, Gateway};

#[tokio::test]
async fn a_server_restart_between_messages_loses_nothing() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;
    for i in 0..3 {
        gw.dm("ann", &format!("a{i}"), &format!("before {i}")).await;
        gw.replies("ann", i + 1).await;
    }

    // Event ids restart at 1: the stored cursor is now ahead of everything the server has.
    fake.restart().await;
    gw.dm("ann", "b", "after the restart").await;

    assert_eq!(gw.replies("ann", 4).await[3], "echo: after the restart");
    assert_eq!(
        fake.sessions().len(),
        1,
        "the session survived the restart and was reused"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_server_restart_mid_run_is_settled_not_waited_on_forever() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;
    gw.dm("ann", "1", "HOLD never").await;
    fake.wait_for("the run to start", |f| f.runs_started() == 1)
        .await;

    fake.restart().await;

    let reply = gw.replies("ann", 1).await.remove(0);
    assert!(
        reply.starts_with("⚠️"),
        "the chat is told the run ended without a reply: {reply}"
    );
    gw.dm("ann", "2", "again").await;
    assert_eq!(gw.replies("ann", 2).await[1], "echo: again");
    gw.stop().await;
}

#[tokio::test]
async fn a_cut_stream_resumes_from_the_cursor_without_repeating_text() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;
    gw.dm("ann", "0", "warm up").await;
    gw.replies("ann", 1).await;

    gw.dm("ann", "1", "DROP_STREAM LONG_REPLY 3").await;

    let reply = gw.replies("ann", 2).await.remove(1);
    for n in 1..=3 {
        let marker = format!("Paragraph {n} of 3");
        assert_eq!(
            reply.matches(&marker).count(),
            1,
            "{marker} exactly once: {reply}"
        );
    }
    assert!(
        reply.trim_end().ends_with("item 3.b"),
        "the reply is complete: {reply}"
    );
    let resumed = fake
        .requests()
        .iter()
        .filter(|r| {
            r.path.ends_with("/events") && r.headers.iter().any(|(k, _)| k == "last-event-id")
        })
        .count();
    assert!(resumed >= 1, "the stream was reopened with Last-Event-ID");
    gw.stop().await;
}

#[tokio::test]
async fn a_run_that_ends_silently_is_settled_by_the_watchdog() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::start(config_for(&fake), dir.path()).await;

    gw.dm("ann", "1", "SILENT_END please").await;

    assert_eq!(
        gw.replies("ann", 1).await,
        vec!["echo: SILENT_END please"],
        "the stored reply is delivered"
    );
    let outcome = gw
        .event("the run to finish", |e| match e {
            EngineEvent::RunFinished { outcome, .. } => Some(*outcome),
            _ => None,
        })
        .await;
    assert_eq!(outcome, switchboard_engine::RunOutcome::Settled);
    gw.stop().await;
}

#[tokio::test]
async fn a_session_deleted_on_the_server_is_replaced() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;
    gw.dm("ann", "1", "one").await;
    gw.replies("ann", 1).await;
    let old = fake.sessions()[0].0.clone();

    fake.delete_session(&old);
    gw.dm("ann", "2", "two").await;

    assert_eq!(gw.replies("ann", 2).await[1], "echo: two");
    let sessions = fake.sessions();
    assert_eq!(sessions.len(), 1);
    assert_ne!(sessions[0].0, old, "a new session replaced the deleted one");
    let conversation = &gw.engine.conversations().expect("list")[0];
    assert_eq!(
        conversation.session_id.as_deref(),
        Some(sessions[0].0.as_str()),
        "the mapping points at the new session"
    );
    gw.stop().await;
}

#[tokio::test]
async fn malformed_frames_and_a_one_megabyte_message_break_nothing() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;

    gw.dm("ann", "1", "MALFORMED_SSE hi").await;
    assert_eq!(gw.replies("ann", 1).await, vec!["echo: MALFORMED_SSE hi"]);

    let big = "x".repeat(1024 * 1024);
    gw.dm("bob", "2", &big).await;
    let sent = gw
        .chat
        .wait_until("the 1 MB echo", crate::harness::WAIT, |sent| {
            sent.iter()
                .filter(|s| s.target.chat_id == "bob")
                .map(|s| s.text.len())
                .sum::<usize>()
                >= big.len()
        })
        .await;
    let visible: usize = sent
        .iter()
        .filter(|s| s.target.chat_id == "bob")
        .map(|s| s.text.chars().filter(|c| !c.is_whitespace()).count())
        .sum();
    assert_eq!(
        visible,
        "echo:".len() + big.len(),
        "the whole echo arrived, nothing repeated"
    );

    gw.dm("ann", "3", "still alive?").await;
    assert_eq!(gw.replies("ann", 2).await[1], "echo: still alive?");
    gw.stop().await;
}

#[tokio::test]
async fn framing_without_spaces_and_with_crlf_is_understood() {
    let fake = FakeStakpak::start_with(FakeOptions {
        no_space_framing: true,
        crlf: true,
        split_writes: true,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;
    gw.dm("ann", "1", "héllo 👋").await;
    assert_eq!(gw.replies("ann", 1).await, vec!["echo: héllo 👋"]);
    gw.stop().await;
}

#[tokio::test]
async fn a_changed_server_token_is_reported_and_new_settings_resume_the_work() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_for(&fake);
    let mut gw = Gateway::start(config.clone(), dir.path()).await;
    gw.dm("ann", "1", "one").await;
    gw.replies("ann", 1).await;

    fake.set_token(Some("a-new-token".into()));
    gw.dm("ann", "2", "two").await;
    let state = gw
        .event("the server to be reported unauthorized", |e| match e {
            EngineEvent::ServerState { state, detail }
                if *state == switchboard_engine::ServerHealth::Unauthorized =>
            {
                Some(detail.clone().unwrap_or_default())
            }
            _ => None,
        })
        .await;
    assert!(
        state.contains("token"),
        "the message says what to do: {state}"
    );
    crate::harness::settle().await;
    let refused = fake.requests().iter().filter(|r| r.status == 401).count();
    assert!(
        refused <= 3,
        "no retry storm against a refused token ({refused} refused requests)"
    );

    config.server.token = "a-new-token".into();
    gw.engine.reload(config).expect("reload");
    assert_eq!(
        gw.replies("ann", 2).await[1],
        "echo: two",
        "the held message goes through with the new token"
    );
    gw.stop().await;
}
