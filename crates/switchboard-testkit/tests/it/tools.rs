//! Tool approvals: approve, reject, auto-approval, order, custom results, cancel, misdecisions.

use std::time::Duration;

use serde_json::json;
use switchboard_testkit::stakpak::FakeStakpak;

use crate::support::{assert_same_shape, names, Client, Frame};

fn pending_ids(frames: &[Frame]) -> Vec<String> {
    let waiting = frames
        .iter()
        .find(|f| f.name() == "waiting_for_tool_approval")
        .expect("waiting_for_tool_approval");
    waiting.payload()["pending_tool_call_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn an_accepted_call_runs_and_the_reply_summarises_its_result() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("tool-approve").await;
    let mut stream = client.stream(&session, None).await;
    let run_id = client
        .send(
            &session,
            "USE_TOOL run_command {\"command\": \"echo tool-ran-ok; sleep 0.3\"}",
        )
        .await;
    let mut frames = stream.events_until("waiting_for_tool_approval").await;
    let ids = pending_ids(&frames);
    assert_eq!(ids.len(), 1);
    assert!(
        stream
            .events_within(Duration::from_millis(200))
            .await
            .is_empty(),
        "nothing happens until a decision"
    );

    let pending = client
        .get(&format!("/v1/sessions/{session}/tools/pending"))
        .await
        .json();
    assert_eq!(
        pending,
        json!({ "run_id": run_id, "tool_calls": [{
            "id": ids[0], "name": "stakpak__run_command",
            "arguments": { "command": "echo tool-ran-ok; sleep 0.3" },
        }]}),
        "tools/pending lists the proposed call (no metadata key when none)"
    );
    assert_eq!(
        client.run_status(&session).await,
        json!({ "state": "running", "run_id": run_id })
    );

    let resp = client
        .decide(
            &session,
            &run_id,
            json!({ ids[0].clone(): { "action": "accept" } }),
        )
        .await;
    assert_eq!(resp.json(), json!({ "accepted": true, "run_id": run_id }));
    frames.extend(stream.events_until("run_completed").await);
    assert_same_shape(&frames, "tool_approve.sse");
    assert_eq!(frames[6].payload()["result"], "tool-ran-ok\n");
    assert_eq!(frames[9].payload()["delta"], "done: tool-ran-ok");
    assert_eq!(frames[13].payload()["total_turns"], 2);

    let pending = client
        .get(&format!("/v1/sessions/{session}/tools/pending"))
        .await
        .json();
    assert_eq!(
        pending,
        json!({ "run_id": null, "tool_calls": [] }),
        "cleared after the run"
    );

    let raw = client
        .get(&format!("/v1/sessions/{session}/messages?offset=2"))
        .await
        .text;
    assert!(
        raw.starts_with(r#"{"messages":[{"role":"assistant","content":[{"type":"tool_call","id":"#)
            && raw.contains(r#"{"role":"tool","content":[{"type":"tool_result","tool_call_id":"#),
        "messages keep the server's key order (tool_approve.messages.json): {raw}"
    );
    let messages = client.messages(&session, "").await["messages"].clone();
    assert_eq!(messages.as_array().map(Vec::len), Some(5));
    assert_eq!(messages[2]["role"], "assistant");
    assert_eq!(
        messages[2]["content"][0],
        json!({ "type": "tool_call", "id": ids[0], "name": "stakpak__run_command",
                "arguments": { "command": "echo tool-ran-ok; sleep 0.3" } })
    );
    assert_eq!(
        messages[3],
        json!({ "role": "tool", "content": [{ "type": "tool_result", "tool_call_id": ids[0], "content": "tool-ran-ok\n" }] })
    );
    assert_eq!(messages[4]["content"][0]["text"], "done: tool-ran-ok");
    assert_eq!(fake.decisions().len(), 1);
    assert!(fake.misdecisions().is_empty());
}

#[tokio::test]
async fn a_rejected_call_does_not_run() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("tool-reject").await;
    let mut stream = client.stream(&session, None).await;
    let run_id = client
        .send(
            &session,
            "USE_TOOL run_command {\"command\": \"touch should-not-exist.txt\"}",
        )
        .await;
    let mut frames = stream.events_until("waiting_for_tool_approval").await;
    let ids = pending_ids(&frames);
    client
        .decide(
            &session,
            &run_id,
            json!({ ids[0].clone(): { "action": "reject" } }),
        )
        .await;
    frames.extend(stream.events_until("run_completed").await);
    assert_same_shape(&frames, "tool_reject.sse");
    assert_eq!(frames[5].payload()["reason"], "Tool call rejected by user");
    assert_eq!(
        frames[8].payload()["delta"],
        "done: Tool call rejected by user"
    );
}

#[tokio::test]
async fn a_read_only_call_is_auto_approved_and_needs_no_decision() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("auto").await;
    let mut stream = client.stream(&session, None).await;
    client
        .send(
            &session,
            "USE_TOOL view {\"path\": \"/tmp/stakpak-rig/workspace/hello.txt\"}",
        )
        .await;
    let frames = stream.events_until("run_completed").await;
    assert_same_shape(&frames, "tool_auto_approved_view.sse");
    assert_eq!(
        frames[3].payload()["tool_calls"][0]["name"],
        "stakpak__view"
    );
    assert!(fake.decisions().is_empty());
    assert!(fake.misdecisions().is_empty());
}

#[tokio::test]
async fn overrides_auto_approve_all_runs_any_call_without_a_decision() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("override").await;
    let mut stream = client.stream(&session, None).await;
    let resp = client
        .post(
            &format!("/v1/sessions/{session}/messages"),
            json!({ "message": { "role": "user", "content": "USE_TOOL run_command {\"command\": \"echo auto\"}" },
                    "overrides": { "auto_approve": "all" } }),
        )
        .await;
    assert_eq!(resp.status, 200);
    let frames = stream.events_until("run_completed").await;
    assert!(names(&frames).contains(&"tool_execution_started".to_string()));
    assert_eq!(
        frames.last().expect("frames").payload()["stop_reason"],
        "completed"
    );
}

#[tokio::test]
async fn parallel_calls_run_in_proposal_order_whatever_the_decision_order() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("tool-partial").await;
    let mut stream = client.stream(&session, None).await;
    let run_id = client
        .send(
            &session,
            "USE_TOOL run_command {\"command\": \"echo one\"}\nUSE_TOOL run_command {\"command\": \"echo two\"}",
        )
        .await;
    let mut frames = stream.events_until("waiting_for_tool_approval").await;
    let ids = pending_ids(&frames);
    assert_eq!(ids.len(), 2);

    client
        .decide(
            &session,
            &run_id,
            json!({ ids[1].clone(): { "action": "accept" } }),
        )
        .await;
    assert!(
        stream
            .events_within(Duration::from_millis(300))
            .await
            .is_empty(),
        "deciding only the second call runs nothing"
    );
    let pending = client
        .get(&format!("/v1/sessions/{session}/tools/pending"))
        .await
        .json();
    assert_eq!(pending["tool_calls"].as_array().map(Vec::len), Some(2));

    let resp = client
        .post(
            &format!("/v1/sessions/{session}/tools/{}/decision", ids[0]),
            json!({ "run_id": run_id, "action": "accept" }),
        )
        .await;
    assert_eq!(resp.json(), json!({ "accepted": true, "run_id": run_id }));
    frames.extend(stream.events_until("run_completed").await);
    let executed: Vec<_> = frames
        .iter()
        .filter(|f| f.name() == "tool_execution_completed")
        .map(|f| {
            f.payload()["tool_call_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(executed, ids, "calls run in proposal order");
    assert_eq!(
        frames
            .iter()
            .find(|f| f.name() == "text_delta")
            .expect("reply")
            .payload()["delta"],
        "done: one | two"
    );
    assert!(fake.misdecisions().is_empty());
}

#[tokio::test]
async fn mixed_decisions_in_one_request_match_the_capture() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("mixed").await;
    let mut stream = client.stream(&session, None).await;
    let run_id = client
        .send(
            &session,
            "USE_TOOL run_command {\"command\": \"echo first-call; sleep 0.3\"}\nUSE_TOOL run_command {\"command\": \"echo second-call; sleep 0.3\"}",
        )
        .await;
    let mut frames = stream.events_until("waiting_for_tool_approval").await;
    let ids = pending_ids(&frames);
    client
        .post(
            &format!("/v1/sessions/{session}/tools/resolve"),
            json!({ "run_id": run_id, "decisions": {
                ids[0].clone(): { "action": "accept" },
                ids[1].clone(): { "action": "reject" },
            }}),
        )
        .await;
    frames.extend(stream.events_until("run_completed").await);
    assert_same_shape(&frames, "tool_parallel_mixed.sse");
    assert_eq!(
        frames[10].payload()["delta"],
        "done: first-call | Tool call rejected by user"
    );
}

#[tokio::test]
async fn a_custom_result_replaces_the_execution() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("custom").await;
    let mut stream = client.stream(&session, None).await;
    let run_id = client
        .send(
            &session,
            "USE_TOOL run_command {\"command\": \"echo never-runs\"}",
        )
        .await;
    let frames = stream.events_until("waiting_for_tool_approval").await;
    let ids = pending_ids(&frames);
    let missing = client
        .decide(
            &session,
            &run_id,
            json!({ ids[0].clone(): { "action": "custom_result" } }),
        )
        .await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.code(), "invalid_request");
    client
        .decide(
            &session,
            &run_id,
            json!({ ids[0].clone(): { "action": "custom_result", "content": "CUSTOM-RESULT-42" } }),
        )
        .await;
    let rest = stream.events_until("run_completed").await;
    assert_eq!(
        rest[0].name(),
        "tool_execution_completed",
        "no execution_started"
    );
    assert_eq!(rest[0].payload()["result"], "CUSTOM-RESULT-42");
    assert_eq!(rest[3].payload()["delta"], "done: CUSTOM-RESULT-42");
}

#[tokio::test]
async fn decisions_need_a_running_run_with_that_id() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("decisions 409").await;
    let none = client
        .decide(&session, "00000000-0000-0000-0000-000000000000", json!({}))
        .await;
    assert_eq!(none.status, 409);
    assert_eq!(none.code(), "session_not_running");

    let mut stream = client.stream(&session, None).await;
    client
        .send(&session, "USE_TOOL run_command {\"command\": \"echo x\"}")
        .await;
    let frames = stream.events_until("waiting_for_tool_approval").await;
    let ids = pending_ids(&frames);
    let wrong = client
        .decide(
            &session,
            "00000000-0000-0000-0000-000000000000",
            json!({ ids[0].clone(): { "action": "accept" } }),
        )
        .await;
    assert_eq!(wrong.status, 409);
    assert_eq!(wrong.code(), "run_mismatch");

    let malformed = client
        .post(
            &format!("/v1/sessions/{session}/tools/decisions"),
            json!({ "decisions": {} }),
        )
        .await;
    assert_eq!(malformed.status, 422);
    assert!(malformed.content_type.starts_with("text/plain"));
    assert!(
        fake.misdecisions().is_empty(),
        "refused requests are not misdecisions"
    );
}

#[tokio::test]
async fn a_decision_for_an_auto_approved_call_errors_the_run_without_a_terminal_event() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("misdecision").await;
    let mut stream = client.stream(&session, None).await;
    // The view call is auto-approved; the run_command call keeps the run waiting.
    let run_id = client
        .send(
            &session,
            "USE_TOOL view {\"path\": \"/a\"}\nUSE_TOOL run_command {\"command\": \"echo b\"}",
        )
        .await;
    let frames = stream.events_until("tool_execution_completed").await;
    let ids = pending_ids(&frames);
    let resp = client
        .decide(
            &session,
            &run_id,
            json!({ ids[0].clone(): { "action": "accept" } }),
        )
        .await;
    assert_eq!(resp.status, 200, "the server accepts the request itself");

    assert!(
        stream
            .events_within(Duration::from_millis(300))
            .await
            .is_empty(),
        "the run ends with no terminal event"
    );
    assert_eq!(
        client.run_status(&session).await,
        json!({ "state": "failed" })
    );
    let incidents = fake.misdecisions();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert!(incidents[0].contains(&ids[0]) && incidents[0].contains("auto-approved"));

    let late = client
        .decide(
            &session,
            &run_id,
            json!({ ids[1].clone(): { "action": "accept" } }),
        )
        .await;
    assert_eq!(late.code(), "session_not_running", "the run is gone");
    client.send(&session, "next message works").await;
}

#[tokio::test]
async fn deciding_a_call_twice_errors_the_run() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("twice").await;
    let mut stream = client.stream(&session, None).await;
    let run_id = client
        .send(
            &session,
            "USE_TOOL run_command {\"command\": \"echo a\"}\nUSE_TOOL run_command {\"command\": \"echo b\"}",
        )
        .await;
    let frames = stream.events_until("waiting_for_tool_approval").await;
    let ids = pending_ids(&frames);
    client
        .decide(
            &session,
            &run_id,
            json!({ ids[0].clone(): { "action": "accept" } }),
        )
        .await;
    stream.events_until("tool_execution_completed").await;
    client
        .decide(
            &session,
            &run_id,
            json!({ ids[0].clone(): { "action": "reject" } }),
        )
        .await;
    assert!(stream
        .events_within(Duration::from_millis(300))
        .await
        .is_empty());
    assert_eq!(client.run_status(&session).await["state"], "failed");
    assert_eq!(fake.misdecisions().len(), 1);
    assert!(fake.misdecisions()[0].contains("already decided"));

    // A call id the run never proposed errors a run the same way.
    client
        .send(&session, "USE_TOOL create {\"path\": \"x\"}")
        .await;
    let frames = stream.events_until("waiting_for_tool_approval").await;
    let run_id = frames[0].json()["run_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    client
        .decide(
            &session,
            &run_id,
            json!({ "call_unknown": { "action": "accept" } }),
        )
        .await;
    fake.wait_for("the second misdecision", |f| f.misdecisions().len() == 2)
        .await;
    assert_eq!(client.run_status(&session).await["state"], "failed");
}

#[tokio::test]
async fn cancel_while_waiting_needs_a_decision_to_take_effect() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("tool-cancel").await;
    let mut stream = client.stream(&session, None).await;
    let run_id = client
        .send(
            &session,
            "USE_TOOL run_command {\"command\": \"echo never\"}",
        )
        .await;
    let mut frames = stream.events_until("waiting_for_tool_approval").await;
    let ids = pending_ids(&frames);
    let resp = client
        .post(
            &format!("/v1/sessions/{session}/cancel"),
            json!({ "run_id": run_id }),
        )
        .await;
    assert_eq!(resp.json(), json!({ "cancelled": true, "run_id": run_id }));
    assert!(stream
        .events_within(Duration::from_millis(300))
        .await
        .is_empty());
    assert_eq!(
        client.run_status(&session).await["state"],
        "running",
        "the server bug: the run keeps waiting"
    );
    client
        .decide(
            &session,
            &run_id,
            json!({ ids[0].clone(): { "action": "reject" } }),
        )
        .await;
    frames.extend(stream.events_until("run_completed").await);
    assert_same_shape(&frames, "tool_cancel.sse");
    assert_eq!(frames[5].payload()["result"], "TOOL_CALL_CANCELLED");
    assert_eq!(frames[5].payload()["is_error"], true);
    assert_eq!(frames[6].payload()["finish_reason"], "cancelled");
    assert_eq!(frames[7].payload()["stop_reason"], "cancelled");
    assert_eq!(
        client.run_status(&session).await,
        json!({ "state": "idle" })
    );
    assert!(fake.misdecisions().is_empty());
}
