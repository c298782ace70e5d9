//! Nothing accepted is lost, and nothing is answered twice, across a crash or a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_engine::channels::memory::MemoryChannel;
use switchboard_engine::chunk::{LengthUnit, TextLimit};
use switchboard_engine::Engine;
use switchboard_testkit::stakpak::FakeStakpak;
use tokio_util::sync::CancellationToken;

use crate::harness::{config_for, fast_options, runtime, Gateway};

fn wait_for(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The engine process dies (its runtime is torn down with no clean shutdown) while the agent is
/// still working; the run finishes on the server while the engine is down; the restarted engine
/// delivers that reply, once.
#[test]
fn the_engine_killed_mid_run_delivers_the_reply_exactly_once_after_restart() {
    let server_rt = runtime();
    let fake = server_rt.block_on(FakeStakpak::start());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_for(&fake);
    let limit = TextLimit {
        max: 4096,
        unit: LengthUnit::Chars,
    };

    let crashed_rt = runtime();
    let first_chat = MemoryChannel::new("chat", limit);
    crashed_rt.block_on(async {
        Engine::builder(config.clone(), dir.path())
            .options(fast_options())
            .channel(Arc::new(first_chat.clone()))
            .start(CancellationToken::new())
            .await
            .expect("engine starts");
        first_chat
            .inject(first_chat.dm("ann", "1", "HOLD crash"))
            .await
            .expect("accepted");
    });
    wait_for("the run to be posted", || fake.posted_messages().len() == 1);
    // Kill: every task is dropped where it stands.
    crashed_rt.shutdown_background();
    fake.release("crash");

    let restarted_rt = runtime();
    let second_chat = MemoryChannel::new("chat", limit);
    restarted_rt.block_on(async {
        let shutdown = CancellationToken::new();
        let engine = Engine::builder(config, dir.path())
            .options(fast_options())
            .channel(Arc::new(second_chat.clone()))
            .start(shutdown.clone())
            .await
            .expect("engine restarts");
        switchboard_engine::api::start(&engine, shutdown.clone()).await;
        second_chat
            .wait_until(
                "the reply after the restart",
                crate::harness::WAIT,
                |sent| !sent.is_empty(),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        shutdown.cancel();
        engine.stopped().await;
    });
    assert!(
        first_chat.sent().is_empty(),
        "the killed engine never delivered"
    );
    assert_eq!(
        second_chat.sent_to("ann"),
        vec!["echo: HOLD crash"],
        "the reply arrives exactly once"
    );
    assert_eq!(
        fake.runs_started(),
        1,
        "the restart did not start a second run"
    );
}

/// A crash between accepting a message and posting it: the restarted engine posts it once.
#[tokio::test]
async fn queued_messages_and_the_paused_state_survive_a_restart() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;
    gw.engine.set_paused(true).expect("pause");
    gw.dm("ann", "1", "kept").await;
    gw.stop().await;

    let gw = Gateway::start(config_for(&fake), dir.path()).await;
    assert!(gw.engine.is_paused(), "paused is remembered");
    assert!(fake.posted_messages().is_empty());
    gw.engine.set_paused(false).expect("resume");
    assert_eq!(gw.replies("ann", 1).await, vec!["echo: kept"]);
    gw.stop().await;
}

/// The platform delivers the same message again (after a reconnect, say): one run, one reply.
#[tokio::test]
async fn a_redelivered_message_produces_one_run_and_one_reply() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;
    let message = gw.chat.dm("ann", "42", "once");
    gw.chat.inject(message.clone()).await.expect("accept");
    gw.replies("ann", 1).await;
    gw.stop().await;

    let gw = Gateway::start(config_for(&fake), dir.path()).await;
    let again = gw.chat.inject(message).await.expect("accept");
    assert_eq!(
        again,
        switchboard_engine::channels::Accepted::Duplicate,
        "the redelivery is recognised after a restart"
    );
    crate::harness::settle().await;
    assert_eq!(fake.runs_started(), 1);
    assert!(gw.chat.sent().is_empty(), "no second reply");
    gw.stop().await;
}
