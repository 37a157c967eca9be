//! `corral-engine`: the system's API — sessions and executions, whatever surface asks.
//!
//! Owns the registry of live sessions, each session's task (one worker, a bounded FIFO queue
//! of executions, close/restart control), execution-count assignment, timeouts and caps as
//! configured, session TTLs and the reaper that enforces them, the server-wide session cap, per-tenant quotas,
//! graceful shutdown (closing sessions, or leaving them to the next server), taking over the
//! sessions a previous server left running (`adoption`), a node's place in a fleet sharing the store (`fleet`), what is measured (`measurements`), API keys and which tenant's sessions a caller may reach, and writing
//! every state change through to the store.
//!
//! Deliberately knows nothing of HTTP or any client's JSON: surfaces in `corral-api` translate
//! onto [`Engine`] calls and map [`EngineError`] to their own status codes.

mod adoption;
mod drain;
mod engine;
mod error;
pub mod fleet;
mod interaction;
mod key_access;
pub mod keys;
pub mod measurements;
mod network;
mod quotas;
mod reaper;
mod revival;
mod runtimes;
mod session_task;

pub use corral_worker::VenvRecipe;
pub use corral_worker::{
    FileDownload, FileEntry, FileError, HostIsolation, IsolationFeature, PoolSettings, PoolStatus,
    Sandbox, SandboxSettings, SessionLimits, WorkspaceFiles,
};
pub use engine::{
    CreateSession, Engine, EngineConfig, EngineInfo, ExecIo, ExecutionPage, OnFailure,
    PendingExecution, SessionClaim, SessionPage, SessionUpdate, CLOSED_BY_CLIENT_REASON,
    RESTART_REASON, SHUTDOWN_REASON,
};
pub use error::EngineError;
pub use fleet::{FleetConfig, SessionRoute, DEFAULT_NODE_LEASE};
pub use interaction::PendingQuery;
pub use network::NetworkSettings;
pub use quotas::QuotaKind;
pub use runtimes::{
    absolute_program, venv_directory, RuntimeInfo, RuntimeKind, RuntimeSpec, PYTHON_RUNTIME,
};
pub use session_task::{SessionSignal, DRAINED_REASON};
