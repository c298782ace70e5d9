//! The HTTP side of the agent client: one `reqwest::Client` with timeouts, bearer auth and an
//! `Idempotency-Key` on every POST.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::wire::{
    decode_frame, AgentError, Health, Message, PendingTools, SessionDto, StreamItem, ToolDecision,
};
use crate::sse::{SseDecoder, SseItem};

/// The limits of every call. The event stream has no overall limit, only `stream_idle`.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
    /// A stream that yields nothing (not even a keepalive, sent every 15 s) for this long is dead.
    pub stream_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(30),
            stream_idle: Duration::from_secs(45),
        }
    }
}

/// A client of one agent server.
#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    timeouts: Timeouts,
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    code: String,
}

impl AgentClient {
    /// `url` is the server's base URL (`http://127.0.0.1:4096`); an empty token sends no header.
    pub fn new(url: &str, token: &str, timeouts: Timeouts) -> Result<AgentClient, AgentError> {
        let http = crate::http::client_builder()
            .connect_timeout(timeouts.connect)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| AgentError::Transport(e.to_string()))?;
        Ok(AgentClient {
            http,
            base: url.trim_end_matches('/').to_string(),
            token: (!token.is_empty()).then(|| token.to_string()),
            timeouts,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut builder = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(token) = &self.token {
            builder = builder.bearer_auth(token);
        }
        builder
    }

    async fn call<T: DeserializeOwned>(&self, builder: RequestBuilder) -> Result<T, AgentError> {
        let response = builder
            .timeout(self.timeouts.request)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport)?;
        if status.is_success() {
            // 204 has no body; callers that expect one ask for a type that needs it.
            let text = if body.is_empty() {
                &b"null"[..]
            } else {
                &body[..]
            };
            return serde_json::from_slice(text).map_err(|e| AgentError::Decode(e.to_string()));
        }
        Err(error_from(status, &body))
    }

    fn post(&self, path: &str, idempotency_key: &str, body: &Value) -> RequestBuilder {
        self.request(Method::POST, path)
            .header("Idempotency-Key", idempotency_key)
            .json(body)
    }

    /// `GET /v1/health` (no auth needed).
    pub async fn health(&self) -> Result<Health, AgentError> {
        self.call(self.request(Method::GET, "/v1/health")).await
    }

    /// Checks that the server is there and accepts the token.
    pub async fn check(&self) -> Result<Health, AgentError> {
        let health = self.health().await?;
        let _: Value = self
            .call(self.request(Method::GET, "/v1/sessions?limit=1"))
            .await?;
        Ok(health)
    }

    pub async fn create_session(
        &self,
        title: &str,
        idempotency_key: &str,
    ) -> Result<SessionDto, AgentError> {
        self.call(self.post("/v1/sessions", idempotency_key, &json!({ "title": title })))
            .await
    }

    pub async fn session(&self, id: &str) -> Result<SessionDto, AgentError> {
        #[derive(serde::Deserialize)]
        struct Wrapped {
            session: SessionDto,
        }
        let wrapped: Wrapped = self
            .call(self.request(Method::GET, &format!("/v1/sessions/{id}")))
            .await?;
        Ok(wrapped.session)
    }

    pub async fn sessions(&self) -> Result<Vec<SessionDto>, AgentError> {
        #[derive(serde::Deserialize)]
        struct List {
            sessions: Vec<SessionDto>,
        }
        let list: List = self.call(self.request(Method::GET, "/v1/sessions")).await?;
        Ok(list.sessions)
    }

    /// Posts a user message, which starts a run; returns the run id.
    pub async fn post_message(
        &self,
        session: &str,
        text: &str,
        images: &[crate::media::ImagePart],
        model: Option<&str>,
        idempotency_key: &str,
    ) -> Result<String, AgentError> {
        #[derive(serde::Deserialize)]
        struct Started {
            run_id: String,
        }
        let body = json!({
            "message": { "role": "user", "content": content(text, images) },
            "type": "message",
            "run_id": null,
            "model": model,
            "sandbox": null,
        });
        let started: Started = self
            .call(self.post(
                &format!("/v1/sessions/{session}/messages"),
                idempotency_key,
                &body,
            ))
            .await?;
        Ok(started.run_id)
    }

    /// A page of a session's history; `offset` counts from the oldest message.
    pub async fn messages(
        &self,
        session: &str,
        limit: usize,
        offset: usize,
    ) -> Result<(Vec<Message>, usize), AgentError> {
        #[derive(serde::Deserialize)]
        struct Page {
            messages: Vec<Message>,
            #[serde(default)]
            total: usize,
        }
        let page: Page = self
            .call(self.request(
                Method::GET,
                &format!("/v1/sessions/{session}/messages?limit={limit}&offset={offset}"),
            ))
            .await?;
        Ok((page.messages, page.total))
    }

    /// The latest `limit` messages, oldest first. The server's offset counts from the oldest
    /// message, so this asks for the total first and then for the tail.
    pub async fn latest_messages(
        &self,
        session: &str,
        limit: usize,
    ) -> Result<Vec<Message>, AgentError> {
        let (_, total) = self.messages(session, 1, 0).await?;
        let offset = total.saturating_sub(limit);
        Ok(self.messages(session, limit, offset).await?.0)
    }

    /// The text of the latest assistant message that comes after the latest user message, if any.
    pub async fn latest_reply(&self, session: &str) -> Result<Option<String>, AgentError> {
        let messages = self.latest_messages(session, 20).await?;
        let after_user = messages
            .iter()
            .rposition(|m| m.role == "user")
            .map_or(0, |i| i + 1);
        Ok(messages[after_user..]
            .iter()
            .rev()
            .filter(|m| m.role == "assistant")
            .map(Message::text)
            .find(|t| !t.trim().is_empty()))
    }

    pub async fn cancel(
        &self,
        session: &str,
        run_id: &str,
        idempotency_key: &str,
    ) -> Result<(), AgentError> {
        let _: Value = self
            .call(self.post(
                &format!("/v1/sessions/{session}/cancel"),
                idempotency_key,
                &json!({ "run_id": run_id }),
            ))
            .await?;
        Ok(())
    }

    pub async fn pending_tools(&self, session: &str) -> Result<PendingTools, AgentError> {
        self.call(self.request(
            Method::GET,
            &format!("/v1/sessions/{session}/tools/pending"),
        ))
        .await
    }

    /// Sends the decisions for several waiting calls of one run in one request.
    pub async fn decide(
        &self,
        session: &str,
        run_id: &str,
        decisions: &[(String, ToolDecision)],
        idempotency_key: &str,
    ) -> Result<(), AgentError> {
        let map: serde_json::Map<String, Value> = decisions
            .iter()
            .map(|(id, d)| (id.clone(), json!({ "action": d.as_str() })))
            .collect();
        let body = json!({ "run_id": run_id, "decisions": map });
        let _: Value = self
            .call(self.post(
                &format!("/v1/sessions/{session}/tools/decisions"),
                idempotency_key,
                &body,
            ))
            .await?;
        Ok(())
    }

    /// Opens a session's event stream, resuming after `last_event_id` when given. Returns once the
    /// server answered with the stream's headers, so a message posted afterwards cannot start a run
    /// whose first events this stream misses.
    pub async fn subscribe(
        &self,
        session: &str,
        last_event_id: Option<i64>,
    ) -> Result<EventStream, AgentError> {
        let mut builder = self
            .request(Method::GET, &format!("/v1/sessions/{session}/events"))
            .header("Accept", "text/event-stream");
        if let Some(id) = last_event_id {
            builder = builder.header("Last-Event-ID", id.to_string());
        }
        let response = tokio::time::timeout(self.timeouts.request, builder.send())
            .await
            .map_err(|_| AgentError::Transport("timed out opening the event stream".into()))?
            .map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            return Err(error_from(status, &body));
        }
        Ok(EventStream {
            body: Box::pin(response.bytes_stream()),
            decoder: SseDecoder::new(),
            pending: std::collections::VecDeque::new(),
            idle: self.timeouts.stream_idle,
            ended: false,
        })
    }
}

type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// An open event stream of one session.
pub struct EventStream {
    body: ByteStream,
    decoder: SseDecoder,
    pending: std::collections::VecDeque<StreamItem>,
    idle: Duration,
    ended: bool,
}

impl EventStream {
    /// The next item, `None` at the end of the stream. An error means the connection broke or went
    /// silent for longer than the idle timeout; the caller resumes from its cursor.
    pub async fn next(&mut self) -> Option<Result<StreamItem, AgentError>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(Ok(item));
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout(self.idle, self.body.next()).await {
                Err(_) => {
                    self.ended = true;
                    return Some(Err(AgentError::Transport(
                        "the event stream went silent".into(),
                    )));
                }
                Ok(None) => {
                    self.ended = true;
                    let items = self.decoder.finish();
                    self.queue(items);
                }
                Ok(Some(Err(e))) => {
                    self.ended = true;
                    return Some(Err(transport(e)));
                }
                Ok(Some(Ok(bytes))) => {
                    let items = self.decoder.push(&bytes);
                    self.queue(items);
                }
            }
        }
    }

    fn queue(&mut self, items: Vec<SseItem>) {
        for item in items {
            self.pending.push_back(match item {
                SseItem::Frame(frame) => decode_frame(&frame),
                SseItem::Comment(_) => StreamItem::Keepalive,
                SseItem::Invalid(why) => StreamItem::Malformed(why),
            });
        }
    }
}

fn transport(e: reqwest::Error) -> AgentError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(inner) = source {
        message = format!("{message}: {inner}");
        source = inner.source();
    }
    AgentError::Transport(message)
}

fn error_from(status: StatusCode, body: &[u8]) -> AgentError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let (message, code) = match parsed {
        Some(b) => (b.error, b.code),
        None => (
            String::from_utf8_lossy(body).chars().take(300).collect(),
            String::new(),
        ),
    };
    match status {
        StatusCode::UNAUTHORIZED => AgentError::Unauthorized,
        StatusCode::NOT_FOUND => AgentError::NotFound(message),
        StatusCode::CONFLICT => AgentError::Conflict { code, message },
        _ => AgentError::Server {
            status: status.as_u16(),
            code,
            message,
        },
    }
}

/// A message's `content`: the text alone, or the text and the images as parts
/// (`{"type":"image","url":"data:…"}`). An image that can no longer be read is left out (the text
/// still names the file).
fn content(text: &str, images: &[crate::media::ImagePart]) -> serde_json::Value {
    use base64::Engine as _;
    if images.is_empty() {
        return serde_json::Value::String(text.to_owned());
    }
    let mut parts = vec![json!({"type": "text", "text": text})];
    for image in images {
        match std::fs::read(&image.path) {
            Ok(bytes) => parts.push(json!({
                "type": "image",
                "url": format!(
                    "data:{};base64,{}",
                    image.mime,
                    base64::engine::general_purpose::STANDARD.encode(bytes)
                ),
            })),
            Err(e) => {
                tracing::warn!(error = %e, "an image to send the agent cannot be read; the text names it")
            }
        }
    }
    serde_json::Value::Array(parts)
}
