//! Tables of real transcripts (`tests/fixtures/`) and synthesized events through `Progress`.

use super::*;
use crate::agent::StreamItem;
use crate::sse::{SseDecoder, SseItem};

/// The envelopes of a real capture, in order.
fn capture(text: &str) -> Vec<Envelope> {
    let mut decoder = SseDecoder::new();
    let mut items = decoder.push(text.as_bytes());
    items.extend(decoder.finish());
    items
        .into_iter()
        .filter_map(|item| match item {
            SseItem::Frame(frame) => match crate::agent::wire::decode_frame(&frame) {
                StreamItem::Event(e) => Some(e),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Feeds a capture and returns the steps (texts joined) and the final progress.
fn run(text: &str) -> (Vec<Step>, Progress) {
    let envelopes = capture(text);
    let run_id = envelopes
        .iter()
        .find_map(|e| e.run_id.clone())
        .expect("a run id");
    let mut progress = Progress::new(&run_id);
    let steps = envelopes.iter().flat_map(|e| progress.apply(e)).collect();
    (steps, progress)
}

fn names(steps: &[Step]) -> Vec<&'static str> {
    steps
        .iter()
        .map(|s| match s {
            Step::Text { .. } => "text",
            Step::TurnText => "turn_text",
            Step::CallsWaiting => "waiting",
            Step::ToolStarted { .. } => "started",
            Step::ToolProgress { .. } => "progress",
            Step::ToolDone { .. } => "done",
            Step::ToolRejected { .. } => "rejected",
            Step::Finished(_) => "finished",
        })
        .collect()
}

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../tests/fixtures/", $name, ".sse"))
    };
}

#[test]
fn real_transcripts_give_the_steps_the_engine_acts_on() {
    // (capture, steps, final reply, finish)
    type Case<'a> = (&'a str, &'a str, Vec<&'a str>, Option<&'a str>, Finish);
    let cases: Vec<Case> = vec![
        (
            "basic_echo",
            fixture!("basic_echo"),
            vec!["text", "turn_text", "finished"],
            Some("echo: hello rig"),
            Finish::Completed,
        ),
        (
            "tool_approve",
            fixture!("tool_approve"),
            vec![
                "waiting",
                "started",
                "done",
                "text",
                "turn_text",
                "finished",
            ],
            Some("done: hello from the stakpak rig workspace line two tool-ran-ok"),
            Finish::Completed,
        ),
        (
            "tool_reject",
            fixture!("tool_reject"),
            vec!["waiting", "rejected", "text", "turn_text", "finished"],
            None,
            Finish::Completed,
        ),
        (
            "tool_parallel_mixed",
            fixture!("tool_parallel_mixed"),
            vec![
                "waiting",
                "started",
                "done",
                "waiting",
                "rejected",
                "text",
                "turn_text",
                "finished",
            ],
            Some("done: first-call | Tool call rejected by user"),
            Finish::Completed,
        ),
        (
            "tool_custom_result",
            fixture!("tool_custom_result"),
            vec!["waiting", "done", "text", "turn_text", "finished"],
            Some("done: CUSTOM-RESULT-42"),
            Finish::Completed,
        ),
        (
            "tool_cancel",
            fixture!("tool_cancel"),
            vec!["waiting", "done", "finished"],
            None,
            Finish::Cancelled,
        ),
        (
            "llm_500",
            fixture!("llm_500"),
            vec!["finished"],
            None,
            Finish::Failed {
                error: String::new(),
            },
        ),
        (
            "llm_500_once",
            fixture!("llm_500_once"),
            vec!["text", "turn_text", "finished"],
            None,
            Finish::Completed,
        ),
        (
            "follow_up",
            fixture!("follow_up"),
            vec!["text", "turn_text", "text", "turn_text", "finished"],
            Some("echo: SLOW 2 first prompt\n\necho: queued follow up"),
            Finish::Completed,
        ),
        (
            "cancel_during_inference",
            fixture!("cancel_during_inference"),
            vec!["text", "turn_text", "finished"],
            None,
            // The cancel came after the model answered: the run completed.
            Finish::Completed,
        ),
    ];
    for (name, text, want_steps, want_reply, want_finish) in cases {
        let (steps, progress) = run(text);
        assert_eq!(names(&steps), want_steps, "{name}: steps");
        if let Some(reply) = want_reply {
            assert_eq!(progress.reply(), Some(reply), "{name}: reply");
        }
        match (progress.finished(), &want_finish) {
            (Some(Finish::Failed { error }), Finish::Failed { .. }) => {
                assert!(!error.is_empty(), "{name}: the error is kept")
            }
            (got, want) => assert_eq!(got, Some(want), "{name}: finish"),
        }
        assert!(
            progress.usage().total_tokens > 0 || name == "llm_500",
            "{name}: usage is counted"
        );
    }
}

#[test]
fn calls_are_tracked_so_none_is_decided_twice_or_after_it_ran() {
    let (_, progress) = run(fixture!("tool_partial_decisions"));
    assert!(
        progress.undecided_waiting().is_empty(),
        "every call was dealt with"
    );
    let (_, mut progress) = {
        let envelopes = capture(fixture!("tool_approve"));
        let run_id = envelopes[0].run_id.clone().expect("run");
        let mut p = Progress::new(&run_id);
        // Up to and including `waiting_for_tool_approval`.
        let steps: Vec<Step> = envelopes
            .iter()
            .take_while(|e| !matches!(e.event, AgentEvent::ToolExecutionStarted { .. }))
            .flat_map(|e| p.apply(e))
            .collect();
        (steps, p)
    };
    let waiting: Vec<String> = progress
        .undecided_waiting()
        .iter()
        .map(|c| c.id.clone())
        .collect();
    assert_eq!(waiting, vec!["call_fake_0001"]);
    assert_eq!(
        progress.call("call_fake_0001").map(|c| c.name.as_str()),
        Some("stakpak__run_command")
    );
    progress.mark_decided("call_fake_0001", ToolDecision::Accept);
    assert!(progress.undecided_waiting().is_empty());
    assert!(progress.is_decided("call_fake_0001"));
}

#[test]
fn auto_approved_calls_end_up_handled_without_a_decision() {
    let (steps, progress) = run(fixture!("tool_auto_approved_view"));
    assert!(names(&steps).contains(&"started"));
    assert!(progress.undecided_waiting().is_empty());
    let (_, progress) = run(fixture!("override_auto_approve_all"));
    assert!(progress.undecided_waiting().is_empty());
}

#[test]
fn a_run_resumed_after_its_first_events_left_the_buffer_is_incomplete() {
    let (_, progress) = run(fixture!("gap_resume_from_oldest"));
    assert!(
        progress.is_incomplete(),
        "the reply must be read from history"
    );
    assert_eq!(progress.reply(), None);
    let (_, progress) = run(fixture!("replay_after2"));
    assert!(progress.is_incomplete());
}

fn envelope(run: &str, event: AgentEvent) -> Envelope {
    Envelope {
        id: None,
        run_id: Some(run.into()),
        event,
    }
}

#[test]
fn turns_are_separated_whether_or_not_turn_events_come() {
    use AgentEvent::*;
    let mut p = Progress::new("r");
    let events = [
        RunStarted,
        TurnStarted { turn: 1 },
        TextDelta {
            delta: "I'll check ".into(),
        },
        TextDelta {
            delta: "the file.".into(),
        },
        ToolExecutionStarted {
            tool_call_id: "c".into(),
            tool_name: "stakpak__view".into(),
        },
        ToolExecutionCompleted {
            tool_call_id: "c".into(),
            tool_name: "stakpak__view".into(),
            is_error: false,
        },
        // No turn_started here: the tools alone mark a new paragraph.
        TextDelta {
            delta: "The file says hi.".into(),
        },
        TurnStarted { turn: 3 },
        TextComplete {
            text: "Done.".into(),
        },
    ];
    let deltas: Vec<String> = events
        .into_iter()
        .flat_map(|e| p.apply(&envelope("r", e)))
        .filter_map(|s| match s {
            Step::Text { delta } => Some(delta),
            _ => None,
        })
        .collect();
    assert_eq!(
        p.text(),
        "I'll check the file.\n\nThe file says hi.\n\nDone.",
        "each turn is its own paragraph"
    );
    assert_eq!(deltas.concat(), p.text(), "the deltas add up to the text");
}

#[test]
fn other_runs_and_events_after_the_end_change_nothing() {
    let mut p = Progress::new("mine");
    assert!(p
        .apply(&envelope(
            "theirs",
            AgentEvent::TextDelta { delta: "x".into() }
        ))
        .is_empty());
    p.apply(&envelope("mine", AgentEvent::RunStarted));
    p.apply(&envelope(
        "mine",
        AgentEvent::RunError {
            error: "boom".into(),
            retryable: false,
        },
    ));
    assert!(p
        .apply(&envelope(
            "mine",
            AgentEvent::TextDelta {
                delta: "late".into()
            }
        ))
        .is_empty());
    assert_eq!(p.text(), "");
}

#[test]
fn event_kinds_no_capture_shows_change_only_what_they_should() {
    use AgentEvent::*;
    let mut p = Progress::new("r");
    let events = [
        RunStarted,
        TurnStarted { turn: 1 },
        ThinkingDelta {
            delta: "hmm, the user wants".into(),
        },
        CompactionStarted,
        CompactionCompleted,
        RetryAttempt {
            attempt: 1,
            delay_ms: 2000,
            reason: "overloaded".into(),
        },
        ToolExecutionStarted {
            tool_call_id: "c".into(),
            tool_name: "stakpak__run_command".into(),
        },
        ToolExecutionProgress {
            tool_call_id: "c".into(),
            message: "compiling 3/9".into(),
        },
        ToolExecutionCompleted {
            tool_call_id: "c".into(),
            tool_name: "stakpak__run_command".into(),
            is_error: false,
        },
        TextDelta {
            delta: "Built.".into(),
        },
        UsageReport {
            turn: 1,
            usage: Usage::default(),
        },
        Other("something_new".into()),
        RunCompleted {
            stop_reason: "completed".into(),
            total_turns: 1,
            total_usage: Usage::default(),
        },
    ];
    let steps: Vec<Step> = events
        .into_iter()
        .flat_map(|e| p.apply(&envelope("r", e)))
        .collect();
    assert_eq!(
        names(&steps),
        ["started", "progress", "done", "text", "finished"],
        "thinking, compaction, retries, usage and unknown events are no steps"
    );
    assert!(steps.contains(&Step::ToolProgress {
        call_id: "c".into(),
        message: "compiling 3/9".into()
    }));
    assert_eq!(p.text(), "Built.", "thinking is never part of the reply");
    assert!(!p.is_incomplete());
}
