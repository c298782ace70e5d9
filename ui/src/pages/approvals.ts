// Approvals: the place is kept in the navigation; deciding tool calls here arrives with the
// approvals feature. Meanwhile it says how many wait and where to decide them.

import { h } from "../dom";
import type { Ctx } from "../ctx";
import { plural } from "../format";

export function renderApprovals(ctx: Ctx): HTMLElement {
  const pending = ctx.state.snapshot?.pending_approvals ?? 0;
  return h(
    "section",
    { class: "page", "data-page": "approvals" },
    h("header", { class: "page-head" }, h("h1", {}, "Approvals")),
    h(
      "div",
      { class: "empty", "data-testid": "approvals-placeholder" },
      h("p", {}, "Approving and rejecting the agent's tool calls from this window arrives with the approvals feature."),
      h("p", { class: "muted" }, `${plural(pending, "tool call")} waiting now. Until then, answer them with the buttons in the chat they came from, or set the approval mode on the Channels page.`),
    ),
  );
}
