//! Adapting what the agent sends to its link.

pub mod estimate;
pub mod ladder;
pub mod overshoot;
pub mod padding;
pub mod pin;
pub mod stretch;
