// The window's state and the pure reducer that applies the shell's events to it.

import type { ActivityEntry, ApprovalsView, ConversationView, DesktopLine, HistoryView, LiveReply, Page, PairingView, Snapshot, UiEvent } from "./ipc";
import { upsertMessage } from "./chat";
import { withRequested, withResolved } from "./approvals";
import { addPairing, pairingKey, removePairing } from "./pairing";

/** How many activity entries the page keeps (the shell keeps its own, larger, log). */
export const ACTIVITY_LIMIT = 2000;

export interface AppState {
  page: Page;
  snapshot: Snapshot | null;
  conversations: ConversationView[];
  /** The conversation open on the Sessions page. */
  selected: string | null;
  history: HistoryView | null;
  /** The reply being written, per conversation. */
  live: Record<string, LiveReply>;
  activity: ActivityEntry[];
  activityQuery: string;
  /** The Approvals page's content, once fetched. */
  approvals: ApprovalsView | null;
  /** Approvals being decided from this window (their buttons wait). */
  deciding: string[];
  /** Strangers asking to talk to the agent, oldest first, once fetched. */
  pairings: PairingView[] | null;
  /** Pairing requests being admitted or refused from this window, by `pairingKey`. */
  pairingBusy: string[];
  /** Conversations (or the open history) changed and should be fetched again. */
  stale: boolean;
  /** The desktop chat open on the Chat page (and in the quick chat). */
  chatId: string | null;
  /** Its transcript, once fetched. */
  transcript: DesktopLine[] | null;
  /** In the quick chat: the chat's conversation it talks into, when it is not a desktop chat
   * (a reply to a watch notification that went to Telegram, say). */
  quickKey: string | null;
}

export function initialState(): AppState {
  return {
    page: "channels",
    snapshot: null,
    conversations: [],
    selected: null,
    history: null,
    live: {},
    activity: [],
    activityQuery: "",
    approvals: null,
    deciding: [],
    pairings: null,
    pairingBusy: [],
    stale: false,
    chatId: null,
    transcript: null,
    quickKey: null,
  };
}

/** The newer of two snapshots: an event and a call's answer may arrive in either order, and
 * an older one must not undo what a newer one showed. */
export function latest(current: Snapshot | null, incoming: Snapshot): Snapshot {
  return current && current.seq > incoming.seq ? current : incoming;
}

/** Newest first, without duplicates (the same id may come from the event and from a fetch). */
export function mergeActivity(current: readonly ActivityEntry[], incoming: readonly ActivityEntry[]): ActivityEntry[] {
  const byId = new Map<number, ActivityEntry>();
  for (const entry of [...incoming, ...current]) {
    if (!byId.has(entry.id)) byId.set(entry.id, entry);
  }
  return [...byId.values()].sort((a, b) => b.id - a.id).slice(0, ACTIVITY_LIMIT);
}

export function reduce(state: AppState, event: UiEvent): AppState {
  switch (event.kind) {
    case "snapshot":
      return { ...state, snapshot: latest(state.snapshot, event.snapshot) };
    case "activity":
      return { ...state, activity: mergeActivity(state.activity, [event.entry]) };
    case "streaming":
      return { ...state, live: { ...state.live, [event.routing_key]: { run_id: event.run_id, text: event.text } } };
    case "desktop_message":
      // The open chat's reply grows in place; another chat's changes its place in the list.
      if (state.chatId && event.message.chat_id === state.chatId && state.transcript) {
        return { ...state, transcript: upsertMessage(state.transcript, event.message, state.chatId) };
      }
      return state;
    case "run_finished": {
      const live = { ...state.live };
      delete live[event.routing_key];
      const history =
        state.history?.routing_key === event.routing_key ? { ...state.history, live: null } : state.history;
      return { ...state, live, history, stale: true };
    }
    case "conversations_changed":
      return { ...state, stale: true };
    case "approval_requested":
      // Added at once when the list is loaded; fetched when it is not yet.
      return { ...state, approvals: withRequested(state.approvals, event.approval), stale: state.stale || state.approvals === null };
    case "approval_resolved":
      // Decided here or elsewhere, or expired: it leaves the list; the history is fetched again.
      return {
        ...state,
        approvals: withResolved(state.approvals, event.approval_id),
        deciding: state.deciding.filter((id) => id !== event.approval_id),
        stale: true,
      };
    case "pairing_requested":
      // Added at once when the list is loaded; fetched when it is not yet.
      return state.pairings
        ? { ...state, pairings: addPairing(state.pairings, event.request) }
        : { ...state, stale: true };
    case "pairing_resolved": {
      // Admitted or refused here, from a chat or by the headless binary, or expired: it leaves.
      const key = pairingKey(event);
      return {
        ...state,
        pairings: state.pairings ? removePairing(state.pairings, event.channel, event.code) : state.pairings,
        pairingBusy: state.pairingBusy.filter((k) => k !== key),
      };
    }
    case "navigate":
      return {
        ...state,
        page: event.page,
        selected: event.routing_key ?? state.selected,
        history: event.routing_key && event.routing_key !== state.selected ? null : state.history,
      };
  }
}

/** The live reply to show for the open conversation: the event's, else the one the history had. */
export function liveReplyFor(state: AppState, routingKey: string): LiveReply | null {
  return state.live[routingKey] ?? (state.history?.routing_key === routingKey ? state.history.live : null);
}
