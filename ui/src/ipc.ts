// The typed contract with the shell: every command the page calls, every event it receives,
// and the values they carry. Mirrors `src-tauri/src/ipc.rs` (and the engine types it carries);
// keep the two in step.

import { invoke } from "@tauri-apps/api/core";
import { listen, type UnlistenFn } from "@tauri-apps/api/event";

/** The one event name the shell emits; the payload is a `UiEvent`. */
export const UI_EVENT = "switchboard:ui";

export type Page = "channels" | "sessions" | "approvals" | "activity" | "settings";
export const PAGES: readonly Page[] = ["channels", "sessions", "approvals", "activity", "settings"];

export type ApprovalMode = "ask" | "allowlist" | "allow_all" | "deny_all";
export const APPROVAL_MODES: readonly ApprovalMode[] = ["ask", "allowlist", "allow_all", "deny_all"];
export type DmScope = "main" | "per_peer" | "per_channel_peer";
export type DmPolicy = "pairing" | "allowlist" | "open";

export type ChannelState = "connecting" | "connected" | "reconnecting" | "rate_limited" | "auth_failed" | "disabled";

export interface Identity {
  id: string;
  name: string;
}

export interface ChannelStatus {
  name: string;
  enabled: boolean;
  state: ChannelState;
  identity: Identity | null;
  last_error: string | null;
  last_activity_ms: number | null;
  received: number;
  sent: number;
}

export type ServerState = "unknown" | "ok" | "unreachable" | "unauthorized";

export interface ServerView {
  url: string;
  state: ServerState;
  detail: string | null;
}

export type ConfigView =
  | { state: "loaded" }
  | { state: "missing"; missing: string[]; autopilot: string | null }
  | { state: "invalid"; field: string; message: string };

export interface Snapshot {
  config_file: string;
  config: ConfigView;
  engine_running: boolean;
  engine_error: string | null;
  server: ServerView;
  paused: boolean;
  approval_mode: ApprovalMode;
  channels: ChannelStatus[];
  conversations: number;
  active_runs: number;
  queued: number;
  pending_approvals: number;
  /** Strangers waiting to be admitted or refused (unexpired pairing codes). */
  pending_pairings: number;
  do_not_disturb: boolean;
  quiet_now: boolean;
  autostart: boolean;
  api_addr: string | null;
  start_page: Page;
}

export interface Peer {
  id: string;
  name?: string;
}

export type ChatType =
  | { type: "direct" }
  | { type: "group"; id: string }
  | { type: "thread"; group_id: string; thread_id: string };

export interface ConversationView {
  routing_key: string;
  session_id: string | null;
  title: string | null;
  channel: string;
  peer: Peer;
  chat: ChatType;
  state: "running" | "queued" | "idle";
  queued: number;
  last_used_ms: number;
}

export interface ChatLine {
  role: string;
  text: string;
}

export type JournalState = "queued" | "sent" | "replied" | "failed";

export interface JournalLine {
  id: number;
  peer: Peer;
  text: string;
  state: JournalState;
  error: string | null;
  answered_notification: string | null;
  created_ms: number;
}

export interface LiveReply {
  run_id: string;
  text: string;
}

export interface HistoryView {
  routing_key: string;
  server: ChatLine[];
  server_error: string | null;
  journal: JournalLine[];
  live: LiveReply | null;
}

export type Level = "info" | "warning" | "error";

export interface ActivityEntry {
  id: number;
  at_ms: number;
  level: Level;
  kind: string;
  scope: string;
  text: string;
}

// ----- the configuration file (crates/switchboard-engine/src/config.rs) -----

export interface Binding {
  channel: string;
  routing_key: string;
  direct?: string | null;
  group?: string | null;
}

interface ChannelCommon {
  enabled: boolean;
  api_base: string;
  dm_policy: DmPolicy;
  allowed_users: string[];
  owners: string[];
  require_mention: boolean;
  /** Where the bot answers in groups (Telegram, Slack); absent in older files. */
  groups?: string[];
  /** Groups where anyone may talk to the agent. */
  open_groups?: string[];
}

export interface TelegramConfig extends ChannelCommon {
  token: string;
}

export interface SlackConfig extends ChannelCommon {
  bot_token: string;
  app_token: string;
}

export interface DiscordConfig extends ChannelCommon {
  token: string;
  guilds: string[];
}

export interface Config {
  server: { url: string; token: string };
  gateway: {
    model: string;
    title_template: string;
    approval_mode: ApprovalMode;
    approval_allowlist: string[];
    approval_timeout_minutes: number;
    prune_after_hours: number;
    delivery_context_ttl_hours: number;
    journal_retention_days: number;
  };
  routing: { dm_scope: DmScope; bindings: Binding[] };
  api: { listen: string; token: string };
  channels: { telegram?: TelegramConfig | null; slack?: SlackConfig | null; discord?: DiscordConfig | null };
  notifications: { enabled: boolean; do_not_disturb: boolean; quiet_hours_start: string; quiet_hours_end: string };
}

export type ChannelName = "telegram" | "slack" | "discord";
export const CHANNEL_NAMES: readonly ChannelName[] = ["telegram", "slack", "discord"];

export interface FieldProblem {
  field: string;
  message: string;
}

export interface SettingsView {
  path: string;
  exists: boolean;
  config: Config;
  problem: FieldProblem | null;
  autopilot: string | null;
}

export interface SaveOutcome {
  snapshot: Snapshot;
  restart_needed: string[];
}

export interface ImportView {
  config: Config;
  imported: string[];
}

export interface ServerCheck {
  version: string;
}

// ----- approvals -----

/** A tool call waiting for a person's decision. */
export interface ApprovalView {
  id: string;
  tool: string;
  /** Readable: `key: value` lines, long values folded, secrets masked (by the engine). */
  arguments: string;
  routing_key: string;
  session_id: string | null;
  channel: string | null;
  requester: string;
  created_ms: number | null;
  deadline_ms: number;
}

/** `accept`, `reject` or `expired`. */
export type DecisionAction = "accept" | "reject" | "expired";

/** One line of the decisions audit log. */
export interface DecisionView {
  at_ms: number;
  session_id: string;
  run_id: string;
  tool_call_id: string;
  tool: string;
  action: DecisionAction | string;
  decided_by: string;
  surface: string;
}

/** An "always allow" rule. */
export interface RuleView {
  id: number;
  tool: string;
  arg_pattern: string | null;
  created_ms: number;
  created_by: string;
}

export interface ApprovalsView {
  /** Soonest deadline first. */
  pending: ApprovalView[];
  /** Newest first. */
  history: DecisionView[];
  rules: RuleView[];
}

export type ApprovalChoice = "approve" | "reject" | "always_allow";

export type DecideOutcome =
  | { outcome: "decided"; action: string; rule_id: number | null; message: string }
  | { outcome: "already_decided"; action: string; decided_by: string; surface: string; message: string };

// ----- pairing requests -----

/** A stranger asking to talk to the agent (a pending pairing code). */
export interface PairingView {
  channel: string;
  peer_id: string;
  /** Their display name, or their id when the platform gives none. */
  peer_name: string;
  code: string;
  /** What they wrote first, as they wrote it: put it in as text, never as markup. */
  first_message: string;
  created_ms: number;
  expires_ms: number;
}

/** `admitted`, `refused`, or (in events) `expired`. */
export type PairingState = "admitted" | "refused" | "expired";

export interface PairingDecision {
  state: PairingState;
  request: PairingView;
  message: string;
}

export type ErrorCode =
  | "not_running"
  | "invalid_settings"
  | "not_found"
  | "channel_failed"
  | "server_failed"
  | "io"
  | "invalid_argument"
  | "engine"
  // Not from the shell: a failure of the IPC itself, wrapped by `toIpcError`.
  | "internal";

export interface IpcError {
  code: ErrorCode;
  message: string;
  field?: string;
}

export type UiEvent =
  | { kind: "snapshot"; snapshot: Snapshot }
  | { kind: "activity"; entry: ActivityEntry }
  | { kind: "streaming"; routing_key: string; run_id: string; text: string }
  | { kind: "run_finished"; routing_key: string; run_id: string; outcome: string }
  | { kind: "conversations_changed"; routing_key: string | null }
  | { kind: "navigate"; page: Page; routing_key: string | null }
  | { kind: "approval_requested"; approval: ApprovalView }
  | { kind: "approval_resolved"; approval_id: string; action: string; decided_by: string; surface: string }
  | { kind: "pairing_requested"; request: PairingView }
  | { kind: "pairing_resolved"; channel: string; code: string; state: PairingState; decided_by: string };

/** Whatever a failed command threw, as an `IpcError` (Tauri itself may reject with a string). */
export function toIpcError(error: unknown): IpcError {
  if (typeof error === "object" && error !== null && "code" in error && "message" in error) {
    const e = error as { code: unknown; message: unknown; field?: unknown };
    const out: IpcError = { code: String(e.code) as ErrorCode, message: String(e.message) };
    if (typeof e.field === "string") out.field = e.field;
    return out;
  }
  return { code: "internal", message: error instanceof Error ? error.message : String(error) };
}

async function call<T>(command: string, args?: Record<string, unknown>): Promise<T> {
  try {
    return await invoke<T>(command, args);
  } catch (error) {
    throw toIpcError(error);
  }
}

// Argument names are the Rust parameters' in camelCase, as Tauri expects.
export const commands = {
  snapshot: () => call<Snapshot>("snapshot"),
  conversations: () => call<ConversationView[]>("conversations"),
  history: (routingKey: string) => call<HistoryView>("history", { routingKey }),
  cancelRun: (routingKey: string) => call<boolean>("cancel_run", { routingKey }),
  setPaused: (paused: boolean) => call<Snapshot>("set_paused", { paused }),
  setApprovalMode: (mode: ApprovalMode) => call<Snapshot>("set_approval_mode", { mode }),
  setChannelEnabled: (name: string, enabled: boolean) => call<Snapshot>("set_channel_enabled", { name, enabled }),
  setDoNotDisturb: (on: boolean) => call<Snapshot>("set_do_not_disturb", { on }),
  setAutostart: (on: boolean) => call<Snapshot>("set_autostart", { on }),
  testChannel: (name: string, settings: Config | null) => call<Identity>("test_channel", { name, settings }),
  testConnection: (url: string, token: string) => call<ServerCheck>("test_connection", { url, token }),
  checkServer: () => call<void>("check_server"),
  settings: () => call<SettingsView>("settings"),
  saveSettings: (config: Config) => call<SaveOutcome>("save_settings", { config }),
  importAutopilot: (into: Config) => call<ImportView>("import_autopilot", { into }),
  activity: () => call<ActivityEntry[]>("activity"),
  approvals: () => call<ApprovalsView>("approvals"),
  decideApproval: (approvalId: string, choice: ApprovalChoice, pattern?: string) =>
    call<DecideOutcome>("decide_approval", { approvalId, choice, pattern: pattern?.trim() ? pattern.trim() : null }),
  removeRule: (id: number) => call<boolean>("remove_rule", { id }),
  pairingRequests: () => call<PairingView[]>("pairing_requests"),
  admitPairing: (channel: string, code: string) => call<PairingDecision>("admit_pairing", { channel, code }),
  refusePairing: (channel: string, code: string) => call<PairingDecision>("refuse_pairing", { channel, code }),
};

/** Calls `handler` with each event from the shell. */
export function onUiEvent(handler: (event: UiEvent) => void): Promise<UnlistenFn> {
  return listen<UiEvent>(UI_EVENT, (event) => handler(event.payload));
}
