//! Scheduler for live synchronous classrooms: which central-school teacher and class drives which
//! teaching-point classes, in which periods, under bells, bandwidth and server limits, solved to a
//! certified optimum (see README.md).
//!
//! The core is pure: `model` (files in and out), `generate` (instances), `solve` (greedy + MILP),
//! `validate` (an independent checker), `export` (iCalendar, CSV), `token` (join tokens).

pub mod export;
pub mod generate;
pub mod model;
pub mod solve;
pub mod token;
pub mod validate;
