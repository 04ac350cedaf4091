//! Load tests for live synchronous classrooms.
//!
//! [`link`] emulates the links rural classrooms really have (rate, queue, delay, jitter, random and
//! bursty loss, capacity steps) in user space, because the machines we test on have no `netem`.

pub mod link;
