// Approvals: the tool calls waiting for a decision (with the time left, the tool, its readable
// arguments, the conversation and who asked), Approve / Reject / Always allow, the "always
// allow" rules with Revoke, and the history of decisions from the audit log.

import { h } from "../dom";
import type { Ctx } from "../ctx";
import { commands, type ApprovalChoice, type ApprovalView, type DecisionView, type RuleView } from "../ipc";
import { actionLabel, actionTone, countdown, countdownTone, decidedByLabel } from "../approvals";
import { clockTime, plural, titleCase } from "../format";

/** Loads the page's content (after a decision, a revoke, or an event said it changed). */
export async function loadApprovals(ctx: Ctx): Promise<void> {
  try {
    const approvals = await commands.approvals();
    ctx.set({ approvals });
  } catch (e) {
    ctx.notice(ctx.errorText(e), "error");
  }
}

async function decide(ctx: Ctx, approval: ApprovalView, choice: ApprovalChoice, pattern?: string): Promise<void> {
  if (ctx.state.deciding.includes(approval.id)) return;
  ctx.set({ deciding: [...ctx.state.deciding, approval.id] });
  try {
    const outcome = await commands.decideApproval(approval.id, choice, pattern);
    ctx.notice(outcome.outcome === "decided" ? outcome.message : `Already decided: ${outcome.message}`, outcome.outcome === "decided" ? "ok" : "error");
  } catch (e) {
    ctx.notice(ctx.errorText(e), "error");
  } finally {
    ctx.set({ deciding: ctx.state.deciding.filter((id) => id !== approval.id) });
    await loadApprovals(ctx);
  }
}

/** Refreshes every countdown on the page in place (called each second; nothing is rebuilt). */
export function tickCountdowns(root: ParentNode, now: number): void {
  for (const el of root.querySelectorAll<HTMLElement>("[data-deadline]")) {
    const deadline = Number(el.dataset.deadline);
    const text = countdown(deadline, now);
    if (el.textContent !== text) el.textContent = text;
    const tone = countdownTone(deadline, now);
    if (el.dataset.tone !== tone) el.dataset.tone = tone;
  }
}

function pendingCard(ctx: Ctx, a: ApprovalView, now: number): HTMLElement {
  const busy = ctx.state.deciding.includes(a.id);
  const where = [a.channel ? titleCase(a.channel) : null, a.routing_key].filter(Boolean).join(" · ");
  const button = (choice: ApprovalChoice, label: string, cls: string, testid: string) =>
    h(
      "button",
      {
        type: "button",
        class: cls,
        "data-testid": testid,
        "data-key": `${testid}-${a.id}`,
        disabled: busy,
        onclick: (event: Event) => {
          // "Always allow" may be narrowed by the pattern typed next to it.
          const card = (event.currentTarget as HTMLElement).closest("[data-testid=approval]");
          const pattern = card?.querySelector<HTMLInputElement>("[data-testid=always-allow-pattern]")?.value;
          void decide(ctx, a, choice, choice === "always_allow" ? pattern : undefined);
        },
      },
      label,
    );
  return h(
    "li",
    { class: "card approval", "data-testid": "approval", "data-id": a.id, "aria-label": `${a.tool} asked by ${a.requester}` },
    h(
      "header",
      { class: "approval-head" },
      h("h2", { class: "approval-tool mono" }, a.tool),
      h(
        "span",
        { class: "approval-deadline", title: `Rejected automatically at ${clockTime(a.deadline_ms, now)}` },
        "expires in ",
        h("span", { class: "countdown", "data-testid": "countdown", "data-deadline": String(a.deadline_ms), "data-tone": countdownTone(a.deadline_ms, now) }, countdown(a.deadline_ms, now)),
      ),
    ),
    h("p", { class: "muted" }, "Asked by ", h("strong", { "data-testid": "approval-requester" }, a.requester), ` in ${where}`),
    a.session_id ? h("p", { class: "muted mono" }, `session ${a.session_id}`) : null,
    h("pre", { class: "arguments wrap mono", "data-testid": "approval-arguments" }, a.arguments),
    h(
      "div",
      { class: "approval-actions" },
      button("approve", "Approve", "primary", "approve"),
      button("reject", "Reject", "danger", "reject"),
      button("always_allow", `Always allow ${a.tool}`, "", "always-allow"),
      h("input", {
        type: "text",
        class: "mono pattern",
        "data-testid": "always-allow-pattern",
        "data-key": `always-allow-pattern-${a.id}`,
        placeholder: "only when the arguments match… (optional; * is a wildcard; several arguments: match their JSON)",
        "aria-label": `Narrow “Always allow ${a.tool}” to arguments matching a pattern`,
        disabled: busy,
      }),
      busy ? h("span", { class: "muted" }, "Deciding…") : null,
    ),
  );
}

function rulesSection(ctx: Ctx, rules: RuleView[], now: number): HTMLElement {
  return h(
    "section",
    { class: "approvals-section", "aria-labelledby": "rules-title" },
    h("h2", { id: "rules-title" }, `Always allowed (${rules.length})`),
    rules.length === 0
      ? h("p", { class: "muted" }, "No rules: every call that is not on the allowlist asks first. \u201cAlways allow\u201d adds one.")
      : h(
          "ul",
          { class: "rule-list" },
          rules.map((r) =>
            h(
              "li",
              { class: "rule", "data-testid": "rule", "data-id": String(r.id) },
              h("span", { class: "mono" }, r.tool),
              r.arg_pattern ? h("span", { class: "muted mono" }, ` matching ${r.arg_pattern}`) : null,
              h("span", { class: "muted" }, ` · by ${r.created_by} · ${clockTime(r.created_ms, now)}`),
              h(
                "button",
                {
                  type: "button",
                  class: "small danger",
                  "data-testid": "revoke-rule",
                  "data-key": `revoke-rule-${r.id}`,
                  onclick: async () => {
                    const removed = await ctx.run(commands.removeRule(r.id), `${r.tool} asks again from its next call`);
                    if (removed !== undefined) await loadApprovals(ctx);
                  },
                },
                "Revoke",
              ),
            ),
          ),
        ),
  );
}

function historySection(history: DecisionView[], now: number): HTMLElement {
  return h(
    "section",
    { class: "approvals-section", "aria-labelledby": "history-title" },
    h("h2", { id: "history-title" }, "History"),
    history.length === 0
      ? h("p", { class: "muted" }, "No decisions yet.")
      : h(
          "ol",
          { class: "activity-list decision-list", "aria-label": "Decisions, newest first" },
          history.map((d) =>
            h(
              "li",
              { class: "activity decision", "data-testid": "decision", "data-action": d.action, "data-surface": d.surface },
              h("time", { datetime: new Date(d.at_ms).toISOString() }, clockTime(d.at_ms, now)),
              h("span", { class: `badge ${actionTone(d.action)}` }, actionLabel(d.action)),
              h("span", { class: "mono scope" }, d.tool),
              h("span", { class: "text wrap" }, `by ${decidedByLabel(d)}`, h("span", { class: "muted mono" }, ` · session ${d.session_id}`)),
            ),
          ),
        ),
  );
}

export function renderApprovals(ctx: Ctx): HTMLElement {
  const { snapshot, approvals } = ctx.state;
  const now = Date.now();
  const head = h("header", { class: "page-head" }, h("h1", {}, "Approvals"), approvals ? h("span", { class: "muted", "data-testid": "approvals-count" }, `${plural(approvals.pending.length, "call")} waiting`) : null);
  if (!snapshot?.engine_running) {
    return h("section", { class: "page", "data-page": "approvals" }, head, h("p", { class: "empty muted" }, "Switchboard is not running yet."));
  }
  if (!approvals) {
    return h("section", { class: "page", "data-page": "approvals" }, head, h("p", { class: "muted" }, "Loading…"));
  }
  const modeNote =
    snapshot.approval_mode === "ask"
      ? null
      : h("p", { class: "banner info" }, `The approval mode is \u201c${snapshot.approval_mode.replace("_", " ")}\u201d: new calls are decided without asking. Change it on the Channels page or in the tray.`);
  return h(
    "section",
    { class: "page approvals", "data-page": "approvals" },
    head,
    modeNote,
    approvals.pending.length === 0
      ? h("p", { class: "empty muted", "data-testid": "no-approvals" }, "Nothing waits for a decision. When the agent wants to run a tool that needs approval, it shows up here, in a notification and in the chat.")
      : h("ul", { class: "approval-list", "aria-label": "Waiting for a decision" }, approvals.pending.map((a) => pendingCard(ctx, a, now))),
    rulesSection(ctx, approvals.rules, now),
    historySection(approvals.history, now),
  );
}
