//! Bad input: schema errors name file, line and field; impossible regions give explained plans.

use scheduler::model::{region_from_str, Reason};
use scheduler::solve::{solve, SolveOptions};
use scheduler::validate::validate;

mod common;

#[test]
fn malformed_region_names_line_and_field() {
    let mut region = serde_json::to_string_pretty(&common::tiny(1, false)).unwrap();
    // Break one field deep inside: a school's downlink becomes a string.
    region = region.replacen("\"downlink_kbps\": 10000", "\"downlink_kbps\": \"fast\"", 1);
    let line = region.lines().position(|l| l.contains("\"fast\"")).unwrap() + 1;
    let msg = region_from_str("region.json", &region)
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with(&format!("region.json:{line}:")), "{msg}");
    assert!(msg.contains("schools[0].downlink_kbps"), "{msg}");

    let msg = region_from_str("r.json", "{\"schools\": [}")
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("r.json:1:"), "{msg}");

    let unknown = serde_json::to_string(&common::tiny(1, false))
        .unwrap()
        .replacen("\"grade\":", "\"grades_typo\":", 1);
    let msg = region_from_str("r.json", &unknown).unwrap_err().to_string();
    assert!(msg.contains("grades_typo"), "{msg}");
}

#[test]
fn contradictions_are_reported() {
    let mut r = common::tiny(3, false);
    r.teachers[0].max_periods_day = r.teachers[0].max_periods_week + 1;
    r.options.max_receivers = 9;
    let tt = r.central_timetable.as_mut().unwrap();
    if let Some(e) = tt.first().cloned() {
        tt.push(e);
    }
    let msg = region_from_str("r.json", &serde_json::to_string(&r).unwrap())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("exceeds max_periods_week"), "{msg}");
    assert!(msg.contains("max_receivers"), "{msg}");
    assert!(msg.contains("at the same time"), "{msg}");
}

#[test]
fn impossible_region_is_all_unmet_with_reasons() {
    let mut r = common::tiny(5, false);
    // Links too thin for any lesson, and a grade nobody teaches.
    for s in r.schools.iter_mut().filter(|s| s.id.starts_with('p')) {
        s.downlink_kbps = 500;
    }
    let first = r.demand.keys().next().unwrap().clone();
    let c = r.classes.iter_mut().find(|c| c.id == first).unwrap();
    c.grade = 6;
    for s in r.schools.iter_mut().filter(|s| s.id.starts_with('p')) {
        s.downlink_kbps = 500;
    }
    let plan = solve(&r, &SolveOptions::default(), &|_, _| {});
    assert!(plan.lessons.is_empty());
    assert_eq!(plan.stats.coverage, 0.0);
    let demanded: u32 = r.demand.values().flat_map(|m| m.values()).sum();
    assert_eq!(plan.unmet.iter().map(|u| u.periods).sum::<u32>(), demanded);
    assert!(
        plan.unmet
            .iter()
            .all(|u| u.reasons.contains(&Reason::Bandwidth)),
        "{:?}",
        plan.unmet
    );
    let rep = validate(&r, &plan);
    assert!(rep.ok(), "{:?}", rep.errors);

    // No teacher at all: every demand says so.
    let mut r = common::tiny(5, false);
    r.central_timetable = Some(vec![]);
    for s in &mut r.schools {
        s.downlink_kbps = 10000;
    }
    for t in &mut r.teachers {
        t.subjects = vec!["physics".into()];
    }
    let plan = solve(&r, &SolveOptions::default(), &|_, _| {});
    assert!(
        plan.unmet
            .iter()
            .all(|u| u.reasons == vec![Reason::NoTeacher]),
        "{:?}",
        plan.unmet
    );
    let rep = validate(&r, &plan);
    assert!(rep.ok(), "{:?}", rep.errors);
}

#[test]
fn validator_catches_broken_plans() {
    let r = common::tiny(2, false);
    let plan = solve(&r, &SolveOptions::default(), &|_, _| {});
    let rep = validate(&r, &plan);
    assert!(rep.ok(), "{:?}", rep.errors);
    let Some(l) = plan.lessons.first() else {
        return;
    };
    // Moving a receiver's slot to another period, or adding a receiver, must be caught.
    let mut bad = plan.clone();
    bad.lessons[0].slots[1].period = 9;
    assert!(!validate(&r, &bad).ok());
    let mut bad = plan.clone();
    bad.stats.objective -= 1.0;
    assert!(!validate(&r, &bad).ok());
    let mut bad = plan.clone();
    bad.lessons.push(l.clone());
    assert!(!validate(&r, &bad).ok());
}
