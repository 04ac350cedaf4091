//! The region file (what flows in) and the plan file (what flows out), with loading that names the
//! file, line and field of a schema error, and checks for unknown ids and contradictions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Minutes since midnight, written `"HH:MM"` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClockTime(pub u16);

impl ClockTime {
    pub fn hm(h: u16, m: u16) -> Self {
        ClockTime(h * 60 + m)
    }
    pub fn minutes(self) -> u16 {
        self.0
    }
}

impl fmt::Display for ClockTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl Serialize for ClockTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ClockTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bad = || serde::de::Error::custom(format!("time {s:?} is not HH:MM"));
        let (h, m) = s.split_once(':').ok_or_else(bad)?;
        let h: u16 = h.parse().map_err(|_| bad())?;
        let m: u16 = m.parse().map_err(|_| bad())?;
        if h > 23 || m > 59 {
            return Err(bad());
        }
        Ok(ClockTime(h * 60 + m))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchoolKind {
    Central,
    Point,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
}

impl Location {
    /// Great-circle distance in km; used to prefer near central schools.
    pub fn km(&self, o: &Location) -> f64 {
        let (p1, p2) = (self.lat.to_radians(), o.lat.to_radians());
        let dp = p2 - p1;
        let dl = (o.lon - self.lon).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        6371.0 * 2.0 * a.sqrt().asin()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bell {
    pub start: ClockTime,
    pub end: ClockTime,
}

/// The bell schedule shared by some weekdays (1 = Monday .. 7 = Sunday). Period numbers start at 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BellDays {
    pub weekdays: Vec<u8>,
    pub periods: Vec<Bell>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct School {
    pub id: String,
    pub name: String,
    pub kind: SchoolKind,
    pub county: String,
    pub location: Location,
    pub downlink_kbps: u32,
    pub uplink_kbps: u32,
    pub bells: Vec<BellDays>,
}

impl School {
    /// The bell of `period` (1-based) on `weekday`, if the school has one.
    pub fn bell(&self, weekday: u8, period: u8) -> Option<Bell> {
        self.periods(weekday)?
            .get((period as usize).checked_sub(1)?)
            .copied()
    }
    pub fn periods(&self, weekday: u8) -> Option<&[Bell]> {
        self.bells
            .iter()
            .find(|b| b.weekdays.contains(&weekday))
            .map(|b| b.periods.as_slice())
    }
    pub fn weekdays(&self) -> BTreeSet<u8> {
        self.bells
            .iter()
            .flat_map(|b| b.weekdays.iter().copied())
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Class {
    pub id: String,
    pub school: String,
    pub grade: u8,
    pub students: u32,
}

/// A weekday and period at the teacher's (or class's) own school.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotRef {
    pub weekday: u8,
    pub period: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Teacher {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub school: String,
    pub subjects: Vec<String>,
    pub max_periods_week: u32,
    pub max_periods_day: u32,
    #[serde(default)]
    pub unavailable: Vec<SlotRef>,
    /// Grades this teacher may teach in dedicated lessons; empty means any.
    #[serde(default)]
    pub grades: Vec<u8>,
}

/// One existing lesson of a central class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimetableEntry {
    pub class: String,
    pub subject: String,
    pub teacher: String,
    pub weekday: u8,
    pub period: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SfuNode {
    pub id: String,
    /// Classrooms (host and receivers) the node carries at once.
    pub capacity: u32,
    /// Counties this node serves; empty means every county.
    #[serde(default)]
    pub counties: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SameCounty {
    #[default]
    Hard,
    Penalty,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pairing {
    pub point_class: String,
    pub subject: String,
    pub teacher: String,
}

fn default_kbps() -> u32 {
    1500
}
fn default_receivers() -> u8 {
    3
}
fn default_minutes() -> u16 {
    40
}
fn default_candidates() -> u32 {
    5
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    #[serde(default = "default_kbps")]
    pub lesson_kbps: u32,
    #[serde(default = "default_receivers")]
    pub max_receivers: u8,
    #[serde(default = "default_minutes")]
    pub lesson_minutes: u16,
    #[serde(default)]
    pub same_county: SameCounty,
    #[serde(default)]
    pub last_term: Vec<Pairing>,
    /// Weight of an unmet period per subject (default 1).
    #[serde(default)]
    pub subject_priority: BTreeMap<String, u32>,
    /// Dedicated lessons (no host class) in teachers' free periods; default: only without a
    /// central timetable (coplan mode).
    #[serde(default)]
    pub dedicated_lessons: Option<bool>,
    /// Per point class and subject, how many of the nearest qualified teachers are candidates
    /// (last term's teacher always is). Bounds model size; optimality is within this set.
    #[serde(default = "default_candidates")]
    pub candidate_teachers: u32,
}

impl Default for Options {
    fn default() -> Self {
        serde_json::from_str("{}").expect("defaults")
    }
}

impl Options {
    pub fn priority(&self, subject: &str) -> u32 {
        self.subject_priority.get(subject).copied().unwrap_or(1)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    #[serde(default)]
    pub name: String,
    pub schools: Vec<School>,
    pub classes: Vec<Class>,
    pub teachers: Vec<Teacher>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub central_timetable: Option<Vec<TimetableEntry>>,
    /// point class id -> subject -> periods per week.
    pub demand: BTreeMap<String, BTreeMap<String, u32>>,
    #[serde(default)]
    pub sfu_nodes: Vec<SfuNode>,
    #[serde(default)]
    pub options: Options,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Adopt,
    Coplan,
}

impl Region {
    pub fn mode(&self) -> Mode {
        if self.central_timetable.is_some() {
            Mode::Adopt
        } else {
            Mode::Coplan
        }
    }
    pub fn dedicated_allowed(&self) -> bool {
        self.options
            .dedicated_lessons
            .unwrap_or(self.mode() == Mode::Coplan)
    }
}

// ---------------------------------------------------------------- plan

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slot {
    pub school: String,
    pub period: u8,
    pub start: ClockTime,
    pub end: ClockTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lesson {
    pub id: String,
    pub subject: String,
    pub grade: u8,
    pub teacher: String,
    pub host_class: Option<String>,
    pub weekday: u8,
    /// The host's slot first, then one per receiver in the order of `receivers`.
    pub slots: Vec<Slot>,
    pub receivers: Vec<String>,
    pub sfu_node: Option<String>,
    pub room: String,
}

/// Why a demanded period stayed unmet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No central teacher in reach teaches this subject (and grade).
    NoTeacher,
    /// Teachers exist, but no central period overlaps one of the point's periods long enough.
    NoCommonWindow,
    TeacherLoad,
    ReceiverCap,
    Bandwidth,
    ServerCapacity,
    /// The point class is already in another lesson at every usable time.
    ClassBusy,
    /// The subject already has its lesson on each usable day.
    OncePerDay,
    /// The class's one driving teacher for this subject has no further usable lesson.
    OneTeacher,
    /// The candidate teacher is double booked or unavailable at the usable times.
    TeacherBusy,
    /// The optimum was not reached in the time limit; this period might be placeable.
    TimeLimit,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unmet {
    pub point_class: String,
    pub subject: String,
    pub periods: u32,
    pub reasons: Vec<Reason>,
}

/// The parts of the objective, most important first (compared lexicographically).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveTerms {
    pub unmet_weighted: u64,
    pub cross_county: u64,
    pub changes: u64,
    pub lessons: u64,
    pub edge_periods: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    pub coverage: f64,
    pub objective: f64,
    pub bound: f64,
    pub gap: f64,
    pub solve_seconds: f64,
    #[serde(default)]
    pub first_feasible_seconds: f64,
    #[serde(default)]
    pub demand_periods: u64,
    #[serde(default)]
    pub met_periods: u64,
    #[serde(default)]
    pub terms: ObjectiveTerms,
    #[serde(default)]
    pub counties: u32,
    #[serde(default)]
    pub counties_optimal: u32,
    /// Counties whose coverage (the first term) is proven optimal.
    #[serde(default)]
    pub counties_coverage_optimal: u32,
    /// Proven lower bound on `terms.unmet_weighted` (equal: coverage is optimal).
    #[serde(default)]
    pub unmet_weighted_bound: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    #[serde(default)]
    pub region: String,
    pub mode: Mode,
    pub lessons: Vec<Lesson>,
    pub pairings: Vec<Pairing>,
    pub unmet: Vec<Unmet>,
    pub stats: Stats,
}

// ---------------------------------------------------------------- loading

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: field `{field}`: {message}")]
    Schema {
        file: String,
        line: usize,
        column: usize,
        field: String,
        message: String,
    },
    #[error("{file}: {} problem(s):\n  {}", problems.len(), problems.join("\n  "))]
    Invalid { file: String, problems: Vec<String> },
}

/// Parses JSON into `T`, naming the line, column and field path on error.
pub fn parse_json<T: serde::de::DeserializeOwned>(file: &str, text: &str) -> Result<T, LoadError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        LoadError::Schema {
            file: file.to_string(),
            line: inner.line(),
            column: inner.column(),
            field,
            // serde_json appends " at line L column C"; the prefix already says where.
            message: {
                let m = inner.to_string();
                match m.rfind(" at line ") {
                    Some(i) => m[..i].to_string(),
                    None => m,
                }
            },
        }
    })
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        file: path.display().to_string(),
        source,
    })
}

/// Reads, parses and checks a region file.
pub fn load_region(path: &Path) -> Result<Region, LoadError> {
    let text = read(path)?;
    region_from_str(&path.display().to_string(), &text)
}

pub fn region_from_str(file: &str, text: &str) -> Result<Region, LoadError> {
    let region: Region = parse_json(file, text)?;
    let problems = check_region(&region);
    if problems.is_empty() {
        Ok(region)
    } else {
        Err(LoadError::Invalid {
            file: file.to_string(),
            problems,
        })
    }
}

pub fn load_plan(path: &Path) -> Result<Plan, LoadError> {
    let text = read(path)?;
    parse_json(&path.display().to_string(), &text)
}

/// Unknown ids and contradictions in a region, each as one readable line.
pub fn check_region(r: &Region) -> Vec<String> {
    let mut p = Vec::new();
    let mut schools: HashMap<&str, &School> = HashMap::new();
    for s in &r.schools {
        if schools.insert(&s.id, s).is_some() {
            p.push(format!("schools: duplicate id {:?}", s.id));
        }
        let mut days = BTreeSet::new();
        for b in &s.bells {
            for &d in &b.weekdays {
                if !(1..=7).contains(&d) {
                    p.push(format!("school {:?}: weekday {d} is not 1..7", s.id));
                }
                if !days.insert(d) {
                    p.push(format!(
                        "school {:?}: weekday {d} has two bell schedules",
                        s.id
                    ));
                }
            }
            for (i, bell) in b.periods.iter().enumerate() {
                if bell.end <= bell.start {
                    p.push(format!(
                        "school {:?}: period {} ends ({}) before it starts ({})",
                        s.id,
                        i + 1,
                        bell.end,
                        bell.start
                    ));
                }
                if i > 0 && b.periods[i - 1].end > bell.start {
                    p.push(format!(
                        "school {:?}: period {} starts before period {} ends",
                        s.id,
                        i + 1,
                        i
                    ));
                }
            }
            if b.periods.len() > 20 {
                p.push(format!("school {:?}: more than 20 periods a day", s.id));
            }
        }
    }
    let mut classes: HashMap<&str, &Class> = HashMap::new();
    for c in &r.classes {
        if classes.insert(&c.id, c).is_some() {
            p.push(format!("classes: duplicate id {:?}", c.id));
        }
        if !schools.contains_key(c.school.as_str()) {
            p.push(format!("class {:?}: unknown school {:?}", c.id, c.school));
        }
    }
    let mut teachers: HashMap<&str, &Teacher> = HashMap::new();
    for t in &r.teachers {
        if teachers.insert(&t.id, t).is_some() {
            p.push(format!("teachers: duplicate id {:?}", t.id));
        }
        match schools.get(t.school.as_str()) {
            None => p.push(format!("teacher {:?}: unknown school {:?}", t.id, t.school)),
            Some(s) if s.kind != SchoolKind::Central => p.push(format!(
                "teacher {:?}: school {:?} is a teaching point, not a central school",
                t.id, t.school
            )),
            _ => {}
        }
        if t.max_periods_day > t.max_periods_week {
            p.push(format!(
                "teacher {:?}: max_periods_day {} exceeds max_periods_week {}",
                t.id, t.max_periods_day, t.max_periods_week
            ));
        }
    }
    if let Some(tt) = &r.central_timetable {
        let mut teacher_busy = HashMap::new();
        let mut class_busy = HashMap::new();
        let mut load: HashMap<&str, u32> = HashMap::new();
        let mut day_load: HashMap<(&str, u8), u32> = HashMap::new();
        for (i, e) in tt.iter().enumerate() {
            let at = format!("central_timetable[{i}]");
            let c = classes.get(e.class.as_str());
            let t = teachers.get(e.teacher.as_str());
            match c {
                None => p.push(format!("{at}: unknown class {:?}", e.class)),
                Some(c) => {
                    if schools.get(c.school.as_str()).map(|s| s.kind) != Some(SchoolKind::Central) {
                        p.push(format!(
                            "{at}: class {:?} is not at a central school",
                            e.class
                        ));
                    }
                    if let Some(s) = schools.get(c.school.as_str()) {
                        if s.bell(e.weekday, e.period).is_none() {
                            p.push(format!(
                                "{at}: school {:?} has no period {} on weekday {}",
                                s.id, e.period, e.weekday
                            ));
                        }
                    }
                }
            }
            match t {
                None => p.push(format!("{at}: unknown teacher {:?}", e.teacher)),
                Some(t) => {
                    if !t.subjects.contains(&e.subject) {
                        p.push(format!(
                            "{at}: teacher {:?} does not teach {:?}",
                            t.id, e.subject
                        ));
                    }
                    if let Some(c) = c {
                        if c.school != t.school {
                            p.push(format!(
                                "{at}: teacher {:?} (school {:?}) and class {:?} (school {:?}) are at different schools",
                                t.id, t.school, c.id, c.school
                            ));
                        }
                    }
                    if t.unavailable.contains(&SlotRef {
                        weekday: e.weekday,
                        period: e.period,
                    }) {
                        p.push(format!(
                            "{at}: teacher {:?} is unavailable on weekday {} period {}",
                            t.id, e.weekday, e.period
                        ));
                    }
                }
            }
            if let Some(prev) = teacher_busy.insert((e.teacher.as_str(), e.weekday, e.period), i) {
                p.push(format!(
                    "{at}: teacher {:?} is also in central_timetable[{prev}] at the same time",
                    e.teacher
                ));
            }
            if let Some(prev) = class_busy.insert((e.class.as_str(), e.weekday, e.period), i) {
                p.push(format!(
                    "{at}: class {:?} is also in central_timetable[{prev}] at the same time",
                    e.class
                ));
            }
            *load.entry(&e.teacher).or_default() += 1;
            *day_load.entry((&e.teacher, e.weekday)).or_default() += 1;
        }
        for (t, n) in load {
            if let Some(tt) = teachers.get(t) {
                if n > tt.max_periods_week {
                    p.push(format!(
                        "teacher {t:?}: central_timetable gives {n} periods a week, above max_periods_week {}",
                        tt.max_periods_week
                    ));
                }
            }
        }
        let mut over: Vec<_> = day_load
            .into_iter()
            .filter(|((t, _), n)| teachers.get(t).is_some_and(|tt| *n > tt.max_periods_day))
            .collect();
        over.sort();
        for ((t, d), n) in over {
            p.push(format!(
                "teacher {t:?}: central_timetable gives {n} periods on weekday {d}, above max_periods_day"
            ));
        }
    }
    for (c, subjects) in &r.demand {
        match classes.get(c.as_str()) {
            None => p.push(format!("demand: unknown point class {c:?}")),
            Some(cl) => {
                if schools.get(cl.school.as_str()).map(|s| s.kind) != Some(SchoolKind::Point) {
                    p.push(format!("demand: class {c:?} is not at a teaching point"));
                }
            }
        }
        for (s, &n) in subjects {
            if n > 40 {
                p.push(format!("demand: class {c:?} subject {s:?}: {n} periods a week is more than a week holds"));
            }
        }
    }
    let mut nodes = BTreeSet::new();
    for n in &r.sfu_nodes {
        if !nodes.insert(&n.id) {
            p.push(format!("sfu_nodes: duplicate id {:?}", n.id));
        }
    }
    let o = &r.options;
    if !(1..=6).contains(&o.max_receivers) {
        p.push(format!(
            "options.max_receivers: {} is outside 1..6",
            o.max_receivers
        ));
    }
    if o.lesson_minutes == 0 {
        p.push("options.lesson_minutes: must be positive".into());
    }
    if o.lesson_kbps == 0 {
        p.push("options.lesson_kbps: must be positive".into());
    }
    for (i, l) in o.last_term.iter().enumerate() {
        if !classes.contains_key(l.point_class.as_str()) {
            p.push(format!(
                "options.last_term[{i}]: unknown point class {:?}",
                l.point_class
            ));
        }
        if !teachers.contains_key(l.teacher.as_str()) {
            p.push(format!(
                "options.last_term[{i}]: unknown teacher {:?}",
                l.teacher
            ));
        }
    }
    p
}

/// A room name the SFU accepts: letters, digits, `-`, `_`, `.`; at most 64 characters.
pub fn room_name(parts: &[&str]) -> String {
    let raw = parts.join("-");
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.len() > 64 {
        // Keep it unique when truncating: a short hash of the whole name goes at the end.
        let h = raw.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        });
        s.truncate(55);
        s.push_str(&format!("-{:08x}", h as u32));
    }
    s
}

pub fn is_room_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_error_names_line_and_field() {
        let text = "{\n \"schools\": [],\n \"classes\": [{\"id\": \"c\", \"school\": \"s\",\n \"grade\": \"three\", \"students\": 3}],\n \"teachers\": [], \"demand\": {}}";
        let e = region_from_str("r.json", text).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("r.json:4:"), "{msg}");
        assert!(msg.contains("classes[0].grade"), "{msg}");
    }

    #[test]
    fn unknown_ids_are_reported() {
        let text = r#"{"schools": [], "classes": [{"id": "c", "school": "nowhere", "grade": 3, "students": 3}],
            "teachers": [], "demand": {"ghost": {"english": 2}}}"#;
        let msg = region_from_str("r.json", text).unwrap_err().to_string();
        assert!(msg.contains("unknown school \"nowhere\""), "{msg}");
        assert!(msg.contains("unknown point class \"ghost\""), "{msg}");
    }

    #[test]
    fn room_names_are_safe_and_short() {
        let r = room_name(&["老师", "d1", "p2"]);
        assert!(is_room_name(&r), "{r}");
        let long = room_name(&[&"x".repeat(100), "d1"]);
        assert!(is_room_name(&long) && long.len() <= 64);
        assert_ne!(long, room_name(&[&"x".repeat(100), "d2"]));
    }
}
