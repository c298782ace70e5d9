//! Intake: what channels hand to the engine. A message passes the access gate, then is either a
//! chat command (carried out beside the receive path, never journaled) or journaled before
//! anything acts on it; a button click is checked (who may answer, from which chat) and becomes
//! an answer through [`Dispatcher::decide`].

use std::sync::Arc;

use async_trait::async_trait;

use super::gate::Gate;
use super::Dispatcher;
use crate::access;
use crate::approvals::{Actor, ChatChoice, ChoiceOutcome, Surface};
use crate::channels::{Accepted, Intake, Notice};
use crate::commands;
use crate::events::EngineEvent;
use crate::model::{now_ms, InboundMessage, Peer};
use crate::routing::routing_key;
use crate::store::{ApprovalRecord, Resolution};

/// How long a message that came while its conversation was busy waits before the chat is told
/// it is queued (see [`DispatcherIntake::take`]).
const QUEUED_NOTICE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The dispatcher's intake, as channels see it.
pub(crate) struct DispatcherIntake(pub(crate) Arc<Dispatcher>);

/// Said when a message queues behind a tool call that waits for approval.
pub(crate) fn approval_reminder(tool: &str) -> String {
    format!(
        "⏳ Queued. The agent is waiting for your approval to run `{tool}`; approve or reject it first, and I'll answer this after."
    )
}

/// Says who decided an approval first, and where.
fn already_line(approval: &ApprovalRecord) -> String {
    format!("Already decided: {}", approval.outcome_line())
}

#[async_trait]
impl Intake for DispatcherIntake {
    async fn decide(
        &self,
        approval_id: &str,
        choice: ChatChoice,
        clicker: &Peer,
        surface: &str,
    ) -> ChoiceOutcome {
        let dispatcher = &self.0;
        let approval = match dispatcher.store.approval(approval_id) {
            // A button only decides the approval shown in its own channel.
            Ok(Some(a)) if a.channel == surface => a,
            Ok(Some(_)) => {
                return ChoiceOutcome::NotFound("This request is not from this chat.".into())
            }
            Ok(None) => {
                return ChoiceOutcome::NotFound("This request is no longer pending.".into())
            }
            Err(e) => return ChoiceOutcome::NotFound(format!("Cannot read the request: {e}")),
        };
        let config = dispatcher.config();
        let policy = access::Policy::of(&config, surface);
        let is_owner = policy.owners.contains(&clicker.id);
        // An in-process channel (the desktop's, a test's) is reachable only from this machine.
        let in_process = policy.unrestricted;
        let is_requester = clicker.id == approval.requester_id;
        // Only the person who asked, or an owner, decides what runs on the user's machine.
        if !is_requester && !is_owner {
            tracing::info!(clicker = %clicker.id, tool = %approval.tool, "refused an approval click from someone else");
            return ChoiceOutcome::NotAllowed(format!(
                "Sorry, only {} or an owner of this bot can decide this request.",
                approval.requester
            ));
        }
        // Asking is not allowing: where approving is the owners' (`approvers`), the person who
        // asked may still reject their own request, but not run it.
        if !is_owner
            && !in_process
            && choice != ChatChoice::Reject
            && !policy.requester_may_approve()
        {
            tracing::info!(clicker = %clicker.id, tool = %approval.tool, "refused a self-approval by someone who is not an owner");
            return ChoiceOutcome::NotAllowed(
                "Only an owner of this bot can approve this request. Ask one, or approve it in \
                 Switchboard on the desktop."
                    .into(),
            );
        }
        // A rule outlives the conversation: only an owner makes one from a chat; in process, the
        // person who asked may.
        if choice == ChatChoice::AlwaysAllow && !is_owner && !in_process {
            return ChoiceOutcome::NotAllowed(
                "Only an owner of this bot can always allow a tool. Use Approve, or Allow in this chat."
                    .into(),
            );
        }
        if !approval.state.is_pending() {
            return ChoiceOutcome::AlreadyDecided(already_line(&approval));
        }
        let actor = Actor::peer(clicker);
        match dispatcher.decide(approval_id, &choice.answer(), &actor, Surface::Chat) {
            Ok(Resolution::Decided(decided)) => ChoiceOutcome::Decided(decided.outcome_line()),
            Ok(Resolution::AlreadyDecided(other)) => {
                ChoiceOutcome::AlreadyDecided(already_line(&other))
            }
            Ok(Resolution::TooLate(_)) => {
                ChoiceOutcome::NotFound("Too late: this request expired and was rejected.".into())
            }
            Ok(Resolution::NotFound) => {
                ChoiceOutcome::NotFound("This request is no longer pending.".into())
            }
            Err(e) => ChoiceOutcome::NotFound(format!("Cannot record the decision: {e}")),
        }
    }

    async fn accept(&self, message: InboundMessage) -> anyhow::Result<Accepted> {
        let dispatcher = &self.0;
        let config = dispatcher.config();
        // A redelivery is found out where it would act: the gate claims a message's keys before
        // anything it does itself, and a command's keys are claimed, and a message journaled,
        // each in one transaction with the check.
        match dispatcher.admit(&config, &message)? {
            Gate::Pass => {}
            Gate::Duplicate => return Ok(Accepted::Duplicate),
            Gate::Refused => return Ok(Accepted::Refused),
        }
        let key = routing_key(
            &config.routing,
            &message.channel,
            &message.peer,
            &message.chat,
        );
        self.take(message, key).await
    }
}

impl DispatcherIntake {
    /// A message from the person at this machine (the desktop chat, a reply typed into a
    /// notification) into the conversation `key`. They own the machine and the agent, so no
    /// access gate applies; everything else is as for a chat message: commands, the journal
    /// (a repeated `dedup_keys` is one message), the queue.
    pub(crate) async fn accept_local(
        &self,
        message: InboundMessage,
        key: String,
    ) -> anyhow::Result<Accepted> {
        self.take(message, key).await
    }

    /// A message past the gate: a command is carried out, anything else journaled and queued.
    async fn take(&self, message: InboundMessage, key: String) -> anyhow::Result<Accepted> {
        let dispatcher = &self.0;
        let bot = dispatcher
            .board
            .get(&message.channel)
            .and_then(|s| s.identity)
            .map(|i| i.name.trim_start_matches('@').to_owned());
        if let Some(command) = commands::parse(&message.text, bot.as_deref()) {
            // Handled once per platform message, beside the receive path.
            if !dispatcher.store.claim_keys(&message.dedup_keys, now_ms())? {
                return Ok(Accepted::Duplicate);
            }
            dispatcher
                .store
                .ensure_conversation(&message, &key, now_ms())?;
            let d = dispatcher.clone();
            tokio::spawn(async move { d.run_command(command, message, key).await });
            return Ok(Accepted::Command);
        }
        let accepted = dispatcher
            .store
            .accept_grouped(message.clone(), key.clone(), now_ms())
            .await?;
        let Accepted::New(journal_id) = accepted else {
            tracing::debug!(channel = %message.channel, "duplicate message dropped");
            return Ok(accepted);
        };
        let queued = dispatcher.waits_behind(&key, journal_id);
        tracing::info!(channel = %message.channel, conversation = %key, journal = journal_id, queued, "message accepted");
        dispatcher.emit(EngineEvent::InboundAccepted {
            journal_id,
            channel: message.channel.clone(),
            routing_key: key.clone(),
            peer: message.peer.label().to_string(),
            queued,
        });
        if let Some(channel) = dispatcher.channel(&message.channel) {
            let target = message.target.clone();
            // Typing from the moment the message is in, queued or not (the run keeps it up once
            // it starts), unless the conversation waits for a person.
            // A message behind a call that waits for approval does not answer it: say so, so the
            // person knows what holds the conversation up.
            let waiting_tool = if queued {
                dispatcher
                    .store
                    .pending_approvals()?
                    .into_iter()
                    .find(|a| a.routing_key == key)
                    .map(|a| a.tool)
            } else {
                None
            };
            if waiting_tool.is_none() {
                dispatcher.typing(&channel, &target);
            }
            let d = dispatcher.clone();
            let key = key.clone();
            tokio::spawn(async move {
                // A run that is ending when the message comes (its reply in the chat, its end
                // being recorded) takes the message a moment later: "queued" only when it still
                // waits after a moment.
                let queued = queued
                    && (waiting_tool.is_some() || {
                        tokio::time::sleep(QUEUED_NOTICE_AFTER).await;
                        d.waits_behind(&key, journal_id)
                    });
                let shown = match waiting_tool {
                    Some(tool) => channel
                        .send(&target, &approval_reminder(&tool))
                        .await
                        .map(|_| ()),
                    None => {
                        let notice = if queued {
                            Notice::Queued
                        } else {
                            Notice::Received
                        };
                        channel.notice(&target, notice).await
                    }
                };
                if let Err(e) = shown {
                    tracing::debug!(error = %e, "notice not shown");
                }
            });
        }
        dispatcher.wake(&key);
        Ok(accepted)
    }
}
