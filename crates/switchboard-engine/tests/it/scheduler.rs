//! The Stakpak watch scheduler as a client of the gateway API, playing its exact requests
//! (`shared/contracts/stakpak-watch-scheduler.md`): its own server's token as the bearer, the
//! second loopback address, object targets, silent and interactive schedules, the session polling.

use std::path::Path;
use std::time::Duration;

use crate::harness::{config_for, open_slack, Running};
use serde_json::{json, Value};
use switchboard_engine::config::{Config, SlackConfig, TelegramConfig};
use switchboard_testkit::slack::FakeSlack;
use switchboard_testkit::stakpak::{FakeStakpak, Route};
use switchboard_testkit::telegram::FakeTelegram;

const OWNER: i64 = 4242;

fn telegram_config(agent: &FakeStakpak, tg: &FakeTelegram) -> Config {
    let mut config = config_for(agent);
    config.channels.telegram = Some(TelegramConfig {
        token: tg.token(),
        api_base: tg.api_base(),
        owners: vec![OWNER.to_string()],
        ..TelegramConfig::default()
    });
    config
}

struct Bridge {
    running: Running,
    http: reqwest::Client,
    /// The server's token: what the scheduler sends.
    token: String,
}

impl Bridge {
    async fn start(config: Config, dir: &Path) -> Bridge {
        let token = config.server.token.clone();
        Bridge {
            running: Running::with_api(config, dir).await,
            http: switchboard_engine::http::client(),
            token,
        }
    }

    /// The address the scheduler keeps: not 127.0.0.1.
    fn base(&self) -> String {
        let addr = self
            .running
            .engine
            .scheduler_addr()
            .expect("a scheduler address");
        assert_ne!(addr.ip().to_string(), "127.0.0.1");
        format!("http://{addr}")
    }

    async fn post(&self, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/v1/gateway/send", self.base()))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn session(&self, id: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/v1/gateway/sessions/{id}", self.base()))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls the session until it reports `active == want`.
    async fn wait_active(&self, id: &str, want: bool) {
        for _ in 0..400 {
            let (status, body) = self.session(id).await;
            assert_eq!(status, 200, "{body}");
            if body["active"] == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the session never reported active = {want}");
    }

    async fn stop(self) {
        self.running.stop().await;
    }
}

/// The owner starts the bot (a bot can only write to people who wrote to it) and is answered.
async fn say_hello(tg: &FakeTelegram) {
    tg.send_dm(OWNER, "Olga", "hi");
    tg.wait_for("the answer to hi", |t| t.sent_to(OWNER).len() == 1)
        .await;
}

fn interactive(prompt: &str) -> Value {
    json!({
        "channel": "telegram",
        "target": {"chat_id": OWNER.to_string()},
        "text": "⚠️ Schedule **disk** check failed (exit 1)",
        "context": {"schedule": "disk", "check_output": "/dev/sda1 97%", "status": "triggered"},
        "interactive": {
            "prompt": prompt,
            "caller_context": [
                {"name": "schedule", "priority": "high", "content": "Schedule 'disk' fired"},
                {"name": "check_exit_code", "priority": "high", "content": "1"},
                {"name": "check_output", "priority": "normal", "content": "/dev/sda1 97%"}
            ],
            "sandbox": false, "timeout": 1800, "title": "disk"
        }
    })
}

#[tokio::test]
async fn silent_and_interactive_schedules_reach_the_chat_as_the_scheduler_sends_them() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Bridge::start(telegram_config(&agent, &tg), dir.path()).await;
    say_hello(&tg).await;

    // A wrong token is refused; the server's token (what the scheduler sends) is taken.
    let refused = bridge
        .http
        .post(format!("{}/v1/gateway/send", bridge.base()))
        .bearer_auth("not-the-token")
        .json(&json!({"channel": "telegram", "target": {"chat_id": "4242"}, "text": "x"}))
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), 401);

    // A silent schedule: the notification, then the person's reply carries its context.
    let (status, body) = bridge
        .post(json!({
            "channel": "telegram",
            "target": {"chat_id": "4242"},
            "text": "✅ Schedule disk completed",
            "context": {"schedule": "disk", "summary": "40% used", "check_output": "/dev/sda1 40%", "status": "completed"}
        }))
        .await;
    assert_eq!(status, 200, "{body}");
    tg.wait_for("the notification", |t| t.sent_to(OWNER).len() == 2)
        .await;
    assert_eq!(tg.sent_to(OWNER)[1].text, "✅ Schedule disk completed");
    tg.send_dm(OWNER, "Olga", "what was it?");
    tg.wait_for("the reply", |t| t.sent_to(OWNER).len() == 3)
        .await;
    let first = agent.posted_messages().remove(1);
    assert!(
        first.text.contains("/dev/sda1 40%") && first.text.contains("what was it?"),
        "the reply carries the schedule's context: {}",
        first.text
    );

    // An interactive schedule: the notice with the check output, then the prompt runs in the
    // chat's conversation; its session is returned and reported busy until the run ends.
    let (status, body) = bridge.post(interactive("HOLD disk Free some space")).await;
    assert_eq!(status, 200, "{body}");
    let session = body["session_id"]
        .as_str()
        .expect("a session id")
        .to_owned();
    assert_eq!(
        session, first.session_id,
        "the chat's conversation (and session) is reused"
    );
    tg.wait_for("the notice", |t| t.sent_to(OWNER).len() == 4)
        .await;
    let notice = tg.sent_to(OWNER)[3].text.clone();
    assert!(
        notice.contains("check failed (exit 1)") && notice.contains("/dev/sda1 97%"),
        "the notice and the check output: {notice}"
    );
    bridge.wait_active(&session, true).await;
    agent.release("disk");
    tg.wait_for("the run's reply", |t| t.sent_to(OWNER).len() == 5)
        .await;
    let reply = tg.sent_to(OWNER)[4].text.clone();
    assert!(reply.starts_with("echo: "), "{reply}");
    bridge.wait_active(&session, false).await;
    let prompt = agent.posted_messages().remove(2);
    assert_eq!(prompt.session_id, session);
    for part in [
        "Free some space",
        "[Context: schedule (high)]",
        "Schedule 'disk' fired",
        "[Context: check_output (normal)]",
    ] {
        assert!(prompt.text.contains(part), "{part:?} in {}", prompt.text);
    }

    // The person follows up in the chat: the same session.
    tg.send_dm(OWNER, "Olga", "did it work?");
    tg.wait_for("the follow-up's reply", |t| t.sent_to(OWNER).len() == 6)
        .await;
    let follow_up = agent.posted_messages().remove(3);
    assert_eq!(
        (follow_up.session_id.as_str(), follow_up.text.as_str()),
        (session.as_str(), "did it work?")
    );

    let (status, _) = bridge.session("00000000-0000-0000-0000-000000000000").await;
    assert_eq!(status, 404, "a session Switchboard does not know");
    bridge.stop().await;
}

#[tokio::test]
async fn an_interactive_request_over_the_limits_is_refused_and_nothing_is_sent() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Bridge::start(telegram_config(&agent, &tg), dir.path()).await;
    say_hello(&tg).await;

    let long_prompt = interactive(&"x".repeat(33 * 1024));
    let mut many_items = interactive("check");
    many_items["interactive"]["caller_context"] = Value::Array(
        (0..51)
            .map(|i| json!({"name": format!("item{i}"), "content": "c"}))
            .collect(),
    );
    let mut too_much = interactive("check");
    too_much["interactive"]["caller_context"] = Value::Array(
        (0..4)
            .map(|i| json!({"name": format!("item{i}"), "content": "y".repeat(30 * 1024)}))
            .collect(),
    );
    for (body, says) in [
        (long_prompt, "interactive.prompt"),
        (many_items, "caller_context has 51 items"),
        (too_much, "at most 102400"),
    ] {
        let (status, answer) = bridge.post(body).await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"].as_str().unwrap_or_default().contains(says),
            "the refusal says which limit: {answer}"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(tg.sent_to(OWNER).len(), 1, "no notice was posted");
    assert_eq!(agent.posted_messages().len(), 1);
    bridge.stop().await;
}

#[tokio::test]
async fn a_restart_between_the_notice_and_the_reply_loses_nothing() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = telegram_config(&agent, &tg);
    let bridge = Bridge::start(config.clone(), dir.path()).await;
    say_hello(&tg).await;

    // The agent server takes the session but none of the run's messages yet.
    agent.fail_next(Route::Messages, 1000);
    let (status, body) = bridge.post(interactive("Free some space")).await;
    assert_eq!(status, 200, "{body}");
    let session = body["session_id"].as_str().expect("session").to_owned();
    tg.wait_for("the notice", |t| t.sent_to(OWNER).len() == 2)
        .await;
    bridge.stop().await;

    agent.heal();
    let bridge = Bridge::start(config, dir.path()).await;
    tg.wait_for("the run's reply after the restart", |t| {
        t.sent_to(OWNER).len() == 3
    })
    .await;
    assert!(tg.sent_to(OWNER)[2]
        .text
        .starts_with("echo: Free some space"));
    let posted: Vec<_> = agent
        .posted_messages()
        .into_iter()
        .filter(|p| p.text.contains("Free some space"))
        .collect();
    assert_eq!(posted.len(), 1, "the prompt ran once: {posted:#?}");
    assert_eq!(posted[0].session_id, session);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(tg.sent_to(OWNER).len(), 3, "nothing was repeated");
    bridge.stop().await;
}

#[tokio::test]
async fn a_slack_schedule_by_channel_name_runs_in_the_thread_under_its_notice() {
    let agent = FakeStakpak::start().await;
    let slack = FakeSlack::start().await;
    slack.name_channel("C0OPS", "ops");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_for(&agent);
    config.channels.slack = Some(SlackConfig {
        open_groups: vec!["*".to_owned()],
        ..open_slack(&slack)
    });
    let bridge = Bridge::start(config, dir.path()).await;
    slack.wait_for("the socket", |s| s.open_sockets() > 0).await;

    let mut body = interactive("Free some space");
    body["channel"] = json!("slack");
    body["target"] = json!({"channel": "#ops"});
    let (status, answer) = bridge.post(body).await;
    assert_eq!(status, 200, "{answer}");
    let notice = slack.posted_in("C0OPS")[0].clone();
    assert_eq!(notice.thread_ts, None, "the notice starts the thread");
    assert_eq!(answer["thread_id"], json!(notice.ts));
    slack
        .wait_for("the run's reply", |s| s.posted_in("C0OPS").len() == 2)
        .await;
    let reply = slack.posted_in("C0OPS")[1].clone();
    assert_eq!(
        reply.thread_ts.as_deref(),
        Some(notice.ts.as_str()),
        "the reply is in the notice's thread"
    );

    // Someone answers in that thread, without a mention: the same session.
    slack.send_thread_reply("C0OPS", &notice.ts, "U1ANN", "what now?");
    slack
        .wait_for("the follow-up's reply", |s| s.posted_in("C0OPS").len() == 3)
        .await;
    let posted = agent.posted_messages();
    assert_eq!(posted[1].session_id, posted[0].session_id);
    assert_eq!(posted[1].text, "what now?");

    let mut unknown = interactive("x");
    unknown["channel"] = json!("slack");
    unknown["target"] = json!({"channel": "#nowhere"});
    let (status, answer) = bridge.post(unknown).await;
    assert_eq!(status, 400);
    assert!(answer["error"]
        .as_str()
        .unwrap_or_default()
        .contains("no Slack channel named #nowhere"));
    bridge.stop().await;
}

#[tokio::test]
async fn a_discord_schedule_by_channel_id_reaches_the_channel() {
    use switchboard_engine::config::DiscordConfig;
    use switchboard_testkit::discord::FakeDiscord;

    const GUILD: &str = "1100000000000000001";
    const CHANNEL: &str = "1200000000000000077";
    let agent = FakeStakpak::start().await;
    let dc = FakeDiscord::start().await;
    dc.add_channel(GUILD, CHANNEL);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_for(&agent);
    config.channels.discord = Some(DiscordConfig {
        token: dc.token(),
        api_base: dc.api_base(),
        guilds: vec![GUILD.to_owned()],
        ..DiscordConfig::default()
    });
    let bridge = Bridge::start(config, dir.path()).await;
    dc.wait_for("the bot to connect", |d| d.is_connected())
        .await;

    let (status, body) = bridge
        .post(json!({
            "channel": "discord",
            "target": {"channel_id": CHANNEL},
            "text": "✅ Schedule backup completed",
            "context": {"schedule": "backup", "status": "completed"}
        }))
        .await;
    assert_eq!(status, 200, "{body}");
    dc.wait_for("the notification", |d| !d.posted_to(CHANNEL).is_empty())
        .await;
    assert_eq!(dc.posted_to(CHANNEL)[0], "✅ Schedule backup completed");
    bridge.stop().await;
}
