//! Runs: conflicts, failures, silent ends, scripted replies, follow-ups, cancel, foreign runs.

use std::time::Duration;

use serde_json::json;
use switchboard_testkit::stakpak::FakeStakpak;

use crate::support::{assert_same_shape, names, Client};

#[tokio::test]
async fn a_second_message_while_a_run_is_active_gets_409() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("conflict").await;
    let run_id = client.send(&session, "SLOW 1 take your time").await;

    let path = format!("/v1/sessions/{session}/messages");
    let busy = client
        .post(
            &path,
            json!({ "message": { "role": "user", "content": "second" } }),
        )
        .await;
    assert_eq!(busy.status, 409);
    assert_eq!(busy.code(), "session_already_running");
    let request_id = busy.json()["request_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        request_id.starts_with("req_") && request_id.len() == 36,
        "errors carry req_<hex>: {request_id}"
    );
    assert_eq!(
        client.run_status(&session).await,
        json!({ "state": "running", "run_id": run_id })
    );
    let mismatch = client
        .post(
            &path,
            json!({ "message": { "role": "user", "content": "x" }, "run_id": "00000000-0000-0000-0000-000000000000" }),
        )
        .await;
    assert_eq!(mismatch.status, 409);
    assert_eq!(mismatch.code(), "run_mismatch");

    fake.wait_for("the slow run to end", |f| {
        f.run_state(&session).as_deref() == Some("idle")
    })
    .await;
    client.send(&session, "now it is free").await;
    assert_eq!(fake.runs_started(), 2, "409s start no run");
}

#[tokio::test]
async fn fail_500_retries_twice_then_errors_and_the_next_message_works() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("llm 500").await;
    let mut stream = client.stream(&session, None).await;
    client.send(&session, "FAIL_500 please").await;
    let frames = stream.events_until("run_error").await;
    assert_same_shape(&frames, "llm_500.sse");
    assert_eq!(frames[2].payload()["delay_ms"], 2000);
    assert_eq!(frames[3].payload()["delay_ms"], 4000);
    assert_eq!(frames[3].payload()["attempt"], 2);
    assert_eq!(frames[4].payload()["retryable"], false);
    assert!(
        stream
            .events_within(Duration::from_millis(200))
            .await
            .is_empty(),
        "no run_completed after run_error"
    );
    assert_eq!(
        client.run_status(&session).await,
        json!({ "state": "failed" })
    );
    let roles: Vec<_> = client.messages(&session, "").await["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["role"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        roles,
        vec!["system", "user"],
        "no assistant message for a failed run"
    );

    client.send(&session, "after failure").await;
    let next = stream.events_until("run_completed").await;
    assert_eq!(next[2].payload()["delta"], "echo: after failure");
}

#[tokio::test]
async fn fail_500_once_recovers_after_one_retry() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("once").await;
    let mut stream = client.stream(&session, None).await;
    client.send(&session, "FAIL_500_ONCE then succeed").await;
    let frames = stream.events_until("run_completed").await;
    assert_eq!(
        names(&frames),
        vec![
            "run_started",
            "turn_started",
            "retry_attempt",
            "text_delta",
            "text_complete",
            "usage_report",
            "turn_completed",
            "run_completed"
        ]
    );
}

#[tokio::test]
async fn silent_end_stops_without_a_terminal_event_but_stores_the_reply() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("silent").await;
    let mut stream = client.stream(&session, None).await;
    client.send(&session, "SILENT_END hello").await;
    let frames = stream.events_within(Duration::from_millis(400)).await;
    assert_eq!(names(&frames), vec!["run_started", "turn_started"]);
    assert_eq!(
        client.run_status(&session).await,
        json!({ "state": "idle" })
    );
    let last = client.messages(&session, "?offset=2&limit=1").await;
    assert_eq!(
        last["messages"][0],
        json!({ "role": "assistant", "content": [{ "type": "text", "text": "echo: SILENT_END hello" }] })
    );
}

#[tokio::test]
async fn empty_reply_completes_without_text_but_stores_a_fallback() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("empty").await;
    let mut stream = client.stream(&session, None).await;
    client.send(&session, "EMPTY_REPLY x").await;
    let frames = stream.events_until("run_completed").await;
    assert_eq!(
        names(&frames),
        vec![
            "run_started",
            "turn_started",
            "usage_report",
            "turn_completed",
            "run_completed"
        ]
    );
    let messages = fake.messages(&session).expect("session");
    assert_eq!(
        messages.last().expect("a reply")["content"][0]["text"],
        "fallback: EMPTY_REPLY x"
    );
}

#[tokio::test]
async fn long_reply_is_one_delta_of_paragraphs() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("long").await;
    let mut stream = client.stream(&session, None).await;
    client.send(&session, "LONG_REPLY 3").await;
    let frames = stream.events_until("run_completed").await;
    let deltas: Vec<_> = frames.iter().filter(|f| f.name() == "text_delta").collect();
    assert_eq!(
        deltas.len(),
        1,
        "a non-streaming model sends the whole text at once"
    );
    let text = deltas[0].payload()["delta"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let paragraphs: Vec<_> = text.split("\n\nParagraph").collect();
    assert_eq!(paragraphs.len(), 3);
    assert!(
        (700..=1000).contains(&text.chars().count()),
        "{} chars",
        text.chars().count()
    );

    client.send(&session, "LONG_REPLY").await;
    let frames = stream.events_until("run_completed").await;
    let text = frames[2].payload()["delta"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        text.matches("Paragraph ").count(),
        6,
        "the default is 6 paragraphs"
    );
}

#[tokio::test]
async fn hold_waits_for_release_and_an_early_release_counts() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("hold").await;
    let mut stream = client.stream(&session, None).await;
    client.send(&session, "HOLD gate-a wait").await;
    let frames = stream.events_within(Duration::from_millis(300)).await;
    assert_eq!(names(&frames), vec!["run_started", "turn_started"], "held");
    fake.release("gate-a");
    let rest = stream.events_until("run_completed").await;
    assert_eq!(rest[0].payload()["delta"], "echo: HOLD gate-a wait");

    fake.release("gate-b");
    client.send(&session, "HOLD gate-b already open").await;
    let frames = stream.events_until("run_completed").await;
    assert_eq!(
        frames.len(),
        7,
        "a gate released before the run reached it does not hold"
    );
}

#[tokio::test]
async fn a_follow_up_is_answered_in_a_second_turn_of_the_same_run() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("follow up").await;
    let mut stream = client.stream(&session, None).await;
    let run_id = client.send(&session, "SLOW 0.8 first prompt").await;
    let path = format!("/v1/sessions/{session}/messages");
    let follow = client
        .post(
            &path,
            json!({ "message": { "role": "user", "content": "queued follow up" }, "type": "follow_up", "run_id": run_id }),
        )
        .await;
    assert_eq!(follow.status, 200);
    assert_eq!(follow.json(), json!({ "run_id": run_id }));
    let frames = stream.events_until("run_completed").await;
    assert_same_shape(&frames, "follow_up.sse");
    assert_eq!(frames[7].payload()["delta"], "echo: queued follow up");
    assert_eq!(frames[11].payload()["total_turns"], 2);

    let steer = client
        .post(
            &path,
            json!({ "message": { "role": "user", "content": "steer" }, "type": "steering" }),
        )
        .await;
    assert_eq!(steer.status, 409);
    assert_eq!(steer.code(), "run_mismatch", "steering needs the run id");
    let posted = fake.posted_messages();
    assert_eq!(posted.len(), 2);
    assert_eq!(posted[1].kind, "follow_up");
}

#[tokio::test]
async fn cancel_during_inference_lets_the_turn_finish() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("cancel").await;
    let path = format!("/v1/sessions/{session}/cancel");
    let idle = client
        .post(
            &path,
            json!({ "run_id": "00000000-0000-0000-0000-000000000000" }),
        )
        .await;
    assert_eq!(idle.status, 409);
    assert_eq!(idle.code(), "session_not_running");

    let mut stream = client.stream(&session, None).await;
    let run_id = client.send(&session, "SLOW 1 think").await;
    let resp = client.post(&path, json!({ "run_id": run_id })).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json(), json!({ "cancelled": true, "run_id": run_id }));
    let frames = stream.events_until("run_completed").await;
    assert_eq!(
        frames.last().expect("frames").payload()["stop_reason"],
        "completed",
        "the in-flight inference is not aborted"
    );
}

#[tokio::test]
async fn a_foreign_run_gives_409_until_it_ends_normally() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("elsewhere").await;
    let mut stream = client.stream(&session, None).await;
    fake.start_foreign_run(&session, 1.0).await;
    let resp = client
        .post(
            &format!("/v1/sessions/{session}/messages"),
            json!({ "message": { "role": "user", "content": "mine" } }),
        )
        .await;
    assert_eq!(resp.status, 409);
    assert_eq!(resp.code(), "session_already_running");
    let frames = stream.events_until("run_completed").await;
    assert_eq!(
        frames.last().expect("frames").payload()["stop_reason"],
        "completed"
    );
    fake.wait_for("idle", |f| f.run_state(&session).as_deref() == Some("idle"))
        .await;
    client.send(&session, "mine").await;
    assert_eq!(fake.runs_started(), 1, "the foreign run is not counted");
}

#[tokio::test]
async fn messages_offset_counts_from_the_oldest() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("paging").await;
    let mut stream = client.stream(&session, None).await;
    client.send(&session, "first").await;
    stream.events_until("run_completed").await;
    client.send(&session, "second").await;
    stream.events_until("run_completed").await;

    let all = client.messages(&session, "").await;
    assert_eq!(all["total"], 5);
    let roles: Vec<_> = all["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["role"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        roles,
        vec!["system", "user", "assistant", "user", "assistant"]
    );
    assert_eq!(
        all["messages"][3],
        json!({ "role": "user", "content": "second" })
    );

    let latest = client.messages(&session, "?limit=1&offset=4").await;
    assert_eq!(latest["total"], 5);
    assert_eq!(
        latest["messages"],
        json!([{ "role": "assistant", "content": [{ "type": "text", "text": "echo: second" }] }]),
        "offset = total - limit is the latest message"
    );
    let oldest = client.messages(&session, "?limit=2").await;
    assert_eq!(oldest["messages"][0]["role"], "system");
    assert_eq!(
        oldest["messages"][1],
        json!({ "role": "user", "content": "first" })
    );
    let past = client.messages(&session, "?offset=9").await;
    assert_eq!(past["messages"], json!([]));
    assert_eq!(past["total"], 5);
}

#[tokio::test]
async fn context_and_overrides_are_accepted_and_recorded() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("context").await;
    let path = format!("/v1/sessions/{session}/messages");
    let resp = client
        .post(
            &path,
            json!({
                "message": { "role": "user", "content": "with context" },
                "type": "message", "run_id": null, "model": null, "sandbox": null,
                "context": [{ "name": "watch", "content": "disk 91%", "priority": "high" }],
                "overrides": { "auto_approve": ["run_command"], "max_turns": 8 },
            }),
        )
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let posted = fake.posted_messages();
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].context[0].name, "watch");
    assert_eq!(posted[0].context[0].content, "disk 91%");
    assert_eq!(
        posted[0].overrides,
        Some(json!({ "auto_approve": ["run_command"], "max_turns": 8 }))
    );
    assert!(!posted[0].replayed);

    let too_many: Vec<_> = (0..33)
        .map(|i| json!({ "name": format!("c{i}"), "content": "x" }))
        .collect();
    fake.wait_for("idle", |f| f.run_state(&session).as_deref() == Some("idle"))
        .await;
    let resp = client
        .post(
            &path,
            json!({ "message": { "role": "user", "content": "x" }, "context": too_many }),
        )
        .await;
    assert_eq!(resp.status, 400, "more than 32 context items is refused");
}

#[tokio::test]
async fn a_deleted_session_is_gone_and_its_run_stops() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let a = client.create_session("deleted by the user").await;
    let b = client.create_session("deleted over http").await;
    client.send(&a, "HOLD never-released").await;
    fake.delete_session(&a);
    assert_eq!(client.get(&format!("/v1/sessions/{a}")).await.status, 404);
    let resp = client
        .post(
            &format!("/v1/sessions/{a}/messages"),
            json!({ "message": { "role": "user", "content": "x" } }),
        )
        .await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.code(), "not_found");

    assert_eq!(
        client.delete(&format!("/v1/sessions/{b}")).await.status,
        204
    );
    assert_eq!(
        client.delete(&format!("/v1/sessions/{b}")).await.status,
        404
    );
    assert!(fake.sessions().is_empty());
}
