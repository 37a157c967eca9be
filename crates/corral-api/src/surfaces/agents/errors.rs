//! The agent sessions API's error body, `ErrorList` (`{"errors": [{"code", "message"}]}`),
//! and the one mapping of [`EngineError`] and body failures to its statuses and codes.
//!
//! Codes are snake_case and stable; messages are for people. 5xx bodies never carry internal
//! error text: the cause is logged and a generic sentence answered. It decides no access
//! itself; it only renders what the engine decided.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_core::SessionId;
use corral_engine::EngineError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::body::BodyError;

/// `Retry-After` seconds on a 429: sessions end when clients close them or TTLs run out.
const RETRY_AFTER_SECONDS: u32 = 5;

/// One error of an [`ErrorList`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorEntry {
    /// A stable machine-readable code, e.g. `session_not_found`, `invalid_identifier`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

/// `ErrorList`: the body of every error of this API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorList {
    pub errors: Vec<ErrorEntry>,
}

/// An error on its way to becoming an `ErrorList` response.
#[derive(Debug)]
pub struct AgentError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// The session runs on another node of the fleet, which answers instead.
    runs_on: Option<SessionId>,
}

impl AgentError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AgentError {
            status,
            code,
            message: message.into(),
            runs_on: None,
        }
    }

    /// Session `id` runs on another node: the fleet's forwarding sends the request there
    /// (this 503 is answered only should that node be gone by then).
    pub fn runs_elsewhere(id: SessionId) -> Self {
        AgentError {
            runs_on: Some(id),
            ..AgentError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "node_unreachable",
                "the node that runs this session cannot answer right now; retry shortly",
            )
        }
    }

    /// No live agent session of the caller has this identifier.
    pub fn session_not_found(identifier: &str) -> Self {
        AgentError::new(
            StatusCode::NOT_FOUND,
            "session_not_found",
            format!("no live session has the identifier {identifier:?}"),
        )
    }

    /// A 500 whose cause is logged, never answered.
    fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "agent sessions request failed");
        AgentError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server hit an internal error; details are in its log",
        )
    }
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let body = ErrorList {
            errors: vec![ErrorEntry {
                code: self.code.to_owned(),
                message: self.message,
            }],
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, RETRY_AFTER_SECONDS.into());
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        match self.runs_on {
            Some(id) => crate::forwarding::owner_answers(response, id),
            None => response,
        }
    }
}

impl From<EngineError> for AgentError {
    fn from(error: EngineError) -> Self {
        let message = error.to_string();
        match error {
            EngineError::SessionNotFound(_) | EngineError::SessionNotRunning { .. } => {
                AgentError::new(StatusCode::NOT_FOUND, "session_not_found", message)
            }
            EngineError::KeyNotFound(_) => {
                AgentError::new(StatusCode::NOT_FOUND, "key_not_found", message)
            }
            EngineError::NotAccepting(_) => {
                AgentError::new(StatusCode::CONFLICT, "not_accepting", message)
            }
            EngineError::ExecutionCancelled(_) => {
                AgentError::new(StatusCode::CONFLICT, "execution_cancelled", message)
            }
            EngineError::QueryFailed { .. } => AgentError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "interpreter_unresponsive",
                message,
            ),
            EngineError::InvalidInput(detail) => {
                AgentError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", detail)
            }
            EngineError::Unauthorized => AgentError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid API key is required (Authorization: Bearer <key> or X-API-Key: <key>)",
            ),
            EngineError::Forbidden(detail) => {
                AgentError::new(StatusCode::FORBIDDEN, "forbidden", detail)
            }
            EngineError::QueueFull { .. } => {
                AgentError::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", message)
            }
            EngineError::TooManySessions { .. } => {
                AgentError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_sessions", message)
            }
            EngineError::HostMemoryLow { .. } => {
                AgentError::new(StatusCode::TOO_MANY_REQUESTS, "host_memory_low", message)
            }
            EngineError::QuotaExceeded { .. } => {
                AgentError::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", message)
            }
            EngineError::ShuttingDown => AgentError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down",
            ),
            EngineError::WorkerStart(ref cause) => {
                tracing::error!(%cause, "agent session worker failed to start");
                AgentError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "worker_start_failed",
                    "the session's worker could not be started; details are in the server log",
                )
            }
            EngineError::ExecutionNotFound { .. }
            | EngineError::Randomness(_)
            | EngineError::File(_)
            | EngineError::Store(_) => AgentError::internal(&error),
        }
    }
}

impl From<BodyError> for AgentError {
    fn from(error: BodyError) -> Self {
        let (status, code) = match error {
            BodyError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            BodyError::Unreadable => (StatusCode::BAD_REQUEST, "body_unreadable"),
            BodyError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            BodyError::Syntax(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            BodyError::Data(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        };
        AgentError::new(status, code, error.to_string())
    }
}
