//! The desktop chat's side of the conversation: the replies and approval prompts the desktop
//! channel "sent", kept so the window shows them again after a restart.

use rusqlite::{params, OptionalExtension};

use super::{Cached, Store};
use crate::channels::desktop::{DesktopKind, DesktopMessage};
use crate::channels::StreamTask;

const COLUMNS: &str =
    "id, chat_id, kind, text, tasks, streaming, approval_id, outcome, created_ms, updated_ms";

/// One desktop message by its id.
fn by_id(conn: &rusqlite::Connection, id: i64) -> rusqlite::Result<Option<DesktopMessage>> {
    conn.one(
        &format!("SELECT {COLUMNS} FROM desktop_messages WHERE id = ?1"),
        params![id],
        read_row,
    )
    .optional()
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DesktopMessage> {
    let kind: String = r.get(2)?;
    let tasks: Option<String> = r.get(4)?;
    Ok(DesktopMessage {
        id: r.get(0)?,
        chat_id: r.get(1)?,
        kind: DesktopKind::parse(&kind).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                2,
                rusqlite::types::Type::Text,
                format!("unknown desktop message kind {kind:?} in the database").into(),
            )
        })?,
        text: r.get(3)?,
        tasks: tasks
            .as_deref()
            .map(super::from_json)
            .transpose()?
            .unwrap_or_default(),
        streaming: r.get(5)?,
        approval_id: r.get(6)?,
        outcome: r.get(7)?,
        created_ms: r.get(8)?,
        updated_ms: r.get(9)?,
    })
}

impl Store {
    /// Stores a message of the desktop chat `chat_id` and returns it.
    #[allow(clippy::too_many_arguments)]
    pub fn insert_desktop_message(
        &self,
        chat_id: &str,
        kind: DesktopKind,
        text: &str,
        tasks: &[StreamTask],
        streaming: bool,
        approval_id: Option<&str>,
        now: i64,
    ) -> anyhow::Result<DesktopMessage> {
        let conn = self.lock();
        conn.exec(
            "INSERT INTO desktop_messages (chat_id, kind, text, tasks, streaming, approval_id, created_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            params![
                chat_id,
                kind.as_str(),
                text,
                (!tasks.is_empty()).then(|| super::to_json(&tasks)),
                streaming,
                approval_id,
                now
            ],
        )?;
        let id = conn.last_insert_rowid();
        by_id(&conn, id)?.ok_or_else(|| anyhow::anyhow!("the desktop message just written is gone"))
    }

    /// Replaces a reply's text and tasks (`streaming`: still being written); `None` when there is
    /// no such message.
    pub fn update_desktop_message(
        &self,
        id: i64,
        text: &str,
        tasks: &[StreamTask],
        streaming: bool,
        now: i64,
    ) -> anyhow::Result<Option<DesktopMessage>> {
        let conn = self.lock();
        conn.exec(
            "UPDATE desktop_messages SET text = ?2, tasks = ?3, streaming = ?4, updated_ms = ?5 WHERE id = ?1",
            params![
                id,
                text,
                (!tasks.is_empty()).then(|| super::to_json(&tasks)),
                streaming,
                now
            ],
        )?;
        Ok(by_id(&conn, id)?)
    }

    /// Records how an approval prompt ended.
    pub fn close_desktop_approval(
        &self,
        id: i64,
        outcome: &str,
        now: i64,
    ) -> anyhow::Result<Option<DesktopMessage>> {
        let conn = self.lock();
        conn.exec(
            "UPDATE desktop_messages SET outcome = ?2, updated_ms = ?3 WHERE id = ?1",
            params![id, outcome, now],
        )?;
        Ok(by_id(&conn, id)?)
    }

    /// A desktop chat's latest messages, oldest first.
    pub fn desktop_messages(
        &self,
        chat_id: &str,
        limit: usize,
    ) -> anyhow::Result<Vec<DesktopMessage>> {
        let mut rows = self.select(
            &format!(
                "SELECT {COLUMNS} FROM desktop_messages WHERE chat_id = ?1 ORDER BY id DESC LIMIT ?2"
            ),
            params![chat_id, limit as i64],
            read_row,
        )?;
        rows.reverse();
        Ok(rows)
    }
}
