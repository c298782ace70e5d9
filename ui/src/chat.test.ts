import { describe, expect, it } from "vitest";
import { chatKey, chatOf, chatTitle, desktopChats, newId, personState, upsertMessage, working } from "./chat";
import type { ConversationView, DesktopLine, DesktopMessage } from "./ipc";

function message(id: number, text: string, updated = 1, streaming = false, chat = "a"): DesktopMessage {
  return { id, chat_id: chat, kind: "reply", text, tasks: [], streaming, approval_id: null, outcome: null, created_ms: 1, updated_ms: updated };
}

function conversation(key: string, channel: string, chatId: string, used: number, title: string | null = null): ConversationView {
  return {
    routing_key: key,
    session_id: null,
    title,
    channel,
    peer: { id: "local" },
    chat: { type: "group", id: chatId },
    state: "idle",
    queued: 0,
    last_used_ms: used,
    usage: { runs: 0, prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, last_prompt_tokens: 0, last_completion_tokens: 0, last_total_tokens: 0 },
  };
}

describe("the desktop chat's transcript", () => {
  it("grows a reply in place and adds new ones at the end", () => {
    let lines: DesktopLine[] = [{ from: "person", journal_id: 1, text: "hi", state: "sent", error: null, at_ms: 0 }];
    lines = upsertMessage(lines, message(7, "Hel", 1, true), "a");
    lines = upsertMessage(lines, message(7, "Hello", 2, true), "a");
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatchObject({ from: "agent", message: { text: "Hello", streaming: true } });
    expect(working(lines)).toBe(true);
    lines = upsertMessage(lines, message(7, "Hel", 1, true), "a");
    expect(lines[1]).toMatchObject({ message: { text: "Hello" } });
    lines = upsertMessage(lines, message(8, "other chat", 3, false, "b"), "a");
    expect(lines).toHaveLength(2);
    lines = upsertMessage(lines, message(7, "Hello there", 3), "a");
    expect(lines[1]).toMatchObject({ message: { text: "Hello there", streaming: false } });
  });

  it("says how the person's messages stand", () => {
    const line = (state: "queued" | "sent" | "replied" | "failed", error: string | null = null): DesktopLine => ({ from: "person", journal_id: 1, text: "x", state, error, at_ms: 0 });
    expect(personState(line("queued"))).toBe("waiting");
    expect(personState(line("replied"))).toBe("");
    expect(personState(line("failed", "server down"))).toBe("failed: server down");
    expect(working([line("replied")])).toBe(false);
    expect(working([line("queued")])).toBe(true);
  });
});

describe("desktop chats", () => {
  it("lists only desktop conversations, most recent first", () => {
    const chats = desktopChats([
      conversation("telegram:dm:1", "telegram", "1", 50),
      conversation("desktop:old", "desktop", "old", 10, "Desktop: check the disk"),
      conversation("desktop:new", "desktop", "new", 20),
    ]);
    expect(chats.map((c) => c.chatId)).toEqual(["new", "old"]);
    expect(chatTitle(chats[1].conversation, [])).toBe("check the disk");
    expect(chatTitle(null, [{ from: "person", journal_id: 1, text: "what runs?\nmore", state: "sent", error: null, at_ms: 0 }])).toBe("what runs?");
    expect(chatTitle(null, [])).toBe("New chat");
  });

  it("reads desktop routing keys and makes new ids", () => {
    expect(chatOf(chatKey("abc_1"))).toBe("abc_1");
    expect(chatOf("telegram:dm:1")).toBeNull();
    expect(chatOf("desktop:../x")).toBeNull();
    expect(chatOf(null)).toBeNull();
    const id = newId((b) => b.fill(171));
    expect(id).toBe("ab".repeat(16));
    expect(chatOf(chatKey(newId()))).not.toBeNull();
  });
});
