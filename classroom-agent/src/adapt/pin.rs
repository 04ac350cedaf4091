//! A congestion controller that stopped looking for room. str0m's estimate can stay at one
//! exact value for tens of seconds on a link with no queue and no loss: in its
//! application-limited region (video sends under 65 % of the estimate; padding does not
//! count) its loss-based stage caps the estimate at the best probe result of the last minute
//! and calls the link loss-limited, and in that state it sends no probe. On the 4 -> 1 -> 4
//! Mbit/s bench the estimate stayed at 1,115 kbit/s for the 25 s after the link came back, with
//! the ladder asking for 3.7 Mbit/s. Restarting the controller from its estimate clears that
//! cap and probes at once. Pure; time from the caller.

use std::time::{Duration, Instant};

/// The same estimate this long on a quiet link is a pin: a working controller moves its
/// estimate with every feedback (0.2-0.5 s), up or down.
pub const PIN_HELD: Duration = Duration::from_secs(3);
/// A pin restarts the controller only while what the ladder wants is this far above it.
pub const WANTED_OVER: f64 = 1.2;
/// At most one restart this often, so that a link that really is full is not probed over
/// and over.
pub const RESTART_GAP: Duration = Duration::from_secs(15);
/// Reported loss above this is not a quiet link.
pub const QUIET_LOSS: f32 = 0.01;

#[derive(Debug, Clone, Default)]
pub struct PinWatch {
    /// The estimate that has not moved, and since when.
    held: Option<(u64, Instant)>,
    last_restart: Option<Instant>,
}

impl PinWatch {
    /// One reading of the controller: its newest estimate, whether the link is quiet (no
    /// queue, no loss), and what the ladder wants. Returns the rate to restart the controller
    /// from when it is pinned.
    pub fn on_reading(
        &mut self,
        estimate: u64,
        quiet: bool,
        wanted: u64,
        now: Instant,
    ) -> Option<u64> {
        if !quiet {
            self.held = None;
            return None;
        }
        let since = match self.held {
            Some((e, t)) if e == estimate => t,
            _ => {
                self.held = Some((estimate, now));
                return None;
            }
        };
        let pinned = now.saturating_duration_since(since) >= PIN_HELD
            && wanted as f64 > estimate as f64 * WANTED_OVER
            && self
                .last_restart
                .is_none_or(|t| now.saturating_duration_since(t) >= RESTART_GAP);
        if !pinned {
            return None;
        }
        self.held = None;
        self.last_restart = Some(now);
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
            out.extend(w.on_reading(estimate, quiet, 3_730_000, t));
            t += TICK;
        }
        (out, t)
    }

    #[test]
    fn an_estimate_held_on_a_quiet_link_restarts_the_controller_once() {
        let mut w = PinWatch::default();
        let t0 = Instant::now();
        // 2.75 s at one value: not yet.
        let (r, t) = feed(&mut w, 1_115_000, true, 12, t0);
        assert!(r.is_empty(), "{r:?}");
        // The 13th reading is 3 s after the first.
        let (r, t) = feed(&mut w, 1_115_000, true, 1, t);
        assert_eq!(r, vec![1_115_000]);
        // Pinned again right away: not within the restart gap...
        let (r, t) = feed(&mut w, 1_115_000, true, 40, t);
        assert!(r.is_empty(), "{r:?}");
        // ...but after it.
        let (r, _) = feed(&mut w, 1_115_000, true, 30, t);
        assert_eq!(r, vec![1_115_000]);
    }

    #[test]
    fn a_moving_estimate_a_queue_or_a_full_ladder_is_no_pin() {
        let t0 = Instant::now();
        // A working controller moves its estimate.
        let mut w = PinWatch::default();
        let mut t = t0;
        for i in 0..40u64 {
            assert_eq!(w.on_reading(2_000_000 + i % 2, true, 3_730_000, t), None);
            t += TICK;
        }
        // A queue or loss in between starts the count again.
        let mut w = PinWatch::default();
        let (r, t) = feed(&mut w, 1_115_000, true, 10, t0);
        assert!(r.is_empty());
        let (r, t) = feed(&mut w, 1_115_000, false, 1, t);
        assert!(r.is_empty());
        let (r, t) = feed(&mut w, 1_115_000, true, 12, t);
        assert!(r.is_empty(), "{r:?}");
        let (r, _) = feed(&mut w, 1_115_000, true, 1, t);
        assert_eq!(r.len(), 1);
        // The ladder wants no more than the estimate gives (within `WANTED_OVER`).
        let mut w = PinWatch::default();
        let mut t = t0;
        for _ in 0..40 {
            assert_eq!(w.on_reading(3_400_000, true, 3_730_000, t), None);
            t += TICK;
        }
    }
}
