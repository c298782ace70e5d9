//! The scripted "model": what a run does, read from markers in the latest user text.
//!
//! This is the marker language of the contract (shared with the real `stakpak` rig) plus a few
//! markers only the fake understands. Everything here is pure so it is tested with tables.

use std::time::Duration;

use serde_json::Value;

/// Tools the fake treats as read-only and auto-approves under the default (`custom`) policy, the way
/// the real server auto-approves its safe tools. Names without the `stakpak__` prefix.
pub const AUTO_APPROVED_TOOLS: &[&str] = &[
    "view",
    "search_docs",
    "search_memory",
    "read_rulebooks",
    "local_code_search",
    "get_all_tasks",
    "get_task_details",
];

/// Prefix the server puts on its own tools.
pub const TOOL_PREFIX: &str = "stakpak__";

/// Largest `BIG_REPLY`, so a typo cannot eat the machine's memory.
const MAX_BIG_REPLY: usize = 16 * 1024 * 1024;
/// Largest `LONG_REPLY` paragraph count.
const MAX_LONG_REPLY: usize = 10_000;

/// What a run does, parsed from the user text.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Script {
    pub tools: Vec<ToolRequest>,
    pub long_reply: Option<usize>,
    pub big_reply: Option<usize>,
    pub fail_500: bool,
    pub fail_500_once: bool,
    pub slow: Option<Duration>,
    /// How long the POST that starts the run takes to answer (the run itself starts at once).
    pub slow_post: Option<Duration>,
    pub silent_end: bool,
    pub empty_reply: bool,
    pub hold: Option<String>,
    pub drop_stream: bool,
    pub malformed_sse: bool,
    pub say_first: bool,
    pub drop_waiting: bool,
    /// `DRIP <n> <secs>`: the reply in `n` deltas spread over `secs` (a model that streams).
    pub drip: Option<(usize, Duration)>,
    /// `TOOL_SECS <secs>`: each approved tool takes that long to run.
    pub tool_secs: Option<Duration>,
    /// The demo agent's own words (never from markers): what it says before its calls, what its
    /// calls return, its reply, and its reply when its call was rejected.
    pub say_first_text: Option<String>,
    pub tool_results: Vec<String>,
    pub reply_text: Option<String>,
    pub rejected_text: Option<String>,
}

/// What `SAY_FIRST` makes the model say before its tool calls.
pub(crate) const SAY_FIRST_TEXT: &str = "I'll look into it.";

/// One `USE_TOOL <name> <json-args>` line.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ToolRequest {
    /// Name as the server lists it (`stakpak__run_command`).
    pub name: String,
    pub arguments: Value,
}

impl Script {
    /// Reads the markers of a user text. Markers are whole words and may appear anywhere; `USE_TOOL`
    /// takes the rest of its line, and other markers inside a `USE_TOOL` line are not markers.
    pub(crate) fn parse(text: &str) -> Script {
        let mut script = Script::default();
        for line in text.lines() {
            if let Some(tool) = parse_use_tool(line) {
                script.tools.push(tool);
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            for (i, word) in words.iter().enumerate() {
                let next = words.get(i + 1).copied();
                match *word {
                    "LONG_REPLY" => {
                        let n = next.and_then(|w| w.parse::<usize>().ok()).unwrap_or(6);
                        script.long_reply = Some(n.clamp(1, MAX_LONG_REPLY));
                    }
                    "BIG_REPLY" => {
                        if let Some(n) = next.and_then(|w| w.parse::<usize>().ok()) {
                            script.big_reply = Some(n.min(MAX_BIG_REPLY));
                        }
                    }
                    "FAIL_500" => script.fail_500 = true,
                    "FAIL_500_ONCE" => script.fail_500_once = true,
                    "SLOW" => {
                        let secs = next.and_then(|w| w.parse::<f64>().ok());
                        if let Some(secs) = secs.filter(|s| s.is_finite() && *s >= 0.0) {
                            script.slow = Some(Duration::from_secs_f64(secs.min(3600.0)));
                        }
                    }
                    "SLOW_POST" => {
                        let secs = next.and_then(|w| w.parse::<f64>().ok());
                        if let Some(secs) = secs.filter(|s| s.is_finite() && *s >= 0.0) {
                            script.slow_post = Some(Duration::from_secs_f64(secs.min(3600.0)));
                        }
                    }
                    "SILENT_END" => script.silent_end = true,
                    "EMPTY_REPLY" => script.empty_reply = true,
                    "HOLD" => {
                        if let Some(name) = next {
                            script.hold = Some(name.to_string());
                        }
                    }
                    "DROP_STREAM" => script.drop_stream = true,
                    "MALFORMED_SSE" => script.malformed_sse = true,
                    "SAY_FIRST" => script.say_first = true,
                    "TOOL_SECS" => {
                        let secs = next.and_then(|w| w.parse::<f64>().ok());
                        if let Some(secs) = secs.filter(|s| s.is_finite() && *s >= 0.0) {
                            script.tool_secs = Some(Duration::from_secs_f64(secs.min(600.0)));
                        }
                    }
                    "DRIP" => {
                        let n = next.and_then(|w| w.parse::<usize>().ok());
                        let secs = words
                            .get(i + 2)
                            .and_then(|w| w.parse::<f64>().ok())
                            .filter(|s| s.is_finite() && *s >= 0.0);
                        if let (Some(n), Some(secs)) = (n, secs) {
                            script.drip =
                                Some((n.clamp(1, 1000), Duration::from_secs_f64(secs.min(600.0))));
                        }
                    }
                    "DROP_WAITING" => script.drop_waiting = true,
                    _ => {}
                }
            }
        }
        script
    }
}

fn parse_use_tool(line: &str) -> Option<ToolRequest> {
    let mut search = 0;
    // Find `USE_TOOL` as a whole word, so `MY_USE_TOOL` does not count.
    let start = loop {
        let at = search + line[search..].find("USE_TOOL")?;
        let before_ok = line[..at]
            .chars()
            .next_back()
            .is_none_or(char::is_whitespace);
        let after = &line[at + "USE_TOOL".len()..];
        let after_ok = after.chars().next().is_some_and(char::is_whitespace);
        if before_ok && after_ok {
            break at + "USE_TOOL".len();
        }
        search = at + "USE_TOOL".len();
    };
    let rest = line[start..].trim_start();
    let (name, args) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim()),
        None => (rest, ""),
    };
    if name.is_empty() {
        return None;
    }
    let arguments = if args.is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_str(args).unwrap_or_else(|_| serde_json::json!({ "raw": args }))
    };
    Some(ToolRequest {
        name: prefixed(name),
        arguments,
    })
}

/// `view` → `stakpak__view`; a name that already has the prefix is kept.
pub(crate) fn prefixed(name: &str) -> String {
    if name.starts_with(TOOL_PREFIX) {
        name.to_string()
    } else {
        format!("{TOOL_PREFIX}{name}")
    }
}

fn bare(name: &str) -> &str {
    name.strip_prefix(TOOL_PREFIX).unwrap_or(name)
}

/// Which calls the server approves by itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) enum AutoApprove {
    /// The server default (`auto_approve_mode: custom`): the read-only tools of [`AUTO_APPROVED_TOOLS`].
    #[default]
    ReadOnly,
    All,
    Nothing,
    /// `overrides.auto_approve: [names]`, with or without the prefix.
    Names(Vec<String>),
}

impl AutoApprove {
    pub(crate) fn approves(&self, tool_name: &str) -> bool {
        match self {
            AutoApprove::ReadOnly => AUTO_APPROVED_TOOLS.contains(&bare(tool_name)),
            AutoApprove::All => true,
            AutoApprove::Nothing => false,
            AutoApprove::Names(names) => names.iter().any(|n| bare(n) == bare(tool_name)),
        }
    }
}

/// The reply to a plain message.
pub(crate) fn echo(user_text: &str) -> String {
    format!("echo: {user_text}")
}

/// `n` paragraphs of about 275 characters, separated by blank lines.
pub(crate) fn long_reply(n: usize) -> String {
    (1..=n)
        .map(|i| {
            format!(
                "Paragraph {i} of {n} from the fake model. The text is deterministic so runs are \
                 reproducible. It exists to exercise long, multi-paragraph replies: wrapping, \
                 scrolling, chunking for chat limits, and markdown such as **bold**, `code` and \
                 lists:\n\n- item {i}.a\n- item {i}.b"
            )
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Exactly `bytes` bytes of text that mixes one-, two- and four-byte UTF-8 characters, so that a
/// client reading the stream in pieces meets characters split across reads.
pub(crate) fn big_reply(bytes: usize) -> String {
    const PATTERN: &str = "héllo wörld 👋 café ";
    let mut out = String::with_capacity(bytes);
    for c in PATTERN.chars().cycle() {
        if out.len() + c.len_utf8() > bytes {
            break;
        }
        out.push(c);
    }
    while out.len() < bytes {
        out.push('x');
    }
    out
}

/// The `done: …` reply after a tool cycle: results with their whitespace collapsed, joined by ` | `.
pub(crate) fn done_reply(results: &[String]) -> String {
    let summary = results
        .iter()
        .map(|r| r.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(" | ");
    format!("done: {summary}")
}

/// What a tool "returns" in the fake: deterministic and readable.
///
/// `run_command` prints what its `echo` commands would; `view` shows a one-line file.
pub(crate) fn tool_result(name: &str, arguments: &Value) -> String {
    match bare(name) {
        "run_command" => {
            let command = arguments
                .get("command")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let mut out = String::new();
            for part in command.split([';', '\n']).flat_map(|p| p.split("&&")) {
                if let Some(rest) = part.trim().strip_prefix("echo ") {
                    let rest = rest.trim().trim_matches(|c| c == '"' || c == '\'');
                    out.push_str(rest);
                    out.push('\n');
                }
            }
            if out.is_empty() {
                format!("(fake) ran: {command}\n")
            } else {
                out
            }
        }
        "view" => {
            let path = arguments
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or("<no path>");
            format!("File: {path} (1 lines)\n  1: fake contents of {path}")
        }
        other => format!("(fake) {other} ok"),
    }
}

/// Junk a robust SSE client must survive: a line with no colon, a `data:` that is not JSON, an
/// unknown event name and a stray `retry:` with a bad value.
pub(crate) fn malformed_sse_lines(space: bool, eol: &str) -> String {
    let sep = if space { ": " } else { ":" };
    format!(
        "this line has no colon{eol}\
         data{sep}{{not json{eol}{eol}\
         event{sep}mystery_event{eol}data{sep}{{\"mystery\":true}}{eol}{eol}\
         retry{sep}x{eol}{eol}"
    )
}

/// The provider error text of a scripted model failure.
pub(crate) const FAIL_500_REASON: &str = "Provider error: OpenAI API error 500 Internal Server Error: \
{\"error\": {\"message\": \"fake-llm: scripted failure (FAIL_500)\", \"type\": \"server_error\", \"code\": null}}";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn markers_are_read_anywhere_as_whole_words() {
        let cases: Vec<(&str, Script)> = vec![
            ("hello", Script::default()),
            (
                "please LONG_REPLY",
                Script {
                    long_reply: Some(6),
                    ..Script::default()
                },
            ),
            (
                "LONG_REPLY 3 now",
                Script {
                    long_reply: Some(3),
                    ..Script::default()
                },
            ),
            (
                "x FAIL_500 y",
                Script {
                    fail_500: true,
                    ..Script::default()
                },
            ),
            (
                "FAIL_500_ONCE",
                Script {
                    fail_500_once: true,
                    ..Script::default()
                },
            ),
            (
                "take SLOW 0.25 please",
                Script {
                    slow: Some(Duration::from_millis(250)),
                    ..Script::default()
                },
            ),
            ("SLOW soon", Script::default()),
            (
                "SLOW_POST 2 then",
                Script {
                    slow_post: Some(Duration::from_secs(2)),
                    ..Script::default()
                },
            ),
            (
                "a\nHOLD gate-1 b",
                Script {
                    hold: Some("gate-1".into()),
                    ..Script::default()
                },
            ),
            (
                "SILENT_END EMPTY_REPLY DROP_STREAM MALFORMED_SSE",
                Script {
                    silent_end: true,
                    empty_reply: true,
                    drop_stream: true,
                    malformed_sse: true,
                    ..Script::default()
                },
            ),
            (
                "BIG_REPLY 100",
                Script {
                    big_reply: Some(100),
                    ..Script::default()
                },
            ),
            ("NOT_FAIL_500 FAIL_5000", Script::default()),
        ];
        for (text, want) in cases {
            assert_eq!(Script::parse(text), want, "parsing {text:?}");
        }
    }

    #[test]
    fn use_tool_lines_become_prefixed_calls_in_order() {
        let script = Script::parse(
            "do this\nUSE_TOOL run_command {\"command\": \"echo SLOW 9\"}\n  USE_TOOL view {\"path\":\"/a\"}\nUSE_TOOL stakpak__create\nUSE_TOOL odd not-json",
        );
        assert_eq!(
            script.tools,
            vec![
                ToolRequest {
                    name: "stakpak__run_command".into(),
                    arguments: json!({"command": "echo SLOW 9"}),
                },
                ToolRequest {
                    name: "stakpak__view".into(),
                    arguments: json!({"path": "/a"}),
                },
                ToolRequest {
                    name: "stakpak__create".into(),
                    arguments: json!({}),
                },
                ToolRequest {
                    name: "stakpak__odd".into(),
                    arguments: json!({"raw": "not-json"}),
                },
            ]
        );
        assert_eq!(
            script.slow, None,
            "markers inside a USE_TOOL line are arguments"
        );
    }

    #[test]
    fn auto_approve_policies() {
        let cases = [
            (AutoApprove::ReadOnly, "stakpak__view", true),
            (AutoApprove::ReadOnly, "stakpak__run_command", false),
            (AutoApprove::All, "stakpak__run_command", true),
            (AutoApprove::Nothing, "stakpak__view", false),
            (
                AutoApprove::Names(vec!["run_command".into()]),
                "stakpak__run_command",
                true,
            ),
            (
                AutoApprove::Names(vec!["stakpak__create".into()]),
                "stakpak__view",
                false,
            ),
        ];
        for (policy, tool, want) in cases {
            assert_eq!(policy.approves(tool), want, "{policy:?} on {tool}");
        }
    }

    #[test]
    fn big_reply_has_the_exact_size_and_multibyte_characters() {
        for n in [0, 1, 2, 3, 17, 1000, 4099] {
            let text = big_reply(n);
            assert_eq!(text.len(), n);
        }
        let text = big_reply(200);
        assert!(text.contains('é') && text.contains('👋'));
    }

    #[test]
    fn long_reply_paragraphs_are_about_275_chars() {
        let text = long_reply(6);
        let paragraphs: Vec<&str> = text.split("\n\n- item").collect();
        assert_eq!(text.matches("Paragraph ").count(), 6);
        assert!(paragraphs.len() >= 6);
        let first = text.split("\n\nParagraph").next().unwrap_or_default();
        assert!(
            (240..=320).contains(&first.chars().count()),
            "a paragraph is {} chars",
            first.chars().count()
        );
    }

    #[test]
    fn tool_results_and_summary() {
        let r = tool_result(
            "stakpak__run_command",
            &json!({"command": "echo one; sleep 0.3 && echo 'two'"}),
        );
        assert_eq!(r, "one\ntwo\n");
        assert_eq!(
            tool_result("stakpak__run_command", &json!({"command": "ls"})),
            "(fake) ran: ls\n"
        );
        assert_eq!(
            done_reply(&["one\ntwo\n".into(), "Tool call rejected by user".into()]),
            "done: one two | Tool call rejected by user"
        );
    }
}
