//! The seccomp policy of a session, kept as data: the syscalls a Python session never needs
//! answer `EPERM`, and `clone3` answers `ENOSYS` so the C library falls back to `clone`,
//! whose namespace flags can be inspected.
//!
//! Builds and installs filters; deciding when to install them is `launcher`'s job.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Denied outright, each with why a session has no business calling it.
pub const DENIED_SYSCALLS: &[(&str, i64)] = &[
    ("mount", libc::SYS_mount),                 // filesystem layout is fixed
    ("umount2", libc::SYS_umount2),             // same
    ("pivot_root", libc::SYS_pivot_root),       // same
    ("chroot", libc::SYS_chroot),               // same
    ("open_tree", libc::SYS_open_tree),         // new mount API
    ("move_mount", libc::SYS_move_mount),       // new mount API
    ("fsopen", libc::SYS_fsopen),               // new mount API
    ("fsconfig", libc::SYS_fsconfig),           // new mount API
    ("fsmount", libc::SYS_fsmount),             // new mount API
    ("fspick", libc::SYS_fspick),               // new mount API
    ("mount_setattr", libc::SYS_mount_setattr), // new mount API
    ("ptrace", libc::SYS_ptrace),               // debugging other processes
    ("process_vm_readv", libc::SYS_process_vm_readv), // reading other processes
    ("process_vm_writev", libc::SYS_process_vm_writev), // writing other processes
    ("kexec_load", libc::SYS_kexec_load),       // replacing the kernel
    ("kexec_file_load", libc::SYS_kexec_file_load), // same
    ("reboot", libc::SYS_reboot),               // host power
    ("init_module", libc::SYS_init_module),     // kernel modules
    ("finit_module", libc::SYS_finit_module),   // same
    ("delete_module", libc::SYS_delete_module), // same
    ("bpf", libc::SYS_bpf),                     // kernel programs
    ("perf_event_open", libc::SYS_perf_event_open), // kernel profiling, side channels
    ("keyctl", libc::SYS_keyctl),               // kernel keyrings
    ("add_key", libc::SYS_add_key),             // same
    ("request_key", libc::SYS_request_key),     // same
    ("swapon", libc::SYS_swapon),               // host memory
    ("swapoff", libc::SYS_swapoff),             // same
    ("unshare", libc::SYS_unshare),             // new namespaces
    ("setns", libc::SYS_setns),                 // entering namespaces
    ("userfaultfd", libc::SYS_userfaultfd),     // exploit primitive
    ("open_by_handle_at", libc::SYS_open_by_handle_at), // escapes bind mounts
    ("name_to_handle_at", libc::SYS_name_to_handle_at), // same
    ("acct", libc::SYS_acct),                   // process accounting
    ("quotactl", libc::SYS_quotactl),           // disk quotas
    ("settimeofday", libc::SYS_settimeofday),   // host clock
    ("clock_settime", libc::SYS_clock_settime), // same
    ("adjtimex", libc::SYS_adjtimex),           // same
    ("iopl", libc::SYS_iopl),                   // raw I/O ports
    ("ioperm", libc::SYS_ioperm),               // same
    ("lookup_dcookie", libc::SYS_lookup_dcookie), // kernel profiling
    ("vhangup", libc::SYS_vhangup),             // terminals
    ("personality", libc::SYS_personality),     // ASLR switches
    // io_uring: a large kernel attack surface that also bypasses per-syscall filtering (its
    // operations are submitted through shared rings, not as syscalls).
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
];

/// Namespace flags refused on `clone`.
const NEW_NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWCGROUP as u64,
];

#[derive(Debug, thiserror::Error)]
#[error("could not build the seccomp filter: {0}")]
pub struct SeccompError(String);

fn target_arch() -> Result<TargetArch, SeccompError> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|error: seccompiler::BackendError| SeccompError(error.to_string()))
}

/// The session's filters, in installation order.
pub fn session_filters() -> Result<Vec<BpfProgram>, SeccompError> {
    let arch = target_arch()?;
    let fail = |error: seccompiler::BackendError| SeccompError(error.to_string());
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> = DENIED_SYSCALLS
        .iter()
        .map(|(_, number)| (*number, Vec::new()))
        .collect();
    let mut clone_rules = Vec::new();
    for flag in NEW_NAMESPACE_FLAGS {
        clone_rules.push(
            SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(*flag),
                *flag,
            )
            .map_err(fail)?])
            .map_err(fail)?,
        );
    }
    denied.insert(libc::SYS_clone, clone_rules);
    let deny = SeccompFilter::new(
        denied,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(fail)?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(fail)?;
    let mut programs = Vec::new();
    for filter in [deny, clone3] {
        programs
            .push(BpfProgram::try_from(filter).map_err(|error| SeccompError(error.to_string()))?);
    }
    Ok(programs)
}

/// Installs `filters` on the calling thread (requires `no_new_privs` or `CAP_SYS_ADMIN`).
pub fn install(filters: &[BpfProgram]) -> Result<(), SeccompError> {
    for filter in filters {
        seccompiler::apply_filter(filter).map_err(|error| SeccompError(error.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_for_this_architecture() {
        let filters = session_filters().expect("filters build");
        assert_eq!(filters.len(), 2);
        assert!(filters.iter().all(|program| !program.is_empty()));
    }

    #[test]
    fn the_deny_list_has_no_duplicates() {
        let mut numbers: Vec<i64> = DENIED_SYSCALLS.iter().map(|(_, n)| *n).collect();
        numbers.sort();
        numbers.dedup();
        assert_eq!(numbers.len(), DENIED_SYSCALLS.len());
    }
}
