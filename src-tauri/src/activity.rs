//! The Activity page's log: what the engine and the shell did, in words, kept in memory (the
//! rotating log file keeps the long history).

use std::collections::VecDeque;

use serde::Serialize;
use switchboard_engine::access::PairingState;
use switchboard_engine::model::ChannelState;
use switchboard_engine::{EngineEvent, ServerHealth};

/// How much an entry matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Info,
    Warning,
    Error,
}

/// One line of the Activity page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ActivityEntry {
    /// Increasing; the page uses it as a key.
    pub id: u64,
    pub at_ms: i64,
    pub level: Level,
    /// What kind of thing happened: the engine event's kind (`reply_delivered`, …) or the shell's
    /// (`settings_saved`, …).
    pub kind: String,
    /// What it concerns: a channel, a conversation, `server`, `settings`.
    pub scope: String,
    pub text: String,
}

/// The most recent entries, oldest dropped first.
pub struct ActivityLog {
    entries: VecDeque<ActivityEntry>,
    capacity: usize,
    next_id: u64,
}

impl ActivityLog {
    pub fn new(capacity: usize) -> Self {
        ActivityLog {
            entries: VecDeque::with_capacity(capacity.min(1024)),
            capacity: capacity.max(1),
            next_id: 1,
        }
    }

    /// Adds an entry and returns it.
    pub fn push(
        &mut self,
        at_ms: i64,
        level: Level,
        kind: &str,
        scope: &str,
        text: String,
    ) -> ActivityEntry {
        let entry = ActivityEntry {
            id: self.next_id,
            at_ms,
            level,
            kind: kind.to_owned(),
            scope: scope.to_owned(),
            text,
        };
        self.next_id += 1;
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(entry.clone());
        entry
    }

    /// Adds the entry describing an engine event, for the events worth a line.
    pub fn record(&mut self, at_ms: i64, event: &EngineEvent) -> Option<ActivityEntry> {
        let (level, kind, scope, text) = describe(event)?;
        Some(self.push(at_ms, level, kind, &scope, text))
    }

    pub fn newest_first(&self) -> Vec<ActivityEntry> {
        self.entries.iter().rev().cloned().collect()
    }
}

/// At most `max` characters of `text` on one line, with an ellipsis when cut.
pub fn preview(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    switchboard_engine::chunk::clip_chars(&flat, max)
}

/// An engine event in words: level, kind, scope and text. `None` for the events too frequent
/// to list (the growing reply).
pub fn describe(event: &EngineEvent) -> Option<(Level, &'static str, String, String)> {
    Some(match event {
        EngineEvent::ChannelState { status } => {
            let level = if status.state.is_problem() {
                Level::Warning
            } else {
                Level::Info
            };
            let mut text = format!("{} is {}", status.name, state_words(status.state));
            if status.state.is_problem() || status.state == ChannelState::RateLimited {
                if let Some(error) = &status.last_error {
                    text.push_str(&format!(": {error}"));
                }
            }
            (level, "channel_state", status.name.clone(), text)
        }
        EngineEvent::InboundAccepted {
            channel,
            routing_key,
            peer,
            queued,
            ..
        } => {
            let mut text = format!("Message from {peer} on {channel}");
            if *queued {
                text.push_str(", queued behind the current run");
            }
            (Level::Info, "inbound_accepted", routing_key.clone(), text)
        }
        EngineEvent::RunStarted { routing_key, .. } => (
            Level::Info,
            "run_started",
            routing_key.clone(),
            "The agent started working".to_owned(),
        ),
        EngineEvent::RunStreaming { .. } | EngineEvent::DesktopMessage { .. } => return None,
        EngineEvent::RunFinished {
            routing_key,
            outcome,
            ..
        } => {
            let (level, text) = match outcome.as_str() {
                "completed" => (Level::Info, "The agent finished".to_owned()),
                "cancelled" => (Level::Info, "The run was cancelled".to_owned()),
                "error" => (Level::Error, "The run failed".to_owned()),
                other => (Level::Warning, format!("The run ended ({other})")),
            };
            (level, "run_finished", routing_key.clone(), text)
        }
        EngineEvent::ReplyDelivered {
            routing_key,
            channel,
            target,
            chunks,
            ..
        } => {
            let messages = if *chunks == 1 {
                "1 message".to_owned()
            } else {
                format!("{chunks} messages")
            };
            let text = format!(
                "Reply delivered to {channel}/{} ({messages})",
                target.place_key()
            );
            (Level::Info, "reply_delivered", routing_key.clone(), text)
        }
        EngineEvent::ApprovalRequested {
            routing_key,
            tool,
            requester,
            ..
        } => {
            let text = format!("{tool} waits for approval (asked by {requester})");
            (
                Level::Warning,
                "approval_requested",
                routing_key.clone(),
                text,
            )
        }
        EngineEvent::ApprovalResolved { line, .. } => {
            let text = line.clone();
            (
                Level::Info,
                "approval_resolved",
                "approvals".to_owned(),
                text,
            )
        }
        EngineEvent::WatchNotificationDelivered {
            channel,
            target,
            text,
            ..
        } => {
            let text = format!(
                "Watch notification sent to {channel}/{}: {}",
                target.place_key(),
                preview(text, 80)
            );
            (
                Level::Info,
                "watch_notification_delivered",
                channel.clone(),
                text,
            )
        }
        EngineEvent::WatchReplyDelivered {
            channel,
            routing_key,
            target,
            ..
        } => {
            let text = format!(
                "The agent answered a watch notification in {channel}/{}",
                target.place_key()
            );
            (
                Level::Info,
                "watch_reply_delivered",
                routing_key.clone(),
                text,
            )
        }
        EngineEvent::Paused { paused } => {
            let text = if *paused {
                "Gateway paused: messages are kept, no runs start"
            } else {
                "Gateway resumed"
            };
            (Level::Info, "paused", "gateway".to_owned(), text.to_owned())
        }
        EngineEvent::ApprovalModeChanged { mode } => (
            Level::Info,
            "approval_mode_changed",
            "gateway".to_owned(),
            format!("Approval mode is now {mode}"),
        ),
        EngineEvent::ServerState { state, detail } => {
            let level = if *state == ServerHealth::Ok {
                Level::Info
            } else {
                Level::Error
            };
            let words = match state {
                ServerHealth::Ok => "reachable",
                ServerHealth::Unreachable => "unreachable",
                ServerHealth::Unauthorized => "refusing the token",
            };
            let mut text = format!("Agent server {words}");
            if let Some(detail) = detail {
                text.push_str(&format!(" ({detail})"));
            }
            (level, "server_state", "server".to_owned(), text)
        }
        EngineEvent::PairingRequested { request } => {
            let text = format!(
                "{} ({}) asks to talk to the agent on {}: pairing code {}",
                request.peer_name, request.peer_id, request.channel, request.code
            );
            (
                Level::Warning,
                "pairing_requested",
                request.channel.clone(),
                text,
            )
        }
        EngineEvent::PairingResolved {
            request,
            decided_by,
        } => {
            let text = if request.state == PairingState::Pending {
                format!(
                    "The pairing code {} of {} ({}) on {} stopped waiting: too many strangers asked after it",
                    request.code, request.peer_name, request.peer_id, request.channel
                )
            } else {
                format!(
                    "{} ({}) on {}: {} by {decided_by}",
                    request.peer_name, request.peer_id, request.channel, request.state
                )
            };
            (
                Level::Info,
                "pairing_resolved",
                request.channel.clone(),
                text,
            )
        }
        EngineEvent::Error { scope, message } => {
            (Level::Error, "error", scope.clone(), message.clone())
        }
    })
}

/// A channel state as words for a person.
pub fn state_words(state: ChannelState) -> &'static str {
    match state {
        ChannelState::Connecting => "connecting",
        ChannelState::Connected => "connected",
        ChannelState::Reconnecting => "reconnecting",
        ChannelState::RateLimited => "rate limited",
        ChannelState::AuthFailed => "refusing the credentials",
        ChannelState::Disabled => "off",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_engine::model::{ChannelStatus, DeliveryTarget};

    fn status(state: ChannelState, error: Option<&str>) -> ChannelStatus {
        ChannelStatus {
            name: "telegram".into(),
            enabled: true,
            state,
            identity: None,
            last_error: error.map(str::to_owned),
            last_activity_ms: None,
            received: 0,
            sent: 0,
        }
    }

    #[test]
    fn events_are_described_in_words() {
        let target = DeliveryTarget {
            chat_id: "42".into(),
            thread_id: Some("7".into()),
            reply_to: None,
        };
        let cases: Vec<(EngineEvent, Level, &str, &str)> = vec![
            (
                EngineEvent::ChannelState {
                    status: status(ChannelState::AuthFailed, Some("401 Unauthorized")),
                },
                Level::Warning,
                "telegram",
                "telegram is refusing the credentials: 401 Unauthorized",
            ),
            (
                EngineEvent::ChannelState {
                    status: status(ChannelState::Connected, Some("old error")),
                },
                Level::Info,
                "telegram",
                "telegram is connected",
            ),
            (
                EngineEvent::ReplyDelivered {
                    routing_key: "telegram:dm:42".into(),
                    channel: "telegram".into(),
                    target: target.clone(),
                    text: "secret reply".into(),
                    chunks: 2,
                },
                Level::Info,
                "telegram:dm:42",
                "Reply delivered to telegram/42#7 (2 messages)",
            ),
            (
                EngineEvent::ServerState {
                    state: ServerHealth::Unreachable,
                    detail: Some("connection refused".into()),
                },
                Level::Error,
                "server",
                "Agent server unreachable (connection refused)",
            ),
            (
                EngineEvent::RunFinished {
                    routing_key: "k".into(),
                    run_id: "r".into(),
                    outcome: switchboard_engine::RunOutcome::Error,
                    usage: Default::default(),
                },
                Level::Error,
                "k",
                "The run failed",
            ),
        ];
        for (event, level, scope, text) in cases {
            let (got_level, _, got_scope, got_text) = describe(&event).expect("described");
            assert_eq!(
                (got_level, got_scope.as_str(), got_text.as_str()),
                (level, scope, text),
                "{event:?}"
            );
        }
        let streaming = EngineEvent::RunStreaming {
            routing_key: "k".into(),
            run_id: "r".into(),
            delta: "partial".into(),
            len: 7,
        };
        assert!(
            describe(&streaming).is_none(),
            "the growing reply is too frequent for the log"
        );
    }

    #[test]
    fn the_log_keeps_the_newest_entries_newest_first() {
        let mut log = ActivityLog::new(3);
        for i in 0..5 {
            log.push(i, Level::Info, "test", "scope", format!("entry {i}"));
        }
        let texts: Vec<String> = log.newest_first().into_iter().map(|e| e.text).collect();
        assert_eq!(texts, ["entry 4", "entry 3", "entry 2"]);
        let ids: Vec<u64> = log.newest_first().into_iter().map(|e| e.id).collect();
        assert_eq!(ids, [5, 4, 3], "ids keep increasing across dropped entries");
    }

    #[test]
    fn previews_are_one_line_and_cut_on_characters() {
        assert_eq!(preview("disk\n95%  full", 80), "disk 95% full");
        assert_eq!(preview("ééééé", 3), "ééé…");
        assert_eq!(preview("short", 5), "short");
    }
}
