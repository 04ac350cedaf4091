//! HTTP: WHIP, WHEP, the room API, metrics, health and the pages.

mod api;
mod pages;
mod room_api;
mod whip;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::TokenKeys;
use crate::config::Config;
use crate::media::session::RtcSettings;
use crate::media::MediaHandle;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub keys: TokenKeys,
    pub media: MediaHandle,
    pub rtc: Arc<RtcSettings>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<Config>,
    /// This node in a cluster (None: alone).
    pub cluster: Option<Arc<crate::cluster::node::ClusterNode>>,
}

/// A JSON error body with its status.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.1 }));
        (self.0, body).into_response()
    }
}

pub fn router(state: AppState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
        ])
        .expose_headers([
            header::LOCATION,
            header::ETAG,
            header::LINK,
            header::HeaderName::from_static("accept-patch"),
        ]);
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/api/rooms", get(api::rooms))
        .route("/api/cluster", get(api::cluster))
        .route("/api/rooms/{room}", get(api::room))
        .route("/api/rooms/{room}/state", get(room_api::state))
        .route("/api/rooms/{room}/attendance", get(room_api::attendance))
        .route("/api/rooms/{room}/commands", post(room_api::command))
        .route("/api/rooms/{room}/{command}", post(room_api::named_command))
        .route("/rooms/{room}/events", get(room_api::events))
        .route("/whip/{room}", post(whip::post_whip).options(whip::options))
        .route("/whep/{room}", post(whip::post_whep).options(whip::options))
        .route(
            "/whip/{room}/{id}",
            patch(whip::patch_session).delete(whip::delete_session),
        )
        .route(
            "/whep/{room}/{id}",
            patch(whip::patch_session).delete(whip::delete_session),
        )
        .route("/", get(pages::index))
        .route("/{*path}", get(pages::asset))
        .layer(DefaultBodyLimit::max(limit))
        .layer(cors)
        .with_state(state)
}

async fn metrics(axum::extract::State(s): axum::extract::State<AppState>) -> Response {
    let mut r = s.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}
