//! Large-neighbourhood search: HiGHS re-solves one neighbourhood of the plan at a time with every
//! other candidate held at its current value. A neighbourhood is a piece (the candidates of
//! demands and lessons that share candidates: one subject and grade here) or a bundle of pieces
//! whose point classes meet (the class-time and downlink rows tie them), or the classes of some
//! nearby points. Each re-solve closes in well under a second, where the whole model stalls on
//! finding plans.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::instance::{Assignment, GroupKind, Instance, Weights};
use super::milp;

/// Connected components of the demand–lesson graph (linked by candidates), as candidate lists.
/// The objective is separable over them; only capacity rows couple them.
pub fn pieces(inst: &Instance) -> Vec<Vec<usize>> {
    let nd = inst.demands.len();
    let mut parent: Vec<usize> = (0..nd + inst.lessons.len()).collect();
    fn root(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    for c in &inst.cands {
        let (u, v) = (
            root(&mut parent, c.demand),
            root(&mut parent, nd + c.lesson),
        );
        parent[u] = v;
    }
    let mut comp: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, c) in inst.cands.iter().enumerate() {
        let r = root(&mut parent, c.demand);
        comp.entry(r).or_default().push(i);
    }
    comp.into_values().collect()
}

/// Pieces merged while they share a coupling row (class time, once a day, downlink), up to
/// `max_cands` candidates per bundle: the couplings that stop a piece from moving alone.
pub fn bundles(inst: &Instance, pieces: &[Vec<usize>], max_cands: usize) -> Vec<Vec<usize>> {
    let mut piece_of = vec![0usize; inst.cands.len()];
    for (p, cs) in pieces.iter().enumerate() {
        for &c in cs {
            piece_of[c] = p;
        }
    }
    // How often each pair of pieces meets in a coupling row.
    let mut meet: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for g in &inst.groups {
        if !matches!(g.kind, GroupKind::ClassTime | GroupKind::Downlink) {
            continue;
        }
        let mut ps: Vec<usize> = g.cands.iter().map(|&c| piece_of[c]).collect();
        ps.sort_unstable();
        ps.dedup();
        for (i, &a) in ps.iter().enumerate() {
            for &b in &ps[i + 1..] {
                *meet.entry((a, b)).or_default() += 1;
            }
        }
    }
    let mut edges: Vec<((usize, usize), usize)> = meet.into_iter().collect();
    edges.sort_by_key(|&(k, n)| (std::cmp::Reverse(n), k));
    let mut parent: Vec<usize> = (0..pieces.len()).collect();
    let mut size: Vec<usize> = pieces.iter().map(|p| p.len()).collect();
    fn root(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    for ((a, b), _) in edges {
        let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
        if ra != rb && size[ra] + size[rb] <= max_cands {
            parent[rb] = ra;
            size[ra] += size[rb];
        }
    }
    let mut out: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (p, cs) in pieces.iter().enumerate() {
        let r = root(&mut parent, p);
        out.entry(r).or_default().extend(cs.iter().copied());
    }
    out.into_values().filter(|b| !b.is_empty()).collect()
}

/// Nearby point schools with everything their classes could receive, about `target` candidates
/// each: strips by latitude, then strips by longitude (so a school meets other neighbours in the
/// second family). A point's link and its classes' periods are shared by all its subjects and
/// grades, so these are the moves that pieces cannot make.
pub fn nearby(inst: &Instance, target: usize) -> Vec<Vec<usize>> {
    nearby_families(inst, target, 2)
}

/// Like `nearby`, with up to eight families of strips: by latitude, by longitude, along both
/// diagonals, then each of these shifted by half a strip. Each family cuts the points
/// elsewhere, so a move blocked at one family's strip boundary lies inside a strip of another.
pub fn nearby_families(inst: &Instance, target: usize, families: usize) -> Vec<Vec<usize>> {
    let mut of_school: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, c) in inst.cands.iter().enumerate() {
        of_school.entry(c.school).or_default().push(i);
    }
    let mut out = Vec::new();
    for family in 0..families.min(8) {
        let dir = family % 4;
        let shifted = family >= 4;
        let mut order: Vec<usize> = of_school.keys().copied().collect();
        let key = |s: &usize| {
            let at = inst.school_at[s];
            match dir {
                0 => at.lat,
                1 => at.lon,
                2 => at.lat + at.lon,
                _ => at.lat - at.lon,
            }
        };
        order.sort_by(|a, b| key(a).total_cmp(&key(b)).then(a.cmp(b)));
        let mut hood: Vec<usize> = Vec::new();
        // A shifted family closes its first strip at half the size.
        let mut first = if shifted { target / 2 } else { target };
        for s in order {
            hood.extend(of_school[&s].iter().copied());
            if hood.len() >= first {
                out.push(std::mem::take(&mut hood));
                first = target;
            }
        }
        if !hood.is_empty() {
            out.push(hood);
        }
    }
    out
}

/// Passes over `hoods` until a pass gains nothing, the cost reaches `floor` (a bound) or
/// `deadline`; each neighbourhood gets at most `per_hood`. Keeps a plan only when it is feasible,
/// keeps `min_cover` and lowers the cost in `w`.
#[allow(clippy::too_many_arguments)]
pub fn search(
    inst: &Instance,
    w: &Weights,
    start: &Assignment,
    hoods: &[Vec<usize>],
    min_cover: Option<f64>,
    floor: f64,
    deadline: Instant,
    per_hood: Duration,
    passes: usize,
) -> Assignment {
    let mut cur = start.clone();
    let mut cost = inst.cost(&cur, w);
    for pass in 0..passes {
        let before = cost;
        for hood in hoods {
            let left = deadline.saturating_duration_since(Instant::now());
            if left < Duration::from_millis(50) || cost <= floor + 0.5 {
                return cur;
            }
            let mut allowed = vec![false; inst.cands.len()];
            for &c in hood {
                allowed[c] = true;
            }
            let limit = per_hood.min(left);
            match milp::solve_masked(inst, w, Some(&cur), limit, min_cover, Some(&allowed)) {
                Ok(r) => {
                    let mut a = r.assignment;
                    inst.tidy(&mut a);
                    let c = inst.cost(&a, w);
                    let covered = min_cover.is_none_or(|m| inst.cover(&a) >= m - 0.5);
                    if c < cost - 0.5 && covered && inst.feasible(&a).is_ok() {
                        cur = a;
                        cost = c;
                    }
                }
                Err(e) => tracing::debug!(county = %inst.name, "neighbourhood failed: {e}"),
            }
        }
        tracing::debug!(county = %inst.name, pass, hoods = hoods.len(), before, after = cost, "neighbourhood pass");
        if cost > before - 0.5 {
            break;
        }
    }
    cur
}
