//! Session routes: create, list, get, update, delete, interrupt, restart, refresh.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_core::{SessionId, SessionState};
use corral_engine::{CreateSession, SessionUpdate};
use serde::Deserialize;
use utoipa::IntoParams;

use super::views::{
    CreateSessionRequest, MemoryView, RefreshRequest, SessionList, SessionView,
    UpdateSessionRequest,
};
use super::{parse_seconds, parse_session_id};
use crate::auth::Caller;
use crate::body::NativeJson;
use crate::problem::{Problem, ProblemBody};
use crate::state::ApiState;

const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 1000;

/// Starts a session; answers once its interpreter is ready.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions",
    request_body(content = CreateSessionRequest, description = "Optional; an empty body is fine"),
    responses(
        (status = 401, description = "No valid API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 201, description = "The session is ready", body = SessionView,
            headers(("Location" = String, description = "The session's URL"))),
        (status = 400, description = "Malformed JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "A session key cannot create sessions", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, a TTL out of range", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "The server runs its maximum number of sessions", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "No worker could be started, or the server is shutting down", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn create_session(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    NativeJson(request): NativeJson<CreateSessionRequest>,
) -> Result<Response, Problem> {
    let idle_ttl = parse_seconds("idle_ttl", request.idle_ttl)?;
    let max_ttl = parse_seconds("max_ttl", request.max_ttl)?;
    let record = state
        .engine
        .create_session(
            &caller,
            CreateSession {
                name: request.name,
                metadata: request.metadata.unwrap_or_default(),
                runtime: request.runtime,
                idle_ttl,
                max_ttl,
                resources: request
                    .limits
                    .map(|limits| limits.over(state.engine.info().session_limits)),
                network: request.network,
            },
        )
        .await?;
    let location = format!("/v1/sessions/{}", record.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(SessionView::from(record)),
    )
        .into_response())
}

/// Query of `GET /v1/sessions`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ListSessionsQuery {
    /// Only sessions in this state (`starting`, `idle`, `busy`, `closed`, `dead`).
    state: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Lists sessions, oldest first, a page at a time.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", params(ListSessionsQuery),
    responses(
        (status = 401, description = "No valid API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 200, description = "One page of sessions", body = SessionList),
        (status = 400, description = "Bad query parameter", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn list_sessions(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    query: Result<Query<ListSessionsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SessionList>, Problem> {
    let bad_query = |detail: String| Problem::new(StatusCode::BAD_REQUEST, "invalid_query", detail);
    let Query(query) = query.map_err(|rejection| bad_query(rejection.body_text()))?;
    let state_filter = match query.state.as_deref() {
        None | Some("") => None,
        Some(text) => Some(text.parse::<SessionState>().map_err(|_| {
            bad_query(format!(
                "state must be one of starting, idle, busy, closed, dead; got {text:?}"
            ))
        })?),
    };
    let limit = match query.limit.as_deref() {
        None | Some("") => DEFAULT_PAGE_SIZE,
        Some(text) => match text.parse::<u32>() {
            Ok(limit) if (1..=MAX_PAGE_SIZE).contains(&limit) => limit,
            _ => {
                return Err(bad_query(format!(
                    "limit must be an integer from 1 to {MAX_PAGE_SIZE}; got {text:?}"
                )))
            }
        },
    };
    let after = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            text.parse::<SessionId>()
                .map_err(|_| bad_query(format!("cursor {text:?} is not a cursor from this API")))?,
        ),
    };
    let page = state
        .engine
        .list_sessions(&caller, state_filter, after, limit)
        .await?;
    Ok(Json(SessionList {
        sessions: page.sessions.into_iter().map(SessionView::from).collect(),
        next_cursor: page.next_after.map(|id| id.to_string()),
    }))
}

/// One session, live or ended.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 401, description = "No valid API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 200, description = "The session", body = SessionView),
        (status = 404, description = "No such session", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn get_session(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, Problem> {
    let id = parse_session_id(&id)?;
    let record = state.engine.get_session(&caller, id).await?;
    let memory = state.engine.session_memory(&caller, id).await?;
    let mut view = SessionView::from(record);
    view.memory = memory.map(MemoryView::from);
    Ok(Json(view))
}

/// Renames a session, replaces its metadata or stops it accepting executions.
#[utoipa::path(patch, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "Session id")),
    request_body = UpdateSessionRequest,
    responses(
        (status = 401, description = "No valid API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 200, description = "The updated session", body = SessionView),
        (status = 400, description = "Malformed JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such session", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The session has ended", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn update_session(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    NativeJson(request): NativeJson<UpdateSessionRequest>,
) -> Result<Json<SessionView>, Problem> {
    let id = parse_session_id(&id)?;
    let record = state
        .engine
        .update_session(
            &caller,
            id,
            SessionUpdate {
                name: request.name,
                metadata: request.metadata,
                accepting_executions: request.accepting_executions,
            },
        )
        .await?;
    Ok(Json(record.into()))
}

/// Closes a session: stops its worker and frees its workspace. The record stays readable.
/// Deleting an ended session returns it unchanged.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 401, description = "No valid API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 200, description = "The closed session", body = SessionView),
        (status = 404, description = "No such session", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn delete_session(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, Problem> {
    let id = parse_session_id(&id)?;
    Ok(Json(
        state
            .engine
            .close_session(&caller, id, corral_engine::CLOSED_BY_CLIENT_REASON)
            .await?
            .into(),
    ))
}

/// Interrupts the running execution (a no-op when idle).
#[utoipa::path(post, path = "/v1/sessions/{id}/interrupt", tag = "sessions",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 401, description = "No valid API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 200, description = "The session", body = SessionView),
        (status = 404, description = "No such session", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The session has ended", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn interrupt_session(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, Problem> {
    let id = parse_session_id(&id)?;
    Ok(Json(state.engine.interrupt(&caller, id).await?.into()))
}

/// Replaces the interpreter with a fresh one: same session id and workspace files, no
/// variables; the execution count starts again from the session's current number. A dead
/// session (its worker was killed, e.g. for memory or a timeout, or the server restarted)
/// comes back with a fresh worker and an empty workspace, its history kept; a closed session
/// stays closed (409).
#[utoipa::path(post, path = "/v1/sessions/{id}/restart", tag = "sessions",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 401, description = "No valid API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 200, description = "The restarted session", body = SessionView),
        (status = 404, description = "No such session", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The session is closed (closed sessions cannot be restarted)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Reviving a dead session: the server or the tenant runs its maximum number of sessions", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "No worker could be started, or the server is shutting down", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn restart_session(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, Problem> {
    let id = parse_session_id(&id)?;
    Ok(Json(state.engine.restart(&caller, id).await?.into()))
}

/// Marks the session active now, so its idle TTL counts from now (`expires_at` moves
/// later); `idle_ttl` also replaces the session's idle TTL.
#[utoipa::path(post, path = "/v1/sessions/{id}/refresh", tag = "sessions",
    params(("id" = String, Path, description = "Session id")),
    request_body(content = RefreshRequest, description = "Optional; an empty body is fine"),
    responses(
        (status = 401, description = "No valid API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 200, description = "The session", body = SessionView),
        (status = 400, description = "Malformed JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such session", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The session has ended", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "idle_ttl out of range", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn refresh_session(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    request: Result<NativeJson<RefreshRequest>, Problem>,
) -> Result<Json<SessionView>, Problem> {
    let id = parse_session_id(&id)?;
    // An unknown session is a 404 whatever the body says.
    let NativeJson(request) = match request {
        Ok(request) => request,
        Err(problem) => {
            state.engine.get_session(&caller, id).await?;
            return Err(problem);
        }
    };
    let idle_ttl = parse_seconds("idle_ttl", request.idle_ttl)?;
    Ok(Json(
        state.engine.refresh(&caller, id, idle_ttl).await?.into(),
    ))
}
