//! What isolation the host offers and what corral applies, for start-up logs and `/v1/info`.
//!
//! Only reads `/proc` and `/sys`; changes nothing.

use std::path::Path;

/// One isolation mechanism and whether the host has it / corral applies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsolationFeature {
    pub name: &'static str,
    /// The host offers it.
    pub available: bool,
    /// Corral applies it to every session.
    pub active: bool,
}

/// The host's isolation picture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostIsolation {
    pub features: Vec<IsolationFeature>,
    pub cgroup_version: Option<u8>,
}

impl HostIsolation {
    /// Probes the host. Nothing is active yet: sessions run as plain child processes in
    /// their own process group.
    pub fn probe() -> Self {
        let user_namespaces = Path::new("/proc/self/ns/user").exists()
            && read_trimmed("/proc/sys/user/max_user_namespaces")
                .and_then(|text| text.parse::<u64>().ok())
                .is_none_or(|count| count > 0);
        let cgroup_v2 = read_trimmed("/sys/fs/cgroup/cgroup.controllers")
            .or_else(|| read_trimmed("/sys/fs/cgroup/unified/cgroup.controllers"))
            .is_some_and(|controllers| !controllers.is_empty());
        let cgroup_v1 = Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
        let cgroup_version = if cgroup_v2 {
            Some(2)
        } else if cgroup_v1 {
            Some(1)
        } else {
            None
        };
        let feature = |name, available| IsolationFeature {
            name,
            available,
            // Only the process group (kill the whole tree) is applied so far.
            active: name == "process_group",
        };
        HostIsolation {
            features: vec![
                feature("process_group", true),
                feature("user_namespace", user_namespaces),
                feature("pid_namespace", Path::new("/proc/self/ns/pid").exists()),
                feature("mount_namespace", Path::new("/proc/self/ns/mnt").exists()),
                feature("network_namespace", Path::new("/proc/self/ns/net").exists()),
                feature("cgroups", cgroup_version.is_some()),
                feature("seccomp", Path::new("/proc/sys/kernel/seccomp").exists()),
            ],
            cgroup_version,
        }
    }

    /// Whether sessions are actually isolated from each other and the host.
    pub fn sandboxed(&self) -> bool {
        false
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_owned())
}
