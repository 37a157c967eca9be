//! The agent sessions API (seed 004, `agent_sessions_api`), mounted at `/agents` by default:
//! `GET /sessions`, and `PUT`, `GET`, `DELETE /sessions/{identifier}`.
//!
//! A translation over the engine and nothing more. `PUT` is an idempotent create keyed by a
//! caller-chosen identifier (an engine [`SessionClaim`], so concurrent `PUT`s of one
//! identifier give one session); the call that creates the session also mints a
//! session-scoped API key, returned once as `api_key`, whose id is kept in the session's
//! metadata so `DELETE` can revoke it. Every success is 200 with a JSON body; every error is
//! an `ErrorList`. The schema is inferred (the seed names models without fields); see
//! `views`. Who may see or change what is the engine's decision, never this module's. It
//! does not import any other surface.

mod errors;
mod views;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::Json;
use corral_core::{KeyScope, Principal, SessionId, SessionRecord};
use corral_engine::keys::NewKey;
use corral_engine::{CreateSession, SessionClaim, SessionUpdate, CLOSED_BY_CLIENT_REASON};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::authenticate;
use crate::body::{parse_json, BodyError};
use crate::forwarding::{AddressedRoute, SessionAddress};
use crate::state::ApiState;
use errors::{AgentError, ErrorList};
use views::{AgentSession, AgentSessionRequest, SessionContainer};

/// Reason recorded when a session is closed because its key could not be minted or recorded.
const KEY_FAILED_REASON: &str = "its agent session key could not be issued";

/// The routes that name their session by its identifier: in a fleet, the node that runs it
/// answers them.
pub const ADDRESSED_ROUTES: &[AddressedRoute] = &[
    AddressedRoute {
        method: Method::PUT,
        path: "/sessions/{identifier}",
        address: SessionAddress::Claim,
    },
    AddressedRoute {
        method: Method::GET,
        path: "/sessions/{identifier}",
        address: SessionAddress::Claim,
    },
    AddressedRoute {
        method: Method::DELETE,
        path: "/sessions/{identifier}",
        address: SessionAddress::Claim,
    },
];

/// The agent sessions routes, relative to the surface's mount point.
pub fn router() -> OpenApiRouter<ApiState> {
    let routes = OpenApiRouter::new()
        .routes(routes!(list_sessions))
        .routes(routes!(put_session, get_session, delete_session));
    crate::mounts::answer_wrong_methods(routes, method_not_allowed)
}

async fn method_not_allowed() -> AgentError {
    AgentError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not accept this method",
    )
}

/// The authenticated caller, or 401 `unauthorized` as an `ErrorList`.
struct AgentCaller(Principal);

impl FromRequestParts<ApiState> for AgentCaller {
    type Rejection = AgentError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, AgentError> {
        Ok(AgentCaller(authenticate(parts, state).await?))
    }
}

/// The `{identifier}` path segment, decoded and validated.
fn identifier_of(path: Result<Path<String>, PathRejection>) -> Result<String, AgentError> {
    let Path(identifier) = path.map_err(|_| {
        AgentError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_identifier",
            "the identifier is not valid percent-encoded UTF-8",
        )
    })?;
    views::validate_identifier(&identifier)?;
    Ok(identifier)
}

/// The caller's live session named by the route's identifier (404 when there is none), when
/// it runs on this node.
async fn named_session(
    state: &ApiState,
    caller: &Principal,
    path: Result<Path<String>, PathRejection>,
) -> Result<SessionRecord, AgentError> {
    let identifier = identifier_of(path)?;
    let record = state
        .engine
        .claimed_session(caller, &claim(&identifier))
        .await?
        .ok_or_else(|| AgentError::session_not_found(&identifier))?;
    run_here(state, record)
}

/// `record`, or the answer that its session's own node gives (in a fleet).
fn run_here(state: &ApiState, record: SessionRecord) -> Result<SessionRecord, AgentError> {
    if state.engine.runs_here(record.id) {
        Ok(record)
    } else {
        Err(AgentError::runs_elsewhere(record.id))
    }
}

/// The claim naming the session with `identifier`.
fn claim(identifier: &str) -> SessionClaim {
    SessionClaim {
        namespace: views::METADATA_KEY.to_owned(),
        field: views::IDENTIFIER_FIELD.to_owned(),
        value: identifier.to_owned(),
    }
}

/// The `PUT` body: none, or a JSON object (a `Session`). Invalid JSON is 400
/// `malformed_json`; JSON that is not such an object is 422 `invalid_body`.
fn session_request(body: Result<Bytes, BytesRejection>) -> Result<AgentSessionRequest, AgentError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AgentError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body is larger than the server's limit",
            )
        } else {
            AgentError::from(BodyError::Unreadable)
        }
    })?;
    let value: serde_json::Value = parse_json(&bytes)?;
    if !value.is_object() {
        return Err(AgentError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "the body must be a JSON object (a Session)",
        ));
    }
    let request: AgentSessionRequest = serde_json::from_value(value).map_err(|error| {
        AgentError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("invalid Session: {error}"),
        )
    })?;
    request.validate()?;
    Ok(request)
}

fn container(
    record: &SessionRecord,
    api_key: Option<String>,
) -> Result<SessionContainer, AgentError> {
    let mut session = AgentSession::of(record).ok_or_else(|| {
        // Only records found by their claim reach here, and a claim is agent metadata.
        AgentError::session_not_found(&record.id.to_string())
    })?;
    session.api_key = api_key;
    Ok(SessionContainer { session })
}

/// Lists the caller's live agent sessions, oldest first.
#[utoipa::path(get, path = "/sessions", tag = "agents", operation_id = "agents_list_sessions",
    responses(
        (status = 200, description = "SessionArray: the caller's live agent sessions", body = Vec<AgentSession>),
        (status = 401, description = "Missing or invalid API key", body = ErrorList),
    ))]
async fn list_sessions(
    State(state): State<ApiState>,
    AgentCaller(caller): AgentCaller,
) -> Result<Json<Vec<AgentSession>>, AgentError> {
    Ok(Json(
        state
            .engine
            .fleet_live_sessions(&caller)
            .await?
            .iter()
            .filter_map(AgentSession::of)
            .collect(),
    ))
}

/// Creates the session named `identifier`, with a session-scoped API key returned once as
/// `api_key`; when the caller already has a live session with this identifier, returns it
/// (no key, no change).
#[utoipa::path(put, path = "/sessions/{identifier}", tag = "agents", operation_id = "agents_put_session",
    params(("identifier" = String, Path, description = "Unique name for this session (1 to 128 characters, no control characters, no '/')")),
    request_body(content = AgentSessionRequest, description = "Create a new agent and generate a new API key. Optional; used only when the session is created."),
    responses(
        (status = 200, description = "SessionContainer: the session (with `api_key` when this call created it)", body = SessionContainer),
        (status = 400, description = "The body is not JSON", body = ErrorList),
        (status = 401, description = "Missing or invalid API key", body = ErrorList),
        (status = 403, description = "The key may not create sessions", body = ErrorList),
        (status = 413, description = "The body is too large", body = ErrorList),
        (status = 422, description = "Invalid identifier or Session", body = ErrorList),
        (status = 429, description = "Session limit or quota reached", body = ErrorList),
        (status = 503, description = "The session could not be started", body = ErrorList),
    ))]
async fn put_session(
    State(state): State<ApiState>,
    AgentCaller(caller): AgentCaller,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SessionContainer>, AgentError> {
    let identifier = identifier_of(path)?;
    let request = session_request(body)?;
    let (record, created) = state
        .engine
        .find_or_create_session(
            &caller,
            &claim(&identifier),
            CreateSession {
                name: request.name.clone(),
                metadata: request.session_metadata(&identifier),
                ..Default::default()
            },
        )
        .await?;
    if !created {
        let record = run_here(&state, record)?;
        return Ok(Json(container(&record, None)?));
    }
    let issued = match state
        .engine
        .issue_key(
            &caller,
            NewKey {
                scope: KeyScope::Session,
                tenant: None,
                session_id: Some(record.id),
                name: Some(format!("agent session {identifier}")),
                expires_at: None,
            },
        )
        .await
    {
        Ok(issued) => issued,
        Err(error) => {
            discard(&state, &caller, record.id).await;
            return Err(error.into());
        }
    };
    let update = SessionUpdate {
        metadata: Some(views::with_key_id(&record.metadata, &issued.record.id)),
        ..Default::default()
    };
    match state
        .engine
        .update_session(&caller, record.id, update)
        .await
    {
        Ok(record) => Ok(Json(container(&record, Some(issued.key))?)),
        Err(error) => {
            if let Err(revoke_error) = state.engine.revoke_key(&caller, &issued.record.id).await {
                tracing::error!(error = %revoke_error, key_id = %issued.record.id,
                    "could not revoke the key of a discarded agent session");
            }
            discard(&state, &caller, record.id).await;
            Err(error.into())
        }
    }
}

/// Closes a session created by a `PUT` that then failed, so no session lives without its key.
async fn discard(state: &ApiState, caller: &Principal, session_id: SessionId) {
    if let Err(error) = state
        .engine
        .close_session(caller, session_id, KEY_FAILED_REASON)
        .await
    {
        tracing::error!(%error, %session_id, "could not close a discarded agent session");
    }
}

/// The caller's live session named `identifier`.
#[utoipa::path(get, path = "/sessions/{identifier}", tag = "agents", operation_id = "agents_get_session",
    params(("identifier" = String, Path, description = "Unique name for this session")),
    responses(
        (status = 200, description = "SessionContainer: the session (never with `api_key`)", body = SessionContainer),
        (status = 401, description = "Missing or invalid API key", body = ErrorList),
        (status = 404, description = "No live session has this identifier", body = ErrorList),
        (status = 422, description = "Invalid identifier", body = ErrorList),
    ))]
async fn get_session(
    State(state): State<ApiState>,
    AgentCaller(caller): AgentCaller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<SessionContainer>, AgentError> {
    let record = named_session(&state, &caller, path).await?;
    Ok(Json(container(&record, None)?))
}

/// Closes the session named `identifier` and revokes its key; returns the closed session.
/// The identifier is then free for a new session.
#[utoipa::path(delete, path = "/sessions/{identifier}", tag = "agents", operation_id = "agents_delete_session",
    params(("identifier" = String, Path, description = "Unique name for this session")),
    responses(
        (status = 200, description = "SessionContainer: the closed session", body = SessionContainer),
        (status = 401, description = "Missing or invalid API key", body = ErrorList),
        (status = 403, description = "A session key cannot revoke keys, so cannot delete its session", body = ErrorList),
        (status = 404, description = "No live session has this identifier", body = ErrorList),
        (status = 422, description = "Invalid identifier", body = ErrorList),
    ))]
async fn delete_session(
    State(state): State<ApiState>,
    AgentCaller(caller): AgentCaller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<SessionContainer>, AgentError> {
    let record = named_session(&state, &caller, path).await?;
    // Revoke first: should closing fail, a retry still finds the session and closes it.
    if let Some(key_id) = views::key_id(&record) {
        // Only the session key minted for this very session: metadata is editable on the
        // native API, so the recorded id is checked against the key it names.
        let minted = state
            .engine
            .list_keys(&caller)
            .await?
            .into_iter()
            .any(|key| {
                key.id == key_id
                    && key.scope == KeyScope::Session
                    && key.session_id == Some(record.id)
            });
        if minted {
            state.engine.revoke_key(&caller, key_id).await?;
        }
    }
    let closed = state
        .engine
        .close_session(&caller, record.id, CLOSED_BY_CLIENT_REASON)
        .await?;
    Ok(Json(container(&closed, None)?))
}
