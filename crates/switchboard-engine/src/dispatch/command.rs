//! Chat commands ([`crate::commands`]), carried out for a sender who passed the access gate: each
//! answers in the chat, short and plain, and none reaches the agent.

use std::sync::Arc;

use super::intake::DispatcherIntake;
use super::Dispatcher;
use crate::approvals::ChatChoice;
use crate::channels::Intake;
use crate::commands::{for_how_long, help_text, short_id, Command};
use crate::events::ServerHealth;
use crate::model::{now_ms, InboundMessage};

/// How many sessions `/sessions` lists.
const SESSIONS_LISTED: usize = 10;

impl Dispatcher {
    /// Carries out `command`, sent as `message` in conversation `key`, and answers in its chat.
    pub(super) async fn run_command(
        self: &Arc<Self>,
        command: Command,
        message: InboundMessage,
        key: String,
    ) {
        let answer = match self.answer_command(&command, &message, &key).await {
            Ok(answer) => answer,
            Err(e) => format!("⚠️ That did not work: {e:#}"),
        };
        if let Some(channel) = self.channel(&message.channel) {
            if let Err(e) = channel.send(&message.target, &answer).await {
                tracing::warn!(channel = %message.channel, error = %e, "a command's answer was not delivered");
            }
        }
    }

    async fn answer_command(
        self: &Arc<Self>,
        command: &Command,
        message: &InboundMessage,
        key: &str,
    ) -> anyhow::Result<String> {
        tracing::info!(channel = %message.channel, conversation = %key, ?command, "chat command");
        Ok(match command {
            Command::Help => help_text(),
            Command::Misused(how) => (*how).to_owned(),
            Command::Status => self.status_text(key)?,
            Command::Stop => self.stop_command(key)?,
            Command::New => {
                if self.is_active(key) {
                    "A task is running; /stop it first, then /new.".to_owned()
                } else {
                    self.store.set_session(key, None, None)?;
                    "🆕 Your next message starts a new agent session. The old one stays in /sessions."
                        .to_owned()
                }
            }
            Command::Sessions => self.sessions_text(key)?,
            Command::Resume(n) => self.resume(key, *n)?,
            Command::Model(name) => self.model_command(key, name.as_deref())?,
            Command::Approve(id) => {
                self.answer_by_text(message, key, id.as_deref(), true)
                    .await?
            }
            Command::Deny(id) => {
                self.answer_by_text(message, key, id.as_deref(), false)
                    .await?
            }
            Command::Usage => {
                let usage = self.store.usage(key)?;
                if usage.runs == 0 {
                    "No run in this conversation has reported its usage yet.".to_owned()
                } else {
                    format!(
                        "Last run: {} tokens ({} in, {} out).\nThis conversation: {} tokens ({} in, {} out) over {} runs.",
                        usage.last_total_tokens,
                        usage.last_prompt_tokens,
                        usage.last_completion_tokens,
                        usage.total_tokens,
                        usage.prompt_tokens,
                        usage.completion_tokens,
                        usage.runs
                    )
                }
            }
        })
    }

    fn status_text(&self, key: &str) -> anyhow::Result<String> {
        let mut lines = Vec::new();
        lines.push(match self.server_state() {
            Some((ServerHealth::Ok, _)) => "Agent server: reachable".to_owned(),
            Some((ServerHealth::Unreachable, detail)) => format!(
                "Agent server: unreachable{}",
                detail.map(|d| format!(" ({d})")).unwrap_or_default()
            ),
            Some((ServerHealth::Unauthorized, _)) => {
                "Agent server: refusing Switchboard's token".to_owned()
            }
            None => "Agent server: not checked yet".to_owned(),
        });
        let conversation = self.store.conversation(key)?;
        lines.push(
            match conversation.as_ref().and_then(|c| c.session_id.clone()) {
                Some(id) => format!(
                    "Session: {} ({id})",
                    conversation
                        .as_ref()
                        .and_then(|c| c.title.clone())
                        .unwrap_or_else(|| "untitled".into())
                ),
                None => "Session: none yet (your next message starts one)".to_owned(),
            },
        );
        lines.push(match self.active_since(key) {
            Some(since) => format!("Run: running for {}", for_how_long(now_ms() - since)),
            None => "Run: idle".to_owned(),
        });
        let queued = self.store.queued(key)?.len();
        if queued > 0 {
            lines.push(format!("Queued: {queued} message(s)"));
        }
        let waiting: Vec<String> = self
            .store
            .pending_approvals()?
            .into_iter()
            .filter(|a| a.routing_key == key)
            .map(|a| format!("{} [{}]", a.tool, short_id(&a.id)))
            .collect();
        if !waiting.is_empty() {
            lines.push(format!(
                "Waiting for approval: {} (/approve or /deny)",
                waiting.join(", ")
            ));
        }
        lines.push(format!("Model: {}", self.model_words(key)?));
        Ok(lines.join("\n"))
    }

    fn model_words(&self, key: &str) -> anyhow::Result<String> {
        if let Some(model) = self.store.conversation_model(key)? {
            return Ok(format!("{model} (set for this conversation)"));
        }
        let configured = self.config().gateway.model.clone();
        Ok(if configured.is_empty() {
            "the agent server's default".to_owned()
        } else {
            format!("{configured} (Switchboard's default)")
        })
    }

    fn stop_command(&self, key: &str) -> anyhow::Result<String> {
        let stopped = self.stop(key);
        let running = stopped.is_some();
        let dropped = self.store.drop_queued(
            key,
            super::DROPPED_BY_STOP,
            stopped.as_deref().unwrap_or_default(),
        )?;
        let dropped_words = match dropped {
            0 => String::new(),
            1 => " 1 queued message was dropped.".to_owned(),
            n => format!(" {n} queued messages were dropped."),
        };
        Ok(if running {
            format!("⏹ Stopping the current task; anything waiting for approval is rejected.{dropped_words}")
        } else if dropped > 0 {
            format!("Nothing was running.{dropped_words}")
        } else {
            "Nothing is running and nothing is queued.".to_owned()
        })
    }

    fn sessions_text(&self, key: &str) -> anyhow::Result<String> {
        let current = self.store.conversation(key)?.and_then(|c| c.session_id);
        let sessions = self.store.conversation_sessions(key)?;
        if sessions.is_empty() {
            return Ok("This conversation has no session yet.".to_owned());
        }
        let mut text = String::from("This conversation's sessions (newest first; /resume N):");
        for (i, s) in sessions.iter().take(SESSIONS_LISTED).enumerate() {
            let mark = if current.as_deref() == Some(&s.session_id) {
                " (current)"
            } else {
                ""
            };
            text.push_str(&format!(
                "\n{}. {} — {}{mark}",
                i + 1,
                s.title.as_deref().unwrap_or("untitled"),
                s.session_id
            ));
        }
        Ok(text)
    }

    fn resume(&self, key: &str, n: usize) -> anyhow::Result<String> {
        if self.is_active(key) {
            return Ok("A task is running; /stop it first, then /resume.".to_owned());
        }
        let sessions = self.store.conversation_sessions(key)?;
        let Some(session) = sessions.get(n - 1) else {
            return Ok(format!(
                "There is no session {n}; /sessions lists {} of them.",
                sessions.len()
            ));
        };
        self.store
            .set_session(key, Some(&session.session_id), session.title.as_deref())?;
        Ok(format!(
            "↩️ Back to session {n}: {}. Your next message continues it.",
            session.title.as_deref().unwrap_or("untitled")
        ))
    }

    fn model_command(&self, key: &str, name: Option<&str>) -> anyhow::Result<String> {
        let Some(name) = name else {
            return Ok(format!("Model: {}", self.model_words(key)?));
        };
        let name = name.trim();
        let valid = name.len() <= 200 && !name.chars().any(|c| c.is_whitespace() || c.is_control());
        if !valid {
            return Ok("A model name is one word, such as /model gpt-5 or /model default.".into());
        }
        if name.eq_ignore_ascii_case("default") {
            self.store.set_conversation_model(key, None)?;
            return Ok(format!(
                "This conversation uses {} again.",
                self.model_words(key)?
            ));
        }
        self.store.set_conversation_model(key, Some(name))?;
        Ok(format!(
            "This conversation's next runs use {name}. (/model default goes back.)"
        ))
    }

    /// `/approve` and `/deny`: the waiting call (the one with the short id, or the only one),
    /// answered with the same authority as its buttons.
    async fn answer_by_text(
        self: &Arc<Self>,
        message: &InboundMessage,
        key: &str,
        id: Option<&str>,
        approve: bool,
    ) -> anyhow::Result<String> {
        let waiting: Vec<_> = self
            .store
            .pending_approvals()?
            .into_iter()
            .filter(|a| a.routing_key == key)
            .collect();
        let chosen: Vec<_> = match id {
            Some(id) => {
                let id = id.trim().to_ascii_lowercase();
                waiting
                    .iter()
                    .filter(|a| short_id(&a.id) == id || a.id.eq_ignore_ascii_case(&id))
                    .collect()
            }
            None => waiting.iter().collect(),
        };
        let approval = match chosen.as_slice() {
            [one] => *one,
            [] if waiting.is_empty() => return Ok("Nothing here waits for approval.".to_owned()),
            [] => {
                return Ok(format!(
                    "No waiting call has that id; waiting: {}.",
                    ids(&waiting)
                ))
            }
            _ => {
                return Ok(format!(
                    "Several calls wait: {}. Say which, e.g. /approve {}.",
                    ids(&waiting),
                    short_id(&waiting[0].id)
                ))
            }
        };
        let choice = if approve {
            ChatChoice::Approve
        } else {
            ChatChoice::Reject
        };
        let outcome = DispatcherIntake(self.clone())
            .decide(&approval.id, choice, &message.peer, &message.channel)
            .await;
        Ok(outcome.text().to_owned())
    }
}

fn ids(approvals: &[crate::store::ApprovalRecord]) -> String {
    approvals
        .iter()
        .map(|a| format!("{} [{}]", a.tool, short_id(&a.id)))
        .collect::<Vec<_>>()
        .join(", ")
}
