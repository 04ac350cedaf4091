//! Added one-way latency of one relay hop (QUIC datagram, origin → edge) on loopback: the time
//! from stamping `received_us` at the origin to the edge holding the decoded `RelayPacket`,
//! which is what a relay adds beyond the network itself. Two rates: a lesson's ~300 packets/s,
//! and ten times that.
//! Run: `cargo bench -p sfu --bench relay_hop`.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sfu::cluster::certs;
use sfu::cluster::link::{NodeIdentity, RelayConn, RelayEndpoint, RelayTls};
use sfu::cluster::wire::RelayPacket;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn node(dir: &std::path::Path, id: &str) -> (RelayTls, NodeIdentity) {
    (
        RelayTls {
            cert: dir.join(format!("{id}.pem")),
            key: dir.join(format!("{id}.key")),
            ca: dir.join("ca.pem"),
        },
        NodeIdentity {
            id: id.into(),
            region: "bench".into(),
            secret: "bench secret".into(),
        },
    )
}

async fn run(origin: &RelayConn, edge: &RelayConn, pps: u64, n: u64) {
    let rx = edge.clone();
    let recv = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(n as usize);
        while let Ok(Ok(p)) = tokio::time::timeout(Duration::from_secs(3), rx.recv_packet()).await {
            lat.push(now_us().saturating_sub(p.received_us));
            if lat.len() as u64 == n {
                break;
            }
        }
        lat
    });
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / pps));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for seq in 0..n {
        tick.tick().await;
        let size = if seq.is_multiple_of(3) { 160 } else { 1100 };
        let p = RelayPacket {
            stream: 1,
            seq,
            ts: seq as u32 * 3000,
            pt: 96,
            marker: false,
            audio_level: None,
            voice_activity: None,
            video_orientation: None,
            received_us: now_us(),
            repair: false,
            payload: bytes::Bytes::from(vec![0x5a; size]),
        };
        origin.send_packet(&p).expect("send");
    }
    let mut lat = recv.await.unwrap();
    lat.sort_unstable();
    let pct = |p: usize| lat[(lat.len() - 1) * p / 100];
    println!(
        "relay_hop {pps:>5} pps: {} of {n} packets arrived; one-way added latency p50 {} us, p90 {} us, p99 {} us, max {} us",
        lat.len(),
        pct(50),
        pct(90),
        pct(99),
        lat[lat.len() - 1]
    );
}

fn main() {
    let dir = std::env::temp_dir().join(format!("sfu-relay-bench-{}", std::process::id()));
    certs::generate(&dir, &["origin", "edge"]).expect("certificates");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (tls, id) = node(&dir, "origin");
        let origin = RelayEndpoint::bind(any, &tls, id).unwrap();
        let (tls, id) = node(&dir, "edge");
        let edge = RelayEndpoint::bind(any, &tls, id).unwrap();
        let (a, e) = tokio::join!(origin.accept(), edge.connect(origin.local_addr()));
        let at_origin = a.unwrap().unwrap();
        let at_edge = e.unwrap();
        run(&at_origin, &at_edge, 300, 3000).await;
        run(&at_origin, &at_edge, 3000, 15000).await;
        println!("relay_hop link stats at the edge: {:?}", at_edge.stats());
        origin.close();
        edge.close();
    });
    let _ = std::fs::remove_dir_all(&dir);
}
