//! Watch notifications: the one-shot context a `POST /send` leaves for the next message from a chat.

use serde::{Deserialize, Serialize};

/// What a watch (a scheduled check) reported, sent along with its notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct WatchContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_output: Option<String>,
}

/// The text the agent receives for a user's message that answers a watch notification: the watch's
/// trigger or schedule, status, summary and check output, then the user's own words.
pub fn enrich(context: &WatchContext, notification: &str, user_text: &str) -> String {
    let mut out = String::from("[Watch notification context]\n");
    if let Some(trigger) = &context.trigger {
        out.push_str(&format!("Trigger: {trigger}\n"));
    }
    if let Some(schedule) = &context.schedule {
        out.push_str(&format!("Schedule: {schedule}\n"));
    }
    if let Some(status) = &context.status {
        out.push_str(&format!("Status: {status}\n"));
    }
    if let Some(summary) = &context.summary {
        out.push_str(&format!("Summary: {summary}\n"));
    }
    if !notification.is_empty() {
        out.push_str(&format!("Notification sent to the user:\n{notification}\n"));
    }
    if let Some(output) = &context.check_output {
        out.push_str(&format!("Check output:\n{output}\n"));
    }
    out.push_str("\n[User's reply]\n");
    out.push_str(user_text);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enriched_text_puts_context_before_the_users_words() {
        let context = WatchContext {
            trigger: Some("disk-check".into()),
            status: Some("failed".into()),
            summary: Some("disk 95% full".into()),
            check_output: Some("/dev/sda1 95%".into()),
            ..Default::default()
        };
        let text = enrich(&context, "Disk almost full", "clean it up");
        let order = [
            "Trigger: disk-check",
            "Status: failed",
            "Summary: disk 95% full",
            "/dev/sda1 95%",
            "clean it up",
        ];
        let mut at = 0;
        for part in order {
            let found = text[at..]
                .find(part)
                .unwrap_or_else(|| panic!("{part} missing or out of order in {text}"));
            at += found + part.len();
        }
        assert!(text.ends_with("clean it up"));
    }
}
