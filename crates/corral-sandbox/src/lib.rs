//! `corral-sandbox`: the only crate that makes raw syscalls or uses `unsafe`.
//!
//! Owns starting a worker process with the fd layout of the worker protocol (stdin
//! `/dev/null`, stdout/stderr pipes, the control socket at fd 3), in its own process group,
//! with a cleared environment; signalling and killing worker process trees; and telling what
//! isolation the host offers.
//!
//! Deliberately knows nothing of sessions, the protocol's messages or HTTP. Namespaces,
//! cgroups and seccomp are the next step (see DESIGN.md); until they land this crate reports
//! `sandboxed: false` and never claims isolation it does not apply.

mod host;
mod process;

pub use host::{HostIsolation, IsolationFeature};
pub use process::{interrupt, kill_process_group, spawn_worker, SpawnedWorker, WorkerCommand};

/// Failures of this crate's operations.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("could not create the control socket: {0}")]
    ControlSocket(#[source] std::io::Error),
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not signal process {pid}: {source}")]
    Signal {
        pid: u32,
        #[source]
        source: nix::Error,
    },
}
