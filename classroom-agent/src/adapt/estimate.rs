//! Which estimate the ladder follows. str0m's estimate event is an average over a few seconds:
//! after the school's link falls, the agent keeps sending the old rate into it for 2-3 s and
//! fills the router's queue. The controller's latest estimate (from the stats) knows sooner but
//! also dips on a steady link. So the latest counts when it is lower *and* the round trip shows
//! a queue building (the link really fell), or higher once it has held for a second (a probe
//! found room: the average follows seconds later); otherwise the average. While a queue
//! stands, the ladder gets only part of the estimate, so that the queue drains. Pure; time
//! from the caller.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A latest estimate or round trip older than this is not used.
pub const FRESH: Duration = Duration::from_secs(2);
/// The round trip's floor is the least seen over this long.
pub const BASELINE_WINDOW: Duration = Duration::from_secs(30);
/// A round trip this far above its floor means a queue is building on the link.
pub const QUEUE_SIGNAL: Duration = Duration::from_millis(100);
/// While a queue stands, the ladder gets less than the estimate, so that the queue drains:
/// a share `1 - queue / DRAIN` of it, and at least `DRAIN_FLOOR`. The controller's estimate
/// is what the link carries; sending all of it keeps a full queue full (the round trip stayed
/// at a second for five seconds after a 4 -> 1 Mbit/s fall).
pub const DRAIN: Duration = Duration::from_millis(1500);
pub const DRAIN_FLOOR: f64 = 0.5;
/// A latest estimate above the average counts once it has held this long: str0m's average
/// took 3 s to follow a probe that had found a returned link (then the ladder's own dwell).
pub const RISE_HELD: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Default)]
pub struct EstimateFilter {
    average: Option<u64>,
    /// Recent latest estimates, the newest last: for a rise that has held.
    latests: VecDeque<(Instant, u64)>,
    rtt: Option<(Duration, Instant)>,
    /// Recent round trips, for the floor.
    rtts: VecDeque<(Instant, Duration)>,
}

impl EstimateFilter {
    /// str0m's estimate event.
    pub fn on_average(&mut self, bps: u64) {
        self.average = Some(bps);
    }

    /// The connection's stats: the controller's latest estimate and the round trip.
    pub fn on_stats(&mut self, latest_bps: Option<u64>, rtt: Option<Duration>, now: Instant) {
        if let Some(b) = latest_bps {
            self.latests.push_back((now, b));
            // Keep one reading from before the window: it shows the window is covered.
            while self
                .latests
                .get(1)
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= RISE_HELD)
            {
                self.latests.pop_front();
            }
        }
        if let Some(r) = rtt {
            self.rtt = Some((r, now));
            self.rtts.push_back((now, r));
            while self
                .rtts
                .front()
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) > BASELINE_WINDOW)
            {
                self.rtts.pop_front();
            }
        }
    }

    /// The round trip's floor over the window.
    pub fn rtt_floor(&self) -> Option<Duration> {
        self.rtts.iter().map(|(_, r)| *r).min()
    }

    /// How far the latest round trip is above its floor, when that shows a queue.
    pub fn queue_delay(&self, now: Instant) -> Option<Duration> {
        let (Some((rtt, at)), Some(floor)) = (self.rtt, self.rtt_floor()) else {
            return None;
        };
        let q = rtt.saturating_sub(floor);
        (fresh(at, now) && q >= QUEUE_SIGNAL).then_some(q)
    }

    /// The controller's newest estimate, while fresh. Padding is measured against it: the
    /// controller itself pads no further, and the averaged estimate lags a rise by seconds.
    pub fn latest(&self, now: Instant) -> Option<u64> {
        self.latests
            .back()
            .filter(|(at, _)| fresh(*at, now))
            .map(|(_, b)| *b)
    }

    /// Whether the latest round trip shows a queue building.
    pub fn queueing(&self, now: Instant) -> bool {
        self.queue_delay(now).is_some()
    }

    /// The least latest estimate over the last `RISE_HELD`, when readings cover it.
    fn held(&self, now: Instant) -> Option<u64> {
        let (first, _) = self.latests.front()?;
        let (last, _) = self.latests.back()?;
        let covered = now.saturating_duration_since(*first) >= RISE_HELD && fresh(*last, now);
        covered
            .then(|| self.latests.iter().map(|(_, b)| *b).min())
            .flatten()
    }

    /// What the ladder follows now (`None` before the first estimate).
    pub fn for_ladder(&self, now: Instant) -> Option<u64> {
        let avg = self.average?;
        let Some(queue) = self.queue_delay(now) else {
            return Some(self.held(now).map_or(avg, |h| h.max(avg)));
        };
        let e = self.latest(now).map_or(avg, |l| l.min(avg));
        let share = (1.0 - queue.as_secs_f64() / DRAIN.as_secs_f64()).max(DRAIN_FLOOR);
        Some((e as f64 * share) as u64)
    }
}

/// Whether a reading taken at `at` may still be used.
fn fresh(at: Instant, now: Instant) -> bool {
    now.saturating_duration_since(at) <= FRESH
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_lower_latest_counts_only_with_a_queue_building() {
        let t0 = Instant::now();
        let mut f = EstimateFilter::default();
        assert_eq!(f.for_ladder(t0), None);
        f.on_average(4_000_000);
        // A steady link: 50 ms round trips, and a latest estimate that dips.
        for i in 0..10 {
            f.on_stats(Some(4_100_000), Some(50 * MS), t0 + 500 * MS * i);
        }
        let t1 = t0 + 5_000 * MS;
        f.on_stats(Some(900_000), Some(55 * MS), t1);
        assert_eq!(
            f.for_ladder(t1),
            Some(4_000_000),
            "a dip alone is not a drop"
        );
        // The link fell: the queue builds, the round trip grows, the latest estimate knows.
        // A 150 ms queue leaves 90 % of it for the ladder.
        let t2 = t1 + 500 * MS;
        f.on_stats(Some(1_100_000), Some(200 * MS), t2);
        assert!(f.queueing(t2));
        assert_eq!(f.queue_delay(t2), Some(150 * MS));
        assert_eq!(f.for_ladder(t2), Some(990_000));
        // A full second's queue leaves half, to drain it.
        f.on_stats(Some(1_100_000), Some(1_050 * MS), t2 + 250 * MS);
        assert_eq!(f.for_ladder(t2 + 250 * MS), Some(550_000));
        // A higher latest does not count while a queue stands: the average (less the drain
        // share).
        f.on_stats(Some(5_000_000), Some(200 * MS), t2 + 500 * MS);
        assert_eq!(f.for_ladder(t2 + 500 * MS), Some(3_600_000));
        // Stale readings are not used.
        f.on_stats(Some(1_000_000), Some(400 * MS), t2 + 1_000 * MS);
        assert_eq!(f.for_ladder(t2 + 1_000 * MS + FRESH + MS), Some(4_000_000));
    }

    #[test]
    fn a_higher_latest_counts_once_it_has_held() {
        let t0 = Instant::now();
        let mut f = EstimateFilter::default();
        f.on_average(1_000_000);
        for i in 0..8 {
            f.on_stats(Some(1_000_000), Some(50 * MS), t0 + 250 * MS * i);
        }
        // A probe found the link back at 3.5 Mbit/s; the average lags behind.
        let t1 = t0 + 2_000 * MS;
        f.on_stats(Some(3_500_000), Some(50 * MS), t1);
        assert_eq!(f.for_ladder(t1), Some(1_000_000), "not held yet");
        f.on_stats(Some(3_400_000), Some(50 * MS), t1 + 500 * MS);
        assert_eq!(f.for_ladder(t1 + 500 * MS), Some(1_000_000));
        f.on_stats(Some(3_600_000), Some(50 * MS), t1 + 1_000 * MS);
        assert_eq!(
            f.for_ladder(t1 + 1_000 * MS),
            Some(3_400_000),
            "the least of the second"
        );
        // A dip ends it: the least of the last second is the dip, and the average is higher.
        f.on_stats(Some(900_000), Some(55 * MS), t1 + 1_250 * MS);
        assert_eq!(f.for_ladder(t1 + 1_250 * MS), Some(1_000_000));
    }

    #[test]
    fn the_round_trip_floor_follows_a_moved_path() {
        let t0 = Instant::now();
        let mut f = EstimateFilter::default();
        f.on_stats(None, Some(40 * MS), t0);
        // The path moved to a satellite hop: 600 ms from now on.
        let mut t = t0;
        for _ in 0..70 {
            t += 500 * MS;
            f.on_stats(None, Some(600 * MS), t);
        }
        assert_eq!(f.rtt_floor(), Some(600 * MS), "the old floor aged out");
        assert!(!f.queueing(t), "a long path is not a queue");
    }
}
