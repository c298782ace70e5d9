// The little Markdown agents write, read into blocks and spans (pure, tested) and drawn as
// elements built from text — never as HTML, so nothing in a reply can become markup.

import { h } from "./dom";
// Code blocks, bullet and numbered lists, headings as bold lines, paragraphs; inline `code`,
// **bold** and *italic* / _italic_. Anything else stays as it was written.

export type Span = { kind: "text" | "code" | "strong" | "em"; text: string };
export type Block =
  | { kind: "code"; text: string }
  | { kind: "paragraph"; spans: Span[] }
  | { kind: "heading"; spans: Span[] }
  | { kind: "list"; ordered: boolean; items: Span[][] };

const BULLET = /^\s*[-*+]\s+(.*)$/;
const NUMBERED = /^\s*\d{1,3}[.)]\s+(.*)$/;
const HEADING = /^\s{0,3}#{1,6}\s+(.*)$/;
const FENCE = /^\s*(```|~~~)/;

/** Reads `text` into blocks. An unclosed code fence runs to the end (a reply still being
 * written). */
export function parseMarkdown(text: string): Block[] {
  const blocks: Block[] = [];
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  let paragraph: string[] = [];
  const endParagraph = () => {
    if (paragraph.length > 0) blocks.push({ kind: "paragraph", spans: parseInline(paragraph.join("\n")) });
    paragraph = [];
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = FENCE.exec(line);
    if (fence) {
      endParagraph();
      const code: string[] = [];
      i++;
      while (i < lines.length && !lines[i].trimStart().startsWith(fence[1])) code.push(lines[i++]);
      blocks.push({ kind: "code", text: code.join("\n") });
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      endParagraph();
      blocks.push({ kind: "heading", spans: parseInline(heading[1]) });
      continue;
    }
    const bullet = BULLET.exec(line);
    const numbered = bullet ? null : NUMBERED.exec(line);
    if (bullet || numbered) {
      endParagraph();
      const ordered = numbered !== null;
      const item = parseInline((bullet ?? numbered)?.[1] ?? "");
      const last = blocks[blocks.length - 1];
      if (last && last.kind === "list" && last.ordered === ordered) last.items.push(item);
      else blocks.push({ kind: "list", ordered, items: [item] });
      continue;
    }
    if (line.trim() === "") {
      endParagraph();
      continue;
    }
    paragraph.push(line);
  }
  endParagraph();
  return blocks;
}

/** Reads the inline marks of one paragraph. A mark without its closing twin is plain text. */
export function parseInline(text: string): Span[] {
  const spans: Span[] = [];
  let plain = "";
  const flush = () => {
    if (plain) spans.push({ kind: "text", text: plain });
    plain = "";
  };
  let i = 0;
  while (i < text.length) {
    const rest = text.slice(i);
    let matched: { kind: Span["kind"]; text: string; length: number } | null = null;
    if (rest.startsWith("`")) {
      const end = rest.indexOf("`", 1);
      if (end > 1) matched = { kind: "code", text: rest.slice(1, end), length: end + 1 };
    } else if (rest.startsWith("**") || rest.startsWith("__")) {
      const mark = rest.slice(0, 2);
      const end = rest.indexOf(mark, 2);
      if (end > 2 && rest[2] !== " ") matched = { kind: "strong", text: rest.slice(2, end), length: end + 2 };
    } else if ((rest.startsWith("*") || rest.startsWith("_")) && rest.length > 2 && rest[1] !== " ") {
      const mark = rest[0];
      // `_` inside a word (snake_case) is no mark.
      const wordBefore = mark === "_" && i > 0 && /\w/.test(text[i - 1]);
      const end = rest.indexOf(mark, 1);
      if (!wordBefore && end > 1 && rest[end - 1] !== " ") matched = { kind: "em", text: rest.slice(1, end), length: end + 1 };
    }
    if (matched) {
      flush();
      spans.push({ kind: matched.kind, text: matched.text });
      i += matched.length;
    } else {
      plain += text[i];
      i++;
    }
  }
  flush();
  return spans;
}

function spanView(span: Span): Node {
  switch (span.kind) {
    case "text":
      return document.createTextNode(span.text);
    case "code":
      return h("code", {}, span.text);
    case "strong":
      return h("strong", {}, span.text);
    case "em":
      return h("em", {}, span.text);
  }
}

/** One line drawn from its inline marks (an approval's summary). */
export function inlineView(text: string): Node[] {
  return parseInline(text).map(spanView);
}

/** A reply drawn from its Markdown. */
export function markdownView(text: string): HTMLElement {
  return h(
    "div",
    { class: "md" },
    parseMarkdown(text).map((block) => {
      switch (block.kind) {
        case "code":
          return h("pre", { class: "code" }, h("code", {}, block.text));
        case "heading":
          return h("p", { class: "wrap" }, h("strong", {}, block.spans.map(spanView)));
        case "paragraph":
          return h("p", { class: "wrap" }, block.spans.map(spanView));
        case "list":
          return h(block.ordered ? "ol" : "ul", {}, block.items.map((item) => h("li", { class: "wrap" }, item.map(spanView))));
      }
    }),
  );
}
