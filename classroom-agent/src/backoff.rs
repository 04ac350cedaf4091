//! Reconnect pacing: exponential backoff with jitter, capped low enough that the agent is
//! back within seconds of the SFU returning.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    /// `seed` varies the jitter between agents so a restarted SFU is not hit by all of them
    /// at the same instant.
    pub fn new(base: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            base,
            max,
            attempt: 0,
            rng: seed | 1,
        }
    }

    /// Delay before the next attempt: base·2ⁿ capped at max, then scaled into [50 %, 100 %].
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(16));
        let full = exp.min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64: cheap, deterministic for a given seed.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let frac = 0.5 + (self.rng % 1000) as f64 / 2000.0;
        full.mul_f64(frac)
    }

    /// Called once a session has worked: the next failure starts from the base again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_and_resets() {
        let base = Duration::from_millis(200);
        let max = Duration::from_secs(2);
        let mut b = Backoff::new(base, max, 42);
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        for (i, d) in delays.iter().enumerate() {
            let full = base.saturating_mul(1 << i).min(max);
            assert!(
                *d >= full / 2 && *d <= full,
                "attempt {i}: {d:?} vs {full:?}"
            );
        }
        assert!(delays[7] >= max / 2);
        assert_eq!(b.attempts(), 8);
        b.reset();
        assert!(b.next_delay() <= base);
    }

    #[test]
    fn seeds_spread_the_jitter() {
        let d =
            |seed| Backoff::new(Duration::from_secs(1), Duration::from_secs(1), seed).next_delay();
        assert_ne!(d(1), d(2));
    }
}
