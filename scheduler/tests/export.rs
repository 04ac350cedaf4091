//! Exports: iCalendar files parse with an independent parser and hold every lesson; CSV rows.

use scheduler::export::{csv, ical};
use scheduler::generate::{generate, Preset};
use scheduler::solve::{solve, SolveOptions};

#[test]
fn ical_and_csv_exports_parse() {
    let region = generate(Preset::Tiny, 3);
    let plan = solve(&region, &SolveOptions::default(), &|_, _| {});
    assert!(!plan.lessons.is_empty());
    let dir = std::env::temp_dir().join(format!("scheduler-export-{}", std::process::id()));
    let n = ical::export(&plan, &dir.join("ics"), &ical::CalOptions::default()).unwrap();
    assert!(n >= 3);
    let mut teacher_events = 0;
    for entry in std::fs::read_dir(dir.join("ics")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let unfolded = icalendar::parser::unfold(&text);
        let cal = icalendar::parser::read_calendar(&unfolded)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let events: Vec<_> = cal
            .components
            .iter()
            .filter(|c| c.name.as_str() == "VEVENT")
            .collect();
        assert!(!events.is_empty(), "{}", path.display());
        for ev in &events {
            let prop = |n: &str| {
                ev.properties
                    .iter()
                    .find(|p| p.name.as_str() == n)
                    .map(|p| p.val.as_str().to_string())
            };
            let start = prop("DTSTART").unwrap();
            assert!(
                start.parse::<icalendar::CalendarDateTime>().is_ok(),
                "{start}"
            );
            assert!(prop("RRULE").unwrap().starts_with("FREQ=WEEKLY"));
            assert!(prop("SUMMARY").is_some() && prop("UID").is_some());
        }
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("teacher-")
        {
            teacher_events += events.len();
        }
    }
    // Each lesson has exactly one teacher calendar entry.
    assert_eq!(teacher_events, plan.lessons.len());

    csv::export(&plan, &dir.join("csv")).unwrap();
    let lessons = std::fs::read_to_string(dir.join("csv/lessons.csv")).unwrap();
    assert_eq!(lessons.lines().count(), plan.lessons.len() + 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn lesson_tokens_carry_the_room() {
    let region = generate(Preset::Tiny, 3);
    let plan = solve(&region, &SolveOptions::default(), &|_, _| {});
    let l = &plan.lessons[0];
    assert!(scheduler::model::is_room_name(&l.room));
    let m = scheduler::token::Minter::new("secret").unwrap();
    let toks = m
        .lesson_tokens(l, std::time::Duration::from_secs(3600), Some("county-a-1"))
        .unwrap();
    assert_eq!(
        toks.len(),
        1 + l.receivers.len() + l.host_class.is_some() as usize
    );
    for t in &toks {
        let c = m.verify(&t.token).unwrap();
        assert_eq!(c.room, l.room);
        // The teacher's token names the SFU node the lesson is taught from.
        let want = (c.role == scheduler::token::Role::Teacher).then_some("county-a-1");
        assert_eq!(c.origin.as_deref(), want, "{c:?}");
    }
}
