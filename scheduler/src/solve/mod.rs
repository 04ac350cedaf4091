//! Solving a region: counties independently and in parallel, each greedy, then neighbourhood
//! searches and the whole MILP per lexicographic stage; then the plan with lessons, pairings,
//! unmet periods and their reasons, and certified stats.

pub mod explain;
pub mod greedy;
pub mod instance;
pub mod lns;
pub mod milp;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
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
    // A little of the limit is kept for assembling the plan (a second or two on the stress
    // preset), so the whole call ends within it.
    let margin = opts.time_limit.mul_f64(0.02).min(Duration::from_secs(5));
    let deadline = started + opts.time_limit.saturating_sub(margin);
    let threads = rayon::current_num_threads().max(1);
    // Two passes over the counties: coverage everywhere first (it dominates the objective),
    // then with whatever time is left the lower terms (where coverage is not proven, at the
    // coverage found).
    for pass in 0..2 {
        // Coverage may use up to 90 % of the limit; the lower terms get the rest.
        let pass_end = if pass == 0 {
            started + opts.time_limit.mul_f64(0.9)
        } else {
            deadline
        };
        // Only counties with work in this pass take a share.
        let work = |p: &Part| {
            if !opts.greedy_only && !p.inst.cands.is_empty() {
                p.inst.cands.len()
            } else {
                0
            }
        };
        let schedule = Schedule::new(pass_end, threads, parts.iter().map(work).sum());
        // Fewer counties than threads (one county): a county may use a second thread.
        let spare = parts.iter().filter(|p| work(p) > 0).count() < threads;
        parts = parts
            .into_par_iter()
            .map(|mut part| {
                let size = work(&part);
                if size > 0 {
                    let began = Instant::now();
                    let (id, budget) = schedule.start(size);
                    let proven = part.cover_ub <= part.inst.cover(&part.assignment) + 0.5;
                    if pass == 0 {
                        improve_cover(&mut part, &w, budget, pass_end);
                    } else if proven {
                        improve_lower(&mut part, &w, budget, spare);
                    } else if part.cover_ub.is_finite() {
                        // Coverage still open. This pass's share (0.3-0.5 s a county on the
                        // province preset) is too short for the coverage search: its whole
                        // model needs seconds of root cuts before its bound moves, and on the
                        // province it found nothing here. Fewer lessons at the coverage found
                        // do lower the objective (8-18 lessons a county in that time).
                        fewer_lessons(&mut part, &w, budget);
                    }
                    schedule.finish(id);
                    tracing::debug!(county = %part.inst.name, pass, ?budget, took = ?began.elapsed(), "county done");
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

/// Shares a pass's wall-clock time between counties by size (candidates): a county starting now
/// gets its part of the thread-time left, less what the counties running on the other threads
/// still hold. So neither the big counties nor the last ones are squeezed.
struct Schedule {
    end: Instant,
    threads: u32,
    /// Size of the counties not started yet, and the deadlines of those running.
    state: Mutex<(usize, Vec<(usize, Instant)>)>,
    next: AtomicUsize,
}

impl Schedule {
    fn new(end: Instant, threads: usize, total: usize) -> Schedule {
        Schedule {
            end,
            threads: threads as u32,
            state: Mutex::new((total, Vec::new())),
            next: AtomicUsize::new(0),
        }
    }

    fn start(&self, size: usize) -> (usize, Duration) {
        let now = Instant::now();
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let waiting = st.0.max(size);
        st.0 = waiting - size;
        let left = self.end.saturating_duration_since(now);
        let held: Duration =
            st.1.iter()
                .map(|(_, e)| e.saturating_duration_since(now))
                .sum();
        let free = (left * self.threads).saturating_sub(held);
        let budget = free.mul_f64(size as f64 / waiting as f64).min(left);
        st.1.push((id, now + budget));
        (id, budget)
    }

    fn finish(&self, id: usize) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.1.retain(|(i, _)| *i != id);
    }
}

/// Least possible value of the lower terms among plans of weighted coverage at least `cover`:
/// every kept pairing counts negative, and the lessons are at least the fewest receiver periods
/// that reach `cover` (highest priorities first) over the most receivers a lesson can take. With
/// the lexicographic weights this term may be added to a coverage bound (`w.unmet` exceeds
/// `w.lesson` times any lesson count).
fn lower_min(inst: &Instance, w: &Weights, cover: f64) -> f64 {
    let kept = inst
        .demands
        .iter()
        .filter(|d| d.last_teacher.is_some())
        .count() as f64;
    -w.change * kept + w.lesson * lessons_floor(inst, cover) as f64
}

/// The fewest lessons any plan of weighted coverage `cover` holds (see `lower_min`).
pub fn lessons_floor(inst: &Instance, cover: f64) -> u64 {
    let mut units: Vec<(u32, u32)> = inst
        .demands
        .iter()
        .filter(|d| !d.cands.is_empty())
        .map(|d| (d.priority, d.periods.min(d.cands.len() as u32)))
        .collect();
    units.sort_by_key(|&(p, _)| std::cmp::Reverse(p));
    let (mut got, mut periods) = (0.0, 0u64);
    for (p, n) in units {
        if got >= cover - 0.5 || p == 0 {
            break;
        }
        let take = ((cover - got) / p as f64).ceil().min(n as f64).max(0.0);
        got += take * p as f64;
        periods += take as u64;
    }
    let k = inst
        .lessons
        .iter()
        .map(|l| l.cands.len())
        .max()
        .unwrap_or(0)
        .min(inst.max_receivers)
        .max(1) as u64;
    periods.div_ceil(k)
}

/// First solve of the lexicographic pair: weighted coverage alone, well scaled for HiGHS.
fn improve_cover(part: &mut Part, w: &Weights, budget: Duration, pass_end: Instant) {
    let t0 = Instant::now();
    let w1 = Weights::coverage_only();
    let best_cover = part.inst.cover(&part.assignment);
    let mut cover_ub = f64::INFINITY;
    // The LP is cheap and its bound is certified whatever the MILP manages in its time, so it
    // may run past the county's share (up to 20 s, within the pass; 2 s even when the pass is
    // over, since a county without it has no bound at all). Rounding it often lands
    // close to the optimum, which HiGHS then only has to confirm.
    let lp_limit = budget.mul_f64(0.3).max(
        pass_end
            .saturating_duration_since(t0)
            .clamp(Duration::from_secs(2), Duration::from_secs(20)),
    );
    if let Ok((values, lp)) = milp::relaxation(&part.inst, &w1, lp_limit) {
        let g = greedy::guided(&part.inst, &values);
        tracing::debug!(county = %part.inst.name, greedy = best_cover, guided = part.inst.cover(&g), lp = -lp, "rounding");
        // The LP optimum is a certified bound on its own, whatever happens to the MILP.
        if lp.is_finite() {
            cover_ub = (-lp + 1e-6).floor();
        }
        if part.inst.cover(&g) > best_cover {
            part.objective = part.inst.cost(&g, w);
            part.assignment = g;
        }
    }
    search_cover(part, w, cover_ub, t0, budget);
}

/// The search for a plan that reaches the coverage bound `cover_ub`, then the whole model for a
/// better bound; sets the county's bound.
fn search_cover(part: &mut Part, w: &Weights, mut cover_ub: f64, t0: Instant, budget: Duration) {
    let w1 = Weights::coverage_only();
    let mut best_cover = part.inst.cover(&part.assignment);
    // The LP's bound is usually tight (its floor is the optimum): the search is for a plan that
    // reaches it. Coverage is held back by the links and periods a point's classes share, so
    // HiGHS re-solves nearby points at a time, every subject and grade of theirs free and the
    // rest of the plan held (far faster than it finds plans in the whole model; better than a
    // neighbourhood on the LP's support, measured on the province preset). The whole model then
    // gets what is left, for the bound.
    if best_cover < cover_ub - 0.5 {
        let hoods = lns::nearby_families(&part.inst, 800, 8);
        let a = lns::search(
            &part.inst,
            &w1,
            &part.assignment,
            &hoods,
            None,
            -cover_ub,
            t0 + budget.mul_f64(0.5),
            budget.mul_f64(0.1),
            3,
        );
        if part.inst.cover(&a) > best_cover {
            let a = greedy::consolidate(&part.inst, &a);
            best_cover = part.inst.cover(&a);
            part.objective = part.inst.cost(&a, w);
            part.assignment = a;
        }
        tracing::debug!(county = %part.inst.name, cover = best_cover, cover_ub, "nearby points searched");
    }
    let set_bound = |part: &mut Part, ub: f64| {
        part.cover_ub = ub.max(part.inst.cover(&part.assignment));
        part.bound = if part.cover_ub.is_finite() {
            -w.unmet * part.cover_ub + lower_min(&part.inst, w, part.cover_ub)
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
    if part.inst.feasible(&a).is_ok() && part.inst.cover(&a) > best_cover {
        let a = greedy::consolidate(&part.inst, &a);
        part.objective = part.inst.cost(&a, w);
        part.assignment = a;
    }
    if r.bound.is_finite() {
        cover_ub = cover_ub.min((-r.bound + 1e-6).floor());
    }
    set_bound(part, cover_ub);
    tracing::debug!(county = %part.inst.name, rows = r.rows, cols = r.cols, optimal = r.optimal, milp_bound = r.bound, cover = part.inst.cover(&part.assignment), cover_ub, budget = ?budget, "coverage solved");
}

/// The lower terms' neighbourhood searches with coverage held at the plan's (not proven
/// optimal); the county's bound stays as the coverage search left it.
fn fewer_lessons(part: &mut Part, w: &Weights, budget: Duration) {
    if budget < Duration::from_millis(100) {
        return;
    }
    let cover = part.inst.cover(&part.assignment);
    let w2 = Weights { unmet: 0.0, ..*w };
    let a = lower_search(
        &part.inst,
        &w2,
        &part.assignment,
        cover,
        Instant::now(),
        budget,
        1.0,
        3,
        0.1,
    );
    let cost = part.inst.cost(&a, w);
    tracing::debug!(county = %part.inst.name, before = part.objective, after = cost, "fewer lessons at the coverage found");
    if cost < part.objective {
        part.objective = cost;
        part.assignment = a;
    }
}

/// Plans for the lower terms `w2` with weighted coverage held at `cover`: each piece (subject
/// and grade) alone, then bundles of pieces whose point classes meet and nearby points. `end` is
/// the share of `budget` (from `t0`) the searches may use, `per_hood` each bundle's limit: short,
/// so that a pass over all bundles completes (on the county preset one took 16-37 s with 1.7-3.4 s
/// each, none with 11 s).
#[allow(clippy::too_many_arguments)]
fn lower_search(
    inst: &Instance,
    w2: &Weights,
    start: &Assignment,
    cover: f64,
    t0: Instant,
    budget: Duration,
    end: f64,
    piece_passes: usize,
    per_hood: f64,
) -> Assignment {
    let pieces = lns::pieces(inst);
    let a = lns::search(
        inst,
        w2,
        start,
        &pieces,
        Some(cover),
        f64::NEG_INFINITY,
        t0 + budget.mul_f64(end * 0.6),
        budget.mul_f64(0.05).max(Duration::from_millis(500)),
        piece_passes,
    );
    let mut hoods = lns::bundles(inst, &pieces, 1000);
    hoods.extend(lns::nearby(inst, 500));
    lns::search(
        inst,
        w2,
        &a,
        &hoods,
        Some(cover),
        f64::NEG_INFINITY,
        t0 + budget.mul_f64(end),
        budget.mul_f64(per_hood).max(Duration::from_millis(500)),
        5,
    )
}

/// Second solve: the lower terms, with the proven-optimal coverage held. With a spare thread
/// (fewer counties than threads: the county preset) the whole model works on the bound on it for
/// the whole budget while the neighbourhood searches run here; otherwise the searches take the
/// first half and the whole model the rest (all of a share under 3 s).
fn improve_lower(part: &mut Part, w: &Weights, budget: Duration, spare: bool) {
    let best_cover = part.inst.cover(&part.assignment);
    if part.cover_ub > best_cover + 0.5 || budget < Duration::from_millis(100) {
        return;
    }
    let t0 = Instant::now();
    let lmin = lower_min(&part.inst, w, best_cover);
    part.bound = -w.unmet * best_cover + lmin;
    let w2 = Weights { unmet: 0.0, ..*w };
    let inst = &part.inst;
    let search = |start: &Assignment, end: f64, piece_passes: usize, per_hood: f64| {
        lower_search(
            inst,
            &w2,
            start,
            best_cover,
            t0,
            budget,
            end,
            piece_passes,
            per_hood,
        )
    };
    let (a, r2) = if spare {
        let start = part.assignment.clone();
        std::thread::scope(|s| {
            let bound = s.spawn(|| milp::solve(inst, &w2, &start, budget, Some(best_cover)));
            // Two passes over the pieces take most of what they can give (the third gained a
            // tenth of the second); the bundles then have the rest.
            let a = search(&start, 0.97, 2, 0.03);
            let r2 = bound
                .join()
                .unwrap_or_else(|_| Err(milp::MilpError::Highs("solver thread panicked".into())));
            (a, Some(r2))
        })
    } else {
        // The whole model needs seconds for its root LP on a province county; in the 0.3-0.5 s
        // a county gets there in a minute it ended with no bound in every county (measured), so
        // a short share goes to the searches alone.
        let whole = budget >= Duration::from_secs(3);
        let a = search(&part.assignment, if whole { 0.5 } else { 1.0 }, 3, 0.1);
        let r2 = whole.then(|| {
            milp::solve(
                inst,
                &w2,
                &a,
                budget.saturating_sub(t0.elapsed()),
                Some(best_cover),
            )
        });
        (a, r2)
    };
    let cost = part.inst.cost(&a, w);
    if cost < part.objective {
        part.objective = cost;
        part.assignment = a;
    }
    match r2 {
        None => {}
        Some(Ok(r2)) => {
            let mut a = r2.assignment;
            part.inst.tidy(&mut a);
            let cost = part.inst.cost(&a, w);
            if part.inst.feasible(&a).is_ok()
                && part.inst.cover(&a) >= best_cover - 0.5
                && cost <= part.objective + 1e-6
            {
                part.assignment = a;
                part.objective = cost;
            }
            part.bound = -w.unmet * best_cover + r2.bound.max(lmin);
        }
        Some(Err(e)) => tracing::warn!(county = %part.inst.name, "lower terms not improved: {e}"),
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
        if part.cover_ub <= inst.cover(s) + 0.5 {
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
