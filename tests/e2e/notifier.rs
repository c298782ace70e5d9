//! A notification server that takes answers in place, as KDE Plasma's does: it advertises
//! `inline-reply`, records each `Notify`, and sends `NotificationReplied` when the test types an
//! answer. It serves on a private session bus of its own (dunst, the suite's daemon, has no inline
//! replies), which the app under test is started on.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use zbus::object_server::SignalEmitter;
use zbus::zvariant::OwnedValue;

const PATH: &str = "/org/freedesktop/Notifications";

/// One `Notify` the server received.
#[derive(Debug, Clone)]
pub struct Shown {
    pub id: u32,
    pub summary: String,
    pub body: String,
    pub actions: Vec<String>,
}

struct Server {
    shown: Arc<Mutex<Vec<Shown>>>,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Server {
    fn get_capabilities(&self) -> Vec<String> {
        ["actions", "body", "inline-reply"]
            .map(str::to_owned)
            .to_vec()
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        (
            "fake-plasma".into(),
            "switchboard tests".into(),
            "1".into(),
            "1.2".into(),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        _app_name: &str,
        _replaces_id: u32,
        _app_icon: &str,
        summary: &str,
        body: &str,
        actions: Vec<String>,
        _hints: HashMap<String, OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        let id = shown.len() as u32 + 1;
        shown.push(Shown {
            id,
            summary: summary.to_owned(),
            body: body.to_owned(),
            actions,
        });
        id
    }

    fn close_notification(&self, _id: u32) {}

    #[zbus(signal)]
    async fn notification_replied(
        emitter: &SignalEmitter<'_>,
        id: u32,
        text: &str,
    ) -> zbus::Result<()>;
}

/// The private bus and the server on it.
pub struct Notifier {
    pub address: String,
    connection: zbus::Connection,
    shown: Arc<Mutex<Vec<Shown>>>,
    bus: Child,
}

impl Notifier {
    pub async fn start() -> Notifier {
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start a private dbus-daemon: {e}"));
        let mut address = String::new();
        if let Some(out) = bus.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut address);
        }
        let address = address.trim().to_owned();
        assert!(!address.is_empty(), "the private bus printed no address");
        let shown = Arc::new(Mutex::new(Vec::new()));
        let connection = zbus::connection::Builder::address(address.as_str())
            .and_then(|b| b.name("org.freedesktop.Notifications"))
            .and_then(|b| {
                b.serve_at(
                    PATH,
                    Server {
                        shown: Arc::clone(&shown),
                    },
                )
            })
            .unwrap_or_else(|e| panic!("cannot set the notification server up: {e}"));
        let connection = connection
            .build()
            .await
            .unwrap_or_else(|e| panic!("cannot serve notifications on the private bus: {e}"));
        Notifier {
            address,
            connection,
            shown,
            bus,
        }
    }

    pub fn shown(&self) -> Vec<Shown> {
        self.shown.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The person types `text` into notification `id`.
    pub async fn reply(&self, id: u32, text: &str) {
        let server = self
            .connection
            .object_server()
            .interface::<_, Server>(PATH)
            .await
            .unwrap_or_else(|e| panic!("the server is not served: {e}"));
        if let Err(e) = Server::notification_replied(server.signal_emitter(), id, text).await {
            panic!("cannot send the reply: {e}");
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}
