// The window: navigation, the status at a glance, and the pages, fed by the shell's events.

import { h, mount, tickAges } from "./dom";
import type { Ctx } from "./ctx";
import { commands, onUiEvent, PAGES, type IpcError, type Page, type UiEvent } from "./ipc";
import { initialState, latest, mergeActivity, reduce, type AppState } from "./state";
import { renderActivity } from "./pages/activity";
import { renderApprovals, tickCountdowns } from "./pages/approvals";
import { renderChannels } from "./pages/channels";
import { closeQuickChat, focusComposer, lastChat, loadChat, openChat, renderChat } from "./pages/chat";
import { loadQuick, quickTarget, renderQuick } from "./pages/quick";
import { chatOf } from "./chat";
import { renderSessions } from "./pages/sessions";
import { forgetSettings, renderSettings, restoreUnsavedSettings } from "./pages/settings";
import { serverStateLabel } from "./format";
import { dropExpired } from "./pairing";

const PAGE_LABELS: Record<Page, string> = {
  chat: "Chat",
  channels: "Channels",
  sessions: "Sessions",
  approvals: "Approvals",
  activity: "Activity",
  settings: "Settings",
};

let state: AppState = initialState();
let noticeTimer: number | undefined;
/** The Settings section to scroll to after the next render. */
let pendingAnchor: string | null = null;

const root = document.getElementById("app") as HTMLElement;
const nav = h("nav", { class: "nav", "aria-label": "Pages" });
const status = h("div", { class: "status", role: "status", "aria-live": "polite", "data-testid": "status" });
const banner = h("div", { class: "banners" });
const content = h("main", { class: "content", id: "content", tabindex: "-1" });
const noticeEl = h("div", { class: "notice", role: "status", "aria-live": "polite", "data-testid": "notice" });

function errorText(error: unknown): string {
  const e = error as Partial<IpcError>;
  return typeof e?.message === "string" ? e.message : String(error);
}

const ctx: Ctx = {
  get state() {
    return state;
  },
  set(patch) {
    state = { ...state, ...patch };
    render();
  },
  navigate(page, routingKey, anchor) {
    keptScroll = null;
    if (QUICK) {
      // The quick chat is asked to talk in another conversation.
      state = { ...state, ...quickTarget(`#quick&key=${encodeURIComponent(routingKey ?? "")}`, lastChat()) };
      render();
      void loadQuick(ctx);
      return;
    }
    if (page === "chat") {
      // A chat to open: a new one, or a desktop chat by its key.
      state = { ...state, page };
      if (routingKey === "new") openChat(ctx, null);
      else if (chatOf(routingKey)) openChat(ctx, chatOf(routingKey));
      else if (!state.chatId) openChat(ctx, lastChat());
      render();
      void refreshForPage();
      focusComposer();
      return;
    }
    const changedConversation = routingKey && routingKey !== state.selected;
    state = { ...state, page, selected: routingKey ?? state.selected, history: changedConversation ? null : state.history };
    if (page === "settings") forgetSettings();
    pendingAnchor = anchor ?? null;
    render();
    void refreshForPage();
    content.focus({ preventScroll: true });
  },
  async run(promise, success) {
    try {
      const result = await promise;
      if (success) ctx.notice(success, "ok");
      return result;
    } catch (e) {
      ctx.notice(errorText(e), "error");
      render();
      return undefined;
    }
  },
  errorText,
  rerender: () => render(),
  notice(text, tone = "ok") {
    noticeEl.textContent = text;
    noticeEl.className = `notice show ${tone}`;
    window.clearTimeout(noticeTimer);
    noticeTimer = window.setTimeout(() => (noticeEl.className = "notice"), 4000);
  },
};

let navKey = "";

function renderNav() {
  const s = state.snapshot;
  // Redrawn only when it changes, so it keeps focus and hover while events stream in.
  // Approvals counts what waits for the person: tool calls and strangers asking to talk.
  const waiting = (s?.pending_approvals ?? 0) + (s?.pending_pairings ?? 0);
  const key = `${state.page}|${waiting}`;
  if (key === navKey) return;
  navKey = key;
  mount(
    nav,
    h("div", { class: "brand" }, h("img", { src: "./icon.svg", alt: "", width: "22", height: "22" }), h("span", {}, "Switchboard")),
    h(
      "ul",
      {},
      PAGES.map((page) => {
        const count = page === "approvals" && waiting > 0 ? h("span", { class: "count", "data-testid": "approvals-waiting" }, String(waiting)) : null;
        return h(
          "li",
          {},
          h(
            "button",
            {
              type: "button",
              class: page === state.page ? "nav-item active" : "nav-item",
              "aria-current": page === state.page ? "page" : null,
              "data-testid": `nav-${page}`,
              "data-key": `nav-${page}`,
              onclick: () => ctx.navigate(page),
            },
            PAGE_LABELS[page],
            count,
          ),
        );
      }),
    ),
  );
}

function renderStatus() {
  const s = state.snapshot;
  if (!s) {
    mount(status, "Starting…");
    return;
  }
  let tone = "good";
  let text = "Running";
  if (s.config.state === "missing") [tone, text] = ["warn", "Not set up yet"];
  else if (s.config.state === "invalid") [tone, text] = ["bad", "Settings need fixing"];
  else if (s.engine_error) [tone, text] = ["bad", "Cannot start"];
  else if (s.server.state === "unreachable" || s.server.state === "unauthorized") [tone, text] = ["bad", `Agent server ${serverStateLabel(s.server.state).toLowerCase()}`];
  else if (s.paused) [tone, text] = ["off", "Paused"];
  else if (s.active_runs > 0) [tone, text] = ["busy", `Working (${s.active_runs})`];
  if (status.dataset.key === `${tone}|${text}`) return;
  status.dataset.key = `${tone}|${text}`;
  mount(status, h("span", { class: `dot ${tone}`, "aria-hidden": "true" }), h("span", { "data-testid": "status-text" }, text));
}

/** Problems that concern every page: the server, the engine, the configuration. */
let bannersKey = "";

function renderBanners() {
  const s = state.snapshot;
  const key = JSON.stringify([state.page, s?.config, s?.engine_error, s?.engine_running, s?.server, s?.pending_pairings]);
  if (key === bannersKey) return;
  bannersKey = key;
  const items: HTMLElement[] = [];
  if (s && state.page !== "settings") {
    if (s.config.state === "missing") {
      items.push(h("div", { class: "banner info" }, "Switchboard is not set up yet. ", h("button", { type: "button", class: "link", onclick: () => ctx.navigate("settings") }, "Open Settings")));
    } else if (s.config.state === "invalid") {
      items.push(h("div", { class: "banner error", role: "alert" }, `The configuration has a mistake in ${s.config.field}: ${s.config.message} `, h("button", { type: "button", class: "link", onclick: () => ctx.navigate("settings") }, "Fix it")));
    } else if (s.engine_error) {
      items.push(h("div", { class: "banner error", role: "alert" }, `Switchboard cannot start: ${s.engine_error}`));
    }
  }
  if (s && s.engine_running && s.pending_pairings > 0 && state.page !== "approvals" && state.page !== "settings") {
    const who = s.pending_pairings === 1 ? "Someone you have not admitted asks" : `${s.pending_pairings} people you have not admitted ask`;
    items.push(
      h(
        "div",
        { class: "banner info", "data-testid": "pairing-banner" },
        `${who} to talk to the agent. `,
        h("button", { type: "button", class: "link", onclick: () => ctx.navigate("approvals") }, "Admit or refuse"),
      ),
    );
  }
  if (s && s.engine_running && (s.server.state === "unreachable" || s.server.state === "unauthorized")) {
    items.push(
      h(
        "div",
        { class: "banner error", role: "alert", "data-testid": "server-banner" },
        h("strong", {}, `The agent server at ${s.server.url} is ${s.server.state === "unauthorized" ? "refusing the token" : "unreachable"}.`),
        s.server.detail ? ` ${s.server.detail}. ` : " ",
        "Messages are kept and sent when it is back. ",
        h("button", { type: "button", class: "link", onclick: () => ctx.run(commands.checkServer(), "Checking the agent server…") }, "Check again"),
      ),
    );
  }
  mount(banner, items);
}

function renderPage(): HTMLElement {
  switch (state.page) {
    case "chat":
      return renderChat(ctx);
    case "channels":
      return renderChannels(ctx);
    case "sessions":
      return renderSessions(ctx);
    case "approvals":
      return renderApprovals(ctx);
    case "activity":
      return renderActivity(ctx);
    case "settings":
      return renderSettings(ctx);
  }
}

let renderedPage: Page | null = null;

/** This page is the quick chat window's. */
const QUICK = location.hash.startsWith("#quick");

function render() {
  if (QUICK) {
    const active = document.activeElement as HTMLElement | null;
    const messages = root.querySelector<HTMLElement>("[data-testid=messages]");
    const stick = messages ? messages.scrollHeight - messages.scrollTop - messages.clientHeight < 40 : true;
    mount(root, renderQuick(ctx), noticeEl);
    const again = root.querySelector<HTMLElement>("[data-testid=messages]");
    if (again && stick) again.scrollTop = again.scrollHeight;
    if (active?.dataset.key === "chat-input") focusComposer();
    return;
  }
  // Rebuilding the page must not take the keyboard focus (or the caret) away from the person.
  const active = document.activeElement as HTMLElement | null;
  const key = active?.getAttribute("data-key") ?? null;
  const selection =
    (active instanceof HTMLInputElement && active.type === "text") || active instanceof HTMLTextAreaElement ? [active.selectionStart, active.selectionEnd] : null;
  const messages = content.querySelector<HTMLElement>("[data-testid=messages]");
  const stickToBottom = messages ? messages.scrollHeight - messages.scrollTop - messages.clientHeight < 40 : true;
  const scrollTop = content.scrollTop;

  renderNav();
  renderStatus();
  renderBanners();
  mount(content, renderPage());
  document.title = `Switchboard · ${PAGE_LABELS[state.page]}`;

  if (renderedPage === state.page) content.scrollTop = scrollTop;
  scrollAsKept();
  renderedPage = state.page;
  if (state.page !== kept.page || state.selected !== kept.selected) keepView();
  syncTimers();
  const newMessages = content.querySelector<HTMLElement>("[data-testid=messages]");
  if (newMessages && stickToBottom) newMessages.scrollTop = newMessages.scrollHeight;
  if (key) {
    const again = root.querySelector<HTMLElement>(`[data-key="${CSS.escape(key)}"]`);
    if (again) {
      again.focus({ preventScroll: true });
      if (selection && (again instanceof HTMLInputElement || again instanceof HTMLTextAreaElement) && selection[0] !== null) again.setSelectionRange(selection[0], selection[1]);
    }
  }
  if (pendingAnchor && state.page === "settings") {
    const target = document.getElementById(pendingAnchor);
    if (target) {
      target.scrollIntoView({ block: "start" });
      pendingAnchor = null;
    }
  }
}

let refreshing = false;

/** Fetches what the current page shows beyond the snapshot. */
async function refreshForPage() {
  if (QUICK) {
    state = { ...state, stale: false };
    await loadQuick(ctx);
    return;
  }
  if (refreshing) return;
  refreshing = true;
  try {
    state = { ...state, stale: false };
    if (state.page === "chat" && state.snapshot?.engine_running) {
      const conversations = await commands.conversations().catch(() => state.conversations);
      state = { ...state, conversations };
      await loadChat(ctx);
    } else if (state.page === "sessions" && state.snapshot?.engine_running) {
      const conversations = await commands.conversations().catch(() => state.conversations);
      let selected = state.selected;
      if (!selected || !conversations.some((c) => c.routing_key === selected)) selected = conversations[0]?.routing_key ?? null;
      const history = selected ? await commands.history(selected).catch(() => null) : null;
      state = { ...state, conversations, selected, history };
    } else if (state.page === "approvals" && state.snapshot?.engine_running) {
      const [approvals, pairings] = await Promise.all([
        commands.approvals().catch(() => state.approvals),
        commands.pairingRequests().catch(() => state.pairings),
      ]);
      state = { ...state, approvals, pairings };
    } else if (state.page === "activity") {
      const entries = await commands.activity().catch(() => []);
      state = { ...state, activity: mergeActivity(state.activity, entries) };
    }
    render();
  } finally {
    refreshing = false;
    // Changes that came in while fetching are fetched now.
    if (state.stale) scheduleRefresh();
  }
}

let refreshTimer: number | undefined;

/** Refreshes soon, once, however many changes arrive meanwhile. */
function scheduleRefresh() {
  window.clearTimeout(refreshTimer);
  refreshTimer = window.setTimeout(() => void refreshForPage(), 150);
}

function onEvent(event: UiEvent) {
  const before = state;
  state = reduce(state, event);
  if (event.kind === "navigate") {
    ctx.navigate(event.page, event.routing_key);
    return;
  }
  if (state.stale) scheduleRefresh();
  // The Settings form is a draft being edited; events do not redraw it (the banner and the
  // status line still follow).
  if (state.page === "settings") {
    renderNav();
    renderStatus();
    if (event.kind === "snapshot" && before.snapshot?.config.state !== event.snapshot.config.state) render();
    return;
  }
  if (event.kind === "activity" && state.page !== "activity") return;
  if (!QUICK && event.kind === "streaming" && (state.page !== "sessions" || state.selected !== event.routing_key)) return;
  if (event.kind === "desktop_message" && (state.page !== "chat" || event.message.chat_id !== state.chatId)) return;
  if (QUICK && event.kind === "streaming" && state.quickKey !== event.routing_key) return;
  // The chat's person lines change state (queued, sent, replied) as the conversation moves on.
  if (event.kind === "conversations_changed" && state.page === "chat") scheduleRefresh();
  render();
}

document.addEventListener("keydown", (e) => {
  // Alt+1…6 switch pages from anywhere.
  if (e.altKey && !e.ctrlKey && !e.metaKey && /^[1-6]$/.test(e.key)) {
    e.preventDefault();
    ctx.navigate(PAGES[Number(e.key) - 1]);
  }
});

/** Where the window is (page, conversation, scroll), kept so a window opened again after it was
 * closed (its page is gone with it) comes back there. */
const VIEW_KEY = "switchboard.view";
interface KeptView {
  page: Page;
  selected: string | null;
  scroll: number;
}

/** What was kept last: renders that change neither the page nor the conversation (a reply being
 * written redraws often) write nothing. */
const kept: { page: Page | null; selected: string | null } = { page: null, selected: null };

function keepView() {
  kept.page = state.page;
  kept.selected = state.selected;
  try {
    const scroll = keptScroll?.page === state.page ? keptScroll.top : content.scrollTop;
    const view: KeptView = { page: state.page, selected: state.selected, scroll };
    localStorage.setItem(VIEW_KEY, JSON.stringify(view));
  } catch {
    // No storage: a window opened again starts on its first page.
  }
}

function keptView(): KeptView | null {
  try {
    const view = JSON.parse(localStorage.getItem(VIEW_KEY) ?? "null") as KeptView | null;
    return view && PAGES.includes(view.page) ? view : null;
  } catch {
    return null;
  }
}

/** What the window was opened for (its address's fragment): a page (`#page=…&key=…`), or to
 * come back as the last window was (`#restore`). */
function openedFor(): { page: Page; selected: string | null; scroll: number } | null {
  const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
  const page = fragment.get("page") as Page | null;
  if (page && PAGES.includes(page)) return { page, selected: fragment.get("key"), scroll: 0 };
  if (fragment.has("restore")) return keptView();
  return null;
}

/** Where a window opened again is to be scrolled: kept until its page is drawn tall enough (a
 * page that loads what it shows, as Settings does, is short at first), for a few seconds at
 * most, and dropped as soon as the person scrolls or goes elsewhere. */
let keptScroll: { page: Page; top: number; until: number } | null = null;
const KEEP_SCROLL_MS = 3000;

function scrollAsKept() {
  if (!keptScroll) return;
  if (keptScroll.page !== state.page || Date.now() > keptScroll.until) {
    keptScroll = null;
    return;
  }
  content.scrollTop = keptScroll.top;
  if (Math.abs(content.scrollTop - keptScroll.top) < 2) keptScroll = null;
}

for (const input of ["wheel", "keydown", "pointerdown", "touchstart"]) {
  content.addEventListener(input, () => (keptScroll = null), { passive: true });
}

// The place is kept as the page scrolls (once a frame at most): a window closed right after a
// scroll comes back where it was.
let scrollFrame = 0;
content.addEventListener(
  "scroll",
  () => {
    if (scrollFrame) return;
    scrollFrame = requestAnimationFrame(() => {
      scrollFrame = 0;
      keepView();
    });
  },
  { passive: true },
);

async function boot() {
  mount(root, h("aside", { class: "sidebar" }, nav, status), h("div", { class: "main" }, banner, content), noticeEl);
  const opened = openedFor();
  if (location.hash.includes("restore")) restoreUnsavedSettings();
  render();
  await onUiEvent(onEvent);
  try {
    const snapshot = await commands.snapshot();
    // A configuration that needs fixing opens on Settings whatever the window was opened for.
    // The demo opens on its chat; a configuration that needs fixing opens on Settings.
    const page = opened && snapshot.start_page === "channels" ? opened.page : snapshot.start_page;
    state = { ...state, snapshot: latest(state.snapshot, snapshot), page, selected: opened?.selected ?? state.selected };
    if (page === "chat") {
      const wanted = opened?.page === "chat" ? opened.selected : null;
      state = { ...state, chatId: wanted === "new" ? null : (chatOf(wanted) ?? lastChat()), transcript: null };
      if (!state.chatId) state = { ...state, transcript: [] };
    }
  } catch (e) {
    ctx.notice(errorText(e), "error");
  }
  render();
  await refreshForPage();
  if (opened && opened.page === state.page && opened.scroll > 0) {
    keptScroll = { page: state.page, top: opened.scroll, until: Date.now() + KEEP_SCROLL_MS };
    scrollAsKept();
  }
  syncTimers();
}

/** The timers a page needs run only while it is shown, so an idle window wakes for nothing:
 * relative times ("3 min ago") age in place on Channels and Sessions, each when its text is due
 * to change (the next minute, hour or day), not on a fixed beat; on Approvals the countdowns
 * tick in place, without rebuilding the page under the pointer, and a pairing code that runs out
 * leaves the list at once (the shell confirms it a little later). */
const timers: { ageing?: number; countdown?: number } = {};

function syncTimers() {
  // Every render may bring new times: the next change is looked for again.
  window.clearTimeout(timers.ageing);
  timers.ageing = undefined;
  if (state.page === "channels" || state.page === "sessions") scheduleAgeing(tickAges(content, Date.now()));
  const countdown = state.page === "approvals";
  if (countdown && timers.countdown === undefined) {
    timers.countdown = window.setInterval(() => {
      const now = Date.now();
      if (state.pairings && state.pairings.some((p) => p.expires_ms <= now)) ctx.set({ pairings: dropExpired(state.pairings, now) });
      tickCountdowns(content, now);
    }, 1000);
  }
  if (!countdown && timers.countdown !== undefined) {
    window.clearInterval(timers.countdown);
    timers.countdown = undefined;
  }
}

/** Ages the page's relative times at `due` (ms), and again at the next change after that. */
function scheduleAgeing(due: number | null) {
  if (due === null) return;
  timers.ageing = window.setTimeout(
    () => {
      timers.ageing = undefined;
      scheduleAgeing(tickAges(content, Date.now()));
    },
    Math.max(250, due - Date.now()),
  );
}

/** The quick chat window: one conversation, compact; Esc closes it. */
async function bootQuick() {
  document.body.classList.add("quick");
  state = { ...state, page: "chat", ...quickTarget(location.hash, lastChat()) };
  render();
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      e.preventDefault();
      closeQuickChat();
    }
  });
  await onUiEvent(onEvent);
  try {
    const snapshot = await commands.snapshot();
    state = { ...state, snapshot: latest(state.snapshot, snapshot) };
  } catch (e) {
    ctx.notice(errorText(e), "error");
  }
  render();
  await loadQuick(ctx);
  focusComposer();
}

if (QUICK) void bootQuick();
else void boot();
