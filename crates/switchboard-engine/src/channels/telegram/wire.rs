//! The Bot API's JSON shapes that the adapter reads and writes (contract section 1), kept to the
//! fields the bridge needs. Unknown fields are ignored, so newer Bot API versions still decode.

use serde::{Deserialize, Serialize};

/// The envelope of every Bot API answer: `{"ok":true,"result":…}` or
/// `{"ok":false,"error_code":…,"description":"…","parameters":{…}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Response<T> {
    pub ok: bool,
    pub result: Option<T>,
    pub error_code: Option<i64>,
    pub description: Option<String>,
    pub parameters: Option<ResponseParameters>,
}

/// Why a request failed, in machine form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ResponseParameters {
    /// The group became a supergroup with this id.
    pub migrate_to_chat_id: Option<i64>,
    /// Seconds to wait after a 429.
    pub retry_after: Option<u64>,
}

/// One update from `getUpdates`. At most one payload is set; the others are not needed.
#[derive(Debug, Clone, Deserialize)]
pub struct Update {
    pub update_id: i64,
    pub message: Option<Message>,
    pub edited_message: Option<Message>,
    pub callback_query: Option<CallbackQuery>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub message_id: i64,
    /// Unix seconds; 0 for an inaccessible message in a callback query.
    #[serde(default)]
    pub date: i64,
    pub edit_date: Option<i64>,
    /// Missing in channels.
    pub from: Option<User>,
    pub chat: Chat,
    /// Set for forum topics and also for reply threads; only trusted with `is_topic_message`.
    pub message_thread_id: Option<i64>,
    #[serde(default)]
    pub is_topic_message: bool,
    pub text: Option<String>,
    #[serde(default)]
    pub entities: Vec<MessageEntity>,
    pub caption: Option<String>,
    #[serde(default)]
    pub caption_entities: Vec<MessageEntity>,
    /// Never nested further than one level by the server.
    pub reply_to_message: Option<Box<Message>>,
    /// A photo, in the sizes the server offers (smallest first).
    #[serde(default)]
    pub photo: Vec<FileRef>,
    pub document: Option<FileRef>,
    pub voice: Option<FileRef>,
    pub audio: Option<FileRef>,
    pub video: Option<FileRef>,
    pub video_note: Option<FileRef>,
    pub migrate_to_chat_id: Option<i64>,
    pub migrate_from_chat_id: Option<i64>,
}

/// A file in a message (a photo size, a document, a voice note, …): the fields they share.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileRef {
    pub file_id: String,
    pub file_size: Option<u64>,
    pub file_name: Option<String>,
    pub mime_type: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// What `getFile` answers: where to download the file from.
#[derive(Debug, Clone, Deserialize)]
pub struct File {
    pub file_size: Option<u64>,
    pub file_path: Option<String>,
}

impl Message {
    /// The text with its entities: the message text, else a media caption.
    pub fn text_and_entities(&self) -> Option<(&str, &[MessageEntity])> {
        match (&self.text, &self.caption) {
            (Some(text), _) => Some((text, &self.entities)),
            (None, Some(caption)) => Some((caption, &self.caption_entities)),
            (None, None) => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    #[serde(default)]
    pub is_bot: bool,
    #[serde(default)]
    pub first_name: String,
    pub last_name: Option<String>,
    pub username: Option<String>,
}

impl User {
    /// The name a person would recognise: first and last name, else `@username`, else the id.
    pub fn display_name(&self) -> String {
        let full = match &self.last_name {
            Some(last) if !last.is_empty() => format!("{} {}", self.first_name, last),
            _ => self.first_name.clone(),
        };
        let full = full.trim().to_string();
        match (full.is_empty(), &self.username) {
            (false, _) => full,
            (true, Some(username)) => format!("@{username}"),
            (true, None) => self.id.to_string(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Chat {
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: ChatKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatKind {
    Private,
    Group,
    Supergroup,
    Channel,
    #[serde(other)]
    Other,
}

/// A span of special text. `offset` and `length` count UTF-16 code units.
#[derive(Debug, Clone, Deserialize)]
pub struct MessageEntity {
    #[serde(rename = "type")]
    pub kind: String,
    pub offset: usize,
    pub length: usize,
    /// For `text_mention`: the user mentioned.
    pub user: Option<User>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CallbackQuery {
    pub id: String,
    pub from: User,
    pub data: Option<String>,
    /// The message with the button; only `chat` and `message_id` when it is inaccessible.
    pub message: Option<Message>,
}

/// The `sendMessage` body. No `parse_mode`: the text is shown exactly as written, and any
/// formatting comes from explicit `entities`, which nothing in the text can add to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SendMessage<'a> {
    pub chat_id: ChatRef,
    pub text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_thread_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_parameters: Option<ReplyParameters>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub entities: &'a [Entity],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_markup: Option<&'a InlineKeyboard>,
}

/// The `editMessageText` body. Without `reply_markup` the message loses its buttons.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EditMessageText<'a> {
    pub chat_id: ChatRef,
    pub message_id: i64,
    pub text: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub entities: &'a [Entity],
}

/// The `answerCallbackQuery` body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnswerCallbackQuery<'a> {
    pub callback_query_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<&'a str>,
    /// An alert the person must dismiss, instead of a passing notice at the top of the chat.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub show_alert: bool,
}

/// A span of formatting the bot sends (`bold`, `code`, `pre`, …); offsets count UTF-16 units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entity {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub offset: usize,
    pub length: usize,
}

/// `reply_markup` with buttons under the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InlineKeyboard {
    pub inline_keyboard: Vec<Vec<InlineButton>>,
}

/// A button that sends `callback_data` (1–64 bytes) back to the bot when pressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InlineButton {
    pub text: String,
    pub callback_data: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplyParameters {
    pub message_id: i64,
    /// Send anyway when the message was deleted meanwhile.
    pub allow_sending_without_reply: bool,
}

/// The `sendChatAction` body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SendChatAction {
    pub chat_id: ChatRef,
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_thread_id: Option<i64>,
}

/// The `getUpdates` body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GetUpdates {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    pub timeout: u64,
    pub allowed_updates: &'static [&'static str],
}

/// The update types the bridge asks for (the setting is sticky on the server, so it is always sent).
pub const ALLOWED_UPDATES: &[&str] = &["message", "edited_message", "callback_query"];

/// A chat as the Bot API takes it: a numeric id, or `@username` for public chats and channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ChatRef {
    Id(i64),
    Username(String),
}

impl ChatRef {
    /// Reads a delivery target's chat id (as the adapter writes them, or as `parse_target` checked).
    pub fn parse(chat_id: &str) -> ChatRef {
        match chat_id.parse::<i64>() {
            Ok(id) => ChatRef::Id(id),
            Err(_) => ChatRef::Username(chat_id.to_string()),
        }
    }
}

impl std::fmt::Display for ChatRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChatRef::Id(id) => write!(f, "{id}"),
            ChatRef::Username(name) => f.write_str(name),
        }
    }
}

/// The part of a sent Message the adapter keeps.
#[derive(Debug, Clone, Deserialize)]
pub struct SentMessage {
    pub message_id: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn update(fixture: &str) -> Update {
        match serde_json::from_str(fixture) {
            Ok(update) => update,
            Err(e) => panic!("fixture does not decode: {e}\n{fixture}"),
        }
    }

    #[test]
    fn contract_examples_decode() {
        let topic = update(include_str!("fixtures/topic_mention.json"));
        let message = topic.message.expect("a message");
        assert_eq!(topic.update_id, 905000123);
        assert_eq!(
            message.chat.id, -1001234567890,
            "chat ids beyond 32 bits fit"
        );
        assert_eq!(message.chat.kind, ChatKind::Supergroup);
        assert!(message.is_topic_message);
        assert_eq!(message.message_thread_id, Some(7));
        assert_eq!(message.entities[0].kind, "mention");
        assert_eq!(
            (message.entities[0].offset, message.entities[0].length),
            (0, 7)
        );

        let callback = update(include_str!("fixtures/callback_query.json"))
            .callback_query
            .expect("a callback");
        assert_eq!(callback.data.as_deref(), Some("approve:17"));
        assert_eq!(callback.message.map(|m| m.message_id), Some(43));

        let inaccessible = update(include_str!("fixtures/callback_inaccessible.json"))
            .callback_query
            .expect("a callback");
        let message = inaccessible.message.expect("chat and id are still there");
        assert_eq!((message.date, message.text), (0, None));
    }

    #[test]
    fn captions_stand_in_for_text() {
        let edited = update(include_str!("fixtures/edited_caption.json"))
            .edited_message
            .expect("an edit");
        let (text, entities) = edited.text_and_entities().expect("a caption");
        assert_eq!(text, "look @MY_BOT");
        assert_eq!(entities.len(), 1);
        let service = update(include_str!("fixtures/migrate_to.json"))
            .message
            .expect("a message");
        assert!(service.text_and_entities().is_none());
        assert_eq!(service.migrate_to_chat_id, Some(-1009876543210));
    }

    #[test]
    fn unknown_chat_kinds_and_fields_do_not_break_decoding() {
        let raw = json!({"update_id": 1, "message": {"message_id": 1, "date": 1, "chat": {"id": 5, "type": "secret"},
            "text": "x", "brand_new_field": {"a": 1}}});
        let update: Update = serde_json::from_value(raw).expect("decodes");
        assert_eq!(update.message.expect("message").chat.kind, ChatKind::Other);
    }

    #[test]
    fn errors_carry_their_parameters() {
        let too_many: Response<serde_json::Value> =
            serde_json::from_str(include_str!("fixtures/error_429.json")).expect("decodes");
        assert!(!too_many.ok);
        assert_eq!(too_many.error_code, Some(429));
        assert_eq!(too_many.parameters.and_then(|p| p.retry_after), Some(14));
        let migrated: Response<serde_json::Value> =
            serde_json::from_str(include_str!("fixtures/error_migrated.json")).expect("decodes");
        assert_eq!(
            migrated.parameters.and_then(|p| p.migrate_to_chat_id),
            Some(-1009876543210)
        );
    }

    #[test]
    fn requests_serialize_as_the_bot_api_expects() {
        let cases = [
            (
                SendMessage {
                    chat_id: ChatRef::parse("-1001234567890"),
                    text: "Done",
                    message_thread_id: Some(7),
                    reply_parameters: Some(ReplyParameters {
                        message_id: 42,
                        allow_sending_without_reply: true,
                    }),
                    entities: &[],
                    reply_markup: None,
                },
                json!({"chat_id": -1001234567890i64, "message_thread_id": 7, "text": "Done",
                       "reply_parameters": {"message_id": 42, "allow_sending_without_reply": true}}),
            ),
            (
                SendMessage {
                    chat_id: ChatRef::parse("@news"),
                    text: "hi",
                    message_thread_id: None,
                    reply_parameters: None,
                    entities: &[],
                    reply_markup: None,
                },
                json!({"chat_id": "@news", "text": "hi"}),
            ),
            (
                SendMessage {
                    chat_id: ChatRef::parse("1111"),
                    text: "Run ls?",
                    message_thread_id: None,
                    reply_parameters: None,
                    entities: &[Entity {
                        kind: "code",
                        offset: 4,
                        length: 2,
                    }],
                    reply_markup: Some(&InlineKeyboard {
                        inline_keyboard: vec![vec![InlineButton {
                            text: "Approve".into(),
                            callback_data: "sb:a:17".into(),
                        }]],
                    }),
                },
                json!({"chat_id": 1111, "text": "Run ls?",
                       "entities": [{"type": "code", "offset": 4, "length": 2}],
                       "reply_markup": {"inline_keyboard": [[{"text": "Approve", "callback_data": "sb:a:17"}]]}}),
            ),
        ];
        for (request, expected) in cases {
            assert_eq!(
                serde_json::to_value(&request).expect("serializes"),
                expected
            );
        }
        let poll = GetUpdates {
            offset: Some(905000124),
            timeout: 30,
            allowed_updates: ALLOWED_UPDATES,
        };
        let edit = EditMessageText {
            chat_id: ChatRef::parse("1111"),
            message_id: 43,
            text: "Done",
            entities: &[],
        };
        assert_eq!(
            serde_json::to_value(&edit).expect("serializes"),
            json!({"chat_id": 1111, "message_id": 43, "text": "Done"}),
            "no reply_markup: the buttons go"
        );
        let answers = [
            (
                AnswerCallbackQuery {
                    callback_query_id: "q1",
                    text: None,
                    show_alert: false,
                },
                json!({"callback_query_id": "q1"}),
            ),
            (
                AnswerCallbackQuery {
                    callback_query_id: "q2",
                    text: Some("No"),
                    show_alert: true,
                },
                json!({"callback_query_id": "q2", "text": "No", "show_alert": true}),
            ),
        ];
        for (answer, expected) in answers {
            assert_eq!(serde_json::to_value(&answer).expect("serializes"), expected);
        }
        assert_eq!(
            serde_json::to_value(&poll).expect("serializes"),
            json!({"offset": 905000124, "timeout": 30, "allowed_updates": ["message", "edited_message", "callback_query"]})
        );
    }

    #[test]
    fn display_names() {
        let user = |first: &str, last: Option<&str>, username: Option<&str>| User {
            id: 7,
            is_bot: false,
            first_name: first.into(),
            last_name: last.map(Into::into),
            username: username.map(Into::into),
        };
        assert_eq!(
            user("Ann", Some("Lee"), Some("ann")).display_name(),
            "Ann Lee"
        );
        assert_eq!(user("Ann", None, None).display_name(), "Ann");
        assert_eq!(user("", None, Some("ann")).display_name(), "@ann");
        assert_eq!(user(" ", None, None).display_name(), "7");
    }
}
