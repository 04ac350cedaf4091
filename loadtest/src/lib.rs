//! Load tests for live synchronous classrooms.
//!
//! - [`link`] emulates the links rural classrooms really have (rate, queue, delay, jitter,
//!   random and bursty loss, capacity steps) in user space, because the machines we test on
//!   have no `netem`.
//! - [`media`]: the synthetic teacher's real VP8 clip and Opus speech.
//! - [`measure`]: per-classroom figures (loss, frames, freezes, latency), sans-IO.
//! - [`peer`]: webrtc-rs teacher (WHIP) and classrooms (WHEP).
//! - [`cluster`]: one lesson across SFU nodes: origin egress, copies per edge, hop latency.
//! - [`janus`]: the same broadcast through Janus's Streaming plugin, for comparison.
//! - [`probe`]: the SFU's CPU and memory from /proc, its counters from /metrics.
//! - [`report`]: JSON report, terminal summary and the HTML page.
//! - [`run`]: the fixed and ramp modes.

pub mod cluster;
pub mod janus;
pub mod link;
pub mod measure;
pub mod media;
pub mod peer;
pub mod probe;
pub mod report;
pub mod run;
