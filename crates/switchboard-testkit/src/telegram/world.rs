//! The fake's world: chats, topics, messages, the update queue, the cues for misbehaving and the
//! records of what the bot did. Pure data; the HTTP side locks it, changes it and notifies.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::{
    CallbackAnswer, ChatAction, Draft, Edit, Failure, Person, Reaction, RecordedRequest, Sent,
};

/// What kind of group a chat is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupKind {
    /// A basic group (no threads, no topics).
    Group,
    /// A supergroup without topics; replies form reply threads.
    Supergroup,
    /// A supergroup with forum topics.
    Forum,
    /// A channel (the bot posts as an admin).
    Channel,
}

#[derive(Clone, Debug)]
pub(crate) struct ChatInfo {
    pub id: i64,
    pub kind: &'static str,
    pub title: Option<String>,
    pub username: Option<String>,
    pub first_name: Option<String>,
    pub forum: bool,
    pub topics: BTreeSet<i64>,
    pub next_message_id: i64,
    pub migrated_to: Option<i64>,
}

impl ChatInfo {
    pub fn json(&self) -> Value {
        let mut chat = Map::new();
        chat.insert("id".into(), json!(self.id));
        chat.insert("type".into(), json!(self.kind));
        if let Some(title) = &self.title {
            chat.insert("title".into(), json!(title));
        }
        if let Some(username) = &self.username {
            chat.insert("username".into(), json!(username));
        }
        if let Some(first_name) = &self.first_name {
            chat.insert("first_name".into(), json!(first_name));
        }
        if self.forum {
            chat.insert("is_forum".into(), json!(true));
        }
        Value::Object(chat)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct QueuedUpdate {
    pub id: i64,
    pub kind: String,
    pub json: Value,
    /// Injected raw: delivered by the next poll whatever its offset, then forgotten.
    pub forced: bool,
}

#[derive(Default)]
pub(crate) struct Records {
    pub requests: Vec<RecordedRequest>,
    pub sent: Vec<Sent>,
    pub actions: Vec<ChatAction>,
    pub callback_answers: Vec<CallbackAnswer>,
    pub edits: Vec<Edit>,
    pub reactions: Vec<Reaction>,
    pub drafts: Vec<Draft>,
}

pub(crate) struct World {
    pub token: String,
    pub token_valid: bool,
    pub bot: Person,
    pub webhook: Option<String>,
    /// The bot's command menu (`setMyCommands`).
    pub commands: Vec<Value>,
    /// Whether `sendMessageDraft` works for this bot (older servers kept it to bots with forum
    /// topic mode; off by default, as for most bots then).
    pub drafts_enabled: bool,
    pub next_update_id: i64,
    pub updates: VecDeque<QueuedUpdate>,
    /// Every update ever queued, for replays.
    pub history: Vec<Value>,
    pub allowed_updates: Option<Vec<String>>,
    /// The highest offset a poll has confirmed.
    pub confirmed_offset: i64,
    pub chats: BTreeMap<i64, ChatInfo>,
    pub messages: HashMap<(i64, i64), Value>,
    /// Callback query id → answered yet.
    pub callbacks: HashMap<String, bool>,
    pub next_callback: u64,
    /// Bumped by every `getUpdates`; a waiting poll that sees a newer one ends with 409.
    pub poll_generation: u64,
    pub active_polls: usize,
    pub failures: HashMap<String, VecDeque<Failure>>,
    pub slow: HashMap<String, Duration>,
    pub records: Records,
    /// Files people sent, by `file_id`: their `file_path` and bytes.
    pub files: HashMap<String, StoredFile>,
    /// Downloads send their headers, then nothing (a stalled transfer).
    pub stall_files: bool,
    /// How many file downloads were answered.
    pub file_downloads: usize,
}

/// A file a person sent, as the server keeps it.
#[derive(Clone, Debug)]
pub(crate) struct StoredFile {
    pub path: String,
    pub bytes: std::sync::Arc<Vec<u8>>,
}

pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// The entities the server finds in plain text by itself: `@username` mentions and `/commands`
/// (optionally `/command@bot`), with offsets and lengths in UTF-16 code units.
pub(crate) fn detect_entities(text: &str) -> Vec<Value> {
    let chars: Vec<char> = text.chars().collect();
    let mut offsets = Vec::with_capacity(chars.len() + 1);
    let mut at = 0;
    for c in &chars {
        offsets.push(at);
        at += c.len_utf16();
    }
    offsets.push(at);
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let run = |from: usize| (from..chars.len()).take_while(|i| word(chars[*i])).count();
    let mut entities = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let boundary =
            i == 0 || !(word(chars[i - 1]) || chars[i - 1] == '@' || chars[i - 1] == '/');
        match chars[i] {
            '@' if boundary && run(i + 1) >= 3 => {
                let end = i + 1 + run(i + 1);
                entities.push(json!({"type": "mention", "offset": offsets[i], "length": offsets[end] - offsets[i]}));
                i = end;
            }
            '/' if (i == 0 || chars[i - 1].is_whitespace()) && run(i + 1) >= 1 => {
                let mut end = i + 1 + run(i + 1);
                if end < chars.len() && chars[end] == '@' && run(end + 1) >= 3 {
                    end = end + 1 + run(end + 1);
                }
                entities.push(json!({"type": "bot_command", "offset": offsets[i], "length": offsets[end] - offsets[i]}));
                i = end;
            }
            _ => i += 1,
        }
    }
    entities
}

impl World {
    pub fn new(token: String, bot: Person, first_update_id: i64) -> Self {
        World {
            token,
            token_valid: true,
            bot,
            webhook: None,
            commands: Vec::new(),
            drafts_enabled: false,
            next_update_id: first_update_id,
            updates: VecDeque::new(),
            history: Vec::new(),
            allowed_updates: None,
            confirmed_offset: 0,
            chats: BTreeMap::new(),
            messages: HashMap::new(),
            callbacks: HashMap::new(),
            next_callback: 1,
            poll_generation: 0,
            active_polls: 0,
            failures: HashMap::new(),
            slow: HashMap::new(),
            records: Records::default(),
            files: HashMap::new(),
            stall_files: false,
            file_downloads: 0,
        }
    }

    /// Queues an update of `kind` with `payload`; returns its id.
    pub fn push_update(&mut self, kind: &str, payload: Value) -> i64 {
        let id = self.next_update_id;
        self.next_update_id += 1;
        let json = json!({"update_id": id, kind: payload});
        self.history.push(json.clone());
        self.updates.push_back(QueuedUpdate {
            id,
            kind: kind.to_string(),
            json,
            forced: false,
        });
        id
    }

    pub fn push_raw(&mut self, json: Value) -> i64 {
        let id = match json.get("update_id").and_then(Value::as_i64) {
            Some(id) => id,
            None => {
                let id = self.next_update_id;
                self.next_update_id += 1;
                id
            }
        };
        let mut json = json;
        if let Some(object) = json.as_object_mut() {
            object.insert("update_id".into(), json!(id));
        }
        let kind = json
            .as_object()
            .and_then(|o| o.keys().find(|k| *k != "update_id").cloned())
            .unwrap_or_else(|| "unknown".into());
        self.updates.push_back(QueuedUpdate {
            id,
            kind,
            json,
            forced: true,
        });
        id
    }

    pub fn private_chat(&mut self, person: &Person) -> i64 {
        let chat = self.chats.entry(person.id).or_insert_with(|| ChatInfo {
            id: person.id,
            kind: "private",
            title: None,
            username: person.username.clone(),
            first_name: Some(person.first_name.clone()),
            forum: false,
            topics: BTreeSet::new(),
            next_message_id: 1,
            migrated_to: None,
        });
        chat.id
    }

    pub fn add_group(&mut self, id: i64, title: &str, kind: GroupKind, username: Option<&str>) {
        let (kind_name, forum) = match kind {
            GroupKind::Group => ("group", false),
            GroupKind::Supergroup => ("supergroup", false),
            GroupKind::Forum => ("supergroup", true),
            GroupKind::Channel => ("channel", false),
        };
        let chat = self.chats.entry(id).or_insert_with(|| ChatInfo {
            id,
            kind: kind_name,
            title: Some(title.to_string()),
            username: None,
            first_name: None,
            forum,
            topics: BTreeSet::new(),
            next_message_id: 1,
            migrated_to: None,
        });
        chat.kind = kind_name;
        chat.forum = forum;
        chat.title = Some(title.to_string());
        if let Some(username) = username {
            chat.username = Some(username.trim_start_matches('@').to_string());
        }
    }

    /// A group for a message: created as a supergroup without topics if unknown.
    pub fn ensure_group(&mut self, id: i64, kind: GroupKind) {
        if !self.chats.contains_key(&id) {
            self.add_group(id, &format!("Group {id}"), kind, None);
        }
        if kind == GroupKind::Forum {
            if let Some(chat) = self.chats.get_mut(&id) {
                chat.forum = true;
                chat.kind = "supergroup";
            }
        }
    }

    /// Makes sure a forum topic exists: its id is the id of its first (service) message.
    pub fn ensure_topic(&mut self, chat_id: i64, topic: i64, creator: &Person) {
        self.ensure_group(chat_id, GroupKind::Forum);
        let Some(chat) = self.chats.get_mut(&chat_id) else {
            return;
        };
        if !chat.topics.insert(topic) {
            return;
        }
        chat.next_message_id = chat.next_message_id.max(topic + 1);
        let root = json!({
            "message_id": topic, "date": now_secs(), "from": creator.json(), "chat": chat.json(),
            "message_thread_id": topic, "is_topic_message": true,
            "forum_topic_created": {"name": format!("Topic {topic}"), "icon_color": 7322096},
        });
        self.messages.insert((chat_id, topic), root);
    }

    pub fn next_message_id(&mut self, chat_id: i64) -> i64 {
        match self.chats.get_mut(&chat_id) {
            Some(chat) => {
                let id = chat.next_message_id;
                chat.next_message_id += 1;
                id
            }
            None => 1,
        }
    }

    /// Builds a message in `chat_id` (which must exist), stores it and returns it.
    pub fn new_message(
        &mut self,
        chat_id: i64,
        from: &Person,
        text: &str,
        thread: Option<(i64, bool)>,
        reply_to: Option<i64>,
    ) -> Value {
        let id = self.next_message_id(chat_id);
        let chat = self
            .chats
            .get(&chat_id)
            .map(ChatInfo::json)
            .unwrap_or(json!({"id": chat_id, "type": "private"}));
        let mut message =
            json!({"message_id": id, "date": now_secs(), "from": from.json(), "chat": chat});
        let entities = detect_entities(text);
        message["text"] = json!(text);
        if !entities.is_empty() {
            message["entities"] = json!(entities);
        }
        if let Some((thread_id, is_topic)) = thread {
            message["message_thread_id"] = json!(thread_id);
            if is_topic {
                message["is_topic_message"] = json!(true);
            }
        }
        if let Some(reply_id) = reply_to {
            if let Some(replied) = self.messages.get(&(chat_id, reply_id)) {
                let mut replied = replied.clone();
                // The server never nests replies deeper than one level.
                if let Some(object) = replied.as_object_mut() {
                    object.remove("reply_to_message");
                }
                message["reply_to_message"] = replied;
            }
        }
        self.messages.insert((chat_id, id), message.clone());
        message
    }

    /// Where a reply to `message_id` lands: its topic, or for supergroups its reply thread.
    pub fn thread_of_reply(&self, chat_id: i64, message_id: i64) -> Option<(i64, bool)> {
        let chat = self.chats.get(&chat_id)?;
        let replied = self.messages.get(&(chat_id, message_id))?;
        if replied.get("is_topic_message").and_then(Value::as_bool) == Some(true) {
            let topic = replied.get("message_thread_id").and_then(Value::as_i64)?;
            return Some((topic, true));
        }
        if chat.kind != "supergroup" {
            return None;
        }
        // A reply thread: named after its first message, without `is_topic_message`.
        let root = replied
            .get("message_thread_id")
            .and_then(Value::as_i64)
            .unwrap_or(message_id);
        Some((root, false))
    }

    /// The chat a `chat_id` parameter names: a number (or numeric string) or `@username`.
    pub fn resolve_chat(&self, value: &Value) -> Option<i64> {
        match value {
            Value::Number(n) => n.as_i64().filter(|id| self.chats.contains_key(id)),
            Value::String(s) => match s.trim().parse::<i64>() {
                Ok(id) => self.chats.contains_key(&id).then_some(id),
                Err(_) => {
                    let name = s.trim().strip_prefix('@')?;
                    self.chats
                        .values()
                        .find(|c| {
                            c.username
                                .as_deref()
                                .is_some_and(|u| u.eq_ignore_ascii_case(name))
                        })
                        .map(|c| c.id)
                }
            },
            _ => None,
        }
    }

    /// The bot's latest message in a chat.
    pub fn last_bot_message(&self, chat_id: i64) -> Option<i64> {
        self.records
            .sent
            .iter()
            .rev()
            .find(|s| s.chat_id == chat_id)
            .map(|s| s.message_id)
    }

    pub fn new_callback_id(&mut self) -> String {
        let id = format!("{}{:08}", self.bot.id, self.next_callback);
        self.next_callback += 1;
        self.callbacks.insert(id.clone(), false);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(type, offset, length)` of each entity.
    type Spans = Vec<(&'static str, usize, usize)>;

    #[test]
    fn entities_are_found_with_utf16_offsets() {
        let cases: Vec<(&str, Spans)> = vec![
            ("@my_bot hi", vec![("mention", 0, 7)]),
            ("👋 @my_bot hi", vec![("mention", 3, 7)]),
            (
                "héllo @ann and @bob_2",
                vec![("mention", 6, 4), ("mention", 15, 6)],
            ),
            ("/start", vec![("bot_command", 0, 6)]),
            ("/help@my_bot now", vec![("bot_command", 0, 12)]),
            ("mail me at a@example.com", vec![]),
            ("a/b and x /go", vec![("bot_command", 10, 3)]),
            ("@ab too short", vec![]),
        ];
        for (text, expected) in cases {
            let found: Vec<(String, usize, usize)> = detect_entities(text)
                .iter()
                .map(|e| {
                    (
                        e["type"].as_str().unwrap_or_default().to_string(),
                        e["offset"].as_u64().unwrap_or_default() as usize,
                        e["length"].as_u64().unwrap_or_default() as usize,
                    )
                })
                .collect();
            let expected: Vec<(String, usize, usize)> = expected
                .into_iter()
                .map(|(k, o, l)| (k.to_string(), o, l))
                .collect();
            assert_eq!(found, expected, "{text:?}");
        }
    }
}
