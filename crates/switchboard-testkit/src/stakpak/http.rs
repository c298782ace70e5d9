//! The HTTP surface: routes, auth, recording, idempotency and the handlers.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::run;
use super::script::{AutoApprove, Script};
use super::sse::{self, Writing};
use super::state::{Decision, Faults as FakeFaults, RunState, Shared, State as FakeState};
use super::wire::{self, Action, AutoApproveWire, MessageKind};
use super::{PostedMessage, RecordedBody, RecordedDecision, RecordedRequest, VERSION};

/// The state every handler gets.
type App = Arc<Shared>;
/// Handlers answer `Err(reject)` for every error so `?` works on parsing and lookups.
type Answer = Result<Response, Reject>;

pub(crate) fn router(shared: App) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/config", get(config))
        .route("/v1/models", get(models))
        .route("/v1/sessions", post(create_session).get(list_sessions))
        .route("/v1/sessions/{id}", get(get_session).delete(delete_session))
        .route(
            "/v1/sessions/{id}/messages",
            post(post_message).get(get_messages),
        )
        .route("/v1/sessions/{id}/cancel", post(cancel))
        .route("/v1/sessions/{id}/events", get(events))
        .route("/v1/sessions/{id}/tools/pending", get(pending_tools))
        .route("/v1/sessions/{id}/tools/decisions", post(decisions))
        .route("/v1/sessions/{id}/tools/resolve", post(decisions))
        .route(
            "/v1/sessions/{id}/tools/{tool_call_id}/decision",
            post(single_decision),
        )
        .layer(middleware::from_fn_with_state(shared.clone(), faults))
        .layer(middleware::from_fn_with_state(shared.clone(), auth))
        .layer(middleware::from_fn_with_state(shared.clone(), record))
        .with_state(shared)
}

// ---------------------------------------------------------------------------------------------
// Middleware

/// Records every exchange (outermost layer, so 401s are recorded too).
async fn record(State(shared): State<App>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, 64 * 1024 * 1024).await {
        Ok(bytes) => bytes,
        Err(err) => {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("Failed to read body: {err}"),
            )
            .into_response()
        }
    };
    let method = parts.method.to_string();
    let path = parts.uri.path_and_query().map_or_else(
        || parts.uri.path().to_string(),
        |pq| pq.as_str().to_string(),
    );
    let mut headers = BTreeMap::<String, String>::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let recorded_body = if bytes.is_empty() {
        RecordedBody::Empty
    } else {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => RecordedBody::Json(v),
            Err(_) => RecordedBody::Text(String::from_utf8_lossy(&bytes).into_owned()),
        }
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    shared.lock().records.requests.push(RecordedRequest {
        method,
        path,
        headers,
        body: recorded_body,
        status: response.status().as_u16(),
    });
    response
}

/// Bearer auth on everything but the public endpoints.
async fn auth(State(shared): State<App>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/v1/health" || path == "/v1/openapi.json" {
        return next.run(req).await;
    }
    let token = shared.lock().token.clone();
    if let Some(token) = token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(format!("Bearer {token}").as_str()) {
            // A literal, so the keys keep the real server's order.
            return (
                StatusCode::UNAUTHORIZED,
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"error":"Unauthorized","code":"unauthorized"}"#,
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// Faults a test armed with [`super::FakeStakpak::fail_next`] and
/// [`super::FakeStakpak::lose_next_answer`].
async fn faults(State(shared): State<App>, req: Request, next: Next) -> Response {
    let Some(route) = super::Route::of(req.method().as_str(), req.uri().path()) else {
        return next.run(req).await;
    };
    let (fail, lose) = {
        let mut st = shared.lock();
        let fail = FakeFaults::take(&mut st.faults.fail, route);
        (fail, !fail && FakeFaults::take(&mut st.faults.lose, route))
    };
    if fail {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"error":"Service unavailable (injected by the test)","code":"unavailable"}"#,
        )
            .into_response();
    }
    if !lose {
        return next.run(req).await;
    }
    let path = req.uri().path().to_string();
    let key = idempotency_key(req.headers());
    let response = next.run(req).await;
    if response.status().is_success() {
        // The connection broke while the answer was written: the client sees a gateway error and
        // the server, which records a key only once its answer is out, remembers nothing.
        if let Some(key) = key {
            shared.lock().idempotency.remove(&(path, key));
        }
        return (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"error":"Bad gateway (answer lost, injected by the test)","code":"bad_gateway"}"#,
        )
            .into_response();
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    (status, axum::Json(value)).into_response()
}

/// An error answer: small, so `Result<_, Reject>` stays cheap to pass around.
pub(crate) enum Reject {
    /// `{"error","code","request_id"}`.
    Api {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    /// Plain text, like axum's own extractor rejections.
    Plain { status: StatusCode, text: String },
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        match self {
            Reject::Api {
                status,
                code,
                message,
            } => json_response(
                status,
                &wire::ErrorBody {
                    error: &message,
                    code,
                    request_id: wire::request_id(),
                },
            ),
            Reject::Plain { status, text } => (
                status,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                )],
                text,
            )
                .into_response(),
        }
    }
}

fn api_error(status: StatusCode, code: &'static str, message: &str) -> Reject {
    Reject::Api {
        status,
        code,
        message: message.to_string(),
    }
}

fn plain(status: StatusCode, text: &str) -> Reject {
    Reject::Plain {
        status,
        text: text.to_string(),
    }
}

fn not_found(id: Uuid) -> Reject {
    api_error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("Session {id} not found"),
    )
}

fn no_active_run() -> Reject {
    api_error(
        StatusCode::CONFLICT,
        "session_not_running",
        "Session has no active run",
    )
}

fn run_mismatch() -> Reject {
    api_error(
        StatusCode::CONFLICT,
        "run_mismatch",
        "Provided run_id does not match active run",
    )
}

fn already_running() -> Reject {
    api_error(
        StatusCode::CONFLICT,
        "session_already_running",
        "Session already has an active run",
    )
}

fn invalid_request(message: &str) -> Reject {
    api_error(StatusCode::BAD_REQUEST, "invalid_request", message)
}

/// Path ids are uuids; anything else is a 400 in plain text, like axum's `Path<Uuid>` rejection.
fn parse_uuid(name: &str, raw: &str) -> Result<Uuid, Reject> {
    Uuid::parse_str(raw).map_err(|err| {
        plain(
            StatusCode::BAD_REQUEST,
            &format!(
                "Invalid URL: Cannot parse `{name}` with value `{raw}`: UUID parsing failed: {err}"
            ),
        )
    })
}

/// A JSON body as the typed request and as a value (for idempotency); a body that does not parse
/// is a 422 in plain text, as the contract observed.
fn parse_body<T: DeserializeOwned>(bytes: &Bytes) -> Result<(T, Value), Reject> {
    let value: Value = serde_json::from_slice(bytes).map_err(|err| {
        plain(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("Failed to parse the request body as JSON: {err}"),
        )
    })?;
    let typed: T = serde_json::from_slice(bytes).map_err(|err| {
        plain(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("Failed to deserialize the JSON body into the target type: {err}"),
        )
    })?;
    Ok((typed, value))
}

fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The result of a mutating handler: a JSON answer worth storing under an idempotency key.
/// The JSON is kept as text so fresh answers keep their field order; replays come from a stored
/// `Value` and so have sorted keys, which is also what the real server does.
type Outcome = Result<(StatusCode, String), Reject>;

fn ok(status: StatusCode, value: &impl Serialize) -> Outcome {
    // Serializing the fake's own response types cannot fail.
    Ok((status, serde_json::to_string(value).unwrap_or_default()))
}

enum Idem {
    Fresh,
    Replay(StatusCode, String),
    Reused,
}

fn idem_lookup(st: &FakeState, path: &str, key: Option<&str>, request: &Value) -> Idem {
    let Some(key) = key else {
        return Idem::Fresh;
    };
    match st.idempotency.get(&(path.to_string(), key.to_string())) {
        None => Idem::Fresh,
        Some(rec) if rec.request == *request => Idem::Replay(
            StatusCode::from_u16(rec.status).unwrap_or(StatusCode::OK),
            serde_json::to_string(&rec.response).unwrap_or_default(),
        ),
        Some(_) => Idem::Reused,
    }
}

fn idem_reused() -> Reject {
    api_error(
        StatusCode::CONFLICT,
        "idempotency_key_reused",
        "Idempotency key was reused with different payload",
    )
}

/// Stores a successful answer under its key; errors are not stored, so a retry can still succeed.
fn idem_store(
    st: &mut FakeState,
    path: &str,
    key: Option<&str>,
    request: Value,
    outcome: &Outcome,
) {
    if let (Some(key), Ok((status, response))) = (key, outcome) {
        st.idempotency.insert(
            (path.to_string(), key.to_string()),
            super::state::IdemRecord {
                request,
                status: status.as_u16(),
                response: serde_json::from_str(response).unwrap_or_default(),
            },
        );
    }
}

/// Runs a mutating handler under the idempotency rules of the contract. Returns the outcome and
/// whether it came from the store.
fn idempotent(
    st: &mut FakeState,
    path: &str,
    headers: &HeaderMap,
    request: Value,
    handler: impl FnOnce(&mut FakeState) -> Outcome,
) -> (Outcome, bool) {
    let key = idempotency_key(headers);
    match idem_lookup(st, path, key.as_deref(), &request) {
        Idem::Replay(status, value) => (Ok((status, value)), true),
        Idem::Reused => (Err(idem_reused()), false),
        Idem::Fresh => {
            let outcome = handler(st);
            idem_store(st, path, key.as_deref(), request, &outcome);
            (outcome, false)
        }
    }
}

fn answer(outcome: Outcome) -> Answer {
    outcome.map(|(status, text)| {
        (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
    })
}

// ---------------------------------------------------------------------------------------------
// Public endpoints

async fn health(State(shared): State<App>) -> Response {
    let uptime = shared.lock().started_at.elapsed().as_secs();
    json_response(
        StatusCode::OK,
        &wire::Health {
            status: "ok",
            version: VERSION,
            uptime_seconds: uptime,
        },
    )
}

async fn openapi() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "openapi": "3.1.0",
            "info": { "title": "stakpak agent server (fake)", "version": VERSION },
            "paths": {},
        }),
    )
}

async fn config() -> Response {
    json_response(StatusCode::OK, &wire::CONFIG)
}

async fn models() -> Response {
    json_response(
        StatusCode::OK,
        &json!({ "models": [{
            "id": "fake-model", "name": "fake-model", "provider": "fake", "reasoning": false,
            "limit": { "context": 128000, "output": 8192 },
        }]}),
    )
}

// ---------------------------------------------------------------------------------------------
// Sessions

#[derive(Deserialize)]
struct Page {
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn create_session(State(shared): State<App>, headers: HeaderMap, bytes: Bytes) -> Answer {
    let (create, raw): (wire::CreateSession, Value) = parse_body(&bytes)?;
    let mut st = shared.lock();
    let (outcome, _) = idempotent(&mut st, "/v1/sessions", &headers, raw, |st| {
        ok(
            StatusCode::CREATED,
            &st.create_session(create.title, create.cwd).dto(),
        )
    });
    answer(outcome)
}

async fn list_sessions(State(shared): State<App>, Query(page): Query<Page>) -> Response {
    let st = shared.lock();
    let mut sessions: Vec<_> = st.sessions.values().collect();
    sessions.sort_by_key(|s| std::cmp::Reverse(s.seq));
    let total = sessions.len();
    let offset = page.offset.unwrap_or(0).min(total);
    let limit = page.limit.unwrap_or(100);
    let dtos: Vec<_> = sessions
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|s| s.dto())
        .collect();
    json_response(
        StatusCode::OK,
        &wire::SessionsPage {
            sessions: dtos,
            total,
        },
    )
}

async fn get_session(State(shared): State<App>, Path(id): Path<String>) -> Answer {
    let id = parse_uuid("id", &id)?;
    let st = shared.lock();
    let session = st.sessions.get(&id).ok_or_else(|| not_found(id))?;
    Ok(json_response(
        StatusCode::OK,
        &wire::SessionWithConfig {
            session: session.dto(),
            config: wire::CONFIG,
        },
    ))
}

async fn delete_session(State(shared): State<App>, Path(id): Path<String>) -> Answer {
    let id = parse_uuid("id", &id)?;
    if shared.lock().remove_session(id) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(not_found(id))
    }
}

// ---------------------------------------------------------------------------------------------
// Messages and runs

async fn get_messages(
    State(shared): State<App>,
    Path(id): Path<String>,
    Query(page): Query<Page>,
) -> Answer {
    let id = parse_uuid("id", &id)?;
    let st = shared.lock();
    let session = st.sessions.get(&id).ok_or_else(|| not_found(id))?;
    let total = session.messages.len();
    // The offset counts from the oldest message: the latest reply is at offset total - limit.
    let offset = page.offset.unwrap_or(0).min(total);
    let end = offset.saturating_add(page.limit.unwrap_or(100)).min(total);
    Ok(json_response(
        StatusCode::OK,
        &wire::MessagesPage {
            messages: &session.messages[offset..end],
            total,
        },
    ))
}

const MAX_CONTEXT_ITEMS: usize = 32;
const MAX_CONTEXT_NAME: usize = 256;
const MAX_CONTEXT_CONTENT: usize = 50_000;
const MAX_CONTEXT_TOTAL: usize = 500_000;

async fn post_message(
    State(shared): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Answer {
    let arrived = std::time::Instant::now();
    let id = parse_uuid("id", &id)?;
    let (msg, raw): (wire::PostMessage, Value) = parse_body(&bytes)?;
    let path = format!("/v1/sessions/{id}/messages");
    let text = wire::content_text(&msg.message.content);
    let slow_post = super::script::Script::parse(&text).slow_post;
    let outcome = {
        let mut st = shared.lock();
        let (outcome, replayed) = idempotent(&mut st, &path, &headers, raw.clone(), |st| {
            start_or_queue(&shared, st, id, &msg, &text)
        });
        if let Ok((_, body)) = &outcome {
            let value: Value = serde_json::from_str(body).unwrap_or_default();
            if let (false, Some(run_id)) = (replayed, value.get("run_id").and_then(Value::as_str)) {
                st.records.timings.push(super::RunTiming {
                    session_id: id.to_string(),
                    run_id: run_id.to_string(),
                    text: text.clone(),
                    posted_at: arrived,
                    completed_at: None,
                });
            }
            st.records.posted.push(PostedMessage {
                session_id: id.to_string(),
                text,
                kind: msg.kind.as_str().to_string(),
                run_id: value
                    .get("run_id")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                idempotency_key: idempotency_key(&headers),
                context: msg.context.clone().unwrap_or_default(),
                overrides: raw.get("overrides").cloned(),
                model: raw.get("model").and_then(Value::as_str).map(str::to_string),
                replayed,
                images: wire::image_urls(&msg.message.content),
            });
        }
        outcome
    };
    if let Some(delay) = slow_post {
        tokio::time::sleep(delay).await;
    }
    answer(outcome)
}

fn start_or_queue(
    shared: &App,
    st: &mut FakeState,
    id: Uuid,
    msg: &wire::PostMessage,
    text: &str,
) -> Outcome {
    let session = st.sessions.get_mut(&id).ok_or_else(|| not_found(id))?;
    if msg.message.role != "user" {
        return Err(api_error(
            StatusCode::BAD_REQUEST,
            "invalid_message_role",
            "message.role must be 'user' for this endpoint",
        ));
    }
    let model = msg
        .model
        .as_deref()
        .or_else(|| msg.overrides.as_ref().and_then(|o| o.model.as_deref()));
    if model.is_some_and(|m| m.trim().is_empty()) {
        return Err(api_error(
            StatusCode::BAD_REQUEST,
            "invalid_model",
            "model must not be empty",
        ));
    }
    check_context(msg.context.as_deref().unwrap_or_default())?;
    let auto = match msg.overrides.as_ref() {
        Some(o) => {
            if o.max_turns.is_some_and(|t| !(1..=256).contains(&t)) {
                return Err(invalid_request(
                    "overrides.max_turns must be between 1 and 256",
                ));
            }
            match &o.auto_approve {
                None => AutoApprove::ReadOnly,
                Some(AutoApproveWire::Mode(m)) if m == "all" => AutoApprove::All,
                Some(AutoApproveWire::Mode(m)) if m == "none" => AutoApprove::Nothing,
                Some(AutoApproveWire::Mode(m)) => {
                    return Err(invalid_request(&format!(
                        "overrides.auto_approve must be \"all\", \"none\" or a list of tool names, got {m:?}"
                    )))
                }
                Some(AutoApproveWire::Names(names)) => AutoApprove::Names(names.clone()),
            }
        }
        None => AutoApprove::ReadOnly,
    };

    match msg.kind {
        MessageKind::Message => {
            if let Some(active) = session.active() {
                if msg.run_id.is_some_and(|r| r != active.run_id) {
                    return Err(run_mismatch());
                }
                return Err(already_running());
            }
            let script = if shared.opts.demo {
                super::demo::script(text)
            } else {
                Script::parse(text)
            };
            let run_id = run::start(shared, st, id, text.to_string(), script, auto)
                .ok_or_else(|| not_found(id))?;
            st.records.runs_started += 1;
            tracing::debug!(session = %id, run = %run_id, "fake run started");
            ok(StatusCode::OK, &json!({ "run_id": run_id }))
        }
        MessageKind::Steering | MessageKind::FollowUp => {
            let Some(wanted) = msg.run_id else {
                return Err(api_error(
                    StatusCode::CONFLICT,
                    "run_mismatch",
                    "run_id is required for steering/follow_up",
                ));
            };
            let active = session.active_mut().ok_or_else(no_active_run)?;
            if active.run_id != wanted {
                return Err(run_mismatch());
            }
            active.follow_ups.push_back(text.to_string());
            ok(StatusCode::OK, &json!({ "run_id": active.run_id }))
        }
    }
}

fn check_context(items: &[super::ContextItem]) -> Result<(), Reject> {
    if items.len() > MAX_CONTEXT_ITEMS {
        return Err(invalid_request("context has more than 32 items"));
    }
    let mut total = 0;
    for item in items {
        if item.name.chars().count() > MAX_CONTEXT_NAME {
            return Err(invalid_request(
                "context item name is longer than 256 characters",
            ));
        }
        if item.content.chars().count() > MAX_CONTEXT_CONTENT {
            return Err(invalid_request(
                "context item content is longer than 50000 characters",
            ));
        }
        total += item.content.chars().count();
    }
    if total > MAX_CONTEXT_TOTAL {
        return Err(invalid_request(
            "context is longer than 500000 characters in total",
        ));
    }
    Ok(())
}

async fn cancel(
    State(shared): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Answer {
    let id = parse_uuid("id", &id)?;
    let (body, raw): (wire::CancelBody, Value) = parse_body(&bytes)?;
    let path = format!("/v1/sessions/{id}/cancel");
    let mut st = shared.lock();
    let (outcome, _) = idempotent(&mut st, &path, &headers, raw, |st| {
        let session = st.sessions.get_mut(&id).ok_or_else(|| not_found(id))?;
        let active = session.active_mut().ok_or_else(no_active_run)?;
        if active.run_id != body.run_id {
            return Err(run_mismatch());
        }
        // Like the real server, the flag is read between turns and when a decision wakes a run
        // that waits for approval; a cancel alone does not wake it.
        active.cancel_requested = true;
        ok(
            StatusCode::OK,
            &json!({ "cancelled": true, "run_id": active.run_id }),
        )
    });
    answer(outcome)
}

// ---------------------------------------------------------------------------------------------
// Tool approvals

async fn pending_tools(State(shared): State<App>, Path(id): Path<String>) -> Answer {
    let id = parse_uuid("id", &id)?;
    let st = shared.lock();
    let session = st.sessions.get(&id).ok_or_else(|| not_found(id))?;
    let pending = session
        .active()
        .and_then(|run| run.round.as_ref().map(|round| (run.run_id, round)));
    let body = match pending {
        Some((run_id, round)) => wire::PendingTools {
            run_id: Some(run_id),
            tool_calls: round.calls.iter().map(|c| &c.call).collect(),
        },
        None => wire::PendingTools {
            run_id: None,
            tool_calls: Vec::new(),
        },
    };
    Ok(json_response(StatusCode::OK, &body))
}

async fn decisions(
    State(shared): State<App>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Answer {
    let id = parse_uuid("id", &id)?;
    let (body, raw): (wire::DecisionsBody, Value) = parse_body(&bytes)?;
    let list: Vec<_> = body
        .decisions
        .into_iter()
        .map(|(call_id, d)| (call_id, d.action, d.content))
        .collect();
    let mut st = shared.lock();
    let (outcome, _) = idempotent(&mut st, uri.path(), &headers, raw, |st| {
        apply_decisions(st, id, body.run_id, list)
    });
    answer(outcome)
}

async fn single_decision(
    State(shared): State<App>,
    Path((id, call_id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Answer {
    let id = parse_uuid("id", &id)?;
    let (body, raw): (wire::SingleDecisionBody, Value) = parse_body(&bytes)?;
    let path = format!("/v1/sessions/{id}/tools/{call_id}/decision");
    let mut st = shared.lock();
    let (outcome, _) = idempotent(&mut st, &path, &headers, raw, |st| {
        apply_decisions(
            st,
            id,
            body.run_id,
            vec![(call_id, body.action, body.content)],
        )
    });
    answer(outcome)
}

/// Applies decisions to the active run. A decision for a call that does not really wait (auto-
/// approved, already decided, unknown) errors the run the way the real server does: it ends with no
/// terminal event and `run_status` `failed`. The request itself is still accepted.
fn apply_decisions(
    st: &mut FakeState,
    id: Uuid,
    run_id: Uuid,
    list: Vec<(String, Action, Option<String>)>,
) -> Outcome {
    let session = st.sessions.get_mut(&id).ok_or_else(|| not_found(id))?;
    let active = session.active_mut().ok_or_else(no_active_run)?;
    if !active.started {
        return Err(api_error(
            StatusCode::CONFLICT,
            "session_already_running",
            "Session run is still starting",
        ));
    }
    if active.run_id != run_id {
        return Err(run_mismatch());
    }
    if list
        .iter()
        .any(|(_, action, content)| *action == Action::CustomResult && content.is_none())
    {
        return Err(invalid_request("custom_result requires content"));
    }

    let mut problems = Vec::new();
    for (call_id, action, _) in &list {
        let call = active
            .round
            .as_ref()
            .and_then(|round| round.calls.iter().find(|c| c.call.id == *call_id));
        let reason = match call {
            None => Some("is not a pending call of this run"),
            Some(call) => call.not_waiting_reason(),
        };
        if let Some(reason) = reason {
            problems.push(format!(
                "session {id} run {run_id}: decision `{}` for tool call `{call_id}`, which {reason}",
                action.as_str()
            ));
        }
    }
    if problems.is_empty() {
        if let Some(round) = active.round.as_mut() {
            for (call_id, action, content) in &list {
                if let Some(call) = round.calls.iter_mut().find(|c| c.call.id == *call_id) {
                    call.decision = Some(match action {
                        Action::Accept => Decision::Accept,
                        Action::Reject => Decision::Reject,
                        Action::CustomResult => {
                            Decision::Custom(content.clone().unwrap_or_default())
                        }
                    });
                }
            }
        }
        active.wake.notify_one();
    } else {
        tracing::warn!(session = %id, run = %run_id, "decision for a call that does not wait: the run errors");
        session.end_run(RunState::Failed);
    }
    for (call_id, action, content) in list {
        st.records.decisions.push(RecordedDecision {
            session_id: id.to_string(),
            run_id: run_id.to_string(),
            tool_call_id: call_id,
            action: action.as_str().to_string(),
            content,
        });
    }
    st.records.misdecisions.extend(problems);
    ok(
        StatusCode::OK,
        &json!({ "accepted": true, "run_id": run_id }),
    )
}

// ---------------------------------------------------------------------------------------------
// Events

async fn events(State(shared): State<App>, Path(id): Path<String>, headers: HeaderMap) -> Answer {
    let id = parse_uuid("id", &id)?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // The subscriber is registered here, before the handler returns and so before the response
    // headers go out: a client that waits for the 200 and then posts never misses the first events.
    // A session that does not exist gets a stream that stays empty, as on the real server.
    let rx = shared.lock().subscribe(id, last_event_id);
    let writing = Writing {
        framing: shared.opts.framing(),
        keepalive: shared.opts.keepalive,
        split: shared.opts.split_writes.then_some(3),
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        sse::subscriber_body(rx, writing),
    )
        .into_response())
}
