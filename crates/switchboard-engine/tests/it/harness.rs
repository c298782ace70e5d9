//! Starting an engine against a fake server and an in-memory chat, and waiting for what a user
//! would see.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchboard_engine::channels::memory::{MemoryChannel, Sent};
use switchboard_engine::chunk::{LengthUnit, TextLimit};
use switchboard_engine::config::{ApprovalMode, Config, DiscordConfig, DmPolicy, SlackConfig};
use switchboard_engine::{Engine, EngineEvent, EngineHandle, EngineOptions};
use switchboard_testkit::stakpak::FakeStakpak;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(15);
pub const API_TOKEN: &str = "test-api-token";

/// A runtime of its own, for a test that kills an engine by dropping the runtime it ran on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Short timings so watchdogs and retries happen within a test.
pub fn fast_options() -> EngineOptions {
    EngineOptions {
        watchdog: Duration::from_millis(800),
        settle_grace: Duration::from_millis(300),
        approval_grace: Duration::from_millis(100),
        typing_interval: Duration::from_millis(500),
        busy_poll: Duration::from_millis(100),
        retry_base: Duration::from_millis(50),
        retry_cap: Duration::from_millis(500),
        delivery_attempts: 3,
        ..EngineOptions::default()
    }
}

pub fn config_for(fake: &FakeStakpak) -> Config {
    let mut config = Config::default();
    config.server.url = fake.url();
    config.server.token = fake.token().unwrap_or_default();
    config.api.listen = "127.0.0.1:0".into();
    config.api.token = API_TOKEN.into();
    config.gateway.approval_mode = ApprovalMode::AllowAll;
    config
}

/// An engine built from a configuration alone (its channels from the config file's tables), with
/// fast timings and, when asked, its API served.
pub struct Running {
    pub engine: EngineHandle,
    pub shutdown: CancellationToken,
}

impl Running {
    pub async fn start(config: Config, dir: &Path) -> Running {
        let shutdown = CancellationToken::new();
        let engine = Engine::builder(config, dir)
            .options(fast_options())
            .start(shutdown.clone())
            .await
            .expect("the engine starts");
        Running { engine, shutdown }
    }

    /// The same, with the gateway API listening.
    pub async fn with_api(config: Config, dir: &Path) -> Running {
        let running = Running::start(config, dir).await;
        switchboard_engine::api::start(&running.engine, running.shutdown.clone()).await;
        running
    }

    /// [`Running::start`], then waits until the Telegram bot polls the fake.
    pub async fn polling(
        config: Config,
        dir: &Path,
        tg: &switchboard_testkit::telegram::FakeTelegram,
    ) -> Running {
        let running = Running::start(config, dir).await;
        tg.wait_for("the bot to poll", |t| t.active_polls() > 0)
            .await;
        running
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.engine.stopped().await;
    }
}

/// Slack as these tests talk to it: anyone may write to the bot in a DM (access control has
/// tests of its own).
pub fn open_slack(slack: &switchboard_testkit::slack::FakeSlack) -> SlackConfig {
    SlackConfig {
        bot_token: slack.bot_token(),
        app_token: slack.app_token(),
        api_base: slack.api_base(),
        dm_policy: DmPolicy::Open,
        ..SlackConfig::default()
    }
}

/// Discord likewise.
pub fn open_discord(dc: &switchboard_testkit::discord::FakeDiscord) -> DiscordConfig {
    DiscordConfig {
        token: dc.token(),
        api_base: dc.api_base(),
        dm_policy: DmPolicy::Open,
        ..DiscordConfig::default()
    }
}

pub struct Gateway {
    pub engine: EngineHandle,
    pub chat: MemoryChannel,
    pub shutdown: CancellationToken,
    pub events: tokio::sync::broadcast::Receiver<EngineEvent>,
}

impl Gateway {
    pub async fn start(config: Config, data_dir: &Path) -> Gateway {
        Self::start_with(
            config,
            data_dir,
            MemoryChannel::new(
                "chat",
                TextLimit {
                    max: 4096,
                    unit: LengthUnit::Chars,
                },
            ),
        )
        .await
    }

    pub async fn start_with_options(
        config: Config,
        data_dir: &Path,
        options: EngineOptions,
    ) -> Gateway {
        let chat = MemoryChannel::new(
            "chat",
            TextLimit {
                max: 4096,
                unit: LengthUnit::Chars,
            },
        );
        Self::launch(config, data_dir, chat, options).await
    }

    pub async fn start_with(config: Config, data_dir: &Path, chat: MemoryChannel) -> Gateway {
        Self::launch(config, data_dir, chat, fast_options()).await
    }

    async fn launch(
        config: Config,
        data_dir: &Path,
        chat: MemoryChannel,
        options: EngineOptions,
    ) -> Gateway {
        let shutdown = CancellationToken::new();
        let engine = Engine::builder(config, data_dir)
            .options(options)
            .channel(Arc::new(chat.clone()))
            .start(shutdown.clone())
            .await
            .expect("the engine starts");
        let listener = switchboard_engine::api::bind(&engine.config().api.listen)
            .await
            .expect("the API binds");
        switchboard_engine::api::serve(engine.clone(), listener, shutdown.clone())
            .expect("the API serves");
        let events = engine.subscribe();
        Gateway {
            engine,
            chat,
            shutdown,
            events,
        }
    }

    /// A user writes a direct message.
    pub async fn dm(&self, peer: &str, id: &str, text: &str) {
        self.chat
            .inject(self.chat.dm(peer, id, text))
            .await
            .expect("message accepted");
    }

    /// Waits until `n` messages reached `chat_id`, and returns them.
    pub async fn replies(&self, chat_id: &str, n: usize) -> Vec<String> {
        let chat_id = chat_id.to_string();
        self.chat
            .wait_until(
                &format!("{n} replies in {chat_id}"),
                WAIT,
                |sent: &[Sent]| sent.iter().filter(|s| s.target.chat_id == chat_id).count() >= n,
            )
            .await;
        self.chat.sent_to(&chat_id)
    }

    /// Waits for an event matching `pick`.
    pub async fn event<T>(&mut self, what: &str, pick: impl Fn(&EngineEvent) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Ok(event)) => {
                    if let Some(found) = pick(&event) {
                        return found;
                    }
                }
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(e)) => panic!("event stream closed while waiting for {what}: {e}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.engine.stopped().await;
    }
}

/// Lets the engine do whatever it would do unprompted for a moment, to check it does nothing more.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(700)).await;
}

/// Waits until the status of the channel `name` satisfies `check`, woken by the engine's events.
pub async fn wait_channel(
    engine: &EngineHandle,
    name: &str,
    what: &str,
    check: impl Fn(&switchboard_engine::model::ChannelStatus) -> bool,
) -> switchboard_engine::model::ChannelStatus {
    let mut events = engine.subscribe();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = engine.channels().into_iter().find(|c| c.name == name);
        if let Some(status) = status.filter(|s| check(s)) {
            return status;
        }
        if tokio::time::timeout_at(deadline, events.recv())
            .await
            .is_err()
        {
            panic!(
                "timed out waiting for the {name} channel to be {what}: {:?}",
                engine.channels()
            );
        }
    }
}
