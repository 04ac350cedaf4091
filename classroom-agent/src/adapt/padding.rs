//! How much of the congestion controller's estimate padding may fill. Padding keeps the link
//! filled toward the ladder's top step, so that the estimate proves the steps before video
//! takes them. Pure; time from the caller.
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

/// The minimum rate for the controller (it pads up to that, never over its own estimate):
/// the ladder's `wanted`, held to `share` of the controller's newest estimate (`latest`). The
/// caller gives it again whenever that moves it by 5 %, since a capped minimum given once lags a
/// climbing estimate. With all of it allowed, `wanted` as it is: the controller's own cap follows its
/// estimate between readings. (Tried: the lower of the newest and the averaged estimate after
/// a queue. The average lags a returned link by seconds, and single round-trip spikes from
/// keyframes count as queues: 85 % of a returned 4 Mbit/s link came in 1 of 4 runs within
/// 10 s, against 4 of 4 with the newest.)
pub fn minimum(wanted: u64, share: f64, latest: Option<u64>) -> u64 {
    if share >= SHARE {
        return wanted;
    }
    // Held to a share of nothing known (no fresh reading after a queue): no padding.
    latest.map_or(0, |e| wanted.min((e as f64 * share.max(0.0)) as u64))
}

/// Whether a new minimum differs enough from the one given to tell the controller again.
pub fn changed(given: u64, now: u64) -> bool {
    let (lo, hi) = (given.min(now), given.max(now));
    (lo == 0) != (hi == 0) || hi as f64 > lo as f64 * 1.05
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimum_follows_the_newest_estimate_only_when_held_to_a_share() {
        // A quiet link: what the ladder wants; the controller caps it at its own estimate.
        assert_eq!(minimum(3_730_000, SHARE, Some(1_000_000)), 3_730_000);
        // After a queue: 75 % of the newest estimate, at most what the ladder wants.
        let after = SHARE_AFTER_QUEUE;
        assert_eq!(minimum(3_730_000, after, Some(2_000_000)), 1_500_000);
        assert_eq!(minimum(1_000_000, after, Some(2_000_000)), 1_000_000);
        assert_eq!(minimum(3_730_000, after, None), 0);
        // In a queue: none.
        assert_eq!(minimum(3_730_000, 0.0, Some(2_000_000)), 0);
    }

    #[test]
    fn small_changes_of_the_minimum_are_not_sent_again() {
        assert!(!changed(1_000_000, 1_040_000));
        assert!(!changed(1_040_000, 1_000_000));
        assert!(changed(1_000_000, 1_100_000));
        assert!(changed(1_100_000, 1_000_000));
        assert!(changed(0, 1));
        assert!(changed(500_000, 0));
        assert!(!changed(0, 0));
    }

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
