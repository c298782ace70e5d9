//! Chat commands: what Switchboard answers itself, without the agent. Pure: reading a message as a
//! command, and the list the platforms' command menus show. Anything else that starts with `/`
//! goes to the agent as before.

/// A command a person sent in a chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Status,
    Stop,
    New,
    Sessions,
    /// `/resume N`: the N-th of `/sessions` (1 the newest).
    Resume(usize),
    /// `/model` shows; `/model NAME` sets; `/model default` clears.
    Model(Option<String>),
    /// `/approve [id]`, `/deny [id]`: the short id shown in the prompt and in `/status`.
    Approve(Option<String>),
    Deny(Option<String>),
    Usage,
    /// A known command used wrongly: the text says how it is used.
    Misused(&'static str),
}

/// One entry of the command menu: the name without `/`, and one line about it.
pub const MENU: &[(&str, &str)] = &[
    ("help", "What Switchboard's commands do"),
    (
        "status",
        "The agent server, this conversation's session, run and queue",
    ),
    ("stop", "Stop the running task and drop the queued messages"),
    ("new", "Start a new agent session for this conversation"),
    ("sessions", "This conversation's recent sessions"),
    ("resume", "Switch back to session N of /sessions"),
    (
        "model",
        "Show or set this conversation's model (default clears it)",
    ),
    (
        "approve",
        "Approve the waiting tool call (or the one with this id)",
    ),
    (
        "deny",
        "Reject the waiting tool call (or the one with this id)",
    ),
    ("usage", "Tokens of the last run and of this conversation"),
];

/// Reads `text` as a command. `bot_username` lets `/status@MyBot` (Telegram groups) count and
/// makes a command addressed to another bot none of ours.
pub fn parse(text: &str, bot_username: Option<&str>) -> Option<Command> {
    let text = text.trim();
    let rest = text.strip_prefix('/')?;
    let (head, args) = match rest.split_once(char::is_whitespace) {
        Some((head, args)) => (head, args.trim()),
        None => (rest, ""),
    };
    let name = match head.split_once('@') {
        Some((name, bot)) => {
            if !bot_username.is_some_and(|ours| ours.eq_ignore_ascii_case(bot)) {
                return None;
            }
            name
        }
        None => head,
    };
    let arg = || (!args.is_empty()).then(|| args.to_owned());
    let no_args = |command: Command, usage: &'static str| {
        if args.is_empty() {
            command
        } else {
            Command::Misused(usage)
        }
    };
    Some(match name.to_ascii_lowercase().as_str() {
        "help" | "start" => Command::Help,
        "status" => no_args(Command::Status, "/status takes nothing after it."),
        "stop" | "cancel" => no_args(Command::Stop, "/stop takes nothing after it."),
        "new" | "reset" => no_args(Command::New, "/new takes nothing after it."),
        "sessions" => no_args(Command::Sessions, "/sessions takes nothing after it."),
        "resume" => match args.parse::<usize>() {
            Ok(n) if n >= 1 => Command::Resume(n),
            _ => Command::Misused("Use /resume N, with N from /sessions (1 is the newest)."),
        },
        "model" => Command::Model(arg()),
        "approve" => Command::Approve(arg()),
        "deny" | "reject" => Command::Deny(arg()),
        "usage" => no_args(Command::Usage, "/usage takes nothing after it."),
        _ => return None,
    })
}

/// The answer to `/help`.
pub fn help_text() -> String {
    let mut text = String::from("Switchboard's commands (anything else goes to the agent):");
    for (name, line) in MENU {
        let usage = match *name {
            "resume" => "/resume N",
            "model" => "/model [name]",
            "approve" => "/approve [id]",
            "deny" => "/deny [id]",
            _ => "",
        };
        let shown = if usage.is_empty() {
            format!("/{name}")
        } else {
            usage.to_owned()
        };
        text.push_str(&format!("\n{shown} — {line}"));
    }
    text
}

/// The short id of an approval, as `/status` and `/approve` show and take it.
pub fn short_id(approval_id: &str) -> String {
    approval_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(6)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// A token count as a person reads it: `950`, `1.2k`, `12k`, `4.1M`.
pub fn tokens(n: u64) -> String {
    match n {
        0..=999 => n.to_string(),
        1_000..=9_999 => format!("{:.1}k", n as f64 / 1000.0),
        10_000..=999_999 => format!("{}k", n / 1000),
        _ => format!("{:.1}M", n as f64 / 1_000_000.0),
    }
}

/// The line under a reply when `usage_footer` is on.
pub fn usage_footer(usage: &crate::agent::Usage) -> String {
    format!(
        "— {} tokens ({} in, {} out)",
        tokens(usage.total_tokens),
        tokens(usage.prompt_tokens),
        tokens(usage.completion_tokens)
    )
}

/// A duration as a person says it: `45 s`, `3 min`, `2 h 5 min`.
pub fn for_how_long(ms: i64) -> String {
    let secs = (ms.max(0) / 1000) as u64;
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        _ => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_read_and_everything_else_is_left_alone() {
        let cases: &[(&str, Option<Command>)] = &[
            ("/help", Some(Command::Help)),
            ("  /STATUS ", Some(Command::Status)),
            ("/stop", Some(Command::Stop)),
            ("/new", Some(Command::New)),
            ("/sessions", Some(Command::Sessions)),
            ("/resume 2", Some(Command::Resume(2))),
            (
                "/resume",
                Some(Command::Misused(
                    "Use /resume N, with N from /sessions (1 is the newest).",
                )),
            ),
            (
                "/resume 0",
                Some(Command::Misused(
                    "Use /resume N, with N from /sessions (1 is the newest).",
                )),
            ),
            ("/model", Some(Command::Model(None))),
            (
                "/model gpt-5 mini",
                Some(Command::Model(Some("gpt-5 mini".into()))),
            ),
            ("/approve", Some(Command::Approve(None))),
            (
                "/approve ab12cd",
                Some(Command::Approve(Some("ab12cd".into()))),
            ),
            ("/deny x", Some(Command::Deny(Some("x".into())))),
            ("/usage", Some(Command::Usage)),
            ("/status@switchbot", Some(Command::Status)),
            ("/status@otherbot", None),
            (
                "/stop now",
                Some(Command::Misused("/stop takes nothing after it.")),
            ),
            ("/deploy prod", None),
            ("please /stop", None),
            ("stop", None),
            ("/", None),
        ];
        for (text, want) in cases {
            assert_eq!(&parse(text, Some("SwitchBot")), want, "{text}");
        }
    }

    #[test]
    fn help_lists_every_command_and_short_ids_are_six_characters() {
        let help = help_text();
        for (name, _) in MENU {
            assert!(help.contains(&format!("/{name}")), "{name} in {help}");
        }
        assert_eq!(short_id("3F2A-91bc-77"), "3f2a91");
        assert_eq!(tokens(950), "950");
        assert_eq!(tokens(1234), "1.2k");
        assert_eq!(tokens(12_345), "12k");
        assert_eq!(tokens(4_100_000), "4.1M");
        assert_eq!(for_how_long(45_000), "45 s");
        assert_eq!(for_how_long(185_000), "3 min");
        assert_eq!(for_how_long(7_500_000), "2 h 5 min");
    }
}
