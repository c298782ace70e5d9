//! The tray: an icon per state and a menu that mirrors the engine.
//!
//! [`TrayModel`] is what the tray shows, computed from a [`Snapshot`] by a pure function; the
//! [`TrayMenu`] makes the platform tray show it, updating items in place (and rebuilding the menu
//! only when its shape changes: channels added or removed). Menu items are named by [`MenuId`].

use std::fmt;
use std::str::FromStr;

use switchboard_engine::config::ApprovalMode;
use tray_icon::menu::{CheckMenuItem, IsMenuItem, Menu, MenuEvent, MenuItem, PredefinedMenuItem};
use tray_icon::{Icon, TrayIcon, TrayIconBuilder};

use crate::activity::state_words;
use crate::views::{ConfigView, ServerState, Snapshot};

/// Every item of the tray menu that does something.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MenuId {
    /// The status line (opens the window).
    Status,
    /// Pending approvals and pairing requests: opens the window on the Approvals page (clickable
    /// while any wait).
    Approvals,
    /// Gateway running / paused.
    Gateway,
    /// A channel on or off.
    Channel(String),
    /// One of the approval modes.
    Mode(ApprovalMode),
    DoNotDisturb,
    /// A new desktop chat in the window.
    NewChat,
    /// The quick chat window.
    QuickChat,
    Open,
    Autostart,
    Quit,
}

impl fmt::Display for MenuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MenuId::Status => f.write_str("status"),
            MenuId::Approvals => f.write_str("approvals"),
            MenuId::Gateway => f.write_str("gateway"),
            MenuId::Channel(name) => write!(f, "channel:{name}"),
            MenuId::Mode(mode) => write!(f, "mode:{mode}"),
            MenuId::DoNotDisturb => f.write_str("dnd"),
            MenuId::NewChat => f.write_str("new-chat"),
            MenuId::QuickChat => f.write_str("quick-chat"),
            MenuId::Open => f.write_str("open"),
            MenuId::Autostart => f.write_str("autostart"),
            MenuId::Quit => f.write_str("quit"),
        }
    }
}

impl FromStr for MenuId {
    type Err = String;

    fn from_str(id: &str) -> Result<Self, Self::Err> {
        Ok(match id {
            "status" => MenuId::Status,
            "approvals" => MenuId::Approvals,
            "gateway" => MenuId::Gateway,
            "dnd" => MenuId::DoNotDisturb,
            "new-chat" => MenuId::NewChat,
            "quick-chat" => MenuId::QuickChat,
            "open" => MenuId::Open,
            "autostart" => MenuId::Autostart,
            "quit" => MenuId::Quit,
            other => match other.split_once(':') {
                Some(("channel", name)) if !name.is_empty() => MenuId::Channel(name.to_owned()),
                Some(("mode", mode)) => MenuId::Mode(mode.parse().map_err(|e| format!("{e}"))?),
                _ => return Err(format!("unknown tray menu item {other:?}")),
            },
        })
    }
}

/// The look of the tray icon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrayIconState {
    Idle,
    /// A run is active.
    Working,
    /// Something waits for the person: approvals, a stranger asking to talk to the agent, or the
    /// first-run setup.
    Attention,
    /// The server is unreachable, a channel fails, or the settings are wrong.
    Problem,
    Paused,
}

impl TrayIconState {
    /// The icon, an RGBA PNG from `icons/tray/` (drawn by `icons/generate.sh`).
    pub fn png(self) -> &'static [u8] {
        match self {
            TrayIconState::Idle => include_bytes!("../../icons/tray/idle.png"),
            TrayIconState::Working => include_bytes!("../../icons/tray/working.png"),
            TrayIconState::Attention => include_bytes!("../../icons/tray/attention.png"),
            TrayIconState::Problem => include_bytes!("../../icons/tray/problem.png"),
            TrayIconState::Paused => include_bytes!("../../icons/tray/paused.png"),
        }
    }
}

/// One channel's item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrayChannel {
    pub name: String,
    pub label: String,
    pub enabled: bool,
}

/// What the tray shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrayModel {
    pub icon: TrayIconState,
    pub status: String,
    pub approvals: usize,
    /// Strangers waiting to be admitted or refused.
    pub pairings: usize,
    /// The engine runs; without it the engine's toggles are greyed out.
    pub engine_running: bool,
    pub paused: bool,
    pub channels: Vec<TrayChannel>,
    pub mode: ApprovalMode,
    pub do_not_disturb: bool,
    pub autostart: bool,
}

/// What waits for the person, for the status line: "2 waiting for approval",
/// "1 asking to talk to the agent", or both.
fn waiting_words(approvals: usize, pairings: usize) -> String {
    let mut parts = Vec::new();
    if approvals > 0 {
        parts.push(format!("{approvals} waiting for approval"));
    }
    if pairings > 0 {
        parts.push(format!("{pairings} asking to talk to the agent"));
    }
    parts.join(" · ")
}

/// The approval modes in menu order, with their labels.
pub const MODES: [(ApprovalMode, &str); 4] = [
    (ApprovalMode::Ask, "Ask"),
    (ApprovalMode::Allowlist, "Allowlist"),
    (ApprovalMode::AllowAll, "Allow all"),
    (ApprovalMode::DenyAll, "Deny all"),
];

/// A channel's name as a label: `telegram` → `Telegram`.
pub fn title_case(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

impl TrayModel {
    pub fn from_snapshot(s: &Snapshot) -> TrayModel {
        let failing = s
            .channels
            .iter()
            .find(|c| c.enabled && c.state.is_problem());
        let server_problem = matches!(
            s.server.state,
            ServerState::Unreachable | ServerState::Unauthorized
        );
        let (icon, status) = match &s.config {
            ConfigView::Missing { .. } => (
                TrayIconState::Attention,
                "Not set up yet: open Switchboard to finish".to_owned(),
            ),
            ConfigView::Invalid { field, .. } => (
                TrayIconState::Problem,
                format!("Settings need fixing: {field}"),
            ),
            ConfigView::Loaded => {
                if let Some(error) = &s.engine_error {
                    (
                        TrayIconState::Problem,
                        format!("Cannot start: {}", crate::activity::preview(error, 60)),
                    )
                } else if server_problem {
                    let words = if s.server.state == ServerState::Unauthorized {
                        "refuses the token"
                    } else {
                        "unreachable"
                    };
                    (TrayIconState::Problem, format!("Agent server {words}"))
                } else if let Some(channel) = failing {
                    (
                        TrayIconState::Problem,
                        format!(
                            "{} is {}",
                            title_case(&channel.name),
                            state_words(channel.state)
                        ),
                    )
                } else if s.pending_approvals > 0 || s.pending_pairings > 0 {
                    (
                        TrayIconState::Attention,
                        waiting_words(s.pending_approvals, s.pending_pairings),
                    )
                } else if s.paused {
                    let waiting = if s.queued > 0 {
                        format!(" · {} waiting", s.queued)
                    } else {
                        String::new()
                    };
                    (TrayIconState::Paused, format!("Paused{waiting}"))
                } else if s.active_runs > 0 {
                    let runs = if s.active_runs == 1 {
                        "1 run".to_owned()
                    } else {
                        format!("{} runs", s.active_runs)
                    };
                    (TrayIconState::Working, format!("Working · {runs}"))
                } else {
                    let enabled = s.channels.iter().filter(|c| c.enabled).count();
                    let connected = s
                        .channels
                        .iter()
                        .filter(|c| {
                            c.enabled
                                && c.state == switchboard_engine::model::ChannelState::Connected
                        })
                        .count();
                    let channels = match enabled {
                        0 => "no channels on".to_owned(),
                        n => format!("{connected} of {n} channels connected"),
                    };
                    (TrayIconState::Idle, format!("Idle · {channels}"))
                }
            }
        };
        TrayModel {
            icon,
            status,
            approvals: s.pending_approvals,
            pairings: s.pending_pairings,
            engine_running: s.engine_running,
            paused: s.paused,
            channels: s
                .channels
                .iter()
                .map(|c| TrayChannel {
                    name: c.name.clone(),
                    label: format!("{} ({})", title_case(&c.name), state_words(c.state)),
                    enabled: c.enabled,
                })
                .collect(),
            mode: s.approval_mode,
            do_not_disturb: s.do_not_disturb,
            autostart: s.autostart,
        }
    }

    fn approvals_label(&self) -> String {
        if self.pairings == 0 {
            format!("Pending approvals ({})", self.approvals)
        } else {
            format!(
                "Pending approvals ({}) · pairing requests ({})",
                self.approvals, self.pairings
            )
        }
    }

    /// Whether the "Pending approvals" item can be clicked: when there is something to decide.
    pub fn approvals_enabled(&self) -> bool {
        self.engine_running && (self.approvals > 0 || self.pairings > 0)
    }

    /// Whether `other` needs a new menu rather than updated items.
    fn same_shape(&self, other: &TrayModel) -> bool {
        self.engine_running == other.engine_running
            && self.channels.len() == other.channels.len()
            && self
                .channels
                .iter()
                .zip(&other.channels)
                .all(|(a, b)| a.name == b.name)
    }
}

/// The items that change, kept to update them in place.
struct Items {
    status: MenuItem,
    approvals: MenuItem,
    gateway: CheckMenuItem,
    channels: Vec<CheckMenuItem>,
    modes: Vec<(ApprovalMode, CheckMenuItem)>,
    dnd: CheckMenuItem,
    autostart: CheckMenuItem,
}

/// The platform tray icon (a StatusNotifierItem through libappindicator) and its menu. It lives
/// on the thread that runs GTK's main loop.
pub struct TrayMenu {
    tray: TrayIcon,
    items: Items,
    shown: TrayModel,
    /// The session bus connection the menu is served on, with our filter that sees it opened.
    opened_filter: Option<(gtk::gio::DBusConnection, gtk::gio::FilterId)>,
}

impl Drop for TrayMenu {
    fn drop(&mut self) {
        if let Some((connection, filter)) = self.opened_filter.take() {
            connection.remove_filter(filter);
        }
    }
}

/// The dbusmenu interface a tray host reads the menu through.
const DBUSMENU: &str = "com.canonical.dbusmenu";

/// Whether `message` is a tray host opening the menu: `AboutToShow` of the root (what hosts ask
/// before they show it), or the `opened` event.
fn opens_menu(message: &gtk::gio::DBusMessage) -> bool {
    use gtk::glib::Variant;
    if message.message_type() != gtk::gio::DBusMessageType::MethodCall
        || message.interface().as_deref() != Some(DBUSMENU)
    {
        return false;
    }
    let Some(body) = message.body() else {
        return false;
    };
    let opened = |event: &Variant| {
        event.try_child_value(0).and_then(|id| id.get::<i32>()) == Some(0)
            && event
                .try_child_value(1)
                .and_then(|name| name.get::<String>())
                .as_deref()
                == Some("opened")
    };
    match message.member().as_deref() {
        Some("AboutToShow") => body.try_child_value(0).and_then(|id| id.get::<i32>()) == Some(0),
        Some("AboutToShowGroup") => body
            .try_child_value(0)
            .and_then(|ids| ids.get::<Vec<i32>>())
            .is_some_and(|ids| ids.contains(&0)),
        Some("Event") => opened(&body),
        Some("EventGroup") => body
            .try_child_value(0)
            .is_some_and(|events| events.iter().any(|event| opened(&event))),
        _ => false,
    }
}

/// Why the tray cannot show something.
#[derive(Debug, thiserror::Error)]
pub enum TrayError {
    #[error("the tray icon's picture cannot be read: {0}")]
    Icon(String),
    #[error(transparent)]
    Tray(#[from] tray_icon::Error),
    #[error("no AppIndicator library: install libayatana-appindicator3-1")]
    NoIndicator,
}

/// The icon for `state`, decoded from its PNG.
fn icon(state: TrayIconState) -> Result<Icon, TrayError> {
    let bad = |e: &dyn fmt::Display| TrayError::Icon(e.to_string());
    let mut reader = png::Decoder::new(std::io::Cursor::new(state.png()))
        .read_info()
        .map_err(|e| bad(&e))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| bad(&"too large"))?;
    let mut pixels = vec![0; size];
    let frame = reader.next_frame(&mut pixels).map_err(|e| bad(&e))?;
    if frame.color_type != png::ColorType::Rgba || frame.bit_depth != png::BitDepth::Eight {
        return Err(bad(&"not 8-bit RGBA"));
    }
    pixels.truncate(frame.buffer_size());
    Icon::from_rgba(pixels, frame.width, frame.height).map_err(|e| bad(&e))
}

fn build_menu(model: &TrayModel) -> (Menu, Items) {
    let id = |id: MenuId| id.to_string();
    let running = model.engine_running;
    let status = MenuItem::with_id(id(MenuId::Status), &model.status, true, None);
    let approvals = MenuItem::with_id(
        id(MenuId::Approvals),
        model.approvals_label(),
        model.approvals_enabled(),
        None,
    );
    let gateway = CheckMenuItem::with_id(
        id(MenuId::Gateway),
        "Gateway running",
        running,
        !model.paused,
        None,
    );
    let channels: Vec<CheckMenuItem> = model
        .channels
        .iter()
        .map(|c| {
            CheckMenuItem::with_id(
                id(MenuId::Channel(c.name.clone())),
                &c.label,
                running,
                c.enabled,
                None,
            )
        })
        .collect();
    let mode_header = MenuItem::new("Approval mode", false, None);
    let modes: Vec<(ApprovalMode, CheckMenuItem)> = MODES
        .iter()
        .map(|(mode, label)| {
            let item = CheckMenuItem::with_id(
                id(MenuId::Mode(*mode)),
                *label,
                running,
                model.mode == *mode,
                None,
            );
            (*mode, item)
        })
        .collect();
    let dnd = CheckMenuItem::with_id(
        id(MenuId::DoNotDisturb),
        "Do not disturb",
        true,
        model.do_not_disturb,
        None,
    );
    let autostart = CheckMenuItem::with_id(
        id(MenuId::Autostart),
        "Launch at login",
        true,
        model.autostart,
        None,
    );
    let new_chat = MenuItem::with_id(id(MenuId::NewChat), "New chat…", running, None);
    let quick_chat = MenuItem::with_id(id(MenuId::QuickChat), "Quick chat…", running, None);
    let open = MenuItem::with_id(id(MenuId::Open), "Open Switchboard", true, None);
    let quit = MenuItem::with_id(id(MenuId::Quit), "Quit Switchboard", true, None);
    let separators: Vec<PredefinedMenuItem> =
        (0..4).map(|_| PredefinedMenuItem::separator()).collect();

    let mut entries: Vec<&dyn IsMenuItem> = vec![
        &status,
        &approvals,
        &new_chat,
        &quick_chat,
        &separators[0],
        &gateway,
    ];
    entries.extend(channels.iter().map(|c| c as &dyn IsMenuItem));
    entries.push(&separators[1]);
    entries.push(&mode_header);
    entries.extend(modes.iter().map(|(_, item)| item as &dyn IsMenuItem));
    entries.extend([
        &separators[2] as &dyn IsMenuItem,
        &dnd,
        &autostart,
        &separators[3],
        &open,
        &quit,
    ]);
    let menu = Menu::new();
    for entry in entries {
        // Appending fails only for a submenu item appended to itself.
        if let Err(error) = menu.append(entry) {
            tracing::warn!(%error, "cannot add an item to the tray menu");
        }
    }
    (
        menu,
        Items {
            status,
            approvals,
            gateway,
            channels,
            modes,
            dnd,
            autostart,
        },
    )
}

impl TrayMenu {
    /// Creates the tray icon showing `model`, on the thread running GTK's main loop. Clicks arrive
    /// at `on_click` with their [`MenuId`] (on that thread).
    pub fn create(
        model: TrayModel,
        on_click: impl Fn(MenuId) + Send + Sync + 'static,
    ) -> Result<Self, TrayError> {
        let (menu, items) = build_menu(&model);
        MenuEvent::set_event_handler(Some(move |event: MenuEvent| {
            match event.id().as_ref().parse::<MenuId>() {
                Ok(id) => on_click(id),
                Err(error) => tracing::warn!(%error, "a click on an unknown tray menu item"),
            }
        }));
        let builder = TrayIconBuilder::new()
            .with_id("switchboard")
            .with_icon(icon(model.icon)?)
            .with_tooltip(format!("Switchboard: {}", model.status))
            .with_menu(Box::new(menu))
            .with_menu_on_left_click(true);
        // The indicator library is loaded on first use, and its loader panics when the system
        // has none (the package depends on it; a build run from elsewhere may lack it).
        let tray = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.build()))
            .map_err(|_| TrayError::NoIndicator)??;
        Ok(TrayMenu {
            tray,
            items,
            shown: model,
            opened_filter: None,
        })
    }

    /// Calls `on_opened` when a tray host opens the menu, a moment before the person picks an
    /// item (on GDBus's own thread: keep it short). The menu is served by libappindicator on the
    /// process's shared session bus connection, whose messages a filter sees.
    pub fn on_opened(&mut self, on_opened: impl Fn() + Send + Sync + 'static) {
        let connection =
            match gtk::gio::bus_get_sync(gtk::gio::BusType::Session, gtk::gio::Cancellable::NONE) {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::debug!(%error, "no session bus: the menu's opening is not seen");
                    return;
                }
            };
        let filter = connection.add_filter(move |_, message, incoming| {
            if incoming && opens_menu(message) {
                on_opened();
            }
            Some(message.clone())
        });
        self.opened_filter = Some((connection, filter));
    }

    /// Makes the tray show `model`. `force` sets every item even when the model did not change
    /// (after a click, the platform may already have toggled the clicked item by itself).
    pub fn apply(&mut self, model: &TrayModel, force: bool) -> Result<(), TrayError> {
        if !force && *model == self.shown {
            return Ok(());
        }
        if model.icon != self.shown.icon {
            self.tray.set_icon(Some(icon(model.icon)?))?;
        }
        if model.status != self.shown.status {
            self.tray
                .set_tooltip(Some(format!("Switchboard: {}", model.status)))?;
        }
        if !model.same_shape(&self.shown) {
            let (menu, items) = build_menu(model);
            self.tray.set_menu(Some(Box::new(menu)));
            self.items = items;
        } else {
            let items = &self.items;
            items.status.set_text(&model.status);
            items.approvals.set_text(model.approvals_label());
            items.approvals.set_enabled(model.approvals_enabled());
            items.gateway.set_checked(!model.paused);
            for (item, channel) in items.channels.iter().zip(&model.channels) {
                item.set_text(&channel.label);
                item.set_checked(channel.enabled);
            }
            for (mode, item) in &items.modes {
                item.set_checked(model.mode == *mode);
            }
            items.dnd.set_checked(model.do_not_disturb);
            items.autostart.set_checked(model.autostart);
        }
        self.shown = model.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::{Page, ServerView};
    use switchboard_engine::model::{ChannelState, ChannelStatus};

    fn call(interface: &str, member: &str, body: gtk::glib::Variant) -> gtk::gio::DBusMessage {
        let message = gtk::gio::DBusMessage::new_method_call(
            Some(":1.7"),
            "/org/ayatana/NotificationItem/switchboard/Menu",
            Some(interface),
            member,
        );
        message.set_body(&body);
        message
    }

    #[test]
    fn the_menu_is_seen_opening_by_what_a_host_asks_before_showing_it() {
        use gtk::glib::{ToVariant, Variant};
        let event = |id: i32, name: &str| {
            (
                id,
                name.to_owned(),
                Variant::from_variant(&0i32.to_variant()),
                0u32,
            )
        };
        let opening = [
            call(DBUSMENU, "AboutToShow", (0i32,).to_variant()),
            call(DBUSMENU, "AboutToShowGroup", (vec![3i32, 0],).to_variant()),
            call(DBUSMENU, "Event", event(0, "opened").to_variant()),
            call(
                DBUSMENU,
                "EventGroup",
                (vec![event(4, "hovered"), event(0, "opened")],).to_variant(),
            ),
        ];
        for message in &opening {
            assert!(opens_menu(message), "{message:?}");
        }
        let not_opening = [
            // A submenu, a click, a closing, the layout read at any time, another interface.
            call(DBUSMENU, "AboutToShow", (5i32,).to_variant()),
            call(DBUSMENU, "Event", event(3, "clicked").to_variant()),
            call(DBUSMENU, "Event", event(0, "closed").to_variant()),
            call(
                DBUSMENU,
                "GetLayout",
                (0i32, -1i32, vec!["label"]).to_variant(),
            ),
            call(
                "org.kde.StatusNotifierItem",
                "AboutToShow",
                (0i32,).to_variant(),
            ),
            // A malformed body is no opening, and no panic.
            call(DBUSMENU, "AboutToShow", ("zero",).to_variant()),
            call(DBUSMENU, "EventGroup", (vec![1i32],).to_variant()),
        ];
        for message in &not_opening {
            assert!(!opens_menu(message), "{message:?}");
        }
    }

    #[test]
    fn menu_ids_round_trip() {
        let ids = [
            MenuId::Status,
            MenuId::Approvals,
            MenuId::Gateway,
            MenuId::Channel("telegram".into()),
            MenuId::Mode(ApprovalMode::AllowAll),
            MenuId::Mode(ApprovalMode::Ask),
            MenuId::DoNotDisturb,
            MenuId::NewChat,
            MenuId::QuickChat,
            MenuId::Open,
            MenuId::Autostart,
            MenuId::Quit,
        ];
        for id in ids {
            assert_eq!(id.to_string().parse::<MenuId>(), Ok(id.clone()), "{id}");
        }
        assert_eq!(
            MenuId::Mode(ApprovalMode::DenyAll).to_string(),
            "mode:deny_all"
        );
        assert!("mode:sometimes".parse::<MenuId>().is_err());
        assert!("channel:".parse::<MenuId>().is_err());
        assert!("paste".parse::<MenuId>().is_err());
    }

    fn channel(name: &str, enabled: bool, state: ChannelState) -> ChannelStatus {
        ChannelStatus {
            name: name.into(),
            enabled,
            state,
            identity: None,
            last_error: None,
            last_activity_ms: None,
            received: 0,
            sent: 0,
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            seq: 1,
            about: crate::views::About {
                version: "0.1.0".into(),
                data_dir: "/tmp/data".into(),
                log_dir: "/tmp/logs".into(),
            },
            config_file: "/tmp/config.toml".into(),
            config: ConfigView::Loaded,
            engine_running: true,
            engine_error: None,
            server: ServerView {
                url: "http://127.0.0.1:4096".into(),
                state: ServerState::Ok,
                detail: None,
            },
            paused: false,
            approval_mode: ApprovalMode::Ask,
            channels: vec![
                channel("telegram", true, ChannelState::Connected),
                channel("slack", false, ChannelState::Disabled),
            ],
            conversations: 0,
            active_runs: 0,
            queued: 0,
            pending_approvals: 0,
            pending_pairings: 0,
            do_not_disturb: false,
            quiet_now: false,
            autostart: false,
            api_addr: None,
            autopilot_lines: None,
            start_page: Page::Channels,
            demo: false,
            quick_chat: Default::default(),
        }
    }

    /// A change to the snapshot, and the icon and status line it must give.
    type Case = (Box<dyn Fn(&mut Snapshot)>, TrayIconState, &'static str);

    #[test]
    fn the_icon_and_status_line_follow_the_engine() {
        let cases: Vec<Case> = vec![
            (
                Box::new(|_| {}),
                TrayIconState::Idle,
                "Idle · 1 of 1 channels connected",
            ),
            (
                Box::new(|s| s.active_runs = 2),
                TrayIconState::Working,
                "Working · 2 runs",
            ),
            (
                Box::new(|s| {
                    s.paused = true;
                    s.queued = 3;
                    s.active_runs = 1;
                }),
                TrayIconState::Paused,
                "Paused · 3 waiting",
            ),
            (
                Box::new(|s| {
                    s.pending_approvals = 2;
                    s.paused = true;
                }),
                TrayIconState::Attention,
                "2 waiting for approval",
            ),
            (
                Box::new(|s| s.pending_pairings = 1),
                TrayIconState::Attention,
                "1 asking to talk to the agent",
            ),
            (
                Box::new(|s| {
                    s.pending_approvals = 2;
                    s.pending_pairings = 3;
                }),
                TrayIconState::Attention,
                "2 waiting for approval · 3 asking to talk to the agent",
            ),
            (
                Box::new(|s| {
                    s.pending_pairings = 1;
                    s.server.state = ServerState::Unreachable;
                }),
                TrayIconState::Problem,
                "Agent server unreachable",
            ),
            (
                Box::new(|s| s.channels[0].state = ChannelState::AuthFailed),
                TrayIconState::Problem,
                "Telegram is refusing the credentials",
            ),
            (
                Box::new(|s| s.server.state = ServerState::Unreachable),
                TrayIconState::Problem,
                "Agent server unreachable",
            ),
            (
                Box::new(|s| {
                    s.config = ConfigView::Missing {
                        missing: vec![],
                        autopilot: None,
                    }
                }),
                TrayIconState::Attention,
                "Not set up yet: open Switchboard to finish",
            ),
            (
                Box::new(|s| {
                    s.config = ConfigView::Invalid {
                        field: "gateway.approval_mode".into(),
                        message: "…".into(),
                    }
                }),
                TrayIconState::Problem,
                "Settings need fixing: gateway.approval_mode",
            ),
            (
                Box::new(|s| s.channels[1].state = ChannelState::AuthFailed),
                TrayIconState::Idle,
                "Idle · 1 of 1 channels connected",
            ),
        ];
        for (change, icon, status) in cases {
            let mut s = snapshot();
            change(&mut s);
            let model = TrayModel::from_snapshot(&s);
            assert_eq!((model.icon, model.status.as_str()), (icon, status));
        }
    }

    #[test]
    fn the_menu_mirrors_channels_and_toggles() {
        let mut s = snapshot();
        s.approval_mode = ApprovalMode::AllowAll;
        s.do_not_disturb = true;
        let model = TrayModel::from_snapshot(&s);
        assert_eq!(
            model.channels,
            vec![
                TrayChannel {
                    name: "telegram".into(),
                    label: "Telegram (connected)".into(),
                    enabled: true
                },
                TrayChannel {
                    name: "slack".into(),
                    label: "Slack (off)".into(),
                    enabled: false
                },
            ]
        );
        assert_eq!(model.mode, ApprovalMode::AllowAll);
        assert!(model.do_not_disturb);
        let mut other = s.clone();
        other.channels[0].state = ChannelState::Reconnecting;
        assert!(
            model.same_shape(&TrayModel::from_snapshot(&other)),
            "a state change updates items in place"
        );
        other.channels.pop();
        assert!(
            !model.same_shape(&TrayModel::from_snapshot(&other)),
            "a removed channel needs a new menu"
        );
    }

    #[test]
    fn the_approvals_item_shows_the_count_and_opens_when_any_wait() {
        let mut s = snapshot();
        let none = TrayModel::from_snapshot(&s);
        assert_eq!(none.approvals_label(), "Pending approvals (0)");
        assert!(!none.approvals_enabled(), "nothing to open");
        s.pending_approvals = 3;
        let some = TrayModel::from_snapshot(&s);
        assert_eq!(some.approvals_label(), "Pending approvals (3)");
        assert!(some.approvals_enabled());
        assert_eq!(some.icon, TrayIconState::Attention, "needs attention");
        assert!(some.same_shape(&none), "the item is updated in place");
        s.engine_running = false;
        assert!(!TrayModel::from_snapshot(&s).approvals_enabled());
    }

    #[test]
    fn the_approvals_item_counts_pairing_requests_too() {
        let mut s = snapshot();
        s.pending_pairings = 2;
        let model = TrayModel::from_snapshot(&s);
        assert_eq!(
            model.approvals_label(),
            "Pending approvals (0) · pairing requests (2)"
        );
        assert!(model.approvals_enabled(), "opens the list of strangers");
        assert_eq!(model.icon, TrayIconState::Attention);
        assert!(
            model.same_shape(&TrayModel::from_snapshot(&snapshot())),
            "the item is updated in place"
        );
    }

    #[test]
    fn every_tray_icon_is_an_rgba_png() {
        for state in [
            TrayIconState::Idle,
            TrayIconState::Working,
            TrayIconState::Attention,
            TrayIconState::Problem,
            TrayIconState::Paused,
        ] {
            let png = state.png();
            assert_eq!(&png[1..4], b"PNG", "{state:?}");
            // IHDR: width, height, bit depth, colour type (6 = RGBA) at bytes 16..26.
            assert_eq!(png[25], 6, "{state:?} must be RGBA");
        }
    }
}
