//! A capacity schedule in phases (RFC 8867's variable-capacity tests), and what one sender did
//! in each, from the [`super::tap`]'s windows: utilization, delivery, one-way delay, loss and
//! the time it took to adapt. Pure; `link-meter` prints it.

use std::time::Duration;

use super::tap::{percentile, Window};

/// One phase of constant capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    pub start: Duration,
    pub end: Duration,
    pub kbps: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PhaseError {
    #[error("phase {0:?}: want SECONDS:KBPS")]
    Syntax(String),
    #[error("phases must start at 0 s and rise: {0}")]
    Order(String),
    #[error("the last phase starts at {start} s, not before the end at {end} s")]
    PastEnd { start: u64, end: u64 },
}

/// `SECONDS:KBPS` from the start, comma-separated (`0:2000,40:5000,60:1200,80:2000`); the
/// last phase lasts until `end_s`.
pub fn parse_phases(text: &str, end_s: u64) -> Result<Vec<Phase>, PhaseError> {
    let mut v: Vec<(u64, u64)> = vec![];
    for part in text.split(',') {
        let syntax = || PhaseError::Syntax(part.to_string());
        let (s, k) = part.split_once(':').ok_or_else(syntax)?;
        v.push((
            s.trim().parse().map_err(|_| syntax())?,
            k.trim().parse().map_err(|_| syntax())?,
        ));
    }
    if v.first().map(|p| p.0) != Some(0) || v.windows(2).any(|w| w[1].0 <= w[0].0) {
        return Err(PhaseError::Order(text.to_string()));
    }
    if let Some(&(start, _)) = v.last().filter(|p| p.0 >= end_s) {
        return Err(PhaseError::PastEnd { start, end: end_s });
    }
    Ok(v.iter()
        .enumerate()
        .map(|(i, &(s, k))| Phase {
            start: Duration::from_secs(s),
            end: Duration::from_secs(v.get(i + 1).map_or(end_s, |n| n.0)),
            kbps: k,
        })
        .collect())
}

/// What the sender did in one phase.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseSummary {
    /// Rate into the link over the capacity, 0-1 (and more when it overran it).
    pub utilization: f64,
    /// The same for what came out.
    pub delivered: f64,
    pub delay_p50_ms: Option<f64>,
    pub delay_p95_ms: Option<f64>,
    /// Datagrams that never came out, 0-1.
    pub loss: f64,
    /// After a fall, until the sending rate stays under the new capacity for [`UNDER_FOR`];
    /// after a rise (or at the start), until it has been at [`REACHED`] of what it settles to
    /// in the phase's last [`SETTLED_OVER`] for [`REACHED_FOR`]. `None`: never.
    pub adapt: Option<Duration>,
}

pub const UNDER_FOR: Duration = Duration::from_secs(2);
pub const REACHED: f64 = 0.85;
pub const REACHED_FOR: Duration = Duration::from_secs(1);
pub const SETTLED_OVER: Duration = Duration::from_secs(10);

/// Each phase's summary from the tap's windows of `len` each.
pub fn summarize(phases: &[Phase], windows: &[Window], len: Duration) -> Vec<PhaseSummary> {
    let per = |d: Duration| (d.as_nanos() / len.as_nanos()) as usize;
    let rate =
        |w: &[Window]| w.iter().map(|w| w.sent_bps(len)).sum::<f64>() / w.len().max(1) as f64;
    let mut prev_kbps: Option<u64> = None;
    let mut out = vec![];
    for p in phases {
        let b = per(p.end).min(windows.len());
        let a = per(p.start).min(b);
        let w = &windows[a..b];
        let cap = p.kbps as f64 * 1000.0;
        let delivered_bytes: f64 = w
            .iter()
            .map(|w| {
                w.sent_bytes as f64 * w.delivered_packets as f64 / w.sent_packets.max(1) as f64
            })
            .sum();
        let delivered = delivered_bytes * 8.0 / (w.len().max(1) as f64 * len.as_secs_f64());
        let delays: Vec<f64> = w.iter().flat_map(|w| w.delay_ms.iter().copied()).collect();
        let (sent_packets, lost_packets) = w
            .iter()
            .fold((0, 0), |(s, l), w| (s + w.sent_packets, l + w.lost_packets));
        let adapted_at = match prev_kbps {
            Some(k) if k > p.kbps => {
                let n = per(UNDER_FOR).max(1);
                (0..w.len()).find(|&i| {
                    i + n <= w.len() && w[i..i + n].iter().all(|w| w.sent_bps(len) <= cap)
                })
            }
            _ => {
                let tail = w.len() - per(SETTLED_OVER).min(w.len());
                let settled = rate(&w[tail..]);
                let n = per(REACHED_FOR).max(1);
                (0..w.len())
                    .find(|&i| i + n <= w.len() && rate(&w[i..i + n]) >= REACHED * settled)
                    .map(|i| i + n)
            }
        };
        out.push(PhaseSummary {
            utilization: rate(w) / cap,
            delivered: delivered / cap,
            delay_p50_ms: percentile(&delays, 50.0),
            delay_p95_ms: percentile(&delays, 95.0),
            loss: lost_packets as f64 / sent_packets.max(1) as f64,
            adapt: adapted_at.map(|i| len * i as u32),
        });
        prev_kbps = Some(p.kbps);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_millis(500);

    /// A window with `kbps` into the link in 1,000-byte datagrams, all out after `delay_ms`
    /// but `lost`.
    fn window(i: usize, kbps: u64, delay_ms: f64, lost: u64) -> Window {
        let packets = kbps * 1000 / 8 / 2 / 1000;
        Window {
            at_ms: 500 * i as u64,
            sent_bytes: packets * 1000,
            sent_packets: packets,
            delivered_packets: packets - lost,
            lost_packets: lost,
            delay_ms: vec![delay_ms; (packets - lost) as usize],
        }
    }

    #[test]
    fn phases_parse_and_bad_ones_are_named() {
        let p = parse_phases("0:2000, 40:5000,60:1200", 100).unwrap();
        assert_eq!(
            p,
            vec![
                Phase {
                    start: Duration::from_secs(0),
                    end: Duration::from_secs(40),
                    kbps: 2000
                },
                Phase {
                    start: Duration::from_secs(40),
                    end: Duration::from_secs(60),
                    kbps: 5000
                },
                Phase {
                    start: Duration::from_secs(60),
                    end: Duration::from_secs(100),
                    kbps: 1200
                },
            ]
        );
        assert_eq!(
            parse_phases("0-2000", 10),
            Err(PhaseError::Syntax("0-2000".into()))
        );
        assert_eq!(
            parse_phases("0:fast", 10),
            Err(PhaseError::Syntax("0:fast".into()))
        );
        assert_eq!(
            parse_phases("5:2000", 10),
            Err(PhaseError::Order("5:2000".into()))
        );
        assert_eq!(
            parse_phases("0:1,4:2,4:3", 10),
            Err(PhaseError::Order("0:1,4:2,4:3".into()))
        );
        assert_eq!(
            parse_phases("0:1,10:2", 10),
            Err(PhaseError::PastEnd { start: 10, end: 10 })
        );
    }

    #[test]
    fn a_sender_that_climbs_then_falls_under_a_dropped_capacity() {
        let phases = parse_phases("0:2000,20:1000", 40).unwrap();
        let mut w = vec![];
        // Phase 1: 400 kbit/s for 3 s, then 1,600 (80 % of 2 Mbit/s).
        for i in 0..40 {
            w.push(window(i, if i < 6 { 400 } else { 1600 }, 50.0, 0));
        }
        // Phase 2: 1,600 kbit/s into 1 Mbit/s for 1.5 s (a queue, and loss), then 800.
        for i in 40..80 {
            let over = i < 43;
            w.push(window(
                i,
                if over { 1600 } else { 800 },
                if over { 400.0 } else { 60.0 },
                if over { 10 } else { 0 },
            ));
        }
        let s = summarize(&phases, &w, W);
        assert_eq!(s.len(), 2);
        // 6 windows at 400 and 34 at 1,600 over 2 Mbit/s.
        assert!((s[0].utilization - (6.0 * 400.0 + 34.0 * 1600.0) / 40.0 / 2000.0).abs() < 1e-9);
        assert_eq!(s[0].loss, 0.0);
        assert_eq!(s[0].delay_p95_ms, Some(50.0));
        // It settles at 1,600; 85 % of that is first held for 1 s in windows 6-7.
        assert_eq!(s[0].adapt, Some(Duration::from_secs(4)));
        // Under 1 Mbit/s for 2 s in a row from window 43: 1.5 s after the fall.
        assert_eq!(s[1].adapt, Some(Duration::from_millis(1500)));
        assert_eq!(s[1].delay_p95_ms, Some(400.0));
        assert!(s[1].loss > 0.0 && s[1].delivered < s[1].utilization);
        // A sender that never gets under the new capacity never adapted.
        let over: Vec<Window> = (0..80).map(|i| window(i, 1600, 50.0, 0)).collect();
        assert_eq!(summarize(&phases, &over, W)[1].adapt, None);
    }
}
