//! What `/api/rooms` shows: a copy of the loop's state, taken inside the loop.

use serde::Serialize;

use crate::room::state::{Attendance, LessonState};

/// Who attended a lesson, and for how long.
#[derive(Debug, Clone, Serialize)]
pub struct AttendanceReport {
    pub room: String,
    pub lesson: LessonState,
    pub started_unix_ms: Option<u64>,
    pub ended_unix_ms: Option<u64>,
    pub participants: Vec<Attendance>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoomInfo {
    pub room: String,
    pub created_unix: u64,
    pub lesson: LessonState,
    pub stage: Vec<String>,
    pub hands: Vec<String>,
    pub muted: Vec<String>,
    pub publishers: Vec<PublisherInfo>,
    pub subscribers: Vec<SubscriberInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PublisherInfo {
    pub session: String,
    pub sub: String,
    pub name: String,
    pub role: String,
    pub connected: bool,
    pub tracks: Vec<TrackInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrackInfo {
    /// teacher_audio, teacher_camera, courseware, class_audio or class_video.
    pub track: String,
    pub mid: String,
    pub codec: Option<String>,
    pub layers: Vec<LayerInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerInfo {
    pub rid: Option<String>,
    pub ssrc: Option<u32>,
    pub active: bool,
    pub bitrate_bps: u64,
    pub packets: u64,
    pub keyframes: u64,
    pub width: Option<u16>,
    pub height: Option<u16>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubscriberInfo {
    pub session: String,
    pub sub: String,
    pub name: String,
    pub role: String,
    pub connected: bool,
    pub bitrate_bps: u64,
    pub loss: Option<f32>,
    pub rtt_ms: Option<f64>,
    /// The congestion controller's estimate toward this subscriber.
    pub estimate_bps: Option<u64>,
    /// "twcc" (transport-wide feedback) or "remb" (receiver report), null before the first.
    pub estimate_source: Option<&'static str>,
    /// What the allocator gives this subscriber now, what it probes for, and the goal.
    pub allocated_bps: Option<u64>,
    pub probe_bps: Option<u64>,
    pub desired_bps: Option<u64>,
    /// Video tracks paused for lack of bandwidth, and allocation changes, since joining.
    pub pauses: u64,
    pub allocation_changes: u64,
    /// Dips of the estimate just under the current choice, held while a probe checked them:
    /// those the probe refuted (the choice kept) and those it confirmed (the choice given up).
    pub dips_refuted: u64,
    pub dips_confirmed: u64,
    pub nacks: u64,
    pub plis: u64,
    pub slots: Vec<SubscriberSlotInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubscriberSlotInfo {
    pub slot: String,
    pub mid: String,
    /// The layer being forwarded (rid, or "single" without simulcast); null while waiting.
    pub layer: Option<String>,
    pub target_layer: Option<String>,
    /// Highest temporal layer (VP8 TID) passed now and wanted; null: all of them.
    pub temporal: Option<u8>,
    pub target_temporal: Option<u8>,
    /// The allocator paused this slot (the source exists but does not fit).
    pub paused: bool,
    pub switches: u64,
    /// Audio sent with RFC 2198 redundancy (the viewer's link loses packets).
    pub red: bool,
    /// Freezes over 200 ms spent waiting for a keyframe with nothing to forward.
    pub keyframe_freezes: u64,
    pub packets: u64,
}

/// A room as the cluster glue sees it.
#[derive(Debug, Clone)]
pub struct RoomPresence {
    pub room: String,
    /// A teacher's (or admin's) publishing session here is connected.
    pub teaching: bool,
    /// Viewing sessions here.
    pub viewers: usize,
}

/// One relay hop of a room, as `/api/cluster` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RelayInfo {
    /// `from_origin` (this node is an edge of the room) or `to_edge` (this node is its origin).
    pub direction: String,
    pub peer: String,
    pub link: u64,
    pub room: String,
    pub streams: usize,
    /// Streams the edge asked for (dynacast across the hop).
    pub demanded: usize,
    pub packets: u64,
    pub bytes: u64,
    pub avg_bitrate_bps: u64,
    /// Packets the edge asked again after a gap on the hop, and packets resent.
    pub nacked: u64,
    pub repaired: u64,
    /// Added latency of the hop (edge side), over the last 2048 packets.
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// Received streams: `owner/track/layer#stream`, with `*` when asked for now.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tracks: Vec<String>,
}
