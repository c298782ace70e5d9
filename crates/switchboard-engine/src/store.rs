//! The durable state: one SQLite file in WAL mode, with versioned migrations.
//!
//! Everything the engine accepted lives here before it is acted on, so a crash or restart loses
//! nothing: conversations (routing key → session, delivery target), the inbound journal, in-flight
//! runs, per-session event cursors, delivery contexts, approvals with their rules and audit log,
//! de-duplication keys and channel offsets.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context as _;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use crate::channels::Accepted;
use crate::model::{now_ms, ChatType, DeliveryTarget, InboundMessage, JournalState, Peer};
use crate::watch::WatchContext;

/// How many changed rows make a background checkpoint due (about a hundred messages' worth).
const CHECKPOINT_AFTER_CHANGES: u32 = 500;
/// A log longer than this many pages (4 KiB each, so about 20 MB) is truncated rather than left
/// to grow; only steady writing with no pause makes one this long.
const LONG_LOG_FRAMES: i64 = 5_000;

/// Each entry moves the schema one version up; `PRAGMA user_version` records how far a file is.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE conversations (
        routing_key   TEXT PRIMARY KEY,
        session_id    TEXT,
        channel       TEXT NOT NULL,
        peer          TEXT NOT NULL,
        chat          TEXT NOT NULL,
        target        TEXT NOT NULL,
        title         TEXT,
        created_ms    INTEGER NOT NULL,
        last_used_ms  INTEGER NOT NULL
    );
    CREATE TABLE journal (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        channel       TEXT NOT NULL,
        routing_key   TEXT NOT NULL,
        peer          TEXT NOT NULL,
        chat          TEXT NOT NULL,
        target        TEXT NOT NULL,
        text          TEXT NOT NULL,
        context       TEXT,
        state         TEXT NOT NULL,
        run_id        TEXT,
        error         TEXT,
        created_ms    INTEGER NOT NULL,
        updated_ms    INTEGER NOT NULL
    );
    CREATE INDEX journal_by_key ON journal (routing_key, state, id);
    CREATE INDEX journal_by_state ON journal (state, updated_ms);
    CREATE TABLE runs (
        local_id         TEXT PRIMARY KEY,
        routing_key      TEXT NOT NULL,
        session_id       TEXT NOT NULL,
        server_run_id    TEXT,
        state            TEXT NOT NULL,
        text             TEXT NOT NULL,
        idempotency_key  TEXT NOT NULL,
        cursor_start     INTEGER,
        journal_ids      TEXT NOT NULL,
        reply            TEXT,
        delivered_chunks INTEGER NOT NULL DEFAULT 0,
        created_ms       INTEGER NOT NULL,
        updated_ms       INTEGER NOT NULL
    );
    CREATE TABLE cursors (
        session_id    TEXT PRIMARY KEY,
        last_event_id INTEGER NOT NULL,
        server_epoch  INTEGER NOT NULL
    );
    CREATE TABLE delivery_contexts (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        channel       TEXT NOT NULL,
        place         TEXT NOT NULL,
        context       TEXT NOT NULL,
        notification  TEXT NOT NULL,
        created_ms    INTEGER NOT NULL,
        expires_ms    INTEGER NOT NULL,
        consumed_ms   INTEGER
    );
    CREATE INDEX contexts_by_place ON delivery_contexts (channel, place, consumed_ms);
    CREATE TABLE approvals (
        id            TEXT PRIMARY KEY,
        run_local_id  TEXT NOT NULL,
        routing_key   TEXT NOT NULL,
        session_id    TEXT NOT NULL,
        server_run_id TEXT NOT NULL,
        tool_call_id  TEXT NOT NULL,
        tool          TEXT NOT NULL,
        arguments     TEXT NOT NULL,
        requester     TEXT NOT NULL,
        channel       TEXT NOT NULL,
        target        TEXT NOT NULL,
        created_ms    INTEGER NOT NULL,
        deadline_ms   INTEGER NOT NULL,
        state         TEXT NOT NULL,
        decided_by    TEXT,
        surface       TEXT,
        decided_ms    INTEGER
    );
    CREATE UNIQUE INDEX approvals_by_call ON approvals (session_id, tool_call_id);
    CREATE TABLE approval_rules (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        tool          TEXT NOT NULL,
        arg_pattern   TEXT,
        created_ms    INTEGER NOT NULL,
        created_by    TEXT NOT NULL
    );
    CREATE TABLE decisions (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms         INTEGER NOT NULL,
        session_id    TEXT NOT NULL,
        run_id        TEXT NOT NULL,
        tool_call_id  TEXT NOT NULL,
        tool          TEXT NOT NULL,
        action        TEXT NOT NULL,
        decided_by    TEXT NOT NULL,
        surface       TEXT NOT NULL
    );
    CREATE TABLE dedup (
        key           TEXT PRIMARY KEY,
        seen_ms       INTEGER NOT NULL
    );
    CREATE TABLE channel_offsets (
        channel       TEXT NOT NULL,
        key           TEXT NOT NULL,
        value         TEXT NOT NULL,
        PRIMARY KEY (channel, key)
    );
    CREATE TABLE meta (
        key           TEXT PRIMARY KEY,
        value         TEXT NOT NULL
    );
    "#,
    // 2: who asked for an approval (by id, to check who may answer from a chat) and the chat
    // message that shows it (to update it when decided anywhere).
    r#"
    ALTER TABLE approvals ADD COLUMN requester_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE approvals ADD COLUMN chat_message_id TEXT;
    "#,
    // 3: conversations look up their own run on every wake.
    r#"
    CREATE INDEX runs_by_key ON runs (routing_key);
    CREATE INDEX approvals_by_state ON approvals (state, run_local_id);
    "#,
    // 4: access control: who was admitted or refused, and the pairing requests.
    r#"
    CREATE TABLE peers (
        channel       TEXT NOT NULL,
        peer_id       TEXT NOT NULL,
        name          TEXT NOT NULL,
        state         TEXT NOT NULL,
        decided_by    TEXT NOT NULL,
        updated_ms    INTEGER NOT NULL,
        PRIMARY KEY (channel, peer_id)
    );
    CREATE TABLE pairing_requests (
        channel       TEXT NOT NULL,
        peer_id       TEXT NOT NULL,
        peer_name     TEXT NOT NULL,
        code          TEXT NOT NULL,
        first_message TEXT NOT NULL,
        created_ms    INTEGER NOT NULL,
        expires_ms    INTEGER NOT NULL,
        state         TEXT NOT NULL
    );
    CREATE INDEX pairing_by_channel ON pairing_requests (channel, state, expires_ms);
    "#,
];

/// How long de-duplication keys are kept: longer than any platform redelivers (Slack's last retry
/// comes after 5 minutes, Telegram keeps updates for 24 hours).
const DEDUP_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;

/// A handle on the database; cheap to clone, shared by every task.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

/// A conversation: a routing key, its agent session and where its replies go.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conversation {
    pub routing_key: String,
    pub session_id: Option<String>,
    pub channel: String,
    pub peer: Peer,
    pub chat: ChatType,
    pub target: DeliveryTarget,
    pub title: Option<String>,
    pub created_ms: i64,
    pub last_used_ms: i64,
}

/// One accepted inbound message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JournalEntry {
    pub id: i64,
    pub channel: String,
    pub routing_key: String,
    pub peer: Peer,
    pub chat: ChatType,
    pub target: DeliveryTarget,
    pub text: String,
    /// The watch context this message consumed, with the notification it answered.
    pub context: Option<ConsumedContext>,
    pub state: JournalState,
    pub run_id: Option<String>,
    pub error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumedContext {
    pub context: WatchContext,
    pub notification: String,
}

/// Where a run is in its life; stored so a restart picks it up at the same point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Not yet known to be accepted by the server (the POST may or may not have reached it).
    Posting,
    /// The server started it; we are following its events.
    Running,
    /// The reply is known and stored; chunks are being sent.
    Delivering,
}

impl RunState {
    fn as_str(self) -> &'static str {
        match self {
            RunState::Posting => "posting",
            RunState::Running => "running",
            RunState::Delivering => "delivering",
        }
    }

    fn parse(s: &str) -> RunState {
        match s {
            "running" => RunState::Running,
            "delivering" => RunState::Delivering,
            _ => RunState::Posting,
        }
    }
}

/// A run this engine started and has not finished delivering.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub local_id: String,
    pub routing_key: String,
    pub session_id: String,
    pub server_run_id: Option<String>,
    pub state: RunState,
    /// The text posted (queued messages joined, watch context included).
    pub text: String,
    pub idempotency_key: String,
    /// The session's event cursor just before the message was posted; replay starts here.
    pub cursor_start: Option<i64>,
    pub journal_ids: Vec<i64>,
    pub reply: Option<String>,
    pub delivered_chunks: usize,
}

/// A tool call waiting for (or given) a person's decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalRecord {
    pub id: String,
    pub run_local_id: String,
    pub routing_key: String,
    pub session_id: String,
    pub server_run_id: String,
    pub tool_call_id: String,
    pub tool: String,
    pub arguments: serde_json::Value,
    pub requester: String,
    /// The requester's platform id.
    pub requester_id: String,
    pub channel: String,
    pub target: DeliveryTarget,
    /// The chat message showing the prompt, once posted.
    pub chat_message_id: Option<String>,
    pub created_ms: i64,
    pub deadline_ms: i64,
    /// `pending`, `accept`, `reject` or `expired`.
    pub state: String,
    pub decided_by: Option<String>,
    pub surface: Option<String>,
    pub decided_ms: Option<i64>,
}

/// An "always allow" rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalRule {
    pub id: i64,
    pub tool: String,
    pub arg_pattern: Option<String>,
    pub created_ms: i64,
    pub created_by: String,
}

/// One line of the decisions audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionRecord {
    pub at_ms: i64,
    pub session_id: String,
    pub run_id: String,
    pub tool_call_id: String,
    pub tool: String,
    pub action: String,
    pub decided_by: String,
    pub surface: String,
}

/// The result of trying to decide a pending approval.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// This answer decided it.
    Decided(ApprovalRecord),
    /// Someone answered first; here is what they decided.
    AlreadyDecided(ApprovalRecord),
    NotFound,
}

/// How many rows pruning removed, per kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    pub conversations: usize,
    pub journal: usize,
    pub contexts: usize,
    pub dedup: usize,
    pub decisions: usize,
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn from_json<T: for<'de> Deserialize<'de>>(text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

impl Store {
    /// Opens (creating when needed) `switchboard.sqlite` in `data_dir` and brings its schema up to
    /// date.
    pub fn open(data_dir: &Path) -> anyhow::Result<Store> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let path = data_dir.join("switchboard.sqlite");
        let conn =
            Connection::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let store =
            Self::init(conn).with_context(|| format!("cannot prepare {}", path.display()))?;
        store.checkpoint_in_background(&path)?;
        Ok(store)
    }

    /// Moves WAL checkpoints off the writers' path. SQLite checkpoints on the commit that makes
    /// the log long enough, and that commit then waits for the database file's fsync: a few
    /// milliseconds on the message that happens to trigger it. Here the writers never checkpoint;
    /// after every [`CHECKPOINT_AFTER_CHANGES`] changed rows a thread of its own, with its own
    /// connection, runs a passive checkpoint (which never blocks a writer), or truncates a log
    /// that has grown long. Idle, nothing runs. The thread ends with the store.
    fn checkpoint_in_background(&self, path: &Path) -> anyhow::Result<()> {
        let checkpointer = Connection::open(path)
            .with_context(|| format!("cannot open {} to checkpoint it", path.display()))?;
        checkpointer.busy_timeout(std::time::Duration::from_secs(5))?;
        let (nudge, nudged) = std::sync::mpsc::sync_channel::<()>(1);
        // Weak: the thread must not keep the store's connection (and so itself) alive.
        let writers = Arc::downgrade(&self.conn);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                let checkpoint = |conn: &Connection, mode: &str| {
                    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                        r.get::<_, i64>(1)
                    })
                };
                while nudged.recv().is_ok() {
                    let result = checkpoint(&checkpointer, "PASSIVE").and_then(|frames| {
                        // A log only starts over when a writer finds it all copied, which
                        // steady writing can keep from happening. A long one is truncated by
                        // the writers' own connection, between two of their transactions (from
                        // another connection it would break their snapshots).
                        match writers.upgrade() {
                            Some(writers) if frames > LONG_LOG_FRAMES => {
                                let conn = writers.lock().unwrap_or_else(|e| e.into_inner());
                                checkpoint(&conn, "TRUNCATE")
                            }
                            _ => Ok(frames),
                        }
                    });
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "a database checkpoint failed; the next one retries");
                    }
                }
            })
            .context("cannot start the database checkpoint thread")?;
        let conn = self.lock();
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let mut changes = 0u32;
        conn.update_hook(Some(
            move |_: rusqlite::hooks::Action, _: &str, _: &str, _: i64| {
                changes += 1;
                if changes >= CHECKPOINT_AFTER_CHANGES {
                    changes = 0;
                    // Full means one is already due; that one covers these changes too.
                    let _ = nudge.try_send(());
                }
            },
        ));
        Ok(())
    }

    /// An in-memory database, for unit tests.
    pub fn open_in_memory() -> anyhow::Result<Store> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> anyhow::Result<Store> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL is durable across a process crash in WAL mode (only an OS crash can lose the last
        // transactions), which is what the gateway promises; FULL would fsync every message.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version as usize > MIGRATIONS.len() {
            anyhow::bail!(
                "the database was written by a newer Switchboard (schema {version}, this one knows {}); update Switchboard",
                MIGRATIONS.len()
            );
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (index + 1) as i64)?;
            tx.commit()?;
        }
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // rusqlite rolls back an unfinished transaction when it is dropped, so a panic on another
        // task leaves the connection consistent.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn schema_version(&self) -> anyhow::Result<i64> {
        Ok(self
            .lock()
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    // ----- intake -------------------------------------------------------------------------------

    /// Stores an inbound message: drops it if any de-duplication key was seen; otherwise records
    /// the keys, refreshes the conversation's delivery target, consumes the place's unexpired watch
    /// context and appends the message to the journal — all in one transaction.
    pub fn accept(
        &self,
        message: &InboundMessage,
        routing_key: &str,
        now: i64,
    ) -> anyhow::Result<Accepted> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if keys_seen(&tx, &message.dedup_keys)? {
            return Ok(Accepted::Duplicate);
        }
        for key in &message.dedup_keys {
            tx.execute(
                "INSERT OR IGNORE INTO dedup (key, seen_ms) VALUES (?1, ?2)",
                params![key, now],
            )?;
        }
        tx.execute(
            "INSERT INTO conversations (routing_key, channel, peer, chat, target, created_ms, last_used_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
             ON CONFLICT (routing_key) DO UPDATE SET channel = ?2, peer = ?3, chat = ?4, target = ?5, last_used_ms = ?6",
            params![routing_key, message.channel, to_json(&message.peer), to_json(&message.chat), to_json(&message.target), now],
        )?;
        let context: Option<(i64, String, String)> = tx
            .query_row(
                "SELECT id, context, notification FROM delivery_contexts
                 WHERE channel = ?1 AND place = ?2 AND consumed_ms IS NULL AND expires_ms > ?3
                 ORDER BY id DESC LIMIT 1",
                params![message.channel, message.target.place_key(), now],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let consumed = match context {
            Some((id, context, notification)) => {
                tx.execute(
                    "UPDATE delivery_contexts SET consumed_ms = ?1 WHERE id = ?2",
                    params![now, id],
                )?;
                let context: WatchContext = serde_json::from_str(&context).unwrap_or_default();
                Some(to_json(&ConsumedContext {
                    context,
                    notification,
                }))
            }
            None => None,
        };
        tx.execute(
            "INSERT INTO journal (channel, routing_key, peer, chat, target, text, context, state, created_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?8)",
            params![
                message.channel,
                routing_key,
                to_json(&message.peer),
                to_json(&message.chat),
                to_json(&message.target),
                message.text,
                consumed,
                now
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(Accepted::New(id))
    }

    /// Whether any of these keys was recorded.
    pub fn is_duplicate(&self, keys: &[String]) -> anyhow::Result<bool> {
        let conn = self.lock();
        Ok(keys_seen(&conn, keys)?)
    }

    // ----- journal ------------------------------------------------------------------------------

    /// The queued messages of a conversation, oldest first.
    pub fn queued(&self, routing_key: &str) -> anyhow::Result<Vec<JournalEntry>> {
        self.journal_query(
            "WHERE routing_key = ?1 AND state = 'queued' ORDER BY id",
            params![routing_key],
        )
    }

    /// Every conversation that has queued messages.
    pub fn keys_with_queued(&self) -> anyhow::Result<Vec<String>> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT DISTINCT routing_key FROM journal WHERE state = 'queued'")?;
        let keys = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(keys)
    }

    /// A conversation's latest journal entries, oldest first.
    pub fn journal_for(
        &self,
        routing_key: &str,
        limit: usize,
    ) -> anyhow::Result<Vec<JournalEntry>> {
        let mut rows = self.journal_query(
            "WHERE routing_key = ?1 ORDER BY id DESC LIMIT ?2",
            params![routing_key, limit as i64],
        )?;
        rows.reverse();
        Ok(rows)
    }

    pub fn journal_entry(&self, id: i64) -> anyhow::Result<Option<JournalEntry>> {
        Ok(self.journal_query("WHERE id = ?1", params![id])?.pop())
    }

    fn journal_query(
        &self,
        tail: &str,
        args: impl rusqlite::Params,
    ) -> anyhow::Result<Vec<JournalEntry>> {
        let conn = self.lock();
        let sql = format!(
            "SELECT id, channel, routing_key, peer, chat, target, text, context, state, run_id, error, created_ms, updated_ms FROM journal {tail}"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map(args, |r| {
                let context: Option<String> = r.get(7)?;
                let state: String = r.get(8)?;
                Ok(JournalEntry {
                    id: r.get(0)?,
                    channel: r.get(1)?,
                    routing_key: r.get(2)?,
                    peer: from_json(&r.get::<_, String>(3)?)?,
                    chat: from_json(&r.get::<_, String>(4)?)?,
                    target: from_json(&r.get::<_, String>(5)?)?,
                    text: r.get(6)?,
                    context: context.as_deref().map(from_json).transpose()?,
                    state: JournalState::parse(&state).unwrap_or(JournalState::Failed),
                    run_id: r.get(9)?,
                    error: r.get(10)?,
                    created_ms: r.get(11)?,
                    updated_ms: r.get(12)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Sets the state of journal entries (and the error, for failures).
    pub fn mark_journal(
        &self,
        ids: &[i64],
        state: JournalState,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        mark_journal_tx(&tx, ids, state, error)?;
        tx.commit()?;
        Ok(())
    }

    // ----- conversations ------------------------------------------------------------------------

    pub fn conversation(&self, routing_key: &str) -> anyhow::Result<Option<Conversation>> {
        Ok(self
            .conversations_query("WHERE routing_key = ?1", params![routing_key])?
            .pop())
    }

    /// Every conversation, most recently used first.
    pub fn conversations(&self) -> anyhow::Result<Vec<Conversation>> {
        self.conversations_query("ORDER BY last_used_ms DESC", [])
    }

    fn conversations_query(
        &self,
        tail: &str,
        args: impl rusqlite::Params,
    ) -> anyhow::Result<Vec<Conversation>> {
        let conn = self.lock();
        let sql = format!(
            "SELECT routing_key, session_id, channel, peer, chat, target, title, created_ms, last_used_ms FROM conversations {tail}"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map(args, |r| {
                Ok(Conversation {
                    routing_key: r.get(0)?,
                    session_id: r.get(1)?,
                    channel: r.get(2)?,
                    peer: from_json(&r.get::<_, String>(3)?)?,
                    chat: from_json(&r.get::<_, String>(4)?)?,
                    target: from_json(&r.get::<_, String>(5)?)?,
                    title: r.get(6)?,
                    created_ms: r.get(7)?,
                    last_used_ms: r.get(8)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Maps a conversation to a server session (or forgets its session with `None`).
    pub fn set_session(
        &self,
        routing_key: &str,
        session_id: Option<&str>,
        title: Option<&str>,
    ) -> anyhow::Result<()> {
        self.lock().execute(
            "UPDATE conversations SET session_id = ?2, title = COALESCE(?3, title) WHERE routing_key = ?1",
            params![routing_key, session_id, title],
        )?;
        Ok(())
    }

    // ----- runs ---------------------------------------------------------------------------------

    /// Records a new run and ties its journal entries to it.
    pub fn insert_run(&self, run: &RunRecord) -> anyhow::Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let now = now_ms();
        tx.execute(
            "INSERT INTO runs (local_id, routing_key, session_id, server_run_id, state, text, idempotency_key, cursor_start, journal_ids, reply, delivered_chunks, created_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)",
            params![
                run.local_id,
                run.routing_key,
                run.session_id,
                run.server_run_id,
                run.state.as_str(),
                run.text,
                run.idempotency_key,
                run.cursor_start,
                to_json(&run.journal_ids),
                run.reply,
                run.delivered_chunks as i64,
                now
            ],
        )?;
        for id in &run.journal_ids {
            tx.execute(
                "UPDATE journal SET run_id = ?1, updated_ms = ?2 WHERE id = ?3",
                params![run.local_id, now, id],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Saves the fields of a run that change as it goes.
    pub fn update_run(&self, run: &RunRecord) -> anyhow::Result<()> {
        self.lock().execute(
            "UPDATE runs SET session_id = ?2, server_run_id = ?3, state = ?4, text = ?5, idempotency_key = ?6, cursor_start = ?7,
                 reply = ?8, delivered_chunks = ?9, journal_ids = ?10, updated_ms = ?11 WHERE local_id = ?1",
            params![
                run.local_id,
                run.session_id,
                run.server_run_id,
                run.state.as_str(),
                run.text,
                run.idempotency_key,
                run.cursor_start,
                run.reply,
                run.delivered_chunks as i64,
                to_json(&run.journal_ids),
                now_ms()
            ],
        )?;
        Ok(())
    }

    /// Ends a run: its journal entries take their final state and the run row goes, together.
    pub fn finish_run(
        &self,
        run: &RunRecord,
        state: JournalState,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        mark_journal_tx(&tx, &run.journal_ids, state, error)?;
        tx.execute(
            "DELETE FROM runs WHERE local_id = ?1",
            params![run.local_id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Gives a run's messages back to the queue (the run could not be started) and drops the run.
    pub fn requeue_run(&self, run: &RunRecord) -> anyhow::Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        mark_journal_tx(&tx, &run.journal_ids, JournalState::Queued, None)?;
        for id in &run.journal_ids {
            tx.execute(
                "UPDATE journal SET run_id = NULL WHERE id = ?1",
                params![id],
            )?;
        }
        tx.execute(
            "DELETE FROM runs WHERE local_id = ?1",
            params![run.local_id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Runs not yet finished, oldest first (to resume after a restart).
    pub fn unfinished_runs(&self) -> anyhow::Result<Vec<RunRecord>> {
        self.runs_query("ORDER BY created_ms", [])
    }

    /// The unfinished run of one conversation, if any.
    pub fn unfinished_run(&self, routing_key: &str) -> anyhow::Result<Option<RunRecord>> {
        Ok(self
            .runs_query(
                "WHERE routing_key = ?1 ORDER BY created_ms LIMIT 1",
                params![routing_key],
            )?
            .pop())
    }

    fn runs_query(
        &self,
        tail: &str,
        args: impl rusqlite::Params,
    ) -> anyhow::Result<Vec<RunRecord>> {
        let conn = self.lock();
        let sql = format!(
            "SELECT local_id, routing_key, session_id, server_run_id, state, text, idempotency_key, cursor_start, journal_ids, reply, delivered_chunks
             FROM runs {tail}"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map(args, |r| {
                Ok(RunRecord {
                    local_id: r.get(0)?,
                    routing_key: r.get(1)?,
                    session_id: r.get(2)?,
                    server_run_id: r.get(3)?,
                    state: RunState::parse(&r.get::<_, String>(4)?),
                    text: r.get(5)?,
                    idempotency_key: r.get(6)?,
                    cursor_start: r.get(7)?,
                    journal_ids: from_json(&r.get::<_, String>(8)?)?,
                    reply: r.get(9)?,
                    delivered_chunks: r.get::<_, i64>(10)? as usize,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    // ----- event cursors ------------------------------------------------------------------------

    /// The last event id seen for a session and the server epoch it belongs to.
    pub fn cursor(&self, session_id: &str) -> anyhow::Result<Option<(i64, i64)>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT last_event_id, server_epoch FROM cursors WHERE session_id = ?1",
                params![session_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    pub fn set_cursor(
        &self,
        session_id: &str,
        last_event_id: i64,
        server_epoch: i64,
    ) -> anyhow::Result<()> {
        self.lock().execute(
            "INSERT INTO cursors (session_id, last_event_id, server_epoch) VALUES (?1, ?2, ?3)
             ON CONFLICT (session_id) DO UPDATE SET last_event_id = ?2, server_epoch = ?3",
            params![session_id, last_event_id, server_epoch],
        )?;
        Ok(())
    }

    pub fn clear_cursor(&self, session_id: &str) -> anyhow::Result<()> {
        self.lock().execute(
            "DELETE FROM cursors WHERE session_id = ?1",
            params![session_id],
        )?;
        Ok(())
    }

    // ----- delivery contexts --------------------------------------------------------------------

    /// Files a one-shot watch context for the next message from `place` on `channel`.
    pub fn store_context(
        &self,
        channel: &str,
        place: &str,
        context: &WatchContext,
        notification: &str,
        now: i64,
        expires_ms: i64,
    ) -> anyhow::Result<()> {
        self.lock().execute(
            "INSERT INTO delivery_contexts (channel, place, context, notification, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![channel, place, to_json(context), notification, now, expires_ms],
        )?;
        Ok(())
    }

    // ----- approvals ----------------------------------------------------------------------------

    /// Stores a pending approval; a second one for the same call is ignored (returns false).
    pub fn insert_approval(&self, a: &ApprovalRecord) -> anyhow::Result<bool> {
        let inserted = self.lock().execute(
            "INSERT OR IGNORE INTO approvals (id, run_local_id, routing_key, session_id, server_run_id, tool_call_id, tool, arguments, requester, channel, target, created_ms, deadline_ms, state, requester_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 'pending', ?14)",
            params![
                a.id,
                a.run_local_id,
                a.routing_key,
                a.session_id,
                a.server_run_id,
                a.tool_call_id,
                a.tool,
                to_json(&a.arguments),
                a.requester,
                a.channel,
                to_json(&a.target),
                a.created_ms,
                a.deadline_ms,
                a.requester_id
            ],
        )?;
        Ok(inserted == 1)
    }

    pub fn pending_approvals(&self) -> anyhow::Result<Vec<ApprovalRecord>> {
        self.approvals_query("WHERE state = 'pending' ORDER BY created_ms", [])
    }

    pub fn approval(&self, id: &str) -> anyhow::Result<Option<ApprovalRecord>> {
        Ok(self.approvals_query("WHERE id = ?1", params![id])?.pop())
    }

    pub fn approval_for_call(
        &self,
        session_id: &str,
        tool_call_id: &str,
    ) -> anyhow::Result<Option<ApprovalRecord>> {
        Ok(self
            .approvals_query(
                "WHERE session_id = ?1 AND tool_call_id = ?2",
                params![session_id, tool_call_id],
            )?
            .pop())
    }

    fn approvals_query(
        &self,
        tail: &str,
        args: impl rusqlite::Params,
    ) -> anyhow::Result<Vec<ApprovalRecord>> {
        let conn = self.lock();
        let sql = format!(
            "SELECT id, run_local_id, routing_key, session_id, server_run_id, tool_call_id, tool, arguments, requester, channel, target,
                    created_ms, deadline_ms, state, decided_by, surface, decided_ms, requester_id, chat_message_id FROM approvals {tail}"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map(args, |r| {
                Ok(ApprovalRecord {
                    id: r.get(0)?,
                    run_local_id: r.get(1)?,
                    routing_key: r.get(2)?,
                    session_id: r.get(3)?,
                    server_run_id: r.get(4)?,
                    tool_call_id: r.get(5)?,
                    tool: r.get(6)?,
                    arguments: from_json(&r.get::<_, String>(7)?)?,
                    requester: r.get(8)?,
                    channel: r.get(9)?,
                    target: from_json(&r.get::<_, String>(10)?)?,
                    created_ms: r.get(11)?,
                    deadline_ms: r.get(12)?,
                    state: r.get(13)?,
                    decided_by: r.get(14)?,
                    surface: r.get(15)?,
                    decided_ms: r.get(16)?,
                    requester_id: r.get(17)?,
                    chat_message_id: r.get(18)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Remembers the chat message that shows an approval's prompt.
    pub fn set_approval_message(&self, id: &str, message_id: &str) -> anyhow::Result<()> {
        self.lock().execute(
            "UPDATE approvals SET chat_message_id = ?2 WHERE id = ?1",
            params![id, message_id],
        )?;
        Ok(())
    }

    /// Decides a pending approval if nobody has yet (first answer wins) and writes the audit log.
    pub fn resolve_approval(
        &self,
        id: &str,
        action: &str,
        decided_by: &str,
        surface: &str,
        now: i64,
    ) -> anyhow::Result<Resolution> {
        {
            let mut conn = self.lock();
            let tx = conn.transaction()?;
            let changed = tx.execute(
                "UPDATE approvals SET state = ?2, decided_by = ?3, surface = ?4, decided_ms = ?5 WHERE id = ?1 AND state = 'pending'",
                params![id, action, decided_by, surface, now],
            )?;
            if changed == 1 {
                tx.execute(
                    "INSERT INTO decisions (at_ms, session_id, run_id, tool_call_id, tool, action, decided_by, surface)
                     SELECT ?2, session_id, server_run_id, tool_call_id, tool, ?3, ?4, ?5 FROM approvals WHERE id = ?1",
                    params![id, now, action, decided_by, surface],
                )?;
                tx.commit()?;
                drop(conn);
                return Ok(match self.approval(id)? {
                    Some(a) => Resolution::Decided(a),
                    None => Resolution::NotFound,
                });
            }
        }
        Ok(match self.approval(id)? {
            Some(a) => Resolution::AlreadyDecided(a),
            None => Resolution::NotFound,
        })
    }

    /// Writes a decision the engine made by policy (a mode or a rule) to the audit log.
    pub fn log_decision(&self, d: &DecisionRecord) -> anyhow::Result<()> {
        self.lock().execute(
            "INSERT INTO decisions (at_ms, session_id, run_id, tool_call_id, tool, action, decided_by, surface) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![d.at_ms, d.session_id, d.run_id, d.tool_call_id, d.tool, d.action, d.decided_by, d.surface],
        )?;
        Ok(())
    }

    /// The audit log, newest first.
    pub fn decisions(&self, limit: usize) -> anyhow::Result<Vec<DecisionRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT at_ms, session_id, run_id, tool_call_id, tool, action, decided_by, surface FROM decisions ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt
            .query_map(params![limit as i64], |r| {
                Ok(DecisionRecord {
                    at_ms: r.get(0)?,
                    session_id: r.get(1)?,
                    run_id: r.get(2)?,
                    tool_call_id: r.get(3)?,
                    tool: r.get(4)?,
                    action: r.get(5)?,
                    decided_by: r.get(6)?,
                    surface: r.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn add_rule(
        &self,
        tool: &str,
        arg_pattern: Option<&str>,
        created_by: &str,
    ) -> anyhow::Result<i64> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO approval_rules (tool, arg_pattern, created_ms, created_by) VALUES (?1, ?2, ?3, ?4)",
            params![tool, arg_pattern, now_ms(), created_by],
        )?;
        Ok(conn.last_insert_rowid())
    }

    pub fn remove_rule(&self, id: i64) -> anyhow::Result<bool> {
        Ok(self
            .lock()
            .execute("DELETE FROM approval_rules WHERE id = ?1", params![id])?
            == 1)
    }

    pub fn rules(&self) -> anyhow::Result<Vec<ApprovalRule>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, tool, arg_pattern, created_ms, created_by FROM approval_rules ORDER BY id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(ApprovalRule {
                    id: r.get(0)?,
                    tool: r.get(1)?,
                    arg_pattern: r.get(2)?,
                    created_ms: r.get(3)?,
                    created_by: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    // ----- access control -----------------------------------------------------------------------

    /// Whether a sender was admitted or refused on a channel.
    pub fn peer_state(
        &self,
        channel: &str,
        peer_id: &str,
    ) -> anyhow::Result<crate::access::PeerState> {
        let state: Option<String> = self
            .lock()
            .query_row(
                "SELECT state FROM peers WHERE channel = ?1 AND peer_id = ?2",
                params![channel, peer_id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(match state.as_deref() {
            Some("admitted") => crate::access::PeerState::Admitted,
            Some("refused") => crate::access::PeerState::Refused,
            _ => crate::access::PeerState::Unknown,
        })
    }

    /// The sender's pending, unexpired pairing request on a channel.
    pub fn pending_pairing_for(
        &self,
        channel: &str,
        peer_id: &str,
        now: i64,
    ) -> anyhow::Result<Option<crate::access::PairingRequest>> {
        Ok(self
            .pairing_query(
                "WHERE channel = ?1 AND peer_id = ?2 AND state = 'pending' AND expires_ms > ?3 ORDER BY created_ms DESC LIMIT 1",
                params![channel, peer_id, now],
            )?
            .pop())
    }

    /// Pending, unexpired pairing requests (of one channel, or all), oldest first.
    pub fn pending_pairings(
        &self,
        channel: Option<&str>,
        now: i64,
    ) -> anyhow::Result<Vec<crate::access::PairingRequest>> {
        match channel {
            Some(channel) => self.pairing_query(
                "WHERE channel = ?1 AND state = 'pending' AND expires_ms > ?2 ORDER BY created_ms",
                params![channel, now],
            ),
            None => self.pairing_query(
                "WHERE state = 'pending' AND expires_ms > ?1 ORDER BY created_ms",
                params![now],
            ),
        }
    }

    fn pairing_query(
        &self,
        tail: &str,
        args: impl rusqlite::Params,
    ) -> anyhow::Result<Vec<crate::access::PairingRequest>> {
        let conn = self.lock();
        let sql = format!(
            "SELECT channel, peer_id, peer_name, code, first_message, created_ms, expires_ms, state FROM pairing_requests {tail}"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map(args, |r| {
                Ok(crate::access::PairingRequest {
                    channel: r.get(0)?,
                    peer_id: r.get(1)?,
                    peer_name: r.get(2)?,
                    code: r.get(3)?,
                    first_message: r.get(4)?,
                    created_ms: r.get(5)?,
                    expires_ms: r.get(6)?,
                    state: r.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Files a pairing request unless the channel already has `max_pending` waiting; returns
    /// whether it was filed. The check and the insert are one transaction.
    pub fn insert_pairing(
        &self,
        request: &crate::access::PairingRequest,
        max_pending: usize,
    ) -> anyhow::Result<bool> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let pending: i64 = tx.query_row(
            "SELECT COUNT(*) FROM pairing_requests WHERE channel = ?1 AND state = 'pending' AND expires_ms > ?2",
            params![request.channel, request.created_ms],
            |r| r.get(0),
        )?;
        if pending as usize >= max_pending {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO pairing_requests (channel, peer_id, peer_name, code, first_message, created_ms, expires_ms, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending')",
            params![
                request.channel,
                request.peer_id,
                request.peer_name,
                request.code,
                request.first_message,
                request.created_ms,
                request.expires_ms
            ],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Admits (`admitted`) or refuses (`refused`) the sender of a pending, unexpired code; the
    /// sender's state is stored with the request's, in one transaction. `None` when no such code
    /// waits.
    pub fn resolve_pairing(
        &self,
        channel: &str,
        code: &str,
        state: &str,
        decided_by: &str,
        now: i64,
    ) -> anyhow::Result<Option<crate::access::PairingRequest>> {
        let Some(mut request) = self
            .pairing_query(
                "WHERE channel = ?1 AND code = ?2 AND state = 'pending' AND expires_ms > ?3",
                params![channel, code, now],
            )?
            .pop()
        else {
            return Ok(None);
        };
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE pairing_requests SET state = ?3 WHERE channel = ?1 AND code = ?2 AND state = 'pending'",
            params![channel, code, state],
        )?;
        tx.execute(
            "INSERT INTO peers (channel, peer_id, name, state, decided_by, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (channel, peer_id) DO UPDATE SET name = ?3, state = ?4, decided_by = ?5, updated_ms = ?6",
            params![channel, request.peer_id, request.peer_name, state, decided_by, now],
        )?;
        tx.commit()?;
        request.state = state.to_string();
        Ok(Some(request))
    }

    /// Admits or refuses a sender directly (the window's list of known senders).
    pub fn set_peer_state(
        &self,
        channel: &str,
        peer_id: &str,
        name: &str,
        state: &str,
        decided_by: &str,
    ) -> anyhow::Result<()> {
        self.lock().execute(
            "INSERT INTO peers (channel, peer_id, name, state, decided_by, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (channel, peer_id) DO UPDATE SET name = ?3, state = ?4, decided_by = ?5, updated_ms = ?6",
            params![channel, peer_id, name, state, decided_by, now_ms()],
        )?;
        Ok(())
    }

    /// Admitted and refused senders: (channel, peer id, name, state).
    pub fn peers(&self) -> anyhow::Result<Vec<(String, String, String, String)>> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT channel, peer_id, name, state FROM peers ORDER BY channel, name")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    // ----- channel offsets and meta -------------------------------------------------------------

    pub fn channel_offset(&self, channel: &str, key: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT value FROM channel_offsets WHERE channel = ?1 AND key = ?2",
                params![channel, key],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn set_channel_offset(&self, channel: &str, key: &str, value: &str) -> anyhow::Result<()> {
        self.lock().execute(
            "INSERT INTO channel_offsets (channel, key, value) VALUES (?1, ?2, ?3) ON CONFLICT (channel, key) DO UPDATE SET value = ?3",
            params![channel, key, value],
        )?;
        Ok(())
    }

    pub fn meta(&self, key: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .lock()
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.lock().execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
            params![key, value],
        )?;
        Ok(())
    }

    // ----- pruning ------------------------------------------------------------------------------

    /// Removes what is no longer needed: conversations unused for `idle_ms` (never one with queued
    /// messages or a run in flight), finished journal entries and decisions older than
    /// `retention_ms`, expired or consumed delivery contexts and old de-duplication keys.
    pub fn prune(&self, now: i64, idle_ms: i64, retention_ms: i64) -> anyhow::Result<Pruned> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let conversations = tx.execute(
            "DELETE FROM conversations WHERE last_used_ms < ?1
               AND routing_key NOT IN (SELECT routing_key FROM journal WHERE state IN ('queued', 'sent'))
               AND routing_key NOT IN (SELECT routing_key FROM runs)",
            params![now - idle_ms],
        )?;
        let journal = tx.execute(
            "DELETE FROM journal WHERE state IN ('replied', 'failed') AND updated_ms < ?1",
            params![now - retention_ms],
        )?;
        let decisions = tx.execute(
            "DELETE FROM decisions WHERE at_ms < ?1",
            params![now - retention_ms],
        )?;
        tx.execute(
            "DELETE FROM approvals WHERE state != 'pending' AND decided_ms < ?1",
            params![now - retention_ms],
        )?;
        let contexts = tx.execute(
            "DELETE FROM delivery_contexts WHERE expires_ms <= ?1 OR consumed_ms IS NOT NULL",
            params![now],
        )?;
        let dedup = tx.execute(
            "DELETE FROM dedup WHERE seen_ms < ?1",
            params![now - DEDUP_RETENTION_MS],
        )?;
        // Pairing requests that ended or expired are kept a while for the window's history.
        tx.execute(
            "DELETE FROM pairing_requests WHERE expires_ms < ?1 OR (state != 'pending' AND created_ms < ?1)",
            params![now - retention_ms.min(7 * 86_400_000)],
        )?;
        tx.execute(
            "DELETE FROM cursors WHERE session_id NOT IN (SELECT session_id FROM conversations WHERE session_id IS NOT NULL)",
            [],
        )?;
        tx.commit()?;
        Ok(Pruned {
            conversations,
            journal,
            contexts,
            dedup,
            decisions,
        })
    }
}

fn keys_seen(conn: &Connection, keys: &[String]) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM dedup WHERE key = ?1")?;
    for key in keys {
        if stmt.exists(params![key])? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn mark_journal_tx(
    tx: &Transaction<'_>,
    ids: &[i64],
    state: JournalState,
    error: Option<&str>,
) -> rusqlite::Result<()> {
    let now = now_ms();
    let mut stmt = tx.prepare_cached(
        "UPDATE journal SET state = ?1, error = ?2, updated_ms = ?3 WHERE id = ?4",
    )?;
    for id in ids {
        stmt.execute(params![state.as_str(), error, now, id])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Peer;

    fn message(id: &str, text: &str) -> InboundMessage {
        InboundMessage {
            channel: "test".into(),
            peer: Peer::new("ann"),
            chat: ChatType::Direct,
            text: text.into(),
            target: DeliveryTarget::chat("ann"),
            dedup_keys: vec![format!("test:{id}")],
            received_at_ms: 0,
        }
    }

    #[test]
    fn the_log_is_checkpointed_in_the_background_so_it_stays_small() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let wal = dir.path().join("switchboard.sqlite-wal");
        // Writing without a pause keeps the log from starting over; 40,000 commits would make
        // it about 80 MB if it were never truncated (the writers themselves never checkpoint).
        for i in 0..40_000 {
            store.set_meta("counter", &i.to_string()).expect("write");
        }
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        assert!(size < 40 * 1024 * 1024, "the log grew to {size} bytes");
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(
            store.meta("counter").expect("read").as_deref(),
            Some("39999")
        );
    }

    #[test]
    fn accept_journals_once_per_platform_message() {
        let store = Store::open_in_memory().expect("store");
        let first = store.accept(&message("1", "hi"), "k", 1).expect("accept");
        assert!(matches!(first, Accepted::New(_)));
        assert_eq!(
            store.accept(&message("1", "hi"), "k", 2).expect("accept"),
            Accepted::Duplicate
        );
        assert_eq!(
            store.queued("k").expect("queued").len(),
            1,
            "a redelivery must not be journaled twice"
        );
        let conversation = store
            .conversation("k")
            .expect("query")
            .expect("conversation created");
        assert_eq!(conversation.target, DeliveryTarget::chat("ann"));
    }

    #[test]
    fn a_context_is_consumed_by_exactly_one_message() {
        let store = Store::open_in_memory().expect("store");
        let context = WatchContext {
            summary: Some("disk full".into()),
            ..Default::default()
        };
        store
            .store_context("test", "ann", &context, "Disk alert", 0, 1000)
            .expect("store context");
        store
            .accept(&message("1", "fix it"), "k", 10)
            .expect("accept");
        store
            .accept(&message("2", "and again"), "k", 20)
            .expect("accept");
        let queued = store.queued("k").expect("queued");
        assert_eq!(
            queued[0].context.as_ref().map(|c| c.context.clone()),
            Some(context)
        );
        assert_eq!(queued[1].context, None, "the context is one-shot");
    }

    #[test]
    fn an_expired_context_is_not_consumed() {
        let store = Store::open_in_memory().expect("store");
        store
            .store_context("test", "ann", &WatchContext::default(), "n", 0, 1000)
            .expect("store context");
        store
            .accept(&message("1", "late"), "k", 1000)
            .expect("accept");
        assert_eq!(store.queued("k").expect("queued")[0].context, None);
    }

    #[test]
    fn first_answer_wins_and_is_audited() {
        let store = Store::open_in_memory().expect("store");
        let approval = ApprovalRecord {
            id: "a1".into(),
            run_local_id: "r".into(),
            routing_key: "k".into(),
            session_id: "s".into(),
            server_run_id: "run".into(),
            tool_call_id: "call".into(),
            tool: "stakpak__run_command".into(),
            arguments: serde_json::json!({"command": "ls"}),
            requester: "ann".into(),
            requester_id: "ann".into(),
            channel: "test".into(),
            target: DeliveryTarget::chat("ann"),
            chat_message_id: None,
            created_ms: 0,
            deadline_ms: 10,
            state: "pending".into(),
            decided_by: None,
            surface: None,
            decided_ms: None,
        };
        assert!(store.insert_approval(&approval).expect("insert"));
        assert!(!store.insert_approval(&approval).expect("insert twice"));
        assert!(matches!(
            store
                .resolve_approval("a1", "accept", "ann", "window", 5)
                .expect("resolve"),
            Resolution::Decided(_)
        ));
        match store
            .resolve_approval("a1", "reject", "bob", "chat", 6)
            .expect("resolve")
        {
            Resolution::AlreadyDecided(a) => assert_eq!(
                (a.state.as_str(), a.decided_by.as_deref()),
                ("accept", Some("ann"))
            ),
            other => panic!("second answer must lose, got {other:?}"),
        }
        assert_eq!(
            store.decisions(10).expect("log").len(),
            1,
            "one decision in the audit log"
        );
    }

    #[test]
    fn migrations_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            store.accept(&message("1", "hi"), "k", 1).expect("accept");
        }
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(
            store.schema_version().expect("version"),
            MIGRATIONS.len() as i64
        );
        assert_eq!(store.queued("k").expect("queued").len(), 1);
    }

    #[test]
    fn pruning_keeps_busy_conversations() {
        let store = Store::open_in_memory().expect("store");
        store
            .accept(&message("1", "hi"), "busy", 0)
            .expect("accept");
        let mut idle = message("2", "old");
        idle.peer = Peer::new("bob");
        store.accept(&idle, "idle", 0).expect("accept");
        let id = store.queued("idle").expect("queued")[0].id;
        store
            .mark_journal(&[id], JournalState::Replied, None)
            .expect("mark");
        let pruned = store.prune(10_000, 1000, i64::MAX / 4).expect("prune");
        assert_eq!(pruned.conversations, 1);
        assert!(
            store.conversation("busy").expect("query").is_some(),
            "a conversation with queued messages stays"
        );
        assert!(store.conversation("idle").expect("query").is_none());
    }
}
