import { describe, expect, it } from "vitest";
import type { Config } from "./ipc";
import { isListenAddress, isTime, validateSettings } from "./validate";

function config(): Config {
  return {
    server: { url: "http://127.0.0.1:4096", token: "" },
    gateway: {
      model: "",
      title_template: "{channel} / {peer}",
      approval_mode: "ask",
      approval_allowlist: [],
      approval_timeout_minutes: 30,
      prune_after_hours: 168,
      delivery_context_ttl_hours: 4,
      journal_retention_days: 30,
      usage_footer: false,
    },
    routing: { dm_scope: "per_channel_peer", bindings: [] },
    api: { listen: "127.0.0.1:4097", token: "sb_x", scheduler_listen: "auto" },
    channels: {},
    notifications: { enabled: true, do_not_disturb: false, quiet_hours_start: "", quiet_hours_end: "" },
    desktop: { quick_chat_shortcut: "Ctrl+Alt+Space" },
    media: { max_mb: 20, max_files: 10, transcribe_command: "", transcribe_timeout_secs: 120 },
  };
}

const fields = (c: Config) => validateSettings(c).map((p) => p.field);

describe("validateSettings", () => {
  it("accepts the defaults", () => {
    expect(validateSettings(config())).toEqual([]);
  });

  it.each<[string, (c: Config) => void, string]>([
    ["a server URL that is not http", (c) => (c.server.url = "ftp://example.com"), "server.url"],
    ["an empty server URL", (c) => (c.server.url = ""), "server.url"],
    ["an unknown title placeholder", (c) => (c.gateway.title_template = "{channel} {nope}"), "gateway.title_template"],
    ["a zero timeout", (c) => (c.gateway.approval_timeout_minutes = 0), "gateway.approval_timeout_minutes"],
    ["a fractional retention", (c) => (c.gateway.journal_retention_days = 1.5), "gateway.journal_retention_days"],
    ["an empty allowlist entry", (c) => (c.gateway.approval_allowlist = ["view", " "]), "gateway.approval_allowlist[1]"],
    ["an API address that is a name", (c) => (c.api.listen = "localhost:4097"), "api.listen"],
    ["an API address without a port", (c) => (c.api.listen = "127.0.0.1"), "api.listen"],
    ["a scheduler address that is a name", (c) => (c.api.scheduler_listen = "localhost:4097"), "api.scheduler_listen"],
    ["half the quiet hours", (c) => (c.notifications.quiet_hours_start = "22:00"), "notifications.quiet_hours_end"],
    ["a quiet hour that is not a time", (c) => Object.assign(c.notifications, { quiet_hours_start: "25:00", quiet_hours_end: "07:00" }), "notifications.quiet_hours_start"],
    ["a binding with both a peer and a group", (c) => c.routing.bindings.push({ channel: "telegram", routing_key: "ops", direct: "1", group: "2" }), "routing.bindings[0].group"],
    ["a binding without a conversation", (c) => c.routing.bindings.push({ channel: "telegram", routing_key: " " }), "routing.bindings[0].routing_key"],
    ["a binding channel in capitals", (c) => c.routing.bindings.push({ channel: "Telegram", routing_key: "ops" }), "routing.bindings[0].channel"],
  ])("reports %s", (_what, change, field) => {
    const c = config();
    change(c);
    expect(fields(c)).toContain(field);
  });

  it("asks for the tokens of an enabled channel only", () => {
    const c = config();
    const telegram = { enabled: true, token: "", api_base: "https://api.telegram.org", dm_policy: "pairing" as const, allowed_users: [], owners: [], require_mention: true, groups: [], open_groups: [], approvers: "auto" as const, streaming: "auto" as const, show_tools: true };
    c.channels.telegram = telegram;
    expect(fields(c)).toEqual(["channels.telegram.token"]);
    telegram.enabled = false;
    expect(fields(c)).toEqual([]);
    c.channels.slack = { enabled: true, bot_token: "xoxb-1", app_token: "", api_base: "not a url", dm_policy: "open", allowed_users: [], owners: [], require_mention: true, groups: [], open_groups: [], approvers: "auto" as const, streaming: "auto" as const, show_tools: true };
    expect(fields(c)).toEqual(["channels.slack.api_base", "channels.slack.app_token"]);
  });
});

describe("small checks", () => {
  it.each([
    ["22:00", true],
    ["07:30", true],
    ["7:30", false],
    ["24:00", false],
    ["12:60", false],
    ["", false],
  ])("isTime(%s) = %s", (text, ok) => expect(isTime(text)).toBe(ok));

  it.each([
    ["127.0.0.1:4097", true],
    ["127.1.2.3:0", true],
    ["[::1]:4097", true],
    ["192.168.1.2:4097", true],
    ["0.0.0.0:4097", true],
    ["[fe80::1]:4097", true],
    ["127.0.0.1:70000", false],
    ["127.0.0.300:80", false],
    ["127.0.0.1", false],
    ["[1234]:80", false],
    ["localhost:4097", false],
  ])("isListenAddress(%s) = %s", (text, ok) => expect(isListenAddress(text)).toBe(ok));
});
