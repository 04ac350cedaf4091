//! Counters the sessions update and `/status` reports.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// One direction's counters (publish or play), shared between its session thread and readers.
#[derive(Debug, Default)]
pub struct SessionStats {
    pub connected: AtomicBool,
    /// Sessions that reached the connected state.
    pub connects: AtomicU64,
    /// Attempts that failed or sessions that were lost.
    pub failures: AtomicU64,
    /// Sessions brought back by an ICE restart (no new WHIP/WHEP session).
    pub ice_restarts: AtomicU64,
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    pub keyframes_requested: AtomicU64,
    /// Restarts of the congestion controller from a pinned estimate (publish only; see
    /// `adapt::pin`).
    pub bwe_restarts: AtomicU64,
    /// The congestion controller's latest estimate of the uplink (publish only).
    pub estimate_bps: AtomicU64,
    /// The adaptation ladder's step and the video rate it sets (publish only).
    pub ladder_step: AtomicU64,
    pub video_target_bps: AtomicU64,
    /// From the connection's latest stats: round trip to the SFU, all bytes on the wire each
    /// way per second, and the packet loss the SFU reports on what we send (publish) or we see
    /// on what we get (play), in parts per million.
    pub rtt_ms: AtomicU64,
    pub sent_bps: AtomicU64,
    pub received_bps: AtomicU64,
    /// All bytes on the wire each way since the agent started, over every session: a rate
    /// over any span is read from two looks at these.
    pub sent_wire_bytes: AtomicU64,
    pub received_wire_bytes: AtomicU64,
    pub loss_ppm: AtomicU64,
    /// Stretches of the lesson's voice lost on the way, over 200 ms (play only; see
    /// `voice_gaps`), and the longest lost stretch of any length.
    pub voice_gaps: AtomicU64,
    pub voice_gap_longest_ms: AtomicU64,
    /// The playout delay added to what is played, sized for the link (play only).
    pub playout_ms: AtomicU64,
    /// Courseware frames received (play only).
    pub courseware_frames: AtomicU64,
    /// Pictures that reached the screen's composition, and how it is laid out (play to the
    /// screen only; see `layout`).
    pub shown_camera: AtomicU64,
    pub shown_courseware: AtomicU64,
    pub layout: Mutex<Option<&'static str>>,
    /// What each video layer sends now (publish only): size, frame rate, bitrate or off.
    pub video: Mutex<Option<serde_json::Value>>,
    pub last_error: Mutex<Option<String>>,
}

impl SessionStats {
    pub fn add_frame(&self, bytes: usize) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A stretch of lost voice (play only).
    pub fn record_voice_gap(&self, gap: std::time::Duration) {
        if gap > crate::voice_gaps::NOTICEABLE {
            self.voice_gaps.fetch_add(1, Ordering::Relaxed);
        }
        self.voice_gap_longest_ms
            .fetch_max(gap.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn set_error(&self, e: impl ToString) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }

    /// Records the adaptation step now applied, for `/status`.
    pub fn set_video(&self, step: &crate::adapt::ladder::Step) {
        let show = |l: &Option<crate::adapt::ladder::LayerSetting>| match l {
            Some(l) => serde_json::json!({
                "width": l.width, "height": l.height, "fps": l.fps, "bitrate_bps": l.bitrate_bps,
            }),
            None => serde_json::Value::Null,
        };
        let v = serde_json::json!({
            "camera": step.layers.iter().map(show).collect::<Vec<_>>(),
            "courseware": show(&step.courseware),
        });
        *self.video.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
    }

    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "connected": self.connected.load(Ordering::Relaxed),
            "connects": self.connects.load(Ordering::Relaxed),
            "failures": self.failures.load(Ordering::Relaxed),
            "ice_restarts": self.ice_restarts.load(Ordering::Relaxed),
            "frames": self.frames.load(Ordering::Relaxed),
            "bytes": self.bytes.load(Ordering::Relaxed),
            "keyframes_requested": self.keyframes_requested.load(Ordering::Relaxed),
            "bwe_restarts": self.bwe_restarts.load(Ordering::Relaxed),
            "estimate_bps": self.estimate_bps.load(Ordering::Relaxed),
            "ladder_step": self.ladder_step.load(Ordering::Relaxed),
            "video_target_bps": self.video_target_bps.load(Ordering::Relaxed),
            "rtt_ms": self.rtt_ms.load(Ordering::Relaxed),
            "sent_bps": self.sent_bps.load(Ordering::Relaxed),
            "received_bps": self.received_bps.load(Ordering::Relaxed),
            "sent_wire_bytes": self.sent_wire_bytes.load(Ordering::Relaxed),
            "received_wire_bytes": self.received_wire_bytes.load(Ordering::Relaxed),
            "loss": self.loss_ppm.load(Ordering::Relaxed) as f64 / 1e6,
            "playout_ms": self.playout_ms.load(Ordering::Relaxed),
            "voice_gaps": self.voice_gaps.load(Ordering::Relaxed),
            "voice_gap_longest_ms": self.voice_gap_longest_ms.load(Ordering::Relaxed),
            "courseware_frames": self.courseware_frames.load(Ordering::Relaxed),
            "screen": self.layout.lock().unwrap_or_else(|p| p.into_inner()).map(|layout| {
                serde_json::json!({
                    "layout": layout,
                    "camera_frames": self.shown_camera.load(Ordering::Relaxed),
                    "courseware_frames": self.shown_courseware.load(Ordering::Relaxed),
                })
            }),
            "video": *self.video.lock().unwrap_or_else(|p| p.into_inner()),
            "last_error": *self.last_error.lock().unwrap_or_else(|p| p.into_inner()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reports_counters() {
        let s = SessionStats::default();
        s.add_frame(100);
        s.add_frame(50);
        s.set_error("boom");
        let v = s.snapshot();
        assert_eq!(v["frames"], 2);
        assert_eq!(v["bytes"], 150);
        assert_eq!(v["last_error"], "boom");
        assert_eq!(v["connected"], false);
        assert!(v["video"].is_null());
        let step = crate::adapt::ladder::Step {
            layers: vec![
                None,
                Some(crate::adapt::ladder::LayerSetting {
                    width: 640,
                    height: 360,
                    fps: 15,
                    bitrate_bps: 200_000,
                }),
            ],
            courseware: None,
        };
        s.set_video(&step);
        let v = s.snapshot();
        assert!(v["video"]["camera"][0].is_null());
        assert_eq!(v["video"]["camera"][1]["fps"], 15);
        assert!(v["video"]["courseware"].is_null());
    }
}

/// Everything `/status` and `/metrics` report.
#[derive(Debug)]
pub struct AgentStatus {
    pub role: &'static str,
    pub room: String,
    /// The school's and this classroom's ids in the timetable, when configured.
    pub school: Option<String>,
    pub id: Option<String>,
    pub started: std::time::Instant,
    pub publish: std::sync::Arc<SessionStats>,
    pub play: std::sync::Arc<SessionStats>,
    pub camera: std::sync::Arc<crate::camera::CameraStats>,
}

impl AgentStatus {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "role": self.role,
            "room": self.room,
            "school": self.school,
            "id": self.id,
            "uptime_s": self.started.elapsed().as_secs(),
            "publish": self.publish.snapshot(),
            "play": self.play.snapshot(),
            "camera": self.camera.snapshot(),
        })
    }

    /// Prometheus text exposition (version 0.0.4).
    pub fn metrics(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        type Series = (
            &'static str,
            &'static str,
            &'static str,
            fn(&SessionStats) -> u64,
        );
        let series: [Series; 18] = [
            (
                "connected",
                "gauge",
                "1 while the session is connected",
                |s| s.connected.load(Ordering::Relaxed) as u64,
            ),
            (
                "connects_total",
                "counter",
                "sessions that connected",
                |s| s.connects.load(Ordering::Relaxed),
            ),
            (
                "failures_total",
                "counter",
                "failed attempts and lost sessions",
                |s| s.failures.load(Ordering::Relaxed),
            ),
            (
                "ice_restarts_total",
                "counter",
                "sessions brought back by an ICE restart",
                |s| s.ice_restarts.load(Ordering::Relaxed),
            ),
            (
                "frames_total",
                "counter",
                "encoded frames sent or received",
                |s| s.frames.load(Ordering::Relaxed),
            ),
            (
                "bytes_total",
                "counter",
                "encoded bytes sent or received",
                |s| s.bytes.load(Ordering::Relaxed),
            ),
            (
                "keyframe_requests_total",
                "counter",
                "keyframe requests received (publish) or sent (play)",
                |s| s.keyframes_requested.load(Ordering::Relaxed),
            ),
            (
                "bwe_restarts_total",
                "counter",
                "congestion controller restarts from a pinned estimate (publish)",
                |s| s.bwe_restarts.load(Ordering::Relaxed),
            ),
            (
                "estimate_bps",
                "gauge",
                "congestion controller estimate of the uplink",
                |s| s.estimate_bps.load(Ordering::Relaxed),
            ),
            (
                "video_target_bps",
                "gauge",
                "video rate the adaptation ladder sets",
                |s| s.video_target_bps.load(Ordering::Relaxed),
            ),
            ("rtt_ms", "gauge", "round trip to the SFU", |s| {
                s.rtt_ms.load(Ordering::Relaxed)
            }),
            (
                "sent_bps",
                "gauge",
                "bytes on the wire to the SFU, per second, in bits",
                |s| s.sent_bps.load(Ordering::Relaxed),
            ),
            (
                "received_bps",
                "gauge",
                "bytes on the wire from the SFU, per second, in bits",
                |s| s.received_bps.load(Ordering::Relaxed),
            ),
            (
                "sent_wire_bytes_total",
                "counter",
                "bytes on the wire to the SFU",
                |s| s.sent_wire_bytes.load(Ordering::Relaxed),
            ),
            (
                "received_wire_bytes_total",
                "counter",
                "bytes on the wire from the SFU",
                |s| s.received_wire_bytes.load(Ordering::Relaxed),
            ),
            (
                "voice_gaps_total",
                "counter",
                "stretches of the lesson's voice lost on the way, over 200 ms (play)",
                |s| s.voice_gaps.load(Ordering::Relaxed),
            ),
            (
                "voice_gap_longest_ms",
                "gauge",
                "longest stretch of the lesson's voice lost on the way (play)",
                |s| s.voice_gap_longest_ms.load(Ordering::Relaxed),
            ),
            (
                "loss_ppm",
                "gauge",
                "packet loss reported on what is sent (publish) or seen on what comes (play)",
                |s| s.loss_ppm.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, get) in series {
            let _ = writeln!(out, "# HELP classroom_agent_{name} {help}");
            let _ = writeln!(out, "# TYPE classroom_agent_{name} {kind}");
            for (dir, s) in [("publish", &self.publish), ("play", &self.play)] {
                let _ = writeln!(
                    out,
                    "classroom_agent_{name}{{direction=\"{dir}\"}} {}",
                    get(s)
                );
            }
        }
        let c = &self.camera;
        for (name, help, v) in [
            (
                "camera_live",
                "1 while the camera's picture is sent (0: the test pattern)",
                (*c.state.lock().unwrap_or_else(|p| p.into_inner()) == "live") as u64,
            ),
            (
                "camera_losses_total",
                "times a live camera was lost",
                c.losses.load(Ordering::Relaxed),
            ),
            (
                "camera_returns_total",
                "times a lost camera came back",
                c.returns.load(Ordering::Relaxed),
            ),
        ] {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(out, "# HELP classroom_agent_{name} {help}");
            let _ = writeln!(out, "# TYPE classroom_agent_{name} {kind}");
            let _ = writeln!(out, "classroom_agent_{name} {v}");
        }
        out
    }
}

/// Serves `/status` (JSON) and `/metrics` on `addr` until `stop` is set. Binding happens
/// before this returns, so a taken port is reported at start-up.
pub fn serve(
    addr: std::net::SocketAddr,
    status: std::sync::Arc<AgentStatus>,
    stop: std::sync::Arc<AtomicBool>,
) -> std::io::Result<std::net::SocketAddr> {
    use axum::routing::get;
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let (s1, s2) = (status.clone(), status);
                let app = axum::Router::new()
                    .route("/status", get(move || async move { axum::Json(s1.json()) }))
                    .route(
                        "/metrics",
                        get(move || async move {
                            (
                                [("content-type", "text/plain; version=0.0.4")],
                                s2.metrics(),
                            )
                        }),
                    );
                let shutdown = async move {
                    while !stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                };
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    tracing::warn!("status server: {e}");
                }
            })
        })?;
    Ok(local)
}

#[cfg(test)]
mod agent_tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn metrics_have_both_directions() {
        let st = AgentStatus {
            role: "teacher",
            room: "r".into(),
            school: Some("z01".into()),
            id: None,
            started: std::time::Instant::now(),
            publish: Arc::new(SessionStats::default()),
            play: Arc::new(SessionStats::default()),
            camera: Arc::new(crate::camera::CameraStats::default()),
        };
        st.camera.losses.store(2, Ordering::Relaxed);
        *st.camera.state.lock().unwrap() = "live";
        st.publish.estimate_bps.store(1_234_000, Ordering::Relaxed);
        st.play.add_frame(10);
        let m = st.metrics();
        assert!(m.contains("classroom_agent_estimate_bps{direction=\"publish\"} 1234000"));
        assert!(m.contains("classroom_agent_frames_total{direction=\"play\"} 1"));
        assert!(m.contains("# TYPE classroom_agent_connected gauge"));
        assert_eq!(st.json()["publish"]["estimate_bps"], 1_234_000);
        assert_eq!(st.json()["school"], "z01");
        assert!(st.json()["id"].is_null());
        assert!(m.contains("classroom_agent_camera_losses_total 2"));
        assert!(m.contains("classroom_agent_camera_live 1"));
        assert_eq!(st.json()["camera"]["state"], "live");
    }
}
