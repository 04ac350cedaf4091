//! Manual edits of a plan, pure and checked by the independent validator: moving a lesson to
//! another weekday and period, and re-solving around locked lessons.
//!
//! The solver has no notion of fixed lessons, so a re-solve works on a *derived* region: the
//! locked lessons' receivers need that many fewer periods, their teachers are unavailable at
//! those times (and carry that much less weekly load), joined timetable lessons are taken out of
//! the timetable, and the locked pairings become last term's pairings so the solver prefers to
//! keep them. The derived region cannot say "this point class is busy then" or "this link or SFU
//! node already carries a lesson then", so after merging, lessons the solver added that break a
//! rule together with the locked ones lose receivers (one at a time, the one whose removal
//! clears the most violations) until the validator accepts the plan.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{room_name, Lesson, Pairing, Plan, Reason, Region, Slot, SlotRef, Unmet};
use crate::validate::validate;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EditError {
    #[error("no lesson {0:?} in the plan")]
    UnknownLesson(String),
    #[error("the move breaks {} rule(s): {}", .0.len(), .0.join("; "))]
    Broken(Vec<String>),
}

/// Validator findings about the hard rules (the stats and the unmet list are recomputed after an
/// edit, so differences there are not violations).
pub fn hard_errors(region: &Region, plan: &Plan) -> Vec<String> {
    validate(region, plan)
        .errors
        .into_iter()
        .filter(|e| {
            !e.starts_with("stats.")
                && !e.starts_with("the unmet list")
                && !e.starts_with("unmet ")
                && e != "pairings do not match the lessons"
        })
        .collect()
}

fn minutes(b: (u16, u16)) -> u16 {
    b.1.saturating_sub(b.0)
}

/// Moves a lesson (all its classrooms) to `weekday` and the host's `period`; each receiver takes
/// its period that shares the most time with the host's. Rejected with the rules it would break.
pub fn move_lesson(
    region: &Region,
    plan: &Plan,
    lesson: &str,
    weekday: u8,
    period: u8,
) -> Result<Plan, EditError> {
    let i = plan
        .lessons
        .iter()
        .position(|l| l.id == lesson)
        .ok_or_else(|| EditError::UnknownLesson(lesson.to_string()))?;
    let school = |id: &str| region.schools.iter().find(|s| s.id == id);
    let class = |id: &str| region.classes.iter().find(|c| c.id == id);
    let l = &plan.lessons[i];
    let host_id = &l.slots[0].school;
    let Some(hb) = school(host_id).and_then(|s| s.bell(weekday, period)) else {
        return Err(EditError::Broken(vec![format!(
            "school {host_id} has no period {period} on weekday {weekday}"
        )]));
    };
    let mut slots = vec![Slot {
        school: host_id.clone(),
        period,
        start: hb.start,
        end: hb.end,
    }];
    let mut window = (hb.start.0, hb.end.0);
    let mut problems = Vec::new();
    for r in &l.receivers {
        let Some(s) = class(r).and_then(|c| school(&c.school)) else {
            problems.push(format!("receiver {r} is not a class of the region"));
            continue;
        };
        let best = s.periods(weekday).and_then(|ps| {
            ps.iter()
                .enumerate()
                .map(|(q, b)| {
                    let w = (window.0.max(b.start.0), window.1.min(b.end.0));
                    (minutes(w), q, *b, w)
                })
                .max_by_key(|(m, q, ..)| (*m, std::cmp::Reverse(*q)))
        });
        match best {
            Some((_, q, b, w)) => {
                window = w;
                slots.push(Slot {
                    school: s.id.clone(),
                    period: q as u8 + 1,
                    start: b.start,
                    end: b.end,
                });
            }
            None => problems.push(format!(
                "receiver {r}: school {} has no periods on weekday {weekday}",
                s.id
            )),
        }
    }
    if !problems.is_empty() {
        return Err(EditError::Broken(problems));
    }
    let before: BTreeSet<String> = hard_errors(region, plan).into_iter().collect();
    let mut out = plan.clone();
    out.lessons[i].weekday = weekday;
    out.lessons[i].slots = slots;
    let broken: Vec<String> = hard_errors(region, &out)
        .into_iter()
        .filter(|e| !before.contains(e))
        .collect();
    if !broken.is_empty() {
        return Err(EditError::Broken(broken));
    }
    restat(
        region,
        &mut out,
        plan.stats.bound,
        plan.stats.unmet_weighted_bound,
    );
    Ok(out)
}

/// Recomputes pairings and stats from the lessons (the validator's arithmetic). `bound` and
/// `unmet_bound` are certified lower bounds carried over (capped by what the plan achieves).
pub fn restat(region: &Region, plan: &mut Plan, bound: f64, unmet_bound: u64) {
    let mut pairings = BTreeSet::new();
    for l in &plan.lessons {
        for r in &l.receivers {
            pairings.insert(Pairing {
                point_class: r.clone(),
                subject: l.subject.clone(),
                teacher: l.teacher.clone(),
            });
        }
    }
    plan.pairings = pairings.into_iter().collect();
    let rep = validate(region, plan);
    let s = &mut plan.stats;
    s.terms = rep.terms;
    s.objective = rep.objective;
    s.coverage = rep.coverage;
    s.demand_periods = rep.demand_periods;
    s.met_periods = rep.met_periods;
    s.bound = bound.min(rep.objective);
    s.gap = if rep.objective.abs() < 1e-9 {
        0.0
    } else {
        ((rep.objective - s.bound) / rep.objective.abs()).max(0.0)
    };
    s.unmet_weighted_bound = unmet_bound.min(rep.terms.unmet_weighted);
    if s.gap > 0.0 {
        s.counties_optimal = 0;
    }
    if s.unmet_weighted_bound < s.terms.unmet_weighted {
        s.counties_coverage_optimal = 0;
    }
}

/// The region the solver sees when re-solving around `locked` lessons of `plan`.
pub fn derive_region(region: &Region, plan: &Plan, locked: &BTreeSet<String>) -> Region {
    let mut r = region.clone();
    let mut day_load: BTreeMap<(String, u8), u32> = BTreeMap::new();
    for l in plan.lessons.iter().filter(|l| locked.contains(&l.id)) {
        for c in &l.receivers {
            if let Some(m) = r.demand.get_mut(c) {
                if let Some(n) = m.get_mut(&l.subject) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        m.remove(&l.subject);
                    }
                }
                if m.is_empty() {
                    r.demand.remove(c);
                }
            }
            r.options
                .last_term
                .retain(|p| !(p.point_class == *c && p.subject == l.subject));
            r.options.last_term.push(Pairing {
                point_class: c.clone(),
                subject: l.subject.clone(),
                teacher: l.teacher.clone(),
            });
        }
        let host_period = l.slots[0].period;
        if let (Some(hc), Some(tt)) = (&l.host_class, r.central_timetable.as_mut()) {
            // The solver must not add receivers to (or re-create) a locked lesson.
            tt.retain(|e| {
                !(e.class == *hc
                    && e.teacher == l.teacher
                    && e.subject == l.subject
                    && e.weekday == l.weekday
                    && e.period == host_period)
            });
        }
        if let Some(t) = r.teachers.iter_mut().find(|t| t.id == l.teacher) {
            let slot = SlotRef {
                weekday: l.weekday,
                period: host_period,
            };
            if !t.unavailable.contains(&slot) {
                t.unavailable.push(slot);
            }
            t.max_periods_week = t.max_periods_week.saturating_sub(1);
            *day_load.entry((t.id.clone(), l.weekday)).or_default() += 1;
        }
    }
    // A day the locked lessons fill up is closed to the teacher; partly filled days are caught
    // by the repair after merging.
    for ((tid, day), n) in day_load {
        let Some(t) = r.teachers.iter_mut().find(|t| t.id == tid) else {
            continue;
        };
        if n >= t.max_periods_day {
            let periods = region
                .schools
                .iter()
                .find(|s| s.id == t.school)
                .and_then(|s| s.periods(day))
                .map_or(0, |p| p.len());
            for p in 1..=periods as u8 {
                let slot = SlotRef {
                    weekday: day,
                    period: p,
                };
                if !t.unavailable.contains(&slot) {
                    t.unavailable.push(slot);
                }
            }
        }
        t.max_periods_day = t.max_periods_day.min(t.max_periods_week);
    }
    for t in &mut r.teachers {
        t.max_periods_day = t.max_periods_day.min(t.max_periods_week);
    }
    r
}

/// What a repair removal says about the period it leaves unmet.
fn reason_of(error: &str) -> Reason {
    if error.contains("downlink") || error.contains("uplink") {
        Reason::Bandwidth
    } else if error.contains("SFU node") {
        Reason::ServerCapacity
    } else if error.contains("teachers for") {
        Reason::OneTeacher
    } else if error.contains("periods on weekday") || error.contains("periods a week") {
        Reason::TeacherLoad
    } else if error.contains("times on weekday") {
        Reason::OncePerDay
    } else if error.contains("receives") {
        Reason::ReceiverCap
    } else {
        Reason::ClassBusy
    }
}

/// Joins the locked lessons of `parent` with the lessons `solved` found for the derived region,
/// repairs clashes between them, renumbers the new lessons around the locked ids, and recomputes
/// pairings, unmet periods and stats against the real region.
pub fn merge(region: &Region, parent: &Plan, locked: &BTreeSet<String>, solved: Plan) -> Plan {
    let kept: Vec<Lesson> = parent
        .lessons
        .iter()
        .filter(|l| locked.contains(&l.id))
        .cloned()
        .collect();
    let n_kept = kept.len();
    let mut plan = Plan {
        region: parent.region.clone(),
        mode: parent.mode,
        lessons: kept,
        pairings: vec![],
        unmet: vec![],
        stats: solved.stats.clone(),
    };
    let mut used_ids: BTreeSet<String> = plan.lessons.iter().map(|l| l.id.clone()).collect();
    let mut used_rooms: BTreeSet<String> = plan.lessons.iter().map(|l| l.room.clone()).collect();
    let mut next = 1;
    for mut l in solved.lessons {
        while used_ids.contains(&format!("L{next:05}")) {
            next += 1;
        }
        l.id = format!("L{next:05}");
        used_ids.insert(l.id.clone());
        let mut k = 2;
        let base = l.room.clone();
        while used_rooms.contains(&l.room) {
            l.room = room_name(&[&base, &k.to_string()]);
            k += 1;
        }
        used_rooms.insert(l.room.clone());
        plan.lessons.push(l);
    }

    // Counties are independent when pairings must stay in the county: clashes with the locked
    // lessons can only arise in their counties, so the repair validates just those lessons.
    let county_of = |school: &str| {
        region
            .schools
            .iter()
            .find(|s| s.id == school)
            .map(|s| s.county.clone())
    };
    let touched: BTreeSet<Option<String>> = plan.lessons[..n_kept]
        .iter()
        .map(|l| county_of(&l.slots[0].school))
        .collect();
    let mut outside = Vec::new();
    if region.options.same_county == crate::model::SameCounty::Hard {
        let (inside, out): (Vec<Lesson>, Vec<Lesson>) = plan
            .lessons
            .drain(n_kept..)
            .partition(|l| touched.contains(&county_of(&l.slots[0].school)));
        plan.lessons.extend(inside);
        outside = out;
    }

    // Repair: drop receivers of new lessons until the hard rules hold. Only lessons a finding
    // names (by id, or by who and which weekday) are tried, so this stays cheap on big plans.
    let mut extra: BTreeMap<(String, String), BTreeSet<Reason>> = BTreeMap::new();
    let t0 = std::time::Instant::now();
    let mut trials = 0usize;
    // One teacher per class and subject: the locked lessons' teacher wins; the class leaves new
    // lessons of any other teacher in that subject (the refill may seat it with the right one).
    let locked_teacher: BTreeMap<(String, String), String> = plan.lessons[..n_kept]
        .iter()
        .flat_map(|l| {
            l.receivers
                .iter()
                .map(|r| ((r.clone(), l.subject.clone()), l.teacher.clone()))
        })
        .collect();
    for li in (n_kept..plan.lessons.len()).rev() {
        for ri in (0..plan.lessons[li].receivers.len()).rev() {
            let l = &plan.lessons[li];
            let key = (l.receivers[ri].clone(), l.subject.clone());
            if locked_teacher.get(&key).is_some_and(|t| *t != l.teacher) {
                extra.entry(key).or_default().insert(Reason::OneTeacher);
                drop_receiver(&mut plan, li, ri);
            }
        }
    }
    let mut errors = hard_errors(region, &plan);
    let initial_errors = errors.len();
    while !errors.is_empty() {
        let mut best: Option<(usize, usize, usize, Plan)> = None;
        let first = suspects(&plan, n_kept, &errors[..1]);
        let all = || suspects(&plan, n_kept, &errors);
        for cands in [first.clone(), all()] {
            for &li in &cands {
                for ri in 0..plan.lessons[li].receivers.len() {
                    let mut trial = plan.clone();
                    drop_receiver(&mut trial, li, ri);
                    let n = hard_errors(region, &trial).len();
                    trials += 1;
                    // First improvement: trials cost a validation of the whole plan each.
                    if n < errors.len() {
                        best = Some((n, li, ri, trial));
                        break;
                    }
                }
                if best.is_some() {
                    break;
                }
            }
            if best.is_some() {
                break;
            }
        }
        let Some((_, li, ri, trial)) = best else {
            tracing::warn!(?errors, "re-solve: clashes with the locked lessons remain");
            break;
        };
        let l = &plan.lessons[li];
        let key = (l.receivers[ri].clone(), l.subject.clone());
        extra.entry(key).or_default().insert(reason_of(&errors[0]));
        plan = trial;
        errors = hard_errors(region, &plan);
    }
    restat(region, &mut plan, 0.0, 0);

    let dropped: BTreeSet<(String, String)> = extra.keys().cloned().collect();
    let t1 = std::time::Instant::now();
    refill(region, &mut plan, n_kept, &dropped, &used_ids, &used_rooms);
    plan.lessons.extend(outside);
    tracing::info!(
        initial_errors,
        trials,
        dropped = dropped.len(),
        repair_s = (t1 - t0).as_secs_f64(),
        refill_s = t1.elapsed().as_secs_f64(),
        "re-solve repaired"
    );

    // Unmet periods against the real demand, with the solver's reasons where it gave them.
    let mut got: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    for l in &plan.lessons {
        for r in &l.receivers {
            *got.entry((r.as_str(), l.subject.as_str())).or_default() += 1;
        }
    }
    let solver_reasons: BTreeMap<(&str, &str), &Vec<Reason>> = solved
        .unmet
        .iter()
        .map(|u| ((u.point_class.as_str(), u.subject.as_str()), &u.reasons))
        .collect();
    let mut unmet = Vec::new();
    for (c, subjects) in &region.demand {
        for (s, &n) in subjects {
            let g = got.get(&(c.as_str(), s.as_str())).copied().unwrap_or(0);
            if n == 0 || g >= n {
                continue;
            }
            let mut reasons: BTreeSet<Reason> = solver_reasons
                .get(&(c.as_str(), s.as_str()))
                .map(|r| r.iter().copied().collect())
                .unwrap_or_default();
            reasons.extend(extra.get(&(c.clone(), s.clone())).into_iter().flatten());
            if reasons.is_empty() {
                reasons.insert(Reason::ClassBusy);
            }
            unmet.push(Unmet {
                point_class: c.clone(),
                subject: s.clone(),
                periods: n - g,
                reasons: reasons.into_iter().collect(),
            });
        }
    }
    plan.unmet = unmet;
    plan.lessons.sort_by(|a, b| {
        (a.weekday, &a.slots[0].school, a.slots[0].period, &a.id).cmp(&(
            b.weekday,
            &b.slots[0].school,
            b.slots[0].period,
            &b.id,
        ))
    });
    // Bounds of the unconstrained region stay valid lower bounds with locks.
    restat(
        region,
        &mut plan,
        parent.stats.bound,
        parent.stats.unmet_weighted_bound,
    );
    // The parent holds the locked lessons as they are; when it is valid and better (or the merge
    // failed), the re-solve keeps it rather than hand back a worse or broken plan.
    let mut kept = parent.clone();
    restat(
        region,
        &mut kept,
        parent.stats.bound,
        parent.stats.unmet_weighted_bound,
    );
    let merged_ok = hard_errors(region, &plan).is_empty();
    if !merged_ok {
        tracing::warn!("re-solve: merged plan breaks rules; keeping the plan it started from");
    }
    if (!merged_ok || kept.stats.objective < plan.stats.objective - 1e-6)
        && validate(region, &kept).ok()
    {
        tracing::info!(
            merged = plan.stats.objective,
            started_from = kept.stats.objective,
            "re-solve: keeping the plan it started from"
        );
        kept.stats.solve_seconds = plan.stats.solve_seconds;
        kept.stats.first_feasible_seconds = plan.stats.first_feasible_seconds;
        return kept;
    }
    plan
}

/// Gives the periods the repair dropped a seat elsewhere, where the validator allows it: first in
/// a lesson of the same subject and grade (and the class's teacher), then in a new lesson of
/// that teacher (a timetabled lesson to join, or a free period when dedicated lessons are
/// allowed).
fn refill(
    region: &Region,
    plan: &mut Plan,
    n_kept: usize,
    dropped: &BTreeSet<(String, String)>,
    used_ids: &BTreeSet<String>,
    used_rooms: &BTreeSet<String>,
) {
    let school = |id: &str| region.schools.iter().find(|s| s.id == id);
    let best_period = |s: &crate::model::School, day: u8, host: (u16, u16)| {
        s.periods(day).and_then(|ps| {
            ps.iter()
                .enumerate()
                .max_by_key(|(_, b)| b.end.0.min(host.1).saturating_sub(b.start.0.max(host.0)))
                .map(|(q, b)| Slot {
                    school: s.id.clone(),
                    period: q as u8 + 1,
                    start: b.start,
                    end: b.end,
                })
        })
    };
    let fits = |host: (u16, u16), slot: &Slot| {
        host.1
            .min(slot.end.0)
            .saturating_sub(host.0.max(slot.start.0))
            >= region.options.lesson_minutes
    };
    let try_add = |plan: &mut Plan, trial: Plan| -> bool {
        if hard_errors(region, &trial).is_empty() {
            *plan = trial;
            true
        } else {
            false
        }
    };
    for (c, s) in dropped {
        let n = region
            .demand
            .get(c)
            .and_then(|m| m.get(s))
            .copied()
            .unwrap_or(0);
        let (Some(class), have) = (
            region.classes.iter().find(|x| &x.id == c),
            plan.lessons
                .iter()
                .filter(|l| &l.subject == s && l.receivers.contains(c))
                .count() as u32,
        ) else {
            continue;
        };
        let Some(cs) = school(&class.school) else {
            continue;
        };
        let mut have = have;
        let paired: Option<String> = plan
            .pairings
            .iter()
            .find(|p| &p.point_class == c && &p.subject == s)
            .map(|p| p.teacher.clone());
        let teacher_ok = |t: &str| paired.as_deref().is_none_or(|p| p == t);
        // Seats in existing lessons.
        let mut li = n_kept;
        while have < n && li < plan.lessons.len() {
            let l = &plan.lessons[li];
            li += 1;
            if &l.subject != s
                || l.grade != class.grade
                || !teacher_ok(&l.teacher)
                || l.receivers.contains(c)
                || l.receivers.len() >= region.options.max_receivers as usize
            {
                continue;
            }
            let host = &l.slots[0];
            let Some(slot) = best_period(cs, l.weekday, (host.start.0, host.end.0))
                .filter(|s| fits((host.start.0, host.end.0), s))
            else {
                continue;
            };
            let mut trial = plan.clone();
            trial.lessons[li - 1].receivers.push(c.clone());
            trial.lessons[li - 1].slots.push(slot);
            if try_add(plan, trial) {
                have += 1;
            }
        }
        // New lessons of the class's teacher (or any qualified one).
        let teachers: Vec<&crate::model::Teacher> = region
            .teachers
            .iter()
            .filter(|t| teacher_ok(&t.id) && t.subjects.contains(s))
            .collect();
        for t in teachers {
            let Some(ts) = school(&t.school) else {
                continue;
            };
            let node = region
                .sfu_nodes
                .iter()
                .find(|n| n.counties.contains(&ts.county))
                .or_else(|| region.sfu_nodes.iter().find(|n| n.counties.is_empty()))
                .map(|n| n.id.clone());
            let mut hosts: Vec<(Option<String>, u8, u8)> = Vec::new();
            for e in region.central_timetable.iter().flatten() {
                let grade = region
                    .classes
                    .iter()
                    .find(|x| x.id == e.class)
                    .map(|x| x.grade);
                if e.teacher == t.id && &e.subject == s && grade == Some(class.grade) {
                    hosts.push((Some(e.class.clone()), e.weekday, e.period));
                }
            }
            if region.dedicated_allowed()
                && (t.grades.is_empty() || t.grades.contains(&class.grade))
            {
                for d in ts.weekdays() {
                    for p in 1..=ts.periods(d).map_or(0, |x| x.len()) as u8 {
                        hosts.push((None, d, p));
                    }
                }
            }
            for (hc, d, p) in hosts {
                if have >= n {
                    break;
                }
                let taken = plan
                    .lessons
                    .iter()
                    .any(|l| l.teacher == t.id && l.weekday == d && l.slots[0].period == p);
                let (Some(hb), false) = (ts.bell(d, p), taken) else {
                    continue;
                };
                let Some(slot) = best_period(cs, d, (hb.start.0, hb.end.0))
                    .filter(|s| fits((hb.start.0, hb.end.0), s))
                else {
                    continue;
                };
                let mut id = plan.lessons.len() + 1;
                while used_ids.contains(&format!("L{id:05}"))
                    || plan.lessons.iter().any(|l| l.id == format!("L{id:05}"))
                {
                    id += 1;
                }
                let mut room =
                    room_name(&[&ts.id, &t.id, "d", &d.to_string(), "p", &p.to_string()]);
                let mut k = 2;
                while used_rooms.contains(&room) || plan.lessons.iter().any(|l| l.room == room) {
                    room = room_name(&[&room, &k.to_string()]);
                    k += 1;
                }
                let mut trial = plan.clone();
                trial.lessons.push(Lesson {
                    id: format!("L{id:05}"),
                    subject: s.clone(),
                    grade: class.grade,
                    teacher: t.id.clone(),
                    host_class: hc,
                    weekday: d,
                    slots: vec![
                        Slot {
                            school: ts.id.clone(),
                            period: p,
                            start: hb.start,
                            end: hb.end,
                        },
                        slot,
                    ],
                    receivers: vec![c.clone()],
                    sfu_node: node.clone(),
                    room,
                });
                if try_add(plan, trial) {
                    have += 1;
                }
            }
            if have >= n {
                break;
            }
        }
    }
}

/// Indices of the new (unlocked) lessons that a validator finding may be about: named by id
/// (these first), or sharing a teacher, class, school or SFU node named in it (on the weekday it
/// names, if any).
fn suspects(plan: &Plan, n_kept: usize, errors: &[String]) -> Vec<usize> {
    let mut named_ = BTreeSet::new();
    let mut out = BTreeSet::new();
    for e in errors {
        let words: BTreeSet<&str> = e
            .split(|c: char| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.')))
            .filter(|w| !w.is_empty())
            .collect();
        let day: Option<u8> = e
            .split("weekday ")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|d| d.parse().ok());
        for (i, l) in plan.lessons.iter().enumerate().skip(n_kept) {
            let named = words.contains(l.id.as_str());
            let same_day = day.is_none_or(|d| d == l.weekday);
            let who = words.contains(l.teacher.as_str())
                || l.receivers.iter().any(|r| words.contains(r.as_str()))
                || l.slots.iter().any(|s| words.contains(s.school.as_str()))
                || l.sfu_node.as_deref().is_some_and(|n| words.contains(n));
            if named {
                named_.insert(i);
            } else if same_day && who {
                out.insert(i);
            }
        }
    }
    let mut v: Vec<usize> = named_.iter().copied().collect();
    v.extend(out.into_iter().filter(|i| !named_.contains(i)));
    v
}

fn drop_receiver(plan: &mut Plan, li: usize, ri: usize) {
    let l = &mut plan.lessons[li];
    l.receivers.remove(ri);
    l.slots.remove(ri + 1);
    if l.receivers.is_empty() {
        plan.lessons.remove(li);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::region_from_str;
    use crate::solve::{solve, SolveOptions};

    fn example() -> Region {
        let text = include_str!("../examples/region-small.json");
        region_from_str("region-small.json", text).unwrap()
    }

    #[test]
    fn legal_move_is_accepted_and_restated() {
        let r = example();
        let plan = solve(&r, &SolveOptions::default(), &|_, _| {});
        // Monday period 1 -> Wednesday period 2 (both in the timetable of z1-g3's English)
        // is taken by the other lesson; Friday period 3 is in the timetable but p2 has no
        // third period on Friday.
        let monday = plan.lessons.iter().find(|l| l.weekday == 1).unwrap();
        let e = move_lesson(&r, &plan, &monday.id, 5, 3).unwrap_err();
        assert!(matches!(e, EditError::Broken(_)), "{e}");
        let e = move_lesson(&r, &plan, &monday.id, 2, 1).unwrap_err();
        let EditError::Broken(b) = e else { panic!() };
        assert!(b.iter().any(|x| x.contains("central timetable")), "{b:?}");
        assert_eq!(
            move_lesson(&r, &plan, "nope", 1, 1).unwrap_err(),
            EditError::UnknownLesson("nope".into())
        );
        // A move onto the same slot is legal and keeps the plan valid.
        let same = move_lesson(&r, &plan, &monday.id, 1, 1).unwrap();
        assert!(validate(&r, &same).ok());
    }

    #[test]
    fn resolve_keeps_locked_lessons_and_stays_valid() {
        let r = crate::generate::generate(crate::generate::Preset::Tiny, 2);
        let opts = SolveOptions {
            time_limit: std::time::Duration::from_secs(5),
            greedy_only: false,
        };
        let plan = solve(&r, &opts, &|_, _| {});
        assert!(plan.lessons.len() >= 2);
        let locked: BTreeSet<String> = plan.lessons.iter().take(2).map(|l| l.id.clone()).collect();
        let derived = derive_region(&r, &plan, &locked);
        assert!(crate::model::check_region(&derived).is_empty());
        let solved = solve(&derived, &opts, &|_, _| {});
        let merged = merge(&r, &plan, &locked, solved);
        let rep = validate(&r, &merged);
        assert!(rep.ok(), "{:?}", rep.errors);
        for id in &locked {
            let a = plan.lessons.iter().find(|l| &l.id == id).unwrap();
            let b = merged.lessons.iter().find(|l| &l.id == id).unwrap();
            assert_eq!(a, b);
        }
        assert!(merged.stats.objective <= plan.stats.objective);
    }

    #[test]
    fn resolve_after_a_move_is_no_worse() {
        // Coplan: a moved English lesson makes the solver's second English lesson for that class
        // land on the same day; the repair drops it and the refill seats it elsewhere.
        let mut r = crate::generate::generate(crate::generate::Preset::Tiny, 2);
        r.central_timetable = None;
        let opts = SolveOptions {
            time_limit: std::time::Duration::from_secs(5),
            greedy_only: false,
        };
        let plan = solve(&r, &opts, &|_, _| {});
        let moved = move_lesson(&r, &plan, "L00002", 1, 1).unwrap();
        assert!(validate(&r, &moved).ok());
        let locked: BTreeSet<String> = ["L00001".into(), "L00002".into()].into();
        let derived = derive_region(&r, &moved, &locked);
        let merged = merge(&r, &moved, &locked, solve(&derived, &opts, &|_, _| {}));
        let rep = validate(&r, &merged);
        assert!(rep.ok(), "{:?}", rep.errors);
        assert!(
            merged.stats.objective <= moved.stats.objective,
            "{} > {}",
            merged.stats.objective,
            moved.stats.objective
        );
        assert_eq!(merged.stats.met_periods, moved.stats.met_periods);
    }
}
