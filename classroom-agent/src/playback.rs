//! The playing pipeline: appsrcs fed with the depacketized frames str0m hands over, then
//! either decoded and rendered (`screen`) or muxed untouched into Matroska (`file:`).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::capture::{launch, spawn_bus_logger, EosSignal, PipelineError};
use crate::frame::{is_keyframe, vp8_size, VideoCodec};
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

/// The pipeline in gst-launch syntax, with appsrcs named `audio` and `video`. `record_size`
/// is the picture size of an H.264 recording (see below).
pub fn describe(
    target: &PlayTarget,
    codec: VideoCodec,
    latency: Duration,
    record_size: (u32, u32),
) -> Option<String> {
    let src = |name: &str, caps: &str| {
        format!(
            "appsrc name={name} is-live=true format=time do-timestamp=false \
             max-bytes=8000000 caps=\"{caps}\""
        )
    };
    let audio = src("audio", OPUS_CAPS);
    let video = src("video", video_caps(codec));
    match target {
        PlayTarget::None => None,
        PlayTarget::File(path) => {
            let (w, h) = record_size;
            let parse = match codec {
                // VP8 keeps the first caps; the bitstream carries size changes itself.
                VideoCodec::Vp8 => String::new(),
                // Matroska stores H.264 as avc with codec data, and refuses new caps when
                // the SFU switches simulcast layers: re-encode at one fixed size instead.
                VideoCodec::H264 => format!(
                    "h264parse ! avdec_h264 ! videoconvert ! videoscale add-borders=true ! \
                     video/x-raw,format=I420,width={w},height={h},pixel-aspect-ratio=1/1 ! \
                     x264enc tune=zerolatency speed-preset=ultrafast key-int-max=60 ! h264parse ! "
                ),
            };
            let loc = path
                .to_string_lossy()
                .replace('\\', "\\\\")
                .replace('"', "\\\"");
            Some(format!(
                "matroskamux name=mux ! filesink location=\"{loc}\"  \
                 {audio} ! opusparse ! queue ! mux.  \
                 {video} ! {parse}queue ! mux."
            ))
        }
        PlayTarget::Screen => {
            // Room for the playout delay at its largest (it grows for a jittery link).
            let ns =
                (latency.max(crate::timing::PLAYOUT_MAX) + Duration::from_millis(200)).as_nanos();
            Some(format!(
                "{audio} ! opusdec plc=true use-inband-fec=true ! audioconvert ! audioresample ! \
                 queue max-size-time={ns} ! autoaudiosink  \
                 {video} ! queue ! decodebin ! videoconvert ! queue max-size-buffers=3 ! \
                 autovideosink"
            ))
        }
    }
}

struct Stream {
    src: gst_app::AppSrc,
    mapper: PtsMapper,
    /// Video waits for a keyframe before anything enters the pipeline.
    started: bool,
}

/// A running playback pipeline. Lives across reconnects: the timeline keeps going.
pub struct Playback {
    pipeline: gst::Pipeline,
    codec: VideoCodec,
    start: Instant,
    delay: Mutex<PlayoutDelay>,
    audio: Mutex<Stream>,
    video: Mutex<Stream>,
    eos: EosSignal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Audio,
    Video,
}

impl Playback {
    /// `latency` is the jitter allowance first added to every timestamp so that frames reach
    /// the sinks ahead of their time; it grows for a link whose frames come later.
    pub fn start(
        target: &PlayTarget,
        codec: VideoCodec,
        latency: Duration,
        record_size: (u32, u32),
    ) -> Result<Option<Playback>, PipelineError> {
        let Some(desc) = describe(target, codec, latency, record_size) else {
            return Ok(None);
        };
        tracing::debug!("playback pipeline: {desc}");
        let pipeline = launch(&desc)?;
        let get = |name: &str| {
            pipeline
                .by_name(name)
                .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
                .ok_or_else(|| PipelineError::Setup(format!("appsrc {name} missing")))
        };
        let stream = |src| {
            Mutex::new(Stream {
                src,
                mapper: PtsMapper::default(),
                started: false,
            })
        };
        let (audio, video) = (stream(get("audio")?), stream(get("video")?));
        let eos = spawn_bus_logger(&pipeline, "playback", None)?;
        pipeline.set_state(gst::State::Playing)?;
        Ok(Some(Playback {
            pipeline,
            codec,
            start: Instant::now(),
            delay: Mutex::new(PlayoutDelay::new(latency)),
            audio,
            video,
            eos,
        }))
    }

    pub fn codec(&self) -> VideoCodec {
        self.codec
    }

    /// Feeds one frame. Returns false when video is waiting for a keyframe (the caller asks
    /// the SFU for one).
    pub fn push(
        &self,
        kind: StreamKind,
        data: &[u8],
        rtp_ticks: u64,
        clock_rate: u32,
        arrival: Instant,
    ) -> bool {
        let mut s = match kind {
            StreamKind::Audio => self.audio.lock(),
            StreamKind::Video => self.video.lock(),
        }
        .unwrap_or_else(|e| e.into_inner());
        let key = kind == StreamKind::Video && is_keyframe(self.codec, data);
        if kind == StreamKind::Video && !s.started {
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
            let mut d = self.delay.lock().unwrap_or_else(|e| e.into_inner());
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
            if kind == StreamKind::Video && !key {
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
        self.delay
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .current()
    }

    /// A new session begins: video waits for a keyframe again, since the decoder cannot
    /// continue a picture from frames of a stream it never saw.
    pub fn new_session(&self) {
        self.video.lock().unwrap_or_else(|e| e.into_inner()).started = false;
    }

    /// Ends the streams and waits (up to `timeout`) for the muxer to finish the file.
    pub fn finish(&self, timeout: Duration) {
        for s in [&self.audio, &self.video] {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            let _ = s.src.end_of_stream();
        }
        if self.eos.wait(timeout) {
            tracing::info!("playback finished");
        } else {
            tracing::warn!("playback did not finish within {timeout:?}");
        }
        let _ = self.pipeline.set_state(gst::State::Null);
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
        )
        .unwrap();
        assert!(
            h.contains("avdec_h264") && h.contains("width=320,height=180"),
            "{h}"
        );
        assert!(describe(&PlayTarget::None, VideoCodec::Vp8, Duration::ZERO, (1, 1)).is_none());
    }
}
