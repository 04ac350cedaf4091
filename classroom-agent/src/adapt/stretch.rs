//! On the ladder's top step, the estimate's spare room goes into the top camera layer's
//! bitrate: a sharper picture rather than idle capacity. The top step alone left a returned
//! 4 Mbit/s link at (2.84 Mbit/s of video + the voice) / 0.85 = 3.39 Mbit/s, just under 85 % of
//! it, however high the estimate climbed (BENCHMARKS.md, 2026-12-01). Pure; time from the caller.
//!
//! A stretch is taken at once when it shrinks (the estimate fell, or a queue showed) and only
//! now and then when it grows: each change of an encoder's target restarts the overshoot
//! control's measuring window (see [`super::overshoot`]).

use std::time::{Duration, Instant};

use super::ladder::Step;

/// The top layer gets at most this multiple of its rate on the top step (1280x720 at 30 fps:
/// 2.32 -> 3.48 Mbit/s); beyond that a camera picture gains little.
pub const CEILING: f64 = 1.5;
/// A stretch grows at most this often…
pub const EVERY: Duration = Duration::from_secs(2);
/// …and only by this share of what it gives now.
pub const DEADBAND: f64 = 0.08;

/// The top camera layer's bitrate that `video_budget` (the ladder's budget: the estimate with
/// headroom taken and the voice served) allows on the top step `top`: what the other layers
/// leave, no less than the step's own rate and at most [`CEILING`] times it. `None` without a
/// camera layer.
pub fn target(top: &Step, video_budget: u64) -> Option<u32> {
    let own = top.layers.last().copied().flatten()?.bitrate_bps as u64;
    let others = top.total_bps() - own;
    let ceiling = (own as f64 * CEILING) as u64;
    let room = video_budget.saturating_sub(others);
    Some(room.clamp(own, ceiling).min(u32::MAX as u64) as u32)
}

/// `step` with its top camera layer at `bps`.
pub fn apply(step: &Step, bps: Option<u32>) -> Step {
    let mut s = step.clone();
    if let (Some(bps), Some(Some(l))) = (bps, s.layers.last_mut()) {
        l.bitrate_bps = bps;
    }
    s
}

/// The stretch given to the encoder, with its pace.
#[derive(Debug, Clone, Default)]
pub struct Stretch {
    given: Option<u32>,
    /// When `given` last grew.
    grew: Option<Instant>,
}

impl Stretch {
    /// The top layer's bitrate given now (`None`: the ladder's own).
    pub fn given(&self) -> Option<u32> {
        self.given
    }

    /// What the top layer may have now: `want`, [`target`]'s answer on the top step with no
    /// queue on the link, else `None`. Returns whether the stretch given changed.
    pub fn update(&mut self, want: Option<u32>, now: Instant) -> bool {
        let take = match (self.given, want) {
            (None, None) => false,
            // Off the top step or into a queue: back to the ladder's own rate at once.
            (Some(_), None) => true,
            (given, Some(w)) => {
                let from = given.unwrap_or(0) as f64;
                let paced = self
                    .grew
                    .is_none_or(|t| now.saturating_duration_since(t) >= EVERY);
                (w as f64) < from || (w as f64 > from * (1.0 + DEADBAND) && paced)
            }
        };
        if !take {
            return false;
        }
        if want.unwrap_or(0) > self.given.unwrap_or(0) {
            self.grew = Some(now);
        }
        self.given = want;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::ladder::{build, LayerSetting};
    use crate::layers::{camera_layers, Role};

    fn top() -> Step {
        build(&camera_layers(Role::Teacher, 1280, 720, 30, true), None)
            .pop()
            .unwrap()
    }

    #[test]
    fn the_top_layer_takes_what_the_others_leave_between_its_own_rate_and_the_ceiling() {
        let s = top();
        let own = s.layers[2].unwrap().bitrate_bps as u64;
        let others = s.total_bps() - own;
        // A budget no larger than the step: its own rate.
        assert_eq!(target(&s, s.total_bps()), Some(own as u32));
        assert_eq!(target(&s, 0), Some(own as u32));
        // Room to spare goes to the top layer alone.
        assert_eq!(
            target(&s, others + own + 300_000),
            Some((own + 300_000) as u32)
        );
        // Up to the ceiling.
        let ceiling = (own as f64 * CEILING) as u32;
        assert_eq!(target(&s, 100_000_000), Some(ceiling));
        let stretched = apply(&s, target(&s, 100_000_000));
        assert_eq!(stretched.layers[..2], s.layers[..2]);
        assert_eq!(stretched.layers[2].unwrap().bitrate_bps, ceiling);
        assert_eq!(stretched.courseware, s.courseware);
        assert_eq!(apply(&s, None), s);
    }

    #[test]
    fn no_camera_no_stretch() {
        let cw = LayerSetting {
            width: 1280,
            height: 720,
            fps: 5,
            bitrate_bps: 300_000,
        };
        let s = Step {
            layers: vec![],
            courseware: Some(cw),
        };
        assert_eq!(target(&s, 10_000_000), None);
        let paused_top = Step {
            layers: vec![None],
            courseware: Some(cw),
        };
        assert_eq!(target(&paused_top, 10_000_000), None);
    }

    #[test]
    fn grows_paced_and_shrinks_at_once() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = Stretch::default();
        assert!(!s.update(None, at(0)));
        assert!(s.update(Some(2_400_000), at(0)));
        assert_eq!(s.given(), Some(2_400_000));
        // Growth within the pace or the deadband waits.
        assert!(!s.update(Some(3_000_000), at(1_000)));
        assert!(!s.update(Some(2_500_000), at(2_500)));
        assert_eq!(s.given(), Some(2_400_000));
        assert!(s.update(Some(3_000_000), at(2_500)));
        // A shrink is taken at once, however small, and does not hold back the next growth.
        assert!(s.update(Some(2_990_000), at(2_600)));
        assert_eq!(s.given(), Some(2_990_000));
        assert!(!s.update(Some(3_400_000), at(3_000)));
        assert!(s.update(Some(3_400_000), at(4_500)));
        // Off the top step: back to the ladder's rate at once; unchanged after.
        assert!(s.update(None, at(4_600)));
        assert_eq!(s.given(), None);
        assert!(!s.update(None, at(4_700)));
    }
}
