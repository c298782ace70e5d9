//! Slack's wire types: Socket Mode frames, the Events API payloads inside them, `block_actions`
//! clicks and the Web API answers the adapter reads. Only the fields the bridge uses are declared;
//! everything else Slack sends is ignored, so new fields never break decoding.

use serde::Deserialize;
use serde_json::Value;

/// One text frame Slack sends over the Socket Mode WebSocket.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Frame {
    /// The first frame of every connection.
    Hello(Hello),
    /// Slack is about to close this connection (`warning`, `refresh_requested`) or Socket Mode
    /// was turned off (`link_disabled`).
    Disconnect { reason: String },
    /// A payload to acknowledge: an event, a click, a slash command.
    Envelope(Envelope),
    /// A frame type the bridge does not know; ignored.
    Unknown(String),
}

impl Frame {
    /// Reads a text frame. Errors only when it is not JSON or a known frame lacks its fields.
    pub(crate) fn parse(text: &str) -> Result<Frame, serde_json::Error> {
        let value: Value = serde_json::from_str(text)?;
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        Ok(match kind.as_str() {
            "hello" => Frame::Hello(serde_json::from_value(value)?),
            "disconnect" => {
                let d: Disconnect = serde_json::from_value(value)?;
                Frame::Disconnect { reason: d.reason }
            }
            _ if value.get("envelope_id").is_some() => {
                Frame::Envelope(serde_json::from_value(value)?)
            }
            _ => Frame::Unknown(kind),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub(crate) struct Hello {
    #[serde(default)]
    pub num_connections: Option<u32>,
    #[serde(default)]
    pub debug_info: Option<DebugInfo>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub(crate) struct DebugInfo {
    /// Seconds until Slack expects to refresh this connection.
    #[serde(default)]
    pub approximate_connection_time: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
struct Disconnect {
    #[serde(default)]
    reason: String,
}

/// `{"envelope_id","type","payload","accepts_response_payload","retry_attempt"?,"retry_reason"?}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Envelope {
    pub envelope_id: String,
    /// `events_api`, `interactive` or `slash_commands`.
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub payload: Value,
    #[serde(default)]
    pub accepts_response_payload: bool,
    /// 0 on a first delivery; Slack counts its retries of an unacknowledged event here.
    #[serde(default)]
    pub retry_attempt: u32,
    #[serde(default)]
    pub retry_reason: String,
}

/// The `events_api` payload: `{"type":"event_callback","event_id","event_time","event":{…}}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct EventCallback {
    /// The same across Slack's retries of one event.
    pub event_id: String,
    #[serde(default)]
    pub event_time: i64,
    pub event: Value,
}

/// A `message` or `app_mention` event (the inner `event`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct MessageEvent {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub subtype: Option<String>,
    #[serde(default)]
    pub channel: Option<String>,
    /// `channel`, `group`, `im`, `mpim` or `app_home`; absent on `app_mention`.
    #[serde(default)]
    pub channel_type: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub bot_id: Option<String>,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub ts: String,
    /// The parent's `ts` on a reply in a thread (equal to `ts` on the parent itself).
    #[serde(default)]
    pub thread_ts: Option<String>,
    /// On a reply in a thread: who wrote the parent.
    #[serde(default)]
    pub parent_user_id: Option<String>,
    /// Files shared with the message (`file_share`).
    #[serde(default)]
    pub files: Vec<File>,
}

/// A file shared in a message. `url_private_download` is fetched with the bot token; a file the
/// workspace's plan hides from apps has `mode: "hidden_by_limit"` and no addresses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct File {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub mimetype: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub url_private_download: Option<String>,
    #[serde(default)]
    pub url_private: Option<String>,
    /// `hosted`, `snippet`, `hidden_by_limit`, `tombstone`, …
    #[serde(default)]
    pub mode: Option<String>,
    /// `slack_audio` for a voice clip recorded in Slack.
    #[serde(default)]
    pub subtype: Option<String>,
}

/// The `interactive` payload of a button click.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct BlockActions {
    #[serde(rename = "type")]
    pub kind: String,
    pub user: ActionUser,
    #[serde(default)]
    pub container: Option<Container>,
    #[serde(default)]
    pub channel: Option<IdOnly>,
    #[serde(default)]
    pub message: Option<ActionMessage>,
    #[serde(default)]
    pub actions: Vec<Action>,
    #[serde(default)]
    pub response_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct ActionUser {
    pub id: String,
    #[serde(default)]
    pub username: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Container {
    #[serde(default)]
    pub message_ts: Option<String>,
    #[serde(default)]
    pub channel_id: Option<String>,
    /// The thread the clicked message is in.
    #[serde(default)]
    pub thread_ts: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct IdOnly {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct ActionMessage {
    pub ts: String,
    #[serde(default)]
    pub thread_ts: Option<String>,
    /// The clicked message's blocks, as Slack holds them.
    #[serde(default)]
    pub blocks: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Action {
    pub action_id: String,
    #[serde(default)]
    pub block_id: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    /// When the click happened; with the user, it names one click across redeliveries.
    #[serde(default)]
    pub action_ts: Option<String>,
}

/// `auth.test`: `user_id` is the bot user, used to spot mentions and the bot's own messages.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct AuthTest {
    pub user_id: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub team_id: Option<String>,
    #[serde(default)]
    pub bot_id: Option<String>,
}

/// `apps.connections.open`: the WebSocket URL (it carries a one-time ticket; never log it).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct ConnectionsOpen {
    pub url: String,
}

/// `chat.postMessage`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Posted {
    #[serde(default)]
    pub channel: String,
    pub ts: String,
}

/// One page of `conversations.list`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct ConversationsPage {
    #[serde(default)]
    pub channels: Vec<ConversationEntry>,
    #[serde(default)]
    pub response_metadata: Option<ResponseMetadata>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct ConversationEntry {
    pub id: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct ResponseMetadata {
    #[serde(default)]
    pub next_cursor: String,
}

/// `users.info`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct UsersInfo {
    pub user: User,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct User {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub real_name: Option<String>,
    #[serde(default)]
    pub profile: Option<Profile>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Profile {
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub real_name: Option<String>,
}

impl User {
    /// The name people see: the display name, else the real name, else the handle.
    pub(crate) fn label(&self) -> Option<String> {
        let profile = self.profile.as_ref();
        [
            profile.and_then(|p| p.display_name.as_deref()),
            self.real_name.as_deref(),
            profile.and_then(|p| p.real_name.as_deref()),
            Some(self.name.as_str()),
        ]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|name| !name.is_empty())
        .map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_decode_from_the_contract_examples() {
        let hello = Frame::parse(include_str!("fixtures/hello.json")).expect("hello");
        assert_eq!(
            hello,
            Frame::Hello(Hello {
                num_connections: Some(1),
                debug_info: Some(DebugInfo {
                    approximate_connection_time: Some(3600)
                }),
            })
        );
        let disconnect =
            Frame::parse(include_str!("fixtures/disconnect_refresh.json")).expect("disconnect");
        assert_eq!(
            disconnect,
            Frame::Disconnect {
                reason: "refresh_requested".into()
            }
        );
        let Frame::Envelope(envelope) =
            Frame::parse(include_str!("fixtures/envelope_message_thread.json")).expect("envelope")
        else {
            panic!("an envelope")
        };
        assert_eq!(envelope.envelope_id, "57d6a792-4d35-4d0b-b6aa-3361493e1caf");
        assert_eq!(
            (envelope.kind.as_str(), envelope.retry_attempt),
            ("events_api", 0)
        );
        let callback: EventCallback = serde_json::from_value(envelope.payload).expect("callback");
        assert_eq!(callback.event_id, "Ev08MFMKH6");
        let event: MessageEvent = serde_json::from_value(callback.event).expect("event");
        assert_eq!(event.thread_ts.as_deref(), Some("1767225500.000200"));
        assert_eq!(event.text, "<@UBOT> deploy?");
    }

    #[test]
    fn unknown_and_broken_frames() {
        let cases: [(&str, Option<Frame>); 4] = [
            (
                r#"{"type":"something_new","x":1}"#,
                Some(Frame::Unknown("something_new".into())),
            ),
            (
                r#"{"type":"disconnect"}"#,
                Some(Frame::Disconnect {
                    reason: String::new(),
                }),
            ),
            ("not json", None),
            (r#"{"type":"events_api","envelope_id":7}"#, None),
        ];
        for (text, want) in cases {
            assert_eq!(Frame::parse(text).ok(), want, "{text}");
        }
    }

    #[test]
    fn user_labels_prefer_the_display_name() {
        let cases = [
            (
                r#"{"id":"U1","name":"ann","real_name":"Ann Lee","profile":{"display_name":"Annie"}}"#,
                Some("Annie"),
            ),
            (
                r#"{"id":"U1","name":"ann","real_name":"Ann Lee","profile":{"display_name":""}}"#,
                Some("Ann Lee"),
            ),
            (r#"{"id":"U1","name":"ann"}"#, Some("ann")),
            (r#"{"id":"U1"}"#, None),
        ];
        for (json, want) in cases {
            let user: User = serde_json::from_str(json).expect(json);
            assert_eq!(user.label().as_deref(), want, "{json}");
        }
    }
}
