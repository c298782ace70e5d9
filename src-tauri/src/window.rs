//! The windows live in a process of their own, started when one is opened and ended when the
//! last one closes, so the tray process never loads a webview: WebKit (its libraries' pages,
//! its web and network processes) costs memory only while a window is open.
//!
//! The app (`switchboard`, the tray process: engine, tray, notifications; it does not load
//! WebKit at all) starts the window process — `switchboard-window`, the binary beside it, a
//! Tauri app — with one end of a socket pair as its standard input. Over it, one JSON message
//! per line:
//! - to the window process ([`ToWindow`]): open or focus a window, an event for a page, close
//!   the quick chat, the answer to a call, exit;
//! - from it ([`FromWindow`]): a page's command call (run by [`crate::commands::call`] in the
//!   app, where the shell is), which windows have the focus, "no window is left".
//!
//! When its last window closes, the window process says so with the number of opens it has
//! received; the app tells it to exit unless it has sent another open since (which the window
//! process will act on), so an open never meets a process on its way out. If the app goes,
//! the socket closes and the window process exits with it.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_engine::config::Paths;
use tauri::{AppHandle, Emitter, Manager, Runtime, WindowEvent};

use crate::cli::Cli;
use crate::commands::{self, Answer};
use crate::quick::QUICK_WINDOW;
use crate::shell::Shell;
use crate::views::{ErrorCode, IpcError, Page, UiEvent, UI_EVENT};
use crate::MAIN_WINDOW;

/// The window process's binary, beside the app's.
pub const WINDOW_BINARY: &str = "switchboard-window";

/// The variable that turns WebKit's memory pressure monitor off (WebKitGTK reads it in the UI
/// process and passes it to its web processes).
const MEMORY_PRESSURE_MONITOR: &str = "WEBKIT_DISABLE_MEMORY_PRESSURE_MONITOR";

/// How long a window process started ahead ([`Windows::start_ahead`]) waits for a window to be
/// asked for before it ends.
const AHEAD_FOR: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum ToWindow {
    /// Shows window `label` (building it at `fragment` if it is not open), then sends it
    /// `navigate` if given.
    Open {
        label: String,
        fragment: String,
        navigate: Option<Value>,
    },
    /// A page event for window `label`.
    Emit { label: String, event: Value },
    /// Closes window `label` if it is open.
    Close { label: String },
    /// The answer to call `id`.
    Answer { id: u64, answer: Answer },
    /// No window is left and no open is on its way: the process ends.
    Exit,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum FromWindow {
    /// A page calls `command` with `args`.
    Call {
        id: u64,
        command: String,
        args: Value,
    },
    /// Window `label` gained or lost the focus.
    Focus { label: String, focused: bool },
    /// The last window closed, after `opens` open messages were received.
    Idle { opens: u64 },
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes `message` as one line.
fn write_line(stream: &mut impl Write, message: &impl Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    stream.flush()
}

// ----- the app's side ---------------------------------------------------------------------------

/// The app's handle on the window process: starts it on the first open, and forgets it when it
/// ends.
pub struct Windows {
    shell: Weak<Shell>,
    paths: Paths,
    /// `GDK_GL` as the app was started with it (the app disables GL for itself).
    gdk_gl: Option<OsString>,
    state: Arc<Mutex<Link>>,
}

#[derive(Default)]
struct Link {
    /// The running window process: its number (counted from 1) and where its messages go.
    process: Option<(u64, std::sync::mpsc::Sender<ToWindow>)>,
    started: u64,
    /// Opens sent to the running process.
    opens: u64,
    /// Its windows that have the focus.
    focused: HashSet<String>,
}

impl Link {
    /// Whether process `number` is the running one.
    fn is_current(&self, number: u64) -> bool {
        self.process.as_ref().is_some_and(|(n, _)| *n == number)
    }

    /// Tells process `number`, the running one, to exit, and forgets it.
    fn end(&mut self, number: u64) {
        if let Some((_, sender)) = self.process.as_ref().filter(|(n, _)| *n == number) {
            let _ = sender.send(ToWindow::Exit);
        }
        self.forget(number);
    }

    fn forget(&mut self, number: u64) {
        if self.is_current(number) {
            self.process = None;
            self.opens = 0;
            self.focused.clear();
        }
    }
}

impl Windows {
    pub fn new(shell: Weak<Shell>, paths: Paths, gdk_gl: Option<OsString>) -> Windows {
        Windows {
            shell,
            paths,
            gdk_gl,
            state: Arc::default(),
        }
    }

    /// Opens the main window, on `page` (and a conversation) if given, else where it was.
    pub fn open_main(&self, page: Option<(Page, Option<String>)>) {
        let navigate = page
            .clone()
            .map(|(page, routing_key)| UiEvent::Navigate { page, routing_key });
        self.open(MAIN_WINDOW, window_fragment(page), navigate);
    }

    /// Opens the quick chat, on a conversation if given.
    pub fn open_quick(&self, routing_key: Option<String>) {
        let mut fragment = "#quick".to_owned();
        if let Some(key) = &routing_key {
            fragment.push_str("&key=");
            fragment.push_str(&percent_encode(key));
        }
        let navigate = routing_key.map(|key| UiEvent::Navigate {
            page: Page::Chat,
            routing_key: Some(key),
        });
        self.open(QUICK_WINDOW, fragment, navigate);
    }

    fn open(&self, label: &str, fragment: String, navigate: Option<UiEvent>) {
        let navigate = navigate.and_then(|event| serde_json::to_value(event).ok());
        let mut link = lock(&self.state);
        // Twice at most: a process that ended unnoticed is replaced once.
        for _ in 0..2 {
            if link.process.is_none() {
                match self.start(&mut link) {
                    Ok(()) => {}
                    Err(error) => {
                        tracing::error!(%error, "cannot start the window process");
                        return;
                    }
                }
            }
            let Some((number, sender)) = link.process.clone() else {
                return;
            };
            let message = ToWindow::Open {
                label: label.to_owned(),
                fragment: fragment.clone(),
                navigate: navigate.clone(),
            };
            if sender.send(message).is_ok() {
                link.opens += 1;
                tracing::info!(window = label, "window asked to open");
                return;
            }
            link.forget(number);
        }
    }

    /// Starts the window process ahead of an open that is likely to come (the tray menu was
    /// opened, a notification that opens a conversation was shown: `why`), so that when the
    /// person picks "Open Switchboard" or clicks the notification the process is running, its
    /// libraries loaded: the window shows about 100 ms sooner. It ends after [`AHEAD_FOR`] if
    /// no window was asked for.
    pub fn start_ahead(&self, why: &'static str) {
        let mut link = lock(&self.state);
        if link.process.is_some() {
            return;
        }
        if let Err(error) = self.start(&mut link) {
            tracing::warn!(%error, "cannot start the window process");
            return;
        }
        let Some(number) = link.process.as_ref().map(|(n, _)| *n) else {
            return;
        };
        tracing::info!(why, "window process started ahead");
        let state = Arc::clone(&self.state);
        crate::rt::spawn(async move {
            tokio::time::sleep(AHEAD_FOR).await;
            let mut link = lock(&state);
            if link.is_current(number) && link.opens == 0 {
                link.end(number);
                tracing::info!("no window was asked for: the window process started ahead ends");
            }
        });
    }

    /// Sends `event` to window `label` if it is open.
    pub fn emit(&self, label: &str, event: &UiEvent) {
        let link = lock(&self.state);
        if let Some((_, sender)) = &link.process {
            if let Ok(event) = serde_json::to_value(event) {
                let _ = sender.send(ToWindow::Emit {
                    label: label.to_owned(),
                    event,
                });
            }
        }
    }

    /// Closes window `label` if it is open.
    pub fn close(&self, label: &str) {
        let link = lock(&self.state);
        if let Some((_, sender)) = &link.process {
            let _ = sender.send(ToWindow::Close {
                label: label.to_owned(),
            });
        }
    }

    /// Whether one of the windows has the focus.
    pub fn focused(&self) -> bool {
        !lock(&self.state).focused.is_empty()
    }

    /// Starts the window process and the threads that carry its messages.
    fn start(&self, link: &mut Link) -> std::io::Result<()> {
        let (ours, theirs) = UnixStream::pair()?;
        let program = window_binary()?;
        let mut command = Command::new(&program);
        command
            .arg("--config")
            .arg(&self.paths.config_file)
            .arg("--data-dir")
            .arg(&self.paths.data_dir)
            .stdin(Stdio::from(OwnedFd::from(theirs)));
        match &self.gdk_gl {
            Some(value) => command.env("GDK_GL", value),
            None => command.env_remove("GDK_GL"),
        };
        // WebKit's memory pressure monitor polls while a window is open: in the window process
        // it reads /proc/meminfo, /proc/zoneinfo and the cgroup's files, a byte per read, every
        // 5 s; in the web process it walks /proc/self/smaps every 30 s. What it would do under
        // pressure (drop caches, end an oversized web process) is for pages that grow; this one
        // holds a few lists. Off unless the person's environment says otherwise.
        if std::env::var_os(MEMORY_PRESSURE_MONITOR).is_none() {
            command.env(MEMORY_PRESSURE_MONITOR, "1");
        }
        let mut child = command
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", program.display())))?;
        link.started += 1;
        let number = link.started;
        let pid = child.id();
        let (sender, outbox) = std::sync::mpsc::channel::<ToWindow>();
        let mut writer = ours.try_clone()?;
        std::thread::Builder::new()
            .name("window-out".into())
            .spawn(move || {
                for message in outbox {
                    if let Err(error) = write_line(&mut writer, &message) {
                        tracing::debug!(%error, "the window process stopped reading");
                        break;
                    }
                }
            })?;
        let state = Arc::clone(&self.state);
        let shell = self.shell.clone();
        let answers = sender.clone();
        std::thread::Builder::new()
            .name("window-in".into())
            .spawn(move || {
                for line in BufReader::new(ours).lines() {
                    let Ok(line) = line else { break };
                    match serde_json::from_str::<FromWindow>(&line) {
                        Ok(message) => on_message(&shell, &state, number, &answers, message),
                        Err(error) => {
                            tracing::warn!(%error, "the window process sent what it should not")
                        }
                    }
                }
                lock(&state).forget(number);
                drop(answers);
                match child.wait() {
                    Ok(status) => tracing::info!(%status, "window process ended"),
                    Err(error) => tracing::debug!(%error, "cannot wait for the window process"),
                }
            })?;
        link.process = Some((number, sender));
        link.opens = 0;
        link.focused.clear();
        tracing::info!(pid, "window process started");
        Ok(())
    }
}

/// Where the window process's binary is: beside the app's (the package installs both in one
/// directory; cargo builds both into one).
fn window_binary() -> std::io::Result<PathBuf> {
    let app = std::env::current_exe()?;
    let program = app.with_file_name(WINDOW_BINARY);
    if program.is_file() {
        Ok(program)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "{} is missing (it is installed beside {}; reinstall Switchboard)",
                program.display(),
                app.display()
            ),
        ))
    }
}

fn on_message(
    shell: &Weak<Shell>,
    state: &Mutex<Link>,
    number: u64,
    answers: &std::sync::mpsc::Sender<ToWindow>,
    message: FromWindow,
) {
    match message {
        FromWindow::Call { id, command, args } => {
            let Some(shell) = shell.upgrade() else {
                return;
            };
            let answers = answers.clone();
            crate::rt::spawn(async move {
                let answer = commands::call(shell, &command, args).await;
                let _ = answers.send(ToWindow::Answer { id, answer });
            });
        }
        FromWindow::Focus { label, focused } => {
            let mut link = lock(state);
            if link.is_current(number) {
                if focused {
                    link.focused.insert(label);
                } else {
                    link.focused.remove(&label);
                }
            }
        }
        FromWindow::Idle { opens } => {
            let mut link = lock(state);
            if link.is_current(number) && opens == link.opens {
                link.end(number);
                tracing::info!("no window left: the window process ends");
            }
        }
    }
}

// ----- the window process -----------------------------------------------------------------------

/// What the window process shares between its threads.
struct Parent {
    stream: Mutex<UnixStream>,
    pending: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<Answer>>>,
    next: AtomicU64,
    opens: AtomicU64,
}

impl Parent {
    fn send(&self, message: &FromWindow) -> std::io::Result<()> {
        write_line(&mut *lock(&self.stream), message)
    }

    async fn call(&self, command: String, args: Value) -> Answer {
        let gone = || IpcError::new(ErrorCode::NotRunning, "Switchboard has quit");
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = tokio::sync::oneshot::channel();
        lock(&self.pending).insert(id, answer);
        if self.send(&FromWindow::Call { id, command, args }).is_err() {
            lock(&self.pending).remove(&id);
            return Err(gone());
        }
        answered.await.unwrap_or_else(|_| Err(gone()))
    }
}

/// The window process's Tauri context (its configuration and the page's files).
pub fn context<R: Runtime>() -> tauri::Context<R> {
    tauri::generate_context!("tauri.conf.json")
}

/// `switchboard-window`: runs the window process (started by the app) until the app tells it to
/// exit or goes, then exits the process.
pub fn main() {
    let cli = Cli::parse_args();
    let paths = Paths::resolve(cli.config.clone(), cli.data_dir.clone());
    let log_guard = crate::logging::init(&paths);
    let code = run_window_process();
    drop(log_guard);
    std::process::exit(code);
}

fn run_window_process() -> i32 {
    let stream = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map(UnixStream::from);
    // Its standard input must be the app's socket: someone starting it by hand gets told.
    let stream = match stream {
        Ok(stream) if stream.peer_addr().is_ok() => stream,
        _ => {
            eprintln!(
                "{WINDOW_BINARY} is how Switchboard shows its windows; run `switchboard` instead"
            );
            return 2;
        }
    };
    let reader = match stream.try_clone() {
        Ok(reader) => reader,
        Err(error) => {
            tracing::error!(%error, "cannot read from the app");
            return 1;
        }
    };
    tracing::info!(pid = std::process::id(), "window process starting");
    let parent = Arc::new(Parent {
        stream: Mutex::new(stream),
        pending: Mutex::default(),
        next: AtomicU64::new(1),
        opens: AtomicU64::new(0),
    });
    let forward = {
        let parent = Arc::clone(&parent);
        move |_: &tauri::Webview<tauri::Wry>, command: String, args: Value| {
            let parent = Arc::clone(&parent);
            Box::pin(async move { parent.call(command, args).await }) as commands::Pending
        }
    };
    let on_event = {
        let parent = Arc::clone(&parent);
        move |window: &tauri::Window<tauri::Wry>, event: &WindowEvent| {
            on_window_event(&parent, window, event)
        }
    };
    let result = tauri::Builder::default()
        // The windows' size and position, kept across runs.
        .plugin(
            tauri_plugin_window_state::Builder::new()
                .with_state_flags(window_state_flags())
                .build(),
        )
        .invoke_handler(commands::handler(forward))
        .on_window_event(on_event)
        .setup({
            let parent = Arc::clone(&parent);
            move |app| {
                let app = app.handle().clone();
                std::thread::Builder::new()
                    .name("from-app".into())
                    .spawn(move || from_app(&app, &parent, reader))?;
                Ok(())
            }
        })
        .build(context());
    let app = match result {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(%error, "cannot start the window process");
            return 1;
        }
    };
    app.run_return(|_app, event| {
        // The last window closed: the app decides whether this process ends (it may have
        // asked for another window meanwhile).
        if let tauri::RunEvent::ExitRequested {
            code: None, api, ..
        } = event
        {
            api.prevent_exit();
        }
    })
}

/// Reads the app's messages until it says exit or goes.
fn from_app<R: Runtime>(app: &AppHandle<R>, parent: &Parent, reader: UnixStream) {
    for line in BufReader::new(reader).lines() {
        let Ok(line) = line else { break };
        let message = match serde_json::from_str::<ToWindow>(&line) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "the app sent what the window process cannot read");
                continue;
            }
        };
        match message {
            ToWindow::Open {
                label,
                fragment,
                navigate,
            } => {
                parent.opens.fetch_add(1, Ordering::Relaxed);
                open_window(app, &label, &fragment, navigate);
            }
            ToWindow::Emit { label, event } => {
                if let Err(error) = app.emit_to(label.as_str(), UI_EVENT, event) {
                    tracing::debug!(%error, "cannot send an event to the window");
                }
            }
            ToWindow::Close { label } => {
                if let Some(window) = app.get_webview_window(&label) {
                    if let Err(error) = window.destroy() {
                        tracing::debug!(%error, "cannot close the window");
                    }
                }
            }
            ToWindow::Answer { id, answer } => {
                if let Some(waiting) = lock(&parent.pending).remove(&id) {
                    let _ = waiting.send(answer);
                }
            }
            ToWindow::Exit => break,
        }
    }
    app.exit(0);
}

fn on_window_event<R: Runtime>(parent: &Parent, window: &tauri::Window<R>, event: &WindowEvent) {
    match event {
        WindowEvent::Focused(focused) => {
            let _ = parent.send(&FromWindow::Focus {
                label: window.label().to_owned(),
                focused: *focused,
            });
        }
        WindowEvent::Destroyed => {
            tracing::info!(window = window.label(), "window closed");
            // The plugin writes its file only when the app exits; a window's place is kept as
            // soon as it closes, so a crash or a kill loses nothing.
            use tauri_plugin_window_state::AppHandleExt;
            let app = window.app_handle();
            if let Err(error) = app.save_window_state(window_state_flags()) {
                tracing::debug!(%error, "cannot keep the window's size and place");
            }
            let _ = parent.send(&FromWindow::Focus {
                label: window.label().to_owned(),
                focused: false,
            });
            let left = app
                .webview_windows()
                .keys()
                .any(|label| label != window.label());
            if !left {
                let opens = parent.opens.load(Ordering::Relaxed);
                let _ = parent.send(&FromWindow::Idle { opens });
            }
        }
        _ => {}
    }
}

/// What of a window is kept across runs: its size and place, not whether it is shown.
fn window_state_flags() -> tauri_plugin_window_state::StateFlags {
    use tauri_plugin_window_state::StateFlags;
    StateFlags::SIZE | StateFlags::POSITION | StateFlags::MAXIMIZED
}

/// Shows window `label`, building it at `fragment` if it is not open; an open one is sent
/// `navigate`.
fn open_window<R: Runtime>(
    app: &AppHandle<R>,
    label: &str,
    fragment: &str,
    navigate: Option<Value>,
) {
    if let Some(window) = app.get_webview_window(label) {
        let _ = window.unminimize();
        let _ = window.show();
        let _ = window.set_focus();
        if let Some(event) = navigate {
            if let Err(error) = app.emit_to(label, UI_EVENT, event) {
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
        .find(|w| w.label == label)
        .cloned()
    else {
        tracing::error!(label, "tauri.conf.json has no such window");
        return;
    };
    config.url = tauri::WebviewUrl::App(format!("index.html{fragment}").into());
    config.visible = true;
    let started = std::time::Instant::now();
    match tauri::WebviewWindowBuilder::from_config(app, &config).and_then(|b| b.build()) {
        Ok(window) => {
            let _ = window.set_focus();
            tracing::info!(
                window = label,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "window opened"
            );
        }
        Err(error) => tracing::error!(%error, window = label, "cannot open the window"),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn messages_are_one_json_object_per_line_both_ways() {
        let mut out = Vec::new();
        let answer: Answer = Err(IpcError::new(ErrorCode::NotFound, "line\nbreak"));
        write_line(&mut out, &ToWindow::Answer { id: 7, answer }).expect("written");
        write_line(&mut out, &FromWindow::Idle { opens: 3 }).expect("written");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        match serde_json::from_str::<ToWindow>(lines[0]).expect("reads") {
            ToWindow::Answer {
                id: 7,
                answer: Err(error),
            } => {
                assert_eq!(error.message, "line\nbreak")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            serde_json::from_str::<FromWindow>(lines[1]).expect("reads"),
            FromWindow::Idle { opens: 3 }
        ));
    }
}
