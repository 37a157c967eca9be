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
    /// What the host offers and, given the server's `sandbox` (`None` when the operator
    /// disabled sandboxing), what every session actually gets.
    pub fn probe(sandbox: Option<&crate::Sandbox>) -> Self {
        let user_namespaces = Path::new("/proc/self/ns/user").exists()
            && read_trimmed("/proc/sys/user/max_user_namespaces")
                .and_then(|text| text.parse::<u64>().ok())
                .is_none_or(|count| count > 0);
        let cgroup_v2 = read_trimmed("/sys/fs/cgroup/cgroup.controllers")
            .is_some_and(|controllers| !controllers.is_empty());
        let cgroup_v1 = Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
        let host_cgroup_version = if cgroup_v2 {
            Some(2)
        } else if cgroup_v1 {
            Some(1)
        } else {
            None
        };
        let cgroup_version = match sandbox {
            Some(sandbox) => sandbox.cgroup_version(),
            None => None,
        };
        let sandboxed = sandbox.is_some();
        let privileged = sandbox.is_some_and(crate::Sandbox::privileged);
        let seccomp = Path::new("/proc/sys/kernel/seccomp").exists()
            || read_trimmed("/proc/self/status").is_some_and(|status| status.contains("Seccomp:"));
        let feature = |name, available: bool, active: bool| IsolationFeature {
            name,
            available,
            active: available && active,
        };
        HostIsolation {
            features: vec![
                feature("process_group", true, true),
                feature("user_namespace", user_namespaces, sandboxed),
                feature("per_session_uid", user_namespaces, privileged),
                feature(
                    "pid_namespace",
                    Path::new("/proc/self/ns/pid").exists(),
                    sandboxed,
                ),
                feature(
                    "mount_namespace",
                    Path::new("/proc/self/ns/mnt").exists(),
                    sandboxed,
                ),
                feature(
                    "network_namespace",
                    Path::new("/proc/self/ns/net").exists(),
                    sandboxed,
                ),
                feature(
                    "ipc_namespace",
                    Path::new("/proc/self/ns/ipc").exists(),
                    sandboxed,
                ),
                feature(
                    "uts_namespace",
                    Path::new("/proc/self/ns/uts").exists(),
                    sandboxed,
                ),
                feature(
                    "cgroup_namespace",
                    Path::new("/proc/self/ns/cgroup").exists(),
                    sandboxed,
                ),
                feature(
                    "cgroups",
                    host_cgroup_version.is_some(),
                    cgroup_version.is_some(),
                ),
                feature("workspace_size_limit", true, privileged),
                feature("rlimits", true, sandboxed),
                feature("no_new_privs", true, sandboxed),
                feature("capabilities_dropped", true, sandboxed),
                feature("seccomp", seccomp, sandboxed),
            ],
            cgroup_version: cgroup_version.or(host_cgroup_version),
        }
    }

    /// Whether sessions are actually isolated from each other and the host: every namespace,
    /// cgroup limits and seccomp are active.
    pub fn sandboxed(&self) -> bool {
        let active = |name: &str| {
            self.features
                .iter()
                .any(|feature| feature.name == name && feature.active)
        };
        [
            "user_namespace",
            "pid_namespace",
            "mount_namespace",
            "network_namespace",
            "cgroups",
            "seccomp",
        ]
        .into_iter()
        .all(active)
    }

    /// Names of features the host offers but sessions do not get.
    pub fn inactive(&self) -> Vec<&'static str> {
        self.features
            .iter()
            .filter(|feature| !feature.active)
            .map(|feature| feature.name)
            .collect()
    }
}

/// `MemAvailable` from `/proc/meminfo`: memory the host can give without swapping.
pub fn available_memory_bytes() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_owned())
}
