//! Exports of a plan: iCalendar per school, teacher and class; CSV tables.

pub mod csv;
pub mod ical;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("csv: {0}")]
    Csv(#[from] ::csv::Error),
    #[error("term start {0:?} is not a YYYY-MM-DD date")]
    Date(String),
}

/// A file name made of an id: letters, digits, `-`, `_`, `.` only.
pub fn file_stem(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub(crate) fn write(path: &std::path::Path, text: &str) -> Result<(), ExportError> {
    std::fs::write(path, text).map_err(|source| ExportError::Io {
        path: path.display().to_string(),
        source,
    })
}
