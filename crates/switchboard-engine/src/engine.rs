//! Starting the engine and driving it: the builder, the options and the handle a host holds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::access::{PairingRequest, PairingState};
use crate::agent::{AgentClient, Message, Timeouts};
use crate::approvals::{Actor, Answer, Surface};
use crate::channels::desktop::{self, DesktopChannel, DesktopLine, DESKTOP};
use crate::channels::{Accepted, Channel, ChannelContext, ChannelError, StatusBoard};
use crate::config::{self, ApprovalMode, Config};
use crate::dispatch::{
    Delivery, DeliveryError, Dispatcher, DispatcherIntake, InteractiveRun, StartError, StartedRun,
};
use crate::events::{EngineEvent, ServerHealth};
use crate::model::{now_ms, ChannelStatus, ChatType, DeliveryTarget, Identity, Peer};
use crate::secrets::{KeyringChoice, Secrets};
use crate::store::{ApprovalRecord, ApprovalRule, DecisionRecord, JournalEntry, Resolution, Store};
use crate::watch::WatchContext;

/// Timings the engine uses. The defaults suit real servers; tests shorten them.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub timeouts: Timeouts,
    /// How long a run may show no event before the server is asked whether it still runs.
    pub watchdog: Duration,
    /// After the server says a run is over, how long to wait for the stream's last events.
    pub settle_grace: Duration,
    /// How long to wait after `waiting_for_tool_approval` before deciding, so calls the server
    /// approves itself have started and are not decided again.
    pub approval_grace: Duration,
    pub typing_interval: Duration,
    /// How often to look at a session that is busy with a run started elsewhere.
    pub busy_poll: Duration,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// How many times a reply chunk is retried after transient failures before it is given up.
    pub delivery_attempts: u32,
    pub prune_interval: Duration,
    /// Overrides `approval_timeout_minutes` (tests use milliseconds).
    pub approval_timeout: Option<Duration>,
    /// Whether tokens may live in the OS keyring (with a configuration file); the default
    /// follows `SWITCHBOARD_KEYRING`.
    pub keyring: KeyringChoice,
    /// How long a file download may go without a byte, and take in all.
    pub download_stall: Duration,
    pub download_total: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            timeouts: Timeouts::default(),
            watchdog: Duration::from_secs(60),
            settle_grace: Duration::from_secs(2),
            approval_grace: Duration::from_millis(150),
            typing_interval: Duration::from_secs(4),
            busy_poll: Duration::from_secs(1),
            retry_base: Duration::from_millis(500),
            retry_cap: Duration::from_secs(60),
            delivery_attempts: 8,
            prune_interval: Duration::from_secs(3600),
            approval_timeout: None,
            keyring: KeyringChoice::from_env(),
            download_stall: Duration::from_secs(20),
            download_total: Duration::from_secs(300),
        }
    }
}

/// Collects what the engine needs, then starts it.
pub struct EngineBuilder {
    config: Config,
    config_path: Option<PathBuf>,
    data_dir: PathBuf,
    options: EngineOptions,
    channels: Vec<Arc<dyn Channel>>,
    desktop: Option<Peer>,
}

/// The engine's entry point.
pub struct Engine;

impl Engine {
    /// An engine for `config`, keeping its state in `data_dir`.
    pub fn builder(config: Config, data_dir: impl Into<PathBuf>) -> EngineBuilder {
        EngineBuilder {
            config,
            config_path: None,
            data_dir: data_dir.into(),
            options: EngineOptions::default(),
            channels: Vec::new(),
            desktop: None,
        }
    }
}

impl EngineBuilder {
    /// The file the configuration came from; settings changed through the handle (and a generated
    /// API token) are saved there.
    pub fn config_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_path = Some(path.into());
        self
    }

    pub fn options(mut self, options: EngineOptions) -> Self {
        self.options = options;
        self
    }

    /// Adds a channel that is not built from the configuration (a test or in-process channel), or
    /// replaces the configured channel of the same name.
    pub fn channel(mut self, channel: Arc<dyn Channel>) -> Self {
        self.channels.push(channel);
        self
    }

    /// Adds the desktop chat ([`DesktopChannel`]): `person`, at this machine, talks to the agent
    /// from the host's window ([`EngineHandle::desktop_send`]).
    pub fn desktop(mut self, person: Peer) -> Self {
        self.desktop = Some(person);
        self
    }

    /// Starts the engine: opens the store, resumes unfinished work and starts the channels. The
    /// gateway API is the host's to serve ([`crate::api::serve`]) on a listener it binds.
    /// Everything stops when `shutdown` is cancelled; [`EngineHandle::stopped`] waits for that.
    pub async fn start(self, shutdown: CancellationToken) -> anyhow::Result<EngineHandle> {
        let EngineBuilder {
            mut config,
            config_path,
            data_dir,
            options,
            channels,
            desktop,
        } = self;
        if let Some(path) = &config_path {
            // Tokens come from the keyring; any still written in the file move there first.
            Secrets::new(path)
                .keyring(options.keyring.clone())
                .settle(&mut config)
                .await?;
        }
        let store = Store::open(&data_dir)?;
        ensure_api_token(&mut config, config_path.as_deref())?;
        let (events, _) = broadcast::channel(4096);
        let board = StatusBoard::new(events.clone());
        let client = AgentClient::new(&config.server.url, &config.server.token, options.timeouts)?;
        let paused = store.meta("paused")?.as_deref() == Some("true");
        let desktop =
            desktop.map(|person| DesktopChannel::new(store.clone(), events.clone(), person));
        let dispatcher = Dispatcher::new(
            config.clone(),
            client,
            store,
            board,
            options.clone(),
            shutdown.clone(),
            paused,
            data_dir.join("files"),
        );
        let handle = EngineHandle {
            inner: Arc::new(Inner {
                dispatcher: dispatcher.clone(),
                config_path,
                running: Mutex::default(),
                api_addr: Mutex::default(),
                scheduler_addr: Mutex::default(),
                shutdown: shutdown.clone(),
                desktop: desktop.clone(),
            }),
        };
        let mut all: Vec<Arc<dyn Channel>> = crate::channels::from_config(&config);
        // A channel given to the builder replaces the one the configuration would build under the
        // same name (a host tuning an adapter keeps the configuration's access settings).
        for channel in channels {
            all.retain(|c| c.name() != channel.name());
            all.push(channel);
        }
        for channel in all {
            let enabled = crate::channels::enabled_in(&config, channel.name()).unwrap_or(true);
            dispatcher.board.register(channel.name(), enabled);
            dispatcher.add_channel(channel.clone());
            if enabled {
                handle.start_channel(channel.name());
            }
        }
        // The desktop chat is part of the host, not a platform: always on, and not listed among
        // the channels a person switches or watches.
        if let Some(desktop) = desktop {
            dispatcher.add_channel(desktop);
            handle.start_channel(DESKTOP);
        }
        dispatcher.close_orphan_approvals()?;
        dispatcher.resume_all()?;
        handle.spawn_housekeeping();
        handle.check_server();
        Ok(handle)
    }
}

/// Generates and saves the gateway API token on first start, so scripts can read it from the file.
fn ensure_api_token(config: &mut Config, path: Option<&Path>) -> anyhow::Result<()> {
    if !config.api.token.is_empty() {
        return Ok(());
    }
    config.api.token = format!("sb_{}", uuid::Uuid::new_v4().simple());
    if let Some(path) = path {
        config::set_value(path, "api.token", &config.api.token)?;
        tracing::info!(file = %path.display(), "generated the gateway API token and saved it");
    }
    Ok(())
}

struct Inner {
    dispatcher: Arc<Dispatcher>,
    config_path: Option<PathBuf>,
    /// Each enabled channel's receive loop, stopped by cancelling its token.
    running: Mutex<HashMap<String, CancellationToken>>,
    api_addr: Mutex<Option<SocketAddr>>,
    /// The API's second address, for the Stakpak watch scheduler.
    scheduler_addr: Mutex<Option<SocketAddr>>,
    shutdown: CancellationToken,
    desktop: Option<Arc<DesktopChannel>>,
}

/// A conversation as the host lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ConversationSummary {
    pub routing_key: String,
    pub session_id: Option<String>,
    pub title: Option<String>,
    pub channel: String,
    pub peer: Peer,
    pub chat: ChatType,
    /// `running`, `queued` or `idle`.
    #[cfg_attr(feature = "ts", ts(type = r#""running" | "queued" | "idle""#))]
    pub state: String,
    pub queued: usize,
    pub last_used_ms: i64,
    /// The tokens its runs used: the last run's and the totals.
    pub usage: crate::store::UsageTotals,
}

/// A conversation's history: the server's messages (or why they could not be read) and the local
/// journal.
#[derive(Debug, Clone, Serialize)]
pub struct ConversationHistory {
    pub routing_key: String,
    pub server: Result<Vec<Message>, String>,
    pub journal: Vec<JournalEntry>,
}

/// The whole engine at a glance.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayStatus {
    pub paused: bool,
    pub approval_mode: ApprovalMode,
    pub server_url: String,
    pub channels: Vec<ChannelStatus>,
    pub conversations: usize,
    pub active_runs: usize,
    pub queued: usize,
    pub pending_approvals: usize,
}

/// Why a `send` failed, mapped to the API's status codes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    #[error("no channel named {0:?} is configured")]
    ChannelNotFound(String),
    #[error("invalid target: {0}")]
    InvalidTarget(String),
    #[error("delivery failed: {0}")]
    DeliveryFailed(String),
}

/// What a host uses to drive a running engine. Cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    inner: Arc<Inner>,
}

impl EngineHandle {
    fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.inner.dispatcher
    }

    /// Reports a problem a person may need to act on (the host shows it).
    pub fn report_error(&self, scope: &str, message: &str) {
        self.dispatcher().emit(EngineEvent::Error {
            scope: scope.to_string(),
            message: message.to_string(),
        });
    }

    /// The engine's events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.dispatcher().events.subscribe()
    }

    /// The current configuration (with the generated API token filled in).
    pub fn config(&self) -> Arc<Config> {
        self.dispatcher().config()
    }

    /// Records where the gateway API listens ([`crate::api::serve`] does).
    pub(crate) fn set_api_addr(&self, addr: SocketAddr) {
        *self
            .inner
            .api_addr
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(addr);
    }

    /// Where the gateway API listens, once it does.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        *self
            .inner
            .api_addr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_scheduler_addr(&self, addr: SocketAddr) {
        *self
            .inner
            .scheduler_addr
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(addr);
    }

    /// Where the gateway API listens for the Stakpak watch scheduler, once it does.
    pub fn scheduler_addr(&self) -> Option<SocketAddr> {
        *self
            .inner
            .scheduler_addr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The `[notifications]` lines for `~/.stakpak/autopilot.toml` that send the watch
    /// scheduler's notifications through this gateway; `None` until the API listens there.
    pub fn autopilot_lines(&self) -> Option<String> {
        let addr = self.scheduler_addr()?;
        Some(config::autopilot_notifications(&addr, &self.config()))
    }

    pub fn store(&self) -> &Store {
        &self.dispatcher().store
    }

    pub fn status(&self) -> anyhow::Result<GatewayStatus> {
        let d = self.dispatcher();
        let conversations = d.store.conversations()?;
        let queued = d.store.keys_with_queued()?.len();
        Ok(GatewayStatus {
            paused: d.is_paused(),
            approval_mode: d.config().gateway.approval_mode,
            server_url: d.config().server.url.clone(),
            channels: d.board.snapshot(),
            conversations: conversations.len(),
            active_runs: d.active_keys().len(),
            queued,
            pending_approvals: d.store.pending_approvals()?.len(),
        })
    }

    pub fn channels(&self) -> Vec<ChannelStatus> {
        self.dispatcher().board.snapshot()
    }

    /// Stops starting runs (messages are still received and stored) or starts again, in order.
    pub fn set_paused(&self, paused: bool) -> anyhow::Result<()> {
        let d = self.dispatcher();
        d.store
            .set_meta("paused", if paused { "true" } else { "false" })?;
        d.set_paused(paused);
        Ok(())
    }

    pub fn is_paused(&self) -> bool {
        self.dispatcher().is_paused()
    }

    /// Changes the approval mode now and saves it to the configuration file.
    pub fn set_approval_mode(&self, mode: ApprovalMode) -> anyhow::Result<()> {
        let d = self.dispatcher();
        let mut config = (*d.config()).clone();
        if config.gateway.approval_mode == mode {
            return Ok(());
        }
        config.gateway.approval_mode = mode;
        if let Some(path) = &self.inner.config_path {
            config::set_value(path, "gateway.approval_mode", &mode.to_string())?;
        }
        d.set_config(config);
        d.emit(EngineEvent::ApprovalModeChanged { mode });
        Ok(())
    }

    /// Turns a channel on or off at run time; off stops its connection, on starts it again.
    pub fn set_channel_enabled(&self, name: &str, enabled: bool) -> anyhow::Result<()> {
        let d = self.dispatcher();
        if d.channel(name).is_none() {
            anyhow::bail!("no channel named {name:?}");
        }
        d.board.set_enabled(name, enabled);
        if enabled {
            self.start_channel(name);
        } else if let Some(token) = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
        {
            token.cancel();
        }
        if let Some(path) = &self.inner.config_path {
            if crate::channels::enabled_in(&d.config(), name).is_some() {
                config::set_value(
                    path,
                    &format!("channels.{name}.enabled"),
                    if enabled { "true" } else { "false" },
                )?;
                let mut config = (*d.config()).clone();
                crate::channels::set_enabled_in(&mut config, name, enabled);
                d.set_config(config);
            }
        }
        Ok(())
    }

    fn start_channel(&self, name: &str) {
        let d = self.dispatcher();
        let Some(channel) = d.channel(name) else {
            return;
        };
        let mut running = self.inner.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.get(name).is_some_and(|t| !t.is_cancelled()) {
            return;
        }
        let token = self.inner.shutdown.child_token();
        running.insert(name.to_string(), token.clone());
        let ctx = ChannelContext::new(
            name,
            token,
            Arc::new(DispatcherIntake(d.clone())),
            d.board.clone(),
            d.store.clone(),
        );
        d.tasks.spawn(async move { channel.run(ctx).await });
    }

    /// Checks a channel's credentials and returns the bot identity.
    pub async fn test_channel(&self, name: &str) -> Result<Identity, ChannelError> {
        match self.dispatcher().channel(name) {
            Some(channel) => channel.test().await,
            None => Err(ChannelError::Rejected(format!("no channel named {name:?}"))),
        }
    }

    /// Every conversation with its state, most recent first.
    pub fn conversations(&self) -> anyhow::Result<Vec<ConversationSummary>> {
        let d = self.dispatcher();
        let active = d.active_keys();
        let mut out = Vec::new();
        for c in d.store.conversations()? {
            let queued = d.store.queued(&c.routing_key)?.len();
            let state = if active.contains(&c.routing_key) {
                "running"
            } else if queued > 0 {
                "queued"
            } else {
                "idle"
            };
            let usage = d.store.usage(&c.routing_key)?;
            out.push(ConversationSummary {
                routing_key: c.routing_key,
                session_id: c.session_id,
                title: c.title,
                channel: c.channel,
                peer: c.peer,
                chat: c.chat,
                state: state.to_string(),
                queued,
                last_used_ms: c.last_used_ms,
                usage,
            });
        }
        Ok(out)
    }

    /// A conversation's history from the server (latest 200 messages) and the journal.
    pub async fn history(&self, routing_key: &str) -> anyhow::Result<ConversationHistory> {
        let d = self.dispatcher();
        let journal = d.store.journal_for(routing_key, 200)?;
        let session = d
            .store
            .conversation(routing_key)?
            .and_then(|c| c.session_id);
        let server = match session {
            Some(session) => d
                .client()
                .latest_messages(&session, 200)
                .await
                .map_err(|e| e.to_string()),
            None => Ok(Vec::new()),
        };
        Ok(ConversationHistory {
            routing_key: routing_key.to_string(),
            server,
            journal,
        })
    }

    /// Stops the conversation's current task, as `/stop` does (its queued messages stay): the
    /// run in flight is cancelled, one being prepared is never sent. False when there is none.
    pub fn cancel(&self, routing_key: &str) -> bool {
        self.dispatcher().stop(routing_key).is_some()
    }

    /// Applies a new configuration: routing, approvals and timings at once; a new server URL or
    /// token reconnects; channels whose settings changed restart. The API address needs a restart.
    pub fn reload(&self, config: Config) -> anyhow::Result<()> {
        let d = self.dispatcher();
        let old = d.config();
        let mut config = config;
        if config.api.token.is_empty() {
            config.api.token = old.api.token.clone();
        }
        if config.server != old.server {
            d.set_client(AgentClient::new(
                &config.server.url,
                &config.server.token,
                d.options.timeouts,
            )?);
        }
        let restart: Vec<String> = d
            .channel_names()
            .into_iter()
            .filter(|name| crate::channels::settings_changed(&old, &config, name))
            .collect();
        let mode_changed = config.gateway.approval_mode != old.gateway.approval_mode;
        if config.api.listen != old.api.listen {
            d.emit(EngineEvent::Error {
                scope: "api".into(),
                message: "the gateway API address changes after a restart".into(),
            });
        }
        let new_channels = crate::channels::from_config(&config);
        d.set_config(config.clone());
        if mode_changed {
            d.emit(EngineEvent::ApprovalModeChanged {
                mode: config.gateway.approval_mode,
            });
        }
        for channel in new_channels {
            let name = channel.name().to_string();
            let known = d.channel(&name).is_some();
            if known && !restart.contains(&name) {
                continue;
            }
            if let Some(token) = self
                .inner
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name)
            {
                token.cancel();
            }
            let enabled = crate::channels::enabled_in(&config, &name).unwrap_or(true);
            d.add_channel(channel);
            d.board.register(&name, enabled);
            if enabled {
                self.start_channel(&name);
            }
        }
        self.check_server();
        Ok(())
    }

    /// Delivers a notification to a chat (`POST /v1/gateway/send`). With a context, the next
    /// message from that chat consumes it once (within `delivery_context_ttl_hours`).
    pub async fn send(
        &self,
        channel: &str,
        target: &str,
        text: &str,
        context: Option<WatchContext>,
    ) -> Result<usize, SendError> {
        let (ch, target) = self.send_target(channel, target).await?;
        if text.trim().is_empty() {
            return Err(SendError::InvalidTarget("the text is empty".into()));
        }
        let d = self.dispatcher();
        let (chunks, _) = self.post_notice(&ch, &target, text).await?;
        if let Some(context) = &context {
            let now = now_ms();
            let ttl = d.config().gateway.delivery_context_ttl_hours as i64 * 3_600_000;
            d.store
                .store_context(channel, &target.place_key(), context, text, now, now + ttl)
                .map_err(|e| {
                    SendError::DeliveryFailed(format!(
                        "delivered, but the context could not be stored: {e}"
                    ))
                })?;
        }
        tracing::info!(
            channel,
            chunks,
            with_context = context.is_some(),
            "notification delivered"
        );
        let routing_key = d.conversation_for_place(channel, &target).unwrap_or_else(|e| {
            tracing::warn!(error = %format!("{e:#}"), "cannot tell the notified chat's conversation");
            None
        });
        d.emit(EngineEvent::WatchNotificationDelivered {
            channel: channel.to_string(),
            target,
            text: text.to_string(),
            context,
            routing_key,
        });
        Ok(chunks)
    }

    /// An interactive watch run (`POST /v1/gateway/send` with `interactive`): the notice and the
    /// check output go to the chat, then `run`'s prompt runs in that chat's conversation, whose
    /// session is returned; the chat's next message continues it.
    pub async fn send_interactive(
        &self,
        channel: &str,
        target: &str,
        text: &str,
        context: Option<WatchContext>,
        run: InteractiveRun,
    ) -> Result<(usize, StartedRun), SendError> {
        let (ch, target) = self.send_target(channel, target).await?;
        if run.prompt.trim().is_empty() {
            return Err(SendError::InvalidTarget(
                "the interactive prompt is empty".into(),
            ));
        }
        let d = self.dispatcher();
        d.check_interactive_target(&ch, &target)
            .map_err(|e| match e {
                StartError::Target(why) => SendError::InvalidTarget(why),
                other => SendError::DeliveryFailed(other.to_string()),
            })?;
        let mut notice = text.trim().to_owned();
        if let Some(output) = context
            .as_ref()
            .and_then(|c| c.check_output.as_deref())
            .map(str::trim)
            .filter(|o| !o.is_empty())
        {
            notice.push_str(&format!("\n\nCheck output:\n{output}"));
        }
        if notice.is_empty() {
            notice = format!("🕐 Schedule {} started", run.schedule);
        }
        let (chunks, first) = self.post_notice(&ch, &target, &notice).await?;
        let started = d
            .start_interactive(&ch, &target, first.as_deref(), run)
            .await
            .map_err(|e| match e {
                StartError::Target(why) => SendError::InvalidTarget(why),
                other => SendError::DeliveryFailed(format!(
                    "the notice was delivered, but the run could not start: {other}"
                )),
            })?;
        d.emit(EngineEvent::WatchNotificationDelivered {
            channel: channel.to_string(),
            target,
            text: text.to_string(),
            context,
            routing_key: Some(started.routing_key.clone()),
        });
        Ok((chunks, started))
    }

    /// Whether the conversation bound to an agent session is busy (`GET /v1/gateway/sessions/{id}`):
    /// its routing key and whether a run is in flight or messages wait; `None` for a session no
    /// conversation has.
    pub fn session_activity(&self, session_id: &str) -> anyhow::Result<Option<(String, bool)>> {
        self.dispatcher().session_activity(session_id)
    }

    /// The channel and the parsed target of a `/send` (names resolved, such as Slack's `#ops`).
    async fn send_target(
        &self,
        channel: &str,
        target: &str,
    ) -> Result<(Arc<dyn Channel>, DeliveryTarget), SendError> {
        let d = self.dispatcher();
        let Some(ch) = d.channel(channel) else {
            return Err(SendError::ChannelNotFound(channel.to_string()));
        };
        if d.board.get(channel).is_some_and(|s| !s.enabled) {
            return Err(SendError::DeliveryFailed(format!(
                "the {channel} channel is turned off"
            )));
        }
        let resolved = ch
            .resolve_target(target)
            .await
            .map_err(SendError::InvalidTarget)?;
        let target = ch
            .parse_target(&resolved)
            .map_err(SendError::InvalidTarget)?;
        Ok((ch, target))
    }

    /// Posts a notice, split to fit; returns the number of parts and the first part's message id.
    async fn post_notice(
        &self,
        ch: &Arc<dyn Channel>,
        target: &DeliveryTarget,
        text: &str,
    ) -> Result<(usize, Option<String>), SendError> {
        let mut first = None;
        let chunks = self
            .dispatcher()
            .deliver_text(ch, target, text, 0, Delivery::Request, |index, _, sent| {
                if index == 0 {
                    first = Some(sent.id.clone());
                }
                Ok(())
            })
            .await
            .map_err(|e| match e {
                DeliveryError::Stopping => SendError::DeliveryFailed(e.to_string()),
                DeliveryError::Failed(why) => SendError::DeliveryFailed(why),
            })?;
        Ok((chunks, first))
    }

    // ----- approvals ----------------------------------------------------------------------------

    pub fn pending_approvals(&self) -> anyhow::Result<Vec<ApprovalRecord>> {
        self.dispatcher().store.pending_approvals()
    }

    /// One approval, whatever its state.
    pub fn approval(&self, approval_id: &str) -> anyhow::Result<Option<ApprovalRecord>> {
        self.dispatcher().store.approval(approval_id)
    }

    /// Answers a pending approval: the one path every surface's answer takes. The first answer
    /// wins, and only before the deadline (a later one gets `AlreadyDecided` with who decided
    /// where, or `TooLate`); the answer's scope is applied (a grant for the conversation, or a
    /// rule); every surface is updated and the run tells the server. The caller has checked that
    /// `actor` may answer.
    pub fn decide(
        &self,
        approval_id: &str,
        answer: &Answer,
        actor: &Actor,
        surface: Surface,
    ) -> anyhow::Result<Resolution> {
        self.dispatcher()
            .decide(approval_id, answer, actor, surface)
    }

    // ----- access control -----------------------------------------------------------------------

    /// Pairing requests waiting for a person, oldest first.
    pub fn pairing_requests(&self) -> anyhow::Result<Vec<PairingRequest>> {
        self.dispatcher().store.pending_pairings(None, now_ms())
    }

    /// Admits the sender of a pairing code; their next message reaches the agent.
    pub fn admit_pairing(
        &self,
        channel: &str,
        code: &str,
        decided_by: &str,
    ) -> anyhow::Result<Option<PairingRequest>> {
        self.dispatcher()
            .resolve_pairing(channel, code, PairingState::Admitted, decided_by)
    }

    /// Refuses the sender of a pairing code; they are ignored silently from then on.
    pub fn refuse_pairing(
        &self,
        channel: &str,
        code: &str,
        decided_by: &str,
    ) -> anyhow::Result<Option<PairingRequest>> {
        self.dispatcher()
            .resolve_pairing(channel, code, PairingState::Refused, decided_by)
    }

    pub fn rules(&self) -> anyhow::Result<Vec<ApprovalRule>> {
        self.dispatcher().store.rules()
    }

    /// Adds an "always allow" rule; `channel` limits it to that channel's conversations.
    pub fn add_rule(
        &self,
        tool: &str,
        arg_pattern: Option<&str>,
        channel: Option<&str>,
        created_by: &str,
    ) -> anyhow::Result<i64> {
        self.dispatcher()
            .store
            .add_rule(tool, arg_pattern, channel, created_by)
    }

    pub fn remove_rule(&self, id: i64) -> anyhow::Result<bool> {
        self.dispatcher().store.remove_rule(id)
    }

    pub fn decisions(&self, limit: usize) -> anyhow::Result<Vec<DecisionRecord>> {
        self.dispatcher().store.decisions(limit)
    }

    // ----- lifecycle ----------------------------------------------------------------------------

    /// Asks the engine to stop.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Waits until every task has finished its current step after shutdown.
    pub async fn stopped(&self) {
        self.inner.shutdown.cancelled().await;
        let tasks = &self.dispatcher().tasks;
        tasks.close();
        tasks.wait().await;
    }

    fn spawn_housekeeping(&self) {
        let d = self.dispatcher().clone();
        d.tasks.clone().spawn(async move {
            let mut interval = tokio::time::interval(d.options.prune_interval);
            loop {
                tokio::select! {
                    _ = d.shutdown.cancelled() => return,
                    _ = interval.tick() => {}
                }
                let config = d.config();
                let idle = config.gateway.prune_after_hours as i64 * 3_600_000;
                let retention = config.gateway.journal_retention_days as i64 * 86_400_000;
                match d.store.prune(now_ms(), idle, retention) {
                    Ok(pruned) => tracing::debug!(?pruned, "pruned the store"),
                    Err(e) => tracing::warn!(error = %e, "pruning failed"),
                }
            }
        });
    }

    /// Checks the agent server once and reports its state (at start and after new settings).
    fn check_server(&self) {
        let d = self.dispatcher().clone();
        d.tasks.clone().spawn(async move {
            let ask = d.epoch_ask();
            let (state, detail) = match d.client().check().await {
                Ok(health) => {
                    // Its start time too, so the first runs need not ask for it.
                    d.learn_server_epoch(&health, ask);
                    (
                        ServerHealth::Ok,
                        Some(format!("version {}", health.version)),
                    )
                }
                Err(crate::agent::AgentError::Unauthorized) => (
                    ServerHealth::Unauthorized,
                    Some(crate::agent::AgentError::Unauthorized.to_string()),
                ),
                Err(e) => (ServerHealth::Unreachable, Some(e.to_string())),
            };
            d.emit(EngineEvent::ServerState { state, detail });
        });
    }

    // ----- added for the desktop shell ------------------------------------------------------------

    /// The agent server's last reported state and its detail; `None` until the first check
    /// answered. A host reads this after subscribing, so a report sent before the subscription is
    /// not missed.
    pub fn server_state(&self) -> Option<(ServerHealth, Option<String>)> {
        self.dispatcher().server_state()
    }

    /// The reply being written in a conversation, while a run is in flight there.
    pub fn live_reply(&self, routing_key: &str) -> Option<String> {
        self.dispatcher().live_reply(routing_key)
    }

    /// Checks the agent server again and reports the answer as an [`EngineEvent::ServerState`]:
    /// a person looking at "unreachable" wants to try again without changing any setting.
    pub fn recheck_server(&self) {
        self.check_server();
    }

    /// Checks a channel's credentials as `config` sets them, without starting the channel or
    /// changing the running one: the "Test" button next to settings that are not saved yet. A
    /// channel that `config` does not describe (an in-process channel) is tested as it runs.
    pub async fn test_channel_settings(
        &self,
        config: &Config,
        name: &str,
    ) -> Result<Identity, ChannelError> {
        match crate::channels::from_config(config)
            .into_iter()
            .find(|c| c.name() == name)
        {
            Some(channel) => channel.test().await,
            None => self.test_channel(name).await,
        }
    }

    // ----- the person at the desktop --------------------------------------------------------------

    /// The person at this machine writes `text` in desktop chat `chat_id` (a new id starts a new
    /// chat). `client_id` names the message, so sending it twice (a retried call) is one
    /// message. Returns as soon as it is stored, like any chat message.
    pub async fn desktop_send(
        &self,
        chat_id: &str,
        text: &str,
        client_id: &str,
    ) -> Result<Accepted, SayError> {
        let desktop = self.desktop_channel()?;
        if !desktop::valid_chat_id(chat_id) {
            return Err(SayError::Invalid(format!(
                "{chat_id:?} is not a desktop chat id"
            )));
        }
        let message = desktop.message(chat_id, checked_text(text)?, checked_id(client_id)?);
        let config = self.config();
        let key =
            crate::routing::routing_key(&config.routing, DESKTOP, &message.peer, &message.chat);
        self.accept_local(message, key).await
    }

    /// The person at this machine writes `text` into an existing conversation of any channel (a
    /// reply typed into a notification, the quick chat on a chat's conversation). The agent's
    /// answer goes where that conversation's replies go; a watch context waiting there is
    /// consumed as by a message from the chat.
    pub async fn say(
        &self,
        routing_key: &str,
        text: &str,
        client_id: &str,
    ) -> Result<Accepted, SayError> {
        let desktop = self.desktop_channel()?;
        let text = checked_text(text)?;
        let client_id = checked_id(client_id)?;
        let conversation = self
            .dispatcher()
            .store
            .conversation(routing_key)
            .map_err(|e| SayError::Failed(format!("{e:#}")))?;
        let Some(conversation) = conversation else {
            return match desktop::chat_of(routing_key) {
                Some(chat_id) => self.desktop_send(chat_id, text, client_id).await,
                None => Err(SayError::NotFound(routing_key.to_owned())),
            };
        };
        let mut message = desktop.message(&conversation.target.chat_id, text, client_id);
        message.channel = conversation.channel;
        message.chat = conversation.chat;
        message.target = DeliveryTarget {
            reply_to: None,
            ..conversation.target
        };
        self.accept_local(message, routing_key.to_owned()).await
    }

    async fn accept_local(
        &self,
        message: crate::model::InboundMessage,
        key: String,
    ) -> Result<Accepted, SayError> {
        DispatcherIntake(self.dispatcher().clone())
            .accept_local(message, key)
            .await
            .map_err(|e| SayError::Failed(format!("{e:#}")))
    }

    /// A desktop chat as the window shows it: what the person wrote (with how far each message
    /// got) and what the agent side said, oldest first; the latest `limit` of each.
    pub fn desktop_transcript(
        &self,
        chat_id: &str,
        limit: usize,
    ) -> Result<Vec<DesktopLine>, SayError> {
        let desktop = self.desktop_channel()?;
        let d = self.dispatcher();
        let config = self.config();
        let chat = ChatType::Group {
            id: chat_id.to_owned(),
        };
        let key = crate::routing::routing_key(&config.routing, DESKTOP, desktop.person(), &chat);
        let failed = |e: anyhow::Error| SayError::Failed(format!("{e:#}"));
        let journal = d.store.journal_for(&key, limit).map_err(failed)?;
        let said = d.store.desktop_messages(chat_id, limit).map_err(failed)?;
        Ok(desktop::transcript(chat_id, journal, said))
    }

    fn desktop_channel(&self) -> Result<&Arc<DesktopChannel>, SayError> {
        self.inner.desktop.as_ref().ok_or(SayError::NoDesktop)
    }
}

/// Why a message from the person at the desktop was not taken.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SayError {
    #[error("this engine has no desktop chat")]
    NoDesktop,
    #[error("no conversation {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
}

/// The longest message the person may type at once (the agent server takes far more, but a
/// paste this long is a mistake).
const MAX_SAY: usize = 100_000;

fn checked_text(text: &str) -> Result<&str, SayError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(SayError::Invalid("the message is empty".into()));
    }
    if text.len() > MAX_SAY {
        return Err(SayError::Invalid(format!(
            "the message is {} bytes; at most {MAX_SAY} go at once",
            text.len()
        )));
    }
    Ok(text)
}

fn checked_id(client_id: &str) -> Result<&str, SayError> {
    if client_id.is_empty() || client_id.len() > 100 || client_id.chars().any(char::is_control) {
        return Err(SayError::Invalid(format!(
            "{client_id:?} is not a message id"
        )));
    }
    Ok(client_id)
}
