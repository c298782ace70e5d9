//! The gateway HTTP API, over real HTTP.

use serde_json::{json, Value};
use switchboard_testkit::stakpak::FakeStakpak;

use crate::harness::{config_for, Gateway, API_TOKEN};

fn url(gw: &Gateway, path: &str) -> String {
    format!(
        "http://{}{}",
        gw.engine.api_addr().expect("the API listens"),
        path
    )
}

#[tokio::test]
async fn the_api_requires_its_token_and_a_local_host() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;
    let http = switchboard_engine::http::client();

    let missing = http
        .get(url(&gw, "/v1/gateway/status"))
        .send()
        .await
        .expect("request");
    assert_eq!(missing.status(), 401, "no token, no answer");
    let wrong = http
        .get(url(&gw, "/v1/gateway/status"))
        .bearer_auth("nope")
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status(), 401);
    let foreign = http
        .get(url(&gw, "/v1/gateway/status"))
        .bearer_auth(API_TOKEN)
        .header("Host", "evil.example:4097")
        .send()
        .await
        .expect("request");
    assert_eq!(
        foreign.status(),
        403,
        "a non-local Host is refused (DNS rebinding)"
    );
    let page = http
        .get(url(&gw, "/v1/gateway/status"))
        .bearer_auth(API_TOKEN)
        .header("Origin", "http://evil.example")
        .send()
        .await
        .expect("request");
    assert_eq!(page.status(), 403, "a web page's request is refused");

    let ok: Value = http
        .get(url(&gw, "/v1/gateway/status"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(ok["paused"], false);
    assert_eq!(ok["channels"][0]["name"], "chat");
    gw.stop().await;
}

#[tokio::test]
async fn channels_and_sessions_show_the_real_state() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;
    gw.dm("ann", "1", "hi").await;
    gw.replies("ann", 1).await;
    let http = switchboard_engine::http::client();

    let channels: Value = http
        .get(url(&gw, "/v1/gateway/channels"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let chat = &channels["channels"][0];
    assert_eq!(chat["state"], "connected");
    assert_eq!(chat["identity"]["id"], "chat-bot");
    assert_eq!(chat["received"], 1);
    assert_eq!(chat["sent"], 1);

    gw.engine
        .set_channel_enabled("chat", false)
        .expect("disable");
    let channels: Value = http
        .get(url(&gw, "/v1/gateway/channels"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(channels["channels"][0]["state"], "disabled");
    assert!(
        !gw.chat.is_running(),
        "disabling stops the channel's connection"
    );
    gw.engine.set_channel_enabled("chat", true).expect("enable");
    gw.chat
        .wait_until("the channel to come back", crate::harness::WAIT, |_| true)
        .await;

    let sessions: Value = http
        .get(url(&gw, "/v1/gateway/sessions"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(sessions["sessions"][0]["routing_key"], "chat:dm:ann");
    assert_eq!(
        sessions["sessions"][0]["session_id"],
        fake.sessions()[0].0.as_str()
    );
    gw.stop().await;
}

#[tokio::test]
async fn send_answers_with_the_upstream_status_codes() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;
    let http = switchboard_engine::http::client();
    let send = |body: Value| {
        http.post(url(&gw, "/v1/gateway/send"))
            .bearer_auth(API_TOKEN)
            .json(&body)
            .send()
    };

    let ok = send(json!({"channel":"chat","target":"ann","text":"build finished"}))
        .await
        .expect("request");
    assert_eq!(ok.status(), 200);
    assert_eq!(
        gw.chat.sent_to("ann"),
        vec!["build finished"],
        "the notification reached the chat"
    );

    let unknown = send(json!({"channel":"fax","target":"ann","text":"x"}))
        .await
        .expect("request");
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        unknown.json::<Value>().await.expect("json")["code"],
        "channel_not_found"
    );

    let bad_target = send(json!({"channel":"chat","target":"","text":"x"}))
        .await
        .expect("request");
    assert_eq!(bad_target.status(), 400);
    assert_eq!(
        bad_target.json::<Value>().await.expect("json")["code"],
        "invalid_target"
    );

    gw.chat.fail_next_sends(1);
    let failed = send(json!({"channel":"chat","target":"ann","text":"x"}))
        .await
        .expect("request");
    assert_eq!(failed.status(), 502);
    assert_eq!(
        failed.json::<Value>().await.expect("json")["code"],
        "delivery_failed"
    );

    let malformed = http
        .post(url(&gw, "/v1/gateway/send"))
        .bearer_auth(API_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(malformed.status(), 400);
    assert_eq!(
        malformed.json::<Value>().await.expect("json")["code"],
        "invalid_json"
    );

    let huge = send(json!({"channel":"chat","target":"ann","text": "x".repeat(2 * 1024 * 1024)}))
        .await
        .expect("request");
    assert_eq!(huge.status(), 413, "an oversized body is refused");

    let unauthenticated = http
        .post(url(&gw, "/v1/gateway/send"))
        .json(&json!({"channel":"chat","target":"ann","text":"x"}))
        .send()
        .await
        .expect("request");
    assert_eq!(unauthenticated.status(), 401);
    gw.stop().await;
}

#[tokio::test]
async fn a_generated_api_token_is_saved_to_the_config_file() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!("# my settings\n[server]\nurl = \"{}\"\n", fake.url()),
    )
    .expect("write");
    let mut config = switchboard_engine::config::Config::load(&path).expect("load");
    config.api.listen = "127.0.0.1:0".into();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let engine = switchboard_engine::Engine::builder(config, dir.path().join("data"))
        .config_path(&path)
        .start(shutdown.clone())
        .await
        .expect("start");
    switchboard_engine::api::start(&engine, shutdown.clone()).await;
    let token = engine.config().api.token.clone();
    assert!(token.len() >= 20, "a strong token was generated");
    let saved = switchboard_engine::config::Config::load(&path).expect("reload");
    assert_eq!(
        saved.api.token, token,
        "the token is in the file for scripts to read"
    );
    assert!(
        std::fs::read_to_string(&path)
            .expect("read")
            .contains("# my settings"),
        "the user's comments survive"
    );
    shutdown.cancel();
    engine.stopped().await;
}
