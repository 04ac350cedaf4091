//! `GET /api/rooms`, `GET /api/rooms/{room}` and `GET /api/cluster`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{ApiError, AppState};
use crate::media::Command;

pub async fn rooms(State(s): State<AppState>) -> Response {
    match s.media.call(Command::Rooms).await {
        Ok(rooms) => Json(serde_json::json!({ "rooms": rooms })).into_response(),
        Err(e) => ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

pub async fn room(State(s): State<AppState>, Path(room): Path<String>) -> Response {
    match s.media.call(|tx| Command::Room(room.clone(), tx)).await {
        Ok(Some(info)) => Json(info).into_response(),
        Ok(None) => ApiError(StatusCode::NOT_FOUND, format!("no room {room:?}")).into_response(),
        Err(e) => ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// `GET /api/cluster`: the nodes, each room's origin and edges, this node's relay hops.
pub async fn cluster(State(s): State<AppState>) -> Response {
    match &s.cluster {
        Some(c) => Json(c.snapshot().await).into_response(),
        None => Json(serde_json::json!({ "node": null, "nodes": [], "rooms": [], "links": [], "relays": [] }))
            .into_response(),
    }
}
