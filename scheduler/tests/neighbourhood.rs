//! Neighbourhoods (as the searches of `solve/lns.rs` use them): HiGHS with candidates outside a
//! set held at 0 never leaves the set, and with every candidate free it finds what the whole
//! model finds.

mod common;

use std::time::Duration;

use scheduler::solve::instance::{self, Weights};
use scheduler::solve::{greedy, milp};

#[test]
fn neighbourhood_stays_inside_and_matches_the_whole_model() {
    let w = Weights::coverage_only();
    let limit = Duration::from_secs(30);
    let mut searched = 0;
    for seed in 0..30 {
        for coplan in [false, true] {
            let region = common::tiny(seed, coplan);
            for counties in instance::components(&region) {
                let inst = instance::build(&region, &counties);
                if inst.cands.is_empty() {
                    continue;
                }
                let start = greedy::solve(&inst);
                // Only the start's own candidates free: nothing else may be taken.
                let r = milp::solve_within(&inst, &w, &start, limit, &start.x).unwrap();
                assert!(inst.feasible(&r.assignment).is_ok(), "seed {seed}");
                for (c, &on) in r.assignment.x.iter().enumerate() {
                    assert!(!on || start.x[c], "seed {seed}: candidate {c} outside");
                }
                assert_eq!(inst.cover(&r.assignment), inst.cover(&start));
                // Everything free: the same optimum as the whole model.
                let all = vec![true; inst.cands.len()];
                let within = milp::solve_within(&inst, &w, &start, limit, &all).unwrap();
                let whole = milp::solve(&inst, &w, &start, limit, None).unwrap();
                assert!(within.optimal && whole.optimal, "seed {seed}");
                assert_eq!(
                    inst.cover(&within.assignment),
                    inst.cover(&whole.assignment),
                    "seed {seed}"
                );
                searched += 1;
            }
        }
    }
    assert!(searched >= 20, "only {searched} instances with candidates");
}
