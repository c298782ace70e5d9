//! The quick chat: a small window above everything else, for one message to the agent and its
//! reply, opened from anywhere by a shortcut (`[desktop] quick_chat_shortcut`), the tray, a
//! notification's "Reply", or `switchboard --quick-chat`.
//!
//! The shortcut is registered the way the desktop allows: through the desktop portal's
//! GlobalShortcuts interface where it is offered (Wayland, recent GNOME and KDE; the desktop may
//! ask the person to confirm it, and has the last word on the keys), else with a key grab on the
//! X server. Wayland without the portal lets no program grab keys; Settings then says so and
//! suggests binding `switchboard --quick-chat` in the desktop's own keyboard settings.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ashpd::desktop::global_shortcuts::{BindShortcutsOptions, GlobalShortcuts, NewShortcut};
use ashpd::desktop::CreateSessionOptions;
use futures_util::StreamExt;
use switchboard_engine::config::Shortcut;
use tokio::sync::oneshot;

use crate::views::QuickChatView;

/// The quick chat window's label (`tauri.conf.json`, the capability).
pub const QUICK_WINDOW: &str = "quick";
/// The application id the desktop portal knows Switchboard by (its `.desktop` file's name).
const APP_ID: &str = "dev.switchboard.desktop";
/// The shortcut's id with the portal.
const PORTAL_SHORTCUT: &str = "quick-chat";
/// How long asking whether the portal is there may take (a missing one answers at once; one
/// that is being started by the bus may take a moment).
const PORTAL_PROBE: Duration = Duration::from_secs(5);
/// How long the desktop's dialog confirming the shortcut may stay open.
const PORTAL_DIALOG: Duration = Duration::from_secs(120);

/// What kind of graphical session this is, as far as grabbing keys goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// An X server (X11 sessions): a key grab works.
    X11,
    /// Wayland: only the portal can give a shortcut (a grab on XWayland sees keys only while an
    /// X11 window has the focus).
    Wayland,
    /// No display at all.
    None,
}

impl Display {
    /// From the session's environment.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Display {
        let set = |name: &str| get(name).is_some_and(|v| !v.is_empty());
        if set("WAYLAND_DISPLAY") || get("XDG_SESSION_TYPE").as_deref() == Some("wayland") {
            Display::Wayland
        } else if set("DISPLAY") {
            Display::X11
        } else {
            Display::None
        }
    }
}

/// Why the X11 way cannot be used here, if it cannot.
pub fn x11_unusable(display: Display) -> Option<&'static str> {
    match display {
        Display::X11 => None,
        Display::Wayland => Some("Wayland lets no program grab keys for itself"),
        Display::None => Some("there is no display"),
    }
}

/// What Settings says when neither way gives a shortcut.
pub fn neither(portal: &str, x11: &str) -> String {
    format!(
        "No shortcut: the desktop offers no global-shortcuts portal ({portal}), and {x11}. \
         Bind the command `switchboard --quick-chat` to a key in your desktop's keyboard settings instead."
    )
}

/// How the shortcut is registered now.
enum Bound {
    None,
    /// With the portal: its session lives in a task, which ends (closing the session) when
    /// told to.
    Portal {
        stop: oneshot::Sender<()>,
    },
    /// With a key grab (released when dropped).
    X11 {
        _grab: crate::x11grab::KeyGrab,
    },
}

/// The quick chat's shortcut: registered, changed and turned off as the settings say.
pub struct QuickKeys {
    display: Display,
    open: Arc<dyn Fn() + Send + Sync>,
    /// The settings' shortcut as last applied (to do nothing when it did not change) and how.
    state: tokio::sync::Mutex<(Option<String>, Bound, QuickChatView)>,
    /// The number of the latest setting asked for ([`QuickKeys::ticket`]): an older one that
    /// gets its turn after it is skipped, so saves apply in the order they were made.
    latest: AtomicU64,
}

impl QuickKeys {
    /// `open` opens the quick chat; it is called on the thread the shortcut arrives on.
    pub fn new(display: Display, open: impl Fn() + Send + Sync + 'static) -> Arc<QuickKeys> {
        Arc::new(QuickKeys {
            display,
            open: Arc::new(open),
            state: tokio::sync::Mutex::new((None, Bound::None, QuickChatView::default())),
            latest: AtomicU64::new(0),
        })
    }

    /// Numbers a setting to apply, in the order the settings were saved: take it where the save
    /// happens, then pass it to [`QuickKeys::apply`].
    pub fn ticket(&self) -> u64 {
        self.latest.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Registers `wanted` (the setting; empty turns the shortcut off), replacing what was
    /// registered, and says how it went. Nothing happens when it did not change, and `None`
    /// when a newer setting was saved meanwhile (that one applies instead).
    pub async fn apply(&self, wanted: &str, ticket: u64) -> Option<QuickChatView> {
        let wanted = wanted.trim().to_owned();
        let mut state = self.state.lock().await;
        if ticket < self.latest.load(Ordering::SeqCst) {
            return None;
        }
        if state.0.as_deref() == Some(wanted.as_str()) {
            return Some(state.2.clone());
        }
        self.release(std::mem::replace(&mut state.1, Bound::None));
        let (bound, view) = if wanted.is_empty() {
            (
                Bound::None,
                QuickChatView {
                    problem: Some(
                        "Turned off: set a shortcut under Quick chat to open it from anywhere."
                            .into(),
                    ),
                    ..QuickChatView::default()
                },
            )
        } else {
            match Shortcut::parse(&wanted) {
                Ok(shortcut) => self.bind(&shortcut).await,
                Err(why) => (
                    Bound::None,
                    QuickChatView {
                        problem: Some(format!("{wanted:?} is not a shortcut: {why}")),
                        ..QuickChatView::default()
                    },
                ),
            }
        };
        match &view.problem {
            Some(problem) => tracing::warn!(%problem, "the quick chat has no shortcut"),
            None => {
                tracing::info!(shortcut = ?view.shortcut, via = ?view.via, "quick chat shortcut registered")
            }
        }
        *state = (Some(wanted), bound, view.clone());
        Some(view)
    }

    async fn bind(&self, shortcut: &Shortcut) -> (Bound, QuickChatView) {
        let portal = match self.bind_portal(shortcut).await {
            Ok((stop, trigger)) => {
                return (
                    Bound::Portal { stop },
                    QuickChatView {
                        shortcut: Some(trigger),
                        via: Some("portal".into()),
                        problem: None,
                    },
                )
            }
            Err(why) => why,
        };
        tracing::debug!(%portal, "no desktop portal for the quick chat's shortcut");
        if let Some(x11) = x11_unusable(self.display) {
            return (
                Bound::None,
                QuickChatView {
                    problem: Some(neither(&portal, x11)),
                    ..QuickChatView::default()
                },
            );
        }
        match self.grab(shortcut) {
            Ok(grab) => (
                Bound::X11 { _grab: grab },
                QuickChatView {
                    shortcut: Some(shortcut.to_string()),
                    via: Some("x11".into()),
                    problem: None,
                },
            ),
            Err(why) => (
                Bound::None,
                QuickChatView {
                    problem: Some(format!(
                        "{shortcut} could not be registered ({why}); another program may use it. Choose another under Quick chat."
                    )),
                    ..QuickChatView::default()
                },
            ),
        }
    }

    /// Binds the shortcut with the desktop portal and listens for it in a task of its own.
    /// Returns how to stop it and the trigger the desktop chose.
    async fn bind_portal(
        &self,
        shortcut: &Shortcut,
    ) -> Result<(oneshot::Sender<()>, String), String> {
        // A host program is known to the portal by the id of its .desktop file; a portal too old
        // for the registry goes on without it.
        if let Ok(id) = ashpd::AppID::try_from(APP_ID) {
            if let Err(e) = ashpd::register_host_app(id).await {
                tracing::debug!(error = %e, "not registered with the portal's registry");
            }
        }
        let probe = async {
            let portal = GlobalShortcuts::new().await?;
            let session = portal
                .create_session(CreateSessionOptions::default())
                .await?;
            Ok::<_, ashpd::Error>((portal, session))
        };
        let (portal, session) = match tokio::time::timeout(PORTAL_PROBE, probe).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => return Err(portal_error(&e)),
            Err(_) => return Err("it did not answer".into()),
        };
        let wanted = shortcut.portal_trigger();
        let request = NewShortcut::new(PORTAL_SHORTCUT, "Open Switchboard's quick chat")
            .preferred_trigger(wanted.as_str());
        // The desktop may ask the person first; that takes as long as they take, up to a limit,
        // so a dialog left open does not hold back the next change of the setting for ever.
        let requests = [request];
        let bind =
            portal.bind_shortcuts(&session, &requests, None, BindShortcutsOptions::default());
        let bound = match tokio::time::timeout(PORTAL_DIALOG, bind).await {
            Ok(answer) => answer
                .and_then(|r| r.response())
                .map_err(|e| portal_error(&e))?,
            Err(_) => {
                let _ = session.close().await;
                return Err(
                    "the desktop's shortcut dialog was not answered within 2 minutes".into(),
                );
            }
        };
        let trigger = bound
            .shortcuts()
            .iter()
            .find(|s| s.id() == PORTAL_SHORTCUT)
            .map(|s| s.trigger_description().to_owned())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| shortcut.to_string());
        let mut activated = portal
            .receive_activated()
            .await
            .map_err(|e| portal_error(&e))?;
        let (stop, stopped) = oneshot::channel();
        let open = Arc::clone(&self.open);
        crate::rt::spawn(async move {
            let listen = async {
                while let Some(event) = activated.next().await {
                    if event.shortcut_id() == PORTAL_SHORTCUT {
                        tracing::info!("quick chat shortcut (portal)");
                        open();
                    }
                }
            };
            tokio::select! {
                _ = listen => tracing::warn!("the portal's shortcut stream ended"),
                _ = stopped => {}
            }
            let _ = session.close().await;
        });
        Ok((stop, trigger))
    }

    /// Grabs the shortcut on the X server.
    fn grab(&self, shortcut: &Shortcut) -> Result<crate::x11grab::KeyGrab, String> {
        crate::x11grab::KeyGrab::new(shortcut, Arc::clone(&self.open))
    }

    fn release(&self, bound: Bound) {
        match bound {
            Bound::None => {}
            Bound::Portal { stop } => {
                let _ = stop.send(());
            }
            // Dropping the grab releases it.
            Bound::X11 { .. } => {}
        }
    }
}

/// A portal failure in words: a missing interface is the common case.
fn portal_error(error: &ashpd::Error) -> String {
    match error {
        ashpd::Error::PortalNotFound(_) => "not offered here".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two saves whose tasks run in the opposite order: the later save is what stays applied.
    #[tokio::test]
    async fn a_later_save_wins_whatever_order_the_tasks_run_in() {
        let keys = QuickKeys::new(Display::None, || {});
        let first = keys.ticket();
        let second = keys.ticket();
        let applied = keys.apply("", second).await.expect("the latest applies");
        assert!(applied.shortcut.is_none());
        assert!(applied
            .problem
            .as_deref()
            .unwrap_or("")
            .starts_with("Turned off"));
        assert!(
            keys.apply("Ctrl+", first).await.is_none(),
            "an older save arriving late is skipped"
        );
        let again = keys.apply("", keys.ticket()).await.expect("applies");
        assert_eq!(again.problem, applied.problem, "the later setting stayed");
    }

    #[test]
    fn the_session_kind_comes_from_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(Display::from_env(env(&[("DISPLAY", ":0")])), Display::X11);
        assert_eq!(
            Display::from_env(env(&[("DISPLAY", ":0"), ("WAYLAND_DISPLAY", "wayland-0")])),
            Display::Wayland,
            "XWayland's DISPLAY does not make a Wayland session X11"
        );
        assert_eq!(
            Display::from_env(env(&[("XDG_SESSION_TYPE", "wayland")])),
            Display::Wayland
        );
        assert_eq!(Display::from_env(env(&[("DISPLAY", "")])), Display::None);
        assert!(x11_unusable(Display::X11).is_none());
        let problem = neither(
            "not offered here",
            x11_unusable(Display::Wayland).unwrap_or(""),
        );
        assert!(
            problem.contains("switchboard --quick-chat") && problem.contains("Wayland"),
            "says why and what to do instead: {problem}"
        );
    }
}
