//! Forwarding between the nodes of a fleet: a request about a session that another node runs
//! is passed to that node over HTTP, as it came (method, path, query, headers, streamed body),
//! and its answer streamed back, websocket upgrades included, so a client cannot tell which
//! node answered. A create that this node cannot take (full, short of memory) goes to the node
//! the engine places it on.
//!
//! The caller's identity travels as the caller's own credential (its `Authorization` or
//! surface-specific key header, untouched): the owner checks it against the shared store like
//! any request, so identity is never asserted by one node to another. Nodes prove to each other
//! that a request was forwarded with the shared node credential (`x-corral-node-credential`);
//! a request that claims to be forwarded without it is refused, and a forwarded request is
//! never forwarded again (no loops).
//!
//! Which node owns a session is the engine's decision ([`corral_engine::SessionRoute`]);
//! this module only moves bytes. It is one middleware, in front of every surface.

use std::str::FromStr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use corral_core::SessionId;
use corral_engine::{Engine, SessionRoute};
use hyper_util::rt::TokioIo;
use subtle::ConstantTimeEq;

use crate::problem::Problem;

/// Names the node that forwarded a request.
pub const FORWARDED_BY_HEADER: &str = "x-corral-forwarded-by";
/// The node-to-node credential, on forwarded requests only.
pub const NODE_CREDENTIAL_HEADER: &str = "x-corral-node-credential";
/// Which E2B sandbox (session) an in-sandbox request is about.
const E2B_SANDBOX_HEADER: &str = "e2b-sandbox-id";

/// What the middleware needs: the engine (routes) and the fleet's shared credential.
#[derive(Clone)]
pub(crate) struct Forwarding {
    engine: Engine,
    node_secret: Arc<str>,
    node_id: Arc<str>,
}

impl Forwarding {
    /// `None` for a single node (nothing to forward to).
    pub(crate) fn new(engine: &Engine, node_secret: Option<&str>) -> Option<Forwarding> {
        let fleet = engine.fleet()?;
        Some(Forwarding {
            engine: engine.clone(),
            node_secret: Arc::from(node_secret?),
            node_id: Arc::from(fleet.node_id.as_str()),
        })
    }

    fn credential_matches(&self, headers: &HeaderMap) -> bool {
        headers
            .get(NODE_CREDENTIAL_HEADER)
            .is_some_and(|value| bool::from(value.as_bytes().ct_eq(self.node_secret.as_bytes())))
    }
}

/// The middleware: answer here, or pass the request to the node that should answer it.
pub(crate) async fn forward_to_owner(
    State(forwarding): State<Forwarding>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    if headers.contains_key(FORWARDED_BY_HEADER) || headers.contains_key(NODE_CREDENTIAL_HEADER) {
        if !forwarding.credential_matches(headers) {
            return Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this request claims to come from another node but lacks the node credential",
            )
            .into_response();
        }
        return next.run(request).await;
    }
    // Read what is needed before awaiting: a request is not `Sync`.
    let session = session_of(&request);
    let create = is_session_create(&request);
    match target_of(&forwarding.engine, session, create).await {
        Ok(None) => next.run(request).await,
        Ok(Some(url)) => proxy(&forwarding, &url, request).await,
        Err(response) => *response,
    }
}

/// The base URL of the node that should answer, or `None` for this one.
async fn target_of(
    engine: &Engine,
    session: Option<SessionId>,
    create: bool,
) -> Result<Option<String>, Box<Response>> {
    if let Some(id) = session {
        return match engine.session_route(id).await {
            Ok(SessionRoute::Owner { url, .. }) => Ok(Some(url)),
            Ok(SessionRoute::Local) => Ok(None),
            // Answering here could contradict the owner (this node does not run it): the
            // client retries instead.
            Err(error) => {
                tracing::warn!(%error, session_id = %id, "could not look up the session's node");
                Err(Box::new(
                    Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "store_unavailable",
                        "the node running this session cannot be determined right now; retry shortly",
                    )
                    .into_response(),
                ))
            }
        };
    }
    if create {
        return match engine.placement().await {
            Ok(target) => Ok(target),
            // Placement is an optimisation: create here.
            Err(error) => {
                tracing::warn!(%error, "could not place the new session on another node");
                Ok(None)
            }
        };
    }
    Ok(None)
}

/// The session a request is about: the first path segment that is a session id, else the
/// E2B sandbox header.
fn session_of(request: &Request) -> Option<SessionId> {
    let in_path = request
        .uri()
        .path()
        .split('/')
        .filter(|segment| segment.len() == 36)
        .find_map(|segment| SessionId::from_str(segment).ok());
    in_path.or_else(|| {
        request
            .headers()
            .get(E2B_SANDBOX_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| SessionId::from_str(value.trim()).ok())
    })
}

/// Creating a session on the native API.
fn is_session_create(request: &Request) -> bool {
    request.method() == Method::POST && request.uri().path().trim_end_matches('/') == "/v1/sessions"
}

/// Headers that belong to one connection, not to the request.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "host"
    )
}

fn bad_gateway(node: &str) -> Response {
    tracing::warn!(%node, "the node that runs the session could not be reached");
    Problem::new(
        StatusCode::BAD_GATEWAY,
        "node_unreachable",
        "the node that runs this session cannot be reached right now; retry shortly",
    )
    .into_response()
}

/// Sends `request` to the node at `base` over a connection of its own and streams the answer
/// back; a websocket upgrade is joined end to end.
async fn proxy(forwarding: &Forwarding, base: &str, mut request: Request) -> Response {
    let Some(authority) = base
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/').to_owned())
    else {
        // https between nodes is for a mesh or proxy in front of them; corral speaks http.
        return bad_gateway(base);
    };
    let upgrade = request.headers().contains_key(header::UPGRADE);
    let client_upgrade = upgrade
        .then(|| {
            request
                .extensions_mut()
                .remove::<hyper::upgrade::OnUpgrade>()
        })
        .flatten();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|value| value.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let Ok(uri) = Uri::builder().path_and_query(path_and_query).build() else {
        return bad_gateway(base);
    };
    let (parts, body) = request.into_parts();
    let mut outgoing = hyper::Request::builder().method(parts.method).uri(uri);
    for (name, value) in &parts.headers {
        if !is_hop_by_hop(name) || (upgrade && name == header::CONNECTION) {
            outgoing = outgoing.header(name, value);
        }
    }
    let (Ok(host), Ok(node), Ok(credential)) = (
        HeaderValue::from_str(&authority),
        HeaderValue::from_str(&forwarding.node_id),
        HeaderValue::from_str(&forwarding.node_secret),
    ) else {
        return bad_gateway(base);
    };
    outgoing = outgoing
        .header(header::HOST, host)
        .header(FORWARDED_BY_HEADER, node)
        .header(NODE_CREDENTIAL_HEADER, credential);
    let Ok(outgoing) = outgoing.body(body) else {
        return bad_gateway(base);
    };
    let Ok(stream) = tokio::net::TcpStream::connect(&authority).await else {
        return bad_gateway(base);
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return bad_gateway(base);
    };
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "forwarded connection ended");
        }
    });
    let mut answer = match sender.send_request(outgoing).await {
        Ok(answer) => answer,
        Err(_) => return bad_gateway(base),
    };
    if answer.status() == StatusCode::SWITCHING_PROTOCOLS {
        let owner_upgrade = hyper::upgrade::on(&mut answer);
        if let Some(client_upgrade) = client_upgrade {
            tokio::spawn(async move {
                let (Ok(client), Ok(owner)) = (client_upgrade.await, owner_upgrade.await) else {
                    return;
                };
                let mut client = TokioIo::new(client);
                let mut owner = TokioIo::new(owner);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut owner).await;
            });
        }
        let (parts, _) = answer.into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    let (mut parts, incoming) = answer.into_parts();
    let hop: Vec<HeaderName> = parts
        .headers
        .keys()
        .filter(|name| is_hop_by_hop(name))
        .cloned()
        .collect();
    for name in hop {
        parts.headers.remove(name);
    }
    Response::from_parts(parts, Body::new(incoming))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, uri: &str) -> Request {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .expect("request")
    }

    #[test]
    fn the_session_is_found_in_any_surface_path_or_the_e2b_header() {
        let id = SessionId::new();
        for path in [
            format!("/v1/sessions/{id}/executions"),
            format!("/api/kernels/{id}/channels"),
            format!("/e2b/sessions/{id}"),
        ] {
            assert_eq!(session_of(&request(Method::GET, &path)), Some(id));
        }
        assert_eq!(session_of(&request(Method::GET, "/v1/sessions")), None);
        assert_eq!(
            session_of(&request(
                Method::GET,
                "/v1/sessions/not-a-session-id-at-all-0000000000"
            )),
            None
        );
        let mut e2b = request(Method::POST, "/execute");
        e2b.headers_mut().insert(
            E2B_SANDBOX_HEADER,
            HeaderValue::from_str(&id.to_string()).expect("header"),
        );
        assert_eq!(session_of(&e2b), Some(id));
        assert!(is_session_create(&request(Method::POST, "/v1/sessions")));
        assert!(!is_session_create(&request(Method::GET, "/v1/sessions")));
    }
}
