//! Publishing over WHIP: the offer (voice, then the camera with its simulcast layers, the
//! order the SFU slots a teacher's m-lines in) and the handler that writes encoded frames
//! into str0m and turns keyframe requests into force-key-unit events.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::{Event, Input, Rtc};

use crate::adapt::estimate::EstimateFilter;
use crate::adapt::ladder::{Ladder, LayerSetting, Step};
use crate::capture::{Capture, EncodedFrame, EncoderInfo, FrameRoute, TrackKind};
use crate::frame::VideoCodec;
use crate::peer::{Handler, PeerSocket, Prepared};
use crate::status::SessionStats;
use crate::timing::rtp_ticks;

/// Where the congestion controller starts before the first feedback; probing finds the rest.
pub const START_ESTIMATE_KBPS: u64 = 1000;

/// How often to probe for more while below the top step.
const PROBE_EVERY: Duration = Duration::from_secs(4);
/// After a probe found room (the estimate rose by `PROBE_FOUND`), the next one this soon.
const PROBE_FOLLOW_UP: Duration = Duration::from_secs(1);
const PROBE_FOUND: f64 = 1.15;
/// Padding fills the link up to this share of the estimate at most (see `probe_rates`).
const PADDING_SHARE: f64 = 0.9;

/// Frames queued between the encoders and the session thread.
const QUEUE: usize = 256;

/// A publishing `Rtc` offering exactly the codecs the encoders produce.
pub fn publisher_rtc(codec: VideoCodec, start_bps: u64, now: Instant) -> Rtc {
    Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(codec == VideoCodec::Vp8)
        .enable_h264(codec == VideoCodec::H264)
        .enable_bwe(Some(Bitrate::bps(start_bps)))
        // The latest estimate and round trip come with the stats (see `adapt::estimate`).
        .set_stats_interval(Some(Duration::from_millis(250)))
        .build(now)
}

/// What a publishing session needs besides its socket.
#[derive(Clone)]
pub struct PublishSetup {
    pub codec: VideoCodec,
    pub capture: Arc<Capture>,
    pub route: FrameRoute,
    pub stats: Arc<SessionStats>,
    /// The camera's and courseware's adaptation steps (see [`crate::adapt::ladder::build`]).
    pub steps: Vec<Step>,
    /// `--max-kbps`: a ceiling for everything sent.
    pub cap_bps: Option<u64>,
}

/// Adds the media of the encoders and builds the session: m-lines audio then camera.
pub fn prepare(
    socket: &PeerSocket,
    setup: &PublishSetup,
    now: Instant,
) -> Result<Prepared, String> {
    let start = START_ESTIMATE_KBPS * 1000;
    let start = setup.cap_bps.map_or(start, |c| start.min(c));
    let (codec, capture, route, stats) = (
        setup.codec,
        setup.capture.clone(),
        &setup.route,
        setup.stats.clone(),
    );
    stats.estimate_bps.store(start, Ordering::Relaxed);
    let mut rtc = publisher_rtc(codec, start, now);
    let cand = socket.candidate().map_err(|e| format!("candidate: {e}"))?;
    rtc.add_local_candidate(cand);
    let encoders = capture.encoders().to_vec();
    let mut api = rtc.sdp_api();
    let mut routes = vec![None; encoders.len()];
    for track in [TrackKind::Audio, TrackKind::Camera, TrackKind::Courseware] {
        let idx: Vec<usize> = (0..encoders.len())
            .filter(|&i| encoders[i].track == track)
            .collect();
        if idx.is_empty() {
            continue;
        }
        let rids: Vec<String> = idx
            .iter()
            .filter_map(|&i| encoders[i].rid.clone())
            .collect();
        let simulcast = (!rids.is_empty()).then(|| {
            let mut s = Simulcast::new();
            for r in &rids {
                s.add_send_layer(SimulcastLayer::new(r));
            }
            s
        });
        let (kind, name) = match track {
            TrackKind::Audio => (MediaKind::Audio, "voice"),
            TrackKind::Camera => (MediaKind::Video, "camera"),
            TrackKind::Courseware => (MediaKind::Video, "courseware"),
        };
        let mid = api.add_media(
            kind,
            Direction::SendOnly,
            Some("lesson".into()),
            Some(name.into()),
            simulcast,
        );
        for &i in &idx {
            routes[i] = Some((mid, encoders[i].rid.as_deref().map(Rid::from)));
        }
    }
    let (offer, pending) = api.apply().ok_or("nothing to offer")?;
    let (tx, rx) = sync_channel(QUEUE);
    route.connect(tx, socket.waker());
    let handler = Publisher {
        rx,
        routes: routes
            .into_iter()
            .map(|r| r.expect("every encoder has a track"))
            .collect(),
        pts: vec![None; encoders.len()],
        encoders,
        capture,
        stats,
        connected: false,
        write_errors: 0,
        ladder: Ladder::new(setup.steps.clone(), start, setup.cap_bps),
        filter: EstimateFilter::default(),
        padding_off: false,
        last_probe: None,
    };
    Ok(Prepared {
        rtc,
        offer,
        pending,
        handler: Box::new(handler),
    })
}

/// Runs one publishing session: frames in, keyframe requests out.
pub struct Publisher {
    rx: Receiver<EncodedFrame>,
    /// (mid, rid) per encoder.
    routes: Vec<(Mid, Option<Rid>)>,
    /// Payload type per encoder, known once the answer is in.
    pts: Vec<Option<Pt>>,
    encoders: Vec<EncoderInfo>,
    capture: Arc<Capture>,
    stats: Arc<SessionStats>,
    connected: bool,
    write_errors: u64,
    ladder: Ladder,
    filter: EstimateFilter,
    /// Whether the rates last given turned padding off (a queue was building).
    padding_off: bool,
    /// When the last probe was asked for, and the estimate then.
    last_probe: Option<(Instant, u64)>,
}

/// The negotiated payload type for an encoder's codec. For H.264 the constrained baseline,
/// non-interleaved format x264enc produces.
fn choose_pt(rtc: &mut Rtc, mid: Mid, enc: &EncoderInfo) -> Option<Pt> {
    let writer = rtc.writer(mid)?;
    let want = match enc.video {
        None => Codec::Opus,
        Some(VideoCodec::Vp8) => Codec::Vp8,
        Some(VideoCodec::H264) => Codec::H264,
    };
    let mut best: Option<(u8, Pt)> = None;
    for p in writer.payload_params() {
        let spec = p.spec();
        if spec.codec != want {
            continue;
        }
        let score = match want {
            Codec::H264 => {
                let f = &spec.format;
                u8::from(f.packetization_mode == Some(1)) * 2
                    + u8::from(f.profile_level_id.is_some_and(|id| id >> 8 == 0x42e0))
            }
            _ => 0,
        };
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, p.pt()));
        }
    }
    best.map(|(_, pt)| pt)
}

impl Publisher {
    /// Feeds the ladder the estimate it follows (see [`EstimateFilter`]).
    fn follow_estimate(&mut self, rtc: &mut Rtc, now: Instant) {
        let Some(e) = self.filter.for_ladder(now) else {
            return;
        };
        self.stats.estimate_bps.store(e, Ordering::Relaxed);
        if self.ladder.on_estimate(e, now).is_some()
            || self.filter.queueing(now) != self.padding_off
        {
            self.apply_step(rtc, e, now);
        }
    }

    fn request_all_keyframes(&self) {
        for i in 0..self.encoders.len() {
            self.capture.force_keyframe(i);
        }
    }

    /// The ladder's rates for the controller. str0m pads up to the minimum or the estimate,
    /// whichever is lower, and a link kept at its estimate has no room left for the media's
    /// own bursts (nor drains a queue): padding stops at `PADDING_SHARE` of the estimate, and
    /// while a queue is building on the link there is none at all.
    fn probe_rates(&self, now: Instant) -> (u64, u64) {
        let (minimum, desired) = self.ladder.probe_rates();
        if self.filter.queueing(now) {
            return (0, desired);
        }
        let cap = self.filter.for_ladder(now);
        let minimum = cap.map_or(minimum, |e| minimum.min((e as f64 * PADDING_SHARE) as u64));
        (minimum, desired)
    }

    /// Puts the ladder's current step on the encoders and tells the congestion controller
    /// what to probe for.
    fn apply_step(&mut self, rtc: &mut Rtc, estimate_bps: u64, now: Instant) {
        self.padding_off = self.filter.queueing(now);
        let step = self.ladder.current();
        self.capture.apply(step);
        let (minimum, desired) = self.probe_rates(now);
        rtc.bwe()
            .set_bitrate(Bitrate::bps(minimum), Bitrate::bps(desired));
        self.stats
            .ladder_step
            .store(self.ladder.index() as u64, Ordering::Relaxed);
        self.stats
            .video_target_bps
            .store(step.total_bps(), Ordering::Relaxed);
        let show = |l: &Option<LayerSetting>| match l {
            Some(l) => format!(
                "{}x{}@{} {}k",
                l.width,
                l.height,
                l.fps,
                l.bitrate_bps / 1000
            ),
            None => "off".into(),
        };
        let layers: Vec<String> = step.layers.iter().map(show).collect();
        self.stats.set_video(step);
        tracing::info!(
            step = self.ladder.index(),
            estimate_kbps = estimate_bps / 1000,
            video_kbps = step.total_bps() / 1000,
            "adapt: camera layers [{}], courseware {}",
            layers.join(", "),
            show(&step.courseware)
        );
    }
}

impl Handler for Publisher {
    fn on_event(&mut self, rtc: &mut Rtc, event: Event, now: Instant) {
        match event {
            Event::Connected => {
                self.connected = true;
                for i in 0..self.encoders.len() {
                    self.pts[i] = choose_pt(rtc, self.routes[i].0, &self.encoders[i]);
                    if self.pts[i].is_none() {
                        tracing::warn!("no payload type negotiated for {:?}", self.encoders[i]);
                    }
                }
                tracing::info!("whip: connected");
                let start = self.stats.estimate_bps.load(Ordering::Relaxed);
                self.apply_step(rtc, start, now);
                // A fresh session starts every layer with a keyframe.
                self.request_all_keyframes();
            }
            Event::KeyframeRequest(req) => {
                self.stats
                    .keyframes_requested
                    .fetch_add(1, Ordering::Relaxed);
                for (i, (mid, rid)) in self.routes.iter().enumerate() {
                    if *mid == req.mid && (req.rid.is_none() || req.rid == *rid) {
                        self.capture.force_keyframe(i);
                    }
                }
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                self.filter.on_average(estimate.as_u64());
                self.follow_estimate(rtc, now);
            }
            Event::PeerStats(ps) => {
                self.filter
                    .on_stats(ps.bwe_tx.map(|b| b.as_u64()), ps.rtt, now);
                self.follow_estimate(rtc, now);
            }
            _ => {}
        }
    }

    fn on_wake(&mut self, rtc: &mut Rtc, now: Instant) {
        // Below the top step, ask for a probe now and then: str0m probes when the desired
        // rate rises, and a link that came back is otherwise only found as fast as the
        // estimate can grow from what little is sent.
        // After a probe that found room, the next comes sooner: a link that came back is
        // climbed in doublings (str0m caps a probe at twice the estimate).
        let est = self.filter.for_ladder(now).unwrap_or(0);
        let due = self.last_probe.is_none_or(|(t, at_est)| {
            let since = now.saturating_duration_since(t);
            since >= PROBE_EVERY
                || (since >= PROBE_FOLLOW_UP && est as f64 >= at_est as f64 * PROBE_FOUND)
        });
        if self.connected && self.ladder.index() + 1 < self.ladder.steps().len() && due {
            self.last_probe = Some((now, est));
            let (minimum, desired) = self.probe_rates(now);
            rtc.bwe()
                .set_bitrate(Bitrate::bps(minimum), Bitrate::bps(minimum));
            // The probe controller compares with the desired rate it last took in, at its
            // timeout: let it take in the lower one, so the rise below is seen as one.
            if let Err(e) = rtc.handle_input(Input::Timeout(now)) {
                tracing::debug!("probe re-arm: {e}");
            }
            rtc.bwe()
                .set_bitrate(Bitrate::bps(minimum), Bitrate::bps(desired));
        }
        while let Ok(f) = self.rx.try_recv() {
            if !self.connected {
                continue;
            }
            let Some(pt) = self.pts.get(f.encoder).copied().flatten() else {
                continue;
            };
            let (mid, rid) = self.routes[f.encoder];
            let rate = self.encoders[f.encoder].clock_rate;
            let Some(mut writer) = rtc.writer(mid) else {
                continue;
            };
            if let Some(rid) = rid {
                writer = writer.rid(rid);
            }
            let time = MediaTime::new(rtp_ticks(f.pts_ns, rate), pt_frequency(rate));
            let len = f.data.len();
            match writer.write(pt, f.wallclock, time, f.data) {
                Ok(()) => self.stats.add_frame(len),
                Err(e) => {
                    self.write_errors += 1;
                    if self.write_errors.is_power_of_two() {
                        tracing::warn!("write to {mid} ({} errors): {e}", self.write_errors);
                    }
                }
            }
        }
    }
}

fn pt_frequency(rate: u32) -> str0m::media::Frequency {
    match rate {
        48_000 => str0m::media::Frequency::FORTY_EIGHT_KHZ,
        _ => str0m::media::Frequency::NINETY_KHZ,
    }
}
