//! IBM Qiskit Runtime's sessions API (seed 003), mounted at the root by default:
//! `POST /api/v1/sessions`, `GET`/`PATCH /api/v1/sessions/{id}`,
//! `DELETE /api/v1/sessions/{id}/close`.
//!
//! A Qiskit session is a corral session: `backend` names the corral runtime, `max_ttl` and
//! `interactive_ttl` are its max and idle TTLs, jobs are its executions (run through any
//! other surface). `PATCH {"accepting_jobs": false}` drains it (queued work finishes, new
//! work is refused, then it closes); `DELETE .../close` cancels it (closes it now, killing
//! what runs). Keys come as `Authorization: Bearer <key>` or `Authorization: apikey <key>`;
//! `Service-CRN` is ignored; `IBM-API-Version`, when sent, must be a `YYYY-MM-DD` date. Mode,
//! backend and TTLs as requested are kept in the session's metadata under `qiskit`.
//!
//! This module parses requests and calls the engine; the `JobSession` view is
//! `job_session`'s, the error body `failure`'s. It runs no code and imports no other surface.

mod failure;
mod job_session;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use corral_core::{Principal, SessionId, SessionRecord, SessionState};
use corral_engine::{CreateSession, EngineError, SessionUpdate};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::ApiState;
use failure::{ErrorContainer, Failure};
use job_session::{job_session, JobSession, JobTimes, Mode, METADATA_KEY};

/// Reason recorded when a session is cancelled through this API.
const CANCELLED_REASON: &str = "cancelled";
/// The largest TTL this API can express (`i32`).
const MAX_TTL_SECONDS: i64 = i32::MAX as i64;

/// The Qiskit routes, relative to the surface's mount point; every error response they give
/// is an `ErrorContainer`.
pub fn router() -> OpenApiRouter<ApiState> {
    let routes = OpenApiRouter::new()
        .routes(routes!(create_session))
        .routes(routes!(get_session, update_session))
        .routes(routes!(cancel_session));
    crate::mounts::answer_wrong_methods(routes, method_not_allowed)
        .route_layer(axum::middleware::from_fn(failure::render_errors))
}

async fn method_not_allowed() -> Failure {
    Failure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not accept this method",
    )
}

/// `CreateSessionRequest`: `mode` is required; unknown keys are ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateSessionRequest {
    /// Execution mode to run the session in.
    pub mode: Mode,
    /// Seconds the session may live (corral's max TTL; the operator's default when absent).
    #[serde(default)]
    pub max_ttl: Option<i64>,
    /// Seconds the session may wait without a job (corral's idle TTL; ≤ `active_ttl`).
    #[serde(default)]
    pub interactive_ttl: Option<i64>,
    /// Seconds the session may be active (≤ `max_ttl`; defaults to `max_ttl`).
    #[serde(default)]
    pub active_ttl: Option<i64>,
    /// The corral runtime to run (`python3`, the default).
    #[serde(default)]
    pub backend: Option<String>,
    /// Used when `backend` is absent.
    #[serde(default)]
    pub backend_name: Option<String>,
    /// Kept in the session's metadata; has no effect.
    #[serde(default)]
    pub instance: Option<String>,
}

/// `UpdateSessionStateRequest`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateSessionStateRequest {
    /// `false` drains the session: it takes no new jobs and closes when the queued ones are
    /// done. `true` takes jobs again (a live session only).
    pub accepting_jobs: bool,
}

/// The key a request presents: `Authorization: apikey <key>` (sent by `qiskit-ibm-runtime`
/// when it has no IAM token), else `Bearer` or `X-API-Key`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("apikey").then(|| token.trim())
        })
        .or_else(|| crate::auth::presented_key(headers))
}

/// The caller, once the request's key (if any) and `IBM-API-Version` (if any) check out.
async fn caller(state: &ApiState, headers: &HeaderMap) -> Result<Principal, Failure> {
    let principal = state.engine.authenticate(presented_key(headers)).await?;
    check_api_version(headers)?;
    Ok(principal)
}

/// `IBM-API-Version` is optional; when present it must be a real `YYYY-MM-DD` date.
fn check_api_version(headers: &HeaderMap) -> Result<(), Failure> {
    let Some(value) = headers.get("ibm-api-version") else {
        return Ok(());
    };
    let invalid = || {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_api_version",
            "the IBM-API-Version header must be a date written YYYY-MM-DD",
        )
    };
    let text = value.to_str().map_err(|_| invalid())?;
    let shaped = text.len() == 10
        && text.char_indices().all(|(index, c)| match index {
            4 | 7 => c == '-',
            _ => c.is_ascii_digit(),
        });
    if !shaped || chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_err() {
        return Err(invalid());
    }
    Ok(())
}

fn parse_id(text: &str) -> Result<SessionId, Failure> {
    text.parse().map_err(|_| Failure::session_not_found())
}

/// A JSON object body parsed into `T`; anything else (no body, `null`, bad JSON, wrong
/// types) is a 400 naming the problem.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, Failure> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|error| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body must be a JSON {what} object: {error}"),
        )
    })?;
    if !value.is_object() {
        return Err(Failure::bad_request(format!(
            "the body must be a JSON {what} object"
        )));
    }
    serde_json::from_value(value)
        .map_err(|error| Failure::bad_request(format!("invalid {what}: {error}")))
}

/// A TTL field's value, if given: whole seconds from 1 to 2147483647.
fn ttl_field(field: &str, value: Option<i64>) -> Result<Option<i64>, Failure> {
    match value {
        Some(seconds) if !(1..=MAX_TTL_SECONDS).contains(&seconds) => Err(Failure::bad_request(
            format!("{field} must be a whole number of seconds from 1 to {MAX_TTL_SECONDS}"),
        )),
        other => Ok(other),
    }
}

fn seconds(value: i64) -> std::time::Duration {
    std::time::Duration::from_secs(value.unsigned_abs())
}

/// Creates a session; it is `open` and accepting jobs.
#[utoipa::path(post, path = "/api/v1/sessions", tag = "qiskit",
    params(("IBM-API-Version" = Option<String>, Header, description = "API version date, YYYY-MM-DD")),
    request_body = CreateSessionRequest,
    responses(
        (status = 200, description = "The new session", body = JobSession),
        (status = 400, description = "Bad body, TTLs, backend or IBM-API-Version", body = ErrorContainer),
        (status = 401, description = "Missing or invalid key", body = ErrorContainer),
        (status = 429, description = "Session limit or quota reached", body = ErrorContainer),
    ))]
async fn create_session(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<JobSession>, Failure> {
    let principal = caller(&state, &headers).await?;
    let request: CreateSessionRequest = parse_body(&body, "CreateSessionRequest")?;
    let max_ttl = ttl_field("max_ttl", request.max_ttl)?;
    let interactive_ttl = ttl_field("interactive_ttl", request.interactive_ttl)?;
    let active_ttl = ttl_field("active_ttl", request.active_ttl)?;
    let effective_max = max_ttl.unwrap_or_else(|| {
        i64::try_from(state.engine.limits().max_ttl.as_secs()).unwrap_or(MAX_TTL_SECONDS)
    });
    let effective_active = active_ttl.unwrap_or(effective_max);
    if effective_active > effective_max {
        return Err(Failure::bad_request(format!(
            "active_ttl {effective_active} exceeds max_ttl {effective_max}"
        )));
    }
    if let Some(interactive) = interactive_ttl {
        if interactive > effective_active {
            return Err(Failure::bad_request(format!(
                "interactive_ttl {interactive} exceeds active_ttl {effective_active}"
            )));
        }
    }
    // Without an interactive_ttl the operator's idle TTL applies, but never past active_ttl.
    let default_idle = i64::try_from(state.engine.limits().idle_ttl.as_secs()).unwrap_or(i64::MAX);
    let default_interactive = (default_idle > effective_active).then_some(effective_active);
    let backend = request.backend.or(request.backend_name);
    let mut fields = serde_json::Map::new();
    fields.insert("mode".to_owned(), serde_json::json!(request.mode));
    fields.insert("active_ttl".to_owned(), serde_json::json!(effective_active));
    for (key, value) in [
        ("backend", backend.clone().map(serde_json::Value::from)),
        ("max_ttl", max_ttl.map(serde_json::Value::from)),
        (
            "interactive_ttl",
            interactive_ttl.map(serde_json::Value::from),
        ),
        ("instance", request.instance.map(serde_json::Value::from)),
    ] {
        if let Some(value) = value {
            fields.insert(key.to_owned(), value);
        }
    }
    let mut metadata = serde_json::Map::new();
    metadata.insert(METADATA_KEY.to_owned(), serde_json::Value::Object(fields));
    let record = state
        .engine
        .create_session(
            &principal,
            CreateSession {
                metadata,
                runtime: backend,
                idle_ttl: interactive_ttl.or(default_interactive).map(seconds),
                max_ttl: max_ttl.map(seconds),
                ..Default::default()
            },
        )
        .await?;
    Ok(Json(job_session(&record, &[])))
}

/// The start and end of every stored execution of `record`'s session that had finished
/// when `record` was read.
async fn job_history(
    state: &ApiState,
    principal: &Principal,
    record: &SessionRecord,
) -> Result<Vec<JobTimes>, Failure> {
    // Executions that finished after `record` was read would contradict it.
    let running = (record.state == SessionState::Busy).then_some(record.execution_count);
    Ok(state
        .engine
        .execution_timings(principal, record.id)
        .await?
        .iter()
        .filter(|execution| {
            execution.execution_count <= record.execution_count
                && Some(execution.execution_count) != running
        })
        .map(JobTimes::from)
        .collect())
}

/// A session, live or ended, with its job history.
#[utoipa::path(get, path = "/api/v1/sessions/{id}", tag = "qiskit",
    params(
        ("id" = String, Path, description = "Session id"),
        ("IBM-API-Version" = Option<String>, Header, description = "API version date, YYYY-MM-DD"),
    ),
    responses(
        (status = 200, description = "The session", body = JobSession),
        (status = 400, description = "Bad IBM-API-Version", body = ErrorContainer),
        (status = 401, description = "Missing or invalid key", body = ErrorContainer),
        (status = 404, description = "No such session", body = ErrorContainer),
    ))]
async fn get_session(
    State(state): State<ApiState>,
    Path(session_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<JobSession>, Failure> {
    let principal = caller(&state, &headers).await?;
    let id = parse_id(&session_id)?;
    let record = state.engine.get_session(&principal, id).await?;
    let jobs = job_history(&state, &principal, &record).await?;
    Ok(Json(job_session(&record, &jobs)))
}

/// Stops (`false`: drain, then close) or resumes (`true`) accepting jobs.
#[utoipa::path(patch, path = "/api/v1/sessions/{id}", tag = "qiskit",
    params(
        ("id" = String, Path, description = "Session id"),
        ("IBM-API-Version" = Option<String>, Header, description = "API version date, YYYY-MM-DD"),
    ),
    request_body = UpdateSessionStateRequest,
    responses(
        (status = 204, description = "Updated"),
        (status = 400, description = "Bad body or IBM-API-Version", body = ErrorContainer),
        (status = 401, description = "Missing or invalid key", body = ErrorContainer),
        (status = 404, description = "No such session", body = ErrorContainer),
        (status = 409, description = "accepting_jobs true on a closed session", body = ErrorContainer),
    ))]
async fn update_session(
    State(state): State<ApiState>,
    Path(session_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Failure> {
    let principal = caller(&state, &headers).await?;
    let id = parse_id(&session_id)?;
    let request: UpdateSessionStateRequest = parse_body(&body, "UpdateSessionStateRequest")?;
    if request.accepting_jobs {
        state
            .engine
            .update_session(
                &principal,
                id,
                SessionUpdate {
                    accepting_executions: Some(true),
                    ..Default::default()
                },
            )
            .await?;
    } else {
        match state.engine.drain_session(&principal, id).await {
            // An ended session already takes no jobs.
            Ok(_) | Err(EngineError::SessionNotRunning { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Cancels a session: closes it now, killing the running job and dropping queued ones.
/// Cancelling a closed session changes nothing.
#[utoipa::path(delete, path = "/api/v1/sessions/{id}/close", tag = "qiskit",
    params(
        ("id" = String, Path, description = "Session id"),
        ("IBM-API-Version" = Option<String>, Header, description = "API version date, YYYY-MM-DD"),
    ),
    responses(
        (status = 204, description = "Closed"),
        (status = 400, description = "Bad IBM-API-Version", body = ErrorContainer),
        (status = 401, description = "Missing or invalid key", body = ErrorContainer),
        (status = 404, description = "No such session", body = ErrorContainer),
    ))]
async fn cancel_session(
    State(state): State<ApiState>,
    Path(session_id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, Failure> {
    let principal = caller(&state, &headers).await?;
    let id = parse_id(&session_id)?;
    state
        .engine
        .close_session(&principal, id, CANCELLED_REASON)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
