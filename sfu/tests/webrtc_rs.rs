//! The SFU against a second, independent WebRTC stack: webrtc-rs (the `webrtc` crate).
//!
//! Each test starts its own `sfu serve` on free loopback ports, publishes a teacher over WHIP
//! with webrtc-rs and watches WHEP viewers built on webrtc-rs. Tests run one at a time.
//! `SFU_TEST_RUST_LOG` sets the SFU's RUST_LOG (default `info,sfu=debug`); the SFU log tail is
//! printed when a test fails. Run with `--nocapture` to see the per-stream numbers.
//!
//! webrtc-rs 0.17 can send simulcast: `TrackLocalStaticRTP::new_with_rid` plus
//! `RTCRtpSender::add_encoding` yield `a=rid:<rid> send` / `a=simulcast:send l;m;h` in the offer
//! and the rtp-stream-id header extension on every packet, so the VP8 tests use 3 layers.

mod common;

use std::time::{Duration, Instant};

use common::*;

const ROOM_LIMIT: Duration = Duration::from_secs(180);
/// a keyframe must reach a new viewer this soon after its peer connection is up
const KEYFRAME_DEADLINE: Duration = Duration::from_secs(3);

fn must<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// The checks every viewer of a healthy stream passes.
fn check_camera(name: &str, rep: &StreamReport, min_span: Duration) {
    assert!(
        rep.span >= min_span,
        "{name}: camera received for only {:.2}s (want >= {:.0}s): {}",
        rep.span.as_secs_f64(),
        min_span.as_secs_f64(),
        rep.line()
    );
    assert_eq!(
        rep.ssrcs.len(),
        1,
        "{name}: camera slot saw several SSRCs: {}",
        rep.line()
    );
    assert_eq!(
        rep.missing,
        0,
        "{name}: camera sequence numbers have gaps: {}",
        rep.line()
    );
    assert_eq!(
        rep.ts_backwards,
        0,
        "{name}: camera RTP timestamps go backwards: {}",
        rep.line()
    );
    // generous for a loaded 2-core machine; the sequence check above catches real drops
    assert!(
        rep.max_gap < Duration::from_millis(1500),
        "{name}: camera stalled for {:.0} ms: {}",
        rep.max_gap.as_secs_f64() * 1000.0,
        rep.line()
    );
    // 30 fps published; a steady viewer sees well over 10 frames per second
    let fps = rep.frames as f64 / rep.span.as_secs_f64().max(0.001);
    assert!(
        fps >= 10.0,
        "{name}: only {fps:.1} frames/s on the camera: {}",
        rep.line()
    );
    let first_key = rep
        .first_key_after
        .unwrap_or_else(|| panic!("{name}: no keyframe at all on the camera: {}", rep.line()));
    assert!(
        first_key <= KEYFRAME_DEADLINE,
        "{name}: first keyframe {:.2}s after connecting (want <= {:?}): {}",
        first_key.as_secs_f64(),
        KEYFRAME_DEADLINE,
        rep.line()
    );
}

fn check_audio(name: &str, log: &SlotLog, t0: Instant, min_span: Duration) {
    assert!(
        !log.tracks.is_empty(),
        "{name}: no track arrived in the audio slot"
    );
    assert_eq!(
        log.tracks[0].mime, "audio/opus",
        "{name}: audio slot codec {:?}",
        log.tracks[0]
    );
    let rep = analyze(&log.pkts, t0);
    eprintln!("{name} audio: {}", rep.line());
    if !log.read_errors.is_empty() {
        eprintln!("{name}: audio read errors: {:?}", log.read_errors);
    }
    assert!(
        rep.span >= min_span,
        "{name}: audio received for only {:.2}s: {}",
        rep.span.as_secs_f64(),
        rep.line()
    );
    let per_s = rep.packets as f64 / rep.span.as_secs_f64().max(0.001);
    assert!(
        per_s >= 35.0,
        "{name}: only {per_s:.1} Opus packets/s (50 sent): {}",
        rep.line()
    );
    assert_eq!(rep.ssrcs.len(), 1, "{name}: audio SSRCs: {}", rep.line());
    assert_eq!(
        rep.missing,
        0,
        "{name}: audio sequence gaps: {}",
        rep.line()
    );
    assert_eq!(
        rep.ts_backwards,
        0,
        "{name}: audio timestamps go backwards: {}",
        rep.line()
    );
}

fn camera_track(name: &str, log: &SlotLog) -> TrackSeen {
    if !log.read_errors.is_empty() {
        eprintln!("{name}: camera read errors: {:?}", log.read_errors);
    }
    assert!(
        !log.tracks.is_empty(),
        "{name}: no track arrived in the camera slot (slot 2 of audio/video/video); {} packets",
        log.pkts.len()
    );
    log.tracks[0].clone()
}

fn courseware_note(name: &str, sub: &Subscriber) {
    let cw = sub.slot(SLOT_COURSEWARE);
    eprintln!(
        "{name}: courseware slot: {} tracks, {} packets (nothing published there)",
        cw.tracks.len(),
        cw.pkts.len()
    );
}

// -------------------------------------------------------------------------------------------
// self-check of the synthetic media and the receive-side parsers (no SFU involved)
// -------------------------------------------------------------------------------------------

#[test]
fn synthetic_media_is_well_formed() {
    for layer in simulcast_layers() {
        let (w, h) = (layer.width, layer.height);
        let key = synthetic_frame(VideoCodec::Vp8, layer.clone(), true);
        assert!(key.len() > 1 && key.last().unwrap().1 && !key[0].1);
        assert!(key.iter().all(|(p, _)| p.len() <= RTP_PAYLOAD_MAX));
        assert_eq!(
            parse_vp8(&key[0].0),
            Some(Key {
                width: w,
                height: h,
                idr: false,
                sps: false
            })
        );
        assert!(key[1..].iter().all(|(p, _)| parse_vp8(p).is_none()));
        let delta = synthetic_frame(VideoCodec::Vp8, layer, false);
        assert!(delta.iter().all(|(p, _)| parse_vp8(p).is_none()));
    }
    let layer = PublisherOpts::single(VideoCodec::H264, 640, 360).layers[0].clone();
    let key = synthetic_frame(VideoCodec::H264, layer.clone(), true);
    assert_eq!(key[0].0[0] & 0x1f, 24, "STAP-A first");
    let k0 = parse_h264(&key[0].0).unwrap();
    assert!(k0.sps && !k0.idr);
    assert!(
        parse_h264(&key[1].0).unwrap().idr,
        "IDR start in the second packet"
    );
    assert!(key.iter().all(|(p, _)| p.len() <= RTP_PAYLOAD_MAX));
    assert!(key.last().unwrap().1);
    let delta = synthetic_frame(VideoCodec::H264, layer, false);
    assert!(delta.iter().all(|(p, _)| parse_h264(p).is_none()));
    // SPS of 640x360 constrained baseline: 67 42 e0 1f ...
    assert_eq!(&h264_sps(640, 360)[..4], &[0x67, 0x42, 0xe0, 0x1f]);
}

// -------------------------------------------------------------------------------------------
// a) VP8 simulcast + Opus, three viewers with different layer choices
// -------------------------------------------------------------------------------------------

#[test]
fn vp8_simulcast_three_viewers() {
    run("vp8_simulcast_three_viewers", ROOM_LIMIT, async {
        let mut sfu = Sfu::start().await;
        let room = "lesson-vp8";
        let teacher = sfu.token(room, "teacher", "teacher-1");
        let publisher =
            must(Publisher::connect(&sfu, room, &teacher, PublisherOpts::vp8_simulcast()).await);
        eprintln!(
            "publisher connected; offer has simulcast: {}",
            publisher.offer.contains("a=simulcast")
        );
        sleep(secs(1.0)).await;

        let viewers = [
            ("default", "", 1280u16),
            ("low", "?layer=low", 320),
            ("mid", "?layer=mid", 640),
        ];
        let mut subs = Vec::new();
        for (i, (name, q, _)) in viewers.iter().enumerate() {
            let tok = sfu.token(room, "classroom", &format!("school-{i}"));
            subs.push(must(
                Subscriber::connect(&sfu, room, &tok, q, &[VideoCodec::Vp8], name).await,
            ));
        }
        sleep(secs(7.5)).await;

        let (st, body) = sfu.get(&format!("/api/rooms/{room}")).await;
        eprintln!("GET /api/rooms/{room} -> {st}: {body}");
        assert_eq!(st, 200, "GET /api/rooms/{room}: {st} {body}");
        // Per-subscriber layers are exported to Prometheus: the three viewers follow the
        // high, low and middle layers of the camera.
        let (_, metrics) = sfu.get("/metrics").await;
        let mut camera_layers: Vec<i64> = metrics
            .lines()
            .filter(|l| {
                l.starts_with("sfu_subscriber_layer{") && l.contains("slot=\"teacher_camera\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        camera_layers.sort();
        assert_eq!(camera_layers, vec![0, 1, 2], "{metrics}");
        assert!(
            serde_json::from_str::<serde_json::Value>(&body).is_ok(),
            "GET /api/rooms/{room} is not JSON: {body}"
        );

        eprintln!("publisher: {}", publisher.stats.summary());
        for (sub, (name, _, want_width)) in subs.iter().zip(viewers.iter()) {
            let cam = sub.slot(SLOT_CAMERA);
            let track = camera_track(name, &cam);
            let rep = analyze(&cam.pkts, sub.connected_at);
            eprintln!(
                "{name} camera ({} pt {}): {}",
                track.mime,
                track.payload_type,
                rep.line()
            );
            assert_eq!(track.mime, "video/vp8", "{name}: camera codec {track:?}");
            check_camera(name, &rep, Duration::from_secs(5));
            // The layer: the last keyframes must have the layer's width. The first ones may
            // come from another layer while the SFU settles (reported, not asserted).
            let late: Vec<u16> = rep
                .keyframes
                .iter()
                .filter(|(t, _)| *t >= Duration::from_secs(4))
                .map(|(_, k)| k.width)
                .collect();
            assert!(
                !late.is_empty(),
                "{name}: no keyframe after the first 4 s (publisher sends one every 2 s): {}",
                rep.line()
            );
            assert!(
                late.iter().all(|w| w == want_width),
                "{name}: keyframes after 4 s have widths {late:?}, want all {want_width}: {}",
                rep.line()
            );
            check_audio(
                name,
                &sub.slot(SLOT_AUDIO),
                sub.connected_at,
                Duration::from_secs(5),
            );
            courseware_note(name, sub);
        }

        // SIGTERM while sessions are live → clean exit 0, and nothing bad in the log
        sfu.finish().await;
        drop(subs);
        publisher.vanish().await;
    });
}

// -------------------------------------------------------------------------------------------
// b) H.264 + Opus
// -------------------------------------------------------------------------------------------

#[test]
fn h264_three_viewers() {
    run("h264_three_viewers", ROOM_LIMIT, async {
        let mut sfu = Sfu::start().await;
        let room = "lesson-h264";
        let teacher = sfu.token(room, "teacher", "teacher-1");
        let publisher = must(
            Publisher::connect(
                &sfu,
                room,
                &teacher,
                PublisherOpts::single(VideoCodec::H264, 640, 360),
            )
            .await,
        );
        sleep(secs(1.0)).await;

        // two viewers offer only H.264; one offers VP8 first and H.264 second, like Chrome
        let viewers: [(&str, &[VideoCodec]); 3] = [
            ("h264-a", &[VideoCodec::H264]),
            ("h264-b", &[VideoCodec::H264]),
            ("vp8+h264", &[VideoCodec::Vp8, VideoCodec::H264]),
        ];
        let mut subs = Vec::new();
        for (i, (name, codecs)) in viewers.iter().enumerate() {
            let tok = sfu.token(room, "classroom", &format!("school-{i}"));
            subs.push(must(
                Subscriber::connect(&sfu, room, &tok, "", codecs, name).await,
            ));
        }
        sleep(secs(7.5)).await;

        sfu.dump_room(room).await;
        eprintln!("publisher: {}", publisher.stats.summary());
        for (sub, (name, _)) in subs.iter().zip(viewers.iter()) {
            let cam = sub.slot(SLOT_CAMERA);
            let track = camera_track(name, &cam);
            let rep = analyze(&cam.pkts, sub.connected_at);
            eprintln!(
                "{name} camera ({} {:?} pt {}): {}",
                track.mime,
                track.fmtp,
                track.payload_type,
                rep.line()
            );
            assert_eq!(track.mime, "video/h264", "{name}: camera codec {track:?}");
            let fmtp = track.fmtp.to_lowercase();
            assert!(
                fmtp.contains("packetization-mode=1") && fmtp.contains("profile-level-id=42e01f"),
                "{name}: negotiated H.264 fmtp {:?}, want packetization-mode=1 and 42e01f",
                track.fmtp
            );
            check_camera(name, &rep, Duration::from_secs(5));
            let (t_idr, _) = rep
                .keyframes
                .iter()
                .find(|(_, k)| k.idr)
                .unwrap_or_else(|| panic!("{name}: no IDR received: {}", rep.line()));
            assert!(
                *t_idr <= KEYFRAME_DEADLINE,
                "{name}: first IDR {:.2}s after connecting: {}",
                t_idr.as_secs_f64(),
                rep.line()
            );
            assert!(
                rep.keyframes.iter().any(|(_, k)| k.sps && k.idr),
                "{name}: no access unit with SPS/PPS and IDR: {}",
                rep.line()
            );
            check_audio(
                name,
                &sub.slot(SLOT_AUDIO),
                sub.connected_at,
                Duration::from_secs(5),
            );
            courseware_note(name, sub);
        }
        drop(subs);
        publisher.vanish().await;
        sfu.finish().await;
    });
}

// -------------------------------------------------------------------------------------------
// c) publisher reconnect: the viewer's streams continue seamlessly
// -------------------------------------------------------------------------------------------

/// Checks one slot across a publisher switch at `t_switch` (the new publisher is connected).
fn check_continuity(name: &str, log: &SlotLog, t0: Instant, t_switch: Instant, clock: f64) {
    let rep = analyze(&log.pkts, t0);
    eprintln!("{name}: {}", rep.line());
    assert_eq!(
        rep.ssrcs.len(),
        1,
        "{name}: the SSRC changed across the publisher switch: {}",
        rep.line()
    );
    let pre = log
        .pkts
        .iter()
        .rposition(|p| p.at < t_switch)
        .unwrap_or_else(|| panic!("{name}: nothing received before the switch: {}", rep.line()));
    let post = pre + 1;
    assert!(
        post < log.pkts.len(),
        "{name}: nothing received after the new publisher connected: {}",
        rep.line()
    );
    let after = &log.pkts[post..];
    let span_after = after.last().unwrap().at - after[0].at;
    assert!(
        span_after >= Duration::from_secs(4),
        "{name}: only {:.2}s of media after the switch: {}",
        span_after.as_secs_f64(),
        rep.line()
    );
    let (a, b) = (&log.pkts[pre], &log.pkts[post]);
    let dseq = b.seq.wrapping_sub(a.seq) as i16;
    let dts = b.ts.wrapping_sub(a.ts) as i32;
    let wall = b.at - a.at;
    eprintln!(
        "{name}: across the switch: seq {} -> {} (delta {dseq}), ts {} -> {} (delta {dts} = {:.3}s), wall {:.3}s",
        a.seq, b.seq, a.ts, b.ts, dts as f64 / clock, wall.as_secs_f64()
    );
    assert_eq!(
        dseq,
        1,
        "{name}: sequence number jumps by {dseq} across the publisher switch: {}",
        rep.line()
    );
    assert!(
        dts > 0,
        "{name}: RTP timestamp does not increase across the switch (delta {dts}): {}",
        rep.line()
    );
    assert_eq!(rep.missing, 0, "{name}: sequence gaps: {}", rep.line());
    assert_eq!(
        rep.ts_backwards,
        0,
        "{name}: timestamps go backwards: {}",
        rep.line()
    );
}

async fn reconnect_scenario(test: &str, delete_first: bool, opts: PublisherOpts) {
    let mut sfu = Sfu::start().await;
    let room = "lesson-reconnect";
    let teacher = sfu.token(room, "teacher", "teacher-1");
    let first = must(Publisher::connect(&sfu, room, &teacher, opts.clone()).await);
    sleep(secs(1.0)).await;
    let viewer_tok = sfu.token(room, "classroom", "school-1");
    let sub = must(Subscriber::connect(&sfu, room, &viewer_tok, "", &[opts.codec], "viewer").await);
    sleep(secs(4.0)).await;
    eprintln!("first publisher: {}", first.stats.summary());

    let t_gone = Instant::now();
    let mut silent_first = None;
    if delete_first {
        let st = first.leave(&sfu).await;
        assert!(
            (200..300).contains(&st),
            "{test}: DELETE of the WHIP session answered {st}"
        );
    } else {
        // no DELETE, and the old session stays connected (ICE/DTLS alive, no media)
        let mut first = first;
        first.go_silent();
        silent_first = Some(first);
    }
    sleep(secs(1.0)).await;
    // same sub, fresh token (a reloaded teacher page would mint or reuse one)
    let teacher2 = sfu.token(room, "teacher", "teacher-1");
    let second = must(Publisher::connect(&sfu, room, &teacher2, opts.clone()).await);
    let t_switch = second.connected_at;
    eprintln!(
        "{test}: new publisher connected {:.2}s after the old one left",
        (t_switch - t_gone).as_secs_f64()
    );
    sleep(secs(6.0)).await;
    sfu.dump_room(room).await;
    eprintln!("second publisher: {}", second.stats.summary());

    assert_eq!(
        sub.state.current(),
        webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState::Connected,
        "{test}: the viewer's connection did not stay up: {:?}",
        sub.state.states()
    );
    let cam = sub.slot(SLOT_CAMERA);
    let _ = camera_track("viewer", &cam);
    check_continuity(
        &format!("{test} camera"),
        &cam,
        sub.connected_at,
        t_switch,
        90000.0,
    );
    // the new publisher's keyframe reaches the viewer promptly
    let first_key_after_switch = cam
        .pkts
        .iter()
        .find(|p| p.at >= t_switch && p.key.is_some())
        .map(|p| p.at - t_switch);
    assert!(
        matches!(first_key_after_switch, Some(d) if d <= KEYFRAME_DEADLINE),
        "{test}: no keyframe within {KEYFRAME_DEADLINE:?} after the new publisher connected ({first_key_after_switch:?})"
    );
    check_continuity(
        &format!("{test} audio"),
        &sub.slot(SLOT_AUDIO),
        sub.connected_at,
        t_switch,
        48000.0,
    );
    drop(sub);
    second.vanish().await;
    if let Some(p) = silent_first {
        p.vanish().await;
    }
    sfu.finish().await;
}

#[test]
fn publisher_reconnect_keeps_viewer_stream_continuous() {
    run("publisher_reconnect", ROOM_LIMIT, async {
        reconnect_scenario(
            "reconnect-after-delete",
            true,
            PublisherOpts::single(VideoCodec::Vp8, 640, 360),
        )
        .await;
    });
}

/// Same, but the old session never says goodbye and even stays connected without media (a hung
/// teacher machine, or a reboot faster than the SFU's timeout), and the layers are simulcast:
/// the same `sub` publishing again takes over the viewers' slots.
#[test]
fn publisher_takeover_without_delete_simulcast() {
    run("publisher_takeover", ROOM_LIMIT, async {
        reconnect_scenario(
            "takeover-without-delete",
            false,
            PublisherOpts::vp8_simulcast(),
        )
        .await;
    });
}

// -------------------------------------------------------------------------------------------
// d) auth and bad requests do not disturb a running lesson
// -------------------------------------------------------------------------------------------

#[test]
fn auth_and_bad_requests_leave_the_lesson_alone() {
    run("auth", ROOM_LIMIT, async {
        let mut sfu = Sfu::start().await;
        let room = "lesson-auth";
        let teacher = sfu.token(room, "teacher", "teacher-1");
        let publisher = must(
            Publisher::connect(
                &sfu,
                room,
                &teacher,
                PublisherOpts::single(VideoCodec::Vp8, 640, 360),
            )
            .await,
        );
        sleep(secs(1.0)).await;
        let viewer_tok = sfu.token(room, "classroom", "school-1");
        let sub = must(
            Subscriber::connect(&sfu, room, &viewer_tok, "", &[VideoCodec::Vp8], "viewer").await,
        );
        sleep(secs(1.5)).await;

        // minted now, expired by the time it is used (the SFU allows no leeway)
        let started = Instant::now();
        let short_lived = mint_token_ttl(&sfu.secret, room, "teacher", "teacher-1", Some("1s"));
        let offer = throwaway_offer().await;
        let whip = format!("/whip/{room}");
        let mut failures: Vec<String> = Vec::new();
        let mut expect = |what: &str, got: u16, want: &[u16]| {
            eprintln!("{what}: {got}");
            if !want.contains(&got) {
                failures.push(format!("{what}: got {got}, want {want:?}"));
            }
        };

        let r = sfu.post_sdp(&whip, None, &offer).await;
        expect("WHIP without Authorization", r.status, &[401]);
        let r = sfu.post_sdp(&whip, Some("not-a-jwt"), &offer).await;
        expect("WHIP with a garbage bearer token", r.status, &[401]);
        let forged = mint_token(
            "some-other-secret-0123456789abcdef",
            room,
            "teacher",
            "teacher-1",
        );
        let r = sfu.post_sdp(&whip, Some(&forged), &offer).await;
        expect(
            "WHIP with a token signed by another secret",
            r.status,
            &[401],
        );
        let wait = Duration::from_millis(2500).saturating_sub(started.elapsed());
        sleep(wait).await;
        let r = sfu.post_sdp(&whip, Some(&short_lived), &offer).await;
        expect("WHIP with an expired teacher token", r.status, &[401]);
        let other_room = sfu.token("another-room", "teacher", "teacher-1");
        let r = sfu.post_sdp(&whip, Some(&other_room), &offer).await;
        expect(
            "WHIP with a teacher token for another room",
            r.status,
            &[403],
        );
        let observer = sfu.token(room, "observer", "inspector-1");
        let r = sfu.post_sdp(&whip, Some(&observer), &offer).await;
        expect("WHIP with an observer token", r.status, &[403]);
        // malformed SDP, with the live teacher's own identity: must not tear the lesson down
        let r = sfu
            .post_sdp(&whip, Some(&teacher), "v=0\r\nthis is not an offer\r\n")
            .await;
        expect(
            "WHIP with malformed SDP (live teacher's token)",
            r.status,
            &[400],
        );
        let other_teacher = sfu.token(room, "teacher", "teacher-2");
        let r = sfu.post_sdp(&whip, Some(&other_teacher), "garbage").await;
        expect("WHIP with malformed SDP (other teacher)", r.status, &[400]);
        // a different teacher while teacher-1 is live: refused (409 in sfu/src), never a takeover
        let r = sfu.post_sdp(&whip, Some(&other_teacher), &offer).await;
        expect(
            "WHIP by a second teacher while one is live",
            r.status,
            &[409, 403],
        );
        if r.status == 201 {
            if let Some(l) = &r.location {
                sfu.delete(l, Some(&other_teacher)).await;
            }
        }
        // informational: WHEP without a token / for another room (contract not settled)
        let r = sfu.post_sdp(&format!("/whep/{room}"), None, &offer).await;
        eprintln!(
            "(info) WHEP without Authorization: {} {}",
            r.status,
            r.body.lines().next().unwrap_or("")
        );
        if r.status == 201 {
            if let Some(l) = &r.location {
                sfu.delete(l, None).await;
            }
        }

        // a classroom publishing on /whip: its own small feed (201) or refused (403), but it
        // must never replace the teacher's camera in the viewers' slots
        let classroom_tok = sfu.token(room, "classroom", "school-7");
        let mut small = PublisherOpts::single(VideoCodec::Vp8, 160, 120);
        small.layers[0].kbps = 100;
        let classroom = match Publisher::connect(&sfu, room, &classroom_tok, small).await {
            Ok(p) => {
                eprintln!("classroom WHIP publish accepted (its small feed)");
                Some(p)
            }
            Err(e) => {
                eprintln!("classroom WHIP publish refused: {e}");
                if !e.contains("answered 403") {
                    failures.push(format!("classroom WHIP publish: {e} (want 201 or 403)"));
                }
                None
            }
        };
        sleep(secs(5.0)).await;

        sfu.dump_room(room).await;
        assert!(
            failures.is_empty(),
            "status codes:\n{}",
            failures.join("\n")
        );
        assert_eq!(
            publisher.state.current(),
            webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState::Connected,
            "teacher's publisher connection went down: {:?}",
            publisher.state.states()
        );
        let cam = sub.slot(SLOT_CAMERA);
        let track = camera_track("viewer", &cam);
        assert_eq!(track.mime, "video/vp8");
        let rep = analyze(&cam.pkts, sub.connected_at);
        eprintln!("viewer camera: {}", rep.line());
        eprintln!("publisher: {}", publisher.stats.summary());
        check_camera("viewer", &rep, Duration::from_secs(6));
        assert!(
            rep.keyframes
                .iter()
                .all(|(_, k)| k.width == 640 && k.height == 360),
            "viewer's camera slot carried frames that are not the teacher's 640x360: {}",
            rep.line()
        );
        check_audio(
            "viewer",
            &sub.slot(SLOT_AUDIO),
            sub.connected_at,
            Duration::from_secs(6),
        );
        if let Some(c) = classroom {
            let st = c.leave(&sfu).await;
            eprintln!("classroom DELETE: {st}");
        }
        let st = sub.leave(&sfu).await;
        assert_eq!(st, 200, "viewer's WHEP DELETE");
        let st = publisher.leave(&sfu).await;
        assert_eq!(st, 200, "teacher's WHIP DELETE");
        sfu.finish().await;
    });
}

// -------------------------------------------------------------------------------------------
// e) keyframes on demand: PLI to the publisher when a viewer starts, throttled
// -------------------------------------------------------------------------------------------

#[test]
fn new_viewers_get_a_keyframe_via_pli() {
    run("pli", ROOM_LIMIT, async {
        let mut sfu = Sfu::start().await;
        let room = "lesson-pli";
        let teacher = sfu.token(room, "teacher", "teacher-1");
        let mut opts = PublisherOpts::vp8_simulcast();
        // only the very first frame of each layer is a keyframe unless the SFU asks
        opts.keyframe_interval = Duration::from_secs(3600);
        let publisher = must(Publisher::connect(&sfu, room, &teacher, opts).await);
        sleep(secs(3.0)).await;
        let before = publisher.stats.plis();

        // two viewers one after the other (high, low), then four at once on the high layer
        let mut subs = Vec::new();
        for (i, (name, q)) in [("default", ""), ("low", "?layer=low")].iter().enumerate() {
            let tok = sfu.token(room, "classroom", &format!("school-{i}"));
            subs.push((
                name.to_string(),
                must(Subscriber::connect(&sfu, room, &tok, q, &[VideoCodec::Vp8], name).await),
            ));
        }
        sleep(secs(2.0)).await;
        let burst: Vec<(String, String)> = (0..4)
            .map(|i| {
                (
                    format!("burst-{i}"),
                    sfu.token(room, "classroom", &format!("school-b{i}")),
                )
            })
            .collect();
        let joined =
            futures_join_all(burst.iter().map(|(name, tok)| {
                Subscriber::connect(&sfu, room, tok, "", &[VideoCodec::Vp8], name)
            }))
            .await;
        for ((name, _), sub) in burst.iter().zip(joined) {
            subs.push((name.clone(), must(sub)));
        }
        sleep(secs(6.0)).await;
        sfu.dump_room(room).await;
        let total = publisher.stats.plis();
        eprintln!(
            "publisher: {} (PLI/FIR before viewers: {before}, after: {total})",
            publisher.stats.summary()
        );
        for (name, sub) in &subs {
            let cam = sub.slot(SLOT_CAMERA);
            let _ = camera_track(name, &cam);
            let rep = analyze(&cam.pkts, sub.connected_at);
            eprintln!("{name} camera: {}", rep.line());
            let first = rep.first_key_after.unwrap_or_else(|| {
                panic!(
                    "{name}: no keyframe at all — the SFU did not ask the publisher for one (publisher: {})",
                    publisher.stats.summary()
                )
            });
            assert!(
                first <= KEYFRAME_DEADLINE,
                "{name}: first keyframe {:.2}s after connecting: {}",
                first.as_secs_f64(),
                rep.line()
            );
            assert!(
                rep.span >= Duration::from_secs(5) && rep.missing == 0 && rep.ssrcs.len() == 1,
                "{name}: unsteady stream: {}",
                rep.line()
            );
        }
        assert!(total > before, "the publisher never received a PLI/FIR");
        // throttled (sfu/README.md: one keyframe request per publisher layer per 500 ms at
        // most); 250 ms leaves room for RTCP that queued up on a loaded machine
        for l in &publisher.stats.layers {
            let spacing = l.min_request_spacing();
            eprintln!("layer {}: shortest PLI/FIR spacing {spacing:?}", l.rid);
            assert!(
                spacing.is_none_or(|d| d >= Duration::from_millis(250)),
                "layer {}: keyframe requests only {spacing:?} apart (throttle is 500 ms): {}",
                l.rid,
                publisher.stats.summary()
            );
        }
        let stray = publisher.stats.stray_requests.lock().unwrap().clone();
        assert!(
            stray.is_empty(),
            "the SFU asked for keyframes on the audio SSRC ({} PLI/FIR): {:?}",
            stray.len(),
            &stray[..stray.len().min(5)]
        );
        drop(subs);
        publisher.vanish().await;
        sfu.finish().await;
    });
}

// -------------------------------------------------------------------------------------------
// f) the classroom agent (GStreamer encoders, str0m) as the teacher
// -------------------------------------------------------------------------------------------

/// The agent's binary: `AGENT_BIN`, else `classroom-agent` beside this test's `sfu`, built on
/// demand (`cargo test --workspace` builds it for the agent's own tests).
fn agent_bin() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("AGENT_BIN") {
        return p.into();
    }
    let dir = std::path::Path::new(env!("CARGO_BIN_EXE_sfu"))
        .parent()
        .expect("target dir")
        .to_path_buf();
    let p = dir.join("classroom-agent");
    if !p.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = std::process::Command::new(cargo)
            .args(["build", "-p", "classroom-agent"])
            .status()
            .expect("run cargo build -p classroom-agent");
        assert!(st.success(), "cargo build -p classroom-agent failed");
    }
    p
}

/// The agent process: SIGTERM and its log's tail when dropped early (a failed assert).
struct Agent {
    child: Option<std::process::Child>,
    log: std::path::PathBuf,
}

impl Agent {
    /// Sends SIGTERM and waits up to 15 s for the exit status.
    async fn stop(&mut self) -> Option<std::process::ExitStatus> {
        terminate(self.child.take()?).await
    }

    fn tail(&self) -> String {
        tail(&self.log, 40)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- tail of agent log {} ---\n{}",
                self.log.display(),
                self.tail()
            );
        }
    }
}

/// Issue 5's first acceptance, Rust side: the classroom agent publishes as the teacher (its test
/// pattern and tone, 3-layer VP8 simulcast and Opus) and a webrtc-rs WHEP viewer gets its camera
/// and voice well-formed: a keyframe soon after connecting, no sequence gaps, the frame rate, the
/// layers' sizes in the VP8 keyframe headers, 50 Opus packets a second. (Decoding is checked by
/// the classroom agent's own playback, `classroom-agent/tests/lesson.rs`, and by Chromium,
/// `web/tests/agent.test.mjs`.)
#[test]
fn classroom_agent_reaches_a_webrtc_rs_viewer() {
    run("classroom_agent", ROOM_LIMIT, async {
        let mut sfu = Sfu::start().await;
        let room = "lesson-agent";
        let token = sfu.token(room, "teacher", "agent-teacher");
        let log = std::env::temp_dir().join(format!("sfu-test-agent-{}.log", std::process::id()));
        let out = std::fs::File::create(&log).expect("agent log");
        let child = std::process::Command::new(agent_bin())
            .args(["--sfu", &sfu.base, "--room", room, "--token", &token])
            .args(["--role", "teacher", "--video", "test", "--audio", "test"])
            .args(["--width", "640", "--height", "360", "--fps", "15"])
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start classroom-agent");
        let mut agent = Agent {
            child: Some(child),
            log,
        };

        // Publishing: the room shows the teacher's camera layers.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (st, body) = sfu.get(&format!("/api/rooms/{room}")).await;
            if st == 200 && body.contains("teacher_camera") && body.contains("\"connected\":true") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the agent is not publishing after 30 s: {st} {body}\n{}",
                agent.tail()
            );
            sleep(secs(0.25)).await;
        }

        let tok = sfu.token(room, "classroom", "school-1");
        let name = "agent-viewer";
        let sub = must(Subscriber::connect(&sfu, room, &tok, "", &[VideoCodec::Vp8], name).await);
        sleep(secs(8.0)).await;

        let cam = sub.slot(SLOT_CAMERA);
        let track = camera_track(name, &cam);
        assert_eq!(track.mime, "video/vp8", "{name}: camera codec {track:?}");
        let rep = analyze(&cam.pkts, sub.connected_at);
        eprintln!("{name} camera: {}", rep.line());
        check_camera(name, &rep, Duration::from_secs(5));
        // Every keyframe is one of the agent's layers: 640x360 and its halves.
        let sizes: Vec<(u16, u16)> = rep
            .keyframes
            .iter()
            .map(|(_, k)| (k.width, k.height))
            .collect();
        assert!(
            sizes
                .iter()
                .all(|s| [(640, 360), (320, 180), (160, 90)].contains(s)),
            "{name}: keyframe sizes {sizes:?}"
        );
        check_audio(
            name,
            &sub.slot(SLOT_AUDIO),
            sub.connected_at,
            Duration::from_secs(5),
        );

        let st = agent.stop().await;
        assert!(
            st.is_some_and(|s| s.success()),
            "the agent did not exit 0 on SIGTERM: {st:?}\n{}",
            agent.tail()
        );
        drop(sub);
        sfu.finish().await;
    });
}

/// `futures::future::join_all` without the dependency: runs the futures concurrently.
async fn futures_join_all<F, T>(futs: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T>,
{
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|v| v.expect("ready")).collect()
}
