//! The synthetic teacher's media: a real VP8 clip per simulcast layer ([`clip`]) and real Opus
//! speech ([`speech`]), both encoded once and looped.

pub mod clip;
pub mod speech;
