//! The demo agent (`fake-stakpak --demo`): plain words in, a reply that streams out, and a
//! command — proposed, approved by the person, then "run" with made-up output — when asked to do
//! something. It lets a new user see Switchboard's whole loop before they connect a real
//! `stakpak`. Nothing here runs anything: every output is canned.
//!
//! A text with the contract's markers (`USE_TOOL`, `HOLD`, …) is scripted by them as always.

use std::time::Duration;

use serde_json::json;

use super::script::{Script, ToolRequest, TOOL_PREFIX};

/// How a demo reply streams: in this many pieces over this long.
const DRIP_PIECES: usize = 12;
const DRIP_OVER: Duration = Duration::from_millis(1500);
/// How long the demo's "command" takes to run.
const TOOL_TIME: Duration = Duration::from_millis(1200);

/// What the demo agent says when not asked to run anything.
pub(crate) const GREETING: &str = "Hi! I'm the **demo agent**, standing in for your Stakpak agent: nothing I do touches your machine.\n\n\
Ask me to *check the disk space*, *list the files here* or *show the memory*: I'll propose a command, and Switchboard asks you to approve it before it \"runs\" — here in the chat, on the Approvals page and as a desktop notification.\n\n\
To use your real agent, start `stakpak up` and connect Switchboard to it in Settings → Agent server.";

/// A command the demo knows how to pretend to run: words that ask for it, the command, what it
/// is for, and its made-up output.
struct Known {
    words: &'static [&'static str],
    command: &'static str,
    purpose: &'static str,
    output: &'static str,
    remark: &'static str,
}

const KNOWN: &[Known] = &[
    Known {
        words: &["disk", "space", "storage", "df"],
        command: "df -h",
        purpose: "to see how full the disks are",
        output: "Filesystem      Size  Used Avail Use% Mounted on\n/dev/nvme0n1p2  468G  281G  164G  64% /\n/dev/nvme0n1p1  511M   61M  451M  12% /boot/efi\ntmpfs           7.8G  2.1M  7.8G   1% /tmp",
        remark: "The root filesystem is 64% full with 164 GB free, so there is room to spare.",
    },
    Known {
        words: &["files", "list", "directory", "folder", "ls"],
        command: "ls -la",
        purpose: "to list the files in the working directory",
        output: "total 48\ndrwxr-xr-x  6 you you 4096 Dec  6 09:12 .\ndrwxr-xr-x 28 you you 4096 Dec  5 17:40 ..\ndrwxr-xr-x  8 you you 4096 Dec  6 09:12 .git\n-rw-r--r--  1 you you  812 Dec  3 11:02 Cargo.toml\n-rw-r--r--  1 you you 2310 Dec  6 09:10 README.md\ndrwxr-xr-x  3 you you 4096 Dec  4 16:21 src",
        remark: "It looks like a small Rust project: a `Cargo.toml`, a README and a `src` folder.",
    },
    Known {
        words: &["memory", "ram", "free"],
        command: "free -h",
        purpose: "to see how much memory is in use",
        output: "               total        used        free      shared  buff/cache   available\nMem:            15Gi       6.2Gi       3.1Gi       412Mi       6.3Gi       8.9Gi\nSwap:          2.0Gi          0B       2.0Gi",
        remark: "About 6 GB of 15 GB is in use and nothing is swapped out: memory is fine.",
    },
    Known {
        words: &["uptime", "load", "busy"],
        command: "uptime",
        purpose: "to see how long the machine has been up and how busy it is",
        output: " 09:14:02 up 3 days,  2:41,  2 users,  load average: 0.42, 0.38, 0.35",
        remark: "Up for three days, and the load is low.",
    },
];

/// Words that ask the agent to do something on the machine.
const ACTION_WORDS: &[&str] = &[
    "run", "check", "show", "list", "execute", "how much", "what's", "whats",
];

/// The run for `text`: by markers when it has any, else the demo's own.
pub(crate) fn script(text: &str) -> Script {
    let scripted = Script::parse(text);
    if scripted != Script::default() {
        return scripted;
    }
    let mut script = Script {
        drip: Some((DRIP_PIECES, DRIP_OVER)),
        ..Script::default()
    };
    match command_for(text) {
        Some((command, purpose, output, remark)) => {
            script.tools = vec![ToolRequest {
                name: format!("{TOOL_PREFIX}run_command"),
                arguments: json!({ "command": command }),
            }];
            script.tool_secs = Some(TOOL_TIME);
            script.say_first_text = Some(format!("I'll run `{command}` {purpose}."));
            script.tool_results = vec![output.clone()];
            script.reply_text = Some(format!(
                "Here is what `{command}` shows:\n\n```\n{output}\n```\n\n{remark}\n\n_(The demo agent made this output up; nothing ran.)_"
            ));
            script.rejected_text = Some(format!(
                "All right, I won't run `{command}`. Nothing ran on your machine — that is what the approval is for."
            ));
        }
        None => script.reply_text = Some(GREETING.to_owned()),
    }
    script
}

/// The command a text asks for, with what it is for, its output and a remark on it: a command in
/// backticks, else one the demo knows by its words (when the text asks for an action).
fn command_for(text: &str) -> Option<(String, String, String, String)> {
    let lower = text.to_lowercase();
    if let Some(command) = backticked(text) {
        let known = KNOWN.iter().find(|k| k.command == command);
        return Some(match known {
            Some(k) => (command, k.purpose.into(), k.output.into(), k.remark.into()),
            None => (
                command.clone(),
                "as you asked".into(),
                format!("(demo) `{command}` would print its output here"),
                "In the demo nothing really runs; with your real agent you would see the command's real output."
                    .into(),
            ),
        });
    }
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .collect();
    let asks = ACTION_WORDS.iter().any(|a| lower.contains(a));
    let known = KNOWN
        .iter()
        .find(|k| k.words.iter().any(|w| words.contains(w)))?;
    // "disk" alone is a topic; "check the disk" is a request. A known command's name is both.
    (asks || words.contains(&known.command.split(' ').next().unwrap_or_default())).then(|| {
        (
            known.command.to_owned(),
            known.purpose.to_owned(),
            known.output.to_owned(),
            known.remark.to_owned(),
        )
    })
}

fn backticked(text: &str) -> Option<String> {
    let start = text.find('`')? + 1;
    let len = text[start..].find('`')?;
    let command = text[start..start + len].trim();
    (!command.is_empty() && !command.contains('\n')).then(|| command.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(text: &str) -> Option<String> {
        script(text)
            .tools
            .first()
            .and_then(|t| t.arguments["command"].as_str().map(str::to_owned))
    }

    #[test]
    fn the_demo_proposes_a_command_only_when_asked_to_act() {
        assert_eq!(
            command("Can you check the disk space?").as_deref(),
            Some("df -h")
        );
        assert_eq!(command("list the files here").as_deref(), Some("ls -la"));
        assert_eq!(
            command("how much memory is free").as_deref(),
            Some("free -h")
        );
        assert_eq!(
            command("please run `git status`").as_deref(),
            Some("git status")
        );
        assert_eq!(
            command("df"),
            Some("df -h".into()),
            "a command's own name asks for it"
        );
        assert_eq!(
            command("I like my new disk"),
            None,
            "a topic is not a request"
        );
        assert_eq!(command("hello"), None);
    }

    #[test]
    fn the_demo_streams_its_words_and_keeps_the_markers() {
        let hello = script("hello");
        assert_eq!(hello.reply_text.as_deref(), Some(GREETING));
        assert!(hello.drip.is_some(), "the reply streams");
        let asked = script("check the disk");
        assert!(asked
            .say_first_text
            .as_deref()
            .is_some_and(|s| s.contains("df -h")));
        assert!(asked
            .reply_text
            .as_deref()
            .is_some_and(|s| s.contains("64% /")));
        assert_eq!(asked.tool_results.len(), 1);
        let marked = script("HOLD gate check the disk");
        assert_eq!(
            marked.hold.as_deref(),
            Some("gate"),
            "markers still script the run"
        );
        assert!(marked.tools.is_empty() && marked.reply_text.is_none());
    }
}
