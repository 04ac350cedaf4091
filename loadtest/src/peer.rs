//! The WebRTC peers, on webrtc-rs (the `webrtc` crate, a stack independent of the SFU's str0m):
//! the synthetic teacher publishes over WHIP, each simulated classroom plays over WHEP through
//! its emulated link. Against Janus (`--target janus`) the teacher sends plain RTP to the
//! Streaming plugin's mountpoint and classrooms watch it over Janus's HTTP API.
//!
//! Every RTP packet a classroom receives (media and RTX repairs alike) passes a small
//! interceptor, [`Tap`], that feeds the classroom's meters before webrtc-rs's own readers see it.
//! webrtc-rs drains RTX repair streams internally without handing them to the track reader, so
//! the tap is also the only place a repaired packet can be counted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use webrtc::api::interceptor_registry::{
    configure_rtcp_reports, configure_twcc_receiver_only, register_default_interceptors,
};
use webrtc::api::media_engine::{MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{APIBuilder, API};
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::ice::udp_mux::{UDPMuxDefault, UDPMuxParams};
use webrtc::ice::udp_network::UDPNetwork;
use webrtc::interceptor::registry::Registry;
use webrtc::interceptor::stream_info::StreamInfo;
use webrtc::interceptor::{
    Attributes, Interceptor, InterceptorBuilder, RTCPReader, RTCPWriter, RTPReader, RTPWriter,
};
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtcp::transport_feedbacks::transport_layer_nack::{
    nack_pairs_from_sequence_numbers, TransportLayerNack,
};
use webrtc::rtp::header::Header;
use webrtc::rtp::packet::Packet;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RTPCodecType,
};
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::{RTCPFeedback, RTCRtpTransceiverInit};
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::{TrackLocal, TrackLocalWriter};
use webrtc::util::Marshal;

use crate::janus::{strip_candidates, JanusViewer, MountpointPorts, MOUNTPOINT};
use crate::link::RelayHandle;
use crate::measure::{
    parse_vp8_payload, Arrival, AudioMeter, Histogram, MeterConfig, RateSeries, SendLog,
    VideoMeter, VideoPacket,
};
use crate::media::clip::Frame;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

const VP8_PT: u8 = 96;
const RTX_PT: u8 = 97;
const OPUS_PT: u8 = 111;
/// RTP payload budget per packet (descriptor included), well under a 1200-byte MTU with SRTP.
const RTP_PAYLOAD_MAX: usize = 1100;

// ---------------------------------------------------------------------------------------------
// Signalling
// ---------------------------------------------------------------------------------------------

/// The SFU's HTTP side: WHIP/WHEP and tokens.
#[derive(Clone)]
pub struct Signalling {
    pub base: String,
    pub room: String,
    secret: String,
    pub http: reqwest::Client,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    name: &'a str,
    room: &'a str,
    role: &'a str,
    exp: u64,
}

/// An SDP exchange's result.
pub struct Answer {
    pub sdp: String,
    pub location: String,
}

impl Signalling {
    pub fn new(base: &str, room: &str, secret: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(15))
            .build()?;
        Ok(Signalling {
            base: base.trim_end_matches('/').to_string(),
            room: room.to_string(),
            secret: secret.to_string(),
            http,
        })
    }

    /// An HS256 token with the claims the SFU checks (`sfu/src/auth.rs`), valid for `ttl`.
    pub fn token(&self, role: &str, sub: &str, ttl: Duration) -> anyhow::Result<String> {
        let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + ttl.as_secs();
        let claims = Claims {
            sub,
            name: sub,
            room: &self.room,
            role,
            exp,
        };
        Ok(jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(self.secret.as_bytes()),
        )?)
    }

    /// `GET /healthz` must answer 200.
    pub async fn check(&self) -> anyhow::Result<()> {
        let url = format!("{}/healthz", self.base);
        let r = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .with_context(|| format!("the SFU at {} is unreachable", self.base))?;
        if !r.status().is_success() {
            bail!(
                "the SFU at {} answered {} on /healthz",
                self.base,
                r.status()
            );
        }
        Ok(())
    }

    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let r = self
            .http
            .get(format!("{}{}", self.base, path))
            .timeout(Duration::from_secs(3))
            .send()
            .await?;
        Ok(r.text().await?)
    }

    /// POSTs an SDP offer to `path` (`/whip/room`, `/whep/room?...`); expects 201.
    pub async fn post_offer(&self, path: &str, token: &str, offer: &str) -> anyhow::Result<Answer> {
        let url = format!("{}{}", self.base, path);
        let r = self
            .http
            .post(&url)
            .header("Content-Type", "application/sdp")
            .bearer_auth(token)
            .body(offer.to_string())
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = r.status();
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = r.text().await.unwrap_or_default();
        if status.as_u16() != 201 {
            bail!("POST {url} answered {status}: {}", body.trim());
        }
        let location = location.ok_or_else(|| anyhow!("POST {url}: 201 without Location"))?;
        let location = if location.starts_with("http") {
            location
        } else {
            format!("{}{}", self.base, location)
        };
        Ok(Answer {
            sdp: body,
            location,
        })
    }

    /// DELETEs a session (best effort, bounded).
    pub async fn delete(&self, location: &str, token: &str) {
        let _ = self
            .http
            .delete(location)
            .bearer_auth(token)
            .timeout(Duration::from_secs(3))
            .send()
            .await;
    }
}

/// The first UDP candidate address of an SDP.
pub fn udp_candidate(sdp: &str) -> Option<SocketAddr> {
    sdp.lines().find_map(|l| {
        let f: Vec<&str> = l
            .trim()
            .strip_prefix("a=candidate:")?
            .split_whitespace()
            .collect();
        if f.len() < 6 || !f[2].eq_ignore_ascii_case("udp") {
            return None;
        }
        format!("{}:{}", f[4], f[5]).parse().ok()
    })
}

/// Points every UDP candidate of an answer at `via` (the classroom's link relay) and drops the
/// TCP ones, so all media crosses the emulated link.
pub fn route_candidates(sdp: &str, via: SocketAddr) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let t = line.trim_end();
        if let Some(rest) = t.strip_prefix("a=candidate:") {
            let mut f: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
            if f.len() < 6 || !f[2].eq_ignore_ascii_case("udp") {
                continue;
            }
            f[4] = via.ip().to_string();
            f[5] = via.port().to_string();
            out.push_str("a=candidate:");
            out.push_str(&f.join(" "));
            out.push_str("\r\n");
        } else {
            out.push_str(line);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// webrtc-rs API
// ---------------------------------------------------------------------------------------------

fn opus_params() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        capability: RTCRtpCodecCapability {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: OPUS_PT,
        ..Default::default()
    }
}

fn vp8_params() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        capability: RTCRtpCodecCapability {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![RTCPFeedback {
                typ: "ccm".into(),
                parameter: "fir".into(),
            }],
        },
        payload_type: VP8_PT,
        ..Default::default()
    }
}

fn rtx_params() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        capability: RTCRtpCodecCapability {
            mime_type: "video/rtx".to_owned(),
            clock_rate: 90000,
            channels: 0,
            sdp_fmtp_line: format!("apt={VP8_PT}"),
            rtcp_feedback: vec![],
        },
        payload_type: RTX_PT,
        ..Default::default()
    }
}

fn setting_engine(mux: Option<Arc<UDPMuxDefault>>) -> SettingEngine {
    let mut s = SettingEngine::default();
    if let Some(mux) = mux {
        s.set_udp_network(UDPNetwork::Muxed(mux));
    }
    s.set_network_types(vec![NetworkType::Udp4]);
    s.set_include_loopback_candidate(true);
    s.set_ip_filter(Box::new(|ip: std::net::IpAddr| ip.is_loopback()));
    s.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    s
}

fn ext(m: &mut MediaEngine, uri: &str, kind: RTPCodecType) -> anyhow::Result<()> {
    m.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: uri.to_owned(),
        },
        kind,
        None,
    )?;
    Ok(())
}

/// Publisher: simulcast needs the mid and rid extensions; NACK responder, reports and TWCC.
fn publisher_api() -> anyhow::Result<API> {
    let mut m = MediaEngine::default();
    m.register_codec(opus_params(), RTPCodecType::Audio)?;
    m.register_codec(vp8_params(), RTPCodecType::Video)?;
    for uri in [
        webrtc::sdp::extmap::SDES_MID_URI,
        webrtc::sdp::extmap::SDES_RTP_STREAM_ID_URI,
        webrtc::sdp::extmap::SDES_REPAIR_RTP_STREAM_ID_URI,
    ] {
        ext(&mut m, uri, RTPCodecType::Video)?;
    }
    ext(
        &mut m,
        webrtc::sdp::extmap::SDES_MID_URI,
        RTPCodecType::Audio,
    )?;
    let registry = register_default_interceptors(Registry::new(), &mut m)?;
    Ok(APIBuilder::new()
        .with_media_engine(m)
        .with_interceptor_registry(registry)
        .with_setting_engine(setting_engine(None))
        .build())
}

/// Classroom: VP8 with RTX, NACK generator, receiver reports, optionally TWCC feedback, and
/// the [`Tap`] in front of everything. No rid extension (see the SFU's own test harness: a
/// negotiated rid makes webrtc-rs probe early packets of undeclared SSRCs and close the stream).
fn classroom_api(
    meter: Arc<Mutex<ClassroomMeter>>,
    twcc: bool,
    mux: Option<Arc<UDPMuxDefault>>,
) -> anyhow::Result<API> {
    let mut m = MediaEngine::default();
    m.register_codec(opus_params(), RTPCodecType::Audio)?;
    m.register_codec(vp8_params(), RTPCodecType::Video)?;
    m.register_codec(rtx_params(), RTPCodecType::Video)?;
    ext(
        &mut m,
        webrtc::sdp::extmap::SDES_MID_URI,
        RTPCodecType::Video,
    )?;
    ext(
        &mut m,
        webrtc::sdp::extmap::SDES_MID_URI,
        RTPCodecType::Audio,
    )?;
    // NACK: our own generator in the tap. webrtc-rs's never learns of repairs that arrive on
    // the RTX stream and asks again for every one of them each 100 ms, up to 8192 packets back:
    // a NACK storm whose retransmissions crowd out the repairs a lossy link needs.
    for parameter in ["", "pli"] {
        m.register_feedback(
            RTCPFeedback {
                typ: "nack".into(),
                parameter: parameter.into(),
            },
            RTPCodecType::Video,
        );
    }
    let mut registry = Registry::new();
    registry.add(Box::new(TapBuilder { meter }));
    let mut registry = configure_rtcp_reports(registry);
    if twcc {
        registry = configure_twcc_receiver_only(registry, &mut m)?;
    }
    Ok(APIBuilder::new()
        .with_media_engine(m)
        .with_interceptor_registry(registry)
        .with_setting_engine(setting_engine(mux))
        .build())
}

async fn wait_connected(
    rx: &mut watch::Receiver<RTCPeerConnectionState>,
    limit: Duration,
) -> anyhow::Result<()> {
    let r = tokio::time::timeout(
        limit,
        rx.wait_for(|s| {
            matches!(
                s,
                RTCPeerConnectionState::Connected
                    | RTCPeerConnectionState::Failed
                    | RTCPeerConnectionState::Closed
            )
        }),
    )
    .await;
    match r {
        Err(_) => bail!("ICE/DTLS not connected within {limit:?}"),
        Ok(Err(_)) => bail!("peer connection state channel closed"),
        Ok(Ok(s)) if *s == RTCPeerConnectionState::Connected => Ok(()),
        Ok(Ok(s)) => bail!("peer connection went {} instead of connected", *s),
    }
}

fn watch_state(pc: &RTCPeerConnection) -> watch::Receiver<RTCPeerConnectionState> {
    let (tx, rx) = watch::channel(RTCPeerConnectionState::New);
    pc.on_peer_connection_state_change(Box::new(move |s| {
        tx.send_replace(s);
        Box::pin(async {})
    }));
    rx
}

async fn gathered_offer(pc: &RTCPeerConnection) -> anyhow::Result<String> {
    let offer = pc.create_offer(None).await?;
    gathered(pc, offer).await
}

/// Sets `local` and returns it once ICE gathering is complete (or after 10 s).
async fn gathered(pc: &RTCPeerConnection, local: RTCSessionDescription) -> anyhow::Result<String> {
    let mut gather = pc.gathering_complete_promise().await;
    pc.set_local_description(local).await?;
    let _ = tokio::time::timeout(Duration::from_secs(10), gather.recv()).await;
    let sdp = pc
        .local_description()
        .await
        .ok_or_else(|| anyhow!("no local description"))?
        .sdp;
    Ok(sdp)
}

// ---------------------------------------------------------------------------------------------
// Teacher
// ---------------------------------------------------------------------------------------------

/// One simulcast layer of the clip.
#[derive(Debug, Clone)]
pub struct LayerClip {
    pub rid: &'static str,
    pub width: u16,
    pub height: u16,
    pub kbps: u32,
    pub frames: Arc<Vec<Frame>>,
}

impl LayerClip {
    /// The clip's own bitrate (what the encoder produced).
    pub fn clip_kbps(&self, fps: u32) -> f64 {
        let bytes: usize = self.frames.iter().map(|f| f.data.len()).sum();
        bytes as f64 * 8.0 * fps as f64 / self.frames.len().max(1) as f64 / 1000.0
    }
}

/// What the teacher sends.
#[derive(Debug, Clone)]
pub struct TeacherMedia {
    pub fps: u32,
    pub layers: Vec<LayerClip>,
    pub opus: Arc<Vec<Vec<u8>>>,
}

#[derive(Debug, Default, Serialize)]
pub struct LayerCounters {
    pub rid: String,
    pub frames: AtomicU64,
    pub keyframes: AtomicU64,
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub keyframe_requests: AtomicU64,
    #[serde(skip)]
    ssrc: AtomicU32,
    #[serde(skip)]
    force_key: AtomicBool,
}

#[derive(Debug, Default, Serialize)]
pub struct TeacherCounters {
    pub layers: Vec<LayerCounters>,
    pub audio_packets: AtomicU64,
    pub write_errors: AtomicU64,
    /// Frame ticks sent (every layer sends one frame per tick).
    pub ticks: AtomicU64,
}

impl TeacherCounters {
    /// Zeroed counters, one per layer of `media`.
    fn for_media(media: &TeacherMedia) -> Self {
        TeacherCounters {
            layers: media
                .layers
                .iter()
                .map(|l| LayerCounters {
                    rid: l.rid.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }
}

pub struct Teacher {
    /// None when it feeds Janus over plain RTP.
    pc: Option<Arc<RTCPeerConnection>>,
    pub location: String,
    token: String,
    pub counters: Arc<TeacherCounters>,
    /// The SFU's media address (its UDP candidate).
    pub sfu_media: SocketAddr,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Where the teacher's packets go: a WebRTC track (WHIP), or plain RTP over UDP (a Janus
/// mountpoint's port) with an SSRC of our own.
#[derive(Clone)]
enum RtpOut {
    Track(Arc<TrackLocalStaticRTP>),
    Udp {
        socket: Arc<tokio::net::UdpSocket>,
        to: SocketAddr,
        ssrc: u32,
    },
}

impl RtpOut {
    async fn write(&self, pkt: &mut Packet) -> bool {
        match self {
            RtpOut::Track(t) => t.write_rtp(pkt).await.is_ok(),
            RtpOut::Udp { socket, to, ssrc } => {
                pkt.header.ssrc = *ssrc;
                match pkt.marshal() {
                    Ok(b) => socket.send_to(&b, to).await.is_ok(),
                    Err(_) => false,
                }
            }
        }
    }
}

/// VP8 RTP payloads of one frame (RFC 7741): extended descriptor with a 15-bit PictureID,
/// TL0PICIDX and TID 0 / Y, as browsers send; the frame split into ≤ RTP_PAYLOAD_MAX chunks.
pub fn packetize_vp8(frame: &[u8], picture_id: u16, tl0: u8) -> Vec<(Bytes, bool)> {
    let chunk = RTP_PAYLOAD_MAX - 6;
    let n = frame.len().div_ceil(chunk).max(1);
    let mut out = Vec::with_capacity(n);
    for (i, part) in frame.chunks(chunk).enumerate() {
        let mut p = Vec::with_capacity(part.len() + 6);
        p.push(0x80 | if i == 0 { 0x10 } else { 0x00 });
        p.push(0xe0);
        p.push(0x80 | ((picture_id >> 8) as u8 & 0x7f));
        p.push(picture_id as u8);
        p.push(tl0);
        p.push(0x20);
        p.extend_from_slice(part);
        out.push((Bytes::from(p), i + 1 == n));
    }
    out
}

impl Teacher {
    /// WHIP-publishes audio + 3-layer VP8 simulcast and starts sending once connected.
    pub async fn connect(
        sig: &Signalling,
        media: TeacherMedia,
        send_log: Arc<Mutex<SendLog>>,
        ttl: Duration,
    ) -> anyhow::Result<Teacher> {
        let token = sig.token("teacher", "loadtest-teacher", ttl)?;
        let api = publisher_api()?;
        let pc = Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?);
        let mut state = watch_state(&pc);
        let counters = Arc::new(TeacherCounters::for_media(&media));
        let sendonly = || {
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                send_encodings: vec![],
            })
        };
        let audio_track = Arc::new(TrackLocalStaticRTP::new(
            opus_params().capability,
            "teacher-audio".into(),
            "teacher".into(),
        ));
        let audio_tr = pc
            .add_transceiver_from_track(
                audio_track.clone() as Arc<dyn TrackLocal + Send + Sync>,
                sendonly(),
            )
            .await?;
        let audio_sender = audio_tr.sender().await;
        let tracks: Vec<Arc<TrackLocalStaticRTP>> = media
            .layers
            .iter()
            .map(|l| {
                Arc::new(TrackLocalStaticRTP::new_with_rid(
                    vp8_params().capability,
                    "teacher-camera".into(),
                    l.rid.into(),
                    "teacher".into(),
                ))
            })
            .collect();
        let video_tr = pc
            .add_transceiver_from_track(
                tracks[0].clone() as Arc<dyn TrackLocal + Send + Sync>,
                sendonly(),
            )
            .await?;
        let video_sender = video_tr.sender().await;
        for t in &tracks[1..] {
            video_sender
                .add_encoding(t.clone() as Arc<dyn TrackLocal + Send + Sync>)
                .await?;
        }
        let offer = gathered_offer(&pc).await?;
        let answer = match sig
            .post_offer(&format!("/whip/{}", sig.room), &token, &offer)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e.context("the teacher could not publish (WHIP)"));
            }
        };
        let sfu_media = udp_candidate(&answer.sdp)
            .ok_or_else(|| anyhow!("the WHIP answer has no UDP candidate:\n{}", answer.sdp))?;
        pc.set_remote_description(RTCSessionDescription::answer(answer.sdp)?)
            .await?;
        wait_connected(&mut state, Duration::from_secs(20))
            .await
            .context("teacher")?;
        let params = video_sender.get_parameters().await;
        for (i, l) in media.layers.iter().enumerate() {
            if let Some(e) = params.encodings.iter().find(|e| e.rid.as_str() == l.rid) {
                counters.layers[i].ssrc.store(e.ssrc, Ordering::SeqCst);
            }
        }

        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        // keyframe requests: jump to a keyframe of the clip on that layer
        for (i, l) in media.layers.iter().enumerate() {
            let sender = video_sender.clone();
            let counters = counters.clone();
            let rid = l.rid;
            tasks.push(tokio::spawn(async move {
                while let Ok((pkts, _)) = sender.read_rtcp_simulcast(rid).await {
                    let own = counters.layers[i].ssrc.load(Ordering::SeqCst);
                    let asked = pkts.iter().any(|p| {
                        let any = p.as_any();
                        any.downcast_ref::<PictureLossIndication>()
                            .is_some_and(|x| x.media_ssrc == own)
                            || any
                                .downcast_ref::<FullIntraRequest>()
                                .is_some_and(|x| x.fir.iter().any(|e| e.ssrc == own))
                    });
                    if asked {
                        let lc = &counters.layers[i];
                        lc.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                        lc.force_key.store(true, Ordering::SeqCst);
                    }
                }
            }));
        }
        {
            let sender = audio_sender.clone();
            tasks.push(tokio::spawn(async move {
                while sender.read_rtcp().await.is_ok() {}
            }));
        }
        tasks.push(tokio::spawn(video_pump(
            media.clone(),
            tracks.into_iter().map(RtpOut::Track).collect(),
            counters.clone(),
            send_log,
            stop.clone(),
        )));
        tasks.push(tokio::spawn(audio_pump(
            media.opus.clone(),
            RtpOut::Track(audio_track),
            counters.clone(),
            stop.clone(),
        )));
        Ok(Teacher {
            pc: Some(pc),
            location: answer.location,
            token,
            counters,
            sfu_media,
            stop,
            tasks,
        })
    }

    /// Feeds a Janus mountpoint over plain RTP on loopback: audio to its audio port, layer `i`
    /// to video port `i` (substream 0 is the lowest). Janus cannot ask a plain RTP source for
    /// keyframes; the clip has one every 2 s.
    pub async fn feed_rtp(
        ports: MountpointPorts,
        media: TeacherMedia,
        send_log: Arc<Mutex<SendLog>>,
    ) -> anyhow::Result<Teacher> {
        let socket = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
        let counters = Arc::new(TeacherCounters::for_media(&media));
        let udp = |to: SocketAddr| RtpOut::Udp {
            socket: socket.clone(),
            to,
            ssrc: rand::random(),
        };
        let video: Vec<RtpOut> = ports.video.iter().map(|p| udp(*p)).collect();
        if video.len() < media.layers.len() {
            bail!("the mountpoint has fewer video ports than the clip has layers");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = vec![
            tokio::spawn(video_pump(
                media.clone(),
                video,
                counters.clone(),
                send_log,
                stop.clone(),
            )),
            tokio::spawn(audio_pump(
                media.opus.clone(),
                udp(ports.audio),
                counters.clone(),
                stop.clone(),
            )),
        ];
        Ok(Teacher {
            pc: None,
            location: String::new(),
            token: String::new(),
            counters,
            // every classroom is routed to its own Janus port; nothing goes to this one
            sfu_media: SocketAddr::from(([127, 0, 0, 1], 9)),
            stop,
            tasks,
        })
    }

    pub async fn leave(mut self, sig: &Signalling) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Some(pc) = self.pc.take() {
            sig.delete(&self.location, &self.token).await;
            let _ = tokio::time::timeout(Duration::from_secs(3), pc.close()).await;
        }
    }
}

async fn video_pump(
    media: TeacherMedia,
    tracks: Vec<RtpOut>,
    counters: Arc<TeacherCounters>,
    send_log: Arc<Mutex<SendLog>>,
    stop: Arc<AtomicBool>,
) {
    struct St {
        idx: usize,
        seq: u16,
        picture_id: u16,
        tl0: u8,
    }
    let mut st: Vec<St> = media
        .layers
        .iter()
        .map(|_| St {
            idx: 0,
            seq: rand::random(),
            picture_id: rand::random::<u16>() & 0x7fff,
            tl0: rand::random(),
        })
        .collect();
    let ts0: u32 = rand::random();
    let start = Instant::now();
    let mut last_prune = start;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / media.fps);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        let now = Instant::now();
        let ts = ts0.wrapping_add(((now - start).as_secs_f64() * 90000.0) as u64 as u32);
        for (i, layer) in media.layers.iter().enumerate() {
            let lc = &counters.layers[i];
            let s = &mut st[i];
            let frames = &layer.frames;
            if lc.force_key.swap(false, Ordering::SeqCst) && !frames[s.idx].keyframe {
                // a pre-encoded clip cannot make a keyframe on demand: jump to the next one
                // (a keyframe decodes on its own, so the stream stays valid)
                let n = frames.len();
                s.idx = (1..n)
                    .map(|k| (s.idx + k) % n)
                    .find(|&j| frames[j].keyframe)
                    .unwrap_or(0);
            }
            let frame = &frames[s.idx];
            s.idx = (s.idx + 1) % frames.len();
            lc.frames.fetch_add(1, Ordering::Relaxed);
            if frame.keyframe {
                lc.keyframes.fetch_add(1, Ordering::Relaxed);
            }
            let pkts = packetize_vp8(&frame.data, s.picture_id, s.tl0);
            s.picture_id = (s.picture_id + 1) & 0x7fff;
            s.tl0 = s.tl0.wrapping_add(1);
            for (payload, marker) in pkts {
                let mut pkt = Packet {
                    header: Header {
                        version: 2,
                        marker,
                        payload_type: VP8_PT,
                        sequence_number: s.seq,
                        timestamp: ts,
                        ..Default::default()
                    },
                    payload,
                };
                s.seq = s.seq.wrapping_add(1);
                if let Some(v) = parse_vp8_payload(&pkt.payload) {
                    lock(&send_log).record(v.data, Instant::now());
                }
                lc.packets.fetch_add(1, Ordering::Relaxed);
                lc.bytes
                    .fetch_add(pkt.payload.len() as u64 + 12, Ordering::Relaxed);
                if !tracks[i].write(&mut pkt).await {
                    counters.write_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        counters.ticks.fetch_add(1, Ordering::Relaxed);
        if now - last_prune > Duration::from_secs(2) {
            lock(&send_log).prune(now - Duration::from_secs(6));
            last_prune = now;
        }
    }
}

async fn audio_pump(
    opus: Arc<Vec<Vec<u8>>>,
    track: RtpOut,
    counters: Arc<TeacherCounters>,
    stop: Arc<AtomicBool>,
) {
    let ts0: u32 = rand::random();
    let mut seq: u16 = rand::random();
    // one packet per 20 ms of audio, like a sound card: a late task catches up
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n: u32 = 0;
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        let payload = Bytes::from(opus[n as usize % opus.len()].clone());
        let mut pkt = Packet {
            header: Header {
                version: 2,
                marker: n == 0,
                payload_type: OPUS_PT,
                sequence_number: seq,
                timestamp: ts0.wrapping_add(n.wrapping_mul(960)),
                ..Default::default()
            },
            payload,
        };
        n = n.wrapping_add(1);
        seq = seq.wrapping_add(1);
        if track.write(&mut pkt).await {
            counters.audio_packets.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Classroom
// ---------------------------------------------------------------------------------------------

/// Everything one classroom measures, fed by its [`Tap`].
pub struct ClassroomMeter {
    pub video: VideoMeter,
    pub audio: AudioMeter,
    /// RTP bytes (media + repairs) per second since the run's origin.
    pub series: RateSeries,
    pub rtx_packets: u64,
    pub latency_unmatched: u64,
    /// The teacher's frame count when this classroom completed its first frame.
    pub ticks_at_first_frame: Option<u64>,
    /// The emulated link's one-way base delay (half its RTT).
    pub base_delay: Duration,
    /// The SSRC the camera arrives on (NACKs name it).
    video_ssrc: Option<u32>,
    pub nacks_sent: u64,
    /// Our SSRC as the sender of feedback.
    own_ssrc: u32,
    closed: bool,
    /// Latency less the link's base delay: what the SFU, the stacks and the link's queue
    /// added (the ramp's criterion, comparable across profiles).
    pub latency_over_link: Histogram,
    run_origin: Instant,
    send_log: Arc<Mutex<SendLog>>,
    teacher: Arc<TeacherCounters>,
}

impl ClassroomMeter {
    pub fn new(
        cfg: MeterConfig,
        joined: Instant,
        run_origin: Instant,
        send_log: Arc<Mutex<SendLog>>,
        teacher: Arc<TeacherCounters>,
        base_delay: Duration,
    ) -> Self {
        ClassroomMeter {
            video: VideoMeter::new(cfg, joined),
            audio: AudioMeter::new(cfg.repair_window),
            series: RateSeries::default(),
            rtx_packets: 0,
            latency_unmatched: 0,
            ticks_at_first_frame: None,
            base_delay,
            video_ssrc: None,
            nacks_sent: 0,
            own_ssrc: rand::random::<u32>().max(1),
            closed: false,
            latency_over_link: Histogram::default(),
            run_origin,
            send_log,
            teacher,
        }
    }

    fn on_rtp(&mut self, kind: StreamKind, pkt: &Packet, now: Instant) {
        let bytes = pkt.payload.len() + 12;
        self.series
            .add(now.saturating_duration_since(self.run_origin), bytes);
        match kind {
            StreamKind::Audio => self.audio.on_packet(pkt.header.sequence_number, bytes, now),
            StreamKind::Video => {
                self.video_ssrc = Some(pkt.header.ssrc);
                self.on_video(pkt.header.sequence_number, pkt, &pkt.payload, now)
            }
            StreamKind::Rtx => {
                if pkt.payload.len() < 2 {
                    return; // padding-only probe
                }
                self.rtx_packets += 1;
                let osn = u16::from_be_bytes([pkt.payload[0], pkt.payload[1]]);
                self.on_video(osn, pkt, &pkt.payload[2..], now);
            }
            StreamKind::Other => {}
        }
    }

    fn on_video(&mut self, seq: u16, pkt: &Packet, payload: &[u8], now: Instant) {
        let Some(crate::measure::Vp8Payload {
            start,
            keyframe: key,
            data,
        }) = parse_vp8_payload(payload)
        else {
            return; // padding
        };
        if data.is_empty() {
            return;
        }
        let latency = lock(&self.send_log)
            .lookup(data)
            .map(|sent| now.saturating_duration_since(sent));
        if latency.is_none() {
            self.latency_unmatched += 1;
        }
        let arrival = self.video.on_packet(
            VideoPacket {
                seq,
                ts: pkt.header.timestamp,
                marker: pkt.header.marker,
                frame_start: start,
                keyframe: key,
                bytes: payload.len() + 12,
            },
            now,
            latency,
        );
        if let (Arrival::New, Some(l)) = (arrival, latency) {
            self.latency_over_link
                .record(l.saturating_sub(self.base_delay));
        }
        if self.ticks_at_first_frame.is_none() && self.video.has_frame() {
            self.ticks_at_first_frame = Some(self.teacher.ticks.load(Ordering::Relaxed));
        }
    }
}

impl ClassroomMeter {
    /// The NACK due now, if any: missing packets asked for again once per (RTT + 50 ms), up to
    /// 10 times, inside the 1 s repair window (as libwebrtc receivers do, roughly).
    fn due_nack(&mut self, now: Instant) -> Option<TransportLayerNack> {
        let ssrc = self.video_ssrc?;
        let retry =
            (self.base_delay * 2 + Duration::from_millis(50)).max(Duration::from_millis(60));
        let seqs = self.video.due_nacks(now, retry, 10);
        if seqs.is_empty() {
            return None;
        }
        self.nacks_sent += seqs.len() as u64;
        Some(TransportLayerNack {
            // a receiver's own SSRC, never 0, as browsers send: Janus maps an RTCP packet to
            // its medium by SSRC, and 0 matches a recvonly audio medium (NACKs then ignored)
            sender_ssrc: self.own_ssrc,
            media_ssrc: ssrc,
            nacks: nack_pairs_from_sequence_numbers(&seqs),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamKind {
    Audio,
    Video,
    Rtx,
    Other,
}

fn stream_kind(info: &StreamInfo) -> StreamKind {
    let mime = info.mime_type.to_ascii_lowercase();
    if mime == "audio/opus" {
        StreamKind::Audio
    } else if mime == "video/vp8" {
        StreamKind::Video
    } else if mime == "video/rtx" || info.associated_stream.is_some() {
        StreamKind::Rtx
    } else {
        StreamKind::Other
    }
}

/// An interceptor that shows every received RTP packet to a classroom's meters.
struct TapBuilder {
    meter: Arc<Mutex<ClassroomMeter>>,
}

impl InterceptorBuilder for TapBuilder {
    fn build(
        &self,
        _id: &str,
    ) -> Result<Arc<dyn Interceptor + Send + Sync>, webrtc::interceptor::Error> {
        Ok(Arc::new(Tap {
            meter: self.meter.clone(),
        }))
    }
}

pub struct Tap {
    meter: Arc<Mutex<ClassroomMeter>>,
}

struct TapReader {
    inner: Arc<dyn RTPReader + Send + Sync>,
    kind: StreamKind,
    meter: Arc<Mutex<ClassroomMeter>>,
}

#[async_trait::async_trait]
impl RTPReader for TapReader {
    async fn read(
        &self,
        buf: &mut [u8],
        attributes: &Attributes,
    ) -> Result<(Packet, Attributes), webrtc::interceptor::Error> {
        let (pkt, attr) = self.inner.read(buf, attributes).await?;
        lock(&self.meter).on_rtp(self.kind, &pkt, Instant::now());
        Ok((pkt, attr))
    }
}

#[async_trait::async_trait]
impl Interceptor for Tap {
    async fn bind_rtcp_reader(
        &self,
        reader: Arc<dyn RTCPReader + Send + Sync>,
    ) -> Arc<dyn RTCPReader + Send + Sync> {
        reader
    }
    async fn bind_rtcp_writer(
        &self,
        writer: Arc<dyn RTCPWriter + Send + Sync>,
    ) -> Arc<dyn RTCPWriter + Send + Sync> {
        // the NACK generator: every 20 ms, ask for what is due
        let meter = self.meter.clone();
        let out = writer.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let attrs = Attributes::new();
            loop {
                tick.tick().await;
                let nack = {
                    let mut m = lock(&meter);
                    if m.closed {
                        break;
                    }
                    m.due_nack(Instant::now())
                };
                if let Some(n) = nack {
                    let _ = out.write(&[Box::new(n)], &attrs).await;
                }
            }
        });
        writer
    }
    async fn bind_local_stream(
        &self,
        _info: &StreamInfo,
        writer: Arc<dyn RTPWriter + Send + Sync>,
    ) -> Arc<dyn RTPWriter + Send + Sync> {
        writer
    }
    async fn unbind_local_stream(&self, _info: &StreamInfo) {}
    async fn bind_remote_stream(
        &self,
        info: &StreamInfo,
        reader: Arc<dyn RTPReader + Send + Sync>,
    ) -> Arc<dyn RTPReader + Send + Sync> {
        Arc::new(TapReader {
            inner: reader,
            kind: stream_kind(info),
            meter: self.meter.clone(),
        })
    }
    async fn unbind_remote_stream(&self, _info: &StreamInfo) {}
    async fn close(&self) -> Result<(), webrtc::interceptor::Error> {
        lock(&self.meter).closed = true;
        Ok(())
    }
}

/// How a classroom joins.
#[derive(Debug, Clone)]
pub struct ClassroomSpec {
    pub name: String,
    /// The link relay its media crosses.
    pub via: SocketAddr,
    pub twcc: bool,
    /// `?layer=` cap, when the SFU cannot estimate the link (no TWCC).
    pub layer_cap: Option<String>,
    /// `?placed=1`: the node asked keeps the classroom (no cluster redirect).
    pub placed: bool,
}

/// How a classroom's session is ended.
enum Session {
    /// WHEP: DELETE the resource.
    Whep { location: String, token: String },
    /// Janus: destroy the API session.
    Janus(JanusViewer),
}

pub struct Classroom {
    pub name: String,
    pc: Arc<RTCPeerConnection>,
    session: Session,
    /// Our local UDP address (the relay's client key).
    pub local: SocketAddr,
    pub meter: Arc<Mutex<ClassroomMeter>>,
    pub connected_after: Duration,
    readers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Classroom {
    pub async fn join(
        sig: &Signalling,
        spec: &ClassroomSpec,
        meter: Arc<Mutex<ClassroomMeter>>,
        ttl: Duration,
        route: Option<&Arc<RelayHandle>>,
    ) -> anyhow::Result<Classroom> {
        let t0 = Instant::now();
        let token = sig.token("classroom", &spec.name, ttl)?;
        let api = classroom_api(meter.clone(), spec.twcc, None)?;
        let pc = Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?);
        let mut state = watch_state(&pc);
        for kind in [RTPCodecType::Audio, RTPCodecType::Video] {
            pc.add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    send_encodings: vec![],
                }),
            )
            .await?;
        }
        let readers = drain_tracks(&pc);
        let offer = gathered_offer(&pc).await?;
        let local = udp_candidate(&offer)
            .ok_or_else(|| anyhow!("{}: the offer has no UDP candidate", spec.name))?;
        let mut params: Vec<String> = spec
            .layer_cap
            .iter()
            .map(|l| format!("layer={l}"))
            .collect();
        if spec.placed {
            params.push("placed=1".into());
        }
        let query = if params.is_empty() {
            String::new()
        } else {
            format!("?{}", params.join("&"))
        };
        let answer = match sig
            .post_offer(&format!("/whep/{}{query}", sig.room), &token, &offer)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e.context(format!("{} could not join (WHEP)", spec.name)));
            }
        };
        // On an edge node the media port is that node's, not the relay's usual target: tell the
        // relay before the first datagram leaves (nothing is sent before the answer is set).
        if let (Some(relay), Some(media)) = (route, udp_candidate(&answer.sdp)) {
            let (r, client) = (relay.clone(), local);
            let routed = tokio::task::spawn_blocking(move || r.route(client, media))
                .await
                .unwrap_or(false);
            if !routed {
                sig.delete(&answer.location, &token).await;
                let _ = pc.close().await;
                bail!("{}: the link relay has stopped", spec.name);
            }
        }
        let sdp = route_candidates(&answer.sdp, spec.via);
        let joined = async {
            pc.set_remote_description(RTCSessionDescription::answer(sdp)?)
                .await?;
            wait_connected(&mut state, Duration::from_secs(20)).await
        }
        .await;
        if let Err(e) = joined {
            sig.delete(&answer.location, &token).await;
            let _ = pc.close().await;
            return Err(e.context(spec.name.clone()));
        }
        Ok(Classroom {
            name: spec.name.clone(),
            pc,
            session: Session::Whep {
                location: answer.location,
                token,
            },
            local,
            meter,
            connected_after: t0.elapsed(),
            readers,
        })
    }

    /// Watches the Janus mountpoint through `relay`: Janus offers (one port per peer
    /// connection), our UDP socket is bound first so the relay can be told where this
    /// classroom's datagrams go before the first one leaves, and the offer's candidates are
    /// pointed at the relay. `substream` 0..=2 picks the simulcast layer (Janus has no
    /// per-viewer estimator).
    pub async fn join_janus(
        http: &reqwest::Client,
        janus_base: &str,
        relay: &Arc<RelayHandle>,
        spec: &ClassroomSpec,
        substream: u8,
        meter: Arc<Mutex<ClassroomMeter>>,
    ) -> anyhow::Result<Classroom> {
        let t0 = Instant::now();
        let viewer = JanusViewer::open(http, janus_base)
            .await
            .with_context(|| format!("{}: Janus session", spec.name))?;
        let joined = async {
            let offer = viewer.watch(MOUNTPOINT).await?;
            let janus_media = udp_candidate(&offer)
                .ok_or_else(|| anyhow!("Janus's offer has no UDP candidate:\n{offer}"))?;
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
            let local = socket.local_addr()?;
            let (r, routed) = (relay.clone(), local);
            if !tokio::task::spawn_blocking(move || r.route(routed, janus_media)).await? {
                bail!("the link relay has stopped");
            }
            let mux = UDPMuxDefault::new(UDPMuxParams::new(socket));
            let api = classroom_api(meter.clone(), spec.twcc, Some(mux))?;
            let pc = Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?);
            let mut state = watch_state(&pc);
            let readers = drain_tracks(&pc);
            let setup = async {
                pc.set_remote_description(RTCSessionDescription::offer(route_candidates(
                    &offer, spec.via,
                ))?)
                .await?;
                let sdp = gathered(&pc, pc.create_answer(None).await?).await?;
                tracing::debug!(classroom = %spec.name, "janus offer:\n{offer}\nour answer:\n{sdp}");
                viewer.start(&strip_candidates(&sdp)).await?;
                wait_connected(&mut state, Duration::from_secs(20)).await?;
                viewer.substream(substream).await
            }
            .await;
            if let Err(e) = setup {
                let _ = pc.close().await;
                return Err(e);
            }
            Ok((pc, local, readers))
        }
        .await;
        match joined {
            Ok((pc, local, readers)) => Ok(Classroom {
                name: spec.name.clone(),
                pc,
                session: Session::Janus(viewer),
                local,
                meter,
                connected_after: t0.elapsed(),
                readers,
            }),
            Err(e) => {
                viewer.close().await;
                Err(e.context(format!("{} could not watch on Janus", spec.name)))
            }
        }
    }

    pub async fn leave(self, sig: &Signalling) {
        match &self.session {
            Session::Whep { location, token } => sig.delete(location, token).await,
            Session::Janus(v) => v.close().await,
        }
        let _ = tokio::time::timeout(Duration::from_secs(3), self.pc.close()).await;
        for h in lock(&self.readers).drain(..) {
            h.abort();
        }
    }
}

/// Reads every incoming track: the tap measures, the readers only keep webrtc-rs's pipeline
/// moving. The receiver's RTCP is read too: webrtc-rs runs incoming sender reports through its
/// interceptors only when someone reads them, and without them our receiver reports carry no
/// LSR/DLSR, so the sender cannot measure the round trip (Janus then keeps no packets for
/// retransmission at all).
fn drain_tracks(pc: &RTCPeerConnection) -> Arc<Mutex<Vec<JoinHandle<()>>>> {
    let readers: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
    let list = readers.clone();
    pc.on_track(Box::new(move |track, receiver, _| {
        let rtcp = tokio::spawn(async move { while receiver.read_rtcp().await.is_ok() {} });
        lock(&list).push(rtcp);
        let h = tokio::spawn(async move {
            let mut errors = 0;
            loop {
                match track.read_rtp().await {
                    Ok(_) => errors = 0,
                    Err(e) => {
                        errors += 1;
                        let msg = e.to_string();
                        if errors > 100 || msg.contains("closed") || msg.contains("EOF") {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        });
        lock(&list).push(h);
        Box::pin(async {})
    }));
    readers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_candidates_go_through_the_relay() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 7801 typ host\r\na=candidate:2 1 tcp 1518280447 127.0.0.1 7801 typ host tcptype passive\r\na=end-of-candidates\r\n";
        let via: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let out = route_candidates(sdp, via);
        assert!(out.contains("a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n"));
        assert!(!out.contains("tcp"));
        assert_eq!(udp_candidate(sdp), Some("127.0.0.1:7801".parse().unwrap()));
        assert_eq!(udp_candidate(&out), Some(via));
    }

    #[test]
    fn vp8_packetization_marks_the_last_packet() {
        let frame = vec![7u8; 2500];
        let pkts = packetize_vp8(&frame, 0x1234, 9);
        assert_eq!(pkts.len(), 3);
        assert!(pkts[2].1 && !pkts[0].1);
        let v = parse_vp8_payload(&pkts[0].0).unwrap();
        assert!(v.start);
        assert_eq!(v.data.len(), RTP_PAYLOAD_MAX - 6);
        assert!(!parse_vp8_payload(&pkts[1].0).unwrap().start);
    }
}
