//! The adaptation ladder: from the congestion controller's estimate to what each camera
//! layer and the courseware send (size, frame rate, bitrate, or paused). Pure; time comes
//! from the caller.
//!
//! Rules: the voice is reserved first, so video yields first; courseware keeps its readable
//! size and gives up frame rate (down to one picture a second) before it is paused, and its
//! slowest rung comes before any camera picture; a drop goes straight down to the
//! highest step that fits; a rise goes one step at a time, only after the estimate has held
//! a margin above the next step for a dwell (then as far as the margin allows); below the lowest step video pauses and audio
//! carries on, and the same rise rule brings video back.

use std::time::{Duration, Instant};

use crate::layers::{bitrate_for, even, LayerSpec};

/// Kept for the voice (Opus at 32 kbit/s plus packet overhead) before video gets anything.
pub const AUDIO_RESERVE_BPS: u64 = 45_000;
/// Share of the estimate media may use; the rest absorbs estimate error and RTCP.
pub const HEADROOM: f64 = 0.85;
/// A rise needs the budget this far above the next step…
pub const UP_MARGIN: f64 = 1.1;
/// …for this long.
pub const UP_DWELL: Duration = Duration::from_secs(2);
/// No rise this soon after a fall: the link just showed where its limit is.
pub const HOLD_AFTER_DOWN: Duration = Duration::from_secs(4);
/// A fall that begins this soon after a rise, while the link shows no queue, waits
/// `FALL_HOLD` before the ladder follows it (see [`Ladder::on_reading`]). The hold leaves
/// time for a probe to answer and for the estimate it raises to count (the filter takes a
/// higher estimate after a second).
pub const AFTER_UP: Duration = Duration::from_secs(3);
pub const FALL_HOLD: Duration = Duration::from_millis(1500);

/// The last rung gives the top camera layer this much more than its size and frame rate call
/// for (1280x720 at 30 fps: 1.66 -> 2.32 Mbit/s), at most `MAX_BOOSTED_BPS`.
const TOP_BOOST: f64 = 1.4;
const MAX_BOOSTED_BPS: u32 = 3_500_000;

/// What one layer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSetting {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_bps: u32,
}

/// One rung: a setting per camera layer, lowest first, and one for the courseware; `None`
/// pauses the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub layers: Vec<Option<LayerSetting>>,
    pub courseware: Option<LayerSetting>,
}

impl Step {
    /// Every layer's setting in slot order: the camera layers, lowest first, then the
    /// courseware (the order `adapt::overshoot` numbers its layers in).
    pub fn slots(&self) -> impl Iterator<Item = &Option<LayerSetting>> {
        self.layers.iter().chain(std::iter::once(&self.courseware))
    }

    /// As [`Step::slots`], to change them.
    pub fn slots_mut(&mut self) -> impl Iterator<Item = &mut Option<LayerSetting>> {
        self.layers
            .iter_mut()
            .chain(std::iter::once(&mut self.courseware))
    }

    pub fn total_bps(&self) -> u64 {
        self.slots().flatten().map(|l| l.bitrate_bps as u64).sum()
    }

    pub fn is_paused(&self) -> bool {
        self.layers.iter().all(Option::is_none) && self.courseware.is_none()
    }
}

/// Courseware's frame rates, slowest first: slides stay readable at one picture a second.
const COURSEWARE_FPS: [u32; 3] = [1, 2, 5];
/// A slide change at a low frame rate is nearly a keyframe; below this it comes out blurred.
const COURSEWARE_MIN_BPS: u32 = 100_000;

/// The courseware's rungs, slowest first, all at its full size.
fn courseware_rungs(cw: &LayerSpec) -> Vec<LayerSetting> {
    let mut fps: Vec<u32> = COURSEWARE_FPS
        .iter()
        .copied()
        .filter(|&f| f < cw.fps)
        .collect();
    fps.push(cw.fps.max(1));
    fps.into_iter()
        .map(|f| {
            let mut s = setting(
                cw.width,
                cw.height,
                f,
                cw.bitrate_bps.max(COURSEWARE_MIN_BPS),
            );
            s.bitrate_bps = s.bitrate_bps.max(COURSEWARE_MIN_BPS);
            s
        })
        .collect()
}

fn setting(w: u32, h: u32, fps: u32, cap: u32) -> LayerSetting {
    let (width, height, fps) = (even(w), even(h), fps.max(1));
    LayerSetting {
        width,
        height,
        fps,
        bitrate_bps: bitrate_for(width, height, fps).min(cap),
    }
}

/// The steps for these camera layers and courseware, lowest first, totals strictly rising.
/// Step 0 pauses video.
///
/// Courseware comes first at its slowest rung; then the camera's lowest layer; then the
/// courseware's full frame rate; then the camera's higher layers. Layers switch on from the
/// lowest; the newest (top) layer first runs at half its frame rate. A single layer also
/// steps through half its size, since nothing smaller exists.
pub fn build(layers: &[LayerSpec], courseware: Option<&LayerSpec>) -> Vec<Step> {
    let n = layers.len();
    let mut steps = vec![Step {
        layers: vec![None; n],
        courseware: None,
    }];
    let push = |steps: &mut Vec<Step>, step: Step| {
        let last = steps.last().map_or(0, Step::total_bps);
        if step.total_bps() > last {
            steps.push(step);
        } else if step.total_bps() == last && steps.len() > 1 {
            // Rates hit their floor at small sizes: the better rung costs the same.
            *steps.last_mut().expect("not empty") = step;
        }
    };
    let cw_rungs: Vec<LayerSetting> = courseware.map(courseware_rungs).unwrap_or_default();
    let mut cw = cw_rungs.first().copied();
    if cw.is_some() {
        push(
            &mut steps,
            Step {
                layers: vec![None; n],
                courseware: cw,
            },
        );
    }
    let full = |l: &LayerSpec| setting(l.width, l.height, l.fps, l.bitrate_bps);
    // Once the lowest camera layer is on (or with no camera), courseware takes its faster
    // rungs, before any higher camera layer.
    let faster_courseware = |steps: &mut Vec<Step>| {
        let mut set = vec![None; n];
        if let Some(l) = layers.first() {
            set[0] = Some(full(l));
        }
        for r in cw_rungs.iter().skip(1) {
            push(
                steps,
                Step {
                    layers: set.clone(),
                    courseware: Some(*r),
                },
            );
        }
        cw_rungs.last().copied()
    };
    if n == 0 {
        faster_courseware(&mut steps);
    }
    for top in 0..n {
        let l = &layers[top];
        let mut rungs = vec![];
        if n == 1 {
            rungs.push(setting(l.width / 4, l.height / 4, l.fps / 2, l.bitrate_bps));
            rungs.push(setting(l.width / 2, l.height / 2, l.fps / 2, l.bitrate_bps));
            rungs.push(setting(l.width / 2, l.height / 2, l.fps, l.bitrate_bps));
        }
        rungs.push(setting(l.width, l.height, l.fps / 2, l.bitrate_bps));
        rungs.push(full(l));
        for r in rungs {
            let mut s: Vec<Option<LayerSetting>> =
                layers[..top].iter().map(|l| Some(full(l))).collect();
            s.push(Some(r));
            s.resize(n, None);
            push(
                &mut steps,
                Step {
                    layers: s,
                    courseware: cw,
                },
            );
        }
        if top == 0 {
            cw = faster_courseware(&mut steps);
        }
    }
    // A link with room to spare gets a sharper top layer rather than idle capacity (or padding).
    if let Some(l) = layers.last() {
        let mut boosted: Vec<Option<LayerSetting>> = layers.iter().map(|l| Some(full(l))).collect();
        let top = full(l);
        boosted[n - 1] = Some(LayerSetting {
            bitrate_bps: ((top.bitrate_bps as f64 * TOP_BOOST) as u32).min(MAX_BOOSTED_BPS),
            ..top
        });
        push(
            &mut steps,
            Step {
                layers: boosted,
                courseware: cw,
            },
        );
    }
    steps
}

/// How many layers (camera or courseware) are off in `from` and on in `to`.
fn switched_on(from: &Step, to: &Step) -> usize {
    let cams = from
        .layers
        .iter()
        .zip(&to.layers)
        .filter(|(a, b)| a.is_none() && b.is_some())
        .count();
    cams + (from.courseware.is_none() && to.courseware.is_some()) as usize
}

/// What the estimate must be for a budget of `video_bps` (the inverse of [`Ladder::budget`]
/// without a cap): the voice and the headroom added.
pub fn gross(video_bps: u64) -> u64 {
    ((video_bps + AUDIO_RESERVE_BPS) as f64 / HEADROOM) as u64
}

/// Picks the step for the current estimate, with hysteresis.
#[derive(Debug, Clone)]
pub struct Ladder {
    steps: Vec<Step>,
    current: usize,
    cap_bps: Option<u64>,
    /// Since when the budget has allowed the next step.
    up_since: Option<Instant>,
    last_down: Option<Instant>,
    last_up: Option<Instant>,
    /// Since when a fall right after a rise has been held.
    fall_since: Option<Instant>,
}

impl Ladder {
    /// Starts at the highest step the first estimate allows (the start-up probe's result).
    pub fn new(steps: Vec<Step>, estimate_bps: u64, cap_bps: Option<u64>) -> Ladder {
        let mut l = Ladder {
            steps,
            current: 0,
            cap_bps,
            up_since: None,
            last_down: None,
            last_up: None,
            fall_since: None,
        };
        l.current = l.fit(estimate_bps);
        l
    }

    /// Video's share of an estimate: capped, headroom taken, the voice served first.
    pub fn budget(&self, estimate_bps: u64) -> u64 {
        let e = self.cap_bps.map_or(estimate_bps, |c| estimate_bps.min(c));
        ((e as f64 * HEADROOM) as u64).saturating_sub(AUDIO_RESERVE_BPS)
    }

    fn fit(&self, estimate_bps: u64) -> usize {
        let b = self.budget(estimate_bps);
        self.steps
            .iter()
            .rposition(|s| s.total_bps() <= b)
            .unwrap_or(0)
    }

    pub fn current(&self) -> &Step {
        &self.steps[self.current]
    }

    pub fn index(&self) -> usize {
        self.current
    }

    /// Since when a fall right after a rise has been held, while it is (see
    /// [`Ladder::on_reading`]): the caller probes to learn whether the link really fell.
    pub fn holding_fall(&self) -> Option<Instant> {
        self.fall_since
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Whether the ladder is on its top step.
    pub fn on_top(&self) -> bool {
        self.current + 1 >= self.steps.len()
    }

    /// Feeds an estimate; returns the new step when it changed. A fall is followed at once.
    pub fn on_estimate(&mut self, estimate_bps: u64, now: Instant) -> Option<&Step> {
        self.on_reading(estimate_bps, true, now)
    }

    /// As [`Ladder::on_estimate`], knowing whether the round trip shows a queue on the link.
    /// A fall that begins within [`AFTER_UP`] of a rise, with no queue, is held for
    /// [`FALL_HOLD`]: the step just switched on starts with a keyframe, and the controller
    /// answers that burst by cutting its estimate under the rate it measured before the rise
    /// (courseware switched on at 1 fps on a 400 kbit/s link: the estimate fell from 281 to
    /// 154 kbit/s, the slides paused, and the hold after a fall kept them off for 4 s). A real
    /// fall of the link builds a queue, which ends the hold at once.
    pub fn on_reading(&mut self, estimate_bps: u64, queueing: bool, now: Instant) -> Option<&Step> {
        let fit = self.fit(estimate_bps);
        if fit < self.current {
            let since = *self.fall_since.get_or_insert(now);
            let after_rise = self
                .last_up
                .is_some_and(|up| since.saturating_duration_since(up) < AFTER_UP);
            if after_rise && !queueing && now.saturating_duration_since(since) < FALL_HOLD {
                self.up_since = None;
                return None;
            }
            self.current = fit;
            self.up_since = None;
            self.last_down = Some(now);
            self.last_up = None;
            self.fall_since = None;
            return Some(&self.steps[self.current]);
        }
        self.fall_since = None;
        let next = self.steps.get(self.current + 1)?;
        let room = self.budget(estimate_bps) as f64 >= next.total_bps() as f64 * UP_MARGIN;
        if !room {
            self.up_since = None;
            return None;
        }
        let since = *self.up_since.get_or_insert(now);
        let held = self
            .last_down
            .is_none_or(|d| now.saturating_duration_since(d) >= HOLD_AFTER_DOWN);
        if now.saturating_duration_since(since) >= UP_DWELL && held {
            // As far up as the estimate allows with margin: after an outage the estimate
            // has already been proven by the time the dwell ends.
            let b = self.budget(estimate_bps) as f64;
            let far = self
                .steps
                .iter()
                .rposition(|s| b >= s.total_bps() as f64 * UP_MARGIN)
                .unwrap_or(self.current + 1)
                .max(self.current + 1);
            // At most one layer switched on per rise: each starts with a keyframe, and a burst
            // of them after a pause overfills the link while the acknowledged rate, which a
            // congestion cut falls back to, is still the audio's.
            let here = &self.steps[self.current];
            let to = (self.current + 1..=far)
                .take_while(|&i| switched_on(here, &self.steps[i]) <= 1)
                .last()
                .unwrap_or(self.current + 1);
            self.current = to;
            self.up_since = None;
            self.last_up = Some(now);
            return Some(&self.steps[self.current]);
        }
        None
    }

    /// Rates for the congestion controller, total on the wire: `minimum` keeps the link
    /// filled (padding while media falls short, so the estimate can prove the steps above
    /// before video takes them): below the top step toward everything the rise to the top
    /// asks, on it no further than the step itself; `desired` is what the rise to the top step
    /// needs, margin included (capped). Without the margin, probes stopped at the top step's
    /// own rate, short of what the rise to it asks, and only the controller's slow additive
    /// growth got there: 5-8 s on a 4 Mbit/s link that had come back. The controller pads no
    /// further than its own estimate, so below the top the wire follows the estimate; filling
    /// only toward the next step held a returned 4 Mbit/s link at 1.3-1.6 Mbit/s on the wire
    /// while the estimate said 2.2-2.9, one step's dwell after another.
    pub fn probe_rates(&self) -> (u64, u64) {
        // What the rise to a step asks of the estimate; a kbit/s over, so that rounding never
        // leaves a probe that got there a hair short.
        let rise = |video: u64| gross((video as f64 * UP_MARGIN) as u64) + 1_000;
        let top = self.steps.last().map_or(0, Step::total_bps);
        let desired = self.cap_bps.map_or(rise(top), |c| rise(top).min(c));
        let minimum = if self.on_top() { gross(top) } else { desired };
        (minimum.min(desired), desired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{camera_layers, courseware_layer, Role};

    fn teacher() -> Vec<Step> {
        build(&camera_layers(Role::Teacher, 1280, 720, 30, true), None)
    }

    #[test]
    fn the_last_rung_sharpens_the_top_layer() {
        let s = teacher();
        let (last, full) = (&s[s.len() - 1], &s[s.len() - 2]);
        assert_eq!(last.layers.len(), 3);
        assert_eq!(last.layers[..2], full.layers[..2]);
        let (b, f) = (last.layers[2].unwrap(), full.layers[2].unwrap());
        assert_eq!((b.width, b.height, b.fps), (f.width, f.height, f.fps));
        assert_eq!(b.bitrate_bps, (f.bitrate_bps as f64 * TOP_BOOST) as u32);
    }

    #[test]
    fn steps_rise_and_start_paused() {
        let s = teacher();
        assert!(s[0].is_paused());
        assert!(s.windows(2).all(|w| w[0].total_bps() < w[1].total_bps()));
        let last = s.last().unwrap();
        assert!(last.layers.iter().all(|l| l.is_some_and(|l| l.fps == 30)));
        assert_eq!(last.layers[2].unwrap().width, 1280);
        // The top layer's first rung halves its frame rate, not its size.
        let first_with_h = s.iter().find(|st| st.layers[2].is_some()).unwrap();
        assert_eq!(first_with_h.layers[2].unwrap().fps, 15);
        assert_eq!(first_with_h.layers[2].unwrap().width, 1280);
    }

    #[test]
    fn tiny_layers_end_at_full_frame_rate() {
        // Every rung of 80x44..320x180 at 15 fps costs the floor rate.
        let s = build(&camera_layers(Role::Teacher, 320, 180, 15, true), None);
        let top = s.last().unwrap();
        assert!(
            top.layers.iter().all(|l| l.is_some_and(|l| l.fps == 15)),
            "{top:?}"
        );
        assert!(s.windows(2).all(|w| w[0].total_bps() < w[1].total_bps()));
    }

    #[test]
    fn single_layer_steps_through_smaller_sizes() {
        let s = build(&camera_layers(Role::Teacher, 640, 360, 30, false), None);
        let sizes: Vec<_> = s[1..]
            .iter()
            .map(|st| st.layers[0].unwrap().width)
            .collect();
        assert!(sizes[0] <= 320, "{sizes:?}");
        assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "{sizes:?}");
        assert_eq!(sizes.last(), Some(&640));
    }

    /// 4 → 1 → 4 Mbit/s on a virtual clock, one estimate every 100 ms.
    #[test]
    fn drop_is_immediate_rise_waits_for_hold_and_dwell() {
        let t0 = Instant::now();
        let mut l = Ladder::new(teacher(), 4_000_000, None);
        let top = l.index();
        assert!(l.current().total_bps() <= l.budget(4_000_000));
        assert_eq!(top, l.steps().len() - 1, "4 Mbit/s carries every layer");

        let changed = l.on_estimate(1_000_000, t0).cloned();
        let low = l.index();
        assert!(changed.is_some() && low < top);
        assert!(l.current().total_bps() <= l.budget(1_000_000));
        assert!(l.current().total_bps() > 0, "1 Mbit/s still carries video");

        // Recovery: no change before the hold, then one step per dwell.
        let mut t = t0;
        let mut changes = vec![];
        for i in 1..=200 {
            t = t0 + Duration::from_millis(100 * i);
            if l.on_estimate(4_000_000, t).is_some() {
                changes.push((t - t0, l.index()));
            }
        }
        assert!(changes[0].0 >= HOLD_AFTER_DOWN, "{changes:?}");
        assert!(
            changes.windows(2).all(|w| w[1].0 - w[0].0 >= UP_DWELL),
            "{changes:?}"
        );
        assert_eq!(l.index(), top, "back at the top by {t:?}");
        // A steady 4 Mbit/s is proven by the end of the hold: one jump to the top.
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(
            changes[0].0 <= HOLD_AFTER_DOWN + Duration::from_millis(100),
            "{changes:?}"
        );
    }

    /// An estimate that ramps up slowly is followed one proven step at a time.
    #[test]
    fn a_slow_ramp_is_followed_step_by_step() {
        let t0 = Instant::now();
        let mut l = Ladder::new(teacher(), 300_000, None);
        let start = l.index();
        let mut t = t0;
        let mut e = 300_000u64;
        while t < t0 + Duration::from_secs(60) {
            t += Duration::from_millis(100);
            e = (e + 5_000).min(4_000_000); // +50 kbit/s per second
            l.on_estimate(e, t);
            assert!(
                l.budget(e) as f64 >= l.current().total_bps() as f64 * UP_MARGIN
                    || l.index() == start,
                "above the estimate's margin at {e}"
            );
        }
        assert!(
            l.index() > start + 2,
            "climbed from {start} to {}",
            l.index()
        );
    }

    #[test]
    fn below_the_floor_video_pauses_and_returns() {
        let t0 = Instant::now();
        let mut l = Ladder::new(teacher(), 2_000_000, None);
        l.on_estimate(60_000, t0);
        assert!(l.current().is_paused(), "audio only at 60 kbit/s");
        let (min, desired) = l.probe_rates();
        assert!(
            min > 60_000 && min <= desired,
            "probes toward the first step: {min}"
        );
        let mut t = t0;
        while l.current().is_paused() && t < t0 + Duration::from_secs(30) {
            t += Duration::from_millis(100);
            l.on_estimate(400_000, t);
        }
        assert!(!l.current().is_paused(), "video back once the link allows");
        assert!(t - t0 >= HOLD_AFTER_DOWN);
    }

    /// Back from a pause on a link that returned whole: one layer switched on per rise.
    #[test]
    fn layers_come_back_one_at_a_time_after_a_pause() {
        let t0 = Instant::now();
        let mut l = Ladder::new(with_slides(), 5_000_000, None);
        let top = l.index();
        assert_eq!(top, l.steps().len() - 1);
        l.on_estimate(60_000, t0);
        assert!(l.current().is_paused());
        let mut prev = l.current().clone();
        let mut rises = vec![];
        let mut t = t0;
        while l.index() < top && t < t0 + Duration::from_secs(30) {
            t += Duration::from_millis(100);
            if let Some(step) = l.on_estimate(5_000_000, t) {
                assert!(switched_on(&prev, step) <= 1, "{prev:?} -> {step:?}");
                prev = step.clone();
                rises.push(t - t0);
            }
        }
        assert_eq!(l.index(), top, "back at the top: {rises:?}");
        // Courseware, then the three camera layers: four rises, one dwell apart.
        assert_eq!(rises.len(), 4, "{rises:?}");
        assert!(
            *rises.last().unwrap() <= HOLD_AFTER_DOWN + UP_DWELL * 3 + Duration::from_millis(400),
            "{rises:?}"
        );
    }

    #[test]
    fn a_dip_shorter_than_the_dwell_does_not_rise() {
        let t0 = Instant::now();
        let mut l = Ladder::new(teacher(), 500_000, None);
        let start = l.index();
        let next = l.steps()[start + 1].total_bps();
        let enough = ((next as f64 * UP_MARGIN) as u64 + AUDIO_RESERVE_BPS) as f64 / HEADROOM;
        let enough = enough as u64 + 1000;
        // Alternating above and below the margin never completes a dwell.
        for i in 0..100 {
            let e = if i % 10 < 9 { enough } else { 500_000 };
            l.on_estimate(e, t0 + Duration::from_millis(100 * i));
        }
        assert!(l.index() <= start + 1, "only full dwells count");
        let mut l2 = Ladder::new(teacher(), 500_000, None);
        for i in 0..19 {
            l2.on_estimate(enough, t0 + Duration::from_millis(100 * i));
        }
        assert_eq!(l2.index(), start, "1.8 s is short of the dwell");
        l2.on_estimate(enough, t0 + UP_DWELL);
        assert_eq!(l2.index(), start + 1);
    }

    fn with_slides() -> Vec<Step> {
        build(
            &camera_layers(Role::Teacher, 1280, 720, 30, true),
            Some(&courseware_layer(1280, 720, 5)),
        )
    }

    #[test]
    fn courseware_keeps_its_size_and_gives_up_frame_rate_first() {
        let s = with_slides();
        assert!(s[0].is_paused());
        assert!(s.windows(2).all(|w| w[0].total_bps() < w[1].total_bps()));
        // Every step after the pause shows the courseware at full size.
        for st in &s[1..] {
            let cw = st
                .courseware
                .expect("courseware in every step but the pause");
            assert_eq!((cw.width, cw.height), (1280, 720), "{st:?}");
        }
        // The slowest courseware rung comes before any camera picture…
        assert!(s[1].layers.iter().all(Option::is_none));
        assert_eq!(s[1].courseware.unwrap().fps, 1);
        // …and going down from the top, the courseware's frame rate falls only once every
        // camera layer but the lowest is off, and stays above zero while the camera has any.
        let top = s.last().unwrap();
        assert_eq!(top.courseware.unwrap().fps, 5);
        for st in &s[1..] {
            let cw_fps = st.courseware.unwrap().fps;
            let cams = st.layers.iter().flatten().count();
            if cams > 1 {
                assert_eq!(cw_fps, 5, "{st:?}");
            }
        }
        // Dropping from the top to a link with room for slides alone keeps them readable.
        let l = Ladder::new(s.clone(), 200_000, None);
        let cw = l.current().courseware.expect("slides on a 200 kbit/s link");
        assert_eq!(cw.width, 1280);
        assert!(l.current().layers.iter().all(Option::is_none));
    }

    #[test]
    fn courseware_alone_steps_through_frame_rates() {
        let s = build(&[], Some(&courseware_layer(1280, 720, 5)));
        let fps: Vec<u32> = s[1..].iter().map(|st| st.courseware.unwrap().fps).collect();
        assert_eq!(fps, vec![1, 2, 5]);
        assert!(s.windows(2).all(|w| w[0].total_bps() < w[1].total_bps()));
    }

    /// Right after a rise, a fall with no queue on the link waits `FALL_HOLD`; with a queue,
    /// or once the rise is older than `AFTER_UP`, the ladder follows at once.
    #[test]
    fn a_fall_right_after_a_rise_is_held_unless_the_link_queues() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let risen = || {
            let mut l = Ladder::new(teacher(), 300_000, None);
            let start = l.index();
            let mut ms = 0;
            while l.index() == start {
                ms += 100;
                l.on_reading(600_000, false, at(ms));
                assert!(ms < 10_000, "never rose");
            }
            (l, start, ms)
        };
        // Held, and followed once the hold is over.
        let (mut l, start, up) = risen();
        assert_eq!(l.holding_fall(), None);
        assert!(l.on_reading(250_000, false, at(up + 500)).is_none());
        assert_eq!(l.holding_fall(), Some(at(up + 500)), "the caller probes");
        assert!(l.on_reading(250_000, false, at(up + 1900)).is_none());
        assert!(l.on_reading(250_000, false, at(up + 2000)).is_some());
        assert_eq!(l.holding_fall(), None);
        assert!(l.index() <= start);
        // The estimate comes back within the hold: nothing changed.
        let (mut l, _, up) = risen();
        let here = l.index();
        assert!(l.on_reading(250_000, false, at(up + 500)).is_none());
        assert!(l.on_reading(600_000, false, at(up + 900)).is_none());
        assert_eq!(l.holding_fall(), None);
        assert!(
            l.on_reading(250_000, false, at(up + 1600)).is_none(),
            "a new fall, a new hold"
        );
        assert_eq!(l.index(), here);
        // A queue on the link: at once.
        let (mut l, start, up) = risen();
        assert!(l.on_reading(250_000, true, at(up + 500)).is_some());
        assert!(l.index() <= start);
        assert_eq!(l.holding_fall(), None);
        // Long after the rise: at once; and `on_estimate` never holds.
        let (mut l, _, up) = risen();
        assert!(l.on_reading(250_000, false, at(up + 3500)).is_some());
        assert_eq!(l.holding_fall(), None);
        let (mut l, _, up) = risen();
        assert!(l.on_estimate(250_000, at(up + 500)).is_some());
    }

    /// A probe that reaches the desired rate proves the rise to the top step.
    #[test]
    fn probes_reach_what_the_top_step_needs() {
        let t0 = Instant::now();
        let mut l = Ladder::new(teacher(), 1_000_000, None);
        let (_, desired) = l.probe_rates();
        let mut t = t0;
        while t < t0 + Duration::from_secs(20) {
            t += Duration::from_millis(100);
            l.on_estimate(desired, t);
        }
        assert_eq!(l.index(), l.steps().len() - 1, "on the top step");
        // Below the top, padding fills toward everything the rise to the top asks (so that
        // reached, it proves every rise on the way).
        for i in 0..l.steps().len() - 1 {
            let mut below = Ladder::new(teacher(), 1_000_000, None);
            below.current = i;
            assert_eq!(below.probe_rates(), (desired, desired), "step {i}");
            let next = below.steps()[i + 1].total_bps() as f64;
            assert!(below.budget(desired) as f64 >= next * UP_MARGIN, "step {i}");
        }
        // ...and on the top step, padding fills no further than the step itself.
        let (min, _) = l.probe_rates();
        let gross = ((l.current().total_bps() + AUDIO_RESERVE_BPS) as f64 / HEADROOM) as u64;
        assert_eq!(min, gross);
    }

    #[test]
    fn cap_limits_steps_and_probing() {
        let l = Ladder::new(teacher(), 10_000_000, Some(800_000));
        assert!(l.current().total_bps() <= l.budget(800_000));
        assert!(l.index() < l.steps().len() - 1);
        assert!(l.probe_rates().1 <= 800_000);
    }
}
