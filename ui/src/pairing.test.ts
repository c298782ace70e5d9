import { describe, expect, it } from "vitest";
import type { PairingView } from "./ipc";
import { addPairing, dropExpired, firstMessagePreview, pairingKey, removePairing, senderLabel } from "./pairing";
import { initialState, reduce, type AppState } from "./state";

const request = (code: string, created_ms: number, overrides: Partial<PairingView> = {}): PairingView => ({
  channel: "telegram",
  peer_id: "1111",
  peer_name: "Ann",
  code,
  first_message: "hello",
  state: "pending",
  created_ms,
  expires_ms: created_ms + 3_600_000,
  ...overrides,
});

const loaded = (pairings: PairingView[]): AppState => ({ ...initialState(), pairings });

describe("the pairing list", () => {
  it("keeps each request once, oldest first", () => {
    let list = addPairing([], request("BBBB2222", 2000));
    list = addPairing(list, request("AAAA2222", 1000));
    list = addPairing(list, request("BBBB2222", 2000));
    expect(list.map((p) => p.code)).toEqual(["AAAA2222", "BBBB2222"]);
  });

  it("tells requests apart by channel and code", () => {
    const list = addPairing([request("AAAA2222", 1)], request("AAAA2222", 2, { channel: "slack" }));
    expect(list).toHaveLength(2);
    expect(removePairing(list, "slack", "AAAA2222").map(pairingKey)).toEqual(["telegram:AAAA2222"]);
    expect(removePairing(list, "discord", "AAAA2222")).toHaveLength(2);
  });

  it("drops the codes that ran out", () => {
    const list = [request("AAAA2222", 0), request("BBBB2222", 10_000)];
    expect(dropExpired(list, 3_600_000).map((p) => p.code)).toEqual(["BBBB2222"]);
    expect(dropExpired(list, 0)).toHaveLength(2);
  });
});

describe("reduce pairing events", () => {
  it("adds a new request to the loaded list", () => {
    const state = reduce(loaded([request("BBBB2222", 2000)]), { kind: "pairing_requested", request: request("AAAA2222", 1000) });
    expect(state.pairings?.map((p) => p.code)).toEqual(["AAAA2222", "BBBB2222"]);
  });

  it("asks for the list when it is not loaded yet", () => {
    const state = reduce(initialState(), { kind: "pairing_requested", request: request("AAAA2222", 1000) });
    expect(state.pairings).toBeNull();
    expect(state.stale).toBe(true);
  });

  it("removes a request resolved anywhere and frees its buttons", () => {
    const before = { ...loaded([request("AAAA2222", 1), request("BBBB2222", 2)]), pairingBusy: ["telegram:AAAA2222"] };
    for (const state of ["admitted", "refused", "expired"] as const) {
      const after = reduce(before, { kind: "pairing_resolved", channel: "telegram", code: "AAAA2222", state, decided_by: "owner" });
      expect(after.pairings?.map((p) => p.code)).toEqual(["BBBB2222"]);
      expect(after.pairingBusy).toEqual([]);
    }
    expect(reduce(initialState(), { kind: "pairing_resolved", channel: "telegram", code: "AAAA2222", state: "admitted", decided_by: "" }).pairings).toBeNull();
  });
});

describe("a request in words", () => {
  it("names the sender with their id", () => {
    expect(senderLabel({ peer_name: "Ann", peer_id: "1111" })).toBe("Ann (1111)");
    expect(senderLabel({ peer_name: "1111", peer_id: "1111" })).toBe("1111");
    expect(senderLabel({ peer_name: "  ", peer_id: "U42" })).toBe("U42");
  });

  it("shows the first message on one line, as it was written", () => {
    expect(firstMessagePreview("hello,\n\n  run\tls for me")).toEqual({ text: "hello, run ls for me", clipped: false });
    // Markup stays characters (the page inserts text nodes); nothing is interpreted or dropped.
    expect(firstMessagePreview("<img src=x onerror=alert(1)> &amp;").text).toBe("<img src=x onerror=alert(1)> &amp;");
    expect(firstMessagePreview("")).toEqual({ text: "", clipped: false });
  });

  it("takes out characters that could hide or reorder the text", () => {
    expect(firstMessagePreview("pay \u202eusd 001\u202c now").text).toBe("pay usd 001 now");
    expect(firstMessagePreview("a\u200bb\u0000c\u0007d").text).toBe("a b c d");
    expect(firstMessagePreview("family 👨\u200d👩\u200d👧").text).toBe("family 👨\u200d👩\u200d👧");
  });

  it("cuts a long message at a word, with an ellipsis", () => {
    const long = "word ".repeat(100);
    const preview = firstMessagePreview(long, 50);
    expect(preview.clipped).toBe(true);
    expect(preview.text.endsWith("word…")).toBe(true);
    expect(Array.from(preview.text).length).toBeLessThanOrEqual(51);
    const unbroken = firstMessagePreview("x".repeat(80), 50);
    expect(unbroken.text).toBe(`${"x".repeat(50)}…`);
    // Characters, not UTF-16 units: an emoji is never split.
    const emoji = firstMessagePreview("😀".repeat(60), 50);
    expect(emoji.text).toBe(`${"😀".repeat(50)}…`);
  });
});
