//! Per-classroom measurements, sans-IO: every packet is fed with its arrival instant, so the
//! rules (loss before and after retransmission, frame completeness, freezes, layer switches,
//! latency) are unit-tested on a virtual clock.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Latency histogram: 0.1 ms buckets up to 5 s (the last bucket holds everything above).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    buckets: Vec<u32>,
    count: u64,
}

const BUCKET_MS: f64 = 0.1;
const BUCKETS: usize = 50_000;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; BUCKETS],
            count: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, d: Duration) {
        let i = ((d.as_secs_f64() * 1000.0 / BUCKET_MS) as usize).min(BUCKETS - 1);
        self.buckets[i] += 1;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
    }

    /// `self - earlier` (earlier must be a previous state of the same histogram).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        Histogram {
            buckets: self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            count: self.count.saturating_sub(earlier.count),
        }
    }

    /// The q-quantile in ms (upper edge of its bucket), None when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n as u64;
            if seen >= rank {
                return Some((i + 1) as f64 * BUCKET_MS);
            }
        }
        None
    }

    /// Points (ms, fraction ≤ ms) for a CDF plot, at most `max_points`.
    pub fn cdf(&self, max_points: usize) -> Vec<(f64, f64)> {
        if self.count == 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut seen = 0u64;
        let step = (self.count / max_points.max(1) as u64).max(1);
        let mut next = step;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n == 0 {
                continue;
            }
            seen += n as u64;
            if seen >= next || seen == self.count {
                out.push(((i + 1) as f64 * BUCKET_MS, seen as f64 / self.count as f64));
                next = seen + step;
            }
        }
        out
    }
}

/// Extends 16-bit sequence numbers to i64 across wraps.
#[derive(Debug, Default, Clone)]
struct SeqExt {
    last: Option<i64>,
}

impl SeqExt {
    fn extend(&mut self, seq: u16) -> i64 {
        let e = match self.last {
            None => seq as i64 + (1 << 20),
            Some(l) => l + (seq.wrapping_sub(l as u16) as i16) as i64,
        };
        if self.last.is_none_or(|l| e > l) {
            self.last = Some(e);
        }
        e
    }
}

/// What became of one arriving packet's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Newer than any before (possibly after a gap).
    New,
    /// Filled a gap (a retransmission or a late packet).
    Repair,
    /// Already had it.
    Duplicate,
    /// Older than the repair window: too late to count.
    Stale,
}

/// Counts sequence gaps (loss before retransmission) and the gaps never filled within the
/// repair window (loss after retransmission).
#[derive(Debug, Clone)]
pub struct SeqTracker {
    ext: SeqExt,
    window: Duration,
    first: Option<i64>,
    highest: Option<i64>,
    /// missing sequence numbers: when the gap was seen, when last asked for, how often
    pending: BTreeMap<i64, Gap>,
    pub gaps_seen: u64,
    pub repaired: u64,
    pub lost: u64,
    pub duplicates: u64,
}

#[derive(Debug, Clone, Copy)]
struct Gap {
    seen: Instant,
    nacked: Option<Instant>,
    tries: u32,
}

/// Cumulative loss counters.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct LossCounts {
    /// Sequence numbers the stream spanned (first to highest), less those still in the window.
    pub expected: u64,
    pub gaps_seen: u64,
    pub repaired: u64,
    pub lost: u64,
}

impl LossCounts {
    pub fn before_pct(&self) -> f64 {
        pct(self.gaps_seen, self.expected)
    }
    pub fn after_pct(&self) -> f64 {
        pct(self.lost, self.expected)
    }
    pub fn since(&self, e: &LossCounts) -> LossCounts {
        LossCounts {
            expected: self.expected.saturating_sub(e.expected),
            gaps_seen: self.gaps_seen.saturating_sub(e.gaps_seen),
            repaired: self.repaired.saturating_sub(e.repaired),
            lost: self.lost.saturating_sub(e.lost),
        }
    }
}

pub fn pct(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        100.0 * n as f64 / d as f64
    }
}

impl SeqTracker {
    pub fn new(window: Duration) -> Self {
        SeqTracker {
            ext: SeqExt::default(),
            window,
            first: None,
            highest: None,
            pending: BTreeMap::new(),
            gaps_seen: 0,
            repaired: 0,
            lost: 0,
            duplicates: 0,
        }
    }

    pub fn on_packet(&mut self, seq: u16, now: Instant) -> Arrival {
        self.expire(now);
        let e = self.ext.extend(seq);
        let Some(h) = self.highest else {
            self.first = Some(e);
            self.highest = Some(e);
            return Arrival::New;
        };
        if e > h {
            // a jump of more than a few thousand is a stream restart, not loss
            let gap = (e - h - 1).min(4096);
            for s in (e - gap)..e {
                self.pending.insert(
                    s,
                    Gap {
                        seen: now,
                        nacked: None,
                        tries: 0,
                    },
                );
            }
            self.gaps_seen += gap as u64;
            self.highest = Some(e);
            Arrival::New
        } else if self.pending.remove(&e).is_some() {
            self.repaired += 1;
            Arrival::Repair
        } else if e < self.first.unwrap_or(e) || h - e > 4096 {
            Arrival::Stale
        } else {
            self.duplicates += 1;
            Arrival::Duplicate
        }
    }

    /// Gaps older than the window become losses.
    pub fn expire(&mut self, now: Instant) {
        while let Some((&s, gap)) = self.pending.first_key_value() {
            if now.saturating_duration_since(gap.seen) < self.window {
                break;
            }
            self.pending.remove(&s);
            self.lost += 1;
        }
    }

    /// Sequence numbers to ask for again now (a NACK): never asked, or last asked `retry` ago,
    /// at most `max_tries` times each, while inside the repair window.
    pub fn due_nacks(&mut self, now: Instant, retry: Duration, max_tries: u32) -> Vec<u16> {
        self.expire(now);
        let mut out = Vec::new();
        for (&s, gap) in self.pending.iter_mut() {
            let due = gap
                .nacked
                .is_none_or(|t| now.saturating_duration_since(t) >= retry);
            if due && gap.tries < max_tries {
                gap.nacked = Some(now);
                gap.tries += 1;
                out.push(s as u16);
            }
        }
        out
    }

    pub fn counts(&self) -> LossCounts {
        let span = match (self.first, self.highest) {
            (Some(a), Some(b)) => (b - a + 1) as u64,
            _ => 0,
        };
        // gaps still inside the window are neither lost nor repaired yet: leave them out
        let open = self.pending.len() as u64;
        LossCounts {
            expected: span.saturating_sub(open),
            gaps_seen: self.gaps_seen.saturating_sub(open),
            repaired: self.repaired,
            lost: self.lost,
        }
    }
}

/// One VP8 packet as the classroom sees it.
#[derive(Debug, Clone, Copy)]
pub struct VideoPacket {
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    /// S bit with partition 0: the first packet of a frame.
    pub frame_start: bool,
    /// Set on the first packet of a keyframe: its size.
    pub keyframe: Option<(u16, u16)>,
    /// Bytes on the wire at RTP level (header + payload).
    pub bytes: usize,
}

#[derive(Debug, Default, Clone)]
struct FrameAsm {
    start: Option<i64>,
    end: Option<i64>,
    have: u32,
    key: Option<(u16, u16)>,
    done: bool,
}

/// Settings of a [`VideoMeter`].
#[derive(Debug, Clone, Copy)]
pub struct MeterConfig {
    pub fps: u32,
    /// How long a gap may wait for its retransmission before it counts as lost.
    pub repair_window: Duration,
}

impl MeterConfig {
    /// No complete frame for more than 3 frame intervals and at least 200 ms.
    pub fn freeze_threshold(&self) -> Duration {
        (Duration::from_secs(3) / self.fps).max(Duration::from_millis(200))
    }
}

/// Cumulative video figures of one classroom.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VideoCounts {
    pub packets: u64,
    pub bytes: u64,
    pub loss: LossCounts,
    pub frames_complete: u64,
    pub keyframes: u64,
    pub freezes: u64,
    pub frozen: Duration,
    /// First complete frame to the last observation.
    pub watched: Duration,
    pub time_to_first_frame: Option<Duration>,
    pub layer_switches: u64,
    /// Complete frames per height (180, 360, 720...).
    pub frames_by_height: BTreeMap<u16, u64>,
    pub latency: Histogram,
}

impl VideoCounts {
    pub fn frozen_pct(&self) -> f64 {
        if self.watched.is_zero() {
            0.0
        } else {
            100.0 * self.frozen.as_secs_f64() / self.watched.as_secs_f64()
        }
    }
}

/// Frames, freezes, loss, layers and latency of one classroom's camera stream.
#[derive(Debug, Clone)]
pub struct VideoMeter {
    cfg: MeterConfig,
    origin: Instant,
    ext: SeqExt,
    seqs: SeqTracker,
    frames: BTreeMap<u32, FrameAsm>,
    last_complete: Option<Instant>,
    first_frame: Option<Instant>,
    last_seen: Option<Instant>,
    height: Option<u16>,
    counts: VideoCounts,
}

impl VideoMeter {
    /// `origin`: when the classroom asked to join (time to first frame counts from it).
    pub fn new(cfg: MeterConfig, origin: Instant) -> Self {
        VideoMeter {
            cfg,
            origin,
            ext: SeqExt::default(),
            seqs: SeqTracker::new(cfg.repair_window),
            frames: BTreeMap::new(),
            last_complete: None,
            first_frame: None,
            last_seen: None,
            height: None,
            counts: VideoCounts::default(),
        }
    }

    /// Feeds one packet; `latency` is its send-to-arrival time when known. Returns what the
    /// sequence number was (only first arrivals carry latency samples).
    pub fn on_packet(
        &mut self,
        p: VideoPacket,
        now: Instant,
        latency: Option<Duration>,
    ) -> Arrival {
        self.last_seen = Some(now);
        let arrival = self.seqs.on_packet(p.seq, now);
        if matches!(arrival, Arrival::Duplicate | Arrival::Stale) {
            return arrival;
        }
        let e = self.ext.extend(p.seq);
        self.counts.packets += 1;
        self.counts.bytes += p.bytes as u64;
        if arrival == Arrival::New {
            if let Some(l) = latency {
                self.counts.latency.record(l);
            }
        }
        let f = self.frames.entry(p.ts).or_default();
        if f.done {
            return arrival;
        }
        f.have += 1;
        if p.frame_start {
            f.start = Some(e);
            f.key = p.keyframe;
        }
        if p.marker {
            f.end = Some(e);
        }
        if let (Some(s), Some(end)) = (f.start, f.end) {
            if end >= s && f.have as i64 == end - s + 1 {
                f.done = true;
                let key = f.key;
                self.on_frame(key, now);
            }
        }
        // forget frames far behind (their packets will not come any more)
        while self.frames.len() > 256 {
            self.frames.pop_first();
        }
        arrival
    }

    fn on_frame(&mut self, key: Option<(u16, u16)>, now: Instant) {
        if let Some((_, h)) = key {
            self.counts.keyframes += 1;
            if self.height.is_some_and(|old| old != h) {
                self.counts.layer_switches += 1;
            }
            self.height = Some(h);
        }
        // before the first keyframe nothing can be shown
        let Some(h) = self.height else { return };
        self.counts.frames_complete += 1;
        *self.counts.frames_by_height.entry(h).or_default() += 1;
        if self.first_frame.is_none() {
            self.first_frame = Some(now);
            self.counts.time_to_first_frame = Some(now.saturating_duration_since(self.origin));
        }
        if let Some(last) = self.last_complete {
            self.account_gap(now.saturating_duration_since(last));
        }
        self.last_complete = Some(now);
    }

    fn account_gap(&mut self, gap: Duration) {
        if gap > self.cfg.freeze_threshold() {
            self.counts.freezes += 1;
            // the picture stood still for the gap less one normal frame interval
            self.counts.frozen += gap.saturating_sub(Duration::from_secs(1) / self.cfg.fps);
        }
    }

    /// See [`SeqTracker::due_nacks`].
    pub fn due_nacks(&mut self, now: Instant, retry: Duration, max_tries: u32) -> Vec<u16> {
        self.seqs.due_nacks(now, retry, max_tries)
    }

    /// True once a complete frame could be shown.
    pub fn has_frame(&self) -> bool {
        self.first_frame.is_some()
    }

    /// Figures as of `now`; a freeze still going on at `now` is included.
    pub fn counts(&mut self, now: Instant) -> VideoCounts {
        self.seqs.expire(now);
        let mut c = self.counts.clone();
        c.loss = self.seqs.counts();
        if let Some(first) = self.first_frame {
            c.watched = now.saturating_duration_since(first);
        }
        if let Some(last) = self.last_complete {
            let gap = now.saturating_duration_since(last);
            if gap > self.cfg.freeze_threshold() {
                c.freezes += 1;
                c.frozen += gap.saturating_sub(Duration::from_secs(1) / self.cfg.fps);
            }
        }
        c
    }
}

/// Audio: packets, bytes and sequence loss (audio is not retransmitted).
#[derive(Debug, Clone)]
pub struct AudioMeter {
    seqs: SeqTracker,
    pub packets: u64,
    pub bytes: u64,
}

impl AudioMeter {
    pub fn new(window: Duration) -> Self {
        AudioMeter {
            seqs: SeqTracker::new(window),
            packets: 0,
            bytes: 0,
        }
    }
    pub fn on_packet(&mut self, seq: u16, bytes: usize, now: Instant) {
        if matches!(
            self.seqs.on_packet(seq, now),
            Arrival::New | Arrival::Repair
        ) {
            self.packets += 1;
            self.bytes += bytes as u64;
        }
    }
    pub fn loss(&mut self, now: Instant) -> LossCounts {
        self.seqs.expire(now);
        self.seqs.counts()
    }
}

/// Bytes received per whole second since an origin.
#[derive(Debug, Clone, Default)]
pub struct RateSeries {
    pub bytes_per_s: Vec<u64>,
}

impl RateSeries {
    pub fn add(&mut self, since_origin: Duration, bytes: usize) {
        let i = since_origin.as_secs() as usize;
        if self.bytes_per_s.len() <= i {
            self.bytes_per_s.resize(i + 1, 0);
        }
        self.bytes_per_s[i] += bytes as u64;
    }
}

/// Where forwarded payloads came from: a fingerprint of the payload (which the SFU forwards
/// untouched past the VP8 descriptor) to the instant the teacher handed it to its stack.
#[derive(Debug, Default)]
pub struct SendLog {
    sent: HashMap<u64, Instant>,
}

impl SendLog {
    pub fn fingerprint(data: &[u8]) -> u64 {
        // FNV-1a over the length and the first 48 bytes: compressed video is high-entropy
        let mut h: u64 = 0xcbf29ce484222325;
        for b in (data.len() as u32)
            .to_le_bytes()
            .iter()
            .chain(data.iter().take(48))
        {
            h ^= *b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        h
    }

    pub fn record(&mut self, data: &[u8], at: Instant) {
        self.sent.insert(Self::fingerprint(data), at);
    }

    pub fn lookup(&self, data: &[u8]) -> Option<Instant> {
        self.sent.get(&Self::fingerprint(data)).copied()
    }

    /// Drops entries sent before `before` (the clip loops; a stale entry would be overwritten
    /// anyway, this only bounds memory).
    pub fn prune(&mut self, before: Instant) {
        self.sent.retain(|_, at| *at >= before);
    }

    pub fn len(&self) -> usize {
        self.sent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }
}

/// Length of the VP8 payload descriptor (RFC 7741 §4.2), None when malformed.
pub fn vp8_descriptor_len(p: &[u8]) -> Option<usize> {
    let b0 = *p.first()?;
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let b1 = *p.get(1)?;
        i = 2;
        if b1 & 0x80 != 0 {
            i += if *p.get(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if b1 & 0x40 != 0 {
            i += 1;
        }
        if b1 & 0x30 != 0 {
            i += 1;
        }
    }
    (i <= p.len()).then_some(i)
}

/// What the meter needs from a VP8 RTP payload.
#[derive(Debug, Clone, Copy)]
pub struct Vp8Payload<'a> {
    /// S bit with partition 0.
    pub start: bool,
    /// Size, when this packet starts a keyframe.
    pub keyframe: Option<(u16, u16)>,
    /// The VP8 data after the payload descriptor.
    pub data: &'a [u8],
}

/// Parses a VP8 RTP payload.
pub fn parse_vp8_payload(p: &[u8]) -> Option<Vp8Payload<'_>> {
    let d = vp8_descriptor_len(p)?;
    let start = p[0] & 0x10 != 0 && p[0] & 0x07 == 0;
    let data = &p[d..];
    let key = if start {
        crate::media::clip::vp8_keyframe_size(data)
    } else {
        None
    };
    Some(Vp8Payload {
        start,
        keyframe: key,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn histogram_quantiles_and_delta() {
        let mut h = Histogram::default();
        for i in 1..=100 {
            h.record(ms(i));
        }
        assert_eq!(h.quantile_ms(0.5).unwrap().round(), 50.0);
        assert_eq!(h.quantile_ms(0.99).unwrap().round(), 99.0);
        let before = h.clone();
        for _ in 0..10 {
            h.record(ms(300));
        }
        let d = h.since(&before);
        assert_eq!(d.count(), 10);
        assert_eq!(d.quantile_ms(0.5).unwrap().round(), 300.0);
        let cdf = h.cdf(20);
        assert!(cdf.len() <= 22 && cdf.last().unwrap().1 == 1.0);
        assert!(Histogram::default().quantile_ms(0.5).is_none());
    }

    #[test]
    fn gap_repaired_within_window_is_not_lost() {
        let t0 = Instant::now();
        let mut s = SeqTracker::new(ms(1000));
        assert_eq!(s.on_packet(65534, t0), Arrival::New);
        assert_eq!(s.on_packet(1, t0 + ms(10)), Arrival::New); // 65535, 0 missing (wrap)
        assert_eq!(s.on_packet(65535, t0 + ms(200)), Arrival::Repair);
        assert_eq!(s.on_packet(65535, t0 + ms(210)), Arrival::Duplicate);
        let c = s.counts();
        assert_eq!(c.gaps_seen, 1, "one gap still open is left out");
        s.expire(t0 + ms(1011));
        let c = s.counts();
        assert_eq!((c.expected, c.gaps_seen, c.repaired, c.lost), (4, 2, 1, 1));
        // a repair after the window is too late
        assert_eq!(s.on_packet(0, t0 + ms(1500)), Arrival::Duplicate);
        assert_eq!(s.counts().lost, 1);
        assert!((c.before_pct() - 50.0).abs() < 1e-9 && (c.after_pct() - 25.0).abs() < 1e-9);
    }

    #[test]
    fn nacks_are_repeated_at_the_retry_interval_until_repaired() {
        let t0 = Instant::now();
        let mut s = SeqTracker::new(ms(1000));
        s.on_packet(10, t0);
        s.on_packet(13, t0); // 11, 12 missing
        assert_eq!(s.due_nacks(t0, ms(100), 3), vec![11, 12]);
        assert!(s.due_nacks(t0 + ms(50), ms(100), 3).is_empty());
        s.on_packet(11, t0 + ms(60));
        assert_eq!(s.due_nacks(t0 + ms(100), ms(100), 3), vec![12]);
        assert_eq!(s.due_nacks(t0 + ms(200), ms(100), 3), vec![12]);
        // three tries, then it gives up
        assert!(s.due_nacks(t0 + ms(300), ms(100), 3).is_empty());
        // and after the window the gap is a loss, never asked again
        assert!(s.due_nacks(t0 + ms(1100), ms(100), 10).is_empty());
        assert_eq!(s.counts().lost, 1);
    }

    fn pkt(seq: u16, ts: u32, start: bool, marker: bool, key: Option<(u16, u16)>) -> VideoPacket {
        VideoPacket {
            seq,
            ts,
            marker,
            frame_start: start,
            keyframe: key,
            bytes: 1000,
        }
    }

    #[test]
    fn frames_freezes_layers_on_a_virtual_clock() {
        let t0 = Instant::now();
        let cfg = MeterConfig {
            fps: 30,
            repair_window: ms(1000),
        };
        assert_eq!(cfg.freeze_threshold(), ms(200));
        let mut m = VideoMeter::new(cfg, t0);
        // a delta frame before any keyframe is not shown
        m.on_packet(pkt(10, 0, true, true, None), t0 + ms(100), None);
        // keyframe 320x180 in two packets at 200 ms
        m.on_packet(
            pkt(11, 3000, true, false, Some((320, 180))),
            t0 + ms(200),
            Some(ms(5)),
        );
        m.on_packet(pkt(12, 3000, false, true, None), t0 + ms(200), Some(ms(6)));
        // 10 delta frames every 33 ms
        let mut seq = 13u16;
        let mut at = 200;
        for f in 0..10u32 {
            at += 33;
            m.on_packet(
                pkt(seq, 6000 + f * 3000, true, true, None),
                t0 + ms(at),
                Some(ms(7)),
            );
            seq += 1;
        }
        // a frame whose second packet is lost, repaired 400 ms later: freeze of ~433 ms
        m.on_packet(pkt(seq, 90_000, true, false, None), t0 + ms(at + 33), None);
        m.on_packet(
            pkt(seq + 2, 93_000, true, true, None),
            t0 + ms(at + 66),
            None,
        );
        m.on_packet(
            pkt(seq + 1, 90_000, false, true, None),
            t0 + ms(at + 433),
            None,
        );
        // switch to 640x360
        m.on_packet(
            pkt(seq + 3, 96_000, true, true, Some((640, 360))),
            t0 + ms(at + 466),
            None,
        );
        let c = m.counts(t0 + ms(at + 480));
        assert_eq!(c.time_to_first_frame, Some(ms(200)));
        assert_eq!(c.keyframes, 2);
        assert_eq!(c.frames_complete, 1 + 10 + 3);
        assert_eq!(c.layer_switches, 1);
        assert_eq!(c.frames_by_height.get(&180), Some(&13));
        assert_eq!(c.freezes, 1);
        assert!(c.frozen >= ms(330) && c.frozen <= ms(370), "{:?}", c.frozen);
        assert_eq!(
            c.latency.count(),
            12,
            "the repair carries no latency sample"
        );
        assert_eq!(c.loss.repaired, 1);
        // nothing arrives for a second: an ongoing freeze counts
        let later = m.counts(t0 + ms(at + 1500));
        assert_eq!(later.freezes, 2);
        assert!(later.frozen_pct() > c.frozen_pct());
    }

    #[test]
    fn vp8_descriptor_and_fingerprint() {
        // X, S, PID 0 | I, L, T | M + 15-bit picture id | TL0 | TID/Y
        let mut p = vec![0x90, 0xe0, 0x81, 0x23, 0x05, 0x20];
        p.extend_from_slice(&[
            0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xb4, 0x00, 9, 9,
        ]);
        let v = parse_vp8_payload(&p).unwrap();
        let data = v.data;
        assert!(v.start);
        assert_eq!(v.keyframe, Some((320, 180)));
        assert_eq!(data.len(), 12);
        // the SFU rewrites the picture id: the fingerprint of the frame data does not change
        let mut q = p.clone();
        q[3] = 0x77;
        assert_eq!(
            SendLog::fingerprint(parse_vp8_payload(&q).unwrap().data),
            SendLog::fingerprint(data)
        );
        let t = Instant::now();
        let mut log = SendLog::default();
        log.record(data, t);
        assert_eq!(log.lookup(parse_vp8_payload(&q).unwrap().data), Some(t));
        log.prune(t + ms(1));
        assert!(log.is_empty());
    }
}
