//! `link-relay`: relays UDP between clients and one target through an emulated link.
//!
//! Prints the address it listens on (one line on stdout), then relays until SIGINT, SIGTERM or
//! `--duration`; logs go to stderr.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use loadtest::link::{parse_duration, parse_schedule, Profiles, Relay, RelayConfig, RelayStats};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::info;

#[derive(Parser)]
#[command(
    name = "link-relay",
    version,
    about = "Relay UDP between clients and a target through an emulated link (rate, queue, delay, jitter, loss, schedule)"
)]
struct Cli {
    /// Where clients send; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The only address datagrams are relayed to, e.g. the SFU's media port.
    #[arg(long)]
    target: SocketAddr,
    /// Named profile: city-fiber, town-4m, rural-2m, teaching-point-1m, satellite, congested, clean.
    #[arg(long, default_value = "clean")]
    profile: String,
    /// TOML file with more profiles ([profiles.NAME] tables).
    #[arg(long)]
    profiles: Option<PathBuf>,
    /// Override the downlink (target → client) rate, kbit/s.
    #[arg(long)]
    down_kbps: Option<u64>,
    /// Override the uplink (client → target) rate, kbit/s.
    #[arg(long)]
    up_kbps: Option<u64>,
    /// Override the round-trip time, ms (half each way).
    #[arg(long)]
    rtt_ms: Option<u64>,
    /// Override the jitter, ± ms each way.
    #[arg(long)]
    jitter_ms: Option<u64>,
    /// Override the loss, percent each way.
    #[arg(long)]
    loss_pct: Option<f64>,
    /// Mean loss burst in packets (Gilbert-Elliott); 1 is independent loss.
    #[arg(long)]
    loss_burst: Option<f64>,
    /// Router buffer, ms at the starting rate.
    #[arg(long)]
    queue_ms: Option<u64>,
    /// Replace the profile's schedule, e.g. "10s:down=800,loss=5,25s:down=5000".
    #[arg(long)]
    schedule: Option<String>,
    /// Seed for loss and jitter draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop by itself after this long, e.g. 60s.
    #[arg(long)]
    duration: Option<String>,
    /// Log a summary of the counters this often, e.g. 10s.
    #[arg(long)]
    stats_every: Option<String>,
    /// Write the final counters here as JSON.
    #[arg(long)]
    report: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();

    let profiles = match &cli.profiles {
        Some(path) => Profiles::with_file(path)?,
        None => Profiles::builtin(),
    };
    let mut spec = profiles.get(&cli.profile)?.clone();
    if let Some(v) = cli.down_kbps {
        spec.down_kbps = Some(v);
    }
    if let Some(v) = cli.up_kbps {
        spec.up_kbps = Some(v);
    }
    if let Some(v) = cli.rtt_ms {
        spec.rtt_ms = v;
    }
    if let Some(v) = cli.jitter_ms {
        spec.jitter_ms = v;
    }
    if let Some(v) = cli.loss_pct {
        spec.loss_pct = v;
    }
    if let Some(v) = cli.loss_burst {
        spec.loss_burst = Some(v);
    }
    if let Some(v) = cli.queue_ms {
        spec.queue_ms = v;
    }
    if let Some(s) = &cli.schedule {
        spec.schedule = parse_schedule(s)?;
    }
    let duration = cli.duration.as_deref().map(parse_duration).transpose()?;
    let stats_every = cli.stats_every.as_deref().map(parse_duration).transpose()?;

    let config = RelayConfig::new(cli.listen, cli.target)
        .with_profile(&spec)
        .with_context(|| format!("profile {}", cli.profile))?
        .with_seed(cli.seed);
    // Signals are caught before the relay starts, so a quick SIGTERM still stops it cleanly.
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    let signal_handle = signals.handle();
    let (stop_tx, stop_rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let _ = stop_tx.send(sig);
        }
    });

    let relay = Relay::start(config)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", relay.local_addr())?;
    out.flush()?;
    drop(out);
    info!(
        listen = %relay.local_addr(),
        target = %cli.target,
        profile = %cli.profile,
        down_kbps = ?spec.down_kbps,
        up_kbps = ?spec.up_kbps,
        rtt_ms = spec.rtt_ms,
        jitter_ms = spec.jitter_ms,
        loss_pct = spec.loss_pct,
        loss_burst = ?spec.loss_burst,
        changes = spec.schedule.len(),
        "relaying"
    );

    let deadline = duration.map(|d| std::time::Instant::now() + d);
    loop {
        let mut wait = stats_every.unwrap_or(Duration::from_secs(3600));
        if let Some(end) = deadline {
            wait = wait.min(end.saturating_duration_since(std::time::Instant::now()));
        }
        match stop_rx.recv_timeout(wait) {
            Ok(sig) => {
                info!(signal = sig, "stopping");
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if deadline.is_some_and(|end| std::time::Instant::now() >= end) {
                    info!("duration reached; stopping");
                    break;
                }
                log_summary(&relay.stats());
            }
        }
    }

    let stats = relay.stop();
    log_summary(&stats);
    signal_handle.close();
    let _ = waiter.join();
    if let Some(path) = &cli.report {
        let json = serde_json::to_string_pretty(&stats)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn log_summary(stats: &RelayStats) {
    let (up, down) = (&stats.uplink, &stats.downlink);
    info!(
        clients = stats.clients.len(),
        up_sent = up.sent_packets,
        up_delivered = up.delivered_packets,
        up_lost = up.dropped_loss_packets,
        up_queue_drops = up.dropped_queue_packets,
        down_sent = down.sent_packets,
        down_delivered = down.delivered_packets,
        down_lost = down.dropped_loss_packets,
        down_queue_drops = down.dropped_queue_packets,
        send_errors = stats.send_errors,
        "link relay counters"
    );
}
