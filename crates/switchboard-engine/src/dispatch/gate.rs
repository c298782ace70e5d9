//! The access gate: whether a message may reach the agent, the pairing codes strangers get, and
//! the owners' pairing commands. What the gate says itself goes out through a task of its own
//! ([`Dispatcher::answer_directly`]), so a receive loop never waits on a platform's pacing: a
//! stranger's hundred messages cost a hundred lookups, not a hundred paced sends.

use std::sync::{Arc, Weak};

use tokio::sync::{mpsc, Semaphore};

use super::Dispatcher;
use crate::access::{self, PairingRequest, PairingState, PairingStep, Verdict};
use crate::config::Config;
use crate::events::EngineEvent;
use crate::model::{now_ms, DeliveryTarget, InboundMessage};

/// How many of the gate's answers may wait to be sent; past it they are dropped (and logged), so
/// a flood never grows memory.
pub(super) const ANSWER_QUEUE: usize = 256;
/// How many of the gate's answers are sent at once (each is paced by its platform).
const ANSWERS_IN_FLIGHT: usize = 8;

/// One answer of the gate: a pairing code, a "try again later", the result of an owner's command.
pub(super) struct GateAnswer {
    channel: String,
    target: DeliveryTarget,
    text: String,
}

/// What the access gate says about a message.
pub(super) enum Gate {
    /// It may reach the agent.
    Pass,
    /// A redelivery of a message already handled here (answered with a code, say).
    Duplicate,
    /// It does not reach the agent (dropped, or answered by the gate itself).
    Refused,
}

/// Sends the gate's answers until the dispatcher is gone. Each answer is its own task (at most
/// [`ANSWERS_IN_FLIGHT`] at once), so one chat's pacing does not hold up another's code.
pub(super) async fn send_answers(
    dispatcher: Weak<Dispatcher>,
    mut queue: mpsc::Receiver<GateAnswer>,
) {
    let in_flight = Arc::new(Semaphore::new(ANSWERS_IN_FLIGHT));
    while let Some(answer) = queue.recv().await {
        let Some(channel) = dispatcher
            .upgrade()
            .and_then(|d| d.channel(&answer.channel))
        else {
            continue;
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        tokio::spawn(async move {
            if let Err(e) = channel.send(&answer.target, &answer.text).await {
                tracing::warn!(channel = %answer.channel, error = %e, "cannot answer in the chat");
            }
            drop(permit);
        });
    }
}

impl Dispatcher {
    /// Access control, before anything is stored: whether the message may reach the agent. A
    /// stranger's DM under the pairing policy is answered with a pairing code, once per code (a
    /// repeated message gets nothing more), within the limits of [`access::PairingLimiter`]; an
    /// owner's pairing command is carried out here. Nothing of a refused message reaches the agent
    /// server.
    ///
    /// Anything the gate does itself (a reply, an owner's command) happens once per platform
    /// message: its de-duplication keys are claimed first, so a redelivery does nothing.
    pub(super) fn admit(&self, config: &Config, message: &InboundMessage) -> anyhow::Result<Gate> {
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
                self.answer_directly(message, reply);
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
                self.pair(message)?;
                Ok(Gate::Refused)
            }
        }
    }

    /// A stranger's direct message under the pairing policy: a code, unless one already waits
    /// for them (they were told it) or the limits say otherwise.
    fn pair(&self, message: &InboundMessage) -> anyhow::Result<()> {
        let (channel, peer) = (&message.channel, &message.peer);
        let now = now_ms();
        if self
            .store
            .pending_pairing_for(channel, &peer.id, now)?
            .is_some()
        {
            tracing::debug!(%channel, peer = %peer.id, "a stranger with a waiting code wrote again");
            return Ok(());
        }
        let step = self
            .pairing_limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .step(channel, &peer.id, now);
        match step {
            PairingStep::Silent(why) => {
                tracing::info!(%channel, peer = %peer.id, why, "a stranger was not answered");
            }
            PairingStep::TryLater => {
                tracing::warn!(%channel, peer = %peer.id, "too many pairing codes given lately; the stranger was asked to try later");
                self.answer_directly(message, access::TRY_LATER_REPLY.to_string());
            }
            PairingStep::Issue => {
                let request = PairingRequest {
                    channel: channel.clone(),
                    peer_id: peer.id.clone(),
                    peer_name: peer.label().to_string(),
                    code: access::new_code(),
                    first_message: message.text.chars().take(500).collect(),
                    created_ms: now,
                    expires_ms: now + access::PAIRING_TTL_MS,
                    state: PairingState::Pending,
                };
                let evicted = self
                    .store
                    .insert_pairing(&request, access::MAX_PENDING_PER_CHANNEL)?;
                tracing::info!(%channel, peer = %peer.id, "pairing requested");
                self.answer_directly(message, access::pairing_reply(&request.code));
                for old in evicted {
                    tracing::info!(%channel, peer = %old.peer_id, "the oldest pairing request stopped waiting for a newer one");
                    self.emit(EngineEvent::PairingResolved {
                        request: old,
                        decided_by: String::new(),
                    });
                }
                self.emit(EngineEvent::PairingRequested { request });
            }
        }
        Ok(())
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

    /// Answers a message in its chat, not through the agent and without waiting: the answer is
    /// queued for the gate's sender (and dropped, with a warning, when that queue is full).
    fn answer_directly(&self, message: &InboundMessage, text: String) {
        let answer = GateAnswer {
            channel: message.channel.clone(),
            target: message.target.clone(),
            text,
        };
        if self.gate_answers.try_send(answer).is_err() {
            tracing::warn!(channel = %message.channel, "too many answers of the access gate waiting; one was dropped");
        }
    }
}
