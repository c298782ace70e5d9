//! Wire types of the agent server and the decoding of its event envelopes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a call to the agent server failed, in the terms a caller acts on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AgentError {
    /// The session (or run) does not exist on the server.
    #[error("not found: {0}")]
    NotFound(String),
    /// 409: a run is already going (`session_already_running`), a run id does not match, …
    #[error("conflict ({code}): {message}")]
    Conflict { code: String, message: String },
    /// 401: the token is missing or wrong. After a server restart the generated token changes.
    #[error("the agent server refused the token; if it restarted, its token changed: paste the new one in the settings")]
    Unauthorized,
    /// Any other error status.
    #[error("agent server error {status} ({code}): {message}")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    /// The server could not be reached, or the connection broke.
    #[error("cannot reach the agent server: {0}")]
    Transport(String),
    /// The server answered something that is not what the contract says.
    #[error("unexpected answer from the agent server: {0}")]
    Decode(String),
}

impl AgentError {
    /// Whether the same call may work later without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            AgentError::Transport(_) => true,
            AgentError::Server { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    pub fn is_conflict(&self, code: &str) -> bool {
        matches!(self, AgentError::Conflict { code: c, .. } if c == code)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Health {
    pub status: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub uptime_seconds: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct RunStatus {
    /// `idle`, `starting`, `running` or `failed`.
    pub state: String,
    #[serde(default)]
    pub run_id: Option<String>,
}

impl RunStatus {
    /// Whether a run is starting or running.
    pub fn is_busy(&self) -> bool {
        matches!(self.state.as_str(), "starting" | "running")
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct SessionDto {
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    pub run_status: RunStatus,
}

/// A message of a session's history; `content` is a string or a list of typed parts.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Value,
}

impl Message {
    /// The readable text of the message: the string, or its text parts joined.
    pub fn text(&self) -> String {
        match &self.content {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ProposedToolCall {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub arguments: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PendingTools {
    pub run_id: Option<String>,
    #[serde(default)]
    pub tool_calls: Vec<ProposedToolCall>,
}

/// What to tell the server about one waiting tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolDecision {
    Accept,
    Reject,
}

impl ToolDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            ToolDecision::Accept => "accept",
            ToolDecision::Reject => "reject",
        }
    }
}

/// Tokens a turn or a run used, as the server reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

/// The events of a session's stream that the engine acts on; the rest are kept by name only.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    RunStarted,
    TextDelta {
        delta: String,
    },
    TextComplete {
        text: String,
    },
    ToolCallsProposed {
        tool_calls: Vec<ProposedToolCall>,
    },
    WaitingForToolApproval {
        pending_tool_call_ids: Vec<String>,
    },
    ToolExecutionStarted {
        tool_call_id: String,
        tool_name: String,
    },
    ToolExecutionProgress {
        tool_call_id: String,
        message: String,
    },
    ToolExecutionCompleted {
        tool_call_id: String,
        tool_name: String,
        is_error: bool,
    },
    ToolRejected {
        tool_call_id: String,
        tool_name: String,
        reason: String,
    },
    RetryAttempt {
        attempt: u64,
        delay_ms: u64,
        reason: String,
    },
    TurnStarted {
        turn: u64,
    },
    TurnCompleted {
        turn: u64,
        finish_reason: String,
    },
    ThinkingDelta {
        delta: String,
    },
    UsageReport {
        turn: u64,
        usage: Usage,
    },
    CompactionStarted,
    CompactionCompleted,
    RunCompleted {
        stop_reason: String,
        total_turns: u64,
        total_usage: Usage,
    },
    RunError {
        error: String,
        retryable: bool,
    },
    /// An event this client does not know: named, not interpreted.
    Other(String),
}

impl AgentEvent {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            AgentEvent::RunCompleted { .. } | AgentEvent::RunError { .. }
        )
    }
}

/// One event of a session's stream, with the envelope's id and run.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub id: Option<i64>,
    pub run_id: Option<String>,
    pub event: AgentEvent,
}

/// The server could not replay from the requested cursor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GapInfo {
    #[serde(default)]
    pub requested_after_id: i64,
    #[serde(default)]
    pub oldest_available_id: i64,
    #[serde(default)]
    pub newest_available_id: i64,
}

/// What an event stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    Event(Envelope),
    Gap(GapInfo),
    Keepalive,
    /// A frame the client could not make sense of (logged and skipped).
    Malformed(String),
}

#[derive(Deserialize)]
struct RawEnvelope {
    #[serde(default)]
    id: Option<i64>,
    #[serde(default)]
    run_id: Option<String>,
    event: serde_json::Map<String, Value>,
}

fn str_field(payload: &Value, name: &str) -> String {
    payload
        .get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn u64_field(payload: &Value, name: &str) -> u64 {
    payload.get(name).and_then(Value::as_u64).unwrap_or(0)
}

fn usage_field(payload: &Value, name: &str) -> Usage {
    payload
        .get(name)
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

/// Decodes one SSE frame of the event stream. The frame's `id:` line wins over the envelope's id
/// when both are present, since that is what `Last-Event-ID` refers to.
pub(crate) fn decode_frame(frame: &crate::sse::SseFrame) -> StreamItem {
    let name = frame.event.as_deref().unwrap_or("message");
    if name == "gap_detected" {
        return match serde_json::from_str::<GapInfo>(&frame.data) {
            Ok(gap) => StreamItem::Gap(gap),
            Err(e) => StreamItem::Malformed(format!("gap_detected: {e}")),
        };
    }
    let raw: RawEnvelope = match serde_json::from_str(&frame.data) {
        Ok(raw) => raw,
        Err(e) => return StreamItem::Malformed(format!("{name}: {e}")),
    };
    let frame_id = frame
        .id
        .as_deref()
        .and_then(|s| s.trim().parse::<i64>().ok());
    let Some((variant, payload)) = raw.event.iter().next() else {
        return StreamItem::Malformed(format!("{name}: empty event"));
    };
    let event = match variant.as_str() {
        "RunStarted" => AgentEvent::RunStarted,
        "TextDelta" => AgentEvent::TextDelta {
            delta: str_field(payload, "delta"),
        },
        "TextComplete" => AgentEvent::TextComplete {
            text: str_field(payload, "text"),
        },
        "ToolCallsProposed" => AgentEvent::ToolCallsProposed {
            tool_calls: payload
                .get("tool_calls")
                .cloned()
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default(),
        },
        "WaitingForToolApproval" => AgentEvent::WaitingForToolApproval {
            pending_tool_call_ids: payload
                .get("pending_tool_call_ids")
                .cloned()
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default(),
        },
        "ToolExecutionStarted" => AgentEvent::ToolExecutionStarted {
            tool_call_id: str_field(payload, "tool_call_id"),
            tool_name: str_field(payload, "tool_name"),
        },
        "ToolExecutionCompleted" => AgentEvent::ToolExecutionCompleted {
            tool_call_id: str_field(payload, "tool_call_id"),
            tool_name: str_field(payload, "tool_name"),
            is_error: payload
                .get("is_error")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        },
        "ToolRejected" => AgentEvent::ToolRejected {
            tool_call_id: str_field(payload, "tool_call_id"),
            tool_name: str_field(payload, "tool_name"),
            reason: str_field(payload, "reason"),
        },
        "RetryAttempt" => AgentEvent::RetryAttempt {
            attempt: u64_field(payload, "attempt"),
            delay_ms: u64_field(payload, "delay_ms"),
            reason: str_field(payload, "reason"),
        },
        "ToolExecutionProgress" => AgentEvent::ToolExecutionProgress {
            tool_call_id: str_field(payload, "tool_call_id"),
            message: str_field(payload, "message"),
        },
        "TurnStarted" => AgentEvent::TurnStarted {
            turn: u64_field(payload, "turn"),
        },
        "TurnCompleted" => AgentEvent::TurnCompleted {
            turn: u64_field(payload, "turn"),
            finish_reason: str_field(payload, "finish_reason"),
        },
        "ThinkingDelta" => AgentEvent::ThinkingDelta {
            delta: str_field(payload, "delta"),
        },
        "UsageReport" => AgentEvent::UsageReport {
            turn: u64_field(payload, "turn"),
            usage: usage_field(payload, "usage"),
        },
        "CompactionStarted" => AgentEvent::CompactionStarted,
        "CompactionCompleted" => AgentEvent::CompactionCompleted,
        "RunCompleted" => AgentEvent::RunCompleted {
            stop_reason: str_field(payload, "stop_reason"),
            total_turns: u64_field(payload, "total_turns"),
            total_usage: usage_field(payload, "total_usage"),
        },
        "RunError" => AgentEvent::RunError {
            error: str_field(payload, "error"),
            retryable: payload
                .get("retryable")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        },
        other => AgentEvent::Other(other.to_string()),
    };
    let run_id = raw.run_id.or_else(|| {
        payload
            .get("run_id")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    StreamItem::Event(Envelope {
        id: frame_id.or(raw.id),
        run_id,
        event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::{SseDecoder, SseItem};

    fn decode_capture(text: &str) -> Vec<StreamItem> {
        let mut decoder = SseDecoder::new();
        let mut items = decoder.push(text.as_bytes());
        items.extend(decoder.finish());
        items
            .into_iter()
            .filter_map(|item| match item {
                SseItem::Frame(frame) => Some(decode_frame(&frame)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_real_capture_of_a_tool_run_decodes() {
        let items = decode_capture(include_str!("../../tests/fixtures/tool_approve.sse"));
        let events: Vec<_> = items
            .iter()
            .map(|item| match item {
                StreamItem::Event(e) => e.clone(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(events[0].id, Some(1));
        assert!(
            events.iter().all(|e| e.run_id.is_some()),
            "every envelope names its run"
        );
        assert!(events.iter().any(|e| matches!(&e.event, AgentEvent::WaitingForToolApproval { pending_tool_call_ids } if pending_tool_call_ids == &["call_fake_0001"])));
        assert!(events.iter().any(|e| matches!(&e.event, AgentEvent::ToolCallsProposed { tool_calls } if tool_calls[0].name == "stakpak__run_command")));
        assert!(matches!(
            events.last().map(|e| &e.event),
            Some(AgentEvent::RunCompleted { .. })
        ));
    }

    #[test]
    fn gap_and_junk_frames_are_told_apart() {
        let items = decode_capture(
            "event: gap_detected\ndata: {\"requested_after_id\":1,\"oldest_available_id\":117,\"newest_available_id\":4212,\"resume_hint\":\"x\"}\n\nevent: text_delta\ndata: {not json\n\n",
        );
        assert!(matches!(&items[0], StreamItem::Gap(g) if g.oldest_available_id == 117));
        assert!(matches!(&items[1], StreamItem::Malformed(_)));
    }

    #[test]
    fn message_text_reads_strings_and_parts() {
        let plain = Message {
            role: "assistant".into(),
            content: Value::String("hi".into()),
        };
        let parts = Message {
            role: "assistant".into(),
            content: serde_json::json!([{"type":"text","text":"a"},{"type":"tool_call","id":"1","name":"x","arguments":{}},{"type":"text","text":"b"}]),
        };
        assert_eq!(plain.text(), "hi");
        assert_eq!(parts.text(), "a\nb");
    }
}
