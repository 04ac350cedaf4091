//! A load run: the teacher publishes, classrooms join through their emulated links, a sampler
//! watches the SFU and ourselves once a second, and at the end every meter is read into a
//! [`Report`].
//!
//! Modes: fixed (N classrooms for a duration), ramp (add a step of classrooms per interval
//! until a limit breaks; the largest load held is the answer). Targets: our SFU, or Janus's
//! Streaming plugin started by the run itself ([`crate::janus`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinSet;

use crate::cluster::ClusterProbe;
use crate::janus::{substream_of, JanusConfig, JanusServer};
use crate::link::{
    Mix, ProfileSpec, Profiles, RelayConfig, RelayHandle, RelayStats, ScheduleOrigin,
};
use crate::measure::{pct, Histogram, LossCounts, MeterConfig, SendLog, VideoCounts};
use crate::media::clip::{self, ClipSpec};
use crate::media::speech;
use crate::peer::{
    lock, Classroom, ClassroomMeter, ClassroomSpec, LayerClip, Signalling, Teacher, TeacherMedia,
};
use crate::probe;
use crate::report::*;

/// Ramp settings and limits.
#[derive(Debug, Clone)]
pub struct RampConfig {
    pub start: usize,
    pub step: usize,
    pub step_duration: Duration,
    pub max: usize,
    pub p99_limit_ms: f64,
    pub loss_limit_pct: f64,
    pub frozen_limit_pct: f64,
}

/// The server under test.
#[derive(Debug, Clone)]
pub enum Target {
    /// Our SFU at `RunConfig::sfu`: WHIP, WHEP, /metrics.
    Sfu,
    /// Janus, started by the run: plain RTP in, its HTTP API for viewers.
    Janus(JanusConfig),
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub target: Target,
    pub sfu: String,
    pub room: String,
    pub secret: String,
    pub classrooms: usize,
    pub duration: Duration,
    pub mix: Mix,
    pub profiles: Profiles,
    pub sfu_pid: Option<u32>,
    pub twcc: bool,
    pub ramp: Option<RampConfig>,
    pub seed: u64,
    pub progress: bool,
    /// Classrooms joining at once.
    pub join_concurrency: usize,
    pub fps: u32,
    pub clip_seconds: u32,
    /// Churn: classrooms leaving (and as many joining) per second, in the fixed mode.
    pub churn_per_s: Option<f64>,
    /// Edge nodes of a cluster (HTTP bases): classrooms round-robin over them with
    /// `?placed=1` while the teacher publishes to `sfu` (the origin). Empty: all on `sfu`.
    pub edges: Vec<String>,
    /// The edges' process ids, in the same order (their CPU in the cluster report).
    pub edge_pids: Vec<u32>,
}

/// The simulcast layers of the issue: 1.5 Mbit/s, 500 kbit/s, 150 kbit/s.
pub fn default_layers() -> [(&'static str, u16, u16, u32); 3] {
    [
        ("l", 320, 180, 150),
        ("m", 640, 360, 500),
        ("h", 1280, 720, 1500),
    ]
}

/// Encodes (or reads from the cache) the teacher's clip and speech.
pub fn load_media(fps: u32, seconds: u32) -> anyhow::Result<TeacherMedia> {
    let dir = clip::cache_dir();
    let mut layers = Vec::new();
    for (rid, w, h, kbps) in default_layers() {
        let spec = ClipSpec {
            width: w,
            height: h,
            kbps,
            fps,
            seconds,
            // a keyframe every 2 s; a keyframe request jumps forward to the next one, so the
            // same frame is sent again only a loop later (send times are keyed by content)
            keyframe_every: 2 * fps,
        };
        let frames = clip::load_or_encode(&spec, &dir)
            .with_context(|| format!("clip layer {rid} ({w}x{h} {kbps} kbit/s)"))?;
        layers.push(LayerClip {
            rid,
            width: w,
            height: h,
            kbps,
            frames: Arc::new(frames),
        });
    }
    let opus = speech::encode_speech(10.0, 32).context("Opus speech")?;
    Ok(TeacherMedia {
        fps,
        layers,
        opus: Arc::new(opus),
    })
}

/// Without transport-wide feedback the SFU cannot estimate a classroom's link and forwards the
/// highest layer allowed: cap each classroom at the highest layer whose clip (plus audio and a
/// margin for headers and repairs) fits its starting capacity.
pub fn layer_cap(media: &TeacherMedia, capacity_kbps: Option<u64>) -> Option<String> {
    let cap = capacity_kbps? as f64;
    let names = ["low", "mid", "high"];
    let mut best = "low";
    for (i, l) in media.layers.iter().enumerate() {
        if l.clip_kbps(media.fps) * 1.25 + 60.0 <= cap {
            best = names[i.min(2)];
        }
    }
    (best != "high").then(|| best.to_string())
}

struct Member {
    name: String,
    profile: String,
    capacity_kbps: Option<u64>,
    joined_at: Instant,
    ticks_at_join: u64,
    meter: Arc<Mutex<ClassroomMeter>>,
    classroom: Option<Classroom>,
    local: Option<SocketAddr>,
    connect: Duration,
    /// When it left (churn) and the teacher's frame count then.
    left: Option<(Instant, u64)>,
    /// Its relay counters when it left.
    left_relay: Option<crate::link::ClientStats>,
    /// The edge node it plays on (index into `RunConfig::edges`).
    edge: Option<usize>,
}

struct Shared {
    classrooms: usize,
    sfu_cpu_pct: Option<f64>,
}

/// Runs one load test.
pub async fn run(cfg: RunConfig) -> anyhow::Result<Report> {
    cfg.mix.check(&cfg.profiles)?;
    let sig = Signalling::new(&cfg.sfu, &cfg.room, &cfg.secret)?;
    let edge_sigs = cfg
        .edges
        .iter()
        .map(|e| Signalling::new(e, &cfg.room, &cfg.secret))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let janus = match &cfg.target {
        Target::Sfu => {
            sig.check().await?;
            for e in &edge_sigs {
                e.check().await?;
            }
            None
        }
        Target::Janus(j) => Some(JanusServer::start(j).await?),
    };
    let (fps, secs) = (cfg.fps, cfg.clip_seconds);
    let media = tokio::task::spawn_blocking(move || load_media(fps, secs)).await??;
    let sfu_pid = match &janus {
        Some(j) => Some(j.pid()),
        None => cfg.sfu_pid.or_else(probe::find_sfu_pid),
    };
    let cluster = janus.is_none().then(|| ClusterProbe {
        origin: sig.clone(),
        origin_pid: sfu_pid,
        edges: edge_sigs
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), cfg.edge_pids.get(i).copied()))
            .collect(),
    });
    let mut cluster_before = None;
    if sfu_pid.is_none() {
        tracing::warn!(
            "SFU process not found (pass --sfu-pid): its CPU and memory are not reported"
        );
    }
    let planned = match (&cfg.ramp, cfg.churn_per_s) {
        (Some(r), _) => r.max,
        // every churn period one leaves and one more joins
        (None, Some(rate)) => {
            cfg.classrooms + (rate * cfg.duration.as_secs_f64()).ceil() as usize + 1
        }
        (None, None) => cfg.classrooms,
    };
    let ttl = cfg.duration + Duration::from_secs(3600);
    let send_log = Arc::new(Mutex::new(SendLog::default()));
    let origin = Instant::now();
    let started_unix_s = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let teacher = match &janus {
        Some(j) => Teacher::feed_rtp(j.ports, media.clone(), send_log.clone()).await?,
        None => Teacher::connect(&sig, media.clone(), send_log.clone(), ttl).await?,
    };
    let teacher_started = Instant::now();

    // one relay per profile, each classroom its own links on it
    let mut relays: BTreeMap<String, (Arc<RelayHandle>, Instant, ProfileSpec)> = BTreeMap::new();
    for (i, (name, _)) in cfg.mix.entries().iter().enumerate() {
        let spec = cfg.profiles.get(name)?.clone();
        let mut rc = RelayConfig::new("127.0.0.1:0".parse()?, teacher.sfu_media)
            .with_profile(&spec)?
            .with_seed(cfg.seed.wrapping_add(i as u64 * 7919));
        rc.schedule_origin = ScheduleOrigin::ClientStart;
        rc.idle_timeout = None;
        rc.max_clients = planned.max(1) + 16;
        let h = crate::link::Relay::start(rc).with_context(|| format!("relay for {name}"))?;
        relays.insert(name.clone(), (Arc::new(h), Instant::now(), spec));
    }

    let shared = Arc::new(Mutex::new(Shared {
        classrooms: 0,
        sfu_cpu_pct: None,
    }));
    let members: Arc<Mutex<Vec<Member>>> = Arc::default();
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let total_secs = match &cfg.ramp {
        Some(r) => {
            r.step_duration.as_secs() * (r.max.saturating_sub(r.start) / r.step.max(1) + 1) as u64
        }
        None => cfg.duration.as_secs(),
    };
    let bar = if cfg.progress {
        let b = ProgressBar::new(total_secs.max(1));
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len}s {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let sampler = tokio::spawn(sampler(
        janus.is_none().then(|| sig.clone()),
        relays.values().map(|(h, _, _)| h.clone()).collect(),
        sfu_pid,
        origin,
        shared.clone(),
        members.clone(),
        samples.clone(),
        bar.clone(),
    ));

    let meter_cfg = MeterConfig {
        fps: cfg.fps,
        repair_window: Duration::from_secs(1),
    };
    let assign: Vec<String> = cfg
        .mix
        .assign(planned)
        .into_iter()
        .map(String::from)
        .collect();
    let mut failed: Vec<String> = Vec::new();
    let mut ramp_report = None;
    let mut churn_report = None;
    let joiner = Joiner {
        sig: sig.clone(),
        cfg: cfg.clone(),
        media: media.clone(),
        relays: relays
            .iter()
            .map(|(k, (h, _, s))| {
                let base = Duration::from_millis(s.rtt_ms) / 2;
                (k.clone(), (h.local_addr(), s.down_kbps, base))
            })
            .collect(),
        send_log: send_log.clone(),
        origin,
        meter_cfg,
        ttl,
        counters: teacher.counters.clone(),
        janus: janus.as_ref().map(|j| {
            (
                reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .unwrap_or_default(),
                j.http_base.clone(),
            )
        }),
        relay_handles: relays
            .iter()
            .map(|(k, (h, _, _))| (k.clone(), h.clone()))
            .collect(),
        edge_sigs,
    };

    match &cfg.ramp {
        None => {
            let deadline = origin + cfg.duration;
            let fails = joiner
                .join_range(0..cfg.classrooms, &assign, &members, &shared, deadline)
                .await;
            failed.extend(fails);
            // the cluster window starts once every classroom has joined and settled (churn
            // starts at once: its rate counts from here)
            let settle = Instant::now() + Duration::from_secs(2);
            if cfg.churn_per_s.is_none() && settle + Duration::from_secs(2) < deadline {
                tokio::time::sleep_until(settle.into()).await;
            }
            if let Some(c) = &cluster {
                cluster_before = Some(c.read().await);
            }
            if let Some(rate) = cfg.churn_per_s {
                churn_report = Some(
                    churn(
                        &joiner,
                        rate,
                        &assign,
                        &members,
                        &shared,
                        &relays,
                        deadline,
                        &mut failed,
                    )
                    .await,
                );
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
        Some(r) => {
            if let Some(c) = &cluster {
                cluster_before = Some(c.read().await);
            }
            let mut steps = Vec::new();
            let mut n = 0;
            let mut target = r.start.max(1);
            let mut max_held = 0;
            let stopped;
            loop {
                let step_end = Instant::now() + r.step_duration;
                failed.extend(
                    joiner
                        .join_range(n..target.min(r.max), &assign, &members, &shared, step_end)
                        .await,
                );
                n = target.min(r.max);
                // judge the second half of the step (joins and first keyframes settle first)
                let half = step_end
                    .saturating_duration_since(Instant::now())
                    .div_f64(2.0);
                tokio::time::sleep(half).await;
                let before = window_snapshot(&members);
                let cpu_before = sfu_pid.and_then(probe::process_cpu);
                let t_before = Instant::now();
                tokio::time::sleep_until(step_end.into()).await;
                let after = window_snapshot(&members);
                let cpu_after = sfu_pid.and_then(probe::process_cpu);
                let lat = after.0.since(&before.0);
                let loss = after.1.since(&before.1);
                let frozen = after.2.saturating_sub(before.2);
                let watched = after.3.saturating_sub(before.3);
                let frozen_pct = if watched.is_zero() {
                    100.0
                } else {
                    100.0 * frozen.as_secs_f64() / watched.as_secs_f64()
                };
                let p99 = lat.quantile_ms(0.99);
                let held = p99.is_some_and(|p| p <= r.p99_limit_ms)
                    && loss.after_pct() <= r.loss_limit_pct
                    && frozen_pct <= r.frozen_limit_pct
                    && failed.is_empty();
                let (w0, w1) = (
                    t_before.saturating_duration_since(origin).as_secs_f64(),
                    Instant::now()
                        .saturating_duration_since(origin)
                        .as_secs_f64(),
                );
                let busy: Vec<f64> = lock(&samples)
                    .iter()
                    .filter(|s| s.t_s >= w0 && s.t_s <= w1 + 0.5 && !s.core_busy_pct.is_empty())
                    .map(|s| s.core_busy_pct.iter().sum::<f64>() / s.core_busy_pct.len() as f64)
                    .collect();
                steps.push(RampStep {
                    machine_busy_pct: (!busy.is_empty())
                        .then(|| busy.iter().sum::<f64>() / busy.len() as f64),
                    classrooms: n,
                    latency_over_link_p99_ms: p99,
                    loss_after_retransmission_pct: loss.after_pct(),
                    frozen_pct,
                    sfu_cpu_pct: match (cpu_before, cpu_after) {
                        (Some(a), Some(b)) => Some(
                            100.0 * b.saturating_sub(a).as_secs_f64()
                                / t_before.elapsed().as_secs_f64(),
                        ),
                        _ => None,
                    },
                    held,
                });
                if !held {
                    stopped = format!(
                        "limits broken at {n} classrooms (p99 ≤ {} ms, loss after retransmission ≤ {} %, frozen ≤ {} %{})",
                        r.p99_limit_ms,
                        r.loss_limit_pct,
                        r.frozen_limit_pct,
                        if failed.is_empty() { "" } else { ", every join succeeds" }
                    );
                    break;
                }
                max_held = n;
                if n >= r.max {
                    stopped = format!("reached --max-classrooms {}", r.max);
                    break;
                }
                target = n + r.step;
            }
            ramp_report = Some(RampReport {
                p99_limit_ms: r.p99_limit_ms,
                loss_limit_pct: r.loss_limit_pct,
                frozen_limit_pct: r.frozen_limit_pct,
                steps,
                max_held,
                stopped_because: stopped,
            });
        }
    }

    // read everything at one instant, then leave
    let end = Instant::now();
    let cluster_after = match &cluster {
        Some(c) => Some(c.read().await),
        None => None,
    };
    let per_edge = {
        let mut n = vec![0; cfg.edges.len()];
        for m in lock(&members).iter() {
            if let Some(e) = m.edge {
                n[e] += 1;
            }
        }
        n
    };
    let cluster_report = match (&cluster, &cluster_before, &cluster_after) {
        (Some(c), Some(b), Some(a)) => Some(c.report(b, a, &per_edge)),
        _ => None,
    };
    sampler.abort();
    bar.finish_and_clear();
    let relay_stats: BTreeMap<String, (RelayStats, Instant, Option<u64>)> = relays
        .iter()
        .map(|(k, (h, start, s))| (k.clone(), (h.stats(), *start, s.down_kbps)))
        .collect();
    let counters = teacher.counters.clone();
    let ticks_end = counters.ticks.load(Ordering::Relaxed);
    let mut classrooms = Vec::new();
    let mut rows: Vec<(ClassroomReport, VideoCounts)> = Vec::new();
    let mut leaving = JoinSet::new();
    let all: Vec<Member> = std::mem::take(&mut *lock(&members));
    for mut m in all {
        let (until, ticks_until) = m.left.unwrap_or((end, ticks_end));
        let (
            counts,
            audio_loss,
            audio_packets,
            series,
            rtx,
            unmatched,
            first_tick,
            over_link,
            nacks,
        ) = {
            let mut g = lock(&m.meter);
            let c = g.video.counts(until);
            let al = g.audio.loss(until);
            (
                c,
                al,
                g.audio.packets,
                g.series.bytes_per_s.clone(),
                g.rtx_packets,
                g.latency_unmatched,
                g.ticks_at_first_frame,
                g.latency_over_link.clone(),
                g.nacks_sent,
            )
        };
        let in_room = end
            .saturating_duration_since(m.joined_at)
            .as_secs_f64()
            .max(1e-3);
        let relay = m.local.and_then(|addr| {
            let (st, start, _) = relay_stats.get(&m.profile)?;
            let c = match &m.left_relay {
                Some(c) => c,
                None => st.client(addr)?,
            };
            let first = *start + Duration::from_millis(c.first_seen_ms);
            let secs = until
                .saturating_duration_since(first)
                .as_secs_f64()
                .max(1e-3);
            Some((
                RelayCounts {
                    down_offered_bytes: c.downlink.sent_bytes,
                    down_delivered_bytes: c.downlink.delivered_bytes,
                    down_dropped_queue_packets: c.downlink.dropped_queue_packets,
                    down_dropped_loss_packets: c.downlink.dropped_loss_packets,
                    up_delivered_packets: c.uplink.delivered_packets,
                },
                c.downlink.delivered_bytes as f64 * 8.0 / secs / 1000.0,
            ))
        });
        let link_kbps = relay.as_ref().map(|r| r.1).unwrap_or(0.0);
        // frames sent from the classroom's first complete frame to the end (the frames in
        // flight at the start and at the end about cancel out)
        let frames_sent = match first_tick {
            Some(t) => ticks_until.saturating_sub(t) + 1,
            None => ticks_until.saturating_sub(m.ticks_at_join),
        };
        let rx_bytes: u64 = series.iter().sum();
        let report = ClassroomReport {
            name: m.name.clone(),
            profile: m.profile.clone(),
            capacity_kbps: m.capacity_kbps,
            joined_at_s: m.joined_at.saturating_duration_since(origin).as_secs_f64(),
            left_at_s: m
                .left
                .map(|(t, _)| t.saturating_duration_since(origin).as_secs_f64()),
            connect_ms: m.connect.as_secs_f64() * 1000.0,
            time_to_first_frame_ms: counts.time_to_first_frame.map(|d| d.as_secs_f64() * 1000.0),
            rx_kbps: rx_bytes as f64 * 8.0 / in_room / 1000.0,
            link_kbps,
            link_use: m.capacity_kbps.map(|c| link_kbps / c as f64),
            video_packets: counts.packets,
            rtx_packets: rtx,
            nacks_sent: nacks,
            loss_before_retransmission_pct: counts.loss.before_pct(),
            loss_after_retransmission_pct: counts.loss.after_pct(),
            loss: counts.loss,
            frames_sent,
            frames_complete: counts.frames_complete,
            frames_complete_pct: pct(counts.frames_complete, frames_sent),
            keyframes: counts.keyframes,
            freezes: counts.freezes,
            frozen_pct: counts.frozen_pct(),
            latency_ms: Percentiles::of(&counts.latency),
            latency_over_link_ms: Percentiles::of(&over_link),
            latency_unmatched: unmatched,
            layer_switches: counts.layer_switches,
            frames_by_layer: counts
                .frames_by_height
                .iter()
                .map(|(h, n)| (rid_of_height(&media, *h), *n))
                .collect(),
            audio_packets,
            audio_loss_pct: audio_loss.after_pct(),
            relay: relay.map(|r| r.0),
            // whole seconds only: the last, partial one would read as a drop
            bitrate_kbps: series
                .iter()
                .take(end.saturating_duration_since(origin).as_secs() as usize)
                .map(|b| *b as f64 * 8.0 / 1000.0)
                .collect(),
        };
        rows.push((report.clone(), counts));
        classrooms.push(report);
        if let Some(c) = m.classroom.take() {
            let sig = sig.clone();
            leaving.spawn(async move { c.leave(&sig).await });
        }
    }
    let duration = end.saturating_duration_since(origin);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while leaving.join_next().await.is_some() {}
    })
    .await;
    leaving.abort_all();
    let _ = tokio::time::timeout(Duration::from_secs(5), teacher.leave(&sig)).await;
    drop(joiner);
    drop(relays);
    let server = match janus {
        Some(j) => {
            let base = j.http_base.clone();
            // SIGTERM and wait, off the async threads
            let _ = tokio::task::spawn_blocking(move || drop(j)).await;
            base
        }
        None => cfg.sfu.clone(),
    };

    let samples = std::mem::take(&mut *lock(&samples));
    let profiles = profile_reports(&cfg.mix, &rows);
    let mut all_lat = Histogram::default();
    let mut all_loss = LossCounts::default();
    let (mut frozen, mut watched, mut complete, mut sent) = (Duration::ZERO, Duration::ZERO, 0, 0);
    for (r, c) in &rows {
        all_lat.add(&c.latency);
        all_loss.expected += c.loss.expected;
        all_loss.gaps_seen += c.loss.gaps_seen;
        all_loss.repaired += c.loss.repaired;
        all_loss.lost += c.loss.lost;
        frozen += c.frozen;
        watched += c.watched;
        complete += c.frames_complete;
        sent += r.frames_sent;
    }
    let sfu_report = sfu_report(sfu_pid, &samples);
    let loadgen = {
        let cpu = probe::own_cpu().unwrap_or_default().as_secs_f64();
        // per classroom from the per-second samples (CPU then / classrooms then), so a ramp's
        // early, small steps do not dilute it
        let per: Vec<f64> = samples
            .iter()
            .filter(|s| s.classrooms > 0)
            .map(|s| s.loadgen_cpu_pct / s.classrooms as f64)
            .collect();
        LoadgenReport {
            cpu_seconds: cpu,
            cpu_pct_mean: 100.0 * cpu / duration.as_secs_f64().max(1e-3),
            cpu_pct_per_classroom: if per.is_empty() {
                0.0
            } else {
                per.iter().sum::<f64>() / per.len() as f64
            },
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    };
    let layer_secs = end
        .saturating_duration_since(teacher_started)
        .as_secs_f64()
        .max(1e-3);
    Ok(Report {
        mode: match (&cfg.ramp, cfg.churn_per_s) {
            (Some(_), _) => "ramp",
            (None, Some(_)) => "churn",
            (None, None) => "fixed",
        }
        .into(),
        target: match cfg.target {
            Target::Sfu => "sfu",
            Target::Janus(_) => "janus",
        }
        .into(),
        sfu: server,
        room: cfg.room.clone(),
        started_unix_s,
        duration_s: duration.as_secs_f64(),
        requested_classrooms: if cfg.churn_per_s.is_some() {
            classrooms.len() + failed.len()
        } else {
            planned
        },
        joined_classrooms: classrooms.len(),
        failed_joins: failed,
        twcc: cfg.twcc,
        teacher: TeacherReport {
            layers: media
                .layers
                .iter()
                .zip(&counters.layers)
                .map(|(l, c)| LayerReport {
                    rid: l.rid.into(),
                    width: l.width,
                    height: l.height,
                    target_kbps: l.kbps,
                    clip_kbps: l.clip_kbps(media.fps),
                    sent_kbps: c.bytes.load(Ordering::Relaxed) as f64 * 8.0 / layer_secs / 1000.0,
                    frames: c.frames.load(Ordering::Relaxed),
                    keyframes: c.keyframes.load(Ordering::Relaxed),
                    keyframe_requests: c.keyframe_requests.load(Ordering::Relaxed),
                })
                .collect(),
            audio_packets: counters.audio_packets.load(Ordering::Relaxed),
            audio_kbps: media.opus.iter().map(|p| p.len() + 12).sum::<usize>() as f64 * 8.0
                / (media.opus.len().max(1) as f64 * 0.02)
                / 1000.0,
            write_errors: counters.write_errors.load(Ordering::Relaxed),
        },
        classrooms,
        profiles,
        totals: Totals {
            latency_ms: Percentiles::of(&all_lat),
            loss_before_retransmission_pct: all_loss.before_pct(),
            loss_after_retransmission_pct: all_loss.after_pct(),
            frozen_pct: if watched.is_zero() {
                0.0
            } else {
                100.0 * frozen.as_secs_f64() / watched.as_secs_f64()
            },
            frames_complete_pct: pct(complete, sent),
            latency_cdf: all_lat.cdf(200),
        },
        sfu_process: sfu_report,
        loadgen,
        ramp: ramp_report,
        churn: churn_report,
        cluster: cluster_report,
    })
}

fn rid_of_height(media: &TeacherMedia, h: u16) -> String {
    media
        .layers
        .iter()
        .find(|l| l.height == h)
        .map(|l| l.rid.to_string())
        .unwrap_or_else(|| format!("{h}p"))
}

/// Churn: every 1/rate s the longest-present classroom leaves (WHEP DELETE, close) and a new
/// one joins, until `deadline`.
#[allow(clippy::too_many_arguments)]
async fn churn(
    joiner: &Joiner,
    rate: f64,
    assign: &[String],
    members: &Arc<Mutex<Vec<Member>>>,
    shared: &Arc<Mutex<Shared>>,
    relays: &BTreeMap<String, (Arc<RelayHandle>, Instant, ProfileSpec)>,
    deadline: Instant,
    failed: &mut Vec<String>,
) -> ChurnReport {
    let sig = &joiner.sig;
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut next = lock(members).len();
    let (mut joins, mut leaves, failed_before) = (0, 0, failed.len());
    let mut leaving = JoinSet::new();
    let mut at = Instant::now() + period;
    while at + Duration::from_secs(2) < deadline && next < assign.len() {
        tokio::time::sleep_until(at.into()).await;
        at += period;
        let gone = {
            let mut ms = lock(members);
            ms.iter_mut()
                .filter(|m| m.classroom.is_some())
                .min_by_key(|m| m.joined_at)
                .and_then(|m| {
                    m.left = Some((
                        Instant::now(),
                        joiner.counters.ticks.load(Ordering::Relaxed),
                    ));
                    // the link's counters now: what it delivers after the leave is not ours
                    m.left_relay = m
                        .local
                        .and_then(|addr| relays.get(&m.profile)?.0.stats().client(addr).cloned());
                    m.classroom.take()
                })
        };
        if let Some(c) = gone {
            leaves += 1;
            lock(shared).classrooms -= 1;
            let sig = sig.clone();
            leaving.spawn(async move { c.leave(&sig).await });
        }
        let f = joiner
            .join_range(next..next + 1, assign, members, shared, deadline)
            .await;
        if f.is_empty() {
            joins += 1;
        }
        failed.extend(f);
        next += 1;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while leaving.join_next().await.is_some() {}
    })
    .await;
    ChurnReport {
        per_s: rate,
        joins,
        leaves,
        failed_joins: failed.len() - failed_before,
    }
}

/// Latency, loss, frozen time and watched time summed over the classrooms, for ramp windows.
fn window_snapshot(members: &Mutex<Vec<Member>>) -> (Histogram, LossCounts, Duration, Duration) {
    let now = Instant::now();
    let meters: Vec<Arc<Mutex<ClassroomMeter>>> =
        lock(members).iter().map(|m| m.meter.clone()).collect();
    let mut h = Histogram::default();
    let mut l = LossCounts::default();
    let (mut frozen, mut watched) = (Duration::ZERO, Duration::ZERO);
    for m in meters {
        let mut g = lock(&m);
        h.add(&g.latency_over_link);
        let c = g.video.counts(now);
        l.expected += c.loss.expected;
        l.gaps_seen += c.loss.gaps_seen;
        l.repaired += c.loss.repaired;
        l.lost += c.loss.lost;
        frozen += c.frozen;
        watched += c.watched;
    }
    (h, l, frozen, watched)
}

struct Joiner {
    sig: Signalling,
    cfg: RunConfig,
    media: TeacherMedia,
    /// Per profile: the relay's address, the downlink capacity, the one-way base delay.
    relays: BTreeMap<String, (SocketAddr, Option<u64>, Duration)>,
    send_log: Arc<Mutex<SendLog>>,
    origin: Instant,
    meter_cfg: MeterConfig,
    ttl: Duration,
    counters: Arc<crate::peer::TeacherCounters>,
    /// Against Janus: an HTTP client and its API base.
    janus: Option<(reqwest::Client, String)>,
    relay_handles: BTreeMap<String, Arc<RelayHandle>>,
    /// The edge nodes classrooms round-robin over (empty: all on `sig`).
    edge_sigs: Vec<Signalling>,
}

impl Joiner {
    /// Joins classrooms `range`, a few at a time, giving up on joins not started by `deadline`.
    /// Returns the failures.
    async fn join_range(
        &self,
        range: std::ops::Range<usize>,
        assign: &[String],
        members: &Arc<Mutex<Vec<Member>>>,
        shared: &Arc<Mutex<Shared>>,
        deadline: Instant,
    ) -> Vec<String> {
        let mut set = JoinSet::new();
        let mut failed = Vec::new();
        let mut next = range.start;
        loop {
            while set.len() < self.cfg.join_concurrency.max(1)
                && next < range.end
                && Instant::now() < deadline
            {
                let i = next;
                next += 1;
                let profile = assign[i].clone();
                let (via, cap, base_delay) = self.relays[&profile];
                let edge = (!self.edge_sigs.is_empty()).then(|| i % self.edge_sigs.len());
                let spec = ClassroomSpec {
                    name: format!("classroom-{i:04}"),
                    via,
                    twcc: self.cfg.twcc,
                    // Janus has no per-viewer estimator: every classroom gets the layer its
                    // link fits, as without TWCC on ours
                    layer_cap: if self.cfg.twcc && self.janus.is_none() {
                        None
                    } else {
                        layer_cap(&self.media, cap)
                    },
                    placed: edge.is_some(),
                };
                let janus = self
                    .janus
                    .clone()
                    .map(|(http, base)| (http, base, self.relay_handles[&profile].clone()));
                let joined_at = Instant::now();
                let meter = Arc::new(Mutex::new(ClassroomMeter::new(
                    self.meter_cfg,
                    joined_at,
                    self.origin,
                    self.send_log.clone(),
                    self.counters.clone(),
                    base_delay,
                )));
                let ticks = self.counters.ticks.load(Ordering::Relaxed);
                let sig = match edge {
                    Some(e) => self.edge_sigs[e].clone(),
                    None => self.sig.clone(),
                };
                let route = edge.map(|_| self.relay_handles[&profile].clone());
                let ttl = self.ttl;
                set.spawn(async move {
                    let r = match janus {
                        Some((http, base, relay)) => {
                            let sub = substream_of(spec.layer_cap.as_deref());
                            Classroom::join_janus(&http, &base, &relay, &spec, sub, meter.clone())
                                .await
                        }
                        None => {
                            Classroom::join(&sig, &spec, meter.clone(), ttl, route.as_ref()).await
                        }
                    };
                    (spec, profile, cap, joined_at, ticks, meter, r, edge)
                });
            }
            let Some(done) = set.join_next().await else {
                break;
            };
            let Ok((spec, profile, cap, joined_at, ticks, meter, r, edge)) = done else {
                continue;
            };
            match r {
                Ok(c) => {
                    lock(shared).classrooms += 1;
                    lock(members).push(Member {
                        name: spec.name,
                        profile,
                        capacity_kbps: cap,
                        joined_at,
                        ticks_at_join: ticks,
                        meter,
                        local: Some(c.local),
                        connect: c.connected_after,
                        classroom: Some(c),
                        left: None,
                        left_relay: None,
                        edge,
                    });
                }
                Err(e) => {
                    tracing::warn!("{}: {e:#}", spec.name);
                    failed.push(format!("{}: {e:#}", spec.name));
                }
            }
        }
        failed
    }
}

/// The sampler's previous readings.
struct Prev {
    at: Instant,
    sfu_cpu: Option<Duration>,
    cores: Vec<(u64, u64)>,
    own: Duration,
    forwarded: Option<f64>,
    relayed: u64,
}

/// Packets the server has sent toward classrooms, as their relays counted them.
fn relayed_packets(relays: &[Arc<RelayHandle>]) -> u64 {
    relays.iter().map(|r| r.stats().downlink.sent_packets).sum()
}

#[allow(clippy::too_many_arguments)]
async fn sampler(
    sig: Option<Signalling>,
    relays: Vec<Arc<RelayHandle>>,
    sfu_pid: Option<u32>,
    origin: Instant,
    shared: Arc<Mutex<Shared>>,
    members: Arc<Mutex<Vec<Member>>>,
    samples: Arc<Mutex<Vec<Sample>>>,
    bar: ProgressBar,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last: Option<Prev> = None;
    loop {
        tick.tick().await;
        let now = Instant::now();
        let cpu = sfu_pid.and_then(probe::process_cpu);
        let rss = sfu_pid.and_then(probe::process_rss);
        let cores = probe::cores();
        let own = probe::own_cpu().unwrap_or_default();
        let fwd = match &sig {
            Some(sig) => match sig.get_text("/metrics").await {
                Ok(t) => probe::metric_value(&t, "sfu_rtp_packets_forwarded_total"),
                Err(_) => None,
            },
            None => None,
        };
        let relays2 = relays.clone();
        let relayed = tokio::task::spawn_blocking(move || relayed_packets(&relays2))
            .await
            .unwrap_or(0);
        if let Some(Prev {
            at: t0,
            sfu_cpu: cpu0,
            cores: cores0,
            own: own0,
            forwarded: fwd0,
            relayed: relayed0,
        }) = &last
        {
            let dt = now.saturating_duration_since(*t0).as_secs_f64().max(1e-3);
            let sfu_cpu_pct = match (cpu, cpu0) {
                (Some(a), Some(b)) => Some(100.0 * a.saturating_sub(*b).as_secs_f64() / dt),
                _ => None,
            };
            let core_busy_pct = cores
                .iter()
                .zip(cores0)
                .map(|(a, b)| {
                    let busy = a.0.saturating_sub(b.0) as f64;
                    let total = a.1.saturating_sub(b.1).max(1) as f64;
                    100.0 * busy / total
                })
                .collect();
            let n = lock(&members)
                .iter()
                .filter(|m| m.classroom.is_some())
                .count();
            // a rough running p99 for the progress line (all samples so far)
            let p99 = {
                let meters: Vec<_> = lock(&members).iter().map(|m| m.meter.clone()).collect();
                let mut h = Histogram::default();
                for m in meters {
                    h.add(&lock(&m).video.counts(now).latency);
                }
                h.quantile_ms(0.99)
            };
            {
                let mut s = lock(&shared);
                s.sfu_cpu_pct = sfu_cpu_pct;
            }
            let sample = Sample {
                t_s: now.saturating_duration_since(origin).as_secs_f64(),
                classrooms: n,
                sfu_cpu_pct,
                sfu_rss_mb: rss.map(|r| r as f64 / 1e6),
                core_busy_pct,
                loadgen_cpu_pct: 100.0 * own.saturating_sub(*own0).as_secs_f64() / dt,
                forwarded_per_s: match (fwd, fwd0) {
                    (Some(a), Some(b)) => Some((a - b) / dt),
                    _ => None,
                },
                relayed_per_s: Some(relayed.saturating_sub(*relayed0) as f64 / dt),
            };
            bar.set_position(sample.t_s as u64);
            bar.set_message(format!(
                "{n} classrooms | p99 {} ms | SFU CPU {} % | loadgen CPU {:.0} %",
                p99.map(|p| format!("{p:.1}")).unwrap_or_else(|| "-".into()),
                sfu_cpu_pct
                    .map(|p| format!("{p:.0}"))
                    .unwrap_or_else(|| "-".into()),
                sample.loadgen_cpu_pct
            ));
            lock(&samples).push(sample);
        }
        last = Some(Prev {
            at: now,
            sfu_cpu: cpu,
            cores,
            own,
            forwarded: fwd,
            relayed,
        });
    }
}

fn sfu_report(pid: Option<u32>, samples: &[Sample]) -> SfuReport {
    let cpu: Vec<f64> = samples.iter().filter_map(|s| s.sfu_cpu_pct).collect();
    let cpu_pct_mean = (!cpu.is_empty()).then(|| cpu.iter().sum::<f64>() / cpu.len() as f64);
    let fwd: Vec<f64> = samples.iter().filter_map(|s| s.forwarded_per_s).collect();
    let sampled_secs = samples.len() as f64;
    let forwarded = (!fwd.is_empty()).then(|| fwd.iter().sum::<f64>());
    let relayed: Vec<f64> = samples.iter().filter_map(|s| s.relayed_per_s).collect();
    let relayed = (!relayed.is_empty()).then(|| relayed.iter().sum::<f64>());
    let cpu_seconds = cpu_pct_mean.map(|m| m / 100.0 * sampled_secs);
    SfuReport {
        pid,
        cpu_seconds,
        cpu_pct_mean,
        rss_mb_max: samples.iter().filter_map(|s| s.sfu_rss_mb).reduce(f64::max),
        forwarded_packets: forwarded,
        forwarded_per_core_second: match (forwarded, cpu_seconds) {
            (Some(f), Some(c)) if c > 0.0 => Some(f / c),
            _ => None,
        },
        relayed_packets: relayed,
        relayed_per_core_second: match (relayed, cpu_seconds) {
            (Some(f), Some(c)) if c > 0.0 => Some(f / c),
            _ => None,
        },
        samples: samples.to_vec(),
    }
}

fn profile_reports(mix: &Mix, rows: &[(ClassroomReport, VideoCounts)]) -> Vec<ProfileReport> {
    let mut out = Vec::new();
    for (name, _) in mix.entries() {
        let these: Vec<&(ClassroomReport, VideoCounts)> =
            rows.iter().filter(|(r, _)| &r.profile == name).collect();
        let n = these.len();
        let mut lat = Histogram::default();
        let mut loss = LossCounts::default();
        let (mut frozen, mut watched, mut complete, mut sent, mut switches) =
            (Duration::ZERO, Duration::ZERO, 0, 0, 0);
        let mut ttff: Vec<f64> = Vec::new();
        let mut len = 0;
        for (r, c) in &these {
            lat.add(&c.latency);
            loss.expected += c.loss.expected;
            loss.gaps_seen += c.loss.gaps_seen;
            loss.repaired += c.loss.repaired;
            loss.lost += c.loss.lost;
            frozen += c.frozen;
            watched += c.watched;
            complete += c.frames_complete;
            sent += r.frames_sent;
            switches += c.layer_switches;
            ttff.extend(r.time_to_first_frame_ms);
            len = len.max(r.bitrate_kbps.len());
        }
        ttff.sort_by(f64::total_cmp);
        let mut series = vec![0.0; len];
        for (r, _) in &these {
            for (i, v) in r.bitrate_kbps.iter().enumerate() {
                series[i] += v / n.max(1) as f64;
            }
        }
        let mean = |f: &dyn Fn(&ClassroomReport) -> f64| {
            if n == 0 {
                0.0
            } else {
                these.iter().map(|(r, _)| f(r)).sum::<f64>() / n as f64
            }
        };
        out.push(ProfileReport {
            profile: name.clone(),
            classrooms: n,
            capacity_kbps: these.first().and_then(|(r, _)| r.capacity_kbps),
            rx_kbps_mean: mean(&|r| r.rx_kbps),
            link_kbps_mean: mean(&|r| r.link_kbps),
            latency_ms: Percentiles::of(&lat),
            loss_before_retransmission_pct: loss.before_pct(),
            loss_after_retransmission_pct: loss.after_pct(),
            frozen_pct: if watched.is_zero() {
                0.0
            } else {
                100.0 * frozen.as_secs_f64() / watched.as_secs_f64()
            },
            frames_complete_pct: pct(complete, sent),
            time_to_first_frame_ms_median: ttff.get(ttff.len() / 2).copied(),
            layer_switches: switches,
            bitrate_kbps: series,
            latency_cdf: lat.cdf(200),
        });
    }
    out
}

/// Checks arguments that do not need the network.
pub fn validate(cfg: &RunConfig) -> anyhow::Result<()> {
    if cfg.ramp.is_none() && cfg.classrooms == 0 {
        bail!("--classrooms must be at least 1");
    }
    if cfg.duration < Duration::from_secs(2) {
        bail!("--duration must be at least 2 s");
    }
    if let Some(r) = &cfg.ramp {
        if r.step == 0 || r.max == 0 || r.start > r.max {
            bail!("--ramp needs --step ≥ 1 and --start ≤ --max-classrooms");
        }
        if r.step_duration < Duration::from_secs(4) {
            bail!("--step-duration must be at least 4 s");
        }
    }
    if let Some(c) = cfg.churn_per_s {
        if !(c > 0.0 && c <= 20.0) {
            bail!("--churn must be a rate per second above 0 and at most 20");
        }
    }
    if cfg.secret.is_empty() && matches!(cfg.target, Target::Sfu) {
        bail!("the SFU's signing secret is empty: pass --secret or set CLASSROOM_SECRET");
    }
    if cfg.room.is_empty()
        || !cfg
            .room
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("--room must be letters, digits, '-' or '_'");
    }
    reqwest::Url::parse(&cfg.sfu).with_context(|| format!("--sfu {:?} is not a URL", cfg.sfu))?;
    for e in &cfg.edges {
        reqwest::Url::parse(e).with_context(|| format!("--edge {e:?} is not a URL"))?;
    }
    if !cfg.edges.is_empty() && !matches!(cfg.target, Target::Sfu) {
        bail!("--edge is for our SFU's cluster mode (--target sfu)");
    }
    if cfg.edge_pids.len() > cfg.edges.len() {
        bail!(
            "--edge-pid given {} times for {} --edge",
            cfg.edge_pids.len(),
            cfg.edges.len()
        );
    }
    cfg.mix.check(&cfg.profiles)?;
    Ok(())
}
