//! Adaptation on an emulated link: the teacher publishes through the loadtest's link relay
//! (`link-relay`, a user-space UDP link emulator) whose uplink drops and comes back.
//!
//! * `follows_the_issues_4_1_4_mbit_link`: the issue's acceptance as it stands, 4 -> 1 -> 4
//!   Mbit/s with a 1280x720 simulcast teacher and a classroom listening.
//! * `falls_under_a_dropped_capacity_and_keeps_the_voice`: 1.5 Mbit/s -> 400 kbit/s -> 1.5
//!   Mbit/s with courseware, for the ladder's steps, courseware's frame rate and the voice at
//!   the SFU on a link that barely carries the small layers.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn relay_bin() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("LINK_RELAY_BIN") {
        return p.into();
    }
    let p = target_dir().join("link-relay");
    if !p.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", "loadtest", "--bin", "link-relay"])
            .status()
            .expect("run cargo build -p loadtest");
        assert!(
            st.success(),
            "cargo build -p loadtest --bin link-relay failed"
        );
    }
    p
}

/// Starts `link-relay` in front of the SFU's media port with `args`; returns it (killed on
/// drop), the address to send media to, and when it started (its schedule counts from then).
fn start_relay(sfu: &Sfu, args: &[&str]) -> (ChildGuard, String, Instant) {
    let mut relay = Command::new(relay_bin())
        .args(["--target", &format!("127.0.0.1:{}", sfu.media)])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log_path("relay")).expect("relay log"))
        .spawn()
        .expect("spawn link-relay");
    let t0 = Instant::now();
    let mut line = String::new();
    BufReader::new(relay.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("relay address");
    (ChildGuard(relay), line.trim().to_string(), t0)
}

/// Timestamps of the Opus packets in a Matroska recording.
fn audio_pts(path: &std::path::Path) -> Vec<Duration> {
    use gstreamer as gst;
    use gstreamer::prelude::*;
    gst::init().unwrap();
    let desc = format!(
        "filesrc location=\"{}\" ! matroskademux name=d  \
         d.audio_0 ! {UNBOUNDED} ! appsink name=a sync=false async=false  \
         d.video_0 ! {UNBOUNDED} ! fakesink sync=false async=false",
        path.display()
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline
        .by_name("a")
        .unwrap()
        .downcast::<gstreamer_app::AppSink>()
        .unwrap();
    let out = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
    let out2 = out.clone();
    sink.set_callbacks(
        gstreamer_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let Some(p) = sample.buffer().and_then(|b| b.pts()) {
                    out2.lock()
                        .unwrap()
                        .push(Duration::from_nanos(p.nseconds()));
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let msg = pipeline.bus().unwrap().timed_pop_filtered(
        gst::ClockTime::from_seconds(60),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(
        matches!(
            msg.as_ref().map(|m| m.view()),
            Some(gst::MessageView::Eos(_))
        ),
        "reading {}: {msg:?}",
        path.display()
    );
    let v = out.lock().unwrap().clone();
    v
}

/// One look at the agent and the SFU.
#[derive(Debug, Clone)]
struct Sample {
    at: Duration,
    bytes: u64,
    step: u64,
    estimate: u64,
    audio_packets: u64,
    /// The courseware's (width, frame rate) now, if it is sent.
    courseware: Option<(u64, u64)>,
    /// The round trip the agent measures (0 before the first).
    rtt_ms: u64,
    /// Everything on the wire to the SFU (media, padding, retransmissions), over the agent's
    /// last stats interval.
    wire_bps: u64,
}

#[test]
fn falls_under_a_dropped_capacity_and_keeps_the_voice() {
    let _serial = serial();
    let sfu = Sfu::start();
    let room = "agent-link";
    const DROP: Duration = Duration::from_secs(10);
    const RECOVER: Duration = Duration::from_secs(20);
    let (guard, via, t0) = start_relay(
        &sfu,
        &[
            "--up-kbps",
            "1500",
            "--down-kbps",
            "20000",
            "--rtt-ms",
            "40",
            "--schedule",
            "10s:up=400,20s:up=1500",
        ],
    );

    let mut args: Vec<&str> = vec![
        "--role",
        "teacher",
        "--video",
        "test",
        "--audio",
        "test",
        "--width",
        "640",
        "--height",
        "360",
        "--fps",
        "30",
        "--courseware",
        "test",
        "--media-via",
    ];
    args.push(&via);
    let mut teacher = agent(
        "teacher",
        &sfu,
        room,
        &sfu.token(room, "teacher", "t1"),
        &args,
    );

    // A classroom records the lesson (its own link is clean): the voice's RTP timestamps in
    // the file show any audio lost on the teacher's link.
    wait_publishing(&sfu, room, &teacher, Duration::from_secs(20));
    let file = std::env::temp_dir().join(format!("agent-link-{}.mkv", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(classroom_agent::playback::courseware_path(&file));
    let play = format!("file:{}", file.display());
    let classroom_start = t0.elapsed();
    let mut classroom = agent(
        "classroom",
        &sfu,
        room,
        &sfu.token(room, "classroom", "c1"),
        &[
            "--role",
            "classroom",
            "--video",
            "none",
            "--audio",
            "none",
            "--play",
            &play,
        ],
    );

    let mut samples: Vec<Sample> = vec![];
    while t0.elapsed() < RECOVER + Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(250));
        let (Some(st), Some(r)) = (agent_status(&teacher), sfu.room(room)) else {
            continue;
        };
        let p = &st["publish"];
        samples.push(Sample {
            at: t0.elapsed(),
            bytes: p["bytes"].as_u64().unwrap_or(0),
            step: p["ladder_step"].as_u64().unwrap_or(0),
            estimate: p["estimate_bps"].as_u64().unwrap_or(0),
            audio_packets: audio_packets(&r),
            courseware: p["video"]["courseware"]["width"]
                .as_u64()
                .zip(p["video"]["courseware"]["fps"].as_u64()),
            rtt_ms: p["rtt_ms"].as_u64().unwrap_or(0),
            wire_bps: p["sent_bps"].as_u64().unwrap_or(0),
        });
    }
    stop_cleanly(&mut classroom, "classroom");
    stop_cleanly(&mut teacher, "teacher");
    drop(guard);

    // The voice never stops: no gap over 1 s from 1 s before the drop to the end. (The issue
    // asks for none over 200 ms; most runs show 60 ms, but the link's queue overflowing before
    // the estimate falls sometimes drops more, so the longest gap is printed, not asserted.)
    // File time is playback time (from the classroom's start) plus its 200 ms allowance.
    let pts = audio_pts(&file);
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(classroom_agent::playback::courseware_path(&file));
    assert!(pts.len() > 200, "only {} audio frames recorded", pts.len());
    let offset = classroom_start + Duration::from_millis(200);
    let from = (DROP - Duration::from_secs(1)).saturating_sub(offset);
    let gaps: Vec<(Duration, Duration)> = pts
        .windows(2)
        .filter(|w| w[0] >= from && w[1] - w[0] > Duration::from_millis(1000))
        .map(|w| (w[0] + offset, w[1] - w[0]))
        .collect();
    let longest = pts
        .windows(2)
        .filter(|w| w[0] >= from)
        .map(|w| w[1] - w[0])
        .max();
    eprintln!("longest audio gap from 1 s before the drop: {longest:?}");
    let over100: Vec<(Duration, Duration)> = pts
        .windows(2)
        .filter(|w| w[1] - w[0] > Duration::from_millis(60))
        .map(|w| (w[0] + offset, w[1] - w[0]))
        .collect();
    eprintln!("audio gaps over 60 ms (test time, length): {over100:?}");
    assert!(
        gaps.is_empty(),
        "audio gaps over 1 s (at test time, length): {gaps:?}"
    );

    // Encoded rate over the second before each sample.
    let rate_over = |i: usize, window: Duration| -> Option<u64> {
        let s = &samples[i];
        let j = samples.iter().rposition(|p| p.at + window <= s.at)?;
        let dt = (s.at - samples[j].at).as_secs_f64();
        Some(((s.bytes - samples[j].bytes) as f64 * 8.0 / dt) as u64)
    };
    let rate = |i: usize| rate_over(i, Duration::from_secs(1));
    // A resumed layer starts with a keyframe (the courseware's is capped at a second of its
    // rate, a quarter second of a 400 kbit/s link); the link's queue absorbs it, so what must
    // stay under the capacity is the 2 s average.
    let rate2 = |i: usize| rate_over(i, Duration::from_secs(2));
    for (i, s) in samples.iter().enumerate() {
        eprintln!(
            "{:>6.2}s step {} estimate {:>5} kbps sent {:>5} kbps rtt {:>4} ms courseware {:?}",
            s.at.as_secs_f64(),
            s.step,
            s.estimate / 1000,
            rate(i).unwrap_or(0) / 1000,
            s.rtt_ms,
            s.courseware
        );
    }
    let top = samples.iter().map(|s| s.step).max().unwrap_or(0);
    assert!(top >= 4, "the ladder never reached its top steps: {top}");
    // The ladder reached its top before the drop. (Not necessarily right before it: on a loaded
    // machine scheduling delay can look like queueing and dip the estimate a step for a while.)
    assert!(
        samples.iter().any(|s| s.at < DROP && s.step == top),
        "never at the top step before the drop"
    );

    // The ladder steps down, and from 4 s after the drop the agent sends under 400 kbit/s (2 s
    // averages) for the rest of the low period. (The issue asks 2 s; the measured time is
    // printed, 1.4-1.9 s in five runs, one of them beside a busy loop. The margin keeps the
    // test steady on a loaded machine whose scheduling delays the delay-based estimator also
    // sees.)
    let low_period: Vec<usize> = (0..samples.len())
        .filter(|&i| samples[i].at > DROP && samples[i].at < RECOVER)
        .collect();
    assert!(
        low_period.iter().any(|&i| samples[i].step < top),
        "the ladder did not step down after the drop"
    );
    let settled = low_period
        .iter()
        .rposition(|&i| rate2(i).is_none_or(|r| r >= 400_000))
        .map_or(Duration::ZERO, |k| samples[low_period[k]].at - DROP);
    eprintln!("sending under the new capacity for good {settled:?} after the drop");
    for &i in &low_period {
        if samples[i].at > DROP + Duration::from_secs(4) {
            let r = rate2(i).unwrap();
            assert!(
                r < 400_000,
                "sending {r} bit/s over the 2 s before {:?}, over the 400 kbit/s link",
                samples[i].at
            );
        }
    }

    // The queue the drop left on the link drains (the issue: queueing delay back under 100 ms).
    // From 6 s after the drop there is no standing queue: the median round trip is within 50 ms
    // of its floor, and any stretch over 100 ms drains within 2 s. Such stretches are the
    // keyframes sent when video resumes on the 400 kbit/s link. Before the courseware's
    // keyframes were capped at a second of its rate, one was 1.4 s of this link and kept the
    // round trip 100-280 ms for about a second, up to three times in one low period (median
    // 76 ms once in CI); with the cap the median was 6-21 ms in four runs.
    let floor = samples
        .iter()
        .map(|s| s.rtt_ms)
        .filter(|&r| r > 0)
        .min()
        .unwrap_or(0);
    let late: Vec<&Sample> = low_period
        .iter()
        .map(|&i| &samples[i])
        .filter(|s| s.at > DROP + Duration::from_secs(6) && s.rtt_ms > 0)
        .collect();
    assert!(!late.is_empty(), "no round trips in the low period");
    let mut queue: Vec<u64> = late.iter().map(|s| s.rtt_ms - floor).collect();
    queue.sort_unstable();
    let median = queue[(queue.len() - 1) / 2];
    let mut longest = Duration::ZERO;
    let mut since: Option<Duration> = None;
    for s in &late {
        if s.rtt_ms - floor >= 100 {
            let from = *since.get_or_insert(s.at);
            longest = longest.max(s.at - from);
        } else {
            since = None;
        }
    }
    eprintln!(
        "queueing delay from 6 s after the drop: median {median} ms, p90 {} ms, max {:?} ms, longest over 100 ms {longest:?} (floor {floor} ms)",
        queue[(queue.len() - 1) * 9 / 10],
        queue.last()
    );
    assert!(
        median < 50 && longest < Duration::from_secs(2),
        "a standing queue from 6 s after the drop: median {median} ms, {longest:?} over 100 ms (round trip floor {floor} ms): {queue:?}"
    );

    // Courseware keeps its readable size and gives up frame rate: at full rate (5 fps) on
    // the top step, fewer frames but still 1280 wide on the 400 kbit/s link, and paused only
    // on the step that pauses all video (the estimate dips to ~150 kbit/s at times there).
    assert!(
        samples
            .iter()
            .any(|s| s.at < DROP && s.step == top && s.courseware == Some((1280, 5))),
        "courseware not at 1280 wide, 5 fps on the top step"
    );
    for &i in &low_period {
        if samples[i].at > DROP + Duration::from_secs(6) {
            let (cw, step) = (samples[i].courseware, samples[i].step);
            assert!(
                cw.is_some_and(|(w, fps)| w == 1280 && fps < 5) || (cw.is_none() && step == 0),
                "courseware {cw:?} on step {step} at {:?} on the 400 kbit/s link",
                samples[i].at
            );
        }
    }
    // Slower slides at full width somewhere on the low link, so the check above is not met by
    // a pause alone. (Not only from 6 s on: in one CI run a single dip of the estimate to
    // 128 kbit/s 5 s after the drop paused all video for the rest of the low period, since a
    // paused agent sends only its voice and str0m's estimate then stays near what it carries.)
    let slow_slides = low_period
        .iter()
        .filter(|&&i| {
            samples[i]
                .courseware
                .is_some_and(|(w, fps)| w == 1280 && fps < 5)
        })
        .count();
    assert!(
        slow_slides > 0,
        "no slower courseware on the 400 kbit/s link"
    );

    // The voice never stops: audio packets reach the SFU in every 1 s window.
    for w in samples.windows(5) {
        if w[4].at - w[0].at <= Duration::from_millis(1600) && w[0].at > Duration::from_secs(3) {
            assert!(
                w[4].audio_packets > w[0].audio_packets,
                "no audio between {:?} and {:?}",
                w[0].at,
                w[4].at
            );
        }
    }

    // Recovery is reported, not asserted: on this loaded 2-core machine the delay-based
    // estimate climbs back slowly (see the README's measurements).
    let back = samples
        .iter()
        .filter(|s| s.at > RECOVER)
        .map(|s| s.step)
        .max();
    eprintln!("highest step within 8 s of the recovery: {back:?} (top {top})");
    // The wire rate (padding counts: the test pattern's encoders make less than they are
    // asked) over 1 s, sampled every 250 ms.
    let wire: Vec<(Duration, u64)> = samples
        .windows(4)
        .map(|w| (w[3].at, w.iter().map(|s| s.wire_bps).sum::<u64>() / 4))
        .collect();
    let regained = wire
        .iter()
        .find(|(at, r)| *at > RECOVER && *r >= 1_275_000)
        .map(|(at, _)| *at - RECOVER);
    eprintln!("wire rate at 85 % of 1.5 Mbit/s after the recovery: {regained:?}");
}

/// One look at the agent for the issue's own scenario.
#[derive(Debug, Clone, Copy)]
struct WireSample {
    at: Duration,
    /// All bytes the agent has put on the wire to the SFU.
    wire_bytes: u64,
    rtt_ms: u64,
    step: u64,
}

/// The wire rate in bit/s over the span of at least `span` that ends at sample `i`.
fn wire_rate(samples: &[WireSample], i: usize, span: Duration) -> Option<u64> {
    let s = samples[i];
    let j = samples.iter().rposition(|p| p.at + span <= s.at)?;
    let dt = (s.at - samples[j].at).as_secs_f64();
    Some(((s.wire_bytes - samples[j].wire_bytes) as f64 * 8.0 / dt) as u64)
}

/// Issue 5's acceptance at its own scale: the teacher publishes 1280x720 (3-layer simulcast)
/// through a link of 4 Mbit/s that drops to 1 Mbit/s for 20 s and comes back, while a
/// classroom records the lesson. The agent must be sending under 1 Mbit/s within 2 s of the
/// drop, keep the voice without a gap over 200 ms, leave no standing queue, and be back at 85 %
/// of 4 Mbit/s within 10 s of the recovery. All rates are bytes on the wire (padding counts).
#[test]
fn follows_the_issues_4_1_4_mbit_link() {
    let _serial = serial();
    let sfu = Sfu::start();
    let room = "agent-414";
    const DROP: Duration = Duration::from_secs(20);
    const RECOVER: Duration = Duration::from_secs(40);
    const END: Duration = Duration::from_secs(52);
    let (guard, via, t0) = start_relay(
        &sfu,
        &[
            "--up-kbps",
            "4000",
            "--down-kbps",
            "20000",
            "--rtt-ms",
            "40",
            "--schedule",
            "20s:up=1000,40s:up=4000",
        ],
    );
    let mut teacher = agent(
        "teacher-414",
        &sfu,
        room,
        &sfu.token(room, "teacher", "t1"),
        &[
            "--role",
            "teacher",
            "--video",
            "test",
            "--audio",
            "test",
            "--width",
            "1280",
            "--height",
            "720",
            "--fps",
            "30",
            "--media-via",
            &via,
        ],
    );
    wait_publishing(&sfu, room, &teacher, Duration::from_secs(20));
    let file = std::env::temp_dir().join(format!("agent-414-{}.mkv", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(classroom_agent::playback::courseware_path(&file));
    let play = format!("file:{}", file.display());
    let classroom_start = t0.elapsed();
    let mut classroom = agent(
        "classroom-414",
        &sfu,
        room,
        &sfu.token(room, "classroom", "c1"),
        &[
            "--role",
            "classroom",
            "--video",
            "none",
            "--audio",
            "none",
            "--play",
            &play,
        ],
    );

    let mut samples: Vec<WireSample> = vec![];
    while t0.elapsed() < END {
        std::thread::sleep(Duration::from_millis(250));
        let Some(st) = agent_status(&teacher) else {
            continue;
        };
        let p = &st["publish"];
        samples.push(WireSample {
            at: t0.elapsed(),
            wire_bytes: p["sent_wire_bytes"].as_u64().unwrap_or(0),
            rtt_ms: p["rtt_ms"].as_u64().unwrap_or(0),
            step: p["ladder_step"].as_u64().unwrap_or(0),
        });
    }
    let voice = agent_status(&classroom).map(|st| st["play"].clone());
    stop_cleanly(&mut classroom, "classroom");
    stop_cleanly(&mut teacher, "teacher");
    drop(guard);

    for (i, s) in samples.iter().enumerate() {
        eprintln!(
            "{:>6.2}s step {} wire {:>5} kbps (0.5 s) {:>5} kbps (1 s) rtt {:>4} ms",
            s.at.as_secs_f64(),
            s.step,
            wire_rate(&samples, i, Duration::from_millis(500)).unwrap_or(0) / 1000,
            wire_rate(&samples, i, Duration::from_secs(1)).unwrap_or(0) / 1000,
            s.rtt_ms,
        );
    }
    let at = |i: usize| samples[i].at;
    let in_span = |from: Duration, to: Duration| -> Vec<usize> {
        (0..samples.len())
            .filter(|&i| at(i) > from && at(i) <= to)
            .collect()
    };

    // The link was used before the drop: at least 3 Mbit/s over some second.
    let before = in_span(Duration::ZERO, DROP)
        .into_iter()
        .filter_map(|i| wire_rate(&samples, i, Duration::from_secs(1)))
        .max()
        .unwrap_or(0);
    assert!(
        before >= 3_000_000,
        "at most {before} bit/s before the drop"
    );

    // Under the new capacity within 2 s of the drop (over half a second).
    let under = in_span(DROP, RECOVER)
        .into_iter()
        .find(|&i| {
            wire_rate(&samples, i, Duration::from_millis(500)).is_some_and(|r| r < 1_000_000)
        })
        .map(|i| at(i) - DROP);
    eprintln!("wire rate over 0.5 s first under 1 Mbit/s {under:?} after the drop");
    assert!(
        under.is_some_and(|d| d <= Duration::from_secs(2)),
        "not under 1 Mbit/s within 2 s of the drop: {under:?}"
    );
    // And under it from then on, taken over the rest of the low period.
    let low = in_span(DROP + Duration::from_secs(4), RECOVER);
    let (first, last) = (low[0], low[low.len() - 1]);
    let low_rate = (samples[last].wire_bytes - samples[first].wire_bytes) as f64 * 8.0
        / (at(last) - at(first)).as_secs_f64();
    eprintln!("wire rate from 4 s after the drop to the recovery: {low_rate:.0} bit/s");
    assert!(
        low_rate < 1_000_000.0,
        "{low_rate:.0} bit/s on the 1 Mbit/s link from 4 s after the drop"
    );

    // Queueing delay back under 100 ms: from 6 s after the drop the round trip's median is
    // within 50 ms of its floor, and no stretch over 100 ms above it lasts 2 s.
    let floor = samples
        .iter()
        .map(|s| s.rtt_ms)
        .filter(|&r| r > 0)
        .min()
        .unwrap_or(0);
    let late = in_span(DROP + Duration::from_secs(6), RECOVER);
    let mut queue: Vec<u64> = late
        .iter()
        .map(|&i| samples[i].rtt_ms.saturating_sub(floor))
        .collect();
    queue.sort_unstable();
    let median = queue[(queue.len() - 1) / 2];
    let (mut longest, mut since) = (Duration::ZERO, None);
    for &i in &late {
        if samples[i].rtt_ms.saturating_sub(floor) >= 100 {
            longest = longest.max(at(i) - *since.get_or_insert(at(i)));
        } else {
            since = None;
        }
    }
    eprintln!(
        "queueing delay from 6 s after the drop: median {median} ms, longest over 100 ms {longest:?} (floor {floor} ms)"
    );
    assert!(
        median < 50 && longest < Duration::from_secs(2),
        "a standing queue from 6 s after the drop: median {median} ms, {longest:?} over 100 ms: {queue:?}"
    );

    // Back at 85 % of 4 Mbit/s (over a second) within 10 s of the recovery.
    let regained = in_span(RECOVER, END)
        .into_iter()
        .find(|&i| wire_rate(&samples, i, Duration::from_secs(1)).is_some_and(|r| r >= 3_400_000))
        .map(|i| at(i) - RECOVER);
    eprintln!("wire rate over 1 s first at 85 % of 4 Mbit/s {regained:?} after the recovery");
    assert!(
        regained.is_some_and(|d| d <= Duration::from_secs(10)),
        "not back at 85 % of 4 Mbit/s within 10 s of the recovery: {regained:?}"
    );

    // The voice: no stretch of it over 200 ms lost on the way, in all the classroom got
    // (its sequence numbers and RTP times; see `voice_gaps`).
    let voice = voice.expect("the classroom's status");
    eprintln!(
        "voice lost on the way: {} stretches over 200 ms, longest {} ms",
        voice["voice_gaps"], voice["voice_gap_longest_ms"]
    );
    assert!(
        voice["frames"].as_u64().unwrap_or(0) > 1000,
        "the classroom got too little: {voice}"
    );
    assert_eq!(voice["voice_gaps"], 0, "voice lost: {voice}");
    assert!(
        voice["voice_gap_longest_ms"].as_u64().unwrap_or(u64::MAX) <= 200,
        "{voice}"
    );
    // What the recording shows: the voice's playback time, where the classroom's playout
    // delay growing for the link's queue (up to 1 s here) is a jump too, which a classroom
    // hears as a pause.
    let pts = audio_pts(&file);
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(classroom_agent::playback::courseware_path(&file));
    assert!(pts.len() > 500, "only {} audio frames recorded", pts.len());
    let offset = classroom_start + Duration::from_millis(200);
    let jumps: Vec<(Duration, Duration)> = pts
        .windows(2)
        .filter(|w| w[1] - w[0] > Duration::from_millis(100))
        .map(|w| (w[0] + offset, w[1] - w[0]))
        .collect();
    eprintln!("jumps in the recorded voice over 100 ms (test time, length): {jumps:?}");
}

/// Issue 5, item 6: after a link outage the agent restarts ICE on the same WHIP session (RFC
/// 9725 PATCH) instead of making a new one, and the voice is back at the SFU within 5 s of the
/// link's return. The media path runs through `link-relay`, which drops every packet both ways
/// from `CUT` to `BACK`; HTTP to the SFU stays up, as it does when a school's router drops its
/// UDP mappings.
#[test]
fn a_link_outage_is_healed_by_an_ice_restart_of_the_same_session() {
    let _serial = serial();
    let sfu = Sfu::start();
    let room = "agent-ice-restart";
    const CUT: Duration = Duration::from_secs(12);
    const BACK: Duration = Duration::from_secs(18);
    const BACK_WITHIN: Duration = Duration::from_secs(5);

    let schedule = format!("{}s:loss=100,{}s:loss=0", CUT.as_secs(), BACK.as_secs());
    let (_guard, via, t0) = start_relay(
        &sfu,
        &[
            "--up-kbps",
            "20000",
            "--down-kbps",
            "20000",
            "--rtt-ms",
            "20",
            "--schedule",
            &schedule,
        ],
    );

    let mut teacher = agent(
        "teacher-ice",
        &sfu,
        room,
        &sfu.token(room, "teacher", "t1"),
        &[
            "--role",
            "teacher",
            "--video",
            "test",
            "--audio",
            "test",
            "--media-via",
            &via,
        ],
    );
    wait_publishing(&sfu, room, &teacher, CUT.saturating_sub(t0.elapsed()));
    let before = agent_status(&teacher).expect("status")["publish"].clone();
    assert_eq!(before["connects"], 1, "{before}");

    // Through the outage: the agent finds the SFU silent, restarts ICE (the PATCH goes over
    // HTTP, which works), and its connectivity checks get through once the link is back.
    std::thread::sleep((t0 + BACK).saturating_duration_since(Instant::now()));
    let back = Instant::now();
    let base = sfu.room(room).map(|r| audio_packets(&r)).unwrap_or(0);
    let flowing = wait_until(Duration::from_secs(15), || {
        sfu.room(room)
            .is_some_and(|r| audio_packets(&r) > base + 25)
    });
    let took = back.elapsed();
    let st = agent_status(&teacher).expect("status");
    let p = &st["publish"];
    eprintln!(
        "voice back at the SFU {took:.1?} after the link returned; agent: {} ICE restarts, {} \
         sessions connected, {} failures",
        p["ice_restarts"], p["connects"], p["failures"]
    );
    assert!(
        flowing,
        "the voice did not come back within 15 s of the link's return: {st}\n{}",
        teacher.tail()
    );
    assert!(
        took <= BACK_WITHIN,
        "the voice came back {took:?} after the link returned, want <= {BACK_WITHIN:?}"
    );
    assert!(
        p["ice_restarts"].as_u64() >= Some(1),
        "no ICE restart: {st}\n{}",
        teacher.tail()
    );
    assert_eq!(
        p["connects"],
        1,
        "the agent made a new session instead of restarting ICE: {st}\n{}",
        teacher.tail()
    );
    assert_eq!(st["publish"]["connected"], true);
    teacher.stop(Duration::from_secs(5));
}
