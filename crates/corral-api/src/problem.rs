//! `application/problem+json` errors (RFC 9457) for the native API, and the one place where an
//! [`EngineError`] becomes a native status code and body.
//!
//! Compatibility surfaces map engine errors to their own shapes in their own modules; this
//! module is not for them. 5xx bodies never carry internal error text: the detail is logged
//! here and a generic sentence is returned.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use corral_engine::{EngineError, QuotaKind};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `Retry-After` for a full server or a tenant's session quota: sessions end when clients close them or TTLs run out.
const SESSION_CAP_RETRY_SECONDS: u64 = 5;

/// The media type of every native error body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// A native API error body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProblemBody {
    /// A URI naming the problem kind (`urn:corral:problem:<code>`).
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary of the problem kind.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time, for humans.
    pub detail: String,
    /// A stable machine-readable code, e.g. `session_not_found`.
    pub code: String,
    /// The session's state, for `session_not_running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Why the session is in that state, for `session_not_running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
}

/// A native API error on its way to becoming a response.
#[derive(Clone, Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub body: Box<ProblemBody>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Problem {
            status,
            body: Box::new(ProblemBody {
                problem_type: format!("urn:corral:problem:{code}"),
                title: status.canonical_reason().unwrap_or("Error").to_owned(),
                status: status.as_u16(),
                detail: detail.into(),
                code: code.to_owned(),
                state: None,
                state_reason: None,
            }),
            retry_after: None,
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn session_not_found(id: &str) -> Self {
        Problem::new(
            StatusCode::NOT_FOUND,
            "session_not_found",
            format!("session {id} not found"),
        )
    }

    /// A 500 whose detail is logged, never returned.
    pub fn internal(context: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "{context}");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server hit an internal error; details are in its log",
        )
    }
}

impl From<EngineError> for Problem {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::SessionNotFound(id) => Problem::session_not_found(&id.to_string()),
            EngineError::ExecutionNotFound { .. } => Problem::new(
                StatusCode::NOT_FOUND,
                "execution_not_found",
                error.to_string(),
            ),
            EngineError::SessionNotRunning {
                state, ref reason, ..
            } => {
                let mut problem = Problem::new(
                    StatusCode::CONFLICT,
                    "session_not_running",
                    error.to_string(),
                );
                problem.body.state = Some(state.as_str().to_owned());
                problem.body.state_reason = reason.clone();
                problem
            }
            EngineError::NotAccepting(_) => Problem::new(
                StatusCode::CONFLICT,
                "not_accepting_executions",
                error.to_string(),
            ),
            EngineError::ExecutionCancelled(_) => Problem::new(
                StatusCode::CONFLICT,
                "execution_cancelled",
                error.to_string(),
            ),
            EngineError::QueryFailed { .. } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "interpreter_unresponsive",
                error.to_string(),
            ),
            EngineError::QueueFull { .. } => {
                let mut problem = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "queue_full",
                    error.to_string(),
                );
                problem.retry_after = Some(1);
                problem
            }
            EngineError::QuotaExceeded { kind, .. } => {
                let mut problem = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "quota_exceeded",
                    error.to_string(),
                );
                problem.retry_after = Some(match kind {
                    QuotaKind::Sessions => SESSION_CAP_RETRY_SECONDS,
                    QuotaKind::Executions => 1,
                });
                problem
            }
            EngineError::TooManySessions { .. } => {
                let mut problem = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_sessions",
                    error.to_string(),
                );
                problem.retry_after = Some(SESSION_CAP_RETRY_SECONDS);
                problem
            }
            EngineError::HostMemoryLow { .. } => {
                let mut problem = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "host_memory_low",
                    error.to_string(),
                );
                problem.retry_after = Some(SESSION_CAP_RETRY_SECONDS);
                problem
            }
            EngineError::Unauthorized => Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid API key is required (Authorization: Bearer <key> or X-API-Key: <key>)",
            ),
            EngineError::Forbidden(detail) => {
                Problem::new(StatusCode::FORBIDDEN, "forbidden", detail)
            }
            EngineError::KeyNotFound(_) => {
                Problem::new(StatusCode::NOT_FOUND, "key_not_found", error.to_string())
            }
            EngineError::Randomness(ref cause) => {
                Problem::internal("random number generator", cause)
            }
            EngineError::InvalidInput(detail) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", detail)
            }
            EngineError::WorkerStart(ref cause) => {
                tracing::error!(%cause, "session worker failed to start");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "worker_start_failed",
                    "the session's worker could not be started; details are in the server log",
                )
            }
            EngineError::ShuttingDown => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down",
            ),
            EngineError::File(file_error) => {
                use corral_engine::FileError;
                let detail = file_error.to_string();
                match file_error {
                    FileError::NotFound(_) => {
                        Problem::new(StatusCode::NOT_FOUND, "file_not_found", detail)
                    }
                    FileError::InvalidPath(_) => {
                        Problem::new(StatusCode::BAD_REQUEST, "invalid_path", detail)
                    }
                    FileError::WrongType(_) => {
                        Problem::new(StatusCode::CONFLICT, "wrong_file_type", detail)
                    }
                    FileError::NoSpace(_) => {
                        Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "workspace_full", detail)
                    }
                    FileError::Failed(_) => Problem::internal("file transfer failed", &file_error),
                }
            }
            // The database is away for now (restart, failover): a retryable 503 whose body
            // says so without the driver's text; the cause goes to the log.
            EngineError::Store(ref cause) if cause.is_unavailable() => {
                tracing::warn!(error = %cause, "the store is unavailable");
                let mut problem = Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the database cannot be reached right now; retry shortly",
                );
                problem.retry_after = Some(1);
                problem
            }
            EngineError::Store(ref cause) => Problem::internal("store error", cause),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"corral\""),
            );
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
