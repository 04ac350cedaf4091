//! The lower-terms neighbourhood search: pieces split the candidates along what the objective
//! separates, a search over them keeps the plan feasible and its coverage, never costs more, and
//! the lesson floor used in the certified bound is below every plan's lesson count.

mod common;

use std::time::{Duration, Instant};

use scheduler::generate::{generate, Preset};
use scheduler::solve::instance::{self, Instance, Weights};
use scheduler::solve::{greedy, lessons_floor, lns, milp, weights};

fn lessons(a: &instance::Assignment) -> u64 {
    a.a.iter().filter(|&&b| b).count() as u64
}

fn check(region: &scheduler::model::Region, what: &str) -> (usize, usize) {
    let (mut searched, mut gained) = (0, 0);
    for counties in instance::components(region) {
        let inst: Instance = instance::build(region, &counties);
        if inst.cands.is_empty() {
            continue;
        }
        let pieces = lns::pieces(&inst);
        // A partition of the candidates in which no demand or lesson spans two pieces.
        let mut piece_of = vec![usize::MAX; inst.cands.len()];
        for (p, cs) in pieces.iter().enumerate() {
            for &c in cs {
                assert_eq!(piece_of[c], usize::MAX, "{what}: candidate {c} twice");
                piece_of[c] = p;
            }
        }
        assert!(piece_of.iter().all(|&p| p != usize::MAX), "{what}");
        for d in &inst.demands {
            assert!(d.cands.windows(2).all(|w| piece_of[w[0]] == piece_of[w[1]]));
        }
        for l in &inst.lessons {
            assert!(l.cands.windows(2).all(|w| piece_of[w[0]] == piece_of[w[1]]));
        }
        let bundles = lns::bundles(&inst, &pieces, 1000);
        assert_eq!(
            bundles.iter().map(|b| b.len()).sum::<usize>(),
            inst.cands.len(),
            "{what}: bundles cover every candidate once"
        );

        // Nearby points: two families (strips by latitude, then longitude), each a partition.
        let nearby = lns::nearby(&inst, 4);
        let mut seen = vec![0u32; inst.cands.len()];
        for c in nearby.iter().flatten() {
            seen[*c] += 1;
        }
        assert!(seen.iter().all(|&n| n == 2), "{what}: nearby covers twice");
        // Eight families (both axes, both diagonals, each also shifted by half a strip): each
        // still a partition, with the first families as `nearby` has them.
        let eight = lns::nearby_families(&inst, 4, 8);
        let mut seen = vec![0u32; inst.cands.len()];
        for c in eight.iter().flatten() {
            seen[*c] += 1;
        }
        assert!(seen.iter().all(|&n| n == 8), "{what}: eight families");
        assert!(
            eight.starts_with(&nearby),
            "{what}: first two families as nearby's"
        );
        for hood in nearby.iter().chain(&eight) {
            // A point's candidates are never split.
            for &c in hood {
                let school = inst.cands[c].school;
                let all = (0..inst.cands.len()).filter(|&o| inst.cands[o].school == school);
                assert!(all.clone().all(|o| hood.contains(&o)), "{what}");
            }
        }

        let w = weights(region, std::slice::from_ref(&inst));
        let lower = Weights { unmet: 0.0, ..w };
        let start = greedy::solve(&inst);
        let cover = inst.cover(&start);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut a = start.clone();
        for hoods in [&pieces, &bundles, &nearby] {
            a = lns::search(
                &inst,
                &lower,
                &a,
                hoods,
                Some(cover),
                f64::NEG_INFINITY,
                deadline,
                Duration::from_secs(20),
                3,
            );
        }
        assert!(inst.feasible(&a).is_ok(), "{what}");
        assert!(inst.cover(&a) >= cover, "{what}: coverage kept");
        assert!(
            inst.cost(&a, &lower) <= inst.cost(&start, &lower),
            "{what}: never worse"
        );
        gained += (inst.cost(&a, &lower) < inst.cost(&start, &lower)) as usize;
        // The floor holds for the plans at hand and for the best plan of that coverage.
        assert!(lessons_floor(&inst, cover) <= lessons(&start), "{what}");
        assert!(lessons_floor(&inst, cover) <= lessons(&a), "{what}");
        let best = milp::solve(&inst, &lower, &a, Duration::from_secs(60), Some(cover)).unwrap();
        if best.optimal {
            assert!(
                lessons_floor(&inst, cover) <= lessons(&best.assignment),
                "{what}"
            );
        }
        searched += 1;
    }
    (searched, gained)
}

#[test]
fn neighbourhood_search_keeps_coverage_and_never_costs_more() {
    let (mut searched, mut gained) = (0, 0);
    let mut add = |(s, g): (usize, usize)| {
        searched += s;
        gained += g;
    };
    for seed in 0..20 {
        for coplan in [false, true] {
            add(check(
                &common::tiny(seed, coplan),
                &format!("tiny {seed} {coplan}"),
            ));
        }
    }
    for seed in 1..=8 {
        add(check(
            &generate(Preset::Tiny, seed),
            &format!("preset tiny {seed}"),
        ));
    }
    assert!(searched >= 20, "only {searched} instances with candidates");
    // The greedy leaves lessons to merge somewhere: the search must find some of them.
    assert!(gained >= 1, "no instance improved ({searched} searched)");
    eprintln!("{gained} of {searched} improved");
}
