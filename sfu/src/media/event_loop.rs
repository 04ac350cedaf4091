//! The media event loop: one thread, one mio poll, every session.
//!
//! Invariant from str0m: after every mutation of an `Rtc` (input, write, keyframe request) its
//! output is drained to `Output::Timeout` before the next mutation. Events that concern other
//! sessions (media to forward, keyframe requests) are queued while draining and handled after,
//! so no two sessions are ever borrowed at once.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, TryRecvError};

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use str0m::bwe::{Bitrate, BweKind};
use str0m::format::{Codec as StrCodec, PayloadParams};
use str0m::media::{KeyframeRequestKind, Mid, Rid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Ssrc, Vp8Descriptor};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tracing::{debug, info, trace, warn};

use super::batch_io::{self, RecvBatch};
use super::demux;
use super::session::{ice_credentials, offer_with_credentials, NewSession, SdpFrag, SessionKind};
use super::snapshot::*;
use super::tcp_framing::{frame_into, Deframer};
use super::{Command, LoopError, MediaHandle, PatchOutcome};
use crate::auth::{Claims, Role};
use crate::forward::allocator::{Allocator, Decision, Policy, Reading, TrackOffer, Tuning};
use crate::forward::dynacast::{Dynacast, HOLD_AFTER};
use crate::forward::keyframe::{starts_keyframe, vp8_keyframe_size, Codec};
use crate::forward::layer::LayerPref;
use crate::forward::red::{want_red, RedEncoder};
use crate::forward::track_forwarder::{PacketInfo, TrackForwarder};
use crate::forward::vp8_rewrite::parse_fields;
use crate::forward::SourceId;
use crate::metrics::Metrics;
use crate::program::{Program, Slot, SlotSource, Step, Track, TrackKey};
use crate::room::speaker::SpeakerDetector;
use crate::room::state::{LessonState, LinkQuality, RoomSnapshot};
use crate::room::{At, RoomCommand, RoomEvent, RoomRules, RoomState};

mod relay;

const WAKER: Token = Token(0);
/// How often pages get each classroom's link quality.
const QUALITY_EVERY: Duration = Duration::from_secs(2);
const TICK: Duration = Duration::from_millis(200);
/// How often an allocation probe toward a better choice is re-armed while none succeeds.
/// str0m probes only on a rise of the desired rate, and holds a probe back while its
/// estimator reads congestion; re-armed only every 10 s, one probe lost on a busy machine
/// kept a classroom whose link had come back off the top layer past the 8 s allowed (CI).
const PROBE_REARM: Duration = Duration::from_millis(2500);
/// No staged probe this soon after the allocation went down: after a real drop the link's
/// queue takes seconds to drain, and a probe's burst would sit in it ahead of the voice (one
/// run had a 208 ms audio gap 1.9 s after a drop to 0.8 Mbit/s).
const REARM_AFTER_DOWN: Duration = Duration::from_secs(5);
/// While the estimate is just short of the current choice, a probe at this multiple of its
/// rate is asked for this often (str0m holds probes back while it still sees the delay rise).
const CONFIRM_AIM: f64 = 1.3;
const CONFIRM_REARM: Duration = Duration::from_millis(300);
/// A session whose ICE went away is kept this long for the peer to come back.
const DISCONNECT_GRACE: Duration = Duration::from_secs(10);
/// TCP connections that never carried a valid ICE check are closed after this.
const TCP_UNBOUND_TIMEOUT: Duration = Duration::from_secs(10);
const TCP_MAX_CONNECTIONS: usize = 4096;
const TCP_MAX_OUTBUF: usize = 2 * 1024 * 1024;
const MAX_ADDRS_PER_SESSION: usize = 16;

#[derive(Debug, Clone)]
pub struct LoopSettings {
    pub keyframe_interval: Duration,
    pub connect_timeout: Duration,
    pub room_rules: RoomRules,
}

struct UdpEndpoint {
    socket: UdpSocket,
    /// The address str0m knows this socket by (its advertised candidate address).
    local: SocketAddr,
}

struct TcpEndpoint {
    listener: TcpListener,
    local: SocketAddr,
}

struct TcpConn {
    stream: TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
    deframer: Deframer,
    outbuf: Vec<u8>,
    opened: Instant,
    bound: bool,
    wants_write: bool,
}

/// A subscriber's payload type for a codec, and its RED payload type where negotiated.
type SubscriberPt = (str0m::media::Pt, Option<str0m::media::Pt>);

/// A subscriber slot: where one program slot goes in this subscriber's session.
struct OutSlot {
    mid: Mid,
    forwarder: TrackForwarder,
    /// Publisher payload type → this subscriber's payload type (None: no common codec).
    /// Publisher payload type → this subscriber's payload type and, for Opus, its RED payload
    /// type (None: no common codec). Looked up once, not per packet.
    pt_map: HashMap<(u64, u8), Option<SubscriberPt>>,
    packets: u64,
    /// Audio: redundancy toward a lossy viewer that negotiated RED.
    red: RedEncoder,
    red_on: bool,
    /// The source the allocator wants here (may be a layer dynacast holds).
    desired: Option<SourceId>,
}

#[derive(Default)]
struct SessionStats {
    egress_bytes: u64,
    bitrate_bps: u64,
    last_bytes_at: Option<Instant>,
    loss: Option<f32>,
    rtt: Option<Duration>,
    nacks: HashMap<Mid, u64>,
    plis: HashMap<Mid, u64>,
}

struct Session {
    key: u64,
    id: String,
    room: String,
    claims: Claims,
    kind: SessionKind,
    pref: LayerPref,
    rtc: Rtc,
    offer: String,
    etag: String,
    ufrag: String,
    scheduled: Option<Instant>,
    created: Instant,
    connected: bool,
    disconnected_at: Option<Instant>,
    addrs: Vec<(Protocol, SocketAddr)>,
    /// Viewers: what each m-line shows.
    slots: HashMap<Mid, Slot>,
    /// Publishers: what each m-line carries.
    tracks: HashMap<Mid, Track>,
    ssrc_cache: HashMap<Ssrc, (Mid, Option<Rid>)>,
    codecs: HashMap<u8, (Codec, PayloadParams)>,
    out: HashMap<Slot, OutSlot>,
    stats: SessionStats,
    /// Subscribers: the bandwidth estimate (TWCC, or REMB from receivers without TWCC).
    estimate: Option<Estimate>,
    video_twcc: bool,
    allocator: Allocator,
    decision: Option<Decision>,
    /// (minimum, desired) last given to the congestion controller.
    bwe_set: Option<(u64, u64)>,
    probe_armed_at: Instant,
    probe_bump: bool,
    /// When the allocation last went down (see `REARM_AFTER_DOWN`).
    down_at: Option<Instant>,
    /// When a probe confirming the current choice was last asked for (see `CONFIRM_AIM`).
    confirm_armed_at: Option<Instant>,
    /// Counts already added to the process-wide counters.
    reported_pauses: u64,
    reported_dips: (u64, u64),
    reported_freezes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Estimate {
    /// str0m's estimate event: averaged over a few seconds.
    bps: u64,
    twcc: bool,
    /// The controller's own latest estimates (from the stats ticks) and when they were read,
    /// newest first.
    raw: [Option<(u64, Instant)>; RAW_KEPT],
}

/// A raw estimate older than this is not used.
const RAW_ESTIMATE_FRESH: Duration = Duration::from_secs(2);
/// Two raw readings at least this long apart, both above the average, confirm a rise.
const RAW_RISE_HELD: Duration = Duration::from_millis(400);
/// Raw readings kept: enough to span [`RAW_RISE_HELD`] at the stats interval.
const RAW_KEPT: usize = 4;

impl Estimate {
    fn new(bps: u64, twcc: bool) -> Self {
        Estimate {
            bps,
            twcc,
            raw: [None; RAW_KEPT],
        }
    }

    fn push_raw(&mut self, bps: u64, at: Instant) {
        self.raw.rotate_right(1);
        self.raw[0] = Some((bps, at));
    }

    /// What the allocator shares. The average lags the controller by seconds both ways: after
    /// a capacity drop the link's queue fills meanwhile, and after a recovery (a probe that
    /// found the room) the classroom waits on a smaller layer. So the controller's latest
    /// estimate counts at once when it is lower, and when it is higher once the reading
    /// [`RAW_RISE_HELD`] before it says so too (then the lower of the two); otherwise the
    /// average.
    fn for_allocation(&self, now: Instant) -> u64 {
        let Some((raw, at)) = fresh(self.raw[0], now) else {
            return self.bps;
        };
        if raw <= self.bps {
            return raw;
        }
        // The newest reading at least RAW_RISE_HELD before this one.
        let held = self.raw[1..]
            .iter()
            .filter_map(|r| fresh(*r, now))
            .find(|(_, t)| at.saturating_duration_since(*t) >= RAW_RISE_HELD);
        match held {
            Some((prev, _)) if prev > self.bps => raw.min(prev),
            _ => self.bps,
        }
    }

    /// The controller's latest word, fresh or not at all: what the current choice is kept on.
    fn latest(&self, now: Instant) -> u64 {
        fresh(self.raw[0], now).map_or(self.bps, |(raw, _)| raw)
    }

    /// The controller's word before the latest, when both are fresh.
    fn previous(&self, now: Instant) -> Option<u64> {
        fresh(self.raw[0], now)?;
        fresh(self.raw[1], now).map(|(raw, _)| raw)
    }
}

/// A raw estimate reading, unless it is older than [`RAW_ESTIMATE_FRESH`].
fn fresh(reading: Option<(u64, Instant)>, now: Instant) -> Option<(u64, Instant)> {
    reading.filter(|(_, at)| now.saturating_duration_since(*at) <= RAW_ESTIMATE_FRESH)
}

#[cfg(test)]
mod estimate_tests {
    use super::*;

    #[test]
    fn the_allocator_follows_the_controller_down_at_once_and_up_when_held() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // Raw readings (value, ms after t0), oldest first; the average is 2M.
        let e = |readings: &[(u64, u64)]| {
            let mut e = Estimate::new(2_000_000, true);
            for &(v, at) in readings {
                e.push_raw(v, ms(at));
            }
            e
        };
        assert_eq!(e(&[]).for_allocation(ms(500)), 2_000_000);
        // A capacity drop: the controller already says 700k, the average still 2M.
        assert_eq!(e(&[(700_000, 500)]).for_allocation(ms(500)), 700_000);
        // One reading above the average is not enough to go up...
        assert_eq!(e(&[(3_000_000, 500)]).for_allocation(ms(500)), 2_000_000);
        assert_eq!(
            e(&[(1_900_000, 0), (3_000_000, 500)]).for_allocation(ms(500)),
            2_000_000
        );
        // ... two RAW_RISE_HELD apart are (the lower of them)...
        assert_eq!(
            e(&[(2_600_000, 0), (3_000_000, 500)]).for_allocation(ms(500)),
            2_600_000
        );
        // ... the newest one that far back counts, not those between...
        assert_eq!(
            e(&[
                (1_500_000, 0),
                (2_400_000, 200),
                (2_900_000, 300),
                (3_000_000, 700)
            ])
            .for_allocation(ms(700)),
            2_900_000
        );
        // ... and not one closer than that.
        let held = RAW_RISE_HELD.as_millis() as u64;
        assert_eq!(
            e(&[(2_600_000, 0), (3_000_000, held - 1)]).for_allocation(ms(held - 1)),
            2_000_000
        );
        assert_eq!(
            e(&[(1_800_000, 0), (2_600_000, 200), (3_000_000, 400)]).for_allocation(ms(400)),
            2_000_000
        );
        // The reading before the latest, for the allocator to see whether a fall holds.
        assert_eq!(
            e(&[(900_000, 0), (700_000, 200)]).previous(ms(200)),
            Some(900_000)
        );
        assert_eq!(e(&[(700_000, 200)]).previous(ms(200)), None);
        // A reading older than RAW_ESTIMATE_FRESH no longer counts.
        let later = 500 + RAW_ESTIMATE_FRESH.as_millis() as u64 + 1;
        assert_eq!(e(&[(700_000, 500)]).for_allocation(ms(later)), 2_000_000);
        // Only RAW_KEPT readings count: at 100 ms apart the four kept span 300 ms, and the
        // one 400 ms back has been pushed out.
        assert_eq!(RAW_KEPT, 4);
        let readings: Vec<(u64, u64)> = (0..=4).map(|i| (3_000_000, i * 100)).collect();
        assert_eq!(e(&readings).for_allocation(ms(400)), 2_000_000);
    }
}

struct Room {
    created: SystemTime,
    policy: Policy,
    program: Program,
    members: Vec<u64>,
    /// The teacher (sub) whose session feeds the program.
    publisher: Option<(u64, String)>,
    state: RoomState,
    /// Room events as JSON, to every page watching (WebSocket).
    events: broadcast::Sender<Arc<str>>,
    speaker: SpeakerDetector,
    quality_at: Instant,
    /// Which simulcast layers each publisher track should send.
    dynacast: HashMap<TrackKey, Dynacast>,
    /// Edge nodes relaying this room (on its origin).
    relay: relay::RoomRelay,
    /// On an edge: the stage and mutes of the room's origin, which lay the program out
    /// instead of this node's own (empty) state.
    remote_stage: Option<(Vec<String>, Vec<String>)>,
}

impl Room {
    fn new(name: &str, rules: RoomRules, now: Instant) -> Room {
        Room {
            created: SystemTime::now(),
            policy: Policy::default(),
            program: Program::default(),
            members: vec![],
            publisher: None,
            state: RoomState::new(name, rules),
            events: broadcast::channel(256).0,
            speaker: SpeakerDetector::default(),
            quality_at: now,
            dynacast: HashMap::new(),
            relay: relay::RoomRelay::default(),
            remote_stage: None,
        }
    }

    /// Sends one event to every page watching the room.
    fn publish(&self, e: &RoomEvent) {
        if let Ok(json) = serde_json::to_string(e) {
            let _ = self.events.send(json.into());
        }
    }

    /// Lays the program out from the state: who is on stage, the tile order, the mutes.
    fn arrange(&mut self) {
        match &self.remote_stage {
            Some((stage, muted)) => {
                self.program
                    .arrange(stage, self.state.tiles(), muted.iter().cloned())
            }
            None => self.program.arrange(
                self.state.stage(),
                self.state.tiles(),
                self.state.muted().cloned(),
            ),
        }
    }

    /// Publishes events and lays the program out again from the state.
    fn emit(&mut self, events: Vec<RoomEvent>) -> bool {
        if events.is_empty() {
            return false;
        }
        for e in &events {
            self.publish(e);
        }
        self.arrange();
        true
    }
}

/// The room `name`, made on first use.
fn room_in<'a>(
    rooms: &'a mut HashMap<String, Room>,
    name: &str,
    rules: &RoomRules,
    now: Instant,
) -> &'a mut Room {
    rooms
        .entry(name.to_string())
        .or_insert_with(|| Room::new(name, rules.clone(), now))
}

/// Lessons that ended, kept for their attendance.
const ENDED_KEPT: usize = 256;

fn at_now() -> At {
    At {
        mono: Instant::now(),
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    }
}

// Nearly all work is RTP; boxing it would cost an allocation per packet.
#[allow(clippy::large_enum_variant)]
enum Work {
    Rtp(u64, RtpPacket),
    KeyframeRequest(u64, Mid, KeyframeRequestKind),
    Connected(u64),
    /// A subscriber's estimate fell under its allocation: re-run its allocator.
    Reallocate(u64),
}

/// Datagrams waiting to be sent, per UDP endpoint, and framed TCP packets.
#[derive(Default)]
struct Outbox {
    udp: Vec<Vec<(Vec<u8>, SocketAddr)>>,
    udp_index: HashMap<SocketAddr, usize>,
    tcp: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
}

impl Outbox {
    fn push(&mut self, t: str0m::net::Transmit) {
        let data: Vec<u8> = t.contents.into();
        match t.proto {
            Protocol::Udp => {
                let idx = self.udp_index.get(&t.source).copied().or_else(|| {
                    // Same family fallback (e.g. a candidate on an unspecified bind).
                    self.udp_index
                        .iter()
                        .find(|(a, _)| a.is_ipv4() == t.source.is_ipv4())
                        .map(|(_, i)| *i)
                });
                if let Some(i) = idx {
                    self.udp[i].push((data, t.destination));
                }
            }
            _ => self.tcp.push((t.source, t.destination, data)),
        }
    }
}

pub struct MediaLoop {
    poll: Poll,
    udp: Vec<UdpEndpoint>,
    listeners: Vec<TcpEndpoint>,
    tcp: HashMap<Token, TcpConn>,
    tcp_by_pair: HashMap<(SocketAddr, SocketAddr), Token>,
    next_token: usize,
    sessions: HashMap<u64, Session>,
    ids: HashMap<String, u64>,
    by_ufrag: HashMap<String, u64>,
    by_addr: HashMap<(Protocol, SocketAddr), u64>,
    rooms: HashMap<String, Room>,
    /// Ended lessons (room, state, attendance), newest last.
    ended: VecDeque<(String, RoomSnapshot, super::snapshot::AttendanceReport)>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    next_key: u64,
    cmds: Receiver<Command>,
    metrics: Arc<Metrics>,
    settings: LoopSettings,
    outbox: Outbox,
    work: VecDeque<Work>,
    recv: RecvBatch,
    next_tick: Instant,
    running: bool,
    /// Origin: edge connections and the rooms they relay.
    relay_links: HashMap<u64, relay::RelayLink>,
    /// Edge: rooms whose program comes from another node, and (link, stream) → room.
    upstreams: HashMap<String, relay::Upstream>,
    upstream_streams: HashMap<(u64, u32), String>,
    /// Origin: classroom feeds relayed from edges, per (room, link), and (link, stream) → room.
    feeds_in: HashMap<(String, u64), relay::Upstream>,
    feed_streams: HashMap<(u64, u32), String>,
}

/// Media port sockets, bound before the loop starts so binding errors reach the caller.
pub struct MediaSockets {
    pub udp: Vec<(std::net::UdpSocket, SocketAddr)>,
    pub tcp: Vec<(std::net::TcpListener, SocketAddr)>,
}

impl MediaSockets {
    /// Binds UDP (and TCP when `tcp`) on `port` for every address. `advertise` maps a bound
    /// address to the address put in candidates.
    pub fn bind(
        binds: &[std::net::IpAddr],
        port: u16,
        tcp: bool,
        advertise: impl Fn(SocketAddr) -> SocketAddr,
    ) -> io::Result<MediaSockets> {
        let mut out = MediaSockets {
            udp: vec![],
            tcp: vec![],
        };
        for ip in binds {
            let addr = SocketAddr::new(*ip, port);
            let domain = if ip.is_ipv4() {
                socket2::Domain::IPV4
            } else {
                socket2::Domain::IPV6
            };
            let s = socket2::Socket::new(domain, socket2::Type::DGRAM, None)?;
            if ip.is_ipv6() {
                s.set_only_v6(true)?;
            }
            // Large buffers absorb bursts of keyframes to hundreds of classrooms.
            let _ = s.set_recv_buffer_size(8 * 1024 * 1024);
            let _ = s.set_send_buffer_size(8 * 1024 * 1024);
            s.bind(&addr.into())?;
            s.set_nonblocking(true)?;
            let udp: std::net::UdpSocket = s.into();
            let bound = udp.local_addr()?;
            out.udp.push((udp, advertise(bound)));
            if tcp {
                let t = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
                if ip.is_ipv6() {
                    t.set_only_v6(true)?;
                }
                t.set_reuse_address(true)?;
                t.bind(&SocketAddr::new(*ip, bound.port()).into())?;
                t.listen(1024)?;
                t.set_nonblocking(true)?;
                out.tcp.push((t.into(), advertise(bound)));
            }
        }
        Ok(out)
    }

    pub fn udp_candidates(&self) -> Vec<SocketAddr> {
        self.udp.iter().map(|(_, a)| *a).collect()
    }

    pub fn tcp_candidates(&self) -> Vec<SocketAddr> {
        self.tcp.iter().map(|(_, a)| *a).collect()
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn codec_of(p: &PayloadParams) -> Codec {
    match p.spec().codec {
        StrCodec::Opus => Codec::Opus,
        StrCodec::Vp8 => Codec::Vp8,
        StrCodec::Vp9 => Codec::Vp9,
        StrCodec::H264 => Codec::H264,
        StrCodec::Av1 => Codec::Av1,
        _ => Codec::Other,
    }
}

fn codec_name(c: Codec) -> &'static str {
    match c {
        Codec::Opus => "opus",
        Codec::Vp8 => "vp8",
        Codec::Vp9 => "vp9",
        Codec::H264 => "h264",
        Codec::Av1 => "av1",
        Codec::Other => "other",
    }
}

fn random_seq() -> u16 {
    rand::random::<u16>() & 0x3fff
}

/// Drains one session's output. Transmits go to the outbox; events that involve other
/// sessions go to `work`.
fn drain(s: &mut Session, outbox: &mut Outbox, work: &mut VecDeque<Work>, metrics: &Metrics) {
    loop {
        match s.rtc.poll_output() {
            Ok(Output::Timeout(t)) => {
                s.scheduled = Some(t);
                return;
            }
            Ok(Output::Transmit(t)) => outbox.push(t),
            Ok(Output::Event(e)) => handle_event(s, e, work, metrics),
            Err(e) => {
                debug!(session = %s.id, "rtc error: {e}");
                s.rtc.disconnect();
                s.scheduled = Some(Instant::now());
                return;
            }
        }
    }
}

fn handle_event(s: &mut Session, e: Event, work: &mut VecDeque<Work>, metrics: &Metrics) {
    match e {
        Event::Connected => {
            s.connected = true;
            work.push_back(Work::Connected(s.key));
        }
        Event::IceConnectionStateChange(state) => {
            debug!(session = %s.id, ?state, "ice state");
            match state {
                IceConnectionState::Disconnected => {
                    s.disconnected_at.get_or_insert_with(Instant::now);
                }
                IceConnectionState::Connected | IceConnectionState::Completed => {
                    s.disconnected_at = None;
                }
                _ => {}
            }
        }
        Event::RtpPacket(p) if s.kind == SessionKind::Publish => {
            work.push_back(Work::Rtp(s.key, p));
        }
        Event::KeyframeRequest(r) => {
            metrics.plis_received.inc();
            work.push_back(Work::KeyframeRequest(s.key, r.mid, r.kind));
        }
        Event::MediaEgressStats(st) => {
            let prev = s.stats.nacks.insert(st.mid, st.nacks).unwrap_or(0);
            metrics.nacks_received.inc_by(st.nacks.saturating_sub(prev));
            s.stats.plis.insert(st.mid, st.plis + st.firs);
            if st.loss.is_some() {
                s.stats.loss = st.loss;
            }
            if st.rtt.is_some() {
                s.stats.rtt = st.rtt;
            }
        }
        Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) if s.video_twcc => {
            let mut e = Estimate::new(estimate.as_u64(), true);
            if let Some(prev) = s.estimate {
                e.raw = prev.raw;
            }
            s.estimate = Some(e);
        }
        // REMB only counts for receivers that give no transport-wide feedback.
        Event::EgressBitrateEstimate(BweKind::Remb { estimate, .. })
            if !s.estimate.is_some_and(|e| e.twcc) =>
        {
            s.estimate = Some(Estimate::new(estimate.as_u64(), false));
        }
        Event::PeerStats(st) => {
            let now = st.timestamp;
            // Bytes in the direction this session carries media.
            let bytes = if s.kind == SessionKind::Subscribe {
                st.peer_bytes_tx
            } else {
                st.peer_bytes_rx
            };
            if let Some(last) = s.stats.last_bytes_at {
                let dt = now.saturating_duration_since(last).as_millis().max(1) as u64;
                s.stats.bitrate_bps = bytes.saturating_sub(s.stats.egress_bytes) * 8 * 1000 / dt;
            }
            s.stats.egress_bytes = bytes;
            s.stats.last_bytes_at = Some(now);
            if st.rtt.is_some() {
                s.stats.rtt = st.rtt;
            }
            if s.kind == SessionKind::Publish {
                s.stats.loss = st.ingress_loss_fraction.or(s.stats.loss);
            }
            if let (Some(raw), Some(e)) = (st.bwe_tx, s.estimate.as_mut().filter(|e| e.twcc)) {
                e.push_raw(raw.as_u64(), now);
                trace!(session = %s.id, raw = raw.as_u64(), avg = e.bps, allocated = ?s.decision.as_ref().map(|d| d.allocated_bps), "raw estimate");
                // A fall under what the allocator gave out is acted on now, not at the next
                // tick: every 100 ms the link's queue grows is more of the voice played late.
                if s.decision
                    .as_ref()
                    .is_some_and(|d| raw.as_u64() < d.allocated_bps)
                {
                    work.push_back(Work::Reallocate(s.key));
                }
            }
        }
        _ => {}
    }
}

/// What a slot should forward: a source (simulcast layer) and its highest temporal layer
/// (`None`: all).
type Target = (Option<SourceId>, Option<u8>);

/// Lowers the desired rate to `min` and lets str0m see it at a timeout, so that setting the goal
/// next reads as a rise: str0m starts an allocation probe only on a rise of the desired rate.
/// (Fields, not the session: the caller holds the session's decision.)
fn stage_rise(id: &str, rtc: &mut Rtc, bwe_set: &mut Option<(u64, u64)>, min: u64) {
    rtc.bwe().set_bitrate(Bitrate::bps(min), Bitrate::bps(min));
    if let Err(e) = rtc.handle_input(Input::Timeout(Instant::now())) {
        debug!(session = %id, "timeout input failed: {e}");
    }
    *bwe_set = None;
}

/// Re-evaluate which layer one subscriber's slots follow; collect the switches that wait on
/// a keyframe into `wants`. Returns whether any slot's target changed.
fn update_subscriber(
    s: &mut Session,
    room: &Room,
    outbox: &mut Outbox,
    work: &mut VecDeque<Work>,
    metrics: &Metrics,
    now: Instant,
    wants: &mut Vec<(Slot, SourceId)>,
) -> bool {
    let mut changed = false;
    let targets = choose_targets(s, &room.program, room.policy, now);
    // Nothing on offer (the teacher reconnecting, a relay healing): leave the estimator
    // as it was rather than aim it at zero, so the picture comes back at its old rate.
    let idle = s
        .decision
        .as_ref()
        .is_some_and(|d| d.desired_bps == 0 && d.probe_bps.is_none());
    if let Some(d) = s.decision.as_ref().filter(|_| !idle) {
        // Keep the link no fuller than the media (padding to a layer the link cannot
        // carry is what freezes rural classrooms), but aim the estimator past the next
        // better choice by the allocator's margin so a probe can prove it. str0m probes
        // when the desired rate rises, so a probe that found nothing is re-armed every
        // few seconds by staging a rise; the aim also alternates, which still makes every
        // other re-arm a rise while staging waits after a move down.
        let min = d.allocated_bps;
        let mut rearm = false;
        if now.saturating_duration_since(s.probe_armed_at) >= PROBE_REARM {
            s.probe_armed_at = now;
            s.probe_bump = !s.probe_bump;
            rearm = true;
        }
        let aim = if s.probe_bump { 1.30 } else { 1.20 };
        let latest = s.estimate.map(|e| e.latest(now));
        let mut goal = crate::forward::allocator::probe_goal(d, latest, aim);
        let settled = s
            .down_at
            .is_none_or(|t| now.saturating_duration_since(t) >= REARM_AFTER_DOWN);
        if rearm && settled && d.probe_bps.is_some() && !d.confirming {
            // Every re-arm is staged as a rise (down to the current rate, then up to the
            // goal below), not only the alternate ones whose aim is higher.
            stage_rise(&s.id, &mut s.rtc, &mut s.bwe_set, min);
        }
        if d.confirming {
            // The estimate fell just short of what the link was carrying: probe at
            // the current rate before the allocator gives the choice up. str0m
            // probes on a rise of the desired rate that it sees at a timeout, and
            // drops one it cannot act on yet, so the rise is staged again now and then.
            goal = goal.max((min as f64 * CONFIRM_AIM) as u64);
            let due = s
                .confirm_armed_at
                .is_none_or(|t| now.saturating_duration_since(t) >= CONFIRM_REARM);
            if due {
                s.confirm_armed_at = Some(now);
                stage_rise(&s.id, &mut s.rtc, &mut s.bwe_set, min);
                debug!(session = %s.id, rate = min, estimate = ?s.estimate.map(|e| e.latest(now)), "probing to confirm a dip");
            }
        } else {
            s.confirm_armed_at = None;
        }
        let want = (min, goal.max(min));
        if s.bwe_set != Some(want) {
            s.bwe_set = Some(want);
            s.rtc
                .bwe()
                .set_bitrate(Bitrate::bps(want.0), Bitrate::bps(want.1));
            drain(s, outbox, work, metrics);
        }
    }
    for (slot, out) in s.out.iter_mut() {
        let (desired, max_tid) = targets.get(slot).copied().unwrap_or((None, None));
        out.desired = desired;
        out.forwarder.set_temporal(max_tid);
        let source = room.program.source(*slot);
        // A slot with nothing on screen yet does not wait for a layer the publisher
        // was told to stop: it starts on what flows while dynacast resumes the other.
        let target = match desired {
            Some(d) if out.forwarder.current().is_none() => source
                .and_then(|src| src.flowing_instead_of(d, now))
                .or(desired),
            other => other,
        };
        if out.forwarder.target() != target {
            out.forwarder.set_target(target, now);
            changed = true;
        }
        let down = source.is_some_and(|src| {
            let index =
                |x: Option<SourceId>| x.and_then(|x| src.layers.iter().position(|l| l.source == x));
            matches!(
                (index(target), index(out.forwarder.current())),
                (Some(t), Some(c)) if t < c
            )
        });
        out.forwarder.set_bridging(down);
        // Audio switches on any packet; only video waits for (and asks for) keyframes.
        if s.connected && !slot.is_audio() {
            if let Some(src) = out.forwarder.waiting_for_keyframe() {
                wants.push((*slot, src));
            }
        }
    }
    changed
}

/// The source each of a subscriber's slots should follow: the allocator's choice once the
/// subscriber has a bandwidth estimate, else the preferred flowing layer.
fn choose_targets(
    s: &mut Session,
    program: &Program,
    policy: Policy,
    now: Instant,
) -> HashMap<Slot, Target> {
    let mut slots: Vec<Slot> = s.out.keys().copied().collect();
    slots.sort();
    // A viewer never gets its own media back (the teacher's console, an on-stage classroom).
    let own = |slot: Slot| program.owner(slot) == Some(s.claims.sub.as_str());
    // Tiles are thumbnails: the small layer.
    let pref = |slot: Slot| match slot {
        Slot::Tile(_) => LayerPref::Low,
        _ => s.pref,
    };
    let Some(est) = s.estimate else {
        return slots
            .into_iter()
            .map(|slot| {
                let src = (!own(slot))
                    .then(|| program.choose(slot, pref(slot), now))
                    .flatten();
                (slot, (src, None))
            })
            .collect();
    };
    // The allocator climbs each slot's ladder: simulcast layers, and reduced frame rates
    // (temporal layers) between them.
    let mut ladders: HashMap<Slot, Vec<Step>> = HashMap::new();
    let offers: Vec<TrackOffer> = slots
        .iter()
        .filter(|slot| !own(**slot))
        .filter_map(|slot| {
            let src = program.source(*slot)?;
            let (steps, layers_bps) = src.ladder_rates(slot.is_audio(), now);
            let top = pref(*slot).index(src.layers.len());
            let max_layer = steps.iter().rposition(|st| st.layer <= top).unwrap_or(0);
            ladders.insert(*slot, steps);
            Some(TrackOffer {
                slot: *slot,
                layers_bps,
                max_layer,
            })
        })
        .collect();
    s.allocator.set_policy(policy);
    let reading = Reading {
        share_bps: est.for_allocation(now),
        latest_bps: est.latest(now),
        previous_bps: est.previous(now),
    };
    let d = s.allocator.update_reading(now, reading, &offers);
    let mut targets: HashMap<Slot, Target> = slots.iter().map(|s| (*s, (None, None))).collect();
    for (slot, step) in &d.choice {
        let Some(st) = step.and_then(|i| ladders.get(slot)?.get(i).copied()) else {
            continue;
        };
        let src = program
            .source(*slot)
            .and_then(|p| p.layers.get(st.layer))
            .map(|l| l.source);
        targets.insert(*slot, (src, st.max_tid));
    }
    if s.decision
        .as_ref()
        .is_some_and(|p| d.allocated_bps < p.allocated_bps && d.changed)
    {
        s.down_at = Some(now);
    }
    s.decision = Some(d);
    targets
}

/// One RTP packet of a published track, from a local publisher or relayed from the origin.
pub(crate) struct Inbound {
    pub seq: u64,
    pub ts: u32,
    pub pt: u8,
    pub marker: bool,
    pub audio_level: Option<i8>,
    pub voice_activity: Option<bool>,
    pub video_orientation: Option<str0m::rtp::VideoOrientation>,
    pub payload: Arc<[u8]>,
    pub received: Instant,
}

impl MediaLoop {
    pub fn new(
        sockets: MediaSockets,
        metrics: Arc<Metrics>,
        settings: LoopSettings,
    ) -> io::Result<(MediaLoop, MediaHandle)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel();
        let mut next_token = 1;
        let mut outbox = Outbox::default();
        let mut udp = vec![];
        for (i, (s, local)) in sockets.udp.into_iter().enumerate() {
            let mut socket = UdpSocket::from_std(s);
            poll.registry()
                .register(&mut socket, Token(next_token), Interest::READABLE)?;
            next_token += 1;
            outbox.udp.push(vec![]);
            outbox.udp_index.insert(local, i);
            udp.push(UdpEndpoint { socket, local });
        }
        let mut listeners = vec![];
        for (l, local) in sockets.tcp {
            let mut listener = TcpListener::from_std(l);
            poll.registry()
                .register(&mut listener, Token(next_token), Interest::READABLE)?;
            next_token += 1;
            listeners.push(TcpEndpoint { listener, local });
        }
        let ml = MediaLoop {
            poll,
            udp,
            listeners,
            tcp: HashMap::new(),
            tcp_by_pair: HashMap::new(),
            next_token,
            sessions: HashMap::new(),
            ids: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            rooms: HashMap::new(),
            ended: VecDeque::new(),
            timers: BinaryHeap::new(),
            next_key: 1,
            cmds: rx,
            metrics,
            settings,
            outbox,
            work: VecDeque::new(),
            recv: RecvBatch::default(),
            next_tick: Instant::now(),
            running: true,
            relay_links: HashMap::new(),
            upstreams: HashMap::new(),
            upstream_streams: HashMap::new(),
            feeds_in: HashMap::new(),
            feed_streams: HashMap::new(),
        };
        Ok((ml, MediaHandle::new(tx, waker)))
    }

    /// Runs until a `Shutdown` command (or every handle is dropped).
    pub fn run(mut self) {
        let mut events = Events::with_capacity(256);
        while self.running {
            let now = Instant::now();
            let next = self.next_deadline().unwrap_or(now + TICK);
            let timeout = next.saturating_duration_since(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    warn!("poll failed: {e}");
                }
                continue;
            }
            for ev in events.iter() {
                let token = ev.token();
                if token == WAKER {
                    continue;
                }
                if let Some(i) = self.udp_index(token) {
                    self.read_udp(i);
                } else if let Some(i) = self.listener_index(token) {
                    self.accept_tcp(i);
                } else {
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        self.read_tcp(token);
                    }
                    if ev.is_writable() {
                        self.flush_tcp_conn(token);
                    }
                }
                self.process_work();
                self.flush();
            }
            self.handle_commands();
            self.fire_timers();
            if Instant::now() >= self.next_tick {
                self.tick();
            }
            self.process_work();
            self.flush();
        }
        self.shutdown();
    }

    fn udp_index(&self, t: Token) -> Option<usize> {
        (t.0 >= 1 && t.0 <= self.udp.len()).then(|| t.0 - 1)
    }

    fn listener_index(&self, t: Token) -> Option<usize> {
        let base = 1 + self.udp.len();
        (t.0 >= base && t.0 < base + self.listeners.len()).then(|| t.0 - base)
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((t, _))| *t);
        Some(match timer {
            Some(t) => t.min(self.next_tick),
            None => self.next_tick,
        })
    }

    fn schedule(&mut self, key: u64) {
        if let Some(s) = self.sessions.get(&key) {
            if let Some(t) = s.scheduled {
                self.timers.push(Reverse((t, key)));
            }
        }
    }

    fn drain_key(&mut self, key: u64) {
        let before = self.sessions.get(&key).and_then(|s| s.scheduled);
        if let Some(s) = self.sessions.get_mut(&key) {
            drain(s, &mut self.outbox, &mut self.work, &self.metrics);
            if s.scheduled != before {
                self.schedule(key);
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((t, key))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(s) = self.sessions.get_mut(&key) else {
                continue;
            };
            // Stale heap entry: a newer deadline was scheduled for this session.
            if s.scheduled != Some(t) {
                continue;
            }
            s.scheduled = None;
            if let Err(e) = s.rtc.handle_input(Input::Timeout(now)) {
                debug!(session = %s.id, "timeout input failed: {e}");
                s.rtc.disconnect();
            }
            self.drain_key(key);
            if self.sessions.get(&key).is_some_and(|s| !s.rtc.is_alive()) {
                self.remove_session(key, "closed");
            }
        }
    }

    fn route(&mut self, proto: Protocol, source: SocketAddr, buf: &[u8]) -> Option<u64> {
        if let Some(ufrag) = demux::stun_local_ufrag(buf) {
            let key = *self.by_ufrag.get(ufrag)?;
            if self.by_addr.get(&(proto, source)) != Some(&key) {
                let s = self.sessions.get_mut(&key)?;
                if s.addrs.len() >= MAX_ADDRS_PER_SESSION {
                    let old = s.addrs.remove(0);
                    self.by_addr.remove(&old);
                }
                s.addrs.push((proto, source));
                self.by_addr.insert((proto, source), key);
            }
            return Some(key);
        }
        self.by_addr.get(&(proto, source)).copied()
    }

    fn input(
        &mut self,
        key: u64,
        proto: Protocol,
        source: SocketAddr,
        dest: SocketAddr,
        buf: &[u8],
    ) {
        let Ok(contents) = buf.try_into() else {
            self.metrics
                .dropped
                .with_label_values(&["unparsable"])
                .inc();
            return;
        };
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        let input = Input::Receive(
            Instant::now(),
            Receive {
                proto,
                source,
                destination: dest,
                contents,
            },
        );
        if !s.rtc.accepts(&input) {
            self.metrics
                .dropped
                .with_label_values(&["not_accepted"])
                .inc();
            return;
        }
        if let Err(e) = s.rtc.handle_input(input) {
            // A bad packet from one peer only ever costs that peer its session.
            debug!(session = %s.id, "input rejected: {e}");
            self.metrics.dropped.with_label_values(&["rejected"]).inc();
        }
        self.drain_key(key);
    }

    fn read_udp(&mut self, i: usize) {
        loop {
            let mut batch = std::mem::take(&mut self.recv);
            let res = batch_io::recv_batch(&self.udp[i].socket, &mut batch);
            match res {
                Ok(n) => {
                    self.metrics.datagrams_in.inc_by(n as u64);
                    let local = self.udp[i].local;
                    for (buf, source) in batch.iter() {
                        match self.route(Protocol::Udp, source, buf) {
                            Some(key) => self.input(key, Protocol::Udp, source, local, buf),
                            None => self
                                .metrics
                                .dropped
                                .with_label_values(&["unknown_source"])
                                .inc(),
                        }
                    }
                    self.recv = batch;
                    self.process_work();
                    self.flush();
                    // Media relayed from another node arrives as commands: take it between
                    // batches, so a busy media port does not hold it back.
                    self.handle_commands();
                }
                Err(e) => {
                    self.recv = batch;
                    if e.kind() != io::ErrorKind::WouldBlock {
                        debug!("udp receive error: {e}");
                        if e.kind() == io::ErrorKind::Interrupted {
                            continue;
                        }
                    }
                    return;
                }
            }
        }
    }

    fn accept_tcp(&mut self, i: usize) {
        loop {
            match self.listeners[i].listener.accept() {
                Ok((mut stream, peer)) => {
                    if self.tcp.len() >= TCP_MAX_CONNECTIONS {
                        self.metrics.dropped.with_label_values(&["tcp_limit"]).inc();
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, token, Interest::READABLE)
                        .is_err()
                    {
                        continue;
                    }
                    let local = self.listeners[i].local;
                    self.tcp_by_pair.insert((local, peer), token);
                    self.tcp.insert(
                        token,
                        TcpConn {
                            stream,
                            local,
                            peer,
                            deframer: Deframer::default(),
                            outbuf: vec![],
                            opened: Instant::now(),
                            bound: false,
                            wants_write: false,
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    debug!("tcp accept: {e}");
                    return;
                }
            }
        }
    }

    fn close_tcp(&mut self, token: Token) {
        if let Some(mut c) = self.tcp.remove(&token) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.tcp_by_pair.remove(&(c.local, c.peer));
            if let Some(key) = self.by_addr.remove(&(Protocol::Tcp, c.peer)) {
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.addrs.retain(|a| *a != (Protocol::Tcp, c.peer));
                }
            }
        }
    }

    fn read_tcp(&mut self, token: Token) {
        let mut frames = vec![];
        let mut close = false;
        {
            let Some(c) = self.tcp.get_mut(&token) else {
                return;
            };
            let mut buf = [0u8; 16 * 1024];
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        close = true;
                        break;
                    }
                    Ok(n) => c.deframer.push(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        close = true;
                        break;
                    }
                }
            }
            loop {
                match c.deframer.next_frame() {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => break,
                    Err(e) => {
                        debug!(peer = %c.peer, "closing ICE-TCP connection: {e}");
                        self.metrics
                            .dropped
                            .with_label_values(&["tcp_framing"])
                            .inc();
                        close = true;
                        break;
                    }
                }
            }
        }
        let (local, peer) = match self.tcp.get(&token) {
            Some(c) => (c.local, c.peer),
            None => return,
        };
        for f in frames {
            self.metrics.datagrams_in.inc();
            match self.route(Protocol::Tcp, peer, &f) {
                Some(key) => {
                    if let Some(c) = self.tcp.get_mut(&token) {
                        c.bound = true;
                    }
                    self.input(key, Protocol::Tcp, peer, local, &f);
                }
                None => self
                    .metrics
                    .dropped
                    .with_label_values(&["unknown_source"])
                    .inc(),
            }
        }
        if close {
            self.close_tcp(token);
        }
    }

    fn flush_tcp_conn(&mut self, token: Token) {
        let mut close = false;
        if let Some(c) = self.tcp.get_mut(&token) {
            while !c.outbuf.is_empty() {
                match c.stream.write(&c.outbuf) {
                    Ok(0) => {
                        close = true;
                        break;
                    }
                    Ok(n) => {
                        c.outbuf.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        close = true;
                        break;
                    }
                }
            }
            let want = !c.outbuf.is_empty();
            if want != c.wants_write {
                let interest = if want {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                let _ = self
                    .poll
                    .registry()
                    .reregister(&mut c.stream, token, interest);
                c.wants_write = want;
            }
        }
        if close {
            self.close_tcp(token);
        }
    }

    fn flush(&mut self) {
        for i in 0..self.udp.len() {
            if self.outbox.udp[i].is_empty() {
                continue;
            }
            let queue = std::mem::take(&mut self.outbox.udp[i]);
            let packets: Vec<(&[u8], SocketAddr)> =
                queue.iter().map(|(d, a)| (d.as_slice(), *a)).collect();
            let mut sent = 0;
            // A full socket buffer drops what is left, like a router queue would.
            while sent < packets.len() {
                match batch_io::send_batch(&self.udp[i].socket, &packets[sent..]) {
                    Ok(0) => break,
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        if e.kind() != io::ErrorKind::WouldBlock {
                            debug!("udp send error: {e}");
                            // Skip the datagram that failed (e.g. unreachable destination).
                            sent += 1;
                            continue;
                        }
                        break;
                    }
                }
            }
            self.metrics.datagrams_out.inc_by(sent as u64);
            if sent < packets.len() {
                self.metrics
                    .dropped
                    .with_label_values(&["send_buffer_full"])
                    .inc_by((packets.len() - sent) as u64);
            }
            let mut queue = queue;
            queue.clear();
            self.outbox.udp[i] = queue;
        }
        if !self.outbox.tcp.is_empty() {
            let tcp = std::mem::take(&mut self.outbox.tcp);
            let mut touched = vec![];
            for (src, dst, data) in tcp {
                let Some(token) = self.tcp_by_pair.get(&(src, dst)).copied() else {
                    self.metrics
                        .dropped
                        .with_label_values(&["tcp_no_conn"])
                        .inc();
                    continue;
                };
                if let Some(c) = self.tcp.get_mut(&token) {
                    if c.outbuf.len() > TCP_MAX_OUTBUF {
                        self.metrics.dropped.with_label_values(&["tcp_slow"]).inc();
                        continue;
                    }
                    frame_into(&mut c.outbuf, &data);
                    self.metrics.datagrams_out.inc();
                    touched.push(token);
                }
            }
            touched.dedup();
            for t in touched {
                self.flush_tcp_conn(t);
            }
        }
    }

    fn process_work(&mut self) {
        while let Some(w) = self.work.pop_front() {
            match w {
                Work::Rtp(from, pkt) => self.forward(from, pkt),
                Work::KeyframeRequest(from, mid, kind) => {
                    self.subscriber_keyframe_request(from, mid, kind)
                }
                Work::Connected(key) => self.on_connected(key),
                Work::Reallocate(key) => self.reallocate(key),
            }
        }
    }

    fn on_connected(&mut self, key: u64) {
        let Some(s) = self.sessions.get(&key) else {
            return;
        };
        info!(session = %s.id, room = %s.room, kind = s.kind.as_str(), sub = %s.claims.sub, "connected");
        self.metrics
            .peers
            .with_label_values(&[s.kind.as_str(), s.claims.role.as_str()])
            .inc();
        let room = s.room.clone();
        let (claims, publishing) = (s.claims.clone(), s.kind == SessionKind::Publish);
        if let Some(r) = self.rooms.get_mut(&room) {
            let ev = r.state.session_up(&claims, publishing, at_now());
            r.emit(ev);
        }
        self.update_room(&room, Instant::now());
    }

    /// The room's clock: the teacher's absence, tile rotation, the active speaker, link
    /// quality reports; and forgetting rooms nobody uses.
    fn tick_room(&mut self, name: &str, at: At) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let mut ev = room.state.tick(at);
        if let Some(change) = room.speaker.update(at.mono) {
            ev.extend(room.state.set_speaker(change));
        }
        let ended = room.state.lesson() == LessonState::Ended;
        if room.emit(ev) {
            // Stage or tiles moved: slots follow at once.
            self.update_room(name, at.mono);
        }
        if ended {
            self.finish_lesson(name);
            return;
        }
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        if at.mono.saturating_duration_since(room.quality_at) >= QUALITY_EVERY {
            room.quality_at = at.mono;
            if room.events.receiver_count() > 0 {
                let links: Vec<LinkQuality> = room
                    .members
                    .iter()
                    .filter_map(|key| self.sessions.get(key))
                    .filter(|s| s.kind == SessionKind::Subscribe && s.connected)
                    .filter(|s| s.claims.role == Role::Classroom)
                    .map(|s| LinkQuality {
                        sub: s.claims.sub.clone(),
                        estimate_bps: s.estimate.map(|e| e.bps),
                        loss: s.stats.loss,
                        rtt_ms: s.stats.rtt.map(|d| d.as_secs_f64() * 1000.0),
                    })
                    .collect();
                if !links.is_empty() {
                    room.publish(&RoomEvent::Quality { links });
                }
            }
        }
        if room.members.is_empty()
            && room.state.is_idle()
            && room.events.receiver_count() == 0
            && room.relay.links.is_empty()
            && !self.upstreams.contains_key(name)
        {
            self.rooms.remove(name);
        }
        self.expire_upstream(name, at.mono);
    }

    fn room_command(
        &mut self,
        name: &str,
        who: &Claims,
        cmd: RoomCommand,
    ) -> Result<RoomSnapshot, LoopError> {
        let at = at_now();
        let room = self.rooms.get_mut(name).ok_or(LoopError::NotFound)?;
        let removed = match &cmd {
            RoomCommand::Remove { sub } => Some(sub.clone()),
            _ => None,
        };
        let command = cmd.name();
        let res = room.state.command(who, cmd, at);
        self.metrics
            .room_commands
            .with_label_values(&[command, if res.is_ok() { "ok" } else { "rejected" }])
            .inc();
        let ev = res?;
        info!(room = name, by = %who.sub, command, events = ev.len(), "room command");
        let changed = room.emit(ev);
        let snap = room.state.snapshot();
        if let Some(sub) = removed {
            let keys: Vec<u64> = room
                .members
                .iter()
                .copied()
                .filter(|k| self.sessions.get(k).is_some_and(|s| s.claims.sub == sub))
                .collect();
            for k in keys {
                self.remove_session(k, "removed by the teacher");
            }
        }
        if snap.lesson == LessonState::Ended {
            self.finish_lesson(name);
        } else if changed {
            self.update_room(name, at.mono);
        }
        Ok(snap)
    }

    /// The lesson ended: everyone leaves, and its attendance is kept.
    fn finish_lesson(&mut self, name: &str) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let at = at_now();
        let ev = room.state.end(at);
        room.emit(ev);
        let snap = room.state.snapshot();
        let report = AttendanceReport {
            room: name.to_string(),
            lesson: snap.lesson,
            started_unix_ms: snap.started_unix_ms,
            ended_unix_ms: snap.ended_unix_ms,
            participants: room.state.attendance(at),
        };
        let members = room.members.clone();
        for k in members {
            self.remove_session(k, "the lesson ended");
        }
        self.rooms.remove(name);
        self.metrics.lessons_ended.inc();
        info!(room = name, "lesson ended");
        self.ended.push_back((name.to_string(), snap, report));
        while self.ended.len() > ENDED_KEPT {
            self.ended.pop_front();
        }
    }

    /// Forward one publisher packet to every subscriber of its room, into each slot it fills.
    fn forward(&mut self, from: u64, pkt: RtpPacket) {
        let now = Instant::now();
        let Some(publisher) = self.sessions.get_mut(&from) else {
            return;
        };
        let ssrc = pkt.header.ssrc;
        let (mid, rid) = match publisher.ssrc_cache.get(&ssrc) {
            Some(v) => *v,
            None => {
                let mut api = publisher.rtc.direct_api();
                let Some(rx) = api.stream_rx(&ssrc) else {
                    return;
                };
                let v = (rx.mid(), rx.rid());
                publisher.ssrc_cache.insert(ssrc, v);
                v
            }
        };
        let Some(track) = publisher.tracks.get(&mid).copied() else {
            return;
        };
        let pt = *pkt.header.payload_type;
        let codec = match publisher.codecs.get(&pt) {
            Some((c, _)) => *c,
            None => {
                let Some(params) = publisher
                    .rtc
                    .codec_config()
                    .params()
                    .iter()
                    .find(|p| *p.pt() == pt)
                    .copied()
                else {
                    return;
                };
                let c = codec_of(&params);
                publisher.codecs.insert(pt, (c, params));
                c
            }
        };
        let pub_params = publisher.codecs[&pt].1;
        let room_name = publisher.room.clone();
        let inbound = Inbound {
            seq: *pkt.seq_no,
            ts: pkt.header.timestamp,
            pt,
            marker: pkt.header.marker,
            audio_level: pkt.header.ext_vals.audio_level,
            voice_activity: pkt.header.ext_vals.voice_activity,
            video_orientation: pkt.header.ext_vals.video_orientation,
            payload: pkt.payload,
            received: pkt.timestamp,
        };
        let key = TrackKey {
            session: from,
            track,
        };
        self.fan_out(
            &room_name,
            key,
            rid,
            *ssrc,
            (codec, pub_params),
            inbound,
            relay::Onward::All,
            now,
        );
    }

    /// Forward one packet of a published track (local, or relayed from the origin) to every
    /// subscriber of the room, into each slot it fills; and, for local publishers, to the
    /// edge nodes relaying the room.
    #[allow(clippy::too_many_arguments)]
    fn fan_out(
        &mut self,
        room_name: &str,
        key: TrackKey,
        rid: Option<Rid>,
        ssrc: u32,
        (codec, pub_params): (Codec, PayloadParams),
        pkt: Inbound,
        onward: relay::Onward,
        now: Instant,
    ) {
        let from = key.session;
        let track = key.track;
        let pt = pkt.pt;
        self.metrics.packets_in.inc();
        self.metrics.bytes_in.inc_by(pkt.payload.len() as u64);

        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let Some(src) = room.program.sources.get_mut(&key) else {
            return;
        };
        let Some(idx) = src.layer_index(rid.as_deref()) else {
            return;
        };
        let keyframe = starts_keyframe(codec, &pkt.payload);
        let video_key = keyframe && codec.is_video();
        let size = if video_key && codec == Codec::Vp8 {
            vp8_keyframe_size(&pkt.payload)
        } else {
            None
        };
        let first_packet = src.layers[idx].last_packet.is_none();
        src.on_packet(idx, ssrc, pkt.payload.len(), video_key, size, now);
        let vp8_fields = if codec == Codec::Vp8 {
            parse_fields(&pkt.payload)
        } else {
            None
        };
        if let Some(tid) = vp8_fields.and_then(|f| f.tid) {
            src.on_temporal(idx, tid, pkt.payload.len(), now);
        }
        if video_key {
            self.metrics.keyframes_received.inc();
        }
        let source = src.layers[idx].source;
        if track.is_audio() {
            if let (Some(level), Some(owner)) =
                (pkt.audio_level, room.program.owner_of_session(from))
            {
                let owner = owner.to_string();
                room.speaker.on_level(&owner, level.saturating_neg(), now);
            }
        }
        if first_packet {
            // A layer started: subscribers may now want it.
            self.update_room(room_name, now);
        }
        self.relay_packet(room_name, key, source, &pkt, onward);

        let vp8_desc = if codec == Codec::Vp8 {
            Vp8Descriptor::parse(&pkt.payload).ok()
        } else {
            None
        };
        let info = PacketInfo {
            source,
            seq: pkt.seq,
            ts: pkt.ts,
            keyframe_start: keyframe,
            vp8: vp8_desc.and(vp8_fields),
        };
        let mut ext = ExtensionValues::default();
        if track.is_audio() {
            ext.audio_level = pkt.audio_level;
            ext.voice_activity = pkt.voice_activity;
        } else {
            ext.video_orientation = pkt.video_orientation;
        }
        let metrics = &self.metrics;
        let Some(room) = self.rooms.get(room_name) else {
            return;
        };
        let routes = room.program.routes(&key);
        if routes.is_empty() {
            return;
        }
        for &sub_key in &room.members {
            let Some(sub) = self.sessions.get_mut(&sub_key) else {
                continue;
            };
            if sub.kind != SessionKind::Subscribe || !sub.connected {
                continue;
            }
            let mut wrote = false;
            for &slot in routes {
                let Some(out) = sub.out.get_mut(&slot) else {
                    continue;
                };
                let switches = out.forwarder.switches();
                let fwd = out.forwarder.on_packet(info, now);
                if out.forwarder.switches() != switches {
                    metrics.layer_switches.inc();
                }
                let Some(fwd) = fwd else {
                    continue;
                };
                let sub_pt = *out.pt_map.entry((from, pt)).or_insert_with(|| {
                    let cfg = sub.rtc.codec_config();
                    let media = sub.rtc.media(out.mid);
                    let remote = media.map(|m| m.remote_pts().to_vec()).unwrap_or_default();
                    cfg.params()
                        .iter()
                        .filter(|p| remote.contains(&p.pt()))
                        .filter(|p| p.spec().codec == pub_params.spec().codec)
                        .max_by_key(|p| {
                            // Prefer identical format parameters (H.264 profile, packetization).
                            (p.spec().format == pub_params.spec().format) as u8
                        })
                        .map(|p| (p.pt(), p.red()))
                });
                let Some((sub_pt, red_pt)) = sub_pt else {
                    continue;
                };
                let mid = out.mid;
                out.packets += 1;
                let mut payload = pkt.payload.clone();
                let mut send_pt = sub_pt;
                if slot.is_audio() {
                    if out.forwarder.switches() != switches {
                        out.red.reset();
                    }
                    out.red_on = want_red(out.red_on, sub.stats.loss);
                    if let (true, Some(red_pt)) = (out.red_on, red_pt) {
                        payload = out.red.encode(*sub_pt, fwd.ts, &pkt.payload).into();
                        send_pt = red_pt;
                    }
                }
                let mut api = sub.rtc.direct_api();
                let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                    continue;
                };
                let mut write =
                    RtpWrite::new(send_pt, fwd.seq.into(), fwd.ts, pkt.received, payload)
                        .marker(pkt.marker)
                        .ext_vals(ext.clone())
                        .nackable(!slot.is_audio());
                if let (Some(desc), Some(v)) = (vp8_desc, fwd.vp8) {
                    let mut b = desc.patch();
                    if let Some(p) = v.picture_id {
                        b = b.picture_id(p);
                    }
                    if let Some(t) = v.tl0_pic_idx {
                        b = b.tl0_pic_idx(t);
                    }
                    if let Some(k) = v.key_idx {
                        b = b.key_idx(k);
                    }
                    if let Ok(patch) = b.build() {
                        write = write.vp8_patch(patch);
                    }
                }
                tx.write_rtp(write);
                wrote = true;
                metrics.packets_out.inc();
                metrics.bytes_out.inc_by(pkt.payload.len() as u64);
            }
            if !wrote {
                continue;
            }
            let before = sub.scheduled;
            drain(sub, &mut self.outbox, &mut self.work, metrics);
            if sub.scheduled != before {
                if let Some(t) = sub.scheduled {
                    self.timers.push(Reverse((t, sub_key)));
                }
            }
            metrics.forward_seconds.observe(
                Instant::now()
                    .saturating_duration_since(pkt.received)
                    .as_secs_f64(),
            );
        }
    }

    /// Ask the publisher of `source` for a keyframe, at most once per interval per layer.
    fn request_keyframe(&mut self, room: &str, slot: Slot, source: SourceId, now: Instant) {
        if slot.is_audio() {
            return;
        }
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let Some((publisher, layer)) = r.program.layer_by_source(source) else {
            return;
        };
        let Some(ssrc) = layer.ssrc else {
            return;
        };
        if !layer.throttle.try_request(now) {
            return;
        }
        if self.upstream_keyframe(publisher, source) {
            return;
        }
        let Some(p) = self.sessions.get_mut(&publisher) else {
            return;
        };
        // PLI where offered, FIR where only FIR is.
        let kind = match p.codecs.values().find(|(c, _)| c.is_video()) {
            Some((_, params)) if !params.fb_pli() && params.fb_fir() => KeyframeRequestKind::Fir,
            _ => KeyframeRequestKind::Pli,
        };
        if let Some(rx) = p.rtc.direct_api().stream_rx(&ssrc.into()).as_mut() {
            rx.request_keyframe(kind);
            self.metrics.keyframe_requests_sent.inc();
        }
        self.drain_key(publisher);
    }

    fn subscriber_keyframe_request(&mut self, from: u64, mid: Mid, _kind: KeyframeRequestKind) {
        let Some(s) = self.sessions.get(&from) else {
            return;
        };
        let Some(slot) = s.slots.get(&mid).copied() else {
            return;
        };
        let Some(source) = s.out.get(&slot).and_then(|o| o.forwarder.current()) else {
            return;
        };
        let room = s.room.clone();
        self.request_keyframe(&room, slot, source, Instant::now());
    }

    /// Re-evaluate which layer every subscriber of the room follows; request keyframes for
    /// the switches that wait on one.
    fn update_room(&mut self, room_name: &str, now: Instant) {
        let (wants, _) = self.update_subscribers(room_name, None, now);
        self.request_wanted_keyframes(room_name, wants, now);
    }

    /// One subscriber's allocation, re-run between ticks (its estimate fell).
    fn reallocate(&mut self, key: u64) {
        let now = Instant::now();
        let Some(room_name) = self.sessions.get(&key).map(|s| s.room.clone()) else {
            return;
        };
        let (wants, changed) = self.update_subscribers(&room_name, Some(key), now);
        // While the allocator holds a dip this runs on every stats tick: the room-wide
        // keyframe and dynacast pass only when a target moved.
        if changed {
            self.request_wanted_keyframes(&room_name, wants, now);
        }
    }

    /// Runs [`update_subscriber`] for the room's subscribers (`only` one of them, if given):
    /// the switches that wait on a keyframe, and whether any slot's target moved.
    fn update_subscribers(
        &mut self,
        room_name: &str,
        only: Option<u64>,
        now: Instant,
    ) -> (Vec<(Slot, SourceId)>, bool) {
        let mut wants = vec![];
        let mut changed = false;
        let Some(room) = self.rooms.get(room_name) else {
            return (wants, changed);
        };
        for &key in &room.members {
            if only.is_some_and(|k| k != key) {
                continue;
            }
            let Some(s) = self.sessions.get_mut(&key) else {
                continue;
            };
            if s.kind != SessionKind::Subscribe {
                continue;
            }
            changed |= update_subscriber(
                s,
                room,
                &mut self.outbox,
                &mut self.work,
                &self.metrics,
                now,
                &mut wants,
            );
        }
        (wants, changed)
    }

    fn request_wanted_keyframes(
        &mut self,
        room_name: &str,
        mut wants: Vec<(Slot, SourceId)>,
        now: Instant,
    ) {
        wants.sort();
        wants.dedup();
        for (slot, src) in wants {
            self.request_keyframe(room_name, slot, src, now);
        }
        self.dynacast(room_name, now);
    }

    /// Tells publishers which simulcast layers anyone needs (a `layers` room event their page
    /// applies), so unneeded layers stop costing the publisher's uplink.
    fn dynacast(&mut self, room_name: &str, now: Instant) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let mut wanted: std::collections::HashSet<SourceId> = std::collections::HashSet::new();
        for key in &room.members {
            let Some(s) = self.sessions.get(key) else {
                continue;
            };
            if s.kind != SessionKind::Subscribe {
                continue;
            }
            for out in s.out.values() {
                wanted.extend(out.desired);
                wanted.extend(out.forwarder.target());
                wanted.extend(out.forwarder.current());
            }
        }
        self.relay_wanted(room_name, &mut wanted);
        let wanted_now = if self.upstreams.contains_key(room_name)
            || self.feeds_in.keys().any(|(r, _)| r == room_name)
        {
            wanted.clone()
        } else {
            Default::default()
        };
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let program = &mut room.program;
        room.dynacast.retain(|k, _| program.sources.contains_key(k));
        let owners: HashMap<u64, String> = program
            .sources
            .keys()
            .filter_map(|k| Some((k.session, program.owner_of_session(k.session)?.to_string())))
            .collect();
        let mut events = vec![];
        for (key, src) in program.sources.iter_mut() {
            if key.track.is_audio() || src.layers.len() < 2 {
                continue;
            }
            let needed: Vec<bool> = src
                .layers
                .iter()
                .map(|l| wanted.contains(&l.source))
                .collect();
            let d = room
                .dynacast
                .entry(*key)
                .or_insert_with(|| Dynacast::new(needed.len(), HOLD_AFTER));
            let Some(active) = d.update(&needed, now) else {
                continue;
            };
            for (l, on) in src.layers.iter_mut().zip(&active) {
                l.held = !on;
            }
            self.metrics.dynacast_changes.inc();
            let rids: Vec<String> = src
                .layers
                .iter()
                .zip(&active)
                .filter(|(_, on)| **on)
                .filter_map(|(l, _)| l.rid.clone())
                .collect();
            if let Some(owner) = owners.get(&key.session) {
                debug!(
                    room = room_name,
                    owner,
                    track = key.track.as_str(),
                    ?rids,
                    "dynacast"
                );
                events.push(RoomEvent::Layers {
                    sub: owner.clone(),
                    track: key.track.as_str().to_string(),
                    active: rids,
                });
            }
        }
        for e in &events {
            room.publish(e);
        }
        self.upstream_demand(room_name, &wanted_now);
        self.feeds_demand(room_name, &wanted_now);
    }

    fn tick(&mut self) {
        let now = Instant::now();
        self.next_tick = now + TICK;
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        let at = at_now();
        for r in &rooms {
            self.tick_room(r, at);
            self.update_room(r, now);
            self.announce(r);
        }
        // Count switches that completed since the last tick.
        let mut expired = vec![];
        for (key, s) in &self.sessions {
            let never_connected = !s.connected
                && now.saturating_duration_since(s.created) > self.settings.connect_timeout;
            let gone = s
                .disconnected_at
                .is_some_and(|t| now.saturating_duration_since(t) > DISCONNECT_GRACE);
            if never_connected || gone || !s.rtc.is_alive() {
                expired.push((
                    *key,
                    if never_connected {
                        "connect timeout"
                    } else {
                        "ICE lost"
                    },
                ));
            }
        }
        for (key, why) in expired {
            self.remove_session(key, why);
        }
        let stale: Vec<Token> = self
            .tcp
            .iter()
            .filter(|(_, c)| {
                !c.bound && now.saturating_duration_since(c.opened) > TCP_UNBOUND_TIMEOUT
            })
            .map(|(t, _)| *t)
            .collect();
        for t in stale {
            self.close_tcp(t);
        }
        self.metrics.rooms.set(self.rooms.len() as i64);
        self.export_subscriber_metrics();
    }

    fn export_subscriber_metrics(&mut self) {
        let m = &self.metrics;
        for s in self.sessions.values_mut() {
            if s.kind != SessionKind::Subscribe || !s.connected {
                continue;
            }
            let labels = [s.room.as_str(), s.id.as_str()];
            if let Some(e) = s.estimate {
                m.subscriber_estimate
                    .with_label_values(&labels)
                    .set(e.bps as i64);
            }
            if let Some(d) = &s.decision {
                m.subscriber_allocated
                    .with_label_values(&labels)
                    .set(d.allocated_bps as i64);
            }
            let room = self.rooms.get(&s.room);
            let mut freezes = 0;
            for (slot, out) in &s.out {
                freezes += out.forwarder.keyframe_freezes();
                let layer = out
                    .forwarder
                    .current()
                    .and_then(|src| {
                        room?
                            .program
                            .source(*slot)?
                            .layers
                            .iter()
                            .position(|l| l.source == src)
                    })
                    .map_or(-1, |i| i as i64);
                m.subscriber_layer
                    .with_label_values(&[s.room.as_str(), s.id.as_str(), &slot.label()])
                    .set(layer);
            }
            m.keyframe_wait_freezes
                .inc_by(freezes.saturating_sub(s.reported_freezes));
            s.reported_freezes = s.reported_freezes.max(freezes);
            let pauses = s.allocator.pauses();
            m.allocation_pauses
                .inc_by(pauses.saturating_sub(s.reported_pauses));
            s.reported_pauses = s.reported_pauses.max(pauses);
            let (refuted, confirmed) = s.allocator.dips();
            m.estimate_dips
                .with_label_values(&["refuted"])
                .inc_by(refuted.saturating_sub(s.reported_dips.0));
            m.estimate_dips
                .with_label_values(&["confirmed"])
                .inc_by(confirmed.saturating_sub(s.reported_dips.1));
            s.reported_dips = (
                refuted.max(s.reported_dips.0),
                confirmed.max(s.reported_dips.1),
            );
        }
    }

    fn handle_commands(&mut self) {
        loop {
            match self.cmds.try_recv() {
                Ok(cmd) => self.command(cmd),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.running = false;
                    return;
                }
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Add(ns, reply) => {
                let r = self.add_session(*ns);
                let _ = reply.send(r);
            }
            Command::Patch {
                room,
                id,
                if_match,
                frag,
                reply,
            } => {
                let r = self.patch(&room, &id, if_match, frag);
                let _ = reply.send(r);
            }
            Command::Remove {
                room,
                id,
                who,
                reply,
            } => {
                let r = match self.ids.get(&id).copied() {
                    Some(key) => {
                        let s = &self.sessions[&key];
                        if s.room != room {
                            Err(LoopError::NotFound)
                        } else if who.role != Role::Admin
                            && !(who.role == Role::Teacher && who.room == room)
                            && who.sub != s.claims.sub
                        {
                            Err(LoopError::Forbidden(
                                "only the participant, the room's teacher or an admin may end this session"
                                    .into(),
                            ))
                        } else {
                            self.remove_session(key, "DELETE");
                            Ok(())
                        }
                    }
                    None => Err(LoopError::NotFound),
                };
                let _ = reply.send(r);
            }
            Command::Rooms(reply) => {
                let mut names: Vec<&String> = self.rooms.keys().collect();
                names.sort();
                let infos = names.iter().filter_map(|n| self.room_info(n)).collect();
                let _ = reply.send(infos);
            }
            Command::Room(name, reply) => {
                let _ = reply.send(self.room_info(&name));
            }
            Command::RoomCommand {
                room,
                who,
                cmd,
                reply,
            } => {
                let _ = reply.send(self.room_command(&room, &who, cmd));
            }
            Command::Events { room, reply } => {
                let r = room_in(
                    &mut self.rooms,
                    &room,
                    &self.settings.room_rules,
                    Instant::now(),
                );
                let _ = reply.send((r.state.snapshot(), r.events.subscribe()));
                // A page that connects while the relay is down learns it at once.
                self.announce_relay_state(&room);
            }
            Command::State(room, reply) => {
                let snap = match self.rooms.get(&room) {
                    Some(r) => Some(r.state.snapshot()),
                    None => self
                        .ended
                        .iter()
                        .rev()
                        .find(|(n, ..)| *n == room)
                        .map(|(_, s, _)| s.clone()),
                };
                let _ = reply.send(snap);
            }
            Command::Attendance(room, reply) => {
                let report = match self.rooms.get(&room) {
                    Some(r) => {
                        let st = r.state.snapshot();
                        Some(AttendanceReport {
                            room: room.clone(),
                            lesson: st.lesson,
                            started_unix_ms: st.started_unix_ms,
                            ended_unix_ms: st.ended_unix_ms,
                            participants: r.state.attendance(at_now()),
                        })
                    }
                    None => self
                        .ended
                        .iter()
                        .rev()
                        .find(|(n, ..)| *n == room)
                        .map(|(.., a)| a.clone()),
                };
                let _ = reply.send(report);
            }
            Command::RelayAttach {
                link,
                peer,
                room,
                tx,
            } => self.relay_attach(link, peer, room, tx),
            Command::RelayDetach { link, room } => self.relay_detach(link, room),
            Command::RelayControl { link, msg } => self.relay_control(link, msg),
            Command::UpstreamTracks {
                link,
                peer,
                room,
                tracks,
                tx,
                from_edge,
            } => {
                if from_edge {
                    self.feeds_tracks(link, peer, room, tracks, tx)
                } else {
                    self.upstream_tracks(link, peer, room, tracks, tx)
                }
            }
            Command::UpstreamStage {
                link,
                room,
                stage,
                muted,
            } => self.upstream_stage(link, &room, stage, muted),
            Command::UpstreamPacket { link, pkt } => self.upstream_packet(link, pkt),
            Command::UpstreamLost { link, why } => self.upstream_lost(link, &why),
            Command::UpstreamDrop { room } => self.drop_upstream(&room, "nobody watches here"),
            Command::Relays(reply) => {
                let _ = reply.send(self.relay_infos());
            }
            Command::Presence(reply) => {
                let rooms = self
                    .rooms
                    .iter()
                    .map(|(name, r)| {
                        let sessions = || r.members.iter().filter_map(|k| self.sessions.get(k));
                        RoomPresence {
                            room: name.clone(),
                            teaching: sessions().any(|s| {
                                s.kind == SessionKind::Publish
                                    && s.connected
                                    && matches!(s.claims.role, Role::Teacher | Role::Admin)
                            }),
                            viewers: sessions()
                                .filter(|s| s.kind == SessionKind::Subscribe)
                                .count(),
                        }
                    })
                    .collect();
                let _ = reply.send(rooms);
            }
            Command::Shutdown => self.running = false,
        }
    }

    fn add_session(&mut self, ns: NewSession) -> Result<String, LoopError> {
        let key = self.next_key;
        self.next_key += 1;
        let now = Instant::now();
        let room = room_in(&mut self.rooms, &ns.room, &self.settings.room_rules, now);
        if room.state.is_removed(&ns.claims.sub) {
            return Err(LoopError::Forbidden(
                "the teacher removed you from this lesson".into(),
            ));
        }
        let teaches = matches!(ns.claims.role, Role::Teacher | Role::Admin);
        let mut replaced = None;
        if ns.kind == SessionKind::Publish && teaches {
            if let Some((old_key, old_sub)) = &room.publisher {
                if *old_sub == ns.claims.sub {
                    replaced = Some(*old_key);
                } else if self.sessions.contains_key(old_key) {
                    return Err(LoopError::Conflict(format!(
                        "{} is already teaching in this room",
                        old_sub
                    )));
                }
            }
        } else if ns.kind == SessionKind::Publish {
            // A classroom has one feed: a new one replaces the old (a reconnect).
            replaced = room.members.iter().copied().find(|k| {
                self.sessions.get(k).is_some_and(|s| {
                    s.kind == SessionKind::Publish && s.claims.sub == ns.claims.sub
                })
            });
        }
        let mut out = HashMap::new();
        let mut slots = HashMap::new();
        for ms in &ns.slots {
            slots.insert(ms.mid, ms.slot);
            let clock = if ms.slot.is_audio() { 48_000 } else { 90_000 };
            out.insert(
                ms.slot,
                OutSlot {
                    mid: ms.mid,
                    forwarder: TrackForwarder::new(clock, random_seq()),
                    pt_map: HashMap::new(),
                    packets: 0,
                    red: RedEncoder::default(),
                    red_on: false,
                    desired: None,
                },
            );
        }
        let tracks: HashMap<Mid, Track> = ns.tracks.iter().map(|t| (t.mid, t.track)).collect();
        if let Some(old) = replaced {
            self.remove_session(old, "replaced by a new session of the same participant");
        }
        if ns.kind == SessionKind::Publish && teaches && self.upstreams.contains_key(&ns.room) {
            self.drop_upstream(&ns.room, "the teacher publishes on this node now");
        }
        let room = room_in(&mut self.rooms, &ns.room, &self.settings.room_rules, now);
        if ns.kind == SessionKind::Publish {
            if teaches {
                room.publisher = Some((key, ns.claims.sub.clone()));
                if let Some(p) = ns.policy {
                    room.policy = p;
                }
            }
            for mt in &ns.tracks {
                room.program.publish(
                    &ns.claims.sub,
                    mt.track,
                    SlotSource::new(key, &mt.rids, self.settings.keyframe_interval),
                );
            }
            room.arrange();
        }
        room.members.push(key);
        let room_policy = room.policy;
        let etag = format!("\"{:016x}\"", rand::random::<u64>());
        let session = Session {
            key,
            id: ns.id.clone(),
            room: ns.room.clone(),
            claims: ns.claims,
            kind: ns.kind,
            pref: ns.layer_pref,
            rtc: ns.rtc,
            offer: ns.offer,
            etag: etag.clone(),
            ufrag: ns.local_ufrag.clone(),
            scheduled: None,
            created: now,
            connected: false,
            disconnected_at: None,
            addrs: vec![],
            slots,
            tracks,
            ssrc_cache: HashMap::new(),
            codecs: HashMap::new(),
            out,
            stats: SessionStats::default(),
            estimate: None,
            video_twcc: ns.video_twcc,
            allocator: Allocator::new(room_policy, Tuning::default()),
            decision: None,
            bwe_set: None,
            reported_pauses: 0,
            reported_dips: (0, 0),
            reported_freezes: 0,
            probe_armed_at: now,
            probe_bump: false,
            down_at: None,
            confirm_armed_at: None,
        };
        info!(session = %session.id, room = %session.room, kind = session.kind.as_str(), sub = %session.claims.sub, "session added");
        self.metrics
            .sessions_created
            .with_label_values(&[session.kind.as_str()])
            .inc();
        self.by_ufrag.insert(ns.local_ufrag, key);
        self.ids.insert(ns.id, key);
        self.sessions.insert(key, session);
        if let Some(s) = self.sessions.get_mut(&key) {
            if let Err(e) = s.rtc.handle_input(Input::Timeout(now)) {
                debug!("initial timeout: {e}");
            }
        }
        self.drain_key(key);
        self.schedule(key);
        let room_name = self.sessions[&key].room.clone();
        self.update_room(&room_name, now);
        Ok(etag)
    }

    fn patch(
        &mut self,
        room: &str,
        id: &str,
        if_match: Option<String>,
        frag: SdpFrag,
    ) -> Result<PatchOutcome, LoopError> {
        let key = *self.ids.get(id).ok_or(LoopError::NotFound)?;
        let s = self.sessions.get_mut(&key).ok_or(LoopError::NotFound)?;
        if s.room != room {
            return Err(LoopError::NotFound);
        }
        if let Some(m) = if_match {
            if m.trim() != "*" && m.trim() != s.etag {
                return Err(LoopError::PreconditionFailed);
            }
        }
        // New remote credentials mean an ICE restart (RFC 9725 section 4.4.1).
        let remote_changed = match (&frag.ufrag, &frag.pwd) {
            (Some(u), Some(p)) => ice_credentials(&s.offer) != Some((u.clone(), p.clone())),
            _ => false,
        };
        let outcome = if remote_changed {
            let (u, p) = (
                frag.ufrag.clone().unwrap_or_default(),
                frag.pwd.clone().unwrap_or_default(),
            );
            let offer = offer_with_credentials(&s.offer, &u, &p);
            let parsed = str0m::change::SdpOffer::from_sdp_string(&offer)
                .map_err(|e| LoopError::Restart(e.to_string()))?;
            s.rtc
                .sdp_api()
                .accept_offer(parsed)
                .map_err(|e| LoopError::Restart(e.to_string()))?;
            s.offer = offer;
            let creds = s.rtc.direct_api().local_ice_credentials();
            let old_ufrag = std::mem::replace(&mut s.ufrag, creds.ufrag.clone());
            s.etag = format!("\"{:016x}\"", rand::random::<u64>());
            let frag_out = format!(
                "a=ice-lite\r\na=ice-ufrag:{}\r\na=ice-pwd:{}\r\n",
                creds.ufrag, creds.pass
            );
            let etag = s.etag.clone();
            self.by_ufrag.remove(&old_ufrag);
            self.by_ufrag.insert(creds.ufrag, key);
            PatchOutcome::Restarted {
                etag,
                frag: frag_out,
            }
        } else {
            for c in &frag.candidates {
                match str0m::Candidate::from_sdp_string(c) {
                    Ok(cand) => s.rtc.add_remote_candidate(cand),
                    Err(e) => debug!("ignoring remote candidate {c:?}: {e}"),
                }
                drain(s, &mut self.outbox, &mut self.work, &self.metrics);
            }
            PatchOutcome::Trickled
        };
        self.drain_key(key);
        self.schedule(key);
        Ok(outcome)
    }

    fn remove_session(&mut self, key: u64, why: &str) {
        let Some(mut s) = self.sessions.remove(&key) else {
            return;
        };
        info!(session = %s.id, room = %s.room, kind = s.kind.as_str(), sub = %s.claims.sub, "session ended: {why}");
        if s.connected {
            self.metrics
                .peers
                .with_label_values(&[s.kind.as_str(), s.claims.role.as_str()])
                .dec();
        }
        s.rtc.disconnect();
        drain(&mut s, &mut self.outbox, &mut self.work, &self.metrics);
        if s.kind == SessionKind::Subscribe {
            let m = &self.metrics;
            let _ = m.subscriber_estimate.remove_label_values(&[&s.room, &s.id]);
            let _ = m
                .subscriber_allocated
                .remove_label_values(&[&s.room, &s.id]);
            for slot in s.out.keys() {
                let _ = m
                    .subscriber_layer
                    .remove_label_values(&[&s.room, &s.id, &slot.label()]);
            }
        }
        self.ids.remove(&s.id);
        if self.by_ufrag.get(&s.ufrag) == Some(&key) {
            self.by_ufrag.remove(&s.ufrag);
        }
        for a in &s.addrs {
            if self.by_addr.get(a) == Some(&key) {
                self.by_addr.remove(a);
            }
        }
        let mut drop_room = false;
        if let Some(room) = self.rooms.get_mut(&s.room) {
            room.members.retain(|k| *k != key);
            room.program.unpublish(key);
            if room.publisher.as_ref().is_some_and(|(k, _)| *k == key) {
                room.publisher = None;
            }
            if s.connected {
                let publishing = s.kind == SessionKind::Publish;
                let ev =
                    room.state
                        .session_down(&s.claims.sub, s.claims.role, publishing, at_now());
                if publishing {
                    room.speaker.forget(&s.claims.sub);
                }
                room.emit(ev);
            }
            // A live lesson outlasts its sessions (the teacher may be reconnecting); a room
            // that never started and that nobody watches is forgotten.
            drop_room = room.members.is_empty()
                && room.state.is_idle()
                && room.events.receiver_count() == 0
                && room.relay.links.is_empty()
                && !self.upstreams.contains_key(&s.room);
        }
        if drop_room {
            self.rooms.remove(&s.room);
        } else {
            self.update_room(&s.room.clone(), Instant::now());
        }
        // Work queued by this session refers to a key that no longer resolves; it is skipped.
    }

    fn room_info(&self, name: &str) -> Option<RoomInfo> {
        let room = self.rooms.get(name)?;
        let now = Instant::now();
        let mut publishers = vec![];
        let mut subscribers = vec![];
        for key in &room.members {
            let Some(s) = self.sessions.get(key) else {
                continue;
            };
            match s.kind {
                SessionKind::Publish => {
                    let mut tracks: Vec<TrackInfo> = s
                        .tracks
                        .iter()
                        .filter_map(|(mid, track)| {
                            let src = room.program.sources.get(&TrackKey {
                                session: *key,
                                track: *track,
                            })?;
                            let codec = s
                                .codecs
                                .values()
                                .find(|(c, _)| c.is_video() != track.is_audio())
                                .map(|(c, _)| codec_name(*c).to_string());
                            Some(TrackInfo {
                                track: track.as_str().into(),
                                mid: mid.to_string(),
                                codec,
                                layers: src
                                    .layers
                                    .iter()
                                    .map(|l| LayerInfo {
                                        rid: l.rid.clone(),
                                        ssrc: l.ssrc,
                                        active: l.is_active(now),
                                        bitrate_bps: l.bitrate_bps(),
                                        packets: l.packets,
                                        keyframes: l.keyframes,
                                        width: l.size.map(|x| x.0),
                                        height: l.size.map(|x| x.1),
                                    })
                                    .collect(),
                            })
                        })
                        .collect();
                    tracks.sort_by(|a, b| a.track.cmp(&b.track));
                    publishers.push(PublisherInfo {
                        session: s.id.clone(),
                        sub: s.claims.sub.clone(),
                        name: s.claims.name.clone(),
                        role: s.claims.role.to_string(),
                        connected: s.connected,
                        tracks,
                    });
                }
                SessionKind::Subscribe => {
                    let layer_name = |src: Option<SourceId>, slot: &Slot| -> Option<String> {
                        let src = src?;
                        let ss = room.program.source(*slot)?;
                        let l = ss.layers.iter().find(|l| l.source == src)?;
                        Some(l.rid.clone().unwrap_or_else(|| "single".into()))
                    };
                    let mut slots: Vec<SubscriberSlotInfo> = s
                        .out
                        .iter()
                        .map(|(slot, o)| SubscriberSlotInfo {
                            slot: slot.label(),
                            mid: o.mid.to_string(),
                            layer: layer_name(o.forwarder.current(), slot),
                            target_layer: layer_name(o.forwarder.target(), slot),
                            temporal: o.forwarder.temporal(),
                            target_temporal: o.forwarder.temporal_target(),
                            paused: o.forwarder.target().is_none()
                                && room.program.source(*slot).is_some(),
                            switches: o.forwarder.switches(),
                            keyframe_freezes: o.forwarder.keyframe_freezes(),
                            red: o.red_on,
                            packets: o.packets,
                        })
                        .collect();
                    slots.sort_by(|a, b| a.slot.cmp(&b.slot));
                    let dips = s.allocator.dips();
                    subscribers.push(SubscriberInfo {
                        session: s.id.clone(),
                        sub: s.claims.sub.clone(),
                        name: s.claims.name.clone(),
                        role: s.claims.role.to_string(),
                        connected: s.connected,
                        bitrate_bps: s.stats.bitrate_bps,
                        loss: s.stats.loss,
                        rtt_ms: s.stats.rtt.map(|d| d.as_secs_f64() * 1000.0),
                        estimate_bps: s.estimate.map(|e| e.bps),
                        estimate_source: s.estimate.map(|e| if e.twcc { "twcc" } else { "remb" }),
                        allocated_bps: s.decision.as_ref().map(|d| d.allocated_bps),
                        probe_bps: s.decision.as_ref().and_then(|d| d.probe_bps),
                        desired_bps: s.decision.as_ref().map(|d| d.desired_bps),
                        pauses: s.allocator.pauses(),
                        allocation_changes: s.allocator.changes(),
                        dips_refuted: dips.0,
                        dips_confirmed: dips.1,
                        nacks: s.stats.nacks.values().sum(),
                        plis: s.stats.plis.values().sum(),
                        slots,
                    });
                }
            }
        }
        let st = room.state.snapshot();
        Some(RoomInfo {
            room: name.to_string(),
            created_unix: unix_secs(room.created),
            lesson: st.lesson,
            stage: st.stage,
            hands: st.hands,
            muted: st.muted,
            publishers,
            subscribers,
        })
    }

    fn shutdown(&mut self) {
        let keys: Vec<u64> = self.sessions.keys().copied().collect();
        for k in keys {
            self.remove_session(k, "server shutting down");
        }
        self.flush();
        info!("media loop stopped");
    }
}
