//! What travels between two nodes over a relay: RTP as QUIC datagrams, control messages
//! on one bidirectional stream. Pure encoding and decoding; the QUIC side is in `link`.

use serde::{Deserialize, Serialize};

/// One RTP packet of one relayed stream (a layer of a track), as the origin received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayPacket {
    /// The stream id the origin gave this layer in `Control::Tracks` (per connection).
    pub stream: u32,
    /// Extended sequence number (no wrap) of the publisher's stream.
    pub seq: u64,
    /// RTP timestamp.
    pub ts: u32,
    /// The publisher's payload type (its codec is in the stream's `TrackInfo`).
    pub pt: u8,
    pub marker: bool,
    /// RFC 6464 audio level (-dBov, 0..=127 as negative) and voice flag, audio only.
    pub audio_level: Option<i8>,
    pub voice_activity: Option<bool>,
    /// Video orientation (CVO), video only.
    pub video_orientation: Option<u8>,
    /// When the origin received it from the publisher, microseconds since the Unix epoch:
    /// the edge measures the hop's added latency from it.
    pub received_us: u64,
    /// True when this is a retransmission answering a `Control::Nack`.
    pub repair: bool,
    pub payload: bytes::Bytes,
}

/// One layer of a published track, announced by the origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    pub stream: u32,
    /// `program::Track::as_str()`: teacher_audio, teacher_camera, courseware, class_audio, class_video.
    pub track: String,
    /// Who publishes it (the token's `sub`).
    pub owner: String,
    /// Layer index within the track (0 = lowest) and the layer count.
    pub layer: u8,
    pub layers: u8,
    pub rid: Option<String>,
    /// Codec of the publisher's payload type `pt`: name as in SDP (opus, VP8, H264, ...),
    /// clock rate, channels, fmtp line.
    pub pt: u8,
    pub codec: String,
    pub clock_rate: u32,
    pub channels: Option<u8>,
    pub fmtp: String,
}

/// Control messages, both ways, on the connection's control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// First message of the connecting node: who it is, and proof it holds the cluster secret.
    Hello {
        node: String,
        region: String,
        proof: String,
    },
    /// The accepting node's answer to a valid Hello.
    Welcome { node: String },
    /// Edge → origin: send me this room's program.
    Subscribe { room: String },
    Unsubscribe { room: String },
    /// Origin → edge: the room's tracks now (sent on subscribe and whenever they change;
    /// an empty list means the teacher is gone).
    Tracks { room: String, tracks: Vec<TrackInfo> },
    /// Edge → origin: the streams its classrooms need now (dynacast across the hop).
    Demand { room: String, streams: Vec<u32> },
    /// Edge → origin: a keyframe is needed on this stream.
    Keyframe { room: String, stream: u32 },
    /// Edge → origin: these packets were lost on the hop; resend from the origin's cache.
    Nack {
        room: String,
        stream: u32,
        seqs: Vec<u64>,
    },
    /// Origin → edge: the room is not (or no longer) served here.
    Gone { room: String, reason: String },
}
