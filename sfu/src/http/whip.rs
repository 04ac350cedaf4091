//! WHIP (RFC 9725) and WHEP: create a session from an SDP offer, trickle/restart ICE with
//! PATCH, leave with DELETE.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::auth::{bearer, AuthError, Claims, Role};
use crate::cluster::node::Placement;
use crate::forward::allocator::Policy;
use crate::forward::layer::LayerPref;
use crate::media::session::{accept_offer, parse_sdpfrag, SessionError, SessionKind};
use crate::media::{Command, LoopError, PatchOutcome};

const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

#[derive(Debug, Deserialize)]
pub struct WhepQuery {
    layer: Option<String>,
    #[serde(flatten)]
    cluster: ClusterQuery,
}

/// Query fields for a cluster: the client's region, whether another node placed this request
/// already, and the token carried across a redirect (browsers drop `Authorization` when a
/// redirect leaves the origin).
#[derive(Debug, Default, Deserialize)]
pub struct ClusterQuery {
    region: Option<String>,
    placed: Option<String>,
    access_token: Option<String>,
}

fn reject(s: &AppState, status: StatusCode, msg: impl Into<String>) -> Response {
    s.metrics
        .http_rejections
        .with_label_values(&[status.as_str()])
        .inc();
    ApiError(status, msg.into()).into_response()
}

fn auth_error(s: &AppState, e: AuthError) -> Response {
    let status = if e.is_forbidden() {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::UNAUTHORIZED
    };
    reject(s, status, e.to_string())
}

/// Room names become URL path segments and metric-free log fields: keep them plain.
pub(super) fn valid_room(room: &str) -> bool {
    !room.is_empty()
        && room.len() <= 64
        && room
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn header_token(headers: &HeaderMap) -> Option<&str> {
    bearer(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
}

fn authorize(s: &AppState, headers: &HeaderMap, room: &str) -> Result<Claims, AuthError> {
    s.keys.verify_for_room(header_token(headers), room)
}

fn is_content_type(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

#[derive(Debug, Deserialize)]
pub struct WhipQuery {
    policy: Option<Policy>,
    #[serde(flatten)]
    cluster: ClusterQuery,
}

pub async fn post_whip(
    State(s): State<AppState>,
    Path(room): Path<String>,
    uri: axum::http::Uri,
    query: Result<Query<WhipQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (policy, cq) = match query {
        Ok(Query(q)) => (q.policy, q.cluster),
        Err(_) => {
            return reject(
                &s,
                StatusCode::BAD_REQUEST,
                "policy is lecture (courseware first) or camera (camera first)",
            )
        }
    };
    create(
        s,
        room,
        headers,
        body,
        SessionKind::Publish,
        LayerPref::High,
        policy,
        cq,
        uri.query().unwrap_or(""),
    )
    .await
}

pub async fn post_whep(
    State(s): State<AppState>,
    Path(room): Path<String>,
    uri: axum::http::Uri,
    Query(q): Query<WhepQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pref = match q.layer.as_deref().map(str::parse::<LayerPref>) {
        None => LayerPref::High,
        Some(Ok(p)) => p,
        Some(Err(e)) => return reject(&s, StatusCode::BAD_REQUEST, e),
    };
    create(
        s,
        room,
        headers,
        body,
        SessionKind::Subscribe,
        pref,
        None,
        q.cluster,
        uri.query().unwrap_or(""),
    )
    .await
}

/// The query for the node a request is redirected to: what the client sent, marked as
/// placed, with the token when it came in a header.
fn redirect_query(query: &str, token: Option<&str>) -> String {
    let mut parts: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            !(p.starts_with("placed=") || (token.is_some() && p.starts_with("access_token=")))
        })
        .map(str::to_string)
        .collect();
    parts.push("placed=1".into());
    if let Some(t) = token {
        // JWTs are URL-safe (base64url and dots).
        parts.push(format!("access_token={t}"));
    }
    parts.join("&")
}

#[allow(clippy::too_many_arguments)]
async fn create(
    s: AppState,
    room: String,
    headers: HeaderMap,
    body: Bytes,
    kind: SessionKind,
    pref: LayerPref,
    policy: Option<Policy>,
    cq: ClusterQuery,
    query: &str,
) -> Response {
    if !valid_room(&room) {
        return reject(
            &s,
            StatusCode::BAD_REQUEST,
            "room names use letters, digits, '-', '_' and '.' (at most 64)",
        );
    }
    let token = header_token(&headers).or(cq.access_token.as_deref());
    let claims = match s.keys.verify_for_room(token, &room) {
        Ok(c) => c,
        Err(e) => return auth_error(&s, e),
    };
    // The teacher (or an admin) publishes the lesson; a classroom publishes its own feed;
    // an observer (巡课) only watches.
    if kind == SessionKind::Publish && claims.role == Role::Observer {
        return reject(
            &s,
            StatusCode::FORBIDDEN,
            "role observer may not publish (observers only watch)",
        );
    }
    if !is_content_type(&headers, SDP) {
        return reject(
            &s,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the offer as application/sdp",
        );
    }
    let Ok(offer) = String::from_utf8(body.to_vec()) else {
        return reject(&s, StatusCode::BAD_REQUEST, "the offer is not UTF-8 text");
    };
    if let Some(cluster) = &s.cluster {
        let teaches = matches!(claims.role, Role::Teacher | Role::Admin);
        let placed = cq.placed.is_some();
        let here = cluster
            .place(
                &room,
                teaches,
                kind == SessionKind::Publish,
                cq.region.as_deref(),
                claims.origin.as_deref(),
                placed,
            )
            .await;
        if let Placement::Elsewhere(base) = here {
            let path = if kind == SessionKind::Publish {
                "whip"
            } else {
                "whep"
            };
            let location = format!(
                "{}/{path}/{room}?{}",
                base.trim_end_matches('/'),
                redirect_query(query, header_token(&headers))
            );
            let mut resp = StatusCode::TEMPORARY_REDIRECT.into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            return resp;
        }
    }
    let id = format!("{:016x}", rand::random::<u64>());
    let settings = s.rtc.clone();
    let (room2, id2) = (room.clone(), id.clone());
    let built = tokio::task::spawn_blocking(move || {
        accept_offer(
            &settings,
            id2,
            room2,
            claims,
            kind,
            pref,
            &offer,
            Instant::now(),
        )
    })
    .await;
    let ns = match built {
        Ok(Ok(mut ns)) => {
            ns.policy = policy;
            ns
        }
        Ok(Err(e @ SessionError::UnsupportedCodec(_))) => {
            return reject(&s, StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        Ok(Err(e)) => return reject(&s, StatusCode::BAD_REQUEST, e.to_string()),
        Err(_) => {
            return reject(
                &s,
                StatusCode::INTERNAL_SERVER_ERROR,
                "offer handling failed",
            )
        }
    };
    let answer = ns.answer.clone();
    let etag = match s.media.call(|tx| Command::Add(Box::new(ns), tx)).await {
        Ok(Ok(etag)) => etag,
        Ok(Err(LoopError::Conflict(m))) => return reject(&s, StatusCode::CONFLICT, m),
        Ok(Err(LoopError::Forbidden(m))) => return reject(&s, StatusCode::FORBIDDEN, m),
        Ok(Err(e)) | Err(e) => return reject(&s, StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let location = format!(
        "/{}/{}/{}",
        if kind == SessionKind::Publish {
            "whip"
        } else {
            "whep"
        },
        room,
        id
    );
    let mut resp = (StatusCode::CREATED, answer).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert("accept-patch", HeaderValue::from_static(SDPFRAG));
    add_ice_links(&s, h);
    resp
}

fn add_ice_links(s: &AppState, h: &mut HeaderMap) {
    for link in s.config.ice_server_links() {
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.append(header::LINK, v);
        }
    }
}

/// OPTIONS on the endpoint: what it accepts and its ICE servers (RFC 9725 section 4.6).
pub async fn options(State(s): State<AppState>) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(header::ALLOW, HeaderValue::from_static("OPTIONS, POST"));
    h.insert("accept-post", HeaderValue::from_static(SDP));
    add_ice_links(&s, h);
    resp
}

pub async fn patch_session(
    State(s): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = authorize(&s, &headers, &room) {
        return auth_error(&s, e);
    }
    if !is_content_type(&headers, SDPFRAG) {
        return reject(
            &s,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("PATCH takes {SDPFRAG}"),
        );
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return reject(
            &s,
            StatusCode::BAD_REQUEST,
            "the fragment is not UTF-8 text",
        );
    };
    let frag = parse_sdpfrag(text);
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let res = s
        .media
        .call(|reply| Command::Patch {
            room,
            id,
            if_match,
            frag,
            reply,
        })
        .await;
    match res {
        Ok(Ok(PatchOutcome::Trickled)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Ok(PatchOutcome::Restarted { etag, frag })) => {
            let mut r = (StatusCode::OK, frag).into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(SDPFRAG));
            if let Ok(v) = HeaderValue::from_str(&etag) {
                r.headers_mut().insert(header::ETAG, v);
            }
            r
        }
        Ok(Err(LoopError::NotFound)) => reject(&s, StatusCode::NOT_FOUND, "no such session"),
        Ok(Err(LoopError::PreconditionFailed)) => reject(
            &s,
            StatusCode::PRECONDITION_FAILED,
            LoopError::PreconditionFailed.to_string(),
        ),
        Ok(Err(e @ LoopError::Restart(_))) => reject(&s, StatusCode::BAD_REQUEST, e.to_string()),
        Ok(Err(e)) | Err(e) => reject(&s, StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

pub async fn delete_session(
    State(s): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let who = match authorize(&s, &headers, &room) {
        Ok(c) => c,
        Err(e) => return auth_error(&s, e),
    };
    match s
        .media
        .call(|reply| Command::Remove {
            room,
            id,
            who,
            reply,
        })
        .await
    {
        Ok(Ok(())) => StatusCode::OK.into_response(),
        Ok(Err(LoopError::NotFound)) => reject(&s, StatusCode::NOT_FOUND, "no such session"),
        Ok(Err(LoopError::Forbidden(m))) => reject(&s, StatusCode::FORBIDDEN, m),
        Ok(Err(e)) | Err(e) => reject(&s, StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_carry_the_token_and_the_placement() {
        assert_eq!(
            redirect_query("layer=low&region=east", Some("a.b.c")),
            "layer=low&region=east&placed=1&access_token=a.b.c"
        );
        // Already placed or tokened once: not repeated.
        assert_eq!(
            redirect_query("placed=1&access_token=old", Some("new")),
            "placed=1&access_token=new"
        );
        assert_eq!(
            redirect_query("access_token=t", None),
            "access_token=t&placed=1"
        );
    }

    #[test]
    fn room_names() {
        assert!(valid_room("math-101_a.b"));
        assert!(!valid_room(""));
        assert!(!valid_room("a/b"));
        assert!(!valid_room("课堂"));
        assert!(!valid_room(&"x".repeat(65)));
    }
}
