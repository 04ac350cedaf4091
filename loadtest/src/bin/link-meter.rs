//! `link-meter`: one sender's uplink through an emulated link with a capacity schedule
//! (`loadtest::link::Relay`, in process), measured from outside it (`loadtest::link::tap`),
//! summarised per capacity phase. Used by `classroom-agent/bench/rfc8867.sh` for the agent and
//! for Chromium on the same link.
//!
//! Prints the address the sender must send to (one line), runs the schedule, then prints a
//! Markdown table (utilization, one-way delay p95, loss, time to adapt per phase) and writes
//! the per-window series as JSON.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use loadtest::link::tap::{percentile, Tap, Window};
use loadtest::link::{ProfileSpec, Relay, RelayConfig, ScheduleStep};

#[derive(Parser)]
#[command(
    name = "link-meter",
    version,
    about = "One sender's uplink through an emulated link with a capacity schedule, measured per phase"
)]
struct Cli {
    /// Where the link delivers (the SFU's media port).
    #[arg(long)]
    target: SocketAddr,
    /// Capacity phases, `SECONDS:KBPS` from the start, e.g. `0:2000,40:5000,60:1200,80:2000`.
    #[arg(long, default_value = "0:2000,40:5000,60:1200,80:2000")]
    phases: String,
    /// End of the run, seconds from the start.
    #[arg(long, default_value_t = 100)]
    end: u64,
    /// One-way delay of the link, ms (each way).
    #[arg(long, default_value_t = 50)]
    owd_ms: u64,
    /// Label for the table rows (e.g. agent, chromium).
    #[arg(long, default_value = "sender")]
    label: String,
    /// Per-window series as JSON.
    #[arg(long)]
    out: Option<PathBuf>,
}

const WINDOW: Duration = Duration::from_millis(500);

struct Phase {
    start: Duration,
    end: Duration,
    kbps: u64,
}

fn parse_phases(text: &str, end: u64) -> anyhow::Result<Vec<Phase>> {
    let mut v: Vec<(u64, u64)> = vec![];
    for part in text.split(',') {
        let (s, k) = part
            .split_once(':')
            .with_context(|| format!("phase {part:?}: want SECONDS:KBPS"))?;
        v.push((s.trim().parse()?, k.trim().parse()?));
    }
    if v.first().map(|p| p.0) != Some(0) || v.windows(2).any(|w| w[1].0 <= w[0].0) {
        bail!("phases must start at 0 and rise: {text}");
    }
    if v.last().is_some_and(|p| p.0 >= end) {
        bail!("the last phase starts after --end");
    }
    Ok(v.iter()
        .enumerate()
        .map(|(i, &(s, k))| Phase {
            start: Duration::from_secs(s),
            end: Duration::from_secs(v.get(i + 1).map_or(end, |n| n.0)),
            kbps: k,
        })
        .collect())
}

/// Mean sending rate over `n` windows from `i`, bit/s.
fn mean_bps(w: &[Window], i: usize, n: usize) -> f64 {
    let part = &w[i..(i + n).min(w.len())];
    part.iter().map(|w| w.sent_bps(WINDOW)).sum::<f64>() / part.len().max(1) as f64
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let phases = parse_phases(&cli.phases, cli.end)?;
    let t0 = Instant::now();
    let mut tap = Tap::exit(cli.target, t0, WINDOW)?;
    let spec = ProfileSpec {
        up_kbps: Some(phases[0].kbps),
        down_kbps: Some(50_000),
        rtt_ms: 2 * cli.owd_ms,
        schedule: phases[1..]
            .iter()
            .map(|p| ScheduleStep {
                at: p.start,
                up_kbps: Some(p.kbps),
                ..ScheduleStep::default()
            })
            .collect(),
        ..ProfileSpec::default()
    };
    let relay = Relay::start(
        RelayConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), tap.exit_addr())
            .with_profile(&spec)
            .context("link profile")?,
    )?;
    let entry = tap.open_entry(relay.local_addr())?;
    println!("{entry}");
    std::io::stdout().flush()?;

    std::thread::sleep(Duration::from_secs(cli.end).saturating_sub(t0.elapsed()));
    // Datagrams still in the link get their chance to come out.
    std::thread::sleep(Duration::from_secs(1));
    let windows = tap.windows();
    relay.stop();
    drop(tap);

    let per = |d: Duration| (d.as_millis() / WINDOW.as_millis()) as usize;
    println!(
        "| sender | phase | capacity | utilization | delivered | one-way delay p50 / p95 | loss | time to adapt |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut prev_kbps: Option<u64> = None;
    for p in &phases {
        let (a, b) = (per(p.start), per(p.end).min(windows.len()));
        let w = &windows[a.min(b)..b];
        let cap = p.kbps as f64 * 1000.0;
        let sent: f64 = w.iter().map(|w| w.sent_bps(WINDOW)).sum::<f64>() / w.len().max(1) as f64;
        let delivered_bytes: f64 = w
            .iter()
            .map(|w| {
                w.sent_bytes as f64 * w.delivered_packets as f64 / w.sent_packets.max(1) as f64
            })
            .sum();
        let delivered = delivered_bytes * 8.0 / (w.len().max(1) as f64 * WINDOW.as_secs_f64());
        let delays: Vec<f64> = w.iter().flat_map(|w| w.delay_ms.iter().copied()).collect();
        let (sp, lp): (u64, u64) = w
            .iter()
            .fold((0, 0), |(s, l), w| (s + w.sent_packets, l + w.lost_packets));
        // Adapted: after a fall, the first moment from which 2 s of sending stay under the new
        // capacity; after a rise (or the start), the first 1 s at 85 % of what the sender
        // settles to in the phase's last 10 s.
        let adapt = match prev_kbps {
            Some(k) if k > p.kbps => (a..b)
                .find(|&i| i + 4 <= b && (i..i + 4).all(|j| windows[j].sent_bps(WINDOW) <= cap)),
            _ => {
                let tail = per(p.end.saturating_sub(Duration::from_secs(10)).max(p.start));
                let settled = mean_bps(&windows, tail, b - tail.min(b));
                (a..b)
                    .find(|&i| i + 2 <= b && mean_bps(&windows, i, 2) >= 0.85 * settled)
                    .map(|i| i + 2)
            }
        };
        let adapt = adapt.map_or("never".to_string(), |i| {
            format!("{:.1} s", (i - a) as f64 * WINDOW.as_secs_f64())
        });
        let fmt_ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
        println!(
            "| {} | {:.0}–{:.0} s | {:.1} Mbit/s | {:.0} % | {:.0} % | {} / {} ms | {:.2} % | {} |",
            cli.label,
            p.start.as_secs_f64(),
            p.end.as_secs_f64(),
            cap / 1e6,
            100.0 * sent / cap,
            100.0 * delivered / cap,
            fmt_ms(percentile(&delays, 50.0)),
            fmt_ms(percentile(&delays, 95.0)),
            100.0 * lp as f64 / sp.max(1) as f64,
            adapt
        );
        prev_kbps = Some(p.kbps);
    }
    if let Some(path) = &cli.out {
        let series: Vec<serde_json::Value> = windows
            .iter()
            .map(|w| {
                serde_json::json!({
                    "at_s": w.at_ms as f64 / 1000.0,
                    "sent_kbps": w.sent_bps(WINDOW) / 1000.0,
                    "delay_p95_ms": percentile(&w.delay_ms, 95.0),
                    "sent_packets": w.sent_packets,
                    "lost_packets": w.lost_packets,
                })
            })
            .collect();
        let json = serde_json::json!({ "label": cli.label, "phases": cli.phases, "owd_ms": cli.owd_ms, "windows": series });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}
