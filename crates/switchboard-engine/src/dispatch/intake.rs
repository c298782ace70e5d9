//! Intake: what channels hand to the engine. A message passes the access gate and is journaled
//! before anything acts on it; a button click is checked (who may answer, from which chat) and
//! becomes an answer through [`Dispatcher::decide`].

use std::sync::Arc;

use async_trait::async_trait;

use super::Dispatcher;
use crate::access::{self, PairingRequest, PairingState, Verdict};
use crate::approvals::{Actor, ChatChoice, ChoiceOutcome, Surface};
use crate::channels::{Accepted, Intake, Notice};
use crate::config::Config;
use crate::events::EngineEvent;
use crate::model::{now_ms, InboundMessage, Peer};
use crate::routing::routing_key;
use crate::store::{ApprovalRecord, Resolution};

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
        if dispatcher.store.is_duplicate(&message.dedup_keys)? {
            tracing::debug!(channel = %message.channel, "duplicate message dropped");
            return Ok(Accepted::Duplicate);
        }
        match dispatcher.admit(&config, &message).await? {
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
        let accepted = dispatcher.store.accept(&message, &key, now_ms())?;
        let Accepted::New(journal_id) = accepted else {
            tracing::debug!(channel = %message.channel, "duplicate message dropped");
            return Ok(accepted);
        };
        let queued = dispatcher.is_active(&key);
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
            tokio::spawn(async move {
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

/// What the access gate says about a message.
enum Gate {
    /// It may reach the agent.
    Pass,
    /// A redelivery of a message already handled here (answered with a code, say).
    Duplicate,
    /// It does not reach the agent (dropped, or answered by the gate itself).
    Refused,
}

impl Dispatcher {
    /// Access control, before anything is stored: whether the message may reach the agent. A
    /// stranger's DM under the pairing policy is answered with a pairing code (the same code again
    /// for a repeated message, none when the channel has too many waiting); an owner's pairing
    /// command is carried out here. Nothing of a refused message reaches the agent server.
    ///
    /// Anything the gate does itself (a reply, an owner's command) happens once per platform
    /// message: its de-duplication keys are claimed first, so a redelivery does nothing.
    async fn admit(&self, config: &Config, message: &InboundMessage) -> anyhow::Result<Gate> {
        let policy = access::Policy::of(config, &message.channel);
        if policy.unrestricted {
            return Ok(Gate::Pass);
        }
        let peer = &message.peer;
        if message.chat.is_private_with(&peer.id) && policy.is_owner(&peer.id) {
            if let Some(command) = access::owner_command(&message.text) {
                if !self.claim(message)? {
                    return Ok(Gate::Duplicate);
                }
                let (state, code) = match command {
                    access::OwnerCommand::Admit(code) => (PairingState::Admitted, code),
                    access::OwnerCommand::Refuse(code) => (PairingState::Refused, code),
                };
                let reply =
                    match self.resolve_pairing(&message.channel, &code, state, peer.label())? {
                        Some(request) => format!("Done: {} is {state}.", request.peer_name),
                        None => format!(
                            "No pairing request with the code {code} is waiting on {}.",
                            message.channel
                        ),
                    };
                self.reply_direct(message, &reply).await;
                return Ok(Gate::Refused);
            }
        }
        let state = self.store.peer_state(&message.channel, &peer.id)?;
        match access::verdict(&policy, &message.chat, &peer.id, state) {
            Verdict::Admit => Ok(Gate::Pass),
            Verdict::Ignore(why) => {
                tracing::info!(channel = %message.channel, peer = %peer.id, why, "message not passed on");
                Ok(Gate::Refused)
            }
            Verdict::Pair => {
                if !self.claim(message)? {
                    return Ok(Gate::Duplicate);
                }
                let now = now_ms();
                if let Some(pending) =
                    self.store
                        .pending_pairing_for(&message.channel, &peer.id, now)?
                {
                    self.reply_direct(message, &access::pairing_reply(&pending.code))
                        .await;
                    return Ok(Gate::Refused);
                }
                let request = PairingRequest {
                    channel: message.channel.clone(),
                    peer_id: peer.id.clone(),
                    peer_name: peer.label().to_string(),
                    code: access::new_code(),
                    first_message: message.text.chars().take(500).collect(),
                    created_ms: now,
                    expires_ms: now + access::PAIRING_TTL_MS,
                    state: PairingState::Pending,
                };
                if self
                    .store
                    .insert_pairing(&request, access::MAX_PENDING_PER_CHANNEL)?
                {
                    tracing::info!(channel = %message.channel, peer = %peer.id, "pairing requested");
                    self.reply_direct(message, &access::pairing_reply(&request.code))
                        .await;
                    self.emit(EngineEvent::PairingRequested { request });
                } else {
                    tracing::warn!(channel = %message.channel, peer = %peer.id, "too many pairing requests waiting; no code given");
                }
                Ok(Gate::Refused)
            }
        }
    }

    /// Records a message's de-duplication keys for a message the gate handles itself; false when
    /// they were seen already (a redelivery).
    fn claim(&self, message: &InboundMessage) -> anyhow::Result<bool> {
        self.store.claim_keys(&message.dedup_keys, now_ms())
    }

    /// Admits or refuses a pending pairing code; `None` when no such code waits.
    pub(crate) fn resolve_pairing(
        &self,
        channel: &str,
        code: &str,
        state: PairingState,
        decided_by: &str,
    ) -> anyhow::Result<Option<PairingRequest>> {
        let code = access::normalise_code(code);
        let resolved = self
            .store
            .resolve_pairing(channel, &code, state, decided_by, now_ms())?;
        if let Some(request) = &resolved {
            tracing::info!(%channel, peer = %request.peer_id, %state, "pairing resolved");
            self.emit(EngineEvent::PairingResolved {
                request: request.clone(),
                decided_by: decided_by.to_string(),
            });
        }
        Ok(resolved)
    }

    /// Answers a message directly in its chat (not through the agent).
    async fn reply_direct(&self, message: &InboundMessage, text: &str) {
        if let Some(channel) = self.channel(&message.channel) {
            if let Err(e) = channel.send(&message.target, text).await {
                tracing::warn!(channel = %message.channel, error = %e, "cannot answer in the chat");
            }
        }
    }
}
