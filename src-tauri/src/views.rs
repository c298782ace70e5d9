//! The values the window receives: every command's result, every event, every error. Plain data,
//! importing nothing from the rest of the shell; [`crate::commands`] is the commands that return
//! them. The TypeScript declarations in `ui/src/gen/ipc.ts` are generated from these types (see
//! [`typescript`]); a test fails when the checked-in file is not what they generate.
//!
//! Errors reach the page as [`IpcError`] (`{code, message, field?}`); the page decides on `code`,
//! never on the message.

use serde::{Deserialize, Serialize};
use switchboard_engine::access::{PairingRequest, PairingState};
use switchboard_engine::approvals::{ApprovalState, Surface};
use switchboard_engine::channels::desktop::DesktopMessage;
use switchboard_engine::config::{ApprovalMode, Config};
use switchboard_engine::model::{ChannelStatus, JournalState, Peer};
use switchboard_engine::{ConversationSummary, RunOutcome, ServerHealth};

use crate::activity::ActivityEntry;

/// The one event name the shell emits to the window; the payload is a [`UiEvent`].
pub const UI_EVENT: &str = "switchboard:ui";

/// The window's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum Page {
    /// The desktop chat: talk to the agent from the window.
    Chat,
    Channels,
    Sessions,
    Approvals,
    Activity,
    Settings,
}

impl Page {
    /// The page's name, as the window knows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Page::Chat => "chat",
            Page::Channels => "channels",
            Page::Sessions => "sessions",
            Page::Approvals => "approvals",
            Page::Activity => "activity",
            Page::Settings => "settings",
        }
    }
}

/// What the shell tells the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
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
    /// The agent side of a desktop chat said something, or a message of it changed (a reply
    /// growing, an approval prompt decided).
    DesktopMessage { message: DesktopMessage },
    /// A run ended.
    RunFinished {
        routing_key: String,
        run_id: String,
        outcome: RunOutcome,
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
        action: ApprovalState,
        decided_by: String,
        surface: Surface,
        /// How it ended, in the words the chat and the notifications show.
        line: String,
    },
    /// A stranger asks to talk to the agent; the Approvals page adds them.
    PairingRequested { request: PairingView },
    /// A pairing request was admitted or refused (here, from a chat or by the headless binary),
    /// or its code expired; the Approvals page removes it.
    PairingResolved {
        channel: String,
        code: String,
        state: PairingOutcome,
        /// Who decided (empty when it expired).
        decided_by: String,
    },
}

/// How a pairing request stopped waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum PairingOutcome {
    Admitted,
    Refused,
    /// Its code ran out before anyone answered.
    Expired,
}

impl From<PairingState> for PairingOutcome {
    /// A resolved request's outcome (a pending one, which has none, reads as expired).
    fn from(state: PairingState) -> PairingOutcome {
        match state {
            PairingState::Admitted => PairingOutcome::Admitted,
            PairingState::Refused => PairingOutcome::Refused,
            PairingState::Pending => PairingOutcome::Expired,
        }
    }
}

/// The agent server's reachability as last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    /// Not checked yet (or the engine is not running).
    Unknown,
    Ok,
    Unreachable,
    Unauthorized,
}

impl From<ServerHealth> for ServerState {
    fn from(health: ServerHealth) -> ServerState {
        match health {
            ServerHealth::Ok => ServerState::Ok,
            ServerHealth::Unreachable => ServerState::Unreachable,
            ServerHealth::Unauthorized => ServerState::Unauthorized,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ServerView {
    pub url: String,
    pub state: ServerState,
    /// The reason (for a problem) or the server's version.
    pub detail: Option<String>,
}

/// How the configuration file stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
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
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Snapshot {
    /// Counts the snapshots taken: a page keeps the highest it has seen, as an answer to a call
    /// and an event may reach it in either order.
    #[cfg_attr(test, ts(type = "number"))]
    pub seq: u64,
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
    /// The `[notifications]` lines for `~/.stakpak/autopilot.toml` that send the Stakpak watch
    /// scheduler's notifications through Switchboard, once the API listens for it.
    pub autopilot_lines: Option<String>,
    /// The page the window opens on.
    pub start_page: Page,
    /// Started as the demo (`scripts/run.sh` without a configuration): the agent server is the
    /// test kit's demo agent and the settings are thrown away.
    pub demo: bool,
    /// The quick chat's shortcut and how it is (or is not) registered.
    pub quick_chat: QuickChatView,
    /// The version and where things are, for About and the diagnostics.
    pub about: About,
}

/// The quick chat's global shortcut, as Settings shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct QuickChatView {
    /// The shortcut in use (`Ctrl+Alt+Space`), when one is registered.
    pub shortcut: Option<String>,
    /// How it is registered: `portal` (the desktop's GlobalShortcuts portal: Wayland, recent
    /// GNOME and KDE) or `x11` (a key grab on the X server).
    pub via: Option<String>,
    /// Why there is none, when there is none (turned off, or neither way works here).
    pub problem: Option<String>,
}

/// The app's version and where it keeps its files.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct About {
    pub version: String,
    pub data_dir: String,
    pub log_dir: String,
}

/// A conversation in the Sessions list: the engine's summary as it is.
pub type ConversationView = ConversationSummary;

/// One message of the server's side of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ChatLine {
    pub role: String,
    pub text: String,
}

/// One message received from the chat, as the local journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct JournalLine {
    pub id: i64,
    pub peer: Peer,
    pub text: String,
    pub state: JournalState,
    pub error: Option<String>,
    /// The watch notification this message answered, when it did.
    pub answered_notification: Option<String>,
    pub created_ms: i64,
    /// Files that came with it.
    pub attachments: Vec<AttachmentView>,
}

/// A file that came with a message, as the history shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct AttachmentView {
    pub kind: switchboard_engine::model::AttachmentKind,
    /// The name it had, else its kind.
    pub name: String,
    pub mime: Option<String>,
    pub size: Option<u64>,
    pub state: AttachmentState,
    /// Where it is saved.
    pub path: Option<String>,
    /// Why it was not taken.
    pub reason: Option<String>,
    /// What a voice note was heard to say.
    pub transcript: Option<String>,
    /// The picture itself (a `data:` URL), for an image saved and small enough to show.
    pub preview: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum AttachmentState {
    /// Not fetched yet.
    Pending,
    Saved,
    Failed,
}

/// The reply being written now.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct LiveReply {
    pub run_id: String,
    pub text: String,
}

/// A conversation's history: the server's messages (or why they could not be read), the journal
/// and the live reply.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct HistoryView {
    pub routing_key: String,
    pub server: Vec<ChatLine>,
    pub server_error: Option<String>,
    pub journal: Vec<JournalLine>,
    pub live: Option<LiveReply>,
}

/// The Settings page's content.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
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
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

/// What saving the settings did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct SaveOutcome {
    pub snapshot: Snapshot,
    /// Settings that take effect after a restart of the app (the gateway API address).
    pub restart_needed: Vec<String>,
}

/// Settings proposed from `~/.stakpak/autopilot.toml`, not saved yet.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ImportView {
    pub config: Config,
    /// The dotted names of the settings it filled in.
    pub imported: Vec<String>,
}

/// The agent server's answer to "Test connection".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ServerCheck {
    pub version: String,
}

/// A tool call waiting for a person's decision, as the Approvals page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ApprovalView {
    pub id: String,
    pub tool: String,
    /// What the call will do, in a line ("run `cargo test`", "edit src/main.rs").
    pub summary: String,
    /// Everything it will do: the whole command, the diff, the new file, or every argument.
    pub detail: String,
    /// False when something in `detail` is masked (a secret) or folded.
    pub complete: bool,
    /// The arguments made readable: `key: value` lines, long values folded, secrets masked.
    pub arguments: String,
    /// The arguments exactly as sent (pretty JSON), nothing masked or folded; the window shows
    /// them only when asked ("Show masked values").
    pub arguments_whole: String,
    pub routing_key: String,
    pub session_id: Option<String>,
    pub channel: Option<String>,
    pub requester: String,
    pub created_ms: Option<i64>,
    pub deadline_ms: i64,
}

/// One line of the decisions audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct DecisionView {
    pub at_ms: i64,
    pub session_id: String,
    pub run_id: String,
    pub tool_call_id: String,
    pub tool: String,
    pub action: ApprovalState,
    pub decided_by: String,
    /// The platform id of whoever decided from a chat: a display name is the person's choice
    /// ("Ann (owner)"), the id is not.
    pub decided_by_id: Option<String>,
    /// Where it was decided, as a person reads it ("window", "telegram", "engine").
    pub surface: String,
    /// Why it closed, or the scope it was given ("allowed in this chat from now on").
    pub note: Option<String>,
}

/// An "always allow" rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct RuleView {
    pub id: i64,
    pub tool: String,
    pub arg_pattern: Option<String>,
    /// The channel it is limited to; `None` for every channel.
    pub channel: Option<String>,
    pub created_ms: i64,
    pub created_by: String,
}

/// The Approvals page's content.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ApprovalsView {
    /// Waiting now, the soonest deadline first.
    pub pending: Vec<ApprovalView>,
    /// The audit log, newest first.
    pub history: Vec<DecisionView>,
    pub rules: Vec<RuleView>,
}

/// What a person answers to a pending approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ApprovalChoice {
    /// Run this call; ask again next time.
    Approve,
    /// Run this call, and let the tool pass in this conversation until it starts a new session.
    AllowConversation,
    /// Run this call, and create a rule (for every channel) so the tool passes without asking
    /// from now on; a pattern narrows it to matching arguments.
    AlwaysAllow,
    Reject,
}

/// What answering an approval did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum DecideOutcome {
    /// This answer decided it.
    Decided {
        action: ApprovalState,
        message: String,
    },
    /// Someone answered first, it ran out of time, or it stopped waiting; nothing changed.
    AlreadyDecided {
        action: ApprovalState,
        decided_by: String,
        /// Where it was decided, as a person reads it.
        surface: String,
        message: String,
    },
}

/// A stranger asking to talk to the agent (a pending pairing code), as the window lists them:
/// the engine's record as it is (the first message is text, never markup).
pub type PairingView = PairingRequest;

/// What admitting or refusing a pairing request did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct PairingDecision {
    pub state: PairingState,
    pub request: PairingView,
    /// The outcome in words, for the page's notice.
    pub message: String,
}

/// How many audit log lines the Approvals page shows.
pub const HISTORY_LIMIT: usize = 200;

/// The kinds of failure the page acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
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
#[cfg_attr(test, derive(ts_rs::TS))]
#[error("{message}")]
pub struct IpcError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
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

/// The TypeScript declarations of the view types, as `ui/src/gen/ipc.ts` holds them. The test
/// fails when the checked-in file differs; `UPDATE_TS=1 cargo test -p switchboard --lib
/// typescript` rewrites it. The build embeds the UI, so the UI must compile for the test to run:
/// add a field in Rust and regenerate before the page uses it.
#[cfg(test)]
mod typescript {
    use std::collections::BTreeSet;

    use switchboard_engine::access::{PairingRequest, PairingState};
    use switchboard_engine::approvals::{ApprovalState, Surface};
    use switchboard_engine::config::{
        ApiConfig, ApprovalMode, Approvers, Binding, ChannelsConfig, Config, DiscordConfig,
        DmPolicy, DmScope, GatewayConfig, NotificationsConfig, RoutingConfig, ServerConfig,
        SlackConfig, TelegramConfig,
    };
    use switchboard_engine::model::{
        ChannelState, ChannelStatus, ChatType, Identity, JournalState, Peer,
    };
    use switchboard_engine::{ConversationSummary, RunOutcome};
    use ts_rs::TS;

    use super::*;
    use crate::activity::{ActivityEntry, Level};

    const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ui/src/gen/ipc.ts");

    /// One declaration per type, and the names each refers to.
    struct Decls {
        cfg: ts_rs::Config,
        text: String,
        declared: BTreeSet<String>,
        used: BTreeSet<String>,
    }

    impl Decls {
        fn add<T: TS + 'static>(&mut self) -> &mut Self {
            let docs = T::docs().unwrap_or_default();
            self.text
                .push_str(&format!("{docs}export {}\n\n", T::decl(&self.cfg)));
            self.declared.insert(T::ident(&self.cfg));
            for dep in T::dependencies(&self.cfg) {
                self.used.insert(dep.ts_name);
            }
            self
        }
    }

    fn generate() -> (String, BTreeSet<String>) {
        let mut d = Decls {
            cfg: ts_rs::Config::new().with_large_int("number"),
            text: String::from(
                "// Generated from the Rust view types (src-tauri/src/views.rs and the engine types \
                 they carry).\n// Do not edit: `UPDATE_TS=1 cargo test -p switchboard --lib \
                 typescript` rewrites it.\n\n",
            ),
            declared: BTreeSet::new(),
            used: BTreeSet::new(),
        };
        d.add::<Page>()
            .add::<UiEvent>()
            .add::<Snapshot>()
            .add::<QuickChatView>()
            .add::<DesktopMessage>()
            .add::<switchboard_engine::channels::desktop::DesktopKind>()
            .add::<switchboard_engine::channels::desktop::DesktopLine>()
            .add::<switchboard_engine::channels::StreamTask>()
            .add::<switchboard_engine::channels::TaskStatus>()
            .add::<About>()
            .add::<ConfigView>()
            .add::<ServerView>()
            .add::<ServerState>()
            .add::<ChannelStatus>()
            .add::<ChannelState>()
            .add::<Identity>()
            .add::<ConversationSummary>()
            .add::<switchboard_engine::store::UsageTotals>()
            .add::<Peer>()
            .add::<ChatType>()
            .add::<HistoryView>()
            .add::<ChatLine>()
            .add::<JournalLine>()
            .add::<AttachmentView>()
            .add::<AttachmentState>()
            .add::<switchboard_engine::model::AttachmentKind>()
            .add::<JournalState>()
            .add::<LiveReply>()
            .add::<RunOutcome>()
            .add::<ActivityEntry>()
            .add::<Level>()
            .add::<SettingsView>()
            .add::<FieldProblem>()
            .add::<SaveOutcome>()
            .add::<ImportView>()
            .add::<ServerCheck>()
            .add::<Config>()
            .add::<ServerConfig>()
            .add::<GatewayConfig>()
            .add::<ApprovalMode>()
            .add::<RoutingConfig>()
            .add::<DmScope>()
            .add::<Binding>()
            .add::<ApiConfig>()
            .add::<ChannelsConfig>()
            .add::<TelegramConfig>()
            .add::<SlackConfig>()
            .add::<DiscordConfig>()
            .add::<DmPolicy>()
            .add::<Approvers>()
            .add::<switchboard_engine::config::Streaming>()
            .add::<NotificationsConfig>()
            .add::<switchboard_engine::config::DesktopConfig>()
            .add::<switchboard_engine::config::MediaConfig>()
            .add::<ApprovalsView>()
            .add::<ApprovalView>()
            .add::<DecisionView>()
            .add::<RuleView>()
            .add::<ApprovalState>()
            .add::<Surface>()
            .add::<ApprovalChoice>()
            .add::<DecideOutcome>()
            .add::<PairingRequest>()
            .add::<PairingState>()
            .add::<PairingOutcome>()
            .add::<PairingDecision>()
            .add::<ErrorCode>()
            .add::<IpcError>();
        let missing = d.used.difference(&d.declared).cloned().collect();
        (d.text.trim_end().to_owned() + "\n", missing)
    }

    #[test]
    fn the_ui_types_are_the_ones_the_rust_views_generate() {
        let (text, missing) = generate();
        assert!(
            missing.is_empty(),
            "types referred to but not declared: {missing:?}"
        );
        if std::env::var_os("UPDATE_TS").is_some() {
            std::fs::write(PATH, &text).expect("write ui/src/gen/ipc.ts");
            return;
        }
        let checked_in = std::fs::read_to_string(PATH).unwrap_or_default();
        assert!(
            checked_in == text,
            "ui/src/gen/ipc.ts is not what the Rust view types generate; run \
             `UPDATE_TS=1 cargo test -p switchboard --lib typescript` and commit the result"
        );
    }
}
