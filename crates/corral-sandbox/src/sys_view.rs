//! What of the host's `/sys` a session sees: the CPU (and NUMA node) topology interpreters
//! and numeric libraries read (`os.cpu_count`, glibc's `sysconf(_SC_NPROCESSORS_ONLN)`,
//! OpenBLAS, numpy), and the session's own cgroups at the place a container shows them
//! (`/sys/fs/cgroup/<controller>` on cgroup v1, `/sys/fs/cgroup` on v2). Nothing else: not
//! the host's cgroup tree (other sessions' memory and CPU use), devices, firmware, kernel
//! tunables or modules.
//!
//! Pure planning: which host directory goes where. The launcher mounts the plan (on a fresh
//! tmpfs, each bind read-only) and puts the session in a cgroup namespace, so
//! `/proc/self/cgroup` shows `/` rather than host paths.

use std::path::{Path, PathBuf};

/// Where the host mounts its cgroup hierarchies.
pub const HOST_CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Topology directories under `/sys` bound into every sandbox when the host has them.
pub const TOPOLOGY: [&str; 2] = ["devices/system/cpu", "devices/system/node"];

/// One host directory bound (read-only) into the sandbox's `/sys`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysBind {
    pub host: PathBuf,
    /// Relative to the sandbox's `/sys`.
    pub inside: PathBuf,
}

/// The binds of a session joined to the cgroups whose `cgroup.procs` files are `cgroup_procs`;
/// `unified` says the host runs cgroup v2 (one hierarchy at [`HOST_CGROUP_ROOT`]). A
/// `cgroup.procs` outside the host's cgroup root is left out.
pub fn plan(cgroup_procs: &[PathBuf], unified: bool) -> Vec<SysBind> {
    let mut binds: Vec<SysBind> = TOPOLOGY
        .iter()
        .map(|relative| SysBind {
            host: Path::new("/sys").join(relative),
            inside: PathBuf::from(relative),
        })
        .collect();
    let root = Path::new(HOST_CGROUP_ROOT);
    for procs in cgroup_procs {
        let Some(directory) = procs.parent() else {
            continue;
        };
        let Ok(relative) = directory.strip_prefix(root) else {
            continue;
        };
        let inside = if unified {
            PathBuf::from("fs/cgroup")
        } else {
            match relative.components().next() {
                Some(controller) => Path::new("fs/cgroup").join(controller),
                None => continue,
            }
        };
        if binds.iter().any(|bind| bind.inside == inside) {
            continue;
        }
        binds.push(SysBind {
            host: directory.to_owned(),
            inside,
        });
    }
    binds
}

/// Whether the host's cgroups are the unified (v2) hierarchy.
pub fn host_is_unified() -> bool {
    Path::new(HOST_CGROUP_ROOT)
        .join("cgroup.controllers")
        .exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inside(binds: &[SysBind]) -> Vec<(String, String)> {
        binds
            .iter()
            .map(|bind| {
                (
                    bind.host.display().to_string(),
                    bind.inside.display().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn v1_controllers_each_show_only_the_sessions_own_cgroup() {
        let procs = [
            PathBuf::from("/sys/fs/cgroup/memory/corral/7-1/cgroup.procs"),
            PathBuf::from("/sys/fs/cgroup/pids/corral/7-1/cgroup.procs"),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/corral/7-1/cgroup.procs"),
            PathBuf::from("/elsewhere/cgroup.procs"),
        ];
        assert_eq!(
            inside(&plan(&procs, false)),
            [
                ("/sys/devices/system/cpu", "devices/system/cpu"),
                ("/sys/devices/system/node", "devices/system/node"),
                ("/sys/fs/cgroup/memory/corral/7-1", "fs/cgroup/memory"),
                ("/sys/fs/cgroup/pids/corral/7-1", "fs/cgroup/pids"),
                (
                    "/sys/fs/cgroup/cpu,cpuacct/corral/7-1",
                    "fs/cgroup/cpu,cpuacct"
                ),
            ]
            .map(|(host, inside)| (host.to_owned(), inside.to_owned()))
        );
    }

    #[test]
    fn v2_shows_the_sessions_cgroup_as_the_root() {
        let procs = [PathBuf::from("/sys/fs/cgroup/corral/7-1/cgroup.procs")];
        let binds = plan(&procs, true);
        assert_eq!(
            binds.last(),
            Some(&SysBind {
                host: PathBuf::from("/sys/fs/cgroup/corral/7-1"),
                inside: PathBuf::from("fs/cgroup"),
            })
        );
        assert_eq!(binds.len(), TOPOLOGY.len() + 1);
    }
}
