//! Lost voice in what a classroom receives: stretches of the lesson's audio whose packets
//! never came. Measured on the RTP sequence numbers and timestamps of the frames that did
//! come, so that Opus DTX (silence sent as sparse frames, with no missing packets) and a
//! playout delay that grows (a jump in playback time, not in the audio) are not counted.

use std::time::Duration;

/// A stretch of lost voice longer than this is counted: the limit for a gap a
/// listener notices.
pub const NOTICEABLE: Duration = Duration::from_millis(200);

/// Follows one audio stream's frames.
#[derive(Debug, Default, Clone)]
pub struct VoiceGaps {
    /// (last sequence number, its RTP time in ticks, clock rate) of the last frame.
    last: Option<(u64, u64, u64)>,
    longest: Duration,
    noticeable: u64,
}

impl VoiceGaps {
    /// A frame of packets `first_seq..=last_seq` (extended, never wrapping) at RTP time `rtp`
    /// in ticks of `clock_rate`. Returns the gap before it when packets were missing: from the
    /// previous frame's start to this one's, as a player would go without sound.
    pub fn on_frame(
        &mut self,
        first_seq: u64,
        last_seq: u64,
        rtp: u64,
        clock_rate: u64,
    ) -> Option<Duration> {
        let gap = match self.last {
            Some((seq, at, rate))
                if rate == clock_rate && clock_rate > 0 && first_seq > seq + 1 && rtp > at =>
            {
                Some(Duration::from_nanos(
                    ((rtp - at) as u128 * 1_000_000_000 / clock_rate as u128) as u64,
                ))
            }
            _ => None,
        };
        // A late or repeated frame does not move the stream back.
        if self.last.is_none_or(|(seq, _, _)| last_seq > seq) {
            self.last = Some((last_seq, rtp, clock_rate));
        }
        if let Some(g) = gap {
            self.longest = self.longest.max(g);
            if g > NOTICEABLE {
                self.noticeable += 1;
            }
        }
        gap
    }

    /// A new session: its sequence numbers start afresh, and the time between sessions is a
    /// reconnect, reported as such elsewhere.
    pub fn restart(&mut self) {
        self.last = None;
    }

    /// The longest stretch of lost voice so far.
    pub fn longest(&self) -> Duration {
        self.longest
    }

    /// Stretches of lost voice longer than [`NOTICEABLE`] so far.
    pub fn noticeable(&self) -> u64 {
        self.noticeable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u64 = 48_000;
    /// 20 ms of Opus at 48 kHz.
    const FRAME: u64 = 960;

    #[test]
    fn lost_packets_make_a_gap_as_long_as_the_missing_audio() {
        let mut v = VoiceGaps::default();
        assert_eq!(v.on_frame(10, 10, 0, RATE), None);
        assert_eq!(v.on_frame(11, 11, FRAME, RATE), None);
        // Packets 12..=20 lost: the frame after 11 starts 200 ms after it.
        let gap = v.on_frame(21, 21, 11 * FRAME, RATE);
        assert_eq!(gap, Some(Duration::from_millis(200)));
        assert_eq!(v.noticeable(), 0, "200 ms is the limit, not over it");
        // Eleven lost: 240 ms.
        assert_eq!(
            v.on_frame(33, 33, 23 * FRAME, RATE),
            Some(Duration::from_millis(240))
        );
        assert_eq!(v.noticeable(), 1);
        assert_eq!(v.longest(), Duration::from_millis(240));
    }

    #[test]
    fn dtx_silence_is_not_lost_voice() {
        let mut v = VoiceGaps::default();
        v.on_frame(1, 1, 0, RATE);
        // DTX: the next packet comes 400 ms later in RTP time, with no sequence gap.
        assert_eq!(v.on_frame(2, 2, 20 * FRAME, RATE), None);
        assert_eq!(v.longest(), Duration::ZERO);
    }

    #[test]
    fn late_frames_and_restarts_are_not_gaps() {
        let mut v = VoiceGaps::default();
        v.on_frame(100, 100, 100 * FRAME, RATE);
        v.on_frame(102, 102, 102 * FRAME, RATE);
        // 101 arrives late: it neither counts nor moves the stream back.
        assert_eq!(v.on_frame(101, 101, 101 * FRAME, RATE), None);
        assert_eq!(v.on_frame(103, 103, 103 * FRAME, RATE), None);
        // A new session starts its numbers anywhere.
        v.restart();
        assert_eq!(v.on_frame(5000, 5000, 7, RATE), None);
        assert_eq!(v.on_frame(5001, 5001, 7 + FRAME, RATE), None);
        assert_eq!(v.noticeable(), 0);
        assert_eq!(v.longest(), Duration::from_millis(40));
    }
}
