//! How much of the congestion controller's estimate padding may fill, and when a probe found
//! room. Padding keeps the link filled toward the ladder's next step, so that the estimate
//! proves the step before video takes it. Pure; time from the caller.

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

/// A probe found room when the estimate rose this much over its value when the probe was asked…
pub const FOUND: f64 = 1.15;
/// …within this long of it: the probe's result, then the second the estimate filter waits before
/// it takes a higher estimate (`adapt::estimate::RISE_HELD`). Later rises are the controller's
/// own growth, not the probe's.
pub const ROOM_WINDOW: Duration = Duration::from_millis(2500);

/// Whether `after` is `FOUND` over `before`.
pub fn rose(before_bps: u64, after_bps: u64) -> bool {
    after_bps as f64 >= before_bps as f64 * FOUND
}

/// Whether the last probe (asked at `probe.0`, with the estimate at `probe.1`) found room: it
/// was asked after the last queue, and the estimate has risen by `FOUND` within `ROOM_WINDOW`.
pub fn found_room(
    probe: Option<(Instant, u64)>,
    last_queue: Option<Instant>,
    estimate_bps: u64,
    now: Instant,
) -> bool {
    probe.is_some_and(|(t, before)| {
        last_queue.is_none_or(|q| t > q)
            && now.saturating_duration_since(t) <= ROOM_WINDOW
            && rose(before, estimate_bps)
    })
}

/// The share now. `queueing`: the round trip shows a queue now; `last_queue`: when it last did;
/// `room_seen`: when a probe was last seen to have found room.
pub fn share(
    queueing: bool,
    last_queue: Option<Instant>,
    room_seen: Option<Instant>,
    now: Instant,
) -> f64 {
    if queueing {
        return 0.0;
    }
    let room_after_queue = room_seen.is_some_and(|r| last_queue.is_none_or(|q| r > q));
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
        // Room found before the last queue, or at the same reading, does not count.
        assert_eq!(
            share(false, Some(s(28)), Some(s(27)), s(30)),
            SHARE_AFTER_QUEUE
        );
        assert_eq!(
            share(false, Some(s(28)), Some(s(28)), s(30)),
            SHARE_AFTER_QUEUE
        );
    }

    #[test]
    fn room_is_what_a_probe_finds_soon_after_it_since_the_last_queue() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let probe = Some((ms(1000), 1_000_000));
        // Risen 20 % a second after the probe: room.
        assert!(found_room(probe, None, 1_200_000, ms(2000)));
        // Risen only 10 %, or only long after (the controller's own growth): no room.
        assert!(!found_room(probe, None, 1_100_000, ms(2000)));
        assert!(!found_room(probe, None, 1_200_000, ms(4000)));
        // No probe, or one asked before the last queue: no room.
        assert!(!found_room(None, None, 1_200_000, ms(2000)));
        assert!(!found_room(probe, Some(ms(1500)), 1_200_000, ms(2000)));
        assert!(found_room(probe, Some(ms(500)), 1_200_000, ms(2000)));
    }
}
