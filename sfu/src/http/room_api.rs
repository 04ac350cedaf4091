//! The interactive lesson over HTTP: room events on a WebSocket, the same commands as REST,
//! the lesson's state and its attendance.
//!
//! `GET /rooms/{room}/events?token=T` (WebSocket): first a `state` message with everything,
//! then one JSON message per event. Messages sent to it are commands (`{"type":"hand",
//! "raised":true}`), each answered with `{"type":"ok"}` or `{"type":"error"}`.
//! `POST /api/rooms/{room}/commands` takes the same JSON; `POST /api/rooms/{room}/{command}`
//! takes the command's fields only.

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::whip::valid_room;
use super::{ApiError, AppState};
use crate::auth::{bearer, AuthError, Claims, Role};
use crate::media::{Command, LoopError};
use crate::room::state::{attendance_csv, RoomSnapshot};
use crate::room::{CommandError, RoomCommand};

#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
    format: Option<String>,
}

fn auth_error(e: AuthError) -> ApiError {
    let status = if e.is_forbidden() {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::UNAUTHORIZED
    };
    ApiError(status, e.to_string())
}

/// The token from `Authorization: Bearer` or, for WebSockets and links, `?token=`.
fn authorize(
    s: &AppState,
    headers: &HeaderMap,
    q: &TokenQuery,
    room: &str,
) -> Result<Claims, ApiError> {
    if !valid_room(room) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "invalid room name".into(),
        ));
    }
    let header_token = bearer(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let token = header_token.or(q.token.as_deref());
    s.keys.verify_for_room(token, room).map_err(auth_error)
}

fn loop_status(e: &LoopError) -> StatusCode {
    match e {
        LoopError::NotFound => StatusCode::NOT_FOUND,
        LoopError::Rejected(CommandError::Forbidden { .. }) | LoopError::Forbidden(_) => {
            StatusCode::FORBIDDEN
        }
        LoopError::Rejected(CommandError::NotPresent(_)) => StatusCode::NOT_FOUND,
        LoopError::Rejected(CommandError::Conflict(_)) | LoopError::Conflict(_) => {
            StatusCode::CONFLICT
        }
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn loop_error(e: LoopError) -> Response {
    let status = loop_status(&e);
    let msg = match e {
        LoopError::NotFound => "no lesson in this room".to_string(),
        e => e.to_string(),
    };
    ApiError(status, msg).into_response()
}

/// Runs `cmd` as `who` in `room`: the room's state after it, or why not.
async fn apply(
    s: &AppState,
    room: String,
    who: Claims,
    cmd: RoomCommand,
) -> Result<RoomSnapshot, LoopError> {
    s.media
        .call(|reply| Command::RoomCommand {
            room,
            who,
            cmd,
            reply,
        })
        .await?
}

fn parse_command(body: &[u8], kind: Option<&str>) -> Result<RoomCommand, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let mut v: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| bad(format!("body is not JSON: {e}")))?
    };
    if let Some(k) = kind {
        let Some(obj) = v.as_object_mut() else {
            return Err(bad("the body must be a JSON object".into()));
        };
        obj.insert("type".into(), serde_json::Value::String(k.to_string()));
    }
    serde_json::from_value(v).map_err(|e| {
        bad(format!(
            "not a room command ({e}); commands: hand, stage, mute, pin, remove, start, end"
        ))
    })
}

/// A command over REST: `kind` comes from the path, or `None` for a `type` in the body.
async fn post_command(
    s: AppState,
    room: String,
    kind: Option<&str>,
    q: TokenQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let who = match authorize(&s, &headers, &q, &room) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let cmd = match parse_command(&body, kind) {
        Ok(cmd) => cmd,
        Err(r) => return r.into_response(),
    };
    match apply(&s, room, who, cmd).await {
        Ok(snap) => Json(snap).into_response(),
        Err(e) => loop_error(e),
    }
}

/// `POST /api/rooms/{room}/commands` with `{"type": ..., ...}`.
pub async fn command(
    State(s): State<AppState>,
    Path(room): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    post_command(s, room, None, q, headers, body).await
}

/// `POST /api/rooms/{room}/{hand|stage|mute|pin|remove|start|end}` with the fields only.
pub async fn named_command(
    State(s): State<AppState>,
    Path((room, name)): Path<(String, String)>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    post_command(s, room, Some(&name), q, headers, body).await
}

/// `GET /api/rooms/{room}/state`: hands, stage, mutes, tiles, participants.
pub async fn state(
    State(s): State<AppState>,
    Path(room): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&s, &headers, &q, &room) {
        return r.into_response();
    }
    match s.media.call(|tx| Command::State(room, tx)).await {
        Ok(Some(snap)) => Json(snap).into_response(),
        Ok(None) => loop_error(LoopError::NotFound),
        Err(e) => loop_error(e),
    }
}

/// `GET /api/rooms/{room}/attendance[?format=csv]`: the live lesson, or the last one ended.
pub async fn attendance(
    State(s): State<AppState>,
    Path(room): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    let who = match authorize(&s, &headers, &q, &room) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    if who.role == Role::Classroom {
        return ApiError(
            StatusCode::FORBIDDEN,
            "role classroom may not read the attendance".into(),
        )
        .into_response();
    }
    let report = match s.media.call(|tx| Command::Attendance(room, tx)).await {
        Ok(Some(r)) => r,
        Ok(None) => return loop_error(LoopError::NotFound),
        Err(e) => return loop_error(e),
    };
    let csv = q.format.as_deref() == Some("csv")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/csv"));
    if csv {
        let mut r = attendance_csv(&report.participants).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        return r;
    }
    Json(report).into_response()
}

/// `GET /rooms/{room}/events?token=T`: the room's events over a WebSocket.
pub async fn events(
    State(s): State<AppState>,
    Path(room): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let who = match authorize(&s, &headers, &q, &room) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    ws.max_message_size(16 * 1024)
        .on_upgrade(move |socket| events_socket(s, room, who, socket))
}

/// Whether a `layers` event names `sub` as its publisher.
fn is_for(json: &str, sub: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .is_some_and(|v| v["sub"] == sub)
}

async fn send_json(socket: &mut WebSocket, v: &serde_json::Value) -> bool {
    socket
        .send(Message::Text(v.to_string().into()))
        .await
        .is_ok()
}

async fn events_socket(s: AppState, room: String, who: Claims, mut socket: WebSocket) {
    let subscribe = |room: String| move |reply| Command::Events { room, reply };
    let Ok((snap, mut rx)) = s.media.call(subscribe(room.clone())).await else {
        return;
    };
    let mut hello = serde_json::to_value(&snap).unwrap_or_default();
    hello["type"] = "state".into();
    hello["you"] = serde_json::json!({"sub": who.sub, "role": who.role, "name": who.name});
    if !send_json(&mut socket, &hello).await {
        return;
    }
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(json) => {
                    // Link reports are for the teacher and observers; a classroom has its own.
                    if who.role == Role::Classroom && json.starts_with(r#"{"type":"quality""#) {
                        continue;
                    }
                    // Layer requests concern one publisher only.
                    if json.starts_with(r#"{"type":"layers""#) && !is_for(&json, &who.sub) {
                        continue;
                    }
                    if socket.send(Message::Text(json.to_string().into())).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    // Too slow to keep up: start again from the whole state.
                    let Ok((snap, new_rx)) = s.media.call(subscribe(room.clone())).await else {
                        return;
                    };
                    rx = new_rx;
                    let mut v = serde_json::to_value(&snap).unwrap_or_default();
                    v["type"] = "state".into();
                    if !send_json(&mut socket, &v).await {
                        return;
                    }
                }
                Err(RecvError::Closed) => {
                    // The lesson ended and the room is gone.
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            },
            msg = socket.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                let reply = match serde_json::from_str::<RoomCommand>(&text) {
                    Err(e) => serde_json::json!({"type": "error", "status": 400, "error": format!("not a room command: {e}")}),
                    Ok(cmd) => {
                        let name = cmd.name();
                        match apply(&s, room.clone(), who.clone(), cmd).await {
                            Ok(_) => serde_json::json!({"type": "ok", "command": name}),
                            Err(e) => {
                                let status = loop_status(&e).as_u16();
                                serde_json::json!({"type": "error", "command": name, "status": status, "error": e.to_string()})
                            }
                        }
                    }
                };
                if !send_json(&mut socket, &reply).await {
                    return;
                }
            }
        }
    }
}
