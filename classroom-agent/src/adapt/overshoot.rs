//! Encoders on a busy classroom PC produce more than the bitrate they are asked for: with three
//! VP8 encoders sharing two cores, frames dropped before the encoder made the 1280x720 layer
//! send 1.3-1.75x its target, and the congestion controller then saw the surplus as a queue on
//! the link. As libwebrtc's encoder overshoot detector does, measure what each encoder really
//! produces and scale what it is asked for, so that its output meets the ladder's plan.
//! Pure; time comes from the caller.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Output is measured over this long at one target before a correction.
pub const WINDOW: Duration = Duration::from_secs(2);
/// The ask never goes below this share of the plan (a starved encoder blurs the picture).
pub const MIN_SCALE: f64 = 0.4;
/// Corrections move this far (as a power) toward the measured ratio: a step at a time, since
/// an encoder's output over two seconds is noisy.
const GAIN: f64 = 0.7;
/// Smaller corrections than this are not worth a change of the encoder's target.
const DEADBAND: f64 = 0.05;

#[derive(Debug, Clone)]
struct Layer {
    /// The ladder's plan for this layer; `None` while it is paused.
    plan_bps: Option<u64>,
    /// What the encoder is asked for, as a share of the plan.
    scale: f64,
    /// Since when the encoder has had its current ask.
    since: Option<Instant>,
    /// Delta frames since then: (when, bytes). Keyframes are left out: they come on request
    /// and a rate control cannot spread them.
    frames: VecDeque<(Instant, u64)>,
}

/// Per video layer (camera layers, then courseware, as in a ladder step).
#[derive(Debug, Clone)]
pub struct OvershootControl {
    layers: Vec<Layer>,
}

impl OvershootControl {
    pub fn new(layers: usize) -> Self {
        Self {
            layers: vec![
                Layer {
                    plan_bps: None,
                    scale: 1.0,
                    since: None,
                    frames: VecDeque::new(),
                };
                layers
            ],
        }
    }

    /// The ladder's plan for layer `k` changed (or was set again: nothing happens then).
    pub fn plan(&mut self, k: usize, plan_bps: Option<u64>, now: Instant) {
        let Some(l) = self.layers.get_mut(k) else {
            return;
        };
        if l.plan_bps == plan_bps {
            return;
        }
        l.plan_bps = plan_bps;
        l.since = plan_bps.map(|_| now);
        l.frames.clear();
    }

    /// What encoder `k` is to be asked for now (`None` while paused).
    pub fn ask(&self, k: usize) -> Option<u64> {
        let l = self.layers.get(k)?;
        l.plan_bps.map(|p| (p as f64 * l.scale) as u64)
    }

    /// An encoded frame of layer `k`.
    pub fn on_frame(&mut self, k: usize, bytes: usize, keyframe: bool, now: Instant) {
        if keyframe {
            return;
        }
        if let Some(l) = self.layers.get_mut(k) {
            if l.since.is_some() {
                l.frames.push_back((now, bytes as u64));
            }
        }
    }

    /// Measures the layers that have had one ask for a whole window and corrects those whose
    /// output strays from the plan. Returns the layers whose ask changed.
    pub fn update(&mut self, now: Instant) -> Vec<usize> {
        let mut changed = vec![];
        for (k, l) in self.layers.iter_mut().enumerate() {
            let (Some(plan), Some(since)) = (l.plan_bps, l.since) else {
                continue;
            };
            if now.saturating_duration_since(since) < WINDOW {
                continue;
            }
            while l
                .frames
                .front()
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) > WINDOW)
            {
                l.frames.pop_front();
            }
            let bytes: u64 = l.frames.iter().map(|(_, b)| b).sum();
            let made = bytes as f64 * 8.0 / WINDOW.as_secs_f64();
            if made <= 0.0 {
                continue;
            }
            // Output is taken to follow the ask in proportion: ask' = ask * plan / made.
            let want = (l.scale * (plan as f64 / made).powf(GAIN)).clamp(MIN_SCALE, 1.0);
            if (want / l.scale - 1.0).abs() < DEADBAND {
                continue;
            }
            l.scale = want;
            l.since = Some(now);
            l.frames.clear();
            changed.push(k);
        }
        changed
    }

    /// The current scales, for the logs.
    pub fn scales(&self) -> Vec<f64> {
        self.layers.iter().map(|l| l.scale).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// An encoder at 30 fps that produces `ratio` times what it is asked for.
    fn run(c: &mut OvershootControl, ratio: f64, from: Instant, secs: u64) -> Instant {
        let mut t = from;
        for _ in 0..secs * 30 {
            t += 33 * MS;
            let ask = c.ask(0).unwrap_or(0) as f64;
            c.on_frame(0, (ask * ratio / 8.0 / 30.0) as usize, false, t);
            c.update(t);
        }
        t
    }

    #[test]
    fn an_overshooting_encoder_is_asked_for_less_until_its_output_meets_the_plan() {
        let t0 = Instant::now();
        let mut c = OvershootControl::new(1);
        c.plan(0, Some(1_600_000), t0);
        assert_eq!(c.ask(0), Some(1_600_000));
        let t = run(&mut c, 1.7, t0, 20);
        let out = c.ask(0).unwrap() as f64 * 1.7;
        assert!(
            (out / 1_600_000.0 - 1.0).abs() < 0.1,
            "output {out} against a plan of 1.6 Mbit/s"
        );
        // A keyframe's burst is not output to correct.
        let before = c.ask(0);
        c.on_frame(0, 200_000, true, t + MS);
        c.update(t + MS);
        assert_eq!(c.ask(0), before);
    }

    #[test]
    fn an_encoder_on_plan_or_under_it_keeps_its_ask() {
        let t0 = Instant::now();
        let mut c = OvershootControl::new(2);
        c.plan(0, Some(400_000), t0);
        c.plan(1, None, t0);
        run(&mut c, 1.02, t0, 10);
        assert_eq!(c.ask(0), Some(400_000), "within the dead band");
        run(&mut c, 0.5, t0 + 10_000 * MS, 10);
        assert_eq!(
            c.ask(0),
            Some(400_000),
            "never asked for more than the plan"
        );
        assert_eq!(c.ask(1), None, "a paused layer has no ask");
    }

    #[test]
    fn the_ask_has_a_floor_and_a_new_plan_keeps_the_learned_scale() {
        let t0 = Instant::now();
        let mut c = OvershootControl::new(1);
        c.plan(0, Some(1_000_000), t0);
        let t = run(&mut c, 5.0, t0, 30);
        assert_eq!(c.scales(), vec![MIN_SCALE]);
        c.plan(0, Some(500_000), t);
        assert_eq!(c.ask(0), Some((500_000.0 * MIN_SCALE) as u64));
        // A new plan waits a whole window before it is measured again.
        assert!(c.update(t + WINDOW - MS).is_empty());
    }
}
