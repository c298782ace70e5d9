//! Chat channels: the interface every platform adapter implements, the context the engine gives
//! it, and the status board that tracks each channel's health.

pub mod desktop;
pub mod discord;
pub mod memory;
pub mod slack;
pub mod telegram;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::chunk::TextLimit;
use crate::events::EngineEvent;
use crate::model::{
    now_ms, ChannelState, ChannelStatus, ChatType, DeliveryTarget, Identity, InboundMessage, Peer,
};
use crate::store::Store;

/// Why a channel operation failed, with what the caller needs to decide what to do next.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChannelError {
    #[error("rate limited; retry after {0:?}")]
    RateLimited(Duration),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("chat not found: {0}")]
    TargetNotFound(String),
    /// The platform refused the request for good (bad request, forbidden, …).
    #[error("{0}")]
    Rejected(String),
    /// The platform could not be reached or answered with a server error; worth retrying.
    #[error("{0}")]
    Transport(String),
    #[error("the channel is not running")]
    NotRunning,
    #[error("not supported by this channel")]
    Unsupported,
}

impl ChannelError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ChannelError::RateLimited(_) | ChannelError::Transport(_) | ChannelError::NotRunning
        )
    }
}

/// A message the channel posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    pub id: String,
}

/// One update of a reply shown in a platform's streaming message; see [`Channel::stream`].
#[derive(Debug, Clone, Copy)]
pub struct StreamUpdate<'a> {
    pub target: &'a DeliveryTarget,
    /// The streaming message, after the first update.
    pub message_id: Option<&'a str>,
    /// The person the reply answers (Slack wants them for a stream outside a DM).
    pub recipient: Option<&'a str>,
    pub text: &'a str,
    pub tasks: &'a [StreamTask],
}

/// Something the agent does while the reply is written: a tool call, or a wait for a person.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct StreamTask {
    /// The same for the task's whole life (a tool call's id).
    pub id: String,
    pub title: String,
    pub status: TaskStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting (for a person's decision).
    Pending,
    Running,
    Done,
    Failed,
}

/// How a reply shown while it is written is paced on a channel; see [`Channel::live_pacing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivePacing {
    /// The least time between two updates of the growing message.
    pub every: Duration,
    /// How long a reply may take before it is shown while written: one done sooner comes as a
    /// single message, with no preview before it.
    pub first_after: Duration,
}

impl LivePacing {
    /// What suits a chat platform: an update a second, well inside the edit budgets, and no
    /// preview (so no send and edit) for a reply done within a second.
    pub const PLATFORM: LivePacing = LivePacing {
        every: Duration::from_millis(1000),
        first_after: Duration::from_millis(1000),
    };
}

/// Small signals the engine gives a chat about a message it received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The message was received and stored (a reaction where the platform has them).
    Received,
    /// The message waits behind a run that is still going.
    Queued,
}

/// The text a channel posts for [`Notice::Queued`] when it cannot react instead.
pub const QUEUED_NOTE: &str = "⏳ Queued: I'll answer this when the current task finishes.";

/// A chat platform adapter.
///
/// The engine calls [`Channel::run`] when the channel is enabled and cancels `ctx.shutdown` when it is
/// disabled or the engine stops; `run` may be called again later. Sending happens concurrently with
/// `run` from the dispatcher's tasks.
#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// The channel's name, used in routing keys and the API: `telegram`, `slack`, `discord`, ….
    fn name(&self) -> &str;

    /// The longest message the platform takes; replies are split to fit.
    fn text_limit(&self) -> TextLimit;

    /// Receives messages until `ctx.shutdown` is cancelled, handing each to [`ChannelContext::accept`]
    /// and reporting health with [`ChannelContext::report`]. Returns after a fatal error too (bad
    /// credentials), having reported it.
    async fn run(&self, ctx: ChannelContext);

    /// Posts one message (already split to fit [`Channel::text_limit`]) as plain text that renders
    /// safely on the platform.
    async fn send(&self, target: &DeliveryTarget, text: &str) -> Result<SentMessage, ChannelError>;

    /// Replaces the text of message `message_id` (one [`Channel::send`] returned) with `text`
    /// (already within [`Channel::text_limit`]), for a reply shown while it is written. Platforms
    /// that cannot edit say so; the reply then comes whole at the end.
    async fn edit(
        &self,
        _target: &DeliveryTarget,
        _message_id: &str,
        _text: &str,
    ) -> Result<(), ChannelError> {
        Err(ChannelError::Rejected(format!(
            "{} cannot edit messages",
            self.name()
        )))
    }

    /// Shows `text` as an ephemeral preview of a reply being written (draft `draft_id`, the same
    /// for the whole reply), where the platform has them; the final text is then sent with
    /// [`Channel::send`]. Platforms or chats without drafts say so, and the reply grows by edits.
    async fn draft(
        &self,
        _target: &DeliveryTarget,
        _draft_id: u32,
        _text: &str,
    ) -> Result<(), ChannelError> {
        Err(ChannelError::Rejected(format!(
            "{} has no drafts",
            self.name()
        )))
    }

    /// Shows a reply as it is written in the platform's own streaming message (Slack's
    /// `chat.startStream` / `chat.appendStream`), where it has one: `text` is the message's text
    /// so far (it only grows) and `tasks` what the agent does meanwhile. The first update (no
    /// `message_id`) starts the message and returns its id; [`Channel::edit`] on that id finishes
    /// it with its final text. Platforms, chats or tokens without streams say so, and the reply
    /// grows by edits.
    async fn stream(&self, _update: &StreamUpdate<'_>) -> Result<String, ChannelError> {
        Err(ChannelError::Unsupported)
    }

    /// How often the reply may be updated while it is written, and after how long it is first
    /// shown; platforms pace this to their rate limits.
    fn live_pacing(&self) -> LivePacing {
        LivePacing::PLATFORM
    }

    /// Shows a typing indicator, where the platform has one. The dispatcher repeats it while a run is
    /// active.
    async fn typing(&self, _target: &DeliveryTarget) -> Result<(), ChannelError> {
        Ok(())
    }

    /// Marks a received or queued message, by a reaction or a short note.
    async fn notice(&self, _target: &DeliveryTarget, _notice: Notice) -> Result<(), ChannelError> {
        Ok(())
    }

    /// Fetches the file of an attachment this channel received (its `source`) within `limits`,
    /// through [`crate::media::read_body`], from the platform's own file host only.
    async fn fetch(
        &self,
        _attachment: &crate::model::Attachment,
        _limits: &crate::media::Limits,
    ) -> Result<Vec<u8>, crate::media::FetchError> {
        Err(crate::media::FetchError::Unsupported)
    }

    /// Checks the credentials and returns the bot's identity (the "Test" button, `check`).
    async fn test(&self) -> Result<Identity, ChannelError>;

    /// Parses a `POST /v1/gateway/send` target in this platform's format.
    fn parse_target(&self, target: &str) -> Result<DeliveryTarget, String>;

    /// Turns a target a person wrote by name (Slack's `#ops`) into one [`Channel::parse_target`]
    /// takes. Platforms without names return the target as it is.
    async fn resolve_target(&self, target: &str) -> Result<String, String> {
        Ok(target.to_owned())
    }

    /// Where a conversation that starts from the gateway API at `target` lives (an interactive
    /// watch run): the chat a message from there carries, the person's id when only they and the
    /// bot are in it, and where its replies go. `notice` is the message that announced it, for
    /// platforms whose channel conversations are threads under a message (Slack).
    fn conversation_at(&self, target: &DeliveryTarget, _notice: Option<&str>) -> ConversationPlace {
        let chat = match &target.thread_id {
            Some(thread) => ChatType::Thread {
                group_id: target.chat_id.clone(),
                thread_id: thread.clone(),
            },
            None => ChatType::Group {
                id: target.chat_id.clone(),
            },
        };
        ConversationPlace::at(target, chat, None)
    }

    /// Posts an approval prompt with Approve / Reject / Always allow buttons whose payloads come
    /// from [`crate::approvals::callback_data`]; a click goes to [`ChannelContext::decide`]. Returns
    /// the posted message, so it can be updated when the approval is decided anywhere, or `None`
    /// when the platform has no buttons (the engine then posts the prompt as text).
    async fn post_approval(
        &self,
        _target: &DeliveryTarget,
        _prompt: &crate::approvals::ApprovalPrompt,
    ) -> Result<Option<SentMessage>, ChannelError> {
        Ok(None)
    }

    /// Replaces an approval prompt's buttons with how it ended (`outcome`).
    async fn close_approval(
        &self,
        _target: &DeliveryTarget,
        _message_id: &str,
        _outcome: &str,
    ) -> Result<(), ChannelError> {
        Ok(())
    }
}

/// Where a conversation started from the gateway API lives; see [`Channel::conversation_at`].
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationPlace {
    pub chat: ChatType,
    /// The person, in a direct chat.
    pub peer_id: Option<String>,
    pub target: DeliveryTarget,
}

impl ConversationPlace {
    /// A place whose replies go to `target` itself.
    pub fn at(target: &DeliveryTarget, chat: ChatType, peer_id: Option<String>) -> Self {
        ConversationPlace {
            chat,
            peer_id,
            target: target.clone(),
        }
    }
}

/// The outcome of handing a message to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Stored in the journal under this id; it will be answered.
    New(i64),
    /// Seen before (a redelivery); dropped.
    Duplicate,
    /// Not admitted (access control): dropped, or answered with a pairing code; it never reaches
    /// the agent. Confirm it to the platform like any handled message.
    Refused,
    /// A chat command (`/status`, `/stop`, …), answered by Switchboard itself; it never reaches
    /// the agent.
    Command,
}

/// The part of the engine that takes inbound messages and chat decisions.
#[async_trait]
pub(crate) trait Intake: Send + Sync {
    async fn accept(&self, message: InboundMessage) -> anyhow::Result<Accepted>;
    async fn decide(
        &self,
        approval_id: &str,
        choice: crate::approvals::ChatChoice,
        clicker: &Peer,
        surface: &str,
    ) -> crate::approvals::ChoiceOutcome;
}

/// What the engine gives a running channel: the way in for messages, the health board, the durable
/// offsets and a shutdown token.
#[derive(Clone)]
pub struct ChannelContext {
    pub shutdown: CancellationToken,
    name: String,
    intake: Arc<dyn Intake>,
    board: StatusBoard,
    store: Store,
}

impl ChannelContext {
    pub(crate) fn new(
        name: &str,
        shutdown: CancellationToken,
        intake: Arc<dyn Intake>,
        board: StatusBoard,
        store: Store,
    ) -> Self {
        ChannelContext {
            shutdown,
            name: name.to_string(),
            intake,
            board,
            store,
        }
    }

    /// Stores the message durably (journal and de-duplication keys in one transaction) before it
    /// returns, so a channel may confirm the message to its platform (advance an offset, ack an
    /// envelope) only after this succeeded.
    pub async fn accept(&self, message: InboundMessage) -> anyhow::Result<Accepted> {
        let accepted = self.intake.accept(message).await?;
        if matches!(accepted, Accepted::New(_)) {
            self.board.touch(&self.name, true);
        }
        Ok(accepted)
    }

    /// Whether any of these platform keys was already accepted (to skip work on a redelivery).
    pub fn is_duplicate(&self, keys: &[String]) -> bool {
        self.store.is_duplicate(keys).unwrap_or(false)
    }

    /// Reports the channel's health and, for failures, the last error.
    pub fn report(&self, state: ChannelState, last_error: Option<String>) {
        self.board.set_state(&self.name, state, last_error);
    }

    /// Records the bot identity found when checking the credentials.
    pub fn set_identity(&self, identity: Identity) {
        self.board.set_identity(&self.name, identity);
    }

    /// A durable per-channel value (a Telegram update offset, a Discord session).
    pub fn offset(&self, key: &str) -> Option<String> {
        self.store.channel_offset(&self.name, key).ok().flatten()
    }

    pub fn save_offset(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.store.set_channel_offset(&self.name, key, value)
    }

    /// Forgets this channel's offsets under `prefix` whose value, a time in ms, is before
    /// `before_ms`.
    pub fn prune_offsets(&self, prefix: &str, before_ms: i64) -> anyhow::Result<usize> {
        self.store
            .prune_channel_offsets(&self.name, prefix, before_ms)
    }

    /// A person clicked an approval button. Only the requester or one of the channel's owners may
    /// decide; the outcome's text is what to show the clicker (a callback answer, an updated
    /// message). Answer the platform's interaction first if it has a deadline, then call this.
    pub async fn decide(
        &self,
        approval_id: &str,
        choice: crate::approvals::ChatChoice,
        clicker: &Peer,
    ) -> crate::approvals::ChoiceOutcome {
        self.intake
            .decide(approval_id, choice, clicker, &self.name)
            .await
    }
}

/// The shared record of every channel's status; each change is also sent as an event.
#[derive(Clone)]
pub(crate) struct StatusBoard {
    inner: Arc<Mutex<BTreeMap<String, ChannelStatus>>>,
    events: broadcast::Sender<EngineEvent>,
}

impl StatusBoard {
    pub(crate) fn new(events: broadcast::Sender<EngineEvent>) -> Self {
        StatusBoard {
            inner: Arc::default(),
            events,
        }
    }

    pub(crate) fn register(&self, name: &str, enabled: bool) {
        let status = ChannelStatus {
            name: name.to_string(),
            enabled,
            state: if enabled {
                ChannelState::Connecting
            } else {
                ChannelState::Disabled
            },
            identity: None,
            last_error: None,
            last_activity_ms: None,
            received: 0,
            sent: 0,
        };
        self.lock().insert(name.to_string(), status.clone());
        let _ = self.events.send(EngineEvent::ChannelState { status });
    }

    pub(crate) fn events(&self) -> broadcast::Sender<EngineEvent> {
        self.events.clone()
    }

    pub(crate) fn snapshot(&self) -> Vec<ChannelStatus> {
        self.lock().values().cloned().collect()
    }

    pub(crate) fn get(&self, name: &str) -> Option<ChannelStatus> {
        self.lock().get(name).cloned()
    }

    pub(crate) fn set_enabled(&self, name: &str, enabled: bool) {
        self.update(name, |s| {
            s.enabled = enabled;
            if !enabled {
                s.state = ChannelState::Disabled;
            } else if s.state == ChannelState::Disabled {
                s.state = ChannelState::Connecting;
            }
        });
    }

    fn set_state(&self, name: &str, state: ChannelState, last_error: Option<String>) {
        self.update(name, |s| {
            // A disabled channel stays disabled until the host enables it again, whatever its
            // winding-down task reports last.
            if !s.enabled {
                return;
            }
            s.state = state;
            if last_error.is_some() {
                s.last_error = last_error.clone();
            }
        });
    }

    fn set_identity(&self, name: &str, identity: Identity) {
        self.update(name, |s| s.identity = Some(identity.clone()));
    }

    /// Counts a message in (`inbound`) or out and refreshes the last activity time. Not an event:
    /// the counters ride along with the next state change and the API reads them directly.
    pub(crate) fn touch(&self, name: &str, inbound: bool) {
        if let Some(status) = self.lock().get_mut(name) {
            status.last_activity_ms = Some(now_ms());
            if inbound {
                status.received += 1;
            } else {
                status.sent += 1;
            }
        }
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut ChannelStatus)) {
        let changed = {
            let mut map = self.lock();
            let Some(status) = map.get_mut(name) else {
                return;
            };
            let before = status.clone();
            change(status);
            (*status != before).then(|| status.clone())
        };
        if let Some(status) = changed {
            let _ = self.events.send(EngineEvent::ChannelState { status });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ChannelStatus>> {
        // A panic while holding this lock cannot leave the map half-written (every update is a
        // single assignment), so a poisoned lock is still safe to use.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The platform channels the configuration asks for (enabled or not: a disabled channel is listed
/// and can be turned on at run time).
pub(crate) fn from_config(config: &crate::config::Config) -> Vec<Arc<dyn Channel>> {
    #[allow(unused_mut)]
    let mut out: Vec<Arc<dyn Channel>> = Vec::new();
    out.extend(
        config
            .channels
            .telegram
            .as_ref()
            .map(|t| Arc::new(telegram::TelegramChannel::new(t)) as Arc<dyn Channel>),
    );
    out.extend(
        config
            .channels
            .slack
            .as_ref()
            .map(|s| Arc::new(slack::SlackChannel::new(s)) as Arc<dyn Channel>),
    );
    out.extend(
        config
            .channels
            .discord
            .as_ref()
            .map(|d| Arc::new(discord::DiscordChannel::new(d)) as Arc<dyn Channel>),
    );
    let _ = config;
    out
}

/// Whether the configuration enables a platform channel; `None` when it is not a configured platform.
pub(crate) fn enabled_in(config: &crate::config::Config, name: &str) -> Option<bool> {
    let c = &config.channels;
    match name {
        "telegram" => c.telegram.as_ref().map(|t| t.enabled),
        "slack" => c.slack.as_ref().map(|s| s.enabled),
        "discord" => c.discord.as_ref().map(|d| d.enabled),
        _ => None,
    }
}

pub(crate) fn set_enabled_in(config: &mut crate::config::Config, name: &str, enabled: bool) {
    let c = &mut config.channels;
    match name {
        "telegram" => c.telegram.iter_mut().for_each(|t| t.enabled = enabled),
        "slack" => c.slack.iter_mut().for_each(|s| s.enabled = enabled),
        "discord" => c.discord.iter_mut().for_each(|d| d.enabled = enabled),
        _ => {}
    }
}

/// Whether a channel's settings differ between two configurations (other than being enabled, which
/// is switched without rebuilding the adapter).
pub(crate) fn settings_changed(
    old: &crate::config::Config,
    new: &crate::config::Config,
    name: &str,
) -> bool {
    let mut old = old.clone();
    let mut new = new.clone();
    set_enabled_in(&mut old, name, true);
    set_enabled_in(&mut new, name, true);
    let (o, n) = (&old.channels, &new.channels);
    match name {
        "telegram" => o.telegram != n.telegram,
        "slack" => o.slack != n.slack,
        "discord" => o.discord != n.discord,
        _ => false,
    }
}
