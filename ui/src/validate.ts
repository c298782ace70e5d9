// Checks of the Settings form before it is sent, for feedback while typing. The shell checks
// again when saving (`Config::validate`), and its answer is the one that counts; these follow
// the same rules and name the same fields.

import type { Config, FieldProblem } from "./ipc";

function httpUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return (url.protocol === "http:" || url.protocol === "https:") && url.hostname.length > 0;
  } catch {
    return false;
  }
}

/** `HH:MM` in 24-hour form. */
export function isTime(value: string): boolean {
  const match = /^(\d{2}):(\d{2})$/.exec(value);
  return match !== null && Number(match[1]) < 24 && Number(match[2]) < 60;
}

/** An IP `address:port` the API can listen on (IPv4 `a.b.c.d:port` or `[v6]:port`). */
export function isListenAddress(value: string): boolean {
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3}):(\d{1,5})$/.exec(value);
  const v6 = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(value);
  const port = v4 ? Number(v4[5]) : v6 ? Number(v6[2]) : NaN;
  if (v4 && v4.slice(1, 5).some((octet) => Number(octet) > 255)) return false;
  if (v6 && !v6[1].includes(":")) return false;
  return Number.isInteger(port) && port >= 0 && port <= 65535;
}


/** Every problem found, in the order of the form. */
export function validateSettings(config: Config): FieldProblem[] {
  const problems: FieldProblem[] = [];
  const fail = (field: string, message: string) => problems.push({ field, message });

  if (!httpUrl(config.server.url)) fail("server.url", "use an http(s) URL, e.g. http://127.0.0.1:4096");

  const g = config.gateway;
  const placeholders = g.title_template.match(/\{[^}]*\}/g) ?? [];
  const unknown = placeholders.find((p) => !["{channel}", "{peer}", "{chat_type}", "{chat_id}"].includes(p));
  if (unknown) fail("gateway.title_template", `unknown placeholder ${unknown}; use {channel}, {peer}, {chat_type} or {chat_id}`);
  const durations: [keyof Config["gateway"], string][] = [
    ["approval_timeout_minutes", "minutes"],
    ["prune_after_hours", "hours"],
    ["delivery_context_ttl_hours", "hours"],
    ["journal_retention_days", "days"],
  ];
  for (const [name, unit] of durations) {
    const value = g[name] as number;
    if (!Number.isInteger(value) || value < 1) fail(`gateway.${name}`, `must be a whole number of ${unit}, at least 1`);
  }
  g.approval_allowlist.forEach((tool, i) => {
    if (tool.trim().length === 0) fail(`gateway.approval_allowlist[${i}]`, "empty tool name");
  });

  config.routing.bindings.forEach((b, i) => {
    const field = (name: string) => `routing.bindings[${i}].${name}`;
    if (!/^[a-z0-9_-]+$/.test(b.channel)) fail(field("channel"), "write the channel in lower case, e.g. telegram");
    if (b.routing_key.trim().length === 0) fail(field("routing_key"), "set the conversation the messages go to, e.g. ops");
    if (b.direct && b.group) fail(field("group"), "a binding matches a direct peer or a group, not both");
  });

  if (!isListenAddress(config.api.listen)) fail("api.listen", "use an IP address and port, e.g. 127.0.0.1:4097");
  const scheduler = config.api.scheduler_listen.trim();
  if (!["", "auto", "off"].includes(scheduler) && !isListenAddress(scheduler)) {
    fail("api.scheduler_listen", "use auto, off, or an IP address and port, e.g. 127.0.0.2:4097");
  }

  const { telegram, slack, discord } = config.channels;
  const channel = (name: string, enabled: boolean, apiBase: string, tokens: [string, string][]) => {
    if (!httpUrl(apiBase)) fail(`channels.${name}.api_base`, "use an http(s) URL");
    if (!enabled) return;
    for (const [key, value] of tokens) {
      if (value.trim().length === 0) fail(`channels.${name}.${key}`, "required while the channel is on");
    }
  };
  if (telegram) channel("telegram", telegram.enabled, telegram.api_base, [["token", telegram.token]]);
  if (slack) channel("slack", slack.enabled, slack.api_base, [["bot_token", slack.bot_token], ["app_token", slack.app_token]]);
  if (discord) channel("discord", discord.enabled, discord.api_base, [["token", discord.token]]);

  const n = config.notifications;
  const start = n.quiet_hours_start.trim();
  const end = n.quiet_hours_end.trim();
  if (start.length > 0 && !isTime(start)) fail("notifications.quiet_hours_start", "use HH:MM, e.g. 22:00");
  if (end.length > 0 && !isTime(end)) fail("notifications.quiet_hours_end", "use HH:MM, e.g. 07:00");
  if ((start.length === 0) !== (end.length === 0)) {
    fail(start.length === 0 ? "notifications.quiet_hours_start" : "notifications.quiet_hours_end", "set both ends of the quiet hours, or neither");
  }
  return problems;
}
