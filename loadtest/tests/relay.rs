//! The relay on loopback: an echo server behind it, real sockets, real time. Tolerances are
//! generous because the machine is shared; the bounds that cannot be missed on any machine (a
//! packet never arrives before its delay) are tight.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use loadtest::link::{
    LinkConfig, Profiles, QueueLimit, Relay, RelayConfig, RelayHandle, UDP_IPV4_OVERHEAD,
};

/// A UDP echo server on 127.0.0.1; records the peers it saw.
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<SocketAddr>>>,
}

impl Echo {
    fn start() -> Echo {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            let mut peers = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    if !peers.contains(&from) {
                        peers.push(from);
                    }
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
            peers
        });
        Echo {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn peers(mut self) -> Vec<SocketAddr> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn client(relay: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(relay).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    socket
}

fn relay_with(target: SocketAddr, down: LinkConfig, up: LinkConfig) -> RelayHandle {
    let mut config = RelayConfig::new("127.0.0.1:0".parse().unwrap(), target).with_seed(3);
    config.downlink = down;
    config.uplink = up;
    Relay::start(config).unwrap()
}

/// Round-trip times of `n` pings 20 ms apart, in ms; missing replies are left out.
fn ping(socket: &UdpSocket, n: u32) -> Vec<f64> {
    let t0 = Instant::now();
    let mut rtts = Vec::new();
    let mut buf = [0u8; 64];
    for i in 0..n {
        let sent = Instant::now();
        let mut msg = i.to_be_bytes().to_vec();
        msg.extend_from_slice(&sent.duration_since(t0).as_nanos().to_be_bytes());
        socket.send(&msg).unwrap();
        let wait_until = sent + Duration::from_secs(2);
        while Instant::now() < wait_until {
            if let Ok(len) = socket.recv(&mut buf) {
                if len == msg.len() && buf[..4] == i.to_be_bytes() {
                    rtts.push(sent.elapsed().as_secs_f64() * 1000.0);
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    rtts
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn rtt_through_relay_matches_profile() {
    let echo = Echo::start();
    let spec = Profiles::builtin().get("rural-2m").unwrap().clone();
    let spec = loadtest::link::ProfileSpec {
        jitter_ms: 0,
        loss_pct: 0.0,
        ..spec
    };
    let relay = Relay::start(
        RelayConfig::new("127.0.0.1:0".parse().unwrap(), echo.addr)
            .with_profile(&spec)
            .unwrap(),
    )
    .unwrap();
    let socket = client(relay.local_addr());
    let rtts = ping(&socket, 20);
    assert_eq!(rtts.len(), 20, "no loss configured, every ping returns");
    let min = rtts.iter().cloned().fold(f64::MAX, f64::min);
    assert!(min >= 99.9, "a reply came back early: {min} ms");
    let med = median(rtts);
    eprintln!("RTT through a 100 ms relay: min {min:.2} ms, median {med:.2} ms");
    assert!(med < 140.0, "median RTT {med} ms for a 100 ms link");

    let stats = relay.stop();
    assert_eq!(stats.clients.len(), 1);
    let c = &stats.clients[0];
    assert_eq!(c.client, socket.local_addr().unwrap());
    assert_eq!(c.uplink.delivered_packets, 20);
    assert_eq!(c.downlink.delivered_packets, 20);
    assert_eq!(echo.peers(), vec![c.upstream]);
}

#[test]
fn downlink_rate_limits_throughput() {
    let echo = Echo::start();
    let rate = 1_000_000;
    let down = LinkConfig {
        rate_bps: Some(rate),
        queue: QueueLimit::Delay(Duration::from_millis(200)),
        ..LinkConfig::default()
    };
    let relay = relay_with(echo.addr, down, LinkConfig::default());
    let socket = client(relay.local_addr());
    socket
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();

    // Offer 2 Mbit/s of 1172-byte datagrams (1200 bytes counted) for 3 s, paced on an absolute
    // clock, and count what comes back between 0.5 s and 3 s.
    let size = 1200 - UDP_IPV4_OVERHEAD;
    let gap = Duration::from_secs_f64(1200.0 * 8.0 / (2.0 * rate as f64));
    let start = Instant::now();
    let (window_from, window_to) = (Duration::from_millis(500), Duration::from_millis(3000));
    let mut next_send = start;
    let mut received = 0usize;
    let mut buf = vec![0u8; 2048];
    while start.elapsed() < window_to {
        while Instant::now() >= next_send && next_send < start + window_to {
            socket.send(&vec![7u8; size]).unwrap();
            next_send += gap;
        }
        if let Ok(n) = socket.recv(&mut buf) {
            let at = start.elapsed();
            if at >= window_from && at < window_to {
                received += n + UDP_IPV4_OVERHEAD;
            }
        }
    }
    let bps = received as f64 * 8.0 / (window_to - window_from).as_secs_f64();
    eprintln!("throughput through a {rate} bit/s downlink: {bps:.0} bit/s");
    assert!(
        (bps / rate as f64 - 1.0).abs() < 0.15,
        "{bps:.0} bit/s through a {rate} bit/s downlink"
    );
    let stats = relay.stop();
    assert!(
        stats.downlink.dropped_queue_packets > 0,
        "twice the capacity must overflow the queue: {:?}",
        stats.downlink
    );
    assert_eq!(stats.uplink.dropped_queue_packets, 0);
}

#[test]
fn distinct_clients_get_distinct_upstream_peers() {
    let echo = Echo::start();
    let relay = relay_with(echo.addr, LinkConfig::default(), LinkConfig::default());
    let a = client(relay.local_addr());
    let b = client(relay.local_addr());
    assert_eq!(ping(&a, 3).len(), 3);
    assert_eq!(ping(&b, 3).len(), 3);
    let stats = relay.stats();
    assert_eq!(stats.clients.len(), 2);
    assert_ne!(stats.clients[0].upstream, stats.clients[1].upstream);
    assert_eq!(stats.uplink.delivered_packets, 6);
    drop(relay);
    assert_eq!(echo.peers().len(), 2);
}

#[test]
fn garbage_and_oversized_datagrams_are_relayed_not_fatal() {
    let echo = Echo::start();
    let relay = relay_with(echo.addr, LinkConfig::default(), LinkConfig::default());
    let socket = client(relay.local_addr());
    let big = vec![0xffu8; 65_507]; // the largest IPv4 UDP payload
    socket.send(&[]).unwrap();
    socket.send(&big).unwrap();
    socket.send(&[0x80, 0, 0, 0, 0xde, 0xad]).unwrap();
    let mut buf = vec![0u8; 65_536];
    let mut lens = Vec::new();
    while let Ok(n) = socket.recv(&mut buf) {
        lens.push(n);
        if lens.len() == 3 {
            break;
        }
    }
    lens.sort();
    assert_eq!(lens, vec![0, 6, 65_507]);
    // Still relaying afterwards.
    assert_eq!(ping(&socket, 2).len(), 2);
    let stats = relay.stop();
    assert_eq!(stats.uplink.delivered_bytes, 65_507 + 6 + 2 * 20);
}

#[test]
fn unreachable_target_is_survived() {
    // Bind and close a socket to get a port nobody listens on.
    let dead = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let relay = relay_with(dead, LinkConfig::default(), LinkConfig::default());
    let socket = client(relay.local_addr());
    for _ in 0..20 {
        socket.send(b"hello?").unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(100));
    let stats = relay.stats();
    assert_eq!(stats.uplink.sent_packets, 20);
    let stats = relay.stop();
    assert_eq!(stats.clients.len(), 1);
}

#[test]
fn link_relay_binary_prints_address_and_stops_on_sigterm() {
    let echo = Echo::start();
    let report = std::env::temp_dir().join(format!("link-relay-{}.json", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_link-relay"))
        .args(["--listen", "127.0.0.1:0", "--target"])
        .arg(echo.addr.to_string())
        .args([
            "--profile",
            "satellite",
            "--rtt-ms",
            "60",
            "--jitter-ms",
            "0",
        ])
        .args([
            "--loss-pct",
            "0",
            "--schedule",
            "30s:down=800",
            "--seed",
            "5",
        ])
        .arg("--report")
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line
        .trim()
        .parse()
        .expect("first stdout line is the address");
    assert_ne!(addr.port(), 0);

    let rtts = ping(&client(addr), 5);
    assert_eq!(rtts.len(), 5);
    assert!(rtts.iter().all(|r| *r >= 59.9), "{rtts:?}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "link-relay ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let _ = std::fs::remove_file(&report);
    assert_eq!(json["uplink"]["delivered_packets"], 5);
    assert_eq!(json["clients"].as_array().unwrap().len(), 1);
}

#[test]
fn link_relay_binary_rejects_bad_arguments() {
    for args in [
        &["--target", "127.0.0.1:9", "--profile", "moon-base"][..],
        &["--target", "127.0.0.1:9", "--schedule", "soon:down=1"][..],
        &["--target", "127.0.0.1:9", "--loss-pct", "150"][..],
        &["--target", "nowhere"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_link-relay"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(out.stdout.is_empty(), "{args:?} printed an address");
        assert!(!out.stderr.is_empty(), "{args:?} gave no reason");
    }
}

#[test]
fn a_routed_client_reaches_its_own_target() {
    let (default_target, own_target) = (Echo::start(), Echo::start());
    let relay = relay_with(
        default_target.addr,
        LinkConfig::default(),
        LinkConfig::default(),
    );
    let (a, b) = (client(relay.local_addr()), client(relay.local_addr()));
    assert!(relay.route(b.local_addr().unwrap(), own_target.addr));
    assert!(!ping(&a, 3).is_empty(), "the default target answers");
    assert!(!ping(&b, 3).is_empty(), "the routed target answers");
    let stats = relay.stop();
    let upstream = |s: &UdpSocket| stats.client(s.local_addr().unwrap()).unwrap().upstream;
    assert_eq!(default_target.peers(), vec![upstream(&a)]);
    assert_eq!(own_target.peers(), vec![upstream(&b)]);
}
