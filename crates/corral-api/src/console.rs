//! The web console at `/console`: the page, its script and its style sheet, built from
//! `console/` (Vite) into `crates/corral-api/console/` and embedded in the binary, so serving
//! it needs nothing else. The page holds no data: it calls the native API like any client,
//! with the key its login form takes, so the same authentication and scoping apply.
//!
//! It serves files only; what the console shows and does is the native API's business.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/assets/console.js");
const STYLE: &str = include_str!("../console/assets/console.css");

/// Where the console is served.
pub const PATH: &str = "/console";

/// What the page may load: itself, images from data/blob URLs (rich outputs), HTML outputs
/// in sandboxed frames, and the API on the same origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data: blob:; \
     style-src 'self' 'unsafe-inline'; script-src 'self'; frame-src 'self' about:; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The console's routes (outside the OpenAPI document: they are files, not API).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(PATH, get(index))
        .route("/console/", get(|| async { Redirect::permanent(PATH) }))
        .route("/console/assets/console.js", get(script))
        .route("/console/assets/console.css", get(style))
}

async fn index() -> Response {
    file(INDEX, "text/html; charset=utf-8")
}

async fn script() -> Response {
    file(SCRIPT, "text/javascript; charset=utf-8")
}

async fn style() -> Response {
    file(STYLE, "text/css; charset=utf-8")
}

fn file(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Embedded in the binary: a new binary may bring new files under the same names.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
