//! The fake against the contract, over real HTTP and a real WebSocket.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::{Failure, FakeSlack, FakeSlackOptions, BOT_USER_ID};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn call(
    slack: &FakeSlack,
    method: &str,
    token: Option<&str>,
    body: Value,
) -> (u16, Option<String>, Value) {
    let mut request = crate::test_http()
        .post(format!("{}/{method}", slack.api_base()))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the fake answers");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.json().await.unwrap_or(Value::Null);
    (status, retry_after, body)
}

async fn connect(slack: &FakeSlack) -> Socket {
    let (_, _, open) = call(
        slack,
        "apps.connections.open",
        Some(&slack.app_token()),
        json!({}),
    )
    .await;
    let url = open["url"].as_str().expect("a socket url").to_owned();
    assert!(
        url.starts_with("ws://127.0.0.1:") && url.contains("/link/?ticket="),
        "{url}"
    );
    let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("the socket opens");
    let again = tokio_tungstenite::connect_async(url.as_str()).await;
    assert!(again.is_err(), "a ticket works once");
    socket
}

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
            .expect("a readable frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).expect("json");
        }
    }
}

#[tokio::test]
async fn the_web_api_answers_like_slack() {
    let slack = FakeSlack::start().await;
    let bot = slack.bot_token();
    let app = slack.app_token();

    let (status, _, auth) = call(&slack, "auth.test", Some(&bot), json!({})).await;
    assert_eq!(
        (status, auth["ok"].clone(), auth["user_id"].clone()),
        (200, json!(true), json!(BOT_USER_ID))
    );
    let cases = [
        ("auth.test", None, "not_authed"),
        ("auth.test", Some("xoxb-nope"), "invalid_auth"),
        ("auth.test", Some(app.as_str()), "not_allowed_token_type"),
        (
            "apps.connections.open",
            Some(bot.as_str()),
            "not_allowed_token_type",
        ),
    ];
    for (method, token, error) in cases {
        let (status, _, body) = call(&slack, method, token, json!({})).await;
        assert_eq!(
            (status, body),
            (200, json!({"ok": false, "error": error})),
            "{method} {token:?}"
        );
    }

    // users.info reads no JSON, only the query string or a form.
    let (_, _, body) = call(&slack, "users.info", Some(&bot), json!({"user": "U1ANN"})).await;
    assert_eq!(body["error"], "invalid_arguments");
    slack.set_user_name("U1ANN", "Ann");
    let form: Value = crate::test_http()
        .post(format!("{}/users.info", slack.api_base()))
        .bearer_auth(&bot)
        .form(&[("user", "U1ANN")])
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(form["user"]["profile"]["display_name"], "Ann");

    let (_, _, body) = call(
        &slack,
        "chat.postMessage",
        Some(&bot),
        json!({"channel": "C404", "text": "x"}),
    )
    .await;
    assert_eq!(body["error"], "channel_not_found");
    let (_, _, body) = call(
        &slack,
        "chat.postMessage",
        Some(&bot),
        json!({"channel": "U1ANN", "text": "hi"}),
    )
    .await;
    assert_eq!(body["channel"], "D1ANN", "a user id opens the DM");
    let ts = body["ts"].as_str().expect("ts").to_owned();
    let reaction = json!({"channel": "D1ANN", "timestamp": ts, "name": "eyes"});
    let (_, _, first) = call(&slack, "reactions.add", Some(&bot), reaction.clone()).await;
    let (_, _, second) = call(&slack, "reactions.add", Some(&bot), reaction).await;
    assert_eq!(
        (first["ok"].clone(), second["error"].clone()),
        (json!(true), json!("already_reacted"))
    );

    slack.fail(
        "chat.postMessage",
        Failure::RateLimited {
            retry_after_secs: 7,
        },
        1,
    );
    let (status, retry_after, body) = call(
        &slack,
        "chat.postMessage",
        Some(&bot),
        json!({"channel": "D1ANN", "text": "x"}),
    )
    .await;
    assert_eq!(
        (status, retry_after.as_deref(), body),
        (429, Some("7"), json!({"ok": false, "error": "ratelimited"}))
    );
    assert_eq!(
        slack.posted().len(),
        1,
        "only the accepted post is recorded"
    );
}

#[tokio::test]
async fn socket_mode_says_hello_waits_for_acks_and_redelivers() {
    let slack = FakeSlack::start_with(FakeSlackOptions {
        redeliver_after: Duration::from_millis(100),
        echo_bot_messages: false,
        ..FakeSlackOptions::default()
    })
    .await;
    let mut socket = connect(&slack).await;
    let hello = next_json(&mut socket).await;
    assert_eq!(hello["type"], "hello", "hello comes first");

    slack.send_channel("C1TEAM", "U1ANN", "deploy?", true);
    let message = next_json(&mut socket).await;
    let mention = next_json(&mut socket).await;
    assert_eq!(message["payload"]["event"]["type"], "message");
    assert_eq!(mention["payload"]["event"]["type"], "app_mention");
    assert_eq!(message["payload"]["event"]["text"], "<@UBOT> deploy?");
    assert_ne!(
        message["payload"]["event_id"], mention["payload"]["event_id"],
        "two events, two ids"
    );
    assert_eq!(
        message["payload"]["event"]["ts"], mention["payload"]["event"]["ts"],
        "one message"
    );
    assert_eq!(
        (
            message["retry_attempt"].clone(),
            message["retry_reason"].clone()
        ),
        (json!(0), json!(""))
    );

    // Ack only the app_mention: the message comes again as a retry.
    let ack = json!({"envelope_id": mention["envelope_id"]}).to_string();
    socket.send(Message::text(ack)).await.expect("ack");
    let retry = next_json(&mut socket).await;
    assert_eq!(retry["envelope_id"], message["envelope_id"]);
    assert_eq!(
        retry["payload"]["event_id"], message["payload"]["event_id"],
        "the same event"
    );
    assert_eq!(
        (
            retry["retry_attempt"].clone(),
            retry["retry_reason"].clone()
        ),
        (json!(1), json!("timeout"))
    );
    socket
        .send(Message::text(
            json!({"envelope_id": message["envelope_id"]}).to_string(),
        ))
        .await
        .expect("ack");
    slack.wait_for("both acks", |s| s.unacked() == 0).await;
    assert!(slack.given_up().is_empty());
}

#[tokio::test]
async fn a_refresh_warns_then_closes() {
    let slack = FakeSlack::start().await;
    let mut socket = connect(&slack).await;
    next_json(&mut socket).await;

    slack.refresh();

    let warning = next_json(&mut socket).await;
    let refresh = next_json(&mut socket).await;
    assert_eq!(
        (warning["type"].clone(), warning["reason"].clone()),
        (json!("disconnect"), json!("warning"))
    );
    assert_eq!(refresh["reason"], "refresh_requested");
    let close = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("in time");
    assert!(
        matches!(close, Some(Ok(Message::Close(_)))),
        "then a close frame: {close:?}"
    );
}

#[tokio::test]
async fn block_kit_messages_are_checked_updated_and_clicked_like_slack() {
    let slack = FakeSlack::start_with(FakeSlackOptions {
        echo_bot_messages: false,
        ..FakeSlackOptions::default()
    })
    .await;
    let bot = slack.bot_token();
    let mut socket = connect(&slack).await;
    next_json(&mut socket).await;
    let parent = slack.send_channel("C1TEAM", "U1ANN", "deploy?", true);
    next_json(&mut socket).await;
    next_json(&mut socket).await;

    let actions = json!({"type": "actions", "block_id": "b", "elements": [
        {"type": "button", "text": {"type": "plain_text", "text": "Go"}, "action_id": "go", "value": "v1", "style": "primary"},
    ]});
    let section = json!({"type": "section", "text": {"type": "mrkdwn", "text": "Sure?"}});

    // Slack refuses blocks beyond its limits, saying where.
    let too_long = json!({"type": "section", "text": {"type": "mrkdwn", "text": "x".repeat(3001)}});
    let (_, _, body) = call(
        &slack,
        "chat.postMessage",
        Some(&bot),
        json!({"channel": "C1TEAM", "text": "t", "blocks": [too_long]}),
    )
    .await;
    assert_eq!(body["error"], "invalid_blocks");
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap_or_default()
            .contains("/blocks/0/text/text"),
        "{body}"
    );
    assert!(slack.posted().is_empty());

    let (_, _, body) = call(
        &slack,
        "chat.postMessage",
        Some(&bot),
        json!({"channel": "C1TEAM", "thread_ts": parent, "text": "Sure?", "blocks": [section, actions]}),
    )
    .await;
    let ts = body["ts"].as_str().expect("ts").to_owned();
    let shown = slack.message("C1TEAM", &ts).expect("stored");
    assert_eq!(shown.thread_ts.as_deref(), Some(parent.as_str()));
    assert_eq!(shown.buttons()[0].value.as_deref(), Some("v1"));

    // A click carries the button, the thread and the message's blocks.
    slack.click_button("C1TEAM", &ts, "U2BOB", "Go");
    let click = next_json(&mut socket).await;
    assert_eq!(click["type"], "interactive");
    let payload = &click["payload"];
    assert_eq!(payload["actions"][0]["value"], "v1");
    assert_eq!(payload["container"]["thread_ts"], json!(parent));
    assert_eq!(payload["message"]["blocks"][1]["block_id"], "b");

    // chat.update with text only keeps the blocks (and the buttons); an empty array drops them.
    let (_, _, body) = call(
        &slack,
        "chat.update",
        Some(&bot),
        json!({"channel": "C1TEAM", "ts": ts, "text": "done"}),
    )
    .await;
    assert_eq!(body["ok"], true);
    assert_eq!(
        slack
            .message("C1TEAM", &ts)
            .expect("stored")
            .buttons()
            .len(),
        1
    );
    call(
        &slack,
        "chat.update",
        Some(&bot),
        json!({"channel": "C1TEAM", "ts": ts, "text": "done", "blocks": []}),
    )
    .await;
    let shown = slack.message("C1TEAM", &ts).expect("stored");
    assert!(shown.buttons().is_empty());
    assert_eq!(shown.shown(), "done");
    let (_, _, body) = call(
        &slack,
        "chat.update",
        Some(&bot),
        json!({"channel": "C1TEAM", "ts": parent, "text": "mine now"}),
    )
    .await;
    assert_eq!(body["error"], "cant_update_message", "only the bot's own");

    // Ephemeral messages reach one user and stay out of the conversation.
    let (_, _, body) = call(
        &slack,
        "chat.postEphemeral",
        Some(&bot),
        json!({"channel": "C1TEAM", "user": "U2BOB", "text": "only you", "thread_ts": parent}),
    )
    .await;
    assert_eq!(body["ok"], true);
    assert!(body["message_ts"].is_string());
    let ephemeral = &slack.ephemerals()[0];
    assert_eq!(
        (
            ephemeral.user.as_str(),
            ephemeral.text.as_str(),
            ephemeral.thread_ts.as_deref()
        ),
        ("U2BOB", "only you", Some(parent.as_str()))
    );
    assert_eq!(slack.posted().len(), 1);
    let (_, _, body) = call(
        &slack,
        "chat.postEphemeral",
        Some(&bot),
        json!({"channel": "C404", "user": "U2BOB", "text": "x"}),
    )
    .await;
    assert_eq!(body["error"], "channel_not_found");

    // The click's response_url takes a reply.
    let url = payload["response_url"].as_str().expect("a response_url");
    let answer: Value = crate::test_http()
        .post(url)
        .json(&json!({"response_type": "ephemeral", "text": "hi", "replace_original": false}))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["ok"], true);
    assert_eq!(slack.responses()[0].body["text"], "hi");
}

#[tokio::test]
async fn a_stream_grows_with_text_and_task_cards_until_it_is_stopped() {
    let slack = FakeSlack::start().await;
    slack.add_channel("C1TEAM");
    let bot = slack.bot_token();
    let dm = slack.dm_channel("U1ANN");
    slack.send_dm("U1ANN", "hello");

    // In a channel a stream needs its thread and the person it is for.
    let (_, _, refused) = call(
        &slack,
        "chat.startStream",
        Some(&bot),
        json!({"channel": "C1TEAM", "markdown_text": "hi"}),
    )
    .await;
    assert_eq!(refused["error"], "invalid_arguments");

    let (_, _, started) = call(
        &slack,
        "chat.startStream",
        Some(&bot),
        json!({"channel": dm, "markdown_text": "Let me look."}),
    )
    .await;
    assert_eq!(started["ok"], true, "{started}");
    let ts = started["ts"].as_str().expect("ts").to_owned();
    let task =
        json!({"type": "task_update", "id": "c1", "title": "run tests", "status": "in_progress"});
    let (_, _, appended) = call(
        &slack,
        "chat.appendStream",
        Some(&bot),
        json!({"channel": dm, "ts": ts, "chunks": [{"type": "markdown_text", "text": " More."}, task]}),
    )
    .await;
    assert_eq!(appended["ok"], true, "{appended}");
    let (_, _, update) = call(
        &slack,
        "chat.update",
        Some(&bot),
        json!({"channel": dm, "ts": ts, "text": "replaced"}),
    )
    .await;
    assert_eq!(
        update["error"], "cant_update_message",
        "a stream is not updated"
    );
    let shown = slack.message(&dm, &ts).expect("message");
    assert!(shown.streaming);
    assert_eq!(shown.text, "Let me look. More.");
    assert_eq!(shown.tasks[0]["status"], "in_progress");

    let done =
        json!({"type": "task_update", "id": "c1", "title": "run tests", "status": "complete"});
    let (_, _, stopped) = call(
        &slack,
        "chat.stopStream",
        Some(&bot),
        json!({"channel": dm, "ts": ts, "chunks": [{"type": "markdown_text", "text": " Done."}, done]}),
    )
    .await;
    assert_eq!(stopped["ok"], true, "{stopped}");
    let shown = slack.message(&dm, &ts).expect("message");
    assert!(!shown.streaming);
    assert_eq!(shown.text, "Let me look. More. Done.");
    assert_eq!(shown.tasks[0]["status"], "complete");
    let (_, _, late) = call(
        &slack,
        "chat.appendStream",
        Some(&bot),
        json!({"channel": dm, "ts": ts, "markdown_text": "late"}),
    )
    .await;
    assert_eq!(late["error"], "message_not_in_streaming_state");
    assert_eq!(
        slack.stream_calls().len(),
        3,
        "refused calls are not recorded"
    );

    slack.set_streams(false);
    let (_, _, off) = call(
        &slack,
        "chat.startStream",
        Some(&bot),
        json!({"channel": dm, "markdown_text": "hi"}),
    )
    .await;
    assert_eq!(off["error"], "not_allowed");
}
