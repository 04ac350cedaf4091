//! The SFU's subscriber sessions repair losses from their send cache, even over satellite
//! round trips: a str0m receiver (as a WHEP viewer) and a subscriber session built by
//! [`accept_offer`] talk over a virtual network with a virtual clock; one packet is lost and
//! must come back by retransmission.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};

use super::session::{accept_offer, RtcSettings, SessionKind};
use crate::auth::{Claims, Role};
use crate::forward::layer::LayerPref;

const VIEWER: &str = "127.0.0.1:1000";
const SFU: &str = "127.0.0.1:2000";

struct Node {
    rtc: Rtc,
    addr: SocketAddr,
    next: Instant,
    events: Vec<(Instant, Event)>,
}

/// Datagrams in flight: (deliver at, to viewer?, source, destination, bytes).
type Wire = Vec<(Instant, bool, SocketAddr, SocketAddr, Vec<u8>)>;

fn poll(n: &mut Node, to_viewer: bool, wire: &mut Wire, now: Instant, delay: Duration) {
    loop {
        match n.rtc.poll_output().expect("poll") {
            Output::Timeout(t) => {
                n.next = t;
                return;
            }
            Output::Transmit(t) => wire.push((
                now + delay,
                to_viewer,
                t.source,
                t.destination,
                t.contents.into(),
            )),
            Output::Event(e) => n.events.push((now, e)),
        }
    }
}

fn rtp_seq_ssrc(b: &[u8]) -> Option<(u16, u32)> {
    (b.len() >= 12 && b[0] >> 6 == 2 && !(192..=223).contains(&b[1])).then(|| {
        (
            u16::from_be_bytes([b[2], b[3]]),
            u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        )
    })
}

/// Runs a viewer ← SFU session with `one_way` delay, drops the first transmission of one
/// packet, and returns (sent at, recovered at) for it.
fn lose_and_repair(one_way: Duration, interval: Duration) -> (Instant, Instant) {
    let t0 = Instant::now();
    let mut viewer = Rtc::builder().set_rtp_mode(true).build(t0);
    viewer.add_local_candidate(Candidate::host(VIEWER.parse().unwrap(), "udp").unwrap());
    let mut api = viewer.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().unwrap();
    let settings = RtcSettings {
        udp_candidates: vec![SFU.parse().unwrap()],
        tcp_candidates: vec![],
        rtx_cache: Duration::from_secs(4),
    };
    let claims = Claims {
        sub: "point-1".into(),
        name: String::new(),
        room: "r".into(),
        role: Role::Classroom,
        exp: u64::MAX,
        origin: None,
    };
    let ns = accept_offer(
        &settings,
        "s1".into(),
        "r".into(),
        claims,
        SessionKind::Subscribe,
        LayerPref::High,
        &offer.to_sdp_string(),
        t0,
    )
    .expect("SFU accepts the viewer's offer");
    let mid = ns.slots[0].mid;
    viewer
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&ns.answer).unwrap())
        .unwrap();
    let mut v = Node {
        rtc: viewer,
        addr: VIEWER.parse().unwrap(),
        next: t0,
        events: vec![],
    };
    let mut s = Node {
        rtc: ns.rtc,
        addr: SFU.parse().unwrap(),
        next: t0,
        events: vec![],
    };
    let pt = s
        .rtc
        .codec_config()
        .params()
        .iter()
        .find(|p| p.spec().codec == str0m::format::Codec::Vp8)
        .unwrap()
        .pt();

    let mut wire: Wire = vec![];
    let mut now = t0;
    let mut seq = 0u64;
    let mut next_media = t0;
    let mut media_ssrc = None;
    let (lost_seq, mut lost_at, mut dropped) = (30u16, None, false);
    let end = t0 + Duration::from_secs(30);
    poll(&mut v, false, &mut wire, now, one_way);
    poll(&mut s, true, &mut wire, now, one_way);
    while now < end {
        // Next event: a node timeout, a datagram arrival or the next media packet.
        let mut t = v.next.min(s.next);
        if let Some(w) = wire.iter().map(|w| w.0).min() {
            t = t.min(w);
        }
        if s.rtc.is_connected() {
            t = t.min(next_media);
        }
        now = t.max(now);
        // Deliver what is due.
        let (due, rest): (Wire, Wire) = wire.drain(..).partition(|w| w.0 <= now);
        wire = rest;
        for (_, to_viewer, src, dst, bytes) in due {
            let n = if to_viewer { &mut v } else { &mut s };
            if to_viewer {
                if let Some((sq, ssrc)) = rtp_seq_ssrc(&bytes) {
                    if Some(ssrc) == media_ssrc && sq == lost_seq && !dropped {
                        dropped = true;
                        continue;
                    }
                }
            }
            let input = Input::Receive(
                now,
                Receive {
                    proto: Protocol::Udp,
                    source: src,
                    destination: dst,
                    contents: bytes.as_slice().try_into().unwrap(),
                },
            );
            n.rtc.handle_input(input).unwrap();
            let back = !to_viewer;
            poll(n, back, &mut wire, now, one_way);
        }
        if s.rtc.is_connected() && now >= next_media {
            let mut api = s.rtc.direct_api();
            let tx = api.stream_tx_by_mid(mid, None).unwrap();
            media_ssrc = Some(*tx.ssrc());
            tx.write_rtp(
                RtpWrite::new(
                    pt,
                    seq.into(),
                    (seq * 1800) as u32,
                    now,
                    vec![0x10, 0, 0, 0, 1, 2],
                )
                .nackable(true),
            );
            if seq == lost_seq as u64 {
                lost_at = Some(now);
            }
            seq += 1;
            next_media = now + interval;
            poll(&mut s, true, &mut wire, now, one_way);
        }
        for n in [&mut v, &mut s] {
            if n.next <= now {
                n.rtc.handle_input(Input::Timeout(now)).unwrap();
                let to_viewer = n.addr == SFU.parse::<SocketAddr>().unwrap();
                poll(n, to_viewer, &mut wire, now, one_way);
            }
        }
        if let Some(at) = v.events.iter().find_map(|(at, e)| match e {
            Event::RtpPacket(p) if *p.seq_no == lost_seq as u64 => Some(*at),
            _ => None,
        }) {
            assert!(dropped, "the packet was dropped once before it arrived");
            return (lost_at.unwrap(), at);
        }
    }
    panic!("packet {lost_seq} was never repaired (dropped: {dropped})");
}

#[test]
fn repairs_a_loss_over_a_satellite_round_trip() {
    let one_way = Duration::from_millis(325);
    let (sent, got) = lose_and_repair(one_way, Duration::from_millis(20));
    // It can only come back after a NACK crossed the link and the resend crossed back.
    assert!(got.duration_since(sent) >= one_way * 3);
}

#[test]
fn the_send_cache_holds_more_than_three_seconds() {
    // A 3.2 s round trip: the NACK reaches the SFU when the packet is over 3 s old. (25
    // packets/s keeps the gap inside the str0m receiver's 100-packet reorder window; the
    // SFU's cache is the part under test.)
    let one_way = Duration::from_millis(1600);
    let (sent, got) = lose_and_repair(one_way, Duration::from_millis(40));
    assert!(got.duration_since(sent) >= Duration::from_millis(4800));
}
