//! `switchboard-gateway`: the Switchboard engine without a desktop, for a server or CI.
//!
//! Runs from the same configuration file as the desktop app; tool approvals in `ask` mode are
//! answered with the chat buttons.
#![forbid(unsafe_code)]

mod service;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use switchboard_engine::config::{Config, Paths};
use switchboard_engine::secrets::Secrets;
use switchboard_engine::{Engine, EngineEvent};
use tokio_util::sync::CancellationToken;

/// mimalloc: with many conversations at once the engine moves about a quarter more replies a
/// second with it than with the system's allocator (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "switchboard-gateway",
    version,
    about = "Bridges your chats to your Stakpak agent server, without a desktop"
)]
struct Cli {
    /// The configuration file (default: $SWITCHBOARD_CONFIG, else $XDG_CONFIG_HOME/switchboard/config.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Where the database lives (default: $SWITCHBOARD_DATA_DIR, else $XDG_DATA_HOME/switchboard).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the gateway until SIGINT or SIGTERM (the default).
    Run,
    /// Checks the configuration, the agent server and every channel's credentials, then exits.
    Check,
    /// Lists, admits or refuses the senders waiting with a pairing code (works while the gateway
    /// runs: the next message of an admitted sender goes through).
    Pair {
        #[command(subcommand)]
        action: PairAction,
    },
    /// Installs or removes the gateway as a systemd user service (with this configuration and
    /// data directory).
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
}

#[derive(Subcommand)]
enum ServiceAction {
    /// Writes `~/.config/systemd/user/switchboard-gateway.service`, then enables and starts it.
    Install {
        /// Only write the unit; do not call systemctl.
        #[arg(long)]
        no_start: bool,
    },
    /// Stops and disables the service and removes its unit.
    Uninstall,
}

#[derive(Subcommand)]
enum PairAction {
    /// Shows the pairing requests that wait.
    List,
    /// Admits the sender of a code: `pair approve telegram ABCD2345`.
    Approve { channel: String, code: String },
    /// Refuses the sender of a code; they are ignored silently from then on.
    Refuse { channel: String, code: String },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let paths = Paths::resolve(cli.config.clone(), cli.data_dir.clone());
    let _guard = init_logging(&paths);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard-gateway: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Run) {
            Command::Run => run(&paths).await,
            Command::Check => check(&paths).await,
            Command::Pair { action } => pair(&paths, action),
            Command::Service {
                action: ServiceAction::Install { no_start },
            } => service::install(&paths.config_file, &paths.data_dir, !no_start),
            Command::Service {
                action: ServiceAction::Uninstall,
            } => service::uninstall(),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The stderr log layer shows it to the person; the file keeps it.
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn load(paths: &Paths) -> anyhow::Result<Config> {
    if !paths.config_file.exists() {
        anyhow::bail!(
            "no configuration at {}; create it (see the README for an example) or pass --config FILE",
            paths.config_file.display()
        );
    }
    Ok(Config::load(&paths.config_file)?)
}

async fn run(paths: &Paths) -> anyhow::Result<()> {
    let config = load(paths)?;
    let shutdown = CancellationToken::new();
    let engine = Engine::builder(config, &paths.data_dir)
        .config_path(&paths.config_file)
        .start(shutdown.clone())
        .await
        .context("cannot start the engine")?;
    switchboard_engine::api::start(&engine, shutdown.clone()).await;
    tracing::info!(
        config = %paths.config_file.display(),
        data = %paths.data_dir.display(),
        api = ?engine.api_addr(),
        "switchboard-gateway running"
    );
    if let Some(addr) = engine.scheduler_addr() {
        tracing::info!(gateway_url = %format!("http://{addr}"), "for stakpak autopilot: set [notifications] gateway_url to this (see `switchboard-gateway check`)");
    }
    let mut events = engine.subscribe();
    let log_events = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            log_event(&event);
        }
    });
    wait_for_signal().await;
    tracing::info!("stopping: finishing the current steps");
    engine.shutdown();
    engine.stopped().await;
    log_events.abort();
    tracing::info!("stopped cleanly");
    Ok(())
}

/// What the engine reports that a person running the headless gateway wants in the log.
fn log_event(event: &EngineEvent) {
    match event {
        EngineEvent::ChannelState { status } => {
            tracing::info!(channel = %status.name, state = status.state.as_str(), error = ?status.last_error, "channel state")
        }
        EngineEvent::ServerState { state, detail } => {
            tracing::info!(%state, ?detail, "agent server")
        }
        EngineEvent::Error { scope, message } => tracing::warn!(%scope, %message, "problem"),
        EngineEvent::ApprovalRequested {
            tool, requester, ..
        } => {
            tracing::info!(%tool, %requester, "a tool call waits for approval in the chat")
        }
        _ => {}
    }
}

async fn check(paths: &Paths) -> anyhow::Result<()> {
    let mut config = load(paths)?;
    println!("configuration: {} is valid", paths.config_file.display());
    let secrets = Secrets::new(&paths.config_file);
    let settled = secrets.settle(&mut config).await?;
    for (setting, vault) in &settled.moved {
        println!("token: moved {setting} to {}", vault.as_str());
    }
    if let Some(reason) = &settled.keyring_unavailable {
        println!(
            "tokens: no keyring ({reason}); kept in {}, readable only by you",
            secrets.fallback_file().display()
        );
    }
    let client = switchboard_engine::agent::AgentClient::new(
        &config.server.url,
        &config.server.token,
        Default::default(),
    )?;
    let mut failed = false;
    match client.check().await {
        Ok(health) => println!(
            "agent server: {} ok (version {})",
            config.server.url, health.version
        ),
        Err(e) => {
            failed = true;
            println!("agent server: {} FAILED: {e}", config.server.url);
        }
    }
    let shutdown = CancellationToken::new();
    let engine = Engine::builder(config, &paths.data_dir)
        .start(shutdown.clone())
        .await?;
    for status in engine.channels() {
        match engine.test_channel(&status.name).await {
            Ok(identity) => println!(
                "channel {}: ok, bot {} ({})",
                status.name, identity.name, identity.id
            ),
            Err(e) => {
                failed = true;
                println!("channel {}: FAILED: {e}", status.name);
            }
        }
    }
    let config = engine.config();
    let scheduler = config
        .api
        .listen
        .parse()
        .ok()
        .and_then(|listen| config.api.scheduler_addr(listen));
    match scheduler {
        Some(addr) => println!(
            "stakpak autopilot: to get its watch notifications here, put these lines in ~/.stakpak/autopilot.toml (chat_id: your chat) and restart it:\n\n{}",
            switchboard_engine::config::autopilot_notifications(&addr, &config)
        ),
        None => println!(
            "stakpak autopilot: point [notifications] gateway_url at http://{} (api.scheduler_listen is off)",
            config.api.listen
        ),
    }
    engine.shutdown();
    engine.stopped().await;
    if failed {
        anyhow::bail!("some checks failed");
    }
    Ok(())
}

fn pair(paths: &Paths, action: PairAction) -> anyhow::Result<()> {
    use switchboard_engine::access::normalise_code;
    use switchboard_engine::model::now_ms;
    let store = switchboard_engine::store::Store::open(&paths.data_dir)?;
    let (channel, code, state) = match action {
        PairAction::List => {
            let waiting = store.pending_pairings(None, now_ms())?;
            if waiting.is_empty() {
                println!("no pairing requests are waiting");
            }
            for r in waiting {
                let minutes = (r.expires_ms - now_ms()) / 60_000;
                println!(
                    "{}  {}  {} ({})  \"{}\"  expires in {minutes} min",
                    r.channel, r.code, r.peer_name, r.peer_id, r.first_message
                );
            }
            return Ok(());
        }
        PairAction::Approve { channel, code } => (
            channel,
            code,
            switchboard_engine::access::PairingState::Admitted,
        ),
        PairAction::Refuse { channel, code } => (
            channel,
            code,
            switchboard_engine::access::PairingState::Refused,
        ),
    };
    let code = normalise_code(&code);
    match store.resolve_pairing(&channel, &code, state, "switchboard-gateway pair", now_ms())? {
        Some(request) => {
            println!(
                "{} ({}) on {channel} is {state}",
                request.peer_name, request.peer_id
            );
            Ok(())
        }
        None => anyhow::bail!(
            "no pairing request with the code {code} is waiting on {channel}; `switchboard-gateway pair list` shows the ones that are"
        ),
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Logs to stderr and to a daily-rotated file in the state directory (seven files kept).
fn init_logging(paths: &Paths) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{fmt, EnvFilter};

    let filter = EnvFilter::new(switchboard_engine::private::log_directives(
        std::env::var("SWITCHBOARD_LOG").ok().as_deref(),
    ));
    let stderr = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let file = switchboard_engine::private::log_file(&paths.log_dir, "switchboard-gateway");
    match file {
        Some((writer, guard)) => {
            tracing_subscriber::registry()
                .with(filter)
                .with(stderr)
                .with(fmt::layer().with_ansi(false).with_writer(writer))
                .init();
            Some(guard)
        }
        None => {
            tracing_subscriber::registry()
                .with(filter)
                .with(stderr)
                .init();
            tracing::warn!(dir = %paths.log_dir.display(), "cannot write log files; logging to stderr only");
            None
        }
    }
}
