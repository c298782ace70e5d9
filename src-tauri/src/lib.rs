//! Switchboard's desktop app: a thin Tauri shell around the engine.
//!
//! The engine does all the work; this crate shows it (tray, window, notifications) and turns
//! clicks into engine calls. [`shell::Shell`] is the Tauri-free core, [`views`] and [`commands`] the typed contract
//! with the page, [`tray`] the tray menu, [`notify`] the notification policy, [`window`] the
//! window process (the windows and their webviews live apart from the tray), [`run`] the app.
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
pub mod window;
pub mod x11grab;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use switchboard_engine::config::Paths;
use switchboard_engine::EngineOptions;
use tauri::{AppHandle, Manager, Runtime};

use crate::autostart::Autostart;
use crate::cli::{Cli, Launch};
use crate::notify::{Question, Toast};
use crate::quick::{QuickKeys, QUICK_WINDOW};
use crate::shell::{Host, Shell, ShellOptions, NEW_CHAT};
use crate::tray::{MenuId, TrayMenu, TrayModel};
use crate::views::{Page, UiEvent};
use crate::window::Windows;

/// The window's label, as `tauri.conf.json` and the capability name it.
pub const MAIN_WINDOW: &str = "main";

/// Runs the app until it quits, then exits the process with its exit code.
pub fn run() {
    let cli = Cli::parse_args();
    let paths = Paths::resolve(cli.config.clone(), cli.data_dir.clone());
    let log_guard = logging::init(&paths);
    if cli.window_process {
        let code = window::run_window_process();
        drop(log_guard);
        std::process::exit(code);
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %paths.config_file.display(), "switchboard starting");

    let shell = Shell::new(ShellOptions {
        autostart: Autostart::new(&Autostart::user_dir(), cli.autostart_command()),
        autopilot_file: default_autopilot_file(),
        paths: paths.clone(),
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
        .manage(Arc::clone(&shell))
        .setup({
            let shell = Arc::clone(&shell);
            move |app| {
                setup(app.handle(), shell, paths, cli.hidden, cli.launch());
                Ok(())
            }
        })
        .build(context());
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

/// The app's Tauri context (its configuration and the page's files), built once for both
/// processes.
pub fn context<R: Runtime>() -> tauri::Context<R> {
    tauri::generate_context!("tauri.conf.json")
}

fn setup<R: Runtime>(
    app: &AppHandle<R>,
    shell: Arc<Shell>,
    paths: Paths,
    hidden: bool,
    launch: Launch,
) {
    let windows = Arc::new(Windows::new(app.clone(), paths));
    app.manage(Arc::clone(&windows));
    let keys = {
        let windows = Arc::clone(&windows);
        QuickKeys::new(
            quick::Display::from_env(|name| std::env::var(name).ok()),
            move || windows.open_quick(None),
        )
    };
    let host = Arc::new(TauriHost {
        app: app.clone(),
        windows,
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

fn windows<R: Runtime>(app: &AppHandle<R>) -> Option<Arc<Windows<R>>> {
    app.try_state::<Arc<Windows<R>>>()
        .map(|w| Arc::clone(w.inner()))
}

fn show_main_window<R: Runtime>(app: &AppHandle<R>) {
    if let Some(windows) = windows(app) {
        windows.open_main(None);
    }
}

fn open_for<R: Runtime>(app: &AppHandle<R>, launch: Launch) {
    let Some(windows) = windows(app) else { return };
    match launch {
        Launch::Window => windows.open_main(None),
        Launch::NewChat => windows.open_main(Some((Page::Chat, Some(NEW_CHAT.to_owned())))),
        Launch::QuickChat => windows.open_quick(None),
    }
}

struct TauriHost<R: Runtime> {
    app: AppHandle<R>,
    windows: Arc<Windows<R>>,
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
        self.windows.emit(MAIN_WINDOW, &event);
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
        if toast.unless_focused && self.windows.focused() {
            tracing::debug!(summary = %toast.summary, "notification not shown: a window has the focus");
            return;
        }
        let app = self.app.clone();
        let windows = Arc::clone(&self.windows);
        notify::show(toast, move |response| match response {
            notify::Response::Open(routing_key) => {
                tracing::info!(%routing_key, "notification clicked: opening the conversation");
                let page = match switchboard_engine::channels::desktop::chat_of(&routing_key) {
                    Some(_) => Page::Chat,
                    None => Page::Sessions,
                };
                windows.open_main(Some((page, Some(routing_key))));
            }
            notify::Response::Reply(routing_key, None) => {
                tracing::info!(%routing_key, "notification's reply: opening the quick chat");
                windows.open_quick(Some(routing_key));
            }
            notify::Response::Reply(routing_key, Some(text)) => {
                let Some(shell) = app.try_state::<Arc<Shell>>() else {
                    return;
                };
                let shell = Arc::clone(shell.inner());
                let windows = Arc::clone(&windows);
                tauri::async_runtime::spawn(async move {
                    let id = format!("notification-{}", uuid::Uuid::new_v4());
                    match shell.say(&routing_key, &text, &id).await {
                        Ok(_) => tracing::info!(%routing_key, "answered from a notification"),
                        Err(error) => {
                            // The answer went nowhere: show the person the conversation, where
                            // they can send it again and the chat says what is wrong.
                            tracing::warn!(%routing_key, error = %error.message, "cannot answer from the notification");
                            windows.open_quick(Some(routing_key));
                        }
                    }
                });
            }
        });
    }

    fn show_window(&self, page: Option<Page>, routing_key: Option<String>) {
        self.windows.open_main(page.map(|page| (page, routing_key)));
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
        self.windows.open_quick(routing_key);
    }

    fn close_quick_chat(&self) {
        self.windows.close(QUICK_WINDOW);
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
