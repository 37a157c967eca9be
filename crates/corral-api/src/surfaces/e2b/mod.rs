//! E2B's early sessions API (seed 001, the "Devbook" API of the `e2b` 0.1.0 client), mounted
//! at `/e2b` by default: `GET/POST /sessions`, `DELETE /sessions/{sessionID}`,
//! `POST /sessions/{sessionID}/refresh`, with the API key in the `api_key` query parameter.
//!
//! A translation over the engine and nothing more. Replies carry exactly the four `Session`
//! keys (the generated client rejects any other), 201 on create, 204 without a body on delete
//! and refresh, and `{code, message}` errors. `codeSnippetID` and `editEnabled` are kept in
//! the session's metadata under `e2b`; `clientID` is the caller's tenant. It does not import
//! any other surface.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_core::{Principal, SessionId, SessionRecord, DEFAULT_TENANT};
use corral_engine::{CreateSession, EngineError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::ApiState;

/// Metadata key under which the E2B fields are kept.
const METADATA_KEY: &str = "e2b";
/// Reason recorded when a session is deleted through this API.
const CLOSED_BY_CLIENT: &str = "closed by client";
/// Sessions read per store page while listing.
const LIST_PAGE: u32 = 1000;
/// Pages read at most while listing (a bound, not an expected size).
const LIST_PAGES: usize = 100;

/// The E2B routes, relative to the surface's mount point.
pub fn router() -> OpenApiRouter<ApiState> {
    let routes = OpenApiRouter::new()
        .routes(routes!(list_sessions, create_session))
        .routes(routes!(delete_session))
        .routes(routes!(refresh_session));
    crate::mounts::answer_wrong_methods(routes, method_not_allowed)
}

async fn method_not_allowed() -> Failure {
    Failure(
        StatusCode::METHOD_NOT_ALLOWED,
        "this path does not accept this method".to_owned(),
    )
}

/// `NewSession`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewSession {
    /// Identifier of the code snippet the session is for.
    #[serde(rename = "codeSnippetID")]
    pub code_snippet_id: String,
    /// Whether the session is a shared persistent edit session.
    #[serde(rename = "editEnabled", default)]
    pub edit_enabled: bool,
}

/// `Session` (and the items of the list).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Session {
    #[serde(rename = "codeSnippetID")]
    pub code_snippet_id: String,
    #[serde(rename = "editEnabled")]
    pub edit_enabled: bool,
    #[serde(rename = "sessionID")]
    pub session_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
}

/// `Error`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct E2bError {
    pub code: u16,
    pub message: String,
}

/// Query of every route: the API key.
#[derive(Debug, Deserialize, IntoParams)]
pub struct KeyQuery {
    /// A corral API key (any value while the server has no keys and serves loopback only).
    api_key: Option<String>,
}

struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(E2bError {
                code: self.0.as_u16(),
                message: self.1,
            }),
        )
            .into_response()
    }
}

impl From<EngineError> for Failure {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Unauthorized => Failure(
                StatusCode::UNAUTHORIZED,
                "invalid or missing api_key".to_owned(),
            ),
            EngineError::SessionNotFound(_) | EngineError::SessionNotRunning { .. } => {
                Failure(StatusCode::NOT_FOUND, "session not found".to_owned())
            }
            EngineError::Forbidden(detail) => Failure(StatusCode::FORBIDDEN, detail),
            EngineError::InvalidInput(detail) => Failure(StatusCode::BAD_REQUEST, detail),
            EngineError::TooManySessions { .. }
            | EngineError::HostMemoryLow { .. }
            | EngineError::QuotaExceeded { .. }
            | EngineError::QueueFull { .. } => {
                Failure(StatusCode::TOO_MANY_REQUESTS, error.to_string())
            }
            EngineError::ShuttingDown | EngineError::WorkerStart(_) => Failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "the session could not be started".to_owned(),
            ),
            other => {
                tracing::error!(error = %other, "e2b request failed");
                Failure(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error".to_owned(),
                )
            }
        }
    }
}

/// The caller: the `api_key` parameter (or a header) as a corral key; while the server is in
/// open mode any value is accepted, since the client must send one.
async fn caller(state: &ApiState, query: &KeyQuery, parts: &Parts) -> Result<Principal, Failure> {
    let presented = query
        .api_key
        .as_deref()
        .or_else(|| crate::auth::presented_key(&parts.headers));
    match state.engine.authenticate(presented).await {
        Ok(principal) => Ok(principal),
        Err(EngineError::Unauthorized) if presented.is_some() => {
            Ok(state.engine.authenticate(None).await?)
        }
        Err(error) => Err(error.into()),
    }
}

fn client_id(principal: &Principal) -> String {
    match principal {
        Principal::Admin => DEFAULT_TENANT.to_owned(),
        Principal::Tenant(tenant) | Principal::Session { tenant, .. } => tenant.clone(),
    }
}

fn session_view(record: &SessionRecord) -> Option<Session> {
    let fields = record.metadata.get(METADATA_KEY)?;
    Some(Session {
        code_snippet_id: fields.get("codeSnippetID")?.as_str()?.to_owned(),
        edit_enabled: fields.get("editEnabled")?.as_bool()?,
        session_id: record.id.to_string(),
        client_id: record.tenant.clone(),
    })
}

/// Lists the caller's live sessions created through this API.
#[utoipa::path(get, path = "/sessions", tag = "e2b", params(KeyQuery),
    responses(
        (status = 200, description = "The sessions", body = Vec<Session>),
        (status = 401, description = "Bad api_key", body = E2bError),
    ))]
async fn list_sessions(
    State(state): State<ApiState>,
    Query(query): Query<KeyQuery>,
    parts: Parts,
) -> Result<Json<Vec<Session>>, Failure> {
    let principal = caller(&state, &query, &parts).await?;
    let mut sessions = Vec::new();
    let mut after = None;
    for _ in 0..LIST_PAGES {
        let page = state
            .engine
            .list_sessions(&principal, None, after, LIST_PAGE)
            .await?;
        sessions.extend(
            page.sessions
                .iter()
                .filter(|record| !record.state.is_terminal())
                .filter_map(session_view),
        );
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(Json(sessions))
}

/// Creates a session.
#[utoipa::path(post, path = "/sessions", tag = "e2b", params(KeyQuery),
    request_body = NewSession,
    responses(
        (status = 201, description = "The new session", body = Session),
        (status = 400, description = "Bad body", body = E2bError),
        (status = 401, description = "Bad api_key", body = E2bError),
    ))]
async fn create_session(
    State(state): State<ApiState>,
    Query(query): Query<KeyQuery>,
    parts: Parts,
    body: Bytes,
) -> Result<Response, Failure> {
    let principal = caller(&state, &query, &parts).await?;
    let new: NewSession = serde_json::from_slice(&body).map_err(|error| {
        Failure(
            StatusCode::BAD_REQUEST,
            format!("invalid NewSession: {error}"),
        )
    })?;
    let mut metadata = serde_json::Map::new();
    metadata.insert(
        METADATA_KEY.to_owned(),
        serde_json::json!({"codeSnippetID": new.code_snippet_id, "editEnabled": new.edit_enabled}),
    );
    let record = state
        .engine
        .create_session(
            &principal,
            CreateSession {
                metadata,
                ..Default::default()
            },
        )
        .await?;
    let session = Session {
        code_snippet_id: new.code_snippet_id,
        edit_enabled: new.edit_enabled,
        session_id: record.id.to_string(),
        client_id: client_id(&principal),
    };
    Ok((StatusCode::CREATED, Json(session)).into_response())
}

fn parse_id(text: &str) -> Result<SessionId, Failure> {
    text.parse()
        .map_err(|_| Failure(StatusCode::NOT_FOUND, "session not found".to_owned()))
}

/// Deletes (closes) a session; deleting an ended one is a no-op.
#[utoipa::path(delete, path = "/sessions/{sessionID}", tag = "e2b",
    params(("sessionID" = String, Path, description = "Session id"), KeyQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Bad api_key", body = E2bError),
        (status = 404, description = "No such session", body = E2bError),
    ))]
async fn delete_session(
    State(state): State<ApiState>,
    Path(session_id): Path<String>,
    Query(query): Query<KeyQuery>,
    parts: Parts,
) -> Result<StatusCode, Failure> {
    let principal = caller(&state, &query, &parts).await?;
    let id = parse_id(&session_id)?;
    state
        .engine
        .close_session(&principal, id, CLOSED_BY_CLIENT)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Extends the session's idle time to live.
#[utoipa::path(post, path = "/sessions/{sessionID}/refresh", tag = "e2b",
    params(("sessionID" = String, Path, description = "Session id"), KeyQuery),
    responses(
        (status = 204, description = "Refreshed"),
        (status = 401, description = "Bad api_key", body = E2bError),
        (status = 404, description = "Error refreshing session - session not found", body = E2bError),
    ))]
async fn refresh_session(
    State(state): State<ApiState>,
    Path(session_id): Path<String>,
    Query(query): Query<KeyQuery>,
    parts: Parts,
) -> Result<StatusCode, Failure> {
    let principal = caller(&state, &query, &parts).await?;
    let id = parse_id(&session_id)?;
    state.engine.refresh(&principal, id, None).await?;
    Ok(StatusCode::NO_CONTENT)
}
