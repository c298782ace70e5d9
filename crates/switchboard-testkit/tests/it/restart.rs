//! A restart of the server: cut streams, fresh ids, kept sessions, forgotten idempotency records.

use std::time::Duration;

use serde_json::json;
use switchboard_testkit::stakpak::{FakeOptions, FakeStakpak};

use crate::support::{ids, Client};

#[tokio::test]
async fn a_restart_cuts_streams_resets_ids_and_keeps_sessions() {
    let fake = FakeStakpak::start().await;
    let url = fake.url();
    let client = Client::new(&fake);
    let session = client.create_session("restart").await;
    let mut stream = client.stream(&session, None).await;
    client
        .post_idem(
            &format!("/v1/sessions/{session}/messages"),
            "same-key",
            json!({ "message": { "role": "user", "content": "before restart" } }),
        )
        .await;
    let before = stream.events_until("run_completed").await;
    assert_eq!(ids(&before), (1..=7).collect::<Vec<_>>());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let uptime_before = client.get("/v1/health").await.json()["uptime_seconds"].clone();
    assert!(uptime_before.as_u64() >= Some(1));

    fake.restart().await;
    assert!(
        stream.expect_end(Duration::from_secs(2)).await.is_empty(),
        "the open stream is cut without a closing event"
    );
    assert_eq!(fake.url(), url, "same port");
    assert_eq!(
        client.get("/v1/health").await.json()["uptime_seconds"],
        0,
        "uptime restarts"
    );
    let messages = client.messages(&session, "").await;
    assert_eq!(messages["total"], 3, "sessions and messages survive");
    assert_eq!(
        client.run_status(&session).await,
        json!({ "state": "idle" })
    );
    assert!(fake.events(&session).is_empty(), "the ring is empty");

    // A client that resumes with its old cursor gets no replay, then fresh ids from 1.
    let mut resumed = client.stream(&session, Some(7)).await;
    let resp = client
        .post_idem(
            &format!("/v1/sessions/{session}/messages"),
            "same-key",
            json!({ "message": { "role": "user", "content": "before restart" } }),
        )
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        fake.runs_started(),
        2,
        "the idempotency record was forgotten"
    );
    let after = resumed.events_until("run_completed").await;
    assert_eq!(ids(&after), (1..=7).collect::<Vec<_>>(), "ids restart at 1");
}

#[tokio::test]
async fn a_restart_drops_active_runs() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("held").await;
    client.send(&session, "HOLD restart-gate").await;
    fake.wait_for("the run to be running", |f| {
        f.run_state(&session).as_deref() == Some("running")
    })
    .await;
    fake.restart().await;
    assert_eq!(
        client.run_status(&session).await,
        json!({ "state": "idle" })
    );
    let mut stream = client.stream(&session, Some(0)).await;
    fake.release("restart-gate");
    assert!(
        stream
            .events_within(Duration::from_millis(300))
            .await
            .is_empty(),
        "the dropped run never writes again"
    );
    client.send(&session, "new run").await;
    let frames = stream.events_until("run_completed").await;
    assert_eq!(ids(&frames), (1..=7).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_restart_can_rotate_the_token() {
    let fake = FakeStakpak::start_with(FakeOptions {
        rotate_token_on_restart: true,
        ..FakeOptions::default()
    })
    .await;
    let old = Client::new(&fake);
    let session = old.create_session("rotate").await;
    let old_token = fake.token();
    fake.restart().await;
    assert_ne!(fake.token(), old_token, "the token changed");
    let resp = old.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(resp.status, 401, "the old token is refused");
    assert_eq!(resp.code(), "unauthorized");
    let new = Client::new(&fake);
    assert_eq!(
        new.get(&format!("/v1/sessions/{session}")).await.status,
        200
    );
}
