//! The native API's JSON shapes: requests it accepts and resources it returns.
//!
//! These are the wire contract (with OpenAPI schemas); they convert from the engine's records
//! and never reach below the API crate. Requests reject unknown fields.

use chrono::{DateTime, Utc};
use corral_core::{
    ApiKeyRecord, ErrorInfo, ExecutionRecord, OutputItem, ResourceLimits, SessionRecord,
};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

type JsonObject = serde_json::Map<String, serde_json::Value>;

/// `POST /v1/sessions`. Every field is optional; an empty body is fine.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    /// A label for people; not unique.
    #[serde(default)]
    pub name: Option<String>,
    /// Free-form JSON object kept with the session (up to 16 KiB).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<JsonObject>,
    /// Runtime to start; `python3` (the default) is the only one so far.
    #[serde(default)]
    pub runtime: Option<String>,
    /// Sandbox limits; each omitted field takes the server's default (see `/v1/info`), and
    /// none may exceed the server's maximum.
    #[serde(default)]
    pub limits: Option<ResourceRequest>,
    /// Seconds without activity (executions, refreshes) after which the session is closed
    /// (`idle timeout`). Default and maximum in `/v1/info`.
    #[serde(default)]
    pub idle_ttl: Option<f64>,
    /// Seconds after creation after which the session is closed whatever it is doing
    /// (`max lifetime`). Default and maximum in `/v1/info`.
    #[serde(default)]
    pub max_ttl: Option<f64>,
    /// Where the session may connect: `"none"` (the default: its own loopback only) or
    /// `{"allow": [...]}` with IPv4 CIDRs or addresses (`10.0.0.0/8`, `192.0.2.7:443`),
    /// domain names (`pypi.org`, `files.example.com:443`) and `host.corral.internal:PORT`
    /// (a service on the host's loopback), within the server's maximum (`/v1/info`).
    #[serde(default)]
    #[schema(value_type = Option<NetworkPolicySchema>)]
    pub network: Option<corral_core::NetworkPolicy>,
}

/// `POST /v1/sessions/{id}/refresh`. Optional; an empty body is fine.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// A new idle TTL in seconds, counted from now (at most the maximum in `/v1/info`).
    #[serde(default)]
    pub idle_ttl: Option<f64>,
}

/// Resource limits asked for at creation.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceRequest {
    pub memory_bytes: Option<u64>,
    pub max_processes: Option<u64>,
    pub cpu_millicores: Option<u64>,
    pub workspace_bytes: Option<u64>,
    pub max_open_files: Option<u64>,
}

impl ResourceRequest {
    pub fn over(&self, defaults: ResourceLimits) -> ResourceLimits {
        ResourceLimits {
            memory_bytes: self.memory_bytes.unwrap_or(defaults.memory_bytes),
            max_processes: self.max_processes.unwrap_or(defaults.max_processes),
            cpu_millicores: self.cpu_millicores.unwrap_or(defaults.cpu_millicores),
            workspace_bytes: self.workspace_bytes.unwrap_or(defaults.workspace_bytes),
            max_open_files: self.max_open_files.unwrap_or(defaults.max_open_files),
        }
    }
}

/// A session's sandbox limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResourceView {
    /// Memory of the session's whole process tree.
    pub memory_bytes: u64,
    /// Processes and threads.
    pub max_processes: u64,
    /// CPU time per second, in thousandths of a core.
    pub cpu_millicores: u64,
    /// Size of the workspace (and of `/tmp`).
    pub workspace_bytes: u64,
    pub max_open_files: u64,
}

impl From<ResourceLimits> for ResourceView {
    fn from(limits: ResourceLimits) -> Self {
        ResourceView {
            memory_bytes: limits.memory_bytes,
            max_processes: limits.max_processes,
            cpu_millicores: limits.cpu_millicores,
            workspace_bytes: limits.workspace_bytes,
            max_open_files: limits.max_open_files,
        }
    }
}

/// `PATCH /v1/sessions/{id}`: only the fields present change; `"name": null` clears the name.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSessionRequest {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    /// Replaces the whole metadata object.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<JsonObject>,
    /// `false` drains the session: queued executions finish, new ones get 409.
    #[serde(default)]
    pub accepting_executions: Option<bool>,
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `POST /v1/sessions/{id}/executions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// Source code to run.
    pub code: String,
    /// Seconds before the execution is interrupted (default and maximum in `/v1/info`).
    #[serde(default)]
    pub timeout: Option<f64>,
}

/// A session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    /// UUID.
    pub id: String,
    pub name: Option<String>,
    pub runtime: String,
    /// `starting`, `idle`, `busy`, `closed` or `dead`.
    pub state: String,
    /// Why the session is `closed` or `dead`.
    pub state_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_activity_at: DateTime<Utc>,
    /// The number of the last execution started (0 before the first).
    pub execution_count: u64,
    #[schema(value_type = Object)]
    pub metadata: JsonObject,
    pub accepting_executions: bool,
    /// The sandbox limits the session runs with.
    pub limits: ResourceView,
    /// Where the session may connect: `"none"` or `{"allow": [...]}`.
    #[schema(value_type = NetworkPolicySchema)]
    pub network: serde_json::Value,
    /// Seconds without activity before the session is closed.
    pub idle_ttl: f64,
    /// Seconds after creation before the session is closed.
    pub max_ttl: f64,
    /// When the session will be closed if nothing happens before then; null once it ended.
    pub expires_at: Option<DateTime<Utc>>,
    /// The tenant the session belongs to (whose keys can reach it).
    pub tenant: String,
    /// What the session's processes use of the host's memory now; only in the answer to
    /// `GET /v1/sessions/{id}` for a live session (null elsewhere).
    #[serde(default)]
    pub memory: Option<MemoryView>,
}

/// Memory of a session's processes, from `/proc/PID/smaps_rollup`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemoryView {
    /// Proportional set size: pages shared with other processes (other sessions' workers
    /// among them) divided among those processes. What the session costs the host.
    pub pss_bytes: u64,
    /// Unique set size: the session's private pages, freed when it ends.
    pub uss_bytes: u64,
    /// Resident set size: every page mapped, shared ones counted in full.
    pub rss_bytes: u64,
    /// The session's processes measured (sandbox launcher and init, the interpreter and
    /// whatever it started).
    pub processes: u32,
}

impl From<corral_core::MemoryUsage> for MemoryView {
    fn from(usage: corral_core::MemoryUsage) -> Self {
        MemoryView {
            pss_bytes: usage.pss_bytes,
            uss_bytes: usage.uss_bytes,
            rss_bytes: usage.rss_bytes,
            processes: usage.processes,
        }
    }
}

impl From<SessionRecord> for SessionView {
    fn from(record: SessionRecord) -> Self {
        let expires_at = record.expires_at();
        SessionView {
            id: record.id.to_string(),
            name: record.name,
            runtime: record.runtime,
            state: record.state.as_str().to_owned(),
            state_reason: record.state_reason,
            created_at: record.created_at,
            last_activity_at: record.last_activity_at,
            execution_count: record.execution_count,
            metadata: record.metadata,
            accepting_executions: record.accepting_executions,
            limits: record.resources.into(),
            network: serde_json::to_value(&record.network).unwrap_or(serde_json::Value::Null),
            idle_ttl: record.ttl.idle.as_secs_f64(),
            max_ttl: record.ttl.max.as_secs_f64(),
            expires_at,
            tenant: record.tenant,
            memory: None,
        }
    }
}

/// One page of sessions.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// An error raised by the executed code.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorView {
    pub ename: String,
    pub evalue: String,
    /// Formatted traceback chunks, without the server's own frames.
    pub traceback: Vec<String>,
}

impl From<ErrorInfo> for ErrorView {
    fn from(error: ErrorInfo) -> Self {
        ErrorView {
            ename: error.ename,
            evalue: error.evalue,
            traceback: error.traceback,
        }
    }
}

/// One ordered output: a chunk of a stream or a `display()`ed MIME bundle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum OutputView {
    Stream {
        /// `stdout` or `stderr`.
        name: String,
        text: String,
    },
    Display {
        #[schema(value_type = Object)]
        data: JsonObject,
        #[schema(value_type = Object)]
        metadata: JsonObject,
    },
}

impl From<OutputItem> for OutputView {
    fn from(item: OutputItem) -> Self {
        match item {
            OutputItem::Stream { name, text } => OutputView::Stream {
                name: name.as_str().to_owned(),
                text,
            },
            OutputItem::Display { data, metadata, .. } => OutputView::Display { data, metadata },
        }
    }
}

/// One execution, finished.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExecutionView {
    pub session_id: String,
    pub execution_count: u64,
    pub code: String,
    /// `ok`, `error`, `timeout`, `interrupted` or `killed`.
    pub status: String,
    /// The last expression's value as a MIME bundle (`text/plain` always), or null.
    #[schema(value_type = Option<Object>)]
    pub result: Option<JsonObject>,
    pub stdout: String,
    pub stderr: String,
    pub outputs: Vec<OutputView>,
    pub error: Option<ErrorView>,
    pub duration_ms: u64,
    /// Output beyond the per-stream cap was dropped.
    pub truncated: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

impl From<ExecutionRecord> for ExecutionView {
    fn from(record: ExecutionRecord) -> Self {
        ExecutionView {
            session_id: record.session_id.to_string(),
            execution_count: record.execution_count,
            code: record.code,
            status: record.status.as_str().to_owned(),
            result: record.result,
            stdout: record.stdout,
            stderr: record.stderr,
            outputs: record.outputs.into_iter().map(OutputView::from).collect(),
            error: record.error.map(ErrorView::from),
            duration_ms: record.duration_ms,
            truncated: record.truncated,
            started_at: record.started_at,
            finished_at: record.finished_at,
        }
    }
}

/// One page of a session's execution history, oldest first.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ExecutionList {
    pub executions: Vec<ExecutionView>,
    /// Pass as `after` to get the next page; `null` on the last page.
    pub next_after: Option<u64>,
}

/// `POST /v1/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// `admin`, `tenant` or `session`.
    pub scope: String,
    /// The tenant of a tenant key (a tenant key's own tenant by default).
    #[serde(default)]
    pub tenant: Option<String>,
    /// The session of a session key.
    #[serde(default)]
    pub session_id: Option<String>,
    /// A label for people.
    #[serde(default)]
    pub name: Option<String>,
    /// When the key stops working (RFC 3339, in the future); never by default.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// An API key without its secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: Option<String>,
    /// `admin`, `tenant` or `session`.
    pub scope: String,
    pub tenant: Option<String>,
    pub session_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<ApiKeyRecord> for KeyView {
    fn from(record: ApiKeyRecord) -> Self {
        KeyView {
            id: record.id,
            name: record.name,
            scope: record.scope.as_str().to_owned(),
            tenant: record.tenant,
            session_id: record.session_id.map(|id| id.to_string()),
            created_at: record.created_at,
            revoked_at: record.revoked_at,
            expires_at: record.expires_at,
        }
    }
}

/// A newly issued key: the only time `key` is shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IssuedKeyView {
    /// The key to present (`Authorization: Bearer <key>` or `X-API-Key: <key>`).
    pub key: String,
    #[serde(flatten)]
    pub details: KeyView,
}

/// `GET /v1/keys`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

/// One node of a fleet in `GET /v1/nodes`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    pub id: String,
    /// Where the other nodes reach it.
    pub advertise_url: String,
    /// Holds its lease and was not declared lost.
    pub alive: bool,
    pub started_at: DateTime<Utc>,
    pub renewed_at: DateTime<Utc>,
    pub lease_expires_at: DateTime<Utc>,
    /// When another node declared it lost (its live sessions became dead), if it was.
    pub lost_at: Option<DateTime<Utc>>,
    /// Live sessions at its last renewal.
    pub live_sessions: u64,
    pub max_sessions: u64,
    pub available_memory_bytes: Option<u64>,
    pub worker_memory_bytes: u64,
}

impl NodeView {
    pub fn new(node: corral_core::NodeRecord, now: DateTime<Utc>) -> NodeView {
        NodeView {
            alive: node.is_alive(now),
            id: node.id,
            advertise_url: node.advertise_url,
            started_at: node.started_at,
            renewed_at: node.renewed_at,
            lease_expires_at: node.lease_expires_at,
            lost_at: node.lost_at,
            live_sessions: node.load.live_sessions,
            max_sessions: node.load.max_sessions,
            available_memory_bytes: node.load.available_memory_bytes,
            worker_memory_bytes: node.load.worker_memory_bytes,
        }
    }
}

/// `GET /v1/nodes`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeList {
    pub nodes: Vec<NodeView>,
}

/// `GET /healthz`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// A runtime sessions can be started with.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RuntimeView {
    /// What sessions ask for (`runtime`), also the Jupyter kernelspec's name.
    pub name: String,
    /// `python`, `javascript` or `bash`.
    pub language: String,
    pub display_name: String,
    /// The program that runs the runtime's driver.
    pub interpreter: String,
    pub language_version: String,
    /// `name==version` of each package of a venv corral built (empty for other runtimes).
    pub packages: Vec<String>,
    /// Modules the runtime's workers import before a session gets them (`[runtimes.NAME]
    /// preload`; for the default runtime, `[pool] preload` applies to pool workers).
    pub preload: Vec<String>,
}

/// A configured runtime that could not start (sessions asking for it are refused with the
/// reason).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct UnavailableRuntimeView {
    pub name: String,
    pub reason: String,
}

/// `GET /v1/runtimes`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RuntimeList {
    /// The runtimes sessions can use, the default first.
    pub runtimes: Vec<RuntimeView>,
    pub unavailable: Vec<UnavailableRuntimeView>,
}

/// Operator limits that apply to every session.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct LimitsView {
    pub default_execution_timeout_seconds: f64,
    pub max_execution_timeout_seconds: f64,
    pub interrupt_grace_seconds: f64,
    pub output_cap_bytes_per_stream: usize,
    pub execution_queue_capacity: usize,
    pub max_code_bytes: usize,
    pub max_request_body_bytes: usize,
    /// Memory of each session's process tree (cgroup limit).
    pub session_memory_bytes: u64,
    /// Processes and threads per session.
    pub session_max_processes: u64,
    /// CPU per session, in thousandths of a core.
    pub session_cpu_millicores: u64,
    /// Size of each session's workspace (and of its `/tmp`).
    pub session_workspace_bytes: u64,
    pub session_max_open_files: u64,
    /// The most a session may ask for at creation.
    pub session_maximum: ResourceView,
    /// Idle TTL of sessions that ask for none.
    pub idle_ttl_seconds: f64,
    /// Largest idle TTL a session may ask for.
    pub idle_ttl_ceiling_seconds: f64,
    /// Max TTL of sessions that ask for none.
    pub max_ttl_seconds: f64,
    /// Largest max TTL a session may ask for.
    pub max_ttl_ceiling_seconds: f64,
    /// Sessions that may be live at once on this server.
    pub max_sessions: usize,
    /// New sessions are refused (429 `host_memory_low`) while the host has less available.
    pub min_available_memory_bytes: u64,
    /// Live sessions one tenant may have at once; `null` when unlimited.
    pub max_sessions_per_tenant: Option<usize>,
    /// Executions one tenant may have queued or running at once; `null` when unlimited.
    pub max_executions_per_tenant: Option<usize>,
    /// Executions kept in a session's history.
    pub executions_kept_per_session: u64,
    /// Output bytes kept in the stored record of an execution.
    pub stored_output_cap_bytes: usize,
    /// How long a closed or dead session stays readable after it ended.
    pub ended_session_retention_seconds: f64,
}

/// One isolation mechanism: does the host offer it, does corral apply it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct IsolationFeatureView {
    pub name: String,
    pub available: bool,
    pub active: bool,
}

/// What isolation sessions get on this host.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct IsolationView {
    /// True only when every session runs inside the full sandbox.
    pub sandboxed: bool,
    pub cgroup_version: Option<u8>,
    pub features: Vec<IsolationFeatureView>,
}

/// `GET /v1/info`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct InfoView {
    pub version: String,
    pub runtimes: Vec<RuntimeView>,
    /// Configured runtimes that could not start.
    pub unavailable_runtimes: Vec<UnavailableRuntimeView>,
    pub limits: LimitsView,
    pub isolation: IsolationView,
    pub live_sessions: usize,
    pub pool: PoolView,
    pub network: NetworkView,
}

/// The operator's network maximum: what sessions may ask for in `network`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct NetworkView {
    /// `false`: every session has its own loopback only.
    pub sessions_may_connect: bool,
    /// The widest allow-list a session may ask within.
    pub allow: Vec<String>,
    /// Most connections one session may have open at once (0: no cap).
    pub max_connections: u32,
    /// What enforces it: each session's own slirp4netns stack with nftables rules inside
    /// its network namespace (null when sessions may not connect).
    pub stack: Option<String>,
}

/// The warm pool of idle sandboxed workers that new sessions are handed.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PoolView {
    /// Idle workers the pool keeps while sessions are being created (0: no pool).
    pub size: usize,
    /// What it keeps after `shrink_after_seconds` without a session start.
    pub idle_size: usize,
    pub shrink_after_seconds: f64,
    pub max_memory_bytes: u64,
    /// Modules each pool worker imported before it was handed over.
    pub preload: Vec<String>,
    /// Idle workers ready now.
    pub ready: usize,
    /// Workers being started for the pool now.
    pub starting: usize,
    /// What the pool refills to now: `size`, or `idle_size` after a quiet period.
    pub target: usize,
    /// Memory the ready workers use together, in bytes.
    pub memory_bytes: u64,
    /// Sessions started from the pool since the server started.
    pub handed_over: u64,
    /// Sessions whose worker was started for them (the pool was empty, off, or held no
    /// worker with the limits asked for).
    pub started_fresh: u64,
    /// Times the pool was short of workers but started none, to keep the host above
    /// `min_available_memory_bytes` or itself within `max_memory_bytes`.
    pub held_back: u64,
}

pub use super::files::{FileEntryView, FileList, FileWritten};

/// The shape of a session's `network` in the OpenAPI document (the value itself is
/// `corral_core::NetworkPolicy`): `"none"`, or `{"allow": [...]}`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum NetworkPolicySchema {
    /// Its own loopback only.
    None(NetworkNone),
    /// These destinations besides its loopback.
    Allow {
        /// IPv4 CIDRs or addresses with an optional port, domain names with an optional port,
        /// `host.corral.internal:PORT`.
        allow: Vec<String>,
    },
}

/// `"none"`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkNone {
    None,
}
