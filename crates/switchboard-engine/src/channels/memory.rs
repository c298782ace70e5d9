//! An in-memory channel: a chat that lives inside the process. Tests use it to act as a user and to
//! see what the bot sent; hosts can use it to talk to the agent without a platform.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{Accepted, Channel, ChannelContext, ChannelError, Notice, SentMessage};
use crate::approvals::{ApprovalPrompt, ChatChoice, ChoiceOutcome};
use crate::chunk::TextLimit;
use crate::model::{
    now_ms, ChannelState, ChatType, DeliveryTarget, Identity, InboundMessage, Peer,
};

/// A message the bot posted to the in-memory chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub target: DeliveryTarget,
    pub text: String,
    /// When the engine handed the message to the channel (for relay benchmarks).
    pub at: std::time::Instant,
}

#[derive(Default)]
struct State {
    ctx: Option<ChannelContext>,
    sent: Vec<Sent>,
    notices: Vec<(DeliveryTarget, Notice)>,
    typing: usize,
    fail_sends: usize,
    prompts: Vec<Prompt>,
    next_id: u64,
    runs: usize,
}

/// An approval prompt the bot posted, and how it was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub target: DeliveryTarget,
    pub message_id: String,
    pub prompt: ApprovalPrompt,
    /// The outcome line once the approval was decided anywhere.
    pub closed: Option<String>,
}

/// An in-process chat platform.
#[derive(Clone)]
pub struct MemoryChannel {
    name: String,
    limit: TextLimit,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

impl MemoryChannel {
    pub fn new(name: &str, limit: TextLimit) -> Self {
        MemoryChannel {
            name: name.to_string(),
            limit,
            state: Arc::default(),
            changed: Arc::default(),
        }
    }

    /// Acts as a user: hands a message to the engine as a platform message would arrive. Waits
    /// until the channel is running (enabled and started).
    pub async fn inject(&self, message: InboundMessage) -> anyhow::Result<Accepted> {
        let ctx = loop {
            let notified = self.changed.notified();
            if let Some(ctx) = self.lock().ctx.clone() {
                break ctx;
            }
            notified.await;
        };
        ctx.accept(message).await
    }

    /// A direct message from `peer` with `text`; its platform id is `id`.
    pub fn dm(&self, peer: &str, id: &str, text: &str) -> InboundMessage {
        self.message(ChatType::Direct, DeliveryTarget::chat(peer), peer, id, text)
    }

    /// A message in a group chat.
    pub fn group_message(&self, group: &str, peer: &str, id: &str, text: &str) -> InboundMessage {
        let chat = ChatType::Group {
            id: group.to_string(),
        };
        self.message(chat, DeliveryTarget::chat(group), peer, id, text)
    }

    /// A message in a thread of a group chat.
    pub fn thread_message(
        &self,
        group: &str,
        thread: &str,
        peer: &str,
        id: &str,
        text: &str,
    ) -> InboundMessage {
        let chat = ChatType::Thread {
            group_id: group.to_string(),
            thread_id: thread.to_string(),
        };
        let target = DeliveryTarget {
            chat_id: group.to_string(),
            thread_id: Some(thread.to_string()),
            reply_to: None,
        };
        self.message(chat, target, peer, id, text)
    }

    fn message(
        &self,
        chat: ChatType,
        mut target: DeliveryTarget,
        peer: &str,
        id: &str,
        text: &str,
    ) -> InboundMessage {
        target.reply_to = Some(id.to_string());
        InboundMessage {
            channel: self.name.clone(),
            peer: Peer::new(peer),
            chat,
            text: text.to_string(),
            target,
            dedup_keys: vec![format!("msg:{id}")],
            received_at_ms: now_ms(),
            attachments: Vec::new(),
        }
    }

    /// Everything the bot posted, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.lock().sent.clone()
    }

    /// The texts posted to one chat (any thread), in order.
    pub fn sent_to(&self, chat_id: &str) -> Vec<String> {
        self.lock()
            .sent
            .iter()
            .filter(|s| s.target.chat_id == chat_id)
            .map(|s| s.text.clone())
            .collect()
    }

    pub fn notices(&self) -> Vec<(DeliveryTarget, Notice)> {
        self.lock().notices.clone()
    }

    pub fn typing_count(&self) -> usize {
        self.lock().typing
    }

    /// How many times the engine started the channel's receive loop.
    pub fn runs(&self) -> usize {
        self.lock().runs
    }

    /// Whether the receive loop is running now.
    pub fn is_running(&self) -> bool {
        self.lock().ctx.is_some()
    }

    /// Approval prompts posted so far.
    pub fn prompts(&self) -> Vec<Prompt> {
        self.lock().prompts.clone()
    }

    /// Acts as a user clicking a button of an approval prompt.
    pub async fn click(
        &self,
        approval_id: &str,
        choice: ChatChoice,
        clicker: &str,
    ) -> ChoiceOutcome {
        let ctx = self.lock().ctx.clone();
        match ctx {
            Some(ctx) => ctx.decide(approval_id, choice, &Peer::new(clicker)).await,
            None => ChoiceOutcome::NotFound("the chat is not running".into()),
        }
    }

    /// Waits until `check` holds for the posted prompts.
    pub async fn wait_prompts(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&[Prompt]) -> bool,
    ) -> Vec<Prompt> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            {
                let state = self.lock();
                if check(&state.prompts) {
                    return state.prompts.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "timed out waiting for {what}; prompts so far: {:#?}",
                    self.prompts()
                );
            }
        }
    }

    /// Makes the next `n` sends fail with a transport error.
    pub fn fail_next_sends(&self, n: usize) {
        self.lock().fail_sends = n;
    }

    /// Waits until `check` holds for the sent messages, or panics with `what` after `timeout`.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&[Sent]) -> bool,
    ) -> Vec<Sent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            {
                let state = self.lock();
                if check(&state.sent) {
                    return state.sent.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "timed out waiting for {what}; sent so far: {:#?}",
                    self.sent()
                );
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Channel for MemoryChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn text_limit(&self) -> TextLimit {
        self.limit
    }

    async fn run(&self, ctx: ChannelContext) {
        ctx.set_identity(Identity {
            id: format!("{}-bot", self.name),
            name: format!("{} bot", self.name),
        });
        ctx.report(ChannelState::Connected, None);
        let shutdown = ctx.shutdown.clone();
        {
            let mut state = self.lock();
            state.ctx = Some(ctx);
            state.runs += 1;
        }
        self.changed.notify_waiters();
        shutdown.cancelled().await;
        self.lock().ctx = None;
        self.changed.notify_waiters();
    }

    async fn send(&self, target: &DeliveryTarget, text: &str) -> Result<SentMessage, ChannelError> {
        let id = {
            let mut state = self.lock();
            if state.fail_sends > 0 {
                state.fail_sends -= 1;
                return Err(ChannelError::Transport("simulated send failure".into()));
            }
            if self.limit.measure(text) > self.limit.max {
                return Err(ChannelError::Rejected(format!(
                    "message too long: {}",
                    self.limit.measure(text)
                )));
            }
            state.next_id += 1;
            state.sent.push(Sent {
                target: target.clone(),
                text: text.to_string(),
                at: std::time::Instant::now(),
            });
            state.next_id
        };
        self.changed.notify_waiters();
        Ok(SentMessage {
            id: format!("m{id}"),
        })
    }

    async fn typing(&self, _target: &DeliveryTarget) -> Result<(), ChannelError> {
        self.lock().typing += 1;
        Ok(())
    }

    async fn notice(&self, target: &DeliveryTarget, notice: Notice) -> Result<(), ChannelError> {
        self.lock().notices.push((target.clone(), notice));
        self.changed.notify_waiters();
        Ok(())
    }

    async fn post_approval(
        &self,
        target: &DeliveryTarget,
        prompt: &ApprovalPrompt,
    ) -> Result<Option<SentMessage>, ChannelError> {
        let id = {
            let mut state = self.lock();
            state.next_id += 1;
            let id = format!("m{}", state.next_id);
            state.prompts.push(Prompt {
                target: target.clone(),
                message_id: id.clone(),
                prompt: prompt.clone(),
                closed: None,
            });
            id
        };
        self.changed.notify_waiters();
        Ok(Some(SentMessage { id }))
    }

    async fn close_approval(
        &self,
        _target: &DeliveryTarget,
        message_id: &str,
        outcome: &str,
    ) -> Result<(), ChannelError> {
        if let Some(prompt) = self
            .lock()
            .prompts
            .iter_mut()
            .find(|p| p.message_id == message_id)
        {
            prompt.closed = Some(outcome.to_string());
        }
        self.changed.notify_waiters();
        Ok(())
    }

    async fn test(&self) -> Result<Identity, ChannelError> {
        Ok(Identity {
            id: format!("{}-bot", self.name),
            name: format!("{} bot", self.name),
        })
    }

    /// `chat` or `chat#thread`.
    fn parse_target(&self, target: &str) -> Result<DeliveryTarget, String> {
        let target = target.trim();
        if target.is_empty() {
            return Err("the target is empty; give a chat id".into());
        }
        Ok(match target.split_once('#') {
            Some((chat, thread)) if !chat.is_empty() && !thread.is_empty() => DeliveryTarget {
                chat_id: chat.to_string(),
                thread_id: Some(thread.to_string()),
                reply_to: None,
            },
            Some(_) => return Err(format!("{target:?} is not chat#thread")),
            None => DeliveryTarget::chat(target),
        })
    }
}
