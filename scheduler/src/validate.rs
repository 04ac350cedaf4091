//! An independent check of a plan against its region: every hard rule, recomputed from the files
//! alone in real time (minutes), without the solver's instance or code; and the stats recomputed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::{Class, ObjectiveTerms, Plan, Region, SameCounty, School, SchoolKind, Teacher};

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub errors: Vec<String>,
    pub terms: ObjectiveTerms,
    pub objective: f64,
    pub coverage: f64,
    pub demand_periods: u64,
    pub met_periods: u64,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Who is busy when, per weekday: (interval in minutes, what).
type Busy<'a> = BTreeMap<(&'a str, u8), Vec<((u16, u16), String)>>;
/// Weighted intervals per (school or node, weekday).
type Load<'a> = BTreeMap<(&'a str, u8), Vec<(u16, u16, u64)>>;

/// Maximum of the summed weights of half-open intervals `[start, end)` that overlap at once.
fn peak(mut iv: Vec<(u16, u16, u64)>) -> u64 {
    let mut ev: Vec<(u16, i64)> = Vec::new();
    for (s, e, w) in iv.drain(..) {
        ev.push((s, w as i64));
        ev.push((e, -(w as i64)));
    }
    // Ends sort before starts at the same minute (negative deltas first).
    ev.sort();
    let (mut cur, mut best) = (0i64, 0i64);
    for (_, d) in ev {
        cur += d;
        best = best.max(cur);
    }
    best as u64
}

fn overlaps(a: (u16, u16), b: (u16, u16)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// The lexicographic weights, from the region alone.
pub fn weights(region: &Region) -> (f64, f64, f64, f64, f64) {
    let school_county: HashMap<&str, &str> = region
        .schools
        .iter()
        .map(|s| (s.id.as_str(), s.county.as_str()))
        .collect();
    let county_of: HashMap<&str, &str> = region
        .classes
        .iter()
        .filter_map(|c| {
            school_county
                .get(c.school.as_str())
                .map(|county| (c.id.as_str(), *county))
        })
        .collect();
    let last: BTreeSet<(&str, &str)> = region
        .options
        .last_term
        .iter()
        .map(|p| (p.point_class.as_str(), p.subject.as_str()))
        .collect();
    let penalty = region.options.same_county == SameCounty::Penalty;
    let mut per: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    for (c, subjects) in &region.demand {
        let key = if penalty {
            ""
        } else {
            county_of.get(c.as_str()).copied().unwrap_or("")
        };
        for (s, &n) in subjects {
            if n == 0 {
                continue;
            }
            let e = per.entry(key).or_default();
            e.0 += n as u64;
            e.1 += 1;
            e.2 += last.contains(&(c.as_str(), s.as_str())) as u64;
        }
    }
    let d = per.values().map(|v| v.0).max().unwrap_or(0) as f64;
    let pairs = per.values().map(|v| v.1).max().unwrap_or(0) as f64;
    let lt = per.values().map(|v| v.2).max().unwrap_or(0) as f64;
    let edge = 1.0;
    let lesson = d * edge + 1.0;
    let mut top = lesson + d * lesson;
    let change = if lt > 0.0 { top } else { 0.0 };
    top += lt * change;
    let cross = if penalty { top } else { 0.0 };
    if penalty {
        top += pairs * cross;
    }
    (top, cross, change, lesson, edge)
}

pub fn validate(region: &Region, plan: &Plan) -> Report {
    let mut err: Vec<String> = Vec::new();
    let o = &region.options;
    let len = o.lesson_minutes;
    let schools: HashMap<&str, &School> =
        region.schools.iter().map(|s| (s.id.as_str(), s)).collect();
    let classes: HashMap<&str, &Class> =
        region.classes.iter().map(|c| (c.id.as_str(), c)).collect();
    let teachers: HashMap<&str, &Teacher> =
        region.teachers.iter().map(|t| (t.id.as_str(), t)).collect();
    let timetable: BTreeSet<(&str, &str, &str, u8, u8)> = region
        .central_timetable
        .iter()
        .flatten()
        .map(|e| {
            (
                e.class.as_str(),
                e.subject.as_str(),
                e.teacher.as_str(),
                e.weekday,
                e.period,
            )
        })
        .collect();
    let node_of_county = |county: &str| -> Option<&str> {
        region
            .sfu_nodes
            .iter()
            .find(|n| n.counties.iter().any(|c| c == county))
            .or_else(|| region.sfu_nodes.iter().find(|n| n.counties.is_empty()))
            .map(|n| n.id.as_str())
    };

    // Busy intervals per (who, weekday) and loads, starting from the central timetable.
    let mut teacher_iv: Busy<'_> = BTreeMap::new();
    let mut teacher_week: HashMap<&str, u32> = HashMap::new();
    let mut teacher_day: HashMap<(&str, u8), u32> = HashMap::new();
    for e in region.central_timetable.iter().flatten() {
        let Some(c) = classes.get(e.class.as_str()) else {
            continue;
        };
        if let Some(b) = schools
            .get(c.school.as_str())
            .and_then(|s| s.bell(e.weekday, e.period))
        {
            teacher_iv
                .entry((e.teacher.as_str(), e.weekday))
                .or_default()
                .push((
                    (b.start.0, b.end.0),
                    format!("its timetabled {} with {}", e.subject, e.class),
                ));
        }
        *teacher_week.entry(&e.teacher).or_default() += 1;
        *teacher_day.entry((&e.teacher, e.weekday)).or_default() += 1;
    }
    let mut class_iv: Busy<'_> = BTreeMap::new();
    let mut down: Load<'_> = BTreeMap::new();
    let mut up: Load<'_> = BTreeMap::new();
    let mut sfu: Load<'_> = BTreeMap::new();
    let mut received: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    let mut per_day: BTreeMap<(&str, &str, u8), u32> = BTreeMap::new();
    let mut drivers: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    let mut terms = ObjectiveTerms::default();
    let mut ids = BTreeSet::new();
    let mut rooms = BTreeSet::new();

    for l in &plan.lessons {
        let at = format!("lesson {}", l.id);
        if !ids.insert(l.id.as_str()) {
            err.push(format!("{at}: duplicate lesson id"));
        }
        if !crate::model::is_room_name(&l.room) {
            err.push(format!("{at}: room {:?} is not a valid room name", l.room));
        }
        if !rooms.insert(l.room.as_str()) {
            err.push(format!("{at}: room {:?} used twice", l.room));
        }
        let Some(t) = teachers.get(l.teacher.as_str()) else {
            err.push(format!("{at}: unknown teacher {:?}", l.teacher));
            continue;
        };
        if !t.subjects.contains(&l.subject) {
            err.push(format!(
                "{at}: teacher {} does not teach {}",
                t.id, l.subject
            ));
        }
        let Some(host) = schools.get(t.school.as_str()) else {
            err.push(format!("{at}: teacher's school unknown"));
            continue;
        };
        if l.receivers.is_empty() {
            err.push(format!("{at}: no receivers"));
        }
        if l.receivers.len() > o.max_receivers as usize {
            err.push(format!(
                "{at}: {} receivers, more than {}",
                l.receivers.len(),
                o.max_receivers
            ));
        }
        if l.slots.len() != l.receivers.len() + 1 {
            err.push(format!(
                "{at}: {} slots for {} receivers",
                l.slots.len(),
                l.receivers.len()
            ));
            continue;
        }
        if BTreeSet::from_iter(&l.receivers).len() != l.receivers.len() {
            err.push(format!("{at}: a class receives it twice"));
        }
        // Every slot is a real bell of its school.
        let mut window = (0u16, u16::MAX);
        for (i, s) in l.slots.iter().enumerate() {
            let bell = schools
                .get(s.school.as_str())
                .and_then(|sc| sc.bell(l.weekday, s.period));
            match bell {
                Some(b) if b.start == s.start && b.end == s.end => {}
                _ => err.push(format!(
                    "{at}: slot {i} ({} period {} {}-{}) is not a bell of that school on weekday {}",
                    s.school, s.period, s.start, s.end, l.weekday
                )),
            }
            window = (window.0.max(s.start.0), window.1.min(s.end.0));
        }
        if window.1 < window.0 || window.1 - window.0 < len {
            err.push(format!(
                "{at}: host and receivers share {} minutes, less than the lesson's {len}",
                window.1.saturating_sub(window.0)
            ));
        }
        let hs = &l.slots[0];
        if hs.school != host.id {
            err.push(format!(
                "{at}: host slot at {} but the teacher is at {}",
                hs.school, host.id
            ));
        }
        let hiv = (hs.start.0, hs.end.0);
        match &l.host_class {
            Some(hc) => {
                match classes.get(hc.as_str()) {
                    Some(c) if c.school == host.id && c.grade == l.grade => {}
                    _ => err.push(format!(
                        "{at}: host class {hc} is not a grade {} class of {}",
                        l.grade, host.id
                    )),
                }
                if !timetable.contains(&(
                    hc.as_str(),
                    l.subject.as_str(),
                    l.teacher.as_str(),
                    l.weekday,
                    hs.period,
                )) {
                    err.push(format!("{at}: no such lesson in the central timetable"));
                }
            }
            None => {
                if !region.dedicated_allowed() {
                    err.push(format!(
                        "{at}: dedicated lessons are not allowed in this region"
                    ));
                }
                if !t.grades.is_empty() && !t.grades.contains(&l.grade) {
                    err.push(format!(
                        "{at}: teacher {} does not teach grade {}",
                        t.id, l.grade
                    ));
                }
                if t.unavailable
                    .iter()
                    .any(|u| u.weekday == l.weekday && u.period == hs.period)
                {
                    err.push(format!("{at}: teacher {} is unavailable then", t.id));
                }
                teacher_iv
                    .entry((t.id.as_str(), l.weekday))
                    .or_default()
                    .push((hiv, at.clone()));
                *teacher_week.entry(&t.id).or_default() += 1;
                *teacher_day.entry((&t.id, l.weekday)).or_default() += 1;
            }
        }
        up.entry((host.id.as_str(), l.weekday))
            .or_default()
            .push((hiv.0, hiv.1, 1));
        let want_node = node_of_county(&host.county);
        if l.sfu_node.as_deref() != want_node {
            err.push(format!(
                "{at}: on SFU node {:?}, expected {:?}",
                l.sfu_node, want_node
            ));
        }
        if let Some(n) = want_node {
            sfu.entry((n, l.weekday)).or_default().push((
                hiv.0,
                hiv.1,
                1 + l.receivers.len() as u64,
            ));
        }
        terms.lessons += 1;
        for (r, s) in l.receivers.iter().zip(&l.slots[1..]) {
            let Some(c) = classes.get(r.as_str()) else {
                err.push(format!("{at}: unknown receiver {r}"));
                continue;
            };
            let Some(ps) = schools.get(c.school.as_str()) else {
                continue;
            };
            if ps.kind != SchoolKind::Point {
                err.push(format!("{at}: receiver {r} is not at a teaching point"));
            }
            if s.school != c.school {
                err.push(format!("{at}: receiver {r}'s slot is at {}", s.school));
            }
            if c.grade != l.grade {
                err.push(format!(
                    "{at}: receiver {r} is grade {}, the lesson grade {}",
                    c.grade, l.grade
                ));
            }
            if o.same_county == SameCounty::Hard && ps.county != host.county {
                err.push(format!(
                    "{at}: receiver {r} is in county {}, the host in {}",
                    ps.county, host.county
                ));
            }
            class_iv
                .entry((r.as_str(), l.weekday))
                .or_default()
                .push(((s.start.0, s.end.0), at.clone()));
            down.entry((ps.id.as_str(), l.weekday))
                .or_default()
                .push((s.start.0, s.end.0, 1));
            *received
                .entry((r.as_str(), l.subject.as_str()))
                .or_default() += 1;
            *per_day
                .entry((r.as_str(), l.subject.as_str(), l.weekday))
                .or_default() += 1;
            drivers
                .entry((r.as_str(), l.subject.as_str()))
                .or_default()
                .insert(l.teacher.as_str());
            let n = ps.periods(l.weekday).map_or(0, |p| p.len());
            if s.period == 1 || s.period as usize == n {
                terms.edge_periods += 1;
            }
        }
    }

    for ((who, day), iv) in teacher_iv.iter().chain(class_iv.iter()) {
        for (i, a) in iv.iter().enumerate() {
            for b in &iv[i + 1..] {
                if overlaps(a.0, b.0) {
                    err.push(format!(
                        "{who} is in two places on weekday {day}: {} and {}",
                        a.1, b.1
                    ));
                }
            }
        }
    }
    for (t, n) in &teacher_week {
        if let Some(tt) = teachers.get(t) {
            if *n > tt.max_periods_week {
                err.push(format!(
                    "teacher {t}: {n} periods a week, above {}",
                    tt.max_periods_week
                ));
            }
        }
    }
    for ((t, d), n) in &teacher_day {
        if let Some(tt) = teachers.get(t) {
            if *n > tt.max_periods_day {
                err.push(format!(
                    "teacher {t}: {n} periods on weekday {d}, above {}",
                    tt.max_periods_day
                ));
            }
        }
    }
    let kbps = o.lesson_kbps as u64;
    for ((s, d), iv) in down {
        let p = peak(iv);
        if p * kbps > schools[s].downlink_kbps as u64 {
            err.push(format!(
                "school {s} weekday {d}: {p} lessons at once exceed downlink {} kbps",
                schools[s].downlink_kbps
            ));
        }
    }
    for ((s, d), iv) in up {
        let p = peak(iv);
        if p * kbps > schools[s].uplink_kbps as u64 {
            err.push(format!(
                "school {s} weekday {d}: {p} lessons at once exceed uplink {} kbps",
                schools[s].uplink_kbps
            ));
        }
    }
    for ((n, d), iv) in sfu {
        let p = peak(iv);
        let cap = region
            .sfu_nodes
            .iter()
            .find(|x| x.id == n)
            .map_or(0, |x| x.capacity) as u64;
        if p > cap {
            err.push(format!(
                "SFU node {n} weekday {d}: {p} classrooms at once, capacity {cap}"
            ));
        }
    }
    for ((c, s), ts) in &drivers {
        if ts.len() > 1 {
            err.push(format!(
                "class {c} has {} teachers for {s}: {ts:?}",
                ts.len()
            ));
        }
    }
    let derived: BTreeSet<(String, String, String)> = drivers
        .iter()
        .flat_map(|((c, s), ts)| {
            ts.iter()
                .map(move |t| (c.to_string(), s.to_string(), t.to_string()))
        })
        .collect();
    let listed: BTreeSet<(String, String, String)> = plan
        .pairings
        .iter()
        .map(|p| (p.point_class.clone(), p.subject.clone(), p.teacher.clone()))
        .collect();
    if derived != listed {
        err.push("pairings do not match the lessons".into());
    }
    let county = |class: &str| {
        classes
            .get(class)
            .and_then(|c| schools.get(c.school.as_str()))
            .map(|s| s.county.clone())
    };
    for (c, _, t) in &derived {
        let tc = teachers
            .get(t.as_str())
            .and_then(|t| schools.get(t.school.as_str()))
            .map(|s| s.county.clone());
        if tc != county(c) {
            terms.cross_county += 1;
        }
    }
    for p in &o.last_term {
        if region
            .demand
            .get(&p.point_class)
            .and_then(|m| m.get(&p.subject))
            .copied()
            .unwrap_or(0)
            == 0
        {
            continue;
        }
        if !derived.contains(&(p.point_class.clone(), p.subject.clone(), p.teacher.clone())) {
            terms.changes += 1;
        }
    }

    // Demand: never more than asked, once a day, and the unmet list exact.
    let mut unmet_expected: BTreeMap<(String, String), u32> = BTreeMap::new();
    let (mut total, mut met) = (0u64, 0u64);
    for (c, subjects) in &region.demand {
        let days = classes
            .get(c.as_str())
            .and_then(|cl| schools.get(cl.school.as_str()))
            .map_or(5, |s| s.weekdays().len().max(1)) as u32;
        for (s, &n) in subjects {
            if n == 0 {
                continue;
            }
            let got = received
                .get(&(c.as_str(), s.as_str()))
                .copied()
                .unwrap_or(0);
            if got > n {
                err.push(format!(
                    "class {c} receives {got} periods of {s}, demand is {n}"
                ));
            }
            total += n as u64;
            met += got.min(n) as u64;
            if got < n {
                unmet_expected.insert((c.clone(), s.clone()), n - got);
                terms.unmet_weighted += (n - got) as u64 * o.priority(s) as u64;
            }
            let cap = n.div_ceil(days).max(1);
            for d in 1..=7u8 {
                let k = per_day
                    .get(&(c.as_str(), s.as_str(), d))
                    .copied()
                    .unwrap_or(0);
                if k > cap {
                    err.push(format!(
                        "class {c} has {s} {k} times on weekday {d} (at most {cap})"
                    ));
                }
            }
        }
    }
    for (c, s) in received.keys() {
        if region
            .demand
            .get(*c)
            .and_then(|m| m.get(*s))
            .copied()
            .unwrap_or(0)
            == 0
        {
            err.push(format!("class {c} receives {s} without demand for it"));
        }
    }
    let unmet_listed: BTreeMap<(String, String), u32> = plan
        .unmet
        .iter()
        .map(|u| ((u.point_class.clone(), u.subject.clone()), u.periods))
        .collect();
    if unmet_listed != unmet_expected {
        err.push("the unmet list does not match demand minus lessons".into());
    }
    for u in &plan.unmet {
        if u.reasons.is_empty() {
            err.push(format!(
                "unmet {} {} has no reason",
                u.point_class, u.subject
            ));
        }
    }

    let (wu, wc, wch, wl, we) = weights(region);
    let objective = terms.unmet_weighted as f64 * wu
        + terms.cross_county as f64 * wc
        + terms.changes as f64 * wch
        + terms.lessons as f64 * wl
        + terms.edge_periods as f64 * we;
    let coverage = if total == 0 {
        1.0
    } else {
        met as f64 / total as f64
    };
    let st = &plan.stats;
    if st.terms != terms {
        err.push(format!(
            "stats.terms {:?} differ from recomputed {:?}",
            st.terms, terms
        ));
    }
    if (st.objective - objective).abs() > 1e-6 * objective.abs().max(1.0) {
        err.push(format!(
            "stats.objective {} differs from recomputed {objective}",
            st.objective
        ));
    }
    if (st.coverage - coverage).abs() > 1e-9 {
        err.push(format!(
            "stats.coverage {} differs from recomputed {coverage}",
            st.coverage
        ));
    }
    if st.bound > objective + 1e-6 * objective.abs().max(1.0) {
        err.push(format!(
            "stats.bound {} exceeds the objective {objective}",
            st.bound
        ));
    }
    if st.unmet_weighted_bound > terms.unmet_weighted {
        err.push(format!(
            "stats.unmet_weighted_bound {} exceeds the unmet {}",
            st.unmet_weighted_bound, terms.unmet_weighted
        ));
    }
    let gap = if objective.abs() < 1e-9 {
        0.0
    } else {
        ((objective - st.bound) / objective.abs()).max(0.0)
    };
    if (st.gap - gap).abs() > 1e-9 {
        err.push(format!(
            "stats.gap {} differs from recomputed {gap}",
            st.gap
        ));
    }
    Report {
        errors: err,
        terms,
        objective,
        coverage,
        demand_periods: total,
        met_periods: met,
    }
}
