//! Checks of what the page sends. Every IPC command runs its arguments through these before
//! using them, so a wrong value comes back as an `invalid_argument` error naming the argument
//! (as the page spells it) and never reaches the engine. Pure functions over values.
//!
//! The page is Switchboard's own, so a failure here is a bug in the page or someone poking at
//! the IPC; either way the answer must be a clear error, not a panic or a half-done action.

use switchboard_engine::access::{is_code, CODE_LEN as PAIRING_CODE_LEN};

use crate::views::{ErrorCode, IpcError, IpcResult};

/// The longest channel name accepted (configured channels are `telegram`, `slack`, `discord`).
pub const MAX_CHANNEL_NAME: usize = 64;
/// The longest routing key accepted; real ones are a channel, a kind and one or two ids.
pub const MAX_ROUTING_KEY: usize = 512;
/// The longest "always allow" argument pattern.
pub const MAX_PATTERN: usize = 500;
/// The longest agent server URL.
pub const MAX_URL: usize = 2048;
/// The longest agent server token.
pub const MAX_TOKEN: usize = 4096;
/// How much a person may type around a pairing code (spaces, dashes) before it is refused.
const MAX_CODE_INPUT: usize = 32;

/// An `invalid_argument` error for the argument `field`.
pub fn invalid(field: &str, message: impl Into<String>) -> IpcError {
    IpcError {
        code: ErrorCode::InvalidArgument,
        message: message.into(),
        field: Some(field.to_owned()),
    }
}

fn chars(value: &str) -> usize {
    value.chars().count()
}

/// A channel's name: 1 to 64 ASCII letters, digits, `_`, `-` or `.`. Whether such a channel
/// exists is for the shell to say (`not_found`).
pub fn channel_name<'a>(field: &str, value: &'a str) -> IpcResult<&'a str> {
    if value.is_empty() {
        return Err(invalid(
            field,
            format!("{field} must name a channel; it is empty"),
        ));
    }
    if value.len() > MAX_CHANNEL_NAME
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(invalid(
            field,
            format!(
                "{field} is not a channel name (at most {MAX_CHANNEL_NAME} letters, digits, '_', '-' or '.')"
            ),
        ));
    }
    Ok(value)
}

/// A conversation's routing key: not blank, one line, at most 512 characters. Keys the engine
/// does not know are not an error (the conversation may just have been pruned).
pub fn routing_key<'a>(field: &str, value: &'a str) -> IpcResult<&'a str> {
    if value.trim().is_empty() {
        return Err(invalid(field, format!("{field} must not be empty")));
    }
    if chars(value) > MAX_ROUTING_KEY || value.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!(
                "{field} is not a routing key (one line of at most {MAX_ROUTING_KEY} characters)"
            ),
        ));
    }
    Ok(value)
}

/// The longest message the person may type at once in the window.
pub const MAX_MESSAGE: usize = 100_000;
/// The longest id the page gives a message it sends.
pub const MAX_CLIENT_ID: usize = 100;

/// A desktop chat's id: letters, digits, `-` and `_`, at most 64 (the page makes them as UUIDs).
pub fn chat_id<'a>(field: &str, value: &'a str) -> IpcResult<&'a str> {
    if !switchboard_engine::channels::desktop::valid_chat_id(value) {
        return Err(invalid(
            field,
            format!("{field} is not a chat id (1 to 64 letters, digits, '-' or '_')"),
        ));
    }
    Ok(value)
}

/// What the person typed: not blank, at most [`MAX_MESSAGE`] bytes.
pub fn message<'a>(field: &str, value: &'a str) -> IpcResult<&'a str> {
    if value.trim().is_empty() {
        return Err(invalid(field, format!("{field} is empty; type a message")));
    }
    if value.len() > MAX_MESSAGE {
        return Err(invalid(
            field,
            format!(
                "{field} is too long ({} bytes; at most {MAX_MESSAGE})",
                value.len()
            ),
        ));
    }
    Ok(value)
}

/// The id the page gave a message (so sending it twice is one message): one line, at most
/// [`MAX_CLIENT_ID`] characters.
pub fn client_id<'a>(field: &str, value: &'a str) -> IpcResult<&'a str> {
    if value.is_empty() || chars(value) > MAX_CLIENT_ID || value.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("{field} is not a message id (one line of 1 to {MAX_CLIENT_ID} characters)"),
        ));
    }
    Ok(value)
}

/// An approval's id: the engine makes them as UUIDs (`8-4-4-4-12` hexadecimal digits).
pub fn approval_id<'a>(field: &str, value: &'a str) -> IpcResult<&'a str> {
    let groups: Vec<&str> = value.split('-').collect();
    let shaped = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()));
    if shaped {
        Ok(value)
    } else {
        Err(invalid(
            field,
            format!("{field} is not an approval id (a UUID such as 0b6c1f9e-3a4d-4c2e-9f7a-2d5e8b1c4a90)"),
        ))
    }
}

/// An "always allow" pattern: trimmed; blank means none. One line of at most 500 characters.
pub fn pattern(field: &str, value: Option<&str>) -> IpcResult<Option<String>> {
    let Some(value) = value.map(str::trim).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    if chars(value) > MAX_PATTERN || value.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("{field} must be one line of at most {MAX_PATTERN} characters"),
        ));
    }
    Ok(Some(value.to_owned()))
}

/// A pairing code as a person may have typed it (spaces, dashes, lower case), made what the
/// engine stores: 8 characters of the pairing alphabet.
pub fn pairing_code(field: &str, value: &str) -> IpcResult<String> {
    let wrong = || {
        invalid(
            field,
            format!(
                "{field} is not a pairing code ({PAIRING_CODE_LEN} letters and digits such as ABCD2345, without 0, O, 1 or I)"
            ),
        )
    };
    if value.trim().is_empty() {
        return Err(invalid(field, format!("{field} must not be empty")));
    }
    if chars(value) > MAX_CODE_INPUT {
        return Err(wrong());
    }
    let code: String = value
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if !is_code(&code) {
        return Err(wrong());
    }
    Ok(code)
}

/// The agent server's address for "Test connection": an `http` or `https` URL with a host.
pub fn server_url<'a>(field: &str, value: &'a str) -> IpcResult<&'a str> {
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid(field, format!("{field} must not be empty")));
    }
    if value.len() > MAX_URL {
        return Err(invalid(
            field,
            format!("{field} is longer than {MAX_URL} characters"),
        ));
    }
    let url = url::Url::parse(value).map_err(|e| {
        invalid(
            field,
            format!("{field} is not a URL ({e}); write it like http://127.0.0.1:4096"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(
            field,
            format!("{field} must be an http:// or https:// address with a host, like http://127.0.0.1:4096"),
        ));
    }
    Ok(value)
}

/// A bearer token: empty (a server without one) or at most 4096 visible characters. The
/// message never repeats the token.
pub fn token<'a>(field: &str, value: &'a str) -> IpcResult<&'a str> {
    if value.len() > MAX_TOKEN {
        return Err(invalid(
            field,
            format!("{field} is longer than {MAX_TOKEN} characters"),
        ));
    }
    if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid(
            field,
            format!("{field} must not contain spaces, tabs or line breaks"),
        ));
    }
    Ok(value)
}

/// A rule's id: the store numbers them from 1.
pub fn rule_id(field: &str, value: i64) -> IpcResult<i64> {
    if value < 1 {
        return Err(invalid(
            field,
            format!("{field} must be a rule id (1 or more)"),
        ));
    }
    Ok(value)
}

/// A deserializer's complaint about an argument, fit to show: long quoted values (which could be
/// a token sent in the wrong place) are left out; short ones, like an unknown variant, stay.
pub fn without_values(message: &str) -> String {
    const LONGEST_KEPT: usize = 32;
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(['"', '`']) {
        let quote = rest[start..].chars().next().unwrap_or('"');
        out.push_str(&rest[..=start]);
        let after = &rest[start + 1..];
        match after.find(quote) {
            Some(end) => {
                let inner = &after[..end];
                if chars(inner) > LONGEST_KEPT {
                    out.push('…');
                } else {
                    out.push_str(inner);
                }
                out.push(quote);
                rest = &after[end + 1..];
            }
            None => {
                // An unclosed quote: what follows is a value cut short; leave it out.
                out.push('…');
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(result: IpcResult<impl std::fmt::Debug>) -> (ErrorCode, String) {
        let error = result.expect_err("refused");
        (error.code, error.field.unwrap_or_default())
    }

    #[test]
    fn channel_names() {
        assert_eq!(channel_name("name", "telegram").ok(), Some("telegram"));
        assert_eq!(channel_name("name", "chat-2.b_c").ok(), Some("chat-2.b_c"));
        for bad in ["", "tele gram", "télégram", "a/b", "x\n", &"a".repeat(65)] {
            assert_eq!(
                field_of(channel_name("name", bad)),
                (ErrorCode::InvalidArgument, "name".into()),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn routing_keys() {
        for good in [
            "telegram:dm:42",
            "main",
            "ops team",
            "slack:thread:C1:1700000000.1",
        ] {
            assert_eq!(routing_key("routingKey", good).ok(), Some(good), "{good:?}");
        }
        for bad in ["", "   ", "a\nb", "a\u{0}b", &"k".repeat(513)] {
            assert_eq!(
                field_of(routing_key("routingKey", bad)).1,
                "routingKey",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn approval_ids() {
        let id = "0b6c1f9e-3a4d-4c2e-9f7a-2d5e8b1c4a90";
        assert_eq!(approval_id("approvalId", id).ok(), Some(id));
        assert!(approval_id("approvalId", &id.to_uppercase()).is_ok());
        for bad in [
            "",
            "no-such-approval",
            "0b6c1f9e3a4d4c2e9f7a2d5e8b1c4a90",
            "0b6c1f9e-3a4d-4c2e-9f7a-2d5e8b1c4a9g",
            "0b6c1f9e-3a4d-4c2e-9f7a-2d5e8b1c4a90-",
            "0b6c1f9é-3a4d-4c2e-9f7a-2d5e8b1c4a9",
        ] {
            assert_eq!(
                field_of(approval_id("approvalId", bad)).1,
                "approvalId",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn patterns() {
        assert_eq!(pattern("pattern", None).ok(), Some(None));
        assert_eq!(pattern("pattern", Some("   ")).ok(), Some(None));
        assert_eq!(
            pattern("pattern", Some("  {\"command\":\"ls\",*  ")).ok(),
            Some(Some("{\"command\":\"ls\",*".to_owned()))
        );
        assert!(pattern("pattern", Some("a\nb")).is_err());
        assert!(pattern("pattern", Some(&"p".repeat(501))).is_err());
        assert!(
            pattern("pattern", Some(&"é".repeat(500))).is_ok(),
            "characters, not bytes"
        );
    }

    #[test]
    fn pairing_codes() {
        assert_eq!(
            pairing_code("code", "ABCD2345").ok().as_deref(),
            Some("ABCD2345")
        );
        assert_eq!(
            pairing_code("code", " abcd-2345 ").ok().as_deref(),
            Some("ABCD2345")
        );
        for bad in [
            "",
            "ABCD234",
            "ABCD23456",
            "ABCD0345",
            "ABCDI345",
            "ABCD_345",
            "ÅBCD2345",
            &"A".repeat(40),
        ] {
            assert_eq!(field_of(pairing_code("code", bad)).1, "code", "{bad:?}");
        }
    }

    #[test]
    fn every_code_the_engine_makes_is_accepted() {
        for _ in 0..500 {
            let code = switchboard_engine::access::new_code();
            assert_eq!(
                pairing_code("code", &code).ok(),
                Some(code.clone()),
                "{code}"
            );
        }
    }

    #[test]
    fn server_urls() {
        for good in [
            "http://127.0.0.1:4096",
            "https://agent.example.com/base",
            " http://[::1]:4096 ",
        ] {
            assert!(server_url("url", good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "127.0.0.1:4096",
            "ftp://host",
            "file:///etc/passwd",
            "http://",
            "not a url",
            &format!("http://h/{}", "a".repeat(2100)),
        ] {
            assert_eq!(field_of(server_url("url", bad)).1, "url", "{bad:?}");
        }
    }

    #[test]
    fn tokens_are_checked_without_being_repeated() {
        assert!(token("token", "").is_ok());
        assert!(token("token", "sk-abc.DEF_123").is_ok());
        let error = token("token", "secret value").expect_err("a space");
        assert!(!error.message.contains("secret"), "{}", error.message);
        assert!(token("token", "a\r\nInjected: 1").is_err());
        assert!(token("token", &"t".repeat(4097)).is_err());
    }

    #[test]
    fn rule_ids() {
        assert_eq!(rule_id("id", 7).ok(), Some(7));
        assert!(rule_id("id", 0).is_err());
        assert!(rule_id("id", -3).is_err());
    }

    #[test]
    fn deserializer_messages_keep_short_values_only() {
        assert_eq!(
            without_values("unknown variant `sometimes`, expected one of `ask`, `allowlist`"),
            "unknown variant `sometimes`, expected one of `ask`, `allowlist`"
        );
        assert_eq!(
            without_values(
                "invalid type: string \"xoxb-1234567890-abcdefghijklmnopqrstuvwx\", expected u64"
            ),
            "invalid type: string \"…\", expected u64"
        );
        assert_eq!(without_values("cut \"short and never closed"), "cut \"…");
        assert_eq!(without_values("no quotes at all"), "no quotes at all");
        assert_eq!(without_values("é \"ü\" `"), "é \"ü\" `…");
    }
}
