//! `/metrics` in the Prometheus text format: installs the process's metrics recorder, counts
//! HTTP requests by route template (never the raw path) and status, and renders every metric
//! for admin callers (anyone while the server runs in open mode).
//!
//! What the engine measures and under which names is `corral_engine::measurements`; this
//! module only exports it and adds the HTTP series.

use std::fmt;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use corral_core::Principal;
use corral_engine::measurements;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::auth::Caller;
use crate::problem::Problem;
use crate::state::ApiState;

/// HTTP requests answered, labelled `method`, `route` (the matched template) and `status`.
const HTTP_REQUESTS: &str = "corral_http_requests_total";
/// Time to produce an HTTP response's head, labelled `route` (histogram, seconds).
const HTTP_DURATION: &str = "corral_http_request_duration_seconds";
/// The route label of requests no route matched.
const UNMATCHED_ROUTE: &str = "unmatched";
/// Histogram buckets of every `*_seconds` metric.
const SECONDS_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// The process's metrics registry; rendering it is `/metrics`.
#[derive(Clone)]
pub struct MetricsRegistry {
    handle: PrometheusHandle,
}

impl fmt::Debug for MetricsRegistry {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("MetricsRegistry")
    }
}

/// The recorder could not be installed (one is already installed in this process).
#[derive(Debug, thiserror::Error)]
#[error("could not install the metrics recorder: {0}")]
pub struct MetricsError(String);

impl MetricsRegistry {
    /// Installs the process-wide recorder; call once, before serving.
    pub fn install() -> Result<MetricsRegistry, MetricsError> {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &SECONDS_BUCKETS)
            .map_err(|error| MetricsError(error.to_string()))?
            .install_recorder()
            .map_err(|error| MetricsError(error.to_string()))?;
        describe();
        Ok(MetricsRegistry { handle })
    }

    fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }
}

fn describe() {
    use measurements::*;
    metrics::describe_counter!(SESSIONS_CREATED, "Sessions whose worker started");
    metrics::describe_counter!(
        SESSIONS_ENDED,
        "Sessions that ended, by final state and reason"
    );
    metrics::describe_counter!(EXECUTIONS, "Finished executions by outcome");
    metrics::describe_histogram!(
        EXECUTION_DURATION,
        metrics::Unit::Seconds,
        "Wall-clock duration of finished executions"
    );
    metrics::describe_histogram!(
        SESSION_START,
        metrics::Unit::Seconds,
        "Time to start a session's worker"
    );
    metrics::describe_gauge!(SESSIONS, "Live sessions by state");
    metrics::describe_gauge!(QUEUE_DEPTH, "Executions accepted and waiting to start");
    metrics::describe_gauge!(
        WORKER_MEMORY,
        metrics::Unit::Bytes,
        "Memory used by live workers (cgroup usage; resident set when unsandboxed)"
    );
    metrics::describe_gauge!(
        WORKER_PSS,
        metrics::Unit::Bytes,
        "Proportional set size of live workers' processes (shared pages divided among them)"
    );
    metrics::describe_gauge!(
        WORKER_USS,
        metrics::Unit::Bytes,
        "Unique set size of live workers' processes (what ending them would free)"
    );
    metrics::describe_counter!(
        WORKERS_HANDED_OUT,
        "Workers given to new sessions, by origin (pool: handed over warm, fresh: started)"
    );
    metrics::describe_gauge!(POOL_READY, "Idle workers ready in the warm pool");
    metrics::describe_gauge!(
        POOL_MEMORY,
        metrics::Unit::Bytes,
        "Memory used by the warm pool's idle workers"
    );
    metrics::describe_counter!(REFUSALS, "Requests refused by a cap, quota or full queue");
    metrics::describe_counter!(
        SESSIONS_ADOPTED,
        "Sessions taken over from a previous server on this data directory"
    );
    metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests by method, route and status");
    metrics::describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "Time to answer HTTP requests, by route"
    );
}

/// Middleware: counts each request under its route template and status.
pub async fn track_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    let method = request.method().as_str().to_owned();
    let clock = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!(HTTP_DURATION, "route" => route.clone())
        .record(clock.elapsed().as_secs_f64());
    metrics::counter!(HTTP_REQUESTS, "method" => method, "route" => route, "status" => status)
        .increment(1);
    response
}

/// Every metric in the Prometheus text format (admin keys only when auth is on).
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses(
        (status = 200, description = "Metrics in the Prometheus text exposition format", content_type = "text/plain"),
        (status = 401, description = "No valid API key", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin key", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn metrics_text(State(state): State<ApiState>, Caller(caller): Caller) -> Response {
    if caller != Principal::Admin {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "metrics need an admin key",
        )
        .into_response();
    }
    let Some(registry) = &state.metrics else {
        return Problem::not_found("metrics are not enabled on this server").into_response();
    };
    // Measuring every worker's memory reads /proc for each of their processes: off the
    // async threads.
    let engine = state.engine.clone();
    match tokio::task::spawn_blocking(move || engine.live_gauges()).await {
        Ok(gauges) => gauges.publish(),
        Err(error) => tracing::warn!(%error, "could not measure the live gauges"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        registry.render(),
    )
        .into_response()
}
