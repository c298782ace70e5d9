//! The Gateway WebSocket: Hello, heartbeats and ACKs, IDENTIFY → READY, RESUME → replay +
//! RESUMED, and the closes a real gateway sends for bad input.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::state::{Conn, Control, Session, Shared};
use super::{Closed, ConnectionRecord, HeartbeatRecord, IdentifyRecord, ResumeRecord};

/// The intents a bot may use without turning on privileged ones in the Developer Portal, plus
/// MESSAGE_CONTENT, which the fake treats as enabled. Anything else closes with 4013.
const KNOWN_INTENTS: u64 = (1 << 26) - 1;

pub(crate) async fn upgrade(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    ws: WebSocketUpgrade,
) -> Response {
    let path = uri.path().trim_end_matches('/').to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    ws.on_upgrade(move |socket| connection(shared, socket, path, query))
}

async fn connection(shared: Arc<Shared>, socket: WebSocket, path: String, query: String) {
    let (tx, rx) = mpsc::unbounded_channel();
    let id = {
        let mut st = shared.lock();
        st.next_conn += 1;
        let id = st.next_conn;
        st.conns.insert(
            id,
            Conn {
                tx,
                session: None,
                zombie: false,
                draining: false,
            },
        );
        st.records.connections.push(ConnectionRecord {
            id,
            path: path.clone(),
            query: query.clone(),
            closed: None,
        });
        id
    };
    let mut conn = Connection {
        shared: shared.clone(),
        socket,
        id,
        path,
        rx,
        identified: false,
        frames: VecDeque::new(),
    };
    let closed = conn.run(&query).await;
    let mut st = shared.lock();
    st.conns.remove(&id);
    st.close_record(id, closed);
}

struct Connection {
    shared: Arc<Shared>,
    socket: WebSocket,
    id: u64,
    path: String,
    rx: mpsc::UnboundedReceiver<Control>,
    identified: bool,
    /// When the client's frames of the last minute arrived.
    frames: VecDeque<Instant>,
}

/// What handling a client frame asks for.
enum Next {
    Continue,
    Close(u16),
}

impl Connection {
    async fn run(&mut self, query: &str) -> Closed {
        let mut held = self.shared.held.subscribe();
        while *held.borrow_and_update() {
            tokio::select! {
                _ = self.shared.shutdown.cancelled() => return Closed::DroppedByServer,
                changed = held.changed() => if changed.is_err() { return Closed::DroppedByServer },
            }
        }
        let params: Vec<(&str, &str)> =
            query.split('&').filter_map(|p| p.split_once('=')).collect();
        let param = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        if param("v") != Some("10") {
            return self.close(4012, "Invalid API version").await;
        }
        if param("encoding").is_some_and(|e| e != "json") {
            return self.close(4002, "Decode error").await;
        }
        let interval = self.shared.lock().heartbeat_interval.as_millis() as u64;
        if !self
            .send(
                json!({ "op": 10, "s": null, "t": null, "d": { "heartbeat_interval": interval } })
                    .to_string(),
            )
            .await
        {
            return Closed::DroppedByClient;
        }
        loop {
            tokio::select! {
                _ = self.shared.shutdown.cancelled() => return Closed::DroppedByServer,
                control = self.rx.recv() => match control {
                    Some(Control::Frame(text)) => {
                        if !self.send(text).await {
                            return Closed::DroppedByClient;
                        }
                    }
                    Some(Control::Close(code)) => return self.close(code, "closed by the test").await,
                    Some(Control::Drop) | None => return Closed::DroppedByServer,
                },
                message = self.socket.recv() => match message {
                    None | Some(Err(_)) => return Closed::DroppedByClient,
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.map(|f| f.code);
                        if matches!(code, Some(1000 | 1001)) {
                            // A normal closure ends the session: the bot shows offline and
                            // cannot resume.
                            self.end_session();
                        }
                        return Closed::ByClient(code);
                    }
                    Some(Ok(Message::Text(text))) => {
                        if let Next::Close(code) = self.on_text(text.as_str()).await {
                            return self.close(code, close_reason(code)).await;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => return self.close(4002, "Decode error").await,
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    async fn send(&mut self, text: String) -> bool {
        self.socket.send(Message::Text(text.into())).await.is_ok()
    }

    async fn close(&mut self, code: u16, reason: &str) -> Closed {
        let frame = CloseFrame {
            code,
            reason: reason.to_owned().into(),
        };
        if self.socket.send(Message::Close(Some(frame))).await.is_ok() {
            // Wait for the client's closing frame, as a real server does, so the close code is
            // read before the socket goes away.
            let handshake = async {
                while let Some(Ok(message)) = self.socket.recv().await {
                    if matches!(message, Message::Close(_)) {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), handshake).await;
        }
        Closed::ByServer(code)
    }

    fn end_session(&self) {
        let mut st = self.shared.lock();
        let session = st.conns.get(&self.id).and_then(|c| c.session.clone());
        if let Some(session) = session.and_then(|s| st.sessions.get_mut(&s)) {
            session.valid = false;
        }
    }

    async fn on_text(&mut self, text: &str) -> Next {
        let now = Instant::now();
        while self
            .frames
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.frames.pop_front();
        }
        self.frames.push_back(now);
        if self.frames.len() > self.shared.opts.frame_limit {
            return Next::Close(4008);
        }
        if text.len() > 4096 {
            return Next::Close(4002);
        }
        let Ok(frame) = serde_json::from_str::<Value>(text) else {
            return Next::Close(4002);
        };
        let Some(op) = frame.get("op").and_then(Value::as_u64) else {
            return Next::Close(4002);
        };
        let d = frame.get("d").cloned().unwrap_or(Value::Null);
        match op {
            1 => self.heartbeat(&d).await,
            2 => self.identify(&d).await,
            6 => self.resume(&d).await,
            _ if !self.identified => Next::Close(4003),
            // Presence, voice state and member requests: accepted, not acted on.
            3 | 4 | 8 => Next::Continue,
            _ => Next::Close(4001),
        }
    }

    async fn heartbeat(&mut self, d: &Value) -> Next {
        let zombie = {
            let mut st = self.shared.lock();
            st.records.heartbeats.push(HeartbeatRecord {
                connection: self.id,
                seq: d.as_u64(),
            });
            st.conns.get(&self.id).is_some_and(|c| c.zombie)
        };
        if !zombie && !self.send(json!({ "op": 11 }).to_string()).await {
            return Next::Close(4000);
        }
        Next::Continue
    }

    async fn identify(&mut self, d: &Value) -> Next {
        if self.identified {
            return Next::Close(4005);
        }
        let ready = {
            let mut st = self.shared.lock();
            let token_ok = d.get("token").and_then(Value::as_str) == Some(st.token.as_str());
            let intents = d.get("intents").and_then(Value::as_u64);
            let properties = d.get("properties").cloned().unwrap_or(Value::Null);
            st.records.identifies.push(IdentifyRecord {
                connection: self.id,
                token_ok,
                intents,
                properties: properties.clone(),
                path: self.path.clone(),
            });
            let props_ok = ["os", "browser", "device"]
                .iter()
                .all(|k| properties.get(*k).is_some_and(Value::is_string));
            if !token_ok {
                return Next::Close(4004);
            }
            if !props_ok {
                return Next::Close(4002);
            }
            match intents {
                None => return Next::Close(4002),
                Some(bits) if bits & !KNOWN_INTENTS != 0 => return Next::Close(4013),
                Some(_) => {}
            }
            if let Some(code) = st.reject_identify.take() {
                return Next::Close(code);
            }
            // One session per bot here: a new IDENTIFY replaces the old session.
            for session in st.sessions.values_mut() {
                session.valid = false;
            }
            let session_id = st.new_session_id();
            st.sessions.insert(
                session_id.clone(),
                Session {
                    seq: 1,
                    log: Vec::new(),
                    valid: true,
                },
            );
            if let Some(conn) = st.conns.get_mut(&self.id) {
                conn.session = Some(session_id.clone());
            }
            json!({
                "op": 0, "t": "READY", "s": 1,
                "d": {
                    "v": 10,
                    "user": st.bot_user(),
                    "guilds": [],
                    "session_id": session_id,
                    "resume_gateway_url": self.shared.resume_url(),
                    "shard": [0, 1],
                    "application": { "id": st.app_id, "flags": 0 },
                },
            })
            .to_string()
        };
        self.identified = true;
        if !self.send(ready).await {
            return Next::Close(4000);
        }
        Next::Continue
    }

    async fn resume(&mut self, d: &Value) -> Next {
        if self.identified {
            return Next::Close(4005);
        }
        let session_id = d
            .get("session_id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let seq = d.get("seq").and_then(Value::as_u64);
        let outcome = self.replay(d, &session_id, seq);
        let frames = match outcome {
            Err(next) => return next,
            // Not resumable: the bot must identify again on a new connection.
            Ok(None) => vec![json!({ "op": 9, "s": null, "t": null, "d": false }).to_string()],
            Ok(Some(frames)) => {
                self.identified = true;
                frames
            }
        };
        for frame in frames {
            if !self.send(frame).await {
                return Next::Close(4000);
            }
        }
        Next::Continue
    }

    /// Checks a RESUME and attaches the connection: the frames to send (the missed dispatches
    /// and RESUMED), `None` for a session that cannot be resumed, or a close.
    fn replay(
        &self,
        d: &Value,
        session_id: &str,
        seq: Option<u64>,
    ) -> Result<Option<Vec<String>>, Next> {
        let mut st = self.shared.lock();
        let token_ok = d.get("token").and_then(Value::as_str) == Some(st.token.as_str());
        let mut record = ResumeRecord {
            connection: self.id,
            session_id: session_id.to_owned(),
            seq: seq.unwrap_or(0),
            path: self.path.clone(),
            accepted: false,
            replayed: 0,
        };
        let frames = 'check: {
            if !token_ok {
                break 'check Err(Next::Close(4004));
            }
            let Some(seq) = seq else {
                break 'check Err(Next::Close(4002));
            };
            let Some(session) = st.sessions.get_mut(session_id).filter(|s| s.valid) else {
                break 'check Ok(None);
            };
            if seq > session.seq {
                break 'check Err(Next::Close(4007));
            }
            let mut frames: Vec<String> = session
                .log
                .iter()
                .filter(|(s, _)| *s > seq)
                .map(|(_, f)| f.clone())
                .collect();
            session.seq += 1;
            frames.push(json!({ "op": 0, "t": "RESUMED", "s": session.seq, "d": {} }).to_string());
            record.accepted = true;
            record.replayed = frames.len() - 1;
            Ok(Some(frames))
        };
        st.records.resumes.push(record);
        if let Ok(Some(_)) = &frames {
            if let Some(conn) = st.conns.get_mut(&self.id) {
                conn.session = Some(session_id.to_owned());
            }
        }
        frames
    }
}

fn close_reason(code: u16) -> &'static str {
    match code {
        4001 => "Unknown opcode.",
        4002 => "Error while decoding payload.",
        4003 => "Not authenticated.",
        4004 => "Authentication failed.",
        4005 => "Already authenticated.",
        4007 => "Invalid seq.",
        4008 => "Rate limited.",
        4009 => "Session timed out.",
        4012 => "Invalid API version.",
        4013 => "Invalid intent(s).",
        4014 => "Disallowed intent(s).",
        _ => "",
    }
}
