//! The conversation scheduler: one task per conversation that finishes what was in flight, then
//! turns its queue into runs, one at a time; the session behind each conversation; and how to
//! wait after the agent server failed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::kept::{self, KeptStream};
use super::Dispatcher;
use crate::agent::AgentError;
use crate::backoff;
use crate::events::{EngineEvent, ServerHealth};
use crate::model::now_ms;
use crate::routing::session_title;
use crate::store::{same_epoch, JournalEntry, Queue, RunRecord, RunStored, TaskStart};
use crate::watch::enrich;

/// After a failed ask for the server's start time, how long callers go on without it.
const EPOCH_ASK_AGAIN: Duration = Duration::from_secs(1);

/// How long an idle conversation task lives before it is dropped (it is recreated on demand).
const CONVERSATION_IDLE: Duration = Duration::from_secs(600);

impl Dispatcher {
    /// Makes sure the conversation's task runs and tells it to look at its queue.
    pub(crate) fn wake(self: &Arc<Self>, key: &str) {
        let mut conversations = self.conversations.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = conversations.get(key) {
            if tx.send(()).is_ok() {
                return;
            }
        }
        if self.shutdown.is_cancelled() {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(());
        conversations.insert(key.to_string(), tx);
        let this = Arc::clone(self);
        let key = key.to_string();
        self.tasks
            .spawn(async move { this.conversation(key, rx).await });
    }

    /// Starts the conversations that have work left from before a restart.
    pub(crate) fn resume_all(self: &Arc<Self>) -> anyhow::Result<()> {
        let mut keys: Vec<String> = self
            .store
            .unfinished_runs()?
            .into_iter()
            .map(|r| r.routing_key)
            .collect();
        keys.extend(self.store.keys_with_queued()?);
        keys.sort();
        keys.dedup();
        for key in keys {
            self.wake(&key);
        }
        Ok(())
    }

    async fn conversation(self: Arc<Self>, key: String, mut rx: mpsc::UnboundedReceiver<()>) {
        let mut paused = self.paused.subscribe();
        // The event stream of the conversation's last run, while it is worth keeping.
        let mut kept: Option<KeptStream> = None;
        // Whether a run of the conversation may be unfinished in the store: one from before a
        // restart when the task starts, or one an error left. A run this task drives ends
        // finished (or back in the queue) unless the engine stops or something fails.
        let mut unfinished = true;
        loop {
            // Finish what was in flight before a restart first, then make the queue one run;
            // messages that come meanwhile wake the task again.
            let worked = self.work(&key, &mut paused, &mut kept, unfinished).await;
            unfinished = worked.is_err();
            if let Err(e) = worked {
                tracing::error!(conversation = %key, error = %format!("{e:#}"), "conversation failed; will retry");
                self.emit(EngineEvent::Error {
                    scope: key.clone(),
                    message: format!("{e:#}"),
                });
                tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                }
            }
            if self.shutdown.is_cancelled() {
                return;
            }
            let idle = tokio::time::sleep(CONVERSATION_IDLE);
            tokio::pin!(idle);
            loop {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    woke = rx.recv() => if woke.is_none() { return } else { break },
                    _ = &mut idle => {
                        let mut conversations = self.conversations.lock().unwrap_or_else(|e| e.into_inner());
                        // Under the lock no wake can slip in between this check and the removal.
                        if rx.is_empty() {
                            conversations.remove(&key);
                            return;
                        }
                        break;
                    }
                    () = kept::lapsed(&mut kept) => kept = None,
                }
            }
        }
    }

    async fn work(
        self: &Arc<Self>,
        key: &str,
        paused: &mut watch::Receiver<bool>,
        kept: &mut Option<KeptStream>,
        unfinished: bool,
    ) -> anyhow::Result<()> {
        // The queue as read with the unfinished run, when there was none.
        let mut queue = None;
        if unfinished {
            match self.store.task_start_on_writer(key).await? {
                TaskStart::Unfinished(run) => self.drive(*run, None, kept).await?,
                TaskStart::Queue(read) => queue = Some(read),
            }
        }
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            // Paused means: keep storing, start nothing. Runs already in flight finish.
            while *paused.borrow_and_update() {
                queue = None;
                tokio::select! {
                    _ = self.shutdown.cancelled() => return Ok(()),
                    _ = paused.changed() => {}
                }
            }
            let Queue {
                mut rows,
                has_session,
            } = match queue.take() {
                Some(read) => read,
                None => self.store.queued_on_writer(key).await?,
            };
            if rows.is_empty() {
                return Ok(());
            }
            // From here the conversation is busy: a message that comes now waits for this run
            // (and is told so), though the run is not in flight until it is prepared.
            let _preparing = Preparing::new(self, key, &rows);
            // The files that came with the messages, fetched before the run that needs them.
            if !self.fetch_queued(key, &mut rows).await? {
                return Ok(());
            }
            if rows.is_empty() {
                continue;
            }
            let run = match self
                .prepare_run(key, &rows, kept.as_mut(), has_session)
                .await?
            {
                Prepared::Run(run) => *run,
                Prepared::Stopped => return Ok(()),
                // A message was dropped meanwhile (`/stop`): what is queued now is the run.
                Prepared::QueueChanged => continue,
            };
            self.drive(run, Some(rows), kept).await?;
            // Every message that came during the run woke this task, so the next pass (right
            // away, if one did) finds it; reading the queue now would mostly find it empty.
            return Ok(());
        }
    }

    /// Turns queued messages into a stored run in `Posting` state, creating the session if needed
    /// (`has_session`: whether the conversation had one when its queue was read). The message's
    /// body (text and model) and its idempotency key are fixed here, so every retry of the POST
    /// sends exactly the same request. Returns [`Prepared::Stopped`] when the engine is stopping
    /// or the server refuses us (the messages stay queued).
    async fn prepare_run(
        self: &Arc<Self>,
        key: &str,
        rows: &[JournalEntry],
        // Mutable only so the future stays `Send` (a stream is not `Sync`).
        kept: Option<&mut KeptStream>,
        has_session: bool,
    ) -> anyhow::Result<Prepared> {
        let mut run = RunRecord::posting(uuid::Uuid::new_v4().to_string(), key);
        absorb(&mut run, rows);
        // The stream kept from the conversation's last run knows where its session's events
        // are (the run posts on it); the server's start time tells a stored cursor's worth. A
        // new session has no cursor, so its first run does not wait for that answer (without
        // it, a session that appears meanwhile is followed from the run's first event).
        let kept = kept.and_then(|k| k.position(self.server_generation()));
        // A new session is stored with the run, in its commit. It has no events yet (the server
        // replays the same session for the same first message, and nothing was posted to it
        // before its run was stored): its stream starts at the beginning.
        let (epoch, new_session) = if has_session {
            (self.server_epoch().await, None)
        } else {
            let Some(created) = self.create_session(key, rows).await? else {
                return Ok(Prepared::Stopped);
            };
            (None, Some(created))
        };
        let default_model = self.config().gateway.model.clone();
        // The session, the model and the cursor are read in the commit that stores the run.
        let stored = self
            .store
            .insert_run_in_session(run, default_model, kept, epoch, new_session)
            .await?;
        let stored = match stored {
            // The session went since the queue was read (a new one was asked for): create it.
            RunStored::NoSession(run) => {
                let Some(created) = self.create_session(key, rows).await? else {
                    return Ok(Prepared::Stopped);
                };
                let default_model = self.config().gateway.model.clone();
                self.store
                    .insert_run_in_session(run, default_model, None, epoch, Some(created))
                    .await?
            }
            stored => stored,
        };
        match stored {
            RunStored::Stored(run) => Ok(Prepared::Run(Box::new(run))),
            RunStored::MessagesGone => {
                tracing::info!(conversation = %key, "a message of the run was dropped while it was prepared; reading the queue again");
                Ok(Prepared::QueueChanged)
            }
            RunStored::NoSession(_) => {
                anyhow::bail!("a run with its new session was not stored")
            }
        }
    }

    /// The session of a conversation (`known`, the one it has), created on first use with a
    /// title from the template and stored.
    pub(super) async fn ensure_session(
        self: &Arc<Self>,
        key: &str,
        rows: &[JournalEntry],
        known: Option<String>,
    ) -> anyhow::Result<Option<String>> {
        if let Some(session) = known {
            return Ok(Some(session));
        }
        let Some((session, title)) = self.create_session(key, rows).await? else {
            return Ok(None);
        };
        self.store
            .set_session_grouped(key, &session, &title)
            .await?;
        Ok(Some(session))
    }

    /// Creates a session for a conversation whose first queued message is `rows[0]`, titled
    /// from the template, and returns its id and title (not stored yet). Keyed on that message,
    /// so a retry after a crash gets the same session back, never a second one. `None` when the
    /// engine is stopping.
    async fn create_session(
        self: &Arc<Self>,
        key: &str,
        rows: &[JournalEntry],
    ) -> anyhow::Result<Option<(String, String)>> {
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let config = self.config();
        // A desktop chat is named after what it is about; chats are named by the template.
        let title = if first.channel == crate::channels::desktop::DESKTOP {
            crate::channels::desktop::chat_title(&first.text)
        } else {
            session_title(
                &config.gateway.title_template,
                &first.channel,
                &first.peer,
                &first.chat,
            )
        };
        let idempotency_key = format!("session:{key}:{}", first.id);
        let mut attempt = 0;
        loop {
            match self.client().create_session(&title, &idempotency_key).await {
                Ok(session) => {
                    tracing::info!(conversation = %key, session = %session.id, "session created");
                    return Ok(Some((session.id, title)));
                }
                Err(e) => {
                    if !self.wait_after_server_error(&e, attempt).await {
                        return Ok(None);
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// The cursor to resume a session's stream from: the stored one, unless the server restarted
    /// since it was stored (event ids restart at 1 then, so the old cursor would hide new events).
    pub(super) async fn current_cursor(&self, session: &str) -> Option<i64> {
        let (id, epoch) = self.store.cursor(session).ok().flatten()?;
        let current = self.server_epoch().await?;
        same_epoch(epoch, current).then_some(id)
    }

    /// The server's start time, asked once and again after anything suggests a restart. One
    /// caller asks at a time: the burst of first runs after a start waits for one answer rather
    /// than each asking the server, and after a failed ask the others go on without it (their
    /// stored cursors are not trusted) instead of asking again in turn.
    pub(super) async fn server_epoch(&self) -> Option<i64> {
        if let Some(epoch) = self.known_server_epoch() {
            return Some(epoch);
        }
        let mut failed = self.epoch_asking.lock().await;
        if let Some(epoch) = self.known_server_epoch() {
            return Some(epoch);
        }
        if failed.is_some_and(|at| at.elapsed() < EPOCH_ASK_AGAIN) {
            return None;
        }
        let ask = self.epoch_ask();
        match self.client().health().await {
            Ok(health) => {
                *failed = None;
                self.learn_server_epoch(&health, ask)
            }
            Err(_) => {
                *failed = Some(tokio::time::Instant::now());
                None
            }
        }
    }

    fn known_server_epoch(&self) -> Option<i64> {
        *self.server_epoch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Taken before asking the server for its start time, for [`Dispatcher::learn_server_epoch`].
    pub(crate) fn epoch_ask(&self) -> EpochAsk {
        EpochAsk {
            generation: self.server_generation(),
            forgotten: self.epoch_forgotten.load(Ordering::SeqCst),
        }
    }

    /// Keeps the start time `health` tells, unless since it was asked for (`ask`) the server
    /// settings changed (it may be another server's) or a restart was suspected (it may be the
    /// old server's answer, come late).
    pub(crate) fn learn_server_epoch(
        &self,
        health: &crate::agent::Health,
        ask: EpochAsk,
    ) -> Option<i64> {
        let uptime = i64::try_from(health.uptime_seconds).unwrap_or(i64::MAX);
        let epoch = (now_ms() / 1000).saturating_sub(uptime);
        let mut known = self.server_epoch.lock().unwrap_or_else(|e| e.into_inner());
        if self.server_generation() != ask.generation
            || self.epoch_forgotten.load(Ordering::SeqCst) != ask.forgotten
        {
            return None;
        }
        *known = Some(epoch);
        Some(epoch)
    }

    pub(super) fn forget_server_epoch(&self) {
        let mut known = self.server_epoch.lock().unwrap_or_else(|e| e.into_inner());
        self.epoch_forgotten.fetch_add(1, Ordering::SeqCst);
        *known = None;
    }

    /// After a failed server call: waits as the error deserves and says whether to try again. A
    /// refused token waits for new settings (retrying would only be refused again); transient
    /// failures back off; others are reported and waited out slowly.
    pub(super) async fn wait_after_server_error(&self, error: &AgentError, attempt: u32) -> bool {
        let delay = match error {
            AgentError::Unauthorized => {
                self.emit(EngineEvent::ServerState {
                    state: ServerHealth::Unauthorized,
                    detail: Some(error.to_string()),
                });
                tracing::warn!("the agent server refused the token; waiting for new settings");
                tokio::select! {
                    _ = self.shutdown.cancelled() => return false,
                    _ = self.server_changed.notified() => return true,
                }
            }
            e if e.is_transient() => {
                if attempt == 0 {
                    self.forget_server_epoch();
                    self.emit(EngineEvent::ServerState {
                        state: ServerHealth::Unreachable,
                        detail: Some(e.to_string()),
                    });
                }
                backoff::delay(attempt, self.options.retry_base, self.options.retry_cap)
            }
            e => {
                self.emit(EngineEvent::Error {
                    scope: "server".into(),
                    message: e.to_string(),
                });
                self.options.retry_cap
            }
        };
        tracing::debug!(error = %error, ?delay, "agent server call failed; retrying");
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = self.server_changed.notified() => true,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

/// When the server's start time was asked for: see [`Dispatcher::epoch_ask`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct EpochAsk {
    generation: u64,
    forgotten: u64,
}

/// What [`Dispatcher::prepare_run`] came to.
enum Prepared {
    /// The run, stored, to post.
    Run(Box<RunRecord>),
    /// Nothing: the engine is stopping, or the server refuses us.
    Stopped,
    /// Nothing: a message of the run was dropped meanwhile; the queue is to be read again.
    QueueChanged,
}

/// Marks a conversation as preparing a run while it lives.
struct Preparing<'a> {
    d: &'a Dispatcher,
    key: &'a str,
}

impl<'a> Preparing<'a> {
    fn new(d: &'a Dispatcher, key: &'a str, rows: &[JournalEntry]) -> Preparing<'a> {
        d.preparing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                key.to_owned(),
                super::Preparation {
                    journal_ids: rows.iter().map(|r| r.id).collect(),
                    stopped: false,
                },
            );
        Preparing { d, key }
    }
}

impl Drop for Preparing<'_> {
    fn drop(&mut self) {
        self.d
            .preparing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(self.key);
    }
}

/// Adds queued messages to a run: texts joined with a blank line, watch contexts folded in, each
/// message's files named (with where they are) and its images sent along.
pub(super) fn absorb(run: &mut RunRecord, rows: &[JournalEntry]) {
    let mut parts: Vec<String> = if run.text.is_empty() {
        Vec::new()
    } else {
        vec![run.text.clone()]
    };
    for row in rows {
        if run.journal_ids.contains(&row.id) {
            continue;
        }
        run.journal_ids.push(row.id);
        let (text, images) = crate::media::for_agent(&row.text, &row.attachments);
        run.images.extend(images);
        parts.push(match &row.context {
            Some(consumed) => enrich(&consumed.context, &consumed.notification, &text),
            None => text,
        });
    }
    run.text = parts.join("\n\n");
    // A new body needs a new key: the server answers a reused key with a different body with 409.
    run.idempotency_key = uuid::Uuid::new_v4().to_string();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::JournalState;

    /// A dispatcher on an in-memory store, with a server nobody answers at.
    fn dispatcher(files: &std::path::Path) -> Arc<Dispatcher> {
        let options = crate::EngineOptions::default();
        let client = crate::agent::AgentClient::new("http://127.0.0.1:9", "", options.timeouts)
            .expect("client");
        let (events, _) = tokio::sync::broadcast::channel(16);
        Dispatcher::new(
            crate::config::Config::default(),
            client,
            crate::store::Store::open_in_memory().expect("store"),
            crate::channels::StatusBoard::new(events),
            options,
            tokio_util::sync::CancellationToken::new(),
            false,
            files.to_owned(),
        )
    }

    #[tokio::test]
    async fn a_run_stopped_after_it_was_stored_and_before_it_was_posted_is_never_sent() {
        let files = tempfile::tempdir().expect("tempdir");
        let d = dispatcher(files.path());
        let message = crate::model::InboundMessage {
            channel: "test".into(),
            peer: crate::model::Peer::new("ann"),
            chat: crate::model::ChatType::Direct,
            text: "delete the old backups".into(),
            target: crate::model::DeliveryTarget::chat("ann"),
            dedup_keys: vec!["test:1".into()],
            received_at_ms: 0,
            attachments: Vec::new(),
        };
        d.store.accept(&message, "k", 1).expect("accept");
        let rows = d.store.queued("k").expect("queue");
        let _preparing = Preparing::new(&d, "k", &rows);
        let mut run = RunRecord::posting("r1".into(), "k");
        absorb(&mut run, &rows);
        let stored = d
            .store
            .insert_run_in_session(
                run,
                String::new(),
                None,
                None,
                Some(("s1".into(), "t".into())),
            )
            .await
            .expect("write");
        let RunStored::Stored(run) = stored else {
            panic!("stored: {stored:?}");
        };
        // `/stop` now: no run is in flight yet, its message is tied to the stored run.
        assert_eq!(
            d.stop("k"),
            Some(run.journal_ids.clone()),
            "the run being prepared is the one stopped"
        );
        // Posting would fail against this server and retry for ever: the run returns at once.
        let mut kept = None;
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            d.drive(run, Some(rows.clone()), &mut kept),
        )
        .await
        .expect("not posted")
        .expect("drive");
        assert!(d.store.unfinished_run("k").expect("read").is_none());
        let entry = d
            .store
            .journal_entry(rows[0].id)
            .expect("read")
            .expect("row");
        assert_eq!(entry.state, JournalState::Failed);
        assert!(
            !d.active.lock().expect("lock").contains_key("k"),
            "no run left in flight"
        );
    }

    #[tokio::test]
    async fn a_start_time_asked_for_before_a_restart_was_suspected_is_not_kept() {
        let files = tempfile::tempdir().expect("tempdir");
        let d = dispatcher(files.path());
        let health = |uptime_seconds| crate::agent::Health {
            status: "ok".into(),
            version: "0.3.88".into(),
            uptime_seconds,
        };
        // Asked, then the stream broke (the server went): the old server's late answer is not
        // the new server's start time.
        let ask = d.epoch_ask();
        d.forget_server_epoch();
        assert_eq!(d.learn_server_epoch(&health(3_600), ask), None);
        assert_eq!(d.known_server_epoch(), None);
        // Asked after: kept. An absurd uptime is no panic, only an epoch nothing matches.
        let ask = d.epoch_ask();
        let epoch = d.learn_server_epoch(&health(3_600), ask).expect("kept");
        assert_eq!(d.known_server_epoch(), Some(epoch));
        assert!(d
            .learn_server_epoch(&health(u64::MAX), d.epoch_ask())
            .is_some());
        assert!(!same_epoch(i64::MIN, epoch));
    }

    #[test]
    fn absorbed_messages_join_with_a_blank_line() {
        let mut run = RunRecord {
            session_id: "s".into(),
            ..RunRecord::posting("l".into(), "k")
        };
        let row = |id: i64, text: &str| JournalEntry {
            id,
            channel: "c".into(),
            routing_key: "k".into(),
            peer: crate::model::Peer::new("p"),
            chat: crate::model::ChatType::Direct,
            target: crate::model::DeliveryTarget::chat("p"),
            text: text.into(),
            attachments: vec![],
            context: None,
            state: JournalState::Queued,
            run_id: None,
            error: None,
            created_ms: 0,
            updated_ms: 0,
        };
        absorb(&mut run, &[row(1, "one"), row(2, "two")]);
        let first_key = run.idempotency_key.clone();
        absorb(&mut run, &[row(2, "two"), row(3, "three")]);
        assert_eq!(run.text, "one\n\ntwo\n\nthree");
        assert_eq!(run.journal_ids, vec![1, 2, 3]);
        assert_ne!(
            run.idempotency_key, first_key,
            "a changed body needs a new idempotency key"
        );
    }
}
