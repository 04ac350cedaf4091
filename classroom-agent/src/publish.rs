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
use crate::adapt::ladder::{self, Ladder, LayerSetting, Step};
use crate::adapt::overshoot::OvershootControl;
use crate::adapt::padding::{self, QueueMemory};
use crate::adapt::pin::{self, PinWatch};
use crate::adapt::stretch::{self, Stretch};
use crate::capture::{Capture, EncodedFrame, EncoderInfo, FrameRoute, StepApplier, TrackKind};
use crate::frame::VideoCodec;
use crate::peer::{Handler, PeerSocket, Prepared};
use crate::status::SessionStats;
use crate::timing::rtp_ticks;

/// Where the congestion controller starts before the first feedback; probing finds the rest.
pub const START_ESTIMATE_KBPS: u64 = 1000;

/// How often to probe for more while below the top step. (4 s until 2026-12-03: a returned
/// 4 Mbit/s link whose first probes found little, on a loaded machine, was found 7 s late.)
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// After a probe found room (the estimate rose by `PROBE_FOUND`), the next one this soon.
const PROBE_FOLLOW_UP: Duration = Duration::from_secs(1);
/// A probe found room when the estimate rose this much over its value when it was asked.
const PROBE_FOUND: f64 = 1.15;
/// A fall held right after a rise is probed for once the last probe is this old.
const PROBE_CONFIRM: Duration = Duration::from_millis(600);

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
    let camera_layers = encoders
        .iter()
        .filter(|e| e.track == TrackKind::Camera)
        .count();
    let mut next_camera = 0;
    let slots = encoders
        .iter()
        .map(|e| match e.track {
            TrackKind::Audio => None,
            TrackKind::Camera => {
                next_camera += 1;
                Some(next_camera - 1)
            }
            TrackKind::Courseware => Some(camera_layers),
        })
        .collect();
    let applier = StepApplier::spawn(capture.clone()).map_err(|e| format!("thread: {e}"))?;
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
        applier,
        stats,
        connected: false,
        write_errors: 0,
        ladder: Ladder::new(setup.steps.clone(), start, setup.cap_bps),
        filter: EstimateFilter::default(),
        queues: QueueMemory::default(),
        last_probe: None,
        minimum_given: 0,
        pin: PinWatch::default(),
        stretch: Stretch::default(),
        overshoot: OvershootControl::new(camera_layers + 1),
        slots,
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
    /// Puts the plan on the encoders without holding up this thread.
    applier: StepApplier,
    stats: Arc<SessionStats>,
    connected: bool,
    write_errors: u64,
    ladder: Ladder,
    filter: EstimateFilter,
    /// The link's last queue, for the padding share.
    queues: QueueMemory,
    /// The minimum rate last given to the controller.
    minimum_given: u64,
    /// Watches for an estimate that stopped moving (see [`PinWatch`]).
    pin: PinWatch,
    /// The top camera layer's share of spare room on the top step (see [`Stretch`]).
    stretch: Stretch,
    /// When the last probe was asked for, and the estimate then.
    last_probe: Option<(Instant, u64)>,
    /// Scales each video encoder's ask so that its output meets the plan.
    overshoot: OvershootControl,
    /// The ladder slot (camera layers, then courseware) of each encoder; `None` for audio.
    slots: Vec<Option<usize>>,
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
        let queueing = self.filter.queueing(now);
        self.queues
            .on_reading(self.filter.latest(now), queueing, now);
        let stepped = self.ladder.on_reading(e, queueing, now).is_some();
        let want = if self.ladder.on_top() && !queueing {
            stretch::target(self.ladder.current(), self.ladder.budget(e))
        } else {
            None
        };
        let stretched = self.stretch.update(want, now);
        if stepped || stretched {
            self.apply_step(rtc, e, now);
        } else if self.connected {
            // A change of the padding share moves the minimum, and is given here too.
            self.refresh_minimum(rtc, now);
        }
    }

    fn request_all_keyframes(&self) {
        for i in 0..self.encoders.len() {
            self.capture.force_keyframe(i);
        }
    }

    /// How much of the estimate padding may fill now (see [`QueueMemory::share`]).
    fn padding_share(&self, now: Instant) -> f64 {
        self.queues
            .share(self.filter.queueing(now), self.filter.latest(now), now)
    }

    /// The ladder's rates for the controller. str0m pads up to the minimum or its estimate,
    /// whichever is lower; padding is held to a share of the estimate (see
    /// [`QueueMemory::share`] and [`padding::minimum`]): all of it on a quiet link, less for a
    /// while after a queue and nothing during one, so that a queue drains.
    fn probe_rates(&self, now: Instant) -> (u64, u64) {
        let (mut minimum, mut desired) = self.ladder.probe_rates();
        if self.ladder.on_top() {
            // A stretched top layer is a bigger step: the link is kept filled for it too.
            minimum = minimum.max(ladder::gross(self.plan().total_bps()));
            desired = desired.max(minimum);
        }
        let minimum = padding::minimum(minimum, self.padding_share(now), self.filter.latest(now));
        (minimum, desired)
    }

    /// Gives the controller its rates and remembers the minimum given.
    fn set_rates(&mut self, rtc: &mut Rtc, minimum: u64, desired: u64) {
        rtc.bwe()
            .set_bitrate(Bitrate::bps(minimum), Bitrate::bps(desired));
        self.minimum_given = minimum;
    }

    /// Gives the controller the minimum again when a share of the newest estimate moved it;
    /// the desired rate stays, so this asks for no probe.
    fn refresh_minimum(&mut self, rtc: &mut Rtc, now: Instant) {
        let (minimum, desired) = self.probe_rates(now);
        if padding::changed(self.minimum_given, minimum) {
            self.set_rates(rtc, minimum, desired);
        }
    }

    /// What the encoders are to make now: the ladder's step, its top layer stretched on the
    /// top step.
    fn plan(&self) -> Step {
        let given = self.stretch.given().filter(|_| self.ladder.on_top());
        stretch::apply(self.ladder.current(), given)
    }

    /// Puts the plan on the encoders, each bitrate scaled by what its encoder has been found
    /// to make of it.
    fn apply_asks(&self) {
        let mut asked = self.plan();
        debug_assert_eq!(asked.slots().count(), self.overshoot.scales().len());
        for (k, l) in asked.slots_mut().enumerate() {
            if let (Some(l), Some(ask)) = (l.as_mut(), self.overshoot.ask(k)) {
                l.bitrate_bps = ask.min(u32::MAX as u64) as u32;
            }
        }
        self.applier.apply(asked);
    }

    /// Puts the plan (the ladder's step, stretched on the top step) on the encoders and tells
    /// the congestion controller what to probe for.
    fn apply_step(&mut self, rtc: &mut Rtc, estimate_bps: u64, now: Instant) {
        let step = self.plan();
        for (k, l) in step.slots().enumerate() {
            self.overshoot.plan(k, l.map(|l| l.bitrate_bps as u64), now);
        }
        self.apply_asks();
        let (minimum, desired) = self.probe_rates(now);
        self.set_rates(rtc, minimum, desired);
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
        self.stats.set_video(&step);
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
                tracing::debug!(average_kbps = estimate.as_u64() / 1000, "bwe estimate");
                self.filter.on_average(estimate.as_u64());
                self.follow_estimate(rtc, now);
            }
            Event::MediaEgressStats(m) => {
                tracing::debug!(
                    mid = %m.mid,
                    rid = ?m.rid,
                    bytes = m.bytes,
                    packets = m.packets,
                    nacks = m.nacks,
                    "egress"
                );
            }
            Event::PeerStats(ps) => {
                let latest = ps.bwe_tx.map(|b| b.as_u64());
                self.filter.on_sent(ps.peer_bytes_tx, now);
                self.filter.on_stats(latest, ps.rtt, now);
                // Quiet: connected, feedback in the last second (str0m reports no loss
                // fraction without it, and an estimate does not move without feedback), no
                // loss and no queue.
                let quiet = self.connected
                    && !self.filter.queueing(now)
                    && ps
                        .egress_loss_fraction
                        .is_some_and(|l| l <= pin::QUIET_LOSS);
                let (_, wanted) = self.ladder.probe_rates();
                if let Some(from) = self.pin.on_reading(latest, quiet, wanted, now) {
                    tracing::info!(
                        estimate_kbps = from / 1000,
                        wanted_kbps = wanted / 1000,
                        "bwe: estimate pinned with no queue or loss; restarting the controller"
                    );
                    self.stats.bwe_restarts.fetch_add(1, Ordering::Relaxed);
                    rtc.bwe().reset(Bitrate::bps(from));
                }
                tracing::debug!(
                    latest_kbps = latest.map(|b| b / 1000),
                    rtt_ms = ps.rtt.map(|r| r.as_millis() as u64),
                    queueing = self.filter.queueing(now),
                    capacity_kbps = self.filter.capacity(now).map(|c| c / 1000),
                    loss = ps.egress_loss_fraction,
                    bytes_tx = ps.peer_bytes_tx,
                    "bwe"
                );
                self.follow_estimate(rtc, now);
                if !self.overshoot.update(now).is_empty() {
                    tracing::debug!(scales = ?self.overshoot.scales(), "encoder asks corrected");
                    self.apply_asks();
                }
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
        // And on any step, while the ladder holds a fall right after a rise (below).
        let est = self.filter.for_ladder(now).unwrap_or(0);
        let due = self.last_probe.is_none_or(|(t, at_est)| {
            let since = now.saturating_duration_since(t);
            since >= PROBE_EVERY
                || (since >= PROBE_FOLLOW_UP && est as f64 >= at_est as f64 * PROBE_FOUND)
        });
        let below_top = self.ladder.index() + 1 < self.ladder.steps().len();
        // A fall the ladder holds right after a rise is checked at once, and again every
        // `PROBE_CONFIRM` while held: with no queue on the link, the controller cut its
        // estimate on the new step's first burst, and it climbs back at its additive pace
        // (1.6 -> 3.5 Mbit/s took 5 s on a 4 Mbit/s link, and the step was lost); a probe's
        // result sets the estimate straight away.
        let confirm = self.ladder.holding_fall().is_some_and(|held| {
            self.last_probe
                .is_none_or(|(t, _)| t < held || now.saturating_duration_since(t) >= PROBE_CONFIRM)
        });
        // Never into a queue: a probe there only deepens it.
        let due = ((below_top && due) || confirm) && !self.filter.queueing(now);
        if self.connected && due {
            // A confirming probe is measured against the estimate before the cut, so that the
            // controller's own climb back is not taken for room it found (which brings the next
            // probe sooner).
            let at_est = match self.last_probe {
                Some((_, before)) if confirm => before.max(est),
                _ => est,
            };
            self.last_probe = Some((now, at_est));
            let (minimum, desired) = self.probe_rates(now);
            tracing::debug!(
                minimum_kbps = minimum / 1000,
                desired_kbps = desired / 1000,
                confirm,
                "probe re-armed"
            );
            let low = probe_from(desired, est);
            rtc.bwe().set_bitrate(Bitrate::bps(low), Bitrate::bps(low));
            // The probe controller compares with the desired rate it last took in, at its
            // timeout: let it take in a lower one, so the rise below is seen as one.
            if let Err(e) = rtc.handle_input(Input::Timeout(now)) {
                tracing::debug!("probe re-arm: {e}");
            }
            self.set_rates(rtc, minimum, desired);
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
                Ok(()) => {
                    self.stats.add_frame(len);
                    if let Some(k) = self.slots[f.encoder] {
                        self.overshoot.on_frame(k, len, f.keyframe, now);
                        if f.keyframe {
                            tracing::debug!(layer = k, bytes = len, "keyframe sent");
                        }
                    }
                }
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

/// The desired rate a re-armed probe first drops to: under `desired` (str0m probes on a rise
/// of the desired rate only; below the top step the minimum is the desired rate itself), and
/// no higher than the estimate, so that the padding it allows for that moment adds nothing.
fn probe_from(desired: u64, estimate: u64) -> u64 {
    (desired / 2).min(estimate)
}

fn pt_frequency(rate: u32) -> str0m::media::Frequency {
    match rate {
        48_000 => str0m::media::Frequency::FORTY_EIGHT_KHZ,
        _ => str0m::media::Frequency::NINETY_KHZ,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_re_armed_probe_drops_the_desired_rate_under_itself_first() {
        // Below the top step the minimum is the desired rate: the drop must still be a drop.
        assert_eq!(probe_from(3_730_000, 2_500_000), 1_865_000);
        assert_eq!(probe_from(3_730_000, 900_000), 900_000);
        assert!(probe_from(3_730_000, 10_000_000) < 3_730_000);
    }
}
