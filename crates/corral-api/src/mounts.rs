//! Where each compatibility surface is mounted: the table of surfaces (name, default mount,
//! OpenAPI tag), validation of mount points, and the route-collision check that refuses a
//! configuration in which two surfaces (or a surface and the native API) would answer the
//! same request.
//!
//! It decides nothing about what a route does; `router` assembles the application from the
//! plan this module returns. Reading `--mount`/`[mounts]` is the binary's job.

use std::collections::BTreeMap;

use axum::routing::MethodRouter;

use utoipa_axum::router::OpenApiRouter;

use crate::forwarding::AddressedRoute;
use crate::state::ApiState;
use crate::surfaces::{agents, e2b, e2b_sdk, jupyter, python_rce, qiskit};

/// One compatibility surface.
pub struct SurfaceSpec {
    /// Its name in `--mount NAME=PATH`, `[mounts]` and the OpenAPI tag.
    pub name: &'static str,
    /// Where it is mounted unless configured otherwise.
    pub default_mount: &'static str,
    /// The OpenAPI tag's description.
    pub description: &'static str,
    /// Its routes, relative to its mount point.
    pub router: fn() -> OpenApiRouter<ApiState>,
    /// Its routes that name their session other than in the path, for a fleet's forwarding.
    pub addressed: &'static [AddressedRoute],
}

/// Every compatibility surface, in the order they are mounted.
pub const SURFACES: &[SurfaceSpec] = &[
    SurfaceSpec {
        name: "python_rce",
        default_mount: "/",
        description: "Konfig's Python remote code executor API (seed 000)",
        router: python_rce::router,
        addressed: python_rce::ADDRESSED_ROUTES,
    },
    SurfaceSpec {
        name: "e2b",
        default_mount: "/e2b",
        description: "E2B's early sessions API (seed 001)",
        router: e2b::router,
        addressed: &[],
    },
    SurfaceSpec {
        name: "agents",
        default_mount: "/agents",
        description: "Agent sessions API (seed 004; schema inferred): sessions named by the caller, each with its own API key",
        router: agents::router,
        addressed: agents::ADDRESSED_ROUTES,
    },
    SurfaceSpec {
        name: "jupyter",
        default_mount: "/",
        description: "Jupyter Server's sessions, kernels and kernelspecs API (seed 002)",
        router: jupyter::router,
        addressed: jupyter::ADDRESSED_ROUTES,
    },
    SurfaceSpec {
        name: "qiskit",
        default_mount: "/",
        description: "IBM Qiskit Runtime sessions API (seed 003)",
        router: qiskit::router,
        addressed: &[],
    },
    SurfaceSpec {
        name: "e2b_api",
        default_mount: "/",
        description: "E2B's control plane as today's E2B SDKs call it (E2B_API_URL): sandboxes are corral sessions",
        router: e2b_sdk::control_router,
        addressed: &[],
    },
    SurfaceSpec {
        name: "e2b_sandbox",
        default_mount: "/",
        description: "Inside an E2B sandbox as the SDKs reach it (E2B_SANDBOX_URL, E2b-Sandbox-Id/E2b-Sandbox-Port headers): the code interpreter and envd's files, filesystem and process services",
        router: e2b_sdk::sandbox_router,
        addressed: &[],
    },
];

/// The word that disables a surface instead of mounting it.
pub const DISABLED: &str = "off";

/// The names of all surfaces, for messages and help.
pub fn surface_names() -> Vec<&'static str> {
    SURFACES.iter().map(|surface| surface.name).collect()
}

/// A mount configuration the router cannot honour.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("unknown surface {name:?} in the mounts (known: {known})")]
    UnknownSurface { name: String, known: String },
    #[error("mount point {mount:?} of {surface} must be \"{DISABLED}\" or start with '/' and contain only letters, digits, '-', '_', '.' and '/'")]
    InvalidMount { surface: String, mount: String },
    #[error("these mounts would make routes collide:\n{}", conflicts.join("\n"))]
    Collisions { conflicts: Vec<String> },
}

/// A surface to mount: its spec and its prefix (`None` for the root).
pub struct PlannedMount {
    pub surface: &'static SurfaceSpec,
    pub prefix: Option<String>,
}

/// One route as the router will see it.
#[derive(Clone, Debug)]
pub struct Route {
    /// `native` or a surface name.
    pub owner: &'static str,
    pub method: String,
    /// The full path template, e.g. `/e2b/sessions/{sessionID}`.
    pub path: String,
}

/// The surfaces to mount, from the defaults and `overrides` (surface name → mount point or
/// `off`), checked against each other and against `native_routes`.
pub fn plan(
    overrides: &BTreeMap<String, String>,
    native_routes: &[Route],
) -> Result<Vec<PlannedMount>, MountError> {
    for name in overrides.keys() {
        if !SURFACES.iter().any(|surface| surface.name == name) {
            return Err(MountError::UnknownSurface {
                name: name.clone(),
                known: surface_names().join(", "),
            });
        }
    }
    let mut planned = Vec::new();
    let mut routes: Vec<Route> = native_routes.to_vec();
    for surface in SURFACES {
        let mount = overrides
            .get(surface.name)
            .map(String::as_str)
            .unwrap_or(surface.default_mount);
        if mount == DISABLED {
            continue;
        }
        let prefix = normalise_mount(surface.name, mount)?;
        routes.extend(
            openapi_routes(&(surface.router)())
                .into_iter()
                .map(|(method, path)| Route {
                    owner: surface.name,
                    method,
                    path: format!("{}{}", prefix.as_deref().unwrap_or(""), path),
                }),
        );
        planned.push(PlannedMount { surface, prefix });
    }
    let conflicts = collisions(&routes);
    if conflicts.is_empty() {
        Ok(planned)
    } else {
        Err(MountError::Collisions { conflicts })
    }
}

/// The (method, path template) pairs of a router's OpenAPI paths.
pub fn openapi_routes(router: &OpenApiRouter<ApiState>) -> Vec<(String, String)> {
    let document = serde_json::to_value(router.get_openapi()).unwrap_or_default();
    let mut routes = Vec::new();
    if let Some(paths) = document.get("paths").and_then(|paths| paths.as_object()) {
        for (path, item) in paths {
            for method in item.as_object().into_iter().flat_map(|item| item.keys()) {
                routes.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

/// `None` for the root; otherwise the prefix without a trailing slash.
fn normalise_mount(surface: &str, mount: &str) -> Result<Option<String>, MountError> {
    let valid = mount.starts_with('/')
        && !mount.contains("//")
        && mount
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if !valid {
        return Err(MountError::InvalidMount {
            surface: surface.to_owned(),
            mount: mount.to_owned(),
        });
    }
    let trimmed = mount.trim_end_matches('/');
    Ok((!trimmed.is_empty()).then(|| trimmed.to_owned()))
}

/// One line per pair of routes of different owners that would collide: the same method
/// with templates matching the same request, one path (whatever the methods: a path answers
/// unsupported methods in its owner's error shape), or templates the path matcher cannot
/// hold side by side (parameters of different names at the same place).
fn collisions(routes: &[Route]) -> Vec<String> {
    let mut conflicts = Vec::new();
    for (index, first) in routes.iter().enumerate() {
        for second in &routes[index + 1..] {
            if first.owner == second.owner {
                continue;
            }
            let same_requests = first.method == second.method && overlap(&first.path, &second.path);
            // One path answers wrong methods in one API's error shape, so it has one owner.
            let shared_path = first.path == second.path;
            let unmatchable = differently_named_parameters(&first.path, &second.path);
            if same_requests || shared_path || unmatchable {
                conflicts.push(format!(
                    "  {} {} {} and {} {} {}{}",
                    first.owner,
                    first.method,
                    first.path,
                    second.owner,
                    second.method,
                    second.path,
                    if same_requests {
                        " answer the same requests"
                    } else if shared_path {
                        " share one path"
                    } else {
                        " name one path parameter differently"
                    }
                ));
            }
        }
    }
    conflicts
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|segment| !segment.is_empty())
        .collect()
}

fn is_parameter(segment: &str) -> bool {
    segment.starts_with('{') && segment.ends_with('}')
}

fn is_catch_all(segment: &str) -> bool {
    segment.starts_with("{*")
}

/// Whether some request path matches both templates.
fn overlap(first: &str, second: &str) -> bool {
    let (first, second) = (segments(first), segments(second));
    let mut index = 0;
    loop {
        match (first.get(index), second.get(index)) {
            (None, None) => return true,
            (Some(a), _) if is_catch_all(a) => return true,
            (_, Some(b)) if is_catch_all(b) => return true,
            (Some(a), Some(b)) if a == b || is_parameter(a) || is_parameter(b) => index += 1,
            _ => return false,
        }
    }
}

/// Whether the templates share a literal prefix and then name a parameter differently at
/// the same place (`/sessions/{sessionID}` and `/sessions/{identifier}`), which one path
/// matcher cannot hold.
fn differently_named_parameters(first: &str, second: &str) -> bool {
    for (a, b) in segments(first).into_iter().zip(segments(second)) {
        if a == b {
            continue;
        }
        return is_parameter(a) && is_parameter(b);
    }
    false
}

/// `router` with each of its paths answering an unsupported method through `answer`, so a
/// surface's 405 comes in its own API's error shape (the server-wide one is problem+json).
/// Call it before the surface's own layers, so they apply to the answer too.
pub(crate) fn answer_wrong_methods<H, T>(
    router: OpenApiRouter<ApiState>,
    answer: H,
) -> OpenApiRouter<ApiState>
where
    H: axum::handler::Handler<T, ApiState> + Clone,
    T: 'static,
{
    let paths: std::collections::BTreeSet<String> = openapi_routes(&router)
        .into_iter()
        .map(|(_, path)| path)
        .collect();
    paths.into_iter().fold(router, |router, path| {
        router.route(&path, MethodRouter::new().fallback(answer.clone()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(owner: &'static str, method: &str, path: &str) -> Route {
        Route {
            owner,
            method: method.to_owned(),
            path: path.to_owned(),
        }
    }

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
        assert!(normalise_mount("x", "//").is_err());
    }

    #[test]
    fn overlapping_templates_are_found() {
        assert!(overlap("/sessions/list", "/sessions/{identifier}"));
        assert!(overlap("/sessions", "/sessions"));
        assert!(overlap("/v1/{*path}", "/v1/sessions/x"));
        assert!(!overlap("/sessions", "/sessions/{id}"));
        assert!(!overlap("/api/sessions/{id}", "/api/v1/sessions"));
        assert!(!overlap(
            "/api/v1/sessions/{id}/close",
            "/api/sessions/{id}"
        ));
    }

    #[test]
    fn collisions_name_both_routes() {
        let routes = [
            route("e2b", "GET", "/sessions"),
            route("agents", "GET", "/sessions"),
            route("e2b", "DELETE", "/sessions/{sessionID}"),
            route("agents", "PUT", "/sessions/{identifier}"),
            route("python_rce", "POST", "/sessions/create"),
        ];
        let found = collisions(&routes);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("e2b GET /sessions and agents GET /sessions"));
        assert!(found[1].contains("{sessionID}") && found[1].contains("{identifier}"));
        assert!(collisions(&routes[..1]).is_empty());
        let shared = [route("e2b", "GET", "/x"), route("python_rce", "POST", "/x")];
        assert!(collisions(&shared)[0].contains("share one path"));
    }

    #[test]
    fn the_defaults_do_not_collide() {
        assert!(plan(&BTreeMap::new(), &[]).is_ok());
    }

    #[test]
    fn unknown_surfaces_and_bad_mounts_are_refused() {
        let unknown = BTreeMap::from([("nope".to_owned(), "/x".to_owned())]);
        assert!(matches!(
            plan(&unknown, &[]),
            Err(MountError::UnknownSurface { .. })
        ));
        let bad = BTreeMap::from([("e2b".to_owned(), "e2b".to_owned())]);
        assert!(matches!(
            plan(&bad, &[]),
            Err(MountError::InvalidMount { .. })
        ));
        let off = BTreeMap::from([("e2b".to_owned(), DISABLED.to_owned())]);
        let planned = plan(&off, &[]).expect("plan");
        assert!(planned.iter().all(|mount| mount.surface.name != "e2b"));
    }
}
