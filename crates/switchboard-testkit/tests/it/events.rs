//! The event stream: order, ids, replay, gaps, keepalive, framing variants, cuts and junk.

use std::time::Duration;

use serde_json::json;
use switchboard_testkit::stakpak::{FakeOptions, FakeStakpak};

use crate::support::{assert_same_shape, ids, names, Client};

#[tokio::test]
async fn a_plain_reply_has_the_event_order_and_shape_of_the_capture() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("basic").await;
    let mut stream = client.stream(&session, None).await;
    let run_id = client.send(&session, "hello rig").await;

    let frames = stream.events_until("run_completed").await;
    assert_same_shape(&frames, "basic_echo.sse");
    assert_eq!(ids(&frames), (1..=7).collect::<Vec<_>>());
    for frame in &frames {
        let envelope = frame.json();
        assert_eq!(envelope["id"], json!(frame.id), "envelope id = frame id");
        assert_eq!(envelope["session_id"], json!(session));
        assert_eq!(envelope["run_id"], json!(run_id));
        assert_eq!(
            frame.payload()["run_id"],
            json!(run_id),
            "payloads carry run_id"
        );
        let ts = envelope["timestamp"].as_str().expect("timestamp");
        assert!(
            ts.len() == 30 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "RFC 3339 with nanoseconds: {ts}"
        );
    }
    assert_eq!(frames[2].payload()["delta"], "echo: hello rig");
    assert_eq!(frames[3].payload()["text"], "echo: hello rig");
    assert_eq!(frames[6].payload()["stop_reason"], "completed");
    assert_eq!(frames[6].payload()["total_turns"], 1);

    let raw = String::from_utf8(stream.raw.clone()).expect("utf-8");
    assert!(
        raw.starts_with("id: 1\nevent: run_started\ndata: {\"id\":1,\"session_id\":"),
        "stakpak 0.3.88 framing: {raw:.80}"
    );
    fake.wait_for("the run to be idle", |f| {
        f.run_state(&session).as_deref() == Some("idle")
    })
    .await;
}

#[tokio::test]
async fn ids_start_at_one_and_continue_across_runs() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("ids").await;
    let mut stream = client.stream(&session, None).await;
    client.send(&session, "first").await;
    let first = stream.events_until("run_completed").await;
    client.send(&session, "second").await;
    let second = stream.events_until("run_completed").await;
    assert_eq!(ids(&first), (1..=7).collect::<Vec<_>>());
    assert_eq!(
        ids(&second),
        (8..=14).collect::<Vec<_>>(),
        "ids are per session and contiguous"
    );

    let other = client.create_session("other").await;
    let mut other_stream = client.stream(&other, None).await;
    client.send(&other, "x").await;
    let frames = other_stream.events_until("run_completed").await;
    assert_eq!(
        ids(&frames),
        (1..=7).collect::<Vec<_>>(),
        "another session counts from 1"
    );
}

async fn session_with_two_runs(fake: &FakeStakpak) -> (Client, String) {
    let client = Client::new(fake);
    let session = client.create_session("replay").await;
    let mut stream = client.stream(&session, None).await;
    client.send(&session, "one").await;
    stream.events_until("run_completed").await;
    client.send(&session, "two").await;
    stream.events_until("run_completed").await;
    (client, session)
}

#[tokio::test]
async fn last_event_id_replays_what_follows_it() {
    let fake = FakeStakpak::start().await;
    let (client, session) = session_with_two_runs(&fake).await;

    let mut from_zero = client.stream(&session, Some(0)).await;
    let frames = from_zero.events_within(Duration::from_millis(300)).await;
    assert_eq!(
        ids(&frames),
        (1..=14).collect::<Vec<_>>(),
        "Last-Event-ID 0 replays everything"
    );

    let mut from_two = client.stream(&session, Some(2)).await;
    let frames = from_two.events_within(Duration::from_millis(300)).await;
    assert_eq!(
        ids(&frames),
        (3..=14).collect::<Vec<_>>(),
        "replay starts after the id"
    );
    assert_eq!(frames[0].name(), "text_delta");

    let mut too_new = client.stream(&session, Some(9999)).await;
    let mut fresh = client.stream(&session, None).await;
    assert!(
        too_new
            .events_within(Duration::from_millis(300))
            .await
            .is_empty(),
        "an id above the newest replays nothing, silently"
    );
    assert!(
        fresh
            .events_within(Duration::from_millis(300))
            .await
            .is_empty(),
        "no Last-Event-ID: no replay"
    );

    client.send(&session, "three").await;
    let live = too_new.events_until("run_completed").await;
    assert_eq!(
        ids(&live),
        (15..=21).collect::<Vec<_>>(),
        "then live events"
    );
    let live = fresh.events_until("run_completed").await;
    assert_eq!(ids(&live), (15..=21).collect::<Vec<_>>());
    let live = from_two.events_until("run_completed").await;
    assert_eq!(
        ids(&live),
        (15..=21).collect::<Vec<_>>(),
        "replay is followed by live events"
    );
}

#[tokio::test]
async fn an_id_older_than_the_ring_gets_one_gap_frame_then_live_events() {
    let fake = FakeStakpak::start_with(FakeOptions {
        ring_capacity: 5,
        ..FakeOptions::default()
    })
    .await;
    let client = Client::new(&fake);
    let session = client.create_session("gap").await;
    let mut stream = client.stream(&session, None).await;
    client.send(&session, "fill the ring").await;
    stream.events_until("run_completed").await;
    assert_eq!(
        fake.events(&session)
            .iter()
            .map(|e| e.0)
            .collect::<Vec<_>>(),
        vec![3, 4, 5, 6, 7]
    );

    let mut gapped = client.stream(&session, Some(1)).await;
    let gap = gapped.next_event().await;
    assert_eq!(gap.name(), "gap_detected");
    assert_eq!(gap.id, None, "the gap frame has no id");
    assert_eq!(
        gap.json(),
        json!({
            "requested_after_id": 1,
            "oldest_available_id": 3,
            "newest_available_id": 7,
            "resume_hint": "refresh_snapshot_then_resume",
        })
    );
    assert!(
        gapped
            .events_within(Duration::from_millis(200))
            .await
            .is_empty(),
        "nothing is replayed after the gap"
    );

    let mut resumed = client.stream(&session, Some(2)).await;
    let frames = resumed.events_within(Duration::from_millis(300)).await;
    assert_eq!(
        ids(&frames),
        vec![3, 4, 5, 6, 7],
        "oldest - 1 resumes without a gap"
    );

    client.send(&session, "live").await;
    let live = gapped.events_until("run_completed").await;
    assert_eq!(
        ids(&live),
        (8..=14).collect::<Vec<_>>(),
        "live events follow the gap frame"
    );
}

#[tokio::test]
async fn an_idle_stream_gets_keepalive_comments() {
    let fake = FakeStakpak::start_with(FakeOptions {
        keepalive: Duration::from_millis(200),
        ..FakeOptions::default()
    })
    .await;
    let client = Client::new(&fake);
    let session = client.create_session("keepalive").await;
    let mut stream = client.stream(&session, None).await;
    let frame = stream
        .next_frame_within(Duration::from_secs(2))
        .await
        .expect("a keepalive within 2 s");
    assert_eq!(frame.comments, vec!["keepalive".to_string()]);
    assert_eq!(String::from_utf8_lossy(&stream.raw), ": keepalive\n\n");
}

#[tokio::test]
async fn a_stream_for_an_unknown_session_answers_200_and_stays_empty() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let mut stream = client
        .stream("00000000-0000-0000-0000-000000000000", None)
        .await;
    assert!(stream
        .events_within(Duration::from_millis(300))
        .await
        .is_empty());
    assert!(!stream.ended(), "the stream stays open");
}

#[tokio::test]
async fn a_client_that_waits_for_the_200_then_posts_never_misses_the_first_event() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("subscribe first").await;
    for round in 0..15u64 {
        let mut stream = client.stream(&session, None).await;
        client.send(&session, "quick").await;
        let first = stream.next_event().await;
        assert_eq!(first.name(), "run_started", "round {round}");
        assert_eq!(first.id, Some(round * 7 + 1), "round {round}");
        stream.events_until("run_completed").await;
    }
}

#[tokio::test]
async fn no_space_crlf_framing_in_three_byte_pieces() {
    let fake = FakeStakpak::start_with(FakeOptions {
        no_space_framing: true,
        crlf: true,
        split_writes: true,
        keepalive: Duration::from_millis(300),
        ..FakeOptions::default()
    })
    .await;
    let client = Client::new(&fake);
    let session = client.create_session("framing").await;
    let mut stream = client.stream(&session, None).await;
    client.send(&session, "BIG_REPLY 3000 👋 é").await;
    let frames = stream.events_until("run_completed").await;
    assert_eq!(ids(&frames), (1..=7).collect::<Vec<_>>());
    let delta = frames[2].payload()["delta"]
        .as_str()
        .expect("delta")
        .to_string();
    assert_eq!(delta.len(), 3000, "BIG_REPLY gives exactly that many bytes");
    assert!(delta.contains('👋') && delta.contains('é'));
    assert!(
        stream.chunks > 100,
        "written in small pieces ({} chunks)",
        stream.chunks
    );
    assert!(
        stream.split_utf8_chunks > 0,
        "some pieces split a multi-byte character"
    );
    let raw = String::from_utf8(stream.raw.clone()).expect("utf-8 once reassembled");
    assert!(
        raw.starts_with("id:1\r\nevent:run_started\r\ndata:{\"id\":1,"),
        "no-space CRLF framing: {raw:.60}"
    );
    let ka = stream
        .next_frame_within(Duration::from_secs(2))
        .await
        .expect("keepalive");
    assert_eq!(ka.comments, vec!["keepalive".to_string()]);
    assert!(String::from_utf8_lossy(&stream.raw).ends_with(":keepalive\r\n\r\n"));
}

#[tokio::test]
async fn drop_stream_cuts_the_stream_and_the_run_carries_on_into_the_ring() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("drop").await;
    let mut stream = client.stream(&session, None).await;
    client.send(&session, "DROP_STREAM then answer").await;
    let before = stream.expect_end(Duration::from_secs(5)).await;
    assert_eq!(names(&before), vec!["run_started", "turn_started"]);

    fake.wait_for("the run to end", |f| {
        f.run_state(&session).as_deref() == Some("idle")
    })
    .await;
    let mut resumed = client.stream(&session, Some(2)).await;
    let rest = resumed.events_until("run_completed").await;
    assert_eq!(
        ids(&rest),
        (3..=7).collect::<Vec<_>>(),
        "the rest is in the ring"
    );
    assert_eq!(rest[0].payload()["delta"], "echo: DROP_STREAM then answer");
}

#[tokio::test]
async fn drop_streams_cuts_every_open_stream() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let a = client.create_session("a").await;
    let b = client.create_session("b").await;
    let mut sa = client.stream(&a, None).await;
    let mut sb = client.stream(&b, None).await;
    fake.drop_streams();
    assert!(sa.expect_end(Duration::from_secs(2)).await.is_empty());
    assert!(sb.expect_end(Duration::from_secs(2)).await.is_empty());
}

#[tokio::test]
async fn malformed_sse_junk_comes_before_a_normal_reply() {
    let fake = FakeStakpak::start().await;
    let client = Client::new(&fake);
    let session = client.create_session("junk").await;
    let mut stream = client.stream(&session, None).await;
    client.send(&session, "MALFORMED_SSE hi").await;
    let frames = stream.events_until("run_completed").await;
    let raw = String::from_utf8(stream.raw.clone()).expect("utf-8");
    assert!(raw.contains("\nthis line has no colon\n"), "{raw}");
    assert!(raw.contains("\nretry: x\n"), "{raw}");
    assert!(frames
        .iter()
        .any(|f| f.data.as_deref() == Some("{not json")));
    assert!(frames.iter().any(|f| f.name() == "mystery_event"));
    let real: Vec<_> = frames.into_iter().filter(|f| f.id.is_some()).collect();
    assert_eq!(
        names(&real),
        vec![
            "run_started",
            "turn_started",
            "text_delta",
            "text_complete",
            "usage_report",
            "turn_completed",
            "run_completed"
        ]
    );
    assert_eq!(ids(&real), (1..=7).collect::<Vec<_>>(), "junk takes no ids");
}
