//! Runs and approvals when the agent server misbehaves: failed calls, lost events and answers,
//! runs that end or move on while a call waits for a person, reused tool-call ids. In each the run
//! finishes or its prompt closes with the true outcome, nothing runs without a person, and the
//! chat gets one reply.

use switchboard_engine::approvals::{Actor, Answer, ApprovalState, ChatChoice, Surface};
use switchboard_engine::channels::memory::Prompt;
use switchboard_engine::config::ApprovalMode;
use switchboard_engine::store::Resolution;
use switchboard_engine::EngineEvent;
use switchboard_testkit::stakpak::{FakeOptions, FakeStakpak, Route, RunEnd};

use crate::harness::{config_for, settle, Gateway, WAIT};

const RUN_LS: &str = r#"USE_TOOL run_command {"command": "ls"}"#;

fn actions(fake: &FakeStakpak) -> Vec<String> {
    fake.decisions().iter().map(|d| d.action.clone()).collect()
}

async fn ask_gateway(fake: &FakeStakpak, dir: &tempfile::TempDir) -> Gateway {
    let mut config = config_for(fake);
    config.gateway.approval_mode = ApprovalMode::Ask;
    Gateway::start(config, dir.path()).await
}

/// Waits for the next approval request and returns its id.
async fn approval_requested(gw: &mut Gateway) -> String {
    gw.event("an approval request", |e| match e {
        EngineEvent::ApprovalRequested { approval_id, .. } => Some(approval_id.clone()),
        _ => None,
    })
    .await
}

/// Waits until every chat prompt is closed, and returns them.
async fn prompts_closed(gw: &Gateway, n: usize) -> Vec<Prompt> {
    gw.chat
        .wait_prompts("the chat prompts closed", WAIT, |p| {
            p.len() >= n && p.iter().all(|p| p.closed.is_some())
        })
        .await
}

fn approve(gw: &Gateway, id: &str) {
    let outcome = gw
        .engine
        .decide(id, &Answer::AllowOnce, &Actor::local("me"), Surface::Window)
        .expect("decide");
    assert!(matches!(outcome, Resolution::Decided(_)), "{outcome:?}");
}

fn session_of(fake: &FakeStakpak) -> String {
    fake.sessions()
        .first()
        .map(|(id, _)| id.clone())
        .expect("a session on the server")
}

#[tokio::test]
async fn a_failed_read_of_the_waiting_calls_is_tried_again() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = ask_gateway(&fake, &dir).await;
    fake.fail_next(Route::Pending, 1);

    gw.dm("ann", "1", RUN_LS).await;
    let id = approval_requested(&mut gw).await;
    approve(&gw, &id);

    let replies = gw.replies("ann", 1).await;
    assert!(replies[0].starts_with("done:"), "{replies:?}");
    assert_eq!(actions(&fake), ["accept"]);
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.path.ends_with("/tools/pending") && r.status == 503),
        "the failure really happened"
    );
    settle().await;
    assert_eq!(gw.chat.sent_to("ann").len(), 1, "one reply");
    gw.stop().await;
}

#[tokio::test]
async fn a_failed_decision_is_sent_again_and_the_approval_waits_until_the_server_takes_it() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = ask_gateway(&fake, &dir).await;

    gw.dm("ann", "1", RUN_LS).await;
    let id = approval_requested(&mut gw).await;
    fake.fail_next(Route::Decisions, 1);
    approve(&gw, &id);

    let replies = gw.replies("ann", 1).await;
    assert!(replies[0].starts_with("done:"), "the call ran: {replies:?}");
    assert_eq!(actions(&fake), ["accept"], "the decision arrived once");
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.path.ends_with("/tools/decisions") && r.status == 503),
        "the first attempt failed"
    );
    let record = gw
        .engine
        .approval(&id)
        .expect("read")
        .expect("the approval");
    assert_eq!(record.state, ApprovalState::Accepted);
    assert!(record.confirmed_ms.is_some(), "confirmed by the server");
    assert!(fake.misdecisions().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn a_call_whose_waiting_event_was_lost_is_found_and_asked_about() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = ask_gateway(&fake, &dir).await;

    gw.dm("ann", "1", &format!("DROP_WAITING\n{RUN_LS}")).await;
    let id = approval_requested(&mut gw).await;
    assert!(actions(&fake).is_empty(), "nothing ran without a person");
    approve(&gw, &id);

    let replies = gw.replies("ann", 1).await;
    assert!(replies[0].starts_with("done:"), "{replies:?}");
    assert_eq!(actions(&fake), ["accept"]);
    gw.stop().await;
}

#[tokio::test]
async fn a_call_another_client_approved_closes_its_prompt_and_takes_no_click() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = ask_gateway(&fake, &dir).await;

    gw.dm("ann", "1", RUN_LS).await;
    let id = approval_requested(&mut gw).await;
    gw.chat
        .wait_prompts("the chat prompt", WAIT, |p| !p.is_empty())
        .await;
    assert_eq!(fake.decide_elsewhere(&session_of(&fake), true), 1);

    let replies = gw.replies("ann", 1).await;
    assert!(replies[0].starts_with("done:"), "the call ran: {replies:?}");
    let prompts = prompts_closed(&gw, 1).await;
    let closed = prompts[0].closed.clone().unwrap_or_default();
    assert!(closed.contains("another client"), "{closed}");
    assert!(
        gw.engine.pending_approvals().expect("pending").is_empty(),
        "nothing left waiting"
    );
    let click = gw.chat.click(&id, ChatChoice::Approve, "ann").await;
    assert!(
        !matches!(
            click,
            switchboard_engine::approvals::ChoiceOutcome::Decided(_)
        ),
        "a late click decides nothing: {click:?}"
    );
    assert!(actions(&fake).is_empty(), "we sent no decision");
    let audit = gw.engine.decisions(10).expect("audit");
    assert!(
        audit.iter().all(|d| d.action != ApprovalState::Accepted),
        "the audit log does not say someone here approved it: {audit:?}"
    );
    gw.stop().await;
}

/// A run that ends while its call waits: the prompt closes with how it ended, a click changes
/// nothing, and the chat is answered once.
async fn run_ends_while_waiting(end: RunEnd) -> (Vec<String>, String) {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = ask_gateway(&fake, &dir).await;

    gw.dm("ann", "1", RUN_LS).await;
    let id = approval_requested(&mut gw).await;
    gw.chat
        .wait_prompts("the chat prompt", WAIT, |p| !p.is_empty())
        .await;
    assert!(fake.end_waiting_run(&session_of(&fake), end));

    let prompts = prompts_closed(&gw, 1).await;
    let closed = prompts[0].closed.clone().unwrap_or_default();
    let replies = gw.replies("ann", 1).await;
    assert!(
        gw.engine.pending_approvals().expect("pending").is_empty(),
        "{end:?}: nothing left waiting"
    );
    let record = gw
        .engine
        .approval(&id)
        .expect("read")
        .expect("the approval");
    assert_eq!(record.state, ApprovalState::Closed, "{end:?}");
    let click = gw.chat.click(&id, ChatChoice::Approve, "ann").await;
    assert!(
        !matches!(
            click,
            switchboard_engine::approvals::ChoiceOutcome::Decided(_)
        ),
        "{end:?}: a late click decides nothing: {click:?}"
    );
    assert!(actions(&fake).is_empty(), "{end:?}: no decision was sent");
    // The next message is answered, not told to wait for an approval.
    gw.dm("ann", "2", "next").await;
    let replies_after = gw.replies("ann", replies.len() + 1).await;
    assert_eq!(
        replies_after.last().map(String::as_str),
        Some("echo: next"),
        "{end:?}: {replies_after:?}"
    );
    assert!(
        !replies_after.iter().any(|r| r.contains("waits for")),
        "{end:?}: {replies_after:?}"
    );
    gw.stop().await;
    (replies, closed)
}

#[tokio::test]
async fn a_run_that_completes_while_a_call_waits_closes_the_prompt() {
    let (replies, closed) = run_ends_while_waiting(RunEnd::Completed).await;
    assert!(closed.contains("the run ended"), "{closed}");
    assert_eq!(replies.len(), 1, "{replies:?}");
}

#[tokio::test]
async fn a_run_that_fails_while_a_call_waits_closes_the_prompt_and_says_so() {
    let (replies, closed) = run_ends_while_waiting(RunEnd::Error).await;
    assert!(closed.contains("the run ended"), "{closed}");
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(
        replies[0].contains("⚠️"),
        "the chat hears of the error: {replies:?}"
    );
}

#[tokio::test]
async fn a_run_that_stops_silently_while_a_call_waits_is_settled_by_the_watchdog() {
    let (replies, closed) = run_ends_while_waiting(RunEnd::Silent).await;
    assert!(closed.contains("the run ended"), "{closed}");
    assert_eq!(replies.len(), 1, "{replies:?}");
}

#[tokio::test]
async fn a_later_call_reusing_a_tool_call_id_is_asked_about_again() {
    let fake = FakeStakpak::start_with(FakeOptions {
        positional_tool_ids: true,
        ..FakeOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = ask_gateway(&fake, &dir).await;

    gw.dm("ann", "1", RUN_LS).await;
    let first = approval_requested(&mut gw).await;
    approve(&gw, &first);
    gw.replies("ann", 1).await;

    gw.dm(
        "ann",
        "2",
        r#"USE_TOOL run_command {"command": "rm -rf build"}"#,
    )
    .await;
    let second = approval_requested(&mut gw).await;
    assert_ne!(first, second, "a new approval");
    settle().await;
    assert_eq!(
        actions(&fake),
        ["accept"],
        "the second call did not inherit the first one's decision"
    );
    let calls: Vec<String> = fake
        .decisions()
        .iter()
        .map(|d| d.tool_call_id.clone())
        .collect();
    assert_eq!(calls, ["call_0"]);
    let waiting = gw.engine.pending_approvals().expect("pending");
    assert_eq!(waiting.len(), 1);
    assert_eq!(
        waiting[0].tool_call_id, "call_0",
        "the same id, asked again"
    );
    gw.engine
        .decide(
            &second,
            &Answer::Reject,
            &Actor::local("me"),
            Surface::Window,
        )
        .expect("decide");
    let replies = gw.replies("ann", 2).await;
    assert!(replies[1].contains("rejected"), "{replies:?}");
    assert_eq!(actions(&fake), ["accept", "reject"]);
    gw.stop().await;
}

#[tokio::test]
async fn a_retry_that_finds_our_own_run_going_follows_it_and_replies_once() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;
    fake.lose_next_answer(Route::Messages);

    // Slow, so the run is still going when the retry arrives.
    gw.dm("ann", "1", "hello SLOW 1").await;
    let replies = gw.replies("ann", 1).await;
    assert_eq!(replies, ["echo: hello SLOW 1"]);
    assert!(
        fake.requests().iter().any(|r| r.status == 409),
        "the retry met the run its first attempt started"
    );
    settle().await;
    assert_eq!(
        gw.chat.sent_to("ann"),
        ["echo: hello SLOW 1"],
        "one reply, no warning"
    );
    assert_eq!(fake.runs_started(), 1, "the agent did it once");
    gw.stop().await;
}

#[tokio::test]
async fn a_retry_after_a_settings_change_posts_what_the_first_attempt_posted() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_for(&fake);
    config.gateway.model = "first-model".into();
    let gw = Gateway::start(config.clone(), dir.path()).await;
    fake.fail_next(Route::Messages, 1000);

    gw.dm("ann", "1", "hello").await;
    fake.wait_for("a failed attempt", |f| {
        f.requests()
            .iter()
            .any(|r| r.path.ends_with("/messages") && r.status == 503)
    })
    .await;
    config.gateway.model = "second-model".into();
    gw.engine.reload(config).expect("reload");
    fake.heal();

    assert_eq!(gw.replies("ann", 1).await, ["echo: hello"]);
    let bodies: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/messages"))
        .map(|r| format!("{:?}", r.body))
        .collect();
    assert!(bodies.len() >= 2, "{bodies:?}");
    assert!(
        bodies.iter().all(|b| b == &bodies[0]),
        "every attempt posted the same body: {bodies:?}"
    );
    assert!(bodies[0].contains("first-model"), "{}", bodies[0]);
    assert!(!fake.requests().iter().any(|r| r.status == 409));

    // The next message uses the new settings.
    gw.dm("ann", "2", "again").await;
    gw.replies("ann", 2).await;
    let last = fake
        .requests()
        .into_iter()
        .rfind(|r| r.method == "POST" && r.path.ends_with("/messages") && r.status == 200)
        .expect("posted");
    assert!(
        format!("{:?}", last.body).contains("second-model"),
        "{last:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn text_before_and_after_a_tool_call_arrives_as_separate_paragraphs() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;

    gw.dm("ann", "1", &format!("SAY_FIRST\n{RUN_LS}")).await;
    let replies = gw.replies("ann", 1).await;
    settle().await;
    let all = gw.chat.sent_to("ann").join("\n");
    assert!(all.starts_with("I'll look into it."), "{all}");
    assert!(
        all.contains("I'll look into it.\n\ndone:"),
        "the turns are apart: {replies:?}"
    );
    gw.stop().await;
}
