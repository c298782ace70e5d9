import { describe, expect, it } from "vitest";
import { parseInline, parseMarkdown } from "./markdown";

describe("markdown", () => {
  it("reads the inline marks agents use, and leaves the rest as written", () => {
    expect(parseInline("Hi! I'm the **demo agent**, run `df -h` *now*")).toEqual([
      { kind: "text", text: "Hi! I'm the " },
      { kind: "strong", text: "demo agent" },
      { kind: "text", text: ", run " },
      { kind: "code", text: "df -h" },
      { kind: "text", text: " " },
      { kind: "em", text: "now" },
    ]);
    expect(parseInline("a * b * c, snake_case_name, 2**3, `unclosed")).toEqual([{ kind: "text", text: "a * b * c, snake_case_name, 2**3, `unclosed" }]);
    expect(parseInline("<b>not markup</b>")).toEqual([{ kind: "text", text: "<b>not markup</b>" }]);
  });

  it("reads code blocks, lists, headings and paragraphs", () => {
    const blocks = parseMarkdown("# Disk\n\nHere:\n\n```\nFilesystem  Use%\n/dev/sda1   64%\n```\n\n- one\n- two `x`\n\n1. first\n2. second\n\nDone.");
    expect(blocks.map((b) => b.kind)).toEqual(["heading", "paragraph", "code", "list", "list", "paragraph"]);
    expect(blocks[2]).toEqual({ kind: "code", text: "Filesystem  Use%\n/dev/sda1   64%" });
    expect(blocks[3]).toMatchObject({ kind: "list", ordered: false, items: [[{ kind: "text", text: "one" }], [{ kind: "text", text: "two " }, { kind: "code", text: "x" }]] });
    expect(blocks[4]).toMatchObject({ kind: "list", ordered: true });
  });

  it("runs a code block that is still being written to the end", () => {
    expect(parseMarkdown("Look:\n```\nline 1\nline 2")).toEqual([
      { kind: "paragraph", spans: [{ kind: "text", text: "Look:" }] },
      { kind: "code", text: "line 1\nline 2" },
    ]);
  });
});
