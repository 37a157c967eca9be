//! The host side of the Python zygote (`drivers/python/zygote.py`): starting it, and asking it
//! for a worker inside a session's sandbox.
//!
//! A session started to be *joined* runs its launcher and init as usual (namespaces, cgroup,
//! id maps, the assembled filesystem, limits), but its init execs nothing: it says `ready` on
//! its join socket and waits. The zygote, a Python that loaded the driver once, forks a child
//! that enters that init's cgroups, namespaces and root, and forks the worker; the worker drops
//! its privileges, installs the seccomp filters compiled here and runs the driver. Its pages
//! stay shared with the zygote copy-on-write, and starting it is a fork instead of an
//! interpreter's start-up.
//!
//! The join socket (`JOIN_FD` in the launcher) carries lines: the launcher's `init PID` (the
//! init's host pid) and init's `ready` to the server; the zygote's `pid N` (the worker's pid in
//! the session) and, when the worker ends, `exit STATUS` to init, which then ends with it.
//!
//! Owns the zygote process, its request (one JSON object and four descriptors per
//! SOCK_SEQPACKET packet) and the join socket's server end. Knows nothing of sessions, the
//! worker protocol or the driver's workings.

use std::ffi::OsString;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::{seccomp, SandboxError, SessionLimits};

/// Where the zygote finds its request socket.
const REQUEST_FD: RawFd = 3;
/// `corral sandbox-reap PID`: what a zygote-born worker's reaper execs (see [`reaper_main`]).
pub const REAPER_COMMAND: &str = "sandbox-reap";
/// Where the reaper finds its init's join socket.
const REAPER_JOIN_FD: RawFd = 3;
/// The longest answer or join line the zygote or init sends.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What starts a zygote: the runtime's interpreter, the zygote and driver scripts (host
/// paths), the driver's path inside the sandbox, the workers' environment, and the `corral`
/// binary its reapers exec (`corral sandbox-reap`).
#[derive(Clone, Debug)]
pub struct ZygoteCommand {
    pub python: PathBuf,
    pub reaper: PathBuf,
    pub script: PathBuf,
    pub driver: PathBuf,
    pub sandbox_driver: String,
    pub env: Vec<(OsString, OsString)>,
}

/// A running zygote. Requests are served one at a time.
#[derive(Debug)]
pub struct Zygote {
    link: Mutex<ZygoteLink>,
    pid: u32,
}

#[derive(Debug)]
struct ZygoteLink {
    socket: OwnedFd,
    child: Child,
}

/// Where a worker is to be joined in, besides its init (read from the join socket).
#[derive(Clone, Debug)]
pub struct JoinTarget {
    pub cgroup_procs: Vec<PathBuf>,
    pub privileged: bool,
    pub limits: SessionLimits,
    /// The worker's whole environment and working directory (sandbox paths).
    pub env: Vec<(OsString, OsString)>,
    pub working_dir: PathBuf,
    /// The driver's path inside the sandbox (the worker's `sys.argv[0]`).
    pub driver_path: String,
}

#[derive(Serialize)]
struct JoinRequest<'a> {
    init_pid: u32,
    cgroup_procs: Vec<String>,
    privileged: bool,
    rlimits: Rlimits,
    env: Vec<(String, String)>,
    working_dir: String,
    driver_path: &'a str,
    /// Each seccomp program as hex of its `sock_filter` array (native byte order).
    seccomp: Vec<String>,
}

#[derive(Serialize)]
struct Rlimits {
    nofile: u64,
    nproc: u64,
    fsize: u64,
}

#[derive(Deserialize)]
struct JoinAnswer {
    pid: Option<u32>,
    error: Option<String>,
}

fn zygote_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Setup { what, source }
}

fn sys_error(what: &str) -> impl FnOnce(nix::Error) -> SandboxError + '_ {
    move |error| SandboxError::Setup {
        what: what.to_owned(),
        source: error.into(),
    }
}

impl Zygote {
    /// Starts the zygote (it dies with the server) and returns once it is serving.
    pub fn start(command: &ZygoteCommand) -> Result<Zygote, SandboxError> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(sys_error("creating the zygote's socket"))?;
        let theirs_raw = theirs.as_raw_fd();
        // Named relative to their directory: the command line (which every worker inherits,
        // `/proc/self/cmdline`) shows no host paths beyond the interpreter's.
        let directory = command
            .script
            .parent()
            .map(std::path::Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("/"));
        let relative = |path: &std::path::Path| match path.strip_prefix(&directory) {
            Ok(name) => name.to_owned(),
            Err(_) => path.to_owned(),
        };
        let mut process = Command::new(&command.python);
        process
            .arg("-S")
            .arg(relative(&command.script))
            .arg(relative(&command.driver))
            .arg(&command.sandbox_driver)
            .arg(&command.reaper)
            .env_clear()
            .envs(command.env.iter().map(|(key, value)| (key, value)))
            .current_dir(&directory)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // SAFETY: the closure runs in the forked child before exec and only calls `setsid`,
        // `dup2` and `close_range`, which are async-signal-safe; `theirs_raw` stays open in
        // the parent until `spawn` returns.
        unsafe {
            process.pre_exec(move || {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                nix::unistd::dup2(theirs_raw, REQUEST_FD).map_err(std::io::Error::from)?;
                crate::process::close_descriptors_from(REQUEST_FD + 1);
                Ok(())
            });
        }
        let child = process.spawn().map_err(|source| SandboxError::Spawn {
            program: command.python.display().to_string(),
            source,
        })?;
        drop(theirs);
        let pid = child.id();
        Ok(Zygote {
            link: Mutex::new(ZygoteLink {
                socket: ours,
                child,
            }),
            pid,
        })
    }

    /// The zygote's host pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the zygote process is still running.
    pub fn is_running(&self) -> bool {
        self.link
            .lock()
            .map(|mut link| matches!(link.child.try_wait(), Ok(None)))
            .unwrap_or(false)
    }

    /// Asks for a worker in `init_pid`'s sandbox with these descriptors (control, stdout,
    /// stderr, join); returns the worker's host pid. Blocks until the zygote answers.
    fn fork_into(
        &self,
        init_pid: u32,
        target: &JoinTarget,
        fds: [RawFd; 4],
    ) -> Result<u32, SandboxError> {
        let text = |value: &std::ffi::OsStr| value.to_string_lossy().into_owned();
        let programs = seccomp::session_filters()
            .map_err(|error| SandboxError::Setup {
                what: "building the seccomp filters".to_owned(),
                source: std::io::Error::other(error.to_string()),
            })?
            .iter()
            .map(|program| {
                program
                    .iter()
                    .flat_map(|instruction| {
                        let mut bytes = Vec::with_capacity(8);
                        bytes.extend_from_slice(&instruction.code.to_ne_bytes());
                        bytes.push(instruction.jt);
                        bytes.push(instruction.jf);
                        bytes.extend_from_slice(&instruction.k.to_ne_bytes());
                        bytes
                    })
                    .map(|byte| format!("{byte:02x}"))
                    .collect::<String>()
            })
            .collect();
        let request = JoinRequest {
            init_pid,
            cgroup_procs: target
                .cgroup_procs
                .iter()
                .map(|path| text(path.as_os_str()))
                .collect(),
            privileged: target.privileged,
            rlimits: Rlimits {
                nofile: target.limits.max_open_files,
                nproc: target.limits.max_processes,
                fsize: target.limits.workspace_bytes,
            },
            env: target
                .env
                .iter()
                .map(|(key, value)| (text(key), text(value)))
                .collect(),
            working_dir: text(target.working_dir.as_os_str()),
            driver_path: &target.driver_path,
            seccomp: programs,
        };
        let payload = serde_json::to_vec(&request).map_err(|error| SandboxError::Setup {
            what: "encoding the zygote request".to_owned(),
            source: std::io::Error::other(error),
        })?;
        let link = self.link.lock().map_err(|_| SandboxError::Setup {
            what: "asking the zygote".to_owned(),
            source: std::io::Error::other("the zygote's link was poisoned"),
        })?;
        let socket = link.socket.as_raw_fd();
        let rights = [ControlMessage::ScmRights(&fds)];
        sendmsg::<()>(
            socket,
            &[IoSlice::new(&payload)],
            &rights,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(sys_error("sending the zygote request"))?;
        let mut buffer = vec![0u8; MAX_ANSWER_BYTES];
        let count = {
            let mut iov = [IoSliceMut::new(&mut buffer)];
            recvmsg::<()>(socket, &mut iov, None, MsgFlags::MSG_CMSG_CLOEXEC)
                .map_err(sys_error("reading the zygote's answer"))?
                .bytes
        };
        drop(link);
        if count == 0 {
            return Err(SandboxError::Setup {
                what: "asking the zygote".to_owned(),
                source: std::io::Error::other("the zygote is gone"),
            });
        }
        let answer: JoinAnswer =
            serde_json::from_slice(&buffer[..count]).map_err(|error| SandboxError::Setup {
                what: "reading the zygote's answer".to_owned(),
                source: std::io::Error::other(error),
            })?;
        match (answer.pid, answer.error) {
            (Some(pid), _) => Ok(pid),
            (None, error) => Err(SandboxError::Setup {
                what: "joining a worker into its sandbox".to_owned(),
                source: std::io::Error::other(error.unwrap_or_default()),
            }),
        }
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        if let Ok(link) = self.link.get_mut() {
            let _ = link.child.kill();
            let _ = link.child.wait();
        }
    }
}

/// What a worker started to be joined keeps for the zygote: the worker's ends of its channels
/// and the server's end of its init's join socket.
#[derive(Debug)]
pub struct Joining {
    pub(crate) control: OwnedFd,
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
    pub(crate) join: tokio::net::UnixStream,
}

impl Joining {
    /// Waits for the session's init to be ready (bounded by `timeout`), then has `zygote`
    /// fork the worker into it; returns the worker's host pid.
    pub async fn join(
        self,
        zygote: &std::sync::Arc<Zygote>,
        target: JoinTarget,
        timeout: Duration,
    ) -> Result<u32, SandboxError> {
        let Joining {
            control,
            stdout,
            stderr,
            mut join,
        } = self;
        let init_pid = tokio::time::timeout(timeout, read_init_ready(&mut join))
            .await
            .map_err(|_| SandboxError::Setup {
                what: "waiting for the session's init".to_owned(),
                source: std::io::Error::other("it did not become ready in time"),
            })??;
        let join = join
            .into_std()
            .map_err(zygote_error("handing over the join socket"))?;
        let zygote = zygote.clone();
        tokio::task::spawn_blocking(move || {
            zygote.fork_into(
                init_pid,
                &target,
                [
                    control.as_raw_fd(),
                    stdout.as_raw_fd(),
                    stderr.as_raw_fd(),
                    join.as_raw_fd(),
                ],
            )
            // The zygote has its own copies now: ours close here.
        })
        .await
        .map_err(|error| SandboxError::Setup {
            what: "asking the zygote".to_owned(),
            source: std::io::Error::other(error.to_string()),
        })?
    }
}

/// Reads the launcher's `init PID` line and init's `ready` line.
async fn read_init_ready(join: &mut tokio::net::UnixStream) -> Result<u32, SandboxError> {
    let mut received = Vec::new();
    let mut init_pid = None;
    loop {
        while let Some(end) = received.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = received.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]).into_owned();
            if let Some(pid) = line.strip_prefix("init ") {
                init_pid = pid.trim().parse::<u32>().ok();
            } else if line == "ready" {
                return init_pid.ok_or_else(|| SandboxError::Setup {
                    what: "waiting for the session's init".to_owned(),
                    source: std::io::Error::other("its launcher did not name it"),
                });
            }
        }
        if received.len() > MAX_ANSWER_BYTES {
            return Err(SandboxError::Setup {
                what: "waiting for the session's init".to_owned(),
                source: std::io::Error::other("an overlong line on the join socket"),
            });
        }
        let mut chunk = [0u8; 256];
        let count = join
            .read(&mut chunk)
            .await
            .map_err(zygote_error("waiting for the session's init"))?;
        if count == 0 {
            return Err(SandboxError::Setup {
                what: "waiting for the session's init".to_owned(),
                source: std::io::Error::other("it ended before it was ready"),
            });
        }
        received.extend_from_slice(&chunk[..count]);
    }
}

/// Entry point of `corral sandbox-reap PID`: the parent of a zygote-born worker (exec'd by the
/// joining child once it has dropped its capabilities, so only a small Rust process waits
/// instead of a copy of the zygote). Waits for the worker and writes `exit STATUS` on the join
/// socket at fd 3; returns the process exit code.
pub fn reaper_main(arguments: &[String]) -> i32 {
    let Some(pid) = arguments
        .first()
        .and_then(|pid| pid.parse::<i32>().ok())
        .filter(|pid| *pid > 1)
    else {
        eprintln!("corral sandbox-reap: expected the worker's pid");
        return 2;
    };
    let pid = nix::unistd::Pid::from_raw(pid);
    let status = loop {
        match nix::sys::wait::waitpid(pid, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => break code << 8,
            Ok(nix::sys::wait::WaitStatus::Signaled(_, signal, _)) => break signal as i32,
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(_) => break 0,
        }
    };
    // SAFETY: the joining child placed the join socket at this number before exec; it is
    // borrowed only for this write.
    let join = unsafe { std::os::fd::BorrowedFd::borrow_raw(REAPER_JOIN_FD) };
    let _ = nix::unistd::write(join, format!("exit {status}\n").as_bytes());
    0
}
