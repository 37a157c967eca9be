//! Limits the engine enforces on every session and execution.
//!
//! Only the numbers live here; enforcing them is the engine's and the worker's job.

use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    /// New sessions are refused while the host has less memory available than this, so the
    /// server says no before the host starts swapping.
    pub min_available_memory_bytes: u64,
    /// Live sessions one tenant may have at once (`None`: only the server's cap).
    pub max_sessions_per_tenant: Option<usize>,
    /// Executions one tenant may have queued or running at once (`None`: unlimited).
    pub max_executions_per_tenant: Option<usize>,
    /// Executions kept in a session's history; older ones are removed as new ones finish.
    pub executions_kept_per_session: u64,
    /// Bytes of output stored per execution (stdout and stderr together; the ordered
    /// outputs likewise).
    pub stored_output_cap_bytes: usize,
    /// How long a closed or dead session's record (and its history) is kept after it ended.
    pub ended_session_retention: Duration,
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
            min_available_memory_bytes: 512 * 1024 * 1024,
            max_sessions_per_tenant: None,
            max_executions_per_tenant: None,
            executions_kept_per_session: 1000,
            stored_output_cap_bytes: 2 * 1024 * 1024,
            ended_session_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What one session's sandbox may use. Missing fields (records written before a field
/// existed) take the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceLimits {
    /// Memory of the whole process tree, in bytes.
    pub memory_bytes: u64,
    /// Processes and threads.
    pub max_processes: u64,
    /// CPU time per wall-clock second, in thousandths of a core.
    pub cpu_millicores: u64,
    /// Size of the workspace (and of `/tmp`).
    pub workspace_bytes: u64,
    pub max_open_files: u64,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        ResourceLimits {
            memory_bytes: 512 * 1024 * 1024,
            max_processes: 128,
            cpu_millicores: 1000,
            workspace_bytes: 256 * 1024 * 1024,
            max_open_files: 1024,
        }
    }
}

impl ResourceLimits {
    /// The smallest values a session can be given and still run Python.
    pub const MINIMUM: ResourceLimits = ResourceLimits {
        memory_bytes: 32 * 1024 * 1024,
        max_processes: 8,
        cpu_millicores: 10,
        workspace_bytes: 1024 * 1024,
        max_open_files: 64,
    };

    /// Names of the fields of `self` that exceed `maximum` or fall below the minimum.
    pub fn violations(&self, maximum: &ResourceLimits) -> Vec<String> {
        let minimum = ResourceLimits::MINIMUM;
        let fields = [
            (
                "memory_bytes",
                self.memory_bytes,
                minimum.memory_bytes,
                maximum.memory_bytes,
            ),
            (
                "max_processes",
                self.max_processes,
                minimum.max_processes,
                maximum.max_processes,
            ),
            (
                "cpu_millicores",
                self.cpu_millicores,
                minimum.cpu_millicores,
                maximum.cpu_millicores,
            ),
            (
                "workspace_bytes",
                self.workspace_bytes,
                minimum.workspace_bytes,
                maximum.workspace_bytes,
            ),
            (
                "max_open_files",
                self.max_open_files,
                minimum.max_open_files,
                maximum.max_open_files,
            ),
        ];
        fields
            .into_iter()
            .filter(|(_, value, low, high)| value < low || value > high)
            .map(|(name, value, low, high)| format!("{name} = {value} (allowed {low}..={high})"))
            .collect()
    }
}

/// What a session's processes use of the host's memory at one moment.
///
/// `pss_bytes` (proportional set size) shares each page among the processes that map it, so
/// the sessions' PSS add up to what they cost the host together; `uss_bytes` (unique set size)
/// is what would be freed if the session ended now; `rss_bytes` counts shared pages in full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    pub rss_bytes: u64,
    pub pss_bytes: u64,
    pub uss_bytes: u64,
    /// How many processes were measured.
    pub processes: u32,
}

impl MemoryUsage {
    /// The sum of two measurements (of different processes).
    pub fn plus(self, other: MemoryUsage) -> MemoryUsage {
        MemoryUsage {
            rss_bytes: self.rss_bytes + other.rss_bytes,
            pss_bytes: self.pss_bytes + other.pss_bytes,
            uss_bytes: self.uss_bytes + other.uss_bytes,
            processes: self.processes + other.processes,
        }
    }
}
