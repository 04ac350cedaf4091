//! Forwarding decisions, free of I/O: which packets go to a subscriber and how they are rewritten.

pub mod allocator;
pub mod dynacast;
pub mod keyframe;
pub mod keyframe_request;
pub mod layer;
pub mod red;
pub mod rewrite;
pub mod track_forwarder;
pub mod vp8_rewrite;

/// One incoming RTP stream of a publisher (a simulcast layer, or the only stream of a track).
/// Unique for the life of the process, so a reconnecting publisher gets new ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(pub u64);
