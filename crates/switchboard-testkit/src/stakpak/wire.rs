//! Wire shapes of the Stakpak agent server, as the contract and the captures show them.
//!
//! Responses are plain `Serialize` structs rather than `serde_json::json!` values so the keys come out
//! in the same order as on the real server (`{"id","session_id","run_id","timestamp","event"}`).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// `SessionDto` of the contract.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct SessionDto {
    pub id: Uuid,
    pub title: String,
    pub cwd: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub run_status: RunStatusDto,
}

/// `run_status` of a session: `{"state":"idle"}` or `{"state":"running","run_id":…}`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct RunStatusDto {
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<Uuid>,
}

/// A tool call as the server proposes it (`ProposedToolCall`).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ProposedToolCall {
    pub id: String,
    pub name: String,
    pub arguments: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// Per-turn usage, shaped like the `usage_report` payload of stakpak 0.3.88.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub input_token_details: InputTokenDetails,
    pub output_token_details: OutputTokenDetails,
    pub raw: RawUsage,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct InputTokenDetails {
    pub total: u64,
    pub no_cache: u64,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct OutputTokenDetails {
    pub total: u64,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct RawUsage {
    pub completion_tokens: u64,
    pub prompt_tokens: u64,
    pub total_tokens: u64,
}

/// `total_usage` of `run_completed`.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct TotalUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
    pub(crate) fn new(prompt_tokens: u64, completion_tokens: u64) -> Usage {
        let total_tokens = prompt_tokens + completion_tokens;
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens,
            input_token_details: InputTokenDetails {
                total: prompt_tokens,
                no_cache: prompt_tokens,
            },
            output_token_details: OutputTokenDetails {
                total: completion_tokens,
            },
            raw: RawUsage {
                completion_tokens,
                prompt_tokens,
                total_tokens,
            },
        }
    }
}

impl TotalUsage {
    pub(crate) fn add(&mut self, usage: &Usage) {
        self.prompt_tokens += usage.prompt_tokens;
        self.completion_tokens += usage.completion_tokens;
        self.total_tokens += usage.total_tokens;
    }
}

/// The `event` of an envelope: serde's external tagging gives exactly `{"TextDelta":{…}}`.
#[derive(Clone, Debug, Serialize)]
pub(crate) enum EventPayload {
    RunStarted {
        run_id: Uuid,
    },
    TurnStarted {
        run_id: Uuid,
        turn: u32,
    },
    TextDelta {
        run_id: Uuid,
        delta: String,
    },
    TextComplete {
        run_id: Uuid,
        text: String,
    },
    ToolCallsProposed {
        run_id: Uuid,
        tool_calls: Vec<ProposedToolCall>,
    },
    WaitingForToolApproval {
        run_id: Uuid,
        pending_tool_call_ids: Vec<String>,
    },
    ToolExecutionStarted {
        run_id: Uuid,
        tool_call_id: String,
        tool_name: String,
    },
    ToolExecutionCompleted {
        run_id: Uuid,
        tool_call_id: String,
        tool_name: String,
        result: String,
        is_error: bool,
    },
    ToolRejected {
        run_id: Uuid,
        tool_call_id: String,
        tool_name: String,
        reason: String,
    },
    RetryAttempt {
        run_id: Uuid,
        attempt: u32,
        delay_ms: u64,
        reason: String,
    },
    UsageReport {
        run_id: Uuid,
        turn: u32,
        usage: Usage,
    },
    TurnCompleted {
        run_id: Uuid,
        turn: u32,
        finish_reason: String,
    },
    RunCompleted {
        run_id: Uuid,
        total_turns: u32,
        total_usage: TotalUsage,
        stop_reason: String,
    },
    RunError {
        run_id: Uuid,
        error: String,
        retryable: bool,
    },
}

impl EventPayload {
    /// The SSE `event:` name of this payload.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            EventPayload::RunStarted { .. } => "run_started",
            EventPayload::TurnStarted { .. } => "turn_started",
            EventPayload::TextDelta { .. } => "text_delta",
            EventPayload::TextComplete { .. } => "text_complete",
            EventPayload::ToolCallsProposed { .. } => "tool_calls_proposed",
            EventPayload::WaitingForToolApproval { .. } => "waiting_for_tool_approval",
            EventPayload::ToolExecutionStarted { .. } => "tool_execution_started",
            EventPayload::ToolExecutionCompleted { .. } => "tool_execution_completed",
            EventPayload::ToolRejected { .. } => "tool_rejected",
            EventPayload::RetryAttempt { .. } => "retry_attempt",
            EventPayload::UsageReport { .. } => "usage_report",
            EventPayload::TurnCompleted { .. } => "turn_completed",
            EventPayload::RunCompleted { .. } => "run_completed",
            EventPayload::RunError { .. } => "run_error",
        }
    }
}

/// The `data:` of an event frame.
#[derive(Serialize)]
pub(crate) struct Envelope<'a> {
    pub id: u64,
    pub session_id: Uuid,
    pub run_id: Option<Uuid>,
    pub timestamp: &'a str,
    pub event: &'a EventPayload,
}

/// The `data:` of the `gap_detected` frame.
#[derive(Serialize)]
pub(crate) struct GapDetected {
    pub requested_after_id: u64,
    pub oldest_available_id: u64,
    pub newest_available_id: u64,
    pub resume_hint: &'static str,
}

/// `{"error","code","request_id"}`.
#[derive(Serialize)]
pub(crate) struct ErrorBody<'a> {
    pub error: &'a str,
    pub code: &'a str,
    pub request_id: String,
}

/// A stored message, as `GET …/messages` returns it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Message {
    pub role: &'static str,
    pub content: MessageContent,
}

#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum MessageContent {
    Text(String),
    Parts(Vec<Part>),
}

/// A content part, tagged by `type` (written first, as on the server).
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Part {
    Text {
        text: String,
    },
    ToolCall {
        id: String,
        name: String,
        arguments: Value,
    },
    ToolResult {
        tool_call_id: String,
        content: Value,
    },
}

impl Message {
    pub(crate) fn system(text: &str) -> Message {
        Message {
            role: "system",
            content: MessageContent::Text(text.to_string()),
        }
    }

    pub(crate) fn user(text: &str) -> Message {
        Message {
            role: "user",
            content: MessageContent::Text(text.to_string()),
        }
    }

    pub(crate) fn assistant_text(text: &str) -> Message {
        Message {
            role: "assistant",
            content: MessageContent::Parts(vec![Part::Text {
                text: text.to_string(),
            }]),
        }
    }
}

/// `{"status","version","uptime_seconds"}`.
#[derive(Serialize)]
pub(crate) struct Health {
    pub status: &'static str,
    pub version: &'static str,
    pub uptime_seconds: u64,
}

/// The server's config block.
#[derive(Clone, Copy, Serialize)]
pub(crate) struct ServerConfig {
    pub default_model: &'static str,
    pub auto_approve_mode: &'static str,
}

pub(crate) const CONFIG: ServerConfig = ServerConfig {
    default_model: "fake/fake-model",
    auto_approve_mode: "custom",
};

/// `GET /v1/sessions/{id}`.
#[derive(Serialize)]
pub(crate) struct SessionWithConfig {
    pub session: SessionDto,
    pub config: ServerConfig,
}

/// `GET /v1/sessions`.
#[derive(Serialize)]
pub(crate) struct SessionsPage {
    pub sessions: Vec<SessionDto>,
    pub total: usize,
}

/// `GET /v1/sessions/{id}/messages`.
#[derive(Serialize)]
pub(crate) struct MessagesPage<'a> {
    pub messages: &'a [Message],
    pub total: usize,
}

/// `GET /v1/sessions/{id}/tools/pending`.
#[derive(Serialize)]
pub(crate) struct PendingTools<'a> {
    pub run_id: Option<Uuid>,
    pub tool_calls: Vec<&'a ProposedToolCall>,
}

/// `POST /v1/sessions`.
#[derive(Debug, Deserialize)]
pub(crate) struct CreateSession {
    pub title: String,
    #[serde(default)]
    pub cwd: Option<String>,
}

/// `POST /v1/sessions/{id}/messages`.
#[derive(Debug, Deserialize)]
pub(crate) struct PostMessage {
    pub message: InMessage,
    #[serde(rename = "type", default)]
    pub kind: MessageKind,
    #[serde(default)]
    pub run_id: Option<Uuid>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    #[allow(dead_code)] // accepted for fidelity; the fake has no sandbox
    pub sandbox: Option<Value>,
    #[serde(default)]
    pub context: Option<Vec<super::ContextItem>>,
    #[serde(default)]
    pub overrides: Option<Overrides>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct InMessage {
    pub role: String,
    pub content: Value,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum MessageKind {
    #[default]
    Message,
    Steering,
    FollowUp,
}

impl MessageKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MessageKind::Message => "message",
            MessageKind::Steering => "steering",
            MessageKind::FollowUp => "follow_up",
        }
    }
}

/// `overrides` of a message: only `auto_approve` changes what the fake does.
#[derive(Debug, Deserialize)]
pub(crate) struct Overrides {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub auto_approve: Option<AutoApproveWire>,
    #[serde(default)]
    #[allow(dead_code)] // recorded through the raw body; the scripted model ignores it
    pub system_prompt: Option<String>,
    #[serde(default)]
    pub max_turns: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum AutoApproveWire {
    Mode(String),
    Names(Vec<String>),
}

/// `POST …/cancel`.
#[derive(Debug, Deserialize)]
pub(crate) struct CancelBody {
    pub run_id: Uuid,
}

/// `POST …/tools/decisions` (and `/tools/resolve`).
#[derive(Debug, Deserialize)]
pub(crate) struct DecisionsBody {
    pub run_id: Uuid,
    pub decisions: std::collections::BTreeMap<String, DecisionWire>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct DecisionWire {
    pub action: Action,
    #[serde(default)]
    pub content: Option<String>,
}

/// `POST …/tools/{tool_call_id}/decision`.
#[derive(Debug, Deserialize)]
pub(crate) struct SingleDecisionBody {
    pub run_id: Uuid,
    pub action: Action,
    #[serde(default)]
    pub content: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Action {
    Accept,
    Reject,
    CustomResult,
}

impl Action {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::Reject => "reject",
            Action::CustomResult => "custom_result",
        }
    }
}

/// The `url` of each `image` part of a message `content` (none for a plain string).
pub(crate) fn image_urls(content: &Value) -> Vec<String> {
    match content {
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("image"))
            .filter_map(|p| p.get("url").and_then(Value::as_str).map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// The text of a message `content`: a string, or the `text` parts of a part list.
pub(crate) fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// RFC 3339 UTC with nanoseconds, like the server's `2026-11-21T11:25:51.695484248Z`.
///
/// Written by hand because it is the only date the fake formats; a calendar crate would be a
/// dependency for ten lines.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_nanos()
    )
}

pub(crate) fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

/// `req_<32 hex>`.
pub(crate) fn request_id() -> String {
    format!("req_{}", Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_matches_the_server_format() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000000000Z"),
            (1_795_260_351, 695_484_248, "2026-11-21T11:25:51.695484248Z"),
            (951_782_400, 1, "2000-02-29T00:00:00.000000001Z"),
            (4_107_542_399, 0, "2100-02-28T23:59:59.000000000Z"),
        ];
        for (secs, nanos, want) in cases {
            let t = UNIX_EPOCH + Duration::new(secs, nanos);
            assert_eq!(rfc3339(t), want, "formatting {secs}.{nanos}");
        }
    }

    #[test]
    fn event_payloads_serialize_externally_tagged_with_run_id_first() {
        let run_id = Uuid::nil();
        let ev = EventPayload::TurnCompleted {
            run_id,
            turn: 1,
            finish_reason: "stop".into(),
        };
        let json = serde_json::to_string(&ev).expect("serializes");
        assert_eq!(
            json,
            r#"{"TurnCompleted":{"run_id":"00000000-0000-0000-0000-000000000000","turn":1,"finish_reason":"stop"}}"#
        );
        assert_eq!(ev.name(), "turn_completed");
    }

    #[test]
    fn content_text_reads_strings_and_text_parts() {
        assert_eq!(content_text(&serde_json::json!("hi")), "hi");
        let parts = serde_json::json!([
            {"type":"text","text":"a"},
            {"type":"image","url":"x"},
            {"type":"text","text":"b"}
        ]);
        assert_eq!(content_text(&parts), "a\nb");
    }
}
