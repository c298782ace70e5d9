//! A small reqwest client and an ad-hoc SSE splitter for the tests (the engine has the real parser;
//! the test kit must not depend on the engine).

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};
use switchboard_testkit::stakpak::FakeStakpak;

pub const WAIT: Duration = Duration::from_secs(5);

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.text))
    }

    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }
}

impl Client {
    pub fn new(fake: &FakeStakpak) -> Client {
        Client::with_token(fake, fake.token())
    }

    pub fn with_token(fake: &FakeStakpak, token: Option<String>) -> Client {
        // reqwest is built without a TLS provider; the engine installs ring, and so do these tests.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client builds"),
            base: fake.url(),
            token,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        req
    }

    async fn finish(req: reqwest::RequestBuilder) -> Resp {
        let resp = req.send().await.expect("request reaches the fake");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = resp.text().await.expect("body reads");
        Resp {
            status,
            content_type,
            text,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        Client::finish(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        Client::finish(self.request(reqwest::Method::DELETE, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        Client::finish(self.request(reqwest::Method::POST, path).json(&body)).await
    }

    pub async fn post_idem(&self, path: &str, key: &str, body: Value) -> Resp {
        Client::finish(
            self.request(reqwest::Method::POST, path)
                .header("Idempotency-Key", key)
                .json(&body),
        )
        .await
    }

    pub async fn post_raw(&self, path: &str, body: &str) -> Resp {
        Client::finish(
            self.request(reqwest::Method::POST, path)
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    pub async fn create_session(&self, title: &str) -> String {
        let resp = self.post("/v1/sessions", json!({ "title": title })).await;
        assert_eq!(resp.status, 201, "creating a session answers 201: {resp:?}");
        resp.json()["id"].as_str().expect("session id").to_string()
    }

    /// Posts a user message and returns the run id.
    pub async fn send(&self, session: &str, text: &str) -> String {
        let resp = self
            .post(
                &format!("/v1/sessions/{session}/messages"),
                json!({ "message": { "role": "user", "content": text } }),
            )
            .await;
        assert_eq!(resp.status, 200, "posting a message answers 200: {resp:?}");
        resp.json()["run_id"].as_str().expect("run id").to_string()
    }

    pub async fn run_status(&self, session: &str) -> Value {
        let resp = self.get(&format!("/v1/sessions/{session}")).await;
        assert_eq!(resp.status, 200, "{resp:?}");
        resp.json()["session"]["run_status"].clone()
    }

    pub async fn decide(&self, session: &str, run_id: &str, decisions: Value) -> Resp {
        self.post(
            &format!("/v1/sessions/{session}/tools/decisions"),
            json!({ "run_id": run_id, "decisions": decisions }),
        )
        .await
    }

    pub async fn messages(&self, session: &str, query: &str) -> Value {
        let resp = self
            .get(&format!("/v1/sessions/{session}/messages{query}"))
            .await;
        assert_eq!(resp.status, 200, "{resp:?}");
        resp.json()
    }

    /// Opens the event stream; returns once the 200 and its headers are in.
    pub async fn stream(&self, session: &str, last_event_id: Option<u64>) -> Stream {
        let mut headers = HeaderMap::new();
        headers.insert("accept", HeaderValue::from_static("text/event-stream"));
        if let Some(id) = last_event_id {
            headers.insert(
                "last-event-id",
                HeaderValue::from_str(&id.to_string()).expect("header value"),
            );
        }
        let mut req = self
            .http
            .get(format!("{}/v1/sessions/{session}/events", self.base))
            .headers(headers)
            // The stream outlives the client's default request timeout.
            .timeout(Duration::from_secs(3600));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.expect("stream request reaches the fake");
        assert_eq!(resp.status(), 200, "the event stream answers 200");
        Stream {
            resp,
            buf: Vec::new(),
            raw: Vec::new(),
            chunks: 0,
            split_utf8_chunks: 0,
            ended: false,
        }
    }
}

/// One SSE frame (or a comment-only block).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Frame {
    pub id: Option<u64>,
    pub event: Option<String>,
    pub data: Option<String>,
    pub comments: Vec<String>,
}

impl Frame {
    pub fn name(&self) -> &str {
        self.event.as_deref().unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().unwrap_or("null"))
            .unwrap_or_else(|e| panic!("frame data is not JSON ({e}): {self:?}"))
    }

    /// The payload inside the envelope's `event: {"Variant": {…}}`.
    pub fn payload(&self) -> Value {
        let envelope = self.json();
        let event = envelope["event"].as_object().expect("envelope event");
        event.values().next().cloned().expect("one variant")
    }
}

/// Splits a block of lines into a frame. Accepts `id: 1` and `id:1`, comments, multi-line data.
pub fn parse_block(block: &str) -> Frame {
    let mut frame = Frame::default();
    for line in block.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(comment) = line.strip_prefix(':') {
            frame
                .comments
                .push(comment.strip_prefix(' ').unwrap_or(comment).to_string());
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "id" => frame.id = value.parse().ok(),
            "event" => frame.event = Some(value.to_string()),
            "data" => {
                frame.data = Some(match frame.data.take() {
                    Some(prev) => format!("{prev}\n{value}"),
                    None => value.to_string(),
                })
            }
            _ => {}
        }
    }
    frame
}

/// Splits a whole capture (`*.sse`) into frames.
pub fn parse_capture(text: &str) -> Vec<Frame> {
    let normalized = text.replace("\r\n", "\n");
    normalized
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(parse_block)
        .collect()
}

/// The keys of a JSON text in the order they are written (to compare shapes with the captures).
pub fn key_order(json_text: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let bytes = json_text.as_bytes();
    let mut i = 0;
    let mut in_string = false;
    let mut start = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            if b == b'\\' {
                i += 2;
                continue;
            }
            if b == b'"' {
                in_string = false;
                if bytes.get(i + 1) == Some(&b':') {
                    keys.push(json_text[start..i].to_string());
                }
            }
        } else if b == b'"' {
            in_string = true;
            start = i + 1;
        }
        i += 1;
    }
    keys
}

pub struct Stream {
    resp: reqwest::Response,
    buf: Vec<u8>,
    /// Every byte received, for assertions on the exact framing.
    pub raw: Vec<u8>,
    pub chunks: usize,
    /// Chunks that were not valid UTF-8 on their own (a character split across reads).
    pub split_utf8_chunks: usize,
    ended: bool,
}

impl Stream {
    pub fn ended(&self) -> bool {
        self.ended
    }

    fn take_block(&mut self) -> Option<String> {
        // A block ends at an empty line: "\n\n" or "\r\n\r\n".
        let mut line_start = 0;
        for i in 0..self.buf.len() {
            if self.buf[i] == b'\n' {
                let line = &self.buf[line_start..i];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.is_empty() {
                    let block: Vec<u8> = self.buf.drain(..=i).collect();
                    return Some(String::from_utf8(block).expect("frames are UTF-8"));
                }
                line_start = i + 1;
            }
        }
        None
    }

    /// The next frame, or `None` if the stream ended or nothing came within `wait`.
    pub async fn next_frame_within(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(block) = self.take_block() {
                let frame = parse_block(&block);
                if frame == Frame::default() {
                    continue; // a stray blank line
                }
                return Some(frame);
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Err(_) => return None,
                Ok(Ok(Some(chunk))) => {
                    self.chunks += 1;
                    if std::str::from_utf8(&chunk).is_err() {
                        self.split_utf8_chunks += 1;
                    }
                    self.raw.extend_from_slice(&chunk);
                    self.buf.extend_from_slice(&chunk);
                }
                // A clean end or a cut connection: either way the stream is over.
                Ok(Ok(None)) | Ok(Err(_)) => self.ended = true,
            }
        }
    }

    /// The next event frame (comment-only blocks are skipped).
    pub async fn next_event(&mut self) -> Frame {
        loop {
            let frame = self
                .next_frame_within(WAIT)
                .await
                .expect("an event arrives within 5 s");
            if frame.event.is_some() || frame.data.is_some() {
                return frame;
            }
        }
    }

    /// Event frames up to and including the first one named `last`.
    pub async fn events_until(&mut self, last: &str) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            let frame = self.next_event().await;
            let done = frame.name() == last;
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }

    /// Every event frame that arrives within `wait`.
    pub async fn events_within(&mut self, wait: Duration) -> Vec<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_frame_within(left).await {
                Some(frame) if frame.event.is_some() || frame.data.is_some() => frames.push(frame),
                Some(_) => {}
                None => return frames,
            }
        }
    }

    /// Reads until the stream ends; panics if it stays open longer than `wait`.
    pub async fn expect_end(&mut self, wait: Duration) -> Vec<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_frame_within(left).await {
                Some(frame) => frames.push(frame),
                None if self.ended => return frames,
                None => panic!("the stream should have been cut within {wait:?}"),
            }
        }
    }
}

pub fn names(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(|f| f.name().to_string()).collect()
}

pub fn ids(frames: &[Frame]) -> Vec<u64> {
    frames.iter().filter_map(|f| f.id).collect()
}

pub fn capture(name: &str) -> Vec<Frame> {
    let path = format!("{}/tests/it/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    parse_capture(&text)
}

/// Asserts the fake's frames have the capture's event names and, frame by frame, the same JSON keys
/// in the same order (values differ: ids, times, usage).
pub fn assert_same_shape(ours: &[Frame], capture_name: &str) {
    let theirs = capture(capture_name);
    assert_eq!(
        names(ours),
        names(&theirs),
        "the event order must match the capture {capture_name}"
    );
    for (a, b) in ours.iter().zip(&theirs) {
        let a_keys = key_order(a.data.as_deref().unwrap_or_default());
        let b_keys = key_order(b.data.as_deref().unwrap_or_default());
        assert_eq!(
            a_keys,
            b_keys,
            "the envelope of `{}` must have the capture's keys in its order",
            a.name()
        );
    }
}
