//! The interactive lesson (专递课堂): room state, commands and events, active speaker.
//! Pure code; the media loop owns one [`state::RoomState`] per room and publishes its events.

pub mod speaker;
pub mod state;

pub use state::{At, CommandError, RoomCommand, RoomEvent, RoomRules, RoomState};
