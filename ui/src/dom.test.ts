import { describe, expect, it } from "vitest";
import { tickAges } from "./dom";

describe("tickAges", () => {
  it("ages each relative time in place and leaves unchanged text alone", () => {
    const now = 1_000_000_000;
    const aged = { dataset: { since: String(now - 90_000) }, textContent: "just now" };
    const same = { dataset: { since: String(now - 2 * 3_600_000) }, textContent: "2 h ago" };
    const root = { querySelectorAll: () => [aged, same] } as unknown as ParentNode;
    const due = tickAges(root, now);
    expect(aged.textContent).toBe("1 min ago");
    expect(same.textContent).toBe("2 h ago");
    expect(due, "the next change: the first one's second minute").toBe(now - 90_000 + 2 * 60_000 - 500);
  });
  it("has nothing to wait for when no time will change", () => {
    const never = { dataset: { since: "0" }, textContent: "never" };
    const root = { querySelectorAll: () => [never] } as unknown as ParentNode;
    expect(tickAges(root, 1_000_000_000)).toBeNull();
  });
});
