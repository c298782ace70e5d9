// A tiny DOM builder. Text always goes in as text nodes (never as HTML), so nothing from a chat
// or the server can inject markup; the page's CSP forbids inline scripts and styles anyway.
import { nextAgeChange, timeAgo } from "./format";

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: (Child | Child[])[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "value" && "value" in el) {
      (el as unknown as { value: string }).value = String(value);
    } else if (key === "checked" && el instanceof HTMLInputElement) {
      el.checked = Boolean(value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replaces the children of `parent`. */
export function mount(parent: Element, ...children: (Child | Child[])[]): void {
  parent.replaceChildren();
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** "3 min ago" for `ms`, marked so [`tickAges`] can age it in place. */
export function since(ms: number | null | undefined, attrs: Attrs = {}): HTMLSpanElement {
  return h("span", { ...attrs, "data-since": ms ? String(ms) : null }, timeAgo(ms, Date.now()));
}

/** Ages every relative time on the page in place (nothing is rebuilt, so an open window that
 * only waits costs a text change when one is due, not a new page), and says when the next one is
 * due (ms), `null` when none will ever be. */
export function tickAges(root: ParentNode, now: number): number | null {
  let next: number | null = null;
  for (const el of root.querySelectorAll<HTMLElement>("[data-since]")) {
    const since = Number(el.dataset.since);
    const text = timeAgo(since, now);
    if (el.textContent !== text) el.textContent = text;
    const due = nextAgeChange(since, now);
    if (due !== null && (next === null || due < next)) next = due;
  }
  return next;
}

