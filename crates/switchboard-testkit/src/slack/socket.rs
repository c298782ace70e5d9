//! Socket Mode: the WebSocket, envelope delivery, acks and redelivery.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{Ack, Delivery, Out, Pending, Shared, SocketSlot, State, APP_ID, BOT_USER_ID, TEAM_ID};

#[derive(serde::Deserialize)]
pub(super) struct LinkQuery {
    #[serde(default)]
    ticket: String,
}

/// `GET /link/?ticket=…`: the Socket Mode WebSocket. Each ticket works once.
pub(super) async fn link(
    AxumState(shared): AxumState<Arc<Shared>>,
    Query(query): Query<LinkQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !shared.lock().tickets.remove(&query.ticket) {
        return (StatusCode::UNAUTHORIZED, "invalid or used ticket").into_response();
    }
    upgrade.on_upgrade(move |socket| serve(shared, socket))
}

async fn serve(shared: Arc<Shared>, mut socket: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let id = {
        let mut st = shared.lock();
        let id = st.next_socket;
        st.next_socket += 1;
        st.records.sockets_opened += 1;
        st.sockets.insert(id, SocketSlot { out: tx });
        id
    };
    let connections = shared.lock().sockets.len();
    let hello = json!({
        "type": "hello",
        "num_connections": connections,
        "connection_info": {"app_id": APP_ID},
        "debug_info": {"host": "applink-fake", "build_number": 1, "approximate_connection_time": 3600},
    });
    let mut frozen_until: Option<tokio::time::Instant> = None;
    if socket.send(Message::text(hello.to_string())).await.is_ok() {
        loop {
            tokio::select! {
                _ = shared.shutdown.cancelled() => break,
                out = rx.recv() => match out {
                    Some(Out::Text(text)) => {
                        if frozen_until.is_some() {
                            continue;
                        }
                        if socket.send(Message::text(text)).await.is_err() {
                            break;
                        }
                    }
                    Some(Out::Close(code, reason)) => {
                        if frozen_until.is_none() {
                            let frame = CloseFrame { code, reason: reason.into() };
                            if socket.send(Message::Close(Some(frame))).await.is_ok() {
                                // Wait for the client's close frame, not forever.
                                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                                    while let Some(Ok(message)) = socket.recv().await {
                                        if matches!(message, Message::Close(_)) {
                                            break;
                                        }
                                    }
                                })
                                .await;
                            }
                        }
                        break;
                    }
                    Some(Out::Drop) | None => break,
                    Some(Out::Freeze) => {
                        frozen_until = Some(tokio::time::Instant::now() + shared.opts.frozen_for);
                    }
                },
                // Reading also answers pings, so a frozen socket reads nothing.
                incoming = socket.recv(), if frozen_until.is_none() => match incoming {
                    Some(Ok(Message::Text(text))) => on_text(&shared, id, text.as_str()),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
                _ = sleep_until(frozen_until) => break,
            }
        }
    }
    // Dropping the socket without a close frame is what a cut connection looks like.
    shared.lock().sockets.remove(&id);
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A frame from the bot: an ack `{"envelope_id":"…"}` (with a `payload` when one is accepted).
fn on_text(shared: &Shared, socket: u64, text: &str) {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        tracing::debug!(socket, "fake slack: a frame that is not JSON");
        return;
    };
    let Some(envelope_id) = value.get("envelope_id").and_then(Value::as_str) else {
        tracing::debug!(socket, "fake slack: a frame without envelope_id");
        return;
    };
    let mut st = shared.lock();
    let index = st.envelopes.iter().position(|e| e.id == envelope_id);
    let lost = st.lose_acks > 0 && index.is_some_and(|i| i >= st.lose_acks_from);
    if lost {
        st.lose_acks -= 1;
    } else if let Some(i) = index {
        st.envelopes[i].acked = true;
    }
    st.records.acks.push(Ack {
        envelope_id: envelope_id.to_owned(),
        socket,
        lost,
    });
}

/// Wraps an inner event in an `event_callback` and an `events_api` envelope, and delivers it.
pub(super) fn enqueue_event(st: &mut State, event: Value) -> String {
    let event_id = format!("Ev{:010}", st.next_event);
    st.next_event += 1;
    let event_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let payload = json!({
        "type": "event_callback", "team_id": TEAM_ID, "api_app_id": APP_ID, "event": event,
        "event_id": event_id, "event_time": event_time,
        "authorizations": [{"team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": true}],
        "is_ext_shared_channel": false,
    });
    enqueue(st, "events_api", payload)
}

/// Files an envelope and tries its first delivery. With no socket open, that attempt fails (it
/// counts), so the envelope arrives later as a retry.
pub(super) fn enqueue(st: &mut State, kind: &str, payload: Value) -> String {
    let id = Uuid::new_v4().to_string();
    st.envelopes.push(Pending {
        id: id.clone(),
        body: json!({"envelope_id": id, "type": kind, "accepts_response_payload": false, "payload": payload}),
        attempts: 0,
        last_attempt: None,
        acked: false,
        given_up: false,
    });
    let index = st.envelopes.len() - 1;
    if !attempt(st, index) {
        let envelope = &mut st.envelopes[index];
        envelope.attempts = 1;
        envelope.last_attempt = Some(Instant::now());
    }
    id
}

/// Sends the envelope at `index` to the newest open socket, as its next attempt. False when no
/// socket is open.
fn attempt(st: &mut State, index: usize) -> bool {
    let Some((&socket, slot)) = st.sockets.iter().next_back() else {
        return false;
    };
    let envelope = &mut st.envelopes[index];
    let mut body = envelope.body.clone();
    // Events API envelopes carry the retry fields, first deliveries too.
    if body["type"] == "events_api" {
        body["retry_attempt"] = json!(envelope.attempts);
        body["retry_reason"] = json!(if envelope.attempts == 0 {
            ""
        } else {
            "timeout"
        });
    }
    if slot.out.send(Out::Text(body.to_string())).is_err() {
        return false;
    }
    let kind = body["type"].as_str().unwrap_or_default().to_owned();
    let event_type = body["payload"]["event"]["type"]
        .as_str()
        .or(body["payload"]["type"].as_str())
        .unwrap_or_default()
        .to_owned();
    let delivery = Delivery {
        envelope_id: envelope.id.clone(),
        socket,
        retry_attempt: envelope.attempts,
        kind,
        event_type,
    };
    envelope.attempts += 1;
    envelope.last_attempt = Some(Instant::now());
    st.records.deliveries.push(delivery);
    true
}

/// Delivers an envelope again now (acked or not), as a retry.
pub(super) fn redeliver_now(st: &mut State, envelope_id: &str) {
    let Some(index) = st.envelopes.iter().position(|e| e.id == envelope_id) else {
        tracing::warn!(envelope_id, "fake slack: no such envelope to redeliver");
        return;
    };
    let envelope = &mut st.envelopes[index];
    envelope.acked = false;
    envelope.given_up = false;
    envelope.attempts = envelope.attempts.max(1);
    attempt(st, index);
}

/// Redelivers envelopes whose ack is overdue, until Slack would give up.
pub(super) async fn redeliver_loop(shared: Arc<Shared>) {
    let every = (shared.opts.redeliver_after / 4).max(Duration::from_millis(10));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut st = shared.lock();
        let now = Instant::now();
        for index in 0..st.envelopes.len() {
            let envelope = &st.envelopes[index];
            let due = envelope
                .last_attempt
                .is_some_and(|at| now.duration_since(at) >= shared.opts.redeliver_after);
            if envelope.acked || envelope.given_up || !due {
                continue;
            }
            if envelope.attempts > shared.opts.max_retries {
                let id = envelope.id.clone();
                st.envelopes[index].given_up = true;
                st.records.given_up.push(id);
                continue;
            }
            // With no socket open the envelope waits; the next socket gets it.
            attempt(&mut st, index);
        }
    }
}

/// Tells these sockets (those still open) to do something.
pub(super) fn send_to(shared: &Shared, sockets: &[u64], out: impl Fn() -> Out) {
    let st = shared.lock();
    for id in sockets {
        if let Some(slot) = st.sockets.get(id) {
            let _ = slot.out.send(out());
        }
    }
}
