//! Discord's wire types (REST v10 and the Gateway, JSON encoding) beside the small pure functions
//! that read them: opcodes, close codes, intents, snowflake times.
//!
//! Only the fields the bridge reads are declared; serde ignores the rest, so new fields Discord
//! adds never break decoding.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Gateway opcodes (`op`).
pub(crate) mod op {
    pub const DISPATCH: u8 = 0;
    pub const HEARTBEAT: u8 = 1;
    pub const IDENTIFY: u8 = 2;
    pub const RESUME: u8 = 6;
    pub const RECONNECT: u8 = 7;
    pub const INVALID_SESSION: u8 = 9;
    pub const HELLO: u8 = 10;
    pub const HEARTBEAT_ACK: u8 = 11;
}

/// `GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT` = 1 + 512 + 4096 + 32768.
pub(crate) const INTENTS: u64 = 1 | (1 << 9) | (1 << 12) | (1 << 15);

/// The API version spoken on the Gateway (the REST version is part of `api_base`).
pub(crate) const GATEWAY_VERSION: u8 = 10;

/// The largest frame the Gateway accepts from a client (larger ones close the socket with 4002).
pub(crate) const MAX_FRAME_BYTES: usize = 4096;

/// One Gateway frame, either way: `{"op":int,"d":any,"s":int|null,"t":string|null}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Frame {
    pub op: u8,
    #[serde(default)]
    pub d: Value,
    #[serde(default)]
    pub s: Option<u64>,
    #[serde(default)]
    pub t: Option<String>,
}

/// A frame the client sends, `{"op":…,"d":…}`, with the payload's fields in their declared order.
pub(crate) fn encode<T: Serialize>(op: u8, d: &T) -> Result<String, serde_json::Error> {
    #[derive(Serialize)]
    struct Outgoing<'a, T> {
        op: u8,
        d: &'a T,
    }
    serde_json::to_string(&Outgoing { op, d })
}

/// The `d` of op 10 Hello.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Hello {
    /// Milliseconds between heartbeats.
    pub heartbeat_interval: u64,
}

/// The `d` of op 2 Identify.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Identify<'a> {
    pub token: &'a str,
    pub intents: u64,
    pub properties: IdentifyProperties<'a>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct IdentifyProperties<'a> {
    pub os: &'a str,
    pub browser: &'a str,
    pub device: &'a str,
}

/// The `d` of op 6 Resume.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Resume<'a> {
    pub token: &'a str,
    pub session_id: &'a str,
    pub seq: u64,
}

/// The READY dispatch: what a new session is.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Ready {
    pub session_id: String,
    pub resume_gateway_url: String,
    pub user: User,
    /// The bot's application (for its commands).
    #[serde(default)]
    pub application: Option<Application>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Application {
    pub id: String,
}

/// A user (the bot itself, a message author, a mentioned user).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct User {
    pub id: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub global_name: Option<String>,
    #[serde(default)]
    pub bot: bool,
}

impl User {
    /// The name a person sees: the display name, else the user name.
    pub fn display_name(&self) -> &str {
        self.global_name
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(&self.username)
    }
}

/// `GET /gateway/bot`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct GatewayBot {
    pub url: String,
    #[serde(default)]
    pub session_start_limit: Option<SessionStartLimit>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct SessionStartLimit {
    pub remaining: u64,
    /// Milliseconds until `remaining` is reset.
    pub reset_after: u64,
}

/// Message types that carry a person's text; the rest are system messages (joins, pins, thread
/// created, …).
pub(crate) mod message_type {
    pub const DEFAULT: u8 = 0;
    pub const REPLY: u8 = 19;
}

/// The MESSAGE_CREATE dispatch: a message plus the event's extra fields.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Message {
    pub id: String,
    pub channel_id: String,
    #[serde(default)]
    pub guild_id: Option<String>,
    /// Sent with MESSAGE_CREATE; absent on older payloads, then the channel is looked up.
    #[serde(default)]
    pub channel_type: Option<u8>,
    #[serde(default, rename = "type")]
    pub kind: u8,
    pub author: User,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub mentions: Vec<User>,
    #[serde(default)]
    pub message_reference: Option<MessageReference>,
    /// The message replied to; `null` when it was deleted.
    #[serde(default)]
    pub referenced_message: Option<Box<Message>>,
    #[serde(default)]
    pub webhook_id: Option<String>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// Message flags; `IS_VOICE_MESSAGE` (1 << 13) marks a voice message.
    #[serde(default)]
    pub flags: u64,
}

/// A message flag: the message is a voice message (its one attachment is the audio).
pub(crate) const IS_VOICE_MESSAGE: u64 = 1 << 13;

/// A file attached to a message, served from Discord's CDN at `url`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Attachment {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub filename: String,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub url: String,
    /// Set on voice messages.
    #[serde(default)]
    pub duration_secs: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct MessageReference {
    #[serde(default)]
    pub message_id: Option<String>,
    #[serde(default)]
    pub channel_id: Option<String>,
}

/// Channel types the bridge tells apart.
pub(crate) mod channel_type {
    pub const GROUP_DM: u8 = 3;
    pub const ANNOUNCEMENT_THREAD: u8 = 10;
    pub const PUBLIC_THREAD: u8 = 11;
    pub const PRIVATE_THREAD: u8 = 12;

    /// Whether messages in a channel of this type are written in a thread.
    pub fn is_thread(kind: u8) -> bool {
        matches!(kind, ANNOUNCEMENT_THREAD | PUBLIC_THREAD | PRIVATE_THREAD)
    }
}

/// `GET /channels/{id}` (only what routing needs).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Channel {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: u8,
    #[serde(default)]
    pub guild_id: Option<String>,
    /// For a thread, the channel it was started in.
    #[serde(default)]
    pub parent_id: Option<String>,
    /// For a thread, who started it.
    #[serde(default)]
    pub owner_id: Option<String>,
}

/// The INTERACTION_CREATE dispatch (a button click is type 3, MESSAGE_COMPONENT).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Interaction {
    pub id: String,
    /// The bot's application, for follow-ups (`/webhooks/{application_id}/{token}`).
    #[serde(default)]
    pub application_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: u8,
    pub token: String,
    #[serde(default)]
    pub channel_id: Option<String>,
    #[serde(default)]
    pub guild_id: Option<String>,
    #[serde(default)]
    pub data: Option<InteractionData>,
    /// Set in guilds.
    #[serde(default)]
    pub member: Option<Member>,
    /// Set in DMs.
    #[serde(default)]
    pub user: Option<User>,
    #[serde(default)]
    pub message: Option<InteractionMessage>,
}

pub(crate) const INTERACTION_MESSAGE_COMPONENT: u8 = 3;
/// A slash command the bot registered.
pub(crate) const INTERACTION_APPLICATION_COMMAND: u8 = 2;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct InteractionData {
    #[serde(default)]
    pub custom_id: Option<String>,
    #[serde(default)]
    pub component_type: Option<u8>,
    /// A command's name.
    #[serde(default)]
    pub name: Option<String>,
    /// A command's options, as the person filled them in.
    #[serde(default)]
    pub options: Vec<CommandOption>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct CommandOption {
    pub name: String,
    #[serde(default)]
    pub value: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Member {
    #[serde(default)]
    pub user: Option<User>,
}

/// The message that holds the clicked component, as it was when the person clicked.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct InteractionMessage {
    pub id: String,
    #[serde(default)]
    pub content: String,
}

/// Interaction callback types (`POST /interactions/{id}/{token}/callback`).
pub(crate) mod callback {
    /// A new message answering the interaction (with flags 64: seen only by the clicker).
    pub const CHANNEL_MESSAGE: u8 = 4;
    /// Acknowledge now ("thinking…"), answer later by editing `@original`.
    pub const DEFERRED_CHANNEL_MESSAGE: u8 = 5;
    /// Components only: acknowledge now, edit the message later (`@original`).
    pub const DEFERRED_UPDATE_MESSAGE: u8 = 6;
    /// Components only: edit the message that holds the component.
    pub const UPDATE_MESSAGE: u8 = 7;
}

/// Message flag: only the person who used the interaction sees the message.
pub(crate) const EPHEMERAL: u64 = 1 << 6;

/// The body of a REST error: `{"code":50035,"message":"…"}`, or a 429's
/// `{"message":"…","retry_after":64.57,"global":false}`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub code: Option<u64>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub retry_after: Option<f64>,
    #[serde(default)]
    pub global: Option<bool>,
}

/// `POST /channels/{id}/messages`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct CreateMessage<'a> {
    pub content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_reference: Option<Reference<'a>>,
    pub allowed_mentions: AllowedMentions,
    /// Action rows of buttons (legacy components, without `IS_COMPONENTS_V2`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub components: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Reference<'a> {
    pub message_id: &'a str,
    /// Discord's default is true: replying to a deleted message would fail the whole send.
    pub fail_if_not_exists: bool,
}

/// `{"parse":[]}`: nothing in the text pings anyone (`@everyone`, `@here`, user and role
/// mentions all render as text), whatever the agent wrote.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub(crate) struct AllowedMentions {
    pub parse: [&'static str; 0],
}

/// A message Discord returns after creating, editing or fetching it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct CreatedMessage {
    pub id: String,
    #[serde(default)]
    pub content: String,
}

/// What a Gateway close code means for the next connection ([D3], twilight's `can_reconnect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseAction {
    /// Reconnect and RESUME the session.
    Resume,
    /// Reconnect with a fresh IDENTIFY (the session is gone: 4007 invalid seq, 4009 timed out).
    Identify,
    /// Do not reconnect: a person has to fix something.
    Stop(Fatal),
}

/// Why the Gateway refuses the bot for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fatal {
    /// 4004: the token is wrong.
    Auth,
    /// 4014: a privileged intent is not enabled in the Developer Portal.
    DisallowedIntents,
    /// 4010–4013: the client asked for something the Gateway does not serve.
    Other(u16),
}

impl Fatal {
    /// What a person reads in the channel's last error.
    pub fn explain(self) -> String {
        match self {
            Fatal::Auth => "Discord refused the bot token (gateway close 4004 authentication \
                            failed); check the token in the Developer Portal"
                .to_owned(),
            Fatal::DisallowedIntents => "Discord refused the Message Content intent (gateway \
                                         close 4014 disallowed intents); enable the Message \
                                         Content intent in the Developer Portal (Bot → \
                                         Privileged Gateway Intents)"
                .to_owned(),
            Fatal::Other(code) => format!(
                "Discord closed the gateway with {code} ({}); not reconnecting",
                close_name(code)
            ),
        }
    }
}

/// Classifies a close the server sent; `None` is a close without a code (or a dropped socket).
pub(crate) fn close_action(code: Option<u16>) -> CloseAction {
    match code {
        Some(4004) => CloseAction::Stop(Fatal::Auth),
        Some(4014) => CloseAction::Stop(Fatal::DisallowedIntents),
        Some(code @ 4010..=4013) => CloseAction::Stop(Fatal::Other(code)),
        Some(4007 | 4009) => CloseAction::Identify,
        _ => CloseAction::Resume,
    }
}

/// The documented name of a Gateway close code, for messages.
pub(crate) fn close_name(code: u16) -> &'static str {
    match code {
        1000 => "normal closure",
        1001 => "going away",
        4000 => "unknown error",
        4001 => "unknown opcode",
        4002 => "decode error",
        4003 => "not authenticated",
        4004 => "authentication failed",
        4005 => "already authenticated",
        4007 => "invalid seq",
        4008 => "rate limited",
        4009 => "session timed out",
        4010 => "invalid shard",
        4011 => "sharding required",
        4012 => "invalid API version",
        4013 => "invalid intents",
        4014 => "disallowed intents",
        _ => "unlisted code",
    }
}

/// Discord's epoch (2015-01-01) in Unix milliseconds; a snowflake's top 42 bits count from it.
const DISCORD_EPOCH_MS: i64 = 1_420_070_400_000;

/// When a snowflake was made, in Unix milliseconds (`None` for an id that is not a number).
pub(crate) fn snowflake_ms(id: &str) -> Option<i64> {
    let raw: u64 = id.parse().ok()?;
    i64::try_from(raw >> 22)
        .ok()
        .map(|ms| ms + DISCORD_EPOCH_MS)
}

/// Whether `s` looks like a snowflake (a decimal id).
pub(crate) fn is_snowflake(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intents_are_the_four_the_bridge_needs() {
        assert_eq!(INTENTS, 37377);
    }

    #[test]
    fn close_codes_split_as_documented() {
        let cases = [
            (None, CloseAction::Resume),
            (Some(1000), CloseAction::Resume),
            (Some(1006), CloseAction::Resume),
            (Some(4000), CloseAction::Resume),
            (Some(4001), CloseAction::Resume),
            (Some(4002), CloseAction::Resume),
            (Some(4003), CloseAction::Resume),
            (Some(4005), CloseAction::Resume),
            (Some(4008), CloseAction::Resume),
            (Some(4004), CloseAction::Stop(Fatal::Auth)),
            (Some(4007), CloseAction::Identify),
            (Some(4009), CloseAction::Identify),
            (Some(4010), CloseAction::Stop(Fatal::Other(4010))),
            (Some(4011), CloseAction::Stop(Fatal::Other(4011))),
            (Some(4012), CloseAction::Stop(Fatal::Other(4012))),
            (Some(4013), CloseAction::Stop(Fatal::Other(4013))),
            (Some(4014), CloseAction::Stop(Fatal::DisallowedIntents)),
        ];
        for (code, want) in cases {
            assert_eq!(close_action(code), want, "close code {code:?}");
        }
    }

    #[test]
    fn fatal_closes_explain_the_fix() {
        assert!(Fatal::DisallowedIntents
            .explain()
            .contains("enable the Message Content intent in the Developer Portal"));
        assert!(Fatal::Auth.explain().contains("token"));
        assert!(Fatal::Other(4012).explain().contains("invalid API version"));
    }

    #[test]
    fn snowflakes_carry_their_time() {
        // The example id from Discord's reference: 175928847299117063 → 2016-04-30 11:18:25.796 UTC.
        assert_eq!(snowflake_ms("175928847299117063"), Some(1_462_015_105_796));
        assert_eq!(snowflake_ms("not a number"), None);
        assert!(is_snowflake("1300000000000000001"));
        assert!(!is_snowflake(""));
        assert!(!is_snowflake("12a"));
        assert!(!is_snowflake("123456789012345678901"));
    }

    #[test]
    fn the_contract_message_create_decodes() {
        let frame: Frame = serde_json::from_str(include_str!("fixtures/message_create_reply.json"))
            .expect("a dispatch frame");
        assert_eq!(frame.op, op::DISPATCH);
        assert_eq!(frame.s, Some(42));
        assert_eq!(frame.t.as_deref(), Some("MESSAGE_CREATE"));
        let message: Message = serde_json::from_value(frame.d).expect("a message");
        assert_eq!(message.id, "1300000000000000001");
        assert_eq!(message.guild_id.as_deref(), Some("1100000000000000001"));
        assert_eq!(message.channel_type, Some(0));
        assert_eq!(message.kind, message_type::REPLY);
        assert_eq!(message.author.display_name(), "Ann");
        assert_eq!(message.mentions[0].id, "800000000000000001");
        assert!(message.mentions[0].bot);
        assert_eq!(
            message
                .message_reference
                .and_then(|r| r.message_id)
                .as_deref(),
            Some("1299999999999999999")
        );
    }

    #[test]
    fn ready_hello_gateway_and_errors_decode() {
        let ready: Ready =
            serde_json::from_str(include_str!("fixtures/ready.json")).expect("ready");
        assert_eq!(ready.session_id, "9a1b2c3d4e5f");
        assert_eq!(
            ready.resume_gateway_url,
            "wss://gateway-us-east1-b.discord.gg"
        );
        assert_eq!(ready.user.id, "800000000000000001");
        let hello: Hello = serde_json::from_str(r#"{"heartbeat_interval":45000}"#).expect("hello");
        assert_eq!(hello.heartbeat_interval, 45000);
        let gateway: GatewayBot =
            serde_json::from_str(include_str!("fixtures/gateway_bot.json")).expect("gateway");
        assert_eq!(gateway.url, "wss://gateway.discord.gg/");
        assert_eq!(gateway.session_start_limit.map(|l| l.remaining), Some(999));
        let limited: ErrorBody = serde_json::from_str(
            r#"{"message":"You are being rate limited.","retry_after":64.57,"global":false}"#,
        )
        .expect("429 body");
        assert_eq!(limited.retry_after, Some(64.57));
        assert_eq!(limited.global, Some(false));
    }

    #[test]
    fn a_button_click_decodes() {
        let frame: Frame =
            serde_json::from_str(include_str!("fixtures/interaction_create.json")).expect("frame");
        let click: Interaction = serde_json::from_value(frame.d).expect("interaction");
        assert_eq!(click.kind, INTERACTION_MESSAGE_COMPONENT);
        assert_eq!(
            click.data.and_then(|d| d.custom_id).as_deref(),
            Some("approve:17")
        );
        assert_eq!(
            click.member.and_then(|m| m.user).map(|u| u.id).as_deref(),
            Some("900000000000000001")
        );
        assert_eq!(
            click.message.map(|m| m.id).as_deref(),
            Some("1300000000000000002")
        );
    }

    #[test]
    fn outgoing_frames_have_the_documented_shape() {
        let identify = encode(
            op::IDENTIFY,
            &Identify {
                token: "t",
                intents: INTENTS,
                properties: IdentifyProperties {
                    os: "linux",
                    browser: "switchboard",
                    device: "switchboard",
                },
            },
        )
        .expect("identify");
        assert_eq!(
            identify,
            r#"{"op":2,"d":{"token":"t","intents":37377,"properties":{"os":"linux","browser":"switchboard","device":"switchboard"}}}"#
        );
        let resume = encode(
            op::RESUME,
            &Resume {
                token: "t",
                session_id: "s",
                seq: 1337,
            },
        )
        .expect("resume");
        assert_eq!(
            resume,
            r#"{"op":6,"d":{"token":"t","session_id":"s","seq":1337}}"#
        );
        assert_eq!(
            encode(op::HEARTBEAT, &None::<u64>).expect("beat"),
            r#"{"op":1,"d":null}"#
        );
        let body = CreateMessage {
            content: "Done",
            message_reference: Some(Reference {
                message_id: "1300000000000000001",
                fail_if_not_exists: false,
            }),
            allowed_mentions: AllowedMentions::default(),
            components: None,
        };
        assert_eq!(
            serde_json::to_string(&body).expect("json"),
            r#"{"content":"Done","message_reference":{"message_id":"1300000000000000001","fail_if_not_exists":false},"allowed_mentions":{"parse":[]}}"#
        );
    }
}
