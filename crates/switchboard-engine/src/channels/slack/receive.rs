//! The receive loop: checks the bot token, keeps Socket Mode connected, and turns envelopes into
//! stored messages and acks.
//!
//! One loop owns every socket and reacts to a closed set of inputs ([`Input`]): a link's frame or
//! close, the end of an attempt to open a socket, a retry timer, shutdown. Opening a socket runs
//! beside the loop, so envelopes on the old socket keep being acknowledged while its successor
//! is opened during a refresh.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;

use super::api::ApiError;
use super::decode::{self, Outcome};
use super::link::{Link, LinkEvent, LinkTiming};
use super::wire::{Envelope, Frame};
use super::SlackChannel;
use crate::backoff;
use crate::channels::{Accepted, ChannelContext};
use crate::model::{ChannelState, Identity};

/// A socket that lived this long after hello counts as having worked.
const STABLE: Duration = Duration::from_secs(30);

/// Checks the credentials, then receives until shutdown or a fatal error (reported).
pub(super) async fn run(channel: &SlackChannel, ctx: &ChannelContext) {
    ctx.report(ChannelState::Connecting, None);
    let Some(bot) = identify(channel, ctx).await else {
        return;
    };
    tracing::info!(bot = %bot.id, name = %bot.name, "slack: bot token accepted");
    ctx.set_identity(bot.clone());
    let (events, inbox) = mpsc::channel(256);
    let receiver = Receiver {
        channel,
        ctx,
        bot: bot.id,
        events,
        links: BTreeMap::new(),
        next_link: 0,
        opening: false,
        open_task: None,
        retry_at: None,
        failures: 0,
    };
    receiver.run(inbox).await;
}

/// `auth.test` until it answers; `None` when the token is refused or on shutdown.
async fn identify(channel: &SlackChannel, ctx: &ChannelContext) -> Option<Identity> {
    let mut attempt = 0u32;
    loop {
        let result = tokio::select! {
            _ = ctx.shutdown.cancelled() => return None,
            result = channel.api.auth_test() => result,
        };
        let wait = match result {
            Ok(auth) => {
                *super::lock(&channel.team_id) = auth.team_id.clone();
                return Some(Identity {
                    id: auth.user_id,
                    name: auth.user,
                });
            }
            Err(ApiError::Auth { error, .. }) => {
                let message = format!(
                    "Slack refused the bot token (xoxb-…): {error}; check channels.slack.bot_token"
                );
                tracing::warn!(%error, "slack: the bot token was refused");
                ctx.report(ChannelState::AuthFailed, Some(message));
                return None;
            }
            Err(ApiError::RateLimited { retry_after, .. }) => {
                ctx.report(
                    ChannelState::RateLimited,
                    Some(format!(
                        "auth.test is rate limited; retrying in {retry_after:?}"
                    )),
                );
                retry_after
            }
            Err(e) => {
                let delay = backoff::delay(
                    attempt,
                    channel.options.retry_base,
                    channel.options.retry_cap,
                );
                attempt += 1;
                tracing::info!(error = %e, ?delay, "slack: cannot check the bot token; retrying");
                ctx.report(ChannelState::Reconnecting, Some(e.to_string()));
                delay
            }
        };
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return None,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Why a socket could not be opened.
#[derive(Debug)]
enum OpenError {
    /// The app-level token was refused: stop.
    Auth(String),
    RateLimited(Duration),
    Failed(String),
}

/// What arrives in the loop's inbox: from the links, and the result of an attempt to open one.
/// Both travel the same queue, so a new link is known before its first frame is handled.
enum Event {
    Link(LinkEvent),
    Opened(Link),
    OpenFailed(OpenError),
}

impl From<LinkEvent> for Event {
    fn from(event: LinkEvent) -> Event {
        Event::Link(event)
    }
}

/// Everything the loop reacts to.
enum Input {
    Stop,
    Event(Event),
    /// The task opening a socket ended (its result is an [`Event`]; this catches a panic).
    OpenTaskEnded(Result<(), JoinError>),
    Retry,
}

/// Whether the loop goes on.
#[derive(PartialEq)]
enum Flow {
    Go,
    Stop,
}

struct LinkState {
    link: Link,
    /// When Slack said `hello` on it.
    ready: Option<Instant>,
    /// Slack announced its end (`disconnect`); a successor takes over.
    retiring: bool,
}

struct Receiver<'a> {
    channel: &'a SlackChannel,
    ctx: &'a ChannelContext,
    /// The bot's user id.
    bot: String,
    events: mpsc::Sender<Event>,
    links: BTreeMap<u64, LinkState>,
    next_link: u64,
    /// An attempt to open a socket is under way (until its [`Event`] is handled).
    opening: bool,
    open_task: Option<JoinHandle<()>>,
    retry_at: Option<Instant>,
    /// Failed attempts in a row, for the backoff.
    failures: u32,
}

impl Receiver<'_> {
    async fn run(mut self, mut inbox: mpsc::Receiver<Event>) {
        self.open();
        loop {
            let input = tokio::select! {
                _ = self.ctx.shutdown.cancelled() => Input::Stop,
                Some(event) = inbox.recv() => Input::Event(event),
                ended = wait_for(&mut self.open_task) => Input::OpenTaskEnded(ended),
                _ = sleep_until(self.retry_at) => Input::Retry,
            };
            let flow = match input {
                Input::Stop => Flow::Stop,
                Input::Event(Event::Link(LinkEvent::Frame { link, frame })) => {
                    self.on_frame(link, frame).await
                }
                Input::Event(Event::Link(LinkEvent::Closed { link, error })) => {
                    self.on_closed(link, error)
                }
                Input::Event(Event::Opened(link)) => {
                    self.opening = false;
                    self.on_opened(Ok(link))
                }
                Input::Event(Event::OpenFailed(error)) => {
                    self.opening = false;
                    self.on_opened(Err(error))
                }
                Input::OpenTaskEnded(result) => {
                    self.open_task = None;
                    match result {
                        Err(e) if self.opening => {
                            self.opening = false;
                            self.failed(format!("opening a socket failed: {e}"))
                        }
                        _ => Flow::Go,
                    }
                }
                Input::Retry => {
                    self.retry_at = None;
                    self.open();
                    Flow::Go
                }
            };
            if flow == Flow::Stop {
                break;
            }
        }
        if let Some(task) = self.open_task.take() {
            task.abort();
        }
        // Nothing reads the inbox any more; links winding down must not wait on it.
        drop(inbox);
        let links = std::mem::take(&mut self.links);
        futures_util::future::join_all(links.into_values().map(|state| state.link.shut())).await;
        tracing::info!("slack: disconnected");
    }

    /// Starts opening a socket beside the loop.
    fn open(&mut self) {
        if self.opening {
            return;
        }
        self.opening = true;
        let api = self.channel.api.clone();
        let id = self.next_link;
        self.next_link += 1;
        let events = self.events.clone();
        let options = &self.channel.options;
        let timing = LinkTiming {
            ping_every: options.ping_every,
            silence_limit: options.silence_limit,
            hello_within: options.hello_within,
        };
        self.open_task = Some(tokio::spawn(async move {
            let opened = match api.connections_open().await {
                Ok(url) => Link::connect(&url, id, events.clone(), timing).await.map_err(OpenError::Failed),
                Err(ApiError::Auth { error, .. }) => Err(OpenError::Auth(format!(
                    "Slack refused the app-level token (xapp-…): {error}; check channels.slack.app_token \
                     (it needs the connections:write scope)"
                ))),
                Err(ApiError::RateLimited { retry_after, .. }) => Err(OpenError::RateLimited(retry_after)),
                Err(other) => Err(OpenError::Failed(other.to_string())),
            };
            let event = match opened {
                Ok(link) => Event::Opened(link),
                Err(error) => Event::OpenFailed(error),
            };
            let _ = events.send(event).await;
        }));
    }

    fn on_opened(&mut self, result: Result<Link, OpenError>) -> Flow {
        match result {
            Ok(mut link) => {
                tracing::debug!(link = link.id, "slack: socket open; waiting for hello");
                link.start();
                self.links.insert(
                    link.id,
                    LinkState {
                        link,
                        ready: None,
                        retiring: false,
                    },
                );
                Flow::Go
            }
            Err(OpenError::Auth(message)) => {
                tracing::warn!("slack: the app-level token was refused");
                self.ctx.report(ChannelState::AuthFailed, Some(message));
                Flow::Stop
            }
            Err(OpenError::RateLimited(wait)) => {
                tracing::info!(?wait, "slack: apps.connections.open is rate limited");
                self.ctx.report(
                    ChannelState::RateLimited,
                    Some(format!(
                        "apps.connections.open is rate limited; retrying in {}s",
                        wait.as_secs_f64().ceil()
                    )),
                );
                self.retry_at = Some(Instant::now() + wait);
                Flow::Go
            }
            Err(OpenError::Failed(error)) => self.failed(error),
        }
    }

    /// An attempt failed or the socket was lost: try again after a backoff.
    fn failed(&mut self, error: String) -> Flow {
        let delay = backoff::delay(
            self.failures,
            self.channel.options.retry_base,
            self.channel.options.retry_cap,
        );
        self.failures = self.failures.saturating_add(1);
        tracing::info!(%error, ?delay, "slack: reconnecting");
        if !self.links.values().any(|l| l.ready.is_some()) {
            self.ctx.report(ChannelState::Reconnecting, Some(error));
        }
        self.retry_at = Some(Instant::now() + delay);
        Flow::Go
    }

    /// Whether a socket that is not on its way out exists or is being opened.
    fn has_successor(&self) -> bool {
        self.opening || self.retry_at.is_some() || self.links.values().any(|l| !l.retiring)
    }

    async fn on_frame(&mut self, link: u64, frame: Frame) -> Flow {
        match frame {
            Frame::Hello(hello) => {
                let Some(state) = self.links.get_mut(&link) else {
                    return Flow::Go;
                };
                state.ready = Some(Instant::now());
                let refresh_in = hello.debug_info.and_then(|d| d.approximate_connection_time);
                tracing::info!(link, ?refresh_in, "slack: connected");
                self.ctx.report(ChannelState::Connected, None);
                // The new socket carries the traffic now; let the announced-to-end ones go.
                for (id, old) in self
                    .links
                    .iter()
                    .filter(|(id, l)| l.retiring && **id != link)
                {
                    tracing::debug!(link = id, "slack: closing the refreshed socket");
                    old.link.close();
                }
                Flow::Go
            }
            Frame::Disconnect { reason } if reason == "link_disabled" => {
                tracing::warn!("slack: Socket Mode was turned off for this app (link_disabled)");
                self.ctx.report(
                    ChannelState::AuthFailed,
                    Some(
                        "Slack turned Socket Mode off for this app (link_disabled); turn it on in the app's \
                         settings, then enable the channel again"
                            .to_owned(),
                    ),
                );
                Flow::Stop
            }
            Frame::Disconnect { reason } => {
                tracing::info!(link, %reason, "slack: Slack announced a disconnect; opening the next socket first");
                if let Some(state) = self.links.get_mut(&link) {
                    state.retiring = true;
                }
                if !self.has_successor() {
                    self.open();
                }
                Flow::Go
            }
            Frame::Envelope(envelope) => {
                self.on_envelope(link, envelope).await;
                Flow::Go
            }
            Frame::Unknown(kind) => {
                tracing::debug!(%kind, "slack: unknown frame ignored");
                Flow::Go
            }
        }
    }

    fn on_closed(&mut self, link: u64, error: Option<String>) -> Flow {
        let Some(state) = self.links.remove(&link) else {
            return Flow::Go;
        };
        tracing::debug!(link, ?error, "slack: socket closed");
        // Backoff starts over only after a socket that worked for a while, so a Slack that closes
        // every socket right after hello is not hammered.
        if state.ready.is_some_and(|at| at.elapsed() >= STABLE) {
            self.failures = 0;
        }
        if self.has_successor() {
            return Flow::Go;
        }
        let error = error.unwrap_or_else(|| {
            if state.ready.is_some() {
                "Slack closed the Socket Mode connection".to_owned()
            } else {
                "Slack closed the Socket Mode connection before hello".to_owned()
            }
        });
        self.failed(error)
    }

    /// Stores the message an envelope carries (if it is one to answer), then acknowledges the
    /// envelope. A message that cannot be stored is not acknowledged, so Slack delivers it again.
    /// A click is acknowledged first and handled after.
    async fn on_envelope(&mut self, link: u64, envelope: Envelope) {
        let channel = self.channel;
        let ctx = self.ctx;
        let outcome = decode::classify(
            &envelope,
            &self.bot,
            channel.config.require_mention,
            &mut |c, t| channel.in_thread(ctx, c, t),
        );
        let ack = match outcome {
            Outcome::Message {
                mut message,
                thread,
            } => {
                if envelope.retry_attempt > 0 && ctx.is_duplicate(&message.dedup_keys) {
                    tracing::debug!(
                        attempt = envelope.retry_attempt,
                        "slack: redelivery of a stored message"
                    );
                    true
                } else {
                    message.peer.name = channel.user_name(&message.peer.id).await;
                    match ctx.accept(message).await {
                        Ok(accepted) => {
                            tracing::debug!(
                                ?accepted,
                                attempt = envelope.retry_attempt,
                                "slack: message stored"
                            );
                            // A thread is joined by a message that reaches the agent, not by a
                            // refused sender's.
                            if let (Accepted::New(_), Some((c, t))) = (&accepted, thread) {
                                channel.join_thread(&c, &t);
                            }
                            true
                        }
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "slack: cannot store a message; not acknowledging it so Slack sends it again");
                            false
                        }
                    }
                }
            }
            Outcome::OwnMessage { thread } => {
                if let Some((c, t)) = thread {
                    channel.join_thread(&c, &t);
                }
                true
            }
            Outcome::Click(click) => {
                // Slack shows the clicker an error unless the ack comes within 3 s: ack now,
                // decide and update the prompt beside the loop.
                tracing::debug!(action = %click.action_id, "slack: button click");
                self.ack(link, &envelope.envelope_id);
                channel.on_click(ctx, click);
                return;
            }
            Outcome::Ignore(reason) => {
                tracing::debug!(reason, kind = %envelope.kind, "slack: envelope ignored");
                true
            }
        };
        if ack {
            self.ack(link, &envelope.envelope_id);
        }
    }

    /// Acknowledges an envelope on the socket it came on.
    fn ack(&self, link: u64, envelope_id: &str) {
        let frame = serde_json::json!({ "envelope_id": envelope_id }).to_string();
        let sent = self
            .links
            .get(&link)
            .is_some_and(|state| state.link.send(frame));
        if !sent {
            tracing::debug!(
                link,
                "slack: the socket is gone before the ack; Slack will redeliver"
            );
        }
    }
}

async fn wait_for<T>(task: &mut Option<JoinHandle<T>>) -> Result<T, JoinError> {
    match task {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
