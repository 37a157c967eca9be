//! What the launcher is told to build: the session's program, identity, filesystem view and
//! limits. Serialised as JSON on the launcher's command line (the server's environment is
//! never passed on).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything `corral sandbox-init` needs to start one sandboxed worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchPolicy {
    /// Absolute path of the program, as seen inside the sandbox (the host is visible read-only).
    pub program: String,
    pub args: Vec<String>,
    /// The program's whole environment.
    pub env: Vec<(String, String)>,
    /// Host uid and gid that root inside the session maps to.
    pub host_uid: u32,
    pub host_gid: u32,
    /// Whether the launcher may write arbitrary id maps (it is root on the host).
    pub privileged_id_maps: bool,
    /// `cgroup.procs` files the launcher moves the session's init into.
    pub cgroup_procs: Vec<PathBuf>,
    /// The cgroup version of `cgroup_procs` (1 or 2; 0 without cgroups).
    pub cgroup_version: u8,
    /// Where the launcher listens for the server that adopts the session (`keeper`).
    pub keeper_socket: PathBuf,
    /// How long an orphaned session waits for a server to adopt it before it ends.
    pub adoption_timeout_seconds: u64,
    /// The host mount holding the workspace (a privileged server's tmpfs), released by the
    /// launcher when the session ends with no server to do it.
    pub workspace_mount: Option<PathBuf>,
    /// An empty host directory the session's root filesystem is assembled on.
    pub root_dir: PathBuf,
    /// The session's workspace on the host, mounted at `/workspace`.
    pub workspace: PathBuf,
    /// Host files made visible read-only at a path inside the sandbox (e.g. the driver).
    pub readonly_files: Vec<(PathBuf, String)>,
    /// Host paths hidden inside the sandbox (data directory, config file).
    pub hidden_paths: Vec<PathBuf>,
    /// Host directories the session must be able to read even when an ancestor is closed to
    /// other users (the interpreter's installation, e.g. under `/root`): the closed ancestor
    /// is replaced by an empty directory holding only these paths.
    pub exposed_paths: Vec<PathBuf>,
    /// Size of the session's `/tmp` and `/dev/shm`.
    pub tmp_bytes: u64,
    pub max_open_files: u64,
    pub max_processes: u64,
    /// Largest file the session may write.
    pub max_file_bytes: u64,
    /// The session's network stack; `None` leaves it with its loopback only.
    #[serde(default)]
    pub network: Option<NetworkSetup>,
    /// Whether init waits for the zygote to fork the worker into the session instead of
    /// exec'ing `program` itself (`zygote`; the join socket is at the launcher's fd 8).
    #[serde(default)]
    pub join: bool,
}

/// Where the workspace appears inside the sandbox.
pub const SANDBOX_WORKSPACE: &str = "/workspace";

/// A session's own network stack (`launcher_network`): slirp4netns attached to its network
/// namespace by the launcher, the nftables rules init installs before the worker starts, and
/// the name table the session sees as `/etc/hosts`. `None` in [`LaunchPolicy`] is loopback only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSetup {
    /// The `slirp4netns` binary.
    pub slirp4netns: PathBuf,
    /// The `nft` binary (run by init inside the namespace).
    pub nft: PathBuf,
    /// The ruleset (`nft -f` syntax), rendered by `network_rules`.
    pub ruleset: String,
    /// The session's `/etc/hosts`.
    pub hosts: String,
    /// The session's `/etc/resolv.conf`.
    #[serde(default)]
    pub resolv_conf: String,
    /// Whether slirp4netns may forward to the host's loopback (the rules then say which ports).
    pub host_loopback: bool,
}
