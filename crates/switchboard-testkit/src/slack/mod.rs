//! A fake Slack, faithful to section 2 of `shared/contracts/channels.md`: the Web API under
//! `{api_base}/{method}` and Socket Mode over a real WebSocket, on `127.0.0.1`.
//!
//! A test acts as Slack users ([`FakeSlack::send_dm`], [`FakeSlack::send_channel`],
//! [`FakeSlack::send_thread_reply`], [`FakeSlack::click_button`], [`FakeSlack::click`]), sees what
//! the bot did ([`FakeSlack::posted`], [`FakeSlack::message`] as it shows now,
//! [`FakeSlack::updates`], [`FakeSlack::ephemerals`], [`FakeSlack::responses`],
//! [`FakeSlack::reactions`], [`FakeSlack::acks`], [`FakeSlack::requests`]),
//! and makes Slack misbehave ([`FakeSlack::fail`], [`FakeSlack::set_slow`],
//! [`FakeSlack::set_invalid_auth`], [`FakeSlack::refresh`], [`FakeSlack::disable_link`],
//! [`FakeSlack::drop_sockets`], [`FakeSlack::freeze_sockets`], [`FakeSlack::lose_acks`]).
//!
//! ```no_run
//! # async fn demo() {
//! use switchboard_testkit::slack::FakeSlack;
//!
//! let slack = FakeSlack::start().await;
//! // Point the adapter at `slack.api_base()` with `slack.bot_token()` and `slack.app_token()`.
//! slack.wait_for("the bot to connect", |s| s.open_sockets() == 1).await;
//! let ts = slack.send_dm("U1ANN", "hello");
//! slack.wait_for("a reply", |s| !s.posted().is_empty()).await;
//! # let _ = ts;
//! # }
//! ```
//!
//! What it does like Slack:
//! - Web API errors are HTTP 200 `{"ok":false,"error"}`; a scripted 429 carries `Retry-After`.
//!   `apps.connections.open` takes only the app-level token, the other methods only the bot
//!   token (`not_allowed_token_type` otherwise); `users.info` reads only its query string or a
//!   form body, never JSON.
//! - Socket Mode: `apps.connections.open` hands out a one-time `ws://…/link/?ticket=…` URL; the
//!   socket's first frame is `hello`; every envelope waits for its ack and is delivered again
//!   with `retry_attempt` + 1 and `retry_reason: "timeout"` when none came within
//!   [`FakeSlackOptions::redeliver_after`] (Slack: 3 s), up to [`FakeSlackOptions::max_retries`]
//!   times. An event raised while no socket is open counts as a failed first attempt, so it
//!   arrives later as a retry. Envelopes go to the newest open socket.
//! - Block Kit: `chat.postMessage`, `chat.update` and `chat.postEphemeral` check blocks against
//!   Slack's limits (50 blocks, section text 3,000, button text 75, `value` 2,000, `action_id`
//!   255, …) and refuse with `invalid_blocks` and Slack-style `errors`; `chat.update` without
//!   `blocks` keeps the message's blocks (buttons too) and `"blocks": []` removes them; only the
//!   bot's own messages can be updated. Ephemeral messages are recorded for their one user and
//!   never stored in the conversation. A click's `response_url` takes POSTs.
//! - A channel mention arrives twice, as `message` and as `app_mention`, with different
//!   `event_id`s; the bot's own posts come back as `message` events with its `user` and `bot_id`.

mod blocks;
mod socket;
#[cfg(test)]
mod tests;
mod web;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The bot's user id (what `auth.test` returns as `user_id`; mentions read `<@UBOT>`).
pub const BOT_USER_ID: &str = "UBOT";
/// The bot's `bot_id`.
pub const BOT_ID: &str = "B0BOT";
/// The bot's name (`auth.test` `user`).
pub const BOT_NAME: &str = "switchboard";
pub const TEAM_ID: &str = "T0FAKE";
pub const APP_ID: &str = "A0FAKE";

/// How to start the fake. Start from `FakeSlackOptions::default()`.
#[derive(Clone, Debug)]
pub struct FakeSlackOptions {
    /// An envelope not acknowledged within this time is delivered again (Slack: 3 s).
    pub redeliver_after: Duration,
    /// Redeliveries after the first attempt before Slack gives up (Slack: 3).
    pub max_retries: u32,
    /// Send the bot's own posts back as `message` events, as Slack does.
    pub echo_bot_messages: bool,
    /// In [`FakeSlack::refresh`]: from `disconnect` `warning` to `refresh_requested` (Slack:
    /// about 10 s), and from there to closing the socket.
    pub refresh_warning_lead: Duration,
    pub refresh_close_after: Duration,
    /// A socket frozen by [`FakeSlack::freeze_sockets`] is cut after this long.
    pub frozen_for: Duration,
}

impl Default for FakeSlackOptions {
    fn default() -> Self {
        FakeSlackOptions {
            redeliver_after: Duration::from_secs(3),
            max_retries: 3,
            echo_bot_messages: true,
            refresh_warning_lead: Duration::from_millis(200),
            refresh_close_after: Duration::from_millis(300),
            frozen_for: Duration::from_secs(30),
        }
    }
}

/// A scripted Web API failure.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// HTTP 429 with `Retry-After: secs` and `{"ok":false,"error":"ratelimited"}`.
    RateLimited { retry_after_secs: u64 },
    /// HTTP 200 `{"ok":false,"error":<code>}`.
    Error(String),
    /// This HTTP status with a body that is not JSON (a proxy or an outage).
    Status(u16),
}

/// A request body as the fake read it.
#[derive(Clone, Debug, PartialEq)]
pub enum RequestBody {
    Empty,
    Json(Value),
    Form(Vec<(String, String)>),
    Text(String),
}

/// One Web API call the fake answered.
#[derive(Clone, Debug, PartialEq)]
pub struct SlackRequest {
    /// The API method: `chat.postMessage`, `auth.test`, ….
    pub method: String,
    pub http_method: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub query: Vec<(String, String)>,
    pub body: RequestBody,
    pub status: u16,
    /// The JSON answered (`Null` when the answer was not JSON).
    pub response: Value,
}

impl SlackRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// A message the bot posted with `chat.postMessage`.
#[derive(Clone, Debug, PartialEq)]
pub struct PostedMessage {
    /// The conversation it landed in (a user id target resolves to the DM's `D…` id).
    pub channel: String,
    pub thread_ts: Option<String>,
    /// The text as sent (still escaped: `&lt;` for `<`).
    pub text: String,
    pub ts: String,
    /// The Block Kit blocks as sent (empty without blocks).
    pub blocks: Vec<Value>,
    /// The exact request body.
    pub body: Value,
}

/// A `chat.update` the bot made.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdatedMessage {
    pub channel: String,
    pub ts: String,
    pub text: String,
    /// The blocks sent (`None`: not sent, so the message kept its blocks; empty: removed).
    pub blocks: Option<Vec<Value>>,
    pub body: Value,
}

/// A message as people in the workspace see it now (after any `chat.update`).
#[derive(Clone, Debug, PartialEq)]
pub struct SlackMessage {
    pub channel: String,
    pub ts: String,
    /// Who wrote it (`UBOT` for the bot).
    pub user: String,
    /// The text (still escaped).
    pub text: String,
    pub thread_ts: Option<String>,
    pub blocks: Vec<Value>,
    /// A streaming message that was not stopped yet.
    pub streaming: bool,
    /// A streaming message's task cards, as last updated (`task_update` chunks), in id order.
    pub tasks: Vec<Value>,
}

/// A `chat.startStream`, `chat.appendStream` or `chat.stopStream` the bot made.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamCall {
    pub method: String,
    pub channel: String,
    pub ts: String,
    /// The text it added (still escaped).
    pub text: String,
    /// The `task_update` chunks it carried.
    pub tasks: Vec<Value>,
    pub body: Value,
}

impl SlackMessage {
    /// The buttons people can click on it, in order.
    pub fn buttons(&self) -> Vec<Button> {
        blocks::buttons(&self.blocks)
    }

    /// Every piece of text the blocks show, joined by newlines (still escaped), or the text when
    /// there are no blocks.
    pub fn shown(&self) -> String {
        if self.blocks.is_empty() {
            return self.text.clone();
        }
        let mut out = Vec::new();
        collect_texts(&Value::Array(self.blocks.clone()), &mut out);
        out.join("\n")
    }
}

/// Every `"text"` string inside a value, in order.
fn collect_texts(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("text", Value::String(s)) => out.push(s.clone()),
                    _ => collect_texts(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_texts(v, out)),
        _ => {}
    }
}

/// A button on a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Button {
    /// The label people read.
    pub text: String,
    pub action_id: String,
    pub value: Option<String>,
    pub style: Option<String>,
}

/// A `chat.postEphemeral`: a message only `user` sees.
#[derive(Clone, Debug, PartialEq)]
pub struct EphemeralMessage {
    pub channel: String,
    /// The one person who sees it.
    pub user: String,
    /// The text (still escaped).
    pub text: String,
    pub thread_ts: Option<String>,
    pub body: Value,
}

/// A POST to a click's `response_url`.
#[derive(Clone, Debug, PartialEq)]
pub struct ResponsePost {
    /// The last path segment of the `response_url`.
    pub id: String,
    pub body: Value,
}

/// A reaction the bot added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reaction {
    pub channel: String,
    pub timestamp: String,
    pub name: String,
}

/// An ack the bot sent over a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub envelope_id: String,
    pub socket: u64,
    /// Dropped on purpose ([`FakeSlack::lose_acks`]): the envelope stays unacknowledged.
    pub lost: bool,
}

/// An envelope the fake wrote to a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub envelope_id: String,
    pub socket: u64,
    pub retry_attempt: u32,
    /// `events_api` or `interactive`.
    pub kind: String,
    /// The inner event's type (`message`, `app_mention`) or the interaction's (`block_actions`).
    pub event_type: String,
}

/// A message in the fake workspace.
#[derive(Clone, Debug, Default)]
struct StoredMessage {
    user: String,
    text: String,
    thread_ts: Option<String>,
    blocks: Vec<Value>,
    reactions: BTreeSet<String>,
    /// Started with `chat.startStream` and not stopped yet.
    streaming: bool,
    /// A stream's task cards: id → the last `task_update` chunk.
    tasks: BTreeMap<String, Value>,
}

/// An envelope and its delivery state.
#[derive(Clone, Debug)]
struct Pending {
    id: String,
    /// `{"envelope_id","type","accepts_response_payload","payload"}`; retry fields are added per
    /// attempt.
    body: Value,
    /// Attempts so far (a push while no socket was open counts).
    attempts: u32,
    last_attempt: Option<Instant>,
    acked: bool,
    given_up: bool,
}

/// What a socket task is told to do.
#[derive(Debug)]
enum Out {
    Text(String),
    /// Send a close frame, then end.
    Close(u16, String),
    /// End without a close frame, as a dropped connection.
    Drop,
    /// Stop reading and writing, as a black-holed connection.
    Freeze,
}

#[derive(Debug)]
struct SocketSlot {
    out: mpsc::UnboundedSender<Out>,
}

#[derive(Default, Debug)]
struct Records {
    requests: Vec<SlackRequest>,
    posted: Vec<PostedMessage>,
    updates: Vec<UpdatedMessage>,
    streams: Vec<StreamCall>,
    ephemerals: Vec<EphemeralMessage>,
    responses: Vec<ResponsePost>,
    reactions: Vec<Reaction>,
    statuses: Vec<Value>,
    acks: Vec<Ack>,
    deliveries: Vec<Delivery>,
    given_up: Vec<String>,
    sockets_opened: usize,
}

struct State {
    bot_token: String,
    app_token: String,
    invalid_auth: bool,
    /// `chat.startStream` is refused (a workspace or token without streaming).
    no_streams: bool,
    failures: HashMap<String, VecDeque<Failure>>,
    slow: HashMap<String, Duration>,
    user_names: HashMap<String, String>,
    /// Public and private channels by id, with their names (`conversations.list`).
    channel_names: BTreeMap<String, String>,
    channels: BTreeSet<String>,
    messages: HashMap<(String, String), StoredMessage>,
    tickets: HashSet<String>,
    sockets: BTreeMap<u64, SocketSlot>,
    next_socket: u64,
    envelopes: Vec<Pending>,
    lose_acks: usize,
    /// Only envelopes at this index or later lose their acks.
    lose_acks_from: usize,
    last_ts_micros: u64,
    next_event: u64,
    records: Records,
    /// Shared files by id: name and bytes, served at `/files-pri/{team}-{id}/download/{name}`.
    files: HashMap<String, (String, Arc<Vec<u8>>)>,
    /// File downloads send their headers, then nothing.
    stall_files: bool,
    /// How many file downloads were answered (with the bot token).
    file_downloads: usize,
}

struct Shared {
    opts: FakeSlackOptions,
    addr: SocketAddr,
    state: Mutex<State>,
    shutdown: CancellationToken,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A file a user shares (see [`FakeSlack::send_file_dm`]).
#[derive(Clone, Debug, Default)]
pub struct SlackFile {
    pub name: String,
    pub mimetype: String,
    pub bytes: Vec<u8>,
    /// A voice clip recorded in Slack (`subtype: slack_audio`).
    pub voice: bool,
    /// Another download address than the fake's own.
    pub url: Option<String>,
}

/// The fake. Cheap to clone; it stops when the last clone is dropped.
#[derive(Clone)]
pub struct FakeSlack {
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

impl std::fmt::Debug for FakeSlack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSlack")
            .field("api_base", &self.api_base())
            .finish_non_exhaustive()
    }
}

impl FakeSlack {
    /// Starts on a free loopback port with default options.
    ///
    /// # Panics
    /// If the port cannot be bound.
    pub async fn start() -> FakeSlack {
        FakeSlack::start_with(FakeSlackOptions::default()).await
    }

    /// Starts with these options.
    ///
    /// # Panics
    /// If the port cannot be bound.
    pub async fn start_with(opts: FakeSlackOptions) -> FakeSlack {
        let listener = match tokio::net::TcpListener::bind(("127.0.0.1", 0)).await {
            Ok(listener) => listener,
            Err(e) => panic!("the fake Slack could not bind: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => panic!("the fake Slack has no address: {e}"),
        };
        let now_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1_767_225_600);
        let state = State {
            bot_token: format!("xoxb-fake-{}", Uuid::new_v4().simple()),
            app_token: format!("xapp-1-{}-{}", APP_ID, Uuid::new_v4().simple()),
            invalid_auth: false,
            no_streams: false,
            failures: HashMap::new(),
            slow: HashMap::new(),
            user_names: HashMap::new(),
            channel_names: BTreeMap::new(),
            channels: BTreeSet::new(),
            messages: HashMap::new(),
            tickets: HashSet::new(),
            sockets: BTreeMap::new(),
            next_socket: 1,
            envelopes: Vec::new(),
            lose_acks: 0,
            lose_acks_from: 0,
            last_ts_micros: now_secs * 1_000_000,
            next_event: 1,
            records: Records::default(),
            files: HashMap::new(),
            stall_files: false,
            file_downloads: 0,
        };
        let shared = Arc::new(Shared {
            opts,
            addr,
            state: Mutex::new(state),
            shutdown: CancellationToken::new(),
        });
        let app = web::router(shared.clone());
        let stop = shared.shutdown.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await });
            if let Err(e) = served.await {
                tracing::debug!(error = %e, "fake slack stopped");
            }
        });
        tokio::spawn(socket::redeliver_loop(shared.clone()));
        FakeSlack {
            inner: Arc::new(Inner { shared }),
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    // ----- addresses and credentials --------------------------------------------------------

    /// The Web API base URL: `http://127.0.0.1:PORT/api`.
    pub fn api_base(&self) -> String {
        format!("http://{}/api", self.shared().addr)
    }

    /// The bot token (`xoxb-…`) the fake accepts.
    pub fn bot_token(&self) -> String {
        self.shared().lock().bot_token.clone()
    }

    /// The app-level token (`xapp-…`) the fake accepts for `apps.connections.open`.
    pub fn app_token(&self) -> String {
        self.shared().lock().app_token.clone()
    }

    /// `<@UBOT>`: how a message mentions the bot.
    pub fn mention(&self) -> String {
        format!("<@{BOT_USER_ID}>")
    }

    /// The DM conversation id of a user (`U1ANN` → `D1ANN`).
    pub fn dm_channel(&self, user: &str) -> String {
        dm_channel(user)
    }

    // ----- the workspace ----------------------------------------------------------------------

    /// Gives a user a display name (`users.info`); users without one are named after their id.
    pub fn set_user_name(&self, user: &str, name: &str) {
        self.shared()
            .lock()
            .user_names
            .insert(user.to_owned(), name.to_owned());
    }

    /// Names channel `id` (`#name`), as `conversations.list` lists it; the bot can post there.
    pub fn name_channel(&self, id: &str, name: &str) {
        let mut st = self.shared().lock();
        st.channel_names.insert(id.to_owned(), name.to_owned());
        st.channels.insert(id.to_owned());
    }

    /// Creates a conversation the bot can post to without a user writing there first.
    pub fn add_channel(&self, channel: &str) {
        self.shared().lock().channels.insert(channel.to_owned());
    }

    // ----- acting as users --------------------------------------------------------------------

    /// A user writes to the bot in a DM. Returns the message `ts`.
    pub fn send_dm(&self, user: &str, text: &str) -> String {
        let channel = dm_channel(user);
        self.post_as_user(&channel, user, text, None)
    }

    /// A user shares a file with the bot in a DM, with `text` (a `file_share` message whose
    /// file is served, to the bot token only, from the fake's own host). `url` replaces the
    /// download address (one on another host, say). Returns the message `ts`.
    pub fn send_file_dm(&self, user: &str, text: &str, file: SlackFile) -> String {
        let channel = dm_channel(user);
        let addr = self.shared().addr;
        let object = {
            let mut st = self.shared().lock();
            let id = format!("F0{:08}", st.files.len() + 1);
            let size = file.bytes.len();
            let url = file.url.clone().unwrap_or_else(|| {
                format!(
                    "http://{addr}/files-pri/{TEAM_ID}-{id}/download/{}",
                    crate::path_segment(&file.name)
                )
            });
            st.files
                .insert(id.clone(), (file.name.clone(), Arc::new(file.bytes)));
            let mut object = json!({
                "id": id, "created": 1_767_225_600, "timestamp": 1_767_225_600, "name": file.name,
                "title": file.name, "mimetype": file.mimetype, "filetype": file.name.rsplit('.').next().unwrap_or("binary"),
                "user": user, "mode": "hosted", "size": size, "is_external": false,
                "url_private": url, "url_private_download": url,
            });
            if file.voice {
                object["subtype"] = json!("slack_audio");
            }
            object
        };
        self.post_with(&channel, user, text, None, |message| {
            message["subtype"] = json!("file_share");
            message["files"] = json!([object]);
        })
    }

    /// Makes file downloads send their headers and then nothing, as a stalled transfer does.
    pub fn stall_files(&self, on: bool) {
        self.shared().lock().stall_files = on;
    }

    /// How many file downloads the fake answered.
    pub fn file_downloads(&self) -> usize {
        self.shared().lock().file_downloads
    }

    /// A user writes at the top level of a channel (`C…`, or `G…` for a private one), mentioning
    /// the bot (`<@UBOT> ` put in front) or not. A mention arrives as both a `message` and an
    /// `app_mention` event, as Slack sends it. Returns the message `ts`.
    pub fn send_channel(&self, channel: &str, user: &str, text: &str, mention: bool) -> String {
        let text = if mention {
            format!("<@{BOT_USER_ID}> {text}")
        } else {
            text.to_owned()
        };
        self.post_as_user(channel, user, &text, None)
    }

    /// A user replies in the thread under `thread_ts` (the parent's ts). A `<@UBOT>` in the text
    /// also raises an `app_mention`. Returns the reply's `ts`.
    pub fn send_thread_reply(
        &self,
        channel: &str,
        thread_ts: &str,
        user: &str,
        text: &str,
    ) -> String {
        self.post_as_user(channel, user, text, Some(thread_ts))
    }

    /// A user types a slash command registered in the app's manifest (`/status`, with `text`
    /// after it) in `channel`: a `slash_commands` envelope. Returns the envelope id.
    pub fn slash_command(&self, channel: &str, user: &str, command: &str, text: &str) -> String {
        let username = self.user_name(user);
        let channel_name = if channel.starts_with('D') {
            "directmessage".to_owned()
        } else {
            channel.to_ascii_lowercase()
        };
        let payload = json!({
            "token": "verification-token-unused", "team_id": TEAM_ID, "team_domain": "fake",
            "channel_id": channel, "channel_name": channel_name,
            "user_id": user, "user_name": username,
            "command": command, "text": text, "api_app_id": APP_ID, "is_enterprise_install": "false",
            "response_url": format!("http://{}/commands/{}", self.shared().addr, Uuid::new_v4().simple()),
            "trigger_id": format!("{}.{}.fake", self.inner.shared.lock().next_event, Uuid::new_v4().simple()),
        });
        let mut st = self.shared().lock();
        st.channels.insert(channel.to_owned());
        socket::enqueue(&mut st, "slash_commands", payload)
    }

    /// A user clicks a button (`action_id`, `value`) on the message `message_ts`: an
    /// `interactive` envelope with a `block_actions` payload. Returns the envelope id.
    ///
    /// This sends the click whatever the message shows now (as a client that has not seen an
    /// update yet does); [`FakeSlack::click_button`] clicks only a button that is there.
    pub fn click(
        &self,
        channel: &str,
        message_ts: &str,
        user: &str,
        action_id: &str,
        value: &str,
    ) -> String {
        let username = self.user_name(user);
        let stored = self.message(channel, message_ts);
        let thread_ts = stored.as_ref().and_then(|m| m.thread_ts.clone());
        let mut container = json!({"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": false});
        let mut message = json!({
            "type": "message", "ts": message_ts,
            "text": stored.as_ref().map(|m| m.text.clone()).unwrap_or_default(),
            "user": stored.as_ref().map(|m| m.user.clone()).unwrap_or_default(),
        });
        if let Some(m) = stored.as_ref().filter(|m| !m.blocks.is_empty()) {
            message["blocks"] = json!(m.blocks);
        }
        if let Some(thread_ts) = &thread_ts {
            container["thread_ts"] = json!(thread_ts);
            message["thread_ts"] = json!(thread_ts);
        }
        let payload = json!({
            "type": "block_actions",
            "user": {"id": user, "username": username, "name": username, "team_id": TEAM_ID},
            "team": {"id": TEAM_ID},
            "api_app_id": APP_ID,
            "container": container,
            "channel": {"id": channel},
            "message": message,
            "trigger_id": format!("{}.{}.fake", self.inner.shared.lock().next_event, Uuid::new_v4().simple()),
            "response_url": format!("http://{}/actions/{}", self.shared().addr, Uuid::new_v4().simple()),
            "actions": [{
                "type": "button", "action_id": action_id, "block_id": "actions", "value": value,
                "action_ts": now_ts_string(),
            }],
        });
        let mut st = self.shared().lock();
        socket::enqueue(&mut st, "interactive", payload)
    }

    /// A user clicks the button labelled `label` on the message `message_ts`, as it shows now.
    /// Returns the envelope id.
    ///
    /// # Panics
    /// When the message has no such button: people can only click what they see.
    pub fn click_button(&self, channel: &str, message_ts: &str, user: &str, label: &str) -> String {
        let message = self.message(channel, message_ts);
        let buttons = message
            .as_ref()
            .map(SlackMessage::buttons)
            .unwrap_or_default();
        let Some(button) = buttons.iter().find(|b| b.text == label) else {
            panic!(
                "fake slack: no button {label:?} on {channel}/{message_ts}; it shows {message:#?}"
            );
        };
        self.click(
            channel,
            message_ts,
            user,
            &button.action_id,
            button.value.as_deref().unwrap_or_default(),
        )
    }

    /// Delivers a raw inner event (`{"type":"message",…}`) in an `events_api` envelope, for
    /// shapes the helpers do not make (subtypes, other bots). Returns the envelope id.
    pub fn send_event(&self, event: Value) -> String {
        let mut st = self.shared().lock();
        socket::enqueue_event(&mut st, event)
    }

    /// Delivers an envelope again now, as Slack does when it did not get (or lost) the ack:
    /// `retry_attempt` + 1, `retry_reason: "timeout"`, the same `event_id`.
    pub fn redeliver(&self, envelope_id: &str) {
        let mut st = self.shared().lock();
        socket::redeliver_now(&mut st, envelope_id);
    }

    fn post_as_user(
        &self,
        channel: &str,
        user: &str,
        text: &str,
        thread_ts: Option<&str>,
    ) -> String {
        self.post_with(channel, user, text, thread_ts, |_| {})
    }

    /// [`FakeSlack::post_as_user`], with `more` changing the `message` event before it goes.
    fn post_with(
        &self,
        channel: &str,
        user: &str,
        text: &str,
        thread_ts: Option<&str>,
        more: impl FnOnce(&mut Value),
    ) -> String {
        let mut st = self.shared().lock();
        st.channels.insert(channel.to_owned());
        let ts = next_ts(&mut st);
        st.messages.insert(
            (channel.to_owned(), ts.clone()),
            StoredMessage {
                user: user.to_owned(),
                text: text.to_owned(),
                thread_ts: thread_ts.map(str::to_owned),
                ..Default::default()
            },
        );
        let client_msg_id = Uuid::new_v4().to_string();
        let mut message = json!({
            "type": "message", "channel": channel, "channel_type": channel_type(channel), "user": user,
            "text": text, "ts": ts, "event_ts": ts, "client_msg_id": client_msg_id, "team": TEAM_ID,
        });
        if let Some(thread_ts) = thread_ts {
            message["thread_ts"] = json!(thread_ts);
            message["parent_user_id"] = json!(st
                .messages
                .get(&(channel.to_owned(), thread_ts.to_owned()))
                .map(|m| m.user.clone())
                .unwrap_or_default());
        }
        more(&mut message);
        socket::enqueue_event(&mut st, message);
        // Slack sends app_mention for mentions in conversations, never in DMs.
        if !channel.starts_with('D') && text.contains(&format!("<@{BOT_USER_ID}")) {
            let mut mention = json!({
                "type": "app_mention", "user": user, "text": text, "ts": ts, "channel": channel,
                "event_ts": ts, "client_msg_id": client_msg_id, "team": TEAM_ID,
            });
            if let Some(thread_ts) = thread_ts {
                mention["thread_ts"] = json!(thread_ts);
            }
            socket::enqueue_event(&mut st, mention);
        }
        ts
    }

    fn user_name(&self, user: &str) -> String {
        self.shared()
            .lock()
            .user_names
            .get(user)
            .cloned()
            .unwrap_or_else(|| user.to_ascii_lowercase())
    }

    /// A message as people see it now: its text and blocks after any `chat.update`.
    pub fn message(&self, channel: &str, ts: &str) -> Option<SlackMessage> {
        self.shared()
            .lock()
            .messages
            .get(&(channel.to_owned(), ts.to_owned()))
            .map(|m| SlackMessage {
                channel: channel.to_owned(),
                ts: ts.to_owned(),
                user: m.user.clone(),
                text: m.text.clone(),
                thread_ts: m.thread_ts.clone(),
                blocks: m.blocks.clone(),
                streaming: m.streaming,
                tasks: m.tasks.values().cloned().collect(),
            })
    }

    // ----- misbehaving ------------------------------------------------------------------------

    /// The next `times` calls of `method` fail this way (queued after earlier scripted failures).
    pub fn fail(&self, method: &str, failure: Failure, times: usize) {
        let mut st = self.shared().lock();
        let queue = st.failures.entry(method.to_owned()).or_default();
        queue.extend(std::iter::repeat_n(failure, times));
    }

    /// Every call of `method` waits this long before answering (`Duration::ZERO` to stop).
    pub fn set_slow(&self, method: &str, delay: Duration) {
        let mut st = self.shared().lock();
        if delay.is_zero() {
            st.slow.remove(method);
        } else {
            st.slow.insert(method.to_owned(), delay);
        }
    }

    /// `chat.startStream` is refused with `not_allowed` until turned back on, as in a
    /// workspace or for a token that may not stream.
    pub fn set_streams(&self, allowed: bool) {
        self.shared().lock().no_streams = !allowed;
    }

    /// Every token is refused with `invalid_auth` (a revoked app) until turned off.
    pub fn set_invalid_auth(&self, on: bool) {
        self.shared().lock().invalid_auth = on;
    }

    /// The next `n` acks of envelopes delivered from now on are lost: recorded with `lost: true`,
    /// the envelopes stay unacknowledged and are delivered again. A late ack of an envelope
    /// delivered before the call is not one of them, so the fault hits what the test sends next.
    pub fn lose_acks(&self, n: usize) {
        let mut st = self.shared().lock();
        st.lose_acks += n;
        st.lose_acks_from = st.envelopes.len();
    }

    /// Slack's routine refresh on every open socket: `disconnect` `warning`, then (after
    /// `refresh_warning_lead`) `disconnect` `refresh_requested`, then (after
    /// `refresh_close_after`) a close frame. Returns at once; the script runs on its own.
    pub fn refresh(&self) {
        let shared = self.shared().clone();
        let sockets: Vec<u64> = shared.lock().sockets.keys().copied().collect();
        tokio::spawn(async move {
            let frame = |reason: &str| {
                json!({"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake"}}).to_string()
            };
            socket::send_to(&shared, &sockets, || Out::Text(frame("warning")));
            tokio::time::sleep(shared.opts.refresh_warning_lead).await;
            socket::send_to(&shared, &sockets, || Out::Text(frame("refresh_requested")));
            tokio::time::sleep(shared.opts.refresh_close_after).await;
            socket::send_to(&shared, &sockets, || Out::Close(1000, "refresh".into()));
        });
    }

    /// Socket Mode is switched off for the app: `disconnect` `link_disabled` on every socket,
    /// then a close frame.
    pub fn disable_link(&self) {
        let shared = self.shared();
        let sockets: Vec<u64> = shared.lock().sockets.keys().copied().collect();
        let frame = json!({"type": "disconnect", "reason": "link_disabled", "debug_info": {"host": "applink-fake"}});
        socket::send_to(shared, &sockets, || Out::Text(frame.to_string()));
        socket::send_to(shared, &sockets, || {
            Out::Close(1000, "link_disabled".into())
        });
    }

    /// Cuts every open socket without a close frame.
    pub fn drop_sockets(&self) {
        let sockets: Vec<u64> = self.shared().lock().sockets.keys().copied().collect();
        socket::send_to(self.shared(), &sockets, || Out::Drop);
    }

    /// Every open socket goes silent: no frames either way, no pongs, as a half-open connection
    /// (cut after `frozen_for`).
    pub fn freeze_sockets(&self) {
        let sockets: Vec<u64> = self.shared().lock().sockets.keys().copied().collect();
        socket::send_to(self.shared(), &sockets, || Out::Freeze);
    }

    // ----- what happened ------------------------------------------------------------------------

    /// Every Web API call, in the order answered.
    pub fn requests(&self) -> Vec<SlackRequest> {
        self.shared().lock().records.requests.clone()
    }

    /// How many calls of `method` were answered (whatever the answer).
    pub fn calls(&self, method: &str) -> usize {
        self.shared()
            .lock()
            .records
            .requests
            .iter()
            .filter(|r| r.method == method)
            .count()
    }

    /// Messages the bot posted, in order.
    pub fn posted(&self) -> Vec<PostedMessage> {
        self.shared().lock().records.posted.clone()
    }

    /// Messages the bot posted in `channel` (any thread), in order.
    pub fn posted_in(&self, channel: &str) -> Vec<PostedMessage> {
        self.posted()
            .into_iter()
            .filter(|p| p.channel == channel)
            .collect()
    }

    pub fn updates(&self) -> Vec<UpdatedMessage> {
        self.shared().lock().records.updates.clone()
    }

    /// The bot's `chat.*Stream` calls that were accepted, in order.
    pub fn stream_calls(&self) -> Vec<StreamCall> {
        self.shared().lock().records.streams.clone()
    }

    /// Ephemeral messages the bot showed to single users, in order.
    pub fn ephemerals(&self) -> Vec<EphemeralMessage> {
        self.shared().lock().records.ephemerals.clone()
    }

    /// What the bot POSTed to clicks' `response_url`s, in order.
    pub fn responses(&self) -> Vec<ResponsePost> {
        self.shared().lock().records.responses.clone()
    }

    pub fn reactions(&self) -> Vec<Reaction> {
        self.shared().lock().records.reactions.clone()
    }

    /// `assistant.threads.setStatus` bodies.
    pub fn statuses(&self) -> Vec<Value> {
        self.shared().lock().records.statuses.clone()
    }

    pub fn acks(&self) -> Vec<Ack> {
        self.shared().lock().records.acks.clone()
    }

    /// Whether the envelope was acknowledged (an ack that was not lost).
    pub fn acked(&self, envelope_id: &str) -> bool {
        self.shared()
            .lock()
            .envelopes
            .iter()
            .any(|e| e.id == envelope_id && e.acked)
    }

    /// Every envelope written to a socket, redeliveries included.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared().lock().records.deliveries.clone()
    }

    /// Envelopes Slack gave up on after `max_retries` redeliveries.
    pub fn given_up(&self) -> Vec<String> {
        self.shared().lock().records.given_up.clone()
    }

    /// Envelopes not acknowledged yet (and not given up).
    pub fn unacked(&self) -> usize {
        self.shared()
            .lock()
            .envelopes
            .iter()
            .filter(|e| !e.acked && !e.given_up)
            .count()
    }

    /// Sockets open now (frozen ones included).
    pub fn open_sockets(&self) -> usize {
        self.shared().lock().sockets.len()
    }

    /// Sockets opened since the start.
    pub fn sockets_opened(&self) -> usize {
        self.shared().lock().records.sockets_opened
    }

    /// Polls `f` every 10 ms until it holds.
    ///
    /// # Panics
    /// After 10 s, with `what` and a summary of the fake's records.
    pub async fn wait_for<F: Fn(&FakeSlack) -> bool>(&self, what: &str, f: F) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if f(self) {
                return;
            }
            if Instant::now() >= deadline {
                let calls: Vec<String> = self
                    .requests()
                    .iter()
                    .map(|r| format!("{} {}", r.method, r.status))
                    .collect();
                panic!(
                    "fake slack: timed out after 10 s waiting for {what}; posted {:?}; calls {calls:?}; sockets open {}",
                    self.posted().iter().map(|p| &p.text).collect::<Vec<_>>(),
                    self.open_sockets()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The DM conversation of a user: `U1ANN` → `D1ANN`.
fn dm_channel(user: &str) -> String {
    format!("D{}", user.strip_prefix(['U', 'W']).unwrap_or(user))
}

/// `channel_type` of a conversation id, as Slack reports it on `message` events.
fn channel_type(channel: &str) -> &'static str {
    match channel.as_bytes().first() {
        Some(b'D') => "im",
        Some(b'G') => "group",
        _ => "channel",
    }
}

/// A fresh, strictly increasing message `ts` (`"1767225600.000100"`).
fn next_ts(st: &mut State) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    st.last_ts_micros = now.max(st.last_ts_micros + 100);
    format!(
        "{}.{:06}",
        st.last_ts_micros / 1_000_000,
        st.last_ts_micros % 1_000_000
    )
}

fn now_ts_string() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    format!("{}.{:06}", now / 1_000_000, now % 1_000_000)
}
