//! Throttling of forced keyframes: the SFU asks for one per subscriber that joins or loses
//! packets, and a burst of keyframes would flood a thin uplink.

use std::time::{Duration, Instant};

/// At most one forced keyframe per encoder in this interval.
pub const MIN_INTERVAL: Duration = Duration::from_millis(300);

#[derive(Debug, Clone)]
pub struct KeyframeGate {
    last: Vec<Option<Instant>>,
    interval: Duration,
}

impl KeyframeGate {
    pub fn new(encoders: usize, interval: Duration) -> Self {
        KeyframeGate {
            last: vec![None; encoders],
            interval,
        }
    }

    /// True when encoder `idx` should be asked for a keyframe now; records the request.
    pub fn allow(&mut self, idx: usize, now: Instant) -> bool {
        let Some(slot) = self.last.get_mut(idx) else {
            return false;
        };
        if slot.is_some_and(|t| now.saturating_duration_since(t) < self.interval) {
            return false;
        }
        *slot = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_interval_per_encoder() {
        let t0 = Instant::now();
        let mut g = KeyframeGate::new(2, MIN_INTERVAL);
        assert!(g.allow(0, t0));
        assert!(!g.allow(0, t0 + Duration::from_millis(100)));
        assert!(
            g.allow(1, t0 + Duration::from_millis(100)),
            "encoders are independent"
        );
        assert!(g.allow(0, t0 + MIN_INTERVAL));
        assert!(!g.allow(5, t0), "unknown encoder");
    }
}
