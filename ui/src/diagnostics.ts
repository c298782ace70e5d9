// The diagnostics a person can paste into a bug report: versions, where the files are, how the
// agent server and each channel stand and their last errors — with anything that looks like a
// token masked, whatever the message it hides in.

import type { Snapshot } from "./ipc";
import { channelStateLabel, serverStateLabel } from "./format";

/** Telegram bot tokens, Slack tokens and Discord bot tokens, whole. */
const SECRETS: readonly RegExp[] = [
  /\d{6,}:[A-Za-z0-9_-]{30,}/g,
  /\bx(?:ox[abposr]|app)-[A-Za-z0-9-]{10,}/g,
  /\b[A-Za-z0-9_-]{23,28}\.[A-Za-z0-9_-]{6,7}\.[A-Za-z0-9_-]{27,}/g,
];
/** A secret after a telling prefix (kept): a bearer value, a token in a query string. */
const AFTER: readonly RegExp[] = [/(Bearer\s+)[^\s"']+/gi, /([?&](?:token|key|secret)=)[^&\s]+/gi];

/** Replaces whatever looks like a token in `text` with "•••". */
export function maskTokens(text: string): string {
  const whole = SECRETS.reduce((masked, pattern) => masked.replace(pattern, "•••"), text);
  return AFTER.reduce((masked, pattern) => masked.replace(pattern, "$1•••"), whole);
}

/** The diagnostics text for `snapshot`, taken at `now` (ms). */
export function diagnostics(snapshot: Snapshot, now: number, userAgent = ""): string {
  const lines = [
    `Switchboard ${snapshot.about.version}`,
    `time: ${new Date(now).toISOString()}`,
    userAgent ? `webview: ${userAgent}` : null,
    `configuration: ${snapshot.config_file} (${snapshot.config.state})`,
    `data: ${snapshot.about.data_dir}`,
    `logs: ${snapshot.about.log_dir}`,
    `engine: ${snapshot.engine_running ? "running" : "stopped"}${snapshot.engine_error ? ` — ${snapshot.engine_error}` : ""}`,
    `agent server: ${snapshot.server.url} — ${serverStateLabel(snapshot.server.state)}${snapshot.server.detail ? ` (${snapshot.server.detail})` : ""}`,
    `gateway API: ${snapshot.api_addr ?? "not listening"}`,
    `approval mode: ${snapshot.approval_mode}${snapshot.paused ? ", paused" : ""}`,
    `conversations: ${snapshot.conversations}, running: ${snapshot.active_runs}, queued: ${snapshot.queued}, approvals waiting: ${snapshot.pending_approvals}, pairing requests: ${snapshot.pending_pairings}`,
    "channels:",
    ...(snapshot.channels.length === 0
      ? ["  none"]
      : snapshot.channels.map(
          (c) =>
            `  ${c.name}: ${c.enabled ? channelStateLabel(c.state) : "off"}, received ${c.received}, sent ${c.sent}${c.last_error ? `; last error: ${c.last_error}` : ""}`,
        )),
  ];
  return maskTokens(lines.filter((l): l is string => l !== null).join("\n"));
}
