import { describe, expect, it } from "vitest";
import type { ActivityEntry, Snapshot } from "./ipc";
import { ACTIVITY_LIMIT, initialState, latest, liveReplyFor, mergeActivity, reduce, type AppState } from "./state";

const entry = (id: number): ActivityEntry => ({ id, at_ms: id, level: "info", kind: "test", scope: "s", text: `entry ${id}` });

describe("reduce", () => {
  it("keeps the latest snapshot", () => {
    const snapshot = { seq: 1, paused: true } as Snapshot;
    expect(reduce(initialState(), { kind: "snapshot", snapshot }).snapshot).toBe(snapshot);
  });

  it("keeps a newer snapshot when an older one arrives after it", () => {
    const newer = { seq: 5, server: { state: "ok" } } as Snapshot;
    const older = { seq: 4, server: { state: "unknown" } } as Snapshot;
    const state = reduce(reduce(initialState(), { kind: "snapshot", snapshot: newer }), { kind: "snapshot", snapshot: older });
    expect(state.snapshot).toBe(newer);
    expect(latest(older, newer)).toBe(newer);
  });

  it("puts activity newest first without duplicates", () => {
    let state = initialState();
    for (const id of [1, 2, 3, 2]) state = reduce(state, { kind: "activity", entry: entry(id) });
    expect(state.activity.map((e) => e.id)).toEqual([3, 2, 1]);
  });

  it("follows the reply being written and drops it when the run ends", () => {
    let state = initialState();
    state = reduce(state, { kind: "streaming", routing_key: "k", run_id: "r1", text: "Hel" });
    state = reduce(state, { kind: "streaming", routing_key: "k", run_id: "r1", text: "Hello" });
    expect(liveReplyFor(state, "k")).toEqual({ run_id: "r1", text: "Hello" });
    expect(liveReplyFor(state, "other")).toBeNull();
    state = { ...state, history: { routing_key: "k", server: [], server_error: null, journal: [], live: { run_id: "r1", text: "Hel" } } };
    state = reduce(state, { kind: "run_finished", routing_key: "k", run_id: "r1", outcome: "completed" });
    expect(liveReplyFor(state, "k")).toBeNull();
    expect(state.stale).toBe(true);
  });

  it("marks conversations stale when they change", () => {
    expect(reduce(initialState(), { kind: "conversations_changed", routing_key: null }).stale).toBe(true);
  });

  it("navigates, opening the conversation a notification named", () => {
    let state: AppState = { ...initialState(), selected: "a", history: { routing_key: "a", server: [], server_error: null, journal: [], live: null } };
    state = reduce(state, { kind: "navigate", page: "sessions", routing_key: "b" });
    expect(state.page).toBe("sessions");
    expect(state.selected).toBe("b");
    expect(state.history).toBeNull();
    state = reduce(state, { kind: "navigate", page: "settings", routing_key: null });
    expect(state.page).toBe("settings");
    expect(state.selected).toBe("b");
  });
});

describe("mergeActivity", () => {
  it("keeps at most the limit, dropping the oldest", () => {
    const many = Array.from({ length: ACTIVITY_LIMIT + 10 }, (_, i) => entry(i + 1));
    const merged = mergeActivity([], many);
    expect(merged.length).toBe(ACTIVITY_LIMIT);
    expect(merged[0].id).toBe(ACTIVITY_LIMIT + 10);
    expect(merged[merged.length - 1].id).toBe(11);
  });
});
