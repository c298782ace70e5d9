// The desktop chat's pure parts: its transcript as events change it, which chats there are,
// the chat used last, and new ids. Tested with vitest beside it.

import type { ConversationView, DesktopLine, DesktopMessage, StreamTask } from "./ipc";

/** The desktop chat's channel name (the engine's `DESKTOP`). */
export const DESKTOP = "desktop";
/** Where the chat used last is kept, for the window and the quick chat alike. */
export const LAST_CHAT_KEY = "switchboard.chat";

/** A transcript with an agent message added, or replaced in place when it is already there
 * (a reply growing while written, an approval prompt decided). Messages of other chats are
 * left out. */
export function upsertMessage(lines: readonly DesktopLine[], message: DesktopMessage, chatId: string): DesktopLine[] {
  if (message.chat_id !== chatId) return [...lines];
  const at = lines.findIndex((l) => l.from === "agent" && l.message.id === message.id);
  if (at >= 0) {
    const old = lines[at];
    // An update that arrives after a newer one (events race a refresh) changes nothing.
    if (old.from === "agent" && old.message.updated_ms > message.updated_ms) return [...lines];
    const next = [...lines];
    next[at] = { from: "agent", message };
    return next;
  }
  return [...lines, { from: "agent", message }];
}

/** The desktop chats among the conversations, most recently used first, with their chat ids. */
export function desktopChats(conversations: readonly ConversationView[]): { chatId: string; conversation: ConversationView }[] {
  const out: { chatId: string; conversation: ConversationView }[] = [];
  for (const c of conversations) {
    if (c.channel !== DESKTOP || c.chat.type !== "group") continue;
    out.push({ chatId: c.chat.id, conversation: c });
  }
  return out.sort((a, b) => b.conversation.last_used_ms - a.conversation.last_used_ms);
}

/** The routing key of a desktop chat (bindings aside). */
export function chatKey(chatId: string): string {
  return `${DESKTOP}:${chatId}`;
}

/** The chat id of a desktop routing key, or null for any other conversation. */
export function chatOf(routingKey: string | null | undefined): string | null {
  if (!routingKey || !routingKey.startsWith(`${DESKTOP}:`)) return null;
  const id = routingKey.slice(DESKTOP.length + 1);
  return /^[A-Za-z0-9_-]{1,64}$/.test(id) ? id : null;
}

/** A new id (a chat's, a message's): 32 hex digits from the platform's random source. */
export function newId(random: (bytes: Uint8Array) => Uint8Array = (b) => crypto.getRandomValues(b)): string {
  return Array.from(random(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The chat's title as the list shows it: the session's ("Desktop: check the disk"), without
 * the prefix, else its first words. */
export function chatTitle(conversation: ConversationView | null, lines: readonly DesktopLine[]): string {
  const title = conversation?.title?.replace(/^Desktop:\s*/, "");
  if (title) return title;
  const first = lines.find((l) => l.from === "person");
  if (first && first.from === "person") return first.text.split("\n")[0].slice(0, 48) || "New chat";
  return "New chat";
}

/** What a task line says of a tool call's state. */
export function taskMark(task: StreamTask): string {
  switch (task.status) {
    case "pending":
      return "⏸";
    case "running":
      return "⚙️";
    case "done":
      return "✓";
    case "failed":
      return "✗";
  }
}

/** Whether the agent is still on it: a message of the person's that waits or was sent and has
 * no reply yet, or a reply still being written. */
export function working(lines: readonly DesktopLine[]): boolean {
  return lines.some(
    (l) => (l.from === "person" && (l.state === "queued" || l.state === "sent")) || (l.from === "agent" && l.message.streaming),
  );
}

/** How a person's message stands, in words ("" when answered). */
export function personState(line: DesktopLine): string {
  if (line.from !== "person") return "";
  switch (line.state) {
    case "queued":
      return "waiting";
    case "sent":
      return "sent";
    case "replied":
      return "";
    case "failed":
      return line.error ? `failed: ${line.error}` : "failed";
  }
}
