//! A stand-in for a model provider, for running a real `stakpak` server offline: an
//! OpenAI-compatible `POST /v1/chat/completions` (non-streaming, as Stakpak 0.3.88 calls it for a
//! `custom` provider) that answers every request with `model: <the last line the user wrote>`,
//! and records what it was sent. Stakpak is pointed at it with a profile whose provider is
//! `type = "custom"` and `api_endpoint = "<url>/v1"`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// The fake model endpoint. Stops when dropped.
pub struct FakeModel {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Value>>>,
    stop: CancellationToken,
}

impl FakeModel {
    /// Starts on a free loopback port.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start() -> FakeModel {
        let listener = match tokio::net::TcpListener::bind(("127.0.0.1", 0)).await {
            Ok(listener) => listener,
            Err(e) => panic!("the fake model could not bind: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => panic!("the fake model has no address: {e}"),
        };
        let requests = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/v1/chat/completions", post(complete))
            .route("/v1/models", get(models))
            .with_state(Arc::clone(&requests));
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await });
            if let Err(e) = served.await {
                tracing::debug!(error = %e, "fake model stopped");
            }
        });
        FakeModel {
            addr,
            requests,
            stop,
        }
    }

    /// `http://127.0.0.1:PORT` (the provider's `api_endpoint` is this plus `/v1`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every chat completion request body, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether any request's messages contain `needle`.
    pub fn was_told(&self, needle: &str) -> bool {
        self.requests()
            .iter()
            .any(|r| r["messages"].to_string().contains(needle))
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The text of a message's `content`: a string, or its `text` parts.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// What the model answers a request: `model: ` and the last non-empty line of the last user
/// message (short), so each answer says which message it answers.
pub fn answer(request: &Value) -> String {
    let last_user = request["messages"]
        .as_array()
        .and_then(|messages| messages.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| text_of(&m["content"]))
        .unwrap_or_default();
    let line = last_user
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("nothing");
    let line: String = line.chars().take(80).collect();
    format!("model: {line}")
}

async fn complete(
    State(requests): State<Arc<Mutex<Vec<Value>>>>,
    Json(request): Json<Value>,
) -> Json<Value> {
    let content = answer(&request);
    let model = request["model"].as_str().unwrap_or("test-model").to_owned();
    requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(request);
    Json(json!({
        "id": format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        "object": "chat.completion",
        "created": 1_767_225_600,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17}
    }))
}

async fn models() -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": "test-model", "object": "model", "created": 0, "owned_by": "switchboard-tests"}]}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_answer_names_the_line_it_answers() {
        let request = json!({"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "<ctx/>\nwhat is the disk usage?\n\n"}]},
            {"role": "assistant", "content": "earlier"}
        ]});
        assert_eq!(answer(&request), "model: what is the disk usage?");
        assert_eq!(answer(&json!({"messages": []})), "model: nothing");
    }
}
