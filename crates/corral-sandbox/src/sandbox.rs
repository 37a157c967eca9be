//! The host side of the sandbox: decide what this host can enforce, prepare each session's
//! workspace and cgroup, and turn a worker command into a launcher command.
//!
//! Runs in the server process; the namespace work happens in `launcher`, in its own process.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::cgroup::{CgroupHost, CgroupLimits, SessionCgroup};
use crate::policy::{LaunchPolicy, SANDBOX_WORKSPACE};
use crate::{SandboxError, WorkerCommand};

/// Resource limits of one session (the shared vocabulary's type).
pub use corral_core::ResourceLimits as SessionLimits;

/// How the server sets up sandboxes.
#[derive(Clone, Debug)]
pub struct SandboxSettings {
    /// The `corral` binary, run as `corral sandbox-init <policy>`.
    pub launcher: PathBuf,
    /// Where empty root directories for sessions live (under the data directory).
    pub runtime_dir: PathBuf,
    /// Host paths the sessions must not see (data directory, config file).
    pub hidden_paths: Vec<PathBuf>,
    /// First host uid handed to sessions.
    pub uid_base: u32,
    /// Number of host uids sessions cycle through.
    pub uid_count: u32,
    /// The cgroup filesystem's mount point.
    pub cgroup_root: PathBuf,
    /// Where each worker's launcher listens for the server that adopts it (`keeper`).
    pub keeper_dir: PathBuf,
    /// How long a worker whose server is gone waits to be adopted before it ends itself.
    pub adoption_timeout: std::time::Duration,
}

/// Where and how one worker is placed in its sandbox.
#[derive(Clone, Debug)]
pub struct WorkerPlacement {
    /// Unique among live workers: names the cgroup and the root directory.
    pub name: String,
    /// The session's workspace on the host (see [`Sandbox::prepare_workspace`]).
    pub workspace: PathBuf,
    pub workspace_uid: u32,
    /// Host files shown read-only at the given sandbox paths.
    pub readonly_files: Vec<(PathBuf, String)>,
    /// Host directories the session must be able to read (the interpreter's installation).
    pub exposed_paths: Vec<PathBuf>,
    pub limits: SessionLimits,
    /// The session's network stack; `None`: loopback only.
    pub network: Option<crate::NetworkSetup>,
    /// Whether the zygote forks the worker into the sandbox (init then execs nothing).
    pub join: bool,
}

/// A running server's sandbox facility.
#[derive(Debug)]
pub struct Sandbox {
    settings: SandboxSettings,
    cgroups: Option<CgroupHost>,
    privileged: bool,
    next_uid: AtomicU32,
    /// When this server's sandbox was set up, in microseconds since the epoch.
    started_micros: u128,
}

/// What the sandbox set up for one worker; released when the worker is gone.
#[derive(Debug)]
pub struct SandboxedWorker {
    pub command: WorkerCommand,
    pub cgroup: Option<SessionCgroup>,
    /// Where the worker's launcher listens for an adopting server.
    pub keeper_socket: PathBuf,
}

impl Sandbox {
    /// Checks what the host allows. Fails when user namespaces are unavailable.
    pub fn new(settings: SandboxSettings) -> Result<Sandbox, SandboxError> {
        let privileged = nix::unistd::geteuid().is_root();
        let user_namespaces = Path::new("/proc/self/ns/user").exists()
            && std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .is_none_or(|count| count > 0);
        if !user_namespaces {
            return Err(SandboxError::Unavailable(
                "user namespaces are disabled on this host".to_owned(),
            ));
        }
        for directory in [&settings.runtime_dir, &settings.keeper_dir] {
            std::fs::create_dir_all(directory).map_err(|source| SandboxError::Setup {
                what: format!("creating {}", directory.display()),
                source,
            })?;
        }
        // The keeper sockets hand over a session's channels: the server's user alone.
        std::fs::set_permissions(
            &settings.keeper_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .map_err(|source| SandboxError::Setup {
            what: format!("restricting {}", settings.keeper_dir.display()),
            source,
        })?;
        let cgroups = CgroupHost::detect(&settings.cgroup_root);

        if let Some(cgroups) = &cgroups {
            cgroups.remove_stale();
        }
        let started_micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_micros())
            .unwrap_or(0);
        // Session uids cycle through `uid_count`; starting where a previous server (whose
        // adopted sessions keep their uids) is unlikely to have been.
        let first_uid = settings.uid_base
            + u32::try_from(started_micros % u128::from(settings.uid_count.max(1))).unwrap_or(0);
        Ok(Sandbox {
            settings,
            cgroups,
            privileged,
            next_uid: AtomicU32::new(first_uid),
            started_micros,
        })
    }

    /// The binary run as the sandbox launcher and file helper.
    pub fn launcher(&self) -> &Path {
        &self.settings.launcher
    }

    /// cgroup version in use, if any.
    pub fn cgroup_version(&self) -> Option<u8> {
        self.cgroups.as_ref().map(CgroupHost::version)
    }

    /// Whether each session gets its own host uid and a size-limited tmpfs workspace (needs
    /// root on the host; unprivileged servers map every session to their own uid).
    pub fn privileged(&self) -> bool {
        self.privileged
    }

    fn allocate_uid(&self) -> u32 {
        if !self.privileged {
            return nix::unistd::geteuid().as_raw();
        }
        let offset = self.next_uid.fetch_add(1, Ordering::Relaxed) - self.settings.uid_base;
        self.settings.uid_base + offset % self.settings.uid_count.max(1)
    }

    /// Creates `workspace` for a session (a size-limited tmpfs owned by the session's host uid
    /// when privileged) and returns that uid. A workspace that already exists keeps its owner,
    /// so a restarted worker finds its files.
    pub fn prepare_workspace(
        &self,
        workspace: &Path,
        limits: &SessionLimits,
    ) -> Result<u32, SandboxError> {
        let setup = |what: String| move |source| SandboxError::Setup { what, source };
        let mounted_at = std::fs::read_link(workspace).unwrap_or_else(|_| workspace.to_owned());
        if is_mount_point(&mounted_at) {
            let metadata = std::fs::metadata(&mounted_at)
                .map_err(setup(format!("reading {}", mounted_at.display())))?;
            return Ok(std::os::unix::fs::MetadataExt::uid(&metadata));
        }
        let uid = self.allocate_uid();
        if !self.privileged {
            std::fs::create_dir_all(workspace)
                .map_err(setup(format!("creating {}", workspace.display())))?;
            return Ok(uid);
        }
        // The tmpfs lives under /run, which sandboxes replace, and the workspace path is a
        // link to it: other sessions' workspaces then never appear in a session's mount table.
        // Named after this server (its pid and start) and the workspace (a session id): unique
        // among live servers, and distinct from the mounts of sessions a previous server with
        // the same pid left running.
        let name = workspace
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mount_point = self.mount_home().join(format!(
            "{}-{}-{name}",
            std::process::id(),
            self.started_micros
        ));
        std::fs::create_dir_all(&mount_point)
            .map_err(setup(format!("creating {}", mount_point.display())))?;
        let options = format!(
            "size={},mode=0700,uid={uid},gid={uid}",
            limits.workspace_bytes
        );
        mount(
            Some("tmpfs"),
            &mount_point,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .map_err(|source| SandboxError::Setup {
            what: format!("mounting the workspace {}", mount_point.display()),
            source: source.into(),
        })?;
        if let Some(parent) = workspace.parent() {
            std::fs::create_dir_all(parent)
                .map_err(setup(format!("creating {}", parent.display())))?;
        }
        let _ = std::fs::remove_dir(workspace);
        std::os::unix::fs::symlink(&mount_point, workspace)
            .map_err(setup(format!("linking {}", workspace.display())))?;
        Ok(uid)
    }

    /// Where a privileged server mounts workspaces: `/run/corral/workspaces` (or, without a
    /// `/run`, the runtime directory).
    fn mount_home(&self) -> PathBuf {
        if Path::new("/run").is_dir() {
            PathBuf::from("/run/corral/workspaces")
        } else {
            self.settings.runtime_dir.join("workspaces")
        }
    }

    /// Unmounts and removes a workspace (and the link to it).
    pub fn release_workspace(&self, workspace: &Path) {
        let is_link = std::fs::symlink_metadata(workspace)
            .map(|metadata| metadata.file_type().is_symlink())
            .unwrap_or(false);
        let mounted_at = if is_link {
            std::fs::read_link(workspace).ok()
        } else {
            Some(workspace.to_owned())
        };
        if let Some(mounted_at) = &mounted_at {
            if is_mount_point(mounted_at) {
                if let Err(error) = umount2(mounted_at, MntFlags::MNT_DETACH) {
                    tracing::warn!(path = %mounted_at.display(), %error, "could not unmount a workspace");
                }
            }
            if let Err(error) = std::fs::remove_dir_all(mounted_at) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %mounted_at.display(), %error, "could not remove a workspace");
                }
            }
        }
        if is_link {
            let _ = std::fs::remove_file(workspace);
        }
    }

    /// Wraps `command` (as it would run on the host) into a launcher command that runs it in
    /// a fresh sandbox with `workspace` at `/workspace`. `readonly_files` are host files made
    /// visible at the given sandbox paths.
    pub fn wrap(
        &self,
        command: &WorkerCommand,
        placement: WorkerPlacement,
    ) -> Result<SandboxedWorker, SandboxError> {
        let WorkerPlacement {
            name,
            workspace,
            workspace_uid,
            readonly_files,
            exposed_paths,
            limits,
            network,
            join,
        } = placement;
        let name = name.as_str();
        let workspace = workspace.as_path();
        let cgroup = match &self.cgroups {
            Some(host) => Some(
                host.create(
                    name,
                    CgroupLimits {
                        memory_bytes: limits.memory_bytes,
                        max_processes: limits.max_processes,
                        cpu_millicores: limits.cpu_millicores,
                    },
                )
                .map_err(|error| SandboxError::Cgroup(error.to_string()))?,
            ),
            None => None,
        };
        let root_dir = self.settings.runtime_dir.join(format!("root-{name}"));
        std::fs::create_dir_all(&root_dir).map_err(|source| SandboxError::Setup {
            what: format!("creating {}", root_dir.display()),
            source,
        })?;
        let text = |value: &std::ffi::OsStr| value.to_string_lossy().into_owned();
        let keeper_socket = self.settings.keeper_dir.join(format!("{name}.sock"));
        let workspace_mount = std::fs::read_link(workspace)
            .ok()
            .filter(|target| is_mount_point(target));
        let policy = LaunchPolicy {
            program: command.program.to_string_lossy().into_owned(),
            args: std::iter::once(text(command.program.as_os_str()))
                .chain(command.args.iter().map(|arg| text(arg)))
                .collect(),
            env: command
                .env
                .iter()
                .map(|(key, value)| (text(key), text(value)))
                .collect(),
            host_uid: workspace_uid,
            host_gid: workspace_uid,
            privileged_id_maps: self.privileged,
            cgroup_procs: cgroup
                .as_ref()
                .map(SessionCgroup::procs_files)
                .unwrap_or_default(),
            cgroup_version: self.cgroup_version().unwrap_or(0),
            keeper_socket: keeper_socket.clone(),
            adoption_timeout_seconds: self.settings.adoption_timeout.as_secs(),
            workspace_mount,
            root_dir,
            workspace: workspace.to_owned(),
            readonly_files,
            hidden_paths: self.settings.hidden_paths.clone(),
            exposed_paths,
            tmp_bytes: limits.workspace_bytes,
            max_open_files: limits.max_open_files,
            max_processes: limits.max_processes,
            max_file_bytes: limits.workspace_bytes,
            network,
            join,
        };
        let policy_json = serde_json::to_string(&policy).map_err(|error| SandboxError::Setup {
            what: "encoding the launch policy".to_owned(),
            source: std::io::Error::other(error),
        })?;
        Ok(SandboxedWorker {
            command: WorkerCommand {
                program: self.settings.launcher.clone(),
                args: vec!["sandbox-init".into(), policy_json.into()],
                env: Vec::new(),
                working_dir: PathBuf::from("/"),
            },
            cgroup,
            keeper_socket,
        })
    }

    /// The cgroup of the adopted worker named `name`, if it has one.
    pub fn adopted_cgroup(&self, name: &str) -> Option<SessionCgroup> {
        self.cgroups.as_ref().and_then(|host| host.existing(name))
    }

    /// Where the keeper sockets of this server's workers are.
    pub fn keeper_dir(&self) -> &Path {
        &self.settings.keeper_dir
    }

    /// Removes the per-worker root directory after the worker is gone.
    pub fn release_root(&self, name: &str) {
        let _ = std::fs::remove_dir(self.settings.runtime_dir.join(format!("root-{name}")));
    }
}

/// Where the session's workspace is inside the sandbox.
pub fn sandbox_workspace() -> &'static str {
    SANDBOX_WORKSPACE
}

/// Whether `path` is a mount point of this process's mount namespace (bind mounts of the same
/// filesystem included, which a device comparison would miss).
fn is_mount_point(path: &Path) -> bool {
    let Ok(canonical) = std::fs::canonicalize(path) else {
        return false;
    };
    let wanted = canonical.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount_point| unescape_mountinfo(mount_point) == wanted)
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'\\' && index + 3 < bytes.len() {
            let digits = &field[index + 1..(index + 4).min(field.len())];
            if let Ok(value) = u8::from_str_radix(digits, 8) {
                out.push(value);
                index += 4;
                continue;
            }
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn the_root_is_a_mount_point() {
        assert!(is_mount_point(Path::new("/")));
        assert!(!is_mount_point(Path::new("/definitely/not/here")));
    }
}
