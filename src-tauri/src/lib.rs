//! Switchboard's desktop app: the tray process around the engine, and the window process.
//!
//! The engine does all the work; this crate shows it (tray, window, notifications) and turns
//! clicks into engine calls. [`shell::Shell`] is the core, [`views`] and [`commands`] the typed
//! contract with the page, [`tray`] the tray menu, [`notify`] the notification policy,
//! [`instance`] the one app per session, [`window`] the window process (the windows and their
//! webviews live apart from the tray), [`run`] the app.
//!
//! Two binaries: `switchboard` ([`run`]: engine, tray, notifications; GTK for the tray, no
//! webview — it does not even load WebKit) and `switchboard-window` ([`window::main`],
//! Tauri: the windows), which the first starts when a window opens.
#![forbid(unsafe_code)]

pub mod activity;
pub mod autostart;
pub mod cli;
pub mod commands;
pub mod instance;
pub mod logging;
pub mod notify;
pub mod quick;
pub mod rt;
pub mod shell;
pub mod tray;
pub mod validate;
pub mod views;
pub mod window;
pub mod x11grab;

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use switchboard_engine::config::Paths;
use switchboard_engine::EngineOptions;

use crate::autostart::Autostart;
use crate::cli::{Cli, Launch};
use crate::instance::Claim;
use crate::notify::{Question, Toast};
use crate::quick::{QuickKeys, QUICK_WINDOW};
use crate::shell::{Host, Shell, ShellOptions, NEW_CHAT};
use crate::tray::{MenuId, TrayMenu, TrayModel};
use crate::views::{Page, UiEvent};
use crate::window::Windows;

/// The window's label, as `tauri.conf.json` and the capability name it.
pub const MAIN_WINDOW: &str = "main";

/// The app's identifier (`tauri.conf.json`), which names its single-instance bus name.
pub const IDENTIFIER: &str = "dev.switchboard.desktop";

thread_local! {
    /// The tray, on the main thread (GTK's).
    static TRAY: RefCell<Option<TrayMenu>> = const { RefCell::new(None) };
}

/// Runs the app until it quits, then exits the process with its exit code.
pub fn run() {
    // Only the tray uses GTK here, so GDK need not look for OpenGL (which loads the GPU's
    // driver, tens of MiB, for nothing). Set before any thread starts; the window process gets
    // the variable as it was.
    let gdk_gl = std::env::var_os("GDK_GL");
    std::env::set_var("GDK_GL", "disable");
    let cli = Cli::parse_args();
    let paths = Paths::resolve(cli.config.clone(), cli.data_dir.clone());
    let log_guard = logging::init(&paths);
    // First, so a second launch hands over before anything else starts.
    let instance = match rt::block_on(instance::claim(IDENTIFIER)) {
        Claim::First(instance) => Some(instance),
        Claim::HandedOver => {
            drop(log_guard);
            std::process::exit(0);
        }
        Claim::Failed(error) => {
            tracing::error!(%error, "cannot hand over to the running Switchboard");
            eprintln!("switchboard: cannot reach the running Switchboard: {error}");
            drop(log_guard);
            std::process::exit(1);
        }
        Claim::NoBus(error) => {
            tracing::warn!(%error, "no session bus: a second launch will not find this one");
            None
        }
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %paths.config_file.display(), "switchboard starting");
    if let Err(error) = gtk::init() {
        tracing::error!(%error, "cannot start GTK (is there a display?)");
        eprintln!("switchboard: cannot start: {error}");
        drop(log_guard);
        std::process::exit(1);
    }

    let shell = Shell::new(ShellOptions {
        autostart: Autostart::new(&Autostart::user_dir(), cli.autostart_command()),
        autopilot_file: default_autopilot_file(),
        paths: paths.clone(),
        engine: EngineOptions::default(),
        extra_channels: Vec::new(),
        demo: cli.demo,
    });
    let windows = Arc::new(Windows::new(Arc::downgrade(&shell), paths, gdk_gl));
    if let Some(instance) = &instance {
        let windows = Arc::clone(&windows);
        instance.serve(move |argv| {
            let launch = Cli::launch_of(&argv);
            tracing::info!(?launch, "a second launch: handing over");
            open_for(&windows, launch);
        });
    }
    setup(&shell, &windows, cli.hidden, cli.launch());
    gtk::main();
    tracing::info!("switchboard exited");
    drop(instance);
    // The log file's writer flushes when its guard is dropped, which exiting would skip.
    drop(log_guard);
    std::process::exit(0);
}

fn setup(shell: &Arc<Shell>, windows: &Arc<Windows>, hidden: bool, launch: Launch) {
    let keys = {
        let windows = Arc::clone(windows);
        QuickKeys::new(
            quick::Display::from_env(|name| std::env::var(name).ok()),
            move || windows.open_quick(None),
        )
    };
    let host = Arc::new(DesktopHost {
        shell: Arc::downgrade(shell),
        windows: Arc::clone(windows),
        questions: Arc::default(),
        keys,
    });
    let initial = TrayModel::from_snapshot(&shell.snapshot());
    let on_click = {
        let shell = Arc::clone(shell);
        move |id: MenuId| on_menu_click(&shell, id)
    };
    let tray = match TrayMenu::create(initial, on_click) {
        Ok(mut tray) => {
            // The menu open means a window may be asked for in a moment: start its process.
            let windows = Arc::clone(windows);
            tray.on_opened(move || {
                let windows = Arc::clone(&windows);
                rt::spawn(async move { windows.start_ahead("the tray menu is open") });
            });
            TRAY.with(|slot| *slot.borrow_mut() = Some(tray));
            tracing::info!("tray ready");
            true
        }
        // Without a tray icon the app still runs, with its window: started hidden, it would
        // leave the person nothing to click.
        Err(error) => {
            tracing::warn!(%error, "cannot create the tray icon");
            false
        }
    };
    shell.set_host(host);
    if (!hidden || !tray) && launch == Launch::Window {
        windows.open_main(None);
    }
    let starting = Arc::clone(shell);
    let windows_for_start = Arc::clone(windows);
    rt::spawn(async move {
        starting.start().await;
        // A first run or a broken file needs the window, even when started hidden.
        if (hidden || launch != Launch::Window) && starting.snapshot().start_page == Page::Settings
        {
            windows_for_start.open_main(None);
        } else if launch != Launch::Window {
            open_for(&windows_for_start, launch);
        }
    });
    spawn_signal_handler(Arc::clone(shell));
}

/// A tray click: Quit stops the engine and exits; everything else goes to the shell. The menu
/// handler runs on the main thread, so the work is moved off it.
fn on_menu_click(shell: &Arc<Shell>, id: MenuId) {
    tracing::info!(item = %id, "tray menu");
    let shell = Arc::clone(shell);
    rt::spawn(async move {
        if id == MenuId::Quit {
            quit(&shell).await;
        } else {
            shell.on_menu(id);
        }
    });
}

/// Stops the engine (at most 10 s), then ends GTK's main loop, which ends the app.
async fn quit(shell: &Shell) {
    shell.stop().await;
    glib::MainContext::default().invoke(gtk::main_quit);
}

/// SIGINT and SIGTERM quit cleanly, like the tray's Quit.
fn spawn_signal_handler(shell: Arc<Shell>) {
    #[cfg(unix)]
    rt::spawn(async move {
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
        quit(&shell).await;
    });
    #[cfg(not(unix))]
    let _ = shell;
}

fn open_for(windows: &Windows, launch: Launch) {
    match launch {
        Launch::Window => windows.open_main(None),
        Launch::NewChat => windows.open_main(Some((Page::Chat, Some(NEW_CHAT.to_owned())))),
        Launch::QuickChat => windows.open_quick(None),
    }
}

struct DesktopHost {
    shell: Weak<Shell>,
    windows: Arc<Windows>,
    /// The notifications asking a question shown now: sending withdraws one.
    questions: Arc<Mutex<HashMap<Question, tokio::sync::oneshot::Sender<()>>>>,
    /// The quick chat's shortcut.
    keys: Arc<QuickKeys>,
}

impl DesktopHost {
    /// Raises a notification that asks `question`; its actions (Approve / Reject, Admit /
    /// Refuse) answer from the "notification" surface, as the window's buttons do from theirs.
    fn notify_question(&self, question: Question, toast: Toast) {
        let (withdraw, withdrawn) = tokio::sync::oneshot::channel();
        let shown = Arc::clone(&self.questions);
        shown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(question.clone(), withdraw);
        let shell = self.shell.clone();
        let asked = question.clone();
        let on_answer = move |answer: notify::Answer| {
            let Some(shell) = shell.upgrade() else {
                return;
            };
            // Deciding updates the chat from a task, so it runs on the async runtime, not on the
            // notification's thread.
            rt::spawn(async move {
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

impl Host for DesktopHost {
    fn emit(&self, event: UiEvent) {
        self.windows.emit(MAIN_WINDOW, &event);
    }

    fn update_tray(&self, model: &TrayModel, force: bool) {
        // The tray lives on the main thread, with GTK; updates are queued there in order.
        let model = model.clone();
        glib::MainContext::default().invoke(move || {
            TRAY.with(|tray| {
                if let Some(tray) = tray.borrow_mut().as_mut() {
                    if let Err(error) = tray.apply(&model, force) {
                        tracing::warn!(%error, "cannot update the tray");
                    }
                }
            })
        });
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
        if toast.open.is_some() || toast.reply.is_some() {
            // A click on it opens a window: have its process loaded by then, as for the menu.
            let windows = Arc::clone(&self.windows);
            rt::spawn(
                async move { windows.start_ahead("a notification that opens a window is shown") },
            );
        }
        let shell = self.shell.clone();
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
                let Some(shell) = shell.upgrade() else {
                    return;
                };
                let windows = Arc::clone(&windows);
                rt::spawn(async move {
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
        let shell = self.shell.clone();
        // Numbered here, where saves happen in order; the tasks may run in any order.
        let ticket = keys.ticket();
        rt::spawn(async move {
            let Some(view) = keys.apply(&wanted, ticket).await else {
                return;
            };
            if let Some(shell) = shell.upgrade() {
                shell.set_quick_chat(view);
            }
        });
    }
}

/// Stakpak's own configuration, offered for import on the first run.
pub fn default_autopilot_file() -> Option<PathBuf> {
    dirs::home_dir().map(|home| home.join(".stakpak").join("autopilot.toml"))
}
