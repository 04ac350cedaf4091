//! One lesson across SFU nodes, seen from outside: the teacher publishes to the origin, the
//! classrooms play on edge nodes (`--edge`), and the run reads the origin's egress (what it
//! sends to WebRTC viewers plus what it relays to edges, from `/metrics`), how many copies each
//! edge gets (the origin's `/api/cluster` hops), and each hop's added latency (the edge's
//! `/api/cluster` and its `sfu_relay_hop_seconds` histogram). Readings are taken at two
//! instants and compared by [`cluster_report`], which is pure.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::peer::Signalling;
use crate::probe;

/// Counters of one node at one instant.
#[derive(Debug, Clone, Default)]
pub struct NodeReading {
    /// The node's id in the cluster (`/api/cluster`'s `node`); None for a node alone.
    pub node: Option<String>,
    /// RTP packets in from publishers.
    pub packets_in: f64,
    /// RTP packets and payload bytes to WebRTC viewers.
    pub forwarded_packets: f64,
    pub forwarded_bytes: f64,
    /// RTP packets and payload bytes relayed to edge nodes (None: the SFU has no such counter).
    pub relayed_packets: f64,
    pub relayed_bytes: Option<f64>,
    /// RTP packets received from origins.
    pub relay_received: f64,
    /// `sfu_relay_hop_seconds`: cumulative (upper bound in seconds, count), ascending.
    pub hop_buckets: Vec<(f64, f64)>,
    /// The origin side: per edge node id, (packets, payload bytes) relayed for the room.
    pub to_edge: BTreeMap<String, (f64, f64)>,
    /// The edge side: the room's hop from its origin, p50 and p99 over its last packets (ms).
    pub hop_p50_ms: Option<f64>,
    pub hop_p99_ms: Option<f64>,
    /// CPU seconds of the node's process, when its pid is known.
    pub cpu_s: Option<f64>,
}

impl NodeReading {
    /// From the texts of `/metrics` and `/api/cluster` (either may be empty) for `room`.
    pub fn parse(metrics: &str, cluster: &str, room: &str, cpu_s: Option<f64>) -> NodeReading {
        let m = |name: &str| probe::metric_value(metrics, name).unwrap_or(0.0);
        let mut r = NodeReading {
            packets_in: m("sfu_rtp_packets_in_total"),
            forwarded_packets: m("sfu_rtp_packets_forwarded_total"),
            forwarded_bytes: m("sfu_rtp_bytes_forwarded_total"),
            relayed_packets: m("sfu_relay_packets_sent_total"),
            relayed_bytes: probe::metric_value(metrics, "sfu_relay_bytes_sent_total"),
            relay_received: m("sfu_relay_packets_received_total"),
            hop_buckets: histogram_buckets(metrics, "sfu_relay_hop_seconds"),
            cpu_s,
            ..Default::default()
        };
        let Ok(j) = serde_json::from_str::<serde_json::Value>(cluster) else {
            return r;
        };
        r.node = j["node"].as_str().map(str::to_string);
        for hop in j["relays"].as_array().into_iter().flatten() {
            if hop["room"] != room {
                continue;
            }
            let num = |k: &str| hop[k].as_f64();
            match hop["direction"].as_str() {
                Some("to_edge") => {
                    if let Some(peer) = hop["peer"].as_str() {
                        let e = r.to_edge.entry(peer.to_string()).or_default();
                        e.0 += num("packets").unwrap_or(0.0);
                        e.1 += num("bytes").unwrap_or(0.0);
                    }
                }
                Some("from_origin") => {
                    r.hop_p50_ms = num("latency_p50_ms").or(r.hop_p50_ms);
                    r.hop_p99_ms = num("latency_p99_ms").or(r.hop_p99_ms);
                }
                _ => {}
            }
        }
        r
    }
}

/// The cumulative buckets of a Prometheus histogram without labels: (upper bound, count),
/// ascending, `+Inf` last.
pub fn histogram_buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut out: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, rest) = rest.split_once("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, rest.trim().parse().ok()?))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The difference of two readings of one histogram: (upper bound, count in the window).
fn bucket_delta(after: &[(f64, f64)], before: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|(le, n)| {
            let n0 = before
                .iter()
                .find(|(l, _)| l == le)
                .map(|x| x.1)
                .unwrap_or(0.0);
            (*le, (n - n0).max(0.0))
        })
        .collect()
}

/// The upper bound of the bucket holding quantile `q` of a cumulative histogram (seconds).
fn bucket_quantile(cum: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = cum.last()?.1;
    if total <= 0.0 {
        return None;
    }
    cum.iter().find(|(_, n)| *n >= q * total).map(|x| x.0)
}

/// Share (%) of a cumulative histogram at or below `bound` seconds.
fn share_within(cum: &[(f64, f64)], bound: f64) -> Option<f64> {
    let total = cum.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let n = cum
        .iter()
        .rfind(|(le, _)| *le <= bound + 1e-12)
        .map(|x| x.1)
        .unwrap_or(0.0);
    Some(100.0 * n / total)
}

/// Every node at one instant.
#[derive(Debug, Clone)]
pub struct ClusterReading {
    pub at: Instant,
    pub origin: NodeReading,
    pub edges: Vec<NodeReading>,
}

/// The nodes of a run: the origin (`--sfu`) and the edges (`--edge`), with their pids.
#[derive(Clone)]
pub struct ClusterProbe {
    pub origin: Signalling,
    pub origin_pid: Option<u32>,
    pub edges: Vec<(Signalling, Option<u32>)>,
}

impl ClusterProbe {
    async fn node(sig: &Signalling, pid: Option<u32>) -> NodeReading {
        let (metrics, cluster) =
            tokio::join!(sig.get_text("/metrics"), sig.get_text("/api/cluster"));
        let cpu = pid.and_then(probe::process_cpu).map(|d| d.as_secs_f64());
        NodeReading::parse(
            &metrics.unwrap_or_default(),
            &cluster.unwrap_or_default(),
            &sig.room,
            cpu,
        )
    }

    pub async fn read(&self) -> ClusterReading {
        let at = Instant::now();
        let origin = Self::node(&self.origin, self.origin_pid).await;
        let mut edges = Vec::new();
        for (sig, pid) in &self.edges {
            edges.push(Self::node(sig, *pid).await);
        }
        ClusterReading { at, origin, edges }
    }

    pub fn report(
        &self,
        before: &ClusterReading,
        after: &ClusterReading,
        classrooms: &[usize],
    ) -> ClusterReport {
        let urls: Vec<String> = self.edges.iter().map(|(s, _)| s.base.clone()).collect();
        cluster_report(&self.origin.base, &urls, classrooms, before, after)
    }
}

/// What the origin sent over the window, per second (payload bytes as the SFU counts them:
/// RTP payload, no RTP/SRTP/UDP/QUIC headers).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OriginEgress {
    pub url: String,
    pub node: Option<String>,
    pub teacher_packets_per_s: f64,
    /// To WebRTC viewers on the origin itself.
    pub viewer_packets_per_s: f64,
    pub viewer_kbps: f64,
    /// Relayed to edge nodes (all rooms).
    pub relayed_packets_per_s: f64,
    pub relayed_kbps: Option<f64>,
    /// Both.
    pub egress_packets_per_s: f64,
    pub egress_kbps: Option<f64>,
    /// The origin process's CPU (% of one core), when its pid is known.
    pub cpu_pct: Option<f64>,
}

/// One edge over the window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EdgeReport {
    pub url: String,
    pub node: Option<String>,
    pub classrooms: usize,
    /// What the origin relayed to this edge for the room (its `/api/cluster` hop).
    pub from_origin_packets_per_s: f64,
    pub from_origin_kbps: f64,
    /// That over the teacher's packets into the origin: at most 1 (one copy of the layers the
    /// edge asked for), whatever the number of classrooms on the edge.
    pub copies: Option<f64>,
    /// RTP packets this edge forwarded to its WebRTC viewers.
    pub forwarded_packets_per_s: f64,
    /// Added latency of the hop, origin receive → edge receive: p50/p99 over the edge's last
    /// 2,048 relayed packets (its `/api/cluster`, read at the window's end).
    pub hop_latency_p50_ms: Option<f64>,
    pub hop_latency_p99_ms: Option<f64>,
    /// From the edge's `sfu_relay_hop_seconds` over the whole window: the bucket bound holding
    /// the p99 (ms), and the share of packets within 5 ms.
    pub hop_p99_bucket_ms: Option<f64>,
    pub hop_within_5ms_pct: Option<f64>,
    pub cpu_pct: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterReport {
    /// The measured window: from the moment every classroom had joined (plus a settling
    /// moment) to the end of the run.
    pub window_s: f64,
    pub origin: OriginEgress,
    pub edges: Vec<EdgeReport>,
    /// The most copies any edge got (`copies`); None without edges.
    pub max_copies_per_edge: Option<f64>,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

impl ClusterReport {
    /// Lines for the terminal summary.
    pub fn summary(&self) -> String {
        let o = &self.origin;
        let mut s = format!(
            "origin {} ({}), {:.0} s window: teacher in {:.0} packets/s; to its WebRTC viewers {:.0} packets/s ({:.0} kb/s payload); relayed to edges {:.0} packets/s ({} kb/s); egress {:.0} packets/s ({} kb/s); CPU {} %\n",
            o.node.as_deref().unwrap_or("alone"),
            o.url,
            self.window_s,
            o.teacher_packets_per_s,
            o.viewer_packets_per_s,
            o.viewer_kbps,
            o.relayed_packets_per_s,
            opt(o.relayed_kbps, 0),
            o.egress_packets_per_s,
            opt(o.egress_kbps, 0),
            opt(o.cpu_pct, 1),
        );
        for e in &self.edges {
            s.push_str(&format!(
                "edge {} ({}): {} classrooms; from the origin {:.0} packets/s ({:.0} kb/s, {} copies of the teacher's packets); forwarded {:.0} packets/s; hop p50/p99 {}/{} ms (last packets), p99 within {} ms and {} % within 5 ms (window); CPU {} %\n",
                e.node.as_deref().unwrap_or("?"),
                e.url,
                e.classrooms,
                e.from_origin_packets_per_s,
                e.from_origin_kbps,
                opt(e.copies, 2),
                e.forwarded_packets_per_s,
                opt(e.hop_latency_p50_ms, 2),
                opt(e.hop_latency_p99_ms, 2),
                opt(e.hop_p99_bucket_ms, 2),
                opt(e.hop_within_5ms_pct, 2),
                opt(e.cpu_pct, 1),
            ));
        }
        s
    }
}

/// One node alone against the cluster run (`--compare-cluster one.json cluster.json`).
pub fn side_by_side(one: &crate::report::Report, cluster: &crate::report::Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "{:<46} {:>16} {:>16}", "", "one node", "origin + edges");
    let row = |s: &mut String, what: &str, f: &dyn Fn(&crate::report::Report) -> String| {
        let _ = writeln!(s, "{what:<46} {:>16} {:>16}", f(one), f(cluster));
    };
    let c = |r: &crate::report::Report| r.cluster.clone();
    row(&mut s, "classrooms joined", &|r| {
        format!("{}/{}", r.joined_classrooms, r.requested_classrooms)
    });
    row(&mut s, "nodes serving classrooms", &|r| match c(r) {
        Some(c) if !c.edges.is_empty() => format!(
            "{} ({})",
            c.edges.len(),
            c.edges
                .iter()
                .map(|e| e.classrooms.to_string())
                .collect::<Vec<_>>()
                .join("+")
        ),
        _ => "1".into(),
    });
    row(&mut s, "window s", &|r| opt(c(r).map(|c| c.window_s), 0));
    row(&mut s, "teacher packets/s into the origin", &|r| {
        opt(c(r).map(|c| c.origin.teacher_packets_per_s), 0)
    });
    row(&mut s, "origin: packets/s to WebRTC viewers", &|r| {
        opt(c(r).map(|c| c.origin.viewer_packets_per_s), 0)
    });
    row(&mut s, "origin: packets/s relayed to edges", &|r| {
        opt(c(r).map(|c| c.origin.relayed_packets_per_s), 0)
    });
    row(&mut s, "origin egress, packets/s", &|r| {
        opt(c(r).map(|c| c.origin.egress_packets_per_s), 0)
    });
    row(&mut s, "origin egress, kbit/s (RTP payload)", &|r| {
        opt(c(r).and_then(|c| c.origin.egress_kbps), 0)
    });
    row(&mut s, "origin CPU, % of a core", &|r| {
        opt(c(r).and_then(|c| c.origin.cpu_pct), 1)
    });
    row(&mut s, "most copies of the teacher per edge", &|r| {
        opt(c(r).and_then(|c| c.max_copies_per_edge), 2)
    });
    let edges_max = |r: &crate::report::Report, f: &dyn Fn(&EdgeReport) -> Option<f64>| {
        c(r).and_then(|c| c.edges.iter().filter_map(f).reduce(f64::max))
    };
    row(&mut s, "hop latency p50, ms (worst edge)", &|r| {
        opt(edges_max(r, &|e| e.hop_latency_p50_ms), 2)
    });
    row(&mut s, "hop latency p99, ms (worst edge)", &|r| {
        opt(edges_max(r, &|e| e.hop_latency_p99_ms), 2)
    });
    row(&mut s, "hop p99 bucket over the window, ms", &|r| {
        opt(edges_max(r, &|e| e.hop_p99_bucket_ms), 2)
    });
    row(&mut s, "edge CPU, % of a core (busiest)", &|r| {
        opt(edges_max(r, &|e| e.cpu_pct), 1)
    });
    row(&mut s, "classroom latency p50, ms", &|r| {
        opt(r.totals.latency_ms.p50, 1)
    });
    row(&mut s, "classroom latency p99, ms", &|r| {
        opt(r.totals.latency_ms.p99, 1)
    });
    row(&mut s, "loss after retransmission, %", &|r| {
        format!("{:.3}", r.totals.loss_after_retransmission_pct)
    });
    row(&mut s, "frozen, %", &|r| {
        format!("{:.2}", r.totals.frozen_pct)
    });
    row(&mut s, "load generator CPU, % of a core", &|r| {
        format!("{:.0}", r.loadgen.cpu_pct_mean)
    });
    // everything running on the machine: read every CPU figure above with this
    row(&mut s, "machine busy, % of all cores (mean)", &|r| {
        let busy: Vec<f64> = r
            .sfu_process
            .samples
            .iter()
            .filter(|x| !x.core_busy_pct.is_empty())
            .map(|x| x.core_busy_pct.iter().sum::<f64>() / x.core_busy_pct.len() as f64)
            .collect();
        opt(
            (!busy.is_empty()).then(|| busy.iter().sum::<f64>() / busy.len() as f64),
            0,
        )
    });
    s
}

/// The cluster figures of a window from its two readings. `classrooms[i]` is how many
/// classrooms played on edge `i`.
pub fn cluster_report(
    origin_url: &str,
    edge_urls: &[String],
    classrooms: &[usize],
    before: &ClusterReading,
    after: &ClusterReading,
) -> ClusterReport {
    let secs = after
        .at
        .saturating_duration_since(before.at)
        .as_secs_f64()
        .max(1e-3);
    let rate = |a: f64, b: f64| (a - b).max(0.0) / secs;
    let kbps = |a: f64, b: f64| rate(a, b) * 8.0 / 1000.0;
    let (o0, o1) = (&before.origin, &after.origin);
    let teacher = rate(o1.packets_in, o0.packets_in);
    let relayed_kbps = match (o1.relayed_bytes, o0.relayed_bytes) {
        (Some(a), Some(b)) => Some(kbps(a, b)),
        _ => None,
    };
    let viewer_kbps = kbps(o1.forwarded_bytes, o0.forwarded_bytes);
    let cpu_pct = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(100.0 * (a - b).max(0.0) / secs),
        _ => None,
    };
    let origin = OriginEgress {
        url: origin_url.to_string(),
        node: o1.node.clone(),
        teacher_packets_per_s: teacher,
        viewer_packets_per_s: rate(o1.forwarded_packets, o0.forwarded_packets),
        viewer_kbps,
        relayed_packets_per_s: rate(o1.relayed_packets, o0.relayed_packets),
        relayed_kbps,
        egress_packets_per_s: rate(
            o1.forwarded_packets + o1.relayed_packets,
            o0.forwarded_packets + o0.relayed_packets,
        ),
        egress_kbps: relayed_kbps.map(|r| r + viewer_kbps),
        cpu_pct: cpu_pct(o1.cpu_s, o0.cpu_s),
    };
    let edges: Vec<EdgeReport> = edge_urls
        .iter()
        .enumerate()
        .map(|(i, url)| {
            let empty = NodeReading::default();
            let e0 = before.edges.get(i).unwrap_or(&empty);
            let e1 = after.edges.get(i).unwrap_or(&empty);
            let node = e1.node.clone().or_else(|| e0.node.clone());
            let hop = |r: &NodeReading| -> (f64, f64) {
                node.as_ref()
                    .and_then(|n| r.to_edge.get(n))
                    .copied()
                    .unwrap_or_default()
            };
            let (h0, h1) = (hop(o0), hop(o1));
            let from_origin = rate(h1.0, h0.0);
            let window = bucket_delta(&e1.hop_buckets, &e0.hop_buckets);
            EdgeReport {
                url: url.clone(),
                node,
                classrooms: classrooms.get(i).copied().unwrap_or(0),
                from_origin_packets_per_s: from_origin,
                from_origin_kbps: kbps(h1.1, h0.1),
                copies: (teacher > 0.0).then(|| from_origin / teacher),
                forwarded_packets_per_s: rate(e1.forwarded_packets, e0.forwarded_packets),
                hop_latency_p50_ms: e1.hop_p50_ms,
                hop_latency_p99_ms: e1.hop_p99_ms,
                hop_p99_bucket_ms: bucket_quantile(&window, 0.99).map(|s| s * 1000.0),
                hop_within_5ms_pct: share_within(&window, 0.005),
                cpu_pct: cpu_pct(e1.cpu_s, e0.cpu_s),
            }
        })
        .collect();
    let max_copies_per_edge = edges
        .iter()
        .filter_map(|e| e.copies)
        .fold(None, |m: Option<f64>, c| Some(m.map_or(c, |m| m.max(c))));
    ClusterReport {
        window_s: secs,
        origin,
        edges,
        max_copies_per_edge,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const METRICS: &str = "\
sfu_rtp_packets_in_total 1000
sfu_rtp_packets_forwarded_total 50
sfu_rtp_bytes_forwarded_total 50000
sfu_relay_packets_sent_total 3000
sfu_relay_bytes_sent_total 3000000
sfu_relay_packets_received_total 7
sfu_relay_hop_seconds_bucket{le=\"0.001\"} 90
sfu_relay_hop_seconds_bucket{le=\"0.005\"} 99
sfu_relay_hop_seconds_bucket{le=\"+Inf\"} 100
sfu_relay_hop_seconds_sum 0.1
sfu_relay_hop_seconds_count 100
";

    #[test]
    fn reads_metrics_and_cluster_json() {
        let cluster = r#"{"node":"a","relays":[
            {"direction":"to_edge","peer":"b","room":"r","packets":10,"bytes":1000},
            {"direction":"to_edge","peer":"b","room":"other","packets":99,"bytes":1},
            {"direction":"from_origin","peer":"z","room":"r","packets":5,"bytes":5,
             "latency_p50_ms":0.4,"latency_p99_ms":1.5}]}"#;
        let r = NodeReading::parse(METRICS, cluster, "r", Some(2.0));
        assert_eq!(r.node.as_deref(), Some("a"));
        assert_eq!(r.packets_in, 1000.0);
        assert_eq!(r.relayed_bytes, Some(3_000_000.0));
        assert_eq!(r.to_edge.get("b"), Some(&(10.0, 1000.0)));
        assert_eq!(r.hop_p99_ms, Some(1.5));
        assert_eq!(
            r.hop_buckets,
            vec![(0.001, 90.0), (0.005, 99.0), (f64::INFINITY, 100.0)]
        );
        // a node alone, an older SFU, or nothing at all
        let alone = NodeReading::parse("sfu_rtp_packets_in_total 3\n", "not json", "r", None);
        assert_eq!(alone.node, None);
        assert_eq!(alone.relayed_bytes, None);
        assert!(alone.hop_buckets.is_empty());
    }

    #[test]
    fn a_window_gives_rates_copies_and_hop_latency() {
        let t0 = Instant::now();
        let origin0 = NodeReading {
            node: Some("a".into()),
            packets_in: 1000.0,
            relayed_packets: 0.0,
            relayed_bytes: Some(0.0),
            cpu_s: Some(1.0),
            ..Default::default()
        };
        let mut origin1 = origin0.clone();
        origin1.packets_in = 3000.0; // 200/s over 10 s
        origin1.relayed_packets = 3000.0;
        origin1.relayed_bytes = Some(2_500_000.0);
        origin1.forwarded_packets = 100.0;
        origin1.forwarded_bytes = 125_000.0;
        origin1.cpu_s = Some(2.0);
        origin1.to_edge.insert("b".into(), (2000.0, 1_600_000.0));
        origin1.to_edge.insert("c".into(), (1000.0, 900_000.0));
        let edge = |id: &str, n: f64| NodeReading {
            node: Some(id.into()),
            hop_buckets: vec![(0.001, n * 0.9), (0.005, n), (f64::INFINITY, n)],
            hop_p50_ms: Some(0.3),
            hop_p99_ms: Some(2.0),
            ..Default::default()
        };
        let before = ClusterReading {
            at: t0,
            origin: origin0,
            edges: vec![edge("b", 0.0), edge("c", 0.0)],
        };
        let after = ClusterReading {
            at: t0 + Duration::from_secs(10),
            origin: origin1,
            edges: vec![edge("b", 2000.0), edge("c", 1000.0)],
        };
        let urls = vec!["http://b".to_string(), "http://c".to_string()];
        let r = cluster_report("http://a", &urls, &[7, 3], &before, &after);
        assert!((r.window_s - 10.0).abs() < 1e-9);
        assert!((r.origin.teacher_packets_per_s - 200.0).abs() < 1e-9);
        assert!((r.origin.relayed_packets_per_s - 300.0).abs() < 1e-9);
        assert!((r.origin.egress_packets_per_s - 310.0).abs() < 1e-9);
        assert!((r.origin.egress_kbps.unwrap() - 2100.0).abs() < 1e-6);
        assert!((r.origin.cpu_pct.unwrap() - 10.0).abs() < 1e-9);
        assert_eq!(r.edges[0].classrooms, 7);
        assert!((r.edges[0].copies.unwrap() - 1.0).abs() < 1e-9);
        assert!((r.edges[1].copies.unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(r.max_copies_per_edge, Some(1.0));
        assert_eq!(r.edges[0].hop_p99_bucket_ms, Some(5.0));
        assert_eq!(r.edges[0].hop_within_5ms_pct, Some(100.0));
        assert_eq!(r.edges[1].hop_latency_p99_ms, Some(2.0));
    }

    #[test]
    fn histogram_quantiles() {
        let cum = vec![
            (0.001, 50.0),
            (0.002, 98.0),
            (0.01, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert_eq!(bucket_quantile(&cum, 0.5), Some(0.001));
        assert_eq!(bucket_quantile(&cum, 0.99), Some(0.01));
        assert_eq!(share_within(&cum, 0.002), Some(98.0));
        assert_eq!(bucket_quantile(&[(f64::INFINITY, 0.0)], 0.99), None);
        let d = bucket_delta(&[(0.001, 10.0), (f64::INFINITY, 12.0)], &[(0.001, 4.0)]);
        assert_eq!(d, vec![(0.001, 6.0), (f64::INFINITY, 12.0)]);
    }
}
