//! One subscriber slot (e.g. "teacher camera" for one classroom): which source it follows,
//! where it switches, which of its temporal layers it passes, and the rewritten numbering of
//! what it forwards.
//!
//! Temporal layers are the fine steps between simulcast layers: leaving out a VP8 source's
//! upper temporal layers halves or quarters its frame rate with no keyframe. Fewer layers take
//! effect at the next picture; more at the next base-layer (TID 0) picture, which references
//! nothing the subscriber was not sent.

use std::time::Instant;

use super::rewrite::Rewriter;
use super::vp8_rewrite::{pid_newer, Vp8Fields, Vp8Rewriter};
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
    /// Highest temporal layer wanted (`None`: all of them).
    max_tid: Option<u8>,
    /// Highest temporal layer being passed now.
    tid_now: Option<u8>,
    /// The target is a smaller layer: until its keyframe, pass only the current source's base
    /// temporal layer.
    bridging: bool,
    /// The picture being forwarded or left out: (source, picture id, forwarded).
    picture: Option<(SourceId, u16, bool)>,
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
            max_tid: None,
            tid_now: None,
            bridging: false,
            picture: None,
        }
    }

    /// Whether the target is a smaller layer than the current one. Until the target's keyframe
    /// arrives, only the current source's base temporal layer is passed: a switch down mostly
    /// follows a capacity drop, and the whole current layer meanwhile keeps the link's queue
    /// growing (and the voice behind it late). Its base layer is a fraction of its rate at a
    /// lower frame rate, with no keyframe needed. Sources without temporal layer ids pass whole.
    pub fn set_bridging(&mut self, down: bool) {
        self.bridging = down;
    }

    /// Pass temporal layers up to `max` (`None`: all).
    pub fn set_temporal(&mut self, max: Option<u8>) {
        self.max_tid = max;
    }

    /// The highest temporal layer wanted (`None`: all).
    pub fn temporal_target(&self) -> Option<u8> {
        self.max_tid
    }

    /// The highest temporal layer being passed now (`None`: all).
    pub fn temporal(&self) -> Option<u8> {
        self.tid_now
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
            // A keyframe references nothing: any temporal layer can start here.
            self.tid_now = self.max_tid;
            self.picture = None;
        }
        if Some(p.source) != self.current {
            return None;
        }
        if !self.temporal_pass(&p) {
            self.rewriter.drop_packet(p.source, p.seq);
            if let Some(f) = p.vp8 {
                self.vp8.drop_picture(p.source, f);
            }
            return None;
        }
        let (seq, ts) = self.rewriter.rewrite(p.source, p.seq, p.ts, now)?;
        let vp8 = p.vp8.and_then(|f| self.vp8.rewrite(p.source, f));
        Some(Forwarded { seq, ts, vp8 })
    }

    /// Whether a packet of the current source passes the temporal layer filter. One decision
    /// per picture, so a picture is forwarded whole or not at all.
    fn temporal_pass(&mut self, p: &PacketInfo) -> bool {
        let Some(f) = p.vp8 else { return true };
        let (Some(tid), Some(pid)) = (f.tid, f.picture_id) else {
            return true;
        };
        match self.picture {
            Some((src, cur, pass)) if src == p.source && cur == pid => return pass,
            Some((src, cur, _)) if src == p.source && !pid_newer(pid, cur, f.pid_mask()) => {
                // A late packet of an earlier picture: as that picture was decided.
                return !self.vp8.was_dropped(p.source, f);
            }
            _ => {}
        }
        // A new picture: fewer layers at once, more only from a base-layer picture.
        let max_tid = if self.bridging && self.waiting_for_keyframe().is_some() {
            Some(0)
        } else {
            self.max_tid
        };
        self.tid_now = match (self.tid_now, max_tid) {
            _ if tid == 0 => max_tid,
            (Some(now), Some(max)) => Some(now.min(max)),
            (None, max) => max,
            (Some(now), None) => Some(now),
        };
        let pass = self.tid_now.is_none_or(|m| tid <= m);
        self.picture = Some((p.source, pid, pass));
        pass
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
                tid: None,
                frame_start: true,
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

    /// A VP8 packet of picture `pid`, temporal layer `tid`, `start` of the picture or not.
    fn tl(seq: u64, pid: u16, tid: u8, start: bool, key: bool) -> PacketInfo {
        use crate::forward::vp8_rewrite::Vp8Fields;
        PacketInfo {
            source: SourceId(1),
            seq,
            ts: pid as u32 * 4500,
            keyframe_start: key,
            vp8: Some(Vp8Fields {
                picture_id: Some(pid),
                picture_id_15: true,
                tl0_pic_idx: Some((pid / 4) as u8),
                key_idx: None,
                tid: Some(tid),
                frame_start: start,
            }),
        }
    }

    /// The L1T3 pattern: TIDs 0, 2, 1, 2 repeating.
    fn l1t3(pid: u16) -> u8 {
        [0, 2, 1, 2][pid as usize % 4]
    }

    #[test]
    fn temporal_layers_are_left_out_whole_and_numbering_closes_up() {
        let t0 = Instant::now();
        let mut f = TrackForwarder::new(90_000, 0);
        f.set_target(Some(SourceId(1)), t0);
        // Pictures of two packets each; keyframe at picture 0.
        let mut seq = 0;
        let mut sent = vec![];
        let mut feed = |f: &mut TrackForwarder, pid: u16| {
            let mut out = vec![];
            for part in 0..2 {
                let p = tl(seq, pid, l1t3(pid), part == 0, pid == 0 && part == 0);
                seq += 1;
                if let Some(o) = f.on_packet(p, t0) {
                    out.push((o.seq, o.vp8.unwrap().picture_id.unwrap()));
                }
            }
            out
        };
        for pid in 0..4 {
            sent.extend(feed(&mut f, pid));
        }
        assert_eq!(sent.len(), 8, "all layers pass by default");
        assert_eq!(f.temporal(), None);
        // Half the frame rate: TID 2 goes at once (picture 5 is TID 2).
        f.set_temporal(Some(1));
        let mut half = vec![];
        for pid in 4..12 {
            half.extend(feed(&mut f, pid));
        }
        // Pictures 4 (TID 0), 6 (TID 1), 8, 10: numbered on without gaps.
        assert_eq!(
            half,
            vec![
                (8, 4),
                (9, 4),
                (10, 5),
                (11, 5),
                (12, 6),
                (13, 6),
                (14, 7),
                (15, 7)
            ]
        );
        assert_eq!(f.temporal(), Some(1));
        // Back to all layers after picture 12: TID 2 comes back from picture 16 (TID 0) on,
        // so 13 and 15 are still left out.
        let mut up = feed(&mut f, 12);
        f.set_temporal(None);
        for pid in 13..18 {
            up.extend(feed(&mut f, pid));
        }
        let pids: Vec<u16> = up.iter().map(|x| x.1).collect();
        assert_eq!(pids, vec![8, 8, 9, 9, 10, 10, 11, 11]);
        assert_eq!(f.temporal(), None);
        // Sequence numbers never skip.
        let seqs: Vec<u64> = up.iter().map(|x| x.0).collect();
        assert_eq!(seqs, (16..24).collect::<Vec<u64>>());
    }

    #[test]
    fn a_switch_down_passes_only_the_base_layer_until_the_keyframe() {
        let t0 = Instant::now();
        let mut f = TrackForwarder::new(90_000, 0);
        f.set_target(Some(SourceId(1)), t0);
        // One packet per picture of the current layer (source 1), L1T3.
        let passed = |f: &mut TrackForwarder, pids: std::ops::Range<u16>| -> Vec<u16> {
            pids.filter(|&pid| {
                f.on_packet(tl(pid as u64, pid, l1t3(pid), true, pid == 0), t0)
                    .is_some()
            })
            .collect()
        };
        assert_eq!(passed(&mut f, 0..4), vec![0, 1, 2, 3]);
        // Down to source 2: its keyframe is awaited, and meanwhile only TID 0 of source 1.
        f.set_target(Some(SourceId(2)), t0);
        f.set_bridging(true);
        assert_eq!(passed(&mut f, 4..12), vec![4, 8]);
        // Source 2's keyframe: the switch, with all of its layers.
        let mut key = tl(100, 50, 0, true, true);
        key.source = SourceId(2);
        assert!(f.on_packet(key, t0).is_some());
        assert_eq!(f.current(), Some(SourceId(2)));
        let mut next = tl(101, 51, 2, true, false);
        next.source = SourceId(2);
        assert!(
            f.on_packet(next, t0).is_some(),
            "TID 2 of the new layer passes"
        );
        // Bridging only applies while a keyframe is awaited: with none awaited, an up switch
        // or no switch at all leaves the layers as they were.
        let mut f = TrackForwarder::new(90_000, 0);
        f.set_target(Some(SourceId(1)), t0);
        f.set_bridging(true);
        assert_eq!(passed(&mut f, 0..4), vec![0, 1, 2, 3]);
    }

    #[test]
    fn late_packets_follow_their_pictures_decision() {
        let t0 = Instant::now();
        let mut f = TrackForwarder::new(90_000, 0);
        f.set_target(Some(SourceId(1)), t0);
        f.set_temporal(Some(0));
        assert!(f.on_packet(tl(0, 0, 0, true, true), t0).is_some());
        // Picture 1 (TID 2): its first packet is lost, its second is left out.
        assert!(f.on_packet(tl(2, 1, 2, false, false), t0).is_none());
        let p2 = f.on_packet(tl(3, 4, 0, true, false), t0).unwrap();
        assert_eq!(p2.seq, 2, "the missing packet 1 stays a gap to NACK");
        // The lost packet arrives: its picture was left out, so it is too.
        assert!(f.on_packet(tl(1, 1, 2, true, false), t0).is_none());
        // A retransmission of a forwarded packet keeps its number.
        assert_eq!(f.on_packet(tl(3, 4, 0, true, false), t0).unwrap().seq, 2);
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
