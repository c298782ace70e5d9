//! The configuration file: its schema and defaults, the checks that turn a mistake into a
//! message naming the field and the fix, saving that keeps the user's comments and layout, and
//! where the file, the data and the logs live.
//!
//! Every setting has a default, so an empty file (or none) is a valid configuration, and every
//! table rejects unknown keys, so a misspelt setting is reported instead of silently ignored.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use toml_edit::{DocumentMut, InlineTable, Item, Table, Value};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The Stakpak agent server.
    pub server: ServerConfig,
    /// How conversations run: model, titles, approvals, retention.
    pub gateway: GatewayConfig,
    /// Which conversation a message belongs to.
    pub routing: RoutingConfig,
    /// Switchboard's own gateway HTTP API.
    pub api: ApiConfig,
    /// The chat platforms.
    pub channels: ChannelsConfig,
    /// Desktop notifications.
    pub notifications: NotificationsConfig,
    /// The desktop app's own settings (the quick chat).
    pub desktop: DesktopConfig,
    /// Photos, files and voice notes people send.
    pub media: MediaConfig,
}

/// `[server]`: the Stakpak agent server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The server's base URL.
    pub url: String,
    /// Its bearer token; empty when the server has none.
    pub token: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:4096".to_owned(),
            token: String::new(),
        }
    }
}

/// `[gateway]`: how conversations run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// A model override sent with each message; empty for the server's default.
    pub model: String,
    /// The title of a new session; placeholders `{channel} {peer} {chat_type} {chat_id}`.
    pub title_template: String,
    /// How tool calls are approved.
    pub approval_mode: ApprovalMode,
    /// Tool names accepted without asking (in `allowlist` mode).
    pub approval_allowlist: Vec<String>,
    /// A waiting approval is rejected after this long.
    pub approval_timeout_minutes: u64,
    /// A conversation mapping unused this long is pruned.
    pub prune_after_hours: u64,
    /// How long a watch notification's context waits for a reply.
    pub delivery_context_ttl_hours: u64,
    /// How long finished journal rows and the decisions log are kept.
    pub journal_retention_days: u64,
    /// A line under each reply in the chat with the tokens its run used.
    pub usage_footer: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            model: String::new(),
            title_template: "{channel} / {peer}".to_owned(),
            approval_mode: ApprovalMode::default(),
            approval_allowlist: Vec::new(),
            approval_timeout_minutes: 30,
            prune_after_hours: 168,
            delivery_context_ttl_hours: 4,
            journal_retention_days: 30,
            usage_footer: false,
        }
    }
}

/// `[routing]`: which conversation (routing key) a message belongs to.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// How direct messages are grouped when no binding matches.
    pub dm_scope: DmScope,
    /// Explicit routes, tried before the defaults.
    pub bindings: Vec<Binding>,
}

/// `[[routing.bindings]]`: route a peer, a group, or a whole channel to a routing key.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(default, deny_unknown_fields)]
pub struct Binding {
    /// The channel it applies to: `telegram`, `slack` or `discord`.
    pub channel: String,
    /// The routing key (conversation) the matching messages go to.
    pub routing_key: String,
    /// A direct peer id to match.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_id"
    )]
    #[cfg_attr(feature = "ts", ts(optional = nullable))]
    pub direct: Option<String>,
    /// A group id to match (also matches that group's threads).
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_id"
    )]
    #[cfg_attr(feature = "ts", ts(optional = nullable))]
    pub group: Option<String>,
}

/// `[api]`: Switchboard's gateway HTTP API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// The loopback address and port it listens on.
    pub listen: String,
    /// Its bearer token; generated and saved on first start when empty.
    pub token: String,
    /// A second address for the Stakpak watch scheduler, which replaces a gateway URL on
    /// `localhost` or `127.0.0.1` with its own server's: `auto` (127.0.0.2 and the port of
    /// `listen`, when `listen` is on 127.0.0.1), `off`, or an address and port.
    pub scheduler_listen: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:4097".to_owned(),
            token: String::new(),
            scheduler_listen: "auto".to_owned(),
        }
    }
}

impl ApiConfig {
    /// Where to listen for the watch scheduler, given where the API itself listens (`bound`).
    pub fn scheduler_addr(&self, bound: SocketAddr) -> Option<SocketAddr> {
        match self.scheduler_listen.trim() {
            "" | "off" => None,
            "auto" => match bound {
                SocketAddr::V4(v4) if *v4.ip() == std::net::Ipv4Addr::LOCALHOST => Some(
                    SocketAddr::from((std::net::Ipv4Addr::new(127, 0, 0, 2), v4.port())),
                ),
                // Any other address is one the scheduler keeps already.
                _ => None,
            },
            explicit => explicit.parse().ok(),
        }
    }
}

/// The `[notifications]` table for `~/.stakpak/autopilot.toml` that sends the watch scheduler's
/// notifications through Switchboard at `addr`. No token is written: the scheduler sends its
/// server's token, which Switchboard accepts; only a server run with `--no-auth` needs
/// `gateway_token` (Switchboard's `[api].token`), as the comment says.
pub fn autopilot_notifications(addr: &SocketAddr, config: &Config) -> String {
    let (channel, chat) = default_delivery(config);
    let chat = chat.unwrap_or_else(|| "<chat id>".to_owned());
    format!(
        "[notifications]\ngateway_url = \"http://{addr}\"\nchannel = \"{channel}\"\nchat_id = \"{chat}\"\n\
         # Only for a server run with --no-auth: gateway_token = Switchboard's [api].token\n"
    )
}

/// `[channels]`: the chat platforms; a missing section means the platform is not set up.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(default, deny_unknown_fields)]
pub struct ChannelsConfig {
    /// `[channels.telegram]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional = nullable))]
    pub telegram: Option<TelegramConfig>,
    /// `[channels.slack]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional = nullable))]
    pub slack: Option<SlackConfig>,
    /// `[channels.discord]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional = nullable))]
    pub discord: Option<DiscordConfig>,
}

/// `[channels.telegram]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(default, deny_unknown_fields)]
pub struct TelegramConfig {
    /// Whether the adapter runs.
    pub enabled: bool,
    /// The bot token from @BotFather.
    pub token: String,
    /// The Bot API base URL (a local Bot API server or a proxy can stand in).
    pub api_base: String,
    /// How unknown senders in direct messages are treated.
    pub dm_policy: DmPolicy,
    /// User ids admitted without pairing.
    #[serde(deserialize_with = "ids")]
    pub allowed_users: Vec<String>,
    /// User ids who may decide approvals and admit others from a chat.
    #[serde(deserialize_with = "ids")]
    pub owners: Vec<String>,
    /// Who may approve a tool call from the chat: `auto` (owners when there are any, else the
    /// person who asked), `requester` or `owners`.
    pub approvers: Approvers,
    /// In groups, answer only when mentioned (or replied to).
    pub require_mention: bool,
    /// How the reply reaches the chat while the agent works: `auto` (the platform's own way of
    /// showing a reply as it is written), `paragraphs` (each finished turn as its own message),
    /// `edit` (one message that grows as the agent writes), or `off` (the whole reply when the
    /// run ends).
    pub streaming: Streaming,
    /// While the reply grows (`auto`, `edit`): the tool that runs, as a line under it (Slack: a
    /// task card).
    pub show_tools: bool,
    /// Group ids (Telegram chats, Slack channels) where the bot answers; empty: none.
    #[serde(deserialize_with = "ids")]
    pub groups: Vec<String>,
    /// Groups where anyone may talk to the agent, admitted or not (the others need admitted
    /// senders).
    #[serde(deserialize_with = "ids")]
    pub open_groups: Vec<String>,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            token: String::new(),
            api_base: "https://api.telegram.org".to_owned(),
            dm_policy: DmPolicy::default(),
            allowed_users: Vec::new(),
            owners: Vec::new(),
            approvers: Approvers::Auto,
            require_mention: true,
            streaming: Streaming::Auto,
            show_tools: true,
            groups: Vec::new(),
            open_groups: Vec::new(),
        }
    }
}

/// `[channels.slack]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(default, deny_unknown_fields)]
pub struct SlackConfig {
    /// Whether the adapter runs.
    pub enabled: bool,
    /// The bot token (`xoxb-…`) for the Web API.
    pub bot_token: String,
    /// The app-level token (`xapp-…`) for Socket Mode.
    pub app_token: String,
    /// The Web API base URL.
    pub api_base: String,
    /// How unknown senders in direct messages are treated.
    pub dm_policy: DmPolicy,
    /// User ids admitted without pairing.
    #[serde(deserialize_with = "ids")]
    pub allowed_users: Vec<String>,
    /// User ids who may decide approvals and admit others from a chat.
    #[serde(deserialize_with = "ids")]
    pub owners: Vec<String>,
    /// Who may approve a tool call from the chat: `auto` (owners when there are any, else the
    /// person who asked), `requester` or `owners`.
    pub approvers: Approvers,
    /// In channels, answer only when mentioned (or in a thread it is part of).
    pub require_mention: bool,
    /// How the reply reaches the chat while the agent works: `auto` (the platform's own way of
    /// showing a reply as it is written), `paragraphs` (each finished turn as its own message),
    /// `edit` (one message that grows as the agent writes), or `off` (the whole reply when the
    /// run ends).
    pub streaming: Streaming,
    /// While the reply grows (`auto`, `edit`): the tool that runs, as a line under it (Slack: a
    /// task card).
    pub show_tools: bool,
    /// Group ids (Telegram chats, Slack channels) where the bot answers; empty: none.
    #[serde(deserialize_with = "ids")]
    pub groups: Vec<String>,
    /// Groups where anyone may talk to the agent, admitted or not (the others need admitted
    /// senders).
    #[serde(deserialize_with = "ids")]
    pub open_groups: Vec<String>,
}

impl Default for SlackConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bot_token: String::new(),
            app_token: String::new(),
            api_base: "https://slack.com/api".to_owned(),
            dm_policy: DmPolicy::default(),
            allowed_users: Vec::new(),
            owners: Vec::new(),
            approvers: Approvers::Auto,
            require_mention: true,
            streaming: Streaming::Auto,
            show_tools: true,
            groups: Vec::new(),
            open_groups: Vec::new(),
        }
    }
}

/// `[channels.discord]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(default, deny_unknown_fields)]
pub struct DiscordConfig {
    /// Whether the adapter runs.
    pub enabled: bool,
    /// The bot token from the Developer Portal.
    pub token: String,
    /// The REST API base URL.
    pub api_base: String,
    /// How unknown senders in direct messages are treated.
    pub dm_policy: DmPolicy,
    /// User ids admitted without pairing.
    #[serde(deserialize_with = "ids")]
    pub allowed_users: Vec<String>,
    /// User ids who may decide approvals and admit others from a chat.
    #[serde(deserialize_with = "ids")]
    pub owners: Vec<String>,
    /// Who may approve a tool call from the chat: `auto` (owners when there are any, else the
    /// person who asked), `requester` or `owners`.
    pub approvers: Approvers,
    /// In guild channels, answer only when mentioned (or in a thread it is part of).
    pub require_mention: bool,
    /// How the reply reaches the chat while the agent works: `auto` (the platform's own way of
    /// showing a reply as it is written), `paragraphs` (each finished turn as its own message),
    /// `edit` (one message that grows as the agent writes), or `off` (the whole reply when the
    /// run ends).
    pub streaming: Streaming,
    /// While the reply grows (`auto`, `edit`): the tool that runs, as a line under it (Slack: a
    /// task card).
    pub show_tools: bool,
    /// Guild ids where it may answer; empty: none.
    #[serde(deserialize_with = "ids")]
    pub guilds: Vec<String>,
    /// Guilds or channels where anyone may talk to the agent, admitted or not (elsewhere senders
    /// must be admitted).
    #[serde(deserialize_with = "ids")]
    pub open_groups: Vec<String>,
}

impl Default for DiscordConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            token: String::new(),
            api_base: "https://discord.com/api/v10".to_owned(),
            dm_policy: DmPolicy::default(),
            allowed_users: Vec::new(),
            owners: Vec::new(),
            approvers: Approvers::Auto,
            require_mention: true,
            streaming: Streaming::Auto,
            show_tools: true,
            guilds: Vec::new(),
            open_groups: Vec::new(),
        }
    }
}

/// `[notifications]`: desktop notifications.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Whether native notifications are shown at all.
    pub enabled: bool,
    /// Hold notifications until turned off.
    pub do_not_disturb: bool,
    /// Start of the daily quiet hours, `HH:MM`; empty for none.
    pub quiet_hours_start: String,
    /// End of the daily quiet hours, `HH:MM`; empty for none.
    pub quiet_hours_end: String,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            do_not_disturb: false,
            quiet_hours_start: String::new(),
            quiet_hours_end: String::new(),
        }
    }
}

impl NotificationsConfig {
    /// The quiet hours as minutes after midnight `(start, end)`, or `None` when not set (or not
    /// valid, which [`Config::validate`] reports). The end may be before the start: the quiet
    /// hours then run over midnight.
    pub fn quiet_hours(&self) -> Option<(u16, u16)> {
        Some((
            parse_hhmm(&self.quiet_hours_start)?,
            parse_hhmm(&self.quiet_hours_end)?,
        ))
    }
}

/// `[media]`: photos, files and voice notes people send the bot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// The largest file fetched, in megabytes (Telegram's bots get at most 20).
    pub max_mb: u64,
    /// The most attachments taken from one message; the rest are left, and the chat is told.
    pub max_files: u64,
    /// A program that writes a voice note's transcript to its standard output, run with the
    /// audio file's path in place of `{file}` (or after its arguments): for example a local
    /// whisper.cpp, `whisper-cli -m /models/ggml-base.bin -nt -f {file}`. Empty: voice notes go
    /// to the agent as files.
    pub transcribe_command: String,
    /// How long a transcription may take, in seconds.
    pub transcribe_timeout_secs: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_mb: 20,
            max_files: 10,
            transcribe_command: String::new(),
            transcribe_timeout_secs: 120,
        }
    }
}

impl MediaConfig {
    /// The transcriber's program and arguments for `file`; `None` when there is none. The
    /// command is split into words like a shell would (quotes group words) but never run by a
    /// shell, so a file name cannot become a command.
    pub fn transcriber(&self, file: &str) -> Option<Result<Vec<String>, String>> {
        let command = self.transcribe_command.trim();
        if command.is_empty() {
            return None;
        }
        Some(split_words(command).map(|mut words| {
            let mut placed = false;
            for word in &mut words {
                if word.contains("{file}") {
                    *word = word.replace("{file}", file);
                    placed = true;
                }
            }
            if !placed {
                words.push(file.to_owned());
            }
            words
        }))
    }
}

/// Splits a command line into words: whitespace separates, single and double quotes group,
/// a backslash escapes the next character outside single quotes.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => word.push(c),
            (_, '\\') => match chars.next() {
                Some(next) => {
                    word.push(next);
                    in_word = true;
                }
                None => return Err("it ends with a lone backslash".into()),
            },
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("a {q} quote is not closed"));
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// `[desktop]`: the desktop app's own settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(default, deny_unknown_fields)]
pub struct DesktopConfig {
    /// The keys that open the quick chat from anywhere (`Ctrl+Alt+Space`); empty turns it off.
    pub quick_chat_shortcut: String,
}

impl Default for DesktopConfig {
    fn default() -> Self {
        Self {
            quick_chat_shortcut: "Ctrl+Alt+Space".to_owned(),
        }
    }
}

/// A keyboard shortcut: modifiers and one key, written `Ctrl+Alt+Space`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortcut {
    pub ctrl: bool,
    pub alt: bool,
    pub shift: bool,
    /// The Super (Windows, Logo) key.
    pub logo: bool,
    /// The key, by its canonical name: `A`…`Z`, `0`…`9`, `F1`…`F12`, `Space`, `Enter`, `Tab`,
    /// `Backspace`, `Escape`, `Slash`, `Period`, `Comma`, `Minus`, `Equal`, `Semicolon`, `Quote`,
    /// `Backquote`, `BracketLeft`, `BracketRight`, `Backslash`.
    pub key: String,
}

/// Named keys a shortcut may use besides letters, digits and F-keys: the canonical name, other
/// spellings people write, and the XKB keysym the desktop portal wants.
const NAMED_KEYS: &[(&str, &[&str], &str)] = &[
    ("Space", &["space", "spacebar"], "space"),
    ("Enter", &["enter", "return"], "Return"),
    ("Tab", &["tab"], "Tab"),
    ("Backspace", &["backspace"], "BackSpace"),
    ("Escape", &["escape", "esc"], "Escape"),
    ("Slash", &["slash", "/"], "slash"),
    ("Period", &["period", "."], "period"),
    ("Comma", &["comma", ","], "comma"),
    ("Minus", &["minus", "-"], "minus"),
    ("Equal", &["equal", "="], "equal"),
    ("Semicolon", &["semicolon", ";"], "semicolon"),
    ("Quote", &["quote", "'"], "apostrophe"),
    ("Backquote", &["backquote", "`"], "grave"),
    ("BracketLeft", &["bracketleft", "["], "bracketleft"),
    ("BracketRight", &["bracketright", "]"], "bracketright"),
    ("Backslash", &["backslash", "\\"], "backslash"),
];

impl Shortcut {
    /// Reads `Ctrl+Alt+Space` (any case; `Control`, `Super`/`Meta`/`Logo` also read). At least
    /// one of Ctrl, Alt and Super is needed: a shortcut that works from anywhere must not take
    /// a key people type.
    pub fn parse(text: &str) -> Result<Shortcut, String> {
        let mut shortcut = Shortcut {
            ctrl: false,
            alt: false,
            shift: false,
            logo: false,
            key: String::new(),
        };
        let parts: Vec<&str> = text.split('+').map(str::trim).collect();
        let Some((key, modifiers)) = parts.split_last() else {
            return Err("it is empty".into());
        };
        for modifier in modifiers {
            let flag = match modifier.to_ascii_lowercase().as_str() {
                "ctrl" | "control" => &mut shortcut.ctrl,
                "alt" => &mut shortcut.alt,
                "shift" => &mut shortcut.shift,
                "super" | "meta" | "logo" | "win" => &mut shortcut.logo,
                "" => return Err("it has an empty part (two + in a row?)".into()),
                other => {
                    return Err(format!(
                        "{other:?} is not a modifier; use Ctrl, Alt, Shift or Super"
                    ))
                }
            };
            *flag = true;
        }
        let lower = key.to_ascii_lowercase();
        shortcut.key = if key.chars().count() == 1 && key.chars().all(|c| c.is_ascii_alphanumeric())
        {
            key.to_ascii_uppercase()
        } else if let Some(n) = lower
            .strip_prefix('f')
            .and_then(|n| n.parse::<u8>().ok())
            .filter(|n| (1..=12).contains(n))
        {
            format!("F{n}")
        } else if let Some((name, _, _)) = NAMED_KEYS.iter().find(|(name, spellings, _)| {
            name.eq_ignore_ascii_case(key) || spellings.contains(&lower.as_str())
        }) {
            (*name).to_owned()
        } else if key.is_empty() {
            return Err("it has no key after the modifiers (e.g. Ctrl+Alt+Space)".into());
        } else {
            return Err(format!(
                "{key:?} is not a key it knows; use a letter, a digit, F1–F12, Space, Enter or a punctuation key"
            ));
        };
        if !(shortcut.ctrl || shortcut.alt || shortcut.logo) {
            return Err("it needs Ctrl, Alt or Super, or it would take a key you type".into());
        }
        Ok(shortcut)
    }

    fn modifiers(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        [
            (self.ctrl, ("Ctrl", "CTRL")),
            (self.alt, ("Alt", "ALT")),
            (self.shift, ("Shift", "SHIFT")),
            (self.logo, ("Super", "LOGO")),
        ]
        .into_iter()
        .filter_map(|(on, names)| on.then_some(names))
    }

    /// The trigger the desktop portal is offered (`CTRL+ALT+space`: its modifiers and the XKB
    /// keysym name).
    pub fn portal_trigger(&self) -> String {
        let key = match NAMED_KEYS.iter().find(|(name, _, _)| *name == self.key) {
            Some((_, _, keysym)) => (*keysym).to_owned(),
            None if self.key.len() == 1 => self.key.to_ascii_lowercase(),
            None => self.key.clone(),
        };
        self.modifiers()
            .map(|(_, portal)| portal)
            .chain([key.as_str()])
            .collect::<Vec<_>>()
            .join("+")
    }
}

impl std::fmt::Display for Shortcut {
    /// The canonical form, `Ctrl+Alt+Space`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (name, _) in self.modifiers() {
            write!(f, "{name}+")?;
        }
        f.write_str(&self.key)
    }
}

/// Parses `HH:MM` (24-hour) into minutes after midnight.
fn parse_hhmm(text: &str) -> Option<u16> {
    let (hours, minutes) = text.split_once(':')?;
    let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(hours) || !two_digits(minutes) {
        return None;
    }
    let (hours, minutes): (u16, u16) = (hours.parse().ok()?, minutes.parse().ok()?);
    (hours < 24 && minutes < 60).then_some(hours * 60 + minutes)
}

/// The error of parsing one of the configuration's keyword enums: says what was wrong and lists
/// the accepted words, so it can be shown as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} \"{value}\"; use one of {expected}")]
pub struct ParseKeywordError {
    what: &'static str,
    value: String,
    expected: String,
}

/// Declares an enum written in the file as a snake_case word, with `Display`, `FromStr` and
/// serde implementations that share one table of names. Deserializing goes through `FromStr`
/// so that a wrong word gets the message that lists the right ones.
macro_rules! keyword_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $($(#[$variant_meta:meta])* $variant:ident = $word:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        #[cfg_attr(feature = "ts", derive(ts_rs::TS))]
        pub enum $name {
            $($(#[$variant_meta])* #[cfg_attr(feature = "ts", ts(rename = $word))] $variant,)+
        }

        impl $name {
            /// Every value, in the order the documentation lists them.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The word used in the file, the UI and the API.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseKeywordError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($word => Ok($name::$variant),)+
                    _ => Err(ParseKeywordError {
                        what: $what,
                        value: text.to_owned(),
                        expected: [$($word),+].join(", "),
                    }),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(de::Error::custom)
            }
        }
    };
}

keyword_enum! {
    /// How the agent's tool calls are approved.
    pub enum ApprovalMode ("approval mode") {
        /// Calls matched by an allow rule are accepted; the rest wait for a person.
        #[default]
        Ask = "ask",
        /// Names on `approval_allowlist` are accepted, the rest rejected.
        Allowlist = "allowlist",
        /// Every call is accepted.
        AllowAll = "allow_all",
        /// Every call is rejected.
        DenyAll = "deny_all",
    }
}

keyword_enum! {
    /// How direct messages map to conversations when no binding matches.
    pub enum DmScope ("DM scope") {
        /// All direct messages share one conversation, `main`.
        Main = "main",
        /// One conversation per peer across channels: `dm:{peer}`.
        PerPeer = "per_peer",
        /// One conversation per channel and peer: `{channel}:dm:{peer}`.
        #[default]
        PerChannelPeer = "per_channel_peer",
    }
}

keyword_enum! {
    /// How a direct message from a sender not on the allowlist is treated.
    pub enum DmPolicy ("DM policy") {
        /// The sender gets a pairing code and waits for a person to admit them.
        #[default]
        Pairing = "pairing",
        /// Only listed senders are answered; others are ignored.
        Allowlist = "allowlist",
        /// Anyone may talk to the agent.
        Open = "open",
    }
}

keyword_enum! {
    /// How a reply reaches the chat while the run goes on.
    pub enum Streaming ("streaming") {
        /// The platform's own way to show a reply as it is written: Slack's streaming message
        /// (with the tools as task cards), a Telegram draft in a private chat, else one message
        /// that grows as `edit` does.
        #[default]
        Auto = "auto",
        /// Each finished turn (from a server that streams tokens, each finished paragraph; code
        /// fences kept whole) as its own message, as soon as it is done.
        Paragraphs = "paragraphs",
        /// One message that grows as the agent writes (edited about once a second), with a line
        /// for the tool that runs; a reply past the platform's limit goes on in a new message.
        Edit = "edit",
        /// Nothing until the run ends, then the whole reply.
        Off = "off",
    }
}

keyword_enum! {
    /// Who may approve a tool call from a chat (an owner always may; so may the desktop).
    pub enum Approvers ("approvers") {
        /// `owners` when the channel has owners, else `requester`.
        #[default]
        Auto = "auto",
        /// The person who asked, or an owner.
        Requester = "requester",
        /// Only an owner: someone who is not one cannot approve their own request.
        Owners = "owners",
    }
}

/// A platform id written either as a string or as a TOML integer (Telegram ids are numbers,
/// and people copy them without quotes); kept as a string either way.
struct Id(String);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;

        impl Visitor<'_> for IdVisitor {
            type Value = Id;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an id, as a string or a whole number")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Id, E> {
                Ok(Id(value.to_owned()))
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Id, E> {
                Ok(Id(value.to_string()))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Id, E> {
                Ok(Id(value.to_string()))
            }
        }

        deserializer.deserialize_any(IdVisitor)
    }
}

fn ids<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let ids = Vec::<Id>::deserialize(deserializer)?;
    Ok(ids.into_iter().map(|Id(id)| id).collect())
}

fn optional_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Id>::deserialize(deserializer)?.map(|Id(id)| id))
}

/// Why the configuration could not be read, used or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A setting is wrong; `message` says what is wrong and how to fix it.
    #[error("{path}: {field}: {message}")]
    Invalid {
        /// The configuration file.
        path: PathBuf,
        /// The setting's dotted path (`gateway.approval_mode`), or `line N` for a syntax error.
        field: String,
        /// What is wrong and the fix.
        message: String,
    },
    /// The file cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The configuration file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

fn invalid(path: &Path, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_owned(),
        field: field.into(),
        message: message.into(),
    }
}

/// The placeholders a session title may use.
const TITLE_PLACEHOLDERS: [&str; 4] = ["channel", "peer", "chat_type", "chat_id"];

/// The platforms Switchboard has adapters for, as they are named in the file.
const CHANNEL_NAMES: [&str; 3] = ["telegram", "slack", "discord"];

impl Config {
    /// Parses and validates the text of a configuration file; `path` is only used in messages.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config = parse(text, path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// Reads, parses and validates the configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, path)
    }

    /// Like [`Config::load`], but a missing file gives the defaults; the flag says whether the
    /// file existed.
    pub fn load_or_default(path: &Path) -> Result<(Config, bool), ConfigError> {
        match fs::read_to_string(path) {
            Ok(text) => Ok((Self::from_toml_str(&text, path)?, true)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok((Config::default(), false)),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Checks what the types alone cannot: addresses, ranges, templates, bindings, quiet hours
    /// and the credentials of enabled channels. Reports the first problem found.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let fail = |field: &str, message: String| Err(invalid(path, field, message));

        if let Err(message) = check_http_url(&self.server.url, "http://127.0.0.1:4096") {
            return fail("server.url", message);
        }

        let gateway = &self.gateway;
        if let Err(message) = check_title_template(&gateway.title_template) {
            return fail("gateway.title_template", message);
        }
        let durations = [
            (
                "approval_timeout_minutes",
                gateway.approval_timeout_minutes,
                "minutes",
                30,
            ),
            ("prune_after_hours", gateway.prune_after_hours, "hours", 168),
            (
                "delivery_context_ttl_hours",
                gateway.delivery_context_ttl_hours,
                "hours",
                4,
            ),
            (
                "journal_retention_days",
                gateway.journal_retention_days,
                "days",
                30,
            ),
        ];
        for (name, value, unit, default) in durations {
            if value == 0 {
                return fail(
                    &format!("gateway.{name}"),
                    format!("must be at least 1 ({unit}); the default is {default}"),
                );
            }
        }
        if let Some(index) = gateway
            .approval_allowlist
            .iter()
            .position(|n| n.trim().is_empty())
        {
            return fail(
                &format!("gateway.approval_allowlist[{index}]"),
                "empty tool name; remove it or write the tool's name, e.g. \"stakpak__view\""
                    .to_owned(),
            );
        }

        for (index, binding) in self.routing.bindings.iter().enumerate() {
            let field = |name: &str| format!("routing.bindings[{index}].{name}");
            if binding.channel.is_empty() {
                return fail(
                    &field("channel"),
                    "empty; set the channel the binding applies to, e.g. telegram, slack or \
                     discord"
                        .to_owned(),
                );
            }
            // Channel names are not a closed list (the engine also runs in-memory channels),
            // but they are always lower-case words, and a binding spelt otherwise would
            // silently never match.
            let word =
                |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
            if !binding.channel.chars().all(word) {
                return fail(
                    &field("channel"),
                    format!(
                        "\"{}\" is not a channel name; write it in lower case, e.g. telegram, \
                         slack or discord",
                        binding.channel
                    ),
                );
            }
            if binding.routing_key.trim().is_empty() {
                return fail(
                    &field("routing_key"),
                    "empty; set the conversation the matching messages go to, e.g. \"ops\""
                        .to_owned(),
                );
            }
            if binding.direct.is_some() && binding.group.is_some() {
                return fail(
                    &field("group"),
                    "a binding matches either a direct peer or a group, not both; \
                     split it into two bindings"
                        .to_owned(),
                );
            }
            for (name, id) in [("direct", &binding.direct), ("group", &binding.group)] {
                if id.as_deref().is_some_and(|id| id.trim().is_empty()) {
                    return fail(
                        &field(name),
                        format!(
                            "empty; set the {name} id, or remove {name} to bind the whole channel"
                        ),
                    );
                }
            }
        }

        // Another address than loopback is allowed (the API warns when it starts): the token
        // still guards every route.
        if self.api.listen.parse::<SocketAddr>().is_err() {
            return fail(
                "api.listen",
                format!(
                    "\"{}\" is not an IP address and port; use e.g. 127.0.0.1:4097",
                    self.api.listen
                ),
            );
        }

        let scheduler = self.api.scheduler_listen.trim();
        if !matches!(scheduler, "" | "auto" | "off") && scheduler.parse::<SocketAddr>().is_err() {
            return fail(
                "api.scheduler_listen",
                format!(
                    "\"{scheduler}\" is not an IP address and port; use \"auto\", \"off\" or e.g. 127.0.0.2:4097"
                ),
            );
        }

        for name in CHANNEL_NAMES {
            self.validate_channel(name, path)?;
            self.check_approvers(name, path)?;
        }

        let notifications = &self.notifications;
        let times = [
            (
                "quiet_hours_start",
                &notifications.quiet_hours_start,
                "quiet_hours_end",
            ),
            (
                "quiet_hours_end",
                &notifications.quiet_hours_end,
                "quiet_hours_start",
            ),
        ];
        for (name, value, other) in times {
            let field = format!("notifications.{name}");
            if value.is_empty() {
                let other_value = if name == "quiet_hours_start" {
                    &notifications.quiet_hours_end
                } else {
                    &notifications.quiet_hours_start
                };
                if !other_value.is_empty() {
                    return fail(
                        &field,
                        format!(
                            "empty while {other} is set; set both (HH:MM, e.g. 22:00 and 07:00) \
                             or neither"
                        ),
                    );
                }
            } else if parse_hhmm(value).is_none() {
                return fail(
                    &field,
                    format!("\"{value}\" is not a time; use HH:MM in 24-hour form, e.g. 22:00"),
                );
            }
        }
        let media = &self.media;
        if !(1..=2000).contains(&media.max_mb) {
            return fail(
                "media.max_mb",
                format!(
                    "{} is out of range; use 1 to 2000 (megabytes; the default is 20)",
                    media.max_mb
                ),
            );
        }
        if !(1..=100).contains(&media.max_files) {
            return fail(
                "media.max_files",
                format!(
                    "{} is out of range; use 1 to 100 (the default is 10)",
                    media.max_files
                ),
            );
        }
        if !(1..=3600).contains(&media.transcribe_timeout_secs) {
            return fail(
                "media.transcribe_timeout_secs",
                format!(
                    "{} is out of range; use 1 to 3600 seconds (the default is 120)",
                    media.transcribe_timeout_secs
                ),
            );
        }
        if let Some(Err(why)) = media.transcriber("f") {
            return fail(
                "media.transcribe_command",
                format!("cannot be read: {why}; quote words with spaces, e.g. \"/opt/my tools/whisper\" -f {{file}}"),
            );
        }
        let shortcut = self.desktop.quick_chat_shortcut.trim();
        if !shortcut.is_empty() {
            if let Err(why) = Shortcut::parse(shortcut) {
                return fail(
                    "desktop.quick_chat_shortcut",
                    format!(
                        "\"{shortcut}\" is not a shortcut: {why}; write it like Ctrl+Alt+Space, or leave it empty to turn the quick chat's shortcut off"
                    ),
                );
            }
        }
        Ok(())
    }

    /// Checks one channel's table alone (its address, and its tokens when it is enabled), for
    /// testing a channel's unsaved settings while the rest of the form may be unfinished.
    pub fn validate_channel(&self, name: &str, path: &Path) -> Result<(), ConfigError> {
        match name {
            "telegram" => {
                if let Some(telegram) = &self.channels.telegram {
                    check_channel(
                        path,
                        "telegram",
                        telegram.enabled,
                        &telegram.api_base,
                        "https://api.telegram.org",
                        &[(
                            "token",
                            &telegram.token,
                            "set the bot token from @BotFather",
                        )],
                    )?;
                }
            }
            "slack" => {
                if let Some(slack) = &self.channels.slack {
                    check_channel(
                        path,
                        "slack",
                        slack.enabled,
                        &slack.api_base,
                        "https://slack.com/api",
                        &[
                            (
                                "bot_token",
                                &slack.bot_token,
                                "set the bot token (xoxb-…) from your Slack app's OAuth & \
                                 Permissions page",
                            ),
                            (
                                "app_token",
                                &slack.app_token,
                                "set the app-level token (xapp-…) with the connections:write \
                                 scope from your Slack app's Basic Information page",
                            ),
                        ],
                    )?;
                }
            }
            "discord" => {
                if let Some(discord) = &self.channels.discord {
                    check_channel(
                        path,
                        "discord",
                        discord.enabled,
                        &discord.api_base,
                        "https://discord.com/api/v10",
                        &[(
                            "token",
                            &discord.token,
                            "set the bot token from the Discord Developer Portal (Bot page)",
                        )],
                    )?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The configuration as TOML, every setting written out, a blank line between sections.
    pub fn to_toml_string(&self) -> String {
        // Serializing these types cannot fail: every field is a string, number, boolean, list
        // or table, and the `None` sections are skipped. The fallback only keeps this total.
        render(self).unwrap_or_else(|error| {
            tracing::error!(%error, "cannot serialize the configuration");
            String::new()
        })
    }

    /// Writes the configuration to `path` atomically (a temporary file renamed over it) with
    /// mode 0600, creating the directory if needed. An existing file is updated in place: only
    /// the values that changed are rewritten, so the user's comments, order and formatting
    /// survive. The configuration is not validated here; callers do that first.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let write_error = |source| ConfigError::Write {
            path: path.to_owned(),
            source,
        };
        let new_text = render(self).map_err(|error| write_error(io::Error::other(error)))?;
        let existing = match fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let contents = match existing {
            Some(text) => match merge_into_file(&text, &new_text, path) {
                Some(merged) => merged,
                None => {
                    // The file is not TOML at all, so there is nothing to preserve in place;
                    // keep a copy so that no hand-written content is lost.
                    let backup = path.with_extension("toml.bak");
                    write_atomically(&backup, &text)?;
                    tracing::warn!(
                        backup = %backup.display(),
                        "the configuration file was not TOML; it was replaced and a copy kept"
                    );
                    new_text
                }
            },
            None => new_text,
        };
        write_atomically(path, &contents)
    }

    /// The channels that have a section in the configuration, enabled or not.
    pub fn channel_names(&self) -> Vec<&'static str> {
        let channels = &self.channels;
        [
            ("telegram", channels.telegram.is_some()),
            ("slack", channels.slack.is_some()),
            ("discord", channels.discord.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect()
    }
}

/// Serializes a configuration for people to read: a blank line before each section, and no
/// header for a section that only holds other sections (`[channels]`).
fn render(config: &Config) -> Result<String, toml::ser::Error> {
    fn space_out(table: &mut Table) {
        let only_tables = table
            .iter()
            .all(|(_, item)| item.is_table() || item.is_array_of_tables());
        if only_tables {
            table.set_implicit(true);
        }
        table.decor_mut().set_prefix("\n");
        for (_, item) in table.iter_mut() {
            match item {
                Item::Table(child) => space_out(child),
                Item::ArrayOfTables(tables) => tables.iter_mut().for_each(space_out),
                _ => {}
            }
        }
    }
    let text = toml::to_string(config)?;
    let Ok(mut document) = text.parse::<DocumentMut>() else {
        // toml_edit reads everything toml writes; if that ever fails, the plain text is still
        // a correct file.
        return Ok(text);
    };
    for (_, item) in document.as_table_mut().iter_mut() {
        match item {
            Item::Table(table) => space_out(table),
            Item::ArrayOfTables(tables) => tables.iter_mut().for_each(space_out),
            _ => {}
        }
    }
    Ok(document.to_string().trim_start().to_owned())
}

/// Deserializes without validating, naming the field of a type error.
fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let deserializer =
        toml::Deserializer::parse(text).map_err(|error| syntax_error(text, path, &error))?;
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let field = error.path().to_string();
        let inner = error.into_inner();
        let line = inner.span().map(|span| line_of(text, span.start));
        // A syntax error found while deserializing has no field to name; only its line.
        if field == "." || field.is_empty() {
            return syntax_error(text, path, &inner);
        }
        let (field, message) = explain(&field, inner.message(), line);
        invalid(path, field, message)
    })
}

fn syntax_error(text: &str, path: &Path, error: &toml::de::Error) -> ConfigError {
    let span = error.span().unwrap_or(0..0);
    let line = line_of(text, span.start);
    let column = text[..span.start.min(text.len())]
        .rsplit('\n')
        .next()
        .map_or(1, |prefix| prefix.chars().count() + 1);
    invalid(
        path,
        format!("line {line}"),
        format!(
            "invalid TOML: {}; fix the syntax at line {line}, column {column}",
            error.message().trim_end()
        ),
    )
}

fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Turns serde's message for a field into one that says what is wrong and the fix.
fn explain(field: &str, message: &str, line: Option<usize>) -> (String, String) {
    let at = line
        .map(|line| format!(" (line {line})"))
        .unwrap_or_default();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        // serde: "unknown field `name`, expected one of `a`, `b`" (or "expected `a`").
        let (name, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let closest = expected
            .iter()
            .copied()
            .min_by_key(|candidate| edit_distance(name, candidate))
            .filter(|candidate| edit_distance(name, candidate) <= 2.max(name.len() / 3));
        // serde_path_to_error names the unknown key itself; should it name only the table,
        // the key is appended.
        let full = if field.ends_with(name) {
            field.to_owned()
        } else if field.is_empty() {
            name.to_owned()
        } else {
            format!("{field}.{name}")
        };
        let fix = match closest {
            Some(candidate) => format!("did you mean {candidate}?"),
            None => format!("remove it, or use one of: {}", expected.join(", ")),
        };
        return (full, format!("unknown setting{at}; {fix}"));
    }
    if message.starts_with("invalid type") || message.starts_with("invalid value") {
        let number = message.contains("expected u64") || message.contains("expected i64");
        let fix = if number && message.starts_with("invalid value") {
            "write a whole number of 0 or more, e.g. 30"
        } else if number {
            "write a whole number without quotes, e.g. 30"
        } else if message.contains("expected an id") {
            "write the id in quotes or as a whole number, e.g. \"12345\""
        } else if message.contains("expected a boolean") {
            "write true or false without quotes"
        } else if message.contains("expected a string") {
            "write the value in double quotes"
        } else if message.contains("expected a sequence") {
            "write a list, e.g. [\"a\", \"b\"]"
        } else if message.contains("expected struct") {
            "write it as a table"
        } else {
            "check the value's type"
        };
        return (field.to_owned(), format!("{message}{at}; {fix}"));
    }
    (field.to_owned(), format!("{message}{at}"))
}

/// The Levenshtein distance, for suggesting the setting a typo meant.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

fn check_http_url(value: &str, example: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("empty; set an http(s) URL, e.g. {example}"));
    }
    match url::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
        _ => Err(format!(
            "\"{value}\" is not an http(s) URL; use e.g. {example}"
        )),
    }
}

/// A chat platform's API base: the bot's token goes with every request, so plain `http` only to
/// this machine (a local Bot API server, a proxy on loopback).
fn check_platform_url(value: &str, example: &str) -> Result<(), String> {
    check_http_url(value, example)?;
    let Ok(url) = url::Url::parse(value) else {
        return Ok(());
    };
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if url.scheme() == "http" && !loopback {
        return Err(format!(
            "\"{value}\" would send the bot token unencrypted; use https (plain http only to this \
             machine, e.g. http://127.0.0.1:8081 for a local Bot API server), e.g. {example}"
        ));
    }
    Ok(())
}

fn check_title_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(
                "a \"{\" without its \"}\"; use placeholders like {channel} and {peer}".to_owned(),
            );
        };
        let name = &after[..close];
        if !TITLE_PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}}; use {{channel}}, {{peer}}, {{chat_type}} or \
                 {{chat_id}}"
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

fn check_channel(
    path: &Path,
    channel: &str,
    enabled: bool,
    api_base: &str,
    default_base: &str,
    tokens: &[(&str, &String, &str)],
) -> Result<(), ConfigError> {
    if let Err(message) = check_platform_url(api_base, default_base) {
        return Err(invalid(
            path,
            format!("channels.{channel}.api_base"),
            message,
        ));
    }
    if !enabled {
        return Ok(());
    }
    for (name, value, how) in tokens {
        if value.trim().is_empty() {
            return Err(invalid(
                path,
                format!("channels.{channel}.{name}"),
                format!("empty; {how}, or set enabled = false"),
            ));
        }
    }
    Ok(())
}

/// The access settings of one channel table, for the checks that span several of them.
struct Access<'a> {
    enabled: bool,
    dm_policy: DmPolicy,
    open_groups: &'a [String],
    owners: &'a [String],
    approvers: Approvers,
}

impl Config {
    fn access(&self, name: &str) -> Option<Access<'_>> {
        let c = &self.channels;
        match name {
            "telegram" => c.telegram.as_ref().map(|t| Access {
                enabled: t.enabled,
                dm_policy: t.dm_policy,
                open_groups: &t.open_groups,
                owners: &t.owners,
                approvers: t.approvers,
            }),
            "slack" => c.slack.as_ref().map(|t| Access {
                enabled: t.enabled,
                dm_policy: t.dm_policy,
                open_groups: &t.open_groups,
                owners: &t.owners,
                approvers: t.approvers,
            }),
            "discord" => c.discord.as_ref().map(|t| Access {
                enabled: t.enabled,
                dm_policy: t.dm_policy,
                open_groups: &t.open_groups,
                owners: &t.owners,
                approvers: t.approvers,
            }),
            _ => None,
        }
    }

    /// In `ask` mode a channel open to strangers (open DMs or open groups) must leave approving
    /// to its owners: otherwise anyone who writes to the bot can approve their own commands.
    fn check_approvers(&self, name: &str, path: &Path) -> Result<(), ConfigError> {
        let Some(access) = self.access(name) else {
            return Ok(());
        };
        if !access.enabled || self.gateway.approval_mode != ApprovalMode::Ask {
            return Ok(());
        }
        let open = if access.dm_policy == DmPolicy::Open {
            "dm_policy = \"open\""
        } else if !access.open_groups.is_empty() {
            "open_groups"
        } else {
            return Ok(());
        };
        if access.owners.is_empty() {
            return Err(invalid(
                path,
                format!("channels.{name}.owners"),
                format!(
                    "empty while {open} lets anyone talk to the agent in ask mode, so anyone \
                     could approve their own tool calls; add your user id to owners (owners \
                     approve), or set dm_policy = \"pairing\" and clear open_groups"
                ),
            ));
        }
        if access.approvers == Approvers::Requester {
            return Err(invalid(
                path,
                format!("channels.{name}.approvers"),
                format!(
                    "\"requester\" lets anyone {open} admits approve their own tool calls; use \
                     \"owners\" (or \"auto\")"
                ),
            ));
        }
        Ok(())
    }
}

/// Sets one setting in the file at `path`, e.g. `set_value(p, "api.token", "abc")`, creating
/// the file and its tables as needed and leaving everything else as it was. The value is
/// written with the setting's type (a number for `gateway.prune_after_hours`, a list for
/// `gateway.approval_allowlist` written as a TOML array), and checked before anything is
/// written.
pub fn set_value(path: &Path, dotted_key: &str, value: &str) -> Result<(), ConfigError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut document: DocumentMut = text
        .parse()
        .map_err(|error: toml_edit::TomlError| toml_edit_syntax_error(&text, path, &error))?;
    let keys: Vec<&str> = dotted_key.split('.').collect();
    let Some((last, parents)) = keys
        .split_last()
        .filter(|_| keys.iter().all(|k| !k.is_empty()))
    else {
        return Err(invalid(
            path,
            dotted_key,
            "not a setting name; write it as section.setting, e.g. api.token",
        ));
    };
    let new_value =
        typed_value(dotted_key, &keys, value).map_err(|m| invalid(path, dotted_key, m))?;

    let mut table = Dest::Table(document.as_table_mut());
    for (depth, key) in parents.iter().enumerate() {
        if !table.contains_key(key) {
            let mut created = Table::new();
            // Only the table that holds the setting gets a header; the ones above it exist
            // through it, as in `[channels.telegram]`.
            created.set_implicit(depth + 1 < parents.len());
            table.insert(key, Item::Table(created));
        }
        table = table.child(key).ok_or_else(|| {
            invalid(
                path,
                keys[..=depth].join("."),
                "is a value in the file where a table is expected; fix or remove it",
            )
        })?;
    }
    match table.get_mut(last) {
        Some(Item::Value(existing)) => {
            let decor = existing.decor().clone();
            *existing = new_value;
            *existing.decor_mut() = decor;
        }
        Some(other) => *other = Item::Value(new_value),
        None => table.insert(last, Item::Value(new_value)),
    }

    let updated = document.to_string();
    // A value of the right type can still be wrong for its setting (an unknown approval
    // mode); refuse to write that. Problems elsewhere in the file are not this call's to fix.
    if let Err(error @ ConfigError::Invalid { .. }) = Config::from_toml_str(&updated, path) {
        if let ConfigError::Invalid { field, .. } = &error {
            if field == dotted_key || field.starts_with(&format!("{dotted_key}[")) {
                return Err(error);
            }
        }
    }
    write_atomically(path, &updated)
}

/// The value to write for `keys`, typed after the setting's default.
fn typed_value(dotted_key: &str, keys: &[&str], value: &str) -> Result<Value, String> {
    // Every optional section is present in the schema so that its settings can be set too.
    let schema = Config {
        channels: ChannelsConfig {
            telegram: Some(TelegramConfig::default()),
            slack: Some(SlackConfig::default()),
            discord: Some(DiscordConfig::default()),
        },
        ..Config::default()
    };
    let schema: DocumentMut = schema
        .to_toml_string()
        .parse()
        .map_err(|error| format!("internal error reading the schema: {error}"))?;
    let mut item = schema.as_item();
    for key in keys {
        item = item
            .as_table_like()
            .and_then(|table| table.get(key))
            .ok_or_else(|| format!("unknown setting {dotted_key}; check its spelling"))?;
    }
    match item {
        Item::Value(Value::String(_)) => Ok(Value::from(value)),
        Item::Value(Value::Integer(_)) => value
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Value::from)
            .ok_or_else(|| format!("\"{value}\" is not a whole number; write e.g. 30")),
        Item::Value(Value::Boolean(_)) => match value.trim() {
            "true" => Ok(Value::from(true)),
            "false" => Ok(Value::from(false)),
            _ => Err(format!("\"{value}\" is not true or false")),
        },
        Item::Value(Value::Array(_)) => match value.parse::<Value>() {
            Ok(array @ Value::Array(_)) => Ok(array),
            _ => Err(format!(
                "\"{value}\" is not a list; write a TOML array, e.g. [\"a\", \"b\"]"
            )),
        },
        _ => Err(format!(
            "{dotted_key} is a section, not a setting; name one of its settings"
        )),
    }
}

fn toml_edit_syntax_error(text: &str, path: &Path, error: &toml_edit::TomlError) -> ConfigError {
    let line = error.span().map_or(1, |span| line_of(text, span.start));
    invalid(
        path,
        format!("line {line}"),
        format!(
            "invalid TOML: {}; fix the syntax at line {line}",
            error.message().trim_end()
        ),
    )
}

/// A table of a document being edited: a `[table]` or an inline `{ … }` table.
enum Dest<'a> {
    Table(&'a mut Table),
    Inline(&'a mut InlineTable),
}

impl<'a> Dest<'a> {
    fn get(&self, key: &str) -> Option<&Item> {
        match self {
            Dest::Table(table) => table.get(key),
            Dest::Inline(table) => toml_edit::TableLike::get(&**table, key),
        }
    }

    fn contains_key(&self, key: &str) -> bool {
        match self {
            Dest::Table(table) => table.contains_key(key),
            Dest::Inline(table) => table.contains_key(key),
        }
    }

    fn keys(&self) -> Vec<String> {
        match self {
            Dest::Table(table) => table.iter().map(|(k, _)| k.to_owned()).collect(),
            Dest::Inline(table) => table.iter().map(|(k, _)| k.to_owned()).collect(),
        }
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut Item> {
        match self {
            Dest::Table(table) => table.get_mut(key),
            Dest::Inline(table) => toml_edit::TableLike::get_mut(&mut **table, key),
        }
    }

    fn remove(&mut self, key: &str) {
        match self {
            Dest::Table(table) => {
                table.remove(key);
            }
            Dest::Inline(table) => {
                table.remove(key);
            }
        }
    }

    /// Inserts an item, converted to an inline value when the table is inline.
    fn insert(&mut self, key: &str, item: Item) {
        match self {
            Dest::Table(table) => {
                table.insert(key, item);
            }
            Dest::Inline(table) => {
                if let Ok(value) = item.into_value() {
                    table.insert(key, value);
                    // Re-space the one-line table, or the new pair is glued to the old ones.
                    table.fmt();
                }
            }
        }
    }

    fn child(self, key: &str) -> Option<Dest<'a>> {
        let item = match self {
            Dest::Table(table) => table.get_mut(key)?,
            Dest::Inline(table) => toml_edit::TableLike::get_mut(table, key)?,
        };
        match item {
            Item::Table(table) => Some(Dest::Table(table)),
            Item::Value(Value::InlineTable(table)) => Some(Dest::Inline(table)),
            _ => None,
        }
    }
}

/// Updates the file's text to hold the values of `new_text`, changing only what differs from
/// what the file said before (defaults included: a setting the file leaves out keeps being left
/// out while its value is the default). Returns `None` when the file is not TOML.
fn merge_into_file(file_text: &str, new_text: &str, path: &Path) -> Option<String> {
    let mut file: DocumentMut = file_text.parse().ok()?;
    let new: DocumentMut = new_text.parse().ok()?;
    // What the file meant, with every default filled in. When it no longer parses as a
    // configuration that is not known exactly; the defaults still say what a setting it
    // leaves out meant.
    let parsed = parse(file_text, path).ok();
    let exact = parsed.is_some();
    let old: DocumentMut = render(&parsed.unwrap_or_default()).ok()?.parse().ok()?;
    merge_table(
        Dest::Table(file.as_table_mut()),
        new.as_table(),
        Some(old.as_table()),
        exact,
    );
    Some(file.to_string())
}

/// Merges `new` into the file's table. `old` is what the file meant before; when `exact` is
/// false it is only the defaults, trusted for the settings the file leaves out.
fn merge_table(
    mut file: Dest<'_>,
    new: &dyn toml_edit::TableLike,
    old: Option<&dyn toml_edit::TableLike>,
    exact: bool,
) {
    // Keys the new configuration does not have go: a section or id it no longer has (a
    // channel removed, a binding's `direct` cleared), or a key the schema does not know,
    // which would make the file fail to load again.
    for key in file.keys() {
        if !new.contains_key(&key) {
            file.remove(&key);
        }
    }
    for (key, new_item) in new.iter() {
        let old_item = old.and_then(|old| old.get(key));
        let unchanged = old_item.is_some_and(|old_item| same(old_item, new_item));
        if unchanged && (exact || file.get(key).is_none()) {
            continue;
        }
        match file.get_mut(key) {
            Some(file_item) => merge_item(file_item, new_item, old_item, exact),
            // A section the file lacks is added with only the settings that differ from
            // what leaving it out meant.
            None if new_item.is_table() => {
                let mut table = Table::new();
                table.set_implicit(true);
                file.insert(key, Item::Table(table));
                if let Some(file_item) = file.get_mut(key) {
                    merge_item(file_item, new_item, old_item, exact);
                }
            }
            None => file.insert(key, detached(new_item)),
        }
    }
}

fn merge_item(file: &mut Item, new: &Item, old: Option<&Item>, exact: bool) {
    if same(file, new) {
        return;
    }
    let old_table = old.and_then(Item::as_table_like);
    match (file, new) {
        (Item::Table(table), new) if new.is_table_like() => {
            if let Some(new_table) = new.as_table_like() {
                merge_table(Dest::Table(table), new_table, old_table, exact);
            }
        }
        (Item::Value(Value::InlineTable(table)), new) if new.is_table_like() => {
            if let Some(new_table) = new.as_table_like() {
                merge_table(Dest::Inline(table), new_table, old_table, exact);
            }
        }
        (Item::ArrayOfTables(tables), Item::ArrayOfTables(new_tables))
            if tables.len() == new_tables.len() =>
        {
            // Same number of bindings: update each in place so comments on them survive.
            let old_tables = old.and_then(Item::as_array_of_tables);
            for (index, (table, new_table)) in tables.iter_mut().zip(new_tables.iter()).enumerate()
            {
                let old_table = old_tables
                    .and_then(|old| old.get(index))
                    .map(|t| t as &dyn toml_edit::TableLike);
                merge_table(Dest::Table(table), new_table, old_table, exact);
            }
        }
        (Item::Value(value), Item::Value(new_value)) => {
            let decor = value.decor().clone();
            *value = new_value.clone();
            *value.decor_mut() = decor;
        }
        (file, new) => *file = detached(new),
    }
}

/// A copy of an item from another document without that document's table positions, so that
/// it is written after its neighbours instead of at a position that meant something elsewhere.
fn detached(item: &Item) -> Item {
    fn table(source: &Table) -> Table {
        let mut copy = Table::new();
        copy.set_implicit(source.is_implicit());
        for (key, item) in source.iter() {
            copy.insert(key, detached(item));
        }
        copy
    }
    match item {
        Item::Table(source) => Item::Table(table(source)),
        Item::ArrayOfTables(source) => {
            let mut copy = toml_edit::ArrayOfTables::new();
            for source in source.iter() {
                copy.push(table(source));
            }
            Item::ArrayOfTables(copy)
        }
        other => other.clone(),
    }
}

/// Whether two items hold the same data, whatever their formatting.
fn same(a: &Item, b: &Item) -> bool {
    plain_item(a) == plain_item(b)
}

fn plain_item(item: &Item) -> serde_json::Value {
    use serde_json::Value as Json;
    let table = |table: &dyn toml_edit::TableLike| {
        Json::Object(
            table
                .iter()
                .map(|(key, item)| (key.to_owned(), plain_item(item)))
                .collect(),
        )
    };
    match item {
        Item::None => Json::Null,
        Item::Value(value) => plain_value(value),
        Item::Table(t) => table(t),
        Item::ArrayOfTables(tables) => Json::Array(tables.iter().map(|t| table(t)).collect()),
    }
}

fn plain_value(value: &Value) -> serde_json::Value {
    use serde_json::Value as Json;
    match value {
        Value::String(s) => Json::String(s.value().clone()),
        Value::Integer(i) => Json::from(*i.value()),
        Value::Float(f) => Json::String(f.value().to_string()),
        Value::Boolean(b) => Json::Bool(*b.value()),
        Value::Datetime(d) => Json::String(d.value().to_string()),
        Value::Array(array) => Json::Array(array.iter().map(plain_value).collect()),
        Value::InlineTable(table) => Json::Object(
            table
                .iter()
                .map(|(key, value)| (key.to_owned(), plain_value(value)))
                .collect(),
        ),
    }
}

/// Replaces the file at `path` with `contents` so that a reader sees the old file or the new
/// one, never a half-written one, and only the owner can read it (it holds tokens).
pub(crate) fn write_atomically(path: &Path, contents: &str) -> Result<(), ConfigError> {
    let write_error = |source| ConfigError::Write {
        path: path.to_owned(),
        source,
    };
    // Renaming over a symlink would replace the link; dotfile managers link config files, so
    // the file the link points to is the one updated.
    let target = match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => fs::canonicalize(path).map_err(write_error)?,
        _ => path.to_owned(),
    };
    let directory = match target.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    create_private_dir(&directory).map_err(write_error)?;
    let file_name = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config.toml".to_owned());
    let temporary = directory.join(format!(
        ".{file_name}.{}.{:08x}.tmp",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result: io::Result<()> = (|| {
        let mut file = open_private(&temporary)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temporary, &target)?;
        // Make the rename itself durable; not every platform can open a directory, so this is
        // best effort.
        if let Ok(dir) = fs::File::open(&directory) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result.map_err(write_error)
}

#[cfg(unix)]
fn open_private(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(unix)]
fn create_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

#[cfg(not(unix))]
fn create_private_dir(path: &Path) -> io::Result<()> {
    fs::create_dir_all(path)
}

/// Where Switchboard keeps its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The configuration file.
    pub config_file: PathBuf,
    /// The data directory (the SQLite database).
    pub data_dir: PathBuf,
    /// The log directory.
    pub log_dir: PathBuf,
}

impl Paths {
    /// Precedence: the CLI flag, then `SWITCHBOARD_CONFIG` / `SWITCHBOARD_DATA_DIR`, then XDG:
    /// `$XDG_CONFIG_HOME/switchboard/config.toml`, `$XDG_DATA_HOME/switchboard`, logs in
    /// `$XDG_STATE_HOME/switchboard/logs` (falling back to the platform's directories, and for
    /// logs to `data_dir/logs`).
    ///
    /// A data directory given explicitly (flag or variable) also holds the logs, in
    /// `data_dir/logs`: tests and scripts isolate themselves this way, and their logs must not
    /// land in the user's state directory.
    pub fn resolve(cli_config: Option<PathBuf>, cli_data_dir: Option<PathBuf>) -> Paths {
        Self::resolve_with_env(cli_config, cli_data_dir, |name| std::env::var(name).ok())
    }

    /// [`Paths::resolve`] with the environment given as a function, so tests need not touch
    /// the process environment. The platform fallbacks (`dirs`) still read the real one.
    pub fn resolve_with_env(
        cli_config: Option<PathBuf>,
        cli_data_dir: Option<PathBuf>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Paths {
        let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        // The XDG specification says relative paths in these variables are to be ignored.
        let xdg = |name: &str| var(name).filter(|path| path.is_absolute());
        let config_file = cli_config
            .or_else(|| var("SWITCHBOARD_CONFIG"))
            .unwrap_or_else(|| {
                xdg("XDG_CONFIG_HOME")
                    .or_else(dirs::config_dir)
                    .unwrap_or_else(|| PathBuf::from("."))
                    .join("switchboard")
                    .join("config.toml")
            });
        let explicit_data_dir = cli_data_dir.or_else(|| var("SWITCHBOARD_DATA_DIR"));
        let data_dir = explicit_data_dir.clone().unwrap_or_else(|| {
            xdg("XDG_DATA_HOME")
                .or_else(dirs::data_dir)
                .unwrap_or_else(|| PathBuf::from("."))
                .join("switchboard")
        });
        let log_dir = match explicit_data_dir {
            Some(_) => data_dir.join("logs"),
            None => xdg("XDG_STATE_HOME")
                .or_else(dirs::state_dir)
                .map(|state| state.join("switchboard").join("logs"))
                .unwrap_or_else(|| data_dir.join("logs")),
        };
        Paths {
            config_file,
            data_dir,
            log_dir,
        }
    }
}

/// Points the watch scheduler's notifications in `~/.stakpak/autopilot.toml` (`text`) at
/// Switchboard's address for it, keeping the file's comments and layout: `gateway_url` is set;
/// `channel` and `chat_id` only when the file has none (to the first configured channel and its
/// first owner's chat). Returns the new text and the names of the settings it changed.
pub fn connect_autopilot(
    text: &str,
    addr: &SocketAddr,
    config: &Config,
) -> Result<(String, Vec<String>), ConfigError> {
    let source = Path::new("~/.stakpak/autopilot.toml");
    let mut document: DocumentMut = text
        .parse()
        .map_err(|error: toml_edit::TomlError| toml_edit_syntax_error(text, source, &error))?;
    if !document.contains_key("notifications") {
        document.insert("notifications", Item::Table(Table::new()));
    }
    let Some(table) = document
        .get_mut("notifications")
        .and_then(Item::as_table_like_mut)
    else {
        return Err(invalid(
            source,
            "notifications",
            "is a value where a table is expected; make it a [notifications] table",
        ));
    };
    let mut changed = Vec::new();
    let url = format!("http://{addr}");
    if table.get("gateway_url").and_then(Item::as_str) != Some(url.as_str()) {
        table.insert("gateway_url", toml_edit::value(url));
        changed.push("notifications.gateway_url".to_owned());
    }
    let (channel, chat) = default_delivery(config);
    if table.get("channel").is_none() {
        table.insert("channel", toml_edit::value(channel));
        changed.push("notifications.channel".to_owned());
    }
    if let (None, Some(chat)) = (table.get("chat_id"), chat) {
        table.insert("chat_id", toml_edit::value(chat));
        changed.push("notifications.chat_id".to_owned());
    }
    Ok((document.to_string(), changed))
}

/// [`connect_autopilot`] on the file at `path`, written in place (atomically) when it changed.
pub fn connect_autopilot_file(
    path: &Path,
    addr: &SocketAddr,
    config: &Config,
) -> Result<Vec<String>, ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let (updated, changed) = connect_autopilot(&text, addr, config)?;
    if !changed.is_empty() {
        write_atomically(path, &updated)?;
    }
    Ok(changed)
}

/// The channel a schedule's notifications go to by default, and the chat: the first configured
/// channel, to its first owner's direct chat when there is one.
fn default_delivery(config: &Config) -> (&'static str, Option<String>) {
    let c = &config.channels;
    if let Some(t) = &c.telegram {
        ("telegram", t.owners.first().cloned())
    } else if let Some(s) = &c.slack {
        ("slack", s.owners.first().cloned())
    } else if let Some(d) = &c.discord {
        ("discord", d.owners.first().map(|o| format!("dm:{o}")))
    } else {
        ("telegram", None)
    }
}

/// Reads the text of Stakpak's `~/.stakpak/autopilot.toml` and copies the settings Switchboard
/// shares with it into `into`: the server's address and token and each channel's tokens. It is
/// lenient, since that file's layout has changed between Stakpak versions: the server comes
/// from `[server] url`, or from the address it listens on (`[server] listen` or a top-level
/// `bind`); a channel is `[channels.<name>]` (or `[<name>]`), its kind given by `type` or its
/// name, with `token` or `bot_token`, and Slack's `app_token`. Anything else is ignored, and
/// empty values are not copied. Returns the dotted names of the settings it set.
pub fn import_autopilot(text: &str, into: &mut Config) -> Result<Vec<String>, ConfigError> {
    let source = Path::new("~/.stakpak/autopilot.toml");
    let root: toml::Table =
        toml::from_str(text).map_err(|error| syntax_error(text, source, &error))?;
    let mut imported = Vec::new();
    let text_at = |table: &toml::Table, keys: &[&str]| -> Option<String> {
        keys.iter()
            .filter_map(|key| table.get(*key)?.as_str())
            .map(str::trim)
            .find(|value| !value.is_empty())
            .map(str::to_owned)
    };

    let server = root.get("server").and_then(toml::Value::as_table);
    let url = server.and_then(|s| text_at(s, &["url"])).or_else(|| {
        let listen = server
            .and_then(|s| text_at(s, &["listen", "bind"]))
            .or_else(|| text_at(&root, &["bind"]))?;
        let address: SocketAddr = listen.parse().ok()?;
        // A server listening on every interface is reached locally through loopback.
        let host = match address.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
            ip if ip.is_unspecified() => "[::1]".to_owned(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            std::net::IpAddr::V4(ip) => ip.to_string(),
        };
        Some(format!("http://{host}:{}", address.port()))
    });
    if let Some(url) = url {
        into.server.url = url;
        imported.push("server.url".to_owned());
    }
    if let Some(token) = server.and_then(|s| text_at(s, &["token", "auth_token"])) {
        into.server.token = token;
        imported.push("server.token".to_owned());
    }

    let mut sections: Vec<(&str, &toml::Table)> = Vec::new();
    if let Some(channels) = root.get("channels").and_then(toml::Value::as_table) {
        sections.extend(
            channels
                .iter()
                .filter_map(|(name, value)| Some((name.as_str(), value.as_table()?))),
        );
    }
    for name in CHANNEL_NAMES {
        if let Some(table) = root.get(name).and_then(toml::Value::as_table) {
            sections.push((name, table));
        }
    }
    for (name, section) in sections {
        let kind = section
            .get("type")
            .and_then(toml::Value::as_str)
            .unwrap_or(name)
            .to_ascii_lowercase();
        let mut set = |setting: &str, slot: &mut String, value: String| {
            *slot = value;
            let name = format!("channels.{kind}.{setting}");
            if !imported.contains(&name) {
                imported.push(name);
            }
        };
        match kind.as_str() {
            "telegram" => {
                if let Some(token) = text_at(section, &["token", "bot_token"]) {
                    let telegram = into.channels.telegram.get_or_insert_with(Default::default);
                    set("token", &mut telegram.token, token);
                }
            }
            "discord" => {
                if let Some(token) = text_at(section, &["token", "bot_token"]) {
                    let discord = into.channels.discord.get_or_insert_with(Default::default);
                    set("token", &mut discord.token, token);
                }
            }
            "slack" => {
                let bot_token = text_at(section, &["bot_token", "token"]);
                let app_token = text_at(section, &["app_token"]);
                if bot_token.is_some() || app_token.is_some() {
                    let slack = into.channels.slack.get_or_insert_with(Default::default);
                    if let Some(token) = bot_token {
                        set("bot_token", &mut slack.bot_token, token);
                    }
                    if let Some(token) = app_token {
                        set("app_token", &mut slack.app_token, token);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = r#"
[server]                      # the Stakpak agent server
url = "http://127.0.0.1:4096"
token = ""                    # bearer token, if the server has one

[gateway]
model = ""                    # optional model override
title_template = "{channel} / {peer}"
approval_mode = "ask"         # ask | allowlist | allow_all | deny_all
approval_allowlist = []       # tool names accepted without asking
approval_timeout_minutes = 30
prune_after_hours = 168
delivery_context_ttl_hours = 4

[routing]
dm_scope = "per_channel_peer" # main | per_peer | per_channel_peer
[[routing.bindings]]
channel = "telegram"
routing_key = "ops"
direct = "123"                # or: group = "-100123"

[api]                         # Switchboard's own gateway API
listen = "127.0.0.1:4097"
token = ""                    # generated and saved on first start when empty

[channels.telegram]
token = "123:abc"
api_base = "https://api.telegram.org"
dm_policy = "pairing"         # pairing | allowlist | open
allowed_users = []            # user ids admitted without pairing
owners = []                   # user ids who may decide approvals and admit others from a chat
require_mention = true        # in groups

[channels.slack]
bot_token = "xoxb-…"
app_token = "xapp-…"
api_base = "https://slack.com/api"
dm_policy = "pairing"
allowed_users = []

[channels.discord]
token = "…"
api_base = "https://discord.com/api/v10"
dm_policy = "pairing"
allowed_users = []
guilds = []                   # guild ids where it may answer (mentions); empty: none
"#;

    fn path() -> PathBuf {
        PathBuf::from("/test/config.toml")
    }

    fn parse_ok(text: &str) -> Config {
        match Config::from_toml_str(text, &path()) {
            Ok(config) => config,
            Err(error) => panic!("{text:?} must parse: {error}"),
        }
    }

    /// The field and message of the error `text` must give.
    fn parse_err(text: &str) -> (String, String) {
        match Config::from_toml_str(text, &path()) {
            Err(ConfigError::Invalid { field, message, .. }) => (field, message),
            other => panic!("{text:?} must be invalid, got {other:?}"),
        }
    }

    #[test]
    fn plain_http_to_a_platform_is_for_this_machine_only() {
        for base in [
            "http://127.0.0.1:8081",
            "http://localhost:8081/",
            "http://[::1]:9",
            "https://tg.example",
        ] {
            parse_ok(&format!(
                "[channels.telegram]\ntoken = \"1:x\"\napi_base = \"{base}\""
            ));
        }
        let (field, _) = parse_err("[channels.slack]\nbot_token = \"b\"\napp_token = \"a\"\napi_base = \"http://10.0.0.2/api\"");
        assert_eq!(field, "channels.slack.api_base");
    }

    #[test]
    fn a_channel_open_to_strangers_in_ask_mode_leaves_approving_to_owners() {
        let tg = "[channels.telegram]\ntoken = \"1:x\"\n";
        let (field, message) = parse_err(&format!("{tg}dm_policy = \"open\""));
        assert_eq!(field, "channels.telegram.owners");
        assert!(message.contains("add your user id to owners"), "{message}");
        let (field, _) = parse_err(&format!("{tg}open_groups = [\"-100\"]"));
        assert_eq!(field, "channels.telegram.owners");
        let (field, message) = parse_err(&format!(
            "{tg}dm_policy = \"open\"\nowners = [\"7\"]\napprovers = \"requester\""
        ));
        assert_eq!(field, "channels.telegram.approvers");
        assert!(message.contains("use \"owners\""), "{message}");
        // With owners, or when calls are not asked about, or closed to strangers: fine.
        let ok = parse_ok(&format!("{tg}dm_policy = \"open\"\nowners = [\"7\"]"));
        let telegram = ok.channels.telegram.expect("telegram");
        assert_eq!(telegram.approvers, Approvers::Auto);
        parse_ok(&format!(
            "[gateway]\napproval_mode = \"deny_all\"\n{tg}dm_policy = \"open\""
        ));
        parse_ok(&format!("{tg}approvers = \"requester\""));
        parse_ok(&format!("{tg}enabled = false\ndm_policy = \"open\""));
    }

    #[test]
    fn defaults_match_the_spec() {
        let config = parse_ok("");
        assert_eq!(config, Config::default());
        assert_eq!(config.server.url, "http://127.0.0.1:4096");
        assert_eq!(config.gateway.title_template, "{channel} / {peer}");
        assert_eq!(config.gateway.approval_mode, ApprovalMode::Ask);
        assert_eq!(config.gateway.approval_timeout_minutes, 30);
        assert_eq!(config.gateway.prune_after_hours, 168);
        assert_eq!(config.gateway.delivery_context_ttl_hours, 4);
        assert_eq!(config.gateway.journal_retention_days, 30);
        assert_eq!(config.routing.dm_scope, DmScope::PerChannelPeer);
        assert_eq!(config.api.listen, "127.0.0.1:4097");
        assert_eq!(config.channels, ChannelsConfig::default());
        assert!(config.notifications.enabled);
        assert!(config.channel_names().is_empty());
        let telegram = TelegramConfig::default();
        assert!(telegram.enabled && telegram.require_mention);
        assert_eq!(telegram.api_base, "https://api.telegram.org");
        assert_eq!(SlackConfig::default().api_base, "https://slack.com/api");
        assert_eq!(
            DiscordConfig::default().api_base,
            "https://discord.com/api/v10"
        );
        assert_eq!(DmPolicy::default(), DmPolicy::Pairing);
    }

    #[test]
    fn the_spec_example_parses() {
        let config = parse_ok(SPEC_EXAMPLE);
        assert_eq!(
            config.routing.bindings,
            vec![Binding {
                channel: "telegram".into(),
                routing_key: "ops".into(),
                direct: Some("123".into()),
                group: None,
            }]
        );
        let telegram = config.channels.telegram.as_ref().expect("telegram section");
        assert_eq!(telegram.token, "123:abc");
        assert!(
            telegram.enabled,
            "a channel section is enabled unless it says otherwise"
        );
        let slack = config.channels.slack.as_ref().expect("slack section");
        assert_eq!(
            (slack.bot_token.as_str(), slack.app_token.as_str()),
            ("xoxb-…", "xapp-…")
        );
        assert_eq!(config.channel_names(), vec!["telegram", "slack", "discord"]);
    }

    #[test]
    fn ids_may_be_integers_or_strings() {
        let config = parse_ok(
            r#"
[channels.telegram]
token = "1:a"
allowed_users = [12345, "67890", -100123]
owners = [42]
[channels.discord]
token = "t"
guilds = [1234567890123456789]
[[routing.bindings]]
channel = "telegram"
routing_key = "ops"
group = -100123
"#,
        );
        let telegram = config.channels.telegram.expect("telegram section");
        assert_eq!(telegram.allowed_users, ["12345", "67890", "-100123"]);
        assert_eq!(telegram.owners, ["42"]);
        assert_eq!(
            config.channels.discord.expect("discord").guilds,
            ["1234567890123456789"]
        );
        assert_eq!(config.routing.bindings[0].group.as_deref(), Some("-100123"));
    }

    #[test]
    fn keywords_round_trip_through_display_and_from_str() {
        for mode in ApprovalMode::ALL {
            assert_eq!(mode.to_string().parse::<ApprovalMode>(), Ok(*mode));
        }
        for scope in DmScope::ALL {
            assert_eq!(scope.to_string().parse::<DmScope>(), Ok(*scope));
        }
        for policy in DmPolicy::ALL {
            assert_eq!(policy.to_string().parse::<DmPolicy>(), Ok(*policy));
        }
        assert_eq!(ApprovalMode::AllowAll.to_string(), "allow_all");
        assert_eq!(
            "sometimes".parse::<ApprovalMode>().map_err(|e| e.to_string()),
            Err("unknown approval mode \"sometimes\"; use one of ask, allowlist, allow_all, deny_all"
                .to_owned())
        );
    }

    #[test]
    fn each_mistake_names_the_field_and_the_fix() {
        let telegram = "[channels.telegram]\ntoken = \"1:a\"\n";
        let cases: Vec<(&str, String, &str, &str)> = vec![
            (
                "unknown approval mode",
                "[gateway]\napproval_mode = \"sometimes\"".into(),
                "gateway.approval_mode",
                "unknown approval mode \"sometimes\"; use one of ask, allowlist, allow_all, deny_all",
            ),
            (
                "unknown DM scope",
                "[routing]\ndm_scope = \"everyone\"".into(),
                "routing.dm_scope",
                "use one of main, per_peer, per_channel_peer",
            ),
            (
                "unknown DM policy",
                format!("{telegram}dm_policy = \"closed\""),
                "channels.telegram.dm_policy",
                "use one of pairing, allowlist, open",
            ),
            (
                "misspelt setting",
                "[gateway]\naproval_mode = \"ask\"".into(),
                "gateway.aproval_mode",
                "did you mean approval_mode?",
            ),
            (
                "unknown section",
                "[webhooks]\nurl = \"x\"".into(),
                "webhooks",
                "remove it, or use one of: server, gateway, routing, api, channels, notifications, desktop, media",
            ),
            (
                "unknown channel section",
                "[channels.whatsapp]\ntoken = \"x\"".into(),
                "channels.whatsapp",
                "remove it, or use one of: telegram, slack, discord",
            ),
            (
                "wrong type",
                "[gateway]\napproval_timeout_minutes = \"30\"".into(),
                "gateway.approval_timeout_minutes",
                "write a whole number without quotes",
            ),
            (
                "negative number",
                "[gateway]\nprune_after_hours = -1".into(),
                "gateway.prune_after_hours",
                "write a whole number of 0 or more",
            ),
            (
                "boolean as a string",
                format!("{telegram}require_mention = \"yes\""),
                "channels.telegram.require_mention",
                "write true or false without quotes",
            ),
            (
                "a float where an id is expected",
                format!("{telegram}allowed_users = [1.5]"),
                "channels.telegram.allowed_users[0]",
                "write the id in quotes or as a whole number",
            ),
            (
                "misspelt setting in a binding",
                "[[routing.bindings]]\nchannel = \"slack\"\nroutingkey = \"ops\"".into(),
                "routing.bindings[0].routingkey",
                "did you mean routing_key?",
            ),
            (
                "syntax error",
                "[server]\nurl = \"http://x\nfoo = 1".into(),
                "line 2",
                "fix the syntax at line 2",
            ),
            (
                "server url not http",
                "[server]\nurl = \"ftp://example.com\"".into(),
                "server.url",
                "is not an http(s) URL; use e.g. http://127.0.0.1:4096",
            ),
            (
                "server url empty",
                "[server]\nurl = \"\"".into(),
                "server.url",
                "empty; set an http(s) URL",
            ),
            (
                "server url without scheme",
                "[server]\nurl = \"127.0.0.1:4096\"".into(),
                "server.url",
                "is not an http(s) URL",
            ),
            (
                "listen address without a port",
                "[api]\nlisten = \"127.0.0.1\"".into(),
                "api.listen",
                "is not an IP address and port; use e.g. 127.0.0.1:4097",
            ),
            (
                "zero approval timeout",
                "[gateway]\napproval_timeout_minutes = 0".into(),
                "gateway.approval_timeout_minutes",
                "must be at least 1 (minutes); the default is 30",
            ),
            (
                "zero prune time",
                "[gateway]\nprune_after_hours = 0".into(),
                "gateway.prune_after_hours",
                "must be at least 1 (hours); the default is 168",
            ),
            (
                "zero delivery context lifetime",
                "[gateway]\ndelivery_context_ttl_hours = 0".into(),
                "gateway.delivery_context_ttl_hours",
                "must be at least 1 (hours); the default is 4",
            ),
            (
                "zero journal retention",
                "[gateway]\njournal_retention_days = 0".into(),
                "gateway.journal_retention_days",
                "must be at least 1 (days); the default is 30",
            ),
            (
                "unknown title placeholder",
                "[gateway]\ntitle_template = \"{channel} / {user}\"".into(),
                "gateway.title_template",
                "unknown placeholder {user}; use {channel}, {peer}, {chat_type} or {chat_id}",
            ),
            (
                "unclosed title placeholder",
                "[gateway]\ntitle_template = \"{channel\"".into(),
                "gateway.title_template",
                "without its \"}\"",
            ),
            (
                "empty tool name",
                "[gateway]\napproval_allowlist = [\"view\", \"\"]".into(),
                "gateway.approval_allowlist[1]",
                "empty tool name",
            ),
            (
                "binding without a channel",
                "[[routing.bindings]]\nrouting_key = \"ops\"".into(),
                "routing.bindings[0].channel",
                "empty; set the channel the binding applies to",
            ),
            (
                "binding with a channel name that cannot match",
                "[[routing.bindings]]\nchannel = \"Telegram\"\nrouting_key = \"ops\"".into(),
                "routing.bindings[0].channel",
                "\"Telegram\" is not a channel name; write it in lower case",
            ),
            (
                "binding without a routing key",
                "[[routing.bindings]]\nchannel = \"slack\"\nrouting_key = \"ops\"\n\
                 [[routing.bindings]]\nchannel = \"slack\""
                    .into(),
                "routing.bindings[1].routing_key",
                "empty; set the conversation",
            ),
            (
                "binding with both direct and group",
                "[[routing.bindings]]\nchannel = \"slack\"\nrouting_key = \"ops\"\n\
                 direct = \"U1\"\ngroup = \"C1\""
                    .into(),
                "routing.bindings[0].group",
                "either a direct peer or a group, not both",
            ),
            (
                "enabled telegram without a token",
                "[channels.telegram]\nallowed_users = [1]".into(),
                "channels.telegram.token",
                "empty; set the bot token from @BotFather, or set enabled = false",
            ),
            (
                "enabled slack without its app token",
                "[channels.slack]\nbot_token = \"xoxb-1\"".into(),
                "channels.slack.app_token",
                "empty; set the app-level token (xapp-…)",
            ),
            (
                "enabled slack without its bot token",
                "[channels.slack]\napp_token = \"xapp-1\"".into(),
                "channels.slack.bot_token",
                "empty; set the bot token (xoxb-…)",
            ),
            (
                "enabled discord without a token",
                "[channels.discord]\nguilds = [\"1\"]".into(),
                "channels.discord.token",
                "from the Discord Developer Portal (Bot page), or set enabled = false",
            ),
            (
                "channel api_base not a URL",
                format!("{telegram}api_base = \"api.telegram.org\""),
                "channels.telegram.api_base",
                "is not an http(s) URL; use e.g. https://api.telegram.org",
            ),
            (
                "plain http to another machine",
                format!("{telegram}api_base = \"http://proxy.example:8081\""),
                "channels.telegram.api_base",
                "would send the bot token unencrypted; use https",
            ),
            (
                "disabled channel still needs a valid api_base",
                "[channels.discord]\nenabled = false\napi_base = \"\"".into(),
                "channels.discord.api_base",
                "empty; set an http(s) URL, e.g. https://discord.com/api/v10",
            ),
            (
                "quiet hours with only a start",
                "[notifications]\nquiet_hours_start = \"22:00\"".into(),
                "notifications.quiet_hours_end",
                "empty while quiet_hours_start is set; set both",
            ),
            (
                "quiet hours with only an end",
                "[notifications]\nquiet_hours_end = \"07:00\"".into(),
                "notifications.quiet_hours_start",
                "empty while quiet_hours_end is set",
            ),
            (
                "quiet hours out of range",
                "[notifications]\nquiet_hours_start = \"22:00\"\nquiet_hours_end = \"24:30\""
                    .into(),
                "notifications.quiet_hours_end",
                "\"24:30\" is not a time; use HH:MM in 24-hour form",
            ),
            (
                "quiet hours without a leading zero",
                "[notifications]\nquiet_hours_start = \"7:00\"\nquiet_hours_end = \"08:00\"".into(),
                "notifications.quiet_hours_start",
                "is not a time",
            ),
        ];
        for (name, text, expected_field, expected_message) in cases {
            let (field, message) = parse_err(&text);
            assert_eq!(field, expected_field, "case {name}: {message}");
            assert!(
                message.contains(expected_message),
                "case {name}: {message:?} should contain {expected_message:?}"
            );
        }
    }

    #[test]
    fn valid_edge_cases_pass() {
        let cases = [
            "[channels.telegram]\nenabled = false",
            "[channels.slack]\nenabled = false\nbot_token = \"\"",
            "[server]\nurl = \"https://agent.example.com:8443/base\"",
            "[api]\nlisten = \"[::1]:4097\"",
            "[gateway]\ntitle_template = \"{chat_type} {chat_id} ({channel}) {peer}\"",
            "[gateway]\ntitle_template = \"\"",
            "[notifications]\nquiet_hours_start = \"22:30\"\nquiet_hours_end = \"07:00\"",
            "[[routing.bindings]]\nchannel = \"discord\"\nrouting_key = \"all-discord\"",
            "[[routing.bindings]]\nchannel = \"chat\"\nrouting_key = \"ops\"\ndirect = \"ann\"",
        ];
        for text in cases {
            parse_ok(text);
        }
    }

    #[test]
    fn quiet_hours_are_minutes_after_midnight() {
        let mut notifications = NotificationsConfig::default();
        assert_eq!(notifications.quiet_hours(), None);
        notifications.quiet_hours_start = "22:30".into();
        notifications.quiet_hours_end = "07:05".into();
        assert_eq!(
            notifications.quiet_hours(),
            Some((22 * 60 + 30, 7 * 60 + 5))
        );
    }

    fn full_config() -> Config {
        let mut config = parse_ok(SPEC_EXAMPLE);
        config.gateway.approval_mode = ApprovalMode::Allowlist;
        config.gateway.approval_allowlist = vec!["stakpak__view".into()];
        config.notifications.quiet_hours_start = "22:00".into();
        config.notifications.quiet_hours_end = "07:00".into();
        config.routing.bindings.push(Binding {
            channel: "slack".into(),
            routing_key: "team".into(),
            direct: None,
            group: Some("C123".into()),
        });
        config
    }

    #[test]
    fn save_then_load_gives_the_same_config() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir
            .path()
            .join("nested")
            .join("switchboard")
            .join("config.toml");
        let config = full_config();
        config.save(&path).expect("save to a new file");
        let written = fs::read_to_string(&path).expect("read");
        assert_eq!(
            written,
            config.to_toml_string(),
            "a new file is the full configuration"
        );
        assert!(
            written.starts_with("[server]\n") && written.contains("\n\n[gateway]\n"),
            "sections are separated by a blank line:\n{written}"
        );
        assert!(
            !written.contains("[channels]"),
            "no empty parent header:\n{written}"
        );
        assert_eq!(Config::load(&path).expect("load"), config);
        assert_eq!(
            Config::from_toml_str(&config.to_toml_string(), &path).expect("to_toml_string parses"),
            config
        );
        assert_eq!(
            Config::load_or_default(&path).expect("load_or_default"),
            (config.clone(), true)
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the file holds tokens");
        }
        let leftovers: Vec<_> = fs::read_dir(path.parent().expect("parent"))
            .expect("read dir")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(
            leftovers,
            vec![std::ffi::OsString::from("config.toml")],
            "no temp files left"
        );
    }

    #[test]
    fn the_api_may_listen_beyond_loopback_when_configured_so() {
        let config = Config::from_toml_str("[api]\nlisten = \"0.0.0.0:4097\"", Path::new("c"))
            .expect("allowed; the API warns when it starts");
        assert_eq!(config.api.listen, "0.0.0.0:4097");
    }

    #[test]
    fn load_or_default_without_a_file_gives_the_defaults() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("config.toml");
        assert_eq!(
            Config::load_or_default(&path).expect("missing file is fine"),
            (Config::default(), false)
        );
        assert!(matches!(Config::load(&path), Err(ConfigError::Read { .. })));
        fs::write(&path, "[gateway]\napproval_mode = \"never\"").expect("write");
        assert!(matches!(
            Config::load_or_default(&path),
            Err(ConfigError::Invalid { .. })
        ));
    }

    #[test]
    fn save_keeps_comments_layout_and_unchanged_values() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("config.toml");
        let original = format!(
            "# My switchboard settings\n{SPEC_EXAMPLE}\n[[routing.bindings]] # the team room\n\
             channel = \"slack\"\nrouting_key = \"team\"\ngroup = \"C123\"\n"
        );
        fs::write(&path, &original).expect("write");
        let mut config = Config::load(&path).expect("load");

        // Saving an unchanged configuration changes nothing, not even defaults left out.
        config.save(&path).expect("save unchanged");
        assert_eq!(fs::read_to_string(&path).expect("read"), original);

        config.gateway.approval_mode = ApprovalMode::DenyAll;
        config.api.token = "generated".into();
        config.gateway.journal_retention_days = 7;
        config.channels.discord = None;
        config.routing.bindings[0].routing_key = "operations".into();
        config.save(&path).expect("save changed");
        let saved = fs::read_to_string(&path).expect("read");

        assert!(saved.starts_with("# My switchboard settings\n"), "{saved}");
        // (what, the line's start, what else the line must still hold)
        let expectations = [
            (
                "a changed value keeps its comment",
                "approval_mode = \"deny_all\"",
                "# ask | allowlist | allow_all | deny_all",
            ),
            (
                "an unchanged value keeps its comment",
                "direct = \"123\"",
                "# or: group = \"-100123\"",
            ),
            (
                "a changed token keeps its comment",
                "token = \"generated\"",
                "# generated and saved on first start",
            ),
            (
                "a binding keeps its comment",
                "[[routing.bindings]]",
                "# the team room",
            ),
            (
                "a binding changes in place",
                "routing_key = \"operations\"",
                "",
            ),
            (
                "a default that changed is added",
                "journal_retention_days = 7",
                "",
            ),
        ];
        for (what, start, rest) in expectations {
            let found = saved
                .lines()
                .any(|line| line.starts_with(start) && line.contains(rest));
            assert!(found, "{what}: no line {start:?} … {rest:?} in\n{saved}");
        }
        assert!(
            !saved.contains("[channels.discord]"),
            "a removed section goes:\n{saved}"
        );
        assert!(
            !saved.contains("notifications"),
            "untouched defaults are not added:\n{saved}"
        );
        assert_eq!(Config::load(&path).expect("reload"), config);
    }

    #[test]
    fn save_adds_new_sections_after_the_existing_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("config.toml");
        fs::write(
            &path,
            "# hand written\n[server]\nurl = \"http://127.0.0.1:9000\" # mine\n",
        )
        .expect("write");
        let mut config = Config::load(&path).expect("load");
        config.channels.telegram = Some(TelegramConfig {
            token: "1:a".into(),
            allowed_users: vec!["42".into()],
            ..TelegramConfig::default()
        });
        config.routing.bindings.push(Binding {
            channel: "telegram".into(),
            routing_key: "ops".into(),
            direct: Some("42".into()),
            group: None,
        });
        config.gateway.approval_mode = ApprovalMode::DenyAll;
        config.save(&path).expect("save");
        let saved = fs::read_to_string(&path).expect("read");
        assert!(
            saved.starts_with("# hand written\n[server]\nurl = \"http://127.0.0.1:9000\" # mine\n"),
            "{saved}"
        );
        assert!(
            saved.contains("\n[gateway]\napproval_mode = \"deny_all\"\n\n"),
            "a new section holds only what differs from the defaults:\n{saved}"
        );
        assert_eq!(Config::load(&path).expect("reload"), config, "{saved}");
    }

    #[test]
    fn save_updates_inline_tables_in_place_and_drops_unknown_keys() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("config.toml");
        fs::write(
            &path,
            "server = { url = \"http://127.0.0.1:1\" } # inline\n[gateway]\naproval_mode = \"ask\"\n",
        )
        .expect("write");
        let mut config = Config::default();
        config.server.url = "http://127.0.0.1:1".into();
        config.server.token = "t".into();
        config.save(&path).expect("save");
        let saved = fs::read_to_string(&path).expect("read");
        assert!(
            saved
                .starts_with("server = { url = \"http://127.0.0.1:1\", token = \"t\" } # inline\n"),
            "{saved}"
        );
        assert!(
            !saved.contains("aproval_mode"),
            "the typo that broke loading goes:\n{saved}"
        );
        assert_eq!(Config::load(&path).expect("the saved file loads"), config);
    }

    #[test]
    fn save_replaces_a_file_that_is_not_toml_and_keeps_a_copy() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("config.toml");
        fs::write(&path, "this is [not toml").expect("write");
        Config::default().save(&path).expect("save");
        assert_eq!(Config::load(&path).expect("load"), Config::default());
        assert_eq!(
            fs::read_to_string(dir.path().join("config.toml.bak")).expect("backup"),
            "this is [not toml"
        );
    }

    #[cfg(unix)]
    #[test]
    fn save_through_a_symlink_updates_its_target() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("dotfiles-config.toml");
        let link = dir.path().join("config.toml");
        fs::write(&target, "[server]\nurl = \"http://127.0.0.1:1\"\n").expect("write");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let mut config = Config::load(&link).expect("load");
        config.server.token = "t".into();
        config.save(&link).expect("save");
        assert!(fs::symlink_metadata(&link)
            .expect("link")
            .file_type()
            .is_symlink());
        assert_eq!(Config::load(&target).expect("target").server.token, "t");
    }

    #[test]
    fn set_value_creates_tables_and_keeps_the_rest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("config.toml");
        let original = "# keep me\n[server]\nurl = \"http://127.0.0.1:4096\" # the agent\n";
        fs::write(&path, original).expect("write");

        set_value(&path, "api.token", "abc").expect("set api.token");
        let text = fs::read_to_string(&path).expect("read");
        assert!(
            text.starts_with(original),
            "the rest of the file is untouched:\n{text}"
        );
        assert!(text.contains("[api]\ntoken = \"abc\""), "{text}");
        assert_eq!(Config::load(&path).expect("load").api.token, "abc");

        set_value(&path, "server.url", "http://127.0.0.1:5000").expect("set server.url");
        let text = fs::read_to_string(&path).expect("read");
        assert!(
            text.contains("url = \"http://127.0.0.1:5000\" # the agent"),
            "{text}"
        );

        set_value(&path, "channels.telegram.token", "1:a").expect("nested table");
        set_value(&path, "gateway.prune_after_hours", "24").expect("a number");
        set_value(&path, "channels.telegram.require_mention", "false").expect("a boolean");
        set_value(
            &path,
            "gateway.approval_allowlist",
            "[\"view\", \"create\"]",
        )
        .expect("a list");
        let config = Config::load(&path).expect("load");
        let text = fs::read_to_string(&path).expect("read");
        assert!(text.contains("[channels.telegram]"), "{text}");
        assert!(
            !text.contains("[channels]\n"),
            "the parent table stays implicit:\n{text}"
        );
        let telegram = config.channels.telegram.expect("telegram");
        assert_eq!(
            (telegram.token.as_str(), telegram.require_mention),
            ("1:a", false)
        );
        assert_eq!(config.gateway.prune_after_hours, 24);
        assert_eq!(config.gateway.approval_allowlist, ["view", "create"]);
    }

    #[test]
    fn set_value_creates_a_missing_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("new").join("config.toml");
        set_value(&path, "api.token", "abc").expect("set");
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            "[api]\ntoken = \"abc\"\n"
        );
    }

    #[test]
    fn set_value_refuses_what_the_setting_cannot_hold() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("config.toml");
        fs::write(&path, "[api]\ntoken = \"old\"\n").expect("write");
        let cases = [
            ("api.tokn", "x", "unknown setting api.tokn"),
            ("gateway.prune_after_hours", "soon", "is not a whole number"),
            ("channels.slack.enabled", "maybe", "is not true or false"),
            ("gateway.approval_allowlist", "view", "is not a list"),
            ("gateway", "x", "is a section, not a setting"),
            ("gateway..model", "x", "not a setting name"),
            (
                "gateway.approval_mode",
                "sometimes",
                "unknown approval mode \"sometimes\"",
            ),
        ];
        for (key, value, expected) in cases {
            match set_value(&path, key, value) {
                Err(ConfigError::Invalid { field, message, .. }) => {
                    assert_eq!(field, key);
                    assert!(message.contains(expected), "{key}: {message}");
                }
                other => panic!("{key} = {value:?} must be refused, got {other:?}"),
            }
        }
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            "[api]\ntoken = \"old\"\n"
        );
    }

    #[test]
    fn paths_follow_the_precedence() {
        let env_of = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            }
        };
        let xdg: &[(&str, &str)] = &[
            ("XDG_CONFIG_HOME", "/xdg/config"),
            ("XDG_DATA_HOME", "/xdg/data"),
            ("XDG_STATE_HOME", "/xdg/state"),
        ];
        let with_switchboard: &[(&str, &str)] = &[
            ("XDG_CONFIG_HOME", "/xdg/config"),
            ("XDG_DATA_HOME", "/xdg/data"),
            ("XDG_STATE_HOME", "/xdg/state"),
            ("SWITCHBOARD_CONFIG", "/env/config.toml"),
            ("SWITCHBOARD_DATA_DIR", "/env/data"),
        ];
        let relative_xdg: &[(&str, &str)] = &[
            ("XDG_CONFIG_HOME", "relative/config"),
            ("SWITCHBOARD_DATA_DIR", ""),
            ("XDG_DATA_HOME", "/xdg/data"),
            ("XDG_STATE_HOME", "/xdg/state"),
        ];
        let paths = Paths::resolve_with_env(None, None, env_of(xdg));
        assert_eq!(
            paths.config_file,
            PathBuf::from("/xdg/config/switchboard/config.toml")
        );
        assert_eq!(paths.data_dir, PathBuf::from("/xdg/data/switchboard"));
        assert_eq!(paths.log_dir, PathBuf::from("/xdg/state/switchboard/logs"));

        let paths = Paths::resolve_with_env(None, None, env_of(with_switchboard));
        assert_eq!(paths.config_file, PathBuf::from("/env/config.toml"));
        assert_eq!(paths.data_dir, PathBuf::from("/env/data"));
        assert_eq!(
            paths.log_dir,
            PathBuf::from("/env/data/logs"),
            "isolated runs keep their logs"
        );

        let paths = Paths::resolve_with_env(
            Some("/cli/config.toml".into()),
            Some("/cli/data".into()),
            env_of(with_switchboard),
        );
        assert_eq!(paths.config_file, PathBuf::from("/cli/config.toml"));
        assert_eq!(paths.data_dir, PathBuf::from("/cli/data"));
        assert_eq!(paths.log_dir, PathBuf::from("/cli/data/logs"));

        let paths = Paths::resolve_with_env(None, None, env_of(relative_xdg));
        assert_ne!(
            paths.config_file,
            PathBuf::from("relative/config/switchboard/config.toml"),
            "a relative XDG path is ignored"
        );
        assert!(paths.config_file.ends_with("switchboard/config.toml"));
        assert_eq!(
            paths.data_dir,
            PathBuf::from("/xdg/data/switchboard"),
            "an empty variable is unset"
        );
    }

    #[test]
    fn the_scheduler_address_and_the_autopilot_lines() {
        let mut config = Config::default();
        let at = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert_eq!(
            config.api.scheduler_addr(at("127.0.0.1:4097")),
            Some(at("127.0.0.2:4097")),
            "auto: 127.0.0.2 on the same port"
        );
        assert_eq!(config.api.scheduler_addr(at("127.0.0.5:4097")), None);
        config.api.scheduler_listen = "off".into();
        assert_eq!(config.api.scheduler_addr(at("127.0.0.1:4097")), None);
        config.api.scheduler_listen = "127.0.0.9:5000".into();
        assert_eq!(
            config.api.scheduler_addr(at("127.0.0.1:4097")),
            Some(at("127.0.0.9:5000"))
        );
        config.channels.telegram = Some(TelegramConfig {
            owners: vec!["4242".into()],
            ..TelegramConfig::default()
        });
        config.api.token = "sb_secret".into();
        let lines = autopilot_notifications(&at("127.0.0.2:4097"), &config);
        assert!(lines.starts_with(
            "[notifications]\ngateway_url = \"http://127.0.0.2:4097\"\nchannel = \"telegram\"\nchat_id = \"4242\"\n"
        ));
        assert!(!lines.contains("sb_secret"), "no token is printed");
        let parsed: toml::Table = toml::from_str(&lines).expect("valid TOML");
        assert!(parsed.contains_key("notifications"));

        config.api.scheduler_listen = "localhost:1".into();
        assert!(matches!(
            config.validate(Path::new("c.toml")),
            Err(ConfigError::Invalid { field, .. }) if field == "api.scheduler_listen"
        ));
    }

    #[test]
    fn connecting_autopilot_keeps_its_comments_and_its_own_choices() {
        let mut config = Config::default();
        config.channels.telegram = Some(TelegramConfig {
            owners: vec!["4242".into()],
            ..TelegramConfig::default()
        });
        let addr: SocketAddr = "127.0.0.2:4097".parse().expect("addr");
        let text = "# my schedules\n[notifications]\ngateway_url = \"http://127.0.0.1:4096\" # old\nchannel = \"slack\"\n\n[[schedules]]\nname = \"disk\" # keep\n";
        let (updated, changed) = connect_autopilot(text, &addr, &config).expect("connect");
        assert_eq!(
            changed,
            vec!["notifications.gateway_url", "notifications.chat_id"]
        );
        assert!(updated.contains("# my schedules") && updated.contains("name = \"disk\" # keep"));
        assert!(updated.contains("gateway_url = \"http://127.0.0.2:4097\""));
        assert!(
            updated.contains("channel = \"slack\""),
            "the file's channel stays"
        );
        let (_, again) = connect_autopilot(&updated, &addr, &config).expect("again");
        assert!(again.is_empty(), "nothing to change the second time");
        let (fresh, _) = connect_autopilot("", &addr, &config).expect("empty file");
        assert!(fresh.contains("[notifications]") && fresh.contains("chat_id = \"4242\""));
    }

    #[test]
    fn imports_stakpak_autopilot_settings() {
        type Check = Box<dyn Fn(&Config)>;
        let cases: Vec<(&str, &str, Vec<&str>, Check)> = vec![
            (
                "sections like Switchboard's",
                r#"
[server]
url = "http://127.0.0.1:4100"
token = "server-secret"
[channels.telegram]
token = "1:tg"
require_mention = false
[channels.slack]
bot_token = "xoxb-1"
app_token = "xapp-1"
[channels.discord]
token = "dc"
[schedules]
unknown = true
"#,
                vec![
                    "server.url",
                    "server.token",
                    "channels.discord.token",
                    "channels.slack.bot_token",
                    "channels.slack.app_token",
                    "channels.telegram.token",
                ],
                Box::new(|config: &Config| {
                    assert_eq!(config.server.url, "http://127.0.0.1:4100");
                    assert_eq!(config.server.token, "server-secret");
                    let telegram = config.channels.telegram.as_ref().expect("telegram");
                    assert_eq!(telegram.token, "1:tg");
                    assert!(telegram.require_mention, "only tokens are imported");
                    let slack = config.channels.slack.as_ref().expect("slack");
                    assert_eq!(
                        (slack.bot_token.as_str(), slack.app_token.as_str()),
                        ("xoxb-1", "xapp-1")
                    );
                    assert_eq!(
                        config.channels.discord.as_ref().expect("discord").token,
                        "dc"
                    );
                }),
            ),
            (
                "a listen address and typed channel entries",
                r#"
bind = "0.0.0.0:4096"
[server]
listen = "0.0.0.0:4555"
[channels.alerts]
type = "telegram"
bot_token = "2:tg"
target = "123"
[channels.empty]
type = "discord"
token = ""
"#,
                vec!["server.url", "channels.telegram.token"],
                Box::new(|config: &Config| {
                    assert_eq!(config.server.url, "http://127.0.0.1:4555");
                    assert_eq!(config.server.token, "", "nothing to import");
                    assert_eq!(
                        config.channels.telegram.as_ref().expect("telegram").token,
                        "2:tg"
                    );
                    assert!(
                        config.channels.discord.is_none(),
                        "empty tokens are not imported"
                    );
                }),
            ),
            (
                "a legacy file with only runtime keys",
                "bind = \"127.0.0.1:4096\"\nshow_token = true\n",
                vec!["server.url"],
                Box::new(|config: &Config| {
                    assert_eq!(config.server.url, "http://127.0.0.1:4096");
                }),
            ),
            (
                "an empty file",
                "",
                vec![],
                Box::new(|config: &Config| {
                    assert_eq!(config, &Config::default());
                }),
            ),
        ];
        for (name, text, expected, check) in cases {
            let mut config = Config::default();
            let mut imported = import_autopilot(text, &mut config).expect(name);
            imported.sort();
            let mut expected: Vec<String> = expected.into_iter().map(str::to_owned).collect();
            expected.sort();
            assert_eq!(imported, expected, "case {name}");
            check(&config);
        }
        let mut config = Config::default();
        assert!(matches!(
            import_autopilot("[server\nurl = 1", &mut config),
            Err(ConfigError::Invalid { .. })
        ));
        assert_eq!(config, Config::default(), "a broken file changes nothing");
    }

    #[test]
    fn errors_display_path_field_and_message() {
        let error = invalid(Path::new("/c.toml"), "gateway.approval_mode", "bad; fix it");
        assert_eq!(
            error.to_string(),
            "/c.toml: gateway.approval_mode: bad; fix it"
        );
    }

    #[test]
    fn shortcuts_are_read_in_any_spelling_and_offered_to_the_portal() {
        let table = [
            ("Ctrl+Alt+Space", "Ctrl+Alt+Space", "CTRL+ALT+space"),
            ("control + alt + space", "Ctrl+Alt+Space", "CTRL+ALT+space"),
            ("super+k", "Super+K", "LOGO+k"),
            ("Ctrl+Shift+F5", "Ctrl+Shift+F5", "CTRL+SHIFT+F5"),
            ("alt+Return", "Alt+Enter", "ALT+Return"),
            ("Ctrl+`", "Ctrl+Backquote", "CTRL+grave"),
        ];
        for (text, canonical, portal) in table {
            let shortcut = Shortcut::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(shortcut.to_string(), canonical, "{text:?}");
            assert_eq!(shortcut.portal_trigger(), portal, "{text:?}");
        }
        for bad in [
            "",
            "Space",
            "Shift+A",
            "Ctrl+",
            "Ctrl++A",
            "Hyper+A",
            "Ctrl+F13",
            "Ctrl+Alt+Spacebarr",
        ] {
            assert!(Shortcut::parse(bad).is_err(), "{bad:?} is refused");
        }
        let mut config = Config::default();
        assert_eq!(config.desktop.quick_chat_shortcut, "Ctrl+Alt+Space");
        config.desktop.quick_chat_shortcut = "Shift+Q".into();
        let error = config
            .validate(Path::new("config.toml"))
            .expect_err("refused");
        assert!(
            error.to_string().contains("desktop.quick_chat_shortcut"),
            "the field is named: {error}"
        );
        config.desktop.quick_chat_shortcut = String::new();
        assert!(
            config.validate(Path::new("config.toml")).is_ok(),
            "empty turns it off"
        );
    }

    #[test]
    fn the_transcriber_is_split_into_words_and_given_the_file() {
        let media = |command: &str| MediaConfig {
            transcribe_command: command.into(),
            ..MediaConfig::default()
        };
        assert_eq!(media("").transcriber("/x/a.ogg"), None);
        assert_eq!(
            media("whisper-cli -m '/models/my model.bin' -nt -f {file}").transcriber("/x/a b.ogg"),
            Some(Ok(vec![
                "whisper-cli".to_owned(),
                "-m".to_owned(),
                "/models/my model.bin".to_owned(),
                "-nt".to_owned(),
                "-f".to_owned(),
                "/x/a b.ogg".to_owned()
            ]))
        );
        assert_eq!(
            media("\"/opt/t r/transcribe\" --lang en").transcriber("/x/a.ogg"),
            Some(Ok(vec![
                "/opt/t r/transcribe".to_owned(),
                "--lang".to_owned(),
                "en".to_owned(),
                "/x/a.ogg".to_owned()
            ])),
            "without {{file}} the path comes last"
        );
        assert!(matches!(
            media("say 'unclosed").transcriber("f"),
            Some(Err(_))
        ));
        let mut config = Config::default();
        config.media.transcribe_command = "x 'open".into();
        let error = config.validate(Path::new("c.toml")).expect_err("refused");
        assert!(
            error.to_string().contains("media.transcribe_command"),
            "{error}"
        );
        config.media = MediaConfig {
            max_mb: 0,
            ..MediaConfig::default()
        };
        assert!(config
            .validate(Path::new("c.toml"))
            .expect_err("refused")
            .to_string()
            .contains("media.max_mb"));
    }
}
