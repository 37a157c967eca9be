//! API key routes: issue (the key is in this one reply only), list, revoke.
//!
//! Who may manage which keys is the engine's decision; keys are never logged here.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_core::KeyScope;
use corral_engine::keys::NewKey;

use super::views::{CreateKeyRequest, IssuedKeyView, KeyList, KeyView};
use crate::auth::Caller;
use crate::body::NativeJson;
use crate::problem::{Problem, ProblemBody};
use crate::state::ApiState;

/// Issues an API key. Admin keys issue any key; tenant keys issue tenant and session keys of
/// their own tenant. The key itself is shown in this reply only.
#[utoipa::path(post, path = "/v1/keys", tag = "keys",
    request_body = CreateKeyRequest,
    responses(
        (status = 201, description = "The key, shown once", body = IssuedKeyView),
        (status = 400, description = "Malformed JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "This key may not issue that key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such session", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn create_key(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    NativeJson(request): NativeJson<CreateKeyRequest>,
) -> Result<Response, Problem> {
    let scope = KeyScope::parse(&request.scope).ok_or_else(|| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            "scope must be admin, tenant or session",
        )
    })?;
    let session_id = request
        .session_id
        .as_deref()
        .map(|text| text.parse().map_err(|_| Problem::session_not_found(text)))
        .transpose()?;
    let issued = state
        .engine
        .issue_key(
            &caller,
            NewKey {
                scope,
                tenant: request.tenant,
                session_id,
                name: request.name,
                expires_at: request.expires_at,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(IssuedKeyView {
            key: issued.key,
            details: issued.record.into(),
        }),
    )
        .into_response())
}

/// The keys this key may manage (all for admin keys, the tenant's for tenant keys).
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses(
        (status = 200, description = "Keys, oldest first, without their secrets", body = KeyList),
        (status = 401, description = "No valid API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Session keys manage no keys", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn list_keys(
    State(state): State<ApiState>,
    Caller(caller): Caller,
) -> Result<Json<KeyList>, Problem> {
    let keys = state.engine.list_keys(&caller).await?;
    Ok(Json(KeyList {
        keys: keys.into_iter().map(KeyView::from).collect(),
    }))
}

/// Revokes a key; it stops working at once. Revoking a revoked key returns it unchanged.
#[utoipa::path(delete, path = "/v1/keys/{key_id}", tag = "keys",
    params(("key_id" = String, Path, description = "Key id")),
    responses(
        (status = 200, description = "The revoked key", body = KeyView),
        (status = 401, description = "No valid API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such key", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn revoke_key(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    Path(key_id): Path<String>,
) -> Result<Json<KeyView>, Problem> {
    Ok(Json(
        state.engine.revoke_key(&caller, &key_id).await?.into(),
    ))
}
