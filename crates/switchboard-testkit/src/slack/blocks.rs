//! Block Kit validation, as Slack does it on `chat.postMessage`, `chat.update` and
//! `chat.postEphemeral`: a request with blocks Slack would refuse gets
//! `{"ok":false,"error":"invalid_blocks","errors":[…]}`, each error naming the offending field
//! with a JSON pointer, as Slack's do.
//!
//! The limits are those of `shared/contracts/channels.md` §2.4: at most 50 blocks; a section's
//! text at most 3,000 characters; an `actions` block at most 25 elements; a button's text at most
//! 75 characters, its `action_id` (and any `block_id`) at most 255, its `value` at most 2,000,
//! its `style` `primary` or `danger`; `action_id`s unique within a block.

use serde_json::Value;

pub(super) const MAX_BLOCKS: usize = 50;
pub(super) const MAX_SECTION_TEXT: usize = 3000;
pub(super) const MAX_ACTIONS: usize = 25;
pub(super) const MAX_BUTTON_TEXT: usize = 75;
pub(super) const MAX_ID: usize = 255;
pub(super) const MAX_VALUE: usize = 2000;
const MAX_CONTEXT_ELEMENTS: usize = 10;

/// Block types Slack knows in messages; anything else is refused.
const KNOWN: &[&str] = &[
    "section",
    "actions",
    "context",
    "divider",
    "header",
    "image",
    "rich_text",
    "file",
    "video",
    "input",
];

/// Reads the `blocks` argument: a JSON array, or (form-encoded) a string holding one. `Ok(None)`
/// when absent.
pub(super) fn parse(arg: Option<&Value>) -> Result<Option<Vec<Value>>, Vec<String>> {
    let value = match arg {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v) => v,
            Err(_) => return Err(vec!["invalid JSON [json-pointer:/blocks]".to_owned()]),
        },
        Some(v) => v.clone(),
    };
    match value {
        Value::Array(blocks) => {
            let errors = validate(&blocks);
            if errors.is_empty() {
                Ok(Some(blocks))
            } else {
                Err(errors)
            }
        }
        _ => Err(vec!["must be an array [json-pointer:/blocks]".to_owned()]),
    }
}

/// Every reason Slack would refuse these blocks (empty when they are fine).
pub(super) fn validate(blocks: &[Value]) -> Vec<String> {
    let mut errors = Vec::new();
    if blocks.len() > MAX_BLOCKS {
        errors.push(format!(
            "no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]"
        ));
    }
    for (i, block) in blocks.iter().enumerate() {
        let at = format!("/blocks/{i}");
        let kind = block.get("type").and_then(Value::as_str).unwrap_or("");
        if !KNOWN.contains(&kind) {
            errors.push(format!(
                "unsupported type: {kind:?} [json-pointer:{at}/type]"
            ));
            continue;
        }
        too_long(
            &mut errors,
            block.get("block_id"),
            MAX_ID,
            &format!("{at}/block_id"),
        );
        match kind {
            "section" => section(&mut errors, block, &at),
            "actions" => actions(&mut errors, block, &at),
            "context" => context(&mut errors, block, &at),
            _ => {}
        }
    }
    errors
}

fn section(errors: &mut Vec<String>, block: &Value, at: &str) {
    let text = block.get("text");
    let fields = block.get("fields").and_then(Value::as_array);
    if text.is_none() && fields.is_none_or(|f| f.is_empty()) {
        errors.push(format!(
            "must provide either text or fields [json-pointer:{at}]"
        ));
    }
    if let Some(text) = text {
        text_object(errors, text, MAX_SECTION_TEXT, &format!("{at}/text"), false);
    }
}

fn actions(errors: &mut Vec<String>, block: &Value, at: &str) {
    let Some(elements) = block.get("elements").and_then(Value::as_array) else {
        errors.push(format!(
            "missing required field: elements [json-pointer:{at}]"
        ));
        return;
    };
    if elements.is_empty() || elements.len() > MAX_ACTIONS {
        errors.push(format!(
            "must have between 1 and {MAX_ACTIONS} items [json-pointer:{at}/elements]"
        ));
    }
    let mut ids = std::collections::HashSet::new();
    for (j, element) in elements.iter().enumerate() {
        let at = format!("{at}/elements/{j}");
        if element.get("type").and_then(Value::as_str) != Some("button") {
            // Selects, pickers, …: not used by the bridge; their shapes are not checked.
            continue;
        }
        match element.get("text") {
            Some(text) => text_object(errors, text, MAX_BUTTON_TEXT, &format!("{at}/text"), true),
            None => errors.push(format!("missing required field: text [json-pointer:{at}]")),
        }
        too_long(
            errors,
            element.get("action_id"),
            MAX_ID,
            &format!("{at}/action_id"),
        );
        too_long(
            errors,
            element.get("value"),
            MAX_VALUE,
            &format!("{at}/value"),
        );
        if let Some(id) = element.get("action_id").and_then(Value::as_str) {
            if !ids.insert(id.to_owned()) {
                errors.push(format!(
                    "action_id {id:?} is already used in this block [json-pointer:{at}/action_id]"
                ));
            }
        }
        if let Some(style) = element.get("style") {
            if !matches!(style.as_str(), Some("primary" | "danger")) {
                errors.push(format!(
                    "must be one of primary, danger [json-pointer:{at}/style]"
                ));
            }
        }
    }
}

fn context(errors: &mut Vec<String>, block: &Value, at: &str) {
    let Some(elements) = block.get("elements").and_then(Value::as_array) else {
        errors.push(format!(
            "missing required field: elements [json-pointer:{at}]"
        ));
        return;
    };
    if elements.is_empty() || elements.len() > MAX_CONTEXT_ELEMENTS {
        errors.push(format!(
            "must have between 1 and {MAX_CONTEXT_ELEMENTS} items [json-pointer:{at}/elements]"
        ));
    }
    for (j, element) in elements.iter().enumerate() {
        if matches!(
            element.get("type").and_then(Value::as_str),
            Some("mrkdwn" | "plain_text")
        ) {
            text_object(
                errors,
                element,
                MAX_SECTION_TEXT,
                &format!("{at}/elements/{j}"),
                false,
            );
        }
    }
}

/// A text object: `{"type":"plain_text"|"mrkdwn","text":…}`, non-empty and at most `max`
/// characters; `plain_only` for places that take only `plain_text` (button labels).
fn text_object(errors: &mut Vec<String>, text: &Value, max: usize, at: &str, plain_only: bool) {
    let kind = text.get("type").and_then(Value::as_str);
    let allowed = if plain_only {
        matches!(kind, Some("plain_text"))
    } else {
        matches!(kind, Some("plain_text" | "mrkdwn"))
    };
    if !allowed {
        errors.push(format!(
            "invalid text type {kind:?} [json-pointer:{at}/type]"
        ));
    }
    match text.get("text").and_then(Value::as_str) {
        None => errors.push(format!("missing required field: text [json-pointer:{at}]")),
        Some("") => errors.push(format!(
            "must be more than 0 characters [json-pointer:{at}/text]"
        )),
        Some(s) if s.chars().count() > max => errors.push(format!(
            "must be less than {} characters [json-pointer:{at}/text]",
            max + 1
        )),
        Some(_) => {}
    }
}

fn too_long(errors: &mut Vec<String>, value: Option<&Value>, max: usize, at: &str) {
    if let Some(s) = value.and_then(Value::as_str) {
        if s.chars().count() > max {
            errors.push(format!(
                "must be less than {} characters [json-pointer:{at}]",
                max + 1
            ));
        }
    }
}

/// The buttons of a message's blocks, in order.
pub(super) fn buttons(blocks: &[Value]) -> Vec<super::Button> {
    blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("actions"))
        .filter_map(|b| b.get("elements").and_then(Value::as_array))
        .flatten()
        .filter(|e| e.get("type").and_then(Value::as_str) == Some("button"))
        .map(|e| super::Button {
            text: e["text"]["text"].as_str().unwrap_or_default().to_owned(),
            action_id: e
                .get("action_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            value: e.get("value").and_then(Value::as_str).map(str::to_owned),
            style: e.get("style").and_then(Value::as_str).map(str::to_owned),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn button(text: &str, action_id: &str, value: &str) -> Value {
        json!({"type": "button", "text": {"type": "plain_text", "text": text}, "action_id": action_id, "value": value})
    }

    #[test]
    fn limits_are_enforced() {
        let section =
            |text: String| json!({"type": "section", "text": {"type": "mrkdwn", "text": text}});
        let ok = vec![
            section("x".repeat(MAX_SECTION_TEXT)),
            json!({"type": "actions", "elements": [button(&"b".repeat(MAX_BUTTON_TEXT), "a", &"v".repeat(MAX_VALUE))]}),
            json!({"type": "context", "elements": [{"type": "plain_text", "text": "c"}]}),
        ];
        assert_eq!(validate(&ok), Vec::<String>::new());

        let cases: Vec<(Vec<Value>, &str)> = vec![
            (
                vec![json!({"type": "divider"}); MAX_BLOCKS + 1],
                "no more than 50 items",
            ),
            (
                vec![section("x".repeat(MAX_SECTION_TEXT + 1))],
                "/blocks/0/text/text",
            ),
            (vec![section(String::new())], "more than 0 characters"),
            (
                vec![json!({"type": "actions", "elements": [button(&"b".repeat(76), "a", "v")]})],
                "/blocks/0/elements/0/text/text",
            ),
            (
                vec![json!({"type": "actions", "elements": [button("b", "a", &"v".repeat(2001))]})],
                "/blocks/0/elements/0/value",
            ),
            (
                vec![json!({"type": "actions", "elements": [button("b", &"a".repeat(256), "v")]})],
                "/blocks/0/elements/0/action_id",
            ),
            (
                vec![
                    json!({"type": "actions", "elements": [button("b", "a", "v"), button("c", "a", "w")]}),
                ],
                "already used",
            ),
            (
                vec![
                    json!({"type": "actions", "elements": [{"type": "button", "text": {"type": "mrkdwn", "text": "*b*"}}]}),
                ],
                "invalid text type",
            ),
            (
                vec![
                    json!({"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "b"}, "style": "green"}]}),
                ],
                "primary, danger",
            ),
            (
                vec![json!({"type": "actions", "elements": []})],
                "between 1 and 25",
            ),
            (vec![json!({"type": "fancy"})], "unsupported type"),
        ];
        for (blocks, want) in cases {
            let errors = validate(&blocks);
            assert!(
                errors.iter().any(|e| e.contains(want)),
                "{want}: {errors:?}"
            );
        }
    }

    #[test]
    fn blocks_arrive_as_json_or_as_a_string() {
        let blocks = json!([{"type": "divider"}]);
        assert_eq!(
            parse(Some(&blocks)),
            Ok(Some(vec![json!({"type": "divider"})]))
        );
        assert_eq!(
            parse(Some(&json!(blocks.to_string()))),
            Ok(Some(vec![json!({"type": "divider"})]))
        );
        assert_eq!(parse(None), Ok(None));
        assert!(parse(Some(&json!("not json"))).is_err());
        assert!(parse(Some(&json!({"type": "divider"}))).is_err());
    }
}
