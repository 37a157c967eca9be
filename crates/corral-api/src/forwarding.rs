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
//! Most requests name their session in the path (or E2B's `e2b-sandbox-id` header). The
//! surfaces declare the routes that do not ([`AddressedRoute`]): for a route whose JSON body
//! names the session ([`SessionAddress::BodyField`], python_rce's execute and close), the
//! body is read here up to the route's own body limit, the id taken from it, and the buffered
//! bytes sent on; for a route that names a session by a caller-chosen identity
//! ([`SessionAddress::Claim`]: a Jupyter path, an agent identifier), the request is answered
//! here unless the handler finds the session running on another node and says so
//! ([`owner_answers`]), and then the same request is sent to that node. Whenever in doubt (a
//! body too large, unreadable, not JSON, without the field) the request goes on here, so the
//! surface gives its own answer.
//!
//! Which node owns a session is the engine's decision ([`corral_engine::SessionRoute`]);
//! this module only moves bytes. It is one middleware, in front of every surface.

use std::str::FromStr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use corral_core::SessionId;
use corral_engine::{Engine, SessionRoute};
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use subtle::ConstantTimeEq;

use crate::problem::Problem;

/// Names the node that forwarded a request.
pub const FORWARDED_BY_HEADER: &str = "x-corral-forwarded-by";
/// The node-to-node credential, on forwarded requests only.
pub const NODE_CREDENTIAL_HEADER: &str = "x-corral-node-credential";
/// Which E2B sandbox (session) an in-sandbox request is about.
const E2B_SANDBOX_HEADER: &str = "e2b-sandbox-id";

/// How a route's request names its session when its path does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionAddress {
    /// This string field of the JSON body object holds the session id.
    BodyField(&'static str),
    /// A caller-chosen identity names it; the handler tells when another node runs it
    /// ([`owner_answers`]).
    Claim,
}

/// A route of a surface whose session is not named in its path, relative to the surface's
/// mount point; `{...}` segments match any one segment.
#[derive(Clone, Debug)]
pub struct AddressedRoute {
    pub method: Method,
    pub path: &'static str,
    pub address: SessionAddress,
}

/// An [`AddressedRoute`] under its surface's mount point.
#[derive(Clone, Debug)]
pub(crate) struct MountedRoute {
    method: Method,
    segments: Vec<String>,
    address: SessionAddress,
}

impl MountedRoute {
    pub(crate) fn new(prefix: Option<&str>, route: &AddressedRoute) -> MountedRoute {
        let path = format!(
            "{}{}",
            prefix.unwrap_or("").trim_end_matches('/'),
            route.path
        );
        MountedRoute {
            method: route.method.clone(),
            segments: path.split('/').map(str::to_owned).collect(),
            address: route.address,
        }
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        if *method != self.method {
            return false;
        }
        let mut segments = path.split('/');
        for pattern in &self.segments {
            let Some(segment) = segments.next() else {
                return false;
            };
            let any = pattern.starts_with('{') && pattern.ends_with('}');
            if (any && segment.is_empty()) || (!any && segment != pattern) {
                return false;
            }
        }
        segments.next().is_none()
    }
}

/// Set on a surface's response when the session the request names by a caller-chosen
/// identity runs on another node: the request is then answered there.
#[derive(Clone, Copy, Debug)]
struct OwnerAnswers(SessionId);

/// Marks `response` (the surface's own "retry" answer, used should the owner be unknown by
/// the time it is read) as belonging to the node that runs session `id`.
pub(crate) fn owner_answers(mut response: Response, id: SessionId) -> Response {
    response.extensions_mut().insert(OwnerAnswers(id));
    response
}

/// What the middleware needs: the engine (routes), the fleet's shared credential, the routes
/// that name their session outside their path and the body limit.
#[derive(Clone)]
pub(crate) struct Forwarding {
    engine: Engine,
    node_secret: Arc<str>,
    node_id: Arc<str>,
    addressed: Arc<[MountedRoute]>,
    body_limit: usize,
}

impl Forwarding {
    /// `None` for a single node (nothing to forward to).
    pub(crate) fn new(
        engine: &Engine,
        node_secret: Option<&str>,
        addressed: Vec<MountedRoute>,
        body_limit: usize,
    ) -> Option<Forwarding> {
        let fleet = engine.fleet()?;
        Some(Forwarding {
            engine: engine.clone(),
            node_secret: Arc::from(node_secret?),
            node_id: Arc::from(fleet.node_id.as_str()),
            addressed: Arc::from(addressed),
            body_limit,
        })
    }

    fn address_of(&self, request: &Request) -> Option<SessionAddress> {
        let (method, path) = (request.method(), request.uri().path());
        self.addressed
            .iter()
            .find(|route| route.matches(method, path))
            .map(|route| route.address)
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
    if let Some(address) = forwarding.address_of(&request) {
        return forward_addressed(&forwarding, address, request, next).await;
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

/// A request of an [`AddressedRoute`]: its body buffered, then sent to the session's node or
/// handled here.
async fn forward_addressed(
    forwarding: &Forwarding,
    address: SessionAddress,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > forwarding.body_limit as u64) {
        // The surface answers its own 413.
        return next.run(Request::from_parts(parts, body)).await;
    }
    let bytes = match buffer(body, forwarding.body_limit).await {
        Ok(bytes) if bytes.len() <= forwarding.body_limit => bytes,
        // More than the limit (the surface reads it and answers 413), or a body that broke
        // off: the surface answers as it answers any such body.
        Ok(bytes) => {
            return next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(()) => return next.run(Request::from_parts(parts, broken_body())).await,
    };
    let saved = SavedRequest {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
    };
    match address {
        SessionAddress::BodyField(field) => {
            let Some(id) = session_in_body(&bytes, field) else {
                return next
                    .run(Request::from_parts(parts, Body::from(bytes)))
                    .await;
            };
            match target_of(&forwarding.engine, Some(id), false).await {
                Ok(Some(url)) => proxy(forwarding, &url, saved.with_body(bytes)).await,
                Ok(None) => {
                    next.run(Request::from_parts(parts, Body::from(bytes)))
                        .await
                }
                Err(response) => *response,
            }
        }
        SessionAddress::Claim => {
            let local = next
                .run(Request::from_parts(parts, Body::from(bytes.clone())))
                .await;
            let Some(OwnerAnswers(id)) = local.extensions().get::<OwnerAnswers>().copied() else {
                return local;
            };
            match target_of(&forwarding.engine, Some(id), false).await {
                Ok(Some(url)) => proxy(forwarding, &url, saved.with_body(bytes)).await,
                // The owner is gone meanwhile: the surface's own answer says to retry.
                Ok(None) => local,
                Err(response) => *response,
            }
        }
    }
}

/// What is needed to send a request again once its body has been read.
struct SavedRequest {
    method: Method,
    uri: Uri,
    version: axum::http::Version,
    headers: HeaderMap,
}

impl SavedRequest {
    fn with_body(self, bytes: Bytes) -> Request {
        let mut request = Request::new(Body::from(bytes));
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers;
        request
    }
}

/// The body, read until its end or until it is past `limit` (then what was read, one frame
/// beyond the limit); `Err` when it could not be read.
async fn buffer(body: Body, limit: usize) -> Result<Bytes, ()> {
    let mut stream = body.into_data_stream();
    let mut buffered = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ())?;
        buffered.extend_from_slice(&chunk);
        if buffered.len() > limit {
            break;
        }
    }
    Ok(buffered.freeze())
}

/// A body that fails as the one that could not be read did.
fn broken_body() -> Body {
    Body::from_stream(futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("the request body broke off"))
    }))
}

/// The session id in string field `field` of a JSON object body, if it is one.
fn session_in_body(bytes: &[u8], field: &str) -> Option<SessionId> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let text = value.get(field)?.as_str()?;
    SessionId::from_str(text).ok()
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

    #[test]
    fn addressed_routes_match_under_their_mount_point() {
        let route = AddressedRoute {
            method: Method::PUT,
            path: "/sessions/{identifier}",
            address: SessionAddress::Claim,
        };
        let mounted = MountedRoute::new(Some("/agents"), &route);
        assert!(mounted.matches(&Method::PUT, "/agents/sessions/helper"));
        assert!(!mounted.matches(&Method::GET, "/agents/sessions/helper"));
        assert!(!mounted.matches(&Method::PUT, "/agents/sessions/"));
        assert!(!mounted.matches(&Method::PUT, "/agents/sessions/a/b"));
        assert!(!mounted.matches(&Method::PUT, "/sessions/helper"));
        let at_root = MountedRoute::new(
            None,
            &AddressedRoute {
                method: Method::POST,
                path: "/sessions/execute",
                address: SessionAddress::BodyField("session_id"),
            },
        );
        assert!(at_root.matches(&Method::POST, "/sessions/execute"));
        assert!(!at_root.matches(&Method::POST, "/sessions/execute/"));
        assert!(!at_root.matches(&Method::POST, "/rce/sessions/execute"));
        assert!(MountedRoute::new(Some("/rce/"), &route).matches(&Method::PUT, "/rce/sessions/x"));
    }

    #[test]
    fn the_session_in_a_body_is_a_string_field_holding_an_id() {
        let id = SessionId::new();
        let body = format!(r#"{{"session_id": "{id}", "code": "1"}}"#);
        assert_eq!(session_in_body(body.as_bytes(), "session_id"), Some(id));
        for body in [
            r#"{"session_id": "#.to_owned(),
            r#"{"session_id": 7}"#.to_owned(),
            r#"{"session_id": "not-an-id"}"#.to_owned(),
            format!(r#"["{id}"]"#),
            String::new(),
        ] {
            assert_eq!(
                session_in_body(body.as_bytes(), "session_id"),
                None,
                "{body}"
            );
        }
    }
}
