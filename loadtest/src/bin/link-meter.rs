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

use anyhow::Context;
use clap::Parser;
use loadtest::link::phases::{parse_phases, summarize};
use loadtest::link::tap::{percentile, Tap};
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let phases = parse_phases(&cli.phases, cli.end).context("--phases")?;
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

    println!(
        "| sender | phase | capacity | utilization | delivered | one-way delay p50 / p95 | loss | time to adapt |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let fmt_ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
    for (p, s) in phases.iter().zip(summarize(&phases, &windows, WINDOW)) {
        println!(
            "| {} | {:.0}–{:.0} s | {:.1} Mbit/s | {:.0} % | {:.0} % | {} / {} ms | {:.2} % | {} |",
            cli.label,
            p.start.as_secs_f64(),
            p.end.as_secs_f64(),
            p.kbps as f64 / 1000.0,
            100.0 * s.utilization,
            100.0 * s.delivered,
            fmt_ms(s.delay_p50_ms),
            fmt_ms(s.delay_p95_ms),
            100.0 * s.loss,
            s.adapt
                .map_or("never".to_string(), |d| format!("{:.1} s", d.as_secs_f64()))
        );
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
