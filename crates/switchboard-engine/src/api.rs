//! The gateway HTTP API: status, channels, sessions and `POST /v1/gateway/send`, for watch
//! scripts and other local tools.
//!
//! It listens on loopback by default, requires the bearer token from `[api].token` on every route,
//! and refuses requests whose `Host` or `Origin` is not local, so a web page the user visits cannot
//! reach it through DNS rebinding.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::engine::{EngineHandle, SendError};
use crate::watch::WatchContext;

/// Requests larger than this are refused (a notification is text, not a file).
const BODY_LIMIT: usize = 1024 * 1024;

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
    let app = router(engine);
    tokio::spawn(async move {
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(e) = server.await {
            tracing::error!(error = %e, "the gateway API stopped");
        }
    });
    tracing::info!(addr = %bound, "gateway API listening");
    Ok(bound)
}

/// Binds `[api].listen` and serves the API there; a failure is logged and reported to the host as
/// an [`crate::EngineEvent::Error`] (the engine runs on without its API).
pub async fn start(engine: &EngineHandle, shutdown: CancellationToken) -> Option<SocketAddr> {
    let listen = engine.config().api.listen.clone();
    let served = match bind(&listen).await {
        Ok(listener) => serve(engine.clone(), listener, shutdown),
        Err(e) => Err(e),
    };
    match served {
        Ok(addr) => Some(addr),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "the gateway API is not available");
            engine.report_error("api", &format!("{e:#}"));
            None
        }
    }
}

/// The API's routes with their guards, for serving and for tests.
pub fn router(engine: EngineHandle) -> Router {
    Router::new()
        .route("/v1/gateway/status", get(status))
        .route("/v1/gateway/channels", get(channels))
        .route("/v1/gateway/sessions", get(sessions))
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
    let expected = engine.config().api.token.clone();
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if expected.is_empty() || !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendRequest {
    channel: String,
    target: String,
    text: String,
    #[serde(default)]
    context: Option<WatchContext>,
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
    match engine
        .send(
            &request.channel,
            &request.target,
            &request.text,
            request.context.clone(),
        )
        .await
    {
        Ok(chunks) => Json(json!({
            "delivered": true,
            "channel": request.channel,
            "target": request.target,
            "chunks": chunks,
            "context_stored": request.context.is_some(),
        }))
        .into_response(),
        Err(e @ SendError::ChannelNotFound(_)) => {
            error(StatusCode::NOT_FOUND, "channel_not_found", &e.to_string())
        }
        Err(e @ SendError::InvalidTarget(_)) => {
            error(StatusCode::BAD_REQUEST, "invalid_target", &e.to_string())
        }
        Err(e @ SendError::DeliveryFailed(_)) => {
            error(StatusCode::BAD_GATEWAY, "delivery_failed", &e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{is_allowed_host, is_local_host};

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
