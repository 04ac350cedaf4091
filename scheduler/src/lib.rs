//! Scheduler for live synchronous classrooms: which central-school teacher and class drives which
//! teaching-point classes, in which periods, under bells, bandwidth and server limits, solved to a
//! certified optimum (see README.md).
//!
//! The core is pure: `model` (files in and out), `generate` (instances), `solve` (greedy + MILP),
//! `validate` (an independent checker), `export` (iCalendar, CSV), `token` (join tokens),
//! `import` (CSV bundles), `edit` (moves and re-solves around locked lessons). At the edges:
//! `store` (SQLite/PostgreSQL) and `api` (the REST service of `scheduler serve`).

pub mod api;
pub mod edit;
pub mod export;
pub mod generate;
pub mod import;
pub mod model;
pub mod solve;
pub mod store;
pub mod token;
pub mod validate;
