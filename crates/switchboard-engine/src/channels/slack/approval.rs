//! Tool approvals in Slack: the prompt as Block Kit, a click on its buttons, and the prompt
//! updated to how the approval ended.
//!
//! - **The prompt** ([`prompt_view`]) is posted like a reply, in the conversation's thread: a
//!   section (`mrkdwn`) naming the tool with the arguments in a code block, a context line (plain
//!   text) with the requester and the expiry, and an `actions` block with Approve (primary),
//!   Reject (danger) and Always allow, whose `value`s are [`approvals::callback_data`]. Nothing
//!   from the tool call can become markup: `&`, `<`, `>` are escaped (no `<!channel>`, mention or
//!   link), runs of backticks are broken with a zero-width space so the code block cannot be
//!   closed early, the text is `verbatim` (no auto-linked names or URLs) and links are not
//!   unfurled. The section is cut to Slack's 3,000 characters, saying how much was left out.
//! - **A click** ([`on_click`]) has been acknowledged on the socket already (Slack's 3 s); here
//!   the payload is read ([`approvals::parse_callback`]; other buttons are ignored), the engine
//!   decides, and the clicker is shown the outcome: `Decided` and `AlreadyDecided` update the
//!   prompt to the outcome without buttons (`chat.update` with `container.channel_id` and
//!   `message_ts`), and a late clicker is also told, in a message only they see
//!   (`chat.postEphemeral`), that it was already decided; `NotAllowed` and `NotFound` go only to
//!   the clicker and leave the prompt as it is. When the ephemeral message cannot be posted, the
//!   click's `response_url` takes it (`response_type: ephemeral`).
//! - **Closing** ([`Approvals::close`]) is shared by the click and by
//!   [`Channel::close_approval`](crate::channels::Channel::close_approval) (the engine's call
//!   when an approval is decided anywhere), so both show exactly the same thing and the second
//!   is skipped. `chat.update` needs `"blocks": []`-style replacement, or Slack keeps the old
//!   blocks (and their buttons). The closed prompt keeps its summary (the call) above the
//!   outcome: remembered when posted, or read back from a click on it after a restart; a prompt
//!   from before a restart that is closed without a click shows the outcome alone.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};

use super::api::{ApiError, WebApi};
use super::decode::ButtonClick;
use super::text;
use super::Names;
use crate::approvals::{self, ApprovalPrompt, ChatChoice, ChoiceOutcome};
use crate::channels::{ChannelContext, ChannelError};
use crate::model::Peer;

/// Slack's limit on a section's text.
const SECTION_MAX: usize = 3000;
/// Longest tool name or requester shown whole.
const NAME_MAX: usize = 200;
/// The `block_id` of the buttons.
pub(super) const ACTIONS_BLOCK: &str = "sb_approval";
/// Prompts, closings and clicks remembered (for the closed view and for skipping repeats).
const REMEMBERED: usize = 1024;
/// The longest `Retry-After` waited for before a second try at closing a prompt.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);
/// What the engine puts before the outcome it tells a late clicker.
const ALREADY_PREFIX: &str = "Already decided: ";
const ZWSP: char = '\u{200B}';

/// A message to post: the notification text and the blocks.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct View {
    pub text: String,
    pub blocks: Vec<Value>,
}

/// The prompt for a waiting tool call, and its summary section's text (kept for the closed view).
pub(super) fn prompt_view(prompt: &ApprovalPrompt) -> (View, String) {
    let summary = summary(&prompt.summary, &prompt.tool, &prompt.arguments);
    let button = |label: &str, choice: ChatChoice, action: &str, style: Option<&str>| {
        let mut button = json!({
            "type": "button",
            "text": {"type": "plain_text", "text": label, "emoji": true},
            "action_id": action,
            "value": approvals::callback_data(choice, &prompt.approval_id),
        });
        if let Some(style) = style {
            button["style"] = json!(style);
        }
        button
    };
    let requested = format!(
        "Requested by {} · expires in {} min",
        cut(&prompt.requester, NAME_MAX),
        prompt.expires_in_minutes
    );
    let blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn", "text": summary, "verbatim": true}}),
        json!({"type": "context", "elements": [{"type": "plain_text", "text": requested, "emoji": true}]}),
        json!({"type": "actions", "block_id": ACTIONS_BLOCK, "elements": [
            button("Approve", ChatChoice::Approve, "sb_approve", Some("primary")),
            button("Reject", ChatChoice::Reject, "sb_reject", Some("danger")),
            button("Allow in this chat", ChatChoice::AllowHere, "sb_allow_here", None),
            button("Always allow", ChatChoice::AlwaysAllow, "sb_always_allow", None),
        ]}),
    ];
    let text = text::escape(&format!(
        "🔐 Approval needed: the agent wants to {} with {} (requested by {})",
        cut(&prompt.summary, NAME_MAX),
        cut(&prompt.tool, NAME_MAX),
        cut(&prompt.requester, NAME_MAX)
    ));
    (View { text, blocks }, summary)
}

/// The prompt once decided: its summary (when known) and the outcome, without buttons.
pub(super) fn closed_view(summary: Option<&str>, outcome: &str) -> View {
    let outcome = cut(outcome, SECTION_MAX);
    let mut blocks = Vec::new();
    if let Some(summary) = summary {
        blocks.push(
            json!({"type": "section", "text": {"type": "mrkdwn", "text": summary, "verbatim": true}}),
        );
    }
    blocks.push(
        json!({"type": "section", "text": {"type": "plain_text", "text": outcome, "emoji": true}}),
    );
    View {
        text: text::escape(&outcome),
        blocks,
    }
}

/// `🔐 *The agent wants to* run `ls` (`tool`)` and what will run in a code block, within
/// Slack's limit.
fn summary(what: &str, tool: &str, arguments: &str) -> String {
    let tool: String = cut(tool, NAME_MAX).replace('`', "ˋ");
    let head = format!(
        "🔐 *The agent wants to* {} (`{}`)\n",
        text::escape(&cut(what, NAME_MAX)),
        text::escape(&tool)
    );
    let arguments = if arguments.trim().is_empty() {
        "(no arguments)"
    } else {
        arguments
    };
    let budget = SECTION_MAX.saturating_sub(head.chars().count() + 6);
    format!("{head}```{}```", code(arguments, budget))
}

/// Text for inside a code block, at most `budget` characters: `&`, `<`, `>` escaped, backtick
/// runs broken (the fences count as backticks on either side), and when it does not fit, cut
/// with a note of how much is missing.
fn code(raw: &str, budget: usize) -> String {
    let encode = |limit: usize| -> (String, usize) {
        let mut out = String::new();
        let mut used = 0;
        let mut taken = 0;
        let mut prev = Some('`');
        for c in raw.chars() {
            let mut piece = String::new();
            if c == '`' && prev == Some('`') {
                piece.push(ZWSP);
            }
            match c {
                '&' => piece.push_str("&amp;"),
                '<' => piece.push_str("&lt;"),
                '>' => piece.push_str("&gt;"),
                c => piece.push(c),
            }
            let len = piece.chars().count();
            if used + len > limit {
                break;
            }
            out.push_str(&piece);
            used += len;
            taken += 1;
            prev = Some(c);
        }
        if prev == Some('`') && taken > 0 {
            out.push(ZWSP);
        }
        (out, taken)
    };
    let total = raw.chars().count();
    // One character is kept free for a closing zero-width space.
    let (whole, taken) = encode(budget.saturating_sub(1));
    if taken == total {
        return whole;
    }
    let (head, taken) = encode(budget.saturating_sub(48));
    format!("{head}\n… ({} more characters)", total - taken)
}

/// At most `max` characters, with `…` when cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A bounded memory of recent keys, the oldest forgotten first.
struct Recent<V> {
    order: VecDeque<String>,
    map: HashMap<String, V>,
}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Recent {
            order: VecDeque::new(),
            map: HashMap::new(),
        }
    }
}

impl<V> Recent<V> {
    /// Remembers `key`; false when it was already known (its value is replaced).
    fn insert(&mut self, key: String, value: V) -> bool {
        if let Some(slot) = self.map.get_mut(&key) {
            *slot = value;
            return false;
        }
        if self.order.len() >= REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
        self.order.push_back(key.clone());
        self.map.insert(key, value);
        true
    }

    fn get(&self, key: &str) -> Option<&V> {
        self.map.get(key)
    }

    fn remove(&mut self, key: &str) {
        if self.map.remove(key).is_some() {
            self.order.retain(|k| k != key);
        }
    }
}

#[derive(Default)]
struct Memory {
    /// Prompts this process posted: message key → (channel, summary).
    prompts: Recent<(String, String)>,
    /// Prompts updated to their outcome (or being updated).
    closed: Recent<()>,
    /// Clicks handled: user and click time.
    clicks: Recent<()>,
}

/// The adapter's approval prompts: posting, closing, and what it remembers of them.
pub(super) struct Approvals {
    api: Arc<WebApi>,
    memory: Mutex<Memory>,
}

impl Approvals {
    pub(super) fn new(api: Arc<WebApi>) -> Approvals {
        Approvals {
            api,
            memory: Mutex::default(),
        }
    }

    fn memory(&self) -> MutexGuard<'_, Memory> {
        // Each critical section is a few map operations; a poisoned lock holds nothing half-done.
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers a posted prompt's conversation and summary, for its closed view.
    pub(super) fn remember(&self, channel: &str, ts: &str, summary: String) {
        self.memory()
            .prompts
            .insert(ts.to_owned(), (channel.to_owned(), summary));
    }

    /// Learns a clicked prompt's summary from the click when this process did not post it (it
    /// was posted before a restart), so its closed view keeps it.
    fn recall(&self, click: &ButtonClick) {
        let Some(summary) = &click.summary else {
            return;
        };
        let mut memory = self.memory();
        if memory.prompts.get(&click.message_ts).is_none() {
            memory.prompts.insert(
                click.message_ts.clone(),
                (click.channel.clone(), summary.clone()),
            );
        }
    }

    /// Updates the prompt `ts` (in `channel`, unless it was posted elsewhere) to `outcome`,
    /// without buttons. Done once: a prompt already closed (or being closed) is left alone; one
    /// that could not be updated can be closed again later. A rate limit or transport failure
    /// gets one more try.
    pub(super) async fn close(
        &self,
        channel: &str,
        ts: &str,
        outcome: &str,
    ) -> Result<(), ChannelError> {
        let (channel, summary) = {
            let mut memory = self.memory();
            if !memory.closed.insert(ts.to_owned(), ()) {
                tracing::debug!("slack: the approval prompt is already closed");
                return Ok(());
            }
            match memory.prompts.get(ts) {
                Some((channel, summary)) => (channel.clone(), Some(summary.clone())),
                None => (channel.to_owned(), None),
            }
        };
        let view = closed_view(summary.as_deref(), outcome);
        let body = json!({"channel": channel, "ts": ts, "text": view.text, "blocks": view.blocks});
        let result = match self.api.update_message(&body).await {
            Err(ApiError::RateLimited { retry_after, .. }) if retry_after <= MAX_RETRY_WAIT => {
                tracing::info!(
                    ?retry_after,
                    "slack: chat.update rate limited; trying again"
                );
                tokio::time::sleep(retry_after).await;
                self.api.update_message(&body).await
            }
            Err(e @ ApiError::Transport { .. }) => {
                tracing::info!(error = %e, "slack: cannot update the approval prompt; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.api.update_message(&body).await
            }
            other => other,
        };
        if let Err(e) = result {
            self.memory().closed.remove(ts);
            return Err(e.into());
        }
        tracing::debug!("slack: approval prompt closed");
        Ok(())
    }

    /// Whether this click is new (not a redelivery of one already handled).
    fn first_click(&self, click: &ButtonClick) -> bool {
        let when = click
            .action_ts
            .clone()
            .unwrap_or_else(|| format!("{}:{}", click.message_ts, click.action_id));
        self.memory()
            .clicks
            .insert(format!("{}:{when}", click.user), ())
    }

    /// Shows `text` to the clicker only: an ephemeral message where the prompt is, else through
    /// the click's `response_url`.
    async fn tell(&self, click: &ButtonClick, text: &str) {
        let text = text::escape(text);
        let mut body = json!({"channel": click.channel, "user": click.user, "text": text});
        if let Some(thread) = &click.thread_ts {
            body["thread_ts"] = json!(thread);
        }
        let error = match self.api.post_ephemeral(&body).await {
            Ok(()) => return,
            Err(e) => e,
        };
        let Some(url) = &click.response_url else {
            tracing::warn!(error = %error, "slack: cannot answer an approval click");
            return;
        };
        tracing::info!(error = %error, "slack: chat.postEphemeral failed; answering through the response_url");
        let reply = json!({"response_type": "ephemeral", "replace_original": false, "text": text});
        if let Err(e) = self.api.respond(url, &reply).await {
            tracing::warn!(error = %e, "slack: cannot answer an approval click");
        }
    }
}

/// Handles a click on an approval prompt (already acknowledged): decides, then shows the
/// outcome.
pub(super) async fn on_click(
    approvals: Arc<Approvals>,
    names: Arc<Names>,
    ctx: ChannelContext,
    click: ButtonClick,
) {
    let payload = click
        .value
        .as_deref()
        .and_then(approvals::parse_callback)
        .or_else(|| approvals::parse_callback(&click.action_id));
    let Some((choice, approval_id)) = payload else {
        tracing::debug!(action = %click.action_id, "slack: a click on a button that is not an approval");
        return;
    };
    if !approvals.first_click(&click) {
        tracing::debug!("slack: a click seen before; ignored");
        return;
    }
    approvals.recall(&click);
    let name = names.lookup(&click.user).await.or(click.user_name.clone());
    let clicker = Peer {
        id: click.user.clone(),
        name,
    };
    let outcome = ctx.decide(&approval_id, choice, &clicker).await;
    let kind = match &outcome {
        ChoiceOutcome::Decided(_) => "decided",
        ChoiceOutcome::AlreadyDecided(_) => "already decided",
        ChoiceOutcome::NotAllowed(_) => "not allowed",
        ChoiceOutcome::NotFound(_) => "not found",
    };
    tracing::info!(?choice, outcome = kind, "slack: approval click");
    let closed = match &outcome {
        ChoiceOutcome::Decided(line) => {
            approvals
                .close(&click.channel, &click.message_ts, line)
                .await
        }
        ChoiceOutcome::AlreadyDecided(text) => {
            approvals.tell(&click, text).await;
            let line = text.strip_prefix(ALREADY_PREFIX).unwrap_or(text);
            approvals
                .close(&click.channel, &click.message_ts, line)
                .await
        }
        ChoiceOutcome::NotAllowed(text) | ChoiceOutcome::NotFound(text) => {
            approvals.tell(&click, text).await;
            Ok(())
        }
    };
    if let Err(e) = closed {
        tracing::warn!(error = %e, "slack: cannot show the approval's outcome on the prompt");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(tool: &str, arguments: &str) -> ApprovalPrompt {
        ApprovalPrompt {
            approval_id: "0b904f9e-530b-4a04-9250-9a3fa2312b75".into(),
            tool: tool.into(),
            summary: "run `ls`".into(),
            arguments: arguments.into(),
            requester: "Ann".into(),
            expires_in_minutes: 30,
        }
    }

    #[test]
    fn the_prompt_has_the_call_the_requester_and_four_buttons() {
        let (view, summary) = prompt_view(&prompt("stakpak__run_command", "command: ls -la"));
        assert_eq!(
            summary,
            "🔐 *The agent wants to* run `ls` (`stakpak__run_command`)\n```command: ls -la```"
        );
        assert_eq!(view.blocks[0]["text"]["text"], summary);
        assert_eq!(view.blocks[0]["text"]["verbatim"], true);
        assert_eq!(
            view.blocks[1]["elements"][0]["text"],
            "Requested by Ann · expires in 30 min"
        );
        let buttons = view.blocks[2]["elements"].as_array().expect("buttons");
        let shown: Vec<(&str, &str, Option<&str>)> = buttons
            .iter()
            .map(|b| {
                (
                    b["text"]["text"].as_str().unwrap_or_default(),
                    b["value"].as_str().unwrap_or_default(),
                    b["style"].as_str(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            vec![
                (
                    "Approve",
                    "sb:a:0b904f9e-530b-4a04-9250-9a3fa2312b75",
                    Some("primary")
                ),
                (
                    "Reject",
                    "sb:r:0b904f9e-530b-4a04-9250-9a3fa2312b75",
                    Some("danger")
                ),
                (
                    "Allow in this chat",
                    "sb:c:0b904f9e-530b-4a04-9250-9a3fa2312b75",
                    None
                ),
                (
                    "Always allow",
                    "sb:w:0b904f9e-530b-4a04-9250-9a3fa2312b75",
                    None
                ),
            ]
        );
        for b in buttons {
            let value = b["value"].as_str().unwrap_or_default();
            assert!(approvals::parse_callback(value).is_some(), "{value}");
        }
        assert!(view.text.contains("stakpak__run_command") && view.text.contains("Ann"));
    }

    #[test]
    fn arguments_cannot_become_markup() {
        let cases = [
            (
                "<!channel> <@U1> <https://evil.example|click>",
                "&lt;!channel&gt; &lt;@U1&gt; &lt;https://evil.example|click&gt;",
            ),
            ("a && b > c", "a &amp;&amp; b &gt; c"),
            // A fence in the arguments cannot end the code block.
            (
                "x ```*bold* outside``` y",
                "x `\u{200B}`\u{200B}`*bold* outside`\u{200B}`\u{200B}` y",
            ),
            // Backticks next to the fences are kept apart from them.
            ("`edge`", "\u{200B}`edge`\u{200B}"),
            ("", "(no arguments)"),
        ];
        for (arguments, want) in cases {
            let summary = summary("run `x`", "tool", arguments);
            let body = summary
                .split_once("```")
                .and_then(|(_, rest)| rest.strip_suffix("```"))
                .expect("a code block");
            assert_eq!(body, want, "{arguments}");
            assert!(!body.contains("``"), "no backtick run inside: {body:?}");
        }
        let odd = summary("run `x`", "to`ol <x>", "a");
        assert!(
            odd.starts_with("🔐 *The agent wants to* run `x` (`toˋol &lt;x&gt;`)"),
            "{odd}"
        );
    }

    #[test]
    fn long_arguments_are_cut_to_slacks_limit_and_say_so() {
        for arguments in ["x".repeat(10_000), "<".repeat(2_000), "`".repeat(5_000)] {
            let summary = summary("run `x`", "tool", &arguments);
            let count = summary.chars().count();
            assert!(count <= SECTION_MAX, "{count}");
            assert!(summary.contains(" more characters)"), "{summary}");
            assert!(summary.ends_with("```"));
        }
        let exact = "y".repeat(SECTION_MAX - 50);
        let summary = summary("run `x`", "tool", &exact);
        assert!(summary.chars().count() <= SECTION_MAX);
        assert!(!summary.contains("more characters"), "fits whole");
        let (view, _) = prompt_view(&prompt(&"t".repeat(500), &"z".repeat(9_000)));
        assert!(
            view.blocks[0]["text"]["text"]
                .as_str()
                .expect("text")
                .chars()
                .count()
                <= SECTION_MAX
        );
    }

    #[test]
    fn the_closed_prompt_has_no_buttons() {
        let view = closed_view(Some("summary"), "✅ tool: approved by <Ann> (slack)");
        assert_eq!(view.blocks.len(), 2);
        assert!(view.blocks.iter().all(|b| b["type"] != "actions"));
        assert_eq!(view.blocks[1]["text"]["type"], "plain_text");
        assert_eq!(view.text, "✅ tool: approved by &lt;Ann&gt; (slack)");
        let alone = closed_view(None, "⏱ tool: not answered in time, rejected");
        assert_eq!(alone.blocks.len(), 1);
    }

    #[test]
    fn recent_forgets_the_oldest() {
        let mut recent = Recent::default();
        for i in 0..REMEMBERED + 5 {
            assert!(recent.insert(i.to_string(), ()));
        }
        assert!(recent.get("0").is_none());
        assert!(recent.get(&(REMEMBERED + 4).to_string()).is_some());
        assert!(!recent.insert((REMEMBERED + 4).to_string(), ()));
        recent.remove("10");
        assert!(recent.insert("10".into(), ()));
        assert_eq!(recent.map.len(), recent.order.len());
    }
}
