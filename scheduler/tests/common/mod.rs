//! Tiny random regions and a brute-force optimum over them, independent of the solver: it lists
//! every (lesson, receiver, period) choice from the region itself, tries every subset, and keeps
//! the best one the validator accepts.

#![allow(dead_code)]

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scheduler::model::*;
use scheduler::validate::validate;

fn bell(h: u16, m: u16, len: u16) -> Bell {
    Bell {
        start: ClockTime::hm(h, m),
        end: ClockTime(h * 60 + m + len),
    }
}

fn bells(rng: &mut ChaCha8Rng, days: &[u8], n: usize) -> Vec<BellDays> {
    let shift = [0u16, 0, 0, 5, 10][rng.random_range(0..5)];
    let len = [40u16, 45][rng.random_range(0..2)];
    let periods = (0..n)
        .map(|i| bell(8, shift + 50 * i as u16, len))
        .collect();
    vec![BellDays {
        weekdays: days.to_vec(),
        periods,
    }]
}

/// A region small enough to enumerate; `coplan` leaves out the central timetable.
pub fn tiny(seed: u64, coplan: bool) -> Region {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let days: Vec<u8> = if coplan { vec![1] } else { vec![1, 2, 3] };
    let periods = 2;
    let mut r = Region {
        name: format!("tiny-{seed}"),
        schools: vec![],
        classes: vec![],
        teachers: vec![],
        central_timetable: if coplan { None } else { Some(vec![]) },
        demand: BTreeMap::new(),
        sfu_nodes: vec![SfuNode {
            id: "sfu".into(),
            capacity: rng.random_range(2..=6),
            counties: vec![],
        }],
        options: Options::default(),
    };
    r.options.max_receivers = rng.random_range(1..=3);
    r.options.candidate_teachers = 10;
    r.options.subject_priority.insert("english".into(), 2);
    let loc = Location {
        lat: 30.0,
        lon: 110.0,
    };
    let subjects = ["english", "music"];
    let n_central = if coplan { 1 } else { rng.random_range(1..=2) };
    for z in 0..n_central {
        let id = format!("z{z}");
        r.schools.push(School {
            id: id.clone(),
            name: id.clone(),
            kind: SchoolKind::Central,
            county: "c".into(),
            location: Location {
                lat: loc.lat + z as f64 * 0.1,
                lon: loc.lon,
            },
            downlink_kbps: 10000,
            uplink_kbps: [1500u32, 3000, 10000][rng.random_range(0..3)],
            bells: bells(&mut rng, &days, periods),
        });
        let subject = subjects[z % 2].to_string();
        let tid = format!("{id}-t");
        let mut grades = vec![];
        for g in [3u8, 4] {
            if rng.random_bool(0.7) || grades.is_empty() && g == 4 {
                grades.push(g);
                let cid = format!("{id}-g{g}");
                r.classes.push(Class {
                    id: cid.clone(),
                    school: id.clone(),
                    grade: g,
                    students: 30,
                });
                if let Some(tt) = r.central_timetable.as_mut() {
                    // One or two lessons a week, never two at once for the teacher.
                    for d in &days {
                        if rng.random_bool(0.7) {
                            let p = if g == 3 { 1 } else { 2 };
                            tt.push(TimetableEntry {
                                class: cid.clone(),
                                subject: subject.clone(),
                                teacher: tid.clone(),
                                weekday: *d,
                                period: p,
                            });
                        }
                    }
                }
            }
        }
        // The timetable itself never breaks the limits; dedicated lessons (coplan) may hit them.
        let given = r
            .central_timetable
            .iter()
            .flatten()
            .filter(|e| e.teacher == tid)
            .count() as u32;
        let max_day = if coplan { rng.random_range(1..=2) } else { 2 };
        r.teachers.push(Teacher {
            id: tid,
            name: String::new(),
            school: id.clone(),
            subjects: vec![subject],
            max_periods_week: given.max(max_day) + rng.random_range(0..=1),
            max_periods_day: max_day,
            unavailable: vec![],
            grades: if coplan { vec![3] } else { vec![] },
        });
    }
    let n_points = rng.random_range(2..=4);
    for p in 0..n_points {
        let id = format!("p{p}");
        r.schools.push(School {
            id: id.clone(),
            name: id.clone(),
            kind: SchoolKind::Point,
            county: "c".into(),
            location: Location {
                lat: loc.lat,
                lon: loc.lon + 0.1 * (p + 1) as f64,
            },
            downlink_kbps: [1000u32, 1500, 3000, 4000, 4000][rng.random_range(0..5)],
            uplink_kbps: 1000,
            bells: bells(&mut rng, &days, periods),
        });
        let g = if coplan { 3 } else { rng.random_range(3..=4) };
        let cid = format!("{id}-g{g}");
        r.classes.push(Class {
            id: cid.clone(),
            school: id,
            grade: g,
            students: 8,
        });
        let mut need = BTreeMap::new();
        for s in subjects.iter().take(n_central) {
            if rng.random_bool(0.8) {
                need.insert(s.to_string(), rng.random_range(1..=2));
            }
        }
        if !need.is_empty() {
            r.demand.insert(cid, need);
        }
    }
    r
}

/// (teacher, host class, weekday, host period, subject, grade) and a receiver with its period.
type Choice = ((String, Option<String>, u8, u8, String, u8), String, u8);

fn choices(r: &Region) -> Vec<Choice> {
    let school = |id: &str| r.schools.iter().find(|s| s.id == id).unwrap();
    let class = |id: &str| r.classes.iter().find(|c| c.id == id).unwrap();
    let mut hosts = vec![];
    match &r.central_timetable {
        Some(tt) => {
            for e in tt {
                hosts.push((
                    e.teacher.clone(),
                    Some(e.class.clone()),
                    e.weekday,
                    e.period,
                    e.subject.clone(),
                    class(&e.class).grade,
                ));
            }
        }
        None => {
            for t in &r.teachers {
                let s = school(&t.school);
                for d in s.weekdays() {
                    for p in 1..=s.periods(d).unwrap().len() as u8 {
                        for sub in &t.subjects {
                            for &g in &t.grades {
                                hosts.push((t.id.clone(), None, d, p, sub.clone(), g));
                            }
                        }
                    }
                }
            }
        }
    }
    let mut out = vec![];
    for h in hosts {
        let t = r.teachers.iter().find(|t| t.id == h.0).unwrap();
        let hb = school(&t.school).bell(h.2, h.3).unwrap();
        for (c, subjects) in &r.demand {
            if !subjects.contains_key(&h.4) || class(c).grade != h.5 {
                continue;
            }
            let ps = school(&class(c).school);
            for (qi, qb) in ps.periods(h.2).unwrap_or(&[]).iter().enumerate() {
                let ov = hb
                    .end
                    .0
                    .min(qb.end.0)
                    .saturating_sub(hb.start.0.max(qb.start.0));
                if ov >= r.options.lesson_minutes {
                    out.push((h.clone(), c.clone(), qi as u8 + 1));
                }
            }
        }
    }
    out
}

fn plan_of(r: &Region, picked: &[&Choice]) -> Plan {
    let school = |id: &str| r.schools.iter().find(|s| s.id == id).unwrap();
    let mut by_lesson: BTreeMap<_, Vec<(&String, u8)>> = BTreeMap::new();
    for (h, c, q) in picked {
        by_lesson.entry(h.clone()).or_default().push((c, *q));
    }
    let mut lessons = vec![];
    let mut pairings = std::collections::BTreeSet::new();
    for (i, (h, recv)) in by_lesson.into_iter().enumerate() {
        let t = r.teachers.iter().find(|t| t.id == h.0).unwrap();
        let hs = school(&t.school);
        let hb = hs.bell(h.2, h.3).unwrap();
        let mut slots = vec![Slot {
            school: hs.id.clone(),
            period: h.3,
            start: hb.start,
            end: hb.end,
        }];
        for (c, q) in &recv {
            let cs = &r.classes.iter().find(|x| &&x.id == c).unwrap().school;
            let b = school(cs).bell(h.2, *q).unwrap();
            slots.push(Slot {
                school: cs.clone(),
                period: *q,
                start: b.start,
                end: b.end,
            });
            pairings.insert(Pairing {
                point_class: c.to_string(),
                subject: h.4.clone(),
                teacher: h.0.clone(),
            });
        }
        lessons.push(Lesson {
            id: format!("B{i}"),
            subject: h.4.clone(),
            grade: h.5,
            teacher: h.0.clone(),
            host_class: h.1.clone(),
            weekday: h.2,
            slots,
            receivers: recv.iter().map(|(c, _)| c.to_string()).collect(),
            sfu_node: r.sfu_nodes.first().map(|n| n.id.clone()),
            room: format!("room-{i}"),
        });
    }
    Plan {
        region: r.name.clone(),
        mode: r.mode(),
        lessons,
        pairings: pairings.into_iter().collect(),
        unmet: vec![],
        stats: Stats {
            coverage: 0.0,
            objective: 0.0,
            bound: 0.0,
            gap: 0.0,
            solve_seconds: 0.0,
            first_feasible_seconds: 0.0,
            demand_periods: 0,
            met_periods: 0,
            terms: ObjectiveTerms::default(),
            counties: 1,
            counties_optimal: 1,
            unmet_weighted_bound: 0,
            counties_coverage_optimal: 1,
        },
    }
}

/// The least objective over every plan the validator accepts (ignoring the stats it checks),
/// and the number of candidate choices enumerated.
pub fn brute_force(r: &Region) -> Option<(f64, usize)> {
    let ch = choices(r);
    if ch.len() > 17 {
        return None;
    }
    let mut best = f64::INFINITY;
    for mask in 0u32..(1 << ch.len()) {
        let picked: Vec<&Choice> = (0..ch.len())
            .filter(|i| mask >> i & 1 == 1)
            .map(|i| &ch[i])
            .collect();
        let plan = plan_of(r, &picked);
        let rep = validate(r, &plan);
        let hard: Vec<&String> = rep
            .errors
            .iter()
            .filter(|e| !e.starts_with("stats.") && !e.starts_with("the unmet list"))
            .collect();
        if hard.is_empty() && rep.objective < best {
            best = rep.objective;
        }
    }
    Some((best, ch.len()))
}

/// The greedy plan alone (the solver's start), checked by the validator.
pub fn greedy_plan(region: &Region, opts: &scheduler::solve::SolveOptions) -> Plan {
    let plan = scheduler::solve::solve(
        region,
        &scheduler::solve::SolveOptions {
            greedy_only: true,
            ..opts.clone()
        },
        &|_, _| {},
    );
    assert!(validate(region, &plan).ok(), "the greedy plan is not valid");
    plan
}
