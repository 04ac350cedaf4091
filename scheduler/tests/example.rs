//! The README's example region stays valid, solves to a proven optimum, and explains its gaps.

use std::path::Path;

use scheduler::model::{load_region, Reason};
use scheduler::solve::{solve, SolveOptions};
use scheduler::validate::validate;

#[test]
fn readme_example_solves_and_explains() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/region-small.json");
    let region = load_region(&path).unwrap();
    let plan = solve(&region, &SolveOptions::default(), &|_, _| {});
    let rep = validate(&region, &plan);
    assert!(rep.ok(), "{:?}", rep.errors);
    assert_eq!(plan.stats.gap, 0.0);
    // Monday and Wednesday line up for both points; Friday's third period at p1 is five minutes
    // late (35 shared minutes) and p2 has no third period on Friday.
    assert_eq!(plan.lessons.len(), 2);
    assert!(plan.lessons.iter().all(|l| l.receivers.len() == 2));
    assert_eq!(plan.unmet.len(), 2);
    for u in &plan.unmet {
        assert_eq!(u.periods, 1);
        assert_eq!(u.reasons, vec![Reason::NoCommonWindow], "{u:?}");
    }
    // Solving is deterministic.
    let again = solve(&region, &SolveOptions::default(), &|_, _| {});
    assert_eq!(plan.lessons, again.lessons);
}
