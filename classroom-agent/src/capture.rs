//! The sending pipeline: sources, per-layer scaling and encoders, appsinks. Encoded frames go
//! to whichever session is current through a [`FrameRoute`]; the pipeline itself never
//! restarts across reconnects.

use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::adapt::ladder::{LayerSetting, Step};
use crate::frame::VideoCodec;
use crate::keyframe::{KeyframeGate, MIN_INTERVAL};
use crate::layers::LayerSpec;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("GStreamer: {0}")]
    Glib(#[from] gst::glib::Error),
    #[error("GStreamer: {0}")]
    Bool(#[from] gst::glib::BoolError),
    #[error("the pipeline would not start: {0}")]
    State(#[from] gst::StateChangeError),
    #[error("{0}: install the GStreamer plugin packages (see scripts/install-deps.sh)")]
    MissingElement(String),
    #[error("{0}")]
    Setup(String),
}

/// Where the camera picture comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoSource {
    None,
    /// Test pattern with a running clock.
    Test,
    /// A V4L2 device, e.g. /dev/video0.
    V4l2(String),
    /// The platform's default camera (autovideosrc).
    Auto,
    /// Any GStreamer source description, e.g. an IP camera:
    /// `rtspsrc location=rtsp://10.0.0.5/stream ! decodebin`.
    Launch(String),
}

impl std::str::FromStr for VideoSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "none" => VideoSource::None,
            "test" => VideoSource::Test,
            "auto" => VideoSource::Auto,
            _ => match (s.strip_prefix("v4l2:"), s.strip_prefix("gst:")) {
                (Some(dev), _) if !dev.is_empty() => VideoSource::V4l2(dev.to_string()),
                (_, Some(desc)) if !desc.trim().is_empty() => {
                    VideoSource::Launch(desc.trim().to_string())
                }
                _ => {
                    return Err(format!(
                        "video source {s:?}: use test, auto, none, v4l2:/dev/videoN or \
                         gst:DESCRIPTION"
                    ))
                }
            },
        })
    }
}

/// Where the voice comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioSource {
    None,
    /// A 440 Hz tone.
    Test,
    Pulse,
    /// ALSA, optionally a device such as hw:1.
    Alsa(Option<String>),
    Auto,
}

impl std::str::FromStr for AudioSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "none" => AudioSource::None,
            "test" => AudioSource::Test,
            "auto" => AudioSource::Auto,
            "pulse" => AudioSource::Pulse,
            "alsa" => AudioSource::Alsa(None),
            _ => match s.strip_prefix("alsa:") {
                Some(dev) if !dev.is_empty() => AudioSource::Alsa(Some(dev.to_string())),
                _ => {
                    return Err(format!(
                        "audio source {s:?}: use test, auto, pulse, alsa, alsa:DEVICE or none"
                    ))
                }
            },
        })
    }
}

/// A camera device present on this machine, if any (the default source falls back to the
/// test pattern without one, so the demo runs anywhere).
pub fn first_camera() -> Option<String> {
    (0..10)
        .map(|i| format!("/dev/video{i}"))
        .find(|p| std::path::Path::new(p).exists())
}

/// Whether a V4L2 device can be opened now. A camera named on the command line that is
/// missing at start gives way to the test pattern (the demo and the lesson still run).
pub fn camera_usable(dev: &str) -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .is_ok()
}

/// Whether the X screen can be captured now: one picture through `ximagesrc`. A teacher PC
/// whose desktop is gone (no X server, no permission) teaches on with camera and voice
/// rather than not at all; the error says why.
pub fn screen_capturable() -> Result<(), String> {
    let pipeline =
        launch("ximagesrc num-buffers=1 use-damage=false ! fakesink").map_err(|e| e.to_string())?;
    let bus = pipeline.bus().ok_or("pipeline without bus")?;
    let started = pipeline.set_state(gst::State::Playing);
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(5),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    let _ = pipeline.set_state(gst::State::Null);
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => Ok(()),
        Some(gst::MessageView::Error(e)) => Err(e.error().to_string()),
        _ => Err(match started {
            Err(e) => e.to_string(),
            Ok(_) => "no picture within 5 s".into(),
        }),
    }
}

/// True when ALSA lists a capture device.
pub fn has_microphone() -> bool {
    std::fs::read_dir("/dev/snd")
        .map(|d| {
            d.flatten().any(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with("pcmC") && n.ends_with('c')
            })
        })
        .unwrap_or(false)
}

/// Which track an encoder feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    Audio,
    Camera,
    /// The teacher's screen or slides: the second video track.
    Courseware,
}

/// Where courseware comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoursewareSource {
    None,
    /// A test card with a running clock.
    Test,
    /// The X screen (ximagesrc).
    Screen,
    /// A folder of slide images, each shown for `every` (see [`crate::slides`]).
    Slides {
        dir: std::path::PathBuf,
        every: Duration,
    },
}

/// How long each slide shows unless told otherwise.
pub const SLIDE_EVERY: Duration = Duration::from_secs(10);

impl std::str::FromStr for CoursewareSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(CoursewareSource::None),
            "test" => Ok(CoursewareSource::Test),
            "screen" => Ok(CoursewareSource::Screen),
            _ => match s.strip_prefix("slides:") {
                Some(dir) if !dir.is_empty() => Ok(CoursewareSource::Slides {
                    dir: dir.into(),
                    every: SLIDE_EVERY,
                }),
                _ => Err(format!(
                    "courseware {s:?}: use test, screen, slides:FOLDER or none"
                )),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderInfo {
    pub track: TrackKind,
    pub rid: Option<String>,
    /// `None` for Opus.
    pub video: Option<VideoCodec>,
    /// RTP clock rate.
    pub clock_rate: u32,
}

/// One encoded frame (or Opus packet) from an appsink.
#[derive(Debug)]
pub struct EncodedFrame {
    pub encoder: usize,
    pub data: Vec<u8>,
    /// Running time of the frame, nanoseconds.
    pub pts_ns: u64,
    /// When the frame was captured, on the local monotonic clock.
    pub wallclock: Instant,
    /// Whether it is a keyframe (always for audio).
    pub keyframe: bool,
}

/// A session's frame queue and the waker of its thread.
type SessionInlet = (SyncSender<EncodedFrame>, Arc<mio::Waker>);

/// The current session's frame queue and the waker of its thread; empty between sessions.
#[derive(Clone, Default)]
pub struct FrameRoute(Arc<Mutex<Option<SessionInlet>>>);

impl FrameRoute {
    pub fn connect(&self, tx: SyncSender<EncodedFrame>, waker: Arc<mio::Waker>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((tx, waker));
    }

    pub fn disconnect(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Hands a frame to the session; dropped when there is none or its queue is full (a
    /// stalled session must not stall the encoders).
    fn send(&self, frame: EncodedFrame) {
        let guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((tx, waker)) = guard.as_ref() {
            match tx.try_send(frame) {
                Ok(()) => {
                    let _ = waker.wake();
                }
                Err(TrySendError::Full(_)) => tracing::debug!("session queue full: frame dropped"),
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct CaptureConfig {
    pub video: VideoSource,
    pub audio: AudioSource,
    pub codec: VideoCodec,
    /// Camera layers, lowest first, all at the same frame rate.
    pub layers: Vec<LayerSpec>,
    pub courseware: CoursewareSource,
    /// Courseware size, frame rate and rate: high resolution, few frames.
    pub courseware_layer: LayerSpec,
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn raw_caps(width: u32, height: u32, fps: u32) -> String {
    format!("video/x-raw,format=I420,width={width},height={height},framerate={fps}/1")
}

/// The queue in front of each video encoder; its thread runs the encoder.
const VIDEO_QUEUE: &str = "videoq";
/// How much nicer than the rest of the agent the video encoders' threads run. On a classroom
/// PC that cannot keep up with every layer, the encoders then drop frames (their queues are
/// leaky) instead of starving the session thread: stalls of a quarter second with nothing sent
/// read as a queue on the link and cost the whole lesson a step down.
const ENCODER_NICENESS: i32 = 5;

/// Makes each video encoder's streaming thread (and the codec's own worker threads, which it
/// starts) `ENCODER_NICENESS` nicer, as it starts: the bus's sync handler runs in the new thread.
fn lower_encoding_threads(pipeline: &gst::Pipeline) -> Result<(), PipelineError> {
    let bus = pipeline
        .bus()
        .ok_or_else(|| PipelineError::Setup("pipeline without bus".into()))?;
    bus.set_sync_handler(|_, msg| {
        if let gst::MessageView::StreamStatus(s) = msg.view() {
            let (kind, owner) = s.get();
            if kind == gst::StreamStatusType::Enter && owner.name().starts_with(VIDEO_QUEUE) {
                lower_this_thread(ENCODER_NICENESS);
            }
        }
        gst::BusSyncReply::Pass
    });
    Ok(())
}

/// Raises the calling thread's nice value by `by` (Linux keeps one per thread; no privilege
/// is needed to lower one's own priority).
fn lower_this_thread(by: i32) {
    // SAFETY: plain syscalls on the calling thread's own id.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        if now == -1 && *libc::__errno_location() != 0 {
            return;
        }
        if libc::setpriority(libc::PRIO_PROCESS, tid, (now + by).min(19)) != 0 {
            tracing::debug!("could not lower an encoder thread's priority");
        }
    }
}

/// A VP8 keyframe is at most this many average frames (percent of one): 200 ms of video at
/// 30 fps. Uncapped, a 720p keyframe was a burst the congestion controller read as a queue and
/// cut its estimate for; the picture sharpens over the next frames instead.
const MAX_INTRA_PCT: u32 = 600;

/// The courseware's keyframe cap, in percent of one average frame: one second of its bitrate.
/// At one picture a second the camera's 600 % let a 1280x720 keyframe be six seconds of the
/// courseware's rate, 1.4 s of a 400 kbit/s link, which stood in the link's queue ahead of the
/// voice each time courseware resumed or changed frame rate (a changed frame rate restarts
/// vp8enc, so it too begins with a keyframe). The slide sharpens over the next pictures.
pub fn courseware_max_intra_pct(fps: u32) -> u32 {
    100 * fps.max(1)
}

/// Seconds between unrequested keyframes (see `video_encoder`).
const KEYFRAME_EVERY_S: u32 = 20;

fn video_encoder(codec: VideoCodec, l: &LayerSpec, name: &str, max_intra_pct: u32) -> String {
    // A short rate-control buffer (500 ms) makes the encoder follow a lowered target within
    // half a second when the link shrinks.
    // Keyframes come on request (PLI/FIR from the SFU); a periodic one bounds the wait of a
    // viewer whose request was lost. Rarely: a top-layer keyframe is a burst of up to the
    // rate-control buffer (half a second of video), and every burst makes the congestion
    // controller see a queue and cut its estimate (every 4 s held it at ~3 Mbit/s on a 4 Mbit/s
    // link).
    let key_dist = l.fps * KEYFRAME_EVERY_S;
    match codec {
        VideoCodec::Vp8 => format!(
            "vp8enc name={name} deadline=1 cpu-used=8 end-usage=cbr target-bitrate={} \
             lag-in-frames=0 keyframe-max-dist={key_dist} error-resilient=default \
             undershoot=95 buffer-size=500 buffer-initial-size=300 buffer-optimal-size=400 \
             max-intra-bitrate={max_intra_pct} threads=2",
            l.bitrate_bps
        ),
        VideoCodec::H264 => format!(
            "x264enc name={name} tune=zerolatency speed-preset=ultrafast bitrate={} \
             key-int-max={key_dist} threads=2 vbv-buf-capacity=300 ! \
             video/x-h264,profile=constrained-baseline,stream-format=byte-stream,alignment=au",
            (l.bitrate_bps / 1000).max(1)
        ),
    }
}

/// The pipeline in gst-launch syntax, and the encoders in appsink order (`sink0`, `sink1`…).
pub fn describe(cfg: &CaptureConfig) -> (String, Vec<EncoderInfo>) {
    let mut parts = vec![];
    let mut encoders = vec![];
    let audio_src = match &cfg.audio {
        AudioSource::None => None,
        AudioSource::Test => Some("audiotestsrc is-live=true wave=sine freq=440 volume=0.2".into()),
        AudioSource::Pulse => Some("pulsesrc".to_string()),
        AudioSource::Alsa(None) => Some("alsasrc".to_string()),
        AudioSource::Alsa(Some(d)) => Some(format!("alsasrc device={}", quote(d))),
        AudioSource::Auto => Some("autoaudiosrc".to_string()),
    };
    if let Some(src) = audio_src {
        let i = encoders.len();
        parts.push(format!(
            "{src} ! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=1 ! \
             queue max-size-time=200000000 leaky=downstream ! \
             opusenc name=enc{i} inband-fec=true dtx=true bitrate=32000 frame-size=20 \
             audio-type=voice packet-loss-percentage=10 ! \
             appsink name=sink{i} sync=false max-buffers=50 drop=true"
        ));
        encoders.push(EncoderInfo {
            track: TrackKind::Audio,
            rid: None,
            video: None,
            clock_rate: 48_000,
        });
    }
    let top = cfg.layers.last();
    let test_pattern = |t: &LayerSpec| {
        format!(
            "videotestsrc is-live=true pattern=smpte ! \
             video/x-raw,width={},height={},framerate={}/1 ! \
             clockoverlay halignment=right valignment=bottom font-desc=\"Sans 24\" ! \
             timeoverlay halignment=left valignment=bottom font-desc=\"Sans 24\"",
            t.width, t.height, t.fps
        )
    };
    let video_src = match (&cfg.video, top) {
        (VideoSource::None, _) | (_, None) => None,
        (VideoSource::Test, Some(t)) => Some(test_pattern(t)),
        // A real camera can go away: the test pattern stands in (see `camera.rs`).
        (_, Some(t)) => Some(format!(
            "input-selector name={sel} sync-streams=false  \
             videotestsrc is-live=true pattern=smpte ! \
             video/x-raw,width={w},height={h},framerate={slow}/1 ! \
             textoverlay text=\"Camera unavailable\" valignment=center font-desc=\"Sans 32\" ! \
             clockoverlay halignment=right valignment=bottom font-desc=\"Sans 24\" ! \
             videorate ! videoconvert ! \
             video/x-raw,format=I420,width={w},height={h},framerate={fps}/1 ! {sel}.  \
             {sel}.",
            sel = crate::camera::SELECTOR,
            w = t.width,
            h = t.height,
            fps = t.fps,
            // Drawn at a few frames a second and repeated: it runs all lesson long.
            slow = t.fps.clamp(1, 5),
        )),
    };
    if let Some(src) = video_src {
        parts.push(format!("{src} ! videoconvert ! tee name=camera"));
        for l in &cfg.layers {
            let i = encoders.len();
            parts.push(format!(
                "camera. ! queue name={VIDEO_QUEUE}{i} max-size-buffers=2 leaky=downstream ! \
                 valve name=valve{i} ! \
                 videoscale ! videorate drop-only=true ! videoconvert ! capsfilter name=caps{i} \
                 caps={} ! {} ! appsink name=sink{i} sync=false max-buffers=10 drop=true",
                raw_caps(l.width, l.height, l.fps),
                video_encoder(cfg.codec, l, &format!("enc{i}"), MAX_INTRA_PCT)
            ));
            encoders.push(EncoderInfo {
                track: TrackKind::Camera,
                rid: l.rid.clone(),
                video: Some(cfg.codec),
                clock_rate: 90_000,
            });
        }
    }
    let cw = &cfg.courseware_layer;
    let cw_src = match cfg.courseware {
        CoursewareSource::None => None,
        CoursewareSource::Test => Some(format!(
            "videotestsrc is-live=true pattern=pinwheel ! \
             video/x-raw,width={},height={},framerate={}/1 ! \
             textoverlay text=\"Courseware\" valignment=top font-desc=\"Sans 36\" ! \
             clockoverlay halignment=right valignment=bottom font-desc=\"Sans 24\"",
            cw.width, cw.height, cw.fps
        )),
        CoursewareSource::Screen => Some("ximagesrc use-damage=false show-pointer=true".into()),
        // Fed by `slides::Feeder` once the pipeline runs.
        CoursewareSource::Slides { .. } => Some(format!(
            "appsrc name=slides is-live=true format=time block=false \
             max-buffers=4 leaky-type=downstream caps={}",
            crate::slides::caps(cw.width, cw.height, cw.fps)
        )),
    };
    if let Some(src) = cw_src {
        let i = encoders.len();
        parts.push(format!(
            "{src} ! videoconvert ! queue name={VIDEO_QUEUE}{i} max-size-buffers=2 \
             leaky=downstream ! valve name=valve{i} ! videoscale ! videorate drop-only=true ! videoconvert ! \
             capsfilter name=caps{i} caps={} ! {} ! \
             appsink name=sink{i} sync=false max-buffers=10 drop=true",
            raw_caps(cw.width, cw.height, cw.fps),
            video_encoder(
                cfg.codec,
                cw,
                &format!("enc{i}"),
                courseware_max_intra_pct(cw.fps)
            )
        ));
        encoders.push(EncoderInfo {
            track: TrackKind::Courseware,
            rid: None,
            video: Some(cfg.codec),
            clock_rate: 90_000,
        });
    }
    (parts.join("  "), encoders)
}

/// The camera to watch and fall back from, for sources that can go away.
pub fn camera_spec(cfg: &CaptureConfig) -> Option<crate::camera::CameraSpec> {
    let top = cfg.layers.last()?;
    let (source, device) = match &cfg.video {
        VideoSource::None | VideoSource::Test => return None,
        VideoSource::V4l2(dev) => (format!("v4l2src device={}", quote(dev)), Some(dev.clone())),
        VideoSource::Auto => ("autovideosrc".to_string(), None),
        VideoSource::Launch(desc) => (desc.clone(), None),
    };
    Some(crate::camera::CameraSpec {
        source,
        device,
        width: top.width,
        height: top.height,
        fps: top.fps,
    })
}

/// Parses a description; a missing plugin gets an error that says what to install.
pub fn launch(desc: &str) -> Result<gst::Pipeline, PipelineError> {
    let element = gst::parse::launch(desc).map_err(|e| {
        if e.matches(gst::ParseError::NoSuchElement) {
            PipelineError::MissingElement(e.message().to_string())
        } else {
            PipelineError::Glib(e)
        }
    })?;
    element
        .downcast::<gst::Pipeline>()
        .map_err(|_| PipelineError::Setup("not a pipeline".into()))
}

/// A running capture pipeline.
pub struct Capture {
    pipeline: gst::Pipeline,
    encoders: Vec<EncoderInfo>,
    sinks: Vec<gst_app::AppSink>,
    gate: Mutex<KeyframeGate>,
    codec: VideoCodec,
    /// Per camera layer: the controls adaptation turns.
    layers: Vec<LayerControls>,
    /// The courseware's controls, when it is sent.
    courseware: Option<LayerControls>,
    /// What each camera layer, then the courseware, was last set to (`None`: paused).
    applied: Mutex<Vec<Option<LayerSetting>>>,
    /// Pushes slides into the courseware branch (courseware from a folder).
    _slides: Option<crate::slides::Feeder>,
    /// Swaps the camera for the test pattern while it is away.
    _camera: Option<crate::camera::CameraSwitch>,
}

/// The elements of one camera layer that adaptation changes while running.
struct LayerControls {
    encoder: usize,
    courseware: bool,
    valve: gst::Element,
    caps: gst::Element,
    enc: gst::Element,
}

impl Capture {
    pub fn start(
        cfg: &CaptureConfig,
        route: FrameRoute,
        camera_stats: Arc<crate::camera::CameraStats>,
    ) -> Result<Capture, PipelineError> {
        let (desc, encoders) = describe(cfg);
        if encoders.is_empty() {
            return Err(PipelineError::Setup(
                "nothing to capture (video and audio are none)".into(),
            ));
        }
        tracing::debug!("capture pipeline: {desc}");
        let pipeline = launch(&desc)?;
        let mut sinks = vec![];
        for i in 0..encoders.len() {
            let sink = pipeline
                .by_name(&format!("sink{i}"))
                .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
                .ok_or_else(|| PipelineError::Setup(format!("sink{i} missing")))?;
            let route = route.clone();
            let weak = pipeline.downgrade();
            sink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |s| {
                        let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        let Some(buf) = sample.buffer() else {
                            return Ok(gst::FlowSuccess::Ok);
                        };
                        let Some(pts) = buf.pts() else {
                            return Ok(gst::FlowSuccess::Ok);
                        };
                        let map = buf.map_readable().map_err(|_| gst::FlowError::Error)?;
                        let now = Instant::now();
                        // Capture instant = now minus how far the running time has moved on.
                        let behind = weak
                            .upgrade()
                            .and_then(|p| p.current_running_time())
                            .map(|rt| rt.nseconds().saturating_sub(pts.nseconds()))
                            .unwrap_or(0);
                        let wallclock = now
                            .checked_sub(Duration::from_nanos(behind.min(5_000_000_000)))
                            .unwrap_or(now);
                        route.send(EncodedFrame {
                            encoder: i,
                            data: map.as_slice().to_vec(),
                            pts_ns: pts.nseconds(),
                            wallclock,
                            keyframe: !buf.flags().contains(gst::BufferFlags::DELTA_UNIT),
                        });
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
            sinks.push(sink);
        }
        let mut layers = vec![];
        let mut courseware = None;
        for (i, e) in encoders.iter().enumerate() {
            let get = |n: String| {
                pipeline
                    .by_name(&n)
                    .ok_or_else(|| PipelineError::Setup(format!("{n} missing")))
            };
            let controls = || -> Result<LayerControls, PipelineError> {
                Ok(LayerControls {
                    encoder: i,
                    courseware: e.track == TrackKind::Courseware,
                    valve: get(format!("valve{i}"))?,
                    caps: get(format!("caps{i}"))?,
                    enc: get(format!("enc{i}"))?,
                })
            };
            match e.track {
                TrackKind::Camera => layers.push(controls()?),
                TrackKind::Courseware => courseware = Some(controls()?),
                TrackKind::Audio => {}
            }
        }
        let as_set = |l: &LayerSpec| {
            Some(LayerSetting {
                width: l.width,
                height: l.height,
                fps: l.fps,
                bitrate_bps: l.bitrate_bps,
            })
        };
        let mut applied: Vec<Option<LayerSetting>> = cfg.layers.iter().map(as_set).collect();
        applied.truncate(layers.len());
        applied.push(as_set(&cfg.courseware_layer));
        // Slides are decoded before the lesson starts, so a bad folder or image is reported
        // at once with its name.
        let slides = match &cfg.courseware {
            CoursewareSource::Slides { dir, every } => {
                let cw = &cfg.courseware_layer;
                let frames = crate::slides::list(dir)
                    .and_then(|files| {
                        files
                            .iter()
                            .map(|f| crate::slides::decode(f, cw.width, cw.height))
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .map_err(|e| PipelineError::Setup(e.to_string()))?;
                tracing::info!("courseware: {} slides from {}", frames.len(), dir.display());
                let src = pipeline
                    .by_name("slides")
                    .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
                    .ok_or_else(|| PipelineError::Setup("slides appsrc missing".into()))?;
                Some((src, frames, cw.fps, *every))
            }
            _ => None,
        };
        lower_encoding_threads(&pipeline)?;
        let camera_failures = crate::camera::failures();
        spawn_bus_logger(&pipeline, "capture", Some(camera_failures.0.clone()))?;
        pipeline.set_state(gst::State::Playing)?;
        let camera = match camera_spec(cfg) {
            Some(spec) => Some(crate::camera::start(
                &pipeline,
                spec,
                camera_failures,
                camera_stats,
            )?),
            None => None,
        };
        let slides = slides
            .map(|(src, frames, fps, every)| crate::slides::Feeder::start(src, frames, fps, every));
        let n = encoders.len();
        Ok(Capture {
            pipeline,
            encoders,
            sinks,
            gate: Mutex::new(KeyframeGate::new(n, MIN_INTERVAL)),
            layers,
            courseware,
            applied: Mutex::new(applied),
            codec: cfg.codec,
            _slides: slides,
            _camera: camera,
        })
    }

    pub fn encoders(&self) -> &[EncoderInfo] {
        &self.encoders
    }

    /// Asks encoder `idx` for a keyframe (force-key-unit upstream from its appsink), at most
    /// once per [`MIN_INTERVAL`].
    pub fn force_keyframe(&self, idx: usize) -> bool {
        if self.encoders.get(idx).is_none_or(|e| e.video.is_none()) {
            return false;
        }
        if !self
            .gate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(idx, Instant::now())
        {
            return false;
        }
        let ev = gstreamer_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        self.sinks[idx].send_event(ev)
    }

    /// Number of camera layers.
    pub fn camera_layers(&self) -> usize {
        self.layers.len()
    }

    /// Sets every camera layer and the courseware to the step's setting while running: the
    /// valve pauses or resumes a layer, the capsfilter sets size and frame rate, the encoder
    /// its bitrate. A resumed layer starts with a keyframe.
    pub fn apply(&self, step: &Step) {
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        let n = self.layers.len();
        let wanted = (0..n)
            .map(|k| step.layers.get(k).copied().flatten())
            .chain(std::iter::once(step.courseware));
        let controls = self
            .layers
            .iter()
            .map(Some)
            .chain([self.courseware.as_ref()]);
        for (k, (c, want)) in controls.zip(wanted).enumerate() {
            let Some(c) = c else { continue };
            let had = applied.get(k).copied().flatten();
            if want == had {
                continue;
            }
            self.set_layer(c, want, had);
            if let Some(slot) = applied.get_mut(k) {
                *slot = want;
            }
        }
    }

    fn set_layer(&self, c: &LayerControls, want: Option<LayerSetting>, had: Option<LayerSetting>) {
        let Some(s) = want else {
            c.valve.set_property("drop", true);
            return;
        };
        if had.is_none_or(|h| (h.width, h.height, h.fps) != (s.width, s.height, s.fps)) {
            if let Ok(caps) = raw_caps(s.width, s.height, s.fps).parse::<gst::Caps>() {
                c.caps.set_property("caps", caps);
            }
            if c.courseware && self.codec == VideoCodec::Vp8 {
                c.enc
                    .set_property("max-intra-bitrate", courseware_max_intra_pct(s.fps) as i32);
            }
        }
        if had.is_none_or(|h| h.bitrate_bps != s.bitrate_bps) {
            match self.codec {
                VideoCodec::Vp8 => c.enc.set_property("target-bitrate", s.bitrate_bps as i32),
                VideoCodec::H264 => c.enc.set_property("bitrate", (s.bitrate_bps / 1000).max(1)),
            }
        }
        if had.is_none() {
            c.valve.set_property("drop", false);
            self.force_keyframe(c.encoder);
        }
    }

    pub fn stop(&self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Puts steps on the pipeline from a thread of its own, newest first. Setting an encoder's
/// bitrate waits for the frame it is encoding (vp8enc holds its lock through a frame), and on a
/// busy classroom PC, its encoders niced, that took up to 0.3 s: the session thread, which set
/// it, sent nothing meanwhile, and the congestion controller read the stall as a queue and cut
/// its estimate (every stall of the 4 -> 1 -> 4 Mbit/s bench followed an encoder change).
pub struct StepApplier {
    shared: Arc<ApplierShared>,
}

#[derive(Default)]
struct ApplierShared {
    /// The step to apply next (a newer one replaces it), and whether to stop.
    next: Mutex<(Option<Step>, bool)>,
    wake: Condvar,
}

impl StepApplier {
    pub fn spawn(capture: Arc<Capture>) -> std::io::Result<StepApplier> {
        let shared = Arc::new(ApplierShared::default());
        let inner = shared.clone();
        std::thread::Builder::new()
            .name("encoder-steps".into())
            .spawn(move || loop {
                let step = {
                    let guard = inner.next.lock().unwrap_or_else(|e| e.into_inner());
                    let mut guard = inner
                        .wake
                        .wait_while(guard, |(step, stop)| step.is_none() && !*stop)
                        .unwrap_or_else(|e| e.into_inner());
                    if guard.1 {
                        return;
                    }
                    guard.0.take()
                };
                if let Some(step) = step {
                    capture.apply(&step);
                }
            })?;
        Ok(StepApplier { shared })
    }

    /// Asks for `step` to be applied; returns at once.
    pub fn apply(&self, step: Step) {
        self.shared.next.lock().unwrap_or_else(|e| e.into_inner()).0 = Some(step);
        self.shared.wake.notify_one();
    }
}

impl Drop for StepApplier {
    fn drop(&mut self) {
        self.shared.next.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.shared.wake.notify_one();
    }
}

/// Set once the pipeline posts end-of-stream, by the one thread that reads its bus.
#[derive(Debug, Clone, Default)]
pub struct EosSignal(Arc<(Mutex<bool>, std::sync::Condvar)>);

impl EosSignal {
    fn set(&self) {
        let (m, c) = &*self.0;
        *m.lock().unwrap_or_else(|e| e.into_inner()) = true;
        c.notify_all();
    }

    /// Waits up to `timeout` for end-of-stream; true if it came.
    pub fn wait(&self, timeout: Duration) -> bool {
        let (m, c) = &*self.0;
        let guard = m.lock().unwrap_or_else(|e| e.into_inner());
        let (done, _) = c
            .wait_timeout_while(guard, timeout, |eos| !*eos)
            .unwrap_or_else(|e| e.into_inner());
        *done
    }
}

/// Reads the pipeline's bus from a thread of its own, until the pipeline is gone: logs
/// errors and warnings and reports end-of-stream. The only reader, since popping with a
/// filter discards the messages the filter leaves out.
pub fn spawn_bus_logger(
    pipeline: &gst::Pipeline,
    what: &'static str,
    camera: Option<crate::camera::FailureSender>,
) -> Result<EosSignal, PipelineError> {
    let bus = pipeline
        .bus()
        .ok_or_else(|| PipelineError::Setup("pipeline without bus".into()))?;
    let weak = pipeline.downgrade();
    let eos = EosSignal::default();
    let eos2 = eos.clone();
    std::thread::Builder::new()
        .name(format!("{what}-bus"))
        .spawn(move || loop {
            if weak.upgrade().is_none() {
                return;
            }
            let Some(msg) = bus.timed_pop_filtered(
                gst::ClockTime::from_mseconds(200),
                &[
                    gst::MessageType::Error,
                    gst::MessageType::Warning,
                    gst::MessageType::Eos,
                ],
            ) else {
                continue;
            };
            if camera.as_ref().is_some_and(|c| c.offer(&msg)) {
                // The camera watch handles its own errors.
                continue;
            }
            match msg.view() {
                gst::MessageView::Error(e) => tracing::error!(
                    "{what} pipeline: {} ({})",
                    e.error(),
                    e.debug().map(|d| d.to_string()).unwrap_or_default()
                ),
                gst::MessageView::Warning(w) => {
                    tracing::warn!("{what} pipeline: {}", w.error())
                }
                gst::MessageView::Eos(_) => eos2.set(),
                _ => {}
            }
        })
        .map_err(|e| PipelineError::Setup(e.to_string()))?;
    Ok(eos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{camera_layers, courseware_layer, Role};

    #[test]
    fn sources_parse() {
        assert_eq!("test".parse(), Ok(VideoSource::Test));
        assert_eq!(
            "v4l2:/dev/video2".parse(),
            Ok(VideoSource::V4l2("/dev/video2".into()))
        );
        assert!("v4l2:".parse::<VideoSource>().is_err());
        assert_eq!(
            "gst: rtspsrc location=rtsp://cam/1 ! decodebin".parse(),
            Ok(VideoSource::Launch(
                "rtspsrc location=rtsp://cam/1 ! decodebin".into()
            ))
        );
        assert!("gst: ".parse::<VideoSource>().is_err());
        assert_eq!(
            "alsa:hw:1".parse(),
            Ok(AudioSource::Alsa(Some("hw:1".into())))
        );
        assert!("mic".parse::<AudioSource>().is_err());
    }

    #[test]
    fn teacher_description_has_audio_then_three_layers() {
        let cfg = CaptureConfig {
            video: VideoSource::Test,
            audio: AudioSource::Test,
            codec: VideoCodec::Vp8,
            layers: camera_layers(Role::Teacher, 640, 360, 30, true),
            courseware: CoursewareSource::Test,
            courseware_layer: courseware_layer(1280, 720, 5),
        };
        let (desc, enc) = describe(&cfg);
        assert_eq!(enc.len(), 5);
        assert_eq!(enc[4].track, TrackKind::Courseware);
        assert!(desc.contains("width=1280,height=720,framerate=5/1 ! vp8enc name=enc4"));
        // Camera keyframes are capped at 200 ms of video, courseware's at one second.
        let enc_desc = |i: usize| desc.split(&format!("name=enc{i}")).nth(1).unwrap();
        assert!(enc_desc(1).contains("max-intra-bitrate=600 "));
        assert!(enc_desc(4).contains("max-intra-bitrate=500 "));
        assert_eq!(courseware_max_intra_pct(1), 100);
        assert_eq!(enc[0].track, TrackKind::Audio);
        let rids: Vec<_> = enc[1..4].iter().map(|e| e.rid.clone().unwrap()).collect();
        assert_eq!(rids, ["l", "m", "h"]);
        assert!(desc.contains("opusenc name=enc0 inband-fec=true dtx=true"));
        assert!(desc.contains("width=160,height=90,framerate=30/1 ! vp8enc name=enc1"));
        assert!(desc.contains("valve name=valve1 ! videoscale ! videorate"));
        assert!(desc.contains("appsink name=sink3"));
        assert!(desc.contains("clockoverlay"));
    }

    #[test]
    fn device_names_are_quoted_and_none_drops_tracks() {
        let cfg = CaptureConfig {
            video: VideoSource::V4l2("/dev/video0\" ! fakesink".into()),
            audio: AudioSource::None,
            codec: VideoCodec::H264,
            layers: camera_layers(Role::Classroom, 640, 360, 15, false),
            courseware: CoursewareSource::None,
            courseware_layer: courseware_layer(1280, 720, 5),
        };
        let (desc, enc) = describe(&cfg);
        assert_eq!(enc.len(), 1);
        // The device's source is added by the camera watch, beside the test pattern.
        assert!(desc.contains("input-selector name=camsel"));
        let spec = camera_spec(&cfg).expect("a device to watch");
        assert_eq!(spec.device.as_deref(), Some("/dev/video0\" ! fakesink"));
        assert!(spec
            .bin_description()
            .starts_with("v4l2src device=\"/dev/video0\\\" ! fakesink\" ! videoconvert"));
        assert!(desc.contains("x264enc name=enc0 tune=zerolatency"));
        assert!(desc.contains("profile=constrained-baseline"));
    }
}
