//! The Web API: `POST /api/{method}` with a bearer token, answered the way Slack answers.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as AxumState};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{
    blocks, channel_type, dm_channel, next_ts, socket, EphemeralMessage, Failure, PostedMessage,
    Reaction, RequestBody, ResponsePost, Shared, SlackRequest, State, StoredMessage,
    UpdatedMessage, APP_ID, BOT_ID, BOT_NAME, BOT_USER_ID, TEAM_ID,
};

/// Slack silently cuts message text beyond this many characters.
const TEXT_CUT: usize = 40_000;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/{method}", any(call))
        .route("/actions/{id}", post(response_url))
        .route("/link/", get(socket::link))
        .route("/files-pri/{file}/download/{name}", get(download))
        .with_state(shared)
}

/// A shared file's bytes, to the bot token only (as `url_private_download` is).
async fn download(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path((file, _name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let found = {
        let mut st = shared.lock();
        let id = file.rsplit('-').next().unwrap_or_default().to_owned();
        match st.files.get(&id).cloned() {
            // Slack answers a request without the token with its sign-in page, not the file.
            _ if bearer.as_deref() != Some(st.bot_token.as_str()) => None,
            Some((_, bytes)) => {
                st.file_downloads += 1;
                Some((bytes, st.stall_files))
            }
            None => None,
        }
    };
    match found {
        None => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            "<!DOCTYPE html><html><body>Sign in to Slack</body></html>",
        )
            .into_response(),
        Some((_, true)) => {
            let stream = futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
            (StatusCode::OK, axum::body::Body::from_stream(stream)).into_response()
        }
        Some((bytes, false)) => (StatusCode::OK, bytes.as_ref().clone()).into_response(),
    }
}

/// One answer: status, `Retry-After`, JSON body (or text when `json` is `None`).
struct Answer {
    status: StatusCode,
    retry_after: Option<u64>,
    json: Option<Value>,
}

impl Answer {
    fn ok(fields: Value) -> Answer {
        let mut body = json!({"ok": true});
        if let (Some(body), Value::Object(fields)) = (body.as_object_mut(), fields) {
            body.extend(fields);
        }
        Answer {
            status: StatusCode::OK,
            retry_after: None,
            json: Some(body),
        }
    }

    fn error(code: &str) -> Answer {
        Answer {
            status: StatusCode::OK,
            retry_after: None,
            json: Some(json!({"ok": false, "error": code})),
        }
    }

    /// `invalid_blocks`, with Slack's list of what is wrong.
    fn invalid_blocks(errors: Vec<String>) -> Answer {
        let messages: Vec<String> = errors.iter().map(|e| format!("[ERROR] {e}")).collect();
        Answer {
            status: StatusCode::OK,
            retry_after: None,
            json: Some(json!({
                "ok": false, "error": "invalid_blocks", "errors": errors,
                "response_metadata": {"messages": messages},
            })),
        }
    }
}

/// A POST to a click's `response_url` (`{"text", "response_type", "replace_original", …}`):
/// recorded; answered `{"ok":true}`.
async fn response_url(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "invalid_payload").into_response();
    };
    shared
        .lock()
        .records
        .responses
        .push(ResponsePost { id, body });
    axum::Json(json!({"ok": true})).into_response()
}

async fn call(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(method_name): Path<String>,
    RawQuery(query): RawQuery,
    http_method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = query.map(|q| decode_form(&q)).unwrap_or_default();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let body = if body.is_empty() {
        RequestBody::Empty
    } else if content_type.starts_with("application/json") {
        match serde_json::from_slice(&body) {
            Ok(value) => RequestBody::Json(value),
            Err(_) => RequestBody::Text(String::from_utf8_lossy(&body).into_owned()),
        }
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        RequestBody::Form(decode_form(&String::from_utf8_lossy(&body)))
    } else {
        RequestBody::Text(String::from_utf8_lossy(&body).into_owned())
    };
    let slow = shared.lock().slow.get(&method_name).copied();
    if let Some(delay) = slow {
        tokio::time::sleep(delay).await;
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let answer = {
        let mut st = shared.lock();
        let answer = answer(
            &shared,
            &mut st,
            &method_name,
            token.as_deref(),
            &query,
            &body,
        );
        let mut recorded_headers = BTreeMap::new();
        for (name, value) in &headers {
            recorded_headers.insert(
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            );
        }
        st.records.requests.push(SlackRequest {
            method: method_name.clone(),
            http_method: http_method.to_string(),
            headers: recorded_headers,
            query: query.clone(),
            body: body.clone(),
            status: answer.status.as_u16(),
            response: answer.json.clone().unwrap_or(Value::Null),
        });
        answer
    };
    let mut response = match answer.json {
        Some(json) => (answer.status, axum::Json(json)).into_response(),
        None => (
            answer.status,
            "upstream connect error or disconnect/reset before headers",
        )
            .into_response(),
    };
    if let Some(secs) = answer.retry_after {
        if let Ok(value) = secs.to_string().parse() {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

fn answer(
    shared: &Shared,
    st: &mut State,
    method: &str,
    token: Option<&str>,
    query: &[(String, String)],
    body: &RequestBody,
) -> Answer {
    if let Some(failure) = st.failures.get_mut(method).and_then(|q| q.pop_front()) {
        return match failure {
            Failure::RateLimited { retry_after_secs } => Answer {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after: Some(retry_after_secs),
                json: Some(json!({"ok": false, "error": "ratelimited"})),
            },
            Failure::Error(code) => Answer::error(&code),
            Failure::Status(status) => Answer {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                retry_after: None,
                json: None,
            },
        };
    }
    // Which token the method takes; the other one is the wrong type.
    let (wanted, other) = if method == "apps.connections.open" {
        (st.app_token.as_str(), st.bot_token.as_str())
    } else {
        (st.bot_token.as_str(), st.app_token.as_str())
    };
    match token {
        None | Some("") => return Answer::error("not_authed"),
        Some(_) if st.invalid_auth => return Answer::error("invalid_auth"),
        Some(t) if t == other => return Answer::error("not_allowed_token_type"),
        Some(t) if t != wanted => return Answer::error("invalid_auth"),
        Some(_) => {}
    }
    // Slack reads arguments from the query string and the body; `users.info` does not read JSON.
    let mut args: Map<String, Value> = query.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    match body {
        RequestBody::Json(Value::Object(fields)) if method != "users.info" => {
            args.extend(fields.clone())
        }
        RequestBody::Form(pairs) => args.extend(pairs.iter().map(|(k, v)| (k.clone(), json!(v)))),
        _ => {}
    }
    let arg = |name: &str| -> Option<String> {
        match args.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        }
    };
    match method {
        "auth.test" => Answer::ok(json!({
            "url": "https://fake-workspace.slack.com/", "team": "Fake Workspace", "user": BOT_NAME,
            "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": BOT_ID, "is_enterprise_install": false,
        })),
        "apps.connections.open" => {
            let ticket = Uuid::new_v4().simple().to_string();
            st.tickets.insert(ticket.clone());
            Answer::ok(
                json!({"url": format!("ws://{}/link/?ticket={ticket}&app_id={APP_ID}", shared.addr)}),
            )
        }
        "chat.postMessage" => {
            let blocks = match blocks::parse(args.get("blocks")) {
                Ok(blocks) => blocks.unwrap_or_default(),
                Err(errors) => return Answer::invalid_blocks(errors),
            };
            post_message(
                shared,
                st,
                arg("channel"),
                arg("text"),
                arg("thread_ts"),
                blocks,
                &args,
            )
        }
        "chat.update" => {
            let (Some(channel), Some(ts)) = (arg("channel"), arg("ts")) else {
                return Answer::error("message_not_found");
            };
            // Without `blocks` the message keeps its blocks; an empty array removes them.
            let blocks = match blocks::parse(args.get("blocks")) {
                Ok(blocks) => blocks,
                Err(errors) => return Answer::invalid_blocks(errors),
            };
            let text = arg("text");
            if text.is_none() && blocks.as_ref().is_none_or(|b| b.is_empty()) {
                return Answer::error("no_text");
            }
            let Some(message) = st.messages.get_mut(&(channel.clone(), ts.clone())) else {
                return Answer::error("message_not_found");
            };
            // A stream is written only by the stream methods until it is stopped.
            if message.user != BOT_USER_ID || message.streaming {
                return Answer::error("cant_update_message");
            }
            let text: String = text.unwrap_or_default().chars().take(TEXT_CUT).collect();
            message.text = text.clone();
            if let Some(blocks) = &blocks {
                message.blocks = blocks.clone();
            }
            st.records.updates.push(UpdatedMessage {
                channel: channel.clone(),
                ts: ts.clone(),
                text: text.clone(),
                blocks,
                body: Value::Object(args.clone()),
            });
            Answer::ok(json!({"channel": channel, "ts": ts, "text": text}))
        }
        "chat.startStream" => start_stream(st, &args),
        "chat.appendStream" | "chat.stopStream" => write_stream(st, method, &args),
        "chat.postEphemeral" => {
            let Some(channel) = arg("channel") else {
                return Answer::error("channel_not_found");
            };
            if !st.channels.contains(&channel) {
                return Answer::error("channel_not_found");
            }
            let Some(user) = arg("user") else {
                return Answer::error("user_not_found");
            };
            if !user.starts_with(['U', 'W']) {
                return Answer::error("user_not_found");
            }
            let blocks = match blocks::parse(args.get("blocks")) {
                Ok(blocks) => blocks.unwrap_or_default(),
                Err(errors) => return Answer::invalid_blocks(errors),
            };
            let text = arg("text").filter(|t| !t.trim().is_empty());
            if text.is_none() && blocks.is_empty() {
                return Answer::error("no_text");
            }
            st.records.ephemerals.push(EphemeralMessage {
                channel,
                user,
                text: text.unwrap_or_default(),
                thread_ts: arg("thread_ts"),
                body: Value::Object(args.clone()),
            });
            // Ephemeral messages are not stored in the conversation and raise no event.
            Answer::ok(json!({"message_ts": next_ts(st)}))
        }
        "reactions.add" => {
            let (Some(channel), Some(timestamp)) = (arg("channel"), arg("timestamp")) else {
                return Answer::error("message_not_found");
            };
            let Some(name) = arg("name") else {
                return Answer::error("invalid_name");
            };
            let Some(message) = st.messages.get_mut(&(channel.clone(), timestamp.clone())) else {
                return Answer::error("message_not_found");
            };
            if !message.reactions.insert(name.clone()) {
                return Answer::error("already_reacted");
            }
            st.records.reactions.push(Reaction {
                channel,
                timestamp,
                name,
            });
            Answer::ok(json!({}))
        }
        "users.info" => {
            let Some(user) = arg("user") else {
                return Answer::error("invalid_arguments");
            };
            if !user.starts_with(['U', 'W']) {
                return Answer::error("user_not_found");
            }
            let name = st
                .user_names
                .get(&user)
                .cloned()
                .unwrap_or_else(|| user.to_ascii_lowercase());
            Answer::ok(json!({"user": {
                "id": user, "team_id": TEAM_ID, "name": name.to_ascii_lowercase().replace(' ', "."),
                "real_name": name, "is_bot": user == BOT_USER_ID,
                "profile": {"display_name": name, "real_name": name},
            }}))
        }
        "conversations.list" => {
            // Pages of `limit` (default 100, as Slack caps at 1000), the cursor an offset.
            let limit = arg("limit")
                .and_then(|l| l.parse::<usize>().ok())
                .unwrap_or(100)
                .clamp(1, 1000);
            let start = arg("cursor")
                .and_then(|c| c.parse::<usize>().ok())
                .unwrap_or(0);
            let all: Vec<(&String, &String)> = st.channel_names.iter().collect();
            let page: Vec<Value> = all
                .iter()
                .skip(start)
                .take(limit)
                .map(|(id, name)| json!({"id": id, "name": name, "is_channel": true, "is_member": true}))
                .collect();
            let next = if start + limit < all.len() {
                (start + limit).to_string()
            } else {
                String::new()
            };
            Answer::ok(json!({"channels": page, "response_metadata": {"next_cursor": next}}))
        }
        "assistant.threads.setStatus" => {
            if arg("channel_id").is_none() || arg("thread_ts").is_none() {
                return Answer::error("invalid_arguments");
            }
            st.records.statuses.push(Value::Object(args.clone()));
            Answer::ok(json!({}))
        }
        _ => Answer::error("unknown_method"),
    }
}

fn post_message(
    shared: &Shared,
    st: &mut State,
    channel: Option<String>,
    text: Option<String>,
    thread_ts: Option<String>,
    blocks: Vec<Value>,
    args: &Map<String, Value>,
) -> Answer {
    let Some(channel) = channel else {
        return Answer::error("channel_not_found");
    };
    // A user id opens (or reuses) the DM with that user.
    let channel = if channel.starts_with(['U', 'W']) {
        let dm = dm_channel(&channel);
        st.channels.insert(dm.clone());
        dm
    } else {
        channel
    };
    if !st.channels.contains(&channel) {
        return Answer::error("channel_not_found");
    }
    // With blocks, `text` is only the notification fallback and may be left out.
    let text = match text.filter(|t| !t.trim().is_empty()) {
        Some(text) => text,
        None if !blocks.is_empty() => String::new(),
        None => return Answer::error("no_text"),
    };
    let text: String = text.chars().take(TEXT_CUT).collect();
    let ts = next_ts(st);
    st.messages.insert(
        (channel.clone(), ts.clone()),
        StoredMessage {
            user: BOT_USER_ID.to_owned(),
            text: text.clone(),
            thread_ts: thread_ts.clone(),
            blocks: blocks.clone(),
            ..Default::default()
        },
    );
    st.records.posted.push(PostedMessage {
        channel: channel.clone(),
        thread_ts: thread_ts.clone(),
        text: text.clone(),
        ts: ts.clone(),
        blocks,
        body: Value::Object(args.clone()),
    });
    let mut message = json!({
        "type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "app_id": APP_ID, "text": text, "ts": ts,
        "team": TEAM_ID, "bot_profile": {"id": BOT_ID, "name": BOT_NAME, "app_id": APP_ID},
    });
    if let Some(thread_ts) = &thread_ts {
        message["thread_ts"] = json!(thread_ts);
    }
    if shared.opts.echo_bot_messages {
        let mut event = message.clone();
        event["channel"] = json!(channel);
        event["channel_type"] = json!(channel_type(&channel));
        event["event_ts"] = json!(ts);
        socket::enqueue_event(st, event);
    }
    Answer::ok(json!({"channel": channel, "ts": ts, "message": message}))
}

/// Slack's limit on a stream call's `markdown_text`.
const STREAM_TEXT_MAX: usize = 12_000;

/// The text and task cards of a stream call: `markdown_text`, or the `chunks` list.
fn stream_content(args: &Map<String, Value>) -> Result<(String, Vec<Value>), Answer> {
    let mut text = args
        .get("markdown_text")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut tasks = Vec::new();
    if let Some(chunks) = args.get("chunks") {
        let Some(chunks) = chunks.as_array() else {
            return Err(Answer::error("invalid_chunks"));
        };
        for chunk in chunks {
            match chunk.get("type").and_then(Value::as_str) {
                Some("markdown_text") => match chunk.get("text").and_then(Value::as_str) {
                    Some(t) => text.push_str(t),
                    None => return Err(Answer::error("invalid_chunks")),
                },
                Some("task_update") => {
                    let valid = ["id", "title"].iter().all(|k| {
                        chunk
                            .get(k)
                            .and_then(Value::as_str)
                            .is_some_and(|v| !v.is_empty())
                    }) && matches!(
                        chunk.get("status").and_then(Value::as_str),
                        Some("pending" | "in_progress" | "complete" | "error")
                    );
                    if !valid {
                        return Err(Answer::error("invalid_chunks"));
                    }
                    tasks.push(chunk.clone());
                }
                _ => return Err(Answer::error("invalid_chunks")),
            }
        }
    }
    if text.chars().count() > STREAM_TEXT_MAX {
        return Err(Answer::error("msg_too_long"));
    }
    Ok((text, tasks))
}

/// `chat.startStream`: in a DM, or in a channel thread for one named person.
fn start_stream(st: &mut State, args: &Map<String, Value>) -> Answer {
    let arg = |name: &str| {
        args.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if st.no_streams {
        return Answer::error("not_allowed");
    }
    let Some(channel) = arg("channel").map(str::to_owned) else {
        return Answer::error("channel_not_found");
    };
    if !st.channels.contains(&channel) {
        return Answer::error("channel_not_found");
    }
    let thread_ts = arg("thread_ts").map(str::to_owned);
    if !channel.starts_with('D')
        && (thread_ts.is_none()
            || arg("recipient_user_id").is_none()
            || arg("recipient_team_id") != Some(TEAM_ID))
    {
        return Answer::error("invalid_arguments");
    }
    let (text, tasks) = match stream_content(args) {
        Ok(content) => content,
        Err(answer) => return answer,
    };
    let ts = next_ts(st);
    st.messages.insert(
        (channel.clone(), ts.clone()),
        StoredMessage {
            user: BOT_USER_ID.to_owned(),
            text: text.clone(),
            thread_ts,
            streaming: true,
            tasks: task_map(&tasks),
            ..Default::default()
        },
    );
    record_stream(st, "chat.startStream", &channel, &ts, text, tasks, args)
}

/// Records an accepted stream call and answers it.
fn record_stream(
    st: &mut State,
    method: &str,
    channel: &str,
    ts: &str,
    text: String,
    tasks: Vec<Value>,
    args: &Map<String, Value>,
) -> Answer {
    st.records.streams.push(super::StreamCall {
        method: method.to_owned(),
        channel: channel.to_owned(),
        ts: ts.to_owned(),
        text,
        tasks,
        body: Value::Object(args.clone()),
    });
    Answer::ok(json!({"channel": channel, "ts": ts}))
}

/// `chat.appendStream` (text or task cards required) and `chat.stopStream` (both optional).
fn write_stream(st: &mut State, method: &str, args: &Map<String, Value>) -> Answer {
    let arg = |name: &str| {
        args.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let (Some(channel), Some(ts)) = (arg("channel"), arg("ts")) else {
        return Answer::error("message_not_found");
    };
    let (text, tasks) = match stream_content(args) {
        Ok(content) => content,
        Err(answer) => return answer,
    };
    if method == "chat.appendStream" && text.is_empty() && tasks.is_empty() {
        return Answer::error("no_text");
    }
    let Some(message) = st.messages.get_mut(&(channel.to_owned(), ts.to_owned())) else {
        return Answer::error("message_not_found");
    };
    if message.user != BOT_USER_ID || !message.streaming {
        return Answer::error("message_not_in_streaming_state");
    }
    if message.text.chars().count() + text.chars().count() > TEXT_CUT {
        return Answer::error("msg_too_long");
    }
    message.text.push_str(&text);
    message.tasks.extend(task_map(&tasks));
    if method == "chat.stopStream" {
        message.streaming = false;
    }
    let (channel, ts) = (channel.to_owned(), ts.to_owned());
    record_stream(st, method, &channel, &ts, text, tasks, args)
}

fn task_map(tasks: &[Value]) -> BTreeMap<String, Value> {
    tasks
        .iter()
        .filter_map(|t| Some((t.get("id")?.as_str()?.to_owned(), t.clone())))
        .collect()
}

/// Decodes `a=1&b=x+y%21` into pairs.
fn decode_form(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode() {
        let cases = [
            ("user=U1", vec![("user", "U1")]),
            ("a=x+y%21&b=", vec![("a", "x y!"), ("b", "")]),
            (
                "text=caf%C3%A9&bad=%zz&end=%4",
                vec![("text", "café"), ("bad", "%zz"), ("end", "%4")],
            ),
            ("", vec![]),
        ];
        for (text, want) in cases {
            let want: Vec<(String, String)> = want
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            assert_eq!(decode_form(text), want, "{text}");
        }
    }
}
