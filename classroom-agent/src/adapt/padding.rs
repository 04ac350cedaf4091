//! How much of the congestion controller's estimate padding may fill. Padding keeps the link
//! filled toward the ladder's next step, so that the estimate proves the step before video
//! takes it. Pure; time from the caller.

use std::time::{Duration, Instant};

/// The share while the link shows no queue and has not shown room since its last queue: a
/// link kept at its whole estimate has no room left for the media's own bursts.
pub const SHARE: f64 = 0.9;
/// The share from a probe that found room until the next queue: the link has just grown, and
/// the controller's estimate sits under its capacity (3.0-3.5 Mbit/s on a 4 Mbit/s link). At
/// 90 % of it the wire stayed near 3 Mbit/s after a recovery, and reached 85 % of the link only
/// on the estimate's peaks.
pub const SHARE_CLIMBING: f64 = 1.0;
/// For `QUIET` after the round trip last showed a queue, padding fills only this share: the link
/// has just shown where its limit is, and padding up to 90 % of an estimate that creeps back over
/// it pushed the 1 Mbit/s link into a saw-tooth of queues. (The estimate still grows: the
/// controller allows up to 1.5 times what gets through.)
pub const SHARE_AFTER_QUEUE: f64 = 0.75;
pub const QUIET: Duration = Duration::from_secs(10);

/// The share now. `queueing`: the round trip shows a queue now; `last_queue`: when it last did;
/// `room_since`: when a probe last found room.
pub fn share(
    queueing: bool,
    last_queue: Option<Instant>,
    room_since: Option<Instant>,
    now: Instant,
) -> f64 {
    if queueing {
        return 0.0;
    }
    let room_after_queue = room_since.is_some_and(|r| last_queue.is_none_or(|q| r > q));
    if room_after_queue {
        SHARE_CLIMBING
    } else if last_queue.is_some_and(|t| now.saturating_duration_since(t) < QUIET) {
        SHARE_AFTER_QUEUE
    } else {
        SHARE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_fills_the_estimate_only_from_found_room_to_the_next_queue() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        // Nothing while a queue stands, whatever came before.
        assert_eq!(share(true, Some(s(1)), Some(s(2)), s(3)), 0.0);
        // Quiet link, no probe has found room: 90 %.
        assert_eq!(share(false, None, None, s(30)), SHARE);
        // A queue 5 s ago: 75 % for 10 s, then 90 %.
        assert_eq!(share(false, Some(s(25)), None, s(30)), SHARE_AFTER_QUEUE);
        assert_eq!(share(false, Some(s(25)), None, s(36)), SHARE);
        // A probe found room after the queue: the whole estimate, at once and for as long as
        // no queue follows.
        assert_eq!(
            share(false, Some(s(25)), Some(s(27)), s(28)),
            SHARE_CLIMBING
        );
        assert_eq!(share(false, None, Some(s(27)), s(90)), SHARE_CLIMBING);
        // Room found before the last queue does not count.
        assert_eq!(
            share(false, Some(s(28)), Some(s(27)), s(30)),
            SHARE_AFTER_QUEUE
        );
    }
}
