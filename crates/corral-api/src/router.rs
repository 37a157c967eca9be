//! Assembles the HTTP application: every surface at its mount point, the OpenAPI document,
//! body limits, request ids, tracing, HTTP metrics and panic recovery.
//!
//! Route handlers live in `surfaces`; this module only wires them together.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use axum::{Extension, Json, Router};
use corral_engine::Engine;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use utoipa::openapi::tag::TagBuilder;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::body::{max_body_bytes, BodyLimit};
use crate::forwarding::{forward_to_owner, Forwarding, MountedRoute};
use crate::mounts::{self, MountError, PlannedMount, Route};
use crate::problem::Problem;
use crate::prometheus::{self, MetricsRegistry};
use crate::state::ApiState;
use crate::surfaces::native;

/// How the application is assembled.
#[derive(Clone, Debug, Default)]
pub struct ApiOptions {
    /// Mount points that differ from the defaults: surface name → path prefix, or `off`
    /// (see [`crate::SURFACES`]).
    pub mounts: BTreeMap<String, String>,
    /// The registry `/metrics` renders (see [`MetricsRegistry::install`]).
    pub metrics: Option<MetricsRegistry>,
    /// The credential the nodes of a fleet present to each other (forwarding is on when the
    /// engine is in a fleet and this is set).
    pub node_secret: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "corral",
        description = "Stateful, sandboxed code-execution sessions. The native API is under /v1; compatibility surfaces (python_rce, E2B, ...) are mounted beside it, each under its own tag.",
    ),
    tags(
        (name = "sessions", description = "Native API: session lifecycle"),
        (name = "executions", description = "Native API: running code and its history"),
        (name = "files", description = "Native API: files in a session's workspace"),
        (name = "keys", description = "Native API: API keys"),
        (name = "system", description = "Health, information and this document"),
    )
)]
struct ApiDoc;

/// Checks mount points without building the application: what [`build_router`] would
/// refuse (unknown surfaces, malformed prefixes, colliding routes).
pub fn check_mounts(mounts: &BTreeMap<String, String>) -> Result<(), MountError> {
    mounts::plan(mounts, &native_routes(&native_api())).map(drop)
}

/// The native API, the OpenAPI document and `/metrics`: the routes no mount can move.
fn native_api() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(native::router())
        .routes(routes!(openapi_document))
        .routes(routes!(prometheus::metrics_text))
}

fn native_routes(api: &OpenApiRouter<ApiState>) -> Vec<Route> {
    mounts::openapi_routes(api)
        .into_iter()
        .map(|(method, path)| Route {
            owner: "native",
            method,
            path,
        })
        .collect()
}

/// The whole application, ready for `axum::serve`; refused when the mounts are invalid or
/// would make routes collide.
pub fn build_router(engine: Engine, options: &ApiOptions) -> Result<Router, MountError> {
    let body_limit = max_body_bytes(engine.limits().max_code_bytes);
    let mut api = native_api();
    let planned = mounts::plan(&options.mounts, &native_routes(&api))?;
    let mut tags = Vec::new();
    let mut addressed = Vec::new();
    for PlannedMount { surface, prefix } in planned {
        addressed.extend(
            surface
                .addressed
                .iter()
                .map(|route| MountedRoute::new(prefix.as_deref(), route)),
        );
        let routes = (surface.router)();
        api = match prefix {
            None => api.merge(routes),
            Some(prefix) => api.nest(&prefix, routes),
        };
        tags.push(
            TagBuilder::new()
                .name(surface.name)
                .description(Some(surface.description))
                .build(),
        );
    }
    let (router, mut document) = api.split_for_parts();
    let router = router.merge(crate::console::router());
    document.tags.get_or_insert_with(Vec::new).extend(tags);
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
    let forwarding = Forwarding::new(
        &engine,
        options.node_secret.as_deref(),
        addressed,
        body_limit,
    );
    let router = router
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(prometheus::track_http))
        .with_state(ApiState {
            engine,
            metrics: options.metrics.clone(),
        })
        .layer(Extension(OpenApiDocument(Arc::new(document))))
        .layer(Extension(BodyLimit(body_limit)))
        .layer(DefaultBodyLimit::max(body_limit));
    // In front of every surface (and of the body limits: the owner applies its own).
    let router = match forwarding {
        Some(forwarding) => router.layer(axum::middleware::from_fn_with_state(
            forwarding,
            forward_to_owner,
        )),
        None => router,
    };
    Ok(router
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
    // Replies are small and written whole: Nagle's algorithm would only hold them back.
    let listener = listener.tap_io(|connection| {
        if let Err(error) = connection.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
    });
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
