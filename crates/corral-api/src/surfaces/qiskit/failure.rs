//! Qiskit Runtime's error body (`ErrorContainer`): `{"errors": [{code, message, more_info}],
//! "trace": <request id>, "status_code": N}`, and the one mapping of [`EngineError`] to it.
//!
//! Handlers return a [`Failure`]; it travels in the response's extensions to
//! [`render_errors`], the layer that knows the request's `x-request-id` and writes the body.
//! That layer also gives any other error response of these routes (a body over the size
//! limit, a path that is not valid UTF-8) the same shape. Deciding *when* to fail is the
//! handlers' business, not this module's.

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_engine::EngineError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where `more_info` points: the document describing every route and body of this server.
const MORE_INFO: &str = "/openapi.json";

/// `ErrorContainer`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorContainer {
    pub errors: Vec<ErrorItem>,
    /// The request's id (its `x-request-id` header).
    pub trace: String,
    pub status_code: u16,
}

/// One entry of `ErrorContainer.errors`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorItem {
    pub code: String,
    pub message: String,
    pub more_info: String,
}

/// A failed request: its status, a short machine-readable code and a message for people.
#[derive(Clone, Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Failure {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn session_not_found() -> Failure {
        Failure::new(StatusCode::NOT_FOUND, "not_found", "session not found")
    }

    fn internal() -> Failure {
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the server hit an internal error; details are in its log",
        )
    }
}

impl IntoResponse for Failure {
    /// An empty response carrying the failure; [`render_errors`] writes the body.
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1));
        }
        response.extensions_mut().insert(self);
        response
    }
}

impl From<EngineError> for Failure {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Unauthorized => Failure::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid API key is required (Authorization: Bearer <key> or apikey <key>)",
            ),
            EngineError::Forbidden(detail) => {
                Failure::new(StatusCode::FORBIDDEN, "forbidden", detail)
            }
            EngineError::SessionNotFound(_) => Failure::session_not_found(),
            EngineError::SessionNotRunning { .. } => {
                Failure::new(StatusCode::CONFLICT, "session_closed", error.to_string())
            }
            EngineError::NotAccepting(_) => Failure::new(
                StatusCode::CONFLICT,
                "not_accepting_jobs",
                error.to_string(),
            ),
            EngineError::ExecutionCancelled(_) => {
                Failure::new(StatusCode::CONFLICT, "cancelled", error.to_string())
            }
            EngineError::QueryFailed { .. } => Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                error.to_string(),
            ),
            EngineError::InvalidInput(detail) => Failure::bad_request(detail),
            EngineError::QueueFull { .. }
            | EngineError::TooManySessions { .. }
            | EngineError::HostMemoryLow { .. }
            | EngineError::QuotaExceeded { .. } => Failure::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                error.to_string(),
            ),
            EngineError::ShuttingDown => Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "the server is shutting down",
            ),
            EngineError::WorkerStart(ref cause) => {
                tracing::error!(%cause, "qiskit: a session's worker failed to start");
                Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service_unavailable",
                    "the session could not be started",
                )
            }
            EngineError::ExecutionNotFound { .. }
            | EngineError::KeyNotFound(_)
            | EngineError::Randomness(_)
            | EngineError::File(_)
            | EngineError::Store(_) => {
                tracing::error!(%error, "qiskit request failed");
                Failure::internal()
            }
        }
    }
}

/// Writes every error response of the Qiskit routes as an `ErrorContainer` whose `trace` is
/// the request's id: handlers' [`Failure`]s, and whatever else answered with an error.
pub async fn render_errors(request: Request, next: Next) -> Response {
    let trace = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let response = next.run(request).await;
    let status = response.status();
    if !status.is_client_error() && !status.is_server_error() {
        return response;
    }
    let failure = match response.extensions().get::<Failure>() {
        Some(failure) => failure.clone(),
        None => other_failure(status),
    };
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let mut rendered = (
        failure.status,
        Json(ErrorContainer {
            errors: vec![ErrorItem {
                code: failure.code.to_owned(),
                message: failure.message,
                more_info: MORE_INFO.to_owned(),
            }],
            trace,
            status_code: failure.status.as_u16(),
        }),
    )
        .into_response();
    if let Some(retry_after) = retry_after {
        rendered
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after);
    }
    rendered
}

/// An error response that did not come from a handler (an extractor's rejection).
fn other_failure(status: StatusCode) -> Failure {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => Failure::new(
            status,
            "payload_too_large",
            "the request body is larger than the server accepts",
        ),
        status if status.is_server_error() => {
            tracing::error!(%status, "qiskit route failed outside its handler");
            Failure::internal()
        }
        status => Failure::new(
            status,
            "bad_request",
            status.canonical_reason().unwrap_or("bad request"),
        ),
    }
}
