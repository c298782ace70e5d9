//! Posting a run's message: subscribe first, then post, and handle what the server answers — a
//! deleted session, a run already going (ours, whose answer was lost, or someone else's), a
//! refused token, a transient failure or a refusal.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::kept::KeptStream;
use super::{Dispatcher, RunControl};
use crate::agent::{AgentError, EventStream, StreamItem};
use crate::channels::Notice;
use crate::events::EngineEvent;
use crate::model::JournalState;
use crate::store::{RunRecord, RunState};

impl Dispatcher {
    /// Subscribes to the session's events, then posts the run's message. Handles a deleted session
    /// (new session, once), a run already going (ours, whose answer was lost: adopt it; someone
    /// else's: wait until idle, then post) and a refused token (the messages go back to the queue
    /// until the settings change). `kept` is the conversation's stream from its last run, used
    /// instead of a new subscription when it is this session's. Returns the stream with the
    /// generation of the server settings it was opened under.
    ///
    /// `/stop` (a cancel on `control`) before the POST leaves, or while it waits to try again,
    /// means the run is never posted: its messages are marked stopped. Unless a POST may have
    /// reached the server already (`resumed`: a run left posting by a restart; or an attempt
    /// whose answer was lost): then the server says whether our run is going, and one that is
    /// is followed, with the cancel put back for the follower, which ends it on the server.
    pub(super) async fn post(
        self: &Arc<Self>,
        run: &mut RunRecord,
        mut kept: Option<KeptStream>,
        control: &mut mpsc::UnboundedReceiver<RunControl>,
        resumed: bool,
    ) -> anyhow::Result<Posted> {
        let mut replaced_session = false;
        let mut attempt = 0;
        let mut maybe_posted = resumed;
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(Posted::Not);
            }
            if cancel_asked(control) {
                return self.stop_posting(run, maybe_posted).await;
            }
            let (generation, client) = self.tagged_client();
            // Subscribe first: events of the run that come before the subscription are otherwise
            // lost, and a run that ends before it would never be seen to end. A stream kept
            // open since the last run is such a subscription already; everything this run
            // makes comes after the last event read from it.
            let reused = kept
                .take()
                .and_then(|k| k.reuse(&run.session_id, generation));
            let subscribed = match reused {
                Some((stream, last_id)) => {
                    run.cursor_start = last_id.or(run.cursor_start);
                    Ok(stream)
                }
                None => client.subscribe(&run.session_id, run.cursor_start).await,
            };
            let stream = match subscribed {
                Ok(stream) => stream,
                Err(e) => {
                    if !self.wait_unless_stopped(run, &e, attempt, control).await {
                        return Ok(Posted::Not);
                    }
                    attempt += 1;
                    continue;
                }
            };
            // A stop that came while subscribing.
            if cancel_asked(control) {
                return self.stop_posting(run, maybe_posted).await;
            }
            let posted = client
                .post_message(
                    &run.session_id,
                    &run.text,
                    &run.images,
                    run.model.as_deref(),
                    &run.idempotency_key,
                )
                .await;
            match posted {
                Ok(server_run) => {
                    self.started(run, server_run).await?;
                    return Ok(Posted::Following(Box::new(stream), generation));
                }
                Err(AgentError::NotFound(_)) if !replaced_session => {
                    // The session was deleted on the server: drop the mapping and start a new one,
                    // once. A second 404 is an error, never a loop.
                    tracing::warn!(conversation = %run.routing_key, session = %run.session_id, "session gone on the server; creating a new one");
                    replaced_session = true;
                    maybe_posted = false;
                    self.store.set_session(&run.routing_key, None, None)?;
                    let rows = self.journal_rows(run);
                    let Some(session) = self.ensure_session(&run.routing_key, &rows, None).await?
                    else {
                        return Ok(Posted::Not);
                    };
                    run.session_id = session;
                    run.cursor_start = None;
                    run.idempotency_key = uuid::Uuid::new_v4().to_string();
                    self.store.update_run(run)?;
                }
                Err(e) if e.is_conflict("session_already_running") => {
                    // Our own earlier attempt may have started this run and only its answer was
                    // lost: then it is ours, and the stream (from the cursor taken before the
                    // first attempt) replays it. Asked until the server says: a run of ours
                    // taken for another's would be posted again once it ends.
                    let ours = match self.own_run(run).await {
                        Ok(ours) => ours,
                        Err(e) => {
                            if !self.wait_unless_stopped(run, &e, attempt, control).await {
                                return Ok(Posted::Not);
                            }
                            attempt += 1;
                            continue;
                        }
                    };
                    if let Some(ours) = ours {
                        tracing::info!(conversation = %run.routing_key, run = %ours, "the run our earlier attempt started is going; following it");
                        self.started(run, ours).await?;
                        return Ok(Posted::Following(Box::new(stream), generation));
                    }
                    // A run nobody here started (the user used the session elsewhere). Tell the
                    // chat, wait until the session is idle, then post everything queued meanwhile
                    // too.
                    drop(stream);
                    tracing::info!(conversation = %run.routing_key, "session busy with another run; waiting");
                    self.notice_run(run, Notice::Queued).await;
                    let idle = tokio::select! {
                        biased;
                        () = cancelled(control) => return self.stop_posting(run, maybe_posted).await,
                        idle = self.wait_until_idle(&run.session_id) => idle,
                    };
                    if !idle {
                        return Ok(Posted::Not);
                    }
                    let mut more = self.store.queued(&run.routing_key)?;
                    if !self.fetch_queued(&run.routing_key, &mut more).await? {
                        return Ok(Posted::Not);
                    }
                    super::scheduler::absorb(run, &more);
                    run.cursor_start = self.current_cursor(&run.session_id).await;
                    self.store.update_run(run)?;
                }
                Err(AgentError::Unauthorized) => {
                    self.store.requeue_run(run)?;
                    self.wait_after_server_error(&AgentError::Unauthorized, 0)
                        .await;
                    return Ok(Posted::Not);
                }
                Err(e) if e.is_transient() => {
                    // The POST may or may not have arrived: the same key and body make the retry
                    // safe either way.
                    maybe_posted = true;
                    if !self.wait_unless_stopped(run, &e, attempt, control).await {
                        return Ok(Posted::Not);
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
                    self.deliver_reply(run, &reply, false).await?;
                    return Ok(Posted::Not);
                }
            }
        }
    }

    /// After a failed server call, waits as [`Dispatcher::wait_after_server_error`] does and says
    /// whether to try again. A stop meanwhile cuts the wait short (`true`): the loop's next turn
    /// finds the cancel, put back for it.
    async fn wait_unless_stopped(
        &self,
        run: &RunRecord,
        error: &AgentError,
        attempt: u32,
        control: &mut mpsc::UnboundedReceiver<RunControl>,
    ) -> bool {
        tokio::select! {
            biased;
            () = cancelled(control) => {
                self.control(&run.routing_key, RunControl::Cancel);
                true
            }
            again = self.wait_after_server_error(error, attempt) => again,
        }
    }

    /// A stop while the run was posting. Not posted for sure (`maybe_posted` false): the run
    /// ends unsent. Else the server says whether our run is going (asked until it answers): one
    /// that is is followed, the cancel put back for the follower; one that is not was never
    /// started, or is over, and the run ends unsent.
    async fn stop_posting(
        &self,
        run: &mut RunRecord,
        maybe_posted: bool,
    ) -> anyhow::Result<Posted> {
        let mut attempt = 0;
        // Until the server answers twice that no run of ours is going, a moment apart (a POST
        // that timed out here may reach it late); an answer that one is returns.
        let mut answers_left = if maybe_posted { 2 } else { 0 };
        while answers_left > 0 {
            match self.own_run(run).await {
                Ok(Some(ours)) => {
                    tracing::info!(conversation = %run.routing_key, run = %ours, "stopped while posting, but the run had started: following it to cancel it");
                    self.started(run, ours).await?;
                    self.control(&run.routing_key, RunControl::Cancel);
                    return Ok(Posted::Adopted);
                }
                Ok(None) => {
                    answers_left -= 1;
                    if answers_left > 0 {
                        tokio::select! {
                            _ = self.shutdown.cancelled() => return Ok(Posted::Not),
                            _ = tokio::time::sleep(self.options.retry_base) => {}
                        }
                    }
                }
                Err(e) => {
                    if !self.wait_after_server_error(&e, attempt).await {
                        return Ok(Posted::Not);
                    }
                    attempt += 1;
                }
            }
        }
        self.not_sent(run)?;
        Ok(Posted::Not)
    }

    /// Ends a run that was never posted because it was stopped first.
    pub(super) fn not_sent(&self, run: &RunRecord) -> anyhow::Result<()> {
        tracing::info!(conversation = %run.routing_key, "stopped before it was posted: the run is not sent");
        self.store
            .finish_run(run, JournalState::Failed, Some(super::STOPPED_BEFORE_SENT))
    }

    /// Records that the server started the run.
    async fn started(&self, run: &mut RunRecord, server_run: String) -> anyhow::Result<()> {
        run.server_run_id = Some(server_run.clone());
        run.state = RunState::Running;
        self.store.run_started(run.clone()).await?;
        tracing::info!(conversation = %run.routing_key, session = %run.session_id, run = %server_run, "run started");
        self.emit(EngineEvent::RunStarted {
            routing_key: run.routing_key.clone(),
            session_id: run.session_id.clone(),
            run_id: server_run,
        });
        Ok(())
    }

    /// The active run of the session if it is the one our message started: the session is busy
    /// and its latest user message is ours (the server may put its own context before it). An
    /// error when the server could not say.
    async fn own_run(&self, run: &RunRecord) -> Result<Option<String>, AgentError> {
        let client = self.client();
        let session = match client.session(&run.session_id).await {
            Ok(session) => session,
            // No session, no run of ours in it.
            Err(AgentError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(active) = session
            .run_status
            .is_busy()
            .then_some(session.run_status.run_id)
            .flatten()
        else {
            return Ok(None);
        };
        let messages = client.latest_messages(&run.session_id, 10).await?;
        let ours = messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .is_some_and(|m| m.text().trim_end().ends_with(run.text.trim_end()));
        Ok(ours.then_some(active))
    }

    /// Waits until a session has no run going: woken by the end of the run on the session's
    /// stream, with a status check every watchdog period in case that event is lost.
    async fn wait_until_idle(&self, session: &str) -> bool {
        let mut attempt = 0;
        let mut stream: Option<EventStream> = None;
        loop {
            if stream.is_none() {
                stream = self.client().subscribe(session, None).await.ok();
            }
            match self.client().session(session).await {
                Ok(s) if !s.run_status.is_busy() => return true,
                Ok(_) => attempt = 0,
                Err(AgentError::NotFound(_)) => return true,
                Err(e) => {
                    if !self.wait_after_server_error(&e, attempt).await {
                        return false;
                    }
                    attempt += 1;
                    continue;
                }
            }
            let ended = async {
                match stream.as_mut() {
                    Some(s) => loop {
                        match s.next().await {
                            Some(Ok(StreamItem::Event(e))) if e.event.is_terminal() => break true,
                            None | Some(Err(_)) => break false,
                            _ => {}
                        }
                    },
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                ok = ended => if !ok { stream = None; tokio::time::sleep(self.options.busy_poll).await },
                _ = tokio::time::sleep(self.options.watchdog) => {}
            }
        }
    }
}

/// What [`Dispatcher::post`] came to.
pub(super) enum Posted {
    /// Posted (or found going): follow it on this stream, opened under these settings.
    Following(Box<EventStream>, u64),
    /// Stopped while posting, but found going on the server: follow it (from its cursor) to
    /// cancel it.
    Adopted,
    /// Not posted: the engine is stopping, the server refused it, or it was stopped first.
    Not,
}

/// Whether a cancel is waiting on `control` (other controls, about approvals a run not yet
/// posted does not have, are dropped).
fn cancel_asked(control: &mut mpsc::UnboundedReceiver<RunControl>) -> bool {
    while let Ok(message) = control.try_recv() {
        if matches!(message, RunControl::Cancel) {
            return true;
        }
    }
    false
}

/// Returns when a cancel comes on `control`; never, when the channel is closed.
async fn cancelled(control: &mut mpsc::UnboundedReceiver<RunControl>) {
    loop {
        match control.recv().await {
            Some(RunControl::Cancel) => break,
            Some(RunControl::Review) => {}
            None => std::future::pending::<()>().await,
        }
    }
}
