//! Active speaker from the RFC 6464 audio level each publisher puts on its audio packets.
//!
//! Levels are smoothed per participant; the speaker changes only when someone else has been
//! clearly louder for a while, so the highlight does not flicker between a teacher and a
//! classroom talking over each other.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Smoothed loudness below this (on a 0..=127 scale, 127 loudest) is silence.
const SPEAKING: f32 = 40.0;
/// A challenger must be this much louder ...
const MARGIN: f32 = 6.0;
/// ... for this long.
const HOLD: Duration = Duration::from_millis(600);
/// A participant whose packets stopped is no longer speaking.
const STALE: Duration = Duration::from_millis(800);

#[derive(Debug, Clone)]
struct Level {
    smoothed: f32,
    last: Instant,
}

#[derive(Debug, Default)]
pub struct SpeakerDetector {
    levels: HashMap<String, Level>,
    current: Option<String>,
    challenger: Option<(String, Instant)>,
}

impl SpeakerDetector {
    /// One packet's level: `dbov` is 0 (loudest) to 127 (silence), as in RFC 6464.
    pub fn on_level(&mut self, sub: &str, dbov: i8, now: Instant) {
        let loud = 127.0 - f32::from(dbov.clamp(0, 127));
        match self.levels.get_mut(sub) {
            Some(l) => {
                // Fast attack, slow release: speech onsets count at once, pauses between words
                // do not drop the speaker.
                let k = if loud > l.smoothed { 0.3 } else { 0.05 };
                l.smoothed += k * (loud - l.smoothed);
                l.last = now;
            }
            None => {
                self.levels.insert(
                    sub.to_string(),
                    Level {
                        smoothed: loud * 0.3,
                        last: now,
                    },
                );
            }
        }
    }

    pub fn forget(&mut self, sub: &str) {
        self.levels.remove(sub);
    }

    fn loudness(&self, sub: &str, now: Instant) -> f32 {
        self.levels
            .get(sub)
            .filter(|l| now.saturating_duration_since(l.last) < STALE)
            .map_or(0.0, |l| l.smoothed)
    }

    /// The speaker now; `Some(change)` when it differs from the last answer.
    pub fn update(&mut self, now: Instant) -> Option<Option<String>> {
        let loudest = self
            .levels
            .keys()
            .map(|s| (s, self.loudness(s, now)))
            .filter(|(_, l)| *l >= SPEAKING)
            .max_by(|a, b| a.1.total_cmp(&b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(s, l)| (s.clone(), l));
        let current_level = self
            .current
            .as_deref()
            .map_or(0.0, |s| self.loudness(s, now));
        let next = match (&self.current, loudest) {
            (None, None) => None,
            (Some(_), None) => {
                // Silence: let the speaker go once it has faded.
                return (current_level < SPEAKING).then(|| {
                    self.current = None;
                    self.challenger = None;
                    None
                });
            }
            (Some(c), Some((s, _))) if *c == s => {
                self.challenger = None;
                return None;
            }
            (None, Some((s, _))) => Some(s),
            (Some(_), Some((s, l))) => {
                if l < current_level + MARGIN && current_level >= SPEAKING {
                    self.challenger = None;
                    return None;
                }
                match &self.challenger {
                    Some((c, since)) if *c == s => {
                        if now.saturating_duration_since(*since) < HOLD {
                            return None;
                        }
                        Some(s)
                    }
                    _ => {
                        self.challenger = Some((s, now));
                        return None;
                    }
                }
            }
        };
        self.challenger = None;
        if next == self.current {
            return None;
        }
        self.current = next.clone();
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(
        d: &mut SpeakerDetector,
        t0: Instant,
        from_ms: u64,
        to_ms: u64,
        who: &[(&str, i8)],
    ) -> Vec<(u64, Option<String>)> {
        let mut changes = vec![];
        let mut ms = from_ms;
        while ms < to_ms {
            let now = t0 + Duration::from_millis(ms);
            for (s, lvl) in who {
                d.on_level(s, *lvl, now);
            }
            if let Some(c) = d.update(now) {
                changes.push((ms, c));
            }
            ms += 20;
        }
        changes
    }

    #[test]
    fn loud_teacher_then_a_student_takes_over_after_a_hold() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::default();
        let ch = feed(&mut d, t0, 0, 1000, &[("t", 30), ("c1", 120)]);
        assert_eq!(ch.len(), 1);
        assert_eq!(ch[0].1.as_deref(), Some("t"));
        // The student speaks up; the teacher goes quiet.
        let ch = feed(&mut d, t0, 1000, 4000, &[("t", 127), ("c1", 20)]);
        assert_eq!(ch.len(), 1, "{ch:?}");
        assert_eq!(ch[0].1.as_deref(), Some("c1"));
        assert!(ch[0].0 >= 1000 + HOLD.as_millis() as u64 - 20);
    }

    #[test]
    fn brief_noise_does_not_steal_and_silence_clears() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::default();
        feed(&mut d, t0, 0, 1000, &[("t", 30), ("c1", 127)]);
        // A 200 ms cough from c1 while the teacher talks.
        let ch = feed(&mut d, t0, 1000, 1200, &[("t", 30), ("c1", 5)]);
        assert!(ch.is_empty(), "{ch:?}");
        feed(&mut d, t0, 1200, 1400, &[("t", 30), ("c1", 127)]);
        // Everyone silent for long enough.
        let ch = feed(&mut d, t0, 1400, 5000, &[("t", 127), ("c1", 127)]);
        assert_eq!(ch.last().map(|c| c.1.clone()), Some(None));
    }
}
