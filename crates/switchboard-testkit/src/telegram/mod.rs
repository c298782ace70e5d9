//! A fake Telegram Bot API server, faithful to section 1 of `shared/contracts/channels.md` and its
//! checklist in section 4.
//!
//! It serves `{api_base}/bot{TOKEN}/{method}` over real HTTP on `127.0.0.1`, with long polling
//! (`getUpdates` honouring `offset`, `limit`, `timeout` capped at 50 s and the sticky
//! `allowed_updates`), lets a test act as users (direct messages, group messages with or without
//! a mention, forum topics, reply threads, button clicks), records everything the bot did, and
//! misbehaves on cue. Like the real server it answers with the HTTP status equal to
//! `error_code`, adds `Retry-After` to a 429, ends a pending long poll with 409 when a newer one
//! arrives, counts entity offsets in UTF-16 units and numbers updates one by one.
//!
//! ```no_run
//! # async fn demo() {
//! use switchboard_testkit::telegram::{FakeTelegram, Person};
//!
//! let tg = FakeTelegram::start().await;
//! let (base, token) = (tg.api_base(), tg.token());   // http://127.0.0.1:PORT, "123:AA…"
//! // … run the bot against `base` with `token` …
//! let asked = tg.send_dm(1111, "Ann", "hello");
//! tg.wait_for("a reply", |tg| tg.sent_to(1111).len() == 1).await;
//! assert_eq!(tg.sent_to(1111)[0].reply_to, Some(asked));
//! tg.send_group(-100123, &Person::new(1111, "Ann"), "status?", true); // "@bot status?"
//! # let _ = (base, token);
//! # }
//! ```

mod http;
mod world;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use world::GroupKind;
use world::World;

/// How long [`FakeTelegram::wait_for`] waits.
pub const WAIT: Duration = Duration::from_secs(15);

/// A Telegram account: a person, or a bot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Person {
    pub id: i64,
    pub first_name: String,
    pub username: Option<String>,
    pub is_bot: bool,
}

impl Person {
    pub fn new(id: i64, first_name: &str) -> Person {
        Person {
            id,
            first_name: first_name.to_string(),
            username: None,
            is_bot: false,
        }
    }

    /// Another bot (its messages must never be processed).
    pub fn bot(id: i64, first_name: &str, username: &str) -> Person {
        Person {
            id,
            first_name: first_name.to_string(),
            username: Some(username.to_string()),
            is_bot: true,
        }
    }

    pub fn with_username(mut self, username: &str) -> Person {
        self.username = Some(username.trim_start_matches('@').to_string());
        self
    }

    /// The User object.
    pub fn json(&self) -> Value {
        let mut user = json!({"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name});
        if let Some(username) = &self.username {
            user["username"] = json!(username);
        }
        user
    }
}

/// One HTTP exchange the fake answered (recorded when the answer was made).
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRequest {
    /// The method as written in the URL (`getUpdates`, `sendMessage`, …).
    pub method: String,
    pub http_method: String,
    /// The path as requested, token included.
    pub path: String,
    /// The parameters from the query string and the body, merged (JSON values; form values that
    /// are JSON are decoded).
    pub params: Value,
    /// The raw body.
    pub body: String,
    pub status: u16,
}

/// A message the bot sent with `sendMessage`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sent {
    pub message_id: i64,
    pub chat_id: i64,
    /// `message_thread_id` exactly as the bot sent it (even where the server ignores it).
    pub thread_id: Option<i64>,
    /// The message replied to (`reply_parameters.message_id` or the older `reply_to_message_id`).
    pub reply_to: Option<i64>,
    pub text: String,
    pub parse_mode: Option<String>,
    pub reply_markup: Option<Value>,
    /// The request parameters as received.
    pub body: Value,
}

/// A `sendChatAction` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatAction {
    pub chat_id: i64,
    pub thread_id: Option<i64>,
    pub action: String,
}

/// An `answerCallbackQuery` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallbackAnswer {
    pub callback_query_id: String,
    pub text: Option<String>,
    pub show_alert: bool,
}

/// An `editMessageText` or `editMessageReplyMarkup` call that succeeded.
#[derive(Clone, Debug, PartialEq)]
pub struct Edit {
    pub method: String,
    pub chat_id: i64,
    pub message_id: i64,
    pub text: Option<String>,
    pub reply_markup: Option<Value>,
    pub body: Value,
}

/// A `sendMessageDraft` call the fake took: an ephemeral preview in a private chat.
#[derive(Clone, Debug, PartialEq)]
pub struct Draft {
    pub chat_id: i64,
    pub draft_id: i64,
    pub text: String,
    pub thread_id: Option<i64>,
}

/// A `setMessageReaction` call.
#[derive(Clone, Debug, PartialEq)]
pub struct Reaction {
    pub chat_id: i64,
    pub message_id: i64,
    pub reaction: Value,
}

/// A file a person sends the bot, as the Bot API describes it in a message.
#[derive(Clone, Debug)]
pub enum Media {
    /// A photo; the server offers it in sizes, the largest being these bytes.
    Photo(Vec<u8>),
    /// A file sent as a document, with the name and type the person's client gave it.
    Document {
        name: String,
        mime: String,
        bytes: Vec<u8>,
    },
    /// A voice note (Ogg Opus).
    Voice(Vec<u8>),
    /// A music file.
    Audio {
        name: String,
        bytes: Vec<u8>,
    },
    Video(Vec<u8>),
}

/// A scripted error answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub status: u16,
    pub description: String,
    pub retry_after: Option<u64>,
    pub migrate_to_chat_id: Option<i64>,
}

pub(crate) struct Shared {
    world: Mutex<World>,
    changed: Notify,
    shutdown: CancellationToken,
    /// Cancelled to cut every open connection; replaced afterwards.
    connections: Mutex<CancellationToken>,
    prefix: String,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, World> {
        // Every change is made whole under the lock, so a poisoned lock still holds a whole world.
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the world and wakes every waiter (long polls, `wait_for`).
    pub(crate) fn update<T>(&self, change: impl FnOnce(&mut World) -> T) -> T {
        let out = change(&mut self.lock());
        self.changed.notify_waiters();
        out
    }
}

/// The fake server. Cheap to clone; it stops when the last clone is dropped.
#[derive(Clone)]
pub struct FakeTelegram {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// How to start the fake.
#[derive(Clone, Debug)]
pub struct FakeOptions {
    /// A path the API lives under (`/tg` gives `http://127.0.0.1:PORT/tg/bot…`); empty for none.
    pub path_prefix: String,
    /// The bot's account.
    pub bot: Person,
    /// The first update id (they then go up one by one).
    pub first_update_id: i64,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            path_prefix: String::new(),
            bot: Person::bot(7_000_000_001, "Switchboard", "switchboard_test_bot"),
            first_update_id: 905_000_000 + i64::from(rand::random::<u16>()),
        }
    }
}

impl FakeTelegram {
    /// Starts on a free loopback port with a random token.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start() -> FakeTelegram {
        FakeTelegram::start_with(FakeOptions::default()).await
    }

    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start_with(options: FakeOptions) -> FakeTelegram {
        let listener = match TcpListener::bind(("127.0.0.1", 0)).await {
            Ok(listener) => listener,
            Err(e) => panic!("the fake Telegram server could not bind: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => panic!("the fake Telegram server has no address: {e}"),
        };
        let token = format!("{}:AA{}", options.bot.id, uuid::Uuid::new_v4().simple());
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            world: Mutex::new(World::new(
                token,
                options.bot.clone(),
                options.first_update_id,
            )),
            changed: Notify::new(),
            connections: Mutex::new(shutdown.child_token()),
            shutdown,
            prefix: format!("/{}", options.path_prefix.trim_matches('/'))
                .trim_end_matches('/')
                .to_string(),
        });
        tokio::spawn(http::serve(listener, shared.clone()));
        FakeTelegram {
            inner: Arc::new(Inner { shared, addr }),
        }
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.shared().lock()
    }

    fn update<T>(&self, change: impl FnOnce(&mut World) -> T) -> T {
        self.shared().update(change)
    }

    // ----- addresses -----------------------------------------------------------------------------

    /// The bot token the server accepts.
    pub fn token(&self) -> String {
        self.world().token.clone()
    }

    /// `http://127.0.0.1:PORT` plus the path prefix, if any: the bot's `api_base`.
    pub fn api_base(&self) -> String {
        format!("http://{}{}", self.inner.addr, self.shared().prefix)
    }

    /// The bot's own account (`getMe`).
    pub fn bot(&self) -> Person {
        self.world().bot.clone()
    }

    // ----- acting as users -----------------------------------------------------------------------

    /// `user_id` (called `name`) writes to the bot in private; returns the message id.
    pub fn send_dm(&self, user_id: i64, name: &str, text: &str) -> i64 {
        self.send_dm_from(&Person::new(user_id, name), text)
    }

    pub fn send_dm_from(&self, from: &Person, text: &str) -> i64 {
        self.update(|w| {
            let chat = w.private_chat(from);
            let message = w.new_message(chat, from, text, None, None);
            w.push_update("message", message.clone());
            message_id(&message)
        })
    }

    /// `from` sends the bot a file in private, with `caption` (the text, if any); returns the
    /// message id. The file is served by `getFile` and the file download address.
    pub fn send_media_dm(&self, from: &Person, media: Media, caption: Option<&str>) -> i64 {
        self.update(|w| {
            let chat = w.private_chat(from);
            let mut message = w.new_message(chat, from, caption.unwrap_or_default(), None, None);
            if let Some(object) = message.as_object_mut() {
                let text = object.remove("text");
                let entities = object.remove("entities");
                if caption.is_some() {
                    object.insert("caption".into(), text.unwrap_or_default());
                    if let Some(entities) = entities {
                        object.insert("caption_entities".into(), entities);
                    }
                }
            }
            let n = w.files.len() + 1;
            let mut store = |path: String, bytes: Vec<u8>| {
                let id = format!("BQACAgIAAxkB{n}_{}", w.files.len());
                let size = bytes.len();
                w.files.insert(
                    id.clone(),
                    world::StoredFile {
                        path,
                        bytes: Arc::new(bytes),
                    },
                );
                (id, size)
            };
            let (key, value) = match media {
                Media::Photo(bytes) => {
                    let (small, small_size) =
                        store(format!("photos/file_{n}_s.jpg"), vec![0xFF, 0xD8, 0xFF, 0xD9]);
                    let (big, big_size) = store(format!("photos/file_{n}.jpg"), bytes);
                    (
                        "photo",
                        json!([
                            {"file_id": small, "file_unique_id": format!("AQs{n}"), "width": 90, "height": 67, "file_size": small_size},
                            {"file_id": big, "file_unique_id": format!("AQb{n}"), "width": 1280, "height": 960, "file_size": big_size}
                        ]),
                    )
                }
                Media::Document { name, mime, bytes } => {
                    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("bin");
                    let (id, size) = store(format!("documents/file_{n}.{ext}"), bytes);
                    (
                        "document",
                        json!({"file_id": id, "file_unique_id": format!("AgD{n}"), "file_name": name, "mime_type": mime, "file_size": size}),
                    )
                }
                Media::Voice(bytes) => {
                    let (id, size) = store(format!("voice/file_{n}.oga"), bytes);
                    (
                        "voice",
                        json!({"file_id": id, "file_unique_id": format!("AgV{n}"), "duration": 3, "mime_type": "audio/ogg", "file_size": size}),
                    )
                }
                Media::Audio { name, bytes } => {
                    let (id, size) = store(format!("music/file_{n}.mp3"), bytes);
                    (
                        "audio",
                        json!({"file_id": id, "file_unique_id": format!("AgA{n}"), "duration": 60, "file_name": name, "mime_type": "audio/mpeg", "file_size": size}),
                    )
                }
                Media::Video(bytes) => {
                    let (id, size) = store(format!("videos/file_{n}.mp4"), bytes);
                    (
                        "video",
                        json!({"file_id": id, "file_unique_id": format!("BAv{n}"), "width": 640, "height": 360, "duration": 5, "mime_type": "video/mp4", "file_size": size}),
                    )
                }
            };
            message[key] = value;
            let id = message_id(&message);
            w.messages.insert((chat, id), message.clone());
            w.push_update("message", message);
            id
        })
    }

    /// Makes file downloads send their headers and then nothing, as a stalled transfer does.
    pub fn stall_files(&self, on: bool) {
        self.update(|w| w.stall_files = on);
    }

    /// How many file downloads the fake answered.
    pub fn file_downloads(&self) -> usize {
        self.world().file_downloads
    }

    /// `from` writes to the bot in topic `topic_id` of their private chat (a bot with threaded
    /// mode: the chat stays `private`, the message carries `message_thread_id`).
    pub fn send_private_topic(&self, from: &Person, topic_id: i64, text: &str) -> i64 {
        self.update(|w| {
            let chat = w.private_chat(from);
            let message = w.new_message(chat, from, text, Some((topic_id, true)), None);
            w.push_update("message", message.clone());
            message_id(&message)
        })
    }

    /// A message in a group (created as a supergroup without topics if unknown). With `mention`
    /// the text starts with `@botusername`, as a client writes it.
    pub fn send_group(&self, chat_id: i64, from: &Person, text: &str, mention: bool) -> i64 {
        self.update(|w| {
            w.ensure_group(chat_id, GroupKind::Supergroup);
            let text = with_mention(w, text, mention);
            let message = w.new_message(chat_id, from, &text, None, None);
            w.push_update("message", message.clone());
            message_id(&message)
        })
    }

    /// A message in forum topic `topic_id` (the chat becomes a forum and the topic is created if
    /// needed); `is_topic_message` is set and, as the server does, `reply_to_message` is the topic's
    /// first message.
    pub fn send_topic(
        &self,
        chat_id: i64,
        topic_id: i64,
        from: &Person,
        text: &str,
        mention: bool,
    ) -> i64 {
        self.update(|w| {
            w.ensure_topic(chat_id, topic_id, from);
            let text = with_mention(w, text, mention);
            let message =
                w.new_message(chat_id, from, &text, Some((topic_id, true)), Some(topic_id));
            w.push_update("message", message.clone());
            message_id(&message)
        })
    }

    /// A reply to message `reply_to` of the chat. In a forum topic it stays in the topic; in a
    /// supergroup it carries the reply thread's `message_thread_id` without `is_topic_message`.
    pub fn reply_to(
        &self,
        chat_id: i64,
        reply_to: i64,
        from: &Person,
        text: &str,
        mention: bool,
    ) -> i64 {
        self.update(|w| {
            let thread = w.thread_of_reply(chat_id, reply_to);
            let text = with_mention(w, text, mention);
            let message = w.new_message(chat_id, from, &text, thread, Some(reply_to));
            w.push_update("message", message.clone());
            message_id(&message)
        })
    }

    /// A reply to the bot's latest message in the chat.
    ///
    /// # Panics
    /// If the bot has not sent anything there.
    pub fn reply_to_bot(&self, chat_id: i64, from: &Person, text: &str) -> i64 {
        let Some(last) = self.world().last_bot_message(chat_id) else {
            panic!("reply_to_bot: the bot has not sent anything to chat {chat_id}");
        };
        self.reply_to(chat_id, last, from, text, false)
    }

    /// The user edits their message; an `edited_message` update follows.
    pub fn edit_by_user(&self, chat_id: i64, message_id: i64, text: &str) {
        self.update(|w| {
            let Some(mut message) = w.messages.get(&(chat_id, message_id)).cloned() else {
                return;
            };
            message["text"] = json!(text);
            message["entities"] = json!(world::detect_entities(text));
            message["edit_date"] = json!(world::now_secs());
            w.messages.insert((chat_id, message_id), message.clone());
            w.push_update("edited_message", message);
        });
    }

    /// `from` presses an inline button with `data` under message `message_id`; returns the
    /// callback query id.
    pub fn click(&self, chat_id: i64, message_id: i64, from: &Person, data: &str) -> String {
        self.update(|w| {
            let id = w.new_callback_id();
            let message = w
                .messages
                .get(&(chat_id, message_id))
                .cloned()
                .unwrap_or_else(|| {
                    // The message is gone: an InaccessibleMessage has only the chat, the id and date 0.
                    let chat = w
                        .chats
                        .get(&chat_id)
                        .map(world::ChatInfo::json)
                        .unwrap_or(json!({"id": chat_id}));
                    json!({"chat": chat, "message_id": message_id, "date": 0})
                });
            let query = json!({"id": id, "from": from.json(), "message": message,
                "chat_instance": format!("{}", chat_id.unsigned_abs() % 1_000_000), "data": data});
            w.push_update("callback_query", query);
            id
        })
    }

    /// `from` presses the button labelled `label` under message `message_id`, as the message
    /// stands now; returns the callback query id.
    ///
    /// # Panics
    /// If the message has no such button (anymore): a person cannot press it.
    pub fn press(&self, chat_id: i64, message_id: i64, from: &Person, label: &str) -> String {
        let message = self.message(chat_id, message_id).unwrap_or(Value::Null);
        let buttons: Vec<Value> = message["reply_markup"]["inline_keyboard"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_array)
            .flatten()
            .cloned()
            .collect();
        let Some(data) = buttons
            .iter()
            .find(|b| b["text"] == label)
            .and_then(|b| b["callback_data"].as_str())
        else {
            panic!(
                "press: message {message_id} in chat {chat_id} has no button {label:?}; its buttons: {buttons:?}"
            );
        };
        self.click(chat_id, message_id, from, data)
    }

    /// Queues an update exactly as given (an `update_id` is added if missing). It is delivered by
    /// the next poll whatever that poll's offset — a redelivery after a lost confirmation — and
    /// then forgotten. Returns its update id.
    pub fn push_raw_update(&self, update: Value) -> i64 {
        self.update(|w| w.push_raw(update))
    }

    /// The update that carried message `message_id` of the chat (the first one, not an edit), as
    /// delivered — for replaying it with [`FakeTelegram::push_raw_update`].
    pub fn update_of(&self, chat_id: i64, message_id: i64) -> Option<Value> {
        self.world()
            .history
            .iter()
            .find(|u| {
                let m = &u["message"];
                m["chat"]["id"].as_i64() == Some(chat_id)
                    && m["message_id"].as_i64() == Some(message_id)
            })
            .cloned()
    }

    // ----- chats ---------------------------------------------------------------------------------

    /// Creates (or changes) a group, supergroup, forum or channel, optionally with a public
    /// `@username`.
    pub fn add_group(&self, chat_id: i64, title: &str, kind: GroupKind, username: Option<&str>) {
        self.update(|w| w.add_group(chat_id, title, kind, username));
    }

    /// Upgrades a group to a supergroup with a new id, as Telegram does: a service message with
    /// `migrate_to_chat_id` in the old chat, one with `migrate_from_chat_id` in the new one, and
    /// sends to the old id fail with 400 and `parameters.migrate_to_chat_id`. Returns the new id.
    pub fn migrate_group(&self, chat_id: i64) -> i64 {
        self.update(|w| {
            let new_id = -1_000_000_000_000 - chat_id.abs();
            let title = w
                .chats
                .get(&chat_id)
                .and_then(|c| c.title.clone())
                .unwrap_or_default();
            w.ensure_group(chat_id, GroupKind::Group);
            w.add_group(new_id, &title, GroupKind::Supergroup, None);
            let from = Person::new(1, "Telegram");
            let mut old = w.new_message(chat_id, &from, "", None, None);
            if let Some(o) = old.as_object_mut() {
                o.remove("text");
                o.insert("migrate_to_chat_id".into(), json!(new_id));
            }
            w.push_update("message", old);
            let mut new = w.new_message(new_id, &from, "", None, None);
            if let Some(o) = new.as_object_mut() {
                o.remove("text");
                o.insert("migrate_from_chat_id".into(), json!(chat_id));
            }
            w.push_update("message", new);
            if let Some(chat) = w.chats.get_mut(&chat_id) {
                chat.migrated_to = Some(new_id);
            }
            new_id
        })
    }

    /// Deletes a forum topic: sends into it fail with "message thread not found".
    pub fn delete_topic(&self, chat_id: i64, topic_id: i64) {
        self.update(|w| {
            if let Some(chat) = w.chats.get_mut(&chat_id) {
                chat.topics.remove(&topic_id);
            }
        });
    }

    // ----- misbehaving ---------------------------------------------------------------------------

    /// The next call of `method` (case-insensitive) fails with this status and description; a
    /// 429 carries `parameters.retry_after` and `Retry-After`. Several queue up.
    pub fn fail_next(
        &self,
        method: &str,
        status: u16,
        description: &str,
        retry_after: Option<u64>,
    ) {
        self.fail_next_with(
            method,
            Failure {
                status,
                description: description.to_string(),
                retry_after,
                migrate_to_chat_id: None,
            },
        );
    }

    pub fn fail_next_with(&self, method: &str, failure: Failure) {
        self.update(|w| {
            w.failures
                .entry(method.to_ascii_lowercase())
                .or_default()
                .push_back(failure)
        });
    }

    /// Every call of `method` waits this long before it is handled (zero: no more).
    pub fn slow(&self, method: &str, delay: Duration) {
        self.update(|w| {
            if delay.is_zero() {
                w.slow.remove(&method.to_ascii_lowercase());
            } else {
                w.slow.insert(method.to_ascii_lowercase(), delay);
            }
        });
    }

    /// With `false` every call gets 401 Unauthorized, as after the token was revoked.
    pub fn set_token_valid(&self, valid: bool) {
        self.update(|w| w.token_valid = valid);
    }

    /// Sets (or with `None` removes) a webhook: `getUpdates` then fails with 409 until
    /// `deleteWebhook`.
    pub fn set_webhook(&self, url: Option<&str>) {
        self.update(|w| w.webhook = url.map(str::to_string));
    }

    /// Cuts every open connection now, mid-answer, as a network failure would.
    pub fn cut_connections(&self) {
        let mut connections = self
            .shared()
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        connections.cancel();
        *connections = self.shared().shutdown.child_token();
    }

    // ----- records -------------------------------------------------------------------------------

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.world().records.requests.clone()
    }

    /// The answered calls of one method (case-insensitive).
    pub fn requests_for(&self, method: &str) -> Vec<RecordedRequest> {
        self.world()
            .records
            .requests
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method))
            .cloned()
            .collect()
    }

    pub fn sent_messages(&self) -> Vec<Sent> {
        self.world().records.sent.clone()
    }

    /// The messages the bot sent to one chat, in order.
    pub fn sent_to(&self, chat_id: i64) -> Vec<Sent> {
        self.world()
            .records
            .sent
            .iter()
            .filter(|s| s.chat_id == chat_id)
            .cloned()
            .collect()
    }

    pub fn chat_actions(&self) -> Vec<ChatAction> {
        self.world().records.actions.clone()
    }

    pub fn callback_answers(&self) -> Vec<CallbackAnswer> {
        self.world().records.callback_answers.clone()
    }

    /// The answer to callback query `query_id`, once the bot gave it.
    pub fn callback_answer(&self, query_id: &str) -> Option<CallbackAnswer> {
        self.world()
            .records
            .callback_answers
            .iter()
            .find(|a| a.callback_query_id == query_id)
            .cloned()
    }

    /// Message `message_id` of the chat as people see it now (after any edits): `text`,
    /// `entities`, `reply_markup` (absent once the buttons are gone), `edit_date`, ….
    pub fn message(&self, chat_id: i64, message_id: i64) -> Option<Value> {
        self.world().messages.get(&(chat_id, message_id)).cloned()
    }

    /// The texts of the messages sent to a chat as people see them now (after any edits; a
    /// deleted one is left out), oldest first.
    pub fn shown_to(&self, chat_id: i64) -> Vec<String> {
        let world = self.world();
        world
            .records
            .sent
            .iter()
            .filter(|s| s.chat_id == chat_id)
            .filter_map(|s| world.messages.get(&(chat_id, s.message_id)))
            .filter_map(|m| m["text"].as_str().map(str::to_owned))
            .collect()
    }

    pub fn edits(&self) -> Vec<Edit> {
        self.world().records.edits.clone()
    }

    pub fn reactions(&self) -> Vec<Reaction> {
        self.world().records.reactions.clone()
    }

    /// Long polls waiting now (a poll whose client went away is not counted).
    pub fn active_polls(&self) -> usize {
        self.world().active_polls
    }

    /// The highest `offset` a poll has sent: every update below it is confirmed and deleted.
    pub fn confirmed_offset(&self) -> i64 {
        self.world().confirmed_offset
    }

    /// Updates not yet confirmed.
    pub fn pending_updates(&self) -> usize {
        self.world().updates.len()
    }

    /// The webhook set now, if any.
    /// Lets (or stops) the bot stream drafts with `sendMessageDraft`.
    pub fn set_drafts(&self, enabled: bool) {
        self.update(|w| w.drafts_enabled = enabled);
    }

    /// Every draft the bot streamed, in order.
    pub fn drafts(&self) -> Vec<Draft> {
        self.world().records.drafts.clone()
    }

    /// The bot's command menu as last set with `setMyCommands`.
    pub fn commands(&self) -> Vec<Value> {
        self.world().commands.clone()
    }

    pub fn webhook(&self) -> Option<String> {
        self.world().webhook.clone()
    }

    /// Waits until `check` holds, re-checking after every change of the fake.
    ///
    /// # Panics
    /// After [`WAIT`], with `what` in the message.
    pub async fn wait_for(&self, what: &str, check: impl Fn(&FakeTelegram) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let changed = self.shared().changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if check(self) {
                return;
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline) => {
                    panic!("fake Telegram: timed out after {WAIT:?} waiting for {what}; sent so far: {:#?}", self.sent_messages())
                }
            }
        }
    }
}

impl std::fmt::Debug for FakeTelegram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeTelegram")
            .field("api_base", &self.api_base())
            .finish_non_exhaustive()
    }
}

fn message_id(message: &Value) -> i64 {
    message
        .get("message_id")
        .and_then(Value::as_i64)
        .unwrap_or_default()
}

fn with_mention(world: &World, text: &str, mention: bool) -> String {
    match (&world.bot.username, mention) {
        (Some(username), true) => format!("@{username} {text}"),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests;
