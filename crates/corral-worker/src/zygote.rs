//! The zygote of a Python runtime (`drivers/python/zygote.py`, driven by `corral_sandbox`'s
//! `Zygote`): which workers it starts, and starting it with the runtime's interpreter,
//! driver and environment.
//!
//! Only sandboxed Python workers without a network stack are forked by a zygote (a networked
//! session's environment differs per session, and an unsandboxed worker has nothing to join).
//! Deliberately not here: the namespace work (`corral_sandbox`), when a zygote is wanted (the
//! engine's `[pool] zygote`).

use std::path::Path;
use std::sync::Arc;

use corral_sandbox::{Zygote, ZygoteCommand};

use crate::driver::install_source;
use crate::runtime::{worker_environment, DriverKind};
use crate::{WorkerConfig, WorkerError};

const ZYGOTE_SOURCE: &str = include_str!("../../../drivers/python/zygote.py");

/// Whether `config`'s workers are forked by its zygote.
pub(crate) fn joins(config: &WorkerConfig) -> bool {
    config.zygote.is_some()
        && config.sandbox.is_some()
        && config.network.is_none()
        && config.driver == DriverKind::Python
}

/// Starts a zygote for `config`'s runtime (a sandboxed Python one), its script installed in
/// `directory`. `None` for a runtime whose workers a zygote cannot fork.
pub fn start_zygote(
    config: &WorkerConfig,
    directory: &Path,
) -> Result<Option<Arc<Zygote>>, WorkerError> {
    if config.sandbox.is_none() || config.driver != DriverKind::Python {
        return Ok(None);
    }
    let script = install_source(directory, "zygote", "py", ZYGOTE_SOURCE)?;
    let Some(sandbox) = &config.sandbox else {
        return Ok(None);
    };
    let command = ZygoteCommand {
        python: config.python.clone(),
        reaper: sandbox.launcher().to_owned(),
        script,
        driver: config.driver_path.clone(),
        sandbox_driver: DriverKind::Python.sandbox_path().to_owned(),
        env: worker_environment(config, corral_sandbox::sandbox_workspace().as_ref()),
    };
    Ok(Some(Arc::new(Zygote::start(&command)?)))
}
