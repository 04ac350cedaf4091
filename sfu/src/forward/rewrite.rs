//! Per-subscriber RTP sequence number and timestamp rewriting.
//!
//! A subscriber sees one continuous stream per slot whatever happens upstream: simulcast
//! layer switches and publisher reconnects change the source, never the outgoing numbering.
//! Within one source the mapping is a fixed offset, so losses stay visible as gaps (the
//! subscriber NACKs them) and late retransmissions land in their place. Packets the SFU leaves
//! out on purpose (temporal layers a subscriber does not get) are taken out of the numbering,
//! so they never look lost.

use std::collections::VecDeque;
use std::time::Instant;

use super::SourceId;

/// Input numbers (sequence numbers, picture ids) that were left out, newest last, so that what
/// is forwarded can be numbered without gaps. Only numbers newer than every one left out or
/// forwarded are added: the numbering given to packets already forwarded never changes.
#[derive(Debug, Clone, Default)]
pub struct Dropped {
    list: VecDeque<u64>,
    /// Entries let go from the front of `list`.
    evicted: u64,
    /// The newest number forwarded.
    newest_forwarded: Option<u64>,
}

impl Dropped {
    /// Enough for seconds of video at any temporal layer pattern.
    const KEEP: usize = 2048;

    pub fn clear(&mut self) {
        self.list.clear();
        self.evicted = 0;
        self.newest_forwarded = None;
    }

    /// `n` was forwarded: nothing at or before it can be left out any more.
    pub fn forwarded(&mut self, n: u64) {
        if self.newest_forwarded.is_none_or(|f| n > f) {
            self.newest_forwarded = Some(n);
        }
    }

    pub fn add(&mut self, n: u64) {
        if self.list.back().is_some_and(|&b| b >= n)
            || self.newest_forwarded.is_some_and(|f| f >= n)
        {
            return;
        }
        self.list.push_back(n);
        if self.list.len() > Self::KEEP {
            self.list.pop_front();
            self.evicted += 1;
        }
    }

    pub fn contains(&self, n: u64) -> bool {
        self.list.binary_search(&n).is_ok()
    }

    /// How many left-out numbers are below `n`; `None` when `n` is older than what is
    /// remembered.
    pub fn below(&self, n: u64) -> Option<u64> {
        if self.evicted > 0 && self.list.front().is_some_and(|&f| n <= f) {
            return None;
        }
        Some(self.evicted + self.list.partition_point(|&x| x < n) as u64)
    }
}

#[derive(Debug, Clone)]
struct Mapping {
    source: SourceId,
    in_seq_base: u64,
    out_seq_base: u64,
    ts_offset: u32,
    dropped: Dropped,
}

#[derive(Debug, Clone, Copy)]
struct Last {
    out_seq: u64,
    out_ts: u32,
    at: Instant,
}

#[derive(Debug, Clone)]
pub struct Rewriter {
    clock_rate: u32,
    first_seq: u64,
    map: Option<Mapping>,
    last: Option<Last>,
}

impl Rewriter {
    /// `first_seq` is where the outgoing numbering starts (keep it below 2^16: the receiver
    /// starts its rollover counter at 0).
    pub fn new(clock_rate: u32, first_seq: u16) -> Self {
        Rewriter {
            clock_rate: clock_rate.max(1),
            first_seq: first_seq as u64,
            map: None,
            last: None,
        }
    }

    pub fn source(&self) -> Option<SourceId> {
        self.map.as_ref().map(|m| m.source)
    }

    /// Continue the outgoing stream from `source`, starting at the packet (`seq`, `ts`).
    /// The timestamp advances by the wall-clock time since the last forwarded packet so that
    /// playout timing stays right across the splice.
    pub fn switch_to(&mut self, source: SourceId, seq: u64, ts: u32, now: Instant) {
        let (out_seq_base, out_ts) = match self.last {
            Some(last) => {
                let elapsed = now.saturating_duration_since(last.at);
                let ticks = (elapsed.as_micros() as u64 * self.clock_rate as u64 / 1_000_000)
                    .clamp(1, u32::MAX as u64 / 2) as u32;
                (last.out_seq + 1, last.out_ts.wrapping_add(ticks))
            }
            None => (self.first_seq, ts),
        };
        self.map = Some(Mapping {
            source,
            in_seq_base: seq,
            out_seq_base,
            ts_offset: out_ts.wrapping_sub(ts),
            dropped: Dropped::default(),
        });
    }

    /// Packet `seq` of the current source is left out on purpose: later packets close up.
    pub fn drop_packet(&mut self, source: SourceId, seq: u64) {
        if let Some(m) = self.map.as_mut().filter(|m| m.source == source) {
            if seq >= m.in_seq_base {
                m.dropped.add(seq);
            }
        }
    }

    /// Rewrites a packet of the current source; `None` for other sources, for packets
    /// older than the splice point (they belong to frames the subscriber never started) and
    /// for packets left out.
    pub fn rewrite(
        &mut self,
        source: SourceId,
        seq: u64,
        ts: u32,
        now: Instant,
    ) -> Option<(u64, u32)> {
        let map = self.map.as_mut().filter(|m| m.source == source)?;
        if seq < map.in_seq_base || map.dropped.contains(seq) {
            return None;
        }
        let skipped = map.dropped.below(seq)?;
        let out_seq = map.out_seq_base + (seq - map.in_seq_base) - skipped;
        map.dropped.forwarded(seq);
        let out_ts = ts.wrapping_add(map.ts_offset);
        if self.last.is_none_or(|l| out_seq > l.out_seq) {
            self.last = Some(Last {
                out_seq,
                out_ts,
                at: now,
            });
        }
        Some((out_seq, out_ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn continuous_across_switches_and_reconnects() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000, 1000);
        let (a, b, c) = (SourceId(1), SourceId(2), SourceId(3));
        r.switch_to(a, 50_000, 1_000_000, t0);
        let mut outs = vec![];
        for i in 0..10u64 {
            let t = t0 + Duration::from_millis(33 * i);
            outs.push(
                r.rewrite(a, 50_000 + i, 1_000_000 + 2970 * i as u32, t)
                    .unwrap(),
            );
        }
        assert_eq!(outs[0], (1000, 1_000_000));
        // Switch to a layer with unrelated numbering 33 ms after the last packet.
        let t = t0 + Duration::from_millis(33 * 10);
        r.switch_to(b, 7, 4_000_000_000, t);
        let (s, ts) = r.rewrite(b, 7, 4_000_000_000, t).unwrap();
        assert_eq!(s, 1010);
        assert_eq!(ts, outs[9].1 + 2970);
        // Old-source packets are no longer forwarded.
        assert_eq!(r.rewrite(a, 50_010, 0, t), None);
        // Timestamp wraps in the source: output keeps increasing modulo 2^32.
        let (s2, ts2) = r
            .rewrite(b, 8, 4_000_000_000u32.wrapping_add(400_000_000), t)
            .unwrap();
        assert_eq!(s2, 1011);
        assert_eq!(ts2.wrapping_sub(ts), 400_000_000);
        // A reconnect (new source) 2 s later: sequence continues, timestamp advances 2 s.
        let t2 = t + Duration::from_secs(2);
        r.switch_to(c, 3, 123, t2);
        let (s3, ts3) = r.rewrite(c, 3, 123, t2).unwrap();
        assert_eq!(s3, 1012);
        assert_eq!(ts3.wrapping_sub(ts2), 180_000);
    }

    #[test]
    fn gaps_and_late_packets_keep_their_place() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(48_000, 10);
        let a = SourceId(1);
        r.switch_to(a, 100, 0, t0);
        assert_eq!(r.rewrite(a, 100, 0, t0).unwrap().0, 10);
        assert_eq!(r.rewrite(a, 103, 2880, t0).unwrap().0, 13);
        // Retransmission of 101 arrives late: it fills the gap.
        assert_eq!(r.rewrite(a, 101, 960, t0).unwrap().0, 11);
        // Before the splice point: dropped.
        assert_eq!(r.rewrite(a, 99, 0, t0), None);
        // The next switch continues after the highest sequence, not the last one written.
        r.switch_to(SourceId(2), 0, 0, t0);
        assert_eq!(r.rewrite(SourceId(2), 0, 0, t0).unwrap().0, 14);
    }

    #[test]
    fn packets_left_out_close_up_and_losses_stay_gaps() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000, 0);
        let a = SourceId(1);
        r.switch_to(a, 100, 0, t0);
        assert_eq!(r.rewrite(a, 100, 0, t0).unwrap().0, 0);
        r.drop_packet(a, 101);
        r.drop_packet(a, 102);
        assert_eq!(r.rewrite(a, 103, 0, t0).unwrap().0, 1);
        // 104 is lost; 105 leaves a gap of one for the subscriber to NACK...
        assert_eq!(r.rewrite(a, 105, 0, t0).unwrap().0, 3);
        // ... which the retransmission fills.
        assert_eq!(r.rewrite(a, 104, 0, t0).unwrap().0, 2);
        // A late copy of a packet left out stays out.
        assert_eq!(r.rewrite(a, 101, 0, t0), None);
        // A late drop decision never renumbers what was forwarded.
        r.drop_packet(a, 103);
        assert_eq!(r.rewrite(a, 103, 0, t0).unwrap().0, 1);
        // Another source's drops do not count.
        r.drop_packet(SourceId(2), 106);
        assert_eq!(r.rewrite(a, 106, 0, t0).unwrap().0, 4);
    }

    #[test]
    fn dropped_numbers_are_counted_beyond_what_is_kept() {
        let mut d = Dropped::default();
        for n in 0..(Dropped::KEEP as u64 + 10) {
            d.add(2 * n);
        }
        let last = 2 * (Dropped::KEEP as u64 + 9);
        assert_eq!(d.below(last + 1), Some(Dropped::KEEP as u64 + 10));
        assert!(d.contains(last) && !d.contains(last - 1));
        // Older than what is remembered: no answer rather than a wrong one.
        assert_eq!(d.below(3), None);
    }
}
