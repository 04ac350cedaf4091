//! Which estimate the ladder follows. str0m's estimate event is an average over a few seconds:
//! after the school's link falls, the agent keeps sending the old rate into it for 2-3 s and
//! fills the router's queue. The controller's latest estimate (from the stats) knows sooner but
//! also dips on a steady link. So the latest counts when it is lower *and* the round trip shows
//! a queue building (the link really fell), or higher once it has held for a second (a probe
//! found room: the average follows seconds later); otherwise the average. While a queue
//! stands, the ladder gets only part of the estimate, so that the queue drains. Pure; time
//! from the caller.
//!
//! A queue that grows also tells what the link carries, sooner than the controller does. A round
//! trip measured at report time `t` is the queue met by a packet sent at `t - q`, so a queue
//! growing by `g` seconds per second of reports was met by packets sent at `S` into a link of
//! `C = S (1 - g)`. After a 4 -> 1 Mbit/s fall, str0m's newest estimate took 1-1.5 s to come
//! down to the link (its pacer sends 1.1 times it, and drains what the encoders made at the old
//! step at that pace), while the round trip grew at 0.75 s/s from the first quarter second:
//! 4.2 Mbit/s sent, so about 1 Mbit/s.

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
/// A queue growing slower than this (seconds per second) is not read for the link's capacity:
/// the round trip's own noise (CPU scheduling on a busy PC) is of that order.
pub const GROWTH_READ: f64 = 0.3;
/// What the agent sent is taken as the highest rate between readings over this long: the
/// packets whose queue the newest round trip shows were sent a queue's length ago, before any
/// cut (and a keyframe's burst is sent faster than the second's average).
pub const SENT_WINDOW: Duration = Duration::from_millis(1000);
/// A capacity read from a growing queue is used for this long.
pub const CAPACITY_FRESH: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone, Default)]
pub struct EstimateFilter {
    average: Option<u64>,
    /// Recent latest estimates, the newest last: for a rise that has held.
    latests: VecDeque<(Instant, u64)>,
    rtt: Option<(Duration, Instant)>,
    /// Recent round trips, for the floor.
    rtts: VecDeque<(Instant, Duration)>,
    /// All bytes the agent has sent, at each reading over the last `SENT_WINDOW`.
    sent: VecDeque<(Instant, u64)>,
    /// The link's capacity as the last growing queue showed it, and when.
    capacity: Option<(u64, Instant)>,
    /// The last round trip that differed from the one before, and when it came: the growth is
    /// measured from it (str0m repeats a round trip until the next report).
    growth_base: Option<(Duration, Instant)>,
}

impl EstimateFilter {
    /// str0m's estimate event.
    pub fn on_average(&mut self, bps: u64) {
        self.average = Some(bps);
    }

    /// All bytes the agent has put on the wire so far (before the stats of the same reading).
    pub fn on_sent(&mut self, total_bytes: u64, now: Instant) {
        push_covering(&mut self.sent, (now, total_bytes), SENT_WINDOW);
    }

    /// The highest rate between consecutive readings of what was sent, over `SENT_WINDOW`.
    fn sent_peak(&self) -> Option<u64> {
        self.sent
            .iter()
            .zip(self.sent.iter().skip(1))
            .filter_map(|((t0, b0), (t1, b1))| {
                let dt = t1.saturating_duration_since(*t0).as_secs_f64();
                (dt >= 0.05).then(|| (b1.saturating_sub(*b0) as f64 * 8.0 / dt) as u64)
            })
            .max()
    }

    /// The link's capacity from a growing queue (see the module's doc), while fresh.
    pub fn capacity(&self, now: Instant) -> Option<u64> {
        self.capacity
            .filter(|(_, at)| now.saturating_duration_since(*at) <= CAPACITY_FRESH)
            .map(|(c, _)| c)
    }

    /// Reads the capacity from the round trip's growth since the last reading, when a queue
    /// stands and grows clearly.
    fn read_capacity(&mut self, rtt: Duration, now: Instant) {
        let base = self.growth_base;
        if base.is_none_or(|(r, _)| r != rtt) {
            self.growth_base = Some((rtt, now));
        }
        let (Some((prev, at)), Some(floor)) = (base, self.rtt_floor()) else {
            return;
        };
        if prev == rtt {
            return;
        }
        let dt = now.saturating_duration_since(at).as_secs_f64();
        if dt < 0.1 || !fresh(at, now) || rtt.saturating_sub(floor) < QUEUE_SIGNAL {
            return;
        }
        let growth = (rtt.as_secs_f64() - prev.as_secs_f64()) / dt;
        if !(GROWTH_READ..1.0).contains(&growth) {
            return;
        }
        if let Some(sent) = self.sent_peak() {
            self.capacity = Some(((sent as f64 * (1.0 - growth)) as u64, now));
        }
    }

    /// The connection's stats: the controller's latest estimate and the round trip.
    pub fn on_stats(&mut self, latest_bps: Option<u64>, rtt: Option<Duration>, now: Instant) {
        if let Some(b) = latest_bps {
            push_covering(&mut self.latests, (now, b), RISE_HELD);
        }
        if let Some(r) = rtt {
            self.read_capacity(r, now);
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
        let e = self.capacity(now).map_or(e, |c| c.min(e));
        let share = (1.0 - queue.as_secs_f64() / DRAIN.as_secs_f64()).max(DRAIN_FLOOR);
        Some((e as f64 * share) as u64)
    }
}

/// Adds the newest reading and drops those older than `window`, keeping one from before it: it
/// shows the window is covered (and starts its first interval).
fn push_covering(q: &mut VecDeque<(Instant, u64)>, reading: (Instant, u64), window: Duration) {
    let now = reading.0;
    q.push_back(reading);
    while q
        .get(1)
        .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= window)
    {
        q.pop_front();
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

    /// Readings every 250 ms while sending at `bps`: (round trip, latest estimate) each.
    fn feed(
        f: &mut EstimateFilter,
        from: Instant,
        sent: &mut u64,
        bps: u64,
        rtts: &[(u64, u64)],
    ) -> Instant {
        let mut t = from;
        for &(rtt, latest) in rtts {
            t += 250 * MS;
            *sent += bps / 8 / 4;
            f.on_sent(*sent, t);
            f.on_stats(Some(latest), Some(Duration::from_millis(rtt)), t);
        }
        t
    }

    #[test]
    fn a_growing_queue_tells_the_links_capacity_before_the_controller_does() {
        let t0 = Instant::now();
        let mut f = EstimateFilter::default();
        f.on_average(4_000_000);
        let mut sent = 0;
        let t = feed(&mut f, t0, &mut sent, 4_000_000, &[(50, 4_000_000); 12]);
        assert_eq!(f.capacity(t), None, "no queue, no reading");
        // The link fell to 1 Mbit/s: sending 4 Mbit/s, the queue grows by 0.75 s a second of
        // reports. The controller still says 3.9 Mbit/s.
        let t = feed(
            &mut f,
            t,
            &mut sent,
            4_000_000,
            &[(140, 3_900_000), (328, 3_900_000)],
        );
        let c = f.capacity(t).expect("a capacity read");
        assert!((900_000..=1_100_000).contains(&c), "capacity {c}");
        // The ladder gets that, less the drain share (a 278 ms queue).
        let e = f.for_ladder(t).unwrap();
        assert!(e <= c && e >= c / 2, "for the ladder {e} against {c}");
        // A repeated round trip (no new report) reads nothing new, and the reading stays while
        // fresh.
        let t = feed(&mut f, t, &mut sent, 1_000_000, &[(328, 3_000_000)]);
        assert_eq!(f.capacity(t), Some(c));
        assert!(f.capacity(t + CAPACITY_FRESH + MS).is_none(), "it ages out");
    }

    #[test]
    fn noise_and_jumps_are_not_read_as_capacity() {
        let t0 = Instant::now();
        let mut f = EstimateFilter::default();
        f.on_average(4_000_000);
        let mut sent = 0;
        let t = feed(&mut f, t0, &mut sent, 4_000_000, &[(50, 4_000_000); 12]);
        // A queue creeping up slowly (0.2 s/s), and a jump faster than reports can show a
        // queue growing (a burst, or a late report): neither is read.
        let creep = [(100, 4_000_000), (150, 4_000_000), (200, 4_000_000)];
        let t = feed(&mut f, t, &mut sent, 4_000_000, &creep);
        assert!(f.queueing(t));
        assert_eq!(f.capacity(t), None);
        let t = feed(&mut f, t, &mut sent, 4_000_000, &[(500, 4_000_000)]);
        assert_eq!(f.capacity(t), None);
        // Without a queue over the signal, growth is not read either.
        let mut g = EstimateFilter::default();
        let t = feed(
            &mut g,
            t0,
            &mut sent,
            4_000_000,
            &[(50, 4_000_000), (60, 4_000_000), (95, 4_000_000)],
        );
        assert_eq!(g.capacity(t), None);
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
