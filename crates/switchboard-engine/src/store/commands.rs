//! What the chat commands read and change: a conversation's model, its past sessions, what its
//! runs cost, and its queue.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::{Cached, Store};
use crate::agent::Usage;
use crate::model::{now_ms, InboundMessage, JournalState};

/// One of a conversation's sessions, newest first in [`Store::conversation_sessions`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionEntry {
    pub session_id: String,
    pub title: Option<String>,
    pub started_ms: i64,
}

/// The tokens a conversation's runs used: the last run's and the totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct UsageTotals {
    pub runs: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub last_prompt_tokens: u64,
    pub last_completion_tokens: u64,
    pub last_total_tokens: u64,
}

impl Store {
    /// Makes sure a conversation row exists for a message that is not journaled (a command), so
    /// its settings have somewhere to live.
    pub fn ensure_conversation(
        &self,
        message: &InboundMessage,
        routing_key: &str,
        now: i64,
    ) -> anyhow::Result<()> {
        self.lock().exec(
            "INSERT INTO conversations (routing_key, channel, peer, chat, target, created_ms, last_used_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
             ON CONFLICT (routing_key) DO UPDATE SET last_used_ms = ?6",
            params![
                routing_key,
                message.channel,
                super::to_json(&message.peer),
                super::to_json(&message.chat),
                super::to_json(&message.target),
                now
            ],
        )?;
        Ok(())
    }

    /// The model a conversation asked for with `/model`, if any.
    pub fn conversation_model(&self, routing_key: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .lock()
            .one(
                "SELECT model FROM conversations WHERE routing_key = ?1",
                params![routing_key],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
    }

    /// Sets (or with `None` clears) a conversation's model; false when there is no such
    /// conversation.
    pub fn set_conversation_model(
        &self,
        routing_key: &str,
        model: Option<&str>,
    ) -> anyhow::Result<bool> {
        Ok(self.lock().exec(
            "UPDATE conversations SET model = ?2 WHERE routing_key = ?1",
            params![routing_key, model],
        )? == 1)
    }

    /// The sessions a conversation has had, newest first.
    pub fn conversation_sessions(&self, routing_key: &str) -> anyhow::Result<Vec<SessionEntry>> {
        self.select(
            "SELECT session_id, title, started_ms FROM conversation_sessions WHERE routing_key = ?1 ORDER BY started_ms DESC, rowid DESC",
            params![routing_key],
            |r| {
                Ok(SessionEntry {
                    session_id: r.get(0)?,
                    title: r.get(1)?,
                    started_ms: r.get(2)?,
                })
            },
        )
    }

    /// Counts a finished run's tokens for its conversation.
    pub fn record_usage(&self, routing_key: &str, usage: &Usage) -> anyhow::Result<()> {
        record_usage_in(&self.lock(), routing_key, usage)
    }

    /// What a conversation's runs used.
    pub fn usage(&self, routing_key: &str) -> anyhow::Result<UsageTotals> {
        Ok(self
            .lock()
            .one(
                "SELECT usage_runs, usage_prompt, usage_completion, usage_total, last_prompt, last_completion, last_total
                 FROM conversations WHERE routing_key = ?1",
                params![routing_key],
                |r| {
                    let n = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                    Ok(UsageTotals {
                        runs: n(0)?,
                        prompt_tokens: n(1)?,
                        completion_tokens: n(2)?,
                        total_tokens: n(3)?,
                        last_prompt_tokens: n(4)?,
                        last_completion_tokens: n(5)?,
                        last_total_tokens: n(6)?,
                    })
                },
            )
            .optional()?
            .unwrap_or_default())
    }

    /// Drops a conversation's queued messages (`/stop`), marking them failed with `why`; returns
    /// how many were waiting for a run. Those of the run being stopped (`task`, the messages of
    /// one being prepared, and any tied to a run not yet posted) are marked too (the record of
    /// the stop a restart reads) but not counted.
    pub fn drop_queued(&self, routing_key: &str, why: &str, task: &[i64]) -> anyhow::Result<usize> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let now = now_ms();
        for id in task {
            tx.exec(
                "UPDATE journal SET state = ?2, error = ?3, updated_ms = ?4 WHERE id = ?1 AND state = 'queued'",
                params![id, JournalState::Failed, why, now],
            )?;
        }
        let waiting = tx.exec(
            "UPDATE journal SET state = ?2, error = ?3, updated_ms = ?4 WHERE routing_key = ?1 AND state = 'queued' AND run_id IS NULL",
            params![routing_key, JournalState::Failed, why, now],
        )?;
        tx.exec(
            "UPDATE journal SET state = ?2, error = ?3, updated_ms = ?4 WHERE routing_key = ?1 AND state = 'queued'",
            params![routing_key, JournalState::Failed, why, now],
        )?;
        tx.commit()?;
        Ok(waiting)
    }
}

/// The body of [`Store::record_usage`].
pub(super) fn record_usage_in(
    conn: &Connection,
    routing_key: &str,
    usage: &Usage,
) -> anyhow::Result<()> {
    let (p, c, t) = (
        usage.prompt_tokens as i64,
        usage.completion_tokens as i64,
        usage.total_tokens as i64,
    );
    conn.exec(
        "UPDATE conversations SET usage_runs = usage_runs + 1,
             usage_prompt = usage_prompt + ?2, usage_completion = usage_completion + ?3, usage_total = usage_total + ?4,
             last_prompt = ?2, last_completion = ?3, last_total = ?4
         WHERE routing_key = ?1",
        params![routing_key, p, c, t],
    )?;
    Ok(())
}
