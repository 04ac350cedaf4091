//! iCalendar (RFC 5545): one calendar per school, teacher and class, each lesson a weekly event in
//! the local (floating) time of the school where that participant sits.

use std::collections::BTreeMap;
use std::path::Path;

use super::{file_stem, write, ExportError};
use crate::model::{Lesson, Plan, Slot};

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// The term's first Monday, as days since the epoch.
pub fn parse_date(s: &str) -> Result<i64, ExportError> {
    let bad = || ExportError::Date(s.to_string());
    let mut it = s.split('-');
    let y: i64 = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let m: u32 = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let d: u32 = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    if it.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    Ok(days_from_civil(y, m, d))
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace(';', "\\;")
        .replace(',', "\\,")
        .replace('\n', "\\n")
}

/// Folds a content line at 75 octets without splitting a UTF-8 character.
fn fold(line: &str, out: &mut String) {
    let mut n = 0;
    for ch in line.chars() {
        if n + ch.len_utf8() > 75 {
            out.push_str("\r\n ");
            n = 1;
        }
        out.push(ch);
        n += ch.len_utf8();
    }
    out.push_str("\r\n");
}

#[derive(Debug, Clone)]
pub struct CalOptions {
    /// Days since the epoch of the Monday the term starts.
    pub term_start: i64,
    pub weeks: u32,
}

impl Default for CalOptions {
    fn default() -> Self {
        CalOptions {
            term_start: days_from_civil(2026, 9, 7),
            weeks: 18,
        }
    }
}

fn stamp(days: i64, minutes: u16) -> String {
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}00",
        minutes / 60,
        minutes % 60
    )
}

/// One calendar of `(lesson, the slot where this participant sits)`.
pub fn calendar(title: &str, events: &[(&Lesson, &Slot)], o: &CalOptions) -> String {
    let mut out = String::new();
    let mut line = |s: String| fold(&s, &mut out);
    line("BEGIN:VCALENDAR".into());
    line("VERSION:2.0".into());
    line("PRODID:-//zhuandi-ketang//scheduler//EN".into());
    line("CALSCALE:GREGORIAN".into());
    line(format!("X-WR-CALNAME:{}", escape(title)));
    for (l, s) in events {
        let day = o.term_start + l.weekday as i64 - 1;
        line("BEGIN:VEVENT".into());
        line(format!("UID:{}-{}@scheduler", l.id, file_stem(&s.school)));
        line(format!("DTSTAMP:{}Z", stamp(o.term_start, 0)));
        line(format!("DTSTART:{}", stamp(day, s.start.0)));
        line(format!("DTEND:{}", stamp(day, s.end.0)));
        line(format!("RRULE:FREQ=WEEKLY;COUNT={}", o.weeks));
        line(format!(
            "SUMMARY:{}",
            escape(&format!(
                "{} (grade {}) · {}",
                l.subject, l.grade, l.teacher
            ))
        ));
        line(format!(
            "LOCATION:{}",
            escape(&format!("{} period {}", s.school, s.period))
        ));
        let host = l.host_class.as_deref().unwrap_or("dedicated lesson");
        line(format!(
            "DESCRIPTION:{}",
            escape(&format!(
                "room {}\nhost {}\nreceivers {}",
                l.room,
                host,
                l.receivers.join(", ")
            ))
        ));
        line("END:VEVENT".into());
    }
    line("END:VCALENDAR".into());
    out
}

/// Every calendar of a plan by name (`school-ID`, `teacher-ID`, `class-ID`) with its events.
pub fn calendars(plan: &Plan) -> BTreeMap<String, Vec<(&Lesson, &Slot)>> {
    let mut cals: BTreeMap<String, Vec<(&Lesson, &Slot)>> = BTreeMap::new();
    for l in &plan.lessons {
        let host = &l.slots[0];
        cals.entry(format!("teacher-{}", l.teacher))
            .or_default()
            .push((l, host));
        cals.entry(format!("school-{}", host.school))
            .or_default()
            .push((l, host));
        if let Some(c) = &l.host_class {
            cals.entry(format!("class-{c}"))
                .or_default()
                .push((l, host));
        }
        for (r, s) in l.receivers.iter().zip(&l.slots[1..]) {
            cals.entry(format!("class-{r}")).or_default().push((l, s));
            let school = cals.entry(format!("school-{}", s.school)).or_default();
            // A school receiving one lesson in two classes shows it once.
            if !school.iter().any(|(x, _)| x.id == l.id) {
                school.push((l, s));
            }
        }
    }
    cals
}

/// Writes `school-*.ics`, `teacher-*.ics` and `class-*.ics` into `dir`; returns the file count.
pub fn export(plan: &Plan, dir: &Path, o: &CalOptions) -> Result<usize, ExportError> {
    std::fs::create_dir_all(dir).map_err(|source| ExportError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let cals = calendars(plan);
    for (name, events) in &cals {
        write(
            &dir.join(format!("{}.ics", file_stem(name))),
            &calendar(name, events, o),
        )?;
    }
    Ok(cals.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        let d = parse_date("2026-09-07").unwrap();
        assert_eq!(civil_from_days(d), (2026, 9, 7));
        assert_eq!(civil_from_days(d + 25), (2026, 10, 2));
        assert_eq!(stamp(d, 8 * 60 + 5), "20260907T080500");
        assert!(parse_date("2026-13-01").is_err());
    }

    #[test]
    fn long_lines_fold() {
        let mut out = String::new();
        fold(&"中".repeat(40), &mut out);
        assert!(out.split("\r\n").all(|l| l.len() <= 75));
    }
}
