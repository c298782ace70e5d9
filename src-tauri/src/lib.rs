//! Switchboard's desktop app: a thin Tauri shell around the engine.
//!
//! The engine does all the work; this crate shows it (tray, window, notifications) and turns
//! clicks into engine calls. [`shell::Shell`] is the Tauri-free core, [`views`] and [`commands`] the typed contract
//! with the page, [`tray`] the tray menu, [`notify`] the notification policy, [`run`] the app.
#![forbid(unsafe_code)]

pub mod activity;
pub mod autostart;
pub mod cli;
pub mod commands;
pub mod logging;
pub mod notify;
pub mod quick;
pub mod shell;
pub mod tray;
pub mod validate;
pub mod views;
pub mod x11grab;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use switchboard_engine::config::Paths;
use switchboard_engine::EngineOptions;
use tauri::{AppHandle, Emitter, Manager, Runtime, WebviewWindow, WindowEvent};

use crate::autostart::Autostart;
use crate::cli::{Cli, Launch};
use crate::notify::{Question, Toast};
use crate::quick::{QuickKeys, QUICK_WINDOW};
use crate::shell::{Host, Shell, ShellOptions, NEW_CHAT};
use crate::tray::{MenuId, TrayMenu, TrayModel};
use crate::views::{Page, UiEvent, UI_EVENT};

/// The window's label, as `tauri.conf.json` and the capability name it.
pub const MAIN_WINDOW: &str = "main";

/// Runs the app until it quits, then exits the process with its exit code.
pub fn run() {
    let cli = Cli::parse_args();
    let paths = Paths::resolve(cli.config.clone(), cli.data_dir.clone());
    let log_guard = logging::init(&paths);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %paths.config_file.display(), "switchboard starting");

    let shell = Shell::new(ShellOptions {
        autostart: Autostart::new(&Autostart::user_dir(), cli.autostart_command()),
        autopilot_file: default_autopilot_file(),
        paths,
        engine: EngineOptions::default(),
        extra_channels: Vec::new(),
        demo: cli.demo,
    });

    let result = tauri::Builder::default()
        // First, so a second launch hands over before anything else starts.
        .plugin(tauri_plugin_single_instance::init(|app, argv, _cwd| {
            let launch = Cli::launch_of(&argv);
            tracing::info!(?launch, "a second launch: handing over");
            open_for(app, launch);
        }))
        // The windows' size and position, kept across runs (whether they are shown is the app's
        // to say).
        .plugin(
            tauri_plugin_window_state::Builder::new()
                .with_state_flags(window_state_flags())
                .build(),
        )
        .manage(Arc::clone(&shell))
        .invoke_handler(commands::commands())
        .setup({
            let shell = Arc::clone(&shell);
            move |app| {
                setup(app.handle(), shell, cli.hidden, cli.launch());
                Ok(())
            }
        })
        .on_window_event(|window, event| {
            // Closing the window destroys it and its webview (the tray and the engine go on);
            // opening it again builds a new one.
            if let WindowEvent::Destroyed = event {
                if window.label() == MAIN_WINDOW {
                    tracing::info!("window closed; its webview is gone until it is opened again");
                }
                // The plugin writes its file only when the app exits; a window's place is kept
                // as soon as it closes, so a crash or a kill loses nothing.
                use tauri_plugin_window_state::AppHandleExt;
                if let Err(error) = window.app_handle().save_window_state(window_state_flags()) {
                    tracing::debug!(%error, "cannot keep the window's size and place");
                }
            }
        })
        .build(tauri::generate_context!("tauri.conf.json"));
    let app = match result {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(%error, "cannot start the desktop app");
            eprintln!("switchboard: cannot start: {error}");
            std::process::exit(1);
        }
    };
    let code = app.run_return(move |_app, event| match event {
        // The last window closed: the app stays in the tray. Quit (an exit code) goes through.
        tauri::RunEvent::ExitRequested {
            code: None, api, ..
        } => api.prevent_exit(),
        tauri::RunEvent::Exit => tracing::info!("switchboard exited"),
        _ => {}
    });
    // The log file's writer flushes when its guard is dropped, which exiting would skip.
    drop(log_guard);
    std::process::exit(code);
}

/// What of a window is kept across runs: its size and place, not whether it is shown.
fn window_state_flags() -> tauri_plugin_window_state::StateFlags {
    use tauri_plugin_window_state::StateFlags;
    StateFlags::SIZE | StateFlags::POSITION | StateFlags::MAXIMIZED
}

/// Creates the tray, connects the shell to the window and the tray, and starts the engine.
fn setup<R: Runtime>(app: &AppHandle<R>, shell: Arc<Shell>, hidden: bool, launch: Launch) {
    let keys = {
        let app = app.clone();
        QuickKeys::new(
            quick::Display::from_env(|name| std::env::var(name).ok()),
            move || open_quick_window(&app, None),
        )
    };
    let host = Arc::new(TauriHost {
        app: app.clone(),
        tray: Mutex::new(None),
        questions: Arc::default(),
        keys,
    });
    let initial = TrayModel::from_snapshot(&shell.snapshot());
    let on_click = {
        let shell = Arc::clone(&shell);
        move |app: &AppHandle<R>, id: MenuId| on_menu_click(app, &shell, id)
    };
    match TrayMenu::create(app, initial, on_click) {
        Ok(tray) => {
            *host.tray.lock().unwrap_or_else(|e| e.into_inner()) = Some(tray);
            tracing::info!("tray ready");
        }
        // Without a tray host (no StatusNotifier watcher) the app still runs with its window.
        Err(error) => tracing::warn!(%error, "cannot create the tray icon"),
    }
    shell.set_host(host);
    if !hidden && launch == Launch::Window {
        show_main_window(app);
    }
    let starting = Arc::clone(&shell);
    let app_for_start = app.clone();
    tauri::async_runtime::spawn(async move {
        starting.start().await;
        // A first run or a broken file needs the window, even when started hidden.
        if (hidden || launch != Launch::Window) && starting.snapshot().start_page == Page::Settings
        {
            show_main_window(&app_for_start);
        } else if launch != Launch::Window {
            open_for(&app_for_start, launch);
        }
    });
    spawn_signal_handler(app.clone(), shell);
}

/// A tray click: Quit stops the engine and exits; everything else goes to the shell. The menu
/// handler runs on the main thread, so the work is moved off it.
fn on_menu_click<R: Runtime>(app: &AppHandle<R>, shell: &Arc<Shell>, id: MenuId) {
    tracing::info!(item = %id, "tray menu");
    let shell = Arc::clone(shell);
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        if id == MenuId::Quit {
            quit(&app, &shell).await;
        } else {
            shell.on_menu(id);
        }
    });
}

async fn quit<R: Runtime>(app: &AppHandle<R>, shell: &Shell) {
    shell.stop().await;
    app.exit(0);
}

/// SIGINT and SIGTERM quit cleanly, like the tray's Quit.
fn spawn_signal_handler<R: Runtime>(app: AppHandle<R>, shell: Arc<Shell>) {
    #[cfg(unix)]
    tauri::async_runtime::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::warn!("cannot listen for SIGINT/SIGTERM");
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("signal received: quitting");
        quit(&app, &shell).await;
    });
    #[cfg(not(unix))]
    let _ = (app, shell);
}

fn main_window<R: Runtime>(app: &AppHandle<R>) -> Option<WebviewWindow<R>> {
    app.get_webview_window(MAIN_WINDOW)
}

fn show_main_window<R: Runtime>(app: &AppHandle<R>) {
    open_main_window(app, None);
}

/// Opens what a launch asked for: the window, a new desktop chat in it, or the quick chat.
fn open_for<R: Runtime>(app: &AppHandle<R>, launch: Launch) {
    match launch {
        Launch::Window => show_main_window(app),
        Launch::NewChat => open_main_window(app, Some((Page::Chat, Some(NEW_CHAT.to_owned())))),
        Launch::QuickChat => open_quick_window(app, None),
    }
}

/// Shows the quick chat window, building it when it is not open, on `routing_key` when given
/// (else the page picks the desktop chat used last).
fn open_quick_window<R: Runtime>(app: &AppHandle<R>, routing_key: Option<String>) {
    if let Some(window) = app.get_webview_window(QUICK_WINDOW) {
        let _ = window.unminimize();
        let _ = window.show();
        let _ = window.set_focus();
        if let Some(key) = routing_key {
            let event = UiEvent::Navigate {
                page: Page::Chat,
                routing_key: Some(key),
            };
            if let Err(error) = app.emit_to(QUICK_WINDOW, UI_EVENT, event) {
                tracing::debug!(%error, "cannot send an event to the quick chat");
            }
        }
        return;
    }
    let Some(mut config) = window_config(app, QUICK_WINDOW) else {
        return;
    };
    let mut fragment = "#quick".to_owned();
    if let Some(key) = routing_key {
        fragment.push_str("&key=");
        fragment.push_str(&percent_encode(&key));
    }
    config.url = tauri::WebviewUrl::App(format!("index.html{fragment}").into());
    config.visible = true;
    match tauri::WebviewWindowBuilder::from_config(app, &config).and_then(|b| b.build()) {
        Ok(window) => {
            let _ = window.set_focus();
            tracing::info!("quick chat opened");
        }
        Err(error) => tracing::error!(%error, "cannot open the quick chat"),
    }
}

/// The window `label` as tauri.conf.json describes it, to build it from.
fn window_config<R: Runtime>(
    app: &AppHandle<R>,
    label: &str,
) -> Option<tauri::utils::config::WindowConfig> {
    let config = app
        .config()
        .app
        .windows
        .iter()
        .find(|w| w.label == label)
        .cloned();
    if config.is_none() {
        tracing::error!(label, "tauri.conf.json has no such window");
    }
    config
}

/// Shows the window, building it (and its webview) when it is not open, on `page` when given.
/// A window that is open is sent a navigation; a new one is built at the page (the address's
/// fragment), since it could not hear an event before its page is loaded.
fn open_main_window<R: Runtime>(app: &AppHandle<R>, page: Option<(Page, Option<String>)>) {
    if let Some(window) = main_window(app) {
        let _ = window.unminimize();
        let _ = window.show();
        let _ = window.set_focus();
        if let Some((page, routing_key)) = page {
            if let Err(error) = app.emit_to(
                MAIN_WINDOW,
                UI_EVENT,
                UiEvent::Navigate { page, routing_key },
            ) {
                tracing::debug!(%error, "cannot send an event to the window");
            }
        }
        return;
    }
    let Some(mut config) = window_config(app, MAIN_WINDOW) else {
        return;
    };
    config.url = tauri::WebviewUrl::App(format!("index.html{}", window_fragment(page)).into());
    config.visible = true;
    let started = std::time::Instant::now();
    match tauri::WebviewWindowBuilder::from_config(app, &config).and_then(|b| b.build()) {
        Ok(window) => {
            let _ = window.set_focus();
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "window opened"
            );
        }
        Err(error) => tracing::error!(%error, "cannot open the window"),
    }
}

/// The address fragment a new window starts from: the page to show (`page=…&key=…`), else
/// `restore`: the page comes back as the last window left it (in this run or an earlier one).
fn window_fragment(page: Option<(Page, Option<String>)>) -> String {
    match page {
        Some((page, key)) => {
            let mut fragment = format!("#page={}", page.as_str());
            if let Some(key) = key {
                fragment.push_str("&key=");
                fragment.push_str(&percent_encode(&key));
            }
            fragment
        }
        None => "#restore".to_owned(),
    }
}

/// Percent-encodes everything but unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The shell's host in the app: the window, the tray and the notification daemon.
struct TauriHost<R: Runtime> {
    app: AppHandle<R>,
    tray: Mutex<Option<TrayMenu<R>>>,
    /// The notifications asking a question shown now: sending withdraws one.
    questions: Arc<Mutex<HashMap<Question, tokio::sync::oneshot::Sender<()>>>>,
    /// The quick chat's shortcut.
    keys: Arc<QuickKeys>,
}

impl<R: Runtime> TauriHost<R> {
    /// Raises a notification that asks `question`; its actions (Approve / Reject, Admit /
    /// Refuse) answer from the "notification" surface, as the window's buttons do from theirs.
    fn notify_question(&self, question: Question, toast: Toast) {
        let (withdraw, withdrawn) = tokio::sync::oneshot::channel();
        let shown = Arc::clone(&self.questions);
        shown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(question.clone(), withdraw);
        let app = self.app.clone();
        let asked = question.clone();
        let on_answer = move |answer: notify::Answer| {
            let Some(shell) = app.try_state::<Arc<Shell>>() else {
                return;
            };
            let shell = Arc::clone(shell.inner());
            // Deciding updates the chat from a task, so it runs on the async runtime, not on the
            // notification's thread.
            tauri::async_runtime::spawn(async move {
                match shell.answer(&asked, answer) {
                    Ok(message) => tracing::info!(%message, "answered from a notification"),
                    Err(error) => {
                        tracing::warn!(error = %error.message, "cannot answer from the notification")
                    }
                }
            });
        };
        let on_done = {
            let question = question.clone();
            move || {
                shown
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&question);
            }
        };
        notify::show_question(toast, withdrawn, on_answer, on_done);
    }
}

impl<R: Runtime> Host for TauriHost<R> {
    fn emit(&self, event: UiEvent) {
        if let Err(error) = self.app.emit_to(MAIN_WINDOW, UI_EVENT, event) {
            tracing::debug!(%error, "cannot send an event to the window");
        }
    }

    fn update_tray(&self, model: &TrayModel, force: bool) {
        let mut tray = self.tray.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tray) = tray.as_mut() {
            if let Err(error) = tray.apply(model, force) {
                tracing::warn!(%error, "cannot update the tray");
            }
        }
    }

    fn notify(&self, toast: Toast) {
        if let Some(question) = toast.question.clone() {
            self.notify_question(question, toast);
            return;
        }
        // The person is looking at Switchboard already: no need to call them.
        if toast.unless_focused
            && self
                .app
                .webview_windows()
                .values()
                .any(|w| w.is_focused().unwrap_or(false))
        {
            tracing::debug!(summary = %toast.summary, "notification not shown: a window has the focus");
            return;
        }
        let app = self.app.clone();
        notify::show(toast, move |response| match response {
            notify::Response::Open(routing_key) => {
                tracing::info!(%routing_key, "notification clicked: opening the conversation");
                let page = match switchboard_engine::channels::desktop::chat_of(&routing_key) {
                    Some(_) => Page::Chat,
                    None => Page::Sessions,
                };
                open_main_window(&app, Some((page, Some(routing_key))));
            }
            notify::Response::Reply(routing_key, None) => {
                tracing::info!(%routing_key, "notification's reply: opening the quick chat");
                open_quick_window(&app, Some(routing_key));
            }
            notify::Response::Reply(routing_key, Some(text)) => {
                let Some(shell) = app.try_state::<Arc<Shell>>() else {
                    return;
                };
                let shell = Arc::clone(shell.inner());
                let app = app.clone();
                tauri::async_runtime::spawn(async move {
                    let id = format!("notification-{}", uuid::Uuid::new_v4());
                    match shell.say(&routing_key, &text, &id).await {
                        Ok(_) => tracing::info!(%routing_key, "answered from a notification"),
                        Err(error) => {
                            // The answer went nowhere: show the person the conversation, where
                            // they can send it again and the chat says what is wrong.
                            tracing::warn!(%routing_key, error = %error.message, "cannot answer from the notification");
                            open_quick_window(&app, Some(routing_key));
                        }
                    }
                });
            }
        });
    }

    fn show_window(&self, page: Option<Page>, routing_key: Option<String>) {
        open_main_window(&self.app, page.map(|page| (page, routing_key)));
    }

    fn withdraw(&self, question: &Question) {
        let withdraw = self
            .questions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(question);
        if let Some(withdraw) = withdraw {
            let _ = withdraw.send(());
        }
    }

    fn open_quick_chat(&self, routing_key: Option<String>) {
        open_quick_window(&self.app, routing_key);
    }

    fn close_quick_chat(&self) {
        if let Some(window) = self.app.get_webview_window(QUICK_WINDOW) {
            if let Err(error) = window.destroy() {
                tracing::debug!(%error, "cannot close the quick chat");
            }
        }
    }

    fn settings_applied(&self, config: &switchboard_engine::config::Config) {
        let keys = Arc::clone(&self.keys);
        let wanted = config.desktop.quick_chat_shortcut.clone();
        let app = self.app.clone();
        // Numbered here, where saves happen in order; the tasks may run in any order.
        let ticket = keys.ticket();
        tauri::async_runtime::spawn(async move {
            let Some(view) = keys.apply(&wanted, ticket).await else {
                return;
            };
            if let Some(shell) = app.try_state::<Arc<Shell>>() {
                shell.set_quick_chat(view);
            }
        });
    }
}

/// Stakpak's own configuration, offered for import on the first run.
pub fn default_autopilot_file() -> Option<PathBuf> {
    dirs::home_dir().map(|home| home.join(".stakpak").join("autopilot.toml"))
}

#[cfg(test)]
mod window_tests {
    use super::{window_fragment, Page};

    #[test]
    fn a_new_window_starts_at_the_page_asked_for_or_where_the_last_one_was() {
        assert_eq!(
            window_fragment(Some((
                Page::Sessions,
                Some("telegram:dm:42 / ü".to_owned())
            ))),
            "#page=sessions&key=telegram%3Adm%3A42%20%2F%20%C3%BC",
            "a page asked for wins over restoring"
        );
        assert_eq!(
            window_fragment(Some((Page::Approvals, None))),
            "#page=approvals"
        );
        assert_eq!(
            window_fragment(None),
            "#restore",
            "otherwise the page comes back where it was, in this run or the last"
        );
    }
}
