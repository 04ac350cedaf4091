//! Keyframe requests toward a publisher, at most one per interval per layer: many subscribers
//! asking at once must not turn into a PLI storm on a rural teacher's uplink.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct KeyframeThrottle {
    interval: Duration,
    last: Option<Instant>,
}

impl KeyframeThrottle {
    pub fn new(interval: Duration) -> Self {
        KeyframeThrottle {
            interval,
            last: None,
        }
    }

    /// Returns true (and records it) when a request may be sent now.
    pub fn try_request(&mut self, now: Instant) -> bool {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.interval => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_one_per_interval() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::new(Duration::from_millis(500));
        let mut sent = 0;
        // 100 subscribers asking every 10 ms over 2 s of virtual time.
        for ms in (0..2000).step_by(10) {
            for _ in 0..100 {
                if k.try_request(t0 + Duration::from_millis(ms)) {
                    sent += 1;
                }
            }
        }
        assert_eq!(sent, 4);
    }
}
