//! Following a run's events to its end: a loop over a closed set of inputs — a stream item, a
//! control message, or one of the timers (watchdog, approval review, approval expiry, typing,
//! live-text flush) — where the pure [`Progress`] says what each event means and this module does
//! the I/O.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::deliver::Delivery;
use super::kept::KeptStream;
use super::progress::{CallState, Progress, Step};
use super::run::Followed;
use super::{Dispatcher, RunControl};
use crate::agent::{AgentError, EventStream, StreamItem};
use crate::backoff;
use crate::channels::{ChannelError, LivePacing, StreamTask, StreamUpdate, TaskStatus};
use crate::config::Streaming;
use crate::events::{EngineEvent, RunOutcome};
use crate::model::DeliveryTarget;
use crate::store::RunRecord;

/// Deltas that come within this long of each other are shown as one update.
const LIVE_FLUSH: Duration = Duration::from_millis(100);
/// Room kept free in a growing message for the tool line.
const EDIT_MARGIN: usize = 120;
/// The task card of a wait for a person's decision.
const WAITING_TASK: &str = "waiting-for-approval";
/// A draft (an ephemeral preview, Telegram's) vanishes about 30 s after its last update: one that
/// has not changed is shown again after this long.
const DRAFT_REFRESH: Duration = Duration::from_secs(20);

impl Dispatcher {
    /// Follows a run's events to its end.
    ///
    /// `stream` comes with the generation of the server settings it was opened under; when the
    /// run ends, its stream is left in `kept` for the conversation's next run.
    pub(super) async fn follow(
        self: &Arc<Self>,
        run: &RunRecord,
        stream: Option<(EventStream, u64)>,
        control: &mut mpsc::UnboundedReceiver<RunControl>,
        live: Arc<Mutex<String>>,
        kept: &mut Option<KeptStream>,
    ) -> anyhow::Result<Followed> {
        let Some(server_run) = run.server_run_id.clone() else {
            anyhow::bail!("run {} has no server run id", run.local_id);
        };
        let now = Instant::now();
        let resumed = stream.is_none();
        let (stream, generation) = match stream {
            Some((stream, generation)) => (Some(stream), generation),
            None => (None, self.server_generation()),
        };
        // Where the reply goes, and how that channel shows it while the run goes on: looked up
        // once per run.
        let (reply_target, recipient) = match self.reply_place(run) {
            Some((channel, target, peer)) => (Some((channel, target)), peer),
            None => (None, None),
        };
        let (streaming, show_tools) = reply_target
            .as_ref()
            .and_then(|(channel, _)| self.streaming_settings(channel))
            .unwrap_or((Streaming::Off, true));
        // How often the growing reply is updated: the channel's own pace (its rate limits).
        let pacing = reply_target
            .as_ref()
            .and_then(|(channel, _)| self.channel(channel))
            .map_or(LivePacing::PLATFORM, |channel| channel.live_pacing());
        let mut follower = Follower {
            d: self,
            run,
            progress: Progress::new(&server_run),
            server_run,
            stream,
            generation,
            // Without a stored cursor, a resubscription replays everything the server still holds
            // (filtered by run) rather than only live events, so nothing of the run is missed.
            last_id: run.cursor_start.or(Some(0)),
            reconnects: 0,
            watchdog_at: now + self.options.watchdog,
            settle_pending: false,
            // Resumed after a restart: what waits now is what the server says, not what was
            // stored; look once calls the server approves itself have had their moment.
            review_at: resumed.then(|| now + self.options.approval_grace),
            review_failures: 0,
            expiry_at: self.next_expiry(run),
            typing_at: Some(now),
            streams_turns: streaming == Streaming::Paragraphs,
            edits: matches!(streaming, Streaming::Auto | Streaming::Edit),
            // The platform's own previews (`auto` only); a stream is picked up again after a
            // restart only by replacing its text.
            drafts: streaming == Streaming::Auto && run.preview.is_none(),
            native: streaming == Streaming::Auto && run.preview.is_none(),
            recipient,
            preview: run.preview.clone(),
            shown: String::new(),
            tasks: Vec::new(),
            tasks_shown: Vec::new(),
            edit_at: None,
            edit_not_before: None,
            last_edit: None,
            first_not_before: Some(now + pacing.first_after),
            edit_every: pacing.every,
            seal: None,
            tool_line: None,
            show_tools,
            status_line: None,
            streamed: run.streamed.clone(),
            turn_end: None,
            send_turn: false,
            reply_target,
            waiting_for_person: false,
            live,
            unsent: String::new(),
            flush_at: None,
        };
        let mut followed = loop {
            if !follower.ensure_stream().await {
                break Followed::Stopping;
            }
            let input = follower.next(control).await;
            if let Some(followed) = follower.handle(input).await? {
                break followed;
            }
        };
        follower.flush();
        if let Followed::Ended { cursor, .. } = &mut followed {
            // Stored with the run's end, in the same commit.
            *cursor = self.cursor_to_save(follower.last_id).await;
            if let Some(stream) = follower.stream.take() {
                *kept = KeptStream::keep(
                    &self.kept,
                    &run.session_id,
                    follower.generation,
                    stream,
                    follower.last_id,
                );
            }
        }
        Ok(followed)
    }

    /// The session's cursor after a run: the last event id read, with the server's start time.
    async fn cursor_to_save(&self, last_id: Option<i64>) -> Option<(i64, i64)> {
        Some((last_id?, self.server_epoch().await?))
    }
}

/// What can happen while a run is followed.
enum Input {
    Shutdown,
    Stream(Option<Result<StreamItem, AgentError>>),
    Control(RunControl),
    /// No event for a while, or the stream broke: ask the server how the run is.
    Watchdog,
    /// Look at what waits for a decision.
    Review,
    /// An approval's deadline passed.
    Expiry,
    Typing,
    /// Show the text written since the last update.
    Flush,
    /// Update the growing reply in the chat.
    Edit,
}

/// The state of following one run: the pure progress, the stream and the timers.
struct Follower<'a> {
    d: &'a Arc<Dispatcher>,
    run: &'a RunRecord,
    server_run: String,
    progress: Progress,
    stream: Option<EventStream>,
    /// The generation of the server settings the stream was opened under.
    generation: u64,
    last_id: Option<i64>,
    reconnects: u32,
    watchdog_at: Instant,
    /// The server said the run is over; waiting a moment for the stream's last events.
    settle_pending: bool,
    review_at: Option<Instant>,
    review_failures: u32,
    expiry_at: Option<Instant>,
    typing_at: Option<Instant>,
    /// Where the reply goes (the chat of the run's last message): typing, finished turns and the
    /// growing reply all go there.
    reply_target: Option<(String, DeliveryTarget)>,
    /// A call waits for a person: no typing indicator meanwhile.
    waiting_for_person: bool,
    /// Each finished turn goes to the chat at once (the channel's `streaming`).
    streams_turns: bool,
    /// The reply's start that is in the chat already (kept with the run).
    streamed: String,
    /// Where the last finished turn's text ends in the reply.
    turn_end: Option<usize>,
    /// The run went on after a finished turn (tools, or the next turn's text): send the turn.
    /// The last turn is never sent this way: it comes with the final reply when the run ends.
    send_turn: bool,
    /// The reply is shown in one message that grows (`streaming = "edit"`).
    edits: bool,
    /// It grows as a draft (an ephemeral preview) where the chat has them, until one is refused.
    drafts: bool,
    /// It grows in the platform's own streaming message (Slack's) where it has them, until one
    /// is refused.
    native: bool,
    /// The person the reply answers.
    recipient: Option<String>,
    /// What the agent does meanwhile, for a streaming message's task cards, and what it shows.
    tasks: Vec<StreamTask>,
    tasks_shown: Vec<StreamTask>,
    /// That message, once sent (kept with the run).
    preview: Option<String>,
    /// What it shows now.
    shown: String,
    /// When to update it next.
    edit_at: Option<Instant>,
    /// The least time between two updates (the channel's [`LivePacing`]).
    edit_every: Duration,
    /// No update before this (a rate limit's wait).
    edit_not_before: Option<Instant>,
    last_edit: Option<Instant>,
    /// No message shows the reply before this, unless the run goes on with tools: a reply done
    /// by then comes as one message, with no preview before it.
    first_not_before: Option<Instant>,
    /// An approval prompt went to the chat below the message that shows the reply, when the
    /// reply was this long: once the wait is over, that message ends there, and the rest goes on
    /// below the prompt.
    seal: Option<usize>,
    /// The tool that runs now, as a line under the text (unless the channel's `show_tools` is
    /// off).
    tool_line: Option<String>,
    show_tools: bool,
    /// What holds the run up (a call waiting for a person), as a line under the text.
    status_line: Option<String>,
    live: Arc<Mutex<String>>,
    unsent: String,
    flush_at: Option<Instant>,
}

/// A reply's draft id: non-zero, the same for the whole run (changes to one draft are animated).
fn draft_id(run: &str) -> u32 {
    let hash = run.bytes().fold(2_166_136_261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    });
    hash.max(1)
}

/// Where to end a message of `text` that is too long: the last paragraph break that fits, else
/// the last line break, else the last character that fits (never 0, never inside a character).
fn cut_point(text: &str, fits: impl Fn(&str) -> bool) -> usize {
    let mut best_paragraph = None;
    let mut best_line = None;
    let mut best_char = 0;
    for (i, c) in text.char_indices() {
        let end = i + c.len_utf8();
        if !fits(&text[..end]) {
            break;
        }
        best_char = end;
        if text[..end].ends_with("\n\n") {
            best_paragraph = Some(end);
        } else if c == '\n' {
            best_line = Some(end);
        }
    }
    best_paragraph
        .or(best_line)
        .unwrap_or(best_char)
        .max(text.chars().next().map_or(0, char::len_utf8))
}

/// Where the last finished paragraph of `text` after byte `from` ends: at a blank line that is
/// outside any code fence and that more text follows (so the paragraph is really over).
fn paragraph_end(text: &str, from: usize) -> Option<usize> {
    let mut in_fence = false;
    let mut best = None;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let start = at;
        at += line.len();
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        let followed = !text[at..].trim().is_empty();
        if !in_fence && start > from && line.trim().is_empty() && followed && line.ends_with('\n') {
            best = Some(at);
        }
    }
    best
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Follower<'_> {
    /// Opens the stream again after it ended or broke; false when the engine stops first.
    async fn ensure_stream(&mut self) -> bool {
        while self.stream.is_none() {
            if self.d.shutdown.is_cancelled() {
                return false;
            }
            let (generation, client) = self.d.tagged_client();
            match client.subscribe(&self.run.session_id, self.last_id).await {
                Ok(stream) => {
                    self.reconnects = 0;
                    self.stream = Some(stream);
                    self.generation = generation;
                    // The run may have ended while we were away; the replay tells, and if the
                    // server lost the events the watchdog's status check does.
                    self.watchdog_at = self.watchdog_at.min(Instant::now());
                }
                Err(e) => {
                    if !self.d.wait_after_server_error(&e, self.reconnects).await {
                        return false;
                    }
                    self.reconnects += 1;
                }
            }
        }
        true
    }

    async fn next(&mut self, control: &mut mpsc::UnboundedReceiver<RunControl>) -> Input {
        let (watchdog, review, expiry, typing, flush, edit) = (
            self.watchdog_at,
            self.review_at,
            self.expiry_at,
            self.typing_at,
            self.flush_at,
            self.edit_at,
        );
        let Some(stream) = self.stream.as_mut() else {
            return Input::Watchdog;
        };
        tokio::select! {
            _ = self.d.shutdown.cancelled() => Input::Shutdown,
            Some(message) = control.recv() => Input::Control(message),
            item = stream.next() => Input::Stream(item),
            _ = tokio::time::sleep_until(watchdog) => Input::Watchdog,
            _ = sleep_until(review) => Input::Review,
            _ = sleep_until(expiry) => Input::Expiry,
            _ = sleep_until(typing) => Input::Typing,
            _ = sleep_until(flush) => Input::Flush,
            _ = sleep_until(edit) => Input::Edit,
        }
    }

    async fn handle(&mut self, input: Input) -> anyhow::Result<Option<Followed>> {
        match input {
            Input::Shutdown => return Ok(Some(Followed::Stopping)),
            Input::Stream(item) => return self.stream_item(item).await,
            Input::Control(RunControl::Cancel) => {
                self.d
                    .cancel_run(self.run, &self.server_run, &self.progress)
                    .await;
            }
            Input::Control(RunControl::Review) | Input::Review => self.review().await,
            Input::Watchdog => return self.watchdog().await,
            Input::Expiry => {
                self.d.expire_approvals(self.run).await;
                self.expiry_at = self.d.next_expiry(self.run);
                // The expired calls are rejected on the server by the next review.
                self.review_at = Some(Instant::now());
            }
            Input::Typing => {
                self.typing_at = None;
                if !self.waiting_for_person {
                    self.typing();
                    self.typing_at = Some(Instant::now() + self.d.options.typing_interval);
                }
            }
            Input::Flush => self.flush(),
            Input::Edit => self.update_preview().await,
        }
        Ok(None)
    }

    async fn stream_item(
        &mut self,
        item: Option<Result<StreamItem, AgentError>>,
    ) -> anyhow::Result<Option<Followed>> {
        match item {
            Some(Ok(StreamItem::Event(envelope))) => {
                if let Some(id) = envelope.id {
                    if self.last_id.is_some_and(|last| id <= last) {
                        // Ids went backwards: the server restarted and numbers from 1 again.
                        tracing::info!(session = %self.run.session_id, id, "event ids restarted; the agent server restarted");
                        self.d.forget_server_epoch();
                    }
                    self.last_id = Some(id);
                }
                if envelope.run_id.as_deref() == Some(self.server_run.as_str()) {
                    self.watchdog_at = Instant::now() + self.d.options.watchdog;
                }
                let finished_before = self.progress.finished().is_some();
                for step in self.progress.apply(&envelope) {
                    self.step(step);
                }
                if !finished_before && self.progress.finished().is_some() {
                    // The run ended before the message above an approval prompt was ended: end
                    // it now, so the rest of the reply goes below the prompt.
                    if self.seal.is_some() && self.preview.is_some() {
                        self.waiting_for_person = false;
                        self.update_preview().await;
                    }
                    let (reply, outcome) = self.d.final_reply(self.run, &self.progress).await;
                    return Ok(Some(self.ended(reply, outcome)));
                }
                if std::mem::take(&mut self.send_turn) && self.streams_turns && !self.edits {
                    self.send_turn().await;
                }
            }
            Some(Ok(StreamItem::Gap(gap))) => {
                tracing::warn!(session = %self.run.session_id, after = gap.requested_after_id, oldest = gap.oldest_available_id, "events were lost; the final reply will be fetched");
                self.progress.lost_events();
                self.watchdog_at = Instant::now();
            }
            Some(Ok(StreamItem::Keepalive)) => {}
            Some(Ok(StreamItem::Malformed(why))) => {
                tracing::warn!(session = %self.run.session_id, %why, "skipped a malformed event");
            }
            Some(Err(e)) => {
                tracing::info!(session = %self.run.session_id, error = %e, "event stream broke; resuming from the cursor");
                self.stream = None;
                self.d.forget_server_epoch();
                self.watchdog_at = Instant::now();
            }
            None => {
                tracing::info!(session = %self.run.session_id, "event stream ended; resuming from the cursor");
                self.stream = None;
                self.watchdog_at = Instant::now();
            }
        }
        Ok(None)
    }

    fn step(&mut self, step: Step) {
        if self.turn_end.is_some()
            && matches!(
                step,
                Step::Text { .. }
                    | Step::CallsWaiting
                    | Step::ToolStarted { .. }
                    | Step::ToolProgress { .. }
                    | Step::ToolDone { .. }
                    | Step::ToolRejected { .. }
            )
        {
            self.send_turn = true;
        }
        if self.edits {
            match &step {
                Step::ToolStarted { call_id, tool } => {
                    let summary = self
                        .progress
                        .call(call_id)
                        .map(|c| crate::approvals::Preview::of(&c.name, &c.arguments).summary)
                        .unwrap_or_else(|| tool.clone());
                    self.tool_line = Some(format!("⚙️ {summary}…"));
                    if self.show_tools {
                        self.set_task(call_id, summary, TaskStatus::Running);
                    }
                }
                Step::ToolDone {
                    call_id, is_error, ..
                } => {
                    self.tool_line = None;
                    let status = if *is_error {
                        TaskStatus::Failed
                    } else {
                        TaskStatus::Done
                    };
                    self.finish_task(call_id, status);
                }
                Step::ToolRejected { call_id, .. } => {
                    self.tool_line = None;
                    self.finish_task(call_id, TaskStatus::Failed);
                }
                _ => {}
            }
            if matches!(step, Step::CallsWaiting | Step::ToolStarted { .. }) {
                // The run goes on: show what it wrote so far now (before any approval prompt).
                self.first_not_before = None;
            }
            if matches!(
                step,
                Step::Text { .. }
                    | Step::CallsWaiting
                    | Step::ToolStarted { .. }
                    | Step::ToolDone { .. }
                    | Step::ToolRejected { .. }
            ) {
                let every = self.edit_every;
                let mut at = self
                    .last_edit
                    .map_or_else(Instant::now, |last| last + every)
                    .max(Instant::now());
                for not_before in [self.edit_not_before, self.first_not_before]
                    .into_iter()
                    .flatten()
                {
                    at = at.max(not_before);
                }
                // The earlier of what was planned (a draft's refresh) and the next allowed update.
                self.edit_at = Some(self.edit_at.map_or(at, |planned| planned.min(at)));
            }
        }
        match step {
            Step::Text { delta } => {
                // A server that streams tokens: a paragraph the agent has moved past is
                // finished, so it goes now (never a cut inside a code fence).
                if self.streams_turns {
                    let from = self.turn_end.unwrap_or(0).max(self.streamed.len());
                    if let Some(end) = paragraph_end(self.progress.text(), from) {
                        self.turn_end = Some(end);
                        self.send_turn = true;
                    }
                }
                self.live
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&delta);
                self.unsent.push_str(&delta);
                if self.flush_at.is_none() {
                    self.flush_at = Some(Instant::now() + LIVE_FLUSH);
                }
            }
            Step::TurnText => {
                self.flush();
                self.turn_end = Some(self.progress.text().len());
            }
            Step::CallsWaiting => {
                // Give calls the server approves itself a moment to start, so no decision is
                // ever sent for a call that is not really waiting.
                let at = Instant::now() + self.d.options.approval_grace;
                self.review_at = Some(self.review_at.map_or(at, |r| r.min(at)));
            }
            Step::ToolStarted { call_id, .. } | Step::ToolDone { call_id, .. } => {
                let note =
                    if self.progress.call(&call_id).map(|c| c.state) == Some(CallState::Running) {
                        "it ran: approved by another client or by the agent server"
                    } else {
                        "the agent server settled it"
                    };
                self.d.call_dealt_with(&self.server_run, &call_id, note);
            }
            Step::ToolRejected { call_id, .. } => {
                self.d.call_dealt_with(
                    &self.server_run,
                    &call_id,
                    "rejected by another client or by the agent server",
                );
            }
            Step::ToolProgress { .. } | Step::Finished(_) => {}
        }
    }

    /// Emits the text written since the last update as one event.
    fn flush(&mut self) {
        self.flush_at = None;
        if self.unsent.is_empty() {
            return;
        }
        let delta = std::mem::take(&mut self.unsent);
        self.d.emit(EngineEvent::RunStreaming {
            routing_key: self.run.routing_key.clone(),
            run_id: self.server_run.clone(),
            delta,
            len: self.progress.text().len(),
        });
    }

    async fn review(&mut self) {
        self.review_at = None;
        match self
            .d
            .review(self.run, &self.server_run, &mut self.progress)
            .await
        {
            Ok(waiting_for_person) => {
                self.review_failures = 0;
                let was_waiting =
                    std::mem::replace(&mut self.waiting_for_person, waiting_for_person);
                if was_waiting && !waiting_for_person {
                    self.typing_at = Some(Instant::now());
                }
                // The growing reply says what holds it up, instead of a typing indicator.
                if self.edits && was_waiting != waiting_for_person {
                    self.status_line = waiting_for_person
                        .then(|| "⏸ Waiting for your approval (the buttons below).".to_owned());
                    if waiting_for_person {
                        // A draft is no message above the prompt: nothing to end there.
                        self.seal = self.preview.is_some().then(|| self.progress.text().len());
                        self.set_task(
                            WAITING_TASK,
                            "Waiting for your approval".to_owned(),
                            TaskStatus::Pending,
                        );
                    } else {
                        self.finish_task(WAITING_TASK, TaskStatus::Done);
                    }
                    self.edit_at.get_or_insert_with(Instant::now);
                }
            }
            Err(e) => {
                // Nothing waits without a timer: look again after a while, whatever failed.
                let delay = backoff::delay(
                    self.review_failures,
                    self.d.options.retry_base,
                    self.d.options.retry_cap,
                );
                self.review_failures += 1;
                tracing::warn!(conversation = %self.run.routing_key, error = %format!("{e:#}"), ?delay, "cannot settle the waiting tool calls yet; will look again");
                self.review_at = Some(Instant::now() + delay);
            }
        }
        self.expiry_at = self.d.next_expiry(self.run);
    }

    async fn watchdog(&mut self) -> anyhow::Result<Option<Followed>> {
        match self.d.client().session(&self.run.session_id).await {
            Ok(session)
                if session.run_status.is_busy()
                    && session
                        .run_status
                        .run_id
                        .as_deref()
                        .is_none_or(|id| id == self.server_run) =>
            {
                self.watchdog_at = Instant::now() + self.d.options.watchdog;
                // A silent run may be waiting for a decision whose event we never saw (a gap, a
                // resubscription without a cursor): the server's list is the truth.
                self.review().await;
            }
            Ok(_) | Err(AgentError::NotFound(_)) => {
                // Let a stream that is still delivering the run's last events finish first: only
                // settle when nothing more arrives.
                if self.stream.is_some() && !self.settle_pending {
                    self.settle_pending = true;
                    self.watchdog_at = Instant::now() + self.d.options.settle_grace;
                    return Ok(None);
                }
                tracing::warn!(conversation = %self.run.routing_key, run = %self.server_run, "run ended without a terminal event; settling it");
                let (reply, outcome) = self.d.settled_reply(self.run, &self.progress).await;
                return Ok(Some(self.ended(reply, outcome)));
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot ask the server about the run; will ask again");
                self.watchdog_at = Instant::now()
                    + backoff::delay(
                        self.reconnects,
                        self.d.options.retry_base,
                        self.d.options.watchdog,
                    );
                self.reconnects += 1;
            }
        }
        Ok(None)
    }

    fn ended(&mut self, reply: String, outcome: RunOutcome) -> Followed {
        Followed::Ended {
            reply,
            outcome,
            usage: self.progress.usage(),
            streamed: self.streamed.clone(),
            preview: self.preview.clone(),
            cursor: None,
        }
    }

    /// Shows the reply as written so far in its message: sent the first time, edited after. A
    /// reply that outgrows the platform's limit finishes the current message at a paragraph (or
    /// line) and goes on in a new one; what is finished counts as sent. A 429 waits; any other
    /// failure stops the updates (the final delivery is durable and brings the whole reply).
    async fn update_preview(&mut self) {
        self.edit_at = None;
        let Some((channel_name, target)) = self.reply_target.clone() else {
            return;
        };
        let Some(channel) = self.d.channel(&channel_name) else {
            return;
        };
        let text = self.progress.text().to_owned();
        let Some(segment) = text.strip_prefix(self.streamed.as_str()) else {
            self.edits = false;
            return;
        };
        let lead = segment.len() - segment.trim_start().len();
        let segment = &segment[lead..];
        let limit = channel.text_limit();
        let room = limit.max.saturating_sub(EDIT_MARGIN).max(1);
        // Where the message above an approval prompt ends: where the reply was when the prompt
        // went out.
        let seal = match self.seal {
            Some(at) if !self.waiting_for_person => {
                let cut = at
                    .saturating_sub(self.streamed.len() + lead)
                    .min(segment.len());
                if segment[..cut].trim().is_empty() {
                    // No text to end the message above the prompt with: it just goes on.
                    self.seal = None;
                    None
                } else {
                    Some(cut)
                }
            }
            _ => None,
        };
        if self.native
            && seal.is_none()
            && limit.measure(segment) <= room
            && self.stream_preview(&channel, &target, segment).await
        {
            return;
        }
        let (body, finished) = if limit.measure(segment) > room {
            let cut = cut_point(segment, |s| limit.measure(s) <= room);
            (segment[..cut].trim_end().to_owned(), Some(cut))
        } else if let Some(cut) = seal {
            (segment[..cut].trim_end().to_owned(), Some(cut))
        } else {
            let tool = self.tool_line.as_ref().filter(|_| self.show_tools);
            if self.preview.is_none() && segment.trim().is_empty() && tool.is_none() {
                // A message is never started just to say it waits: the approval prompt says so.
                return;
            }
            let mut body = segment.to_owned();
            for line in [self.status_line.as_ref(), tool].into_iter().flatten() {
                if !body.is_empty() {
                    body.push_str("\n\n");
                }
                body.push_str(line);
            }
            (body, None)
        };
        let refresh = self.drafts
            && self
                .last_edit
                .is_some_and(|at| at.elapsed() >= DRAFT_REFRESH);
        if body.trim().is_empty() || (body == self.shown && finished.is_none() && !refresh) {
            return;
        }
        if self.drafts && finished.is_none() {
            let draft_id = draft_id(&self.run.local_id);
            match channel.draft(&target, draft_id, &body).await {
                Ok(()) => {
                    self.last_edit = Some(Instant::now());
                    self.shown = body;
                    self.edit_at = Some(Instant::now() + DRAFT_REFRESH);
                    return;
                }
                Err(ChannelError::RateLimited(wait)) => {
                    self.edit_not_before = Some(Instant::now() + wait);
                    self.edit_at = self.edit_not_before;
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "no drafts here; the reply grows by edits");
                    self.drafts = false;
                }
            }
        }
        let result = match &self.preview {
            Some(id) => channel.edit(&target, id, &body).await.map(|()| id.clone()),
            None => channel.send(&target, &body).await.map(|sent| sent.id),
        };
        self.last_edit = Some(Instant::now());
        match result {
            Ok(id) => {
                self.d.board.touch(&channel_name, false);
                match finished {
                    Some(cut) => {
                        // This message is complete: the rest goes on in a new one.
                        self.seal = None;
                        self.streamed = text[..self.streamed.len() + lead + cut].to_owned();
                        self.preview = None;
                        self.shown.clear();
                        self.edit_at = Some(Instant::now());
                        let store = &self.d.store;
                        if let Err(e) = store
                            .set_run_streamed(&self.run.local_id, &self.streamed)
                            .and_then(|()| store.set_run_preview(&self.run.local_id, None))
                        {
                            tracing::warn!(error = %e, "cannot record the finished part of a reply");
                        }
                    }
                    None => {
                        if self.preview.is_none() {
                            if let Err(e) =
                                self.d.store.set_run_preview(&self.run.local_id, Some(&id))
                            {
                                tracing::warn!(error = %e, "cannot record the message that shows the reply");
                            }
                            self.preview = Some(id);
                        }
                        self.shown = body;
                    }
                }
            }
            Err(ChannelError::RateLimited(wait)) => {
                tracing::debug!(?wait, "the growing reply waits out a rate limit");
                self.edit_not_before = Some(Instant::now() + wait);
                self.edit_at = self.edit_not_before;
            }
            Err(e) => {
                tracing::info!(conversation = %self.run.routing_key, error = %e, "the reply is no longer shown as it grows; it comes whole at the end");
                self.edits = false;
            }
        }
    }

    /// Shows `text` (the reply's part in the current message) and the tasks in the platform's own
    /// streaming message. False when it has none (or refused this one): the reply then grows by
    /// edits, starting from the same message if there is one.
    async fn stream_preview(
        &mut self,
        channel: &Arc<dyn crate::channels::Channel>,
        target: &DeliveryTarget,
        text: &str,
    ) -> bool {
        // A message is never started just to say it waits: the approval prompt says so.
        let nothing_yet = text.trim().is_empty() && self.tasks.iter().all(|t| t.id == WAITING_TASK);
        if (nothing_yet && self.preview.is_none())
            || (text == self.shown && self.tasks == self.tasks_shown)
        {
            return true;
        }
        let update = StreamUpdate {
            target,
            message_id: self.preview.as_deref(),
            recipient: self.recipient.as_deref(),
            text,
            tasks: &self.tasks,
        };
        match channel.stream(&update).await {
            Ok(id) => {
                self.last_edit = Some(Instant::now());
                self.d.board.touch(channel.name(), false);
                if self.preview.is_none() {
                    if let Err(e) = self.d.store.set_run_preview(&self.run.local_id, Some(&id)) {
                        tracing::warn!(error = %e, "cannot record the message that shows the reply");
                    }
                    self.preview = Some(id);
                }
                self.shown = text.to_owned();
                self.tasks_shown = self.tasks.clone();
                true
            }
            Err(ChannelError::RateLimited(wait)) => {
                tracing::debug!(?wait, "the streamed reply waits out a rate limit");
                self.edit_not_before = Some(Instant::now() + wait);
                self.edit_at = self.edit_not_before;
                true
            }
            Err(e) => {
                if !matches!(e, ChannelError::Unsupported) {
                    tracing::info!(channel = %channel.name(), error = %e, "no streaming message here; the reply grows by edits");
                }
                self.native = false;
                false
            }
        }
    }

    /// Shows a task (a tool call, a wait) on the streaming message.
    fn set_task(&mut self, id: &str, title: String, status: TaskStatus) {
        if !self.native {
            return;
        }
        match self.tasks.iter_mut().find(|t| t.id == id) {
            Some(task) => {
                task.title = title;
                task.status = status;
            }
            None => self.tasks.push(StreamTask {
                id: id.to_owned(),
                title,
                status,
            }),
        }
    }

    fn finish_task(&mut self, id: &str, status: TaskStatus) {
        if let Some(task) = self.tasks.iter_mut().find(|t| t.id == id) {
            task.status = status;
        }
    }

    /// Sends the turns finished since the last one sent (up to where the last finished turn
    /// ends) as their own message(s) and records them with the run, so the final delivery sends
    /// only the rest and a restart repeats nothing. A failure (or a text that no longer starts
    /// with what was sent, after a resync) leaves it to the final delivery, which is durable.
    async fn send_turn(&mut self) {
        let Some(end) = self.turn_end.take() else {
            return;
        };
        let Some(text) = self.progress.text().get(..end).map(str::to_owned) else {
            return;
        };
        let Some(new) = text.strip_prefix(self.streamed.as_str()) else {
            return;
        };
        let part = new.trim();
        if part.is_empty() {
            return;
        }
        let Some((channel_name, target)) = self.reply_target.clone() else {
            return;
        };
        let Some(channel) = self.d.channel(&channel_name) else {
            return;
        };
        match self
            .d
            .deliver_text(&channel, &target, part, 0, Delivery::Request, |_, _, _| {
                Ok(())
            })
            .await
        {
            Ok(chunks) => {
                tracing::debug!(conversation = %self.run.routing_key, chunks, "a finished turn went to the chat");
                self.streamed = text;
                if let Err(e) = self
                    .d
                    .store
                    .set_run_streamed(&self.run.local_id, &self.streamed)
                {
                    tracing::warn!(error = %e, "cannot record the turn sent; the final reply repeats it");
                }
                // The chat shows the bot's message; typing goes on while the run does.
                if !self.waiting_for_person {
                    self.typing_at = Some(Instant::now());
                }
            }
            Err(e) => {
                tracing::info!(conversation = %self.run.routing_key, error = %e, "a finished turn was not sent; it comes with the final reply");
            }
        }
    }

    fn typing(&self) {
        if let Some((channel, target)) = &self.reply_target {
            if let Some(channel) = self.d.channel(channel) {
                self.d.typing(&channel, target);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::paragraph_end;

    #[test]
    fn a_paragraph_is_finished_at_a_blank_line_that_more_text_follows() {
        assert_eq!(paragraph_end("One.\n\nTwo", 0), Some(6));
        assert_eq!(paragraph_end("One.\n\n", 0), None, "nothing follows yet");
        assert_eq!(paragraph_end("One.\n\nTwo.\n\nThr", 0), Some(12));
        assert_eq!(paragraph_end("One.\n\nTwo.\n\nThr", 6), Some(12));
        assert_eq!(paragraph_end("One.\n\nTwo", 6), None, "already sent");
        assert_eq!(paragraph_end("One line only", 0), None);
    }

    #[test]
    fn a_blank_line_inside_a_code_fence_is_no_end() {
        let text = "Here:\n```\nfn a() {}\n\nfn b() {}\n```\nAfter";
        assert_eq!(paragraph_end(text, 0), None);
        let text = "Here:\n```\nfn a() {}\n\nfn b() {}\n```\n\nAfter";
        assert_eq!(paragraph_end(text, 0), Some(text.len() - "After".len()));
    }
}
