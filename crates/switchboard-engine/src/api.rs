//! The gateway HTTP API: status, channels, sessions and `POST /v1/gateway/send`, for watch
//! scripts and other local tools.
//!
//! It listens on loopback by default, requires a bearer token on every route — `[api].token`, or
//! the agent server's own `[server].token`, which is what the Stakpak watch scheduler sends — and
//! refuses requests whose `Host` or `Origin` is not local, so a web page the user visits cannot
//! reach it through DNS rebinding.
//!
//! The Stakpak watch scheduler replaces a gateway URL on `localhost`/`127.0.0.1` with its own
//! server's, so the API also listens on a second loopback address (`[api].scheduler_listen`,
//! `127.0.0.2` and the same port by default) that the scheduler keeps.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::dispatch::{CallerContext, InteractiveRun};
use crate::engine::{EngineHandle, SendError};
use crate::watch::WatchContext;

/// Requests larger than this are refused (a notification is text, not a file).
const BODY_LIMIT: usize = 1024 * 1024;
/// An interactive run's prompt, its context items and their total, as upstream's gateway limits
/// them.
const MAX_PROMPT_BYTES: usize = 32 * 1024;
const MAX_CONTEXT_ITEMS: usize = 50;
const MAX_INTERACTIVE_BYTES: usize = 100 * 1024;

/// Binds `[api].listen` for the gateway API, warning when it is reachable beyond this machine.
pub async fn bind(listen: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let addr: SocketAddr = listen
        .parse()
        .map_err(|e| anyhow::anyhow!("api.listen {listen:?} is not an address: {e}"))?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the gateway API listens beyond this machine; anyone who can reach it and has the token can message your chats");
    }
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr} (api.listen): {e}; pick another port or stop what uses it"
        )
    })
}

/// Serves the API on `listener` until `shutdown`; returns the bound address (also reported by
/// [`EngineHandle::api_addr`]).
pub fn serve(
    engine: EngineHandle,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let bound = listener.local_addr()?;
    engine.set_api_addr(bound);
    spawn_server(engine, listener, shutdown, "the gateway API");
    tracing::info!(addr = %bound, "gateway API listening");
    Ok(bound)
}

/// Serves the routes on `listener` in a task of their own until `shutdown`.
fn spawn_server(
    engine: EngineHandle,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
    what: &'static str,
) {
    let app = router(engine);
    tokio::spawn(async move {
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(e) = server.await {
            tracing::error!(error = %e, "{what} stopped");
        }
    });
}

/// Binds `[api].listen` and serves the API there, and on `[api].scheduler_listen` too (see the
/// module's documentation); a failure of the first is logged and reported to the host as an
/// [`crate::EngineEvent::Error`] (the engine runs on without its API), one of the second only
/// logged and reported.
pub async fn start(engine: &EngineHandle, shutdown: CancellationToken) -> Option<SocketAddr> {
    let config = engine.config();
    let listen = config.api.listen.clone();
    let served = match bind(&listen).await {
        Ok(listener) => serve(engine.clone(), listener, shutdown.clone()),
        Err(e) => Err(e),
    };
    let addr = match served {
        Ok(addr) => addr,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "the gateway API is not available");
            engine.report_error("api", &format!("{e:#}"));
            return None;
        }
    };
    if let Some(second) = config.api.scheduler_addr(addr) {
        match tokio::net::TcpListener::bind(second).await {
            Ok(listener) => {
                let bound = listener.local_addr().ok();
                spawn_server(
                    engine.clone(),
                    listener,
                    shutdown,
                    "the gateway API's scheduler address",
                );
                if let Some(bound) = bound {
                    engine.set_scheduler_addr(bound);
                    tracing::info!(addr = %bound, "gateway API listening for the Stakpak watch scheduler");
                }
            }
            Err(e) => {
                let message = format!(
                    "cannot listen on {second} (api.scheduler_listen) for the Stakpak watch scheduler: {e}; pick another address or set it to \"off\""
                );
                tracing::warn!("{message}");
                engine.report_error("api", &message);
            }
        }
    }
    Some(addr)
}

/// The API's routes with their guards, for serving and for tests.
pub fn router(engine: EngineHandle) -> Router {
    Router::new()
        .route("/v1/gateway/status", get(status))
        .route("/v1/gateway/channels", get(channels))
        .route("/v1/gateway/sessions", get(sessions))
        .route("/v1/gateway/sessions/{id}", get(session))
        .route("/v1/gateway/send", post(send))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(middleware::from_fn_with_state(engine.clone(), guard))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(engine)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "error": message, "code": code }))).into_response()
}

/// The host a `Host` or `Origin` value names, without scheme, port or brackets.
fn host_of(value: &str) -> &str {
    let value = value.trim();
    let without_scheme = value.split_once("://").map_or(value, |(_, rest)| rest);
    if let Some(rest) = without_scheme.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        without_scheme.split(':').next().unwrap_or_default()
    }
}

/// Whether a `Host` or `Origin` value names this machine.
fn is_local_host(value: &str) -> bool {
    let host = host_of(value);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a request addressed to `host` is answered: this machine by name or address, or, when
/// the API listens beyond loopback, any IP address. DNS rebinding needs a name, so names other
/// than localhost are refused either way.
fn is_allowed_host(host: &str, beyond_loopback: bool) -> bool {
    is_local_host(host) || (beyond_loopback && host_of(host).parse::<std::net::IpAddr>().is_ok())
}

async fn guard(
    State(engine): State<EngineHandle>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let beyond_loopback = engine
        .config()
        .api
        .listen
        .parse::<SocketAddr>()
        .is_ok_and(|addr| !addr.ip().is_loopback());
    if !is_allowed_host(host, beyond_loopback) {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden_host",
            "requests must be addressed to localhost or an IP address",
        );
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        if !origin.to_str().is_ok_and(is_local_host) {
            return error(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                "requests from web pages are not accepted",
            );
        }
    }
    let config = engine.config();
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // The agent server's token is accepted too: the Stakpak watch scheduler always sends its
    // server's. Both are compared, in constant time, so timing tells nothing of either.
    let matches = [config.api.token.as_str(), config.server.token.as_str()]
        .iter()
        .filter(|t| !t.is_empty())
        .fold(false, |hit, t| {
            constant_time_eq(given.as_bytes(), t.as_bytes()) | hit
        });
    if given.is_empty() || !matches {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token (see [api].token in the config file)",
        );
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn status(State(engine): State<EngineHandle>) -> Response {
    match engine.status() {
        Ok(status) => Json(status).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("{e:#}"),
        ),
    }
}

async fn channels(State(engine): State<EngineHandle>) -> Response {
    Json(json!({ "channels": engine.channels() })).into_response()
}

async fn sessions(State(engine): State<EngineHandle>) -> Response {
    match engine.conversations() {
        Ok(list) => Json(json!({ "sessions": list })).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("{e:#}"),
        ),
    }
}

/// `GET /v1/gateway/sessions/{id}`: whether the conversation bound to an agent session is busy,
/// for the watch scheduler's polling of an interactive run.
async fn session(State(engine): State<EngineHandle>, Path(id): Path<String>) -> Response {
    match engine.session_activity(&id) {
        Ok(Some((routing_key, active))) => Json(json!({
            "session_id": id,
            "active": active,
            "routing_key": routing_key,
        }))
        .into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "session_not_found",
            "no conversation here has this session",
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("{e:#}"),
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendRequest {
    channel: String,
    /// A string in the channel's format, or an object as the Stakpak watch scheduler sends it.
    target: Value,
    text: String,
    #[serde(default)]
    context: Option<WatchContext>,
    #[serde(default)]
    interactive: Option<InteractiveRequest>,
}

/// What the Stakpak watch scheduler sends for an `interactive` schedule. Fields it may add are
/// read past (no `deny_unknown_fields`), so a newer scheduler is not refused.
#[derive(Deserialize)]
struct InteractiveRequest {
    prompt: String,
    #[serde(default)]
    caller_context: Vec<CallerContext>,
    #[serde(default)]
    title: Option<String>,
    /// Seconds.
    #[serde(default)]
    timeout: Option<u64>,
    // `sandbox` is read past: the agent server decides where its tools run.
}

/// The target as text in the channel's own format: a string as it is, a number as digits, or one
/// of the objects the watch scheduler sends (`{"chat_id"}`, `{"channel_id"}`, `{"channel"}`, with
/// an optional `thread_id`/`topic_id`).
fn target_text(target: &Value) -> Result<String, String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match target {
        Value::Object(fields) => {
            let id = ["chat_id", "channel_id", "channel", "user_id"]
                .iter()
                .find_map(|k| fields.get(*k).and_then(scalar))
                .filter(|id| !id.is_empty())
                .ok_or_else(|| {
                    "the target object names no chat: expected chat_id, channel_id or channel"
                        .to_owned()
                })?;
            let thread = ["thread_id", "topic_id", "thread_ts"]
                .iter()
                .find_map(|k| fields.get(*k).and_then(scalar))
                .filter(|t| !t.is_empty());
            Ok(match thread {
                Some(thread) => format!("{id}:{thread}"),
                None => id,
            })
        }
        other => scalar(other).ok_or_else(|| {
            "the target must be a string, a number or an object with chat_id, channel_id or channel"
                .to_owned()
        }),
    }
}

/// Checks an interactive request against the limits; the message says which one it broke.
fn check_interactive(request: &InteractiveRequest) -> Result<(), String> {
    if request.prompt.trim().is_empty() {
        return Err("interactive.prompt is empty".into());
    }
    if request.prompt.len() > MAX_PROMPT_BYTES {
        return Err(format!(
            "interactive.prompt is {} bytes; at most {MAX_PROMPT_BYTES} are taken",
            request.prompt.len()
        ));
    }
    if request.caller_context.len() > MAX_CONTEXT_ITEMS {
        return Err(format!(
            "interactive.caller_context has {} items; at most {MAX_CONTEXT_ITEMS} are taken",
            request.caller_context.len()
        ));
    }
    let total = request.prompt.len()
        + request
            .caller_context
            .iter()
            .map(|c| c.name.len() + c.content.len())
            .sum::<usize>();
    if total > MAX_INTERACTIVE_BYTES {
        return Err(format!(
            "the interactive prompt and its context are {total} bytes; at most {MAX_INTERACTIVE_BYTES} are taken"
        ));
    }
    Ok(())
}

fn send_error(e: SendError) -> Response {
    match e {
        e @ SendError::ChannelNotFound(_) => {
            error(StatusCode::NOT_FOUND, "channel_not_found", &e.to_string())
        }
        e @ SendError::InvalidTarget(_) => {
            error(StatusCode::BAD_REQUEST, "invalid_target", &e.to_string())
        }
        e @ SendError::DeliveryFailed(_) => {
            error(StatusCode::BAD_GATEWAY, "delivery_failed", &e.to_string())
        }
    }
}

async fn send(State(engine): State<EngineHandle>, body: Bytes) -> Response {
    // Parsed by hand so a malformed body gets a 400 that says what is wrong, in JSON.
    let request: SendRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                &format!("the body is not a valid send request: {e}"),
            );
        }
    };
    let target = match target_text(&request.target) {
        Ok(target) => target,
        Err(why) => return error(StatusCode::BAD_REQUEST, "invalid_target", &why),
    };
    let Some(interactive) = request.interactive else {
        return match engine
            .send(
                &request.channel,
                &target,
                &request.text,
                request.context.clone(),
            )
            .await
        {
            Ok(chunks) => Json(json!({
                "delivered": true,
                "channel": request.channel,
                "target": target,
                "chunks": chunks,
                "context_stored": request.context.is_some(),
            }))
            .into_response(),
            Err(e) => send_error(e),
        };
    };
    if let Err(why) = check_interactive(&interactive) {
        return error(StatusCode::BAD_REQUEST, "interactive_too_large", &why);
    }
    let schedule = request
        .context
        .as_ref()
        .and_then(|c| c.schedule.clone())
        .or_else(|| interactive.title.clone())
        .unwrap_or_else(|| "watch".to_owned());
    let run = InteractiveRun {
        schedule,
        prompt: interactive.prompt,
        context: interactive.caller_context,
        title: interactive.title,
        timeout: interactive
            .timeout
            .filter(|t| *t > 0)
            .map(std::time::Duration::from_secs),
    };
    match engine
        .send_interactive(
            &request.channel,
            &target,
            &request.text,
            request.context,
            run,
        )
        .await
    {
        Ok((chunks, started)) => Json(json!({
            "delivered": true,
            "channel": request.channel,
            "target": target,
            "chunks": chunks,
            "context_stored": false,
            "session_id": started.session_id,
            "thread_id": started.thread_id,
            "routing_key": started.routing_key,
        }))
        .into_response(),
        Err(e) => send_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::{
        check_interactive, is_allowed_host, is_local_host, target_text, InteractiveRequest,
    };
    use serde_json::json;

    #[test]
    fn targets_come_as_strings_numbers_or_the_schedulers_objects() {
        let cases = [
            (json!("4242"), Ok("4242")),
            (json!(-1001234567890i64), Ok("-1001234567890")),
            (json!({"chat_id": "4242"}), Ok("4242")),
            (json!({"chat_id": 4242}), Ok("4242")),
            (
                json!({"channel_id": "1200000000000000001"}),
                Ok("1200000000000000001"),
            ),
            (json!({"channel": "#ops"}), Ok("#ops")),
            (
                json!({"channel": "C0OPS", "thread_ts": "1767225600.000100"}),
                Ok("C0OPS:1767225600.000100"),
            ),
            (
                json!({"chat_id": "-100123", "thread_id": 7}),
                Ok("-100123:7"),
            ),
        ];
        for (target, want) in cases {
            assert_eq!(
                target_text(&target).as_deref(),
                want.map(str::to_owned).as_deref(),
                "{target}"
            );
        }
        for bad in [
            json!({}),
            json!({"chat_id": ""}),
            json!([1]),
            json!(null),
            json!(true),
        ] {
            assert!(target_text(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn interactive_limits_are_upstreams() {
        let request = |prompt: &str, items: usize, size: usize| -> InteractiveRequest {
            serde_json::from_value(json!({
                "prompt": prompt,
                "caller_context": (0..items).map(|i| json!({"name": format!("c{i}"), "content": "x".repeat(size)})).collect::<Vec<_>>(),
            }))
            .expect("request")
        };
        assert!(check_interactive(&request("check the disk", 3, 100)).is_ok());
        assert!(check_interactive(&request("  ", 0, 0)).is_err());
        assert!(check_interactive(&request(&"p".repeat(32 * 1024 + 1), 0, 0)).is_err());
        assert!(check_interactive(&request("p", 50, 10)).is_ok());
        assert!(check_interactive(&request("p", 51, 10)).is_err());
        assert!(
            check_interactive(&request("p", 4, 26 * 1024)).is_err(),
            "over 100 KiB in all"
        );
    }

    #[test]
    fn only_local_hosts_pass() {
        for (host, local) in [
            ("127.0.0.1:4097", true),
            ("localhost", true),
            ("LOCALHOST:1", true),
            ("[::1]:4097", true),
            ("http://localhost:3000", true),
            ("evil.example:4097", false),
            ("127.0.0.1.evil.example", false),
            ("", false),
            ("http://attacker.test", false),
        ] {
            assert_eq!(is_local_host(host), local, "{host}");
        }
    }

    #[test]
    fn beyond_loopback_an_address_passes_but_a_name_does_not() {
        for (host, loopback_only, beyond) in [
            ("127.0.0.1:4097", true, true),
            ("192.168.1.20:4097", false, true),
            ("[fe80::1]:4097", false, true),
            ("evil.example:4097", false, false),
            ("192.168.1.20.nip.io", false, false),
        ] {
            assert_eq!(is_allowed_host(host, false), loopback_only, "{host}");
            assert_eq!(
                is_allowed_host(host, true),
                beyond,
                "{host} beyond loopback"
            );
        }
    }
}
