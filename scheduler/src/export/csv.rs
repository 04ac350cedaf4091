//! CSV tables of a plan: lessons (one row per lesson), pairings and unmet periods.

use std::path::Path;

use super::{write, ExportError};
use crate::model::Plan;

fn to_string(w: csv::Writer<Vec<u8>>) -> Result<String, ExportError> {
    let bytes = w
        .into_inner()
        .map_err(|e| ExportError::Csv(e.into_error().into()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

pub fn lessons_csv(plan: &Plan) -> Result<String, ExportError> {
    let mut w = csv::Writer::from_writer(vec![]);
    w.write_record([
        "id",
        "weekday",
        "subject",
        "grade",
        "teacher",
        "host_school",
        "host_class",
        "host_period",
        "start",
        "end",
        "receivers",
        "receiver_periods",
        "sfu_node",
        "room",
    ])?;
    for l in &plan.lessons {
        let h = &l.slots[0];
        let rp: Vec<String> = l.slots[1..]
            .iter()
            .map(|s| format!("{}:{}({}-{})", s.school, s.period, s.start, s.end))
            .collect();
        w.write_record([
            l.id.clone(),
            l.weekday.to_string(),
            l.subject.clone(),
            l.grade.to_string(),
            l.teacher.clone(),
            h.school.clone(),
            l.host_class.clone().unwrap_or_default(),
            h.period.to_string(),
            h.start.to_string(),
            h.end.to_string(),
            l.receivers.join(";"),
            rp.join(";"),
            l.sfu_node.clone().unwrap_or_default(),
            l.room.clone(),
        ])?;
    }
    to_string(w)
}

pub fn pairings_csv(plan: &Plan) -> Result<String, ExportError> {
    let mut w = csv::Writer::from_writer(vec![]);
    w.write_record(["point_class", "subject", "teacher"])?;
    for p in &plan.pairings {
        w.write_record([&p.point_class, &p.subject, &p.teacher])?;
    }
    to_string(w)
}

pub fn unmet_csv(plan: &Plan) -> Result<String, ExportError> {
    let mut w = csv::Writer::from_writer(vec![]);
    w.write_record(["point_class", "subject", "periods", "reasons"])?;
    for u in &plan.unmet {
        let reasons: Vec<String> = u
            .reasons
            .iter()
            .map(|r| {
                serde_json::to_value(r)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            })
            .collect();
        w.write_record([
            u.point_class.clone(),
            u.subject.clone(),
            u.periods.to_string(),
            reasons.join(";"),
        ])?;
    }
    to_string(w)
}

pub fn export(plan: &Plan, dir: &Path) -> Result<(), ExportError> {
    std::fs::create_dir_all(dir).map_err(|source| ExportError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    write(&dir.join("lessons.csv"), &lessons_csv(plan)?)?;
    write(&dir.join("pairings.csv"), &pairings_csv(plan)?)?;
    write(&dir.join("unmet.csv"), &unmet_csv(plan)?)?;
    Ok(())
}
