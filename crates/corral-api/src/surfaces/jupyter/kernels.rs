//! Kernels: `GET/POST /api/kernels`, `GET/DELETE /api/kernels/{kernel_id}`,
//! `POST /api/kernels/{kernel_id}/interrupt` and `/restart`. A kernel is a live corral session
//! of the caller; deleting one closes the session (and with it any Jupyter session it backs).
//!
//! Two documented departures from jupyter_server, which answers 500 to both: an unknown
//! kernelspec name on `POST /api/kernels` is 404 `No such kernel named <name>`, and restarting
//! an unknown kernel is 404. Kernel ids are chosen by corral: a `kernel_id` in the body is
//! honoured only when it names a running kernel (which is then returned), as jupyter_server
//! does for persistent kernels. `env` and `path` are accepted and not applied: corral
//! sessions get no caller environment and always start in their workspace.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use corral_core::{Principal, SessionId, SessionRecord, SessionState};
use corral_engine::{CreateSession, EngineError, CLOSED_BY_CLIENT_REASON};

use super::failure::Failure;
use super::kernelspecs::{default_kernel_name, is_kernel_name};
use super::models::{JupyterError, KernelModel};
use super::requests::{json_body, json_object, optional_object, optional_string};
use super::SurfaceContext;
use crate::state::ApiState;

/// The caller's live kernel named by a route id; anything else is jupyter_server's 404.
pub async fn live_kernel(
    state: &ApiState,
    principal: &Principal,
    kernel_id: &str,
) -> Result<SessionRecord, Failure> {
    if !super::is_route_id(kernel_id) {
        return Err(Failure::no_route());
    }
    let Ok(id) = kernel_id.parse::<SessionId>() else {
        return Err(Failure::no_kernel(kernel_id));
    };
    match state.engine.get_session(principal, id).await {
        Ok(record) if !record.state.is_terminal() => Ok(record),
        Ok(_) | Err(EngineError::SessionNotFound(_)) => Err(Failure::no_kernel(kernel_id)),
        Err(other) => Err(other.into()),
    }
}

/// A kernel that can be restarted: a running one, or a dead one (its interpreter was killed,
/// e.g. for memory, or the server restarted), which the restart brings back. Shut-down
/// kernels are gone.
async fn restartable_kernel(
    state: &ApiState,
    principal: &Principal,
    kernel_id: &str,
) -> Result<SessionRecord, Failure> {
    if !super::is_route_id(kernel_id) {
        return Err(Failure::no_route());
    }
    let Ok(id) = kernel_id.parse::<SessionId>() else {
        return Err(Failure::no_kernel(kernel_id));
    };
    match state.engine.get_session(principal, id).await {
        Ok(record) if record.state != SessionState::Closed => Ok(record),
        Ok(_) | Err(EngineError::SessionNotFound(_)) => Err(Failure::no_kernel(kernel_id)),
        Err(other) => Err(other.into()),
    }
}

/// The kernel id of a route, or the 404 for a path no kernel route matches.
fn route_kernel_id(path: Result<Path<String>, PathRejection>) -> Result<String, Failure> {
    path.map(|Path(kernel_id)| kernel_id)
        .map_err(|_| Failure::no_route())
}

/// Lists the caller's running kernels (every live corral session it can see).
#[utoipa::path(get, path = "/api/kernels", tag = "jupyter",
    params(("token" = Option<String>, Query, description = "A corral API key (or `Authorization: token <key>`)")),
    responses(
        (status = 200, description = "The running kernels", body = Vec<KernelModel>),
        (status = 403, description = "Missing or refused key", body = JupyterError),
    ))]
pub async fn list_kernels(
    State(state): State<ApiState>,
    Extension(context): Extension<SurfaceContext>,
    parts: Parts,
) -> Result<Json<Vec<KernelModel>>, Failure> {
    let principal = super::caller(&state, &parts).await?;
    Ok(Json(
        state
            .engine
            .fleet_live_sessions(&principal)
            .await?
            .iter()
            .map(|record| KernelModel::of(record, context.kernels.connections(record.id)))
            .collect(),
    ))
}

/// Starts a kernel: a new corral session running the named kernelspec's runtime.
#[utoipa::path(post, path = "/api/kernels", tag = "jupyter",
    params(("token" = Option<String>, Query, description = "A corral API key (or `Authorization: token <key>`)")),
    request_body(content = Object, description = "Optional: `name` (kernelspec, default `python3`), `path`, `env`, `kernel_id`"),
    responses(
        (status = 201, description = "The kernel, ready", body = KernelModel,
            headers(("Location" = String, description = "The kernel's URL"))),
        (status = 400, description = "Malformed body", body = JupyterError),
        (status = 403, description = "Missing or refused key", body = JupyterError),
        (status = 404, description = "No such kernelspec", body = JupyterError),
        (status = 429, description = "Session limit or quota reached", body = JupyterError),
        (status = 503, description = "No worker could be started", body = JupyterError),
    ))]
pub async fn start_kernel(
    State(state): State<ApiState>,
    Extension(context): Extension<SurfaceContext>,
    parts: Parts,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    let principal = super::caller(&state, &parts).await?;
    let request = json_body(body)?.map(json_object).transpose()?;
    let request = request.unwrap_or_default();
    let name = optional_string(&request, "name")?.unwrap_or_else(|| default_kernel_name(&state));
    optional_string(&request, "path")?;
    if let Some(env) = optional_object(&request, "env")? {
        if env.values().any(|value| !value.is_string()) {
            return Err(Failure::bad_request(
                "Invalid value for env: expected an object of strings",
            ));
        }
    }
    let kernel_id = optional_string(&request, "kernel_id")?;
    if !is_kernel_name(&state, &name) {
        return Err(Failure::not_found(format!("No such kernel named {name}")));
    }
    let existing = match kernel_id.as_deref() {
        Some(kernel_id) if super::is_route_id(kernel_id) => {
            live_kernel(&state, &principal, kernel_id).await.ok()
        }
        _ => None,
    };
    let record = match existing {
        Some(record) => record,
        None => {
            state
                .engine
                .create_session(
                    &principal,
                    CreateSession {
                        runtime: Some(name),
                        ..Default::default()
                    },
                )
                .await?
        }
    };
    let location = format!("{}/api/kernels/{}", super::mount_prefix(&parts), record.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(KernelModel::of(
            &record,
            context.kernels.connections(record.id),
        )),
    )
        .into_response())
}

/// One running kernel.
#[utoipa::path(get, path = "/api/kernels/{kernel_id}", tag = "jupyter",
    params(
        ("kernel_id" = String, Path, description = "Kernel id (the corral session id)"),
        ("token" = Option<String>, Query, description = "A corral API key (or `Authorization: token <key>`)"),
    ),
    responses(
        (status = 200, description = "The kernel", body = KernelModel),
        (status = 403, description = "Missing or refused key", body = JupyterError),
        (status = 404, description = "No such running kernel", body = JupyterError),
    ))]
pub async fn get_kernel(
    State(state): State<ApiState>,
    Extension(context): Extension<SurfaceContext>,
    kernel_id: Result<Path<String>, PathRejection>,
    parts: Parts,
) -> Result<Json<KernelModel>, Failure> {
    let principal = super::caller(&state, &parts).await?;
    let record = live_kernel(&state, &principal, &route_kernel_id(kernel_id)?).await?;
    Ok(Json(KernelModel::of(
        &record,
        context.kernels.connections(record.id),
    )))
}

/// Shuts a kernel down: closes its corral session.
#[utoipa::path(delete, path = "/api/kernels/{kernel_id}", tag = "jupyter",
    params(
        ("kernel_id" = String, Path, description = "Kernel id (the corral session id)"),
        ("token" = Option<String>, Query, description = "A corral API key (or `Authorization: token <key>`)"),
    ),
    responses(
        (status = 204, description = "The kernel was shut down"),
        (status = 403, description = "Missing or refused key", body = JupyterError),
        (status = 404, description = "No such running kernel", body = JupyterError),
    ))]
pub async fn delete_kernel(
    State(state): State<ApiState>,
    kernel_id: Result<Path<String>, PathRejection>,
    parts: Parts,
) -> Result<StatusCode, Failure> {
    let principal = super::caller(&state, &parts).await?;
    let record = live_kernel(&state, &principal, &route_kernel_id(kernel_id)?).await?;
    state
        .engine
        .close_session(&principal, record.id, CLOSED_BY_CLIENT_REASON)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Interrupts what the kernel runs (SIGINT; a no-op when idle).
#[utoipa::path(post, path = "/api/kernels/{kernel_id}/interrupt", tag = "jupyter",
    params(
        ("kernel_id" = String, Path, description = "Kernel id (the corral session id)"),
        ("token" = Option<String>, Query, description = "A corral API key (or `Authorization: token <key>`)"),
    ),
    responses(
        (status = 204, description = "Interrupted"),
        (status = 403, description = "Missing or refused key", body = JupyterError),
        (status = 404, description = "No such running kernel", body = JupyterError),
    ))]
pub async fn interrupt_kernel(
    State(state): State<ApiState>,
    kernel_id: Result<Path<String>, PathRejection>,
    parts: Parts,
) -> Result<StatusCode, Failure> {
    let principal = super::caller(&state, &parts).await?;
    let record = live_kernel(&state, &principal, &route_kernel_id(kernel_id)?).await?;
    state.engine.interrupt(&principal, record.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Restarts the kernel: a fresh interpreter, same id, all state lost.
#[utoipa::path(post, path = "/api/kernels/{kernel_id}/restart", tag = "jupyter",
    params(
        ("kernel_id" = String, Path, description = "Kernel id (the corral session id)"),
        ("token" = Option<String>, Query, description = "A corral API key (or `Authorization: token <key>`)"),
    ),
    responses(
        (status = 200, description = "The restarted kernel", body = KernelModel),
        (status = 403, description = "Missing or refused key", body = JupyterError),
        (status = 404, description = "No such kernel, or it was shut down (a dead kernel is restarted)", body = JupyterError),
        (status = 500, description = "The new interpreter did not start; the kernel is gone", body = JupyterError),
    ))]
pub async fn restart_kernel(
    State(state): State<ApiState>,
    Extension(context): Extension<SurfaceContext>,
    kernel_id: Result<Path<String>, PathRejection>,
    parts: Parts,
) -> Result<Json<KernelModel>, Failure> {
    let principal = super::caller(&state, &parts).await?;
    let record = restartable_kernel(&state, &principal, &route_kernel_id(kernel_id)?).await?;
    match state.engine.restart(&principal, record.id).await {
        Ok(record) => Ok(Json(KernelModel::of(
            &record,
            context.kernels.connections(record.id),
        ))),
        // The new interpreter did not start and the kernel is gone.
        Err(EngineError::SessionNotRunning { id, reason, .. }) => {
            tracing::error!(kernel_id = %id, reason = reason.as_deref().unwrap_or(""), "jupyter: kernel restart failed");
            Err(Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Exception restarting kernel",
            ))
        }
        Err(other) => Err(other.into()),
    }
}
