//! SSE framing and the body of one event-stream subscriber.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use tokio::sync::mpsc::UnboundedReceiver;

/// One stored event of a session's ring.
#[derive(Debug)]
pub(crate) struct StoredEvent {
    pub id: u64,
    pub name: &'static str,
    /// The JSON envelope.
    pub data: String,
}

/// What the server pushes to one subscriber.
#[derive(Clone, Debug)]
pub(crate) enum StreamItem {
    Event(Arc<StoredEvent>),
    /// `event: gap_detected` with this data and no id.
    Gap(String),
    /// Bytes written as they are (scripted junk).
    Raw(String),
    /// Cut the connection without a closing frame.
    Cut,
}

/// How frames are written: `id: 7` (stakpak 0.3.88) or `id:7`, LF or CRLF.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Framing {
    pub space: bool,
    pub crlf: bool,
}

impl Framing {
    pub(crate) fn eol(self) -> &'static str {
        if self.crlf {
            "\r\n"
        } else {
            "\n"
        }
    }

    fn field(self, out: &mut String, name: &str, value: &str) {
        out.push_str(name);
        out.push(':');
        if self.space {
            out.push(' ');
        }
        out.push_str(value);
        out.push_str(self.eol());
    }

    /// `id: N\nevent: name\ndata: …\n\n`; a multi-line `data` becomes several `data:` lines.
    pub(crate) fn event(self, id: Option<u64>, name: &str, data: &str) -> String {
        let mut out = String::with_capacity(data.len() + 48);
        if let Some(id) = id {
            self.field(&mut out, "id", &id.to_string());
        }
        self.field(&mut out, "event", name);
        for line in data.split('\n') {
            self.field(&mut out, "data", line);
        }
        out.push_str(self.eol());
        out
    }

    /// `: keepalive\n\n`.
    pub(crate) fn comment(self, text: &str) -> String {
        let mut out = String::from(":");
        if self.space {
            out.push(' ');
        }
        out.push_str(text);
        out.push_str(self.eol());
        out.push_str(self.eol());
        out
    }

    pub(crate) fn render(self, item: &StreamItem) -> Option<String> {
        match item {
            StreamItem::Event(ev) => Some(self.event(Some(ev.id), ev.name, &ev.data)),
            StreamItem::Gap(data) => Some(self.event(None, "gap_detected", data)),
            StreamItem::Raw(raw) => Some(raw.clone()),
            StreamItem::Cut => None,
        }
    }
}

/// How a subscriber's body writes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Writing {
    pub framing: Framing,
    pub keepalive: Duration,
    /// Write in pieces of this many bytes, yielding between pieces so each goes out on its own.
    pub split: Option<usize>,
}

/// Time the body waits before cutting, so that frames already handed to hyper are flushed first.
const FLUSH_BEFORE_CUT: Duration = Duration::from_millis(20);

struct BodyState {
    rx: UnboundedReceiver<StreamItem>,
    queued: VecDeque<Bytes>,
    writing: Writing,
    done: bool,
}

/// The response body of `GET …/events` for one subscriber.
///
/// A `Cut` ends the body with an error, which makes hyper drop the connection without the final
/// chunk: the client sees a cut stream, as when the real server stops.
pub(crate) fn subscriber_body(rx: UnboundedReceiver<StreamItem>, writing: Writing) -> Body {
    let state = BodyState {
        rx,
        queued: VecDeque::new(),
        writing,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            if let Some(piece) = st.queued.pop_front() {
                if st.writing.split.is_some() {
                    // Returning Pending once makes hyper flush the previous piece on its own.
                    tokio::task::yield_now().await;
                }
                return Some((Ok(piece), st));
            }
            let text = match tokio::time::timeout(st.writing.keepalive, st.rx.recv()).await {
                Err(_idle) => st.writing.framing.comment("keepalive"),
                Ok(Some(item)) => match st.writing.framing.render(&item) {
                    Some(text) => text,
                    None => return cut(st).await,
                },
                // The server let go of this subscriber (shutdown): cut as well.
                Ok(None) => return cut(st).await,
            };
            queue(&mut st, text);
        }
    });
    Body::from_stream(stream)
}

async fn cut(mut st: BodyState) -> Option<(Result<Bytes, io::Error>, BodyState)> {
    tokio::time::sleep(FLUSH_BEFORE_CUT).await;
    st.done = true;
    Some((
        Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "event stream cut by the fake server",
        )),
        st,
    ))
}

fn queue(st: &mut BodyState, text: String) {
    let bytes = Bytes::from(text);
    match st.writing.split {
        Some(size) if size > 0 => {
            let mut at = 0;
            while at < bytes.len() {
                let end = (at + size).min(bytes.len());
                st.queued.push_back(bytes.slice(at..end));
                at = end;
            }
        }
        _ => st.queued.push_back(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_in_each_framing() {
        let spaced = Framing {
            space: true,
            crlf: false,
        };
        let tight = Framing {
            space: false,
            crlf: true,
        };
        assert_eq!(
            spaced.event(Some(7), "text_delta", "{}"),
            "id: 7\nevent: text_delta\ndata: {}\n\n"
        );
        assert_eq!(
            tight.event(Some(7), "text_delta", "{}"),
            "id:7\r\nevent:text_delta\r\ndata:{}\r\n\r\n"
        );
        assert_eq!(
            spaced.event(None, "gap_detected", "a\nb"),
            "event: gap_detected\ndata: a\ndata: b\n\n"
        );
        assert_eq!(spaced.comment("keepalive"), ": keepalive\n\n");
        assert_eq!(tight.comment("keepalive"), ":keepalive\r\n\r\n");
    }
}
