//! Logging: stderr and a daily-rotated file in the log directory (seven kept), like the headless
//! binary. `SWITCHBOARD_LOG` sets the filter (default `info`).

use switchboard_engine::config::Paths;
use tracing_appender::non_blocking::WorkerGuard;

/// Installs the subscriber; keep the guard until the app exits so the file is flushed.
pub fn init(paths: &Paths) -> Option<WorkerGuard> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{fmt, EnvFilter};

    let filter = EnvFilter::new(switchboard_engine::private::log_directives(
        std::env::var("SWITCHBOARD_LOG").ok().as_deref(),
    ));
    let stderr = fmt::layer().with_writer(std::io::stderr);
    let file = switchboard_engine::private::log_file(&paths.log_dir, "switchboard-desktop");
    match file {
        Some((writer, guard)) => {
            let registry = tracing_subscriber::registry()
                .with(filter)
                .with(stderr)
                .with(fmt::layer().with_ansi(false).with_writer(writer));
            if registry.try_init().is_err() {
                return None;
            }
            Some(guard)
        }
        None => {
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(stderr)
                .try_init();
            tracing::warn!(dir = %paths.log_dir.display(), "cannot write log files; logging to stderr only");
            None
        }
    }
}
