//! The typed contract between the window and the shell: every command the page may call, every
//! event it receives, and the values they carry. `ui/src/ipc.ts` mirrors this file; keep the two
//! in step.
//!
//! Commands are thin: each one checks its arguments ([`crate::validate`]), then calls [`Shell`],
//! which calls the engine. Errors reach the page as [`IpcError`] (`{code, message, field?}`); the
//! page decides on `code`, never on the message. An argument that is missing, of the wrong type
//! or out of shape is `invalid_argument` with `field` naming it as the page sends it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use switchboard_engine::access::PairingRequest;
use switchboard_engine::config::{ApprovalMode, Config};
use switchboard_engine::model::{ChannelStatus, Identity, JournalState, Peer};
use switchboard_engine::ConversationSummary;
use tauri::ipc::{CommandArg, CommandItem, InvokeError};
use tauri::{Runtime, State};

use crate::activity::ActivityEntry;
use crate::shell::Shell;
use crate::validate;

/// The one event name the shell emits to the window; the payload is a [`UiEvent`].
pub const UI_EVENT: &str = "switchboard:ui";

/// The window's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Page {
    Channels,
    Sessions,
    Approvals,
    Activity,
    Settings,
}

/// What the shell tells the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UiEvent {
    /// The state at a glance changed; the whole snapshot is sent (it is small).
    Snapshot { snapshot: Snapshot },
    /// Something happened (newest last); the Activity page prepends it.
    Activity { entry: ActivityEntry },
    /// The reply being written in a conversation grew; `text` is all of it so far.
    Streaming {
        routing_key: String,
        run_id: String,
        text: String,
    },
    /// A run ended (`completed`, `error`, `cancelled`, `settled`).
    RunFinished {
        routing_key: String,
        run_id: String,
        outcome: String,
    },
    /// Conversations or their histories changed; the page reloads what it shows.
    ConversationsChanged { routing_key: Option<String> },
    /// Show a page (a notification was clicked, the tray asked for the window).
    Navigate {
        page: Page,
        routing_key: Option<String>,
    },
    /// A tool call waits for a decision; the Approvals page adds it.
    ApprovalRequested { approval: ApprovalView },
    /// A pending approval was decided (here or elsewhere) or expired; the Approvals page removes
    /// it and reloads the history.
    ApprovalResolved {
        approval_id: String,
        /// `accept`, `reject` or `expired`.
        action: String,
        decided_by: String,
        surface: String,
    },
    /// A stranger asks to talk to the agent; the Approvals page adds them.
    PairingRequested { request: PairingView },
    /// A pairing request was admitted or refused (here, from a chat or by the headless binary),
    /// or its code expired; the Approvals page removes it.
    PairingResolved {
        channel: String,
        code: String,
        /// `admitted`, `refused` or `expired`.
        state: String,
        /// Who decided (empty when it expired).
        decided_by: String,
    },
}

/// The agent server's reachability as last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    /// Not checked yet (or the engine is not running).
    Unknown,
    Ok,
    Unreachable,
    Unauthorized,
}

impl ServerState {
    pub fn parse(word: &str) -> ServerState {
        match word {
            "ok" => ServerState::Ok,
            "unreachable" => ServerState::Unreachable,
            "unauthorized" => ServerState::Unauthorized,
            _ => ServerState::Unknown,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerView {
    pub url: String,
    pub state: ServerState,
    /// The reason (for a problem) or the server's version.
    pub detail: Option<String>,
}

/// How the configuration file stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ConfigView {
    /// Read and valid; the engine runs from it.
    Loaded,
    /// No file yet: the first run. `missing` says, in words, what needs setting up.
    Missing {
        missing: Vec<String>,
        autopilot: Option<String>,
    },
    /// The file has a mistake; the engine waits for it to be fixed.
    Invalid { field: String, message: String },
}

/// Everything the window and the tray show at a glance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub config_file: String,
    pub config: ConfigView,
    /// Whether the engine runs (it does not while the configuration is missing or invalid).
    pub engine_running: bool,
    /// Why the engine could not start, when it could not.
    pub engine_error: Option<String>,
    pub server: ServerView,
    pub paused: bool,
    pub approval_mode: ApprovalMode,
    pub channels: Vec<ChannelStatus>,
    pub conversations: usize,
    pub active_runs: usize,
    pub queued: usize,
    pub pending_approvals: usize,
    /// Strangers waiting to be admitted or refused (unexpired pairing codes).
    pub pending_pairings: usize,
    pub do_not_disturb: bool,
    /// Whether notifications are held now by the quiet hours.
    pub quiet_now: bool,
    pub autostart: bool,
    /// Where the gateway API listens (for watch scripts), when it does.
    pub api_addr: Option<String>,
    /// The page the window opens on.
    pub start_page: Page,
}

/// A conversation in the Sessions list: the engine's summary as it is.
pub type ConversationView = ConversationSummary;

/// One message of the server's side of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatLine {
    pub role: String,
    pub text: String,
}

/// One message received from the chat, as the local journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JournalLine {
    pub id: i64,
    pub peer: Peer,
    pub text: String,
    pub state: JournalState,
    pub error: Option<String>,
    /// The watch notification this message answered, when it did.
    pub answered_notification: Option<String>,
    pub created_ms: i64,
}

/// The reply being written now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveReply {
    pub run_id: String,
    pub text: String,
}

/// A conversation's history: the server's messages (or why they could not be read), the journal
/// and the live reply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryView {
    pub routing_key: String,
    pub server: Vec<ChatLine>,
    pub server_error: Option<String>,
    pub journal: Vec<JournalLine>,
    pub live: Option<LiveReply>,
}

/// The Settings page's content.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettingsView {
    pub path: String,
    pub exists: bool,
    /// The settings to edit: the file's, or the defaults when it is missing or unreadable.
    pub config: Config,
    /// The file's mistake, when it has one.
    pub problem: Option<FieldProblem>,
    /// `~/.stakpak/autopilot.toml`, when it exists.
    pub autopilot: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

/// What saving the settings did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SaveOutcome {
    pub snapshot: Snapshot,
    /// Settings that take effect after a restart of the app (the gateway API address).
    pub restart_needed: Vec<String>,
}

/// Settings proposed from `~/.stakpak/autopilot.toml`, not saved yet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportView {
    pub config: Config,
    /// The dotted names of the settings it filled in.
    pub imported: Vec<String>,
}

/// The agent server's answer to "Test connection".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerCheck {
    pub version: String,
}

/// A tool call waiting for a person's decision, as the Approvals page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalView {
    pub id: String,
    pub tool: String,
    /// The arguments made readable: `key: value` lines, long values folded, secrets masked.
    pub arguments: String,
    pub routing_key: String,
    pub session_id: Option<String>,
    pub channel: Option<String>,
    pub requester: String,
    pub created_ms: Option<i64>,
    pub deadline_ms: i64,
}

/// One line of the decisions audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionView {
    pub at_ms: i64,
    pub session_id: String,
    pub run_id: String,
    pub tool_call_id: String,
    pub tool: String,
    /// `accept`, `reject` or `expired`.
    pub action: String,
    pub decided_by: String,
    pub surface: String,
}

/// An "always allow" rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleView {
    pub id: i64,
    pub tool: String,
    pub arg_pattern: Option<String>,
    pub created_ms: i64,
    pub created_by: String,
}

/// The Approvals page's content.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalsView {
    /// Waiting now, the soonest deadline first.
    pub pending: Vec<ApprovalView>,
    /// The audit log, newest first.
    pub history: Vec<DecisionView>,
    pub rules: Vec<RuleView>,
}

/// What a person answers to a pending approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalChoice {
    Approve,
    Reject,
    /// Approve, and create a rule so the tool passes without asking from now on.
    AlwaysAllow,
}

/// What answering an approval did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum DecideOutcome {
    /// This answer decided it.
    Decided {
        action: String,
        /// The rule "Always allow" created (or found).
        rule_id: Option<i64>,
        message: String,
    },
    /// Someone answered first; nothing changed.
    AlreadyDecided {
        action: String,
        decided_by: String,
        surface: String,
        message: String,
    },
}

/// A stranger asking to talk to the agent (a pending pairing code), as the window lists them:
/// the engine's record as it is (the first message is text, never markup).
pub type PairingView = PairingRequest;

/// What admitting or refusing a pairing request did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PairingDecision {
    /// `admitted` or `refused`.
    pub state: String,
    pub request: PairingView,
    /// The outcome in words, for the page's notice.
    pub message: String,
}

/// How many audit log lines the Approvals page shows.
pub const HISTORY_LIMIT: usize = 200;

/// The kinds of failure the page acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The engine is not running (no or invalid configuration): save the settings first.
    NotRunning,
    /// The settings have a mistake; `field` names it.
    InvalidSettings,
    /// A channel or conversation of that name does not exist.
    NotFound,
    /// A channel's platform refused or could not be reached.
    ChannelFailed,
    /// The agent server refused or could not be reached.
    ServerFailed,
    /// A file could not be read or written.
    Io,
    /// An argument the page sent is not acceptable (the message says why).
    InvalidArgument,
    /// Anything else the engine reported.
    Engine,
}

/// An error as the page receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct IpcError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl IpcError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        IpcError {
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn engine(error: anyhow::Error) -> Self {
        IpcError::new(ErrorCode::Engine, format!("{error:#}"))
    }

    /// The same error, naming the argument (or setting) it is about.
    pub fn with_field(mut self, field: &str) -> Self {
        self.field = Some(field.to_owned());
        self
    }
}

pub type IpcResult<T> = Result<T, IpcError>;

type ShellState<'a> = State<'a, Arc<Shell>>;

/// A command argument read from the page's call. Tauri's own reading answers a missing or
/// mistyped argument with a bare string; this answers it as an [`IpcError`] (`invalid_argument`,
/// `field` = the argument's name as the page sends it), like every other error the page gets.
pub struct Arg<T>(pub T);

impl<'de, T: Deserialize<'de>, R: Runtime> CommandArg<'de, R> for Arg<T> {
    fn from_command(item: CommandItem<'de, R>) -> Result<Self, InvokeError> {
        let (command, key) = (item.name, item.key);
        T::deserialize(item).map(Arg).map_err(|error| {
            let message = validate::without_values(&error.to_string());
            tracing::debug!(command, argument = key, %message, "a command argument was refused");
            InvokeError::from(validate::invalid(key, format!("{key}: {message}")))
        })
    }
}

// ----- commands ---------------------------------------------------------------------------------
// Each command is listed in `commands()` below and by name in `command_names.rs`, from which
// `build.rs` generates the permission the capability grants.

#[tauri::command]
async fn snapshot(shell: ShellState<'_>) -> IpcResult<Snapshot> {
    Ok(shell.snapshot())
}

#[tauri::command]
async fn conversations(shell: ShellState<'_>) -> IpcResult<Vec<ConversationView>> {
    shell.conversations()
}

#[tauri::command]
async fn history(shell: ShellState<'_>, routing_key: Arg<String>) -> IpcResult<HistoryView> {
    let routing_key = validate::routing_key("routingKey", &routing_key.0)?;
    shell.history(routing_key).await
}

#[tauri::command]
async fn cancel_run(shell: ShellState<'_>, routing_key: Arg<String>) -> IpcResult<bool> {
    let routing_key = validate::routing_key("routingKey", &routing_key.0)?;
    shell.cancel_run(routing_key)
}

#[tauri::command]
async fn set_paused(shell: ShellState<'_>, paused: Arg<bool>) -> IpcResult<Snapshot> {
    shell.set_paused(paused.0)
}

#[tauri::command]
async fn set_approval_mode(shell: ShellState<'_>, mode: Arg<ApprovalMode>) -> IpcResult<Snapshot> {
    shell.set_approval_mode(mode.0)
}

#[tauri::command]
async fn set_channel_enabled(
    shell: ShellState<'_>,
    name: Arg<String>,
    enabled: Arg<bool>,
) -> IpcResult<Snapshot> {
    let name = validate::channel_name("name", &name.0)?;
    shell
        .set_channel_enabled(name, enabled.0)
        .map_err(|e| name_the(e, "name"))
}

#[tauri::command]
async fn set_do_not_disturb(shell: ShellState<'_>, on: Arg<bool>) -> IpcResult<Snapshot> {
    shell.set_do_not_disturb(on.0)
}

#[tauri::command]
async fn set_autostart(shell: ShellState<'_>, on: Arg<bool>) -> IpcResult<Snapshot> {
    shell.set_autostart(on.0)
}

/// Checks a channel's credentials; with `settings`, as those (unsaved) settings set them.
#[tauri::command]
async fn test_channel(
    shell: ShellState<'_>,
    name: Arg<String>,
    settings: Arg<Option<Config>>,
) -> IpcResult<Identity> {
    let name = validate::channel_name("name", &name.0)?;
    shell
        .test_channel(name, settings.0)
        .await
        .map_err(|e| name_the(e, "name"))
}

#[tauri::command]
async fn test_connection(
    shell: ShellState<'_>,
    url: Arg<String>,
    token: Arg<String>,
) -> IpcResult<ServerCheck> {
    let url = validate::server_url("url", &url.0)?;
    let token = validate::token("token", &token.0)?;
    shell.test_connection(url, token).await
}

/// Asks the engine to check the agent server again.
#[tauri::command]
async fn check_server(shell: ShellState<'_>) -> IpcResult<()> {
    shell.check_server()
}

#[tauri::command]
async fn settings(shell: ShellState<'_>) -> IpcResult<SettingsView> {
    Ok(shell.settings())
}

/// The settings are checked field by field by `Config::validate` (an `invalid_settings` error
/// naming the field) before anything is written.
#[tauri::command]
async fn save_settings(shell: ShellState<'_>, config: Arg<Config>) -> IpcResult<SaveOutcome> {
    Arc::clone(&shell).save_settings(config.0).await
}

#[tauri::command]
async fn import_autopilot(shell: ShellState<'_>, into: Arg<Config>) -> IpcResult<ImportView> {
    shell.import_autopilot(into.0)
}

#[tauri::command]
async fn activity(shell: ShellState<'_>) -> IpcResult<Vec<ActivityEntry>> {
    Ok(shell.activity())
}

#[tauri::command]
async fn approvals(shell: ShellState<'_>) -> IpcResult<ApprovalsView> {
    shell.approvals()
}

#[tauri::command]
async fn decide_approval(
    shell: ShellState<'_>,
    approval_id: Arg<String>,
    choice: Arg<ApprovalChoice>,
    pattern: Arg<Option<String>>,
) -> IpcResult<DecideOutcome> {
    let approval_id = validate::approval_id("approvalId", &approval_id.0)?;
    let pattern = validate::pattern("pattern", pattern.0.as_deref())?;
    shell
        .decide_approval_with_pattern(
            approval_id,
            choice.0,
            crate::shell::WINDOW_SURFACE,
            pattern.as_deref(),
        )
        .map_err(|e| name_the(e, "approvalId"))
}

#[tauri::command]
async fn remove_rule(shell: ShellState<'_>, id: Arg<i64>) -> IpcResult<bool> {
    let id = validate::rule_id("id", id.0)?;
    shell.remove_rule(id)
}

/// The strangers waiting to be admitted, oldest first.
#[tauri::command]
async fn pairing_requests(shell: ShellState<'_>) -> IpcResult<Vec<PairingView>> {
    shell.pairing_requests()
}

/// Admits the sender of a pairing code: their next message reaches the agent.
#[tauri::command]
async fn admit_pairing(
    shell: ShellState<'_>,
    channel: Arg<String>,
    code: Arg<String>,
) -> IpcResult<PairingDecision> {
    let channel = validate::channel_name("channel", &channel.0)?;
    let code = validate::pairing_code("code", &code.0)?;
    shell.admit_pairing(channel, &code, crate::shell::WINDOW_SURFACE)
}

/// Refuses the sender of a pairing code: they are ignored silently from now on.
#[tauri::command]
async fn refuse_pairing(
    shell: ShellState<'_>,
    channel: Arg<String>,
    code: Arg<String>,
) -> IpcResult<PairingDecision> {
    let channel = validate::channel_name("channel", &channel.0)?;
    let code = validate::pairing_code("code", &code.0)?;
    shell.refuse_pairing(channel, &code, crate::shell::WINDOW_SURFACE)
}

/// A `not_found` from the shell names the argument that named the missing thing.
fn name_the(error: IpcError, field: &str) -> IpcError {
    if error.code == ErrorCode::NotFound && error.field.is_none() {
        error.with_field(field)
    } else {
        error
    }
}

include!("command_names.rs");

/// The invoke handler with every command, shared by the app and the `tauri::test` tests.
pub fn commands<R: Runtime>() -> impl Fn(tauri::ipc::Invoke<R>) -> bool + Send + Sync + 'static {
    tauri::generate_handler![
        snapshot,
        conversations,
        history,
        cancel_run,
        set_paused,
        set_approval_mode,
        set_channel_enabled,
        set_do_not_disturb,
        set_autostart,
        test_channel,
        test_connection,
        check_server,
        settings,
        save_settings,
        import_autopilot,
        activity,
        approvals,
        decide_approval,
        remove_rule,
        pairing_requests,
        admit_pairing,
        refuse_pairing,
    ]
}
