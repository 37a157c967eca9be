//! `corral-sandbox`: the only crate that makes raw syscalls or uses `unsafe`.
//!
//! Owns starting a worker process with the fd layout of the worker protocol (stdin
//! `/dev/null`, stdout/stderr pipes, the control socket at fd 3), in its own process group,
//! with a cleared environment; signalling and killing worker process trees; and telling what
//! isolation the host offers.
//!
//! The sandbox (`sandbox` on the host, `launcher` in the `corral sandbox-init` process):
//! user, PID, mount, network, IPC, UTS and cgroup namespaces, a read-only view of the host
//! with a private workspace and a reduced `/sys` (`sys_view`), cgroup limits (`cgroup`),
//! rlimits, no capabilities, `no_new_privs` and a seccomp filter (`seccomp`); for sessions
//! allowed a network, slirp4netns and nftables rules (`launcher_network`, `network_rules`).
//!
//! Deliberately knows nothing of sessions, the protocol's messages or HTTP.

mod cgroup;
mod files;
mod host;
mod keeper;
mod launcher;
mod launcher_network;
mod network_rules;
mod policy;
mod process;
mod process_memory;
mod sandbox;
mod seccomp;
mod sys_view;
mod zygote;

pub use cgroup::{CpuPriority, SessionCgroup};
pub use files::{
    files_main, relative_workspace_path, FileEntry, FileFailure, FileOperation, FILES_COMMAND,
};
pub use host::{available_memory_bytes, HostIsolation, IsolationFeature};
pub use keeper::{adopt, keeper_sockets, AdoptedChannels, KeeperError, KeeperLink};
pub use launcher::launcher_main;
pub use network_rules::{Destination, NetworkRules, NAMES_ADDRESS, SLIRP_GATEWAY};
pub use policy::NetworkSetup;
pub use process::{
    interrupt, kill_process_group, spawn_worker, Lifetime, SpawnedWorker, WorkerCommand,
};
pub use process_memory::{
    memory_of_process, memory_of_processes, process_tree, with_outside_parents,
};
pub use sandbox::{
    sandbox_workspace, Sandbox, SandboxSettings, SandboxedWorker, SessionLimits, WorkerPlacement,
};
pub use seccomp::DENIED_SYSCALLS;
pub use zygote::{reaper_main, JoinTarget, Joining, Zygote, ZygoteCommand, REAPER_COMMAND};

/// Failures of this crate's operations.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("could not create the control socket: {0}")]
    ControlSocket(#[source] std::io::Error),
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sandboxing is unavailable: {0}")]
    Unavailable(String),
    #[error("sandbox setup failed while {what}: {source}")]
    Setup {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup setup failed: {0}")]
    Cgroup(String),
    #[error("could not signal process {pid}: {source}")]
    Signal {
        pid: u32,
        #[source]
        source: nix::Error,
    },
}
