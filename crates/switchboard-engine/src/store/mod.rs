//! The durable state: one SQLite file in WAL mode, with versioned migrations.
//!
//! Everything the engine accepted lives here before it is acted on, so a crash or restart loses
//! nothing: conversations (routing key → session, delivery target), the inbound journal, in-flight
//! runs, per-session event cursors, delivery contexts, approvals with their rules and audit log,
//! de-duplication keys and channel offsets.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context as _;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::agent::Usage;
use crate::channels::Accepted;
use crate::model::{now_ms, ChatType, DeliveryTarget, InboundMessage, JournalState, Peer};
use crate::watch::WatchContext;

mod access;
mod approvals;
mod commands;
mod desktop;

pub use commands::{SessionEntry, UsageTotals};

pub use crate::approvals::policy::{ApprovalRule, Grant};
pub use approvals::{ApprovalRecord, DecisionRecord, Resolution};

/// How many parsed statements the connection keeps.
const STATEMENT_CACHE: usize = 256;

/// Statements run through the connection's statement cache: parsed once per connection instead
/// of on every call, as rusqlite's own `execute` and `query_row` do. For connections,
/// transactions and savepoints alike (they dereference to the connection).
pub(crate) trait Cached {
    /// Like `Connection::execute`.
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    /// Like `Connection::query_row`.
    fn one<T, P, F>(&self, sql: &str, params: P, row: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn one<T, P, F>(&self, sql: &str, params: P, row: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, row)
    }
}

/// How many changed rows make a background checkpoint due (about a hundred messages' worth).
const CHECKPOINT_AFTER_CHANGES: u32 = 500;
/// A log longer than this many pages (4 KiB each, so about 8 MB) is started over from its
/// beginning rather than left to grow; only steady writing with no pause makes one this long.
const LONG_LOG_FRAMES: i64 = 2_000;
/// What the log file is cut back to when it starts over (a little over [`LONG_LOG_FRAMES`]
/// pages with their frame headers): it is overwritten in place, not truncated and grown again.
const LOG_SIZE_LIMIT: i64 = (LONG_LOG_FRAMES + 100) * (4096 + 24);
/// A log this long is copied by the commit that made it so, on the writers' own path, and
/// starts over at the next: the background checkpoint was kept from restarting it in time
/// (starved of CPU under a write storm, or waiting for the writers' connection), and the log
/// must not grow without bound.
const LOG_CEILING_FRAMES: i64 = LONG_LOG_FRAMES * 3 / 2;

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
    // 5: approvals belong to one run and one call (servers that number calls per run reuse ids);
    // an answer is confirmed once the server took it; chat surfaces are stored as `chat` (the
    // approval names its channel); the audit log keeps the decider's platform id; rules can be
    // limited to a channel; "allow in this conversation" grants; a run's model is fixed when it
    // is first posted.
    r#"
    DROP INDEX approvals_by_call;
    CREATE UNIQUE INDEX approvals_by_run_call ON approvals (server_run_id, tool_call_id);
    ALTER TABLE approvals ADD COLUMN decided_by_id TEXT;
    ALTER TABLE approvals ADD COLUMN confirmed_ms INTEGER;
    ALTER TABLE approvals ADD COLUMN note TEXT;
    UPDATE approvals SET confirmed_ms = decided_ms WHERE state != 'pending';
    UPDATE approvals SET surface = 'chat'
        WHERE surface IS NOT NULL AND surface NOT IN ('window', 'notification', 'tray', 'cli', 'engine');
    ALTER TABLE decisions ADD COLUMN channel TEXT NOT NULL DEFAULT '';
    ALTER TABLE decisions ADD COLUMN decided_by_id TEXT;
    ALTER TABLE decisions ADD COLUMN note TEXT;
    UPDATE decisions SET channel = surface, surface = 'chat'
        WHERE surface NOT IN ('window', 'notification', 'tray', 'cli', 'engine');
    ALTER TABLE approval_rules ADD COLUMN channel TEXT;
    CREATE TABLE grants (
        routing_key   TEXT NOT NULL,
        session_id    TEXT NOT NULL,
        tool          TEXT NOT NULL,
        created_ms    INTEGER NOT NULL,
        created_by    TEXT NOT NULL,
        PRIMARY KEY (routing_key, session_id, tool)
    );
    ALTER TABLE runs ADD COLUMN model TEXT;
    "#,
    // 6: chat commands: a conversation's own model, the sessions it had (for /sessions and
    // /resume), and what its runs cost.
    r#"
    ALTER TABLE conversations ADD COLUMN model TEXT;
    ALTER TABLE conversations ADD COLUMN usage_runs INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE conversations ADD COLUMN usage_prompt INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE conversations ADD COLUMN usage_completion INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE conversations ADD COLUMN usage_total INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE conversations ADD COLUMN last_prompt INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE conversations ADD COLUMN last_completion INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE conversations ADD COLUMN last_total INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE conversation_sessions (
        routing_key   TEXT NOT NULL,
        session_id    TEXT NOT NULL,
        title         TEXT,
        started_ms    INTEGER NOT NULL,
        PRIMARY KEY (routing_key, session_id)
    );
    INSERT OR IGNORE INTO conversation_sessions (routing_key, session_id, title, started_ms)
        SELECT routing_key, session_id, title, created_ms FROM conversations WHERE session_id IS NOT NULL;
    "#,
    // 7: a run's reply reaches the chat turn by turn: the part already there.
    r#"
    ALTER TABLE runs ADD COLUMN streamed TEXT NOT NULL DEFAULT '';
    "#,
    // 8: a reply shown while it is written: the message that shows it, edited into the final
    // reply when the run ends.
    r#"
    ALTER TABLE runs ADD COLUMN preview TEXT;
    "#,
    // 9: the desktop chat: what its agent side said (replies, growing while written, and approval
    // prompts with their outcome).
    r#"
    CREATE TABLE desktop_messages (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        chat_id       TEXT NOT NULL,
        kind          TEXT NOT NULL,
        text          TEXT NOT NULL,
        tasks         TEXT,
        streaming     INTEGER NOT NULL DEFAULT 0,
        approval_id   TEXT,
        outcome       TEXT,
        created_ms    INTEGER NOT NULL,
        updated_ms    INTEGER NOT NULL
    );
    CREATE INDEX desktop_by_chat ON desktop_messages (chat_id, id);
    "#,
    // 10: files that come with messages: their references and what became of them, stored with
    // the message; the images a run sends the agent.
    r#"
    ALTER TABLE journal ADD COLUMN attachments TEXT;
    ALTER TABLE runs ADD COLUMN images TEXT NOT NULL DEFAULT '[]';
    "#,
];

/// How long de-duplication keys are kept: longer than any platform redelivers (Slack's last retry
/// comes after 5 minutes, Telegram keeps updates for 24 hours).
const DEDUP_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;

/// A handle on the database; cheap to clone, shared by every task.
///
/// Most calls take the connection, do their work and return (reads, and the writes made now
/// and then). The writes on every message's path go through [`Store::write`] instead: a thread
/// of its own gathers the writes that are waiting and makes them one transaction — each in a
/// savepoint of its own, so one that fails leaves the others — and answers each caller only once
/// that transaction is committed (group commit). Each caller gets the same guarantee as from a
/// transaction of its own; many conversations' writes cost one commit.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    writes: std::sync::mpsc::Sender<Job>,
}

/// A write waiting for the writer thread: run inside a savepoint of the batch's transaction, it
/// says whether it succeeded (a failure's savepoint is rolled back) and leaves what tells its
/// caller the outcome once the batch committed (or did not).
type Job = Box<dyn FnOnce(&Connection) -> (bool, Finish) + Send>;
type Finish = Box<dyn FnOnce(Result<(), String>) + Send>;

/// The most writes made one transaction.
const MAX_BATCH: usize = 512;

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
    /// Files that came with it, and what became of them.
    pub attachments: Vec<crate::model::Attachment>,
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

    fn parse(s: &str) -> Option<RunState> {
        Some(match s {
            "posting" => RunState::Posting,
            "running" => RunState::Running,
            "delivering" => RunState::Delivering,
            _ => return None,
        })
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
    /// The model override sent with the message, fixed when the run was prepared so a retry
    /// sends the same body (a changed body under the same key is refused by the server).
    pub model: Option<String>,
    /// The reply text already in the chat, sent turn by turn while the run went on (the reply's
    /// start; the rest is delivered when the run ends).
    pub streamed: String,
    /// The message that shows the reply while it is written (`streaming = "edit"`); the final
    /// reply's first part replaces it.
    pub preview: Option<String>,
    /// Images sent to the agent with the text (files saved from the messages' attachments).
    pub images: Vec<crate::media::ImagePart>,
}

impl RunRecord {
    /// A run of the conversation `routing_key` about to be posted, before its messages are
    /// added and its session is known.
    pub fn posting(local_id: String, routing_key: &str) -> RunRecord {
        RunRecord {
            local_id,
            routing_key: routing_key.to_owned(),
            session_id: String::new(),
            server_run_id: None,
            state: RunState::Posting,
            text: String::new(),
            idempotency_key: String::new(),
            cursor_start: None,
            journal_ids: Vec::new(),
            reply: None,
            delivered_chunks: 0,
            model: None,
            streamed: String::new(),
            preview: None,
            images: Vec::new(),
        }
    }
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

/// Closed sets stored as text: written with `as_str`, read back with `parse`, and a value the
/// code does not know is an error that names it — never silently read as some default.
macro_rules! text_enum_sql {
    ($($ty:ty),* $(,)?) => {$(
        impl rusqlite::types::ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl rusqlite::types::FromSql for $ty {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                let text = value.as_str()?;
                <$ty>::parse(text).ok_or_else(|| {
                    rusqlite::types::FromSqlError::Other(
                        format!("unknown {} {text:?} in the database", stringify!($ty)).into(),
                    )
                })
            }
        }
    )*};
}

text_enum_sql!(
    RunState,
    JournalState,
    crate::approvals::ApprovalState,
    crate::approvals::Surface,
    crate::access::PairingState,
);

impl Store {
    /// Runs a read query (its statement cached) and maps every row with `map`.
    fn select<T>(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
        map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> anyhow::Result<Vec<T>> {
        select_in(&self.lock(), sql, args, map)
    }

    /// Opens (creating when needed) `switchboard.sqlite` in `data_dir` and brings its schema up to
    /// date.
    pub fn open(data_dir: &Path) -> anyhow::Result<Store> {
        crate::private::private_dir(data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let path = data_dir.join("switchboard.sqlite");
        let conn =
            Connection::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let store =
            Self::init(conn).with_context(|| format!("cannot prepare {}", path.display()))?;
        // SQLite gives its -wal and -shm files the database file's mode.
        for file in [
            "switchboard.sqlite",
            "switchboard.sqlite-wal",
            "switchboard.sqlite-shm",
        ] {
            crate::private::private_file(&data_dir.join(file))
                .with_context(|| format!("cannot make {file} private"))?;
        }
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
                    conn.one(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                        r.get::<_, i64>(1)
                    })
                };
                while nudged.recv().is_ok() {
                    let result = checkpoint(&checkpointer, "PASSIVE").and_then(|frames| {
                        // A log only starts over when a writer finds it all copied, which
                        // steady writing can keep from happening. A long one is restarted by
                        // the writers' own connection, between two of their transactions (from
                        // another connection it would break their snapshots). Restarted, not
                        // truncated: the next commits overwrite the file's pages in place,
                        // where appending to a cut file made the file system allocate and zero
                        // new blocks on every write (a tenth of the CPU under load).
                        match writers.upgrade() {
                            Some(writers) if frames > LONG_LOG_FRAMES => {
                                let conn = writers.lock().unwrap_or_else(|e| e.into_inner());
                                checkpoint(&conn, "RESTART")
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
        // Every statement the store runs stays parsed (there are about a hundred; rusqlite keeps
        // 16 by default, too few: they pushed each other out and were parsed again on most calls).
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let version: i64 = conn.one("PRAGMA user_version", [], |r| r.get(0))?;
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
        // The writers never checkpoint on their own (the pragma would replace the hook below,
        // so it comes first), except to keep the log under its ceiling.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.wal_hook(Some(restart_a_log_past_its_ceiling));
        conn.pragma_update(None, "journal_size_limit", LOG_SIZE_LIMIT)?;
        let conn = Arc::new(Mutex::new(conn));
        let (writes, jobs) = std::sync::mpsc::channel::<Job>();
        let writer = Arc::downgrade(&conn);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_batches(writer, jobs))
            .context("cannot start the database writer thread")?;
        Ok(Store { conn, writes })
    }

    /// Runs `op` as part of the next group commit and returns its result once that transaction
    /// is committed (in WAL with `synchronous = NORMAL`, as every commit here: it survives the
    /// app being killed, not necessarily a power cut). `op` runs on the writer thread, in a
    /// savepoint of its own.
    pub async fn write<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let (answer, answered) = tokio::sync::oneshot::channel::<anyhow::Result<T>>();
        let job: Job = Box::new(move |conn| {
            let result = op(conn);
            let ok = result.is_ok();
            let finish: Finish = Box::new(move |committed| {
                let _ = answer.send(match committed {
                    Ok(()) => result,
                    Err(e) => Err(anyhow::anyhow!("the database could not commit: {e}")),
                });
            });
            (ok, finish)
        });
        self.writes
            .send(job)
            .map_err(|_| anyhow::anyhow!("the database writer has stopped"))?;
        answered
            .await
            .map_err(|_| anyhow::anyhow!("the database writer stopped before it answered"))?
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // rusqlite rolls back an unfinished transaction when it is dropped, so a panic on another
        // task leaves the connection consistent.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn schema_version(&self) -> anyhow::Result<i64> {
        Ok(self.lock().one("PRAGMA user_version", [], |r| r.get(0))?)
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
        let accepted = accept_in(&tx, message, routing_key, now)?;
        tx.commit()?;
        Ok(accepted)
    }

    /// [`Store::accept`] as part of a group commit.
    pub async fn accept_grouped(
        &self,
        message: InboundMessage,
        routing_key: String,
        now: i64,
    ) -> anyhow::Result<Accepted> {
        self.write(move |conn| accept_in(conn, &message, &routing_key, now))
            .await
    }

    /// Records the de-duplication keys of a message handled without being journaled (the access
    /// gate answered it itself); false when any of them was seen before, so a redelivery does
    /// not repeat what the gate did.
    pub fn claim_keys(&self, keys: &[String], now: i64) -> anyhow::Result<bool> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if keys_seen(&tx, keys)? {
            return Ok(false);
        }
        for key in keys {
            tx.exec(
                "INSERT OR IGNORE INTO dedup (key, seen_ms) VALUES (?1, ?2)",
                params![key, now],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// Whether any of these keys was recorded.
    pub fn is_duplicate(&self, keys: &[String]) -> anyhow::Result<bool> {
        let conn = self.lock();
        Ok(keys_seen(&conn, keys)?)
    }

    // ----- journal ------------------------------------------------------------------------------

    /// The queued messages of a conversation, oldest first.
    pub fn queued(&self, routing_key: &str) -> anyhow::Result<Vec<JournalEntry>> {
        self.journal_query(QUEUED, params![routing_key])
    }

    /// Every conversation that has queued messages.
    pub fn keys_with_queued(&self) -> anyhow::Result<Vec<String>> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare_cached("SELECT DISTINCT routing_key FROM journal WHERE state = 'queued'")?;
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
        journal_query_in(&self.lock(), tail, args)
    }

    /// [`Store::queued`] read on the writer's thread, between two group commits (an async
    /// caller's read then never blocks a runtime thread while a commit has the connection), with
    /// whether the conversation has a session yet.
    pub async fn queued_on_writer(&self, routing_key: &str) -> anyhow::Result<Queue> {
        let key = routing_key.to_owned();
        self.write(move |conn| queue_in(conn, &key)).await
    }

    /// What a conversation's task finds when it starts (after a restart, after an error, or
    /// after it was dropped for idling), in one trip to the writer's thread: its unfinished run,
    /// which comes first, or else its queue.
    pub async fn task_start_on_writer(&self, routing_key: &str) -> anyhow::Result<TaskStart> {
        let key = routing_key.to_owned();
        self.write(move |conn| {
            Ok(
                match runs_query_in(conn, UNFINISHED_RUN, params![key])?.pop() {
                    Some(run) => TaskStart::Unfinished(Box::new(run)),
                    None => TaskStart::Queue(queue_in(conn, &key)?),
                },
            )
        })
        .await
    }

    /// Records what became of a journal entry's attachments.
    pub fn set_journal_attachments(
        &self,
        id: i64,
        attachments: &[crate::model::Attachment],
    ) -> anyhow::Result<()> {
        self.lock().exec(
            "UPDATE journal SET attachments = ?2, updated_ms = ?3 WHERE id = ?1",
            params![id, to_json(&attachments), now_ms()],
        )?;
        Ok(())
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

    /// The conversation bound to an agent session, if any.
    pub fn conversation_with_session(
        &self,
        session_id: &str,
    ) -> anyhow::Result<Option<Conversation>> {
        Ok(self
            .conversations_query("WHERE session_id = ?1 LIMIT 1", params![session_id])?
            .pop())
    }

    /// A channel's conversations, most recently used first.
    pub fn conversations_of(&self, channel: &str) -> anyhow::Result<Vec<Conversation>> {
        self.conversations_query(
            "WHERE channel = ?1 ORDER BY last_used_ms DESC",
            params![channel],
        )
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
        let sql = format!(
            "SELECT routing_key, session_id, channel, peer, chat, target, title, created_ms, last_used_ms FROM conversations {tail}"
        );
        self.select(&sql, args, |r| {
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
        })
    }

    /// Maps a conversation to a server session (or forgets its session with `None`).
    pub fn set_session(
        &self,
        routing_key: &str,
        session_id: Option<&str>,
        title: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        set_session_in(&tx, routing_key, session_id, title)?;
        tx.commit()?;
        Ok(())
    }

    /// Gives a conversation with no session `session`, and returns the session it has now:
    /// `session`, or one stored for it meanwhile (`None` when there is no such conversation).
    pub fn set_session_if_none(
        &self,
        routing_key: &str,
        session: &str,
        title: &str,
    ) -> anyhow::Result<Option<String>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let now = set_session_if_none_in(&tx, routing_key, session, title)?;
        tx.commit()?;
        Ok(now)
    }

    /// [`Store::set_session`] for a new session, as part of a group commit.
    pub async fn set_session_grouped(
        &self,
        routing_key: &str,
        session_id: &str,
        title: &str,
    ) -> anyhow::Result<()> {
        let (key, session, title) = (
            routing_key.to_owned(),
            session_id.to_owned(),
            title.to_owned(),
        );
        self.write(move |conn| set_session_in(conn, &key, Some(&session), Some(&title)))
            .await
    }

    // ----- runs ---------------------------------------------------------------------------------

    /// Stores `run` in its conversation's session, in one group commit with the reads it needs:
    /// the session, the conversation's own model (else `default_model`; empty means the
    /// server's) and where the session's events start — `kept`, the last event read from a
    /// stream still open on that session, else the stored cursor when it is from the server's
    /// current start (`epoch`; a restarted server numbers its events from 1 again).
    ///
    /// A conversation with no session yet gets `new_session` (its id and title, just created on
    /// the server), stored with the run; its events start at the beginning. One that has a
    /// session keeps it, `new_session` or not (one created meanwhile stays unused).
    ///
    /// The run's messages must all be queued still: one dropped since the queue was read (by
    /// `/stop`, while the run waited for the server) is not sent. Then nothing of the run is
    /// stored, only `new_session` for the conversation.
    pub async fn insert_run_in_session(
        &self,
        mut run: RunRecord,
        default_model: String,
        kept: Option<(String, i64)>,
        epoch: Option<i64>,
        new_session: Option<(String, String)>,
    ) -> anyhow::Result<RunStored> {
        self.write(move |conn| {
            let (session, model): (Option<String>, Option<String>) = conn
                .one(
                    "SELECT session_id, model FROM conversations WHERE routing_key = ?1",
                    params![run.routing_key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?
                .unwrap_or_default();
            if !all_queued_in(conn, &run.journal_ids)? {
                if let (None, Some((new, title))) = (&session, &new_session) {
                    set_session_in(conn, &run.routing_key, Some(new), Some(title))?;
                }
                return Ok(RunStored::MessagesGone);
            }
            let model = model.unwrap_or(default_model);
            run.model = (!model.is_empty()).then_some(model);
            let session = match (session, new_session) {
                (Some(session), new) => {
                    if let Some((unused, _)) = new {
                        tracing::info!(conversation = %run.routing_key, %session, %unused, "the conversation has a session already; the new one stays unused");
                    }
                    session
                }
                (None, Some((session, title))) => {
                    set_session_in(conn, &run.routing_key, Some(&session), Some(&title))?;
                    run.session_id = session;
                    run.cursor_start = None;
                    insert_run_in(conn, &run)?;
                    return Ok(RunStored::Stored(run));
                }
                (None, None) => return Ok(RunStored::NoSession(run)),
            };
            run.cursor_start =
                match kept {
                    Some((kept_session, last)) if kept_session == session => Some(last),
                    _ => cursor_in(conn, &session)?.zip(epoch).and_then(
                        |((last, stored), current)| same_epoch(stored, current).then_some(last),
                    ),
                };
            run.session_id = session;
            insert_run_in(conn, &run)?;
            Ok(RunStored::Stored(run))
        })
        .await
    }

    /// A run the server started: the run as it is now, its messages sent (one group commit).
    pub async fn run_started(&self, run: RunRecord) -> anyhow::Result<()> {
        self.write(move |conn| {
            update_run_in(conn, &run)?;
            mark_journal_tx(conn, &run.journal_ids, JournalState::Sent, None)?;
            Ok(())
        })
        .await
    }

    /// A run that ended: the run as it is now (its reply to deliver), what it used, and its
    /// session's event cursor (last event id, server start time), in one group commit.
    pub async fn run_ended(
        &self,
        run: RunRecord,
        usage: Option<Usage>,
        cursor: Option<(i64, i64)>,
    ) -> anyhow::Result<()> {
        self.write(move |conn| {
            update_run_in(conn, &run)?;
            if let Some(usage) = &usage {
                commands::record_usage_in(conn, &run.routing_key, usage)?;
            }
            if let Some((last_event_id, server_epoch)) = cursor {
                set_cursor_in(conn, &run.session_id, last_event_id, server_epoch)?;
            }
            Ok(())
        })
        .await
    }

    /// Saves the fields of a run that change as it goes.
    pub fn update_run(&self, run: &RunRecord) -> anyhow::Result<()> {
        update_run_in(&self.lock(), run)
    }

    /// Records (or with `None` forgets) the message that shows a run's reply while it is written.
    pub fn set_run_preview(&self, local_id: &str, preview: Option<&str>) -> anyhow::Result<()> {
        self.lock().exec(
            "UPDATE runs SET preview = ?2, updated_ms = ?3 WHERE local_id = ?1",
            params![local_id, preview, now_ms()],
        )?;
        Ok(())
    }

    /// Records the part of a run's reply that is in the chat already.
    pub fn set_run_streamed(&self, local_id: &str, streamed: &str) -> anyhow::Result<()> {
        self.lock().exec(
            "UPDATE runs SET streamed = ?2, updated_ms = ?3 WHERE local_id = ?1",
            params![local_id, streamed, now_ms()],
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
        finish_run_in(&tx, &run.local_id, &run.journal_ids, state, error)?;
        tx.commit()?;
        Ok(())
    }

    /// [`Store::finish_run`] as part of a group commit.
    pub async fn finish_run_grouped(
        &self,
        run: &RunRecord,
        state: JournalState,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        let (local_id, journal_ids) = (run.local_id.clone(), run.journal_ids.clone());
        let error = error.map(str::to_owned);
        self.write(move |conn| {
            finish_run_in(conn, &local_id, &journal_ids, state, error.as_deref())
        })
        .await
    }

    /// Gives a run's messages back to the queue (the run could not be started) and drops the run.
    pub fn requeue_run(&self, run: &RunRecord) -> anyhow::Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        // A run not posted: its messages are queued still, unless /stop dropped them meanwhile;
        // those stay dropped.
        for id in &run.journal_ids {
            tx.exec(
                "UPDATE journal SET run_id = NULL, error = NULL, updated_ms = ?2 WHERE id = ?1 AND state = 'queued'",
                params![id, now_ms()],
            )?;
        }
        tx.exec(
            "DELETE FROM runs WHERE local_id = ?1",
            params![run.local_id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Whether every message of a run is queued still: one that is not was dropped (by `/stop`)
    /// before the run was posted, and the run is not to be.
    pub fn run_messages_queued(&self, journal_ids: &[i64]) -> anyhow::Result<bool> {
        all_queued_in(&self.lock(), journal_ids)
    }

    /// Runs not yet finished, oldest first (to resume after a restart).
    pub fn unfinished_runs(&self) -> anyhow::Result<Vec<RunRecord>> {
        self.runs_query("ORDER BY created_ms", [])
    }

    /// The unfinished run of one conversation, if any.
    pub fn unfinished_run(&self, routing_key: &str) -> anyhow::Result<Option<RunRecord>> {
        Ok(self.runs_query(UNFINISHED_RUN, params![routing_key])?.pop())
    }

    fn runs_query(
        &self,
        tail: &str,
        args: impl rusqlite::Params,
    ) -> anyhow::Result<Vec<RunRecord>> {
        runs_query_in(&self.lock(), tail, args)
    }

    // ----- event cursors ------------------------------------------------------------------------

    /// The last event id seen for a session and the server epoch it belongs to.
    pub fn cursor(&self, session_id: &str) -> anyhow::Result<Option<(i64, i64)>> {
        cursor_in(&self.lock(), session_id)
    }

    pub fn clear_cursor(&self, session_id: &str) -> anyhow::Result<()> {
        self.lock().exec(
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
        self.lock().exec(
            "INSERT INTO delivery_contexts (channel, place, context, notification, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![channel, place, to_json(context), notification, now, expires_ms],
        )?;
        Ok(())
    }

    // ----- channel offsets and meta -------------------------------------------------------------

    pub fn channel_offset(&self, channel: &str, key: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .lock()
            .one(
                "SELECT value FROM channel_offsets WHERE channel = ?1 AND key = ?2",
                params![channel, key],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn set_channel_offset(&self, channel: &str, key: &str, value: &str) -> anyhow::Result<()> {
        self.lock().exec(
            "INSERT INTO channel_offsets (channel, key, value) VALUES (?1, ?2, ?3) ON CONFLICT (channel, key) DO UPDATE SET value = ?3",
            params![channel, key, value],
        )?;
        Ok(())
    }

    /// Forgets a channel's offsets under `prefix` whose value (a time in ms) is before `before_ms`;
    /// returns how many went.
    pub fn prune_channel_offsets(
        &self,
        channel: &str,
        prefix: &str,
        before_ms: i64,
    ) -> anyhow::Result<usize> {
        Ok(self.lock().exec(
            "DELETE FROM channel_offsets WHERE channel = ?1 AND substr(key, 1, length(?2)) = ?2 AND CAST(value AS INTEGER) < ?3",
            params![channel, prefix, before_ms],
        )?)
    }

    pub fn meta(&self, key: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .lock()
            .one("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.lock().exec(
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
        let conversations = tx.exec(
            "DELETE FROM conversations WHERE last_used_ms < ?1
               AND routing_key NOT IN (SELECT routing_key FROM journal WHERE state IN ('queued', 'sent'))
               AND routing_key NOT IN (SELECT routing_key FROM runs)",
            params![now - idle_ms],
        )?;
        tx.exec(
            "DELETE FROM conversation_sessions WHERE routing_key NOT IN (SELECT routing_key FROM conversations)",
            [],
        )?;
        let journal = tx.exec(
            "DELETE FROM journal WHERE state IN ('replied', 'failed') AND updated_ms < ?1",
            params![now - retention_ms],
        )?;
        let decisions = tx.exec(
            "DELETE FROM decisions WHERE at_ms < ?1",
            params![now - retention_ms],
        )?;
        // The desktop chat's side is kept as long as the journal keeps the person's side.
        tx.exec(
            "DELETE FROM desktop_messages WHERE streaming = 0 AND updated_ms < ?1",
            params![now - retention_ms],
        )?;
        tx.exec(
            "DELETE FROM approvals WHERE state != 'pending' AND confirmed_ms IS NOT NULL AND decided_ms < ?1",
            params![now - retention_ms],
        )?;
        let contexts = tx.exec(
            "DELETE FROM delivery_contexts WHERE expires_ms <= ?1 OR consumed_ms IS NOT NULL",
            params![now],
        )?;
        let dedup = tx.exec(
            "DELETE FROM dedup WHERE seen_ms < ?1",
            params![now - DEDUP_RETENTION_MS],
        )?;
        // Pairing requests that ended or expired are kept a while for the window's history.
        tx.exec(
            "DELETE FROM pairing_requests WHERE expires_ms < ?1 OR (state != 'pending' AND created_ms < ?1)",
            params![now - retention_ms.min(7 * 86_400_000)],
        )?;
        tx.exec(
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

/// How long a commit that took the log to its ceiling waits, at most, for a checkpoint running
/// elsewhere (the background one, or another process's) to finish so that it can copy the log.
const CEILING_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// Called after each commit with the log's length in pages: copies a log that has reached
/// [`LOG_CEILING_FRAMES`] into the database, which the background checkpoint (see
/// [`Store::checkpoint_in_background`]) normally does long before. It runs between this
/// connection's transactions, so nothing is written meanwhile and the copy is whole: the next
/// commit starts the log over from its beginning, as SQLite's own automatic checkpoint does.
///
/// Passive, so it never waits for a reader (another process reading an older snapshot keeps
/// part of the log; the copy does what it can). But while the background checkpoint is copying
/// (it holds the checkpoint lock, and a second checkpoint is refused at once) this commit waits
/// for it, up to [`CEILING_WAIT`], then copies what is left: the writers are held back while
/// the log is at its ceiling, which is what bounds it under a write storm. This commit pays for
/// the copy and the database file's sync. The commit has happened whatever the checkpoint does:
/// an error here is logged, not returned (SQLite would report it as the commit's, and its writes
/// would be taken for lost).
fn restart_a_log_past_its_ceiling(
    wal: &rusqlite::hooks::Wal,
    pages: std::ffi::c_int,
) -> rusqlite::Result<()> {
    if i64::from(pages) < LOG_CEILING_FRAMES {
        return Ok(());
    }
    let give_up = std::time::Instant::now() + CEILING_WAIT;
    loop {
        match wal.checkpoint_v2(rusqlite::hooks::CheckpointMode::PASSIVE) {
            Ok((log, copied)) if log == copied => {
                tracing::debug!(pages, "the log reached its ceiling: copied, it starts over")
            }
            Ok((log, copied)) => {
                tracing::debug!(
                    log,
                    copied,
                    "the log reached its ceiling; a reader keeps part of it"
                )
            }
            Err(error) if error.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
                if std::time::Instant::now() < give_up {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    continue;
                }
                tracing::debug!(
                    pages,
                    "the log reached its ceiling while another checkpoint runs"
                )
            }
            Err(error) => {
                tracing::warn!(%error, "the log reached its ceiling and could not be copied")
            }
        }
        return Ok(());
    }
}

/// The writer thread: takes every write waiting, runs each in a savepoint of one transaction,
/// commits once, then answers them all. Ends when the last `Store` is gone.
fn write_batches(conn: std::sync::Weak<Mutex<Connection>>, jobs: std::sync::mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let Some(conn) = conn.upgrade() else {
            return;
        };
        let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut finishes = Vec::with_capacity(batch.len());
        let committed = (|| -> rusqlite::Result<()> {
            let mut tx =
                conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for job in batch.drain(..) {
                let savepoint = tx.savepoint()?;
                // A write that panics is one that failed; the thread goes on for the others.
                let ran =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&savepoint)));
                let Ok((ok, finish)) = ran else {
                    tracing::error!("a database write panicked; it is rolled back");
                    continue;
                };
                finishes.push(finish);
                if ok {
                    savepoint.commit()?;
                } else {
                    drop(savepoint);
                }
                // A failed write's savepoint rolls back when dropped; the others stand.
                if tx.is_autocommit() {
                    // SQLite gave up the whole transaction (disk full, I/O error): nothing of
                    // this batch was written, and no write after this one would be either.
                    return Err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                        Some("the database abandoned the transaction".into()),
                    ));
                }
            }
            tx.commit()
        })();
        drop(conn);
        let outcome = committed.map_err(|e| e.to_string());
        if let Err(e) = &outcome {
            tracing::error!(error = %e, writes = finishes.len(), "a group of database writes failed");
        }
        for finish in finishes {
            finish(outcome.clone());
        }
        // Writes whose turn never came (a savepoint failed) are dropped: their callers hear that
        // the writer stopped before it answered.
    }
}

/// Runs a read query on `conn` (its statement cached) and maps every row with `map`.
fn select_in<T>(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
    map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> anyhow::Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(args, map)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// A conversation's queued messages, oldest first.
const QUEUED: &str = "WHERE routing_key = ?1 AND state = 'queued' ORDER BY id";
/// A conversation's queued messages, and whether it has a session yet (so that its first run
/// creates one without asking the store first).
#[derive(Debug)]
pub struct Queue {
    pub rows: Vec<JournalEntry>,
    pub has_session: bool,
}

/// What [`Store::insert_run_in_session`] did with a run.
#[derive(Debug)]
pub enum RunStored {
    /// Stored, as it is now: its session, model and cursor set.
    Stored(RunRecord),
    /// Not stored: the conversation has no session and none was given (its model is set).
    NoSession(RunRecord),
    /// Not stored: one of its messages is no longer queued.
    MessagesGone,
}

/// What a conversation's task starts with: see [`Store::task_start_on_writer`].
#[derive(Debug)]
pub enum TaskStart {
    Unfinished(Box<RunRecord>),
    Queue(Queue),
}

/// [`Queue`], on `conn`.
fn queue_in(conn: &Connection, routing_key: &str) -> anyhow::Result<Queue> {
    let rows = journal_query_in(conn, QUEUED, params![routing_key])?;
    let has_session = !rows.is_empty()
        && conn
            .one(
                "SELECT session_id IS NOT NULL FROM conversations WHERE routing_key = ?1",
                params![routing_key],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(false);
    Ok(Queue { rows, has_session })
}

/// A conversation's unfinished run (there is at most one).
const UNFINISHED_RUN: &str = "WHERE routing_key = ?1 ORDER BY created_ms LIMIT 1";

/// Runs selected by `tail` (a `WHERE`/`ORDER BY` clause), on `conn`.
fn runs_query_in(
    conn: &Connection,
    tail: &str,
    args: impl rusqlite::Params,
) -> anyhow::Result<Vec<RunRecord>> {
    let sql = format!(
        "SELECT local_id, routing_key, session_id, server_run_id, state, text, idempotency_key, cursor_start, journal_ids, reply, delivered_chunks, model, streamed, preview, images
         FROM runs {tail}"
    );
    select_in(conn, &sql, args, |r| {
        Ok(RunRecord {
            local_id: r.get(0)?,
            routing_key: r.get(1)?,
            session_id: r.get(2)?,
            server_run_id: r.get(3)?,
            state: r.get(4)?,
            text: r.get(5)?,
            idempotency_key: r.get(6)?,
            cursor_start: r.get(7)?,
            journal_ids: from_json(&r.get::<_, String>(8)?)?,
            reply: r.get(9)?,
            delivered_chunks: r.get::<_, i64>(10)? as usize,
            model: r.get(11)?,
            streamed: r.get(12)?,
            preview: r.get(13)?,
            images: from_json(&r.get::<_, String>(14)?)?,
        })
    })
}

/// Journal entries selected by `tail` (a `WHERE`/`ORDER BY` clause), on `conn`.
fn journal_query_in(
    conn: &Connection,
    tail: &str,
    args: impl rusqlite::Params,
) -> anyhow::Result<Vec<JournalEntry>> {
    let sql = format!(
        "SELECT id, channel, routing_key, peer, chat, target, text, context, state, run_id, error, created_ms, updated_ms, attachments FROM journal {tail}"
    );
    select_in(conn, &sql, args, |r| {
        let context: Option<String> = r.get(7)?;
        Ok(JournalEntry {
            id: r.get(0)?,
            channel: r.get(1)?,
            routing_key: r.get(2)?,
            peer: from_json(&r.get::<_, String>(3)?)?,
            chat: from_json(&r.get::<_, String>(4)?)?,
            target: from_json(&r.get::<_, String>(5)?)?,
            text: r.get(6)?,
            context: context.as_deref().map(from_json).transpose()?,
            state: r.get(8)?,
            run_id: r.get(9)?,
            error: r.get(10)?,
            created_ms: r.get(11)?,
            updated_ms: r.get(12)?,
            attachments: r
                .get::<_, Option<String>>(13)?
                .as_deref()
                .map(from_json)
                .transpose()?
                .unwrap_or_default(),
        })
    })
}

/// A session's stored event cursor: the last event id seen and the server start it belongs to.
fn cursor_in(conn: &Connection, session_id: &str) -> anyhow::Result<Option<(i64, i64)>> {
    Ok(conn
        .one(
            "SELECT last_event_id, server_epoch FROM cursors WHERE session_id = ?1",
            params![session_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// Two server start times within a few seconds are the same start (uptime is whole seconds).
pub(crate) fn same_epoch(a: i64, b: i64) -> bool {
    a.abs_diff(b) <= 3
}

/// Records a new run and ties its journal entries to it.
fn insert_run_in(tx: &Connection, run: &RunRecord) -> anyhow::Result<()> {
    let now = now_ms();
    tx.exec(
            "INSERT INTO runs (local_id, routing_key, session_id, server_run_id, state, text, idempotency_key, cursor_start, journal_ids, reply, delivered_chunks, created_ms, updated_ms, model, streamed, preview, images)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?13, ?14, ?15, ?16)",
            params![
                run.local_id,
                run.routing_key,
                run.session_id,
                run.server_run_id,
                run.state,
                run.text,
                run.idempotency_key,
                run.cursor_start,
                to_json(&run.journal_ids),
                run.reply,
                run.delivered_chunks as i64,
                now,
                run.model,
                run.streamed,
                run.preview,
                to_json(&run.images)
            ],
        )?;
    for id in &run.journal_ids {
        tx.exec(
            "UPDATE journal SET run_id = ?1, updated_ms = ?2 WHERE id = ?3",
            params![run.local_id, now, id],
        )?;
    }
    Ok(())
}

/// The body of [`Store::update_run`].
fn update_run_in(conn: &Connection, run: &RunRecord) -> anyhow::Result<()> {
    conn.exec(
            "UPDATE runs SET session_id = ?2, server_run_id = ?3, state = ?4, text = ?5, idempotency_key = ?6, cursor_start = ?7,
                 reply = ?8, delivered_chunks = ?9, journal_ids = ?10, updated_ms = ?11, model = ?12, streamed = ?13, preview = ?14, images = ?15 WHERE local_id = ?1",
            params![
                run.local_id,
                run.session_id,
                run.server_run_id,
                run.state,
                run.text,
                run.idempotency_key,
                run.cursor_start,
                run.reply,
                run.delivered_chunks as i64,
                to_json(&run.journal_ids),
                now_ms(),
                run.model,
                run.streamed,
                run.preview,
                to_json(&run.images)
            ],
        )?;
    Ok(())
}

/// Whether every one of the journal entries `ids` is queued still.
fn all_queued_in(conn: &Connection, ids: &[i64]) -> anyhow::Result<bool> {
    for id in ids {
        let state: Option<JournalState> = conn
            .one("SELECT state FROM journal WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        if state != Some(JournalState::Queued) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Gives a conversation with no session `session` (titled `title`), and returns the session it
/// has now: `session`, or the one it had.
fn set_session_if_none_in(
    conn: &Connection,
    routing_key: &str,
    session: &str,
    title: &str,
) -> anyhow::Result<Option<String>> {
    let current: Option<Option<String>> = conn
        .one(
            "SELECT session_id FROM conversations WHERE routing_key = ?1",
            [routing_key],
            |r| r.get(0),
        )
        .optional()?;
    match current {
        None => Ok(None),
        Some(Some(current)) => Ok(Some(current)),
        Some(None) => {
            set_session_in(conn, routing_key, Some(session), Some(title))?;
            Ok(Some(session.to_owned()))
        }
    }
}

fn set_session_in(
    conn: &Connection,
    routing_key: &str,
    session_id: Option<&str>,
    title: Option<&str>,
) -> anyhow::Result<()> {
    conn.exec(
        "UPDATE conversations SET session_id = ?2, title = COALESCE(?3, title) WHERE routing_key = ?1",
        params![routing_key, session_id, title],
    )?;
    if let Some(session) = session_id {
        // The conversation's sessions, for /sessions and /resume.
        conn.exec(
            "INSERT INTO conversation_sessions (routing_key, session_id, title, started_ms)
             SELECT routing_key, session_id, title, ?3 FROM conversations WHERE routing_key = ?1 AND session_id = ?2
             ON CONFLICT (routing_key, session_id) DO NOTHING",
            params![routing_key, session, now_ms()],
        )?;
    }
    Ok(())
}

fn finish_run_in(
    tx: &Connection,
    local_id: &str,
    journal_ids: &[i64],
    state: JournalState,
    error: Option<&str>,
) -> anyhow::Result<()> {
    mark_journal_tx(tx, journal_ids, state, error)?;
    tx.exec("DELETE FROM runs WHERE local_id = ?1", params![local_id])?;
    Ok(())
}

fn set_cursor_in(
    conn: &Connection,
    session_id: &str,
    last_event_id: i64,
    server_epoch: i64,
) -> anyhow::Result<()> {
    conn.exec(
        "INSERT INTO cursors (session_id, last_event_id, server_epoch) VALUES (?1, ?2, ?3)
         ON CONFLICT (session_id) DO UPDATE SET last_event_id = ?2, server_epoch = ?3",
        params![session_id, last_event_id, server_epoch],
    )?;
    Ok(())
}

/// The body of [`Store::accept`], in a transaction (or savepoint) the caller holds.
fn accept_in(
    tx: &Connection,
    message: &InboundMessage,
    routing_key: &str,
    now: i64,
) -> anyhow::Result<Accepted> {
    if keys_seen(tx, &message.dedup_keys)? {
        return Ok(Accepted::Duplicate);
    }
    for key in &message.dedup_keys {
        tx.exec(
            "INSERT OR IGNORE INTO dedup (key, seen_ms) VALUES (?1, ?2)",
            params![key, now],
        )?;
    }
    tx.exec(
        "INSERT INTO conversations (routing_key, channel, peer, chat, target, created_ms, last_used_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
         ON CONFLICT (routing_key) DO UPDATE SET channel = ?2, peer = CASE WHEN ?7 THEN peer ELSE ?3 END,
           chat = ?4, target = ?5, last_used_ms = ?6",
        params![
            routing_key,
            message.channel,
            to_json(&message.peer),
            to_json(&message.chat),
            to_json(&message.target),
            now,
            // The person at this machine writing into a chat's conversation (a reply typed
            // into a notification) does not become the person that conversation is with.
            message.peer.id == crate::channels::desktop::LOCAL_PEER_ID,
        ],
    )?;
    let context: Option<(i64, String, String)> = tx
        .one(
            "SELECT id, context, notification FROM delivery_contexts
             WHERE channel = ?1 AND place = ?2 AND consumed_ms IS NULL AND expires_ms > ?3
             ORDER BY id DESC LIMIT 1",
            params![message.channel, message.target.place_key(), now],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let consumed = match context {
        Some((id, context, notification)) => {
            tx.exec(
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
    tx.exec(
        "INSERT INTO journal (channel, routing_key, peer, chat, target, text, context, state, created_ms, updated_ms, attachments)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?8, ?9)",
        params![
            message.channel,
            routing_key,
            to_json(&message.peer),
            to_json(&message.chat),
            to_json(&message.target),
            message.text,
            consumed,
            now,
            (!message.attachments.is_empty()).then(|| to_json(&message.attachments))
        ],
    )?;
    let id = tx.last_insert_rowid();
    Ok(Accepted::New(id))
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
    tx: &Connection,
    ids: &[i64],
    state: JournalState,
    error: Option<&str>,
) -> rusqlite::Result<()> {
    let now = now_ms();
    let mut stmt = tx.prepare_cached(
        "UPDATE journal SET state = ?1, error = ?2, updated_ms = ?3 WHERE id = ?4",
    )?;
    for id in ids {
        stmt.execute(params![state, error, now, id])?;
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
            attachments: Vec::new(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grouped_writes_each_land_once_and_a_failing_one_takes_no_other_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let mut writes = Vec::new();
        for i in 0..200 {
            let store = store.clone();
            writes.push(tokio::spawn(async move {
                let message = message(&i.to_string(), &format!("message {i}"));
                store.accept_grouped(message, format!("k{i}"), 1).await
            }));
        }
        // A write that fails half way (the second statement is not SQL) in the same batches.
        let failing = store.write(|conn| {
            conn.exec("INSERT INTO meta (key, value) VALUES ('half', 'way')", [])?;
            conn.exec("NOT SQL", [])?;
            Ok(())
        });
        assert!(failing.await.is_err(), "a failing write says so");
        let mut ids = Vec::new();
        for write in writes {
            match write.await.expect("task").expect("accept") {
                Accepted::New(id) => ids.push(id),
                other => panic!("a new message was taken for {other:?}"),
            }
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 200, "each message has a row of its own");
        // The same message again is a duplicate, grouped or not.
        let again = store
            .accept_grouped(message("7", "message 7"), "k7".into(), 2)
            .await
            .expect("accept");
        assert_eq!(again, Accepted::Duplicate);
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        let queued: usize = (0..200)
            .map(|i| store.queued(&format!("k{i}")).expect("queued").len())
            .sum();
        assert_eq!(queued, 200, "every write survived");
        assert_eq!(
            store.meta("half").expect("meta"),
            None,
            "the failed write left nothing"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_is_stored_in_its_session_with_the_model_and_the_cursor_read_in_its_commit() {
        let store = Store::open_in_memory().expect("store");
        let Accepted::New(id) = store.accept(&message("1", "hi"), "k", 1).expect("accept") else {
            panic!("a new message");
        };
        let run = RunRecord {
            text: "hi".into(),
            idempotency_key: "i1".into(),
            journal_ids: vec![id],
            ..RunRecord::posting("r1".into(), "k")
        };
        // Each later run has a message of its own, queued: a run is stored only with those.
        let fresh = |local_id: &'static str| {
            let Accepted::New(id) = store
                .accept(&message(local_id, local_id), "k", 1)
                .expect("accept")
            else {
                panic!("a new message");
            };
            RunRecord {
                text: local_id.into(),
                idempotency_key: local_id.into(),
                journal_ids: vec![id],
                ..RunRecord::posting(local_id.into(), "k")
            }
        };
        let insert = |run: RunRecord, kept: Option<(&str, i64)>, epoch: Option<i64>| {
            let kept = kept.map(|(s, id)| (s.to_owned(), id));
            store.insert_run_in_session(run, "default-model".into(), kept, epoch, None)
        };
        // No session yet: nothing is stored, and the run comes back with the default model.
        let unstored = insert(run.clone(), None, Some(1_000)).await.expect("write");
        let RunStored::NoSession(unstored) = unstored else {
            panic!("no session, so not stored: {unstored:?}");
        };
        assert_eq!(unstored.model.as_deref(), Some("default-model"));
        assert!(store.unfinished_run("k").expect("read").is_none());
        let queue = store.queued_on_writer("k").await.expect("queue");
        assert_eq!((queue.rows.len(), queue.has_session), (1, false));

        // With a session just created for it, the run is stored in it, from its first event.
        let first = RunRecord {
            local_id: "r0".into(),
            ..run.clone()
        };
        let first = store
            .insert_run_in_session(
                first,
                "default-model".into(),
                Some(("s0".into(), 5)),
                Some(1_000),
                Some(("s1".into(), "title".into())),
            )
            .await
            .expect("write");
        let first = stored(first);
        assert_eq!(
            (first.session_id.as_str(), first.cursor_start),
            ("s1", None)
        );
        assert_eq!(
            store
                .conversation("k")
                .expect("read")
                .and_then(|c| c.session_id),
            Some("s1".into())
        );
        assert!(matches!(
            store.task_start_on_writer("k").await.expect("start"),
            TaskStart::Unfinished(unfinished) if *unfinished == first
        ));
        store
            .finish_run(&first, JournalState::Replied, None)
            .expect("finish");
        // A session created for it meanwhile does not replace the one it has.
        let late = store
            .insert_run_in_session(
                fresh("r00"),
                "default-model".into(),
                None,
                Some(1_000),
                Some(("s9".into(), "other".into())),
            )
            .await
            .expect("write");
        let late = stored(late);
        assert_eq!(late.session_id, "s1");
        store
            .finish_run(&late, JournalState::Replied, None)
            .expect("finish");
        assert!(matches!(
            store.task_start_on_writer("k").await.expect("start"),
            TaskStart::Queue(Queue { rows, .. }) if rows.is_empty()
        ));

        store
            .set_session("k", Some("s1"), Some("title"))
            .expect("session");
        store
            .set_conversation_model("k", Some("own-model"))
            .expect("model");
        store
            .write(|conn| set_cursor_in(conn, "s1", 42, 1_000))
            .await
            .expect("cursor");
        // The stored cursor counts while the server has not restarted since.
        let inserted = insert(fresh("r1"), None, Some(1_002)).await;
        let inserted = stored(inserted.expect("write"));
        assert_eq!(
            (
                inserted.session_id.as_str(),
                inserted.model.as_deref(),
                inserted.cursor_start
            ),
            ("s1", Some("own-model"), Some(42))
        );
        assert_eq!(
            store.unfinished_run("k").expect("read"),
            Some(inserted.clone())
        );
        store
            .finish_run(&inserted, JournalState::Replied, None)
            .expect("finish");
        // A restarted server numbers its events anew: the old cursor is no place to start.
        let restarted = stored(insert(fresh("r2"), None, Some(9_000)).await.expect("write"));
        assert_eq!(restarted.cursor_start, None);
        store
            .finish_run(&restarted, JournalState::Replied, None)
            .expect("finish");
        // A stream kept open on the session knows better; one on another session does not.
        let kept = stored(
            insert(fresh("r3"), Some(("s1", 57)), Some(1_000))
                .await
                .expect("write"),
        );
        assert_eq!(kept.cursor_start, Some(57));
        store
            .finish_run(&kept, JournalState::Replied, None)
            .expect("finish");
        let other = stored(
            insert(fresh("r4"), Some(("s0", 99)), Some(1_000))
                .await
                .expect("write"),
        );
        assert_eq!(other.cursor_start, Some(42));
        store
            .finish_run(&other, JournalState::Replied, None)
            .expect("finish");

        // A message dropped (by /stop) while its run was prepared: nothing of the run is
        // stored, and it is never sent; a session created for it is kept all the same.
        let dropped = fresh("r5");
        assert_eq!(store.drop_queued("k", "stopped", &[]).expect("drop"), 1);
        store.set_session("k", None, None).expect("no session");
        let gone = store
            .insert_run_in_session(
                dropped,
                "default-model".into(),
                None,
                Some(1_000),
                Some(("s5".into(), "title".into())),
            )
            .await
            .expect("write");
        assert!(matches!(gone, RunStored::MessagesGone), "{gone:?}");
        assert!(store.unfinished_run("k").expect("read").is_none());
        assert_eq!(
            store
                .conversation("k")
                .expect("read")
                .and_then(|c| c.session_id),
            Some("s5".into())
        );
    }

    #[test]
    fn a_session_is_given_only_to_a_conversation_without_one() {
        let store = Store::open_in_memory().expect("store");
        assert_eq!(
            store.set_session_if_none("k", "s1", "t").expect("write"),
            None,
            "no such conversation"
        );
        store.accept(&message("1", "hi"), "k", 1).expect("accept");
        assert_eq!(
            store.set_session_if_none("k", "s1", "t").expect("write"),
            Some("s1".into())
        );
        assert_eq!(
            store.set_session_if_none("k", "s2", "t").expect("write"),
            Some("s1".into()),
            "the session it has is kept"
        );
        let conversation = store.conversation("k").expect("read").expect("stored");
        assert_eq!(conversation.session_id.as_deref(), Some("s1"));
    }

    /// The run [`Store::insert_run_in_session`] stored.
    fn stored(outcome: RunStored) -> RunRecord {
        match outcome {
            RunStored::Stored(run) => run,
            other => panic!("the run was not stored: {other:?}"),
        }
    }

    #[test]
    fn server_epochs_within_a_few_seconds_are_one_start() {
        assert!(same_epoch(100, 103));
        assert!(!same_epoch(100, 110));
    }

    #[test]
    fn the_log_is_checkpointed_in_the_background_so_it_stays_small() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let wal = dir.path().join("switchboard.sqlite-wal");
        // Writing without a pause keeps the log from starting over by itself; 40,000 commits
        // would make it about 80 MB if it were never restarted (the writers themselves only
        // checkpoint at the ceiling). Restarted, it stays near its limit, and under the ceiling
        // however late the background checkpoint runs.
        for i in 0..40_000 {
            store.set_meta("counter", &i.to_string()).expect("write");
        }
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        assert!(
            size < 2 * LOG_SIZE_LIMIT as u64,
            "the log grew to {size} bytes"
        );
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(
            store.meta("counter").expect("read").as_deref(),
            Some("39999")
        );
    }

    #[test]
    fn a_log_the_background_checkpoint_cannot_keep_short_starts_over_at_its_ceiling() {
        // A store with no checkpoint thread at all, as when that thread gets no CPU: the
        // writers' commits alone keep the log under its ceiling, and nothing is lost.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("switchboard.sqlite");
        let store = Store::init(Connection::open(&path).expect("open")).expect("store");
        for i in 0..10_000 {
            store.set_meta("counter", &i.to_string()).expect("write");
        }
        let wal = std::fs::metadata(dir.path().join("switchboard.sqlite-wal")).expect("log");
        // Each commit here adds one page; with the file's header, one page more at most.
        let ceiling = 32 + (LOG_CEILING_FRAMES as u64 + 1) * (4096 + 24);
        assert!(
            wal.len() <= ceiling,
            "the log grew to {} bytes, past its ceiling of {ceiling}",
            wal.len()
        );
        assert!(
            wal.len() > ceiling / 2,
            "the log started over long before its ceiling ({} bytes): something else checkpointed",
            wal.len()
        );
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(
            store.meta("counter").expect("read").as_deref(),
            Some("9999")
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

    #[cfg(unix)]
    #[test]
    fn the_data_directory_and_database_are_the_users_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let store = Store::open(&data).expect("open");
        store
            .accept(&message("1", "secret plans"), "k", 1000)
            .expect("accept");
        let mode = |name: &str| {
            std::fs::metadata(data.join(name))
                .expect("meta")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(""), 0o700);
        assert_eq!(mode("switchboard.sqlite"), 0o600);
        assert_eq!(
            mode("switchboard.sqlite-wal"),
            0o600,
            "SQLite copies the mode"
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
