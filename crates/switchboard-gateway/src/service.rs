//! `switchboard-gateway service install | uninstall`: the gateway as a systemd user service, so it
//! starts with the person's session (or at boot, with lingering) and comes back after a crash.
//!
//! The unit runs this very binary with the same `--config` and `--data-dir` as the install
//! command (made absolute), so the service reads what `check` just checked.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

/// The unit's file name.
pub const UNIT: &str = "switchboard-gateway.service";

/// Where systemd looks for a user's own units: `$XDG_CONFIG_HOME/systemd/user`, else
/// `~/.config/systemd/user`.
pub fn unit_dir() -> anyhow::Result<PathBuf> {
    let config = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .context("neither XDG_CONFIG_HOME nor HOME is set; cannot place the unit")?,
        )
        .join(".config"),
    };
    Ok(config.join("systemd").join("user"))
}

/// One word of an `ExecStart=` line: quoted, with `\`, `"` and `%` (systemd's specifiers)
/// escaped, so a path with spaces or percent signs is read back as it is.
fn exec_word(word: &str) -> String {
    let mut out = String::with_capacity(word.len() + 2);
    out.push('"');
    for c in word.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The unit that runs `exe run --config <config> --data-dir <data_dir>`.
pub fn unit_text(exe: &Path, config: &Path, data_dir: &Path) -> String {
    let exec = [
        exe.to_string_lossy().as_ref(),
        "--config",
        config.to_string_lossy().as_ref(),
        "--data-dir",
        data_dir.to_string_lossy().as_ref(),
        "run",
    ]
    .map(exec_word)
    .join(" ");
    format!(
        "[Unit]\n\
         Description=Switchboard gateway: your chats to your Stakpak agent server\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         Type=exec\n\
         ExecStart={exec}\n\
         # SIGTERM lets it finish its current steps; nothing is lost if it takes longer.\n\
         TimeoutStopSec=20\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n"
    )
}

/// `path` made absolute against the current directory (a unit has no working directory of ours).
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot make {} absolute", path.display()))
}

/// Runs `systemctl --user <args>`; its error output when it fails.
fn systemctl(args: &[&str]) -> Result<(), String> {
    match Command::new("systemctl").arg("--user").args(args).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`systemctl --user {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run systemctl: {e}")),
    }
}

/// Writes the unit, then (unless `start` is false) reloads systemd and enables and starts it.
pub fn install(config: &Path, data_dir: &Path, start: bool) -> anyhow::Result<()> {
    let config = absolute(config)?;
    if !config.exists() {
        anyhow::bail!(
            "no configuration at {}; create it (or pass --config FILE) and run `switchboard-gateway check` before installing the service",
            config.display()
        );
    }
    let data_dir = absolute(data_dir)?;
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let dir = unit_dir()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(UNIT);
    std::fs::write(&path, unit_text(&exe, &config, &data_dir))
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    if !start {
        println!(
            "start it with: systemctl --user daemon-reload && systemctl --user enable --now {UNIT}"
        );
        return Ok(());
    }
    systemctl(&["daemon-reload"])
        .and_then(|()| systemctl(&["enable", "--now", UNIT]))
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}\nThe unit is written; where a systemd user session runs, start it with: systemctl --user daemon-reload && systemctl --user enable --now {UNIT}"
            )
        })?;
    println!(
        "{UNIT} is enabled and running; `journalctl --user -u {UNIT}` shows its log. To keep it running after you log out: loginctl enable-linger"
    );
    Ok(())
}

/// Stops and disables the service (if systemd knows it), removes the unit and reloads systemd.
pub fn uninstall() -> anyhow::Result<()> {
    let path = unit_dir()?.join(UNIT);
    if let Err(e) = systemctl(&["disable", "--now", UNIT]) {
        tracing::debug!(error = %e, "the service was not enabled or systemd is not reachable");
    }
    match std::fs::remove_file(&path) {
        Ok(()) => println!("removed {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("no unit at {}; nothing to remove", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
    if let Err(e) = systemctl(&["daemon-reload"]) {
        tracing::debug!(error = %e, "systemd not reloaded");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_runs_this_binary_with_the_same_files_quoted_for_systemd() {
        let text = unit_text(
            Path::new("/opt/switch board/switchboard-gateway"),
            Path::new("/home/ada/100% \"mine\"/config.toml"),
            Path::new("/home/ada/data\\dir"),
        );
        assert!(text.contains(
            "ExecStart=\"/opt/switch board/switchboard-gateway\" \"--config\" \"/home/ada/100%% \\\"mine\\\"/config.toml\" \"--data-dir\" \"/home/ada/data\\\\dir\" \"run\"\n"
        ), "{text}");
        assert!(text.contains("Restart=on-failure"));
        assert!(text.contains("WantedBy=default.target"));
    }
}
