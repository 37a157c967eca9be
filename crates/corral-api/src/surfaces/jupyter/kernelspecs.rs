//! `GET /api/kernelspecs` and `GET /api/kernelspecs/{kernel_name}`: one kernelspec per corral
//! runtime (`python3`, `javascript`, `bash` and the configured ones), the first runtime being
//! the default.
//!
//! Kernelspecs describe what a kernel will be; starting kernels is `kernels`' job. No resource
//! files (logos) are served.

use std::collections::BTreeMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::Json;
use corral_engine::RuntimeInfo;

use super::failure::Failure;
use super::models::{JupyterError, KernelSpec, KernelSpecModel, KernelSpecs};
use crate::state::ApiState;

/// The kernelspec of a runtime.
fn kernelspec_model(runtime: &RuntimeInfo) -> KernelSpecModel {
    let mut metadata = serde_json::Map::new();
    metadata.insert(
        "corral".to_owned(),
        serde_json::json!({
            "runtime": runtime.name,
            "language_version": runtime.language_version,
        }),
    );
    KernelSpecModel {
        name: runtime.name.clone(),
        spec: KernelSpec {
            argv: Vec::new(),
            display_name: format!("{} (corral)", runtime.display_name),
            language: runtime.language.clone(),
            interrupt_mode: "signal".to_owned(),
            env: BTreeMap::new(),
            metadata,
        },
        resources: serde_json::Map::new(),
    }
}

/// The default kernelspec's name (the first runtime's).
pub fn default_kernel_name(state: &ApiState) -> String {
    state
        .engine
        .info()
        .runtimes
        .first()
        .map(|runtime| runtime.name.clone())
        .unwrap_or_default()
}

/// Whether `name` is a kernelspec this server has.
pub fn is_kernel_name(state: &ApiState, name: &str) -> bool {
    state
        .engine
        .info()
        .runtimes
        .iter()
        .any(|runtime| runtime.name == name)
}

/// Lists the kernelspecs.
#[utoipa::path(get, path = "/api/kernelspecs", tag = "jupyter",
    params(("token" = Option<String>, Query, description = "A corral API key (or `Authorization: token <key>`)")),
    responses(
        (status = 200, description = "The kernelspecs and the default", body = KernelSpecs),
        (status = 403, description = "Missing or refused key", body = JupyterError),
    ))]
pub async fn list_kernelspecs(
    State(state): State<ApiState>,
    parts: Parts,
) -> Result<Json<KernelSpecs>, Failure> {
    super::caller(&state, &parts).await?;
    let kernelspecs = state
        .engine
        .info()
        .runtimes
        .iter()
        .map(|runtime| (runtime.name.clone(), kernelspec_model(runtime)))
        .collect();
    Ok(Json(KernelSpecs {
        default: default_kernel_name(&state),
        kernelspecs,
    }))
}

/// One kernelspec.
#[utoipa::path(get, path = "/api/kernelspecs/{kernel_name}", tag = "jupyter",
    params(
        ("kernel_name" = String, Path, description = "Kernelspec name, e.g. `python3`"),
        ("token" = Option<String>, Query, description = "A corral API key (or `Authorization: token <key>`)"),
    ),
    responses(
        (status = 200, description = "The kernelspec", body = KernelSpecModel),
        (status = 403, description = "Missing or refused key", body = JupyterError),
        (status = 404, description = "No such kernelspec", body = JupyterError),
    ))]
pub async fn get_kernelspec(
    State(state): State<ApiState>,
    kernel_name: Result<Path<String>, PathRejection>,
    parts: Parts,
) -> Result<Json<KernelSpecModel>, Failure> {
    super::caller(&state, &parts).await?;
    let Ok(Path(kernel_name)) = kernel_name else {
        return Err(Failure::no_route());
    };
    state
        .engine
        .info()
        .runtimes
        .iter()
        .find(|runtime| runtime.name == kernel_name)
        .map(|runtime| Json(kernelspec_model(runtime)))
        .ok_or_else(|| Failure::not_found(format!("Kernel spec {kernel_name} not found")))
}
