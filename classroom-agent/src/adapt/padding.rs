//! How much of the congestion controller's estimate padding may fill. Padding keeps the link
//! filled toward the ladder's next step, so that the estimate proves the step before video
//! takes it. Pure; time from the caller.
//!
//! The share is all of the estimate while the link shows no queue. The controller's estimate
//! sits under a link's capacity (3.0-3.5 Mbit/s on a returned 4 Mbit/s link), so at 90 % of it
//! the wire stayed near 3 Mbit/s: on the 4 -> 1 -> 4 Mbit/s bench the 2 s wire rate reached
//! 85 % of the returned link within 10 s in 2 of 12 runs at 90 %, and 8 of 16 at all of it, with
//! the low period's queueing delay p95 at most 95 ms either way (BENCHMARKS.md, 2026-12-01).
//! Tried and not kept: all of it only from a probe that found room until the next queue (5 of
//! 10 runs, but that p95 over 100 ms in 3).

use std::time::{Duration, Instant};

/// The share while the link shows no queue and has not for `QUIET`.
pub const SHARE: f64 = 1.0;
/// For `QUIET` after the round trip last showed a queue, padding fills only this share: the link
/// has just shown where its limit is, and padding up to 90 % of an estimate that creeps back over
/// it pushed the 1 Mbit/s link into a saw-tooth of queues. (The estimate still grows: the
/// controller allows up to 1.5 times what gets through.)
pub const SHARE_AFTER_QUEUE: f64 = 0.75;
pub const QUIET: Duration = Duration::from_secs(10);

/// The share now. `queueing`: the round trip shows a queue now; `last_queue`: when it last did.
pub fn share(queueing: bool, last_queue: Option<Instant>, now: Instant) -> f64 {
    if queueing {
        return 0.0;
    }
    if last_queue.is_some_and(|t| now.saturating_duration_since(t) < QUIET) {
        SHARE_AFTER_QUEUE
    } else {
        SHARE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_stops_in_a_queue_and_fills_less_for_a_while_after_one() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        // Nothing while a queue stands.
        assert_eq!(share(true, Some(s(1)), s(3)), 0.0);
        assert_eq!(share(true, None, s(3)), 0.0);
        // A quiet link: all of the estimate.
        assert_eq!(share(false, None, s(30)), SHARE);
        // A queue 5 s ago: 75 % for 10 s, then all of it again.
        assert_eq!(share(false, Some(s(25)), s(30)), SHARE_AFTER_QUEUE);
        assert_eq!(share(false, Some(s(25)), s(36)), SHARE);
    }
}
