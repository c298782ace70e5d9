//! Tool approvals as Discord shows them: the prompt with its three buttons, the prompt once it is
//! decided, and the answers to a click. Pure.
//!
//! The prompt is Discord markdown: the tool and the requester are escaped, the arguments sit in a
//! code block (where nothing renders: no mentions, links, headings or formatting) that they cannot
//! close. Nothing pings anyone either way, since every message goes out with
//! `allowed_mentions: {parse: []}`.
//!
//! ````text
//! 🔐 The agent wants to run **stakpak\_\_run\_command**
//! ```
//! command: ls
//! ```
//! Requested by Ann · expires in 30 min
//! ````
//!
//! Once decided, the last line is replaced by how it ended and the buttons are removed; the
//! prompt's top part (up to the closing fence) is kept, so the chat still shows what was decided.

use serde_json::{json, Value};

use crate::approvals::{callback_data, ApprovalPrompt, ChatChoice, ChoiceOutcome};
use crate::chunk::TextLimit;

use super::wire::{callback, EPHEMERAL};

const FENCE: &str = "```";
/// Discord's limit for a button's `custom_id`.
const MAX_CUSTOM_ID: usize = 100;
/// The longest tool name or person's name shown in a line (they are one-liners, not essays).
const MAX_INLINE: usize = 200;
/// Said when the arguments had to be cut to fit a message.
const CUT: &str = "\n… (cut to fit Discord's message limit)";

/// Component and button types and button styles ([D4]).
const ACTION_ROW: u8 = 1;
const BUTTON: u8 = 2;
const SECONDARY: u8 = 2;
const SUCCESS: u8 = 3;
const DANGER: u8 = 4;

fn measure(text: &str) -> usize {
    TextLimit::DISCORD.measure(text)
}

/// Escapes everything Discord markdown could read in `text`: formatting (`* _ ~ | \``),
/// quotes, headings and lists (`> # -`), masked links (`[ ]`), mentions, channels, emojis and
/// timestamps (`< @`), and the backslash itself. Discord drops a backslash before any such
/// character, so the text reads exactly as given.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '<' | '#' | '-' | '[' | ']' | '@' | ':'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One line of escaped text: line breaks become spaces, and very long text is clipped.
fn inline(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    if flat.chars().count() <= MAX_INLINE {
        escape(flat)
    } else {
        let head: String = flat.chars().take(MAX_INLINE).collect();
        format!("{}…", escape(&head))
    }
}

/// Text that can sit inside a code block without closing it: no two backticks in a row (a
/// zero-width space goes between them).
fn code_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = None;
    for c in text.chars() {
        if c == '`' && last == Some('`') {
            out.push('\u{200b}');
        }
        out.push(c);
        last = Some(c);
    }
    if out.trim().is_empty() {
        "(no arguments)".to_owned()
    } else {
        out
    }
}

/// The prompt's text, at most 2000 characters: the arguments are cut when they would not fit.
pub(crate) fn prompt_content(prompt: &ApprovalPrompt) -> String {
    let header = format!(
        "🔐 The agent wants to {} (**{}**)",
        inline(&prompt.summary),
        inline(&prompt.tool)
    );
    let footer = format!(
        "Requested by {} · expires in {} min",
        inline(&prompt.requester),
        prompt.expires_in_minutes
    );
    let mut arguments = code_safe(&prompt.arguments);
    let frame = format!("{header}\n{FENCE}\n\n{FENCE}\n{footer}");
    let room = TextLimit::DISCORD.max.saturating_sub(measure(&frame));
    if measure(&arguments) > room {
        let keep = room.saturating_sub(measure(CUT));
        arguments = arguments.chars().take(keep).collect();
        arguments.push_str(CUT);
    }
    format!("{header}\n{FENCE}\n{arguments}\n{FENCE}\n{footer}")
}

/// The part of a prompt kept once it is decided: everything up to the code block's closing
/// fence. `None` for a text that is not a prompt.
pub(crate) fn body_of(content: &str) -> Option<&str> {
    if content.matches(FENCE).count() < 2 {
        return None;
    }
    let end = content.rfind(FENCE)? + FENCE.len();
    Some(&content[..end])
}

/// The decided prompt: its body (when known) and the outcome, without buttons.
pub(crate) fn closed_content(body: Option<&str>, outcome: &str) -> String {
    let line = inline(outcome);
    match body {
        Some(body) if measure(body) + 1 + measure(&line) <= TextLimit::DISCORD.max => {
            format!("{body}\n{line}")
        }
        _ => line,
    }
}

/// What an edit sends to show a decided prompt: the text, no buttons, nobody pinged.
pub(crate) fn closed_edit(body: Option<&str>, outcome: &str) -> Value {
    json!({
        "content": closed_content(body, outcome),
        "components": [],
        "allowed_mentions": { "parse": [] },
    })
}

/// One action row: Approve (green), Reject (red), Allow in this chat and Always allow (grey), each
/// with its payload.
pub(crate) fn components(approval_id: &str) -> Result<Value, String> {
    let buttons = ChatChoice::BUTTONS
    .into_iter()
    .map(|(choice, label)| {
        let style = match choice {
            ChatChoice::Approve => SUCCESS,
            ChatChoice::Reject => DANGER,
            ChatChoice::AllowHere | ChatChoice::AlwaysAllow => SECONDARY,
        };
        let custom_id = callback_data(choice, approval_id);
        if custom_id.chars().count() > MAX_CUSTOM_ID {
            return Err(format!(
                "the approval id is too long for a Discord button ({} characters, at most {MAX_CUSTOM_ID})",
                custom_id.chars().count()
            ));
        }
        Ok(json!({ "type": BUTTON, "style": style, "label": label, "custom_id": custom_id }))
    })
    .collect::<Result<Vec<Value>, String>>()?;
    Ok(json!([{ "type": ACTION_ROW, "components": buttons }]))
}

/// How a click is answered.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    /// Edit the prompt (callback type 7, or `@original` after a deferral) with this data.
    Update(Value),
    /// Tell only the clicker (callback type 4 with flags 64, or an ephemeral follow-up).
    Private(Value),
}

impl Answer {
    /// The interaction callback that gives this answer within the deadline.
    pub fn callback(&self) -> Value {
        match self {
            Answer::Update(data) => json!({ "type": callback::UPDATE_MESSAGE, "data": data }),
            Answer::Private(data) => json!({ "type": callback::CHANNEL_MESSAGE, "data": data }),
        }
    }
}

/// The answer to a click: a decision (this click's, or an earlier one) closes the prompt for
/// everyone; a refusal is told to the clicker alone and leaves the prompt as it is. `body` is the
/// prompt's body, from the message that was clicked.
pub(crate) fn answer(outcome: &ChoiceOutcome, body: Option<&str>) -> Answer {
    match outcome {
        ChoiceOutcome::Decided(text) | ChoiceOutcome::AlreadyDecided(text) => {
            Answer::Update(closed_edit(body, text))
        }
        ChoiceOutcome::NotAllowed(text) | ChoiceOutcome::NotFound(text) => Answer::Private(json!({
            "content": inline(text),
            "flags": EPHEMERAL,
            "allowed_mentions": { "parse": [] },
        })),
    }
}

/// Acknowledges a click now and edits the prompt later (`@original`).
pub(crate) fn deferred() -> Value {
    json!({ "type": callback::DEFERRED_UPDATE_MESSAGE })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approvals::parse_callback;

    /// What Discord shows for escaped text: a backslash before punctuation is dropped.
    fn shown(text: &str) -> String {
        let mut out = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match chars.peek() {
                Some(next) if c == '\\' && next.is_ascii_punctuation() => {
                    out.push(*next);
                    chars.next();
                }
                _ => out.push(c),
            }
        }
        out
    }

    fn prompt(tool: &str, arguments: &str, requester: &str) -> ApprovalPrompt {
        ApprovalPrompt {
            approval_id: "0b904f9e-530b-4a04-9250-9a3fa2312b75".into(),
            tool: tool.into(),
            summary: "run `ls`".into(),
            arguments: arguments.into(),
            requester: requester.into(),
            expires_in_minutes: 30,
        }
    }

    #[test]
    fn the_prompt_reads_as_given_and_renders_nothing() {
        let content = prompt_content(&prompt("stakpak__run_command", "command: ls", "Ann"));
        assert_eq!(
            content,
            "🔐 The agent wants to run \\`ls\\` (**stakpak\\_\\_run\\_command**)\n```\ncommand: ls\n```\nRequested by Ann · expires in 30 min"
        );
        assert!(shown(&content).contains("**stakpak__run_command**"));

        // Markup in names is shown as text: no mention, masked link, heading or bold.
        let tricky = prompt(
            "x*y*",
            "a",
            "<@&1> [click](https://evil.example) # @everyone",
        );
        let content = prompt_content(&tricky);
        let footer = content.lines().last().expect("footer");
        assert_eq!(
            footer,
            "Requested by \\<\\@&1\\> \\[click\\](https\\://evil.example) \\# \\@everyone · expires in 30 min"
        );
        assert_eq!(
            shown(footer),
            "Requested by <@&1> [click](https://evil.example) # @everyone · expires in 30 min"
        );
        assert!(content.starts_with("🔐 The agent wants to run \\`ls\\` (**x\\*y\\***)\n"));
    }

    #[test]
    fn arguments_cannot_close_their_code_block() {
        let content = prompt_content(&prompt(
            "t",
            "command: echo ```\n# not a heading\n<@123> ````",
            "Ann",
        ));
        assert_eq!(
            content.matches(FENCE).count(),
            2,
            "only the prompt's own fences: {content}"
        );
        assert!(content.contains("\n# not a heading\n<@123> "), "{content}");
        assert_eq!(body_of(&content).map(|b| b.ends_with("\n```")), Some(true));
        assert_eq!(code_safe(""), "(no arguments)");
    }

    #[test]
    fn long_arguments_are_cut_to_fit_one_message() {
        let long = "x".repeat(5000);
        let content = prompt_content(&prompt("t", &long, "Ann"));
        assert!(measure(&content) <= 2000, "{}", measure(&content));
        assert!(content.contains(CUT));
        assert!(content.ends_with("Requested by Ann · expires in 30 min"));
        let closed = closed_content(body_of(&content), "✅ t: approved by Ann (discord)");
        assert!(measure(&closed) <= 2000, "{}", measure(&closed));

        let long_name = "n".repeat(1000);
        let content = prompt_content(&prompt(&long_name, "a", &long_name));
        assert!(measure(&content) <= 2000);
    }

    #[test]
    fn a_decided_prompt_keeps_its_body_and_shows_the_outcome() {
        let content = prompt_content(&prompt("stakpak__run_command", "command: ls", "Ann"));
        let body = body_of(&content);
        let closed = closed_content(body, "✅ stakpak__run_command: approved by Ann (discord)");
        assert_eq!(
            shown(&closed),
            "🔐 The agent wants to run `ls` (**stakpak__run_command**)\n```\ncommand: ls\n```\n✅ stakpak__run_command: approved by Ann (discord)"
        );
        assert_eq!(
            body_of(&closed),
            body,
            "closing twice gives the same message"
        );
        assert_eq!(
            closed_content(
                body_of(&closed),
                "✅ stakpak__run_command: approved by Ann (discord)"
            ),
            closed
        );
        assert_eq!(
            shown(&closed_content(None, "⏱ t: not answered in time, rejected")),
            "⏱ t: not answered in time, rejected"
        );
        assert_eq!(body_of("just text"), None);
    }

    #[test]
    fn four_buttons_carry_the_payloads() {
        let id = "0b904f9e-530b-4a04-9250-9a3fa2312b75";
        let rows = components(id).expect("components");
        let buttons = rows[0]["components"].as_array().expect("buttons");
        assert_eq!(rows[0]["type"], 1);
        type Seen = (String, u64, Option<(ChatChoice, String)>);
        let seen: Vec<Seen> = buttons
            .iter()
            .map(|b| {
                (
                    b["label"].as_str().unwrap_or_default().to_owned(),
                    b["style"].as_u64().unwrap_or_default(),
                    parse_callback(b["custom_id"].as_str().unwrap_or_default()),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("Approve".into(), 3, Some((ChatChoice::Approve, id.into()))),
                ("Reject".into(), 4, Some((ChatChoice::Reject, id.into()))),
                (
                    "Allow in this chat".into(),
                    2,
                    Some((ChatChoice::AllowHere, id.into()))
                ),
                (
                    "Always allow".into(),
                    2,
                    Some((ChatChoice::AlwaysAllow, id.into()))
                ),
            ]
        );
        assert!(components(&"x".repeat(100)).is_err());
    }

    #[test]
    fn decisions_update_the_prompt_and_refusals_stay_private() {
        let decided = answer(
            &ChoiceOutcome::Decided("✅ t: approved by Ann (discord)".into()),
            Some("🔐 p\n```\na\n```"),
        );
        assert_eq!(
            decided.callback(),
            json!({"type": 7, "data": {
                "content": "🔐 p\n```\na\n```\n✅ t\\: approved by Ann (discord)",
                "components": [], "allowed_mentions": {"parse": []}}})
        );
        let already = answer(
            &ChoiceOutcome::AlreadyDecided("Already decided: ✅ t: approved by me (window)".into()),
            None,
        );
        assert!(matches!(already, Answer::Update(ref d) if d["components"] == json!([])));
        let refused = answer(
            &ChoiceOutcome::NotAllowed(
                "Sorry, only Ann or an owner of this bot can decide this request.".into(),
            ),
            Some("🔐 p\n```\na\n```"),
        );
        assert_eq!(
            refused.callback(),
            json!({"type": 4, "data": {
                "content": "Sorry, only Ann or an owner of this bot can decide this request.",
                "flags": 64, "allowed_mentions": {"parse": []}}})
        );
        assert!(matches!(
            answer(&ChoiceOutcome::NotFound("gone".into()), None),
            Answer::Private(_)
        ));
        assert_eq!(deferred(), json!({"type": 6}));
    }
}
