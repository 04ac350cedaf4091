//! `scheduler serve`: the REST API (axum) over the store. Handlers parse, call the pure core
//! (`model`, `import`, `edit`, `validate`, `export`, `token`) and store; solves run as jobs.

mod error;
pub mod jobs;
mod pages;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

pub use error::{ApiError, ApiResult};
use jobs::{Jobs, Work};

use crate::edit::{self, EditError};
use crate::export;
use crate::model::{parse_json, region_from_str, Plan, Region};
use crate::solve::SolveOptions;
use crate::store::{NewEdit, NewPlan, PlanInfo, Store};
use crate::token::{Minter, Role};

/// What the server needs besides the store.
#[derive(Clone)]
pub struct Config {
    /// The SFU's shared secret for join tokens (`CLASSROOM_SECRET`); without it `/join` is 503.
    pub secret: Option<String>,
    /// Base URL of the SFU that serves teacher.html and classroom.html.
    pub sfu_url: String,
    /// Largest request body accepted (bytes).
    pub max_body: usize,
    /// Lifetime of join tokens.
    pub token_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            secret: None,
            sfu_url: "http://127.0.0.1:7800".into(),
            max_body: 16 << 20,
            token_ttl: Duration::from_secs(4 * 3600),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    store: Store,
    jobs: Arc<Jobs>,
    cfg: Arc<Config>,
    minter: Option<Arc<Minter>>,
}

pub fn router(store: Store, cfg: Config) -> Result<Router, crate::token::TokenError> {
    let minter = match cfg.secret.as_deref() {
        Some(s) => Some(Arc::new(Minter::new(s)?)),
        None => None,
    };
    let state = AppState {
        jobs: Jobs::new(store.clone()),
        store,
        minter,
        cfg: Arc::new(cfg.clone()),
    };
    let api = Router::new()
        .route("/regions", get(list_regions).post(post_region))
        .route("/regions/{id}", get(get_region).delete(delete_region))
        .route("/regions/{id}/solve", post(solve_region))
        .route("/regions/{id}/plans", get(region_plans))
        .route("/regions/{id}/edits", get(region_edits))
        .route("/jobs/{id}", get(get_job))
        .route("/plans/{id}", get(get_plan))
        .route("/plans/{id}/info", get(plan_info))
        .route("/plans/{id}/validate", get(validate_plan))
        .route("/plans/{id}/resolve", post(resolve_plan))
        .route("/plans/{id}/ics", get(plan_ics))
        .route("/plans/{id}/csv", get(plan_csv))
        .route("/plans/{id}/lessons/{lesson}/lock", post(lock_lesson))
        .route("/plans/{id}/lessons/{lesson}/unlock", post(unlock_lesson))
        .route("/plans/{id}/lessons/{lesson}/move", post(move_lesson))
        .route("/plans/{id}/lessons/{lesson}/join", get(join_lesson));
    Ok(Router::new()
        .route("/", get(pages::timetable))
        .route("/api", get(index))
        .route("/healthz", get(healthz))
        .nest("/api", api)
        .route("/timetable.html", get(pages::timetable))
        .route(
            "/js/{file}",
            get(|Path(f): Path<String>| pages::asset(Path(format!("js/{f}")))),
        )
        .route(
            "/css/{file}",
            get(|Path(f): Path<String>| pages::asset(Path(format!("css/{f}")))),
        )
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        })
        .layer(DefaultBodyLimit::max(cfg.max_body))
        .with_state(state))
}

/// Serves until `shutdown` resolves; then jobs in flight are marked cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Store,
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let n = store
        .abandon_jobs("failed", "the server stopped before the job finished")
        .await?;
    if n > 0 {
        tracing::warn!("{n} job(s) of an earlier run marked failed");
    }
    let app = router(store.clone(), cfg)?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    let n = store
        .abandon_jobs("cancelled", "the server shut down")
        .await?;
    if n > 0 {
        tracing::info!("{n} job(s) cancelled at shutdown");
    }
    store.close().await;
    Ok(())
}

// ---------------------------------------------------------------- helpers

fn id_of(what: &str, s: &str) -> ApiResult<i64> {
    s.parse()
        .map_err(|_| ApiError::not_found(format!("no {what} {s:?}")))
}

async fn region_by(st: &AppState, id: &str) -> ApiResult<(crate::store::RegionInfo, Region)> {
    let n = id_of("region", id)?;
    st.store
        .region(n)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no region {n}")))
}

async fn plan_by(st: &AppState, id: &str) -> ApiResult<(PlanInfo, Plan)> {
    let n = id_of("plan", id)?;
    st.store
        .plan(n)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no plan {n}")))
}

/// A JSON body (empty allowed when `T` has defaults), with file/line/field on error.
fn json_body<T: serde::de::DeserializeOwned + Default>(what: &str, body: &Bytes) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::bad_request(format!("{what}: not UTF-8: {e}")))?;
    Ok(parse_json(what, text)?)
}

fn body_error(e: axum::extract::rejection::BytesRejection) -> ApiError {
    ApiError::new(e.status(), e.body_text())
}

// ---------------------------------------------------------------- general

async fn index() -> Json<Value> {
    Json(json!({
        "service": "scheduler",
        "endpoints": [
            "GET /healthz",
            "GET|POST /api/regions", "GET|DELETE /api/regions/{id}",
            "POST /api/regions/{id}/solve", "GET /api/regions/{id}/plans", "GET /api/regions/{id}/edits",
            "GET /api/jobs/{id}",
            "GET /api/plans/{id}", "GET /api/plans/{id}/info", "GET /api/plans/{id}/validate",
            "POST /api/plans/{id}/lessons/{lesson}/lock|unlock|move", "POST /api/plans/{id}/resolve",
            "GET /api/plans/{id}/ics?school=|teacher=|class=", "GET /api/plans/{id}/csv?table=lessons|pairings|unmet",
            "GET /api/plans/{id}/lessons/{lesson}/join"
        ]
    }))
}

async fn healthz(State(st): State<AppState>) -> ApiResult<Json<Value>> {
    st.store.ping().await?;
    Ok(Json(json!({"ok": true})))
}

// ---------------------------------------------------------------- regions

/// A region from a JSON body, or from a multipart upload of a CSV bundle (one part per file,
/// named by its file name).
async fn post_region(State(st): State<AppState>, req: Request) -> ApiResult<Response> {
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let region = if multipart {
        let mut mp = Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        let mut files = BTreeMap::new();
        while let Some(field) = mp
            .next_field()
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?
        {
            let name = field
                .file_name()
                .or(field.name())
                .unwrap_or("")
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string();
            let text = field
                .text()
                .await
                .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
            files.insert(name, text);
        }
        crate::import::csv::region_from_files(&files, "upload")?
    } else {
        let body = Bytes::from_request(req, &()).await.map_err(body_error)?;
        let text = std::str::from_utf8(&body)
            .map_err(|e| ApiError::bad_request(format!("region.json: not UTF-8: {e}")))?;
        region_from_str("region.json", text)?
    };
    let (info, created) = st.store.put_region(&region).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut body = serde_json::to_value(&info).expect("serializes");
    body["created"] = created.into();
    Ok((status, Json(body)).into_response())
}

async fn list_regions(State(st): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(Json(json!(st.store.regions().await?)))
}

async fn get_region(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Region>> {
    Ok(Json(region_by(&st, &id).await?.1))
}

async fn delete_region(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let n = id_of("region", &id)?;
    if st.store.delete_region(n).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no region {n}")))
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SolveBody {
    time_limit_s: Option<f64>,
    #[serde(default)]
    greedy_only: bool,
}

fn accepted(job: crate::store::JobInfo) -> Response {
    let loc = format!("/api/jobs/{}", job.id);
    let mut r = (
        StatusCode::ACCEPTED,
        Json(json!({"job": job.id, "state": job.state, "url": loc})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&loc) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

async fn solve_region(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<Response> {
    let body: SolveBody = json_body("solve request", &body.map_err(body_error)?)?;
    let limit = jobs::time_limit(body.time_limit_s).map_err(ApiError::bad_request)?;
    let (info, region) = region_by(&st, &id).await?;
    let job = st
        .store
        .create_job(info.id, "solve", None, limit.as_secs_f64())
        .await?;
    st.jobs.start(
        job.clone(),
        Work::Solve {
            region_id: info.id,
            region,
        },
        SolveOptions {
            time_limit: limit,
            greedy_only: body.greedy_only,
        },
    );
    Ok(accepted(job))
}

async fn region_plans(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let (info, _) = region_by(&st, &id).await?;
    Ok(Json(json!(st.store.plans(info.id).await?)))
}

async fn region_edits(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let (info, _) = region_by(&st, &id).await?;
    Ok(Json(json!(st.store.edits(info.id).await?)))
}

async fn get_job(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let n = id_of("job", &id)?;
    let job = st
        .store
        .job(n)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {n}")))?;
    Ok(Json(json!(st.jobs.view(job))))
}

// ---------------------------------------------------------------- plans

async fn get_plan(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Plan>> {
    Ok(Json(plan_by(&st, &id).await?.1))
}

async fn plan_info(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<PlanInfo>> {
    Ok(Json(plan_by(&st, &id).await?.0))
}

async fn validate_plan(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let (info, plan) = plan_by(&st, &id).await?;
    let (_, region) = region_by(&st, &info.region_id.to_string()).await?;
    let rep = crate::validate::validate(&region, &plan);
    Ok(Json(json!({
        "ok": rep.ok(),
        "errors": rep.errors,
        "coverage": rep.coverage,
        "objective": rep.objective,
        "terms": rep.terms,
        "demand_periods": rep.demand_periods,
        "met_periods": rep.met_periods,
    })))
}

async fn resolve_plan(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<Response> {
    let body: SolveBody = json_body("resolve request", &body.map_err(body_error)?)?;
    let limit = jobs::time_limit(body.time_limit_s).map_err(ApiError::bad_request)?;
    let (info, plan) = plan_by(&st, &id).await?;
    let (_, region) = region_by(&st, &info.region_id.to_string()).await?;
    let job = st
        .store
        .create_job(
            info.region_id,
            "resolve",
            Some(info.id),
            limit.as_secs_f64(),
        )
        .await?;
    st.jobs.start(
        job.clone(),
        Work::Resolve {
            region_id: info.region_id,
            region,
            parent_id: info.id,
            parent: Box::new(plan),
            locked: info.locked.iter().cloned().collect(),
        },
        SolveOptions {
            time_limit: limit,
            greedy_only: body.greedy_only,
        },
    );
    Ok(accepted(job))
}

/// Stores `plan` as the next version made by an edit of `parent`.
async fn store_edit(
    st: &AppState,
    parent: &PlanInfo,
    plan: &Plan,
    locked: &BTreeSet<String>,
    kind: &str,
    lesson: &str,
    payload: Value,
) -> ApiResult<Json<Value>> {
    let info = st
        .store
        .put_edit(
            &NewPlan {
                region_id: parent.region_id,
                parent_id: Some(parent.id),
                origin: kind,
                plan,
                locked,
            },
            &NewEdit {
                kind,
                lesson,
                payload,
            },
        )
        .await?;
    Ok(Json(json!({
        "plan": info.id,
        "version": info.version,
        "parent": parent.id,
        "locked": info.locked,
    })))
}

async fn lock_or_unlock(
    st: AppState,
    id: String,
    lesson: String,
    lock: bool,
) -> ApiResult<Json<Value>> {
    let (info, plan) = plan_by(&st, &id).await?;
    if !plan.lessons.iter().any(|l| l.id == lesson) {
        return Err(ApiError::not_found(format!(
            "no lesson {lesson:?} in plan {}",
            info.id
        )));
    }
    let mut locked: BTreeSet<String> = info.locked.iter().cloned().collect();
    if lock {
        locked.insert(lesson.clone());
    } else {
        locked.remove(&lesson);
    }
    let kind = if lock { "lock" } else { "unlock" };
    store_edit(&st, &info, &plan, &locked, kind, &lesson, json!({})).await
}

async fn lock_lesson(
    State(st): State<AppState>,
    Path((id, lesson)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    lock_or_unlock(st, id, lesson, true).await
}

async fn unlock_lesson(
    State(st): State<AppState>,
    Path((id, lesson)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    lock_or_unlock(st, id, lesson, false).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MoveBody {
    weekday: u8,
    period: u8,
}

/// Moves a lesson and locks it there (a re-solve keeps it where it was put).
async fn move_lesson(
    State(st): State<AppState>,
    Path((id, lesson)): Path<(String, String)>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<Json<Value>> {
    let body = body.map_err(body_error)?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::bad_request(format!("move request: not UTF-8: {e}")))?;
    let mv: MoveBody = parse_json("move request", text)?;
    let (info, plan) = plan_by(&st, &id).await?;
    let (_, region) = region_by(&st, &info.region_id.to_string()).await?;
    let moved = match edit::move_lesson(&region, &plan, &lesson, mv.weekday, mv.period) {
        Ok(p) => p,
        Err(EditError::UnknownLesson(_)) => {
            return Err(ApiError::not_found(format!(
                "no lesson {lesson:?} in plan {}",
                info.id
            )))
        }
        Err(e @ EditError::Broken(_)) => {
            let EditError::Broken(rules) = &e else {
                unreachable!()
            };
            let rules = rules.clone();
            return Err(ApiError::conflict(e.to_string()).with("broken", rules));
        }
    };
    let mut locked: BTreeSet<String> = info.locked.iter().cloned().collect();
    locked.insert(lesson.clone());
    store_edit(
        &st,
        &info,
        &moved,
        &locked,
        "move",
        &lesson,
        json!({"weekday": mv.weekday, "period": mv.period}),
    )
    .await
}

#[derive(Deserialize)]
struct IcsQuery {
    school: Option<String>,
    teacher: Option<String>,
    class: Option<String>,
    /// Monday the term starts, YYYY-MM-DD.
    term_start: Option<String>,
    weeks: Option<u32>,
}

async fn plan_ics(
    State(st): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<IcsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (info, plan) = plan_by(&st, &id).await?;
    let (_, region) = region_by(&st, &info.region_id.to_string()).await?;
    let (kind, who) = match (&q.school, &q.teacher, &q.class) {
        (Some(s), None, None) => ("school", s),
        (None, Some(t), None) => ("teacher", t),
        (None, None, Some(c)) => ("class", c),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of school=, teacher=, class=",
            ))
        }
    };
    let known = match kind {
        "school" => region.schools.iter().any(|s| &s.id == who),
        "teacher" => region.teachers.iter().any(|t| &t.id == who),
        _ => region.classes.iter().any(|c| &c.id == who),
    };
    if !known {
        return Err(ApiError::not_found(format!(
            "no {kind} {who:?} in the region"
        )));
    }
    let mut o = export::ical::CalOptions::default();
    if let Some(d) = &q.term_start {
        o.term_start =
            export::ical::parse_date(d).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    if let Some(w) = q.weeks {
        if !(1..=60).contains(&w) {
            return Err(ApiError::bad_request("weeks must be 1..60"));
        }
        o.weeks = w;
    }
    let key = format!("{kind}-{who}");
    let cals = export::ical::calendars(&plan);
    let events = cals.get(&key).cloned().unwrap_or_default();
    let text = export::ical::calendar(&key, &events, &o);
    let file = format!("{}.ics", export::file_stem(&key));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/calendar; charset=utf-8".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        text,
    )
        .into_response())
}

#[derive(Deserialize)]
struct CsvQuery {
    table: Option<String>,
}

async fn plan_csv(
    State(st): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<CsvQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (_, plan) = plan_by(&st, &id).await?;
    let table = q.table.as_deref().unwrap_or("lessons");
    let text = match table {
        "lessons" => export::csv::lessons_csv(&plan),
        "pairings" => export::csv::pairings_csv(&plan),
        "unmet" => export::csv::unmet_csv(&plan),
        t => {
            return Err(ApiError::bad_request(format!(
                "table {t:?}: expected lessons, pairings or unmet"
            )))
        }
    }
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{table}.csv\""),
            ),
        ],
        text,
    )
        .into_response())
}

#[derive(Deserialize)]
struct JoinQuery {
    ttl_s: Option<u64>,
    /// In an SFU cluster: the node the lesson is taught from (e.g. the central school's).
    origin: Option<String>,
}

/// Tokens and join links of a lesson's room: the teacher's, and a classroom's for the host class
/// and each receiver.
async fn join_lesson(
    State(st): State<AppState>,
    Path((id, lesson)): Path<(String, String)>,
    q: Result<Query<JoinQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let Some(minter) = st.minter.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no signing secret: start the server with --secret or CLASSROOM_SECRET",
        ));
    };
    let (info, plan) = plan_by(&st, &id).await?;
    let Some(l) = plan.lessons.iter().find(|l| l.id == lesson) else {
        return Err(ApiError::not_found(format!(
            "no lesson {lesson:?} in plan {}",
            info.id
        )));
    };
    let ttl = match q.ttl_s {
        Some(0) | Some(604_801..) => return Err(ApiError::bad_request("ttl_s must be 1..604800")),
        Some(s) => Duration::from_secs(s),
        None => st.cfg.token_ttl,
    };
    if let Some(o) = &q.origin {
        let ok = !o.is_empty()
            && o.len() <= 64
            && o.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok {
            return Err(ApiError::bad_request(
                "origin is an SFU node id: 1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }
    }
    let tokens = minter
        .lesson_tokens(l, ttl, q.origin.as_deref())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let base = st.cfg.sfu_url.trim_end_matches('/');
    let participants: Vec<Value> = tokens
        .into_iter()
        .map(|t| {
            let page = match t.role {
                Role::Teacher => "teacher.html",
                _ => "classroom.html",
            };
            let link = format!(
                "{base}/{page}?room={}&token={}",
                encode(&t.room),
                encode(&t.token)
            );
            json!({"sub": t.sub, "role": t.role, "room": t.room, "token": t.token, "link": link})
        })
        .collect();
    Ok(Json(json!({
        "lesson": l.id,
        "room": l.room,
        "weekday": l.weekday,
        "participants": participants,
    })))
}

/// Percent-encodes a query value (rooms and JWTs are URL-safe already; this guards the rest).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Where the server listens, for logs and tests.
pub fn describe(addr: SocketAddr) -> String {
    format!("http://{addr}")
}
