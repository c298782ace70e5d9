//! The send budget: a token bucket per Slack conversation, so a burst of reply chunks is spread
//! out to about one message per second per channel (Slack's `chat.postMessage` limit) instead of
//! being rejected with 429s.
//!
//! The bucket is a pure value: every call takes the current time, so tests drive it with made-up
//! instants and the adapter with the tokio clock.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// How fast a conversation may be written to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rate {
    /// Messages per second, sustained.
    pub per_second: f64,
    /// Messages that may go out at once after a quiet spell.
    pub burst: u32,
}

impl Rate {
    /// Slack's documented `chat.postMessage` pace: about one per second per channel, short bursts
    /// allowed.
    pub(crate) const SLACK: Rate = Rate {
        per_second: 1.0,
        burst: 3,
    };
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens at `at`; negative when sends are booked ahead.
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by conversation.
#[derive(Debug)]
pub(crate) struct Pacer {
    rate: Rate,
    buckets: HashMap<String, Bucket>,
}

impl Pacer {
    pub(crate) fn new(rate: Rate) -> Pacer {
        let per_second = if rate.per_second > 0.0 {
            rate.per_second
        } else {
            1.0
        };
        Pacer {
            rate: Rate {
                per_second,
                burst: rate.burst.max(1),
            },
            buckets: HashMap::new(),
        }
    }

    /// Books one send to `key` at `now` and returns how long to wait before making it. Concurrent
    /// callers get successive slots, so waiting the returned time keeps the pace.
    pub(crate) fn reserve(&mut self, key: &str, now: Instant) -> Duration {
        self.forget_idle(now);
        let burst = f64::from(self.rate.burst);
        let bucket = self.buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let tokens = refill(bucket, now, self.rate.per_second, burst);
        bucket.tokens = tokens - 1.0;
        bucket.at = now;
        if tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - tokens) / self.rate.per_second)
        }
    }

    /// Slack said to wait (429 `Retry-After`): nothing more goes to `key` before `until`.
    pub(crate) fn hold(&mut self, key: &str, now: Instant, until: Instant) {
        let burst = f64::from(self.rate.burst);
        let bucket = self.buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let tokens = refill(bucket, now, self.rate.per_second, burst);
        // The next send may go at `until`: that is one token short there.
        let wait = until.saturating_duration_since(now).as_secs_f64();
        bucket.tokens = tokens.min(1.0 - wait * self.rate.per_second).min(0.0);
        bucket.at = now;
    }

    /// How many conversations have a bucket (full, idle buckets are dropped).
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.buckets.len()
    }

    /// Drops buckets that have filled up again: they would be created the same way.
    fn forget_idle(&mut self, now: Instant) {
        let (per_second, burst) = (self.rate.per_second, f64::from(self.rate.burst));
        self.buckets
            .retain(|_, b| refill(b, now, per_second, burst) < burst);
    }
}

fn refill(bucket: &Bucket, now: Instant, per_second: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed * per_second).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bursts_then_paces() {
        let start = Instant::now();
        let rate = Rate {
            per_second: 1.0,
            burst: 3,
        };
        // (key, at ms since start, expected wait ms)
        let cases: &[(&str, u64, u64)] = &[
            ("C1", 0, 0),
            ("C1", 0, 0),
            ("C1", 0, 0),
            ("C1", 0, 1000),
            ("C1", 0, 2000),
            ("C2", 0, 0),
            ("C1", 1500, 1500),
            ("C1", 10_000, 0),
            ("C1", 10_000, 0),
        ];
        let mut pacer = Pacer::new(rate);
        for (i, &(key, at, want)) in cases.iter().enumerate() {
            let wait = pacer.reserve(key, start + ms(at));
            assert_eq!(
                wait.as_millis(),
                u128::from(want),
                "step {i}: {key} at {at} ms"
            );
        }
    }

    #[test]
    fn other_rates() {
        let start = Instant::now();
        let cases: &[(Rate, &[u64])] = &[
            (
                Rate {
                    per_second: 2.0,
                    burst: 1,
                },
                &[0, 500, 1000, 1500],
            ),
            (
                Rate {
                    per_second: 1.0,
                    burst: 0,
                },
                &[0, 1000, 2000],
            ),
            (
                Rate {
                    per_second: 0.0,
                    burst: 1,
                },
                &[0, 1000],
            ),
        ];
        for (rate, waits) in cases {
            let mut pacer = Pacer::new(*rate);
            let got: Vec<u64> = waits
                .iter()
                .map(|_| pacer.reserve("C", start).as_millis() as u64)
                .collect();
            assert_eq!(&got, waits, "{rate:?}");
        }
    }

    #[test]
    fn retry_after_holds_the_conversation() {
        let start = Instant::now();
        let mut pacer = Pacer::new(Rate::SLACK);
        assert_eq!(pacer.reserve("C1", start), Duration::ZERO);
        pacer.hold("C1", start, start + ms(5000));
        assert_eq!(
            pacer.reserve("C1", start + ms(1000)).as_millis(),
            4000,
            "nothing before the Retry-After"
        );
        assert_eq!(
            pacer.reserve("C2", start + ms(1000)),
            Duration::ZERO,
            "other conversations are not held"
        );
        assert_eq!(
            pacer.reserve("C1", start + ms(5000)).as_millis(),
            1000,
            "then the normal pace"
        );
    }

    #[test]
    fn idle_conversations_are_forgotten() {
        let start = Instant::now();
        let mut pacer = Pacer::new(Rate::SLACK);
        for i in 0..100 {
            pacer.reserve(&format!("C{i}"), start);
        }
        assert_eq!(pacer.tracked(), 100);
        pacer.reserve("C0", start + ms(5000));
        assert_eq!(
            pacer.tracked(),
            1,
            "only the conversation just written to is kept"
        );
    }
}
