//! One Socket Mode WebSocket: it reads Slack's frames and hands them to the receive loop, sends
//! the acks it is given, and pings Slack so a half-open socket is noticed.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::wire::Frame;

/// What a link tells the receive loop.
#[derive(Debug)]
pub(crate) enum LinkEvent {
    Frame {
        link: u64,
        frame: Frame,
    },
    /// The socket is gone; `error` says why when it was not a clean close.
    Closed {
        link: u64,
        error: Option<String>,
    },
}

/// How a link watches its socket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkTiming {
    /// How often to ping Slack.
    pub ping_every: Duration,
    /// A socket that shows nothing (no frame, no pong) for this long is given up as half-open.
    pub silence_limit: Duration,
    /// How long Slack has to send `hello` after the socket opens.
    pub hello_within: Duration,
}

enum Command {
    Send(String),
    Close,
}

/// A running Socket Mode connection. Dropping it closes the socket.
pub(crate) struct Link {
    pub id: u64,
    commands: mpsc::UnboundedSender<Command>,
    start: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Link {
    /// Connects to a Socket Mode URL (from `apps.connections.open`). The link reads nothing until
    /// [`Link::start`], so whoever keeps track of links has it before its first frame arrives.
    pub(crate) async fn connect<E>(
        url: &str,
        id: u64,
        events: mpsc::Sender<E>,
        timing: LinkTiming,
    ) -> Result<Link, String>
    where
        E: From<LinkEvent> + Send + 'static,
    {
        let connecting = tokio_tungstenite::connect_async(url);
        let (socket, _) = match tokio::time::timeout(timing.hello_within, connecting).await {
            Ok(Ok(connected)) => connected,
            Ok(Err(e)) => {
                return Err(format!(
                    "cannot open the Socket Mode WebSocket: {}",
                    describe(&e)
                ))
            }
            Err(_) => return Err("opening the Socket Mode WebSocket timed out".to_owned()),
        };
        let (commands, rx) = mpsc::unbounded_channel();
        let (start, gate) = oneshot::channel();
        let task = tokio::spawn(async move {
            if gate.await.is_ok() {
                pump(socket, id, rx, events, timing).await;
            }
        });
        Ok(Link {
            id,
            commands,
            start: Some(start),
            task,
        })
    }

    /// Starts reading the socket.
    pub(crate) fn start(&mut self) {
        if let Some(start) = self.start.take() {
            let _ = start.send(());
        }
    }

    /// Sends a text frame (an ack); false when the socket is gone.
    pub(crate) fn send(&self, text: String) -> bool {
        self.commands.send(Command::Send(text)).is_ok()
    }

    /// Starts a clean close; the link reports [`LinkEvent::Closed`] when done.
    pub(crate) fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }

    /// Closes the socket and waits (briefly) until it is closed.
    pub(crate) async fn shut(self) {
        let Link {
            commands,
            start,
            mut task,
            ..
        } = self;
        let _ = commands.send(Command::Close);
        // A link never started just drops its socket.
        drop(start);
        if tokio::time::timeout(Duration::from_secs(2), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn pump<E: From<LinkEvent>>(
    mut socket: Socket,
    link: u64,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Sender<E>,
    timing: LinkTiming,
) {
    let mut ping = tokio::time::interval_at(Instant::now() + timing.ping_every, timing.ping_every);
    let opened = Instant::now();
    let hello_deadline = opened + timing.hello_within;
    let mut last_heard = opened;
    let mut hello = false;
    // Set once we sent our close frame: Slack's answer (or this deadline) ends the link. Frames
    // that arrive meanwhile are still handed on, so an event sent just before is not dropped.
    let mut closing: Option<Instant> = None;
    let error = loop {
        tokio::select! {
            incoming = socket.next() => {
                last_heard = Instant::now();
                match incoming {
                    Some(Ok(Message::Text(text))) => {
                        let frame = match Frame::parse(text.as_str()) {
                            Ok(frame) => frame,
                            Err(e) => {
                                tracing::warn!(link, error = %e, "slack: unreadable Socket Mode frame");
                                continue;
                            }
                        };
                        hello |= matches!(frame, Frame::Hello(_));
                        if events.send(LinkEvent::Frame { link, frame }.into()).await.is_err() {
                            break None;
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        tracing::debug!(link, ?frame, "slack: close frame");
                        if closing.is_some() {
                            break None;
                        }
                        // tungstenite answers the close frame; read on until the stream ends.
                        closing = Some(Instant::now() + Duration::from_secs(1));
                    }
                    // Pings are answered by tungstenite; pongs and others only prove the socket lives.
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None if closing.is_some() => break None,
                    Some(Err(e)) => break Some(format!("the Socket Mode connection failed: {}", describe(&e))),
                    None => break Some("the Socket Mode connection ended without a close frame".to_owned()),
                }
            }
            command = commands.recv(), if closing.is_none() => match command {
                Some(Command::Send(text)) => {
                    if let Err(e) = socket.send(Message::text(text)).await {
                        break Some(format!("cannot write to the Socket Mode connection: {}", describe(&e)));
                    }
                }
                Some(Command::Close) | None => {
                    closing = Some(Instant::now() + Duration::from_secs(1));
                    if socket.close(None).await.is_err() {
                        break None;
                    }
                }
            },
            _ = ping.tick(), if closing.is_none() => {
                if last_heard.elapsed() >= timing.silence_limit {
                    break Some(format!(
                        "no answer from Slack for {:.1}s (a half-open socket)",
                        last_heard.elapsed().as_secs_f64()
                    ));
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break Some("cannot ping the Socket Mode connection".to_owned());
                }
            }
            _ = tokio::time::sleep_until(hello_deadline), if !hello && closing.is_none() => {
                break Some(format!("Slack sent no hello within {}s", timing.hello_within.as_secs()));
            }
            _ = tokio::time::sleep_until(closing.unwrap_or(hello_deadline)), if closing.is_some() => break None,
        }
    };
    if error.is_some() {
        // Not a clean close: drop the connection without waiting for Slack.
        let _ = tokio::time::timeout(Duration::from_millis(200), socket.close(None)).await;
    }
    let _ = events.send(LinkEvent::Closed { link, error }.into()).await;
}

/// A WebSocket error without any URL in it (the URL's ticket is a secret).
fn describe(e: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::Url(_) => "the URL from apps.connections.open is not a usable WebSocket URL".to_owned(),
        other => other.to_string(),
    }
}
