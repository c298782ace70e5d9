//! One app per session. The first launch owns a name on the session bus; a later one hands its
//! arguments to it (the first opens what they ask for: the window, a new chat, the quick chat)
//! and exits. The name, object path and method are those Tauri's single-instance plugin used
//! before, so a launch of this version still reaches a running older one, and the other way round.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The interface a second launch calls.
const INTERFACE: &str = "org.SingleInstance.DBus";

/// How long a second launch retries while the first is still starting (it owns the name a
/// moment before it serves the method).
const HAND_OVER_FOR: Duration = Duration::from_secs(10);

/// What claiming the name found.
pub enum Claim {
    /// This is the first launch: keep the instance for as long as the app runs.
    First(Instance),
    /// Another one runs and has this launch's arguments: exit.
    HandedOver,
    /// Another one owns the name but did not take the arguments.
    Failed(String),
    /// There is no session bus: run, unable to find or be found by other launches.
    NoBus(String),
}

/// The name owned on the session bus, released when the app exits.
pub struct Instance {
    _connection: zbus::Connection,
    launches: Arc<Mutex<Launches>>,
}

/// The bus name and object path for the app `identifier`.
fn name_and_path(identifier: &str) -> (String, String) {
    let name = format!("{identifier}.SingleInstance");
    let path = format!("/{}", name.replace('.', "/").replace('-', "_"));
    (name, path)
}

/// Claims the name for app `identifier` (answering later launches from the start: their
/// arguments wait until [`Instance::serve`] says what to do with them), or hands this launch's
/// arguments to its owner.
pub async fn claim(identifier: &str) -> Claim {
    let (name, path) = name_and_path(identifier);
    let launches = Arc::new(Mutex::new(Launches::default()));
    let built = async {
        zbus::connection::Builder::session()?
            .name(name.as_str())?
            .replace_existing_names(false)
            .allow_name_replacements(false)
            .serve_at(
                path.as_str(),
                LaunchesServer {
                    launches: Arc::clone(&launches),
                },
            )?
            .build()
            .await
    };
    match built.await {
        Ok(connection) => Claim::First(Instance {
            _connection: connection,
            launches,
        }),
        Err(zbus::Error::NameTaken) => {
            let connection = match zbus::Connection::session().await {
                Ok(connection) => connection,
                Err(error) => return Claim::Failed(error.to_string()),
            };
            match hand_over(&connection, &name, &path).await {
                Ok(()) => Claim::HandedOver,
                Err(error) => Claim::Failed(error),
            }
        }
        Err(error) => Claim::NoBus(error.to_string()),
    }
}

/// Gives this launch's arguments to the running app, retrying while it is still starting.
async fn hand_over(connection: &zbus::Connection, name: &str, path: &str) -> Result<(), String> {
    let argv: Vec<String> = std::env::args_os()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let cwd = std::env::current_dir()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let deadline = tokio::time::Instant::now() + HAND_OVER_FOR;
    loop {
        let call = connection
            .call_method(
                Some(name),
                path,
                Some(INTERFACE),
                "ExecuteCallback",
                &(&argv, &cwd),
            )
            .await;
        match call {
            Ok(_) => return Ok(()),
            Err(error) if tokio::time::Instant::now() >= deadline => return Err(error.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

type OnLaunch = Box<dyn Fn(Vec<String>) + Send + Sync>;

/// Later launches: what to do with one, or those that came before that was known.
#[derive(Default)]
struct Launches {
    on_launch: Option<OnLaunch>,
    waiting: Vec<Vec<String>>,
}

/// What a second launch calls.
struct LaunchesServer {
    launches: Arc<Mutex<Launches>>,
}

#[zbus::interface(name = "org.SingleInstance.DBus")]
impl LaunchesServer {
    fn execute_callback(&self, argv: Vec<String>, _cwd: String) {
        let mut launches = self.launches.lock().unwrap_or_else(|e| e.into_inner());
        match &launches.on_launch {
            Some(on_launch) => on_launch(argv),
            None => launches.waiting.push(argv),
        }
    }
}

impl Instance {
    /// Answers later launches: `on_launch` gets each one's arguments (those that came already
    /// first).
    pub fn serve(&self, on_launch: impl Fn(Vec<String>) + Send + Sync + 'static) {
        let mut launches = self.launches.lock().unwrap_or_else(|e| e.into_inner());
        for argv in std::mem::take(&mut launches.waiting) {
            on_launch(argv);
        }
        launches.on_launch = Some(Box::new(on_launch));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_and_path_are_the_ones_a_running_older_version_uses() {
        assert_eq!(
            name_and_path("dev.switchboard.desktop"),
            (
                "dev.switchboard.desktop.SingleInstance".to_owned(),
                "/dev/switchboard/desktop/SingleInstance".to_owned()
            )
        );
    }
}
