//! The fake's HTTP side: the accept loop, the Bot API envelope, parameters from the query string
//! and any of the body encodings the Bot API takes, and one handler per method.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

use super::world::{utf16_len, World};
use super::{
    CallbackAnswer, ChatAction, Draft, Edit, Failure, Reaction, RecordedRequest, Sent, Shared,
};

/// The longest long poll the reference server allows.
const LONG_POLL_MAX: i64 = 50;
/// The longest message text.
const TEXT_MAX: usize = 4096;
const CONFLICT_OTHER_POLL: &str =
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running";
const CONFLICT_WEBHOOK: &str =
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first";

/// Connections are served by hyper directly so that [`super::FakeTelegram::cut_connections`] can
/// drop them mid-answer, the way a failing network does.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let app = Router::new().fallback(handle).with_state(shared.clone());
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((tcp, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let cut = shared
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service);
            tokio::select! {
                result = connection => {
                    if let Err(e) = result {
                        tracing::trace!(error = %e, "fake telegram: connection ended with an error");
                    }
                }
                () = cut.cancelled() => {}
            }
        });
    }
}

/// An error answer: `{"ok":false,…}` with the HTTP status equal to `error_code`.
fn fail(failure: &Failure) -> Response {
    let mut body =
        json!({"ok": false, "error_code": failure.status, "description": failure.description});
    let mut parameters = Map::new();
    if let Some(wait) = failure.retry_after {
        parameters.insert("retry_after".into(), json!(wait));
    }
    if let Some(to) = failure.migrate_to_chat_id {
        parameters.insert("migrate_to_chat_id".into(), json!(to));
    }
    if !parameters.is_empty() {
        body["parameters"] = Value::Object(parameters);
    }
    let status = StatusCode::from_u16(failure.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (status, axum::Json(body)).into_response();
    if let (429, Some(wait)) = (failure.status, failure.retry_after) {
        if let Ok(value) = HeaderValue::from_str(&wait.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

fn error(status: u16, description: &str) -> Failure {
    Failure {
        status,
        description: description.to_string(),
        retry_after: None,
        migrate_to_chat_id: None,
    }
}

fn bad_request(description: &str) -> Failure {
    error(400, &format!("Bad Request: {description}"))
}

fn ok(result: Value) -> Response {
    (
        StatusCode::OK,
        axum::Json(json!({"ok": true, "result": result})),
    )
        .into_response()
}

/// Splits `/prefix/bot<token>/<method>` into the token and the method.
fn route(prefix: &str, path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix(prefix)?;
    let rest = rest.strip_prefix("/bot")?;
    let (token, method) = rest.split_once('/')?;
    if token.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some((token.to_string(), method.to_string()))
}

/// A form or query value: JSON where it is JSON (numbers, objects, lists), else the string.
fn form_value(raw: String) -> Value {
    match serde_json::from_str::<Value>(&raw) {
        Ok(v @ (Value::Object(_) | Value::Array(_) | Value::Number(_) | Value::Bool(_))) => v,
        _ => Value::String(raw),
    }
}

fn form_pairs(encoded: &str, into: &mut Map<String, Value>) -> Result<(), Failure> {
    let uri: Uri = format!("/?{encoded}")
        .parse()
        .map_err(|_| bad_request("invalid query string"))?;
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map_err(|_| bad_request("invalid form encoding"))?;
    for (key, value) in pairs {
        into.insert(key, form_value(value));
    }
    Ok(())
}

/// The parameters of a call: the query string, then the body (JSON or form-encoded), merged.
fn params(uri: &Uri, content_type: &str, body: &[u8]) -> Result<Value, Failure> {
    let mut map = Map::new();
    if let Some(query) = uri.query() {
        form_pairs(query, &mut map)?;
    }
    let content_type = content_type.to_ascii_lowercase();
    if body.is_empty() {
        // Nothing more.
    } else if content_type.starts_with("application/json") {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(object)) => map.extend(object),
            Ok(_) => return Err(bad_request("parameters must be a JSON object")),
            Err(e) => return Err(bad_request(&format!("can't parse JSON object: {e}"))),
        }
    } else if content_type.starts_with("multipart/") {
        return Err(bad_request(
            "multipart/form-data is not supported by the fake",
        ));
    } else {
        form_pairs(&String::from_utf8_lossy(body), &mut map)?;
    }
    Ok(Value::Object(map))
}

fn int_param(params: &Value, name: &str) -> Option<i64> {
    match params.get(name)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text_param(params: &Value, name: &str) -> Option<String> {
    match params.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn bool_param(params: &Value, name: &str) -> bool {
    match params.get(name) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true" || s == "1",
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        _ => false,
    }
}

/// An object or list parameter, also when sent as a JSON string.
fn json_param(params: &Value, name: &str) -> Option<Value> {
    match params.get(name)? {
        Value::String(s) => serde_json::from_str(s).ok(),
        Value::Null => None,
        other => Some(other.clone()),
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let path = parts.uri.path().to_string();
    if let Some(response) = download(&shared, &path).await {
        return response;
    }
    let route = route(&shared.prefix, &path);
    let params = params(&parts.uri, content_type, &bytes);
    let method = route.as_ref().map(|(_, m)| m.clone()).unwrap_or_default();
    let response = match (route, &params) {
        (None, _) => fail(&error(404, "Not Found")),
        (Some(_), Err(failure)) => fail(failure),
        (Some((token, method)), Ok(params)) => answer(&shared, &token, &method, params).await,
    };
    let status = response.status().as_u16();
    shared.update(|w| {
        w.records.requests.push(RecordedRequest {
            method,
            http_method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map_or(path.clone(), |pq| pq.as_str().to_string()),
            params: params.unwrap_or(Value::Null),
            body: String::from_utf8_lossy(&bytes).into_owned(),
            status,
        })
    });
    let (mut parts, body) = response.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::new(body))
}

async fn answer(shared: &Arc<Shared>, token: &str, method: &str, params: &Value) -> Response {
    let key = method.to_ascii_lowercase();
    let delay = {
        let w = shared.lock();
        if !w.token_valid || token != w.token {
            return fail(&error(401, "Unauthorized"));
        }
        w.slow.get(&key).copied()
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(failure) = shared.update(|w| w.failures.get_mut(&key).and_then(|q| q.pop_front())) {
        return fail(&failure);
    }
    if key == "getupdates" {
        return get_updates(shared, params).await;
    }
    let result = shared.update(|w| match key.as_str() {
        "getme" => Ok(get_me(w)),
        "deletewebhook" => {
            w.webhook = None;
            if bool_param(params, "drop_pending_updates") {
                w.updates.clear();
            }
            Ok(json!(true))
        }
        "setwebhook" => {
            w.webhook = text_param(params, "url").filter(|u| !u.is_empty());
            Ok(json!(true))
        }
        "getwebhookinfo" => Ok(json!({"url": w.webhook.clone().unwrap_or_default(),
            "has_custom_certificate": false, "pending_update_count": w.updates.len()})),
        "sendmessage" => send_message(w, params),
        "editmessagetext" => edit(w, method, params, true),
        "editmessagereplymarkup" => edit(w, method, params, false),
        "answercallbackquery" => answer_callback(w, params),
        "setmessagereaction" => set_reaction(w, params),
        "sendchataction" => chat_action(w, params),
        "getfile" => get_file(w, params),
        "setmycommands" => match params.get("commands") {
            Some(Value::Array(commands)) => {
                w.commands = commands.clone();
                Ok(json!(true))
            }
            _ => Err(bad_request("commands must be an array")),
        },
        "getmycommands" => Ok(Value::Array(w.commands.clone())),
        "sendmessagedraft" => send_draft(w, params),
        _ => Err(error(404, "Not Found")),
    });
    match result {
        Ok(value) => ok(value),
        Err(failure) => fail(&failure),
    }
}

fn get_me(w: &World) -> Value {
    let mut me = w.bot.json();
    me["can_join_groups"] = json!(true);
    me["can_read_all_group_messages"] = json!(false);
    me["supports_inline_queries"] = json!(false);
    me
}

/// Lowers the count of waiting polls when a poll ends, answered or abandoned by its client.
struct PollGuard(Arc<Shared>);

impl Drop for PollGuard {
    fn drop(&mut self) {
        self.0
            .update(|w| w.active_polls = w.active_polls.saturating_sub(1));
    }
}

async fn get_updates(shared: &Arc<Shared>, params: &Value) -> Response {
    let offset = int_param(params, "offset");
    let limit = int_param(params, "limit").unwrap_or(100).clamp(1, 100) as usize;
    let timeout = int_param(params, "timeout")
        .unwrap_or(0)
        .clamp(0, LONG_POLL_MAX) as u64;
    let allowed = json_param(params, "allowed_updates").and_then(|v| {
        v.as_array().map(|list| {
            list.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect::<Vec<_>>()
        })
    });
    let started = shared.update(|w| {
        if w.webhook.is_some() {
            return Err(error(409, CONFLICT_WEBHOOK));
        }
        if let Some(list) = allowed {
            // Sticky: a poll without the parameter keeps the last list.
            w.allowed_updates = Some(list);
        }
        confirm(w, offset);
        // A newer poll ends the one still waiting (with 409, below).
        w.poll_generation += 1;
        w.active_polls += 1;
        Ok(w.poll_generation)
    });
    let generation = match started {
        Ok(generation) => generation,
        Err(failure) => return fail(&failure),
    };
    let _guard = PollGuard(shared.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        let changed = shared.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let batch = {
            let mut w = shared.lock();
            if w.poll_generation != generation {
                return fail(&error(409, CONFLICT_OTHER_POLL));
            }
            take(&mut w, offset, limit)
        };
        if !batch.is_empty() || tokio::time::Instant::now() >= deadline {
            return ok(Value::Array(batch));
        }
        tokio::select! {
            () = &mut changed => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Applies a poll's offset: updates below a positive offset are confirmed and deleted; `-N`
/// keeps only the last N.
fn confirm(w: &mut World, offset: Option<i64>) {
    match offset {
        Some(offset) if offset < 0 => {
            let keep = offset.unsigned_abs() as usize;
            let regular = w.updates.iter().filter(|u| !u.forced).count();
            let mut drop = regular.saturating_sub(keep);
            w.updates.retain(|u| {
                if !u.forced && drop > 0 {
                    drop -= 1;
                    false
                } else {
                    true
                }
            });
        }
        Some(offset) => {
            w.updates.retain(|u| u.forced || u.id >= offset);
            w.confirmed_offset = w.confirmed_offset.max(offset);
        }
        None => {}
    }
}

/// The next batch for a poll. Injected (forced) updates are handed out once and forgotten; the
/// others stay until a later offset confirms them.
fn take(w: &mut World, offset: Option<i64>, limit: usize) -> Vec<Value> {
    // Types the bot did not ask for are never created for it.
    let wanted = |kind: &str| match &w.allowed_updates {
        Some(list) if !list.is_empty() => list.iter().any(|k| k == kind),
        _ => !matches!(
            kind,
            "chat_member" | "message_reaction" | "message_reaction_count"
        ),
    };
    let unwanted: Vec<i64> = w
        .updates
        .iter()
        .filter(|u| !u.forced && !wanted(&u.kind))
        .map(|u| u.id)
        .collect();
    w.updates.retain(|u| u.forced || !unwanted.contains(&u.id));
    let mut batch = Vec::new();
    let mut handed_forced = Vec::new();
    for (index, update) in w.updates.iter().enumerate() {
        if batch.len() >= limit {
            break;
        }
        if update.forced || offset.is_none_or(|o| o < 0 || update.id >= o) {
            batch.push(update.json.clone());
            if update.forced {
                handed_forced.push(index);
            }
        }
    }
    for index in handed_forced.into_iter().rev() {
        w.updates.remove(index);
    }
    batch
}

/// Where a message with `message_thread_id` goes: a forum needs an open topic (never General);
/// other chats ignore the parameter, as the current server does.
fn place(w: &World, chat_id: i64, thread: Option<i64>) -> Result<Option<(i64, bool)>, Failure> {
    let Some(thread) = thread else {
        return Ok(None);
    };
    match w.chats.get(&chat_id) {
        Some(chat) if chat.forum => {
            if thread == 1 || !chat.topics.contains(&thread) {
                Err(bad_request("message thread not found"))
            } else {
                Ok(Some((thread, true)))
            }
        }
        _ => Ok(None),
    }
}

fn target_chat(w: &World, params: &Value) -> Result<i64, Failure> {
    let chat_id = params
        .get("chat_id")
        .ok_or_else(|| bad_request("chat_id is empty"))?;
    let chat_id = w
        .resolve_chat(chat_id)
        .ok_or_else(|| bad_request("chat not found"))?;
    if let Some(to) = w.chats.get(&chat_id).and_then(|c| c.migrated_to) {
        return Err(Failure {
            status: 400,
            description: "Bad Request: group chat was upgraded to a supergroup chat".into(),
            retry_after: None,
            migrate_to_chat_id: Some(to),
        });
    }
    Ok(chat_id)
}

/// The checks a real server makes on formatted text, reduced to what a bot gets wrong: reserved
/// characters left unescaped in MarkdownV2, and `<` that opens no tag in HTML.
fn check_parse_mode(text: &str, parse_mode: Option<&str>) -> Result<(), Failure> {
    match parse_mode {
        None => Ok(()),
        Some("MarkdownV2") => {
            let mut escaped = false;
            for c in text.chars() {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if "_*[]()~`>#+-=|{}.!".contains(c) {
                    return Err(bad_request(&format!(
                        "can't parse entities: Character '{c}' is reserved and must be escaped with the preceding '\\'"
                    )));
                }
            }
            Ok(())
        }
        Some("HTML") => {
            const TAGS: [&str; 12] = [
                "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre",
            ];
            for (at, _) in text.match_indices('<') {
                let tag: String = text[at + 1..]
                    .trim_start_matches('/')
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                if !TAGS.contains(&tag.as_str())
                    && tag != "tg-spoiler"
                    && tag != "blockquote"
                    && tag != "span"
                {
                    return Err(bad_request(&format!(
                        "can't parse entities: Unsupported start tag \"{tag}\" at byte offset {at}"
                    )));
                }
            }
            Ok(())
        }
        Some("Markdown") => Ok(()),
        Some(_) => Err(bad_request("unsupported parse_mode")),
    }
}

/// The entity types the Bot API knows.
const ENTITY_TYPES: [&str; 20] = [
    "mention",
    "hashtag",
    "cashtag",
    "bot_command",
    "url",
    "email",
    "phone_number",
    "bold",
    "italic",
    "underline",
    "strikethrough",
    "spoiler",
    "blockquote",
    "expandable_blockquote",
    "code",
    "pre",
    "text_link",
    "text_mention",
    "custom_emoji",
    "date_time",
];

/// Checks explicit `entities` against the text they format: a known type, a non-empty span, and
/// an offset and length (UTF-16 code units) inside the text. Returns them for the message.
fn check_entities(text: &str, params: &Value) -> Result<Option<Value>, Failure> {
    let Some(entities) = json_param(params, "entities") else {
        return Ok(None);
    };
    let Some(list) = entities.as_array() else {
        return Err(bad_request("can't parse entities JSON object"));
    };
    let units = utf16_len(text) as i64;
    for entity in list {
        let kind = entity.get("type").and_then(Value::as_str).unwrap_or("");
        if !ENTITY_TYPES.contains(&kind) {
            return Err(bad_request(&format!(
                "can't parse MessageEntity: unsupported type \"{kind}\""
            )));
        }
        let (Some(offset), Some(length)) =
            (int_param(entity, "offset"), int_param(entity, "length"))
        else {
            return Err(bad_request(
                "can't parse MessageEntity: field \"offset\" or \"length\" must be a number",
            ));
        };
        if offset < 0 || length <= 0 || offset + length > units {
            return Err(bad_request(&format!(
                "can't parse entities: entity {kind} at {offset}+{length} is outside the text of {units} UTF-16 units"
            )));
        }
    }
    Ok(Some(entities))
}

fn check_markup(markup: &Value) -> Result<(), Failure> {
    let rows = markup
        .get("inline_keyboard")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for button in rows.iter().filter_map(Value::as_array).flatten() {
        if let Some(data) = button.get("callback_data").and_then(Value::as_str) {
            if data.is_empty() || data.len() > 64 {
                return Err(bad_request("BUTTON_DATA_INVALID"));
            }
        }
    }
    Ok(())
}

/// `sendMessageDraft`: a private chat only, a non-zero `draft_id`, 1–4096 characters; the draft
/// is ephemeral, so nothing joins the chat's messages.
fn send_draft(w: &mut World, params: &Value) -> Result<Value, Failure> {
    if !w.drafts_enabled {
        return Err(bad_request(
            "method is available only for bots with forum topic mode enabled",
        ));
    }
    let chat_id = target_chat(w, params)?;
    if w.chats.get(&chat_id).map(|c| c.kind) != Some("private") {
        return Err(bad_request("chat must be a private chat"));
    }
    let draft_id = int_param(params, "draft_id").unwrap_or(0);
    if draft_id == 0 {
        return Err(bad_request("draft_id must be non-zero"));
    }
    let text = text_param(params, "text").unwrap_or_default();
    if text.trim().is_empty() || utf16_len(&text) > TEXT_MAX {
        return Err(bad_request("text must be 1-4096 characters"));
    }
    w.records.drafts.push(Draft {
        chat_id,
        draft_id,
        text,
        thread_id: int_param(params, "message_thread_id"),
    });
    Ok(json!(true))
}

fn send_message(w: &mut World, params: &Value) -> Result<Value, Failure> {
    let chat_id = target_chat(w, params)?;
    let text = text_param(params, "text").unwrap_or_default();
    if text.trim().is_empty() {
        return Err(bad_request("message text is empty"));
    }
    if utf16_len(&text) > TEXT_MAX {
        return Err(bad_request("message is too long"));
    }
    let parse_mode = text_param(params, "parse_mode").filter(|p| !p.is_empty());
    check_parse_mode(&text, parse_mode.as_deref())?;
    let entities = check_entities(&text, params)?;
    let thread = int_param(params, "message_thread_id");
    let placed = place(w, chat_id, thread)?;
    let reply_parameters = json_param(params, "reply_parameters");
    let reply_to = reply_parameters
        .as_ref()
        .and_then(|r| int_param(r, "message_id"))
        .or_else(|| int_param(params, "reply_to_message_id"));
    let allow_without = reply_parameters
        .as_ref()
        .is_some_and(|r| bool_param(r, "allow_sending_without_reply"))
        || bool_param(params, "allow_sending_without_reply");
    let reply_found = reply_to.filter(|id| w.messages.contains_key(&(chat_id, *id)));
    if reply_to.is_some() && reply_found.is_none() && !allow_without {
        return Err(bad_request("message to be replied not found"));
    }
    let markup = json_param(params, "reply_markup");
    if let Some(markup) = &markup {
        check_markup(markup)?;
    }
    let bot = w.bot.clone();
    let mut message = w.new_message(chat_id, &bot, &text, placed, reply_found);
    if markup.is_some() || entities.is_some() {
        if let Some(markup) = &markup {
            message["reply_markup"] = markup.clone();
        }
        if let Some(entities) = entities {
            // Explicit entities replace what the server would have found by itself.
            message["entities"] = entities;
        }
        w.messages.insert(
            (chat_id, message["message_id"].as_i64().unwrap_or_default()),
            message.clone(),
        );
    }
    w.records.sent.push(Sent {
        message_id: message["message_id"].as_i64().unwrap_or_default(),
        chat_id,
        thread_id: thread,
        reply_to,
        text,
        parse_mode,
        reply_markup: markup,
        body: params.clone(),
    });
    Ok(message)
}

fn edit(w: &mut World, method: &str, params: &Value, text: bool) -> Result<Value, Failure> {
    if params.get("inline_message_id").is_some() {
        return Ok(json!(true));
    }
    let chat_id = target_chat(w, params)?;
    let message_id = int_param(params, "message_id")
        .ok_or_else(|| bad_request("message identifier is not specified"))?;
    let Some(mut message) = w.messages.get(&(chat_id, message_id)).cloned() else {
        return Err(bad_request("message to edit not found"));
    };
    if message["from"]["id"].as_i64() != Some(w.bot.id) {
        return Err(bad_request("message can't be edited"));
    }
    let new_text = if text {
        text_param(params, "text")
    } else {
        None
    };
    if text && new_text.as_deref().is_none_or(|t| t.trim().is_empty()) {
        return Err(bad_request("message text is empty"));
    }
    let mut entities = None;
    if let Some(new_text) = &new_text {
        if utf16_len(new_text) > TEXT_MAX {
            return Err(bad_request("MESSAGE_TOO_LONG"));
        }
        check_parse_mode(new_text, text_param(params, "parse_mode").as_deref())?;
        entities = Some(
            check_entities(new_text, params)?
                .unwrap_or_else(|| json!(super::world::detect_entities(new_text))),
        );
    }
    let markup = json_param(params, "reply_markup");
    if let Some(markup) = &markup {
        check_markup(markup)?;
    }
    let old_entities = message.get("entities").cloned().unwrap_or(json!([]));
    let same_text = new_text
        .as_ref()
        .is_none_or(|t| message["text"].as_str() == Some(t.as_str()))
        && entities.as_ref().is_none_or(|e| *e == old_entities);
    let old_markup = message
        .get("reply_markup")
        .cloned()
        .filter(|m| !m.is_null());
    let empty_markup = |m: &Option<Value>| {
        m.as_ref().is_none_or(|m| {
            m["inline_keyboard"]
                .as_array()
                .is_none_or(|rows| rows.is_empty())
        })
    };
    let same_markup = markup == old_markup || (empty_markup(&markup) && empty_markup(&old_markup));
    if same_text && same_markup {
        return Err(bad_request(
            "message is not modified: specified new message content and reply markup are exactly the same as a \
             current content and reply markup of the message",
        ));
    }
    if let Some(new_text) = &new_text {
        message["text"] = json!(new_text);
    }
    match entities {
        Some(entities) if entities.as_array().is_some_and(|e| !e.is_empty()) => {
            message["entities"] = entities;
        }
        Some(_) => {
            if let Some(o) = message.as_object_mut() {
                o.remove("entities");
            }
        }
        None => {}
    }
    match &markup {
        Some(markup) => message["reply_markup"] = markup.clone(),
        None => {
            if let Some(o) = message.as_object_mut() {
                o.remove("reply_markup");
            }
        }
    }
    message["edit_date"] = json!(super::world::now_secs());
    w.messages.insert((chat_id, message_id), message.clone());
    w.records.edits.push(Edit {
        method: method.to_string(),
        chat_id,
        message_id,
        text: new_text,
        reply_markup: markup,
        body: params.clone(),
    });
    Ok(message)
}

fn answer_callback(w: &mut World, params: &Value) -> Result<Value, Failure> {
    let id = text_param(params, "callback_query_id").unwrap_or_default();
    match w.callbacks.get_mut(&id) {
        Some(answered) if !*answered => *answered = true,
        _ => {
            return Err(bad_request(
                "query is too old and response timeout expired or query id is invalid",
            ))
        }
    }
    w.records.callback_answers.push(CallbackAnswer {
        callback_query_id: id,
        text: text_param(params, "text"),
        show_alert: bool_param(params, "show_alert"),
    });
    Ok(json!(true))
}

fn set_reaction(w: &mut World, params: &Value) -> Result<Value, Failure> {
    let chat_id = target_chat(w, params)?;
    let message_id = int_param(params, "message_id")
        .ok_or_else(|| bad_request("message identifier is not specified"))?;
    if !w.messages.contains_key(&(chat_id, message_id)) {
        return Err(bad_request("message to react not found"));
    }
    let reaction = json_param(params, "reaction").unwrap_or(json!([]));
    if reaction.as_array().is_some_and(|r| r.len() > 1) {
        return Err(bad_request("REACTIONS_TOO_MANY"));
    }
    w.records.reactions.push(Reaction {
        chat_id,
        message_id,
        reaction,
    });
    Ok(json!(true))
}

fn chat_action(w: &mut World, params: &Value) -> Result<Value, Failure> {
    let chat_id = target_chat(w, params)?;
    let action = text_param(params, "action").unwrap_or_default();
    if action.is_empty() {
        return Err(bad_request("wrong parameter action in request"));
    }
    let thread = int_param(params, "message_thread_id");
    place(w, chat_id, thread)?;
    w.records.actions.push(ChatAction {
        chat_id,
        thread_id: thread,
        action,
    });
    Ok(json!(true))
}

/// The largest file the Bot API lets a bot download.
const DOWNLOAD_MAX: usize = 20 * 1024 * 1024;

fn get_file(w: &World, params: &Value) -> Result<Value, Failure> {
    let file_id = text_param(params, "file_id")
        .filter(|f| !f.is_empty())
        .ok_or_else(|| bad_request("file_id is empty"))?;
    let Some(file) = w.files.get(&file_id) else {
        return Err(bad_request("invalid file_id"));
    };
    if file.bytes.len() > DOWNLOAD_MAX {
        return Err(bad_request("file is too big"));
    }
    Ok(
        json!({"file_id": file_id, "file_unique_id": format!("u-{file_id}"),
        "file_size": file.bytes.len(), "file_path": file.path}),
    )
}

/// `GET {prefix}/file/bot{token}/{file_path}`: a file's bytes (or, when stalling, its headers and
/// nothing more).
pub(crate) async fn download(shared: &Arc<Shared>, path: &str) -> Option<Response> {
    let rest = path
        .strip_prefix(&shared.prefix)?
        .strip_prefix("/file/bot")?;
    let (token, file_path) = rest.split_once('/')?;
    let found = shared.update(|w| {
        if !w.token_valid || token != w.token {
            return Err(error(401, "Unauthorized"));
        }
        let Some(file) = w.files.values().find(|f| f.path == file_path).cloned() else {
            return Err(error(404, "Not Found"));
        };
        w.file_downloads += 1;
        Ok((file.bytes, w.stall_files))
    });
    let (bytes, stall) = match found {
        Ok(found) => found,
        Err(failure) => return Some(fail(&failure)),
    };
    let body = if stall {
        // The headers go out; the body never comes.
        let stream = futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
        Body::from_stream(stream)
    } else {
        Body::from(bytes.as_ref().clone())
    };
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_keep_the_prefix_and_need_a_token() {
        let cases = [
            ("", "/bot1:A/getMe", Some(("1:A", "getMe"))),
            (
                "/tg",
                "/tg/bot1:A/sendMessage",
                Some(("1:A", "sendMessage")),
            ),
            ("/tg", "/bot1:A/getMe", None),
            ("", "/bot/getMe", None),
            ("", "/bot1:A/", None),
            ("", "/file/bot1:A/documents/x", None),
        ];
        for (prefix, path, expected) in cases {
            let found = route(prefix, path);
            assert_eq!(
                found.as_ref().map(|(t, m)| (t.as_str(), m.as_str())),
                expected,
                "{prefix} {path}"
            );
        }
    }

    #[test]
    fn parameters_come_from_query_and_any_body_encoding() {
        let uri: Uri = "/bot1:A/sendMessage?chat_id=-100&text=hi%20there"
            .parse()
            .expect("uri");
        let from_query = params(&uri, "", b"").expect("query");
        assert_eq!(from_query, json!({"chat_id": -100, "text": "hi there"}));
        let uri: Uri = "/bot1:A/getUpdates".parse().expect("uri");
        let form = params(
            &uri,
            "application/x-www-form-urlencoded",
            b"offset=5&allowed_updates=%5B%22message%22%5D",
        )
        .expect("form");
        assert_eq!(
            json_param(&form, "allowed_updates"),
            Some(json!(["message"]))
        );
        assert_eq!(int_param(&form, "offset"), Some(5));
        let body = params(&uri, "application/json", br#"{"offset":7,"timeout":1}"#).expect("json");
        assert_eq!(int_param(&body, "timeout"), Some(1));
        assert!(params(&uri, "application/json", b"[1]").is_err());
    }

    #[test]
    fn parse_modes_are_checked_like_the_server() {
        let cases = [
            ("a.b", None, true),
            ("a.b", Some("MarkdownV2"), false),
            ("a\\.b", Some("MarkdownV2"), true),
            ("1 < 2", Some("HTML"), false),
            ("<b>x</b> &lt;", Some("HTML"), true),
            ("x", Some("Fancy"), false),
        ];
        for (text, mode, accepted) in cases {
            assert_eq!(
                check_parse_mode(text, mode).is_ok(),
                accepted,
                "{text:?} {mode:?}"
            );
        }
    }
}
