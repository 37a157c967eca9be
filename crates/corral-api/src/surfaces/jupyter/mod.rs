//! The Jupyter Server REST API (seed 002) as jupyter_server 2.x answers it, mounted at the root
//! by default (every route starts with `/api`): sessions, kernels, kernelspecs, status and
//! version — enough for jupyter_server's own GatewayClient (`--gateway-url`) to run its
//! kernels on corral.
//!
//! Every kernel is a corral session (kernel id = session id), so a kernel started here is
//! visible on `/v1/sessions` and any live corral session is a kernel. A Jupyter session (a
//! path bound to a kernel) is kept on its kernel's session metadata under `"jupyter"`; one
//! Jupyter session per kernel (see `sessions`). Errors are `{"message", "reason"}` (and the
//! 501 `{"message", "short_message"}`), auth is Jupyter's token (`Authorization: token`,
//! `?token=`, or corral's Bearer / `X-API-Key`), refused with 403.
//!
//! The kernel websocket channels (`/api/kernels/{id}/channels`) are `channels` (moving frames)
//! and `kernel_hub` (each kernel's connections and the messaging protocol's requests served
//! through the engine); the protocol itself is the `corral-jupyter` crate.
//!
//! Not here: contents, terminals, and kernelspec resource files. It imports no other surface.

mod channels;
mod failure;
mod kernel_hub;
mod kernels;
mod kernelspecs;
mod models;
mod requests;
mod server;
mod sessions;

use std::sync::Arc;

use axum::extract::{OriginalUri, Query};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::Extension;
use chrono::{DateTime, Utc};
use corral_core::Principal;
use corral_engine::EngineError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::forwarding::{AddressedRoute, SessionAddress};
use crate::state::ApiState;
use failure::Failure;

/// The jupyter_server release whose API this surface answers (`GET /api`).
const EMULATED_VERSION: &str = "2.21.1";

/// What the surface's handlers share besides the engine.
#[derive(Clone)]
struct SurfaceContext {
    /// When this surface was built (the server's start), for `GET /api/status`.
    started_at: DateTime<Utc>,
    /// Held while a handler decides which kernel backs which Jupyter session and changes it,
    /// so that concurrent creates, updates and deletes of sessions see each other's results.
    session_changes: Arc<tokio::sync::Mutex<()>>,
    /// The kernels' websocket connections.
    kernels: Arc<kernel_hub::KernelHubs>,
}

/// The route that names its session by a path: in a fleet, a create of a path that a session
/// on another node holds is answered by that node.
pub const ADDRESSED_ROUTES: &[AddressedRoute] = &[AddressedRoute {
    method: Method::POST,
    path: "/api/sessions",
    address: SessionAddress::Claim,
}];

/// The Jupyter routes, relative to the surface's mount point.
pub fn router() -> OpenApiRouter<ApiState> {
    let router = OpenApiRouter::new()
        .routes(routes!(server::version))
        .routes(routes!(server::status))
        .routes(routes!(kernelspecs::list_kernelspecs))
        .routes(routes!(kernelspecs::get_kernelspec))
        .routes(routes!(kernels::list_kernels, kernels::start_kernel))
        .routes(routes!(kernels::get_kernel, kernels::delete_kernel))
        .routes(routes!(kernels::interrupt_kernel))
        .routes(routes!(kernels::restart_kernel))
        .routes(routes!(channels::kernel_channels))
        .routes(routes!(sessions::list_sessions, sessions::create_session))
        .routes(routes!(
            sessions::get_session,
            sessions::update_session,
            sessions::delete_session
        ));
    crate::mounts::answer_wrong_methods(router, method_not_allowed).layer(Extension(
        SurfaceContext {
            started_at: Utc::now(),
            session_changes: Arc::new(tokio::sync::Mutex::new(())),
            kernels: Arc::default(),
        },
    ))
}

async fn method_not_allowed() -> Failure {
    Failure::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}

/// The caller, from the key the request presents (see [`presented_key`]); without one, open
/// mode decides. A missing or refused key is 403, as on jupyter_server's API handlers.
async fn caller(state: &ApiState, parts: &Parts) -> Result<Principal, Failure> {
    let presented = presented_key(parts);
    match state.engine.authenticate(presented.as_deref()).await {
        Ok(principal) => Ok(principal),
        Err(EngineError::Unauthorized) => Err(Failure::forbidden()),
        Err(other) => Err(other.into()),
    }
}

/// The key a request presents, in jupyter_server's order: the `token` query parameter, then
/// `Authorization: token <key>` (or `Bearer`), then `X-API-Key`. An empty token — what the
/// gateway client sends when it has none (`Authorization: token `) — is no key.
fn presented_key(parts: &Parts) -> Option<String> {
    let from_query = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
        .ok()
        .and_then(|Query(pairs)| {
            pairs
                .into_iter()
                .find(|(name, _)| name == "token")
                .map(|(_, value)| value)
        });
    let from_token_scheme = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(char::is_whitespace)?;
            scheme
                .eq_ignore_ascii_case("token")
                .then(|| token.trim().to_owned())
        });
    let from_corral_headers = crate::auth::presented_key(&parts.headers).map(str::to_owned);
    [from_query, from_token_scheme, from_corral_headers]
        .into_iter()
        .flatten()
        .find(|key| !key.is_empty())
}

/// Whether `text` matches jupyter_server's id routes (`\w+-\w+-\w+-\w+-\w+`); other ids never
/// reach its handlers.
fn is_route_id(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups.iter().all(|group| {
            !group.is_empty() && group.chars().all(|c| c.is_alphanumeric() || c == '_')
        })
}

/// The path the surface is mounted at, as the client sees it (empty at the root), for
/// `Location` headers.
fn mount_prefix(parts: &Parts) -> String {
    let routed = parts.uri.path();
    let original = parts
        .extensions
        .get::<OriginalUri>()
        .map(|original| original.0.path().to_owned())
        .unwrap_or_else(|| routed.to_owned());
    original.strip_suffix(routed).unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut request = axum::http::Request::builder().uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).expect("request").into_parts().0
    }

    #[test]
    fn keys_come_from_the_token_parameter_or_headers() {
        assert_eq!(presented_key(&parts("/api/kernels", &[])), None);
        assert_eq!(
            presented_key(&parts(
                "/api/kernels?token=q",
                &[("authorization", "token h")]
            )),
            Some("q".to_owned())
        );
        assert_eq!(
            presented_key(&parts("/api/kernels", &[("authorization", "Token  h ")])),
            Some("h".to_owned())
        );
        assert_eq!(
            presented_key(&parts("/api/kernels", &[("authorization", "Bearer b")])),
            Some("b".to_owned())
        );
        assert_eq!(
            presented_key(&parts(
                "/api/kernels?token=",
                &[("authorization", "token "), ("x-api-key", "x")]
            )),
            Some("x".to_owned())
        );
        assert_eq!(
            presented_key(&parts("/api/kernels", &[("authorization", "token ")])),
            None
        );
    }

    #[test]
    fn locations_carry_the_mount_point() {
        let mut at_root = parts("/api/sessions", &[]);
        assert_eq!(mount_prefix(&at_root), "");
        at_root
            .extensions
            .insert(OriginalUri("/api/sessions".parse().expect("uri")));
        assert_eq!(mount_prefix(&at_root), "");
        let mut nested = parts("/api/sessions", &[]);
        nested.extensions.insert(OriginalUri(
            "/jupyter/api/sessions?token=k".parse().expect("uri"),
        ));
        assert_eq!(mount_prefix(&nested), "/jupyter");
    }

    #[test]
    fn route_ids_have_five_word_groups() {
        assert!(is_route_id("0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b"));
        assert!(is_route_id("a-b-c-d-e"));
        assert!(is_route_id("a_1-b-c-d-e"));
        assert!(!is_route_id("a-b-c-d"));
        assert!(!is_route_id("a-b-c-d-e-f"));
        assert!(!is_route_id("a-b--d-e"));
        assert!(!is_route_id("a-b-c-d-e.f"));
        assert!(!is_route_id(""));
    }
}
