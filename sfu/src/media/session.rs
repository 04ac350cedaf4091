//! Building a session (one `Rtc`) from a WHIP/WHEP offer. Runs on the HTTP side so that
//! certificate generation and SDP work never stall the media loop.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::change::SdpOffer;
use str0m::media::{MediaKind, Mid};
use str0m::net::TcpType;
use str0m::{Candidate, Rtc};

use crate::auth::Claims;
use crate::auth::Role;
use crate::forward::layer::LayerPref;
use crate::program::{assign_slots, assign_tracks, Kind, Slot, Track};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    /// WHIP: sends media into the room.
    Publish,
    /// WHEP: receives the room's program.
    Subscribe,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Publish => "whip",
            SessionKind::Subscribe => "whep",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("malformed SDP offer: {0}")]
    BadSdp(String),
    #[error("the offer has no {0} media the SFU can use")]
    NoMedia(&'static str),
    #[error("no codec in common for {0} (the SFU takes Opus, VP8, VP9, H.264 and AV1)")]
    UnsupportedCodec(String),
}

/// Settings every session is built with.
#[derive(Debug, Clone)]
pub struct RtcSettings {
    pub udp_candidates: Vec<SocketAddr>,
    pub tcp_candidates: Vec<SocketAddr>,
    pub rtx_cache: Duration,
}

/// A session ready to enter the media loop.
pub struct NewSession {
    pub id: String,
    pub room: String,
    pub claims: Claims,
    pub kind: SessionKind,
    pub layer_pref: LayerPref,
    /// A publisher may set the room's allocation policy (`?policy=camera` for a music lesson).
    pub policy: Option<crate::forward::allocator::Policy>,
    pub rtc: Rtc,
    pub offer: String,
    pub answer: String,
    pub local_ufrag: String,
    /// The viewer asked for transport-wide feedback on its video, so TWCC estimates describe
    /// its link (a receiver that negotiates the extension but not the feedback would look like
    /// a link that loses everything).
    pub video_twcc: bool,
    /// Viewers: m-lines that carry a program slot.
    pub slots: Vec<MidSlot>,
    /// Publishers: m-lines that carry a track, with the negotiated rids (simulcast) of each.
    pub tracks: Vec<MidTrack>,
}

#[derive(Debug, Clone)]
pub struct MidSlot {
    pub mid: Mid,
    pub slot: Slot,
}

#[derive(Debug, Clone)]
pub struct MidTrack {
    pub mid: Mid,
    pub track: Track,
    pub rids: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
enum Assigned {
    Slot(Slot),
    Track(Track),
}

/// m-lines of an SDP in order: (kind, mid). Non-media sections (application) are skipped.
fn mlines(sdp: &str) -> Vec<(Kind, Option<String>)> {
    let mut out: Vec<(Option<Kind>, Option<String>)> = vec![];
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("m=") {
            let kind = match rest.split(' ').next() {
                Some("audio") => Some(Kind::Audio),
                Some("video") => Some(Kind::Video),
                _ => None,
            };
            out.push((kind, None));
        } else if let Some(mid) = line.strip_prefix("a=mid:") {
            if let Some(last) = out.last_mut() {
                last.1 = Some(mid.trim().to_string());
            }
        }
    }
    out.into_iter()
        .filter_map(|(k, m)| k.map(|k| (k, m)))
        .collect()
}

/// Where a subscriber's bandwidth estimate starts: enough for the low and middle layers, so a
/// classroom sees a picture at once; probing finds the rest within seconds.
pub const INITIAL_ESTIMATE_KBPS: u64 = 800;

fn rtc_config(now: Instant, kind: SessionKind) -> Rtc {
    let bwe = (kind == SessionKind::Subscribe).then(|| Bitrate::kbps(INITIAL_ESTIMATE_KBPS));
    Rtc::builder()
        .enable_bwe(bwe)
        // Viewers may take the voice with RFC 2198 redundancy (sent on lossy links).
        .enable_opus(true, kind == SessionKind::Subscribe)
        .set_ice_lite(true)
        .set_rtp_mode(true)
        // A viewer's stats tick also carries the controller's latest estimate, which the
        // allocator follows down without waiting for the averaged estimate event: after a
        // capacity drop every tick of delay is more of the link's queue built.
        .set_stats_interval(Some(if kind == SessionKind::Subscribe {
            Duration::from_millis(200)
        } else {
            Duration::from_millis(500)
        }))
        // Packets kept for answering NACKs; the age limit is set per stream below.
        .set_send_buffer_video(4096)
        .set_send_buffer_audio(512)
        .build(now)
}

/// Accepts `offer` and returns the session with its SDP answer.
#[allow(clippy::too_many_arguments)]
pub fn accept_offer(
    settings: &RtcSettings,
    id: String,
    room: String,
    claims: Claims,
    kind: SessionKind,
    layer_pref: LayerPref,
    offer: &str,
    now: Instant,
) -> Result<NewSession, SessionError> {
    let parsed =
        SdpOffer::from_sdp_string(offer).map_err(|e| SessionError::BadSdp(e.to_string()))?;
    let lines = mlines(offer);
    if lines.is_empty() {
        return Err(SessionError::NoMedia("audio or video"));
    }
    let mut rtc = rtc_config(now, kind);
    for addr in &settings.udp_candidates {
        if let Ok(c) = Candidate::host(*addr, "udp") {
            rtc.add_local_candidate(c);
        }
    }
    for addr in &settings.tcp_candidates {
        if let Ok(c) = Candidate::builder()
            .tcp()
            .host(*addr)
            .tcptype(TcpType::Passive)
            .build()
        {
            rtc.add_local_candidate(c);
        }
    }
    let answer = rtc
        .sdp_api()
        .accept_offer(parsed)
        .map_err(|e| SessionError::BadSdp(e.to_string()))?;

    let kinds: Vec<Kind> = lines.iter().map(|(k, _)| *k).collect();
    let assigned: Vec<Option<Assigned>> = match kind {
        SessionKind::Subscribe => assign_slots(&kinds)
            .into_iter()
            .map(|s| s.map(Assigned::Slot))
            .collect(),
        SessionKind::Publish => {
            let teacher = matches!(claims.role, Role::Teacher | Role::Admin);
            assign_tracks(&kinds, teacher)
                .into_iter()
                .map(|t| t.map(Assigned::Track))
                .collect()
        }
    };
    let mut slots = vec![];
    let mut tracks = vec![];
    let mut unusable = vec![];
    for ((k, mid), assign) in lines.iter().zip(assigned) {
        let (Some(mid), Some(assign)) = (mid, assign) else {
            continue;
        };
        let mid: Mid = mid.as_str().into();
        let Some(media) = rtc.media(mid) else {
            unusable.push(mid.to_string());
            continue;
        };
        let wanted = match kind {
            SessionKind::Publish => media.direction().is_receiving(),
            SessionKind::Subscribe => media.direction().is_sending(),
        };
        if !wanted {
            continue;
        }
        let has_codec = rtc
            .codec_config()
            .params()
            .iter()
            .any(|p| media.remote_pts().contains(&p.pt()));
        let kind_ok = matches!(
            (k, media.kind()),
            (Kind::Audio, MediaKind::Audio) | (Kind::Video, MediaKind::Video)
        );
        if media.disabled() || !has_codec || !kind_ok {
            unusable.push(format!(
                "{} (mid {mid})",
                if *k == Kind::Audio { "audio" } else { "video" }
            ));
            continue;
        }
        match assign {
            Assigned::Slot(slot) => slots.push(MidSlot { mid, slot }),
            Assigned::Track(track) => {
                let rids = match media.rids_rx() {
                    str0m::media::Rids::Specific(r) => r.iter().map(|r| r.to_string()).collect(),
                    _ => vec![],
                };
                tracks.push(MidTrack { mid, track, rids });
            }
        }
    }
    if slots.is_empty() && tracks.is_empty() {
        if !unusable.is_empty() {
            return Err(SessionError::UnsupportedCodec(unusable.join(", ")));
        }
        return Err(SessionError::NoMedia(match kind {
            SessionKind::Publish => "sending",
            SessionKind::Subscribe => "receiving",
        }));
    }

    // Keep enough sent media to repair losses over satellite round trips.
    if kind == SessionKind::Subscribe {
        let mut api = rtc.direct_api();
        for s in &slots {
            if let Some(tx) = api.stream_tx_by_mid(s.mid, None) {
                let packets = if s.slot.is_audio() { 512 } else { 4096 };
                tx.set_rtx_cache(packets, settings.rtx_cache, Some(0.15));
            }
        }
    }
    let local_ufrag = rtc.direct_api().local_ice_credentials().ufrag;
    Ok(NewSession {
        id,
        room,
        claims,
        kind,
        layer_pref,
        policy: None,
        video_twcc: video_has_twcc_feedback(offer),
        rtc,
        offer: offer.to_string(),
        answer: answer.to_sdp_string(),
        local_ufrag,
        slots,
        tracks,
    })
}

/// True when every video m-line of `sdp` offers `transport-cc` feedback.
pub fn video_has_twcc_feedback(sdp: &str) -> bool {
    let mut sections: Vec<(bool, bool)> = vec![];
    for line in sdp.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("m=") {
            sections.push((rest.starts_with("video"), false));
        } else if line.starts_with("a=rtcp-fb:") && line.contains("transport-cc") {
            if let Some(last) = sections.last_mut() {
                last.1 = true;
            }
        }
    }
    let video: Vec<_> = sections.iter().filter(|s| s.0).collect();
    !video.is_empty() && video.iter().all(|s| s.1)
}

/// Replaces the ICE credentials of a stored offer, for an ICE restart through PATCH.
pub fn offer_with_credentials(offer: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(offer.len());
    for line in offer.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let ending = &line[body.len()..];
        if body.starts_with("a=ice-ufrag:") {
            out.push_str(&format!("a=ice-ufrag:{ufrag}{ending}"));
        } else if body.starts_with("a=ice-pwd:") {
            out.push_str(&format!("a=ice-pwd:{pwd}{ending}"));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// The session-level (first) ICE credentials of an SDP.
pub fn ice_credentials(sdp: &str) -> Option<(String, String)> {
    let find = |prefix: &str| {
        sdp.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
    };
    Some((find("a=ice-ufrag:")?, find("a=ice-pwd:")?))
}

/// The parts of a trickle-ICE / ICE-restart SDP fragment (RFC 8840) the SFU uses.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SdpFrag {
    pub ufrag: Option<String>,
    pub pwd: Option<String>,
    pub candidates: Vec<String>,
}

pub fn parse_sdpfrag(body: &str) -> SdpFrag {
    let mut f = SdpFrag::default();
    for line in body.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            f.ufrag = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
            f.pwd = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("a=") {
            if v.starts_with("candidate:") {
                f.candidates.push(v.to_string());
            }
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mline_scan() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 UDP 96\r\na=mid:1\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n";
        assert_eq!(
            mlines(sdp),
            vec![
                (Kind::Audio, Some("0".into())),
                (Kind::Video, Some("1".into()))
            ]
        );
    }

    #[test]
    fn ice_restart_rewrites_credentials() {
        let sdp = "v=0\r\na=ice-ufrag:old\r\na=ice-pwd:oldpwd\r\nm=audio 9\r\na=ice-ufrag:old\r\n";
        let s = offer_with_credentials(sdp, "new", "newpwd");
        assert_eq!(
            s,
            "v=0\r\na=ice-ufrag:new\r\na=ice-pwd:newpwd\r\nm=audio 9\r\na=ice-ufrag:new\r\n"
        );
    }

    #[test]
    fn twcc_feedback_detection() {
        let with = "m=audio 9 X 111\r\na=rtcp-fb:111 transport-cc\r\nm=video 9 X 96\r\na=rtcp-fb:96 transport-cc\r\n";
        assert!(video_has_twcc_feedback(with));
        let without = "m=audio 9 X 111\r\na=rtcp-fb:111 transport-cc\r\nm=video 9 X 96\r\na=rtcp-fb:96 goog-remb\r\n";
        assert!(!video_has_twcc_feedback(without));
        assert!(!video_has_twcc_feedback("m=audio 9 X 111\r\n"));
    }

    #[test]
    fn sdpfrag() {
        let f = parse_sdpfrag(
            "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\na=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\na=end-of-candidates\r\n",
        );
        assert_eq!(f.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.candidates.len(), 1);
        assert_eq!(parse_sdpfrag("garbage"), SdpFrag::default());
    }
}
