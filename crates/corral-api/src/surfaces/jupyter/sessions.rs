//! Jupyter sessions: `GET/POST /api/sessions`, `GET/PATCH/DELETE /api/sessions/{session_id}`,
//! with jupyter_server's semantics (same-path create returns the existing session with 201,
//! `kernel.id` reuses a running kernel, PATCH re-points and shuts the old kernel down, DELETE
//! shuts the kernel down).
//!
//! Storage: a Jupyter session lives on its kernel's corral session, as flat string fields
//! under `metadata["jupyter"]` (`session_id`, `path`, `name`, `type`); the path is the claim
//! that makes same-path creation race-free (`Engine::find_or_create_session`). So a session
//! ends with its kernel, and a kernel backs at most one Jupyter session: naming a kernel that
//! backs another session (POST or PATCH `kernel.id`) is 400
//! `Kernel <id> already backs session <session id>` (jupyter_server would share it), and
//! moving a session onto a path another session holds is 409. The 410 of jupyter_server
//! (kernel deleted before its session) cannot happen: a session whose kernel ended is gone.
//!
//! Kernels themselves are `kernels`' business; this module only binds sessions to them.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use corral_core::{Principal, SessionId, SessionRecord};
use corral_engine::{CreateSession, SessionClaim, SessionUpdate, CLOSED_BY_CLIENT_REASON};
use serde_json::{Map, Value};

use super::failure::Failure;
use super::kernel_hub::KernelHubs;
use super::kernels::live_kernel;
use super::kernelspecs::{default_kernel_name, is_kernel_name};
use super::models::{JupyterError, KernelModel, KernelUnavailable, NotebookModel, SessionModel};
use super::requests::{json_body, json_object, optional_object, optional_string, required_string};
use super::SurfaceContext;
use crate::state::ApiState;

/// Metadata key under which a kernel's Jupyter session is kept.
const METADATA_KEY: &str = "jupyter";
/// Reason recorded on a kernel shut down because its session moved to another kernel.
const REPLACED_REASON: &str = "replaced by another kernel for its Jupyter session";

/// A Jupyter session as kept on its kernel's metadata.
#[derive(Clone, Debug, PartialEq)]
struct StoredSession {
    session_id: String,
    path: String,
    name: Option<String>,
    session_type: String,
}

impl StoredSession {
    /// The session `record` backs, if any.
    fn of(record: &SessionRecord) -> Option<StoredSession> {
        let fields = record.metadata.get(METADATA_KEY)?;
        let text = |field: &str| fields.get(field)?.as_str().map(str::to_owned);
        Some(StoredSession {
            session_id: text("session_id")?,
            path: text("path")?,
            name: text("name"),
            session_type: text("type")?,
        })
    }

    /// `metadata` with this session in it.
    fn written_into(&self, metadata: &Map<String, Value>) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("session_id".to_owned(), self.session_id.clone().into());
        fields.insert("path".to_owned(), self.path.clone().into());
        if let Some(name) = &self.name {
            fields.insert("name".to_owned(), name.clone().into());
        }
        fields.insert("type".to_owned(), self.session_type.clone().into());
        let mut metadata = metadata.clone();
        metadata.insert(METADATA_KEY.to_owned(), Value::Object(fields));
        metadata
    }

    fn model(&self, kernel: &SessionRecord, kernels: &KernelHubs) -> SessionModel {
        SessionModel {
            id: self.session_id.clone(),
            path: self.path.clone(),
            name: self.name.clone(),
            session_type: self.session_type.clone(),
            kernel: KernelModel::of(kernel, kernels.connections(kernel.id)),
            notebook: (self.session_type == "notebook").then(|| NotebookModel {
                path: self.path.clone(),
                name: self.name.clone(),
            }),
        }
    }
}

fn claim(field: &str, value: &str) -> SessionClaim {
    SessionClaim {
        namespace: METADATA_KEY.to_owned(),
        field: field.to_owned(),
        value: value.to_owned(),
    }
}

/// The caller's session `session_id` and the kernel backing it.
fn find_session(
    state: &ApiState,
    principal: &Principal,
    session_id: &str,
) -> Option<(StoredSession, SessionRecord)> {
    let record = state
        .engine
        .find_claimed(principal, &claim("session_id", session_id))?;
    Some((StoredSession::of(&record)?, record))
}

/// The session id of a route, or the 404 for a path no session route matches.
fn route_session_id(path: Result<Path<String>, PathRejection>) -> Result<String, Failure> {
    match path {
        Ok(Path(session_id)) if super::is_route_id(&session_id) => Ok(session_id),
        _ => Err(Failure::no_route()),
    }
}

/// `kernel` of a request body: `(id, name)`, each optional.
fn kernel_request(
    request: &Map<String, Value>,
) -> Result<(Option<String>, Option<String>), Failure> {
    let Some(kernel) = optional_object(request, "kernel")? else {
        return Ok((None, None));
    };
    let field = |name: &str| {
        optional_string(kernel, name).map_err(|_| {
            Failure::bad_request(format!(
                "Invalid value for kernel.{name}: expected a string"
            ))
        })
    };
    Ok((field("id")?, field("name")?))
}

/// The legacy `{"notebook": {...}}` body, rewritten into `path` and `type`: on create the
/// notebook's `name` (else its `path`) is the path; on update only its `path` counts.
fn apply_legacy_notebook(request: &mut Map<String, Value>, on_create: bool) -> Result<(), Failure> {
    let Some(notebook) = optional_object(request, "notebook")?.cloned() else {
        return Ok(());
    };
    let path = if on_create {
        notebook.get("name").or_else(|| notebook.get("path"))
    } else {
        match notebook.get("path") {
            Some(path) => Some(path),
            None => return Ok(()),
        }
    };
    request.insert("type".to_owned(), Value::String("notebook".to_owned()));
    if let Some(path) = path {
        request.insert("path".to_owned(), path.clone());
    }
    Ok(())
}

/// 400 when `kernel` already backs a session other than `session_id`.
fn ensure_free(kernel: &SessionRecord, session_id: &str) -> Result<(), Failure> {
    match StoredSession::of(kernel) {
        Some(other) if other.session_id != session_id => Err(Failure::bad_request(format!(
            "Kernel {} already backs session {}",
            kernel.id, other.session_id
        ))),
        _ => Ok(()),
    }
}

/// Writes `session` onto `kernel`'s metadata.
async fn bind(
    state: &ApiState,
    principal: &Principal,
    kernel: &SessionRecord,
    session: &StoredSession,
) -> Result<SessionRecord, Failure> {
    Ok(state
        .engine
        .update_session(
            principal,
            kernel.id,
            SessionUpdate {
                metadata: Some(session.written_into(&kernel.metadata)),
                ..Default::default()
            },
        )
        .await?)
}

/// Takes the session off `kernel` and shuts it down. The session already lives on another
/// kernel, so a failure here (the kernel ended meanwhile) is logged, not answered.
async fn retire(state: &ApiState, principal: &Principal, kernel: &SessionRecord) {
    let mut metadata = kernel.metadata.clone();
    metadata.remove(METADATA_KEY);
    let update = SessionUpdate {
        metadata: Some(metadata),
        ..Default::default()
    };
    if let Err(error) = state
        .engine
        .update_session(principal, kernel.id, update)
        .await
    {
        tracing::warn!(kernel_id = %kernel.id, %error, "jupyter: the replaced kernel could not be unbound");
    }
    if let Err(error) = state
        .engine
        .close_session(principal, kernel.id, REPLACED_REASON)
        .await
    {
        tracing::warn!(kernel_id = %kernel.id, %error, "jupyter: the replaced kernel could not be shut down");
    }
}

fn created(parts: &Parts, model: SessionModel) -> Response {
    let location = format!("{}/api/sessions/{}", super::mount_prefix(parts), model.id);
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(model),
    )
        .into_response()
}

/// The answer to a create of `path` when `holder` already holds it: its session (answered by
/// the node that runs it), or 409 when it is not a Jupyter session.
fn holder_answer(
    state: &ApiState,
    context: &SurfaceContext,
    parts: &Parts,
    path: &str,
    holder: &SessionRecord,
) -> Result<Response, Failure> {
    if !state.engine.runs_here(holder.id) {
        return Err(Failure::RunsElsewhere(holder.id));
    }
    match StoredSession::of(holder) {
        Some(existing) => Ok(created(parts, existing.model(holder, &context.kernels))),
        None => Err(Failure::new(
            StatusCode::CONFLICT,
            format!(
                "Path {path} is held by corral session {}, which is not a Jupyter session",
                holder.id
            ),
        )),
    }
}

/// Makes `kernel` the holder of `path` in the store (taking it from `from`), or the 409 of a
/// path another session holds.
async fn hold_path(
    state: &ApiState,
    principal: &Principal,
    kernel: SessionId,
    path: &str,
    from: Option<SessionId>,
) -> Result<(), Failure> {
    match state
        .engine
        .hold_claim(principal, kernel, &claim("path", path), from)
        .await?
    {
        None => Ok(()),
        Some(holder) => Err(Failure::new(
            StatusCode::CONFLICT,
            format!("Path {path} is already used by corral session {holder}"),
        )),
    }
}

/// Lists the caller's sessions.
#[utoipa::path(get, path = "/api/sessions", tag = "jupyter",
    params(("token" = Option<String>, Query, description = "A corral API key (or `Authorization: token <key>`)")),
    responses(
        (status = 200, description = "The sessions", body = Vec<SessionModel>),
        (status = 403, description = "Missing or refused key", body = JupyterError),
    ))]
pub async fn list_sessions(
    State(state): State<ApiState>,
    Extension(context): Extension<SurfaceContext>,
    parts: Parts,
) -> Result<Json<Vec<SessionModel>>, Failure> {
    let principal = super::caller(&state, &parts).await?;
    Ok(Json(
        state
            .engine
            .fleet_live_sessions(&principal)
            .await?
            .iter()
            .filter_map(|record| Some(StoredSession::of(record)?.model(record, &context.kernels)))
            .collect(),
    ))
}

/// Creates a session, or returns the session that already has this path (unchanged).
#[utoipa::path(post, path = "/api/sessions", tag = "jupyter",
    params(("token" = Option<String>, Query, description = "A corral API key (or `Authorization: token <key>`)")),
    request_body(content = Object, description = "`path` and `type` (required), `name`, `kernel` `{id?, name?}`; or the legacy `{\"notebook\": {\"name\"|\"path\"}}`"),
    responses(
        (status = 201, description = "The new session, or the existing one with this path", body = SessionModel,
            headers(("Location" = String, description = "The session's URL"))),
        (status = 400, description = "No JSON data, a missing field, a wrong type, or a kernel that backs another session", body = JupyterError),
        (status = 403, description = "Missing or refused key", body = JupyterError),
        (status = 409, description = "The path is held by a corral session that is not a Jupyter session", body = JupyterError),
        (status = 429, description = "Session limit or quota reached", body = JupyterError),
        (status = 501, description = "No such kernelspec", body = KernelUnavailable),
    ))]
pub async fn create_session(
    State(state): State<ApiState>,
    Extension(context): Extension<SurfaceContext>,
    parts: Parts,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    let principal = super::caller(&state, &parts).await?;
    let Some(body) = json_body(body)? else {
        return Err(Failure::bad_request("No JSON data provided"));
    };
    let mut request = json_object(body)?;
    apply_legacy_notebook(&mut request, true)?;
    let path = required_string(&request, "path")?;
    let session_type = required_string(&request, "type")?;
    let name = optional_string(&request, "name")?;
    let (kernel_id, kernel_name) = kernel_request(&request)?;

    let _changes = context.session_changes.lock().await;
    let path_claim = claim("path", &path);
    if let Some(record) = state
        .engine
        .claimed_session(&principal, &path_claim)
        .await?
    {
        return holder_answer(&state, &context, &parts, &path, &record);
    }
    let session = StoredSession {
        session_id: uuid::Uuid::new_v4().to_string(),
        path,
        name,
        session_type,
    };
    let running = match kernel_id.as_deref() {
        Some(kernel_id) if super::is_route_id(kernel_id) => {
            live_kernel(&state, &principal, kernel_id).await.ok()
        }
        _ => None,
    };
    let kernel = match running {
        Some(kernel) => {
            ensure_free(&kernel, &session.session_id)?;
            let held = state
                .engine
                .hold_claim(&principal, kernel.id, &path_claim, None)
                .await?;
            if let Some(holder) = held {
                // Another node took the path meanwhile.
                let record = state.engine.get_session(&principal, holder).await?;
                return holder_answer(&state, &context, &parts, &session.path, &record);
            }
            bind(&state, &principal, &kernel, &session).await?
        }
        None => {
            let kernel_name = kernel_name.unwrap_or_else(|| default_kernel_name(&state));
            if !is_kernel_name(&state, &kernel_name) {
                return Err(Failure::KernelUnavailable {
                    message: format!(
                        "The '{kernel_name}' kernel is not available. Please pick another suitable kernel instead, or install that kernel."
                    ),
                    short_message: format!("{kernel_name} not found"),
                });
            }
            let (kernel, created) = state
                .engine
                .find_or_create_session(
                    &principal,
                    &path_claim,
                    CreateSession {
                        runtime: Some(kernel_name),
                        metadata: session.written_into(&Map::new()),
                        ..Default::default()
                    },
                )
                .await?;
            if !created && !state.engine.runs_here(kernel.id) {
                // Another node created it meanwhile.
                return Err(Failure::RunsElsewhere(kernel.id));
            }
            kernel
        }
    };
    let session = StoredSession::of(&kernel).unwrap_or(session);
    Ok(created(&parts, session.model(&kernel, &context.kernels)))
}

/// One session.
#[utoipa::path(get, path = "/api/sessions/{session_id}", tag = "jupyter",
    params(
        ("session_id" = String, Path, description = "Session id (a UUID)"),
        ("token" = Option<String>, Query, description = "A corral API key (or `Authorization: token <key>`)"),
    ),
    responses(
        (status = 200, description = "The session", body = SessionModel),
        (status = 403, description = "Missing or refused key", body = JupyterError),
        (status = 404, description = "No such session", body = JupyterError),
    ))]
pub async fn get_session(
    State(state): State<ApiState>,
    Extension(context): Extension<SurfaceContext>,
    session_id: Result<Path<String>, PathRejection>,
    parts: Parts,
) -> Result<Json<SessionModel>, Failure> {
    let principal = super::caller(&state, &parts).await?;
    let session_id = route_session_id(session_id)?;
    let (session, kernel) = find_session(&state, &principal, &session_id)
        .ok_or_else(|| Failure::no_session(&session_id))?;
    Ok(Json(session.model(&kernel, &context.kernels)))
}

/// What a PATCH asks of the session's kernel.
enum KernelChange {
    /// Move the session onto this running kernel.
    Rebind(Box<SessionRecord>),
    /// Start a kernel of this kernelspec for the session.
    Start(String),
}

/// Renames or moves the session, changes its type, or puts it on another kernel (a running
/// one by `kernel.id`, a new one by `kernel.name`), shutting the old kernel down.
#[utoipa::path(patch, path = "/api/sessions/{session_id}", tag = "jupyter",
    params(
        ("session_id" = String, Path, description = "Session id (a UUID)"),
        ("token" = Option<String>, Query, description = "A corral API key (or `Authorization: token <key>`)"),
    ),
    request_body(content = Object, description = "Any of `path`, `name`, `type`, `kernel` `{id?, name?}`; `{}` changes nothing"),
    responses(
        (status = 200, description = "The updated session", body = SessionModel),
        (status = 400, description = "No JSON data, a wrong type, `No such kernel: <id>`, or a kernel that backs another session", body = JupyterError),
        (status = 403, description = "Missing or refused key", body = JupyterError),
        (status = 404, description = "No such session", body = JupyterError),
        (status = 409, description = "Another session has the new path", body = JupyterError),
        (status = 501, description = "The kernelspec could not be started", body = KernelUnavailable),
    ))]
pub async fn update_session(
    State(state): State<ApiState>,
    Extension(context): Extension<SurfaceContext>,
    session_id: Result<Path<String>, PathRejection>,
    parts: Parts,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SessionModel>, Failure> {
    let principal = super::caller(&state, &parts).await?;
    let session_id = route_session_id(session_id)?;
    let Some(body) = json_body(body)? else {
        return Err(Failure::bad_request("No JSON data provided"));
    };
    let mut request = json_object(body)?;
    apply_legacy_notebook(&mut request, false)?;
    let new_path = optional_string(&request, "path")?;
    let new_name = optional_string(&request, "name")?;
    let new_type = optional_string(&request, "type")?;
    let (kernel_id, kernel_name) = kernel_request(&request)?;

    let _changes = context.session_changes.lock().await;
    let (before, kernel) = find_session(&state, &principal, &session_id)
        .ok_or_else(|| Failure::no_session(&session_id))?;
    let mut session = before.clone();
    if let Some(path) = new_path {
        session.path = path;
    }
    if request.contains_key("name") {
        session.name = new_name;
    }
    if let Some(session_type) = new_type {
        session.session_type = session_type;
    }
    if session.path != before.path {
        if let Some(holder) = state
            .engine
            .claimed_session(&principal, &claim("path", &session.path))
            .await?
        {
            return Err(Failure::new(
                StatusCode::CONFLICT,
                format!(
                    "Path {} is already used by corral session {}",
                    session.path, holder.id
                ),
            ));
        }
    }
    let change = match (kernel_id, kernel_name) {
        (Some(kernel_id), _) => {
            let running = if super::is_route_id(&kernel_id) {
                live_kernel(&state, &principal, &kernel_id).await.ok()
            } else {
                None
            };
            let Some(target) = running else {
                return Err(Failure::bad_request(format!("No such kernel: {kernel_id}")));
            };
            if target.id == kernel.id {
                None
            } else {
                ensure_free(&target, &session.session_id)?;
                Some(KernelChange::Rebind(Box::new(target)))
            }
        }
        (None, Some(kernel_name)) => {
            if !is_kernel_name(&state, &kernel_name) {
                return Err(Failure::KernelUnavailable {
                    message: format!(
                        "The '{kernel_name}' kernel could not be started: 'No such kernel named {kernel_name}'"
                    ),
                    short_message: format!("Error starting kernel {kernel_name}"),
                });
            }
            Some(KernelChange::Start(kernel_name))
        }
        (None, None) => None,
    };
    // The path's claim in the store follows the session: to its new path, or with the
    // session onto another kernel.
    let updated = match change {
        None if session == before => kernel,
        None => {
            if session.path != before.path {
                hold_path(&state, &principal, kernel.id, &session.path, None).await?;
            }
            bind(&state, &principal, &kernel, &session).await?
        }
        Some(KernelChange::Rebind(target)) => {
            hold_path(
                &state,
                &principal,
                target.id,
                &session.path,
                Some(kernel.id),
            )
            .await?;
            let updated = bind(&state, &principal, &target, &session).await?;
            retire(&state, &principal, &kernel).await;
            updated
        }
        Some(KernelChange::Start(kernel_name)) => {
            let updated = state
                .engine
                .create_session(
                    &principal,
                    CreateSession {
                        runtime: Some(kernel_name),
                        metadata: session.written_into(&Map::new()),
                        ..Default::default()
                    },
                )
                .await?;
            let held = hold_path(
                &state,
                &principal,
                updated.id,
                &session.path,
                Some(kernel.id),
            );
            if let Err(conflict) = held.await {
                retire(&state, &principal, &updated).await;
                return Err(conflict);
            }
            retire(&state, &principal, &kernel).await;
            updated
        }
    };
    Ok(Json(session.model(&updated, &context.kernels)))
}

/// Deletes the session and shuts its kernel down.
#[utoipa::path(delete, path = "/api/sessions/{session_id}", tag = "jupyter",
    params(
        ("session_id" = String, Path, description = "Session id (a UUID)"),
        ("token" = Option<String>, Query, description = "A corral API key (or `Authorization: token <key>`)"),
    ),
    responses(
        (status = 204, description = "The session is gone and its kernel shut down"),
        (status = 403, description = "Missing or refused key", body = JupyterError),
        (status = 404, description = "No such session", body = JupyterError),
    ))]
pub async fn delete_session(
    State(state): State<ApiState>,
    Extension(context): Extension<SurfaceContext>,
    session_id: Result<Path<String>, PathRejection>,
    parts: Parts,
) -> Result<StatusCode, Failure> {
    let principal = super::caller(&state, &parts).await?;
    let session_id = route_session_id(session_id)?;
    let _changes = context.session_changes.lock().await;
    let (_, kernel) = find_session(&state, &principal, &session_id)
        .ok_or_else(|| Failure::no_session(&session_id))?;
    state
        .engine
        .close_session(&principal, kernel.id, CLOSED_BY_CLIENT_REASON)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
