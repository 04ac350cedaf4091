//! The room's program: which publisher stream feeds each fixed slot, and which simulcast layer
//! of it a subscriber should get. Pure bookkeeping driven by the caller's clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::forward::keyframe_request::KeyframeThrottle;
use crate::forward::layer::{choose_layer, order_rids, LayerPref};
use crate::forward::SourceId;

/// Bytes of RTP, SRTP, UDP and IP headers per packet, counted into layer rates so that they
/// compare with the congestion controller's estimate of the wire.
const WIRE_OVERHEAD: usize = 60;

/// Rates assumed for a flowing layer before it has been measured, lowest layer first.
fn assumed_rate(slot: Slot, index: usize, layers: usize) -> u64 {
    if slot.is_audio() {
        return 64_000;
    }
    match (layers, index) {
        (1, _) => 1_000_000,
        (2, 0) => 300_000,
        (2, _) => 1_200_000,
        (_, 0) => 180_000,
        (_, 1) => 550_000,
        _ => 1_700_000,
    }
}

/// A layer that sent nothing for this long is treated as stopped (Chromium drops its top
/// layers when its own uplink estimate falls).
pub const LAYER_IDLE: Duration = Duration::from_millis(1500);

/// Fixed receive slots of a WHEP viewer, in m-line order. Fixed slots mean the SFU never
/// renegotiates: sources come and go inside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    TeacherAudio,
    TeacherCamera,
    Courseware,
}

impl Slot {
    pub fn is_audio(self) -> bool {
        matches!(self, Slot::TeacherAudio)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::TeacherAudio => "teacher_audio",
            Slot::TeacherCamera => "teacher_camera",
            Slot::Courseware => "courseware",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Audio,
    Video,
}

/// Maps m-lines (in SDP order) to slots: the first audio is the teacher's voice, the first
/// video the camera, the second video the courseware. Extra m-lines get no slot.
pub fn assign_slots(kinds: &[Kind]) -> Vec<Option<Slot>> {
    let (mut audio, mut video) = (0, 0);
    kinds
        .iter()
        .map(|k| match k {
            Kind::Audio => {
                audio += 1;
                (audio == 1).then_some(Slot::TeacherAudio)
            }
            Kind::Video => {
                video += 1;
                match video {
                    1 => Some(Slot::TeacherCamera),
                    2 => Some(Slot::Courseware),
                    _ => None,
                }
            }
        })
        .collect()
}

pub fn next_source_id() -> SourceId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    SourceId(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// One incoming stream (a simulcast layer) of the slot's publisher.
#[derive(Debug, Clone)]
pub struct Layer {
    pub source: SourceId,
    pub rid: Option<String>,
    pub ssrc: Option<u32>,
    pub last_packet: Option<Instant>,
    pub packets: u64,
    pub bytes: u64,
    pub keyframes: u64,
    pub size: Option<(u16, u16)>,
    pub throttle: KeyframeThrottle,
    rate: RateMeter,
}

impl Layer {
    fn new(rid: Option<String>, keyframe_interval: Duration) -> Self {
        Layer {
            source: next_source_id(),
            rid,
            ssrc: None,
            last_packet: None,
            packets: 0,
            bytes: 0,
            keyframes: 0,
            size: None,
            throttle: KeyframeThrottle::new(keyframe_interval),
            rate: RateMeter::default(),
        }
    }

    pub fn is_active(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|t| now.saturating_duration_since(t) < LAYER_IDLE)
    }

    pub fn bitrate_bps(&self) -> u64 {
        self.rate.bps
    }
}

/// Bits per second over the last second, updated as packets arrive.
#[derive(Debug, Clone, Default)]
struct RateMeter {
    window_start: Option<Instant>,
    window_bytes: u64,
    bps: u64,
}

impl RateMeter {
    fn add(&mut self, bytes: usize, now: Instant) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= Duration::from_secs(1) {
            let new = self.window_bytes * 8 * 1000 / elapsed.as_millis().max(1) as u64;
            // Lean high: keyframes make single windows spiky, and an allocation that
            // underestimates a layer congests the classroom's link.
            self.bps = new.max((self.bps + new) / 2);
            self.window_start = Some(now);
            self.window_bytes = 0;
        }
        self.window_bytes += bytes as u64;
    }
}

/// What feeds one slot: the publisher session and its layers, lowest first.
#[derive(Debug, Clone)]
pub struct SlotSource {
    pub session: u64,
    pub layers: Vec<Layer>,
}

impl SlotSource {
    /// `rids` as negotiated (SDP order); empty for a track without simulcast.
    pub fn new(session: u64, rids: &[String], keyframe_interval: Duration) -> Self {
        let layers = if rids.is_empty() {
            vec![Layer::new(None, keyframe_interval)]
        } else {
            order_rids(rids)
                .into_iter()
                .map(|i| Layer::new(Some(rids[i].clone()), keyframe_interval))
                .collect()
        };
        SlotSource { session, layers }
    }

    pub fn layer_index(&self, rid: Option<&str>) -> Option<usize> {
        match rid {
            None if self.layers.len() == 1 => Some(0),
            None => None,
            Some(r) => self.layers.iter().position(|l| l.rid.as_deref() == Some(r)),
        }
    }

    pub fn layer_of_source(&mut self, source: SourceId) -> Option<&mut Layer> {
        self.layers.iter_mut().find(|l| l.source == source)
    }

    /// Records a packet of layer `idx`.
    pub fn on_packet(
        &mut self,
        idx: usize,
        ssrc: u32,
        bytes: usize,
        keyframe: bool,
        size: Option<(u16, u16)>,
        now: Instant,
    ) {
        if let Some(l) = self.layers.get_mut(idx) {
            l.ssrc = Some(ssrc);
            l.last_packet = Some(now);
            l.packets += 1;
            l.bytes += bytes as u64;
            l.rate.add(bytes + WIRE_OVERHEAD, now);
            if keyframe {
                l.keyframes += 1;
                if size.is_some() {
                    l.size = size;
                }
            }
        }
    }

    /// Wire bitrate of each layer (lowest first) for the allocator; `None` where not flowing.
    pub fn layer_rates(&self, slot: Slot, now: Instant) -> Vec<Option<u64>> {
        let n = self.layers.len();
        self.layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                l.is_active(now).then(|| match l.bitrate_bps() {
                    0 => assumed_rate(slot, i, n),
                    b => b,
                })
            })
            .collect()
    }

    /// The source a subscriber with preference `pref` should follow now.
    pub fn choose(&self, pref: LayerPref, now: Instant) -> Option<SourceId> {
        let active: Vec<bool> = self.layers.iter().map(|l| l.is_active(now)).collect();
        choose_layer(&active, pref).map(|i| self.layers[i].source)
    }
}

/// A room's program: its slots and the publisher that owns the lesson.
#[derive(Debug, Default)]
pub struct Program {
    pub slots: HashMap<Slot, SlotSource>,
}

impl Program {
    /// Install a publisher's tracks, replacing whatever fed those slots (a reconnect).
    pub fn publish(&mut self, slot: Slot, source: SlotSource) {
        self.slots.insert(slot, source);
    }

    /// Remove everything `session` published; returns the slots it held.
    pub fn unpublish(&mut self, session: u64) -> Vec<Slot> {
        let gone: Vec<Slot> = self
            .slots
            .iter()
            .filter(|(_, s)| s.session == session)
            .map(|(slot, _)| *slot)
            .collect();
        for s in &gone {
            self.slots.remove(s);
        }
        gone
    }

    pub fn choose(&self, slot: Slot, pref: LayerPref, now: Instant) -> Option<SourceId> {
        self.slots.get(&slot).and_then(|s| s.choose(pref, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_mline_order() {
        use Kind::*;
        assert_eq!(
            assign_slots(&[Audio, Video, Video, Video, Audio]),
            vec![
                Some(Slot::TeacherAudio),
                Some(Slot::TeacherCamera),
                Some(Slot::Courseware),
                None,
                None
            ]
        );
        assert_eq!(
            assign_slots(&[Video, Audio]),
            vec![Some(Slot::TeacherCamera), Some(Slot::TeacherAudio)]
        );
    }

    #[test]
    fn layer_choice_follows_activity() {
        let t0 = Instant::now();
        let rids: Vec<String> = ["h", "m", "l"].iter().map(|s| s.to_string()).collect();
        let mut src = SlotSource::new(7, &rids, Duration::from_millis(500));
        assert_eq!(src.layer_index(Some("l")), Some(0));
        assert_eq!(src.layer_index(Some("h")), Some(2));
        assert_eq!(src.layer_index(None), None);
        assert_eq!(src.choose(LayerPref::High, t0), None);
        src.on_packet(0, 11, 100, true, None, t0);
        src.on_packet(2, 33, 1000, true, Some((1280, 720)), t0);
        assert_eq!(src.choose(LayerPref::High, t0), Some(src.layers[2].source));
        assert_eq!(src.choose(LayerPref::Mid, t0), Some(src.layers[0].source));
        assert_eq!(src.layers[2].size, Some((1280, 720)));
        // The high layer stops; low keeps flowing.
        let t1 = t0 + Duration::from_secs(2);
        src.on_packet(0, 11, 100, false, None, t1);
        assert_eq!(src.choose(LayerPref::High, t1), Some(src.layers[0].source));
    }

    #[test]
    fn reconnect_replaces_the_slot() {
        let mut p = Program::default();
        let d = Duration::from_millis(500);
        p.publish(Slot::TeacherAudio, SlotSource::new(1, &[], d));
        let old = p.slots[&Slot::TeacherAudio].layers[0].source;
        p.publish(Slot::TeacherAudio, SlotSource::new(2, &[], d));
        let new = p.slots[&Slot::TeacherAudio].layers[0].source;
        assert_ne!(old, new);
        assert!(p.unpublish(1).is_empty());
        assert_eq!(p.unpublish(2), vec![Slot::TeacherAudio]);
        assert!(p.slots.is_empty());
    }
}
