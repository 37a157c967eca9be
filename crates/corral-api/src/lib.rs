//! corral's HTTP layer: the only crate that knows HTTP and client JSON.
//!
//! It owns the router (`router`), the surfaces' mount points and route-collision check
//! (`mounts`), the native `/v1` API and every compatibility surface
//! (`surfaces`), problem+json errors (`problem`), body parsing (`body`), reading API keys
//! from requests (`auth`), the OpenAPI document, `/metrics` (`prometheus`),
//! forwarding requests to the node of a fleet that runs their session (`forwarding`),
//! and a small HTTP client of the native API for the CLI and benchmarks (`client`).
//! It calls only the engine: no SQL, no processes, no syscalls.

mod auth;
mod body;
pub mod client;
mod console;
mod forwarding;
pub mod json_errors;
mod mounts;
mod problem;
mod prometheus;
mod router;
mod sse_reader;
mod state;
mod surfaces;

pub use forwarding::{AddressedRoute, SessionAddress};
pub use mounts::{surface_names, MountError, SurfaceSpec, DISABLED as DISABLED_MOUNT, SURFACES};
pub use problem::{ProblemBody, PROBLEM_CONTENT_TYPE};
pub use prometheus::{MetricsError, MetricsRegistry};
pub use router::{build_router, check_mounts, serve, ApiOptions};
pub use surfaces::native::views;
