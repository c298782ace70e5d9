//! The Discord REST client: the one type that owns the HTTP client, the bot token and the rate
//! limit budget. Errors name the route template, never the path (interaction paths carry a
//! token) and never the token.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, RETRY_AFTER, USER_AGENT};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::channels::ChannelError;

use super::ratelimit::{retry_after, Budget, Limits, Route};
use super::wire::{self, ErrorBody};

/// Discord asks for `DiscordBot (<url>, <version>)`; requests without it may be blocked.
const AGENT: &str = concat!(
    "DiscordBot (https://stakpak.dev, ",
    env!("CARGO_PKG_VERSION"),
    ")"
);

/// How long a paced request waits on its own before handing the wait to the caller (which
/// sleeps where it can be cancelled).
const MAX_PACE: Duration = Duration::from_secs(5);

/// Why a REST call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("Discord refused the bot token (HTTP 401 on {route}); check the token in the Developer Portal")]
    Unauthorized { route: &'static str },
    #[error("rate limited on {route}; retry after {:.2} s", retry_after.as_secs_f64())]
    RateLimited {
        route: &'static str,
        retry_after: Duration,
    },
    #[error("{route}: HTTP {status}: {message}{}", code.map(|c| format!(" (code {c})")).unwrap_or_default())]
    Refused {
        route: &'static str,
        status: u16,
        code: Option<u64>,
        message: String,
    },
    #[error("{route}: Discord answered HTTP {status}")]
    Server { route: &'static str, status: u16 },
    #[error("{route}: {message}")]
    Transport {
        route: &'static str,
        message: String,
    },
    #[error("{route}: unexpected response: {message}")]
    Decode {
        route: &'static str,
        message: String,
    },
}

impl ApiError {
    pub fn is_auth(&self) -> bool {
        matches!(self, ApiError::Unauthorized { .. })
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ApiError::RateLimited { .. }
                | ApiError::Server { .. }
                | ApiError::Transport { .. }
                | ApiError::Decode { .. }
        )
    }

    pub fn into_channel_error(self) -> ChannelError {
        match self {
            ApiError::Unauthorized { .. } => ChannelError::Auth(self.to_string()),
            ApiError::RateLimited { retry_after, .. } => ChannelError::RateLimited(retry_after),
            ApiError::Refused { status: 404, .. } => ChannelError::TargetNotFound(self.to_string()),
            ApiError::Refused { .. } => ChannelError::Rejected(self.to_string()),
            ApiError::Server { .. } | ApiError::Transport { .. } | ApiError::Decode { .. } => {
                ChannelError::Transport(self.to_string())
            }
        }
    }
}

/// Builds a route key; `major` is the top-level resource of the path.
fn route(template: &'static str, major: &str) -> Route {
    Route {
        template,
        major: major.to_owned(),
        global: true,
    }
}

/// The REST client. Cheap to clone; clones share the connection pool and the budget.
#[derive(Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    auth: HeaderValue,
    budget: Arc<Mutex<Budget>>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Api {
    pub fn new(base: &str, token: &str) -> Result<Api, ChannelError> {
        let http = crate::http::platform_api_builder()
            .timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ChannelError::Transport(format!("cannot build the HTTP client: {e}")))?;
        let mut auth = HeaderValue::from_str(&format!("Bot {}", token.trim())).map_err(|_| {
            ChannelError::Auth("the Discord token contains characters a token cannot have".into())
        })?;
        auth.set_sensitive(true);
        Ok(Api {
            http,
            base: base.trim_end_matches('/').to_owned(),
            auth,
            budget: Arc::default(),
        })
    }

    /// Downloads an attachment from Discord's CDN (signed addresses; no token is sent), within
    /// `limits`. Only the CDN's hosts (and, for a self-hosted or test server, the API's own host)
    /// are fetched from.
    pub async fn download(
        &self,
        url: &str,
        limits: &crate::media::Limits,
    ) -> Result<Vec<u8>, crate::media::FetchError> {
        use crate::media;
        let hosts: Vec<String> = ["cdn.discordapp.com", "media.discordapp.net"]
            .into_iter()
            .map(str::to_owned)
            .chain(media::host_of(&self.base))
            .collect();
        let url = media::check_file_url(url, &hosts)?;
        media::fetch(self.http.get(url), limits, |e| e.to_string()).await
    }

    fn budget(&self) -> std::sync::MutexGuard<'_, Budget> {
        // The budget is plain counters; a panic elsewhere cannot leave it unusable.
        self.budget.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the route's budget: a short wait is taken here (pacing a burst), a long one is
    /// handed back as a rate limit.
    async fn pace(&self, route: &Route) -> Result<(), ApiError> {
        loop {
            let wait = match self.budget().reserve(route, Instant::now()) {
                Ok(()) => return Ok(()),
                Err(wait) => wait,
            };
            if wait > MAX_PACE {
                return Err(ApiError::RateLimited {
                    route: route.template,
                    retry_after: wait,
                });
            }
            tracing::debug!(
                route = route.template,
                ?wait,
                "pacing a request to stay in the rate limit"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// One request: paced, authenticated, its rate-limit headers learned, errors classified.
    async fn call(
        &self,
        method: Method,
        route: &Route,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, bytes::Bytes), ApiError> {
        self.pace(route).await?;
        let name = route.template;
        let mut request = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .header(AUTHORIZATION, self.auth.clone())
            .header(USER_AGENT, AGENT);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let transport = |e: reqwest::Error| ApiError::Transport {
            route: name,
            // Without the URL: an interaction's path carries its token.
            message: e.without_url().to_string(),
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let headers = response.headers().clone();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let limits = Limits::from_headers(header);
        let bytes = response.bytes().await.map_err(transport)?;
        let now = Instant::now();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let body: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_default();
            let wait = retry_after(&body, header(RETRY_AFTER.as_str()));
            let global = body.global.unwrap_or(false)
                || header("x-ratelimit-global").is_some_and(|v| v.eq_ignore_ascii_case("true"));
            self.budget().limited(route, &limits, wait, global, now);
            tracing::info!(route = name, ?wait, global, "Discord rate limit hit");
            return Err(ApiError::RateLimited {
                route: name,
                retry_after: wait,
            });
        }
        self.budget().update(route, &limits, now);
        if status.is_success() {
            return Ok((status, bytes));
        }
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_default();
        Err(match status.as_u16() {
            401 => ApiError::Unauthorized { route: name },
            s if s >= 500 => ApiError::Server {
                route: name,
                status: s,
            },
            s => ApiError::Refused {
                route: name,
                status: s,
                code: body.code,
                message: body
                    .message
                    .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned()),
            },
        })
    }

    async fn get<T: DeserializeOwned>(&self, route: &Route, path: &str) -> Result<T, ApiError> {
        let (_, bytes) = self.call(Method::GET, route, path, None).await?;
        decode(route, &bytes)
    }

    async fn post<T: DeserializeOwned>(
        &self,
        route: &Route,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ApiError> {
        let body = serde_json::to_value(body).map_err(|e| ApiError::Decode {
            route: route.template,
            message: e.to_string(),
        })?;
        let (_, bytes) = self.call(Method::POST, route, path, Some(body)).await?;
        decode(route, &bytes)
    }

    /// `GET /users/@me`: the bot's own user; a 401 means the token is wrong.
    pub async fn me(&self) -> Result<wire::User, ApiError> {
        self.get(&route("GET /users/@me", ""), "/users/@me").await
    }

    /// `GET /gateway/bot`: where to connect, and how many session starts are left.
    pub async fn gateway_bot(&self) -> Result<wire::GatewayBot, ApiError> {
        self.get(&route("GET /gateway/bot", ""), "/gateway/bot")
            .await
    }

    /// `GET /channels/{id}`: a channel's type and, for a thread, its parent.
    pub async fn channel(&self, id: &str) -> Result<wire::Channel, ApiError> {
        self.get(&route("GET /channels/{}", id), &format!("/channels/{id}"))
            .await
    }

    /// `GET /channels/{thread}/thread-members/{user}`: whether the user is part of the thread.
    pub async fn is_thread_member(&self, thread: &str, user: &str) -> Result<bool, ApiError> {
        let route = route("GET /channels/{}/thread-members/{}", thread);
        let path = format!("/channels/{thread}/thread-members/{user}");
        match self.call(Method::GET, &route, &path, None).await {
            Ok(_) => Ok(true),
            Err(ApiError::Refused { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `POST /channels/{id}/messages`.
    pub async fn create_message(
        &self,
        channel: &str,
        body: &wire::CreateMessage<'_>,
    ) -> Result<wire::CreatedMessage, ApiError> {
        let route = route("POST /channels/{}/messages", channel);
        self.post(&route, &format!("/channels/{channel}/messages"), body)
            .await
    }

    /// `POST /channels/{id}/typing` (the indicator lasts 10 s).
    pub async fn typing(&self, channel: &str) -> Result<(), ApiError> {
        let route = route("POST /channels/{}/typing", channel);
        self.call(
            Method::POST,
            &route,
            &format!("/channels/{channel}/typing"),
            None,
        )
        .await
        .map(|_| ())
    }

    /// `PUT /channels/{id}/messages/{id}/reactions/{emoji}/@me`.
    pub async fn react(&self, channel: &str, message: &str, emoji: &str) -> Result<(), ApiError> {
        let route = route("PUT /channels/{}/messages/{}/reactions/{}/@me", channel);
        let emoji: String = url::form_urlencoded::byte_serialize(emoji.as_bytes()).collect();
        let path = format!("/channels/{channel}/messages/{message}/reactions/{emoji}/@me");
        self.call(Method::PUT, &route, &path, None)
            .await
            .map(|_| ())
    }

    /// `POST /users/@me/channels`: the DM channel with a user (the same one every time).
    pub async fn open_dm(&self, user: &str) -> Result<wire::Channel, ApiError> {
        let route = route("POST /users/@me/channels", "");
        self.post(
            &route,
            "/users/@me/channels",
            &json!({ "recipient_id": user }),
        )
        .await
    }

    /// `PUT /applications/{id}/commands`: replaces the bot's global slash commands with `body`.
    pub async fn put_commands(&self, application: &str, body: &Value) -> Result<(), ApiError> {
        let route = route("PUT /applications/{}/commands", application);
        let path = format!("/applications/{application}/commands");
        self.call(Method::PUT, &route, &path, Some(body.clone()))
            .await
            .map(|_| ())
    }

    /// `PATCH /channels/{id}/messages/{id}`: edits a message the bot posted (the fields given
    /// replace the old ones; the rest stay).
    pub async fn edit_message(
        &self,
        channel: &str,
        message: &str,
        body: &Value,
    ) -> Result<wire::CreatedMessage, ApiError> {
        let route = route("PATCH /channels/{}/messages/{}", channel);
        let path = format!("/channels/{channel}/messages/{message}");
        let (_, bytes) = self
            .call(Method::PATCH, &route, &path, Some(body.clone()))
            .await?;
        decode(&route, &bytes)
    }

    /// `GET /channels/{id}/messages/{id}`: one message (the bot's own always come with their
    /// content).
    pub async fn message(
        &self,
        channel: &str,
        message: &str,
    ) -> Result<wire::CreatedMessage, ApiError> {
        let route = route("GET /channels/{}/messages/{}", channel);
        self.get(&route, &format!("/channels/{channel}/messages/{message}"))
            .await
    }

    /// `PATCH /webhooks/{application}/{token}/messages/@original`: edits the message an
    /// interaction answered (for a component: the message that holds it).
    pub async fn edit_original(
        &self,
        application: &str,
        token: &str,
        body: &Value,
    ) -> Result<(), ApiError> {
        let path = format!("/webhooks/{application}/{token}/messages/@original");
        self.interaction_call(
            Method::PATCH,
            "PATCH /webhooks/{}/{}/messages/@original",
            application,
            &path,
            body,
        )
        .await
    }

    /// `POST /webhooks/{application}/{token}`: a follow-up message to an interaction (with flags
    /// 64 only the clicker sees it).
    pub async fn follow_up(
        &self,
        application: &str,
        token: &str,
        body: &Value,
    ) -> Result<(), ApiError> {
        let path = format!("/webhooks/{application}/{token}");
        self.interaction_call(
            Method::POST,
            "POST /webhooks/{}/{}",
            application,
            &path,
            body,
        )
        .await
    }

    /// `POST /interactions/{id}/{token}/callback`: answers a component click (type 7 updates the
    /// message that holds the button).
    pub async fn answer_interaction(
        &self,
        id: &str,
        token: &str,
        response: &Value,
    ) -> Result<(), ApiError> {
        let path = format!("/interactions/{id}/{token}/callback");
        self.interaction_call(
            Method::POST,
            "POST /interactions/{}/{}/callback",
            id,
            &path,
            response,
        )
        .await
    }

    /// The interaction endpoints: keyed on the interaction (or application), and not counted
    /// against the global rate limit.
    async fn interaction_call(
        &self,
        method: Method,
        template: &'static str,
        major: &str,
        path: &str,
        body: &Value,
    ) -> Result<(), ApiError> {
        let route = Route {
            template,
            major: major.to_owned(),
            global: false,
        };
        self.call(method, &route, path, Some(body.clone()))
            .await
            .map(|_| ())
    }
}

fn decode<T: DeserializeOwned>(route: &Route, bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::Decode {
        route: route.template,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_what_the_dispatcher_acts_on() {
        let refused = |status| ApiError::Refused {
            route: "POST /channels/{}/messages",
            status,
            code: Some(50013),
            message: "Missing Permissions".into(),
        };
        type Check = fn(&ChannelError) -> bool;
        let cases: Vec<(ApiError, Check)> = vec![
            (
                ApiError::Unauthorized {
                    route: "GET /users/@me",
                },
                |e| matches!(e, ChannelError::Auth(_)),
            ),
            (
                ApiError::RateLimited {
                    route: "x",
                    retry_after: Duration::from_millis(250),
                },
                |e| matches!(e, ChannelError::RateLimited(d) if *d == Duration::from_millis(250)),
            ),
            (refused(404), |e| {
                matches!(e, ChannelError::TargetNotFound(_))
            }),
            (refused(403), |e| matches!(e, ChannelError::Rejected(_))),
            (
                ApiError::Server {
                    route: "x",
                    status: 502,
                },
                |e| matches!(e, ChannelError::Transport(_)),
            ),
        ];
        for (error, check) in cases {
            let text = error.to_string();
            let mapped = error.into_channel_error();
            assert!(check(&mapped), "{text} → {mapped:?}");
        }
        assert_eq!(
            refused(403).to_string(),
            "POST /channels/{}/messages: HTTP 403: Missing Permissions (code 50013)"
        );
    }

    #[test]
    fn the_user_agent_is_what_discord_asks_for() {
        assert!(AGENT.starts_with("DiscordBot (https://"));
        assert!(AGENT.ends_with(&format!(", {})", env!("CARGO_PKG_VERSION"))));
    }

    #[test]
    fn the_token_is_never_in_debug_output() {
        let api = Api::new("http://127.0.0.1:1/api/v10/", "secret-token").expect("api");
        assert!(!format!("{api:?}").contains("secret-token"));
        assert_eq!(api.base, "http://127.0.0.1:1/api/v10");
    }
}
