//! One subscriber slot (e.g. "teacher camera" for one classroom): which source it follows,
//! where it switches, and the rewritten numbering of what it forwards.

use std::time::Instant;

use super::rewrite::Rewriter;
use super::vp8_rewrite::{Vp8Fields, Vp8Rewriter};
use super::SourceId;

/// A packet as the forwarder needs to see it.
#[derive(Debug, Clone, Copy)]
pub struct PacketInfo {
    pub source: SourceId,
    pub seq: u64,
    pub ts: u32,
    /// First packet of a keyframe (always true for audio).
    pub keyframe_start: bool,
    /// VP8 descriptor fields, kept continuous like the sequence numbers.
    pub vp8: Option<Vp8Fields>,
}

/// A packet to send, with its rewritten numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    pub seq: u64,
    pub ts: u32,
    pub vp8: Option<Vp8Fields>,
}

#[derive(Debug, Clone)]
pub struct TrackForwarder {
    rewriter: Rewriter,
    vp8: Vp8Rewriter,
    current: Option<SourceId>,
    target: Option<SourceId>,
    switches: u64,
    /// Since when nothing has been forwarded while a keyframe is awaited (after the first).
    stalled_since: Option<Instant>,
    keyframe_freezes: u64,
}

/// A wait for a keyframe longer than this, with nothing forwarded, is a visible freeze.
pub const FREEZE_THRESHOLD: std::time::Duration = std::time::Duration::from_millis(200);

impl TrackForwarder {
    pub fn new(clock_rate: u32, first_seq: u16) -> Self {
        TrackForwarder {
            rewriter: Rewriter::new(clock_rate, first_seq),
            vp8: Vp8Rewriter::default(),
            current: None,
            target: None,
            switches: 0,
            stalled_since: None,
            keyframe_freezes: 0,
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

    /// Freezes caused by waiting for a keyframe with nothing else to forward.
    pub fn keyframe_freezes(&self) -> u64 {
        self.keyframe_freezes
    }

    /// Choose what to forward. The current source keeps flowing until the target's keyframe.
    pub fn set_target(&mut self, target: Option<SourceId>, now: Instant) {
        self.target = target;
        if target.is_none() {
            self.current = None;
            self.stalled_since = None;
        } else if self.current.is_none() && self.rewriter.source().is_some() {
            // The picture stands still until the new source's keyframe arrives.
            self.stalled_since.get_or_insert(now);
        }
    }

    /// The source whose keyframe we wait for, if any.
    pub fn waiting_for_keyframe(&self) -> Option<SourceId> {
        match (self.target, self.current) {
            (Some(t), c) if c != Some(t) => Some(t),
            _ => None,
        }
    }

    /// Decide on one packet: `Some` to send it with rewritten numbering.
    pub fn on_packet(&mut self, p: PacketInfo, now: Instant) -> Option<Forwarded> {
        if Some(p.source) == self.target && self.current != self.target && p.keyframe_start {
            if self.current.is_some() || self.rewriter.source().is_some() {
                self.switches += 1;
            }
            self.current = self.target;
            if let Some(t) = self.stalled_since.take() {
                if now.saturating_duration_since(t) >= FREEZE_THRESHOLD {
                    self.keyframe_freezes += 1;
                }
            }
            self.rewriter.switch_to(p.source, p.seq, p.ts, now);
            if let Some(f) = p.vp8 {
                self.vp8.switch_to(p.source, f);
            }
        }
        if Some(p.source) != self.current {
            return None;
        }
        let (seq, ts) = self.rewriter.rewrite(p.source, p.seq, p.ts, now)?;
        let vp8 = p.vp8.and_then(|f| self.vp8.rewrite(p.source, f));
        Some(Forwarded { seq, ts, vp8 })
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
            vp8: None,
        }
    }

    fn fw(seq: u64, ts: u32) -> Option<Forwarded> {
        Some(Forwarded { seq, ts, vp8: None })
    }

    #[test]
    fn waits_for_keyframe_then_switches_without_gap() {
        let t0 = Instant::now();
        let mut f = TrackForwarder::new(90_000, 0);
        f.set_target(Some(SourceId(1)), t0);
        assert_eq!(f.waiting_for_keyframe(), Some(SourceId(1)));
        // Delta frames before the first keyframe are not forwarded.
        assert_eq!(f.on_packet(pkt(1, 10, 0, false), t0), None);
        assert_eq!(f.on_packet(pkt(1, 11, 3000, true), t0), fw(0, 3000));
        assert_eq!(f.waiting_for_keyframe(), None);
        assert_eq!(f.on_packet(pkt(1, 12, 3000, false), t0), fw(1, 3000));

        // Ask for layer 2: layer 1 keeps flowing until layer 2's keyframe.
        f.set_target(Some(SourceId(2)), t0);
        let t1 = t0 + Duration::from_millis(40);
        assert_eq!(f.on_packet(pkt(2, 500, 7, false), t1), None);
        assert_eq!(f.on_packet(pkt(1, 13, 6000, false), t1), fw(2, 6000));
        let t2 = t0 + Duration::from_millis(73);
        let out = f.on_packet(pkt(2, 501, 10, true), t2).unwrap();
        assert_eq!(out.seq, 3);
        assert_eq!(out.ts, 6000 + 33 * 90);
        // The old layer is now dropped.
        assert_eq!(f.on_packet(pkt(1, 14, 9000, false), t2), None);
        assert_eq!(f.switches(), 1);
    }

    #[test]
    fn vp8_picture_ids_continue_across_the_switch() {
        use crate::forward::vp8_rewrite::Vp8Fields;
        let t0 = Instant::now();
        let mut f = TrackForwarder::new(90_000, 0);
        let v = |pid: u16| {
            Some(Vp8Fields {
                picture_id: Some(pid),
                picture_id_15: true,
                tl0_pic_idx: Some(pid as u8),
                key_idx: None,
            })
        };
        f.set_target(Some(SourceId(1)), t0);
        let mut p = pkt(1, 1, 0, true);
        p.vp8 = v(1000);
        assert_eq!(
            f.on_packet(p, t0).unwrap().vp8.unwrap().picture_id,
            Some(1000)
        );
        f.set_target(Some(SourceId(2)), t0);
        let mut q = pkt(2, 1, 0, true);
        q.vp8 = v(77);
        let out = f.on_packet(q, t0).unwrap().vp8.unwrap();
        assert_eq!(out.picture_id, Some(1001));
        assert_eq!(out.tl0_pic_idx, Some(1000u16 as u8 + 1));
    }

    #[test]
    fn a_long_wait_for_a_keyframe_after_a_reconnect_counts_as_a_freeze() {
        let t0 = Instant::now();
        let mut f = TrackForwarder::new(90_000, 0);
        f.set_target(Some(SourceId(1)), t0);
        // The first picture is not a freeze.
        assert!(f
            .on_packet(pkt(1, 1, 0, true), t0 + Duration::from_secs(1))
            .is_some());
        // The publisher leaves and comes back: 50 ms to the new keyframe is no freeze...
        f.set_target(None, t0 + Duration::from_secs(2));
        f.set_target(Some(SourceId(2)), t0 + Duration::from_secs(2));
        assert!(f
            .on_packet(pkt(2, 1, 0, true), t0 + Duration::from_millis(2050))
            .is_some());
        assert_eq!(f.keyframe_freezes(), 0);
        // ... 600 ms is.
        f.set_target(None, t0 + Duration::from_secs(3));
        f.set_target(Some(SourceId(3)), t0 + Duration::from_secs(3));
        assert_eq!(
            f.on_packet(pkt(3, 1, 0, false), t0 + Duration::from_millis(3300)),
            None
        );
        assert!(f
            .on_packet(pkt(3, 2, 0, true), t0 + Duration::from_millis(3600))
            .is_some());
        assert_eq!(f.keyframe_freezes(), 1);
        // A layer switch keeps the old layer flowing: never a freeze.
        f.set_target(Some(SourceId(4)), t0 + Duration::from_secs(4));
        assert!(f
            .on_packet(pkt(3, 3, 0, false), t0 + Duration::from_secs(5))
            .is_some());
        assert!(f
            .on_packet(pkt(4, 1, 0, true), t0 + Duration::from_secs(5))
            .is_some());
        assert_eq!(f.keyframe_freezes(), 1);
    }

    #[test]
    fn losing_the_target_stops_forwarding() {
        let t0 = Instant::now();
        let mut f = TrackForwarder::new(48_000, 0);
        f.set_target(Some(SourceId(1)), t0);
        assert!(f.on_packet(pkt(1, 1, 0, true), t0).is_some());
        f.set_target(None, t0);
        assert_eq!(f.on_packet(pkt(1, 2, 960, true), t0), None);
        assert_eq!(f.waiting_for_keyframe(), None);
    }
}
