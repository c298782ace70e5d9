//! Routing through the real engine: which conversation and session each chat gets.

use switchboard_engine::config::{Binding, DmScope};
use switchboard_testkit::stakpak::FakeStakpak;

use crate::harness::{config_for, Gateway};

#[tokio::test]
async fn groups_and_threads_get_their_own_sessions_and_replies_land_in_the_thread() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(config_for(&fake), dir.path()).await;

    gw.chat
        .inject(gw.chat.group_message("-100", "ann", "g1", "in the group"))
        .await
        .expect("accept");
    gw.replies("-100", 1).await;
    gw.chat
        .inject(
            gw.chat
                .thread_message("-100", "7", "bob", "t1", "in the thread"),
        )
        .await
        .expect("accept");
    gw.replies("-100", 2).await;

    let keys: Vec<String> = gw
        .engine
        .conversations()
        .expect("list")
        .into_iter()
        .map(|c| c.routing_key)
        .collect();
    assert!(keys.contains(&"chat:group:-100".to_string()), "{keys:?}");
    assert!(keys.contains(&"chat:thread:-100:7".to_string()), "{keys:?}");
    assert_eq!(
        fake.sessions().len(),
        2,
        "the thread has a session of its own"
    );
    let in_thread: Vec<_> = gw
        .chat
        .sent()
        .into_iter()
        .filter(|s| s.target.thread_id.as_deref() == Some("7"))
        .collect();
    assert_eq!(in_thread.len(), 1, "the thread's reply went to the thread");
    assert_eq!(in_thread[0].text, "echo: in the thread");
    assert_eq!(
        in_thread[0].target.reply_to.as_deref(),
        Some("t1"),
        "it answers the triggering message"
    );
    gw.stop().await;
}

#[tokio::test]
async fn dm_scopes_and_bindings_decide_the_conversation() {
    let cases: [(DmScope, Vec<Binding>, [&str; 2]); 4] = [
        (
            DmScope::PerChannelPeer,
            vec![],
            ["chat:dm:ann", "chat:dm:bob"],
        ),
        (DmScope::PerPeer, vec![], ["dm:ann", "dm:bob"]),
        (DmScope::Main, vec![], ["main", "main"]),
        (
            DmScope::PerChannelPeer,
            vec![Binding {
                channel: "chat".into(),
                routing_key: "ops".into(),
                direct: Some("ann".into()),
                group: None,
            }],
            ["ops", "chat:dm:bob"],
        ),
    ];
    for (scope, bindings, want) in cases {
        let fake = FakeStakpak::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = config_for(&fake);
        config.routing.dm_scope = scope;
        config.routing.bindings = bindings;
        let gw = Gateway::start(config, dir.path()).await;
        gw.dm("ann", "1", "from ann").await;
        gw.replies("ann", 1).await;
        gw.dm("bob", "2", "from bob").await;
        gw.replies("bob", 1).await;
        let mut keys: Vec<String> = gw
            .engine
            .conversations()
            .expect("list")
            .into_iter()
            .map(|c| c.routing_key)
            .collect();
        keys.sort();
        let mut expected: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        expected.sort();
        expected.dedup();
        assert_eq!(keys, expected, "{scope:?}");
        let distinct = want[0] != want[1];
        assert_eq!(
            fake.sessions().len(),
            if distinct { 2 } else { 1 },
            "{scope:?}: sessions follow the keys"
        );
        gw.stop().await;
    }
}

#[tokio::test]
async fn the_title_template_names_new_sessions() {
    let fake = FakeStakpak::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config_for(&fake);
    config.gateway.title_template = "{channel}:{chat_type}:{chat_id} from {peer}".into();
    let gw = Gateway::start(config, dir.path()).await;
    gw.chat
        .inject(gw.chat.group_message("-5", "ann", "1", "hi"))
        .await
        .expect("accept");
    gw.replies("-5", 1).await;
    assert_eq!(fake.sessions()[0].1, "chat:group:-5 from ann");
    gw.stop().await;
}
