// Channels: the gateway at a glance (running, approval mode, server, do not disturb) and each
// channel's state, identity, last error, activity and counts, with its switch, Test and Edit.

import { h, since } from "../dom";
import { APPROVAL_MODES, commands, type ApprovalMode, type ChannelStatus, type Snapshot } from "../ipc";
import { channelStateLabel, channelTone, plural, serverStateLabel, titleCase } from "../format";
import type { Ctx } from "../ctx";

export const MODE_LABELS: Record<ApprovalMode, string> = {
  ask: "Ask",
  allowlist: "Allowlist",
  allow_all: "Allow all",
  deny_all: "Deny all",
};

/** Test results shown under each channel until the next test. */
const testResults = new Map<string, { ok: boolean; text: string }>();

export function switchInput(id: string, label: string, checked: boolean, disabled: boolean, onChange: (checked: boolean) => void): HTMLElement {
  const input = h("input", {
    type: "checkbox",
    role: "switch",
    id,
    "data-testid": id,
    "data-key": id,
    checked,
    disabled,
    "aria-checked": String(checked),
    onchange: (e: Event) => onChange((e.target as HTMLInputElement).checked),
  });
  return h("label", { class: "switch", for: id }, input, h("span", { class: "switch-track", "aria-hidden": "true" }), h("span", { class: "switch-label" }, label));
}

function overview(ctx: Ctx, s: Snapshot): HTMLElement {
  const running = s.engine_running;
  const modeSelect = h(
    "select",
    {
      id: "approval-mode",
      "data-testid": "approval-mode",
      "data-key": "approval-mode",
      disabled: !running,
      "aria-label": "Approval mode",
      onchange: (e: Event) => {
        const mode = (e.target as HTMLSelectElement).value as ApprovalMode;
        ctx.run(commands.setApprovalMode(mode), `Approval mode: ${MODE_LABELS[mode]}`);
      },
    },
    APPROVAL_MODES.map((mode) => h("option", { value: mode, selected: mode === s.approval_mode }, MODE_LABELS[mode])),
  );
  const serverTone = s.server.state === "ok" ? "good" : s.server.state === "unknown" ? "off" : "bad";
  return h(
    "div",
    { class: "overview" },
    h(
      "div",
      { class: "card" },
      h("h2", {}, "Gateway"),
      switchInput("gateway-toggle", s.paused ? "Paused" : "Running", !s.paused, !running, (on) =>
        ctx.run(commands.setPaused(!on), on ? "Gateway resumed" : "Gateway paused"),
      ),
      h("p", { class: "muted" }, `${plural(s.conversations, "conversation")} · ${plural(s.active_runs, "run")} active · ${s.queued} waiting`),
    ),
    h("div", { class: "card" }, h("h2", {}, h("label", { for: "approval-mode" }, "Approval mode")), modeSelect, h("p", { class: "muted" }, `${plural(s.pending_approvals, "approval")} pending`)),
    h(
      "div",
      { class: "card", "data-testid": "server-card" },
      h("h2", {}, "Agent server"),
      h("p", {}, h("span", { class: `badge ${serverTone}`, "data-testid": "server-state" }, serverStateLabel(s.server.state)), " ", h("span", { class: "mono" }, s.server.url)),
      s.server.detail ? h("p", { class: "muted wrap" }, s.server.detail) : null,
      h("button", { type: "button", disabled: !running, "data-key": "server-check", onclick: () => ctx.run(commands.checkServer(), "Checking the agent server…") }, "Check again"),
    ),
    h(
      "div",
      { class: "card" },
      h("h2", {}, "Notifications"),
      switchInput("dnd-toggle", "Do not disturb", s.do_not_disturb, false, (on) => ctx.run(commands.setDoNotDisturb(on), on ? "Do not disturb is on" : "Do not disturb is off")),
      s.quiet_now ? h("p", { class: "muted" }, "Quiet hours now: notifications are held") : null,
      switchInput("autostart-toggle", "Launch at login", s.autostart, false, (on) => ctx.run(commands.setAutostart(on), on ? "Starts at login" : "No longer starts at login")),
    ),
  );
}

function channelRow(ctx: Ctx, c: ChannelStatus, running: boolean): HTMLElement {
  const tone = channelTone(c.state);
  const result = testResults.get(c.name);
  return h(
    "li",
    { class: "channel", "data-testid": `channel-${c.name}`, "data-state": c.state, "data-enabled": String(c.enabled) },
    h(
      "div",
      { class: "channel-main" },
      h("h3", {}, titleCase(c.name), " ", h("span", { class: `badge ${tone}`, "data-testid": `channel-state-${c.name}` }, channelStateLabel(c.state))),
      h("p", { class: "muted" }, c.identity ? `Bot ${c.identity.name} (${c.identity.id})` : "Bot identity not known yet"),
      c.last_error ? h("p", { class: "error wrap", "data-testid": `channel-error-${c.name}` }, c.last_error) : null,
      h("p", { class: "muted" }, "Last activity ", since(c.last_activity_ms), ` · ${c.received} received · ${c.sent} sent`),
      result ? h("p", { class: result.ok ? "ok" : "error", role: "status" }, result.text) : null,
    ),
    h(
      "div",
      { class: "channel-actions" },
      switchInput(`channel-toggle-${c.name}`, c.enabled ? "On" : "Off", c.enabled, !running, (on) =>
        ctx.run(commands.setChannelEnabled(c.name, on), `${titleCase(c.name)} turned ${on ? "on" : "off"}`),
      ),
      h(
        "button",
        {
          type: "button",
          "data-testid": `channel-test-${c.name}`,
          "data-key": `channel-test-${c.name}`,
          onclick: async () => {
            testResults.set(c.name, { ok: true, text: "Testing…" });
            ctx.rerender();
            try {
              const identity = await commands.testChannel(c.name, null);
              testResults.set(c.name, { ok: true, text: `Credentials work: bot ${identity.name} (${identity.id})` });
            } catch (e) {
              testResults.set(c.name, { ok: false, text: ctx.errorText(e) });
            }
            ctx.rerender();
          },
        },
        "Test",
      ),
      h("button", { type: "button", "data-key": `channel-edit-${c.name}`, onclick: () => ctx.navigate("settings", null, `channels-${c.name}`) }, "Edit"),
    ),
  );
}

export function renderChannels(ctx: Ctx): HTMLElement {
  const s = ctx.state.snapshot;
  if (!s) return h("section", { class: "page" }, h("p", { class: "muted" }, "Loading…"));
  return h(
    "section",
    { class: "page", "data-page": "channels" },
    h("header", { class: "page-head" }, h("h1", {}, "Channels")),
    overview(ctx, s),
    s.channels.length === 0
      ? h(
          "div",
          { class: "empty" },
          h("p", {}, s.engine_running ? "No chat channel is set up yet." : "Switchboard is not running yet."),
          h("button", { type: "button", class: "primary", onclick: () => ctx.navigate("settings", null, "channels") }, "Set up a channel"),
        )
      : h("ul", { class: "channel-list", "aria-label": "Channels" }, s.channels.map((c) => channelRow(ctx, c, s.engine_running))),
  );
}
