// Approvals: what waits for the person. First the strangers asking to talk to the agent (who,
// on which channel, what they wrote first, their code and its time left) with Admit / Refuse;
// then the tool calls waiting for a decision (with the time left, the tool, its readable
// arguments, the conversation and who asked), Approve / Reject / Always allow, the "always
// allow" rules with Revoke, and the history of decisions from the audit log.

import { h } from "../dom";
import type { Ctx } from "../ctx";
import { commands, type ApprovalChoice, type ApprovalView, type DecisionView, type PairingView, type RuleView } from "../ipc";
import { actionLabel, actionTone, countdown, countdownTone, decidedByLabel } from "../approvals";
import { firstMessagePreview, pairingKey, removePairing, senderLabel } from "../pairing";
import { clockTime, plural, timeAgo, titleCase } from "../format";

/** Loads the page's content (after a decision, a revoke, or an event said it changed). */
export async function loadApprovals(ctx: Ctx): Promise<void> {
  try {
    const [approvals, pairings] = await Promise.all([commands.approvals(), commands.pairingRequests()]);
    ctx.set({ approvals, pairings });
  } catch (e) {
    ctx.notice(ctx.errorText(e), "error");
  }
}

async function decidePairing(ctx: Ctx, p: PairingView, admit: boolean): Promise<void> {
  const key = pairingKey(p);
  if (ctx.state.pairingBusy.includes(key)) return;
  ctx.set({ pairingBusy: [...ctx.state.pairingBusy, key] });
  try {
    const decision = admit ? await commands.admitPairing(p.channel, p.code) : await commands.refusePairing(p.channel, p.code);
    ctx.notice(decision.message, "ok");
    ctx.set({ pairings: removePairing(ctx.state.pairings ?? [], p.channel, p.code) });
  } catch (e) {
    // Most likely decided elsewhere a moment ago, or expired: the message says so.
    ctx.notice(ctx.errorText(e), "error");
  } finally {
    ctx.set({ pairingBusy: ctx.state.pairingBusy.filter((k) => k !== key) });
    await loadApprovals(ctx);
  }
}

function pairingCard(ctx: Ctx, p: PairingView, now: number): HTMLElement {
  const key = pairingKey(p);
  const busy = ctx.state.pairingBusy.includes(key);
  const preview = firstMessagePreview(p.first_message);
  const sender = senderLabel(p);
  const button = (admit: boolean) =>
    h(
      "button",
      {
        type: "button",
        class: admit ? "primary" : "danger",
        "data-testid": admit ? "admit" : "refuse",
        "data-key": `${admit ? "admit" : "refuse"}-${key}`,
        disabled: busy,
        title: admit ? `Let ${sender} talk to the agent from now on` : `Ignore ${sender} silently from now on (no reply, nothing reaches the agent)`,
        onclick: () => void decidePairing(ctx, p, admit),
      },
      admit ? "Admit" : "Refuse",
    );
  return h(
    "li",
    { class: "card pairing", "data-testid": "pairing", "data-channel": p.channel, "data-code": p.code, "aria-label": `${sender} on ${titleCase(p.channel)} asks to talk to the agent` },
    h(
      "header",
      { class: "approval-head" },
      h("h2", { class: "pairing-sender" }, h("span", { "data-testid": "pairing-sender" }, sender), h("span", { class: "badge off", "data-testid": "pairing-channel" }, titleCase(p.channel))),
      h(
        "span",
        { class: "approval-deadline", title: `The code stops working at ${clockTime(p.expires_ms, now)}` },
        "code expires in ",
        h("span", { class: "countdown", "data-testid": "countdown", "data-deadline": String(p.expires_ms), "data-tone": countdownTone(p.expires_ms, now) }, countdown(p.expires_ms, now)),
      ),
    ),
    preview.text.length > 0
      ? h("blockquote", { class: "first-message wrap", "data-testid": "pairing-message", title: preview.clipped ? p.first_message : null }, preview.text)
      : h("p", { class: "muted" }, "(their first message had no text)"),
    h("p", { class: "muted" }, `Wrote ${timeAgo(p.created_ms, now)} · pairing code `, h("span", { class: "mono", "data-testid": "pairing-code" }, p.code)),
    h("div", { class: "approval-actions" }, button(true), button(false), busy ? h("span", { class: "muted" }, "Deciding…") : null),
  );
}

function pairingSection(ctx: Ctx, pairings: PairingView[] | null, now: number): HTMLElement {
  return h(
    "section",
    { class: "approvals-section pairing-section", "aria-labelledby": "pairing-title", "data-testid": "pairings" },
    h("h2", { id: "pairing-title" }, `Asking to talk to the agent${pairings && pairings.length > 0 ? ` (${pairings.length})` : ""}`),
    pairings === null
      ? h("p", { class: "muted" }, "Loading…")
      : pairings.length === 0
        ? h("p", { class: "muted", "data-testid": "no-pairings" }, "Nobody is waiting to be admitted. When someone the bot does not know writes to it directly, they get a pairing code, nothing reaches the agent, and they show up here for you to admit or refuse.")
        : h("ul", { class: "approval-list", "aria-label": "Asking to talk to the agent" }, pairings.map((p) => pairingCard(ctx, p, now))),
  );
}

async function decide(ctx: Ctx, approval: ApprovalView, choice: ApprovalChoice, pattern?: string): Promise<void> {
  if (ctx.state.deciding.includes(approval.id)) return;
  ctx.set({ deciding: [...ctx.state.deciding, approval.id] });
  try {
    const outcome = await commands.decideApproval(approval.id, choice, pattern);
    // The shell's message says it all, including "Already decided: …" when someone was first.
    ctx.notice(outcome.message, outcome.outcome === "decided" ? "ok" : "error");
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

/**
 * Every argument: readable, secrets masked, long values folded; "Show masked values" puts the
 * arguments exactly as the agent sent them in their place (and back). Those are written into the
 * page only when asked for.
 */
function argumentsBlock(a: ApprovalView): HTMLElement {
  const pre = h("pre", { class: "arguments wrap mono", "data-testid": "approval-arguments" }, a.arguments);
  // Something is masked or folded: the preview says so, or the readable form shows a mask or a fold.
  const masked = !a.complete || /•|more characters\)/.test(a.arguments);
  const toggle = masked
    ? h(
        "button",
        {
          type: "button",
          class: "small",
          "data-testid": "reveal-arguments",
          "data-key": `reveal-arguments-${a.id}`,
          "aria-pressed": "false",
          onclick: (event: Event) => {
            const button = event.currentTarget as HTMLButtonElement;
            const shown = button.getAttribute("aria-pressed") === "true";
            pre.textContent = shown ? a.arguments : a.arguments_whole;
            button.setAttribute("aria-pressed", shown ? "false" : "true");
            button.textContent = shown ? "Show masked values" : "Hide masked values";
          },
        },
        "Show masked values",
      )
    : null;
  return h("details", { class: "approval-arguments" }, h("summary", {}, "All arguments"), toggle, pre);
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
    // What will run: the command, the file and its diff, or the arguments.
    h("p", { class: "approval-summary", "data-testid": "approval-summary" }, `Wants to ${a.summary}`),
    h("pre", { class: "arguments wrap mono", "data-testid": "approval-detail" }, a.detail),
    a.complete ? null : h("p", { class: "banner warning", "data-testid": "approval-incomplete" }, "Not all of this call is shown: a secret is masked or a long value shortened. Allow it only if what you see is enough."),
    argumentsBlock(a),
    h(
      "div",
      { class: "approval-actions" },
      button("approve", "Allow once", "primary", "approve"),
      button("allow_conversation", "Allow in this conversation", "", "allow-conversation"),
      button("always_allow", `Always allow ${a.tool}`, "", "always-allow"),
      button("reject", "Reject", "danger", "reject"),
      h("input", {
        type: "text",
        class: "mono pattern",
        "data-testid": "always-allow-pattern",
        "data-key": `always-allow-pattern-${a.id}`,
        placeholder: "always allow only… e.g. git *  or  command=cargo *; work_dir=/home/me/*",
        title: "Optional. A glob for the command (or path), or name=glob conditions separated by ;. * never matches ; | & or other shell operators.",
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
              h("span", { class: "muted", "data-testid": "rule-scope" }, r.channel ? ` · only in ${titleCase(r.channel)}` : " · every channel"),
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
              h("span", { class: "text wrap" }, `by ${decidedByLabel(d)}`, d.note ? h("span", { class: "muted", "data-testid": "decision-note" }, ` · ${d.note}`) : null, h("span", { class: "muted mono" }, ` · session ${d.session_id}`)),
            ),
          ),
        ),
  );
}

export function renderApprovals(ctx: Ctx): HTMLElement {
  const { snapshot, approvals } = ctx.state;
  const now = Date.now();
  const { pairings } = ctx.state;
  const counts = approvals
    ? [`${plural(approvals.pending.length, "call")} waiting`, pairings && pairings.length > 0 ? `${plural(pairings.length, "stranger")} asking to talk` : null].filter(Boolean).join(" · ")
    : null;
  const head = h("header", { class: "page-head" }, h("h1", {}, "Approvals"), counts ? h("span", { class: "muted", "data-testid": "approvals-count" }, counts) : null);
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
    pairingSection(ctx, pairings, now),
    h("h2", { class: "section-title" }, "Tool calls"),
    modeNote,
    approvals.pending.length === 0
      ? h("p", { class: "empty muted", "data-testid": "no-approvals" }, "Nothing waits for a decision. When the agent wants to run a tool that needs approval, it shows up here, in a notification and in the chat.")
      : h("ul", { class: "approval-list", "aria-label": "Waiting for a decision" }, approvals.pending.map((a) => pendingCard(ctx, a, now))),
    rulesSection(ctx, approvals.rules, now),
    historySection(approvals.history, now),
  );
}
