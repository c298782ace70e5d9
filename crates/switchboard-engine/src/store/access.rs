//! Who may talk to the agent: admitted and refused senders, and pairing requests.

use rusqlite::{params, OptionalExtension};

use super::{Cached, Store};
use crate::access::{PairingRequest, PairingState, PeerState};

const PAIRING_COLUMNS: &str =
    "channel, peer_id, peer_name, code, first_message, created_ms, expires_ms, state";

fn pairing_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PairingRequest> {
    Ok(PairingRequest {
        channel: r.get(0)?,
        peer_id: r.get(1)?,
        peer_name: r.get(2)?,
        code: r.get(3)?,
        first_message: r.get(4)?,
        created_ms: r.get(5)?,
        expires_ms: r.get(6)?,
        state: r.get(7)?,
    })
}

impl Store {
    /// Whether a sender was admitted or refused on a channel.
    pub fn peer_state(&self, channel: &str, peer_id: &str) -> anyhow::Result<PeerState> {
        let state: Option<String> = self
            .lock()
            .one(
                "SELECT state FROM peers WHERE channel = ?1 AND peer_id = ?2",
                params![channel, peer_id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(match state.as_deref() {
            Some("admitted") => PeerState::Admitted,
            Some("refused") => PeerState::Refused,
            None => PeerState::Unknown,
            Some(other) => anyhow::bail!("unknown sender state {other:?} in the database"),
        })
    }

    /// The sender's pending, unexpired pairing request on a channel.
    pub fn pending_pairing_for(
        &self,
        channel: &str,
        peer_id: &str,
        now: i64,
    ) -> anyhow::Result<Option<PairingRequest>> {
        Ok(self
            .pairing_query(
                "WHERE channel = ?1 AND peer_id = ?2 AND state = 'pending' AND expires_ms > ?3 ORDER BY created_ms DESC LIMIT 1",
                params![channel, peer_id, now],
            )?
            .pop())
    }

    /// Pending, unexpired pairing requests (of one channel, or all), oldest first.
    pub fn pending_pairings(
        &self,
        channel: Option<&str>,
        now: i64,
    ) -> anyhow::Result<Vec<PairingRequest>> {
        match channel {
            Some(channel) => self.pairing_query(
                "WHERE channel = ?1 AND state = 'pending' AND expires_ms > ?2 ORDER BY created_ms",
                params![channel, now],
            ),
            None => self.pairing_query(
                "WHERE state = 'pending' AND expires_ms > ?1 ORDER BY created_ms",
                params![now],
            ),
        }
    }

    fn pairing_query(
        &self,
        tail: &str,
        args: impl rusqlite::Params,
    ) -> anyhow::Result<Vec<PairingRequest>> {
        let sql = format!("SELECT {PAIRING_COLUMNS} FROM pairing_requests {tail}");
        self.select(&sql, args, pairing_row)
    }

    /// Files a pairing request. When the channel already has `max_pending` waiting, the oldest
    /// stop waiting (their codes expire now) and are returned, so whoever shows them can let go.
    /// The count, the eviction and the insert are one transaction.
    pub fn insert_pairing(
        &self,
        request: &PairingRequest,
        max_pending: usize,
    ) -> anyhow::Result<Vec<PairingRequest>> {
        let now = request.created_ms;
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let waiting = tx
            .prepare(&format!(
                "SELECT {PAIRING_COLUMNS} FROM pairing_requests WHERE channel = ?1 AND state = 'pending' AND expires_ms > ?2 ORDER BY created_ms"
            ))?
            .query_map(params![request.channel, now], pairing_row)?
            .collect::<Result<Vec<_>, _>>()?;
        let excess = (waiting.len() + 1).saturating_sub(max_pending.max(1));
        let mut evicted = Vec::with_capacity(excess);
        for mut old in waiting.into_iter().take(excess) {
            let changed = tx.exec(
                "UPDATE pairing_requests SET expires_ms = ?3 WHERE channel = ?1 AND code = ?2 AND state = 'pending' AND expires_ms > ?3",
                params![old.channel, old.code, now],
            )?;
            if changed == 1 {
                old.expires_ms = now;
                evicted.push(old);
            }
        }
        tx.exec(
            "INSERT INTO pairing_requests (channel, peer_id, peer_name, code, first_message, created_ms, expires_ms, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending')",
            params![
                request.channel,
                request.peer_id,
                request.peer_name,
                request.code,
                request.first_message,
                request.created_ms,
                request.expires_ms
            ],
        )?;
        tx.commit()?;
        Ok(evicted)
    }

    /// Admits (`admitted`) or refuses (`refused`) the sender of a pending, unexpired code; the
    /// sender's state is stored with the request's, in one transaction. `None` when no such code
    /// waits.
    pub fn resolve_pairing(
        &self,
        channel: &str,
        code: &str,
        state: PairingState,
        decided_by: &str,
        now: i64,
    ) -> anyhow::Result<Option<PairingRequest>> {
        let Some(mut request) = self
            .pairing_query(
                "WHERE channel = ?1 AND code = ?2 AND state = 'pending' AND expires_ms > ?3",
                params![channel, code, now],
            )?
            .pop()
        else {
            return Ok(None);
        };
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.exec(
            "UPDATE pairing_requests SET state = ?3 WHERE channel = ?1 AND code = ?2 AND state = 'pending'",
            params![channel, code, state.as_str()],
        )?;
        tx.exec(
            "INSERT INTO peers (channel, peer_id, name, state, decided_by, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (channel, peer_id) DO UPDATE SET name = ?3, state = ?4, decided_by = ?5, updated_ms = ?6",
            params![channel, request.peer_id, request.peer_name, state.as_str(), decided_by, now],
        )?;
        tx.commit()?;
        request.state = state;
        Ok(Some(request))
    }
}
