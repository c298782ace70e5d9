//! The app's async runtime: one multi-thread tokio runtime for the engine, the shell and their
//! D-Bus connections, while GTK's main loop has the main thread (the tray lives there).

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The runtime, started on first use.
pub fn handle() -> Handle {
    RUNTIME
        .get_or_init(|| {
            match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("switchboard-rt")
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("switchboard: cannot start its async runtime: {error}");
                    std::process::exit(1);
                }
            }
        })
        .handle()
        .clone()
}

/// Runs `future` on the runtime.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    handle().spawn(future)
}

/// Runs `future` to completion from a thread that is not one of the runtime's.
pub fn block_on<F: Future>(future: F) -> F::Output {
    handle().block_on(future)
}
