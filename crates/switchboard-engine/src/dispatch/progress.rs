//! A run's progress as a pure state machine: each event of the session's stream goes in, the
//! steps the engine must take come out. No I/O, no clocks; the run driver (`run.rs`) owns the
//! timers and the calls to the server and the chat.
//!
//! What it keeps: the reply written so far (turns separated by a blank line, so "I'll check
//! the file." and "The file says…" never run together), each proposed tool call and where it is,
//! the tokens used, and whether events were lost (then the final text must come from the server's
//! history instead).

use crate::agent::{AgentEvent, Envelope, ToolDecision, Usage};

/// Where one proposed tool call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallState {
    Proposed,
    /// Listed as waiting for a decision (the server may still approve it itself).
    Waiting,
    /// The server started it.
    Running,
    /// It finished (or got its result without running: a custom result, a cancellation).
    Done {
        is_error: bool,
    },
    Rejected,
}

impl CallState {
    /// Whether the server has dealt with the call: it must never be decided again.
    pub(crate) fn is_handled(self) -> bool {
        matches!(
            self,
            CallState::Running | CallState::Done { .. } | CallState::Rejected
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call {
    pub id: String,
    pub name: String,
    pub arguments: serde_json::Value,
    pub state: CallState,
    /// The decision the server accepted from us, if any.
    pub decided: Option<ToolDecision>,
}

/// How a run ended, as its terminal event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Finish {
    Completed,
    Cancelled,
    Failed { error: String },
}

/// What the engine must do after an event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// Text was added to the reply; `delta` includes the blank line that starts a new turn.
    Text {
        delta: String,
    },
    /// A turn's text is complete (the turn ended or moved on to tools).
    TurnText,
    /// Calls wait for a decision: look at what the server lists once calls it approves itself
    /// have had a moment to start.
    CallsWaiting,
    ToolStarted {
        call_id: String,
        tool: String,
    },
    ToolProgress {
        call_id: String,
        message: String,
    },
    ToolDone {
        call_id: String,
        tool: String,
        is_error: bool,
    },
    ToolRejected {
        call_id: String,
        tool: String,
    },
    Finished(Finish),
}

/// A run's progress.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    run_id: String,
    text: String,
    /// The turn the reply's last text belongs to.
    text_turn: Option<u64>,
    turn: u64,
    /// Tools ran since the last text: the next text starts a new paragraph even if the server
    /// sent no turn events.
    tools_since_text: bool,
    /// Whether the current turn sent deltas (else its `text_complete` is the text).
    turn_has_delta: bool,
    seen_any: bool,
    incomplete: bool,
    calls: Vec<Call>,
    turn_usage: Usage,
    total_usage: Option<Usage>,
    finished: Option<Finish>,
}

impl Progress {
    pub(crate) fn new(run_id: &str) -> Progress {
        Progress {
            run_id: run_id.to_string(),
            text: String::new(),
            text_turn: None,
            turn: 0,
            tools_since_text: false,
            turn_has_delta: false,
            seen_any: false,
            incomplete: false,
            calls: Vec::new(),
            turn_usage: Usage::default(),
            total_usage: None,
            finished: None,
        }
    }

    /// Takes one event of the session's stream. Events of other runs change nothing.
    pub(crate) fn apply(&mut self, envelope: &Envelope) -> Vec<Step> {
        if envelope.run_id.as_deref() != Some(self.run_id.as_str()) || self.finished.is_some() {
            return Vec::new();
        }
        if !self.seen_any && envelope.event != AgentEvent::RunStarted {
            // The run's first events are gone (they left the server's buffer before we
            // resumed): the streamed text would be partial.
            self.incomplete = true;
        }
        self.seen_any = true;
        let mut steps = Vec::new();
        match &envelope.event {
            AgentEvent::RunStarted => {}
            AgentEvent::TurnStarted { turn } => {
                self.turn = *turn;
                self.turn_has_delta = false;
            }
            AgentEvent::TextDelta { delta } => {
                self.turn_has_delta = true;
                self.push_text(delta, &mut steps);
            }
            AgentEvent::TextComplete { text } => {
                if !self.turn_has_delta {
                    self.push_text(text, &mut steps);
                }
                if !text.is_empty() || self.text_turn == Some(self.turn) {
                    steps.push(Step::TurnText);
                }
            }
            AgentEvent::ToolCallsProposed { tool_calls } => {
                for call in tool_calls {
                    if self.call(&call.id).is_none() {
                        self.calls.push(Call {
                            id: call.id.clone(),
                            name: call.name.clone(),
                            arguments: call.arguments.clone(),
                            state: CallState::Proposed,
                            decided: None,
                        });
                    }
                }
            }
            AgentEvent::WaitingForToolApproval {
                pending_tool_call_ids,
            } => {
                for id in pending_tool_call_ids {
                    let call = self.call_or_insert(id, "");
                    if call.state == CallState::Proposed {
                        call.state = CallState::Waiting;
                    }
                }
                steps.push(Step::CallsWaiting);
            }
            AgentEvent::ToolExecutionStarted {
                tool_call_id,
                tool_name,
            } => {
                self.tools_since_text = true;
                self.call_or_insert(tool_call_id, tool_name).state = CallState::Running;
                steps.push(Step::ToolStarted {
                    call_id: tool_call_id.clone(),
                    tool: tool_name.clone(),
                });
            }
            AgentEvent::ToolExecutionProgress {
                tool_call_id,
                message,
            } => steps.push(Step::ToolProgress {
                call_id: tool_call_id.clone(),
                message: message.clone(),
            }),
            AgentEvent::ToolExecutionCompleted {
                tool_call_id,
                tool_name,
                is_error,
            } => {
                self.tools_since_text = true;
                self.call_or_insert(tool_call_id, tool_name).state = CallState::Done {
                    is_error: *is_error,
                };
                steps.push(Step::ToolDone {
                    call_id: tool_call_id.clone(),
                    tool: tool_name.clone(),
                    is_error: *is_error,
                });
                self.next_in_line(&mut steps);
            }
            AgentEvent::ToolRejected {
                tool_call_id,
                tool_name,
                ..
            } => {
                self.tools_since_text = true;
                self.call_or_insert(tool_call_id, tool_name).state = CallState::Rejected;
                steps.push(Step::ToolRejected {
                    call_id: tool_call_id.clone(),
                    tool: tool_name.clone(),
                });
                self.next_in_line(&mut steps);
            }
            AgentEvent::UsageReport { usage, .. } => {
                self.turn_usage.prompt_tokens += usage.prompt_tokens;
                self.turn_usage.completion_tokens += usage.completion_tokens;
                self.turn_usage.total_tokens += usage.total_tokens;
            }
            AgentEvent::RunCompleted {
                stop_reason,
                total_usage,
                ..
            } => {
                if *total_usage != Usage::default() {
                    self.total_usage = Some(*total_usage);
                }
                let finish = if stop_reason == "cancelled" {
                    Finish::Cancelled
                } else {
                    Finish::Completed
                };
                self.finished = Some(finish.clone());
                steps.push(Step::Finished(finish));
            }
            AgentEvent::RunError { error, .. } => {
                let finish = Finish::Failed {
                    error: error.clone(),
                };
                self.finished = Some(finish.clone());
                steps.push(Step::Finished(finish));
            }
            AgentEvent::TurnCompleted { .. }
            | AgentEvent::ThinkingDelta { .. }
            | AgentEvent::RetryAttempt { .. }
            | AgentEvent::CompactionStarted
            | AgentEvent::CompactionCompleted
            | AgentEvent::Other(_) => {}
        }
        steps
    }

    /// Events of this run were lost (`gap_detected`): the streamed text cannot be trusted.
    pub(crate) fn lost_events(&mut self) {
        self.incomplete = true;
    }

    /// The reply as streamed; `None` when events were lost or nothing was written.
    pub(crate) fn reply(&self) -> Option<&str> {
        (!self.incomplete && !self.text.trim().is_empty()).then_some(self.text.as_str())
    }

    /// The text so far (possibly partial), for a live view.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    #[cfg(test)]
    pub(crate) fn is_incomplete(&self) -> bool {
        self.incomplete
    }

    pub(crate) fn finished(&self) -> Option<&Finish> {
        self.finished.as_ref()
    }

    /// Tokens the run used: the server's total when it gave one, else the sum of its turns.
    pub(crate) fn usage(&self) -> Usage {
        self.total_usage.unwrap_or(self.turn_usage)
    }

    pub(crate) fn call(&self, id: &str) -> Option<&Call> {
        self.calls.iter().find(|c| c.id == id)
    }

    /// Whether the server has dealt with a call, so it must never be decided.
    pub(crate) fn is_handled(&self, id: &str) -> bool {
        self.call(id).is_some_and(|c| c.state.is_handled())
    }

    /// Whether a decision from here for the call was accepted by the server.
    pub(crate) fn is_decided(&self, id: &str) -> bool {
        self.call(id).is_some_and(|c| c.decided.is_some())
    }

    /// Records that the server accepted our decision for a call.
    pub(crate) fn mark_decided(&mut self, id: &str, decision: ToolDecision) {
        self.call_or_insert(id, "").decided = Some(decision);
    }

    /// Calls listed as waiting that the server has not dealt with and we have not decided, in
    /// the order they were proposed (the order the server runs them in).
    pub(crate) fn undecided_waiting(&self) -> Vec<&Call> {
        self.calls
            .iter()
            .filter(|c| c.state == CallState::Waiting && c.decided.is_none())
            .collect()
    }

    fn push_text(&mut self, delta: &str, steps: &mut Vec<Step>) {
        if delta.is_empty() {
            return;
        }
        let new_turn = self.text_turn != Some(self.turn) || self.tools_since_text;
        let mut added = String::new();
        if new_turn && !self.text.trim_end().is_empty() {
            let trimmed = self.text.trim_end_matches([' ', '\t']);
            if trimmed.ends_with("\n\n") {
                // Already a paragraph break.
            } else if trimmed.ends_with('\n') {
                added.push('\n');
            } else {
                added.push_str("\n\n");
            }
        }
        added.push_str(delta);
        self.text.push_str(&added);
        self.text_turn = Some(self.turn);
        self.tools_since_text = false;
        steps.push(Step::Text { delta: added });
    }

    fn call_or_insert(&mut self, id: &str, name: &str) -> &mut Call {
        let index = match self.calls.iter().position(|c| c.id == id) {
            Some(index) => index,
            None => {
                self.calls.push(Call {
                    id: id.to_string(),
                    name: name.to_string(),
                    arguments: serde_json::Value::Null,
                    state: CallState::Proposed,
                    decided: None,
                });
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[index];
        if call.name.is_empty() && !name.is_empty() {
            call.name = name.to_string();
        }
        call
    }

    /// After a call is dealt with, the next one in order may be the one waiting now.
    fn next_in_line(&self, steps: &mut Vec<Step>) {
        if !self.undecided_waiting().is_empty() {
            steps.push(Step::CallsWaiting);
        }
    }
}

#[cfg(test)]
#[path = "progress_tests.rs"]
mod tests;
