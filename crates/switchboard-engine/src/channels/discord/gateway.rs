//! One Gateway connection ([D1]): Hello, the jittered heartbeat with zombie detection, IDENTIFY or
//! RESUME, then reading frames until the connection ends, saying how it ended so the caller
//! knows whether to resume, identify again or stop.
//!
//! The connection never waits on message handling: dispatches go into a queue that outlives the
//! connection (see `mod.rs`), so the heartbeat is never late because a message was slow to
//! store, and a RESUME after a drop asks only for what was not received.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::wire::{
    self, close_action, close_name, op, CloseAction, Fatal, Frame, Hello, Identify,
    IdentifyProperties, Resume, GATEWAY_VERSION, INTENTS, MAX_FRAME_BYTES,
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The close code the bot uses when it leaves on purpose: anything but 1000/1001 keeps the
/// session resumable (1000/1001 would end it, and the next RESUME would fail).
pub(crate) const RESUMABLE_CLOSE: u16 = 4000;

/// How long to wait for the server's closing frame after sending ours.
const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// A Gateway session the bot can resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Session {
    pub session_id: String,
    pub resume_gateway_url: String,
    /// The last sequence number received (or, when persisted, handled).
    pub seq: u64,
}

/// How a connection starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Opening {
    Identify,
    Resume(Session),
}

/// What a connection passes on, in the order received.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Incoming {
    /// A new session (READY).
    Ready {
        session: Session,
        user: wire::User,
        application_id: Option<String>,
    },
    /// A session resumed (RESUMED), after the missed events were replayed.
    Resumed { session: Session },
    /// Any other dispatch.
    Dispatch {
        session_id: String,
        seq: u64,
        name: String,
        data: Value,
    },
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ending {
    /// The channel is being stopped.
    Shutdown,
    /// Connect again and RESUME. `planned` when Discord asked for it (op 7, op 9 true) or the bot
    /// found the socket dead (no heartbeat ACK): reconnect at once.
    Resume { why: String, planned: bool },
    /// The session is gone: IDENTIFY again on the `/gateway/bot` URL. `invalid_session` after
    /// op 9 false, which asks for a random 1–5 s wait first.
    Identify { why: String, invalid_session: bool },
    /// Do not reconnect.
    Fatal(Fatal),
    /// No connection was made (refused, timed out, no Hello).
    Failed(String),
}

/// What the caller gives a connection.
pub(crate) struct Link<'a> {
    pub token: &'a str,
    pub shutdown: &'a CancellationToken,
    pub out: &'a mpsc::Sender<Incoming>,
    pub hello_timeout: Duration,
    /// The session as last seen; updated as frames arrive.
    pub session: Option<Session>,
    /// Set once this connection got READY or RESUMED.
    pub ready: bool,
}

/// `{url}/?v=10&encoding=json`.
pub(crate) fn connect_url(base: &str) -> String {
    let base = base.split('?').next().unwrap_or(base).trim_end_matches('/');
    format!("{base}/?v={GATEWAY_VERSION}&encoding=json")
}

/// The heartbeat schedule and zombie check, over time given by the caller.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Heartbeat {
    interval: Duration,
    next: Instant,
    awaiting_ack: bool,
}

/// What to do when the heartbeat is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beat {
    Send,
    /// The previous heartbeat was never acknowledged: the socket is dead.
    Zombie,
}

impl Heartbeat {
    /// The first beat comes after `interval × jitter` (`jitter` in [0, 1)), so that many clients
    /// reconnecting together do not beat in step.
    pub fn new(interval: Duration, now: Instant, jitter: f64) -> Heartbeat {
        Heartbeat {
            interval,
            next: now + interval.mul_f64(jitter.clamp(0.0, 1.0)),
            awaiting_ack: false,
        }
    }

    pub fn next(&self) -> Instant {
        self.next
    }

    pub fn on_due(&mut self, now: Instant) -> Beat {
        if self.awaiting_ack {
            return Beat::Zombie;
        }
        self.awaiting_ack = true;
        self.next = now + self.interval;
        Beat::Send
    }

    /// The server asked for a beat (op 1): it is sent at once, and acknowledged like any other.
    pub fn on_request(&mut self) {
        self.awaiting_ack = true;
    }

    pub fn on_ack(&mut self) {
        self.awaiting_ack = false;
    }
}

/// The Gateway's send limit, 120 frames per 60 s per connection, with room kept for heartbeats
/// so that other frames can never starve them.
#[derive(Debug, Clone)]
pub(crate) struct FrameBudget {
    sent: VecDeque<Instant>,
    limit: usize,
    reserved: usize,
    window: Duration,
}

pub(crate) const FRAMES_PER_WINDOW: usize = 120;
pub(crate) const FRAME_WINDOW: Duration = Duration::from_secs(60);

impl FrameBudget {
    pub fn new(heartbeat_interval: Duration) -> FrameBudget {
        let beats = FRAME_WINDOW.as_millis() / heartbeat_interval.as_millis().max(1) + 1;
        let reserved = usize::try_from(beats).unwrap_or(FRAMES_PER_WINDOW);
        FrameBudget {
            sent: VecDeque::new(),
            limit: FRAMES_PER_WINDOW,
            reserved: reserved.min(FRAMES_PER_WINDOW / 2),
            window: FRAME_WINDOW,
        }
    }

    /// Counts a frame sent at `now`, or says how long to wait before it may be sent.
    pub fn take(&mut self, now: Instant, heartbeat: bool) -> Result<(), Duration> {
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            self.sent.pop_front();
        }
        let allowed = if heartbeat {
            self.limit
        } else {
            self.limit - self.reserved
        };
        if self.sent.len() >= allowed {
            let index = self.sent.len() + 1 - allowed;
            let until = self.sent.get(index - 1).map(|t| *t + self.window);
            return Err(until.map_or(self.window, |t| t.saturating_duration_since(now)));
        }
        self.sent.push_back(now);
        Ok(())
    }
}

/// Connects, opens the session and reads until the connection ends.
pub(crate) async fn run(url: &str, opening: Opening, link: &mut Link<'_>) -> Ending {
    let address = connect_url(url);
    let connect = tokio_tungstenite::connect_async(address.as_str());
    let socket = tokio::select! {
        _ = link.shutdown.cancelled() => return Ending::Shutdown,
        result = tokio::time::timeout(link.hello_timeout, connect) => match result {
            Ok(Ok((socket, _))) => socket,
            Ok(Err(e)) => return Ending::Failed(format!("cannot connect to the Discord gateway: {e}")),
            Err(_) => return Ending::Failed("connecting to the Discord gateway timed out".into()),
        },
    };
    Connection::new(socket, link).run(opening).await
}

struct Connection<'l, 'a> {
    socket: Socket,
    link: &'l mut Link<'a>,
    frames: FrameBudget,
}

/// What reading one frame asks for.
enum Step {
    Continue,
    End(Ending),
}

impl<'l, 'a> Connection<'l, 'a> {
    fn new(socket: Socket, link: &'l mut Link<'a>) -> Self {
        Connection {
            socket,
            link,
            frames: FrameBudget::new(Duration::from_secs(45)),
        }
    }

    async fn run(mut self, opening: Opening) -> Ending {
        let hello = tokio::select! {
            _ = self.link.shutdown.cancelled() => return self.close(Ending::Shutdown).await,
            hello = tokio::time::timeout(self.link.hello_timeout, self.read_hello()) => match hello {
                Ok(Ok(hello)) => hello,
                Ok(Err(ending)) => return ending,
                Err(_) => return self.close(Ending::Failed("no Hello from the Discord gateway".into())).await,
            },
        };
        let interval = Duration::from_millis(hello.heartbeat_interval.max(1));
        self.frames = FrameBudget::new(interval);
        let mut heartbeat = Heartbeat::new(interval, Instant::now(), rand::random::<f64>());
        if let Err(ending) = self.open(&opening).await {
            return ending;
        }
        loop {
            let step = tokio::select! {
                biased;
                _ = self.link.shutdown.cancelled() => Step::End(Ending::Shutdown),
                _ = tokio::time::sleep_until(heartbeat.next()) => {
                    match heartbeat.on_due(Instant::now()) {
                        Beat::Zombie => Step::End(Ending::Resume {
                            why: "the Discord gateway stopped acknowledging heartbeats".into(),
                            planned: true,
                        }),
                        Beat::Send => self.beat().await,
                    }
                }
                frame = self.socket.next() => match frame {
                    None => Step::End(Ending::Resume { why: "the Discord gateway connection dropped".into(), planned: false }),
                    Some(Err(e)) => Step::End(Ending::Resume { why: format!("the Discord gateway connection failed: {e}"), planned: false }),
                    Some(Ok(message)) => self.on_message(message, &mut heartbeat).await,
                },
            };
            if let Step::End(ending) = step {
                return self.close(ending).await;
            }
        }
    }

    /// Waits for op 10 Hello (answering a heartbeat request that might come first).
    async fn read_hello(&mut self) -> Result<Hello, Ending> {
        loop {
            match self.socket.next().await {
                None => return Err(Ending::Failed("the gateway closed before Hello".into())),
                Some(Err(e)) => {
                    return Err(Ending::Failed(format!(
                        "the gateway failed before Hello: {e}"
                    )))
                }
                Some(Ok(WsMessage::Close(frame))) => return Err(closed(frame)),
                Some(Ok(message)) => {
                    let Some(frame) = decode(&message) else {
                        continue;
                    };
                    if frame.op == op::HELLO {
                        return serde_json::from_value(frame.d).map_err(|e| {
                            Ending::Failed(format!("the gateway sent a Hello that is not one: {e}"))
                        });
                    }
                }
            }
        }
    }

    /// Sends IDENTIFY or RESUME.
    async fn open(&mut self, opening: &Opening) -> Result<(), Ending> {
        let frame = match opening {
            Opening::Identify => {
                let identify = Identify {
                    token: self.link.token,
                    intents: INTENTS,
                    properties: IdentifyProperties {
                        os: std::env::consts::OS,
                        browser: "switchboard",
                        device: "switchboard",
                    },
                };
                wire::encode(op::IDENTIFY, &identify)
            }
            Opening::Resume(session) => {
                self.link.session = Some(session.clone());
                let resume = Resume {
                    token: self.link.token,
                    session_id: &session.session_id,
                    seq: session.seq,
                };
                wire::encode(op::RESUME, &resume)
            }
        };
        match self.send(frame, false).await {
            Step::Continue => Ok(()),
            Step::End(ending) => Err(ending),
        }
    }

    async fn beat(&mut self) -> Step {
        let seq = self.link.session.as_ref().map(|s| s.seq);
        self.send(wire::encode(op::HEARTBEAT, &seq), true).await
    }

    async fn send(&mut self, frame: Result<String, serde_json::Error>, heartbeat: bool) -> Step {
        let text = match frame {
            Ok(text) => text,
            Err(e) => {
                return Step::End(Ending::Failed(format!(
                    "cannot encode a gateway frame: {e}"
                )))
            }
        };
        if text.len() > MAX_FRAME_BYTES {
            // The gateway would close with 4002; nothing the bot sends should be this big.
            tracing::error!(bytes = text.len(), "gateway frame too large; not sent");
            return Step::Continue;
        }
        while let Err(wait) = self.frames.take(Instant::now(), heartbeat) {
            tracing::warn!(?wait, "gateway send budget used up; waiting");
            tokio::select! {
                _ = self.link.shutdown.cancelled() => return Step::End(Ending::Shutdown),
                _ = tokio::time::sleep(wait) => {}
            }
        }
        match self.socket.send(WsMessage::text(text)).await {
            Ok(()) => Step::Continue,
            Err(e) => Step::End(Ending::Resume {
                why: format!("cannot write to the Discord gateway: {e}"),
                planned: false,
            }),
        }
    }

    async fn on_message(&mut self, message: WsMessage, heartbeat: &mut Heartbeat) -> Step {
        if let WsMessage::Close(frame) = message {
            return Step::End(closed(frame));
        }
        let Some(frame) = decode(&message) else {
            return Step::Continue;
        };
        match frame.op {
            op::DISPATCH => self.on_dispatch(frame),
            op::HEARTBEAT => {
                heartbeat.on_request();
                self.beat().await
            }
            op::HEARTBEAT_ACK => {
                heartbeat.on_ack();
                Step::Continue
            }
            op::RECONNECT => Step::End(Ending::Resume {
                why: "Discord asked the bot to reconnect".into(),
                planned: true,
            }),
            op::INVALID_SESSION => {
                if frame.d.as_bool() == Some(true) && self.link.session.is_some() {
                    Step::End(Ending::Resume {
                        why: "Discord invalidated the session (resumable)".into(),
                        planned: true,
                    })
                } else {
                    self.link.session = None;
                    Step::End(Ending::Identify {
                        why: "Discord invalidated the session".into(),
                        invalid_session: true,
                    })
                }
            }
            _ => Step::Continue,
        }
    }

    fn on_dispatch(&mut self, frame: Frame) -> Step {
        let name = frame.t.unwrap_or_default();
        match name.as_str() {
            "READY" => {
                let ready: wire::Ready = match serde_json::from_value(frame.d) {
                    Ok(ready) => ready,
                    Err(e) => {
                        return Step::End(Ending::Identify {
                            why: format!("the gateway sent a READY that is not one: {e}"),
                            invalid_session: false,
                        })
                    }
                };
                let session = Session {
                    session_id: ready.session_id,
                    resume_gateway_url: ready.resume_gateway_url,
                    seq: frame.s.unwrap_or(0),
                };
                self.link.session = Some(session.clone());
                self.link.ready = true;
                self.pass(Incoming::Ready {
                    session,
                    user: ready.user,
                    application_id: ready.application.map(|a| a.id),
                });
            }
            "RESUMED" => {
                if let Some(session) = &mut self.link.session {
                    if let Some(s) = frame.s {
                        session.seq = s;
                    }
                    let session = session.clone();
                    self.link.ready = true;
                    self.pass(Incoming::Resumed { session });
                }
            }
            _ => {
                let Some(session) = &self.link.session else {
                    return Step::Continue;
                };
                // Keep the last non-null `s`: it is what a heartbeat and a RESUME carry.
                let seq = frame.s.unwrap_or(session.seq);
                let incoming = Incoming::Dispatch {
                    session_id: session.session_id.clone(),
                    seq,
                    name,
                    data: frame.d,
                };
                if !self.pass(incoming) {
                    // The sequence stays before this event, so the RESUME replays it.
                    return Step::End(Ending::Resume {
                        why: "Discord events came faster than they could be handled".into(),
                        planned: false,
                    });
                }
                if let Some(session) = &mut self.link.session {
                    session.seq = session.seq.max(seq);
                }
            }
        }
        Step::Continue
    }

    /// Hands an event to the handler; false when its queue is full (the handler is behind), so
    /// the connection ends and resumes from the last event handed on: memory stays bounded and
    /// nothing is lost.
    fn pass(&self, incoming: Incoming) -> bool {
        match self.link.out.try_send(incoming) {
            Ok(()) => true,
            // The receiver lives as long as the channel runs; if it is gone the channel is stopping.
            Err(mpsc::error::TrySendError::Closed(_)) => true,
            Err(mpsc::error::TrySendError::Full(_)) => false,
        }
    }

    /// Ends the connection the way `ending` needs: a closing frame that keeps the session
    /// resumable (never 1000/1001) unless the server already closed it.
    async fn close(mut self, ending: Ending) -> Ending {
        let server_closed = matches!(ending, Ending::Fatal(_))
            || matches!(
                &ending,
                Ending::Resume { planned: false, .. }
                    | Ending::Identify {
                        invalid_session: false,
                        ..
                    }
            );
        if server_closed {
            // Complete the closing handshake the server started (or find the socket gone).
            let _ = tokio::time::timeout(CLOSE_GRACE, self.socket.close(None)).await;
        } else {
            let reason = if ending == Ending::Shutdown {
                "stopping"
            } else {
                "reconnecting"
            };
            let frame = CloseFrame {
                code: CloseCode::from(RESUMABLE_CLOSE),
                reason: reason.into(),
            };
            if self
                .socket
                .send(WsMessage::Close(Some(frame)))
                .await
                .is_ok()
            {
                // Read until the server's closing frame (or a short grace): frames read now
                // are not counted, so a RESUME asks for them again.
                let drain = async { while let Some(Ok(_)) = self.socket.next().await {} };
                let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
            }
        }
        ending
    }
}

/// A text (or, uncompressed, binary) frame as a Gateway payload; anything else is skipped.
fn decode(message: &WsMessage) -> Option<Frame> {
    let text = match message {
        WsMessage::Text(text) => text.as_str(),
        WsMessage::Binary(bytes) => std::str::from_utf8(bytes).ok()?,
        _ => return None,
    };
    match serde_json::from_str(text) {
        Ok(frame) => Some(frame),
        Err(e) => {
            tracing::warn!(error = %e, "skipping a gateway frame that is not a payload");
            None
        }
    }
}

/// What a close from the server means.
fn closed(frame: Option<CloseFrame>) -> Ending {
    let code = frame.as_ref().map(|f| u16::from(f.code));
    let why = match code {
        Some(code) => format!(
            "the Discord gateway closed the connection with {code} ({})",
            close_name(code)
        ),
        None => "the Discord gateway closed the connection".to_owned(),
    };
    match close_action(code) {
        CloseAction::Resume => Ending::Resume {
            why,
            planned: false,
        },
        CloseAction::Identify => Ending::Identify {
            why,
            invalid_session: false,
        },
        CloseAction::Stop(fatal) => Ending::Fatal(fatal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_gateway_url_carries_version_and_encoding() {
        let cases = [
            (
                "wss://gateway.discord.gg/",
                "wss://gateway.discord.gg/?v=10&encoding=json",
            ),
            (
                "wss://gateway.discord.gg",
                "wss://gateway.discord.gg/?v=10&encoding=json",
            ),
            (
                "ws://127.0.0.1:9/resume?x=1",
                "ws://127.0.0.1:9/resume/?v=10&encoding=json",
            ),
        ];
        for (base, want) in cases {
            assert_eq!(connect_url(base), want);
        }
    }

    #[test]
    fn heartbeats_start_jittered_and_catch_a_zombie() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(ms(1000), t0, 0.25);
        assert_eq!(
            hb.next(),
            t0 + ms(250),
            "the first beat is a random fraction in"
        );
        assert_eq!(hb.on_due(t0 + ms(250)), Beat::Send);
        assert_eq!(hb.next(), t0 + ms(1250), "then every interval");
        hb.on_ack();
        assert_eq!(hb.on_due(t0 + ms(1250)), Beat::Send);
        // No ACK before the next beat is due: the socket is a zombie.
        assert_eq!(hb.on_due(t0 + ms(2250)), Beat::Zombie);

        let mut hb = Heartbeat::new(ms(1000), t0, 0.0);
        hb.on_request();
        assert_eq!(
            hb.on_due(t0),
            Beat::Zombie,
            "a requested beat needs its ACK too"
        );
        let mut hb = Heartbeat::new(ms(1000), t0, 0.9);
        hb.on_request();
        hb.on_ack();
        assert_eq!(hb.on_due(t0 + ms(900)), Beat::Send);
    }

    #[test]
    fn the_frame_budget_keeps_room_for_heartbeats() {
        let t0 = Instant::now();
        // A 41.25 s interval needs 2 beats a minute: 118 other frames fit.
        let mut budget = FrameBudget::new(ms(41_250));
        assert_eq!(budget.reserved, 2);
        for i in 0..118 {
            assert_eq!(budget.take(t0 + ms(i), false), Ok(()), "frame {i}");
        }
        assert_eq!(
            budget.take(t0 + ms(200), false),
            Err(ms(59_800)),
            "the 119th ordinary frame waits for the first to leave the window"
        );
        assert_eq!(
            budget.take(t0 + ms(200), true),
            Ok(()),
            "a heartbeat still goes"
        );
        assert_eq!(budget.take(t0 + ms(201), true), Ok(()));
        assert_eq!(
            budget.take(t0 + ms(202), true),
            Err(ms(59_798)),
            "120 is the hard limit"
        );
        assert_eq!(
            budget.take(t0 + ms(60_300), false),
            Ok(()),
            "the window moved on"
        );
        // A very short interval cannot reserve more than half the budget.
        assert_eq!(FrameBudget::new(ms(10)).reserved, 60);
    }

    #[test]
    fn server_closes_decide_the_next_step() {
        let close = |code: u16| {
            closed(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: "".into(),
            }))
        };
        assert!(matches!(
            closed(None),
            Ending::Resume { planned: false, .. }
        ));
        assert!(matches!(close(4000), Ending::Resume { .. }));
        assert!(matches!(
            close(4009),
            Ending::Identify {
                invalid_session: false,
                ..
            }
        ));
        assert_eq!(close(4004), Ending::Fatal(Fatal::Auth));
        assert_eq!(close(4014), Ending::Fatal(Fatal::DisallowedIntents));
        match close(4008) {
            Ending::Resume { why, .. } => assert!(why.contains("4008 (rate limited)"), "{why}"),
            other => panic!("4008 resumes, got {other:?}"),
        }
    }

    #[test]
    fn an_identify_fits_in_a_frame() {
        let text = wire::encode(
            op::IDENTIFY,
            &Identify {
                token: &"x".repeat(100),
                intents: INTENTS,
                properties: IdentifyProperties {
                    os: std::env::consts::OS,
                    browser: "switchboard",
                    device: "switchboard",
                },
            },
        )
        .unwrap_or_default();
        assert!(
            text.len() < MAX_FRAME_BYTES && text.contains("\"intents\":37377"),
            "{text}"
        );
    }
}
