//! The Bot API client: the one type that owns the HTTP client and the token.
//!
//! Every method is `POST {api_base}/bot{TOKEN}/{method}` with a JSON body (contract 1.1); a base
//! with a path (`http://127.0.0.1:8081/tg`) keeps it. The token is part of every URL, so no error
//! this type produces ever contains the URL or the token.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::wire::{
    self, AnswerCallbackQuery, EditMessageText, GetUpdates, Response, SendChatAction, SendMessage,
    User, ALLOWED_UPDATES,
};
use crate::channels::ChannelError;
use crate::media::{self, FetchError};

/// What stands in for the token in anything shown or logged.
const REDACTED: &str = "<token>";

/// How long an ordinary call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long answering a button press may take: the client gives up on it within seconds.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How much longer than its long-poll timeout a `getUpdates` call may take before the client
/// gives up on it.
const POLL_GRACE: Duration = Duration::from_secs(15);

/// Why a Bot API call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The server answered `ok: false`.
    #[error("{method}: {description} ({code})")]
    Api {
        method: &'static str,
        code: i64,
        description: String,
        retry_after: Option<Duration>,
        migrate_to: Option<i64>,
    },
    /// The server could not be reached, or the answer was not the Bot API's.
    #[error("{method}: {detail}")]
    Transport {
        method: &'static str,
        detail: String,
    },
}

impl ApiError {
    pub fn code(&self) -> Option<i64> {
        match self {
            ApiError::Api { code, .. } => Some(*code),
            ApiError::Transport { .. } => None,
        }
    }

    /// The token was refused (401) or has a shape the server does not route (404).
    pub fn is_auth(&self) -> bool {
        matches!(self.code(), Some(401 | 404))
    }

    /// How long a 429 asks to wait.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Api {
                code: 429,
                retry_after,
                ..
            } => Some(retry_after.unwrap_or(Duration::from_secs(1))),
            _ => None,
        }
    }

    fn description(&self) -> &str {
        match self {
            ApiError::Api { description, .. } => description,
            ApiError::Transport { detail, .. } => detail,
        }
    }

    /// Whether the description starts with this (case-insensitive; the server's wording varies
    /// in case between versions).
    pub fn says(&self, text: &str) -> bool {
        self.description()
            .to_ascii_lowercase()
            .contains(&text.to_ascii_lowercase())
    }
}

impl From<ApiError> for ChannelError {
    fn from(e: ApiError) -> Self {
        if let Some(wait) = e.retry_after() {
            return ChannelError::RateLimited(wait);
        }
        let text = e.to_string();
        match e.code() {
            Some(401 | 404) => ChannelError::Auth(text),
            Some(400) if e.says("chat not found") => ChannelError::TargetNotFound(text),
            Some(403) => ChannelError::Rejected(text),
            Some(409) | Some(500..) | None => ChannelError::Transport(text),
            Some(_) => ChannelError::Rejected(text),
        }
    }
}

/// A Bot API client for one bot.
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    pub fn new(api_base: &str, token: &str) -> Self {
        let http = crate::http::platform_api_builder()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Api {
            http,
            base: api_base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    pub fn has_token(&self) -> bool {
        !self.token.trim().is_empty()
    }

    /// Removes the token from a text (raw or percent-encoded), for errors and logs.
    pub fn redact(&self, text: &str) -> String {
        redact(text, &self.token)
    }

    pub async fn get_me(&self) -> Result<User, ApiError> {
        self.call("getMe", &serde_json::json!({}), CALL_TIMEOUT)
            .await
    }

    pub async fn delete_webhook(&self) -> Result<bool, ApiError> {
        self.call(
            "deleteWebhook",
            &serde_json::json!({"drop_pending_updates": false}),
            CALL_TIMEOUT,
        )
        .await
    }

    /// One long poll. The updates stay raw so one the adapter cannot read does not hide the rest
    /// of the batch.
    pub async fn get_updates(
        &self,
        offset: Option<i64>,
        timeout: Duration,
    ) -> Result<Vec<Value>, ApiError> {
        let body = GetUpdates {
            offset,
            timeout: timeout.as_secs(),
            allowed_updates: ALLOWED_UPDATES,
        };
        self.call("getUpdates", &body, timeout + POLL_GRACE).await
    }

    /// `sendMessageDraft`: an ephemeral preview of a message being written, in a private chat.
    pub async fn send_message_draft(&self, body: &Value) -> Result<bool, ApiError> {
        self.call("sendMessageDraft", body, CALL_TIMEOUT).await
    }

    /// `setMyCommands`: the bot's command menu, for every chat.
    pub async fn set_my_commands(&self, body: &Value) -> Result<bool, ApiError> {
        self.call("setMyCommands", body, CALL_TIMEOUT).await
    }

    pub async fn send_message(
        &self,
        body: &SendMessage<'_>,
    ) -> Result<wire::SentMessage, ApiError> {
        self.call("sendMessage", body, CALL_TIMEOUT).await
    }

    pub async fn send_chat_action(&self, body: &SendChatAction) -> Result<bool, ApiError> {
        self.call("sendChatAction", body, CALL_TIMEOUT).await
    }

    /// Stops the button's spinner, showing `text` (if any) to the person who pressed it.
    pub async fn answer_callback_query(
        &self,
        body: &AnswerCallbackQuery<'_>,
    ) -> Result<bool, ApiError> {
        self.call("answerCallbackQuery", body, ANSWER_TIMEOUT).await
    }

    /// Replaces a message's text; its buttons go (the body has no `reply_markup`).
    pub async fn edit_message_text(&self, body: &EditMessageText<'_>) -> Result<Value, ApiError> {
        self.call("editMessageText", body, CALL_TIMEOUT).await
    }

    pub async fn get_file(&self, file_id: &str) -> Result<wire::File, ApiError> {
        self.call(
            "getFile",
            &serde_json::json!({ "file_id": file_id }),
            CALL_TIMEOUT,
        )
        .await
    }

    /// Downloads a file by the `file_path` `getFile` gave, within `limits`, from the
    /// Bot API's own file address (`{api_base}/file/bot{TOKEN}/{file_path}`).
    pub async fn download(
        &self,
        file_path: &str,
        limits: &media::Limits,
    ) -> Result<Vec<u8>, FetchError> {
        // The server names the path, but it still must not leave the bot's file directory.
        let odd = file_path.is_empty()
            || file_path.starts_with('/')
            || file_path.split('/').any(|part| part == ".." || part == ".")
            || file_path.contains(['?', '#', '\\'])
            || file_path.contains("://");
        if odd {
            return Err(FetchError::NotAllowed(
                "a file path outside the bot's files".into(),
            ));
        }
        let url = format!("{}/file/bot{}/{}", self.base, self.token, file_path);
        // The address holds the token: whatever goes wrong is said without it.
        media::fetch(self.http.get(url), limits, describe)
            .await
            .map_err(|e| match e {
                FetchError::Failed(text) => FetchError::Failed(self.redact(&text)),
                other => other,
            })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        body: &impl Serialize,
        timeout: Duration,
    ) -> Result<T, ApiError> {
        let url = format!("{}/bot{}/{}", self.base, self.token, method);
        let transport = |detail: String| ApiError::Transport {
            method,
            detail: self.redact(&detail),
        };
        let response = self
            .http
            .post(url)
            .json(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| transport(describe(e.without_url())))?;
        let status = response.status();
        let header_wait = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport(describe(e.without_url())))?;
        let envelope: Response<T> = match serde_json::from_slice(&bytes) {
            Ok(envelope) => envelope,
            Err(e) => {
                let start: String = String::from_utf8_lossy(&bytes).chars().take(120).collect();
                return Err(transport(format!(
                    "not a Bot API answer (HTTP {status}): {e}; body starts {start:?}"
                )));
            }
        };
        match envelope {
            Response {
                ok: true,
                result: Some(result),
                ..
            } => Ok(result),
            Response {
                ok: true,
                result: None,
                ..
            } => Err(transport(format!("HTTP {status} with no result"))),
            Response {
                error_code,
                description,
                parameters,
                ..
            } => {
                let parameters = parameters.unwrap_or_default();
                Err(ApiError::Api {
                    method,
                    code: error_code.unwrap_or(i64::from(status.as_u16())),
                    description: self.redact(description.as_deref().unwrap_or("no description")),
                    retry_after: parameters
                        .retry_after
                        .or(header_wait)
                        .map(Duration::from_secs),
                    migrate_to: parameters.migrate_to_chat_id,
                })
            }
        }
    }
}

/// A reqwest error with its causes, which say what actually went wrong ("connection refused").
fn describe(e: reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Replaces every occurrence of `token` (as written, or percent-encoded as in a URL) in `text`.
pub fn redact(text: &str, token: &str) -> String {
    if token.is_empty() {
        return text.to_string();
    }
    let encode = |upper: bool| -> String {
        token
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ if upper => format!("%{b:02X}"),
                _ => format!("%{b:02x}"),
            })
            .collect()
    };
    [encode(true), encode(false)]
        .iter()
        .fold(text.replace(token, REDACTED), |out, form| {
            out.replace(form, REDACTED)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_redacted_in_every_form() {
        let token = "123456:AAE-x_y";
        let cases = [
            (
                "error sending request for url (http://h/bot123456:AAE-x_y/getMe)",
                "error sending request for url (http://h/bot<token>/getMe)",
            ),
            (
                "http://h/bot123456%3AAAE-x_y/getMe",
                "http://h/bot<token>/getMe",
            ),
            (
                "http://h/bot123456%3aAAE-x_y/getMe",
                "http://h/bot<token>/getMe",
            ),
            ("nothing secret", "nothing secret"),
        ];
        for (text, expected) in cases {
            assert_eq!(redact(text, token), expected);
        }
        assert_eq!(redact("text", ""), "text", "an empty token redacts nothing");
    }

    #[test]
    fn errors_map_to_what_the_dispatcher_needs() {
        let api = |code: i64, description: &str, retry_after: Option<u64>| ApiError::Api {
            method: "sendMessage",
            code,
            description: description.into(),
            retry_after: retry_after.map(Duration::from_secs),
            migrate_to: None,
        };
        let cases: Vec<(ApiError, &str)> = vec![
            (
                api(429, "Too Many Requests: retry after 14", Some(14)),
                "RateLimited(14s)",
            ),
            (api(429, "Too Many Requests", None), "RateLimited(1s)"),
            (api(401, "Unauthorized", None), "Auth"),
            (api(404, "Not Found", None), "Auth"),
            (
                api(400, "Bad Request: chat not found", None),
                "TargetNotFound",
            ),
            (
                api(403, "Forbidden: bot was blocked by the user", None),
                "Rejected",
            ),
            (
                api(400, "Bad Request: message text is empty", None),
                "Rejected",
            ),
            (
                api(
                    409,
                    "Conflict: terminated by other getUpdates request",
                    None,
                ),
                "Transport",
            ),
            (api(502, "Bad Gateway", None), "Transport"),
            (
                ApiError::Transport {
                    method: "sendMessage",
                    detail: "connection refused".into(),
                },
                "Transport",
            ),
        ];
        for (error, expected) in cases {
            let mapped = format!("{:?}", ChannelError::from(error.clone()));
            assert!(mapped.starts_with(expected), "{error}: {mapped}");
        }
    }

    #[test]
    fn error_text_names_the_method_and_code() {
        let e = ApiError::Api {
            method: "getMe",
            code: 401,
            description: "Unauthorized".into(),
            retry_after: None,
            migrate_to: None,
        };
        assert_eq!(e.to_string(), "getMe: Unauthorized (401)");
        assert!(e.is_auth() && e.says("unauthorized"));
    }
}
