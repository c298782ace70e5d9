//! The `POST /v1/gateway/send` target format for Telegram.

use crate::model::DeliveryTarget;

/// The General topic of a forum: posting there means leaving `message_thread_id` out.
pub const GENERAL_TOPIC: i64 = 1;

/// Parses a send target:
///
/// - `<chat_id>`: a user (positive id) or a group, supergroup or channel (negative id), e.g.
///   `1111` or `-1001234567890`;
/// - `<chat_id>:<topic_id>`: a forum topic of a supergroup, e.g. `-1001234567890:7` (topic `1` is
///   General, which is posted to without a topic);
/// - `@channelusername` (or `@channelusername:<topic_id>`): a public channel or supergroup.
pub fn parse_target(target: &str) -> Result<DeliveryTarget, String> {
    let target = target.trim();
    let expected =
        "expected <chat_id>, <chat_id>:<topic_id> or @channelusername (for example 1111, \
                    -1001234567890:7 or @mychannel)";
    if target.is_empty() {
        return Err(format!("the target is empty; {expected}"));
    }
    let (chat, topic) = match target.split_once(':') {
        Some((chat, topic)) => (chat.trim(), Some(topic.trim())),
        None => (target, None),
    };
    let chat_ok = match chat.strip_prefix('@') {
        Some(name) => {
            (4..=32).contains(&name.len())
                && name.starts_with(|c: char| c.is_ascii_alphabetic())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => {
            let digits = chat.strip_prefix('-').unwrap_or(chat);
            !digits.is_empty()
                && digits.chars().all(|c| c.is_ascii_digit())
                && chat.parse::<i64>().is_ok_and(|id| id != 0)
        }
    };
    if !chat_ok {
        return Err(format!(
            "{chat:?} is not a chat id or @username; {expected}"
        ));
    }
    let thread_id = match topic {
        None => None,
        Some(topic) => match topic.parse::<i64>() {
            Ok(GENERAL_TOPIC) => None,
            Ok(id) if id > 0 && topic.chars().all(|c| c.is_ascii_digit()) => Some(id.to_string()),
            _ => {
                return Err(format!(
                    "{topic:?} is not a topic id (a positive number); {expected}"
                ))
            }
        },
    };
    Ok(DeliveryTarget {
        chat_id: chat.to_string(),
        thread_id,
        reply_to: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let ok = [
            ("1111", "1111", None),
            (" -1001234567890 ", "-1001234567890", None),
            ("-1001234567890:7", "-1001234567890", Some("7")),
            ("-1001234567890:1", "-1001234567890", None),
            ("@mychannel", "@mychannel", None),
            ("@my_group_1:12", "@my_group_1", Some("12")),
            ("-4012345", "-4012345", None),
        ];
        for (input, chat, thread) in ok {
            let target = parse_target(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(
                (
                    target.chat_id.as_str(),
                    target.thread_id.as_deref(),
                    target.reply_to
                ),
                (chat, thread, None)
            );
        }
        let bad = [
            ("", "the target is empty"),
            ("   ", "the target is empty"),
            ("ann", "\"ann\" is not a chat id"),
            ("@", "is not a chat id"),
            ("@1abc", "is not a chat id"),
            ("@a-b-c", "is not a chat id"),
            ("12a", "is not a chat id"),
            ("+123", "is not a chat id"),
            ("-", "is not a chat id"),
            ("0", "is not a chat id"),
            ("99999999999999999999", "is not a chat id"),
            ("-100123:", "is not a topic id"),
            ("-100123:0", "is not a topic id"),
            ("-100123:-7", "is not a topic id"),
            ("-100123:x", "is not a topic id"),
            ("-100123:7:8", "is not a topic id"),
        ];
        for (input, message) in bad {
            match parse_target(input) {
                Ok(t) => panic!("{input:?} must be refused, got {t:?}"),
                Err(e) => {
                    assert!(e.contains(message), "{input:?}: {e}");
                    assert!(
                        e.contains("expected <chat_id>"),
                        "the error says what is expected: {e}"
                    );
                }
            }
        }
    }
}
