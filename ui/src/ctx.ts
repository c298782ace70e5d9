// What a page may use of the app: the state, navigation, and running commands with feedback.

import type { Page } from "./ipc";
import type { AppState } from "./state";

export interface Ctx {
  readonly state: AppState;
  /** Changes the state and renders again. */
  set(patch: Partial<AppState>): void;
  /** Shows a page; on Sessions, opens `routingKey`; on Settings, scrolls to the section `anchor`. */
  navigate(page: Page, routingKey?: string | null, anchor?: string): void;
  /** Runs a command; shows `success` when it worked and the error when it did not. */
  run<T>(promise: Promise<T>, success?: string): Promise<T | undefined>;
  /** An error as a sentence for the page. */
  errorText(error: unknown): string;
  /** Renders the current page again. */
  rerender(): void;
  /** Briefly shows a message at the bottom of the window. */
  notice(text: string, tone?: "ok" | "error"): void;
}
