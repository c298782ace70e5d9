//! The Slack Web API client: `POST {api_base}/{method}` with a bearer token, answers read from
//! Slack's `{ok, error}` envelope.
//!
//! Slack reports almost every failure as HTTP 200 `{"ok":false,"error":"…"}`; rate limits come as
//! HTTP 429 with `Retry-After` seconds. Errors name the method and Slack's error code, never a
//! token (Slack's tokens travel only in the `Authorization` header, and the Socket Mode URL, which
//! carries a one-time ticket, is never put in an error).

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::wire::{AuthTest, ConnectionsOpen, ConversationsPage, Posted, UsersInfo};
use crate::channels::ChannelError;

/// When Slack sends a 429 without a usable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Slack error codes that mean the token is wrong or dead: stop, do not retry.
const AUTH_ERRORS: &[&str] = &[
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "not_allowed_token_type",
];

/// Slack error codes that mean the conversation cannot be written to.
const TARGET_ERRORS: &[&str] = &[
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "user_not_found",
    "user_not_visible",
    "cannot_dm_bot",
];

/// Why a Web API call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum ApiError {
    /// The token was refused.
    #[error("slack {method}: {error} (check the token)")]
    Auth { method: &'static str, error: String },
    #[error("slack {method}: rate limited; retry after {retry_after:?}")]
    RateLimited {
        method: &'static str,
        retry_after: Duration,
    },
    /// Slack answered `ok: false` with this error code.
    #[error("slack {method}: {error}")]
    Failed { method: &'static str, error: String },
    /// Slack could not be reached, answered with a server error or with something unreadable.
    #[error("slack {method}: {detail}")]
    Transport {
        method: &'static str,
        detail: String,
    },
}

impl ApiError {
    /// Slack's error code, for `Failed`.
    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            ApiError::Failed { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<ApiError> for ChannelError {
    fn from(e: ApiError) -> ChannelError {
        match &e {
            ApiError::Auth { .. } => ChannelError::Auth(e.to_string()),
            ApiError::RateLimited { retry_after, .. } => ChannelError::RateLimited(*retry_after),
            ApiError::Failed { error, .. } if TARGET_ERRORS.contains(&error.as_str()) => {
                ChannelError::TargetNotFound(e.to_string())
            }
            ApiError::Failed { error, .. } if error == "ratelimited" => {
                ChannelError::RateLimited(DEFAULT_RETRY_AFTER)
            }
            ApiError::Failed { error, .. }
                if matches!(
                    error.as_str(),
                    "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout"
                ) =>
            {
                ChannelError::Transport(e.to_string())
            }
            ApiError::Failed { .. } => ChannelError::Rejected(e.to_string()),
            ApiError::Transport { .. } => ChannelError::Transport(e.to_string()),
        }
    }
}

/// The body of a call.
enum Body<'a> {
    Json(&'a Value),
    /// `application/x-www-form-urlencoded`, for the methods that do not read JSON (`users.info`).
    Form(&'a [(&'a str, &'a str)]),
}

/// Which token a call carries.
#[derive(Clone, Copy)]
enum Token {
    Bot,
    App,
}

/// The one owner of the adapter's HTTP client and tokens.
pub(crate) struct WebApi {
    http: reqwest::Client,
    base: String,
    bot_token: String,
    app_token: String,
}

impl std::fmt::Debug for WebApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebApi")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl WebApi {
    pub(crate) fn new(base: &str, bot_token: &str, app_token: &str) -> WebApi {
        let http = crate::http::platform_api_builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        WebApi {
            http,
            base: base.trim_end_matches('/').to_owned(),
            bot_token: bot_token.to_owned(),
            app_token: app_token.to_owned(),
        }
    }

    /// Downloads a shared file from its private address, with the bot token, within `limits`.
    /// The address must be on Slack's file host (or, for a self-hosted or test server, the API's
    /// own host): the token never goes anywhere else.
    pub(crate) async fn download(
        &self,
        url: &str,
        limits: &crate::media::Limits,
    ) -> Result<Vec<u8>, crate::media::FetchError> {
        use crate::media;
        let hosts: Vec<String> = ["files.slack.com".to_owned()]
            .into_iter()
            .chain(media::host_of(&self.base))
            .collect();
        let url = media::check_file_url(url, &hosts)?;
        let request = self.http.get(url).bearer_auth(&self.bot_token);
        media::fetch(request, limits, |e| describe(&e)).await
    }

    /// `auth.test` with the bot token: who the bot is.
    pub(crate) async fn auth_test(&self) -> Result<AuthTest, ApiError> {
        self.call(
            "auth.test",
            Token::Bot,
            Body::Json(&Value::Object(Default::default())),
        )
        .await
    }

    /// `apps.connections.open` with the app-level token: a fresh Socket Mode URL.
    pub(crate) async fn connections_open(&self) -> Result<String, ApiError> {
        let open: ConnectionsOpen = self
            .call("apps.connections.open", Token::App, Body::Form(&[]))
            .await?;
        Ok(open.url)
    }

    /// `chat.postMessage`.
    pub(crate) async fn post_message(&self, body: &Value) -> Result<Posted, ApiError> {
        self.call("chat.postMessage", Token::Bot, Body::Json(body))
            .await
    }

    /// `chat.update`.
    pub(crate) async fn update_message(&self, body: &Value) -> Result<(), ApiError> {
        self.call::<Value>("chat.update", Token::Bot, Body::Json(body))
            .await
            .map(|_| ())
    }

    /// `chat.startStream`: a message that is written while it is shown; its `ts`.
    pub(crate) async fn start_stream(&self, body: &Value) -> Result<Posted, ApiError> {
        self.call("chat.startStream", Token::Bot, Body::Json(body))
            .await
    }

    /// `chat.appendStream`.
    pub(crate) async fn append_stream(&self, body: &Value) -> Result<(), ApiError> {
        self.call::<Value>("chat.appendStream", Token::Bot, Body::Json(body))
            .await
            .map(|_| ())
    }

    /// `chat.stopStream`: the message is complete and becomes an ordinary one.
    pub(crate) async fn stop_stream(&self, body: &Value) -> Result<(), ApiError> {
        self.call::<Value>("chat.stopStream", Token::Bot, Body::Json(body))
            .await
            .map(|_| ())
    }

    /// `chat.postEphemeral`: a message only one user sees.
    pub(crate) async fn post_ephemeral(&self, body: &Value) -> Result<(), ApiError> {
        self.call::<Value>("chat.postEphemeral", Token::Bot, Body::Json(body))
            .await
            .map(|_| ())
    }

    /// POSTs to a click's `response_url` (no token: the URL is the credential). Only Slack's
    /// hooks host (or the configured API host, for a test double) is called.
    pub(crate) async fn respond(&self, url: &str, body: &Value) -> Result<(), ApiError> {
        const METHOD: &str = "response_url";
        if !self.may_respond_to(url) {
            return Err(ApiError::Failed {
                method: METHOD,
                error: "not_a_slack_url".to_owned(),
            });
        }
        let transport = |detail: String| ApiError::Transport {
            method: METHOD,
            detail,
        };
        let response = self
            .http
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(|e| transport(describe(&e)))?;
        let status = response.status();
        if status.as_u16() == 429 {
            return Err(ApiError::RateLimited {
                method: METHOD,
                retry_after: retry_after(response.headers()),
            });
        }
        if !status.is_success() {
            return Err(transport(format!("HTTP {status}")));
        }
        Ok(())
    }

    fn may_respond_to(&self, url: &str) -> bool {
        let origin = |u: &str| -> Option<String> {
            let parsed = reqwest::Url::parse(u).ok()?;
            Some(format!(
                "{}://{}:{}",
                parsed.scheme(),
                parsed.host_str()?,
                parsed.port_or_known_default()?
            ))
        };
        let Some(target) = origin(url) else {
            return false;
        };
        target == "https://hooks.slack.com:443" || origin(&self.base).as_deref() == Some(&target)
    }

    /// `reactions.add`; `already_reacted` counts as done.
    pub(crate) async fn add_reaction(
        &self,
        channel: &str,
        ts: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        let body = serde_json::json!({ "channel": channel, "timestamp": ts, "name": name });
        match self
            .call::<Value>("reactions.add", Token::Bot, Body::Json(&body))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("already_reacted") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `users.info` (form-encoded: this method does not read JSON bodies).
    pub(crate) async fn users_info(&self, user: &str) -> Result<UsersInfo, ApiError> {
        self.call("users.info", Token::Bot, Body::Form(&[("user", user)]))
            .await
    }

    /// One page of `conversations.list` (public and private channels, no archived ones).
    pub(crate) async fn conversations_page(
        &self,
        cursor: &str,
    ) -> Result<ConversationsPage, ApiError> {
        let mut form = vec![
            ("types", "public_channel,private_channel"),
            ("exclude_archived", "true"),
            ("limit", "200"),
        ];
        if !cursor.is_empty() {
            form.push(("cursor", cursor));
        }
        self.call("conversations.list", Token::Bot, Body::Form(&form))
            .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        token: Token,
        body: Body<'_>,
    ) -> Result<T, ApiError> {
        let token = match token {
            Token::Bot => &self.bot_token,
            Token::App => &self.app_token,
        };
        let request = self
            .http
            .post(format!("{}/{method}", self.base))
            .bearer_auth(token);
        let request = match body {
            Body::Json(value) => request.json(value),
            Body::Form(pairs) => request.form(pairs),
        };
        let transport = |detail: String| ApiError::Transport { method, detail };
        let response = request.send().await.map_err(|e| transport(describe(&e)))?;
        let status = response.status();
        if status.as_u16() == 429 {
            return Err(ApiError::RateLimited {
                method,
                retry_after: retry_after(response.headers()),
            });
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport(describe(&e)))?;
        if !status.is_success() {
            return Err(transport(format!("HTTP {status}")));
        }
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|_| transport(format!("HTTP {status} with a body that is not JSON")))?;
        read_answer(method, value)
    }
}

/// Reads Slack's `{ok, error, …}` answer.
fn read_answer<T: DeserializeOwned>(method: &'static str, value: Value) -> Result<T, ApiError> {
    if value.get("ok").and_then(Value::as_bool) != Some(true) {
        let error = value
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("unknown_error")
            .to_owned();
        if AUTH_ERRORS.contains(&error.as_str()) {
            return Err(ApiError::Auth { method, error });
        }
        return Err(ApiError::Failed { method, error });
    }
    serde_json::from_value(value).map_err(|e| ApiError::Transport {
        method,
        detail: format!("unexpected answer: {e}"),
    })
}

/// `Retry-After: <seconds>`.
fn retry_after(headers: &HeaderMap) -> Duration {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|secs| secs.is_finite() && *secs >= 0.0)
        .map(|secs| Duration::from_secs_f64(secs.min(3600.0)))
        .unwrap_or(DEFAULT_RETRY_AFTER)
}

/// A reqwest error without its URL (which is harmless for Slack, but errors stay uniform).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let source = std::error::Error::source(e)
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    format!("{kind}{source}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_map_to_errors() {
        let cases: Vec<(Value, Result<(), ApiError>)> = vec![
            (json!({"ok": true}), Ok(())),
            (
                json!({"ok": false, "error": "invalid_auth"}),
                Err(ApiError::Auth {
                    method: "auth.test",
                    error: "invalid_auth".into(),
                }),
            ),
            (
                json!({"ok": false, "error": "account_inactive"}),
                Err(ApiError::Auth {
                    method: "auth.test",
                    error: "account_inactive".into(),
                }),
            ),
            (
                json!({"ok": false, "error": "channel_not_found"}),
                Err(ApiError::Failed {
                    method: "auth.test",
                    error: "channel_not_found".into(),
                }),
            ),
            (
                json!({"ok": false}),
                Err(ApiError::Failed {
                    method: "auth.test",
                    error: "unknown_error".into(),
                }),
            ),
        ];
        for (value, want) in cases {
            let got = read_answer::<Value>("auth.test", value.clone()).map(|_| ());
            assert_eq!(got, want, "{value}");
        }
    }

    #[test]
    fn errors_map_to_channel_errors() {
        let failed = |error: &str| ApiError::Failed {
            method: "chat.postMessage",
            error: error.into(),
        };
        let cases: Vec<(ApiError, &str)> = vec![
            (
                ApiError::Auth {
                    method: "auth.test",
                    error: "invalid_auth".into(),
                },
                "auth",
            ),
            (
                ApiError::RateLimited {
                    method: "chat.postMessage",
                    retry_after: Duration::from_secs(3),
                },
                "rate",
            ),
            (failed("channel_not_found"), "target"),
            (failed("not_in_channel"), "target"),
            (failed("is_archived"), "target"),
            (failed("ratelimited"), "rate"),
            (failed("internal_error"), "transport"),
            (failed("msg_too_long"), "rejected"),
            (
                ApiError::Transport {
                    method: "chat.postMessage",
                    detail: "HTTP 502".into(),
                },
                "transport",
            ),
        ];
        for (error, want) in cases {
            let text = error.to_string();
            let got = match ChannelError::from(error) {
                ChannelError::Auth(_) => "auth",
                ChannelError::RateLimited(_) => "rate",
                ChannelError::TargetNotFound(_) => "target",
                ChannelError::Transport(_) => "transport",
                ChannelError::Rejected(_) => "rejected",
                _ => "other",
            };
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn response_urls_go_only_to_slack() {
        let api = WebApi::new("http://127.0.0.1:4000/api", "xoxb-t", "xapp-t");
        let cases = [
            ("https://hooks.slack.com/actions/T1/1/abc", true),
            ("http://127.0.0.1:4000/actions/abc", true),
            ("http://127.0.0.1:4001/actions/abc", false),
            ("http://hooks.slack.com/actions/T1/1/abc", false),
            ("https://hooks.slack.com.evil.example/x", false),
            ("not a url", false),
        ];
        for (url, want) in cases {
            assert_eq!(api.may_respond_to(url), want, "{url}");
        }
    }

    #[test]
    fn retry_after_header() {
        let cases = [
            (Some("3"), 3000),
            (Some(" 1.5 "), 1500),
            (Some("soon"), 1000),
            (None, 1000),
            (Some("99999"), 3_600_000),
        ];
        for (header, want_ms) in cases {
            let mut headers = HeaderMap::new();
            if let Some(h) = header {
                headers.insert(RETRY_AFTER, h.parse().expect("header value"));
            }
            assert_eq!(retry_after(&headers).as_millis(), want_ms, "{header:?}");
        }
    }
}
