//! Errors as JSON `{"error": "..."}` (plus details) with the status code that fits.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::model::LoadError;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError {
            status,
            body: json!({ "error": msg.into() }),
        }
    }
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, msg)
    }
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, msg)
    }
    /// Adds a detail field to the body.
    pub fn with(mut self, key: &str, v: impl Into<Value>) -> Self {
        self.body[key] = v.into();
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ApiError::conflict(m),
            e => {
                tracing::error!("store: {e}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

/// Schema errors are 400 with where they are; unknown ids and contradictions 422 with the list.
impl From<LoadError> for ApiError {
    fn from(e: LoadError) -> Self {
        let msg = e.to_string();
        match e {
            LoadError::Schema {
                file,
                line,
                column,
                field,
                message,
            } => ApiError::bad_request(msg)
                .with("file", file)
                .with("line", line)
                .with("column", column)
                .with("field", field)
                .with("message", message),
            LoadError::Invalid { problems, .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, msg).with("problems", problems)
            }
            LoadError::Io { .. } => ApiError::bad_request(msg),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
