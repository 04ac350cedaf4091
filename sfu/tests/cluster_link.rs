//! Relay links between two nodes over QUIC on loopback: handshake, control, datagrams,
//! refusals that leave the listener working, dead peers noticed, and the added latency.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sfu::cluster::certs;
use sfu::cluster::link::{
    self, LinkError, NodeIdentity, RelayConn, RelayEndpoint, RelayTiming, RelayTls,
    CLOSE_BAD_PROOF, CLOSE_HELLO_TIMEOUT, CLOSE_PROTOCOL,
};
use sfu::cluster::wire::{self, Control, RelayPacket, TrackInfo};
use tokio::sync::mpsc;
use tokio::time::timeout;

const SECRET: &str = "the cluster secret";
const LONG: Duration = Duration::from_secs(20);

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "sfu-relay-{tag}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tls(dir: &Path, node: &str) -> RelayTls {
    RelayTls {
        cert: dir.join(format!("{node}.pem")),
        key: dir.join(format!("{node}.key")),
        ca: dir.join("ca.pem"),
    }
}

fn ident(id: &str, secret: &str) -> NodeIdentity {
    NodeIdentity {
        id: id.into(),
        region: format!("county-{id}"),
        secret: secret.into(),
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn timing() -> RelayTiming {
    RelayTiming {
        hello_timeout: Duration::from_secs(1),
        ..RelayTiming::default()
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn packet(stream: u32, seq: u64, size: usize) -> RelayPacket {
    RelayPacket {
        stream,
        seq,
        ts: (seq as u32).wrapping_mul(3000),
        pt: 96,
        marker: seq.is_multiple_of(10),
        audio_level: None,
        voice_activity: None,
        video_orientation: Some(0),
        received_us: now_us(),
        repair: false,
        payload: bytes::Bytes::from(vec![(seq % 251) as u8; size]),
    }
}

/// Accepts forever: each welcomed connection gets an echo of its datagrams and control
/// messages; every accept result is reported to the test.
fn serve_echo(ep: Arc<RelayEndpoint>) -> mpsc::UnboundedReceiver<Result<String, String>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(r) = ep.accept().await {
            match r {
                Ok(conn) => {
                    let _ = tx.send(Ok(conn.peer().to_string()));
                    echo(conn);
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                }
            }
        }
    });
    rx
}

fn echo(conn: RelayConn) {
    let c = conn.clone();
    tokio::spawn(async move {
        while let Ok(p) = c.recv_packet().await {
            let _ = c.send_packet(&p);
        }
    });
    tokio::spawn(async move {
        while let Ok(m) = conn.recv_control().await {
            if conn.send_control(&m).await.is_err() {
                break;
            }
        }
    });
}

/// Sends `n` datagrams over `conn` at a steady pace and counts the echoes.
async fn round_trip(conn: &RelayConn, n: u64) -> u64 {
    let reader = conn.clone();
    let counter = tokio::spawn(async move {
        let mut got = 0u64;
        while let Ok(Ok(p)) = timeout(Duration::from_secs(3), reader.recv_packet()).await {
            assert_eq!(p.payload.len(), 900);
            assert_eq!(p.payload[0], (p.seq % 251) as u8);
            got += 1;
            if got == n {
                break;
            }
        }
        got
    });
    for seq in 0..n {
        conn.send_packet(&packet(1, seq, 900)).unwrap();
        if seq % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    counter.await.unwrap()
}

/// Certificates for "origin" and "edge" in a fresh folder, and an endpoint for each on loopback.
fn endpoints(tag: &str) -> (TempDir, RelayEndpoint, RelayEndpoint) {
    let dir = TempDir::new(tag);
    certs::generate(&dir.0, &["origin", "edge"]).unwrap();
    let origin =
        RelayEndpoint::bind(loopback(), &tls(&dir.0, "origin"), ident("origin", SECRET)).unwrap();
    let edge =
        RelayEndpoint::bind(loopback(), &tls(&dir.0, "edge"), ident("edge", SECRET)).unwrap();
    (dir, origin, edge)
}

/// The edge dials `addr` (the origin, or a proxy in front of it): both ends of the link.
async fn link(
    origin: &RelayEndpoint,
    edge: &RelayEndpoint,
    addr: SocketAddr,
) -> (RelayConn, RelayConn) {
    let (accepted, conn) = tokio::join!(
        timeout(LONG, origin.accept()),
        timeout(LONG, edge.connect(addr))
    );
    (accepted.unwrap().unwrap().unwrap(), conn.unwrap().unwrap())
}

#[tokio::test]
async fn hello_control_and_datagrams_round_trip() {
    let (_dir, origin, edge) = endpoints("ok");

    let (at_origin, at_edge) = link(&origin, &edge, origin.local_addr()).await;
    assert_eq!(at_origin.peer(), "edge");
    assert_eq!(at_origin.peer_region(), "county-edge");
    assert_eq!(at_edge.peer(), "origin");
    assert_eq!(at_edge.peer_region(), "county-origin");
    assert_eq!(at_edge.remote_addr(), origin.local_addr());
    // from the first packet on, a browser's full-size RTP payload fits a datagram
    let first_max = at_edge.max_payload().unwrap();
    println!("largest relayed payload at connect: {first_max} bytes");
    assert!(first_max >= 1250, "{first_max}");

    // control both ways
    let sub = Control::Subscribe {
        room: "math".into(),
    };
    at_edge.send_control(&sub).await.unwrap();
    assert_eq!(
        timeout(LONG, at_origin.recv_control())
            .await
            .unwrap()
            .unwrap(),
        sub
    );
    let tracks = Control::Tracks {
        room: "math".into(),
        tracks: vec![TrackInfo {
            stream: 1,
            track: "teacher_camera".into(),
            owner: "teacher".into(),
            layer: 0,
            layers: 3,
            rid: Some("q".into()),
            pt: 96,
            codec: "VP8".into(),
            clock_rate: 90_000,
            channels: None,
            fmtp: String::new(),
        }],
    };
    at_origin.send_control(&tracks).await.unwrap();
    assert_eq!(
        timeout(LONG, at_edge.recv_control())
            .await
            .unwrap()
            .unwrap(),
        tracks
    );

    // 1000 datagrams edge → origin → edge
    echo(at_origin.clone());
    let got = round_trip(&at_edge, 1000).await;
    assert!(
        got >= 990,
        "only {got} of 1000 datagrams came back on loopback"
    );

    let s = at_edge.stats();
    assert_eq!(s.sent_datagrams, 1000);
    assert_eq!(s.received_datagrams, got);
    assert!(s.sent_bytes >= 1000 * 900);
    assert!(
        s.rtt > Duration::ZERO && s.rtt < Duration::from_secs(1),
        "rtt {:?}",
        s.rtt
    );
    assert_eq!(s.malformed_datagrams, 0);
    let o = at_origin.stats();
    assert!(o.received_datagrams >= got && o.received_datagrams <= 1000);
    assert!(at_edge.max_payload().unwrap() >= 1000);

    // malformed datagrams from a peer are counted and skipped, the next good one arrives
    for junk in [&b""[..], b"\x00garbage", &[0xC1; 40]] {
        at_edge
            .quic()
            .send_datagram(bytes::Bytes::copy_from_slice(junk))
            .unwrap();
    }
    let probe = Control::Demand {
        room: "math".into(),
        streams: vec![1],
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    at_edge.send_packet(&packet(1, 4242, 900)).unwrap();
    let back = timeout(LONG, at_edge.recv_packet()).await.unwrap().unwrap();
    assert_eq!(back.seq, 4242);
    assert_eq!(at_origin.stats().malformed_datagrams, 3);
    at_edge.send_control(&probe).await.unwrap();
    assert_eq!(
        timeout(LONG, at_edge.recv_control())
            .await
            .unwrap()
            .unwrap(),
        probe
    );

    // too big for a datagram: refused and counted, the link goes on
    let big = packet(1, 5000, 4000);
    assert!(matches!(
        at_edge.send_packet(&big),
        Err(LinkError::DatagramTooBig { .. })
    ));
    assert_eq!(at_edge.stats().dropped_datagrams, 1);

    // a clean close is seen by the other side with its reason
    at_edge.close("lesson over");
    let e = timeout(LONG, at_origin.closed()).await.unwrap();
    assert!(
        matches!(&e, LinkError::PeerClosed { code: 0, reason } if reason == "lesson over"),
        "{e:?}"
    );
    assert!(at_origin.recv_control().await.is_err());
    origin.close();
    edge.close();
}

/// A raw QUIC client with a valid certificate, to misbehave after TLS.
async fn raw_client(
    dir: &Path,
    node: &str,
    server: SocketAddr,
) -> (quinn::Endpoint, quinn::Connection) {
    let loaded = tls(dir, node).load().unwrap();
    let cfg = link::quic_client_config(&loaded, &RelayTiming::default()).unwrap();
    let ep = quinn::Endpoint::client(loopback()).unwrap();
    let conn = timeout(
        LONG,
        ep.connect_with(cfg, server, link::SERVER_NAME).unwrap(),
    )
    .await
    .unwrap()
    .unwrap();
    (ep, conn)
}

fn app_code(e: &quinn::ConnectionError) -> Option<u64> {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => Some(c.error_code.into_inner()),
        _ => None,
    }
}

#[tokio::test]
async fn bad_peers_are_refused_and_the_listener_keeps_serving() {
    let dir = TempDir::new("refuse");
    certs::generate(&dir.0, &["origin", "edge", "intruder"]).unwrap();
    let other = TempDir::new("other-ca");
    certs::generate(&other.0, &["edge"]).unwrap();

    let origin = Arc::new(
        RelayEndpoint::bind_with(
            loopback(),
            &tls(&dir.0, "origin"),
            ident("origin", SECRET),
            timing(),
        )
        .unwrap(),
    );
    let addr = origin.local_addr();
    let mut accepted = serve_echo(origin.clone());

    // A lesson in progress, which none of what follows may disturb.
    let good =
        RelayEndpoint::bind(loopback(), &tls(&dir.0, "edge"), ident("edge", SECRET)).unwrap();
    let lesson = timeout(LONG, good.connect(addr)).await.unwrap().unwrap();
    assert_eq!(
        timeout(LONG, accepted.recv()).await.unwrap(),
        Some(Ok("edge".into()))
    );

    // 1. wrong cluster secret
    let liar = RelayEndpoint::bind(
        loopback(),
        &tls(&dir.0, "intruder"),
        ident("intruder", "guess"),
    )
    .unwrap();
    let e = timeout(LONG, liar.connect(addr))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&e, LinkError::PeerClosed { code, reason } if *code == CLOSE_BAD_PROOF as u64 && reason.contains("secret")),
        "{e:?}"
    );
    let r = timeout(LONG, accepted.recv()).await.unwrap().unwrap();
    assert!(
        matches!(&r, Err(m) if m.contains("wrong cluster secret")),
        "{r:?}"
    );

    // 2. a certificate from another CA
    let foreign_tls = RelayTls {
        ca: dir.0.join("ca.pem"),
        ..tls(&other.0, "edge")
    };
    let foreign = RelayEndpoint::bind(loopback(), &foreign_tls, ident("edge", SECRET)).unwrap();
    let e = timeout(LONG, foreign.connect(addr)).await.unwrap();
    assert!(e.is_err(), "a foreign certificate was let in");
    let r = timeout(LONG, accepted.recv()).await.unwrap().unwrap();
    assert!(r.is_err(), "{r:?}");

    // and a server with a foreign certificate is refused by a client of the cluster
    let fake_origin = RelayEndpoint::bind(loopback(), &foreign_tls, ident("fake", SECRET)).unwrap();
    let e = timeout(LONG, good.connect(fake_origin.local_addr()))
        .await
        .unwrap();
    assert!(e.is_err(), "connected to a server outside the cluster");

    // 3. garbage datagrams on the relay port
    let junk = std::net::UdpSocket::bind(loopback()).unwrap();
    for i in 0..300usize {
        let len = 1 + (i * 37) % 1400;
        let bytes: Vec<u8> = (0..len).map(|j| (i * 31 + j * 7) as u8).collect();
        junk.send_to(&bytes, addr).unwrap();
    }

    // 4. TLS but never a Hello: dropped after the hello timeout
    let (_ep, silent) = raw_client(&dir.0, "intruder", addr).await;
    let t0 = Instant::now();
    let e = timeout(LONG, silent.closed()).await.unwrap();
    assert_eq!(app_code(&e), Some(CLOSE_HELLO_TIMEOUT as u64), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(10));
    let r = timeout(LONG, accepted.recv()).await.unwrap().unwrap();
    assert!(matches!(&r, Err(m) if m.contains("no Hello")), "{r:?}");

    // 5. an oversized control frame
    let (_ep2, huge) = raw_client(&dir.0, "intruder", addr).await;
    let (mut send, _recv) = huge.open_bi().await.unwrap();
    let mut frame = (64u32 << 20).to_be_bytes().to_vec();
    frame.extend_from_slice(&[b'{'; 4096]);
    send.write_all(&frame).await.unwrap();
    let e = timeout(LONG, huge.closed()).await.unwrap();
    assert_eq!(app_code(&e), Some(CLOSE_PROTOCOL as u64), "{e:?}");
    let r = timeout(LONG, accepted.recv()).await.unwrap().unwrap();
    assert!(matches!(&r, Err(m) if m.contains("exceeds")), "{r:?}");

    // 6. Hello with garbage instead of JSON
    let (_ep3, bad_json) = raw_client(&dir.0, "intruder", addr).await;
    let (mut send, _recv) = bad_json.open_bi().await.unwrap();
    let mut frame = 8u32.to_be_bytes().to_vec();
    frame.extend_from_slice(b"not json");
    send.write_all(&frame).await.unwrap();
    let e = timeout(LONG, bad_json.closed()).await.unwrap();
    assert_eq!(app_code(&e), Some(CLOSE_PROTOCOL as u64), "{e:?}");
    assert!(timeout(LONG, accepted.recv())
        .await
        .unwrap()
        .unwrap()
        .is_err());

    // The lesson went on: control and datagrams still flow on the first connection...
    let ping = Control::Keyframe {
        room: "math".into(),
        stream: 3,
    };
    lesson.send_control(&ping).await.unwrap();
    assert_eq!(
        timeout(LONG, lesson.recv_control()).await.unwrap().unwrap(),
        ping
    );
    let got = round_trip(&lesson, 200).await;
    assert!(got >= 190, "{got} of 200 after the attacks");
    // ... and a new good node is still welcomed.
    let late =
        RelayEndpoint::bind(loopback(), &tls(&dir.0, "intruder"), ident("late", SECRET)).unwrap();
    let c = timeout(LONG, late.connect(addr)).await.unwrap().unwrap();
    assert_eq!(c.peer(), "origin");
    assert_eq!(
        timeout(LONG, accepted.recv()).await.unwrap(),
        Some(Ok("late".into()))
    );
    origin.close();
}

/// Forwards UDP between a client and `server` until told to stop: then the path goes silent,
/// as when a node is killed or the network partitions.
async fn silenceable_proxy(server: SocketAddr) -> (SocketAddr, Arc<AtomicBool>) {
    let sock = Arc::new(tokio::net::UdpSocket::bind(loopback()).await.unwrap());
    let addr = sock.local_addr().unwrap();
    let cut = Arc::new(AtomicBool::new(false));
    let c = cut.clone();
    tokio::spawn(async move {
        let mut client: Option<SocketAddr> = None;
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            if c.load(Ordering::Relaxed) {
                continue;
            }
            let to = if from == server {
                match client {
                    Some(a) => a,
                    None => continue,
                }
            } else {
                client = Some(from);
                server
            };
            let _ = sock.send_to(&buf[..n], to).await;
        }
    });
    (addr, cut)
}

#[tokio::test]
async fn a_silent_peer_is_noticed_within_seconds() {
    let (_dir, origin, edge) = endpoints("dead");
    let (proxy, cut) = silenceable_proxy(origin.local_addr()).await;

    let (at_origin, at_edge) = link(&origin, &edge, proxy).await;
    // idle for a while: keep-alives hold the link up
    tokio::time::sleep(Duration::from_secs(3)).await;
    at_edge
        .send_control(&Control::Subscribe { room: "r".into() })
        .await
        .unwrap();
    assert!(timeout(LONG, at_origin.recv_control())
        .await
        .unwrap()
        .is_ok());

    cut.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let edge_reader = at_edge.clone();
    let (a, b, c) = tokio::join!(
        timeout(LONG, at_origin.recv_packet()),
        timeout(LONG, edge_reader.recv_control()),
        timeout(LONG, at_edge.closed())
    );
    let noticed = t0.elapsed();
    assert!(matches!(a.unwrap(), Err(LinkError::TimedOut)));
    assert!(matches!(b.unwrap(), Err(LinkError::TimedOut)));
    assert!(matches!(c.unwrap(), LinkError::TimedOut));
    println!("silent peer noticed after {noticed:?} (idle timeout 1.5 s)");
    assert!(noticed < Duration::from_secs(5), "took {noticed:?}");
}

#[tokio::test]
async fn one_way_added_latency_on_loopback() {
    let (_dir, origin, edge) = endpoints("latency");
    let (at_origin, at_edge) = link(&origin, &edge, origin.local_addr()).await;

    const N: u64 = 3000;
    let recv = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(N as usize);
        while let Ok(Ok(p)) = timeout(Duration::from_secs(3), at_edge.recv_packet()).await {
            lat.push(now_us().saturating_sub(p.received_us));
            if lat.len() as u64 == N {
                break;
            }
        }
        lat
    });
    // ~300 packets/s, a mix of video-sized and audio-sized packets
    let mut tick = tokio::time::interval(Duration::from_micros(3333));
    for seq in 0..N {
        tick.tick().await;
        let size = if seq.is_multiple_of(3) { 160 } else { 1100 };
        at_origin.send_packet(&packet(1, seq, size)).unwrap();
    }
    let mut lat = recv.await.unwrap();
    assert!(
        lat.len() as u64 >= N * 99 / 100,
        "{} of {N} arrived",
        lat.len()
    );
    lat.sort_unstable();
    let pct = |p: usize| lat[(lat.len() - 1) * p / 100];
    println!(
        "relay hop one-way latency over {} packets at ~300 pps (debug build): p50 {} us, p99 {} us, max {} us",
        lat.len(),
        pct(50),
        pct(99),
        lat[lat.len() - 1]
    );
    // Loose: a loaded 2-core CI machine. The real figure is printed (and in the bench).
    assert!(pct(50) < 50_000, "p50 {} us", pct(50));
}

#[tokio::test]
async fn a_peer_that_breaks_framing_after_welcome_is_cut_off() {
    let dir = TempDir::new("framing");
    certs::generate(&dir.0, &["origin", "edge"]).unwrap();
    let origin =
        RelayEndpoint::bind(loopback(), &tls(&dir.0, "origin"), ident("origin", SECRET)).unwrap();
    let addr = origin.local_addr();

    // A hand-made client that says a correct Hello, then sends an oversized frame.
    let (_ep, raw) = raw_client(&dir.0, "edge", addr).await;
    let (mut send, mut recv) = raw.open_bi().await.unwrap();
    let hello = link::hello(&raw, &ident("edge", SECRET)).unwrap();
    send.write_all(&wire::encode_frame(&hello).unwrap())
        .await
        .unwrap();
    let at_origin = timeout(LONG, origin.accept())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(at_origin.peer(), "edge");
    let mut buf = vec![0u8; 4096];
    let mut reader = wire::FrameReader::new();
    let welcome = loop {
        if let Some(c) = reader.pop().unwrap() {
            break c;
        }
        let n = timeout(LONG, recv.read(&mut buf))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        reader.push(&buf[..n]);
    };
    assert!(
        matches!(welcome, Control::Welcome { ref node, .. } if node == "origin"),
        "{welcome:?}"
    );

    // a valid message first, then a frame announcing 2 MiB
    let sub = Control::Subscribe {
        room: "math".into(),
    };
    send.write_all(&wire::encode_frame(&sub).unwrap())
        .await
        .unwrap();
    send.write_all(&(2u32 << 20).to_be_bytes()).await.unwrap();
    assert_eq!(
        timeout(LONG, at_origin.recv_control())
            .await
            .unwrap()
            .unwrap(),
        sub
    );
    let e = timeout(LONG, at_origin.recv_control())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(e, LinkError::Wire(wire::WireError::FrameTooLarge { .. })),
        "{e:?}"
    );
    let closed = timeout(LONG, raw.closed()).await.unwrap();
    assert_eq!(app_code(&closed), Some(CLOSE_PROTOCOL as u64), "{closed:?}");
    assert!(at_origin.send_control(&sub).await.is_err());
}

#[tokio::test]
async fn connecting_to_a_dead_address_fails_fast() {
    let dir = TempDir::new("nobody");
    certs::generate(&dir.0, &["edge"]).unwrap();
    let edge =
        RelayEndpoint::bind(loopback(), &tls(&dir.0, "edge"), ident("edge", SECRET)).unwrap();
    // a bound UDP port that never answers
    let hole = std::net::UdpSocket::bind(loopback()).unwrap();
    let t0 = Instant::now();
    let e = timeout(LONG, edge.connect(hole.local_addr().unwrap()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, LinkError::TimedOut), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn closing_an_endpoint_tells_its_peers_and_ends_accept() {
    let (dir, origin, edge) = endpoints("shutdown");
    let (_at_origin, at_edge) = link(&origin, &edge, origin.local_addr()).await;

    origin.close();
    let e = timeout(LONG, at_edge.recv_control())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&e, LinkError::PeerClosed { code: 0, reason } if reason.contains("shutting down")),
        "{e:?}"
    );
    assert!(timeout(LONG, origin.accept()).await.unwrap().is_none());
    timeout(LONG, origin.wait_idle()).await.unwrap();
    assert!(edge.connect(origin.local_addr()).await.is_err());

    // the port still held by the edge cannot be bound twice, and the error says which
    let taken = edge.local_addr();
    let e = RelayEndpoint::bind(taken, &tls(&dir.0, "origin"), ident("again", SECRET))
        .err()
        .unwrap();
    assert!(e.to_string().contains(&taken.to_string()), "{e}");
}
