//! Retry delays: exponential, capped, with jitter so that many clients do not retry in step.

use std::time::Duration;

/// The delay before retry number `attempt` (0 for the first retry): `base · 2^attempt`, capped at
/// `cap`, then scaled by a random factor in `[0.5, 1.0]` (so the delay never exceeds the cap).
pub fn delay(attempt: u32, base: Duration, cap: Duration) -> Duration {
    delay_with(attempt, base, cap, rand::random::<f64>())
}

/// [`delay`] with the random factor given, for tests.
pub fn delay_with(attempt: u32, base: Duration, cap: Duration, random: f64) -> Duration {
    let exp = base.as_secs_f64() * 2f64.powi(attempt.min(30) as i32);
    let capped = exp.min(cap.as_secs_f64());
    Duration::from_secs_f64(capped * (0.5 + 0.5 * random.clamp(0.0, 1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_stay_under_the_cap() {
        let base = Duration::from_millis(500);
        let cap = Duration::from_secs(60);
        let cases = [
            (0, 1.0, 500),
            (1, 1.0, 1000),
            (3, 1.0, 4000),
            (10, 1.0, 60_000),
            (30, 1.0, 60_000),
            (2, 0.0, 1000),
        ];
        for (attempt, random, want_ms) in cases {
            assert_eq!(
                delay_with(attempt, base, cap, random).as_millis(),
                want_ms,
                "attempt {attempt}"
            );
        }
        for attempt in 0..100 {
            assert!(delay(attempt, base, cap) <= cap);
        }
    }
}
