//! The dispatcher: takes accepted messages, keeps one task per conversation, runs them on the agent
//! server one at a time per session, and delivers the replies.
//!
//! The stages, one module each:
//! - [`intake`]: the access gate and the journal (what channels hand in: messages and button
//!   clicks);
//! - [`scheduler`]: one task per conversation, queueing and merging, sessions, server errors;
//! - [`run`]: a run from its POST ([`post`]) through its events ([`follow`], around the pure
//!   state machine in [`progress`]) to its reply;
//! - [`decide`]: approvals — what the policy decides, what waits for a person, the one path every
//!   answer takes, and closing them when their run ends;
//! - [`deliver`]: replies and notifications into a chat, split to fit.
//!
//! Conversations run concurrently and independently (one slow session or server call never delays
//! another), and in order within a conversation. Every step that matters is written to the store
//! before it is acted on, so a restart resumes each conversation where it stopped.

mod command;
mod decide;
mod deliver;
mod follow;
mod gate;
mod intake;
mod interactive;
mod kept;
mod media;
mod post;
mod progress;
mod run;
mod scheduler;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::PairingLimiter;
use crate::agent::AgentClient;
use crate::channels::{Channel, StatusBoard};
use crate::config::Config;
use crate::events::{EngineEvent, ServerHealth};
use crate::model::DeliveryTarget;
use crate::store::{JournalEntry, RunRecord, Store};
use crate::EngineOptions;

pub(crate) use deliver::{Delivery, DeliveryError};
pub(crate) use intake::DispatcherIntake;
pub use interactive::{CallerContext, InteractiveRun, StartError, StartedRun};

/// What a run task can be told while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunControl {
    /// An answer to one of its approvals was recorded: look at what waits now.
    Review,
    /// Cancel the run.
    Cancel,
}

/// Why a queued message `/stop` dropped was never sent (the journal entry's error).
pub(crate) const DROPPED_BY_STOP: &str = "dropped by /stop before it was sent";
/// Why the messages of a run stopped before its POST (by `/stop` or the window's stop button)
/// were never sent.
pub(crate) const STOPPED_BEFORE_SENT: &str = "stopped before it was sent";

/// A conversation's run being prepared: its messages, and whether `/stop` came meanwhile.
pub(crate) struct Preparation {
    journal_ids: Vec<i64>,
    stopped: bool,
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
    /// Counts the server settings replaced ([`Dispatcher::set_client`]), so an event stream kept
    /// open under older ones is never reused.
    server_generation: AtomicU64,
    /// How many conversations keep their event stream open between runs.
    kept: kept::KeptCount,
    channels: RwLock<HashMap<String, Arc<dyn Channel>>>,
    paused: watch::Sender<bool>,
    /// Woken when the server settings change, so work held back by a refused token resumes.
    server_changed: Notify,
    conversations: Mutex<HashMap<String, mpsc::UnboundedSender<()>>>,
    /// Conversations with a run in flight, and the way to reach that run.
    active: Mutex<HashMap<String, ActiveRun>>,
    /// Conversations whose queued messages are being made a run (session, files, the run's
    /// row), with those messages' journal ids: busy already, though no run is in flight yet.
    preparing: Mutex<HashMap<String, Preparation>>,
    /// The agent server's start time (Unix seconds), to tell its restarts apart.
    server_epoch: Mutex<Option<i64>>,
    /// How many times the start time was forgotten (a restart was suspected): an answer asked
    /// for before the last time is the old server's.
    epoch_forgotten: AtomicU64,
    /// Held while the start time is asked for, so one caller asks and the others wait for its
    /// answer; holds when the last ask failed.
    epoch_asking: tokio::sync::Mutex<Option<Instant>>,
    /// Tools seen waiting for a decision at the head of a run's queue: the server does not approve
    /// them itself, so they can be decided together with the call before them.
    needs_decision: Mutex<HashSet<String>>,
    server_state: Mutex<Option<(ServerHealth, Option<String>)>>,
    /// What strangers have been told lately, to keep what they cost in bounds.
    pairing_limits: Mutex<PairingLimiter>,
    /// The access gate's answers, sent by a task of their own (see [`gate`]).
    gate_answers: mpsc::Sender<gate::GateAnswer>,
    /// When each chat was last shown a typing indicator, so the intake and the run that starts
    /// right after it do not both send one.
    /// Keyed by channel, chat and thread (typing shows in a chat, not on a message).
    typed: Mutex<HashMap<TypingPlace, Instant>>,
    runtime: tokio::runtime::Handle,
    /// Where files people send are saved (a folder per conversation).
    files_dir: std::path::PathBuf,
}

/// A run in flight, as others reach it.
#[derive(Clone)]
struct ActiveRun {
    local_id: String,
    /// The journal ids of the messages the run answers.
    journal_ids: Vec<i64>,
    control: mpsc::UnboundedSender<RunControl>,
    /// When this process started driving it (ms), for `/status`.
    started_ms: i64,
    /// The reply written so far, for a host that opens the conversation mid-run.
    live: Arc<Mutex<String>>,
    /// The run's messages as they were when it was prepared here, so following and delivering
    /// it need not read them again; `None` for a run resumed after a restart.
    rows: Option<Arc<[JournalEntry]>>,
    /// Whether the run may have open approvals: false for a run prepared here until it files
    /// one, true for a run resumed after a restart (its approvals are in the store).
    approvals: bool,
}

/// Where a typing indicator shows: channel, chat, thread.
type TypingPlace = (String, String, Option<String>);

/// Chats whose last typing indicator is remembered; beyond this the stale ones are forgotten.
const MAX_TYPED: usize = 4096;

impl Dispatcher {
    // Each is a separate resource the engine hands in; a struct for them would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: Config,
        client: AgentClient,
        store: Store,
        board: StatusBoard,
        options: EngineOptions,
        shutdown: CancellationToken,
        paused: bool,
        files_dir: std::path::PathBuf,
    ) -> Arc<Dispatcher> {
        let (gate_answers, answers) = mpsc::channel(gate::ANSWER_QUEUE);
        let dispatcher = Arc::new(Dispatcher {
            store,
            events: board.events(),
            board,
            options,
            shutdown,
            tasks: TaskTracker::new(),
            config: RwLock::new(Arc::new(config)),
            client: RwLock::new(client),
            server_generation: AtomicU64::new(0),
            kept: kept::KeptCount::default(),
            channels: RwLock::default(),
            paused: watch::channel(paused).0,
            server_changed: Notify::new(),
            conversations: Mutex::default(),
            active: Mutex::default(),
            preparing: Mutex::default(),
            server_epoch: Mutex::default(),
            epoch_forgotten: AtomicU64::new(0),
            epoch_asking: tokio::sync::Mutex::default(),
            needs_decision: Mutex::default(),
            server_state: Mutex::default(),
            pairing_limits: Mutex::default(),
            gate_answers,
            typed: Mutex::default(),
            runtime: tokio::runtime::Handle::current(),
            files_dir,
        });
        tokio::spawn(gate::send_answers(Arc::downgrade(&dispatcher), answers));
        dispatcher
    }

    /// Shows a typing indicator in a chat, unless one was shown there within half the typing
    /// interval (it lasts about that interval on the platforms).
    pub(crate) fn typing(&self, channel: &Arc<dyn Channel>, target: &DeliveryTarget) {
        let now = Instant::now();
        let every = self.options.typing_interval;
        {
            let mut typed = self.typed.lock().unwrap_or_else(|e| e.into_inner());
            let key = (
                channel.name().to_owned(),
                target.chat_id.clone(),
                target.thread_id.clone(),
            );
            if typed.get(&key).is_some_and(|at| now - *at < every / 2) {
                return;
            }
            if typed.len() >= MAX_TYPED {
                typed.retain(|_, at| now - *at < every);
            }
            typed.insert(key, now);
        }
        let (channel, target) = (Arc::clone(channel), target.clone());
        tokio::spawn(async move {
            let _ = channel.typing(&target).await;
        });
    }

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

    /// The agent client with the generation of its settings: a stream opened with it is of
    /// that generation. The generation is read first: a client replaced in between is then
    /// tagged as older than it is, which only costs a new subscription later.
    pub(crate) fn tagged_client(&self) -> (u64, AgentClient) {
        let generation = self.server_generation.load(Ordering::SeqCst);
        (generation, self.client())
    }

    pub(crate) fn server_generation(&self) -> u64 {
        self.server_generation.load(Ordering::SeqCst)
    }

    /// Replaces the agent client (new URL or token) and wakes everything waiting on the server.
    pub(crate) fn set_client(self: &Arc<Self>, client: AgentClient) {
        *self.client.write().unwrap_or_else(|e| e.into_inner()) = client;
        self.server_generation.fetch_add(1, Ordering::SeqCst);
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
                Some((*state, detail.clone()));
        }
        let _ = self.events.send(event);
    }

    /// The last reported state of the agent server, for a host that subscribed after the report.
    pub(crate) fn server_state(&self) -> Option<(ServerHealth, Option<String>)> {
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

    /// Whether a run is in flight in this conversation, or being prepared.
    pub(crate) fn is_active(&self, key: &str) -> bool {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(key)
            || self
                .preparing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(key)
    }

    /// A conversation whose reply is in the chat is free for its next message at once: what is
    /// left of its run is the commit that records the end, which a message that comes meanwhile
    /// is queued behind anyway, and saying "a task is running" then would be wrong.
    pub(crate) fn reply_out(&self, key: &str) {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        self.preparing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Whether a message just journaled waits behind another run of its conversation: one in
    /// flight, or one being prepared from other messages.
    pub(crate) fn waits_behind(&self, key: &str, journal_id: i64) -> bool {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .is_some_and(|run| !run.journal_ids.contains(&journal_id))
            || self
                .preparing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(key)
                .is_some_and(|p| !p.journal_ids.contains(&journal_id))
    }

    /// Since when the conversation's run has been driven here (ms), if one is.
    pub(crate) fn active_since(&self, key: &str) -> Option<i64> {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .map(|run| run.started_ms)
    }

    pub(crate) fn active_keys(&self) -> HashSet<String> {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// The reply being written in a conversation, if a run is in flight.
    pub(crate) fn live_reply(&self, key: &str) -> Option<String> {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let run = active.get(key)?;
        let text = run.live.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Some(text)
    }

    /// Runs `f` on the entry of `run` if it is in flight here.
    fn with_active<R>(&self, run: &RunRecord, f: impl FnOnce(&mut ActiveRun) -> R) -> Option<R> {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&run.routing_key)
            .filter(|a| a.local_id == run.local_id)
            .map(f)
    }

    /// The messages of a run in flight as they were when it was prepared here: `None` when the
    /// run was resumed after a restart, or took in more messages since (read them then).
    fn known_rows(&self, run: &RunRecord) -> Option<Arc<[JournalEntry]>> {
        let rows = self.with_active(run, |a| a.rows.clone())??;
        let ids = rows.iter().map(|r| r.id);
        ids.eq(run.journal_ids.iter().copied()).then_some(rows)
    }

    /// Whether a run may have open approvals (true unless it is in flight here and never filed
    /// one), so a run that had none is not looked up for them.
    fn may_have_approvals(&self, run: &RunRecord) -> bool {
        self.with_active(run, |a| a.approvals).unwrap_or(true)
    }

    /// Notes that a run in flight files an approval (before it is stored).
    fn files_approval(&self, run: &RunRecord) {
        self.with_active(run, |a| a.approvals = true);
    }

    /// Stops the conversation's run: cancels the one in flight, or else makes sure the one being
    /// prepared is never posted, should it be stored before its messages are dropped (the
    /// commit that stores a run checks they are still queued; this covers the moment after
    /// it). Gives the messages of the run stopped, `None` when there was none. Preparing
    /// first, then the runs in flight, as [`Dispatcher::drive`] takes them: a run cannot slip
    /// from one to the other unseen.
    pub(crate) fn stop(&self, key: &str) -> Option<Vec<i64>> {
        let mut preparing = self.preparing.lock().unwrap_or_else(|e| e.into_inner());
        let cancelled = self
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .filter(|run| run.control.send(RunControl::Cancel).is_ok())
            .map(|run| run.journal_ids.clone());
        if cancelled.is_some() {
            return cancelled;
        }
        let preparation = preparing.get_mut(key)?;
        preparation.stopped = true;
        Some(preparation.journal_ids.clone())
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
}
