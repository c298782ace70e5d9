//! Turning a Telegram update into what the engine needs: pure functions over values.
//!
//! The rules (contract section 1.3 and pitfalls 1.5):
//! - a private chat is a direct conversation; a group or supergroup is a group conversation; a forum
//!   topic is a thread, but only when `is_topic_message` is true — `message_thread_id` alone also
//!   marks reply threads and the General topic, where sending it back fails;
//! - in groups the bot answers only when addressed (a mention of its username, a command, a text
//!   mention of it, or a reply to one of its messages) unless `require_mention` is off;
//! - messages from bots (itself included) are never processed;
//! - the mention is stripped from the text the agent sees.

use crate::model::{Attachment, AttachmentKind, ChatType, DeliveryTarget, InboundMessage, Peer};

use super::wire::{ChatKind, Message, MessageEntity, Update};

/// The bot's own account, as `getMe` returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bot {
    pub id: i64,
    pub username: String,
}

/// What one update asks of the adapter.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A message for the agent.
    Message(Box<InboundMessage>),
    /// A button was pressed; it must be answered quickly so the client stops its spinner.
    Callback {
        id: String,
        data: Option<String>,
        /// Who pressed it: the user id, with the name people know them by.
        from: Peer,
        chat_id: Option<i64>,
        message_id: Option<i64>,
    },
    /// A group became a supergroup: messages for `from` must go to `to`.
    Migrated { from: i64, to: i64 },
    /// Nothing to do, and why (for the debug log).
    Skip(&'static str),
}

/// The keys that identify an update and its message, so a redelivery is dropped whichever way it
/// comes back: the update id, and the message's chat and id (an edit of a message that was already
/// accepted counts as seen).
pub fn dedup_keys(bot: &Bot, update_id: i64, message: Option<&Message>) -> Vec<String> {
    let mut keys = vec![format!("telegram:update:{}:{update_id}", bot.id)];
    if let Some(message) = message {
        keys.push(format!(
            "telegram:msg:{}:{}",
            message.chat.id, message.message_id
        ));
    }
    keys
}

/// Decodes one update.
pub fn decode(update: &Update, bot: &Bot, require_mention: bool) -> Decoded {
    if let Some(callback) = &update.callback_query {
        return Decoded::Callback {
            id: callback.id.clone(),
            data: callback.data.clone(),
            from: Peer {
                id: callback.from.id.to_string(),
                name: Some(callback.from.display_name()),
            },
            chat_id: callback.message.as_ref().map(|m| m.chat.id),
            message_id: callback.message.as_ref().map(|m| m.message_id),
        };
    }
    let Some(message) = update.message.as_ref().or(update.edited_message.as_ref()) else {
        return Decoded::Skip("an update type the bridge does not handle");
    };
    if let Some(to) = message.migrate_to_chat_id {
        return Decoded::Migrated {
            from: message.chat.id,
            to,
        };
    }
    if let Some(from) = message.migrate_from_chat_id {
        return Decoded::Migrated {
            from,
            to: message.chat.id,
        };
    }
    let Some(sender) = &message.from else {
        return Decoded::Skip("no sender (a channel post)");
    };
    // Bots never see other bots' messages in groups, but a bot's own or another bot's message can
    // still reach it (a private chat with topics, a forwarded update through a proxy).
    if sender.is_bot || sender.id == bot.id {
        return Decoded::Skip("sent by a bot");
    }
    let attachments = attachments(message);
    let (text, entities) = message.text_and_entities().unwrap_or(("", &[]));
    if text.trim().is_empty() && attachments.is_empty() {
        return Decoded::Skip("no text");
    }
    let chat_id = message.chat.id.to_string();
    let topic = message
        .is_topic_message
        .then_some(message.message_thread_id)
        .flatten();
    let (chat, group) = match (message.chat.kind, topic) {
        (ChatKind::Private | ChatKind::Group | ChatKind::Supergroup, Some(topic)) => (
            ChatType::Thread {
                group_id: chat_id.clone(),
                thread_id: topic.to_string(),
            },
            message.chat.kind != ChatKind::Private,
        ),
        (ChatKind::Private, None) => (ChatType::Direct, false),
        (ChatKind::Group | ChatKind::Supergroup, None) => (
            ChatType::Group {
                id: chat_id.clone(),
            },
            true,
        ),
        (ChatKind::Channel | ChatKind::Other, _) => {
            return Decoded::Skip("not a private chat or a group")
        }
    };
    let address = address(message, text, entities, bot);
    if group && require_mention && !address.addressed {
        return Decoded::Skip("not addressed to the bot");
    }
    let stripped = strip(text, &address.strip);
    let text = if stripped.is_empty() {
        text.trim().to_string()
    } else {
        stripped
    };
    if text.is_empty() && attachments.is_empty() {
        return Decoded::Skip("no text");
    }
    let date = message.edit_date.unwrap_or(message.date);
    Decoded::Message(Box::new(InboundMessage {
        channel: "telegram".to_string(),
        peer: Peer {
            id: sender.id.to_string(),
            name: Some(sender.display_name()),
        },
        chat,
        text,
        target: DeliveryTarget {
            chat_id,
            thread_id: topic.map(|t| t.to_string()),
            reply_to: Some(message.message_id.to_string()),
        },
        dedup_keys: dedup_keys(bot, update.update_id, Some(message)),
        received_at_ms: date.saturating_mul(1000),
        attachments,
    }))
}

/// The files of a message: a photo (its largest size), a document, a voice note, a music file, a
/// video or a round video note, each fetched later by its `file_id`.
pub fn attachments(message: &Message) -> Vec<Attachment> {
    let largest = message.photo.iter().max_by_key(|p| {
        p.file_size
            .unwrap_or(u64::from(p.width.unwrap_or(0)) * u64::from(p.height.unwrap_or(0)))
    });
    let files = [
        (AttachmentKind::Image, largest),
        (AttachmentKind::Document, message.document.as_ref()),
        (AttachmentKind::Voice, message.voice.as_ref()),
        (AttachmentKind::Audio, message.audio.as_ref()),
        (AttachmentKind::Video, message.video.as_ref()),
        (AttachmentKind::Video, message.video_note.as_ref()),
    ];
    files
        .into_iter()
        .filter_map(|(kind, file)| {
            let file = file?;
            // A picture sent as a file is still a picture.
            let kind = match (kind, file.mime_type.as_deref()) {
                (AttachmentKind::Document, Some(mime)) if mime.starts_with("image/") => {
                    AttachmentKind::Image
                }
                _ => kind,
            };
            Some(Attachment {
                name: file.file_name.clone(),
                mime: file.mime_type.clone().or_else(|| {
                    (kind == AttachmentKind::Image && file.file_name.is_none())
                        .then(|| "image/jpeg".to_owned())
                }),
                size: file.file_size,
                ..Attachment::new(kind, file.file_id.clone())
            })
        })
        .collect()
}

/// Whether a message addresses the bot, and the UTF-16 ranges of the text that name it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Address {
    pub addressed: bool,
    pub strip: Vec<(usize, usize)>,
}

/// Finds how a message addresses the bot: a `mention` entity equal to `@username`
/// (case-insensitive), a `bot_command` (`/cmd@username` or a bare `/cmd`), a `text_mention` of
/// the bot, or a reply to one of its messages.
pub fn address(message: &Message, text: &str, entities: &[MessageEntity], bot: &Bot) -> Address {
    let units: Vec<u16> = text.encode_utf16().collect();
    let handle = format!("@{}", bot.username);
    let mut out = Address::default();
    for entity in entities {
        let Some(end) = entity.offset.checked_add(entity.length) else {
            continue;
        };
        let Some(span) = units.get(entity.offset..end) else {
            continue;
        };
        let span = String::from_utf16_lossy(span);
        match entity.kind.as_str() {
            "mention" if span.eq_ignore_ascii_case(&handle) => {
                out.addressed = true;
                out.strip.push((entity.offset, end));
            }
            "bot_command" => match span.split_once('@') {
                Some((command, target)) if target.eq_ignore_ascii_case(&bot.username) => {
                    out.addressed = true;
                    // Keep `/cmd`, drop `@username`.
                    let command_units = command.encode_utf16().count();
                    out.strip.push((entity.offset + command_units, end));
                }
                Some(_) => {}
                None => out.addressed = true,
            },
            "text_mention" if entity.user.as_ref().is_some_and(|u| u.id == bot.id) => {
                out.addressed = true;
                out.strip.push((entity.offset, end));
            }
            _ => {}
        }
    }
    if let Some(replied) = &message.reply_to_message {
        // In a forum topic every message "replies" to the topic's first message; that is not a
        // reply to the bot even when the bot opened the topic.
        let topic_root =
            message.is_topic_message && message.message_thread_id == Some(replied.message_id);
        if !topic_root && replied.from.as_ref().is_some_and(|f| f.id == bot.id) {
            out.addressed = true;
        }
    }
    out
}

/// Removes the UTF-16 `ranges` from `text`, tidying the spaces (and a `,` or `:` right after a
/// leading mention) so `@bot, deploy it` becomes `deploy it`.
pub fn strip(text: &str, ranges: &[(usize, usize)]) -> String {
    if ranges.is_empty() {
        return text.trim().to_string();
    }
    let units: Vec<u16> = text.encode_utf16().collect();
    let mut ranges = ranges.to_vec();
    ranges.sort_unstable();
    let mut pieces: Vec<String> = Vec::new();
    let mut at = 0;
    for (start, end) in ranges {
        if start < at || end > units.len() {
            continue;
        }
        pieces.push(String::from_utf16_lossy(&units[at..start]));
        at = end;
    }
    let tail = String::from_utf16_lossy(&units[at.min(units.len())..]);
    // Every boundary between pieces is a cut: the whitespace on both sides of it becomes one
    // newline if it held one, else one space.
    let mut out = String::new();
    for piece in pieces.into_iter().chain(std::iter::once(tail)) {
        let right = piece.trim_start();
        let newline_right = piece[..piece.len() - right.len()].contains('\n');
        let kept = out.trim_end().len();
        let newline_left = out[kept..].contains('\n');
        out.truncate(kept);
        let right = if out.is_empty() {
            right.trim_start_matches([',', ':']).trim_start()
        } else {
            right
        };
        let separator = if out.is_empty() || right.is_empty() {
            ""
        } else if newline_left || newline_right {
            "\n"
        } else if right.starts_with([',', '.', '!', '?', ':', ';']) {
            ""
        } else {
            " "
        };
        out.push_str(separator);
        out.push_str(right);
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::telegram::wire::Update;
    use serde_json::json;

    fn bot() -> Bot {
        Bot {
            id: 900000001,
            username: "my_bot".into(),
        }
    }

    fn fixture(text: &str) -> Update {
        match serde_json::from_str(text) {
            Ok(update) => update,
            Err(e) => panic!("fixture: {e}"),
        }
    }

    fn message(decoded: Decoded) -> InboundMessage {
        match decoded {
            Decoded::Message(m) => *m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[test]
    fn chat_types_and_targets_follow_the_topic_rule() {
        // (fixture, chat type, thread in the target, text the agent sees)
        let cases = [
            (
                include_str!("fixtures/private_text.json"),
                ChatType::Direct,
                None,
                "hello there",
            ),
            (
                include_str!("fixtures/topic_mention.json"),
                ChatType::Thread {
                    group_id: "-1001234567890".into(),
                    thread_id: "7".into(),
                },
                Some("7"),
                "hi 👋",
            ),
            (
                // A reply thread in General: message_thread_id without is_topic_message.
                include_str!("fixtures/general_reply_thread.json"),
                ChatType::Group {
                    id: "-1001234567890".into(),
                },
                None,
                "me, check it",
            ),
            (
                include_str!("fixtures/reply_to_bot.json"),
                ChatType::Group {
                    id: "-4012345".into(),
                },
                None,
                "and then?",
            ),
            (
                include_str!("fixtures/bot_command.json"),
                ChatType::Group {
                    id: "-4012345".into(),
                },
                None,
                "/status now",
            ),
            (
                include_str!("fixtures/text_mention_after_emoji.json"),
                ChatType::Group {
                    id: "-4012345".into(),
                },
                None,
                "👋 deploy 🚀 now",
            ),
            (
                include_str!("fixtures/edited_caption.json"),
                ChatType::Group {
                    id: "-4012345".into(),
                },
                None,
                "look",
            ),
        ];
        for (raw, chat, thread, text) in cases {
            let update = fixture(raw);
            let m = message(decode(&update, &bot(), true));
            assert_eq!(m.chat, chat, "{raw}");
            assert_eq!(m.target.thread_id.as_deref(), thread, "{raw}");
            assert_eq!(m.text, text, "{raw}");
            let msg = update
                .message
                .as_ref()
                .or(update.edited_message.as_ref())
                .expect("a message");
            assert_eq!(m.target.chat_id, msg.chat.id.to_string());
            assert_eq!(
                m.target.reply_to,
                Some(msg.message_id.to_string()),
                "replies go to the message"
            );
            assert_eq!(m.channel, "telegram");
        }
    }

    #[test]
    fn photos_documents_and_voice_notes_come_with_their_caption() {
        let updates: Vec<serde_json::Value> =
            serde_json::from_str(include_str!("fixtures/private_media.json")).expect("json");
        let decoded: Vec<InboundMessage> = updates
            .into_iter()
            .map(|u| {
                message(decode(
                    &serde_json::from_value(u).expect("update"),
                    &bot(),
                    true,
                ))
            })
            .collect();
        let only = |m: &InboundMessage| {
            assert_eq!(m.attachments.len(), 1, "{m:?}");
            m.attachments[0].clone()
        };
        assert_eq!(decoded[0].text, "what does this error mean?");
        let photo = only(&decoded[0]);
        assert_eq!(
            (
                photo.kind,
                photo.source.as_str(),
                photo.size,
                photo.mime.as_deref()
            ),
            (
                AttachmentKind::Image,
                "AgACAgIAAxkBAAIBd2aL",
                Some(81224),
                Some("image/jpeg")
            ),
            "the largest size of the photo"
        );
        assert_eq!(decoded[1].text, "", "a file alone is a message too");
        let document = only(&decoded[1]);
        assert_eq!(
            (
                document.kind,
                document.name.as_deref(),
                document.mime.as_deref()
            ),
            (
                AttachmentKind::Document,
                Some("deploy.log"),
                Some("text/plain")
            )
        );
        assert_eq!(only(&decoded[2]).kind, AttachmentKind::Voice);
        let picture = only(&decoded[3]);
        assert_eq!(
            (
                picture.kind,
                picture.name.as_deref(),
                decoded[3].text.as_str()
            ),
            (AttachmentKind::Image, Some("screenshot.png"), "as a file"),
            "a picture sent as a file is a picture, not its thumbnail"
        );
    }

    #[test]
    fn peers_dates_and_dedup_keys() {
        let m = message(decode(
            &fixture(include_str!("fixtures/private_text.json")),
            &bot(),
            true,
        ));
        assert_eq!(
            m.peer,
            Peer {
                id: "1111".into(),
                name: Some("Ann Lee".into())
            }
        );
        assert_eq!(m.received_at_ms, 1767225620000);
        assert_eq!(
            m.dedup_keys,
            vec!["telegram:update:900000001:905000126", "telegram:msg:1111:5"]
        );
        let edited = message(decode(
            &fixture(include_str!("fixtures/edited_caption.json")),
            &bot(),
            true,
        ));
        assert_eq!(
            edited.received_at_ms, 1767225760000,
            "an edit is dated when it was edited"
        );
        assert_eq!(
            edited.dedup_keys[1], "telegram:msg:-4012345:95",
            "an edit shares its message's key"
        );
    }

    #[test]
    fn what_is_skipped() {
        let cases = [
            (
                include_str!("fixtures/from_other_bot.json"),
                true,
                "sent by a bot",
            ),
            (
                include_str!("fixtures/topic_root_reply.json"),
                true,
                "not addressed to the bot",
            ),
        ];
        for (raw, require_mention, reason) in cases {
            assert_eq!(
                decode(&fixture(raw), &bot(), require_mention),
                Decoded::Skip(reason),
                "{raw}"
            );
        }
        let no_mention = json!({"update_id": 1, "message": {"message_id": 3, "date": 1,
            "from": {"id": 1111, "is_bot": false, "first_name": "Ann"},
            "chat": {"id": -4012345, "type": "group"}, "text": "lunch?"}});
        let update: Update = serde_json::from_value(no_mention).expect("decodes");
        assert_eq!(
            decode(&update, &bot(), true),
            Decoded::Skip("not addressed to the bot")
        );
        assert_eq!(
            message(decode(&update, &bot(), false)).text,
            "lunch?",
            "require_mention = false answers all"
        );

        let channel_post = json!({"update_id": 2, "message": {"message_id": 3, "date": 1,
            "sender_chat": {"id": -100555, "type": "channel"}, "chat": {"id": -100555, "type": "channel"}, "text": "x"}});
        let update: Update = serde_json::from_value(channel_post).expect("decodes");
        assert_eq!(
            decode(&update, &bot(), false),
            Decoded::Skip("no sender (a channel post)")
        );

        let sticker = json!({"update_id": 3, "message": {"message_id": 4, "date": 1,
            "from": {"id": 1111, "is_bot": false, "first_name": "Ann"}, "chat": {"id": 1111, "type": "private"},
            "sticker": {"file_id": "x"}}});
        let update: Update = serde_json::from_value(sticker).expect("decodes");
        assert_eq!(decode(&update, &bot(), true), Decoded::Skip("no text"));
    }

    #[test]
    fn callbacks_and_migrations() {
        let callback = decode(
            &fixture(include_str!("fixtures/callback_query.json")),
            &bot(),
            true,
        );
        assert_eq!(
            callback,
            Decoded::Callback {
                id: "4382bfdwdsb323b2d9".into(),
                data: Some("approve:17".into()),
                from: Peer {
                    id: "1111".into(),
                    name: Some("Ann".into()),
                },
                chat_id: Some(-1001234567890),
                message_id: Some(43),
            }
        );
        let migrated = decode(
            &fixture(include_str!("fixtures/migrate_to.json")),
            &bot(),
            true,
        );
        assert_eq!(
            migrated,
            Decoded::Migrated {
                from: -4012345,
                to: -1009876543210
            }
        );
        let from = json!({"update_id": 4, "message": {"message_id": 1, "date": 1,
            "from": {"id": 1111, "is_bot": false, "first_name": "Ann"},
            "chat": {"id": -1009876543210i64, "type": "supergroup"}, "migrate_from_chat_id": -4012345}});
        let update: Update = serde_json::from_value(from).expect("decodes");
        assert_eq!(
            decode(&update, &bot(), true),
            Decoded::Migrated {
                from: -4012345,
                to: -1009876543210
            }
        );
    }

    #[test]
    fn mentions_are_matched_in_utf16_units_and_case_insensitively() {
        fn entity(kind: &str, offset: usize, length: usize) -> serde_json::Value {
            json!({"type": kind, "offset": offset, "length": length})
        }
        // (text, entities, addressed, stripped text)
        let cases = [
            ("@my_bot hi", vec![entity("mention", 0, 7)], true, "hi"),
            ("@MY_BOT hi", vec![entity("mention", 0, 7)], true, "hi"),
            (
                "hey @my_bot, how are you",
                vec![entity("mention", 4, 7)],
                true,
                "hey, how are you",
            ),
            (
                "@my_bot, deploy",
                vec![entity("mention", 0, 7)],
                true,
                "deploy",
            ),
            // 🎉 is two UTF-16 units: the mention starts at unit 3, not char 2 or byte 5.
            (
                "🎉 @my_bot go",
                vec![entity("mention", 3, 7)],
                true,
                "🎉 go",
            ),
            (
                "@other_bot hi",
                vec![entity("mention", 0, 10)],
                false,
                "@other_bot hi",
            ),
            (
                "@my_bot2 hi",
                vec![entity("mention", 0, 8)],
                false,
                "@my_bot2 hi",
            ),
            ("/help", vec![entity("bot_command", 0, 5)], true, "/help"),
            (
                "/help@my_bot me",
                vec![entity("bot_command", 0, 12)],
                true,
                "/help me",
            ),
            (
                "/help@other_bot",
                vec![entity("bot_command", 0, 15)],
                false,
                "/help@other_bot",
            ),
            (
                "line one\n@my_bot\nline two",
                vec![entity("mention", 9, 7)],
                true,
                "line one\nline two",
            ),
            ("@my_bot", vec![entity("mention", 0, 7)], true, ""),
            (
                "out of range",
                vec![entity("mention", 10, 7)],
                false,
                "out of range",
            ),
            (
                "overflow",
                vec![entity("mention", usize::MAX, 2)],
                false,
                "overflow",
            ),
        ];
        for (text, entities, addressed, stripped) in cases {
            let raw = json!({"message_id": 1, "date": 1, "chat": {"id": -1, "type": "group"}, "text": text,
                "entities": entities});
            let msg: Message = serde_json::from_value(raw).expect("decodes");
            let found = address(&msg, text, &msg.entities, &bot());
            assert_eq!(found.addressed, addressed, "{text:?}");
            assert_eq!(strip(text, &found.strip), stripped, "{text:?}");
        }
    }

    #[test]
    fn a_lone_mention_still_reaches_the_agent() {
        let raw = json!({"update_id": 9, "message": {"message_id": 1, "date": 1,
            "from": {"id": 1111, "is_bot": false, "first_name": "Ann"},
            "chat": {"id": -4012345, "type": "group"}, "text": "@my_bot",
            "entities": [{"type": "mention", "offset": 0, "length": 7}]}});
        let update: Update = serde_json::from_value(raw).expect("decodes");
        assert_eq!(
            message(decode(&update, &bot(), true)).text,
            "@my_bot",
            "rather than an empty message"
        );
    }
}
