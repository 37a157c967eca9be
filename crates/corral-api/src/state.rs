//! What every handler reaches: the engine and the metrics registry. Shared by the router,
//! which builds it, and the surfaces, which read it; it imports neither, so neither imports
//! the other for it.
//!
//! Reading who the caller is stays with each surface (its own key conventions) and with
//! `auth` for corral's own headers.

use corral_engine::Engine;

use crate::prometheus::MetricsRegistry;

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    pub engine: Engine,
    /// Rendered by `/metrics`; `None` when no recorder was installed.
    pub metrics: Option<MetricsRegistry>,
}
