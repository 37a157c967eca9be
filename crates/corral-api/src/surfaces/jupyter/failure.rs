//! Errors of the Jupyter surface and their one mapping to HTTP: `{"message", "reason"}` with
//! jupyter_server's status codes, or the 501 `{"message", "short_message"}` of a kernel that
//! cannot be had. Engine errors are mapped here once.
//!
//! It decides nothing about when an error happens; handlers do. 5xx bodies never carry
//! internal error text.

use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_core::SessionId;
use corral_engine::EngineError;

use super::models::{JupyterError, KernelUnavailable};

/// Why a Jupyter request failed.
#[derive(Debug)]
pub enum Failure {
    /// `{"message": ..., "reason": null}` with `status`.
    Status { status: StatusCode, message: String },
    /// 501 `{"message": ..., "short_message": ...}`.
    KernelUnavailable {
        message: String,
        short_message: String,
    },
    /// The session runs on another node of the fleet, which answers instead (this 503 is
    /// answered only should that node be gone by then).
    RunsElsewhere(SessionId),
}

impl Failure {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Failure {
        Failure::Status {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::NOT_FOUND, message)
    }

    /// A path that no Jupyter route matches (jupyter_server's regex routes never see it).
    pub fn no_route() -> Failure {
        Failure::not_found("Not Found")
    }

    /// What jupyter_server says of a kernel it does not have.
    pub fn no_kernel(kernel_id: &str) -> Failure {
        Failure::not_found(format!("Kernel does not exist: {kernel_id}"))
    }

    /// What jupyter_server says of a session it does not have.
    pub fn no_session(session_id: &str) -> Failure {
        Failure::not_found(format!("Session not found: session_id='{session_id}'"))
    }

    /// A request without a usable key while keys are required.
    pub fn forbidden() -> Failure {
        Failure::new(StatusCode::FORBIDDEN, "Forbidden")
    }

    /// The body could not be read (too large, or the connection failed).
    pub fn from_body(rejection: BytesRejection) -> Failure {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Failure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "The request body is too large",
            )
        } else {
            Failure::bad_request("The request body could not be read")
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::Status { status, message } => (
                status,
                Json(JupyterError {
                    message,
                    reason: None,
                }),
            )
                .into_response(),
            Failure::KernelUnavailable {
                message,
                short_message,
            } => (
                StatusCode::NOT_IMPLEMENTED,
                Json(KernelUnavailable {
                    message,
                    short_message,
                }),
            )
                .into_response(),
            Failure::RunsElsewhere(id) => crate::forwarding::owner_answers(
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(JupyterError {
                        message:
                            "The node that runs this session cannot answer right now; retry shortly"
                                .to_owned(),
                        reason: None,
                    }),
                )
                    .into_response(),
                id,
            ),
        }
    }
}

impl From<EngineError> for Failure {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Unauthorized => Failure::forbidden(),
            EngineError::Forbidden(detail) => Failure::new(StatusCode::FORBIDDEN, detail),
            // A kernel is a corral session: an unknown or ended session is a kernel that does
            // not exist.
            EngineError::SessionNotFound(id) | EngineError::SessionNotRunning { id, .. } => {
                Failure::no_kernel(&id.to_string())
            }
            EngineError::InvalidInput(detail) => Failure::bad_request(detail),
            EngineError::NotAccepting(id) => Failure::new(
                StatusCode::CONFLICT,
                format!("Kernel {id} is not accepting executions"),
            ),
            EngineError::ExecutionCancelled(_) => {
                Failure::new(StatusCode::CONFLICT, error.to_string())
            }
            EngineError::QueryFailed { .. } => {
                Failure::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
            }
            EngineError::TooManySessions { .. }
            | EngineError::HostMemoryLow { .. }
            | EngineError::QuotaExceeded { .. }
            | EngineError::QueueFull { .. } => {
                Failure::new(StatusCode::TOO_MANY_REQUESTS, error.to_string())
            }
            EngineError::ShuttingDown => Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The server is shutting down",
            ),
            EngineError::WorkerStart(_) => {
                tracing::error!(error = %error, "jupyter: a kernel could not be started");
                Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The kernel could not be started",
                )
            }
            other => {
                tracing::error!(error = %other, "jupyter request failed");
                Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "Unhandled error")
            }
        }
    }
}
