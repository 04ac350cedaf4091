//! The timetable page (web/timetable.html and what it loads), embedded in the binary: a county
//! office needs no internet and no Node to use it.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;

use super::ApiError;

#[derive(Embed)]
#[folder = "../web/"]
#[include = "timetable.html"]
#[include = "js/timetable.js"]
#[include = "js/i18n.js"]
#[include = "css/lesson.css"]
struct Pages;

fn mime(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn serve(path: &str) -> Response {
    match Pages::get(path) {
        Some(f) => (
            [
                (header::CONTENT_TYPE, mime(path)),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            f.data.into_owned(),
        )
            .into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, format!("no page {path:?}")).into_response(),
    }
}

/// `/`: the timetable.
pub async fn timetable() -> Response {
    serve("timetable.html")
}

/// `/timetable.html`, `/js/...`, `/css/...`.
pub async fn asset(Path(path): Path<String>) -> Response {
    serve(&path)
}
