//! One worker process: start, liveness, interrupt, shutdown, kill.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral_protocol::{read_frame, write_frame, WorkerEvent, WorkerRequest, PROTOCOL_VERSION};
use corral_sandbox::{
    spawn_worker, AdoptedChannels, JoinTarget, KeeperLink, Lifetime, Sandbox, SessionCgroup,
    SessionLimits, WorkerCommand, WorkerPlacement,
};
use tokio::io::AsyncReadExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::process::Child;
use tokio::sync::mpsc;

use crate::files::{FileTarget, WorkspaceFiles};
use crate::runtime::{driver_invocation, worker_environment, DriverKind};
use crate::WorkerError;

/// How to start workers; shared by all sessions.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The Python interpreter (`python3` or a path to a venv's python).
    pub python: PathBuf,
    /// The installed driver script (see [`crate::install_driver`]).
    pub driver_path: PathBuf,
    pub start_timeout: Duration,
    /// The sandbox every worker runs in; `None` runs workers as plain child processes (only
    /// when the operator disabled sandboxing).
    pub sandbox: Option<Arc<Sandbox>>,
    /// Resource limits of each worker's sandbox.
    pub session_limits: SessionLimits,
    /// Directories of the interpreter's installation the sandbox must show the session.
    pub interpreter_paths: Vec<PathBuf>,
    /// Modules the driver imports before it says `ready` (the warm pool's preload list).
    pub preload: Vec<String>,
    /// Which driver `driver_path` is and what runs it (`runtime.rs`).
    pub driver: DriverKind,
    /// The session's network stack (sandboxed workers only); `None`: loopback only.
    pub network: Option<corral_sandbox::NetworkSetup>,
    /// The runtime's zygote (`zygote.rs`), when its sandboxed Python workers are forked from
    /// one instead of started afresh.
    pub zygote: Option<Arc<corral_sandbox::Zygote>>,
}

/// Distinguishes the sandbox resources (cgroup, root directory, keeper socket) of workers:
/// `<server pid>-<n>`, with `n` counting up from the microseconds since the epoch at the
/// server's first worker, so a later server with a reused pid never takes the name of a
/// worker it adopted.
fn next_sandbox_name() -> String {
    static NEXT: std::sync::OnceLock<std::sync::atomic::AtomicU64> = std::sync::OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(1);
        std::sync::atomic::AtomicU64::new(micros)
    });
    format!(
        "{}-{}",
        std::process::id(),
        next.fetch_add(1, Ordering::Relaxed)
    )
}

/// What the worker said about itself when it became ready.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerInfo {
    pub pid: u32,
    pub language: String,
    pub language_version: String,
}

/// How a worker process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerExit {
    /// A sentence for the session's `state_reason`, e.g. `worker exited with status 1`.
    pub description: String,
}

impl WorkerExit {
    /// From the exit code a launcher reported over its keeper channel (`None`: the launcher
    /// itself was killed before it could say).
    fn from_reported_code(code: Option<i32>) -> Self {
        let description = match code {
            Some(code) => format!("worker exited with status {code}"),
            None => "worker was killed with its launcher".to_owned(),
        };
        WorkerExit { description }
    }

    pub(crate) fn from_status(status: std::io::Result<std::process::ExitStatus>) -> Self {
        use std::os::unix::process::ExitStatusExt;
        let description = match status {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => format!("worker exited with status {code}"),
                (None, Some(signal)) => format!("worker was killed by signal {signal}"),
                (None, None) => "worker exited".to_owned(),
            },
            Err(error) => format!("worker state unknown: {error}"),
        };
        WorkerExit { description }
    }
}

/// Sends interrupts to a worker from outside the task that drives it.
#[derive(Clone, Debug)]
pub struct InterruptHandle {
    pid: u32,
    alive: Arc<AtomicBool>,
    requested: Arc<AtomicBool>,
    /// Whether an exec is outstanding (being sent, or sent and `done` not yet received).
    executing: Arc<AtomicBool>,
    /// Whether the outstanding exec's frame has been written to the worker.
    exec_sent: Arc<AtomicBool>,
    /// An interrupt asked for before the exec's frame was written: whoever takes it (this
    /// handle once the frame is out, or the executor right after writing it) sends the
    /// signal, exactly once. A driver that has no exec yet ignores a signal as "between
    /// cells", so sending it earlier would lose it.
    interrupt_deferred: Arc<AtomicBool>,
    cgroup: Option<SessionCgroup>,
}

impl InterruptHandle {
    /// Access to the workspace of this worker's sandbox, for file transfers.
    pub fn workspace_files(
        &self,
        config: &WorkerConfig,
        host_workspace: PathBuf,
    ) -> WorkspaceFiles {
        let helper = config
            .sandbox
            .as_ref()
            .map(|sandbox| sandbox.launcher().to_owned())
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from("corral"));
        let target = match &config.sandbox {
            Some(_) => FileTarget::Sandbox {
                launcher_pid: self.pid,
            },
            None => FileTarget::Host {
                workspace: host_workspace,
            },
        };
        WorkspaceFiles { helper, target }
    }

    /// Memory the worker uses now, in bytes: its cgroup's usage when sandboxed, else the
    /// resident set of its main process. `None` when neither can be read.
    pub fn memory_bytes(&self) -> Option<u64> {
        if let Some(cgroup) = &self.cgroup {
            return cgroup.memory_current_bytes();
        }
        if !self.alive.load(Ordering::SeqCst) {
            return None;
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
    }

    /// PSS, USS and RSS of the worker's processes now (every process in its cgroup and their
    /// parents outside it, i.e. its launcher and a zygote-born worker's reaper, when
    /// sandboxed; else the worker's process tree). `None` once the worker is gone.
    pub fn memory_usage(&self) -> Option<corral_core::MemoryUsage> {
        if !self.alive.load(Ordering::SeqCst) {
            return None;
        }
        let pids: Vec<u32> = match &self.cgroup {
            // The session's processes, and its launcher and reaper (outside the cgroup, but
            // there for this session alone).
            Some(cgroup) => corral_sandbox::with_outside_parents(
                cgroup
                    .pids()
                    .into_iter()
                    .filter_map(|pid| u32::try_from(pid).ok())
                    .collect(),
            ),
            None => corral_sandbox::process_tree(self.pid),
        };
        Some(corral_sandbox::memory_of_processes(pids))
    }

    /// SIGINT to the worker while an execution is outstanding: the running cell (or the one
    /// whose request is on its way) gets `KeyboardInterrupt`. While idle it is a no-op: a
    /// signal then could land on the next execution.
    pub fn interrupt(&self) {
        if !self.alive.load(Ordering::SeqCst) || !self.executing.load(Ordering::SeqCst) {
            return;
        }
        self.requested.store(true, Ordering::SeqCst);
        self.interrupt_deferred.store(true, Ordering::SeqCst);
        if self.exec_sent.load(Ordering::SeqCst)
            && self.interrupt_deferred.swap(false, Ordering::SeqCst)
        {
            if let Err(error) = corral_sandbox::interrupt(self.pid) {
                tracing::warn!(pid = self.pid, %error, "could not interrupt worker");
            }
        }
    }
}

/// How the server learns that a worker ended: from its own child process, and for a
/// sandboxed worker also from the launcher's keeper channel (the only way for an adopted
/// worker, which is not this server's child).
#[derive(Debug)]
pub(crate) struct WorkerProcess {
    child: Option<Child>,
    keeper: Option<KeeperLink>,
}

/// How a worker process ended, before it is described.
pub(crate) enum ProcessEnd {
    Status(std::io::Result<std::process::ExitStatus>),
    Reported(Option<i32>),
}

impl WorkerProcess {
    /// Resolves when the worker's process has ended. Cancel-safe.
    pub(crate) async fn ended(&mut self) -> ProcessEnd {
        match (&mut self.child, &mut self.keeper) {
            (Some(child), _) => ProcessEnd::Status(child.wait().await),
            (None, Some(keeper)) => ProcessEnd::Reported(keeper.exited().await),
            (None, None) => ProcessEnd::Reported(None),
        }
    }

    /// Whether it has ended, checked now without waiting.
    fn ended_now(&mut self) -> Option<ProcessEnd> {
        match (&mut self.child, &mut self.keeper) {
            (Some(child), _) => match child.try_wait() {
                Ok(Some(status)) => Some(ProcessEnd::Status(Ok(status))),
                Ok(None) => None,
                Err(error) => Some(ProcessEnd::Status(Err(error))),
            },
            (None, Some(keeper)) => keeper.exited_now().map(ProcessEnd::Reported),
            (None, None) => Some(ProcessEnd::Reported(None)),
        }
    }
}

/// A worker's three channels, as a spawn or an adoption yields them.
struct WorkerChannels {
    control: tokio::net::UnixStream,
    stdout: tokio::net::unix::pipe::Receiver,
    stderr: tokio::net::unix::pipe::Receiver,
}

/// A running worker process and the host ends of its channels.
#[derive(Debug)]
pub struct Worker {
    pub(crate) process: WorkerProcess,
    pub(crate) info: WorkerInfo,
    pub(crate) control_writer: OwnedWriteHalf,
    pub(crate) events: mpsc::Receiver<Result<WorkerEvent, String>>,
    pub(crate) stdout: mpsc::Receiver<Vec<u8>>,
    pub(crate) stderr: mpsc::Receiver<Vec<u8>>,
    pub(crate) stdout_open: bool,
    pub(crate) stderr_open: bool,
    pub(crate) events_open: bool,
    pub(crate) exited: Option<WorkerExit>,
    pub(crate) alive: Arc<AtomicBool>,
    pub(crate) interrupt_requested: Arc<AtomicBool>,
    /// Set while an exec is outstanding; interrupts are only sent then.
    pub(crate) executing: Arc<AtomicBool>,
    pub(crate) exec_sent: Arc<AtomicBool>,
    pub(crate) interrupt_deferred: Arc<AtomicBool>,
    workspace: PathBuf,
    sandbox: Option<SandboxResources>,
    /// Kept after the worker is gone, to release the workspace.
    sandbox_handle: Option<Arc<Sandbox>>,
    /// The launcher's keeper socket (renamed after the session it serves) and its inode, so
    /// that only this worker's own socket is removed when it ends.
    keeper_socket: Option<(PathBuf, u64)>,
}

/// What the sandbox holds for one worker until it is gone.
#[derive(Debug)]
struct SandboxResources {
    sandbox: Arc<Sandbox>,
    name: String,
    cgroup: Option<SessionCgroup>,
    keeper_socket: PathBuf,
}

impl Worker {
    /// Starts a worker with `workspace` (created if missing) as its working directory and
    /// waits until it reports ready: forked by the runtime's zygote when it has one (a
    /// zygote that fails is reported and a fresh worker started instead).
    pub async fn start(config: &WorkerConfig, workspace: PathBuf) -> Result<Worker, WorkerError> {
        if crate::zygote::joins(config) {
            match Worker::start_as(config, workspace.clone(), true).await {
                Err(WorkerError::Join(reason)) => {
                    tracing::warn!(%reason, "the zygote could not start a worker; starting one afresh");
                }
                other => return other,
            }
        }
        Worker::start_as(config, workspace, false).await
    }

    async fn start_as(
        config: &WorkerConfig,
        workspace: PathBuf,
        join: bool,
    ) -> Result<Worker, WorkerError> {
        let workspace_error = |source| WorkerError::Workspace {
            path: workspace.display().to_string(),
            source,
        };
        let mut join_target = None;
        let (command, sandbox) = match &config.sandbox {
            None => {
                std::fs::create_dir_all(&workspace).map_err(workspace_error)?;
                let (program, args) =
                    driver_invocation(config, config.driver_path.as_os_str(), Path::to_owned);
                let command = WorkerCommand {
                    program,
                    args,
                    env: worker_environment(config, workspace.as_os_str()),
                    working_dir: workspace.clone(),
                };
                (command, None)
            }
            Some(sandbox) => {
                let uid = sandbox.prepare_workspace(&workspace, &config.session_limits)?;
                if config.network.is_some() {
                    // Present before the interpreter starts, so `sys.path` keeps it.
                    let packages = workspace.join(crate::runtime::PACKAGES_DIR);
                    if std::fs::create_dir_all(&packages).is_ok() {
                        let _ = std::os::unix::fs::chown(&packages, Some(uid), Some(uid));
                    }
                }
                let sandbox_driver = config.driver.sandbox_path();
                let (program, args) =
                    driver_invocation(config, sandbox_driver.as_ref(), resolve_program);
                let inside = WorkerCommand {
                    program,
                    args,
                    env: worker_environment(config, corral_sandbox::sandbox_workspace().as_ref()),
                    working_dir: corral_sandbox::sandbox_workspace().into(),
                };
                let name = next_sandbox_name();
                let wrapped = sandbox.wrap(
                    &inside,
                    WorkerPlacement {
                        name: name.clone(),
                        workspace: workspace.clone(),
                        workspace_uid: uid,
                        readonly_files: vec![(
                            config.driver_path.clone(),
                            sandbox_driver.to_owned(),
                        )],
                        exposed_paths: config.interpreter_paths.clone(),
                        limits: config.session_limits,
                        network: config.network.clone(),
                        join,
                    },
                )?;
                join_target = join.then(|| JoinTarget {
                    cgroup_procs: wrapped
                        .cgroup
                        .as_ref()
                        .map(SessionCgroup::procs_files)
                        .unwrap_or_default(),
                    privileged: sandbox.privileged(),
                    limits: config.session_limits,
                    env: inside.env.clone(),
                    working_dir: inside.working_dir.clone(),
                    driver_path: sandbox_driver.to_owned(),
                });
                let resources = SandboxResources {
                    sandbox: sandbox.clone(),
                    name,
                    cgroup: wrapped.cgroup,
                    keeper_socket: wrapped.keeper_socket,
                };
                (wrapped.command, Some(resources))
            }
        };
        let lifetime = match (&sandbox, &join_target) {
            (Some(_), Some(_)) => Lifetime::Joined,
            (Some(_), None) => Lifetime::Kept,
            (None, _) => Lifetime::WithServer,
        };
        let keeper_socket = sandbox
            .as_ref()
            .map(|resources: &SandboxResources| resources.keeper_socket.clone());
        let mut spawned = match spawn_worker(&command, lifetime) {
            Ok(spawned) => spawned,
            Err(error) => {
                if let Some(resources) = sandbox {
                    resources.release_later();
                }
                return Err(error.into());
            }
        };
        let joining = spawned.joining.take();
        let mut worker = Worker::from_channels(
            WorkerProcess {
                child: Some(spawned.child),
                keeper: spawned.keeper,
            },
            WorkerInfo {
                pid: spawned.pid,
                language: String::new(),
                language_version: String::new(),
            },
            WorkerChannels {
                control: spawned.control,
                stdout: spawned.stdout,
                stderr: spawned.stderr,
            },
            workspace,
            sandbox,
            config,
        );
        if let (Some(joining), Some(target), Some(zygote)) =
            (joining, join_target, config.zygote.as_ref())
        {
            if let Err(error) = joining.join(zygote, target, config.start_timeout).await {
                worker.kill().await;
                return Err(WorkerError::Join(error.to_string()));
            }
        }
        match tokio::time::timeout(config.start_timeout, worker.wait_ready()).await {
            Ok(Ok(())) => {
                if let Some(cgroup) = worker.cgroup() {
                    cgroup.set_cpu_priority(corral_sandbox::CpuPriority::Normal);
                }
                // The launcher listens before it lets the worker start: the socket exists.
                worker.keeper_socket =
                    keeper_socket.and_then(|path| socket_inode(&path).map(|inode| (path, inode)));
                worker.name_keeper_after_workspace();
                Ok(worker)
            }
            Ok(Err(error)) => {
                worker.kill().await;
                Err(error)
            }
            Err(_) => {
                worker.kill().await;
                Err(WorkerError::StartTimeout(config.start_timeout))
            }
        }
    }

    /// A worker whose channels were taken over from its launcher (`adoption.rs` resumes it).
    pub(crate) fn from_adopted(
        config: &WorkerConfig,
        channels: AdoptedChannels,
        keeper_socket: PathBuf,
        workspace: PathBuf,
        info: WorkerInfo,
    ) -> Worker {
        let AdoptedChannels {
            launcher_pid,
            name,
            control,
            stdout,
            stderr,
            keeper,
        } = channels;
        let sandbox = config.sandbox.as_ref().map(|sandbox| SandboxResources {
            sandbox: sandbox.clone(),
            cgroup: sandbox.adopted_cgroup(&name),
            name,
            keeper_socket: keeper_socket.clone(),
        });
        let mut worker = Worker::from_channels(
            WorkerProcess {
                child: None,
                keeper: Some(keeper),
            },
            WorkerInfo {
                pid: launcher_pid,
                ..info
            },
            WorkerChannels {
                control,
                stdout,
                stderr,
            },
            workspace,
            sandbox,
            config,
        );
        worker.keeper_socket = socket_inode(&keeper_socket).map(|inode| (keeper_socket, inode));
        worker
    }

    /// The one place a `Worker` is assembled, for a fresh spawn and an adoption alike: the
    /// channels' readers start here.
    fn from_channels(
        process: WorkerProcess,
        info: WorkerInfo,
        channels: WorkerChannels,
        workspace: PathBuf,
        sandbox: Option<SandboxResources>,
        config: &WorkerConfig,
    ) -> Worker {
        let (control_reader, control_writer) = channels.control.into_split();
        Worker {
            process,
            info,
            control_writer,
            events: spawn_frame_reader(control_reader),
            stdout: spawn_pipe_reader(channels.stdout),
            stderr: spawn_pipe_reader(channels.stderr),
            stdout_open: true,
            stderr_open: true,
            events_open: true,
            exited: None,
            alive: Arc::new(AtomicBool::new(true)),
            interrupt_requested: Arc::new(AtomicBool::new(false)),
            executing: Arc::new(AtomicBool::new(false)),
            exec_sent: Arc::new(AtomicBool::new(false)),
            interrupt_deferred: Arc::new(AtomicBool::new(false)),
            workspace,
            sandbox,
            sandbox_handle: config.sandbox.clone(),
            keeper_socket: None,
        }
    }

    /// Asks the worker's launcher to end it and release everything it holds, as for an
    /// orphan (an adopted worker no session wants any more), and waits for the end.
    pub async fn terminate(mut self) {
        if let Some(keeper) = &mut self.process.keeper {
            keeper.terminate().await;
        }
        let end = self.process.ended().await;
        let exit = self.describe_exit(end);
        self.mark_exited(exit);
        self.remove_workspace();
    }

    async fn wait_ready(&mut self) -> Result<(), WorkerError> {
        loop {
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(Ok(WorkerEvent::Ready { protocol, language, language_version, pid })) => {
                        if protocol != PROTOCOL_VERSION {
                            return Err(WorkerError::ProtocolVersion { found: protocol, expected: PROTOCOL_VERSION });
                        }
                        self.info.language = language;
                        self.info.language_version = language_version;
                        if pid != 0 && pid != self.info.pid {
                            tracing::debug!(spawned = self.info.pid, reported = pid, "worker reports another pid");
                        }
                        return Ok(());
                    }
                    Some(Ok(other)) => tracing::debug!(?other, "frame before ready ignored"),
                    Some(Err(error)) => return Err(WorkerError::ExitedDuringStart(error)),
                    None => {
                        let exit = self.wait_exit().await;
                        return Err(WorkerError::ExitedDuringStart(exit.description));
                    }
                },
                // Start-up errors (e.g. a bad --python) show on stderr; keep draining so the
                // worker never blocks on a full pipe.
                chunk = self.stderr.recv(), if self.stderr_open => match chunk {
                    Some(bytes) => tracing::debug!(stderr = %String::from_utf8_lossy(&bytes), "worker start-up output"),
                    None => self.stderr_open = false,
                },
                chunk = self.stdout.recv(), if self.stdout_open => if chunk.is_none() { self.stdout_open = false },
            }
        }
    }

    pub fn info(&self) -> &WorkerInfo {
        &self.info
    }

    pub fn interrupt_handle(&self) -> InterruptHandle {
        InterruptHandle {
            pid: self.info.pid,
            alive: self.alive.clone(),
            requested: self.interrupt_requested.clone(),
            executing: self.executing.clone(),
            exec_sent: self.exec_sent.clone(),
            interrupt_deferred: self.interrupt_deferred.clone(),
            cgroup: self
                .sandbox
                .as_ref()
                .and_then(|resources| resources.cgroup.clone()),
        }
    }

    /// Resolves when the worker process has exited (for watching an idle worker); meanwhile
    /// drains and drops whatever background processes print between executions.
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn idle_until_exit(&mut self) -> WorkerExit {
        loop {
            if let Some(exit) = &self.exited {
                return exit.clone();
            }
            tokio::select! {
                end = self.process.ended() => {
                    let exit = self.describe_exit(end);
                    return self.mark_exited(exit);
                }
                chunk = self.stdout.recv(), if self.stdout_open => {
                    if chunk.is_none() { self.stdout_open = false }
                }
                chunk = self.stderr.recv(), if self.stderr_open => {
                    if chunk.is_none() { self.stderr_open = false }
                }
                event = self.events.recv(), if self.events_open => match event {
                    Some(event) => tracing::debug!(?event, "frame from an idle worker ignored"),
                    None => self.events_open = false,
                },
            }
        }
    }

    /// Waits for the process to exit (without draining anything).
    async fn wait_exit(&mut self) -> WorkerExit {
        if let Some(exit) = &self.exited {
            return exit.clone();
        }
        let end = self.process.ended().await;
        let exit = self.describe_exit(end);
        self.mark_exited(exit)
    }

    /// The worker's cgroup, when sandboxed with one.
    pub fn cgroup(&self) -> Option<&SessionCgroup> {
        self.sandbox
            .as_ref()
            .and_then(|resources| resources.cgroup.as_ref())
    }

    /// Why the worker ended: the memory limit when the OOM killer struck, else its status.
    pub(crate) fn describe_exit(&self, end: ProcessEnd) -> WorkerExit {
        let oom = self
            .sandbox
            .as_ref()
            .and_then(|resources| resources.cgroup.as_ref())
            .is_some_and(SessionCgroup::oom_killed);
        if oom {
            return WorkerExit {
                description: "memory limit exceeded".to_owned(),
            };
        }
        match end {
            ProcessEnd::Status(status) => WorkerExit::from_status(status),
            ProcessEnd::Reported(code) => WorkerExit::from_reported_code(code),
        }
    }

    pub(crate) fn mark_exited(&mut self, exit: WorkerExit) -> WorkerExit {
        self.alive.store(false, Ordering::SeqCst);
        // Whatever the worker left behind in its group goes with it.
        if let Err(error) = corral_sandbox::kill_process_group(self.info.pid) {
            tracing::debug!(%error, "process group already gone");
        }
        if let Some(resources) = self.sandbox.take() {
            resources.release_later();
        }
        self.remove_keeper_socket();
        self.exited = Some(exit.clone());
        exit
    }

    /// Whether the process is known to have exited.
    pub fn has_exited(&self) -> bool {
        self.exited.is_some()
    }

    pub(crate) async fn send(&mut self, request: &WorkerRequest) -> Result<(), WorkerError> {
        write_frame(&mut self.control_writer, request)
            .await
            .map_err(WorkerError::from)
    }

    /// Asks the worker to exit, waits up to `grace`, then kills its process group.
    pub async fn shutdown(mut self, grace: Duration) {
        if self.exited.is_none() {
            let polite = async {
                let _ = self.send(&WorkerRequest::Shutdown).await;
                self.process.ended().await
            };
            if tokio::time::timeout(grace, polite).await.is_err() {
                tracing::debug!(pid = self.info.pid, "worker ignored shutdown; killing");
            }
        }
        self.kill().await;
    }

    /// Kills the worker's whole process group and reaps the worker.
    pub async fn kill(&mut self) {
        self.alive.store(false, Ordering::SeqCst);
        if let Err(error) = corral_sandbox::kill_process_group(self.info.pid) {
            tracing::debug!(%error, "kill of process group failed");
        }
        if let Some(cgroup) = self
            .sandbox
            .as_ref()
            .and_then(|resources| resources.cgroup.as_ref())
        {
            cgroup.kill_all();
        }
        if self.exited.is_none() {
            if let Some(child) = &mut self.process.child {
                let _ = child.start_kill();
            }
            let end = self.process.ended().await;
            self.exited = Some(match end {
                ProcessEnd::Status(status) => WorkerExit::from_status(status),
                ProcessEnd::Reported(code) => WorkerExit::from_reported_code(code),
            });
        }
        if let Some(resources) = self.sandbox.take() {
            resources.release_later();
        }
        self.remove_keeper_socket();
    }

    /// Lets go of the worker without ending it (a server stopping with `shutdown_mode =
    /// "detach"`): its launcher keeps it, orphaned, for the next server to adopt.
    pub fn detach(self) {
        tracing::debug!(
            pid = self.info.pid,
            "worker left running for the next server"
        );
        // Dropping a write half would shut the socket down for writing, which the worker
        // reads as the end of its channel: let it go without that. Dropping the keeper link
        // tells the launcher it has no owner; the launcher's process handle does not kill on
        // drop.
        let Worker { control_writer, .. } = self;
        control_writer.forget();
    }

    /// Whether the process has exited, checked now without waiting (a pool worker about to be
    /// handed over).
    pub(crate) fn exited_now(&mut self) -> bool {
        match self.process.ended_now() {
            Some(end) => {
                let exit = self.describe_exit(end);
                self.mark_exited(exit);
                true
            }
            None => false,
        }
    }

    /// Moves the worker's workspace on the host to `to` (a pool worker handed to a session).
    /// The sandbox holds the workspace itself open, so the worker's `/workspace` is unchanged;
    /// only the host path that names it (a link to the mount, or the directory) moves.
    pub(crate) fn move_workspace(&mut self, to: PathBuf) -> std::io::Result<()> {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(&self.workspace, &to)?;
        self.workspace = to;
        self.name_keeper_after_workspace();
        Ok(())
    }

    /// Names the launcher's keeper socket after the session this worker serves (its
    /// workspace's name is the session id), which is how a restarted server finds the
    /// session's worker. A newer worker of the same session (a restart) takes the name over.
    fn name_keeper_after_workspace(&mut self) {
        let Some((current, inode)) = &self.keeper_socket else {
            return;
        };
        let Some(session) = self
            .workspace
            .file_name()
            .and_then(|name| name.to_str())
            .filter(|name| name.parse::<corral_core::SessionId>().is_ok())
        else {
            return;
        };
        let Some(directory) = current.parent() else {
            return;
        };
        let named = directory.join(format!("{session}.sock"));
        if named == *current {
            return;
        }
        match std::fs::rename(current, &named) {
            Ok(()) => self.keeper_socket = Some((named, *inode)),
            Err(error) => {
                tracing::warn!(%error, "could not name a worker's keeper socket; it cannot be adopted after a restart");
            }
        }
    }

    /// Removes the keeper socket if it is still this worker's own.
    fn remove_keeper_socket(&mut self) {
        if let Some((path, inode)) = self.keeper_socket.take() {
            if socket_inode(&path) == Some(inode) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// Removes the worker's workspace directory (after the worker is gone).
    pub fn remove_workspace(&self) {
        if let Some(sandbox) = &self.sandbox_handle {
            sandbox.release_workspace(&self.workspace);
            return;
        }
        if let Err(error) = std::fs::remove_dir_all(&self.workspace) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.workspace.display(), %error, "could not remove workspace");
            }
        }
    }
}

impl SandboxResources {
    /// Kills what is left in the cgroup and removes it and the root directory once empty
    /// (processes of a torn-down PID namespace take a moment to go).
    fn release_later(self) {
        let release = move || {
            for _ in 0..100 {
                let removed = match &self.cgroup {
                    Some(cgroup) => {
                        cgroup.kill_all();
                        cgroup.remove()
                    }
                    None => true,
                };
                if removed {
                    self.sandbox.release_root(&self.name);
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            tracing::warn!(name = %self.name, "a session cgroup could not be removed");
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(release)),
            Err(_) => release(),
        }
    }
}

/// The inode of the file at `path`, if there is one.
fn socket_inode(path: &Path) -> Option<u64> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|metadata| std::os::unix::fs::MetadataExt::ino(&metadata))
}

/// An absolute path for `program`: as given when it has a `/`, else found on the server's
/// `PATH` (inside the sandbox the server's `PATH` lookup is not available).
fn resolve_program(program: &std::path::Path) -> PathBuf {
    if program.is_absolute() {
        return program.to_owned();
    }
    if program.components().count() > 1 {
        return std::env::current_dir()
            .map(|cwd| cwd.join(program))
            .unwrap_or_else(|_| program.to_owned());
    }
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|directory| directory.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| program.to_owned())
}

/// Bytes the control socket is read ahead by.
const FRAME_READ_BUFFER: usize = 64 * 1024;

/// Reads control frames into a channel until the socket ends or a frame is malformed. The
/// socket is read through a buffer, so frames written together (a result and `done`) take one
/// read, not two per frame.
fn spawn_frame_reader(reader: OwnedReadHalf) -> mpsc::Receiver<Result<WorkerEvent, String>> {
    let (sender, receiver) = mpsc::channel(64);
    let mut reader = tokio::io::BufReader::with_capacity(FRAME_READ_BUFFER, reader);
    tokio::spawn(async move {
        loop {
            match read_frame::<_, WorkerEvent>(&mut reader).await {
                Ok(event) => {
                    if sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                Err(corral_protocol::FrameError::Closed) => return,
                Err(error) => {
                    let _ = sender.send(Err(error.to_string())).await;
                    return;
                }
            }
        }
    });
    receiver
}

/// Reads a pipe continuously (so the writer never blocks on a full pipe) into a channel.
fn spawn_pipe_reader<R>(mut pipe: R) -> mpsc::Receiver<Vec<u8>>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match pipe.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(count) => {
                    if sender.send(buffer[..count].to_vec()).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    receiver
}
