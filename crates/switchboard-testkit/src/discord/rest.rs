//! The REST surface under `/api/v10`: auth, recording, scripted failures, rate-limit buckets and
//! the handlers. Error bodies are Discord's: `{"message":"…","code":N}`.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::Router;
use serde_json::{json, Value};

use super::state::{self, Bucket, Original, Shared, PUBLIC_THREAD};
use super::{
    gateway, message_json, EphemeralMessage, Failure, InteractionCallback, PostedMessage, Reaction,
    RecordedRequest,
};

type Shared_ = Arc<Shared>;

pub(crate) fn router(shared: Shared_) -> Router {
    let api = Router::new()
        .route("/users/@me", get(me))
        .route("/users/@me/channels", post(open_dm))
        .route("/gateway/bot", get(gateway_bot))
        .route("/channels/{channel}", get(get_channel))
        .route("/channels/{channel}/messages", post(create_message))
        .route(
            "/channels/{channel}/messages/{message}",
            patch(edit_message).get(get_message),
        )
        .route("/channels/{channel}/typing", post(typing))
        .route(
            "/channels/{channel}/messages/{message}/reactions/{emoji}/@me",
            put(react),
        )
        .route(
            "/channels/{channel}/thread-members/{user}",
            get(thread_member),
        )
        .route("/applications/{application}/commands", put(put_commands))
        .route("/interactions/{id}/{token}/callback", post(callback))
        .route(
            "/webhooks/{application}/{token}/messages/@original",
            patch(edit_original),
        )
        .route("/webhooks/{application}/{token}", post(follow_up))
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .layer(middleware::from_fn_with_state(shared.clone(), record))
        .with_state(shared.clone());
    Router::new()
        .route("/gateway", get(gateway::upgrade))
        .route("/gateway/", get(gateway::upgrade))
        .route("/resume", get(gateway::upgrade))
        .route("/resume/", get(gateway::upgrade))
        .route("/attachments/{channel}/{file}/{name}", get(attachment))
        .with_state(shared)
        .nest("/api/v10", api)
}

/// An attachment's bytes from the fake CDN (no token: the address is signed).
async fn attachment(
    State(shared): State<Shared_>,
    Path((_channel, file, _name)): Path<(String, String, String)>,
) -> Response {
    let found = {
        let mut st = shared.lock();
        let bytes = st.files.get(&file).cloned();
        if bytes.is_some() {
            st.file_downloads += 1;
        }
        bytes.map(|b| (b, st.stall_files))
    };
    match found {
        None => (
            StatusCode::NOT_FOUND,
            "This content is no longer available.",
        )
            .into_response(),
        Some((_, true)) => {
            let stream = futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
            (StatusCode::OK, Body::from_stream(stream)).into_response()
        }
        Some((bytes, false)) => (StatusCode::OK, bytes.as_ref().clone()).into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Middleware

/// Records every exchange (the outermost layer, so 401s and scripted failures are recorded).
async fn record(State(shared): State<Shared_>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let mut headers = BTreeMap::<String, String>::new();
    for (name, value) in &parts.headers {
        headers.insert(
            name.as_str().to_owned(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        );
    }
    let body_json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let method = parts.method.to_string();
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    shared.lock().records.requests.push(RecordedRequest {
        method,
        path,
        headers,
        body: body_json,
        status: response.status().as_u16(),
    });
    response
}

/// Bot auth (interaction callbacks and webhooks, which carry their token, need none), then any
/// scripted failure.
async fn gate(State(shared): State<Shared_>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let method = req.method().to_string();
    if !path.starts_with("/interactions/") && !path.starts_with("/webhooks/") {
        let token = shared.lock().token.clone();
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(format!("Bot {token}").as_str()) {
            return error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized");
        }
    }
    let failure = shared.lock().take_failure(&method, &path);
    match failure {
        None => next.run(req).await,
        Some(Failure::Slow(delay)) => {
            tokio::time::sleep(delay).await;
            next.run(req).await
        }
        Some(Failure::Status(status)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = status.canonical_reason().unwrap_or("error");
            error(status, 0, &format!("{}: {message}", status.as_u16()))
        }
        Some(Failure::RateLimited {
            retry_after,
            global,
        }) => {
            let template = template(&method, &path);
            let mut headers = limit_headers(&template, 5, 0, retry_after);
            insert(
                &mut headers,
                "x-ratelimit-scope",
                if global { "global" } else { "user" },
            );
            if global {
                insert(&mut headers, "x-ratelimit-global", "true");
            }
            limited(headers, retry_after, global)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn error(status: StatusCode, code: u64, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "message": message, "code": code })),
    )
        .into_response()
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// The route's template with ids replaced, e.g. `POST /channels/{}/messages`.
fn template(method: &str, path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .map(|seg| {
            if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
                "{}"
            } else {
                seg
            }
        })
        .collect();
    format!("{method} {}", parts.join("/"))
}

/// A stable hash per route template, like Discord's opaque bucket ids.
fn bucket_id(template: &str) -> String {
    let mut hasher = DefaultHasher::new();
    template.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

fn limit_headers(template: &str, limit: u32, remaining: u32, reset_after: f64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let reset = state::unix_ms() as f64 / 1000.0 + reset_after;
    insert(&mut headers, "x-ratelimit-bucket", &bucket_id(template));
    insert(&mut headers, "x-ratelimit-limit", &limit.to_string());
    insert(
        &mut headers,
        "x-ratelimit-remaining",
        &remaining.to_string(),
    );
    insert(&mut headers, "x-ratelimit-reset", &format!("{reset:.3}"));
    insert(
        &mut headers,
        "x-ratelimit-reset-after",
        &format!("{reset_after:.3}"),
    );
    headers
}

fn limited(mut headers: HeaderMap, retry_after: f64, global: bool) -> Response {
    insert(
        &mut headers,
        "retry-after",
        &(retry_after.ceil() as u64).to_string(),
    );
    let body = json!({
        "message": "You are being rate limited.",
        "retry_after": (retry_after * 1000.0).round() / 1000.0,
        "global": global,
    });
    (StatusCode::TOO_MANY_REQUESTS, headers, axum::Json(body)).into_response()
}

/// Takes one request from the (template, major) bucket: its headers, or a 429 when it is empty.
fn take_bucket(
    shared: &Shared,
    template: &str,
    major: &str,
    limit: u32,
    window: Duration,
) -> Result<HeaderMap, Box<Response>> {
    let now = Instant::now();
    let mut st = shared.lock();
    let bucket = st
        .buckets
        .entry((template.to_owned(), major.to_owned()))
        .or_insert_with(|| Bucket {
            remaining: limit,
            reset_at: now + window,
        });
    if now >= bucket.reset_at {
        bucket.remaining = limit;
        bucket.reset_at = now + window;
    }
    let reset_after = bucket.reset_at.saturating_duration_since(now).as_secs_f64();
    if bucket.remaining == 0 {
        let mut headers = limit_headers(template, limit, 0, reset_after);
        insert(&mut headers, "x-ratelimit-scope", "user");
        return Err(Box::new(limited(headers, reset_after, false)));
    }
    bucket.remaining -= 1;
    Ok(limit_headers(
        template,
        limit,
        bucket.remaining,
        reset_after,
    ))
}

/// Buckets that are never exhausted in tests, only reported.
const ROOMY: u32 = 1000;

fn no_content(headers: HeaderMap) -> Response {
    (StatusCode::NO_CONTENT, headers).into_response()
}

fn unknown_channel() -> Response {
    error(StatusCode::NOT_FOUND, 10003, "Unknown Channel")
}

fn unknown_message() -> Response {
    error(StatusCode::NOT_FOUND, 10008, "Unknown Message")
}

fn unknown_interaction() -> Response {
    error(StatusCode::NOT_FOUND, 10062, "Unknown interaction")
}

fn unknown_webhook() -> Response {
    error(StatusCode::NOT_FOUND, 10015, "Unknown Webhook")
}

/// A 400 Invalid Form Body naming the field and why, as Discord words it.
fn invalid_form(field: &str, code: &str, message: &str) -> Response {
    let body = json!({
        "message": "Invalid Form Body", "code": 50035,
        "errors": { field: { "_errors": [ { "code": code, "message": message } ] } },
    });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

/// How long an interaction token works for follow-ups.
const INTERACTION_TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// Checks legacy message components as Discord does ([D4]): at most 5 action rows; a row holds
/// 1–5 buttons; a button has a style 1–6 and a label of at most 80 characters; styles 1–4 need a
/// `custom_id` of 1–100 characters, unique in the message; style 5 needs a `url` and no
/// `custom_id`.
fn check_components(components: &Value) -> Result<(), &'static str> {
    let Some(rows) = components.as_array() else {
        return Err("components must be an array");
    };
    if rows.len() > 5 {
        return Err("a message holds at most 5 action rows");
    }
    let mut ids = Vec::new();
    for row in rows {
        if row["type"] != 1 {
            return Err("a top-level component must be an action row (type 1)");
        }
        let Some(items) = row["components"].as_array() else {
            return Err("an action row needs components");
        };
        if items.is_empty() || items.len() > 5 {
            return Err("an action row holds 1 to 5 buttons");
        }
        for button in items {
            if button["type"] != 2 {
                return Err("the fake only takes buttons (type 2) in action rows");
            }
            let style = button["style"].as_u64().unwrap_or(0);
            if !(1..=6).contains(&style) {
                return Err("a button's style is 1 to 6");
            }
            let label = button["label"].as_str().unwrap_or("");
            if label.chars().count() > 80 {
                return Err("a button label holds at most 80 characters");
            }
            let custom_id = button.get("custom_id").and_then(Value::as_str);
            match style {
                1..=4 => {
                    let Some(id) = custom_id else {
                        return Err("buttons of styles 1-4 need a custom_id");
                    };
                    let length = id.chars().count();
                    if length == 0 || length > 100 {
                        return Err("a custom_id holds 1 to 100 characters");
                    }
                    if ids.contains(&id) {
                        return Err("custom_ids must be unique in a message");
                    }
                    ids.push(id);
                }
                5 if custom_id.is_some() || button["url"].as_str().is_none() => {
                    return Err("a link button has a url and no custom_id");
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Checks the content and components of a message body (a post, an edit, an interaction
/// answer): `Err` is the 400 to answer with.
fn check_message_fields(body: &Value) -> Result<(), Box<Response>> {
    if let Some(content) = body.get("content").and_then(Value::as_str) {
        if content.chars().count() > 2000 {
            return Err(Box::new(invalid_form(
                "content",
                "BASE_TYPE_MAX_LENGTH",
                "Must be 2000 or fewer in length.",
            )));
        }
    }
    if let Some(components) = body.get("components").filter(|c| !c.is_null()) {
        if let Err(why) = check_components(components) {
            return Err(Box::new(invalid_form(
                "components",
                "COMPONENT_INVALID",
                why,
            )));
        }
    }
    Ok(())
}

/// Applies an edit (`content`, `components`) to a stored message.
fn apply_edit(message: &mut Value, body: &Value) {
    for field in ["content", "components", "embeds"] {
        if let Some(value) = body.get(field).filter(|v| !v.is_null()) {
            message[field] = value.clone();
        }
    }
    message["edited_timestamp"] = json!(state::timestamp(state::unix_ms()));
}

// ---------------------------------------------------------------------------------------------
// Handlers

async fn me(State(shared): State<Shared_>) -> Response {
    axum::Json(shared.lock().bot_user()).into_response()
}

async fn gateway_bot(State(shared): State<Shared_>) -> Response {
    let identifies = shared.lock().records.identifies.len();
    axum::Json(json!({
        "url": shared.gateway_url(),
        "shards": 1,
        "session_start_limit": {
            "total": 1000,
            "remaining": 1000usize.saturating_sub(identifies),
            "reset_after": 14_400_000,
            "max_concurrency": 1,
        },
    }))
    .into_response()
}

async fn get_channel(State(shared): State<Shared_>, Path(channel): Path<String>) -> Response {
    let headers = match take_bucket(
        &shared,
        "GET /channels/{}",
        &channel,
        ROOMY,
        Duration::from_secs(1),
    ) {
        Ok(headers) => headers,
        Err(response) => return *response,
    };
    match shared.lock().channel_json(&channel) {
        Some(body) => (headers, axum::Json(body)).into_response(),
        None => unknown_channel(),
    }
}

async fn thread_member(
    State(shared): State<Shared_>,
    Path((channel, user)): Path<(String, String)>,
) -> Response {
    let st = shared.lock();
    let Some(info) = st.channels.get(&channel) else {
        return unknown_channel();
    };
    if info.members.contains(&user) {
        axum::Json(json!({
            "id": channel, "user_id": user, "join_timestamp": state::timestamp(state::unix_ms()), "flags": 0,
        }))
        .into_response()
    } else {
        error(StatusCode::NOT_FOUND, 10007, "Unknown Member")
    }
}

async fn create_message(
    State(shared): State<Shared_>,
    Path(channel): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let limit = shared.opts.bucket_limit;
    let window = shared.opts.bucket_window;
    let headers = match take_bucket(
        &shared,
        "POST /channels/{}/messages",
        &channel,
        limit,
        window,
    ) {
        Ok(headers) => headers,
        Err(response) => return *response,
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            50109,
            "The request body contains invalid JSON.",
        );
    };
    let mut st = shared.lock();
    let Some(info) = st.channels.get(&channel) else {
        return unknown_channel();
    };
    let (guild, kind) = (info.guild.clone(), info.kind);
    let content = body
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let has_other = ["embeds", "components", "sticker_ids", "poll"]
        .iter()
        .any(|k| {
            body.get(*k)
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
        });
    if content.trim().is_empty() && !has_other {
        return error(
            StatusCode::BAD_REQUEST,
            50006,
            "Cannot send an empty message",
        );
    }
    if let Err(response) = check_message_fields(&body) {
        return *response;
    }
    let reference = body
        .get("message_reference")
        .cloned()
        .filter(|r| !r.is_null());
    if let Some(reference) = &reference {
        let id = reference
            .get("message_id")
            .and_then(Value::as_str)
            .unwrap_or("");
        let must_exist =
            reference.get("fail_if_not_exists").and_then(Value::as_bool) != Some(false);
        if must_exist && !st.messages.contains_key(id) {
            let body = json!({
                "message": "Invalid Form Body", "code": 50035,
                "errors": { "message_reference": { "_errors": [
                    { "code": "REPLIES_UNKNOWN_MESSAGE", "message": "Unknown message" }
                ] } },
            });
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    }
    let id = st.snowflake();
    st.records.posted.push(PostedMessage {
        id: id.clone(),
        channel: channel.clone(),
        content: content.clone(),
        message_reference: reference.clone(),
        allowed_mentions: body.get("allowed_mentions").cloned(),
        body: body.clone(),
    });
    let bot = st.bot_user();
    let mut message = message_json(&st, &id, &channel, guild.as_deref(), bot, &content);
    if let Some(components) = body.get("components") {
        message["components"] = components.clone();
    }
    if let Some(reference) = &reference {
        message["type"] = json!(19);
        message["message_reference"] = json!({
            "type": 0, "message_id": reference.get("message_id"), "channel_id": channel, "guild_id": guild,
        });
    }
    st.messages.insert(id.clone(), message.clone());
    if kind == PUBLIC_THREAD {
        // Posting in a thread makes the bot one of its members.
        let bot_id = st.bot_id.clone();
        if let Some(info) = st.channels.get_mut(&channel) {
            if !info.members.contains(&bot_id) {
                info.members.push(bot_id);
            }
        }
    }
    // Discord sends the bot its own messages too.
    st.dispatch("MESSAGE_CREATE", &message);
    (headers, axum::Json(message)).into_response()
}

async fn edit_message(
    State(shared): State<Shared_>,
    Path((channel, message)): Path<(String, String)>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Err(response) = check_message_fields(&body) {
        return *response;
    }
    let mut st = shared.lock();
    let bot_id = st.bot_id.clone();
    let Some(stored) = st.messages.get_mut(&message) else {
        return unknown_message();
    };
    if stored["channel_id"] != json!(channel) {
        return unknown_message();
    }
    if stored["author"]["id"] != json!(bot_id) {
        return error(
            StatusCode::FORBIDDEN,
            50005,
            "Cannot edit a message authored by another user",
        );
    }
    apply_edit(stored, &body);
    let updated = stored.clone();
    st.records.edits.push(PostedMessage {
        id: message,
        channel,
        content: updated["content"].as_str().unwrap_or("").to_owned(),
        message_reference: None,
        allowed_mentions: body.get("allowed_mentions").cloned(),
        body,
    });
    axum::Json(updated).into_response()
}

async fn get_message(
    State(shared): State<Shared_>,
    Path((channel, message)): Path<(String, String)>,
) -> Response {
    let st = shared.lock();
    match st.messages.get(&message) {
        Some(stored) if stored["channel_id"] == json!(channel) => {
            axum::Json(stored.clone()).into_response()
        }
        _ => unknown_message(),
    }
}

/// `PUT /applications/{id}/commands`: the bot's global slash commands, replaced.
async fn put_commands(
    State(shared): State<Shared_>,
    Path(application): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut st = shared.lock();
    if application != st.app_id {
        return error(StatusCode::FORBIDDEN, 50001, "Missing Access");
    }
    let Some(commands) = body.as_array() else {
        return invalid_form("commands", "BASE_TYPE_ARRAY", "Must be an array.");
    };
    let bad = commands.iter().any(|c| {
        let name = c["name"].as_str().unwrap_or_default();
        let description = c["description"].as_str().unwrap_or_default();
        name.is_empty()
            || name.len() > 32
            || name
                .chars()
                .any(|ch| ch.is_ascii_uppercase() || ch.is_whitespace())
            || description.is_empty()
            || description.chars().count() > 100
    });
    if bad {
        return invalid_form("name", "APPLICATION_COMMAND_INVALID", "Invalid command.");
    }
    st.records.command_puts.push(body.clone());
    axum::Json(body).into_response()
}

async fn typing(State(shared): State<Shared_>, Path(channel): Path<String>) -> Response {
    let headers = match take_bucket(
        &shared,
        "POST /channels/{}/typing",
        &channel,
        ROOMY,
        Duration::from_secs(5),
    ) {
        Ok(headers) => headers,
        Err(response) => return *response,
    };
    let mut st = shared.lock();
    if !st.channels.contains_key(&channel) {
        return unknown_channel();
    }
    st.records.typing.push(channel);
    no_content(headers)
}

async fn react(
    State(shared): State<Shared_>,
    Path((channel, message, emoji)): Path<(String, String, String)>,
) -> Response {
    let headers = match take_bucket(
        &shared,
        "PUT /channels/{}/messages/{}/reactions/{}/@me",
        &channel,
        ROOMY,
        Duration::from_millis(250),
    ) {
        Ok(headers) => headers,
        Err(response) => return *response,
    };
    let mut st = shared.lock();
    if !st.channels.contains_key(&channel) {
        return unknown_channel();
    }
    if !st.messages.contains_key(&message) {
        return unknown_message();
    }
    st.records.reactions.push(Reaction {
        channel,
        message,
        emoji,
    });
    no_content(headers)
}

async fn open_dm(State(shared): State<Shared_>, axum::Json(body): axum::Json<Value>) -> Response {
    let Some(user) = body
        .get("recipient_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body");
    };
    let mut st = shared.lock();
    st.records.dm_opens.push(user.clone());
    let channel = st.dm_channel(&user);
    match st.channel_json(&channel) {
        Some(body) => axum::Json(body).into_response(),
        None => unknown_channel(),
    }
}

/// Answers an interaction: once, within the deadline, with a valid body. Type 7 edits the
/// clicked message, type 4 posts a message (to the clicker alone with flags 64), types 5 and 6
/// acknowledge.
async fn callback(
    State(shared): State<Shared_>,
    Path((id, token)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let deadline = shared.opts.interaction_deadline;
    let mut st = shared.lock();
    let response = answer_interaction(&mut st, &id, &token, &body, deadline);
    st.records.callbacks.push(InteractionCallback {
        id,
        token,
        body,
        status: response.status().as_u16(),
    });
    response
}

fn answer_interaction(
    st: &mut state::State,
    id: &str,
    token: &str,
    body: &Value,
    deadline: Duration,
) -> Response {
    let Some(interaction) = st.interactions.get(id).filter(|i| i.token == token) else {
        return unknown_interaction();
    };
    if interaction.original.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            40060,
            "Interaction has already been acknowledged.",
        );
    }
    if interaction.created.elapsed() >= deadline {
        return unknown_interaction();
    }
    let (channel, message, user) = (
        interaction.channel.clone(),
        interaction.message.clone(),
        interaction.user.clone(),
    );
    let data = body.get("data").cloned().unwrap_or(Value::Null);
    if let Err(response) = check_message_fields(&data) {
        return *response;
    }
    let ephemeral = data["flags"].as_u64().is_some_and(|f| f & 64 != 0);
    let original = match body["type"].as_u64() {
        Some(6) => Original::Component,
        Some(7) => {
            // A click forged on a message the fake never saw has nothing to update.
            if let Some(stored) = st.messages.get_mut(&message) {
                apply_edit(stored, &data);
            }
            Original::Component
        }
        Some(5) => Original::Thinking { ephemeral },
        Some(4) => match respond(st, id, &channel, &user, &data, ephemeral) {
            Ok(original) => original,
            Err(response) => return *response,
        },
        _ => {
            return invalid_form(
                "type",
                "BASE_TYPE_CHOICES",
                "Value must be one of {4, 5, 6, 7, 9}.",
            )
        }
    };
    if let Some(interaction) = st.interactions.get_mut(id) {
        interaction.original = Some(original);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// A message answering an interaction: to the clicker alone, or in the channel.
fn respond(
    st: &mut state::State,
    interaction: &str,
    channel: &str,
    user: &str,
    data: &Value,
    ephemeral: bool,
) -> Result<Original, Box<Response>> {
    let content = data["content"].as_str().unwrap_or("").to_owned();
    let has_other = ["embeds", "components"]
        .iter()
        .any(|k| data[*k].as_array().is_some_and(|a| !a.is_empty()));
    if content.trim().is_empty() && !has_other {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            50006,
            "Cannot send an empty message",
        )));
    }
    if ephemeral {
        st.records.ephemerals.push(EphemeralMessage {
            interaction: interaction.to_owned(),
            user: user.to_owned(),
            channel: channel.to_owned(),
            content,
            body: data.clone(),
        });
        return Ok(Original::Ephemeral(st.records.ephemerals.len() - 1));
    }
    let id = st.snowflake();
    let guild = st.channels.get(channel).and_then(|c| c.guild.clone());
    let bot = st.bot_user();
    let mut message = message_json(st, &id, channel, guild.as_deref(), bot, &content);
    if let Some(components) = data.get("components").filter(|c| !c.is_null()) {
        message["components"] = components.clone();
    }
    st.records.posted.push(PostedMessage {
        id: id.clone(),
        channel: channel.to_owned(),
        content,
        message_reference: None,
        allowed_mentions: data.get("allowed_mentions").cloned(),
        body: data.clone(),
    });
    st.messages.insert(id.clone(), message.clone());
    st.dispatch("MESSAGE_CREATE", &message);
    Ok(Original::Message(id))
}

/// The answered interaction a webhook token belongs to (tokens work for 15 minutes).
fn webhook_interaction(st: &state::State, application: &str, token: &str) -> Option<String> {
    if application != st.app_id {
        return None;
    }
    st.interactions
        .iter()
        .find(|(_, i)| {
            i.token == token
                && i.original.is_some()
                && i.created.elapsed() < INTERACTION_TOKEN_LIFETIME
        })
        .map(|(id, _)| id.clone())
}

/// `PATCH /webhooks/{app}/{token}/messages/@original`: edits what the interaction's answer made
/// (for a component after type 6 or 7: the clicked message).
async fn edit_original(
    State(shared): State<Shared_>,
    Path((application, token)): Path<(String, String)>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Err(response) = check_message_fields(&body) {
        return *response;
    }
    let mut st = shared.lock();
    let Some(id) = webhook_interaction(&st, &application, &token) else {
        return unknown_webhook();
    };
    let Some(interaction) = st.interactions.get(&id) else {
        return unknown_webhook();
    };
    let (channel, clicked, user) = (
        interaction.channel.clone(),
        interaction.message.clone(),
        interaction.user.clone(),
    );
    let target = match interaction.original.clone() {
        Some(Original::Component) => clicked,
        Some(Original::Message(message)) => message,
        Some(Original::Ephemeral(index)) => {
            let Some(shown) = st.records.ephemerals.get_mut(index) else {
                return unknown_message();
            };
            if let Some(content) = body["content"].as_str() {
                shown.content = content.to_owned();
            }
            shown.body = body.clone();
            return axum::Json(json!({ "id": id, "content": shown.content })).into_response();
        }
        Some(Original::Thinking { ephemeral }) => {
            let original = match respond(&mut st, &id, &channel, &user, &body, ephemeral) {
                Ok(original) => original,
                Err(response) => return *response,
            };
            if let Some(interaction) = st.interactions.get_mut(&id) {
                interaction.original = Some(original);
            }
            return axum::Json(json!({ "id": id, "content": body["content"] })).into_response();
        }
        None => return unknown_webhook(),
    };
    let Some(stored) = st.messages.get_mut(&target) else {
        return unknown_message();
    };
    apply_edit(stored, &body);
    axum::Json(stored.clone()).into_response()
}

/// `POST /webhooks/{app}/{token}`: a follow-up message (to the clicker alone with flags 64).
async fn follow_up(
    State(shared): State<Shared_>,
    Path((application, token)): Path<(String, String)>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Err(response) = check_message_fields(&body) {
        return *response;
    }
    let mut st = shared.lock();
    let Some(id) = webhook_interaction(&st, &application, &token) else {
        return unknown_webhook();
    };
    let Some(interaction) = st.interactions.get(&id) else {
        return unknown_webhook();
    };
    let (channel, user) = (interaction.channel.clone(), interaction.user.clone());
    let ephemeral = body["flags"].as_u64().is_some_and(|f| f & 64 != 0);
    match respond(&mut st, &id, &channel, &user, &body, ephemeral) {
        Ok(Original::Message(message)) => st
            .messages
            .get(&message)
            .cloned()
            .map_or_else(unknown_message, |m| axum::Json(m).into_response()),
        Ok(_) => {
            axum::Json(json!({ "id": st.snowflake(), "content": body["content"], "flags": 64 }))
                .into_response()
        }
        Err(response) => *response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_hide_ids() {
        assert_eq!(
            template("POST", "/channels/123/messages"),
            "POST /channels/{}/messages"
        );
        assert_eq!(template("GET", "/users/@me"), "GET /users/@me");
        assert_eq!(bucket_id("a"), bucket_id("a"));
        assert_ne!(bucket_id("a"), bucket_id("b"));
    }
}
