//! The sandbox launcher: the code behind `corral sandbox-init`, a small single-threaded
//! process the server starts for each worker.
//!
//! The launcher (on the host) clones an init process into new user, PID, mount, network, IPC
//! and UTS namespaces, writes its uid/gid maps, moves it into the session's cgroup (init then
//! enters a cgroup namespace of its own) and forwards signals to it. It keeps the worker's
//! channels and outlives the server (`keeper`): a restarted server adopts the worker through
//! it, and an orphan nobody adopts is ended after the adoption timeout. When the session ends
//! the launcher removes its cgroup and root directory. The init process assembles a read-only view of the host with a private
//! `/workspace`, `/tmp`, `/dev` and `/proc`, pivots into it, brings up loopback, and starts the
//! worker with no capabilities, `no_new_privs` and the seccomp filter; it then reaps orphans
//! and exits with the worker's status, which tears the namespace down with everything in it.
//!
//! Knows nothing of sessions or the worker protocol.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Gid, Pid, Uid};

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::cgroup::SessionCgroup;
use crate::keeper::{self, LauncherKeeper, OwnerEvent};
use crate::policy::{LaunchPolicy, SANDBOX_WORKSPACE};
use crate::{launcher_network, seccomp, sys_view};

/// Exit status of a launcher or init process that failed before the worker started.
const SETUP_FAILED: i32 = 125;
/// Stack for the cloned init process (it only runs setup code, then waits).
const INIT_STACK_BYTES: usize = 1 << 20;
/// Top-level host directories replaced by the sandbox's own.
const REPLACED_TOP_LEVEL: [&str; 7] = [
    "proc",
    "sys",
    "dev",
    "run",
    "tmp",
    "workspace",
    "lost+found",
];
/// Directories below the top level replaced by empty ones (sockets and scratch files live
/// there).
const REPLACED_BELOW: [&str; 2] = ["var/tmp", "var/run"];
/// Device nodes bound into the sandbox's `/dev`.
const DEVICES: [&str; 5] = ["null", "zero", "full", "random", "urandom"];

#[derive(Debug, thiserror::Error)]
enum LaunchError {
    #[error("bad policy: {0}")]
    Policy(#[from] serde_json::Error),
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("capabilities: {0}")]
    Capabilities(String),
    #[error("{0}")]
    Network(#[from] launcher_network::NetworkError),
}

fn sys<T>(what: impl FnOnce() -> String, result: nix::Result<T>) -> Result<T, LaunchError> {
    result.map_err(|source| LaunchError::Sys {
        what: what(),
        source,
    })
}

fn io<T>(what: impl FnOnce() -> String, result: std::io::Result<T>) -> Result<T, LaunchError> {
    result.map_err(|source| LaunchError::Io {
        what: what(),
        source,
    })
}

/// Entry point of `corral sandbox-init <policy-json>`; returns the process exit code.
pub fn launcher_main(policy_json: &str) -> i32 {
    match run_launcher(policy_json) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("corral sandbox: {error}");
            SETUP_FAILED
        }
    }
}

fn forwarded_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGCHLD);
    set
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Installs a no-op handler (so PID 1 can receive the signal at all) and blocks the signals
/// that are then taken synchronously with `sigwait`.
fn take_signals_synchronously() -> Result<(), LaunchError> {
    let action = SigAction::new(
        SigHandler::Handler(ignore_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in forwarded_signals().iter() {
        // SAFETY: the handler does nothing, so it is async-signal-safe.
        sys(|| format!("sigaction {signal}"), unsafe {
            sigaction(signal, &action)
        })?;
    }
    sys(
        || "blocking signals".to_owned(),
        forwarded_signals().thread_block(),
    )
}

/// Waits for `child`, forwarding SIGINT and SIGTERM to it and reaping any other child;
/// returns the exit code that reports `child`'s end (128 + signal when killed).
fn forward_until_exit(child: Pid) -> Result<i32, LaunchError> {
    let set = forwarded_signals();
    loop {
        let signal = sys(|| "sigwait".to_owned(), set.wait())?;
        match signal {
            Signal::SIGINT | Signal::SIGTERM => {
                let _ = kill(child, signal);
            }
            _ => loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) if pid == child => return Ok(code),
                    Ok(WaitStatus::Signaled(pid, signal, _)) if pid == child => {
                        return Ok(128 + signal as i32)
                    }
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => continue,
                }
            },
        }
    }
}

fn run_launcher(policy_json: &str) -> Result<i32, LaunchError> {
    // Only fds 0-3 (stdin, the output pipes, the control socket) go on to the session; 4-7
    // are the keeper's (the channels' host ends and the owner's connection).
    crate::process::close_descriptors_from(keeper::FIRST_FOREIGN_FD);
    let policy: LaunchPolicy = serde_json::from_str(policy_json)?;
    let filters = seccomp::session_filters()?;
    take_signals_synchronously()?;
    let (go_read, go_write) = sys(|| "pipe".to_owned(), nix::unistd::pipe())?;
    let mut stack = vec![0u8; INIT_STACK_BYTES];
    // The cgroup namespace is entered by init itself once the launcher has moved it into the
    // session's cgroups (so they are the namespace's root); the launcher stays outside them,
    // free to remove them when the session ends.
    let flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    let init = {
        let policy = &policy;
        let filters = &filters;
        let go_read = &go_read;
        let go_write_raw = go_write.as_raw_fd();
        let callback = Box::new(move || {
            // The child does not need the write end; closing it lets it see the parent die.
            let _ = nix::unistd::close(go_write_raw);
            init_main(policy, go_read, filters) as isize
        });
        // SAFETY: this process is single-threaded (it is the freshly exec'd launcher), so the
        // child may allocate and run arbitrary code; the stack outlives the child's use of it
        // because the child never returns into this frame (it exits from `init_main`'s
        // caller inside `clone`), and SIGCHLD is requested so `waitpid` sees it.
        sys(|| "clone into new namespaces".to_owned(), unsafe {
            nix::sched::clone(callback, &mut stack, flags, Some(libc::SIGCHLD))
        })?
    };
    drop(go_read);
    if policy.join {
        // The server learns which process to join the worker into; init keeps its own copy.
        let said = nix::unistd::write(
            // SAFETY: the server placed the join socket at this number before exec (see
            // `process::spawn_worker`); it is borrowed only for this write.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(keeper::JOIN_FD) },
            format!("init {init}\n").as_bytes(),
        );
        let _ = nix::unistd::close(keeper::JOIN_FD);
        if let Err(source) = said {
            let _ = kill(init, Signal::SIGKILL);
            let _ = waitpid(init, None);
            release(&policy, true);
            return Err(LaunchError::Sys {
                what: "naming init on the join socket".to_owned(),
                source,
            });
        }
    }
    let prepared = write_id_maps(init, &policy).and_then(|()| {
        for procs in &policy.cgroup_procs {
            io(
                || format!("moving the session into cgroup {}", procs.display()),
                std::fs::write(procs, init.to_string()),
            )?;
        }
        io(
            || format!("listening on {}", policy.keeper_socket.display()),
            LauncherKeeper::new(
                &policy.keeper_socket,
                policy
                    .keeper_socket
                    .file_stem()
                    .map(|stem| stem.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                Duration::from_secs(policy.adoption_timeout_seconds),
            ),
        )
    });
    let mut keeper = match prepared {
        Ok(keeper) => keeper,
        Err(error) => {
            let _ = kill(init, Signal::SIGKILL);
            let _ = waitpid(init, None);
            release(&policy, true);
            return Err(error);
        }
    };
    // The session's network stack, when its policy allows anything: ends with this process.
    let _network = match policy.network.as_ref() {
        None => None,
        Some(setup) => match launcher_network::start_slirp(init, setup) {
            Ok(stack) => Some(stack),
            Err(error) => {
                let _ = kill(init, Signal::SIGKILL);
                let _ = waitpid(init, None);
                release(&policy, true);
                return Err(error.into());
            }
        },
    };
    sys(
        || "releasing init".to_owned(),
        nix::unistd::write(&go_write, b"g"),
    )?;
    drop(go_write);
    // The launcher keeps nothing of the worker's own ends once the worker runs.
    for descriptor in [0, 3] {
        let _ = nix::unistd::close(descriptor);
    }
    let code = keep_until_exit(init, &mut keeper)?;
    keeper.report_exit(code);
    release(&policy, keeper.ends_as_orphan());
    Ok(code)
}

/// Serves the keeper channel while the session's init runs: forwards SIGINT and SIGTERM,
/// hands the channels to a server that connects, ends the session when its owner asks or
/// when it has been orphaned for the adoption timeout; returns the exit code that reports
/// init's end (128 + signal when killed).
fn keep_until_exit(init: Pid, keeper: &mut LauncherKeeper) -> Result<i32, LaunchError> {
    let signals = sys(
        || "signalfd".to_owned(),
        SignalFd::with_flags(
            &forwarded_signals(),
            SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
        ),
    )?;
    let mut killed = false;
    loop {
        if let Some(code) = reap(init)? {
            return Ok(code);
        }
        let now = Instant::now();
        if !killed && keeper.should_end(now) {
            let _ = kill(init, Signal::SIGKILL);
            killed = true;
        }
        let timeout = match (killed, keeper.poll_timeout(now)) {
            // SIGCHLD wakes the loop; the bound only guards against a lost wake-up.
            (true, _) => PollTimeout::from(100u16),
            (false, Some(wait)) => PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX),
            (false, None) => PollTimeout::NONE,
        };
        let [signal_ready, listener_ready, owner_ready] = poll_readable(
            [
                Some(signals.as_fd()),
                keeper.listener_fd(),
                keeper.owner_fd(),
            ],
            timeout,
        )?;
        if signal_ready {
            while let Ok(Some(info)) = signals.read_signal() {
                let signal = Signal::try_from(info.ssi_signo as i32);
                if let Ok(signal @ (Signal::SIGINT | Signal::SIGTERM)) = signal {
                    let _ = kill(init, signal);
                }
            }
        }
        if listener_ready {
            keeper.accept();
        }
        if owner_ready {
            if let OwnerEvent::Terminate = keeper.read_owner() {
                let _ = kill(init, Signal::SIGKILL);
                killed = true;
            }
        }
    }
}

/// Waits up to `timeout` until one of `fds` (the `None`s left out) is readable, or a signal
/// interrupts the wait; says which are.
fn poll_readable<const N: usize>(
    fds: [Option<std::os::fd::BorrowedFd<'_>>; N],
    timeout: PollTimeout,
) -> Result<[bool; N], LaunchError> {
    let mut polled: Vec<PollFd> = Vec::with_capacity(N);
    let mut at = [None; N];
    for (slot, fd) in at.iter_mut().zip(fds) {
        if let Some(fd) = fd {
            polled.push(PollFd::new(fd, PollFlags::POLLIN));
            *slot = Some(polled.len() - 1);
        }
    }
    match poll(&mut polled, timeout) {
        Ok(_) | Err(nix::Error::EINTR) => {}
        Err(source) => {
            return Err(LaunchError::Sys {
                what: "poll".to_owned(),
                source,
            })
        }
    }
    Ok(at.map(|index| index.is_some_and(|index| polled[index].any().unwrap_or(false))))
}

/// Init's exit code once it has ended (128 + signal when killed); other children are reaped.
fn reap(init: Pid) -> Result<Option<i32>, LaunchError> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == init => return Ok(Some(code)),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == init => {
                return Ok(Some(128 + signal as i32))
            }
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            // Init was the only child: gone without a status we saw.
            Err(nix::Error::ECHILD) => return Ok(Some(SETUP_FAILED)),
            Err(source) => {
                return Err(LaunchError::Sys {
                    what: "waitpid".to_owned(),
                    source,
                })
            }
        }
    }
}

/// When no server owns the session any more (orphaned, or ended at its owner's request),
/// releases what it leaves on the host once its namespace is gone: anything left in its
/// cgroups and the cgroups themselves, its root directory and its workspace mount. An owner
/// releases them itself.
fn release(policy: &LaunchPolicy, orphan: bool) {
    // An owner reads the cgroups (did the OOM killer strike?) and releases them itself.
    if !orphan {
        return;
    }
    if let Some(cgroup) =
        SessionCgroup::from_procs_files(&policy.cgroup_procs, policy.cgroup_version)
    {
        // Processes of a torn-down PID namespace take a moment to go: bounded retries.
        for _ in 0..100 {
            cgroup.kill_all();
            if cgroup.remove() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = std::fs::remove_dir(&policy.root_dir);
    if let Some(mount_point) = &policy.workspace_mount {
        let _ = umount2(mount_point, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(mount_point);
    }
}

fn write_id_maps(init: Pid, policy: &LaunchPolicy) -> Result<(), LaunchError> {
    let proc_dir = PathBuf::from(format!("/proc/{init}"));
    if !policy.privileged_id_maps {
        io(
            || "writing setgroups".to_owned(),
            std::fs::write(proc_dir.join("setgroups"), "deny"),
        )?;
    }
    io(
        || "writing uid_map".to_owned(),
        std::fs::write(
            proc_dir.join("uid_map"),
            format!("0 {} 1\n", policy.host_uid),
        ),
    )?;
    io(
        || "writing gid_map".to_owned(),
        std::fs::write(
            proc_dir.join("gid_map"),
            format!("0 {} 1\n", policy.host_gid),
        ),
    )
}

/// The namespace's init process.
fn init_main(policy: &LaunchPolicy, go: &OwnedFd, filters: &[seccompiler::BpfProgram]) -> i32 {
    match run_init(policy, go, filters) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("corral sandbox init: {error}");
            SETUP_FAILED
        }
    }
}

fn run_init(
    policy: &LaunchPolicy,
    go: &OwnedFd,
    filters: &[seccompiler::BpfProgram],
) -> Result<i32, LaunchError> {
    let mut byte = [0u8; 1];
    let read = sys(
        || "waiting for id maps".to_owned(),
        nix::unistd::read(go.as_raw_fd(), &mut byte),
    )?;
    if read != 1 {
        return Ok(SETUP_FAILED);
    }
    // The keeper's descriptors are the launcher's alone.
    for descriptor in [
        keeper::KEPT_CONTROL_FD,
        keeper::KEPT_STDOUT_FD,
        keeper::KEPT_STDERR_FD,
        keeper::OWNER_FD,
    ] {
        let _ = nix::unistd::close(descriptor);
    }
    // The launcher has moved this process into the session's cgroups: they become the
    // namespace's root, so `/proc/self/cgroup` shows no host paths.
    sys(
        || "entering a cgroup namespace".to_owned(),
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP),
    )?;
    sys(
        || "pdeathsig".to_owned(),
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL),
    )?;
    // Still with the host identity: open everything the sandbox is built from, since the
    // session's own uid may not be able to reach it (a data directory under /root, say).
    let sources = Sources::open(policy)?;
    sys(
        || "making mounts private".to_owned(),
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        ),
    )?;
    mount_tmpfs(
        &policy.root_dir,
        "size=1m,mode=0755,uid=0,gid=0",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )?;
    sys(
        || "entering the new root".to_owned(),
        nix::unistd::chdir(&policy.root_dir),
    )?;
    if policy.privileged_id_maps {
        sys(|| "setgroups".to_owned(), nix::unistd::setgroups(&[]))?;
    }
    sys(
        || "setresgid".to_owned(),
        nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0)),
    )?;
    sys(
        || "setresuid".to_owned(),
        nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)),
    )?;
    sys(
        || "sethostname".to_owned(),
        nix::unistd::sethostname("corral"),
    )?;
    build_filesystem(policy, &sources)?;
    bring_up_loopback()?;
    if let Some(setup) = &policy.network {
        launcher_network::install_in_init(setup)?;
    }
    set_limits(policy)?;
    if policy.join {
        return join_worker();
    }
    // SAFETY: this process is single-threaded (a clone of the single-threaded launcher), so
    // the child may allocate and run arbitrary code after fork.
    match sys(|| "fork".to_owned(), unsafe { nix::unistd::fork() })? {
        ForkResult::Child => {
            let error = exec_worker(policy, filters);
            eprintln!("corral sandbox worker: {error}");
            // SAFETY: `_exit` is always safe; it skips the parent's atexit handlers.
            unsafe { libc::_exit(SETUP_FAILED) }
        }
        ForkResult::Parent { child } => {
            for descriptor in [0, 3] {
                let _ = nix::unistd::close(descriptor);
            }
            forward_until_exit(child)
        }
    }
}

/// Init of a joined session (`zygote`): says `ready` on the join socket, learns the worker's
/// pid from the zygote, forwards SIGINT and SIGTERM to it, reaps orphans, and ends with the
/// worker's status (`exit STATUS` from the zygote, its reaper). A worker that ends while the
/// zygote is gone (its server stopped) ends init with status 0: its real status went to
/// whichever host process reaped it.
fn join_worker() -> Result<i32, LaunchError> {
    for descriptor in [0, 3] {
        let _ = nix::unistd::close(descriptor);
    }
    // SAFETY: init inherited the join socket at this number from the launcher and owns it
    // from here on (the launcher closed its copy); it is wrapped exactly once.
    let join = unsafe { std::os::fd::OwnedFd::from_raw_fd(keeper::JOIN_FD) };
    sys(
        || "saying ready on the join socket".to_owned(),
        nix::unistd::write(&join, b"ready\n"),
    )?;
    let signals = sys(
        || "signalfd".to_owned(),
        SignalFd::with_flags(
            &forwarded_signals(),
            SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
        ),
    )?;
    let mut join = Some(join);
    let mut received: Vec<u8> = Vec::new();
    let mut worker: Option<(Pid, OwnedFd)> = None;
    let mut ended_at: Option<Instant> = None;
    loop {
        if let Some(since) = ended_at {
            if join.is_none() || since.elapsed() >= JOIN_EXIT_WAIT {
                return Ok(0);
            }
        } else if join.is_none() && worker.is_none() {
            // The zygote gave up on this session before the worker started.
            return Ok(SETUP_FAILED);
        }
        let timeout = match ended_at {
            Some(_) => PollTimeout::from(100u16),
            None => PollTimeout::NONE,
        };
        let [signal_ready, join_ready, worker_ready] = poll_readable(
            [
                Some(signals.as_fd()),
                join.as_ref().map(AsFd::as_fd),
                worker
                    .as_ref()
                    .filter(|_| ended_at.is_none())
                    .map(|(_, pidfd)| pidfd.as_fd()),
            ],
            timeout,
        )?;
        if signal_ready {
            while let Ok(Some(info)) = signals.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(signal @ (Signal::SIGINT | Signal::SIGTERM)) => {
                        if let Some((pid, _)) = &worker {
                            let _ = kill(*pid, signal);
                        }
                    }
                    _ => {
                        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                            if status == WaitStatus::StillAlive {
                                break;
                            }
                        }
                    }
                }
            }
        }
        if join_ready {
            let mut chunk = [0u8; 256];
            let count = match join
                .as_ref()
                .map(|join| nix::unistd::read(join.as_raw_fd(), &mut chunk))
            {
                Some(Ok(count)) => count,
                Some(Err(nix::Error::EINTR | nix::Error::EAGAIN)) => continue,
                _ => 0,
            };
            if count == 0 {
                join = None;
            }
            received.extend_from_slice(&chunk[..count]);
            while let Some(end) = received.iter().position(|byte| *byte == b'\n') {
                let line: Vec<u8> = received.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line[..end]).into_owned();
                if let Some(status) = line.strip_prefix("exit ") {
                    let status = status.trim().parse::<i32>().unwrap_or(0);
                    return Ok(if libc::WIFSIGNALED(status) {
                        128 + libc::WTERMSIG(status)
                    } else {
                        libc::WEXITSTATUS(status)
                    });
                }
                if let Some(pid) = line.strip_prefix("pid ") {
                    if let Some(pid) = pid.trim().parse::<i32>().ok().filter(|pid| *pid > 1) {
                        let pid = Pid::from_raw(pid);
                        worker = Some((pid, pidfd_open(pid)?));
                    }
                }
            }
        }
        if worker_ready {
            ended_at = Some(Instant::now());
        }
    }
}

/// How long init waits for the zygote's `exit STATUS` once it saw its worker end.
const JOIN_EXIT_WAIT: Duration = Duration::from_secs(1);

/// A descriptor that becomes readable when process `pid` (of this PID namespace) ends.
fn pidfd_open(pid: Pid) -> Result<OwnedFd, LaunchError> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no memory
    // is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(LaunchError::Io {
            what: format!("watching worker {pid}"),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: the kernel just returned this descriptor to this process; it is wrapped once.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Runs in the worker process: drops every privilege, installs seccomp, execs the program.
fn exec_worker(policy: &LaunchPolicy, filters: &[seccompiler::BpfProgram]) -> LaunchError {
    match prepare_and_exec(policy, filters) {
        Ok(never) => match never {},
        Err(error) => error,
    }
}

fn prepare_and_exec(
    policy: &LaunchPolicy,
    filters: &[seccompiler::BpfProgram],
) -> Result<std::convert::Infallible, LaunchError> {
    sys(
        || "unblocking signals".to_owned(),
        forwarded_signals().thread_unblock(),
    )?;
    for signal in forwarded_signals().iter() {
        let action = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
        // SAFETY: restoring the default disposition installs no handler code.
        sys(|| format!("sigaction {signal}"), unsafe {
            sigaction(signal, &action)
        })?;
    }
    sys(
        || "pdeathsig".to_owned(),
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL),
    )?;
    drop_capabilities().map_err(|error| LaunchError::Capabilities(error.to_string()))?;
    // The launcher's pipe and the O_PATH handles used to build the root stay behind.
    crate::process::close_descriptors_from(4);
    sys(
        || "no_new_privs".to_owned(),
        nix::sys::prctl::set_no_new_privs(),
    )?;
    sys(
        || format!("chdir {SANDBOX_WORKSPACE}"),
        nix::unistd::chdir(SANDBOX_WORKSPACE),
    )?;
    let program = c_string(&policy.program)?;
    let args = policy
        .args
        .iter()
        .map(|arg| c_string(arg))
        .collect::<Result<Vec<_>, _>>()?;
    let env = policy
        .env
        .iter()
        .map(|(key, value)| c_string(&format!("{key}={value}")))
        .collect::<Result<Vec<_>, _>>()?;
    seccomp::install(filters)?;
    sys(
        || format!("exec {}", policy.program),
        nix::unistd::execve(&program, &args, &env),
    )
}

fn c_string(text: &str) -> Result<CString, LaunchError> {
    CString::new(text).map_err(|_| LaunchError::Io {
        what: format!("{text:?}"),
        source: std::io::Error::other("contains a NUL byte"),
    })
}

/// Empties the bounding set (so nothing exec'd regains a capability), then every other set.
pub(crate) fn drop_capabilities() -> Result<(), caps::errors::CapsError> {
    use caps::CapSet;
    for capability in caps::all() {
        caps::drop(None, CapSet::Bounding, capability)?;
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set)?;
    }
    Ok(())
}

fn set_limits(policy: &LaunchPolicy) -> Result<(), LaunchError> {
    for (resource, value) in [
        (Resource::RLIMIT_NOFILE, policy.max_open_files),
        (Resource::RLIMIT_NPROC, policy.max_processes),
        (Resource::RLIMIT_FSIZE, policy.max_file_bytes),
        (Resource::RLIMIT_CORE, 0),
    ] {
        sys(
            || format!("setrlimit {resource:?}"),
            setrlimit(resource, value, value),
        )?;
    }
    Ok(())
}

fn bring_up_loopback() -> Result<(), LaunchError> {
    let socket = sys(
        || "socket for loopback".to_owned(),
        nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Datagram,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        ),
    )?;
    // SAFETY: `ifreq` is plain old data; zeroed is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: `request` is a valid, initialised `ifreq` naming an interface, and the socket
    // is open; SIOCGIFFLAGS only writes the flags field of `request`.
    let got = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) };
    if got < 0 {
        return Err(LaunchError::Io {
            what: "reading loopback flags".to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union just above.
    unsafe {
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: as above; SIOCSIFFLAGS reads `request`.
    let set = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) };
    if set < 0 {
        return Err(LaunchError::Io {
            what: "bringing loopback up".to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// `mount_setattr(2)` arguments.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// Makes the mount at `path` and every mount below it read-only, nosuid and nodev.
fn make_tree_readonly(path: &Path) -> Result<(), LaunchError> {
    let c_path = c_string(&path.to_string_lossy())?;
    let attributes = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `c_path` is a valid NUL-terminated string and `attributes` a valid
    // `struct mount_attr` whose size is passed; the kernel only reads both.
    let result = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::AT_RECURSIVE,
            &attributes as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if result == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() != Some(libc::ENOSYS) {
        return Err(LaunchError::Io {
            what: format!("making {} read-only", path.display()),
            source: error,
        });
    }
    // Kernels before 5.12: remount the top of the tree read-only.
    sys(
        || format!("remounting {} read-only", path.display()),
        mount(
            None::<&str>,
            path,
            None::<&str>,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_BIND
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV,
            None::<&str>,
        ),
    )
}

/// The sandbox's `/sys`: a read-only tmpfs with only what `sys_view` plans bound into it
/// (CPU topology, the session's own cgroups), each read-only.
fn mount_sys(sys_dir: &Path, cgroup_procs: &[PathBuf]) -> Result<(), LaunchError> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_tmpfs(sys_dir, "size=64k,mode=0755", flags)?;
    for entry in sys_view::plan(cgroup_procs, sys_view::host_is_unified()) {
        if !entry.host.is_dir() {
            continue;
        }
        let target = sys_dir.join(&entry.inside);
        make_directory(&target)?;
        bind(&entry.host, &target, MsFlags::MS_REC)?;
        make_tree_readonly(&target)?;
    }
    sys(
        || "making /sys read-only".to_owned(),
        mount(
            None::<&str>,
            sys_dir,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
            Some("size=64k,mode=0755"),
        ),
    )
}

fn mount_tmpfs(target: &Path, options: &str, flags: MsFlags) -> Result<(), LaunchError> {
    sys(
        || format!("mounting tmpfs on {}", target.display()),
        mount(Some("tmpfs"), target, Some("tmpfs"), flags, Some(options)),
    )
}

fn bind(source: &Path, target: &Path, flags: MsFlags) -> Result<(), LaunchError> {
    sys(
        || format!("binding {} on {}", source.display(), target.display()),
        mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND | flags,
            None::<&str>,
        ),
    )
}

fn make_directory(path: &Path) -> Result<(), LaunchError> {
    io(
        || format!("creating {}", path.display()),
        std::fs::create_dir_all(path),
    )
}

fn make_file(path: &Path) -> Result<(), LaunchError> {
    if let Some(parent) = path.parent() {
        make_directory(parent)?;
    }
    io(
        || format!("creating {}", path.display()),
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map(drop),
    )
}

/// Host things opened (`O_PATH`) with the launcher's host identity before it becomes the
/// session's uid; bound into the sandbox through `/proc/self/fd`.
struct Sources {
    workspace: std::fs::File,
    readonly_files: Vec<(std::fs::File, String)>,
    /// Exposed directory, its closed ancestor (if any) and the open directory.
    exposed: Vec<(PathBuf, Option<PathBuf>, std::fs::File)>,
}

fn open_path(path: &Path) -> Result<std::fs::File, LaunchError> {
    use std::os::unix::fs::OpenOptionsExt;
    io(
        || format!("opening {}", path.display()),
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
            .open(path),
    )
}

fn fd_path(file: &std::fs::File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

impl Sources {
    fn open(policy: &LaunchPolicy) -> Result<Sources, LaunchError> {
        let mut exposed = Vec::new();
        for path in &policy.exposed_paths {
            let Ok(file) = open_path(path) else {
                continue;
            };
            exposed.push((path.clone(), closed_ancestor(path), file));
        }
        Ok(Sources {
            workspace: open_path(&policy.workspace)?,
            readonly_files: policy
                .readonly_files
                .iter()
                .map(|(host, inside)| Ok((open_path(host)?, inside.clone())))
                .collect::<Result<_, LaunchError>>()?,
            exposed,
        })
    }
}

/// The highest proper ancestor of `path` that other users cannot enter, if any.
fn closed_ancestor(path: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
    ancestors.reverse();
    ancestors
        .into_iter()
        .filter(|ancestor| ancestor.parent().is_some())
        .find(|ancestor| {
            std::fs::metadata(ancestor)
                .map(|metadata| metadata.permissions().mode() & 0o001 == 0)
                .unwrap_or(true)
        })
        .map(Path::to_owned)
}

/// Assembles the sandbox's root in the current directory (a fresh tmpfs) and pivots into it.
fn build_filesystem(policy: &LaunchPolicy, sources: &Sources) -> Result<(), LaunchError> {
    let root = Path::new(".");
    // The host, read-only: each top-level directory bound recursively, symlinks recreated.
    let entries = io(|| "listing /".to_owned(), std::fs::read_dir("/"))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if REPLACED_TOP_LEVEL
            .iter()
            .any(|replaced| name.as_bytes() == replaced.as_bytes())
        {
            continue;
        }
        let host_path = Path::new("/").join(&name);
        let target = root.join(&name);
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_symlink() {
            if let Ok(link) = std::fs::read_link(&host_path) {
                io(
                    || format!("linking {}", target.display()),
                    std::os::unix::fs::symlink(link, &target),
                )?;
            }
        } else if file_type.is_dir() {
            make_directory(&target)?;
            // Mounts below (other sessions' workspaces, under the hidden data directory) come
            // along: a user namespace may not separate them. They are covered by the mask.
            bind(&host_path, &target, MsFlags::MS_REC)?;
            make_tree_readonly(&target)?;
        }
    }
    // Empty directories over these, made read-only once the exposed paths are in place.
    let mut read_only_later: Vec<PathBuf> = Vec::new();
    for below in REPLACED_BELOW {
        let target = root.join(below);
        let is_directory = std::fs::symlink_metadata(&target)
            .map(|metadata| metadata.is_dir())
            .unwrap_or(false);
        if is_directory {
            mount_tmpfs(
                &target,
                "size=64k,mode=0755,uid=0,gid=0",
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            )?;
            read_only_later.push(target);
        }
    }

    let sys_dir = root.join("sys");
    make_directory(&sys_dir)?;
    mount_sys(&sys_dir, &policy.cgroup_procs)?;

    let dev = root.join("dev");
    make_directory(&dev)?;
    mount_tmpfs(&dev, "size=64k,mode=0755", MsFlags::MS_NOSUID)?;
    for device in DEVICES {
        let target = dev.join(device);
        make_file(&target)?;
        bind(&Path::new("/dev").join(device), &target, MsFlags::empty())?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        io(
            || format!("linking /dev/{link}"),
            std::os::unix::fs::symlink(target, dev.join(link)),
        )?;
    }
    let shm = dev.join("shm");
    make_directory(&shm)?;
    let scratch = format!("size={},mode=1777", policy.tmp_bytes);
    mount_tmpfs(&shm, &scratch, MsFlags::MS_NOSUID | MsFlags::MS_NODEV)?;

    let proc_dir = root.join("proc");
    make_directory(&proc_dir)?;
    sys(
        || "mounting /proc".to_owned(),
        mount(
            Some("proc"),
            &proc_dir,
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        ),
    )?;

    let tmp = root.join("tmp");
    make_directory(&tmp)?;
    mount_tmpfs(&tmp, &scratch, MsFlags::MS_NOSUID | MsFlags::MS_NODEV)?;

    let run = root.join("run");
    make_directory(&run)?;
    mount_tmpfs(
        &run,
        "size=1m,mode=0755",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )?;
    for (host_file, sandbox_path) in &sources.readonly_files {
        let target = root.join(sandbox_path.trim_start_matches('/'));
        make_file(&target)?;
        bind(&fd_path(host_file), &target, MsFlags::empty())?;
        make_tree_readonly(&target)?;
    }

    let workspace = root.join(SANDBOX_WORKSPACE.trim_start_matches('/'));
    make_directory(&workspace)?;
    bind(&fd_path(&sources.workspace), &workspace, MsFlags::empty())?;
    sys(
        || "securing /workspace".to_owned(),
        mount(
            None::<&str>,
            &workspace,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            None::<&str>,
        ),
    )?;

    let mut replaced: Vec<PathBuf> = read_only_later;
    for (exposed, closed, directory) in &sources.exposed {
        // A path under a directory the sandbox replaces (an interpreter in /tmp, say) is
        // bound into the replacement; one under a directory closed to others is bound into
        // an empty directory put over that one.
        let under_replaced = REPLACED_TOP_LEVEL
            .iter()
            .map(|name| Path::new("/").join(name))
            .chain(
                REPLACED_BELOW
                    .iter()
                    .map(|below| Path::new("/").join(below)),
            )
            .any(|replaced_path| exposed.starts_with(replaced_path));
        match closed {
            _ if under_replaced => {}
            None => continue,
            Some(closed) => {
                let closed_target = root.join(closed.strip_prefix("/").unwrap_or(closed));
                if !replaced.contains(&closed_target) {
                    mount_tmpfs(
                        &closed_target,
                        "size=64k,mode=0755,uid=0,gid=0",
                        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    )?;
                    replaced.push(closed_target);
                }
            }
        }
        let target = root.join(exposed.strip_prefix("/").unwrap_or(exposed));
        make_directory(&target)?;
        bind(&fd_path(directory), &target, MsFlags::MS_REC)?;
        make_tree_readonly(&target)?;
    }
    for closed_target in &replaced {
        sys(
            || format!("making {} read-only", closed_target.display()),
            mount(
                None::<&str>,
                closed_target,
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some("size=64k,mode=0755"),
            ),
        )?;
    }

    for hidden in &policy.hidden_paths {
        let relative = hidden.strip_prefix("/").unwrap_or(hidden);
        let target = root.join(relative);
        let Ok(metadata) = std::fs::symlink_metadata(&target) else {
            continue;
        };
        if metadata.is_dir() {
            mount_tmpfs(
                &target,
                "size=4k,mode=0000",
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            )?;
        } else {
            bind(Path::new("/dev/null"), &target, MsFlags::empty())?;
        }
    }

    sys(
        || "making / read-only".to_owned(),
        mount(
            None::<&str>,
            root,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("size=1m,mode=0755"),
        ),
    )?;
    sys(
        || "pivot_root".to_owned(),
        nix::unistd::pivot_root(".", "."),
    )?;
    sys(
        || "detaching the host root".to_owned(),
        umount2(".", MntFlags::MNT_DETACH),
    )?;
    sys(|| "chdir /".to_owned(), nix::unistd::chdir("/"))?;
    Ok(())
}
