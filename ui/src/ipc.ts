// The typed contract with the shell: every command the page calls, every event it receives,
// and the values they carry. The types are generated from the Rust view types into
// `./gen/ipc.ts` (a Rust test fails when that file is stale); this file adds the names the
// page uses, the lists it iterates, and the calls.

import { invoke } from "@tauri-apps/api/core";
import { listen, type UnlistenFn } from "@tauri-apps/api/event";
import type {
  ActivityEntry,
  ApprovalChoice,
  ApprovalMode,
  ApprovalState,
  ApprovalsView,
  Config,
  ConversationSummary,
  DecideOutcome,
  DesktopLine,
  ErrorCode as ShellErrorCode,
  HistoryView,
  Identity,
  ImportView,
  IpcError as ShellIpcError,
  Page,
  PairingDecision,
  PairingRequest,
  SaveOutcome,
  ServerCheck,
  SettingsView,
  Snapshot,
  TelegramConfig,
  UiEvent,
} from "./gen/ipc";

export type * from "./gen/ipc";

/** The one event name the shell emits; the payload is a `UiEvent`. */
export const UI_EVENT = "switchboard:ui";

export const PAGES: readonly Page[] = ["chat", "channels", "sessions", "approvals", "activity", "settings"];
export const APPROVAL_MODES: readonly ApprovalMode[] = ["ask", "allowlist", "allow_all", "deny_all"];

export type ChannelName = "telegram" | "slack" | "discord";
export const CHANNEL_NAMES: readonly ChannelName[] = ["telegram", "slack", "discord"];

/** A conversation as the Sessions page lists it. */
export type ConversationView = ConversationSummary;
/** A stranger asking to talk to the agent (a pending pairing code). */
export type PairingView = PairingRequest;
/** How a decision in the audit log ended. */
export type DecisionAction = ApprovalState;
/** The settings every channel has (Telegram's are exactly those plus its token). */
export type ChannelCommon = Omit<TelegramConfig, "token">;

/** The shell's error codes, and `internal` for a failure of the IPC itself (see `toIpcError`). */
export type ErrorCode = ShellErrorCode | "internal";
export type IpcError = Omit<ShellIpcError, "code"> & { code: ErrorCode };

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
  connectAutopilot: () => call<string[]>("connect_autopilot"),
  activity: () => call<ActivityEntry[]>("activity"),
  approvals: () => call<ApprovalsView>("approvals"),
  decideApproval: (approvalId: string, choice: ApprovalChoice, pattern?: string) =>
    call<DecideOutcome>("decide_approval", { approvalId, choice, pattern: pattern?.trim() ? pattern.trim() : null }),
  removeRule: (id: number) => call<boolean>("remove_rule", { id }),
  pairingRequests: () => call<PairingView[]>("pairing_requests"),
  admitPairing: (channel: string, code: string) => call<PairingDecision>("admit_pairing", { channel, code }),
  refusePairing: (channel: string, code: string) => call<PairingDecision>("refuse_pairing", { channel, code }),
  desktopTranscript: (chatId: string) => call<DesktopLine[]>("desktop_transcript", { chatId }),
  desktopSend: (chatId: string, text: string, clientId: string) => call<boolean>("desktop_send", { chatId, text, clientId }),
  say: (routingKey: string, text: string, clientId: string) => call<boolean>("say", { routingKey, text, clientId }),
  openQuickChat: (routingKey: string | null) => call<void>("open_quick_chat", { routingKey }),
  closeQuickChat: () => call<void>("close_quick_chat"),
};

/** Calls `handler` with each event from the shell. */
export function onUiEvent(handler: (event: UiEvent) => void): Promise<UnlistenFn> {
  return listen<UiEvent>(UI_EVENT, (event) => handler(event.payload));
}
