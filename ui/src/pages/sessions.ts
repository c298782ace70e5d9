// Sessions: the conversations (channel, peer, state, queue, last activity) and the open one's
// history: the server's messages, the reply being written, and what the chat sent (the journal).

import { h, since } from "../dom";
import type { Ctx } from "../ctx";
import { commands, type AttachmentView, type ConversationView, type HistoryView } from "../ipc";
import { chatLabel, clockTime, conversationTitle, fileSize, formatTokens, peerLabel, plural, titleCase } from "../format";
import { liveReplyFor } from "../state";

function conversationItem(ctx: Ctx, c: ConversationView, selected: boolean): HTMLElement {
  return h(
    "li",
    {},
    h(
      "button",
      {
        type: "button",
        class: selected ? "conversation selected" : "conversation",
        "data-testid": `conversation-${c.routing_key}`,
        "data-key": `conversation-${c.routing_key}`,
        "aria-current": selected ? "true" : null,
        onclick: () => ctx.navigate("sessions", c.routing_key),
      },
      h("span", { class: "conversation-title" }, conversationTitle(c)),
      h("span", { class: "muted" }, `${titleCase(c.channel)} · ${peerLabel(c.peer)}`),
      h(
        "span",
        { class: "conversation-meta" },
        h("span", { class: `badge ${c.state === "running" ? "busy" : c.state === "queued" ? "warn" : "off"}` }, c.state),
        c.queued > 0 ? h("span", { class: "muted" }, `${c.queued} queued`) : null,
        since(c.last_used_ms, { class: "muted" }),
      ),
    ),
  );
}

/** What the conversation's runs cost, as their usage reports say. */
function usageLine(c: ConversationView): HTMLElement | null {
  const u = c.usage;
  if (!u || u.runs === 0) return null;
  return h(
    "p",
    { class: "muted", "data-testid": "usage" },
    `Last run ${formatTokens(u.last_total_tokens)} tokens (${formatTokens(u.last_prompt_tokens)} in, ${formatTokens(u.last_completion_tokens)} out) · ${formatTokens(u.total_tokens)} over ${plural(u.runs, "run")}`,
  );
}

/** A file that came with a message: its picture when it is one, else its name; how it went. */
function attachmentItem(a: AttachmentView): HTMLElement {
  const size = a.size !== null ? ` · ${fileSize(a.size)}` : "";
  const state = a.state === "failed" ? h("span", { class: "error" }, ` · not taken: ${a.reason ?? "unknown"}`) : a.state === "pending" ? h("span", { class: "muted" }, " · not fetched yet") : null;
  return h(
    "li",
    { class: "attachment", "data-testid": "attachment", "data-state": a.state, "data-kind": a.kind, title: a.path ?? a.name },
    a.preview ? h("img", { class: "thumbnail", src: a.preview, alt: a.name, "data-testid": "thumbnail" }) : h("span", { class: "file-icon", "aria-hidden": "true" }, a.kind === "voice" || a.kind === "audio" ? "🎙" : a.kind === "image" ? "🖼" : "📄"),
    h("span", {}, h("span", { class: "attachment-name" }, a.name), h("span", { class: "muted" }, size), state, a.transcript ? h("span", { class: "muted wrap" }, ` · heard: “${a.transcript}”`) : null),
  );
}

function historyPane(ctx: Ctx, c: ConversationView, history: HistoryView | null): HTMLElement {
  const live = liveReplyFor(ctx.state, c.routing_key);
  const now = Date.now();
  const running = c.state === "running" || live !== null;
  const messages: HTMLElement[] = [];
  if (history) {
    for (const line of history.server) {
      messages.push(h("div", { class: `msg ${line.role === "user" ? "user" : "assistant"}`, "data-testid": `msg-${line.role}` }, h("span", { class: "msg-role" }, line.role), h("p", { class: "wrap" }, line.text)));
    }
  }
  if (live) {
    messages.push(
      h(
        "div",
        { class: "msg assistant live", "data-testid": "live-reply", "aria-live": "polite" },
        h("span", { class: "msg-role" }, "assistant · writing…"),
        h("p", { class: "wrap" }, live.text.length > 0 ? live.text : "…"),
      ),
    );
  }
  return h(
    "div",
    { class: "conversation-detail", "data-testid": "conversation-detail" },
    h(
      "header",
      { class: "detail-head" },
      h("div", {}, h("h2", {}, conversationTitle(c)), h("p", { class: "muted" }, `${titleCase(c.channel)} · ${peerLabel(c.peer)} · ${chatLabel(c.chat)}`), h("p", { class: "muted mono" }, c.session_id ? `session ${c.session_id}` : "no session yet"), usageLine(c)),
      h(
        "div",
        { class: "detail-actions" },
        h("span", { class: "muted" }, c.queued > 0 ? `${plural(c.queued, "message")} queued` : ""),
        h(
          "button",
          {
            type: "button",
            class: "danger",
            "data-testid": "cancel-run",
            "data-key": "cancel-run",
            disabled: !running,
            onclick: () => ctx.run(commands.cancelRun(c.routing_key), "Cancelling the run…"),
          },
          "Cancel run",
        ),
      ),
    ),
    h(
      "div",
      { class: "messages", "data-testid": "messages" },
      history === null ? h("p", { class: "muted" }, "Loading…") : null,
      history?.server_error ? h("p", { class: "error wrap" }, `The server's history could not be read: ${history.server_error}`) : null,
      history && history.server.length === 0 && !live && !history.server_error ? h("p", { class: "muted" }, "No messages yet.") : null,
      messages,
    ),
    history && history.journal.length > 0
      ? h(
          "details",
          { class: "journal", open: true },
          h("summary", {}, `Received from the chat (${history.journal.length})`),
          h(
            "ol",
            {},
            history.journal.map((j) =>
              h(
                "li",
                { "data-testid": "journal-entry", "data-state": j.state },
                h("time", {}, clockTime(j.created_ms, now)),
                " ",
                h("span", { class: `badge ${j.state === "failed" ? "bad" : j.state === "replied" ? "good" : "busy"}` }, j.state),
                " ",
                h("span", { class: "muted" }, peerLabel(j.peer)),
                j.text ? h("p", { class: "wrap" }, j.text) : null,
                j.attachments.length > 0 ? h("ul", { class: "attachments", "data-testid": "attachments" }, j.attachments.map(attachmentItem)) : null,
                j.answered_notification ? h("p", { class: "muted wrap" }, `In answer to: ${j.answered_notification}`) : null,
                j.error ? h("p", { class: "error wrap" }, j.error) : null,
              ),
            ),
          ),
        )
      : null,
  );
}

export function renderSessions(ctx: Ctx): HTMLElement {
  const { conversations, selected, history, snapshot } = ctx.state;
  const open = conversations.find((c) => c.routing_key === selected) ?? null;
  return h(
    "section",
    { class: "page sessions", "data-page": "sessions" },
    h("header", { class: "page-head" }, h("h1", {}, "Sessions")),
    conversations.length === 0
      ? h("p", { class: "empty muted" }, snapshot?.engine_running ? "No conversations yet: they appear when someone writes to the bot." : "Switchboard is not running yet.")
      : h(
          "div",
          { class: "split" },
          h("ul", { class: "conversation-list", "aria-label": "Conversations" }, conversations.map((c) => conversationItem(ctx, c, c.routing_key === selected))),
          open ? historyPane(ctx, open, history?.routing_key === open.routing_key ? history : null) : h("div", { class: "conversation-detail empty muted" }, "Choose a conversation."),
        ),
  );
}
