//! The room's program: which publisher stream feeds each fixed slot, and which simulcast layer
//! of it a subscriber should get. Pure bookkeeping driven by the caller's clock.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::forward::keyframe_request::KeyframeThrottle;
use crate::forward::layer::{choose_layer, order_rids, LayerPref};
use crate::forward::SourceId;

/// Bytes of RTP, SRTP, UDP and IP headers per packet, counted into layer rates so that they
/// compare with the congestion controller's estimate of the wire.
const WIRE_OVERHEAD: usize = 60;

/// Rates assumed for a flowing layer before it has been measured, lowest layer first.
fn assumed_rate(audio: bool, index: usize, layers: usize) -> u64 {
    if audio {
        return 64_000;
    }
    match (layers, index) {
        (1, _) => 1_000_000,
        (2, 0) => 200_000,
        (2, _) => 800_000,
        (_, 0) => 180_000,
        (_, 1) => 550_000,
        _ => 1_700_000,
    }
}

/// A layer that sent nothing for this long is treated as stopped (Chromium drops its top
/// layers when its own uplink estimate falls).
pub const LAYER_IDLE: Duration = Duration::from_millis(1500);

/// On-stage classrooms and teacher-console tiles a viewer can take at most.
pub const MAX_STAGE_SLOTS: usize = crate::room::state::MAX_STAGE;
pub const MAX_TILES: usize = 24;

/// Fixed receive slots of a WHEP viewer, in m-line order. Fixed slots mean the SFU never
/// renegotiates: sources come and go inside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    TeacherAudio,
    TeacherCamera,
    Courseware,
    /// The i-th classroom on stage: heard and seen by everyone.
    StageAudio(u8),
    StageVideo(u8),
    /// The i-th classroom tile of the teacher console (small layer, video only).
    Tile(u8),
}

impl Slot {
    pub fn is_audio(self) -> bool {
        matches!(self, Slot::TeacherAudio | Slot::StageAudio(_))
    }
    pub fn label(self) -> String {
        match self {
            Slot::TeacherAudio => "teacher_audio".into(),
            Slot::TeacherCamera => "teacher_camera".into(),
            Slot::Courseware => "courseware".into(),
            Slot::StageAudio(i) => format!("stage_audio_{i}"),
            Slot::StageVideo(i) => format!("stage_video_{i}"),
            Slot::Tile(i) => format!("tile_{i}"),
        }
    }
}

/// What one of a publisher's m-lines carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Track {
    TeacherAudio,
    TeacherCamera,
    Courseware,
    /// A classroom's own feed: its mic and its (small) camera.
    ClassAudio,
    ClassVideo,
}

impl Track {
    pub fn is_audio(self) -> bool {
        matches!(self, Track::TeacherAudio | Track::ClassAudio)
    }
    /// The lesson itself (what the teacher publishes), as opposed to a classroom's feed.
    pub fn is_teacher(self) -> bool {
        matches!(
            self,
            Track::TeacherAudio | Track::TeacherCamera | Track::Courseware
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Track::TeacherAudio => "teacher_audio",
            Track::TeacherCamera => "teacher_camera",
            Track::Courseware => "courseware",
            Track::ClassAudio => "class_audio",
            Track::ClassVideo => "class_video",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Audio,
    Video,
}

/// Maps a viewer's m-lines (in SDP order) to slots. Audio: the teacher's voice, then one per
/// on-stage classroom. Video: the camera, the courseware, one per on-stage classroom (as many
/// as the extra audio m-lines), then tiles. Extra m-lines get no slot.
pub fn assign_slots(kinds: &[Kind]) -> Vec<Option<Slot>> {
    let audios = kinds.iter().filter(|k| **k == Kind::Audio).count();
    let stage = audios.saturating_sub(1).min(MAX_STAGE_SLOTS);
    let (mut audio, mut video) = (0usize, 0usize);
    kinds
        .iter()
        .map(|k| match k {
            Kind::Audio => {
                audio += 1;
                match audio {
                    1 => Some(Slot::TeacherAudio),
                    n if n - 2 < stage => Some(Slot::StageAudio((n - 2) as u8)),
                    _ => None,
                }
            }
            Kind::Video => {
                video += 1;
                match video {
                    1 => Some(Slot::TeacherCamera),
                    2 => Some(Slot::Courseware),
                    n if n - 3 < stage => Some(Slot::StageVideo((n - 3) as u8)),
                    n if n - 3 - stage < MAX_TILES => Some(Slot::Tile((n - 3 - stage) as u8)),
                    _ => None,
                }
            }
        })
        .collect()
}

/// Maps a publisher's m-lines to what they carry: the teacher sends voice, camera and
/// courseware; a classroom its mic and camera.
pub fn assign_tracks(kinds: &[Kind], teacher: bool) -> Vec<Option<Track>> {
    let (mut audio, mut video) = (0, 0);
    kinds
        .iter()
        .map(|k| match k {
            Kind::Audio => {
                audio += 1;
                (audio == 1).then_some(if teacher {
                    Track::TeacherAudio
                } else {
                    Track::ClassAudio
                })
            }
            Kind::Video => {
                video += 1;
                match (teacher, video) {
                    (true, 1) => Some(Track::TeacherCamera),
                    (true, 2) => Some(Track::Courseware),
                    (false, 1) => Some(Track::ClassVideo),
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
    /// Dynacast asked the publisher to stop this layer: it still counts as available (at its
    /// last rate), and wanting it asks the publisher to resume it.
    pub held: bool,
    rate: RateMeter,
    /// Wire rate of each temporal layer (by TID), when the publisher sends them.
    tid_rates: [RateMeter; MAX_TEMPORAL],
    /// How many temporal layers this layer has shown (highest TID + 1; 0: none).
    pub temporal: u8,
}

/// Temporal layers tracked per simulcast layer (VP8 allows 4).
const MAX_TEMPORAL: usize = 4;

/// One rung of a slot's quality ladder: a simulcast layer with its temporal layers up to
/// `max_tid` (`None`: all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub layer: usize,
    pub max_tid: Option<u8>,
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
            held: false,
            rate: RateMeter::default(),
            tid_rates: Default::default(),
            temporal: 0,
        }
    }

    pub fn is_active(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|t| now.saturating_duration_since(t) < LAYER_IDLE)
    }

    /// Flowing, or held by dynacast (the publisher resumes it when asked).
    pub fn is_available(&self, now: Instant) -> bool {
        self.is_active(now) || (self.held && self.last_packet.is_some())
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

    /// Records the temporal layer of a packet of layer `idx`.
    pub fn on_temporal(&mut self, idx: usize, tid: u8, bytes: usize, now: Instant) {
        let Some(l) = self.layers.get_mut(idx) else {
            return;
        };
        let t = (tid as usize).min(MAX_TEMPORAL - 1);
        l.temporal = l.temporal.max(t as u8 + 1);
        l.tid_rates[t].add(bytes + WIRE_OVERHEAD, now);
    }

    /// The slot's quality ladder, lowest first: each simulcast layer, and below each its
    /// reduced frame rates (the lowest layer down to its base temporal layer; the middle ones
    /// down to half their frame rate, as a lesson picture at a quarter of the rate is a slide
    /// show). The top layer of several is offered whole: at half its frame rate it costs more
    /// than the next layer down at full rate, and a link that falls from it should land there
    /// in one step.
    pub fn ladder(&self) -> Vec<Step> {
        let mut steps = vec![];
        let top = self.layers.len().saturating_sub(1);
        for (i, l) in self.layers.iter().enumerate() {
            let n = l.temporal;
            if n >= 2 && (i == 0 || i < top) {
                let first = if i == 0 { 0 } else { n - 2 };
                steps.extend((first..n - 1).map(|t| Step {
                    layer: i,
                    max_tid: Some(t),
                }));
            }
            steps.push(Step {
                layer: i,
                max_tid: None,
            });
        }
        steps
    }

    /// Wire bitrate of each step of [`SlotSource::ladder`] for the allocator; `None` where its
    /// layer is not flowing.
    pub fn ladder_rates(&self, audio: bool, now: Instant) -> (Vec<Step>, Vec<Option<u64>>) {
        let steps = self.ladder();
        let full = self.layer_rates(audio, now);
        let rates = steps
            .iter()
            .map(|st| {
                let whole = full[st.layer]?;
                let Some(t) = st.max_tid else {
                    return Some(whole);
                };
                let l = &self.layers[st.layer];
                let part: u64 = l.tid_rates[..=t as usize].iter().map(|r| r.bps).sum();
                let all: u64 = l.tid_rates.iter().map(|r| r.bps).sum();
                // Scaled to the layer's rate, so the rungs of one layer stay consistent with it;
                // before the first measurement, a share by frame count.
                Some(if all > 0 {
                    (whole as u128 * part as u128 / all as u128) as u64
                } else {
                    whole * (t as u64 + 1) / l.temporal.max(1) as u64
                })
            })
            .collect();
        (steps, rates)
    }

    /// Wire bitrate of each layer (lowest first) for the allocator; `None` where not flowing.
    pub fn layer_rates(&self, audio: bool, now: Instant) -> Vec<Option<u64>> {
        let n = self.layers.len();
        self.layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                l.is_available(now).then(|| match l.bitrate_bps() {
                    0 => assumed_rate(audio, i, n),
                    b => b,
                })
            })
            .collect()
    }

    /// When `desired` is a layer that is not flowing (held by dynacast), the best flowing
    /// layer at or below it (else above); `None` when `desired` flows or nothing does.
    pub fn flowing_instead_of(&self, desired: SourceId, now: Instant) -> Option<SourceId> {
        let i = self.layers.iter().position(|l| l.source == desired)?;
        if self.layers[i].is_active(now) {
            return None;
        }
        let active: Vec<bool> = self.layers.iter().map(|l| l.is_active(now)).collect();
        (0..i)
            .rev()
            .chain(i + 1..self.layers.len())
            .find(|&j| active[j])
            .map(|j| self.layers[j].source)
    }

    /// The source a subscriber with preference `pref` should follow now.
    pub fn choose(&self, pref: LayerPref, now: Instant) -> Option<SourceId> {
        let active: Vec<bool> = self.layers.iter().map(|l| l.is_available(now)).collect();
        choose_layer(&active, pref).map(|i| self.layers[i].source)
    }
}

/// One published track: which session sends it and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrackKey {
    pub session: u64,
    pub track: Track,
}

/// A room's program: every published track, and which of them fills each viewer slot. The
/// teacher's tracks go to the teacher slots, the on-stage classrooms' to the stage slots, and
/// the classroom feeds in tile order to the tiles.
#[derive(Debug, Default)]
pub struct Program {
    pub sources: HashMap<TrackKey, SlotSource>,
    /// The session that publishes the lesson.
    teacher: Option<u64>,
    /// Classroom (sub) → the session publishing its feed.
    feeds: HashMap<String, u64>,
    /// Session → the participant (sub) that publishes it.
    owners: HashMap<u64, String>,
    stage: Vec<String>,
    tiles: Vec<String>,
    muted: HashSet<String>,
    /// Track → the slots it fills now; rebuilt when the stage, tiles or mutes change, so the
    /// per-packet path does one lookup.
    routes: HashMap<TrackKey, Vec<Slot>>,
}

impl Program {
    /// Install a publisher's track. A teacher's new session replaces the old one (a reconnect).
    pub fn publish(&mut self, owner: &str, track: Track, source: SlotSource) {
        let session = source.session;
        match track {
            Track::ClassAudio | Track::ClassVideo => {
                if let Some(old) = self.feeds.insert(owner.to_string(), session) {
                    if old != session {
                        self.remove_session(old);
                    }
                }
            }
            _ => {
                if let Some(old) = self.teacher.replace(session) {
                    if old != session {
                        self.remove_session(old);
                    }
                }
            }
        }
        self.owners.insert(session, owner.to_string());
        self.sources.insert(TrackKey { session, track }, source);
        self.rebuild_routes();
    }

    fn remove_session(&mut self, session: u64) -> Vec<Track> {
        let gone: Vec<TrackKey> = self
            .sources
            .keys()
            .filter(|k| k.session == session)
            .copied()
            .collect();
        for k in &gone {
            self.sources.remove(k);
        }
        self.owners.remove(&session);
        if self.teacher == Some(session) {
            self.teacher = None;
        }
        self.feeds.retain(|_, s| *s != session);
        gone.into_iter().map(|k| k.track).collect()
    }

    /// Remove everything `session` published; returns the tracks it held.
    pub fn unpublish(&mut self, session: u64) -> Vec<Track> {
        let gone = self.remove_session(session);
        self.rebuild_routes();
        gone
    }

    /// Who is on stage, the tile order and who is muted, from the room's state.
    pub fn arrange(
        &mut self,
        stage: &[String],
        tiles: &[String],
        muted: impl Iterator<Item = String>,
    ) {
        self.stage = stage.to_vec();
        self.tiles = tiles.to_vec();
        self.muted = muted.collect();
        self.rebuild_routes();
    }

    /// The track that fills `slot` now.
    pub fn source_key(&self, slot: Slot) -> Option<TrackKey> {
        let feed = |sub: &String, track| {
            let session = *self.feeds.get(sub)?;
            Some(TrackKey { session, track })
        };
        let key = match slot {
            Slot::TeacherAudio => TrackKey {
                session: self.teacher?,
                track: Track::TeacherAudio,
            },
            Slot::TeacherCamera => TrackKey {
                session: self.teacher?,
                track: Track::TeacherCamera,
            },
            Slot::Courseware => TrackKey {
                session: self.teacher?,
                track: Track::Courseware,
            },
            Slot::StageAudio(i) => {
                let sub = self.stage.get(i as usize)?;
                if self.muted.contains(sub) {
                    return None;
                }
                feed(sub, Track::ClassAudio)?
            }
            Slot::StageVideo(i) => feed(self.stage.get(i as usize)?, Track::ClassVideo)?,
            Slot::Tile(i) => feed(self.tiles.get(i as usize)?, Track::ClassVideo)?,
        };
        self.sources.contains_key(&key).then_some(key)
    }

    pub fn source(&self, slot: Slot) -> Option<&SlotSource> {
        self.sources.get(&self.source_key(slot)?)
    }

    /// The participant whose track fills `slot` (a viewer never gets its own media back).
    pub fn owner(&self, slot: Slot) -> Option<&str> {
        let key = self.source_key(slot)?;
        self.owners.get(&key.session).map(String::as_str)
    }

    pub fn owner_of_session(&self, session: u64) -> Option<&str> {
        self.owners.get(&session).map(String::as_str)
    }

    /// The slots `key` fills now.
    pub fn routes(&self, key: &TrackKey) -> &[Slot] {
        self.routes.get(key).map_or(&[], Vec::as_slice)
    }

    /// The layer with this source id, wherever it is published.
    pub fn layer_by_source(&mut self, source: SourceId) -> Option<(u64, &mut Layer)> {
        self.sources.values_mut().find_map(|s| {
            let session = s.session;
            s.layer_of_source(source).map(|l| (session, l))
        })
    }

    fn rebuild_routes(&mut self) {
        let mut routes: HashMap<TrackKey, Vec<Slot>> = HashMap::new();
        let mut slots = vec![Slot::TeacherAudio, Slot::TeacherCamera, Slot::Courseware];
        for i in 0..self.stage.len().min(MAX_STAGE_SLOTS) {
            slots.push(Slot::StageAudio(i as u8));
            slots.push(Slot::StageVideo(i as u8));
        }
        for i in 0..self.tiles.len().min(MAX_TILES) {
            slots.push(Slot::Tile(i as u8));
        }
        for slot in slots {
            if let Some(k) = self.source_key(slot) {
                routes.entry(k).or_default().push(slot);
            }
        }
        self.routes = routes;
    }

    pub fn choose(&self, slot: Slot, pref: LayerPref, now: Instant) -> Option<SourceId> {
        self.source(slot).and_then(|s| s.choose(pref, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_mline_order() {
        use Kind::*;
        assert_eq!(
            assign_slots(&[Audio, Video, Video, Video, Video]),
            vec![
                Some(Slot::TeacherAudio),
                Some(Slot::TeacherCamera),
                Some(Slot::Courseware),
                Some(Slot::Tile(0)),
                Some(Slot::Tile(1)),
            ]
        );
        // A second audio m-line asks for a stage: the third video is the stage's camera.
        assert_eq!(
            assign_slots(&[Audio, Video, Video, Audio, Video, Video]),
            vec![
                Some(Slot::TeacherAudio),
                Some(Slot::TeacherCamera),
                Some(Slot::Courseware),
                Some(Slot::StageAudio(0)),
                Some(Slot::StageVideo(0)),
                Some(Slot::Tile(0)),
            ]
        );
        assert_eq!(
            assign_slots(&[Video, Audio]),
            vec![Some(Slot::TeacherCamera), Some(Slot::TeacherAudio)]
        );
        use Track as T;
        assert_eq!(
            assign_tracks(&[Audio, Video, Video, Video], true),
            vec![
                Some(T::TeacherAudio),
                Some(T::TeacherCamera),
                Some(T::Courseware),
                None
            ]
        );
        assert_eq!(
            assign_tracks(&[Audio, Video, Video], false),
            vec![Some(T::ClassAudio), Some(T::ClassVideo), None]
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
    fn held_layers_stay_choosable_but_fresh_slots_start_on_what_flows() {
        let t0 = Instant::now();
        let rids: Vec<String> = ["l", "m", "h"].iter().map(|s| s.to_string()).collect();
        let mut src = SlotSource::new(1, &rids, Duration::from_millis(500));
        for i in 0..3 {
            src.on_packet(i, 10 + i as u32, 1000, true, None, t0);
        }
        let t1 = t0 + Duration::from_secs(3);
        src.on_packet(0, 10, 1000, false, None, t1);
        // h stopped by the publisher on dynacast's request: still offered at its last rate.
        src.layers[2].held = true;
        let rates = src.layer_rates(false, t1);
        assert!(rates[0].is_some() && rates[1].is_none() && rates[2].is_some());
        assert_eq!(src.choose(LayerPref::High, t1), Some(src.layers[2].source));
        assert_eq!(
            src.flowing_instead_of(src.layers[2].source, t1),
            Some(src.layers[0].source)
        );
        assert_eq!(src.flowing_instead_of(src.layers[0].source, t1), None);
    }

    #[test]
    fn the_ladder_adds_reduced_frame_rates_below_each_layer() {
        let t0 = Instant::now();
        let rids: Vec<String> = ["l", "m", "h"].iter().map(|s| s.to_string()).collect();
        let mut src = SlotSource::new(1, &rids, Duration::from_millis(500));
        // No temporal layers seen: one rung per simulcast layer.
        let plain: Vec<Step> = (0..3)
            .map(|layer| Step {
                layer,
                max_tid: None,
            })
            .collect();
        assert_eq!(src.ladder(), plain);
        // L1T3 on every layer for two seconds: TIDs 0, 2, 1, 2; the base pictures are bigger.
        for ms in (0..2200u64).step_by(50) {
            let t = t0 + Duration::from_millis(ms);
            let tid = [0u8, 2, 1, 2][(ms / 50 % 4) as usize];
            for i in 0..3 {
                let bytes = (1 + i * 3) * if tid == 0 { 1200 } else { 600 };
                src.on_packet(i, 10 + i as u32, bytes, false, None, t);
                src.on_temporal(i, tid, bytes, t);
            }
        }
        let (steps, rates) = src.ladder_rates(false, t0 + Duration::from_millis(2200));
        let rung = |layer, max_tid| Step { layer, max_tid };
        assert_eq!(
            steps,
            vec![
                rung(0, Some(0)),
                rung(0, Some(1)),
                rung(0, None),
                rung(1, Some(1)),
                rung(1, None),
                rung(2, None),
            ]
        );
        let r: Vec<u64> = rates.iter().map(|r| r.unwrap()).collect();
        assert!(
            r.windows(2).all(|w| w[0] < w[1]),
            "rates rise along the ladder: {r:?}"
        );
        // Base layer (one picture in four, twice the size) is 2/5 of the whole; half rate 3/5.
        let whole = r[2] as f64;
        assert!((r[0] as f64 / whole - 0.4).abs() < 0.05, "{r:?}");
        assert!((r[1] as f64 / whole - 0.6).abs() < 0.05, "{r:?}");
    }

    #[test]
    fn reconnect_replaces_the_teacher() {
        let mut p = Program::default();
        let d = Duration::from_millis(500);
        p.publish("t", Track::TeacherAudio, SlotSource::new(1, &[], d));
        let old = p.source(Slot::TeacherAudio).unwrap().layers[0].source;
        p.publish("t", Track::TeacherAudio, SlotSource::new(2, &[], d));
        let new = p.source(Slot::TeacherAudio).unwrap().layers[0].source;
        assert_ne!(old, new);
        assert!(p.unpublish(1).is_empty());
        assert_eq!(p.unpublish(2), vec![Track::TeacherAudio]);
        assert!(p.sources.is_empty());
        assert!(p.source(Slot::TeacherAudio).is_none());
    }

    #[test]
    fn stage_tiles_and_mute_route_classroom_feeds() {
        let mut p = Program::default();
        let d = Duration::from_millis(500);
        let rids: Vec<String> = vec!["l".into(), "h".into()];
        p.publish("t", Track::TeacherAudio, SlotSource::new(1, &[], d));
        for (sub, session) in [("a", 10), ("b", 11)] {
            p.publish(sub, Track::ClassAudio, SlotSource::new(session, &[], d));
            p.publish(sub, Track::ClassVideo, SlotSource::new(session, &rids, d));
        }
        let b_audio = TrackKey {
            session: 11,
            track: Track::ClassAudio,
        };
        let b_video = TrackKey {
            session: 11,
            track: Track::ClassVideo,
        };
        assert!(p.source(Slot::StageAudio(0)).is_none());
        p.arrange(&["b".into()], &["a".into(), "b".into()], std::iter::empty());
        assert_eq!(p.source_key(Slot::StageAudio(0)), Some(b_audio));
        assert_eq!(p.owner(Slot::StageVideo(0)), Some("b"));
        assert_eq!(p.routes(&b_video), &[Slot::StageVideo(0), Slot::Tile(1)]);
        assert_eq!(p.routes(&b_audio), &[Slot::StageAudio(0)]);
        // Muted: the stage keeps b's picture but not its voice.
        p.arrange(
            &["b".into()],
            &["a".into(), "b".into()],
            ["b".to_string()].into_iter(),
        );
        assert!(p.source(Slot::StageAudio(0)).is_none());
        assert!(p.routes(&b_audio).is_empty());
        assert_eq!(p.owner(Slot::StageVideo(0)), Some("b"));
        // b leaves: its slots empty, a's tile stays.
        p.unpublish(11);
        assert!(p.source(Slot::StageVideo(0)).is_none());
        assert_eq!(p.owner(Slot::Tile(0)), Some("a"));
        assert!(p.source(Slot::Tile(1)).is_none());
    }
}
