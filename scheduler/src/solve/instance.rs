//! Turns one county of a region into a flat optimisation instance: candidate lessons, candidate
//! (lesson, point class, period) assignments, and capacity groups "sum of these <= cap". The greedy,
//! the MILP and the unmet-period explanation all read this one structure.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::{Bell, Location, Reason, Region, SameCounty, SchoolKind, SlotRef};

/// A lesson that may run: an existing central lesson (adopt) or a dedicated one (coplan).
#[derive(Debug, Clone)]
pub struct LessonCand {
    pub teacher: usize,
    /// Index into `region.classes` of the central class, for an existing lesson.
    pub host_class: Option<usize>,
    pub host_school: usize,
    pub subject: String,
    pub grade: u8,
    pub weekday: u8,
    pub period: u8,
    pub bell: Bell,
    pub node: Option<usize>,
    /// Indices of the candidates that receive this lesson.
    pub cands: Vec<usize>,
}

/// Point class `class` receives lesson `lesson` in its own period `period`.
#[derive(Debug, Clone)]
pub struct Cand {
    pub lesson: usize,
    pub demand: usize,
    pub pair: usize,
    pub class: usize,
    pub school: usize,
    pub period: u8,
    pub bell: Bell,
    pub edge: bool,
}

/// One (point class, subject) with its weekly periods.
#[derive(Debug, Clone)]
pub struct DemandCand {
    pub class: usize,
    pub subject: String,
    pub periods: u32,
    pub priority: u32,
    /// Reasons found while filtering candidates out (bandwidth, windows...).
    pub prefilter: BTreeSet<Reason>,
    pub pairs: Vec<usize>,
    pub cands: Vec<usize>,
    /// Teacher of last term's pairing, if any (a change costs unless it is kept).
    pub last_teacher: Option<usize>,
}

/// (demand, teacher): this teacher drives this class in this subject.
#[derive(Debug, Clone)]
pub struct PairCand {
    pub demand: usize,
    pub teacher: usize,
    pub cross_county: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupKind {
    Demand,
    ClassTime,
    OncePerDay,
    ReceiverCap,
    Downlink,
    Uplink,
    Server,
    TeacherTime,
    TeacherWeek,
    TeacherDay,
}

impl GroupKind {
    pub fn reason(self) -> Option<Reason> {
        Some(match self {
            GroupKind::Demand => return None,
            GroupKind::ClassTime => Reason::ClassBusy,
            GroupKind::OncePerDay => Reason::OncePerDay,
            GroupKind::ReceiverCap => Reason::ReceiverCap,
            GroupKind::Downlink | GroupKind::Uplink => Reason::Bandwidth,
            GroupKind::Server => Reason::ServerCapacity,
            GroupKind::TeacherTime => Reason::TeacherBusy,
            GroupKind::TeacherWeek | GroupKind::TeacherDay => Reason::TeacherLoad,
        })
    }
}

/// `sum(x[cands]) + sum(a[lessons]) <= cap`.
#[derive(Debug, Clone)]
pub struct Group {
    pub kind: GroupKind,
    pub cap: i64,
    pub cands: Vec<usize>,
    pub lessons: Vec<usize>,
}

/// Lexicographic weights of the objective terms (see `model::ObjectiveTerms`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub unmet: f64,
    pub cross: f64,
    pub change: f64,
    pub lesson: f64,
    pub edge: f64,
}

impl Weights {
    /// Each weight exceeds the largest possible sum of all lower terms, so the order is strict.
    /// `demand`, `pairs`, `last_term` are per-county maxima (counties are independent).
    pub fn new(demand: u64, pairs: u64, last_term: u64, cross_penalty: bool) -> Weights {
        let edge = 1.0;
        let mut top = demand as f64 * edge + 1.0;
        let lesson = top;
        top += demand as f64 * lesson;
        let change = if last_term > 0 { top } else { 0.0 };
        top += last_term as f64 * change;
        let cross = if cross_penalty { top } else { 0.0 };
        if cross_penalty {
            top += pairs as f64 * cross;
        }
        Weights {
            unmet: top,
            cross,
            change,
            lesson,
            edge,
        }
    }

    /// Weighted coverage alone (the first lexicographic stage), well scaled for HiGHS.
    pub fn coverage_only() -> Weights {
        Weights {
            unmet: 1.0,
            cross: 0.0,
            change: 0.0,
            lesson: 0.0,
            edge: 0.0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Instance {
    pub name: String,
    pub lessons: Vec<LessonCand>,
    pub cands: Vec<Cand>,
    pub demands: Vec<DemandCand>,
    pub pairs: Vec<PairCand>,
    pub groups: Vec<Group>,
    /// Pairs of candidates of one lesson whose periods share less than the lesson length.
    pub conflicts: Vec<(usize, usize)>,
    pub cand_groups: Vec<Vec<usize>>,
    pub lesson_groups: Vec<Vec<usize>>,
    pub cand_conflicts: Vec<Vec<usize>>,
    pub max_receivers: usize,
    /// Weekdays of each demand's point school, for the once-a-day rule.
    pub point_days: Vec<u32>,
    /// Where each school of a candidate lies (by school index), for neighbourhoods of nearby
    /// points.
    pub school_at: HashMap<usize, Location>,
}

fn overlap(a: Bell, b: Bell) -> u16 {
    let s = a.start.max(b.start).minutes();
    let e = a.end.min(b.end).minutes();
    e.saturating_sub(s)
}

/// The counties to solve independently: each county on its own, or the whole region as one
/// instance when cross-county pairings are allowed (penalty mode).
pub fn components(region: &Region) -> Vec<Vec<String>> {
    let counties: BTreeSet<&String> = region.schools.iter().map(|s| &s.county).collect();
    match region.options.same_county {
        SameCounty::Hard => counties.into_iter().map(|c| vec![c.clone()]).collect(),
        SameCounty::Penalty => vec![counties.into_iter().cloned().collect()],
    }
}

/// SFU node of each school (by county) and each node's capacity share for `counties`.
pub fn node_shares(region: &Region, counties: &[String]) -> (HashMap<String, usize>, Vec<i64>) {
    let mut home = HashMap::new();
    let all: BTreeSet<&String> = region.schools.iter().map(|s| &s.county).collect();
    for c in all {
        let n = region
            .sfu_nodes
            .iter()
            .position(|n| n.counties.contains(c))
            .or_else(|| region.sfu_nodes.iter().position(|n| n.counties.is_empty()));
        if let Some(n) = n {
            home.insert(c.clone(), n);
        }
    }
    // A node serving several counties is split by their point classes, so counties stay
    // independent; the sum of shares never exceeds the node's capacity.
    let mut weight: HashMap<&str, u64> = HashMap::new();
    let schools: HashMap<&str, &crate::model::School> =
        region.schools.iter().map(|s| (s.id.as_str(), s)).collect();
    for cl in &region.classes {
        if let Some(s) = schools.get(cl.school.as_str()) {
            if s.kind == SchoolKind::Point {
                *weight.entry(s.county.as_str()).or_default() += 1;
            }
        }
    }
    let shares = region
        .sfu_nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let served: Vec<&String> = home
                .iter()
                .filter(|(_, &h)| h == i)
                .map(|(c, _)| c)
                .collect();
            let total: u64 = served
                .iter()
                .map(|c| weight.get(c.as_str()).copied().unwrap_or(0).max(1))
                .sum();
            let mine: u64 = served
                .iter()
                .filter(|c| counties.contains(c))
                .map(|c| weight.get(c.as_str()).copied().unwrap_or(0).max(1))
                .sum();
            (n.capacity as u64 * mine).checked_div(total).unwrap_or(0) as i64
        })
        .collect();
    (home, shares)
}

/// A group being collected: capacity, candidates, lessons.
type GroupAcc = (i64, Vec<usize>, Vec<usize>);

pub fn build(region: &Region, counties: &[String]) -> Instance {
    let o = &region.options;
    let k = o.max_receivers as i64;
    let kbps = o.lesson_kbps.max(1) as u64;
    let len = o.lesson_minutes;
    let school_ix: HashMap<&str, usize> = region
        .schools
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let class_ix: HashMap<&str, usize> = region
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.as_str(), i))
        .collect();
    let teacher_ix: HashMap<&str, usize> = region
        .teachers
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    let in_scope = |school: usize| counties.contains(&region.schools[school].county);
    let (home, shares) = node_shares(region, counties);

    // Existing lessons, and what each teacher already teaches.
    let mut lessons: Vec<LessonCand> = Vec::new();
    let mut busy: HashMap<usize, BTreeSet<(u8, u8)>> = HashMap::new();
    let mut taught: HashMap<(usize, &str, u8), Vec<usize>> = HashMap::new();
    for e in region.central_timetable.iter().flatten() {
        let (Some(&c), Some(&t)) = (
            class_ix.get(e.class.as_str()),
            teacher_ix.get(e.teacher.as_str()),
        ) else {
            continue;
        };
        let school = school_ix[region.classes[c].school.as_str()];
        if !in_scope(school) {
            continue;
        }
        busy.entry(t).or_default().insert((e.weekday, e.period));
        let Some(bell) = region.schools[school].bell(e.weekday, e.period) else {
            continue;
        };
        let grade = region.classes[c].grade;
        taught
            .entry((t, e.subject.as_str(), grade))
            .or_default()
            .push(lessons.len());
        lessons.push(LessonCand {
            teacher: t,
            host_class: Some(c),
            host_school: school,
            subject: e.subject.clone(),
            grade,
            weekday: e.weekday,
            period: e.period,
            bell,
            node: home.get(&region.schools[school].county).copied(),
            cands: vec![],
        });
    }
    let dedicated = region.dedicated_allowed();
    let last: HashMap<(&str, &str), &str> = o
        .last_term
        .iter()
        .map(|p| {
            (
                (p.point_class.as_str(), p.subject.as_str()),
                p.teacher.as_str(),
            )
        })
        .collect();

    // Teachers of this instance by subject: the region may hold thousands.
    let mut by_subject: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, t) in region.teachers.iter().enumerate() {
        if school_ix
            .get(t.school.as_str())
            .is_some_and(|&s| in_scope(s))
        {
            for sub in &t.subjects {
                by_subject.entry(sub.as_str()).or_default().push(i);
            }
        }
    }
    let mut demands = Vec::new();
    let mut pairs = Vec::new();
    let mut cands: Vec<Cand> = Vec::new();
    let mut dedicated_ix: HashMap<(usize, u8, u8, String, u8), usize> = HashMap::new();
    let mut conflicts = Vec::new();

    for (cid, subjects) in &region.demand {
        let Some(&c) = class_ix.get(cid.as_str()) else {
            continue;
        };
        let class = &region.classes[c];
        let ps = school_ix[class.school.as_str()];
        let point = &region.schools[ps];
        if !in_scope(ps) {
            continue;
        }
        for (subject, &periods) in subjects {
            if periods == 0 {
                continue;
            }
            let d = demands.len();
            let mut dc = DemandCand {
                class: c,
                subject: subject.clone(),
                periods,
                priority: o.priority(subject),
                prefilter: BTreeSet::new(),
                pairs: vec![],
                cands: vec![],
                last_teacher: last
                    .get(&(cid.as_str(), subject.as_str()))
                    .and_then(|t| teacher_ix.get(t).copied()),
            };
            if (point.downlink_kbps as u64) < kbps {
                dc.prefilter.insert(Reason::Bandwidth);
                demands.push(dc);
                continue;
            }
            // Qualified teachers, nearest first; last term's teacher always stays in.
            let mut qualified: Vec<(f64, usize)> = by_subject
                .get(subject.as_str())
                .map_or(&[][..], |v| v.as_slice())
                .iter()
                .map(|&i| (i, &region.teachers[i]))
                .filter_map(|(i, t)| {
                    let ts = school_ix[t.school.as_str()];
                    if !in_scope(ts) {
                        return None;
                    }
                    if o.same_county == SameCounty::Hard
                        && region.schools[ts].county != point.county
                    {
                        return None;
                    }
                    let has_lessons = taught.contains_key(&(i, subject.as_str(), class.grade));
                    let may_dedicate =
                        dedicated && (t.grades.is_empty() || t.grades.contains(&class.grade));
                    (has_lessons || may_dedicate)
                        .then(|| (region.schools[ts].location.km(&point.location), i))
                })
                .collect();
            qualified.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            if qualified.is_empty() {
                dc.prefilter.insert(Reason::NoTeacher);
            }
            let keep = o.candidate_teachers.max(1) as usize;
            let chosen: Vec<usize> = qualified
                .iter()
                .enumerate()
                .filter(|(rank, (_, t))| *rank < keep || Some(*t) == dc.last_teacher)
                .map(|(_, (_, t))| *t)
                .collect();
            let mut any_window = false;
            let mut window_miss = false;
            for t in chosen {
                let teacher = &region.teachers[t];
                let ts = school_ix[teacher.school.as_str()];
                let host = &region.schools[ts];
                if (host.uplink_kbps as u64) < kbps {
                    dc.prefilter.insert(Reason::Bandwidth);
                    continue;
                }
                let p = pairs.len();
                let mut used = false;
                // Lessons this teacher could give: existing ones of this grade and subject,
                // then dedicated ones in free periods.
                let mut options: Vec<Option<usize>> = taught
                    .get(&(t, subject.as_str(), class.grade))
                    .map(|v| v.iter().map(|&l| Some(l)).collect())
                    .unwrap_or_default();
                let mut free = Vec::new();
                if dedicated && (teacher.grades.is_empty() || teacher.grades.contains(&class.grade))
                {
                    for day in host.weekdays() {
                        for (pi, _) in host.periods(day).unwrap_or(&[]).iter().enumerate() {
                            let per = pi as u8 + 1;
                            let slot = SlotRef {
                                weekday: day,
                                period: per,
                            };
                            let is_busy = busy.get(&t).is_some_and(|b| b.contains(&(day, per)));
                            if !is_busy && !teacher.unavailable.contains(&slot) {
                                free.push((day, per));
                                options.push(None);
                            }
                        }
                    }
                }
                let mut free_iter = free.into_iter();
                for opt in options {
                    let (day, per, bell) = match opt {
                        Some(l) => (lessons[l].weekday, lessons[l].period, lessons[l].bell),
                        None => {
                            let (day, per) = free_iter.next().expect("one per None");
                            (day, per, host.bell(day, per).expect("free period exists"))
                        }
                    };
                    let periods_today = point.periods(day).unwrap_or(&[]);
                    if !periods_today.iter().any(|&qb| overlap(bell, qb) >= len) {
                        // A lesson this class could have joined but for the bells.
                        window_miss = true;
                        continue;
                    }
                    for (qi, &qb) in periods_today.iter().enumerate() {
                        if overlap(bell, qb) < len {
                            continue;
                        }
                        any_window = true;
                        let l = match opt {
                            Some(l) => l,
                            None => {
                                let key = (t, day, per, subject.clone(), class.grade);
                                *dedicated_ix.entry(key).or_insert_with(|| {
                                    lessons.push(LessonCand {
                                        teacher: t,
                                        host_class: None,
                                        host_school: ts,
                                        subject: subject.clone(),
                                        grade: class.grade,
                                        weekday: day,
                                        period: per,
                                        bell,
                                        node: home.get(&host.county).copied(),
                                        cands: vec![],
                                    });
                                    lessons.len() - 1
                                })
                            }
                        };
                        let ci = cands.len();
                        cands.push(Cand {
                            lesson: l,
                            demand: d,
                            pair: p,
                            class: c,
                            school: ps,
                            period: qi as u8 + 1,
                            bell: qb,
                            edge: qi == 0 || qi + 1 == periods_today.len(),
                        });
                        lessons[l].cands.push(ci);
                        dc.cands.push(ci);
                        used = true;
                    }
                }
                if used {
                    pairs.push(PairCand {
                        demand: d,
                        teacher: t,
                        cross_county: host.county != point.county,
                    });
                    dc.pairs.push(p);
                }
            }
            if window_miss || (!any_window && !dc.prefilter.contains(&Reason::NoTeacher)) {
                dc.prefilter.insert(Reason::NoCommonWindow);
            }
            demands.push(dc);
        }
    }

    // Receivers of one lesson must share the lesson length with each other too: for intervals,
    // a common window of length L exists iff every pair (end_j - start_i) >= L.
    for l in &lessons {
        for (a, &i) in l.cands.iter().enumerate() {
            for &j in &l.cands[a + 1..] {
                let (bi, bj) = (cands[i].bell, cands[j].bell);
                let ok =
                    |x: Bell, y: Bell| y.end.minutes().saturating_sub(x.start.minutes()) >= len;
                let common = ok(bi, bj) && ok(bj, bi) && ok(l.bell, bi) && ok(l.bell, bj);
                let common = common && ok(bi, l.bell) && ok(bj, l.bell);
                if !common || cands[i].class == cands[j].class {
                    conflicts.push((i, j));
                }
            }
        }
    }

    // Capacity groups.
    let mut groups: Vec<Group> = Vec::new();
    let mut keyed: BTreeMap<(GroupKind, Vec<u64>), GroupAcc> = BTreeMap::new();
    let mut add =
        |kind: GroupKind, key: Vec<u64>, cap: i64, cand: Option<usize>, lesson: Option<usize>| {
            let e = keyed
                .entry((kind, key))
                .or_insert_with(|| (cap, vec![], vec![]));
            if let Some(c) = cand {
                e.1.push(c);
            }
            if let Some(l) = lesson {
                e.2.push(l);
            }
        };
    for (i, c) in cands.iter().enumerate() {
        let d = &demands[c.demand];
        let l = &lessons[c.lesson];
        let days = region.schools[c.school].weekdays().len().max(1) as u32;
        let per_day = d.periods.div_ceil(days).max(1) as i64;
        add(
            GroupKind::Demand,
            vec![c.demand as u64],
            d.periods as i64,
            Some(i),
            None,
        );
        add(
            GroupKind::ClassTime,
            vec![c.class as u64, l.weekday as u64, c.period as u64],
            1,
            Some(i),
            None,
        );
        add(
            GroupKind::OncePerDay,
            vec![c.demand as u64, l.weekday as u64],
            per_day,
            Some(i),
            None,
        );
        add(
            GroupKind::ReceiverCap,
            vec![c.lesson as u64],
            k,
            Some(i),
            None,
        );
        let down = region.schools[c.school].downlink_kbps as u64 / kbps;
        add(
            GroupKind::Downlink,
            vec![c.school as u64, l.weekday as u64, c.period as u64],
            down as i64,
            Some(i),
            None,
        );
    }
    // Server load is checked at every host-period start (the maximum of overlapping intervals
    // is reached at some interval's start).
    let mut starts: BTreeMap<(usize, u8), BTreeSet<u16>> = BTreeMap::new();
    for l in lessons.iter().filter(|l| !l.cands.is_empty()) {
        if let Some(n) = l.node {
            starts
                .entry((n, l.weekday))
                .or_default()
                .insert(l.bell.start.minutes());
        }
    }
    for (li, l) in lessons.iter().enumerate() {
        if l.cands.is_empty() {
            continue;
        }
        let up = region.schools[l.host_school].uplink_kbps as u64 / kbps;
        add(
            GroupKind::Uplink,
            vec![l.host_school as u64, l.weekday as u64, l.period as u64],
            up as i64,
            None,
            Some(li),
        );
        if let Some(n) = l.node {
            for &tau in &starts[&(n, l.weekday)] {
                if l.bell.start.minutes() <= tau && tau < l.bell.end.minutes() {
                    let key = vec![n as u64, l.weekday as u64, tau as u64];
                    add(GroupKind::Server, key.clone(), shares[n], None, Some(li));
                    for &c in &l.cands {
                        add(GroupKind::Server, key.clone(), shares[n], Some(c), None);
                    }
                }
            }
        }
        if l.host_class.is_none() {
            let t = &region.teachers[l.teacher];
            let had = busy.get(&l.teacher).map_or(0, |b| b.len()) as i64;
            let had_today = busy
                .get(&l.teacher)
                .map_or(0, |b| b.iter().filter(|(d, _)| *d == l.weekday).count())
                as i64;
            add(
                GroupKind::TeacherTime,
                vec![l.teacher as u64, l.weekday as u64, l.period as u64],
                1,
                None,
                Some(li),
            );
            add(
                GroupKind::TeacherWeek,
                vec![l.teacher as u64],
                t.max_periods_week as i64 - had,
                None,
                Some(li),
            );
            add(
                GroupKind::TeacherDay,
                vec![l.teacher as u64, l.weekday as u64],
                t.max_periods_day as i64 - had_today,
                None,
                Some(li),
            );
        }
    }
    for ((kind, _), (cap, cs, ls)) in keyed {
        // A group that can never bind is left out of the model.
        if (cs.len() + ls.len()) as i64 <= cap && kind != GroupKind::Demand {
            continue;
        }
        groups.push(Group {
            kind,
            cap,
            cands: cs,
            lessons: ls,
        });
    }
    let point_days: Vec<u32> = demands
        .iter()
        .map(|d| {
            let s = school_ix[region.classes[d.class].school.as_str()];
            region.schools[s].weekdays().len().max(1) as u32
        })
        .collect();
    let mut cand_groups = vec![vec![]; cands.len()];
    let mut lesson_groups = vec![vec![]; lessons.len()];
    for (g, gr) in groups.iter().enumerate() {
        for &c in &gr.cands {
            cand_groups[c].push(g);
        }
        for &l in &gr.lessons {
            lesson_groups[l].push(g);
        }
    }
    let mut cand_conflicts = vec![vec![]; cands.len()];
    for &(i, j) in &conflicts {
        cand_conflicts[i].push(j);
        cand_conflicts[j].push(i);
    }
    let school_at = cands
        .iter()
        .map(|c| (c.school, region.schools[c.school].location))
        .collect();
    Instance {
        name: counties.join("+"),
        lessons,
        cands,
        demands,
        pairs,
        groups,
        conflicts,
        cand_groups,
        lesson_groups,
        cand_conflicts,
        max_receivers: k as usize,
        point_days,
        school_at,
    }
}

/// A choice of candidates and lessons: what the greedy, the MILP and the explainer exchange.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    pub x: Vec<bool>,
    pub a: Vec<bool>,
    pub y: Vec<bool>,
}

impl Instance {
    /// Periods of a demand's subject allowed on one day: one, unless the week needs more.
    pub fn per_day_cap(&self, demand: usize) -> u32 {
        self.demands[demand]
            .periods
            .div_ceil(self.point_days[demand])
            .max(1)
    }

    pub fn empty_assignment(&self) -> Assignment {
        Assignment {
            x: vec![false; self.cands.len()],
            a: vec![false; self.lessons.len()],
            y: vec![false; self.pairs.len()],
        }
    }

    /// Sets `a` and `y` to exactly what the chosen candidates need.
    pub fn tidy(&self, s: &mut Assignment) {
        s.a.iter_mut().for_each(|v| *v = false);
        s.y.iter_mut().for_each(|v| *v = false);
        for (i, c) in self.cands.iter().enumerate() {
            if s.x[i] {
                s.a[c.lesson] = true;
                s.y[c.pair] = true;
            }
        }
    }

    /// Weighted coverage of an assignment: the sum of priorities of the taken candidates.
    pub fn cover(&self, a: &Assignment) -> f64 {
        self.cands
            .iter()
            .enumerate()
            .filter(|(i, _)| a.x[*i])
            .map(|(_, c)| self.demands[c.demand].priority as f64)
            .sum()
    }

    /// Objective value of an assignment (without the constant part), in the model's weights.
    pub fn cost(&self, s: &Assignment, w: &Weights) -> f64 {
        let mut v = 0.0;
        for (i, c) in self.cands.iter().enumerate() {
            if s.x[i] {
                v += -w.unmet * self.demands[c.demand].priority as f64
                    + if c.edge { w.edge } else { 0.0 };
            }
        }
        v += s.a.iter().filter(|&&b| b).count() as f64 * w.lesson;
        for (p, pc) in self.pairs.iter().enumerate() {
            if s.y[p] {
                if pc.cross_county {
                    v += w.cross;
                }
                if self.demands[pc.demand].last_teacher == Some(pc.teacher) {
                    v -= w.change;
                }
            }
        }
        v
    }

    /// The constant part of the objective: all demand unmet, all of last term changed.
    pub fn constant(&self, w: &Weights) -> f64 {
        self.demands
            .iter()
            .map(|d| {
                w.unmet * (d.priority as f64 * d.periods as f64)
                    + if d.last_teacher.is_some() {
                        w.change
                    } else {
                        0.0
                    }
            })
            .sum()
    }

    /// Checks every constraint of the instance; used by tests and as a guard on solver output.
    pub fn feasible(&self, s: &Assignment) -> Result<(), String> {
        for (gi, g) in self.groups.iter().enumerate() {
            let used = g.cands.iter().filter(|&&c| s.x[c]).count()
                + g.lessons.iter().filter(|&&l| s.a[l]).count();
            if used as i64 > g.cap {
                return Err(format!("group {gi} {:?} over capacity", g.kind));
            }
        }
        for &(i, j) in &self.conflicts {
            if s.x[i] && s.x[j] {
                return Err(format!("candidates {i} and {j} conflict"));
            }
        }
        for (i, c) in self.cands.iter().enumerate() {
            if s.x[i] && (!s.a[c.lesson] || !s.y[c.pair]) {
                return Err(format!("candidate {i} without its lesson or pairing"));
            }
        }
        for d in &self.demands {
            if d.pairs.iter().filter(|&&p| s.y[p]).count() > 1 {
                return Err("two teachers for one class and subject".into());
            }
        }
        Ok(())
    }
}
