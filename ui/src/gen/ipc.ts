// Generated from the Rust view types (src-tauri/src/views.rs and the engine types they carry).
// Do not edit: `UPDATE_TS=1 cargo test -p switchboard --lib typescript` rewrites it.

/**
 * The window's pages.
 */
export type Page = "chat" | "channels" | "sessions" | "approvals" | "activity" | "settings";

/**
 * What the shell tells the window.
 */
export type UiEvent = { "kind": "snapshot", snapshot: Snapshot, } | { "kind": "activity", entry: ActivityEntry, } | { "kind": "streaming", routing_key: string, run_id: string, text: string, } | { "kind": "desktop_message", message: DesktopMessage, } | { "kind": "run_finished", routing_key: string, run_id: string, outcome: RunOutcome, } | { "kind": "conversations_changed", routing_key: string | null, } | { "kind": "navigate", page: Page, routing_key: string | null, } | { "kind": "approval_requested", approval: ApprovalView, } | { "kind": "approval_resolved", approval_id: string, action: ApprovalState, decided_by: string, surface: Surface, 
/**
 * How it ended, in the words the chat and the notifications show.
 */
line: string, } | { "kind": "pairing_requested", request: PairingRequest, } | { "kind": "pairing_resolved", channel: string, code: string, state: PairingOutcome, 
/**
 * Who decided (empty when it expired).
 */
decided_by: string, };

/**
 * Everything the window and the tray show at a glance.
 */
export type Snapshot = { 
/**
 * Counts the snapshots taken: a page keeps the highest it has seen, as an answer to a call
 * and an event may reach it in either order.
 */
seq: number, config_file: string, config: ConfigView, 
/**
 * Whether the engine runs (it does not while the configuration is missing or invalid).
 */
engine_running: boolean, 
/**
 * Why the engine could not start, when it could not.
 */
engine_error: string | null, server: ServerView, paused: boolean, approval_mode: ApprovalMode, channels: Array<ChannelStatus>, conversations: number, active_runs: number, queued: number, pending_approvals: number, 
/**
 * Strangers waiting to be admitted or refused (unexpired pairing codes).
 */
pending_pairings: number, do_not_disturb: boolean, 
/**
 * Whether notifications are held now by the quiet hours.
 */
quiet_now: boolean, autostart: boolean, 
/**
 * Where the gateway API listens (for watch scripts), when it does.
 */
api_addr: string | null, 
/**
 * The `[notifications]` lines for `~/.stakpak/autopilot.toml` that send the Stakpak watch
 * scheduler's notifications through Switchboard, once the API listens for it.
 */
autopilot_lines: string | null, 
/**
 * The page the window opens on.
 */
start_page: Page, 
/**
 * Started as the demo (`scripts/run.sh` without a configuration): the agent server is the
 * test kit's demo agent and the settings are thrown away.
 */
demo: boolean, 
/**
 * The quick chat's shortcut and how it is (or is not) registered.
 */
quick_chat: QuickChatView, 
/**
 * The version and where things are, for About and the diagnostics.
 */
about: About, };

/**
 * The quick chat's global shortcut, as Settings shows it.
 */
export type QuickChatView = { 
/**
 * The shortcut in use (`Ctrl+Alt+Space`), when one is registered.
 */
shortcut: string | null, 
/**
 * How it is registered: `portal` (the desktop's GlobalShortcuts portal: Wayland, recent
 * GNOME and KDE) or `x11` (a key grab on the X server).
 */
via: string | null, 
/**
 * Why there is none, when there is none (turned off, or neither way works here).
 */
problem: string | null, };

/**
 * What the agent side of a desktop chat said: a reply (growing while written) or an approval
 * prompt.
 */
export type DesktopMessage = { id: number, chat_id: string, kind: DesktopKind, text: string, 
/**
 * While a reply is written: what the agent does meanwhile (tool calls, a wait for approval).
 */
tasks: Array<StreamTask>, 
/**
 * The reply is still being written.
 */
streaming: boolean, 
/**
 * For an approval prompt: the approval it asks about, and how it ended once it did.
 */
approval_id: string | null, outcome: string | null, created_ms: number, updated_ms: number, };

export type DesktopKind = "reply" | "approval";

/**
 * One line of a desktop chat's transcript.
 */
export type DesktopLine = { "from": "person", journal_id: number, text: string, state: JournalState, error: string | null, at_ms: number, } | { "from": "agent", message: DesktopMessage, };

/**
 * Something the agent does while the reply is written: a tool call, or a wait for a person.
 */
export type StreamTask = { 
/**
 * The same for the task's whole life (a tool call's id).
 */
id: string, title: string, status: TaskStatus, };

export type TaskStatus = "pending" | "running" | "done" | "failed";

/**
 * The app's version and where it keeps its files.
 */
export type About = { version: string, data_dir: string, log_dir: string, };

/**
 * How the configuration file stands.
 */
export type ConfigView = { "state": "loaded" } | { "state": "missing", missing: Array<string>, autopilot: string | null, } | { "state": "invalid", field: string, message: string, };

export type ServerView = { url: string, state: ServerState, 
/**
 * The reason (for a problem) or the server's version.
 */
detail: string | null, };

/**
 * The agent server's reachability as last reported.
 */
export type ServerState = "unknown" | "ok" | "unreachable" | "unauthorized";

/**
 * What a person sees of a channel.
 */
export type ChannelStatus = { name: string, enabled: boolean, state: ChannelState, identity: Identity | null, last_error: string | null, 
/**
 * Unix milliseconds of the last message in or out.
 */
last_activity_ms: number | null, received: number, sent: number, };

/**
 * A channel's health, as shown in the tray, the window and `GET /v1/gateway/channels`.
 */
export type ChannelState = "connecting" | "connected" | "reconnecting" | "rate_limited" | "auth_failed" | "disabled";

/**
 * The bot identity a channel reports after checking its credentials.
 */
export type Identity = { id: string, name: string, };

/**
 * A conversation as the host lists it.
 */
export type ConversationSummary = { routing_key: string, session_id: string | null, title: string | null, channel: string, peer: Peer, chat: ChatType, 
/**
 * `running`, `queued` or `idle`.
 */
state: "running" | "queued" | "idle", queued: number, last_used_ms: number, 
/**
 * The tokens its runs used: the last run's and the totals.
 */
usage: UsageTotals, };

/**
 * The tokens a conversation's runs used: the last run's and the totals.
 */
export type UsageTotals = { runs: number, prompt_tokens: number, completion_tokens: number, total_tokens: number, last_prompt_tokens: number, last_completion_tokens: number, last_total_tokens: number, };

/**
 * Who sent a message.
 */
export type Peer = { 
/**
 * The platform's stable user id.
 */
id: string, 
/**
 * A display name, when the platform gives one.
 */
name?: string | null, };

/**
 * Where in a platform a message was written.
 */
export type ChatType = { "type": "direct" } | { "type": "group", id: string, } | { "type": "thread", group_id: string, thread_id: string, };

/**
 * A conversation's history: the server's messages (or why they could not be read), the journal
 * and the live reply.
 */
export type HistoryView = { routing_key: string, server: Array<ChatLine>, server_error: string | null, journal: Array<JournalLine>, live: LiveReply | null, };

/**
 * One message of the server's side of a conversation.
 */
export type ChatLine = { role: string, text: string, };

/**
 * One message received from the chat, as the local journal keeps it.
 */
export type JournalLine = { id: number, peer: Peer, text: string, state: JournalState, error: string | null, 
/**
 * The watch notification this message answered, when it did.
 */
answered_notification: string | null, created_ms: number, 
/**
 * Files that came with it.
 */
attachments: Array<AttachmentView>, };

/**
 * A file that came with a message, as the history shows it.
 */
export type AttachmentView = { kind: AttachmentKind, 
/**
 * The name it had, else its kind.
 */
name: string, mime: string | null, size: number | null, state: AttachmentState, 
/**
 * Where it is saved.
 */
path: string | null, 
/**
 * Why it was not taken.
 */
reason: string | null, 
/**
 * What a voice note was heard to say.
 */
transcript: string | null, 
/**
 * The picture itself (a `data:` URL), for an image saved and small enough to show.
 */
preview: string | null, };

export type AttachmentState = "pending" | "saved" | "failed";

/**
 * What kind of file came with a message.
 */
export type AttachmentKind = "image" | "document" | "voice" | "audio" | "video";

/**
 * The state of one journal entry (an accepted inbound message).
 */
export type JournalState = "queued" | "sent" | "replied" | "failed";

/**
 * The reply being written now.
 */
export type LiveReply = { run_id: string, text: string, };

/**
 * How a run ended.
 */
export type RunOutcome = "completed" | "cancelled" | "error" | "settled";

/**
 * One line of the Activity page.
 */
export type ActivityEntry = { 
/**
 * Increasing; the page uses it as a key.
 */
id: number, at_ms: number, level: Level, 
/**
 * What kind of thing happened: the engine event's kind (`reply_delivered`, …) or the shell's
 * (`settings_saved`, …).
 */
kind: string, 
/**
 * What it concerns: a channel, a conversation, `server`, `settings`.
 */
scope: string, text: string, };

/**
 * How much an entry matters.
 */
export type Level = "info" | "warning" | "error";

/**
 * The Settings page's content.
 */
export type SettingsView = { path: string, exists: boolean, 
/**
 * The settings to edit: the file's, or the defaults when it is missing or unreadable.
 */
config: Config, 
/**
 * The file's mistake, when it has one.
 */
problem: FieldProblem | null, 
/**
 * `~/.stakpak/autopilot.toml`, when it exists.
 */
autopilot: string | null, };

export type FieldProblem = { field: string, message: string, };

/**
 * What saving the settings did.
 */
export type SaveOutcome = { snapshot: Snapshot, 
/**
 * Settings that take effect after a restart of the app (the gateway API address).
 */
restart_needed: Array<string>, };

/**
 * Settings proposed from `~/.stakpak/autopilot.toml`, not saved yet.
 */
export type ImportView = { config: Config, 
/**
 * The dotted names of the settings it filled in.
 */
imported: Array<string>, };

/**
 * The agent server's answer to "Test connection".
 */
export type ServerCheck = { version: string, };

/**
 * The whole configuration file.
 */
export type Config = { 
/**
 * The Stakpak agent server.
 */
server: ServerConfig, 
/**
 * How conversations run: model, titles, approvals, retention.
 */
gateway: GatewayConfig, 
/**
 * Which conversation a message belongs to.
 */
routing: RoutingConfig, 
/**
 * Switchboard's own gateway HTTP API.
 */
api: ApiConfig, 
/**
 * The chat platforms.
 */
channels: ChannelsConfig, 
/**
 * Desktop notifications.
 */
notifications: NotificationsConfig, 
/**
 * The desktop app's own settings (the quick chat).
 */
desktop: DesktopConfig, 
/**
 * Photos, files and voice notes people send.
 */
media: MediaConfig, };

/**
 * `[server]`: the Stakpak agent server.
 */
export type ServerConfig = { 
/**
 * The server's base URL.
 */
url: string, 
/**
 * Its bearer token; empty when the server has none.
 */
token: string, };

/**
 * `[gateway]`: how conversations run.
 */
export type GatewayConfig = { 
/**
 * A model override sent with each message; empty for the server's default.
 */
model: string, 
/**
 * The title of a new session; placeholders `{channel} {peer} {chat_type} {chat_id}`.
 */
title_template: string, 
/**
 * How tool calls are approved.
 */
approval_mode: ApprovalMode, 
/**
 * Tool names accepted without asking (in `allowlist` mode).
 */
approval_allowlist: Array<string>, 
/**
 * A waiting approval is rejected after this long.
 */
approval_timeout_minutes: number, 
/**
 * A conversation mapping unused this long is pruned.
 */
prune_after_hours: number, 
/**
 * How long a watch notification's context waits for a reply.
 */
delivery_context_ttl_hours: number, 
/**
 * How long finished journal rows and the decisions log are kept.
 */
journal_retention_days: number, 
/**
 * A line under each reply in the chat with the tokens its run used.
 */
usage_footer: boolean, };

/**
 * How the agent's tool calls are approved.
 */
export type ApprovalMode = "ask" | "allowlist" | "allow_all" | "deny_all";

/**
 * `[routing]`: which conversation (routing key) a message belongs to.
 */
export type RoutingConfig = { 
/**
 * How direct messages are grouped when no binding matches.
 */
dm_scope: DmScope, 
/**
 * Explicit routes, tried before the defaults.
 */
bindings: Array<Binding>, };

/**
 * How direct messages map to conversations when no binding matches.
 */
export type DmScope = "main" | "per_peer" | "per_channel_peer";

/**
 * `[[routing.bindings]]`: route a peer, a group, or a whole channel to a routing key.
 */
export type Binding = { 
/**
 * The channel it applies to: `telegram`, `slack` or `discord`.
 */
channel: string, 
/**
 * The routing key (conversation) the matching messages go to.
 */
routing_key: string, 
/**
 * A direct peer id to match.
 */
direct?: string | null, 
/**
 * A group id to match (also matches that group's threads).
 */
group?: string | null, };

/**
 * `[api]`: Switchboard's gateway HTTP API.
 */
export type ApiConfig = { 
/**
 * The loopback address and port it listens on.
 */
listen: string, 
/**
 * Its bearer token; generated and saved on first start when empty.
 */
token: string, 
/**
 * A second address for the Stakpak watch scheduler, which replaces a gateway URL on
 * `localhost` or `127.0.0.1` with its own server's: `auto` (127.0.0.2 and the port of
 * `listen`, when `listen` is on 127.0.0.1), `off`, or an address and port.
 */
scheduler_listen: string, };

/**
 * `[channels]`: the chat platforms; a missing section means the platform is not set up.
 */
export type ChannelsConfig = { 
/**
 * `[channels.telegram]`.
 */
telegram?: TelegramConfig | null, 
/**
 * `[channels.slack]`.
 */
slack?: SlackConfig | null, 
/**
 * `[channels.discord]`.
 */
discord?: DiscordConfig | null, };

/**
 * `[channels.telegram]`.
 */
export type TelegramConfig = { 
/**
 * Whether the adapter runs.
 */
enabled: boolean, 
/**
 * The bot token from @BotFather.
 */
token: string, 
/**
 * The Bot API base URL (a local Bot API server or a proxy can stand in).
 */
api_base: string, 
/**
 * How unknown senders in direct messages are treated.
 */
dm_policy: DmPolicy, 
/**
 * User ids admitted without pairing.
 */
allowed_users: Array<string>, 
/**
 * User ids who may decide approvals and admit others from a chat.
 */
owners: Array<string>, 
/**
 * Who may approve a tool call from the chat: `auto` (owners when there are any, else the
 * person who asked), `requester` or `owners`.
 */
approvers: Approvers, 
/**
 * In groups, answer only when mentioned (or replied to).
 */
require_mention: boolean, 
/**
 * How the reply reaches the chat while the agent works: `auto` (the platform's own way of
 * showing a reply as it is written), `paragraphs` (each finished turn as its own message),
 * `edit` (one message that grows as the agent writes), or `off` (the whole reply when the
 * run ends).
 */
streaming: Streaming, 
/**
 * While the reply grows (`auto`, `edit`): the tool that runs, as a line under it (Slack: a
 * task card).
 */
show_tools: boolean, 
/**
 * Group ids (Telegram chats, Slack channels) where the bot answers; empty: none.
 */
groups: Array<string>, 
/**
 * Groups where anyone may talk to the agent, admitted or not (the others need admitted
 * senders).
 */
open_groups: Array<string>, };

/**
 * `[channels.slack]`.
 */
export type SlackConfig = { 
/**
 * Whether the adapter runs.
 */
enabled: boolean, 
/**
 * The bot token (`xoxb-…`) for the Web API.
 */
bot_token: string, 
/**
 * The app-level token (`xapp-…`) for Socket Mode.
 */
app_token: string, 
/**
 * The Web API base URL.
 */
api_base: string, 
/**
 * How unknown senders in direct messages are treated.
 */
dm_policy: DmPolicy, 
/**
 * User ids admitted without pairing.
 */
allowed_users: Array<string>, 
/**
 * User ids who may decide approvals and admit others from a chat.
 */
owners: Array<string>, 
/**
 * Who may approve a tool call from the chat: `auto` (owners when there are any, else the
 * person who asked), `requester` or `owners`.
 */
approvers: Approvers, 
/**
 * In channels, answer only when mentioned (or in a thread it is part of).
 */
require_mention: boolean, 
/**
 * How the reply reaches the chat while the agent works: `auto` (the platform's own way of
 * showing a reply as it is written), `paragraphs` (each finished turn as its own message),
 * `edit` (one message that grows as the agent writes), or `off` (the whole reply when the
 * run ends).
 */
streaming: Streaming, 
/**
 * While the reply grows (`auto`, `edit`): the tool that runs, as a line under it (Slack: a
 * task card).
 */
show_tools: boolean, 
/**
 * Group ids (Telegram chats, Slack channels) where the bot answers; empty: none.
 */
groups: Array<string>, 
/**
 * Groups where anyone may talk to the agent, admitted or not (the others need admitted
 * senders).
 */
open_groups: Array<string>, };

/**
 * `[channels.discord]`.
 */
export type DiscordConfig = { 
/**
 * Whether the adapter runs.
 */
enabled: boolean, 
/**
 * The bot token from the Developer Portal.
 */
token: string, 
/**
 * The REST API base URL.
 */
api_base: string, 
/**
 * How unknown senders in direct messages are treated.
 */
dm_policy: DmPolicy, 
/**
 * User ids admitted without pairing.
 */
allowed_users: Array<string>, 
/**
 * User ids who may decide approvals and admit others from a chat.
 */
owners: Array<string>, 
/**
 * Who may approve a tool call from the chat: `auto` (owners when there are any, else the
 * person who asked), `requester` or `owners`.
 */
approvers: Approvers, 
/**
 * In guild channels, answer only when mentioned (or in a thread it is part of).
 */
require_mention: boolean, 
/**
 * How the reply reaches the chat while the agent works: `auto` (the platform's own way of
 * showing a reply as it is written), `paragraphs` (each finished turn as its own message),
 * `edit` (one message that grows as the agent writes), or `off` (the whole reply when the
 * run ends).
 */
streaming: Streaming, 
/**
 * While the reply grows (`auto`, `edit`): the tool that runs, as a line under it (Slack: a
 * task card).
 */
show_tools: boolean, 
/**
 * Guild ids where it may answer; empty: none.
 */
guilds: Array<string>, 
/**
 * Guilds or channels where anyone may talk to the agent, admitted or not (elsewhere senders
 * must be admitted).
 */
open_groups: Array<string>, };

/**
 * How a direct message from a sender not on the allowlist is treated.
 */
export type DmPolicy = "pairing" | "allowlist" | "open";

/**
 * Who may approve a tool call from a chat (an owner always may; so may the desktop).
 */
export type Approvers = "auto" | "requester" | "owners";

/**
 * How a reply reaches the chat while the run goes on.
 */
export type Streaming = "auto" | "paragraphs" | "edit" | "off";

/**
 * `[notifications]`: desktop notifications.
 */
export type NotificationsConfig = { 
/**
 * Whether native notifications are shown at all.
 */
enabled: boolean, 
/**
 * Hold notifications until turned off.
 */
do_not_disturb: boolean, 
/**
 * Start of the daily quiet hours, `HH:MM`; empty for none.
 */
quiet_hours_start: string, 
/**
 * End of the daily quiet hours, `HH:MM`; empty for none.
 */
quiet_hours_end: string, };

/**
 * `[desktop]`: the desktop app's own settings.
 */
export type DesktopConfig = { 
/**
 * The keys that open the quick chat from anywhere (`Ctrl+Alt+Space`); empty turns it off.
 */
quick_chat_shortcut: string, };

/**
 * `[media]`: photos, files and voice notes people send the bot.
 */
export type MediaConfig = { 
/**
 * The largest file fetched, in megabytes (Telegram's bots get at most 20).
 */
max_mb: number, 
/**
 * The most attachments taken from one message; the rest are left, and the chat is told.
 */
max_files: number, 
/**
 * A program that writes a voice note's transcript to its standard output, run with the
 * audio file's path in place of `{file}` (or after its arguments): for example a local
 * whisper.cpp, `whisper-cli -m /models/ggml-base.bin -nt -f {file}`. Empty: voice notes go
 * to the agent as files.
 */
transcribe_command: string, 
/**
 * How long a transcription may take, in seconds.
 */
transcribe_timeout_secs: number, };

/**
 * The Approvals page's content.
 */
export type ApprovalsView = { 
/**
 * Waiting now, the soonest deadline first.
 */
pending: Array<ApprovalView>, 
/**
 * The audit log, newest first.
 */
history: Array<DecisionView>, rules: Array<RuleView>, };

/**
 * A tool call waiting for a person's decision, as the Approvals page shows it.
 */
export type ApprovalView = { id: string, tool: string, 
/**
 * What the call will do, in a line ("run `cargo test`", "edit src/main.rs").
 */
summary: string, 
/**
 * Everything it will do: the whole command, the diff, the new file, or every argument.
 */
detail: string, 
/**
 * False when something in `detail` is masked (a secret) or folded.
 */
complete: boolean, 
/**
 * The arguments made readable: `key: value` lines, long values folded, secrets masked.
 */
arguments: string, 
/**
 * The arguments exactly as sent (pretty JSON), nothing masked or folded; the window shows
 * them only when asked ("Show masked values").
 */
arguments_whole: string, routing_key: string, session_id: string | null, channel: string | null, requester: string, created_ms: number | null, deadline_ms: number, };

/**
 * One line of the decisions audit log.
 */
export type DecisionView = { at_ms: number, session_id: string, run_id: string, tool_call_id: string, tool: string, action: ApprovalState, decided_by: string, 
/**
 * The platform id of whoever decided from a chat: a display name is the person's choice
 * ("Ann (owner)"), the id is not.
 */
decided_by_id: string | null, 
/**
 * Where it was decided, as a person reads it ("window", "telegram", "engine").
 */
surface: string, 
/**
 * Why it closed, or the scope it was given ("allowed in this chat from now on").
 */
note: string | null, };

/**
 * An "always allow" rule.
 */
export type RuleView = { id: number, tool: string, arg_pattern: string | null, 
/**
 * The channel it is limited to; `None` for every channel.
 */
channel: string | null, created_ms: number, created_by: string, };

/**
 * Where an approval is in its life. Stored as text; an unknown value is an error, never a guess.
 */
export type ApprovalState = "pending" | "accept" | "reject" | "expired" | "closed";

/**
 * Where an answer came from. A chat answer always comes from the approval's own channel (a
 * button decides only the approval shown in its chat), so the channel is not repeated here.
 */
export type Surface = "window" | "notification" | "tray" | "chat" | "cli" | "engine";

/**
 * What a person answers to a pending approval.
 */
export type ApprovalChoice = "approve" | "allow_conversation" | "always_allow" | "reject";

/**
 * What answering an approval did.
 */
export type DecideOutcome = { "outcome": "decided", action: ApprovalState, message: string, } | { "outcome": "already_decided", action: ApprovalState, decided_by: string, 
/**
 * Where it was decided, as a person reads it.
 */
surface: string, message: string, };

/**
 * A pairing request as the host shows it.
 */
export type PairingRequest = { channel: string, peer_id: string, peer_name: string, code: string, first_message: string, created_ms: number, expires_ms: number, state: PairingState, };

/**
 * Where a pairing request is. Stored as text; an unknown value is an error.
 */
export type PairingState = "pending" | "admitted" | "refused";

/**
 * How a pairing request stopped waiting.
 */
export type PairingOutcome = "admitted" | "refused" | "expired";

/**
 * What admitting or refusing a pairing request did.
 */
export type PairingDecision = { state: PairingState, request: PairingRequest, 
/**
 * The outcome in words, for the page's notice.
 */
message: string, };

/**
 * The kinds of failure the page acts on.
 */
export type ErrorCode = "not_running" | "invalid_settings" | "not_found" | "channel_failed" | "server_failed" | "io" | "invalid_argument" | "engine";

/**
 * An error as the page receives it.
 */
export type IpcError = { code: ErrorCode, message: string, field?: string, };
