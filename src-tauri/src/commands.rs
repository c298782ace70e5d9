//! Every command the window may call. Commands are thin: each one checks its arguments
//! ([`crate::validate`]), then calls [`Shell`], which calls the engine; what they return is in
//! [`crate::views`]. An argument that is missing, of the wrong type or out of shape is
//! `invalid_argument` with `field` naming it as the page sends it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use switchboard_engine::approvals::Surface;
use switchboard_engine::config::{ApprovalMode, Config};
use tauri::ipc::{Invoke, InvokeBody, InvokeError};
use tauri::{Manager, Runtime};

use crate::shell::Shell;
use crate::validate;
use crate::views::*;

/// What a command answers, as the page receives it.
pub type Answer = IpcResult<Value>;

/// A command on its way to an answer.
pub type Pending = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// The arguments of one call, read by name as the page sends them (camelCase).
struct Args<'a> {
    command: &'a str,
    values: &'a Value,
}

impl Args<'_> {
    /// The argument `key`; a missing one reads as `null` (so an optional one is `None`). One that
    /// is missing or of the wrong type is `invalid_argument` with `field` = `key`.
    fn get<T: DeserializeOwned>(&self, key: &str) -> IpcResult<T> {
        let value = self.values.get(key).unwrap_or(&Value::Null);
        T::deserialize(value).map_err(|error| {
            let message = validate::without_values(&error.to_string());
            tracing::debug!(command = self.command, argument = key, %message, "a command argument was refused");
            validate::invalid(key, format!("{key}: {message}"))
        })
    }
}

fn answer<T: Serialize>(result: IpcResult<T>) -> Answer {
    result.and_then(|value| {
        serde_json::to_value(value).map_err(|error| {
            IpcError::new(
                ErrorCode::Engine,
                format!("cannot send the answer: {error}"),
            )
        })
    })
}

/// Runs the page's command `command` with its arguments `args` (a JSON object) against the
/// shell. Each command checks its arguments ([`crate::validate`]), then calls [`Shell`]. The
/// window's process sends its calls here over its link ([`crate::window`]); the tests call it
/// through [`commands`].
pub async fn call(shell: Arc<Shell>, command: &str, args: Value) -> Answer {
    let args = Args {
        command,
        values: &args,
    };
    match command {
        // The page asks for it once, as it loads: the moment a window opened is drawn.
        "snapshot" => {
            tracing::info!("window page loaded");
            answer(Ok(shell.snapshot()))
        }
        "conversations" => answer(shell.conversations()),
        "history" => {
            let key: String = args.get("routingKey")?;
            let key = validate::routing_key("routingKey", &key)?;
            answer(shell.history(key).await)
        }
        "cancel_run" => {
            let key: String = args.get("routingKey")?;
            answer(shell.cancel_run(validate::routing_key("routingKey", &key)?))
        }
        "set_paused" => answer(shell.set_paused(args.get("paused")?)),
        "set_approval_mode" => answer(shell.set_approval_mode(args.get::<ApprovalMode>("mode")?)),
        "set_channel_enabled" => {
            let name: String = args.get("name")?;
            let name = validate::channel_name("name", &name)?;
            let enabled: bool = args.get("enabled")?;
            answer(
                shell
                    .set_channel_enabled(name, enabled)
                    .map_err(|e| name_the(e, "name")),
            )
        }
        "set_do_not_disturb" => answer(shell.set_do_not_disturb(args.get("on")?)),
        "set_autostart" => answer(shell.set_autostart(args.get("on")?)),
        // Checks a channel's credentials; with `settings`, as those (unsaved) settings set them.
        "test_channel" => {
            let name: String = args.get("name")?;
            let name = validate::channel_name("name", &name)?;
            let settings: Option<Config> = args.get("settings")?;
            answer(
                shell
                    .test_channel(name, settings)
                    .await
                    .map_err(|e| name_the(e, "name")),
            )
        }
        "test_connection" => {
            let url: String = args.get("url")?;
            let token: String = args.get("token")?;
            let url = validate::server_url("url", &url)?;
            let token = validate::token("token", &token)?;
            answer(shell.test_connection(url, token).await)
        }
        // Asks the engine to check the agent server again.
        "check_server" => answer(shell.check_server()),
        "settings" => answer(Ok(shell.settings())),
        // The settings are checked field by field by `Config::validate` (an `invalid_settings`
        // error naming the field) before anything is written.
        "save_settings" => {
            let config: Config = args.get("config")?;
            answer(Arc::clone(&shell).save_settings(config).await)
        }
        "import_autopilot" => answer(shell.import_autopilot(args.get("into")?)),
        // Points `~/.stakpak/autopilot.toml`'s `[notifications]` at Switchboard (keeping the
        // file's comments); returns the settings it changed.
        "connect_autopilot" => answer(shell.connect_autopilot()),
        "activity" => answer(Ok(shell.activity())),
        "approvals" => answer(shell.approvals()),
        "decide_approval" => {
            let approval_id: String = args.get("approvalId")?;
            let choice: ApprovalChoice = args.get("choice")?;
            let pattern: Option<String> = args.get("pattern")?;
            let approval_id = validate::approval_id("approvalId", &approval_id)?;
            let pattern = validate::pattern("pattern", pattern.as_deref())?;
            answer(
                shell
                    .decide_approval_with_pattern(
                        approval_id,
                        choice,
                        Surface::Window,
                        pattern.as_deref(),
                    )
                    .map_err(|e| name_the(e, "approvalId")),
            )
        }
        "remove_rule" => {
            let id: i64 = args.get("id")?;
            answer(shell.remove_rule(validate::rule_id("id", id)?))
        }
        // The strangers waiting to be admitted, oldest first.
        "pairing_requests" => answer(shell.pairing_requests()),
        // Admits the sender of a pairing code (their next message reaches the agent), or
        // refuses them (ignored silently from now on).
        "admit_pairing" | "refuse_pairing" => {
            let channel: String = args.get("channel")?;
            let code: String = args.get("code")?;
            let channel = validate::channel_name("channel", &channel)?;
            let code = validate::pairing_code("code", &code)?;
            answer(if command == "admit_pairing" {
                shell.admit_pairing(channel, &code, Surface::Window)
            } else {
                shell.refuse_pairing(channel, &code, Surface::Window)
            })
        }
        // A desktop chat's transcript: what the person wrote and what the agent side said.
        "desktop_transcript" => {
            let chat_id: String = args.get("chatId")?;
            answer(shell.desktop_transcript(validate::chat_id("chatId", &chat_id)?))
        }
        // The person writes in a desktop chat (a new id starts a new chat); true when the
        // message is new (the same `clientId` again is the same message).
        "desktop_send" => {
            let chat_id: String = args.get("chatId")?;
            let text: String = args.get("text")?;
            let client_id: String = args.get("clientId")?;
            let chat_id = validate::chat_id("chatId", &chat_id)?;
            let text = validate::message("text", &text)?;
            let client_id = validate::client_id("clientId", &client_id)?;
            answer(shell.desktop_send(chat_id, text, client_id).await)
        }
        // The person writes into a conversation of any channel (the quick chat on a chat's
        // conversation); the agent answers where that conversation's replies go.
        "say" => {
            let key: String = args.get("routingKey")?;
            let text: String = args.get("text")?;
            let client_id: String = args.get("clientId")?;
            let key = validate::routing_key("routingKey", &key)?;
            let text = validate::message("text", &text)?;
            let client_id = validate::client_id("clientId", &client_id)?;
            answer(
                shell
                    .say(key, text, client_id)
                    .await
                    .map_err(|e| name_the(e, "routingKey")),
            )
        }
        // Opens the quick chat window, on a conversation or the desktop chat used last.
        "open_quick_chat" => {
            let key: Option<String> = args.get("routingKey")?;
            let key = match key {
                Some(key) => Some(validate::routing_key("routingKey", &key)?.to_owned()),
                None => None,
            };
            shell.open_quick_chat(key);
            answer(Ok(()))
        }
        "close_quick_chat" => {
            shell.close_quick_chat();
            answer(Ok(()))
        }
        _ => Err(IpcError::new(
            ErrorCode::InvalidArgument,
            format!(
                "there is no command {}",
                validate::without_values(&format!("\"{command}\""))
            ),
        )),
    }
}

/// An invoke handler that answers each of the page's calls with `run(command, arguments)`.
pub fn handler<R: Runtime>(
    run: impl Fn(&tauri::Webview<R>, String, Value) -> Pending + Send + Sync + 'static,
) -> impl Fn(Invoke<R>) -> bool + Send + Sync + 'static {
    move |invoke: Invoke<R>| {
        let args = match invoke.message.payload() {
            InvokeBody::Json(value) => value.clone(),
            InvokeBody::Raw(_) => Value::Null,
        };
        let pending = run(
            &invoke.message.webview(),
            invoke.message.command().to_owned(),
            args,
        );
        invoke
            .resolver
            .respond_async(async move { pending.await.map_err(InvokeError::from) });
        true
    }
}

/// The invoke handler that runs every command in this process, against the shell the app
/// manages (the `tauri::test` tests; the window's process forwards instead).
pub fn commands<R: Runtime>() -> impl Fn(Invoke<R>) -> bool + Send + Sync + 'static {
    handler(|webview: &tauri::Webview<R>, command, args| {
        let shell = webview
            .try_state::<Arc<Shell>>()
            .map(|s| Arc::clone(s.inner()));
        Box::pin(async move {
            match shell {
                Some(shell) => call(shell, &command, args).await,
                None => Err(IpcError::new(ErrorCode::NotRunning, "the app is not ready")),
            }
        })
    })
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
