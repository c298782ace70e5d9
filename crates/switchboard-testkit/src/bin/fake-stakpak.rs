//! Runs the fake Stakpak agent server on its own, so the app can be tried without `stakpak up`.
//!
//! ```text
//! fake-stakpak [--port N] [--token T | --no-token] [--keepalive SECS] [--demo]
//! ```
//! `--demo` answers plain words as a demo agent (a streamed reply; a command proposed for
//! approval, then "run" with made-up output, when asked to do something).
//! Prints `url=http://127.0.0.1:PORT` and `token=…` on stdout, then serves until Ctrl-C.

use std::time::Duration;

use anyhow::{bail, Context};
use switchboard_testkit::stakpak::{FakeOptions, FakeStakpak};

const USAGE: &str = "usage: fake-stakpak [--port N (default 4096, 0 = any)] [--token T | --no-token] [--keepalive SECS] [--demo]";

fn parse_args(args: impl Iterator<Item = String>) -> anyhow::Result<FakeOptions> {
    let mut opts = FakeOptions {
        port: 4096,
        ..FakeOptions::default()
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = |name: &str| -> anyhow::Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args
                    .next()
                    .with_context(|| format!("{name} needs a value\n{USAGE}")),
            }
        };
        match flag.as_str() {
            "--port" | "-p" => {
                let v = value("--port")?;
                opts.port = v.parse().with_context(|| format!("bad port {v:?}"))?;
            }
            "--token" => opts.token = Some(value("--token")?),
            "--no-token" => opts.token = None,
            "--demo" => opts.demo = true,
            "--keepalive" => {
                let v = value("--keepalive")?;
                let secs: f64 = v.parse().with_context(|| format!("bad keepalive {v:?}"))?;
                if !secs.is_finite() || secs <= 0.0 {
                    bail!("keepalive must be a positive number of seconds");
                }
                opts.keepalive = Duration::from_secs_f64(secs);
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(opts)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let opts = parse_args(std::env::args().skip(1))?;
    let port = opts.port;
    let fake = FakeStakpak::try_start_with(opts)
        .await
        .with_context(|| format!("could not listen on 127.0.0.1:{port}"))?;
    // Only these two lines go to stdout, so a script can read them.
    println!("url={}", fake.url());
    println!("token={}", fake.token().unwrap_or_default());
    stopped().await
}

/// Waits for Ctrl-C (or SIGTERM on Unix).
async fn stopped() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("could not watch SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("could not wait for ctrl-c"),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .context("could not wait for ctrl-c")
    }
}
