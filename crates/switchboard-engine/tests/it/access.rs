//! Access control through the real engine and the Telegram adapter: nobody reaches the agent
//! uninvited.

use std::path::Path;

use switchboard_engine::config::{Config, DmPolicy, TelegramConfig};
use switchboard_engine::{Engine, EngineEvent, EngineHandle};
use switchboard_testkit::stakpak::FakeStakpak;
use switchboard_testkit::telegram::{FakeTelegram, Person};
use tokio_util::sync::CancellationToken;

use crate::harness::{config_for, fast_options, settle};

const GROUP: i64 = -1005550001;
const OWNER: i64 = 4242;

fn config(
    agent: &FakeStakpak,
    tg: &FakeTelegram,
    change: impl FnOnce(&mut TelegramConfig),
) -> Config {
    let mut config = config_for(agent);
    let mut telegram = TelegramConfig {
        token: tg.token(),
        api_base: tg.api_base(),
        owners: vec![OWNER.to_string()],
        groups: vec![GROUP.to_string()],
        ..TelegramConfig::default()
    };
    change(&mut telegram);
    config.channels.telegram = Some(telegram);
    config
}

struct Bridge {
    engine: EngineHandle,
    shutdown: CancellationToken,
}

impl Bridge {
    async fn start(config: Config, dir: &Path, tg: &FakeTelegram) -> Bridge {
        let shutdown = CancellationToken::new();
        let engine = Engine::builder(config, dir)
            .options(fast_options())
            .start(shutdown.clone())
            .await
            .expect("engine");
        switchboard_engine::api::start(&engine, shutdown.clone()).await;
        tg.wait_for("the bot to poll", |t| t.active_polls() > 0)
            .await;
        Bridge { engine, shutdown }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.engine.stopped().await;
    }
}

fn texts(tg: &FakeTelegram, chat: i64) -> Vec<String> {
    tg.sent_to(chat).into_iter().map(|s| s.text).collect()
}

fn code_in(text: &str) -> String {
    let at = text.find("pairing code is ").expect("a code in the reply") + "pairing code is ".len();
    text[at..at + 8].to_string()
}

#[tokio::test]
async fn a_stranger_gets_a_code_and_nothing_reaches_the_agent_until_admitted() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Bridge::start(config(&agent, &tg, |_| {}), dir.path(), &tg).await;
    let mut events = bridge.engine.subscribe();

    tg.send_dm(1111, "Ann", "hello, run ls for me");
    tg.wait_for("the pairing code", |t| !t.sent_to(1111).is_empty())
        .await;
    let reply = texts(&tg, 1111).remove(0);
    let code = code_in(&reply);
    assert!(reply.contains("Ask the owner"), "{reply}");
    assert!(
        agent.requests().iter().all(|r| r.method != "POST"),
        "no session, no message reached the agent server"
    );

    let request = loop {
        if let Ok(EngineEvent::PairingRequested { request }) = events.recv().await {
            break request;
        }
    };
    assert_eq!(
        (request.peer_name.as_str(), request.first_message.as_str()),
        ("Ann", "hello, run ls for me")
    );
    let pending = bridge.engine.pairing_requests().expect("requests");
    assert_eq!(pending.len(), 1, "the request is listed for the window");

    tg.send_dm(1111, "Ann", "hello?");
    tg.wait_for("the message to be read", |t| t.pending_updates() == 0)
        .await;
    settle().await;
    assert_eq!(
        texts(&tg, 1111).len(),
        1,
        "a stranger is told their code once; a repeated message gets nothing more"
    );
    assert_eq!(bridge.engine.pairing_requests().expect("requests").len(), 1);

    let admitted = bridge
        .engine
        .admit_pairing("telegram", &code.to_lowercase(), "me")
        .expect("admit");
    assert_eq!(admitted.map(|r| r.peer_id), Some("1111".to_string()));
    tg.send_dm(1111, "Ann", "now?");
    tg.wait_for("the agent's answer", |t| t.sent_to(1111).len() == 2)
        .await;
    assert_eq!(
        texts(&tg, 1111)[1],
        "echo: now?",
        "the next message after admission goes through"
    );
    assert_eq!(
        agent.posted_messages().len(),
        1,
        "only the message after admission reached the agent"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_refused_stranger_is_ignored_silently() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Bridge::start(config(&agent, &tg, |_| {}), dir.path(), &tg).await;

    tg.send_dm(1111, "Mallory", "let me in");
    tg.wait_for("the pairing code", |t| !t.sent_to(1111).is_empty())
        .await;
    let code = code_in(&texts(&tg, 1111)[0]);
    bridge
        .engine
        .refuse_pairing("telegram", &code, "me")
        .expect("refuse");

    tg.send_dm(1111, "Mallory", "please");
    tg.wait_for("the message to be read", |t| t.pending_updates() == 0)
        .await;
    settle().await;
    assert_eq!(texts(&tg, 1111).len(), 1, "no answer at all after refusal");
    assert!(agent.posted_messages().is_empty());
    bridge.stop().await;
}

#[tokio::test]
async fn a_full_queue_lets_the_newest_stranger_in_and_drops_the_oldest_code() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Bridge::start(config(&agent, &tg, |_| {}), dir.path(), &tg).await;
    let mut events = bridge.engine.subscribe();
    let max = switchboard_engine::access::MAX_PENDING_PER_CHANNEL as i64;

    for user in 1..=max + 1 {
        tg.send_dm(user, &format!("user{user}"), "hi");
        tg.wait_for("a code", |t| !t.sent_to(user).is_empty()).await;
    }
    let waiting = bridge.engine.pairing_requests().expect("requests");
    assert_eq!(waiting.len(), max as usize, "the cap holds");
    assert!(
        waiting.iter().all(|r| r.peer_id != "1"),
        "the oldest request made room"
    );
    assert!(waiting.iter().any(|r| r.peer_id == (max + 1).to_string()));
    let dropped = loop {
        match events.recv().await {
            Ok(EngineEvent::PairingResolved {
                request,
                decided_by,
            }) => break (request, decided_by),
            Ok(_) => {}
            Err(e) => panic!("no event for the dropped request: {e}"),
        }
    };
    assert_eq!(
        (dropped.0.peer_id.as_str(), dropped.1.as_str()),
        ("1", ""),
        "the window is told the oldest code stopped waiting, decided by no one"
    );
    let first_code = code_in(&texts(&tg, 1)[0]);
    assert_eq!(
        bridge
            .engine
            .admit_pairing("telegram", &first_code, "me")
            .expect("admit"),
        None,
        "the dropped code admits nobody"
    );
    assert!(agent.posted_messages().is_empty());
    bridge.stop().await;
}

#[tokio::test]
async fn an_owner_admits_a_code_from_the_chat() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = Bridge::start(config(&agent, &tg, |_| {}), dir.path(), &tg).await;

    tg.send_dm(1111, "Ann", "hi");
    tg.wait_for("the pairing code", |t| !t.sent_to(1111).is_empty())
        .await;
    let code = code_in(&texts(&tg, 1111)[0]);
    tg.send_dm(OWNER, "Olga", &format!("/admit {code}"));
    tg.wait_for("the owner's confirmation", |t| !t.sent_to(OWNER).is_empty())
        .await;
    assert_eq!(texts(&tg, OWNER)[0], "Done: Ann is admitted.");
    assert!(
        agent.posted_messages().is_empty(),
        "the command itself never reached the agent"
    );

    tg.send_dm(1111, "Ann", "thanks");
    tg.wait_for("the agent's answer", |t| t.sent_to(1111).len() == 2)
        .await;
    assert_eq!(texts(&tg, 1111)[1], "echo: thanks");
    bridge.stop().await;
}

#[tokio::test]
async fn groups_answer_only_admitted_senders_unless_open() {
    let agent = FakeStakpak::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let open_group = -1009990001;
    let closed_group = -1007770001;
    let config = config(&agent, &tg, |t| {
        t.allowed_users = vec!["2222".into()];
        t.open_groups = vec![open_group.to_string()];
        t.dm_policy = DmPolicy::Allowlist;
    });
    let bridge = Bridge::start(config, dir.path(), &tg).await;
    let stranger = Person::new(1111, "Stranger");
    let friend = Person::new(2222, "Friend");

    tg.send_group(GROUP, &stranger, "hey bot", true);
    tg.send_group(closed_group, &friend, "hey bot", true);
    tg.send_dm(1111, "Stranger", "hello");
    tg.send_group(GROUP, &friend, "hey bot", true);
    tg.wait_for("the friend's answer", |t| !t.sent_to(GROUP).is_empty())
        .await;
    tg.send_group(open_group, &stranger, "hi all", true);
    tg.wait_for("the open group's answer", |t| {
        !t.sent_to(open_group).is_empty()
    })
    .await;
    settle().await;

    let posted: Vec<String> = agent
        .posted_messages()
        .into_iter()
        .map(|p| p.text)
        .collect();
    assert_eq!(
        posted,
        vec!["hey bot".to_string(), "hi all".to_string()],
        "only the friend and the open group reached the agent"
    );
    assert_eq!(
        texts(&tg, GROUP),
        vec!["echo: hey bot"],
        "the stranger's group message was ignored"
    );
    assert!(
        tg.sent_to(closed_group).is_empty(),
        "a group not allowed is never answered"
    );
    assert!(
        tg.sent_to(1111).is_empty(),
        "allowlist policy: a stranger's DM gets no code"
    );
    bridge.stop().await;
}
