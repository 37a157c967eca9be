//! What the engine measures, through the `metrics` facade: sessions created and ended (by
//! reason), executions by outcome and their duration, session start latency, and a snapshot
//! of live state (sessions by state, queued executions, worker memory) taken on demand.
//!
//! Metric names and labels are decided here, once. Choosing an exporter, keeping the
//! registry and serving `/metrics` is `corral-api`'s job; without an installed recorder these
//! calls do nothing.

use std::time::Duration;

use corral_core::{ExecutionStatus, MemoryUsage, SessionState};
use corral_worker::{Origin, PoolStatus};

/// Sessions whose worker started (counter).
pub const SESSIONS_CREATED: &str = "corral_sessions_created_total";
/// Sessions that left the live set, labelled `state` (closed, dead) and `reason` (counter).
pub const SESSIONS_ENDED: &str = "corral_sessions_closed_total";
/// Finished executions, labelled `outcome` (counter).
pub const EXECUTIONS: &str = "corral_executions_total";
/// Wall-clock time of finished executions (histogram, seconds).
pub const EXECUTION_DURATION: &str = "corral_execution_duration_seconds";
/// Time from a create request to a ready worker (histogram, seconds).
pub const SESSION_START: &str = "corral_session_start_duration_seconds";
/// Live sessions, labelled `state` (gauge).
pub const SESSIONS: &str = "corral_sessions";
/// Executions accepted but not yet started, over all sessions (gauge).
pub const QUEUE_DEPTH: &str = "corral_execution_queue_depth";
/// Memory used by live workers, in bytes (gauge).
pub const WORKER_MEMORY: &str = "corral_worker_memory_bytes";
/// Proportional set size of live workers' processes together, in bytes: shared pages
/// divided among the processes that map them (gauge).
pub const WORKER_PSS: &str = "corral_worker_memory_pss_bytes";
/// Unique set size of live workers' processes together, in bytes: what ending them all would
/// free (gauge).
pub const WORKER_USS: &str = "corral_worker_memory_uss_bytes";
/// Workers given to new sessions, labelled `origin` (`pool`: a warm one handed over,
/// `fresh`: started for the session) (counter).
pub const WORKERS_HANDED_OUT: &str = "corral_session_workers_total";
/// Idle workers ready in the warm pool (gauge).
pub const POOL_READY: &str = "corral_pool_ready_workers";
/// Memory used by the warm pool's idle workers, in bytes (gauge).
pub const POOL_MEMORY: &str = "corral_pool_memory_bytes";
/// Sessions taken over from a previous server on this data directory (counter).
pub const SESSIONS_ADOPTED: &str = "corral_sessions_adopted_total";
/// Sessions' connections to domain names through their proxy, labelled `decision`
/// (`allowed`, `refused`) (counter).
pub const NETWORK_CONNECTIONS: &str = "corral_network_connections_total";
/// Requests refused by a cap, quota or full queue, labelled `limit` (counter).
pub const REFUSALS: &str = "corral_refusals_total";

/// Reasons a closed session may carry; anything else is reported as `other`.
const KNOWN_CLOSE_REASONS: [&str; 4] = [
    crate::engine::CLOSED_BY_CLIENT_REASON,
    corral_core::Expiry::IdleTimeout.reason(),
    corral_core::Expiry::MaxLifetime.reason(),
    crate::engine::SHUTDOWN_REASON,
];

pub(crate) fn network_connection(decision: corral_egress::Decision) {
    metrics::counter!(NETWORK_CONNECTIONS, "decision" => decision.as_str()).increment(1);
}

pub(crate) fn sessions_adopted(count: usize) {
    metrics::counter!(SESSIONS_ADOPTED).increment(u64::try_from(count).unwrap_or(u64::MAX));
}

pub(crate) fn session_started(start: Duration, origin: Origin) {
    metrics::counter!(SESSIONS_CREATED).increment(1);
    metrics::counter!(WORKERS_HANDED_OUT, "origin" => origin.as_str()).increment(1);
    metrics::histogram!(SESSION_START).record(start.as_secs_f64());
}

/// A session left the live set as `state` for `reason`; free-text reasons (a worker's exit
/// status) are folded into a few labels so the series stay bounded.
pub(crate) fn session_ended(state: SessionState, reason: &str) {
    let reason = match state {
        SessionState::Closed => KNOWN_CLOSE_REASONS
            .iter()
            .find(|known| **known == reason)
            .copied()
            .unwrap_or("other"),
        _ if reason.starts_with("restart failed") => "restart failed",
        _ if reason.contains("memory") => "out of memory",
        _ => "worker exited",
    };
    metrics::counter!(SESSIONS_ENDED, "state" => state.as_str(), "reason" => reason).increment(1);
}

pub(crate) fn execution_finished(status: ExecutionStatus, duration: Duration) {
    metrics::counter!(EXECUTIONS, "outcome" => status.as_str()).increment(1);
    metrics::histogram!(EXECUTION_DURATION).record(duration.as_secs_f64());
}

pub(crate) fn refused(limit: &'static str) {
    metrics::counter!(REFUSALS, "limit" => limit).increment(1);
}

/// Live state at one moment, for gauges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveGauges {
    /// Live sessions in each live state (starting, idle, busy), every state listed.
    pub sessions_by_state: Vec<(SessionState, usize)>,
    /// Executions accepted and not yet started.
    pub queued_executions: usize,
    /// Memory of live workers (cgroup usage, or resident set when unsandboxed).
    pub worker_memory_bytes: u64,
    /// PSS, USS and RSS of live workers' processes together.
    pub worker_memory: MemoryUsage,
    /// The warm pool.
    pub pool: PoolStatus,
}

impl LiveGauges {
    /// Sets the gauges to this snapshot.
    pub fn publish(&self) {
        for (state, count) in &self.sessions_by_state {
            metrics::gauge!(SESSIONS, "state" => state.as_str()).set(*count as f64);
        }
        metrics::gauge!(QUEUE_DEPTH).set(self.queued_executions as f64);
        metrics::gauge!(WORKER_MEMORY).set(self.worker_memory_bytes as f64);
        metrics::gauge!(WORKER_PSS).set(self.worker_memory.pss_bytes as f64);
        metrics::gauge!(WORKER_USS).set(self.worker_memory.uss_bytes as f64);
        metrics::gauge!(POOL_READY).set(self.pool.ready as f64);
        metrics::gauge!(POOL_MEMORY).set(self.pool.memory_bytes as f64);
    }
}
