//! Playing over WHEP: receive-only m-lines for the teacher's voice, camera and courseware
//! (the SFU's first three program slots), depacketized frames handed to the playback
//! pipeline, keyframes asked for when a picture cannot start or has lost frames.

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
    // Video m-lines in the SFU's slot order: the camera, then the courseware.
    let pictures = [StreamKind::Camera, StreamKind::Courseware].map(|kind| Picture {
        kind,
        mid: api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None),
        // The courseware asks only once it flows: many lessons have none.
        need_keyframe: kind == StreamKind::Camera,
        last_request: None,
    });
    let (offer, pending) = api.apply().ok_or("nothing to offer")?;
    Ok(Prepared {
        rtc,
        offer,
        pending,
        handler: Box::new(Subscriber {
            audio,
            pictures,
            playback,
            stats,
            connected: false,
            voice: VoiceGaps::default(),
        }),
    })
}

/// One of the lesson's pictures and its keyframe requests.
struct Picture {
    kind: StreamKind,
    mid: Mid,
    /// Set until a keyframe lets the decoder (re)start.
    need_keyframe: bool,
    last_request: Option<Instant>,
}

pub struct Subscriber {
    audio: Mid,
    pictures: [Picture; 2],
    playback: Arc<Playback>,
    stats: Arc<SessionStats>,
    connected: bool,
    /// Lost stretches of the lesson's voice, for `/status`.
    voice: VoiceGaps,
}

impl Picture {
    fn request_keyframe(&mut self, rtc: &mut Rtc, stats: &SessionStats, now: Instant) {
        if self
            .last_request
            .is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_RETRY)
        {
            return;
        }
        if let Some(mut w) = rtc.writer(self.mid) {
            if w.is_request_keyframe_possible(KeyframeRequestKind::Pli)
                && w.request_keyframe(None, KeyframeRequestKind::Pli).is_ok()
            {
                self.last_request = Some(now);
                stats
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
                let picture = self.pictures.iter().position(|p| p.mid == d.mid);
                let kind = match picture {
                    Some(i) => self.pictures[i].kind,
                    None if d.mid == self.audio => StreamKind::Audio,
                    None => return,
                };
                self.stats.add_frame(d.data.len());
                if kind == StreamKind::Courseware {
                    self.stats
                        .courseware_frames
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
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
                if let Some(i) = picture {
                    let p = &mut self.pictures[i];
                    if !took || !d.contiguous {
                        // Frames are missing: the decoder needs a fresh keyframe.
                        p.need_keyframe = true;
                        p.request_keyframe(rtc, &self.stats, now);
                    } else if is_keyframe(self.playback.codec(), &d.data) {
                        p.need_keyframe = false;
                    }
                }
            }
            _ => {}
        }
    }

    fn on_wake(&mut self, rtc: &mut Rtc, now: Instant) {
        if !self.connected {
            return;
        }
        for p in &mut self.pictures {
            if p.need_keyframe {
                p.request_keyframe(rtc, &self.stats, now);
            }
        }
    }
}
