//! Tool approvals as people see and answer them: the states an approval goes through, who
//! answered where, the scopes an answer can have, the prompt shown in a chat and its buttons'
//! payloads. Pure values and functions; [`policy`] decides what needs a person, [`show`] says what
//! a call will do.

pub mod policy;
pub mod show;

use serde::{Deserialize, Serialize};

pub use show::{readable_arguments, Preview};

/// Where an approval is in its life. Stored as text; an unknown value is an error, never a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum ApprovalState {
    /// Waiting for a person.
    #[serde(rename = "pending")]
    Pending,
    /// A person (or a rule) approved it.
    #[serde(rename = "accept")]
    Accepted,
    /// A person rejected it.
    #[serde(rename = "reject")]
    Rejected,
    /// Nobody answered in time; it was rejected.
    #[serde(rename = "expired")]
    Expired,
    /// It stopped waiting without an answer from here: its run ended, or the server ran or
    /// rejected the call on another client's word. The note says which.
    #[serde(rename = "closed")]
    Closed,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Accepted => "accept",
            ApprovalState::Rejected => "reject",
            ApprovalState::Expired => "expired",
            ApprovalState::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<ApprovalState> {
        Some(match text {
            "pending" => ApprovalState::Pending,
            "accept" => ApprovalState::Accepted,
            "reject" => ApprovalState::Rejected,
            "expired" => ApprovalState::Expired,
            "closed" => ApprovalState::Closed,
            _ => return None,
        })
    }

    pub fn is_pending(self) -> bool {
        self == ApprovalState::Pending
    }
}

impl std::fmt::Display for ApprovalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an answer came from. A chat answer always comes from the approval's own channel (a
/// button decides only the approval shown in its chat), so the channel is not repeated here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum Surface {
    /// The desktop window's Approvals page (or its inline prompt).
    Window,
    /// A native notification's action.
    Notification,
    /// The tray menu.
    Tray,
    /// A button, or a command, in the chat the approval was asked in.
    Chat,
    /// The headless binary's command line.
    Cli,
    /// The engine itself: a policy, a rule, a timeout, the run ending.
    Engine,
}

impl Surface {
    pub fn as_str(self) -> &'static str {
        match self {
            Surface::Window => "window",
            Surface::Notification => "notification",
            Surface::Tray => "tray",
            Surface::Chat => "chat",
            Surface::Cli => "cli",
            Surface::Engine => "engine",
        }
    }

    pub fn parse(text: &str) -> Option<Surface> {
        Some(match text {
            "window" => Surface::Window,
            "notification" => Surface::Notification,
            "tray" => Surface::Tray,
            "chat" => Surface::Chat,
            "cli" => Surface::Cli,
            "engine" => Surface::Engine,
            _ => return None,
        })
    }

    /// How a person reads it, naming the chat's channel for a chat answer.
    pub fn label(self, channel: &str) -> String {
        match self {
            Surface::Chat if !channel.is_empty() => channel.to_string(),
            other => other.as_str().to_string(),
        }
    }
}

impl std::fmt::Display for Surface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who answered: the name shown to people and, for a chat user, their platform id (names can be
/// chosen to look like someone else's; the audit log keeps both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl Actor {
    /// A person at the desktop (or the command line), known by name only.
    pub fn local(name: impl Into<String>) -> Actor {
        Actor {
            name: name.into(),
            id: None,
        }
    }

    /// A chat user.
    pub fn peer(peer: &crate::model::Peer) -> Actor {
        Actor {
            name: peer.label().to_string(),
            id: Some(peer.id.clone()),
        }
    }
}

/// A person's answer to a waiting call, with how far it reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Answer {
    /// Run this call, and ask again next time.
    AllowOnce,
    /// Run this call and let the same tool pass in this conversation until it starts a new
    /// session.
    AllowConversation,
    /// Run this call and create a rule. `pattern` narrows it to matching arguments; a rule is
    /// limited to the approval's channel unless `global` (only the desktop may make one global).
    AllowAlways {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pattern: Option<String>,
        #[serde(default)]
        global: bool,
    },
    Reject,
}

impl Answer {
    /// Whether the call runs.
    pub fn accepts(&self) -> bool {
        !matches!(self, Answer::Reject)
    }

    pub fn state(&self) -> ApprovalState {
        if self.accepts() {
            ApprovalState::Accepted
        } else {
            ApprovalState::Rejected
        }
    }
}

/// What a person can answer from a chat button.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatChoice {
    Approve,
    /// Approve, and let the tool pass in this conversation until it starts over.
    AllowHere,
    Reject,
    /// Approve, and create a rule for this channel (owners only).
    AlwaysAllow,
}

impl ChatChoice {
    /// The buttons of a prompt, in the order they are shown, with their labels.
    pub const BUTTONS: [(ChatChoice, &'static str); 4] = [
        (ChatChoice::Approve, "Approve"),
        (ChatChoice::Reject, "Reject"),
        (ChatChoice::AllowHere, "Allow in this chat"),
        (ChatChoice::AlwaysAllow, "Always allow"),
    ];

    fn code(self) -> &'static str {
        match self {
            ChatChoice::Approve => "a",
            ChatChoice::AllowHere => "c",
            ChatChoice::Reject => "r",
            ChatChoice::AlwaysAllow => "w",
        }
    }

    pub fn label(self) -> &'static str {
        Self::BUTTONS
            .iter()
            .find(|(choice, _)| *choice == self)
            .map_or("", |(_, label)| label)
    }

    /// The answer this button gives.
    pub fn answer(self) -> Answer {
        match self {
            ChatChoice::Approve => Answer::AllowOnce,
            ChatChoice::AllowHere => Answer::AllowConversation,
            ChatChoice::Reject => Answer::Reject,
            ChatChoice::AlwaysAllow => Answer::AllowAlways {
                pattern: None,
                global: false,
            },
        }
    }
}

/// The payload of a chat button: short enough for Telegram's 64-byte `callback_data`.
pub fn callback_data(choice: ChatChoice, approval_id: &str) -> String {
    format!("sb:{}:{approval_id}", choice.code())
}

/// Reads a button payload back; `None` for anything that is not one of ours.
pub fn parse_callback(data: &str) -> Option<(ChatChoice, String)> {
    let rest = data.strip_prefix("sb:")?;
    let (code, id) = rest.split_once(':')?;
    let choice = match code {
        "a" => ChatChoice::Approve,
        "c" => ChatChoice::AllowHere,
        "r" => ChatChoice::Reject,
        "w" => ChatChoice::AlwaysAllow,
        _ => return None,
    };
    (!id.is_empty() && id.len() <= 64).then(|| (choice, id.to_string()))
}

/// What a chat shows for a waiting tool call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalPrompt {
    pub approval_id: String,
    pub tool: String,
    /// What the call will do, in a line: "run `cargo test`", "edit src/main.rs".
    pub summary: String,
    /// What will run, whole where it fits: the command, a diff, the start of a new file, or the
    /// arguments (secrets masked only where nothing could hide behind the mask).
    pub arguments: String,
    pub requester: String,
    pub expires_in_minutes: u64,
}

impl ApprovalPrompt {
    /// The prompt as plain text, for platforms (or fallbacks) without rich formatting.
    pub fn text(&self) -> String {
        format!(
            "🔐 The agent wants to {} ({})\n{}\nRequested by {} · expires in {} min",
            self.summary, self.tool, self.arguments, self.requester, self.expires_in_minutes
        )
    }
}

/// The answer to a click, shown to the person who clicked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChoiceOutcome {
    /// The click decided it; the text says what was decided.
    Decided(String),
    /// Someone answered first; the text says who, where and what.
    AlreadyDecided(String),
    /// The clicker may not decide this; nothing changed.
    NotAllowed(String),
    /// No such pending request (expired long ago, or a stale button).
    NotFound(String),
}

impl ChoiceOutcome {
    pub fn text(&self) -> &str {
        match self {
            ChoiceOutcome::Decided(t)
            | ChoiceOutcome::AlreadyDecided(t)
            | ChoiceOutcome::NotAllowed(t)
            | ChoiceOutcome::NotFound(t) => t,
        }
    }
}

/// How an approval ended, in the words every surface uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<'a> {
    pub tool: &'a str,
    pub state: ApprovalState,
    pub decided_by: &'a str,
    /// Where it was decided, as a person reads it ("window", "telegram").
    pub surface: &'a str,
    /// Why it closed, for [`ApprovalState::Closed`]; the scope of an approval otherwise.
    pub note: Option<&'a str>,
}

impl Outcome<'_> {
    /// One line for the chat message and notifications.
    pub fn line(&self) -> String {
        let Outcome {
            tool,
            state,
            decided_by,
            surface,
            note,
        } = self;
        let note = note.filter(|n| !n.is_empty());
        match state {
            ApprovalState::Accepted => match note {
                Some(scope) => format!("✅ {tool}: approved by {decided_by} ({surface}), {scope}"),
                None => format!("✅ {tool}: approved by {decided_by} ({surface})"),
            },
            ApprovalState::Rejected => format!("❌ {tool}: rejected by {decided_by} ({surface})"),
            ApprovalState::Expired => format!("⏱ {tool}: not answered in time, rejected"),
            ApprovalState::Closed => format!(
                "⏹ {tool}: no longer waiting — {}",
                note.unwrap_or("the run ended")
            ),
            ApprovalState::Pending => format!("🔐 {tool}: waiting for a decision"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks_round_trip_and_reject_junk() {
        let id = "0b904f9e-530b-4a04-9250-9a3fa2312b75";
        for (choice, _) in ChatChoice::BUTTONS {
            let data = callback_data(choice, id);
            assert!(data.len() <= 64, "fits Telegram's callback_data");
            assert_eq!(parse_callback(&data), Some((choice, id.to_string())));
        }
        for junk in ["", "sb:", "sb:x:1", "sb:a:", "approve:17", "sb:a"] {
            assert_eq!(parse_callback(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn states_and_surfaces_read_back_what_they_write_and_nothing_else() {
        for state in [
            ApprovalState::Pending,
            ApprovalState::Accepted,
            ApprovalState::Rejected,
            ApprovalState::Expired,
            ApprovalState::Closed,
        ] {
            assert_eq!(ApprovalState::parse(state.as_str()), Some(state));
            let json = serde_json::to_string(&state).expect("serialises");
            assert_eq!(json, format!("\"{}\"", state.as_str()), "wire = store form");
        }
        assert_eq!(ApprovalState::parse("approved"), None);
        for surface in [
            Surface::Window,
            Surface::Notification,
            Surface::Tray,
            Surface::Chat,
            Surface::Cli,
            Surface::Engine,
        ] {
            assert_eq!(Surface::parse(surface.as_str()), Some(surface));
        }
        assert_eq!(Surface::parse("telegram"), None);
        assert_eq!(Surface::Chat.label("telegram"), "telegram");
        assert_eq!(Surface::Window.label("telegram"), "window");
    }

    #[test]
    fn outcome_lines_say_who_where_and_why() {
        let line = |state, note| {
            Outcome {
                tool: "run_command",
                state,
                decided_by: "Ann",
                surface: "telegram",
                note,
            }
            .line()
        };
        assert_eq!(
            line(ApprovalState::Accepted, None),
            "✅ run_command: approved by Ann (telegram)"
        );
        assert_eq!(
            line(
                ApprovalState::Accepted,
                Some("allowed in this chat from now on")
            ),
            "✅ run_command: approved by Ann (telegram), allowed in this chat from now on"
        );
        assert_eq!(
            line(ApprovalState::Rejected, None),
            "❌ run_command: rejected by Ann (telegram)"
        );
        assert_eq!(
            line(ApprovalState::Closed, Some("the run ended (completed)")),
            "⏹ run_command: no longer waiting — the run ended (completed)"
        );
        assert!(line(ApprovalState::Expired, None).contains("not answered in time"));
    }

    #[test]
    fn chat_buttons_give_their_scopes() {
        assert_eq!(ChatChoice::Approve.answer(), Answer::AllowOnce);
        assert_eq!(ChatChoice::AllowHere.answer(), Answer::AllowConversation);
        assert_eq!(
            ChatChoice::AlwaysAllow.answer(),
            Answer::AllowAlways {
                pattern: None,
                global: false
            },
            "a rule made from a chat is limited to that channel"
        );
        assert!(!ChatChoice::Reject.answer().accepts());
        assert_eq!(ChatChoice::AllowHere.label(), "Allow in this chat");
    }
}
