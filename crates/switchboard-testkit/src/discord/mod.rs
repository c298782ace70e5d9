//! A fake Discord, faithful to section 3 of `shared/contracts/channels.md`: REST v10 under
//! `http://127.0.0.1:PORT/api/v10` and a Gateway WebSocket (`ws://127.0.0.1:PORT/gateway`, with
//! `…/resume` as the `resume_gateway_url`).
//!
//! The Gateway sends Hello with a short heartbeat interval, checks IDENTIFY (token, intents,
//! properties) and RESUME, numbers dispatches per session, keeps them for replay, and on RESUME
//! replays what the bot missed before RESUMED. Messages the bot posts come back to it as
//! MESSAGE_CREATE, as on Discord. REST answers carry the rate-limit headers and enforce a small
//! per-channel bucket for posting.
//!
//! ```no_run
//! # async fn demo() {
//! use switchboard_testkit::discord::FakeDiscord;
//!
//! let fake = FakeDiscord::start().await;
//! // point the bot at fake.api_base() with fake.token() …
//! fake.wait_for("the bot to connect", |f| f.is_connected()).await;
//! let id = fake.send_dm("900000000000000001", "hello");
//! fake.wait_for("a reply", |f| f.posted().iter().any(|p| p.replies_to() == Some(id.as_str()))).await;
//! # }
//! ```
//!
//! Misbehaviour on cue: [`FakeDiscord::send_reconnect`] (op 7),
//! [`FakeDiscord::invalidate_session`] (op 9), [`FakeDiscord::stop_acking`] (a zombie socket),
//! [`FakeDiscord::close_with`] (e.g. 4004), [`FakeDiscord::drop_connection`],
//! [`FakeDiscord::hold_connections`] (so a test can act while the bot is away),
//! [`FakeDiscord::fail_next`] (429 with a float `retry_after` and bucket headers, server errors,
//! slow answers) and [`FakeDiscord::reject_identify`] (e.g. 4014).
//!
//! Buttons: messages may carry legacy components (action rows of buttons, checked as Discord
//! checks them: at most 5 rows of 5, `custom_id` 1–100 characters and unique, labels up to 80).
//! [`FakeDiscord::click_button`] clicks one as a user would, and the interaction must be answered
//! once (a second answer is 40060) within [`FakeDiscordOptions::interaction_deadline`] (later is
//! 10062). A type 7 answer edits the message, type 4 with flags 64 shows a message to the clicker
//! alone ([`FakeDiscord::ephemerals`]), type 6 acknowledges, and the follow-up webhooks
//! (`PATCH /webhooks/{app}/{token}/messages/@original`, `POST /webhooks/{app}/{token}`) work
//! after the answer. [`FakeDiscord::message`] is a message as users see it now.

mod gateway;
mod rest;
mod state;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpListener;

use state::{Control, Shared};

/// How to start the fake.
#[derive(Clone, Debug)]
pub struct FakeDiscordOptions {
    /// The bot token it accepts. The default is random.
    pub token: String,
    /// The `heartbeat_interval` sent in Hello (Discord: about 41 s).
    pub heartbeat_interval: Duration,
    /// Messages a bot may post to one channel per `bucket_window` before a 429 (Discord: 5 per
    /// 5 s; the default is 5 per 500 ms so tests stay quick).
    pub bucket_limit: u32,
    pub bucket_window: Duration,
    /// Gateway frames a client may send per minute before the fake closes with 4008.
    pub frame_limit: usize,
    /// How long after a click its first answer may come (Discord: 3 s); later ones get 10062.
    pub interaction_deadline: Duration,
}

impl Default for FakeDiscordOptions {
    fn default() -> Self {
        FakeDiscordOptions {
            token: format!("fake.discord.{}", uuid::Uuid::new_v4().simple()),
            heartbeat_interval: Duration::from_millis(1000),
            bucket_limit: 5,
            bucket_window: Duration::from_millis(500),
            frame_limit: 120,
            interaction_deadline: Duration::from_secs(3),
        }
    }
}

/// One HTTP exchange the fake answered.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    /// The path below the API base with the query, e.g. `/channels/1/messages`.
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The JSON body (`Null` when there was none or it was not JSON).
    pub body: Value,
    pub status: u16,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// A message the bot posted (or an edit it made), with the exact request body.
#[derive(Clone, Debug, PartialEq)]
pub struct PostedMessage {
    /// The message id the fake gave it (or, for an edit, the edited message).
    pub id: String,
    pub channel: String,
    pub content: String,
    pub message_reference: Option<Value>,
    pub allowed_mentions: Option<Value>,
    pub body: Value,
}

impl PostedMessage {
    /// The message this one replies to.
    pub fn replies_to(&self) -> Option<&str> {
        self.message_reference.as_ref()?.get("message_id")?.as_str()
    }
}

/// A reaction the bot added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reaction {
    pub channel: String,
    pub message: String,
    pub emoji: String,
}

/// An answer to an interaction (`POST /interactions/{id}/{token}/callback`).
#[derive(Clone, Debug, PartialEq)]
pub struct InteractionCallback {
    pub id: String,
    pub token: String,
    pub body: Value,
    pub status: u16,
}

/// A message only the clicker of an interaction sees (flags 64), from a callback or a follow-up.
#[derive(Clone, Debug, PartialEq)]
pub struct EphemeralMessage {
    pub interaction: String,
    /// The user who sees it.
    pub user: String,
    pub channel: String,
    pub content: String,
    pub body: Value,
}

/// A button on a message, as users see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Button {
    pub label: String,
    /// 1 Primary, 2 Secondary, 3 Success, 4 Danger, 5 Link.
    pub style: u64,
    pub custom_id: Option<String>,
}

/// An IDENTIFY the gateway received.
#[derive(Clone, Debug, PartialEq)]
pub struct IdentifyRecord {
    pub connection: u64,
    pub token_ok: bool,
    pub intents: Option<u64>,
    pub properties: Value,
    /// `/gateway` or `/resume`.
    pub path: String,
}

/// A RESUME the gateway received.
#[derive(Clone, Debug, PartialEq)]
pub struct ResumeRecord {
    pub connection: u64,
    pub session_id: String,
    pub seq: u64,
    /// `/gateway` or `/resume`.
    pub path: String,
    /// Resumed (false: answered with op 9 or a close).
    pub accepted: bool,
    /// How many dispatches were replayed.
    pub replayed: usize,
}

/// A heartbeat the gateway received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatRecord {
    pub connection: u64,
    pub seq: Option<u64>,
}

/// How a gateway connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The bot sent a close frame (with this code).
    ByClient(Option<u16>),
    /// The bot's side went away without a close frame.
    DroppedByClient,
    /// The fake sent a close frame with this code.
    ByServer(u16),
    /// The fake dropped the connection.
    DroppedByServer,
}

/// A gateway connection.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionRecord {
    pub id: u64,
    /// `/gateway` or `/resume`.
    pub path: String,
    pub query: String,
    pub closed: Option<Closed>,
}

/// A scripted REST failure.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// 429 with `retry_after` (seconds, float) in the body and the headers.
    RateLimited { retry_after: f64, global: bool },
    /// An error status with a Discord error body (e.g. 500, 502, 403).
    Status(u16),
    /// Answer normally, after this long.
    Slow(Duration),
}

/// A message a test writes as a user. Start from `UserMessage::default()`.
#[derive(Clone, Debug, Default)]
pub struct UserMessage {
    /// `None`: a DM (the channel is the user's DM channel).
    pub guild: Option<String>,
    pub channel: String,
    pub author: String,
    pub author_is_bot: bool,
    pub text: String,
    /// Mention the bot (`<@BOT> text`, and the bot in `mentions`).
    pub mention_bot: bool,
    /// A message id this one replies to.
    pub reply_to: Option<String>,
    /// Files attached, served from the fake's CDN address.
    pub files: Vec<DiscordFile>,
    /// A voice message (`IS_VOICE_MESSAGE`; its file gets a duration and a waveform).
    pub voice: bool,
}

/// A file attached to a user's message.
#[derive(Clone, Debug, Default)]
pub struct DiscordFile {
    pub filename: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
    /// Another address than the fake's own CDN.
    pub url: Option<String>,
}

/// The fake Discord. Cheap to clone; it stops when the last clone is dropped.
#[derive(Clone)]
pub struct FakeDiscord {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

impl FakeDiscord {
    /// Starts on a free port.
    ///
    /// # Panics
    /// If the loopback port cannot be bound.
    pub async fn start() -> FakeDiscord {
        FakeDiscord::start_with(FakeDiscordOptions::default()).await
    }

    /// Starts with these options.
    ///
    /// # Panics
    /// If the loopback port cannot be bound.
    pub async fn start_with(opts: FakeDiscordOptions) -> FakeDiscord {
        let listener = match TcpListener::bind(("127.0.0.1", 0)).await {
            Ok(listener) => listener,
            Err(e) => panic!("the fake Discord could not bind: {e}"),
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let shared = Arc::new(Shared::new(opts, port));
        let app = rest::router(shared.clone());
        let shutdown = shared.shutdown.clone();
        tokio::spawn(async move {
            let serve =
                axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::debug!(error = %e, "fake Discord stopped");
            }
        });
        FakeDiscord {
            inner: Arc::new(Inner { shared }),
        }
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// The bot token it accepts.
    pub fn token(&self) -> String {
        self.shared().lock().token.clone()
    }

    /// `http://127.0.0.1:PORT/api/v10`.
    pub fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}/api/v10", self.shared().port)
    }

    /// `ws://127.0.0.1:PORT/gateway`, what `GET /gateway/bot` returns.
    pub fn gateway_url(&self) -> String {
        self.shared().gateway_url()
    }

    /// The bot's user id.
    pub fn bot_id(&self) -> String {
        self.shared().lock().bot_id.clone()
    }

    /// Gives a user a display name (the default is `user` and the id's last digits).
    pub fn set_user_name(&self, user: &str, name: &str) {
        self.shared()
            .lock()
            .names
            .insert(user.to_owned(), name.to_owned());
    }

    /// Makes a guild text channel known (for `GET /channels/{id}` and posting to it).
    pub fn add_channel(&self, guild: &str, channel: &str) {
        self.shared().lock().ensure_channel(guild, channel);
    }

    /// Makes a public thread under `parent` known.
    pub fn add_thread(&self, guild: &str, parent: &str, thread: &str) {
        self.shared().lock().ensure_thread(guild, parent, thread);
    }

    /// Adds the bot to a thread's members, as if someone added it.
    pub fn add_bot_to_thread(&self, thread: &str) {
        let mut st = self.shared().lock();
        let bot = st.bot_id.clone();
        if let Some(info) = st.channels.get_mut(thread) {
            if !info.members.contains(&bot) {
                info.members.push(bot);
            }
        }
    }

    /// The user's DM channel id (made on first use).
    pub fn dm_channel(&self, user: &str) -> String {
        self.shared().lock().dm_channel(user)
    }

    /// Whether MESSAGE_CREATE carries `channel_type` (recent Discord does; with `false` the bot
    /// has to look channels up).
    pub fn set_include_channel_type(&self, include: bool) {
        self.shared().lock().include_channel_type = include;
    }

    /// The `heartbeat_interval` of later Hellos.
    pub fn set_heartbeat_interval(&self, interval: Duration) {
        self.shared().lock().heartbeat_interval = interval;
    }

    // ----- acting as users ------------------------------------------------------------------

    /// A user writes to the bot in a DM. Returns the message id.
    pub fn send_dm(&self, user: &str, text: &str) -> String {
        self.send_message(UserMessage {
            author: user.to_owned(),
            text: text.to_owned(),
            ..UserMessage::default()
        })
    }

    /// A user writes in a guild text channel, mentioning the bot or not. Returns the message id.
    pub fn send_guild(
        &self,
        guild: &str,
        channel: &str,
        user: &str,
        text: &str,
        mention: bool,
    ) -> String {
        self.send_message(UserMessage {
            guild: Some(guild.to_owned()),
            channel: channel.to_owned(),
            author: user.to_owned(),
            text: text.to_owned(),
            mention_bot: mention,
            ..UserMessage::default()
        })
    }

    /// A user writes in a thread of `parent` (made if new). Returns the message id.
    pub fn send_thread(
        &self,
        guild: &str,
        parent: &str,
        thread: &str,
        user: &str,
        text: &str,
        mention: bool,
    ) -> String {
        self.add_thread(guild, parent, thread);
        self.send_message(UserMessage {
            guild: Some(guild.to_owned()),
            channel: thread.to_owned(),
            author: user.to_owned(),
            text: text.to_owned(),
            mention_bot: mention,
            ..UserMessage::default()
        })
    }

    /// Writes any message (another bot's, a reply, …). Returns the message id.
    pub fn send_message(&self, message: UserMessage) -> String {
        let mut st = self.shared().lock();
        let channel = match &message.guild {
            None => st.dm_channel(&message.author),
            Some(guild) => {
                st.ensure_channel(guild, &message.channel);
                message.channel.clone()
            }
        };
        let id = st.snowflake();
        let bot = st.bot_user();
        let mut mentions = Vec::new();
        let content = if message.mention_bot {
            mentions.push(bot.clone());
            format!("<@{}> {}", st.bot_id, message.text)
        } else {
            message.text.clone()
        };
        let referenced = message
            .reply_to
            .as_ref()
            .and_then(|r| st.messages.get(r).cloned());
        if let Some(author) = referenced.as_ref().and_then(|r| r.get("author")) {
            // Replies mention the replied-to author by default.
            if !mentions.iter().any(|m| m["id"] == author["id"]) {
                mentions.push(author.clone());
            }
        }
        let mut data = message_json(
            &st,
            &id,
            &channel,
            message.guild.as_deref(),
            st.user(&message.author, message.author_is_bot),
            &content,
        );
        data["mentions"] = Value::Array(mentions);
        let port = self.shared().port;
        let files: Vec<Value> = message
            .files
            .iter()
            .map(|file| {
                let file_id = st.snowflake();
                let url = file.url.clone().unwrap_or_else(|| {
                    format!(
                        "http://127.0.0.1:{port}/attachments/{channel}/{file_id}/{}?ex=6a1b2c3d&is=6a0a0b0c&hm=5f1e",
                        crate::path_segment(&file.filename)
                    )
                });
                st.files
                    .insert(file_id.clone(), Arc::new(file.bytes.clone()));
                let mut object = json!({
                    "id": file_id, "filename": file.filename, "size": file.bytes.len(),
                    "url": url, "proxy_url": url, "content_type": file.content_type,
                });
                if message.voice {
                    object["duration_secs"] = json!(3.2);
                    object["waveform"] = json!("AAAAAAAAAAAA");
                }
                object
            })
            .collect();
        data["attachments"] = Value::Array(files);
        if message.voice {
            data["flags"] = json!(1 << 13);
        }
        if let Some(reply_to) = &message.reply_to {
            data["type"] = json!(19);
            data["message_reference"] = json!({
                "type": 0, "message_id": reply_to, "channel_id": channel, "guild_id": message.guild,
            });
            data["referenced_message"] = referenced.unwrap_or(Value::Null);
        }
        st.messages.insert(id.clone(), data.clone());
        st.dispatch("MESSAGE_CREATE", &data);
        id
    }

    /// Makes attachment downloads send their headers and then nothing.
    pub fn stall_files(&self, on: bool) {
        self.shared().lock().stall_files = on;
    }

    /// How many attachment downloads the fake answered.
    pub fn file_downloads(&self) -> usize {
        self.shared().lock().file_downloads
    }

    /// Delivers a message again, as Discord may (a new sequence number, the same message).
    ///
    /// # Panics
    /// If the message is unknown.
    pub fn redeliver(&self, message_id: &str) {
        let mut st = self.shared().lock();
        let Some(data) = st.messages.get(message_id).cloned() else {
            panic!("redeliver: no message {message_id}");
        };
        st.dispatch("MESSAGE_CREATE", &data);
    }

    /// A user clicks the button labelled `label` on a message, as it shows now. Returns the
    /// interaction id.
    ///
    /// # Panics
    /// If the message has no such button (a person cannot click a button that is not there).
    pub fn click_button(&self, message_id: &str, user: &str, label: &str) -> String {
        let (channel, custom_id) = {
            let st = self.shared().lock();
            let Some(message) = st.messages.get(message_id) else {
                panic!("click_button: no message {message_id}");
            };
            let channel = message["channel_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let custom_id = buttons_of(message)
                .into_iter()
                .find(|b| b.label == label)
                .and_then(|b| b.custom_id);
            let Some(custom_id) = custom_id else {
                panic!(
                    "click_button: message {message_id} has no {label:?} button: {:#}",
                    message["components"]
                );
            };
            (channel, custom_id)
        };
        self.click(&channel, message_id, user, &custom_id)
    }

    /// A user clicks a button (`custom_id`) on a message the bot posted in `channel`, whatever the
    /// message shows now (a click on a button that was just removed, or a forged one). Returns the
    /// interaction id.
    pub fn click(&self, channel: &str, message_id: &str, user: &str, custom_id: &str) -> String {
        let message = self
            .shared()
            .lock()
            .messages
            .get(message_id)
            .cloned()
            .unwrap_or_else(|| json!({ "id": message_id, "channel_id": channel }));
        self.interact(
            channel,
            user,
            Some((message_id, message)),
            json!({ "type": 3, "data": { "custom_id": custom_id, "component_type": 2 } }),
        )
    }

    /// `user` uses slash command `name` with `options` (`[{"name","type","value"}]`) in
    /// `channel` (a DM channel from [`FakeDiscord::dm_channel`] or a guild channel): an
    /// APPLICATION_COMMAND interaction. Returns the interaction id.
    pub fn slash_command(&self, channel: &str, user: &str, name: &str, options: Value) -> String {
        let command_id = self.shared().lock().snowflake();
        self.interact(
            channel,
            user,
            None,
            json!({
                "type": 2,
                "data": { "id": command_id, "name": name, "type": 1, "options": options },
            }),
        )
    }

    /// Sends an INTERACTION_CREATE from `user` in `channel` (on `message`, for a component) with
    /// the fields of `kind` (`type`, `data`), and remembers it for its callback. Returns its id.
    fn interact(
        &self,
        channel: &str,
        user: &str,
        message: Option<(&str, Value)>,
        kind: Value,
    ) -> String {
        let mut st = self.shared().lock();
        let id = st.snowflake();
        let token = format!("interaction.{}", uuid::Uuid::new_v4().simple());
        let guild = st.channels.get(channel).and_then(|c| c.guild.clone());
        let mut data = json!({
            "id": id,
            "application_id": st.app_id,
            "token": token,
            "version": 1,
            "channel_id": channel,
            "app_permissions": "0",
            "locale": "en-US",
        });
        for (key, value) in kind.as_object().into_iter().flatten() {
            data[key.as_str()] = value.clone();
        }
        if let Some((_, message)) = &message {
            data["message"] = message.clone();
        }
        match guild {
            Some(guild) => {
                data["guild_id"] = json!(guild);
                data["member"] = json!({ "user": st.user(user, false), "roles": [] });
            }
            None => data["user"] = st.user(user, false),
        }
        st.interactions.insert(
            id.clone(),
            state::Interaction {
                token,
                created: Instant::now(),
                channel: channel.to_owned(),
                message: message.map(|(id, _)| id.to_owned()).unwrap_or_default(),
                user: user.to_owned(),
                original: None,
            },
        );
        st.dispatch("INTERACTION_CREATE", &data);
        id
    }

    /// Every set of slash commands the bot registered (`PUT /applications/{id}/commands`).
    pub fn command_puts(&self) -> Vec<Value> {
        self.shared().lock().records.command_puts.clone()
    }

    // ----- what the bot did -------------------------------------------------------------------

    /// Every REST request answered, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared().lock().records.requests.clone()
    }

    /// Every message the bot posted, in order.
    pub fn posted(&self) -> Vec<PostedMessage> {
        self.shared().lock().records.posted.clone()
    }

    /// The texts the bot posted to one channel, in order.
    pub fn posted_to(&self, channel: &str) -> Vec<String> {
        self.posted()
            .into_iter()
            .filter(|p| p.channel == channel)
            .map(|p| p.content)
            .collect()
    }

    /// Every message edit, in order.
    pub fn edits(&self) -> Vec<PostedMessage> {
        self.shared().lock().records.edits.clone()
    }

    /// The channels the bot showed typing in, one entry per call.
    pub fn typing(&self) -> Vec<String> {
        self.shared().lock().records.typing.clone()
    }

    pub fn reactions(&self) -> Vec<Reaction> {
        self.shared().lock().records.reactions.clone()
    }

    /// The users the bot opened a DM with (`POST /users/@me/channels`).
    pub fn dm_opens(&self) -> Vec<String> {
        self.shared().lock().records.dm_opens.clone()
    }

    pub fn interaction_callbacks(&self) -> Vec<InteractionCallback> {
        self.shared().lock().records.callbacks.clone()
    }

    /// Messages shown to one person only (flags 64), in order.
    pub fn ephemerals(&self) -> Vec<EphemeralMessage> {
        self.shared().lock().records.ephemerals.clone()
    }

    /// A message as it is now (after edits and interaction updates), as Discord returns it.
    pub fn message(&self, id: &str) -> Option<Value> {
        self.shared().lock().messages.get(id).cloned()
    }

    /// The buttons a message shows now (none once they were removed).
    pub fn buttons(&self, message_id: &str) -> Vec<Button> {
        self.message(message_id)
            .map(|m| buttons_of(&m))
            .unwrap_or_default()
    }

    pub fn identifies(&self) -> Vec<IdentifyRecord> {
        self.shared().lock().records.identifies.clone()
    }

    pub fn resumes(&self) -> Vec<ResumeRecord> {
        self.shared().lock().records.resumes.clone()
    }

    pub fn heartbeats(&self) -> Vec<HeartbeatRecord> {
        self.shared().lock().records.heartbeats.clone()
    }

    /// Every gateway connection, in the order opened.
    pub fn connections(&self) -> Vec<ConnectionRecord> {
        self.shared().lock().records.connections.clone()
    }

    /// Gateway connections still open.
    pub fn open_connections(&self) -> usize {
        self.shared().lock().conns.len()
    }

    /// Whether a gateway connection is open and attached to a live session (READY or RESUMED
    /// was sent), i.e. a message sent now reaches the bot at once.
    pub fn is_connected(&self) -> bool {
        let st = self.shared().lock();
        st.conns.values().any(|c| {
            !c.zombie
                && !c.draining
                && c.session
                    .as_ref()
                    .and_then(|s| st.sessions.get(s))
                    .is_some_and(|s| s.valid)
        })
    }

    // ----- misbehaviour -------------------------------------------------------------------------

    /// Sends op 7 Reconnect on every open connection; they get no more dispatches.
    pub fn send_reconnect(&self) {
        self.shared().lock().each_conn(|conn| {
            conn.draining = true;
            Some(Control::Frame(json!({ "op": 7, "d": null }).to_string()))
        });
    }

    /// Sends op 9 Invalid Session; with `resumable: false` the session is gone.
    pub fn invalidate_session(&self, resumable: bool) {
        let mut st = self.shared().lock();
        if !resumable {
            for session in st.sessions.values_mut() {
                session.valid = false;
            }
        }
        st.each_conn(|conn| {
            conn.draining = true;
            Some(Control::Frame(
                json!({ "op": 9, "d": resumable }).to_string(),
            ))
        });
    }

    /// The open connections turn into zombies: no heartbeat ACKs, no dispatches (they are kept
    /// for a RESUME).
    pub fn stop_acking(&self) {
        self.shared().lock().each_conn(|conn| {
            conn.zombie = true;
            None
        });
    }

    /// Closes every open connection with `code`. Codes that end a session (4004, 4007, 4009 and
    /// up) make it unresumable.
    pub fn close_with(&self, code: u16) {
        let mut st = self.shared().lock();
        if code == 4004 || code == 4007 || code >= 4009 {
            for session in st.sessions.values_mut() {
                session.valid = false;
            }
        }
        st.each_conn(|_| Some(Control::Close(code)));
    }

    /// Drops every open connection's TCP stream, without a closing frame.
    pub fn drop_connection(&self) {
        self.shared().lock().each_conn(|_| Some(Control::Drop));
    }

    /// While held, new gateway connections wait before their Hello: whatever happens meanwhile
    /// reaches the bot only through a RESUME's replay.
    pub fn hold_connections(&self, hold: bool) {
        self.shared().held.send_replace(hold);
    }

    /// Answers the next IDENTIFY by closing with `code` (e.g. 4014 disallowed intents).
    pub fn reject_identify(&self, code: u16) {
        self.shared().lock().reject_identify = Some(code);
    }

    /// The next `times` REST requests whose method is `method` and whose path ends with
    /// `path_suffix` (e.g. `"POST"`, `"/messages"`) fail this way.
    pub fn fail_next(&self, method: &str, path_suffix: &str, failure: Failure, times: usize) {
        self.shared().lock().failures.push_back((
            method.to_owned(),
            path_suffix.to_owned(),
            failure,
            times.max(1),
        ));
    }

    /// Changes the accepted token (the bot's becomes wrong).
    pub fn set_token(&self, token: &str) {
        self.shared().lock().token = token.to_owned();
    }

    /// Polls `f` every 10 ms until it holds.
    ///
    /// # Panics
    /// After 15 s, with `what` in the message.
    pub async fn wait_for<F: Fn(&FakeDiscord) -> bool>(&self, what: &str, f: F) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if f(self) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "fake Discord: timed out after 15 s waiting for {what}; posted: {:#?}; connections: {:#?}",
                    self.posted(),
                    self.connections()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl std::fmt::Debug for FakeDiscord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDiscord")
            .field("api_base", &self.api_base())
            .finish_non_exhaustive()
    }
}

/// The buttons in a message's action rows.
fn buttons_of(message: &Value) -> Vec<Button> {
    let rows = message["components"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    rows.iter()
        .filter_map(|row| row["components"].as_array())
        .flatten()
        .filter(|c| c["type"] == 2)
        .map(|b| Button {
            label: b["label"].as_str().unwrap_or_default().to_owned(),
            style: b["style"].as_u64().unwrap_or_default(),
            custom_id: b["custom_id"].as_str().map(str::to_owned),
        })
        .collect()
}

/// A message object as MESSAGE_CREATE carries it.
pub(crate) fn message_json(
    st: &state::State,
    id: &str,
    channel: &str,
    guild: Option<&str>,
    author: Value,
    content: &str,
) -> Value {
    let mut data = json!({
        "id": id,
        "channel_id": channel,
        "type": 0,
        "author": author,
        "content": content,
        "mentions": [],
        "mention_roles": [],
        "mention_everyone": false,
        "attachments": [],
        "embeds": [],
        "components": [],
        "timestamp": state::timestamp(state::unix_ms()),
        "edited_timestamp": null,
        "tts": false,
        "pinned": false,
        "flags": 0,
    });
    if let Some(guild) = guild {
        data["guild_id"] = json!(guild);
        data["member"] = json!({ "roles": [], "joined_at": state::timestamp(0) });
    }
    if st.include_channel_type {
        if let Some(info) = st.channels.get(channel) {
            data["channel_type"] = json!(info.kind);
        }
    }
    data
}

#[cfg(test)]
mod tests;
