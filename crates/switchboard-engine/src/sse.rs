//! An incremental decoder for Server-Sent Events (the WHATWG `text/event-stream` format).
//!
//! The agent server streams a session's events as SSE. The decoder is a pure value: feed it the
//! bytes as they arrive with [`SseDecoder::push`], in chunks split anywhere, and it returns the
//! frames and comments that those bytes completed. It owns no socket and never blocks, so the
//! client that owns the HTTP stream stays small and the parsing is tested with plain tables.
//!
//! It is written by hand rather than taken from a crate because the client needs behaviour the
//! common SSE crates do not offer together: a bound on the memory one frame may take (a broken or
//! hostile server must not grow the buffer forever), comments surfaced as items (the keepalive
//! is how the client knows the stream is alive), and frames that carry an `event` or `id` without
//! `data` (see [`SseDecoder`] for the one deliberate difference from the WHATWG algorithm).

use std::mem;

/// The default bound on one frame: far above any event the agent server sends (a long reply is
/// a few hundred kilobytes of JSON at most) yet small enough that a stream which never sends a
/// blank line cannot exhaust memory.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

/// One dispatched event: what the `id`, `event` and `data` fields of a frame said.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseFrame {
    /// The frame's own `id` field, if it had one. Unlike a browser's `EventSource`, the decoder
    /// does not carry the last id over to later frames: a frame without an id (the server's
    /// `gap_detected`) must be recognisable as such, and the client keeps its own cursor.
    pub id: Option<String>,
    /// The `event` field; `None` when absent or empty (which SSE calls a "message" event).
    pub event: Option<String>,
    /// The `data` lines joined with `\n`.
    pub data: String,
}

/// What one step of decoding produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A complete frame, ended by a blank line.
    Frame(SseFrame),
    /// A comment line (`: keepalive`), with the text after the colon and one optional space.
    Comment(String),
    /// A line or frame that had to be dropped (too long, or cut off by the end of the stream),
    /// with a description for the log; decoding goes on after it and never panics.
    Invalid(String),
}

/// An incremental SSE decoder; see the module documentation.
///
/// It follows the WHATWG parsing rules (CRLF, LF or CR line ends; `field:value` with one optional
/// space; comments; `data` lines joined with `\n`; an `id` containing NUL ignored; unknown
/// fields such as `retry` ignored; an unterminated frame at the end of the stream is discarded)
/// with one difference: a blank line dispatches a frame when it had data, an event name or an
/// id, where a browser would dispatch only frames with data.
#[derive(Debug)]
pub struct SseDecoder {
    max_frame_bytes: usize,
    /// The bytes of the line being read. They are decoded as UTF-8 only once the line is
    /// complete, so a character split across two reads is decoded whole.
    line: Vec<u8>,
    /// The previous read ended with CR: a LF at the start of the next read belongs to that line
    /// end and must not count as a second, empty line (which would dispatch the frame early).
    after_cr: bool,
    /// No line has been completed yet, so a byte order mark at the start is still to be removed.
    at_stream_start: bool,
    /// The frame being read is over the size bound: its lines are dropped until the blank line
    /// that ends it, and only whether the current line is empty is tracked.
    skipping: bool,
    skipped_line_has_bytes: bool,
    frame: PendingFrame,
}

/// The fields of the frame being read.
#[derive(Debug, Default)]
struct PendingFrame {
    id: Option<String>,
    event: Option<String>,
    data: String,
    has_data: bool,
    /// Bytes of the field lines kept so far, counted against the size bound.
    bytes: usize,
}

impl PendingFrame {
    fn is_empty(&self) -> bool {
        self.id.is_none() && self.event.is_none() && !self.has_data
    }
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::with_max_frame_bytes(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl SseDecoder {
    /// A decoder with the default frame bound of 8 MiB.
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder that drops (as [`SseItem::Invalid`]) any frame whose lines take more than `max`
    /// bytes, and resumes at the next frame.
    pub fn with_max_frame_bytes(max: usize) -> Self {
        Self {
            max_frame_bytes: max,
            line: Vec::new(),
            after_cr: false,
            at_stream_start: true,
            skipping: false,
            skipped_line_has_bytes: false,
            frame: PendingFrame::default(),
        }
    }

    /// Feeds the next bytes of the stream and returns what they completed, in stream order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseItem> {
        let mut out = Vec::new();
        let mut rest = bytes;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.append(&rest[..pos], &mut out);
            self.end_line(&mut out);
            let ended_with_cr = rest[pos] == b'\r';
            rest = &rest[pos + 1..];
            if ended_with_cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.append(rest, &mut out);
        out
    }

    /// Ends the stream. A frame without its closing blank line is not dispatched (the server
    /// went away mid-frame, so it may be incomplete); if anything was pending, one
    /// [`SseItem::Invalid`] says so. The decoder is then reset and can decode a new stream.
    pub fn finish(&mut self) -> Vec<SseItem> {
        let mut out = Vec::new();
        // A frame being skipped for its size was reported when the skipping began.
        if !self.line.is_empty() || !self.frame.is_empty() {
            out.push(SseItem::Invalid(format!(
                "the stream ended inside an unterminated frame{}; it was discarded",
                self.describe_frame()
            )));
        }
        *self = Self::with_max_frame_bytes(self.max_frame_bytes);
        out
    }

    /// Adds bytes to the current line, enforcing the frame bound before buffering them.
    fn append(&mut self, bytes: &[u8], out: &mut Vec<SseItem>) {
        if bytes.is_empty() {
            return;
        }
        if self.skipping {
            self.skipped_line_has_bytes = true;
            return;
        }
        let size = self.frame.bytes + self.line.len() + bytes.len();
        if size > self.max_frame_bytes {
            out.push(SseItem::Invalid(format!(
                "an SSE frame{} is larger than {} bytes; it was dropped",
                self.describe_frame(),
                self.max_frame_bytes
            )));
            self.line = Vec::new();
            self.frame = PendingFrame::default();
            self.skipping = true;
            self.skipped_line_has_bytes = true;
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn end_line(&mut self, out: &mut Vec<SseItem>) {
        let first_line = mem::replace(&mut self.at_stream_start, false);
        if self.skipping {
            // Only the blank line that ends the oversized frame matters: after it, decoding
            // starts afresh with the next frame.
            if !mem::replace(&mut self.skipped_line_has_bytes, false) {
                self.skipping = false;
            }
            return;
        }
        let mut raw = mem::take(&mut self.line);
        if first_line && raw.starts_with(b"\xEF\xBB\xBF") {
            raw.drain(..3);
        }
        if raw.is_empty() {
            self.dispatch(out);
            return;
        }
        // Line ends are ASCII and never occur inside a multi-byte sequence, so a complete line
        // holds whole characters; anything still invalid is replaced rather than rejected.
        let line = String::from_utf8_lossy(&raw);
        if let Some(comment) = line.strip_prefix(':') {
            let text = comment.strip_prefix(' ').unwrap_or(comment);
            out.push(SseItem::Comment(text.to_owned()));
            return;
        }
        self.frame.bytes += raw.len();
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => {
                if self.frame.has_data {
                    self.frame.data.push('\n');
                }
                self.frame.data.push_str(value);
                self.frame.has_data = true;
            }
            // An empty event name means the default type ("message"), which is represented
            // as no name at all.
            "event" => self.frame.event = (!value.is_empty()).then(|| value.to_owned()),
            // The spec ignores an id with NUL so that a broken id cannot poison the cursor.
            "id" if !value.contains('\0') => self.frame.id = Some(value.to_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseItem>) {
        let frame = mem::take(&mut self.frame);
        if frame.is_empty() {
            return;
        }
        out.push(SseItem::Frame(SseFrame {
            id: frame.id,
            event: frame.event,
            data: frame.data,
        }));
    }

    /// Names the pending frame by its id and event, when known, for the log.
    fn describe_frame(&self) -> String {
        match (&self.frame.id, &self.frame.event) {
            (Some(id), Some(event)) => format!(" (id {id}, event {event})"),
            (Some(id), None) => format!(" (id {id})"),
            (None, Some(event)) => format!(" (event {event})"),
            (None, None) => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: Option<&str>, event: Option<&str>, data: &str) -> SseItem {
        SseItem::Frame(SseFrame {
            id: id.map(str::to_owned),
            event: event.map(str::to_owned),
            data: data.to_owned(),
        })
    }

    fn comment(text: &str) -> SseItem {
        SseItem::Comment(text.to_owned())
    }

    fn decode_whole(input: &[u8]) -> Vec<SseItem> {
        let mut decoder = SseDecoder::new();
        let mut items = decoder.push(input);
        items.extend(decoder.finish());
        items
    }

    fn decode_split(input: &[u8], splits: &[usize]) -> Vec<SseItem> {
        let mut decoder = SseDecoder::new();
        let mut items = Vec::new();
        let mut start = 0;
        for &split in splits {
            items.extend(decoder.push(&input[start..split]));
            start = split;
        }
        items.extend(decoder.push(&input[start..]));
        items.extend(decoder.finish());
        items
    }

    /// The cases every other test builds on: (name, input, expected items).
    fn cases() -> Vec<(&'static str, &'static [u8], Vec<SseItem>)> {
        vec![
            (
                "space after the colon, as stakpak 0.3.88 writes",
                b"id: 7\nevent: text_delta\ndata: {\"a\":1}\n\n",
                vec![frame(Some("7"), Some("text_delta"), "{\"a\":1}")],
            ),
            (
                "no space after the colon, as some builds write",
                b"id:7\nevent:text_delta\ndata:{\"a\":1}\n\n",
                vec![frame(Some("7"), Some("text_delta"), "{\"a\":1}")],
            ),
            (
                "only one leading space is removed",
                b"data:  two spaces\n\n",
                vec![frame(None, None, " two spaces")],
            ),
            (
                "CRLF line ends",
                b"id: 1\r\nevent: run_started\r\ndata: x\r\n\r\n",
                vec![frame(Some("1"), Some("run_started"), "x")],
            ),
            (
                "CR line ends",
                b"id: 1\revent: run_started\rdata: x\r\r",
                vec![frame(Some("1"), Some("run_started"), "x")],
            ),
            (
                "mixed line ends",
                b"id: 1\r\nevent: a\rdata: x\n\r\nid: 2\rdata: y\r\r",
                vec![
                    frame(Some("1"), Some("a"), "x"),
                    frame(Some("2"), None, "y"),
                ],
            ),
            (
                "multi-line data is joined with LF",
                b"data: first\ndata: second\ndata:\ndata: fourth\n\n",
                vec![frame(None, None, "first\nsecond\n\nfourth")],
            ),
            (
                "a colon in the value is kept",
                b"data: {\"url\":\"http://x\"}\n\n",
                vec![frame(None, None, "{\"url\":\"http://x\"}")],
            ),
            (
                "comments with and without the space",
                b": keepalive\n\n:keepalive\n\n",
                vec![comment("keepalive"), comment("keepalive")],
            ),
            (
                "a comment inside a frame does not end it",
                b"id: 3\n: note\ndata: x\n\n",
                vec![comment("note"), frame(Some("3"), None, "x")],
            ),
            ("an empty comment", b":\n", vec![comment("")]),
            (
                "a line without a colon is a field with an empty value",
                b"data\ndata\n\n",
                vec![frame(None, None, "\n")],
            ),
            (
                "a lone data field gives an empty data frame",
                b"data\n\n",
                vec![frame(None, None, "")],
            ),
            (
                "unknown fields and retry are ignored",
                b"retry: 1000\nfoo: bar\nDATA: upper\ndata: kept\n\n",
                vec![frame(None, None, "kept")],
            ),
            (
                "a frame of unknown fields only is not dispatched",
                b"retry: 1000\n\n",
                vec![],
            ),
            (
                "an id with NUL is ignored",
                b"id: 1\0\ndata: x\n\n",
                vec![frame(None, None, "x")],
            ),
            (
                "the last id and event of a frame win",
                b"id: 1\nid: 2\nevent: a\nevent: b\ndata: x\n\n",
                vec![frame(Some("2"), Some("b"), "x")],
            ),
            (
                "an event without data is dispatched (gap_detected style)",
                b"event: gap_detected\n\n",
                vec![frame(None, Some("gap_detected"), "")],
            ),
            (
                "the contract's gap_detected frame has no id",
                b"event: gap_detected\ndata: {\"requested_after_id\":1}\n\n",
                vec![frame(
                    None,
                    Some("gap_detected"),
                    "{\"requested_after_id\":1}",
                )],
            ),
            (
                "an id without data is dispatched",
                b"id: 9\n\n",
                vec![frame(Some("9"), None, "")],
            ),
            (
                "an empty id is kept as empty",
                b"id\ndata: x\n\n",
                vec![frame(Some(""), None, "x")],
            ),
            (
                "an empty event name is the default type",
                b"event:\ndata: x\n\n",
                vec![frame(None, None, "x")],
            ),
            (
                "fields are not carried over to the next frame",
                b"id: 1\nevent: a\ndata: x\n\ndata: y\n\n",
                vec![frame(Some("1"), Some("a"), "x"), frame(None, None, "y")],
            ),
            (
                "extra blank lines dispatch nothing",
                b"\n\n\r\n\rdata: x\n\n\n\n",
                vec![frame(None, None, "x")],
            ),
            (
                "a byte order mark at the start is removed",
                b"\xEF\xBB\xBFdata: x\n\n",
                vec![frame(None, None, "x")],
            ),
            (
                "multi-byte characters survive",
                "data: hé 👋 日本\n\n".as_bytes(),
                vec![frame(None, None, "hé 👋 日本")],
            ),
            (
                "invalid UTF-8 is replaced, never rejected",
                b"data: a\xFF\xFEb\xC3\n\n",
                vec![frame(None, None, "a\u{FFFD}\u{FFFD}b\u{FFFD}")],
            ),
            (
                "an unterminated frame is not dispatched at the end",
                b"data: x\n\ndata: cut",
                vec![
                    frame(None, None, "x"),
                    SseItem::Invalid(
                        "the stream ended inside an unterminated frame; it was discarded".into(),
                    ),
                ],
            ),
            (
                "a frame without its blank line is not dispatched at the end",
                b"id: 4\ndata: cut\n",
                vec![SseItem::Invalid(
                    "the stream ended inside an unterminated frame (id 4); it was discarded".into(),
                )],
            ),
            ("an empty stream", b"", vec![]),
        ]
    }

    #[test]
    fn decodes_each_case() {
        for (name, input, expected) in cases() {
            assert_eq!(decode_whole(input), expected, "case: {name}");
        }
    }

    #[test]
    fn every_split_point_gives_the_same_items() {
        // Bytes arrive in network-sized pieces that may cut anywhere: inside a field name, a
        // multi-byte character, or between the CR and LF of one line end.
        let mut inputs: Vec<(String, Vec<u8>, Vec<SseItem>)> = cases()
            .into_iter()
            .map(|(name, input, expected)| (name.to_owned(), input.to_vec(), expected))
            .collect();
        inputs.push((
            "emoji, accents and CRLF".into(),
            "id: 1\r\nevent: text_delta\r\ndata: 👋 café\r\n\r\n: ok\r\ndata: é\r\r".into(),
            vec![
                frame(Some("1"), Some("text_delta"), "👋 café"),
                comment("ok"),
                frame(None, None, "é"),
            ],
        ));
        for (name, input, expected) in &inputs {
            for split in 0..=input.len() {
                assert_eq!(
                    &decode_split(input, &[split]),
                    expected,
                    "case {name:?} split at byte {split}"
                );
            }
            for first in 0..=input.len() {
                for second in first..=input.len() {
                    assert_eq!(
                        &decode_split(input, &[first, second]),
                        expected,
                        "case {name:?} split at bytes {first} and {second}"
                    );
                }
            }
            let one_by_one: Vec<usize> = (1..input.len()).collect();
            assert_eq!(
                &decode_split(input, &one_by_one),
                expected,
                "case {name:?} fed one byte at a time"
            );
        }
    }

    #[test]
    fn a_cr_at_the_end_of_a_read_is_not_doubled_by_an_empty_read() {
        let mut decoder = SseDecoder::new();
        let mut items = decoder.push(b"data: x\r");
        items.extend(decoder.push(b""));
        items.extend(decoder.push(b"\n"));
        assert!(
            items.is_empty(),
            "the CR LF pair is one line end: {items:?}"
        );
        items.extend(decoder.push(b"\r\n"));
        assert_eq!(items, vec![frame(None, None, "x")]);
    }

    #[test]
    fn a_one_megabyte_data_line_decodes() {
        let big = "x".repeat(1024 * 1024);
        let input = format!("id: 1\ndata: {big}\n\ndata: next\n\n");
        let mut decoder = SseDecoder::new();
        let mut items = Vec::new();
        for piece in input.as_bytes().chunks(4096) {
            items.extend(decoder.push(piece));
        }
        assert_eq!(
            items,
            vec![frame(Some("1"), None, &big), frame(None, None, "next")]
        );
    }

    #[test]
    fn a_frame_over_the_bound_is_dropped_and_the_next_one_decodes() {
        let long = "y".repeat(200);
        let cases: Vec<(&str, String, Vec<SseItem>)> = vec![
            (
                "one long line",
                format!("id: 1\ndata: {long}\nevent: e\n\ndata: ok\n\n"),
                vec![
                    SseItem::Invalid(
                        "an SSE frame (id 1) is larger than 64 bytes; it was dropped".into(),
                    ),
                    frame(None, None, "ok"),
                ],
            ),
            (
                "many short lines",
                format!("{}\ndata: ok\n\n", "data: 0123456789\n".repeat(10)),
                vec![
                    SseItem::Invalid("an SSE frame is larger than 64 bytes; it was dropped".into()),
                    frame(None, None, "ok"),
                ],
            ),
            (
                "a long line that never ends",
                format!("data: ok\n\ndata: {long}"),
                vec![
                    frame(None, None, "ok"),
                    SseItem::Invalid("an SSE frame is larger than 64 bytes; it was dropped".into()),
                ],
            ),
            (
                "frames at the bound are kept",
                format!("data: {}\n\n", "z".repeat(58)),
                vec![frame(None, None, &"z".repeat(58))],
            ),
        ];
        for (name, input, expected) in cases {
            for piece_len in [1, 7, 64, input.len()] {
                let mut decoder = SseDecoder::with_max_frame_bytes(64);
                let mut items = Vec::new();
                for piece in input.as_bytes().chunks(piece_len) {
                    items.extend(decoder.push(piece));
                }
                items.extend(decoder.finish());
                assert_eq!(items, expected, "case {name:?} in pieces of {piece_len}");
            }
        }
    }

    #[test]
    fn the_buffer_stays_bounded_while_a_frame_is_dropped() {
        let mut decoder = SseDecoder::with_max_frame_bytes(1024);
        let mut invalid = 0;
        for _ in 0..10_000 {
            for item in decoder.push(&[b'a'; 1000]) {
                assert!(matches!(item, SseItem::Invalid(_)), "{item:?}");
                invalid += 1;
            }
            assert!(decoder.line.len() <= 1024, "the line buffer must not grow");
        }
        assert_eq!(invalid, 1, "one oversized frame is reported once");
        assert_eq!(
            decoder.push(b"\n\ndata: after\n\n"),
            vec![frame(None, None, "after")]
        );
    }

    #[test]
    fn finish_resets_the_decoder_for_a_new_stream() {
        let mut decoder = SseDecoder::new();
        assert!(decoder.push(b"id: 5\ndata: half").is_empty());
        assert_eq!(decoder.finish().len(), 1);
        assert!(
            decoder.finish().is_empty(),
            "nothing is pending after a reset"
        );
        assert_eq!(
            decoder.push(b"\xEF\xBB\xBFdata: fresh\n\n"),
            vec![frame(None, None, "fresh")],
            "the new stream starts clean, byte order mark included"
        );
    }

    /// Checks a real capture: every frame's id and event name match the envelope in its data.
    fn check_capture(raw: &str, expected_events: &[&str]) {
        let frames: Vec<SseFrame> = decode_whole(raw.as_bytes())
            .into_iter()
            .map(|item| match item {
                SseItem::Frame(frame) => frame,
                other => panic!("a capture holds only frames, got {other:?}"),
            })
            .collect();
        let events: Vec<&str> = frames.iter().filter_map(|f| f.event.as_deref()).collect();
        assert_eq!(events, expected_events);
        for (index, frame) in frames.iter().enumerate() {
            let envelope: serde_json::Value =
                serde_json::from_str(&frame.data).expect("each data field is one JSON envelope");
            assert_eq!(
                frame.id,
                Some((index + 1).to_string()),
                "ids count up from 1"
            );
            assert_eq!(
                envelope["id"].as_u64(),
                Some(index as u64 + 1),
                "the SSE id is the envelope id"
            );
        }
        // The same bytes with CRLF line ends and without the space after the colon decode to
        // the same frames, as other server builds write them.
        let variants = [
            raw.replace('\n', "\r\n"),
            raw.replace("id: ", "id:")
                .replace("event: ", "event:")
                .replace("data: ", "data:"),
        ];
        for variant in variants {
            let again: Vec<SseItem> = decode_whole(variant.as_bytes());
            let expected: Vec<SseItem> = frames.iter().cloned().map(SseItem::Frame).collect();
            assert_eq!(again, expected);
        }
    }

    #[test]
    fn decodes_the_basic_echo_capture() {
        check_capture(
            include_str!("../tests/fixtures/basic_echo.sse"),
            &[
                "run_started",
                "turn_started",
                "text_delta",
                "text_complete",
                "usage_report",
                "turn_completed",
                "run_completed",
            ],
        );
    }

    #[test]
    fn decodes_the_tool_approve_capture() {
        check_capture(
            include_str!("../tests/fixtures/tool_approve.sse"),
            &[
                "run_started",
                "turn_started",
                "usage_report",
                "tool_calls_proposed",
                "waiting_for_tool_approval",
                "tool_execution_started",
                "tool_execution_completed",
                "turn_completed",
                "turn_started",
                "text_delta",
                "text_complete",
                "usage_report",
                "turn_completed",
                "run_completed",
            ],
        );
    }
}
