//! `loadtest`: simulated classrooms (real WebRTC peers on emulated links) against the SFU.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use loadtest::janus::JanusConfig;
use loadtest::link::{parse_duration, Mix, Profiles};
use loadtest::report::compare;
use loadtest::run::{run, validate, RampConfig, RunConfig, Target};

#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    about = "Simulated classrooms as real WebRTC peers on emulated links, against the SFU"
)]
struct Args {
    /// The server under test: `sfu` (ours, at --sfu) or `janus` (started by the run; needs
    /// --janus-ip).
    #[arg(long, default_value = "sfu", value_parser = ["sfu", "janus"])]
    target: String,
    /// The `janus` executable.
    #[arg(long, default_value = "janus")]
    janus_bin: PathBuf,
    /// Janus's library folder (with plugins/ and transports/); default: where Debian puts it.
    #[arg(long)]
    janus_lib: Option<PathBuf>,
    /// A local, non-loopback address for Janus's peer connections (Janus gathers no loopback
    /// candidates); loadtest/compare.sh makes one in a network namespace.
    #[arg(long)]
    janus_ip: Option<std::net::IpAddr>,
    /// Print our SFU against Janus from two JSON reports (`--compare sfu.json janus.json`)
    /// and exit.
    #[arg(long, num_args = 2, value_names = ["SFU_JSON", "JANUS_JSON"])]
    compare: Option<Vec<PathBuf>>,
    /// Print one node alone against a cluster run from two JSON reports
    /// (`--compare-cluster one.json cluster.json`) and exit.
    #[arg(long, num_args = 2, value_names = ["ONE_JSON", "CLUSTER_JSON"], conflicts_with = "compare")]
    compare_cluster: Option<Vec<PathBuf>>,
    /// The SFU's HTTP base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    sfu: String,
    /// An edge node of a cluster (HTTP base; repeatable): classrooms round-robin over the
    /// edges (`?placed=1`, so each stays where it asked) while the teacher publishes to --sfu,
    /// the origin. The report gains the origin's egress and each edge's copies and hop latency.
    #[arg(long = "edge", value_name = "URL")]
    edges: Vec<String>,
    /// An edge's process id, in --edge order (repeatable), for its CPU.
    #[arg(long = "edge-pid", value_name = "PID")]
    edge_pids: Vec<u32>,
    /// The room to publish and play.
    #[arg(long, default_value = "loadtest")]
    room: String,
    /// The SFU's token signing secret (default: $CLASSROOM_SECRET).
    #[arg(
        long,
        env = "CLASSROOM_SECRET",
        hide_env_values = true,
        default_value = ""
    )]
    secret: String,
    /// Classrooms (fixed mode).
    #[arg(long, default_value_t = 10)]
    classrooms: usize,
    /// How long the run lasts (fixed mode), e.g. 30s, 2m.
    #[arg(long, default_value = "30s", value_parser = dur)]
    duration: Duration,
    /// One link profile for every classroom.
    #[arg(long, conflicts_with = "mix")]
    profile: Option<String>,
    /// Weighted profiles, e.g. rural-2m:60,teaching-point-1m:30,satellite:10.
    #[arg(long)]
    mix: Option<Mix>,
    /// Extra profiles from a TOML file.
    #[arg(long)]
    profiles: Option<PathBuf>,
    /// The SFU's process id, for its CPU and memory (default: the one process named `sfu`).
    #[arg(long)]
    sfu_pid: Option<u32>,
    /// Classrooms send no transport-wide congestion control feedback (by default they do, and
    /// the SFU estimates each link); each classroom is then capped (`?layer=`) at the layer its
    /// link fits.
    #[arg(long)]
    no_twcc: bool,
    /// Ramp mode: add classrooms until a limit breaks.
    #[arg(long, conflicts_with = "churn")]
    ramp: bool,
    /// Churn mode: with --classrooms present, this many per second leave and as many new
    /// ones join (e.g. 0.5), for --duration.
    #[arg(long)]
    churn: Option<f64>,
    /// Ramp: classrooms at the first step.
    #[arg(long, default_value_t = 10)]
    start: usize,
    /// Ramp: classrooms added per step.
    #[arg(long, default_value_t = 10)]
    step: usize,
    /// Ramp: time per step.
    #[arg(long, default_value = "20s", value_parser = dur)]
    step_duration: Duration,
    /// Ramp: stop here even if every limit holds.
    #[arg(long, default_value_t = 300)]
    max_classrooms: usize,
    /// Ramp limit: p99 of the forwarding latency over the link's base delay (ms).
    #[arg(long, default_value_t = 50.0)]
    max_p99_ms: f64,
    /// Ramp limit: loss after retransmission (%).
    #[arg(long, default_value_t = 1.0)]
    max_loss_pct: f64,
    /// Ramp limit: frozen time (%).
    #[arg(long, default_value_t = 1.0)]
    max_frozen_pct: f64,
    /// Classrooms joining at the same time.
    #[arg(long, default_value_t = 4)]
    join_concurrency: usize,
    /// Seed for the links' loss and jitter draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write the HTML page here.
    #[arg(long)]
    html: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn dur(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,loadtest=info,webrtc=off,webrtc_ice=off,webrtc_dtls=off,dtls=off,webrtc_srtp=off,webrtc_sctp=off,webrtc_mdns=off,interceptor=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let args = Args::parse();
    let read = |p: &PathBuf| -> anyhow::Result<loadtest::report::Report> {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a loadtest report", p.display()))
    };
    if let Some(files) = &args.compare {
        print!("{}", compare(&read(&files[0])?, &read(&files[1])?));
        return Ok(());
    }
    if let Some(files) = &args.compare_cluster {
        print!(
            "{}",
            loadtest::cluster::side_by_side(&read(&files[0])?, &read(&files[1])?)
        );
        return Ok(());
    }
    let target = match args.target.as_str() {
        "janus" => Target::Janus(JanusConfig {
            bin: args.janus_bin.clone(),
            lib_dir: args.janus_lib.clone(),
            ip: args
                .janus_ip
                .ok_or_else(|| anyhow::anyhow!("--target janus needs --janus-ip"))?,
        }),
        _ => Target::Sfu,
    };
    let profiles = match &args.profiles {
        Some(p) => Profiles::with_file(p)?,
        None => Profiles::builtin(),
    };
    let mix = match (&args.mix, &args.profile) {
        (Some(m), _) => m.clone(),
        (None, Some(p)) => Mix::single(p),
        (None, None) => Mix::single("clean"),
    };
    let cfg = RunConfig {
        target,
        sfu: args.sfu.clone(),
        room: args.room.clone(),
        secret: args.secret.clone(),
        classrooms: args.classrooms,
        duration: args.duration,
        mix,
        profiles,
        sfu_pid: args.sfu_pid,
        twcc: !args.no_twcc,
        ramp: args.ramp.then_some(RampConfig {
            start: args.start,
            step: args.step,
            step_duration: args.step_duration,
            max: args.max_classrooms,
            p99_limit_ms: args.max_p99_ms,
            loss_limit_pct: args.max_loss_pct,
            frozen_limit_pct: args.max_frozen_pct,
        }),
        seed: args.seed,
        progress: !args.quiet,
        join_concurrency: args.join_concurrency,
        fps: 30,
        clip_seconds: 8,
        churn_per_s: args.churn,
        edges: args.edges.clone(),
        edge_pids: args.edge_pids.clone(),
    };
    validate(&cfg)?;
    // a run always ends: its planned time plus a bounded grace for setup and teardown
    let planned = match &cfg.ramp {
        Some(r) => r.step_duration * ((r.max.saturating_sub(r.start) / r.step.max(1)) as u32 + 1),
        None => cfg.duration,
    };
    let limit = planned + Duration::from_secs(120);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        tokio::select! {
            r = tokio::time::timeout(limit, run(cfg)) => {
                r.map_err(|_| anyhow::anyhow!("the run did not finish within {limit:?}; stopped"))?
            }
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    // peers left behind by a timeout or Ctrl-C are dropped without waiting for them
    rt.shutdown_timeout(Duration::from_secs(3));
    let report = result?;
    print!("{}", report.summary());
    if let Some(p) = &args.report {
        std::fs::write(p, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.html {
        std::fs::write(p, report.html()).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
