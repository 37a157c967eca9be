//! The engine's public face: create, list, get, update, drain, close, execute, interrupt,
//! restart, refresh and shutdown; the server-wide session cap.
//!
//! Running a session is `session_task`'s job, bringing a dead one back `revival`'s, expiring
//! sessions and removing old records the `reaper`'s, counting unfinished work and the clean
//! stop `drain`'s, who may use and manage keys `key_access`'s, and interactive clients'
//! questions `interaction`'s; this module holds the registry and validates input.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use corral_core::{
    ExecEvent, ExecRequest, ExecutionRecord, ExecutionTiming, Limits, MemoryUsage, NetworkPolicy,
    Principal, SessionId, SessionRecord, SessionState, SessionTtl, DEFAULT_TENANT,
};
use corral_store::{GroupCommit, SessionQuery, Store};
use corral_worker::{
    discover_interpreter, install_driver, start_zygote, DriverKind, HostIsolation, PoolSettings,
    PoolStatus, Sandbox, SessionLimits, Worker, WorkerConfig, WorkerSource, WorkspaceFiles,
};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::drain::Drain;
use crate::fleet::{self, FleetConfig};
use crate::measurements::{self, LiveGauges};
use crate::network::NetworkSettings;
use crate::quotas::{QuotaKind, TenantQuotas};
use crate::reaper::run_reaper;
use crate::runtimes::{start_runtimes, RuntimeInfo, RuntimeSpec, RuntimeTable, PYTHON_RUNTIME};
use crate::session_task::{
    run_session, Control, ExecJob, Job, LiveSession, TaskContext, SIGNAL_CAPACITY,
};
use crate::EngineError;

/// Reason recorded for sessions found live in the store at start-up.
pub const RESTART_REASON: &str = "server restarted";
/// Reason recorded for sessions a client closed.
pub const CLOSED_BY_CLIENT_REASON: &str = "closed by client";
/// Reason recorded for sessions closed by a clean shutdown.
pub const SHUTDOWN_REASON: &str = "server shutdown";
/// Longest session name accepted.
const MAX_NAME_CHARS: usize = 256;
/// Largest metadata object accepted, serialised.
const MAX_METADATA_BYTES: usize = 16 * 1024;

/// How the engine is set up.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    /// The Python interpreter of the default runtime (`python3`); the Bash driver runs on it.
    pub python: PathBuf,
    /// The runtimes besides `python3`.
    pub runtimes: Vec<RuntimeSpec>,
    pub limits: Limits,
    /// The sandbox sessions run in; `None` only when the operator disabled sandboxing.
    pub sandbox: Option<Arc<Sandbox>>,
    /// Resource limits of a session that asks for none.
    pub session_limits: SessionLimits,
    /// The most a session may ask for.
    pub max_session_limits: SessionLimits,
    /// Requests without a key act as admin while the store has no active key. Only for a
    /// server reachable from this host alone (bound to loopback).
    pub open_mode: bool,
    /// The warm pool of idle sandboxed workers (`size: 0` turns it off).
    pub pool: PoolSettings,
    /// This node's place in a fleet sharing the store; `None` for a single node.
    pub fleet: Option<FleetConfig>,
    /// The operator's network maximum (`[network]`).
    pub network: NetworkSettings,
}

/// What `/v1/info` reports.
#[derive(Clone, Debug)]
pub struct EngineInfo {
    pub runtimes: Vec<RuntimeInfo>,
    /// Configured runtimes that could not start, with the reason.
    pub unavailable_runtimes: BTreeMap<String, String>,
    pub limits: Limits,
    pub isolation: HostIsolation,
    pub session_limits: SessionLimits,
    pub max_session_limits: SessionLimits,
    pub data_dir: PathBuf,
    /// The operator's network maximum.
    pub network: NetworkSettings,
}

/// Options for a new session.
#[derive(Clone, Debug, Default)]
pub struct CreateSession {
    pub name: Option<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// `None` is the default runtime.
    pub runtime: Option<String>,
    /// `None` gives the operator's default limits.
    pub resources: Option<SessionLimits>,
    /// `None` is the operator's default; at most the operator's ceiling.
    pub idle_ttl: Option<Duration>,
    /// `None` is the operator's default; at most the operator's ceiling.
    pub max_ttl: Option<Duration>,
    /// Where the session may connect; `None` (or `none`) is loopback only.
    pub network: Option<NetworkPolicy>,
}

/// A name a live session holds within its tenant, so that creating "the session called X"
/// twice yields one session: the session whose `metadata[namespace][field]` equals `value`.
/// Surfaces with caller-chosen identities (a Jupyter notebook path, an agent session's
/// identifier) use it through [`Engine::find_or_create_session`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionClaim {
    pub namespace: String,
    pub field: String,
    pub value: String,
}

impl SessionClaim {
    /// Whether `record` holds this claim.
    pub fn is_held_by(&self, record: &SessionRecord) -> bool {
        self.is_in(&record.metadata)
    }

    /// The claim as the store keeps it: one text naming namespace, field and value
    /// unambiguously (a JSON array of the three).
    pub fn key(&self) -> String {
        serde_json::json!([self.namespace, self.field, self.value]).to_string()
    }

    /// Whether `metadata` holds this claim.
    pub fn is_in(&self, metadata: &serde_json::Map<String, serde_json::Value>) -> bool {
        metadata
            .get(&self.namespace)
            .and_then(|fields| fields.get(&self.field))
            .and_then(|value| value.as_str())
            == Some(self.value.as_str())
    }
}

/// What [`Engine::start_session`] did.
enum Started {
    /// Started, with this record.
    New(Box<SessionRecord>),
    /// Not started: this live session already holds the claim.
    Claimed(SessionId),
}

/// Changes to a session; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct SessionUpdate {
    /// `Some(None)` clears the name.
    pub name: Option<Option<String>>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    pub accepting_executions: Option<bool>,
}

/// One page of sessions, and the cursor for the next page.
#[derive(Clone, Debug)]
pub struct SessionPage {
    pub sessions: Vec<SessionRecord>,
    pub next_after: Option<SessionId>,
}

/// One page of executions, and the cursor for the next page.
#[derive(Clone, Debug)]
pub struct ExecutionPage {
    pub executions: Vec<ExecutionRecord>,
    pub next_after: Option<u64>,
}

/// The engine. Cheap to clone; all clones share one registry.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    pub(crate) store: Arc<dyn Store>,
    /// Writes finished executions, batching concurrent ones into one transaction.
    pub(crate) executions: GroupCommit,
    pub(crate) worker_config: WorkerConfig,
    /// Hands out workers: warm ones from the pool, else freshly started.
    pub(crate) workers: WorkerSource,
    pub(crate) runtimes: RuntimeTable,
    pub(crate) limits: Limits,
    pub(crate) workspaces_dir: PathBuf,
    pub(crate) info: EngineInfo,
    pub(crate) live: Mutex<HashMap<SessionId, Arc<LiveSession>>>,
    /// Sessions live or starting, against `limits.max_sessions`.
    pub(crate) occupied_slots: Arc<AtomicUsize>,
    pub(crate) drain: Arc<Drain>,
    /// Wakes the reaper when a session's deadlines may have moved earlier.
    pub(crate) reaper_wake: Arc<Notify>,
    pub(crate) open_mode: bool,
    /// Open mode and no admin or tenant key yet: cleared (and logged) when the first appears.
    pub(crate) open_now: std::sync::atomic::AtomicBool,
    pub(crate) quotas: TenantQuotas,
    /// Held while a claimed session is looked up and, if missing, created.
    pub(crate) claims: tokio::sync::Mutex<()>,
    /// Held while a dead session is brought back (`revival`).
    pub(crate) revivals: tokio::sync::Mutex<()>,
    /// Woken (all waiters) whenever a session leaves the live set.
    pub(crate) session_left: Notify,
    pub(crate) fleet: Option<FleetConfig>,
}

/// What a session's task holds besides its worker (see [`Engine::launch`]).
pub(crate) struct Launch {
    pub worker_config: WorkerConfig,
    pub workspace: PathBuf,
    pub slot: SessionSlot,
    pub tenant_claim: crate::quotas::QuotaClaim,
    /// The session's name proxy (`network`), ended with the session.
    pub egress: Option<corral_egress::SessionProxy>,
}

/// One of the server's `max_sessions` places, held from the start of a create until the
/// session leaves the live set.
pub(crate) struct SessionSlot {
    occupied: Arc<AtomicUsize>,
}

impl SessionSlot {
    pub(crate) fn claim(occupied: &Arc<AtomicUsize>, limit: usize) -> Option<SessionSlot> {
        occupied
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |taken| {
                (taken < limit).then_some(taken + 1)
            })
            .ok()
            .map(|_| SessionSlot {
                occupied: occupied.clone(),
            })
    }
}

impl EngineInner {
    /// What a session holds while it is live: a place in its tenant's session quota and one
    /// of the server's `max_sessions` places (creates, restarts and adoptions alike).
    pub(crate) fn claim_place(
        &self,
        tenant: &str,
    ) -> Result<(crate::quotas::QuotaClaim, SessionSlot), EngineError> {
        let tenant_claim = self.quotas.claim(tenant, QuotaKind::Sessions)?;
        let limit = self.limits.max_sessions;
        let slot = SessionSlot::claim(&self.occupied_slots, limit).ok_or_else(|| {
            measurements::refused("max_sessions");
            EngineError::TooManySessions { limit }
        })?;
        Ok((tenant_claim, slot))
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.occupied.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Engine {
    /// Installs the driver, checks that the interpreter starts, and marks sessions left live
    /// by a previous run as dead (`server restarted`).
    pub async fn start(config: EngineConfig, store: Arc<dyn Store>) -> Result<Engine, EngineError> {
        let runtime_dir = config.data_dir.join("runtime");
        let driver_path = install_driver(&runtime_dir)
            .map_err(|error| EngineError::WorkerStart(error.to_string()))?;
        let interpreter = discover_interpreter(&config.python)
            .await
            .map_err(|error| EngineError::WorkerStart(error.to_string()))?;
        let worker_config = WorkerConfig {
            python: interpreter.executable.clone(),
            interpreter_paths: interpreter.installation_paths.clone(),
            driver_path,
            start_timeout: config.limits.start_timeout,
            sandbox: config.sandbox.clone(),
            session_limits: config.session_limits,
            preload: Vec::new(),
            driver: DriverKind::Python,
            network: None,
            zygote: None,
        };
        let workspaces_dir = config.data_dir.join("workspaces");
        let keeper_dir = config
            .sandbox
            .as_ref()
            .map(|sandbox| sandbox.keeper_dir().to_owned());
        // Workspaces of a previous run belong to sessions that are now dead, except those
        // whose worker is still running (adopted below).
        let left_sessions = crate::adoption::left_session_ids(keeper_dir.as_deref());
        clear_workspaces(config.sandbox.as_deref(), &workspaces_dir, &left_sessions);
        let runtimes = start_runtimes(
            &config.python,
            worker_config.clone(),
            &config.runtimes,
            &config.data_dir,
            &runtime_dir,
            &workspaces_dir.join("probe"),
        )
        .await?;
        let mut runtimes = runtimes;
        if config.pool.zygote {
            for (name, runtime) in runtimes.configs.iter_mut() {
                match start_zygote(runtime, &runtime_dir) {
                    Ok(zygote) => runtime.zygote = zygote,
                    Err(error) => {
                        tracing::warn!(runtime = %name, %error, "the runtime's zygote could not start; its workers start afresh");
                    }
                }
            }
        }

        let info = EngineInfo {
            runtimes: runtimes.infos.clone(),
            unavailable_runtimes: runtimes.unavailable.clone(),
            limits: config.limits.clone(),
            isolation: HostIsolation::probe(config.sandbox.as_deref()),
            session_limits: config.session_limits,
            max_session_limits: config.max_session_limits,
            data_dir: config.data_dir.clone(),
            network: config.network.clone(),
        };
        let reaper_wake = Arc::new(Notify::new());
        let quotas = TenantQuotas::new(
            config.limits.max_sessions_per_tenant,
            config.limits.max_executions_per_tenant,
        );
        let open_now = config.open_mode && !store.has_active_api_keys().await?;
        let mut pool = config.pool.clone();
        pool.min_available_memory_bytes = pool
            .min_available_memory_bytes
            .max(config.limits.min_available_memory_bytes);
        // The pool holds workers of the default runtime, exactly as a create would start them.
        let pool_config = runtimes
            .config(PYTHON_RUNTIME)
            .cloned()
            .unwrap_or_else(|_| worker_config.clone());
        let workers = WorkerSource::new(pool_config, pool, workspaces_dir.clone());
        let inner = Arc::new(EngineInner {
            open_now: std::sync::atomic::AtomicBool::new(open_now),
            executions: GroupCommit::start(store.clone()),
            store,
            worker_config,
            workers,
            runtimes,
            limits: config.limits,
            workspaces_dir,
            info,
            live: Mutex::new(HashMap::new()),
            occupied_slots: Arc::new(AtomicUsize::new(0)),
            drain: Arc::new(Drain::default()),
            reaper_wake: reaper_wake.clone(),
            open_mode: config.open_mode,
            quotas,
            claims: tokio::sync::Mutex::new(()),
            revivals: tokio::sync::Mutex::new(()),
            session_left: Notify::new(),
            fleet: config.fleet,
        });
        let adopted = match &keeper_dir {
            Some(directory) => crate::adoption::take_over(&inner, directory).await,
            None => Vec::new(),
        };
        let engine = Engine::from_inner(inner.clone());
        let (adopted, marked) = engine.settle_previous_run(adopted).await?;
        if adopted > 0 {
            tracing::info!(sessions = adopted, "sessions of the previous run adopted");
        }
        if marked > 0 {
            tracing::info!(
                sessions = marked,
                "sessions of the previous run marked dead"
            );
        }
        // Workspaces kept for workers that could not be taken over after all.
        let unadopted: HashSet<SessionId> = left_sessions
            .into_iter()
            .filter(|id| engine.live(*id).is_none())
            .collect();
        if !unadopted.is_empty() {
            let keep: HashSet<SessionId> = engine.live_map().keys().copied().collect();
            clear_workspaces(config.sandbox.as_deref(), &inner.workspaces_dir, &keep);
        }
        fleet::join(&inner).await?;
        tokio::spawn(run_reaper(Arc::downgrade(&inner), reaper_wake));
        Ok(Engine { inner })
    }

    pub(crate) fn from_inner(inner: Arc<EngineInner>) -> Engine {
        Engine { inner }
    }

    /// Whether [`Engine::shutdown`] has begun (new sessions and executions are refused).
    pub fn is_shutting_down(&self) -> bool {
        self.inner.drain.is_closed()
    }

    pub fn info(&self) -> &EngineInfo {
        &self.inner.info
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub(crate) fn live_map(&self) -> MutexGuard<'_, HashMap<SessionId, Arc<LiveSession>>> {
        self.inner
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn live(&self, id: SessionId) -> Option<Arc<LiveSession>> {
        self.live_map().get(&id).cloned()
    }

    /// Number of sessions with a running worker.
    pub fn live_count(&self) -> usize {
        self.live_map().len()
    }

    /// Starts a session and returns it once its worker is ready (state `idle`).
    pub async fn create_session(
        &self,
        caller: &Principal,
        options: CreateSession,
    ) -> Result<SessionRecord, EngineError> {
        match self.start_session(caller, options, None).await? {
            Started::New(record) => Ok(*record),
            // Only a claimed start can find its claim held.
            Started::Claimed(holder) => self.get_session(caller, holder).await,
        }
    }

    /// [`Engine::create_session`], holding `claim` in the store when given: when a live
    /// session of the tenant (on any node) already holds it, the new worker is ended and
    /// that session's id is the answer.
    async fn start_session(
        &self,
        caller: &Principal,
        options: CreateSession,
        claim: Option<&SessionClaim>,
    ) -> Result<Started, EngineError> {
        let tenant = match caller {
            Principal::Admin => DEFAULT_TENANT.to_owned(),
            Principal::Tenant(tenant) => tenant.clone(),
            Principal::Session { .. } => {
                return Err(EngineError::Forbidden(
                    "a session key cannot create sessions".into(),
                ))
            }
        };
        // Shutdown waits for creations in progress, so none ends up live but unseen.
        let Some(_work) = self.inner.drain.begin() else {
            return Err(EngineError::ShuttingDown);
        };
        let limits = &self.inner.limits;
        let runtime = options.runtime.unwrap_or_else(|| PYTHON_RUNTIME.to_owned());
        let runtime_config = self.inner.runtimes.config(&runtime)?;
        validate_name(options.name.as_deref())?;
        validate_metadata(&options.metadata)?;
        let resources = options.resources.unwrap_or(self.inner.info.session_limits);
        let violations = resources.violations(&self.inner.info.max_session_limits);
        if !violations.is_empty() {
            return Err(EngineError::InvalidInput(format!(
                "resource limits out of range: {}",
                violations.join(", ")
            )));
        }
        let network = options.network.unwrap_or_default();
        self.inner.info.network.check(&network)?;
        if !network.is_none() && runtime_config.sandbox.is_none() {
            // Unsandboxed workers share the host's network: no policy could hold.
            return Err(EngineError::Forbidden(
                "network: allow-lists need the sandbox (this server runs with --insecure-no-sandbox)"
                    .into(),
            ));
        }
        let mut worker_config = runtime_config.clone();
        worker_config.session_limits = resources;
        let prepared = self.inner.info.network.prepare(&network, &[]).await?;
        worker_config.network = prepared.setup.clone();
        let ttl = SessionTtl {
            idle: ttl_within(
                "idle_ttl",
                options.idle_ttl,
                limits.idle_ttl,
                limits.idle_ttl_ceiling,
            )?,
            max: ttl_within(
                "max_ttl",
                options.max_ttl,
                limits.max_ttl,
                limits.max_ttl_ceiling,
            )?,
        };
        if let Some(available) = corral_worker::available_memory_bytes() {
            if available < limits.min_available_memory_bytes {
                measurements::refused("min_available_memory");
                return Err(EngineError::HostMemoryLow {
                    available_mib: available / (1024 * 1024),
                    required_mib: limits.min_available_memory_bytes / (1024 * 1024),
                });
            }
        }
        let (tenant_claim, slot) = self.inner.claim_place(&tenant)?;
        let id = SessionId::new();
        let workspace = self.inner.workspaces_dir.join(id.to_string());
        let start_clock = std::time::Instant::now();
        let (worker, origin) = self
            .inner
            .workers
            .obtain(&worker_config, workspace.clone())
            .await
            .map_err(|error| EngineError::WorkerStart(error.to_string()))?;
        let start_duration = start_clock.elapsed();
        let mut record =
            SessionRecord::new(id, runtime, options.name, options.metadata, ttl, Utc::now());
        record.state = SessionState::Idle;
        record.resources = resources;
        record.network = network;
        record.egress_ports = prepared.egress_ports();
        record.tenant = tenant;
        let refused = match fleet::record_new_session(&self.inner, &record, claim).await {
            Ok(None) => None,
            Ok(Some(holder)) => Some(Ok(Started::Claimed(holder))),
            Err(error) => Some(Err(error)),
        };
        if let Some(answer) = refused {
            let mut worker = worker;
            worker.kill().await;
            worker.remove_workspace();
            return answer;
        }

        self.launch(
            record.clone(),
            worker,
            Launch {
                worker_config,
                workspace,
                slot,
                tenant_claim,
                egress: prepared.proxy,
            },
        );
        self.inner.reaper_wake.notify_one();
        measurements::session_started(start_duration, origin);
        Ok(Started::New(Box::new(record)))
    }

    /// Makes `record` a live session run by `worker`: its registry entry and its task.
    pub(crate) fn launch(&self, record: SessionRecord, worker: Worker, launch: Launch) {
        let id = record.id;
        let count_at_restart = record.execution_count;
        let (job_sender, job_receiver) = mpsc::channel(self.inner.limits.queue_capacity.max(1));
        let (control_sender, control_receiver) = mpsc::unbounded_channel();
        let live = Arc::new(LiveSession {
            record: Mutex::new(record),
            jobs: job_sender,
            signals: tokio::sync::broadcast::channel(SIGNAL_CAPACITY).0,
            count_at_restart: std::sync::atomic::AtomicU64::new(count_at_restart),
            control: control_sender,
            interrupt: Mutex::new(worker.interrupt_handle()),
            close_when_drained: AtomicBool::new(false),
        });
        self.live_map().insert(id, live.clone());
        let Launch {
            worker_config,
            workspace,
            slot,
            tenant_claim,
            egress,
        } = launch;
        let registry = Arc::downgrade(&self.inner);
        let this_session = Arc::downgrade(&live);
        let context = TaskContext {
            store: self.inner.store.clone(),
            executions: self.inner.executions.clone(),
            worker_config,
            workspace,
            interrupt_grace: self.inner.limits.interrupt_grace,
            output_cap_bytes: self.inner.limits.output_cap_bytes,
            stored_output_cap_bytes: self.inner.limits.stored_output_cap_bytes,
            executions_kept: self.inner.limits.executions_kept_per_session,
            on_end: Box::new(move || {
                if let Some(inner) = registry.upgrade() {
                    let mut live_map = inner
                        .live
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    // Only this task's own entry: once a dead session is revived under the same
                    // id, the old task ending late must not unregister the new one.
                    let own = live_map.get(&id).is_some_and(|current| {
                        std::ptr::eq(Arc::as_ptr(current), this_session.as_ptr())
                    });
                    if own {
                        live_map.remove(&id);
                    }
                    drop(live_map);
                    // The ended session's retention period starts now.
                    inner.reaper_wake.notify_one();
                    inner.session_left.notify_waiters();
                }
                drop(slot);
                drop(tenant_claim);
                drop(egress);
            }),
        };
        tokio::spawn(run_session(
            live,
            worker,
            job_receiver,
            control_receiver,
            context,
        ));
    }

    /// The caller's live session holding `claim`, or a new one created with `options` (whose
    /// metadata must carry the claim); the flag says whether it was created. Concurrent
    /// calls for one claim yield one session, on one node or on several: the claim is held
    /// in the store (unique among the tenant's live sessions). The session found may run on
    /// another node of a fleet ([`Engine::runs_here`]).
    pub async fn find_or_create_session(
        &self,
        caller: &Principal,
        claim: &SessionClaim,
        options: CreateSession,
    ) -> Result<(SessionRecord, bool), EngineError> {
        let _claims = self.inner.claims.lock().await;
        if let Some(existing) = self.claimed_session(caller, claim).await? {
            return Ok((existing, false));
        }
        if !claim.is_in(&options.metadata) {
            return Err(EngineError::InvalidInput(format!(
                "the new session's metadata must hold {}.{}",
                claim.namespace, claim.field
            )));
        }
        match self.start_session(caller, options, Some(claim)).await? {
            Started::New(record) => Ok((*record, true)),
            Started::Claimed(holder) => Ok((self.get_session(caller, holder).await?, false)),
        }
    }

    /// The caller's live session holding `claim` on this node, if any (the oldest, should
    /// there be more).
    pub fn find_claimed(&self, caller: &Principal, claim: &SessionClaim) -> Option<SessionRecord> {
        self.live_sessions(caller)
            .into_iter()
            .find(|record| claim.is_held_by(record))
    }

    /// The caller's live session holding `claim` anywhere: on this node, else (in a fleet)
    /// the one the store says holds it, as last stored, which may run on another node.
    pub async fn claimed_session(
        &self,
        caller: &Principal,
        claim: &SessionClaim,
    ) -> Result<Option<SessionRecord>, EngineError> {
        if let Some(here) = self.find_claimed(caller, claim) {
            return Ok(Some(here));
        }
        if self.inner.fleet.is_none() {
            // One node: its registry holds every live session.
            return Ok(None);
        }
        let tenant = caller.tenant().unwrap_or(DEFAULT_TENANT);
        let Some(holder) = self
            .inner
            .store
            .claimed_session(tenant, &claim.key())
            .await?
        else {
            return Ok(None);
        };
        match self.get_session(caller, holder).await {
            Ok(record) if !record.state.is_terminal() && claim.is_held_by(&record) => {
                Ok(Some(record))
            }
            Ok(_) | Err(EngineError::SessionNotFound(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Makes the caller's live session `id` the holder of `claim` in the store (in place of
    /// any claim it held), taking it from the caller's session `from` when given: for a
    /// client that moves an identity (a Jupyter session onto another path or kernel). The
    /// metadata is the caller's to change ([`Engine::update_session`]). `Some(holder)` when
    /// another live session holds the claim: nothing changed.
    pub async fn hold_claim(
        &self,
        caller: &Principal,
        id: SessionId,
        claim: &SessionClaim,
        from: Option<SessionId>,
    ) -> Result<Option<SessionId>, EngineError> {
        let _claims = self.inner.claims.lock().await;
        self.get_session(caller, id).await?;
        if let Some(from) = from {
            self.get_session(caller, from).await?;
        }
        let store = &self.inner.store;
        let key = claim.key();
        let Some(holder) = store.hold_claim(id, &key, from).await? else {
            return Ok(None);
        };
        let still_held = store
            .get_session(holder)
            .await?
            .is_some_and(|stored| claim.is_held_by(&stored));
        if still_held {
            return Ok(Some(holder));
        }
        // The holder's own identity moved on (see `fleet::insert_claimed`).
        store.release_claim(holder, &key).await?;
        Ok(store.hold_claim(id, &key, from).await?)
    }

    /// Whether session `id` runs on this node (in a fleet, a live session found in the
    /// store may run on another; requests about it belong there).
    pub fn runs_here(&self, id: SessionId) -> bool {
        self.live(id).is_some()
    }

    /// What a live session's processes use of the host's memory now (PSS, USS, RSS); `None`
    /// for an ended session.
    pub async fn session_memory(
        &self,
        caller: &Principal,
        id: SessionId,
    ) -> Result<Option<MemoryUsage>, EngineError> {
        let record = self.get_session(caller, id).await?;
        if record.state.is_terminal() {
            return Ok(None);
        }
        let Some(live) = self.live(id) else {
            return Ok(None);
        };
        let handle = live
            .interrupt
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        Ok(tokio::task::spawn_blocking(move || handle.memory_usage())
            .await
            .ok()
            .flatten())
    }

    /// What the warm pool holds now.
    pub fn pool_status(&self) -> PoolStatus {
        self.inner.workers.status()
    }

    /// The warm pool's settings.
    pub fn pool_settings(&self) -> &PoolSettings {
        self.inner.workers.settings()
    }

    /// Live state for gauges: sessions by state, queued executions, worker memory.
    pub fn live_gauges(&self) -> LiveGauges {
        let sessions: Vec<Arc<LiveSession>> = self.live_map().values().cloned().collect();
        let mut gauges = LiveGauges {
            sessions_by_state: SessionState::ALL
                .iter()
                .filter(|state| !state.is_terminal())
                .map(|state| (*state, 0))
                .collect(),
            ..LiveGauges::default()
        };
        for live in sessions {
            let state = live.record().state;
            if let Some(entry) = gauges
                .sessions_by_state
                .iter_mut()
                .find(|(listed, _)| *listed == state)
            {
                entry.1 += 1;
            }
            gauges.queued_executions += live.jobs.max_capacity() - live.jobs.capacity();
            let memory = live
                .interrupt
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .memory_bytes();
            gauges.worker_memory_bytes += memory.unwrap_or(0);
            let usage = live
                .interrupt
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone()
                .memory_usage();
            gauges.worker_memory = gauges.worker_memory.plus(usage.unwrap_or_default());
        }
        gauges.pool = self.inner.workers.status();
        gauges
    }

    /// A session, live or ended, if `caller` may see it (others' sessions are not found).
    pub async fn get_session(
        &self,
        caller: &Principal,
        id: SessionId,
    ) -> Result<SessionRecord, EngineError> {
        let record = match self.live(id) {
            Some(live) => live.snapshot(),
            None => self
                .inner
                .store
                .get_session(id)
                .await?
                .ok_or(EngineError::SessionNotFound(id))?,
        };
        if caller.can_access(&record) {
            Ok(record)
        } else {
            Err(EngineError::SessionNotFound(id))
        }
    }

    /// Every live session (starting, idle or busy) `caller` may see, in creation order.
    pub fn live_sessions(&self, caller: &Principal) -> Vec<SessionRecord> {
        let mut sessions: Vec<SessionRecord> = self
            .live_map()
            .values()
            .map(|session| session.snapshot())
            .filter(|record| caller.can_access(record))
            .collect();
        sessions.sort_by_key(|record| record.id);
        sessions
    }

    /// Sessions in creation order, optionally of one state, paged by `after`.
    pub async fn list_sessions(
        &self,
        caller: &Principal,
        state: Option<SessionState>,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<SessionPage, EngineError> {
        let limit = limit.clamp(1, 1000);
        let sessions = match state {
            // Live states change too often to be stored on every step; the registry is the
            // truth for them (every live session of this process is in it; in a fleet the
            // others' are only in the store).
            Some(state) if !state.is_terminal() && self.inner.fleet.is_none() => {
                let mut live: Vec<SessionRecord> = self
                    .live_map()
                    .values()
                    .map(|session| session.snapshot())
                    .filter(|record| caller.can_access(record))
                    .filter(|record| record.state == state)
                    .filter(|record| after.is_none_or(|after| record.id > after))
                    .collect();
                live.sort_by_key(|record| record.id);
                live.truncate(limit as usize + 1);
                live
            }
            _ => {
                let stored = self
                    .inner
                    .store
                    .list_sessions(&SessionQuery {
                        state,
                        tenant: caller.tenant().map(str::to_owned),
                        after,
                        limit: limit + 1,
                    })
                    .await?;
                stored
                    .into_iter()
                    .map(|record| match self.live(record.id) {
                        Some(live) => live.snapshot(),
                        None => record,
                    })
                    .filter(|record| caller.can_access(record))
                    .collect()
            }
        };
        let mut sessions = sessions;
        let next_after = if sessions.len() > limit as usize {
            sessions.truncate(limit as usize);
            sessions.last().map(|record| record.id)
        } else {
            None
        };
        Ok(SessionPage {
            sessions,
            next_after,
        })
    }

    /// Renames, re-tags or drains a live session.
    pub async fn update_session(
        &self,
        caller: &Principal,
        id: SessionId,
        update: SessionUpdate,
    ) -> Result<SessionRecord, EngineError> {
        if let Some(Some(name)) = &update.name {
            validate_name(Some(name))?;
        }
        if let Some(metadata) = &update.metadata {
            validate_metadata(metadata)?;
        }
        let live = self.require_live(caller, id).await?;
        let record = {
            let mut record = live.record();
            if let Some(name) = update.name {
                record.name = name;
            }
            if let Some(metadata) = update.metadata {
                record.metadata = metadata;
            }
            if let Some(accepting) = update.accepting_executions {
                record.accepting_executions = accepting;
                if accepting {
                    // Accepting again cancels a drain's pending close.
                    live.close_when_drained.store(false, Ordering::SeqCst);
                }
            }
            record.clone()
        };
        self.inner.store.update_session(&record).await?;
        Ok(record)
    }

    /// Drains a live session: it stops accepting executions now (they are refused with
    /// [`EngineError::NotAccepting`]), what is running or queued finishes, and then the
    /// session is closed with reason `drained` — at once when nothing is running or queued.
    /// Accepting executions again (through [`Engine::update_session`]) before the queue runs
    /// empty cancels the close.
    pub async fn drain_session(
        &self,
        caller: &Principal,
        id: SessionId,
    ) -> Result<SessionRecord, EngineError> {
        let live = self.require_live(caller, id).await?;
        let record = {
            let mut record = live.record();
            record.accepting_executions = false;
            live.close_when_drained.store(true, Ordering::SeqCst);
            record.clone()
        };
        self.inner.store.update_session(&record).await?;
        if live.control.send(Control::Drain).is_err() {
            return Err(self.ended_error(id).await);
        }
        Ok(record)
    }

    /// Closes a session (killing any running execution); closing an ended session returns it
    /// unchanged.
    pub async fn close_session(
        &self,
        caller: &Principal,
        id: SessionId,
        reason: &str,
    ) -> Result<SessionRecord, EngineError> {
        let Some(live) = self.live(id) else {
            return self.get_session(caller, id).await;
        };
        if !caller.can_access(&live.snapshot()) {
            return Err(EngineError::SessionNotFound(id));
        }
        let (reply, answer) = oneshot::channel();
        if live
            .control
            .send(Control::Close {
                reason: reason.to_owned(),
                reply,
            })
            .is_err()
        {
            return self.get_session(caller, id).await;
        }
        match answer.await {
            Ok(record) => Ok(record),
            // The task ended another way (e.g. the worker died) before serving the close.
            Err(_) => self.get_session(caller, id).await,
        }
    }

    /// Runs code in a session, after whatever is queued before it, and returns the record.
    pub async fn execute(
        &self,
        caller: &Principal,
        id: SessionId,
        request: ExecRequest,
    ) -> Result<ExecutionRecord, EngineError> {
        self.submit(caller, id, request, None).await?.finish().await
    }

    /// Validates and queues an execution; events are streamed to `events` as they happen,
    /// when given. Errors that can be known up front (not found, closed, queue full, bad
    /// input) come from here; the outcome comes from [`PendingExecution::finish`].
    pub async fn submit(
        &self,
        caller: &Principal,
        id: SessionId,
        request: ExecRequest,
        events: Option<mpsc::UnboundedSender<ExecEvent>>,
    ) -> Result<PendingExecution, EngineError> {
        let io = ExecIo {
            events,
            ..ExecIo::default()
        };
        self.submit_with(caller, id, request, io).await
    }

    /// [`Engine::submit`] with the whole of an interactive client's side of the execution:
    /// its events, the answers to its input requests, and a switch that cancels it while it
    /// still waits in the queue.
    pub async fn submit_with(
        &self,
        caller: &Principal,
        id: SessionId,
        request: ExecRequest,
        io: ExecIo,
    ) -> Result<PendingExecution, EngineError> {
        let limits = &self.inner.limits;
        if request.code.contains('\0') {
            return Err(EngineError::InvalidInput(
                "code must not contain NUL characters".into(),
            ));
        }
        if request.code.len() > limits.max_code_bytes {
            return Err(EngineError::InvalidInput(format!(
                "code is {} bytes; the limit is {}",
                request.code.len(),
                limits.max_code_bytes
            )));
        }
        let timeout = match request.timeout {
            None => limits.default_exec_timeout,
            Some(timeout) if timeout.is_zero() => {
                return Err(EngineError::InvalidInput("timeout must be positive".into()))
            }
            Some(timeout) if timeout > limits.max_exec_timeout => {
                return Err(EngineError::InvalidInput(format!(
                    "timeout {}s exceeds the maximum of {}s",
                    timeout.as_secs_f64(),
                    limits.max_exec_timeout.as_secs_f64()
                )))
            }
            Some(timeout) => timeout,
        };
        let live = self.require_live(caller, id).await?;
        if !live.record().accepting_executions {
            return Err(EngineError::NotAccepting(id));
        }
        let Some(work) = self.inner.drain.begin() else {
            return Err(EngineError::ShuttingDown);
        };
        let tenant = live.record().tenant.clone();
        let in_flight = self.inner.quotas.claim(&tenant, QuotaKind::Executions)?;
        let in_fleet = fleet::claim_execution(&self.inner, &tenant).await?;
        let (reply, job_answer) = oneshot::channel();
        let job = Job::Execute(ExecJob {
            code: request.code,
            timeout,
            stdin: request.stdin,
            store_history: request.store_history,
            events: io.events,
            input: io.input,
            cancelled: io.cancelled,
            on_failure: io.on_failure,
            reply,
        });
        match live.jobs.try_send(job) {
            Ok(()) => {
                // The execution counts as unfinished work until the session task answers,
                // whether or not the caller still waits for it.
                let (forward, answer) = oneshot::channel();
                tokio::spawn(async move {
                    let outcome = job_answer.await.ok();
                    drop(in_flight);
                    // Given back before the caller hears, so its next execution finds room.
                    if let Some(in_fleet) = in_fleet {
                        in_fleet.release().await;
                    }
                    drop(work);
                    let _ = forward.send(outcome);
                });
                Ok(PendingExecution {
                    engine: self.clone(),
                    session_id: id,
                    answer,
                })
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                measurements::refused("execution_queue");
                Err(EngineError::QueueFull {
                    id,
                    capacity: limits.queue_capacity,
                })
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(self.ended_error(id).await),
        }
    }

    /// Access to a live session's workspace files (they are transferred inside its sandbox).
    pub async fn workspace_files(
        &self,
        caller: &Principal,
        id: SessionId,
    ) -> Result<WorkspaceFiles, EngineError> {
        let live = self.require_live(caller, id).await?;
        let handle = live
            .interrupt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Ok(handle.workspace_files(
            &self.inner.worker_config,
            self.inner.workspaces_dir.join(id.to_string()),
        ))
    }

    /// Sends an interrupt to the session's running execution (a no-op when idle).
    pub async fn interrupt(
        &self,
        caller: &Principal,
        id: SessionId,
    ) -> Result<SessionRecord, EngineError> {
        let live = self.require_live(caller, id).await?;
        live.interrupt
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .interrupt();
        Ok(live.snapshot())
    }

    /// Replaces the session's interpreter with a fresh one (same id, state lost, history
    /// kept). A dead session is revived with a fresh worker; a closed one stays closed
    /// ([`EngineError::SessionNotRunning`]).
    pub async fn restart(
        &self,
        caller: &Principal,
        id: SessionId,
    ) -> Result<SessionRecord, EngineError> {
        let live = match self.require_live(caller, id).await {
            Ok(live) => live,
            Err(EngineError::SessionNotRunning {
                state: SessionState::Dead,
                ..
            }) => return self.revive(caller, id).await,
            Err(error) => return Err(error),
        };
        let (reply, answer) = oneshot::channel();
        if live.control.send(Control::Restart { reply }).is_err() {
            return Err(self.ended_error(id).await);
        }
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(self.ended_error(id).await),
        }
    }

    /// Marks the session active now, so its idle TTL counts from now; `idle_ttl` also
    /// replaces the session's idle TTL (within the operator's ceiling).
    pub async fn refresh(
        &self,
        caller: &Principal,
        id: SessionId,
        idle_ttl: Option<Duration>,
    ) -> Result<SessionRecord, EngineError> {
        let limits = &self.inner.limits;
        let idle_ttl = idle_ttl
            .map(|ttl| ttl_within("idle_ttl", Some(ttl), ttl, limits.idle_ttl_ceiling))
            .transpose()?;
        let live = self.require_live(caller, id).await?;
        let record = {
            let mut record = live.record();
            record.last_activity_at = Utc::now();
            if let Some(idle) = idle_ttl {
                record.ttl.idle = idle;
            }
            record.clone()
        };
        self.inner.store.update_session(&record).await?;
        self.inner.reaper_wake.notify_one();
        Ok(record)
    }

    pub async fn get_execution(
        &self,
        caller: &Principal,
        id: SessionId,
        execution_count: u64,
    ) -> Result<ExecutionRecord, EngineError> {
        self.get_session(caller, id).await?;
        self.inner
            .store
            .get_execution(id, execution_count)
            .await?
            .ok_or(EngineError::ExecutionNotFound {
                session_id: id,
                execution_count,
            })
    }

    /// When each stored execution of a session ran and how it ended (no code or output).
    pub async fn execution_timings(
        &self,
        caller: &Principal,
        id: SessionId,
    ) -> Result<Vec<ExecutionTiming>, EngineError> {
        self.get_session(caller, id).await?;
        Ok(self.inner.store.list_execution_timings(id).await?)
    }

    pub async fn list_executions(
        &self,
        caller: &Principal,
        id: SessionId,
        after: Option<u64>,
        limit: u32,
    ) -> Result<ExecutionPage, EngineError> {
        self.get_session(caller, id).await?;
        let limit = limit.clamp(1, 1000);
        let mut executions = self
            .inner
            .store
            .list_executions(id, after, limit + 1)
            .await?;
        let next_after = if executions.len() > limit as usize {
            executions.truncate(limit as usize);
            executions.last().map(|execution| execution.execution_count)
        } else {
            None
        };
        Ok(ExecutionPage {
            executions,
            next_after,
        })
    }

    /// The live session, if `caller` may reach it; otherwise not found, or why it ended.
    pub(crate) async fn require_live(
        &self,
        caller: &Principal,
        id: SessionId,
    ) -> Result<Arc<LiveSession>, EngineError> {
        match self.live(id) {
            Some(live) if caller.can_access(&live.snapshot()) => {
                let record = live.snapshot();
                // Still registered while its task records the end: already not running.
                if record.state.is_terminal() {
                    return Err(EngineError::SessionNotRunning {
                        id,
                        state: record.state,
                        reason: record.state_reason,
                    });
                }
                Ok(live)
            }
            Some(_) => Err(EngineError::SessionNotFound(id)),
            None => {
                let record = self.get_session(caller, id).await?;
                Err(EngineError::SessionNotRunning {
                    id,
                    state: record.state,
                    reason: record.state_reason,
                })
            }
        }
    }

    /// The error for a session that is not live: not found, or its terminal state.
    pub(crate) async fn ended_error(&self, id: SessionId) -> EngineError {
        match self.inner.store.get_session(id).await {
            Ok(Some(record)) => EngineError::SessionNotRunning {
                id,
                state: record.state,
                reason: record.state_reason,
            },
            Ok(None) => EngineError::SessionNotFound(id),
            Err(error) => EngineError::Store(error),
        }
    }
}

/// Called by the session's task when an execution did not end `ok`, before the next one in
/// the queue starts.
pub type OnFailure = Box<dyn FnOnce() + Send + Sync>;

/// An interactive client's side of one execution (see [`Engine::submit_with`]); every part
/// is optional.
#[derive(Default)]
pub struct ExecIo {
    /// Receives the execution's events as they happen.
    pub events: Option<mpsc::UnboundedSender<ExecEvent>>,
    /// Answers to input requests, in order (the request's `stdin` must be
    /// [`corral_core::StdinMode::Requested`]; without answers, reading input is refused).
    pub input: Option<mpsc::UnboundedReceiver<String>>,
    /// Once set, the execution is skipped if it has not started yet
    /// ([`EngineError::ExecutionCancelled`]).
    pub cancelled: Option<Arc<AtomicBool>>,
    /// Runs when the execution fails (an error, an interrupt, a timeout), before anything
    /// queued after it starts: e.g. to cancel what the client queued behind it (Jupyter's
    /// `stop_on_error`).
    pub on_failure: Option<OnFailure>,
}

/// A queued execution; [`PendingExecution::finish`] waits for its record.
pub struct PendingExecution {
    engine: Engine,
    session_id: SessionId,
    /// `None` when the session ended without answering.
    answer: oneshot::Receiver<Option<Result<ExecutionRecord, EngineError>>>,
}

impl PendingExecution {
    pub async fn finish(self) -> Result<ExecutionRecord, EngineError> {
        match self.answer.await {
            Ok(Some(result)) => result,
            Ok(None) | Err(_) => Err(self.engine.ended_error(self.session_id).await),
        }
    }
}

/// A requested TTL checked against the operator's ceiling; `None` is the default.
/// Removes the workspaces under `directory` except those of `keep` (unmounting each first
/// when the sandbox mounted it).
fn clear_workspaces(
    sandbox: Option<&Sandbox>,
    directory: &std::path::Path,
    keep: &HashSet<SessionId>,
) {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return;
    };
    for entry in entries.flatten() {
        let kept = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<SessionId>().ok())
            .is_some_and(|id| keep.contains(&id));
        if kept {
            continue;
        }
        let path = entry.path();
        if let Some(sandbox) = sandbox {
            sandbox.release_workspace(&path);
        }
        let removed = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(error) = removed {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), %error, "could not clear an old workspace");
            }
        }
    }
}

fn ttl_within(
    field: &str,
    requested: Option<Duration>,
    default: Duration,
    ceiling: Duration,
) -> Result<Duration, EngineError> {
    match requested {
        None => Ok(default),
        Some(ttl) if ttl.is_zero() => Err(EngineError::InvalidInput(format!(
            "{field} must be a positive number of seconds"
        ))),
        Some(ttl) if ttl > ceiling => Err(EngineError::InvalidInput(format!(
            "{field} {}s exceeds the maximum of {}s",
            ttl.as_secs_f64(),
            ceiling.as_secs_f64()
        ))),
        Some(ttl) => Ok(ttl),
    }
}

fn validate_name(name: Option<&str>) -> Result<(), EngineError> {
    match name {
        Some(name) if name.chars().count() > MAX_NAME_CHARS => Err(EngineError::InvalidInput(
            format!("name is longer than {MAX_NAME_CHARS} characters"),
        )),
        Some(name) if name.chars().any(char::is_control) => Err(EngineError::InvalidInput(
            "name must not contain control characters".into(),
        )),
        _ => Ok(()),
    }
}

fn validate_metadata(
    metadata: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), EngineError> {
    let size = serde_json::to_vec(metadata)
        .map(|bytes| bytes.len())
        .unwrap_or(usize::MAX);
    if size > MAX_METADATA_BYTES {
        return Err(EngineError::InvalidInput(format!(
            "metadata is {size} bytes serialised; the limit is {MAX_METADATA_BYTES}"
        )));
    }
    Ok(())
}
