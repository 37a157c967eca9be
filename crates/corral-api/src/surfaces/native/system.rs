//! `/healthz`, `/v1/info` and `/v1/runtimes`.

use axum::extract::State;
use axum::Json;

use super::views::{
    Health, InfoView, IsolationFeatureView, IsolationView, LimitsView, NetworkView, PoolView,
    RuntimeList, RuntimeView, UnavailableRuntimeView,
};
use crate::auth::Caller;
use crate::body::max_body_bytes;
use crate::state::ApiState;

/// Answers 200 once the server is ready to create sessions.
#[utoipa::path(get, path = "/healthz", tag = "system",
    responses((status = 200, description = "The server is ready", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

fn runtime_views(info: &corral_engine::EngineInfo) -> Vec<RuntimeView> {
    info.runtimes
        .iter()
        .map(|runtime| RuntimeView {
            name: runtime.name.clone(),
            language: runtime.language.clone(),
            display_name: runtime.display_name.clone(),
            interpreter: runtime.interpreter.clone(),
            language_version: runtime.language_version.clone(),
            packages: runtime.packages.clone(),
            preload: runtime.preload.clone(),
        })
        .collect()
}

fn unavailable_runtime_views(info: &corral_engine::EngineInfo) -> Vec<UnavailableRuntimeView> {
    info.unavailable_runtimes
        .iter()
        .map(|(name, reason)| UnavailableRuntimeView {
            name: name.clone(),
            reason: reason.clone(),
        })
        .collect()
}

/// The runtimes sessions can choose (`runtime` on `POST /v1/sessions`), and those configured
/// that could not start.
#[utoipa::path(get, path = "/v1/runtimes", tag = "system",
    responses(
        (status = 200, description = "The runtimes", body = RuntimeList),
        (status = 401, description = "No valid API key", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn runtimes(State(state): State<ApiState>, _caller: Caller) -> Json<RuntimeList> {
    let info = state.engine.info();
    Json(RuntimeList {
        runtimes: runtime_views(info),
        unavailable: unavailable_runtime_views(info),
    })
}

/// Version, runtimes, limits and the isolation sessions get on this host.
#[utoipa::path(get, path = "/v1/info", tag = "system",
    responses(
        (status = 200, description = "Server information", body = InfoView),
        (status = 401, description = "No valid API key", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn info(State(state): State<ApiState>, _caller: Caller) -> Json<InfoView> {
    let info = state.engine.info();
    let limits = &info.limits;
    Json(InfoView {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        runtimes: runtime_views(info),
        unavailable_runtimes: unavailable_runtime_views(info),
        limits: LimitsView {
            default_execution_timeout_seconds: limits.default_exec_timeout.as_secs_f64(),
            max_execution_timeout_seconds: limits.max_exec_timeout.as_secs_f64(),
            interrupt_grace_seconds: limits.interrupt_grace.as_secs_f64(),
            output_cap_bytes_per_stream: limits.output_cap_bytes,
            execution_queue_capacity: limits.queue_capacity,
            max_code_bytes: limits.max_code_bytes,
            max_request_body_bytes: max_body_bytes(limits.max_code_bytes),
            session_memory_bytes: info.session_limits.memory_bytes,
            session_max_processes: info.session_limits.max_processes,
            session_cpu_millicores: info.session_limits.cpu_millicores,
            session_workspace_bytes: info.session_limits.workspace_bytes,
            session_max_open_files: info.session_limits.max_open_files,
            session_maximum: info.max_session_limits.into(),
            idle_ttl_seconds: limits.idle_ttl.as_secs_f64(),
            idle_ttl_ceiling_seconds: limits.idle_ttl_ceiling.as_secs_f64(),
            max_ttl_seconds: limits.max_ttl.as_secs_f64(),
            max_ttl_ceiling_seconds: limits.max_ttl_ceiling.as_secs_f64(),
            max_sessions: limits.max_sessions,
            min_available_memory_bytes: limits.min_available_memory_bytes,
            max_sessions_per_tenant: limits.max_sessions_per_tenant,
            max_executions_per_tenant: limits.max_executions_per_tenant,
            executions_kept_per_session: limits.executions_kept_per_session,
            stored_output_cap_bytes: limits.stored_output_cap_bytes,
            ended_session_retention_seconds: limits.ended_session_retention.as_secs_f64(),
        },
        isolation: IsolationView {
            sandboxed: info.isolation.sandboxed(),
            cgroup_version: info.isolation.cgroup_version,
            features: info
                .isolation
                .features
                .iter()
                .map(|feature| IsolationFeatureView {
                    name: feature.name.to_owned(),
                    available: feature.available,
                    active: feature.active,
                })
                .collect(),
        },
        live_sessions: state.engine.live_count(),
        pool: {
            let settings = state.engine.pool_settings();
            let status = state.engine.pool_status();
            PoolView {
                size: settings.size,
                idle_size: settings.idle_size,
                shrink_after_seconds: settings.shrink_after.as_secs_f64(),
                max_memory_bytes: settings.max_memory_bytes,
                preload: settings.preload.clone(),
                ready: status.ready,
                starting: status.starting,
                target: status.target,
                memory_bytes: status.memory_bytes,
                handed_over: status.handed_over,
                started_fresh: status.started_fresh,
                held_back: status.held_back,
            }
        },
        network: NetworkView {
            sessions_may_connect: info.network.sessions_may_connect,
            allow: info.network.allow.iter().map(ToString::to_string).collect(),
            max_connections: info.network.max_connections,
            stack: info
                .network
                .sessions_may_connect
                .then(|| "slirp4netns + nftables".to_owned()),
        },
    })
}
