//! The Slack channel: Socket Mode for receiving, the Web API for everything else
//! (`shared/contracts/channels.md`, section 2).
//!
//! - **Start.** `auth.test` with the bot token gives the bot's user id (to spot mentions and its
//!   own messages) and name; a refused token reports `auth_failed` and stops.
//! - **Receiving** ([`receive`]). `apps.connections.open` with the app-level token gives a
//!   WebSocket URL; Slack's first frame is `hello`. Every envelope is acknowledged as soon as the
//!   message it carries is stored (`ChannelContext::accept`, a local SQLite write), well within
//!   Slack's 3 s, and before the agent works on it. A `disconnect` (`warning`,
//!   `refresh_requested`) opens the next socket before the old one is let go, so no event falls
//!   in between; `link_disabled` stops for good. Each socket is pinged every few seconds to catch
//!   a half-open one; lost sockets are replaced with capped, jittered backoff. No socket is ever
//!   opened just because things are quiet.
//! - **Duplicates.** Each message carries two keys, `slack:event:<event_id>` (the same across
//!   Slack's retries) and `slack:msg:<channel>:<ts>` (the same for the `message` and
//!   `app_mention` copies of one mention); the store drops a message when either was seen. A
//!   retry (`retry_attempt > 0`) is processed like any delivery unless it was seen: it may be the
//!   only copy.
//! - **Conversations** ([`decode`]): DMs always; in channels only when mentioned or in a thread
//!   the bot takes part in (per `require_mention`). Every channel conversation is a thread: a
//!   top-level mention is answered in a thread under it, and follow-ups there continue the same
//!   session.
//! - **Sending.** `chat.postMessage` with `&`, `<`, `>` escaped (so the agent cannot ping
//!   `<!channel>`), into the thread (`thread_ts` = the parent's `ts`) when there is one. A token
//!   bucket per conversation ([`pace`]) keeps to about one message a second with short bursts; a
//!   429 holds the conversation for `Retry-After` and is returned as `RateLimited`.
//! - **Live replies** ([`stream`]). A reply being written is a streaming message in its thread
//!   (`chat.startStream`, `chat.appendStream`, the tools as `task_update` cards) finished with
//!   `chat.stopStream`; `edit` on it finishes it, and a message left streaming by a restart is
//!   stopped and updated. Without streams (refused, or no person to stream to) the engine grows
//!   the reply by `chat.update`.
//! - **Notices.** Received: an `eyes` reaction on the message. Queued: an `hourglass_flowing_sand`
//!   reaction on it, which marks exactly the message that waits without adding a line to the
//!   thread where the answer will come (the `QUEUED_NOTE` text is posted only when there is no
//!   message to react to).
//! - **Typing.** A no-op: Slack has no typing indicator for bots. `assistant.threads.setStatus`
//!   only works in AI-assistant threads (it needs the assistant feature and scope, and fails
//!   elsewhere), and the dispatcher would spend a Web API call on it every few seconds; the
//!   `eyes` reaction already shows the message was picked up.
//! - **Approvals** ([`approval`]). A tool call waiting for approval is posted in the
//!   conversation's thread as Block Kit: the call (escaped `mrkdwn`, arguments in a code block)
//!   and Approve / Reject / Always allow buttons carrying `approvals::callback_data`. A click
//!   (`interactive` envelope, `block_actions`) is acknowledged on the socket first, then decided
//!   beside the receive loop: the prompt is updated to the outcome without buttons
//!   (`chat.update`), and refusals ("only the requester or an owner", "no longer pending") go to
//!   the clicker alone (`chat.postEphemeral`). `close_approval` updates the prompt the same way
//!   when the approval is decided anywhere else or expires.

mod api;
mod approval;
mod decode;
mod link;
mod pace;
mod receive;
mod stream;
mod text;
mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio::time::Instant;

pub use decode::ButtonClick;

use super::{
    Channel, ChannelContext, ChannelError, ConversationPlace, Notice, SentMessage, StreamUpdate,
    QUEUED_NOTE,
};
use crate::approvals::ApprovalPrompt;
use crate::chunk::TextLimit;
use crate::config::SlackConfig;
use crate::model::{ChatType, DeliveryTarget, Identity};
use api::WebApi;
use approval::Approvals;
use pace::{Pacer, Rate};

/// Timings of the Slack adapter. The defaults suit Slack; tests shorten them.
#[derive(Debug, Clone)]
pub struct SlackOptions {
    /// How often each socket is pinged (slack_sdk: 5 s).
    pub ping_every: Duration,
    /// A socket silent this long (no frame, no pong) is half-open and replaced.
    pub silence_limit: Duration,
    /// How long Slack has to open a socket and send `hello`.
    pub hello_within: Duration,
    /// Reconnect backoff: the first delay and the cap.
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// How long a message waits for its sender's name (`users.info`) before it is stored
    /// without one; acks are due within 3 s.
    pub name_lookup_within: Duration,
    /// Messages per second to one conversation, and the burst allowed after a quiet spell.
    pub messages_per_second: f64,
    pub burst: u32,
}

impl Default for SlackOptions {
    fn default() -> Self {
        SlackOptions {
            ping_every: Duration::from_secs(5),
            silence_limit: Duration::from_secs(15),
            hello_within: Duration::from_secs(10),
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(60),
            name_lookup_within: Duration::from_secs(1),
            messages_per_second: Rate::SLACK.per_second,
            burst: Rate::SLACK.burst,
        }
    }
}

/// How long a looked-up name is trusted, and a failed lookup remembered.
const NAME_TTL: Duration = Duration::from_secs(3600);
const NO_NAME_TTL: Duration = Duration::from_secs(300);
/// Bounds on the in-memory caches (the thread list is also kept durably).
const MAX_NAMES: usize = 10_000;
const MAX_THREADS: usize = 10_000;
/// How long the bot keeps answering a channel thread it joined without being mentioned again.
const THREAD_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// At most this many pages of `conversations.list` are read to find a channel by name.
const MAX_CHANNEL_PAGES: usize = 50;
/// How often old threads are looked for.
const THREAD_PRUNE_EVERY_MS: i64 = 3_600_000;

/// The Slack adapter.
pub struct SlackChannel {
    config: SlackConfig,
    options: SlackOptions,
    api: Arc<WebApi>,
    /// The running receive loop's context (its generation and the context), for the durable
    /// thread list; `None` while stopped.
    ctx: Mutex<Option<(u64, ChannelContext)>>,
    generation: std::sync::atomic::AtomicU64,
    /// Channel threads the bot takes part in: `(channel, parent ts)`.
    threads: Mutex<HashSet<(String, String)>>,
    /// Channel names (lower case) → ids, learned from `conversations.list`.
    channel_ids: Mutex<HashMap<String, String>>,
    /// When the stored threads were last pruned (ms; 0: not yet).
    threads_pruned_ms: std::sync::atomic::AtomicI64,
    names: Arc<Names>,
    approvals: Arc<Approvals>,
    pacer: Mutex<Pacer>,
    /// The workspace the bot is in (`auth.test`), which a stream outside a DM names.
    team_id: Mutex<Option<String>>,
    /// Streaming messages being written, by `ts`.
    streams: Mutex<HashMap<String, stream::Live>>,
}

/// People's display names, from `users.info`, cached.
pub(super) struct Names {
    api: Arc<WebApi>,
    /// How long a lookup may take (an ack may be waiting).
    within: Duration,
    cache: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

impl Names {
    /// The user's display name, from the cache or `users.info` (briefly).
    pub(super) async fn lookup(&self, user: &str) -> Option<String> {
        if let Some((name, at)) = lock(&self.cache).get(user) {
            let ttl = if name.is_some() {
                NAME_TTL
            } else {
                NO_NAME_TTL
            };
            if at.elapsed() < ttl {
                return name.clone();
            }
        }
        let name = match tokio::time::timeout(self.within, self.api.users_info(user)).await {
            Ok(Ok(info)) => info.user.label(),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "slack: no name for a user");
                None
            }
            Err(_) => {
                tracing::debug!("slack: users.info is slow; going on without a name");
                None
            }
        };
        let mut cache = lock(&self.cache);
        if cache.len() >= MAX_NAMES {
            cache.clear();
        }
        cache.insert(user.to_owned(), (name.clone(), Instant::now()));
        name
    }
}

impl SlackChannel {
    pub fn new(config: &SlackConfig) -> SlackChannel {
        SlackChannel::with_options(config, SlackOptions::default())
    }

    pub fn with_options(config: &SlackConfig, options: SlackOptions) -> SlackChannel {
        let rate = Rate {
            per_second: options.messages_per_second,
            burst: options.burst,
        };
        let api = Arc::new(WebApi::new(
            &config.api_base,
            &config.bot_token,
            &config.app_token,
        ));
        SlackChannel {
            names: Arc::new(Names {
                api: api.clone(),
                within: options.name_lookup_within,
                cache: Mutex::default(),
            }),
            approvals: Arc::new(Approvals::new(api.clone())),
            api,
            config: config.clone(),
            options,
            ctx: Mutex::new(None),
            generation: Default::default(),
            threads: Mutex::default(),
            threads_pruned_ms: Default::default(),
            channel_ids: Mutex::default(),
            pacer: Mutex::new(Pacer::new(rate)),
            team_id: Mutex::new(None),
            streams: Mutex::default(),
        }
    }

    fn context(&self) -> Option<ChannelContext> {
        lock(&self.ctx).as_ref().map(|(_, ctx)| ctx.clone())
    }

    /// Whether the bot takes part in a channel thread: it was addressed or posted there.
    fn in_thread(&self, ctx: &ChannelContext, channel: &str, thread_ts: &str) -> bool {
        let key = (channel.to_owned(), thread_ts.to_owned());
        if lock(&self.threads).contains(&key) {
            return true;
        }
        let known = ctx.offset(&thread_key(channel, thread_ts)).is_some();
        if known {
            lock(&self.threads).insert(key);
        }
        known
    }

    /// Remembers that the bot takes part in a channel thread, durably, so that follow-ups there
    /// are answered without a mention, after a restart too. Called only for messages past the
    /// access gate; the stored threads are forgotten [`THREAD_TTL`] after the bot joined them.
    fn join_thread(&self, channel: &str, thread_ts: &str) {
        let fresh = {
            let mut threads = lock(&self.threads);
            if threads.len() >= MAX_THREADS {
                threads.clear();
            }
            threads.insert((channel.to_owned(), thread_ts.to_owned()))
        };
        if !fresh {
            return;
        }
        let Some(ctx) = self.context() else {
            return;
        };
        let now = crate::model::now_ms();
        if let Err(e) = ctx.save_offset(&thread_key(channel, thread_ts), &now.to_string()) {
            tracing::warn!(error = %e, "slack: cannot store a thread the bot takes part in");
        }
        let last = self
            .threads_pruned_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if now - last >= THREAD_PRUNE_EVERY_MS {
            self.threads_pruned_ms
                .store(now, std::sync::atomic::Ordering::Relaxed);
            let ttl_ms = THREAD_TTL.as_millis() as i64;
            match ctx.prune_offsets("thread:", now - ttl_ms) {
                Ok(0) => {}
                Ok(n) => tracing::debug!(forgotten = n, "slack: old threads forgotten"),
                Err(e) => tracing::warn!(error = %e, "slack: cannot forget old threads"),
            }
        }
    }

    /// The id of the channel called `name`, from a cache or `conversations.list` (all pages).
    async fn channel_id_named(&self, name: &str) -> Result<String, String> {
        let name = name.trim().to_ascii_lowercase();
        if let Some(id) = lock(&self.channel_ids).get(&name) {
            return Ok(id.clone());
        }
        let mut cursor = String::new();
        for _ in 0..MAX_CHANNEL_PAGES {
            let page = self
                .api
                .conversations_page(&cursor)
                .await
                .map_err(|e| format!("cannot look up the Slack channel #{name}: {e}"))?;
            let mut ids = lock(&self.channel_ids);
            if ids.len() > MAX_THREADS {
                ids.clear();
            }
            for entry in page.channels {
                ids.insert(entry.name.to_ascii_lowercase(), entry.id);
            }
            if let Some(id) = ids.get(&name) {
                return Ok(id.clone());
            }
            drop(ids);
            cursor = page
                .response_metadata
                .map(|m| m.next_cursor)
                .unwrap_or_default();
            if cursor.is_empty() {
                break;
            }
        }
        Err(format!(
            "no Slack channel named #{name} is visible to the bot; invite the bot there or use the channel id (C…)"
        ))
    }

    /// The sender's display name, from a cache or `users.info` (briefly: the ack is waiting).
    async fn user_name(&self, user: &str) -> Option<String> {
        self.names.lookup(user).await
    }

    /// A click on a button, already acknowledged: handled beside the receive loop, so envelopes
    /// behind it keep being acknowledged in time.
    fn on_click(&self, ctx: &ChannelContext, click: ButtonClick) {
        tokio::spawn(approval::on_click(
            self.approvals.clone(),
            self.names.clone(),
            ctx.clone(),
            click,
        ));
    }

    /// Posts one message, paced per conversation.
    async fn post(&self, target: &DeliveryTarget, text: &str) -> Result<SentMessage, ChannelError> {
        let body = json!({ "channel": target.chat_id, "text": text::escape(text) });
        let (_, ts) = self.post_body(target, body).await?;
        Ok(SentMessage { id: ts })
    }

    /// Posts a `chat.postMessage` body (into the target's thread), paced per conversation.
    /// Returns the conversation it landed in and its `ts`.
    async fn post_body(
        &self,
        target: &DeliveryTarget,
        mut body: serde_json::Value,
    ) -> Result<(String, String), ChannelError> {
        let wait = lock(&self.pacer).reserve(&target.chat_id, Instant::now());
        if !wait.is_zero() {
            tracing::debug!(?wait, "slack: pacing a message");
            tokio::time::sleep(wait).await;
        }
        if let Some(thread) = &target.thread_id {
            body["thread_ts"] = json!(thread);
        }
        match self.api.post_message(&body).await {
            Ok(posted) => Ok(self.landed(target, posted)),
            Err(e) => {
                if let api::ApiError::RateLimited { retry_after, .. } = &e {
                    tracing::info!(retry_after = ?retry_after, "slack: chat.postMessage rate limited");
                }
                Err(self.held(&target.chat_id, e))
            }
        }
    }

    /// Where a posted message landed (a user id target lands in the DM), and its `ts`; a thread
    /// the bot posted in is one it takes part in.
    fn landed(&self, target: &DeliveryTarget, posted: wire::Posted) -> (String, String) {
        let channel = if posted.channel.is_empty() {
            target.chat_id.clone()
        } else {
            posted.channel
        };
        if let Some(thread) = &target.thread_id {
            self.join_thread(&channel, thread);
        }
        (channel, posted.ts)
    }
}

#[async_trait]
impl Channel for SlackChannel {
    fn name(&self) -> &str {
        decode::NAME
    }

    fn text_limit(&self) -> TextLimit {
        TextLimit::SLACK
    }

    async fn run(&self, ctx: ChannelContext) {
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *lock(&self.ctx) = Some((generation, ctx.clone()));
        receive::run(self, &ctx).await;
        let mut current = lock(&self.ctx);
        // A new run may have started while this one wound down; leave its context alone.
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }

    async fn send(&self, target: &DeliveryTarget, text: &str) -> Result<SentMessage, ChannelError> {
        self.post(target, text).await
    }

    /// `chat.update`, paced with the conversation's other messages. A stream being written is
    /// finished with `chat.stopStream` instead; a message that refuses the update may be a
    /// stream from before a restart, so it is stopped and updated once more.
    async fn edit(
        &self,
        target: &DeliveryTarget,
        message_id: &str,
        text: &str,
    ) -> Result<(), ChannelError> {
        self.pace(&target.chat_id).await;
        if let Some(finished) = self.finish_stream(&target.chat_id, message_id, text).await {
            return finished;
        }
        let body =
            json!({ "channel": target.chat_id, "ts": message_id, "text": text::escape(text) });
        match self.api.update_message(&body).await {
            Err(e @ api::ApiError::Failed { .. }) => {
                let stop = json!({ "channel": target.chat_id, "ts": message_id });
                if self.api.stop_stream(&stop).await.is_err() {
                    return Err(e.into());
                }
                Ok(self.api.update_message(&body).await?)
            }
            result => result.map_err(|e| self.held(&target.chat_id, e)),
        }
    }

    async fn stream(&self, update: &StreamUpdate<'_>) -> Result<String, ChannelError> {
        self.stream_update(update).await
    }

    async fn notice(&self, target: &DeliveryTarget, notice: Notice) -> Result<(), ChannelError> {
        let reaction = match notice {
            Notice::Received => "eyes",
            Notice::Queued => "hourglass_flowing_sand",
        };
        match (&target.reply_to, notice) {
            (Some(ts), _) => Ok(self.api.add_reaction(&target.chat_id, ts, reaction).await?),
            (None, Notice::Queued) => self.post(target, QUEUED_NOTE).await.map(|_| ()),
            (None, Notice::Received) => Ok(()),
        }
    }

    /// A shared file, from `url_private_download` with the bot token (Slack's file host only).
    async fn fetch(
        &self,
        attachment: &crate::model::Attachment,
        limits: &crate::media::Limits,
    ) -> Result<Vec<u8>, crate::media::FetchError> {
        if attachment.source.is_empty() {
            return Err(crate::media::FetchError::Failed(
                "Slack does not give this file to apps (the workspace's plan hides it, or it was deleted)".into(),
            ));
        }
        self.api.download(&attachment.source, limits).await
    }

    async fn test(&self) -> Result<Identity, ChannelError> {
        if !self.config.app_token.starts_with("xapp-") {
            return Err(ChannelError::Auth(
                "the app-level token must start with xapp- (Basic Information → App-Level Tokens, scope connections:write)"
                    .to_owned(),
            ));
        }
        let auth = self.api.auth_test().await?;
        Ok(Identity {
            id: auth.user_id,
            name: auth.user,
        })
    }

    fn parse_target(&self, target: &str) -> Result<DeliveryTarget, String> {
        decode::parse_target(target)
    }

    /// `#name` (or a bare name) is looked up among the channels the bot can see.
    async fn resolve_target(&self, target: &str) -> Result<String, String> {
        let target = target.trim();
        let (head, thread) = match target.split_once(':') {
            Some((head, thread)) => (head, Some(thread)),
            None => (target, None),
        };
        // Slack's channel names: lower case letters, digits, `-` and `_`, at most 80.
        let name = head.strip_prefix('#').unwrap_or(head);
        let is_name = (head.starts_with('#') || decode::parse_target(head).is_err())
            && (1..=80).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !is_name {
            return Ok(target.to_owned());
        }
        let id = self.channel_id_named(name).await?;
        Ok(match thread {
            Some(thread) => format!("{id}:{thread}"),
            None => id,
        })
    }

    /// A user id or `D…` is a direct chat; a channel's conversations are threads, so one that
    /// starts here lives in the thread under its notice.
    fn conversation_at(&self, target: &DeliveryTarget, notice: Option<&str>) -> ConversationPlace {
        let id = target.chat_id.as_str();
        if id.starts_with(['U', 'W']) {
            return ConversationPlace::at(target, ChatType::Direct, Some(id.to_owned()));
        }
        if id.starts_with('D') {
            return ConversationPlace::at(target, ChatType::Direct, None);
        }
        let thread = target
            .thread_id
            .clone()
            .or_else(|| notice.map(str::to_owned))
            .unwrap_or_default();
        ConversationPlace {
            chat: ChatType::Thread {
                group_id: id.to_owned(),
                thread_id: thread.clone(),
            },
            peer_id: None,
            target: DeliveryTarget {
                chat_id: id.to_owned(),
                thread_id: Some(thread),
                reply_to: None,
            },
        }
    }

    async fn post_approval(
        &self,
        target: &DeliveryTarget,
        prompt: &ApprovalPrompt,
    ) -> Result<Option<SentMessage>, ChannelError> {
        let (view, summary) = approval::prompt_view(prompt);
        // No previews: a URL among the arguments must not be fetched by Slack.
        let body = json!({
            "channel": target.chat_id, "text": view.text, "blocks": view.blocks,
            "unfurl_links": false, "unfurl_media": false,
        });
        let (channel, ts) = self.post_body(target, body).await?;
        self.approvals.remember(&channel, &ts, summary);
        Ok(Some(SentMessage { id: ts }))
    }

    async fn close_approval(
        &self,
        target: &DeliveryTarget,
        message_id: &str,
        outcome: &str,
    ) -> Result<(), ChannelError> {
        self.approvals
            .close(&target.chat_id, message_id, outcome)
            .await
    }
}

/// The durable key of a channel thread the bot takes part in.
fn thread_key(channel: &str, thread_ts: &str) -> String {
    format!("thread:{channel}:{thread_ts}")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a single insert or lookup; a panic cannot leave the value
    // half-changed, so a poisoned lock is still safe to use.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
