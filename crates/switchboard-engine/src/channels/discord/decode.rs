//! MESSAGE_CREATE → [`InboundMessage`]: who wrote it, where, whether the bot is addressed, and the
//! text the agent receives. Pure: what it needs to know about the channel comes in as arguments,
//! and when that is missing it says what to look up.

use crate::model::{now_ms, ChatType, DeliveryTarget, InboundMessage, Peer};

use super::wire::{channel_type, is_snowflake, message_type, snowflake_ms, Message};

/// The channel name used in routing keys.
pub(crate) const CHANNEL: &str = "discord";

/// Where the bot answers, from `[channels.discord]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Addressing<'a> {
    /// The bot's own user id (from `GET /users/@me`, confirmed by READY).
    pub bot_id: &'a str,
    /// Guild ids where it may answer; empty: none.
    pub guilds: &'a [String],
    /// In guild channels, answer only when mentioned or replied to (threads: or when the bot is
    /// part of the thread).
    pub require_mention: bool,
}

/// What is known about the channel a message was written in (from the event or a lookup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Place {
    pub kind: u8,
    /// For a thread, its parent channel.
    pub parent_id: Option<String>,
}

/// Why a message is not handed to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skip {
    /// The bot's own message (Discord echoes what the bot posts).
    Own,
    /// Another bot or a webhook: bots never talk to each other here.
    Bot,
    /// A system message (join, pin, thread created, …), not a person's text.
    System,
    /// Group DMs: bots cannot be in them; ignored should one ever arrive.
    GroupDm,
    /// A guild that is not in `guilds`.
    GuildNotAllowed,
    /// A guild message that does not address the bot.
    NotAddressed,
    /// Nothing left to say once the mention is stripped (or no content at all).
    Empty,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Own => "own message",
            Skip::Bot => "from a bot",
            Skip::System => "system message",
            Skip::GroupDm => "group DM",
            Skip::GuildNotAllowed => "guild not allowed",
            Skip::NotAddressed => "not addressed to the bot",
            Skip::Empty => "empty",
        }
    }
}

/// What to do with a message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    Accept(Box<InboundMessage>),
    Ignore(Skip),
    /// The channel's type, or a thread's parent, must be looked up (`GET /channels/{id}`);
    /// then decide again with the [`Place`].
    NeedChannel(String),
    /// Whether the bot is a member of this thread must be looked up; then decide again.
    NeedMembership(String),
}

/// Decides what a MESSAGE_CREATE becomes. `place` is the cached channel (if any); `member` says
/// whether the bot is part of the thread (if known).
pub(crate) fn decide(
    message: &Message,
    addressing: &Addressing<'_>,
    place: Option<&Place>,
    member: Option<bool>,
) -> Verdict {
    if message.author.id == addressing.bot_id {
        return Verdict::Ignore(Skip::Own);
    }
    if message.author.bot || message.webhook_id.is_some() {
        return Verdict::Ignore(Skip::Bot);
    }
    if !matches!(message.kind, message_type::DEFAULT | message_type::REPLY) {
        return Verdict::Ignore(Skip::System);
    }
    let kind = message.channel_type.or(place.map(|p| p.kind));
    let (chat, chat_id) = match &message.guild_id {
        None => {
            if kind == Some(channel_type::GROUP_DM) {
                return Verdict::Ignore(Skip::GroupDm);
            }
            // DMs are addressed by the user, so a `/send` to `dm:<user>` and the user's answer
            // share one place (and one delivery context).
            (ChatType::Direct, format!("dm:{}", message.author.id))
        }
        Some(guild) => {
            if !addressing.guilds.iter().any(|g| g == guild) {
                return Verdict::Ignore(Skip::GuildNotAllowed);
            }
            let Some(kind) = kind else {
                return Verdict::NeedChannel(message.channel_id.clone());
            };
            let addressed = is_addressed(message, addressing.bot_id);
            if channel_type::is_thread(kind) {
                let Some(parent) = place.and_then(|p| p.parent_id.clone()) else {
                    return Verdict::NeedChannel(message.channel_id.clone());
                };
                if addressing.require_mention && !addressed {
                    match member {
                        None => return Verdict::NeedMembership(message.channel_id.clone()),
                        Some(false) => return Verdict::Ignore(Skip::NotAddressed),
                        Some(true) => {}
                    }
                }
                let chat = ChatType::Thread {
                    group_id: parent,
                    thread_id: message.channel_id.clone(),
                };
                (chat, message.channel_id.clone())
            } else {
                if addressing.require_mention && !addressed {
                    return Verdict::Ignore(Skip::NotAddressed);
                }
                let chat = ChatType::Group {
                    id: message.channel_id.clone(),
                };
                (chat, message.channel_id.clone())
            }
        }
    };
    let text = clean_text(message, addressing.bot_id);
    let attachments = attachments(message);
    if text.is_empty() && attachments.is_empty() {
        return Verdict::Ignore(Skip::Empty);
    }
    // A thread is a channel of its own on Discord: replies are posted to the thread's id, which
    // is also what a `/send` names, so the target is that channel (the chat type keeps the parent
    // for routing).
    let target = DeliveryTarget {
        chat_id,
        thread_id: None,
        reply_to: Some(message.id.clone()),
    };
    let author = &message.author;
    Verdict::Accept(Box::new(InboundMessage {
        channel: CHANNEL.to_owned(),
        peer: Peer {
            id: author.id.clone(),
            name: Some(author.display_name().to_owned()).filter(|n| !n.is_empty()),
        },
        chat,
        text,
        target,
        dedup_keys: vec![dedup_key(&message.id)],
        received_at_ms: snowflake_ms(&message.id).unwrap_or_else(now_ms),
        attachments,
    }))
}

/// The files attached to a message, each fetched later from its CDN `url`.
pub(crate) fn attachments(message: &Message) -> Vec<crate::model::Attachment> {
    use crate::model::{Attachment, AttachmentKind};
    let voice = message.flags & super::wire::IS_VOICE_MESSAGE != 0;
    message
        .attachments
        .iter()
        .map(|file| {
            let mime = file.content_type.clone().filter(|m| !m.is_empty());
            let kind = match mime.as_deref() {
                _ if voice || file.duration_secs.is_some() => AttachmentKind::Voice,
                Some(m) if m.starts_with("image/") => AttachmentKind::Image,
                Some(m) if m.starts_with("audio/") => AttachmentKind::Audio,
                Some(m) if m.starts_with("video/") => AttachmentKind::Video,
                _ => AttachmentKind::Document,
            };
            Attachment {
                name: Some(file.filename.clone()).filter(|n| !n.is_empty()),
                mime,
                size: file.size,
                ..Attachment::new(kind, file.url.clone())
            }
        })
        .collect()
}

/// The de-duplication key of a Discord message.
pub(crate) fn dedup_key(message_id: &str) -> String {
    format!("discord:msg:{message_id}")
}

/// Whether the message mentions the bot or replies to one of its messages.
pub(crate) fn is_addressed(message: &Message, bot_id: &str) -> bool {
    message.mentions.iter().any(|u| u.id == bot_id)
        || message
            .referenced_message
            .as_ref()
            .is_some_and(|m| m.author.id == bot_id)
}

/// The text the agent receives: the bot's mentions removed, other users' mentions shown as
/// `@name` (when the event says who they are), trimmed.
pub(crate) fn clean_text(message: &Message, bot_id: &str) -> String {
    let content = &message.content;
    let mut out = String::with_capacity(content.len());
    let mut rest = content.as_str();
    while let Some(start) = rest.find("<@") {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        match parse_user_mention(after) {
            Some((id, len)) => {
                rest = &after[len..];
                if id == bot_id {
                    // Drop the mention and the gap it leaves: "hi <@bot> there" → "hi there",
                    // "hi <@bot>, you" → "hi, you".
                    let next = rest.chars().next();
                    let out_gap = out.is_empty() || out.ends_with(char::is_whitespace);
                    match next {
                        Some(c) if c.is_whitespace() && out_gap => {
                            rest = &rest[c.len_utf8()..];
                        }
                        Some(',' | '.' | ':' | ';' | '!' | '?') => {
                            let trimmed = out.trim_end().len();
                            out.truncate(trimmed);
                        }
                        _ => {}
                    }
                } else if let Some(user) = message.mentions.iter().find(|u| u.id == id) {
                    out.push('@');
                    out.push_str(user.display_name());
                } else {
                    out.push_str(&after[..len]);
                }
            }
            None => {
                out.push_str("<@");
                rest = &after[2..];
            }
        }
    }
    out.push_str(rest);
    out.trim().to_owned()
}

/// `<@123>` or `<@!123>` at the start of `s`: the id and the length of the mention.
fn parse_user_mention(s: &str) -> Option<(&str, usize)> {
    let body = s.strip_prefix("<@")?;
    let (bang, body) = match body.strip_prefix('!') {
        Some(rest) => (1, rest),
        None => (0, body),
    };
    let digits = body.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || body.as_bytes().get(digits) != Some(&b'>') {
        return None;
    }
    Some((&body[..digits], 2 + bang + digits + 1))
}

/// Parses a `POST /v1/gateway/send` target. Two forms:
///
/// - `<channel_id>`: a text channel or thread id (digits), e.g. `1200000000000000001`;
/// - `dm:<user_id>`: a direct message to that user, e.g. `dm:900000000000000001` (the DM channel
///   is opened on first use).
pub(crate) fn parse_target(target: &str) -> Result<DeliveryTarget, String> {
    const EXPECTED: &str = "expected a channel or thread id (digits, e.g. 1200000000000000001) \
                            or dm:<user id> (e.g. dm:900000000000000001)";
    let target = target.trim();
    if target.is_empty() {
        return Err(format!("the target is empty; {EXPECTED}"));
    }
    if let Some(user) = target.strip_prefix("dm:") {
        let user = user.trim();
        if !is_snowflake(user) {
            return Err(format!("{target:?} does not name a user id; {EXPECTED}"));
        }
        return Ok(DeliveryTarget::chat(format!("dm:{user}")));
    }
    if !is_snowflake(target) {
        return Err(format!("{target:?} is not a Discord id; {EXPECTED}"));
    }
    Ok(DeliveryTarget::chat(target))
}

/// Where a target's messages are posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Destination {
    /// A channel or thread id.
    Channel(String),
    /// A user whose DM channel must be found first.
    Dm(String),
}

/// Reads a delivery target: the thread when one is set, else the chat; `dm:<user>` for DMs.
pub(crate) fn destination(target: &DeliveryTarget) -> Result<Destination, String> {
    let id = target.thread_id.as_deref().unwrap_or(&target.chat_id);
    match id.strip_prefix("dm:") {
        Some(user) if is_snowflake(user) => Ok(Destination::Dm(user.to_owned())),
        None if is_snowflake(id) => Ok(Destination::Channel(id.to_owned())),
        _ => Err(format!(
            "{id:?} is not a Discord channel id or dm:<user id>"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::{Frame, User};
    use super::*;

    const BOT: &str = "800000000000000001";
    const GUILD: &str = "1100000000000000001";

    fn fixture(text: &str) -> Message {
        let frame: Frame = serde_json::from_str(text).expect("frame");
        serde_json::from_value(frame.d).expect("message")
    }

    fn guild_message() -> Message {
        fixture(include_str!("fixtures/message_create_reply.json"))
    }

    fn dm() -> Message {
        fixture(include_str!("fixtures/message_create_dm.json"))
    }

    fn user(id: &str, bot: bool) -> User {
        User {
            id: id.into(),
            username: format!("user{id}"),
            global_name: None,
            bot,
        }
    }

    fn addressing(guilds: &[String], require_mention: bool) -> Addressing<'_> {
        Addressing {
            bot_id: BOT,
            guilds,
            require_mention,
        }
    }

    fn accepted(verdict: Verdict) -> InboundMessage {
        match verdict {
            Verdict::Accept(message) => *message,
            other => panic!("expected Accept, got {other:?}"),
        }
    }

    #[test]
    fn a_voice_message_is_a_voice_attachment_even_without_text() {
        let voice = fixture(include_str!("fixtures/message_create_voice.json"));
        let msg = accepted(decide(&voice, &addressing(&[], true), None, None));
        assert_eq!(msg.text, "");
        assert_eq!(msg.attachments.len(), 1);
        let a = &msg.attachments[0];
        assert_eq!(
            (a.kind, a.name.as_deref(), a.size),
            (
                crate::model::AttachmentKind::Voice,
                Some("voice-message.ogg"),
                Some(14592)
            )
        );
        assert!(a
            .source
            .starts_with("https://cdn.discordapp.com/attachments/"));
    }

    #[test]
    fn a_dm_is_direct_and_answered_by_user() {
        let msg = accepted(decide(&dm(), &addressing(&[], true), None, None));
        assert_eq!(msg.channel, "discord");
        assert_eq!(msg.chat, ChatType::Direct);
        assert_eq!(msg.peer.id, "900000000000000001");
        assert_eq!(msg.peer.name.as_deref(), Some("Ann"));
        assert_eq!(msg.target.chat_id, "dm:900000000000000001");
        assert_eq!(msg.target.reply_to.as_deref(), Some("1300000000000000010"));
        assert_eq!(msg.dedup_keys, vec!["discord:msg:1300000000000000010"]);
        assert_eq!(msg.text, "hello, what about @Bob?");
        assert_eq!(
            msg.received_at_ms,
            snowflake_ms("1300000000000000010").unwrap_or(0)
        );
    }

    #[test]
    fn guild_messages_follow_the_guild_list_and_mentions() {
        let guilds = vec![GUILD.to_owned()];
        let mentioned = guild_message();
        let mut unmentioned = guild_message();
        unmentioned.mentions.clear();
        unmentioned.kind = message_type::DEFAULT;
        unmentioned.content = "just chatting".into();
        let mut reply_to_bot = unmentioned.clone();
        reply_to_bot.kind = message_type::REPLY;
        let mut original = guild_message();
        original.author = user(BOT, true);
        reply_to_bot.referenced_message = Some(Box::new(original));

        // (case, message, allowed guilds, require_mention, expected skip or None for accepted)
        type Case<'a> = (&'a str, &'a Message, &'a [String], bool, Option<Skip>);
        let cases: Vec<Case<'_>> = vec![
            (
                "mentioned in an allowed guild",
                &mentioned,
                &guilds,
                true,
                None,
            ),
            (
                "not mentioned",
                &unmentioned,
                &guilds,
                true,
                Some(Skip::NotAddressed),
            ),
            (
                "not mentioned, mentions not required",
                &unmentioned,
                &guilds,
                false,
                None,
            ),
            ("a reply to the bot", &reply_to_bot, &guilds, true, None),
            (
                "a guild not in the list",
                &mentioned,
                &[],
                true,
                Some(Skip::GuildNotAllowed),
            ),
        ];
        for (name, message, guilds, require, skip) in cases {
            let verdict = decide(message, &addressing(guilds, require), None, None);
            match skip {
                None => {
                    let msg = accepted(verdict);
                    assert_eq!(
                        msg.chat,
                        ChatType::Group {
                            id: "1200000000000000001".into()
                        },
                        "{name}"
                    );
                    assert_eq!(msg.target.chat_id, "1200000000000000001", "{name}");
                }
                Some(skip) => assert_eq!(verdict, Verdict::Ignore(skip), "{name}"),
            }
        }
        assert_eq!(
            accepted(decide(&mentioned, &addressing(&guilds, true), None, None)).text,
            "status?"
        );
    }

    #[test]
    fn own_bot_webhook_and_system_messages_are_dropped() {
        let guilds = vec![GUILD.to_owned()];
        let mut own = guild_message();
        own.author = user(BOT, true);
        let mut other_bot = guild_message();
        other_bot.author = user("700", true);
        let mut webhook = guild_message();
        webhook.webhook_id = Some("5".into());
        let mut system = guild_message();
        system.kind = 7; // a member joined
        let mut group_dm = dm();
        group_dm.channel_type = Some(channel_type::GROUP_DM);
        let mut only_mention = guild_message();
        only_mention.content = format!("<@{BOT}>  ");
        let cases = [
            (own, Skip::Own),
            (other_bot, Skip::Bot),
            (webhook, Skip::Bot),
            (system, Skip::System),
            (group_dm, Skip::GroupDm),
            (only_mention, Skip::Empty),
        ];
        for (message, skip) in cases {
            assert_eq!(
                decide(&message, &addressing(&guilds, false), None, None),
                Verdict::Ignore(skip),
                "{}",
                skip.as_str()
            );
        }
    }

    #[test]
    fn threads_need_their_parent_and_membership() {
        let guilds = vec![GUILD.to_owned()];
        let a = addressing(&guilds, true);
        let thread_place = Place {
            kind: channel_type::PUBLIC_THREAD,
            parent_id: Some("1200000000000000001".into()),
        };
        let mut mentioned = guild_message();
        mentioned.channel_id = "1210000000000000001".into();
        mentioned.channel_type = None;
        let mut plain = mentioned.clone();
        plain.mentions.clear();
        plain.kind = message_type::DEFAULT;
        plain.content = "and then?".into();

        // Without the channel type the channel must be looked up first.
        assert_eq!(
            decide(&mentioned, &a, None, None),
            Verdict::NeedChannel("1210000000000000001".into())
        );
        // With the type from the event but no parent, still.
        let mut typed = mentioned.clone();
        typed.channel_type = Some(channel_type::PUBLIC_THREAD);
        assert_eq!(
            decide(&typed, &a, None, None),
            Verdict::NeedChannel("1210000000000000001".into())
        );
        // Mentioned: answered, whatever the membership.
        let msg = accepted(decide(&mentioned, &a, Some(&thread_place), None));
        assert_eq!(
            msg.chat,
            ChatType::Thread {
                group_id: "1200000000000000001".into(),
                thread_id: "1210000000000000001".into()
            }
        );
        assert_eq!(
            msg.target.chat_id, "1210000000000000001",
            "replies go to the thread channel"
        );
        assert_eq!(msg.target.thread_id, None);
        // Not mentioned: only in a thread the bot is part of.
        assert_eq!(
            decide(&plain, &a, Some(&thread_place), None),
            Verdict::NeedMembership("1210000000000000001".into())
        );
        assert_eq!(
            decide(&plain, &a, Some(&thread_place), Some(false)),
            Verdict::Ignore(Skip::NotAddressed)
        );
        assert_eq!(
            accepted(decide(&plain, &a, Some(&thread_place), Some(true))).text,
            "and then?"
        );
        // A plain text channel found by lookup is a group.
        let text_place = Place {
            kind: 0,
            parent_id: None,
        };
        let msg = accepted(decide(&mentioned, &a, Some(&text_place), None));
        assert_eq!(
            msg.chat,
            ChatType::Group {
                id: "1210000000000000001".into()
            }
        );
    }

    #[test]
    fn mentions_are_cleaned_for_the_agent() {
        let mut message = dm();
        message.mentions = vec![user("42", false)];
        let cases = [
            (format!("<@{BOT}> status?"), "status?"),
            (format!("<@!{BOT}> status?"), "status?"),
            (format!("hi <@{BOT}> there"), "hi there"),
            (format!("hi <@{BOT}>, you"), "hi, you"),
            (format!("ask <@{BOT}>"), "ask"),
            (format!("<@{BOT}><@{BOT}> twice"), "twice"),
            (
                "ping <@42> and <@!42>".to_owned(),
                "ping @user42 and @user42",
            ),
            ("unknown <@7> stays".to_owned(), "unknown <@7> stays"),
            (
                "not a mention <@ x> <@12".to_owned(),
                "not a mention <@ x> <@12",
            ),
            (
                "role <@&5> and channel <#6>".to_owned(),
                "role <@&5> and channel <#6>",
            ),
            ("emoji 👋 <@42>".to_owned(), "emoji 👋 @user42"),
            ("   ".to_owned(), ""),
        ];
        for (content, want) in cases {
            message.content = content.clone();
            assert_eq!(clean_text(&message, BOT), want, "{content:?}");
        }
    }

    #[test]
    fn send_targets_parse() {
        let ok = [
            ("1200000000000000001", "1200000000000000001"),
            (" 1200000000000000001 ", "1200000000000000001"),
            ("dm:900000000000000001", "dm:900000000000000001"),
            ("dm: 900000000000000001", "dm:900000000000000001"),
        ];
        for (input, chat) in ok {
            assert_eq!(
                parse_target(input),
                Ok(DeliveryTarget::chat(chat)),
                "{input:?}"
            );
        }
        for bad in ["", "general", "dm:", "dm:ann", "#123", "123#456", "<@123>"] {
            let error = parse_target(bad).expect_err(bad);
            assert!(
                error.contains("dm:<user id>"),
                "{bad:?}: the error says what is expected: {error}"
            );
        }
    }

    #[test]
    fn targets_lead_to_a_channel_or_a_dm() {
        let thread = DeliveryTarget {
            chat_id: "1".into(),
            thread_id: Some("2".into()),
            reply_to: Some("3".into()),
        };
        let cases = [
            (
                DeliveryTarget::chat("12"),
                Ok(Destination::Channel("12".into())),
            ),
            (thread, Ok(Destination::Channel("2".into()))),
            (
                DeliveryTarget::chat("dm:9"),
                Ok(Destination::Dm("9".into())),
            ),
        ];
        for (target, want) in cases {
            assert_eq!(destination(&target), want, "{target:?}");
        }
        assert!(destination(&DeliveryTarget::chat("dm:x")).is_err());
        assert!(destination(&DeliveryTarget::chat("ann")).is_err());
    }
}
