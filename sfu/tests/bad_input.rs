//! Bad input never crashes the SFU or disturbs other sessions: malformed requests get a clear
//! 4xx, garbage on the media port (UDP and ICE-TCP) is dropped, and SIGTERM exits cleanly.

mod common;

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use common::{run, secs, Sfu};

/// A hand-written WHEP offer (recvonly audio + video), as a browser would send.
fn whep_offer() -> String {
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=msid-semantic: WMS",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:abcdefghijklmnopqrstuvwx",
        "a=ice-options:trickle",
        "a=fingerprint:sha-256 0F:74:31:25:CB:A2:13:EC:28:6F:6D:2C:61:FF:5D:C2:BC:B9:DB:3D:98:14:8D:1A:BB:EA:33:0C:A4:60:A8:8E",
        "a=setup:actpass",
        "a=mid:0",
        "a=recvonly",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:abcdefghijklmnopqrstuvwx",
        "a=ice-options:trickle",
        "a=fingerprint:sha-256 0F:74:31:25:CB:A2:13:EC:28:6F:6D:2C:61:FF:5D:C2:BC:B9:DB:3D:98:14:8D:1A:BB:EA:33:0C:A4:60:A8:8E",
        "a=setup:actpass",
        "a=mid:1",
        "a=recvonly",
        "a=rtcp-mux",
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:96 nack",
        "a=rtcp-fb:96 nack pli",
        "",
    ]
    .join("\r\n")
}

async fn post_raw(
    sfu: &Sfu,
    path: &str,
    token: Option<&str>,
    ctype: &str,
    body: Vec<u8>,
) -> (u16, String) {
    // A fresh connection per request: the server closes one whose body it refused unread
    // (413), and a pooled client could otherwise send the next request into that close.
    let mut req = sfu
        .client
        .post(sfu.url(path))
        .header("content-type", ctype)
        .header("connection", "close")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

#[test]
fn malformed_requests_get_clear_errors() {
    run("malformed_requests_get_clear_errors", secs(120.0), async {
        let sfu = Sfu::start().await;
        let viewer = sfu.token("r1", "classroom", "point-1");
        let sdp = "application/sdp";

        // Not SDP at all.
        let (st, body) = post_raw(&sfu, "/whep/r1", Some(&viewer), sdp, b"hello".to_vec()).await;
        assert_eq!(st, 400, "{body}");
        assert!(body.contains("\"error\""), "JSON error body: {body}");
        // Not UTF-8.
        let (st, _) = post_raw(&sfu, "/whep/r1", Some(&viewer), sdp, vec![0xff, 0xfe, 0x00]).await;
        assert_eq!(st, 400);
        // Wrong content type.
        let (st, _) = post_raw(
            &sfu,
            "/whep/r1",
            Some(&viewer),
            "text/plain",
            whep_offer().into_bytes(),
        )
        .await;
        assert_eq!(st, 415);
        // Oversized body.
        let (st, _) = post_raw(&sfu, "/whep/r1", Some(&viewer), sdp, vec![b'a'; 200 * 1024]).await;
        assert_eq!(st, 413);
        // Unknown layer name and bad room name.
        let (st, _) = post_raw(
            &sfu,
            "/whep/r1?layer=ultra",
            Some(&viewer),
            sdp,
            whep_offer().into_bytes(),
        )
        .await;
        assert_eq!(st, 400);
        let bad_room_token = sfu.token("a b", "classroom", "x");
        let (st, _) = post_raw(
            &sfu,
            "/whep/a%20b",
            Some(&bad_room_token),
            sdp,
            whep_offer().into_bytes(),
        )
        .await;
        assert_eq!(st, 400);
        // Only codecs we do not forward.
        let pcmu_only = whep_offer()
            .replace("a=rtpmap:111 opus/48000/2", "a=rtpmap:0 PCMU/8000")
            .replace("SAVPF 111", "SAVPF 0")
            .replace("a=fmtp:111 minptime=10;useinbandfec=1\r\n", "")
            .replace("a=rtpmap:96 VP8/90000", "a=rtpmap:96 H263/90000");
        let (st, body) =
            post_raw(&sfu, "/whep/r1", Some(&viewer), sdp, pcmu_only.into_bytes()).await;
        assert!(st == 422 || st == 400, "unsupported codecs: {st} {body}");

        // A valid offer still works after all that.
        let ok = sfu.post_sdp("/whep/r1", Some(&viewer), &whep_offer()).await;
        assert_eq!(ok.status, 201, "{}", ok.body);
        let location = ok.location.clone().expect("Location");
        let location = if location.starts_with("http") {
            location
        } else {
            sfu.url(&location)
        };
        let etag = ok.etag.clone().expect("ETag");
        assert!(ok.body.contains("a=ice-lite"), "ICE-lite answer");
        assert!(
            ok.body.contains("a=candidate"),
            "answer carries our candidates"
        );

        // PATCH: wrong ETag → 412, unknown session → 404, trickle → 204, restart → 200 + new ETag.
        let frag = "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host\r\n";
        let patch = |url: String, if_match: Option<String>, body: String| {
            let mut req = sfu
                .client
                .patch(url)
                .bearer_auth(&viewer)
                .header("content-type", "application/trickle-ice-sdpfrag")
                .body(body);
            if let Some(m) = if_match {
                req = req.header("if-match", m);
            }
            req.send()
        };
        let r = patch(location.clone(), Some("\"nope\"".into()), frag.into())
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 412);
        let r = patch(sfu.url("/whep/r1/0000"), None, frag.into())
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404);
        let r = patch(location.clone(), Some(etag.clone()), frag.into())
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
        let restart = "a=ice-ufrag:efgh\r\na=ice-pwd:zyxwvutsrqponmlkjihgfedc\r\n";
        let r = patch(location.clone(), Some(etag.clone()), restart.into())
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let new_etag = r
            .headers()
            .get("etag")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert_ne!(new_etag, etag);
        let text = r.text().await.unwrap();
        assert!(text.contains("a=ice-ufrag:"), "{text}");
        // The old ETag no longer matches.
        let r = patch(location.clone(), Some(etag), frag.into())
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 412);

        // DELETE needs a token; another classroom may not end this one's session.
        assert_eq!(sfu.delete(&location, None).await, 401);
        let other = sfu.token("r1", "classroom", "point-2");
        assert_eq!(sfu.delete(&location, Some(&other)).await, 403);
        assert_eq!(sfu.delete(&location, Some(&viewer)).await, 200);
        assert_eq!(sfu.delete(&location, Some(&viewer)).await, 404);
    });
}

#[test]
fn garbage_on_the_media_port_is_dropped() {
    run("garbage_on_the_media_port_is_dropped", secs(120.0), async {
        let mut sfu = Sfu::start().await;
        let viewer = sfu.token("r2", "classroom", "point-1");
        let ok = sfu.post_sdp("/whep/r2", Some(&viewer), &whep_offer()).await;
        assert_eq!(ok.status, 201, "{}", ok.body);
        let port = sfu.media_port;

        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = ("127.0.0.1", port);
        // Random bytes of every size, fake RTP, fake DTLS, STUN with a known ufrag but no
        // valid integrity, STUN with a lying length.
        let mut seed = 0x1234_5678u32;
        for n in 0..400usize {
            let len = n % 1400;
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            let _ = udp.send_to(&buf, target);
        }
        let mut rtp = vec![0x80, 96, 0, 1, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
        rtp.extend_from_slice(&[0u8; 100]);
        let _ = udp.send_to(&rtp, target);
        let _ = udp.send_to(
            &[22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3],
            target,
        );
        let ufrag = ok
            .body
            .lines()
            .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
            .unwrap()
            .trim()
            .to_string();
        let user = format!("{ufrag}:abcd");
        let mut stun = vec![0x00, 0x01];
        let attr_len = user.len().div_ceil(4) * 4;
        stun.extend_from_slice(&((4 + attr_len) as u16).to_be_bytes());
        stun.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        stun.extend_from_slice(&[9; 12]);
        stun.extend_from_slice(&[0x00, 0x06]);
        stun.extend_from_slice(&(user.len() as u16).to_be_bytes());
        stun.extend_from_slice(user.as_bytes());
        stun.resize(20 + 4 + attr_len, 0);
        for _ in 0..50 {
            let _ = udp.send_to(&stun, target);
        }
        let mut lying = stun.clone();
        lying[2] = 0xff;
        let _ = udp.send_to(&lying, target);

        // ICE-TCP: garbage, an oversized frame, and connections that never speak.
        for payload in [
            vec![0xffu8, 0xff, 1, 2, 3],
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            vec![0, 4, 1, 2, 3, 4],
        ] {
            if let Ok(mut s) = TcpStream::connect(target) {
                let _ = s.write_all(&payload);
            }
        }
        let idle: Vec<TcpStream> = (0..20)
            .filter_map(|_| TcpStream::connect(target).ok())
            .collect();

        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(sfu.is_running(), "the SFU survived");
        let (st, _) = sfu.get("/healthz").await;
        assert_eq!(st, 200);
        let (_, metrics) = sfu.get("/metrics").await;
        let dropped: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("sfu_dropped_datagrams_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(
            dropped >= 100.0,
            "garbage counted as dropped: {dropped}\n{metrics}"
        );
        // The session and the API still work; a new session can be made.
        let (st, room) = sfu.get("/api/rooms/r2").await;
        assert_eq!(st, 200, "{room}");
        assert!(room.contains("point-1"));
        let again = sfu.post_sdp("/whep/r2", Some(&viewer), &whep_offer()).await;
        assert_eq!(again.status, 201);
        drop(idle);
        let status = sfu.shutdown().await.expect("exits on SIGTERM");
        assert!(status.success(), "clean exit: {status:?}");
    });
}

#[test]
fn ipv6_and_ipv4_candidates_on_one_port() {
    run("ipv6_and_ipv4_candidates_on_one_port", secs(60.0), async {
        let sfu = Sfu::start_with(&["--media-bind", "127.0.0.1", "--media-bind", "::1"]).await;
        let viewer = sfu.token("r6", "classroom", "point-6");
        let ok = sfu.post_sdp("/whep/r6", Some(&viewer), &whep_offer()).await;
        assert_eq!(ok.status, 201, "{}", ok.body);
        let port = sfu.media_port.to_string();
        let cands: Vec<&str> = ok
            .body
            .lines()
            .filter(|l| l.starts_with("a=candidate"))
            .collect();
        let has = |ip: &str, proto: &str| {
            cands
                .iter()
                .any(|c| c.contains(&format!(" {ip} {port} ")) && c.to_lowercase().contains(proto))
        };
        assert!(has("127.0.0.1", "udp"), "{cands:?}");
        assert!(has("::1", "udp"), "{cands:?}");
        assert!(
            has("::1", "tcp") && cands.iter().any(|c| c.contains("tcptype passive")),
            "{cands:?}"
        );
    });
}

#[test]
fn sessions_that_never_connect_are_dropped() {
    run(
        "sessions_that_never_connect_are_dropped",
        secs(60.0),
        async {
            let cfg = std::env::temp_dir()
                .join(format!("sfu-connect-timeout-{}.toml", std::process::id()));
            std::fs::write(&cfg, "connect_timeout_ms = 1000\n").unwrap();
            let sfu = Sfu::start_with(&["--config", cfg.to_str().unwrap()]).await;
            let viewer = sfu.token("r7", "classroom", "point-7");
            let ok = sfu.post_sdp("/whep/r7", Some(&viewer), &whep_offer()).await;
            assert_eq!(ok.status, 201, "{}", ok.body);
            let (st, _) = sfu.get("/api/rooms/r7").await;
            assert_eq!(st, 200);
            // No ICE ever arrives: the session and its room go away by themselves.
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let (st, body) = sfu.get("/api/rooms/r7").await;
                if st == 404 {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "session leaked: {body}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let _ = std::fs::remove_file(&cfg);
        },
    );
}
