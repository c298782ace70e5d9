//! The fake's state: one struct behind one mutex, never held across an `.await`. Everything that
//! must happen in order (a dispatch logged and pushed to the connection, a replay and the events
//! after it) happens under the lock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{
    Closed, ConnectionRecord, EphemeralMessage, Failure, FakeDiscordOptions, HeartbeatRecord,
    IdentifyRecord, InteractionCallback, PostedMessage, Reaction, RecordedRequest, ResumeRecord,
};

/// Discord's epoch (2015-01-01) in Unix milliseconds.
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// Channel types the fake uses.
pub(crate) const GUILD_TEXT: u8 = 0;
pub(crate) const DM: u8 = 1;
pub(crate) const PUBLIC_THREAD: u8 = 11;

pub(crate) struct Shared {
    pub opts: FakeDiscordOptions,
    pub shutdown: CancellationToken,
    /// True while new gateway connections are held before their Hello.
    pub held: watch::Sender<bool>,
    pub port: u16,
    state: Mutex<State>,
}

impl Shared {
    pub(crate) fn new(opts: FakeDiscordOptions, port: u16) -> Shared {
        let state = State::new(&opts);
        Shared {
            opts,
            shutdown: CancellationToken::new(),
            held: watch::channel(false).0,
            port,
            state: Mutex::new(state),
        }
    }

    /// A panic in one test step must not wedge every later request, so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn gateway_url(&self) -> String {
        format!("ws://127.0.0.1:{}/gateway", self.port)
    }

    pub(crate) fn resume_url(&self) -> String {
        format!("ws://127.0.0.1:{}/resume", self.port)
    }
}

/// What the test side tells a connection task.
#[derive(Debug)]
pub(crate) enum Control {
    /// A frame to send as is.
    Frame(String),
    /// Send a close frame with this code, then end.
    Close(u16),
    /// End without a closing frame (a dropped TCP connection).
    Drop,
}

/// A gateway connection as the state sees it.
pub(crate) struct Conn {
    pub tx: mpsc::UnboundedSender<Control>,
    /// The session it identified or resumed.
    pub session: Option<String>,
    /// Answers no heartbeat and gets no dispatch (a zombie socket).
    pub zombie: bool,
    /// Told to reconnect (op 7) or that its session is invalid: gets no more dispatches.
    pub draining: bool,
}

/// A gateway session: its sequence numbers and the dispatches for replay.
pub(crate) struct Session {
    pub seq: u64,
    pub log: Vec<(u64, String)>,
    pub valid: bool,
}

pub(crate) struct ChannelInfo {
    pub kind: u8,
    pub guild: Option<String>,
    pub parent: Option<String>,
    /// The DM's other user.
    pub recipient: Option<String>,
    /// Thread members.
    pub members: Vec<String>,
}

pub(crate) struct Bucket {
    pub remaining: u32,
    pub reset_at: Instant,
}

pub(crate) struct Interaction {
    pub token: String,
    pub created: Instant,
    pub channel: String,
    /// The message that holds the clicked component.
    pub message: String,
    /// Who clicked.
    pub user: String,
    /// What the first (and only) callback made of the interaction's `@original`.
    pub original: Option<Original>,
}

/// What an interaction's `@original` message is, once the interaction was answered.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Original {
    /// Type 6 or 7: the message that holds the component.
    Component,
    /// Type 5: a "thinking…" response, made a message by the first edit of `@original`.
    Thinking { ephemeral: bool },
    /// Type 4 with flags 64: this entry of the ephemeral records.
    Ephemeral(usize),
    /// Type 4: a message in the channel.
    Message(String),
}

#[derive(Default)]
pub(crate) struct Records {
    pub requests: Vec<RecordedRequest>,
    pub posted: Vec<PostedMessage>,
    pub edits: Vec<PostedMessage>,
    pub typing: Vec<String>,
    pub reactions: Vec<Reaction>,
    pub dm_opens: Vec<String>,
    pub callbacks: Vec<InteractionCallback>,
    pub ephemerals: Vec<EphemeralMessage>,
    pub identifies: Vec<IdentifyRecord>,
    pub resumes: Vec<ResumeRecord>,
    pub heartbeats: Vec<HeartbeatRecord>,
    pub connections: Vec<ConnectionRecord>,
    /// Every `PUT /applications/{id}/commands` body, in order.
    pub command_puts: Vec<Value>,
}

pub(crate) struct State {
    pub token: String,
    pub bot_id: String,
    pub app_id: String,
    pub heartbeat_interval: Duration,
    pub include_channel_type: bool,
    /// A code the next IDENTIFY is answered with (e.g. 4014), instead of READY.
    pub reject_identify: Option<u16>,
    next_id: u64,
    last_ms: u64,
    next_session: u64,
    pub next_conn: u64,
    pub conns: HashMap<u64, Conn>,
    pub sessions: HashMap<String, Session>,
    pub channels: HashMap<String, ChannelInfo>,
    /// User id → DM channel id.
    pub dms: HashMap<String, String>,
    /// Message id → the message object (for replies, reactions, edits, redelivery).
    pub messages: HashMap<String, Value>,
    pub interactions: HashMap<String, Interaction>,
    pub names: HashMap<String, String>,
    pub buckets: HashMap<(String, String), Bucket>,
    /// (method, path suffix, failure, times left).
    pub failures: VecDeque<(String, String, Failure, usize)>,
    pub records: Records,
    /// Attachments by id: their bytes, served at `/attachments/{channel}/{id}/{filename}`.
    pub files: HashMap<String, Arc<Vec<u8>>>,
    /// Attachment downloads send their headers, then nothing.
    pub stall_files: bool,
    pub file_downloads: usize,
}

impl State {
    fn new(opts: &FakeDiscordOptions) -> State {
        let mut state = State {
            token: opts.token.clone(),
            bot_id: String::new(),
            app_id: String::new(),
            heartbeat_interval: opts.heartbeat_interval,
            include_channel_type: true,
            reject_identify: None,
            next_id: 0,
            last_ms: 0,
            next_session: 0,
            next_conn: 0,
            conns: HashMap::new(),
            sessions: HashMap::new(),
            channels: HashMap::new(),
            dms: HashMap::new(),
            messages: HashMap::new(),
            interactions: HashMap::new(),
            names: HashMap::new(),
            buckets: HashMap::new(),
            failures: VecDeque::new(),
            records: Records::default(),
            files: HashMap::new(),
            stall_files: false,
            file_downloads: 0,
        };
        state.bot_id = state.snowflake();
        state.app_id = state.bot_id.clone();
        state
    }

    /// A new id made the way Discord makes them: milliseconds since 2015 in the top bits, so
    /// the time can be read back, and always increasing.
    pub fn snowflake(&mut self) -> String {
        let now = unix_ms().saturating_sub(DISCORD_EPOCH_MS);
        if now > self.last_ms {
            self.last_ms = now;
            self.next_id = 0;
        }
        self.next_id += 1;
        ((self.last_ms << 22) | (self.next_id & 0x3f_ffff)).to_string()
    }

    pub fn new_session_id(&mut self) -> String {
        self.next_session += 1;
        format!("fake-session-{}", self.next_session)
    }

    pub fn user(&self, id: &str, bot: bool) -> Value {
        let name = self
            .names
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("user{}", &id[id.len().saturating_sub(4)..]));
        json!({
            "id": id,
            "username": name.to_lowercase(),
            "discriminator": "0",
            "global_name": if bot { Value::Null } else { Value::String(name) },
            "avatar": null,
            "bot": bot,
        })
    }

    pub fn bot_user(&self) -> Value {
        let mut user = self.user(&self.bot_id.clone(), true);
        user["username"] = json!("switchboard-bot");
        user
    }

    /// Makes sure a guild text channel exists.
    pub fn ensure_channel(&mut self, guild: &str, channel: &str) {
        self.channels
            .entry(channel.to_owned())
            .or_insert_with(|| ChannelInfo {
                kind: GUILD_TEXT,
                guild: Some(guild.to_owned()),
                parent: None,
                recipient: None,
                members: Vec::new(),
            });
    }

    /// Makes sure a public thread exists under `parent`.
    pub fn ensure_thread(&mut self, guild: &str, parent: &str, thread: &str) {
        self.ensure_channel(guild, parent);
        self.channels
            .entry(thread.to_owned())
            .or_insert_with(|| ChannelInfo {
                kind: PUBLIC_THREAD,
                guild: Some(guild.to_owned()),
                parent: Some(parent.to_owned()),
                recipient: None,
                members: Vec::new(),
            });
    }

    /// The DM channel with a user, made on first use.
    pub fn dm_channel(&mut self, user: &str) -> String {
        if let Some(id) = self.dms.get(user) {
            return id.clone();
        }
        let id = self.snowflake();
        self.channels.insert(
            id.clone(),
            ChannelInfo {
                kind: DM,
                guild: None,
                parent: None,
                recipient: Some(user.to_owned()),
                members: Vec::new(),
            },
        );
        self.dms.insert(user.to_owned(), id.clone());
        id
    }

    pub fn channel_json(&self, id: &str) -> Option<Value> {
        let info = self.channels.get(id)?;
        let mut channel = json!({ "id": id, "type": info.kind });
        if let Some(guild) = &info.guild {
            channel["guild_id"] = json!(guild);
            channel["name"] = json!(format!("channel-{}", &id[id.len().saturating_sub(4)..]));
        }
        if let Some(parent) = &info.parent {
            channel["parent_id"] = json!(parent);
            channel["owner_id"] = json!("0");
            channel["thread_metadata"] = json!({
                "archived": false, "auto_archive_duration": 1440, "locked": false,
            });
        }
        if let Some(recipient) = &info.recipient {
            channel["recipients"] = json!([self.user(recipient, false)]);
        }
        Some(channel)
    }

    /// Logs a dispatch in every live session and pushes it to the connections that listen.
    pub fn dispatch(&mut self, name: &str, data: &Value) {
        let mut ids: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.valid)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        for id in ids {
            let Some(session) = self.sessions.get_mut(&id) else {
                continue;
            };
            session.seq += 1;
            let frame = json!({ "op": 0, "t": name, "s": session.seq, "d": data }).to_string();
            session.log.push((session.seq, frame.clone()));
            for conn in self.conns.values() {
                if conn.session.as_deref() == Some(id.as_str()) && !conn.zombie && !conn.draining {
                    let _ = conn.tx.send(Control::Frame(frame.clone()));
                }
            }
        }
    }

    /// Sends a control to every open connection (optionally changing it first).
    pub fn each_conn(&mut self, mut f: impl FnMut(&mut Conn) -> Option<Control>) {
        for conn in self.conns.values_mut() {
            if let Some(control) = f(conn) {
                let _ = conn.tx.send(control);
            }
        }
    }

    pub fn close_record(&mut self, conn: u64, closed: Closed) {
        if let Some(record) = self.records.connections.iter_mut().find(|c| c.id == conn) {
            if record.closed.is_none() {
                record.closed = Some(closed);
            }
        }
    }

    /// The next scripted failure for a request, if one matches.
    pub fn take_failure(&mut self, method: &str, path: &str) -> Option<Failure> {
        let index = self.failures.iter().position(|(m, suffix, _, _)| {
            m.eq_ignore_ascii_case(method) && path.ends_with(suffix.as_str())
        })?;
        let entry = self.failures.get_mut(index)?;
        let failure = entry.2.clone();
        entry.3 = entry.3.saturating_sub(1);
        if entry.3 == 0 {
            self.failures.remove(index);
        }
        Some(failure)
    }
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An ISO 8601 timestamp the way Discord writes them: `2026-01-01T00:00:00.000000+00:00`.
pub(crate) fn timestamp(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let micros = (unix_ms % 1000) * 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}+00:00",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_iso_8601() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000000+00:00");
        assert_eq!(
            timestamp(1_767_225_600_000),
            "2026-01-01T00:00:00.000000+00:00"
        );
        assert_eq!(
            timestamp(1_709_210_096_789),
            "2024-02-29T12:34:56.789000+00:00"
        );
    }
}
