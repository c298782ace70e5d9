//! Discord's REST rate limits, kept ahead of time so a burst of replies is paced instead of
//! rejected ([D5]).
//!
//! Each response says which bucket its route belongs to (`X-RateLimit-Bucket`), how many requests
//! are left in it (`-Remaining`) and when it refills (`-Reset-After`). A bucket is shared per
//! top-level resource, so the key is the bucket hash plus the channel (or other major id). Before
//! a route's hash is known its template stands in. Global: 50 requests per second per bot, and a
//! global 429 stops everything until it passes. Pure: the caller passes the time.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::wire::ErrorBody;

/// Requests per second the whole bot may make (interaction callbacks do not count).
pub(crate) const GLOBAL_PER_SECOND: usize = 50;
const GLOBAL_WINDOW: Duration = Duration::from_secs(1);

/// A REST route as the limits see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Route {
    /// Method and path template, e.g. `POST /channels/{}/messages`.
    pub template: &'static str,
    /// The top-level resource in the path (a channel id), or "" when there is none.
    pub major: String,
    /// Whether the request counts against the global limit.
    pub global: bool,
}

/// The rate-limit headers of one response.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Limits {
    pub bucket: Option<String>,
    pub limit: Option<u32>,
    pub remaining: Option<u32>,
    pub reset_after: Option<Duration>,
}

impl Limits {
    /// Reads the `X-RateLimit-*` headers through `header(name)`.
    pub fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Limits {
        let number = |name: &str| header(name).and_then(|v| v.trim().parse::<u32>().ok());
        Limits {
            bucket: header("x-ratelimit-bucket").map(str::to_owned),
            limit: number("x-ratelimit-limit"),
            remaining: number("x-ratelimit-remaining"),
            reset_after: header("x-ratelimit-reset-after").and_then(seconds),
        }
    }
}

/// How long a 429 says to wait: the body's float `retry_after`, else the `Retry-After` header,
/// else one second.
pub(crate) fn retry_after(body: &ErrorBody, header: Option<&str>) -> Duration {
    body.retry_after
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .or_else(|| header.and_then(seconds))
        .unwrap_or(Duration::from_secs(1))
}

/// Seconds as Discord writes them: `1`, `0.25`, `64.57`.
fn seconds(text: &str) -> Option<Duration> {
    let secs: f64 = text.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

#[derive(Debug, Clone, PartialEq)]
struct Bucket {
    limit: u32,
    remaining: u32,
    /// When it refills; unknown until a response says.
    reset_at: Option<Instant>,
}

/// The bot's REST budget: what each bucket has left and the global allowance.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    /// Route template → the bucket hash Discord gave it.
    hashes: HashMap<&'static str, String>,
    /// (bucket hash or template, major) → the bucket.
    buckets: HashMap<(String, String), Bucket>,
    /// A global 429 holds every request until then.
    global_until: Option<Instant>,
    /// When the global requests of the last second were made.
    recent: VecDeque<Instant>,
}

impl Budget {
    fn key(&self, route: &Route) -> (String, String) {
        let hash = self
            .hashes
            .get(route.template)
            .cloned()
            .unwrap_or_else(|| route.template.to_owned());
        (hash, route.major.clone())
    }

    /// Takes a slot for a request on `route` at `now`, or says how long to wait before asking
    /// again.
    pub fn reserve(&mut self, route: &Route, now: Instant) -> Result<(), Duration> {
        if let Some(until) = self.global_until {
            if now < until {
                return Err(until - now);
            }
            self.global_until = None;
        }
        if route.global {
            while self
                .recent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= GLOBAL_WINDOW)
            {
                self.recent.pop_front();
            }
            if self.recent.len() >= GLOBAL_PER_SECOND {
                if let Some(oldest) = self.recent.front() {
                    return Err(GLOBAL_WINDOW.saturating_sub(now.duration_since(*oldest)));
                }
            }
        }
        let key = self.key(route);
        if let Some(bucket) = self.buckets.get_mut(&key) {
            if bucket.reset_at.is_some_and(|t| now >= t) {
                bucket.remaining = bucket.limit;
                bucket.reset_at = None;
            }
            if bucket.remaining == 0 {
                if let Some(reset_at) = bucket.reset_at {
                    return Err(reset_at - now);
                }
                // Used up by requests still in flight and no reset time known yet: go ahead; a
                // 429 would say how long to wait.
            } else {
                bucket.remaining -= 1;
            }
        }
        if route.global {
            self.recent.push_back(now);
        }
        Ok(())
    }

    /// Learns from a response's headers.
    pub fn update(&mut self, route: &Route, limits: &Limits, now: Instant) {
        if let Some(hash) = &limits.bucket {
            self.hashes.insert(route.template, hash.clone());
        }
        let (Some(remaining), Some(reset_after)) = (limits.remaining, limits.reset_after) else {
            return;
        };
        let key = self.key(route);
        let limit = limits
            .limit
            .or_else(|| self.buckets.get(&key).map(|b| b.limit))
            .unwrap_or(remaining.max(1));
        self.buckets.insert(
            key,
            Bucket {
                limit,
                remaining,
                reset_at: Some(now + reset_after),
            },
        );
    }

    /// Learns from a 429: the bucket (or everything, when `global`) waits `retry_after`.
    pub fn limited(
        &mut self,
        route: &Route,
        limits: &Limits,
        retry_after: Duration,
        global: bool,
        now: Instant,
    ) {
        if global {
            self.global_until = Some(now + retry_after);
            return;
        }
        if let Some(hash) = &limits.bucket {
            self.hashes.insert(route.template, hash.clone());
        }
        let key = self.key(route);
        let limit = limits
            .limit
            .or_else(|| self.buckets.get(&key).map(|b| b.limit))
            .unwrap_or(1);
        self.buckets.insert(
            key,
            Bucket {
                limit,
                remaining: 0,
                reset_at: Some(now + retry_after),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(channel: &str) -> Route {
        Route {
            template: "POST /channels/{}/messages",
            major: channel.into(),
            global: true,
        }
    }

    fn typing(channel: &str) -> Route {
        Route {
            template: "POST /channels/{}/typing",
            major: channel.into(),
            global: true,
        }
    }

    fn limits(bucket: &str, limit: u32, remaining: u32, reset_after_ms: u64) -> Limits {
        Limits {
            bucket: Some(bucket.into()),
            limit: Some(limit),
            remaining: Some(remaining),
            reset_after: Some(Duration::from_millis(reset_after_ms)),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn headers_and_retry_after_parse() {
        let headers = [
            ("x-ratelimit-bucket", "abcd1234"),
            ("x-ratelimit-limit", "5"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset-after", "0.25"),
        ];
        let parsed =
            Limits::from_headers(|name| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v));
        assert_eq!(parsed, limits("abcd1234", 5, 0, 250));
        assert_eq!(Limits::from_headers(|_| None), Limits::default());

        let body = |retry_after| ErrorBody {
            retry_after,
            ..ErrorBody::default()
        };
        let cases = [
            (Some(64.57), None, Duration::from_secs_f64(64.57)),
            (Some(0.3), Some("9"), ms(300)),
            (None, Some("2"), Duration::from_secs(2)),
            (None, Some("1.5"), ms(1500)),
            (Some(f64::NAN), None, Duration::from_secs(1)),
            (Some(-1.0), Some("x"), Duration::from_secs(1)),
            (None, None, Duration::from_secs(1)),
        ];
        for (in_body, header, want) in cases {
            assert_eq!(
                retry_after(&body(in_body), header),
                want,
                "{in_body:?} {header:?}"
            );
        }
    }

    /// A step in a budget's life: at `at` ms, do something, and expect a result of `reserve`.
    enum Step {
        Reserve(Route, Result<(), Duration>),
        Update(Route, Limits),
        Limited(Route, Option<&'static str>, u64, bool),
    }

    #[test]
    fn budgets_pace_requests_as_the_headers_say() {
        use Step::*;
        let cases: Vec<(&str, Vec<(u64, Step)>)> = vec![
            (
                "an unknown route goes ahead",
                vec![(0, Reserve(messages("1"), Ok(())))],
            ),
            (
                "remaining 0 waits for the reset",
                vec![
                    (0, Reserve(messages("1"), Ok(()))),
                    (10, Update(messages("1"), limits("b", 5, 0, 500))),
                    (20, Reserve(messages("1"), Err(ms(490)))),
                    (510, Reserve(messages("1"), Ok(()))),
                ],
            ),
            (
                "remaining counts down locally between responses",
                vec![
                    (0, Update(messages("1"), limits("b", 5, 2, 1000))),
                    (1, Reserve(messages("1"), Ok(()))),
                    (2, Reserve(messages("1"), Ok(()))),
                    (3, Reserve(messages("1"), Err(ms(997)))),
                    (1000, Reserve(messages("1"), Ok(()))),
                ],
            ),
            (
                "a bucket is per channel",
                vec![
                    (0, Update(messages("1"), limits("b", 5, 0, 1000))),
                    (1, Reserve(messages("2"), Ok(()))),
                    (2, Reserve(messages("1"), Err(ms(998)))),
                ],
            ),
            (
                "routes sharing a bucket hash share the budget",
                vec![
                    (0, Update(messages("1"), limits("shared", 5, 1, 1000))),
                    (0, Update(typing("1"), limits("shared", 5, 0, 1000))),
                    (1, Reserve(messages("1"), Err(ms(999)))),
                ],
            ),
            (
                "a bucket 429 holds that bucket only",
                vec![
                    (0, Limited(messages("1"), Some("b"), 300, false)),
                    (100, Reserve(messages("1"), Err(ms(200)))),
                    (100, Reserve(typing("1"), Ok(()))),
                    (300, Reserve(messages("1"), Ok(()))),
                ],
            ),
            (
                "a global 429 holds everything",
                vec![
                    (0, Limited(messages("1"), None, 2000, true)),
                    (500, Reserve(typing("9"), Err(ms(1500)))),
                    (2000, Reserve(typing("9"), Ok(()))),
                ],
            ),
        ];
        for (name, steps) in cases {
            let t0 = Instant::now();
            let mut budget = Budget::default();
            for (i, (at, step)) in steps.into_iter().enumerate() {
                let now = t0 + ms(at);
                match step {
                    Reserve(route, want) => {
                        assert_eq!(budget.reserve(&route, now), want, "{name}: step {i}")
                    }
                    Update(route, limits) => budget.update(&route, &limits, now),
                    Limited(route, bucket, wait, global) => {
                        let limits = Limits {
                            bucket: bucket.map(str::to_owned),
                            ..Limits::default()
                        };
                        budget.limited(&route, &limits, ms(wait), global, now)
                    }
                }
            }
        }
    }

    #[test]
    fn the_global_limit_is_fifty_a_second() {
        let t0 = Instant::now();
        let mut budget = Budget::default();
        for i in 0..GLOBAL_PER_SECOND {
            let channel = i.to_string();
            assert_eq!(
                budget.reserve(&messages(&channel), t0 + ms(i as u64)),
                Ok(())
            );
        }
        assert_eq!(
            budget.reserve(&messages("x"), t0 + ms(100)),
            Err(ms(900)),
            "the 51st request in a second waits for the oldest to leave the window"
        );
        let callback = Route {
            template: "POST /interactions/{}/{}/callback",
            major: "i".into(),
            global: false,
        };
        assert_eq!(
            budget.reserve(&callback, t0 + ms(100)),
            Ok(()),
            "interaction callbacks are not counted globally"
        );
        assert_eq!(budget.reserve(&messages("x"), t0 + ms(1000)), Ok(()));
    }
}
