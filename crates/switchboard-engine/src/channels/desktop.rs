//! The desktop chat: a channel whose "platform" is the Switchboard window itself.
//!
//! A person at the desktop talks to the agent through the same engine as any chat: their message
//! is journaled (accepted means stored), a run answers it, and the reply is "sent" to this
//! channel, which keeps it in the store (`desktop_messages`) and tells the host. The reply is
//! shown while it is written as a streaming message with the tools as tasks, updated in place, and
//! approval prompts are messages of their own whose outcome is filled in when decided anywhere —
//! so the desktop chat's transcript survives a restart like any platform's history, and a run
//! resumed after a crash completes the same message.
//!
//! Each desktop chat is its own conversation (`desktop:<chat id>`), so several can go on at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::broadcast;

use super::{
    Channel, ChannelContext, ChannelError, LivePacing, SentMessage, StreamTask, StreamUpdate,
};
use crate::approvals::ApprovalPrompt;
use crate::chunk::{LengthUnit, TextLimit};
use crate::events::EngineEvent;
use crate::model::{
    now_ms, ChannelState, ChatType, DeliveryTarget, Identity, InboundMessage, JournalState, Peer,
};
use crate::store::{JournalEntry, Store};

/// The desktop channel's name, in routing keys (`desktop:<chat id>`) and the API.
pub const DESKTOP: &str = "desktop";

/// The id every desktop message carries as its sender: the person at this machine.
pub const LOCAL_PEER_ID: &str = "local";

/// A desktop reply is one message however long (the window scrolls); the limit only guards the
/// store against a runaway reply.
const DESKTOP_LIMIT: TextLimit = TextLimit {
    max: 1_000_000,
    unit: LengthUnit::Chars,
};

/// What the agent side of a desktop chat said: a reply (growing while written) or an approval
/// prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct DesktopMessage {
    pub id: i64,
    pub chat_id: String,
    pub kind: DesktopKind,
    pub text: String,
    /// While a reply is written: what the agent does meanwhile (tool calls, a wait for approval).
    pub tasks: Vec<StreamTask>,
    /// The reply is still being written.
    pub streaming: bool,
    /// For an approval prompt: the approval it asks about, and how it ended once it did.
    pub approval_id: Option<String>,
    pub outcome: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum DesktopKind {
    Reply,
    Approval,
}

impl DesktopKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DesktopKind::Reply => "reply",
            DesktopKind::Approval => "approval",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<DesktopKind> {
        Some(match s {
            "reply" => DesktopKind::Reply,
            "approval" => DesktopKind::Approval,
            _ => return None,
        })
    }
}

/// One line of a desktop chat's transcript.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum DesktopLine {
    /// What the person wrote, and how far it got (queued, sent, replied, failed).
    Person {
        journal_id: i64,
        text: String,
        state: JournalState,
        error: Option<String>,
        at_ms: i64,
    },
    /// What the agent side said.
    Agent { message: DesktopMessage },
}

impl DesktopLine {
    fn at_ms(&self) -> i64 {
        match self {
            DesktopLine::Person { at_ms, .. } => *at_ms,
            DesktopLine::Agent { message } => message.created_ms,
        }
    }
}

/// A desktop chat's transcript: the person's messages (from the journal, only those written in
/// this chat) and the agent side's, in the order they were written.
pub fn transcript(
    chat_id: &str,
    journal: Vec<JournalEntry>,
    said: Vec<DesktopMessage>,
) -> Vec<DesktopLine> {
    let mut lines: Vec<DesktopLine> = journal
        .into_iter()
        .filter(|j| j.channel == DESKTOP && j.target.chat_id == chat_id)
        .map(|j| DesktopLine::Person {
            journal_id: j.id,
            text: j.text,
            state: j.state,
            error: j.error,
            at_ms: j.created_ms,
        })
        .chain(
            said.into_iter()
                .map(|message| DesktopLine::Agent { message }),
        )
        .collect();
    // Stable: at the same millisecond the person's message (journaled first) stays first.
    lines.sort_by_key(DesktopLine::at_ms);
    lines
}

/// The routing key of a desktop chat (bindings aside): `desktop:<chat id>`.
pub fn chat_key(chat_id: &str) -> String {
    format!("{DESKTOP}:{chat_id}")
}

/// The chat id of a desktop routing key.
pub fn chat_of(routing_key: &str) -> Option<&str> {
    routing_key
        .strip_prefix(DESKTOP)
        .and_then(|rest| rest.strip_prefix(':'))
        .filter(|id| !id.is_empty())
}

/// Whether a chat id is one the desktop uses: short, printable, no separators that would make a
/// routing key ambiguous.
pub fn valid_chat_id(chat_id: &str) -> bool {
    !chat_id.is_empty()
        && chat_id.len() <= 64
        && chat_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The title of a desktop chat's session: the start of its first message.
pub fn chat_title(first_message: &str) -> String {
    const MAX: usize = 48;
    let line = first_message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("New chat");
    let mut title: String = line.chars().take(MAX).collect();
    if line.chars().count() > MAX {
        title = title.trim_end().to_owned();
        title.push('…');
    }
    format!("Desktop: {title}")
}

/// The desktop chat as a channel. Built by the engine (it needs the store and the event stream).
pub struct DesktopChannel {
    store: Store,
    events: broadcast::Sender<EngineEvent>,
    person: Peer,
    ctx: Mutex<Option<ChannelContext>>,
}

impl DesktopChannel {
    pub(crate) fn new(
        store: Store,
        events: broadcast::Sender<EngineEvent>,
        person: Peer,
    ) -> Arc<DesktopChannel> {
        Arc::new(DesktopChannel {
            store,
            events,
            person,
            ctx: Mutex::default(),
        })
    }

    /// The person at the desktop, as the sender of their messages.
    pub fn person(&self) -> &Peer {
        &self.person
    }

    /// A message the person typed in desktop chat `chat_id`; `client_id` identifies it (the same
    /// id sent twice is one message).
    pub fn message(&self, chat_id: &str, text: &str, client_id: &str) -> InboundMessage {
        InboundMessage {
            channel: DESKTOP.to_owned(),
            peer: self.person.clone(),
            chat: ChatType::Group {
                id: chat_id.to_owned(),
            },
            text: text.to_owned(),
            target: DeliveryTarget::chat(chat_id),
            dedup_keys: vec![format!("{DESKTOP}:{client_id}")],
            received_at_ms: now_ms(),
            attachments: Vec::new(),
        }
    }

    fn announce(&self, message: Option<DesktopMessage>) {
        if let Some(message) = message {
            let _ = self.events.send(EngineEvent::DesktopMessage { message });
        }
    }

    fn parse_id(id: &str) -> Result<i64, ChannelError> {
        id.parse()
            .map_err(|_| ChannelError::Rejected(format!("no desktop message {id:?}")))
    }

    fn stored<T>(result: anyhow::Result<T>) -> Result<T, ChannelError> {
        // A store that cannot write is worth retrying (a busy database); the delivery's own
        // retries and the run's durability cover it.
        result.map_err(|e| ChannelError::Transport(format!("cannot store the message: {e:#}")))
    }
}

#[async_trait]
impl Channel for DesktopChannel {
    fn name(&self) -> &str {
        DESKTOP
    }

    fn text_limit(&self) -> TextLimit {
        DESKTOP_LIMIT
    }

    /// Nothing to pace on a local window: show the reply as it comes.
    fn live_pacing(&self) -> LivePacing {
        LivePacing {
            every: Duration::from_millis(150),
            first_after: Duration::ZERO,
        }
    }

    async fn run(&self, ctx: ChannelContext) {
        ctx.set_identity(Identity {
            id: DESKTOP.to_owned(),
            name: "Switchboard".to_owned(),
        });
        ctx.report(ChannelState::Connected, None);
        let shutdown = ctx.shutdown.clone();
        *self.ctx.lock().unwrap_or_else(|e| e.into_inner()) = Some(ctx);
        shutdown.cancelled().await;
        *self.ctx.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    async fn send(&self, target: &DeliveryTarget, text: &str) -> Result<SentMessage, ChannelError> {
        let message = Self::stored(self.store.insert_desktop_message(
            &target.chat_id,
            DesktopKind::Reply,
            text,
            &[],
            false,
            None,
            now_ms(),
        ))?;
        let id = message.id.to_string();
        self.announce(Some(message));
        Ok(SentMessage { id })
    }

    /// Completes a reply (its final text; a streaming one stops growing).
    async fn edit(
        &self,
        _target: &DeliveryTarget,
        message_id: &str,
        text: &str,
    ) -> Result<(), ChannelError> {
        let id = Self::parse_id(message_id)?;
        let message =
            Self::stored(
                self.store
                    .update_desktop_message(id, text, &[], false, now_ms()),
            )?;
        self.announce(message);
        Ok(())
    }

    async fn stream(&self, update: &StreamUpdate<'_>) -> Result<String, ChannelError> {
        let now = now_ms();
        let message = match update.message_id {
            None => Self::stored(self.store.insert_desktop_message(
                &update.target.chat_id,
                DesktopKind::Reply,
                update.text,
                update.tasks,
                true,
                None,
                now,
            ))
            .map(Some)?,
            Some(id) => Self::stored(self.store.update_desktop_message(
                Self::parse_id(id)?,
                update.text,
                update.tasks,
                true,
                now,
            ))?,
        };
        let id = message
            .as_ref()
            .map(|m| m.id.to_string())
            .or_else(|| update.message_id.map(str::to_owned))
            .unwrap_or_default();
        self.announce(message);
        Ok(id)
    }

    async fn post_approval(
        &self,
        target: &DeliveryTarget,
        prompt: &ApprovalPrompt,
    ) -> Result<Option<SentMessage>, ChannelError> {
        let text = if prompt.summary.trim().is_empty() {
            format!("Run `{}`?", prompt.tool)
        } else {
            prompt.summary.clone()
        };
        let message = Self::stored(self.store.insert_desktop_message(
            &target.chat_id,
            DesktopKind::Approval,
            &text,
            &[],
            false,
            Some(&prompt.approval_id),
            now_ms(),
        ))?;
        let id = message.id.to_string();
        self.announce(Some(message));
        Ok(Some(SentMessage { id }))
    }

    async fn close_approval(
        &self,
        _target: &DeliveryTarget,
        message_id: &str,
        outcome: &str,
    ) -> Result<(), ChannelError> {
        let id = Self::parse_id(message_id)?;
        let message = Self::stored(self.store.close_desktop_approval(id, outcome, now_ms()))?;
        self.announce(message);
        Ok(())
    }

    async fn test(&self) -> Result<Identity, ChannelError> {
        Ok(Identity {
            id: DESKTOP.to_owned(),
            name: "Switchboard".to_owned(),
        })
    }

    /// A desktop chat's id (the gateway API may send a watch notification to one).
    fn parse_target(&self, target: &str) -> Result<DeliveryTarget, String> {
        let target = target.trim();
        if !valid_chat_id(target) {
            return Err(format!(
                "{target:?} is not a desktop chat id (letters, digits, - and _, up to 64)"
            ));
        }
        Ok(DeliveryTarget::chat(target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transcript_interleaves_both_sides_by_time_and_keeps_to_its_chat() {
        let entry = |id: i64, chat: &str, channel: &str, at: i64| JournalEntry {
            id,
            channel: channel.into(),
            routing_key: "desktop:a".into(),
            peer: Peer::new(LOCAL_PEER_ID),
            chat: ChatType::Group { id: chat.into() },
            target: DeliveryTarget::chat(chat),
            text: format!("q{id}"),
            attachments: vec![],
            context: None,
            state: JournalState::Replied,
            run_id: None,
            error: None,
            created_ms: at,
            updated_ms: at,
        };
        let said = |id: i64, at: i64| DesktopMessage {
            id,
            chat_id: "a".into(),
            kind: DesktopKind::Reply,
            text: format!("a{id}"),
            tasks: vec![],
            streaming: false,
            approval_id: None,
            outcome: None,
            created_ms: at,
            updated_ms: at,
        };
        let lines = transcript(
            "a",
            vec![
                entry(1, "a", DESKTOP, 10),
                entry(2, "b", DESKTOP, 11),
                entry(3, "a", "telegram", 12),
                entry(4, "a", DESKTOP, 30),
            ],
            vec![said(7, 20), said(8, 30)],
        );
        let texts: Vec<String> = lines
            .iter()
            .map(|l| match l {
                DesktopLine::Person { text, .. } => text.clone(),
                DesktopLine::Agent { message } => message.text.clone(),
            })
            .collect();
        assert_eq!(
            texts,
            ["q1", "a7", "q4", "a8"],
            "another chat's and another channel's messages stay out; ties keep the question first"
        );
    }

    #[test]
    fn desktop_keys_and_titles() {
        assert_eq!(chat_key("abc"), "desktop:abc");
        assert_eq!(chat_of("desktop:abc"), Some("abc"));
        assert_eq!(chat_of("desktop:"), None);
        assert_eq!(chat_of("telegram:dm:1"), None);
        assert!(valid_chat_id("2f1c-9a_b"));
        for bad in ["", "a:b", "a b", "../x", &"x".repeat(65)] {
            assert!(!valid_chat_id(bad), "{bad:?} is not a chat id");
        }
        assert_eq!(
            chat_title("  \n check the disk \nplease"),
            "Desktop: check the disk"
        );
        let long = chat_title(&"word ".repeat(30));
        assert!(long.ends_with('…') && long.chars().count() <= "Desktop: ".len() + 49);
        assert_eq!(chat_title(""), "Desktop: New chat");
    }
}
