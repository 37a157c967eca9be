//! Worker processes: spawn with the protocol's fd layout (and, for a launcher that outlives
//! the server, the keeper's descriptors), interrupt, kill the whole group.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;
use std::process::Stdio;

use nix::fcntl::OFlag;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::keeper::{
    KeeperLink, FIRST_FOREIGN_FD, JOIN_FD, KEPT_CONTROL_FD, KEPT_STDERR_FD, KEPT_STDOUT_FD,
    OWNER_FD,
};
use crate::zygote::Joining;
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
    pub stdout: tokio::net::unix::pipe::Receiver,
    pub stderr: tokio::net::unix::pipe::Receiver,
    /// The connection to the launcher that keeps the worker's channels (see `keeper`), when
    /// the worker was started to outlive the server.
    pub keeper: Option<KeeperLink>,
    /// For a launcher started to be joined (`Lifetime::Joined`): what the zygote needs.
    pub joining: Option<Joining>,
}

/// How a worker relates to the server that starts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Killed by the kernel when the server dies (a plain, unsandboxed worker).
    WithServer,
    /// A sandbox launcher that keeps its worker's channels and outlives the server: it gets
    /// copies of the channels' host ends at fds 4-6 and its owner connection at fd 7.
    Kept,
    /// As `Kept`, for a launcher whose init waits for the zygote to fork the worker into it
    /// (`zygote`): it also gets its join socket at fd 8, and the worker's ends of the
    /// channels are kept for the zygote.
    Joined,
}

/// Starts a worker in a new session and process group with a cleared environment, stdin on
/// `/dev/null`, stdout and stderr on pipes and the control socket at fd 3.
pub fn spawn_worker(
    command: &WorkerCommand,
    lifetime: Lifetime,
) -> Result<SpawnedWorker, SandboxError> {
    let (host_end, worker_end) = StdUnixStream::pair().map_err(SandboxError::ControlSocket)?;
    host_end
        .set_nonblocking(true)
        .map_err(SandboxError::ControlSocket)?;
    let (owner_end, launcher_end) = match lifetime {
        Lifetime::Kept | Lifetime::Joined => {
            let (owner, launcher) = StdUnixStream::pair().map_err(SandboxError::ControlSocket)?;
            owner
                .set_nonblocking(true)
                .map_err(SandboxError::ControlSocket)?;
            (Some(owner), Some(launcher))
        }
        Lifetime::WithServer => (None, None),
    };
    let pipe = || {
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|error| SandboxError::Spawn {
            program: command.program.display().to_string(),
            source: error.into(),
        })
    };
    let (stdout_read, stdout_write) = pipe()?;
    let (stderr_read, stderr_write) = pipe()?;
    let joined = lifetime == Lifetime::Joined;
    let setup = |error: std::io::Error| SandboxError::Spawn {
        program: command.program.display().to_string(),
        source: error,
    };
    // The zygote's copies of the worker's ends, and the join socket (server end, init's end).
    let zygote_ends = if joined {
        let (server, init) = StdUnixStream::pair().map_err(SandboxError::ControlSocket)?;
        Some((
            worker_end.try_clone().map_err(setup)?,
            stdout_write.try_clone().map_err(setup)?,
            stderr_write.try_clone().map_err(setup)?,
            server,
            init,
        ))
    } else {
        None
    };
    // (source, target) pairs placed in the child; -1 sources are skipped.
    let kept = matches!(lifetime, Lifetime::Kept | Lifetime::Joined);
    let placements: [(RawFd, RawFd); 6] = [
        (worker_end.as_raw_fd(), CONTROL_FD),
        (
            if kept { host_end.as_raw_fd() } else { -1 },
            KEPT_CONTROL_FD,
        ),
        (
            if kept { stdout_read.as_raw_fd() } else { -1 },
            KEPT_STDOUT_FD,
        ),
        (
            if kept { stderr_read.as_raw_fd() } else { -1 },
            KEPT_STDERR_FD,
        ),
        (
            launcher_end.as_ref().map_or(-1, AsRawFd::as_raw_fd),
            OWNER_FD,
        ),
        (
            zygote_ends
                .as_ref()
                .map_or(-1, |(_, _, _, _, init)| init.as_raw_fd()),
            JOIN_FD,
        ),
    ];

    let mut process = Command::new(&command.program);
    process
        .args(&command.args)
        .env_clear()
        .envs(command.env.iter().map(|(key, value)| (key, value)))
        .current_dir(&command.working_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout_write))
        .stderr(Stdio::from(stderr_write))
        // A kept launcher is ended through its keeper channel or its process group, never by
        // dropping its handle (a server detaching from its sessions drops them all).
        .kill_on_drop(!kept);
    // SAFETY: the closure runs in the forked child before exec and only calls `setsid`,
    // `prctl`, `fcntl`, `dup2` and `close_range`, which are async-signal-safe; it allocates
    // nothing and touches no locks. Every source descriptor stays open in the parent until
    // after `spawn` returns, so it is valid here.
    unsafe {
        process.pre_exec(move || {
            // A new session: no controlling terminal (so no TIOCSTI into the operator's shell),
            // and a process group of its own that is killed as a whole.
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if !kept {
                // If the server dies (even by SIGKILL), the worker dies with it.
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            }
            // Move every source out of the target range first (a source may sit on another's
            // target), then onto its target; dup2 clears close-on-exec on the copy.
            let mut moved = [-1; 6];
            for (index, (source, _)) in placements.iter().enumerate() {
                if *source >= 0 {
                    moved[index] = nix::fcntl::fcntl(
                        *source,
                        nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(FIRST_FOREIGN_FD + 16),
                    )
                    .map_err(std::io::Error::from)?;
                }
            }
            for (index, (_, target)) in placements.iter().enumerate() {
                if moved[index] >= 0 {
                    nix::unistd::dup2(moved[index], *target).map_err(std::io::Error::from)?;
                }
            }
            // Nothing the server holds or inherited reaches the child beyond its own fds.
            close_descriptors_from(if joined {
                FIRST_FOREIGN_FD
            } else if kept {
                JOIN_FD
            } else {
                CONTROL_FD + 1
            });
            Ok(())
        });
    }
    let mut child = process.spawn().map_err(|source| SandboxError::Spawn {
        program: command.program.display().to_string(),
        source,
    })?;
    drop(worker_end);
    drop(launcher_end);
    let joining = match zygote_ends {
        Some((control, stdout, stderr, server, init)) => {
            drop(init);
            server
                .set_nonblocking(true)
                .map_err(SandboxError::ControlSocket)?;
            Some(Joining {
                control: control.into(),
                stdout,
                stderr,
                join: tokio::net::UnixStream::from_std(server)
                    .map_err(SandboxError::ControlSocket)?,
            })
        }
        None => None,
    };
    let pid = child.id().unwrap_or(0);
    let control =
        tokio::net::UnixStream::from_std(host_end).map_err(SandboxError::ControlSocket)?;
    let receiver = |fd| {
        tokio::net::unix::pipe::Receiver::from_owned_fd(fd).map_err(SandboxError::ControlSocket)
    };
    let keeper = match owner_end {
        Some(owner) => Some(KeeperLink::new(
            tokio::net::UnixStream::from_std(owner).map_err(SandboxError::ControlSocket)?,
        )),
        None => None,
    };
    let (stdout, stderr) = match (receiver(stdout_read), receiver(stderr_read)) {
        (Ok(stdout), Ok(stderr)) => (stdout, stderr),
        (Err(error), _) | (_, Err(error)) => {
            let _ = child.start_kill();
            return Err(error);
        }
    };
    Ok(SpawnedWorker {
        child,
        pid,
        control,
        stdout,
        stderr,
        keeper,
        joining,
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
