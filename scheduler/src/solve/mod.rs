//! Solving a region: counties independently and in parallel, each greedy then MILP; then the plan
//! with lessons, pairings, unmet periods and their reasons, and certified stats.

pub mod explain;
pub mod greedy;
pub mod instance;
pub mod milp;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::model::{room_name, Lesson, ObjectiveTerms, Pairing, Plan, Region, Slot, Stats, Unmet};
use instance::{Assignment, Instance, Weights};

#[derive(Debug, Clone)]
pub struct SolveOptions {
    pub time_limit: Duration,
    /// Skip the MILP (greedy only); for comparisons.
    pub greedy_only: bool,
}

impl Default for SolveOptions {
    fn default() -> Self {
        SolveOptions {
            time_limit: Duration::from_secs(60),
            greedy_only: false,
        }
    }
}

/// The outcome for one county (or one connected group of counties).
#[derive(Debug, Clone)]
pub struct Part {
    pub inst: Instance,
    pub assignment: Assignment,
    pub objective: f64,
    pub bound: f64,
    pub optimal: bool,
    pub first_feasible: Duration,
    /// Proven upper bound on the weighted coverage (sum of priorities of met periods).
    pub cover_ub: f64,
}

pub fn weights(region: &Region, parts: &[Instance]) -> Weights {
    let demand = parts
        .iter()
        .map(|i| i.demands.iter().map(|d| d.periods as u64).sum::<u64>())
        .max()
        .unwrap_or(0);
    let pairs = parts
        .iter()
        .map(|i| i.demands.len() as u64)
        .max()
        .unwrap_or(0);
    let last = parts
        .iter()
        .map(|i| {
            i.demands
                .iter()
                .filter(|d| d.last_teacher.is_some())
                .count() as u64
        })
        .max()
        .unwrap_or(0);
    Weights::new(
        demand,
        pairs,
        last,
        region.options.same_county == crate::model::SameCounty::Penalty,
    )
}

/// Solves every county; `progress(done, total)` counts county solves (two passes per county).
pub fn solve(
    region: &Region,
    opts: &SolveOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Plan {
    let started = Instant::now();
    let comps = instance::components(region);
    // Greedy plans for every county first: the time to a first feasible plan for the region.
    let mut parts: Vec<Part> = comps
        .par_iter()
        .map(|counties| {
            let inst = instance::build(region, counties);
            let assignment = greedy::solve(&inst);
            Part {
                objective: 0.0,
                bound: f64::NEG_INFINITY,
                optimal: false,
                assignment,
                first_feasible: Duration::ZERO,
                cover_ub: f64::INFINITY,
                inst,
            }
        })
        .collect();
    let first_feasible = started.elapsed();
    let w = weights(
        region,
        &parts.iter().map(|p| p.inst.clone()).collect::<Vec<_>>(),
    );
    for p in &mut parts {
        p.objective = p.inst.cost(&p.assignment, &w);
        p.first_feasible = first_feasible;
        if p.inst.cands.is_empty() {
            p.bound = 0.0;
            p.optimal = true;
            p.cover_ub = 0.0;
        }
    }
    let total = parts.len();
    let done = AtomicUsize::new(0);
    progress(0, 2 * total);
    let deadline = started + opts.time_limit;
    let threads = rayon::current_num_threads().max(1);
    // Two passes over the counties: coverage everywhere first (it dominates the objective),
    // then the lower terms with whatever time is left.
    for pass in 0..2 {
        let begun = AtomicUsize::new(0);
        // Coverage may use up to 90 % of the limit; the lower terms get the rest.
        let pass_end = if pass == 0 {
            started + opts.time_limit.mul_f64(0.9)
        } else {
            deadline
        };
        parts = parts
            .into_par_iter()
            .map(|mut part| {
                // Each county gets its share of what is left, so the last ones are not starved.
                let waiting = total - begun.fetch_add(1, Ordering::SeqCst);
                let left = pass_end.saturating_duration_since(Instant::now());
                let budget = left.mul_f64((threads as f64 / waiting as f64).min(1.0));
                if !opts.greedy_only && !part.inst.cands.is_empty() {
                    if pass == 0 {
                        improve_cover(&mut part, &w, budget);
                    } else {
                        improve_lower(&mut part, &w, budget);
                    }
                }
                let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                progress(n, 2 * total);
                part
            })
            .collect();
    }
    progress(2 * total, 2 * total);
    assemble(region, &w, parts, started.elapsed())
}

fn cover(inst: &Instance, a: &Assignment) -> f64 {
    inst.cands
        .iter()
        .enumerate()
        .filter(|(i, _)| a.x[*i])
        .map(|(_, c)| inst.demands[c.demand].priority as f64)
        .sum()
}

/// Least possible value of the lower terms (kept pairings count negative).
fn lower_min(inst: &Instance, w: &Weights) -> f64 {
    -w.change
        * inst
            .demands
            .iter()
            .filter(|d| d.last_teacher.is_some())
            .count() as f64
}

/// First solve of the lexicographic pair: weighted coverage alone, well scaled for HiGHS.
fn improve_cover(part: &mut Part, w: &Weights, budget: Duration) {
    let t0 = Instant::now();
    let w1 = Weights {
        unmet: 1.0,
        cross: 0.0,
        change: 0.0,
        lesson: 0.0,
        edge: 0.0,
    };
    let mut best_cover = cover(&part.inst, &part.assignment);
    let mut cover_ub = f64::INFINITY;
    // The LP is cheap and its bound is certified whatever the MILP manages in its time, so it
    // always runs to the end. Rounding it often lands close to the optimum, which HiGHS then only has to confirm.
    if let Ok((values, lp)) = milp::relaxation(
        &part.inst,
        &w1,
        budget.mul_f64(0.3).max(Duration::from_secs(20)),
    ) {
        let g = greedy::guided(&part.inst, &values);
        tracing::debug!(county = %part.inst.name, greedy = best_cover, guided = cover(&part.inst, &g), lp = -lp, "rounding");
        // The LP optimum is a certified bound on its own, whatever happens to the MILP.
        if lp.is_finite() {
            cover_ub = (-lp + 1e-6).floor();
        }
        if cover(&part.inst, &g) > best_cover {
            best_cover = cover(&part.inst, &g);
            part.objective = part.inst.cost(&g, w);
            part.assignment = g;
        }
        // The LP's bound is usually tight (its floor is the optimum): the search is for a plan
        // that reaches it. The LP's support plus the current plan is a small neighbourhood that
        // HiGHS searches far faster than the whole model; the whole model then gets what is left.
        if best_cover < cover_ub - 0.5 {
            let allowed: Vec<bool> = (0..part.inst.cands.len())
                .map(|c| values[c] > 1e-6 || part.assignment.x[c])
                .collect();
            let t = budget.saturating_sub(t0.elapsed()).mul_f64(0.4);
            match milp::solve_within(&part.inst, &w1, &part.assignment, t, &allowed) {
                Ok(r) => {
                    let mut a = r.assignment;
                    part.inst.tidy(&mut a);
                    if part.inst.feasible(&a).is_ok() && cover(&part.inst, &a) > best_cover {
                        let a = greedy::consolidate(&part.inst, &a);
                        best_cover = cover(&part.inst, &a);
                        part.objective = part.inst.cost(&a, w);
                        part.assignment = a;
                    }
                    tracing::debug!(county = %part.inst.name, free = allowed.iter().filter(|&&b| b).count(), cover = best_cover, cover_ub, "neighbourhood searched");
                }
                Err(e) => {
                    tracing::debug!(county = %part.inst.name, "neighbourhood search failed: {e}")
                }
            }
        }
    }
    let set_bound = |part: &mut Part, ub: f64| {
        part.cover_ub = ub.max(cover(&part.inst, &part.assignment));
        part.bound = if part.cover_ub.is_finite() {
            -w.unmet * part.cover_ub + lower_min(&part.inst, w)
        } else {
            f64::NEG_INFINITY
        };
    };
    // Proven by the LP alone: the whole model has nothing left to find.
    if best_cover >= cover_ub - 0.5 {
        set_bound(part, cover_ub);
        tracing::debug!(county = %part.inst.name, cover = best_cover, "coverage proven by the LP bound");
        return;
    }
    let left = budget.saturating_sub(t0.elapsed());
    let r = match milp::solve(&part.inst, &w1, &part.assignment, left, None) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(county = %part.inst.name, "MILP failed, keeping the greedy plan: {e}");
            set_bound(part, cover_ub);
            return;
        }
    };
    let mut a = r.assignment;
    part.inst.tidy(&mut a);
    if part.inst.feasible(&a).is_ok() && cover(&part.inst, &a) > best_cover {
        let a = greedy::consolidate(&part.inst, &a);
        part.objective = part.inst.cost(&a, w);
        part.assignment = a;
    }
    if r.bound.is_finite() {
        cover_ub = cover_ub.min((-r.bound + 1e-6).floor());
    }
    set_bound(part, cover_ub);
    tracing::debug!(county = %part.inst.name, rows = r.rows, cols = r.cols, optimal = r.optimal, milp_bound = r.bound, cover = cover(&part.inst, &part.assignment), cover_ub, budget = ?budget, "coverage solved");
}

/// Second solve: the lower terms, with the proven-optimal coverage held.
fn improve_lower(part: &mut Part, w: &Weights, budget: Duration) {
    let best_cover = cover(&part.inst, &part.assignment);
    if part.cover_ub > best_cover + 0.5 || budget < Duration::from_millis(100) {
        return;
    }
    let lmin = lower_min(&part.inst, w);
    part.bound = -w.unmet * best_cover + lmin;
    let w2 = Weights { unmet: 0.0, ..*w };
    match milp::solve(&part.inst, &w2, &part.assignment, budget, Some(best_cover)) {
        Ok(r2) => {
            let mut a = r2.assignment;
            part.inst.tidy(&mut a);
            let cost = part.inst.cost(&a, w);
            if part.inst.feasible(&a).is_ok()
                && cover(&part.inst, &a) >= best_cover - 0.5
                && cost <= part.objective + 1e-6
            {
                part.assignment = a;
                part.objective = cost;
            }
            part.bound = -w.unmet * best_cover + r2.bound.max(lmin);
        }
        Err(e) => tracing::warn!(county = %part.inst.name, "lower terms not improved: {e}"),
    }
    part.optimal = part.objective - part.bound < 0.5;
}

fn assemble(region: &Region, w: &Weights, parts: Vec<Part>, elapsed: Duration) -> Plan {
    let mut lessons = Vec::new();
    let mut pairings = BTreeSet::new();
    let mut unmet = Vec::new();
    let mut terms = ObjectiveTerms::default();
    let (mut objective, mut bound) = (0.0, 0.0);
    let (mut demand_periods, mut met_periods) = (0u64, 0u64);
    let mut first_feasible = Duration::ZERO;
    let mut optimal = 0;
    let mut unmet_bound = 0u64;
    let mut coverage_optimal = 0u32;
    for part in &parts {
        let inst = &part.inst;
        let s = &part.assignment;
        let constant = inst.constant(w);
        objective += constant + part.objective;
        // The objective is integral, so the bound may be rounded up.
        bound += if part.bound.is_finite() {
            (constant + part.bound - 1e-6).ceil().max(0.0)
        } else {
            0.0
        };
        optimal += part.optimal as u32;
        let demanded: f64 = inst
            .demands
            .iter()
            .map(|d| d.priority as f64 * d.periods as f64)
            .sum();
        if part.cover_ub <= cover(inst, s) + 0.5 {
            coverage_optimal += 1;
        }
        if part.cover_ub.is_finite() {
            unmet_bound += (demanded - part.cover_ub).max(0.0).round() as u64;
        }
        first_feasible = first_feasible.max(part.first_feasible);
        for l in &inst.lessons {
            let recv: Vec<usize> = l.cands.iter().copied().filter(|&c| s.x[c]).collect();
            if recv.is_empty() {
                continue;
            }
            let t = &region.teachers[l.teacher];
            let host = &region.schools[l.host_school];
            let mut slots = vec![Slot {
                school: host.id.clone(),
                period: l.period,
                start: l.bell.start,
                end: l.bell.end,
            }];
            let mut receivers = Vec::new();
            for &c in &recv {
                let cand = &inst.cands[c];
                slots.push(Slot {
                    school: region.schools[cand.school].id.clone(),
                    period: cand.period,
                    start: cand.bell.start,
                    end: cand.bell.end,
                });
                receivers.push(region.classes[cand.class].id.clone());
                let d = &inst.demands[cand.demand];
                if cand.edge {
                    terms.edge_periods += 1;
                }
                pairings.insert(Pairing {
                    point_class: region.classes[d.class].id.clone(),
                    subject: d.subject.clone(),
                    teacher: t.id.clone(),
                });
            }
            terms.lessons += 1;
            let day = l.weekday.to_string();
            let per = l.period.to_string();
            let room = room_name(&[&host.id, &t.id, "d", &day, "p", &per]);
            lessons.push(Lesson {
                id: String::new(),
                subject: l.subject.clone(),
                grade: l.grade,
                teacher: t.id.clone(),
                host_class: l.host_class.map(|c| region.classes[c].id.clone()),
                weekday: l.weekday,
                slots,
                receivers,
                sfu_node: l.node.map(|n| region.sfu_nodes[n].id.clone()),
                room,
            });
        }
        for (p, pc) in inst.pairs.iter().enumerate() {
            if s.y[p] && pc.cross_county {
                terms.cross_county += 1;
            }
        }
        let reasons = explain::reasons(inst, s, part.optimal);
        for (di, d) in inst.demands.iter().enumerate() {
            let met = d.cands.iter().filter(|&&c| s.x[c]).count() as u32;
            demand_periods += d.periods as u64;
            met_periods += met.min(d.periods) as u64;
            let kept = d.last_teacher.is_some_and(|t| {
                d.pairs
                    .iter()
                    .any(|&p| s.y[p] && inst.pairs[p].teacher == t)
            });
            if d.last_teacher.is_some() && !kept {
                terms.changes += 1;
            }
            if met < d.periods {
                terms.unmet_weighted += (d.periods - met) as u64 * d.priority as u64;
                unmet.push(Unmet {
                    point_class: region.classes[d.class].id.clone(),
                    subject: d.subject.clone(),
                    periods: d.periods - met,
                    reasons: reasons[di].clone(),
                });
            }
        }
    }
    // Demands outside any county instance (a class of an unknown county cannot happen: every
    // school has a county) are covered above; sort for stable output.
    lessons.sort_by(|a, b| {
        (
            a.weekday,
            &a.slots[0].school,
            a.slots[0].period,
            &a.teacher,
            &a.host_class,
        )
            .cmp(&(
                b.weekday,
                &b.slots[0].school,
                b.slots[0].period,
                &b.teacher,
                &b.host_class,
            ))
    });
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for (i, l) in lessons.iter_mut().enumerate() {
        l.id = format!("L{:05}", i + 1);
        // Two dedicated lessons cannot share teacher and time, but keep rooms unique regardless.
        let n = seen.entry(l.room.clone()).or_default();
        *n += 1;
        if *n > 1 {
            l.room = room_name(&[&l.room, &n.to_string()]);
        }
    }
    unmet.sort_by(|a, b| (&a.point_class, &a.subject).cmp(&(&b.point_class, &b.subject)));
    let gap = if objective.abs() < 1e-9 {
        0.0
    } else {
        ((objective - bound) / objective.abs()).max(0.0)
    };
    Plan {
        region: region.name.clone(),
        mode: region.mode(),
        lessons,
        pairings: pairings.into_iter().collect(),
        unmet,
        stats: Stats {
            coverage: if demand_periods == 0 {
                1.0
            } else {
                met_periods as f64 / demand_periods as f64
            },
            objective,
            bound,
            gap,
            solve_seconds: elapsed.as_secs_f64(),
            first_feasible_seconds: first_feasible.as_secs_f64(),
            demand_periods,
            met_periods,
            terms,
            counties: parts.len() as u32,
            counties_optimal: optimal,
            unmet_weighted_bound: unmet_bound,
            counties_coverage_optimal: coverage_optimal,
        },
    }
}

/// Objective value of a plan's terms in the given weights (what the validator recomputes).
pub fn objective_of(terms: &ObjectiveTerms, w: &Weights) -> f64 {
    terms.unmet_weighted as f64 * w.unmet
        + terms.cross_county as f64 * w.cross
        + terms.changes as f64 * w.change
        + terms.lessons as f64 * w.lesson
        + terms.edge_periods as f64 * w.edge
}
