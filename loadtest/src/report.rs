//! What a run found: the JSON report (`--report`), the terminal summary and the self-contained
//! HTML page (`--html`) with plots drawn by plotters as inline SVG.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub samples: u64,
}

impl Percentiles {
    pub fn of(h: &crate::measure::Histogram) -> Self {
        Percentiles {
            p50: h.quantile_ms(0.50),
            p95: h.quantile_ms(0.95),
            p99: h.quantile_ms(0.99),
            samples: h.count(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerReport {
    pub rid: String,
    pub width: u16,
    pub height: u16,
    pub target_kbps: u32,
    /// The encoded clip's own average bitrate.
    pub clip_kbps: f64,
    /// RTP bytes handed to the stack per second of sending.
    pub sent_kbps: f64,
    pub frames: u64,
    pub keyframes: u64,
    pub keyframe_requests: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TeacherReport {
    pub layers: Vec<LayerReport>,
    pub audio_packets: u64,
    pub audio_kbps: f64,
    pub write_errors: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayCounts {
    pub down_offered_bytes: u64,
    pub down_delivered_bytes: u64,
    pub down_dropped_queue_packets: u64,
    pub down_dropped_loss_packets: u64,
    pub up_delivered_packets: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassroomReport {
    pub name: String,
    pub profile: String,
    /// Downlink capacity at the start (None: unlimited).
    pub capacity_kbps: Option<u64>,
    pub joined_at_s: f64,
    /// When it left (churn mode); None: present to the end.
    pub left_at_s: Option<f64>,
    pub connect_ms: f64,
    /// WHEP POST to the first complete frame after a keyframe.
    pub time_to_first_frame_ms: Option<f64>,
    /// RTP bytes received (media + repairs) per second of being in the room.
    pub rx_kbps: f64,
    /// Datagram bytes the emulated link delivered (IP/UDP headers included), per second.
    pub link_kbps: f64,
    /// link_kbps / capacity_kbps.
    pub link_use: Option<f64>,
    pub video_packets: u64,
    pub rtx_packets: u64,
    /// Sequence numbers asked for again (each NACK entry counts).
    pub nacks_sent: u64,
    pub loss_before_retransmission_pct: f64,
    pub loss_after_retransmission_pct: f64,
    pub loss: crate::measure::LossCounts,
    pub frames_sent: u64,
    pub frames_complete: u64,
    pub frames_complete_pct: f64,
    pub keyframes: u64,
    pub freezes: u64,
    pub frozen_pct: f64,
    pub latency_ms: Percentiles,
    /// Latency less the link's one-way base delay (half its RTT).
    pub latency_over_link_ms: Percentiles,
    /// Packets whose send time was not found (should be 0).
    pub latency_unmatched: u64,
    pub layer_switches: u64,
    /// Complete frames per layer rid.
    pub frames_by_layer: BTreeMap<String, u64>,
    pub audio_packets: u64,
    pub audio_loss_pct: f64,
    pub relay: Option<RelayCounts>,
    /// kbit/s per second of the run (RTP level).
    pub bitrate_kbps: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileReport {
    pub profile: String,
    pub classrooms: usize,
    pub capacity_kbps: Option<u64>,
    pub rx_kbps_mean: f64,
    pub link_kbps_mean: f64,
    pub latency_ms: Percentiles,
    pub loss_before_retransmission_pct: f64,
    pub loss_after_retransmission_pct: f64,
    pub frozen_pct: f64,
    pub frames_complete_pct: f64,
    pub time_to_first_frame_ms_median: Option<f64>,
    pub layer_switches: u64,
    /// Mean kbit/s per classroom per second of the run.
    pub bitrate_kbps: Vec<f64>,
    /// Latency CDF points (ms, fraction).
    pub latency_cdf: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub t_s: f64,
    pub classrooms: usize,
    /// SFU process CPU, % of one core.
    pub sfu_cpu_pct: Option<f64>,
    pub sfu_rss_mb: Option<f64>,
    /// Machine busy % per core.
    pub core_busy_pct: Vec<f64>,
    /// Load generator CPU, % of one core.
    pub loadgen_cpu_pct: f64,
    pub forwarded_per_s: Option<f64>,
    /// Packets the server sent toward classrooms per second, counted at their relays (RTP,
    /// RTCP and ICE alike): the same instrument for every target.
    #[serde(default)]
    pub relayed_per_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SfuReport {
    pub pid: Option<u32>,
    pub cpu_seconds: Option<f64>,
    pub cpu_pct_mean: Option<f64>,
    pub rss_mb_max: Option<f64>,
    pub forwarded_packets: Option<f64>,
    /// Forwarded packets per second of SFU CPU time.
    pub forwarded_per_core_second: Option<f64>,
    /// Packets the server sent toward classrooms, counted at the relays.
    #[serde(default)]
    pub relayed_packets: Option<f64>,
    /// Those per second of the server's CPU time: comparable across targets.
    #[serde(default)]
    pub relayed_per_core_second: Option<f64>,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadgenReport {
    pub cpu_seconds: f64,
    pub cpu_pct_mean: f64,
    /// Load generator CPU per simulated classroom, % of one core.
    pub cpu_pct_per_classroom: f64,
    pub cores: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RampStep {
    pub classrooms: usize,
    pub latency_over_link_p99_ms: Option<f64>,
    pub loss_after_retransmission_pct: f64,
    pub frozen_pct: f64,
    pub sfu_cpu_pct: Option<f64>,
    /// Mean busy % over the machine's cores in the judged window (everything running, ours
    /// and others': near 100 % means the step was judged on a saturated machine).
    pub machine_busy_pct: Option<f64>,
    pub held: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RampReport {
    pub p99_limit_ms: f64,
    pub loss_limit_pct: f64,
    pub frozen_limit_pct: f64,
    pub steps: Vec<RampStep>,
    /// The most classrooms held within every limit (0: not even the first step).
    pub max_held: usize,
    pub stopped_because: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Totals {
    pub latency_ms: Percentiles,
    pub loss_before_retransmission_pct: f64,
    pub loss_after_retransmission_pct: f64,
    pub frozen_pct: f64,
    pub frames_complete_pct: f64,
    pub latency_cdf: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub mode: String,
    /// The server under test: "sfu" (ours) or "janus".
    #[serde(default = "default_target")]
    pub target: String,
    /// Its HTTP base.
    pub sfu: String,
    pub room: String,
    pub started_unix_s: u64,
    pub duration_s: f64,
    pub requested_classrooms: usize,
    pub joined_classrooms: usize,
    pub failed_joins: Vec<String>,
    pub twcc: bool,
    pub teacher: TeacherReport,
    pub classrooms: Vec<ClassroomReport>,
    pub profiles: Vec<ProfileReport>,
    pub totals: Totals,
    pub sfu_process: SfuReport,
    pub loadgen: LoadgenReport,
    pub ramp: Option<RampReport>,
    pub churn: Option<ChurnReport>,
    /// Against our SFU: the origin's egress and, with `--edge`, each edge's copies and hop
    /// latency. Absent in reports from before it existed.
    #[serde(default)]
    pub cluster: Option<crate::cluster::ClusterReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChurnReport {
    /// Classrooms leaving (and as many joining) per second.
    pub per_s: f64,
    pub joins: usize,
    pub leaves: usize,
    pub failed_joins: usize,
}

fn default_target() -> String {
    "sfu".into()
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

impl Report {
    /// The terminal summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "loadtest {} against {} at {} room {}: {}/{} classrooms joined, {:.0} s{}",
            self.mode,
            self.target,
            self.sfu,
            self.room,
            self.joined_classrooms,
            self.requested_classrooms,
            self.duration_s,
            if self.twcc { ", TWCC" } else { ", no TWCC" }
        );
        let _ = writeln!(
            s,
            "{:<18} {:>4} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>8} {:>8} {:>7} {:>7} {:>8}",
            "profile",
            "n",
            "cap kb/s",
            "rx kb/s",
            "link kb/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "loss pre%",
            "loss post%",
            "frames%",
            "frozen%",
            "ttff ms"
        );
        let row = |s: &mut String, p: &ProfileReport| {
            let _ = writeln!(
                s,
                "{:<18} {:>4} {:>8} {:>8.0} {:>8.0} {:>7} {:>7} {:>7} {:>8.2} {:>8.3} {:>7.1} {:>7.2} {:>8}",
                p.profile,
                p.classrooms,
                p.capacity_kbps
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "inf".into()),
                p.rx_kbps_mean,
                p.link_kbps_mean,
                opt(p.latency_ms.p50, 1),
                opt(p.latency_ms.p95, 1),
                opt(p.latency_ms.p99, 1),
                p.loss_before_retransmission_pct,
                p.loss_after_retransmission_pct,
                p.frames_complete_pct,
                p.frozen_pct,
                opt(p.time_to_first_frame_ms_median, 0),
            );
        };
        for p in &self.profiles {
            row(&mut s, p);
        }
        let t = &self.totals;
        let _ = writeln!(
            s,
            "all: latency p50/p95/p99 {}/{}/{} ms, loss before/after retransmission {:.2}/{:.3} %, frames complete {:.1} %, frozen {:.2} %",
            opt(t.latency_ms.p50, 1),
            opt(t.latency_ms.p95, 1),
            opt(t.latency_ms.p99, 1),
            t.loss_before_retransmission_pct,
            t.loss_after_retransmission_pct,
            t.frames_complete_pct,
            t.frozen_pct
        );
        let f = &self.sfu_process;
        let _ = writeln!(
            s,
            "{} (pid {}): CPU {} % of a core (mean), RSS max {} MB, forwarded {} packets, {} packets per core-second; sent toward classrooms (at the relays) {} packets, {} per core-second",
            self.target,
            f.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
            opt(f.cpu_pct_mean, 1),
            opt(f.rss_mb_max, 1),
            opt(f.forwarded_packets, 0),
            opt(f.forwarded_per_core_second, 0),
            opt(f.relayed_packets, 0),
            opt(f.relayed_per_core_second, 0),
        );
        let _ = writeln!(
            s,
            "load generator: CPU {:.1} % of a core (mean), {:.2} % per classroom, {} cores on this machine",
            self.loadgen.cpu_pct_mean, self.loadgen.cpu_pct_per_classroom, self.loadgen.cores
        );
        for l in &self.teacher.layers {
            let _ = writeln!(
                s,
                "teacher layer {} {}x{}: target {} kb/s, clip {:.0} kb/s, sent {:.0} kb/s, {} keyframes ({} requested)",
                l.rid, l.width, l.height, l.target_kbps, l.clip_kbps, l.sent_kbps, l.keyframes, l.keyframe_requests
            );
        }
        if let Some(c) = &self.cluster {
            s.push_str(&c.summary());
        }
        if let Some(r) = &self.ramp {
            for st in &r.steps {
                let _ = writeln!(
                    s,
                    "ramp {:>4} classrooms: p99 over the link {} ms, loss after retransmission {:.3} %, frozen {:.2} %, SFU CPU {} %, machine busy {} % -> {}",
                    st.classrooms,
                    opt(st.latency_over_link_p99_ms, 1),
                    st.loss_after_retransmission_pct,
                    st.frozen_pct,
                    opt(st.sfu_cpu_pct, 0),
                    opt(st.machine_busy_pct, 0),
                    if st.held { "held" } else { "BROKEN" }
                );
            }
            let _ = writeln!(
                s,
                "ramp: largest load held {} classrooms ({})",
                r.max_held, r.stopped_because
            );
        }
        if let Some(c) = &self.churn {
            let _ = writeln!(
                s,
                "churn {:.2}/s: {} left, {} joined, {} joins failed",
                c.per_s, c.leaves, c.joins, c.failed_joins
            );
        }
        if !self.failed_joins.is_empty() {
            let _ = writeln!(
                s,
                "{} joins failed, first: {}",
                self.failed_joins.len(),
                self.failed_joins[0]
            );
        }
        s
    }

    /// The self-contained HTML page.
    pub fn html(&self) -> String {
        let mut h = String::new();
        let _ = write!(
            h,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>loadtest report</title>\
             <style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}\
             td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}th{{background:#eee}}\
             pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head><body>\
             <h1>loadtest report</h1><pre>{}</pre>",
            escape(&self.summary())
        );
        h.push_str(
            "<h2>Forwarding latency CDF (teacher send → classroom receive, per profile)</h2>",
        );
        h.push_str(&self.plot_latency_cdf());
        h.push_str("<h2>Received bitrate over time (mean per classroom, per profile)</h2>");
        h.push_str(&self.plot_bitrate());
        h.push_str("<h2>SFU CPU against classrooms</h2>");
        h.push_str(&self.plot_cpu());
        h.push_str("<h2>Classrooms</h2><table><tr><th>name</th><th>profile</th><th>cap kb/s</th><th>rx kb/s</th><th>link kb/s</th><th>p50</th><th>p95</th><th>p99</th><th>loss pre %</th><th>loss post %</th><th>frames %</th><th>freezes</th><th>frozen %</th><th>ttff ms</th><th>switches</th></tr>");
        for c in &self.classrooms {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.3}</td><td>{:.1}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td></tr>",
                escape(&c.name),
                escape(&c.profile),
                c.capacity_kbps.map(|x| x.to_string()).unwrap_or_else(|| "inf".into()),
                c.rx_kbps,
                c.link_kbps,
                opt(c.latency_ms.p50, 1),
                opt(c.latency_ms.p95, 1),
                opt(c.latency_ms.p99, 1),
                c.loss_before_retransmission_pct,
                c.loss_after_retransmission_pct,
                c.frames_complete_pct,
                c.freezes,
                c.frozen_pct,
                opt(c.time_to_first_frame_ms, 0),
                c.layer_switches
            );
        }
        h.push_str("</table></body></html>\n");
        h
    }

    fn plot_latency_cdf(&self) -> String {
        let x_max = self
            .profiles
            .iter()
            .filter_map(|p| p.latency_ms.p99)
            .fold(10.0f64, f64::max)
            * 1.3;
        let series: Vec<(String, Vec<(f64, f64)>)> = self
            .profiles
            .iter()
            .map(|p| (p.profile.clone(), p.latency_cdf.clone()))
            .collect();
        line_plot(
            "latency (ms)",
            "fraction ≤",
            (0.0, x_max),
            (0.0, 1.0),
            &series,
        )
    }

    fn plot_bitrate(&self) -> String {
        let series: Vec<(String, Vec<(f64, f64)>)> = self
            .profiles
            .iter()
            .map(|p| {
                (
                    p.profile.clone(),
                    p.bitrate_kbps
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (i as f64, *v))
                        .collect(),
                )
            })
            .collect();
        let x_max = series.iter().map(|s| s.1.len()).max().unwrap_or(1).max(1) as f64;
        let y_max = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.1))
            .fold(100.0f64, f64::max)
            * 1.15;
        line_plot("time (s)", "kbit/s", (0.0, x_max), (0.0, y_max), &series)
    }

    fn plot_cpu(&self) -> String {
        let pts: Vec<(f64, f64)> = self
            .sfu_process
            .samples
            .iter()
            .filter_map(|s| Some((s.classrooms as f64, s.sfu_cpu_pct?)))
            .collect();
        let gen: Vec<(f64, f64)> = self
            .sfu_process
            .samples
            .iter()
            .map(|s| (s.classrooms as f64, s.loadgen_cpu_pct))
            .collect();
        let x_max = pts.iter().chain(&gen).map(|p| p.0).fold(1.0f64, f64::max) * 1.05;
        let y_max = pts.iter().chain(&gen).map(|p| p.1).fold(10.0f64, f64::max) * 1.15;
        line_plot(
            "classrooms",
            "% of one core",
            (0.0, x_max),
            (0.0, y_max),
            &[
                ("SFU".to_string(), pts),
                ("load generator".to_string(), gen),
            ],
        )
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG line chart.
fn line_plot(
    x_label: &str,
    y_label: &str,
    x: (f64, f64),
    y: (f64, f64),
    series: &[(String, Vec<(f64, f64)>)],
) -> String {
    let mut svg = String::new();
    let res = (|| -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::with_string(&mut svg, (900, 380)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x.0..x.1, y.0..y.1)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    })();
    if let Err(e) = res {
        return format!("<p>(plot failed: {})</p>", escape(&e.to_string()));
    }
    svg
}

/// Our SFU against Janus from two reports of the same run shape: server CPU per packet sent
/// toward classrooms (counted at the relays for both, so the instrument is the same), the
/// largest load held (ramp) per core, latency and freezes.
pub fn compare(ours: &Report, janus: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{:<44} {:>14} {:>14}", "", "ours", "janus");
    let row = |s: &mut String, what: &str, a: String, b: String| {
        let _ = writeln!(s, "{what:<44} {a:>14} {b:>14}");
    };
    let both = |f: &dyn Fn(&Report) -> String| (f(ours), f(janus));
    let (a, b) = both(&|r| r.target.clone());
    row(&mut s, "target", a, b);
    let (a, b) = both(&|r| format!("{}/{}", r.joined_classrooms, r.requested_classrooms));
    row(&mut s, "classrooms joined", a, b);
    let (a, b) = both(&|r| format!("{:.0}", r.duration_s));
    row(&mut s, "duration s", a, b);
    let (a, b) = both(&|r| opt(r.sfu_process.cpu_pct_mean, 1));
    row(&mut s, "server CPU, % of a core (mean)", a, b);
    let (a, b) = both(&|r| opt(r.sfu_process.rss_mb_max, 1));
    row(&mut s, "server RSS max MB", a, b);
    let (a, b) = both(&|r| opt(r.sfu_process.relayed_packets, 0));
    row(&mut s, "packets sent toward classrooms", a, b);
    let per_pkt = |r: &Report| {
        r.sfu_process
            .relayed_per_core_second
            .filter(|x| *x > 0.0)
            .map(|x| 1e6 / x)
    };
    let (a, b) = both(&|r| opt(per_pkt(r), 2));
    row(&mut s, "server CPU per packet, µs", a, b);
    let (a, b) = both(&|r| opt(r.sfu_process.relayed_per_core_second, 0));
    row(&mut s, "packets per server core-second", a, b);
    let held = |r: &Report| {
        r.ramp.as_ref().map(|rr| {
            let cpu = rr
                .steps
                .iter()
                .rfind(|st| st.held)
                .and_then(|st| st.sfu_cpu_pct)
                .unwrap_or(0.0);
            (rr.max_held, cpu)
        })
    };
    let (a, b) = both(&|r| match held(r) {
        Some((n, cpu)) => format!("{n} at {cpu:.0} %"),
        None => "-".into(),
    });
    row(&mut s, "ramp: most classrooms held (server CPU)", a, b);
    let (a, b) = both(&|r| match held(r) {
        Some((n, cpu)) if cpu > 0.0 => format!("{:.0}", n as f64 * 100.0 / cpu),
        _ => "-".into(),
    });
    row(&mut s, "ramp: classrooms held per server core", a, b);
    let (a, b) = both(&|r| {
        format!(
            "{}/{}/{}",
            opt(r.totals.latency_ms.p50, 1),
            opt(r.totals.latency_ms.p95, 1),
            opt(r.totals.latency_ms.p99, 1)
        )
    });
    row(&mut s, "latency p50/p95/p99 ms", a, b);
    let (a, b) = both(&|r| format!("{:.3}", r.totals.loss_after_retransmission_pct));
    row(&mut s, "loss after retransmission %", a, b);
    let (a, b) = both(&|r| format!("{:.1}", r.totals.frames_complete_pct));
    row(&mut s, "frames complete %", a, b);
    let (a, b) = both(&|r| {
        r.classrooms
            .iter()
            .map(|c| c.freezes)
            .sum::<u64>()
            .to_string()
    });
    row(&mut s, "freezes", a, b);
    let (a, b) = both(&|r| format!("{:.2}", r.totals.frozen_pct));
    row(&mut s, "frozen %", a, b);
    let ttff = |r: &Report| {
        let mut v: Vec<f64> = r
            .classrooms
            .iter()
            .filter_map(|c| c.time_to_first_frame_ms)
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let (a, b) = both(&|r| opt(ttff(r), 0));
    row(&mut s, "time to first frame ms (median)", a, b);
    let (a, b) = both(&|r| format!("{:.1}", r.loadgen.cpu_pct_mean));
    row(&mut s, "load generator CPU, % of a core", a, b);
    if let (Some(x), Some(y)) = (
        ours.sfu_process.relayed_per_core_second,
        janus.sfu_process.relayed_per_core_second,
    ) {
        if y > 0.0 {
            let _ = writeln!(
                s,
                "efficiency (packets per server core-second): ours is {:.2}x Janus's",
                x / y
            );
        }
    }
    s
}
