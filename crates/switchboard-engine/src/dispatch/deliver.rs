//! Delivery into a chat: a text split to fit the channel, sent chunk by chunk, with rate limits
//! waited out and transient failures retried. Runs deliver their replies through it (recording
//! each chunk, so a restart continues after the last one sent, then finishing the run) and so
//! does the gateway API's `/send`.

use std::sync::Arc;
use std::time::Duration;

use super::Dispatcher;
use crate::backoff;
use crate::channels::{Channel, ChannelError, SentMessage};
use crate::chunk::chunk_text;
use crate::events::EngineEvent;
use crate::model::{DeliveryTarget, JournalState};
use crate::store::RunRecord;

/// How long a delivery may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// A run's reply: it was promised, so it waits out any rate limit and retries transient
    /// failures `delivery_attempts` times, however long that takes.
    Reply,
    /// An answer to a request someone is waiting on (`POST /v1/gateway/send`): short rate
    /// limits are waited out a few times, anything else fails at once.
    Request,
}

/// Why a delivery did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DeliveryError {
    /// The engine is stopping; what was sent is recorded, the rest goes after a restart.
    #[error("the engine is stopping")]
    Stopping,
    #[error("{0}")]
    Failed(String),
}

/// The longest rate-limit wait a [`Delivery::Request`] accepts.
const REQUEST_MAX_WAIT: Duration = Duration::from_secs(30);
const REQUEST_RATE_LIMIT_TRIES: u32 = 3;

impl Dispatcher {
    /// Sends `text` to `target`, split for the channel, starting with chunk `from`;
    /// `sent(i, last, m)` is called after chunk `i` (the last one when `last`) reached the chat as
    /// message `m` (and may fail, which stops the delivery). Returns the number of chunks the
    /// text has.
    pub(crate) async fn deliver_text(
        &self,
        channel: &Arc<dyn Channel>,
        target: &DeliveryTarget,
        text: &str,
        from: usize,
        how: Delivery,
        mut sent: impl FnMut(usize, bool, &SentMessage) -> anyhow::Result<()>,
    ) -> Result<usize, DeliveryError> {
        let chunks = chunk_text(text, channel.text_limit());
        for (index, chunk) in chunks.iter().enumerate().skip(from) {
            let mut attempt = 0u32;
            let mut limited = 0u32;
            loop {
                let wait = match channel.send(target, chunk).await {
                    Ok(message) => {
                        self.board.touch(channel.name(), false);
                        sent(index, index + 1 == chunks.len(), &message)
                            .map_err(|e| DeliveryError::Failed(format!("{e:#}")))?;
                        break;
                    }
                    Err(ChannelError::RateLimited(wait)) => match how {
                        Delivery::Reply => wait,
                        Delivery::Request
                            if limited < REQUEST_RATE_LIMIT_TRIES && wait <= REQUEST_MAX_WAIT =>
                        {
                            limited += 1;
                            wait
                        }
                        Delivery::Request => {
                            return Err(DeliveryError::Failed(
                                ChannelError::RateLimited(wait).to_string(),
                            ))
                        }
                    },
                    Err(e)
                        if how == Delivery::Reply
                            && e.is_transient()
                            && attempt < self.options.delivery_attempts =>
                    {
                        let delay = backoff::delay(
                            attempt,
                            self.options.retry_base,
                            self.options.retry_cap,
                        );
                        attempt += 1;
                        tracing::info!(channel = %channel.name(), error = %e, ?delay, "send failed; retrying");
                        delay
                    }
                    Err(e) => return Err(DeliveryError::Failed(e.to_string())),
                };
                tokio::select! {
                    _ = self.shutdown.cancelled() => return Err(DeliveryError::Stopping),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        Ok(chunks.len())
    }

    /// The channel named `name` once it is on, waiting (with backoff) while it is off or gone.
    /// `None` when the engine stops first.
    pub(crate) async fn channel_when_on(&self, name: &str) -> Option<Arc<dyn Channel>> {
        let mut attempt = 0u32;
        loop {
            match self.channel(name) {
                Some(channel) if self.board.get(name).is_none_or(|s| s.enabled) => {
                    return Some(channel)
                }
                _ => {
                    tracing::info!(channel = %name, "channel unavailable; holding the reply");
                    let delay =
                        backoff::delay(attempt, self.options.retry_base, self.options.retry_cap);
                    attempt += 1;
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Sends the reply to the chat, split for the channel, resuming after the chunks already sent.
    /// Edits `message` into `text`, waiting out rate limits and retrying transient failures as a
    /// reply's delivery does; false when it cannot (the text is then sent as a new message).
    async fn edit_final(
        &self,
        channel: &Arc<dyn Channel>,
        target: &DeliveryTarget,
        message: &str,
        text: &str,
    ) -> bool {
        let mut attempt = 0u32;
        loop {
            match channel.edit(target, message, text).await {
                Ok(()) => return true,
                Err(ChannelError::RateLimited(wait)) => {
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Err(e) if e.is_transient() && attempt < self.options.delivery_attempts => {
                    let delay =
                        backoff::delay(attempt, self.options.retry_base, self.options.retry_cap);
                    attempt += 1;
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Err(e) => {
                    tracing::info!(error = %e, "the growing reply could not be completed in place; sending it anew");
                    return false;
                }
            }
        }
    }

    pub(super) async fn deliver_reply(
        self: &Arc<Self>,
        run: &mut RunRecord,
        reply: &str,
        success: bool,
    ) -> anyhow::Result<()> {
        // The run's messages, read once: the last one says where the reply goes, and whether any
        // answered a watch notification is read before their rows change.
        let rows = self.journal_rows(run);
        let answered_watch = rows.iter().any(|entry| entry.context.is_some());
        let last = rows
            .into_iter()
            .next_back()
            .filter(|entry| run.journal_ids.last() == Some(&entry.id));
        let place = self.place_of(run, last);
        let Some((channel_name, target, _)) = place else {
            self.store.finish_run(
                run,
                JournalState::Failed,
                Some("no conversation to reply to"),
            )?;
            return Ok(());
        };
        let Some(channel) = self.channel_when_on(&channel_name).await else {
            return Ok(());
        };
        let store = self.store.clone();
        // The message that showed the reply as it grew becomes its first part.
        if let Some(preview) = run.preview.clone() {
            if run.delivered_chunks == 0 && !reply.trim().is_empty() {
                let first = chunk_text(reply, channel.text_limit())
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                if self.edit_final(&channel, &target, &preview, &first).await {
                    run.delivered_chunks = 1;
                }
            }
            run.preview = None;
            store.update_run(run)?;
        }
        let from = run.delivered_chunks;
        // Everything went to the chat turn by turn already: nothing is left to send.
        let delivered = if reply.trim().is_empty() && !run.streamed.is_empty() {
            Ok(0)
        } else {
            self.deliver_text(
                &channel,
                &target,
                reply,
                from,
                Delivery::Reply,
                |index, last, _| {
                    run.delivered_chunks = index + 1;
                    // The last chunk is recorded by the commit that finishes the run, next.
                    if last {
                        Ok(())
                    } else {
                        store.update_run(run)
                    }
                },
            )
            .await
        };
        let chunks = match delivered {
            Ok(chunks) => chunks,
            Err(DeliveryError::Stopping) => return Ok(()),
            Err(DeliveryError::Failed(error)) => {
                tracing::warn!(channel = %channel_name, %error, "reply could not be delivered");
                self.store
                    .finish_run(run, JournalState::Failed, Some(&error))?;
                self.emit(EngineEvent::Error {
                    scope: channel_name.clone(),
                    message: format!("a reply could not be delivered: {error}"),
                });
                return Ok(());
            }
        };
        let state = if success {
            JournalState::Replied
        } else {
            JournalState::Failed
        };
        let error = (!success).then_some(reply);
        self.reply_out(&run.routing_key);
        self.store.finish_run_grouped(run, state, error).await?;
        tracing::info!(conversation = %run.routing_key, channel = %channel_name, chunks, "reply delivered");
        self.emit(EngineEvent::ReplyDelivered {
            routing_key: run.routing_key.clone(),
            channel: channel_name.clone(),
            target: target.clone(),
            text: reply.to_string(),
            chunks,
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
}
