//! The command line: the same `--config` / `--data-dir` flags as the headless binary (and the same
//! `SWITCHBOARD_CONFIG` / `SWITCHBOARD_DATA_DIR` variables, read by `Paths::resolve`), plus
//! `--hidden` to start in the tray only (the autostart entry uses it).

use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Bridges your chats to your Stakpak agent server: tray, window and notifications"
)]
pub struct Cli {
    /// The configuration file (default: $SWITCHBOARD_CONFIG, else $XDG_CONFIG_HOME/switchboard/config.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where the database and logs live (default: $SWITCHBOARD_DATA_DIR, else $XDG_DATA_HOME/switchboard).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Start in the tray without opening the window.
    #[arg(long)]
    pub hidden: bool,
    /// Open the quick chat (bind this to a key where the shortcut cannot be registered; with
    /// Switchboard running, it opens there).
    #[arg(long, conflicts_with = "new_chat")]
    pub quick_chat: bool,
    /// Open the window on a new desktop chat.
    #[arg(long)]
    pub new_chat: bool,
    /// Say in the window that this is the demo (`scripts/run.sh` without a configuration).
    #[arg(long, hide = true)]
    pub demo: bool,
}

/// What a launch asks to be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    Window,
    NewChat,
    QuickChat,
}

impl Cli {
    /// Parses the process's arguments; `--help` and `--version` print and exit, a mistake prints
    /// the usage and exits.
    pub fn parse_args() -> Cli {
        Cli::parse()
    }

    pub fn launch(&self) -> Launch {
        if self.quick_chat {
            Launch::QuickChat
        } else if self.new_chat {
            Launch::NewChat
        } else {
            Launch::Window
        }
    }

    /// What a second launch's arguments ask the running app to show (anything it cannot read
    /// shows the window).
    pub fn launch_of(argv: &[String]) -> Launch {
        Cli::try_parse_from(argv).map_or(Launch::Window, |cli| cli.launch())
    }

    /// The command the autostart entry runs: this program, hidden, with the same explicit paths
    /// (made absolute, since a login session starts in another directory).
    pub fn autostart_command(&self) -> Vec<String> {
        let program = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "switchboard".to_owned());
        let mut command = vec![program, "--hidden".to_owned()];
        let absolute = |p: &PathBuf| {
            std::path::absolute(p)
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string()
        };
        if let Some(config) = &self.config {
            command.extend(["--config".to_owned(), absolute(config)]);
        }
        if let Some(data_dir) = &self.data_dir {
            command.extend(["--data-dir".to_owned(), absolute(data_dir)]);
        }
        command
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_match_the_headless_binary() {
        let cli = Cli::try_parse_from([
            "switchboard",
            "--config",
            "/etc/sb.toml",
            "--data-dir",
            "/var/sb",
            "--hidden",
        ])
        .expect("parses");
        assert_eq!(cli.config, Some(PathBuf::from("/etc/sb.toml")));
        assert_eq!(cli.data_dir, Some(PathBuf::from("/var/sb")));
        assert!(cli.hidden);
        assert_eq!(cli.launch(), Launch::Window);
        let argv = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(
            Cli::launch_of(&argv(&["switchboard", "--quick-chat"])),
            Launch::QuickChat
        );
        assert_eq!(
            Cli::launch_of(&argv(&["/usr/bin/switchboard", "--new-chat"])),
            Launch::NewChat
        );
        assert_eq!(
            Cli::launch_of(&argv(&["switchboard", "--no-such-flag"])),
            Launch::Window,
            "a launch it cannot read shows the window"
        );
        let command = cli.autostart_command();
        assert_eq!(
            command[1..],
            [
                "--hidden",
                "--config",
                "/etc/sb.toml",
                "--data-dir",
                "/var/sb"
            ]
        );
    }
}
