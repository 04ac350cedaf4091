//! What `/api/rooms` shows: a copy of the loop's state, taken inside the loop.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct RoomInfo {
    pub room: String,
    pub created_unix: u64,
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
    pub slot: String,
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
    pub estimate_bps: Option<u64>,
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
    pub switches: u64,
    pub packets: u64,
}
