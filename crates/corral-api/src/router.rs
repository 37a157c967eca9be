//! Assembles the HTTP application: every surface at its mount point, the OpenAPI document,
//! body limits, request ids, tracing, HTTP metrics and panic recovery.
//!
//! Route handlers live in `surfaces`; this module only wires them together.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use corral_engine::Engine;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::body::{max_body_bytes, BodyLimit};
use crate::problem::Problem;
use crate::prometheus::{self, MetricsRegistry};
use crate::surfaces::{e2b, native, python_rce, qiskit};

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    pub engine: Engine,
    /// Rendered by `/metrics`; `None` when no recorder was installed.
    pub metrics: Option<MetricsRegistry>,
}

/// Where the surfaces are mounted.
#[derive(Clone, Debug)]
pub struct ApiOptions {
    /// Path prefix of the python_rce API (`/` by default: `/sessions/create`, ...).
    pub python_rce_mount: String,
    /// Path prefix of the E2B API (`/e2b` by default: `/e2b/sessions`, ...).
    pub e2b_mount: String,
    /// Path prefix of the Qiskit Runtime API (`/` by default: `/api/v1/sessions`, ...).
    pub qiskit_mount: String,
    /// The registry `/metrics` renders (see [`MetricsRegistry::install`]).
    pub metrics: Option<MetricsRegistry>,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            python_rce_mount: "/".to_owned(),
            e2b_mount: "/e2b".to_owned(),
            qiskit_mount: "/".to_owned(),
            metrics: None,
        }
    }
}

/// A mount configuration the router cannot honour.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("mount point {mount:?} of {surface} must start with '/' and contain only letters, digits, '-', '_', '.' and '/'")]
    InvalidMount {
        surface: &'static str,
        mount: String,
    },
    #[error("{first} and {second} are both mounted at {mount:?}; their routes /sessions... would collide")]
    SharedMount {
        first: &'static str,
        second: &'static str,
        mount: String,
    },
    #[error("mount point {mount:?} of {surface} collides with the native API's {reserved}")]
    MountCollision {
        surface: &'static str,
        mount: String,
        reserved: &'static str,
    },
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "corral",
        description = "Stateful, sandboxed code-execution sessions. The native API is under /v1; the python_rce API (seed 000) is mounted at the root by default.",
    ),
    tags(
        (name = "sessions", description = "Native API: session lifecycle"),
        (name = "executions", description = "Native API: running code and its history"),
        (name = "files", description = "Native API: files in a session's workspace"),
        (name = "keys", description = "Native API: API keys"),
        (name = "system", description = "Health, information and this document"),
        (name = "python_rce", description = "Konfig's Python remote code executor API (seed 000)"),
        (name = "e2b", description = "E2B's early sessions API (seed 001)"),
        (name = "qiskit", description = "IBM Qiskit Runtime's sessions API (seed 003)"),
    )
)]
struct ApiDoc;

/// The whole application, ready for `axum::serve`.
pub fn build_router(engine: Engine, options: &ApiOptions) -> Result<Router, RouterError> {
    let body_limit = max_body_bytes(engine.limits().max_code_bytes);
    let python_rce_mount = normalise_mount("python_rce", &options.python_rce_mount)?;
    let mut api = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(native::router())
        .routes(routes!(openapi_document))
        .routes(routes!(prometheus::metrics_text));
    let e2b_mount = normalise_mount("e2b", &options.e2b_mount)?;
    if e2b_mount == python_rce_mount {
        return Err(RouterError::SharedMount {
            first: "python_rce",
            second: "e2b",
            mount: options.e2b_mount.clone(),
        });
    }
    let qiskit_mount = normalise_mount("qiskit", &options.qiskit_mount)?;
    for (mount, surface) in [
        (python_rce_mount, python_rce::router()),
        (e2b_mount, e2b::router()),
        (qiskit_mount, qiskit::router()),
    ] {
        api = match mount.as_deref() {
            None => api.merge(surface),
            Some(prefix) => api.nest(prefix, surface),
        };
    }
    let (router, document) = api.split_for_parts();
    let mut document = serde_json::to_value(&document).unwrap_or_default();
    // Catch-all segments are `{*path}` for the router, `{path}` in OpenAPI.
    if let Some(paths) = document
        .get_mut("paths")
        .and_then(|paths| paths.as_object_mut())
    {
        let renamed: serde_json::Map<String, serde_json::Value> = std::mem::take(paths)
            .into_iter()
            .map(|(path, item)| (path.replace("{*", "{"), item))
            .collect();
        *paths = renamed;
    }
    let request_id = HeaderName::from_static("x-request-id");
    Ok(router
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(prometheus::track_http))
        .with_state(ApiState {
            engine,
            metrics: options.metrics.clone(),
        })
        .layer(Extension(OpenApiDocument(Arc::new(document))))
        .layer(Extension(BodyLimit(body_limit)))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid)))
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets open requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The span every log line of a request is written in: its id (`x-request-id`, set by the
/// layer outside this one), method and path.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        request_id,
        method = %request.method(),
        path = request.uri().path(),
    )
}

/// `None` for the root; otherwise the prefix without a trailing slash.
fn normalise_mount(surface: &'static str, mount: &str) -> Result<Option<String>, RouterError> {
    let valid = mount.starts_with('/')
        && !mount.contains("//")
        && mount
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if !valid {
        return Err(RouterError::InvalidMount {
            surface,
            mount: mount.to_owned(),
        });
    }
    let trimmed = mount.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(None);
    }
    for reserved in ["/v1", "/healthz", "/openapi.json", "/metrics"] {
        if trimmed == reserved || trimmed.starts_with(&format!("{reserved}/")) {
            return Err(RouterError::MountCollision {
                surface,
                mount: mount.to_owned(),
                reserved,
            });
        }
    }
    Ok(Some(trimmed.to_owned()))
}

#[derive(Clone)]
struct OpenApiDocument(Arc<serde_json::Value>);

/// This document: every route of every surface.
#[utoipa::path(get, path = "/openapi.json", tag = "system",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
async fn openapi_document(
    Extension(document): Extension<OpenApiDocument>,
) -> Json<serde_json::Value> {
    Json(document.0.as_ref().clone())
}

async fn unknown_route() -> Problem {
    Problem::not_found("no route matches this path")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not accept this method",
    )
}

fn panic_response(_payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the server hit an internal error; details are in its log",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_are_validated() {
        assert_eq!(normalise_mount("x", "/").ok(), Some(None));
        assert_eq!(
            normalise_mount("x", "/rce/").ok(),
            Some(Some("/rce".to_owned()))
        );
        assert!(normalise_mount("x", "rce").is_err());
        assert!(normalise_mount("x", "/a b").is_err());
        assert!(normalise_mount("x", "/{id}").is_err());
        assert!(normalise_mount("x", "/v1").is_err());
        assert!(normalise_mount("x", "/v1/rce").is_err());
    }
}
