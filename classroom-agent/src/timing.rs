//! Clock conversions: GStreamer timestamps to RTP media time on the way out, and RTP media
//! time plus arrival time to GStreamer timestamps on the way in.

use std::time::Duration;

/// RTP ticks at `clock_rate` for a GStreamer running time in nanoseconds.
pub fn rtp_ticks(pts_ns: u64, clock_rate: u32) -> u64 {
    (pts_ns as u128 * clock_rate as u128 / 1_000_000_000) as u64
}

/// How far the timeline derived from RTP timestamps may stray from arrival times before the
/// stream is treated as a new one (a publisher reconnect, an SFU restart, a source switch).
pub const MAX_DRIFT: Duration = Duration::from_secs(1);

/// Maps one received stream onto the playback timeline (nanoseconds since playback began).
///
/// RTP timestamps give smooth, jitter-free spacing; arrival times anchor them to the shared
/// timeline so audio and video line up without RTCP sender reports. Output is strictly
/// increasing, as muxers require.
#[derive(Debug, Default, Clone)]
pub struct PtsMapper {
    anchor: Option<(u64, u32, u64)>,
    last: Option<u64>,
    reanchors: u64,
}

impl PtsMapper {
    /// `rtp` in ticks of `clock_rate` (extended, never wrapping); `arrival_ns` on the playback
    /// timeline.
    pub fn map(&mut self, rtp: u64, clock_rate: u32, arrival_ns: u64) -> u64 {
        let from_anchor = self.anchor.and_then(|(r0, rate, p0)| {
            if rate != clock_rate || rtp < r0 {
                return None;
            }
            let pts = p0 + ((rtp - r0) as u128 * 1_000_000_000 / rate as u128) as u64;
            (pts.abs_diff(arrival_ns) <= MAX_DRIFT.as_nanos() as u64).then_some(pts)
        });
        let pts = match from_anchor {
            Some(p) => p,
            None => {
                if self.anchor.is_some() {
                    self.reanchors += 1;
                }
                self.anchor = Some((rtp, clock_rate, arrival_ns));
                arrival_ns
            }
        };
        let pts = match self.last {
            Some(l) if pts <= l => l + 1,
            _ => pts,
        };
        self.last = Some(pts);
        pts
    }

    /// Times the stream was found to restart on a new timeline.
    pub fn reanchors(&self) -> u64 {
        self.reanchors
    }
}

/// Kept between a frame's handover and its time at the sinks (decoding, rendering).
pub const PLAYOUT_MARGIN: Duration = Duration::from_millis(30);
/// The most the playout delay grows to: beyond it a frame is better shown late than the
/// whole lesson delayed.
pub const PLAYOUT_MAX: Duration = Duration::from_millis(1000);
/// A second late frame within this confirms the first was not a one-off.
pub const PLAYOUT_CONFIRM: Duration = Duration::from_secs(10);

/// The playout delay added to every timestamp, sized for the link: it starts at the
/// configured allowance and grows to cover frames handed over late (jitter, NACK repairs a
/// round trip later), once two such frames within [`PLAYOUT_CONFIRM`] show it is the link and
/// not a one-off stall. It never shrinks, since that would move timestamps backwards.
#[derive(Debug, Clone)]
pub struct PlayoutDelay {
    current: Duration,
    /// (when, delay it asked for) of the last frame that did not fit.
    pending: Option<(Duration, Duration)>,
}

impl PlayoutDelay {
    pub fn new(base: Duration) -> PlayoutDelay {
        PlayoutDelay {
            current: base.min(PLAYOUT_MAX),
            pending: None,
        }
    }

    pub fn current(&self) -> Duration {
        self.current
    }

    /// A frame stamped `pts` (on the playback timeline, before this delay) handed over at
    /// `now`. Returns true when the delay grew.
    pub fn observe(&mut self, pts: Duration, now: Duration) -> bool {
        let need = now.saturating_sub(pts) + PLAYOUT_MARGIN;
        if need <= self.current || self.current >= PLAYOUT_MAX {
            return false;
        }
        // Rounded up to 10 ms, so small variations do not each move the timeline.
        let need = Duration::from_millis(need.as_millis().div_ceil(10) as u64 * 10);
        match self.pending {
            Some((at, earlier)) if now.saturating_sub(at) <= PLAYOUT_CONFIRM => {
                self.current = earlier.min(need).max(self.current).min(PLAYOUT_MAX);
                self.pending = None;
                true
            }
            _ => {
                self.pending = Some((now, need));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playout_delay_grows_for_repeated_lateness_only() {
        let ms = Duration::from_millis;
        let mut d = PlayoutDelay::new(ms(200));
        // On time, or late within the allowance: nothing changes.
        assert!(!d.observe(ms(1000), ms(1000)));
        assert!(!d.observe(ms(1000), ms(1150)));
        // One frame 400 ms late (a stall): noted, not acted on.
        assert!(!d.observe(ms(2000), ms(2400)));
        assert_eq!(d.current(), ms(200));
        // Another 300 ms late 5 s later: the delay covers the smaller of the two.
        assert!(d.observe(ms(7000), ms(7300)));
        assert_eq!(d.current(), ms(330));
        // A late frame long after the last one starts a new confirmation.
        assert!(!d.observe(ms(30_000), ms(30_500)));
        assert!(!d.observe(ms(45_000), ms(45_500)), "15 s apart");
        assert_eq!(d.current(), ms(330));
        // Confirmed by the next late frame: the smaller of the two.
        assert!(d.observe(ms(46_000), ms(48_000)));
        assert_eq!(d.current(), ms(530));
        // Never beyond the maximum, never shrinking.
        assert!(!d.observe(ms(47_000), ms(49_000)));
        assert!(d.observe(ms(48_000), ms(50_500)));
        assert_eq!(d.current(), PLAYOUT_MAX);
        assert!(!d.observe(ms(50_000), ms(53_000)));
        assert!(!d.observe(ms(51_000), ms(51_000)));
        assert_eq!(d.current(), PLAYOUT_MAX);
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn rtp_ticks_at_common_rates() {
        assert_eq!(rtp_ticks(1_000_000_000, 90_000), 90_000);
        assert_eq!(rtp_ticks(20 * MS, 48_000), 960);
        assert_eq!(rtp_ticks(0, 90_000), 0);
        // No overflow for days of running time.
        assert_eq!(rtp_ticks(86_400 * 1_000_000_000, 90_000), 86_400 * 90_000);
    }

    #[test]
    fn spacing_follows_rtp_not_arrival_jitter() {
        let mut m = PtsMapper::default();
        assert_eq!(m.map(1000, 90_000, 500 * MS), 500 * MS);
        // 3000 ticks = 33.3 ms later, arriving 50 ms later (jitter): RTP spacing wins.
        assert_eq!(m.map(4000, 90_000, 550 * MS), 500 * MS + 33_333_333);
        assert_eq!(m.reanchors(), 0);
    }

    #[test]
    fn jump_beyond_drift_reanchors_on_arrival() {
        let mut m = PtsMapper::default();
        m.map(1000, 48_000, 100 * MS);
        // A publisher restart: new random RTP base far from the old timeline.
        let p = m.map(999_999_999, 48_000, 3000 * MS);
        assert_eq!(p, 3000 * MS);
        assert_eq!(m.reanchors(), 1);
        // And it follows the new anchor afterwards.
        assert_eq!(m.map(999_999_999 + 960, 48_000, 3025 * MS), 3020 * MS);
    }

    #[test]
    fn backwards_rtp_reanchors_and_output_stays_increasing() {
        let mut m = PtsMapper::default();
        let a = m.map(50_000, 90_000, 1000 * MS);
        let b = m.map(10_000, 90_000, 1000 * MS);
        assert!(b > a, "{b} after {a}");
        assert_eq!(m.reanchors(), 1);
    }
}
