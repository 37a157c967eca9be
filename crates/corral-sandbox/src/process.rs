//! Worker processes: spawn with the protocol's fd layout, interrupt, kill the whole group.

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;
use std::process::Stdio;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

use crate::SandboxError;

/// The file descriptor number the worker finds its control socket on.
const CONTROL_FD: i32 = 3;

/// What to run as a worker.
#[derive(Clone, Debug)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The worker's whole environment: nothing of the server's is inherited.
    pub env: Vec<(OsString, OsString)>,
    pub working_dir: PathBuf,
}

/// A started worker and the host ends of its channels.
#[derive(Debug)]
pub struct SpawnedWorker {
    pub child: Child,
    pub pid: u32,
    pub control: tokio::net::UnixStream,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
}

/// Starts a worker in a new process group with a cleared environment, stdin on
/// `/dev/null`, stdout and stderr on pipes and the control socket at fd 3.
pub fn spawn_worker(command: &WorkerCommand) -> Result<SpawnedWorker, SandboxError> {
    let (host_end, worker_end) = StdUnixStream::pair().map_err(SandboxError::ControlSocket)?;
    host_end
        .set_nonblocking(true)
        .map_err(SandboxError::ControlSocket)?;
    let worker_fd = worker_end.as_raw_fd();

    let mut process = Command::new(&command.program);
    process
        .args(&command.args)
        .env_clear()
        .envs(command.env.iter().map(|(key, value)| (key, value)))
        .current_dir(&command.working_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: the closure runs in the forked child before exec and only calls `setsid`,
    // `prctl`, `dup2`, `fcntl` and `close_range`, which are async-signal-safe; it allocates
    // nothing and touches no locks. `worker_fd` stays open in the parent until after `spawn`
    // returns, so it is valid here.
    unsafe {
        process.pre_exec(move || {
            // A new session: no controlling terminal (so no TIOCSTI into the operator's shell),
            // and a process group of its own that is killed as a whole.
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            // If the server dies (even by SIGKILL), the worker dies with it.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            if worker_fd == CONTROL_FD {
                // dup2 onto itself keeps close-on-exec; clear the flag instead.
                nix::fcntl::fcntl(
                    worker_fd,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                )
                .map_err(std::io::Error::from)?;
            } else {
                nix::unistd::dup2(worker_fd, CONTROL_FD).map_err(std::io::Error::from)?;
            }
            // Nothing the server holds or inherited reaches the worker beyond fds 0-3.
            close_descriptors_from(CONTROL_FD + 1);
            Ok(())
        });
    }
    let mut child = process.spawn().map_err(|source| SandboxError::Spawn {
        program: command.program.display().to_string(),
        source,
    })?;
    drop(worker_end);
    let pid = child.id().unwrap_or(0);
    let control =
        tokio::net::UnixStream::from_std(host_end).map_err(SandboxError::ControlSocket)?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(SandboxError::Spawn {
            program: command.program.display().to_string(),
            source: std::io::Error::other("child pipes missing"),
        });
    };
    Ok(SpawnedWorker {
        child,
        pid,
        control,
        stdout,
        stderr,
    })
}

/// Closes every file descriptor from `first` up. Async-signal-safe.
pub(crate) fn close_descriptors_from(first: i32) {
    // SAFETY: close_range only closes descriptors; nothing in this process uses the ones it
    // closes (callers run just before exec or at the start of a fresh process).
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        );
    }
}

/// Sends SIGINT to the worker process itself (the running cell gets `KeyboardInterrupt`).
pub fn interrupt(pid: u32) -> Result<(), SandboxError> {
    let target = checked_pid(pid)?;
    nix::sys::signal::kill(target, Signal::SIGINT)
        .map_err(|source| SandboxError::Signal { pid, source })
}

/// Sends SIGKILL to every process in the worker's process group (the worker is its leader).
/// A group that is already gone is not an error.
pub fn kill_process_group(pid: u32) -> Result<(), SandboxError> {
    let target = checked_pid(pid)?;
    match killpg(target, Signal::SIGKILL) {
        Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
        Err(source) => Err(SandboxError::Signal { pid, source }),
    }
}

/// Refuses pids that would signal more than one process (0 and anything that overflows to ≤ 0).
fn checked_pid(pid: u32) -> Result<Pid, SandboxError> {
    match i32::try_from(pid) {
        Ok(raw) if raw > 1 => Ok(Pid::from_raw(raw)),
        _ => Err(SandboxError::Signal {
            pid,
            source: nix::Error::EINVAL,
        }),
    }
}
