//! The real app, started here with its configuration and data in a directory of the test's own,
//! its windows driven over WebDriver. The windows live in the app's window process, started
//! when one opens and gone when the last closes; WebKitWebDriver attaches to it (`--target`:
//! the app's WebKit listens on the inspector address given in `WEBKIT_INSPECTOR_SERVER`, which
//! the window process inherits), with a new session for each new window process.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

use crate::env::{name_has_owner_on, name_pid_on, wait_until, Env};

/// Whether a WebDriver error means the element was replaced by a redraw between finding and
/// using it (WebKit says "stale", or that the node's identifier "was not found").
fn redrawn(error: &str) -> bool {
    let error = error.to_lowercase();
    // WebKitWebDriver sometimes answers a click on an element detached mid-click with an error
    // that has no message at all.
    error.contains("stale")
        || error.contains("was not found")
        || error.trim_end().ends_with("webdriver returned error:")
}

/// What [`App::read`] reads of an element.
#[derive(Clone, Copy)]
enum Read<'a> {
    Prop(&'a str),
    Attr(&'a str),
    Text,
}

/// How long the window has to show what a test waits for.
pub const WAIT: Duration = Duration::from_secs(20);

/// The single-instance plugin's bus name (the app's identifier in `tauri.conf.json`).
const INSTANCE_NAME: &str = "dev.switchboard.desktop.SingleInstance";

/// A test's own files: the configuration, the data directory, a home and an XDG config home.
pub struct Files {
    pub root: PathBuf,
}

impl Files {
    pub fn new(name: &str) -> Files {
        let root =
            std::env::temp_dir().join(format!("switchboard-e2e-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for dir in ["config", "data", "home", "xdg-config"] {
            if let Err(e) = std::fs::create_dir_all(root.join(dir)) {
                panic!("cannot create {}: {e}", root.join(dir).display());
            }
        }
        Files { root }
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("config/config.toml")
    }

    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn write_config(&self, text: &str) {
        if let Err(e) = std::fs::write(self.config(), text) {
            panic!("cannot write the configuration: {e}");
        }
    }

    pub fn read_config(&self) -> String {
        std::fs::read_to_string(self.config()).unwrap_or_default()
    }

    /// The app's log, for failure messages (its stdout is discarded under WebKitWebDriver).
    pub fn app_log(&self) -> String {
        let dir = self.data().join("logs");
        let mut text = String::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        text
    }
}

/// A free loopback port (bound, read and released).
pub fn free_port() -> u16 {
    match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        Err(e) => panic!("no free port: {e}"),
    }
}

/// The app under test, with its window driven over WebDriver.
pub struct App {
    /// The WebDriver session with the current window process.
    client: std::sync::Mutex<Client>,
    /// WebKitWebDriver's address.
    driver_url: String,
    driver: Child,
    app: Child,
    files_root: PathBuf,
    /// The session bus the app was started on, when it is not the suite's.
    bus: Option<String>,
}

impl App {
    /// Starts the app with `files`' configuration and data, and waits for its window.
    pub async fn launch(env: &Env, files: &Files) -> App {
        App::launch_with(env, files, &[]).await
    }

    /// [`App::launch`] with more command-line arguments (`--demo`).
    pub async fn launch_with(env: &Env, files: &Files, extra: &[&str]) -> App {
        App::launch_on(env, files, extra, None).await
    }

    /// [`App::launch_with`] on the session bus at `bus` (a private one a test started).
    pub async fn launch_on(env: &Env, files: &Files, extra: &[&str], bus: Option<&str>) -> App {
        // A previous instance must be gone, or this launch would only hand over to it.
        if let Err(e) = wait_until(
            "the previous instance to exit",
            Duration::from_secs(15),
            || !name_has_owner_on(bus, INSTANCE_NAME),
        ) {
            panic!("{e}");
        }
        let port = free_port();
        let inspector = format!("127.0.0.1:{}", free_port());
        let log = |name: &str| {
            std::fs::File::create(files.root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let mut driver = Command::new(&env.webkit_driver)
            .arg(format!("--port={port}"))
            .arg(format!("--target={inspector}"))
            .stdin(Stdio::null())
            .stdout(log("webdriver.log"))
            .stderr(log("webdriver.err"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start WebKitWebDriver: {e}"));
        let args: Vec<String> = [
            "--config".to_owned(),
            files.config().display().to_string(),
            "--data-dir".to_owned(),
            files.data().display().to_string(),
        ]
        .into_iter()
        .chain(extra.iter().map(|a| (*a).to_owned()))
        .collect();
        let app = Command::new(crate::env::app_binary())
            .args(&args)
            .env("WEBKIT_INSPECTOR_SERVER", &inspector)
            .env("TAURI_WEBVIEW_AUTOMATION", "true")
            .env("HOME", files.root.join("home"))
            .env("XDG_CONFIG_HOME", files.root.join("xdg-config"))
            .env("SWITCHBOARD_LOG", "info,switchboard=debug")
            .envs(bus.map(|address| ("DBUS_SESSION_BUS_ADDRESS", address)))
            .env_remove("SWITCHBOARD_CONFIG")
            .env_remove("SWITCHBOARD_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(log("app.out"))
            .stderr(log("app.err"))
            .spawn();
        let app = match app {
            Ok(app) => app,
            Err(e) => {
                let _ = driver.kill();
                panic!("cannot start the app: {e}");
            }
        };
        let driver_url = format!("http://127.0.0.1:{port}");
        let http = switchboard_engine::http::client();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = driver.try_wait() {
                panic!(
                    "WebKitWebDriver exited ({status}) before it listened; see {}",
                    files.root.join("webdriver.err").display()
                );
            }
            if http
                .get(format!("{driver_url}/status"))
                .send()
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "WebKitWebDriver did not listen on {driver_url}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut app = App {
            client: std::sync::Mutex::new(
                new_session(&driver_url, &files.root)
                    .await
                    .unwrap_or_else(|e| panic!("{e}\napp log:\n{}", files.app_log())),
            ),
            driver_url,
            driver,
            app,
            files_root: files.root.clone(),
            bus: bus.map(str::to_owned),
        };
        if let Ok(Some(status)) = app.app.try_wait() {
            panic!("the app exited at start ({status}) {}", app.log_hint());
        }
        app.find("[data-testid=status-text]").await;
        app
    }

    /// The WebDriver session with the current window process.
    fn client(&self) -> Client {
        self.client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Ends the session and the app (as a person quits it: SIGTERM), and waits until it is gone.
    pub async fn quit(self) {
        let _ = self.client().close().await;
        // Dropping ends the app and the driver.
    }

    /// Ends the app (SIGTERM, as the session or a person quitting does; SIGKILL if it is still
    /// there after 10 s) and the driver.
    fn end_processes(&mut self) {
        let _ = Command::new("kill").arg(self.app.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.app.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.app.kill();
        let _ = self.app.wait();
        let _ = wait_until("the app to leave the bus", Duration::from_secs(5), || {
            !name_has_owner_on(self.bus.as_deref(), INSTANCE_NAME)
        });
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }

    fn log_hint(&self) -> String {
        format!("(logs in {})", self.files_root.display())
    }

    pub async fn find(&self, css: &str) -> Element {
        let deadline = Instant::now() + WAIT;
        loop {
            let client = self.client();
            match client
                .wait()
                .at_most(WAIT)
                .for_element(Locator::Css(css))
                .await
            {
                Ok(element) => return element,
                // The page redraws as the engine reports; an element found mid-redraw is stale.
                Err(e) if Instant::now() < deadline && redrawn(&e.to_string()) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no element {css} in the window: {e} {}", self.log_hint()),
            }
        }
    }

    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client()
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_default()
    }

    /// Clicks `css`, finding it again if the page was redrawn in between.
    pub async fn click(&self, css: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let element = self.find(css).await;
            match element.click().await {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline && redrawn(&e.to_string()) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot click {css}: {e}"),
            }
        }
    }

    /// Closes the window as a person does with its close button: the window manager's
    /// `WM_DELETE_WINDOW` request, sent to each X window titled "Switchboard…" (there is no
    /// window manager under Xvfb, so it is sent directly). Waits until the window is gone.
    pub async fn close_window(&self) {
        let windows = x_windows("^Switchboard");
        assert!(!windows.is_empty(), "no Switchboard window on the display");
        for window in &windows {
            let status = Command::new("python3")
                .arg(CLOSE_WINDOW_SCRIPT)
                .arg(window.to_string())
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "cannot ask window {window} to close"
            );
        }
        if let Err(e) = wait_until("the window to close", WAIT, || {
            x_windows("^Switchboard").is_empty()
        }) {
            panic!("{e} {}", self.log_hint());
        }
        // Closed, not hidden: the window process (and WebKit's processes under it) ended with
        // its last window; the app (on the bus, in the tray) goes on.
        let app = self.app.id();
        if let Err(e) = wait_until("the window process to end", WAIT, || {
            child_names(app).is_empty()
        }) {
            panic!("{e}: {:?} {}", child_names(app), self.log_hint());
        }
        assert_eq!(
            name_pid_on(self.bus.as_deref(), INSTANCE_NAME),
            Some(app),
            "the app stays when its window closes {}",
            self.log_hint()
        );
    }

    /// Waits for a window to be open again (a new window process) and drives it from now on,
    /// with a new session.
    /// The names of the app's child processes (the window process, while it runs).
    pub fn children(&self) -> Vec<String> {
        child_names(self.app.id())
    }

    pub async fn follow_new_window(&self) {
        let _ = self.client().close().await;
        let client = new_session(&self.driver_url, &self.files_root)
            .await
            .unwrap_or_else(|e| panic!("{e} {}", self.log_hint()));
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = client;
        self.find("[data-testid=status-text]").await;
    }

    /// Drives the window whose page shows `css` from now on (the quick chat, or the main window
    /// again), waiting for it to open.
    pub async fn follow_window(&self, css: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let handles = self.client().windows().await.unwrap_or_default();
            for handle in handles.iter().rev() {
                if self.client().switch_to_window(handle.clone()).await.is_ok()
                    && self.client().find(Locator::Css(css)).await.is_ok()
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no window shows {css} (handles: {handles:?}) {}",
                self.log_hint()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Presses Escape in `css`. The window it closes may be gone before the driver answers,
    /// so the answer is not read: the caller checks what Escape did.
    pub async fn escape(&self, css: &str) {
        let element = self.find(css).await;
        let _ = element.send_keys("\u{E00C}").await;
    }

    /// Shows a page through the navigation and waits for it.
    pub async fn page(&self, page: &str) {
        self.click(&format!("[data-testid=nav-{page}]")).await;
        self.find(&format!("[data-page={page}]")).await;
    }

    /// Waits until the text of `css` contains `needle`, and returns it.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        loop {
            if let Ok(element) = self.client().find(Locator::Css(css)).await {
                last = element.text().await.unwrap_or_default();
                if last.contains(needle) {
                    return last;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {needle:?}; it shows {last:?} {}",
                self.log_hint()
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Waits until an element matches `css` (for states shown as attributes). The page re-renders
    /// as engine events arrive, so a match can go stale between finding and returning it: any
    /// error is retried until the deadline.
    pub async fn wait_for(&self, what: &str, css: &str) -> Element {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.client().find(Locator::Css(css)).await {
                Ok(element) => return element,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "the window never showed {what} ({css}): {e} {}",
                        self.log_hint()
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Replaces the text of an input, finding it again if the page was redrawn in between.
    pub async fn fill(&self, css: &str, text: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let input = self.find(css).await;
            let filled = match input.clear().await {
                Ok(()) => input.send_keys(text).await,
                Err(e) => Err(e),
            };
            match filled {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline && redrawn(&e.to_string()) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot type into {css}: {e}"),
            }
        }
    }

    pub async fn value(&self, css: &str) -> String {
        self.read(css, Read::Prop("value"))
            .await
            .unwrap_or_default()
    }

    /// Runs `script` in the page (its arguments as `arguments[0]`, …) and returns what it returns.
    pub async fn script(&self, script: &str, args: Vec<serde_json::Value>) -> serde_json::Value {
        match self.client().execute(script, args).await {
            Ok(value) => value,
            Err(e) => panic!("cannot run {script:?} in the page: {e}"),
        }
    }

    /// How far `css` is scrolled, in pixels.
    pub async fn scroll_top(&self, css: &str) -> f64 {
        let script = "return document.querySelector(arguments[0])?.scrollTop ?? null";
        let top = self.script(script, vec![serde_json::json!(css)]).await;
        top.as_f64()
            .unwrap_or_else(|| panic!("{css} is not on the page: {top}"))
    }

    /// An attribute of `css` (e.g. an input's `type`).
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.read(css, Read::Attr(name)).await
    }

    /// Every text the window shows.
    pub async fn page_text(&self) -> String {
        self.read("body", Read::Text).await.unwrap_or_default()
    }

    /// Reads from `css`, finding it again if the page was redrawn in between.
    async fn read(&self, css: &str, what: Read<'_>) -> Option<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let element = self.find(css).await;
            let read = match what {
                Read::Prop(name) => element.prop(name).await,
                Read::Attr(name) => element.attr(name).await,
                Read::Text => element.text().await.map(Some),
            };
            match read {
                Ok(value) => return value,
                Err(e) if Instant::now() < deadline && redrawn(&e.to_string()) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot read {css}: {e}"),
            }
        }
    }

    /// Saves a picture of the window in `artifacts/screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts/screenshots");
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("{name}.png"));
        match self.client().screenshot().await {
            Ok(png) => {
                if let Err(e) = std::fs::write(&path, png) {
                    panic!("cannot save {}: {e}", path.display());
                }
            }
            Err(e) => panic!("no screenshot: {e}"),
        }
        path
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.end_processes();
    }
}

/// A WebDriver session with the window process listening on the driver's target, waiting for
/// one to start (the app starts it as a window opens).
async fn new_session(driver_url: &str, files_root: &Path) -> Result<Client, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(serde_json::Map::new());
        match builder.connect(driver_url).await {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!(
                    "no WebDriver session with a window: {e} (see {})",
                    files_root.join("webdriver.err").display()
                ))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Sends `WM_DELETE_WINDOW` to an X window, as a window manager does for its close button.
const CLOSE_WINDOW_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/close-window.py");

/// The command names of a process's children.
fn child_names(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|children| {
            children
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|child| std::fs::read_to_string(format!("/proc/{child}/comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

/// X windows whose name matches `pattern` (`xdotool search`), mapped or not.
pub fn x_windows(pattern: &str) -> Vec<u64> {
    Command::new("xdotool")
        .args(["search", "--onlyvisible", "--name", pattern])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
