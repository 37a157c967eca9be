//! Per-session control groups: memory, processes and CPU limits, OOM detection and killing
//! everything inside. cgroup v2 when the unified hierarchy has controllers, v1 otherwise.
//!
//! Creates and removes directories under the cgroup filesystem and writes their control
//! files; it does not decide limits (the engine does) or move processes (the launcher joins
//! its own cgroup before it starts the session).

use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Which cgroup layout the host has, and where corral's subtree lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupHost {
    /// One `corral` directory per controller (`memory`, `pids`, `cpu`).
    V1 { root: PathBuf },
    /// `corral` under the unified hierarchy's root.
    V2 { root: PathBuf },
}

/// Limits applied to one session's cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupLimits {
    pub memory_bytes: u64,
    pub max_processes: u64,
    /// CPU time per wall-clock second, in thousandths of a core.
    pub cpu_millicores: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(io_error(path))
}

const V1_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];
const CPU_PERIOD_MICROS: u64 = 100_000;
/// The CPU share (v1 `cpu.shares`, v2 `cpu.weight`) of a session at the default and while
/// its worker starts: a starting worker outweighs busy neighbours eight to one, so a session
/// still starts promptly while other sessions spin on every core (their quotas still hold).
const CPU_SHARES: (u64, u64) = (1024, 8192);
const CPU_WEIGHT: (u64, u64) = (100, 800);

/// How much of the CPU a session's cgroup gets against the other sessions when both want it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuPriority {
    /// While the worker starts (until the driver says `ready`).
    Starting,
    /// Afterwards.
    Normal,
}

impl CgroupHost {
    /// Finds a cgroup hierarchy this process may create session groups in, creating corral's
    /// subtree. `None` when there is none (no cgroupfs, or not writable).
    pub fn detect(cgroup_root: &Path) -> Option<CgroupHost> {
        let unified_controllers =
            std::fs::read_to_string(cgroup_root.join("cgroup.controllers")).unwrap_or_default();
        if ["memory", "pids", "cpu"].iter().all(|controller| {
            unified_controllers
                .split_whitespace()
                .any(|c| c == *controller)
        }) {
            let root = cgroup_root.join("corral");
            let enable = "+memory +pids +cpu";
            let ready = std::fs::create_dir_all(&root).is_ok()
                && write(&cgroup_root.join("cgroup.subtree_control"), enable).is_ok()
                && write(&root.join("cgroup.subtree_control"), enable).is_ok();
            return ready.then_some(CgroupHost::V2 { root });
        }
        let all_v1 = V1_CONTROLLERS.iter().all(|controller| {
            let directory = cgroup_root.join(controller).join("corral");
            std::fs::create_dir_all(&directory).is_ok()
        });
        all_v1.then(|| CgroupHost::V1 {
            root: cgroup_root.to_owned(),
        })
    }

    /// Removes session cgroups left empty by servers that are gone (named `<server pid>-<n>`).
    /// One with processes inside belongs to a session whose launcher outlived its server and
    /// waits to be adopted; that launcher removes it when the session ends.
    pub fn remove_stale(&self) {
        let parents: Vec<PathBuf> = match self {
            CgroupHost::V1 { root } => V1_CONTROLLERS
                .iter()
                .map(|controller| root.join(controller).join("corral"))
                .collect(),
            CgroupHost::V2 { root } => vec![root.clone()],
        };
        let mut stale: Vec<String> = Vec::new();
        for parent in &parents {
            let Ok(entries) = std::fs::read_dir(parent) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let server_alive = name
                    .split_once('-')
                    .and_then(|(pid, _)| pid.parse::<u32>().ok())
                    .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                if entry.path().is_dir() && !server_alive && !stale.contains(&name) {
                    stale.push(name);
                }
            }
        }
        for name in stale {
            let cgroup = self.named(&name);
            if cgroup.pids().is_empty() {
                cgroup.remove();
            }
        }
    }

    pub fn version(&self) -> u8 {
        match self {
            CgroupHost::V1 { .. } => 1,
            CgroupHost::V2 { .. } => 2,
        }
    }

    /// The existing cgroup `name` (an adopted session's).
    pub fn existing(&self, name: &str) -> Option<SessionCgroup> {
        let cgroup = self.named(name);
        cgroup
            .directories
            .iter()
            .all(|directory| directory.is_dir())
            .then_some(cgroup)
    }

    fn named(&self, name: &str) -> SessionCgroup {
        match self {
            CgroupHost::V1 { root } => SessionCgroup {
                directories: V1_CONTROLLERS
                    .iter()
                    .map(|controller| root.join(controller).join("corral").join(name))
                    .collect(),
                version: 1,
            },
            CgroupHost::V2 { root } => SessionCgroup {
                directories: vec![root.join(name)],
                version: 2,
            },
        }
    }

    /// Creates the cgroup `name` with `limits`.
    pub fn create(&self, name: &str, limits: CgroupLimits) -> Result<SessionCgroup, CgroupError> {
        let cgroup = self.named(name);
        for directory in &cgroup.directories {
            std::fs::create_dir_all(directory).map_err(io_error(directory))?;
        }
        if let Err(error) = cgroup.apply(limits) {
            cgroup.remove();
            return Err(error);
        }
        Ok(cgroup)
    }
}

/// One session's cgroup (one directory per controller on v1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionCgroup {
    directories: Vec<PathBuf>,
    version: u8,
}

impl SessionCgroup {
    /// The cgroup whose `cgroup.procs` files are `files` (as [`Self::procs_files`] gave them).
    pub(crate) fn from_procs_files(files: &[PathBuf], version: u8) -> Option<SessionCgroup> {
        let directories: Vec<PathBuf> = files
            .iter()
            .filter_map(|file| file.parent().map(Path::to_owned))
            .collect();
        (!directories.is_empty() && version > 0).then_some(SessionCgroup {
            directories,
            version,
        })
    }

    fn apply(&self, limits: CgroupLimits) -> Result<(), CgroupError> {
        let quota = (limits.cpu_millicores * CPU_PERIOD_MICROS / 1000).max(1000);
        if self.version == 2 {
            let directory = &self.directories[0];
            write(
                &directory.join("memory.max"),
                &limits.memory_bytes.to_string(),
            )?;
            let _ = write(&directory.join("memory.swap.max"), "0");
            write(
                &directory.join("pids.max"),
                &limits.max_processes.to_string(),
            )?;
            write(
                &directory.join("cpu.max"),
                &format!("{quota} {CPU_PERIOD_MICROS}"),
            )?;
            self.set_cpu_priority(CpuPriority::Starting);
            return Ok(());
        }
        for directory in &self.directories {
            match directory_controller(directory) {
                Some("memory") => {
                    write(
                        &directory.join("memory.limit_in_bytes"),
                        &limits.memory_bytes.to_string(),
                    )?;
                    let swap = directory.join("memory.memsw.limit_in_bytes");
                    if swap.exists() {
                        write(&swap, &limits.memory_bytes.to_string())?;
                    }
                }
                Some("pids") => write(
                    &directory.join("pids.max"),
                    &limits.max_processes.to_string(),
                )?,
                Some("cpu") => {
                    write(
                        &directory.join("cpu.cfs_period_us"),
                        &CPU_PERIOD_MICROS.to_string(),
                    )?;
                    write(&directory.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
                _ => {}
            }
        }
        self.set_cpu_priority(CpuPriority::Starting);
        Ok(())
    }

    /// Sets the cgroup's CPU share (see [`CpuPriority`]). Best effort: a host without the
    /// control file keeps equal shares, which only makes starts slower under load.
    pub fn set_cpu_priority(&self, priority: CpuPriority) {
        let pick = |(normal, starting): (u64, u64)| match priority {
            CpuPriority::Starting => starting,
            CpuPriority::Normal => normal,
        };
        let (file, value) = if self.version == 2 {
            ("cpu.weight", pick(CPU_WEIGHT))
        } else {
            ("cpu.shares", pick(CPU_SHARES))
        };
        for directory in &self.directories {
            if self.version == 2 || directory_controller(directory) == Some("cpu") {
                if let Err(error) = write(&directory.join(file), &value.to_string()) {
                    tracing::debug!(%error, "could not set a session's CPU share");
                }
            }
        }
    }

    /// The cgroup's CPU share as its control file says (v1 `cpu.shares`, v2 `cpu.weight`).
    pub fn cpu_share(&self) -> Option<u64> {
        let (file, directory) = if self.version == 2 {
            ("cpu.weight", self.directories.first())
        } else {
            (
                "cpu.shares",
                self.directories
                    .iter()
                    .find(|directory| directory_controller(directory) == Some("cpu")),
            )
        };
        std::fs::read_to_string(directory?.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The files a process writes its pid to in order to join (one per hierarchy).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.directories
            .iter()
            .map(|directory| directory.join("cgroup.procs"))
            .collect()
    }

    /// Whether the kernel's OOM killer has killed a process of this cgroup.
    pub fn oom_killed(&self) -> bool {
        let memory_directory = if self.version == 2 {
            self.directories.first()
        } else {
            self.directories
                .iter()
                .find(|directory| directory_controller(directory) == Some("memory"))
        };
        let Some(directory) = memory_directory else {
            return false;
        };
        let file = if self.version == 2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(directory.join(file))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.strip_prefix("oom_kill "))
            .any(|count| count.trim().parse::<u64>().is_ok_and(|count| count > 0))
    }

    /// Current memory use in bytes (`memory.current`, or `memory.usage_in_bytes` on v1), when
    /// the kernel reports it.
    pub fn memory_current_bytes(&self) -> Option<u64> {
        let (directory, file) = if self.version == 2 {
            (self.directories.first()?, "memory.current")
        } else {
            (
                self.directories
                    .iter()
                    .find(|directory| directory_controller(directory) == Some("memory"))?,
                "memory.usage_in_bytes",
            )
        };
        std::fs::read_to_string(directory.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Peak memory use in bytes, when the kernel reports it.
    pub fn memory_peak_bytes(&self) -> Option<u64> {
        let (directory, file) = if self.version == 2 {
            (self.directories.first()?, "memory.peak")
        } else {
            (
                self.directories
                    .iter()
                    .find(|directory| directory_controller(directory) == Some("memory"))?,
                "memory.max_usage_in_bytes",
            )
        };
        std::fs::read_to_string(directory.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The pids in the cgroup (from its first hierarchy).
    pub fn pids(&self) -> Vec<i32> {
        self.procs_files()
            .first()
            .and_then(|file| std::fs::read_to_string(file).ok())
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }

    /// SIGKILLs every process in the cgroup.
    pub fn kill_all(&self) {
        if self.version == 2 {
            if let Some(directory) = self.directories.first() {
                if write(&directory.join("cgroup.kill"), "1").is_ok() {
                    return;
                }
            }
        }
        for pid in self.pids() {
            if pid > 1 {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }

    /// Removes the cgroup's directories (they must be empty of processes).
    pub fn remove(&self) -> bool {
        let mut removed = true;
        for directory in &self.directories {
            if let Err(error) = std::fs::remove_dir(directory) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::debug!(path = %directory.display(), %error, "cgroup not removed yet");
                    removed = false;
                }
            }
        }
        removed
    }
}

fn directory_controller(directory: &Path) -> Option<&str> {
    // <root>/<controller>/corral/<name>
    directory.parent()?.parent()?.file_name()?.to_str()
}
