//! Telegram: the Bot API over long polling (contract section 1).
//!
//! At start the adapter checks the token with `getMe` (the identity is `@username`), removes any
//! webhook with `deleteWebhook` (a webhook and long polling exclude each other), then long-polls
//! `getUpdates`. A batch is confirmed (the next poll's `offset`, saved durably) only after every
//! message in it was stored by the engine; a crash in between redelivers the batch and the
//! engine drops what it already has by the update and message keys.
//!
//! Replies go out as plain text (no `parse_mode`, so nothing is interpreted), as replies to the
//! message that asked, in its forum topic when it came from one, paced by a send budget
//! ([`pace`]) so a burst is spread out instead of refused.
//!
//! Tool approvals are a prompt with inline buttons, posted where the conversation is ([`approval`]
//! renders it). A click is decided by the engine, answered at once with the outcome (an alert for
//! a refusal, shown to the clicker only), and a decision turns the prompt into its outcome without
//! buttons; the engine does the same through [`Channel::close_approval`] whichever surface decided,
//! so both edits say the same and the second is a harmless "not modified".
//!
//! The token is part of every URL; the API client strips it from every error, and nothing here
//! logs a URL.

mod api;
mod approval;
mod decode;
mod pace;
mod target;
mod wire;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{
    Channel, ChannelContext, ChannelError, ConversationPlace, Notice, SentMessage, QUEUED_NOTE,
};
use crate::approvals::{self, ApprovalPrompt, ChoiceOutcome};
use crate::backoff;
use crate::chunk::TextLimit;
use crate::config::TelegramConfig;
use crate::model::{ChannelState, ChatType, DeliveryTarget, Identity, Peer};

use api::{Api, ApiError};
use decode::{Bot, Decoded};
use wire::{
    AnswerCallbackQuery, ChatRef, EditMessageText, Entity, InlineKeyboard, ReplyParameters,
    SendChatAction, SendMessage as SendMessageBody, Update,
};

pub use target::parse_target;

/// How long one long poll waits for updates by default (the server caps it at 50 s).
pub const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the command menu last set for the bot is kept (its fingerprint).
const COMMANDS_KEY: &str = "commands";
const RETRY_BASE: Duration = Duration::from_millis(500);
const RETRY_CAP: Duration = Duration::from_secs(30);

const NO_TOKEN: &str = "no bot token is set (channels.telegram.token); get one from @BotFather";

/// How long a click may wait for the engine's decision before the button is answered anyway: the
/// client stops waiting for an answer after a few seconds.
const DECIDE_WITHIN: Duration = Duration::from_secs(2);
/// Said to a clicker whose decision is taking longer than [`DECIDE_WITHIN`].
const DECIDING: &str = "⏳ Recording your answer…";
/// Attempts at editing a prompt when Telegram asks to slow down, and the longest wait in between.
const EDIT_ATTEMPTS: u32 = 3;
const EDIT_WAIT_MAX: Duration = Duration::from_secs(30);

/// The Telegram channel.
pub struct TelegramChannel {
    api: Api,
    require_mention: bool,
    poll_timeout: Duration,
    shared: Mutex<Shared>,
    budget: Mutex<pace::Budget>,
    /// The approval prompts posted, so a closed one still shows what was asked.
    posted: Mutex<approval::Posted>,
}

#[derive(Default)]
struct Shared {
    /// The context of the receive loop that runs now, with its generation (a loop that ends after
    /// a newer one started must not clear the newer one's context).
    running: Option<(u64, ChannelContext)>,
    generation: u64,
    /// Groups that became supergroups: old chat id → new chat id.
    migrations: HashMap<String, String>,
    /// A send was refused with 429 and the state says so; the next success clears it.
    rate_limited: bool,
}

impl TelegramChannel {
    pub fn new(config: &TelegramConfig) -> Self {
        TelegramChannel {
            api: Api::new(&config.api_base, &config.token),
            require_mention: config.require_mention,
            poll_timeout: DEFAULT_POLL_TIMEOUT,
            shared: Mutex::default(),
            budget: Mutex::new(pace::Budget::new(pace::Limits::TELEGRAM)),
            posted: Mutex::default(),
        }
    }

    /// Changes how long each long poll waits (whole seconds, at most 50).
    pub fn with_poll_timeout(mut self, timeout: Duration) -> Self {
        self.poll_timeout = Duration::from_secs(timeout.as_secs().clamp(0, 50));
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // Every update under this lock is a single assignment, so a poisoned lock is still whole.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn context(&self) -> Option<ChannelContext> {
        self.lock().running.as_ref().map(|(_, ctx)| ctx.clone())
    }

    /// The receive loop proper; returns when shut down or when the token is refused.
    async fn receive(&self, ctx: &ChannelContext) {
        ctx.report(ChannelState::Connecting, None);
        if !self.api.has_token() {
            ctx.report(ChannelState::AuthFailed, Some(NO_TOKEN.to_string()));
            return;
        }
        let Some(bot) = self.connect(ctx).await else {
            return;
        };
        let offset_key = format!("offset:{}", bot.id);
        let mut offset: Option<i64> = ctx.offset(&offset_key).and_then(|v| v.parse().ok());
        // Failures in a row, for the backoff. Only a long poll that goes through resets it: a
        // second instance polling with the same token would otherwise be beaten back by every
        // short recovery poll, and the two would take turns once a second forever.
        let mut failures = 0u32;
        let mut recovering = false;
        loop {
            // After a failure the first poll is short, so that recovering shows at once instead of
            // when the next update or the long poll's timeout comes.
            let timeout = if recovering {
                Duration::ZERO
            } else {
                self.poll_timeout
            };
            let polled = tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                polled = self.api.get_updates(offset, timeout) => polled,
            };
            let updates = match polled {
                Ok(updates) => updates,
                Err(e) => {
                    if !self.wait_after(ctx, &e, failures).await {
                        return;
                    }
                    failures += 1;
                    recovering = true;
                    continue;
                }
            };
            if recovering {
                tracing::info!(channel = "telegram", "receiving again");
                ctx.report(ChannelState::Connected, None);
                recovering = false;
            } else {
                failures = 0;
            }
            match self.handle_batch(ctx, &bot, updates).await {
                Ok(Some(next)) => {
                    // A redelivered old update must not move the offset back.
                    let next = offset.map_or(next, |o| o.max(next));
                    offset = Some(next);
                    if let Err(e) = ctx.save_offset(&offset_key, &next.to_string()) {
                        // The updates are still confirmed by the next poll; after a restart they
                        // would come again and be dropped as duplicates.
                        tracing::warn!(channel = "telegram", error = %format!("{e:#}"), "could not save the update offset");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    // Not confirmed: the next poll asks for the same updates again.
                    let message = format!("could not store a received message: {e:#}");
                    tracing::warn!(channel = "telegram", error = %message, "batch not confirmed");
                    ctx.report(ChannelState::Reconnecting, Some(message));
                    let delay = backoff::delay(failures, RETRY_BASE, RETRY_CAP);
                    failures += 1;
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Checks the token and clears any webhook, retrying transient failures. `None` when shut down
    /// or when the token is refused (reported).
    async fn connect(&self, ctx: &ChannelContext) -> Option<Bot> {
        let mut failures = 0u32;
        let me = loop {
            let result = tokio::select! {
                _ = ctx.shutdown.cancelled() => return None,
                result = self.api.get_me() => result,
            };
            match result {
                Ok(me) => break me,
                Err(e) => {
                    if !self.wait_after(ctx, &e, failures).await {
                        return None;
                    }
                    failures += 1;
                }
            }
        };
        let bot = Bot {
            id: me.id,
            username: me.username.clone().unwrap_or_default(),
        };
        ctx.set_identity(identity(&me));
        tracing::info!(channel = "telegram", bot = %format!("@{}", bot.username), "token accepted");
        loop {
            let result = tokio::select! {
                _ = ctx.shutdown.cancelled() => return None,
                result = self.api.delete_webhook() => result,
            };
            match result {
                Ok(_) => break,
                Err(e) => {
                    if !self.wait_after(ctx, &e, failures).await {
                        return None;
                    }
                    failures += 1;
                }
            }
        }
        self.register_commands(ctx, &bot).await;
        ctx.report(ChannelState::Connected, None);
        Some(bot)
    }

    /// Sets the bot's command menu when it differs from the one this bot last got (kept with the
    /// channel's offsets), so a restart sends nothing: repeated command syncs are what get bots
    /// rate-limited. A failure is only logged; the next connection tries again.
    async fn register_commands(&self, ctx: &ChannelContext, bot: &Bot) {
        let menu: Vec<Value> = crate::commands::MENU
            .iter()
            .map(|(command, description)| {
                serde_json::json!({"command": command, "description": description})
            })
            .collect();
        let fingerprint = format!("{}:{}", bot.id, Value::Array(menu.clone()));
        if ctx.offset(COMMANDS_KEY).as_deref() == Some(fingerprint.as_str()) {
            return;
        }
        match self
            .api
            .set_my_commands(&serde_json::json!({ "commands": menu }))
            .await
        {
            Ok(_) => {
                tracing::info!(channel = "telegram", "command menu set");
                if let Err(e) = ctx.save_offset(COMMANDS_KEY, &fingerprint) {
                    tracing::warn!(channel = "telegram", error = %e, "cannot remember the command menu");
                }
            }
            Err(e) => {
                tracing::warn!(channel = "telegram", error = %e, "the command menu was not set; trying again at the next connection")
            }
        }
    }

    /// Reports a failed call and waits before the next attempt. False when the loop must end:
    /// shut down, or the token was refused (no retries then, so a bad token is not hammered).
    async fn wait_after(&self, ctx: &ChannelContext, error: &ApiError, failures: u32) -> bool {
        let (state, message, delay) = if error.is_auth() {
            let message = format!(
                "the Bot API refused the bot token ({error}); check channels.telegram.token"
            );
            tracing::warn!(channel = "telegram", error = %message, "stopped");
            ctx.report(ChannelState::AuthFailed, Some(message));
            return false;
        } else if let Some(wait) = error.retry_after() {
            (
                ChannelState::RateLimited,
                format!("rate limited by Telegram ({error})"),
                wait,
            )
        } else if error.code() == Some(409) {
            let message = format!(
                "another program is reading this bot's updates — a second Switchboard or bot using the same token, \
                 or a webhook ({error})"
            );
            (
                ChannelState::Reconnecting,
                message,
                backoff::delay(failures.max(1), RETRY_BASE, RETRY_CAP),
            )
        } else {
            (
                ChannelState::Reconnecting,
                error.to_string(),
                backoff::delay(failures, RETRY_BASE, RETRY_CAP),
            )
        };
        tracing::info!(channel = "telegram", error = %message, ?delay, "call failed; retrying");
        ctx.report(state, Some(message));
        tokio::select! {
            _ = ctx.shutdown.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    /// Hands a batch to the engine in order. Returns the offset that confirms it, or an error if a
    /// message could not be stored (then nothing after it is looked at).
    async fn handle_batch(
        &self,
        ctx: &ChannelContext,
        bot: &Bot,
        updates: Vec<Value>,
    ) -> anyhow::Result<Option<i64>> {
        let mut next: Option<i64> = None;
        for raw in updates {
            let Some(update_id) = raw.get("update_id").and_then(Value::as_i64) else {
                tracing::warn!(
                    channel = "telegram",
                    "an update without update_id was skipped"
                );
                continue;
            };
            match serde_json::from_value::<Update>(raw) {
                Ok(update) => self.handle(ctx, bot, &update).await?,
                Err(e) => {
                    tracing::warn!(channel = "telegram", update_id, error = %e, "an unreadable update was skipped")
                }
            }
            next = Some(next.map_or(update_id + 1, |n| n.max(update_id + 1)));
        }
        Ok(next)
    }

    async fn handle(&self, ctx: &ChannelContext, bot: &Bot, update: &Update) -> anyhow::Result<()> {
        match decode::decode(update, bot, self.require_mention) {
            Decoded::Message(message) => {
                if ctx.is_duplicate(&message.dedup_keys) {
                    tracing::debug!(
                        channel = "telegram",
                        update_id = update.update_id,
                        "redelivered message dropped"
                    );
                    return Ok(());
                }
                ctx.accept(*message).await?;
            }
            Decoded::Callback {
                id,
                data,
                from,
                chat_id,
                message_id,
            } => {
                let place = chat_id.zip(message_id);
                self.on_click(ctx, &id, data.as_deref(), &from, place).await;
            }
            Decoded::Migrated { from, to } => {
                self.remember_migration(&from.to_string(), &to.to_string())
            }
            Decoded::Skip(reason) => {
                tracing::debug!(
                    channel = "telegram",
                    update_id = update.update_id,
                    reason,
                    "update skipped"
                );
            }
        }
        Ok(())
    }

    /// A button was pressed under message `place` (chat, message). Ours are approval buttons:
    /// the engine decides, the clicker is answered at once with the outcome, and a decision shows
    /// on the prompt. Anything else is answered silently, so the client stops its spinner.
    async fn on_click(
        &self,
        ctx: &ChannelContext,
        query_id: &str,
        data: Option<&str>,
        from: &Peer,
        place: Option<(i64, i64)>,
    ) {
        let Some((choice, approval_id)) = data.and_then(approvals::parse_callback) else {
            tracing::debug!(channel = "telegram", data = ?data, "a button that is not ours");
            self.answer(query_id, None, false).await;
            return;
        };
        tracing::debug!(channel = "telegram", clicker = %from.id, ?choice, "approval button pressed");
        let deciding = ctx.decide(&approval_id, choice, from);
        tokio::pin!(deciding);
        let outcome = match tokio::time::timeout(DECIDE_WITHIN, &mut deciding).await {
            Ok(outcome) => {
                let (text, alert) = approval::answer(&outcome);
                self.answer(query_id, Some(&text), alert).await;
                outcome
            }
            Err(_) => {
                // The answer cannot wait any longer; the prompt still shows the decision.
                self.answer(query_id, Some(DECIDING), false).await;
                deciding.await
            }
        };
        if let ChoiceOutcome::NotAllowed(_) | ChoiceOutcome::NotFound(_) = &outcome {
            tracing::info!(channel = "telegram", clicker = %from.id, outcome = %outcome.text(), "approval click refused");
        }
        // A decision, this one or an earlier one: the prompt shows it (once; the engine's own
        // close of the prompt may have come first, which makes this a "not modified").
        let (Some(line), Some((chat, message_id))) = (approval::message_line(&outcome), place)
        else {
            return;
        };
        if let Err(e) = self
            .close_prompt(&chat.to_string(), message_id, line, 1)
            .await
        {
            tracing::debug!(channel = "telegram", error = %e, "the prompt could not show the outcome");
        }
    }

    /// Answers a button press; a failure only means the spinner runs until the client gives up.
    async fn answer(&self, query_id: &str, text: Option<&str>, show_alert: bool) {
        let body = AnswerCallbackQuery {
            callback_query_id: query_id,
            text,
            show_alert,
        };
        if let Err(e) = self.api.answer_callback_query(&body).await {
            tracing::debug!(channel = "telegram", error = %e, "button press not answered");
        }
    }

    /// Replaces prompt `message_id` in `chat` with how it ended, without buttons. A prompt that
    /// already says so ("message is not modified") is fine. A 429 is waited out, up to `attempts`
    /// tries in all.
    async fn close_prompt(
        &self,
        chat: &str,
        message_id: i64,
        outcome: &str,
        attempts: u32,
    ) -> Result<(), ChannelError> {
        let prompt = self
            .posted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(chat, message_id)
            .cloned();
        let rendered = approval::closed(outcome, prompt.as_ref());
        let body = EditMessageText {
            chat_id: ChatRef::parse(chat),
            message_id,
            text: &rendered.text,
            entities: &rendered.entities,
        };
        let mut attempt = 1;
        loop {
            match self.api.edit_message_text(&body).await {
                Ok(_) => {
                    self.clear_rate_limit();
                    return Ok(());
                }
                Err(e) if e.code() == Some(400) && e.says("message is not modified") => {
                    return Ok(())
                }
                Err(e) => match e.retry_after() {
                    Some(wait) if attempt < attempts => {
                        self.note_rate_limit(chat, &e);
                        tokio::time::sleep(wait.min(EDIT_WAIT_MAX)).await;
                        attempt += 1;
                    }
                    _ => return Err(e.into()),
                },
            }
        }
    }

    /// Posts `text` to `target` (its topic, as a reply to its message), paced by the send budget,
    /// following a migrated group or a vanished topic. Returns the chat it went to and its id.
    async fn post(
        &self,
        target: &DeliveryTarget,
        text: &str,
        entities: &[Entity],
        reply_markup: Option<&InlineKeyboard>,
    ) -> Result<(String, i64), ChannelError> {
        if !self.api.has_token() {
            return Err(ChannelError::Auth(NO_TOKEN.to_string()));
        }
        let mut chat = self.resolve_chat(&target.chat_id);
        let mut topic = topic_of(target);
        let reply_parameters = target
            .reply_to
            .as_deref()
            .and_then(|id| id.parse::<i64>().ok())
            .map(|message_id| ReplyParameters {
                message_id,
                allow_sending_without_reply: true,
            });
        self.pace(&chat).await;
        // At most one retry for a vanished topic and one for a migrated group.
        for _ in 0..3 {
            let body = SendMessageBody {
                chat_id: ChatRef::parse(&chat),
                text,
                message_thread_id: topic,
                reply_parameters: reply_parameters.clone(),
                entities,
                reply_markup,
            };
            match self.api.send_message(&body).await {
                Ok(sent) => {
                    self.clear_rate_limit();
                    return Ok((chat, sent.message_id));
                }
                Err(e)
                    if topic.is_some()
                        && e.code() == Some(400)
                        && e.says("message thread not found") =>
                {
                    // The topic was closed or deleted: the chat itself is the next best place.
                    tracing::info!(
                        channel = "telegram",
                        "the forum topic is gone; sending to the chat"
                    );
                    topic = None;
                }
                Err(ApiError::Api {
                    migrate_to: Some(to),
                    ..
                }) if to.to_string() != chat => {
                    self.remember_migration(&chat, &to.to_string());
                    chat = to.to_string();
                }
                Err(e) => {
                    self.note_rate_limit(&chat, &e);
                    return Err(e.into());
                }
            }
        }
        Err(ChannelError::Rejected(
            "the message could not be placed in this chat".into(),
        ))
    }

    /// Records that a group became a supergroup, durably, so replies follow it.
    fn remember_migration(&self, from: &str, to: &str) {
        tracing::info!(
            channel = "telegram",
            from,
            to,
            "group upgraded to a supergroup; following it"
        );
        self.lock()
            .migrations
            .insert(from.to_string(), to.to_string());
        if let Some(ctx) = self.context() {
            if let Err(e) = ctx.save_offset(&format!("migrated:{from}"), to) {
                tracing::warn!(channel = "telegram", error = %format!("{e:#}"), "could not save a group migration");
            }
        }
    }

    /// The chat a message for `chat_id` must go to now.
    fn resolve_chat(&self, chat_id: &str) -> String {
        let known = self.lock().migrations.get(chat_id).cloned();
        known
            .or_else(|| {
                self.context()
                    .and_then(|ctx| ctx.offset(&format!("migrated:{chat_id}")))
            })
            .unwrap_or_else(|| chat_id.to_string())
    }

    /// Waits for the chat's turn in the send budget, which messages, edits and drafts share.
    async fn pace(&self, chat: &str) {
        let wait = self
            .budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reserve(chat, tokio::time::Instant::now());
        if !wait.is_zero() {
            tracing::debug!(channel = "telegram", ?wait, "pacing a message");
            tokio::time::sleep(wait).await;
        }
    }

    /// A 429 holds the chat's budget for its `retry_after` and shows in the channel's state.
    fn note_rate_limit(&self, chat: &str, error: &ApiError) {
        let Some(wait) = error.retry_after() else {
            return;
        };
        self.budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .hold(chat, tokio::time::Instant::now() + wait);
        self.lock().rate_limited = true;
        if let Some(ctx) = self.context() {
            ctx.report(
                ChannelState::RateLimited,
                Some(format!("rate limited by Telegram ({error})")),
            );
        }
    }

    fn clear_rate_limit(&self) {
        if !std::mem::take(&mut self.lock().rate_limited) {
            return;
        }
        if let Some(ctx) = self.context() {
            ctx.report(ChannelState::Connected, None);
        }
    }
}

fn identity(me: &wire::User) -> Identity {
    let name = match &me.username {
        Some(username) => format!("@{username}"),
        None => me.display_name(),
    };
    Identity {
        id: me.id.to_string(),
        name,
    }
}

/// A forum topic id from a delivery target; General (and anything unreadable) means none.
fn topic_of(target: &DeliveryTarget) -> Option<i64> {
    target
        .thread_id
        .as_deref()
        .and_then(|t| t.parse::<i64>().ok())
        .filter(|t| *t > target::GENERAL_TOPIC)
}

#[async_trait]
impl Channel for TelegramChannel {
    fn name(&self) -> &str {
        "telegram"
    }

    fn text_limit(&self) -> TextLimit {
        TextLimit::TELEGRAM
    }

    async fn run(&self, ctx: ChannelContext) {
        let generation = {
            let mut shared = self.lock();
            shared.generation += 1;
            shared.running = Some((shared.generation, ctx.clone()));
            shared.generation
        };
        self.receive(&ctx).await;
        let mut shared = self.lock();
        if shared
            .running
            .as_ref()
            .is_some_and(|(g, _)| *g == generation)
        {
            shared.running = None;
        }
    }

    /// `sendMessageDraft`, in private chats only (elsewhere, or for a bot that may not, the reply
    /// grows by edits instead).
    async fn draft(
        &self,
        target: &DeliveryTarget,
        draft_id: u32,
        text: &str,
    ) -> Result<(), ChannelError> {
        let private = target.chat_id.parse::<i64>().is_ok_and(|id| id > 0);
        if !private {
            return Err(ChannelError::Rejected(
                "Telegram drafts are for private chats".into(),
            ));
        }
        let mut body = serde_json::json!({
            "chat_id": ChatRef::parse(&target.chat_id),
            "draft_id": draft_id.max(1),
            "text": text,
        });
        if let Some(thread) = target
            .thread_id
            .as_deref()
            .and_then(|t| t.parse::<i64>().ok())
        {
            body["message_thread_id"] = serde_json::json!(thread);
        }
        let chat = self.resolve_chat(&target.chat_id);
        self.pace(&chat).await;
        match self.api.send_message_draft(&body).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.note_rate_limit(&chat, &e);
                Err(e.into())
            }
        }
    }

    /// `editMessageText`, as plain text; "message is not modified" is not an error.
    async fn edit(
        &self,
        target: &DeliveryTarget,
        message_id: &str,
        text: &str,
    ) -> Result<(), ChannelError> {
        let message_id: i64 = message_id.parse().map_err(|_| {
            ChannelError::Rejected(format!("{message_id:?} is not a Telegram message id"))
        })?;
        let chat = self.resolve_chat(&target.chat_id);
        let body = EditMessageText {
            chat_id: ChatRef::parse(&chat),
            message_id,
            text,
            entities: &[],
        };
        self.pace(&chat).await;
        match self.api.edit_message_text(&body).await {
            Ok(_) => {
                self.clear_rate_limit();
                Ok(())
            }
            Err(e) if e.code() == Some(400) && e.says("message is not modified") => Ok(()),
            Err(e) => {
                self.note_rate_limit(&chat, &e);
                Err(e.into())
            }
        }
    }

    async fn send(&self, target: &DeliveryTarget, text: &str) -> Result<SentMessage, ChannelError> {
        let (_, message_id) = self.post(target, text, &[], None).await?;
        Ok(SentMessage {
            id: message_id.to_string(),
        })
    }

    async fn typing(&self, target: &DeliveryTarget) -> Result<(), ChannelError> {
        if !self.api.has_token() {
            return Err(ChannelError::Auth(NO_TOKEN.to_string()));
        }
        let body = SendChatAction {
            chat_id: ChatRef::parse(&self.resolve_chat(&target.chat_id)),
            action: "typing",
            message_thread_id: topic_of(target),
        };
        self.api
            .send_chat_action(&body)
            .await
            .map(|_| ())
            .map_err(ChannelError::from)
    }

    /// A queued message gets the queued note as a reply. Nothing is shown for a received one: a
    /// reaction on every message would be noise in a Telegram chat, and the typing indicator
    /// already says the bot is on it.
    async fn notice(&self, target: &DeliveryTarget, notice: Notice) -> Result<(), ChannelError> {
        match notice {
            Notice::Received => Ok(()),
            Notice::Queued => self.send(target, QUEUED_NOTE).await.map(|_| ()),
        }
    }

    /// `getFile`, then the file from the Bot API's file address (bots may download 20 MB).
    async fn fetch(
        &self,
        attachment: &crate::model::Attachment,
        limits: &crate::media::Limits,
    ) -> Result<Vec<u8>, crate::media::FetchError> {
        use crate::media::FetchError;
        let file = self.api.get_file(&attachment.source).await.map_err(|e| {
            if e.says("file is too big") {
                FetchError::Failed("it is larger than the 20 MB Telegram lets bots download".into())
            } else {
                FetchError::Failed(e.to_string())
            }
        })?;
        if file.file_size.is_some_and(|size| size > limits.max_bytes) {
            return Err(FetchError::TooLarge {
                max_mb: limits.max_mb(),
            });
        }
        let path = file.file_path.ok_or_else(|| {
            FetchError::Failed("Telegram gave no place to download it from".into())
        })?;
        self.api.download(&path, limits).await
    }

    async fn test(&self) -> Result<Identity, ChannelError> {
        if !self.api.has_token() {
            return Err(ChannelError::Auth(NO_TOKEN.to_string()));
        }
        match self.api.get_me().await {
            Ok(me) => Ok(identity(&me)),
            Err(e) if e.is_auth() => Err(ChannelError::Auth(format!(
                "the Bot API refused the bot token ({e}); check channels.telegram.token"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// `<chat_id>`, `<chat_id>:<topic_id>` or `@channelusername`; see [`parse_target`].
    fn parse_target(&self, target: &str) -> Result<DeliveryTarget, String> {
        parse_target(target)
    }

    /// A positive chat id is a private chat, whose id is the person's; a topic is a thread of its
    /// chat, private or not, as the decoder reads messages from there.
    fn conversation_at(&self, target: &DeliveryTarget, _notice: Option<&str>) -> ConversationPlace {
        let private = target.chat_id.parse::<i64>().is_ok_and(|id| id > 0);
        let chat = match (&target.thread_id, private) {
            (Some(thread), _) => ChatType::Thread {
                group_id: target.chat_id.clone(),
                thread_id: thread.clone(),
            },
            (None, true) => ChatType::Direct,
            (None, false) => ChatType::Group {
                id: target.chat_id.clone(),
            },
        };
        ConversationPlace::at(target, chat, private.then(|| target.chat_id.clone()))
    }

    /// The prompt with Approve / Reject / Always allow under it, in the conversation's topic and
    /// as a reply to the message that started the run.
    async fn post_approval(
        &self,
        target: &DeliveryTarget,
        prompt: &ApprovalPrompt,
    ) -> Result<Option<SentMessage>, ChannelError> {
        let rendered = approval::prompt(prompt);
        let keyboard = approval::keyboard(&prompt.approval_id);
        let (chat, message_id) = self
            .post(target, &rendered.text, &rendered.entities, Some(&keyboard))
            .await?;
        self.posted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remember(&chat, message_id, prompt);
        Ok(Some(SentMessage {
            id: message_id.to_string(),
        }))
    }

    async fn close_approval(
        &self,
        target: &DeliveryTarget,
        message_id: &str,
        outcome: &str,
    ) -> Result<(), ChannelError> {
        if !self.api.has_token() {
            return Err(ChannelError::Auth(NO_TOKEN.to_string()));
        }
        let message_id = message_id.parse::<i64>().map_err(|_| {
            ChannelError::Rejected(format!("{message_id:?} is not a Telegram message id"))
        })?;
        let chat = self.resolve_chat(&target.chat_id);
        self.close_prompt(&chat, message_id, outcome, EDIT_ATTEMPTS)
            .await
    }
}
