//! Prometheus metrics of the SFU (`/metrics`).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub rooms: IntGauge,
    pub peers: IntGaugeVec,
    pub packets_in: IntCounter,
    pub bytes_in: IntCounter,
    pub packets_out: IntCounter,
    pub bytes_out: IntCounter,
    pub datagrams_in: IntCounter,
    pub datagrams_out: IntCounter,
    pub dropped: IntCounterVec,
    pub nacks_received: IntCounter,
    pub plis_received: IntCounter,
    pub keyframe_requests_sent: IntCounter,
    pub keyframes_received: IntCounter,
    pub layer_switches: IntCounter,
    pub sessions_created: IntCounterVec,
    pub http_rejections: IntCounterVec,
    pub forward_seconds: Histogram,
    pub subscriber_estimate: IntGaugeVec,
    pub subscriber_allocated: IntGaugeVec,
    pub subscriber_layer: IntGaugeVec,
    pub allocation_pauses: IntCounter,
    pub estimate_dips: IntCounterVec,
    pub keyframe_wait_freezes: IntCounter,
    pub room_commands: IntCounterVec,
    pub lessons_ended: IntCounter,
    pub dynacast_changes: IntCounter,
    pub relay_links: IntGauge,
    pub relay_packets_sent: IntCounter,
    pub relay_bytes_sent: IntCounter,
    pub relay_packets_received: IntCounter,
    pub relay_repairs_sent: IntCounter,
    pub relay_hop_seconds: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let rooms = IntGauge::new("sfu_rooms", "Rooms with at least one participant").unwrap();
        registry.register(Box::new(rooms.clone())).unwrap();
        let peers = IntGaugeVec::new(
            Opts::new("sfu_peers", "Connected WebRTC sessions"),
            &["kind", "role"],
        )
        .unwrap();
        registry.register(Box::new(peers.clone())).unwrap();
        let forward_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "sfu_forward_seconds",
                "Time from receiving a media packet to handing each forwarded copy to the socket",
            )
            .buckets(vec![
                0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
                0.01, 0.025, 0.05,
            ]),
        )
        .unwrap();
        registry
            .register(Box::new(forward_seconds.clone()))
            .unwrap();
        let relay_hop_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "sfu_relay_hop_seconds",
                "Added latency of a relay hop: from the origin receiving a packet to this edge receiving it",
            )
            .buckets(vec![
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
            ]),
        )
        .unwrap();
        registry
            .register(Box::new(relay_hop_seconds.clone()))
            .unwrap();
        let relay_links = IntGauge::new(
            "sfu_relay_edge_links",
            "Edge connections this node relays rooms to",
        )
        .unwrap();
        registry.register(Box::new(relay_links.clone())).unwrap();
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        Metrics {
            subscriber_estimate: gauge_vec(
                "sfu_subscriber_estimate_bps",
                "Bandwidth estimate toward each subscriber",
                &["room", "session"],
            ),
            subscriber_allocated: gauge_vec(
                "sfu_subscriber_allocated_bps",
                "Bitrate the allocator gives each subscriber",
                &["room", "session"],
            ),
            subscriber_layer: gauge_vec(
                "sfu_subscriber_layer",
                "Layer forwarded per subscriber slot (0 = lowest; -1 = paused or waiting)",
                &["room", "session", "slot"],
            ),
            allocation_pauses: counter(
                "sfu_allocation_pauses_total",
                "Video tracks paused for subscribers whose link could not carry them",
            ),
            estimate_dips: counter_vec(
                "sfu_estimate_dips_total",
                "Estimate dips just under a subscriber's allocation, held while a probe checked them, by outcome",
                &["outcome"],
            ),
            keyframe_wait_freezes: counter(
                "sfu_keyframe_wait_freezes_total",
                "Subscriber freezes (over 200 ms) spent waiting for a keyframe with nothing to forward",
            ),
            relay_hop_seconds,
            relay_links,
            relay_packets_sent: counter(
                "sfu_relay_packets_sent_total",
                "RTP packets relayed to edge nodes",
            ),
            relay_bytes_sent: counter(
                "sfu_relay_bytes_sent_total",
                "RTP payload bytes relayed to edge nodes (as sfu_rtp_bytes_forwarded_total counts them)",
            ),
            relay_packets_received: counter(
                "sfu_relay_packets_received_total",
                "RTP packets received from the origin node of relayed rooms",
            ),
            relay_repairs_sent: counter(
                "sfu_relay_repairs_sent_total",
                "Packets resent to edge nodes from the relay cache after a NACK",
            ),
            rooms,
            peers,
            packets_in: counter(
                "sfu_rtp_packets_in_total",
                "RTP packets received from publishers",
            ),
            bytes_in: counter(
                "sfu_rtp_bytes_in_total",
                "RTP payload bytes received from publishers",
            ),
            packets_out: counter(
                "sfu_rtp_packets_forwarded_total",
                "RTP packets forwarded to subscribers",
            ),
            bytes_out: counter(
                "sfu_rtp_bytes_forwarded_total",
                "RTP payload bytes forwarded to subscribers",
            ),
            datagrams_in: counter(
                "sfu_datagrams_in_total",
                "Datagrams received on the media port",
            ),
            datagrams_out: counter(
                "sfu_datagrams_out_total",
                "Datagrams sent from the media port",
            ),
            dropped: counter_vec(
                "sfu_dropped_datagrams_total",
                "Datagrams dropped on the media port",
                &["reason"],
            ),
            nacks_received: counter(
                "sfu_nacks_received_total",
                "NACKs received from subscribers",
            ),
            plis_received: counter(
                "sfu_plis_received_total",
                "PLI/FIR received from subscribers",
            ),
            keyframe_requests_sent: counter(
                "sfu_keyframe_requests_sent_total",
                "Keyframe requests (PLI/FIR) sent to publishers",
            ),
            keyframes_received: counter(
                "sfu_keyframes_received_total",
                "Keyframes received from publishers",
            ),
            layer_switches: counter(
                "sfu_layer_switches_total",
                "Source or layer switches in subscriber slots",
            ),
            sessions_created: counter_vec(
                "sfu_sessions_created_total",
                "WHIP/WHEP sessions created",
                &["kind"],
            ),
            http_rejections: counter_vec(
                "sfu_http_rejections_total",
                "WHIP/WHEP requests refused",
                &["status"],
            ),
            room_commands: counter_vec(
                "sfu_room_commands_total",
                "Room commands (hand, stage, mute, pin, remove, start, end) by outcome",
                &["command", "outcome"],
            ),
            lessons_ended: counter(
                "sfu_lessons_ended_total",
                "Lessons ended (by the teacher or the teacher timeout)",
            ),
            dynacast_changes: counter(
                "sfu_dynacast_changes_total",
                "Times a publisher was told to stop or resume simulcast layers",
            ),
            forward_seconds,
            registry,
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Grafana dashboard kept in the repo asks only for metrics this server exports.
    #[test]
    fn grafana_dashboard_uses_exported_metrics() {
        let dash: serde_json::Value =
            serde_json::from_str(include_str!("../../ops/grafana/sfu-dashboard.json"))
                .expect("the dashboard is JSON");
        let m = Metrics::new();
        // Give every labelled family a child so that it shows in the output.
        m.peers.with_label_values(&["whep", "classroom"]).inc();
        m.dropped.with_label_values(&["x"]).inc();
        m.sessions_created.with_label_values(&["whep"]).inc();
        m.http_rejections.with_label_values(&["401"]).inc();
        m.subscriber_estimate.with_label_values(&["r", "s"]).set(1);
        m.subscriber_allocated.with_label_values(&["r", "s"]).set(1);
        m.subscriber_layer
            .with_label_values(&["r", "s", "x"])
            .set(1);
        m.room_commands.with_label_values(&["hand", "ok"]).inc();
        m.forward_seconds.observe(0.001);
        let text = m.render();
        let mut checked = 0;
        for panel in dash["panels"].as_array().expect("panels") {
            for t in panel["targets"].as_array().expect("targets") {
                let expr = t["expr"].as_str().expect("expr");
                for (i, _) in expr.match_indices("sfu_") {
                    let name: String = expr[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    assert!(
                        text.lines().any(|l| l.starts_with(&format!("{name}{{"))
                            || l.starts_with(&format!("{name} "))),
                        "panel {:?} uses {name}, which /metrics does not export",
                        panel["title"]
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked >= 15, "only {checked} metric references found");
    }
}
