//! A run: one tokio task per run, following the scripted model, writing events in the order the real
//! server does (see the captures of `stakpak-transcripts/`).

use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;
use uuid::Uuid;

use super::script::{self, AutoApprove, Script, ToolRequest};
use super::sse::StreamItem;
use super::state::{ActiveRun, Decision, RoundCall, RunState, Session, Shared, State, ToolRound};
use super::wire::{
    EventPayload, Message, MessageContent, Part, ProposedToolCall, TotalUsage, Usage,
};
use super::RunEnd;

/// How long the fake really waits between scripted retries (it reports the real server's delays).
const RETRY_PAUSE: Duration = Duration::from_millis(20);
const REJECTED_REASON: &str = "Tool call rejected by user";
const CANCELLED_RESULT: &str = "TOOL_CALL_CANCELLED";

/// Starts a run on a session that has none: stores the user message, marks the run `starting` and
/// spawns its task. The caller holds the state lock, so the task cannot act before this returns.
pub(crate) fn start(
    shared: &Arc<Shared>,
    st: &mut State,
    session_id: Uuid,
    text: String,
    script: Script,
    auto: AutoApprove,
) -> Option<Uuid> {
    let session = st.sessions.get_mut(&session_id)?;
    let run_id = Uuid::new_v4();
    let mut active = ActiveRun::new(run_id);
    let wake = active.wake.clone();
    session.messages.push(Message::user(&text));
    let run = Run {
        shared: shared.clone(),
        session_id,
        run_id,
        wake,
        turn: 0,
        total: TotalUsage::default(),
        user_text: text,
    };
    let task = tokio::spawn(run.drive(script, auto));
    active.task = Some(task.abort_handle());
    session.run = RunState::Active(active);
    session.touch();
    Some(run_id)
}

struct Run {
    shared: Arc<Shared>,
    session_id: Uuid,
    run_id: Uuid,
    wake: Arc<Notify>,
    turn: u32,
    total: TotalUsage,
    user_text: String,
}

/// How a tool cycle ended.
enum Cycle {
    Results(Vec<String>),
    /// The run was cancelled while calls waited; it has already ended.
    Cancelled,
    /// A test ended the run while calls waited.
    Ended(RunEnd),
}

/// What the run does next for call `i` of the round.
enum Step {
    Execute(Decision),
    Wait,
    Cancelled,
    End(RunEnd),
}

impl Run {
    /// The state, if this run is still the session's active run. Every step goes through here, so a
    /// run dropped by a restart, a delete or a misdecision stops at its next step.
    fn guard(&self) -> Option<MutexGuard<'_, State>> {
        let st = self.shared.lock();
        st.run_is_current(self.session_id, self.run_id)
            .then_some(st)
    }

    fn emit_locked(&self, st: &mut State, payload: EventPayload) {
        st.emit(
            self.shared.opts.ring_capacity,
            self.session_id,
            Some(self.run_id),
            &payload,
        );
    }

    fn emit(&self, payload: EventPayload) -> Option<()> {
        let mut st = self.guard()?;
        self.emit_locked(&mut st, payload);
        Some(())
    }

    fn session<'a>(&self, st: &'a mut State) -> Option<&'a mut Session> {
        st.sessions.get_mut(&self.session_id)
    }

    fn usage(&mut self, reply: &str) -> Usage {
        let prompt = 8300 + u64::from(self.turn) * 40 + (self.user_text.len() as u64) / 4;
        let completion = 1 + (reply.len() as u64) / 4;
        let usage = Usage::new(prompt, completion);
        self.total.add(&usage);
        usage
    }

    async fn drive(mut self, script: Script, auto: AutoApprove) {
        if self.script(script, auto).await.is_none() {
            tracing::debug!(run = %self.run_id, "run dropped before it ended");
        }
    }

    async fn script(&mut self, script: Script, auto: AutoApprove) -> Option<()> {
        {
            let mut st = self.guard()?;
            let run = self.session(&mut st)?.active_mut()?;
            run.started = true;
            self.emit_locked(
                &mut st,
                EventPayload::RunStarted {
                    run_id: self.run_id,
                },
            );
        }
        self.start_turn()?;

        if script.drop_stream {
            self.guard()?.cut_streams(Some(self.session_id));
        }
        if let Some(name) = &script.hold {
            let mut gate = self.guard()?.gate(name);
            // The gate sender lives in the state for good, so this only fails if the fake is gone.
            gate.wait_for(|released| *released).await.ok()?;
        }
        if let Some(delay) = script.slow {
            tokio::time::sleep(delay).await;
        }
        if script.fail_500 {
            for (attempt, delay_ms) in [(1, 2000), (2, 4000)] {
                self.emit(EventPayload::RetryAttempt {
                    run_id: self.run_id,
                    attempt,
                    delay_ms,
                    reason: script::FAIL_500_REASON.to_string(),
                })?;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            let mut st = self.guard()?;
            self.emit_locked(
                &mut st,
                EventPayload::RunError {
                    run_id: self.run_id,
                    error: script::FAIL_500_REASON.to_string(),
                    retryable: false,
                },
            );
            self.session(&mut st)?.run = RunState::Failed;
            return Some(());
        }
        if script.fail_500_once {
            self.emit(EventPayload::RetryAttempt {
                run_id: self.run_id,
                attempt: 1,
                delay_ms: 2000,
                reason: script::FAIL_500_REASON.to_string(),
            })?;
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        if script.malformed_sse {
            let framing = self.shared.opts.framing();
            let junk = script::malformed_sse_lines(framing.space, framing.eol());
            self.guard()?
                .broadcast(self.session_id, StreamItem::Raw(junk));
        }

        let reply = if !script.tools.is_empty() {
            match self.tool_cycle(&script, &auto).await? {
                Cycle::Cancelled => return Some(()),
                Cycle::Ended(end) => return self.end_while_waiting(end),
                Cycle::Results(results) => {
                    if self.cancel_requested()? {
                        return self.complete_cancelled();
                    }
                    self.start_turn()?;
                    let rejected = results.iter().all(|r| r == REJECTED_REASON);
                    match (&script.reply_text, &script.rejected_text) {
                        (_, Some(text)) if rejected => text.clone(),
                        (Some(text), _) => text.clone(),
                        _ => script::done_reply(&results),
                    }
                }
            }
        } else if let Some(bytes) = script.big_reply {
            script::big_reply(bytes)
        } else if let Some(n) = script.long_reply {
            script::long_reply(n)
        } else if let Some(text) = &script.reply_text {
            text.clone()
        } else {
            script::echo(&self.user_text)
        };

        if script.silent_end {
            // The run stops without a terminal event; only the stored messages tell what happened.
            let mut st = self.guard()?;
            let session = self.session(&mut st)?;
            session.messages.push(Message::assistant_text(&reply));
            session.run = RunState::Idle;
            session.touch();
            return Some(());
        }
        if script.empty_reply {
            let fallback = format!("fallback: {}", self.user_text);
            self.reply_turn(&fallback, false)?;
        } else if let Some((pieces, over)) = script.drip {
            // A model that streams: the text in pieces, spread over `over`, then the rest.
            let chars: Vec<char> = reply.chars().collect();
            let size = chars.len().div_ceil(pieces).max(1);
            let pause = over / pieces as u32;
            for piece in chars.chunks(size) {
                self.emit(EventPayload::TextDelta {
                    run_id: self.run_id,
                    delta: piece.iter().collect(),
                })?;
                tokio::time::sleep(pause).await;
            }
            self.emit(EventPayload::TextComplete {
                run_id: self.run_id,
                text: reply.clone(),
            })?;
            self.reply_turn(&reply, false)?;
        } else {
            self.reply_turn(&reply, true)?;
        }

        // Follow-ups and steering messages each get a turn of their own, answered with an echo.
        loop {
            let next = {
                let mut st = self.guard()?;
                let session = self.session(&mut st)?;
                let run = session.active_mut()?;
                let cancelled = run.cancel_requested;
                let next = run.follow_ups.pop_front();
                match next {
                    Some(text) if !cancelled => {
                        session.messages.push(Message::user(&text));
                        Some(text)
                    }
                    // Cancel is checked between turns only: a cancel during the last turn still
                    // ends `completed` (capture `cancel_during_inference`).
                    other => {
                        let stop = if other.is_some() {
                            "cancelled"
                        } else {
                            "completed"
                        };
                        self.emit_locked(
                            &mut st,
                            EventPayload::RunCompleted {
                                run_id: self.run_id,
                                total_turns: self.turn,
                                total_usage: self.total,
                                stop_reason: stop.to_string(),
                            },
                        );
                        let session = self.session(&mut st)?;
                        session.run = RunState::Idle;
                        session.touch();
                        None
                    }
                }
            };
            let Some(text) = next else {
                return Some(());
            };
            self.start_turn()?;
            self.reply_turn(&script::echo(&text), true)?;
        }
    }

    fn start_turn(&mut self) -> Option<()> {
        self.turn += 1;
        self.emit(EventPayload::TurnStarted {
            run_id: self.run_id,
            turn: self.turn,
        })
    }

    fn cancel_requested(&self) -> Option<bool> {
        let mut st = self.guard()?;
        Some(self.session(&mut st)?.active()?.cancel_requested)
    }

    /// A turn's text as one `text_delta` (a non-streaming model) and its `text_complete`.
    fn emit_text(&self, st: &mut State, text: &str) {
        self.emit_locked(
            st,
            EventPayload::TextDelta {
                run_id: self.run_id,
                delta: text.to_string(),
            },
        );
        self.emit_locked(
            st,
            EventPayload::TextComplete {
                run_id: self.run_id,
                text: text.to_string(),
            },
        );
    }

    /// `text_delta` (the whole text at once, like a non-streaming model), `text_complete`,
    /// `usage_report`, `turn_completed`, and the assistant message.
    fn reply_turn(&mut self, text: &str, stream_text: bool) -> Option<()> {
        let usage = self.usage(text);
        let mut st = self.guard()?;
        if stream_text {
            self.emit_text(&mut st, text);
        }
        self.emit_locked(
            &mut st,
            EventPayload::UsageReport {
                run_id: self.run_id,
                turn: self.turn,
                usage,
            },
        );
        self.emit_locked(
            &mut st,
            EventPayload::TurnCompleted {
                run_id: self.run_id,
                turn: self.turn,
                finish_reason: "stop".into(),
            },
        );
        self.session(&mut st)?
            .messages
            .push(Message::assistant_text(text));
        Some(())
    }

    /// Ends the run where its calls wait, as [`super::FakeStakpak::end_waiting_run`] asked; the
    /// calls never run.
    fn end_while_waiting(&mut self, end: RunEnd) -> Option<()> {
        let mut st = self.guard()?;
        match end {
            RunEnd::Completed => self.emit_locked(
                &mut st,
                EventPayload::RunCompleted {
                    run_id: self.run_id,
                    total_turns: self.turn,
                    total_usage: self.total,
                    stop_reason: "completed".into(),
                },
            ),
            RunEnd::Error => self.emit_locked(
                &mut st,
                EventPayload::RunError {
                    run_id: self.run_id,
                    error: "The agent stopped while tool calls waited (injected by the test)"
                        .into(),
                    retryable: false,
                },
            ),
            RunEnd::Silent => {}
        }
        let session = self.session(&mut st)?;
        session.run = if end == RunEnd::Error {
            RunState::Failed
        } else {
            RunState::Idle
        };
        session.touch();
        Some(())
    }

    fn complete_cancelled(&mut self) -> Option<()> {
        let mut st = self.guard()?;
        self.emit_locked(
            &mut st,
            EventPayload::RunCompleted {
                run_id: self.run_id,
                total_turns: self.turn,
                total_usage: self.total,
                stop_reason: "cancelled".into(),
            },
        );
        let session = self.session(&mut st)?;
        session.run = RunState::Idle;
        session.touch();
        Some(())
    }

    /// Proposes the calls, then settles them strictly in proposal order: a later call never runs
    /// before an earlier one is decided, as on the real server.
    async fn tool_cycle(&mut self, script: &Script, auto: &AutoApprove) -> Option<Cycle> {
        let tools: &[ToolRequest] = &script.tools;
        let said = script
            .say_first_text
            .as_deref()
            .or(script.say_first.then_some(script::SAY_FIRST_TEXT));
        let usage = self.usage(said.unwrap_or(""));
        {
            let mut st = self.guard()?;
            let positional = self.shared.opts.positional_tool_ids;
            let mut calls: Vec<ProposedToolCall> = Vec::with_capacity(tools.len());
            for t in tools {
                let id = if positional {
                    let run = self.session(&mut st)?.active_mut()?;
                    run.calls_proposed += 1;
                    format!("call_{}", run.calls_proposed - 1)
                } else {
                    st.next_tool_call_id()
                };
                calls.push(ProposedToolCall {
                    id,
                    name: t.name.clone(),
                    arguments: t.arguments.clone(),
                    metadata: None,
                });
            }
            // The round is in place before the calls are announced, so a decision that follows the
            // announcement always finds it.
            let round = ToolRound {
                calls: calls
                    .iter()
                    .map(|call| RoundCall {
                        auto: auto.approves(&call.name),
                        call: call.clone(),
                        decision: None,
                        done: false,
                    })
                    .collect(),
            };
            self.session(&mut st)?.active_mut()?.round = Some(round);
            self.emit_locked(
                &mut st,
                EventPayload::UsageReport {
                    run_id: self.run_id,
                    turn: self.turn,
                    usage,
                },
            );
            if let Some(text) = said {
                // The model's words before its calls, in the same turn (real models do this).
                self.emit_text(&mut st, text);
                self.session(&mut st)?
                    .messages
                    .push(Message::assistant_text(text));
            }
            if !script.drop_waiting {
                let ids = calls.iter().map(|c| c.id.clone()).collect();
                self.emit_locked(
                    &mut st,
                    EventPayload::ToolCallsProposed {
                        run_id: self.run_id,
                        tool_calls: calls,
                    },
                );
                self.emit_locked(
                    &mut st,
                    EventPayload::WaitingForToolApproval {
                        run_id: self.run_id,
                        pending_tool_call_ids: ids,
                    },
                );
            }
        }

        let mut results = Vec::with_capacity(tools.len());
        let mut messages_calls = Vec::with_capacity(tools.len());
        for i in 0..tools.len() {
            let decision = loop {
                // `notify_one` keeps a permit when nobody waits, so a decision that lands between
                // the check and the wait still wakes us.
                let wake = self.wake.clone();
                let notified = wake.notified();
                match self.step(i)? {
                    Step::Execute(decision) => break decision,
                    Step::Cancelled => {
                        self.cancel_round(i)?;
                        return Some(Cycle::Cancelled);
                    }
                    Step::End(end) => return Some(Cycle::Ended(end)),
                    Step::Wait => notified.await,
                }
            };
            let call = {
                let mut st = self.guard()?;
                let run = self.session(&mut st)?.active_mut()?;
                let round_call = run.round.as_mut()?.calls.get_mut(i)?;
                round_call.done = true;
                round_call.call.clone()
            };
            let result = match decision {
                Decision::Accept => {
                    self.emit(EventPayload::ToolExecutionStarted {
                        run_id: self.run_id,
                        tool_call_id: call.id.clone(),
                        tool_name: call.name.clone(),
                    })?;
                    if let Some(pause) = script.tool_secs {
                        tokio::time::sleep(pause).await;
                    }
                    let result = match script.tool_results.get(i) {
                        Some(result) => result.clone(),
                        None => script::tool_result(&call.name, &call.arguments),
                    };
                    self.emit(completed(self.run_id, &call, &result, false))?;
                    result
                }
                Decision::Reject => {
                    self.emit(EventPayload::ToolRejected {
                        run_id: self.run_id,
                        tool_call_id: call.id.clone(),
                        tool_name: call.name.clone(),
                        reason: REJECTED_REASON.into(),
                    })?;
                    REJECTED_REASON.to_string()
                }
                Decision::Custom(content) => {
                    self.emit(completed(self.run_id, &call, &content, false))?;
                    content
                }
            };
            messages_calls.push((call, result.clone()));
            results.push(result);
        }

        let mut st = self.guard()?;
        self.store_tool_messages(&mut st, &messages_calls)?;
        self.session(&mut st)?.active_mut()?.round = None;
        self.emit_locked(
            &mut st,
            EventPayload::TurnCompleted {
                run_id: self.run_id,
                turn: self.turn,
                finish_reason: "tool_calls".into(),
            },
        );
        Some(Cycle::Results(results))
    }

    fn step(&self, i: usize) -> Option<Step> {
        let mut st = self.guard()?;
        let run = self.session(&mut st)?.active_mut()?;
        let cancelled = run.cancel_requested;
        if let Some(end) = run.forced_end {
            return Some(Step::End(end));
        }
        let call = run.round.as_ref()?.calls.get(i)?;
        Some(if call.auto {
            Step::Execute(Decision::Accept)
        } else if cancelled {
            // The real server notices a cancel only when a decision wakes the waiting run.
            Step::Cancelled
        } else {
            match &call.decision {
                Some(decision) => Step::Execute(decision.clone()),
                None => Step::Wait,
            }
        })
    }

    /// A cancel seen while calls wait: every unsettled call ends as `TOOL_CALL_CANCELLED`, then the
    /// turn and the run end as cancelled (the capture `tool_cancel.sse`).
    fn cancel_round(&mut self, from: usize) -> Option<()> {
        let mut st = self.guard()?;
        let calls: Vec<ProposedToolCall> = {
            let run = self.session(&mut st)?.active_mut()?;
            let round = run.round.take()?;
            round.calls.into_iter().skip(from).map(|c| c.call).collect()
        };
        for call in &calls {
            self.emit_locked(
                &mut st,
                completed(self.run_id, call, CANCELLED_RESULT, true),
            );
        }
        let settled: Vec<(ProposedToolCall, String)> = calls
            .into_iter()
            .map(|c| (c, CANCELLED_RESULT.to_string()))
            .collect();
        self.store_tool_messages(&mut st, &settled)?;
        self.emit_locked(
            &mut st,
            EventPayload::TurnCompleted {
                run_id: self.run_id,
                turn: self.turn,
                finish_reason: "cancelled".into(),
            },
        );
        drop(st);
        self.complete_cancelled()
    }

    /// The assistant message with the `tool_call` parts, then one `tool` message per result, like
    /// `tool_approve.messages.json`.
    fn store_tool_messages(
        &self,
        st: &mut State,
        settled: &[(ProposedToolCall, String)],
    ) -> Option<()> {
        if settled.is_empty() {
            return Some(());
        }
        let session = self.session(st)?;
        let parts = settled
            .iter()
            .map(|(call, _)| Part::ToolCall {
                id: call.id.clone(),
                name: call.name.clone(),
                arguments: call.arguments.clone(),
            })
            .collect();
        session.messages.push(Message {
            role: "assistant",
            content: MessageContent::Parts(parts),
        });
        for (call, result) in settled {
            session.messages.push(Message {
                role: "tool",
                content: MessageContent::Parts(vec![Part::ToolResult {
                    tool_call_id: call.id.clone(),
                    content: Value::String(result.clone()),
                }]),
            });
        }
        Some(())
    }
}

fn completed(run_id: Uuid, call: &ProposedToolCall, result: &str, is_error: bool) -> EventPayload {
    EventPayload::ToolExecutionCompleted {
        run_id,
        tool_call_id: call.id.clone(),
        tool_name: call.name.clone(),
        result: result.to_string(),
        is_error,
    }
}
