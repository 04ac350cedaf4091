//! One subscriber slot (e.g. "teacher camera" for one classroom): which source it follows,
//! where it switches, and the rewritten numbering of what it forwards.

use std::time::Instant;

use super::rewrite::Rewriter;
use super::SourceId;

/// A packet as the forwarder needs to see it.
#[derive(Debug, Clone, Copy)]
pub struct PacketInfo {
    pub source: SourceId,
    pub seq: u64,
    pub ts: u32,
    /// First packet of a keyframe (always true for audio).
    pub keyframe_start: bool,
}

#[derive(Debug, Clone)]
pub struct TrackForwarder {
    rewriter: Rewriter,
    current: Option<SourceId>,
    target: Option<SourceId>,
    switches: u64,
}

impl TrackForwarder {
    pub fn new(clock_rate: u32, first_seq: u16) -> Self {
        TrackForwarder {
            rewriter: Rewriter::new(clock_rate, first_seq),
            current: None,
            target: None,
            switches: 0,
        }
    }

    /// The source being forwarded now.
    pub fn current(&self) -> Option<SourceId> {
        self.current
    }

    /// The source we want to forward.
    pub fn target(&self) -> Option<SourceId> {
        self.target
    }

    /// How many times the forwarded source changed (layer switches and reconnects).
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// Choose what to forward. The current source keeps flowing until the target's keyframe.
    pub fn set_target(&mut self, target: Option<SourceId>) {
        self.target = target;
        if target.is_none() {
            self.current = None;
        }
    }

    /// The source whose keyframe we wait for, if any.
    pub fn waiting_for_keyframe(&self) -> Option<SourceId> {
        match (self.target, self.current) {
            (Some(t), c) if c != Some(t) => Some(t),
            _ => None,
        }
    }

    /// Decide on one packet: `Some((seq, ts))` to send it with rewritten numbering.
    pub fn on_packet(&mut self, p: PacketInfo, now: Instant) -> Option<(u64, u32)> {
        if Some(p.source) == self.target && self.current != self.target && p.keyframe_start {
            if self.current.is_some() || self.rewriter.source().is_some() {
                self.switches += 1;
            }
            self.current = self.target;
            self.rewriter.switch_to(p.source, p.seq, p.ts, now);
        }
        if Some(p.source) != self.current {
            return None;
        }
        self.rewriter.rewrite(p.source, p.seq, p.ts, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pkt(source: u64, seq: u64, ts: u32, key: bool) -> PacketInfo {
        PacketInfo {
            source: SourceId(source),
            seq,
            ts,
            keyframe_start: key,
        }
    }

    #[test]
    fn waits_for_keyframe_then_switches_without_gap() {
        let t0 = Instant::now();
        let mut f = TrackForwarder::new(90_000, 0);
        f.set_target(Some(SourceId(1)));
        assert_eq!(f.waiting_for_keyframe(), Some(SourceId(1)));
        // Delta frames before the first keyframe are not forwarded.
        assert_eq!(f.on_packet(pkt(1, 10, 0, false), t0), None);
        assert_eq!(f.on_packet(pkt(1, 11, 3000, true), t0), Some((0, 3000)));
        assert_eq!(f.waiting_for_keyframe(), None);
        assert_eq!(f.on_packet(pkt(1, 12, 3000, false), t0), Some((1, 3000)));

        // Ask for layer 2: layer 1 keeps flowing until layer 2's keyframe.
        f.set_target(Some(SourceId(2)));
        let t1 = t0 + Duration::from_millis(40);
        assert_eq!(f.on_packet(pkt(2, 500, 7, false), t1), None);
        assert_eq!(f.on_packet(pkt(1, 13, 6000, false), t1), Some((2, 6000)));
        let t2 = t0 + Duration::from_millis(73);
        let (s, ts) = f.on_packet(pkt(2, 501, 10, true), t2).unwrap();
        assert_eq!(s, 3);
        assert_eq!(ts, 6000 + 33 * 90);
        // The old layer is now dropped.
        assert_eq!(f.on_packet(pkt(1, 14, 9000, false), t2), None);
        assert_eq!(f.switches(), 1);
    }

    #[test]
    fn losing_the_target_stops_forwarding() {
        let t0 = Instant::now();
        let mut f = TrackForwarder::new(48_000, 0);
        f.set_target(Some(SourceId(1)));
        assert!(f.on_packet(pkt(1, 1, 0, true), t0).is_some());
        f.set_target(None);
        assert_eq!(f.on_packet(pkt(1, 2, 960, true), t0), None);
        assert_eq!(f.waiting_for_keyframe(), None);
    }
}
