//! The playing pipeline: appsrcs fed with the depacketized frames str0m hands over, then
//! either decoded and composed into one picture (`screen`: the teacher's camera and the
//! courseware, see [`crate::layout`]) or muxed untouched into Matroska (`file:`).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::capture::{launch, spawn_bus_logger, EosSignal, PipelineError};
use crate::frame::{is_keyframe, vp8_size, VideoCodec};
use crate::layout::{arrange, Layout, Mode, Presence};
use crate::status::SessionStats;
use crate::timing::{PlayoutDelay, PtsMapper};

/// Where the lesson goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlayTarget {
    None,
    Screen,
    File(PathBuf),
}

impl std::str::FromStr for PlayTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(PlayTarget::None),
            "screen" => Ok(PlayTarget::Screen),
            _ => match s.strip_prefix("file:") {
                Some(p) if !p.is_empty() => Ok(PlayTarget::File(p.into())),
                _ => Err(format!("play target {s:?}: use screen, none or file:PATH")),
            },
        }
    }
}

const OPUS_CAPS: &str = "audio/x-opus,channel-mapping-family=0,channels=2,rate=48000";

fn video_caps(codec: VideoCodec) -> &'static str {
    match codec {
        VideoCodec::Vp8 => "video/x-vp8",
        VideoCodec::H264 => "video/x-h264,stream-format=byte-stream,alignment=au",
    }
}

/// The size of the picture composed for the classroom's screen.
pub const SCREEN_SIZE: (i32, i32) = (1280, 720);
/// The composed picture's frame rate (the camera's top rate).
const SCREEN_FPS: u32 = 30;
/// What the screen says while no picture flows (before the lesson, after the teacher left,
/// through an outage): a classroom with nobody to look after the PC should not wonder whether
/// a frozen picture is the lesson.
pub const WAITING_TEXT: &str = "等待老师上课…\nWaiting for the teacher";
/// The size an H.264 courseware recording is re-encoded at (see the camera's below).
const COURSEWARE_RECORD_SIZE: (u32, u32) = (1280, 720);

fn appsrc(name: &str, caps: &str) -> String {
    format!(
        "appsrc name={name} is-live=true format=time do-timestamp=false \
         max-bytes=8000000 caps=\"{caps}\""
    )
}

/// A video track recorded into the muxer named `mux`.
fn record_video(src: &str, codec: VideoCodec, (w, h): (u32, u32)) -> String {
    let parse = match codec {
        // VP8 keeps the first caps; the bitstream carries size changes itself.
        VideoCodec::Vp8 => String::new(),
        // Matroska stores H.264 as avc with codec data, and refuses new caps when the SFU
        // switches simulcast layers: re-encode at one fixed size instead.
        VideoCodec::H264 => format!(
            "h264parse ! avdec_h264 ! videoconvert ! videoscale add-borders=true ! \
             video/x-raw,format=I420,width={w},height={h},pixel-aspect-ratio=1/1 ! \
             x264enc tune=zerolatency speed-preset=ultrafast key-int-max=60 ! h264parse ! "
        ),
    };
    format!("{src} ! {parse}queue ! mux.")
}

fn filesink(path: &Path) -> String {
    let loc = path
        .to_string_lossy()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!("matroskamux name=mux ! filesink location=\"{loc}\"")
}

/// The video sinks to try for the screen, best first. Not `autovideosink`: on a machine
/// without a display it reaches `dfbvideosink`, which crashes the process (GStreamer 1.22).
pub fn screen_sinks(x11: bool, wayland: bool) -> Vec<&'static str> {
    let mut sinks = Vec::new();
    if wayland {
        sinks.push("waylandsink");
    }
    if x11 {
        sinks.extend(["xvimagesink", "ximagesink"]);
    }
    if x11 || wayland {
        sinks.push("glimagesink");
    }
    // A kiosk PC with no desktop: straight to the display controller.
    sinks.push("kmssink");
    sinks
}

/// The first screen sink that opens here, or a `fakesink` (logged) when there is no screen:
/// the lesson is still decoded and composed, so `/status` shows whether pictures flow.
fn pick_screen_sink() -> String {
    let env = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    for name in screen_sinks(env("DISPLAY"), env("WAYLAND_DISPLAY")) {
        let Ok(e) = gst::ElementFactory::make(name).build() else {
            continue;
        };
        let opened = e.set_state(gst::State::Ready).is_ok();
        let _ = e.set_state(gst::State::Null);
        if opened {
            tracing::info!("screen: showing the lesson with {name}");
            // The projector shows the lesson and nothing else. (The X sinks cannot ask for
            // full screen; the desktop's window manager places their window.)
            return match name {
                "waylandsink" => "waylandsink fullscreen=true".to_string(),
                _ => name.to_string(),
            };
        }
    }
    tracing::warn!("screen: no display found; the lesson is decoded but not shown");
    "fakesink sync=true".to_string()
}

/// The pipeline in gst-launch syntax, with appsrcs named `audio` and `camera`, and for the
/// screen `courseware` too. `record_size` is the picture size of an H.264 recording;
/// `screen_sink` shows the composed picture.
///
/// The screen composes camera and courseware into one picture (see [`crate::layout`]). A
/// recording keeps them apart: the courseware goes to a file of its own
/// ([`courseware_path`]), opened at its first keyframe, since Matroska's muxer waits for
/// every track before it writes anything and a lesson may have no courseware at all.
pub fn describe(
    target: &PlayTarget,
    codec: VideoCodec,
    latency: Duration,
    record_size: (u32, u32),
    screen_sink: &str,
) -> Option<String> {
    let audio = appsrc("audio", OPUS_CAPS);
    let camera = appsrc("camera", video_caps(codec));
    match target {
        PlayTarget::None => None,
        PlayTarget::File(path) => Some(format!(
            "{}  {audio} ! opusparse ! queue ! mux.  {}",
            filesink(path),
            record_video(&camera, codec, record_size)
        )),
        PlayTarget::Screen => {
            // Room for the playout delay at its largest (it grows for a jittery link).
            let ns =
                (latency.max(crate::timing::PLAYOUT_MAX) + Duration::from_millis(200)).as_nanos();
            let courseware = appsrc("courseware", video_caps(codec));
            let (w, h) = SCREEN_SIZE;
            // The mixer starts its timeline at the first picture, not at zero: pictures come
            // stamped on the running clock, seconds after the pipeline started. The decoders
            // are named, not `decodebin`: a `decodebin` that never saw data (no courseware in
            // this lesson) exposes no pad, and the mixer then waits for it forever.
            let decode = match codec {
                VideoCodec::Vp8 => "vp8dec",
                VideoCodec::H264 => "h264parse ! avdec_h264",
            };
            // The slate runs at the screen's frame rate: a live source adds one frame of
            // latency to the whole pipeline.
            Some(format!(
                "compositor name=mix background=black start-time-selection=first force-live=true ! \
                 video/x-raw,width={w},height={h},framerate={SCREEN_FPS}/1 ! videoconvert ! \
                 queue max-size-buffers=3 ! {screen_sink}  \
                 {audio} ! opusdec plc=true use-inband-fec=true ! audioconvert ! audioresample ! \
                 queue max-size-time={ns} ! autoaudiosink  \
                 {camera} ! queue ! {decode} ! queue ! mix.sink_0  \
                 {courseware} ! queue ! {decode} ! queue ! mix.sink_1  \
                 videotestsrc is-live=true pattern=black ! \
                 video/x-raw,width={w},height={h},framerate={SCREEN_FPS}/1 ! \
                 textoverlay name=slate valignment=center halignment=center \
                 line-alignment=center font-desc=\"Sans 32\" ! queue max-size-buffers=3 ! \
                 mix.sink_2"
            ))
        }
    }
}

/// Where a recording's courseware goes: `lesson.mkv` -> `lesson.courseware.mkv`.
pub fn courseware_path(path: &Path) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!("{stem}.courseware.mkv"))
}

/// The courseware recording's own pipeline, with an appsrc named `courseware`.
pub fn describe_courseware_file(path: &Path, codec: VideoCodec) -> String {
    let src = appsrc("courseware", video_caps(codec));
    format!(
        "{}  {}",
        filesink(path),
        record_video(&src, codec, COURSEWARE_RECORD_SIZE)
    )
}

struct Stream {
    src: gst_app::AppSrc,
    mapper: PtsMapper,
    /// Video waits for a keyframe before anything enters the pipeline.
    started: bool,
}

impl Stream {
    fn new(src: gst_app::AppSrc) -> Stream {
        Stream {
            src,
            mapper: PtsMapper::default(),
            started: false,
        }
    }
}

/// Where the courseware goes.
enum CoursewareOut {
    /// Into the screen's composition.
    Screen(Stream),
    /// Into a file of its own, opened at the first keyframe.
    File {
        path: PathBuf,
        open: Option<(Stream, gst::Pipeline, EosSignal)>,
    },
    /// Nowhere: the file could not be made (logged once).
    Dropped,
}

/// The screen's composition: the mixer's two inputs and what is on it.
struct Screen {
    /// The compositor's pads for the camera, the courseware and the waiting slate.
    camera_pad: gst::Pad,
    courseware_pad: gst::Pad,
    slate_pad: gst::Pad,
    state: Mutex<(Presence, Option<Layout>)>,
    stats: Arc<SessionStats>,
}

/// How often the screen's layout is looked at: a picture that stopped brings no frame to
/// notice it by.
const RELAYOUT_EVERY: Duration = Duration::from_millis(250);

impl Screen {
    /// Moves the screen's pictures when one starts or stops flowing.
    fn relayout(&self, now: Instant) {
        let mut st = lock(&self.state);
        let (camera, courseware) = st.0.flowing(now);
        let layout = arrange(SCREEN_SIZE.0, SCREEN_SIZE.1, camera, courseware);
        if st.1 == Some(layout) {
            return;
        }
        for (pad, rect) in [
            (&self.camera_pad, layout.camera),
            (&self.courseware_pad, layout.courseware),
        ] {
            match rect {
                Some(r) => {
                    pad.set_property("xpos", r.x);
                    pad.set_property("ypos", r.y);
                    pad.set_property("width", r.width);
                    pad.set_property("height", r.height);
                    pad.set_property("alpha", 1.0f64);
                }
                // Hidden: the mixer would otherwise repeat its last frame.
                None => pad.set_property("alpha", 0.0f64),
            }
        }
        let slate = if layout.mode == Mode::Waiting {
            1.0
        } else {
            0.0
        };
        self.slate_pad.set_property("alpha", slate);
        if st.1.is_some() {
            tracing::info!("screen: {}", layout.mode.as_str());
        }
        st.1 = Some(layout);
        *lock(&self.stats.layout) = Some(layout.mode.as_str());
    }

    /// Keeps the layout up to date until the playback is dropped.
    fn watch(screen: &Arc<Screen>) -> std::io::Result<()> {
        let weak = Arc::downgrade(screen);
        std::thread::Builder::new()
            .name("screen-layout".into())
            .spawn(move || {
                while let Some(screen) = weak.upgrade() {
                    screen.relayout(Instant::now());
                    drop(screen);
                    std::thread::sleep(RELAYOUT_EVERY);
                }
            })
            .map(|_| ())
    }
}

fn pick_appsrc(pipeline: &gst::Pipeline, name: &str) -> Result<gst_app::AppSrc, PipelineError> {
    pipeline
        .by_name(name)
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .ok_or_else(|| PipelineError::Setup(format!("appsrc {name} missing")))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running playback pipeline. Lives across reconnects: the timeline keeps going.
pub struct Playback {
    pipeline: gst::Pipeline,
    codec: VideoCodec,
    start: Instant,
    delay: Mutex<PlayoutDelay>,
    audio: Mutex<Stream>,
    camera: Mutex<Stream>,
    courseware: Mutex<CoursewareOut>,
    screen: Option<Arc<Screen>>,
    eos: EosSignal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Audio,
    Camera,
    Courseware,
}

impl Playback {
    /// `latency` is the jitter allowance first added to every timestamp so that frames reach
    /// the sinks ahead of their time; it grows for a link whose frames come later. What the
    /// screen shows is counted in `stats`.
    pub fn start(
        target: &PlayTarget,
        codec: VideoCodec,
        latency: Duration,
        record_size: (u32, u32),
        stats: Arc<SessionStats>,
    ) -> Result<Option<Playback>, PipelineError> {
        let sink = match target {
            PlayTarget::Screen => pick_screen_sink(),
            _ => String::new(),
        };
        let Some(desc) = describe(target, codec, latency, record_size, &sink) else {
            return Ok(None);
        };
        tracing::debug!("playback pipeline: {desc}");
        let pipeline = launch(&desc)?;
        let audio = Mutex::new(Stream::new(pick_appsrc(&pipeline, "audio")?));
        let camera = Mutex::new(Stream::new(pick_appsrc(&pipeline, "camera")?));
        let (courseware, screen) = match target {
            PlayTarget::File(path) => (
                CoursewareOut::File {
                    path: courseware_path(path),
                    open: None,
                },
                None,
            ),
            _ => {
                let mix = pipeline
                    .by_name("mix")
                    .ok_or_else(|| PipelineError::Setup("compositor missing".into()))?;
                let pad = |name: &str| {
                    mix.static_pad(name)
                        .ok_or_else(|| PipelineError::Setup(format!("compositor {name} missing")))
                };
                let (camera_pad, courseware_pad, slate_pad) =
                    (pad("sink_0")?, pad("sink_1")?, pad("sink_2")?);
                // Set here: gst-launch syntax has no way to write the line break.
                pipeline
                    .by_name("slate")
                    .ok_or_else(|| PipelineError::Setup("slate missing".into()))?
                    .set_property("text", WAITING_TEXT);
                // Pictures that reach the mixer, for `/status`: is the projector's picture
                // moving?
                for (p, which) in [(&camera_pad, 0), (&courseware_pad, 1)] {
                    let stats = stats.clone();
                    p.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                        let n = if which == 0 {
                            &stats.shown_camera
                        } else {
                            &stats.shown_courseware
                        };
                        n.fetch_add(1, Ordering::Relaxed);
                        gst::PadProbeReturn::Ok
                    });
                }
                (
                    CoursewareOut::Screen(Stream::new(pick_appsrc(&pipeline, "courseware")?)),
                    Some(Arc::new(Screen {
                        camera_pad,
                        courseware_pad,
                        slate_pad,
                        state: Mutex::new((Presence::default(), None)),
                        stats,
                    })),
                )
            }
        };
        let eos = spawn_bus_logger(&pipeline, "playback", None)?;
        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            let _ = pipeline.set_state(gst::State::Null);
            return Err(e.into());
        }
        let playback = Playback {
            pipeline,
            codec,
            start: Instant::now(),
            delay: Mutex::new(PlayoutDelay::new(latency)),
            audio,
            camera,
            courseware: Mutex::new(courseware),
            screen,
            eos,
        };
        if let Some(screen) = &playback.screen {
            screen.relayout(Instant::now());
            Screen::watch(screen).map_err(|e| PipelineError::Setup(format!("thread: {e}")))?;
        }
        Ok(Some(playback))
    }

    pub fn codec(&self) -> VideoCodec {
        self.codec
    }

    /// Feeds one frame. Returns false when the picture waits for a keyframe (the caller asks
    /// the SFU for one).
    pub fn push(
        &self,
        kind: StreamKind,
        data: &[u8],
        rtp_ticks: u64,
        clock_rate: u32,
        arrival: Instant,
    ) -> bool {
        let key = kind != StreamKind::Audio && is_keyframe(self.codec, data);
        let took = match kind {
            StreamKind::Audio | StreamKind::Camera => {
                let stream = if kind == StreamKind::Audio {
                    &self.audio
                } else {
                    &self.camera
                };
                let mut s = lock(stream);
                self.feed(&mut s, kind, key, data, rtp_ticks, clock_rate, arrival)
            }
            StreamKind::Courseware => {
                let mut out = lock(&self.courseware);
                if key {
                    self.open_courseware_file(&mut out);
                }
                match &mut *out {
                    CoursewareOut::Screen(s)
                    | CoursewareOut::File {
                        open: Some((s, _, _)),
                        ..
                    } => self.feed(s, kind, key, data, rtp_ticks, clock_rate, arrival),
                    CoursewareOut::File { open: None, .. } => false,
                    // Nothing to ask a keyframe for.
                    CoursewareOut::Dropped => true,
                }
            }
        };
        // What flows decides the screen's layout (the voice does not).
        if let (Some(screen), true) = (&self.screen, took) {
            let now = Instant::now();
            match kind {
                StreamKind::Camera => lock(&screen.state).0.saw_camera(now),
                StreamKind::Courseware => lock(&screen.state).0.saw_courseware(now),
                StreamKind::Audio => {}
            }
        }
        took
    }

    /// Opens the courseware recording at its first keyframe.
    fn open_courseware_file(&self, out: &mut CoursewareOut) {
        let CoursewareOut::File {
            path,
            open: open @ None,
        } = out
        else {
            return;
        };
        let made = (|| {
            let desc = describe_courseware_file(path, self.codec);
            let pipeline = launch(&desc)?;
            let src = pick_appsrc(&pipeline, "courseware")?;
            let eos = spawn_bus_logger(&pipeline, "courseware", None)?;
            // The same clock and time base as the lesson's pipeline, so that the file's times
            // line up with the other recording's.
            pipeline.use_clock(self.pipeline.clock().as_ref());
            if let Some(base) = self.pipeline.base_time() {
                pipeline.set_base_time(base);
                pipeline.set_start_time(gst::ClockTime::NONE);
            }
            if let Err(e) = pipeline.set_state(gst::State::Playing) {
                let _ = pipeline.set_state(gst::State::Null);
                return Err(e.into());
            }
            Ok::<_, PipelineError>((Stream::new(src), pipeline, eos))
        })();
        match made {
            Ok(o) => {
                tracing::info!("courseware: recording into {}", path.display());
                *open = Some(o);
            }
            Err(e) => {
                tracing::error!("courseware: cannot record into {}: {e}", path.display());
                *out = CoursewareOut::Dropped;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn feed(
        &self,
        s: &mut Stream,
        kind: StreamKind,
        key: bool,
        data: &[u8],
        rtp_ticks: u64,
        clock_rate: u32,
        arrival: Instant,
    ) -> bool {
        let video = kind != StreamKind::Audio;
        if video && !s.started {
            if !key {
                return false;
            }
            let sized = s
                .src
                .caps()
                .is_some_and(|c| c.structure(0).is_some_and(|st| st.has_field("width")));
            // The first size only: Matroska cannot change caps mid-file, and the decoder
            // follows size changes in the bitstream anyway.
            if self.codec == VideoCodec::Vp8 && !sized {
                if let Some((w, h)) = vp8_size(data) {
                    let caps = gst::Caps::builder("video/x-vp8")
                        .field("width", w as i32)
                        .field("height", h as i32)
                        .build();
                    s.src.set_caps(Some(&caps));
                }
            }
        }
        s.started = true;
        let arrival_ns = arrival.saturating_duration_since(self.start).as_nanos() as u64;
        let smooth = s.mapper.map(rtp_ticks, clock_rate, arrival_ns);
        let delay = {
            let mut d = lock(&self.delay);
            // Handed over now: later than its smooth time when it waited for a repair.
            let now = self.start.elapsed();
            if d.observe(Duration::from_nanos(smooth), now) {
                tracing::info!("playout delay now {:?} for this link", d.current());
            }
            d.current()
        };
        let pts = smooth + delay.as_nanos() as u64;
        let mut buf = gst::Buffer::from_slice(data.to_vec());
        {
            let b = buf.get_mut().expect("new buffer is writable");
            b.set_pts(gst::ClockTime::from_nseconds(pts));
            if video && !key {
                b.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
        }
        if let Err(e) = s.src.push_buffer(buf) {
            tracing::debug!("playback {kind:?}: {e:?}");
        }
        true
    }

    /// The delay now added to every timestamp (see [`PlayoutDelay`]).
    pub fn playout_delay(&self) -> Duration {
        lock(&self.delay).current()
    }

    /// A new session begins: pictures wait for a keyframe again, since the decoder cannot
    /// continue a picture from frames of a stream it never saw.
    pub fn new_session(&self) {
        lock(&self.camera).started = false;
        match &mut *lock(&self.courseware) {
            CoursewareOut::Screen(s)
            | CoursewareOut::File {
                open: Some((s, _, _)),
                ..
            } => s.started = false,
            _ => {}
        }
    }

    /// Ends the streams and waits (up to `timeout`) for the muxers to finish their files.
    pub fn finish(&self, timeout: Duration) {
        for s in [&self.audio, &self.camera] {
            let _ = lock(s).src.end_of_stream();
        }
        let mut courseware = lock(&self.courseware);
        let side = match &mut *courseware {
            CoursewareOut::Screen(s) => {
                let _ = s.src.end_of_stream();
                None
            }
            CoursewareOut::File {
                open: Some((s, p, eos)),
                ..
            } => {
                let _ = s.src.end_of_stream();
                Some((p, eos))
            }
            _ => None,
        };
        // The screen has nothing to finish (and a picture that never came would hold its
        // end of stream in the decoder); a recording waits for the muxer.
        if self.screen.is_some() {
            tracing::info!("playback finished");
        } else if self.eos.wait(timeout) {
            tracing::info!("playback finished");
        } else {
            tracing::warn!("playback did not finish within {timeout:?}");
        }
        let _ = self.pipeline.set_state(gst::State::Null);
        if let Some((p, eos)) = side {
            if eos.wait(timeout) {
                tracing::info!("courseware recording finished");
            } else {
                tracing::warn!("courseware recording did not finish within {timeout:?}");
            }
            let _ = p.set_state(gst::State::Null);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!("none".parse(), Ok(PlayTarget::None));
        assert_eq!(
            "file:/tmp/a.mkv".parse(),
            Ok(PlayTarget::File("/tmp/a.mkv".into()))
        );
        assert!("file:".parse::<PlayTarget>().is_err());
        assert!("hdmi".parse::<PlayTarget>().is_err());
    }

    #[test]
    fn file_pipeline_muxes_vp8_as_is_and_reencodes_h264() {
        let d = describe(
            &PlayTarget::File("/tmp/x\".mkv".into()),
            VideoCodec::Vp8,
            Duration::from_millis(200),
            (320, 180),
            "",
        )
        .unwrap();
        assert!(d.contains("matroskamux"));
        assert!(!d.contains("dec"), "{d}");
        assert!(d.contains("location=\"/tmp/x\\\".mkv\""));
        let h = describe(
            &PlayTarget::File("/tmp/y.mkv".into()),
            VideoCodec::H264,
            Duration::ZERO,
            (320, 180),
            "",
        )
        .unwrap();
        assert!(
            h.contains("avdec_h264") && h.contains("width=320,height=180"),
            "{h}"
        );
        assert!(describe(
            &PlayTarget::None,
            VideoCodec::Vp8,
            Duration::ZERO,
            (1, 1),
            ""
        )
        .is_none());
        // The courseware is recorded apart, re-encoded at its own size for H.264.
        let c = describe_courseware_file(Path::new("/tmp/l.courseware.mkv"), VideoCodec::H264);
        assert!(
            c.contains("appsrc name=courseware") && c.contains("width=1280,height=720"),
            "{c}"
        );
        assert!(!h.contains("courseware"), "{h}");
    }

    #[test]
    fn the_screen_composes_camera_and_courseware() {
        let d = describe(
            &PlayTarget::Screen,
            VideoCodec::Vp8,
            Duration::ZERO,
            (1, 1),
            "xvimagesink",
        )
        .unwrap();
        assert!(d.contains("! xvimagesink"), "{d}");
        assert!(d.contains("compositor name=mix"), "{d}");
        assert!(
            d.contains("appsrc name=camera") && d.contains("mix.sink_0"),
            "{d}"
        );
        assert!(
            d.contains("appsrc name=courseware") && d.contains("mix.sink_1"),
            "{d}"
        );
        assert!(d.contains("width=1280,height=720"), "{d}");
        // The waiting slate is the third input (its two-line text is set once it is built).
        let slate = d.split("videotestsrc").nth(1).expect("a slate source");
        assert!(
            slate.contains("textoverlay name=slate") && slate.contains("mix.sink_2"),
            "{d}"
        );
    }

    #[test]
    fn screen_sinks_follow_the_desktop_and_never_auto_detect() {
        assert_eq!(screen_sinks(false, false), ["kmssink"]);
        assert_eq!(
            screen_sinks(true, false),
            ["xvimagesink", "ximagesink", "glimagesink", "kmssink"]
        );
        assert_eq!(screen_sinks(false, true)[0], "waylandsink");
        assert!(!screen_sinks(true, true)
            .iter()
            .any(|s| s.starts_with("auto")));
    }

    #[test]
    fn courseware_recordings_sit_beside_the_lesson() {
        assert_eq!(
            courseware_path(Path::new("/rec/lesson.mkv")),
            Path::new("/rec/lesson.courseware.mkv")
        );
        assert_eq!(
            courseware_path(Path::new("out")),
            Path::new("out.courseware.mkv")
        );
    }
}
