// The IPC commands the page may call, by the names it calls them. Included by `build.rs` (which
// generates an `allow-…` permission for each, granted in `capabilities/main.json`) and by
// `ipc.rs` (whose tests check that each is registered in `commands()`).
pub const COMMAND_NAMES: &[&str] = &[
    "snapshot",
    "conversations",
    "history",
    "cancel_run",
    "set_paused",
    "set_approval_mode",
    "set_channel_enabled",
    "set_do_not_disturb",
    "set_autostart",
    "test_channel",
    "test_connection",
    "check_server",
    "settings",
    "save_settings",
    "import_autopilot",
    "connect_autopilot",
    "activity",
    "approvals",
    "decide_approval",
    "remove_rule",
    "pairing_requests",
    "admit_pairing",
    "refuse_pairing",
];
