//! The warm pool: fully sandboxed, idle workers started ahead of demand, so that starting a
//! session is a hand-over instead of a spawn.
//!
//! A pool worker is an ordinary [`Worker`] started through the same path as any other
//! (`Worker::start`: the sandbox's namespaces, cgroup, uid, workspace and seccomp filter are
//! all in place before the driver says `ready`), with a workspace named `pool-N`. Handing it
//! over renames that workspace to the session's (the sandbox holds it open, so the worker keeps
//! its `/workspace`), and wakes the refill task, which starts replacements one at a time in the
//! background. The pool never waits for a worker on behalf of a caller: when it is empty, or
//! the caller asks for a configuration the pool does not hold (other limits, another
//! interpreter), the caller gets a freshly started worker.
//!
//! The pool shrinks to `idle_size` after `shrink_after` without a hand-over, and never starts a
//! worker that would take the host below its memory floor or the pool above its memory budget.
//!
//! Knows nothing of sessions: the engine asks for "a worker with this configuration in this
//! workspace" ([`WorkerSource::obtain`]) and does not learn where it came from, except for
//! metrics ([`Origin`]).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::worker::{Worker, WorkerConfig};
use crate::WorkerError;

/// How the warm pool behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    /// Idle workers kept ready while sessions are being created (0 turns the pool off).
    pub size: usize,
    /// Idle workers kept once nothing was handed over for `shrink_after`.
    pub idle_size: usize,
    /// How long without a hand-over before the pool shrinks to `idle_size`.
    pub shrink_after: Duration,
    /// The most memory the pool's idle workers may use together.
    pub max_memory_bytes: u64,
    /// The pool never starts a worker while the host has less memory available than this.
    pub min_available_memory_bytes: u64,
    /// Modules every pool worker imports before it says `ready`.
    pub preload: Vec<String>,
    /// Whether each sandboxed Python runtime's workers are forked by a zygote.
    pub zygote: bool,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            size: 4,
            idle_size: 1,
            shrink_after: Duration::from_secs(600),
            max_memory_bytes: 256 * 1024 * 1024,
            min_available_memory_bytes: 256 * 1024 * 1024,
            preload: Vec::new(),
            zygote: false,
        }
    }
}

/// Where a worker handed out by [`WorkerSource::obtain`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Taken from the warm pool.
    Pool,
    /// Started for this caller.
    Fresh,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Pool => "pool",
            Origin::Fresh => "fresh",
        }
    }
}

/// What the pool holds now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// Idle workers ready to be handed over.
    pub ready: usize,
    /// Workers being started for the pool.
    pub starting: usize,
    /// What the pool refills to now (`size`, or `idle_size` after a quiet period).
    pub target: usize,
    /// Memory the ready workers use together, in bytes (their cgroups, or their resident set
    /// without cgroups).
    pub memory_bytes: u64,
    /// Workers handed over since the server started.
    pub handed_over: u64,
    /// Workers started because the pool had none to give (or not of the kind asked for).
    pub started_fresh: u64,
    /// Times the pool was short but did not start a worker, for the host's memory floor or
    /// its own memory budget.
    pub held_back: u64,
}

/// Hands out workers: from the warm pool when it holds one of the kind asked for, else freshly
/// started. Cheap to clone.
#[derive(Clone)]
pub struct WorkerSource {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    /// The configuration pool workers are started with; only requests for the same
    /// interpreter and limits are served from the pool.
    config: WorkerConfig,
    settings: PoolSettings,
    /// Where pool workers' workspaces live until they are handed over.
    workspaces_dir: PathBuf,
    state: Mutex<PoolState>,
    /// Wakes the refill task.
    wake: Notify,
    next_name: AtomicU64,
    handed_over: AtomicU64,
    started_fresh: AtomicU64,
    held_back: AtomicU64,
}

struct PoolState {
    ready: VecDeque<Worker>,
    starting: usize,
    last_hand_over: Instant,
    closed: bool,
    /// Memory one pool worker was last seen to use, for the budget check before starting one.
    worker_memory_estimate: u64,
}

impl WorkerSource {
    /// A source whose pool holds workers started with `config` (workspaces under
    /// `workspaces_dir`), refilled by a background task on the current tokio runtime.
    pub fn new(config: WorkerConfig, settings: PoolSettings, workspaces_dir: PathBuf) -> Self {
        let mut config = config;
        config.preload = settings.preload.clone();
        let inner = Arc::new(PoolInner {
            config,
            settings,
            workspaces_dir,
            state: Mutex::new(PoolState {
                ready: VecDeque::new(),
                starting: 0,
                last_hand_over: Instant::now(),
                closed: false,
                worker_memory_estimate: 0,
            }),
            wake: Notify::new(),
            next_name: AtomicU64::new(1),
            handed_over: AtomicU64::new(0),
            started_fresh: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        });
        if inner.settings.size > 0 {
            tokio::spawn(refill(Arc::downgrade(&inner)));
        }
        WorkerSource { inner }
    }

    /// A worker started with `config`, working in `workspace`: a pool worker moved there when
    /// the pool holds one started with the same configuration, else a fresh one.
    pub async fn obtain(
        &self,
        config: &WorkerConfig,
        workspace: PathBuf,
    ) -> Result<(Worker, Origin), WorkerError> {
        if self.inner.serves(config) {
            while let Some(mut worker) = self.inner.take_ready() {
                self.inner.wake.notify_one();
                if worker.has_exited() || worker.exited_now() {
                    tracing::debug!("a pool worker had exited; trying the next");
                    worker.kill().await;
                    worker.remove_workspace();
                    continue;
                }
                match worker.move_workspace(workspace.clone()) {
                    Ok(()) => {
                        self.inner.handed_over.fetch_add(1, Ordering::Relaxed);
                        return Ok((worker, Origin::Pool));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "could not hand over a pool worker's workspace");
                        worker.kill().await;
                        worker.remove_workspace();
                    }
                }
            }
        }
        self.inner.started_fresh.fetch_add(1, Ordering::Relaxed);
        let worker = Worker::start(config, workspace).await?;
        Ok((worker, Origin::Fresh))
    }

    /// What the pool holds now.
    pub fn status(&self) -> PoolStatus {
        let state = self.inner.lock();
        PoolStatus {
            ready: state.ready.len(),
            starting: state.starting,
            target: self.inner.target(&state),
            memory_bytes: state.ready_memory_bytes(),
            handed_over: self.inner.handed_over.load(Ordering::Relaxed),
            started_fresh: self.inner.started_fresh.load(Ordering::Relaxed),
            held_back: self.inner.held_back.load(Ordering::Relaxed),
        }
    }

    /// The pool's settings.
    pub fn settings(&self) -> &PoolSettings {
        &self.inner.settings
    }

    /// Stops refilling and ends every idle worker (at server shutdown).
    pub async fn close(&self) {
        let workers: Vec<Worker> = {
            let mut state = self.inner.lock();
            state.closed = true;
            state.ready.drain(..).collect()
        };
        self.inner.wake.notify_one();
        for mut worker in workers {
            worker.kill().await;
            worker.remove_workspace();
        }
    }
}

impl PoolState {
    /// Memory the ready workers use together (their cgroups, or resident sets).
    fn ready_memory_bytes(&self) -> u64 {
        self.ready
            .iter()
            .filter_map(|worker| worker.interrupt_handle().memory_bytes())
            .sum()
    }
}

impl PoolInner {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a worker asked for with `config` may come from the pool.
    fn serves(&self, config: &WorkerConfig) -> bool {
        self.settings.size > 0
            && config.driver == self.config.driver
            && config.driver_path == self.config.driver_path
            && config.python == self.config.python
            && config.session_limits == self.config.session_limits
            && config.network.is_none()
            && config.sandbox.is_some() == self.config.sandbox.is_some()
    }

    fn take_ready(&self) -> Option<Worker> {
        let mut state = self.lock();
        let worker = state.ready.pop_front()?;
        state.last_hand_over = Instant::now();
        Some(worker)
    }

    fn target(&self, state: &PoolState) -> usize {
        if state.last_hand_over.elapsed() >= self.settings.shrink_after {
            self.settings.idle_size.min(self.settings.size)
        } else {
            self.settings.size
        }
    }

    /// Whether starting one more pool worker keeps the host above its memory floor and the
    /// pool within its budget.
    fn memory_allows_another(&self, state: &PoolState) -> bool {
        let estimate = state.worker_memory_estimate;
        if state.ready_memory_bytes() + estimate > self.settings.max_memory_bytes {
            return false;
        }
        match crate::available_memory_bytes() {
            Some(available) => {
                available.saturating_sub(estimate) >= self.settings.min_available_memory_bytes
            }
            None => true,
        }
    }
}

/// Waits until a freshly started worker has finished loading (the driver answers requests
/// only after its start-up imports and the preload list), so a session handed this worker
/// runs its first cell at once.
async fn warm_up(mut worker: Worker, timeout: Duration) -> Result<Worker, WorkerError> {
    let question = corral_core::CodeQuery::IsComplete {
        code: "1".to_owned(),
    };
    let loaded = worker.query(question, timeout).await;
    // One silent execution outside the history runs the execute path once (its first run
    // pays for code paths and caches the interpreter has not touched yet), so the session's
    // first cell is as quick as its later ones. It binds nothing in the session's namespace.
    let exercised = match loaded {
        Ok(_) => {
            let outcome = worker
                .execute(
                    crate::ExecSpec {
                        code: "None".to_owned(),
                        execution_count: 0,
                        timeout,
                        interrupt_grace: timeout,
                        output_cap_bytes: 1024,
                        stdin: corral_core::StdinMode::Empty,
                        store_history: false,
                    },
                    None,
                    None,
                )
                .await;
            match (outcome.status, outcome.worker_exit) {
                (corral_core::ExecutionStatus::Ok, None) => Ok(()),
                (status, exit) => Err(format!(
                    "its warm-up execution ended {} ({})",
                    status.as_str(),
                    exit.map(|exit| exit.description).unwrap_or_default()
                )),
            }
        }
        Err(error) => Err(error.to_string()),
    };
    match exercised {
        Ok(()) => Ok(worker),
        Err(error) => {
            worker.kill().await;
            worker.remove_workspace();
            Err(WorkerError::ExitedDuringStart(format!(
                "the worker did not finish loading: {error}"
            )))
        }
    }
}

/// What the refill task does next.
enum Step {
    Start,
    Trim(Vec<Worker>),
    /// Nothing to do until woken or until the quiet period may end.
    Wait(Duration),
    Stop,
}

/// Keeps the pool at its target: starts one worker at a time while it is short (and memory
/// allows), ends surplus workers once it shrinks. Ends with the pool.
async fn refill(pool: std::sync::Weak<PoolInner>) {
    /// How long to wait before trying again after a start failed or memory was short.
    const BACKOFF: Duration = Duration::from_secs(1);
    /// A replacement starts this long after a hand-over, so that starting it (a fork, an exec
    /// and an interpreter's start-up) does not compete for the CPU with the new session's
    /// first requests, which usually follow at once.
    const REFILL_DELAY: Duration = Duration::from_millis(25);
    /// The longest the task sleeps holding the pool, so it ends soon after the pool is gone.
    const LONGEST_WAIT: Duration = Duration::from_secs(30);
    loop {
        let Some(inner) = pool.upgrade() else {
            return;
        };
        let step = {
            let mut state = inner.lock();
            let target = inner.target(&state);
            if state.closed {
                Step::Stop
            } else if state.ready.len() > target {
                let surplus = state.ready.len() - target;
                Step::Trim(state.ready.drain(..surplus).collect())
            } else if state.ready.len() + state.starting < target {
                let since_hand_over = state.last_hand_over.elapsed();
                if since_hand_over < REFILL_DELAY {
                    Step::Wait(REFILL_DELAY - since_hand_over)
                } else if inner.memory_allows_another(&state) {
                    state.starting += 1;
                    Step::Start
                } else {
                    inner.held_back.fetch_add(1, Ordering::Relaxed);
                    Step::Wait(BACKOFF)
                }
            } else {
                let quiet_ends = inner
                    .settings
                    .shrink_after
                    .saturating_sub(state.last_hand_over.elapsed());
                Step::Wait(if quiet_ends.is_zero() {
                    LONGEST_WAIT
                } else {
                    quiet_ends
                })
            }
        };
        match step {
            Step::Stop => return,
            Step::Trim(workers) => {
                for mut worker in workers {
                    worker.kill().await;
                    worker.remove_workspace();
                }
            }
            Step::Wait(duration) => {
                let _ =
                    tokio::time::timeout(duration.min(LONGEST_WAIT), inner.wake.notified()).await;
            }
            Step::Start => {
                let name = inner.next_name.fetch_add(1, Ordering::Relaxed);
                let workspace = inner.workspaces_dir.join(format!("pool-{name}"));
                let started = match Worker::start(&inner.config, workspace).await {
                    Ok(worker) => warm_up(worker, inner.config.start_timeout).await,
                    Err(error) => Err(error),
                };
                let failed = {
                    let mut state = inner.lock();
                    state.starting -= 1;
                    match started {
                        Ok(worker) if !state.closed => {
                            if let Some(memory) = worker.interrupt_handle().memory_bytes() {
                                state.worker_memory_estimate = memory;
                            }
                            state.ready.push_back(worker);
                            None
                        }
                        Ok(worker) => Some(Ok(worker)),
                        Err(error) => Some(Err(error)),
                    }
                };
                match failed {
                    None => {}
                    Some(Ok(mut worker)) => {
                        worker.kill().await;
                        worker.remove_workspace();
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, "could not start a worker for the warm pool");
                        let _ = tokio::time::timeout(BACKOFF, inner.wake.notified()).await;
                    }
                }
            }
        }
    }
}
