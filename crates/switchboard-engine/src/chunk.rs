//! Splitting a reply into messages that fit a channel's size limit.
//!
//! Chat platforms cap the length of one message, and the agent's replies are often longer. A
//! reply is split where a reader would expect a break: between paragraphs, then between lines,
//! then between words, and only as a last resort inside a word. Markdown code fences get special
//! care: a fenced block that fits in one message is never cut, and one that does not fit is cut
//! with the fence closed at the end of each message and reopened (with the same info string) at
//! the start of the next, so every message renders as code. Nothing is ever dropped except
//! whitespace at the cuts.
//!
//! The split is computed over byte positions of the original text: each message is a slice of
//! the reply, plus any fence markers added at its ends. That keeps the original spacing inside
//! each message and makes "nothing is dropped" hold by construction.

/// How a platform counts the length of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthUnit {
    /// Unicode scalar values (Rust `char`s).
    Chars,
    /// UTF-16 code units: an emoji outside the Basic Multilingual Plane counts twice. Telegram
    /// counts this way, so measuring in UTF-16 is the safe reading of its limit.
    Utf16,
}

/// The largest message a channel accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextLimit {
    /// The largest measured length of one message.
    pub max: usize,
    /// The unit `max` is counted in.
    pub unit: LengthUnit,
}

impl TextLimit {
    /// Telegram: 4096 characters as UTF-16 code units.
    pub const TELEGRAM: TextLimit = TextLimit {
        max: 4096,
        unit: LengthUnit::Utf16,
    };
    /// Discord: 2000 characters.
    pub const DISCORD: TextLimit = TextLimit {
        max: 2000,
        unit: LengthUnit::Chars,
    };
    /// Slack: about 4000 characters display well (it truncates silently far beyond that).
    pub const SLACK: TextLimit = TextLimit {
        max: 4000,
        unit: LengthUnit::Chars,
    };

    /// The length of `s` in this limit's unit.
    pub fn measure(&self, s: &str) -> usize {
        match self.unit {
            LengthUnit::Chars => s.chars().count(),
            LengthUnit::Utf16 => s.encode_utf16().count(),
        }
    }
}

/// Splits `text` into messages that each measure at most `limit.max`.
///
/// Text that fits is returned unchanged as one message; empty or all-whitespace text gives no
/// messages. Otherwise the messages are packed greedily, each cut at the best boundary available
/// (paragraph, line, word, character; never inside a character, a UTF-16 surrogate pair or, where
/// it can be helped, a combining sequence), and fenced code blocks are kept whole where they fit
/// or closed and reopened where they do not, the added markers counting toward the limit.
///
/// A limit too small for the fence markers (about 16 and below) splits code blocks without
/// reopening them. A limit smaller than one character (0, or 1 with an emoji counted in UTF-16)
/// cannot be honoured: such a character is then sent alone rather than dropped.
pub fn chunk_text(text: &str, limit: TextLimit) -> Vec<String> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    if limit.measure(text) <= limit.max {
        return vec![text.to_owned()];
    }
    split_pieces(text, limit)
        .into_iter()
        .map(|piece| format!("{}{}{}", piece.reopen, piece.body, piece.close))
        .collect()
}

/// One message as its parts: the fence marker added at its start (or ""), the slice of the
/// original text, and the fence marker added at its end (or "").
#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece<'a> {
    reopen: String,
    body: &'a str,
    close: String,
}

fn split_pieces(text: &str, limit: TextLimit) -> Vec<Piece<'_>> {
    let mut packer = Packer::new(text, limit);
    let count = packer.atoms.len();
    if count > 0 {
        packer.pack(0, count, Gap::Block);
    }
    packer.flush();
    let Packer { fences, spans, .. } = packer;
    spans
        .into_iter()
        .map(|span| Piece {
            reopen: span
                .reopen
                .map(|f| fences[f].reopen.clone())
                .unwrap_or_default(),
            body: &text[span.start..span.end],
            close: span
                .close
                .map(|f| fences[f].close.clone())
                .unwrap_or_default(),
        })
        .collect()
}

/// How good a place to cut the gap between two atoms is. The order matters: a group of atoms
/// at one level is split at gaps of that level or above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Gap {
    /// Never cut here unless a single character must be placed: between a fence's opening line
    /// and the code after it (a message must not end with a bare opening fence) and before a
    /// closing fence (a message must not start with one).
    Glue,
    /// Whitespace inside a line.
    Word,
    /// A line break.
    Line,
    /// A blank line between paragraphs, or the edge of a fenced code block.
    Block,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AtomKind {
    Word,
    /// A fence's opening line (```` ```rust ````), kept whole.
    Opener,
    /// A fence's closing line, kept whole.
    Closer,
}

/// A run of text that is never cut unless it is longer than a message: a word, or a whole
/// fence line.
#[derive(Debug, Clone, Copy)]
struct Atom {
    start: usize,
    end: usize,
    kind: AtomKind,
    /// The fenced block this atom belongs to, fence lines included.
    fence: Option<usize>,
}

/// A fenced code block.
#[derive(Debug)]
struct Fence {
    /// The end of the opening fence line's text.
    opener_end: usize,
    /// The start and end of the closing fence line's text; `None` when the block is never
    /// closed and runs to the end of the text.
    closer: Option<(usize, usize)>,
    /// Added at the start of a message that begins inside the block: the opening line again.
    reopen: String,
    /// Added at the end of a message that ends inside the block.
    close: String,
    /// Whether the markers leave room for content; if not, the block is cut like plain text.
    marked: bool,
}

/// One finished message, as positions in the original text.
#[derive(Debug)]
struct Span {
    start: usize,
    end: usize,
    reopen: Option<usize>,
    close: Option<usize>,
}

/// The message being filled.
#[derive(Debug, Clone, Copy)]
struct Open {
    start: usize,
    /// The measured length of `text[start..packer.done]`.
    body: usize,
}

struct Packer<'a> {
    text: &'a str,
    limit: TextLimit,
    atoms: Vec<Atom>,
    /// `gaps[i]` is the gap before `atoms[i]`.
    gaps: Vec<Gap>,
    fences: Vec<Fence>,
    /// Everything before this position has been placed in a message.
    done: usize,
    open: Option<Open>,
    spans: Vec<Span>,
}

impl<'a> Packer<'a> {
    fn new(text: &'a str, limit: TextLimit) -> Self {
        let (atoms, fences) = scan(text, limit);
        let gaps = atoms
            .iter()
            .enumerate()
            .map(|(i, atom)| match i.checked_sub(1).map(|p| &atoms[p]) {
                None => Gap::Block,
                Some(prev) => gap_between(text, prev, atom),
            })
            .collect();
        Self {
            text,
            limit,
            atoms,
            gaps,
            fences,
            done: 0,
            open: None,
            spans: Vec::new(),
        }
    }

    /// Places `atoms[lo..hi]`, taking the groups between gaps of at least `level` one at a time.
    fn pack(&mut self, lo: usize, hi: usize, level: Gap) {
        let mut start = lo;
        while start < hi {
            let mut end = start + 1;
            while end < hi && self.gaps[end] < level {
                end += 1;
            }
            self.place_group(start, end, level);
            start = end;
        }
    }

    fn place_group(&mut self, start: usize, end: usize, level: Gap) {
        // The group goes in the current message if it fits, else whole into the next one if it
        // fits there (this is what keeps paragraphs and code blocks together), and only a group
        // too big for any message is cut, its first parts filling the current message.
        if self.place(self.atoms[end - 1].end) {
            return;
        }
        match level {
            Gap::Block => self.pack(start, end, Gap::Line),
            Gap::Line => self.pack(start, end, Gap::Word),
            Gap::Word | Gap::Glue => self.hard_split(start, end),
        }
    }

    /// Cuts a group inside its words: between grapheme-like clusters, keeping fence lines and
    /// the code they are glued to together where they fit, and between characters only when a
    /// cluster alone is wider than a message.
    fn hard_split(&mut self, start: usize, end: usize) {
        let clusters = self.clusters(start, end);
        let mut i = 0;
        while i < clusters.len() {
            let mut j = i;
            while !clusters[j].breakable_after && j + 1 < clusters.len() {
                j += 1;
            }
            if !self.place(clusters[j].end) {
                for cluster in &clusters[i..=j] {
                    if !self.place(cluster.end) {
                        self.place_chars(cluster.end);
                    }
                }
            }
            i = j + 1;
        }
    }

    /// Places the text up to `end` one character at a time, forcing a character that does not
    /// fit even in an empty message into one of its own: sending it over the limit is better
    /// than dropping it or looping forever.
    fn place_chars(&mut self, end: usize) {
        let from = self.done;
        let text = self.text;
        for (i, c) in text[from..end].char_indices() {
            if c.is_whitespace() {
                continue;
            }
            let char_end = from + i + c.len_utf8();
            if !self.place(char_end) {
                self.flush();
                let rest = &text[self.done..char_end];
                let start = self.done + (rest.len() - rest.trim_start().len());
                self.open = Some(Open {
                    start,
                    body: self.limit.measure(&text[start..char_end]),
                });
                self.done = char_end;
            }
        }
    }

    /// Extends the current message to `end` if it fits, else starts a new one if the text
    /// fits there; reports whether it was placed.
    fn place(&mut self, end: usize) -> bool {
        if self.extend(end) {
            return true;
        }
        if self.open.is_some() {
            if let Some(fresh) = self.fresh(end) {
                self.flush();
                self.open = Some(fresh);
                self.done = end;
                return true;
            }
        }
        false
    }

    /// Extends the current message (or an empty one) to `end` if the result fits.
    fn extend(&mut self, end: usize) -> bool {
        let next = match self.open {
            Some(open) => {
                let body = open.body + self.limit.measure(&self.text[self.done..end]);
                self.fits(open.start, body, end).then_some(Open {
                    start: open.start,
                    body,
                })
            }
            None => self.fresh(end),
        };
        let Some(next) = next else {
            return false;
        };
        self.open = Some(next);
        self.done = end;
        true
    }

    /// A new message holding the unplaced text up to `end`, if it fits.
    ///
    /// The whitespace at the cut is dropped, except that a message starting inside a code
    /// block keeps the indentation of its first line when there is room for it: there it
    /// carries meaning (Python, YAML), while in prose it would only push the text over.
    fn fresh(&self, end: usize) -> Option<Open> {
        let rest = &self.text[self.done..end];
        let first = self.done + (rest.len() - rest.trim_start().len());
        let line_start = self.text[self.done..first]
            .rfind('\n')
            .map(|newline| self.done + newline + 1)
            .filter(|_| self.inside_fence(first));
        line_start.into_iter().chain([first]).find_map(|start| {
            let body = self.limit.measure(&self.text[start..end]);
            self.fits(start, body, end).then_some(Open { start, body })
        })
    }

    fn fits(&self, start: usize, body: usize, end: usize) -> bool {
        let reopen = self
            .fence_open_at(start)
            .map_or(0, |f| self.limit.measure(&self.fences[f].reopen));
        let close = self
            .fence_unclosed_at(end)
            .map_or(0, |f| self.limit.measure(&self.fences[f].close));
        reopen + body + close <= self.limit.max
    }

    fn flush(&mut self) {
        if let Some(open) = self.open.take() {
            self.spans.push(Span {
                start: open.start,
                end: self.done,
                reopen: self.fence_open_at(open.start),
                close: self.fence_unclosed_at(self.done),
            });
        }
    }

    /// Whether `pos` is inside a fenced block (marked or not), fence lines excluded.
    fn inside_fence(&self, pos: usize) -> bool {
        let index = self.fences.partition_point(|f| f.opener_end <= pos);
        index.checked_sub(1).is_some_and(|f| {
            self.fences[f]
                .closer
                .is_none_or(|(closer_start, _)| pos < closer_start)
        })
    }

    /// The marked fenced block that a message starting at `pos` begins inside of.
    fn fence_open_at(&self, pos: usize) -> Option<usize> {
        let index = self.fences.partition_point(|f| f.opener_end <= pos);
        let f = index.checked_sub(1)?;
        let fence = &self.fences[f];
        let inside = fence.closer.is_none_or(|(_, closer_end)| pos < closer_end);
        (fence.marked && inside).then_some(f)
    }

    /// The marked fenced block that a message ending at `pos` leaves open.
    fn fence_unclosed_at(&self, pos: usize) -> Option<usize> {
        let index = self.fences.partition_point(|f| f.opener_end <= pos);
        let f = index.checked_sub(1)?;
        let fence = &self.fences[f];
        let inside = fence
            .closer
            .is_none_or(|(closer_start, _)| pos <= closer_start);
        (fence.marked && inside).then_some(f)
    }

    /// The clusters of `atoms[start..end]`, each with whether a cut may follow it.
    fn clusters(&self, start: usize, end: usize) -> Vec<Cluster> {
        let mut clusters: Vec<Cluster> = Vec::new();
        for atom in &self.atoms[start..end] {
            match atom.kind {
                AtomKind::Opener => clusters.push(Cluster {
                    end: atom.end,
                    breakable_after: false,
                }),
                AtomKind::Closer => {
                    if let Some(last) = clusters.last_mut() {
                        last.breakable_after = false;
                    }
                    clusters.push(Cluster {
                        end: atom.end,
                        breakable_after: true,
                    });
                }
                AtomKind::Word => {
                    let word = &self.text[atom.start..atom.end];
                    clusters.extend(cluster_ends(word).map(|end| Cluster {
                        end: atom.start + end,
                        breakable_after: true,
                    }));
                }
            }
        }
        clusters
    }
}

#[derive(Debug, Clone, Copy)]
struct Cluster {
    end: usize,
    breakable_after: bool,
}

/// The end offsets of the clusters of `word`: a character with the marks, joiners and
/// modifiers that attach to it, so that an accent or a composed emoji is not cut from its
/// base. This approximates Unicode grapheme clusters closely enough for cutting messages
/// without pulling in the full segmentation tables.
fn cluster_ends(word: &str) -> impl Iterator<Item = usize> + '_ {
    let mut previous: Option<char> = None;
    let mut regional_run = 0;
    word.char_indices()
        .filter_map(move |(i, c)| {
            let regional = ('\u{1F1E6}'..='\u{1F1FF}').contains(&c);
            let joins = previous.is_some()
                && (attaches_to_previous(c)
                    || previous == Some('\u{200D}')
                    || (regional && regional_run % 2 == 1));
            regional_run = if regional { regional_run + 1 } else { 0 };
            previous = Some(c);
            (i > 0 && !joins).then_some(i)
        })
        .chain(std::iter::once(word.len()))
}

/// Characters that belong to the character before them.
fn attaches_to_previous(c: char) -> bool {
    matches!(
        u32::from(c),
        0x0300..=0x036F // combining diacritical marks
            | 0x1AB0..=0x1AFF
            | 0x1DC0..=0x1DFF
            | 0x20D0..=0x20FF
            | 0xFE20..=0xFE2F
            | 0x200D // zero-width joiner
            | 0xFE00..=0xFE0F // variation selectors
            | 0x1F3FB..=0x1F3FF // skin tone modifiers
            | 0xE0020..=0xE007F // tag characters (subdivision flags)
    )
}

/// A fence line: its character (backtick or tilde) and how many of them open it.
fn fence_marker(line: &str) -> Option<(char, usize)> {
    let c = line.chars().next().filter(|&c| c == '`' || c == '~')?;
    let count = line.chars().take_while(|&x| x == c).count();
    (count >= 3).then_some((c, count))
}

/// Splits the text into atoms and finds the fenced code blocks, following CommonMark's rules
/// closely enough for chat replies: an opening fence is a line of at least three backticks
/// (or tildes) with an optional info string (no backtick in it for backtick fences), closed by
/// a line of at least as many of the same character and nothing else.
fn scan(text: &str, limit: TextLimit) -> (Vec<Atom>, Vec<Fence>) {
    let mut atoms = Vec::new();
    let mut fences = Vec::new();
    // The block being read: its fence character and length, and what is known of it so far.
    let mut open: Option<(char, usize, Fence)> = None;
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let content = line.trim_end_matches(['\n', '\r']);
        let trimmed = content.trim();
        let trimmed_start = line_start + (content.len() - content.trim_start().len());
        let trimmed_end = trimmed_start + trimmed.len();
        let marker = fence_marker(trimmed);
        let index = fences.len();
        let closes = match (&open, marker) {
            (Some((c, count, _)), Some((line_c, line_count))) => {
                line_c == *c && line_count >= *count && trimmed.chars().all(|x| x == *c)
            }
            _ => false,
        };
        let opens = match (&open, marker) {
            (None, Some((c, count))) => c == '~' || !trimmed[count..].contains('`'),
            _ => false,
        };
        if let (true, Some((c, count))) = (opens, marker) {
            atoms.push(Atom {
                start: trimmed_start,
                end: trimmed_end,
                kind: AtomKind::Opener,
                fence: Some(index),
            });
            let reopen = format!("{trimmed}\n");
            let close = format!("\n{}", c.to_string().repeat(count));
            // Reopening is worth it only if a message can still hold the two markers and a
            // character (two units for an emoji in UTF-16) of code.
            let marked = limit.measure(&reopen) + limit.measure(&close) + 2 <= limit.max;
            let fence = Fence {
                opener_end: trimmed_end,
                closer: None,
                reopen,
                close,
                marked,
            };
            open = Some((c, count, fence));
        } else if closes {
            atoms.push(Atom {
                start: trimmed_start,
                end: trimmed_end,
                kind: AtomKind::Closer,
                fence: Some(index),
            });
            if let Some((_, _, mut fence)) = open.take() {
                fence.closer = Some((trimmed_start, trimmed_end));
                fences.push(fence);
            }
        } else {
            let fence = open.as_ref().map(|_| index);
            push_words(&mut atoms, content, line_start, fence);
        }
        line_start += line.len();
    }
    if let Some((_, _, fence)) = open {
        fences.push(fence);
    }
    (atoms, fences)
}

fn push_words(atoms: &mut Vec<Atom>, line: &str, offset: usize, fence: Option<usize>) {
    let mut word_start = None;
    for (i, c) in line.char_indices() {
        match (c.is_whitespace(), word_start) {
            (false, None) => word_start = Some(i),
            (true, Some(start)) => {
                atoms.push(Atom {
                    start: offset + start,
                    end: offset + i,
                    kind: AtomKind::Word,
                    fence,
                });
                word_start = None;
            }
            _ => {}
        }
    }
    if let Some(start) = word_start {
        atoms.push(Atom {
            start: offset + start,
            end: offset + line.len(),
            kind: AtomKind::Word,
            fence,
        });
    }
}

fn gap_between(text: &str, before: &Atom, after: &Atom) -> Gap {
    if after.kind == AtomKind::Opener || before.kind == AtomKind::Closer {
        return Gap::Block;
    }
    if before.kind == AtomKind::Opener || after.kind == AtomKind::Closer {
        return Gap::Glue;
    }
    let newlines = text[before.end..after.start]
        .bytes()
        .filter(|&b| b == b'\n')
        .count();
    match (newlines, before.fence.is_some()) {
        (0, _) => Gap::Word,
        // Inside code a blank line is just another line: the block's edges are its only
        // paragraph-like boundaries.
        (_, true) | (1, false) => Gap::Line,
        (_, false) => Gap::Block,
    }
}

/// `text` cut to at most `max` characters, ending with `…` when cut (never inside a character).
pub fn clip_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", text[..cut].trim_end()),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_counts_characters_and_marks_the_cut() {
        assert_eq!(clip_chars("abc", 3), "abc");
        assert_eq!(clip_chars("ab cd", 3), "ab…");
        assert_eq!(clip_chars("ééééé", 2), "éé…");
    }

    const fn chars(max: usize) -> TextLimit {
        TextLimit {
            max,
            unit: LengthUnit::Chars,
        }
    }

    const fn utf16(max: usize) -> TextLimit {
        TextLimit {
            max,
            unit: LengthUnit::Utf16,
        }
    }

    fn non_whitespace(s: &str) -> String {
        s.chars().filter(|c| !c.is_whitespace()).collect()
    }

    fn fence_lines(s: &str) -> usize {
        s.lines()
            .filter(|line| line.trim_start().starts_with("```"))
            .count()
    }

    #[test]
    fn measures_in_the_platform_unit() {
        let cases = [
            ("plain ascii", "hello", 5, 5),
            ("accented", "héllo", 5, 5),
            ("emoji outside the BMP", "👋", 1, 2),
            ("CJK inside the BMP", "日本", 2, 2),
            ("flag (two regional indicators)", "🇫🇷", 2, 4),
        ];
        for (name, text, in_chars, in_utf16) in cases {
            assert_eq!(chars(100).measure(text), in_chars, "{name} in chars");
            assert_eq!(utf16(100).measure(text), in_utf16, "{name} in UTF-16");
        }
        assert_eq!(TextLimit::TELEGRAM, utf16(4096));
        assert_eq!(TextLimit::DISCORD, chars(2000));
        assert_eq!(TextLimit::SLACK, chars(4000));
    }

    #[test]
    fn splits_as_a_reader_expects() {
        let cases: Vec<(&str, &str, TextLimit, Vec<&str>)> = vec![
            ("empty", "", chars(10), vec![]),
            ("only whitespace", " \n\t \r\n ", chars(3), vec![]),
            (
                "text that fits is unchanged, edges included",
                "  hello\n\nworld  \n",
                chars(100),
                vec!["  hello\n\nworld  \n"],
            ),
            ("exactly at the limit", "abcde", chars(5), vec!["abcde"]),
            (
                "paragraphs are packed greedily",
                "one one\n\ntwo two\n\nthree",
                chars(16),
                vec!["one one\n\ntwo two", "three"],
            ),
            (
                "a paragraph that fits the next message moves whole",
                "aaaa\n\nbbbb\ncccc",
                chars(12),
                vec!["aaaa", "bbbb\ncccc"],
            ),
            (
                "a paragraph too long for any message fills the current one by lines",
                "title\n\nline one\nline two\nline three",
                chars(25),
                vec!["title\n\nline one\nline two", "line three"],
            ),
            (
                "lines",
                "line one\nline two\nline three",
                chars(18),
                vec!["line one\nline two", "line three"],
            ),
            (
                "words",
                "the quick brown fox jumps",
                chars(10),
                vec!["the quick", "brown fox", "jumps"],
            ),
            (
                "a word longer than a message is cut",
                "abcdefghijkl",
                chars(5),
                vec!["abcde", "fghij", "kl"],
            ),
            (
                "blank lines with CRLF are paragraph breaks",
                "aaaa\r\n\r\nbbbb",
                chars(6),
                vec!["aaaa", "bbbb"],
            ),
            (
                "whitespace at the cuts is trimmed",
                "aaaa   \n\n\n   bbbb   ",
                chars(6),
                vec!["aaaa", "bbbb"],
            ),
            (
                "a code block that fits the next message moves whole",
                "intro text\n```\ncode line\n```\nafter",
                chars(25),
                vec!["intro text", "```\ncode line\n```\nafter"],
            ),
            (
                "a long code block is closed and reopened with its info string",
                "```rust\nlet a = 1;\nlet b = 2;\nlet c = 3;\n```",
                chars(34),
                vec![
                    "```rust\nlet a = 1;\nlet b = 2;\n```",
                    "```rust\nlet c = 3;\n```",
                ],
            ),
            (
                "indentation survives a cut inside code",
                "```py\ndef f():\n    return 1\n```",
                chars(22),
                vec!["```py\ndef f():\n```", "```py\n    return 1\n```"],
            ),
            (
                "tilde fences and longer fences close with their own marker",
                "~~~~\nalpha beta\ngamma delta\n~~~~",
                chars(21),
                vec!["~~~~\nalpha beta\n~~~~", "~~~~\ngamma delta\n~~~~"],
            ),
            (
                "an unclosed block is closed in every message",
                "```\nalpha beta\ngamma delta",
                chars(20),
                vec!["```\nalpha beta\n```", "```\ngamma delta\n```"],
            ),
            (
                "a fence-like line inside code is code",
                "```\n```rust\nx\n```\ntail text",
                chars(17),
                vec!["```\n```rust\nx\n```", "tail text"],
            ),
            (
                "emoji are never cut in half (UTF-16)",
                "👋👋👋",
                utf16(4),
                vec!["👋👋", "👋"],
            ),
            (
                "an odd UTF-16 limit leaves a unit unused rather than cut a pair",
                "👋👋👋",
                utf16(3),
                vec!["👋", "👋", "👋"],
            ),
            (
                "emoji count once in chars",
                "👋👋👋",
                chars(2),
                vec!["👋👋", "👋"],
            ),
            (
                "an accent stays with its letter",
                "abe\u{301}e\u{301}e\u{301}",
                chars(4),
                vec!["abe\u{301}", "e\u{301}e\u{301}"],
            ),
            (
                "a flag's two halves stay together",
                "a🇫🇷🇫🇷",
                utf16(5),
                vec!["a🇫🇷", "🇫🇷"],
            ),
        ];
        for (name, text, limit, expected) in cases {
            let chunks = chunk_text(text, limit);
            assert_eq!(chunks, expected, "case: {name}");
        }
    }

    #[test]
    fn tiny_limits_never_loop_panic_or_drop() {
        let texts = [
            "```rust\nfn main() {}\n```\nhi 👋 there",
            "a b c",
            "👨‍👩‍👧 family",
            "~~~\n~~~",
            "```",
        ];
        for text in texts {
            for max in 0..=16 {
                for limit in [chars(max), utf16(max)] {
                    let pieces = split_pieces(text, limit);
                    let bodies: String = pieces.iter().map(|p| p.body).collect();
                    assert_eq!(
                        non_whitespace(&bodies),
                        non_whitespace(text),
                        "nothing is dropped from {text:?} at {limit:?}"
                    );
                    for chunk in chunk_text(text, limit) {
                        assert!(!chunk.trim().is_empty(), "no empty message at {limit:?}");
                        // Only a single character wider than the limit may exceed it.
                        let over = limit.measure(&chunk) > max;
                        assert!(
                            !over || chunk.chars().count() == 1,
                            "{chunk:?} exceeds {limit:?}"
                        );
                    }
                }
            }
        }
    }

    /// A small deterministic generator (xorshift64*) so the property test needs no new crate
    /// and fails the same way every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    fn word(rng: &mut Rng) -> String {
        const PARTS: &[&str] = &["a", "b", "xyz", "é", "👋", "日", "e\u{301}", "🇫🇷", "q", "-"];
        let len = if rng.below(20) == 0 {
            30 + rng.below(90)
        } else {
            1 + rng.below(9)
        };
        (0..len).map(|_| rng.pick(PARTS)).collect()
    }

    fn line(rng: &mut Rng) -> String {
        let words: Vec<String> = (0..1 + rng.below(12)).map(|_| word(rng)).collect();
        words.join(rng.pick(&[" ", " ", "  ", "\t"]))
    }

    fn generated_text(rng: &mut Rng) -> String {
        let mut text = String::new();
        for block in 0..1 + rng.below(10) {
            if block > 0 {
                text.push_str(rng.pick(&["\n\n", "\n\n", "\n", "\r\n\r\n", "\n\n\n  "]));
            }
            if rng.below(3) == 0 {
                let info = rng.pick(&["", "rust", "python", "sh"]);
                text.push_str(&format!("```{info}\n"));
                for _ in 0..1 + rng.below(10) {
                    if rng.below(6) == 0 {
                        text.push('\n');
                        continue;
                    }
                    text.push_str(&" ".repeat(rng.below(3) * 4));
                    text.push_str(&line(rng));
                    text.push('\n');
                }
                text.push_str("```");
            } else {
                let lines: Vec<String> = (0..1 + rng.below(4)).map(|_| line(rng)).collect();
                text.push_str(&lines.join("\n"));
            }
        }
        text
    }

    #[test]
    fn generated_texts_respect_the_limit_lose_nothing_and_balance_fences() {
        let mut rng = Rng(0x5EED_CAFE_F00D_0001);
        let limits = [16, 17, 23, 40, 64, 100, 257, 1000];
        for round in 0..100 {
            let text = generated_text(&mut rng);
            for &max in &limits {
                for limit in [chars(max), utf16(max)] {
                    let context = format!("round {round}, {limit:?}, text {text:?}");
                    let pieces = split_pieces(&text, limit);
                    let chunks = chunk_text(&text, limit);
                    if limit.measure(&text) > max {
                        let assembled: Vec<String> = pieces
                            .iter()
                            .map(|p| format!("{}{}{}", p.reopen, p.body, p.close))
                            .collect();
                        assert_eq!(chunks, assembled, "{context}");
                    }
                    let bodies: String = pieces.iter().map(|p| p.body).collect();
                    assert_eq!(
                        non_whitespace(&bodies),
                        non_whitespace(&text),
                        "nothing may be dropped: {context}"
                    );
                    for chunk in &chunks {
                        assert!(
                            limit.measure(chunk) <= max,
                            "{chunk:?} is over the limit: {context}"
                        );
                        assert!(!chunk.trim().is_empty(), "an empty message: {context}");
                        assert_eq!(
                            fence_lines(chunk) % 2,
                            0,
                            "fences must balance in {chunk:?}: {context}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn text_without_fences_loses_nothing_as_sent() {
        let mut rng = Rng(42);
        for _ in 0..200 {
            let text: String = (0..1 + rng.below(30))
                .map(|_| line(&mut rng))
                .collect::<Vec<_>>()
                .join(rng.pick(&["\n", "\n\n"]));
            for limit in [chars(50), utf16(50), TextLimit::DISCORD] {
                let joined: String = chunk_text(&text, limit).concat();
                assert_eq!(non_whitespace(&joined), non_whitespace(&text));
            }
        }
    }

    /// Paragraphs of about 275 characters, like the fake server's `LONG_REPLY`.
    fn long_reply(total: usize) -> (String, Vec<String>) {
        let mut rng = Rng(7);
        let mut paragraphs = Vec::new();
        let mut length = 0;
        while length < total {
            let mut paragraph = String::new();
            while paragraph.len() < 260 {
                if !paragraph.is_empty() {
                    paragraph.push(' ');
                }
                paragraph.push_str(&"lorem".repeat(1 + rng.below(2)));
            }
            length += paragraph.len() + 2;
            paragraphs.push(paragraph);
        }
        (paragraphs.join("\n\n"), paragraphs)
    }

    #[test]
    fn a_ten_thousand_character_reply_splits_at_paragraphs_for_each_platform() {
        let (text, paragraphs) = long_reply(10_000);
        assert!(text.len() >= 10_000);
        for limit in [TextLimit::TELEGRAM, TextLimit::DISCORD, TextLimit::SLACK] {
            let chunks = chunk_text(&text, limit);
            assert_eq!(
                chunks.join("\n\n"),
                text,
                "every cut is at a paragraph break, so the chunks rebuild the text ({limit:?})"
            );
            let mut next_paragraph = 0;
            for (i, chunk) in chunks.iter().enumerate() {
                assert!(limit.measure(chunk) <= limit.max, "{limit:?}");
                next_paragraph += chunk.split("\n\n").count();
                if let Some(following) = paragraphs.get(next_paragraph) {
                    assert!(
                        limit.measure(chunk) + 2 + limit.measure(following) > limit.max,
                        "chunk {i} had room for the next paragraph ({limit:?})"
                    );
                }
            }
            let expected = text.len().div_ceil(limit.max);
            assert!(
                chunks.len() <= expected + 1,
                "{} chunks where about {expected} are needed ({limit:?})",
                chunks.len()
            );
        }
    }

    #[test]
    fn multi_byte_text_fills_messages_to_the_limit() {
        let cases = [
            (
                "emoji in UTF-16",
                "👋".repeat(5000),
                TextLimit::TELEGRAM,
                4096,
            ),
            (
                "emoji in chars",
                "👋".repeat(5000),
                TextLimit::DISCORD,
                2000,
            ),
            (
                "odd widths in UTF-16",
                "a👋".repeat(3000),
                TextLimit::TELEGRAM,
                4095,
            ),
            ("accents in chars", "é".repeat(9000), TextLimit::SLACK, 4000),
        ];
        for (name, text, limit, full) in cases {
            let chunks = chunk_text(&text, limit);
            assert_eq!(chunks.concat(), text, "{name}: a hard cut drops nothing");
            let (last, rest) = chunks.split_last().expect("long text gives several chunks");
            for chunk in rest {
                let length = limit.measure(chunk);
                assert!(
                    (full..=limit.max).contains(&length),
                    "{name}: a full chunk measures {length}"
                );
            }
            assert!(limit.measure(last) <= limit.max, "{name}");
        }
    }
}
