//! Tool approvals as people see them: the prompt shown in a chat, the buttons' payloads, and the
//! arguments made readable (long values folded, secrets masked). Pure functions.

use serde::Serialize;
use serde_json::Value;

/// What a person can answer from a chat button.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatChoice {
    Approve,
    Reject,
    /// Approve, and create a rule so the tool passes without asking from now on.
    AlwaysAllow,
}

impl ChatChoice {
    fn code(self) -> &'static str {
        match self {
            ChatChoice::Approve => "a",
            ChatChoice::Reject => "r",
            ChatChoice::AlwaysAllow => "w",
        }
    }
}

/// The payload of a chat button: short enough for Telegram's 64-byte `callback_data`.
pub fn callback_data(choice: ChatChoice, approval_id: &str) -> String {
    format!("sb:{}:{approval_id}", choice.code())
}

/// Reads a button payload back; `None` for anything that is not one of ours.
pub fn parse_callback(data: &str) -> Option<(ChatChoice, String)> {
    let rest = data.strip_prefix("sb:")?;
    let (code, id) = rest.split_once(':')?;
    let choice = match code {
        "a" => ChatChoice::Approve,
        "r" => ChatChoice::Reject,
        "w" => ChatChoice::AlwaysAllow,
        _ => return None,
    };
    (!id.is_empty() && id.len() <= 64).then(|| (choice, id.to_string()))
}

/// What a chat shows for a waiting tool call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalPrompt {
    pub approval_id: String,
    pub tool: String,
    /// The arguments, readable and with secrets masked.
    pub arguments: String,
    pub requester: String,
    pub expires_in_minutes: u64,
}

impl ApprovalPrompt {
    /// The prompt as plain text, for platforms (or fallbacks) without rich formatting.
    pub fn text(&self) -> String {
        format!(
            "🔐 The agent wants to run {}\n{}\nRequested by {} · expires in {} min",
            self.tool, self.arguments, self.requester, self.expires_in_minutes
        )
    }
}

/// The answer to a click, shown to the person who clicked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChoiceOutcome {
    /// The click decided it; the text says what was decided.
    Decided(String),
    /// Someone answered first; the text says who, where and what.
    AlreadyDecided(String),
    /// The clicker may not decide this; nothing changed.
    NotAllowed(String),
    /// No such pending request (expired long ago, or a stale button).
    NotFound(String),
}

impl ChoiceOutcome {
    pub fn text(&self) -> &str {
        match self {
            ChoiceOutcome::Decided(t)
            | ChoiceOutcome::AlreadyDecided(t)
            | ChoiceOutcome::NotAllowed(t)
            | ChoiceOutcome::NotFound(t) => t,
        }
    }
}

/// One line telling how an approval ended, for the chat message and notifications.
pub fn outcome_line(tool: &str, action: &str, decided_by: &str, surface: &str) -> String {
    match action {
        "accept" => format!("✅ {tool}: approved by {decided_by} ({surface})"),
        "reject" => format!("❌ {tool}: rejected by {decided_by} ({surface})"),
        _ => format!("⏱ {tool}: not answered in time, rejected"),
    }
}

/// Argument names whose values are secrets.
const SECRET_KEYS: &[&str] = &[
    "token",
    "password",
    "passwd",
    "secret",
    "api_key",
    "apikey",
    "authorization",
    "private_key",
    "credential",
];
/// Longest value shown whole; longer ones are folded.
const FOLD_AT: usize = 300;

/// The arguments of a tool call as a person reads them: `key: value` lines, long values folded,
/// anything that looks like a secret masked.
pub fn readable_arguments(arguments: &Value) -> String {
    match arguments {
        Value::Object(map) if !map.is_empty() => map
            .iter()
            .map(|(key, value)| {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let shown = if is_secret_key(key) {
                    mask(&text)
                } else {
                    fold(&mask_inline_secrets(&text))
                };
                format!("{key}: {shown}")
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => "(no arguments)".to_string(),
        other => fold(&mask_inline_secrets(&other.to_string())),
    }
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEYS.iter().any(|s| key.contains(s))
}

fn mask(value: &str) -> String {
    if value.is_empty() {
        String::new()
    } else {
        "••••••".to_string()
    }
}

fn fold(text: &str) -> String {
    if text.chars().count() <= FOLD_AT {
        return text.to_string();
    }
    let head: String = text.chars().take(FOLD_AT).collect();
    format!(
        "{head}… ({} more characters)",
        text.chars().count() - FOLD_AT
    )
}

/// Masks secrets written inside a value: `KEY=value` assignments of secret-looking names, bearer
/// tokens, and well-known token shapes (Slack, GitHub, OpenAI-style keys).
fn mask_inline_secrets(text: &str) -> String {
    text.split_inclusive(char::is_whitespace)
        .map(|word| {
            let trimmed = word.trim_end();
            let tail = &word[trimmed.len()..];
            let masked = if let Some((name, value)) = trimmed.split_once('=') {
                if is_secret_key(name) && !value.is_empty() {
                    format!("{name}=••••••")
                } else {
                    trimmed.to_string()
                }
            } else if looks_like_token(trimmed) {
                "••••••".to_string()
            } else {
                trimmed.to_string()
            };
            format!("{masked}{tail}")
        })
        .collect()
}

fn looks_like_token(word: &str) -> bool {
    let prefixes = [
        "xoxb-",
        "xoxp-",
        "xapp-",
        "ghp_",
        "gho_",
        "github_pat_",
        "sk-",
        "AKIA",
    ];
    prefixes
        .iter()
        .any(|p| word.starts_with(p) && word.len() >= p.len() + 8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn callbacks_round_trip_and_reject_junk() {
        let id = "0b904f9e-530b-4a04-9250-9a3fa2312b75";
        for choice in [
            ChatChoice::Approve,
            ChatChoice::Reject,
            ChatChoice::AlwaysAllow,
        ] {
            let data = callback_data(choice, id);
            assert!(data.len() <= 64, "fits Telegram's callback_data");
            assert_eq!(parse_callback(&data), Some((choice, id.to_string())));
        }
        for junk in ["", "sb:", "sb:x:1", "sb:a:", "approve:17", "sb:a"] {
            assert_eq!(parse_callback(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn arguments_are_readable_folded_and_masked() {
        let cases = [
            (json!({"command": "ls -la"}), "command: ls -la"),
            (json!({"api_token": "abc123"}), "api_token: ••••••"),
            (
                json!({"command": "curl -H x TOKEN=abc123 https://x"}),
                "command: curl -H x TOKEN=•••••• https://x",
            ),
            (
                json!({"command": "echo xoxb-1234567890-abcdef"}),
                "command: echo ••••••",
            ),
            (json!(null), "(no arguments)"),
            (json!({"n": 3, "flag": true}), "flag: true\nn: 3"),
        ];
        for (args, want) in cases {
            assert_eq!(readable_arguments(&args), want, "{args}");
        }
        let long = readable_arguments(&json!({"content": "x".repeat(1000)}));
        assert!(long.ends_with("… (700 more characters)"), "{long}");
    }
}
