//! The app's tray as a desktop sees it: the StatusNotifierItem registered with the watcher and
//! its dbusmenu, read with `GetLayout` and clicked with `Event`, through `gdbus`.

use std::time::Duration;

use crate::env::{gdbus_call, wait_until};

/// One item of the menu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuItem {
    pub id: i32,
    pub label: String,
    /// 1 checked, 0 unchecked; `None` for items that are not check items.
    pub toggle_state: Option<i32>,
    pub enabled: bool,
}

/// The app's tray menu on the bus.
pub struct Tray {
    pub bus_name: String,
    pub menu_path: String,
}

impl Tray {
    /// Waits for the app's item to be registered and finds its menu.
    pub fn find() -> Tray {
        let mut found = None;
        let result = wait_until(
            "the tray item registered with the StatusNotifier watcher",
            Duration::from_secs(20),
            || {
                found = registered_items().into_iter().rev().find_map(|item| {
                    let bus_name = item.split('/').next().unwrap_or_default().to_owned();
                    menu_of(&item).map(|menu| (bus_name, menu))
                });
                found.is_some()
            },
        );
        if let Err(e) = result {
            panic!("{e}; registered: {:?}", registered_items());
        }
        let (bus_name, menu_path) = found.unwrap_or_default();
        Tray {
            bus_name,
            menu_path,
        }
    }

    pub fn layout(&self) -> Vec<MenuItem> {
        match gdbus_call(
            &self.bus_name,
            &self.menu_path,
            "com.canonical.dbusmenu.GetLayout",
            &["0", "-1", "['label', 'toggle-state', 'enabled']"],
        ) {
            Ok(text) => parse_layout(&text),
            Err(e) => panic!("GetLayout failed: {e}"),
        }
    }

    /// The first item whose label starts with `prefix`.
    pub fn item(&self, prefix: &str) -> MenuItem {
        let layout = self.layout();
        match layout.iter().find(|item| item.label.starts_with(prefix)) {
            Some(item) => item.clone(),
            None => panic!("no tray item starting with {prefix:?} in {layout:#?}"),
        }
    }

    /// Clicks the item whose label starts with `prefix`, as a tray host does.
    pub fn click(&self, prefix: &str) {
        let item = self.item(prefix);
        if let Err(e) = gdbus_call(
            &self.bus_name,
            &self.menu_path,
            "com.canonical.dbusmenu.Event",
            &[&item.id.to_string(), "clicked", "<int32 0>", "0"],
        ) {
            panic!("clicking {prefix:?} failed: {e}");
        }
    }

    /// Opens the menu as a tray host does before showing it (`AboutToShow` of the root).
    pub fn open_menu(&self) {
        if let Err(e) = gdbus_call(
            &self.bus_name,
            &self.menu_path,
            "com.canonical.dbusmenu.AboutToShow",
            &["0"],
        ) {
            panic!("opening the menu failed: {e}");
        }
    }

    /// Waits until the item starting with `prefix` satisfies `check`.
    pub fn wait_item(
        &self,
        what: &str,
        prefix: &str,
        check: impl Fn(&MenuItem) -> bool,
    ) -> MenuItem {
        let mut last = None;
        let result = wait_until(what, Duration::from_secs(15), || {
            last = self
                .layout()
                .into_iter()
                .find(|item| item.label.starts_with(prefix));
            last.as_ref().is_some_and(&check)
        });
        if let Err(e) = result {
            panic!("{e}; the item is {last:?}");
        }
        last.unwrap_or_else(|| unreachable!("checked above"))
    }
}

/// The bus names of the registered items (`:1.8`, or `:1.8/path` with some hosts).
fn registered_items() -> Vec<String> {
    let reply = gdbus_call(
        "org.kde.StatusNotifierWatcher",
        "/StatusNotifierWatcher",
        "org.freedesktop.DBus.Properties.Get",
        &[
            "org.kde.StatusNotifierWatcher",
            "RegisteredStatusNotifierItems",
        ],
    )
    .unwrap_or_default();
    quoted_strings(&reply)
}

/// The menu object path of a registered item: the item object is found by introspection (the
/// ayatana library puts it under `/org/ayatana/NotificationItem/…`).
fn menu_of(registered: &str) -> Option<String> {
    let (name, path) = match registered.split_once('/') {
        Some((name, path)) => (name.to_owned(), Some(format!("/{path}"))),
        None => (registered.to_owned(), None),
    };
    let item_path = match path {
        Some(path) => path,
        None => {
            let output = std::process::Command::new("gdbus")
                .args([
                    "introspect",
                    "--session",
                    "--dest",
                    &name,
                    "--object-path",
                    "/",
                    "--recurse",
                ])
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            item_object(&text)?
        }
    };
    let reply = gdbus_call(
        &name,
        &item_path,
        "org.freedesktop.DBus.Properties.Get",
        &["org.kde.StatusNotifierItem", "Menu"],
    )
    .ok()?;
    let menu = reply
        .split("objectpath '")
        .nth(1)?
        .split('\'')
        .next()?
        .to_owned();
    // Only the app's own item: the library names its object after the tray id.
    item_path.contains("switchboard").then_some(menu)
}

/// The object path of the node implementing `org.kde.StatusNotifierItem` in introspection text.
fn item_object(introspection: &str) -> Option<String> {
    let mut current = None;
    for line in introspection.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("node ") {
            current = Some(rest.trim_end_matches('{').trim().to_owned());
        } else if line.starts_with("interface org.kde.StatusNotifierItem") {
            return current;
        }
    }
    None
}

fn quoted_strings(text: &str) -> Vec<String> {
    text.split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Reads the items of a `GetLayout` reply in GVariant text:
/// `(uint32 3, (0, {…}, [<(19, {'label': <'Idle'>, 'enabled': <true>}, @av [])>, …]))`.
pub fn parse_layout(text: &str) -> Vec<MenuItem> {
    let chars: Vec<char> = text.chars().collect();
    let mut items = Vec::new();
    let mut i = 0;
    while i + 1 < chars.len() {
        // An item starts with "<(" then its id.
        if chars[i] == '<' && chars[i + 1] == '(' {
            let mut j = i + 2;
            let mut digits = String::new();
            while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == '-') {
                digits.push(chars[j]);
                j += 1;
            }
            if let (Ok(id), Some(end)) = (digits.parse::<i32>(), properties_end(&chars, j)) {
                let props: String = chars[j..end].iter().collect();
                items.push(MenuItem {
                    id,
                    label: string_property(&props, "label").unwrap_or_default(),
                    toggle_state: number_property(&props, "toggle-state"),
                    enabled: !props.contains("'enabled': <false>"),
                });
                i = end;
                continue;
            }
        }
        i += 1;
    }
    items
}

/// Where an item's properties dictionary ends (its closing `}`), skipping quoted text.
fn properties_end(chars: &[char], from: usize) -> Option<usize> {
    let mut depth = 0;
    let mut quoted = false;
    let mut i = from;
    while i < chars.len() {
        match chars[i] {
            '\\' if quoted => i += 1,
            '\'' => quoted = !quoted,
            '{' if !quoted => depth += 1,
            '}' if !quoted => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn string_property(props: &str, name: &str) -> Option<String> {
    let start = props.find(&format!("'{name}': <'"))? + name.len() + 6;
    let mut out = String::new();
    let mut chars = props[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '\'' => return Some(out),
            c => out.push(c),
        }
    }
    None
}

fn number_property(props: &str, name: &str) -> Option<i32> {
    let start = props.find(&format!("'{name}': <"))? + name.len() + 5;
    props[start..].split('>').next()?.trim().parse().ok()
}

#[test]
fn the_layout_is_read_from_gvariant_text() {
    let text = "(uint32 3, (0, {'label': <'Label Empty'>}, [<(19, {'label': <'Idle · no channels on'>, 'enabled': <true>}, @av [])>, \
                <(20, {'label': <'Pending approvals (0)'>, 'enabled': <false>}, @av [])>, <(21, @a{sv} {}, @av [])>, \
                <(22, {'label': <'Telegram (connected)'>, 'toggle-state': <1>}, @av [])>, <(27, {'label': <'It\\'s {odd}'>, 'toggle-state': <0>}, @av [])>]))";
    let items = parse_layout(text);
    assert_eq!(
        items,
        vec![
            MenuItem {
                id: 19,
                label: "Idle · no channels on".into(),
                toggle_state: None,
                enabled: true
            },
            MenuItem {
                id: 20,
                label: "Pending approvals (0)".into(),
                toggle_state: None,
                enabled: false
            },
            MenuItem {
                id: 21,
                label: String::new(),
                toggle_state: None,
                enabled: true
            },
            MenuItem {
                id: 22,
                label: "Telegram (connected)".into(),
                toggle_state: Some(1),
                enabled: true
            },
            MenuItem {
                id: 27,
                label: "It's {odd}".into(),
                toggle_state: Some(0),
                enabled: true
            },
        ]
    );
}
