//! Sharing one subscriber's bandwidth estimate among the tracks of the lesson.
//!
//! The teacher's voice comes first and is never paused; video tracks follow in the room's
//! priority order (by default courseware, then the teacher's camera). Every video track first
//! gets its lowest layer, in priority order, so a classroom sees something of everything that
//! fits; then the budget left raises tracks one by one, the most important to its best layer
//! first (a readable blackboard beats a sharp face). What does not fit is paused.
//!
//! [`Allocator`] adds the time behaviour: it goes down as soon as the estimate falls well short
//! of the current choice, and after a short hold when it falls just short (time for a probe at
//! the current rate to confirm the dip or refute it, see [`Decision::confirming`]; right after a
//! move up, a deep fall gets the same hold, see [`Tuning::after_up`]); it goes up
//! only when the estimate clears the next choice by a margin and the current one has been held
//! for a while, so it does not oscillate. A lesson
//! video that is flowing is not paused at once when the estimate dips under its lowest layer:
//! it stays on that layer for a while first (see [`Tuning::pause_after`]).

use std::time::{Duration, Instant};

use crate::program::Slot;

/// What a track offers the allocator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackOffer {
    pub slot: Slot,
    /// Bitrate of each rung of the slot's ladder, lowest first: its simulcast layers and the
    /// reduced frame rates between them (see `program::SlotSource::ladder`); `None` for a rung
    /// whose layer is not flowing.
    pub layers_bps: Vec<Option<u64>>,
    /// Highest rung this subscriber may get (e.g. `?layer=mid`).
    pub max_layer: usize,
}

impl TrackOffer {
    fn best_within(&self, budget: u64, above: Option<usize>) -> Option<(usize, u64)> {
        let start = above.map_or(0, |a| a + 1);
        (start..self.layers_bps.len().min(self.max_layer + 1))
            .rev()
            .find_map(|i| self.layers_bps[i].filter(|b| *b <= budget).map(|b| (i, b)))
    }

    fn lowest(&self) -> Option<(usize, u64)> {
        (0..self.layers_bps.len().min(self.max_layer + 1))
            .find_map(|i| self.layers_bps[i].map(|b| (i, b)))
    }

    fn rate(&self, layer: Option<usize>) -> u64 {
        layer
            .and_then(|i| self.layers_bps.get(i).copied().flatten())
            .unwrap_or(0)
    }
}

/// Which video comes first when the link is short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Courseware before the teacher's camera: the usual lesson.
    #[default]
    Lecture,
    /// The teacher's camera before courseware: music, PE, experiments.
    Camera,
}

impl Policy {
    /// Priority of a slot, lower first: the teacher's voice, the on-stage classroom's voice,
    /// then the lesson's videos in the policy's order, the on-stage classroom, the tiles.
    pub fn rank(self, slot: Slot) -> usize {
        match (self, slot) {
            (_, Slot::TeacherAudio) => 0,
            (_, Slot::StageAudio(i)) => 1 + i as usize,
            (Policy::Lecture, Slot::Courseware) | (Policy::Camera, Slot::TeacherCamera) => 10,
            (Policy::Lecture, Slot::TeacherCamera) | (Policy::Camera, Slot::Courseware) => 11,
            (_, Slot::StageVideo(i)) => 20 + i as usize,
            (_, Slot::Tile(i)) => 40 + i as usize,
        }
    }
}

/// A layer (index) per track, `None` when paused, in the order of the offers.
pub type Choice = Vec<(Slot, Option<usize>)>;

fn rank(policy: Policy, slot: Slot) -> usize {
    policy.rank(slot)
}

/// The best choice that fits `budget` bits per second.
pub fn allocate(budget: u64, tracks: &[TrackOffer], policy: Policy) -> Choice {
    let mut order: Vec<usize> = (0..tracks.len()).collect();
    order.sort_by_key(|&i| rank(policy, tracks[i].slot));
    let mut choice: Vec<Option<usize>> = vec![None; tracks.len()];
    let mut left = budget;
    // Audio: always, whatever the budget says.
    for &i in &order {
        if tracks[i].slot.is_audio() {
            if let Some((l, b)) = tracks[i].lowest() {
                choice[i] = Some(l);
                left = left.saturating_sub(b);
            }
        }
    }
    // Every video at its lowest layer, most important first.
    for &i in order.iter().filter(|&&i| !tracks[i].slot.is_audio()) {
        if let Some((l, b)) = tracks[i].lowest() {
            if b <= left {
                choice[i] = Some(l);
                left -= b;
            }
        }
    }
    // Then raise them, most important first, each as far as it goes.
    for &i in order.iter().filter(|&&i| !tracks[i].slot.is_audio()) {
        let Some(cur) = choice[i] else { continue };
        let have = tracks[i].rate(Some(cur));
        if let Some((l, b)) = tracks[i].best_within(left + have, Some(cur)) {
            left = left + have - b;
            choice[i] = Some(l);
        }
    }
    tracks.iter().map(|t| t.slot).zip(choice).collect()
}

/// Total bitrate of a choice.
pub fn total(tracks: &[TrackOffer], choice: &Choice) -> u64 {
    tracks
        .iter()
        .zip(choice)
        .map(|(t, (_, l))| t.rate(*l))
        .sum()
}

/// The choice one step better than `current`: the next layer (or resumption) of the most
/// important track that can still improve. This is what probing should make room for.
pub fn next_step(tracks: &[TrackOffer], current: &Choice, policy: Policy) -> Option<Choice> {
    let mut order: Vec<usize> = (0..tracks.len()).collect();
    order.sort_by_key(|&i| rank(policy, tracks[i].slot));
    for i in order {
        let t = &tracks[i];
        let cur = current.get(i).and_then(|c| c.1);
        let next = (cur.map_or(0, |c| c + 1)..t.layers_bps.len().min(t.max_layer + 1))
            .find(|&l| t.layers_bps[l].is_some());
        if let Some(n) = next {
            let mut c = current.clone();
            c[i].1 = Some(n);
            return Some(c);
        }
    }
    None
}

/// Where to aim the estimator's probes: past the next better choice by `aim`, and while a
/// better choice exists at least twice the latest estimate (never past the best choice by
/// `aim`). Temporal steps are about 1.5x apart: aimed only at the next one, a link that came
/// back from a low period was climbed a step per probe, 8 s from m at half rate to the top
/// layer on a 5 Mbit/s link. libwebrtc's probes in the same state go to twice the estimate.
pub fn probe_goal(decision: &Decision, latest_bps: Option<u64>, aim: f64) -> u64 {
    let Some(next) = decision.probe_bps else {
        return decision.allocated_bps;
    };
    let step = (next as f64 * aim) as u64;
    let ceiling = (decision.desired_bps as f64 * aim) as u64;
    latest_bps.map_or(step, |e| step.max(e.saturating_mul(2).min(ceiling)))
}

#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// The estimate must exceed a better choice's rate by this factor to move up.
    pub up_margin: f64,
    /// A choice is held at least this long before moving up again.
    pub min_dwell: Duration,
    /// Going down: at once when the current choice exceeds the estimate by this factor in
    /// the latest two readings, the second no higher than the first by more than
    /// [`HELD_FALL`]. After a capacity drop GCC's readings fall or stay; a spurious cut (one
    /// delay spike from a busy PC) is often followed by a rising reading as the estimate
    /// recovers or a probe lifts it, and is then held like a shallow dip instead...
    pub down_now: f64,
    /// ... or when it exceeds the estimate at all for this long while the estimate goes on
    /// falling (the link's queue still building) ...
    pub down_after: Duration,
    /// ... or for this long when the estimate has stopped falling. A single delay spike (a
    /// busy PC, a Wi-Fi hiccup, a keyframe burst) makes GCC cut its estimate once to 85 % of
    /// the rate the link was delivering, just under the layer it was carrying fine, and then
    /// hold it; meanwhile the caller probes at the current rate ([`Decision::confirming`]),
    /// which lifts the estimate back over the current choice when the link still carries it.
    pub probe_hold: Duration,
    /// For this long after a move up, even a deep dip is held like a shallow one (for
    /// [`Tuning::probe_hold`], while a probe at the current rate checks it). Right after a move
    /// up the rate GCC measured as delivered is still the old, lower one, so a single delay
    /// spike (the new layer's keyframe, a busy PC) cuts the estimate to 85 % of that: far
    /// under the layer the probe had just proved, on a link that carries it.
    pub after_up: Duration,
    /// The most important flowing lesson video (courseware or the teacher's camera, by policy)
    /// is paused only after the estimate has been short of its lowest layer this long; until
    /// then it stays on that layer. On lossy rural links the estimate dips for seconds at a time, and a paused video
    /// leaves only the voice on the link, too little traffic for the estimate to recover from:
    /// the picture then stays frozen long after the dip.
    pub pause_after: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            up_margin: 1.15,
            min_dwell: Duration::from_secs(4),
            down_now: 1.25,
            down_after: Duration::from_millis(400),
            probe_hold: Duration::from_secs(1),
            after_up: Duration::from_secs(3),
            pause_after: Duration::from_secs(5),
        }
    }
}

/// A reading at most this much above the one before still counts as the fall holding.
pub const HELD_FALL: f64 = 1.03;

/// What the allocator decided at one update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub choice: Choice,
    /// Rate of the current choice.
    pub allocated_bps: u64,
    /// Rate of the next better choice, to probe for (None: nothing better exists).
    pub probe_bps: Option<u64>,
    /// Rate of everything at its best, the eventual goal.
    pub desired_bps: u64,
    pub changed: bool,
    /// The estimate is just short of the current choice, which is held for now (see
    /// [`Tuning::down_after`]): the caller should probe at the current rate.
    pub confirming: bool,
}

/// The bandwidth estimate as the allocator reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// What to share out and climb on: a rise counts here only once it has held.
    pub share_bps: u64,
    /// The estimator's latest word. The current choice is kept while it fits this: staying
    /// needs less proof than climbing, and a probe that refutes a dip shows here first.
    pub latest_bps: u64,
    /// The estimator's word before the latest, when readings come often enough to compare
    /// (see [`Tuning::down_now`]).
    pub previous_bps: Option<u64>,
}

impl Reading {
    /// One figure for both (an estimate without a separate latest reading).
    pub fn steady(bps: u64) -> Self {
        Reading {
            share_bps: bps,
            latest_bps: bps,
            previous_bps: None,
        }
    }
}

/// Per-subscriber allocation over time.
#[derive(Debug, Clone)]
pub struct Allocator {
    policy: Policy,
    tuning: Tuning,
    current: Option<Choice>,
    last_change: Option<Instant>,
    /// When the choice last moved up (see [`Tuning::after_up`]).
    last_up: Option<Instant>,
    /// Since when the estimate has been short of the current choice, and its reading then.
    over_since: Option<(Instant, u64)>,
    /// Since when the estimate has wanted a flowing lesson video paused.
    short_since: Option<Instant>,
    pauses: u64,
    changes: u64,
    /// Whether the last decision held a dip, and how the dips ended.
    holding: bool,
    dips_refuted: u64,
    dips_confirmed: u64,
}

impl Allocator {
    pub fn new(policy: Policy, tuning: Tuning) -> Self {
        Allocator {
            policy,
            tuning,
            current: None,
            last_change: None,
            last_up: None,
            over_since: None,
            short_since: None,
            pauses: 0,
            changes: 0,
            holding: false,
            dips_refuted: 0,
            dips_confirmed: 0,
        }
    }

    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    pub fn current(&self) -> Option<&Choice> {
        self.current.as_ref()
    }

    /// How many times a video track was paused for lack of bandwidth.
    pub fn pauses(&self) -> u64 {
        self.pauses
    }

    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Dips held for a probe (just under the current choice, or deep right after a move up)
    /// that ended with the choice kept (the estimate came back) and with it given up.
    pub fn dips(&self) -> (u64, u64) {
        (self.dips_refuted, self.dips_confirmed)
    }

    pub fn update(&mut self, now: Instant, estimate_bps: u64, tracks: &[TrackOffer]) -> Decision {
        self.update_reading(now, Reading::steady(estimate_bps), tracks)
    }

    pub fn update_reading(
        &mut self,
        now: Instant,
        reading: Reading,
        tracks: &[TrackOffer],
    ) -> Decision {
        let estimate_bps = reading.share_bps;
        // The latest word never reads lower than the shared figure.
        let keep_bps = reading.latest_bps.max(estimate_bps);
        let fits_now = allocate(estimate_bps, tracks, self.policy);
        let with_margin = allocate(
            (estimate_bps as f64 / self.tuning.up_margin) as u64,
            tracks,
            self.policy,
        );
        // Held over the estimate (a dip being checked), and whether to probe meanwhile.
        let mut holding = false;
        let mut confirming = false;
        let next = match &self.current {
            // First decision, or the tracks changed shape: start from what fits.
            None => fits_now,
            Some(cur) if !same_tracks(cur, &fits_now) => {
                self.last_up = None;
                fits_now
            }
            Some(cur) => {
                let cur_still_valid = tracks.iter().zip(cur).all(|(t, (_, l))| {
                    l.is_none_or(|l| t.layers_bps.get(l).copied().flatten().is_some())
                });
                let cur_rate = total(tracks, cur);
                let cur_capped = cur
                    .iter()
                    .zip(tracks)
                    .all(|((_, l), t)| l.is_none_or(|l| l <= t.max_layer));
                let over = cur_rate > keep_bps;
                if over {
                    self.over_since.get_or_insert((now, keep_bps));
                } else {
                    self.over_since = None;
                }
                let far_under = |bps: u64| cur_rate as f64 > bps as f64 * self.tuning.down_now;
                let deep = far_under(keep_bps);
                let far_over = deep
                    && reading.previous_bps.is_none_or(|prev| {
                        far_under(prev) && reading.latest_bps as f64 <= prev as f64 * HELD_FALL
                    });
                // The first deep reading waits for the next one with no probe: after a real
                // drop the link's queue is already growing, and a probe's burst would sit in
                // it ahead of the teacher's voice. It still counts as holding a dip.
                let first_deep = deep && reading.previous_bps.is_some_and(|prev| !far_under(prev));
                let long_over = self.over_since.is_some_and(|(t, then)| {
                    let held = now.saturating_duration_since(t);
                    // Within 3 % of where it was counts as stopped: readings jitter.
                    let falling = (keep_bps as f64) < then as f64 * 0.97;
                    held >= self.tuning.probe_hold || (falling && held >= self.tuning.down_after)
                });
                // The fall began soon after the move up (its hold runs on past `after_up`).
                let just_up = self
                    .over_since
                    .zip(self.last_up)
                    .is_some_and(|((t, _), up)| {
                        t.saturating_duration_since(up) < self.tuning.after_up
                    });
                if !cur_still_valid || (far_over && !just_up) || long_over || !cur_capped {
                    // Down (or a layer vanished).
                    self.over_since = None;
                    self.last_up = None;
                    fits_now
                } else if over {
                    holding = true;
                    confirming = !first_deep;
                    cur.clone()
                } else if better(&with_margin, cur)
                    && self
                        .last_change
                        .is_none_or(|t| now.saturating_duration_since(t) >= self.tuning.min_dwell)
                {
                    self.last_up = Some(now);
                    with_margin
                } else {
                    cur.clone()
                }
            }
        };
        let next = self.hold_lesson_videos(now, tracks, next);
        let changed = self.current.as_ref() != Some(&next);
        if changed {
            if let Some(cur) = &self.current {
                self.pauses += next
                    .iter()
                    .zip(cur)
                    .filter(|((s, n), (_, c))| !s.is_audio() && n.is_none() && c.is_some())
                    .count() as u64;
            }
            self.changes += 1;
            self.last_change = Some(now);
        }
        let allocated_bps = total(tracks, &next);
        let probe_bps = next_step(tracks, &next, self.policy).map(|c| total(tracks, &c));
        let best: Choice = tracks
            .iter()
            .map(|t| (t.slot, t.best_within(u64::MAX, None).map(|x| x.0)))
            .collect();
        self.current = Some(next.clone());
        let holding = holding && !changed;
        let confirming = confirming && holding;
        if self.holding && !holding {
            if changed {
                self.dips_confirmed += 1;
            } else {
                self.dips_refuted += 1;
            }
        }
        self.holding = holding;
        Decision {
            choice: next,
            allocated_bps,
            probe_bps,
            desired_bps: total(tracks, &best),
            changed,
            confirming,
        }
    }
}

impl Allocator {
    /// Keeps flowing lesson videos on their lowest layer instead of pausing them, until the
    /// estimate has been short for [`Tuning::pause_after`].
    fn hold_lesson_videos(
        &mut self,
        now: Instant,
        tracks: &[TrackOffer],
        mut next: Choice,
    ) -> Choice {
        let Some(cur) = self.current.as_ref().filter(|c| same_tracks(c, &next)) else {
            self.short_since = None;
            return next;
        };
        // The most important lesson video being paused: holding it alone is enough to keep the
        // picture and the estimate alive.
        let pausing = (0..tracks.len())
            .filter(|&i| {
                matches!(tracks[i].slot, Slot::TeacherCamera | Slot::Courseware)
                    && cur[i].1.is_some()
                    && next[i].1.is_none()
            })
            .filter_map(|i| tracks[i].lowest().map(|(l, _)| (i, l)))
            .min_by_key(|&(i, _)| rank(self.policy, tracks[i].slot));
        let Some((i, lowest)) = pausing else {
            self.short_since = None;
            return next;
        };
        let since = *self.short_since.get_or_insert(now);
        if now.saturating_duration_since(since) < self.tuning.pause_after {
            next[i].1 = Some(lowest);
        }
        next
    }
}

fn same_tracks(a: &Choice, b: &Choice) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.0 == y.0)
}

/// True when `a` gives some track more than `b` and no track less.
fn better(a: &Choice, b: &Choice) -> bool {
    let rank = |l: Option<usize>| l.map_or(0, |l| l + 1);
    let mut any = false;
    for ((_, x), (_, y)) in a.iter().zip(b) {
        if rank(*x) < rank(*y) {
            return false;
        }
        any |= rank(*x) > rank(*y);
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 1000;

    #[test]
    fn probes_aim_at_twice_the_estimate_up_to_the_best_choice() {
        let d = |probe: Option<u64>| Decision {
            choice: vec![],
            allocated_bps: 290 * K,
            probe_bps: probe,
            desired_bps: 1700 * K,
            changed: false,
            confirming: false,
        };
        // Half-rate m after a low period: the next step is m whole, the link may hold far more.
        assert_eq!(probe_goal(&d(Some(450 * K)), Some(380 * K), 1.3), 760 * K);
        // Without a reading, or when the next step is further than twice the estimate.
        assert_eq!(probe_goal(&d(Some(450 * K)), None, 1.3), 585 * K);
        assert_eq!(probe_goal(&d(Some(1600 * K)), Some(500 * K), 1.2), 1920 * K);
        // Never past the best choice by the aim, nor any probe with nothing better to take.
        assert_eq!(probe_goal(&d(Some(450 * K)), Some(1500 * K), 1.3), 2210 * K);
        assert_eq!(probe_goal(&d(None), Some(380 * K), 1.3), 290 * K);
    }

    fn lesson(max_layer: usize) -> Vec<TrackOffer> {
        vec![
            TrackOffer {
                slot: Slot::TeacherAudio,
                layers_bps: vec![Some(40 * K)],
                max_layer: 0,
            },
            TrackOffer {
                slot: Slot::TeacherCamera,
                layers_bps: vec![Some(150 * K), Some(500 * K), Some(1500 * K)],
                max_layer,
            },
            TrackOffer {
                slot: Slot::Courseware,
                layers_bps: vec![Some(300 * K)],
                max_layer: 0,
            },
        ]
    }

    fn layers(c: &Choice) -> Vec<Option<usize>> {
        c.iter().map(|x| x.1).collect()
    }

    #[test]
    fn priorities_at_fixed_budgets() {
        let t = lesson(2);
        // Everything fits.
        assert_eq!(
            layers(&allocate(5000 * K, &t, Policy::Lecture)),
            [Some(0), Some(2), Some(0)]
        );
        // 1 Mbit/s: audio, courseware, then the camera's best that fits.
        assert_eq!(
            layers(&allocate(1000 * K, &t, Policy::Lecture)),
            [Some(0), Some(1), Some(0)]
        );
        // 400 kbit/s: courseware before the camera in a lecture.
        assert_eq!(
            layers(&allocate(400 * K, &t, Policy::Lecture)),
            [Some(0), None, Some(0)]
        );
        // ... and the camera first for a music lesson.
        assert_eq!(
            layers(&allocate(400 * K, &t, Policy::Camera)),
            [Some(0), Some(0), None]
        );
        // 20 kbit/s: the voice is never starved, video is paused.
        assert_eq!(
            layers(&allocate(20 * K, &t, Policy::Lecture)),
            [Some(0), None, None]
        );
        // A subscriber capped at mid.
        assert_eq!(
            layers(&allocate(5000 * K, &lesson(1), Policy::Lecture)),
            [Some(0), Some(1), Some(0)]
        );
    }

    #[test]
    fn missing_layers_are_skipped() {
        let mut t = lesson(2);
        t[1].layers_bps = vec![Some(150 * K), None, Some(1500 * K)];
        assert_eq!(
            layers(&allocate(1000 * K, &t, Policy::Lecture)),
            [Some(0), Some(0), Some(0)]
        );
        assert_eq!(
            layers(&allocate(2000 * K, &t, Policy::Lecture)),
            [Some(0), Some(2), Some(0)]
        );
        let next = next_step(
            &t,
            &allocate(1000 * K, &t, Policy::Lecture),
            Policy::Lecture,
        )
        .unwrap();
        assert_eq!(layers(&next), [Some(0), Some(2), Some(0)]);
    }

    /// A dip of the estimate under the camera's lowest layer keeps the picture on that layer;
    /// a lasting shortage pauses it after `pause_after`, and the voice always flows.
    #[test]
    fn a_short_dip_keeps_the_lowest_layer_and_a_lasting_one_pauses() {
        let t = lesson(2);
        let mut a = Allocator::new(Policy::Camera, Tuning::default());
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        assert_eq!(layers(&a.update(at(0.0), 900 * K, &t).choice)[1], Some(1));
        // 3 s at 60 kbit/s: below camera-low + audio (190 kbit/s), yet the camera stays on its
        // low layer.
        for i in 0..30 {
            let d = a.update(at(1.0 + i as f64 * 0.1), 60 * K, &t);
            assert_eq!(
                layers(&d.choice),
                [Some(0), Some(0), None],
                "at {:.1} s",
                1.0 + i as f64 * 0.1
            );
        }
        // Only the most important video is held: courseware was paused.
        assert_eq!(a.pauses(), 1);
        // Back up: the dip is forgotten.
        assert_eq!(layers(&a.update(at(4.5), 900 * K, &t).choice)[1], Some(0));
        // A shortage that lasts: paused once it has lasted 5 s, not before.
        let mut paused_at = None;
        for i in 0..80 {
            let s = 5.0 + i as f64 * 0.1;
            let d = a.update(at(s), 60 * K, &t);
            assert_eq!(d.choice[0].1, Some(0), "the voice flows");
            if d.choice[1].1.is_none() && paused_at.is_none() {
                paused_at = Some(s);
            }
        }
        let p = paused_at.expect("paused in the end");
        assert!((10.0..=10.2).contains(&p), "paused at {p:.1} s");
        assert_eq!(a.pauses(), 2);
        // Tiles are not held: they pause at once.
        let mut tiles = lesson(2);
        tiles.push(TrackOffer {
            slot: Slot::Tile(0),
            layers_bps: vec![Some(100 * K)],
            max_layer: 0,
        });
        let mut b = Allocator::new(Policy::Camera, Tuning::default());
        assert_eq!(
            layers(&b.update(at(0.0), 2000 * K, &tiles).choice)[3],
            Some(0)
        );
        assert_eq!(layers(&b.update(at(0.1), 200 * K, &tiles).choice)[3], None);
    }

    /// RFC 8867 section 5.1 style: capacity steps, scaled to a rural 1-10 Mbit/s link. The
    /// estimate follows capacity with a lag; the choice must go down within 1 s and up only
    /// after the dwell, with no oscillation while capacity is steady.
    #[test]
    fn capacity_steps_on_a_virtual_clock() {
        let t = lesson(2);
        let mut a = Allocator::new(Policy::Lecture, Tuning::default());
        let t0 = Instant::now();
        // (from second, capacity) — 5, then 0.8, then 5 Mbit/s again, then 2.5.
        let steps = [
            (0u64, 5000 * K),
            (20, 800 * K),
            (40, 5000 * K),
            (70, 2500 * K),
        ];
        let capacity = |s: f64| {
            steps
                .iter()
                .rev()
                .find(|(at, _)| s >= *at as f64)
                .unwrap()
                .1
        };
        let mut estimate = 1000.0 * K as f64;
        let mut history = vec![];
        let dt = 0.1;
        for i in 0..900 {
            let s = i as f64 * dt;
            // The estimate moves toward capacity: fast down (GCC backs off), slower up.
            let cap = capacity(s) as f64 * 0.9;
            let rate = if cap < estimate { 0.5 } else { 0.08 };
            estimate += (cap - estimate) * rate;
            let d = a.update(t0 + Duration::from_secs_f64(s), estimate as u64, &t);
            history.push((s, layers(&d.choice), d.allocated_bps, d.probe_bps));
        }
        let at = |s: f64| history.iter().find(|h| h.0 >= s).unwrap();
        // Steady at 5 Mbit/s: everything at its best.
        assert_eq!(at(15.0).1, [Some(0), Some(2), Some(0)]);
        // Down within 1 s of the drop to 0.8 Mbit/s, to a choice that fits under it.
        let down = history
            .iter()
            .find(|h| h.0 >= 20.0 && h.2 <= 720 * K)
            .unwrap();
        assert!(
            down.0 - 20.0 <= 1.0,
            "went down after {:.1} s",
            down.0 - 20.0
        );
        assert_eq!(at(30.0).1, [Some(0), Some(0), Some(0)]);
        // While capacity is 0.8 the allocation stays under it.
        assert!(history
            .iter()
            .filter(|h| h.0 >= 21.0 && h.0 < 40.0)
            .all(|h| h.2 <= 800 * K));
        // Back on the high layer within 8 s of recovery.
        let up = history
            .iter()
            .find(|h| h.0 >= 40.0 && h.1[1] == Some(2))
            .unwrap();
        assert!(up.0 - 40.0 <= 8.0, "back up after {:.1} s", up.0 - 40.0);
        // 2.5 Mbit/s (estimate 2.25): camera high + courseware + audio = 1.84 fits, steady.
        let late: Vec<_> = history.iter().filter(|h| h.0 >= 75.0).collect();
        assert!(late.iter().all(|h| h.1 == [Some(0), Some(2), Some(0)]));
        // No oscillation: few changes overall.
        assert!(a.changes() <= 10, "{} changes", a.changes());
        // While at the top, there is nothing left to probe for.
        assert_eq!(at(15.0).3, None);
        assert!(at(30.0).3.is_some());
    }

    /// GCC answers one delay spike by cutting its estimate to 85 % of the delivered rate: just
    /// under the layer the link carried. The choice is held while a probe at the current rate
    /// gets its chance; a refuted dip costs nothing, a confirmed one goes down after the hold,
    /// and a deep one goes down at once.
    #[test]
    fn a_dip_just_under_the_current_choice_waits_for_a_probe() {
        let t = lesson(2);
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let top = [Some(0), Some(2), Some(0)];
        let fresh = || {
            let mut a = Allocator::new(Policy::Lecture, Tuning::default());
            let d = a.update(at(0.0), 5000 * K, &t);
            assert_eq!(layers(&d.choice), top);
            (a, d.allocated_bps)
        };
        let cut = |rate: u64| (rate as f64 * 1.05 * 0.85) as u64;
        let hold = Tuning::default().probe_hold.as_secs_f64();

        // Refuted: the latest reading comes back over the choice before the hold ends (the
        // shared figure still waits for its rise to hold); the choice never changed.
        let (mut a, cur) = fresh();
        let d = a.update(at(10.0), cut(cur), &t);
        assert!(d.confirming, "a dip just under the choice asks for a probe");
        assert_eq!(layers(&d.choice), top);
        let d = a.update(at(10.5), cut(cur), &t);
        assert!(d.confirming);
        let back = Reading {
            share_bps: cut(cur),
            latest_bps: 3000 * K,
            previous_bps: None,
        };
        let d = a.update_reading(at(10.7), back, &t);
        assert!(!d.confirming);
        assert_eq!(layers(&d.choice), top);
        let d = a.update_reading(at(12.0), back, &t);
        assert_eq!(layers(&d.choice), top);
        assert_eq!(a.changes(), 1, "only the first choice");
        assert_eq!(a.dips(), (1, 0));

        // Confirmed: still short when the hold ends, so down (to what fits) then, not before.
        let (mut a, cur) = fresh();
        let mut down_at = None;
        for i in 0..20 {
            let s = 10.0 + i as f64 * 0.1;
            let d = a.update(at(s), cut(cur), &t);
            if d.changed && down_at.is_none() {
                down_at = Some(s);
                assert!(!d.confirming);
                assert!(d.allocated_bps <= cut(cur));
            }
        }
        let down = down_at.expect("went down");
        assert!(
            (10.0 + hold - 0.1..=10.0 + hold + 0.05).contains(&down),
            "down at {down:.1} s"
        );
        assert_eq!(a.dips(), (0, 1));

        // Still falling (the queue building): down after the shorter wait.
        let (mut a, cur) = fresh();
        let mut down_at = None;
        for i in 0..20 {
            let s = 10.0 + i as f64 * 0.1;
            let d = a.update(at(s), cut(cur) - i * 20 * K, &t);
            if d.changed && down_at.is_none() {
                down_at = Some(s);
            }
        }
        let down = down_at.expect("went down");
        let wait = Tuning::default().down_after.as_secs_f64();
        assert!(down - 10.0 <= wait + 0.05, "down at {down:.1} s");

        // Deep: at once, with no probe asked for.
        let (mut a, cur) = fresh();
        let d = a.update(at(10.0), cur * 7 / 10, &t);
        assert!(d.changed && !d.confirming);
        assert!(d.allocated_bps <= cur * 7 / 10);

        // With readings to compare, a deep fall goes at once when the next reading holds it
        // (a capacity drop: GCC's readings fall on), ...
        let reading = |latest: u64, previous: u64| Reading {
            share_bps: latest,
            latest_bps: latest,
            previous_bps: Some(previous),
        };
        let (mut a, cur) = fresh();
        let first = reading(cur * 7 / 10, 5000 * K);
        let d = a.update_reading(at(10.0), first, &t);
        assert!(!d.changed, "one reading is not yet a held fall");
        assert!(
            !d.confirming,
            "and no probe goes into a link that may be full"
        );
        let d = a.update_reading(at(10.2), reading(cur * 6 / 10, cur * 7 / 10), &t);
        assert!(d.changed && !d.confirming);
        assert!(d.allocated_bps <= cur * 6 / 10);
        // ... and a flat one as well (within HELD_FALL) ...
        let (mut a, cur) = fresh();
        a.update_reading(at(10.0), first, &t);
        let flat = (cur as f64 * 0.7 * (HELD_FALL - 0.01)) as u64;
        let d = a.update_reading(at(10.2), reading(flat, cur * 7 / 10), &t);
        assert!(d.changed);
        // ... but one that rebounds (the estimate recovering, or a probe lifting it) is held
        // like a shallow dip, and refuted when the reading comes back over the choice.
        let (mut a, cur) = fresh();
        a.update_reading(at(10.0), first, &t);
        let d = a.update_reading(at(10.2), reading(cur * 8 / 10, cur * 7 / 10), &t);
        assert!(!d.changed && d.confirming);
        let d = a.update_reading(at(10.4), reading(cur * 2, cur * 8 / 10), &t);
        assert!(!d.changed && !d.confirming);
        assert_eq!(layers(&d.choice), top);
        assert_eq!(a.dips(), (1, 0));
        // A shallow dip that deepens and holds is counted once, as confirmed.
        let (mut a, cur) = fresh();
        let d = a.update_reading(at(10.0), reading(cut(cur), 5000 * K), &t);
        assert!(d.confirming);
        let d = a.update_reading(at(10.2), reading(cur * 7 / 10, cut(cur)), &t);
        assert!(!d.changed && !d.confirming);
        let d = a.update_reading(at(10.4), reading(cur * 6 / 10, cur * 7 / 10), &t);
        assert!(d.changed);
        assert_eq!(a.dips(), (0, 1));
    }

    /// Right after a move up, GCC's delivered rate is still the old layer's: one delay spike
    /// cuts the estimate far under the new layer. That is held for a probe like a shallow dip;
    /// the same fall later, or one that lasts past the hold, goes down.
    #[test]
    fn a_deep_fall_right_after_a_move_up_waits_for_a_probe() {
        let t = lesson(2);
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let top = [Some(0), Some(2), Some(0)];
        let tuning = Tuning::default();
        // On the middle layer at 1 Mbit/s, then up to the top once 5 Mbit/s has held.
        let climbed = || {
            let mut a = Allocator::new(Policy::Lecture, tuning);
            let d = a.update(at(0.0), 1000 * K, &t);
            assert_ne!(layers(&d.choice), top);
            let low = d.allocated_bps;
            let d = a.update(at(10.0), 5000 * K, &t);
            assert_eq!(layers(&d.choice), top);
            (a, low, d.allocated_bps)
        };
        // The collapse: 85 % of what the middle layer delivered.
        let collapse = |low: u64| low * 85 / 100;

        // Refuted by the probe within the hold: the top layer never left.
        let (mut a, low, cur) = climbed();
        assert!(collapse(low) * 5 < cur * 4, "a deep fall, not a dip");
        let d = a.update(at(10.5), collapse(low), &t);
        assert!(d.confirming && !d.changed);
        assert_eq!(layers(&d.choice), top);
        let back = Reading {
            share_bps: collapse(low),
            latest_bps: 4000 * K,
            previous_bps: None,
        };
        let d = a.update_reading(at(11.2), back, &t);
        assert!(!d.confirming);
        assert_eq!(layers(&d.choice), top);
        assert_eq!(a.dips(), (1, 0));

        // Not refuted: down when the hold ends.
        let (mut a, low, _) = climbed();
        let mut down_at = None;
        for i in 0..20 {
            let s = 10.5 + i as f64 * 0.1;
            let d = a.update(at(s), collapse(low), &t);
            if d.changed && down_at.is_none() {
                down_at = Some(s);
                assert!(d.allocated_bps <= collapse(low));
            }
        }
        let down = down_at.expect("went down");
        let hold = tuning.probe_hold.as_secs_f64();
        assert!(
            (10.5 + hold - 0.1..=10.5 + hold + 0.05).contains(&down),
            "down at {down:.1} s"
        );
        // After that move down, still within `after_up` of the move up, a new deep fall is
        // not held: the move up is spent.
        let now_bps = a.update(at(12.0), collapse(low), &t).allocated_bps;
        assert!(12.0 - 10.0 < tuning.after_up.as_secs_f64());
        // (It would pause the camera, which `pause_after` holds on its lowest layer instead.)
        let d = a.update(at(12.1), now_bps * 7 / 10, &t);
        assert!(!d.confirming, "no probe asked for");

        // A fall that begins just inside `after_up` gets the whole hold, past `after_up`.
        let (mut a, low, _) = climbed();
        let start = 10.0 + tuning.after_up.as_secs_f64() - 0.1;
        let d = a.update(at(start), collapse(low), &t);
        assert!(d.confirming && !d.changed);
        let d = a.update(at(start + hold * 0.8), collapse(low), &t);
        assert!(d.confirming && !d.changed, "held past after_up");
        let d = a.update(at(start + hold + 0.05), collapse(low), &t);
        assert!(d.changed && !d.confirming);

        // The same fall once the move up is old news: down at once.
        let (mut a, low, _) = climbed();
        let later = 10.0 + tuning.after_up.as_secs_f64() + 0.1;
        let d = a.update(at(later), 5000 * K, &t);
        assert_eq!(layers(&d.choice), top);
        let d = a.update(at(later + 0.1), collapse(low), &t);
        assert!(d.changed && !d.confirming);
    }

    #[test]
    fn pauses_and_resumes_with_hysteresis() {
        let t = lesson(2);
        let tuning = Tuning {
            pause_after: Duration::ZERO,
            ..Tuning::default()
        };
        let mut a = Allocator::new(Policy::Lecture, tuning);
        let t0 = Instant::now();
        let d = a.update(t0, 2000 * K, &t);
        assert_eq!(layers(&d.choice), [Some(0), Some(2), Some(0)]);
        // Collapse: only audio fits.
        let d = a.update(t0 + Duration::from_secs(1), 100 * K, &t);
        assert_eq!(layers(&d.choice), [Some(0), None, None]);
        assert_eq!(a.pauses(), 2);
        // Enough for the camera's low layer, but not with the margin: stays paused.
        let d = a.update(t0 + Duration::from_secs(10), 200 * K, &t);
        assert_eq!(layers(&d.choice), [Some(0), None, None]);
        // With the margin and after the dwell: the low camera layer resumes (courseware,
        // first in priority, does not fit yet).
        let d = a.update(t0 + Duration::from_secs(11), 230 * K, &t);
        assert_eq!(layers(&d.choice), [Some(0), Some(0), None]);
        // Not again before the dwell has passed, even with plenty of room.
        let d = a.update(t0 + Duration::from_secs(12), 5000 * K, &t);
        assert_eq!(layers(&d.choice), [Some(0), Some(0), None]);
        let d = a.update(t0 + Duration::from_secs(16), 5000 * K, &t);
        assert_eq!(layers(&d.choice), [Some(0), Some(2), Some(0)]);
    }
}
