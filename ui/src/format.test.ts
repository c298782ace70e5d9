import { describe, expect, it } from "vitest";
import { channelStateLabel, channelTone, chatLabel, clockTime, fileSize, filterActivity, formatList, formatTokens, maskSecret, nextAgeChange, parseList, peerLabel, plural, timeAgo, titleCase } from "./format";
import type { ActivityEntry } from "./ipc";

describe("timeAgo", () => {
  const now = 1_700_000_000_000;
  it.each([
    [null, "never"],
    [0, "never"],
    [now - 2_000, "just now"],
    [now - 30_000, "30 s ago"],
    [now - 5 * 60_000, "5 min ago"],
    [now - 3 * 3_600_000, "3 h ago"],
    [now - 3 * 86_400_000, "3 d ago"],
    [now + 10_000, "just now"],
  ])("%s → %s", (ms, expected) => {
    expect(timeAgo(ms as number | null, now)).toBe(expected);
  });
});

describe("nextAgeChange", () => {
  const since = 1_700_000_000_000;
  it("is the moment the text changes, and the text did not change a moment before", () => {
    // Ages from a minute to a few days, the text checked just before and at each change.
    for (const age of [61_000, 59 * 60_000 + 10_000, 5 * 3_600_000 + 17, 47 * 3_600_000 + 1, 3 * 86_400_000 + 9_000]) {
      const now = since + age;
      const due = nextAgeChange(since, now)!;
      expect(due).toBeGreaterThan(now);
      expect(due - now).toBeLessThanOrEqual(86_400_000);
      const before = timeAgo(since, due - 1);
      expect(timeAgo(since, due)).not.toBe(before);
      expect(before).toBe(timeAgo(since, now));
    }
  });
  it("waits half a minute under a minute, and never for never", () => {
    expect(nextAgeChange(since, since + 10_000)).toBe(since + 40_000);
    expect(nextAgeChange(since, since + 50_000)).toBe(since + 60_000);
    expect(nextAgeChange(null, since)).toBeNull();
    expect(nextAgeChange(0, since)).toBeNull();
  });
  it("a minute-old time wakes the page once a minute, an hour-old one once an hour", () => {
    expect(nextAgeChange(since, since + 5 * 60_000)! - (since + 5 * 60_000)).toBe(60_000 - 500);
    expect(nextAgeChange(since, since + 3 * 3_600_000)! - (since + 3 * 3_600_000)).toBe(3_600_000 - 500);
  });
});

describe("clockTime", () => {
  it("shows the time today and the date otherwise", () => {
    const at = new Date(2024, 4, 6, 9, 5, 7).getTime();
    expect(clockTime(at, new Date(2024, 4, 6, 23, 0, 0).getTime())).toBe("09:05:07");
    expect(clockTime(at, new Date(2024, 4, 7, 1, 0, 0).getTime())).toBe("2024-05-06 09:05:07");
  });
});

describe("masking secrets", () => {
  it.each([
    ["", ""],
    ["short", "••••••••"],
    ["123456:ABCdefGHIjklMNO", "123••••••••NO"],
    ["xoxb-1111-2222-abcdefgh", "xox••••••••gh"],
  ])("%s → %s", (secret, masked) => {
    expect(maskSecret(secret)).toBe(masked);
  });

  it("never shows the middle of a token", () => {
    const token = "123456:SECRET-PART-OF-THE-TOKEN";
    expect(maskSecret(token)).not.toContain("SECRET");
    expect(maskSecret(token).length).toBeLessThan(token.length);
  });
});

describe("labels", () => {
  it("names states, chats and peers for people", () => {
    expect(channelStateLabel("auth_failed")).toBe("Credentials refused");
    expect(channelTone("connected")).toBe("good");
    expect(channelTone("reconnecting")).toBe("bad");
    expect(channelTone("disabled")).toBe("off");
    expect(chatLabel({ type: "thread", group_id: "-100", thread_id: "7" })).toBe("Thread 7 in -100");
    expect(chatLabel({ type: "direct" })).toBe("Direct message");
    expect(peerLabel({ id: "42", name: "Ada" })).toBe("Ada (42)");
    expect(peerLabel({ id: "42" })).toBe("42");
    expect(titleCase("telegram")).toBe("Telegram");
    expect(plural(1, "run")).toBe("1 run");
    expect(plural(3, "run")).toBe("3 runs");
  });
});

describe("lists typed as text", () => {
  it("splits on commas and new lines and drops blanks", () => {
    expect(parseList(" view, read_file\n\n grep ,")).toEqual(["view", "read_file", "grep"]);
    expect(parseList("")).toEqual([]);
    expect(formatList(["a", "b"])).toBe("a, b");
  });
});

describe("activity search", () => {
  const entry = (id: number, text: string, scope = "telegram", kind = "reply_delivered", level: ActivityEntry["level"] = "info"): ActivityEntry => ({ id, at_ms: id, level, kind, scope, text });
  const entries = [entry(3, "Reply delivered to telegram/42"), entry(2, "Agent server unreachable", "server", "server_state", "error"), entry(1, "Message from 42 on slack", "slack:dm:42", "inbound_accepted")];

  it("matches every word in text, scope, kind or level, ignoring case", () => {
    expect(filterActivity(entries, "").map((e) => e.id)).toEqual([3, 2, 1]);
    expect(filterActivity(entries, "SERVER").map((e) => e.id)).toEqual([2]);
    expect(filterActivity(entries, "42 slack").map((e) => e.id)).toEqual([1]);
    expect(filterActivity(entries, "error").map((e) => e.id)).toEqual([2]);
    expect(filterActivity(entries, "nothing-like-this")).toEqual([]);
  });
});

describe("formatTokens", () => {
  it("keeps small counts exact and shortens large ones", () => {
    expect(formatTokens(950)).toBe("950");
    expect(formatTokens(1234)).toBe("1.2k");
    expect(formatTokens(12_345)).toBe("12k");
    expect(formatTokens(4_100_000)).toBe("4.1M");
  });
});

describe("file sizes", () => {
  it("reads like the chat's notes", () => {
    expect(fileSize(812)).toBe("812 B");
    expect(fileSize(1536)).toBe("1.5 KB");
    expect(fileSize(3 * 1024 * 1024)).toBe("3.0 MB");
  });
});
