import { describe, expect, it } from "vitest";
import { diagnostics, maskTokens } from "./diagnostics";
import type { Snapshot } from "./ipc";

const TELEGRAM = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq";
const SLACK = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx";

describe("maskTokens", () => {
  it.each([
    [`getMe failed for bot${TELEGRAM}`, "getMe failed for bot•••"],
    [`slack: ${SLACK} refused`, "slack: ••• refused"],
    ["xapp-1-A0123456789-1234567890123-abcdef0123456789 in use", "••• in use"],
    ["MTIzNDU2Nzg5MDEyMzQ1Njc4OQ.GaBcDe.abcdefghijklmnopqrstuvwxyz0123 bad", "••• bad"],
    ["Authorization: Bearer s3cr3t-value", "Authorization: Bearer •••"],
    ["GET /file?token=abc123&x=1", "GET /file?token=•••&x=1"],
    ["connection refused (os error 111)", "connection refused (os error 111)"],
  ])("%s", (text, masked) => expect(maskTokens(text)).toBe(masked));
});

describe("diagnostics", () => {
  const snapshot = {
    about: { version: "0.1.0", data_dir: "/home/ada/.local/share/switchboard", log_dir: "/home/ada/.local/state/switchboard/logs" },
    config_file: "/home/ada/.config/switchboard/config.toml",
    config: { state: "loaded" },
    engine_running: true,
    engine_error: null,
    server: { url: "http://127.0.0.1:4096", state: "ok", detail: "0.3.88" },
    paused: false,
    approval_mode: "ask",
    channels: [
      { name: "telegram", enabled: true, state: "auth_failed", identity: null, last_error: `the Bot API refused bot${TELEGRAM}`, last_activity_ms: null, received: 3, sent: 2 },
      { name: "slack", enabled: false, state: "disabled", identity: null, last_error: null, last_activity_ms: null, received: 0, sent: 0 },
    ],
    conversations: 2,
    active_runs: 0,
    queued: 0,
    pending_approvals: 1,
    pending_pairings: 0,
    do_not_disturb: false,
    quiet_now: false,
    autostart: false,
    api_addr: "127.0.0.1:4097",
    autopilot_lines: null,
    start_page: "channels",
  } as unknown as Snapshot;

  it("has the versions, the paths, the server and each channel with its last error, and no token", () => {
    const text = diagnostics(snapshot, Date.UTC(2026, 11, 3, 15, 0, 0), "WebKitGTK");
    expect(text).toContain("Switchboard 0.1.0");
    expect(text).toContain("time: 2026-12-03T15:00:00.000Z");
    expect(text).toContain("data: /home/ada/.local/share/switchboard");
    expect(text).toContain("logs: /home/ada/.local/state/switchboard/logs");
    expect(text).toContain("agent server: http://127.0.0.1:4096");
    expect(text).toContain("(0.3.88)");
    expect(text).toMatch(/telegram: .*received 3, sent 2; last error: the Bot API refused bot•••/);
    expect(text).toContain("slack: off");
    expect(text).not.toContain(TELEGRAM.split(":")[1]);
  });
});
