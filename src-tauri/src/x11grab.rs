//! The quick chat's shortcut as a key grab on the X server, for X11 sessions without the desktop
//! portal. A thread of its own sleeps in the X connection until a key press arrives, so an idle
//! app never wakes for it (the crate this replaced polled the connection twenty times a second).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use switchboard_engine::config::Shortcut;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    ClientMessageEvent, ConnectionExt as _, CreateWindowAux, EventMask, GrabMode, ModMask, Window,
    WindowClass,
};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;

/// A grabbed key: pressing it anywhere calls `open` on the grab's thread. Dropping it releases
/// the grab and ends the thread.
pub struct KeyGrab {
    conn: Arc<RustConnection>,
    root: Window,
    /// A window of our own, never shown, to wake the thread with a message when it must end.
    waker: Window,
    keycode: u8,
    modifiers: ModMask,
    stop: Arc<AtomicBool>,
}

/// The lock keys' modifiers, which X counts in a key's state: the grab is made with each
/// combination of them, or Caps Lock or Num Lock being on would stop the shortcut.
fn lock_variants() -> [ModMask; 4] {
    [
        ModMask::from(0u16),
        ModMask::LOCK,
        ModMask::M2,
        ModMask::LOCK | ModMask::M2,
    ]
}

impl KeyGrab {
    /// Grabs `shortcut` on the default display's root window.
    pub fn new(shortcut: &Shortcut, open: Arc<dyn Fn() + Send + Sync>) -> Result<KeyGrab, String> {
        let keysym = keysym(&shortcut.key)
            .ok_or_else(|| format!("{} cannot be grabbed on X11", shortcut.key))?;
        let (conn, screen) =
            x11rb::connect(None).map_err(|e| format!("cannot reach the X server: {e}"))?;
        let conn = Arc::new(conn);
        let root = conn.setup().roots[screen].root;
        let keycode = keycode_of(&conn, keysym)?
            .ok_or_else(|| format!("no key on this keyboard types {}", shortcut.key))?;
        let mut modifiers = ModMask::from(0u16);
        for (on, modifier) in [
            (shortcut.ctrl, ModMask::CONTROL),
            (shortcut.alt, ModMask::M1),
            (shortcut.shift, ModMask::SHIFT),
            (shortcut.logo, ModMask::M4),
        ] {
            if on {
                modifiers |= modifier;
            }
        }
        for extra in lock_variants() {
            conn.grab_key(
                true,
                root,
                modifiers | extra,
                keycode,
                GrabMode::ASYNC,
                GrabMode::ASYNC,
            )
            .map_err(|e| e.to_string())?
            .check()
            .map_err(|e| e.to_string())?;
        }
        let waker = conn.generate_id().map_err(|e| e.to_string())?;
        conn.create_window(
            0,
            waker,
            root,
            0,
            0,
            1,
            1,
            0,
            WindowClass::INPUT_ONLY,
            0,
            &CreateWindowAux::new(),
        )
        .map_err(|e| e.to_string())?
        .check()
        .map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let listening = Arc::clone(&conn);
        let stopped = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("quick-chat-keys".into())
            .spawn(move || loop {
                match listening.wait_for_event() {
                    Ok(Event::KeyPress(press)) if press.detail == keycode => {
                        tracing::info!("quick chat shortcut (X11)");
                        open();
                    }
                    Ok(_) if stopped.load(Ordering::SeqCst) => return,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "the X server connection of the quick chat's shortcut ended");
                        return;
                    }
                }
            })
            .map_err(|e| format!("cannot start the key grab's thread: {e}"))?;
        Ok(KeyGrab {
            conn,
            root,
            waker,
            keycode,
            modifiers,
            stop,
        })
    }
}

impl Drop for KeyGrab {
    fn drop(&mut self) {
        for extra in lock_variants() {
            let _ = self
                .conn
                .ungrab_key(self.keycode, self.root, self.modifiers | extra);
        }
        self.stop.store(true, Ordering::SeqCst);
        let wake = ClientMessageEvent::new(32, self.waker, 0u32, [0u32; 5]);
        let _ = self
            .conn
            .send_event(false, self.waker, EventMask::NO_EVENT, wake);
        let _ = self.conn.destroy_window(self.waker);
        let _ = self.conn.flush();
    }
}

/// The keycode that types `keysym` on this keyboard, if any.
fn keycode_of(conn: &RustConnection, keysym: u32) -> Result<Option<u8>, String> {
    let setup = conn.setup();
    let (first, last) = (setup.min_keycode, setup.max_keycode);
    let mapping = conn
        .get_keyboard_mapping(first, last - first + 1)
        .map_err(|e| e.to_string())?
        .reply()
        .map_err(|e| e.to_string())?;
    let per = usize::from(mapping.keysyms_per_keycode.max(1));
    Ok(mapping
        .keysyms
        .chunks(per)
        .position(|syms| syms.contains(&keysym))
        .and_then(|index| u8::try_from(usize::from(first) + index).ok()))
}

/// The X keysym of a key as the settings name it (`K`, `7`, `F5`, `Space`, `Slash`…).
pub fn keysym(key: &str) -> Option<u32> {
    let mut chars = key.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        return match c {
            // Letters are grabbed by their lower-case keysym (the key, not the character).
            'A'..='Z' | 'a'..='z' => Some(u32::from(c.to_ascii_lowercase())),
            '0'..='9' => Some(u32::from(c)),
            _ => None,
        };
    }
    if let Some(n) = key.strip_prefix('F').and_then(|n| n.parse::<u32>().ok()) {
        return (1..=12).contains(&n).then(|| 0xffbe + n - 1);
    }
    Some(match key {
        "Space" => 0x20,
        "Enter" => 0xff0d,
        "Tab" => 0xff09,
        "Backspace" => 0xff08,
        "Escape" => 0xff1b,
        "Slash" => 0x2f,
        "Period" => 0x2e,
        "Comma" => 0x2c,
        "Minus" => 0x2d,
        "Equal" => 0x3d,
        "Semicolon" => 0x3b,
        "Quote" => 0x27,
        "Backquote" => 0x60,
        "BracketLeft" => 0x5b,
        "BracketRight" => 0x5d,
        "Backslash" => 0x5c,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::keysym;

    #[test]
    fn every_key_the_settings_accept_has_its_x_keysym() {
        for (key, sym) in [
            ("K", 0x6b),
            ("A", 0x61),
            ("7", 0x37),
            ("F1", 0xffbe),
            ("F12", 0xffc9),
            ("Space", 0x20),
            ("Enter", 0xff0d),
            ("Backquote", 0x60),
            ("Backslash", 0x5c),
        ] {
            assert_eq!(keysym(key), Some(sym), "{key}");
        }
        assert_eq!(keysym("F13"), None);
        assert_eq!(keysym("Hyper"), None);
        // Every named key the configuration reads maps to something.
        for text in [
            "Ctrl+Space",
            "Ctrl+Tab",
            "Ctrl+Backspace",
            "Ctrl+Esc",
            "Ctrl+/",
            "Ctrl+.",
            "Ctrl+,",
            "Ctrl+-",
            "Ctrl+=",
            "Ctrl+;",
            "Ctrl+'",
            "Ctrl+`",
            "Ctrl+[",
            "Ctrl+]",
            "Ctrl+\\",
            "Ctrl+Return",
        ] {
            let shortcut = switchboard_engine::config::Shortcut::parse(text).expect(text);
            assert!(keysym(&shortcut.key).is_some(), "{text}: {}", shortcut.key);
        }
    }
}
