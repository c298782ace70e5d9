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
}

impl Cli {
    /// Parses the process's arguments; `--help` and `--version` print and exit, a mistake prints
    /// the usage and exits.
    pub fn parse_args() -> Cli {
        Cli::parse()
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
