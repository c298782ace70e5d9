//! Replies shown as they are written in Slack's own streaming messages: `chat.startStream` in the
//! reply's thread (or DM), `chat.appendStream` with what was written since, the tools as task
//! cards (`task_update` chunks), and `chat.stopStream` with the rest of the final text, which
//! makes it an ordinary message.
//!
//! A stream outside a DM names the person it answers (`recipient_user_id`, `recipient_team_id`);
//! without one, or when the workspace or token refuses streams, the engine grows the reply by
//! `chat.update` instead. The streams live only in memory: after a restart the final text
//! replaces the message (`chat.stopStream`, then `chat.update`), so the reply is still whole and
//! once.

use std::collections::HashMap;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::api::ApiError;
use super::{lock, text, SlackChannel};
use crate::channels::{ChannelError, StreamTask, StreamUpdate, TaskStatus};

/// Streams kept at once; an older one beyond this is finished by replacement if it ever ends.
const MAX_LIVE: usize = 1000;
/// Slack's limit on a task card's title.
const TITLE_MAX: usize = 256;

/// A streaming message this adapter started.
#[derive(Debug, Clone, Default)]
pub(super) struct Live {
    channel: String,
    /// The text appended so far (as the engine gave it, unescaped).
    appended: String,
    /// The task cards shown, by id.
    tasks: HashMap<String, StreamTask>,
}

fn status_name(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Pending => "pending",
        TaskStatus::Running => "in_progress",
        TaskStatus::Done => "complete",
        TaskStatus::Failed => "error",
    }
}

fn task_chunk(task: &StreamTask) -> Value {
    let title: String = task.title.chars().take(TITLE_MAX).collect();
    json!({
        "type": "task_update",
        "id": task.id,
        "title": title,
        "status": status_name(task.status),
    })
}

/// Puts `text` (escaped, so the agent cannot ping `<!channel>`) and `tasks` into a stream call:
/// plain `markdown_text` when there are no task cards, else one `chunks` list with both.
fn put_content(body: &mut Value, text: &str, tasks: Vec<Value>) {
    if tasks.is_empty() {
        if !text.is_empty() {
            body["markdown_text"] = json!(text::escape(text));
        }
        return;
    }
    let mut chunks = Vec::with_capacity(tasks.len() + 1);
    if !text.is_empty() {
        chunks.push(json!({ "type": "markdown_text", "text": text::escape(text) }));
    }
    chunks.extend(tasks);
    body["chunks"] = Value::Array(chunks);
}

impl SlackChannel {
    /// One update of a streamed reply; see [`crate::channels::Channel::stream`].
    pub(super) async fn stream_update(
        &self,
        update: &StreamUpdate<'_>,
    ) -> Result<String, ChannelError> {
        let target = update.target;
        let Some(ts) = update.message_id else {
            return self.start_stream(update).await;
        };
        let Some(live) = lock(&self.streams).get(ts).cloned() else {
            return Err(ChannelError::Rejected(
                "slack: not a stream this adapter is writing".to_owned(),
            ));
        };
        let Some(delta) = update.text.strip_prefix(live.appended.as_str()) else {
            return Err(ChannelError::Rejected(
                "slack: a stream only grows".to_owned(),
            ));
        };
        let changed: Vec<&StreamTask> = update
            .tasks
            .iter()
            .filter(|task| live.tasks.get(&task.id) != Some(*task))
            .collect();
        if delta.is_empty() && changed.is_empty() {
            return Ok(ts.to_owned());
        }
        self.pace(&target.chat_id).await;
        let mut body = json!({ "channel": live.channel, "ts": ts });
        put_content(
            &mut body,
            delta,
            changed.iter().map(|t| task_chunk(t)).collect(),
        );
        self.api
            .append_stream(&body)
            .await
            .map_err(|e| self.held(&target.chat_id, e))?;
        if let Some(live) = lock(&self.streams).get_mut(ts) {
            live.appended.push_str(delta);
            for task in changed {
                live.tasks.insert(task.id.clone(), task.clone());
            }
        }
        Ok(ts.to_owned())
    }

    async fn start_stream(&self, update: &StreamUpdate<'_>) -> Result<String, ChannelError> {
        let target = update.target;
        let mut body = json!({ "channel": target.chat_id });
        if let Some(thread) = &target.thread_id {
            body["thread_ts"] = json!(thread);
        }
        if !target.chat_id.starts_with('D') {
            // Outside a DM, Slack streams to one person.
            let team = lock(&self.team_id).clone();
            let (Some(user), Some(team)) = (update.recipient, team) else {
                return Err(ChannelError::Unsupported);
            };
            body["recipient_user_id"] = json!(user);
            body["recipient_team_id"] = json!(team);
        }
        put_content(
            &mut body,
            update.text,
            update.tasks.iter().map(task_chunk).collect(),
        );
        self.pace(&target.chat_id).await;
        let posted = self
            .api
            .start_stream(&body)
            .await
            .map_err(|e| self.held(&target.chat_id, e))?;
        let (channel, ts) = self.landed(target, posted);
        let mut streams = lock(&self.streams);
        if streams.len() >= MAX_LIVE {
            streams.clear();
        }
        streams.insert(
            ts.clone(),
            Live {
                channel,
                appended: update.text.to_owned(),
                tasks: update
                    .tasks
                    .iter()
                    .map(|t| (t.id.clone(), t.clone()))
                    .collect(),
            },
        );
        Ok(ts)
    }

    /// Finishes stream `ts` with its final `text`, when this adapter is writing it: the rest of
    /// the text goes with `chat.stopStream` (tasks still open are shown done). `None` when `ts`
    /// is no live stream, or the stream could not take the rest: then `chat.update` replaces
    /// the text.
    pub(super) async fn finish_stream(
        &self,
        chat: &str,
        ts: &str,
        text: &str,
    ) -> Option<Result<(), ChannelError>> {
        let live = lock(&self.streams).remove(ts)?;
        let open: Vec<Value> = live
            .tasks
            .values()
            .filter(|t| matches!(t.status, TaskStatus::Pending | TaskStatus::Running))
            .map(|t| {
                task_chunk(&StreamTask {
                    status: TaskStatus::Done,
                    ..t.clone()
                })
            })
            .collect();
        let rest = text.strip_prefix(live.appended.as_str());
        let mut body = json!({ "channel": live.channel, "ts": ts });
        put_content(&mut body, rest.unwrap_or(""), open);
        match self.api.stop_stream(&body).await {
            Ok(()) if rest.is_some() => Some(Ok(())),
            Ok(()) => None,
            Err(e @ ApiError::RateLimited { .. }) => {
                // Try again later, the same way.
                lock(&self.streams).insert(ts.to_owned(), live);
                Some(Err(self.held(chat, e)))
            }
            Err(e) => {
                tracing::debug!(error = %e, "slack: the stream could not be finished; replacing its text");
                None
            }
        }
    }

    /// Waits for the conversation's turn to send (its pace).
    pub(super) async fn pace(&self, chat: &str) {
        let wait = lock(&self.pacer).reserve(chat, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// A failed call as a channel error; a rate limit holds the conversation for its wait.
    pub(super) fn held(&self, chat: &str, e: ApiError) -> ChannelError {
        if let ApiError::RateLimited { retry_after, .. } = &e {
            let now = Instant::now();
            lock(&self.pacer).hold(chat, now, now + *retry_after);
        }
        e.into()
    }
}
