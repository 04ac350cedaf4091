//! Playing over WHEP: receive-only audio and camera m-lines (the SFU's first two program
//! slots), depacketized frames handed to the playback pipeline, keyframes asked for when
//! the picture cannot start or has lost frames.

use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::{Event, Rtc};

use crate::frame::{is_keyframe, VideoCodec};
use crate::peer::{Handler, PeerSocket, Prepared};
use crate::playback::{Playback, StreamKind};
use crate::status::SessionStats;
use crate::voice_gaps::VoiceGaps;

/// Between keyframe requests while the picture waits for one.
const KEYFRAME_RETRY: Duration = Duration::from_millis(1000);

pub fn subscriber_rtc(codec: VideoCodec, now: Instant) -> Rtc {
    Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(codec == VideoCodec::Vp8)
        .enable_h264(codec == VideoCodec::H264)
        .set_stats_interval(Some(Duration::from_secs(1)))
        .build(now)
}

pub fn prepare(
    socket: &PeerSocket,
    playback: Arc<Playback>,
    stats: Arc<SessionStats>,
    now: Instant,
) -> Result<Prepared, String> {
    let mut rtc = subscriber_rtc(playback.codec(), now);
    let cand = socket.candidate().map_err(|e| format!("candidate: {e}"))?;
    rtc.add_local_candidate(cand);
    let mut api = rtc.sdp_api();
    let audio = api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let video = api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().ok_or("nothing to offer")?;
    Ok(Prepared {
        rtc,
        offer,
        pending,
        handler: Box::new(Subscriber {
            audio,
            video,
            playback,
            stats,
            connected: false,
            need_keyframe: true,
            last_request: None,
            voice: VoiceGaps::default(),
        }),
    })
}

pub struct Subscriber {
    audio: Mid,
    video: Mid,
    playback: Arc<Playback>,
    stats: Arc<SessionStats>,
    connected: bool,
    need_keyframe: bool,
    last_request: Option<Instant>,
    /// Lost stretches of the lesson's voice, for `/status`.
    voice: VoiceGaps,
}

impl Subscriber {
    fn request_keyframe(&mut self, rtc: &mut Rtc, now: Instant) {
        if self
            .last_request
            .is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_RETRY)
        {
            return;
        }
        if let Some(mut w) = rtc.writer(self.video) {
            if w.is_request_keyframe_possible(KeyframeRequestKind::Pli)
                && w.request_keyframe(None, KeyframeRequestKind::Pli).is_ok()
            {
                self.last_request = Some(now);
                self.stats
                    .keyframes_requested
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

impl Handler for Subscriber {
    fn on_event(&mut self, rtc: &mut Rtc, event: Event, now: Instant) {
        match event {
            Event::Connected => {
                self.connected = true;
                self.playback.new_session();
                self.voice.restart();
                tracing::info!("whep: connected");
            }
            Event::MediaData(d) => {
                let kind = if d.mid == self.audio {
                    StreamKind::Audio
                } else if d.mid == self.video {
                    StreamKind::Video
                } else {
                    return;
                };
                self.stats.add_frame(d.data.len());
                if kind == StreamKind::Audio {
                    let (first, last) = (**d.seq_range.start(), **d.seq_range.end());
                    let rate = d.time.denom() as u64;
                    if let Some(gap) = self.voice.on_frame(first, last, d.time.numer(), rate) {
                        self.stats.record_voice_gap(gap);
                    }
                }
                let took = self.playback.push(
                    kind,
                    &d.data,
                    d.time.numer(),
                    d.time.denom(),
                    d.network_time,
                );
                self.stats.playout_ms.store(
                    self.playback.playout_delay().as_millis() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                if kind == StreamKind::Video {
                    if !took || !d.contiguous {
                        // Frames are missing: the decoder needs a fresh keyframe.
                        self.need_keyframe = true;
                        self.request_keyframe(rtc, now);
                    } else if is_keyframe(self.playback.codec(), &d.data) {
                        self.need_keyframe = false;
                    }
                }
            }
            _ => {}
        }
    }

    fn on_wake(&mut self, rtc: &mut Rtc, now: Instant) {
        if self.connected && self.need_keyframe {
            self.request_keyframe(rtc, now);
        }
    }
}
