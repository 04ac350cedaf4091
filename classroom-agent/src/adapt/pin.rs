//! A congestion controller that stopped looking for room. str0m's estimate can stay at one
//! exact value for tens of seconds on a link with no queue and no loss: in its
//! application-limited region (video sends under 65 % of the estimate; padding does not
//! count) its loss-based stage caps the estimate at the best probe result of the last minute
//! and calls the link loss-limited, and in that state it sends no probe. On the 4 -> 1 -> 4
//! Mbit/s bench the estimate stayed at 1,115 kbit/s for the 25 s after the link came back, with
//! the ladder asking for 3.7 Mbit/s. Restarting the controller from its estimate
//! (`Bwe::reset`) clears that cap: the new controller probes at once, at 3 and 6 times the
//! estimate (at most twice the desired rate), in bursts of 15 ms. A restart that finds no room
//! doubles the wait before the next, so a link that really is that slow is not probed over
//! and over; but a pin at an estimate well above the one that restart found nothing at is news
//! (the link changed since), and waits only the least gap: a restart that found nothing on the
//! bench's 1 Mbit/s period held the next one back for 30 s, and the estimate stayed pinned at
//! 1,055 kbit/s for 14 s after the link came back. Pure; time from the caller.

use std::time::{Duration, Instant};

/// The same estimate this long on a quiet link is a pin. A working controller moves its
/// estimate with nearly every feedback (0.2-0.5 s); its delay-based hold state keeps it flat
/// only until the next feedback that shows no overuse.
pub const PIN_HELD: Duration = Duration::from_secs(3);
/// A pin restarts the controller only while what the ladder wants is this far above it.
pub const WANTED_OVER: f64 = 1.2;
/// The least wait between restarts; doubled after each restart that found no room, up to
/// `MAX_GAP`.
pub const RESTART_GAP: Duration = Duration::from_secs(15);
pub const MAX_GAP: Duration = Duration::from_secs(120);
/// A restart found room when the estimate this long after it is `FOUND` times what it was.
pub const JUDGED_AFTER: Duration = Duration::from_secs(2);
pub const FOUND: f64 = 1.15;
/// Reported loss above this is not a quiet link.
pub const QUIET_LOSS: f32 = 0.01;

#[derive(Debug, Clone)]
pub struct PinWatch {
    /// The estimate that has not moved, and since when.
    held: Option<(u64, Instant)>,
    last_restart: Option<Instant>,
    /// The last restart's estimate, until it is judged.
    judging: Option<u64>,
    gap: Duration,
    /// The estimate of the last restart that found no room, while the wait is doubled.
    futile: Option<u64>,
}

impl Default for PinWatch {
    fn default() -> Self {
        PinWatch {
            held: None,
            last_restart: None,
            judging: None,
            gap: RESTART_GAP,
            futile: None,
        }
    }
}

impl PinWatch {
    /// One reading of the controller: its newest estimate (`None` when the stats had none),
    /// whether the link is quiet (feedback arriving, no queue, no loss), and what the ladder
    /// wants. Returns the rate to restart the controller from when it is pinned.
    pub fn on_reading(
        &mut self,
        estimate: Option<u64>,
        quiet: bool,
        wanted: u64,
        now: Instant,
    ) -> Option<u64> {
        if let (Some(from), Some(at), Some(e)) = (self.judging, self.last_restart, estimate) {
            if now.saturating_duration_since(at) >= JUDGED_AFTER {
                self.judging = None;
                if e as f64 >= from as f64 * FOUND {
                    self.gap = RESTART_GAP;
                    self.futile = None;
                } else {
                    self.gap = (self.gap * 2).min(MAX_GAP);
                    self.futile = Some(from);
                }
            }
        }
        let Some(estimate) = estimate.filter(|_| quiet) else {
            self.held = None;
            return None;
        };
        let since = match self.held {
            Some((e, t)) if e == estimate => t,
            _ => {
                self.held = Some((estimate, now));
                return None;
            }
        };
        let moved_on = self
            .futile
            .is_some_and(|f| estimate as f64 >= f as f64 * FOUND);
        let gap = if moved_on { RESTART_GAP } else { self.gap };
        let pinned = now.saturating_duration_since(since) >= PIN_HELD
            && wanted as f64 > estimate as f64 * WANTED_OVER
            && self
                .last_restart
                .is_none_or(|t| now.saturating_duration_since(t) >= gap);
        if !pinned {
            return None;
        }
        self.held = None;
        self.last_restart = Some(now);
        self.judging = Some(estimate);
        Some(estimate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(250);

    /// Feeds `n` readings of `estimate` 250 ms apart from `t`; returns the restarts and the
    /// time after the last reading.
    fn feed(
        w: &mut PinWatch,
        estimate: u64,
        quiet: bool,
        n: u32,
        mut t: Instant,
    ) -> (Vec<u64>, Instant) {
        let mut out = vec![];
        for _ in 0..n {
            out.extend(w.on_reading(Some(estimate), quiet, 3_730_000, t));
            t += TICK;
        }
        (out, t)
    }

    #[test]
    fn a_restart_that_found_room_leaves_the_least_gap_before_the_next() {
        let mut w = PinWatch::default();
        let t0 = Instant::now();
        // 2.75 s at one value: not yet.
        let (r, t) = feed(&mut w, 1_115_000, true, 12, t0);
        assert!(r.is_empty(), "{r:?}");
        // The 13th reading is 3 s after the first.
        let (r, t) = feed(&mut w, 1_115_000, true, 1, t);
        assert_eq!(r, vec![1_115_000]);
        let restart = t - TICK;
        // The restart found room (2 Mbit/s), and the estimate sticks there: pinned again, but
        // not before `RESTART_GAP`...
        let (r, t) = feed(&mut w, 2_000_000, true, 59, t);
        assert!(r.is_empty(), "{r:?}");
        assert_eq!(t, restart + RESTART_GAP);
        // ...and at once after it.
        let (r, _) = feed(&mut w, 2_000_000, true, 1, t);
        assert_eq!(r, vec![2_000_000]);
    }

    #[test]
    fn restarts_that_find_nothing_wait_twice_as_long_each_time() {
        let mut w = PinWatch::default();
        let t0 = Instant::now();
        let (r, mut t) = feed(&mut w, 800_000, true, 13, t0);
        assert_eq!(r.len(), 1);
        let mut last = t - TICK;
        for gap in [30, 60, 120, 120] {
            let gap = Duration::from_secs(gap);
            // The link really is that slow: the estimate stays where it was.
            let n = (gap.as_millis() / TICK.as_millis()) as u32;
            let (r, next) = feed(&mut w, 800_000, true, n - 1, t);
            assert!(r.is_empty(), "restarted within {gap:?}: {r:?}");
            let (r, next) = feed(&mut w, 800_000, true, 1, next);
            assert_eq!(r.len(), 1, "no restart after {gap:?}");
            assert_eq!(next - TICK - last, gap);
            last = next - TICK;
            t = next;
        }
    }

    #[test]
    fn a_pin_well_above_the_futile_restart_waits_only_the_least_gap() {
        let mut w = PinWatch::default();
        let t0 = Instant::now();
        // Pinned at 800 kbit/s on a slow link: the restart finds nothing.
        let (r, t) = feed(&mut w, 800_000, true, 13, t0);
        assert_eq!(r.len(), 1);
        let restart = t - TICK;
        // Still there past the least gap: the wait is doubled for a pin at that estimate…
        let (r, t) = feed(&mut w, 800_000, true, 59, t);
        assert!(r.is_empty(), "{r:?}");
        let (r, t) = feed(&mut w, 800_000, true, 4, t);
        assert!(r.is_empty(), "{r:?}");
        // …and for one only a little above it…
        let (r, t) = feed(&mut w, 900_000, true, 13, t);
        assert!(r.is_empty(), "{r:?}");
        // …but a pin at 1.15 times it (the link came back, the controller got stuck higher)
        // restarts as soon as it has held `PIN_HELD`.
        let (r, t) = feed(&mut w, 1_055_000, true, 12, t);
        assert!(r.is_empty(), "{r:?}");
        let (r, t) = feed(&mut w, 1_055_000, true, 1, t);
        assert_eq!(r, vec![1_055_000]);
        assert!(t - restart < RESTART_GAP * 2, "{:?}", t - restart);
    }

    #[test]
    fn a_moving_estimate_a_queue_or_a_full_ladder_is_no_pin() {
        let t0 = Instant::now();
        // A working controller moves its estimate.
        let mut w = PinWatch::default();
        let mut t = t0;
        for i in 0..40u64 {
            assert_eq!(
                w.on_reading(Some(2_000_000 + i % 2), true, 3_730_000, t),
                None
            );
            t += TICK;
        }
        // A queue or loss in between, or a reading without an estimate (no feedback), starts
        // the count again.
        let mut w = PinWatch::default();
        let (r, t) = feed(&mut w, 1_115_000, true, 10, t0);
        assert!(r.is_empty());
        let (r, t) = feed(&mut w, 1_115_000, false, 1, t);
        assert!(r.is_empty());
        let (r, t) = feed(&mut w, 1_115_000, true, 10, t);
        assert!(r.is_empty(), "{r:?}");
        assert_eq!(w.on_reading(None, true, 3_730_000, t), None);
        let (r, t) = feed(&mut w, 1_115_000, true, 12, t + TICK);
        assert!(r.is_empty(), "{r:?}");
        let (r, _) = feed(&mut w, 1_115_000, true, 1, t);
        assert_eq!(r.len(), 1);
        // The ladder wants no more than `WANTED_OVER` times the estimate.
        let mut w = PinWatch::default();
        let mut t = t0;
        let at_most = (3_730_000.0 / WANTED_OVER).ceil() as u64;
        for _ in 0..40 {
            assert_eq!(w.on_reading(Some(at_most), true, 3_730_000, t), None);
            t += TICK;
        }
        let (r, _) = feed(&mut w, at_most - 1_000, true, 13, t);
        assert_eq!(r.len(), 1, "just over the margin");
    }
}
