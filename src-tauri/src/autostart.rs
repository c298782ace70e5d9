//! Launch at login: an XDG autostart entry, `$XDG_CONFIG_HOME/autostart/switchboard.desktop`,
//! which desktop sessions start when the person logs in.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The autostart entry of this installation.
#[derive(Debug, Clone)]
pub struct Autostart {
    file: PathBuf,
    /// The program and its arguments, as the entry starts it.
    command: Vec<String>,
}

impl Autostart {
    /// The entry in `autostart_dir` that runs `command` (the program first).
    pub fn new(autostart_dir: &Path, command: Vec<String>) -> Self {
        Autostart {
            file: autostart_dir.join("switchboard.desktop"),
            command,
        }
    }

    /// `$XDG_CONFIG_HOME/autostart` (else `~/.config/autostart`).
    pub fn user_dir() -> PathBuf {
        std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(dirs::config_dir)
            .unwrap_or_else(|| PathBuf::from(".config"))
            .join("autostart")
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Whether the entry exists and is not switched off (`Hidden=true`, which some desktops'
    /// settings write instead of deleting the file).
    pub fn is_enabled(&self) -> bool {
        match fs::read_to_string(&self.file) {
            Ok(text) => !text
                .lines()
                .any(|line| line.trim().eq_ignore_ascii_case("hidden=true")),
            Err(_) => false,
        }
    }

    /// Writes or removes the entry.
    pub fn set(&self, enabled: bool) -> io::Result<()> {
        if !enabled {
            return match fs::remove_file(&self.file) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        if let Some(dir) = self.file.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(&self.file, self.entry())
    }

    /// The desktop entry's text.
    pub fn entry(&self) -> String {
        let exec: Vec<String> = self.command.iter().map(|arg| quote_exec_arg(arg)).collect();
        format!(
            "[Desktop Entry]\n\
             Type=Application\n\
             Name=Switchboard\n\
             Comment=Bridges your chats to your Stakpak agent\n\
             Exec={}\n\
             Icon=switchboard\n\
             Terminal=false\n\
             Categories=Utility;\n\
             X-GNOME-Autostart-enabled=true\n",
            exec.join(" ")
        )
    }
}

/// Quotes one argument of an `Exec` key as the Desktop Entry Specification says: arguments with
/// reserved characters go in double quotes, inside which `"`, `` ` ``, `$` and `\` are escaped; a
/// literal `%` is written `%%` (field codes start with it). The key's value is then escaped as a
/// string value, where `\` doubles once more.
fn quote_exec_arg(arg: &str) -> String {
    const RESERVED: &[char] = &[
        ' ', '\t', '\n', '"', '\'', '\\', '>', '<', '~', '|', '&', ';', '$', '*', '?', '#', '(',
        ')', '`',
    ];
    let arg = arg.replace('%', "%%");
    if !arg.is_empty() && !arg.contains(RESERVED) {
        return arg;
    }
    let mut quoted = String::from("\"");
    for c in arg.chars() {
        match c {
            '"' | '`' | '$' => {
                quoted.push_str("\\\\");
                quoted.push(c);
            }
            '\\' => quoted.push_str("\\\\\\\\"),
            '\n' => quoted.push_str("\\n"),
            _ => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_is_written_and_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let autostart = Autostart::new(
            &dir.path().join("autostart"),
            vec!["/opt/switchboard/switchboard".into(), "--hidden".into()],
        );
        assert!(!autostart.is_enabled());
        autostart.set(true).expect("written");
        assert!(autostart.is_enabled());
        let text = fs::read_to_string(autostart.file()).expect("read");
        assert!(text.starts_with("[Desktop Entry]\n"), "{text}");
        assert!(
            text.contains("\nExec=/opt/switchboard/switchboard --hidden\n"),
            "{text}"
        );
        assert!(text.contains("\nType=Application\n"));
        autostart.set(false).expect("removed");
        assert!(!autostart.is_enabled());
        autostart.set(false).expect("removing twice is fine");
    }

    #[test]
    fn an_entry_switched_off_by_the_desktop_counts_as_off() {
        let dir = tempfile::tempdir().expect("temp dir");
        let autostart = Autostart::new(dir.path(), vec!["switchboard".into()]);
        fs::write(
            autostart.file(),
            "[Desktop Entry]\nExec=switchboard\nHidden=true\n",
        )
        .expect("write");
        assert!(!autostart.is_enabled());
    }

    #[test]
    fn exec_arguments_are_quoted() {
        let cases = [
            ("/usr/bin/switchboard", "/usr/bin/switchboard"),
            (
                "/home/me/My Apps/switchboard",
                "\"/home/me/My Apps/switchboard\"",
            ),
            ("50%", "50%%"),
            ("a\"b", "\"a\\\\\"b\""),
            ("$HOME", "\"\\\\$HOME\""),
            ("", "\"\""),
        ];
        for (arg, quoted) in cases {
            assert_eq!(quote_exec_arg(arg), quoted, "{arg}");
        }
    }
}
