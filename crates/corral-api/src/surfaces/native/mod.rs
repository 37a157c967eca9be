//! The native API under `/v1` (plus `/healthz`): sessions, executions, keys, info.
//! Every route but `/healthz` needs a caller ([`crate::auth::Caller`]).
//!
//! Handlers translate JSON to engine calls and engine records to JSON; no logic of their own
//! beyond input parsing. Errors are problem+json via [`crate::problem`].

mod executions;
mod files;
mod keys;
mod sessions;
mod system;
pub mod views;

use std::time::Duration;

use axum::http::StatusCode;
use corral_core::SessionId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::problem::Problem;
use crate::state::ApiState;

/// Every native route, with its OpenAPI description.
pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(system::healthz))
        .routes(routes!(system::info))
        .routes(routes!(system::runtimes))
        .routes(routes!(sessions::create_session, sessions::list_sessions))
        .routes(routes!(
            sessions::get_session,
            sessions::update_session,
            sessions::delete_session
        ))
        .routes(routes!(sessions::interrupt_session))
        .routes(routes!(sessions::restart_session))
        .routes(routes!(sessions::refresh_session))
        .routes(routes!(executions::execute, executions::list_executions))
        .routes(routes!(executions::get_execution))
        .routes(routes!(files::list_files))
        .routes(routes!(
            files::put_file,
            files::get_file,
            files::delete_file
        ))
        .routes(routes!(keys::create_key, keys::list_keys))
        .routes(routes!(keys::revoke_key))
}

/// A number of seconds from a request body: positive and finite, or a 422 naming `field`.
fn parse_seconds(field: &str, seconds: Option<f64>) -> Result<Option<Duration>, Problem> {
    match seconds {
        None => Ok(None),
        Some(value) if value.is_finite() && value > 0.0 && value <= 1.0e9 => {
            Ok(Some(Duration::from_secs_f64(value)))
        }
        Some(value) => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            format!("{field} must be a positive number of seconds; got {value}"),
        )),
    }
}

/// A session id from a path; anything that is not a UUID names no session (404).
fn parse_session_id(text: &str) -> Result<SessionId, Problem> {
    text.parse().map_err(|_| Problem::session_not_found(text))
}
