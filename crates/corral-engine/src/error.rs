//! The engine's errors: one enum every surface maps to its own status and body.

use corral_core::{SessionId, SessionState};

use crate::QuotaKind;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("session {0} not found")]
    SessionNotFound(SessionId),
    #[error("execution {execution_count} of session {session_id} not found")]
    ExecutionNotFound {
        session_id: SessionId,
        execution_count: u64,
    },
    #[error("session {id} is {state}{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    SessionNotRunning {
        id: SessionId,
        state: SessionState,
        reason: Option<String>,
    },
    #[error("session {0} is not accepting executions")]
    NotAccepting(SessionId),
    #[error("session {id} already has {capacity} executions queued")]
    QueueFull { id: SessionId, capacity: usize },
    #[error("the server already runs its limit of {limit} live sessions")]
    TooManySessions { limit: usize },
    #[error("the host has {available_mib} MiB of memory available; new sessions need at least {required_mib} MiB free")]
    HostMemoryLow {
        available_mib: u64,
        required_mib: u64,
    },
    #[error("the tenant's quota of {limit} {} is used up", kind.describe())]
    QuotaExceeded { kind: QuotaKind, limit: usize },
    #[error("{0}")]
    InvalidInput(String),
    #[error("a valid API key is required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("API key {0} not found")]
    KeyNotFound(String),
    #[error("the system's random number generator failed: {0}")]
    Randomness(String),
    #[error("could not start a worker: {0}")]
    WorkerStart(String),
    #[error("the execution was cancelled before it started")]
    ExecutionCancelled(SessionId),
    #[error("session {id} could not answer: {reason}")]
    QueryFailed { id: SessionId, reason: String },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    File(#[from] corral_worker::FileError),
    #[error("store: {0}")]
    Store(#[from] corral_store::StoreError),
}
