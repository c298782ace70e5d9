//! A fake Stakpak agent server, faithful to `shared/contracts/stakpak-server.md`.
//!
//! It serves the HTTP + SSE API of `stakpak up` on `127.0.0.1`, with a scripted "model" that reads
//! markers in the latest user text, and records what it received so tests can assert on it.
//!
//! ```no_run
//! # async fn demo() {
//! use switchboard_testkit::stakpak::FakeStakpak;
//!
//! let fake = FakeStakpak::start().await;
//! let url = fake.url();                // "http://127.0.0.1:PORT"
//! let token = fake.token();            // Some(bearer token)
//! // … drive the client under test against `url` …
//! fake.wait_for("one run", |f| f.runs_started() == 1).await;
//! assert!(fake.misdecisions().is_empty());
//! # let _ = (url, token);
//! # }
//! ```
//!
//! # The script ("model") markers
//!
//! Markers are whole words anywhere in the latest user text (several may be combined):
//!
//! | marker | the run |
//! |---|---|
//! | none | one reply `echo: <user text>` |
//! | `USE_TOOL <name> <json-args>` (one per line) | proposes `stakpak__<name>` calls; read-only tools ([`AUTO_APPROVED_TOOLS`]) are auto-approved, others wait for a decision; then replies `done: <results>` |
//! | `LONG_REPLY [n]` | n (default 6) paragraphs of ~275 chars, separated by blank lines |
//! | `BIG_REPLY <bytes>` | one `text_delta` of exactly that many bytes, with `é` and `👋` in it |
//! | `FAIL_500` | two `retry_attempt` (reported 2000 / 4000 ms, really 20 ms), then `run_error`; `run_status` `failed` |
//! | `FAIL_500_ONCE` | one `retry_attempt`, then the normal reply |
//! | `SLOW <secs>` | waits that long (float) before answering |
//! | `SLOW_POST <secs>` | the run starts at once, but the POST that started it answers only after that long |
//! | `DRIP <n> <secs>` | a model that streams: the reply in `n` `text_delta`s spread over `secs` |
//! | `TOOL_SECS <secs>` | with `USE_TOOL`: each approved call takes that long to run |
//! | `SILENT_END` | after `run_started`, `turn_started`: no more events; the reply is stored as a message and the run is idle |
//! | `EMPTY_REPLY` | no `text_delta`/`text_complete`, but `run_completed` and a stored reply `fallback: <user text>` |
//! | `HOLD <name>` | waits until [`FakeStakpak::release`]`(name)` (an early release counts), then replies |
//! | `DROP_STREAM` | after `run_started` + `turn_started`, cuts the session's open streams, then carries on |
//! | `MALFORMED_SSE` | writes junk (no-colon line, non-JSON `data:`, unknown event, bad `retry:`) before the reply |
//! | `SAY_FIRST` | with `USE_TOOL`: the turn that proposes the calls first says `I'll look into it.`, as real models do |
//! | `DROP_WAITING` | with `USE_TOOL`: `tool_calls_proposed` and `waiting_for_tool_approval` are never sent (only `tools/pending` lists the calls) |

mod demo;
mod http;
mod run;
mod script;
mod sse;
mod state;
mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use script::{AUTO_APPROVED_TOOLS, TOOL_PREFIX};

use state::{RunState, Shared};

/// The version the fake reports on `/v1/health`.
pub const VERSION: &str = "0.3.88-fake";

/// How to start the fake. Start from `FakeOptions::default()` and change what the test needs.
#[derive(Clone, Debug)]
pub struct FakeOptions {
    /// Bearer token; `None` serves without auth. The default is a random token.
    pub token: Option<String>,
    /// Port on 127.0.0.1; 0 (the default) picks a free one.
    pub port: u16,
    /// Idle time before a `: keepalive` comment (the real server: 15 s).
    pub keepalive: Duration,
    /// Write `id:7` / `event:x` / `data:{…}` / `:keepalive` instead of `id: 7` (some builds do).
    pub no_space_framing: bool,
    /// End lines with CRLF instead of LF.
    pub crlf: bool,
    /// Write the event stream in 3-byte pieces, each flushed on its own, so multi-byte UTF-8
    /// characters are split across reads.
    pub split_writes: bool,
    /// Events kept per session for `Last-Event-ID` replay (the real server: about 4096).
    pub ring_capacity: usize,
    /// Give the server a new random token on [`FakeStakpak::restart`], as `stakpak up` does when it
    /// generates its token. Off by default.
    pub rotate_token_on_restart: bool,
    /// Number tool calls from `call_0` in every run, as servers with positional ids do, so a later
    /// run reuses the ids of an earlier one. Off by default (ids are unique for the server's life).
    pub positional_tool_ids: bool,
    /// The demo agent: plain words get a streamed answer, and asking it to do something proposes
    /// a command that waits for approval, then "runs" with made-up output (markers still work).
    pub demo: bool,
}

impl Default for FakeOptions {
    fn default() -> FakeOptions {
        FakeOptions {
            token: Some(random_token()),
            port: 0,
            keepalive: Duration::from_secs(15),
            no_space_framing: false,
            crlf: false,
            split_writes: false,
            ring_capacity: 4096,
            rotate_token_on_restart: false,
            positional_tool_ids: false,
            demo: false,
        }
    }
}

impl FakeOptions {
    fn framing(&self) -> sse::Framing {
        sse::Framing {
            space: !self.no_space_framing,
            crlf: self.crlf,
        }
    }
}

/// A route a test can make misbehave with [`FakeStakpak::fail_next`] and
/// [`FakeStakpak::lose_next_answer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST /v1/sessions`: creating a session.
    Sessions,
    /// `POST /v1/sessions/{id}/messages`.
    Messages,
    /// `GET /v1/sessions/{id}/tools/pending`.
    Pending,
    /// `POST /v1/sessions/{id}/tools/decisions` (and `/tools/resolve`).
    Decisions,
}

impl Route {
    pub(crate) fn of(method: &str, path: &str) -> Option<Route> {
        if (method, path) == ("POST", "/v1/sessions") {
            return Some(Route::Sessions);
        }
        let rest = path.strip_prefix("/v1/sessions/")?;
        let (_, tail) = rest.split_once('/')?;
        match (method, tail) {
            ("POST", "messages") => Some(Route::Messages),
            ("GET", "tools/pending") => Some(Route::Pending),
            ("POST", "tools/decisions" | "tools/resolve") => Some(Route::Decisions),
            _ => None,
        }
    }
}

/// How [`FakeStakpak::end_waiting_run`] ends a run whose calls wait for a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// `run_completed` (stop reason `completed`), the session idle.
    Completed,
    /// `run_error`, the session `failed`.
    Error,
    /// No event at all: the session is idle, and only its status says so.
    Silent,
}

/// One HTTP exchange the fake answered.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    /// Path with the query string, e.g. `/v1/sessions/…/messages?limit=1`.
    pub path: String,
    /// Header names in lower case; repeated headers joined with `, `.
    pub headers: BTreeMap<String, String>,
    pub body: RecordedBody,
    pub status: u16,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// A recorded request body.
#[derive(Clone, Debug, PartialEq)]
pub enum RecordedBody {
    Empty,
    Json(Value),
    /// Not JSON: the raw text (lossy UTF-8).
    Text(String),
}

impl RecordedBody {
    pub fn json(&self) -> Option<&Value> {
        match self {
            RecordedBody::Json(v) => Some(v),
            _ => None,
        }
    }
}

/// A `context` item of a message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContextItem {
    pub name: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Value>,
}

/// A `POST …/messages` the fake accepted (200), fresh or replayed.
#[derive(Clone, Debug, PartialEq)]
pub struct PostedMessage {
    pub session_id: String,
    /// The text of `message.content`.
    pub text: String,
    /// `message`, `steering` or `follow_up`.
    pub kind: String,
    /// The run id answered.
    pub run_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub context: Vec<ContextItem>,
    pub overrides: Option<Value>,
    /// `model` as sent (null or absent: the server's default).
    pub model: Option<String>,
    /// Answered from the idempotency store: no new run was started.
    pub replayed: bool,
    /// The `url` of each image part of `message.content` (`data:image/png;base64,…`).
    pub images: Vec<String>,
}

/// A tool decision the fake accepted over HTTP (including ones that errored the run).
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedDecision {
    pub session_id: String,
    pub run_id: String,
    pub tool_call_id: String,
    /// `accept`, `reject` or `custom_result`.
    pub action: String,
    pub content: Option<String>,
}

/// Timestamps of one run, taken in the fake: its message arrived (`posted_at`) and its
/// `run_completed` was handed to the subscribers (`completed_at`).
#[derive(Clone, Debug)]
pub struct RunTiming {
    pub session_id: String,
    pub run_id: String,
    pub text: String,
    pub posted_at: std::time::Instant,
    pub completed_at: Option<std::time::Instant>,
}

/// The fake server. Cheap to clone; the server stops when the last clone is dropped.
#[derive(Clone)]
pub struct FakeStakpak {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        let mut st = self.shared.lock();
        for session in st.sessions.values_mut() {
            if session.active().is_some() {
                session.end_run(RunState::Idle);
            }
        }
        st.cut_streams(None);
    }
}

impl FakeStakpak {
    /// Starts on a free port with a random token and default options.
    ///
    /// # Panics
    /// If the loopback port cannot be bound.
    pub async fn start() -> FakeStakpak {
        FakeStakpak::start_with(FakeOptions::default()).await
    }

    /// Starts with these options.
    ///
    /// # Panics
    /// If `127.0.0.1:opts.port` cannot be bound; use [`FakeStakpak::try_start_with`] to handle it.
    pub async fn start_with(opts: FakeOptions) -> FakeStakpak {
        match FakeStakpak::try_start_with(opts).await {
            Ok(fake) => fake,
            Err(err) => panic!("the fake stakpak server could not bind: {err}"),
        }
    }

    /// Starts with these options, or says why the port could not be bound.
    pub async fn try_start_with(opts: FakeOptions) -> std::io::Result<FakeStakpak> {
        let listener = TcpListener::bind(("127.0.0.1", opts.port)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(opts, CancellationToken::new()));
        tokio::spawn(serve(listener, shared.clone()));
        tracing::debug!(%addr, "fake stakpak listening");
        Ok(FakeStakpak {
            inner: Arc::new(Inner { shared, addr }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The bearer token the server wants now (`None`: no auth).
    pub fn token(&self) -> Option<String> {
        self.shared().lock().token.clone()
    }

    /// Changes the token from now on (`None` turns auth off).
    pub fn set_token(&self, token: Option<String>) {
        self.shared().lock().token = token;
    }

    /// Every HTTP request answered so far, in the order the answers were made.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared().lock().records.requests.clone()
    }

    /// Every accepted `POST …/messages`, including idempotent replays (`replayed: true`).
    pub fn posted_messages(&self) -> Vec<PostedMessage> {
        self.shared().lock().records.posted.clone()
    }

    /// When each run's message arrived and when its `run_completed` was sent, for relay benchmarks.
    pub fn run_timings(&self) -> Vec<RunTiming> {
        self.shared().lock().records.timings.clone()
    }

    /// Runs started by `POST …/messages` (replays and [`FakeStakpak::start_foreign_run`] not counted).
    pub fn runs_started(&self) -> usize {
        self.shared().lock().records.runs_started
    }

    /// Every tool decision accepted over HTTP.
    pub fn decisions(&self) -> Vec<RecordedDecision> {
        self.shared().lock().records.decisions.clone()
    }

    /// Decisions for calls that were not waiting (auto-approved, already decided or unknown); each
    /// one errored its run. A correct client never causes one.
    pub fn misdecisions(&self) -> Vec<String> {
        self.shared().lock().records.misdecisions.clone()
    }

    /// `(id, title)` of every session, oldest first.
    pub fn sessions(&self) -> Vec<(String, String)> {
        let st = self.shared().lock();
        let mut sessions: Vec<_> = st.sessions.values().collect();
        sessions.sort_by_key(|s| s.seq);
        sessions
            .into_iter()
            .map(|s| (s.id.to_string(), s.title.clone()))
            .collect()
    }

    /// The session's `run_status.state` (`idle`, `starting`, `running`, `failed`), if it exists.
    pub fn run_state(&self, session_id: &str) -> Option<String> {
        let id = Uuid::parse_str(session_id).ok()?;
        let st = self.shared().lock();
        st.sessions
            .get(&id)
            .map(|s| s.run_status().state.to_string())
    }

    /// The session's stored messages (as `GET …/messages` returns them), if it exists.
    pub fn messages(&self, session_id: &str) -> Option<Vec<Value>> {
        let id = Uuid::parse_str(session_id).ok()?;
        let st = self.shared().lock();
        st.sessions.get(&id).map(|s| {
            s.messages
                .iter()
                .map(|m| serde_json::to_value(m).unwrap_or_default())
                .collect()
        })
    }

    /// `(id, event name)` of the events still in the session's ring, oldest first.
    pub fn events(&self, session_id: &str) -> Vec<(u64, String)> {
        let Ok(id) = Uuid::parse_str(session_id) else {
            return Vec::new();
        };
        let st = self.shared().lock();
        st.logs
            .get(&id)
            .map(|log| log.events().map(|e| (e.id, e.name.to_string())).collect())
            .unwrap_or_default()
    }

    /// The newest event id of the session (0 when none since the last restart).
    pub fn last_event_id(&self, session_id: &str) -> u64 {
        let Ok(id) = Uuid::parse_str(session_id) else {
            return 0;
        };
        self.shared()
            .lock()
            .logs
            .get(&id)
            .map_or(0, state::EventLog::last_id)
    }

    /// Deletes a session as if the user did it on the server: its run stops, later calls get 404.
    pub fn delete_session(&self, id: &str) {
        if let Ok(id) = Uuid::parse_str(id) {
            self.shared().lock().remove_session(id);
        }
    }

    /// Opens the `HOLD <name>` gate. Releasing before a run reaches the gate works; a released name
    /// stays released, so use a fresh name per hold.
    pub fn release(&self, name: &str) {
        self.shared().lock().release_gate(name);
    }

    /// Cuts every open event stream now, without a closing frame.
    pub fn drop_streams(&self) {
        self.shared().lock().cut_streams(None);
    }

    /// Restarts the server on the same port, the way `stakpak up` restarts: every open connection
    /// and stream is cut without a closing event, active runs are dropped (`run_status` idle), the
    /// idempotency records are forgotten, event ids restart at 1 with empty rings, uptime restarts;
    /// sessions and messages are kept. The token changes if `rotate_token_on_restart` is set.
    pub async fn restart(&self) {
        {
            let shared = self.shared();
            let mut st = shared.lock();
            st.cut_streams(None);
            st.connections.cancel();
            st.connections = shared.shutdown.child_token();
            for session in st.sessions.values_mut() {
                if session.active().is_some() {
                    session.end_run(RunState::Idle);
                }
            }
            st.idempotency.clear();
            st.logs.clear();
            st.started_at = Instant::now();
            if shared.opts.rotate_token_on_restart && st.token.is_some() {
                st.token = Some(random_token());
            }
        }
        // Give the cut connections a moment to close, so a client's next request does not land on
        // a pooled connection that is about to die.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Starts a run "elsewhere" (not through this test's client): the session is `running`, posts
    /// get 409 `session_already_running`, and after `secs` it ends with a normal `run_completed`.
    ///
    /// # Panics
    /// If the session does not exist or already has a run.
    pub async fn start_foreign_run(&self, session_id: &str, secs: f64) {
        let id = match Uuid::parse_str(session_id) {
            Ok(id) => id,
            Err(err) => panic!("start_foreign_run: bad session id {session_id:?}: {err}"),
        };
        let mut st = self.inner.shared.lock();
        match st.sessions.get(&id) {
            None => panic!("start_foreign_run: no session {session_id}"),
            Some(s) if s.active().is_some() => {
                panic!("start_foreign_run: session {session_id} already has a run")
            }
            Some(_) => {}
        }
        let text = format!("(a run started elsewhere) SLOW {secs}");
        let script = script::Script {
            slow: Some(Duration::from_secs_f64(secs.max(0.0))),
            ..script::Script::default()
        };
        let _ = run::start(
            &self.inner.shared,
            &mut st,
            id,
            text,
            script,
            script::AutoApprove::ReadOnly,
        );
    }

    /// Makes the next `n` requests to `route` fail with 503 before the server acts on them.
    pub fn fail_next(&self, route: Route, n: u32) {
        *self.shared().lock().faults.fail.entry(route).or_default() += n;
    }

    /// Disarms every fault armed with [`FakeStakpak::fail_next`] and
    /// [`FakeStakpak::lose_next_answer`].
    pub fn heal(&self) {
        let mut st = self.shared().lock();
        st.faults.fail.clear();
        st.faults.lose.clear();
    }

    /// Makes the next request to `route` act, then lose its answer: the client gets 502 and the
    /// server keeps no idempotency record of it (a connection cut while the answer was written).
    /// For [`Route::Messages`] the run has started, so the client's retry gets 409
    /// `session_already_running`.
    pub fn lose_next_answer(&self, route: Route) {
        *self.shared().lock().faults.lose.entry(route).or_default() += 1;
    }

    /// Another client of the server answers every call of the session that waits for a decision
    /// (`accept` or not): the run goes on as if a decision had been posted, but none is recorded.
    /// Returns how many calls it decided.
    pub fn decide_elsewhere(&self, session_id: &str, accept: bool) -> usize {
        let Ok(id) = Uuid::parse_str(session_id) else {
            return 0;
        };
        let mut st = self.shared().lock();
        let Some(run) = st.sessions.get_mut(&id).and_then(|s| s.active_mut()) else {
            return 0;
        };
        let decision = if accept {
            state::Decision::Accept
        } else {
            state::Decision::Reject
        };
        let mut decided = 0;
        if let Some(round) = run.round.as_mut() {
            for call in round.calls.iter_mut() {
                if !call.auto && !call.done && call.decision.is_none() {
                    call.decision = Some(decision.clone());
                    decided += 1;
                }
            }
        }
        run.wake.notify_one();
        decided
    }

    /// Ends the session's run while its calls wait for a decision, the way `end` says (the calls
    /// never run). Returns false if the session has no run waiting.
    pub fn end_waiting_run(&self, session_id: &str, end: RunEnd) -> bool {
        let Ok(id) = Uuid::parse_str(session_id) else {
            return false;
        };
        let mut st = self.shared().lock();
        let Some(run) = st.sessions.get_mut(&id).and_then(|s| s.active_mut()) else {
            return false;
        };
        if run.round.is_none() {
            return false;
        }
        run.forced_end = Some(end);
        run.wake.notify_one();
        true
    }

    /// Polls `f` every 10 ms until it holds.
    ///
    /// # Panics
    /// After 10 s, with `what` in the message.
    pub async fn wait_for<F: Fn(&FakeStakpak) -> bool>(&self, what: &str, f: F) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if f(self) {
                return;
            }
            if Instant::now() >= deadline {
                panic!("fake stakpak: timed out after 10 s waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl std::fmt::Debug for FakeStakpak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeStakpak")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

fn random_token() -> String {
    format!("fake_{}", Uuid::new_v4().simple())
}

/// The accept loop. Connections are served by hyper directly (not `axum::serve`) so that a restart
/// can cut every open connection, the way a stopped process does.
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let app = http::router(shared.clone());
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, _) = match accepted {
            Ok(conn) => conn,
            Err(err) => {
                tracing::debug!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let cut = shared.lock().connections.clone();
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service);
            tokio::select! {
                result = conn => {
                    if let Err(err) = result {
                        tracing::trace!(%err, "connection ended with an error");
                    }
                }
                // Dropping the connection closes the socket mid-response: no final chunk.
                () = cut.cancelled() => {}
            }
        });
    }
}
