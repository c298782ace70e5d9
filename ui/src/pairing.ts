// Pure logic of the pairing requests (strangers asking to talk to the agent): the list as
// events change it, and how a request is put in words.

import type { PairingView } from "./ipc";

/** A request's identity: its code on its channel. */
export function pairingKey(p: Pick<PairingView, "channel" | "code">): string {
  return `${p.channel}:${p.code}`;
}

/** The list with `request` in it (once), oldest first, as the shell lists them. */
export function addPairing(list: readonly PairingView[], request: PairingView): PairingView[] {
  const key = pairingKey(request);
  return [...list.filter((p) => pairingKey(p) !== key), request].sort((a, b) => a.created_ms - b.created_ms);
}

/** The list without the request with `code` on `channel`. */
export function removePairing(list: readonly PairingView[], channel: string, code: string): PairingView[] {
  const key = pairingKey({ channel, code });
  return list.filter((p) => pairingKey(p) !== key);
}

/** The list without the requests whose code expired by `now` (the shell says so too, later). */
export function dropExpired(list: readonly PairingView[], now: number): PairingView[] {
  return list.filter((p) => p.expires_ms > now);
}

/** "Ann (1111)", or the id alone when the platform gave no name. */
export function senderLabel(p: Pick<PairingView, "peer_name" | "peer_id">): string {
  const name = p.peer_name.trim();
  return name.length === 0 || name === p.peer_id ? p.peer_id : `${name} (${p.peer_id})`;
}

/** The longest first message shown before it is cut (the whole text is one click away). */
export const FIRST_MESSAGE_PREVIEW = 280;

/**
 * A stranger's first message as the list shows it: on one line (line breaks, tabs and other
 * control or invisible formatting characters become spaces, so the text cannot rearrange or
 * hide itself), cut at a word near `max` characters with an ellipsis. `clipped` says whether
 * anything was left out.
 */
export function firstMessagePreview(text: string, max = FIRST_MESSAGE_PREVIEW): { text: string; clipped: boolean } {
  // Control characters, bidi embeddings/overrides/isolates and marks, zero-width spaces. The
  // zero-width joiners stay: emoji sequences and several scripts need them.
  const flat = text.replace(/[\p{Cc}\s\u061c\u200b\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]+/gu, " ").trim();
  const chars = Array.from(flat);
  if (chars.length <= max) return { text: flat, clipped: false };
  const cut = chars.slice(0, max).join("");
  const space = cut.lastIndexOf(" ");
  // Cut at the last word boundary unless that would drop most of the preview.
  const head = space > max * 0.6 ? cut.slice(0, space) : cut;
  return { text: `${head.trimEnd()}…`, clipped: true };
}
