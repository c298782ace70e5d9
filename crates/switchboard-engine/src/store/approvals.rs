//! Approvals, their audit log, the "always allow" rules and the "allow in this conversation"
//! grants.
//!
//! An approval belongs to one server run and one tool call (`server_run_id`, `tool_call_id`):
//! many servers number their calls per run (`call_0`, `call_1`, …), so a later run's call with the
//! same id is a different call and never inherits an earlier decision. An answer is recorded
//! first (`state`, `decided_by`, …) and confirmed when the server accepted it (`confirmed_ms`);
//! until then the approval is still open: it is sent again after a failure, and it can still
//! expire.

use rusqlite::params;
use serde::Serialize;

use super::{from_json, to_json, Cached, Store};
use crate::approvals::policy::{ApprovalRule, Grant};
use crate::approvals::{Actor, ApprovalState, Surface};
use crate::model::{now_ms, DeliveryTarget};

/// A tool call waiting for (or given) a person's decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalRecord {
    pub id: String,
    pub run_local_id: String,
    pub routing_key: String,
    pub session_id: String,
    pub server_run_id: String,
    pub tool_call_id: String,
    pub tool: String,
    pub arguments: serde_json::Value,
    pub requester: String,
    /// The requester's platform id.
    pub requester_id: String,
    pub channel: String,
    pub target: DeliveryTarget,
    /// The chat message showing the prompt, once posted.
    pub chat_message_id: Option<String>,
    pub created_ms: i64,
    pub deadline_ms: i64,
    pub state: ApprovalState,
    pub decided_by: Option<String>,
    /// The platform id of whoever decided from a chat.
    pub decided_by_id: Option<String>,
    pub surface: Option<Surface>,
    pub decided_ms: Option<i64>,
    /// When the server accepted the decision; `None` while it still has to be told.
    pub confirmed_ms: Option<i64>,
    /// Why a closed approval closed, or the scope an approval was given ("allowed in this chat
    /// from now on").
    pub note: Option<String>,
}

impl ApprovalRecord {
    /// Whether the approval still needs something: a person's answer, or the server to hear it.
    pub fn is_open(&self) -> bool {
        self.state.is_pending()
            || (matches!(
                self.state,
                ApprovalState::Accepted | ApprovalState::Rejected | ApprovalState::Expired
            ) && self.confirmed_ms.is_none())
    }

    /// Where it was decided, as a person reads it ("window", "telegram").
    pub fn surface_label(&self) -> String {
        self.surface
            .map(|s| s.label(&self.channel))
            .unwrap_or_default()
    }

    /// How it ended, in the words every surface uses.
    pub fn outcome_line(&self) -> String {
        crate::approvals::Outcome {
            tool: &self.tool,
            state: self.state,
            decided_by: self.decided_by.as_deref().unwrap_or(""),
            surface: &self.surface_label(),
            note: self.note.as_deref(),
        }
        .line()
    }
}

/// One line of the decisions audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionRecord {
    pub at_ms: i64,
    pub session_id: String,
    pub run_id: String,
    pub tool_call_id: String,
    pub tool: String,
    /// `accept`, `reject`, `expired` or `closed`.
    pub action: ApprovalState,
    pub decided_by: String,
    /// The platform id of a chat user who decided.
    pub decided_by_id: Option<String>,
    pub surface: Surface,
    /// The channel of the conversation the call belongs to.
    pub channel: String,
    pub note: Option<String>,
}

/// The result of trying to decide a pending approval.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// This answer decided it.
    Decided(ApprovalRecord),
    /// Someone answered first (or it closed); here is how it ended.
    AlreadyDecided(ApprovalRecord),
    /// The answer came after the deadline; nothing changed (the expiry rejects it).
    TooLate(ApprovalRecord),
    NotFound,
}

const APPROVAL_COLUMNS: &str = "id, run_local_id, routing_key, session_id, server_run_id, tool_call_id, tool, arguments,
    requester, channel, target, created_ms, deadline_ms, state, decided_by, surface, decided_ms, requester_id,
    chat_message_id, decided_by_id, confirmed_ms, note";
/// Open approvals: waiting for a person, or answered but not yet accepted by the server.
const OPEN: &str =
    "(state = 'pending' OR (state IN ('accept', 'reject', 'expired') AND confirmed_ms IS NULL))";

impl Store {
    /// Stores a pending approval; a second one for the same run and call is ignored (returns
    /// false).
    pub fn insert_approval(&self, a: &ApprovalRecord) -> anyhow::Result<bool> {
        let inserted = self.lock().exec(
            "INSERT OR IGNORE INTO approvals (id, run_local_id, routing_key, session_id, server_run_id, tool_call_id, tool, arguments, requester, channel, target, created_ms, deadline_ms, state, requester_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 'pending', ?14)",
            params![
                a.id,
                a.run_local_id,
                a.routing_key,
                a.session_id,
                a.server_run_id,
                a.tool_call_id,
                a.tool,
                to_json(&a.arguments),
                a.requester,
                a.channel,
                to_json(&a.target),
                a.created_ms,
                a.deadline_ms,
                a.requester_id
            ],
        )?;
        Ok(inserted == 1)
    }

    /// Approvals waiting for a person, oldest first.
    pub fn pending_approvals(&self) -> anyhow::Result<Vec<ApprovalRecord>> {
        self.approvals_query("WHERE state = 'pending' ORDER BY created_ms", [])
    }

    /// A run's open approvals: waiting for a person, or answered and not yet confirmed.
    pub fn open_approvals(&self, run_local_id: &str) -> anyhow::Result<Vec<ApprovalRecord>> {
        self.approvals_query(
            &format!("WHERE run_local_id = ?1 AND {OPEN} ORDER BY created_ms"),
            params![run_local_id],
        )
    }

    /// Every open approval, whatever its run (to close those whose run is gone).
    pub fn all_open_approvals(&self) -> anyhow::Result<Vec<ApprovalRecord>> {
        self.approvals_query(&format!("WHERE {OPEN} ORDER BY created_ms"), [])
    }

    pub fn approval(&self, id: &str) -> anyhow::Result<Option<ApprovalRecord>> {
        Ok(self.approvals_query("WHERE id = ?1", params![id])?.pop())
    }

    /// The approval of one call of one server run.
    pub fn approval_for_call(
        &self,
        server_run_id: &str,
        tool_call_id: &str,
    ) -> anyhow::Result<Option<ApprovalRecord>> {
        Ok(self
            .approvals_query(
                "WHERE server_run_id = ?1 AND tool_call_id = ?2",
                params![server_run_id, tool_call_id],
            )?
            .pop())
    }

    fn approvals_query(
        &self,
        tail: &str,
        args: impl rusqlite::Params,
    ) -> anyhow::Result<Vec<ApprovalRecord>> {
        let sql = format!("SELECT {APPROVAL_COLUMNS} FROM approvals {tail}");
        self.select(&sql, args, |r| {
            Ok(ApprovalRecord {
                id: r.get(0)?,
                run_local_id: r.get(1)?,
                routing_key: r.get(2)?,
                session_id: r.get(3)?,
                server_run_id: r.get(4)?,
                tool_call_id: r.get(5)?,
                tool: r.get(6)?,
                arguments: from_json(&r.get::<_, String>(7)?)?,
                requester: r.get(8)?,
                channel: r.get(9)?,
                target: from_json(&r.get::<_, String>(10)?)?,
                created_ms: r.get(11)?,
                deadline_ms: r.get(12)?,
                state: r.get(13)?,
                decided_by: r.get(14)?,
                surface: r.get(15)?,
                decided_ms: r.get(16)?,
                requester_id: r.get(17)?,
                chat_message_id: r.get(18)?,
                decided_by_id: r.get(19)?,
                confirmed_ms: r.get(20)?,
                note: r.get(21)?,
            })
        })
    }

    /// Remembers the chat message that shows an approval's prompt.
    pub fn set_approval_message(&self, id: &str, message_id: &str) -> anyhow::Result<()> {
        self.lock().exec(
            "UPDATE approvals SET chat_message_id = ?2 WHERE id = ?1",
            params![id, message_id],
        )?;
        Ok(())
    }

    /// Records a person's answer if the approval still waits and its deadline has not passed
    /// (first answer wins; both are checked in the update itself), and writes the audit log.
    pub fn resolve_approval(
        &self,
        id: &str,
        state: ApprovalState,
        actor: &Actor,
        surface: Surface,
        note: Option<&str>,
        now: i64,
    ) -> anyhow::Result<Resolution> {
        let changed = {
            let mut conn = self.lock();
            let tx = conn.transaction()?;
            let changed = tx.exec(
                "UPDATE approvals SET state = ?2, decided_by = ?3, decided_by_id = ?4, surface = ?5, decided_ms = ?6, note = ?7
                 WHERE id = ?1 AND state = 'pending' AND deadline_ms > ?6",
                params![id, state, actor.name, actor.id, surface, now, note],
            )?;
            if changed == 1 {
                log_tx(&tx, id, state, actor, surface, note, now)?;
            }
            tx.commit()?;
            changed
        };
        if changed == 1 {
            return Ok(match self.approval(id)? {
                Some(a) => Resolution::Decided(a),
                None => Resolution::NotFound,
            });
        }
        Ok(match self.approval(id)? {
            Some(a) if a.state.is_pending() => Resolution::TooLate(a),
            Some(a) => Resolution::AlreadyDecided(a),
            None => Resolution::NotFound,
        })
    }

    /// Expires a run's approvals whose deadline passed: those still waiting for a person, and
    /// answers the server never confirmed (an answer that could not reach the server in time is
    /// no answer). Returns the ones that expired now.
    pub fn expire_due(&self, run_local_id: &str, now: i64) -> anyhow::Result<Vec<ApprovalRecord>> {
        let due: Vec<ApprovalRecord> = self
            .open_approvals(run_local_id)?
            .into_iter()
            .filter(|a| a.deadline_ms <= now && a.state != ApprovalState::Expired)
            .collect();
        let mut expired = Vec::new();
        for a in due {
            let changed = {
                let mut conn = self.lock();
                let tx = conn.transaction()?;
                let changed = tx.exec(
                    &format!(
                        "UPDATE approvals SET state = 'expired', decided_by = 'timeout', decided_by_id = NULL, surface = 'engine', decided_ms = ?2
                         WHERE id = ?1 AND {OPEN} AND state != 'expired'"
                    ),
                    params![a.id, now],
                )?;
                if changed == 1 {
                    log_tx(
                        &tx,
                        &a.id,
                        ApprovalState::Expired,
                        &Actor::local("timeout"),
                        Surface::Engine,
                        None,
                        now,
                    )?;
                }
                tx.commit()?;
                changed
            };
            if changed == 1 {
                if let Some(a) = self.approval(&a.id)? {
                    expired.push(a);
                }
            }
        }
        Ok(expired)
    }

    /// Closes an open approval that stopped waiting without an answer from here (its run ended,
    /// or the server ran or rejected the call on another client's word). Returns it when it was
    /// open.
    pub fn close_approval(
        &self,
        id: &str,
        note: &str,
        now: i64,
    ) -> anyhow::Result<Option<ApprovalRecord>> {
        let changed = {
            let mut conn = self.lock();
            let tx = conn.transaction()?;
            let changed = tx.exec(
                &format!(
                    "UPDATE approvals SET state = 'closed', note = ?2, decided_ms = COALESCE(decided_ms, ?3),
                         decided_by = COALESCE(decided_by, 'engine'), surface = COALESCE(surface, 'engine')
                     WHERE id = ?1 AND {OPEN}"
                ),
                params![id, note, now],
            )?;
            if changed == 1 {
                log_tx(
                    &tx,
                    id,
                    ApprovalState::Closed,
                    &Actor::local("engine"),
                    Surface::Engine,
                    Some(note),
                    now,
                )?;
            }
            tx.commit()?;
            changed
        };
        if changed == 1 {
            self.approval(id)
        } else {
            Ok(None)
        }
    }

    /// Marks answers as accepted by the server.
    pub fn confirm_approvals(&self, ids: &[String], now: i64) -> anyhow::Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE approvals SET confirmed_ms = ?2 WHERE id = ?1 AND confirmed_ms IS NULL AND state != 'pending'",
            )?;
            for id in ids {
                stmt.execute(params![id, now])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Writes a decision the engine made by policy (a mode, a rule or a grant) to the audit log.
    pub fn log_decision(&self, d: &DecisionRecord) -> anyhow::Result<()> {
        self.lock().exec(
            "INSERT INTO decisions (at_ms, session_id, run_id, tool_call_id, tool, action, decided_by, decided_by_id, surface, channel, note)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                d.at_ms,
                d.session_id,
                d.run_id,
                d.tool_call_id,
                d.tool,
                d.action,
                d.decided_by,
                d.decided_by_id,
                d.surface,
                d.channel,
                d.note
            ],
        )?;
        Ok(())
    }

    /// The audit log, newest first.
    pub fn decisions(&self, limit: usize) -> anyhow::Result<Vec<DecisionRecord>> {
        self.select("SELECT at_ms, session_id, run_id, tool_call_id, tool, action, decided_by, decided_by_id, surface, channel, note
             FROM decisions ORDER BY id DESC LIMIT ?1", params![limit as i64], |r| {
            Ok(DecisionRecord {
                at_ms: r.get(0)?,
                session_id: r.get(1)?,
                run_id: r.get(2)?,
                tool_call_id: r.get(3)?,
                tool: r.get(4)?,
                action: r.get(5)?,
                decided_by: r.get(6)?,
                decided_by_id: r.get(7)?,
                surface: r.get(8)?,
                channel: r.get(9)?,
                note: r.get(10)?,
            })
        })
    }

    // ----- rules and grants ---------------------------------------------------------------------

    /// Adds an "always allow" rule; `channel` limits it to one channel's conversations.
    pub fn add_rule(
        &self,
        tool: &str,
        arg_pattern: Option<&str>,
        channel: Option<&str>,
        created_by: &str,
    ) -> anyhow::Result<i64> {
        let conn = self.lock();
        conn.exec(
            "INSERT INTO approval_rules (tool, arg_pattern, channel, created_ms, created_by) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![tool, arg_pattern, channel, now_ms(), created_by],
        )?;
        Ok(conn.last_insert_rowid())
    }

    pub fn remove_rule(&self, id: i64) -> anyhow::Result<bool> {
        Ok(self
            .lock()
            .exec("DELETE FROM approval_rules WHERE id = ?1", params![id])?
            == 1)
    }

    pub fn rules(&self) -> anyhow::Result<Vec<ApprovalRule>> {
        self.select("SELECT id, tool, arg_pattern, channel, created_ms, created_by FROM approval_rules ORDER BY id", [], |r| {
            Ok(ApprovalRule {
                id: r.get(0)?,
                tool: r.get(1)?,
                arg_pattern: r.get(2)?,
                channel: r.get(3)?,
                created_ms: r.get(4)?,
                created_by: r.get(5)?,
            })
        })
    }

    /// Lets `tool` pass in this conversation while it stays on `session_id`.
    pub fn add_grant(
        &self,
        routing_key: &str,
        session_id: &str,
        tool: &str,
        created_by: &str,
    ) -> anyhow::Result<()> {
        self.lock().exec(
            "INSERT OR IGNORE INTO grants (routing_key, session_id, tool, created_ms, created_by) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![routing_key, session_id, tool, now_ms(), created_by],
        )?;
        Ok(())
    }

    /// The grants of a conversation's current session.
    pub fn grants(&self, routing_key: &str, session_id: &str) -> anyhow::Result<Vec<Grant>> {
        self.select(
            "SELECT tool FROM grants WHERE routing_key = ?1 AND session_id = ?2 ORDER BY tool",
            params![routing_key, session_id],
            |r| {
                Ok(Grant {
                    routing_key: routing_key.to_string(),
                    session_id: session_id.to_string(),
                    tool: r.get(0)?,
                })
            },
        )
    }
}

/// Copies an approval's new state into the audit log, in the same transaction as the change.
fn log_tx(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    state: ApprovalState,
    actor: &Actor,
    surface: Surface,
    note: Option<&str>,
    now: i64,
) -> rusqlite::Result<usize> {
    tx.exec(
        "INSERT INTO decisions (at_ms, session_id, run_id, tool_call_id, tool, action, decided_by, decided_by_id, surface, channel, note)
         SELECT ?2, session_id, server_run_id, tool_call_id, tool, ?3, ?4, ?5, ?6, channel, ?7 FROM approvals WHERE id = ?1",
        params![id, now, state, actor.name, actor.id, surface, note],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(id: &str, run: &str, call: &str, deadline_ms: i64) -> ApprovalRecord {
        ApprovalRecord {
            id: id.into(),
            run_local_id: format!("local-{run}"),
            routing_key: "k".into(),
            session_id: "s".into(),
            server_run_id: run.into(),
            tool_call_id: call.into(),
            tool: "stakpak__run_command".into(),
            arguments: serde_json::json!({"command": "ls"}),
            requester: "ann".into(),
            requester_id: "ann".into(),
            channel: "test".into(),
            target: DeliveryTarget::chat("ann"),
            chat_message_id: None,
            created_ms: 0,
            deadline_ms,
            state: ApprovalState::Pending,
            decided_by: None,
            decided_by_id: None,
            surface: None,
            decided_ms: None,
            confirmed_ms: None,
            note: None,
        }
    }

    #[test]
    fn first_answer_wins_and_is_audited_with_the_deciders_id() {
        let store = Store::open_in_memory().expect("store");
        assert!(store
            .insert_approval(&approval("a1", "run", "call", 10))
            .expect("insert"));
        assert!(!store
            .insert_approval(&approval("a2", "run", "call", 10))
            .expect("insert twice"));
        let ann = Actor {
            name: "Ann".into(),
            id: Some("42".into()),
        };
        assert!(matches!(
            store
                .resolve_approval("a1", ApprovalState::Accepted, &ann, Surface::Chat, None, 5)
                .expect("resolve"),
            Resolution::Decided(_)
        ));
        match store
            .resolve_approval(
                "a1",
                ApprovalState::Rejected,
                &Actor::local("bob"),
                Surface::Window,
                None,
                6,
            )
            .expect("resolve")
        {
            Resolution::AlreadyDecided(a) => assert_eq!(
                (a.state, a.decided_by.as_deref()),
                (ApprovalState::Accepted, Some("Ann"))
            ),
            other => panic!("second answer must lose, got {other:?}"),
        }
        let log = store.decisions(10).expect("log");
        assert_eq!(log.len(), 1, "one decision in the audit log");
        assert_eq!(
            log[0].decided_by_id.as_deref(),
            Some("42"),
            "the id is kept beside the name"
        );
        assert_eq!(log[0].channel, "test");
    }

    #[test]
    fn the_same_call_id_in_another_run_is_another_approval() {
        let store = Store::open_in_memory().expect("store");
        store
            .insert_approval(&approval("a1", "run1", "call_0", 10))
            .expect("insert");
        store
            .resolve_approval(
                "a1",
                ApprovalState::Accepted,
                &Actor::local("me"),
                Surface::Window,
                None,
                1,
            )
            .expect("resolve");
        assert!(
            store
                .insert_approval(&approval("a2", "run2", "call_0", 10))
                .expect("insert"),
            "a reused call id in a later run asks again"
        );
        let second = store
            .approval_for_call("run2", "call_0")
            .expect("read")
            .expect("there");
        assert_eq!(
            second.state,
            ApprovalState::Pending,
            "no decision carries over"
        );
    }

    #[test]
    fn a_late_answer_is_refused_and_expiry_covers_unconfirmed_answers() {
        let store = Store::open_in_memory().expect("store");
        store
            .insert_approval(&approval("late", "r1", "c1", 10))
            .expect("insert");
        assert!(matches!(
            store
                .resolve_approval(
                    "late",
                    ApprovalState::Accepted,
                    &Actor::local("me"),
                    Surface::Window,
                    None,
                    10
                )
                .expect("resolve"),
            Resolution::TooLate(_)
        ));
        store
            .insert_approval(&approval("sent", "r1", "c2", 10))
            .expect("insert");
        store
            .resolve_approval(
                "sent",
                ApprovalState::Accepted,
                &Actor::local("me"),
                Surface::Window,
                None,
                5,
            )
            .expect("resolve");
        assert_eq!(
            store.open_approvals("local-r1").expect("open").len(),
            2,
            "unconfirmed answers stay open"
        );
        let expired = store.expire_due("local-r1", 11).expect("expire");
        assert_eq!(
            expired.len(),
            2,
            "both expire: one unanswered, one never confirmed"
        );
        assert!(expired.iter().all(|a| a.state == ApprovalState::Expired));
        store
            .confirm_approvals(&["late".into(), "sent".into()], 12)
            .expect("confirm");
        assert!(store.open_approvals("local-r1").expect("open").is_empty());
    }

    #[test]
    fn closing_takes_only_open_approvals() {
        let store = Store::open_in_memory().expect("store");
        store
            .insert_approval(&approval("a", "r", "c", 100))
            .expect("insert");
        let closed = store
            .close_approval("a", "the run ended", 1)
            .expect("close")
            .expect("was open");
        assert_eq!(closed.state, ApprovalState::Closed);
        assert_eq!(closed.note.as_deref(), Some("the run ended"));
        assert!(store
            .close_approval("a", "again", 2)
            .expect("close")
            .is_none());
        assert_eq!(
            store.decisions(10).expect("log")[0].action,
            ApprovalState::Closed
        );
    }
}
