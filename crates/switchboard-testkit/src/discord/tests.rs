//! The fake against a bare client: the wire shapes a bot relies on.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::*;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const USER: &str = "900000000000000001";

async fn open(url: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("{url}/?v=10&encoding=json"))
        .await
        .expect("the gateway accepts the connection");
    ws
}

/// The next gateway payload, or the close code when the server closed.
async fn next(ws: &mut Ws) -> Result<Value, Option<u16>> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s");
        match message {
            Some(Ok(WsMessage::Text(text))) => {
                return Ok(serde_json::from_str(text.as_str()).expect("JSON payload"))
            }
            Some(Ok(WsMessage::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                eprintln!("gateway read error: {e}");
                return Err(None);
            }
            None => return Err(None),
        }
    }
}

async fn send(ws: &mut Ws, value: Value) {
    ws.send(WsMessage::text(value.to_string()))
        .await
        .expect("send");
}

async fn identify(fake: &FakeDiscord) -> (Ws, String) {
    let mut ws = open(&fake.gateway_url()).await;
    let hello = next(&mut ws).await.expect("hello");
    assert_eq!(hello["op"], 10);
    assert_eq!(hello["d"]["heartbeat_interval"], 1000);
    send(
        &mut ws,
        json!({"op": 2, "d": {"token": fake.token(), "intents": 37377,
            "properties": {"os": "linux", "browser": "t", "device": "t"}}}),
    )
    .await;
    let ready = next(&mut ws).await.expect("ready");
    assert_eq!(
        (ready["op"].clone(), ready["t"].clone(), ready["s"].clone()),
        (json!(0), json!("READY"), json!(1))
    );
    assert_eq!(ready["d"]["user"]["id"], json!(fake.bot_id()));
    let resume_url = ready["d"]["resume_gateway_url"]
        .as_str()
        .expect("resume url")
        .to_owned();
    assert!(resume_url.ends_with("/resume"), "{resume_url}");
    let session = ready["d"]["session_id"]
        .as_str()
        .expect("session")
        .to_owned();
    (ws, session)
}

fn http() -> reqwest::Client {
    crate::test_http()
}

#[tokio::test]
async fn rest_checks_the_token_and_points_at_the_gateway() {
    let fake = FakeDiscord::start().await;
    let me = http()
        .get(format!("{}/users/@me", fake.api_base()))
        .header("Authorization", format!("Bot {}", fake.token()))
        .header("User-Agent", "DiscordBot (https://example.com, 1)")
        .send()
        .await
        .expect("GET /users/@me");
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.expect("json");
    assert_eq!(me["id"], json!(fake.bot_id()));
    assert_eq!(me["bot"], true);

    let refused = http()
        .get(format!("{}/users/@me", fake.api_base()))
        .header("Authorization", "Bot wrong")
        .send()
        .await
        .expect("GET");
    assert_eq!(refused.status(), 401);
    assert_eq!(
        refused.json::<Value>().await.expect("json")["message"],
        "401: Unauthorized"
    );

    fake.fail_next(
        "GET",
        "/gateway/bot",
        Failure::Slow(Duration::from_millis(50)),
        1,
    );
    fake.fail_next("GET", "/gateway/bot", Failure::Status(502), 1);
    let failed = http()
        .get(format!("{}/gateway/bot", fake.api_base()))
        .header("Authorization", format!("Bot {}", fake.token()))
        .send()
        .await
        .expect("GET /gateway/bot");
    assert_eq!(failed.status(), 200, "a slow answer is still an answer");
    let failed = http()
        .get(format!("{}/gateway/bot", fake.api_base()))
        .header("Authorization", format!("Bot {}", fake.token()))
        .send()
        .await
        .expect("GET /gateway/bot");
    assert_eq!(failed.status(), 502);
    let gateway: Value = http()
        .get(format!("{}/gateway/bot", fake.api_base()))
        .header("Authorization", format!("Bot {}", fake.token()))
        .send()
        .await
        .expect("GET /gateway/bot")
        .json()
        .await
        .expect("json");
    assert_eq!(gateway["url"], json!(fake.gateway_url()));
    assert!(gateway["url"]
        .as_str()
        .is_some_and(|u| u.starts_with("ws://127.0.0.1:")));
    let requests = fake.requests();
    assert_eq!(requests.len(), 5);
    assert_eq!(requests[0].path, "/users/@me");
    assert_eq!(
        requests[0].header("user-agent"),
        Some("DiscordBot (https://example.com, 1)")
    );
    assert_eq!(requests[1].status, 401);
}

#[tokio::test]
async fn dispatches_are_numbered_and_replayed_on_resume() {
    let fake = FakeDiscord::start().await;
    let (mut ws, session) = identify(&fake).await;
    assert!(fake.is_connected());

    let first = fake.send_dm(USER, "hello");
    let event = next(&mut ws).await.expect("MESSAGE_CREATE");
    assert_eq!(
        (event["t"].clone(), event["s"].clone()),
        (json!("MESSAGE_CREATE"), json!(2))
    );
    assert_eq!(event["d"]["id"], json!(first));
    assert_eq!(event["d"]["channel_type"], 1);
    assert_eq!(event["d"]["author"]["id"], USER);
    assert!(event["d"].get("guild_id").is_none(), "DMs have no guild");

    send(&mut ws, json!({"op": 1, "d": 2})).await;
    assert_eq!(next(&mut ws).await.expect("ack")["op"], 11);
    assert_eq!(fake.heartbeats().last().and_then(|h| h.seq), Some(2));

    // The bot goes away without a word; a message arrives meanwhile.
    drop(ws);
    fake.wait_for("the connection to close", |f| f.open_connections() == 0)
        .await;
    let missed = fake.send_guild("1100", "1200", USER, "while away", true);

    let mut ws = open(&format!("ws://127.0.0.1:{}/resume", fake.inner.shared.port)).await;
    assert_eq!(next(&mut ws).await.expect("hello")["op"], 10);
    send(
        &mut ws,
        json!({"op": 6, "d": {"token": fake.token(), "session_id": session, "seq": 2}}),
    )
    .await;
    let replayed = next(&mut ws).await.expect("replay");
    assert_eq!(
        (replayed["s"].clone(), replayed["d"]["id"].clone()),
        (json!(3), json!(missed))
    );
    assert_eq!(
        replayed["d"]["content"],
        json!(format!("<@{}> while away", fake.bot_id()))
    );
    assert_eq!(replayed["d"]["mentions"][0]["id"], json!(fake.bot_id()));
    let resumed = next(&mut ws).await.expect("resumed");
    assert_eq!(
        (resumed["t"].clone(), resumed["s"].clone()),
        (json!("RESUMED"), json!(4))
    );
    let record = fake.resumes().pop().expect("a resume");
    assert!(
        record.accepted && record.replayed == 1 && record.path == "/resume",
        "{record:?}"
    );
    assert_eq!(fake.connections()[0].closed, Some(Closed::DroppedByClient));
}

#[tokio::test]
async fn identify_is_checked() {
    let fake = FakeDiscord::start().await;
    let cases = [
        (
            json!({"token": "wrong", "intents": 37377, "properties": {"os": "l", "browser": "b", "device": "d"}}),
            4004,
        ),
        (json!({"token": fake.token(), "intents": 37377}), 4002),
        (
            json!({"token": fake.token(), "intents": 1u64 << 40, "properties": {"os": "l", "browser": "b", "device": "d"}}),
            4013,
        ),
    ];
    for (d, code) in cases {
        let mut ws = open(&fake.gateway_url()).await;
        next(&mut ws).await.expect("hello");
        send(&mut ws, json!({"op": 2, "d": d})).await;
        assert_eq!(next(&mut ws).await, Err(Some(code)), "{d}");
    }
    fake.reject_identify(4014);
    let mut ws = open(&fake.gateway_url()).await;
    next(&mut ws).await.expect("hello");
    send(&mut ws, json!({"op": 2, "d": {"token": fake.token(), "intents": 37377, "properties": {"os": "l", "browser": "b", "device": "d"}}})).await;
    assert_eq!(next(&mut ws).await, Err(Some(4014)));

    let mut ws = open(&fake.gateway_url()).await;
    next(&mut ws).await.expect("hello");
    send(&mut ws, json!({"op": 3, "d": {}})).await;
    assert_eq!(
        next(&mut ws).await,
        Err(Some(4003)),
        "nothing but heartbeats before IDENTIFY"
    );
}

#[tokio::test]
async fn misbehaviour_on_cue() {
    let fake = FakeDiscord::start().await;
    let (mut ws, session) = identify(&fake).await;

    fake.send_reconnect();
    assert_eq!(next(&mut ws).await.expect("op 7")["op"], 7);

    let (mut ws, _) = identify(&fake).await;
    fake.stop_acking();
    send(&mut ws, json!({"op": 1, "d": 1})).await;
    fake.send_dm(USER, "not delivered to a zombie");
    fake.invalidate_session(true);
    let frame = next(&mut ws).await.expect("op 9");
    assert_eq!(
        (frame["op"].clone(), frame["d"].clone()),
        (json!(9), json!(true)),
        "no ACK and no dispatch came first"
    );

    fake.close_with(4004);
    assert_eq!(next(&mut ws).await, Err(Some(4004)));

    // The first session was replaced by the second identify: it cannot be resumed.
    let mut ws = open(&fake.gateway_url()).await;
    next(&mut ws).await.expect("hello");
    send(
        &mut ws,
        json!({"op": 6, "d": {"token": fake.token(), "session_id": session, "seq": 1}}),
    )
    .await;
    let frame = next(&mut ws).await.expect("op 9");
    assert_eq!(
        (frame["op"].clone(), frame["d"].clone()),
        (json!(9), json!(false))
    );

    let (mut ws, _) = identify(&fake).await;
    fake.drop_connection();
    assert_eq!(
        next(&mut ws).await,
        Err(None),
        "dropped without a close frame"
    );
    fake.wait_for("the drop to be recorded", |f| {
        f.connections().last().and_then(|c| c.closed.clone()) == Some(Closed::DroppedByServer)
    })
    .await;
}

#[tokio::test]
async fn posting_is_recorded_rate_limited_and_echoed() {
    // A long window, so the burst below meets the limit however slow the machine is.
    let fake = FakeDiscord::start_with(FakeDiscordOptions {
        bucket_window: Duration::from_secs(60),
        ..FakeDiscordOptions::default()
    })
    .await;
    let (mut ws, _) = identify(&fake).await;
    let asked = fake.send_guild("1100", "1200", USER, "hi", true);
    next(&mut ws).await.expect("the user's message");
    let client = http();
    let post_to = |channel: &str, body: Value| {
        client
            .post(format!("{}/channels/{channel}/messages", fake.api_base()))
            .header("Authorization", format!("Bot {}", fake.token()))
            .json(&body)
            .send()
    };
    let post = |body: Value| post_to("1200", body);

    fake.fail_next(
        "POST",
        "/messages",
        Failure::RateLimited {
            retry_after: 0.25,
            global: false,
        },
        1,
    );
    let limited = post(json!({"content": "x"})).await.expect("POST");
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "1");
    assert!(limited.headers().contains_key("x-ratelimit-bucket"));
    assert_eq!(limited.headers()["x-ratelimit-scope"], "user");
    let body: Value = limited.json().await.expect("json");
    assert_eq!(body["retry_after"], 0.25);
    assert_eq!(body["global"], false);

    let body = json!({"content": "Done", "allowed_mentions": {"parse": []},
        "message_reference": {"message_id": asked, "fail_if_not_exists": false}});
    let posted = post(body.clone()).await.expect("POST");
    assert_eq!(posted.status(), 200);
    assert_eq!(posted.headers()["x-ratelimit-limit"], "5");
    assert_eq!(posted.headers()["x-ratelimit-remaining"], "4");
    let echo = next(&mut ws).await.expect("the bot's own message");
    assert_eq!(echo["d"]["author"]["id"], json!(fake.bot_id()));
    assert_eq!(echo["d"]["content"], "Done");
    let recorded = fake.posted().pop().expect("recorded");
    assert_eq!(recorded.body, body);
    assert_eq!(recorded.replies_to(), Some(asked.as_str()));
    assert_eq!(recorded.allowed_mentions, Some(json!({"parse": []})));

    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            post(json!({"content": "burst"}))
                .await
                .expect("POST")
                .status()
                .as_u16(),
        );
    }
    assert_eq!(
        statuses,
        vec![200, 200, 200, 200, 429],
        "5 per window per channel"
    );
    fake.add_channel("1100", "1201");
    let cases = [
        (json!({"content": "x".repeat(2001)}), 50035),
        (json!({"content": " "}), 50006),
        (
            json!({"content": "x", "message_reference": {"message_id": "1"}}),
            50035,
        ),
    ];
    for (body, code) in cases {
        let response = post_to("1201", body).await.expect("POST");
        assert_eq!(response.status(), 400);
        assert_eq!(response.json::<Value>().await.expect("json")["code"], code);
    }
    let unknown = post_to("999", json!({"content": "x"})).await.expect("POST");
    assert_eq!(unknown.json::<Value>().await.expect("json")["code"], 10003);
}

#[tokio::test]
async fn clicks_arrive_and_callbacks_are_answered_once() {
    let fake = FakeDiscord::start().await;
    let (mut ws, _) = identify(&fake).await;
    fake.add_channel("1100", "1200");
    let interaction = fake.click("1200", "1300", USER, "approve:17");
    let event = next(&mut ws).await.expect("INTERACTION_CREATE");
    assert_eq!(event["t"], "INTERACTION_CREATE");
    assert_eq!(event["d"]["type"], 3);
    assert_eq!(event["d"]["data"]["custom_id"], "approve:17");
    assert_eq!(event["d"]["member"]["user"]["id"], USER);
    let token = event["d"]["token"].as_str().expect("token").to_owned();
    let url = format!(
        "{}/interactions/{interaction}/{token}/callback",
        fake.api_base()
    );
    let answer = json!({"type": 7, "data": {"content": "Approved by Ann", "components": []}});
    let statuses = [
        http()
            .post(&url)
            .json(&answer)
            .send()
            .await
            .expect("callback")
            .status()
            .as_u16(),
        http()
            .post(&url)
            .json(&answer)
            .send()
            .await
            .expect("callback")
            .status()
            .as_u16(),
    ];
    assert_eq!(statuses, [204, 400], "the second answer is 40060");
    let unknown = http()
        .post(format!("{}/interactions/1/nope/callback", fake.api_base()))
        .json(&answer)
        .send()
        .await
        .expect("callback");
    assert_eq!(unknown.json::<Value>().await.expect("json")["code"], 10062);
    assert_eq!(fake.interaction_callbacks()[0].body, answer);
}

/// A REST call as the bot makes it.
async fn bot_call(fake: &FakeDiscord, method: reqwest::Method, path: &str, body: Value) -> Value {
    let response = http()
        .request(method, format!("{}{path}", fake.api_base()))
        .header("Authorization", format!("Bot {}", fake.token()))
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let mut body: Value = response.json().await.unwrap_or(Value::Null);
    if body.is_object() {
        body["http_status"] = json!(status);
    } else {
        body = json!({ "http_status": status });
    }
    body
}

fn approve_reject() -> Value {
    json!([{"type": 1, "components": [
        {"type": 2, "style": 3, "label": "Approve", "custom_id": "sb:a:17"},
        {"type": 2, "style": 4, "label": "Reject", "custom_id": "sb:r:17"}]}])
}

#[tokio::test]
async fn buttons_are_checked_shown_and_clicked() {
    let fake = FakeDiscord::start_with(FakeDiscordOptions {
        bucket_limit: 100,
        ..FakeDiscordOptions::default()
    })
    .await;
    let (mut ws, _) = identify(&fake).await;
    fake.add_channel("1100", "1200");
    let post = |body: Value| {
        bot_call(
            &fake,
            reqwest::Method::POST,
            "/channels/1200/messages",
            body,
        )
    };

    let button = |custom_id: Value| {
        json!([{"type": 1, "components": [
        {"type": 2, "style": 1, "label": "x", "custom_id": custom_id}]}])
    };
    let six = json!([{"type": 1, "components": (0..6)
        .map(|i| json!({"type": 2, "style": 1, "label": "x", "custom_id": format!("b{i}")}))
        .collect::<Vec<_>>()}]);
    let twice = json!([{"type": 1, "components": [
        {"type": 2, "style": 1, "label": "x", "custom_id": "same"},
        {"type": 2, "style": 2, "label": "y", "custom_id": "same"}]}]);
    let bad = [
        button(json!("x".repeat(101))),
        button(json!("")),
        button(Value::Null),
        six,
        twice,
        json!([{"type": 2, "style": 1, "label": "x", "custom_id": "loose"}]),
    ];
    for components in bad {
        let answer = post(json!({"content": "x", "components": components.clone()})).await;
        assert_eq!(
            (answer["http_status"].clone(), answer["code"].clone()),
            (json!(400), json!(50035)),
            "{components}"
        );
    }

    let posted = post(json!({"content": "Approve?", "components": approve_reject()})).await;
    assert_eq!(posted["http_status"], 200);
    let message = posted["id"].as_str().expect("id").to_owned();
    next(&mut ws).await.expect("the bot's own message");
    let labels: Vec<String> = fake
        .buttons(&message)
        .into_iter()
        .map(|b| b.label)
        .collect();
    assert_eq!(labels, ["Approve", "Reject"]);

    // A refusal shown to the clicker alone leaves the message as it is.
    let first = fake.click_button(&message, USER, "Approve");
    let event = next(&mut ws).await.expect("INTERACTION_CREATE");
    assert_eq!(event["d"]["message"]["content"], "Approve?");
    let token = event["d"]["token"].as_str().expect("token").to_owned();
    let private = json!({"type": 4, "data": {"content": "Not you", "flags": 64}});
    let answered = http()
        .post(format!(
            "{}/interactions/{first}/{token}/callback",
            fake.api_base()
        ))
        .json(&private)
        .send()
        .await
        .expect("callback");
    assert_eq!(answered.status(), 204);
    let shown = fake.ephemerals();
    assert_eq!(
        (
            shown[0].user.as_str(),
            shown[0].content.as_str(),
            shown[0].channel.as_str()
        ),
        (USER, "Not you", "1200")
    );
    assert_eq!(fake.buttons(&message).len(), 2, "unchanged");

    // Type 7 updates the clicked message.
    let second = fake.click_button(&message, USER, "Reject");
    let event = next(&mut ws).await.expect("INTERACTION_CREATE");
    let token = event["d"]["token"].as_str().expect("token").to_owned();
    let update = json!({"type": 7, "data": {"content": "Rejected", "components": []}});
    let answered = http()
        .post(format!(
            "{}/interactions/{second}/{token}/callback",
            fake.api_base()
        ))
        .json(&update)
        .send()
        .await
        .expect("callback");
    assert_eq!(answered.status(), 204);
    let now = fake.message(&message).expect("message");
    assert_eq!(now["content"], "Rejected");
    assert!(fake.buttons(&message).is_empty());
    assert!(!now["edited_timestamp"].is_null());
    let fetched = bot_call(
        &fake,
        reqwest::Method::GET,
        &format!("/channels/1200/messages/{message}"),
        Value::Null,
    )
    .await;
    assert_eq!(fetched["content"], "Rejected");
    let elsewhere = bot_call(
        &fake,
        reqwest::Method::GET,
        &format!("/channels/1201/messages/{message}"),
        Value::Null,
    )
    .await;
    assert_eq!(elsewhere["code"], 10008);
}

#[tokio::test]
async fn late_answers_are_unknown_and_follow_ups_need_an_answer_first() {
    let fake = FakeDiscord::start_with(FakeDiscordOptions {
        interaction_deadline: Duration::ZERO,
        ..FakeDiscordOptions::default()
    })
    .await;
    let (mut ws, _) = identify(&fake).await;
    fake.add_channel("1100", "1200");
    let late = fake.click("1200", "1300", USER, "sb:a:1");
    let event = next(&mut ws).await.expect("INTERACTION_CREATE");
    let token = event["d"]["token"].as_str().expect("token").to_owned();
    let answered = http()
        .post(format!(
            "{}/interactions/{late}/{token}/callback",
            fake.api_base()
        ))
        .json(&json!({"type": 6}))
        .send()
        .await
        .expect("callback");
    assert_eq!(answered.status(), 404);
    assert_eq!(
        answered.json::<Value>().await.expect("json")["code"],
        10062,
        "an answer after the deadline is too late"
    );
    let app = fake.bot_id();
    let follow = http()
        .post(format!("{}/webhooks/{app}/{token}", fake.api_base()))
        .json(&json!({"content": "hm", "flags": 64}))
        .send()
        .await
        .expect("follow-up");
    assert_eq!(
        follow.json::<Value>().await.expect("json")["code"],
        10015,
        "no follow-up to an interaction that was never answered"
    );
}

#[tokio::test]
async fn a_deferred_click_is_followed_up_by_webhook() {
    let fake = FakeDiscord::start().await;
    let (mut ws, _) = identify(&fake).await;
    fake.add_channel("1100", "1200");
    let posted = bot_call(
        &fake,
        reqwest::Method::POST,
        "/channels/1200/messages",
        json!({"content": "Approve?", "components": approve_reject()}),
    )
    .await;
    let message = posted["id"].as_str().expect("id").to_owned();
    next(&mut ws).await.expect("the bot's own message");
    let click = fake.click_button(&message, USER, "Approve");
    let event = next(&mut ws).await.expect("INTERACTION_CREATE");
    let token = event["d"]["token"].as_str().expect("token").to_owned();
    let app = event["d"]["application_id"]
        .as_str()
        .expect("app")
        .to_owned();
    let deferred = http()
        .post(format!(
            "{}/interactions/{click}/{token}/callback",
            fake.api_base()
        ))
        .json(&json!({"type": 6}))
        .send()
        .await
        .expect("callback");
    assert_eq!(deferred.status(), 204);
    assert_eq!(
        fake.buttons(&message).len(),
        2,
        "a deferral changes nothing"
    );

    let edited = http()
        .patch(format!(
            "{}/webhooks/{app}/{token}/messages/@original",
            fake.api_base()
        ))
        .json(&json!({"content": "Approved", "components": []}))
        .send()
        .await
        .expect("edit @original");
    assert_eq!(edited.status(), 200);
    assert_eq!(
        fake.message(&message).expect("message")["content"],
        "Approved"
    );
    assert!(fake.buttons(&message).is_empty());

    let follow = http()
        .post(format!("{}/webhooks/{app}/{token}", fake.api_base()))
        .json(&json!({"content": "Only you see this", "flags": 64}))
        .send()
        .await
        .expect("follow-up");
    assert_eq!(follow.status(), 200);
    assert_eq!(fake.ephemerals()[0].content, "Only you see this");
    assert_eq!(fake.ephemerals()[0].user, USER);
    let wrong = http()
        .post(format!("{}/webhooks/1/{token}", fake.api_base()))
        .json(&json!({"content": "x"}))
        .send()
        .await
        .expect("follow-up");
    assert_eq!(wrong.json::<Value>().await.expect("json")["code"], 10015);
}
