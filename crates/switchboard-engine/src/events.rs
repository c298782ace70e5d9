//! The typed stream of what the engine does, for its host (tray, window, notifications, logs).

use serde::Serialize;

use crate::config::ApprovalMode;
use crate::model::{ChannelStatus, DeliveryTarget};
use crate::watch::WatchContext;

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
    /// The reply grew; `text` is the whole reply so far.
    RunStreaming {
        routing_key: String,
        run_id: String,
        text: String,
    },
    /// A run ended; `outcome` is `completed`, `error`, `cancelled` or `settled` (ended without a
    /// terminal event and settled by the watchdog).
    RunFinished {
        routing_key: String,
        run_id: String,
        outcome: String,
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
        requester: String,
        deadline_ms: i64,
    },
    /// A pending approval was decided (or expired).
    ApprovalResolved {
        approval_id: String,
        action: String,
        decided_by: String,
        surface: String,
    },
    /// A `POST /v1/gateway/send` notification reached a chat.
    WatchNotificationDelivered {
        channel: String,
        target: DeliveryTarget,
        text: String,
        context: Option<WatchContext>,
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
    /// A pairing request was admitted or refused (`state`), by whom.
    PairingResolved {
        request: crate::access::PairingRequest,
        decided_by: String,
    },
    /// Intake was paused or resumed.
    Paused { paused: bool },
    /// The approval mode changed.
    ApprovalModeChanged { mode: ApprovalMode },
    /// The agent server's reachability changed (`ok`, `unreachable`, `unauthorized`).
    ServerState {
        state: String,
        detail: Option<String>,
    },
    /// A problem a person may need to act on.
    Error { scope: String, message: String },
}
