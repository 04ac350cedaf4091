//! Solver plans for generated presets pass the independent validator; the county is optimal.

use std::time::Duration;

use scheduler::generate::{generate, Preset};
use scheduler::solve::{solve, SolveOptions};
use scheduler::validate::validate;

#[test]
fn county_plan_is_valid_and_coverage_optimal() {
    let region = generate(Preset::County, 1);
    let opts = SolveOptions {
        time_limit: Duration::from_secs(45),
        ..Default::default()
    };
    let plan = solve(&region, &opts, &|_, _| {});
    let rep = validate(&region, &plan);
    assert!(rep.ok(), "{:?}", &rep.errors[..rep.errors.len().min(10)]);
    assert!(
        plan.stats.coverage > 0.85,
        "coverage {}",
        plan.stats.coverage
    );
    // Coverage, the first objective, is proven optimal; the lower terms (fuller lessons) keep a
    // certified gap, small against the whole objective.
    assert_eq!(
        plan.stats.unmet_weighted_bound, plan.stats.terms.unmet_weighted,
        "{:?}",
        plan.stats
    );
    assert!(plan.stats.gap < 0.01, "gap {}", plan.stats.gap);
    assert!(plan.stats.bound <= plan.stats.objective);
    // Every unmet period says why.
    assert!(plan.unmet.iter().all(|u| !u.reasons.is_empty()));
    // Greedy alone is feasible but not better.
    let greedy = solve(
        &region,
        &SolveOptions {
            greedy_only: true,
            ..opts
        },
        &|_, _| {},
    );
    assert!(validate(&region, &greedy).ok());
    assert!(greedy.stats.objective >= plan.stats.objective);
}
