//! Approvals in a run's life: what the policy decides by itself, what waits for a person, the one
//! path every answer takes (window, notification, chat button, chat command), and closing an
//! approval on every surface when its call or its run is dealt with.
//!
//! The server's `tools/pending` is the truth about what waits. A review reads it and acts: calls
//! the server dealt with lose their prompts, answers given are sent, new calls are decided by the
//! policy or shown to a person. A review that fails for any reason is retried on a backoff by the
//! run, so a lost event, a failed read or a failed decision never leaves a run waiting for ever.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::progress::{CallState, Progress};
use super::{Dispatcher, RunControl};
use crate::agent::{ProposedToolCall, ToolDecision};
use crate::approvals::policy::Policy;
use crate::approvals::{Actor, Answer, ApprovalPrompt, ApprovalState, Preview, Surface};
use crate::config::Config;
use crate::events::EngineEvent;
use crate::model::{now_ms, DeliveryTarget};
use crate::store::{ApprovalRecord, DecisionRecord, Resolution, RunRecord};

impl Dispatcher {
    /// Looks at what the server says waits for a decision and acts on it. Returns whether a call
    /// now waits for a person.
    pub(super) async fn review(
        self: &Arc<Self>,
        run: &RunRecord,
        server_run: &str,
        progress: &mut Progress,
    ) -> anyhow::Result<bool> {
        let listed = self.client().pending_tools(&run.session_id).await?;
        let pending = if listed.run_id.as_deref() == Some(server_run) {
            listed.tool_calls
        } else {
            Vec::new()
        };
        // Approvals whose call the server no longer waits for.
        for approval in self.store.open_approvals(&run.local_id)? {
            if pending.iter().any(|c| c.id == approval.tool_call_id) {
                continue;
            }
            if !approval.state.is_pending() {
                // Answered: the server took the answer (or moved past the call) either way.
                self.store
                    .confirm_approvals(std::slice::from_ref(&approval.id), now_ms())?;
                continue;
            }
            let note = match progress.call(&approval.tool_call_id).map(|c| c.state) {
                Some(CallState::Running | CallState::Done { .. }) => {
                    "it ran: approved by another client or by the agent server"
                }
                Some(CallState::Rejected) => "rejected by another client or by the agent server",
                _ => "the agent no longer waits for it",
            };
            self.close(&approval.id, note);
        }
        // What waits now, in the order the server runs it.
        let waiting: Vec<&ProposedToolCall> = pending
            .iter()
            .filter(|c| !progress.is_handled(&c.id) && !progress.is_decided(&c.id))
            .collect();
        // A call the server approves itself is listed as waiting until its turn comes, and
        // deciding it errors the run. So only the first waiting call is decided, with the ones
        // after it whose tool is known to need a decision; the rest are looked at again once the
        // first has run.
        let chosen: Vec<&ProposedToolCall> = waiting
            .iter()
            .enumerate()
            .take_while(|(index, call)| *index == 0 || self.needs_decision(&call.name))
            .map(|(_, call)| *call)
            .collect();
        if let Some(head) = chosen.first() {
            self.learn_needs_decision(&head.name);
        }
        let config = self.config();
        let channel = self
            .reply_target(run)
            .map(|(channel, _)| channel)
            .unwrap_or_default();
        let rules = self.store.rules()?;
        let grants = self.store.grants(&run.routing_key, &run.session_id)?;
        let policy = Policy {
            mode: config.gateway.approval_mode,
            allowlist: &config.gateway.approval_allowlist,
            rules: &rules,
            grants: &grants,
            channel: &channel,
        };
        let mut decisions: Vec<(String, ToolDecision)> = Vec::new();
        let mut answered: Vec<String> = Vec::new();
        let mut by_policy: Vec<(&ProposedToolCall, ToolDecision)> = Vec::new();
        let mut waiting_for_person = false;
        for call in chosen {
            match self.store.approval_for_call(server_run, &call.id)? {
                Some(approval) => match approval.state {
                    ApprovalState::Pending => waiting_for_person = true,
                    ApprovalState::Accepted => {
                        decisions.push((call.id.clone(), ToolDecision::Accept));
                        answered.push(approval.id);
                    }
                    ApprovalState::Rejected | ApprovalState::Expired => {
                        decisions.push((call.id.clone(), ToolDecision::Reject));
                        answered.push(approval.id);
                    }
                    // Closed: it stopped waiting once; nothing of it is sent again.
                    ApprovalState::Closed => {}
                },
                None => match policy.decide(call) {
                    Some(decision) => {
                        decisions.push((call.id.clone(), decision));
                        by_policy.push((call, decision));
                    }
                    None => {
                        self.request_approval(run, server_run, call, &config)?;
                        waiting_for_person = true;
                    }
                },
            }
        }
        if decisions.is_empty() {
            return Ok(waiting_for_person);
        }
        let key = format!(
            "decide:{server_run}:{}",
            decisions
                .iter()
                .map(|(id, d)| format!("{id}={}", d.as_str()))
                .collect::<Vec<_>>()
                .join(",")
        );
        // Until the server accepts them the answers stay open (and expirable): a failure here is
        // retried by the next review.
        self.client()
            .decide(&run.session_id, server_run, &decisions, &key)
            .await?;
        let now = now_ms();
        for (id, decision) in &decisions {
            progress.mark_decided(id, *decision);
        }
        self.store.confirm_approvals(&answered, now)?;
        for (call, decision) in by_policy {
            self.store.log_decision(&DecisionRecord {
                at_ms: now,
                session_id: run.session_id.clone(),
                run_id: server_run.to_string(),
                tool_call_id: call.id.clone(),
                tool: call.name.clone(),
                action: if decision == ToolDecision::Accept {
                    ApprovalState::Accepted
                } else {
                    ApprovalState::Rejected
                },
                decided_by: format!("policy:{}", config.gateway.approval_mode),
                decided_by_id: None,
                surface: Surface::Engine,
                channel: channel.clone(),
                note: None,
            })?;
        }
        Ok(waiting_for_person)
    }

    /// Files a call as waiting for a person and shows it everywhere: the host's event (window,
    /// notification) and the chat it came from.
    fn request_approval(
        &self,
        run: &RunRecord,
        server_run: &str,
        call: &ProposedToolCall,
        config: &Config,
    ) -> anyhow::Result<()> {
        let (requester, requester_id, channel, target) = match self.last_row(run) {
            Some(entry) => (
                entry.peer.label().to_string(),
                entry.peer.id.clone(),
                entry.channel,
                entry.target,
            ),
            None => (
                "unknown".to_string(),
                String::new(),
                String::new(),
                DeliveryTarget::chat(""),
            ),
        };
        let now = now_ms();
        let timeout = self.options.approval_timeout.map_or(
            config.gateway.approval_timeout_minutes as i64 * 60_000,
            |d| d.as_millis() as i64,
        );
        let approval = ApprovalRecord {
            id: uuid::Uuid::new_v4().to_string(),
            run_local_id: run.local_id.clone(),
            routing_key: run.routing_key.clone(),
            session_id: run.session_id.clone(),
            server_run_id: server_run.to_string(),
            tool_call_id: call.id.clone(),
            tool: call.name.clone(),
            arguments: call.arguments.clone(),
            requester: requester.clone(),
            requester_id,
            channel,
            target,
            chat_message_id: None,
            created_ms: now,
            deadline_ms: now + timeout,
            state: ApprovalState::Pending,
            decided_by: None,
            decided_by_id: None,
            surface: None,
            decided_ms: None,
            confirmed_ms: None,
            note: None,
        };
        self.files_approval(run);
        if !self.store.insert_approval(&approval)? {
            return Ok(());
        }
        tracing::info!(conversation = %run.routing_key, tool = %call.name, "tool call waits for approval");
        let preview = Preview::of(&call.name, &call.arguments);
        self.emit(EngineEvent::ApprovalRequested {
            approval_id: approval.id.clone(),
            routing_key: run.routing_key.clone(),
            tool: call.name.clone(),
            arguments: call.arguments.clone(),
            summary: preview.summary.clone(),
            detail: preview.detail.clone(),
            complete: preview.complete,
            requester: requester.clone(),
            deadline_ms: approval.deadline_ms,
        });
        let prompt = ApprovalPrompt {
            approval_id: approval.id.clone(),
            tool: call.name.clone(),
            summary: preview.summary,
            arguments: preview.detail,
            requester,
            expires_in_minutes: (timeout / 60_000).max(1) as u64,
        };
        self.post_prompt(approval, prompt);
        Ok(())
    }

    /// Shows an approval in the chat it came from, with buttons where the platform has them.
    fn post_prompt(&self, approval: ApprovalRecord, prompt: ApprovalPrompt) {
        let Some(channel) = self.channel(&approval.channel) else {
            return;
        };
        let store = self.store.clone();
        self.spawn(async move {
            let posted = match channel.post_approval(&approval.target, &prompt).await {
                Ok(Some(message)) => Some(message),
                Ok(None) => {
                    let text = format!(
                        "{}\nApprove or reject it in the Switchboard window.",
                        prompt.text()
                    );
                    if let Err(e) = channel.send(&approval.target, &text).await {
                        tracing::warn!(error = %e, "cannot show the approval in the chat");
                    }
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot show the approval in the chat");
                    None
                }
            };
            let Some(message) = posted else { return };
            if let Err(e) = store.set_approval_message(&approval.id, &message.id) {
                tracing::warn!(error = %e, "cannot remember the approval's chat message");
            }
            // Decided while the prompt was on its way: close it now.
            if let Ok(Some(now)) = store.approval(&approval.id) {
                if !now.state.is_pending() {
                    let _ = channel
                        .close_approval(&now.target, &message.id, &now.outcome_line())
                        .await;
                }
            }
        });
    }

    /// Records a person's answer from any surface — the one path every answer takes: first answer
    /// wins and only before the deadline, the audit log records it, its scope is applied (a grant
    /// for this conversation, or a rule), every surface is updated, and the run sends it.
    ///
    /// Who may answer is checked by the caller (a chat checks requester and owners; the desktop is
    /// its owner's).
    pub(crate) fn decide(
        &self,
        approval_id: &str,
        answer: &Answer,
        actor: &Actor,
        surface: Surface,
    ) -> anyhow::Result<Resolution> {
        let note = match answer {
            Answer::AllowConversation => Some("allowed in this conversation from now on"),
            Answer::AllowAlways { global: true, .. } => Some("always allowed"),
            Answer::AllowAlways { global: false, .. } => Some("always allowed in this channel"),
            Answer::AllowOnce | Answer::Reject => None,
        };
        let resolution = self.store.resolve_approval(
            approval_id,
            answer.state(),
            actor,
            surface,
            note,
            now_ms(),
        )?;
        if let Resolution::Decided(approval) = &resolution {
            tracing::info!(tool = %approval.tool, state = %approval.state, %surface, "approval decided");
            match answer {
                Answer::AllowConversation => self.store.add_grant(
                    &approval.routing_key,
                    &approval.session_id,
                    &approval.tool,
                    &actor.name,
                )?,
                Answer::AllowAlways { pattern, global } => {
                    let channel = (!global).then_some(approval.channel.as_str());
                    self.store.add_rule(
                        &approval.tool,
                        pattern.as_deref().filter(|p| !p.trim().is_empty()),
                        channel,
                        &actor.name,
                    )?;
                }
                Answer::AllowOnce | Answer::Reject => {}
            }
            self.resolved(approval);
            // The run sends it now if it is following its events; otherwise it finds it in the
            // store when it resumes.
            self.control_run(&approval.run_local_id, RunControl::Review);
        }
        Ok(resolution)
    }

    /// Tells everyone how an approval ended: the host (event) and the chat (its prompt updated).
    pub(crate) fn resolved(&self, approval: &ApprovalRecord) {
        let line = approval.outcome_line();
        self.emit(EngineEvent::ApprovalResolved {
            approval_id: approval.id.clone(),
            action: approval.state,
            decided_by: approval.decided_by.clone().unwrap_or_default(),
            surface: approval.surface.unwrap_or(Surface::Engine),
            line: line.clone(),
        });
        let (Some(message_id), Some(channel)) = (
            approval.chat_message_id.clone(),
            self.channel(&approval.channel),
        ) else {
            return;
        };
        let target = approval.target.clone();
        self.spawn(async move {
            if let Err(e) = channel.close_approval(&target, &message_id, &line).await {
                tracing::debug!(error = %e, "cannot update the approval's chat message");
            }
        });
    }

    /// Closes an open approval, saying why, on every surface.
    fn close(&self, approval_id: &str, note: &str) {
        match self.store.close_approval(approval_id, note, now_ms()) {
            Ok(Some(closed)) => {
                tracing::info!(tool = %closed.tool, note, "approval closed");
                self.resolved(&closed);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot close an approval"),
        }
    }

    /// The server started, finished or rejected a call: a prompt still waiting for it closes,
    /// and an answer from here that it took is confirmed.
    pub(super) fn call_dealt_with(&self, server_run: &str, call_id: &str, note: &str) {
        let Ok(Some(approval)) = self.store.approval_for_call(server_run, call_id) else {
            return;
        };
        if approval.state.is_pending() {
            self.close(&approval.id, note);
        } else if approval.is_open() {
            if let Err(e) = self.store.confirm_approvals(&[approval.id], now_ms()) {
                tracing::warn!(error = %e, "cannot confirm an approval");
            }
        }
    }

    /// Closes every open approval of a run that ended.
    pub(super) fn close_run_approvals(&self, run: &RunRecord, note: &str) {
        if !self.may_have_approvals(run) {
            return;
        }
        for approval in self.store.open_approvals(&run.local_id).unwrap_or_default() {
            self.close(&approval.id, note);
        }
    }

    /// Closes open approvals whose run is gone (it ended while the engine was down), prompts
    /// included.
    pub(crate) fn close_orphan_approvals(&self) -> anyhow::Result<()> {
        let runs: std::collections::HashSet<String> = self
            .store
            .unfinished_runs()?
            .into_iter()
            .map(|r| r.local_id)
            .collect();
        for approval in self.store.all_open_approvals()? {
            if !runs.contains(&approval.run_local_id) {
                self.close(
                    &approval.id,
                    "the run ended while Switchboard was not running",
                );
            }
        }
        Ok(())
    }

    /// The deadline of the run's earliest approval that can still expire.
    pub(super) fn next_expiry(&self, run: &RunRecord) -> Option<Instant> {
        if !self.may_have_approvals(run) {
            return None;
        }
        let earliest = self
            .store
            .open_approvals(&run.local_id)
            .ok()?
            .iter()
            .filter(|a| a.state != ApprovalState::Expired)
            .map(|a| a.deadline_ms)
            .min()?;
        let wait = (earliest - now_ms()).max(0) as u64;
        Some(Instant::now() + Duration::from_millis(wait))
    }

    /// Expires the run's approvals whose deadline passed and says so in their chats; the next
    /// review rejects them on the server.
    pub(super) async fn expire_approvals(&self, run: &RunRecord) {
        let expired = match self.store.expire_due(&run.local_id, now_ms()) {
            Ok(expired) => expired,
            Err(e) => {
                tracing::warn!(error = %e, "cannot expire approvals");
                return;
            }
        };
        for a in expired {
            self.resolved(&a);
            let Some(channel) = self.channel(&a.channel) else {
                continue;
            };
            let waited = a.deadline_ms - a.created_ms;
            let minutes = (waited + 59_999) / 60_000;
            let unit = if minutes == 1 { "minute" } else { "minutes" };
            let text = format!(
                "⏱ Nobody approved `{}` within {minutes} {unit}, so it was rejected. Send your message again to retry.",
                a.tool
            );
            if let Err(e) = channel.send(&a.target, &text).await {
                tracing::warn!(error = %e, "cannot announce the expired approval");
            }
        }
    }

    /// Cancels the run on the server and rejects its waiting calls (the server keeps a run that
    /// waits for approval waiting after a cancel), then closes its approvals.
    pub(super) async fn cancel_run(&self, run: &RunRecord, server_run: &str, progress: &Progress) {
        let client = self.client();
        let key = format!("cancel:{server_run}");
        if let Err(e) = client.cancel(&run.session_id, server_run, &key).await {
            tracing::info!(error = %e, "cancel not accepted");
        }
        if let Ok(pending) = client.pending_tools(&run.session_id).await {
            if pending.run_id.as_deref() == Some(server_run) {
                let still: Vec<(String, ToolDecision)> = pending
                    .tool_calls
                    .iter()
                    .filter(|c| !progress.is_handled(&c.id) && !progress.is_decided(&c.id))
                    .map(|c| (c.id.clone(), ToolDecision::Reject))
                    .collect();
                if !still.is_empty() {
                    if let Err(e) = client
                        .decide(
                            &run.session_id,
                            server_run,
                            &still,
                            &format!("cancel-reject:{server_run}"),
                        )
                        .await
                    {
                        tracing::info!(error = %e, "the waiting calls of a cancelled run were not rejected");
                    }
                }
            }
        }
        self.close_run_approvals(run, "the run was cancelled");
    }
}
