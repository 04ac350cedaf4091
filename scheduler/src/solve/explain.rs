//! Why a demanded period stayed unmet: for every candidate that was not taken, which rule stops it
//! given the rest of the plan.

use std::collections::BTreeSet;

use super::greedy::State;
use super::instance::{Assignment, Instance};
use crate::model::Reason;

/// Reasons per demand of the instance (empty for demands that are met).
pub fn reasons(inst: &Instance, s: &Assignment, optimal: bool) -> Vec<Vec<Reason>> {
    let st = State::from(inst, s);
    inst.demands
        .iter()
        .enumerate()
        .map(|(d, dem)| {
            if st.met(d) >= dem.periods {
                return vec![];
            }
            let mut r: BTreeSet<Reason> = dem.prefilter.clone();
            for &c in &dem.cands {
                if s.x[c] {
                    continue;
                }
                let mut found = false;
                if st.other_teacher(c) {
                    r.insert(Reason::OneTeacher);
                    found = true;
                }
                if st.window_conflict(c) {
                    r.insert(Reason::NoCommonWindow);
                    found = true;
                }
                for g in st.blocking(c) {
                    if let Some(reason) = inst.groups[g].kind.reason() {
                        r.insert(reason);
                        found = true;
                    }
                }
                if !found && !optimal {
                    r.insert(Reason::TimeLimit);
                }
            }
            if r.is_empty() {
                // No candidate at all and nothing filtered: nobody teaches it in reach.
                r.insert(if optimal {
                    Reason::NoTeacher
                } else {
                    Reason::TimeLimit
                });
            }
            r.into_iter().collect()
        })
        .collect()
}
