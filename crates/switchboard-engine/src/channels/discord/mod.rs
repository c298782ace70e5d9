//! Discord: messages arrive over the Gateway WebSocket, replies go out over REST v10
//! (`shared/contracts/channels.md`, section 3).
//!
//! `run` checks the token (`GET /users/@me`), asks where the Gateway is (`GET /gateway/bot`) and
//! then runs two loops side by side:
//!
//! - the connection loop (`gateway.rs`) keeps one Gateway connection up: it resumes after op 7,
//!   op 9 `true`, a zombie socket, a dropped connection or a resumable close; identifies again
//!   after op 9 `false` (after a random 1–5 s) or 4007/4009; and stops for good after
//!   4004/4010–4014;
//! - the message loop takes what the connection received, in order, decides whether it is for
//!   the bot (`decode.rs`), hands it to the engine and only then counts it as handled.
//!
//! The session (`session_id`, `resume_gateway_url` and the sequence number of the last handled
//! event) is stored with the channel's offsets after each message, so a restart RESUMEs and
//! Discord replays what arrived meanwhile; the engine drops anything it already stored (its
//! de-duplication key is `discord:msg:<id>`). For the same reason the bot never closes with
//! 1000/1001, which would end the session: leaving, it closes with 4000.
//!
//! Tool approvals (`approval.rs`) are posted with three buttons where the conversation is. A click
//! arrives as INTERACTION_CREATE and is answered within Discord's 3 s: a decision (this click's
//! or an earlier one) updates the prompt for everyone (callback type 7, buttons removed), a
//! refusal is told only to the clicker (type 4 with flags 64) and leaves the prompt alone. Should
//! the engine be slow to decide, the click is acknowledged first (type 6) and answered after, by
//! editing `@original` or with an ephemeral follow-up.

mod api;
mod approval;
mod decode;
mod gateway;
mod ratelimit;
mod wire;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    Accepted, Channel, ChannelContext, ChannelError, ConversationPlace, Notice, SentMessage,
    QUEUED_NOTE,
};
use crate::approvals::{ApprovalPrompt, ChatChoice, ChoiceOutcome};
use crate::backoff;
use crate::chunk::TextLimit;
use crate::config::DiscordConfig;
use crate::model::{now_ms, ChannelState, ChatType, DeliveryTarget, Identity, Peer};

use api::{Api, ApiError};
use decode::{Addressing, Destination, Place, Verdict};
use gateway::{Ending, Incoming, Link, Opening, Session};

/// The reaction that marks a message queued behind a running task.
const QUEUED_REACTION: &str = "⏳";
/// The key the session is stored under with the channel's offsets.
const SESSION_KEY: &str = "session";
/// How long "the bot is not in this thread" is believed before asking again.
const NOT_MEMBER_TTL: Duration = Duration::from_secs(60);
/// Connections to a stored session's resume URL that may fail before identifying afresh.
const RESUME_ATTEMPTS: u32 = 3;
/// Clicks remembered so a replayed INTERACTION_CREATE is not answered twice.
const RECENT_CLICKS: usize = 64;
/// Tries at editing a prompt when Discord answers with a transient failure.
const EDIT_ATTEMPTS: u32 = 3;
/// The part of Discord's 3 s for answering a click that may pass before the answer is sent
/// (the rest is for the request itself).
/// How many Discord events may wait for the handler; a gateway that sends more ends its
/// connection and resumes (see `gateway::Connection::pass`).
const EVENT_QUEUE: usize = 512;
/// How many channels, threads and DM channels the adapter remembers; they are caches of what
/// Discord answers, so a full one is cleared and learned again.
const MAX_REMEMBERED: usize = 10_000;
const CLICK_DEADLINE: Duration = Duration::from_millis(2500);

/// Timings of the Discord adapter. The defaults follow Discord's advice; tests shorten them.
#[derive(Debug, Clone)]
pub struct DiscordOptions {
    /// After op 9 (session invalid, not resumable) the bot waits a random time in this range
    /// before identifying again (Discord staff advise 1–5 s).
    pub invalid_session_delay: (Duration, Duration),
    /// Backoff for reconnecting and retrying REST calls after transient failures.
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// How long connecting to the Gateway and its Hello may take.
    pub connect_timeout: Duration,
    /// How long the engine may take to decide a button click before the click is acknowledged
    /// on its own (type 6) and answered afterwards. Discord wants an answer within 3 s of the
    /// click; zero acknowledges every click first.
    pub click_answer_within: Duration,
}

impl Default for DiscordOptions {
    fn default() -> Self {
        DiscordOptions {
            invalid_session_delay: (Duration::from_secs(1), Duration::from_secs(5)),
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(20),
            click_answer_within: Duration::from_millis(1500),
        }
    }
}

/// The Discord channel adapter.
#[derive(Clone)]
pub struct DiscordChannel {
    inner: Arc<Inner>,
}

struct Inner {
    config: DiscordConfig,
    options: DiscordOptions,
    api: Result<Api, ChannelError>,
    state: Mutex<State>,
}

/// What the adapter learns while it runs, shared by the receive loops and the senders.
#[derive(Default)]
struct State {
    ctx: Option<ChannelContext>,
    bot_id: Option<String>,
    /// Channel id → its type and parent, from lookups.
    places: HashMap<String, Place>,
    /// Thread id → whether the bot is part of it (and when a "no" was learned).
    threads: HashMap<String, Membership>,
    /// User id → DM channel id.
    dms: HashMap<String, String>,
    connected: bool,
    rate_limited: bool,
    /// Prompt message id → the prompt's body (kept when it is decided), until it is closed.
    prompts: HashMap<String, String>,
    /// Interaction ids answered lately, newest last.
    clicks: VecDeque<String>,
    /// Slash commands waiting for their answer: interaction id → (application, token, when).
    commands: HashMap<String, (String, String, Instant)>,
}

#[derive(Debug, Clone, Copy)]
enum Membership {
    Member,
    NotMember(Instant),
}

impl DiscordChannel {
    pub fn new(config: &DiscordConfig) -> DiscordChannel {
        DiscordChannel::with_options(config, DiscordOptions::default())
    }

    pub fn with_options(config: &DiscordConfig, options: DiscordOptions) -> DiscordChannel {
        DiscordChannel {
            inner: Arc::new(Inner {
                api: Api::new(&config.api_base, &config.token),
                config: config.clone(),
                options,
                state: Mutex::default(),
            }),
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change to the state is a single insert or assignment; a poisoned lock still
        // holds consistent values.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn api(&self) -> Result<&Api, ChannelError> {
        self.api.as_ref().map_err(Clone::clone)
    }

    fn retry_delay(&self, attempt: u32) -> Duration {
        backoff::delay(attempt, self.options.retry_base, self.options.retry_cap)
    }

    /// Tells the engine about a send-side rate limit, and that it is over.
    fn rate_limited(&self, error: Option<&ApiError>) {
        let mut state = self.lock();
        let Some(ctx) = state.ctx.clone() else { return };
        match error {
            Some(error) => {
                state.rate_limited = true;
                ctx.report(ChannelState::RateLimited, Some(error.to_string()));
            }
            None if state.rate_limited => {
                state.rate_limited = false;
                if state.connected {
                    ctx.report(ChannelState::Connected, None);
                }
            }
            None => {}
        }
    }

    /// The channel a target's messages go to, opening a DM channel when needed.
    async fn resolve(&self, target: &DeliveryTarget) -> Result<String, ChannelError> {
        match decode::destination(target).map_err(ChannelError::TargetNotFound)? {
            Destination::Channel(id) => Ok(id),
            Destination::Dm(user) => {
                if let Some(channel) = self.lock().dms.get(&user) {
                    return Ok(channel.clone());
                }
                let channel = self
                    .api()?
                    .open_dm(&user)
                    .await
                    .map_err(ApiError::into_channel_error)?;
                remember(&mut self.lock().dms, user, channel.id.clone());
                Ok(channel.id)
            }
        }
    }

    /// Posts `text` (and buttons) to `channel`, replying to `reply_to` when it is a message id.
    async fn post(
        &self,
        channel: &str,
        text: &str,
        reply_to: Option<&str>,
        components: Option<Value>,
    ) -> Result<SentMessage, ChannelError> {
        let body = wire::CreateMessage {
            content: text,
            message_reference: reply_to
                .filter(|id| wire::is_snowflake(id))
                .map(|message_id| wire::Reference {
                    message_id,
                    fail_if_not_exists: false,
                }),
            allowed_mentions: wire::AllowedMentions::default(),
            components,
        };
        match self.api()?.create_message(channel, &body).await {
            Ok(created) => {
                self.rate_limited(None);
                let mut state = self.lock();
                // Posting in a thread makes the bot part of it: later messages there are for it.
                if state
                    .places
                    .get(channel)
                    .is_some_and(|p| wire::channel_type::is_thread(p.kind))
                {
                    remember(&mut state.threads, channel.to_owned(), Membership::Member);
                }
                Ok(SentMessage { id: created.id })
            }
            Err(error) => {
                if matches!(error, ApiError::RateLimited { .. }) {
                    self.rate_limited(Some(&error));
                }
                Err(error.into_channel_error())
            }
        }
    }
}

#[async_trait]
impl Channel for DiscordChannel {
    fn name(&self) -> &str {
        decode::CHANNEL
    }

    fn text_limit(&self) -> TextLimit {
        TextLimit::DISCORD
    }

    /// Discord's edit budget is tighter than the others' (5 edits per 5 s per channel).
    fn live_pacing(&self) -> crate::channels::LivePacing {
        crate::channels::LivePacing {
            every: std::time::Duration::from_millis(1200),
            ..crate::channels::LivePacing::PLATFORM
        }
    }

    #[tracing::instrument(name = "discord", skip_all)]
    async fn run(&self, ctx: ChannelContext) {
        {
            let mut state = self.inner.lock();
            state.ctx = Some(ctx.clone());
            state.rate_limited = false;
        }
        Runner {
            inner: &self.inner,
            ctx: &ctx,
        }
        .run()
        .await;
        let mut state = self.inner.lock();
        state.ctx = None;
        state.connected = false;
    }

    async fn send(&self, target: &DeliveryTarget, text: &str) -> Result<SentMessage, ChannelError> {
        if text.trim().is_empty() {
            return Err(ChannelError::Rejected(
                "Discord does not take an empty message".into(),
            ));
        }
        let length = TextLimit::DISCORD.measure(text);
        if length > TextLimit::DISCORD.max {
            return Err(ChannelError::Rejected(format!(
                "a Discord message holds at most {} characters, this one has {length}",
                TextLimit::DISCORD.max
            )));
        }
        // The answer to a slash command replaces its "thinking…" while the interaction's token
        // is valid (15 minutes); after that it is a message in the channel.
        if let Some(id) = target
            .reply_to
            .as_deref()
            .and_then(|r| r.strip_prefix(COMMAND_REPLY))
        {
            let waiting = self.inner.lock().commands.remove(id);
            if let Some((application, token, at)) = waiting {
                if at.elapsed() < COMMAND_TOKEN_VALID {
                    let body = serde_json::json!({
                        "content": text,
                        "allowed_mentions": {"parse": []},
                    });
                    self.inner
                        .api()?
                        .edit_original(&application, &token, &body)
                        .await
                        .map_err(ApiError::into_channel_error)?;
                    return Ok(SentMessage {
                        id: format!("{COMMAND_REPLY}{id}"),
                    });
                }
            }
            let plain = DeliveryTarget {
                reply_to: None,
                ..target.clone()
            };
            let channel = self.inner.resolve(&plain).await?;
            return self.inner.post(&channel, text, None, None).await;
        }
        let channel = self.inner.resolve(target).await?;
        self.inner
            .post(&channel, text, target.reply_to.as_deref(), None)
            .await
    }

    /// `PATCH /channels/{id}/messages/{id}` with the new content, mentioning nobody.
    async fn edit(
        &self,
        target: &DeliveryTarget,
        message_id: &str,
        text: &str,
    ) -> Result<(), ChannelError> {
        let channel = self.inner.resolve(target).await?;
        let body = serde_json::json!({"content": text, "allowed_mentions": {"parse": []}});
        self.inner
            .api()?
            .edit_message(&channel, message_id, &body)
            .await
            .map(|_| ())
            .map_err(ApiError::into_channel_error)
    }

    async fn typing(&self, target: &DeliveryTarget) -> Result<(), ChannelError> {
        let channel = self.inner.resolve(target).await?;
        self.inner
            .api()?
            .typing(&channel)
            .await
            .map_err(ApiError::into_channel_error)
    }

    /// `Received` shows nothing: the typing indicator appears as soon as the run starts, and a
    /// reaction on every message would be noise in a busy channel (and spend the strict
    /// per-channel reaction limit). `Queued` puts ⏳ on the waiting message, which says which
    /// message waits without a message of its own; where the bot may not react, or there is no
    /// message to react to, it replies with [`QUEUED_NOTE`] instead.
    async fn notice(&self, target: &DeliveryTarget, notice: Notice) -> Result<(), ChannelError> {
        if notice == Notice::Received {
            return Ok(());
        }
        let channel = self.inner.resolve(target).await?;
        let message = target
            .reply_to
            .as_deref()
            .filter(|id| wire::is_snowflake(id));
        if let Some(message) = message {
            match self
                .inner
                .api()?
                .react(&channel, message, QUEUED_REACTION)
                .await
            {
                Ok(()) => return Ok(()),
                Err(ApiError::Refused { status: 403, .. }) => {}
                Err(e) => return Err(e.into_channel_error()),
            }
        }
        self.inner
            .post(&channel, QUEUED_NOTE, message, None)
            .await
            .map(|_| ())
    }

    /// An attachment, from Discord's CDN.
    async fn fetch(
        &self,
        attachment: &crate::model::Attachment,
        limits: &crate::media::Limits,
    ) -> Result<Vec<u8>, crate::media::FetchError> {
        match &self.inner.api {
            Ok(api) => api.download(&attachment.source, limits).await,
            Err(e) => Err(crate::media::FetchError::Failed(e.to_string())),
        }
    }

    async fn test(&self) -> Result<Identity, ChannelError> {
        let me = self
            .inner
            .api()?
            .me()
            .await
            .map_err(ApiError::into_channel_error)?;
        Ok(identity(&me))
    }

    /// `<channel_id>` (a text channel or thread) or `dm:<user_id>`; see `decode::parse_target`.
    fn parse_target(&self, target: &str) -> Result<DeliveryTarget, String> {
        decode::parse_target(target)
    }

    /// `dm:<user>` is the person's direct chat (addressed by the user, as the decoder does); any
    /// other id a guild channel. A thread's parent is not known without a lookup, so a thread
    /// target counts as its own channel until someone writes there.
    fn conversation_at(&self, target: &DeliveryTarget, _notice: Option<&str>) -> ConversationPlace {
        match target.chat_id.strip_prefix("dm:") {
            Some(user) => ConversationPlace::at(target, ChatType::Direct, Some(user.to_owned())),
            None => ConversationPlace::at(
                target,
                ChatType::Group {
                    id: target.chat_id.clone(),
                },
                None,
            ),
        }
    }

    /// Posts the prompt where the conversation is (the DM, the channel or the thread), replying
    /// to the message that asked, with Approve / Reject / Always allow buttons.
    async fn post_approval(
        &self,
        target: &DeliveryTarget,
        prompt: &ApprovalPrompt,
    ) -> Result<Option<SentMessage>, ChannelError> {
        let components =
            approval::components(&prompt.approval_id).map_err(ChannelError::Rejected)?;
        let content = approval::prompt_content(prompt);
        let channel = self.inner.resolve(target).await?;
        let sent = self
            .inner
            .post(
                &channel,
                &content,
                target.reply_to.as_deref(),
                Some(components),
            )
            .await?;
        if let Some(body) = approval::body_of(&content) {
            self.inner
                .lock()
                .prompts
                .insert(sent.id.clone(), body.to_owned());
        }
        Ok(Some(sent))
    }

    /// Edits the prompt to show how it ended, without buttons. Doing it again (after a click
    /// already updated the prompt) sets the same text.
    async fn close_approval(
        &self,
        target: &DeliveryTarget,
        message_id: &str,
        outcome: &str,
    ) -> Result<(), ChannelError> {
        if !wire::is_snowflake(message_id) {
            return Err(ChannelError::Rejected(format!(
                "{message_id:?} is not a Discord message id"
            )));
        }
        let channel = self.inner.resolve(target).await?;
        let api = self.inner.api()?;
        let cached = self.inner.lock().prompts.remove(message_id);
        let body = match cached {
            Some(body) => Some(body),
            // Posted before a restart: the message itself has the body.
            None => match api.message(&channel, message_id).await {
                Ok(message) => approval::body_of(&message.content).map(str::to_owned),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the approval prompt; showing the outcome alone");
                    None
                }
            },
        };
        let edit = approval::closed_edit(body.as_deref(), outcome);
        let mut attempt = 0u32;
        loop {
            let error = match api.edit_message(&channel, message_id, &edit).await {
                Ok(_) => return Ok(()),
                Err(error) => error,
            };
            attempt += 1;
            if !error.is_transient() || attempt >= EDIT_ATTEMPTS {
                return Err(error.into_channel_error());
            }
            let delay = match &error {
                ApiError::RateLimited { retry_after, .. } => *retry_after,
                _ => self.inner.retry_delay(attempt - 1),
            };
            tracing::debug!(error = %error, ?delay, "cannot close the approval prompt yet; retrying");
            tokio::time::sleep(delay.min(self.inner.options.retry_cap)).await;
        }
    }
}

fn identity(user: &wire::User) -> Identity {
    Identity {
        id: user.id.clone(),
        name: user.display_name().to_owned(),
    }
}

/// How a lookup for a message ended.
enum Lookup<T> {
    Found(T),
    /// Discord refused for good (unknown channel, no access).
    Refused(ApiError),
    /// The channel is stopping.
    Stopped,
}

/// One run of the channel: from checking the token to the shutdown (or a fatal error).
struct Runner<'a> {
    inner: &'a Inner,
    ctx: &'a ChannelContext,
}

impl Runner<'_> {
    async fn run(&self) {
        self.ctx.report(ChannelState::Connecting, None);
        let api = match self.inner.api() {
            Ok(api) => api.clone(),
            Err(e) => {
                return self
                    .ctx
                    .report(ChannelState::AuthFailed, Some(e.to_string()))
            }
        };
        if self.inner.config.token.trim().is_empty() {
            let error = "no bot token; set token in [channels.discord]".to_owned();
            return self.ctx.report(ChannelState::AuthFailed, Some(error));
        }
        let Some(me) = self.rest("check the bot token", || api.me()).await else {
            return;
        };
        tracing::info!(bot = %me.id, name = %me.username, "Discord bot identity");
        self.ctx.set_identity(identity(&me));
        self.inner.lock().bot_id = Some(me.id.clone());
        let Some(gateway) = self.rest("find the gateway", || api.gateway_bot()).await else {
            return;
        };
        let stored = self
            .ctx
            .offset(SESSION_KEY)
            .and_then(|text| serde_json::from_str::<Stored>(&text).ok())
            // A session of another bot (the token was changed) cannot be resumed.
            .filter(|stored| stored.bot_id == me.id)
            .map(|stored| stored.session);
        let (out, incoming) = mpsc::channel(EVENT_QUEUE);
        tokio::join!(
            self.connect(&api, gateway.url, stored.clone(), out),
            self.handle(&api, stored, incoming)
        );
    }

    /// Calls a REST endpoint until it answers: transient failures are retried with backoff, a
    /// refused token is reported and ends the run (`None`), as does the shutdown.
    async fn rest<T, F, Fut>(&self, what: &str, call: F) -> Option<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let mut attempt = 0u32;
        loop {
            let result = tokio::select! {
                _ = self.ctx.shutdown.cancelled() => return None,
                result = call() => result,
            };
            let error = match result {
                Ok(value) => return Some(value),
                Err(error) => error,
            };
            if error.is_auth() {
                tracing::warn!(error = %error, "Discord refused the bot token");
                self.ctx
                    .report(ChannelState::AuthFailed, Some(error.to_string()));
                return None;
            }
            let state = match error {
                ApiError::RateLimited { .. } => ChannelState::RateLimited,
                _ => ChannelState::Reconnecting,
            };
            let delay = match &error {
                ApiError::RateLimited { retry_after, .. } => *retry_after,
                _ => self.inner.retry_delay(attempt),
            };
            tracing::info!(error = %error, ?delay, "cannot {what} yet; retrying");
            self.ctx
                .report(state, Some(format!("cannot {what}: {error}")));
            attempt = attempt.saturating_add(1);
            if !self.pause(delay).await {
                return None;
            }
        }
    }

    /// Sleeps unless the channel stops first; false when it stopped.
    async fn pause(&self, delay: Duration) -> bool {
        tokio::select! {
            _ = self.ctx.shutdown.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    /// Keeps a Gateway connection up until the shutdown or a fatal close.
    async fn connect(
        &self,
        api: &Api,
        mut gateway_url: String,
        mut session: Option<Session>,
        out: mpsc::Sender<Incoming>,
    ) {
        let token = self.inner.config.token.trim().to_owned();
        // Connections in a row that never became ready; reset by READY / RESUMED.
        let mut failures = 0u32;
        let mut resume_failures = 0u32;
        loop {
            let opening = match &session {
                Some(session) => Opening::Resume(session.clone()),
                None => {
                    // A fresh session: ask again where the gateway is and whether identifies
                    // are left (the answer should not be cached for long).
                    match self.before_identify(api).await {
                        Ready::Url(Some(url)) => gateway_url = url,
                        Ready::Url(None) => {}
                        Ready::Stop => return,
                    }
                    Opening::Identify
                }
            };
            let url = match &opening {
                Opening::Resume(session) => session.resume_gateway_url.clone(),
                Opening::Identify => gateway_url.clone(),
            };
            let resuming = matches!(opening, Opening::Resume(_));
            tracing::debug!(resuming, "connecting to the Discord gateway");
            let mut link = Link {
                token: &token,
                shutdown: &self.ctx.shutdown,
                out: &out,
                hello_timeout: self.inner.options.connect_timeout,
                session: session.clone(),
                ready: false,
            };
            let ending = gateway::run(&url, opening, &mut link).await;
            session = link.session.take();
            self.inner.lock().connected = false;
            if link.ready {
                failures = 0;
                resume_failures = 0;
            } else {
                failures = failures.saturating_add(1);
            }
            let delay = match ending {
                Ending::Shutdown => return,
                Ending::Fatal(fatal) => {
                    let error = fatal.explain();
                    tracing::error!(%error, "the Discord gateway refused the bot; not reconnecting");
                    self.ctx.report(ChannelState::AuthFailed, Some(error));
                    return;
                }
                Ending::Resume { why, planned } => {
                    tracing::info!(%why, planned, "Discord gateway connection ended; resuming");
                    self.report_reconnecting(planned, &why);
                    if planned && link.ready {
                        Duration::ZERO
                    } else {
                        self.inner.retry_delay(failures.saturating_sub(1))
                    }
                }
                Ending::Identify {
                    why,
                    invalid_session,
                } => {
                    tracing::info!(%why, "Discord session ended; identifying again");
                    session = None;
                    self.report_reconnecting(invalid_session, &why);
                    if invalid_session {
                        random_between(self.inner.options.invalid_session_delay)
                    } else {
                        self.inner.retry_delay(failures.saturating_sub(1))
                    }
                }
                Ending::Failed(why) => {
                    tracing::info!(%why, "cannot reach the Discord gateway");
                    self.ctx.report(ChannelState::Reconnecting, Some(why));
                    if resuming {
                        resume_failures += 1;
                        if resume_failures >= RESUME_ATTEMPTS {
                            // The resume URL may be gone; a fresh session on the main URL.
                            session = None;
                            resume_failures = 0;
                        }
                    }
                    self.inner.retry_delay(failures.saturating_sub(1))
                }
            };
            if !self.pause(delay).await {
                return;
            }
        }
    }

    fn report_reconnecting(&self, planned: bool, why: &str) {
        let error = (!planned).then(|| why.to_owned());
        self.ctx.report(ChannelState::Reconnecting, error);
    }

    /// Before an IDENTIFY: the current gateway URL (when Discord answers) and, when the daily
    /// session starts are used up, the wait until they refill.
    async fn before_identify(&self, api: &Api) -> Ready {
        let gateway = tokio::select! {
            _ = self.ctx.shutdown.cancelled() => return Ready::Stop,
            gateway = api.gateway_bot() => gateway,
        };
        match gateway {
            Ok(gateway) => {
                if let Some(limit) = gateway.session_start_limit.filter(|l| l.remaining == 0) {
                    let wait = Duration::from_millis(limit.reset_after);
                    let error = format!(
                        "Discord allows no more session starts for {} s",
                        wait.as_secs()
                    );
                    tracing::warn!(%error, "waiting before identifying");
                    self.ctx.report(ChannelState::RateLimited, Some(error));
                    if !self.pause(wait).await {
                        return Ready::Stop;
                    }
                }
                Ready::Url(Some(gateway.url))
            }
            Err(error) if error.is_auth() => {
                self.ctx
                    .report(ChannelState::AuthFailed, Some(error.to_string()));
                Ready::Stop
            }
            // The URL from before still works; the connection will tell.
            Err(error) => {
                tracing::debug!(error = %error, "GET /gateway/bot failed; using the known URL");
                Ready::Url(None)
            }
        }
    }

    /// Handles what the connections received, in order, until the shutdown or until the
    /// connection loop ended and everything it passed on is handled. `current` is the session
    /// the next events belong to (the stored one, until READY says otherwise).
    async fn handle(
        &self,
        api: &Api,
        mut current: Option<Session>,
        mut incoming: mpsc::Receiver<Incoming>,
    ) {
        // Whether `current` moved past what is stored. Skipped messages are saved lazily: were
        // they replayed after a crash they would only be skipped again.
        let mut unsaved = false;
        loop {
            let item = tokio::select! {
                _ = self.ctx.shutdown.cancelled() => None,
                item = incoming.recv() => item,
            };
            let Some(item) = item else { break };
            match item {
                Incoming::Ready {
                    session,
                    user,
                    application_id,
                } => {
                    tracing::info!(bot = %user.id, "Discord gateway ready (new session)");
                    self.inner.lock().bot_id = Some(user.id.clone());
                    if let Some(application) = application_id {
                        tokio::spawn(register_commands(
                            api.clone(),
                            self.ctx.clone(),
                            application,
                        ));
                    }
                    self.connected();
                    self.save(&session);
                    unsaved = false;
                    current = Some(session);
                }
                Incoming::Resumed { session } => {
                    tracing::info!(seq = session.seq, "Discord session resumed");
                    self.connected();
                    let known = current
                        .as_ref()
                        .filter(|c| c.session_id == session.session_id)
                        .map_or(0, |c| c.seq);
                    let resumed = Session {
                        seq: known.max(session.seq),
                        ..session
                    };
                    self.save(&resumed);
                    unsaved = false;
                    current = Some(resumed);
                }
                Incoming::Dispatch {
                    session_id,
                    seq,
                    name,
                    data,
                } => {
                    let handled = match name.as_str() {
                        "MESSAGE_CREATE" => self.on_message(api, data).await,
                        "INTERACTION_CREATE" => {
                            self.on_interaction(api, data);
                            Handled::Skipped
                        }
                        _ => Handled::Skipped,
                    };
                    if handled == Handled::Stopped {
                        // Stopped before the message was stored: it stays unconfirmed, and a
                        // RESUME after the restart replays it.
                        break;
                    }
                    let Some(session) = current.as_mut().filter(|s| s.session_id == session_id)
                    else {
                        continue;
                    };
                    session.seq = session.seq.max(seq);
                    if handled == Handled::Stored {
                        let session = session.clone();
                        self.save(&session);
                        unsaved = false;
                    } else {
                        unsaved = true;
                    }
                }
            }
        }
        if let Some(session) = current.filter(|_| unsaved) {
            self.save(&session);
        }
    }

    fn connected(&self) {
        let rate_limited = {
            let mut state = self.inner.lock();
            state.connected = true;
            state.rate_limited
        };
        if !rate_limited {
            self.ctx.report(ChannelState::Connected, None);
        }
    }

    fn save(&self, session: &Session) {
        let Some(bot_id) = self.inner.lock().bot_id.clone() else {
            return;
        };
        let stored = Stored {
            bot_id,
            session: session.clone(),
        };
        let Ok(text) = serde_json::to_string(&stored) else {
            return;
        };
        if let Err(e) = self.ctx.save_offset(SESSION_KEY, &text) {
            tracing::warn!(error = %format!("{e:#}"), "cannot store the Discord session");
        }
    }

    /// Handles one MESSAGE_CREATE.
    async fn on_message(&self, api: &Api, data: Value) -> Handled {
        let message: wire::Message = match serde_json::from_value(data) {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(error = %e, "skipping a MESSAGE_CREATE that does not decode");
                return Handled::Skipped;
            }
        };
        if self.ctx.is_duplicate(&[decode::dedup_key(&message.id)]) {
            tracing::debug!(message = %message.id, "Discord message seen before");
            return Handled::Skipped;
        }
        let (bot_id, guilds, require_mention) = {
            let state = self.inner.lock();
            let Some(bot_id) = state.bot_id.clone() else {
                return Handled::Skipped;
            };
            let config = &self.inner.config;
            (bot_id, config.guilds.clone(), config.require_mention)
        };
        let addressing = Addressing {
            bot_id: &bot_id,
            guilds: &guilds,
            require_mention,
        };
        let mut place = self.inner.lock().places.get(&message.channel_id).cloned();
        let mut member = self.membership(&message.channel_id);
        // Each lookup is made at most once; a second request for the same fact means Discord's
        // answer did not settle it, and the message is skipped.
        let (mut looked_up_channel, mut looked_up_member) = (false, false);
        loop {
            match decode::decide(&message, &addressing, place.as_ref(), member) {
                Verdict::Ignore(skip) => {
                    tracing::debug!(message = %message.id, reason = skip.as_str(), "Discord message not for the bot");
                    return Handled::Skipped;
                }
                Verdict::NeedChannel(id) if !looked_up_channel => {
                    looked_up_channel = true;
                    match self.lookup(|| api.channel(&id)).await {
                        Lookup::Found(channel) => {
                            let found = Place {
                                kind: channel.kind,
                                parent_id: channel.parent_id.clone(),
                            };
                            let mut state = self.inner.lock();
                            if channel.owner_id.as_deref() == Some(bot_id.as_str()) {
                                remember(&mut state.threads, id.clone(), Membership::Member);
                                member = Some(true);
                            }
                            remember(&mut state.places, id, found.clone());
                            place = Some(found);
                        }
                        Lookup::Refused(error) => {
                            tracing::warn!(error = %error, "cannot look up a Discord channel; message skipped");
                            return Handled::Skipped;
                        }
                        Lookup::Stopped => return Handled::Stopped,
                    }
                }
                Verdict::NeedMembership(thread) if !looked_up_member => {
                    looked_up_member = true;
                    let is_member =
                        match self.lookup(|| api.is_thread_member(&thread, &bot_id)).await {
                            Lookup::Found(is_member) => is_member,
                            Lookup::Refused(_) => false,
                            Lookup::Stopped => return Handled::Stopped,
                        };
                    let known = if is_member {
                        Membership::Member
                    } else {
                        Membership::NotMember(Instant::now())
                    };
                    remember(&mut self.inner.lock().threads, thread, known);
                    member = Some(is_member);
                }
                Verdict::NeedChannel(_) | Verdict::NeedMembership(_) => {
                    tracing::warn!(message = %message.id, "cannot tell where a Discord message was written; skipped");
                    return Handled::Skipped;
                }
                Verdict::Accept(inbound) => {
                    let inbound = *inbound;
                    let direct = inbound.chat == crate::model::ChatType::Direct;
                    let thread = matches!(inbound.chat, crate::model::ChatType::Thread { .. });
                    let handled = self.accept(inbound).await;
                    // Learned only from messages past the access gate: strangers fill nothing.
                    if handled == Handled::Stored {
                        let mut state = self.inner.lock();
                        if direct {
                            remember(
                                &mut state.dms,
                                message.author.id.clone(),
                                message.channel_id.clone(),
                            );
                        }
                        if thread {
                            // The bot answers here, which makes it part of the thread.
                            remember(
                                &mut state.threads,
                                message.channel_id.clone(),
                                Membership::Member,
                            );
                        }
                    }
                    return handled;
                }
            }
        }
    }

    /// Whether the bot is part of a thread, as far as is known now.
    fn membership(&self, channel: &str) -> Option<bool> {
        match self.inner.lock().threads.get(channel) {
            Some(Membership::Member) => Some(true),
            Some(Membership::NotMember(at)) if at.elapsed() < NOT_MEMBER_TTL => Some(false),
            _ => None,
        }
    }

    /// A REST lookup for a message, retried while it fails transiently.
    async fn lookup<T, F, Fut>(&self, call: F) -> Lookup<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let mut attempt = 0u32;
        loop {
            let result = tokio::select! {
                _ = self.ctx.shutdown.cancelled() => return Lookup::Stopped,
                result = call() => result,
            };
            let delay = match result {
                Ok(value) => return Lookup::Found(value),
                Err(ApiError::RateLimited { retry_after, .. }) => retry_after,
                Err(error) if error.is_transient() => self.inner.retry_delay(attempt),
                Err(error) => return Lookup::Refused(error),
            };
            attempt = attempt.saturating_add(1);
            if !self.pause(delay).await {
                return Lookup::Stopped;
            }
        }
    }

    /// Hands a message to the engine, retrying until it is stored: a message that could not be
    /// stored is never counted as handled.
    async fn accept(&self, message: crate::model::InboundMessage) -> Handled {
        let mut attempt = 0u32;
        loop {
            match self.ctx.accept(message.clone()).await {
                Ok(Accepted::New(journal)) => {
                    tracing::debug!(journal, "Discord message accepted");
                    return Handled::Stored;
                }
                Ok(Accepted::Duplicate | Accepted::Refused | Accepted::Command) => {
                    return Handled::Skipped
                }
                Err(e) => {
                    let delay = self.inner.retry_delay(attempt);
                    attempt = attempt.saturating_add(1);
                    tracing::warn!(error = %format!("{e:#}"), ?delay, "cannot store a Discord message; retrying");
                    if !self.pause(delay).await {
                        return Handled::Stopped;
                    }
                }
            }
        }
    }
}

/// Caches `key → value` in a map that never grows past [`MAX_REMEMBERED`].
fn remember<V>(map: &mut HashMap<String, V>, key: String, value: V) {
    if map.len() >= MAX_REMEMBERED && !map.contains_key(&key) {
        map.clear();
    }
    map.insert(key, value);
}

/// What became of a dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    /// A new message is stored in the engine.
    Stored,
    /// Not for the bot, or seen before.
    Skipped,
    /// The channel stopped first; the event is not handled.
    Stopped,
}

/// The session as stored with the channel's offsets, with the bot it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    bot_id: String,
    #[serde(flatten)]
    session: Session,
}

/// What `before_identify` found.
enum Ready {
    Url(Option<String>),
    Stop,
}

/// A click on one of the bot's approval buttons.
#[derive(Debug, Clone, PartialEq)]
struct Click {
    interaction: String,
    token: String,
    application: Option<String>,
    choice: ChatChoice,
    approval_id: String,
    clicker: Peer,
    /// The clicked message's text as it was when clicked (the prompt).
    content: String,
}

/// A slash command someone used.
struct SlashCommand {
    interaction: String,
    token: String,
    application: String,
    message: crate::model::InboundMessage,
}

/// The commands' fingerprint is kept under this offset key, so an unchanged list is not sent again.
const COMMANDS_KEY: &str = "commands";
/// A reply target whose `reply_to` starts with this answers a slash command (the interaction id
/// follows).
const COMMAND_REPLY: &str = "interaction:";
/// How long an interaction's token edits its answer (Discord: 15 minutes).
const COMMAND_TOKEN_VALID: Duration = Duration::from_secs(14 * 60);

/// The bot's slash commands, as `PUT /applications/{id}/commands` takes them.
fn command_list() -> Value {
    let option = |kind: u8, name: &str, description: &str, required: bool| serde_json::json!({"type": kind, "name": name, "description": description, "required": required});
    let commands: Vec<Value> = crate::commands::MENU
        .iter()
        .map(|(name, description)| {
            let options = match *name {
                "resume" => vec![option(4, "n", "The session's number in /sessions", true)],
                "model" => vec![option(3, "name", "A model name, or default", false)],
                "approve" | "deny" => vec![option(3, "id", "The call's short id from /status", false)],
                _ => Vec::new(),
            };
            serde_json::json!({"name": name, "description": description, "type": 1, "options": options})
        })
        .collect();
    Value::Array(commands)
}

/// Registers the slash commands when they differ from the ones this application last got, so a
/// reconnect or a restart sends nothing. A failure is only logged; the next READY tries again.
async fn register_commands(api: Api, ctx: ChannelContext, application: String) {
    let list = command_list();
    let fingerprint = format!("{application}:{list}");
    if ctx.offset(COMMANDS_KEY).as_deref() == Some(fingerprint.as_str()) {
        return;
    }
    match api.put_commands(&application, &list).await {
        Ok(()) => {
            tracing::info!("Discord slash commands registered");
            if let Err(e) = ctx.save_offset(COMMANDS_KEY, &fingerprint) {
                tracing::warn!(error = %e, "cannot remember the registered commands");
            }
        }
        Err(e) => tracing::warn!(error = %e, "the Discord slash commands were not registered"),
    }
}

/// Reads a slash command as the message it stands for (`/resume 2`), answered in place.
fn read_command(interaction: wire::Interaction) -> Option<SlashCommand> {
    let data = interaction.data?;
    let name = data.name.filter(|n| !n.is_empty())?;
    let user = interaction
        .member
        .and_then(|m| m.user)
        .or(interaction.user)?;
    let channel = interaction.channel_id?;
    let application = interaction.application_id?;
    let mut text = format!("/{name}");
    for option in &data.options {
        match &option.value {
            Some(Value::String(s)) => text.push_str(&format!(" {s}")),
            Some(other) => text.push_str(&format!(" {other}")),
            None => {}
        }
    }
    let (chat, chat_id) = match interaction.guild_id {
        None => (ChatType::Direct, format!("dm:{}", user.id)),
        Some(_) => (
            ChatType::Group {
                id: channel.clone(),
            },
            channel,
        ),
    };
    Some(SlashCommand {
        message: crate::model::InboundMessage {
            channel: "discord".to_owned(),
            peer: Peer {
                id: user.id.clone(),
                name: Some(user.display_name().to_owned()).filter(|n| !n.is_empty()),
            },
            chat,
            text,
            target: DeliveryTarget {
                chat_id,
                thread_id: None,
                reply_to: Some(format!("{COMMAND_REPLY}{}", interaction.id)),
            },
            dedup_keys: vec![format!("discord:interaction:{}", interaction.id)],
            received_at_ms: now_ms(),
            attachments: Vec::new(),
        },
        interaction: interaction.id,
        token: interaction.token,
        application,
    })
}

/// Acknowledges a slash command at once (an answer only its user sees, "thinking…"), then hands
/// it to the engine, whose answer replaces the acknowledgement.
async fn answer_command(api: Api, ctx: ChannelContext, command: SlashCommand) {
    let deferred = serde_json::json!({
        "type": wire::callback::DEFERRED_CHANNEL_MESSAGE,
        "data": {"flags": 64},
    });
    if let Err(e) = api
        .answer_interaction(&command.interaction, &command.token, &deferred)
        .await
    {
        tracing::warn!(error = %e, "cannot acknowledge a Discord slash command");
        return;
    }
    match ctx.accept(command.message).await {
        Ok(accepted) => tracing::debug!(?accepted, "Discord slash command handed on"),
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot take a Discord slash command"),
    }
}

/// Reads a click on an approval button; `None` (logged) for any other interaction.
fn read_click(interaction: wire::Interaction) -> Option<Click> {
    if interaction.kind != wire::INTERACTION_MESSAGE_COMPONENT {
        tracing::debug!(kind = interaction.kind, "Discord interaction ignored");
        return None;
    }
    let custom_id = interaction
        .data
        .and_then(|d| d.custom_id)
        .unwrap_or_default();
    let Some((choice, approval_id)) = crate::approvals::parse_callback(&custom_id) else {
        tracing::debug!(%custom_id, "a Discord button that is not an approval's; ignored");
        return None;
    };
    // `member.user` in guilds, `user` in DMs.
    let Some(user) = interaction.member.and_then(|m| m.user).or(interaction.user) else {
        tracing::warn!(interaction = %interaction.id, "a Discord click without a user; ignored");
        return None;
    };
    Some(Click {
        interaction: interaction.id,
        token: interaction.token,
        application: interaction.application_id,
        choice,
        approval_id,
        clicker: Peer {
            id: user.id.clone(),
            name: Some(user.display_name().to_owned()).filter(|n| !n.is_empty()),
        },
        content: interaction.message.map(|m| m.content).unwrap_or_default(),
    })
}

impl Runner<'_> {
    /// Handles one INTERACTION_CREATE: an approval click is decided and answered in a task of its
    /// own, so messages keep flowing meanwhile.
    fn on_interaction(&self, api: &Api, data: Value) {
        let interaction = match serde_json::from_value::<wire::Interaction>(data) {
            Ok(interaction) => interaction,
            Err(e) => {
                tracing::warn!(error = %e, "skipping an INTERACTION_CREATE that does not decode");
                return;
            }
        };
        if interaction.kind == wire::INTERACTION_APPLICATION_COMMAND {
            let Some(command) = read_command(interaction) else {
                return;
            };
            remember(
                &mut self.inner.lock().commands,
                command.interaction.clone(),
                (
                    command.application.clone(),
                    command.token.clone(),
                    Instant::now(),
                ),
            );
            tokio::spawn(answer_command(api.clone(), self.ctx.clone(), command));
            return;
        }
        let Some(click) = read_click(interaction) else {
            return;
        };
        {
            let mut state = self.inner.lock();
            if state.clicks.contains(&click.interaction) {
                tracing::debug!(interaction = %click.interaction, "Discord click seen before");
                return;
            }
            state.clicks.push_back(click.interaction.clone());
            while state.clicks.len() > RECENT_CLICKS {
                state.clicks.pop_front();
            }
        }
        // The click may have waited behind other events: what is left of the deadline counts,
        // by the interaction id's time (a clock that runs ahead only means an early deferral).
        let age = wire::snowflake_ms(&click.interaction)
            .map(|at| {
                Duration::from_millis(u64::try_from(now_ms().saturating_sub(at)).unwrap_or(0))
            })
            .unwrap_or_default();
        let within = self
            .inner
            .options
            .click_answer_within
            .min(CLICK_DEADLINE.saturating_sub(age));
        tokio::spawn(answer_click(api.clone(), self.ctx.clone(), click, within));
    }
}

/// Decides a click and answers it within Discord's deadline: directly when the engine decides
/// within `within`, else acknowledged first (type 6) and answered by a follow-up.
async fn answer_click(api: Api, ctx: ChannelContext, click: Click, within: Duration) {
    let decide = ctx.decide(&click.approval_id, click.choice, &click.clicker);
    tokio::pin!(decide);
    let early = if within.is_zero() {
        None
    } else {
        tokio::time::timeout(within, &mut decide).await.ok()
    };
    let body = approval::body_of(&click.content);
    let outcome = match early {
        Some(outcome) => {
            let answer = approval::answer(&outcome, body);
            log_click(&click, &outcome);
            if let Err(e) = api
                .answer_interaction(&click.interaction, &click.token, &answer.callback())
                .await
            {
                tracing::warn!(error = %e, "cannot answer a Discord click");
            }
            return;
        }
        None => {
            if let Err(e) = api
                .answer_interaction(&click.interaction, &click.token, &approval::deferred())
                .await
            {
                tracing::warn!(error = %e, "cannot acknowledge a Discord click");
            }
            decide.await
        }
    };
    log_click(&click, &outcome);
    let Some(application) = click.application.as_deref() else {
        tracing::warn!("a Discord click without its application id; cannot follow it up");
        return;
    };
    let result = match approval::answer(&outcome, body) {
        approval::Answer::Update(data) => api.edit_original(application, &click.token, &data).await,
        approval::Answer::Private(data) => api.follow_up(application, &click.token, &data).await,
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot follow up a Discord click");
    }
}

fn log_click(click: &Click, outcome: &ChoiceOutcome) {
    let result = match outcome {
        ChoiceOutcome::Decided(_) => "decided",
        ChoiceOutcome::AlreadyDecided(_) => "already decided",
        ChoiceOutcome::NotAllowed(_) => "not allowed",
        ChoiceOutcome::NotFound(_) => "not found",
    };
    tracing::info!(
        approval = %click.approval_id,
        clicker = %click.clicker.id,
        choice = ?click.choice,
        result,
        "Discord approval click"
    );
}

/// A random duration in `[low, high]`.
fn random_between((low, high): (Duration, Duration)) -> Duration {
    let (low, high) = if low <= high {
        (low, high)
    } else {
        (high, low)
    };
    low + (high - low).mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_session_is_flat_json_with_its_bot() {
        let stored = Stored {
            bot_id: "800".into(),
            session: Session {
                session_id: "abc".into(),
                resume_gateway_url: "wss://gateway-us-east1-b.discord.gg".into(),
                seq: 42,
            },
        };
        let text = serde_json::to_string(&stored).expect("json");
        assert_eq!(
            text,
            r#"{"bot_id":"800","session_id":"abc","resume_gateway_url":"wss://gateway-us-east1-b.discord.gg","seq":42}"#
        );
        assert_eq!(serde_json::from_str::<Stored>(&text).ok(), Some(stored));
    }

    #[test]
    fn clicks_are_read_from_guilds_and_dms_and_other_buttons_ignored() {
        let click = |extra: serde_json::Value, custom_id: &str, kind: u8| {
            let mut data = serde_json::json!({
                "id": "1400000000000000001", "application_id": "800", "type": kind,
                "token": "t", "data": {"custom_id": custom_id, "component_type": 2},
                "channel_id": "1200", "message": {"id": "1300", "content": "🔐 p"},
            });
            if let (Some(data), Some(extra)) = (data.as_object_mut(), extra.as_object()) {
                data.extend(extra.clone());
            }
            serde_json::from_value::<wire::Interaction>(data)
                .ok()
                .and_then(read_click)
        };
        let ann = serde_json::json!({"id": "900", "username": "ann", "global_name": "Ann"});
        let in_guild = click(
            serde_json::json!({"guild_id": "1100", "member": {"user": ann.clone()}}),
            "sb:a:abc",
            3,
        )
        .expect("a click in a guild");
        assert_eq!(
            (in_guild.clicker.id.as_str(), in_guild.clicker.label()),
            ("900", "Ann")
        );
        assert_eq!(
            (in_guild.choice, in_guild.approval_id.as_str()),
            (ChatChoice::Approve, "abc")
        );
        assert_eq!(in_guild.application.as_deref(), Some("800"));
        assert_eq!(in_guild.content, "🔐 p");
        let in_dm = click(serde_json::json!({"user": ann.clone()}), "sb:r:abc", 3)
            .expect("a click in a DM");
        assert_eq!(
            (in_dm.clicker.id.as_str(), in_dm.choice),
            ("900", ChatChoice::Reject)
        );
        let user = serde_json::json!({"user": ann});
        assert_eq!(click(user.clone(), "approve:17", 3), None, "not ours");
        assert_eq!(click(user, "sb:a:abc", 2), None, "a slash command");
        assert_eq!(click(serde_json::json!({}), "sb:a:abc", 3), None, "nobody");
    }

    #[test]
    fn random_waits_stay_in_their_range() {
        let range = (Duration::from_secs(1), Duration::from_secs(5));
        for _ in 0..100 {
            let wait = random_between(range);
            assert!(wait >= range.0 && wait <= range.1, "{wait:?}");
        }
        let backwards = random_between((Duration::from_secs(2), Duration::from_secs(1)));
        assert!(backwards >= Duration::from_secs(1) && backwards <= Duration::from_secs(2));
    }

    #[test]
    fn sends_are_checked_before_any_request() {
        let channel = DiscordChannel::new(&DiscordConfig {
            token: "t".into(),
            api_base: "http://127.0.0.1:9/api/v10".into(),
            ..DiscordConfig::default()
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let target = DeliveryTarget::chat("1200000000000000001");
        let too_long = "x".repeat(2001);
        let cases = [("   ", "empty"), (too_long.as_str(), "at most 2000")];
        for (text, why) in cases {
            match runtime.block_on(channel.send(&target, text)) {
                Err(ChannelError::Rejected(message)) => {
                    assert!(message.contains(why), "{message}")
                }
                other => panic!("{why}: {other:?}"),
            }
        }
        let bad = DeliveryTarget::chat("general");
        assert!(matches!(
            runtime.block_on(channel.send(&bad, "hi")),
            Err(ChannelError::TargetNotFound(_))
        ));
        assert_eq!(channel.text_limit(), TextLimit::DISCORD);
        assert_eq!(channel.name(), "discord");
    }
}
