//! Keeping a camera in the lesson when it is unplugged or stalls: decides when the picture
//! falls back to the test pattern, when to try the camera again and when to take it back.
//! Pure; the GStreamer side (`camera.rs`) feeds it what it sees and carries out its actions.

use std::time::{Duration, Instant};

use crate::backoff::Backoff;

/// A live camera that sends nothing for this long is taken as gone (an unplugged USB camera
/// may stall without an error).
pub const STALL: Duration = Duration::from_secs(2);
/// A camera being started must show a picture within this.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);
/// Retry pacing after a camera failed to start or was lost.
pub const RETRY_BASE: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(10);
/// How often a missing device is looked for (cheap: a file open).
pub const LOOK_EVERY: Duration = Duration::from_millis(500);
/// A camera that has worked this long resets the retry pacing.
const STEADY: Duration = Duration::from_secs(10);

/// What the camera is doing, as `/status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraState {
    /// No camera: the test pattern is sent; `retry_at` is the next attempt.
    Absent { retry_at: Instant },
    /// The camera is being started (the test pattern is still sent).
    Starting { since: Instant },
    /// The camera's picture is sent.
    Live { since: Instant },
}

impl CameraState {
    pub fn name(&self) -> &'static str {
        match self {
            CameraState::Absent { .. } => "test pattern",
            CameraState::Starting { .. } => "starting",
            CameraState::Live { .. } => "live",
        }
    }
}

/// What the GStreamer side is to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Build and start the camera source (its picture is not sent yet).
    Start,
    /// Send the camera's picture.
    UseCamera,
    /// Send the test pattern and take the camera source down.
    Fallback,
}

#[derive(Debug, Clone)]
pub struct CameraWatch {
    state: CameraState,
    retry: Backoff,
    /// Times the camera was lost while live, and came back after a loss.
    pub losses: u64,
    pub returns: u64,
}

impl CameraWatch {
    /// Starts with the camera off; the first `tick` tries it.
    pub fn new(now: Instant, seed: u64) -> CameraWatch {
        CameraWatch {
            state: CameraState::Absent { retry_at: now },
            retry: Backoff::new(RETRY_BASE, RETRY_MAX, seed),
            losses: 0,
            returns: 0,
        }
    }

    pub fn state(&self) -> CameraState {
        self.state
    }

    /// Periodic check. `last_picture`: when the camera source last delivered a frame;
    /// `present`: whether its device can be opened now (always true for sources without one).
    pub fn tick(
        &mut self,
        now: Instant,
        last_picture: Option<Instant>,
        present: bool,
    ) -> Option<Action> {
        match self.state {
            CameraState::Absent { retry_at } => {
                if now < retry_at {
                    return None;
                }
                if !present {
                    self.state = CameraState::Absent {
                        retry_at: now + LOOK_EVERY,
                    };
                    return None;
                }
                self.state = CameraState::Starting { since: now };
                Some(Action::Start)
            }
            CameraState::Starting { since } => {
                if last_picture.is_some_and(|t| t >= since) {
                    if self.losses > 0 {
                        self.returns += 1;
                    }
                    self.state = CameraState::Live { since: now };
                    return Some(Action::UseCamera);
                }
                if now.saturating_duration_since(since) >= START_TIMEOUT {
                    return Some(self.give_up(now));
                }
                None
            }
            CameraState::Live { since } => {
                let stalled =
                    last_picture.is_none_or(|t| now.saturating_duration_since(t) >= STALL);
                if stalled {
                    return Some(self.lost(now));
                }
                if now.saturating_duration_since(since) >= STEADY {
                    self.retry.reset();
                }
                None
            }
        }
    }

    /// The camera source reported an error or ended.
    pub fn on_failure(&mut self, now: Instant) -> Option<Action> {
        match self.state {
            CameraState::Absent { .. } => None,
            CameraState::Starting { .. } => Some(self.give_up(now)),
            CameraState::Live { .. } => Some(self.lost(now)),
        }
    }

    fn lost(&mut self, now: Instant) -> Action {
        self.losses += 1;
        self.give_up(now)
    }

    fn give_up(&mut self, now: Instant) -> Action {
        self.state = CameraState::Absent {
            retry_at: now + self.retry.next_delay(),
        };
        Action::Fallback
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Runs ticks every 100 ms from `from` to `to`; `picture(t)` gives the last frame time.
    fn run(
        w: &mut CameraWatch,
        from: Instant,
        to: Instant,
        picture: impl Fn(Instant) -> Option<Instant>,
        present: bool,
    ) -> Vec<(Duration, Action)> {
        let mut out = vec![];
        let mut t = from;
        while t <= to {
            if let Some(a) = w.tick(t, picture(t), present) {
                out.push((t - from, a));
            }
            t += 100 * MS;
        }
        out
    }

    #[test]
    fn a_working_camera_is_taken_at_its_first_picture() {
        let t0 = Instant::now();
        let mut w = CameraWatch::new(t0, 1);
        assert_eq!(w.tick(t0, None, true), Some(Action::Start));
        assert_eq!(w.tick(t0 + 100 * MS, None, true), None);
        let pic = t0 + 150 * MS;
        assert_eq!(
            w.tick(t0 + 200 * MS, Some(pic), true),
            Some(Action::UseCamera)
        );
        assert_eq!(w.state().name(), "live");
        assert_eq!((w.losses, w.returns), (0, 0));
        // Pictures keep coming: nothing to do.
        let acts = run(
            &mut w,
            t0 + 300 * MS,
            t0 + 20_000 * MS,
            |t| Some(t - 30 * MS),
            true,
        );
        assert!(acts.is_empty(), "{acts:?}");
    }

    #[test]
    fn a_stall_falls_back_then_the_camera_comes_back() {
        let t0 = Instant::now();
        let mut w = CameraWatch::new(t0, 7);
        w.tick(t0, None, true);
        w.tick(t0 + 100 * MS, Some(t0 + 50 * MS), true);
        let stop = t0 + 5_000 * MS;
        // The last picture is at 5 s; the fallback comes STALL later, not before.
        let acts = run(
            &mut w,
            t0 + 200 * MS,
            t0 + 8_000 * MS,
            |t| Some(t.min(stop)),
            true,
        );
        let (at, a) = acts[0];
        assert_eq!(a, Action::Fallback);
        assert!(at + 200 * MS >= 5_000 * MS + STALL, "{at:?}");
        assert!(at + 200 * MS <= 5_100 * MS + STALL, "{at:?}");
        assert_eq!(w.losses, 1);
        // Retried within the first backoff (0.5–1 s), and taken at its first picture.
        assert_eq!(acts[1].1, Action::Start);
        assert!(acts[1].0 - at <= RETRY_BASE + 100 * MS, "{acts:?}");
        let started = t0 + 200 * MS + acts[1].0;
        assert_eq!(
            w.tick(started + 300 * MS, Some(started + 250 * MS), true),
            Some(Action::UseCamera)
        );
        assert_eq!(w.returns, 1);
    }

    #[test]
    fn an_unplugged_device_is_looked_for_without_churn() {
        let t0 = Instant::now();
        let mut w = CameraWatch::new(t0, 3);
        w.tick(t0, None, true);
        w.tick(t0 + 100 * MS, Some(t0 + 100 * MS), true);
        // Unplugged: the source errors at once.
        assert_eq!(w.on_failure(t0 + 1_000 * MS), Some(Action::Fallback));
        assert_eq!(w.state().name(), "test pattern");
        // While the device is missing nothing is started.
        let acts = run(&mut w, t0 + 1_000 * MS, t0 + 30_000 * MS, |_| None, false);
        assert!(acts.is_empty(), "{acts:?}");
        // Plugged back in: started at the next look.
        let back = t0 + 30_100 * MS;
        let acts = run(&mut w, back, back + 1_000 * MS, |_| None, true);
        assert_eq!(acts.first().map(|a| a.1), Some(Action::Start), "{acts:?}");
        assert!(acts[0].0 <= LOOK_EVERY, "{acts:?}");
    }

    #[test]
    fn a_camera_that_never_shows_a_picture_is_retried_with_backoff() {
        let t0 = Instant::now();
        let mut w = CameraWatch::new(t0, 5);
        let acts = run(&mut w, t0, t0 + 60_000 * MS, |_| None, true);
        let starts: Vec<Duration> = acts
            .iter()
            .filter(|a| a.1 == Action::Start)
            .map(|a| a.0)
            .collect();
        // Each start waits START_TIMEOUT, then the backoff grows toward RETRY_MAX.
        assert!(starts.len() >= 4 && starts.len() <= 10, "{starts:?}");
        let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|&g| g >= START_TIMEOUT), "{gaps:?}");
        assert!(
            gaps.last().unwrap() > gaps.first().unwrap(),
            "backoff grows: {gaps:?}"
        );
        assert_eq!(w.losses, 0, "a camera never live is not lost");
        assert!(acts
            .iter()
            .filter(|a| a.1 == Action::Fallback)
            .all(|a| starts.iter().any(|s| a.0 >= *s + START_TIMEOUT)));
    }
}
