//! Every command the window may call. Commands are thin: each one checks its arguments
//! ([`crate::validate`]), then calls [`Shell`], which calls the engine; what they return is in
//! [`crate::views`]. An argument that is missing, of the wrong type or out of shape is
//! `invalid_argument` with `field` naming it as the page sends it.

use std::sync::Arc;

use serde::Deserialize;
use switchboard_engine::approvals::Surface;
use switchboard_engine::config::{ApprovalMode, Config};
use switchboard_engine::model::Identity;
use tauri::ipc::{CommandArg, CommandItem, InvokeError};
use tauri::{Runtime, State};

use crate::activity::ActivityEntry;
use crate::shell::Shell;
use crate::validate;
use crate::views::*;

type ShellState<'a> = State<'a, Arc<Shell>>;

/// A command argument read from the page's call. Tauri's own reading answers a missing or
/// mistyped argument with a bare string; this answers it as an [`IpcError`] (`invalid_argument`,
/// `field` = the argument's name as the page sends it), like every other error the page gets.
pub struct Arg<T>(pub T);

impl<'de, T: Deserialize<'de>, R: Runtime> CommandArg<'de, R> for Arg<T> {
    fn from_command(item: CommandItem<'de, R>) -> Result<Self, InvokeError> {
        let (command, key) = (item.name, item.key);
        T::deserialize(item).map(Arg).map_err(|error| {
            let message = validate::without_values(&error.to_string());
            tracing::debug!(command, argument = key, %message, "a command argument was refused");
            InvokeError::from(validate::invalid(key, format!("{key}: {message}")))
        })
    }
}

// ----- commands ---------------------------------------------------------------------------------
// Each command is listed in `commands()` below and by name in `command_names.rs`, from which
// `build.rs` generates the permission the capability grants.

/// The page asks for it once, as it loads: the moment a window opened is drawn.
#[tauri::command]
async fn snapshot(shell: ShellState<'_>) -> IpcResult<Snapshot> {
    tracing::info!("window page loaded");
    Ok(shell.snapshot())
}

#[tauri::command]
async fn conversations(shell: ShellState<'_>) -> IpcResult<Vec<ConversationView>> {
    shell.conversations()
}

#[tauri::command]
async fn history(shell: ShellState<'_>, routing_key: Arg<String>) -> IpcResult<HistoryView> {
    let routing_key = validate::routing_key("routingKey", &routing_key.0)?;
    shell.history(routing_key).await
}

#[tauri::command]
async fn cancel_run(shell: ShellState<'_>, routing_key: Arg<String>) -> IpcResult<bool> {
    let routing_key = validate::routing_key("routingKey", &routing_key.0)?;
    shell.cancel_run(routing_key)
}

#[tauri::command]
async fn set_paused(shell: ShellState<'_>, paused: Arg<bool>) -> IpcResult<Snapshot> {
    shell.set_paused(paused.0)
}

#[tauri::command]
async fn set_approval_mode(shell: ShellState<'_>, mode: Arg<ApprovalMode>) -> IpcResult<Snapshot> {
    shell.set_approval_mode(mode.0)
}

#[tauri::command]
async fn set_channel_enabled(
    shell: ShellState<'_>,
    name: Arg<String>,
    enabled: Arg<bool>,
) -> IpcResult<Snapshot> {
    let name = validate::channel_name("name", &name.0)?;
    shell
        .set_channel_enabled(name, enabled.0)
        .map_err(|e| name_the(e, "name"))
}

#[tauri::command]
async fn set_do_not_disturb(shell: ShellState<'_>, on: Arg<bool>) -> IpcResult<Snapshot> {
    shell.set_do_not_disturb(on.0)
}

#[tauri::command]
async fn set_autostart(shell: ShellState<'_>, on: Arg<bool>) -> IpcResult<Snapshot> {
    shell.set_autostart(on.0)
}

/// Checks a channel's credentials; with `settings`, as those (unsaved) settings set them.
#[tauri::command]
async fn test_channel(
    shell: ShellState<'_>,
    name: Arg<String>,
    settings: Arg<Option<Config>>,
) -> IpcResult<Identity> {
    let name = validate::channel_name("name", &name.0)?;
    shell
        .test_channel(name, settings.0)
        .await
        .map_err(|e| name_the(e, "name"))
}

#[tauri::command]
async fn test_connection(
    shell: ShellState<'_>,
    url: Arg<String>,
    token: Arg<String>,
) -> IpcResult<ServerCheck> {
    let url = validate::server_url("url", &url.0)?;
    let token = validate::token("token", &token.0)?;
    shell.test_connection(url, token).await
}

/// Asks the engine to check the agent server again.
#[tauri::command]
async fn check_server(shell: ShellState<'_>) -> IpcResult<()> {
    shell.check_server()
}

#[tauri::command]
async fn settings(shell: ShellState<'_>) -> IpcResult<SettingsView> {
    Ok(shell.settings())
}

/// The settings are checked field by field by `Config::validate` (an `invalid_settings` error
/// naming the field) before anything is written.
#[tauri::command]
async fn save_settings(shell: ShellState<'_>, config: Arg<Config>) -> IpcResult<SaveOutcome> {
    Arc::clone(&shell).save_settings(config.0).await
}

#[tauri::command]
async fn import_autopilot(shell: ShellState<'_>, into: Arg<Config>) -> IpcResult<ImportView> {
    shell.import_autopilot(into.0)
}

/// Points `~/.stakpak/autopilot.toml`'s `[notifications]` at Switchboard (keeping the file's
/// comments); returns the settings it changed.
#[tauri::command]
async fn connect_autopilot(shell: ShellState<'_>) -> IpcResult<Vec<String>> {
    shell.connect_autopilot()
}

#[tauri::command]
async fn activity(shell: ShellState<'_>) -> IpcResult<Vec<ActivityEntry>> {
    Ok(shell.activity())
}

#[tauri::command]
async fn approvals(shell: ShellState<'_>) -> IpcResult<ApprovalsView> {
    shell.approvals()
}

#[tauri::command]
async fn decide_approval(
    shell: ShellState<'_>,
    approval_id: Arg<String>,
    choice: Arg<ApprovalChoice>,
    pattern: Arg<Option<String>>,
) -> IpcResult<DecideOutcome> {
    let approval_id = validate::approval_id("approvalId", &approval_id.0)?;
    let pattern = validate::pattern("pattern", pattern.0.as_deref())?;
    shell
        .decide_approval_with_pattern(approval_id, choice.0, Surface::Window, pattern.as_deref())
        .map_err(|e| name_the(e, "approvalId"))
}

#[tauri::command]
async fn remove_rule(shell: ShellState<'_>, id: Arg<i64>) -> IpcResult<bool> {
    let id = validate::rule_id("id", id.0)?;
    shell.remove_rule(id)
}

/// The strangers waiting to be admitted, oldest first.
#[tauri::command]
async fn pairing_requests(shell: ShellState<'_>) -> IpcResult<Vec<PairingView>> {
    shell.pairing_requests()
}

/// Admits the sender of a pairing code: their next message reaches the agent.
#[tauri::command]
async fn admit_pairing(
    shell: ShellState<'_>,
    channel: Arg<String>,
    code: Arg<String>,
) -> IpcResult<PairingDecision> {
    let channel = validate::channel_name("channel", &channel.0)?;
    let code = validate::pairing_code("code", &code.0)?;
    shell.admit_pairing(channel, &code, Surface::Window)
}

/// Refuses the sender of a pairing code: they are ignored silently from now on.
#[tauri::command]
async fn refuse_pairing(
    shell: ShellState<'_>,
    channel: Arg<String>,
    code: Arg<String>,
) -> IpcResult<PairingDecision> {
    let channel = validate::channel_name("channel", &channel.0)?;
    let code = validate::pairing_code("code", &code.0)?;
    shell.refuse_pairing(channel, &code, Surface::Window)
}

/// A desktop chat's transcript: what the person wrote and what the agent side said.
#[tauri::command]
async fn desktop_transcript(
    shell: ShellState<'_>,
    chat_id: Arg<String>,
) -> IpcResult<Vec<switchboard_engine::channels::desktop::DesktopLine>> {
    let chat_id = validate::chat_id("chatId", &chat_id.0)?;
    shell.desktop_transcript(chat_id)
}

/// The person writes in a desktop chat (a new id starts a new chat); true when the message is
/// new (the same `clientId` again is the same message).
#[tauri::command]
async fn desktop_send(
    shell: ShellState<'_>,
    chat_id: Arg<String>,
    text: Arg<String>,
    client_id: Arg<String>,
) -> IpcResult<bool> {
    let chat_id = validate::chat_id("chatId", &chat_id.0)?;
    let text = validate::message("text", &text.0)?;
    let client_id = validate::client_id("clientId", &client_id.0)?;
    shell.desktop_send(chat_id, text, client_id).await
}

/// The person writes into a conversation of any channel (the quick chat on a chat's
/// conversation); the agent answers where that conversation's replies go.
#[tauri::command]
async fn say(
    shell: ShellState<'_>,
    routing_key: Arg<String>,
    text: Arg<String>,
    client_id: Arg<String>,
) -> IpcResult<bool> {
    let routing_key = validate::routing_key("routingKey", &routing_key.0)?;
    let text = validate::message("text", &text.0)?;
    let client_id = validate::client_id("clientId", &client_id.0)?;
    shell
        .say(routing_key, text, client_id)
        .await
        .map_err(|e| name_the(e, "routingKey"))
}

/// Opens the quick chat window, on a conversation or the desktop chat used last.
#[tauri::command]
async fn open_quick_chat(shell: ShellState<'_>, routing_key: Arg<Option<String>>) -> IpcResult<()> {
    let routing_key = match routing_key.0 {
        Some(key) => Some(validate::routing_key("routingKey", &key)?.to_owned()),
        None => None,
    };
    shell.open_quick_chat(routing_key);
    Ok(())
}

#[tauri::command]
async fn close_quick_chat(shell: ShellState<'_>) -> IpcResult<()> {
    shell.close_quick_chat();
    Ok(())
}

/// A `not_found` from the shell names the argument that named the missing thing.
fn name_the(error: IpcError, field: &str) -> IpcError {
    if error.code == ErrorCode::NotFound && error.field.is_none() {
        error.with_field(field)
    } else {
        error
    }
}

include!("command_names.rs");

/// The invoke handler with every command, shared by the app and the `tauri::test` tests.
pub fn commands<R: Runtime>() -> impl Fn(tauri::ipc::Invoke<R>) -> bool + Send + Sync + 'static {
    tauri::generate_handler![
        snapshot,
        conversations,
        history,
        cancel_run,
        set_paused,
        set_approval_mode,
        set_channel_enabled,
        set_do_not_disturb,
        set_autostart,
        test_channel,
        test_connection,
        check_server,
        settings,
        save_settings,
        import_autopilot,
        connect_autopilot,
        activity,
        approvals,
        decide_approval,
        remove_rule,
        pairing_requests,
        admit_pairing,
        refuse_pairing,
        desktop_transcript,
        desktop_send,
        say,
        open_quick_chat,
        close_quick_chat,
    ]
}
