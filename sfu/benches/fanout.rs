//! One teacher (VP8 3-layer simulcast + Opus, webrtc-rs) and 20 WHEP viewers (webrtc-rs) on
//! loopback: time to first keyframe per viewer (median of 20, joining one at a time), then the
//! SFU's CPU and RSS from /proc while all 20 play.
//! Run: `cargo bench -p sfu --bench fanout` (builds the sfu binary in release mode).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;

const VIEWERS: usize = 20;

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name: state is field 3; utime and stime are 14 and 15.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    utime + stime
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn main() {
    run("fanout", Duration::from_secs(600), async {
        let sfu = Sfu::start().await;
        let pid = sfu.pid().expect("sfu pid");
        let room = "bench";
        let teacher = sfu.token(room, "teacher", "teacher-1");
        let _publisher = Publisher::connect(&sfu, room, &teacher, PublisherOpts::vp8_simulcast())
            .await
            .expect("publisher");
        sleep(secs(2.0)).await;

        let mut ttff = vec![];
        let mut subs = vec![];
        for i in 0..VIEWERS {
            let tok = sfu.token(room, "classroom", &format!("point-{i}"));
            let sub =
                Subscriber::connect(&sfu, room, &tok, "", &[VideoCodec::Vp8], &format!("v{i}"))
                    .await
                    .expect("subscriber");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let cam = sub.slot(1);
                if let Some(p) = cam.pkts.iter().find(|p| p.key.is_some()) {
                    ttff.push(p.at.saturating_duration_since(sub.posted_at));
                    break;
                }
                assert!(Instant::now() < deadline, "viewer {i} got no keyframe");
                sleep(Duration::from_millis(5)).await;
            }
            subs.push(sub);
        }
        ttff.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "time to first keyframe, {} viewers joining one at a time: median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
            ttff.len(),
            ms(ttff[ttff.len() / 2]),
            ms(ttff[ttff.len() * 9 / 10]),
            ms(*ttff.last().unwrap())
        );

        sleep(secs(3.0)).await;
        let hz = 100.0; // USER_HZ on Linux
        let (_, m0) = sfu.get("/metrics").await;
        let t0 = Instant::now();
        let c0 = cpu_ticks(pid);
        sleep(secs(10.0)).await;
        let c1 = cpu_ticks(pid);
        let el = t0.elapsed().as_secs_f64();
        let (_, m1) = sfu.get("/metrics").await;
        let fwd = metric(&m1, "sfu_rtp_packets_forwarded_total")
            - metric(&m0, "sfu_rtp_packets_forwarded_total");
        let cpu = (c1 - c0) as f64 / hz / el;
        println!(
            "1 publisher + {VIEWERS} viewers: SFU CPU {:.1} % of one core, RSS {:.1} MiB, {:.0} packets forwarded/s, {:.0} forwarded packets per SFU core-second",
            cpu * 100.0,
            rss_kib(pid) as f64 / 1024.0,
            fwd / el,
            if cpu > 0.0 { fwd / el / cpu } else { 0.0 }
        );
    });
}
