// Pure logic of the Approvals page: the countdown to a deadline, the pending list as events
// change it, and decisions in words.

import type { ApprovalView, ApprovalsView, DecisionView } from "./ipc";

/**
 * The time left before `deadlineMs`: "expired" once it passed, "0:42" or "12:05" under an hour,
 * "1 h 05 min" beyond. Seconds are rounded up, so "0:00" is never shown while time remains.
 */
export function countdown(deadlineMs: number, nowMs: number): string {
  const left = Math.ceil((deadlineMs - nowMs) / 1000);
  if (!Number.isFinite(left) || left <= 0) return "expired";
  const hours = Math.floor(left / 3600);
  const minutes = Math.floor((left % 3600) / 60);
  const seconds = left % 60;
  if (hours > 0) return `${hours} h ${String(minutes).padStart(2, "0")} min`;
  return `${minutes}:${String(seconds).padStart(2, "0")}`;
}

/** How pressing the countdown is: under a minute is urgent, gone is expired. */
export function countdownTone(deadlineMs: number, nowMs: number): "expired" | "urgent" | "normal" {
  const left = deadlineMs - nowMs;
  if (left <= 0) return "expired";
  return left < 60_000 ? "urgent" : "normal";
}

/** The pending list with `approval` in it (once), soonest deadline first. */
export function addPending(pending: readonly ApprovalView[], approval: ApprovalView): ApprovalView[] {
  return [...pending.filter((a) => a.id !== approval.id), approval].sort((a, b) => a.deadline_ms - b.deadline_ms);
}

/** The pending list without the approval `id`. */
export function removePending(pending: readonly ApprovalView[], id: string): ApprovalView[] {
  return pending.filter((a) => a.id !== id);
}

/** The Approvals page's content after an approval was asked for (before anything was loaded, nothing). */
export function withRequested(view: ApprovalsView | null, approval: ApprovalView): ApprovalsView | null {
  return view ? { ...view, pending: addPending(view.pending, approval) } : view;
}

/** The Approvals page's content after an approval was decided (anywhere) or expired. */
export function withResolved(view: ApprovalsView | null, id: string): ApprovalsView | null {
  return view ? { ...view, pending: removePending(view.pending, id) } : view;
}

/** A decision in words: "Approved", "Rejected", "Expired". */
export function actionLabel(action: string): string {
  switch (action) {
    case "accept":
      return "Approved";
    case "reject":
      return "Rejected";
    case "expired":
      return "Expired";
    case "closed":
      return "Closed";
    default:
      return action;
  }
}

/** The badge tone of a decision. */
export function actionTone(action: string): "good" | "bad" | "off" {
  return action === "accept" ? "good" : action === "reject" ? "bad" : "off";
}

/** Who decided and where, for the history: "ann (telegram)", or why nobody did. */
export function decidedByLabel(d: Pick<DecisionView, "action" | "decided_by" | "surface"> & Partial<Pick<DecisionView, "decided_by_id">>): string {
  // Closed: the run ended or the call was dealt with elsewhere; the note says how.
  if (d.action === "closed") return "nobody: it stopped waiting";
  // The engine records expiries as decided by "timeout" (or by "server" when the server no
  // longer waited for the call after a restart), from the "engine".
  if (d.action === "expired") return d.decided_by === "server" ? "nobody: the server no longer waited for it" : "nobody: not answered in time";
  // A chat name is whatever the person chose; the platform id next to it is what they are.
  const who = d.decided_by_id && d.decided_by_id !== d.decided_by ? `${d.decided_by || "someone"} [${d.decided_by_id}]` : d.decided_by || "someone";
  if (d.surface.length === 0) return who;
  return `${who} (${d.surface})`;
}
