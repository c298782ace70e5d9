//! The send budget: Telegram's flood limits as token buckets, so a burst of replies is paced
//! instead of answered with 429s (contract 1.4, "Rate limits").
//!
//! Three limits apply to each message: about one per second per chat (with a short burst), twenty
//! per minute per group, and about thirty per second overall. Each is a token bucket written in
//! its "virtual scheduling" form (GCRA): a bucket keeps the time at which it would be full again,
//! and a message may go when every bucket it draws from has a token. A reservation books the slot
//! at once, so concurrent senders queue up behind each other instead of all waking together.
//!
//! Time is passed in, so the arithmetic is tested without a clock.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// One bucket's shape: a token every `interval`, at most `burst` saved up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub interval: Duration,
    pub burst: u32,
}

impl Rate {
    /// How far ahead of real time the bucket may run: the burst beyond the first token.
    fn tolerance(self) -> Duration {
        self.interval * self.burst.saturating_sub(1)
    }
}

/// The limits a bot must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_chat: Rate,
    pub per_group: Rate,
    pub overall: Rate,
}

impl Limits {
    /// Telegram's published limits: ~1 message/s per chat with short bursts, 20/min per group
    /// (a burst of 5, then one every 3 s), ~30/s in total.
    pub const TELEGRAM: Limits = Limits {
        per_chat: Rate {
            interval: Duration::from_secs(1),
            burst: 4,
        },
        per_group: Rate {
            interval: Duration::from_secs(3),
            burst: 5,
        },
        overall: Rate {
            interval: Duration::from_nanos(1_000_000_000 / 30),
            burst: 30,
        },
    };
}

/// The state of every bucket: the time at which each would be full again ("theoretical arrival
/// time"). A bucket not in the map is full.
#[derive(Debug)]
pub struct Budget {
    limits: Limits,
    overall: Option<Instant>,
    chats: HashMap<String, Instant>,
    groups: HashMap<String, Instant>,
}

/// Above this many remembered chats, full buckets are forgotten.
const PRUNE_ABOVE: usize = 1024;

impl Budget {
    pub fn new(limits: Limits) -> Self {
        Budget {
            limits,
            overall: None,
            chats: HashMap::new(),
            groups: HashMap::new(),
        }
    }

    /// Books the next slot for a message to `chat` and returns how long to wait before sending it.
    /// Group chats (negative ids, `@channel` names) also draw from the per-group bucket.
    pub fn reserve(&mut self, chat: &str, now: Instant) -> Duration {
        if self.chats.len() > PRUNE_ABOVE {
            self.chats.retain(|_, full_at| *full_at > now);
            self.groups.retain(|_, full_at| *full_at > now);
        }
        let group = is_group(chat);
        let l = self.limits;
        let overall = earliest(self.overall, l.overall, now);
        let per_chat = earliest(self.chats.get(chat).copied(), l.per_chat, now);
        let per_group = if group {
            earliest(self.groups.get(chat).copied(), l.per_group, now)
        } else {
            now
        };
        let send_at = overall.max(per_chat).max(per_group);
        // Each bucket gives its token at the earliest time it has one, not when the message
        // finally goes: a chat that must wait (a hold after a 429, a long queue) then does not
        // hold up every other chat through the shared buckets.
        self.overall = Some(book(self.overall, l.overall, overall));
        let chat_full = book(self.chats.get(chat).copied(), l.per_chat, per_chat);
        self.chats.insert(chat.to_string(), chat_full);
        if group {
            let group_full = book(self.groups.get(chat).copied(), l.per_group, per_group);
            self.groups.insert(chat.to_string(), group_full);
        }
        send_at - now
    }

    /// After a 429 for `chat`: nothing more goes there before `until`.
    pub fn hold(&mut self, chat: &str, until: Instant) {
        let full_at = until + self.limits.per_chat.tolerance();
        let entry = self.chats.entry(chat.to_string()).or_insert(full_at);
        *entry = (*entry).max(full_at);
    }
}

/// When a bucket next has a token.
fn earliest(full_at: Option<Instant>, rate: Rate, now: Instant) -> Instant {
    match full_at {
        Some(full_at) => now.max(full_at.checked_sub(rate.tolerance()).unwrap_or(now)),
        None => now,
    }
}

/// The bucket's new "full again" time after a message at `at`.
fn book(full_at: Option<Instant>, rate: Rate, at: Instant) -> Instant {
    full_at.unwrap_or(at).max(at) + rate.interval
}

/// Users have positive ids; groups, supergroups and channels negative ones (or an `@name`).
fn is_group(chat: &str) -> bool {
    chat.starts_with('-') || chat.starts_with('@')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// `(ms after the start, chat)` of each message.
    type Sends = Vec<(u64, &'static str)>;

    /// Sends at the given offsets (ms) to the given chats; returns each one's wait (ms).
    fn run(limits: Limits, sends: &[(u64, &str)]) -> Vec<u64> {
        let start = Instant::now();
        let mut budget = Budget::new(limits);
        sends
            .iter()
            .map(|(at, chat)| budget.reserve(chat, start + ms(*at)).as_millis() as u64)
            .collect()
    }

    #[test]
    fn a_burst_to_one_chat_is_paced_after_the_allowance() {
        let cases: Vec<(&str, Sends, Vec<u64>)> = vec![
            ("a single message goes at once", vec![(0, "1")], vec![0]),
            (
                "four go at once, then one a second",
                vec![(0, "1"), (0, "1"), (0, "1"), (0, "1"), (0, "1"), (0, "1")],
                vec![0, 0, 0, 0, 1000, 2000],
            ),
            (
                "waiting refills the bucket",
                vec![
                    (0, "1"),
                    (0, "1"),
                    (0, "1"),
                    (0, "1"),
                    (4000, "1"),
                    (4000, "1"),
                ],
                vec![0, 0, 0, 0, 0, 0],
            ),
            (
                "chats do not share their allowance",
                vec![(0, "1"), (0, "1"), (0, "1"), (0, "1"), (0, "2")],
                vec![0, 0, 0, 0, 0],
            ),
            (
                "a message booked later than the last one keeps the pace",
                vec![(0, "1"), (0, "1"), (0, "1"), (0, "1"), (0, "1"), (500, "1")],
                vec![0, 0, 0, 0, 1000, 1500],
            ),
        ];
        for (what, sends, waits) in cases {
            assert_eq!(run(Limits::TELEGRAM, &sends), waits, "{what}");
        }
    }

    #[test]
    fn a_group_gets_about_twenty_a_minute() {
        let burst = |chat: &'static str| -> Vec<(u64, &'static str)> {
            (0..8).map(|_| (0, chat)).collect()
        };
        let cases = [
            (
                "a private chat: four at once, then one a second",
                burst("1111"),
                vec![0, 0, 0, 0, 1000, 2000, 3000, 4000],
            ),
            (
                "a group: the same start, then one every three seconds",
                burst("-100123"),
                vec![0, 0, 0, 0, 1000, 3000, 6000, 9000],
            ),
        ];
        for (what, sends, waits) in cases {
            assert_eq!(run(Limits::TELEGRAM, &sends), waits, "{what}");
        }
        // A steady message a second to a group: once the allowance is spent, one every 3 s.
        let steady: Vec<(u64, &str)> = (0..10).map(|i| (i * 1000, "-100123")).collect();
        assert_eq!(
            run(Limits::TELEGRAM, &steady),
            vec![0, 0, 0, 0, 0, 0, 0, 2000, 4000, 6000]
        );
    }

    #[test]
    fn the_overall_limit_spreads_a_broadcast() {
        let chats: Vec<String> = (0..40).map(|i| i.to_string()).collect();
        let sends: Vec<(u64, &str)> = chats.iter().map(|c| (0, c.as_str())).collect();
        let waits = run(Limits::TELEGRAM, &sends);
        assert!(
            waits[..30].iter().all(|w| *w == 0),
            "thirty go at once: {waits:?}"
        );
        assert!(
            waits[30] > 0 && waits[39] <= 400,
            "the rest follow at ~30/s: {waits:?}"
        );
    }

    #[test]
    fn a_hold_after_429_delays_the_chat_only() {
        let start = Instant::now();
        let mut budget = Budget::new(Limits::TELEGRAM);
        budget.hold("1", start + ms(5000));
        assert_eq!(budget.reserve("1", start), ms(5000));
        assert_eq!(
            budget.reserve("2", start),
            ms(0),
            "other chats are not held up"
        );
        assert_eq!(
            budget.reserve("1", start + ms(6000)),
            ms(0),
            "after the hold the allowance is back"
        );
    }

    #[test]
    fn a_long_queue_for_one_chat_does_not_hold_up_the_others() {
        let mut sends: Vec<(u64, &str)> = (0..12).map(|_| (0, "1111")).collect();
        sends.push((0, "2222"));
        let waits = run(Limits::TELEGRAM, &sends);
        assert_eq!(
            waits[11], 8000,
            "the twelfth message to one chat goes 8 s later: {waits:?}"
        );
        assert_eq!(
            waits[12], 0,
            "another chat's message goes at once: {waits:?}"
        );
    }

    #[test]
    fn full_buckets_are_forgotten_when_many_chats_were_seen() {
        let start = Instant::now();
        let mut budget = Budget::new(Limits::TELEGRAM);
        for i in 0..=PRUNE_ABOVE {
            budget.reserve(&i.to_string(), start);
        }
        budget.reserve("x", start + Duration::from_secs(60));
        assert!(
            budget.chats.len() <= 2,
            "only the fresh bucket remains: {}",
            budget.chats.len()
        );
    }
}
