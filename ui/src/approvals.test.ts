import { describe, expect, it } from "vitest";
import type { ApprovalView, ApprovalsView } from "./ipc";
import { actionLabel, addPending, countdown, countdownTone, decidedByLabel, removePending } from "./approvals";
import { initialState, reduce, type AppState } from "./state";

const approval = (id: string, deadline_ms: number): ApprovalView => ({
  id,
  tool: "stakpak__run_command",
  summary: "run `ls`",
  detail: "ls",
  complete: true,
  arguments: "command: ls\ntoken: ••••••",
  arguments_whole: '{\n  "command": "ls",\n  "token": "abc123"\n}',
  routing_key: "chat:dm:42",
  session_id: "s1",
  channel: "chat",
  requester: "ann",
  created_ms: 0,
  deadline_ms,
});

const loaded = (pending: ApprovalView[]): AppState => {
  const approvals: ApprovalsView = { pending, history: [], rules: [] };
  return { ...initialState(), approvals };
};

describe("countdown", () => {
  it("shows minutes and seconds under an hour, rounding seconds up", () => {
    expect(countdown(300_000, 0)).toBe("5:00");
    expect(countdown(299_001, 0)).toBe("5:00");
    expect(countdown(299_000, 0)).toBe("4:59");
    expect(countdown(65_000, 0)).toBe("1:05");
    expect(countdown(42_000, 0)).toBe("0:42");
    expect(countdown(1, 0)).toBe("0:01");
  });

  it("shows hours and minutes beyond an hour", () => {
    expect(countdown(3_600_000, 0)).toBe("1 h 00 min");
    expect(countdown(3_900_000 + 30_000, 0)).toBe("1 h 05 min");
    expect(countdown(26 * 3_600_000, 0)).toBe("26 h 00 min");
  });

  it("says expired once the deadline passed", () => {
    expect(countdown(1000, 1000)).toBe("expired");
    expect(countdown(0, 5000)).toBe("expired");
    expect(countdown(Number.NaN, 0)).toBe("expired");
  });

  it("marks the last minute urgent", () => {
    expect(countdownTone(120_000, 0)).toBe("normal");
    expect(countdownTone(59_000, 0)).toBe("urgent");
    expect(countdownTone(0, 0)).toBe("expired");
  });
});

describe("the pending list", () => {
  it("keeps each approval once, soonest deadline first", () => {
    let pending = addPending([], approval("b", 2000));
    pending = addPending(pending, approval("a", 1000));
    pending = addPending(pending, approval("b", 2000));
    expect(pending.map((a) => a.id)).toEqual(["a", "b"]);
    expect(removePending(pending, "a").map((a) => a.id)).toEqual(["b"]);
    expect(removePending(pending, "zzz")).toHaveLength(2);
  });
});

describe("reduce approvals", () => {
  it("adds a requested approval to the loaded list", () => {
    const state = reduce(loaded([approval("a", 5000)]), { kind: "approval_requested", approval: approval("b", 1000) });
    expect(state.approvals?.pending.map((a) => a.id)).toEqual(["b", "a"]);
  });

  it("asks for the list when it is not loaded yet", () => {
    const state = reduce(initialState(), { kind: "approval_requested", approval: approval("b", 1000) });
    expect(state.approvals).toBeNull();
    expect(state.stale).toBe(true);
  });

  it("drops an approval decided elsewhere and fetches the history again", () => {
    let state = { ...loaded([approval("a", 5000), approval("b", 6000)]), deciding: ["a"] };
    state = reduce(state, { kind: "approval_resolved", approval_id: "a", action: "accept", decided_by: "ann", surface: "chat", line: "✅ stakpak__run_command: approved by ann (telegram)" });
    expect(state.approvals?.pending.map((a) => a.id)).toEqual(["b"]);
    expect(state.deciding).toEqual([]);
    expect(state.stale).toBe(true);
  });
});

describe("decisions in words", () => {
  it("names the action and who decided where", () => {
    expect(actionLabel("accept")).toBe("Approved");
    expect(actionLabel("reject")).toBe("Rejected");
    expect(actionLabel("expired")).toBe("Expired");
    expect(decidedByLabel({ action: "accept", decided_by: "ann", surface: "telegram" })).toBe("ann (telegram)");
    expect(decidedByLabel({ action: "accept", decided_by: "Ann (owner)", decided_by_id: "1111", surface: "telegram" })).toBe("Ann (owner) [1111] (telegram)");
    expect(decidedByLabel({ action: "expired", decided_by: "timeout", surface: "engine" })).toBe("nobody: not answered in time");
    expect(decidedByLabel({ action: "expired", decided_by: "server", surface: "engine" })).toBe("nobody: the server no longer waited for it");
  });

  it("tells a call that stopped waiting from one somebody decided", () => {
    expect(actionLabel("closed")).toBe("Closed");
    expect(decidedByLabel({ action: "closed", decided_by: "engine", surface: "engine" })).toBe("nobody: it stopped waiting");
  });
});
