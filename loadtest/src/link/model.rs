//! One direction of an emulated link, sans-IO and deterministic.
//!
//! A packet pushed at `now` goes through, in order:
//! 1. **loss** (random or Gilbert-Elliott), decided on arrival, so a lost packet uses no capacity;
//! 2. a **bounded FIFO queue** in front of a serializer running at the link rate (tail drop when
//!    full);
//! 3. **propagation delay** plus **jitter**, after the last bit has left the serializer.
//!
//! Jitter never reorders: a packet is never delivered before the one pushed ahead of it (delivery
//! times are made non-decreasing), as on a real access link with one queue. Scheduled changes
//! (rate, delay, jitter, loss) take effect at offsets from the link's origin; a rate change applies
//! mid-packet, so capacity steps and outages (rate 0) are exact.
//!
//! Because the schedule is known in advance, everything about a packet is decided in `push`, and
//! the same seed and the same pushes give the same deliveries, bit for bit.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Bytes added to every datagram when counting it against the rate: IPv4 (20) + UDP (8), so that
/// "2 Mbit/s" means what a router's rate limit means.
pub const UDP_IPV4_OVERHEAD: usize = 28;

/// Errors in a link's configuration.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LinkError {
    #[error("{what} must be a probability in [0, 1], got {value}")]
    BadProbability { what: &'static str, value: f64 },
    #[error("mean loss burst must be at least 1 packet, got {0}")]
    BadBurst(f64),
    #[error("loss rate {0} cannot be reached with bursts (must be below 1)")]
    BadBurstyRate(f64),
}

/// How packets are lost, independently of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum LossModel {
    #[default]
    None,
    /// Each packet lost independently with probability `p`.
    Random { p: f64 },
    /// Two-state Markov chain (Gilbert-Elliott): in state Good packets are lost with `loss_good`,
    /// in Bad with `loss_bad`; the state moves after each packet.
    GilbertElliott {
        p_good_to_bad: f64,
        p_bad_to_good: f64,
        loss_good: f64,
        loss_bad: f64,
    },
}

impl LossModel {
    /// Independent loss with probability `p`.
    pub fn random(p: f64) -> Result<Self, LinkError> {
        check_probability("loss probability", p)?;
        Ok(if p == 0.0 {
            LossModel::None
        } else {
            LossModel::Random { p }
        })
    }

    /// Bursty loss with long-run rate `rate` and mean burst length `mean_burst` packets: Bad loses
    /// everything, Good nothing, so bursts are geometric with mean `1 / p_bad_to_good`.
    pub fn bursty(rate: f64, mean_burst: f64) -> Result<Self, LinkError> {
        check_probability("loss rate", rate)?;
        if mean_burst.is_nan() || mean_burst < 1.0 {
            return Err(LinkError::BadBurst(mean_burst));
        }
        if rate == 0.0 {
            return Ok(LossModel::None);
        }
        if rate >= 1.0 {
            return Err(LinkError::BadBurstyRate(rate));
        }
        let p_bad_to_good = 1.0 / mean_burst;
        // Stationary P(Bad) = g / (g + b) = rate.
        let p_good_to_bad = rate * p_bad_to_good / (1.0 - rate);
        check_probability("loss rate with this burst length", p_good_to_bad)?;
        Ok(LossModel::GilbertElliott {
            p_good_to_bad,
            p_bad_to_good,
            loss_good: 0.0,
            loss_bad: 1.0,
        })
    }

    /// Long-run fraction of packets lost.
    pub fn mean_loss(&self) -> f64 {
        match *self {
            LossModel::None => 0.0,
            LossModel::Random { p } => p,
            LossModel::GilbertElliott {
                p_good_to_bad: g,
                p_bad_to_good: b,
                loss_good,
                loss_bad,
            } => {
                if g + b == 0.0 {
                    loss_good
                } else {
                    let bad = g / (g + b);
                    bad * loss_bad + (1.0 - bad) * loss_good
                }
            }
        }
    }

    fn validate(&self) -> Result<(), LinkError> {
        match *self {
            LossModel::None => Ok(()),
            LossModel::Random { p } => check_probability("loss probability", p),
            LossModel::GilbertElliott {
                p_good_to_bad,
                p_bad_to_good,
                loss_good,
                loss_bad,
            } => {
                check_probability("p_good_to_bad", p_good_to_bad)?;
                check_probability("p_bad_to_good", p_bad_to_good)?;
                check_probability("loss_good", loss_good)?;
                check_probability("loss_bad", loss_bad)
            }
        }
    }
}

fn check_probability(what: &'static str, value: f64) -> Result<(), LinkError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(LinkError::BadProbability { what, value })
    }
}

/// How much the queue in front of the serializer holds before it drops arriving packets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QueueLimit {
    Unlimited,
    /// Bytes waiting or being sent (with overhead), as a router buffer. After a capacity drop the
    /// same bytes take longer to drain: that is bufferbloat, and it is what real links do.
    Bytes(usize),
    /// Drop when a packet would wait longer than this before its first bit is sent.
    Delay(Duration),
}

/// A change at `at` after the link's origin; `None` fields keep their value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinkChange {
    pub at: Duration,
    /// New rate in bit/s; 0 is an outage (packets queue, then drop when the queue is full).
    pub rate_bps: Option<u64>,
    pub delay: Option<Duration>,
    pub jitter: Option<Duration>,
    pub loss: Option<LossModel>,
}

/// One direction of a link.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Bottleneck rate in bit/s (counting `overhead_bytes` per packet); `None` is unlimited.
    pub rate_bps: Option<u64>,
    /// One-way propagation delay.
    pub delay: Duration,
    /// Each packet's delay is drawn uniformly from `delay ± jitter` (clamped at 0), then held back
    /// if needed so that packets stay in order.
    pub jitter: Duration,
    pub loss: LossModel,
    pub queue: QueueLimit,
    /// Bytes added to each packet's length when counting it against the rate.
    pub overhead_bytes: usize,
    /// Changes at offsets from the origin; any order.
    pub schedule: Vec<LinkChange>,
}

impl Default for LinkConfig {
    /// An unimpaired link: no rate limit, no delay, no loss.
    fn default() -> Self {
        LinkConfig {
            rate_bps: None,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: LossModel::None,
            queue: QueueLimit::Unlimited,
            overhead_bytes: UDP_IPV4_OVERHEAD,
            schedule: Vec::new(),
        }
    }
}

impl LinkConfig {
    /// Rate in bit/s in force at `offset` from the origin (`None` is unlimited), for reports that
    /// compare received bitrate with capacity.
    pub fn rate_bps_at(&self, offset: Duration) -> Option<u64> {
        let phases = compile(self);
        phases[phase_index(&phases, offset)].rate_bps
    }

    pub fn validate(&self) -> Result<(), LinkError> {
        self.loss.validate()?;
        for change in &self.schedule {
            if let Some(loss) = &change.loss {
                loss.validate()?;
            }
        }
        Ok(())
    }
}

/// What happened to a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It will come out of `poll` at `deliver_at`.
    Queued { deliver_at: Instant },
    /// The queue was full (tail drop), or the link is down for good.
    DroppedQueueFull,
    /// Lost by the loss model.
    DroppedLoss,
}

/// Counters for one direction. Bytes are payload bytes, without overhead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// Packets offered to the link.
    pub sent_packets: u64,
    pub sent_bytes: u64,
    pub delivered_packets: u64,
    pub delivered_bytes: u64,
    pub dropped_queue_packets: u64,
    pub dropped_queue_bytes: u64,
    pub dropped_loss_packets: u64,
    pub dropped_loss_bytes: u64,
}

impl LinkStats {
    /// Packets accepted and not yet delivered.
    pub fn in_flight_packets(&self) -> u64 {
        self.sent_packets
            - self.delivered_packets
            - self.dropped_queue_packets
            - self.dropped_loss_packets
    }

    pub fn add(&mut self, other: &LinkStats) {
        self.sent_packets += other.sent_packets;
        self.sent_bytes += other.sent_bytes;
        self.delivered_packets += other.delivered_packets;
        self.delivered_bytes += other.delivered_bytes;
        self.dropped_queue_packets += other.dropped_queue_packets;
        self.dropped_queue_bytes += other.dropped_queue_bytes;
        self.dropped_loss_packets += other.dropped_loss_packets;
        self.dropped_loss_bytes += other.dropped_loss_bytes;
    }
}

/// Parameters in force during one phase of the schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Phase {
    from: Duration,
    rate_bps: Option<u64>,
    delay: Duration,
    jitter: Duration,
    loss: LossModel,
}

/// Base parameters, then one phase per distinct change time, sorted; phase 0 starts at 0.
fn compile(config: &LinkConfig) -> Vec<Phase> {
    let mut phases = vec![Phase {
        from: Duration::ZERO,
        rate_bps: config.rate_bps,
        delay: config.delay,
        jitter: config.jitter,
        loss: config.loss,
    }];
    let mut changes: Vec<&LinkChange> = config.schedule.iter().collect();
    changes.sort_by_key(|c| c.at);
    for change in changes {
        let last = *phases.last().expect("phase 0");
        let mut next = Phase {
            from: change.at,
            ..last
        };
        if let Some(r) = change.rate_bps {
            next.rate_bps = Some(r);
        }
        if let Some(d) = change.delay {
            next.delay = d;
        }
        if let Some(j) = change.jitter {
            next.jitter = j;
        }
        if let Some(l) = change.loss {
            next.loss = l;
        }
        if change.at == last.from {
            *phases.last_mut().expect("phase 0") = next;
        } else {
            phases.push(next);
        }
    }
    phases
}

fn phase_index(phases: &[Phase], offset: Duration) -> usize {
    phases
        .partition_point(|p| p.from <= offset)
        .saturating_sub(1)
}

/// One direction of an emulated link, driven by the caller's clock.
///
/// `push` packets as they arrive, then `poll` at or after `next_deadline` until it returns `None`.
pub struct Link {
    phases: Vec<Phase>,
    queue: QueueLimit,
    overhead: usize,
    origin: Instant,
    rng: ChaCha8Rng,
    bad_state: bool,
    /// When the serializer finishes the last accepted packet.
    busy_until: Instant,
    /// (serialization end, wire bytes) of packets not yet fully sent, for the byte limit.
    backlog: VecDeque<(Instant, usize)>,
    backlog_bytes: usize,
    /// Packets in order of delivery time (non-decreasing).
    line: VecDeque<(Instant, Vec<u8>)>,
    last_delivery: Instant,
    stats: LinkStats,
}

impl Link {
    /// A link whose schedule offsets count from `origin`; `seed` fixes loss and jitter draws.
    pub fn new(config: &LinkConfig, origin: Instant, seed: u64) -> Result<Self, LinkError> {
        config.validate()?;
        Ok(Link {
            phases: compile(config),
            queue: config.queue,
            overhead: config.overhead_bytes,
            origin,
            rng: ChaCha8Rng::seed_from_u64(seed),
            bad_state: false,
            busy_until: origin,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            line: VecDeque::new(),
            last_delivery: origin,
            stats: LinkStats::default(),
        })
    }

    /// Offer a packet arriving at `now` (calls must not go back in time).
    pub fn push(&mut self, now: Instant, packet: Vec<u8>) -> Verdict {
        let len = packet.len() as u64;
        self.stats.sent_packets += 1;
        self.stats.sent_bytes += len;
        let phase = self.phase_at(now);

        if self.lose(phase.loss) {
            self.stats.dropped_loss_packets += 1;
            self.stats.dropped_loss_bytes += len;
            return Verdict::DroppedLoss;
        }

        let wire = packet.len() + self.overhead;
        self.expire_backlog(now);
        let full = match self.queue {
            QueueLimit::Unlimited => false,
            QueueLimit::Bytes(limit) => self.backlog_bytes + wire > limit,
            QueueLimit::Delay(limit) => self.busy_until.saturating_duration_since(now) > limit,
        };
        let start = self.busy_until.max(now);
        let finish = if full {
            None
        } else {
            self.serialize(start, wire as u64 * 8)
        };
        let Some(finish) = finish else {
            self.stats.dropped_queue_packets += 1;
            self.stats.dropped_queue_bytes += len;
            return Verdict::DroppedQueueFull;
        };
        self.busy_until = finish;
        if finish > now {
            self.backlog.push_back((finish, wire));
            self.backlog_bytes += wire;
        }

        let after = self.phase_at(finish);
        let delay = self.jittered(after.delay, after.jitter);
        let deliver_at = (finish + delay).max(self.last_delivery);
        self.last_delivery = deliver_at;
        self.line.push_back((deliver_at, packet));
        Verdict::Queued { deliver_at }
    }

    /// The next packet due at `now`, if any.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.line.front()?.0 > now {
            return None;
        }
        let (_, packet) = self.line.pop_front()?;
        self.stats.delivered_packets += 1;
        self.stats.delivered_bytes += packet.len() as u64;
        Some(packet)
    }

    /// When the next packet is due; `None` when nothing is in flight.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.line.front().map(|(t, _)| *t)
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Rate in bit/s in force at `now` (`None` is unlimited).
    pub fn rate_bps_at(&self, now: Instant) -> Option<u64> {
        self.phase_at(now).rate_bps
    }

    /// How long a packet arriving at `now` would wait before its first bit is sent.
    pub fn queue_delay(&self, now: Instant) -> Duration {
        self.busy_until.saturating_duration_since(now)
    }

    /// Nothing queued or in flight.
    pub fn is_idle(&self) -> bool {
        self.line.is_empty()
    }

    fn phase_at(&self, t: Instant) -> Phase {
        let offset = t.saturating_duration_since(self.origin);
        self.phases[phase_index(&self.phases, offset)]
    }

    fn lose(&mut self, model: LossModel) -> bool {
        match model {
            LossModel::None => false,
            LossModel::Random { p } => self.rng.random_bool(p),
            LossModel::GilbertElliott {
                p_good_to_bad,
                p_bad_to_good,
                loss_good,
                loss_bad,
            } => {
                let lost = self
                    .rng
                    .random_bool(if self.bad_state { loss_bad } else { loss_good });
                let flip = if self.bad_state {
                    p_bad_to_good
                } else {
                    p_good_to_bad
                };
                if self.rng.random_bool(flip) {
                    self.bad_state = !self.bad_state;
                }
                lost
            }
        }
    }

    fn jittered(&mut self, delay: Duration, jitter: Duration) -> Duration {
        if jitter.is_zero() {
            return delay;
        }
        let j = jitter.as_nanos() as i128;
        let d = delay.as_nanos() as i128 + self.rng.random_range(-j..=j);
        Duration::from_nanos(d.max(0) as u64)
    }

    fn expire_backlog(&mut self, now: Instant) {
        while let Some(&(finish, wire)) = self.backlog.front() {
            if finish > now {
                break;
            }
            self.backlog.pop_front();
            self.backlog_bytes -= wire;
        }
    }

    /// When `bits` starting at `start` have been sent, following rate changes across phases;
    /// `None` if the link stays down forever.
    fn serialize(&self, start: Instant, mut bits: u64) -> Option<Instant> {
        const NS: u128 = 1_000_000_000;
        let mut t = start;
        loop {
            let offset = t.saturating_duration_since(self.origin);
            let idx = phase_index(&self.phases, offset);
            let phase_end = self.phases.get(idx + 1).map(|p| self.origin + p.from);
            match self.phases[idx].rate_bps {
                None => return Some(t),
                Some(0) => t = phase_end?,
                Some(rate) => {
                    let need = Duration::from_nanos(
                        ((bits as u128 * NS).div_ceil(rate as u128)).min(u64::MAX as u128) as u64,
                    );
                    match phase_end {
                        Some(end) if t + need > end => {
                            let sent = (end - t).as_nanos() * rate as u128 / NS;
                            bits -= (sent as u64).min(bits);
                            t = end;
                        }
                        _ => return Some(t + need),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn link(config: &LinkConfig, origin: Instant) -> Link {
        Link::new(config, origin, 7).unwrap()
    }

    /// Offers `bps` of `size`-byte packets for `secs`, draining as it goes; returns every
    /// accepted packet's delivery time.
    fn drive(link: &mut Link, t0: Instant, size: usize, bps: u64, secs: u64) -> Vec<Instant> {
        let gap =
            Duration::from_nanos(((size + UDP_IPV4_OVERHEAD) as u64 * 8 * 1_000_000_000) / bps);
        let end = t0 + Duration::from_secs(secs);
        let mut now = t0;
        let mut delivered = Vec::new();
        while now < end {
            if let Verdict::Queued { deliver_at } = link.push(now, vec![0; size]) {
                delivered.push(deliver_at);
            }
            while link.poll(now).is_some() {}
            now += gap;
        }
        while link.poll(end + Duration::from_secs(5)).is_some() {}
        delivered
    }

    #[test]
    fn unimpaired_link_delivers_at_once() {
        let t0 = Instant::now();
        let mut l = link(&LinkConfig::default(), t0);
        assert_eq!(
            l.push(t0, vec![1, 2, 3]),
            Verdict::Queued { deliver_at: t0 }
        );
        assert_eq!(l.next_deadline(), Some(t0));
        assert_eq!(l.poll(t0), Some(vec![1, 2, 3]));
        assert_eq!(l.poll(t0), None);
        assert!(l.is_idle());
    }

    #[test]
    fn delay_is_exact_and_order_kept() {
        let t0 = Instant::now();
        let cfg = LinkConfig {
            delay: 50 * MS,
            ..LinkConfig::default()
        };
        let mut l = link(&cfg, t0);
        for i in 0..10u8 {
            let now = t0 + u32::from(i) * MS;
            assert_eq!(
                l.push(now, vec![i]),
                Verdict::Queued {
                    deliver_at: now + 50 * MS
                }
            );
        }
        assert_eq!(l.poll(t0 + 49 * MS), None);
        assert_eq!(l.next_deadline(), Some(t0 + 50 * MS));
        let out: Vec<u8> = std::iter::from_fn(|| l.poll(t0 + 100 * MS))
            .map(|p| p[0])
            .collect();
        assert_eq!(out, (0..10).collect::<Vec<u8>>());
        assert_eq!(l.stats().delivered_packets, 10);
    }

    #[test]
    fn throughput_equals_rate() {
        let t0 = Instant::now();
        let rate = 2_000_000;
        let cfg = LinkConfig {
            rate_bps: Some(rate),
            queue: QueueLimit::Delay(200 * MS),
            ..LinkConfig::default()
        };
        let mut l = link(&cfg, t0);
        // Offer twice the capacity for 10 s; measure the steady part, seconds 1 to 9.
        let times = drive(&mut l, t0, 1172, 2 * rate, 10);
        let in_window = times
            .iter()
            .filter(|t| **t >= t0 + Duration::from_secs(1) && **t < t0 + Duration::from_secs(9))
            .count();
        let bps = in_window as f64 * 1200.0 * 8.0 / 8.0; // 8 s window
        assert!(
            (bps / rate as f64 - 1.0).abs() < 0.02,
            "delivered {bps} bit/s on a {rate} bit/s link"
        );
        let s = l.stats();
        assert!(
            s.dropped_queue_packets > 0,
            "overload must tail-drop: {s:?}"
        );
        assert_eq!(s.dropped_loss_packets, 0);
        assert_eq!(s.in_flight_packets(), 0);
    }

    #[test]
    fn serialization_time_and_queueing_delay() {
        let t0 = Instant::now();
        // 1 Mbit/s: a 1222-byte datagram (1250 on the wire) takes exactly 10 ms.
        let cfg = LinkConfig {
            rate_bps: Some(1_000_000),
            delay: 20 * MS,
            queue: QueueLimit::Unlimited,
            ..LinkConfig::default()
        };
        let mut l = link(&cfg, t0);
        for k in 1..=5u32 {
            assert_eq!(
                l.push(t0, vec![0; 1222]),
                Verdict::Queued {
                    deliver_at: t0 + k * 10 * MS + 20 * MS
                }
            );
        }
        assert_eq!(l.queue_delay(t0), 50 * MS);
        assert_eq!(l.queue_delay(t0 + 30 * MS), 20 * MS);
    }

    #[test]
    fn byte_queue_tail_drops() {
        let t0 = Instant::now();
        let cfg = LinkConfig {
            rate_bps: Some(1_000_000),
            queue: QueueLimit::Bytes(5 * 1250),
            ..LinkConfig::default()
        };
        let mut l = link(&cfg, t0);
        let verdicts: Vec<Verdict> = (0..8).map(|_| l.push(t0, vec![0; 1222])).collect();
        assert!(verdicts[..5]
            .iter()
            .all(|v| matches!(v, Verdict::Queued { .. })));
        assert!(verdicts[5..]
            .iter()
            .all(|v| *v == Verdict::DroppedQueueFull));
        // After one packet has left the serializer there is room for exactly one more.
        let later = t0 + 10 * MS;
        assert!(matches!(
            l.push(later, vec![0; 1222]),
            Verdict::Queued { .. }
        ));
        assert_eq!(l.push(later, vec![0; 1222]), Verdict::DroppedQueueFull);
        let s = l.stats();
        assert_eq!((s.sent_packets, s.dropped_queue_packets), (10, 4));
        assert_eq!(s.dropped_queue_bytes, 4 * 1222);
    }

    #[test]
    fn delay_queue_tail_drops() {
        let t0 = Instant::now();
        let cfg = LinkConfig {
            rate_bps: Some(1_000_000),
            queue: QueueLimit::Delay(30 * MS),
            ..LinkConfig::default()
        };
        let mut l = link(&cfg, t0);
        // Waits of 0, 10, 20, 30 ms are accepted; 40 ms is not.
        let accepted = (0..6)
            .filter(|_| matches!(l.push(t0, vec![0; 1222]), Verdict::Queued { .. }))
            .count();
        assert_eq!(accepted, 4);
    }

    #[test]
    fn jitter_bounded_and_fifo() {
        let t0 = Instant::now();
        let cfg = LinkConfig {
            delay: 50 * MS,
            jitter: 10 * MS,
            ..LinkConfig::default()
        };
        let mut l = link(&cfg, t0);
        let mut last = t0;
        let mut delays = Vec::new();
        for i in 0..2000u32 {
            // 20 ms apart, wider than the jitter band, so no clamping: the raw spread shows.
            let now = t0 + i * 20 * MS;
            let Verdict::Queued { deliver_at } = l.push(now, vec![0; 100]) else {
                panic!("no loss configured");
            };
            assert!(deliver_at >= last, "reordered");
            last = deliver_at;
            delays.push((deliver_at - now).as_secs_f64() * 1000.0);
        }
        let min = delays.iter().cloned().fold(f64::MAX, f64::min);
        let max = delays.iter().cloned().fold(0.0, f64::max);
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        assert!(min >= 40.0 && max <= 60.0, "delay range {min}..{max} ms");
        assert!(
            min < 41.0 && max > 59.0,
            "jitter should span its band: {min}..{max}"
        );
        assert!((mean - 50.0).abs() < 1.0, "mean delay {mean} ms");

        // Packets 1 ms apart with ±10 ms jitter: held back, never reordered, never early.
        let mut l = link(&cfg, t0);
        let mut last = t0;
        for i in 0..2000u32 {
            let now = t0 + i * MS;
            let Verdict::Queued { deliver_at } = l.push(now, vec![0; 100]) else {
                panic!("no loss configured");
            };
            assert!(deliver_at >= last && deliver_at >= now + 40 * MS);
            last = deliver_at;
        }
    }

    #[test]
    fn random_loss_rate_within_bounds() {
        let t0 = Instant::now();
        let cfg = LinkConfig {
            loss: LossModel::random(0.02).unwrap(),
            ..LinkConfig::default()
        };
        let mut l = link(&cfg, t0);
        let n = 100_000;
        for _ in 0..n {
            let _ = l.push(t0, vec![0; 10]);
        }
        let rate = l.stats().dropped_loss_packets as f64 / n as f64;
        // 2 % of 100k: standard deviation 0.044 %; allow 5 sigma.
        assert!((rate - 0.02).abs() < 0.0023, "loss rate {rate}");
        let mean_burst = mean_burst(&mut Link::new(&cfg, t0, 9).unwrap(), t0, n);
        assert!(
            mean_burst < 1.1,
            "random loss should not come in bursts: {mean_burst}"
        );
    }

    /// Mean length of runs of consecutive losses.
    fn mean_burst(l: &mut Link, t0: Instant, n: usize) -> f64 {
        let (mut bursts, mut lost, mut in_burst) = (0usize, 0usize, false);
        for _ in 0..n {
            let dropped = l.push(t0, vec![0; 10]) == Verdict::DroppedLoss;
            if dropped {
                lost += 1;
                if !in_burst {
                    bursts += 1;
                }
            }
            in_burst = dropped;
        }
        lost as f64 / bursts.max(1) as f64
    }

    #[test]
    fn gilbert_elliott_is_bursty() {
        let t0 = Instant::now();
        let loss = LossModel::bursty(0.05, 4.0).unwrap();
        assert!((loss.mean_loss() - 0.05).abs() < 1e-12);
        let cfg = LinkConfig {
            loss,
            ..LinkConfig::default()
        };
        let n = 200_000;
        let mut l = link(&cfg, t0);
        let burst = mean_burst(&mut l, t0, n);
        let rate = l.stats().dropped_loss_packets as f64 / n as f64;
        assert!((rate - 0.05).abs() < 0.01, "loss rate {rate}");
        assert!((burst - 4.0).abs() < 0.4, "mean burst {burst} packets");
    }

    #[test]
    fn same_seed_same_run() {
        let t0 = Instant::now();
        let cfg = LinkConfig {
            delay: 30 * MS,
            jitter: 5 * MS,
            rate_bps: Some(500_000),
            queue: QueueLimit::Bytes(20_000),
            loss: LossModel::bursty(0.1, 3.0).unwrap(),
            ..LinkConfig::default()
        };
        let run = |seed| {
            let mut l = Link::new(&cfg, t0, seed).unwrap();
            (0..500u32)
                .map(|i| l.push(t0 + i * MS, vec![0; 300]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn capacity_step_takes_effect_on_time() {
        let t0 = Instant::now();
        let cfg = LinkConfig {
            rate_bps: Some(5_000_000),
            queue: QueueLimit::Delay(100 * MS),
            schedule: vec![
                LinkChange {
                    at: Duration::from_secs(25),
                    rate_bps: Some(5_000_000),
                    ..LinkChange::default()
                },
                LinkChange {
                    at: Duration::from_secs(10),
                    rate_bps: Some(800_000),
                    ..LinkChange::default()
                },
            ],
            ..LinkConfig::default()
        };
        assert_eq!(cfg.rate_bps_at(Duration::from_secs(12)), Some(800_000));
        let mut l = link(&cfg, t0);
        // Offer 8 Mbit/s for 35 s and count delivered bits per second.
        let times = drive(&mut l, t0, 1172, 8_000_000, 35);
        let mut per_sec = [0f64; 35];
        for t in times {
            let s = (t - t0).as_secs() as usize;
            if s < 35 {
                per_sec[s] += 1200.0 * 8.0;
            }
        }
        let mbps = |s: usize| per_sec[s] / 1e6;
        for s in [1, 5, 9, 26, 30, 34] {
            assert!(
                (mbps(s) - 5.0).abs() < 0.15,
                "second {s}: {} Mbit/s",
                mbps(s)
            );
        }
        // The queue holds at most 100 ms, so the new rate shows within the first second.
        for s in [11, 15, 20, 24] {
            assert!(
                (mbps(s) - 0.8).abs() < 0.05,
                "second {s}: {} Mbit/s",
                mbps(s)
            );
        }
        assert_eq!(l.rate_bps_at(t0 + Duration::from_secs(10)), Some(800_000));
        assert_eq!(
            l.rate_bps_at(t0 + Duration::from_secs(10) - MS),
            Some(5_000_000)
        );
    }

    #[test]
    fn rate_change_applies_mid_packet_and_outage_holds_packets() {
        let t0 = Instant::now();
        let cfg = LinkConfig {
            rate_bps: Some(1_000_000),
            schedule: vec![
                LinkChange {
                    at: 5 * MS,
                    rate_bps: Some(0),
                    ..LinkChange::default()
                },
                LinkChange {
                    at: 105 * MS,
                    rate_bps: Some(2_000_000),
                    ..LinkChange::default()
                },
            ],
            ..LinkConfig::default()
        };
        let mut l = link(&cfg, t0);
        // 10000 bits: 5000 sent by 5 ms, then down for 100 ms, the rest at 2 Mbit/s takes 2.5 ms.
        assert_eq!(
            l.push(t0, vec![0; 1222]),
            Verdict::Queued {
                deliver_at: t0 + Duration::from_micros(107_500)
            }
        );
        // A link that goes down for good drops what it cannot send.
        let down = LinkConfig {
            rate_bps: Some(0),
            ..LinkConfig::default()
        };
        let mut l = link(&down, t0);
        assert_eq!(l.push(t0, vec![0; 10]), Verdict::DroppedQueueFull);
    }

    #[test]
    fn scheduled_delay_and_loss_changes() {
        let t0 = Instant::now();
        let cfg = LinkConfig {
            delay: 20 * MS,
            schedule: vec![LinkChange {
                at: Duration::from_secs(1),
                delay: Some(200 * MS),
                loss: Some(LossModel::random(1.0).unwrap()),
                ..LinkChange::default()
            }],
            ..LinkConfig::default()
        };
        let mut l = link(&cfg, t0);
        let before = t0 + 999 * MS;
        assert_eq!(
            l.push(before, vec![0]),
            Verdict::Queued {
                deliver_at: before + 20 * MS
            }
        );
        assert_eq!(
            l.push(t0 + Duration::from_secs(1), vec![0]),
            Verdict::DroppedLoss
        );
        let mut l = link(
            &LinkConfig {
                schedule: vec![LinkChange {
                    at: Duration::from_secs(1),
                    delay: Some(200 * MS),
                    ..LinkChange::default()
                }],
                ..cfg.clone()
            },
            t0,
        );
        let at = t0 + Duration::from_secs(2);
        assert_eq!(
            l.push(at, vec![0]),
            Verdict::Queued {
                deliver_at: at + 200 * MS
            }
        );
    }

    #[test]
    fn bad_loss_parameters_rejected() {
        assert!(LossModel::random(1.5).is_err());
        assert!(LossModel::bursty(0.05, 0.5).is_err());
        assert!(LossModel::bursty(1.0, 3.0).is_err());
        let cfg = LinkConfig {
            loss: LossModel::Random { p: -0.1 },
            ..LinkConfig::default()
        };
        assert!(Link::new(&cfg, Instant::now(), 0).is_err());
    }
}
