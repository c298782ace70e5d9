// The quick chat window: one conversation, compact, above everything else — the desktop chat
// used last (or the one asked for), or a chat's conversation a notification's "Reply" opened.
// Enter sends; Esc closes it.

import { h } from "../dom";
import type { Ctx } from "../ctx";
import { commands } from "../ipc";
import { chatOf, chatTitle, desktopChats, newId } from "../chat";
import { chatPane, closeQuickChat, loadChat, rememberChat } from "./chat";
import { liveReplyFor } from "../state";

/** What the quick chat talks into, from its address (`#quick&key=…`): a desktop chat (the one
 * named, else the one used last, else a new one) or a chat's conversation. */
export function quickTarget(hash: string, last: string | null): { chatId: string | null; quickKey: string | null; transcript: null | [] } {
  const key = new URLSearchParams(hash.replace(/^#quick&?/, "")).get("key") || null;
  const desktop = chatOf(key);
  if (key && !desktop) return { chatId: null, quickKey: key, transcript: null };
  const chatId = desktop ?? last;
  return chatId ? { chatId, quickKey: null, transcript: null } : { chatId: newId(), quickKey: null, transcript: [] };
}

/** Reads what the quick chat shows. */
export async function loadQuick(ctx: Ctx): Promise<void> {
  const key = ctx.state.quickKey;
  if (key) {
    try {
      const [history, conversations] = await Promise.all([commands.history(key), commands.conversations()]);
      ctx.set({ history, conversations, selected: key });
    } catch (e) {
      ctx.notice(ctx.errorText(e), "error");
    }
    return;
  }
  const conversations = await commands.conversations().catch(() => ctx.state.conversations);
  ctx.set({ conversations });
  if (ctx.state.chatId) await loadChat(ctx);
}

/** The box to answer a chat's conversation in: one element for the window's life, so a reply
 * streaming in never takes what is being typed. */
const answerInput = h("textarea", {
  class: "composer-input",
  rows: "2",
  placeholder: "Answer… (Enter sends; the agent replies in the chat)",
  "aria-label": "Answer",
  "data-testid": "chat-input",
  "data-key": "chat-input",
});
let answerHandler: (() => void) | null = null;
answerInput.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    answerHandler?.();
  }
});

/** A chat's conversation (not a desktop chat): its latest messages and the reply being written. */
function conversationPane(ctx: Ctx, key: string): HTMLElement {
  const { history } = ctx.state;
  const live = liveReplyFor(ctx.state, key);
  const lines = (history?.routing_key === key ? history.server : []).slice(-12);
  const input = answerInput;
  const send = async () => {
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    try {
      await commands.say(key, text, newId());
      ctx.notice("Sent: the agent answers in the chat.", "ok");
    } catch (e) {
      input.value = text;
      ctx.notice(ctx.errorText(e), "error");
    }
  };
  answerHandler = () => void send();
  return h(
    "div",
    { class: "chat-pane compact", "data-testid": "chat-pane", "data-key": key },
    h(
      "div",
      { class: "messages chat-messages", "data-testid": "messages" },
      history === null ? h("p", { class: "muted" }, "Loading…") : null,
      lines.map((l) => h("div", { class: `msg ${l.role === "user" ? "user" : "assistant"}` }, h("span", { class: "msg-role" }, l.role), h("p", { class: "wrap" }, l.text))),
      live ? h("div", { class: "msg assistant live", "data-testid": "chat-reply-live" }, h("span", { class: "msg-role" }, "agent · writing…"), h("p", { class: "wrap" }, live.text || "…")) : null,
    ),
    h(
      "form",
      {
        class: "composer",
        onsubmit: (e: Event) => {
          e.preventDefault();
          void send();
        },
      },
      input,
      h("div", { class: "composer-actions" }, h("button", { type: "submit", class: "primary", "data-testid": "chat-send" }, "Send")),
    ),
  );
}

export function renderQuick(ctx: Ctx): HTMLElement {
  const { quickKey, chatId, conversations, transcript } = ctx.state;
  const conversation = quickKey
    ? (conversations.find((c) => c.routing_key === quickKey) ?? null)
    : (desktopChats(conversations).find((c) => c.chatId === chatId)?.conversation ?? null);
  const title = quickKey ? (conversation?.title ?? quickKey) : chatTitle(conversation, transcript ?? []);
  const where = quickKey ? conversation?.channel ?? "" : "desktop chat";
  if (chatId && !quickKey) rememberChat(chatId);
  return h(
    "section",
    { class: "quick-chat", "data-testid": "quick-chat" },
    h(
      "header",
      { class: "quick-head" },
      h("div", {}, h("strong", { "data-testid": "quick-title" }, title), " ", h("span", { class: "muted" }, where)),
      h(
        "div",
        { class: "page-actions" },
        h("button", { type: "button", class: "link", "data-testid": "quick-close", title: "Close (Esc)", onclick: closeQuickChat }, "Close"),
      ),
    ),
    quickKey ? conversationPane(ctx, quickKey) : chatPane(ctx, true),
  );
}
