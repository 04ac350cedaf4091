//! The solver's optimum equals an exhaustive search on tiny regions, in both modes.

mod common;

use scheduler::solve::{solve, SolveOptions};
use scheduler::validate::validate;

fn check(coplan: bool) {
    let mut compared = 0;
    for seed in 0..60 {
        let region = common::tiny(seed, coplan);
        assert!(
            scheduler::model::check_region(&region).is_empty(),
            "seed {seed}"
        );
        let plan = solve(&region, &SolveOptions::default(), &|_, _| {});
        let rep = validate(&region, &plan);
        assert!(rep.ok(), "seed {seed}: {:?}", rep.errors);
        let Some((best, n)) = common::brute_force(&region) else {
            continue;
        };
        assert_eq!(
            plan.stats.objective, best,
            "seed {seed} ({n} choices): solver vs brute force"
        );
        assert_eq!(plan.stats.gap, 0.0, "seed {seed}");
        if n > 3 {
            compared += 1;
        }
    }
    // The instances must be non-trivial for the comparison to mean something.
    assert!(
        compared >= 10,
        "only {compared} instances with more than three choices"
    );
}

#[test]
fn adopt_mode_matches_brute_force() {
    check(false);
}

#[test]
fn coplan_mode_matches_brute_force() {
    check(true);
}
