//! Auth, errors, sessions, idempotency and the request log.

use serde_json::json;
use switchboard_testkit::stakpak::{FakeOptions, FakeStakpak, RecordedBody};

use crate::support::Client;

#[tokio::test]
async fn everything_but_health_needs_the_bearer_token() {
    let fake = FakeStakpak::start().await;
    assert!(fake.token().is_some(), "start() sets a random token");
    let anonymous = Client::with_token(&fake, None);
    let wrong = Client::with_token(&fake, Some("nope".into()));
    let unauthorized = json!({ "error": "Unauthorized", "code": "unauthorized" });
    for client in [&anonymous, &wrong] {
        let resp = client.get("/v1/sessions").await;
        assert_eq!(resp.status, 401);
        assert_eq!(resp.json(), unauthorized);
        let resp = client
            .get("/v1/sessions/00000000-0000-0000-0000-000000000000/events")
            .await;
        assert_eq!(resp.status, 401, "the event stream needs the token too");
        assert_eq!(
            resp.text,
            r#"{"error":"Unauthorized","code":"unauthorized"}"#
        );
    }
    let health = anonymous.get("/v1/health").await;
    assert_eq!(health.status, 200, "health is public");
    let health = health.json();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], "0.3.88-fake");
    assert!(health["uptime_seconds"].is_u64());

    fake.set_token(None);
    assert_eq!(
        anonymous.get("/v1/sessions").await.status,
        200,
        "no token, no auth"
    );
    fake.set_token(Some("new".into()));
    assert_eq!(Client::new(&fake).get("/v1/sessions").await.status, 200);
    assert_eq!(anonymous.get("/v1/sessions").await.status, 401);
}

#[tokio::test]
async fn a_fake_without_a_token_serves_anyone() {
    let fake = FakeStakpak::start_with(FakeOptions {
        token: None,
        ..FakeOptions::default()
    })
    .await;
    let client = Client::with_token(&fake, None);
    let session = client.create_session("open").await;
    assert_eq!(
        client.get(&format!("/v1/sessions/{session}")).await.status,
        200
    );
}

#[tokio::test]
async fn errors_have_the_contract_shapes() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("errors").await;

    let missing = client
        .get("/v1/sessions/00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(missing.status, 404);
    let body = missing.json();
    assert_eq!(body["code"], "not_found");
    assert_eq!(
        body["error"],
        "Session 00000000-0000-0000-0000-000000000000 not found"
    );

    let bad_uuid = client.get("/v1/sessions/not-a-uuid").await;
    assert_eq!(bad_uuid.status, 400);
    assert!(bad_uuid.content_type.starts_with("text/plain"));
    assert!(bad_uuid
        .text
        .starts_with("Invalid URL: Cannot parse `id` with value `not-a-uuid`"));

    let messages = format!("/v1/sessions/{session}/messages");
    let role = client
        .post(
            &messages,
            json!({ "message": { "role": "assistant", "content": "x" } }),
        )
        .await;
    assert_eq!(role.status, 400);
    assert_eq!(role.code(), "invalid_message_role");

    let missing_field = client.post(&messages, json!({ "nope": 1 })).await;
    assert_eq!(missing_field.status, 422);
    assert!(missing_field.content_type.starts_with("text/plain"));
    assert!(
        missing_field.text.contains("missing field `message`"),
        "{}",
        missing_field.text
    );
    let not_json = client.post_raw(&messages, "{not json").await;
    assert_eq!(not_json.status, 422);
    assert!(not_json.content_type.starts_with("text/plain"));

    let pending = client
        .get(&format!("/v1/sessions/{session}/tools/pending"))
        .await;
    assert_eq!(pending.json(), json!({ "run_id": null, "tool_calls": [] }));
    assert_eq!(fake.runs_started(), 0, "no error started a run");
}

#[tokio::test]
async fn sessions_are_listed_newest_first_and_carry_their_config() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let a = client.create_session("a").await;
    let created = client
        .post("/v1/sessions", json!({ "title": "b", "cwd": "/work" }))
        .await
        .json();
    let b = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["cwd"], "/work");
    assert_eq!(created["run_status"], json!({ "state": "idle" }));
    assert_eq!(created["created_at"], created["updated_at"]);

    let list = client.get("/v1/sessions").await.json();
    assert_eq!(list["total"], 2);
    assert_eq!(list["sessions"][0]["id"], json!(b));
    assert_eq!(list["sessions"][1]["id"], json!(a));
    let page = client.get("/v1/sessions?limit=1").await.json();
    assert_eq!(page["sessions"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["total"], 2);

    let one = client.get(&format!("/v1/sessions/{a}")).await.json();
    assert_eq!(one["session"]["title"], "a");
    assert_eq!(
        one["config"],
        json!({ "default_model": "fake/fake-model", "auto_approve_mode": "custom" })
    );
    assert_eq!(
        fake.sessions(),
        vec![(a, "a".to_string()), (b, "b".to_string())],
        "sessions() lists oldest first"
    );
}

#[tokio::test]
async fn an_idempotency_key_replays_the_same_body_and_refuses_another() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let first = client
        .post_idem("/v1/sessions", "key-1", json!({ "title": "idem" }))
        .await;
    let again = client
        .post_idem("/v1/sessions", "key-1", json!({ "title": "idem" }))
        .await;
    assert_eq!((first.status, again.status), (201, 201));
    assert_eq!(first.json(), again.json(), "the stored answer is replayed");
    assert_eq!(fake.sessions().len(), 1, "the replay creates nothing");
    let other = client
        .post_idem(
            "/v1/sessions",
            "key-1",
            json!({ "title": "idem-different" }),
        )
        .await;
    assert_eq!(other.status, 409);
    assert_eq!(other.code(), "idempotency_key_reused");

    let session = first.json()["id"].as_str().expect("id").to_string();
    let path = format!("/v1/sessions/{session}/messages");
    let body = json!({ "message": { "role": "user", "content": "once" } });
    let sent = client.post_idem(&path, "msg-1", body.clone()).await;
    let resent = client.post_idem(&path, "msg-1", body).await;
    assert_eq!(sent.status, 200);
    assert_eq!(resent.status, 200);
    assert_eq!(sent.json()["run_id"], resent.json()["run_id"]);
    assert_eq!(
        fake.runs_started(),
        1,
        "a replayed message starts no second run"
    );
    let posted = fake.posted_messages();
    assert_eq!(posted.len(), 2);
    assert!(!posted[0].replayed);
    assert!(posted[1].replayed);
    assert_eq!(posted[1].idempotency_key.as_deref(), Some("msg-1"));
    assert_eq!(posted[1].run_id, posted[0].run_id);
    let reused = client
        .post_idem(
            &path,
            "msg-1",
            json!({ "message": { "role": "user", "content": "other" } }),
        )
        .await;
    assert_eq!(reused.code(), "idempotency_key_reused");
}

#[tokio::test]
async fn every_request_is_recorded() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    client
        .post_idem("/v1/sessions", "k", json!({ "title": "recorded" }))
        .await;
    client.get("/v1/sessions?limit=5").await;
    Client::with_token(&fake, None).get("/v1/sessions").await;
    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/v1/sessions");
    assert_eq!(requests[0].status, 201);
    assert_eq!(requests[0].header("Idempotency-Key"), Some("k"));
    assert_eq!(
        requests[0].header("authorization"),
        Some(format!("Bearer {}", fake.token().unwrap_or_default()).as_str())
    );
    assert_eq!(
        requests[0].body,
        RecordedBody::Json(json!({ "title": "recorded" }))
    );
    assert_eq!(requests[1].path, "/v1/sessions?limit=5");
    assert_eq!(requests[1].body, RecordedBody::Empty);
    assert_eq!(requests[2].status, 401);
}
