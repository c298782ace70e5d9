//! Approval prompts as a Telegram chat shows them: pure functions from a prompt to the message
//! text, its formatting and its buttons.
//!
//! Nothing is sent with a `parse_mode`: the text is taken exactly as written, so tool arguments
//! (`<b>`, `*`, `` ` ``, `[x](y)` …) can never turn into markup. The little formatting there is —
//! the tool name as code, the arguments as a preformatted block — comes from explicit `entities`
//! whose offsets count UTF-16 units, as the Bot API counts them.

use std::collections::{HashMap, VecDeque};

use super::wire::{Entity, InlineButton, InlineKeyboard};
use crate::approvals::{callback_data, ApprovalPrompt, ChatChoice, ChoiceOutcome};

/// The longest message text, counted in UTF-16 units (the safe reading of "4096 characters").
pub const TEXT_MAX: usize = 4096;
/// The longest text an answer to a button press may show.
pub const ANSWER_MAX: usize = 200;
/// Longest tool name and requester name shown; the arguments get the rest of the message.
const NAME_MAX: usize = 200;

/// The engine's prefix for a click that came after someone else's answer; the prompt message
/// itself just shows how the approval ended.
const ALREADY: &str = "Already decided: ";

/// A message's text with its formatting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    pub entities: Vec<Entity>,
}

/// Builds a text and its entities together, so the offsets always match the text.
#[derive(Default)]
struct Builder {
    text: String,
    units: usize,
    entities: Vec<Entity>,
}

impl Builder {
    fn push(&mut self, text: &str) -> &mut Self {
        self.units += utf16_len(text);
        self.text.push_str(text);
        self
    }

    /// Appends `text` formatted as `kind` (no entity for an empty text: the API refuses those).
    fn styled(&mut self, kind: &'static str, text: &str) -> &mut Self {
        let length = utf16_len(text);
        if length > 0 {
            self.entities.push(Entity {
                kind,
                offset: self.units,
                length,
            });
        }
        self.push(text)
    }

    fn finish(self) -> Rendered {
        Rendered {
            text: self.text,
            entities: self.entities,
        }
    }
}

pub fn utf16_len(text: &str) -> usize {
    text.encode_utf16().count()
}

/// `text` cut to at most `max` UTF-16 units, ending with `…` when cut (never inside a character).
pub fn clip(text: &str, max: usize) -> String {
    if utf16_len(text) <= max {
        return text.to_string();
    }
    let room = max.saturating_sub(1);
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        if used + c.len_utf16() > room {
            break;
        }
        used += c.len_utf16();
        out.push(c);
    }
    if max > 0 {
        out.push('…');
    }
    out
}

/// The prompt: what the call will do, with what exactly, who asked and until when; the same
/// words as [`ApprovalPrompt::text`], with the tool name as code and what will run as a block.
/// What will run is cut to fit one message only when it is longer than one.
pub fn prompt(prompt: &ApprovalPrompt) -> Rendered {
    let head = format!(
        "🔐 The agent wants to {} (",
        clip(&prompt.summary, NAME_MAX)
    );
    let tool = clip(&prompt.tool, NAME_MAX);
    let tail = format!(
        "\nRequested by {} · expires in {} min",
        clip(&prompt.requester, NAME_MAX),
        prompt.expires_in_minutes
    );
    let fixed = utf16_len(&head) + utf16_len(&tool) + 2 + utf16_len(&tail);
    let arguments = clip(&prompt.arguments, TEXT_MAX.saturating_sub(fixed));
    let mut out = Builder::default();
    out.push(&head)
        .styled("code", &tool)
        .push(")\n")
        .styled("pre", &arguments)
        .push(&tail);
    out.finish()
}

/// A prompt once decided: how it ended, and — when the prompt is known — what was asked, without
/// the expiry. No buttons go with it.
pub fn closed(outcome: &str, prompt: Option<&ApprovalPrompt>) -> Rendered {
    let outcome = clip(outcome, NAME_MAX * 2);
    let mut out = Builder::default();
    out.push(&outcome);
    if let Some(prompt) = prompt {
        let tail = format!("\nRequested by {}", clip(&prompt.requester, NAME_MAX));
        let fixed = utf16_len(&outcome) + 1 + utf16_len(&tail);
        let arguments = clip(&prompt.arguments, TEXT_MAX.saturating_sub(fixed));
        out.push("\n").styled("pre", &arguments).push(&tail);
    }
    out.finish()
}

/// Approve and Reject side by side, the wider scopes under them.
pub fn keyboard(approval_id: &str) -> InlineKeyboard {
    let buttons: Vec<InlineButton> = ChatChoice::BUTTONS
        .iter()
        .map(|(choice, label)| InlineButton {
            text: label.to_string(),
            callback_data: callback_data(*choice, approval_id),
        })
        .collect();
    InlineKeyboard {
        inline_keyboard: buttons.chunks(2).map(<[InlineButton]>::to_vec).collect(),
    }
}

/// How the prompt message reads after a click: the outcome for a decision (this click's or an
/// earlier one), nothing for a refusal (the prompt stays as it is).
pub fn message_line(outcome: &ChoiceOutcome) -> Option<&str> {
    match outcome {
        ChoiceOutcome::Decided(line) => Some(line),
        ChoiceOutcome::AlreadyDecided(line) => Some(line.strip_prefix(ALREADY).unwrap_or(line)),
        ChoiceOutcome::NotAllowed(_) | ChoiceOutcome::NotFound(_) => None,
    }
}

/// The answer to a click, shown to the clicker only: a passing notice for a decision, an alert
/// they must dismiss for a refusal.
pub fn answer(outcome: &ChoiceOutcome) -> (String, bool) {
    let alert = matches!(
        outcome,
        ChoiceOutcome::NotAllowed(_) | ChoiceOutcome::NotFound(_)
    );
    (clip(outcome.text(), ANSWER_MAX), alert)
}

/// The prompts this process posted, by chat and message, so a closed prompt still says what was
/// asked. Bounded: the oldest are forgotten (their prompts then close with the outcome alone, as
/// after a restart).
#[derive(Default)]
pub struct Posted {
    order: VecDeque<(String, i64)>,
    prompts: HashMap<(String, i64), ApprovalPrompt>,
}

/// How many posted prompts are remembered.
const REMEMBERED: usize = 512;

impl Posted {
    pub fn remember(&mut self, chat: &str, message_id: i64, prompt: &ApprovalPrompt) {
        let key = (chat.to_string(), message_id);
        if self.prompts.insert(key.clone(), prompt.clone()).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.prompts.remove(&old);
            }
        }
    }

    pub fn get(&self, chat: &str, message_id: i64) -> Option<&ApprovalPrompt> {
        self.prompts.get(&(chat.to_string(), message_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approvals::parse_callback;

    fn sample(arguments: &str) -> ApprovalPrompt {
        ApprovalPrompt {
            approval_id: "0b904f9e-530b-4a04-9250-9a3fa2312b75".into(),
            tool: "stakpak__run_command".into(),
            summary: "run `echo`".into(),
            arguments: arguments.into(),
            requester: "Ann".into(),
            expires_in_minutes: 60,
        }
    }

    /// The text an entity covers.
    fn covered(rendered: &Rendered, entity: &Entity) -> String {
        let units: Vec<u16> = rendered.text.encode_utf16().collect();
        String::from_utf16_lossy(&units[entity.offset..entity.offset + entity.length])
    }

    #[test]
    fn the_prompt_reads_like_the_engine_text_with_code_and_a_block() {
        let p = sample("command: echo 👋 <b>hi</b> *x* _y_ [a](b) `c`\ncwd: /tmp");
        let rendered = prompt(&p);
        assert_eq!(rendered.text, p.text(), "the same words as everywhere else");
        let spans: Vec<(&str, String)> = rendered
            .entities
            .iter()
            .map(|e| (e.kind, covered(&rendered, e)))
            .collect();
        assert_eq!(
            spans,
            vec![
                ("code", "stakpak__run_command".to_string()),
                ("pre", p.arguments.clone()),
            ],
            "offsets count UTF-16 units (the 🔐 counts two)"
        );
    }

    #[test]
    fn long_arguments_are_cut_to_fit_one_message() {
        for arguments in ["x".repeat(10_000), "😀".repeat(5_000)] {
            let rendered = prompt(&sample(&arguments));
            assert!(utf16_len(&rendered.text) <= TEXT_MAX, "fits");
            assert!(
                rendered
                    .text
                    .ends_with("Requested by Ann · expires in 60 min"),
                "who asked and the expiry are kept"
            );
            let block = &rendered.entities[1];
            assert!(covered(&rendered, block).ends_with('…'), "the cut is shown");
            assert!(block.offset + block.length <= utf16_len(&rendered.text));
        }
        let closed = closed("✅ done", Some(&sample(&"y".repeat(9_000))));
        assert!(utf16_len(&closed.text) <= TEXT_MAX);
    }

    #[test]
    fn clipping_never_splits_a_character() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "ab…");
        assert_eq!(clip("😀😀", 3), "😀…", "a surrogate pair stays whole");
        assert_eq!(clip("😀😀", 2), "…");
        assert_eq!(clip("abc", 0), "");
    }

    #[test]
    fn a_closed_prompt_shows_the_outcome_and_what_was_asked() {
        let p = sample("command: ls");
        let line = "✅ stakpak__run_command: approved by Ann (telegram)";
        let rendered = closed(line, Some(&p));
        assert_eq!(
            rendered.text,
            format!("{line}\ncommand: ls\nRequested by Ann")
        );
        assert_eq!(covered(&rendered, &rendered.entities[0]), "command: ls");
        let bare = closed(line, None);
        assert_eq!((bare.text.as_str(), bare.entities.len()), (line, 0));
        let empty = closed(line, Some(&sample("")));
        assert!(empty.entities.is_empty(), "no empty entity");
    }

    #[test]
    fn the_buttons_carry_the_engine_payloads() {
        let id = "0b904f9e-530b-4a04-9250-9a3fa2312b75";
        let rows = keyboard(id).inline_keyboard;
        let buttons: Vec<(&str, Option<(ChatChoice, String)>)> = rows
            .iter()
            .flatten()
            .map(|b| (b.text.as_str(), parse_callback(&b.callback_data)))
            .collect();
        assert_eq!(
            buttons,
            vec![
                ("Approve", Some((ChatChoice::Approve, id.to_string()))),
                ("Reject", Some((ChatChoice::Reject, id.to_string()))),
                (
                    "Allow in this chat",
                    Some((ChatChoice::AllowHere, id.to_string()))
                ),
                (
                    "Always allow",
                    Some((ChatChoice::AlwaysAllow, id.to_string()))
                ),
            ]
        );
        assert_eq!(rows.len(), 2, "two rows of two");
        assert!(rows.iter().flatten().all(|b| b.callback_data.len() <= 64));
    }

    #[test]
    fn clicks_are_answered_and_shown_by_outcome() {
        let line = "✅ t: approved by me (window)";
        let cases = [
            (ChoiceOutcome::Decided(line.into()), Some(line), false),
            (
                ChoiceOutcome::AlreadyDecided(format!("{ALREADY}{line}")),
                Some(line),
                false,
            ),
            (ChoiceOutcome::NotAllowed("Sorry".into()), None, true),
            (ChoiceOutcome::NotFound("Gone".into()), None, true),
        ];
        for (outcome, shown, alert) in cases {
            assert_eq!(message_line(&outcome), shown, "{outcome:?}");
            assert_eq!(answer(&outcome).1, alert, "{outcome:?}");
        }
        let (text, _) = answer(&ChoiceOutcome::NotAllowed("n".repeat(500)));
        assert_eq!(
            utf16_len(&text),
            ANSWER_MAX,
            "a callback answer holds 200 characters"
        );
    }

    #[test]
    fn posted_prompts_are_remembered_within_a_bound() {
        let mut posted = Posted::default();
        for id in 0..(REMEMBERED as i64 + 10) {
            posted.remember("1111", id, &sample("command: ls"));
        }
        assert!(posted.get("1111", 0).is_none(), "the oldest are forgotten");
        assert!(posted.get("1111", REMEMBERED as i64 + 9).is_some());
        assert!(posted.get("2222", REMEMBERED as i64 + 9).is_none());
        assert_eq!(posted.prompts.len(), REMEMBERED);
    }
}
