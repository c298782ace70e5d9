// Pure formatting for the window: times, states, labels, secrets and the activity search.

import type { ActivityEntry, ChannelState, ChatType, ConversationView, Peer, ServerState } from "./ipc";

/** "just now", "5 s ago", "3 min ago", "2 h ago", "4 d ago"; "never" without a time. */
export function timeAgo(ms: number | null | undefined, now: number): string {
  if (ms === null || ms === undefined || ms <= 0) return "never";
  const seconds = Math.max(0, Math.round((now - ms) / 1000));
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${seconds} s ago`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ago`;
  return `${Math.floor(hours / 24)} d ago`;
}

/** When (ms) the text [`timeAgo`] gives for `ms` changes next: at the next whole minute, hour
 * or day of its age; under a minute, half a minute on (seconds are not counted one by one, so a
 * fresh time does not repaint the page every second). `null` for "never". */
export function nextAgeChange(ms: number | null | undefined, now: number): number | null {
  if (ms === null || ms === undefined || ms <= 0) return null;
  const age = Math.max(0, now - ms);
  const MINUTE = 60_000;
  const HOUR = 60 * MINUTE;
  const DAY = 24 * HOUR;
  if (age < MINUTE) return now + Math.min(30_000, MINUTE - age);
  // `timeAgo` rounds to the second: a unit's next count shows from half a second before it.
  const unit = age < HOUR ? MINUTE : age < 48 * HOUR ? HOUR : DAY;
  return ms + (Math.floor((age + 500) / unit) + 1) * unit - 500;
}

/** The local time of day (HH:MM:SS), and the date too when it is not today. */
export function clockTime(ms: number, now: number): string {
  const at = new Date(ms);
  const pad = (n: number) => String(n).padStart(2, "0");
  const time = `${pad(at.getHours())}:${pad(at.getMinutes())}:${pad(at.getSeconds())}`;
  const today = new Date(now);
  const sameDay =
    at.getFullYear() === today.getFullYear() && at.getMonth() === today.getMonth() && at.getDate() === today.getDate();
  return sameDay ? time : `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())} ${time}`;
}

const CHANNEL_STATES: Record<ChannelState, string> = {
  connecting: "Connecting",
  connected: "Connected",
  reconnecting: "Reconnecting",
  rate_limited: "Rate limited",
  auth_failed: "Credentials refused",
  disabled: "Off",
};

export function channelStateLabel(state: ChannelState): string {
  return CHANNEL_STATES[state] ?? state;
}

/** The tone of a state badge: good, busy, bad or off. */
export function channelTone(state: ChannelState): "good" | "busy" | "bad" | "off" {
  switch (state) {
    case "connected":
      return "good";
    case "connecting":
    case "rate_limited":
      return "busy";
    case "reconnecting":
    case "auth_failed":
      return "bad";
    default:
      return "off";
  }
}

export function serverStateLabel(state: ServerState): string {
  switch (state) {
    case "ok":
      return "Reachable";
    case "unreachable":
      return "Unreachable";
    case "unauthorized":
      return "Refuses the token";
    default:
      return "Not checked yet";
  }
}

/** `telegram` → `Telegram`. */
export function titleCase(name: string): string {
  return name.length === 0 ? name : name[0].toUpperCase() + name.slice(1);
}

export function peerLabel(peer: Peer): string {
  return peer.name && peer.name.length > 0 ? `${peer.name} (${peer.id})` : peer.id;
}

export function chatLabel(chat: ChatType): string {
  switch (chat.type) {
    case "direct":
      return "Direct message";
    case "group":
      return `Group ${chat.id}`;
    case "thread":
      return `Thread ${chat.thread_id} in ${chat.group_id}`;
  }
}

export function conversationTitle(c: ConversationView): string {
  return c.title && c.title.length > 0 ? c.title : c.routing_key;
}

export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/**
 * A secret as the page shows it unless revealed: its first and last characters around a fixed
 * run of dots (the length is not given away). Short secrets are dots only; empty stays empty.
 */
export function maskSecret(secret: string): string {
  if (secret.length === 0) return "";
  if (secret.length < 12) return "••••••••";
  return `${secret.slice(0, 3)}••••••••${secret.slice(-2)}`;
}

/** The activity entries matching every word of `query` (in text, scope or kind), newest first. */
export function filterActivity(entries: readonly ActivityEntry[], query: string): ActivityEntry[] {
  const words = query.toLowerCase().split(/\s+/).filter((w) => w.length > 0);
  if (words.length === 0) return [...entries];
  return entries.filter((entry) => {
    const haystack = `${entry.text} ${entry.scope} ${entry.kind} ${entry.level}`.toLowerCase();
    return words.every((word) => haystack.includes(word));
  });
}

/** A list typed as text (commas or new lines) as a clean array, and back. */
export function parseList(text: string): string[] {
  return text
    .split(/[\n,]/)
    .map((item) => item.trim())
    .filter((item) => item.length > 0);
}

export function formatList(items: readonly string[]): string {
  return items.join(", ");
}

/** A token count: 950, 1.2k, 12k, 4.1M. */
export function formatTokens(n: number): string {
  if (n < 1000) return String(n);
  if (n < 1_000_000) return `${(n / 1000).toFixed(n < 10_000 ? 1 : 0)}k`;
  return `${(n / 1_000_000).toFixed(1)}M`;
}

/** A file's size: "812 B", "4.2 KB", "1.3 MB". */
export function fileSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}
