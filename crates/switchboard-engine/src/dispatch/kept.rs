//! A conversation's event stream, kept open for a while after its run ended, so the next run
//! (the person's next message, usually within seconds) needs no new subscription: no connection,
//! no request, no round trip before its POST.
//!
//! Kept, it is still a subscription made before the POST, so pitfall 1 of the server's contract
//! holds: the conversation's task reads it while no run is followed (keepalives, other runs'
//! events), so the server never finds it lagging, and gives it up when it breaks, when the event
//! ids start over (the server restarted), when the server settings change, or after
//! [`KEEP_FOR`]. Any doubt means a fresh subscription from the stored cursor, as before.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::agent::{EventStream, StreamItem};

/// How long a stream is kept after the run it followed ended.
const KEEP_FOR: Duration = Duration::from_secs(60);
/// At most this many streams are kept at once (each holds a connection to the server, and a
/// file descriptor on both ends); beyond it, a run's stream closes with the run, as before.
const MAX_KEPT: usize = 256;

/// A session's event stream between two runs of its conversation.
pub(crate) struct KeptStream {
    session: String,
    /// The server settings it was opened under ([`super::Dispatcher::server_generation`]).
    generation: u64,
    stream: EventStream,
    /// The id of the last event read from it.
    last_id: Option<i64>,
    until: Instant,
    _slot: Slot,
}

/// One of the [`MAX_KEPT`] places, given back when the stream is dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How many streams are kept now.
#[derive(Default, Clone)]
pub(crate) struct KeptCount(Arc<AtomicUsize>);

impl KeptCount {
    fn take(&self) -> Option<Slot> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_KEPT).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(Arc::clone(&self.0)))
    }
}

impl KeptStream {
    /// Keeps a run's stream after the run, if a place is free.
    pub(crate) fn keep(
        count: &KeptCount,
        session: &str,
        generation: u64,
        stream: EventStream,
        last_id: Option<i64>,
    ) -> Option<KeptStream> {
        Some(KeptStream {
            session: session.to_owned(),
            generation,
            stream,
            last_id,
            until: Instant::now() + KEEP_FOR,
            _slot: count.take()?,
        })
    }

    /// The stream and the id of its last event, for a run about to be posted to `session` under
    /// the server settings of `generation`; `None` when it is not this session's, is from other
    /// settings, or was kept too long.
    pub(crate) fn reuse(
        self,
        session: &str,
        generation: u64,
    ) -> Option<(EventStream, Option<i64>)> {
        self.serves(session, generation)
            .then_some((self.stream, self.last_id))
    }

    /// Whether the stream can serve a run posted to `session` under the settings of `generation`.
    fn serves(&self, session: &str, generation: u64) -> bool {
        self.session == session && self.current(generation)
    }

    /// Whether the stream is from the server settings of `generation` and not kept too long.
    fn current(&self, generation: u64) -> bool {
        self.generation == generation && Instant::now() < self.until
    }

    /// Its session and the id of the last event read from it, while it can serve a run posted
    /// under the server settings of `generation`: where that run's events will start (the stored
    /// cursor is never ahead of it).
    pub(crate) fn position(&self, generation: u64) -> Option<(String, i64)> {
        let last = self.last_id?;
        self.current(generation)
            .then(|| (self.session.clone(), last))
    }

    /// Reads what comes while no run is followed, and returns when the stream is no longer
    /// worth keeping: it broke or ended, lost events, its ids started over, or it was kept for
    /// [`KEEP_FOR`]. Cancel-safe: a run that starts meanwhile takes the stream where it is.
    pub(crate) async fn lapse(&mut self) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(self.until) => return,
                item = self.stream.next() => match item {
                    Some(Ok(StreamItem::Event(event))) => {
                        if let Some(id) = event.id {
                            if self.last_id.is_some_and(|last| id <= last) {
                                return;
                            }
                            self.last_id = Some(id);
                        }
                    }
                    Some(Ok(StreamItem::Keepalive | StreamItem::Malformed(_))) => {}
                    Some(Ok(StreamItem::Gap(_)) | Err(_)) | None => return,
                },
            }
        }
    }
}

/// Waits until a conversation's kept stream lapses; never, when it has none.
pub(crate) async fn lapsed(kept: &mut Option<KeptStream>) {
    match kept {
        Some(stream) => stream.lapse().await,
        None => std::future::pending().await,
    }
}
