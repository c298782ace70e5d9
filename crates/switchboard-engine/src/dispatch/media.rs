//! Fetching the files that came with queued messages, before the run that answers them: each is
//! downloaded by its channel (size cap, stall and overall timeouts, the platform's own host only),
//! saved under the conversation's folder with a safe name, and a voice note transcribed when a
//! transcriber is configured. What became of each is stored with its message at once, so a
//! restart fetches only what is left; the chat is told of a file that could not be taken (and
//! the rest of the message goes on), and of what a voice note was heard to say.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::Dispatcher;
use crate::channels::Channel;
use crate::chunk::clip_chars;
use crate::config::MediaConfig;
use crate::media::{self, FetchError};
use crate::model::{Attachment, AttachmentKind, Fetched};
use crate::store::JournalEntry;

/// How much of a transcript the chat is shown back.
const HEARD_CHARS: usize = 600;

impl Dispatcher {
    /// Fetches the files of queued `rows` and keeps those rows still queued afterwards (a
    /// message dropped with `/stop` while its files came goes no further). `false` when the
    /// engine stops meanwhile.
    pub(super) async fn fetch_queued(
        &self,
        key: &str,
        rows: &mut Vec<JournalEntry>,
    ) -> anyhow::Result<bool> {
        if rows.iter().all(|r| r.attachments.is_empty()) {
            return Ok(true);
        }
        tokio::select! {
            _ = self.shutdown.cancelled() => return Ok(false),
            fetched = self.fetch_attachments(key, rows) => fetched?,
        }
        let still: Vec<i64> = self.store.queued(key)?.iter().map(|r| r.id).collect();
        rows.retain(|r| still.contains(&r.id));
        Ok(true)
    }

    /// Fetches what is still pending among `rows`' attachments, updating `rows` and the store.
    async fn fetch_attachments(&self, key: &str, rows: &mut [JournalEntry]) -> anyhow::Result<()> {
        for row in rows.iter_mut() {
            if !row
                .attachments
                .iter()
                .any(|a| matches!(a.fetched, Fetched::Pending))
            {
                continue;
            }
            let media = self.config().media.clone();
            let channel = self.channel(&row.channel);
            let dir = self.files_dir.join(media::conversation_dir(key));
            let mut notes = Vec::new();
            for (index, attachment) in row.attachments.iter_mut().enumerate() {
                if !matches!(attachment.fetched, Fetched::Pending) {
                    continue;
                }
                let (fetched, note) = match &channel {
                    _ if index as u64 >= media.max_files => (
                        failed(format!(
                            "only the first {} attachments of a message are taken",
                            media.max_files
                        )),
                        None,
                    ),
                    None => (
                        failed("its channel is not configured any more".into()),
                        None,
                    ),
                    Some(channel) => self.take(channel, attachment, &media, &dir).await,
                };
                match &fetched {
                    Fetched::Failed { reason } => notes.push(format!(
                        "⚠️ I could not take {}: {reason}. The rest of your message went on.",
                        label(attachment)
                    )),
                    Fetched::Saved {
                        transcript: Some(heard),
                        ..
                    } => notes.push(format!(
                        "🎙 Heard: {}",
                        clip_chars(heard.trim(), HEARD_CHARS)
                    )),
                    _ => {}
                }
                notes.extend(note);
                attachment.fetched = fetched;
            }
            // What became of them is kept before the chat is told, so a restart neither fetches
            // them again nor repeats a note.
            self.store
                .set_journal_attachments(row.id, &row.attachments)?;
            if let (Some(channel), false) = (&channel, notes.is_empty()) {
                let note = notes.join("\n");
                if let Err(e) = channel.send(&row.target, &note).await {
                    tracing::warn!(error = %e, "cannot tell the chat about its attachments");
                }
            }
        }
        Ok(())
    }

    /// Fetches and saves one attachment; a note for the chat when something about it is worth
    /// saying although it was taken.
    async fn take(
        &self,
        channel: &Arc<dyn Channel>,
        attachment: &Attachment,
        config: &MediaConfig,
        dir: &Path,
    ) -> (Fetched, Option<String>) {
        let limits = media::Limits {
            max_bytes: config.max_mb * 1024 * 1024,
            stall: self.options.download_stall,
            total: self.options.download_total,
        };
        if attachment.size.is_some_and(|size| size > limits.max_bytes) {
            return (
                failed(
                    FetchError::TooLarge {
                        max_mb: config.max_mb,
                    }
                    .to_string(),
                ),
                None,
            );
        }
        // The channel keeps to the limits; this is the backstop for one that does not.
        let downloaded = tokio::time::timeout(
            limits.total + Duration::from_secs(30),
            channel.fetch(attachment, &limits),
        )
        .await
        .unwrap_or(Err(FetchError::Stalled));
        let bytes = match downloaded {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::info!(channel = %channel.name(), error = %e, "an attachment was not fetched");
                return (failed(e.to_string()), None);
            }
        };
        let name = media::safe_file_name(
            attachment.name.as_deref(),
            attachment.kind,
            attachment.mime.as_deref(),
        );
        // A picture is what its bytes say it is; a "picture" whose bytes are none is a file.
        let declared = attachment
            .mime
            .clone()
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| media::guess_mime(attachment.kind, &name));
        let mime = match (media::sniff_image(&bytes), declared.starts_with("image/")) {
            (Some(image), _) => image.to_owned(),
            (None, true) if attachment.kind == AttachmentKind::Image => {
                "application/octet-stream".to_owned()
            }
            (None, _) => declared,
        };
        let path = match save(dir, &name, &bytes) {
            Ok(path) => path,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot save an attachment");
                return (failed(format!("it could not be saved: {e:#}")), None);
            }
        };
        let path_text = path.display().to_string();
        tracing::info!(channel = %channel.name(), kind = attachment.kind.as_str(), bytes = bytes.len(), "attachment saved");
        let note = if mime == "application/octet-stream" && !name.contains('.') {
            Some(format!(
                "ℹ️ I could not tell what kind of file {} is; the agent gets it as {name}.",
                label(attachment)
            ))
        } else if attachment.kind == AttachmentKind::Image
            && media::agent_image_mime(&mime).is_none()
        {
            Some(format!(
                "ℹ️ {} is a {mime} picture the agent cannot look at; it gets the file instead.",
                label(attachment)
            ))
        } else {
            None
        };
        let transcript = match attachment.kind {
            AttachmentKind::Voice | AttachmentKind::Audio => {
                match transcribe(config, &path_text).await {
                    Some(Ok(text)) => Some(text),
                    Some(Err(why)) => {
                        return (
                            Fetched::Saved {
                                path: path_text,
                                bytes: bytes.len() as u64,
                                mime,
                                transcript: None,
                            },
                            Some(format!(
                            "⚠️ I could not transcribe {}: {why}. The agent gets the audio file.",
                            label(attachment)
                        )),
                        )
                    }
                    None => None,
                }
            }
            _ => None,
        };
        (
            Fetched::Saved {
                path: path_text,
                bytes: bytes.len() as u64,
                mime,
                transcript,
            },
            note,
        )
    }
}

fn failed(reason: String) -> Fetched {
    Fetched::Failed { reason }
}

/// How the chat is told which file: its name, else its kind.
fn label(attachment: &Attachment) -> String {
    match attachment
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        Some(name) => format!("\u{201c}{name}\u{201d}"),
        None => format!("the {}", attachment.kind.as_str()),
    }
}

/// Writes `bytes` to a free name in `dir` (made, the user's alone, when missing); the file is
/// the user's alone too.
fn save(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context as _;
    crate::private::private_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    media::write_new(dir, name, bytes)
        .with_context(|| format!("cannot write {name} in {}", dir.display()))
}

/// Runs the configured transcriber on `file`: its standard output, trimmed, is the transcript.
/// `None` when no transcriber is configured.
async fn transcribe(config: &MediaConfig, file: &str) -> Option<Result<String, String>> {
    let words = match config.transcriber(file)? {
        Ok(words) => words,
        Err(why) => return Some(Err(why)),
    };
    let (program, args) = words.split_first()?;
    let run = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let timeout = Duration::from_secs(config.transcribe_timeout_secs);
    Some(match tokio::time::timeout(timeout, run).await {
        Err(_) => Err(format!("the transcriber took longer than {timeout:?}")),
        Ok(Err(e)) => Err(format!(
            "the transcriber {program:?} could not be started: {e}"
        )),
        Ok(Ok(out)) if !out.status.success() => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            Err(format!(
                "the transcriber failed ({}){}",
                out.status,
                if last.is_empty() {
                    String::new()
                } else {
                    format!(": {}", clip_chars(last.trim(), 200))
                }
            ))
        }
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if text.is_empty() {
                Err("the transcriber heard nothing".to_owned())
            } else {
                Ok(text)
            }
        }
    })
}
