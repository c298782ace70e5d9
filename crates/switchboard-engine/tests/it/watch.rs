//! Watch notifications: `/send` with a context, and the reply that continues it.

use serde_json::json;
use switchboard_engine::watch::WatchContext;
use switchboard_engine::EngineEvent;
use switchboard_testkit::stakpak::FakeStakpak;

use crate::harness::{config_for, Gateway, API_TOKEN};

#[tokio::test]
async fn a_watch_context_is_consumed_by_the_next_message_only() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::start(config_for(&fake), dir.path()).await;
    let http = switchboard_engine::http::client();

    let response = http
        .post(format!("http://{}/v1/gateway/send", gw.engine.api_addr().expect("api")))
        .bearer_auth(API_TOKEN)
        .json(&json!({
            "channel": "chat",
            "target": "ann",
            "text": "Disk check failed on web-1",
            "context": {"trigger": "disk-check", "status": "failed", "summary": "disk 95% full", "check_output": "/dev/sda1 95%"}
        }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let delivered = gw
        .event("the notification event", |e| match e {
            EngineEvent::WatchNotificationDelivered { context, text, .. } => {
                Some((context.clone(), text.clone()))
            }
            _ => None,
        })
        .await;
    assert_eq!(delivered.1, "Disk check failed on web-1");
    assert_eq!(
        delivered.0.and_then(|c| c.summary),
        Some("disk 95% full".into())
    );

    gw.dm("ann", "1", "clean it up").await;
    let watch_reply = gw
        .event("the watch reply event", |e| match e {
            EngineEvent::WatchReplyDelivered { text, .. } => Some(text.clone()),
            _ => None,
        })
        .await;
    gw.dm("ann", "2", "thanks").await;
    gw.replies("ann", 3).await;

    let posted = fake.posted_messages();
    let first = &posted[0].text;
    for part in [
        "disk-check",
        "failed",
        "disk 95% full",
        "/dev/sda1 95%",
        "clean it up",
    ] {
        assert!(first.contains(part), "the agent sees {part:?} in {first:?}");
    }
    assert!(
        first.find("disk 95% full") < first.find("clean it up"),
        "the context comes before the user's words"
    );
    assert!(watch_reply.starts_with("echo: "), "{watch_reply}");
    assert_eq!(posted[1].text, "thanks", "the context is used once");
    gw.stop().await;
}

#[tokio::test]
async fn a_watch_context_expires_after_its_ttl() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;
    let now = switchboard_engine::model::now_ms();
    let context = WatchContext {
        summary: Some("stale".into()),
        ..Default::default()
    };
    // Filed the way `/send` files it, with a lifetime that has already run out.
    gw.engine
        .store()
        .store_context("chat", "ann", &context, "old news", now - 10_000, now - 1)
        .expect("store");

    gw.dm("ann", "1", "hello").await;
    gw.replies("ann", 1).await;

    assert_eq!(
        fake.posted_messages()[0].text,
        "hello",
        "an expired context is not used"
    );
    gw.stop().await;
}
