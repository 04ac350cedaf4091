//! End to end through the real SFU binary: an agent publishes as the teacher with test
//! sources (3-layer VP8 simulcast and Opus), a second agent plays the lesson into a Matroska
//! file, and the file is decoded with GStreamer. A second test kills and restarts the SFU
//! and expects the teacher back without help.
//!
//! The SFU binary comes from SFU_BIN, or target/<profile>/sfu next to this test (built with
//! `cargo build -p sfu` when missing). Everything stays on 127.0.0.1.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use serde_json::Value;

/// Decodes a Matroska file: (video frames, audio frames, picture size). A file `with_audio`
/// has an Opus track besides the video (a courseware recording has none).
fn decode_file(path: &Path, codec: &str, with_audio: bool) -> (u64, u64, Option<(i32, i32)>) {
    gst::init().unwrap();
    let decoder = match codec {
        "h264" => "h264parse ! avdec_h264",
        _ => "vp8dec",
    };
    // The recording starts audio as soon as it arrives and video at its first keyframe, so
    // one track may begin seconds into the file: sinks that do not wait for preroll and
    // unbounded queues keep one branch from stalling the demuxer while the other is empty.
    let audio = if with_audio {
        format!("d.audio_0 ! {UNBOUNDED} ! opusdec ! appsink name=a sync=false async=false")
    } else {
        String::new()
    };
    let desc = format!(
        "filesrc location=\"{}\" ! matroskademux name=d  \
         d.video_0 ! {UNBOUNDED} ! {decoder} ! videoconvert ! appsink name=v sync=false async=false  \
         {audio}",
        path.display()
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let size = Arc::new(Mutex::new(None));
    let names: &[&str] = if with_audio { &["v", "a"] } else { &["v"] };
    for (i, name) in names.iter().enumerate() {
        let sink = pipeline
            .by_name(name)
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        let (counts, size) = (counts.clone(), size.clone());
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if i == 0 {
                        if let Some(st) = sample.caps().and_then(|c| c.structure(0)) {
                            if let (Ok(w), Ok(h)) =
                                (st.get::<i32>("width"), st.get::<i32>("height"))
                            {
                                *size.lock().unwrap() = Some((w, h));
                            }
                        }
                    }
                    counts[i].fetch_add(1, Ordering::Relaxed);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    }
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(60),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    let outcome = msg.as_ref().map(|m| match m.view() {
        gst::MessageView::Error(e) => format!("error: {} {:?}", e.error(), e.debug()),
        _ => "eos".to_string(),
    });
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(
        outcome.as_deref(),
        Some("eos"),
        "decoding {} ({} bytes): {} video and {} audio frames so far",
        path.display(),
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
    );
    let s = *size.lock().unwrap();
    (
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
        s,
    )
}

/// Courseware from a folder of slides (two PNG pictures of other sizes, letterboxed to
/// 1280x720, which the SFU reads from the VP8 keyframes).
#[test]
fn teacher_publishes_and_classroom_records_a_decodable_lesson() {
    gst::init().unwrap();
    let dir = std::env::temp_dir().join(format!("agent-slides-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, pattern, w, h) in [
        ("01.png", "smpte", 800, 600),
        ("02.png", "ball", 1920, 1080),
    ] {
        let p = gst::parse::launch(&format!(
            "videotestsrc pattern={pattern} num-buffers=1 ! video/x-raw,width={w},height={h} ! \
             pngenc ! filesink location={}",
            dir.join(name).display()
        ))
        .unwrap();
        p.set_state(gst::State::Playing).unwrap();
        let eos = p
            .bus()
            .unwrap()
            .timed_pop_filtered(gst::ClockTime::from_seconds(10), &[gst::MessageType::Eos]);
        p.set_state(gst::State::Null).unwrap();
        assert!(eos.is_some(), "writing slide {name}");
    }
    record_lesson("vp8", Some(format!("slides:{}", dir.display())));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn h264_lesson_records_and_decodes() {
    record_lesson("h264", Some("test".into()));
}

/// The teacher publishes (3-layer simulcast in `codec`, Opus, optionally courseware), a
/// classroom records 8 s into Matroska, and the files (the lesson's, and the courseware's
/// beside it) decode. With courseware, a second classroom plays to its screen: camera and
/// courseware side by side, then the camera's place alone once the teacher has gone.
fn record_lesson(codec: &str, courseware_from: Option<String>) {
    let _serial = serial();
    let sfu = Sfu::start();
    let room = format!("agent-lesson-{codec}");
    let room = room.as_str();
    let mut args: Vec<&str> = TEACHER.to_vec();
    args.extend(["--codec", codec]);
    let with_courseware = courseware_from.is_some();
    if let Some(from) = courseware_from.as_deref() {
        // A second video track at 1280x720, 2 frames a second; slides change every 2 s.
        args.extend([
            "--courseware",
            from,
            "--courseware-fps",
            "2",
            "--slide-seconds",
            "2",
        ]);
    }
    let mut teacher = agent(
        "teacher",
        &sfu,
        room,
        &sfu.token(room, "teacher", "t1"),
        &args,
    );
    let info = wait_publishing(&sfu, room, &teacher, Duration::from_secs(30));
    eprintln!("room: {info}");
    let mut courseware = Value::Null;
    let ok = !with_courseware
        || wait_until(Duration::from_secs(15), || {
            courseware = courseware_track(&sfu, room);
            courseware["layers"][0]["packets"].as_u64() > Some(0)
        });
    assert!(
        ok,
        "no courseware at the SFU: {courseware}\n{}",
        teacher.tail()
    );
    if with_courseware && codec == "vp8" {
        // The SFU reads the size from VP8 keyframes only.
        assert_eq!(courseware["layers"][0]["width"], 1280, "{courseware}");
        assert_eq!(courseware["layers"][0]["height"], 720, "{courseware}");
    }
    if courseware_from
        .as_deref()
        .is_some_and(|c| c.starts_with("slides:"))
    {
        assert_eq!(
            log_count(&teacher, "courseware: 2 slides from"),
            1,
            "{}",
            teacher.tail()
        );
        // The slides advance (every 2 s): the second one has been shown.
        assert!(
            wait_until(Duration::from_secs(10), || log_count(
                &teacher,
                "courseware: slide 2 of 2"
            ) > 0),
            "{}",
            teacher.tail()
        );
    }
    // The connection's stats come every second. With courseware, wait for the estimate to
    // climb to the full courseware rung too: on a loaded machine that takes a few seconds.
    let mut status = Value::Null;
    wait_until(Duration::from_secs(30), || {
        status = agent_status(&teacher).unwrap_or(Value::Null);
        let courseware = &status["publish"]["video"]["courseware"];
        status["publish"]["sent_bps"].as_u64() > Some(0)
            && (!with_courseware || (courseware["width"] == 1280 && courseware["fps"] == 2))
    });
    eprintln!("teacher status: {status}");
    assert_eq!(status["role"], "teacher");
    assert_eq!(status["publish"]["connected"], true);
    assert!(status["publish"]["frames"].as_u64() > Some(0));
    assert!(status["publish"]["estimate_bps"].as_u64() > Some(0));
    assert!(status["publish"]["sent_bps"].as_u64() > Some(0), "{status}");
    assert!(status["publish"]["rtt_ms"].is_u64(), "{status}");
    let video = &status["publish"]["video"];
    assert_eq!(
        video["camera"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    if with_courseware {
        // Courseware is part of the adaptation: on a free link it runs at full size and rate.
        assert_eq!(video["courseware"]["width"], 1280, "{status}");
        assert_eq!(video["courseware"]["fps"], 2, "{status}");
    } else {
        assert!(video["courseware"].is_null(), "{status}");
    }

    let file = std::env::temp_dir().join(format!("agent-test-{}-{codec}.mkv", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let play = format!("file:{}", file.display());
    let mut classroom = agent(
        "classroom",
        &sfu,
        room,
        &sfu.token(room, "classroom", "c1"),
        &[
            LISTENER,
            &[
                "--play", &play, "--codec", codec, "--width", "320", "--height", "180",
            ],
        ]
        .concat(),
    );
    let cw_file = classroom_agent::playback::courseware_path(&file);
    let _ = std::fs::remove_file(&cw_file);
    // No display here: the agent composes the picture and drops it (a fakesink), and counts
    // what reaches the composition.
    let mut screen = with_courseware.then(|| {
        agent(
            "screen",
            &sfu,
            room,
            &sfu.token(room, "classroom", "c2"),
            &[LISTENER, &["--play", "screen", "--codec", codec]].concat(),
        )
    });
    // Play for 8 s of connected time.
    let connected = wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&classroom.log).is_ok_and(|l| l.contains("whep: connected"))
    });
    assert!(
        connected,
        "classroom did not connect\n{}\n{}",
        classroom.tail(),
        sfu.proc.tail()
    );
    // The SFU may hold a new viewer's slots for a few seconds while it measures the
    // publisher's layers: record 8 s from when voice and camera are forwarded.
    assert!(
        wait_until(Duration::from_secs(15), || sfu.room(room).is_some_and(
            |r| { forwarded(&r, "teacher_camera") > 0 && forwarded(&r, "teacher_audio") > 0 }
        )),
        "the SFU does not forward the lesson to the classroom: {:?}",
        sfu.room(room)
    );
    // The screen shows both pictures side by side.
    let mut before = (String::new(), 0, 0);
    if let Some(screen) = &screen {
        let side = wait_until(Duration::from_secs(20), || {
            before = screen_status(screen);
            before.0 == "side_by_side" && before.1 > 0 && before.2 > 0
        });
        assert!(
            side,
            "the screen does not show camera and courseware: {before:?}\n{}",
            screen.tail()
        );
    }
    std::thread::sleep(Duration::from_secs(8));
    eprintln!("room after 8 s: {:?}", sfu.room(room));
    if let Some(screen) = &screen {
        // 8 s more of pictures: 15 camera and 2 courseware frames a second are sent.
        let after = screen_status(screen);
        eprintln!("screen: {before:?} -> {after:?}");
        assert!(after.1 >= before.1 + 30, "camera {before:?} -> {after:?}");
        assert!(
            after.2 >= before.2 + 4,
            "courseware {before:?} -> {after:?}"
        );
    }
    assert!(
        classroom.running(),
        "classroom exited early\n{}",
        classroom.tail()
    );
    // The playout delay starts at the default allowance and only ever grows.
    let cs = agent_status(&classroom).expect("classroom /status");
    eprintln!("classroom play status: {}", cs["play"]);
    assert!(cs["play"]["playout_ms"].as_u64() >= Some(200), "{cs}");
    assert!(cs["play"]["received_bps"].as_u64() > Some(0), "{cs}");
    let st = classroom.stop(Duration::from_secs(15));
    assert!(
        st.is_some_and(|s| s.success()),
        "classroom did not exit 0 on SIGTERM: {st:?}\n{}",
        classroom.tail()
    );
    let st = teacher.stop(Duration::from_secs(15));
    assert!(
        st.is_some_and(|s| s.success()),
        "teacher did not exit 0 on SIGTERM: {st:?}\n{}",
        teacher.tail()
    );
    if let Some(mut screen) = screen.take() {
        // The teacher has gone: neither picture stands frozen; the screen says it waits.
        let mut now = (String::new(), 0, 0);
        let back = wait_until(Duration::from_secs(15), || {
            now = screen_status(&screen);
            now.0 == "waiting"
        });
        assert!(back, "the screen kept {now:?}\n{}", screen.tail());
        let st = screen.stop(Duration::from_secs(15));
        assert!(
            st.is_some_and(|s| s.success()),
            "the screen classroom did not exit 0 on SIGTERM: {st:?}\n{}",
            screen.tail()
        );
    }

    assert_eq!(
        log_count(&classroom, "playback finished"),
        1,
        "the recording was not finalized with end-of-stream\n{}",
        classroom.tail()
    );
    for p in [&teacher, &classroom] {
        let log = std::fs::read_to_string(&p.log).unwrap_or_default();
        let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
        assert!(
            errors.is_empty(),
            "{} logged errors:\n{}",
            p.name,
            errors.join("\n")
        );
    }
    let (video, audio, size) = decode_file(&file, codec, true);
    eprintln!("{codec}: decoded {video} video frames {size:?}, {audio} audio frames");
    // 8 s at 15 fps is 120 frames and at 20 ms 400 Opus frames: generous floors for a
    // loaded machine.
    assert!(video >= 40, "only {video} video frames decoded");
    assert!(audio >= 150, "only {audio} audio frames decoded");
    assert!(
        size.is_some_and(|(w, h)| w >= 80 && h >= 44),
        "picture size {size:?}"
    );
    let _ = std::fs::remove_file(&file);
    if with_courseware {
        assert_eq!(
            log_count(&classroom, "courseware recording finished"),
            1,
            "{}",
            classroom.tail()
        );
        let (frames, _, size) = decode_file(&cw_file, codec, false);
        eprintln!("{codec}: decoded {frames} courseware frames {size:?}");
        // 2 frames a second for 8 s and more.
        assert!(frames >= 8, "only {frames} courseware frames decoded");
        assert_eq!(size, Some((1280, 720)));
        let _ = std::fs::remove_file(&cw_file);
    } else {
        assert!(!cw_file.exists(), "a courseware file without courseware");
    }
}

/// A lesson without courseware: the classroom's screen shows the camera alone, and its
/// pictures keep flowing into the composition (a mixer waiting for the missing courseware
/// would stall them).
#[test]
fn a_screen_without_courseware_shows_the_camera() {
    let _serial = serial();
    let sfu = Sfu::start();
    let room = "agent-screen-camera";
    let mut teacher = publishing_teacher(&sfu, room, TEACHER);
    let mut screen = agent(
        "screen",
        &sfu,
        room,
        &sfu.token(room, "classroom", "c1"),
        &[LISTENER, &["--play", "screen"]].concat(),
    );
    let mut first = (String::new(), 0, 0);
    assert!(
        wait_until(Duration::from_secs(20), || {
            first = screen_status(&screen);
            first.1 > 0
        }),
        "no camera picture reached the screen: {first:?}\n{}",
        screen.tail()
    );
    std::thread::sleep(Duration::from_secs(5));
    let later = screen_status(&screen);
    eprintln!("screen: {first:?} -> {later:?}");
    assert_eq!(later.0, "camera", "{later:?}");
    // 15 frames a second are sent: 5 s bring far more than 20.
    assert!(later.1 >= first.1 + 20, "{first:?} -> {later:?}");
    assert_eq!(later.2, 0);
    stop_cleanly(&mut screen, "screen classroom");
    stop_cleanly(&mut teacher, "teacher");
}

/// A display number with no X server behind it (no lock file, no socket).
fn free_display() -> u32 {
    (90 + std::process::id() % 100..300)
        .find(|n| {
            !Path::new(&format!("/tmp/.X{n}-lock")).exists()
                && !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
        })
        .expect("a free X display number")
}

/// An Xvfb server on a free display number, with a black background: (process, ":N").
fn start_xvfb(screen: &str) -> (Proc, String) {
    let n = free_display();
    let xvfb = Proc::spawn(
        "xvfb",
        std::process::Command::new("Xvfb")
            .arg(format!(":{n}"))
            .args(["-screen", "0", screen, "-nolisten", "tcp", "-br"]),
    );
    assert!(
        wait_until(Duration::from_secs(20), || Path::new(&format!(
            "/tmp/.X11-unix/X{n}"
        ))
        .exists()),
        "Xvfb :{n} did not start\n{}",
        xvfb.tail()
    );
    (xvfb, format!(":{n}"))
}

/// The share of a display's pixels that are bright (luma over 128), from one picture of it.
fn bright_share(display: &str) -> f64 {
    gst::init().unwrap();
    let pipeline = gst::parse::launch(&format!(
        "ximagesrc display-name={display} use-damage=false num-buffers=1 ! videoconvert ! \
         video/x-raw,format=GRAY8 ! appsink name=out sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let sample = sink.try_pull_sample(gst::ClockTime::from_seconds(10));
    let _ = pipeline.set_state(gst::State::Null);
    let sample = sample.expect("a picture of the display");
    let caps = sample.caps().unwrap().structure(0).unwrap().to_owned();
    let (w, h) = (
        caps.get::<i32>("width").unwrap() as usize,
        caps.get::<i32>("height").unwrap() as usize,
    );
    let map = sample.buffer().unwrap().map_readable().unwrap();
    // GRAY8 rows are padded to 4 bytes.
    let stride = w.div_ceil(4) * 4;
    let bright = (0..h)
        .flat_map(|y| &map[y * stride..y * stride + w])
        .filter(|&&v| v > 128)
        .count();
    bright as f64 / (w * h) as f64
}

/// What the projector shows, looked at on an Xvfb display: the waiting slate (white text on
/// black) before the teacher comes, the teacher's camera (SMPTE bars, mostly bright) while
/// the lesson runs, and the slate again once the teacher has gone.
#[test]
fn the_projector_shows_the_slate_then_the_lesson_then_the_slate() {
    let _serial = serial();
    let (mut xvfb, display) = start_xvfb("1280x720x24");
    let sfu = Sfu::start();
    let room = "agent-projector";
    let mut screen = agent_with_env(
        "projector",
        &sfu,
        room,
        &sfu.token(room, "classroom", "c1"),
        &[LISTENER, &["--play", "screen"]].concat(),
        &[("DISPLAY", display.as_str())],
    );
    // Waits for the screen's layout and the share of it that is bright; prints the share.
    let shows = |what: &str, layout: &str, bright: &dyn Fn(f64) -> bool, limit: u64| {
        let mut share = 0.0;
        let ok = wait_until(Duration::from_secs(limit), || {
            share = bright_share(&display);
            screen_status(&screen).0 == layout && bright(share)
        });
        assert!(
            ok,
            "{what}: the screen shows {:?}, {share:.4} of it bright\n{}",
            screen_status(&screen),
            screen.tail()
        );
        eprintln!("{what}: {share:.4} of the screen bright");
    };
    let slate = |share: f64| share > 0.002 && share < 0.15;
    shows("waiting", "waiting", &slate, 20);
    assert!(log_count(&screen, "ximagesink") > 0, "{}", screen.tail());
    let mut teacher = publishing_teacher(&sfu, room, TEACHER);
    shows("lesson", "camera", &|share| share > 0.3, 30);
    stop_cleanly(&mut teacher, "teacher");
    shows("after the lesson", "waiting", &slate, 20);
    stop_cleanly(&mut screen, "projector classroom");
    xvfb.stop(Duration::from_secs(10));
}

/// Courseware captured from a real X screen (Xvfb, 1024x768) reaches the SFU at the
/// courseware's size. A teacher whose screen cannot be opened teaches on with camera and
/// voice, and says why.
#[test]
fn courseware_comes_from_the_screen_and_a_missing_screen_leaves_the_lesson_on() {
    let _serial = serial();
    let (mut xvfb, display) = start_xvfb("1024x768x24");
    let sfu = Sfu::start();
    let room = "agent-screen";
    let mut args: Vec<&str> = TEACHER.to_vec();
    args.extend(["--courseware", "screen", "--courseware-fps", "2"]);
    let mut teacher = agent_with_env(
        "teacher",
        &sfu,
        room,
        &sfu.token(room, "teacher", "t1"),
        &args,
        &[("DISPLAY", display.as_str())],
    );
    wait_publishing(&sfu, room, &teacher, Duration::from_secs(30));
    let mut courseware = Value::Null;
    let flowing = wait_until(Duration::from_secs(20), || {
        courseware = courseware_track(&sfu, room);
        courseware["layers"][0]["packets"].as_u64() > Some(4)
            && courseware["layers"][0]["width"] == 1280
    });
    assert!(
        flowing,
        "no screen courseware at the SFU: {courseware}\n{}",
        teacher.tail()
    );
    assert_eq!(courseware["layers"][0]["height"], 720, "{courseware}");
    assert!(log_count(&teacher, "ximagesrc") > 0, "{}", teacher.tail());
    assert_eq!(log_count(&teacher, "cannot capture the screen"), 0);

    // The same teacher on a display that is not there.
    // Xvfb holds display n now, so this is another one, with no X server.
    let gone = format!(":{}", free_display());
    let room2 = "agent-no-screen";
    let mut lost = agent_with_env(
        "no-screen",
        &sfu,
        room2,
        &sfu.token(room2, "teacher", "t2"),
        &args,
        &[("DISPLAY", gone.as_str())],
    );
    wait_publishing(&sfu, room2, &lost, Duration::from_secs(30));
    let status = agent_status(&lost).expect("/status");
    assert_eq!(status["publish"]["connected"], true, "{status}");
    assert!(
        status["publish"]["video"]["courseware"].is_null(),
        "{status}"
    );
    assert!(
        status["publish"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot capture the screen")),
        "{status}"
    );
    assert_eq!(
        log_count(&lost, "teaching on without courseware"),
        1,
        "{}",
        lost.tail()
    );
    stop_cleanly(&mut lost, "no-screen teacher");
    stop_cleanly(&mut teacher, "teacher");
    xvfb.stop(Duration::from_secs(10));
}

/// Unattended setup as a school's IT staff would do it: a config file names the school, the
/// classroom's class id and the scheduler's join URL for a lesson; the agent fetches its own
/// token from the real scheduler (signed with the SFU's secret) and joins the lesson's room.
/// The command line still wins over the file. An id the lesson does not list stops the start
/// with the ids it does list.
#[test]
fn a_configured_classroom_fetches_its_token_from_the_scheduler() {
    let _serial = serial();
    let sfu = Sfu::start();
    let dir = std::env::temp_dir().join(format!("agent-config-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // It prints its address first on stdout (into its log here).
    let mut scheduler = Proc::spawn(
        "scheduler",
        std::process::Command::new(scheduler_bin())
            .args(["serve", "--http", "127.0.0.1:0"])
            .arg("--db")
            .arg(format!("sqlite://{}", dir.join("s.db").display()))
            .args(["--sfu-url", &sfu.url("")])
            .env("CLASSROOM_SECRET", &sfu.secret)
            .env("RUST_LOG", "warn"),
    );
    let mut base = String::new();
    assert!(
        wait_until(Duration::from_secs(30), || {
            base = std::fs::read_to_string(&scheduler.log)
                .unwrap_or_default()
                .lines()
                .find(|l| l.starts_with("http://127.0.0.1:"))
                .unwrap_or_default()
                .trim()
                .to_string();
            !base.is_empty()
        }),
        "the scheduler did not start\n{}",
        scheduler.tail()
    );

    // The small example region, solved.
    let http = reqwest::blocking::Client::new();
    let json = |r: reqwest::blocking::RequestBuilder| -> Value {
        let r = r.send().expect("scheduler request");
        let st = r.status();
        let v: Value = r.json().expect("JSON answer");
        assert!(st.is_success(), "{st}: {v}");
        v
    };
    let region = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scheduler/examples/region-small.json"),
    )
    .unwrap();
    let r = json(
        http.post(format!("{base}/api/regions"))
            .header("content-type", "application/json")
            .body(region),
    );
    let job = json(
        http.post(format!("{base}/api/regions/{}/solve", r["id"]))
            .header("content-type", "application/json")
            .body(r#"{"time_limit_s": 10}"#),
    );
    let mut done = Value::Null;
    assert!(
        wait_until(Duration::from_secs(120), || {
            done = json(http.get(format!("{base}/api/jobs/{}", job["job"])));
            done["state"] == "done"
        }),
        "solve: {done}"
    );
    let plan_id = &done["plan_id"];
    let plan = json(http.get(format!("{base}/api/plans/{plan_id}")));
    let lesson = plan["lessons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| !l["receivers"].as_array().unwrap().is_empty())
        .expect("a lesson with receivers")
        .clone();
    let class = lesson["receivers"][0].as_str().unwrap().to_string();
    let room = lesson["room"].as_str().unwrap().to_string();
    let join = format!(
        "{base}/api/plans/{plan_id}/lessons/{}/join",
        lesson["id"].as_str().unwrap()
    );

    let config = |id: &str| {
        let path = dir.join(format!("{id}.toml"));
        std::fs::write(
            &path,
            format!(
                "school = \"p-test\"\nid = \"{id}\"\nsfu = \"{}\"\ntoken_url = \"{join}\"\n\
                 role = \"classroom\"\nplay = \"file:{}\"\n\
                 # The command line's --status wins over this.\nstatus = \"127.0.0.1:1\"\n\
                 [devices]\nvideo = \"none\"\naudio = \"none\"\n",
                sfu.url(""),
                dir.join("lesson.mkv").display()
            ),
        )
        .unwrap();
        path
    };
    let spawn = |name: &str, path: &Path| {
        Proc::spawn(
            name,
            std::process::Command::new(env!("CARGO_BIN_EXE_classroom-agent"))
                .arg("--config")
                .arg(path)
                .args(["--status", "127.0.0.1:0"])
                .env("RUST_LOG", "info,classroom_agent=debug")
                .env_remove("CLASSROOM_TOKEN")
                .env_remove("CLASSROOM_TOKEN_URL")
                .env_remove("CLASSROOM_ROOM")
                .env_remove("CLASSROOM_SFU")
                .env_remove("CLASSROOM_ID")
                .env_remove("CLASSROOM_SCHOOL")
                .env_remove("CLASSROOM_CONFIG"),
        )
    };
    let mut classroom = spawn("configured", &config(&class));
    let mut status = Value::Null;
    let joined = wait_until(Duration::from_secs(30), || {
        status = agent_status(&classroom).unwrap_or(Value::Null);
        status["play"]["connected"] == true
    });
    assert!(joined, "{status}\n{}", classroom.tail());
    assert_eq!(status["room"], room.as_str(), "{status}");
    assert_eq!(status["school"], "p-test");
    assert_eq!(status["id"], class.as_str());
    assert_eq!(log_count(&classroom, "token: fetched from"), 1);
    // The SFU took the scheduler's token: the viewer is this class, in the lesson's room.
    let viewers = sfu.room(&room).map(|r| r["subscribers"].clone());
    assert!(
        viewers
            .as_ref()
            .and_then(Value::as_array)
            .is_some_and(|v| v.iter().any(|s| s["sub"] == class.as_str())),
        "{viewers:?}"
    );
    stop_cleanly(&mut classroom, "configured classroom");

    let mut stranger = spawn("stranger", &config("p-nobody"));
    let log = exits_failing(&mut stranger, "an unlisted id must stop the start");
    assert!(
        log.contains("no participant \"p-nobody\"") && log.contains(&class),
        "{}",
        stranger.tail()
    );

    stop_cleanly(&mut scheduler, "scheduler");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A token URL on 127.0.0.1 that answers its tokens in turn (the last one again after that),
/// counting the requests.
struct TokenServer {
    url: String,
    requests: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl TokenServer {
    fn start(tokens: Vec<String>) -> TokenServer {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (n, done) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut req = vec![];
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => req.extend_from_slice(&buf[..k]),
                    }
                }
                let i = n.fetch_add(1, Ordering::Relaxed) as usize;
                let token = &tokens[i.min(tokens.len() - 1)];
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{token}",
                    token.len()
                );
            }
        });
        TokenServer {
            url,
            requests,
            stop,
        }
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn an_expired_token_is_renewed_from_the_token_url() {
    let _serial = serial();
    let sfu = Sfu::start();
    let room = "agent-renew";
    let expired = sfu.token_for(room, "teacher", "t1", "1s");
    let fresh = sfu.token(room, "teacher", "t1");
    // No leeway at the SFU: a second after its expiry the token is refused (401).
    std::thread::sleep(Duration::from_millis(2500));
    let server = TokenServer::start(vec![expired.clone(), fresh]);
    let mut teacher = Proc::spawn(
        "renewing",
        std::process::Command::new(env!("CARGO_BIN_EXE_classroom-agent"))
            .args(["--sfu", &sfu.url(""), "--room", room])
            .args(["--token-url", &server.url])
            .args(["--status", "127.0.0.1:0"])
            .args(TEACHER)
            .env("RUST_LOG", "info,classroom_agent=debug")
            .env_remove("CLASSROOM_TOKEN")
            .env_remove("CLASSROOM_CONFIG"),
    );
    wait_publishing(&sfu, room, &teacher, Duration::from_secs(30));
    assert_eq!(server.requests(), 2, "{}", teacher.tail());
    assert_eq!(
        log_count(&teacher, "refused the token"),
        1,
        "{}",
        teacher.tail()
    );
    stop_cleanly(&mut teacher, "renewing teacher");

    // Given directly, the same token has nothing to be renewed from: the agent stops with
    // the SFU's answer.
    let mut fixed = agent("fixed-token", &sfu, room, &expired, TEACHER);
    let log = exits_failing(
        &mut fixed,
        "an expired token given directly must stop the agent",
    );
    assert!(log.contains("401"), "{}", fixed.tail());
}

/// Waits for `p` to exit non-zero (`why` says why it must); returns its log.
fn exits_failing(p: &mut Proc, why: &str) -> String {
    let st = p.wait(Duration::from_secs(30));
    assert!(
        st.is_some_and(|s| !s.success()),
        "{why}: {st:?}\n{}",
        p.tail()
    );
    std::fs::read_to_string(&p.log).unwrap_or_default()
}

/// A screen classroom's `/status` `play.screen`: (layout, camera and courseware pictures that
/// reached the composition).
fn screen_status(p: &Proc) -> (String, u64, u64) {
    let s = agent_status(p).unwrap_or(Value::Null);
    let screen = &s["play"]["screen"];
    (
        screen["layout"].as_str().unwrap_or("").to_string(),
        screen["camera_frames"].as_u64().unwrap_or(0),
        screen["courseware_frames"].as_u64().unwrap_or(0),
    )
}

/// The teacher's courseware track as the SFU reports it (null until there is one).
fn courseware_track(sfu: &Sfu, room: &str) -> Value {
    sfu.room(room)
        .and_then(|r| {
            r["publishers"][0]["tracks"]
                .as_array()?
                .iter()
                .find(|t| t["track"] == "courseware")
                .cloned()
        })
        .unwrap_or(Value::Null)
}

/// How many times the log of `p` says `what`.
fn log_count(p: &Proc, what: &str) -> usize {
    std::fs::read_to_string(&p.log)
        .map(|l| l.matches(what).count())
        .unwrap_or(0)
}

#[test]
fn agents_come_back_by_themselves_after_an_sfu_restart() {
    let _serial = serial();
    let mut sfu = Sfu::start();
    let room = "agent-restart";
    let teacher_token = sfu.token(room, "teacher", "t1");
    let mut teacher = agent("teacher", &sfu, room, &teacher_token, TEACHER);
    wait_publishing(&sfu, room, &teacher, Duration::from_secs(30));

    let file = std::env::temp_dir().join(format!("agent-restart-{}.mkv", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let play = format!("file:{}", file.display());
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
            "--codec",
            "vp8",
        ],
    );
    let play_start = Instant::now();
    assert!(
        wait_until(Duration::from_secs(20), || log_count(
            &classroom,
            "whep: connected"
        ) == 1),
        "classroom did not connect\n{}",
        classroom.tail()
    );
    std::thread::sleep(Duration::from_secs(3));

    // The SFU dies without a goodbye and comes back on the same ports 2 s later.
    let (http, media, secret) = (sfu.http, sfu.media, sfu.secret.clone());
    sfu.proc.kill();
    let killed = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let sfu = Sfu::start_on(http, media, secret);
    let restarted = Instant::now();
    wait_publishing(&sfu, room, &teacher, Duration::from_secs(20));
    let back = restarted.elapsed();
    eprintln!("teacher publishing again {back:?} after the SFU was ready");
    assert!(
        back <= Duration::from_secs(5),
        "teacher took {back:?} to publish again (limit 5 s)\n{}",
        teacher.tail()
    );
    assert!(
        wait_until(Duration::from_secs(15), || log_count(
            &classroom,
            "whep: connected"
        ) == 2),
        "classroom did not reconnect\n{}",
        classroom.tail()
    );
    // The SFU may hold a new viewer's slots until the publisher's layers are measured:
    // count from when the camera is forwarded to the classroom again.
    assert!(
        wait_until(Duration::from_secs(15), || sfu
            .room(room)
            .is_some_and(|r| camera_forwarded(&r) > 0)),
        "the SFU does not forward the camera to the classroom after the restart: {:?}",
        sfu.room(room)
    );
    std::thread::sleep(Duration::from_secs(5));
    assert!(teacher.running() && classroom.running(), "an agent exited");
    stop_cleanly(&mut classroom, "classroom");
    stop_cleanly(&mut teacher, "teacher");

    // The file goes on across the restart: more frames than could have come before it.
    let before = killed.duration_since(play_start).as_secs_f64();
    let most_before = (before * 15.0) as u64 + 15;
    let (video, audio, _) = decode_file(&file, "vp8", true);
    eprintln!(
        "decoded {video} video and {audio} audio frames; at most {most_before} before the kill"
    );
    // 5 s after the camera is forwarded again is 75 frames at 15 fps; ask for 15 beyond
    // what could predate the kill.
    assert!(
        video > most_before + 15,
        "{video} video frames: too few recorded after the restart\n{}",
        classroom.tail()
    );
    assert!(audio as f64 > (before + 2.0) * 50.0, "{audio} audio frames");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn a_camera_missing_at_start_gives_way_to_the_test_pattern() {
    let _serial = serial();
    let sfu = Sfu::start();
    let room = "agent-nocamera";
    let mut args = TEACHER.to_vec();
    args[3] = "v4l2:/dev/video-missing-for-agent-test";
    assert_eq!(args[2], "--video");
    let mut teacher = publishing_teacher(&sfu, room, &args);
    assert!(
        log_count(&teacher, "camera unavailable") == 1,
        "no single 'camera unavailable' warning\n{}",
        teacher.tail()
    );
    assert!(log_count(&teacher, " ERROR ") == 0, "{}", teacher.tail());
    stop_cleanly(&mut teacher, "teacher");
}

/// A camera that goes away mid-lesson (here a GStreamer source that ends after 3 s, as an
/// unplugged USB camera's stream does) gives way to the test pattern without a gap in the
/// video, and is taken back once it shows a picture again.
#[test]
fn a_camera_lost_mid_lesson_gives_way_to_the_test_pattern_and_comes_back() {
    let _serial = serial();
    let sfu = Sfu::start();
    let room = "agent-camera-lost";
    let mut args = TEACHER.to_vec();
    let camera = "gst:videotestsrc is-live=true pattern=ball num-buffers=45 ! \
                  video/x-raw,width=320,height=180,framerate=15/1";
    args[3] = camera;
    let mut teacher = publishing_teacher(&sfu, room, &args);
    // Watch the top layer at the SFU while the camera comes and goes.
    let packets = |room_info: &Value| {
        camera_layers(room_info)
            .iter()
            .find(|(rid, _)| rid == "h")
            .map_or(0, |l| l.1)
    };
    let mut samples: Vec<(Instant, u64)> = vec![];
    let mut status = Value::Null;
    let came_back = wait_until(Duration::from_secs(40), || {
        if let Some(r) = sfu.room(room) {
            samples.push((Instant::now(), packets(&r)));
        }
        status = agent_status(&teacher).unwrap_or(Value::Null);
        status["camera"]["returns"].as_u64() >= Some(2)
    });
    assert!(
        came_back,
        "camera not lost and back twice: {}\n{}",
        status["camera"],
        teacher.tail()
    );
    assert!(status["camera"]["losses"].as_u64() >= Some(2), "{status}");
    assert!(
        log_count(&teacher, "camera lost: sending the test pattern") >= 2,
        "{}",
        teacher.tail()
    );
    assert!(
        log_count(&teacher, "camera back") >= 2,
        "{}",
        teacher.tail()
    );
    assert_eq!(log_count(&teacher, " ERROR "), 0, "{}", teacher.tail());
    assert_eq!(log_count(&teacher, "CRITICAL"), 0, "{}", teacher.tail());
    // The top layer never stood still for long at the SFU: the test pattern took over in
    // time (stall detection is 2 s at most; the test's polling adds its own gaps).
    let mut stalled = Duration::ZERO;
    let mut worst = Duration::ZERO;
    for w in samples.windows(2) {
        if w[1].1 == w[0].1 {
            stalled += w[1].0 - w[0].0;
            worst = worst.max(stalled);
        } else {
            stalled = Duration::ZERO;
        }
    }
    eprintln!(
        "camera: {}; {} samples, top layer still for {worst:?} at most",
        status["camera"],
        samples.len()
    );
    assert!(samples.len() > 10, "{samples:?}");
    assert!(
        worst < Duration::from_secs(2),
        "the top layer stood still for {worst:?}: {samples:?}"
    );
    stop_cleanly(&mut teacher, "teacher");
}

/// A classroom agent publishes its own feed as two layers (half and full size) beside
/// playing the lesson, so the teacher console can take the small one.
#[test]
fn a_classroom_publishes_its_own_two_layer_feed() {
    let _serial = serial();
    let sfu = Sfu::start();
    let room = "agent-classroom-feed";
    let mut teacher = publishing_teacher(&sfu, room, TEACHER);
    let mut classroom = agent(
        "classroom",
        &sfu,
        room,
        &sfu.token(room, "classroom", "school-3"),
        &[
            "--role",
            "classroom",
            "--video",
            "test",
            "--audio",
            "test",
            "--width",
            "320",
            "--height",
            "180",
            "--fps",
            "15",
            "--play",
            "none",
        ],
    );
    let mut feed = Value::Null;
    let flowing = wait_until(Duration::from_secs(30), || {
        feed = sfu
            .room(room)
            .and_then(|r| {
                r["publishers"]
                    .as_array()?
                    .iter()
                    .find(|p| p["role"] == "classroom" && p["connected"] == true)
                    .cloned()
            })
            .unwrap_or(Value::Null);
        let track = |name: &str| {
            feed["tracks"]
                .as_array()
                .and_then(|ts| ts.iter().find(|t| t["track"] == name).cloned())
                .unwrap_or(Value::Null)
        };
        let video = track("class_video");
        let layers: Vec<(String, u64)> = video["layers"]
            .as_array()
            .map(|ls| {
                ls.iter()
                    .map(|l| {
                        (
                            l["rid"].as_str().unwrap_or("").to_string(),
                            l["packets"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        layers.len() == 2
            && layers[0].0 == "l"
            && layers[1].0 == "h"
            && layers.iter().all(|l| l.1 > 20)
            && track("class_audio")["layers"][0]["packets"].as_u64() > Some(20)
    });
    assert!(
        flowing,
        "no two-layer classroom feed at the SFU: {feed}\n{}",
        classroom.tail()
    );
    let status = agent_status(&classroom).expect("classroom /status");
    assert_eq!(status["publish"]["connected"], true, "{status}");
    assert_eq!(
        status["publish"]["video"]["camera"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{status}"
    );
    assert_eq!(log_count(&classroom, " ERROR "), 0, "{}", classroom.tail());
    stop_cleanly(&mut classroom, "classroom");
    stop_cleanly(&mut teacher, "teacher");
}
