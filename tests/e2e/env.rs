//! The prepared desktop: an X server (Xvfb), a D-Bus session bus, a StatusNotifier watcher (the
//! tray host), the dunst notification daemon, a bus monitor recording notifications, and the
//! WebDriver tools. `scripts/test.sh` runs the suite under `xvfb-run … dbus-run-session` with
//! `SWITCHBOARD_E2E=1`; anywhere else the tests skip, saying why.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What the suite needs from the machine, once per test process.
pub struct Env {
    /// WebKitGTK's WebDriver, which attaches to the app's window process (`--target`).
    pub webkit_driver: PathBuf,
    /// Scratch space for the daemons' files.
    pub dir: PathBuf,
    pub notifications: NotificationLog,
    /// The daemons started here; they end with the session bus.
    _children: Vec<Child>,
}

/// Why the prepared environment cannot be set up (the tests then fail: they were asked to run).
pub enum Unavailable {
    Broken(String),
}

/// The app under test: the one this build made, or an installed one named by
/// `SWITCHBOARD_E2E_APP` (the package test runs the suite against `/usr/bin/switchboard`).
pub fn app_binary() -> String {
    std::env::var("SWITCHBOARD_E2E_APP")
        .ok()
        .filter(|path| !path.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_switchboard").to_owned())
}

static ENV: OnceLock<Result<Env, String>> = OnceLock::new();

/// The environment, or `None` after printing why the tests skip. Panics when the environment
/// was asked for (`SWITCHBOARD_E2E=1`) but cannot be set up.
pub fn get() -> Option<&'static Env> {
    if std::env::var("SWITCHBOARD_E2E").ok().as_deref() != Some("1") {
        eprintln!(
            "e2e skipped: not under the prepared desktop environment (run scripts/test.sh, which sets SWITCHBOARD_E2E=1 \
             under xvfb-run and dbus-run-session)"
        );
        return None;
    }
    match ENV.get_or_init(|| prepare().map_err(|Unavailable::Broken(reason)| reason)) {
        Ok(env) => Some(env),
        Err(reason) => panic!("the e2e environment cannot be prepared: {reason}"),
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    if let Some(tools) = std::env::var_os("SWITCHBOARD_TOOLS") {
        dirs.push(PathBuf::from(tools).join("bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn prepare() -> Result<Env, Unavailable> {
    for var in ["DISPLAY", "DBUS_SESSION_BUS_ADDRESS"] {
        if std::env::var_os(var).is_none() {
            return Err(Unavailable::Broken(format!(
                "{var} is not set; run under xvfb-run and dbus-run-session"
            )));
        }
    }
    let mut missing = Vec::new();
    for program in [
        "WebKitWebDriver",
        "status-notifier-watcher",
        "dunst",
        "dunstctl",
        "dbus-monitor",
        "gdbus",
    ] {
        if find_program(program).is_none() {
            missing.push(program);
        }
    }
    let webkit_driver = find_program("WebKitWebDriver");
    if webkit_driver.is_none() {
        missing.push("WebKitWebDriver");
    }
    if !missing.is_empty() {
        return Err(Unavailable::Broken(format!(
            "missing programs: {} (scripts/setup.sh installs them)",
            missing.join(", ")
        )));
    }
    let dir = std::env::temp_dir().join(format!("switchboard-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Unavailable::Broken(format!("cannot create {}: {e}", dir.display())))?;
    let mut children = Vec::new();

    // The tray host: without it the app has no StatusNotifierItem to drive.
    if !name_has_owner("org.kde.StatusNotifierWatcher") {
        children.push(spawn_logged(
            "status-notifier-watcher",
            &[],
            &dir.join("watcher.log"),
        )?);
        wait_until(
            "the StatusNotifier watcher on the bus",
            Duration::from_secs(10),
            || name_has_owner("org.kde.StatusNotifierWatcher"),
        )
        .map_err(Unavailable::Broken)?;
    }

    // Record notifications before the daemon starts, so none is missed.
    let notifications = NotificationLog::start(&dir)?;

    // The notification daemon, configured so identical notifications are not merged and the
    // context menu (a click on an action) is answered by a script.
    if !name_has_owner("org.freedesktop.Notifications") {
        let dmenu = dir.join("dmenu.sh");
        std::fs::write(&dmenu, "#!/bin/sh\n# Picks the action a test asked for (dunst's context menu).\ngrep -m1 -F \"$(cat \"$(dirname \"$0\")/pick\")\"\n")
            .map_err(|e| Unavailable::Broken(format!("cannot write the dmenu script: {e}")))?;
        set_executable(&dmenu)?;
        let dunstrc = dir.join("dunstrc");
        let config = format!(
            "[global]\n    stack_duplicates = false\n    dmenu = {}\n    timeout = 0\n    notification_limit = 0\n",
            dmenu.display()
        );
        std::fs::write(&dunstrc, config)
            .map_err(|e| Unavailable::Broken(format!("cannot write the dunst config: {e}")))?;
        children.push(spawn_logged(
            "dunst",
            &["-config", &dunstrc.display().to_string()],
            &dir.join("dunst.log"),
        )?);
        wait_until("dunst on the bus", Duration::from_secs(10), || {
            name_has_owner("org.freedesktop.Notifications")
        })
        .map_err(Unavailable::Broken)?;
    }
    Ok(Env {
        webkit_driver: webkit_driver.unwrap_or_default(),
        dir,
        notifications,
        _children: children,
    })
}

#[cfg(unix)]
fn set_executable(path: &Path) -> Result<(), Unavailable> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Unavailable::Broken(format!("chmod {}: {e}", path.display())))
}

#[cfg(not(unix))]
fn set_executable(_path: &Path) -> Result<(), Unavailable> {
    Ok(())
}

fn spawn_logged(program: &str, args: &[&str], log: &Path) -> Result<Child, Unavailable> {
    let out = std::fs::File::create(log)
        .map_err(|e| Unavailable::Broken(format!("cannot create {}: {e}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(|e| Unavailable::Broken(e.to_string()))?;
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| Unavailable::Broken(format!("cannot start {program}: {e}")))
}

/// Runs `check` every 100 ms until it holds.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `gdbus call` on the session bus; the reply in GVariant text, or the error.
pub fn gdbus_call(dest: &str, path: &str, method: &str, args: &[&str]) -> Result<String, String> {
    gdbus_call_on(None, dest, path, method, args)
}

/// [`gdbus_call`] on the bus at `bus` (a private bus a test started), else the session bus.
pub fn gdbus_call_on(
    bus: Option<&str>,
    dest: &str,
    path: &str,
    method: &str,
    args: &[&str],
) -> Result<String, String> {
    let mut command = Command::new("gdbus");
    if let Some(address) = bus {
        command.env("DBUS_SESSION_BUS_ADDRESS", address);
    }
    let output = command
        .args([
            "call",
            "--session",
            "--dest",
            dest,
            "--object-path",
            path,
            "--method",
            method,
        ])
        .args(if args.is_empty() {
            &[][..]
        } else {
            &["--"][..]
        })
        .args(args)
        .output()
        .map_err(|e| format!("gdbus: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

pub fn name_has_owner(name: &str) -> bool {
    name_has_owner_on(None, name)
}

pub fn name_has_owner_on(bus: Option<&str>, name: &str) -> bool {
    gdbus_call_on(
        bus,
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.NameHasOwner",
        &[name],
    )
    .is_ok_and(|reply| reply.contains("true"))
}

/// The process id behind a bus name (on the bus at `bus`, else the session bus).
pub fn name_pid_on(bus: Option<&str>, name: &str) -> Option<u32> {
    let reply = gdbus_call_on(
        bus,
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.GetConnectionUnixProcessID",
        &[name],
    )
    .ok()?;
    reply
        .trim_start_matches("(uint32 ")
        .trim_end_matches(",)")
        .parse()
        .ok()
}

/// A `Notify` call seen on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub app: String,
    pub summary: String,
    pub body: String,
    pub actions: Vec<String>,
}

/// Every `org.freedesktop.Notifications.Notify` (and `CloseNotification`) call on the session bus,
/// as `dbus-monitor` saw it.
pub struct NotificationLog {
    lines: Arc<Mutex<Vec<String>>>,
    _monitor: Child,
}

impl NotificationLog {
    fn start(dir: &Path) -> Result<NotificationLog, Unavailable> {
        let stderr = std::fs::File::create(dir.join("monitor.log"))
            .map_err(|e| Unavailable::Broken(e.to_string()))?;
        let mut monitor = Command::new("dbus-monitor")
            .args([
                "--session",
                "type='method_call',interface='org.freedesktop.Notifications',member='Notify'",
                "type='method_call',interface='org.freedesktop.Notifications',member='CloseNotification'",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| Unavailable::Broken(format!("cannot start dbus-monitor: {e}")))?;
        let stdout = monitor
            .stdout
            .take()
            .ok_or_else(|| Unavailable::Broken("dbus-monitor has no stdout".into()))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        // dbus-monitor announces itself (NameAcquired / NameLost) once it listens.
        wait_until("dbus-monitor listening", Duration::from_secs(10), || {
            !lines.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
        })
        .map_err(Unavailable::Broken)?;
        Ok(NotificationLog {
            lines,
            _monitor: monitor,
        })
    }

    /// Every notification so far, oldest first.
    pub fn all(&self) -> Vec<Notification> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone();
        parse_notify_calls(&lines)
    }

    /// How many notifications their apps withdrew (`CloseNotification` calls) so far.
    pub fn withdrawn(&self) -> usize {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|line| line.contains("member=CloseNotification"))
            .count()
    }
}

/// Reads dbus-monitor's text: after each `member=Notify` line come the arguments: app name,
/// replaces id, icon, summary, body, then the actions array.
pub fn parse_notify_calls(lines: &[String]) -> Vec<Notification> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if !lines[i].contains("member=Notify") {
            i += 1;
            continue;
        }
        i += 1;
        let mut strings = Vec::new();
        let mut actions = Vec::new();
        let mut in_actions = false;
        while i < lines.len()
            && !lines[i].starts_with("method call")
            && !lines[i].starts_with("signal")
        {
            let line = lines[i].trim_start();
            if let Some(rest) = line.strip_prefix("string \"") {
                // A string may run over several lines when it holds newlines.
                let mut text = rest.to_owned();
                while !text.ends_with('"') && i + 1 < lines.len() {
                    i += 1;
                    text.push('\n');
                    text.push_str(&lines[i]);
                }
                let text = text.trim_end_matches('"').to_owned();
                if in_actions {
                    actions.push(text);
                } else {
                    strings.push(text);
                }
            } else if line.starts_with("array [")
                && strings.len() >= 4
                && actions.is_empty()
                && !in_actions
            {
                in_actions = true;
            } else if line.starts_with(']') {
                in_actions = false;
            }
            i += 1;
        }
        if strings.len() >= 4 {
            out.push(Notification {
                app: strings[0].clone(),
                summary: strings[2].clone(),
                body: strings[3].clone(),
                actions,
            });
        }
    }
    out
}

#[test]
fn notify_calls_are_read_from_dbus_monitor_output() {
    let text = r#"signal time=1.0 sender=org.freedesktop.DBus -> destination=:1.9 serial=2 path=/org/freedesktop/DBus; interface=org.freedesktop.DBus; member=NameAcquired
   string ":1.9"
method call time=2.0 sender=:1.12 -> destination=org.freedesktop.Notifications serial=9 path=/org/freedesktop/Notifications; interface=org.freedesktop.Notifications; member=Notify
   string "Switchboard"
   uint32 0
   string "switchboard"
   string "Reply in telegram/4242"
   string "echo: two
lines"
   array [
      string "default"
      string "Open conversation"
   ]
   array [
   ]
   int32 -1
"#;
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(
        parse_notify_calls(&lines),
        vec![Notification {
            app: "Switchboard".into(),
            summary: "Reply in telegram/4242".into(),
            body: "echo: two\nlines".into(),
            actions: vec!["default".into(), "Open conversation".into()],
        }]
    );
}
