//! Files only the user may read. The database holds every message and the agent's replies, the
//! logs name people and conversations: the data and log directories are 0700 and their files
//! 0600 on Unix, whatever the umask, and an existing directory is tightened too.

use std::io;
use std::path::Path;

/// Creates `path` (and its parents) if needed and makes it readable by the user alone.
pub fn private_dir(path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(path)?;
    restrict(path, 0o700)
}

/// Makes an existing file readable by the user alone; a missing one is not an error.
pub fn private_file(path: &Path) -> io::Result<()> {
    match restrict(path, 0o600) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Makes every file directly in `dir` readable by the user alone (the log files of earlier
/// days, written before this rule).
pub fn private_files_in(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            private_file(&entry.path())?;
        }
    }
    Ok(())
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn restrict(path: &Path, _mode: u32) -> io::Result<()> {
    std::fs::metadata(path).map(|_| ())
}

/// The log file of a binary: `{prefix}.YYYY-MM-DD.log` in `dir`, rotated daily with seven days
/// kept, in a private directory, today's and earlier days' files made private, written by a
/// thread of its own so that logging never waits for the disk. `None` when the directory or the
/// file cannot be made (the binary then logs to stderr alone). Keep the guard until the binary
/// exits: dropping it flushes the file.
pub fn log_file(
    dir: &Path,
    prefix: &str,
) -> Option<(
    tracing_appender::non_blocking::NonBlocking,
    tracing_appender::non_blocking::WorkerGuard,
)> {
    private_dir(dir).ok()?;
    let appender = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix(prefix)
        .filename_suffix("log")
        .max_log_files(7)
        .build(dir)
        .ok()?;
    // Today's file is open now; earlier days' may predate the rule.
    let _ = private_files_in(dir);
    Some(
        tracing_appender::non_blocking::NonBlockingBuilder::default()
            .buffered_lines_limit(LOG_LINES_IN_FLIGHT)
            .finish(appender),
    )
}

/// How many log lines may wait for the log file's thread; more are dropped until it catches
/// up (a disk stalled for that long). The library's default, 128,000, is a channel whose slots
/// are all written when it is made: 4 MiB resident in every process from its first line, a
/// tenth of what the tray weighs, for a buffer that at Switchboard's rate of logging (a few
/// lines a message at the default level) never holds more than a handful.
const LOG_LINES_IN_FLIGHT: usize = 8_192;

/// The tracing filter for a `SWITCHBOARD_LOG` value: a bare level (`debug`, `trace`) applies to
/// Switchboard's own crates, while the libraries it uses stay at `info`, so `trace` does not
/// turn on every HTTP and TLS library's tracing (which would log request URLs and headers, and
/// with them tokens). Directives that name a target are kept as written; a library's tracing is
/// on only when asked for by name.
pub fn log_directives(spec: Option<&str>) -> String {
    const OURS: &[&str] = &[
        "switchboard",
        "switchboard_engine",
        "switchboard_gateway",
        "switchboard_testkit",
    ];
    let spec = spec
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("info");
    let mut out: Vec<String> = vec!["info".to_owned()];
    for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains('=') && !directive.contains('[');
        if bare {
            out.extend(OURS.iter().map(|c| format!("{c}={directive}")));
        } else {
            out.push(directive.to_owned());
        }
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_level_is_for_our_crates_and_named_targets_are_kept() {
        assert_eq!(
            log_directives(None),
            "info,switchboard=info,switchboard_engine=info,switchboard_gateway=info,switchboard_testkit=info"
        );
        let trace = log_directives(Some("trace"));
        assert!(trace.starts_with("info,"), "{trace}");
        assert!(trace.contains("switchboard_engine=trace"), "{trace}");
        assert!(!trace.contains(",trace"), "no global trace: {trace}");
        assert_eq!(
            log_directives(Some("warn,hyper=debug")),
            "info,switchboard=warn,switchboard_engine=warn,switchboard_gateway=warn,switchboard_testkit=warn,hyper=debug"
        );
    }

    #[cfg(unix)]
    #[test]
    fn directories_and_files_are_the_users_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("a/b");
        private_dir(&data).expect("dir");
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        private_dir(&data).expect("an existing directory is tightened");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        let file = data.join("x.log");
        std::fs::write(&file, "x").expect("write");
        private_files_in(&data).expect("files");
        assert_eq!(mode(&file), 0o600);
        private_file(&data.join("missing")).expect("a missing file is fine");
    }
}
