//! The dispatcher: takes accepted messages, keeps one task per conversation, runs them on the agent
//! server one at a time per session, and delivers the replies.
//!
//! Conversations run concurrently and independently (one slow session or server call never delays
//! another), and in order within a conversation. Every step that matters is written to the store
//! before it is acted on, so a restart resumes each conversation where it stopped.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::{
    AgentClient, AgentError, AgentEvent, EventStream, ProposedToolCall, StreamItem, ToolDecision,
};
use crate::approvals::{ChatChoice, ChoiceOutcome};
use crate::backoff;
use crate::channels::{Accepted, Channel, Intake, Notice, StatusBoard};
use crate::chunk::chunk_text;
use crate::config::{ApprovalMode, Config};
use crate::events::EngineEvent;
use crate::model::{now_ms, InboundMessage, JournalState};
use crate::routing::{routing_key, session_title};
use crate::store::{
    ApprovalRecord, DecisionRecord, JournalEntry, Resolution, RunRecord, RunState, Store,
};
use crate::watch::enrich;
use crate::EngineOptions;

/// Said in the chat when a run ends without any reply.
const NO_REPLY: &str = "⚠️ The agent stopped without replying. Send your message again to retry.";
/// How long an idle conversation task lives before it is dropped (it is recreated on demand).
const CONVERSATION_IDLE: Duration = Duration::from_secs(600);

/// What a run task can be told while it runs.
#[derive(Debug)]
pub(crate) enum RunControl {
    /// A person decided a pending approval (already recorded in the store).
    Decide {
        tool_call_id: String,
        decision: ToolDecision,
    },
    /// Cancel the run.
    Cancel,
}

/// Everything the dispatcher's tasks share.
pub(crate) struct Dispatcher {
    pub(crate) store: Store,
    pub(crate) events: broadcast::Sender<EngineEvent>,
    pub(crate) board: StatusBoard,
    pub(crate) options: EngineOptions,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    config: RwLock<Arc<Config>>,
    client: RwLock<AgentClient>,
    channels: RwLock<HashMap<String, Arc<dyn Channel>>>,
    paused: watch::Sender<bool>,
    /// Woken when the server settings change, so work held back by a refused token resumes.
    server_changed: Notify,
    conversations: Mutex<HashMap<String, mpsc::UnboundedSender<()>>>,
    /// Conversations with a run in flight, and the way to reach that run.
    active: Mutex<HashMap<String, ActiveRun>>,
    /// The agent server's start time (Unix seconds), to tell its restarts apart.
    server_epoch: Mutex<Option<i64>>,
    /// Tools seen waiting for a decision at the head of a run's queue: the server does not approve
    /// them itself, so they can be decided together with the call before them.
    needs_decision: Mutex<HashSet<String>>,
    server_state: Mutex<Option<(String, Option<String>)>>,
    runtime: tokio::runtime::Handle,
}

#[derive(Clone)]
struct ActiveRun {
    local_id: String,
    control: mpsc::UnboundedSender<RunControl>,
}

impl Dispatcher {
    pub(crate) fn new(
        config: Config,
        client: AgentClient,
        store: Store,
        board: StatusBoard,
        options: EngineOptions,
        shutdown: CancellationToken,
        paused: bool,
    ) -> Arc<Dispatcher> {
        Arc::new(Dispatcher {
            store,
            events: board.events(),
            board,
            options,
            shutdown,
            tasks: TaskTracker::new(),
            config: RwLock::new(Arc::new(config)),
            client: RwLock::new(client),
            channels: RwLock::default(),
            paused: watch::channel(paused).0,
            server_changed: Notify::new(),
            conversations: Mutex::default(),
            active: Mutex::default(),
            server_epoch: Mutex::default(),
            needs_decision: Mutex::default(),
            server_state: Mutex::default(),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    // ----- shared state -------------------------------------------------------------------------

    pub(crate) fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_config(&self, config: Config) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }

    pub(crate) fn client(&self) -> AgentClient {
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the agent client (new URL or token) and wakes everything waiting on the server.
    pub(crate) fn set_client(self: &Arc<Self>, client: AgentClient) {
        *self.client.write().unwrap_or_else(|e| e.into_inner()) = client;
        *self.server_epoch.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.server_changed.notify_waiters();
        let keys: Vec<String> = self
            .conversations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        for key in keys {
            self.wake(&key);
        }
    }

    pub(crate) fn channel(&self, name: &str) -> Option<Arc<dyn Channel>> {
        self.channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub(crate) fn add_channel(&self, channel: Arc<dyn Channel>) {
        self.channels
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(channel.name().to_string(), channel);
    }

    pub(crate) fn channel_names(&self) -> Vec<String> {
        self.channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    pub(crate) fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    pub(crate) fn set_paused(&self, paused: bool) {
        if self.paused.send_replace(paused) != paused {
            let _ = self.events.send(EngineEvent::Paused { paused });
        }
    }

    pub(crate) fn emit(&self, event: EngineEvent) {
        if let EngineEvent::ServerState { state, detail } = &event {
            *self.server_state.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((state.clone(), detail.clone()));
        }
        let _ = self.events.send(event);
    }

    /// The last reported state of the agent server, for a host that subscribed after the report.
    pub(crate) fn server_state(&self) -> Option<(String, Option<String>)> {
        self.server_state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs a task on the engine's runtime, also when called from a thread outside it (a host's
    /// UI thread deciding an approval).
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(task);
    }

    /// Whether a run is in flight in this conversation.
    pub(crate) fn is_active(&self, key: &str) -> bool {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(key)
    }

    pub(crate) fn active_keys(&self) -> HashSet<String> {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Sends a control message to the run in flight in a conversation; false when there is none.
    pub(crate) fn control(&self, key: &str, control: RunControl) -> bool {
        let active = self
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned();
        active.is_some_and(|run| run.control.send(control).is_ok())
    }

    /// Sends a control message to a run by its local id.
    pub(crate) fn control_run(&self, local_id: &str, control: RunControl) -> bool {
        let active = self
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|r| r.local_id == local_id)
            .cloned();
        active.is_some_and(|run| run.control.send(control).is_ok())
    }

    // ----- conversations ------------------------------------------------------------------------

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
        loop {
            // Finish what was in flight before a restart first, then drain the queue.
            if let Err(e) = self.work(&key, &mut paused).await {
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
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                woke = rx.recv() => if woke.is_none() { return },
                _ = tokio::time::sleep(CONVERSATION_IDLE) => {
                    let mut conversations = self.conversations.lock().unwrap_or_else(|e| e.into_inner());
                    // Under the lock no wake can slip in between this check and the removal.
                    if rx.is_empty() {
                        conversations.remove(&key);
                        return;
                    }
                }
            }
        }
    }

    async fn work(
        self: &Arc<Self>,
        key: &str,
        paused: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        if let Some(run) = self.store.unfinished_run(key)? {
            self.drive(run).await?;
        }
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            // Paused means: keep storing, start nothing. Runs already in flight finish.
            while *paused.borrow_and_update() {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return Ok(()),
                    _ = paused.changed() => {}
                }
            }
            let rows = self.store.queued(key)?;
            if rows.is_empty() {
                return Ok(());
            }
            let Some(run) = self.prepare_run(key, rows).await? else {
                return Ok(());
            };
            self.drive(run).await?;
        }
    }

    /// Turns queued messages into a stored run in `Posting` state, creating the session if needed.
    /// Returns `None` when the engine is stopping or the server refuses us (the messages stay queued).
    async fn prepare_run(
        self: &Arc<Self>,
        key: &str,
        rows: Vec<JournalEntry>,
    ) -> anyhow::Result<Option<RunRecord>> {
        let Some(session_id) = self.ensure_session(key, &rows).await? else {
            return Ok(None);
        };
        let mut run = RunRecord {
            local_id: uuid::Uuid::new_v4().to_string(),
            routing_key: key.to_string(),
            session_id,
            server_run_id: None,
            state: RunState::Posting,
            text: String::new(),
            idempotency_key: String::new(),
            cursor_start: None,
            journal_ids: vec![],
            reply: None,
            delivered_chunks: 0,
        };
        absorb(&mut run, &rows);
        run.cursor_start = self.current_cursor(&run.session_id).await;
        self.store.insert_run(&run)?;
        Ok(Some(run))
    }

    /// The session of a conversation, created on first use with a title from the template.
    async fn ensure_session(
        self: &Arc<Self>,
        key: &str,
        rows: &[JournalEntry],
    ) -> anyhow::Result<Option<String>> {
        let conversation = self.store.conversation(key)?;
        if let Some(session) = conversation.as_ref().and_then(|c| c.session_id.clone()) {
            return Ok(Some(session));
        }
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let config = self.config();
        let title = session_title(
            &config.gateway.title_template,
            &first.channel,
            &first.peer,
            &first.chat,
        );
        // Keyed on the first message, so a retry after a crash cannot create a second session.
        let idempotency_key = format!("session:{key}:{}", first.id);
        let mut attempt = 0;
        loop {
            match self.client().create_session(&title, &idempotency_key).await {
                Ok(session) => {
                    self.store
                        .set_session(key, Some(&session.id), Some(&title))?;
                    tracing::info!(conversation = %key, session = %session.id, "session created");
                    return Ok(Some(session.id));
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
    async fn current_cursor(&self, session: &str) -> Option<i64> {
        let (id, epoch) = self.store.cursor(session).ok().flatten()?;
        let current = self.server_epoch().await?;
        same_epoch(epoch, current).then_some(id)
    }

    /// The server's start time, asked once and again after anything suggests a restart.
    async fn server_epoch(&self) -> Option<i64> {
        if let Some(epoch) = *self.server_epoch.lock().unwrap_or_else(|e| e.into_inner()) {
            return Some(epoch);
        }
        let health = self.client().health().await.ok()?;
        let epoch = now_ms() / 1000 - health.uptime_seconds as i64;
        *self.server_epoch.lock().unwrap_or_else(|e| e.into_inner()) = Some(epoch);
        Some(epoch)
    }

    fn needs_decision(&self, tool: &str) -> bool {
        self.needs_decision
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(tool)
    }

    fn learn_needs_decision(&self, tool: &str) {
        self.needs_decision
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tool.to_string());
    }

    fn forget_server_epoch(&self) {
        *self.server_epoch.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// After a failed server call: waits as the error deserves and says whether to try again. A
    /// refused token waits for new settings (retrying would only be refused again); transient
    /// failures back off; others are reported and waited out slowly.
    async fn wait_after_server_error(&self, error: &AgentError, attempt: u32) -> bool {
        let delay = match error {
            AgentError::Unauthorized => {
                self.emit(EngineEvent::ServerState {
                    state: "unauthorized".into(),
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
                        state: "unreachable".into(),
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

    // ----- runs ---------------------------------------------------------------------------------

    /// Takes a stored run from wherever it is to its delivered reply.
    async fn drive(self: &Arc<Self>, mut run: RunRecord) -> anyhow::Result<()> {
        let (control_tx, mut control_rx) = mpsc::unbounded_channel();
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                run.routing_key.clone(),
                ActiveRun {
                    local_id: run.local_id.clone(),
                    control: control_tx,
                },
            );
        let result = self.drive_inner(&mut run, &mut control_rx).await;
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&run.routing_key);
        result
    }

    async fn drive_inner(
        self: &Arc<Self>,
        run: &mut RunRecord,
        control: &mut mpsc::UnboundedReceiver<RunControl>,
    ) -> anyhow::Result<()> {
        let outcome = match run.state {
            RunState::Delivering => None,
            RunState::Posting => {
                let Some(stream) = self.post(run).await? else {
                    return Ok(());
                };
                Some(self.follow(run, Some(stream), control).await?)
            }
            RunState::Running => Some(self.follow(run, None, control).await?),
        };
        let Some((reply, outcome)) = (match outcome {
            Some(Some(found)) => Some(found),
            Some(None) => return Ok(()), // stopping; the run resumes after a restart
            None => run.reply.clone().map(|r| (r, "completed".to_string())),
        }) else {
            return Ok(());
        };
        if run.state != RunState::Delivering {
            run.reply = Some(reply.clone());
            run.state = RunState::Delivering;
            self.store.update_run(run)?;
        }
        if let Some(server_run) = &run.server_run_id {
            self.emit(EngineEvent::RunFinished {
                routing_key: run.routing_key.clone(),
                run_id: server_run.clone(),
                outcome: outcome.clone(),
            });
        }
        self.deliver(run, &reply, outcome != "error").await
    }

    /// Subscribes to the session's events, then posts the run's message. Handles a deleted session
    /// (new session, once), a run started elsewhere (wait until idle, then post) and a refused token
    /// (the messages go back to the queue until the settings change).
    async fn post(self: &Arc<Self>, run: &mut RunRecord) -> anyhow::Result<Option<EventStream>> {
        let mut replaced_session = false;
        let mut attempt = 0;
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(None);
            }
            let client = self.client();
            // Subscribe first: events of the run that come before the subscription are otherwise
            // lost, and a run that ends before it would never be seen to end.
            let stream = match client.subscribe(&run.session_id, run.cursor_start).await {
                Ok(stream) => stream,
                Err(e) => {
                    if !self.wait_after_server_error(&e, attempt).await {
                        return Ok(None);
                    }
                    attempt += 1;
                    continue;
                }
            };
            let model = self.config().gateway.model.clone();
            let model = (!model.is_empty()).then_some(model.as_str());
            match client
                .post_message(&run.session_id, &run.text, model, &run.idempotency_key)
                .await
            {
                Ok(server_run) => {
                    run.server_run_id = Some(server_run.clone());
                    run.state = RunState::Running;
                    self.store.update_run(run)?;
                    self.store
                        .mark_journal(&run.journal_ids, JournalState::Sent, None)?;
                    tracing::info!(conversation = %run.routing_key, session = %run.session_id, run = %server_run, "run started");
                    self.emit(EngineEvent::RunStarted {
                        routing_key: run.routing_key.clone(),
                        session_id: run.session_id.clone(),
                        run_id: server_run,
                    });
                    return Ok(Some(stream));
                }
                Err(AgentError::NotFound(_)) if !replaced_session => {
                    // The session was deleted on the server: drop the mapping and start a new one,
                    // once. A second 404 is an error, never a loop.
                    tracing::warn!(conversation = %run.routing_key, session = %run.session_id, "session gone on the server; creating a new one");
                    replaced_session = true;
                    self.store.set_session(&run.routing_key, None, None)?;
                    let rows: Vec<JournalEntry> = run
                        .journal_ids
                        .iter()
                        .filter_map(|id| self.store.journal_entry(*id).ok().flatten())
                        .collect();
                    let Some(session) = self.ensure_session(&run.routing_key, &rows).await? else {
                        return Ok(None);
                    };
                    run.session_id = session;
                    run.cursor_start = None;
                    run.idempotency_key = uuid::Uuid::new_v4().to_string();
                    self.store.update_run(run)?;
                }
                Err(AgentError::Conflict { code, .. }) if code == "session_already_running" => {
                    // A run nobody here started (the user used the session elsewhere). Tell the chat,
                    // wait until the session is idle, then post everything queued meanwhile too.
                    drop(stream);
                    tracing::info!(conversation = %run.routing_key, "session busy with another run; waiting");
                    self.notice_run(run, Notice::Queued).await;
                    if !self.wait_until_idle(&run.session_id).await {
                        return Ok(None);
                    }
                    let more = self.store.queued(&run.routing_key)?;
                    absorb(run, &more);
                    run.cursor_start = self.current_cursor(&run.session_id).await;
                    self.store.update_run(run)?;
                }
                Err(AgentError::Unauthorized) => {
                    self.store.requeue_run(run)?;
                    self.wait_after_server_error(&AgentError::Unauthorized, 0)
                        .await;
                    return Ok(None);
                }
                Err(e) if e.is_transient() => {
                    // The POST may or may not have arrived: the same Idempotency-Key makes the retry
                    // safe either way.
                    if !self.wait_after_server_error(&e, attempt).await {
                        return Ok(None);
                    }
                    attempt += 1;
                }
                Err(e) => {
                    tracing::warn!(conversation = %run.routing_key, error = %e, "the agent server refused the message");
                    run.server_run_id = None;
                    run.state = RunState::Delivering;
                    let reply = format!("⚠️ {e}");
                    run.reply = Some(reply.clone());
                    self.store.update_run(run)?;
                    self.deliver(run, &reply, false).await?;
                    return Ok(None);
                }
            }
        }
    }

    /// Waits until a session has no run going (polling its status; used only after a 409).
    async fn wait_until_idle(&self, session: &str) -> bool {
        let mut attempt = 0;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                _ = tokio::time::sleep(self.options.busy_poll) => {}
            }
            match self.client().session(session).await {
                Ok(s) if !s.run_status.is_busy() => return true,
                Ok(_) => {}
                Err(AgentError::NotFound(_)) => return true,
                Err(e) => {
                    if !self.wait_after_server_error(&e, attempt).await {
                        return false;
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// Follows a run's events to its end. Returns the reply and how the run ended, or `None` when the
    /// engine is stopping.
    async fn follow(
        self: &Arc<Self>,
        run: &mut RunRecord,
        stream: Option<EventStream>,
        control: &mut mpsc::UnboundedReceiver<RunControl>,
    ) -> anyhow::Result<Option<(String, String)>> {
        let Some(server_run) = run.server_run_id.clone() else {
            anyhow::bail!("run {} has no server run id", run.local_id);
        };
        let mut progress = Progress::default();
        // A run resumed after a restart replays from the cursor taken before it was posted; if the
        // server restarted too, the replay is incomplete and the final text is fetched instead.
        let mut stream = stream;
        // Without a stored cursor, a resubscription replays everything the server still holds
        // (filtered by run below) rather than only live events, so nothing of the run is missed.
        let mut last_id = run.cursor_start.or(Some(0));
        let mut reconnects = 0u32;
        let typing_target = self.reply_target(run);
        let mut typing = tokio::time::interval(self.options.typing_interval);
        let mut watchdog_at = Instant::now() + self.options.watchdog;
        let mut approval_at: Option<Instant> = None;
        if stream.is_none() {
            // Resumed after a restart: what waits now is what the server says, not what was
            // stored.
            self.reconcile_approvals(run, &server_run, &mut progress)
                .await?;
            approval_at = Some(Instant::now() + self.options.approval_grace);
        }
        let mut expiry_at = self.next_expiry(run);

        loop {
            let current = match stream.as_mut() {
                Some(s) => s,
                None => {
                    if self.shutdown.is_cancelled() {
                        return Ok(None);
                    }
                    match self.client().subscribe(&run.session_id, last_id).await {
                        Ok(s) => {
                            reconnects = 0;
                            // The run may have ended while we were away; the replay tells, and if the
                            // server lost the events the watchdog's status check does.
                            watchdog_at = Instant::now().min(watchdog_at);
                            stream.insert(s)
                        }
                        Err(e) => {
                            if !self.wait_after_server_error(&e, reconnects).await {
                                return Ok(None);
                            }
                            reconnects += 1;
                            continue;
                        }
                    }
                }
            };
            let sleep_approval = async move {
                match approval_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let sleep_expiry = async move {
                match expiry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(None),
                item = current.next() => match item {
                    Some(Ok(StreamItem::Event(envelope))) => {
                        if let Some(id) = envelope.id {
                            if last_id.is_some_and(|last| id <= last) {
                                // Ids went backwards: the server restarted and numbers from 1 again.
                                tracing::info!(session = %run.session_id, id, "event ids restarted; the agent server restarted");
                                self.forget_server_epoch();
                            }
                            last_id = Some(id);
                        }
                        if envelope.run_id.as_deref() != Some(server_run.as_str()) {
                            continue;
                        }
                        watchdog_at = Instant::now() + self.options.watchdog;
                        if !progress.seen_any && envelope.event != AgentEvent::RunStarted {
                            // The run's first events are gone (resumed after they left the server's
                            // buffer): the streamed text would be partial.
                            progress.incomplete = true;
                        }
                        progress.seen_any = true;
                        match envelope.event {
                            AgentEvent::TextDelta { delta } => {
                                progress.text.push_str(&delta);
                                self.emit(EngineEvent::RunStreaming {
                                    routing_key: run.routing_key.clone(),
                                    run_id: server_run.clone(),
                                    text: progress.text.clone(),
                                });
                            }
                            AgentEvent::TextComplete { text } => progress.completed_text.push(text),
                            AgentEvent::RunStarted => {}
                            AgentEvent::ToolCallsProposed { .. } => {}
                            AgentEvent::WaitingForToolApproval { pending_tool_call_ids } => {
                                progress.waiting.extend(pending_tool_call_ids);
                                // Give calls the server approves itself a moment to start, so no
                                // decision is ever sent for a call that is not really waiting.
                                approval_at = Some(Instant::now() + self.options.approval_grace);
                            }
                            AgentEvent::ToolExecutionStarted { tool_call_id, .. } => {
                                progress.waiting.remove(&tool_call_id);
                                progress.handled.insert(tool_call_id);
                            }
                            AgentEvent::ToolExecutionCompleted { tool_call_id, .. }
                            | AgentEvent::ToolRejected { tool_call_id, .. } => {
                                progress.waiting.remove(&tool_call_id);
                                progress.handled.insert(tool_call_id);
                                // The next call in order may now be the one waiting for a decision.
                                if progress.waiting.iter().any(|id| !progress.decided.contains(id)) {
                                    approval_at = Some(Instant::now() + self.options.approval_grace);
                                }
                            }
                            AgentEvent::RunCompleted { stop_reason } => {
                                self.save_cursor(run, last_id).await;
                                return Ok(Some(self.completed_reply(run, &progress, &stop_reason).await));
                            }
                            AgentEvent::RunError { error, .. } => {
                                self.save_cursor(run, last_id).await;
                                return Ok(Some((format!("⚠️ {error}"), "error".to_string())));
                            }
                            AgentEvent::RetryAttempt { .. } | AgentEvent::Other(_) => {}
                        }
                    }
                    Some(Ok(StreamItem::Gap(gap))) => {
                        tracing::warn!(session = %run.session_id, after = gap.requested_after_id, oldest = gap.oldest_available_id, "events were lost; the final reply will be fetched");
                        progress.incomplete = true;
                        watchdog_at = Instant::now();
                    }
                    Some(Ok(StreamItem::Keepalive)) => {}
                    Some(Ok(StreamItem::Malformed(why))) => {
                        tracing::warn!(session = %run.session_id, %why, "skipped a malformed event");
                    }
                    Some(Err(e)) => {
                        tracing::info!(session = %run.session_id, error = %e, "event stream broke; resuming from the cursor");
                        stream = None;
                        self.forget_server_epoch();
                        watchdog_at = Instant::now();
                    }
                    None => {
                        tracing::info!(session = %run.session_id, "event stream ended; resuming from the cursor");
                        stream = None;
                        watchdog_at = Instant::now();
                    }
                },
                _ = tokio::time::sleep_until(watchdog_at) => {
                    // No event for a while (or the stream broke): ask the server whether the run is
                    // still going. A run can end without a terminal event.
                    match self.client().session(&run.session_id).await {
                        Ok(session) if session.run_status.is_busy() && session.run_status.run_id.as_deref() == Some(server_run.as_str()) => {
                            watchdog_at = Instant::now() + self.options.watchdog;
                        }
                        Ok(session) if session.run_status.is_busy() && session.run_status.run_id.is_none() => {
                            watchdog_at = Instant::now() + self.options.watchdog;
                        }
                        Ok(_) | Err(AgentError::NotFound(_)) => {
                            // Let a stream that is still delivering the run's last events finish
                            // first: only settle when nothing more arrives.
                            if stream.is_some() && !progress.settle_pending {
                                progress.settle_pending = true;
                                watchdog_at = Instant::now() + self.options.settle_grace;
                                continue;
                            }
                            tracing::warn!(conversation = %run.routing_key, run = %server_run, "run ended without a terminal event; settling it");
                            self.save_cursor(run, last_id).await;
                            return Ok(Some(self.settled_reply(run, &progress).await));
                        }
                        Err(e) => {
                            self.wait_after_server_error(&e, 0).await;
                            watchdog_at = Instant::now() + self.options.watchdog;
                        }
                    }
                }
                _ = sleep_approval => {
                    approval_at = None;
                    self.decide_waiting(run, &server_run, &mut progress).await?;
                    expiry_at = self.next_expiry(run);
                }
                _ = sleep_expiry => {
                    self.expire_approvals(run, &server_run, &mut progress).await?;
                    expiry_at = self.next_expiry(run);
                }
                Some(message) = control.recv() => {
                    let mut decided = Vec::new();
                    let mut cancel = false;
                    let mut next = Some(message);
                    // Decisions that arrive together go to the server in one request.
                    while let Some(message) = next {
                        match message {
                            RunControl::Decide { tool_call_id, decision } => decided.push((tool_call_id, decision)),
                            RunControl::Cancel => cancel = true,
                        }
                        next = control.try_recv().ok();
                    }
                    if cancel {
                        self.cancel_run(run, &server_run, &progress).await;
                    } else {
                        self.send_decisions(run, &server_run, &mut progress, decided).await;
                    }
                    expiry_at = self.next_expiry(run);
                }
                _ = typing.tick() => {
                    if let Some((channel, target)) = &typing_target {
                        if let Some(channel) = self.channel(channel) {
                            let target = target.clone();
                            tokio::spawn(async move { let _ = channel.typing(&target).await; });
                        }
                    }
                }
            }
        }
    }

    async fn save_cursor(&self, run: &RunRecord, last_id: Option<i64>) {
        if let (Some(id), Some(epoch)) = (last_id, self.server_epoch().await) {
            if let Err(e) = self.store.set_cursor(&run.session_id, id, epoch) {
                tracing::warn!(error = %e, "cannot save the event cursor");
            }
        }
    }

    /// The reply of a run that completed: its streamed text, else the latest assistant message.
    async fn completed_reply(
        &self,
        run: &RunRecord,
        progress: &Progress,
        stop_reason: &str,
    ) -> (String, String) {
        let outcome = if stop_reason == "cancelled" {
            "cancelled"
        } else {
            "completed"
        };
        let streamed = if progress.incomplete {
            String::new()
        } else {
            progress.text.clone()
        };
        if !streamed.trim().is_empty() {
            return (streamed, outcome.to_string());
        }
        let joined = progress.completed_text.join("\n\n");
        if !progress.incomplete && !joined.trim().is_empty() {
            return (joined, outcome.to_string());
        }
        match self.client().latest_reply(&run.session_id).await {
            Ok(Some(text)) => (text, outcome.to_string()),
            Ok(None) if outcome == "cancelled" => {
                ("⚠️ Cancelled.".to_string(), outcome.to_string())
            }
            Ok(None) => (NO_REPLY.to_string(), outcome.to_string()),
            Err(e) => (
                format!("⚠️ The agent finished but its reply could not be read: {e}"),
                "error".to_string(),
            ),
        }
    }

    /// The reply of a run that ended without a terminal event.
    async fn settled_reply(&self, run: &RunRecord, progress: &Progress) -> (String, String) {
        match self.client().latest_reply(&run.session_id).await {
            Ok(Some(text)) => (text, "settled".to_string()),
            Ok(None) if !progress.incomplete && !progress.text.trim().is_empty() => {
                (progress.text.clone(), "settled".to_string())
            }
            Ok(None) => (NO_REPLY.to_string(), "settled".to_string()),
            Err(e) => (
                format!("⚠️ The run ended without a reply and the session could not be read: {e}"),
                "error".to_string(),
            ),
        }
    }

    fn reply_target(&self, run: &RunRecord) -> Option<(String, crate::model::DeliveryTarget)> {
        let last = run
            .journal_ids
            .last()
            .and_then(|id| self.store.journal_entry(*id).ok().flatten());
        match last {
            Some(entry) => Some((entry.channel, entry.target)),
            None => self
                .store
                .conversation(&run.routing_key)
                .ok()
                .flatten()
                .map(|c| (c.channel, c.target)),
        }
    }

    async fn notice_run(&self, run: &RunRecord, notice: Notice) {
        if let Some((channel, target)) = self.reply_target(run) {
            if let Some(channel) = self.channel(&channel) {
                if let Err(e) = channel.notice(&target, notice).await {
                    tracing::debug!(error = %e, "notice not shown");
                }
            }
        }
    }

    /// Sends the reply to the chat, split for the channel, resuming after the chunks already sent.
    async fn deliver(
        self: &Arc<Self>,
        run: &mut RunRecord,
        reply: &str,
        success: bool,
    ) -> anyhow::Result<()> {
        let Some((channel_name, target)) = self.reply_target(run) else {
            self.store.finish_run(
                run,
                JournalState::Failed,
                Some("no conversation to reply to"),
            )?;
            return Ok(());
        };
        let mut attempt = 0u32;
        let channel = loop {
            match self.channel(&channel_name) {
                Some(channel) if self.board.get(&channel_name).is_none_or(|s| s.enabled) => {
                    break channel
                }
                _ => {
                    // The channel is off (or gone): hold the reply until it is back.
                    tracing::info!(channel = %channel_name, "channel unavailable; holding the reply");
                    let delay =
                        backoff::delay(attempt, self.options.retry_base, self.options.retry_cap);
                    attempt += 1;
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        };
        let chunks = chunk_text(reply, channel.text_limit());
        let mut failure: Option<String> = None;
        for (index, chunk) in chunks.iter().enumerate().skip(run.delivered_chunks) {
            let mut attempt = 0u32;
            loop {
                match channel.send(&target, chunk).await {
                    Ok(_) => {
                        self.board.touch(&channel_name, false);
                        run.delivered_chunks = index + 1;
                        self.store.update_run(run)?;
                        break;
                    }
                    Err(crate::channels::ChannelError::RateLimited(wait)) => {
                        tokio::select! {
                            _ = self.shutdown.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                    Err(e) if e.is_transient() && attempt < self.options.delivery_attempts => {
                        let delay = backoff::delay(
                            attempt,
                            self.options.retry_base,
                            self.options.retry_cap,
                        );
                        attempt += 1;
                        tracing::info!(channel = %channel_name, error = %e, ?delay, "send failed; retrying");
                        tokio::select! {
                            _ = self.shutdown.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                    Err(e) => {
                        failure = Some(e.to_string());
                        break;
                    }
                }
            }
            if failure.is_some() {
                break;
            }
        }
        if let Some(error) = failure {
            tracing::warn!(channel = %channel_name, %error, "reply could not be delivered");
            self.store
                .finish_run(run, JournalState::Failed, Some(&error))?;
            self.emit(EngineEvent::Error {
                scope: channel_name.clone(),
                message: format!("a reply could not be delivered: {error}"),
            });
            return Ok(());
        }
        let state = if success {
            JournalState::Replied
        } else {
            JournalState::Failed
        };
        let error = (!success).then_some(reply);
        // Which of the run's messages answered a watch notification, read before the rows change.
        let answered_watch = run
            .journal_ids
            .iter()
            .filter_map(|id| self.store.journal_entry(*id).ok().flatten())
            .any(|entry| entry.context.is_some());
        self.store.finish_run(run, state, error)?;
        tracing::info!(conversation = %run.routing_key, channel = %channel_name, chunks = chunks.len(), "reply delivered");
        self.emit(EngineEvent::ReplyDelivered {
            routing_key: run.routing_key.clone(),
            channel: channel_name.clone(),
            target: target.clone(),
            text: reply.to_string(),
            chunks: chunks.len(),
        });
        if answered_watch {
            self.emit(EngineEvent::WatchReplyDelivered {
                channel: channel_name,
                routing_key: run.routing_key.clone(),
                target,
                text: reply.to_string(),
            });
        }
        Ok(())
    }

    // ----- approvals ----------------------------------------------------------------------------

    /// Decides the calls that are really waiting, by the approval mode and rules; in `ask` mode
    /// the rest become pending approvals for a person.
    async fn decide_waiting(
        self: &Arc<Self>,
        run: &RunRecord,
        server_run: &str,
        progress: &mut Progress,
    ) -> anyhow::Result<()> {
        let candidates: Vec<String> = progress
            .waiting
            .iter()
            .filter(|id| !progress.handled.contains(*id))
            .cloned()
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        // The server's own list is the truth about what waits.
        let pending = match self.client().pending_tools(&run.session_id).await {
            Ok(p) if p.run_id.as_deref() == Some(server_run) => p.tool_calls,
            Ok(_) => Vec::new(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the pending tool calls; will look again");
                return Ok(());
            }
        };
        let waiting: Vec<ProposedToolCall> = pending
            .into_iter()
            .filter(|c| candidates.contains(&c.id) && !progress.decided.contains(&c.id))
            .collect();
        // Calls run in proposal order, and a call the server approves itself is listed as waiting
        // until its turn comes. Deciding such a call errors the run, so only the first waiting call is
        // decided, with the ones after it whose tool is known to need a decision; the rest are looked
        // at again once the first has run.
        let chosen: Vec<ProposedToolCall> = waiting
            .iter()
            .enumerate()
            .take_while(|(index, call)| *index == 0 || self.needs_decision(&call.name))
            .map(|(_, call)| call.clone())
            .collect();
        if let Some(head) = chosen.first() {
            self.learn_needs_decision(&head.name);
        }
        let config = self.config();
        let rules = self.store.rules()?;
        let mut decisions = Vec::new();
        for call in &chosen {
            // A decision a person made earlier (before a restart, say) for a call still waiting.
            if let Some(approval) = self.store.approval_for_call(&run.session_id, &call.id)? {
                match approval.state.as_str() {
                    "accept" => decisions.push((call.id.clone(), ToolDecision::Accept)),
                    "reject" | "expired" => decisions.push((call.id.clone(), ToolDecision::Reject)),
                    _ => {}
                }
                continue;
            }
            match policy(&config, &rules, call) {
                Some(decision) => {
                    self.store.log_decision(&DecisionRecord {
                        at_ms: now_ms(),
                        session_id: run.session_id.clone(),
                        run_id: server_run.to_string(),
                        tool_call_id: call.id.clone(),
                        tool: call.name.clone(),
                        action: decision.as_str().to_string(),
                        decided_by: format!("policy:{}", config.gateway.approval_mode),
                        surface: "engine".to_string(),
                    })?;
                    decisions.push((call.id.clone(), decision));
                }
                None => self.request_approval(run, server_run, call, &config, progress)?,
            }
        }
        self.send_decisions(run, server_run, progress, decisions)
            .await;
        Ok(())
    }

    fn request_approval(
        &self,
        run: &RunRecord,
        server_run: &str,
        call: &ProposedToolCall,
        config: &Config,
        progress: &mut Progress,
    ) -> anyhow::Result<()> {
        if progress.requested.contains(&call.id) {
            return Ok(());
        }
        progress.requested.insert(call.id.clone());
        if self
            .store
            .approval_for_call(&run.session_id, &call.id)?
            .is_some()
        {
            return Ok(());
        }
        let last = run
            .journal_ids
            .last()
            .and_then(|id| self.store.journal_entry(*id).ok().flatten());
        let (requester, requester_id, channel, target) = match last {
            Some(entry) => (
                entry.peer.label().to_string(),
                entry.peer.id.clone(),
                entry.channel,
                entry.target,
            ),
            None => (
                "unknown".to_string(),
                String::new(),
                String::new(),
                crate::model::DeliveryTarget::chat(""),
            ),
        };
        let now = now_ms();
        let approval = ApprovalRecord {
            id: uuid::Uuid::new_v4().to_string(),
            run_local_id: run.local_id.clone(),
            routing_key: run.routing_key.clone(),
            session_id: run.session_id.clone(),
            server_run_id: server_run.to_string(),
            tool_call_id: call.id.clone(),
            tool: call.name.clone(),
            arguments: call.arguments.clone(),
            requester: requester.clone(),
            requester_id,
            channel,
            target,
            chat_message_id: None,
            created_ms: now,
            deadline_ms: now
                + self.options.approval_timeout.map_or(
                    config.gateway.approval_timeout_minutes as i64 * 60_000,
                    |d| d.as_millis() as i64,
                ),
            state: "pending".to_string(),
            decided_by: None,
            surface: None,
            decided_ms: None,
        };
        if self.store.insert_approval(&approval)? {
            tracing::info!(conversation = %run.routing_key, tool = %call.name, "tool call waits for approval");
            self.emit(EngineEvent::ApprovalRequested {
                approval_id: approval.id.clone(),
                routing_key: run.routing_key.clone(),
                tool: call.name.clone(),
                arguments: call.arguments.clone(),
                requester: requester.clone(),
                deadline_ms: approval.deadline_ms,
            });
            let prompt = crate::approvals::ApprovalPrompt {
                approval_id: approval.id.clone(),
                tool: call.name.clone(),
                arguments: crate::approvals::readable_arguments(&call.arguments),
                requester,
                expires_in_minutes: ((approval.deadline_ms - now) / 60_000).max(1) as u64,
            };
            self.post_prompt(approval, prompt);
        }
        Ok(())
    }

    /// Shows an approval in the chat it came from, with buttons where the platform has them.
    fn post_prompt(&self, approval: ApprovalRecord, prompt: crate::approvals::ApprovalPrompt) {
        let Some(channel) = self.channel(&approval.channel) else {
            return;
        };
        let store = self.store.clone();
        self.spawn(async move {
            let posted = match channel.post_approval(&approval.target, &prompt).await {
                Ok(Some(message)) => Some(message),
                Ok(None) => {
                    let text = format!(
                        "{}\nApprove or reject it in the Switchboard window.",
                        prompt.text()
                    );
                    if let Err(e) = channel.send(&approval.target, &text).await {
                        tracing::warn!(error = %e, "cannot show the approval in the chat");
                    }
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot show the approval in the chat");
                    None
                }
            };
            let Some(message) = posted else { return };
            if let Err(e) = store.set_approval_message(&approval.id, &message.id) {
                tracing::warn!(error = %e, "cannot remember the approval's chat message");
            }
            // Decided while the prompt was on its way: close it now.
            if let Ok(Some(now)) = store.approval(&approval.id) {
                if now.state != "pending" {
                    let line = crate::approvals::outcome_line(
                        &now.tool,
                        &now.state,
                        now.decided_by.as_deref().unwrap_or(""),
                        now.surface.as_deref().unwrap_or(""),
                    );
                    let _ = channel
                        .close_approval(&now.target, &message.id, &line)
                        .await;
                }
            }
        });
    }

    /// Access control, before anything is stored: whether the message may reach the agent. A
    /// stranger's DM under the pairing policy is answered with a pairing code (the same code again
    /// for a repeated message, none when the channel has too many waiting); an owner's pairing
    /// command is carried out here. Nothing of a refused message reaches the agent server.
    async fn admit(&self, config: &Config, message: &InboundMessage) -> anyhow::Result<bool> {
        use crate::access::{self, Verdict};
        let policy = access::Policy::of(config, &message.channel);
        if policy.unrestricted {
            return Ok(true);
        }
        let peer = &message.peer;
        if matches!(message.chat, crate::model::ChatType::Direct) && policy.is_owner(&peer.id) {
            if let Some(command) = access::owner_command(&message.text) {
                let (state, code) = match command {
                    access::OwnerCommand::Admit(code) => ("admitted", code),
                    access::OwnerCommand::Refuse(code) => ("refused", code),
                };
                let reply =
                    match self.resolve_pairing(&message.channel, &code, state, peer.label())? {
                        Some(request) => format!("Done: {} is {state}.", request.peer_name),
                        None => format!(
                            "No pairing request with the code {code} is waiting on {}.",
                            message.channel
                        ),
                    };
                self.reply_direct(message, &reply).await;
                return Ok(false);
            }
        }
        let state = self.store.peer_state(&message.channel, &peer.id)?;
        match access::verdict(&policy, &message.chat, &peer.id, state) {
            Verdict::Admit => Ok(true),
            Verdict::Ignore(why) => {
                tracing::info!(channel = %message.channel, peer = %peer.id, why, "message not passed on");
                Ok(false)
            }
            Verdict::Pair => {
                let now = now_ms();
                if let Some(pending) =
                    self.store
                        .pending_pairing_for(&message.channel, &peer.id, now)?
                {
                    self.reply_direct(message, &access::pairing_reply(&pending.code))
                        .await;
                    return Ok(false);
                }
                let request = access::PairingRequest {
                    channel: message.channel.clone(),
                    peer_id: peer.id.clone(),
                    peer_name: peer.label().to_string(),
                    code: access::new_code(),
                    first_message: message.text.chars().take(500).collect(),
                    created_ms: now,
                    expires_ms: now + access::PAIRING_TTL_MS,
                    state: "pending".into(),
                };
                if self
                    .store
                    .insert_pairing(&request, access::MAX_PENDING_PER_CHANNEL)?
                {
                    tracing::info!(channel = %message.channel, peer = %peer.id, "pairing requested");
                    self.reply_direct(message, &access::pairing_reply(&request.code))
                        .await;
                    self.emit(EngineEvent::PairingRequested { request });
                } else {
                    tracing::warn!(channel = %message.channel, peer = %peer.id, "too many pairing requests waiting; no code given");
                }
                Ok(false)
            }
        }
    }

    /// Admits or refuses a pending pairing code; `None` when no such code waits.
    pub(crate) fn resolve_pairing(
        &self,
        channel: &str,
        code: &str,
        state: &str,
        decided_by: &str,
    ) -> anyhow::Result<Option<crate::access::PairingRequest>> {
        let code = crate::access::normalise_code(code);
        let resolved = self
            .store
            .resolve_pairing(channel, &code, state, decided_by, now_ms())?;
        if let Some(request) = &resolved {
            tracing::info!(%channel, peer = %request.peer_id, %state, "pairing resolved");
            self.emit(EngineEvent::PairingResolved {
                request: request.clone(),
                decided_by: decided_by.to_string(),
            });
        }
        Ok(resolved)
    }

    /// Answers a message directly in its chat (not through the agent).
    async fn reply_direct(&self, message: &InboundMessage, text: &str) {
        if let Some(channel) = self.channel(&message.channel) {
            if let Err(e) = channel.send(&message.target, text).await {
                tracing::warn!(channel = %message.channel, error = %e, "cannot answer in the chat");
            }
        }
    }

    /// Tells everyone how an approval ended: the host (event) and the chat (its prompt updated).
    pub(crate) fn resolved(&self, approval: &ApprovalRecord) {
        let decided_by = approval.decided_by.clone().unwrap_or_default();
        let surface = approval.surface.clone().unwrap_or_default();
        self.emit(EngineEvent::ApprovalResolved {
            approval_id: approval.id.clone(),
            action: approval.state.clone(),
            decided_by: decided_by.clone(),
            surface: surface.clone(),
        });
        let (Some(message_id), Some(channel)) = (
            approval.chat_message_id.clone(),
            self.channel(&approval.channel),
        ) else {
            return;
        };
        let line =
            crate::approvals::outcome_line(&approval.tool, &approval.state, &decided_by, &surface);
        let target = approval.target.clone();
        self.spawn(async move {
            if let Err(e) = channel.close_approval(&target, &message_id, &line).await {
                tracing::debug!(error = %e, "cannot update the approval's chat message");
            }
        });
    }

    /// Decides a pending approval from any surface: first answer wins, the audit log records it,
    /// the run hears of it, and every surface is updated.
    pub(crate) fn decide(
        &self,
        approval_id: &str,
        decision: ToolDecision,
        decided_by: &str,
        surface: &str,
    ) -> anyhow::Result<Resolution> {
        let resolution = self.store.resolve_approval(
            approval_id,
            decision.as_str(),
            decided_by,
            surface,
            now_ms(),
        )?;
        if let Resolution::Decided(approval) = &resolution {
            tracing::info!(tool = %approval.tool, action = decision.as_str(), %surface, "approval decided");
            self.resolved(approval);
            // The run picks the decision up now if it is following its events; otherwise it finds
            // it in the store when it resumes.
            self.control_run(
                &approval.run_local_id,
                RunControl::Decide {
                    tool_call_id: approval.tool_call_id.clone(),
                    decision,
                },
            );
        }
        Ok(resolution)
    }

    async fn send_decisions(
        &self,
        run: &RunRecord,
        server_run: &str,
        progress: &mut Progress,
        decisions: Vec<(String, ToolDecision)>,
    ) {
        let decisions: Vec<(String, ToolDecision)> = decisions
            .into_iter()
            .filter(|(id, _)| !progress.decided.contains(id) && !progress.handled.contains(id))
            .collect();
        if decisions.is_empty() {
            return;
        }
        let key = format!(
            "decide:{}:{}",
            server_run,
            decisions
                .iter()
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        match self
            .client()
            .decide(&run.session_id, server_run, &decisions, &key)
            .await
        {
            Ok(()) => {
                for (id, _) in decisions {
                    progress.decided.insert(id);
                }
            }
            Err(e) => {
                tracing::warn!(conversation = %run.routing_key, error = %e, "tool decisions were not accepted")
            }
        }
    }

    /// Matches the run's stored approvals with the server's `tools/pending` after a restart: a call
    /// the server no longer waits for is closed as expired; calls it waits for are looked at again
    /// (and asked for again when the store lost them).
    async fn reconcile_approvals(
        &self,
        run: &RunRecord,
        server_run: &str,
        progress: &mut Progress,
    ) -> anyhow::Result<()> {
        let pending = match self.client().pending_tools(&run.session_id).await {
            Ok(p) if p.run_id.as_deref() == Some(server_run) => p.tool_calls,
            Ok(_) => Vec::new(),
            Err(e) => {
                tracing::info!(error = %e, "cannot read the pending tool calls after a restart; the watchdog will settle the run");
                return Ok(());
            }
        };
        progress
            .waiting
            .extend(pending.iter().map(|c| c.id.clone()));
        for approval in self
            .store
            .pending_approvals()?
            .into_iter()
            .filter(|a| a.run_local_id == run.local_id)
        {
            if pending.iter().any(|c| c.id == approval.tool_call_id) {
                continue;
            }
            if let Resolution::Decided(closed) = self.store.resolve_approval(
                &approval.id,
                "expired",
                "server",
                "engine",
                now_ms(),
            )? {
                tracing::info!(tool = %approval.tool, "a pending approval the server no longer waits for was closed");
                self.resolved(&closed);
            }
        }
        Ok(())
    }

    /// Closes pending approvals whose run is gone (it ended while the engine was down).
    pub(crate) fn close_orphan_approvals(&self) -> anyhow::Result<()> {
        let runs: HashSet<String> = self
            .store
            .unfinished_runs()?
            .into_iter()
            .map(|r| r.local_id)
            .collect();
        for approval in self
            .store
            .pending_approvals()?
            .into_iter()
            .filter(|a| !runs.contains(&a.run_local_id))
        {
            self.store
                .resolve_approval(&approval.id, "expired", "server", "engine", now_ms())?;
        }
        Ok(())
    }

    /// The deadline of the run's earliest pending approval.
    fn next_expiry(&self, run: &RunRecord) -> Option<Instant> {
        let pending = self.store.pending_approvals().ok()?;
        let earliest = pending
            .iter()
            .filter(|a| a.run_local_id == run.local_id)
            .map(|a| a.deadline_ms)
            .min()?;
        let wait = (earliest - now_ms()).max(0) as u64;
        Some(Instant::now() + Duration::from_millis(wait))
    }

    async fn expire_approvals(
        &self,
        run: &RunRecord,
        server_run: &str,
        progress: &mut Progress,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        let due: Vec<ApprovalRecord> = self
            .store
            .pending_approvals()?
            .into_iter()
            .filter(|a| a.run_local_id == run.local_id && a.deadline_ms <= now)
            .collect();
        let mut decisions = Vec::new();
        for approval in due {
            if let Resolution::Decided(a) =
                self.store
                    .resolve_approval(&approval.id, "expired", "timeout", "engine", now)?
            {
                let waited = a.deadline_ms - a.created_ms;
                let minutes = (waited + 59_999) / 60_000;
                let unit = if minutes == 1 { "minute" } else { "minutes" };
                self.resolved(&a);
                if let Some(channel) = self.channel(&a.channel) {
                    let text = format!(
                        "⏱ Nobody approved `{}` within {minutes} {unit}, so it was rejected. Send your message again to retry.",
                        a.tool
                    );
                    if let Err(e) = channel.send(&a.target, &text).await {
                        tracing::warn!(error = %e, "cannot announce the expired approval");
                    }
                }
                decisions.push((a.tool_call_id, ToolDecision::Reject));
            }
        }
        self.send_decisions(run, server_run, progress, decisions)
            .await;
        Ok(())
    }

    /// Cancels the run on the server and rejects its waiting calls (the server keeps a run that waits
    /// for approval waiting after a cancel).
    async fn cancel_run(&self, run: &RunRecord, server_run: &str, progress: &Progress) {
        let client = self.client();
        let key = format!("cancel:{server_run}");
        if let Err(e) = client.cancel(&run.session_id, server_run, &key).await {
            tracing::info!(error = %e, "cancel not accepted");
        }
        let waiting: Vec<(String, ToolDecision)> = progress
            .waiting
            .iter()
            .filter(|id| !progress.handled.contains(*id) && !progress.decided.contains(*id))
            .map(|id| (id.clone(), ToolDecision::Reject))
            .collect();
        if !waiting.is_empty() {
            if let Ok(pending) = client.pending_tools(&run.session_id).await {
                let still: Vec<(String, ToolDecision)> = waiting
                    .into_iter()
                    .filter(|(id, _)| pending.tool_calls.iter().any(|c| &c.id == id))
                    .collect();
                if !still.is_empty() {
                    let _ = client
                        .decide(
                            &run.session_id,
                            server_run,
                            &still,
                            &format!("cancel-reject:{server_run}"),
                        )
                        .await;
                }
            }
        }
        for approval in self
            .store
            .pending_approvals()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a.run_local_id == run.local_id)
        {
            if let Ok(Resolution::Decided(closed)) =
                self.store
                    .resolve_approval(&approval.id, "reject", "cancel", "engine", now_ms())
            {
                self.resolved(&closed);
            }
        }
    }
}

/// What a run has shown so far.
#[derive(Default)]
struct Progress {
    text: String,
    completed_text: Vec<String>,
    /// Whether any event of this run was seen yet.
    seen_any: bool,
    /// Events were lost (gap); the final text must come from the server's history.
    incomplete: bool,
    waiting: HashSet<String>,
    /// Calls the server started, finished or rejected: never decided again.
    handled: HashSet<String>,
    decided: HashSet<String>,
    requested: HashSet<String>,
    settle_pending: bool,
}

/// Says who decided an approval first, and where.
fn already_line(approval: &ApprovalRecord) -> String {
    format!(
        "Already decided: {}",
        crate::approvals::outcome_line(
            &approval.tool,
            &approval.state,
            approval.decided_by.as_deref().unwrap_or(""),
            approval.surface.as_deref().unwrap_or("")
        )
    )
}

/// Said when a message queues behind a tool call that waits for approval.
pub(crate) fn approval_reminder(tool: &str) -> String {
    format!(
        "⏳ Queued. The agent is waiting for your approval to run `{tool}`; approve or reject it first, and I'll answer this after."
    )
}

/// Adds queued messages to a run: texts joined with a blank line, watch contexts folded in.
fn absorb(run: &mut RunRecord, rows: &[JournalEntry]) {
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
        parts.push(match &row.context {
            Some(consumed) => enrich(&consumed.context, &consumed.notification, &row.text),
            None => row.text.clone(),
        });
    }
    run.text = parts.join("\n\n");
    // A new body needs a new key: the server answers a reused key with a different body with 409.
    run.idempotency_key = uuid::Uuid::new_v4().to_string();
}

/// Two server start times within a few seconds are the same start (uptime is whole seconds).
fn same_epoch(a: i64, b: i64) -> bool {
    (a - b).abs() <= 3
}

/// What the approval mode and rules say about a call; `None` means a person must decide.
pub(crate) fn policy(
    config: &Config,
    rules: &[crate::store::ApprovalRule],
    call: &ProposedToolCall,
) -> Option<ToolDecision> {
    let listed = config
        .gateway
        .approval_allowlist
        .iter()
        .any(|name| tool_matches(name, &call.name));
    match config.gateway.approval_mode {
        ApprovalMode::AllowAll => Some(ToolDecision::Accept),
        ApprovalMode::DenyAll => Some(ToolDecision::Reject),
        ApprovalMode::Allowlist => Some(if listed {
            ToolDecision::Accept
        } else {
            ToolDecision::Reject
        }),
        ApprovalMode::Ask => {
            let ruled = rules.iter().any(|rule| {
                tool_matches(&rule.tool, &call.name)
                    && rule
                        .arg_pattern
                        .as_deref()
                        .is_none_or(|pattern| arguments_match(pattern, &call.arguments))
            });
            (listed || ruled).then_some(ToolDecision::Accept)
        }
    }
}

/// A configured name matches the server's tool name with or without its `stakpak__` prefix.
fn tool_matches(configured: &str, tool: &str) -> bool {
    configured == tool || tool.rsplit("__").next() == Some(configured)
}

/// A rule's argument pattern: a `*` wildcard pattern matched against the arguments' JSON text (or,
/// for a single-string-argument call, that string).
fn arguments_match(pattern: &str, arguments: &serde_json::Value) -> bool {
    let text = match arguments {
        serde_json::Value::Object(map) if map.len() == 1 => match map.values().next() {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => arguments.to_string(),
        },
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    wildcard(pattern, &text)
}

fn wildcard(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(stripped) = rest.strip_prefix(part) else {
                return false;
            };
            rest = stripped;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// The dispatcher's intake, as channels see it.
pub(crate) struct DispatcherIntake(pub(crate) Arc<Dispatcher>);

#[async_trait]
impl Intake for DispatcherIntake {
    async fn decide(
        &self,
        approval_id: &str,
        choice: ChatChoice,
        clicker: &crate::model::Peer,
        surface: &str,
    ) -> ChoiceOutcome {
        let dispatcher = &self.0;
        let approval = match dispatcher.store.approval(approval_id) {
            // A button only decides the approval shown in its own channel.
            Ok(Some(a)) if a.channel == surface => a,
            Ok(Some(_)) => {
                return ChoiceOutcome::NotFound("This request is not from this chat.".into())
            }
            Ok(None) => {
                return ChoiceOutcome::NotFound("This request is no longer pending.".into())
            }
            Err(e) => return ChoiceOutcome::NotFound(format!("Cannot read the request: {e}")),
        };
        let owners = crate::channels::owners_in(&dispatcher.config(), surface);
        // Only the person who asked, or an owner, decides what runs on the user's machine.
        if clicker.id != approval.requester_id && !owners.contains(&clicker.id) {
            tracing::info!(clicker = %clicker.id, tool = %approval.tool, "refused an approval click from someone else");
            return ChoiceOutcome::NotAllowed(format!(
                "Sorry, only {} or an owner of this bot can decide this request.",
                approval.requester
            ));
        }
        if approval.state != "pending" {
            return ChoiceOutcome::AlreadyDecided(already_line(&approval));
        }
        let decision = match choice {
            ChatChoice::Reject => ToolDecision::Reject,
            ChatChoice::Approve | ChatChoice::AlwaysAllow => ToolDecision::Accept,
        };
        let who = clicker.label().to_string();
        match dispatcher.decide(approval_id, decision, &who, surface) {
            Ok(Resolution::Decided(decided)) => {
                if choice == ChatChoice::AlwaysAllow {
                    if let Err(e) = dispatcher.store.add_rule(&decided.tool, None, &who) {
                        tracing::warn!(error = %e, "cannot save the always-allow rule");
                    }
                }
                ChoiceOutcome::Decided(crate::approvals::outcome_line(
                    &decided.tool,
                    decision.as_str(),
                    &who,
                    surface,
                ))
            }
            Ok(Resolution::AlreadyDecided(other)) => {
                ChoiceOutcome::AlreadyDecided(already_line(&other))
            }
            Ok(Resolution::NotFound) => {
                ChoiceOutcome::NotFound("This request is no longer pending.".into())
            }
            Err(e) => ChoiceOutcome::NotFound(format!("Cannot record the decision: {e}")),
        }
    }

    async fn accept(&self, message: InboundMessage) -> anyhow::Result<Accepted> {
        let dispatcher = &self.0;
        let config = dispatcher.config();
        if !dispatcher.admit(&config, &message).await? {
            return Ok(Accepted::Refused);
        }
        let key = routing_key(
            &config.routing,
            &message.channel,
            &message.peer,
            &message.chat,
        );
        let accepted = dispatcher.store.accept(&message, &key, now_ms())?;
        let Accepted::New(journal_id) = accepted else {
            tracing::debug!(channel = %message.channel, "duplicate message dropped");
            return Ok(accepted);
        };
        let queued = dispatcher.is_active(&key);
        tracing::info!(channel = %message.channel, conversation = %key, journal = journal_id, queued, "message accepted");
        dispatcher.emit(EngineEvent::InboundAccepted {
            journal_id,
            channel: message.channel.clone(),
            routing_key: key.clone(),
            peer: message.peer.label().to_string(),
            queued,
        });
        if let Some(channel) = dispatcher.channel(&message.channel) {
            let target = message.target.clone();
            // A message behind a call that waits for approval does not answer it: say so, so the
            // person knows what holds the conversation up.
            let waiting_tool = if queued {
                dispatcher
                    .store
                    .pending_approvals()?
                    .into_iter()
                    .find(|a| a.routing_key == key)
                    .map(|a| a.tool)
            } else {
                None
            };
            tokio::spawn(async move {
                let shown = match waiting_tool {
                    Some(tool) => channel
                        .send(&target, &approval_reminder(&tool))
                        .await
                        .map(|_| ()),
                    None => {
                        channel
                            .notice(
                                &target,
                                if queued {
                                    Notice::Queued
                                } else {
                                    Notice::Received
                                },
                            )
                            .await
                    }
                };
                if let Err(e) = shown {
                    tracing::debug!(error = %e, "notice not shown");
                }
            });
        }
        dispatcher.wake(&key);
        Ok(accepted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, args: serde_json::Value) -> ProposedToolCall {
        ProposedToolCall {
            id: "c".into(),
            name: name.into(),
            arguments: args,
            metadata: None,
        }
    }

    #[test]
    fn modes_decide_as_documented() {
        let mut config = Config::default();
        config.gateway.approval_allowlist = vec!["view".into()];
        let run = call("stakpak__run_command", serde_json::json!({"command": "ls"}));
        let view = call("stakpak__view", serde_json::json!({"path": "/tmp"}));
        let cases = [
            (ApprovalMode::AllowAll, &run, Some(ToolDecision::Accept)),
            (ApprovalMode::DenyAll, &view, Some(ToolDecision::Reject)),
            (ApprovalMode::Allowlist, &view, Some(ToolDecision::Accept)),
            (ApprovalMode::Allowlist, &run, Some(ToolDecision::Reject)),
            (ApprovalMode::Ask, &view, Some(ToolDecision::Accept)),
            (ApprovalMode::Ask, &run, None),
        ];
        for (mode, call, want) in cases {
            config.gateway.approval_mode = mode;
            assert_eq!(policy(&config, &[], call), want, "{mode:?} {}", call.name);
        }
    }

    #[test]
    fn rules_with_patterns_narrow_what_is_allowed() {
        let config = Config::default();
        let rule = crate::store::ApprovalRule {
            id: 1,
            tool: "run_command".into(),
            arg_pattern: Some("git *".into()),
            created_ms: 0,
            created_by: "me".into(),
        };
        let git = call(
            "stakpak__run_command",
            serde_json::json!({"command": "git status"}),
        );
        let rm = call(
            "stakpak__run_command",
            serde_json::json!({"command": "rm -rf /"}),
        );
        assert_eq!(
            policy(&config, std::slice::from_ref(&rule), &git),
            Some(ToolDecision::Accept)
        );
        assert_eq!(policy(&config, &[rule], &rm), None);
    }

    #[test]
    fn wildcards() {
        for (pattern, text, want) in [
            ("git *", "git status", true),
            ("*", "x", true),
            ("a*c", "abc", true),
            ("a*c", "abd", false),
            ("ls", "ls -l", false),
        ] {
            assert_eq!(wildcard(pattern, text), want, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn absorbed_messages_join_with_a_blank_line() {
        let mut run = RunRecord {
            local_id: "l".into(),
            routing_key: "k".into(),
            session_id: "s".into(),
            server_run_id: None,
            state: RunState::Posting,
            text: String::new(),
            idempotency_key: String::new(),
            cursor_start: None,
            journal_ids: vec![],
            reply: None,
            delivered_chunks: 0,
        };
        let row = |id: i64, text: &str| JournalEntry {
            id,
            channel: "c".into(),
            routing_key: "k".into(),
            peer: crate::model::Peer::new("p"),
            chat: crate::model::ChatType::Direct,
            target: crate::model::DeliveryTarget::chat("p"),
            text: text.into(),
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
