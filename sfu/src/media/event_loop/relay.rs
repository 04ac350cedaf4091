//! The media loop's side of relays between nodes.
//!
//! On the **origin** an edge node is one more kind of subscriber: it gets the room's teacher
//! tracks untouched (no rewriting; the edge's own forwarders do that for its classrooms), only
//! the layers it demands, and retransmissions from a short cache. On an **edge** the origin is
//! one more kind of publisher: a pseudo session (no ICE, no DTLS) whose tracks fill the program
//! slots exactly as a local teacher's would, so the edge's classrooms get their own allocation,
//! layer switches and repairs from the edge.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use str0m::format::{Codec as StrCodec, CodecSpec, FormatParams, PayloadParams};
use str0m::media::{Frequency, Rid};
use tracing::{debug, info};

use super::{codec_of, room_in, MediaLoop, Room};
use crate::auth::{Claims, Role};
use crate::cluster::wire::{Control, RelayPacket, TrackInfo};
use crate::forward::keyframe::Codec;
use crate::forward::SourceId;
use crate::media::snapshot::RelayInfo;
use crate::media::{RelaySend, RelayTx};
use crate::program::{SlotSource, Track, TrackKey};
use crate::room::RoomEvent;

/// Packets kept per relayed layer for the edges' NACKs (about 2 s of a 2 Mbit/s layer).
const REPAIR_CACHE: usize = 512;
/// At most this many packets asked again for one gap (a longer gap waits for a keyframe).
const MAX_NACK: u64 = 64;
/// Hop latencies kept for the percentiles in `/api/cluster`.
const LATENCY_SAMPLES: usize = 2048;
/// An edge keeps a lost relay's tracks this long, so a partition that heals (the same origin,
/// the same streams) continues without new sources, switches or keyframe waits.
const RELAY_GRACE: Duration = Duration::from_secs(10);

/// This process's stream ids: stable across connections (a reconnecting edge recognises the
/// same streams), different from any other process's.
fn stream_id(source: SourceId) -> u32 {
    static SALT: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let salt = *SALT.get_or_init(rand::random::<u32>);
    (source.0 as u32 ^ salt).max(1)
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Per-room relay state of the origin, kept in [`Room`].
#[derive(Default)]
pub(super) struct RoomRelay {
    /// Links of the edges subscribed to this room.
    pub links: Vec<u64>,
    /// Recent packets per layer, for NACKs from edges.
    cache: HashMap<SourceId, VecDeque<(u64, RelayPacket)>>,
    /// The payload type last seen per track (its codec goes in the announcement).
    pts: HashMap<TrackKey, u8>,
}

/// Origin: one edge connection and the rooms it subscribed to.
pub(super) struct RelayLink {
    peer: String,
    tx: RelayTx,
    rooms: HashMap<String, RoomOut>,
    packets: u64,
    bytes: u64,
    repairs: u64,
    created: Instant,
}

#[derive(Default)]
struct RoomOut {
    streams: HashMap<SourceId, u32>,
    sources: HashMap<u32, SourceId>,
    demanded: HashSet<u32>,
    announced: Option<Vec<TrackInfo>>,
    stage_sent: Option<(Vec<String>, Vec<String>)>,
}

/// Edge: one stream (a layer) received from the origin.
struct StreamIn {
    /// The pseudo session of this stream's publisher (one per owner: the teacher, and each
    /// classroom whose feed is relayed).
    key: u64,
    track: Track,
    rid: Option<Rid>,
    layer: usize,
    source: Option<SourceId>,
    codec: (Codec, PayloadParams),
    highest: Option<u64>,
}

/// Edge: a room whose program comes from another node.
pub(super) struct Upstream {
    link: u64,
    peer: String,
    tx: RelayTx,
    /// The pseudo session that "publishes" the relayed teacher tracks here, and the teacher.
    key: u64,
    owner: String,
    /// Every pseudo session of this relay: owner → session (the teacher's and classrooms').
    keys: HashMap<String, u64>,
    streams: HashMap<u32, StreamIn>,
    demand: Option<Vec<u32>>,
    /// When the connection to the origin was lost (the tracks are kept for [`RELAY_GRACE`]).
    lost_at: Option<Instant>,
    packets: u64,
    bytes: u64,
    nacked: u64,
    repaired: u64,
    latencies_us: VecDeque<u64>,
    created: Instant,
}

fn percentile(samples: &VecDeque<u64>, p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut v: Vec<u64> = samples.iter().copied().collect();
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    Some(v[i] as f64 / 1000.0)
}

fn track_of(name: &str) -> Option<Track> {
    [
        Track::TeacherAudio,
        Track::TeacherCamera,
        Track::Courseware,
        Track::ClassAudio,
        Track::ClassVideo,
    ]
    .into_iter()
    .find(|t| t.as_str() == name)
}

fn params_of(t: &TrackInfo) -> Option<(Codec, PayloadParams)> {
    let codec: StrCodec = t.codec.as_str().into();
    if matches!(codec, StrCodec::Unknown) {
        return None;
    }
    let spec = CodecSpec {
        codec,
        clock_rate: Frequency::new(t.clock_rate)?,
        channels: t.channels,
        format: FormatParams::parse_line(&t.fmtp),
    };
    let params = PayloadParams::new(t.pt.into(), None, spec);
    Some((codec_of(&params), params))
}

/// Where a packet goes besides this node's viewers: to every node relaying the room (a local
/// publisher's), to every one but the edge it came from (a classroom feed relayed from an edge),
/// or nowhere (the origin's program on an edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Onward {
    All,
    AllBut(u64),
    Nowhere,
}

impl Upstream {
    fn new(link: u64, peer: String, tx: RelayTx, now: Instant) -> Upstream {
        Upstream {
            link,
            peer,
            tx,
            key: 0,
            owner: String::new(),
            keys: HashMap::new(),
            streams: HashMap::new(),
            demand: None,
            lost_at: None,
            packets: 0,
            bytes: 0,
            nacked: 0,
            repaired: 0,
            latencies_us: VecDeque::new(),
            created: now,
        }
    }

    /// Tells the sending node which streams are needed now, when that changed.
    fn ask(&mut self, room_name: &str, room: &Room, wanted: &HashSet<SourceId>) {
        let streams = self.demand(room, wanted);
        if self.demand.as_ref() != Some(&streams) {
            self.demand = Some(streams.clone());
            let _ = self.tx.send(RelaySend::Control(Control::Demand {
                room: room_name.to_string(),
                streams,
            }));
        }
    }

    /// The streams to ask for: the teacher's layers dynacast keeps; a classroom's feed once it
    /// fills a slot here (its lowest layer at once, so the allocator has something to choose,
    /// the others when someone here wants them).
    fn demand(&self, room: &Room, wanted: &HashSet<SourceId>) -> Vec<u32> {
        let mut streams: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| {
                let key = TrackKey {
                    session: s.key,
                    track: s.track,
                };
                if !s.track.is_teacher() {
                    let routed = !room.program.routes(&key).is_empty();
                    return routed
                        && (s.layer == 0 || s.source.is_some_and(|src| wanted.contains(&src)));
                }
                match room.program.sources.get(&key) {
                    Some(src) if src.layers.len() > 1 => {
                        src.layers.get(s.layer).is_some_and(|l| !l.held)
                    }
                    _ => true,
                }
            })
            .map(|(id, _)| *id)
            .collect();
        streams.sort_unstable();
        streams
    }
}

/// What a relayed track list changed: owners whose pseudo session went, and owners published
/// under a new one (with whether they are the teacher).
struct OwnerChanges {
    gone: Vec<(String, u64)>,
    added: Vec<(String, u64, bool)>,
}

/// Publishes relayed `tracks` into `program`, one pseudo session per owner: an owner gone, or
/// whose streams changed, loses its session; a new or changed owner gets a fresh one (what a
/// reconnect looks like locally); an owner with the same streams keeps its session, so its
/// viewers see no switch (at most a codec changes).
fn publish_owners(
    program: &mut crate::program::Program,
    u: &mut Upstream,
    routes: &mut HashMap<(u64, u32), String>,
    room: &str,
    tracks: &[TrackInfo],
    next_key: &mut u64,
    keyframe_interval: Duration,
) -> OwnerChanges {
    let link = u.link;
    let mut by_owner: HashMap<&str, Vec<&TrackInfo>> = HashMap::new();
    for t in tracks {
        if track_of(&t.track).is_none() || params_of(t).is_none() {
            debug!(
                room,
                track = t.track,
                codec = t.codec,
                "relayed track skipped"
            );
            continue;
        }
        by_owner.entry(t.owner.as_str()).or_default().push(t);
    }
    let gone: Vec<(String, u64)> = u
        .keys
        .iter()
        .filter(|(owner, key)| {
            let old: HashSet<u32> = u
                .streams
                .iter()
                .filter(|(_, s)| s.key == **key)
                .map(|(id, _)| *id)
                .collect();
            let new: HashSet<u32> = by_owner
                .get(owner.as_str())
                .map(|v| v.iter().map(|t| t.stream).collect())
                .unwrap_or_default();
            old != new
        })
        .map(|(o, k)| (o.clone(), *k))
        .collect();
    for (owner, key) in &gone {
        program.unpublish(*key);
        u.keys.remove(owner);
        u.streams.retain(|id, s| {
            let keep = s.key != *key;
            if !keep {
                routes.remove(&(link, *id));
            }
            keep
        });
    }
    let mut added = vec![];
    for (owner, mut infos) in by_owner {
        if let Some(key) = u.keys.get(owner) {
            for t in infos {
                if let (Some(s), Some(c)) = (u.streams.get_mut(&t.stream), params_of(t)) {
                    if s.key == *key {
                        s.codec = c;
                    }
                }
            }
            continue;
        }
        let key = *next_key;
        *next_key += 1;
        u.keys.insert(owner.to_string(), key);
        infos.sort_by_key(|t| (t.track.clone(), t.layer));
        let mut per_track: HashMap<Track, Vec<&TrackInfo>> = HashMap::new();
        for t in infos {
            if let Some(track) = track_of(&t.track) {
                per_track.entry(track).or_default().push(t);
            }
        }
        let mut teacher = false;
        for (track, infos) in per_track {
            let rids: Vec<String> = infos.iter().filter_map(|t| t.rid.clone()).collect();
            let src = SlotSource::new(key, &rids, keyframe_interval);
            for t in &infos {
                let Some(codec) = params_of(t) else {
                    continue;
                };
                let idx = src.layer_index(t.rid.as_deref());
                u.streams.insert(
                    t.stream,
                    StreamIn {
                        key,
                        track,
                        rid: t.rid.as_deref().map(Rid::from),
                        layer: idx.unwrap_or(t.layer as usize),
                        source: idx.and_then(|i| src.layers.get(i)).map(|l| l.source),
                        codec,
                        highest: None,
                    },
                );
                routes.insert((link, t.stream), room.to_string());
            }
            teacher |= track.is_teacher();
            program.publish(owner, track, src);
        }
        added.push((owner.to_string(), key, teacher));
    }
    OwnerChanges { gone, added }
}

impl MediaLoop {
    /// Origin: an edge subscribed to `room` over `link`.
    pub(super) fn relay_attach(&mut self, link: u64, peer: String, room: String, tx: RelayTx) {
        let now = Instant::now();
        let r = room_in(&mut self.rooms, &room, &self.settings.room_rules, now);
        if !r.relay.links.contains(&link) {
            r.relay.links.push(link);
        }
        let l = self.relay_links.entry(link).or_insert_with(|| RelayLink {
            peer: peer.clone(),
            tx,
            rooms: HashMap::new(),
            packets: 0,
            bytes: 0,
            repairs: 0,
            created: now,
        });
        l.rooms.entry(room.clone()).or_default();
        info!(room, peer, link, "edge subscribed");
        self.metrics.relay_links.set(self.relay_links.len() as i64);
        self.announce(&room);
        self.update_room(&room, now);
    }

    /// Origin: an edge left `room`, or the whole connection is gone (`room` is None).
    pub(super) fn relay_detach(&mut self, link: u64, room: Option<String>) {
        let rooms: Vec<String> = match (&room, self.relay_links.get_mut(&link)) {
            (_, None) => return,
            (Some(r), Some(l)) => {
                l.rooms.remove(r);
                vec![r.clone()]
            }
            (None, Some(l)) => l.rooms.drain().map(|(r, _)| r).collect(),
        };
        if room.is_none()
            || self
                .relay_links
                .get(&link)
                .is_some_and(|l| l.rooms.is_empty())
        {
            if let Some(l) = self.relay_links.remove(&link) {
                info!(peer = l.peer, link, "edge gone");
            }
        }
        let now = Instant::now();
        for r in rooms {
            if let Some(room) = self.rooms.get_mut(&r) {
                room.relay.links.retain(|k| *k != link);
                if room.relay.links.is_empty() {
                    room.relay.cache.clear();
                }
            }
            self.update_room(&r, now);
        }
        self.metrics.relay_links.set(self.relay_links.len() as i64);
    }

    /// Origin: what an edge asks for on a room it subscribed to.
    pub(super) fn relay_control(&mut self, link: u64, msg: Control) {
        match msg {
            Control::Demand { room, streams } => {
                let Some(out) = self
                    .relay_links
                    .get_mut(&link)
                    .and_then(|l| l.rooms.get_mut(&room))
                else {
                    return;
                };
                out.demanded = streams.into_iter().collect();
                self.update_room(&room, Instant::now());
            }
            Control::Keyframe { room, stream } => {
                let Some(source) = self
                    .relay_links
                    .get(&link)
                    .and_then(|l| l.rooms.get(&room))
                    .and_then(|o| o.sources.get(&stream).copied())
                else {
                    return;
                };
                self.request_keyframe(
                    &room,
                    crate::program::Slot::TeacherCamera,
                    source,
                    Instant::now(),
                );
            }
            Control::Nack { room, stream, seqs } => self.relay_repair(link, &room, stream, &seqs),
            Control::Unsubscribe { room } => self.relay_detach(link, Some(room)),
            other => debug!(link, ?other, "unexpected relay message from an edge"),
        }
    }

    /// Origin: resend what an edge lost on the hop, from the cache.
    fn relay_repair(&mut self, link: u64, room: &str, stream: u32, seqs: &[u64]) {
        let Some(source) = self
            .relay_links
            .get(&link)
            .and_then(|l| l.rooms.get(room))
            .and_then(|o| o.sources.get(&stream).copied())
        else {
            return;
        };
        let Some(cache) = self
            .rooms
            .get(room)
            .and_then(|r| r.relay.cache.get(&source))
        else {
            return;
        };
        let mut found = vec![];
        for seq in seqs.iter().take(MAX_NACK as usize) {
            if let Some((_, p)) = cache.iter().find(|(s, _)| s == seq) {
                let mut p = p.clone();
                p.stream = stream;
                p.repair = true;
                found.push(p);
            }
        }
        if let Some(l) = self.relay_links.get_mut(&link) {
            for p in found {
                l.repairs += 1;
                self.metrics.relay_repairs_sent.inc();
                let _ = l.tx.send(RelaySend::Packet(p));
            }
        }
    }

    /// Origin: the room's relayed tracks as one edge's stream ids; announces them to every
    /// subscribed edge whose list changed.
    pub(super) fn announce(&mut self, room_name: &str) {
        let Some(room) = self.rooms.get(room_name) else {
            return;
        };
        if room.relay.links.is_empty() {
            return;
        }
        // Tracks of local publishers (the teacher's, the classrooms' feeds) whose codec is
        // known (they have sent a packet). Edges pull a classroom feed only while it is on stage.
        // Classroom feeds relayed here from an edge go on to the other edges (the stage),
        // never back to the edge they came from.
        let feed_of = |key: &TrackKey| -> Option<(u64, &StreamIn)> {
            self.feeds_in
                .iter()
                .filter(|((r, _), _)| r == room_name)
                .find_map(|(_, u)| {
                    u.streams
                        .values()
                        .find(|s| s.key == key.session && s.track == key.track)
                        .map(|s| (u.link, s))
                })
        };
        let mut keys: Vec<&TrackKey> = room
            .program
            .sources
            .keys()
            .filter(|k| {
                (self.sessions.contains_key(&k.session) || feed_of(k).is_some())
                    && room.relay.pts.contains_key(k)
            })
            .collect();
        let stage_now = (room.state.stage().to_vec(), {
            let mut m: Vec<String> = room.state.muted().cloned().collect();
            m.sort();
            m
        });
        keys.sort_by_key(|k| (k.track, k.session));
        // A link this node relays a room *from* carries only its classroom feeds up, not a stage.
        let to_origin: HashSet<u64> = self.upstreams.values().map(|u| u.link).collect();
        for &link in &room.relay.links {
            let Some(l) = self.relay_links.get_mut(&link) else {
                continue;
            };
            let Some(out) = l.rooms.get_mut(room_name) else {
                continue;
            };
            let mut tracks = vec![];
            let mut live = HashSet::new();
            for key in &keys {
                let src = &room.program.sources[key];
                let pt = room.relay.pts[key];
                let params = match self.sessions.get(&key.session) {
                    Some(s) => s.codecs.get(&pt).map(|(_, p)| *p),
                    None => match feed_of(key) {
                        Some((from, _)) if from == link => None,
                        Some((_, s)) => Some(s.codec.1),
                        None => None,
                    },
                };
                let Some(params) = params else {
                    continue;
                };
                let spec = params.spec();
                let owner = room
                    .program
                    .owner_of_session(key.session)
                    .unwrap_or_default()
                    .to_string();
                for (i, layer) in src.layers.iter().enumerate() {
                    live.insert(layer.source);
                    let stream = *out
                        .streams
                        .entry(layer.source)
                        .or_insert_with(|| stream_id(layer.source));
                    out.sources.insert(stream, layer.source);
                    tracks.push(TrackInfo {
                        stream,
                        track: key.track.as_str().to_string(),
                        owner: owner.clone(),
                        layer: i as u8,
                        layers: src.layers.len() as u8,
                        rid: layer.rid.clone(),
                        pt,
                        codec: spec.codec.to_string(),
                        clock_rate: spec.clock_rate.get(),
                        channels: spec.channels,
                        fmtp: spec.format.to_string(),
                    });
                }
            }
            out.streams.retain(|s, _| live.contains(s));
            out.sources.retain(|_, s| live.contains(s));
            if out.announced.as_ref() != Some(&tracks) {
                out.announced = Some(tracks.clone());
                // A new teacher stream flows until the edge says what it needs; a classroom's
                // feed only when asked (it matters only on stage).
                for t in &tracks {
                    if t.track.starts_with("teacher") || t.track == "courseware" {
                        out.demanded.insert(t.stream);
                    }
                }
                let _ = l.tx.send(RelaySend::Control(Control::Tracks {
                    room: room_name.to_string(),
                    tracks,
                }));
            }
            if !to_origin.contains(&link) && out.stage_sent.as_ref() != Some(&stage_now) {
                out.stage_sent = Some(stage_now.clone());
                let _ = l.tx.send(RelaySend::Control(Control::Stage {
                    room: room_name.to_string(),
                    stage: stage_now.0.clone(),
                    muted: stage_now.1.clone(),
                }));
            }
        }
    }

    /// Origin: a local publisher's packet, to the edges that demand its layer.
    pub(super) fn relay_packet(
        &mut self,
        room_name: &str,
        key: TrackKey,
        source: SourceId,
        pkt: &super::Inbound,
        onward: Onward,
    ) {
        if onward == Onward::Nowhere {
            return;
        }
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        if room.relay.links.is_empty() {
            return;
        }
        let rp = RelayPacket {
            stream: 0,
            seq: pkt.seq,
            ts: pkt.ts,
            pt: pkt.pt,
            marker: pkt.marker,
            audio_level: pkt.audio_level,
            voice_activity: pkt.voice_activity,
            video_orientation: pkt.video_orientation.map(|v| v as u8),
            received_us: unix_us(),
            repair: false,
            payload: bytes::Bytes::copy_from_slice(&pkt.payload),
        };
        let cache = room.relay.cache.entry(source).or_default();
        if cache.len() >= REPAIR_CACHE {
            cache.pop_front();
        }
        cache.push_back((pkt.seq, rp.clone()));
        let new_pt = room.relay.pts.insert(key, pkt.pt) != Some(pkt.pt);
        if new_pt {
            self.announce(room_name);
        }
        let Some(room) = self.rooms.get(room_name) else {
            return;
        };
        for link in &room.relay.links {
            if onward == Onward::AllBut(*link) {
                continue;
            }
            let Some(l) = self.relay_links.get_mut(link) else {
                continue;
            };
            let Some(out) = l.rooms.get(room_name) else {
                continue;
            };
            let Some(&stream) = out.streams.get(&source) else {
                continue;
            };
            if !out.demanded.contains(&stream) {
                continue;
            }
            let mut p = rp.clone();
            p.stream = stream;
            l.packets += 1;
            l.bytes += p.payload.len() as u64;
            self.metrics.relay_packets_sent.inc();
            self.metrics.relay_bytes_sent.inc_by(p.payload.len() as u64);
            let _ = l.tx.send(RelaySend::Packet(p));
        }
    }

    /// Origin: the layers the edges of `room` need (for dynacast toward the teacher).
    pub(super) fn relay_wanted(&self, room_name: &str, wanted: &mut HashSet<SourceId>) {
        let Some(room) = self.rooms.get(room_name) else {
            return;
        };
        for link in &room.relay.links {
            let Some(out) = self
                .relay_links
                .get(link)
                .and_then(|l| l.rooms.get(room_name))
            else {
                continue;
            };
            for s in &out.demanded {
                if let Some(src) = out.sources.get(s) {
                    wanted.insert(*src);
                }
            }
        }
    }

    /// Edge: the origin's tracks for `room` (first announcement, or a change). Each owner (the
    /// teacher, each classroom whose feed is relayed) is one pseudo session here; an owner whose
    /// streams changed is republished under a new one (what a reconnect looks like locally),
    /// the others are left alone so their viewers see no switch.
    pub(super) fn upstream_tracks(
        &mut self,
        link: u64,
        peer: String,
        room_name: String,
        tracks: Vec<TrackInfo>,
        tx: RelayTx,
    ) {
        let now = Instant::now();
        // A teacher publishing here owns the room: the relay is not needed.
        if let Some(r) = self.rooms.get(&room_name) {
            if r.publisher
                .as_ref()
                .is_some_and(|(k, _)| self.sessions.contains_key(k))
            {
                let _ = tx.send(RelaySend::Control(Control::Unsubscribe { room: room_name }));
                return;
            }
        }
        if self
            .upstreams
            .get(&room_name)
            .is_some_and(|u| u.link != link)
        {
            // The relay is back over a new connection. The same origin with the same streams
            // (a healed partition): the tracks continue as they were. Anything else (another
            // origin, the teacher republished): start over, as a teacher reconnect does.
            let same = self.upstreams.get(&room_name).is_some_and(|u| {
                u.peer == peer
                    && u.streams.len() == tracks.len()
                    && tracks.iter().all(|t| u.streams.contains_key(&t.stream))
            });
            if same {
                self.rebind_upstream(&room_name, link, tx);
                return;
            }
            self.drop_upstream(&room_name, "relayed over a new connection");
        }
        let first = !self.upstreams.contains_key(&room_name);
        let mut u = self
            .upstreams
            .remove(&room_name)
            .unwrap_or_else(|| Upstream::new(link, peer.clone(), tx.clone(), now));
        let room = room_in(&mut self.rooms, &room_name, &self.settings.room_rules, now);
        let was_teaching = u.key != 0;
        let changes = publish_owners(
            &mut room.program,
            &mut u,
            &mut self.upstream_streams,
            &room_name,
            &tracks,
            &mut self.next_key,
            self.settings.keyframe_interval,
        );
        for (_, key) in &changes.gone {
            if u.key == *key {
                u.key = 0;
            }
        }
        for (owner, key, teacher) in &changes.added {
            if *teacher {
                u.key = *key;
                u.owner = owner.clone();
            }
        }
        let teaching = u.key != 0;
        let mut ev = vec![];
        let at = super::at_now();
        if teaching {
            room.publisher = Some((u.key, u.owner.clone()));
            if !was_teaching {
                let claims = Claims {
                    sub: u.owner.clone(),
                    name: String::new(),
                    room: room_name.clone(),
                    role: Role::Teacher,
                    exp: 0,
                    origin: None,
                };
                ev.extend(room.state.session_up(&claims, true, at));
            }
        } else if was_teaching {
            if room
                .publisher
                .as_ref()
                .is_some_and(|(k, _)| !self.sessions.contains_key(k))
            {
                room.publisher = None;
            }
            ev.extend(room.state.session_down(&u.owner, Role::Teacher, true, at));
        }
        if first {
            ev.push(RoomEvent::Relay {
                origin: peer.clone(),
                connected: true,
            });
        }
        room.emit(ev);
        room.arrange();
        info!(
            room = room_name,
            origin = peer,
            streams = u.streams.len(),
            owners = u.keys.len(),
            "relayed program"
        );
        self.upstreams.insert(room_name.clone(), u);
        if first {
            // The same connection carries this node's classroom feeds to the origin.
            self.relay_attach(link, peer, room_name.clone(), tx);
        }
        self.update_room(&room_name, now);
    }

    /// Origin: the classroom feeds published at an edge (`tracks`, classroom tracks only), which
    /// join the program as those classrooms' feeds: tiles on the teacher's console, the stage
    /// for everyone. An empty list (or `tx` None: the connection is gone) removes them.
    pub(super) fn feeds_tracks(
        &mut self,
        link: u64,
        peer: String,
        room_name: String,
        tracks: Vec<TrackInfo>,
        tx: impl Into<Option<RelayTx>>,
    ) {
        let now = Instant::now();
        let tracks: Vec<TrackInfo> = tracks
            .into_iter()
            .filter(|t| track_of(&t.track).is_some_and(|tr| !tr.is_teacher()))
            .collect();
        let slot = (room_name.clone(), link);
        let mut u = match (self.feeds_in.remove(&slot), tx.into()) {
            (Some(u), _) => u,
            (None, Some(tx)) => Upstream::new(link, peer, tx, now),
            (None, None) => return,
        };
        let room = room_in(&mut self.rooms, &room_name, &self.settings.room_rules, now);
        let changes = publish_owners(
            &mut room.program,
            &mut u,
            &mut self.feed_streams,
            &room_name,
            &tracks,
            &mut self.next_key,
            self.settings.keyframe_interval,
        );
        // The classrooms behind the edge are participants of the lesson here, where its state
        // lives: present while their feed is, counted in the attendance.
        let at = super::at_now();
        let mut ev = vec![];
        for (owner, _) in &changes.gone {
            if !u.keys.contains_key(owner) {
                ev.extend(room.state.session_down(owner, Role::Classroom, true, at));
            }
        }
        for (owner, _, _) in &changes.added {
            let claims = Claims {
                sub: owner.clone(),
                name: String::new(),
                room: room_name.clone(),
                role: Role::Classroom,
                exp: 0,
                origin: None,
            };
            ev.extend(room.state.session_up(&claims, true, at));
        }
        room.emit(ev);
        room.arrange();
        info!(
            room = room_name,
            edge = u.peer,
            feeds = u.keys.len(),
            "classroom feeds from an edge"
        );
        if !u.keys.is_empty() {
            self.feeds_in.insert(slot, u);
        }
        self.update_room(&room_name, now);
    }

    /// Edge: the origin's stage and mutes lay this room's program out.
    pub(super) fn upstream_stage(
        &mut self,
        link: u64,
        room_name: &str,
        stage: Vec<String>,
        muted: Vec<String>,
    ) {
        if self.upstreams.get(room_name).is_none_or(|u| u.link != link) {
            return;
        }
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        room.remote_stage = Some((stage, muted));
        room.arrange();
        self.update_room(room_name, Instant::now());
    }

    /// Edge: one packet from the origin.
    pub(super) fn upstream_packet(&mut self, link: u64, pkt: RelayPacket) {
        let now = Instant::now();
        let (room_name, onward) = match self.upstream_streams.get(&(link, pkt.stream)) {
            Some(r) => (r.clone(), Onward::Nowhere),
            None => match self.feed_streams.get(&(link, pkt.stream)) {
                Some(r) => (r.clone(), Onward::AllBut(link)),
                None => return,
            },
        };
        let u = match onward {
            Onward::Nowhere => self.upstreams.get_mut(&room_name),
            _ => self.feeds_in.get_mut(&(room_name.clone(), link)),
        };
        let Some(u) = u else {
            return;
        };
        let Some(s) = u.streams.get_mut(&pkt.stream) else {
            return;
        };
        let lat = unix_us().saturating_sub(pkt.received_us);
        if u.latencies_us.len() >= LATENCY_SAMPLES {
            u.latencies_us.pop_front();
        }
        u.latencies_us.push_back(lat);
        self.metrics.relay_hop_seconds.observe(lat as f64 / 1e6);
        u.packets += 1;
        u.bytes += pkt.payload.len() as u64;
        self.metrics.relay_packets_received.inc();
        if pkt.repair {
            u.repaired += 1;
        }
        // A gap on the hop: ask the origin's cache (video only; late audio is useless; a gap
        // longer than the cache waits for a keyframe instead).
        if let Some(h) = s.highest {
            if pkt.seq > h + 1 && pkt.seq <= h + 1 + MAX_NACK && !s.track.is_audio() {
                let missing: Vec<u64> = (h + 1..pkt.seq).take(MAX_NACK as usize).collect();
                u.nacked += missing.len() as u64;
                let _ = u.tx.send(RelaySend::Control(Control::Nack {
                    room: room_name.clone(),
                    stream: pkt.stream,
                    seqs: missing,
                }));
            }
        }
        if s.highest.is_none_or(|h| pkt.seq > h) {
            s.highest = Some(pkt.seq);
        }
        let key = TrackKey {
            session: s.key,
            track: s.track,
        };
        let rid = s.rid;
        let codec = s.codec;
        // Each stream is its own SSRC-like identity on the edge.
        let ssrc = pkt.stream;
        let inbound = super::Inbound {
            seq: pkt.seq,
            ts: pkt.ts,
            pt: pkt.pt,
            marker: pkt.marker,
            audio_level: pkt.audio_level,
            voice_activity: pkt.voice_activity,
            video_orientation: pkt.video_orientation.map(Into::into),
            payload: Arc::from(&pkt.payload[..]),
            received: now,
        };
        let (c, mut params) = codec;
        if *params.pt() != pkt.pt {
            // The origin announced another payload type; the codec stays what it announced.
            params = PayloadParams::new(pkt.pt.into(), None, params.spec());
        }
        self.fan_out(
            &room_name,
            key,
            rid,
            ssrc,
            (c, params),
            inbound,
            onward,
            now,
        );
    }

    /// Edge: the connection to the origin is gone. The pages hear it at once; the tracks stay
    /// for [`RELAY_GRACE`] in case the same origin comes back, then the room loses its teacher
    /// until the relay is back (or the teacher publishes elsewhere and the directory says so).
    pub(super) fn upstream_lost(&mut self, link: u64, why: &str) {
        let now = Instant::now();
        let feeds: Vec<(String, u64)> = self
            .feeds_in
            .keys()
            .filter(|(_, l)| *l == link)
            .cloned()
            .collect();
        for (room, l) in feeds {
            self.feeds_tracks(l, String::new(), room, vec![], None);
        }
        let rooms: Vec<String> = self
            .upstreams
            .iter()
            .filter(|(_, u)| u.link == link && u.lost_at.is_none())
            .map(|(r, _)| r.clone())
            .collect();
        for r in rooms {
            let Some(u) = self.upstreams.get_mut(&r) else {
                continue;
            };
            u.lost_at = Some(now);
            info!(room = r, origin = u.peer, "relay lost: {why}");
            self.announce_relay_state(&r);
        }
    }

    /// Edge: the relay of `room` came back over connection `link` with the same streams.
    fn rebind_upstream(&mut self, room: &str, link: u64, tx: RelayTx) {
        let Some(u) = self.upstreams.get_mut(room) else {
            return;
        };
        for id in u.streams.keys() {
            self.upstream_streams.remove(&(u.link, *id));
            self.upstream_streams.insert((link, *id), room.to_string());
        }
        let (old_link, peer) = (u.link, u.peer.clone());
        u.link = link;
        u.tx = tx.clone();
        u.lost_at = None;
        // Say again what this node needs: the new connection's origin side starts afresh.
        u.demand = None;
        info!(room, origin = peer, "relay back: the same streams continue");
        self.relay_detach(old_link, Some(room.to_string()));
        self.relay_attach(link, peer, room.to_string(), tx);
        self.announce_relay_state(room);
        self.update_room(room, Instant::now());
    }

    /// Edge: tells the room's pages whether its relay is up (a `relay` event).
    pub(super) fn announce_relay_state(&mut self, room_name: &str) {
        let Some(u) = self.upstreams.get(room_name) else {
            return;
        };
        let e = RoomEvent::Relay {
            origin: u.peer.clone(),
            connected: u.lost_at.is_none(),
        };
        if let Some(room) = self.rooms.get(room_name) {
            room.publish(&e);
        }
    }

    /// Edge: a relay lost longer than [`RELAY_GRACE`] is given up.
    pub(super) fn expire_upstream(&mut self, room: &str, now: Instant) {
        let expired = self
            .upstreams
            .get(room)
            .and_then(|u| u.lost_at)
            .is_some_and(|t| now.saturating_duration_since(t) >= RELAY_GRACE);
        if expired {
            self.drop_upstream(room, "relay lost for too long");
        }
    }

    /// Edge: stop relaying `room` (lost, or a teacher now publishes here).
    pub(super) fn drop_upstream(&mut self, room_name: &str, why: &str) {
        let Some(u) = self.upstreams.remove(room_name) else {
            return;
        };
        let _ = u.tx.send(RelaySend::Control(Control::Unsubscribe {
            room: room_name.to_string(),
        }));
        self.relay_detach(u.link, Some(room_name.to_string()));
        info!(room = room_name, origin = u.peer, "relay ended: {why}");
        for s in u.streams.keys() {
            self.upstream_streams.remove(&(u.link, *s));
        }
        if let Some(room) = self.rooms.get_mut(room_name) {
            for key in u.keys.values() {
                room.program.unpublish(*key);
            }
            room.remote_stage = None;
            room.arrange();
            let mut ev = vec![];
            if u.key != 0 && room.publisher.as_ref().is_some_and(|(k, _)| *k == u.key) {
                room.publisher = None;
                ev.extend(
                    room.state
                        .session_down(&u.owner, Role::Teacher, true, super::at_now()),
                );
            }
            ev.push(RoomEvent::Relay {
                origin: u.peer.clone(),
                connected: false,
            });
            room.emit(ev);
        }
        self.update_room(room_name, Instant::now());
    }

    /// Edge: is `session` a relayed pseudo publisher? Then ask the origin for a keyframe of
    /// `source` and return true.
    pub(super) fn upstream_keyframe(&mut self, session: u64, source: SourceId) -> bool {
        let Some((room, u)) = self
            .upstreams
            .iter()
            .chain(self.feeds_in.iter().map(|((r, _), u)| (r, u)))
            .find(|(_, u)| u.keys.values().any(|k| *k == session))
        else {
            return false;
        };
        if let Some((stream, _)) = u.streams.iter().find(|(_, s)| s.source == Some(source)) {
            self.metrics.keyframe_requests_sent.inc();
            let _ = u.tx.send(RelaySend::Control(Control::Keyframe {
                room: room.clone(),
                stream: *stream,
            }));
        }
        true
    }

    /// Edge: after dynacast, tell the origin which streams this node's classrooms need: the
    /// teacher's layers dynacast keeps, and a classroom's feed only while it is on stage.
    pub(super) fn upstream_demand(&mut self, room_name: &str, wanted: &HashSet<SourceId>) {
        let Some(u) = self.upstreams.get_mut(room_name) else {
            return;
        };
        let Some(room) = self.rooms.get(room_name) else {
            return;
        };
        u.ask(room_name, room, wanted);
    }

    /// Origin: tells each edge with classroom feeds in `room` which of them are needed here
    /// (the teacher console's tiles, the stage).
    pub(super) fn feeds_demand(&mut self, room_name: &str, wanted: &HashSet<SourceId>) {
        let Some(room) = self.rooms.get(room_name) else {
            return;
        };
        for ((r, _), u) in self.feeds_in.iter_mut() {
            if r != room_name {
                continue;
            }
            u.ask(room_name, room, wanted);
        }
    }

    /// Edge: rooms relayed from elsewhere (the cluster glue stops relaying the others).
    pub(super) fn relay_infos(&self) -> Vec<RelayInfo> {
        let now = Instant::now();
        let mut out = vec![];
        let incoming = self
            .upstreams
            .iter()
            .map(|(r, u)| (r, u, "from_origin"))
            .chain(self.feeds_in.iter().map(|((r, _), u)| (r, u, "from_edge")));
        for (room, u, direction) in incoming {
            let secs = now
                .saturating_duration_since(u.created)
                .as_secs_f64()
                .max(1.0);
            let mut tracks: Vec<String> = u
                .streams
                .iter()
                .map(|(id, s)| {
                    let owner = u
                        .keys
                        .iter()
                        .find(|(_, k)| **k == s.key)
                        .map_or("", |(o, _)| o.as_str());
                    let asked = u.demand.as_ref().is_some_and(|d| d.contains(id));
                    format!(
                        "{owner}/{}/{}#{id}{} seq {}",
                        s.track.as_str(),
                        s.layer,
                        if asked { "*" } else { "" },
                        s.highest.map_or("-".to_string(), |h| h.to_string())
                    )
                })
                .collect();
            tracks.sort();
            out.push(RelayInfo {
                tracks,
                direction: direction.into(),
                peer: u.peer.clone(),
                link: u.link,
                room: room.clone(),
                streams: u.streams.len(),
                demanded: u.demand.as_ref().map_or(u.streams.len(), Vec::len),
                packets: u.packets,
                bytes: u.bytes,
                avg_bitrate_bps: (u.bytes as f64 * 8.0 / secs) as u64,
                nacked: u.nacked,
                repaired: u.repaired,
                latency_p50_ms: percentile(&u.latencies_us, 0.5),
                latency_p99_ms: percentile(&u.latencies_us, 0.99),
            });
        }
        for (link, l) in &self.relay_links {
            let secs = now
                .saturating_duration_since(l.created)
                .as_secs_f64()
                .max(1.0);
            let to_origin = self.upstreams.values().any(|u| u.link == *link);
            for (room, o) in &l.rooms {
                out.push(RelayInfo {
                    direction: if to_origin { "to_origin" } else { "to_edge" }.into(),
                    peer: l.peer.clone(),
                    link: *link,
                    room: room.clone(),
                    streams: o.streams.len(),
                    demanded: o.demanded.len(),
                    packets: l.packets,
                    bytes: l.bytes,
                    avg_bitrate_bps: (l.bytes as f64 * 8.0 / secs) as u64,
                    nacked: 0,
                    repaired: l.repairs,
                    latency_p50_ms: None,
                    latency_p99_ms: None,
                    tracks: vec![],
                });
            }
        }
        out.sort_by(|a, b| (&a.room, &a.peer).cmp(&(&b.room, &b.peer)));
        out
    }
}

#[cfg(test)]
mod tests_support {
    //! A media loop on loopback sockets, driven directly, and what relays carry.

    use super::*;
    use crate::media::event_loop::{LoopSettings, MediaSockets};
    use crate::metrics::Metrics;
    use crate::room::RoomRules;
    use tokio::sync::mpsc::UnboundedReceiver;

    pub fn edge_loop() -> MediaLoop {
        let sockets =
            MediaSockets::bind(&["127.0.0.1".parse().unwrap()], 0, false, |a| a).expect("bind");
        let settings = LoopSettings {
            keyframe_interval: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(10),
            room_rules: RoomRules::default(),
        };
        MediaLoop::new(sockets, Arc::new(Metrics::new()), settings)
            .expect("loop")
            .0
    }

    pub fn track(
        stream: u32,
        track: &str,
        owner: &str,
        layer: u8,
        layers: u8,
        rid: Option<&str>,
    ) -> TrackInfo {
        let audio = track.ends_with("audio");
        TrackInfo {
            stream,
            track: track.into(),
            owner: owner.into(),
            layer,
            layers,
            rid: rid.map(str::to_string),
            pt: if audio { 111 } else { 96 },
            codec: if audio { "opus" } else { "VP8" }.into(),
            clock_rate: if audio { 48_000 } else { 90_000 },
            channels: audio.then_some(2),
            fmtp: String::new(),
        }
    }

    /// The teacher's voice and a two-layer camera, and a classroom's feed.
    pub fn lesson() -> Vec<TrackInfo> {
        vec![
            track(10, "teacher_audio", "t", 0, 1, None),
            track(11, "teacher_camera", "t", 0, 2, Some("l")),
            track(12, "teacher_camera", "t", 1, 2, Some("h")),
            track(20, "class_audio", "c1", 0, 1, None),
            track(21, "class_video", "c1", 0, 1, None),
        ]
    }

    pub fn packet(stream: u32, seq: u64) -> RelayPacket {
        RelayPacket {
            stream,
            seq,
            ts: seq as u32 * 3000,
            pt: 96,
            marker: true,
            audio_level: None,
            voice_activity: None,
            video_orientation: None,
            received_us: unix_us(),
            repair: false,
            payload: bytes::Bytes::from_static(&[0x10, 0, 0, 0]),
        }
    }

    pub fn controls(rx: &mut UnboundedReceiver<RelaySend>) -> Vec<Control> {
        let mut out = vec![];
        while let Ok(m) = rx.try_recv() {
            if let RelaySend::Control(c) = m {
                out.push(c);
            }
        }
        out
    }

    pub fn teacher_sources(ml: &MediaLoop) -> Vec<SourceId> {
        let r = &ml.rooms["r"];
        let mut v: Vec<SourceId> = r
            .program
            .sources
            .iter()
            .filter(|(k, _)| k.track.is_teacher())
            .flat_map(|(_, s)| s.layers.iter().map(|l| l.source))
            .collect();
        v.sort();
        v
    }

    pub fn last_demand(rx: &mut UnboundedReceiver<RelaySend>) -> Option<Vec<u32>> {
        controls(rx).into_iter().rev().find_map(|c| match c {
            Control::Demand { streams, .. } => Some(streams),
            _ => None,
        })
    }

    pub fn drain_tracks(rx: &mut UnboundedReceiver<RelaySend>) -> Vec<TrackInfo> {
        controls(rx)
            .into_iter()
            .filter_map(|c| match c {
                Control::Tracks { tracks, .. } => Some(tracks),
                _ => None,
            })
            .next_back()
            .unwrap_or_default()
    }

    pub fn drain_packets(rx: &mut UnboundedReceiver<RelaySend>) -> Vec<RelayPacket> {
        let mut out = vec![];
        while let Ok(m) = rx.try_recv() {
            if let RelaySend::Packet(p) = m {
                out.push(p);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    //! Both sides of a relay, driven directly: what an edge asks the origin for, how it keeps a
    //! lost relay and takes it back; how the origin sends a classroom's feed on, never back.

    use super::tests_support::*;
    use super::*;
    use tokio::sync::mpsc::unbounded_channel;

    #[test]
    fn an_edge_asks_for_the_lesson_and_a_feed_only_on_stage() {
        let mut ml = edge_loop();
        let (tx, mut rx) = unbounded_channel();
        ml.upstream_tracks(1, "a".into(), "r".into(), lesson(), tx);
        // The teacher's tracks fill the program; the room knows its teacher.
        assert_eq!(teacher_sources(&ml).len(), 3);
        assert!(ml.rooms["r"].publisher.is_some());
        let demand = last_demand(&mut rx).expect("a demand");
        assert_eq!(
            demand,
            vec![10, 11, 12],
            "the lesson, not the classroom's feed"
        );

        // The classroom goes on stage at the origin: the edge pulls its feed.
        ml.upstream_stage(1, "r", vec!["c1".into()], vec![]);
        let demand = last_demand(&mut rx).expect("a new demand");
        assert_eq!(demand, vec![10, 11, 12, 20, 21]);
        // A stage message over another connection is not this relay's.
        ml.upstream_stage(2, "r", vec![], vec![]);
        assert!(controls(&mut rx).is_empty());
    }

    #[test]
    fn gaps_on_the_hop_are_nacked_and_keyframes_asked_upstream() {
        let mut ml = edge_loop();
        let (tx, mut rx) = unbounded_channel();
        ml.upstream_tracks(1, "a".into(), "r".into(), lesson(), tx);
        controls(&mut rx);
        ml.upstream_packet(1, packet(11, 100));
        ml.upstream_packet(1, packet(11, 103));
        let nacks: Vec<Control> = controls(&mut rx)
            .into_iter()
            .filter(|c| matches!(c, Control::Nack { .. }))
            .collect();
        assert_eq!(
            nacks,
            vec![Control::Nack {
                room: "r".into(),
                stream: 11,
                seqs: vec![101, 102]
            }]
        );
        // A gap longer than the origin's cache is left to a keyframe.
        ml.upstream_packet(1, packet(11, 103 + 10 * MAX_NACK));
        assert!(controls(&mut rx).is_empty());
        // A packet on a stream nobody announced is ignored.
        ml.upstream_packet(1, packet(99, 1));
        ml.upstream_packet(7, packet(11, 5000));
        // A keyframe request for a relayed layer goes to the origin, for that stream.
        let src = ml.upstreams["r"].streams[&12].source.expect("source");
        let key = ml.upstreams["r"].key;
        assert!(ml.upstream_keyframe(key, src));
        assert_eq!(
            controls(&mut rx),
            vec![Control::Keyframe {
                room: "r".into(),
                stream: 12
            }]
        );
        assert!(
            !ml.upstream_keyframe(key + 1000, src),
            "not a relayed session"
        );
    }

    #[test]
    fn a_healed_partition_continues_and_another_origin_starts_over() {
        let mut ml = edge_loop();
        let (tx, _rx) = unbounded_channel();
        ml.upstream_tracks(1, "a".into(), "r".into(), lesson(), tx);
        let before = teacher_sources(&ml);
        let mut events = ml.rooms["r"].events.subscribe();

        ml.upstream_lost(1, "idle timeout");
        // The pages hear it; the tracks stay.
        let ev = events.try_recv().expect("a relay event");
        assert!(
            ev.contains("\"relay\"") && ev.contains("\"connected\":false"),
            "{ev}"
        );
        assert_eq!(teacher_sources(&ml), before);

        // The same origin, the same streams, over a new connection: nothing switches.
        let (tx2, mut rx2) = unbounded_channel();
        ml.upstream_tracks(2, "a".into(), "r".into(), lesson(), tx2);
        assert_eq!(teacher_sources(&ml), before, "the same sources continue");
        let ev = events.try_recv().expect("relay back");
        assert!(ev.contains("\"connected\":true"), "{ev}");
        assert!(
            controls(&mut rx2)
                .iter()
                .any(|c| matches!(c, Control::Demand { .. })),
            "the demand is said again on the new connection"
        );
        ml.upstream_packet(2, packet(11, 1));
        assert_eq!(
            ml.upstreams["r"].packets, 1,
            "packets of the new link count"
        );

        // Another origin (the teacher republished elsewhere): new sources, as a reconnect.
        ml.upstream_lost(2, "gone");
        let (tx3, _rx3) = unbounded_channel();
        ml.upstream_tracks(3, "c".into(), "r".into(), lesson(), tx3);
        let after = teacher_sources(&ml);
        assert_eq!(after.len(), 3);
        assert!(after.iter().all(|s| !before.contains(s)), "new sources");

        // A relay lost for longer than the grace is given up: the room loses its teacher.
        ml.upstream_lost(3, "gone");
        ml.expire_upstream("r", Instant::now() + RELAY_GRACE);
        assert!(!ml.upstreams.contains_key("r"));
        assert!(teacher_sources(&ml).is_empty());
        assert!(ml.rooms["r"].publisher.is_none());
    }

    #[test]
    fn an_edge_feed_goes_on_to_other_edges_on_stage() {
        let mut ml = edge_loop();
        // Edge B subscribes to the room here.
        let (tx_b, mut rx_b) = unbounded_channel();
        ml.relay_attach(1, "b".into(), "r".into(), tx_b);
        // Edge C announces a classroom's feed (voice and camera).
        let (tx_c, mut rx_c) = unbounded_channel();
        let feed = vec![
            track(20, "class_audio", "c1", 0, 1, None),
            track(21, "class_video", "c1", 0, 1, None),
        ];
        ml.feeds_tracks(2, "c".into(), "r".into(), feed, Some(tx_c));
        assert!(ml.rooms["r"]
            .state
            .snapshot()
            .participants
            .iter()
            .any(|p| p.sub == "c1"));
        // Not on stage: only its camera, for the teacher console's tiles.
        let d = last_demand(&mut rx_c);
        assert_eq!(d, Some(vec![21]), "the camera for the tiles, not the voice");
        // On stage: this node pulls both from C.
        let who = Claims {
            sub: "t".into(),
            name: String::new(),
            room: "r".into(),
            role: Role::Admin,
            exp: 0,
            origin: None,
        };
        ml.room_command(
            "r",
            &who,
            crate::room::RoomCommand::Stage {
                sub: "c1".into(),
                on: true,
            },
        )
        .expect("stage");
        assert_eq!(last_demand(&mut rx_c), Some(vec![20, 21]));
        // C's packets arrive; B is told about the feed and, once it asks, gets it; C never
        // gets its own feed back.
        let mut audio = packet(20, 1);
        audio.pt = 111;
        ml.upstream_packet(2, audio);
        ml.upstream_packet(2, packet(21, 1));
        let tracks_b = drain_tracks(&mut rx_b);
        let ids: Vec<u32> = tracks_b.iter().map(|t| t.stream).collect();
        assert_eq!(ids.len(), 2, "B hears of the feed: {tracks_b:?}");
        let codecs: Vec<(&str, &str)> = tracks_b
            .iter()
            .map(|t| (t.track.as_str(), t.codec.as_str()))
            .collect();
        assert!(
            codecs.contains(&("class_audio", "opus")) && codecs.contains(&("class_video", "VP8")),
            "each track with its own codec: {codecs:?}"
        );
        ml.relay_control(
            1,
            Control::Demand {
                room: "r".into(),
                streams: ids.clone(),
            },
        );
        let mut audio = packet(20, 2);
        audio.pt = 111;
        ml.upstream_packet(2, audio);
        ml.upstream_packet(2, packet(21, 2));
        let got: Vec<u32> = drain_packets(&mut rx_b).iter().map(|p| p.stream).collect();
        assert_eq!(got.len(), 2, "both relayed on to B: {got:?}");
        assert!(
            drain_tracks(&mut rx_c).iter().all(|t| t.owner != "c1"),
            "not back to C"
        );
    }

    #[test]
    fn a_relayed_feed_on_stage_reaches_its_layers() {
        let mut ml = edge_loop();
        let (tx, _rx) = unbounded_channel();
        ml.upstream_tracks(1, "a".into(), "r".into(), lesson(), tx);
        ml.upstream_stage(1, "r", vec!["c1".into()], vec![]);
        let mut audio = packet(20, 1);
        audio.pt = 111;
        ml.upstream_packet(1, audio);
        ml.upstream_packet(1, packet(21, 1));
        let r = &ml.rooms["r"];
        let counts: Vec<(Track, u64)> = r
            .program
            .sources
            .iter()
            .filter(|(k, _)| !k.track.is_teacher())
            .map(|(k, s)| (k.track, s.layers[0].packets))
            .collect();
        assert_eq!(counts.len(), 2, "{counts:?}");
        assert!(counts.iter().all(|(_, n)| *n == 1), "{counts:?}");
        let audio_key = r
            .program
            .sources
            .keys()
            .find(|k| k.track == Track::ClassAudio)
            .copied()
            .unwrap();
        assert!(
            !r.program.routes(&audio_key).is_empty(),
            "the feed's voice fills the stage slot"
        );
    }
}
