//! Interactive watch runs: a schedule of the Stakpak watch scheduler asks, through
//! `POST /v1/gateway/send` with `interactive`, for its prompt to run in a chat's conversation, so
//! the person can follow up there. After the notice is in the chat, the prompt is journaled like a
//! message from that chat (from the schedule, not from the person: only an owner or the desktop may
//! approve what it asks to run) and the conversation's session is created or reused at once, so
//! its id can be returned for the scheduler's polling.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{Dispatcher, RunControl};
use crate::channels::{Accepted, Channel, ConversationPlace};
use crate::model::{now_ms, ChatType, DeliveryTarget, InboundMessage, JournalState, Peer};
use crate::routing::routing_key;

/// One item of the scheduler's `caller_context`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CallerContext {
    pub name: String,
    #[serde(default)]
    pub priority: Option<String>,
    pub content: String,
}

/// What an interactive watch run asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InteractiveRun {
    /// The schedule's name (for the session title and the requester's name).
    pub schedule: String,
    pub prompt: String,
    pub context: Vec<CallerContext>,
    /// The session's title; the schedule's name when absent.
    pub title: Option<String>,
    /// The longest the run may take; it is cancelled after that.
    pub timeout: Option<Duration>,
}

/// Where an interactive run went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedRun {
    pub session_id: String,
    pub routing_key: String,
    /// The thread the conversation lives in, where the platform has one.
    pub thread_id: Option<String>,
}

/// Why an interactive run could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Target(String),
    #[error("the agent server did not create a session: {0}")]
    Server(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// The agent's text for an interactive run: the prompt, then each context item under its name.
pub(crate) fn prompt_text(run: &InteractiveRun) -> String {
    let mut text = run.prompt.trim().to_owned();
    for item in &run.context {
        let priority = item
            .priority
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(|p| format!(" ({p})"))
            .unwrap_or_default();
        text.push_str(&format!(
            "\n\n[Context: {}{priority}]\n{}",
            item.name,
            item.content.trim_end()
        ));
    }
    text
}

impl Dispatcher {
    /// Whether an interactive run can start at `target` (checked before its notice is posted, so
    /// a refusal leaves the chat untouched): a direct chat must name its person.
    pub(crate) fn check_interactive_target(
        &self,
        channel: &Arc<dyn Channel>,
        target: &DeliveryTarget,
    ) -> Result<(), StartError> {
        if self
            .conversation_at_place(channel.name(), target)?
            .is_some()
        {
            return Ok(());
        }
        let place = channel.conversation_at(target, None);
        if place.chat == ChatType::Direct && place.peer_id.is_none() {
            return Err(StartError::Target(format!(
                "cannot tell whose direct chat {} is; name the person (for Slack their user id, U…)",
                target.chat_id
            )));
        }
        Ok(())
    }

    /// Starts `run` in the conversation at `target` of `channel`, whose notice (message id
    /// `notice`) was just posted there.
    pub(crate) async fn start_interactive(
        self: &Arc<Self>,
        channel: &Arc<dyn Channel>,
        target: &DeliveryTarget,
        notice: Option<&str>,
        run: InteractiveRun,
    ) -> Result<StartedRun, StartError> {
        let config = self.config();
        let name = channel.name().to_owned();
        let (key, place) = match self.conversation_at_place(&name, target)? {
            Some(found) => found,
            None => {
                let place = channel.conversation_at(target, notice);
                let person = match (&place.chat, &place.peer_id) {
                    (ChatType::Direct, Some(id)) => Peer::new(id.clone()),
                    (ChatType::Direct, None) => {
                        return Err(StartError::Target(format!(
                            "cannot tell whose direct chat {} is; name the person (for Slack their user id, U…)",
                            target.chat_id
                        )))
                    }
                    (_, _) => Peer::new(format!("schedule:{}", run.schedule)),
                };
                let key = routing_key(&config.routing, &name, &person, &place.chat);
                (key, place)
            }
        };
        let title = run
            .title
            .clone()
            .filter(|t| !t.trim().is_empty())
            .unwrap_or_else(|| run.schedule.clone());
        let existing = self.store.conversation(&key)?.and_then(|c| c.session_id);
        let (session_id, created) = match existing {
            Some(session) => (session, false),
            None => {
                let idempotency_key = format!("session:{key}:watch:{}", uuid::Uuid::new_v4());
                let session = self
                    .client()
                    .create_session(&title, &idempotency_key)
                    .await
                    .map_err(|e| StartError::Server(e.to_string()))?;
                (session.id, true)
            }
        };
        let message = InboundMessage {
            channel: name.clone(),
            peer: Peer {
                id: format!("schedule:{}", run.schedule),
                name: Some(format!("schedule {}", run.schedule)),
            },
            chat: place.chat.clone(),
            text: prompt_text(&run),
            target: place.target.clone(),
            dedup_keys: vec![format!("interactive:{}", uuid::Uuid::new_v4())],
            received_at_ms: now_ms(),
            attachments: Vec::new(),
        };
        let Accepted::New(journal_id) = self.store.accept(&message, &key, now_ms())? else {
            return Err(StartError::Store(anyhow::anyhow!(
                "the run's message was not stored"
            )));
        };
        // The conversation's own task may have given it a session meanwhile (a message came
        // in while this one was created): that one is kept, and the run goes there.
        let session_id = if created {
            match self.store.set_session_if_none(&key, &session_id, &title)? {
                Some(stored) if stored != session_id => {
                    tracing::info!(conversation = %key, session = %stored, unused = %session_id, "the conversation has a session already; the watch run's stays unused");
                    stored
                }
                _ => session_id,
            }
        } else {
            session_id
        };
        tracing::info!(conversation = %key, session = %session_id, schedule = %run.schedule, journal = journal_id, "interactive watch run queued");
        self.emit(crate::events::EngineEvent::InboundAccepted {
            journal_id,
            channel: name,
            routing_key: key.clone(),
            peer: format!("schedule {}", run.schedule),
            queued: self.waits_behind(&key, journal_id),
        });
        self.wake(&key);
        if let Some(limit) = run.timeout {
            self.cancel_after(journal_id, limit);
        }
        Ok(StartedRun {
            session_id,
            routing_key: key,
            thread_id: place.target.thread_id.clone(),
        })
    }

    /// The conversation someone already has at `target`, if any: where an answer typed at the
    /// desktop to a notice there goes.
    pub(crate) fn conversation_for_place(
        &self,
        channel: &str,
        target: &DeliveryTarget,
    ) -> anyhow::Result<Option<String>> {
        Ok(self
            .conversation_at_place(channel, target)?
            .map(|(key, _)| key))
    }

    /// The conversation someone already has at `target` (the place their messages come from),
    /// with where it lives.
    fn conversation_at_place(
        &self,
        channel: &str,
        target: &DeliveryTarget,
    ) -> anyhow::Result<Option<(String, ConversationPlace)>> {
        let place = target.place_key();
        Ok(self
            .store
            .conversations_of(channel)?
            .into_iter()
            .find(|c| c.target.place_key() == place)
            .map(|c| {
                let peer_id = (c.chat == ChatType::Direct).then(|| c.peer.id.clone());
                (
                    c.routing_key,
                    ConversationPlace {
                        chat: c.chat,
                        peer_id,
                        target: DeliveryTarget {
                            reply_to: None,
                            ..c.target
                        },
                    },
                )
            }))
    }

    /// Cancels the run that answers journal entry `journal_id` if it still runs after `limit`.
    fn cancel_after(self: &Arc<Self>, journal_id: i64, limit: Duration) {
        let dispatcher = Arc::downgrade(self);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(limit) => {}
            }
            let Some(d) = dispatcher.upgrade() else {
                return;
            };
            let run = d
                .store
                .journal_entry(journal_id)
                .ok()
                .flatten()
                .filter(|e| e.state == JournalState::Sent)
                .and_then(|e| e.run_id);
            if run.is_some_and(|run| d.control_run(&run, RunControl::Cancel)) {
                tracing::warn!(
                    journal = journal_id,
                    ?limit,
                    "an interactive watch run took longer than its timeout; cancelled"
                );
            }
        });
    }

    /// Whether the conversation bound to session `session_id` is busy (a run in flight or
    /// messages queued); `None` when no conversation has that session.
    pub(crate) fn session_activity(
        &self,
        session_id: &str,
    ) -> anyhow::Result<Option<(String, bool)>> {
        let Some(conversation) = self.store.conversation_with_session(session_id)? else {
            return Ok(None);
        };
        let key = conversation.routing_key;
        let active = self.is_active(&key) || !self.store.queued(&key)?.is_empty();
        Ok(Some((key, active)))
    }
}
