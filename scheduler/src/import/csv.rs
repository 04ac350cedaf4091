//! A region from a bundle of CSV files (a directory or an upload), one table per file; the format
//! is in README.md ("CSV bundle"). Errors name the file, line, column and field; references
//! between the files are checked with the line of the referring row.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::model::{
    check_region, Bell, BellDays, Class, ClockTime, LoadError, Location, Options, Pairing, Region,
    School, SchoolKind, SfuNode, SlotRef, Teacher, TimetableEntry,
};

/// Bells of one weekday group by period number, with the line each came from.
type PeriodRows = BTreeMap<u8, (u64, Bell)>;

/// The files a bundle may hold; the first ones are required.
pub const REQUIRED: &[&str] = &[
    "schools.csv",
    "bells.csv",
    "classes.csv",
    "teachers.csv",
    "demand.csv",
];
pub const OPTIONAL: &[&str] = &[
    "central_timetable.csv",
    "sfu_nodes.csv",
    "options.csv",
    "options.json",
    "last_term.csv",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SchoolRow {
    id: String,
    name: String,
    kind: SchoolKind,
    county: String,
    lat: f64,
    lon: f64,
    downlink_kbps: u32,
    uplink_kbps: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BellRow {
    school: String,
    weekdays: String,
    period: u8,
    start: ClockTime,
    end: ClockTime,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TeacherRow {
    id: String,
    #[serde(default)]
    name: String,
    school: String,
    subjects: String,
    max_periods_week: u32,
    max_periods_day: u32,
    #[serde(default)]
    unavailable: String,
    #[serde(default)]
    grades: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemandRow {
    point_class: String,
    subject: String,
    periods: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeRow {
    id: String,
    capacity: u32,
    #[serde(default)]
    counties: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OptionRow {
    key: String,
    value: String,
}

/// Columns of each file: required, then optional.
fn columns(file: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match file {
        "schools.csv" => (
            &[
                "id",
                "name",
                "kind",
                "county",
                "lat",
                "lon",
                "downlink_kbps",
                "uplink_kbps",
            ],
            &[],
        ),
        "bells.csv" => (&["school", "weekdays", "period", "start", "end"], &[]),
        "classes.csv" => (&["id", "school", "grade", "students"], &[]),
        "teachers.csv" => (
            &[
                "id",
                "school",
                "subjects",
                "max_periods_week",
                "max_periods_day",
            ],
            &["name", "unavailable", "grades"],
        ),
        "central_timetable.csv" => (&["class", "subject", "teacher", "weekday", "period"], &[]),
        "demand.csv" => (&["point_class", "subject", "periods"], &[]),
        "sfu_nodes.csv" => (&["id", "capacity"], &["counties"]),
        "options.csv" => (&["key", "value"], &[]),
        "last_term.csv" => (&["point_class", "subject", "teacher"], &[]),
        _ => (&[], &[]),
    }
}

fn schema(file: &str, line: u64, column: usize, field: &str, message: String) -> LoadError {
    LoadError::Schema {
        file: file.to_string(),
        line: line as usize,
        column,
        field: field.to_string(),
        message,
    }
}

/// The rows of one file with their line numbers.
fn rows<T: DeserializeOwned>(file: &str, text: &str) -> Result<Vec<(u64, T)>, LoadError> {
    let mut rd = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = rd
        .headers()
        .map_err(|e| schema(file, 1, 1, "header", e.to_string()))?
        .clone();
    let (required, optional) = columns(file);
    for (i, h) in headers.iter().enumerate() {
        if !required.contains(&h) && !optional.contains(&h) {
            return Err(schema(
                file,
                1,
                i + 1,
                h,
                format!(
                    "unknown column; expected {}",
                    required
                        .iter()
                        .chain(optional)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    for r in required {
        if !headers.iter().any(|h| h == *r) {
            return Err(schema(file, 1, 1, r, "missing column".into()));
        }
    }
    let mut out = Vec::new();
    for rec in rd.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            schema(file, line, 1, "row", e.to_string())
        })?;
        let line = rec.position().map_or(0, |p| p.line());
        if rec.iter().all(str::is_empty) {
            continue;
        }
        let row: T = rec.deserialize(Some(&headers)).map_err(|e| {
            let (col, field, message) = match e.kind() {
                csv::ErrorKind::Deserialize { err, .. } => {
                    let (col, field) = match err.field() {
                        Some(i) => (i as usize + 1, headers.get(i as usize).unwrap_or("?")),
                        None => (1, "?"),
                    };
                    let m = match err.kind() {
                        csv::DeserializeErrorKind::Message(m) => m.clone(),
                        k => k.to_string(),
                    };
                    (col, field, m)
                }
                _ => (1, "?", e.to_string()),
            };
            schema(file, line, col, field, message)
        })?;
        out.push((line, row));
    }
    Ok(out)
}

/// `a;b;c` (empty: none).
fn list(s: &str) -> Vec<String> {
    s.split(';')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

/// Weekdays as `1-5`, `1;3;5` or `1-4;6`.
fn weekdays(s: &str) -> Result<Vec<u8>, String> {
    let mut out = BTreeSet::new();
    for part in list(s) {
        let num = |x: &str| {
            x.trim()
                .parse::<u8>()
                .map_err(|_| format!("{x:?} is not a weekday number"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("range {part:?} runs backwards"));
                }
                out.extend(a..=b);
            }
            None => {
                out.insert(num(&part)?);
            }
        }
    }
    if out.is_empty() {
        return Err("no weekdays".into());
    }
    Ok(out.into_iter().collect())
}

fn numbers<T: std::str::FromStr>(s: &str) -> Result<Vec<T>, String> {
    list(s)
        .iter()
        .map(|x| x.parse().map_err(|_| format!("{x:?} is not a number")))
        .collect()
}

/// `weekday:period` pairs, `;`-separated.
fn slots(s: &str) -> Result<Vec<SlotRef>, String> {
    list(s)
        .iter()
        .map(|x| {
            let (d, p) = x
                .split_once(':')
                .ok_or_else(|| format!("{x:?} is not weekday:period"))?;
            Ok(SlotRef {
                weekday: d
                    .trim()
                    .parse()
                    .map_err(|_| format!("{x:?}: bad weekday"))?,
                period: p.trim().parse().map_err(|_| format!("{x:?}: bad period"))?,
            })
        })
        .collect()
}

/// Finds the column index of `field` in a file's header, for error positions.
fn col(text: &str, field: &str) -> usize {
    let header = text.lines().next().unwrap_or("");
    header
        .split(',')
        .position(|h| h.trim() == field)
        .map_or(1, |i| i + 1)
}

/// Options from `options.json` (the region file's `options` object, plus an optional `name`) or
/// `options.csv` (`key,value` rows: `name`, `lesson_kbps`, `max_receivers`, `lesson_minutes`,
/// `same_county`, `dedicated_lessons`, `candidate_teachers`, `priority.SUBJECT`).
fn options(files: &BTreeMap<String, String>) -> Result<(Option<String>, Options), LoadError> {
    if let Some(text) = files.get("options.json") {
        let mut v: serde_json::Value = crate::model::parse_json("options.json", text)?;
        let name = v
            .as_object_mut()
            .and_then(|o| o.remove("name"))
            .and_then(|n| n.as_str().map(String::from));
        let o = crate::model::parse_json("options.json", &v.to_string()).map_err(|e| match e {
            // Positions refer to the re-serialised text; the field path is what helps.
            LoadError::Schema { field, message, .. } => {
                schema("options.json", 1, 1, &field, message)
            }
            e => e,
        })?;
        return Ok((name, o));
    }
    let Some(text) = files.get("options.csv") else {
        return Ok((None, Options::default()));
    };
    let file = "options.csv";
    let mut name = None;
    let mut obj = serde_json::Map::new();
    let mut prio = serde_json::Map::new();
    let mut lines = BTreeMap::new();
    for (line, r) in rows::<OptionRow>(file, text)? {
        let bad = |m: String| schema(file, line, 2, &r.key, m);
        let num = || {
            r.value
                .parse::<u64>()
                .map(serde_json::Value::from)
                .map_err(|_| bad(format!("{:?} is not a whole number", r.value)))
        };
        let v = match r.key.as_str() {
            "name" => {
                name = Some(r.value.clone());
                continue;
            }
            "lesson_kbps" | "max_receivers" | "lesson_minutes" | "candidate_teachers" => num()?,
            "same_county" => serde_json::Value::from(r.value.clone()),
            "dedicated_lessons" => match r.value.as_str() {
                "true" | "yes" | "1" => true.into(),
                "false" | "no" | "0" => false.into(),
                "" => serde_json::Value::Null,
                v => return Err(bad(format!("{v:?} is not true or false"))),
            },
            k => match k.strip_prefix("priority.") {
                Some(subject) if !subject.is_empty() => {
                    prio.insert(subject.to_string(), num()?);
                    continue;
                }
                _ => {
                    return Err(schema(
                        file,
                        line,
                        1,
                        "key",
                        format!("unknown option {k:?}; expected name, lesson_kbps, max_receivers, lesson_minutes, same_county, dedicated_lessons, candidate_teachers or priority.SUBJECT"),
                    ))
                }
            },
        };
        lines.insert(r.key.clone(), line);
        obj.insert(r.key.clone(), v);
    }
    if !prio.is_empty() {
        obj.insert("subject_priority".into(), prio.into());
    }
    let v = serde_json::Value::Object(obj);
    let o: Options = serde_path_to_error::deserialize(&v).map_err(|e| {
        let field = e.path().to_string();
        let line = lines.get(&field).copied().unwrap_or(1);
        schema(file, line, 2, &field, e.into_inner().to_string())
    })?;
    Ok((name, o))
}

/// A region from the files of a bundle (file name -> contents). `default_name` names the region
/// when the options do not.
pub fn region_from_files(
    files: &BTreeMap<String, String>,
    default_name: &str,
) -> Result<Region, LoadError> {
    let bundle = format!("CSV bundle {default_name:?}");
    let mut problems = Vec::new();
    for f in files.keys() {
        if !REQUIRED.contains(&f.as_str()) && !OPTIONAL.contains(&f.as_str()) {
            problems.push(format!(
                "{f}: unknown file; a bundle holds {} and optionally {}",
                REQUIRED.join(", "),
                OPTIONAL.join(", ")
            ));
        }
    }
    for f in REQUIRED {
        if !files.contains_key(*f) {
            problems.push(format!("{f}: missing"));
        }
    }
    if files.contains_key("options.csv") && files.contains_key("options.json") {
        problems.push("options.csv and options.json: give one of them".into());
    }
    if !problems.is_empty() {
        return Err(LoadError::Invalid {
            file: bundle,
            problems,
        });
    }
    let text = |f: &str| files.get(f).map(String::as_str).unwrap_or("");

    let mut schools = Vec::new();
    let mut school_kind: HashMap<String, SchoolKind> = HashMap::new();
    for (_, r) in rows::<SchoolRow>("schools.csv", text("schools.csv"))? {
        school_kind.insert(r.id.clone(), r.kind);
        schools.push(School {
            id: r.id,
            name: r.name,
            kind: r.kind,
            county: r.county,
            location: Location {
                lat: r.lat,
                lon: r.lon,
            },
            downlink_kbps: r.downlink_kbps,
            uplink_kbps: r.uplink_kbps,
            bells: vec![],
        });
    }
    let at = |file: &str, line: u64, field: &str| {
        format!("{file}:{line}:{}: field `{field}`", col(text(file), field))
    };

    // Bells: rows grouped by school and weekday set, periods numbered 1..n in each group.
    let mut groups: BTreeMap<String, Vec<(Vec<u8>, PeriodRows)>> = BTreeMap::new();
    for (line, r) in rows::<BellRow>("bells.csv", text("bells.csv"))? {
        if !school_kind.contains_key(&r.school) {
            problems.push(format!(
                "{}: unknown school {:?}",
                at("bells.csv", line, "school"),
                r.school
            ));
            continue;
        }
        let days = weekdays(&r.weekdays).map_err(|m| {
            schema(
                "bells.csv",
                line,
                col(text("bells.csv"), "weekdays"),
                "weekdays",
                m,
            )
        })?;
        let g = groups.entry(r.school.clone()).or_default();
        let i = match g.iter().position(|(d, _)| *d == days) {
            Some(i) => i,
            None => {
                g.push((days, BTreeMap::new()));
                g.len() - 1
            }
        };
        let bell = Bell {
            start: r.start,
            end: r.end,
        };
        if let Some((prev, _)) = g[i].1.insert(r.period, (line, bell)) {
            problems.push(format!(
                "{}: period {} of school {:?} on weekdays {:?} is also on line {prev}",
                at("bells.csv", line, "period"),
                r.period,
                r.school,
                r.weekdays
            ));
        }
    }
    for s in &mut schools {
        for (days, periods) in groups.remove(&s.id).unwrap_or_default() {
            for (n, (&p, (line, _))) in periods.iter().enumerate() {
                if p as usize != n + 1 {
                    problems.push(format!(
                        "{}: school {:?} weekdays {days:?}: period {p} but no period {}",
                        at("bells.csv", *line, "period"),
                        s.id,
                        n + 1
                    ));
                    break;
                }
            }
            s.bells.push(BellDays {
                weekdays: days,
                periods: periods.into_values().map(|(_, b)| b).collect(),
            });
        }
    }

    let mut classes = Vec::new();
    let mut class_kind: HashMap<String, SchoolKind> = HashMap::new();
    for (line, c) in rows::<Class>("classes.csv", text("classes.csv"))? {
        match school_kind.get(&c.school) {
            Some(k) => {
                class_kind.insert(c.id.clone(), *k);
            }
            None => problems.push(format!(
                "{}: unknown school {:?}",
                at("classes.csv", line, "school"),
                c.school
            )),
        }
        classes.push(c);
    }

    let mut teachers = Vec::new();
    let mut teacher_ids = BTreeSet::new();
    for (line, r) in rows::<TeacherRow>("teachers.csv", text("teachers.csv"))? {
        let file = "teachers.csv";
        let bad = |field: &str, m: String| schema(file, line, col(text(file), field), field, m);
        if school_kind.get(&r.school) != Some(&SchoolKind::Central) {
            problems.push(format!(
                "{}: {:?} is not a central school of schools.csv",
                at(file, line, "school"),
                r.school
            ));
        }
        teacher_ids.insert(r.id.clone());
        teachers.push(Teacher {
            id: r.id,
            name: r.name,
            school: r.school,
            subjects: list(&r.subjects),
            max_periods_week: r.max_periods_week,
            max_periods_day: r.max_periods_day,
            unavailable: slots(&r.unavailable).map_err(|m| bad("unavailable", m))?,
            grades: numbers(&r.grades).map_err(|m| bad("grades", m))?,
        });
    }

    let central_timetable = match files.get("central_timetable.csv") {
        None => None,
        Some(t) => {
            let file = "central_timetable.csv";
            let mut out = Vec::new();
            for (line, e) in rows::<TimetableEntry>(file, t)? {
                if !class_kind.contains_key(&e.class) {
                    problems.push(format!(
                        "{}: unknown class {:?}",
                        at(file, line, "class"),
                        e.class
                    ));
                }
                if !teacher_ids.contains(&e.teacher) {
                    problems.push(format!(
                        "{}: unknown teacher {:?}",
                        at(file, line, "teacher"),
                        e.teacher
                    ));
                }
                out.push(e);
            }
            Some(out)
        }
    };

    let mut demand: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    for (line, r) in rows::<DemandRow>("demand.csv", text("demand.csv"))? {
        let file = "demand.csv";
        match class_kind.get(&r.point_class) {
            None => problems.push(format!(
                "{}: unknown class {:?}",
                at(file, line, "point_class"),
                r.point_class
            )),
            Some(SchoolKind::Central) => problems.push(format!(
                "{}: class {:?} is at a central school, not a teaching point",
                at(file, line, "point_class"),
                r.point_class
            )),
            Some(SchoolKind::Point) => {}
        }
        if demand
            .entry(r.point_class.clone())
            .or_default()
            .insert(r.subject.clone(), r.periods)
            .is_some()
        {
            problems.push(format!(
                "{}: {:?} {:?} is listed twice",
                at(file, line, "subject"),
                r.point_class,
                r.subject
            ));
        }
    }

    let mut sfu_nodes = Vec::new();
    if let Some(t) = files.get("sfu_nodes.csv") {
        for (_, r) in rows::<NodeRow>("sfu_nodes.csv", t)? {
            sfu_nodes.push(SfuNode {
                id: r.id,
                capacity: r.capacity,
                counties: list(&r.counties),
            });
        }
    }

    let (name, mut opts) = options(files)?;
    if let Some(t) = files.get("last_term.csv") {
        let file = "last_term.csv";
        for (line, p) in rows::<Pairing>(file, t)? {
            if !class_kind.contains_key(&p.point_class) {
                problems.push(format!(
                    "{}: unknown class {:?}",
                    at(file, line, "point_class"),
                    p.point_class
                ));
            }
            if !teacher_ids.contains(&p.teacher) {
                problems.push(format!(
                    "{}: unknown teacher {:?}",
                    at(file, line, "teacher"),
                    p.teacher
                ));
            }
            opts.last_term.push(p);
        }
    }

    if !problems.is_empty() {
        return Err(LoadError::Invalid {
            file: bundle,
            problems,
        });
    }
    let region = Region {
        name: name.unwrap_or_else(|| default_name.to_string()),
        schools,
        classes,
        teachers,
        central_timetable,
        demand,
        sfu_nodes,
        options: opts,
    };
    // What is left (contradictions such as double-booked teachers) is checked on the whole.
    let problems = check_region(&region);
    if problems.is_empty() {
        Ok(region)
    } else {
        Err(LoadError::Invalid {
            file: bundle,
            problems,
        })
    }
}

/// Reads every `*.csv` and `options.json` of a directory as a bundle.
pub fn load_dir(dir: &Path) -> Result<Region, LoadError> {
    let io = |source| LoadError::Io {
        file: dir.display().to_string(),
        source,
    };
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".csv") || name == "options.json" {
            let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Io {
                file: path.display().to_string(),
                source,
            })?;
            files.insert(name.to_string(), text);
        }
    }
    let default_name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("region")
        .to_string();
    region_from_files(&files, &default_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle() -> BTreeMap<String, String> {
        let mut f = BTreeMap::new();
        f.insert(
            "schools.csv".into(),
            "id,name,kind,county,lat,lon,downlink_kbps,uplink_kbps\n\
             z1,Z,central,c1,30,110,20000,10000\n\
             p1,P,point,c1,30.1,110.1,4000,2000\n"
                .into(),
        );
        f.insert(
            "bells.csv".into(),
            "school,weekdays,period,start,end\n\
             z1,1-5,1,08:00,08:40\nz1,1-5,2,08:50,09:30\n\
             p1,1-4,1,08:00,08:40\np1,5,1,08:00,08:40\n"
                .into(),
        );
        f.insert(
            "classes.csv".into(),
            "id,school,grade,students\nz1-g3,z1,3,40\np1-g3,p1,3,8\n".into(),
        );
        f.insert(
            "teachers.csv".into(),
            "id,name,school,subjects,max_periods_week,max_periods_day,unavailable,grades\n\
             t1,T,z1,english;music,10,3,3:1;4:2,3\n"
                .into(),
        );
        f.insert(
            "demand.csv".into(),
            "point_class,subject,periods\np1-g3,english,2\n".into(),
        );
        f
    }

    #[test]
    fn a_bundle_becomes_a_region() {
        let mut f = bundle();
        f.insert(
            "options.csv".into(),
            "key,value\nname,test\nmax_receivers,2\npriority.english,3\n".into(),
        );
        let r = region_from_files(&f, "dir").unwrap();
        assert_eq!(r.name, "test");
        assert_eq!(r.schools[1].bells.len(), 2);
        assert_eq!(r.schools[1].bells[0].weekdays, vec![1, 2, 3, 4]);
        assert_eq!(r.schools[0].bells[0].periods.len(), 2);
        assert_eq!(r.teachers[0].subjects, vec!["english", "music"]);
        assert_eq!(
            r.teachers[0].unavailable,
            vec![
                SlotRef {
                    weekday: 3,
                    period: 1
                },
                SlotRef {
                    weekday: 4,
                    period: 2
                }
            ]
        );
        assert_eq!(r.options.max_receivers, 2);
        assert_eq!(r.options.priority("english"), 3);
        assert!(r.central_timetable.is_none());
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let mut f = bundle();
        f.insert(
            "classes.csv".into(),
            "id,school,grade,students\nz1-g3,z1,3,40\np1-g3,p1,three,8\n".into(),
        );
        let e = region_from_files(&f, "d").unwrap_err().to_string();
        assert!(e.starts_with("classes.csv:3:3: field `grade`"), "{e}");

        let mut f = bundle();
        f.insert(
            "demand.csv".into(),
            "point_class,subject,periods\np1-g3,english,2\np9-g3,english,1\n".into(),
        );
        let e = region_from_files(&f, "d").unwrap_err().to_string();
        assert!(
            e.contains("demand.csv:3:1: field `point_class`: unknown class \"p9-g3\""),
            "{e}"
        );

        let mut f = bundle();
        f.insert("teacher.csv".into(), "id\n".into());
        f.remove("demand.csv");
        let e = region_from_files(&f, "d").unwrap_err().to_string();
        assert!(e.contains("teacher.csv: unknown file"), "{e}");
        assert!(e.contains("demand.csv: missing"), "{e}");

        let mut f = bundle();
        f.insert(
            "schools.csv".into(),
            "id,name,kind,county,lat,lon,downlink_kbps\nz1,Z,central,c1,30,110,20000\n".into(),
        );
        let e = region_from_files(&f, "d").unwrap_err().to_string();
        assert!(
            e.contains("schools.csv:1:1: field `uplink_kbps`: missing column"),
            "{e}"
        );

        let mut f = bundle();
        f.insert(
            "options.csv".into(),
            "key,value\nmax_receivers,lots\n".into(),
        );
        let e = region_from_files(&f, "d").unwrap_err().to_string();
        assert!(
            e.starts_with("options.csv:2:2: field `max_receivers`"),
            "{e}"
        );
    }
}
