//! Adapting what the agent sends to its link.

pub mod ladder;
