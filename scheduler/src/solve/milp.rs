//! The exact model: binaries x (class receives lesson in a period), a (lesson runs), y (teacher
//! drives class in subject), built with good_lp and solved by HiGHS, started from the greedy.

use std::time::Duration;

use good_lp::solvers::highs::highs;
use good_lp::{variable, Expression, ProblemVariables, SolverModel, Variable};
use highs::HighsModelStatus;

use super::instance::{Assignment, GroupKind, Instance, Weights};

#[derive(Debug, Clone)]
pub struct MilpResult {
    pub assignment: Assignment,
    /// Objective without the instance constant (see `Instance::constant`).
    pub objective: f64,
    /// HiGHS's dual bound on the same objective.
    pub bound: f64,
    pub optimal: bool,
    pub rows: usize,
    pub cols: usize,
    pub x_values: Vec<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum MilpError {
    #[error("HiGHS: {0}")]
    Highs(String),
}

/// Minimises `w` over the instance; with `min_cover`, only among assignments whose weighted
/// coverage (sum of priorities of taken candidates) is at least that.
pub fn solve(
    inst: &Instance,
    w: &Weights,
    start: &Assignment,
    time_limit: Duration,
    min_cover: Option<f64>,
) -> Result<MilpResult, MilpError> {
    build_and_solve(inst, w, Some(start), time_limit, min_cover, false, None)
}

/// The same model with every candidate outside `allowed` fixed to its value in `start`: a
/// neighbourhood of `start` small enough to search quickly. Its bound holds only inside.
pub fn solve_within(
    inst: &Instance,
    w: &Weights,
    start: &Assignment,
    time_limit: Duration,
    allowed: &[bool],
) -> Result<MilpResult, MilpError> {
    build_and_solve(inst, w, Some(start), time_limit, None, false, Some(allowed))
}

/// The general form: candidates outside `allowed` keep their value in `start` (0 without one),
/// `min_cover` holds a weighted coverage.
pub fn solve_masked(
    inst: &Instance,
    w: &Weights,
    start: Option<&Assignment>,
    time_limit: Duration,
    min_cover: Option<f64>,
    allowed: Option<&[bool]>,
) -> Result<MilpResult, MilpError> {
    build_and_solve(inst, w, start, time_limit, min_cover, false, allowed)
}

/// The LP relaxation's values of x (for rounding) and its bound.
pub fn relaxation(
    inst: &Instance,
    w: &Weights,
    time_limit: Duration,
) -> Result<(Vec<f64>, f64), MilpError> {
    let r = build_and_solve(inst, w, None, time_limit, None, true, None)?;
    Ok((r.x_values, r.bound))
}

fn build_and_solve(
    inst: &Instance,
    w: &Weights,
    start: Option<&Assignment>,
    time_limit: Duration,
    min_cover: Option<f64>,
    relax: bool,
    allowed: Option<&[bool]>,
) -> Result<MilpResult, MilpError> {
    let mut vars = ProblemVariables::new();
    let var = || {
        if relax {
            variable().min(0).max(1)
        } else {
            variable().binary()
        }
    };
    let x: Vec<Variable> = (0..inst.cands.len())
        .map(|c| {
            if allowed.is_some_and(|ok| !ok[c]) {
                // Outside the neighbourhood a candidate keeps its value in the start.
                let v = start.is_some_and(|s| s.x[c]) as u8 as f64;
                vars.add(var().min(v).max(v))
            } else {
                vars.add(var())
            }
        })
        .collect();
    let a: Vec<Variable> = inst.lessons.iter().map(|_| vars.add(var())).collect();
    let y: Vec<Variable> = inst.pairs.iter().map(|_| vars.add(var())).collect();

    let mut obj = Expression::default();
    for (i, c) in inst.cands.iter().enumerate() {
        let coef =
            -w.unmet * inst.demands[c.demand].priority as f64 + if c.edge { w.edge } else { 0.0 };
        obj.add_mul(coef, x[i]);
    }
    for (l, lesson) in inst.lessons.iter().enumerate() {
        if !lesson.cands.is_empty() {
            obj.add_mul(w.lesson, a[l]);
        }
    }
    for (p, pc) in inst.pairs.iter().enumerate() {
        let mut coef = 0.0;
        if pc.cross_county {
            coef += w.cross;
        }
        if inst.demands[pc.demand].last_teacher == Some(pc.teacher) {
            coef -= w.change;
        }
        if coef != 0.0 {
            obj.add_mul(coef, y[p]);
        }
    }

    let mut model = vars.minimise(obj).using(highs);
    let mut rows = 0;
    // x <= a, aggregated per lesson together with the receiver cap: sum x <= min(K, n) a.
    for (l, lesson) in inst.lessons.iter().enumerate() {
        if lesson.cands.is_empty() {
            continue;
        }
        let cap = inst.max_receivers.min(lesson.cands.len()) as f64;
        let e: Expression = lesson.cands.iter().map(|&c| x[c]).sum();
        model.add_constraint((e - cap * a[l]).leq(0));
        rows += 1;
        // When lessons are counted, x <= a per candidate gives the bound "a teacher gives at
        // least as many lessons as any one class takes from it".
        if w.lesson > 0.0 {
            for &c in &lesson.cands {
                model.add_constraint((x[c] - a[l]).leq(0));
                rows += 1;
            }
        }
    }
    // x <= y, aggregated per pairing and day with the once-a-day cap: as tight as one row per x
    // (x >= 0), and it makes the class's once-a-day row redundant.
    let mut by_pair_day: std::collections::BTreeMap<(usize, u8), Vec<usize>> = Default::default();
    for (i, c) in inst.cands.iter().enumerate() {
        by_pair_day
            .entry((c.pair, inst.lessons[c.lesson].weekday))
            .or_default()
            .push(i);
    }
    for ((p, _day), cs) in by_pair_day {
        let cap = (inst.per_day_cap(inst.pairs[p].demand) as usize).min(cs.len()) as f64;
        let e: Expression = cs.iter().map(|&c| x[c]).sum();
        model.add_constraint((e - cap * y[p]).leq(0));
        rows += 1;
    }
    for d in &inst.demands {
        if d.pairs.len() > 1 {
            let e: Expression = d.pairs.iter().map(|&p| y[p]).sum();
            model.add_constraint(e.leq(1));
            rows += 1;
        }
    }
    for g in &inst.groups {
        // Covered by the aggregated rows above.
        if matches!(g.kind, GroupKind::ReceiverCap) {
            continue;
        }
        if g.kind == GroupKind::OncePerDay && g.cap <= 1 {
            continue;
        }
        let e: Expression = g.cands.iter().map(|&c| x[c]).sum::<Expression>()
            + g.lessons.iter().map(|&l| a[l]).sum::<Expression>();
        model.add_constraint(e.leq(g.cap as f64));
        rows += 1;
    }
    // Conflicting receivers belong to one lesson: neither may run without it, so the pair's row
    // can carry the lesson (x_i + x_j <= a_l, stronger than <= 1 when lessons are counted).
    for &(i, j) in &inst.conflicts {
        let l = inst.cands[i].lesson;
        model.add_constraint((x[i] + x[j] - a[l]).leq(0));
        rows += 1;
    }
    if let Some(min) = min_cover {
        let e: Expression = inst
            .cands
            .iter()
            .enumerate()
            .map(|(i, c)| inst.demands[c.demand].priority as f64 * x[i])
            .sum();
        model.add_constraint(e.geq(min));
        rows += 1;
    }
    let cols = x.len() + a.len() + y.len();

    let mut hm = model.into_inner();
    if std::env::var_os("SCHEDULER_HIGHS_LOG").is_none() {
        hm.make_quiet();
    } else {
        hm.set_option("output_flag", true);
        hm.set_option("log_to_console", true);
    }
    hm.set_option("time_limit", time_limit.as_secs_f64().max(0.05));
    // Counties run in parallel, one HiGHS thread each; the objective is integral, so an absolute
    // gap below 1 proves optimality.
    hm.set_option("threads", 1);
    hm.set_option("mip_rel_gap", 0.0);
    hm.set_option("mip_abs_gap", 0.5);
    hm.set_option("random_seed", 7);
    if min_cover.is_some() && !relax {
        // With the coverage held, the root LP (lesson weights against one coverage row) takes
        // dual simplex 10-20 s on the county preset and the interior point method under 2 s.
        hm.set_option("mip_lp_solver", "ipm");
    }
    // Tuning hook: SCHEDULER_HIGHS_OPTS="name=value,name=value" (numbers, else strings).
    if let Ok(opts) = std::env::var("SCHEDULER_HIGHS_OPTS") {
        for kv in opts.split(',').filter(|s| !s.is_empty()) {
            if let Some((k, v)) = kv.split_once('=') {
                // A name HiGHS rejects (or a value of the wrong type) is skipped, not a panic.
                let set = if let Ok(i) = v.parse::<i32>() {
                    hm.try_set_option(k, i)
                } else if let Ok(f) = v.parse::<f64>() {
                    hm.try_set_option(k, f)
                } else {
                    hm.try_set_option(k, v)
                };
                if set.is_err() {
                    tracing::warn!(
                        option = k,
                        value = v,
                        "SCHEDULER_HIGHS_OPTS: HiGHS rejected this option"
                    );
                }
            }
        }
    }
    if let Some(start) = start {
        let mut init = Vec::with_capacity(cols);
        init.extend(start.x.iter().map(|&b| b as u8 as f64));
        init.extend(start.a.iter().map(|&b| b as u8 as f64));
        init.extend(start.y.iter().map(|&b| b as u8 as f64));
        hm.try_set_solution(Some(&init), None, None, None)
            .map_err(|e| MilpError::Highs(format!("initial solution: {e:?}")))?;
    }
    let solved = hm
        .try_solve()
        .map_err(|e| MilpError::Highs(format!("{e:?}")))?;
    let status = solved.status();
    // After the first statuses HiGHS leaves its solution info unset, and the highs crate panics
    // reading it (seen with `write_model_file` in SCHEDULER_HIGHS_OPTS: the model is written, not
    // solved), so the solution's status is read only after them.
    let unset = matches!(
        status,
        HighsModelStatus::NotSet
            | HighsModelStatus::LoadError
            | HighsModelStatus::ModelError
            | HighsModelStatus::PresolveError
            | HighsModelStatus::SolveError
            | HighsModelStatus::PostsolveError
            | HighsModelStatus::ModelEmpty
    );
    if unset || solved.primal_solution_status() != highs::HighsSolutionStatus::Feasible {
        return Err(MilpError::Highs(format!("no solution ({status:?})")));
    }
    let sol = solved.get_solution();
    let cols_v = sol.columns();
    // Columns are in the order the variables were added: x, then a, then y.
    let (nx, na) = (x.len(), a.len());
    let take = |from: usize, n: usize| -> Vec<bool> {
        cols_v[from..from + n].iter().map(|&v| v > 0.5).collect()
    };
    let assignment = Assignment {
        x: take(0, nx),
        a: take(nx, na),
        y: take(nx + na, y.len()),
    };
    let x_values = cols_v[..nx].to_vec();
    let objective = solved.objective_value();
    let optimal = status == HighsModelStatus::Optimal;
    if relax {
        // The LP optimum bounds the MILP (only when the LP itself was solved to optimality).
        let bound = if optimal {
            objective
        } else {
            f64::NEG_INFINITY
        };
        return Ok(MilpResult {
            assignment,
            objective,
            bound,
            optimal: false,
            rows,
            cols,
            x_values,
        });
    }
    let mut bound = solved
        .double_info_value(c"mip_dual_bound")
        .unwrap_or(f64::NEG_INFINITY);
    if !bound.is_finite() {
        // An empty model, or HiGHS solved it without branching: the LP is the MIP.
        bound = if optimal {
            objective
        } else {
            f64::NEG_INFINITY
        };
    }
    Ok(MilpResult {
        assignment,
        objective,
        bound: bound.min(objective),
        optimal,
        rows,
        cols,
        x_values,
    })
}
