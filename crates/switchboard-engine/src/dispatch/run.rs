//! A run from its POST to its delivered reply.
//!
//! [`Dispatcher::drive`] takes a stored run from wherever it stopped: `posting` (subscribe, then
//! post), `running` (follow its events) or `delivering` (send the rest of the reply). Following
//! is a loop over a closed set of inputs — a stream item, a control message, or one of the
//! timers (watchdog, approval review, approval expiry, typing, live-text flush) — where the pure
//! [`Progress`] says what each event means and this module does the I/O. Every way a run ends
//! closes its approvals on every surface with the real outcome.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::kept::KeptStream;
use super::post::Posted;
use super::progress::{Finish, Progress};
use super::{ActiveRun, Dispatcher, RunControl};
use crate::agent::Usage;
use crate::channels::Notice;
use crate::config::Streaming;
use crate::events::{EngineEvent, RunOutcome};
use crate::model::DeliveryTarget;
use crate::store::{JournalEntry, RunRecord, RunState};

/// Said in the chat when a run ends without any reply.
const NO_REPLY: &str = "⚠️ The agent stopped without replying. Send your message again to retry.";

/// How following a run ended.
pub(super) enum Followed {
    Ended {
        reply: String,
        outcome: RunOutcome,
        usage: Usage,
        /// The reply's start that went to the chat turn by turn.
        streamed: String,
        /// The message that showed the reply while it was written.
        preview: Option<String>,
        /// The session's event cursor after the run (last event id, server start time).
        cursor: Option<(i64, i64)>,
    },
    /// The engine is stopping; the run resumes after a restart.
    Stopping,
}

/// What of the final `reply` is not in the chat yet, when `streamed` (its start, turn by turn)
/// is: the rest after it; nothing when the reply is what was sent last (a server that gives only
/// the last turn's message); the whole reply when they do not match (better twice than lost).
pub(super) fn unsent_part(streamed: &str, reply: String) -> String {
    if streamed.trim().is_empty() {
        return reply;
    }
    if let Some(rest) = reply.strip_prefix(streamed) {
        return rest.trim_start().to_owned();
    }
    if streamed.trim_end().ends_with(reply.trim()) {
        return String::new();
    }
    reply
}

impl Dispatcher {
    /// A channel's `streaming` and `show_tools` settings; in-process channels have none (the
    /// whole reply at the end).
    pub(super) fn streaming_settings(&self, channel: &str) -> Option<(Streaming, bool)> {
        let config = self.config();
        let c = &config.channels;
        match channel {
            "telegram" => c.telegram.as_ref().map(|t| (t.streaming, t.show_tools)),
            "slack" => c.slack.as_ref().map(|s| (s.streaming, s.show_tools)),
            "discord" => c.discord.as_ref().map(|d| (d.streaming, d.show_tools)),
            // The window shows the reply as it is written, with the tools as tasks.
            crate::channels::desktop::DESKTOP => Some((Streaming::Auto, true)),
            _ => None,
        }
    }

    /// Takes a stored run from wherever it is to its delivered reply.
    /// `kept` is the conversation's event stream from its last run, if it is still open: the
    /// run uses it instead of subscribing anew, and leaves its own there when it ends.
    /// `rows` are the run's messages when it was just prepared from them (none for a run
    /// resumed after a restart).
    pub(super) async fn drive(
        self: &Arc<Self>,
        mut run: RunRecord,
        rows: Option<Vec<JournalEntry>>,
        kept: &mut Option<KeptStream>,
    ) -> anyhow::Result<()> {
        let (control_tx, mut control_rx) = mpsc::unbounded_channel();
        let live = Arc::new(Mutex::new(String::new()));
        let resumed = rows.is_none();
        // In flight from here, under the lock `/stop` takes too (see [`Dispatcher::stop`]): a
        // stop that came after a run just prepared was stored, before this, is seen now (one
        // before was seen by the commit that stored it). A block, not `drop`, ends the guard:
        // the future must stay `Send`.
        let stopped = {
            let preparing = self.preparing.lock().unwrap_or_else(|e| e.into_inner());
            let stopped = !resumed && preparing.get(&run.routing_key).is_some_and(|p| p.stopped);
            if !stopped {
                self.active
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        run.routing_key.clone(),
                        ActiveRun {
                            local_id: run.local_id.clone(),
                            journal_ids: run.journal_ids.clone(),
                            control: control_tx.clone(),
                            started_ms: crate::model::now_ms(),
                            live: live.clone(),
                            approvals: resumed,
                            rows: rows.map(Arc::from),
                        },
                    );
            }
            stopped
        };
        if stopped {
            return self.not_sent(&run);
        }
        let result = async {
            // A run left posting by a restart whose messages `/stop` dropped before it was in
            // flight is stopped now (posting, it asks the server whether its POST had gone
            // out); a stop from now on reaches it through `active`.
            if resumed
                && run.state == RunState::Posting
                && !self.store.run_messages_queued(&run.journal_ids)?
            {
                let _ = control_tx.send(RunControl::Cancel);
            }
            drop(control_tx);
            self.drive_inner(&mut run, &mut control_rx, live, kept, resumed)
                .await
        }
        .await;
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&run.routing_key);
        result
    }

    async fn drive_inner(
        self: &Arc<Self>,
        run: &mut RunRecord,
        control: &mut mpsc::UnboundedReceiver<RunControl>,
        live: Arc<Mutex<String>>,
        kept: &mut Option<KeptStream>,
        resumed: bool,
    ) -> anyhow::Result<()> {
        let followed = match run.state {
            RunState::Delivering => None,
            RunState::Posting => match self.post(run, kept.take(), control, resumed).await? {
                Posted::Following(stream, generation) => Some(
                    self.follow(run, Some((*stream, generation)), control, live, kept)
                        .await?,
                ),
                Posted::Adopted => Some(self.follow(run, None, control, live, kept).await?),
                Posted::Not => return Ok(()),
            },
            RunState::Running => Some(self.follow(run, None, control, live, kept).await?),
        };
        let (mut reply, outcome, usage, cursor) = match followed {
            Some(Followed::Stopping) => return Ok(()),
            Some(Followed::Ended {
                reply,
                outcome,
                usage,
                streamed,
                preview,
                cursor,
            }) => {
                run.streamed = streamed;
                run.preview = preview;
                (unsent_part(&run.streamed, reply), outcome, usage, cursor)
            }
            None => match run.reply.clone() {
                Some(reply) => (reply, RunOutcome::Completed, Usage::default(), None),
                None => return Ok(()),
            },
        };
        if run.state != RunState::Delivering {
            self.close_run_approvals(run, &format!("the run ended ({outcome})"));
            // Stored with the reply, so a delivery resumed after a restart shows it too.
            if self.config().gateway.usage_footer && usage.total_tokens > 0 {
                reply = format!("{reply}\n\n{}", crate::commands::usage_footer(&usage));
            }
            run.reply = Some(reply.clone());
            run.state = RunState::Delivering;
            let used = (usage != Usage::default()).then_some(usage);
            self.store.run_ended(run.clone(), used, cursor).await?;
            if let Some(server_run) = &run.server_run_id {
                self.emit(EngineEvent::RunFinished {
                    routing_key: run.routing_key.clone(),
                    run_id: server_run.clone(),
                    outcome,
                    usage,
                });
            }
        }
        self.deliver_reply(run, &reply, outcome != RunOutcome::Error)
            .await
    }

    /// The reply of a run that ended with a terminal event: its streamed text, else the latest
    /// assistant message.
    pub(super) async fn final_reply(
        &self,
        run: &RunRecord,
        progress: &Progress,
    ) -> (String, RunOutcome) {
        let outcome = match progress.finished() {
            Some(Finish::Cancelled) => RunOutcome::Cancelled,
            Some(Finish::Failed { error }) => return (format!("⚠️ {error}"), RunOutcome::Error),
            _ => RunOutcome::Completed,
        };
        if let Some(text) = progress.reply() {
            return (text.to_string(), outcome);
        }
        match self.client().latest_reply(&run.session_id).await {
            Ok(Some(text)) => (text, outcome),
            Ok(None) if outcome == RunOutcome::Cancelled => ("⚠️ Cancelled.".to_string(), outcome),
            Ok(None) => (NO_REPLY.to_string(), outcome),
            Err(e) => (
                format!("⚠️ The agent finished but its reply could not be read: {e}"),
                RunOutcome::Error,
            ),
        }
    }

    /// The reply of a run that ended without a terminal event.
    pub(super) async fn settled_reply(
        &self,
        run: &RunRecord,
        progress: &Progress,
    ) -> (String, RunOutcome) {
        match self.client().latest_reply(&run.session_id).await {
            Ok(Some(text)) => (text, RunOutcome::Settled),
            Ok(None) => match progress.reply() {
                Some(text) => (text.to_string(), RunOutcome::Settled),
                None => (NO_REPLY.to_string(), RunOutcome::Settled),
            },
            Err(e) => (
                format!("⚠️ The run ended without a reply and the session could not be read: {e}"),
                RunOutcome::Error,
            ),
        }
    }

    pub(super) fn journal_rows(&self, run: &RunRecord) -> Vec<JournalEntry> {
        if let Some(rows) = self.known_rows(run) {
            return rows.to_vec();
        }
        run.journal_ids
            .iter()
            .filter_map(|id| self.store.journal_entry(*id).ok().flatten())
            .collect()
    }

    /// Where the run's reply goes: the chat of its last message, else the conversation's.
    pub(super) fn reply_target(&self, run: &RunRecord) -> Option<(String, DeliveryTarget)> {
        self.reply_place(run)
            .map(|(channel, target, _)| (channel, target))
    }

    /// [`Dispatcher::reply_target`], with the person whose message the reply answers (none for
    /// a run started from the gateway API).
    pub(super) fn reply_place(
        &self,
        run: &RunRecord,
    ) -> Option<(String, DeliveryTarget, Option<String>)> {
        self.place_of(run, self.last_row(run))
    }

    /// The run's last message (the one its reply answers).
    pub(super) fn last_row(&self, run: &RunRecord) -> Option<JournalEntry> {
        match self.known_rows(run) {
            Some(rows) => rows.last().cloned(),
            None => run
                .journal_ids
                .last()
                .and_then(|id| self.store.journal_entry(*id).ok().flatten()),
        }
    }

    /// [`Dispatcher::reply_place`], given the run's last message (read already).
    pub(super) fn place_of(
        &self,
        run: &RunRecord,
        last: Option<JournalEntry>,
    ) -> Option<(String, DeliveryTarget, Option<String>)> {
        match last {
            // A message the person at the desktop wrote into a platform's conversation answers
            // nobody on that platform.
            Some(entry) if entry.peer.id == crate::channels::desktop::LOCAL_PEER_ID => {
                Some((entry.channel, entry.target, None))
            }
            Some(entry) => Some((entry.channel, entry.target, Some(entry.peer.id))),
            None => self
                .store
                .conversation(&run.routing_key)
                .ok()
                .flatten()
                .map(|c| (c.channel, c.target, None)),
        }
    }

    pub(super) async fn notice_run(&self, run: &RunRecord, notice: Notice) {
        if let Some((channel, target)) = self.reply_target(run) {
            if let Some(channel) = self.channel(&channel) {
                if let Err(e) = channel.notice(&target, notice).await {
                    tracing::debug!(error = %e, "notice not shown");
                }
            }
        }
    }
}
