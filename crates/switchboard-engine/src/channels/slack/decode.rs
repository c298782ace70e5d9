//! What a Socket Mode envelope means for the bridge, and the `/send` target format: pure
//! functions over values.
//!
//! # Conversations and threads
//!
//! - A direct message (`channel_type: im`) is a [`ChatType::Direct`] conversation; the reply goes
//!   to the same DM, flat (or into the DM thread the user wrote in).
//! - In a channel (`channel`, `group`, `mpim`) every conversation is a **thread**: a top-level
//!   mention starts one under the mentioning message (chat type
//!   `Thread { group_id: channel, thread_id: <its ts> }`) and the reply goes there, so the channel
//!   stays readable and the user's follow-ups in that thread reach the same agent session. A
//!   message in an existing thread belongs to that thread (`thread_id` = the parent's `ts`,
//!   never a reply's). This is what people expect of a Slack bot, and it keeps "one place, one
//!   session": a reply never lands where a follow-up would start a different conversation.
//! - With `require_mention` (the default) a channel message is answered only when it mentions
//!   the bot (`<@UBOT>` in the text, or an `app_mention` event) or is written in a thread the bot
//!   takes part in (it was mentioned there, posted there, or wrote the parent). Without it,
//!   every message is.

use serde_json::Value;

use super::text;
use super::wire::{BlockActions, Envelope, EventCallback, MessageEvent};
use crate::model::{Attachment, AttachmentKind, ChatType, DeliveryTarget, InboundMessage, Peer};

/// The channel's name in routing keys, dedup keys and the API.
pub(crate) const NAME: &str = "slack";

/// A button click on a message the bot posted (a `block_actions` interaction), decoded for the
/// approvals flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ButtonClick {
    /// Who clicked.
    pub user: String,
    pub user_name: Option<String>,
    /// Where the clicked message is.
    pub channel: String,
    pub message_ts: String,
    /// The thread the clicked message is in (the parent's `ts`).
    pub thread_ts: Option<String>,
    pub action_id: String,
    pub block_id: Option<String>,
    pub value: Option<String>,
    /// When the click happened (the same on a redelivery of the click).
    pub action_ts: Option<String>,
    /// The `mrkdwn` text of the clicked message's first block when it is a section (on an
    /// approval prompt, the summary of the call), as Slack holds the message.
    pub summary: Option<String>,
    /// Where Slack takes a replacement for the message, for a while.
    pub response_url: Option<String>,
}

/// What an envelope asks of the bridge. Every envelope is acknowledged whatever its outcome,
/// a [`Outcome::Message`] only once it is stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// A message for the agent. `thread` is the channel thread the bot takes part in from now on.
    Message {
        message: InboundMessage,
        thread: Option<(String, String)>,
    },
    /// The bot's own post coming back; it shows which thread the bot takes part in.
    OwnMessage { thread: Option<(String, String)> },
    /// A button click.
    Click(ButtonClick),
    /// Nothing for the bridge, and why (for the debug log).
    Ignore(&'static str),
}

/// Decides what an envelope means. `in_thread(channel, thread_ts)` says whether the bot takes
/// part in a channel thread; it is asked only about unaddressed thread replies.
pub(crate) fn classify(
    envelope: &Envelope,
    bot_user_id: &str,
    require_mention: bool,
    in_thread: &mut dyn FnMut(&str, &str) -> bool,
) -> Outcome {
    match envelope.kind.as_str() {
        "events_api" => {
            let Ok(callback) = serde_json::from_value::<EventCallback>(envelope.payload.clone())
            else {
                return Outcome::Ignore("not an event callback");
            };
            let kind = callback.event.get("type").and_then(Value::as_str);
            if !matches!(kind, Some("message" | "app_mention")) {
                return Outcome::Ignore("an event type the bridge does not handle");
            }
            let Ok(event) = serde_json::from_value::<MessageEvent>(callback.event) else {
                return Outcome::Ignore("a malformed message event");
            };
            message(
                &callback.event_id,
                callback.event_time,
                event,
                bot_user_id,
                require_mention,
                in_thread,
            )
        }
        "interactive" => click(&envelope.payload),
        "slash_commands" => slash_command(&envelope.payload),
        _ => Outcome::Ignore("an envelope type the bridge does not handle"),
    }
}

/// A slash command (`/status`, registered in the app's manifest): a message with the command's
/// text, from the person who typed it, in the conversation where they did (a DM, or the channel
/// itself: a slash command carries no thread). Answered like any message there.
fn slash_command(payload: &Value) -> Outcome {
    let field = |name: &str| {
        payload
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let (command, user, channel, trigger) = (
        field("command"),
        field("user_id"),
        field("channel_id"),
        field("trigger_id"),
    );
    if !command.starts_with('/') || user.is_empty() || channel.is_empty() || trigger.is_empty() {
        return Outcome::Ignore("a malformed slash command");
    }
    let args = field("text").trim();
    let text = if args.is_empty() {
        command.to_owned()
    } else {
        format!("{command} {args}")
    };
    let chat = if channel.starts_with('D') {
        ChatType::Direct
    } else {
        ChatType::Group {
            id: channel.to_owned(),
        }
    };
    let name = Some(field("user_name"))
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    Outcome::Message {
        message: InboundMessage {
            channel: NAME.to_owned(),
            peer: Peer {
                id: user.to_owned(),
                name,
            },
            chat,
            text,
            target: DeliveryTarget::chat(channel),
            dedup_keys: vec![format!("{NAME}:slash:{trigger}")],
            received_at_ms: crate::model::now_ms(),
            attachments: Vec::new(),
        },
        thread: None,
    }
}

/// The de-duplication keys of a message event: the event (same across Slack's retries) and the
/// message (same for the `message` and `app_mention` copies of one message).
pub(crate) fn dedup_keys(event_id: &str, channel: &str, ts: &str) -> Vec<String> {
    vec![
        format!("{NAME}:event:{event_id}"),
        format!("{NAME}:msg:{channel}:{ts}"),
    ]
}

fn message(
    event_id: &str,
    event_time: i64,
    event: MessageEvent,
    bot: &str,
    require_mention: bool,
    in_thread: &mut dyn FnMut(&str, &str) -> bool,
) -> Outcome {
    let Some(channel) = event.channel.filter(|c| !c.is_empty()) else {
        return Outcome::Ignore("a message without a channel");
    };
    if event.ts.is_empty() {
        return Outcome::Ignore("a message without a ts");
    }
    // Replies name their parent; on the parent itself `thread_ts` equals `ts`.
    let parent = event.thread_ts.filter(|t| !t.is_empty() && *t != event.ts);
    // The bot's own posts come back as events; answering them would loop.
    if event.user.as_deref() == Some(bot) {
        return Outcome::OwnMessage {
            thread: parent.map(|t| (channel, t)),
        };
    }
    if event.bot_id.is_some() {
        return Outcome::Ignore("another bot's message");
    }
    if !matches!(
        event.subtype.as_deref(),
        None | Some("file_share" | "thread_broadcast")
    ) {
        return Outcome::Ignore("a message subtype the bridge does not handle");
    }
    let Some(user) = event.user.filter(|u| !u.is_empty()) else {
        return Outcome::Ignore("a message without a sender");
    };
    let direct = match event.channel_type.as_deref() {
        Some("im") => true,
        Some("channel" | "group" | "mpim") => false,
        Some(_) => return Outcome::Ignore("a message outside conversations (app home)"),
        // `app_mention` has no channel type; it is never sent for DMs, whose ids start with D.
        None => channel.starts_with('D'),
    };
    let (chat, target, thread) = if direct {
        let target = DeliveryTarget {
            chat_id: channel,
            thread_id: parent,
            reply_to: Some(event.ts.clone()),
        };
        (ChatType::Direct, target, None)
    } else {
        let mentioned = event.kind == "app_mention" || text::mentions(&event.text, bot);
        // A thread under the bot's own message (a notification, say) is one it takes part in.
        let under_own = event.parent_user_id.as_deref() == Some(bot);
        let addressed = mentioned
            || !require_mention
            || parent
                .as_deref()
                .is_some_and(|t| under_own || in_thread(&channel, t));
        if !addressed {
            return Outcome::Ignore("a channel message not addressed to the bot");
        }
        let thread_ts = parent.unwrap_or_else(|| event.ts.clone());
        let chat = ChatType::Thread {
            group_id: channel.clone(),
            thread_id: thread_ts.clone(),
        };
        let target = DeliveryTarget {
            chat_id: channel.clone(),
            thread_id: Some(thread_ts.clone()),
            reply_to: Some(event.ts.clone()),
        };
        (chat, target, Some((channel, thread_ts)))
    };
    let text = text::plain(&event.text, bot);
    let attachments = attachments(&event.files);
    if text.is_empty() && attachments.is_empty() {
        return Outcome::Ignore("a message without text");
    }
    let message = InboundMessage {
        channel: NAME.to_owned(),
        peer: Peer::new(user),
        chat,
        text,
        dedup_keys: dedup_keys(event_id, &target.chat_id, &event.ts),
        target,
        received_at_ms: ts_ms(&event.ts).unwrap_or(event_time.saturating_mul(1000)),
        attachments,
    };
    Outcome::Message { message, thread }
}

/// The files of a message, each fetched later from its `url_private_download`. A file Slack
/// hides from apps (a plan's limit, a deleted file) is kept with no address, so the person is
/// told why it did not reach the agent.
fn attachments(files: &[super::wire::File]) -> Vec<Attachment> {
    files
        .iter()
        .map(|file| {
            let mime = file.mimetype.clone().filter(|m| !m.is_empty());
            let kind = match (file.subtype.as_deref(), mime.as_deref()) {
                (Some("slack_audio"), _) => AttachmentKind::Voice,
                (_, Some(m)) if m.starts_with("image/") => AttachmentKind::Image,
                (_, Some(m)) if m.starts_with("audio/") => AttachmentKind::Audio,
                (_, Some(m)) if m.starts_with("video/") => AttachmentKind::Video,
                _ => AttachmentKind::Document,
            };
            let source = file
                .url_private_download
                .clone()
                .or_else(|| file.url_private.clone())
                .unwrap_or_default();
            Attachment {
                name: file.name.clone(),
                mime,
                size: file.size,
                ..Attachment::new(kind, source)
            }
        })
        .collect()
}

fn click(payload: &Value) -> Outcome {
    let Ok(actions) = serde_json::from_value::<BlockActions>(payload.clone()) else {
        return Outcome::Ignore("a malformed interaction");
    };
    if actions.kind != "block_actions" {
        return Outcome::Ignore("an interaction the bridge does not handle");
    }
    let container = actions.container.as_ref();
    let channel = container
        .and_then(|c| c.channel_id.clone())
        .or(actions.channel.map(|c| c.id));
    let message = actions.message.as_ref();
    let thread_ts = message
        .and_then(|m| m.thread_ts.clone())
        .or_else(|| container.and_then(|c| c.thread_ts.clone()))
        .filter(|t| !t.is_empty());
    let message_ts = container
        .and_then(|c| c.message_ts.clone())
        .or(message.map(|m| m.ts.clone()));
    let summary = message
        .and_then(|m| m.blocks.first())
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("section"))
        .and_then(|b| b.get("text"))
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("mrkdwn"))
        .and_then(|t| t.get("text"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let (Some(channel), Some(message_ts), Some(action)) =
        (channel, message_ts, actions.actions.into_iter().next())
    else {
        return Outcome::Ignore("a click without a message or an action");
    };
    Outcome::Click(ButtonClick {
        user: actions.user.id,
        user_name: actions.user.username,
        // A thread's parent names itself as its thread; that is no thread to post into.
        thread_ts: thread_ts.filter(|t| *t != message_ts),
        channel,
        message_ts,
        action_id: action.action_id,
        block_id: action.block_id,
        value: action.value,
        action_ts: action.action_ts,
        summary,
        response_url: actions.response_url,
    })
}

/// A message `ts` (`"1767225600.000100"`, seconds and microseconds) as Unix milliseconds.
pub(crate) fn ts_ms(ts: &str) -> Option<i64> {
    let (secs, micros) = ts.split_once('.').unwrap_or((ts, "0"));
    let secs: i64 = secs.parse().ok()?;
    let micros: i64 = micros.parse().ok()?;
    Some(secs.checked_mul(1000)? + micros / 1000)
}

/// Parses a `POST /v1/gateway/send` target:
///
/// - `C0123456789` — a channel (or `G…` a private channel, `D…` a DM), top level;
/// - `C0123456789:1767225600.000100` — a thread in it, named by the parent message's `ts`;
/// - `U0123456789` (or `W…`) — a direct message to that user (Slack opens the DM).
pub(crate) fn parse_target(target: &str) -> Result<DeliveryTarget, String> {
    const EXPECTED: &str = "expected <channel_id> or <channel_id>:<thread_ts> (e.g. C0123456789 or \
                            C0123456789:1767225600.000100), or a user id (U0123456789) for a direct message";
    let target = target.trim();
    let (id, thread) = match target.split_once(':') {
        Some((id, thread)) => (id, Some(thread)),
        None => (target, None),
    };
    let id_ok = id.len() >= 2
        && id.starts_with(['C', 'G', 'D', 'U', 'W'])
        && id
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if !id_ok {
        return Err(format!("{target:?} is not a Slack target; {EXPECTED}"));
    }
    let Some(thread) = thread else {
        return Ok(DeliveryTarget::chat(id));
    };
    let ts_ok = thread.split_once('.').is_some_and(|(s, m)| {
        !s.is_empty() && !m.is_empty() && (s.to_owned() + m).chars().all(|c| c.is_ascii_digit())
    });
    if !ts_ok {
        return Err(format!(
            "{thread:?} is not a message ts like 1767225600.000100; {EXPECTED}"
        ));
    }
    if id.starts_with(['U', 'W']) {
        return Err(format!(
            "a thread is named by its conversation's id (C…, G… or D…), not a user id; {EXPECTED}"
        ));
    }
    Ok(DeliveryTarget {
        chat_id: id.to_owned(),
        thread_id: Some(thread.to_owned()),
        reply_to: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::slack::wire::Frame;

    fn envelope(json: &str) -> Envelope {
        match Frame::parse(json) {
            Ok(Frame::Envelope(envelope)) => envelope,
            other => panic!("not an envelope: {other:?}"),
        }
    }

    /// An `events_api` envelope around one event.
    fn event(event: Value) -> Envelope {
        envelope(
            &serde_json::json!({
                "envelope_id": "env-1", "type": "events_api", "accepts_response_payload": false,
                "payload": {"type": "event_callback", "event_id": "Ev1", "event_time": 1767225600, "event": event}
            })
            .to_string(),
        )
    }

    fn never(_: &str, _: &str) -> bool {
        false
    }

    fn classify_default(envelope: &Envelope) -> Outcome {
        classify(envelope, "UBOT", true, &mut never)
    }

    #[test]
    fn the_contract_example_is_a_thread_reply_addressed_to_the_bot() {
        let outcome = classify_default(&envelope(include_str!(
            "fixtures/envelope_message_thread.json"
        )));
        let Outcome::Message { message, thread } = outcome else {
            panic!("a message, got {outcome:?}")
        };
        assert_eq!(message.channel, "slack");
        assert_eq!(message.peer, Peer::new("U1"));
        assert_eq!(message.text, "deploy?", "the mention is stripped");
        assert_eq!(
            message.chat,
            ChatType::Thread {
                group_id: "C1".into(),
                thread_id: "1767225500.000200".into()
            },
            "a reply belongs to its parent's thread"
        );
        assert_eq!(
            message.target,
            DeliveryTarget {
                chat_id: "C1".into(),
                thread_id: Some("1767225500.000200".into()),
                reply_to: Some("1767225600.000100".into())
            },
            "the reply goes to the parent ts, never the reply's"
        );
        assert_eq!(
            message.dedup_keys,
            vec!["slack:event:Ev08MFMKH6", "slack:msg:C1:1767225600.000100"]
        );
        assert_eq!(message.received_at_ms, 1_767_225_600_000);
        assert_eq!(thread, Some(("C1".into(), "1767225500.000200".into())));
    }

    #[test]
    fn a_shared_file_comes_with_the_message_and_a_hidden_one_without_an_address() {
        let Outcome::Message { message, .. } =
            classify_default(&envelope(include_str!("fixtures/envelope_file_share.json")))
        else {
            panic!("a file share is a message")
        };
        assert_eq!(message.text, "what is this?");
        let kinds: Vec<_> = message
            .attachments
            .iter()
            .map(|a| (a.kind, a.name.clone(), a.source.clone()))
            .collect();
        assert_eq!(
            kinds,
            [
                (
                    crate::model::AttachmentKind::Image,
                    Some("Screenshot 2026-01-01.png".to_owned()),
                    "https://files.slack.com/files-pri/T0001-F0A1B2C3D/download/screenshot_2026-01-01.png".to_owned()
                ),
                (crate::model::AttachmentKind::Document, None, String::new()),
            ],
            "the hidden file is kept, with no address, so the person is told"
        );
    }

    #[test]
    fn a_mention_and_its_message_event_share_the_message_key() {
        let a = classify_default(&envelope(include_str!(
            "fixtures/envelope_message_thread.json"
        )));
        let b = classify_default(&envelope(include_str!(
            "fixtures/envelope_app_mention.json"
        )));
        let (Outcome::Message { message: a, .. }, Outcome::Message { message: b, .. }) = (a, b)
        else {
            panic!("both are messages")
        };
        assert_ne!(a.dedup_keys[0], b.dedup_keys[0], "different event ids");
        assert_eq!(
            a.dedup_keys[1], b.dedup_keys[1],
            "one message: one (channel, ts) key"
        );
        assert_eq!(
            (a.chat, a.target, a.text),
            (b.chat, b.target, b.text),
            "the same conversation either way"
        );
    }

    #[test]
    fn a_redelivered_dm_is_decoded_like_a_first_delivery() {
        let envelope = envelope(include_str!("fixtures/envelope_dm_retry.json"));
        assert_eq!(
            (envelope.retry_attempt, envelope.retry_reason.as_str()),
            (1, "timeout")
        );
        let Outcome::Message { message, thread } = classify_default(&envelope) else {
            panic!("a message")
        };
        assert_eq!(message.chat, ChatType::Direct);
        assert_eq!(message.text, "is 1 < 2 && 3 > 2?", "entities are unescaped");
        assert_eq!(
            message.target,
            DeliveryTarget {
                chat_id: "D1".into(),
                thread_id: None,
                reply_to: Some("1767225700.000300".into())
            },
            "a DM is answered flat"
        );
        assert_eq!(thread, None);
    }

    #[test]
    fn the_bot_and_unhandled_subtypes_are_not_answered() {
        let own = classify_default(&envelope(include_str!("fixtures/envelope_bot_echo.json")));
        assert_eq!(
            own,
            Outcome::OwnMessage {
                thread: Some(("C1".into(), "1767225600.000100".into()))
            },
            "the bot's own post only tells which thread it is in"
        );
        let changed = classify_default(&envelope(include_str!(
            "fixtures/envelope_message_changed.json"
        )));
        assert!(matches!(changed, Outcome::Ignore(_)), "{changed:?}");
    }

    #[test]
    fn which_messages_are_answered() {
        use serde_json::json;
        let ts = "1767225600.000100";
        let parent = "1767225500.000200";
        // (case, event, require_mention, bot in the thread, expected chat type or None if ignored)
        let thread = |id: &str| {
            Some(ChatType::Thread {
                group_id: "C1".into(),
                thread_id: id.into(),
            })
        };
        let cases: Vec<(&str, Value, bool, bool, Option<ChatType>)> = vec![
            (
                "dm",
                json!({"type":"message","channel":"D1","channel_type":"im","user":"U1","text":"hi","ts":ts}),
                true,
                false,
                Some(ChatType::Direct),
            ),
            (
                "channel, no mention",
                json!({"type":"message","channel":"C1","channel_type":"channel","user":"U1","text":"hi","ts":ts}),
                true,
                false,
                None,
            ),
            (
                "channel, mention",
                json!({"type":"message","channel":"C1","channel_type":"channel","user":"U1","text":"<@UBOT> hi","ts":ts}),
                true,
                false,
                thread(ts),
            ),
            (
                "channel, mention of someone else",
                json!({"type":"message","channel":"C1","channel_type":"channel","user":"U1","text":"<@U2> hi","ts":ts}),
                true,
                false,
                None,
            ),
            (
                "app_mention",
                json!({"type":"app_mention","channel":"C1","user":"U1","text":"<@UBOT> hi","ts":ts}),
                true,
                false,
                thread(ts),
            ),
            (
                "channel, mention not required",
                json!({"type":"message","channel":"C1","channel_type":"channel","user":"U1","text":"hi","ts":ts}),
                false,
                false,
                thread(ts),
            ),
            (
                "private channel, mention",
                json!({"type":"message","channel":"G1","channel_type":"group","user":"U1","text":"<@UBOT> hi","ts":ts}),
                true,
                false,
                Some(ChatType::Thread {
                    group_id: "G1".into(),
                    thread_id: ts.into(),
                }),
            ),
            (
                "thread reply, bot not in it",
                json!({"type":"message","channel":"C1","channel_type":"channel","user":"U1","text":"hi","ts":ts,"thread_ts":parent}),
                true,
                false,
                None,
            ),
            (
                "thread reply, bot in it",
                json!({"type":"message","channel":"C1","channel_type":"channel","user":"U1","text":"hi","ts":ts,"thread_ts":parent}),
                true,
                true,
                thread(parent),
            ),
            (
                "thread reply under the bot's own post",
                json!({"type":"message","channel":"C1","channel_type":"channel","user":"U1","text":"hi","ts":ts,"thread_ts":parent,"parent_user_id":"UBOT"}),
                true,
                false,
                thread(parent),
            ),
            (
                "thread parent with thread_ts == ts",
                json!({"type":"message","channel":"C1","channel_type":"channel","user":"U1","text":"<@UBOT> hi","ts":ts,"thread_ts":ts}),
                true,
                false,
                thread(ts),
            ),
            (
                "thread broadcast",
                json!({"type":"message","subtype":"thread_broadcast","channel":"C1","channel_type":"channel","user":"U1","text":"<@UBOT> hi","ts":ts,"thread_ts":parent}),
                true,
                false,
                thread(parent),
            ),
            (
                "own message",
                json!({"type":"message","channel":"D1","channel_type":"im","user":"UBOT","bot_id":"B1","text":"hi","ts":ts}),
                true,
                false,
                None,
            ),
            (
                "another bot",
                json!({"type":"message","channel":"D1","channel_type":"im","user":"U9","bot_id":"B9","text":"hi","ts":ts}),
                true,
                false,
                None,
            ),
            (
                "bot_message subtype",
                json!({"type":"message","subtype":"bot_message","channel":"D1","channel_type":"im","bot_id":"B9","text":"hi","ts":ts}),
                true,
                false,
                None,
            ),
            (
                "channel_join",
                json!({"type":"message","subtype":"channel_join","channel":"C1","channel_type":"channel","user":"U1","text":"<@U1> has joined the channel","ts":ts}),
                false,
                false,
                None,
            ),
            (
                "message_deleted",
                json!({"type":"message","subtype":"message_deleted","channel":"D1","channel_type":"im","ts":ts,"deleted_ts":parent}),
                true,
                false,
                None,
            ),
            (
                "bare mention",
                json!({"type":"message","channel":"C1","channel_type":"channel","user":"U1","text":"<@UBOT>","ts":ts}),
                true,
                false,
                None,
            ),
            (
                "app home",
                json!({"type":"message","channel":"D1","channel_type":"app_home","user":"U1","text":"hi","ts":ts}),
                true,
                false,
                None,
            ),
            (
                "reaction event",
                json!({"type":"reaction_added","user":"U1","reaction":"eyes","item":{"type":"message","channel":"C1","ts":ts}}),
                true,
                false,
                None,
            ),
        ];
        for (case, json, require_mention, bot_in_thread, want) in cases {
            let mut asked = Vec::new();
            let mut in_thread = |c: &str, t: &str| {
                asked.push((c.to_owned(), t.to_owned()));
                bot_in_thread
            };
            let outcome = classify(&event(json), "UBOT", require_mention, &mut in_thread);
            let got = match outcome {
                Outcome::Message { message, .. } => Some(message.chat),
                _ => None,
            };
            assert_eq!(got, want, "{case}");
            assert!(
                asked.iter().all(|(_, t)| t == parent),
                "{case}: only a reply's thread is looked up"
            );
        }
    }

    #[test]
    fn clicks_are_decoded_for_the_approvals_flow() {
        let outcome = classify_default(&envelope(include_str!(
            "fixtures/envelope_block_actions.json"
        )));
        assert_eq!(
            outcome,
            Outcome::Click(ButtonClick {
                user: "U1".into(),
                user_name: Some("ann".into()),
                channel: "C1".into(),
                message_ts: "1548261231.000200".into(),
                thread_ts: None,
                action_id: "approve".into(),
                block_id: Some("b1".into()),
                value: Some("17".into()),
                action_ts: Some("1548426417.840180".into()),
                summary: None,
                response_url: Some("https://hooks.slack.com/actions/T1/123/abc".into()),
            })
        );
    }

    #[test]
    fn a_click_in_a_thread_knows_its_thread() {
        use serde_json::json;
        let click = |message: Value, container: Value| {
            let payload = json!({
                "type": "block_actions", "user": {"id": "U1"}, "container": container,
                "message": message, "actions": [{"action_id": "a", "value": "v"}],
            });
            let json = json!({"envelope_id": "e", "type": "interactive", "payload": payload});
            match classify_default(&envelope(&json.to_string())) {
                Outcome::Click(click) => click,
                other => panic!("a click, got {other:?}"),
            }
        };
        let in_thread = click(
            json!({"ts": "2.0", "thread_ts": "1.0"}),
            json!({"message_ts": "2.0", "channel_id": "C1"}),
        );
        assert_eq!(in_thread.thread_ts.as_deref(), Some("1.0"));
        let from_container = click(
            json!({"ts": "2.0"}),
            json!({"message_ts": "2.0", "channel_id": "C1", "thread_ts": "1.0"}),
        );
        assert_eq!(from_container.thread_ts.as_deref(), Some("1.0"));
        let parent = click(
            json!({"ts": "2.0", "thread_ts": "2.0"}),
            json!({"message_ts": "2.0", "channel_id": "C1"}),
        );
        assert_eq!(
            parent.thread_ts, None,
            "a thread's parent is at the top level"
        );
        assert_eq!(parent.action_ts, None);
        let prompt = click(
            json!({"ts": "2.0", "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": "*run* `ls`"}},
                {"type": "actions", "elements": []},
            ]}),
            json!({"message_ts": "2.0", "channel_id": "C1"}),
        );
        assert_eq!(prompt.summary.as_deref(), Some("*run* `ls`"));
        let closed = click(
            json!({"ts": "2.0", "blocks": [{"type": "section", "text": {"type": "plain_text", "text": "done"}}]}),
            json!({"message_ts": "2.0", "channel_id": "C1"}),
        );
        assert_eq!(closed.summary, None, "only a mrkdwn section is a summary");
    }

    #[test]
    fn other_envelopes_are_ignored() {
        let cases = [
            r#"{"envelope_id":"e","type":"slash_commands","payload":{"command":"/x"}}"#,
            r#"{"envelope_id":"e","type":"interactive","payload":{"type":"view_submission","user":{"id":"U1"}}}"#,
            r#"{"envelope_id":"e","type":"events_api","payload":{"type":"event_callback"}}"#,
            r#"{"envelope_id":"e","type":"something_new","payload":{}}"#,
        ];
        for json in cases {
            assert!(
                matches!(classify_default(&envelope(json)), Outcome::Ignore(_)),
                "{json}"
            );
        }
    }

    #[test]
    fn timestamps_to_milliseconds() {
        let cases = [
            ("1767225600.000100", Some(1_767_225_600_000)),
            ("1767225600.999999", Some(1_767_225_600_999)),
            ("1767225600", Some(1_767_225_600_000)),
            ("x.1", None),
            ("", None),
        ];
        for (ts, want) in cases {
            assert_eq!(ts_ms(ts), want, "{ts}");
        }
    }

    #[test]
    fn send_targets() {
        let thread = |c: &str, t: &str| DeliveryTarget {
            chat_id: c.into(),
            thread_id: Some(t.into()),
            reply_to: None,
        };
        let ok = [
            ("C0123456789", DeliveryTarget::chat("C0123456789")),
            ("  G42 ", DeliveryTarget::chat("G42")),
            ("D1", DeliveryTarget::chat("D1")),
            ("U0123456789", DeliveryTarget::chat("U0123456789")),
            (
                "C0123456789:1767225600.000100",
                thread("C0123456789", "1767225600.000100"),
            ),
            ("D1:1767225600.000100", thread("D1", "1767225600.000100")),
        ];
        for (target, want) in ok {
            assert_eq!(parse_target(target), Ok(want), "{target}");
        }
        let bad = [
            ("", "is not a Slack target"),
            ("#general", "is not a Slack target"),
            ("c0123", "is not a Slack target"),
            ("X123", "is not a Slack target"),
            ("C1:", "is not a message ts"),
            ("C1:abc", "is not a message ts"),
            ("C1:1767225600", "is not a message ts"),
            ("U1:1767225600.000100", "not a user id"),
        ];
        for (target, want) in bad {
            let error = parse_target(target).expect_err(target);
            assert!(error.contains(want), "{target}: {error}");
            assert!(
                error.contains("<channel_id>:<thread_ts>"),
                "{target}: the error says what is expected: {error}"
            );
        }
    }
}
