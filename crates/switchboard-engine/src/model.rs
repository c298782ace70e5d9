//! Domain values shared by the dispatcher, the channels and the host.

use serde::{Deserialize, Serialize};

/// Who sent a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Peer {
    /// The platform's stable user id.
    pub id: String,
    /// A display name, when the platform gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Peer {
    pub fn new(id: impl Into<String>) -> Self {
        Peer {
            id: id.into(),
            name: None,
        }
    }

    /// The name to show a person: the display name, else the id.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

/// Where in a platform a message was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatType {
    Direct,
    Group { id: String },
    Thread { group_id: String, thread_id: String },
}

impl ChatType {
    pub fn kind(&self) -> &'static str {
        match self {
            ChatType::Direct => "direct",
            ChatType::Group { .. } => "group",
            ChatType::Thread { .. } => "thread",
        }
    }

    /// Whether only `peer` and the bot are in this chat: a direct message, or a topic of the
    /// private chat with `peer` (Telegram's private chats can have topics; their chat id is the
    /// user's id). Access rules treat such a topic as a direct message, not as a group.
    pub fn is_private_with(&self, peer: &str) -> bool {
        match self {
            ChatType::Direct => true,
            ChatType::Thread { group_id, .. } => group_id == peer,
            ChatType::Group { .. } => false,
        }
    }
}

/// Where a reply goes: the platform's chat, optionally a thread in it and a message to reply to.
///
/// Each channel decides what the fields mean for its platform (a Telegram chat id and forum topic, a
/// Slack channel and parent `ts`, a Discord channel id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeliveryTarget {
    pub chat_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
}

impl DeliveryTarget {
    pub fn chat(chat_id: impl Into<String>) -> Self {
        DeliveryTarget {
            chat_id: chat_id.into(),
            thread_id: None,
            reply_to: None,
        }
    }

    /// The key a delivery context is filed under: the chat and thread, never the message replied to,
    /// so that any later message in the same place finds it.
    pub fn place_key(&self) -> String {
        match &self.thread_id {
            Some(thread) => format!("{}#{}", self.chat_id, thread),
            None => self.chat_id.clone(),
        }
    }
}

/// What kind of file came with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum AttachmentKind {
    /// A picture: sent to the agent as an image when its format is one the agent reads.
    Image,
    /// A file of any other kind (a PDF, a log).
    Document,
    /// A voice note: transcribed when a transcriber is configured.
    Voice,
    Audio,
    Video,
}

impl AttachmentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachmentKind::Image => "image",
            AttachmentKind::Document => "document",
            AttachmentKind::Voice => "voice",
            AttachmentKind::Audio => "audio",
            AttachmentKind::Video => "video",
        }
    }
}

/// A file that came with a message: what the platform says of it and how to fetch it; once the
/// engine fetched it, where it is (or why it is not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub kind: AttachmentKind,
    /// The name the person gave it, when the platform says (never trusted as a path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The MIME type the platform reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime: Option<String>,
    /// The size the platform reports, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// How the channel fetches it: a Telegram `file_id`, a Slack or Discord URL.
    pub source: String,
    #[serde(default)]
    pub fetched: Fetched,
}

impl Attachment {
    pub fn new(kind: AttachmentKind, source: impl Into<String>) -> Attachment {
        Attachment {
            kind,
            name: None,
            mime: None,
            size: None,
            source: source.into(),
            fetched: Fetched::Pending,
        }
    }
}

/// What became of an attachment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Fetched {
    /// Not fetched yet (the message was stored before anything was downloaded).
    #[default]
    Pending,
    /// Saved at `path`, `bytes` long, of type `mime`; a voice note's `transcript` when one was
    /// made.
    Saved {
        path: String,
        bytes: u64,
        mime: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transcript: Option<String>,
    },
    /// Not fetched, and why (the chat was told).
    Failed { reason: String },
}

/// A message a channel received and hands to the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// The channel's name: `telegram`, `slack`, `discord`, or a test channel's.
    pub channel: String,
    pub peer: Peer,
    pub chat: ChatType,
    pub text: String,
    /// Where the reply goes.
    pub target: DeliveryTarget,
    /// Keys that identify this platform message; if any of them was seen before, the message is a
    /// redelivery and is dropped. Slack gives two (`event_id` and `channel:ts`).
    pub dedup_keys: Vec<String>,
    /// Unix milliseconds when the platform says the message was written.
    pub received_at_ms: i64,
    /// Files that came with it (a photo, a document, a voice note); fetched after the message
    /// is stored.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
}

/// The bot identity a channel reports after checking its credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Identity {
    pub id: String,
    pub name: String,
}

/// A channel's health, as shown in the tray, the window and `GET /v1/gateway/channels`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ChannelState {
    Connecting,
    Connected,
    Reconnecting,
    RateLimited,
    AuthFailed,
    Disabled,
}

impl ChannelState {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelState::Connecting => "connecting",
            ChannelState::Connected => "connected",
            ChannelState::Reconnecting => "reconnecting",
            ChannelState::RateLimited => "rate_limited",
            ChannelState::AuthFailed => "auth_failed",
            ChannelState::Disabled => "disabled",
        }
    }

    /// Whether the state is a failure a person should look at.
    pub fn is_problem(self) -> bool {
        matches!(self, ChannelState::AuthFailed | ChannelState::Reconnecting)
    }
}

/// What a person sees of a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ChannelStatus {
    pub name: String,
    pub enabled: bool,
    pub state: ChannelState,
    pub identity: Option<Identity>,
    pub last_error: Option<String>,
    /// Unix milliseconds of the last message in or out.
    pub last_activity_ms: Option<i64>,
    pub received: u64,
    pub sent: u64,
}

/// The state of one journal entry (an accepted inbound message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum JournalState {
    /// Stored, waiting for its conversation to be free (or the gateway to resume).
    Queued,
    /// Posted to the agent server as (part of) a run.
    Sent,
    /// The run's reply reached the chat.
    Replied,
    /// The run failed or the reply could not be delivered; the chat was told when possible.
    Failed,
}

impl JournalState {
    pub fn as_str(self) -> &'static str {
        match self {
            JournalState::Queued => "queued",
            JournalState::Sent => "sent",
            JournalState::Replied => "replied",
            JournalState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<JournalState> {
        Some(match s {
            "queued" => JournalState::Queued,
            "sent" => JournalState::Sent,
            "replied" => JournalState::Replied,
            "failed" => JournalState::Failed,
            _ => return None,
        })
    }
}

/// Milliseconds since the Unix epoch, the engine's one time format.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
