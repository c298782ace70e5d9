//! The fake server's state: one struct behind one mutex, never held across an `.await`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde_json::Value;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::sse::{StoredEvent, StreamItem};
use super::wire::{self, EventPayload, GapDetected, ProposedToolCall, RunStatusDto, SessionDto};
use super::{FakeOptions, PostedMessage, RecordedDecision, RecordedRequest};

/// What the server and the test handle share.
pub(crate) struct Shared {
    pub opts: FakeOptions,
    pub shutdown: CancellationToken,
    state: Mutex<State>,
}

impl Shared {
    pub(crate) fn new(opts: FakeOptions, shutdown: CancellationToken) -> Shared {
        let state = State::new(opts.token.clone(), shutdown.child_token());
        Shared {
            opts,
            shutdown,
            state: Mutex::new(state),
        }
    }

    /// A panic elsewhere must not wedge every later request of a test, so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(crate) struct State {
    pub token: Option<String>,
    pub started_at: Instant,
    pub sessions: HashMap<Uuid, Session>,
    next_session_seq: u64,
    /// Event logs are in memory on the real server: cleared by a restart, unlike sessions.
    pub logs: HashMap<Uuid, EventLog>,
    pub subscribers: HashMap<Uuid, Vec<UnboundedSender<StreamItem>>>,
    /// Keyed by (path, key).
    pub idempotency: HashMap<(String, String), IdemRecord>,
    /// `HOLD <name>` gates; a released name stays released.
    pub gates: HashMap<String, watch::Sender<bool>>,
    /// Cancelled (and replaced) by a restart to cut every open connection.
    pub connections: CancellationToken,
    pub next_tool_call: u64,
    pub records: Records,
    pub faults: Faults,
}

/// Misbehaviour armed by a test: the next requests of a route fail, or lose their answer.
#[derive(Default)]
pub(crate) struct Faults {
    /// Answer 503 without acting, this many times.
    pub fail: HashMap<super::Route, u32>,
    /// Act, then answer 502 and keep no idempotency record, this many times.
    pub lose: HashMap<super::Route, u32>,
}

impl Faults {
    /// Takes one armed fault of `route` from `table`, if any is left.
    pub(crate) fn take(table: &mut HashMap<super::Route, u32>, route: super::Route) -> bool {
        match table.get_mut(&route) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

#[derive(Default)]
pub(crate) struct Records {
    pub requests: Vec<RecordedRequest>,
    pub posted: Vec<PostedMessage>,
    pub decisions: Vec<RecordedDecision>,
    pub misdecisions: Vec<String>,
    pub runs_started: usize,
    pub timings: Vec<super::RunTiming>,
}

pub(crate) struct IdemRecord {
    pub request: Value,
    pub status: u16,
    pub response: Value,
}

pub(crate) struct Session {
    pub id: Uuid,
    pub seq: u64,
    pub title: String,
    pub cwd: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub messages: Vec<wire::Message>,
    pub run: RunState,
}

pub(crate) enum RunState {
    Idle,
    Failed,
    Active(ActiveRun),
}

pub(crate) struct ActiveRun {
    pub run_id: Uuid,
    /// False while `starting`: the run task has not emitted `run_started` yet.
    pub started: bool,
    pub cancel_requested: bool,
    /// Texts of `follow_up` / `steering` messages, each answered in a turn of its own.
    pub follow_ups: VecDeque<String>,
    /// The tool calls of the current turn; `tools/pending` lists them until the turn ends.
    pub round: Option<ToolRound>,
    /// Woken when a decision arrives.
    pub wake: Arc<Notify>,
    pub task: Option<AbortHandle>,
    /// Set by [`super::FakeStakpak::end_waiting_run`]: end the run instead of waiting on.
    pub forced_end: Option<super::RunEnd>,
    /// Tool calls proposed so far in this run (for positional ids).
    pub calls_proposed: u64,
}

impl ActiveRun {
    pub(crate) fn new(run_id: Uuid) -> ActiveRun {
        ActiveRun {
            run_id,
            started: false,
            cancel_requested: false,
            follow_ups: VecDeque::new(),
            round: None,
            wake: Arc::new(Notify::new()),
            task: None,
            forced_end: None,
            calls_proposed: 0,
        }
    }
}

pub(crate) struct ToolRound {
    pub calls: Vec<RoundCall>,
}

pub(crate) struct RoundCall {
    pub call: ProposedToolCall,
    /// Approved by the server itself: it needs (and accepts) no decision.
    pub auto: bool,
    pub decision: Option<Decision>,
    /// The run has executed, rejected or answered it.
    pub done: bool,
}

impl RoundCall {
    /// Why a decision for this call would not be for a call that really waits, if it would not.
    pub(crate) fn not_waiting_reason(&self) -> Option<&'static str> {
        if self.auto {
            Some("was auto-approved by the server (dispatched without a decision)")
        } else if self.decision.is_some() || self.done {
            Some("was already decided")
        } else {
            None
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Decision {
    Accept,
    Reject,
    Custom(String),
}

impl Session {
    pub(crate) fn dto(&self) -> SessionDto {
        SessionDto {
            id: self.id,
            title: self.title.clone(),
            cwd: self.cwd.clone(),
            created_at: self.created_at.clone(),
            updated_at: self.updated_at.clone(),
            run_status: self.run_status(),
        }
    }

    pub(crate) fn run_status(&self) -> RunStatusDto {
        match &self.run {
            RunState::Idle => RunStatusDto {
                state: "idle",
                run_id: None,
            },
            RunState::Failed => RunStatusDto {
                state: "failed",
                run_id: None,
            },
            RunState::Active(run) => RunStatusDto {
                state: if run.started { "running" } else { "starting" },
                run_id: Some(run.run_id),
            },
        }
    }

    pub(crate) fn active(&self) -> Option<&ActiveRun> {
        match &self.run {
            RunState::Active(run) => Some(run),
            _ => None,
        }
    }

    pub(crate) fn active_mut(&mut self) -> Option<&mut ActiveRun> {
        match &mut self.run {
            RunState::Active(run) => Some(run),
            _ => None,
        }
    }

    /// Ends the active run (if any) in `next` state, stopping its task.
    pub(crate) fn end_run(&mut self, next: RunState) {
        if let RunState::Active(run) = &self.run {
            if let Some(task) = &run.task {
                task.abort();
            }
        }
        self.run = next;
        self.touch();
    }

    pub(crate) fn touch(&mut self) {
        self.updated_at = wire::now_rfc3339();
    }
}

/// A session's event ids and its ring of recent events.
#[derive(Default)]
pub(crate) struct EventLog {
    last_id: u64,
    ring: VecDeque<Arc<StoredEvent>>,
}

/// What a new subscriber gets before live events.
#[derive(Debug, PartialEq)]
pub(crate) enum Replay {
    Nothing,
    Events(Vec<u64>),
    Gap {
        requested: u64,
        oldest: u64,
        newest: u64,
    },
}

impl EventLog {
    pub(crate) fn push(
        &mut self,
        name: &'static str,
        data_for: impl FnOnce(u64) -> String,
        capacity: usize,
    ) -> Arc<StoredEvent> {
        self.last_id += 1;
        let id = self.last_id;
        let event = Arc::new(StoredEvent {
            id,
            name,
            data: data_for(id),
        });
        self.ring.push_back(event.clone());
        while self.ring.len() > capacity.max(1) {
            self.ring.pop_front();
        }
        event
    }

    pub(crate) fn last_id(&self) -> u64 {
        self.last_id
    }

    pub(crate) fn events(&self) -> impl Iterator<Item = &Arc<StoredEvent>> {
        self.ring.iter()
    }

    /// The replay rule of the contract for `Last-Event-ID: after`.
    pub(crate) fn replay(&self, after: Option<u64>) -> Replay {
        let Some(after) = after else {
            return Replay::Nothing;
        };
        let (Some(oldest), Some(newest)) = (self.ring.front(), self.ring.back()) else {
            return Replay::Nothing;
        };
        let (oldest, newest) = (oldest.id, newest.id);
        if after >= newest {
            Replay::Nothing
        } else if after.saturating_add(1) < oldest {
            Replay::Gap {
                requested: after,
                oldest,
                newest,
            }
        } else {
            Replay::Events(((after + 1)..=newest).collect())
        }
    }
}

impl State {
    fn new(token: Option<String>, connections: CancellationToken) -> State {
        State {
            token,
            started_at: Instant::now(),
            sessions: HashMap::new(),
            next_session_seq: 0,
            logs: HashMap::new(),
            subscribers: HashMap::new(),
            idempotency: HashMap::new(),
            gates: HashMap::new(),
            connections,
            next_tool_call: 0,
            records: Records::default(),
            faults: Faults::default(),
        }
    }

    pub(crate) fn create_session(&mut self, title: String, cwd: Option<String>) -> &Session {
        self.next_session_seq += 1;
        let now = wire::now_rfc3339();
        let id = Uuid::new_v4();
        let session = Session {
            id,
            seq: self.next_session_seq,
            title,
            cwd,
            created_at: now.clone(),
            updated_at: now,
            messages: vec![wire::Message::system(SYSTEM_PROMPT)],
            run: RunState::Idle,
        };
        self.sessions.entry(id).or_insert(session)
    }

    /// Removes a session as if deleted on the server: its run stops, its ring goes.
    pub(crate) fn remove_session(&mut self, id: Uuid) -> bool {
        match self.sessions.remove(&id) {
            Some(mut session) => {
                session.end_run(RunState::Idle);
                self.logs.remove(&id);
                true
            }
            None => false,
        }
    }

    /// True while `run_id` is the session's active run; run tasks check it before each step so a run
    /// dropped by a restart, a delete or a misdecision never writes again.
    pub(crate) fn run_is_current(&self, session_id: Uuid, run_id: Uuid) -> bool {
        self.sessions
            .get(&session_id)
            .and_then(Session::active)
            .is_some_and(|run| run.run_id == run_id)
    }

    /// Assigns the next id, stores the event in the ring and sends it to every subscriber.
    pub(crate) fn emit(
        &mut self,
        capacity: usize,
        session_id: Uuid,
        run_id: Option<Uuid>,
        payload: &EventPayload,
    ) {
        if matches!(payload, EventPayload::RunCompleted { .. }) {
            let run = run_id.map(|r| r.to_string());
            if let Some(timing) = self
                .records
                .timings
                .iter_mut()
                .rev()
                .find(|t| Some(&t.run_id) == run.as_ref())
            {
                timing.completed_at = Some(std::time::Instant::now());
            }
        }
        let timestamp = wire::now_rfc3339();
        let event = self.logs.entry(session_id).or_default().push(
            payload.name(),
            |id| {
                let envelope = wire::Envelope {
                    id,
                    session_id,
                    run_id,
                    timestamp: &timestamp,
                    event: payload,
                };
                // Serializing these plain structs cannot fail.
                serde_json::to_string(&envelope).unwrap_or_default()
            },
            capacity,
        );
        self.broadcast(session_id, StreamItem::Event(event));
    }

    pub(crate) fn broadcast(&mut self, session_id: Uuid, item: StreamItem) {
        if let Some(subs) = self.subscribers.get_mut(&session_id) {
            subs.retain(|tx| tx.send(item.clone()).is_ok());
        }
    }

    /// Registers a subscriber and queues its replay, atomically with respect to `emit`.
    pub(crate) fn subscribe(
        &mut self,
        session_id: Uuid,
        last_event_id: Option<u64>,
    ) -> UnboundedReceiver<StreamItem> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(log) = self.logs.get(&session_id) {
            match log.replay(last_event_id) {
                Replay::Nothing => {}
                Replay::Events(_) => {
                    let after = last_event_id.unwrap_or(0);
                    for ev in log.events().filter(|ev| ev.id > after) {
                        let _ = tx.send(StreamItem::Event(ev.clone()));
                    }
                }
                Replay::Gap {
                    requested,
                    oldest,
                    newest,
                } => {
                    let data = serde_json::to_string(&GapDetected {
                        requested_after_id: requested,
                        oldest_available_id: oldest,
                        newest_available_id: newest,
                        resume_hint: "refresh_snapshot_then_resume",
                    })
                    .unwrap_or_default();
                    let _ = tx.send(StreamItem::Gap(data));
                }
            }
        }
        self.subscribers.entry(session_id).or_default().push(tx);
        rx
    }

    /// Cuts the open event streams of one session, or of all sessions.
    pub(crate) fn cut_streams(&mut self, session_id: Option<Uuid>) {
        let cut = |subs: Vec<UnboundedSender<StreamItem>>| {
            for tx in subs {
                let _ = tx.send(StreamItem::Cut);
            }
        };
        match session_id {
            Some(id) => {
                if let Some(subs) = self.subscribers.remove(&id) {
                    cut(subs);
                }
            }
            None => {
                for (_, subs) in self.subscribers.drain() {
                    cut(subs);
                }
            }
        }
    }

    pub(crate) fn next_tool_call_id(&mut self) -> String {
        self.next_tool_call += 1;
        format!("call_fake_{:04}", self.next_tool_call)
    }

    pub(crate) fn gate(&mut self, name: &str) -> watch::Receiver<bool> {
        self.gates
            .entry(name.to_string())
            .or_insert_with(|| watch::channel(false).0)
            .subscribe()
    }

    pub(crate) fn release_gate(&mut self, name: &str) {
        self.gates
            .entry(name.to_string())
            .or_insert_with(|| watch::channel(false).0)
            .send_replace(true);
    }
}

/// The system message every session starts with.
const SYSTEM_PROMPT: &str = "You are Stakpak (fake), a scripted stand-in for the Stakpak agent. \
You reply `echo: <text>` unless the text carries a marker of the test script.";

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(ids: std::ops::RangeInclusive<u64>, capacity: usize) -> EventLog {
        let mut log = EventLog::default();
        for _ in ids {
            log.push("run_started", |_| "{}".into(), capacity);
        }
        log
    }

    #[test]
    fn replay_rules_of_the_contract() {
        let full = log_with(1..=14, 4096);
        let small = log_with(1..=20, 5); // keeps 16..=20
        let empty = EventLog::default();
        let cases: Vec<(&EventLog, Option<u64>, Replay)> = vec![
            (&full, None, Replay::Nothing),
            (&full, Some(0), Replay::Events((1..=14).collect())),
            (&full, Some(2), Replay::Events((3..=14).collect())),
            (&full, Some(14), Replay::Nothing),
            (&full, Some(9999), Replay::Nothing),
            (&empty, Some(0), Replay::Nothing),
            (&empty, Some(7), Replay::Nothing),
            (
                &small,
                Some(1),
                Replay::Gap {
                    requested: 1,
                    oldest: 16,
                    newest: 20,
                },
            ),
            (
                &small,
                Some(0),
                Replay::Gap {
                    requested: 0,
                    oldest: 16,
                    newest: 20,
                },
            ),
            (&small, Some(15), Replay::Events((16..=20).collect())),
            (&small, Some(18), Replay::Events(vec![19, 20])),
        ];
        for (log, after, want) in cases {
            assert_eq!(log.replay(after), want, "Last-Event-ID {after:?}");
        }
    }
}
