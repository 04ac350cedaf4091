//! The classroom PC agent: captures and encodes with GStreamer, publishes over WHIP and plays
//! the lesson over WHEP, both through str0m.
//!
//! Pure parts (unit-tested, no I/O): [`frame`] (codec bitstream facts), [`timing`] (clock
//! conversions both ways), [`layers`] (the simulcast plan), [`keyframe`] (request
//! throttling), [`backoff`] (reconnect pacing), [`camera_watch`] (when a lost camera gives way
//! to the test pattern and comes back), [`adapt`] (the bitrate ladder), [`layout`] (the
//! screen's pictures), [`config`] (the config file). Edges: [`whip`] and [`join`] (HTTP),
//! [`peer`] (the str0m loop on one UDP socket), [`capture`], [`camera`] and [`playback`]
//! (GStreamer pipelines).

pub mod adapt;
pub mod backoff;
pub mod camera;
pub mod camera_watch;
pub mod capture;
pub mod config;
pub mod frame;
pub mod join;
pub mod keyframe;
pub mod layers;
pub mod layout;
pub mod peer;
pub mod playback;
pub mod publish;
pub mod slides;
pub mod status;
pub mod subscribe;
pub mod timing;
pub mod voice_gaps;
pub mod whip;
