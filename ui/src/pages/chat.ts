// Chat: talk to the agent from the window. The desktop chats on the left ("New chat" starts
// another); the open one on the right — what you wrote, the agent's replies as they are written
// (with the tool that runs), approval prompts answered in place — and the box to write in.
// The quick chat window shows the same pane, compact.

import { h, since } from "../dom";
import type { Ctx } from "../ctx";
import { commands, type ApprovalChoice, type ApprovalView, type DesktopLine, type DesktopMessage } from "../ipc";
import { chatKey, chatTitle, desktopChats, LAST_CHAT_KEY, newId, personState, taskMark, working } from "../chat";
import { clockTime, timeAgo } from "../format";
import { inlineView, markdownView } from "../markdown";

/** The box the person writes in: one element for the page's life, so redraws (a reply
 * streaming in) never take what is being typed. */
const composer = h("textarea", {
  class: "composer-input",
  rows: "2",
  placeholder: "Message the agent… (Enter sends, Shift+Enter for a new line)",
  "aria-label": "Message the agent",
  "data-testid": "chat-input",
  "data-key": "chat-input",
});

/** Focuses the box (after the page is drawn). */
export function focusComposer(): void {
  composer.focus({ preventScroll: true });
}

/** Remembers the chat used last (the quick chat opens on it). */
export function rememberChat(chatId: string): void {
  try {
    localStorage.setItem(LAST_CHAT_KEY, chatId);
  } catch {
    // No storage: the quick chat starts a new chat.
  }
}

export function lastChat(): string | null {
  try {
    return localStorage.getItem(LAST_CHAT_KEY);
  } catch {
    return null;
  }
}

/** Reads the open chat's transcript (and the approvals its prompts need). */
export async function loadChat(ctx: Ctx): Promise<void> {
  const chatId = ctx.state.chatId;
  if (!chatId || !ctx.state.snapshot?.engine_running) return;
  try {
    const [transcript, approvals] = await Promise.all([commands.desktopTranscript(chatId), commands.approvals().catch(() => ctx.state.approvals)]);
    // The person may have switched chats meanwhile. Words still on their way stay shown.
    if (ctx.state.chatId === chatId) ctx.set({ transcript: [...transcript, ...unstoredIn(chatId, transcript)], approvals });
  } catch (e) {
    ctx.notice(ctx.errorText(e), "error");
  }
}

/** Opens a chat (a new one with `null`). */
export function openChat(ctx: Ctx, chatId: string | null): void {
  const id = chatId ?? newId();
  if (chatId) rememberChat(chatId);
  ctx.set({ chatId: id, transcript: chatId ? null : [] });
  if (chatId) void loadChat(ctx);
  focusComposer();
}

type PersonLine = Extract<DesktopLine, { from: "person" }>;

/** A message sent and not stored yet: shown as waiting until it is. */
interface Outgoing {
  chatId: string;
  clientId: string;
  text: string;
  line: PersonLine;
}

/** What was sent and is not stored yet, in the order it was written: stored one at a time, in
 * that order, by [`flush`]. */
const outbox: Outgoing[] = [];
let flushing: Promise<void> | null = null;

/** Closes the quick chat once everything sent from it is stored: Enter then Esc at once must
 * not take the message away with the window. */
export function closeQuickChat(): void {
  void (flushing ?? Promise.resolve())
    .catch(() => undefined)
    .then(() => commands.closeQuickChat());
}

/** The lines of chat `chatId` not stored yet, but for those `transcript` already has (stored
 * while the answer to their send is on its way: the same words, received after they were sent;
 * each stored line stands for one of them). */
function unstoredIn(chatId: string, transcript: readonly DesktopLine[]): PersonLine[] {
  const taken = new Set<DesktopLine>();
  return outbox
    .filter((o) => o.chatId === chatId)
    .filter((o) => {
      const stored = transcript.find((l) => !taken.has(l) && l.from === "person" && l.journal_id >= 0 && l.text === o.text && l.at_ms >= o.line.at_ms);
      if (stored) taken.add(stored);
      return !stored;
    })
    .map((o) => o.line);
}

/** Sends what the box holds. The box is cleared at once and the words shown as waiting, so a
 * second message can be written and sent while the first is still being stored; the Send button
 * is never held disabled for that (a click on it must never be lost). */
function send(ctx: Ctx): void {
  const text = composer.value.trim();
  if (!text) return;
  const chatId = ctx.state.chatId ?? newId();
  const line: PersonLine = { from: "person", journal_id: -1, text, state: "queued", error: null, at_ms: Date.now() };
  composer.value = "";
  outbox.push({ chatId, clientId: newId(), text, line });
  ctx.set({ chatId, transcript: [...(ctx.state.transcript ?? []), line] });
  flushing ??= flush(ctx).finally(() => (flushing = null));
}

/** Stores the outbox's messages one after the other. When one is refused, nothing of it was
 * stored, and what was written after it is not sent either (it would arrive first): all of
 * them go back in the box, in order, for the person to send again. */
async function flush(ctx: Ctx): Promise<void> {
  while (outbox.length > 0) {
    const next = outbox[0];
    try {
      await commands.desktopSend(next.chatId, next.text, next.clientId);
      outbox.shift();
      rememberChat(next.chatId);
    } catch (e) {
      const back = outbox.splice(0);
      const lines = new Set<DesktopLine>(back.map((o) => o.line));
      composer.value = [...back.map((o) => o.text), composer.value.trim()].filter(Boolean).join("\n\n");
      ctx.set({ transcript: (ctx.state.transcript ?? []).filter((l) => !lines.has(l)) });
      ctx.notice(ctx.errorText(e), "error");
    }
    ctx.set({ stale: true });
    void loadChat(ctx);
  }
}

/** What Enter does: send in the chat the pane shows (set as it is drawn). */
let sendHandler: (() => void) | null = null;
composer.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    sendHandler?.();
  }
});

async function decide(ctx: Ctx, approval: ApprovalView, choice: ApprovalChoice): Promise<void> {
  if (ctx.state.deciding.includes(approval.id)) return;
  ctx.set({ deciding: [...ctx.state.deciding, approval.id] });
  try {
    const outcome = await commands.decideApproval(approval.id, choice);
    ctx.notice(outcome.message, outcome.outcome === "decided" ? "ok" : "error");
  } catch (e) {
    ctx.notice(ctx.errorText(e), "error");
  } finally {
    ctx.set({ deciding: ctx.state.deciding.filter((id) => id !== approval.id) });
  }
}

function approvalCard(ctx: Ctx, message: DesktopMessage): HTMLElement {
  const approval = ctx.state.approvals?.pending.find((a) => a.id === message.approval_id) ?? null;
  const busy = approval !== null && ctx.state.deciding.includes(approval.id);
  const button = (choice: ApprovalChoice, label: string, tone: string, title: string) =>
    h(
      "button",
      {
        type: "button",
        class: tone,
        "data-testid": `chat-${choice}`,
        "data-key": `chat-${choice}-${message.id}`,
        disabled: busy,
        title,
        onclick: () => approval && void decide(ctx, approval, choice),
      },
      label,
    );
  return h(
    "div",
    { class: "msg approval-msg", "data-testid": "chat-approval", "data-state": message.outcome ? "closed" : approval ? "pending" : "unknown" },
    h("span", { class: "msg-role" }, "approval"),
    h("p", { class: "wrap" }, h("strong", {}, "The agent asks to "), inlineView(message.text)),
    approval && approval.detail !== approval.summary ? h("pre", { class: "detail wrap" }, approval.detail) : null,
    message.outcome
      ? h("p", { class: "muted", "data-testid": "chat-approval-outcome" }, message.outcome)
      : approval
        ? h(
            "div",
            { class: "approval-actions" },
            button("approve", "Approve", "primary", "Run this call once"),
            button("allow_conversation", "Allow in this chat", "", "Run it, and let this tool run without asking in this chat"),
            button("reject", "Reject", "danger", "Do not run it; the agent is told"),
            h("span", { class: "muted" }, `${timeAgo(approval.created_ms ?? message.created_ms, Date.now())} · `, h("button", { type: "button", class: "link", onclick: () => ctx.navigate("approvals") }, "more on Approvals")),
          )
        : h("p", { class: "muted" }, "Waiting for a decision…"),
  );
}

function lineView(ctx: Ctx, line: DesktopLine, now: number): HTMLElement {
  if (line.from === "person") {
    const state = personState(line);
    return h(
      "div",
      { class: "msg user", "data-testid": "chat-person", "data-state": line.state },
      h("span", { class: "msg-role" }, "you", state ? ` · ${state}` : "", " · ", clockTime(line.at_ms, now)),
      h("p", { class: line.state === "failed" ? "wrap error" : "wrap" }, line.text),
    );
  }
  const m = line.message;
  if (m.kind === "approval") return approvalCard(ctx, m);
  return h(
    "div",
    { class: m.streaming ? "msg assistant live" : "msg assistant", "data-testid": m.streaming ? "chat-reply-live" : "chat-reply", "aria-live": m.streaming ? "polite" : null },
    h("span", { class: "msg-role" }, m.streaming ? "agent · writing…" : "agent", " · ", clockTime(m.created_ms, now)),
    m.text ? markdownView(m.text) : null,
    m.tasks.length > 0
      ? h(
          "ul",
          { class: "tasks", "data-testid": "chat-tasks" },
          m.tasks.map((t) => h("li", { "data-status": t.status }, `${taskMark(t)} `, inlineView(t.title))),
        )
      : null,
  );
}

/** The open chat: its lines and the box to write in. `compact` for the quick chat. */
export function chatPane(ctx: Ctx, compact: boolean): HTMLElement {
  const { transcript, chatId, snapshot } = ctx.state;
  const now = Date.now();
  const lines = transcript ?? [];
  const busy = working(lines);
  const live = lines.some((l) => l.from === "agent" && l.message.streaming);
  sendHandler = () => send(ctx);
  const running = snapshot?.engine_running ?? false;
  composer.disabled = !running;
  const empty =
    transcript === null
      ? h("p", { class: "muted" }, "Loading…")
      : lines.length === 0
        ? h(
            "div",
            { class: "chat-hint muted", "data-testid": "chat-hint" },
            h("p", {}, "Ask the agent anything; it answers here as it works."),
            h("p", {}, "When it wants to run a command, it asks you first: here, on the Approvals page and as a notification."),
            snapshot?.demo ? h("p", {}, "Try: ", h("em", {}, "check the disk space")) : null,
          )
        : null;
  return h(
    "div",
    { class: compact ? "chat-pane compact" : "chat-pane", "data-testid": "chat-pane", "data-chat": chatId ?? "" },
    h(
      "div",
      { class: "messages chat-messages", "data-testid": "messages" },
      empty,
      lines.map((l) => lineView(ctx, l, now)),
      busy && !live ? h("p", { class: "muted typing", "data-testid": "chat-typing" }, "The agent is working…") : null,
    ),
    h(
      "form",
      {
        class: "composer",
        onsubmit: (e: Event) => {
          e.preventDefault();
          send(ctx);
        },
      },
      composer,
      h(
        "div",
        { class: "composer-actions" },
        h("button", { type: "submit", class: "primary", "data-testid": "chat-send", disabled: !running }, "Send"),
        busy && chatId
          ? h("button", { type: "button", class: "danger", "data-testid": "chat-cancel", onclick: () => ctx.run(commands.cancelRun(chatKey(chatId)), "Cancelling…") }, "Stop")
          : null,
      ),
    ),
  );
}

export function renderChat(ctx: Ctx): HTMLElement {
  const { conversations, chatId, transcript, snapshot } = ctx.state;
  const chats = desktopChats(conversations);
  const open = chats.find((c) => c.chatId === chatId) ?? null;
  const title = chatTitle(open?.conversation ?? null, transcript ?? []);
  return h(
    "section",
    { class: "page chat", "data-page": "chat" },
    h(
      "header",
      { class: "page-head" },
      h("h1", {}, "Chat"),
      h(
        "div",
        { class: "page-actions" },
        h("button", { type: "button", "data-testid": "new-chat", onclick: () => openChat(ctx, null) }, "New chat"),
        h("button", { type: "button", title: "A small window above everything else", onclick: () => ctx.run(commands.openQuickChat(chatId ? chatKey(chatId) : null)) }, "Quick chat"),
      ),
    ),
    snapshot?.demo
      ? h(
          "div",
          { class: "banner info", "data-testid": "demo-banner" },
          h("strong", {}, "This is a demo. "),
          "The agent here is a stand-in from Switchboard's test kit: it answers, asks before it \"runs\" a command, and nothing runs on your machine. ",
          "To use your own agent, start ",
          h("code", {}, "stakpak up"),
          " and run Switchboard with your own configuration (",
          h("code", {}, "~/.config/switchboard/config.toml"),
          "; Settings can import ",
          h("code", {}, "~/.stakpak/autopilot.toml"),
          "). Add a Telegram, Slack or Discord bot in Settings to reach it from your phone. What you change in this demo is thrown away when it ends.",
        )
      : null,
    h(
      "div",
      { class: "split" },
      h(
        "ul",
        { class: "conversation-list", "aria-label": "Desktop chats", "data-testid": "chat-list" },
        chatId && !open ? h("li", {}, h("button", { type: "button", class: "conversation selected", "aria-current": "true" }, h("span", { class: "conversation-title" }, title))) : null,
        chats.map(({ chatId: id, conversation }) =>
          h(
            "li",
            {},
            h(
              "button",
              {
                type: "button",
                class: id === chatId ? "conversation selected" : "conversation",
                "aria-current": id === chatId ? "true" : null,
                "data-testid": `chat-${id}`,
                onclick: () => openChat(ctx, id),
              },
              h("span", { class: "conversation-title" }, chatTitle(conversation, [])),
              h(
                "span",
                { class: "conversation-meta" },
                conversation.state === "running" ? h("span", { class: "badge busy" }, "working") : null,
                since(conversation.last_used_ms, { class: "muted" }),
              ),
            ),
          ),
        ),
      ),
      chatPane(ctx, false),
    ),
  );
}
