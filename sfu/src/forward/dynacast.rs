//! Dynacast: which simulcast layers of a publisher's track anyone needs, so the publisher can
//! stop encoding and sending the others (a rural teacher's uplink is precious).
//!
//! A layer is needed while some subscriber forwards it or waits to switch to it. Needed layers
//! resume at once; a layer nobody has needed for `hold_after` is held. The lowest layer always
//! flows, so a classroom that joins sees a picture at once.

use std::time::{Duration, Instant};

/// How long a layer must go unneeded before the publisher is told to stop it.
pub const HOLD_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Dynacast {
    active: Vec<bool>,
    unneeded_since: Vec<Option<Instant>>,
    hold_after: Duration,
}

impl Dynacast {
    pub fn new(layers: usize, hold_after: Duration) -> Self {
        Dynacast {
            active: vec![true; layers],
            unneeded_since: vec![None; layers],
            hold_after,
        }
    }

    pub fn active(&self) -> &[bool] {
        &self.active
    }

    /// `needed[i]`: layer `i` (lowest first) is wanted now. Returns the new set of active layers
    /// when it changes.
    pub fn update(&mut self, needed: &[bool], now: Instant) -> Option<Vec<bool>> {
        let mut changed = false;
        for i in 1..self.active.len() {
            if needed.get(i).copied().unwrap_or(false) {
                self.unneeded_since[i] = None;
                if !self.active[i] {
                    self.active[i] = true;
                    changed = true;
                }
                continue;
            }
            let since = *self.unneeded_since[i].get_or_insert(now);
            if self.active[i] && now.saturating_duration_since(since) >= self.hold_after {
                self.active[i] = false;
                changed = true;
            }
        }
        changed.then(|| self.active.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_after_a_while_and_resumes_at_once() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut d = Dynacast::new(3, Duration::from_secs(10));
        // Everyone on the low layer: mid and high go after 10 s, not before.
        assert_eq!(d.update(&[true, false, false], at(0)), None);
        assert_eq!(d.update(&[true, false, false], at(9_900)), None);
        assert_eq!(
            d.update(&[true, false, false], at(10_000)),
            Some(vec![true, false, false])
        );
        assert_eq!(d.update(&[true, false, false], at(20_000)), None);
        // A classroom wants high: it resumes at once, mid stays held.
        assert_eq!(
            d.update(&[false, false, true], at(20_200)),
            Some(vec![true, false, true])
        );
        // Briefly unneeded: no flapping.
        assert_eq!(d.update(&[true, false, false], at(21_000)), None);
        assert_eq!(d.update(&[true, false, true], at(25_000)), None);
        assert_eq!(d.active(), &[true, false, true]);
    }

    #[test]
    fn the_lowest_layer_always_flows() {
        let t0 = Instant::now();
        let mut d = Dynacast::new(2, Duration::from_secs(1));
        d.update(&[false, false], t0);
        let got = d.update(&[false, false], t0 + Duration::from_secs(5));
        assert_eq!(got, Some(vec![true, false]));
        let mut single = Dynacast::new(1, Duration::from_secs(1));
        assert_eq!(single.update(&[false], t0 + Duration::from_secs(9)), None);
    }
}
