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
pub mod shell;
pub mod tray;
pub mod validate;
pub mod views;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use switchboard_engine::config::Paths;
use switchboard_engine::EngineOptions;
use tauri::{AppHandle, Emitter, Manager, Runtime, WebviewWindow, WindowEvent};

use crate::autostart::Autostart;
use crate::cli::Cli;
use crate::notify::{Question, Toast};
use crate::shell::{Host, Shell, ShellOptions};
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
    });

    let result = tauri::Builder::default()
        // First, so a second launch hands over before anything else starts.
        .plugin(tauri_plugin_single_instance::init(|app, _argv, _cwd| {
            tracing::info!("a second launch: showing the window");
            show_main_window(app);
        }))
        .manage(Arc::clone(&shell))
        .invoke_handler(commands::commands())
        .setup({
            let shell = Arc::clone(&shell);
            move |app| {
                setup(app.handle(), shell, cli.hidden);
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

/// Creates the tray, connects the shell to the window and the tray, and starts the engine.
fn setup<R: Runtime>(app: &AppHandle<R>, shell: Arc<Shell>, hidden: bool) {
    let host = Arc::new(TauriHost {
        app: app.clone(),
        tray: Mutex::new(None),
        questions: Arc::default(),
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
    if !hidden {
        show_main_window(app);
    }
    let starting = Arc::clone(&shell);
    let app_for_start = app.clone();
    tauri::async_runtime::spawn(async move {
        starting.start().await;
        // A first run or a broken file needs the window, even when started hidden.
        if hidden && starting.snapshot().start_page == Page::Settings {
            show_main_window(&app_for_start);
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

/// Whether the window was opened before in this run of the app: a window built again comes
/// back where the last one was.
static OPENED_BEFORE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

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
    let Some(mut config) = app
        .config()
        .app
        .windows
        .iter()
        .find(|w| w.label == MAIN_WINDOW)
        .cloned()
    else {
        tracing::error!("tauri.conf.json has no main window");
        return;
    };
    let restore = OPENED_BEFORE.swap(true, std::sync::atomic::Ordering::Relaxed);
    config.url =
        tauri::WebviewUrl::App(format!("index.html{}", window_fragment(page, restore)).into());
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
/// `restore` when an earlier window of this run should come back as it was.
fn window_fragment(page: Option<(Page, Option<String>)>, restore: bool) -> String {
    match page {
        Some((page, key)) => {
            let mut fragment = format!("#page={}", page.as_str());
            if let Some(key) = key {
                fragment.push_str("&key=");
                fragment.push_str(&percent_encode(&key));
            }
            fragment
        }
        None if restore => "#restore".to_owned(),
        None => String::new(),
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
        let app = self.app.clone();
        notify::show(toast, move |routing_key| {
            tracing::info!(%routing_key, "notification clicked: opening the conversation");
            open_main_window(&app, Some((Page::Sessions, Some(routing_key))));
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
            window_fragment(
                Some((Page::Sessions, Some("telegram:dm:42 / ü".to_owned()))),
                true
            ),
            "#page=sessions&key=telegram%3Adm%3A42%20%2F%20%C3%BC",
            "a page asked for wins over restoring"
        );
        assert_eq!(
            window_fragment(Some((Page::Approvals, None)), false),
            "#page=approvals"
        );
        assert_eq!(window_fragment(None, true), "#restore");
        assert_eq!(
            window_fragment(None, false),
            "",
            "the first window of a run"
        );
    }
}
