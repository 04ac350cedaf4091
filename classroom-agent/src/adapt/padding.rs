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
//!
//! For a while after a queue the share is lower, unless the estimate has since grown well past
//! the estimates that made that queue: a queue on the bench's 1 Mbit/s period 2.5 s before the
//! link came back held padding to 75 % of a 3.5 Mbit/s estimate for 8 s after the return, and
//! the wire stayed at 2.6 Mbit/s (BENCHMARKS.md, 2026-12-02).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The share while the link shows no queue and has not for `QUIET`.
pub const SHARE: f64 = 1.0;
/// For `QUIET` after the round trip last showed a queue, padding fills only this share: the link
/// has just shown where its limit is, and padding up to 90 % of an estimate that creeps back over
/// it pushed the 1 Mbit/s link into a saw-tooth of queues. (The estimate still grows: the
/// controller allows up to 1.5 times what gets through.)
pub const SHARE_AFTER_QUEUE: f64 = 0.75;
pub const QUIET: Duration = Duration::from_secs(10);
/// A queue is laid to the highest newest estimate over this long up to it: what was being sent
/// into the link when it filled (the controller cuts its estimate as the queue shows).
pub const PEAK_WINDOW: Duration = Duration::from_secs(5);
/// An estimate this many times that peak is a link that changed since the queue, not one
/// creeping back over its limit (the controller's own creep is bounded by 1.5 times what gets
/// through), and gets all of it.
pub const GROWN: f64 = 2.0;

/// What padding remembers of the link's queues.
#[derive(Debug, Clone, Default)]
pub struct QueueMemory {
    /// Newest estimates over the last `PEAK_WINDOW`.
    recent: VecDeque<(Instant, u64)>,
    /// When the round trip last showed a queue, and the peak estimate up to it.
    last: Option<(Instant, u64)>,
}

impl QueueMemory {
    /// One reading: the controller's newest estimate, and whether the round trip shows a queue.
    pub fn on_reading(&mut self, latest: Option<u64>, queueing: bool, now: Instant) {
        if let Some(e) = latest {
            self.recent.push_back((now, e));
        }
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > PEAK_WINDOW)
        {
            self.recent.pop_front();
        }
        if queueing {
            let peak = self.recent.iter().map(|(_, e)| *e).max().unwrap_or(0);
            self.last = Some((now, peak));
        }
    }

    /// The share now. `queueing`: the round trip shows a queue now; `latest`: the controller's
    /// newest estimate.
    pub fn share(&self, queueing: bool, latest: Option<u64>, now: Instant) -> f64 {
        if queueing {
            return 0.0;
        }
        let recent = self
            .last
            .filter(|(t, _)| now.saturating_duration_since(*t) < QUIET);
        match recent {
            Some((_, peak)) if !latest.is_some_and(|e| e as f64 >= peak as f64 * GROWN) => {
                SHARE_AFTER_QUEUE
            }
            _ => SHARE,
        }
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
        let mut m = QueueMemory::default();
        // A quiet link: all of the estimate.
        m.on_reading(Some(1_000_000), false, s(1));
        assert_eq!(m.share(false, Some(1_000_000), s(1)), SHARE);
        // Nothing while a queue stands.
        m.on_reading(Some(1_100_000), true, s(25));
        assert_eq!(m.share(true, Some(1_100_000), s(25)), 0.0);
        // A queue 5 s ago: 75 % for 10 s, then all of it again.
        m.on_reading(Some(900_000), false, s(30));
        assert_eq!(m.share(false, Some(900_000), s(30)), SHARE_AFTER_QUEUE);
        assert_eq!(m.share(false, Some(900_000), s(36)), SHARE);
    }

    #[test]
    fn an_estimate_grown_well_past_the_one_that_made_the_queue_gets_all_of_it() {
        let t0 = Instant::now();
        let ms = |ms: u64| t0 + Duration::from_millis(ms);
        let mut m = QueueMemory::default();
        // The 1 Mbit/s link: the estimate creeps to 1.1 Mbit/s, then a queue and a cut.
        for (i, e) in [900_000, 1_000_000, 1_100_000, 1_050_000]
            .into_iter()
            .enumerate()
        {
            m.on_reading(Some(e), false, ms(250 * i as u64));
        }
        m.on_reading(Some(700_000), true, ms(1_000));
        // Creeping back over the limit, even to 1.5 times the cut: still held to the share
        // (the queue is laid to the 1.1 Mbit/s that made it, not to the cut).
        m.on_reading(Some(1_600_000), false, ms(3_000));
        assert_eq!(
            m.share(false, Some(1_600_000), ms(3_000)),
            SHARE_AFTER_QUEUE
        );
        // The link came back and a probe found 3.5 Mbit/s: all of it, at once.
        m.on_reading(Some(3_500_000), false, ms(4_000));
        assert_eq!(m.share(false, Some(3_500_000), ms(4_000)), SHARE);
        // Just under twice the peak is not enough.
        assert_eq!(
            m.share(false, Some(2_199_000), ms(4_000)),
            SHARE_AFTER_QUEUE
        );
        // A new queue is laid to the estimates of the window up to it, the 3.5 Mbit/s included.
        m.on_reading(Some(3_000_000), true, ms(5_000));
        assert_eq!(
            m.share(false, Some(5_000_000), ms(5_500)),
            SHARE_AFTER_QUEUE
        );
        // Estimates older than the window are forgotten: a queue long after counts only the
        // newer ones.
        m.on_reading(Some(800_000), false, ms(12_000));
        m.on_reading(Some(800_000), true, ms(12_250));
        assert_eq!(m.share(false, Some(1_700_000), ms(13_000)), SHARE);
    }
}
