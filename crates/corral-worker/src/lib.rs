//! `corral-worker`: the host side of one worker process.
//!
//! Owns starting a worker (through `corral-sandbox`), waiting for its `ready`, running one
//! execution at a time over the protocol, reading its stdout/stderr pipes (decoding, capping,
//! synchronising with `done`), enforcing the execution timeout (interrupt, then kill), and
//! killing the worker's process tree.
//!
//! Deliberately knows nothing of sessions, queues, storage or HTTP: the engine decides what
//! runs when; this crate only drives one process.

mod adoption;
mod driver;
mod execution;
mod files;
mod interpreter;
mod introspection;
mod pool;
mod runtime;
mod stream_text;
mod venv;
mod worker;
mod zygote;

pub use adoption::{left_workers, AdoptionError, LeftWorker, Resumed, UnfinishedError};
pub use corral_sandbox::{
    available_memory_bytes, launcher_main, Destination, HostIsolation, IsolationFeature,
    NetworkRules, NetworkSetup, Sandbox, SandboxSettings, SessionLimits, NAMES_ADDRESS,
};
pub use corral_sandbox::{files_main, FileEntry, FILES_COMMAND};
pub use corral_sandbox::{reaper_main, REAPER_COMMAND};
pub use driver::{install_driver, install_driver_of, DRIVER_SOURCE};
pub use execution::{ExecOutcome, ExecSpec};
pub use files::{FileDownload, FileError, WorkspaceFiles};
pub use interpreter::{discover_interpreter, Interpreter};
pub use introspection::QueryError;
pub use pool::{Origin, PoolSettings, PoolStatus, WorkerSource};
pub use runtime::DriverKind;
pub use venv::{ensure_venv, existing_venv, BuiltVenv, VenvError, VenvRecipe};
pub use worker::{InterruptHandle, Worker, WorkerConfig, WorkerExit, WorkerInfo};
pub use zygote::start_zygote;

/// Failures of this crate's operations.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Sandbox(#[from] corral_sandbox::SandboxError),
    #[error("the worker did not become ready within {0:?}")]
    StartTimeout(std::time::Duration),
    #[error("the worker exited during start-up ({0})")]
    ExitedDuringStart(String),
    #[error("the worker speaks protocol {found}, this server speaks {expected}")]
    ProtocolVersion { found: u32, expected: u32 },
    #[error("worker channel: {0}")]
    Channel(#[from] corral_protocol::FrameError),
    #[error("the interpreter {python} could not be used: {detail}")]
    Interpreter { python: String, detail: String },
    #[error("the zygote could not start the worker: {0}")]
    Join(String),
    #[error("workspace {path}: {source}")]
    Workspace {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
