// Activity: a searchable log of what happened, newest first.

import { h } from "../dom";
import type { Ctx } from "../ctx";
import { clockTime, filterActivity } from "../format";

export function renderActivity(ctx: Ctx): HTMLElement {
  const { activity, activityQuery } = ctx.state;
  const shown = filterActivity(activity, activityQuery);
  const now = Date.now();
  const search = h("input", {
    type: "search",
    id: "activity-search",
    "data-testid": "activity-search",
    "data-key": "activity-search",
    placeholder: "Search: a channel, a conversation, a word…",
    "aria-label": "Search the activity",
    value: activityQuery,
    oninput: (e: Event) => ctx.set({ activityQuery: (e.target as HTMLInputElement).value }),
    onkeydown: (e: Event) => {
      if ((e as KeyboardEvent).key === "Escape") ctx.set({ activityQuery: "" });
    },
  });
  return h(
    "section",
    { class: "page", "data-page": "activity" },
    h("header", { class: "page-head" }, h("h1", {}, "Activity"), search),
    shown.length === 0
      ? h("p", { class: "empty muted" }, activity.length === 0 ? "Nothing has happened yet." : "Nothing matches the search.")
      : h(
          "ol",
          { class: "activity-list", "aria-label": "Activity, newest first" },
          shown.map((entry) =>
            h(
              "li",
              { class: `activity ${entry.level}`, "data-testid": "activity-entry", "data-kind": entry.kind },
              h("time", { datetime: new Date(entry.at_ms).toISOString() }, clockTime(entry.at_ms, now)),
              h("span", { class: `level ${entry.level}` }, entry.level),
              h("span", { class: "scope mono" }, entry.scope),
              h("span", { class: "text wrap" }, entry.text),
            ),
          ),
        ),
  );
}
