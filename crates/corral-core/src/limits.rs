//! Limits the engine enforces on every session and execution.
//!
//! Only the numbers live here; enforcing them is the engine's and the worker's job.

use std::time::Duration;

/// Per-execution and per-session limits, set by the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Timeout used when a request names none.
    pub default_exec_timeout: Duration,
    /// Longest timeout a request may ask for.
    pub max_exec_timeout: Duration,
    /// How long an interrupted execution has to stop before its worker is killed.
    pub interrupt_grace: Duration,
    /// Captured bytes kept per stream (stdout, stderr) per execution.
    pub output_cap_bytes: usize,
    /// Executions that may wait behind the running one in a session.
    pub queue_capacity: usize,
    /// Largest accepted source text, in bytes.
    pub max_code_bytes: usize,
    /// How long a new worker may take to say it is ready.
    pub start_timeout: Duration,
    /// Idle TTL of a session that names none.
    pub idle_ttl: Duration,
    /// Longest idle TTL a client may ask for.
    pub idle_ttl_ceiling: Duration,
    /// Max TTL (lifetime) of a session that names none.
    pub max_ttl: Duration,
    /// Longest max TTL a client may ask for.
    pub max_ttl_ceiling: Duration,
    /// Sessions that may be live (starting, idle or busy) at once on this server.
    pub max_sessions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            default_exec_timeout: Duration::from_secs(60),
            max_exec_timeout: Duration::from_secs(3600),
            interrupt_grace: Duration::from_secs(3),
            output_cap_bytes: 1024 * 1024,
            queue_capacity: 64,
            max_code_bytes: 1024 * 1024,
            start_timeout: Duration::from_secs(30),
            idle_ttl: Duration::from_secs(30 * 60),
            idle_ttl_ceiling: Duration::from_secs(24 * 3600),
            max_ttl: Duration::from_secs(24 * 3600),
            max_ttl_ceiling: Duration::from_secs(7 * 24 * 3600),
            max_sessions: 256,
        }
    }
}
