//! The `e2b_api` surface: E2B's control plane. Creating a sandbox creates a corral session
//! (the template names its runtime, `timeout` is its idle TTL, `envVars` are set in its
//! interpreter) and issues the session key that is the sandbox's access token; listing,
//! reading, killing, timeouts, refreshes and connecting translate to engine calls. What
//! corral cannot do (pause, resume, snapshots, fork, metrics, logs, network updates) is
//! answered 400 "not supported" in E2B's shape once the sandbox is known.
//!
//! It does not serve anything inside a sandbox (`interpreter`, `envd`).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_core::NetworkPolicy;
use corral_core::{KeyScope, Principal, SessionId, SessionRecord};
use corral_e2b::control::{
    metadata_matches, parse_metadata_filter, wants_running, ConnectRequest, ListedSandbox,
    NetworkAsk, NewSandbox, RefreshRequest, Sandbox, SandboxDetail, TimeoutRequest, STATE_RUNNING,
};
use corral_e2b::in_sandbox::Operation;
use corral_e2b::ENVD_VERSION;
use corral_engine::keys::NewKey;
use corral_engine::{CreateSession, CLOSED_BY_CLIENT_REASON};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{
    api_caller, is_live_sandbox, method_not_allowed, run_operation, Failure, METADATA_KEY,
};
use crate::body::parse_json;
use crate::state::ApiState;

/// E2B's default sandbox timeout, used when a create names none.
const DEFAULT_TIMEOUT_SECONDS: u64 = 300;
/// Page size of `GET /v2/sandboxes` when the client names none.
const DEFAULT_PAGE: usize = 100;
/// Largest page of `GET /v2/sandboxes`.
const MAX_PAGE: usize = 1000;
/// The response header with the next page's token.
const NEXT_TOKEN_HEADER: &str = "x-next-token";

/// The control-plane routes, relative to the surface's mount point.
pub fn router() -> OpenApiRouter<ApiState> {
    let routes = OpenApiRouter::new()
        .routes(routes!(create_sandbox, list_sandboxes))
        .routes(routes!(create_sandbox_v2, list_sandboxes_v2))
        .routes(routes!(get_sandbox, kill_sandbox))
        .routes(routes!(set_timeout))
        .routes(routes!(refresh_sandbox))
        .routes(routes!(connect_sandbox))
        .routes(routes!(connect_sandbox_v2))
        .routes(routes!(pause_sandbox))
        .routes(routes!(resume_sandbox))
        .routes(routes!(snapshot_sandbox))
        .routes(routes!(fork_sandbox))
        .routes(routes!(sandbox_metrics))
        .routes(routes!(sandbox_logs))
        .routes(routes!(sandbox_logs_v2))
        .routes(routes!(sandboxes_metrics))
        .routes(routes!(update_network));
    crate::mounts::answer_wrong_methods(routes, method_not_allowed)
}

fn not_found(id: &str) -> Failure {
    Failure::new(StatusCode::NOT_FOUND, format!("sandbox {id} not found"))
}

/// The caller's live sandbox `id`; anything else (unknown, ended, another tenant's, not
/// made here) is not found.
async fn find_sandbox(
    state: &ApiState,
    principal: &Principal,
    id: &str,
) -> Result<SessionRecord, Failure> {
    let parsed: SessionId = id.parse().map_err(|_| not_found(id))?;
    match state.engine.get_session(principal, parsed).await {
        Ok(record) if is_live_sandbox(&record) => Ok(record),
        Ok(_) => Err(not_found(id)),
        Err(error) => Err(error.into()),
    }
}

fn fields(record: &SessionRecord) -> Option<&serde_json::Map<String, serde_json::Value>> {
    record.metadata.get(METADATA_KEY)?.as_object()
}

fn template_of(record: &SessionRecord) -> String {
    fields(record)
        .and_then(|fields| fields.get("templateID"))
        .and_then(|value| value.as_str())
        .unwrap_or("base")
        .to_owned()
}

fn user_metadata(record: &SessionRecord) -> BTreeMap<String, String> {
    fields(record)
        .and_then(|fields| fields.get("metadata"))
        .and_then(|value| serde_json::from_value(value.clone()).ok())
        .unwrap_or_default()
}

fn listed(record: &SessionRecord) -> ListedSandbox {
    let end = record.expires_at().unwrap_or(record.last_activity_at);
    ListedSandbox {
        template_id: template_of(record),
        sandbox_id: record.id.to_string(),
        client_id: record.tenant.clone(),
        started_at: record.created_at.to_rfc3339(),
        end_at: end.to_rfc3339(),
        cpu_count: (record.resources.cpu_millicores / 1000).max(1) as u32,
        memory_mb: record.resources.memory_bytes / (1024 * 1024),
        disk_size_mb: record.resources.workspace_bytes / (1024 * 1024),
        metadata: user_metadata(record),
        state: STATE_RUNNING.to_owned(),
        envd_version: ENVD_VERSION.to_owned(),
    }
}

/// A fresh access token for a sandbox: a session key of its session.
async fn access_token(
    state: &ApiState,
    principal: &Principal,
    id: SessionId,
) -> Result<String, Failure> {
    let issued = state
        .engine
        .issue_key(
            principal,
            NewKey {
                scope: KeyScope::Session,
                tenant: None,
                session_id: Some(id),
                name: Some("e2b sandbox access token".to_owned()),
                expires_at: None,
            },
        )
        .await?;
    Ok(issued.key)
}

fn sandbox_reply(record: &SessionRecord, token: String) -> Sandbox {
    Sandbox {
        template_id: template_of(record),
        sandbox_id: record.id.to_string(),
        client_id: record.tenant.clone(),
        envd_version: ENVD_VERSION.to_owned(),
        envd_access_token: Some(token.clone()),
        traffic_access_token: Some(token),
        domain: None,
    }
}

async fn create(state: ApiState, headers: HeaderMap, body: Bytes) -> Result<Response, Failure> {
    let principal = api_caller(&state, &headers).await?;
    let new: NewSandbox = parse_json(&body)?;
    if let Some(reason) = new.unsupported_option() {
        return Err(Failure::bad_request(reason));
    }
    if new.timeout == Some(0) {
        return Err(Failure::bad_request(
            "timeout must be a positive number of seconds",
        ));
    }
    let network = match new.network_ask().map_err(Failure::bad_request)? {
        NetworkAsk::None => NetworkPolicy::None,
        // The operator's maximum, less the wildcards (a session names the hosts it asks for).
        NetworkAsk::OperatorMaximum => {
            let settings = &state.engine.info().network;
            if !settings.sessions_may_connect {
                return Err(Failure::bad_request(
                    "allow_internet_access=true: this server gives sandboxes no network beyond their own loopback",
                ));
            }
            NetworkPolicy::Allow(
                settings
                    .allow
                    .iter()
                    .filter(|entry| !entry.is_wildcard())
                    .cloned()
                    .collect(),
            )
        }
        NetworkAsk::Allow(entries) => NetworkPolicy::allow(&entries)
            .map_err(|error| Failure::bad_request(format!("network.allowOut: {error}")))?,
    };
    let mut metadata = serde_json::Map::new();
    metadata.insert(
        METADATA_KEY.to_owned(),
        serde_json::json!({
            "templateID": new.template_id,
            "metadata": new.metadata.clone().unwrap_or_default(),
            "contexts": [],
        }),
    );
    let record = state
        .engine
        .create_session(
            &principal,
            CreateSession {
                metadata,
                runtime: new.runtime(),
                idle_ttl: Some(Duration::from_secs(
                    new.timeout.unwrap_or(DEFAULT_TIMEOUT_SECONDS),
                )),
                network: Some(network),
                ..Default::default()
            },
        )
        .await?;
    let envs = new.env_vars.clone().unwrap_or_default();
    let prepared = async {
        if !envs.is_empty() {
            run_operation(
                &state,
                &principal,
                record.id,
                &Operation::Setenv { envs, save: false },
            )
            .await
            .map_err(Failure::from)?;
        }
        access_token(&state, &principal, record.id).await
    };
    match prepared.await {
        Ok(token) => Ok((StatusCode::CREATED, Json(sandbox_reply(&record, token))).into_response()),
        Err(failure) => {
            if let Err(error) = state
                .engine
                .close_session(&principal, record.id, "e2b sandbox setup failed")
                .await
            {
                tracing::warn!(%error, "could not close a sandbox whose setup failed");
            }
            Err(failure)
        }
    }
}

/// Creates a sandbox (`NewSandbox`).
#[utoipa::path(post, path = "/sandboxes", tag = "e2b_api",
    request_body(content = serde_json::Value, description = "NewSandbox: templateID, timeout, metadata, envVars, secure, allow_internet_access (true: the operator's network maximum), network.allowOut / denyOut ([\"0.0.0.0/0\"] only)"),
    responses(
        (status = 201, description = "The sandbox, with its envd access token", body = serde_json::Value),
        (status = 400, description = "Bad body or an option corral cannot honour", body = serde_json::Value),
        (status = 401, description = "Bad X-API-KEY", body = serde_json::Value),
        (status = 429, description = "Session cap or quota reached", body = serde_json::Value),
    ))]
async fn create_sandbox(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Failure> {
    create(state, headers, body).await
}

/// Creates a sandbox (`NewSandboxV2`, what the SDK sends).
#[utoipa::path(post, path = "/v2/sandboxes", tag = "e2b_api",
    request_body(content = serde_json::Value, description = "NewSandboxV2"),
    responses(
        (status = 201, description = "The sandbox, with its envd access token", body = serde_json::Value),
        (status = 400, description = "Bad body or an option corral cannot honour", body = serde_json::Value),
        (status = 401, description = "Bad X-API-KEY", body = serde_json::Value),
    ))]
async fn create_sandbox_v2(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Failure> {
    create(state, headers, body).await
}

/// Query of the list routes.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct ListQuery {
    /// `k=v` pairs joined by `&`, each percent-encoded.
    metadata: Option<String>,
    /// Comma-separated states: `running`, `paused` (corral has no paused sandboxes).
    state: Option<String>,
    /// Only sandboxes of this template.
    template: Option<String>,
    /// Only sandboxes started after this time (RFC 3339).
    #[serde(rename = "startedAfter")]
    started_after: Option<String>,
    /// `asc` (default) or `desc` by start.
    order: Option<String>,
    /// The previous page's `x-next-token`.
    #[serde(rename = "nextToken")]
    next_token: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<String>,
}

/// The caller's live sandboxes matching `query`, in start order (`desc` reversed).
async fn matching(
    state: &ApiState,
    principal: &Principal,
    query: &ListQuery,
) -> Result<Vec<SessionRecord>, Failure> {
    let filter = query
        .metadata
        .as_deref()
        .map(parse_metadata_filter)
        .transpose()
        .map_err(|error| Failure::bad_request(error.to_string()))?
        .unwrap_or_default();
    if !wants_running(query.state.as_deref())
        .map_err(|error| Failure::bad_request(error.to_string()))?
    {
        return Ok(Vec::new());
    }
    let started_after = query
        .started_after
        .as_deref()
        .map(|text| {
            chrono::DateTime::parse_from_rfc3339(text)
                .map(|time| time.with_timezone(&chrono::Utc))
                .map_err(|_| {
                    Failure::bad_request(format!("startedAfter {text:?} is not an RFC 3339 time"))
                })
        })
        .transpose()?;
    let descending = match query.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(Failure::bad_request(format!(
                "order must be asc or desc, not {other:?}"
            )))
        }
    };
    let mut sandboxes: Vec<SessionRecord> = state
        .engine
        .fleet_live_sessions(principal)
        .await?
        .into_iter()
        .filter(is_live_sandbox)
        .filter(|record| metadata_matches(&user_metadata(record), &filter))
        .filter(|record| {
            query
                .template
                .as_deref()
                .is_none_or(|template| template_of(record) == template)
        })
        .filter(|record| started_after.is_none_or(|after| record.created_at > after))
        .collect();
    if descending {
        sandboxes.reverse();
    }
    Ok(sandboxes)
}

fn query_of(query: Result<Query<ListQuery>, QueryRejection>) -> Result<ListQuery, Failure> {
    query
        .map(|Query(query)| query)
        .map_err(|rejection| Failure::bad_request(rejection.body_text()))
}

/// Lists the caller's running sandboxes.
#[utoipa::path(get, path = "/sandboxes", tag = "e2b_api", params(ListQuery),
    responses(
        (status = 200, description = "ListedSandbox items", body = serde_json::Value),
        (status = 400, description = "Bad filter", body = serde_json::Value),
        (status = 401, description = "Bad X-API-KEY", body = serde_json::Value),
    ))]
async fn list_sandboxes(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<ListedSandbox>>, Failure> {
    let principal = api_caller(&state, &headers).await?;
    let query = query_of(query)?;
    let sandboxes = matching(&state, &principal, &query).await?;
    Ok(Json(sandboxes.iter().map(listed).collect()))
}

/// Lists the caller's sandboxes a page at a time (`x-next-token`).
#[utoipa::path(get, path = "/v2/sandboxes", tag = "e2b_api", params(ListQuery),
    responses(
        (status = 200, description = "ListedSandbox items; x-next-token names the next page", body = serde_json::Value),
        (status = 400, description = "Bad filter or page", body = serde_json::Value),
        (status = 401, description = "Bad X-API-KEY", body = serde_json::Value),
    ))]
async fn list_sandboxes_v2(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let principal = api_caller(&state, &headers).await?;
    let query = query_of(query)?;
    let limit = match query.limit.as_deref() {
        None | Some("") => DEFAULT_PAGE,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=MAX_PAGE).contains(limit))
            .ok_or_else(|| Failure::bad_request(format!("limit must be 1 to {MAX_PAGE}")))?,
    };
    let sandboxes = matching(&state, &principal, &query).await?;
    let start = match query
        .next_token
        .as_deref()
        .filter(|token| !token.is_empty())
    {
        None => 0,
        Some(token) => sandboxes
            .iter()
            .position(|record| record.id.to_string() == token)
            .map(|index| index + 1)
            .ok_or_else(|| Failure::bad_request("nextToken does not name a page of this list"))?,
    };
    let page: Vec<&SessionRecord> = sandboxes.iter().skip(start).take(limit).collect();
    let more = start + page.len() < sandboxes.len();
    let body: Vec<ListedSandbox> = page.iter().map(|record| listed(record)).collect();
    let mut response = Json(body).into_response();
    if more {
        if let Some(token) = page
            .last()
            .and_then(|record| HeaderValue::from_str(&record.id.to_string()).ok())
        {
            response.headers_mut().insert(NEXT_TOKEN_HEADER, token);
        }
    }
    Ok(response)
}

/// One sandbox (`SandboxDetail`).
#[utoipa::path(get, path = "/sandboxes/{sandboxID}", tag = "e2b_api",
    params(("sandboxID" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "SandboxDetail", body = serde_json::Value),
        (status = 401, description = "Bad X-API-KEY", body = serde_json::Value),
        (status = 404, description = "No such sandbox", body = serde_json::Value),
    ))]
async fn get_sandbox(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<SandboxDetail>, Failure> {
    let principal = api_caller(&state, &headers).await?;
    let record = find_sandbox(&state, &principal, &id).await?;
    Ok(Json(SandboxDetail {
        listed: listed(&record),
        domain: None,
        allow_internet_access: !record.network.is_none(),
    }))
}

/// Kills a sandbox: its session is closed.
#[utoipa::path(delete, path = "/sandboxes/{sandboxID}", tag = "e2b_api",
    params(("sandboxID" = String, Path, description = "Sandbox id")),
    responses(
        (status = 204, description = "Killed"),
        (status = 401, description = "Bad X-API-KEY", body = serde_json::Value),
        (status = 404, description = "No such sandbox", body = serde_json::Value),
    ))]
async fn kill_sandbox(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, Failure> {
    let principal = api_caller(&state, &headers).await?;
    let record = find_sandbox(&state, &principal, &id).await?;
    state
        .engine
        .close_session(&principal, record.id, CLOSED_BY_CLIENT_REASON)
        .await?;
    revoke_access_tokens(&state, &principal, record.id).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes the access tokens issued for a killed sandbox (they reach nothing live any more;
/// this keeps them from piling up as active keys). A caller that may not manage keys (a
/// session key) leaves them to the retention clean-up.
async fn revoke_access_tokens(state: &ApiState, principal: &Principal, id: SessionId) {
    let keys = match state.engine.list_keys(principal).await {
        Ok(keys) => keys,
        Err(error) => {
            tracing::debug!(%error, "a killed sandbox's access tokens are left to expire");
            return;
        }
    };
    for key in keys
        .iter()
        .filter(|key| key.session_id == Some(id) && key.revoked_at.is_none())
    {
        if let Err(error) = state.engine.revoke_key(principal, &key.id).await {
            tracing::warn!(%error, key_id = %key.id, "could not revoke a killed sandbox's access token");
        }
    }
}

/// The sandbox closes `timeout` seconds after its last activity from now on.
#[utoipa::path(post, path = "/sandboxes/{sandboxID}/timeout", tag = "e2b_api",
    params(("sandboxID" = String, Path, description = "Sandbox id")),
    request_body(content = serde_json::Value, description = "{timeout: seconds}"),
    responses(
        (status = 204, description = "Set"),
        (status = 400, description = "Bad body or timeout out of range", body = serde_json::Value),
        (status = 401, description = "Bad X-API-KEY", body = serde_json::Value),
        (status = 404, description = "No such sandbox", body = serde_json::Value),
    ))]
async fn set_timeout(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, Failure> {
    let principal = api_caller(&state, &headers).await?;
    let record = find_sandbox(&state, &principal, &id).await?;
    let request: TimeoutRequest = parse_json(&body)?;
    state
        .engine
        .refresh(
            &principal,
            record.id,
            Some(Duration::from_secs(request.timeout)),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Restarts the sandbox's idle clock (`duration` also sets its timeout).
#[utoipa::path(post, path = "/sandboxes/{sandboxID}/refreshes", tag = "e2b_api",
    params(("sandboxID" = String, Path, description = "Sandbox id")),
    request_body(content = serde_json::Value, description = "{duration?: seconds}"),
    responses(
        (status = 204, description = "Refreshed"),
        (status = 400, description = "Bad body", body = serde_json::Value),
        (status = 401, description = "Bad X-API-KEY", body = serde_json::Value),
        (status = 404, description = "No such sandbox", body = serde_json::Value),
    ))]
async fn refresh_sandbox(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, Failure> {
    let principal = api_caller(&state, &headers).await?;
    let record = find_sandbox(&state, &principal, &id).await?;
    let request: RefreshRequest = parse_json(&body)?;
    state
        .engine
        .refresh(
            &principal,
            record.id,
            request.duration.map(Duration::from_secs),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn connect(
    state: ApiState,
    headers: HeaderMap,
    id: String,
    body: Bytes,
) -> Result<Response, Failure> {
    let principal = api_caller(&state, &headers).await?;
    let record = find_sandbox(&state, &principal, &id).await?;
    let request: ConnectRequest = parse_json(&body)?;
    state
        .engine
        .refresh(
            &principal,
            record.id,
            request.timeout.map(Duration::from_secs),
        )
        .await?;
    let token = access_token(&state, &principal, record.id).await?;
    Ok(Json(sandbox_reply(&record, token)).into_response())
}

/// Connects to a running sandbox: a fresh access token (corral shows none twice).
#[utoipa::path(post, path = "/sandboxes/{sandboxID}/connect", tag = "e2b_api",
    params(("sandboxID" = String, Path, description = "Sandbox id")),
    request_body(content = serde_json::Value, description = "{timeout?: seconds}"),
    responses(
        (status = 200, description = "The sandbox, with a new access token", body = serde_json::Value),
        (status = 401, description = "Bad X-API-KEY", body = serde_json::Value),
        (status = 404, description = "No such running sandbox", body = serde_json::Value),
    ))]
async fn connect_sandbox(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Failure> {
    connect(state, headers, id, body).await
}

/// Connects to a running sandbox (what the SDK sends).
#[utoipa::path(post, path = "/v2/sandboxes/{sandboxID}/connect", tag = "e2b_api",
    params(("sandboxID" = String, Path, description = "Sandbox id")),
    request_body(content = serde_json::Value, description = "{timeout?: seconds, memory?}"),
    responses(
        (status = 200, description = "The sandbox, with a new access token", body = serde_json::Value),
        (status = 401, description = "Bad X-API-KEY", body = serde_json::Value),
        (status = 404, description = "No such running sandbox", body = serde_json::Value),
    ))]
async fn connect_sandbox_v2(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Failure> {
    connect(state, headers, id, body).await
}

/// 400 "not supported" for a known sandbox (404 for an unknown one).
async fn not_supported(
    state: &ApiState,
    headers: &HeaderMap,
    id: &str,
    what: &str,
) -> Result<StatusCode, Failure> {
    let principal = api_caller(state, headers).await?;
    find_sandbox(state, &principal, id).await?;
    Err(Failure::bad_request(format!(
        "{what} is not supported by corral: its sandboxes are live interpreter sessions that cannot be paused, snapshotted or copied, and it keeps no per-sandbox metrics or logs"
    )))
}

macro_rules! unsupported_route {
    ($name:ident, $method:ident, $path:literal, $what:literal) => {
        #[doc = concat!("Not supported: ", $what, ".")]
        #[utoipa::path($method, path = $path, tag = "e2b_api",
                    params(("sandboxID" = String, Path, description = "Sandbox id")),
                    responses(
                        (status = 400, description = "Not supported", body = serde_json::Value),
                        (status = 401, description = "Bad X-API-KEY", body = serde_json::Value),
                        (status = 404, description = "No such sandbox", body = serde_json::Value),
                    ))]
        async fn $name(
            State(state): State<ApiState>,
            headers: HeaderMap,
            Path(id): Path<String>,
        ) -> Result<StatusCode, Failure> {
            not_supported(&state, &headers, &id, $what).await
        }
    };
}

unsupported_route!(
    pause_sandbox,
    post,
    "/sandboxes/{sandboxID}/pause",
    "pausing a sandbox"
);
unsupported_route!(
    resume_sandbox,
    post,
    "/sandboxes/{sandboxID}/resume",
    "resuming a paused sandbox"
);
unsupported_route!(
    snapshot_sandbox,
    post,
    "/sandboxes/{sandboxID}/snapshots",
    "snapshotting a sandbox"
);
unsupported_route!(
    fork_sandbox,
    post,
    "/sandboxes/{sandboxID}/fork",
    "forking a sandbox"
);
unsupported_route!(
    sandbox_metrics,
    get,
    "/sandboxes/{sandboxID}/metrics",
    "reading sandbox metrics"
);
unsupported_route!(
    sandbox_logs,
    get,
    "/sandboxes/{sandboxID}/logs",
    "reading sandbox logs"
);
unsupported_route!(
    sandbox_logs_v2,
    get,
    "/v2/sandboxes/{sandboxID}/logs",
    "reading sandbox logs"
);
unsupported_route!(
    update_network,
    put,
    "/sandboxes/{sandboxID}/network",
    "changing a sandbox's network rules"
);

/// Not supported: metrics of several sandboxes.
#[utoipa::path(get, path = "/sandboxes/metrics", tag = "e2b_api",
    responses(
        (status = 400, description = "Not supported", body = serde_json::Value),
        (status = 401, description = "Bad X-API-KEY", body = serde_json::Value),
    ))]
async fn sandboxes_metrics(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<StatusCode, Failure> {
    api_caller(&state, &headers).await?;
    Err(Failure::bad_request(
        "reading sandbox metrics is not supported by corral: it keeps no per-sandbox metrics",
    ))
}
