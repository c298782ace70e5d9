// Settings: every setting of the configuration file, edited as a draft and saved at once (the
// shell writes the file keeping its comments, and applies it without a restart).

import { h } from "../dom";
import type { Ctx } from "../ctx";
import { latest } from "../state";
import {
  APPROVAL_MODES,
  CHANNEL_NAMES,
  commands,
  type Binding,
  type ChannelName,
  type Config,
  type DiscordConfig,
  type FieldProblem,
  type SettingsView,
  type SlackConfig,
  type TelegramConfig,
} from "../ipc";
import { formatList, maskSecret, parseList, titleCase } from "../format";
import { validateSettings } from "../validate";
import { diagnostics } from "../diagnostics";
import { MODE_LABELS } from "./channels";

/** The Rust defaults of a channel section (config.rs), for "Use Telegram" and the like. */
export function defaultChannel(name: ChannelName): TelegramConfig | SlackConfig | DiscordConfig {
  const common = { enabled: true, dm_policy: "pairing" as const, allowed_users: [], owners: [], require_mention: true, open_groups: [], approvers: "auto" as const, streaming: "auto" as const, show_tools: true };
  switch (name) {
    case "telegram":
      return { ...common, token: "", api_base: "https://api.telegram.org", groups: [] };
    case "slack":
      return { ...common, bot_token: "", app_token: "", api_base: "https://slack.com/api", groups: [] };
    case "discord":
      return { ...common, token: "", api_base: "https://discord.com/api/v10", guilds: [] };
  }
}

/** Reads a dotted path (`gateway.model`, `routing.bindings.0.channel`). */
export function getPath(target: unknown, path: string): unknown {
  return path.split(".").reduce<unknown>((value, key) => (value === null || value === undefined ? undefined : (value as Record<string, unknown>)[key]), target);
}

/** Sets a dotted path, creating nothing: the parents must exist. */
export function setPath(target: unknown, path: string, value: unknown): void {
  const keys = path.split(".");
  const last = keys.pop();
  const parent = getPath(target, keys.join(".")) ?? (keys.length === 0 ? target : undefined);
  if (last !== undefined && parent !== null && typeof parent === "object") {
    (parent as Record<string, unknown>)[last] = value;
  }
}

/** The engine names fields `routing.bindings[0].channel`; the form uses `routing.bindings.0.channel`. */
export function formFieldName(field: string): string {
  return field.replace(/\[(\d+)\]/g, ".$1");
}

interface SettingsPageState {
  view: SettingsView | null;
  draft: Config | null;
  problems: FieldProblem[];
  revealed: Set<string>;
  /** A message under a Test button, by key. */
  results: Map<string, { ok: boolean; text: string }>;
  saving: boolean;
  loadError: string | null;
}

const page: SettingsPageState = { view: null, draft: null, problems: [], revealed: new Set(), results: new Map(), saving: false, loadError: null };

/** Where unsaved edits wait while the window is closed (its page goes with it). */
const DRAFT_KEY = "switchboard.settings-draft";
let restoreDraft = false;

/** The next load takes back the edits a closed window left unsaved, if the file is unchanged. */
export function restoreUnsavedSettings(): void {
  restoreDraft = true;
}

/** Keeps the edits not saved yet, so closing the window does not lose them. */
function keepDraft(): void {
  try {
    if (!page.view || !page.draft) return;
    const base = JSON.stringify(page.view.config);
    const draft = JSON.stringify(page.draft);
    if (draft === base) localStorage.removeItem(DRAFT_KEY);
    else localStorage.setItem(DRAFT_KEY, JSON.stringify({ base, draft }));
  } catch {
    // No storage: the edits live as long as the window.
  }
}

/** The edits kept by [`keepDraft`], taken out of storage; `null` when none. */
function takeKeptDraft(): { base: string; draft: string } | null {
  try {
    const kept = localStorage.getItem(DRAFT_KEY);
    localStorage.removeItem(DRAFT_KEY);
    return kept ? (JSON.parse(kept) as { base: string; draft: string }) : null;
  } catch {
    return null;
  }
}

/** A load started by drawing the page (not by Save or Revert), while it runs. */
let loading: Promise<void> | null = null;

/** Loads the settings from the shell, dropping unsaved edits (except those a closed window left,
 * right after it opens again). */
export async function loadSettings(ctx: Ctx): Promise<void> {
  try {
    const view = await commands.settings();
    page.view = view;
    page.draft = structuredClone(view.config);
    const kept = takeKeptDraft();
    if (restoreDraft && kept && kept.base === JSON.stringify(view.config)) {
      page.draft = JSON.parse(kept.draft) as Config;
      keepDraft();
      ctx.notice("Your unsaved settings are back; Save or Revert them.", "ok");
    }
    restoreDraft = false;
    page.problems = view.problem ? [{ field: formFieldName(view.problem.field), message: view.problem.message }] : [];
    page.loadError = null;
  } catch (e) {
    page.loadError = ctx.errorText(e);
  }
  ctx.rerender();
}

function problemFor(path: string): FieldProblem | undefined {
  return page.problems.find((p) => p.field === path || p.field.startsWith(`${path}.`));
}

function clearProblem(path: string) {
  page.problems = page.problems.filter((p) => p.field !== path);
}

function fieldId(path: string): string {
  return `field-${path.replace(/\./g, "-")}`;
}

function fieldShell(path: string, label: string, control: HTMLElement, help?: string | HTMLElement | null): HTMLElement {
  const problem = problemFor(path);
  if (problem) {
    control.setAttribute("aria-invalid", "true");
    control.setAttribute("aria-describedby", `${fieldId(path)}-problem`);
  }
  return h(
    "div",
    { class: problem ? "field invalid" : "field" },
    h("label", { for: fieldId(path) }, label),
    control,
    help ? h("p", { class: "help" }, help) : null,
    problem ? h("p", { class: "problem", id: `${fieldId(path)}-problem`, role: "alert", "data-testid": "field-problem" }, problem.message) : null,
  );
}

function textField(path: string, label: string, options: { placeholder?: string; help?: string; mono?: boolean } = {}): HTMLElement {
  const input = h("input", {
    type: "text",
    id: fieldId(path),
    name: path,
    "data-testid": fieldId(path),
    "data-key": fieldId(path),
    class: options.mono ? "mono" : null,
    placeholder: options.placeholder ?? null,
    spellcheck: "false",
    autocomplete: "off",
    value: String(getPath(page.draft, path) ?? ""),
    oninput: (e: Event) => {
      setPath(page.draft, path, (e.target as HTMLInputElement).value);
      clearProblem(path);
    },
  });
  return fieldShell(path, label, input, options.help);
}

function secretField(ctx: Ctx, path: string, label: string, help?: string): HTMLElement {
  const value = String(getPath(page.draft, path) ?? "");
  const revealed = page.revealed.has(path);
  const input = h("input", {
    type: revealed ? "text" : "password",
    id: fieldId(path),
    name: path,
    "data-testid": fieldId(path),
    "data-key": fieldId(path),
    class: "mono",
    spellcheck: "false",
    autocomplete: "off",
    value,
    oninput: (e: Event) => {
      setPath(page.draft, path, (e.target as HTMLInputElement).value);
      clearProblem(path);
    },
  });
  const toggle = h(
    "button",
    {
      type: "button",
      class: "small",
      "data-key": `${fieldId(path)}-reveal`,
      "aria-pressed": String(revealed),
      "aria-label": `${revealed ? "Hide" : "Show"} ${label}`,
      onclick: () => {
        if (revealed) page.revealed.delete(path);
        else page.revealed.add(path);
        ctx.rerender();
      },
    },
    revealed ? "Hide" : "Show",
  );
  const saved = String(getPath(page.view?.config, path) ?? "");
  const note = saved.length > 0 ? `Saved: ${maskSecret(saved)}` : "Not set";
  return fieldShell(path, label, h("div", { class: "secret" }, input, toggle), help ? `${help} ${note}.` : `${note}.`);
}

function numberField(path: string, label: string, unit: string): HTMLElement {
  const input = h("input", {
    type: "number",
    min: "1",
    step: "1",
    id: fieldId(path),
    name: path,
    "data-testid": fieldId(path),
    "data-key": fieldId(path),
    value: String(getPath(page.draft, path) ?? ""),
    oninput: (e: Event) => {
      const text = (e.target as HTMLInputElement).value;
      setPath(page.draft, path, text.trim() === "" ? NaN : Number(text));
      clearProblem(path);
    },
  });
  return fieldShell(path, label, h("div", { class: "with-unit" }, input, h("span", { class: "muted" }, unit)));
}

function selectField(path: string, label: string, options: [string, string][], help?: string): HTMLElement {
  const current = String(getPath(page.draft, path) ?? "");
  const select = h(
    "select",
    {
      id: fieldId(path),
      name: path,
      "data-testid": fieldId(path),
      "data-key": fieldId(path),
      onchange: (e: Event) => {
        setPath(page.draft, path, (e.target as HTMLSelectElement).value);
        clearProblem(path);
      },
    },
    options.map(([value, text]) => h("option", { value, selected: value === current }, text)),
  );
  return fieldShell(path, label, select, help);
}

function checkField(path: string, label: string, help?: string, onChange?: () => void): HTMLElement {
  const input = h("input", {
    type: "checkbox",
    id: fieldId(path),
    name: path,
    "data-testid": fieldId(path),
    "data-key": fieldId(path),
    checked: Boolean(getPath(page.draft, path)),
    onchange: (e: Event) => {
      setPath(page.draft, path, (e.target as HTMLInputElement).checked);
      clearProblem(path);
      onChange?.();
    },
  });
  return h("div", { class: "field check" }, h("label", { for: fieldId(path) }, input, " ", label), help ? h("p", { class: "help" }, help) : null);
}

function listField(path: string, label: string, help: string): HTMLElement {
  const input = h("input", {
    type: "text",
    id: fieldId(path),
    name: path,
    "data-testid": fieldId(path),
    "data-key": fieldId(path),
    class: "mono",
    spellcheck: "false",
    value: formatList((getPath(page.draft, path) as string[] | undefined) ?? []),
    oninput: (e: Event) => {
      setPath(page.draft, path, parseList((e.target as HTMLInputElement).value));
      clearProblem(path);
    },
  });
  return fieldShell(path, label, input, help);
}

function resultLine(key: string): HTMLElement | null {
  const result = page.results.get(key);
  return result ? h("p", { class: result.ok ? "ok" : "error", role: "status", "data-testid": `${key}-result` }, result.text) : null;
}

async function runTest(ctx: Ctx, key: string, test: () => Promise<string>) {
  page.results.set(key, { ok: true, text: "Testing…" });
  ctx.rerender();
  try {
    page.results.set(key, { ok: true, text: await test() });
  } catch (e) {
    page.results.set(key, { ok: false, text: ctx.errorText(e) });
  }
  ctx.rerender();
}

function section(id: string, title: string, ...children: (HTMLElement | null)[]): HTMLElement {
  return h("fieldset", { class: "section", id }, h("legend", {}, title), children);
}

function serverSection(ctx: Ctx, draft: Config): HTMLElement {
  return section(
    "server",
    "Agent server",
    textField("server.url", "Server URL", { placeholder: "http://127.0.0.1:4096", mono: true, help: "Where `stakpak up` serves the agent." }),
    secretField(ctx, "server.token", "Server token", "Its bearer token, if it has one."),
    h(
      "div",
      { class: "row" },
      h(
        "button",
        {
          type: "button",
          "data-testid": "test-connection",
          "data-key": "test-connection",
          onclick: () => runTest(ctx, "test-connection", async () => `Connected: server version ${(await commands.testConnection(draft.server.url, draft.server.token)).version || "unknown"}`),
        },
        "Test connection",
      ),
      resultLine("test-connection"),
    ),
  );
}

function gatewaySection(): HTMLElement {
  return section(
    "gateway",
    "Model and sessions",
    textField("gateway.model", "Model", { placeholder: "the server's default", help: "Sent with each message; leave empty for the server's default. A chat can pick its own with /model." }),
    textField("gateway.title_template", "Session title", { mono: true, help: "Placeholders: {channel} {peer} {chat_type} {chat_id}." }),
    checkField("gateway.usage_footer", "Show each reply's token usage under it in the chat", "A line like “— 1.2k tokens (900 in, 300 out)”; /usage in a chat tells the same on request."),
  );
}

function approvalsSection(): HTMLElement {
  return section(
    "approvals",
    "Tool approvals",
    selectField(
      "gateway.approval_mode",
      "Approval mode",
      APPROVAL_MODES.map((m) => [m, MODE_LABELS[m]]),
      "Ask: calls wait for a person unless a rule allows them. Allowlist: listed tools run, the rest are rejected.",
    ),
    listField("gateway.approval_allowlist", "Allowlist", "Tool names accepted without asking, separated by commas."),
    numberField("gateway.approval_timeout_minutes", "Approval timeout", "minutes"),
  );
}

function routingSection(ctx: Ctx, draft: Config): HTMLElement {
  const bindings = draft.routing.bindings;
  const matchOf = (b: Binding) => (b.direct != null ? "direct" : b.group != null ? "group" : "channel");
  const rows = bindings.map((b, i) => {
    const base = `routing.bindings.${i}`;
    const match = matchOf(b);
    const matchSelect = h(
      "select",
      {
        "aria-label": `Binding ${i + 1}: what it matches`,
        "data-key": `${base}-match`,
        onchange: (e: Event) => {
          const value = (e.target as HTMLSelectElement).value;
          const id = b.direct ?? b.group ?? "";
          b.direct = value === "direct" ? id : null;
          b.group = value === "group" ? id : null;
          ctx.rerender();
        },
      },
      h("option", { value: "direct", selected: match === "direct" }, "a direct peer"),
      h("option", { value: "group", selected: match === "group" }, "a group"),
      h("option", { value: "channel", selected: match === "channel" }, "the whole channel"),
    );
    const idPath = match === "group" ? `${base}.group` : `${base}.direct`;
    return h(
      "div",
      { class: "binding", "data-testid": "binding" },
      textField(`${base}.channel`, "Channel", { placeholder: "telegram", mono: true }),
      h("div", { class: "field" }, h("label", {}, "Matches"), matchSelect),
      match === "channel" ? null : textField(idPath, match === "group" ? "Group id" : "Peer id", { mono: true }),
      textField(`${base}.routing_key`, "Conversation", { placeholder: "ops", mono: true }),
      h(
        "button",
        {
          type: "button",
          class: "small danger",
          "aria-label": `Remove binding ${i + 1}`,
          onclick: () => {
            bindings.splice(i, 1);
            ctx.rerender();
          },
        },
        "Remove",
      ),
    );
  });
  return section(
    "routing",
    "Routing",
    selectField(
      "routing.dm_scope",
      "Direct messages",
      [
        ["per_channel_peer", "One conversation per channel and person"],
        ["per_peer", "One conversation per person, across channels"],
        ["main", "One conversation for everyone"],
      ],
    ),
    h("p", { class: "help" }, "Bindings send a peer, a group or a whole channel to a named conversation, before the rule above."),
    ...rows,
    h(
      "button",
      {
        type: "button",
        "data-key": "add-binding",
        onclick: () => {
          bindings.push({ channel: "telegram", routing_key: "", direct: "" });
          ctx.rerender();
        },
      },
      "Add binding",
    ),
  );
}

function channelSection(ctx: Ctx, draft: Config, name: ChannelName): HTMLElement {
  const config = draft.channels[name];
  const base = `channels.${name}`;
  const use = h("input", {
    type: "checkbox",
    id: `use-${name}`,
    "data-testid": `use-${name}`,
    "data-key": `use-${name}`,
    checked: Boolean(config),
    onchange: (e: Event) => {
      draft.channels[name] = (e.target as HTMLInputElement).checked ? (defaultChannel(name) as never) : null;
      ctx.rerender();
    },
  });
  const body: (HTMLElement | null)[] = [h("div", { class: "field check" }, h("label", { for: `use-${name}` }, use, ` Use ${titleCase(name)}`))];
  if (config) {
    body.push(checkField(`${base}.enabled`, "On", "Off keeps the settings but does not connect."));
    if (name === "slack") {
      body.push(secretField(ctx, `${base}.bot_token`, "Bot token (xoxb-…)"), secretField(ctx, `${base}.app_token`, "App-level token (xapp-…)"));
    } else {
      body.push(secretField(ctx, `${base}.token`, "Bot token", name === "telegram" ? "From @BotFather." : "From the Developer Portal's Bot page."));
    }
    body.push(
      textField(`${base}.api_base`, "API address", { mono: true, help: "Change it only for a self-hosted API server or a proxy." }),
      selectField(`${base}.dm_policy`, "Unknown senders", [
        ["pairing", "Get a pairing code to be admitted"],
        ["allowlist", "Are ignored unless listed"],
        ["open", "May talk to the agent"],
      ]),
      listField(`${base}.allowed_users`, "Allowed users", "User ids admitted without pairing, separated by commas."),
      listField(`${base}.owners`, "Owners", "User ids who may decide approvals and admit others from a chat."),
      selectField(`${base}.approvers`, "Who approves tool calls from the chat", [
        ["auto", "The owners, once there are any (else the person who asked)"],
        ["owners", "Only the owners"],
        ["requester", "The person who asked, or an owner"],
      ]),
      checkField(`${base}.require_mention`, "In groups, answer only when mentioned"),
      selectField(
        `${base}.streaming`,
        "While the agent works",
        [
          ["auto", "The platform's own live reply (Slack stream, Telegram draft, else a growing message)"],
          ["edit", "One message that grows as the agent writes, with the tool that runs"],
          ["paragraphs", "Each finished step of the reply as its own message"],
          ["off", "Send the whole reply when the agent is done"],
        ],
        "A coding agent may work for minutes: the reply is in the chat while it is written, and the final text arrives once, whole.",
      ),
      checkField(`${base}.show_tools`, "Show the tool that runs while the reply grows", "A line such as “⚙️ run `cargo test`…” (on Slack a task card) while the tool runs."),
    );
    // Telegram and Slack list their groups; Discord lists its servers (below).
    if ("groups" in config) {
      body.push(listField(`${base}.groups`, name === "slack" ? "Channels (ids)" : "Groups (ids)", "Where the bot answers; empty: none."));
    }
    body.push(listField(`${base}.open_groups`, "Open to everyone in", "Groups where anyone may talk to the agent; elsewhere senders must be admitted."));
    if (name === "discord") body.push(listField(`${base}.guilds`, "Servers (guild ids)", "Where the bot may answer mentions; empty: none."));
    body.push(
      h(
        "div",
        { class: "row" },
        h(
          "button",
          {
            type: "button",
            "data-testid": `test-${name}`,
            "data-key": `test-${name}`,
            onclick: () =>
              runTest(ctx, `test-${name}`, async () => {
                const identity = await commands.testChannel(name, draft);
                return `Credentials work: bot ${identity.name} (${identity.id})`;
              }),
          },
          "Test",
        ),
        resultLine(`test-${name}`),
      ),
    );
  }
  return section(`channels-${name}`, titleCase(name), ...body);
}

function notificationsSection(): HTMLElement {
  return section(
    "notifications",
    "Notifications",
    checkField("notifications.enabled", "Show desktop notifications"),
    checkField("notifications.do_not_disturb", "Do not disturb", "Hold every notification until turned off."),
    h(
      "div",
      { class: "row" },
      textField("notifications.quiet_hours_start", "Quiet hours from", { placeholder: "22:00", mono: true }),
      textField("notifications.quiet_hours_end", "until", { placeholder: "07:00", mono: true }),
    ),
    h("p", { class: "help" }, "HH:MM, 24-hour; the quiet hours may run over midnight. Leave both empty for none."),
  );
}

function quickChatSection(ctx: Ctx): HTMLElement {
  const quick = ctx.state.snapshot?.quick_chat ?? null;
  const how =
    quick?.via === "portal"
      ? "through your desktop's shortcuts portal (your desktop may have asked you to confirm it, and can change it in its own settings)"
      : quick?.via === "x11"
        ? "with a key grab on the X server"
        : null;
  return section(
    "desktop",
    "Quick chat",
    textField("desktop.quick_chat_shortcut", "Shortcut", {
      placeholder: "Ctrl+Alt+Space",
      mono: true,
      help: "Opens a small window above everything else to write to the agent from anywhere. Ctrl, Alt, Shift or Super with a key; empty turns it off.",
    }),
    h(
      "p",
      { class: quick?.problem ? "problem" : "help", "data-testid": "quick-chat-status" },
      quick === null
        ? ""
        : quick.shortcut && how
          ? `In use: ${quick.shortcut}, ${how}.`
          : (quick.problem ?? "Not registered yet."),
    ),
    h("p", { class: "help" }, "It also opens from the tray (Quick chat…), from a notification's Reply, and with the command ", h("code", {}, "switchboard --quick-chat"), ", which you can bind to a key in your desktop's keyboard settings."),
  );
}

function apiSection(ctx: Ctx): HTMLElement {
  const lines = ctx.state.snapshot?.autopilot_lines ?? null;
  return section(
    "api",
    "Gateway API",
    textField("api.listen", "Listen on", { mono: true, help: "Address and port for watch scripts (POST /v1/gateway/send). Keep it on loopback (127.0.0.1): any other address lets other machines reach it with the token. Takes effect after a restart." }),
    secretField(ctx, "api.token", "API token", "Scripts send it as a bearer token; the Stakpak watch scheduler may send its server's token instead. Generated on first start."),
    textField("api.scheduler_listen", "Address for stakpak autopilot", { mono: true, help: "The watch scheduler replaces a gateway on localhost or 127.0.0.1 with its own server, so Switchboard also listens here: auto (127.0.0.2, same port), off, or an address and port. Takes effect after a restart." }),
    lines
      ? h(
          "div",
          { class: "autopilot-lines" },
          h("p", { class: "help" }, "To get the watch scheduler's notifications here, put these lines in ~/.stakpak/autopilot.toml (set chat_id to your chat) and restart stakpak autopilot:"),
          h("pre", { class: "mono", "data-testid": "autopilot-lines" }, lines),
          page.view?.autopilot
            ? h(
                "button",
                {
                  type: "button",
                  "data-testid": "connect-autopilot",
                  onclick: async () => {
                    const changed = await ctx.run(commands.connectAutopilot());
                    if (changed === undefined) return;
                    ctx.notice(
                      changed.length > 0
                        ? `Updated ${page.view?.autopilot}: ${changed.join(", ")}. Restart stakpak autopilot to use it.`
                        : "autopilot.toml already points here.",
                      "ok",
                    );
                  },
                },
                "Write them into autopilot.toml",
              )
            : null,
        )
      : null,
  );
}

function mediaSection(): HTMLElement {
  return section(
    "media",
    "Photos, files and voice notes",
    h("p", { class: "help" }, "Pictures go to the agent as images; other files are saved in Switchboard's data folder, one folder per conversation, and the agent is told where. The chat is told about any file that could not be taken."),
    h("div", { class: "row" }, numberField("media.max_mb", "Largest file", "MB"), numberField("media.max_files", "Files per message at most", "files")),
    textField("media.transcribe_command", "Transcribe voice notes with", {
      placeholder: "whisper-cli -m /models/ggml-base.bin -nt -f {file}",
      mono: true,
      help: "A program that prints what a voice note says; {file} is replaced by the audio file (or it comes last). Empty: voice notes go to the agent as files. The transcript is sent as your message and shown in the chat as “Heard: …”.",
    }),
    numberField("media.transcribe_timeout_secs", "A transcription may take", "seconds"),
  );
}

function retentionSection(): HTMLElement {
  return section(
    "retention",
    "Data retention",
    numberField("gateway.prune_after_hours", "Forget conversations unused for", "hours"),
    numberField("gateway.delivery_context_ttl_hours", "A watch notification's context waits", "hours"),
    numberField("gateway.journal_retention_days", "Keep received messages and decisions", "days"),
  );
}

/** The diagnostics last gathered, shown so the person sees what they copy (or copies it by hand
 * where the clipboard is refused). */
let gathered: string | null = null;

async function copyDiagnostics(ctx: Ctx) {
  const snapshot = await commands.snapshot().catch(() => ctx.state.snapshot);
  if (!snapshot) return;
  gathered = diagnostics(snapshot, Date.now(), navigator.userAgent);
  try {
    await navigator.clipboard.writeText(gathered);
    ctx.notice("Diagnostics copied (tokens masked).", "ok");
  } catch {
    ctx.notice("Select the diagnostics below and copy them.", "ok");
  }
  ctx.rerender();
}

/** The version, where the files are, and the diagnostics for a bug report. */
function aboutSection(ctx: Ctx): HTMLElement | null {
  const snapshot = ctx.state.snapshot;
  if (!snapshot) return null;
  const { about, server } = snapshot;
  const rows: [string, string][] = [
    ["Version", about.version],
    ["Configuration", snapshot.config_file],
    ["Data", about.data_dir],
    ["Logs", about.log_dir],
    ["Agent server", server.detail && server.state === "ok" ? `${server.url} (version ${server.detail})` : server.url],
  ];
  return section(
    "about",
    "About Switchboard",
    h("dl", { class: "about", "data-testid": "about" }, rows.flatMap(([name, value]) => [h("dt", {}, name), h("dd", { class: "mono wrap" }, value)])),
    h("div", { class: "row" }, h("button", { type: "button", "data-testid": "copy-diagnostics", onclick: () => void copyDiagnostics(ctx) }, "Copy diagnostics")),
    gathered ? h("textarea", { class: "mono", readonly: true, rows: 12, "data-testid": "diagnostics", "aria-label": "Diagnostics", value: gathered }) : null,
  );
}

function firstRun(ctx: Ctx): HTMLElement | null {
  const snapshot = ctx.state.snapshot;
  if (!snapshot || snapshot.config.state !== "missing" || !page.draft) return null;
  const missing = snapshot.config.missing;
  const autopilot = page.view?.autopilot ?? null;
  return h(
    "div",
    { class: "banner info", "data-testid": "first-run" },
    h("h2", {}, "Welcome to Switchboard"),
    h("p", {}, "There is no configuration yet. What is still needed:"),
    h("ul", {}, missing.map((m) => h("li", {}, m))),
    autopilot
      ? h(
          "p",
          {},
          h(
            "button",
            {
              type: "button",
              class: "primary",
              "data-testid": "import-autopilot",
              onclick: async () => {
                if (!page.draft) return;
                const result = await ctx.run(commands.importAutopilot(page.draft));
                if (result) {
                  page.draft = result.config;
                  ctx.notice(result.imported.length > 0 ? `Imported ${result.imported.join(", ")}; check and save.` : "Nothing to import was found.");
                  ctx.rerender();
                }
              },
            },
            "Import from Stakpak",
          ),
          " ",
          h("span", { class: "muted mono" }, autopilot),
        )
      : h("p", { class: "muted" }, "No ~/.stakpak/autopilot.toml was found to import from."),
  );
}

async function save(ctx: Ctx) {
  if (!page.draft || page.saving) return;
  const problems = validateSettings(page.draft).map((p) => ({ ...p, field: formFieldName(p.field) }));
  page.problems = problems;
  if (problems.length > 0) {
    ctx.notice(`Not saved: ${problems[0].field}: ${problems[0].message}`, "error");
    ctx.rerender();
    focusField(problems[0].field);
    return;
  }
  page.saving = true;
  ctx.rerender();
  try {
    const outcome = await commands.saveSettings(page.draft);
    ctx.set({ snapshot: latest(ctx.state.snapshot, outcome.snapshot) });
    const restart = outcome.restart_needed.length > 0 ? ` ${outcome.restart_needed.join(", ")} takes effect after a restart.` : "";
    ctx.notice(`Settings saved.${restart}`, "ok");
    page.saving = false;
    await loadSettings(ctx);
  } catch (e) {
    page.saving = false;
    const error = e as { field?: string };
    if (error.field) page.problems = [{ field: formFieldName(error.field), message: ctx.errorText(e) }];
    ctx.notice(`Not saved: ${ctx.errorText(e)}`, "error");
    ctx.rerender();
    if (error.field) focusField(formFieldName(error.field));
  }
}

function focusField(path: string) {
  const el = document.getElementById(fieldId(path));
  if (el) {
    el.scrollIntoView({ block: "center" });
    el.focus();
  }
}

export function renderSettings(ctx: Ctx): HTMLElement {
  if (page.loadError) return h("section", { class: "page" }, h("p", { class: "error" }, page.loadError));
  const view = page.view;
  const draft = page.draft;
  if (!view || !draft) {
    // Drawn again while it loads (the window's first snapshot, say): one load, not a second
    // that would drop the unsaved edits the first just took back.
    loading ??= loadSettings(ctx).finally(() => (loading = null));
    return h("section", { class: "page" }, h("p", { class: "muted" }, "Loading…"));
  }
  const problem = view.problem;
  const form = h(
    "form",
    {
      class: "settings",
      novalidate: true,
      "data-testid": "settings-form",
      onsubmit: (e: Event) => {
        e.preventDefault();
        void save(ctx);
      },
      oninput: () => keepDraft(),
      onchange: () => keepDraft(),
      onkeydown: (e: Event) => {
        // Escape leaves the field being edited (the form keeps the change until Save or Revert).
        if ((e as KeyboardEvent).key === "Escape" && document.activeElement instanceof HTMLElement) document.activeElement.blur();
      },
    },
    firstRun(ctx),
    problem
      ? h("div", { class: "banner error", role: "alert", "data-testid": "config-problem" }, h("strong", {}, `The configuration file has a mistake in ${problem.field}`), h("p", { class: "wrap" }, problem.message), h("p", { class: "muted" }, "Switchboard waits until it is fixed; fix it below and save."))
      : null,
    serverSection(ctx, draft),
    gatewaySection(),
    approvalsSection(),
    routingSection(ctx, draft),
    h("div", { id: "channels" }, CHANNEL_NAMES.map((name) => channelSection(ctx, draft, name))),
    mediaSection(),
    notificationsSection(),
    quickChatSection(ctx),
    apiSection(ctx),
    retentionSection(),
    h(
      "div",
      { class: "save-bar" },
      h("span", { class: "muted mono" }, view.path),
      h("button", { type: "button", "data-testid": "settings-revert", onclick: () => void loadSettings(ctx) }, "Revert"),
      h("button", { type: "submit", class: "primary", "data-testid": "settings-save", disabled: page.saving }, page.saving ? "Saving…" : "Save"),
    ),
  );
  return h("section", { class: "page", "data-page": "settings" }, h("header", { class: "page-head" }, h("h1", {}, "Settings")), form, aboutSection(ctx));
}

/** Drops the loaded settings, so the page loads them again when shown. */
export function forgetSettings(): void {
  page.view = null;
  page.draft = null;
}
