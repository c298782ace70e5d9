//! Slack's `mrkdwn` text both ways: what a user wrote, made plain for the agent, and the agent's
//! reply, escaped so Slack shows it as written.
//!
//! In Slack's text, `&`, `<` and `>` only ever appear escaped (`&amp;`, `&lt;`, `&gt;`); a literal
//! `<…>` is always markup: a user or channel mention, a special mention or a link.

/// Escapes a reply so that `&`, `<` and `>` show as themselves instead of starting markup (a
/// `<!channel>` from the agent must not ping a whole channel).
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Undoes Slack's escaping of `&`, `<` and `>`, in one pass so `&amp;lt;` reads as `&lt;`.
pub(crate) fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let (replacement, len) = if rest.starts_with("&amp;") {
            ("&", 5)
        } else if rest.starts_with("&lt;") {
            ("<", 4)
        } else if rest.starts_with("&gt;") {
            (">", 4)
        } else {
            ("&", 1)
        };
        out.push_str(replacement);
        rest = &rest[len..];
    }
    out.push_str(rest);
    out
}

/// Whether the text mentions the user `user_id` (`<@U123>` or `<@U123|name>`).
pub(crate) fn mentions(text: &str, user_id: &str) -> bool {
    markup(text).any(|(_, inner)| mention_of(inner) == Some(user_id))
}

/// The text as the agent should read it: mentions of the bot removed, other markup turned into
/// what a person sees (`@name`, `#channel`, `label (url)`), entities unescaped, ends trimmed.
pub(crate) fn plain(text: &str, bot_user_id: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (range, inner) in markup(text) {
        out.push_str(&unescape(&text[last..range.start]));
        last = range.end;
        if mention_of(inner) == Some(bot_user_id) {
            // "<@UBOT>: deploy" and "<@UBOT>, deploy" address the bot; the punctuation goes with it.
            if out.trim().is_empty() {
                let after = text[last..].trim_start();
                if let Some(stripped) = after.strip_prefix([':', ',']) {
                    last = text.len() - stripped.len();
                }
            } else if out.ends_with(' ') && text[last..].starts_with(' ') {
                // "hey <@UBOT> there" reads "hey there", not "hey  there".
                last += 1;
            }
            continue;
        }
        out.push_str(&render(inner));
    }
    out.push_str(&unescape(&text[last..]));
    out.trim().to_owned()
}

/// The `<…>` spans of a text: their byte range and what is inside the brackets.
fn markup(text: &str) -> impl Iterator<Item = (std::ops::Range<usize>, &str)> {
    let mut from = 0;
    std::iter::from_fn(move || {
        let open = from + text[from..].find('<')?;
        let close = open + text[open..].find('>')?;
        from = close + 1;
        Some((open..close + 1, &text[open + 1..close]))
    })
}

/// The user id of a `@U123` or `@U123|name` markup.
fn mention_of(inner: &str) -> Option<&str> {
    let id = inner.strip_prefix('@')?;
    Some(id.split('|').next().unwrap_or(id))
}

/// What a person sees for one markup span.
fn render(inner: &str) -> String {
    let (target, label) = match inner.split_once('|') {
        Some((target, label)) => (target, Some(unescape(label))),
        None => (inner, None),
    };
    if let Some(user) = target.strip_prefix('@') {
        return format!("@{}", label.unwrap_or_else(|| user.to_owned()));
    }
    if let Some(channel) = target.strip_prefix('#') {
        return format!("#{}", label.unwrap_or_else(|| channel.to_owned()));
    }
    if let Some(special) = target.strip_prefix('!') {
        // `<!here>`, `<!channel>`, `<!subteam^S1|@team>`, `<!date^…|fallback>`.
        return label.unwrap_or_else(|| format!("@{special}"));
    }
    let url = unescape(target);
    match label {
        Some(label) if label != url && format!("mailto:{label}") != url => {
            format!("{label} ({url})")
        }
        Some(label) => label,
        None => url
            .strip_prefix("mailto:")
            .map(str::to_owned)
            .unwrap_or(url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_exactly_the_three_characters() {
        let cases = [
            ("plain", "plain"),
            ("a < b && c > d", "a &lt; b &amp;&amp; c &gt; d"),
            ("<!channel> <@U1>", "&lt;!channel&gt; &lt;@U1&gt;"),
            ("&amp; stays visible", "&amp;amp; stays visible"),
            ("*bold* `code` 👋", "*bold* `code` 👋"),
        ];
        for (text, want) in cases {
            assert_eq!(escape(text), want, "{text}");
            assert_eq!(
                unescape(&escape(text)),
                text,
                "unescape undoes escape for {text}"
            );
        }
    }

    #[test]
    fn unescaping_reads_each_entity_once() {
        let cases = [
            ("1 &lt; 2 &amp;&amp; 3 &gt; 2", "1 < 2 && 3 > 2"),
            ("&amp;lt;", "&lt;"),
            ("AT&T & co", "AT&T & co"),
            ("&quot;", "&quot;"),
            ("trailing &", "trailing &"),
        ];
        for (text, want) in cases {
            assert_eq!(unescape(text), want, "{text}");
        }
    }

    #[test]
    fn mentions_of_the_bot_are_found_in_either_form() {
        let cases = [
            ("<@UBOT> hi", true),
            ("hi <@UBOT|switchboard>", true),
            ("hi <@UBOTX>", false),
            ("hi <@U1>", false),
            ("hi @UBOT", false),
            ("&lt;@UBOT&gt; is escaped text, not a mention", false),
            ("", false),
        ];
        for (text, want) in cases {
            assert_eq!(mentions(text, "UBOT"), want, "{text}");
        }
    }

    #[test]
    fn plain_text_for_the_agent() {
        let cases = [
            ("<@UBOT> deploy?", "deploy?"),
            ("<@UBOT>: deploy?", "deploy?"),
            ("<@UBOT>, deploy?", "deploy?"),
            ("hey <@UBOT> can you deploy", "hey can you deploy"),
            ("ask <@U2|bob> and <@U3>", "ask @bob and @U3"),
            ("see <#C1|general> and <#C2>", "see #general and #C2"),
            ("<!here> heads up", "@here heads up"),
            ("ping <!subteam^S1|@oncall>", "ping @oncall"),
            ("<https://example.com>", "https://example.com"),
            (
                "<https://example.com|the docs>",
                "the docs (https://example.com)",
            ),
            (
                "<https://example.com|https://example.com>",
                "https://example.com",
            ),
            ("<mailto:a@b.c|a@b.c>", "a@b.c"),
            ("<https://x.io/?a=1&amp;b=2>", "https://x.io/?a=1&b=2"),
            ("is 1 &lt; 2 &amp;&amp; 3 &gt; 2?", "is 1 < 2 && 3 > 2?"),
            ("<@UBOT>", ""),
            ("unclosed <@UBOT", "unclosed <@UBOT"),
            ("line one\n\nline two <@UBOT>", "line one\n\nline two"),
        ];
        for (text, want) in cases {
            assert_eq!(plain(text, "UBOT"), want, "{text}");
        }
    }
}
