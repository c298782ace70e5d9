//! The fake against the contract, over real HTTP.

use std::time::Duration;

use serde_json::{json, Value};

use super::{FakeOptions, FakeTelegram, GroupKind, Person};

async fn call(tg: &FakeTelegram, method: &str, body: Value) -> (u16, Option<String>, Value) {
    let url = format!("{}/bot{}/{method}", tg.api_base(), tg.token());
    let response = crate::test_http()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("the fake answers");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (
        status,
        retry_after,
        response.json().await.expect("a JSON body"),
    )
}

fn ids(result: &Value) -> Vec<i64> {
    result["result"]
        .as_array()
        .map(|a| a.iter().filter_map(|u| u["update_id"].as_i64()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn updates_are_numbered_one_by_one_and_confirmed_by_offset() {
    let tg = FakeTelegram::start().await;
    for i in 0..3 {
        tg.send_dm(1111, "Ann", &format!("m{i}"));
    }
    let (status, _, first) = call(&tg, "getUpdates", json!({"limit": 2})).await;
    assert_eq!(status, 200);
    let got = ids(&first);
    assert_eq!(got.len(), 2, "limit is honoured");
    assert_eq!(got[1], got[0] + 1, "ids go up one by one");
    let (_, _, again) = call(&tg, "getUpdates", json!({})).await;
    assert_eq!(
        ids(&again).len(),
        3,
        "nothing is confirmed without an offset"
    );
    let (_, _, rest) = call(&tg, "getUpdates", json!({"offset": got[1] + 1})).await;
    assert_eq!(ids(&rest), vec![got[1] + 1]);
    assert_eq!(
        tg.pending_updates(),
        1,
        "the offset deleted the updates below it"
    );
    let message = &rest["result"][0]["message"];
    assert_eq!(message["chat"]["type"], "private");
    assert_eq!(message["text"], "m2");
}

#[tokio::test]
async fn a_second_poll_ends_the_first_with_409() {
    let tg = FakeTelegram::start().await;
    let first = tokio::spawn({
        let tg = tg.clone();
        async move { call(&tg, "getUpdates", json!({"timeout": 30})).await }
    });
    tg.wait_for("the first poll to wait", |tg| tg.active_polls() == 1)
        .await;
    let second = tokio::spawn({
        let tg = tg.clone();
        async move { call(&tg, "getUpdates", json!({"timeout": 30})).await }
    });
    let (status, _, body) = first.await.expect("first poll");
    assert_eq!(status, 409, "the older poll is terminated");
    assert_eq!(body["error_code"], 409);
    assert!(body["description"]
        .as_str()
        .unwrap_or_default()
        .starts_with("Conflict: terminated by other getUpdates"));
    let id = tg.send_dm(1111, "Ann", "hi");
    let (status, _, body) = second.await.expect("second poll");
    assert_eq!(status, 200, "the newer poll goes on and gets the update");
    assert_eq!(body["result"][0]["message"]["message_id"], id);
}

#[tokio::test]
async fn an_abandoned_poll_is_noticed() {
    let tg = FakeTelegram::start().await;
    let poll = tokio::spawn({
        let tg = tg.clone();
        async move { call(&tg, "getUpdates", json!({"timeout": 50})).await }
    });
    tg.wait_for("the poll to wait", |tg| tg.active_polls() == 1)
        .await;
    poll.abort();
    tg.wait_for("the fake to see the client go", |tg| tg.active_polls() == 0)
        .await;
}

#[tokio::test]
async fn errors_use_the_status_of_error_code_and_429_has_retry_after() {
    let tg = FakeTelegram::start().await;
    tg.fail_next(
        "sendmessage",
        429,
        "Too Many Requests: retry after 3",
        Some(3),
    );
    tg.send_dm(1111, "Ann", "hi");
    let (status, retry_after, body) =
        call(&tg, "sendMessage", json!({"chat_id": 1111, "text": "x"})).await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("3")));
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 3",
        "parameters": {"retry_after": 3}})
    );
    let (status, _, _) = call(&tg, "sendMessage", json!({"chat_id": 1111, "text": "x"})).await;
    assert_eq!(status, 200, "only the next call fails");
    let (status, _, body) = call(&tg, "sendMessage", json!({"chat_id": 4242, "text": "x"})).await;
    assert_eq!(
        (status, body["description"].as_str()),
        (400, Some("Bad Request: chat not found"))
    );
    tg.set_token_valid(false);
    let (status, _, body) = call(&tg, "getMe", json!({})).await;
    assert_eq!(
        (status, body["description"].as_str()),
        (401, Some("Unauthorized"))
    );
    let url = format!("{}/bot{}/getMe", tg.api_base(), "1:wrong");
    tg.set_token_valid(true);
    let wrong = reqwest::get(url).await.expect("answer");
    assert_eq!(wrong.status().as_u16(), 401, "a wrong token is refused");
}

#[tokio::test]
async fn threads_follow_the_forum_rules() {
    let tg = FakeTelegram::start().await;
    let ann = Person::new(1111, "Ann");
    let forum = -1001234567890;
    let in_topic = tg.send_topic(forum, 7, &ann, "in a topic", true);
    let in_general = tg.send_group(forum, &ann, "in general", false);
    let reply = tg.reply_to(forum, in_general, &ann, "a reply in general", false);
    let (_, _, polled) = call(&tg, "getUpdates", json!({})).await;
    let messages: Vec<&Value> = polled["result"]
        .as_array()
        .expect("updates")
        .iter()
        .map(|u| &u["message"])
        .collect();
    assert_eq!(messages[0]["message_id"], in_topic);
    assert_eq!(
        (
            messages[0]["message_thread_id"].as_i64(),
            messages[0]["is_topic_message"].as_bool()
        ),
        (Some(7), Some(true))
    );
    assert_eq!(
        messages[0]["reply_to_message"]["message_id"], 7,
        "a topic message replies to the topic's first message"
    );
    assert_eq!(
        messages[0]["entities"],
        json!([{"type": "mention", "offset": 0, "length": 21}])
    );
    assert!(
        messages[1].get("message_thread_id").is_none(),
        "General has no thread id"
    );
    assert_eq!(messages[2]["message_id"], reply);
    assert_eq!(
        messages[2]["message_thread_id"], in_general,
        "a reply thread has an id …"
    );
    assert!(
        messages[2].get("is_topic_message").is_none(),
        "… but is no topic"
    );

    let send = |thread: Option<i64>| {
        let mut body = json!({"chat_id": forum, "text": "x"});
        if let Some(thread) = thread {
            body["message_thread_id"] = json!(thread);
        }
        body
    };
    assert_eq!(call(&tg, "sendMessage", send(Some(7))).await.0, 200);
    for bad in [1, in_general, 99] {
        let (status, _, body) = call(&tg, "sendMessage", send(Some(bad))).await;
        assert_eq!(
            (status, body["description"].as_str()),
            (400, Some("Bad Request: message thread not found")),
            "{bad}"
        );
    }
    tg.add_group(-100555, "Plain", GroupKind::Supergroup, None);
    let (status, _, _) = call(
        &tg,
        "sendMessage",
        json!({"chat_id": -100555, "text": "x", "message_thread_id": 3}),
    )
    .await;
    assert_eq!(
        status, 200,
        "a supergroup without topics ignores the thread id"
    );
    let sent = tg.sent_messages();
    assert_eq!(
        sent.iter().map(|s| s.thread_id).collect::<Vec<_>>(),
        vec![Some(7), Some(3)],
        "thread ids are recorded as sent"
    );
}

#[tokio::test]
async fn replies_clicks_and_edits() {
    let tg = FakeTelegram::start().await;
    let asked = tg.send_dm(1111, "Ann", "deploy?");
    let markup = json!({"inline_keyboard": [[{"text": "Approve", "callback_data": "approve:17"}]]});
    let (status, _, sent) = call(
        &tg,
        "sendMessage",
        json!({"chat_id": 1111, "text": "Approve?",
        "reply_parameters": {"message_id": asked}, "reply_markup": markup}),
    )
    .await;
    assert_eq!(status, 200);
    let bot_message = sent["result"]["message_id"].as_i64().expect("an id");
    assert_eq!(sent["result"]["reply_to_message"]["message_id"], asked);
    let (status, _, _) = call(
        &tg,
        "sendMessage",
        json!({"chat_id": 1111, "text": "x", "reply_parameters": {"message_id": 999}}),
    )
    .await;
    assert_eq!(status, 400, "a missing message cannot be replied to …");
    let (status, _, _) = call(
        &tg,
        "sendMessage",
        json!({"chat_id": 1111, "text": "x",
        "reply_parameters": {"message_id": 999, "allow_sending_without_reply": true}}),
    )
    .await;
    assert_eq!(status, 200, "… unless sending without the reply is allowed");

    let query = tg.click(1111, bot_message, &Person::new(1111, "Ann"), "approve:17");
    let (_, _, polled) = call(
        &tg,
        "getUpdates",
        json!({"allowed_updates": ["callback_query"]}),
    )
    .await;
    let update = polled["result"]
        .as_array()
        .and_then(|a| a.last())
        .cloned()
        .expect("the click");
    assert_eq!(update["callback_query"]["data"], "approve:17");
    assert_eq!(
        update["callback_query"]["message"]["message_id"],
        bot_message
    );
    assert_eq!(
        call(
            &tg,
            "answerCallbackQuery",
            json!({"callback_query_id": query})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(
            &tg,
            "answerCallbackQuery",
            json!({"callback_query_id": query})
        )
        .await
        .0,
        400,
        "only once"
    );
    assert_eq!(tg.callback_answers().len(), 1);

    let edit = json!({"chat_id": 1111, "message_id": bot_message, "text": "Approved by Ann"});
    assert_eq!(call(&tg, "editMessageText", edit.clone()).await.0, 200);
    let (status, _, body) = call(&tg, "editMessageText", edit).await;
    assert_eq!(status, 400);
    assert!(body["description"]
        .as_str()
        .unwrap_or_default()
        .starts_with("Bad Request: message is not modified"));
    assert_eq!(tg.edits()[0].text.as_deref(), Some("Approved by Ann"));
}

#[tokio::test]
async fn explicit_entities_are_checked_in_utf16_and_buttons_are_pressed_as_shown() {
    let tg = FakeTelegram::start().await;
    tg.send_dm(1111, "Ann", "hi");
    // "👋 ls" is 5 UTF-16 units: the emoji counts two.
    let send = |entities: Value| {
        json!({"chat_id": 1111, "text": "👋 ls", "entities": entities,
            "reply_markup": {"inline_keyboard": [[{"text": "Approve", "callback_data": "sb:a:1"}]]}})
    };
    let (status, _, body) = call(
        &tg,
        "sendMessage",
        send(json!([{"type": "code", "offset": 3, "length": 3}])),
    )
    .await;
    assert_eq!(status, 400, "a span past the end is refused");
    assert!(body["description"]
        .as_str()
        .unwrap_or_default()
        .starts_with("Bad Request: can't parse entities"));
    let (status, _, _) = call(
        &tg,
        "sendMessage",
        send(json!([{"type": "shiny", "offset": 0, "length": 1}])),
    )
    .await;
    assert_eq!(status, 400, "an unknown type is refused");
    let (status, _, sent) = call(
        &tg,
        "sendMessage",
        send(json!([{"type": "code", "offset": 3, "length": 2}])),
    )
    .await;
    assert_eq!(status, 200);
    let id = sent["result"]["message_id"].as_i64().expect("an id");
    let shown = tg.message(1111, id).expect("the message");
    assert_eq!(
        shown["entities"],
        json!([{"type": "code", "offset": 3, "length": 2}])
    );

    let query = tg.press(1111, id, &Person::new(1111, "Ann"), "Approve");
    let (_, _, polled) = call(&tg, "getUpdates", json!({})).await;
    let clicks: Vec<Value> = polled["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u.get("callback_query").cloned())
        .collect();
    assert_eq!(clicks.len(), 1);
    assert_eq!(clicks[0]["data"], "sb:a:1", "the button's own payload");
    assert_eq!(clicks[0]["id"], query.as_str());
    let answer = json!({"callback_query_id": query, "text": "Done", "show_alert": true});
    assert_eq!(call(&tg, "answerCallbackQuery", answer).await.0, 200);
    let answered = tg.callback_answer(&query).expect("answered");
    assert_eq!(
        (answered.text.as_deref(), answered.show_alert),
        (Some("Done"), true)
    );

    // An edit without reply_markup removes the buttons; the same edit again changes nothing.
    let edit = json!({"chat_id": 1111, "message_id": id, "text": "✅ ls",
        "entities": [{"type": "code", "offset": 2, "length": 2}]});
    assert_eq!(call(&tg, "editMessageText", edit.clone()).await.0, 200);
    let shown = tg.message(1111, id).expect("the message");
    assert_eq!(shown["text"], "✅ ls");
    assert!(shown.get("reply_markup").is_none(), "the buttons are gone");
    assert_eq!(
        call(&tg, "editMessageText", edit).await.0,
        400,
        "not modified"
    );
    let restyled = json!({"chat_id": 1111, "message_id": id, "text": "✅ ls"});
    assert_eq!(
        call(&tg, "editMessageText", restyled).await.0,
        200,
        "dropping the formatting is a change"
    );
}

#[tokio::test]
async fn webhooks_block_polling_until_deleted_and_prefixes_are_kept() {
    let tg = FakeTelegram::start_with(FakeOptions {
        path_prefix: "/tg/".into(),
        ..FakeOptions::default()
    })
    .await;
    assert!(tg.api_base().ends_with("/tg"), "{}", tg.api_base());
    tg.set_webhook(Some("https://example.invalid/hook"));
    let (status, _, body) = call(&tg, "getUpdates", json!({})).await;
    assert_eq!(status, 409);
    assert!(body["description"]
        .as_str()
        .unwrap_or_default()
        .contains("webhook is active"));
    assert_eq!(call(&tg, "deleteWebhook", json!({})).await.0, 200);
    assert_eq!(call(&tg, "getUpdates", json!({})).await.0, 200);
    tg.slow("getMe", Duration::from_millis(50));
    assert_eq!(
        call(&tg, "getme", json!({})).await.2["result"]["username"],
        "switchboard_test_bot",
        "method names ignore case"
    );
}
