//! The shell's core: starts the engine from the configuration file, turns its events into UI
//! events, tray updates and notifications, and carries out what the window and the tray ask.
//!
//! It knows nothing of Tauri: what it shows goes through a [`Host`], which the app implements
//! with the window, the tray and the notification daemon, and tests implement with a recorder.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use switchboard_engine::agent::{AgentClient, Timeouts};
use switchboard_engine::approvals::{
    readable_arguments, Actor, Answer as Scope, ApprovalState, Outcome, Preview, Surface,
};
use switchboard_engine::channels::desktop::{self, DesktopLine};
use switchboard_engine::channels::{Channel, ChannelError};
use switchboard_engine::config::{self, ApprovalMode, Config, ConfigError, Paths};
use switchboard_engine::model::{now_ms, Attachment, Fetched, Identity, Peer};
use switchboard_engine::secrets::Secrets;
use switchboard_engine::store::{ApprovalRecord, Resolution};
use switchboard_engine::{Engine, EngineEvent, EngineHandle, EngineOptions, SayError};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::activity::{ActivityEntry, ActivityLog, Level};
use crate::autostart::Autostart;
use crate::notify::{self, Alerts, Answer, Question, Toast};
use crate::tray::{MenuId, TrayModel};
use crate::views::{
    About, ApprovalChoice, ApprovalView, ApprovalsView, AttachmentState, AttachmentView, ChatLine,
    ConfigView, ConversationView, DecideOutcome, DecisionView, ErrorCode, FieldProblem,
    HistoryView, ImportView, IpcError, IpcResult, JournalLine, LiveReply, Page, PairingDecision,
    PairingOutcome, PairingView, QuickChatView, RuleView, SaveOutcome, ServerCheck, ServerState,
    ServerView, SettingsView, Snapshot, UiEvent, HISTORY_LIMIT,
};

/// What the shell shows, and where.
pub trait Host: Send + Sync + 'static {
    /// Sends an event to the window.
    fn emit(&self, event: UiEvent);
    /// Makes the tray show `model`; `force` resets every item (after a click toggled one).
    fn update_tray(&self, model: &TrayModel, force: bool);
    /// Raises a native notification.
    fn notify(&self, toast: Toast);
    /// Shows and focuses the window, on `page` if given (and a conversation on Sessions).
    fn show_window(&self, page: Option<Page>, routing_key: Option<String>);
    /// Closes the notification raised for a question (an approval, a pairing request), if one is
    /// shown: it was answered elsewhere or stopped waiting.
    fn withdraw(&self, question: &Question);
    /// Opens the quick chat window (on a conversation, else the desktop chat used last).
    fn open_quick_chat(&self, routing_key: Option<String>);
    /// Closes the quick chat window.
    fn close_quick_chat(&self);
    /// The settings were saved (or first loaded): the host applies what is its own (the quick
    /// chat's shortcut).
    fn settings_applied(&self, config: &Config);
}

/// The person at the desktop, as the desktop chat's sender.
pub fn local_person() -> Peer {
    Peer {
        id: desktop::LOCAL_PEER_ID.to_owned(),
        name: Some(local_user()),
    }
}

/// Who decides from the window or a notification: the local user's name, or "you".
pub fn local_user() -> String {
    ["USER", "USERNAME", "LOGNAME"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .map(|value| value.trim().to_owned())
        .find(|value| !value.is_empty())
        .unwrap_or_else(|| "you".to_owned())
}

/// A stored approval as the Approvals page shows it.
fn approval_view(a: &ApprovalRecord) -> ApprovalView {
    let preview = Preview::of(&a.tool, &a.arguments);
    ApprovalView {
        id: a.id.clone(),
        tool: a.tool.clone(),
        summary: preview.summary,
        detail: preview.detail,
        complete: preview.complete,
        arguments: readable_arguments(&a.arguments),
        arguments_whole: whole_arguments(&a.arguments),
        routing_key: a.routing_key.clone(),
        session_id: Some(a.session_id.clone()).filter(|s| !s.is_empty()),
        channel: Some(a.channel.clone()).filter(|c| !c.is_empty()),
        requester: a.requester.clone(),
        created_ms: Some(a.created_ms),
        deadline_ms: a.deadline_ms,
    }
}

/// A call's arguments exactly as the agent sent them, nothing masked or folded, for the window's
/// "Show masked values": the person at this machine may see what they are asked to run.
fn whole_arguments(arguments: &serde_json::Value) -> String {
    serde_json::to_string_pretty(arguments).unwrap_or_else(|_| arguments.to_string())
}

/// How a stored approval ended, in the words every surface uses.
fn outcome_line(a: &ApprovalRecord) -> String {
    let surface = a.surface.map(|s| s.label(&a.channel)).unwrap_or_default();
    Outcome {
        tool: &a.tool,
        state: a.state,
        decided_by: a.decided_by.as_deref().unwrap_or(""),
        surface: &surface,
        note: a.note.as_deref(),
    }
    .line()
}

/// What the shell is started with.
pub struct ShellOptions {
    pub paths: Paths,
    pub engine: EngineOptions,
    pub autostart: Autostart,
    /// Stakpak's `autopilot.toml`, offered for import on the first run.
    pub autopilot_file: Option<PathBuf>,
    /// Channels added to the engine besides those of the configuration (tests).
    pub extra_channels: Vec<Arc<dyn Channel>>,
    /// Started as the demo: the window opens on the desktop chat and says it is a demo.
    pub demo: bool,
}

/// How the configuration file stands.
#[derive(Debug, Clone, PartialEq)]
enum ConfigStatus {
    Loaded,
    Missing,
    Invalid(FieldProblem),
}

struct Running {
    handle: EngineHandle,
    stop: CancellationToken,
}

struct State {
    engine: Option<Running>,
    config: ConfigStatus,
    /// The settings when the engine does not run: the defaults or what could be read of the file.
    draft: Config,
    engine_error: Option<String>,
    server: (ServerState, Option<String>),
    activity: ActivityLog,
    alerts: Alerts,
    /// The reply being written in each conversation with an active run.
    live: HashMap<String, LiveReply>,
    /// The pairing requests known to wait, by channel and code, so that a code that expires
    /// (the engine says nothing then) leaves the window, the tray and its notification.
    pairings: HashMap<(String, String), PairingView>,
    autostart: bool,
    /// The quick chat's shortcut, as the host registered it.
    quick_chat: QuickChatView,
}

/// The desktop shell around one engine.
pub struct Shell {
    options: ShellOptions,
    host: OnceLock<Arc<dyn Host>>,
    state: Mutex<State>,
    /// Held while a snapshot is taken and shown, so two publishers racing cannot leave the tray
    /// and the window on the older of their two snapshots.
    publishing: Mutex<()>,
    /// How many snapshots were taken ([`Snapshot::seq`]).
    snapshots: std::sync::atomic::AtomicU64,
}

/// What the window is told to open for a new desktop chat.
pub const NEW_CHAT: &str = "new";
/// How much of a desktop chat the window shows (each side).
const TRANSCRIPT_LIMIT: usize = 500;

fn say_error(error: SayError) -> IpcError {
    match error {
        SayError::NoDesktop => IpcError::new(ErrorCode::NotRunning, error.to_string()),
        SayError::NotFound(_) => IpcError::new(ErrorCode::NotFound, error.to_string()),
        SayError::Invalid(_) => IpcError::new(ErrorCode::InvalidArgument, error.to_string()),
        SayError::Failed(_) => IpcError::new(ErrorCode::Engine, error.to_string()),
    }
}

/// How long quitting waits for the engine to finish its current steps.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest the shell waits to look again while a pairing code is pending. A code's expiry is
/// a time on the wall clock, and the runtime's timers do not count the time a machine spent
/// suspended, so a code that ran out during a suspend is noticed within this of the resume.
const PAIRING_SWEEP_AT_MOST: Duration = Duration::from_secs(60);
/// The shortest: a clock that went back does not turn the wait into a spin.
const PAIRING_SWEEP_AT_LEAST: Duration = Duration::from_secs(1);

impl Shell {
    /// Reads the configuration file (so the tray's first look is already right); the engine
    /// starts with [`Shell::start`].
    pub fn new(options: ShellOptions) -> Arc<Shell> {
        let autostart = options.autostart.is_enabled();
        let (config, draft) = read_config(&options.paths.config_file);
        Arc::new(Shell {
            options,
            host: OnceLock::new(),
            publishing: Mutex::new(()),
            snapshots: Default::default(),
            state: Mutex::new(State {
                engine: None,
                config,
                draft,
                engine_error: None,
                server: (ServerState::Unknown, None),
                activity: ActivityLog::new(2000),
                alerts: Alerts::default(),
                live: HashMap::new(),
                pairings: HashMap::new(),
                autostart,
                quick_chat: QuickChatView::default(),
            }),
        })
    }

    /// Connects the shell to what shows it. Only the first host counts.
    pub fn set_host(&self, host: Arc<dyn Host>) {
        if self.host.set(host).is_err() {
            tracing::warn!("the shell already has a host");
        }
    }

    fn host(&self) -> Option<&Arc<dyn Host>> {
        self.host.get()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change under this lock is a plain assignment, so a panic elsewhere cannot leave
        // the state half-written; a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn paths(&self) -> &Paths {
        &self.options.paths
    }

    /// Reads the configuration and starts the engine from it. Without a valid file the engine
    /// waits for the Settings page, and the window opens there.
    pub async fn start(self: &Arc<Self>) {
        let path = &self.options.paths.config_file;
        let (status, draft) = {
            let s = self.lock();
            (s.config.clone(), s.draft.clone())
        };
        match status {
            ConfigStatus::Loaded => {
                let _ = self.start_engine(draft).await;
            }
            ConfigStatus::Missing => {
                let text = format!("No configuration yet at {}", path.display());
                self.record(Level::Warning, "first_run", "settings", text);
                self.publish();
            }
            ConfigStatus::Invalid(problem) => {
                tracing::warn!(field = %problem.field, message = %problem.message, "the configuration has a mistake");
                let text = format!(
                    "The configuration has a mistake: {}: {}",
                    problem.field, problem.message
                );
                self.record(Level::Error, "config_invalid", "settings", text);
                self.publish();
            }
        }
    }

    async fn start_engine(self: &Arc<Self>, config: Config) -> IpcResult<()> {
        let paths = &self.options.paths;
        let stop = CancellationToken::new();
        let mut builder = Engine::builder(config.clone(), &paths.data_dir)
            .config_path(&paths.config_file)
            .options(self.options.engine.clone())
            .desktop(local_person());
        for channel in &self.options.extra_channels {
            builder = builder.channel(Arc::clone(channel));
        }
        match builder.start(stop.clone()).await {
            Ok(handle) => {
                let events = handle.subscribe();
                // The gateway API (watch notifications, the scheduler's sends); a port in use is
                // reported as an engine error and the rest runs on.
                switchboard_engine::api::start(&handle, stop.clone()).await;
                {
                    let mut s = self.lock();
                    s.engine = Some(Running {
                        handle: handle.clone(),
                        stop: stop.clone(),
                    });
                    s.config = ConfigStatus::Loaded;
                    s.draft = config;
                    s.engine_error = None;
                    // What the engine already knows of the server (a report may have gone out
                    // before the subscription); later reports arrive as events.
                    s.server = match handle.server_state() {
                        Some((state, detail)) => (state.into(), detail),
                        None => (ServerState::Unknown, None),
                    };
                }
                tokio::spawn(Arc::clone(self).forward(events, stop));
                if let Some(host) = self.host() {
                    host.settings_applied(&handle.config());
                }
                // The first report may have gone out before the subscription; ask again.
                handle.recheck_server();
                tracing::info!(config = %paths.config_file.display(), data = %paths.data_dir.display(), api = ?handle.api_addr(), "engine started");
                self.record(
                    Level::Info,
                    "engine_started",
                    "gateway",
                    "Switchboard started".to_owned(),
                );
                self.publish();
                Ok(())
            }
            Err(error) => {
                stop.cancel();
                let message = format!("{error:#}");
                tracing::error!(error = %message, "the engine cannot start");
                {
                    let mut s = self.lock();
                    s.config = ConfigStatus::Loaded;
                    s.draft = config;
                    s.engine_error = Some(message.clone());
                }
                self.record(
                    Level::Error,
                    "engine_failed",
                    "gateway",
                    format!("Switchboard cannot start: {message}"),
                );
                self.publish();
                Err(IpcError::new(ErrorCode::Engine, message))
            }
        }
    }

    /// Hands the engine's events to [`Shell::on_engine_event`] until the engine stops, and sweeps
    /// pairing codes when the first pending one runs out (their expiry is no event). With no
    /// code pending it wakes for events only: nothing polls while the app waits.
    async fn forward(
        self: Arc<Self>,
        mut events: broadcast::Receiver<EngineEvent>,
        stop: CancellationToken,
    ) {
        // The first sweep is at once: it learns the requests that waited before the start.
        self.sweep_pairings();
        loop {
            let sweep_in = pairing_sweep_in(&self.lock().pairings, now_ms());
            let received = tokio::select! {
                _ = stop.cancelled() => return,
                _ = after(sweep_in) => {
                    self.sweep_pairings();
                    continue;
                }
                received = events.recv() => received,
            };
            match received {
                Ok(event) => self.on_engine_event(event),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "the shell fell behind the engine's events; refreshing"
                    );
                    self.emit(UiEvent::ConversationsChanged { routing_key: None });
                    self.sweep_pairings();
                    self.publish();
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// One engine event: the activity log, the live reply, notifications, then the window and
    /// the tray.
    pub fn on_engine_event(&self, event: EngineEvent) {
        let now = now_ms();
        let (entry, toast) = {
            let mut s = self.lock();
            let entry = s.activity.record(now, &event);
            match &event {
                EngineEvent::ServerState { state, detail } => {
                    s.server = ((*state).into(), detail.clone())
                }
                EngineEvent::RunStarted {
                    routing_key,
                    run_id,
                    ..
                } => {
                    // A run was accepted, so the server is reachable whatever it said before.
                    if s.server.0 != ServerState::Ok {
                        s.server = (ServerState::Ok, None);
                    }
                    s.live.insert(
                        routing_key.clone(),
                        LiveReply {
                            run_id: run_id.clone(),
                            text: String::new(),
                        },
                    );
                }
                EngineEvent::RunStreaming {
                    routing_key,
                    run_id,
                    delta,
                    len,
                } => {
                    let live = s
                        .live
                        .entry(routing_key.clone())
                        .or_insert_with(|| LiveReply {
                            run_id: run_id.clone(),
                            text: String::new(),
                        });
                    if live.run_id != *run_id {
                        *live = LiveReply {
                            run_id: run_id.clone(),
                            text: String::new(),
                        };
                    }
                    live.text.push_str(delta);
                    if live.text.len() != *len {
                        // A piece was missed (the shell fell behind): read the whole text.
                        if let Some(text) = s
                            .engine
                            .as_ref()
                            .and_then(|e| e.handle.live_reply(routing_key))
                        {
                            if let Some(live) = s.live.get_mut(routing_key) {
                                live.text = text;
                            }
                        }
                    }
                }
                EngineEvent::RunFinished { routing_key, .. } => {
                    s.live.remove(routing_key);
                }
                EngineEvent::PairingRequested { request } => {
                    s.pairings.insert(
                        (request.channel.clone(), request.code.clone()),
                        request.clone(),
                    );
                }
                EngineEvent::PairingResolved { request, .. } => {
                    s.pairings
                        .remove(&(request.channel.clone(), request.code.clone()));
                }
                _ => {}
            }
            let settings = current_config(&s).notifications;
            let toast = s
                .alerts
                .decide(&event, &settings, now, notify::local_minute_of_day());
            (entry, toast)
        };
        if let Some(entry) = entry {
            self.emit(UiEvent::Activity { entry });
        }
        if let Some(toast) = toast {
            if let Some(host) = self.host() {
                host.notify(toast);
            }
        }
        match event {
            EngineEvent::DesktopMessage { message } => {
                // A reply growing in the desktop chat changes nothing else; skip the snapshot.
                self.emit(UiEvent::DesktopMessage { message });
                return;
            }
            EngineEvent::RunStreaming {
                routing_key,
                run_id,
                ..
            } => {
                // The growing reply changes nothing else; skip the snapshot.
                let text = self
                    .lock()
                    .live
                    .get(&routing_key)
                    .map(|live| live.text.clone())
                    .unwrap_or_default();
                self.emit(UiEvent::Streaming {
                    routing_key,
                    run_id,
                    text,
                });
                return;
            }
            EngineEvent::RunFinished {
                routing_key,
                run_id,
                outcome,
                ..
            } => {
                self.emit(UiEvent::RunFinished {
                    routing_key: routing_key.clone(),
                    run_id,
                    outcome,
                });
                self.emit(UiEvent::ConversationsChanged {
                    routing_key: Some(routing_key),
                });
            }
            EngineEvent::ApprovalRequested {
                approval_id,
                routing_key,
                tool,
                arguments,
                summary,
                detail,
                complete,
                requester,
                deadline_ms,
            } => {
                // The stored record has the session and the channel too; the event is enough
                // when it cannot be read.
                let stored = self
                    .engine()
                    .and_then(|h| h.approval(&approval_id).ok().flatten());
                let approval = match stored {
                    Some(record) => approval_view(&record),
                    None => ApprovalView {
                        id: approval_id,
                        tool,
                        summary,
                        detail,
                        complete,
                        arguments: readable_arguments(&arguments),
                        arguments_whole: whole_arguments(&arguments),
                        routing_key,
                        session_id: None,
                        channel: None,
                        requester,
                        created_ms: None,
                        deadline_ms,
                    },
                };
                self.emit(UiEvent::ApprovalRequested { approval });
            }
            EngineEvent::ApprovalResolved {
                approval_id,
                action,
                decided_by,
                surface,
                line,
            } => {
                if let Some(host) = self.host() {
                    host.withdraw(&Question::Approval(approval_id.clone()));
                }
                self.emit(UiEvent::ApprovalResolved {
                    approval_id,
                    action,
                    decided_by,
                    surface,
                    line,
                });
            }
            EngineEvent::PairingRequested { request } => {
                self.emit(UiEvent::PairingRequested {
                    request: request.clone(),
                });
            }
            EngineEvent::PairingResolved {
                request,
                decided_by,
            } => {
                // Admitted or refused here, from a chat (`/admit`) or by the headless binary.
                if let Some(host) = self.host() {
                    host.withdraw(&Question::Pairing {
                        channel: request.channel.clone(),
                        code: request.code.clone(),
                    });
                }
                self.emit(UiEvent::PairingResolved {
                    channel: request.channel,
                    code: request.code,
                    state: request.state.into(),
                    decided_by,
                });
            }
            EngineEvent::InboundAccepted { routing_key, .. }
            | EngineEvent::RunStarted { routing_key, .. }
            | EngineEvent::ReplyDelivered { routing_key, .. }
            | EngineEvent::WatchReplyDelivered { routing_key, .. } => {
                self.emit(UiEvent::ConversationsChanged {
                    routing_key: Some(routing_key),
                });
            }
            _ => {}
        }
        self.publish();
    }

    fn emit(&self, event: UiEvent) {
        if let Some(host) = self.host() {
            host.emit(event);
        }
    }

    /// Adds a line to the Activity page.
    fn record(&self, level: Level, kind: &str, scope: &str, text: String) {
        let entry = self
            .lock()
            .activity
            .push(now_ms(), level, kind, scope, text);
        self.emit(UiEvent::Activity { entry });
    }

    /// Sends the current snapshot to the window and the tray.
    pub fn publish(&self) {
        self.publish_with(false);
    }

    fn publish_with(&self, force_tray: bool) {
        let _turn = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot = self.snapshot();
        if let Some(host) = self.host() {
            host.update_tray(&TrayModel::from_snapshot(&snapshot), force_tray);
            host.emit(UiEvent::Snapshot { snapshot });
        }
    }

    fn engine(&self) -> Option<EngineHandle> {
        self.lock().engine.as_ref().map(|r| r.handle.clone())
    }

    fn require_engine(&self) -> IpcResult<EngineHandle> {
        self.engine().ok_or_else(|| {
            IpcError::new(
                ErrorCode::NotRunning,
                "Switchboard is not running yet: finish the settings and save them first",
            )
        })
    }

    // ----- what the window and the tray ask ----------------------------------------------------

    pub fn snapshot(&self) -> Snapshot {
        let (seq, handle, config, status, engine_error, server, autostart) = {
            let s = self.lock();
            // Numbered under the lock, so a later number never shows an older state.
            (
                self.snapshots
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    + 1,
                s.engine.as_ref().map(|r| r.handle.clone()),
                current_config(&s),
                s.config.clone(),
                s.engine_error.clone(),
                s.server.clone(),
                s.autostart,
            )
        };
        // The engine's status reads the store; it is done outside the lock.
        let gateway = handle.as_ref().and_then(|h| match h.status() {
            Ok(status) => Some(status),
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "cannot read the engine's status");
                None
            }
        });
        let config_view = match &status {
            ConfigStatus::Loaded => ConfigView::Loaded,
            ConfigStatus::Missing => ConfigView::Missing {
                missing: first_run_checklist(&config),
                autopilot: self.autopilot_path(),
            },
            ConfigStatus::Invalid(problem) => ConfigView::Invalid {
                field: problem.field.clone(),
                message: problem.message.clone(),
            },
        };
        let start_page = if status != ConfigStatus::Loaded || engine_error.is_some() {
            Page::Settings
        } else if self.options.demo {
            Page::Chat
        } else {
            Page::Channels
        };
        let quiet_now = config
            .notifications
            .quiet_hours()
            .is_some_and(|(start, end)| {
                notify::in_quiet_hours(notify::local_minute_of_day(), start, end)
            });
        Snapshot {
            seq,
            about: About {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                data_dir: self.options.paths.data_dir.display().to_string(),
                log_dir: self.options.paths.log_dir.display().to_string(),
            },
            config_file: self.options.paths.config_file.display().to_string(),
            config: config_view,
            engine_running: handle.is_some(),
            engine_error,
            server: ServerView {
                url: config.server.url.clone(),
                state: server.0,
                detail: server.1,
            },
            paused: gateway.as_ref().is_some_and(|g| g.paused),
            approval_mode: gateway
                .as_ref()
                .map_or(config.gateway.approval_mode, |g| g.approval_mode),
            channels: gateway
                .as_ref()
                .map(|g| g.channels.clone())
                .unwrap_or_default(),
            conversations: gateway.as_ref().map_or(0, |g| g.conversations),
            active_runs: gateway.as_ref().map_or(0, |g| g.active_runs),
            queued: gateway.as_ref().map_or(0, |g| g.queued),
            pending_approvals: gateway.as_ref().map_or(0, |g| g.pending_approvals),
            pending_pairings: handle.as_ref().map_or(0, |h| match h.pairing_requests() {
                Ok(pending) => pending.len(),
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "cannot read the pairing requests");
                    0
                }
            }),
            do_not_disturb: config.notifications.do_not_disturb,
            quiet_now,
            autostart,
            api_addr: handle
                .as_ref()
                .and_then(|h| h.api_addr())
                .map(|a| a.to_string()),
            autopilot_lines: handle.as_ref().and_then(|h| h.autopilot_lines()),
            start_page,
            demo: self.options.demo,
            quick_chat: self.lock().quick_chat.clone(),
        }
    }

    fn autopilot_path(&self) -> Option<String> {
        self.options
            .autopilot_file
            .as_ref()
            .filter(|p| p.is_file())
            .map(|p| p.display().to_string())
    }

    pub fn conversations(&self) -> IpcResult<Vec<ConversationView>> {
        let handle = self.require_engine()?;
        handle.conversations().map_err(IpcError::engine)
    }

    pub async fn history(&self, routing_key: &str) -> IpcResult<HistoryView> {
        let handle = self.require_engine()?;
        let history = handle
            .history(routing_key)
            .await
            .map_err(IpcError::engine)?;
        let (server, server_error) = match history.server {
            Ok(messages) => (
                messages
                    .into_iter()
                    .map(|m| ChatLine {
                        text: m.text(),
                        role: m.role,
                    })
                    .collect(),
                None,
            ),
            Err(error) => (Vec::new(), Some(error)),
        };
        // Pictures come along up to a budget, the latest messages' first.
        let mut budget = PREVIEWS_MAX_BYTES;
        let mut journal: Vec<JournalLine> = history
            .journal
            .into_iter()
            .rev()
            .map(|j| JournalLine {
                id: j.id,
                peer: j.peer,
                text: j.text,
                state: j.state,
                error: j.error,
                answered_notification: j.context.map(|c| c.notification),
                created_ms: j.created_ms,
                attachments: j
                    .attachments
                    .iter()
                    .map(|a| attachment_view(a, &mut budget))
                    .collect(),
            })
            .collect();
        journal.reverse();
        let live = self.lock().live.get(routing_key).cloned();
        Ok(HistoryView {
            routing_key: routing_key.to_owned(),
            server,
            server_error,
            journal,
            live,
        })
    }

    pub fn cancel_run(&self, routing_key: &str) -> IpcResult<bool> {
        let cancelled = self.require_engine()?.cancel(routing_key);
        if cancelled {
            self.record(
                Level::Info,
                "run_cancel",
                routing_key,
                "Cancelling the run".to_owned(),
            );
        }
        Ok(cancelled)
    }

    pub fn set_paused(&self, paused: bool) -> IpcResult<Snapshot> {
        self.require_engine()?
            .set_paused(paused)
            .map_err(IpcError::engine)?;
        self.publish_with(true);
        Ok(self.snapshot())
    }

    pub fn set_approval_mode(&self, mode: ApprovalMode) -> IpcResult<Snapshot> {
        self.require_engine()?
            .set_approval_mode(mode)
            .map_err(IpcError::engine)?;
        self.publish_with(true);
        Ok(self.snapshot())
    }

    pub fn set_channel_enabled(&self, name: &str, enabled: bool) -> IpcResult<Snapshot> {
        let handle = self.require_engine()?;
        if !handle.channels().iter().any(|c| c.name == name) {
            return Err(IpcError::new(
                ErrorCode::NotFound,
                format!("there is no channel named {name}"),
            ));
        }
        handle
            .set_channel_enabled(name, enabled)
            .map_err(IpcError::engine)?;
        self.publish_with(true);
        Ok(self.snapshot())
    }

    /// Holds or releases notifications, and saves the choice in the configuration file.
    pub fn set_do_not_disturb(&self, on: bool) -> IpcResult<Snapshot> {
        match self.engine() {
            Some(handle) => {
                let mut config = (*handle.config()).clone();
                config.notifications.do_not_disturb = on;
                config::set_value(
                    &self.options.paths.config_file,
                    "notifications.do_not_disturb",
                    if on { "true" } else { "false" },
                )
                .map_err(config_error)?;
                handle.reload(config).map_err(IpcError::engine)?;
            }
            // Without a valid file there is nothing to write into yet; the choice is saved with the
            // settings.
            None => self.lock().draft.notifications.do_not_disturb = on,
        }
        let words = if on {
            "Do not disturb: notifications are held"
        } else {
            "Do not disturb is off"
        };
        self.record(
            Level::Info,
            "do_not_disturb",
            "notifications",
            words.to_owned(),
        );
        self.publish_with(true);
        Ok(self.snapshot())
    }

    pub fn set_autostart(&self, on: bool) -> IpcResult<Snapshot> {
        self.options.autostart.set(on).map_err(|e| {
            IpcError::new(
                ErrorCode::Io,
                format!(
                    "cannot change {}: {e}",
                    self.options.autostart.file().display()
                ),
            )
        })?;
        self.lock().autostart = on;
        let words = if on {
            "Switchboard starts at login"
        } else {
            "Switchboard no longer starts at login"
        };
        self.record(Level::Info, "autostart", "desktop", words.to_owned());
        self.publish_with(true);
        Ok(self.snapshot())
    }

    pub async fn test_channel(&self, name: &str, settings: Option<Config>) -> IpcResult<Identity> {
        let handle = self.require_engine()?;
        if let Some(config) = &settings {
            // Unsaved settings: this channel's address and tokens are checked before anything is
            // sent to that address (the rest of the form may still be unfinished).
            config
                .validate_channel(name, &self.options.paths.config_file)
                .map_err(config_error)?;
        }
        let result = match &settings {
            Some(config) => handle.test_channel_settings(config, name).await,
            None => handle.test_channel(name).await,
        };
        result.map_err(|error| match error {
            ChannelError::Rejected(message) if message.starts_with("no channel named") => {
                IpcError::new(ErrorCode::NotFound, message)
            }
            other => IpcError::new(ErrorCode::ChannelFailed, other.to_string()),
        })
    }

    pub async fn test_connection(&self, url: &str, token: &str) -> IpcResult<ServerCheck> {
        let timeouts = Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(10),
            ..Timeouts::default()
        };
        let client = AgentClient::new(url, token, timeouts).map_err(|error| IpcError {
            code: ErrorCode::InvalidSettings,
            message: error.to_string(),
            field: Some("server.url".into()),
        })?;
        match client.check().await {
            Ok(health) => Ok(ServerCheck {
                version: health.version,
            }),
            Err(error) => Err(IpcError::new(ErrorCode::ServerFailed, error.to_string())),
        }
    }

    pub fn check_server(&self) -> IpcResult<()> {
        self.require_engine()?.recheck_server();
        Ok(())
    }

    pub fn settings(&self) -> SettingsView {
        let s = self.lock();
        let path = &self.options.paths.config_file;
        SettingsView {
            path: path.display().to_string(),
            exists: path.exists(),
            config: current_config(&s),
            problem: match &s.config {
                ConfigStatus::Invalid(problem) => Some(problem.clone()),
                _ => None,
            },
            autopilot: self.autopilot_path(),
        }
    }

    /// Checks the settings, writes them to the file (keeping its comments) and applies them: the
    /// running engine reloads, or the engine starts if it was waiting for valid settings.
    pub async fn save_settings(self: Arc<Self>, config: Config) -> IpcResult<SaveOutcome> {
        let path = &self.options.paths.config_file;
        config.validate(path).map_err(config_error)?;
        // Tokens go to the keyring (or the private fallback file); the file gets references.
        let vault = Secrets::new(path)
            .keyring(self.options.engine.keyring.clone())
            .save(&config)
            .await
            .map_err(config_error)?;
        tracing::info!(file = %path.display(), tokens = vault.as_str(), "settings saved");
        self.record(
            Level::Info,
            "settings_saved",
            "settings",
            format!("Settings saved to {}", path.display()),
        );
        let mut restart_needed = Vec::new();
        match self.engine() {
            Some(handle) => {
                if handle.config().api.listen != config.api.listen {
                    restart_needed.push("api.listen".to_owned());
                }
                handle.reload(config.clone()).map_err(IpcError::engine)?;
                if let Some(host) = self.host() {
                    host.settings_applied(&config);
                }
            }
            None => self.start_engine(config).await?,
        }
        self.publish_with(true);
        Ok(SaveOutcome {
            snapshot: self.snapshot(),
            restart_needed,
        })
    }

    /// The settings `into` with what `~/.stakpak/autopilot.toml` has filled in; nothing is saved.
    pub fn import_autopilot(&self, mut into: Config) -> IpcResult<ImportView> {
        let Some(file) = &self.options.autopilot_file else {
            return Err(IpcError::new(
                ErrorCode::NotFound,
                "there is no home directory to find ~/.stakpak/autopilot.toml in",
            ));
        };
        let text = std::fs::read_to_string(file).map_err(|e| {
            IpcError::new(
                ErrorCode::NotFound,
                format!("cannot read {}: {e}", file.display()),
            )
        })?;
        let imported = config::import_autopilot(&text, &mut into).map_err(config_error)?;
        Ok(ImportView {
            config: into,
            imported,
        })
    }

    /// Writes the `[notifications]` lines into `~/.stakpak/autopilot.toml`, so the Stakpak watch
    /// scheduler sends its notifications here; the file's comments and other settings stay.
    pub fn connect_autopilot(&self) -> IpcResult<Vec<String>> {
        let Some(file) = self.options.autopilot_file.as_ref().filter(|p| p.is_file()) else {
            return Err(IpcError::new(
                ErrorCode::NotFound,
                "no ~/.stakpak/autopilot.toml was found; create it with `stakpak autopilot init` first",
            ));
        };
        let handle = self.require_engine()?;
        let Some(addr) = handle.scheduler_addr() else {
            return Err(IpcError::new(
                ErrorCode::NotFound,
                "Switchboard does not listen for the watch scheduler (api.scheduler_listen is off or its address was taken)",
            ));
        };
        let changed =
            config::connect_autopilot_file(file, &addr, &handle.config()).map_err(config_error)?;
        tracing::info!(file = %file.display(), ?changed, "autopilot.toml points at Switchboard");
        Ok(changed)
    }

    pub fn activity(&self) -> Vec<ActivityEntry> {
        self.lock().activity.newest_first()
    }

    /// The Approvals page: what waits, the audit log and the "always allow" rules.
    pub fn approvals(&self) -> IpcResult<ApprovalsView> {
        let handle = self.require_engine()?;
        let mut pending: Vec<ApprovalView> = handle
            .pending_approvals()
            .map_err(IpcError::engine)?
            .iter()
            .map(approval_view)
            .collect();
        pending.sort_by_key(|a| a.deadline_ms);
        let history = handle
            .decisions(HISTORY_LIMIT)
            .map_err(IpcError::engine)?
            .into_iter()
            .map(|d| DecisionView {
                at_ms: d.at_ms,
                session_id: d.session_id,
                run_id: d.run_id,
                tool_call_id: d.tool_call_id,
                tool: d.tool,
                action: d.action,
                decided_by: d.decided_by,
                decided_by_id: d.decided_by_id,
                surface: d.surface.label(&d.channel),
                note: d.note,
            })
            .collect();
        let rules = handle
            .rules()
            .map_err(IpcError::engine)?
            .into_iter()
            .map(|r| RuleView {
                id: r.id,
                tool: r.tool,
                arg_pattern: r.arg_pattern,
                channel: r.channel,
                created_ms: r.created_ms,
                created_by: r.created_by,
            })
            .collect();
        Ok(ApprovalsView {
            pending,
            history,
            rules,
        })
    }

    /// Answers a pending approval from `surface` (the window or a notification), as the local
    /// user. The first answer wins: a later one is told who decided, where, and nothing changes.
    /// Call it on the async runtime: the engine updates the chat's prompt from a task.
    pub fn decide_approval(
        &self,
        approval_id: &str,
        choice: ApprovalChoice,
        surface: Surface,
    ) -> IpcResult<DecideOutcome> {
        self.decide_approval_with_pattern(approval_id, choice, surface, None)
    }

    /// [`Shell::decide_approval`], where "Always allow" may be narrowed to calls whose arguments
    /// match `pattern` (`key=glob; key=glob`, or a glob on the call's main argument — the command,
    /// the path; a blank pattern allows every call of the tool). A rule made here covers every
    /// channel: the person at the desktop owns the machine.
    pub fn decide_approval_with_pattern(
        &self,
        approval_id: &str,
        choice: ApprovalChoice,
        surface: Surface,
        pattern: Option<&str>,
    ) -> IpcResult<DecideOutcome> {
        let pattern = pattern.map(str::trim).filter(|p| !p.is_empty());
        if let Some(p) = pattern {
            if p.chars().count() > 500 || p.chars().any(char::is_control) {
                return Err(IpcError::new(
                    ErrorCode::InvalidArgument,
                    "the argument pattern must be one line of at most 500 characters",
                ));
            }
        }
        let handle = self.require_engine()?;
        let who = Actor::local(local_user());
        let scope = match choice {
            ApprovalChoice::Approve => Scope::AllowOnce,
            ApprovalChoice::AllowConversation => Scope::AllowConversation,
            ApprovalChoice::AlwaysAllow => Scope::AllowAlways {
                pattern: pattern.map(str::to_owned),
                global: true,
            },
            ApprovalChoice::Reject => Scope::Reject,
        };
        match handle
            .decide(approval_id, &scope, &who, surface)
            .map_err(IpcError::engine)?
        {
            Resolution::Decided(approval) => {
                let message = outcome_line(&approval);
                tracing::info!(tool = %approval.tool, action = %approval.state, %surface, "approval decided here");
                self.record(
                    Level::Info,
                    "approval_decided",
                    surface.as_str(),
                    message.clone(),
                );
                self.publish();
                Ok(DecideOutcome::Decided {
                    action: approval.state,
                    message,
                })
            }
            Resolution::AlreadyDecided(approval) => Ok(DecideOutcome::AlreadyDecided {
                action: approval.state,
                decided_by: approval.decided_by.clone().unwrap_or_default(),
                surface: approval
                    .surface
                    .map(|s| s.label(&approval.channel))
                    .unwrap_or_default(),
                message: format!("Already decided: {}", outcome_line(&approval)),
            }),
            Resolution::TooLate(approval) => Ok(DecideOutcome::AlreadyDecided {
                action: ApprovalState::Expired,
                decided_by: String::new(),
                surface: Surface::Engine.as_str().to_owned(),
                message: format!(
                    "{}: the answer came after its deadline, so it was rejected",
                    approval.tool
                ),
            }),
            Resolution::NotFound => Err(IpcError::new(
                ErrorCode::NotFound,
                "this approval is no longer pending (it may have expired long ago)",
            )),
        }
    }

    /// Revokes an "always allow" rule; the tool asks again from its next call.
    pub fn remove_rule(&self, id: i64) -> IpcResult<bool> {
        let removed = self
            .require_engine()?
            .remove_rule(id)
            .map_err(IpcError::engine)?;
        if removed {
            self.record(
                Level::Info,
                "rule_removed",
                "approvals",
                format!("Revoked the always-allow rule {id}"),
            );
        }
        Ok(removed)
    }

    /// The strangers waiting to be admitted or refused, oldest first.
    pub fn pairing_requests(&self) -> IpcResult<Vec<PairingView>> {
        self.require_engine()?
            .pairing_requests()
            .map_err(IpcError::engine)
    }

    /// Admits the sender of a pending pairing code on `channel`, as the local user, from `surface`
    /// (the window or a notification): their next message reaches the agent.
    pub fn admit_pairing(
        &self,
        channel: &str,
        code: &str,
        surface: Surface,
    ) -> IpcResult<PairingDecision> {
        self.resolve_pairing(channel, code, true, surface)
    }

    /// Refuses the sender of a pending pairing code: they are ignored silently from now on.
    pub fn refuse_pairing(
        &self,
        channel: &str,
        code: &str,
        surface: Surface,
    ) -> IpcResult<PairingDecision> {
        self.resolve_pairing(channel, code, false, surface)
    }

    fn resolve_pairing(
        &self,
        channel: &str,
        code: &str,
        admit: bool,
        surface: Surface,
    ) -> IpcResult<PairingDecision> {
        let handle = self.require_engine()?;
        if !handle.channels().iter().any(|c| c.name == channel) {
            return Err(IpcError::new(
                ErrorCode::NotFound,
                format!("there is no channel named {channel}"),
            )
            .with_field("channel"));
        }
        let who = local_user();
        let resolved = if admit {
            handle.admit_pairing(channel, code, &who)
        } else {
            handle.refuse_pairing(channel, code, &who)
        };
        // The engine tells every surface (the list, the notification, the tray) through its
        // `PairingResolved` event, wherever the decision was made.
        let Some(request) = resolved.map_err(IpcError::engine)? else {
            return Err(IpcError::new(
                ErrorCode::NotFound,
                format!(
                    "no pairing request with the code {code} waits on {channel}: it was admitted or refused already, or it expired"
                ),
            )
            .with_field("code"));
        };
        tracing::info!(%channel, peer = %request.peer_id, state = %request.state, %surface, "pairing decided here");
        let message = if admit {
            format!(
                "{} is admitted on {channel}: their next message reaches the agent",
                peer_words(&request.peer_name, &request.peer_id)
            )
        } else {
            format!(
                "{} is refused on {channel}: their messages are ignored from now on",
                peer_words(&request.peer_name, &request.peer_id)
            )
        };
        Ok(PairingDecision {
            state: request.state,
            request: request.clone(),
            message,
        })
    }

    /// Carries out an answer given with a notification's action; the outcome in words. Call it on
    /// the async runtime (deciding an approval updates the chat from a task).
    pub fn answer(&self, question: &Question, answer: Answer) -> IpcResult<String> {
        match (question, answer) {
            (Question::Approval(id), Answer::Approve | Answer::Reject) => {
                let choice = if answer == Answer::Approve {
                    ApprovalChoice::Approve
                } else {
                    ApprovalChoice::Reject
                };
                match self.decide_approval(id, choice, Surface::Notification)? {
                    DecideOutcome::Decided { message, .. } => Ok(message),
                    DecideOutcome::AlreadyDecided { message, .. } => Ok(message),
                }
            }
            (Question::Approval(_), Answer::Open) => {
                self.show(Some(Page::Approvals), None);
                Ok("opened the Approvals page".to_owned())
            }
            (Question::Pairing { channel, code }, Answer::Admit) => self
                .admit_pairing(channel, code, Surface::Notification)
                .map(|d| d.message),
            (Question::Pairing { channel, code }, Answer::Refuse) => self
                .refuse_pairing(channel, code, Surface::Notification)
                .map(|d| d.message),
            (question, answer) => Err(IpcError::new(
                ErrorCode::InvalidArgument,
                format!("{} does not answer {question:?}", answer.label()),
            )),
        }
    }

    /// Learns the pairing requests that wait (those from before the start, or missed events),
    /// and lets go of those whose code expired: the window, the tray and the notification are
    /// told, as for one admitted or refused.
    fn sweep_pairings(&self) {
        let Some(handle) = self.engine() else {
            return;
        };
        let pending = match handle.pairing_requests() {
            Ok(pending) => pending,
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "cannot read the pairing requests");
                return;
            }
        };
        let expired = {
            let mut s = self.lock();
            for request in &pending {
                s.pairings.insert(
                    (request.channel.clone(), request.code.clone()),
                    request.clone(),
                );
            }
            expired_pairings(&mut s.pairings, &pending, now_ms())
        };
        if expired.is_empty() {
            return;
        }
        for request in expired {
            tracing::info!(channel = %request.channel, peer = %request.peer_id, "pairing code expired");
            if let Some(host) = self.host() {
                host.withdraw(&Question::Pairing {
                    channel: request.channel.clone(),
                    code: request.code.clone(),
                });
            }
            self.record(
                Level::Info,
                "pairing_expired",
                &request.channel,
                format!(
                    "The pairing code {} of {} on {} expired",
                    request.code,
                    peer_words(&request.peer_name, &request.peer_id),
                    request.channel
                ),
            );
            self.emit(UiEvent::PairingResolved {
                channel: request.channel,
                code: request.code,
                state: PairingOutcome::Expired,
                decided_by: String::new(),
            });
        }
        self.publish();
    }

    /// A click in the tray menu (other than Quit, which the app handles).
    pub fn on_menu(&self, id: MenuId) {
        let snapshot = self.snapshot();
        let result = match &id {
            MenuId::Gateway => self.set_paused(!snapshot.paused).map(drop),
            MenuId::Channel(name) => {
                let enabled = snapshot
                    .channels
                    .iter()
                    .find(|c| &c.name == name)
                    .is_some_and(|c| c.enabled);
                self.set_channel_enabled(name, !enabled).map(drop)
            }
            MenuId::Mode(mode) => self.set_approval_mode(*mode).map(drop),
            MenuId::DoNotDisturb => self.set_do_not_disturb(!snapshot.do_not_disturb).map(drop),
            MenuId::Autostart => self.set_autostart(!snapshot.autostart).map(drop),
            MenuId::Approvals => {
                self.show(Some(Page::Approvals), None);
                Ok(())
            }
            MenuId::Status | MenuId::Open => {
                self.show(None, None);
                Ok(())
            }
            MenuId::NewChat => {
                self.show(Some(Page::Chat), Some(NEW_CHAT.to_owned()));
                Ok(())
            }
            MenuId::QuickChat => {
                self.open_quick_chat(None);
                Ok(())
            }
            MenuId::Quit => Ok(()),
        };
        if let Err(error) = result {
            tracing::warn!(item = %id, error = %error.message, "a tray action failed");
            self.record(
                Level::Error,
                "tray",
                "tray",
                format!("{}: {}", id, error.message),
            );
        }
        // The platform toggles a check item by itself when clicked; set it back to what the
        // engine says, whether or not the action succeeded.
        self.publish_with(true);
    }

    /// Opens the quick chat window, on a conversation or the desktop chat used last.
    pub fn open_quick_chat(&self, routing_key: Option<String>) {
        if let Some(host) = self.host() {
            host.open_quick_chat(routing_key);
        }
    }

    pub fn close_quick_chat(&self) {
        if let Some(host) = self.host() {
            host.close_quick_chat();
        }
    }

    /// Records how the host registered the quick chat's shortcut, for Settings.
    pub fn set_quick_chat(&self, view: QuickChatView) {
        self.lock().quick_chat = view;
        self.publish();
    }

    // ----- the desktop chat ---------------------------------------------------------------------

    /// The person types `text` in desktop chat `chat_id` (`client_id` names the message, so a
    /// repeated call is one message); true when it is a new message.
    pub async fn desktop_send(
        &self,
        chat_id: &str,
        text: &str,
        client_id: &str,
    ) -> IpcResult<bool> {
        let handle = self.require_engine()?;
        let accepted = handle
            .desktop_send(chat_id, text, client_id)
            .await
            .map_err(say_error)?;
        Ok(matches!(
            accepted,
            switchboard_engine::channels::Accepted::New(_)
        ))
    }

    /// The person types `text` into conversation `routing_key` (a desktop chat or a chat's).
    pub async fn say(&self, routing_key: &str, text: &str, client_id: &str) -> IpcResult<bool> {
        let handle = self.require_engine()?;
        let accepted = handle
            .say(routing_key, text, client_id)
            .await
            .map_err(say_error)?;
        Ok(matches!(
            accepted,
            switchboard_engine::channels::Accepted::New(_)
        ))
    }

    pub fn desktop_transcript(&self, chat_id: &str) -> IpcResult<Vec<DesktopLine>> {
        let handle = self.require_engine()?;
        handle
            .desktop_transcript(chat_id, TRANSCRIPT_LIMIT)
            .map_err(say_error)
    }

    fn show(&self, page: Option<Page>, routing_key: Option<String>) {
        if let Some(host) = self.host() {
            host.show_window(page, routing_key);
        }
    }

    /// Stops the engine and waits (a bounded time) for its tasks to finish their current step.
    pub async fn stop(&self) {
        let running = self.lock().engine.take();
        if let Some(Running { handle, stop }) = running {
            tracing::info!("stopping: finishing the current steps");
            handle.shutdown();
            if tokio::time::timeout(STOP_TIMEOUT, handle.stopped())
                .await
                .is_err()
            {
                tracing::warn!("the engine did not stop within {STOP_TIMEOUT:?}; quitting anyway");
            }
            stop.cancel();
            tracing::info!("stopped cleanly");
        }
    }
}

/// The largest saved picture the history shows itself (larger ones are named).
const PREVIEW_MAX_BYTES: u64 = 2 * 1024 * 1024;
/// The most picture bytes one history brings along; older pictures past it are named.
const PREVIEWS_MAX_BYTES: u64 = 12 * 1024 * 1024;

/// A file of a message as the history shows it; a saved picture small enough comes along as a
/// `data:` URL (the page may load nothing else), while `budget` lasts.
fn attachment_view(attachment: &Attachment, budget: &mut u64) -> AttachmentView {
    use base64::Engine as _;
    let name = attachment
        .name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| attachment.kind.as_str().to_owned());
    let mut view = AttachmentView {
        kind: attachment.kind,
        name,
        mime: attachment.mime.clone(),
        size: attachment.size,
        state: AttachmentState::Pending,
        path: None,
        reason: None,
        transcript: None,
        preview: None,
    };
    match &attachment.fetched {
        Fetched::Pending => {}
        Fetched::Failed { reason } => {
            view.state = AttachmentState::Failed;
            view.reason = Some(reason.clone());
        }
        Fetched::Saved {
            path,
            bytes,
            mime,
            transcript,
        } => {
            view.state = AttachmentState::Saved;
            view.path = Some(path.clone());
            view.size = Some(*bytes);
            view.mime = Some(mime.clone());
            view.transcript = transcript.clone();
            // The file as it is now, not as it was stored: it may have been changed since.
            let on_disk = std::fs::metadata(path).map(|m| m.len()).ok();
            let shown = switchboard_engine::media::agent_image_mime(mime).is_some()
                && on_disk.is_some_and(|len| len <= PREVIEW_MAX_BYTES && len <= *budget);
            if shown {
                view.preview = std::fs::read(path).ok().map(|data| {
                    *budget = budget.saturating_sub(data.len() as u64);
                    format!(
                        "data:{mime};base64,{}",
                        base64::engine::general_purpose::STANDARD.encode(data)
                    )
                });
            }
        }
    }
    view
}

/// "Ann (1111)", or the id alone when the platform gave no name.
fn peer_words(name: &str, id: &str) -> String {
    if name.is_empty() || name == id {
        id.to_owned()
    } else {
        format!("{name} ({id})")
    }
}

/// How long until the first of the pending pairing codes runs out (between
/// [`PAIRING_SWEEP_AT_LEAST`] and [`PAIRING_SWEEP_AT_MOST`]); `None` when none is pending.
fn pairing_sweep_in(
    pairings: &HashMap<(String, String), PairingView>,
    now: i64,
) -> Option<Duration> {
    let first = pairings.values().map(|view| view.expires_ms).min()?;
    let wait = Duration::from_millis(u64::try_from(first.saturating_sub(now)).unwrap_or(0));
    Some(wait.clamp(PAIRING_SWEEP_AT_LEAST, PAIRING_SWEEP_AT_MOST))
}

/// Completes after `wait`, or never.
async fn after(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}

/// Takes out of `known` the requests whose code expired by `now`: past their expiry and no
/// longer waiting in the store. One resolved a moment ago (its event not handled yet) is still
/// before its expiry, so it is not taken for expired.
fn expired_pairings(
    known: &mut HashMap<(String, String), PairingView>,
    pending: &[switchboard_engine::access::PairingRequest],
    now: i64,
) -> Vec<PairingView> {
    let waiting: HashSet<(&str, &str)> = pending
        .iter()
        .map(|r| (r.channel.as_str(), r.code.as_str()))
        .collect();
    let gone: Vec<(String, String)> = known
        .iter()
        .filter(|((channel, code), view)| {
            view.expires_ms <= now && !waiting.contains(&(channel.as_str(), code.as_str()))
        })
        .map(|(key, _)| key.clone())
        .collect();
    let mut expired: Vec<PairingView> = gone.iter().filter_map(|key| known.remove(key)).collect();
    expired.sort_by_key(|v| v.expires_ms);
    expired
}

/// The settings in force: the engine's (with its generated API token) or the draft.
fn current_config(s: &State) -> Config {
    match &s.engine {
        Some(running) => (*running.handle.config()).clone(),
        None => s.draft.clone(),
    }
}

/// Reads the file: its status and the settings to show (the file's, or as much of it as can be
/// read without the checks, or the defaults).
fn read_config(path: &std::path::Path) -> (ConfigStatus, Config) {
    match Config::load_or_default(path) {
        Ok((config, true)) => (ConfigStatus::Loaded, config),
        Ok((config, false)) => (ConfigStatus::Missing, config),
        Err(ConfigError::Invalid { field, message, .. }) => {
            let draft = std::fs::read_to_string(path)
                .ok()
                .and_then(|text| toml::from_str::<Config>(&text).ok())
                .unwrap_or_default();
            (
                ConfigStatus::Invalid(FieldProblem { field, message }),
                draft,
            )
        }
        Err(error) => (
            ConfigStatus::Invalid(FieldProblem {
                field: "file".into(),
                message: error.to_string(),
            }),
            Config::default(),
        ),
    }
}

fn config_error(error: ConfigError) -> IpcError {
    match error {
        ConfigError::Invalid {
            ref field,
            ref message,
            ..
        } => IpcError {
            code: ErrorCode::InvalidSettings,
            message: format!("{field}: {message}"),
            field: Some(field.clone()),
        },
        other => IpcError::new(ErrorCode::Io, other.to_string()),
    }
}

/// What a first run still needs, in words, for the Settings page.
pub fn first_run_checklist(config: &Config) -> Vec<String> {
    let mut missing = vec![format!(
        "The agent server: Switchboard will use {} until you set its address (and token, if it has one).",
        config.server.url
    )];
    if config.channel_names().is_empty() {
        missing.push("A chat channel: add a Telegram, Slack or Discord bot token so people can reach the agent.".to_owned());
    }
    missing.push("Save the settings to create the configuration file and start.".to_owned());
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_engine::access::PairingRequest;

    fn request(code: &str, expires_ms: i64) -> PairingRequest {
        PairingRequest {
            channel: "telegram".into(),
            peer_id: "1111".into(),
            peer_name: "Ann".into(),
            code: code.into(),
            first_message: "hello".into(),
            created_ms: 0,
            expires_ms,
            state: switchboard_engine::access::PairingState::Pending,
        }
    }

    #[test]
    fn the_shell_wakes_for_pairing_codes_only_while_one_is_pending() {
        let mut pending: HashMap<(String, String), PairingView> = HashMap::new();
        assert_eq!(
            pairing_sweep_in(&pending, 1_000),
            None,
            "nothing to wait for"
        );
        for r in [request("AAAA2222", 31_000), request("BBBB3333", 11_000)] {
            pending.insert((r.channel.clone(), r.code.clone()), r);
        }
        assert_eq!(
            pairing_sweep_in(&pending, 1_000),
            Some(Duration::from_secs(10)),
            "when the first one runs out"
        );
        assert_eq!(
            pairing_sweep_in(&pending, 11_000),
            Some(PAIRING_SWEEP_AT_LEAST),
            "one that is due (the store may list it a moment longer) is looked at again soon, not in a spin"
        );
        let later = request("CCCC4444", 3_601_000);
        pending.clear();
        pending.insert((later.channel.clone(), later.code.clone()), later);
        assert_eq!(
            pairing_sweep_in(&pending, 1_000),
            Some(PAIRING_SWEEP_AT_MOST),
            "an hour away: looked at again after a minute, in case the machine was suspended"
        );
    }

    #[test]
    fn only_codes_past_their_expiry_and_gone_from_the_store_expire() {
        let requests = [
            request("AAAA2222", 1000),
            request("BBBB3333", 2000),
            request("CCCC4444", 900),
        ];
        let mut known: HashMap<(String, String), PairingView> = requests
            .iter()
            .map(|r| ((r.channel.clone(), r.code.clone()), r.clone()))
            .collect();
        // At 1500: AAAA expired; BBBB has not (gone from the store means admitted or refused,
        // and its event will say so); CCCC is past its expiry but the store still lists it (the
        // clocks differ by a moment), so it waits for the next sweep.
        let pending = [request("CCCC4444", 900)];
        let expired = expired_pairings(&mut known, &pending, 1500);
        assert_eq!(
            expired.iter().map(|v| v.code.as_str()).collect::<Vec<_>>(),
            ["AAAA2222"]
        );
        assert_eq!(known.len(), 2);
        let expired = expired_pairings(&mut known, &[], 2500);
        assert_eq!(
            expired.iter().map(|v| v.code.as_str()).collect::<Vec<_>>(),
            ["CCCC4444", "BBBB3333"],
            "soonest first"
        );
        assert!(known.is_empty());
        assert!(
            expired_pairings(&mut known, &[], 9999).is_empty(),
            "each expires once"
        );
    }

    #[test]
    fn a_peer_is_named_with_its_id() {
        assert_eq!(peer_words("Ann", "1111"), "Ann (1111)");
        assert_eq!(peer_words("1111", "1111"), "1111");
        assert_eq!(peer_words("", "1111"), "1111");
    }
}
