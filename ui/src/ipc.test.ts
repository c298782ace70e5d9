import { describe, expect, it } from "vitest";
import { toIpcError } from "./ipc";
import { defaultChannel, formFieldName, getPath, setPath } from "./pages/settings";

describe("errors from the shell", () => {
  it("keeps code, message and field", () => {
    expect(toIpcError({ code: "invalid_settings", message: "api.listen: not loopback", field: "api.listen" })).toEqual({
      code: "invalid_settings",
      message: "api.listen: not loopback",
      field: "api.listen",
    });
  });

  it("wraps anything else as internal", () => {
    expect(toIpcError("command snapshot not allowed")).toEqual({ code: "internal", message: "command snapshot not allowed" });
    expect(toIpcError(new Error("boom"))).toEqual({ code: "internal", message: "boom" });
  });
});

describe("settings form paths", () => {
  it("reads and writes dotted paths, including list indexes", () => {
    const config = { gateway: { model: "" }, routing: { bindings: [{ channel: "telegram" }] } };
    setPath(config, "gateway.model", "gpt");
    setPath(config, "routing.bindings.0.channel", "slack");
    expect(getPath(config, "gateway.model")).toBe("gpt");
    expect(getPath(config, "routing.bindings.0.channel")).toBe("slack");
    expect(getPath(config, "channels.telegram.token")).toBeUndefined();
    setPath(config, "channels.telegram.token", "x");
    expect(getPath(config, "channels")).toBeUndefined();
  });

  it("maps the engine's field names to the form's", () => {
    expect(formFieldName("routing.bindings[2].routing_key")).toBe("routing.bindings.2.routing_key");
    expect(formFieldName("gateway.approval_allowlist[0]")).toBe("gateway.approval_allowlist.0");
  });

  it("sets a new channel up with the engine's defaults", () => {
    expect(defaultChannel("discord")).toMatchObject({ enabled: true, api_base: "https://discord.com/api/v10", guilds: [], dm_policy: "pairing" });
    expect(defaultChannel("slack")).toMatchObject({ bot_token: "", app_token: "", api_base: "https://slack.com/api" });
  });
});
