//! `GET /api` (the emulated jupyter_server version; no key needed, as there) and
//! `GET /api/status` (start time, last activity, kernels and connections of the caller).
//!
//! Nothing here changes state.

use axum::extract::State;
use axum::http::request::Parts;
use axum::{Extension, Json};

use super::failure::Failure;
use super::models::{jupyter_timestamp, JupyterError, ServerStatus, ServerVersion};
use super::{SurfaceContext, EMULATED_VERSION};
use crate::state::ApiState;

/// The version of jupyter_server this API answers as.
#[utoipa::path(get, path = "/api", tag = "jupyter",
    responses((status = 200, description = "The emulated jupyter_server version", body = ServerVersion)))]
pub async fn version() -> Json<ServerVersion> {
    Json(ServerVersion {
        version: EMULATED_VERSION.to_owned(),
    })
}

/// When the server started, when the caller's kernels were last active, and how many run.
#[utoipa::path(get, path = "/api/status", tag = "jupyter",
    params(("token" = Option<String>, Query, description = "A corral API key (or `Authorization: token <key>`)")),
    responses(
        (status = 200, description = "The server's status", body = ServerStatus),
        (status = 403, description = "Missing or refused key", body = JupyterError),
    ))]
pub async fn status(
    State(state): State<ApiState>,
    Extension(context): Extension<SurfaceContext>,
    parts: Parts,
) -> Result<Json<ServerStatus>, Failure> {
    let principal = super::caller(&state, &parts).await?;
    let records = state.engine.fleet_live_sessions(&principal).await?;
    let last_activity = records
        .iter()
        .map(|record| record.last_activity_at)
        .fold(context.started_at, std::cmp::max);
    let connections = records
        .iter()
        .map(|record| context.kernels.connections(record.id))
        .sum();
    Ok(Json(ServerStatus {
        connections,
        kernels: records.len(),
        last_activity: jupyter_timestamp(last_activity),
        started: jupyter_timestamp(context.started_at),
    }))
}
