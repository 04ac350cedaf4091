//! A fast feasible start: classes and subjects in priority order, each given the teacher who can
//! cover the most of its periods, preferring lessons already running (fuller lessons).

use super::instance::{Assignment, Instance};

/// Incremental feasibility state over an instance's groups.
pub struct State<'a> {
    inst: &'a Instance,
    pub s: Assignment,
    used: Vec<i64>,
    receivers: Vec<Vec<usize>>,
}

impl<'a> State<'a> {
    pub fn new(inst: &'a Instance) -> Self {
        State {
            inst,
            s: inst.empty_assignment(),
            used: vec![0; inst.groups.len()],
            receivers: vec![vec![]; inst.lessons.len()],
        }
    }

    pub fn from(inst: &'a Instance, s: &Assignment) -> Self {
        let mut st = State::new(inst);
        for (i, &on) in s.x.iter().enumerate() {
            if on {
                st.add(i);
            }
        }
        st
    }

    /// Groups that would overflow if candidate `c` were added (empty: it fits).
    pub fn blocking(&self, c: usize) -> Vec<usize> {
        let inst = self.inst;
        let l = inst.cands[c].lesson;
        let mut out: Vec<usize> = inst.cand_groups[c]
            .iter()
            .copied()
            .filter(|&g| self.used[g] + 1 > inst.groups[g].cap)
            .collect();
        if !self.s.a[l] {
            for &g in &inst.lesson_groups[l] {
                // A server group holds both the lesson and the candidate: it needs room for two.
                let extra = 1 + inst.groups[g].cands.contains(&c) as i64;
                if self.used[g] + extra > inst.groups[g].cap && !out.contains(&g) {
                    out.push(g);
                }
            }
        }
        out
    }

    /// A receiver of the same lesson whose period does not share the lesson length with `c`.
    pub fn window_conflict(&self, c: usize) -> bool {
        let l = self.inst.cands[c].lesson;
        self.receivers[l]
            .iter()
            .any(|r| self.inst.cand_conflicts[c].contains(r))
    }

    /// The pairing chosen for `c`'s class and subject, if a different one.
    pub fn other_teacher(&self, c: usize) -> bool {
        let inst = self.inst;
        let cand = &inst.cands[c];
        inst.demands[cand.demand]
            .pairs
            .iter()
            .any(|&p| p != cand.pair && self.s.y[p])
    }

    pub fn fits(&self, c: usize) -> bool {
        !self.s.x[c]
            && !self.other_teacher(c)
            && !self.window_conflict(c)
            && self.blocking(c).is_empty()
    }

    pub fn add(&mut self, c: usize) {
        let inst = self.inst;
        let cand = &inst.cands[c];
        self.s.x[c] = true;
        self.s.y[cand.pair] = true;
        for &g in &inst.cand_groups[c] {
            self.used[g] += 1;
        }
        if !self.s.a[cand.lesson] {
            self.s.a[cand.lesson] = true;
            for &g in &inst.lesson_groups[cand.lesson] {
                self.used[g] += 1;
            }
        }
        self.receivers[cand.lesson].push(c);
    }

    /// Takes candidate `c` out again (the inverse of `add`).
    pub fn remove(&mut self, c: usize) {
        let inst = self.inst;
        let cand = &inst.cands[c];
        debug_assert!(self.s.x[c]);
        self.s.x[c] = false;
        for &g in &inst.cand_groups[c] {
            self.used[g] -= 1;
        }
        self.receivers[cand.lesson].retain(|&r| r != c);
        if self.receivers[cand.lesson].is_empty() {
            self.s.a[cand.lesson] = false;
            for &g in &inst.lesson_groups[cand.lesson] {
                self.used[g] -= 1;
            }
        }
        let still = inst.demands[cand.demand]
            .cands
            .iter()
            .any(|&o| self.s.x[o] && inst.cands[o].pair == cand.pair);
        self.s.y[cand.pair] = still;
    }

    pub fn met(&self, d: usize) -> u32 {
        self.inst.demands[d]
            .cands
            .iter()
            .filter(|&&c| self.s.x[c])
            .count() as u32
    }
}

pub fn solve(inst: &Instance) -> Assignment {
    let mut st = State::new(inst);
    let mut order: Vec<usize> = (0..inst.demands.len()).collect();
    // High priority first; then the most constrained (fewest candidates) first.
    order.sort_by_key(|&d| {
        (
            std::cmp::Reverse(inst.demands[d].priority),
            inst.demands[d].cands.len(),
            d,
        )
    });
    for d in order {
        let dem = &inst.demands[d];
        let mut best: Option<(u32, usize, Vec<usize>)> = None;
        for &p in &dem.pairs {
            let picks = trial(&mut st, d, p);
            let score = picks.len() as u32;
            let keep_last = dem.last_teacher == Some(inst.pairs[p].teacher);
            let better = match &best {
                None => score > 0,
                Some((b, bp, _)) => {
                    score > *b
                        || (score == *b
                            && keep_last
                            && dem.last_teacher != Some(inst.pairs[*bp].teacher))
                }
            };
            if better {
                best = Some((score, p, picks));
            }
        }
        if let Some((_, _, picks)) = best {
            for c in picks {
                st.add(c);
            }
        }
    }
    consolidate(inst, &augment(inst, &st.s))
}

/// Rounds an LP solution: candidates by falling LP value, each taken if it still fits and its
/// demand is not yet met; then the plain greedy fills what is left.
pub fn guided(inst: &Instance, values: &[f64]) -> Assignment {
    let mut st = State::new(inst);
    let mut order: Vec<usize> = (0..inst.cands.len())
        .filter(|&c| values[c] > 1e-6)
        .collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    for c in order {
        let d = inst.cands[c].demand;
        if st.met(d) < inst.demands[d].periods && st.fits(c) {
            st.add(c);
        }
    }
    for d in 0..inst.demands.len() {
        let dem = &inst.demands[d];
        for &c in &dem.cands {
            if st.met(d) >= dem.periods {
                break;
            }
            if st.fits(c) {
                st.add(c);
            }
        }
    }
    consolidate(inst, &augment(inst, &st.s))
}

/// Raises coverage by ejection chains of depth one: an unmet period takes a candidate whose only
/// obstacle is one taken candidate, which moves to another of its own candidates if it can.
pub fn augment(inst: &Instance, s: &Assignment) -> Assignment {
    let mut st = State::from(inst, s);
    let prio = |c: usize| inst.demands[inst.cands[c].demand].priority as i64;
    for _round in 0..5 {
        let mut improved = false;
        for d in 0..inst.demands.len() {
            let dem = &inst.demands[d];
            // Another teacher may cover more of this class's periods.
            if st.met(d) < dem.periods && dem.pairs.len() > 1 {
                let mine: Vec<usize> = dem.cands.iter().copied().filter(|&c| st.s.x[c]).collect();
                let before = mine.len();
                for &c in &mine {
                    st.remove(c);
                }
                let mut best: (usize, Vec<usize>) = (before, mine.clone());
                for &p in &dem.pairs {
                    let mut got = vec![];
                    for &c in &dem.cands {
                        if got.len() as u32 >= dem.periods {
                            break;
                        }
                        if inst.cands[c].pair == p && st.fits(c) {
                            st.add(c);
                            got.push(c);
                        }
                    }
                    for &c in &got {
                        st.remove(c);
                    }
                    if got.len() > best.0 {
                        best = (got.len(), got);
                    }
                }
                if best.0 > before {
                    improved = true;
                }
                for c in best.1 {
                    st.add(c);
                }
            }
            for &c in &dem.cands {
                if st.met(d) >= dem.periods {
                    break;
                }
                if st.s.x[c] || st.other_teacher(c) {
                    continue;
                }
                if st.fits(c) {
                    st.add(c);
                    improved = true;
                    continue;
                }
                // Candidates in the way: takers of the blocking groups and window conflicts.
                let mut in_way: Vec<usize> = Vec::new();
                for g in st.blocking(c) {
                    in_way.extend(inst.groups[g].cands.iter().copied().filter(|&k| st.s.x[k]));
                }
                in_way.extend(
                    inst.cand_conflicts[c]
                        .iter()
                        .copied()
                        .filter(|&k| st.s.x[k]),
                );
                in_way.sort_unstable();
                in_way.dedup();
                for k in in_way {
                    if inst.cands[k].demand == d {
                        continue;
                    }
                    st.remove(k);
                    if !st.fits(c) {
                        st.add(k);
                        continue;
                    }
                    st.add(c);
                    let kd = inst.cands[k].demand;
                    let alt = inst.demands[kd].cands.iter().copied().find(|&o| {
                        o != k && inst.cands[o].pair == inst.cands[k].pair && st.fits(o)
                    });
                    let gain = prio(c) - prio(k) + alt.map_or(0, |_| prio(k));
                    if gain > 0 {
                        if let Some(o) = alt {
                            st.add(o);
                        }
                        improved = true;
                        break;
                    }
                    st.remove(c);
                    st.add(k);
                }
            }
        }
        if !improved {
            break;
        }
    }
    st.s
}

/// Fuller lessons: empties a lesson whenever all its receivers fit into other running lessons of
/// the same teacher (same pairing, so coverage and pairings stay as they are).
pub fn consolidate(inst: &Instance, s: &Assignment) -> Assignment {
    let mut st = State::from(inst, s);
    loop {
        let mut improved = false;
        let mut order: Vec<usize> = (0..inst.lessons.len()).filter(|&l| st.s.a[l]).collect();
        order.sort_by_key(|&l| (st.receivers[l].len(), l));
        for l in order {
            if !st.s.a[l] {
                continue;
            }
            let moving = st.receivers[l].clone();
            for &c in &moving {
                st.remove(c);
            }
            let mut placed = Vec::new();
            let mut ok = true;
            for &c in &moving {
                let cand = &inst.cands[c];
                let alt = inst.demands[cand.demand].cands.iter().copied().find(|&o| {
                    let oc = &inst.cands[o];
                    oc.pair == cand.pair && oc.lesson != l && st.s.a[oc.lesson] && st.fits(o)
                });
                match alt {
                    Some(o) => {
                        st.add(o);
                        placed.push(o);
                    }
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                improved = true;
            } else {
                for o in placed {
                    st.remove(o);
                }
                for &c in &moving {
                    st.add(c);
                }
            }
        }
        if !improved {
            return st.s;
        }
    }
}

/// Which candidates of demand `d` with pairing `p` fit, chosen one by one (running lessons first);
/// the state is left as it was.
fn trial(st: &mut State, d: usize, p: usize) -> Vec<usize> {
    let inst = st.inst;
    let dem = &inst.demands[d];
    let mut cs: Vec<usize> = dem
        .cands
        .iter()
        .copied()
        .filter(|&c| inst.cands[c].pair == p)
        .collect();
    cs.sort_by_key(|&c| (!st.s.a[inst.cands[c].lesson], inst.cands[c].edge, c));
    let mut picks = Vec::new();
    for c in cs {
        if st.met(d) >= dem.periods {
            break;
        }
        if st.fits(c) {
            st.add(c);
            picks.push(c);
        }
    }
    for &c in picks.iter().rev() {
        st.remove(c);
    }
    picks
}
