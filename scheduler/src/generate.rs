//! Deterministic, realistic instances: counties of central schools (中心校) and teaching points
//! (教学点) with differing bells and links, central timetables, and point demand.

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::{
    Bell, BellDays, Class, ClockTime, Location, Options, Region, School, SchoolKind, SfuNode,
    Teacher, TimetableEntry,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// One county: about 20 central schools, 60 points, 200 point classes.
    County,
    /// 25 counties: about 800 points, 3,000 point classes.
    Province,
    /// 100 counties: 10,000 points.
    Stress,
    /// One small county, for quick tests.
    Tiny,
}

#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub counties: usize,
    pub central: usize,
    pub points: usize,
    /// Average classes per point.
    pub classes_per_point: f64,
}

impl Preset {
    pub fn shape(self) -> Shape {
        match self {
            Preset::County => Shape {
                counties: 1,
                central: 20,
                points: 60,
                classes_per_point: 3.4,
            },
            Preset::Province => Shape {
                counties: 25,
                central: 8,
                points: 32,
                classes_per_point: 3.75,
            },
            Preset::Stress => Shape {
                counties: 100,
                central: 15,
                points: 100,
                classes_per_point: 2.5,
            },
            Preset::Tiny => Shape {
                counties: 1,
                central: 2,
                points: 3,
                classes_per_point: 1.5,
            },
        }
    }
}

/// Subjects points cannot teach themselves: (name, periods a week, lowest grade).
const SUBJECTS: [(&str, u32, u8); 4] = [
    ("english", 3, 3),
    ("music", 2, 1),
    ("art", 2, 1),
    ("science", 2, 1),
];

/// The county's unified bells (统一课表) and the variants schools actually keep.
fn bells(variant: u8, short_friday: bool) -> Vec<BellDays> {
    let (shift, len, afternoon) = match variant {
        0 => (0i16, 40u16, 14 * 60u16),
        1 => (10, 40, 14 * 60), // starts ten minutes late: no common 40 minutes
        2 => (-5, 45, 14 * 60 - 5), // 45-minute periods that contain the standard ones
        _ => (0, 40, 14 * 60 + 30), // summer afternoon: mornings only line up
    };
    let morning = [8 * 60u16, 8 * 60 + 50, 10 * 60, 10 * 60 + 50];
    let after = [0u16, 50, 100];
    let mk = |n: usize| -> Vec<Bell> {
        let mut v: Vec<Bell> = morning
            .iter()
            .map(|&m| (m as i16 + shift) as u16)
            .chain(after.iter().map(|&a| afternoon + a))
            .map(|s| Bell {
                start: ClockTime(s),
                end: ClockTime(s + len),
            })
            .collect();
        v.truncate(n);
        v
    };
    if short_friday {
        vec![
            BellDays {
                weekdays: vec![1, 2, 3, 4],
                periods: mk(7),
            },
            BellDays {
                weekdays: vec![5],
                periods: mk(6),
            },
        ]
    } else {
        vec![BellDays {
            weekdays: vec![1, 2, 3, 4, 5],
            periods: mk(7),
        }]
    }
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[(T, u32)]) -> T {
    let total: u32 = items.iter().map(|i| i.1).sum();
    let mut r = rng.random_range(0..total);
    for &(v, w) in items {
        if r < w {
            return v;
        }
        r -= w;
    }
    items[0].0
}

pub fn generate(preset: Preset, seed: u64) -> Region {
    let shape = preset.shape();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut r = Region {
        name: format!("{preset:?}-{seed}").to_lowercase(),
        schools: vec![],
        classes: vec![],
        teachers: vec![],
        central_timetable: Some(vec![]),
        demand: BTreeMap::new(),
        sfu_nodes: vec![],
        options: Options::default(),
    };
    r.options.subject_priority = [("english", 3), ("science", 2), ("music", 1), ("art", 1)]
        .into_iter()
        .map(|(s, p)| (s.to_string(), p))
        .collect();
    for ci in 0..shape.counties {
        let county = format!("c{:03}", ci + 1);
        let center = Location {
            lat: 28.0 + rng.random_range(0.0..6.0),
            lon: 108.0 + rng.random_range(0.0..8.0),
        };
        for zi in 0..shape.central {
            let id = format!("{county}-z{:02}", zi + 1);
            let variant = pick(&mut rng, &[(0u8, 65), (1, 10), (2, 15), (3, 10)]);
            let school = School {
                id: id.clone(),
                name: format!("{county}县第{}中心小学", zi + 1),
                kind: SchoolKind::Central,
                county: county.clone(),
                location: Location {
                    lat: center.lat + rng.random_range(-0.25..0.25),
                    lon: center.lon + rng.random_range(-0.25..0.25),
                },
                downlink_kbps: pick(&mut rng, &[(8000, 2), (20000, 5), (50000, 3)]),
                uplink_kbps: pick(&mut rng, &[(4000, 3), (10000, 5), (20000, 2)]),
                bells: bells(variant, rng.random_bool(0.3)),
            };
            central_school(&mut r, &mut rng, &school);
            r.schools.push(school);
        }
        let mut classes_left = (shape.points as f64 * shape.classes_per_point).round() as usize;
        for pi in 0..shape.points {
            let id = format!("{county}-p{:03}", pi + 1);
            let variant = pick(&mut rng, &[(0u8, 60), (1, 12), (2, 18), (3, 10)]);
            let down = pick(
                &mut rng,
                &[
                    (1000u32, 8),
                    (2000, 30),
                    (4000, 35),
                    (8000, 17),
                    (20000, 10),
                ],
            );
            let school = School {
                id: id.clone(),
                name: format!("{county}县{}村教学点", pi + 1),
                kind: SchoolKind::Point,
                county: county.clone(),
                location: Location {
                    lat: center.lat + rng.random_range(-0.35..0.35),
                    lon: center.lon + rng.random_range(-0.35..0.35),
                },
                downlink_kbps: down,
                uplink_kbps: down / 2,
                bells: bells(variant, rng.random_bool(0.3)),
            };
            // Spread the county's classes over its points: 1 to 6 grades each.
            let points_left = shape.points - pi;
            let mean = classes_left as f64 / points_left as f64;
            let n = if points_left == 1 {
                classes_left
            } else {
                ((mean + rng.random_range(-1.0..1.0)).round() as usize)
                    .clamp(1, 6)
                    .min(classes_left.saturating_sub(points_left - 1).max(1))
            };
            classes_left = classes_left.saturating_sub(n);
            let mut grades: Vec<u8> = (1..=6).collect();
            grades.shuffle(&mut rng);
            let mut grades: Vec<u8> = grades.into_iter().take(n.min(6)).collect();
            grades.sort();
            for g in grades {
                let cid = format!("{id}-g{g}");
                r.classes.push(Class {
                    id: cid.clone(),
                    school: id.clone(),
                    grade: g,
                    students: rng.random_range(3..=25),
                });
                let mut need = BTreeMap::new();
                for (s, periods, from) in SUBJECTS {
                    // Some points have a local teacher for some subjects.
                    if g >= from && rng.random_bool(0.75) {
                        let p = if s == "science" && g <= 2 { 1 } else { periods };
                        need.insert(s.to_string(), p);
                    }
                }
                if !need.is_empty() {
                    r.demand.insert(cid, need);
                }
            }
            r.schools.push(school);
        }
        r.sfu_nodes.push(SfuNode {
            id: format!("sfu-{county}"),
            capacity: 120 + 20 * rng.random_range(0..4),
            counties: vec![county.clone()],
        });
    }
    r
}

/// Classes, teachers and timetable of one central school.
fn central_school(r: &mut Region, rng: &mut ChaCha8Rng, school: &School) {
    let mut classes = vec![];
    for g in 1..=6u8 {
        let n = if rng.random_bool(0.4) { 2 } else { 1 };
        for k in 0..n {
            let id = format!("{}-g{g}{}", school.id, (b'a' + k) as char);
            r.classes.push(Class {
                id: id.clone(),
                school: school.id.clone(),
                grade: g,
                students: rng.random_range(30..=50),
            });
            classes.push((id, g));
        }
    }
    let mut class_busy: BTreeSet<(String, u8, u8)> = BTreeSet::new();
    let tt = r.central_timetable.get_or_insert_with(Vec::new);
    for (s, periods, from) in SUBJECTS {
        let mine: Vec<&(String, u8)> = classes.iter().filter(|(_, g)| *g >= from).collect();
        // A specialist teaches up to about 14 periods of it a week.
        let load: u32 = mine
            .iter()
            .map(|(_, g)| {
                if s == "science" && *g <= 2 {
                    1
                } else {
                    periods
                }
            })
            .sum();
        let nt = load.div_ceil(14).max(1) as usize;
        let ids: Vec<String> = (0..nt)
            .map(|i| format!("{}-{}{}", school.id, &s[..3], i + 1))
            .collect();
        let mut teacher_busy: Vec<BTreeSet<(u8, u8)>> = vec![BTreeSet::new(); nt];
        let mut unavailable = vec![vec![]; nt];
        for (ti, u) in unavailable.iter_mut().enumerate() {
            if rng.random_bool(0.3) {
                let slot = crate::model::SlotRef {
                    weekday: rng.random_range(1..=5),
                    period: rng.random_range(1..=7),
                };
                u.push(slot);
                teacher_busy[ti].insert((slot.weekday, slot.period));
            }
        }
        for (i, (cid, g)) in mine.iter().enumerate() {
            let ti = i % nt;
            let h = if s == "science" && *g <= 2 {
                1
            } else {
                periods
            };
            let mut days: Vec<u8> = school.weekdays().into_iter().collect();
            days.shuffle(rng);
            let mut placed = 0;
            for d in days {
                if placed == h {
                    break;
                }
                let np = school.periods(d).map_or(0, |p| p.len()) as u8;
                let mut ps: Vec<u8> = (1..=np).collect();
                ps.shuffle(rng);
                let day_load = teacher_busy[ti].iter().filter(|(dd, _)| *dd == d).count();
                if day_load >= 4 {
                    continue;
                }
                if let Some(p) = ps.into_iter().find(|&p| {
                    !teacher_busy[ti].contains(&(d, p))
                        && !class_busy.contains(&(cid.clone(), d, p))
                }) {
                    teacher_busy[ti].insert((d, p));
                    class_busy.insert((cid.clone(), d, p));
                    tt.push(TimetableEntry {
                        class: cid.clone(),
                        subject: s.to_string(),
                        teacher: ids[ti].clone(),
                        weekday: d,
                        period: p,
                    });
                    placed += 1;
                }
            }
        }
        for (ti, id) in ids.into_iter().enumerate() {
            r.teachers.push(Teacher {
                id,
                name: String::new(),
                school: school.id.clone(),
                subjects: vec![s.to_string()],
                max_periods_week: 16,
                max_periods_day: 4,
                unavailable: std::mem::take(&mut unavailable[ti]),
                grades: vec![],
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_valid() {
        let a = generate(Preset::County, 7);
        let b = generate(Preset::County, 7);
        assert_eq!(a, b);
        assert_ne!(a, generate(Preset::County, 8));
        assert_eq!(crate::model::check_region(&a), Vec::<String>::new());
        let points = a
            .schools
            .iter()
            .filter(|s| s.kind == SchoolKind::Point)
            .count();
        assert_eq!(points, 60);
        let point_classes = a
            .classes
            .iter()
            .filter(|c| {
                a.schools
                    .iter()
                    .any(|s| s.id == c.school && s.kind == SchoolKind::Point)
            })
            .count();
        assert!((180..=220).contains(&point_classes), "{point_classes}");
        let bells: BTreeSet<_> = a.schools.iter().map(|s| format!("{:?}", s.bells)).collect();
        assert!(bells.len() > 2, "schools' bells differ");
    }
}
