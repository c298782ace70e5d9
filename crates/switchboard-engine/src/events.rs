//! The typed stream of what the engine does, for its host (tray, window, notifications, logs).

use serde::Serialize;

use crate::agent::Usage;
use crate::approvals::{ApprovalState, Surface};
use crate::config::ApprovalMode;
use crate::model::{ChannelStatus, DeliveryTarget};
use crate::watch::WatchContext;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// `run_completed`.
    Completed,
    /// Cancelled (from here, or on the server).
    Cancelled,
    /// `run_error`, or the server refused the message.
    Error,
    /// Ended without a terminal event; settled by the watchdog from the session's state.
    Settled,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Completed => "completed",
            RunOutcome::Cancelled => "cancelled",
            RunOutcome::Error => "error",
            RunOutcome::Settled => "settled",
        }
    }
}

impl std::fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the agent server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerHealth {
    Ok,
    Unreachable,
    /// It refused the token (after a restart of `stakpak up`, the generated token changes).
    Unauthorized,
}

impl ServerHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerHealth::Ok => "ok",
            ServerHealth::Unreachable => "unreachable",
            ServerHealth::Unauthorized => "unauthorized",
        }
    }
}

impl std::fmt::Display for ServerHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing that happened in the engine. Hosts subscribe with
/// [`EngineHandle::subscribe`](crate::EngineHandle::subscribe).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EngineEvent {
    /// A channel changed state, identity or last error.
    ChannelState { status: ChannelStatus },
    /// A chat message was stored in the journal and will be answered.
    InboundAccepted {
        journal_id: i64,
        channel: String,
        routing_key: String,
        peer: String,
        /// True when a run is active in the conversation, so the message waits for it.
        queued: bool,
    },
    /// A run was posted to the agent server.
    RunStarted {
        routing_key: String,
        session_id: String,
        run_id: String,
    },
    /// The reply grew by `delta`; `len` is the reply's length in bytes after it, so a host that
    /// missed a piece can tell and read the whole text with `EngineHandle::live_reply`. Deltas
    /// that come close together are sent as one.
    RunStreaming {
        routing_key: String,
        run_id: String,
        delta: String,
        len: usize,
    },
    /// A run ended, with the tokens it used when the server reported them.
    RunFinished {
        routing_key: String,
        run_id: String,
        outcome: RunOutcome,
        usage: Usage,
    },
    /// A reply reached the chat.
    ReplyDelivered {
        routing_key: String,
        channel: String,
        target: DeliveryTarget,
        text: String,
        chunks: usize,
    },
    /// A tool call waits for a person's decision (`ask` mode).
    ApprovalRequested {
        approval_id: String,
        routing_key: String,
        tool: String,
        arguments: serde_json::Value,
        /// What the call will do, in a line ("run `cargo test`").
        summary: String,
        /// What will run, whole (command, diff, new file, arguments).
        detail: String,
        /// False when something in `detail` is masked or folded.
        complete: bool,
        requester: String,
        deadline_ms: i64,
    },
    /// An approval stopped waiting: decided, expired, or closed because its run ended or the
    /// server dealt with the call.
    ApprovalResolved {
        approval_id: String,
        action: ApprovalState,
        decided_by: String,
        surface: Surface,
        /// How it ended, in the words every surface shows.
        line: String,
    },
    /// A `POST /v1/gateway/send` notification reached a chat.
    WatchNotificationDelivered {
        channel: String,
        target: DeliveryTarget,
        text: String,
        context: Option<WatchContext>,
        /// The conversation already at that chat, if any: an answer from there (or typed at
        /// the desktop) goes to it.
        routing_key: Option<String>,
    },
    /// The agent's reply to a message that carried a watch context reached the chat.
    WatchReplyDelivered {
        channel: String,
        routing_key: String,
        target: DeliveryTarget,
        text: String,
    },
    /// A stranger wrote to the bot and got a pairing code; a person may admit or refuse them.
    PairingRequested {
        request: crate::access::PairingRequest,
    },
    /// A pairing request was admitted or refused (`state`), by whom; or, still `pending` with no
    /// one named, it stopped waiting because a newer stranger took its place.
    PairingResolved {
        request: crate::access::PairingRequest,
        decided_by: String,
    },
    /// Intake was paused or resumed.
    Paused { paused: bool },
    /// The approval mode changed.
    ApprovalModeChanged { mode: ApprovalMode },
    /// The agent server's reachability changed.
    ServerState {
        state: ServerHealth,
        detail: Option<String>,
    },
    /// The agent side of a desktop chat said something, or a message of it changed (a reply
    /// growing while written, an approval prompt decided).
    DesktopMessage {
        message: crate::channels::desktop::DesktopMessage,
    },
    /// A problem a person may need to act on.
    Error { scope: String, message: String },
}
