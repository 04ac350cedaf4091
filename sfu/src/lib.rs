//! Selective forwarding unit for live synchronous classrooms: a teacher publishes over WHIP,
//! hundreds of classrooms play over WHEP, all media on one UDP port (and ICE-TCP).
//!
//! The forwarding decisions ([`forward`], [`program`]) are pure code driven by the caller's
//! clock; sockets live in [`media::event_loop`] and HTTP in [`http`].

pub mod auth;
pub mod cluster;
pub mod config;
pub mod forward;
pub mod http;
pub mod media;
pub mod metrics;
pub mod program;
pub mod room;
pub mod server;
