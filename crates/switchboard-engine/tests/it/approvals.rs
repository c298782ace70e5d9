//! Approval modes: decisions go to the server only for calls that really wait.

use switchboard_engine::approvals::{Actor, Answer, Surface};
use switchboard_engine::config::ApprovalMode;
use switchboard_engine::store::Resolution;
use switchboard_engine::EngineEvent;
use switchboard_testkit::stakpak::FakeStakpak;

use crate::harness::{config_for, Gateway};

const RUN_LS: &str = r#"USE_TOOL run_command {"command": "ls"}"#;

async fn run_with_mode(
    mode: ApprovalMode,
    allowlist: &[&str],
    text: &str,
) -> (FakeStakpak, String) {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_for(&fake);
    config.gateway.approval_mode = mode;
    config.gateway.approval_allowlist = allowlist.iter().map(|s| s.to_string()).collect();
    let gw = Gateway::start(config, dir.path()).await;
    gw.dm("ann", "1", text).await;
    let reply = gw.replies("ann", 1).await.remove(0);
    gw.stop().await;
    (fake, reply)
}

fn actions(fake: &FakeStakpak) -> Vec<String> {
    fake.decisions().iter().map(|d| d.action.clone()).collect()
}

#[tokio::test]
async fn allow_all_accepts_and_the_run_finishes() {
    let (fake, reply) = run_with_mode(ApprovalMode::AllowAll, &[], RUN_LS).await;
    assert_eq!(actions(&fake), vec!["accept"], "exactly one decision");
    assert!(
        reply.starts_with("done:"),
        "the tool ran and the run finished: {reply}"
    );
    assert!(
        fake.misdecisions().is_empty(),
        "no decision for a call that was not waiting"
    );
}

#[tokio::test]
async fn deny_all_rejects() {
    let (fake, reply) = run_with_mode(ApprovalMode::DenyAll, &[], RUN_LS).await;
    assert_eq!(actions(&fake), vec!["reject"]);
    assert!(
        reply.contains("rejected"),
        "the reply tells the call was rejected: {reply}"
    );
}

#[tokio::test]
async fn allowlist_accepts_listed_tools_and_rejects_the_rest() {
    let text = "USE_TOOL run_command {\"command\": \"ls\"}\nUSE_TOOL create {\"path\": \"x\"}";
    let (fake, _) = run_with_mode(ApprovalMode::Allowlist, &["run_command"], text).await;
    let mut decided: Vec<(String, String)> = fake
        .decisions()
        .iter()
        .map(|d| (d.tool_call_id.clone(), d.action.clone()))
        .collect();
    decided.sort();
    assert_eq!(decided.len(), 2, "{decided:?}");
    assert_eq!(
        decided.iter().filter(|(_, a)| a == "accept").count(),
        1,
        "run_command is listed: {decided:?}"
    );
    assert_eq!(
        decided.iter().filter(|(_, a)| a == "reject").count(),
        1,
        "create is not: {decided:?}"
    );
    assert!(fake.misdecisions().is_empty(), "{:?}", fake.misdecisions());
}

#[tokio::test]
async fn calls_of_a_tool_known_to_wait_are_decided_in_one_request() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;
    gw.dm("ann", "1", RUN_LS).await;
    gw.replies("ann", 1).await;

    let two = "USE_TOOL run_command {\"command\": \"echo one\"}\nUSE_TOOL run_command {\"command\": \"echo two\"}";
    gw.dm("ann", "2", two).await;
    assert!(gw.replies("ann", 2).await[1].starts_with("done:"));
    let requests = fake
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/tools/decisions"))
        .count();
    assert_eq!(
        requests, 2,
        "one request for the first run, one for both calls of the second"
    );
    assert_eq!(fake.decisions().len(), 3);
    assert!(fake.misdecisions().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn an_auto_approved_call_after_a_waiting_one_is_never_decided() {
    let text = "USE_TOOL run_command {\"command\": \"ls\"}\nUSE_TOOL view {\"path\": \"/tmp\"}";
    let (fake, reply) = run_with_mode(ApprovalMode::AllowAll, &[], text).await;
    assert!(reply.starts_with("done:"), "{reply}");
    assert!(
        fake.misdecisions().is_empty(),
        "view waits behind run_command but needs no decision: {:?}",
        fake.misdecisions()
    );
    assert_eq!(actions(&fake), vec!["accept"]);
}

#[tokio::test]
async fn calls_the_server_approves_itself_get_no_decision() {
    let text = "USE_TOOL view {\"path\": \"/tmp\"}\nUSE_TOOL run_command {\"command\": \"ls\"}";
    let (fake, reply) = run_with_mode(ApprovalMode::AllowAll, &[], text).await;
    assert!(reply.starts_with("done:"), "{reply}");
    assert!(
        fake.misdecisions().is_empty(),
        "the auto-approved view must not be decided: {:?}",
        fake.misdecisions()
    );
    assert_eq!(fake.decisions().len(), 1, "only run_command waited");
}

#[tokio::test]
async fn ask_mode_waits_for_a_person_without_blocking_other_chats() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_for(&fake);
    config.gateway.approval_mode = ApprovalMode::Ask;
    let mut gw = Gateway::start(config, dir.path()).await;

    gw.dm("ann", "1", RUN_LS).await;
    let approval_id = gw
        .event("an approval request", |e| match e {
            EngineEvent::ApprovalRequested {
                approval_id, tool, ..
            } if tool == "stakpak__run_command" => Some(approval_id.clone()),
            _ => None,
        })
        .await;
    assert!(
        fake.decisions().is_empty(),
        "nothing is decided before a person answers"
    );

    gw.dm("bob", "2", "meanwhile").await;
    assert_eq!(
        gw.replies("bob", 1).await,
        vec!["echo: meanwhile"],
        "another chat is answered while ann's call waits"
    );

    let first = gw
        .engine
        .decide(
            &approval_id,
            &Answer::AllowOnce,
            &Actor::local("me"),
            Surface::Window,
        )
        .expect("decide");
    assert!(matches!(first, Resolution::Decided(_)));
    let second = gw
        .engine
        .decide(
            &approval_id,
            &Answer::Reject,
            &Actor::local("ann"),
            Surface::Chat,
        )
        .expect("decide");
    assert!(
        matches!(second, Resolution::AlreadyDecided(ref a) if a.decided_by.as_deref() == Some("me")),
        "first answer wins"
    );

    assert!(gw.replies("ann", 1).await[0].starts_with("done:"));
    assert_eq!(
        actions(&fake),
        vec!["accept"],
        "one decision reached the server"
    );
    assert_eq!(
        gw.engine.decisions(10).expect("audit").len(),
        1,
        "the decision is in the audit log"
    );
    gw.stop().await;
}

#[tokio::test]
async fn cancelling_a_run_that_waits_for_approval_ends_it_and_closes_the_approval() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_for(&fake);
    config.gateway.approval_mode = ApprovalMode::Ask;
    let mut gw = Gateway::start(config, dir.path()).await;

    gw.dm("ann", "1", RUN_LS).await;
    gw.event("an approval request", |e| {
        matches!(e, EngineEvent::ApprovalRequested { .. }).then_some(())
    })
    .await;
    assert!(gw.engine.cancel("chat:dm:ann"), "there is a run to cancel");

    let reply = gw.replies("ann", 1).await.remove(0);
    assert!(
        reply.contains("ancel"),
        "the chat is told the run was cancelled: {reply}"
    );
    assert!(
        gw.engine.pending_approvals().expect("pending").is_empty(),
        "the approval is closed"
    );
    assert!(
        fake.requests().iter().any(|r| r.path.ends_with("/cancel")),
        "the server was asked to cancel"
    );
    assert_eq!(
        actions(&fake),
        vec!["reject"],
        "the waiting call was rejected so the run can end"
    );
    assert!(fake.misdecisions().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn a_pending_approval_survives_a_restart_and_can_still_be_decided() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_for(&fake);
    config.gateway.approval_mode = ApprovalMode::Ask;
    let mut gw = Gateway::start(config.clone(), dir.path()).await;
    gw.dm("ann", "1", RUN_LS).await;
    gw.event("an approval request", |e| {
        matches!(e, EngineEvent::ApprovalRequested { .. }).then_some(())
    })
    .await;
    gw.stop().await;

    let gw = Gateway::start(config, dir.path()).await;
    let pending = gw.engine.pending_approvals().expect("pending");
    assert_eq!(
        pending.len(),
        1,
        "the approval is still pending after the restart"
    );
    assert_eq!(pending[0].tool, "stakpak__run_command");
    let decided = gw
        .engine
        .decide(
            &pending[0].id,
            &Answer::AllowOnce,
            &Actor::local("me"),
            Surface::Window,
        )
        .expect("decide");
    assert!(matches!(decided, Resolution::Decided(_)));

    assert!(
        gw.replies("ann", 1).await[0].starts_with("done:"),
        "the run finishes after the decision"
    );
    assert_eq!(
        actions(&fake),
        vec!["accept"],
        "exactly one decision reached the server"
    );
    assert!(fake.misdecisions().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn an_approval_the_server_forgot_is_closed_after_a_restart() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_for(&fake);
    config.gateway.approval_mode = ApprovalMode::Ask;
    let mut gw = Gateway::start(config.clone(), dir.path()).await;
    gw.dm("ann", "1", RUN_LS).await;
    gw.event("an approval request", |e| {
        matches!(e, EngineEvent::ApprovalRequested { .. }).then_some(())
    })
    .await;
    gw.stop().await;
    // The server restarts too: its run, and the call waiting in it, are gone.
    fake.restart().await;

    let gw = Gateway::start(config, dir.path()).await;
    let reply = gw.replies("ann", 1).await.remove(0);
    assert!(
        reply.starts_with("⚠️"),
        "the chat learns the run ended: {reply}"
    );
    assert!(
        gw.engine.pending_approvals().expect("pending").is_empty(),
        "the stale approval was closed"
    );
    assert!(
        fake.decisions().is_empty(),
        "no decision for a call that no longer waits"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_message_behind_a_pending_approval_is_queued_with_a_reminder() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_for(&fake);
    config.gateway.approval_mode = ApprovalMode::Ask;
    let mut gw = Gateway::start(config, dir.path()).await;
    gw.dm("ann", "1", RUN_LS).await;
    let approval = gw
        .event("an approval request", |e| match e {
            EngineEvent::ApprovalRequested { approval_id, .. } => Some(approval_id.clone()),
            _ => None,
        })
        .await;

    gw.dm("ann", "2", "hurry up").await;
    let reminder = gw.replies("ann", 1).await.remove(0);
    assert!(
        reminder.contains("waiting for your approval") && reminder.contains("stakpak__run_command"),
        "{reminder}"
    );
    assert_eq!(
        fake.decisions().len(),
        0,
        "the new message did not reject the waiting call"
    );

    gw.engine
        .decide(
            &approval,
            &Answer::AllowOnce,
            &Actor::local("me"),
            Surface::Window,
        )
        .expect("decide");
    let replies = gw.replies("ann", 3).await;
    assert!(replies[1].starts_with("done:"), "{replies:?}");
    assert_eq!(
        replies[2], "echo: hurry up",
        "the queued message is answered after the run"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_expired_approval_is_rejected_and_announced_in_the_chat() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_for(&fake);
    config.gateway.approval_mode = ApprovalMode::Ask;
    let options = switchboard_engine::EngineOptions {
        approval_timeout: Some(std::time::Duration::from_millis(400)),
        ..crate::harness::fast_options()
    };
    let gw = Gateway::start_with_options(config, dir.path(), options).await;
    gw.dm("ann", "1", RUN_LS).await;

    let replies = gw.replies("ann", 2).await;
    assert!(
        replies[0].contains("was rejected") && replies[0].contains("Send your message again"),
        "the chat is told why and how to retry: {replies:?}"
    );
    assert!(
        replies[1].starts_with("done:"),
        "the run goes on with the rejection: {replies:?}"
    );
    assert_eq!(actions(&fake), vec!["reject"]);
    let log = gw.engine.decisions(10).expect("audit");
    assert_eq!(
        (log[0].action.as_str(), log[0].decided_by.as_str()),
        ("expired", "timeout"),
        "the expiry is in the audit log"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_always_allow_rule_lets_the_tool_pass_until_it_is_revoked() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_for(&fake);
    config.gateway.approval_mode = ApprovalMode::Ask;
    let mut gw = Gateway::start(config, dir.path()).await;

    let rule = gw
        .engine
        .add_rule("run_command", Some("ls*"), None, "me")
        .expect("rule");
    gw.dm("ann", "1", RUN_LS).await;
    assert!(
        gw.replies("ann", 1).await[0].starts_with("done:"),
        "the rule accepted the call without asking"
    );
    assert_eq!(
        gw.engine.rules().expect("rules").len(),
        1,
        "rules are listed"
    );

    let other = r#"USE_TOOL run_command {"command": "rm -rf /tmp/x"}"#;
    gw.dm("ann", "2", other).await;
    gw.event("an approval for a call the pattern does not cover", |e| {
        matches!(e, EngineEvent::ApprovalRequested { .. }).then_some(())
    })
    .await;
    let id = gw.engine.pending_approvals().expect("pending")[0]
        .id
        .clone();
    gw.engine
        .decide(&id, &Answer::Reject, &Actor::local("me"), Surface::Window)
        .expect("decide");
    gw.replies("ann", 2).await;

    assert!(gw.engine.remove_rule(rule).expect("revoke"));
    gw.dm("ann", "3", RUN_LS).await;
    gw.event("an approval once the rule is revoked", |e| {
        matches!(e, EngineEvent::ApprovalRequested { .. }).then_some(())
    })
    .await;
    assert_eq!(
        actions(&fake),
        vec!["accept", "reject"],
        "nothing decided for the third call yet"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_from_a_thread_outside_the_runtime_goes_through() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_for(&fake);
    config.gateway.approval_mode = ApprovalMode::Ask;
    let gw = Gateway::start(config, dir.path()).await;
    gw.dm("ann", "1", RUN_LS).await;
    let prompts = gw
        .chat
        .wait_prompts("the prompt", crate::harness::WAIT, |p| !p.is_empty())
        .await;
    let id = prompts[0].prompt.approval_id.clone();

    // A desktop's UI thread has no Tokio runtime.
    let engine = gw.engine.clone();
    let decided = std::thread::spawn(move || {
        engine.decide(
            &id,
            &Answer::AllowOnce,
            &Actor::local("me"),
            Surface::Window,
        )
    })
    .join()
    .expect("deciding from a plain thread does not panic")
    .expect("decide");
    assert!(matches!(decided, Resolution::Decided(_)));
    assert!(gw.replies("ann", 1).await[0].starts_with("done:"));
    gw.chat
        .wait_prompts("the prompt closed", crate::harness::WAIT, |p| {
            p[0].closed.is_some()
        })
        .await;
    gw.stop().await;
}

mod from_the_chat {
    use switchboard_engine::approvals::{Actor, Answer, Surface};
    use switchboard_engine::approvals::{ChatChoice, ChoiceOutcome};
    use switchboard_engine::config::ApprovalMode;
    use switchboard_testkit::stakpak::FakeStakpak;

    use super::{actions, RUN_LS};
    use crate::harness::{config_for, Gateway, WAIT};

    async fn waiting(fake: &FakeStakpak, dir: &std::path::Path) -> (Gateway, String) {
        let mut config = config_for(fake);
        config.gateway.approval_mode = ApprovalMode::Ask;
        let gw = Gateway::start(config, dir).await;
        gw.dm("ann", "1", RUN_LS).await;
        let prompts = gw
            .chat
            .wait_prompts("the prompt in the chat", WAIT, |p| !p.is_empty())
            .await;
        assert_eq!(prompts[0].prompt.tool, "stakpak__run_command");
        assert_eq!(
            prompts[0].prompt.arguments, "$ ls",
            "the command is shown as it will run"
        );
        assert_eq!(
            prompts[0].target.chat_id, "ann",
            "the prompt goes to the chat it came from"
        );
        let id = prompts[0].prompt.approval_id.clone();
        (gw, id)
    }

    #[tokio::test]
    async fn the_requester_approves_with_a_button_and_the_run_finishes() {
        let fake = FakeStakpak::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let (gw, id) = waiting(&fake, dir.path()).await;

        let outcome = gw.chat.click(&id, ChatChoice::Approve, "ann").await;
        assert!(
            matches!(outcome, ChoiceOutcome::Decided(ref t) if t.contains("approved by ann")),
            "{outcome:?}"
        );
        assert!(gw.replies("ann", 1).await[0].starts_with("done:"));
        assert_eq!(actions(&fake), vec!["accept"], "exactly one decision");
        let prompts = gw
            .chat
            .wait_prompts("the prompt to show the outcome", WAIT, |p| {
                p[0].closed.is_some()
            })
            .await;
        assert!(
            prompts[0]
                .closed
                .as_deref()
                .is_some_and(|c| c.contains("approved by ann (chat)")),
            "{prompts:?}"
        );
        gw.stop().await;
    }

    #[tokio::test]
    async fn someone_else_cannot_decide_and_nothing_changes() {
        let fake = FakeStakpak::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let (gw, id) = waiting(&fake, dir.path()).await;

        let outcome = gw.chat.click(&id, ChatChoice::Approve, "mallory").await;
        assert!(
            matches!(outcome, ChoiceOutcome::NotAllowed(ref t) if t.contains("only ann")),
            "a polite refusal: {outcome:?}"
        );
        crate::harness::settle().await;
        assert!(
            fake.decisions().is_empty(),
            "the stranger's click decided nothing"
        );
        assert_eq!(
            gw.engine.pending_approvals().expect("pending").len(),
            1,
            "still pending"
        );
        gw.stop().await;
    }

    #[tokio::test]
    async fn two_surfaces_answering_give_one_decision_and_both_learn_the_outcome() {
        let fake = FakeStakpak::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let (gw, id) = waiting(&fake, dir.path()).await;

        let engine = gw.engine.clone();
        let window_id = id.clone();
        let window = tokio::spawn(async move {
            engine.decide(
                &window_id,
                &Answer::Reject,
                &Actor::local("me"),
                Surface::Window,
            )
        });
        let chat = gw.chat.click(&id, ChatChoice::Approve, "ann").await;
        let window = window.await.expect("join").expect("decide");

        let chat_won = matches!(chat, ChoiceOutcome::Decided(_));
        let window_won = matches!(window, switchboard_engine::store::Resolution::Decided(_));
        assert!(
            chat_won ^ window_won,
            "exactly one surface decides (chat: {chat:?}, window: {window:?})"
        );
        if !chat_won {
            assert!(
                chat.text().contains("Already decided") && chat.text().contains("me (window)"),
                "the chat is told who decided where: {chat:?}"
            );
        }
        gw.replies("ann", 1).await;
        assert_eq!(fake.decisions().len(), 1, "one decision reached the server");
        gw.stop().await;
    }

    #[tokio::test]
    async fn always_allow_from_the_chat_creates_a_rule() {
        let fake = FakeStakpak::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let (gw, id) = waiting(&fake, dir.path()).await;
        gw.chat.click(&id, ChatChoice::AlwaysAllow, "ann").await;
        gw.replies("ann", 1).await;
        let rules = gw.engine.rules().expect("rules");
        assert_eq!(rules[0].tool, "stakpak__run_command");
        assert_eq!(
            rules[0].channel.as_deref(),
            Some("chat"),
            "a rule made in a chat covers that channel only"
        );

        gw.dm("ann", "2", RUN_LS).await;
        assert!(
            gw.replies("ann", 2).await[1].starts_with("done:"),
            "the next call passes without asking"
        );
        assert_eq!(gw.chat.prompts().len(), 1, "no second prompt");
        gw.stop().await;
    }
}
