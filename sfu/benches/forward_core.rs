//! Cost of the pure forwarding decision per forwarded copy: one publisher packet through
//! `TrackForwarder::on_packet` for every subscriber of a room, as the media loop does.
//! Run: `cargo bench -p sfu --bench forward_core`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use sfu::forward::keyframe::{starts_keyframe, Codec};
use sfu::forward::track_forwarder::{PacketInfo, TrackForwarder};
use sfu::forward::SourceId;

fn main() {
    for subscribers in [20usize, 500] {
        let mut fwd: Vec<TrackForwarder> = (0..subscribers)
            .map(|i| {
                let mut f = TrackForwarder::new(90_000, i as u16);
                f.set_target(Some(SourceId(1)), Instant::now());
                f
            })
            .collect();
        let payload = {
            let mut p = vec![0x90, 0x80, 0x12, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
            p.resize(1100, 0);
            p
        };
        let packets = 20_000u64;
        let t0 = Instant::now();
        let mut forwarded = 0u64;
        for seq in 0..packets {
            let now = t0 + Duration::from_micros(seq * 700);
            let key = seq % 3000 == 0;
            let info = PacketInfo {
                source: SourceId(1),
                seq,
                ts: (seq / 8) as u32 * 3000,
                keyframe_start: key && starts_keyframe(Codec::Vp8, black_box(&payload)),
                vp8: None,
            };
            for f in fwd.iter_mut() {
                if black_box(f.on_packet(info, now)).is_some() {
                    forwarded += 1;
                }
            }
        }
        let el = t0.elapsed();
        println!(
            "forward_core: {subscribers} subscribers, {forwarded} copies in {:.1} ms: {:.1} ns per copy",
            el.as_secs_f64() * 1e3,
            el.as_nanos() as f64 / forwarded.max(1) as f64
        );
        assert_eq!(forwarded, packets * subscribers as u64);
    }
}
