//! The python_rce API (seed 000: Konfig's "Python remote code executor", a FastAPI app):
//! `POST /sessions/create`, `POST /sessions/execute`, `GET /sessions/list`,
//! `POST /sessions/close`, mounted at the root by default.
//!
//! A translation over the engine and nothing more: bodies and errors take FastAPI's shapes
//! (422 `{detail: [{type, loc, msg, input}]}` in pydantic v2 wording, 404
//! `{session_id, error}`), `ExecutionResult` fields are always strings and a Python error in
//! the cell is still a 200. It does not import any other surface.

mod validation;

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_core::{
    ExecRequest, ExecutionRecord, ExecutionStatus, OutputItem, Principal, SessionState, StdinMode,
};
use corral_engine::EngineError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::authenticate;
use crate::body::{read_bytes, BodyError, BodyLimit};
use crate::forwarding::{AddressedRoute, SessionAddress};
use crate::state::ApiState;
use validation::{ValidationError, Validator};

/// The routes whose body names the session (`session_id`): a fleet forwards them to the
/// node that runs it.
pub const ADDRESSED_ROUTES: &[AddressedRoute] = &[
    AddressedRoute {
        method: Method::POST,
        path: "/sessions/execute",
        address: SessionAddress::BodyField("session_id"),
    },
    AddressedRoute {
        method: Method::POST,
        path: "/sessions/close",
        address: SessionAddress::BodyField("session_id"),
    },
];

/// The python_rce routes, relative to the surface's mount point.
pub fn router() -> OpenApiRouter<ApiState> {
    let routes = OpenApiRouter::new()
        .routes(routes!(session_create))
        .routes(routes!(session_list))
        .routes(routes!(session_execute))
        .routes(routes!(session_close));
    crate::mounts::answer_wrong_methods(routes, method_not_allowed)
}

/// FastAPI's 405: `{"detail": "Method Not Allowed"}`.
async fn method_not_allowed() -> RceError {
    RceError::Http {
        status: StatusCode::METHOD_NOT_ALLOWED,
        detail: "Method Not Allowed".to_owned(),
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionCreateResponse {
    pub session_id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    pub session_id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionListResponse {
    pub sessions: Vec<SessionInfo>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionExecuteRequest {
    pub session_id: String,
    pub code: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionCloseRequest {
    pub session_id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionCloseResponse {
    pub message: String,
}

/// What a cell did: `result` is `Success` or `Error`; `output` is everything printed
/// (stdout and stderr), the `Out[n]: ...` line and the traceback; `error` is `str(exception)`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExecutionResult {
    pub result: String,
    pub output: String,
    pub error: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionNotFoundError {
    pub session_id: String,
    pub error: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HttpValidationError {
    pub detail: Vec<ValidationError>,
}

/// FastAPI's body for errors raised with `HTTPException`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HttpErrorDetail {
    pub detail: String,
}

/// An error of this surface, in FastAPI's shapes.
#[derive(Debug)]
enum RceError {
    NotFound { session_id: String, error: String },
    Validation(Vec<ValidationError>),
    Http { status: StatusCode, detail: String },
}

impl IntoResponse for RceError {
    fn into_response(self) -> Response {
        match self {
            RceError::NotFound { session_id, error } => (
                StatusCode::NOT_FOUND,
                Json(SessionNotFoundError { session_id, error }),
            )
                .into_response(),
            RceError::Validation(detail) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(HttpValidationError { detail }),
            )
                .into_response(),
            RceError::Http { status, detail } => {
                let mut response = (status, Json(HttpErrorDetail { detail })).into_response();
                if status == StatusCode::TOO_MANY_REQUESTS {
                    response
                        .headers_mut()
                        .insert(axum::http::header::RETRY_AFTER, 1.into());
                }
                response
            }
        }
    }
}

impl RceError {
    fn from_engine(error: EngineError, session_id: &str) -> RceError {
        let not_found = |error: &str| RceError::NotFound {
            session_id: session_id.to_owned(),
            error: error.to_owned(),
        };
        match error {
            EngineError::SessionNotFound(_) => not_found("Session not found"),
            EngineError::SessionNotRunning {
                state: SessionState::Dead,
                reason,
                ..
            } => not_found(&format!(
                "Session not found: it died ({})",
                reason.as_deref().unwrap_or("no reason recorded")
            )),
            EngineError::SessionNotRunning { .. } => not_found("Session not found"),
            EngineError::InvalidInput(message) => {
                RceError::Validation(vec![ValidationError::value_error(
                    &["body", "code"],
                    &message,
                )])
            }
            EngineError::QueueFull { .. }
            | EngineError::TooManySessions { .. }
            | EngineError::HostMemoryLow { .. }
            | EngineError::QuotaExceeded { .. } => RceError::Http {
                status: StatusCode::TOO_MANY_REQUESTS,
                detail: error.to_string(),
            },
            EngineError::NotAccepting(_) | EngineError::ExecutionCancelled(_) => RceError::Http {
                status: StatusCode::CONFLICT,
                detail: error.to_string(),
            },
            EngineError::QueryFailed { .. } => RceError::Http {
                status: StatusCode::SERVICE_UNAVAILABLE,
                detail: error.to_string(),
            },
            EngineError::WorkerStart(ref cause) => {
                tracing::error!(%cause, "session worker failed to start");
                RceError::Http {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    detail: "could not start a session".to_owned(),
                }
            }
            EngineError::ShuttingDown => RceError::Http {
                status: StatusCode::SERVICE_UNAVAILABLE,
                detail: "the server is shutting down".to_owned(),
            },
            EngineError::Unauthorized => RceError::Http {
                status: StatusCode::UNAUTHORIZED,
                detail: "Not authenticated".to_owned(),
            },
            EngineError::Forbidden(ref detail) => RceError::Http {
                status: StatusCode::FORBIDDEN,
                detail: detail.clone(),
            },
            EngineError::ExecutionNotFound { .. }
            | EngineError::KeyNotFound(_)
            | EngineError::Randomness(_)
            | EngineError::Store(_)
            | EngineError::File(_) => {
                tracing::error!(%error, "python_rce request failed");
                RceError::Http {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    detail: "Internal Server Error".to_owned(),
                }
            }
        }
    }
}

/// The authenticated caller, or FastAPI's 401 `{"detail": "Not authenticated"}`.
struct RceCaller(Principal);

impl FromRequestParts<ApiState> for RceCaller {
    type Rejection = RceError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, RceError> {
        authenticate(parts, state)
            .await
            .map(RceCaller)
            .map_err(|error| RceError::from_engine(error, ""))
    }
}

/// A body read FastAPI's way: any content type, JSON parsed, then validated field by field.
struct RceBody(serde_json::Value);

impl<S: Send + Sync> FromRequest<S> for RceBody {
    type Rejection = RceError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = request
            .extensions()
            .get::<BodyLimit>()
            .map(|limit| limit.0)
            .unwrap_or(0);
        let bytes = read_bytes(request, state, limit)
            .await
            .map_err(|error| match error {
                BodyError::TooLarge { .. } => RceError::Http {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    detail: error.to_string(),
                },
                other => RceError::Http {
                    status: StatusCode::BAD_REQUEST,
                    detail: other.to_string(),
                },
            })?;
        if bytes.is_empty() {
            return Err(RceError::Validation(vec![ValidationError::missing(
                &["body"],
                serde_json::Value::Null,
            )]));
        }
        serde_json::from_slice(&bytes)
            .map(RceBody)
            .map_err(|error| RceError::Validation(vec![ValidationError::json_invalid(&error)]))
    }
}

/// Starts a session.
#[utoipa::path(post, path = "/sessions/create", tag = "python_rce", operation_id = "Session_create",
    summary = "Create Session",
    responses(
        (status = 200, description = "Successful Response", body = SessionCreateResponse),
        (status = 401, description = "Not authenticated", body = HttpErrorDetail),
        (status = 403, description = "A session key cannot create sessions", body = HttpErrorDetail),
        (status = 429, description = "The server or the tenant runs its maximum number of sessions, or the host is low on memory", body = HttpErrorDetail),
        (status = 503, description = "No session could be started, or the server is shutting down", body = HttpErrorDetail),
    ))]
async fn session_create(
    State(state): State<ApiState>,
    RceCaller(caller): RceCaller,
) -> Result<Json<SessionCreateResponse>, RceError> {
    let record = state
        .engine
        .create_session(&caller, Default::default())
        .await
        .map_err(|error| RceError::from_engine(error, ""))?;
    Ok(Json(SessionCreateResponse {
        session_id: record.id.to_string(),
    }))
}

/// Lists the live sessions.
#[utoipa::path(get, path = "/sessions/list", tag = "python_rce", operation_id = "Session_list",
    summary = "List Sessions",
    responses(
        (status = 200, description = "Successful Response", body = SessionListResponse),
        (status = 401, description = "Not authenticated", body = HttpErrorDetail),
    ))]
async fn session_list(
    State(state): State<ApiState>,
    RceCaller(caller): RceCaller,
) -> Result<Json<SessionListResponse>, RceError> {
    let live = state
        .engine
        .fleet_live_sessions(&caller)
        .await
        .map_err(|error| RceError::from_engine(error, ""))?;
    Ok(Json(SessionListResponse {
        sessions: live
            .into_iter()
            .map(|record| SessionInfo {
                session_id: record.id.to_string(),
            })
            .collect(),
    }))
}

/// Runs code in a session.
#[utoipa::path(post, path = "/sessions/execute", tag = "python_rce", operation_id = "Session_execute",
    summary = "Execute Code",
    request_body = SessionExecuteRequest,
    responses(
        (status = 200, description = "Successful Response", body = ExecutionResult),
        (status = 404, description = "Session not found", body = SessionNotFoundError),
        (status = 422, description = "Validation Error", body = HttpValidationError),
        (status = 401, description = "Not authenticated", body = HttpErrorDetail),
        (status = 409, description = "The session does not accept executions", body = HttpErrorDetail),
        (status = 429, description = "The session's queue or the tenant's quota is full", body = HttpErrorDetail),
        (status = 503, description = "The server is shutting down", body = HttpErrorDetail),
    ))]
async fn session_execute(
    State(state): State<ApiState>,
    RceCaller(caller): RceCaller,
    RceBody(body): RceBody,
) -> Result<Json<ExecutionResult>, RceError> {
    let mut validator = Validator::new(&body);
    let session_id = validator.string("session_id");
    let code = validator.string("code");
    validator.finish()?;
    let (Some(session_id), Some(code)) = (session_id, code) else {
        return Err(RceError::Validation(Vec::new()));
    };
    let Ok(id) = session_id.parse() else {
        return Err(RceError::NotFound {
            session_id,
            error: "Session not found".to_owned(),
        });
    };
    let record = state
        .engine
        .execute(
            &caller,
            id,
            ExecRequest {
                code,
                timeout: None,
                stdin: StdinMode::Empty,
                store_history: true,
            },
        )
        .await
        .map_err(|error| RceError::from_engine(error, &session_id))?;
    Ok(Json(execution_result(&record)))
}

/// Closes a session.
#[utoipa::path(post, path = "/sessions/close", tag = "python_rce", operation_id = "Session_close",
    summary = "Close Session",
    request_body = SessionCloseRequest,
    responses(
        (status = 200, description = "Successful Response", body = SessionCloseResponse),
        (status = 404, description = "Session not found", body = SessionNotFoundError),
        (status = 422, description = "Validation Error", body = HttpValidationError),
        (status = 401, description = "Not authenticated", body = HttpErrorDetail),
    ))]
async fn session_close(
    State(state): State<ApiState>,
    RceCaller(caller): RceCaller,
    RceBody(body): RceBody,
) -> Result<Json<SessionCloseResponse>, RceError> {
    let mut validator = Validator::new(&body);
    let session_id = validator.string("session_id");
    validator.finish()?;
    let Some(session_id) = session_id else {
        return Err(RceError::Validation(Vec::new()));
    };
    let not_found = || RceError::NotFound {
        session_id: session_id.clone(),
        error: "Session not found".to_owned(),
    };
    let Ok(id) = session_id.parse() else {
        return Err(not_found());
    };
    // A session that already ended is gone from this API's point of view, as in the original.
    let record = state
        .engine
        .get_session(&caller, id)
        .await
        .map_err(|error| RceError::from_engine(error, &session_id))?;
    if record.state.is_terminal() {
        return Err(not_found());
    }
    state
        .engine
        .close_session(&caller, id, corral_engine::CLOSED_BY_CLIENT_REASON)
        .await
        .map_err(|error| RceError::from_engine(error, &session_id))?;
    Ok(Json(SessionCloseResponse {
        message: "Session closed".to_owned(),
    }))
}

/// The original server's view of a cell: everything printed, then `Out[n]: repr`, then the
/// plain traceback.
fn execution_result(record: &ExecutionRecord) -> ExecutionResult {
    let mut output = String::new();
    for item in &record.outputs {
        match item {
            OutputItem::Stream { text, .. } => output.push_str(text),
            OutputItem::Display { data, .. } => {
                if let Some(text) = data.get("text/plain").and_then(|value| value.as_str()) {
                    output.push_str(text);
                    output.push('\n');
                }
            }
        }
    }
    if let Some(text) = record
        .result
        .as_ref()
        .and_then(|bundle| bundle.get("text/plain"))
        .and_then(|value| value.as_str())
    {
        output.push_str(&format!("Out[{}]: {}\n", record.execution_count, text));
    }
    let mut error = String::new();
    if let Some(info) = &record.error {
        for chunk in &info.traceback {
            output.push_str(chunk);
        }
        if !output.is_empty() && !output.ends_with('\n') {
            output.push('\n');
        }
        error = info.evalue.clone();
    }
    let result = if record.status == ExecutionStatus::Ok {
        "Success"
    } else {
        "Error"
    };
    ExecutionResult {
        result: result.to_owned(),
        output,
        error,
    }
}
