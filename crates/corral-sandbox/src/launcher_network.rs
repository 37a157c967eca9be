//! A session's network stack, for sessions whose policy allows any destination: the
//! launcher attaches slirp4netns to the session's network namespace (a child of the launcher
//! that ends with it: it exits when the launcher's end of its exit pipe closes), and init
//! installs the session's `/etc/hosts`, a `/etc/resolv.conf` (its DNS answerer, or nothing), and the
//! nftables rules (`network_rules`) before the worker starts. The worker has no capabilities,
//! so it can change none of them.
//!
//! Deliberately does not decide what is allowed; runs only in the launcher and its init.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::Pid;

use crate::policy::NetworkSetup;

/// How long slirp4netns may take to configure the session's interface.
const SLIRP_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Where init assembles the session's name files before binding them over `/etc`.
const NAME_FILES_DIR: &str = "/run/corral-network";

#[derive(Debug, thiserror::Error)]
#[error("network: {0}")]
pub(crate) struct NetworkError(String);

fn fail(what: impl std::fmt::Display, error: impl std::fmt::Display) -> NetworkError {
    NetworkError(format!("{what}: {error}"))
}

/// The running slirp4netns; it ends when this (the launcher) lets go of its exit pipe.
pub(crate) struct SlirpStack {
    _exit_pipe: OwnedFd,
}

/// Starts slirp4netns on `init`'s network namespace (after its id maps are written) and waits
/// until it has configured the interface (10.0.2.100, default route via 10.0.2.2).
pub(crate) fn start_slirp(init: Pid, setup: &NetworkSetup) -> Result<SlirpStack, NetworkError> {
    let (ready_read, ready_write) = nix::unistd::pipe().map_err(|e| fail("pipe", e))?;
    let (exit_read, exit_write) = nix::unistd::pipe().map_err(|e| fail("pipe", e))?;
    let mut command = Command::new(&setup.slirp4netns);
    command
        .args(["--configure", "--mtu=65520", "--enable-seccomp"])
        .args(["--ready-fd=3", "--exit-fd=4"])
        .args((!setup.host_loopback).then_some("--disable-host-loopback"))
        .arg(init.to_string())
        .arg("tap0")
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // The launcher's stdout and stderr are the worker's pipes: nothing of slirp's goes there.
        .stderr(Stdio::null());
    let ready_raw = ready_write.as_raw_fd();
    let exit_raw = exit_read.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (dup2, close_range, sigprocmask); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(ready_raw, 3) < 0 || libc::dup2(exit_raw, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Nothing of the worker's or the keeper's reaches slirp4netns.
            crate::process::close_descriptors_from(5);
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| fail(format!("starting {}", setup.slirp4netns.display()), e))?;
    drop(ready_write);
    drop(exit_read);
    let pid = Pid::from_raw(child.id() as i32);
    let stack = SlirpStack {
        _exit_pipe: exit_write,
    };
    let mut fds = [PollFd::new(ready_read.as_fd(), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(SLIRP_READY_TIMEOUT).unwrap_or(PollTimeout::MAX);
    let ready = poll(&mut fds, timeout).map_err(|e| fail("waiting for slirp4netns", e))?;
    let mut byte = [0u8; 1];
    let mut reader = std::fs::File::from(ready_read);
    if ready == 0 || reader.read(&mut byte).unwrap_or(0) != 1 {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        return Err(NetworkError(
            "slirp4netns did not configure the session's interface".to_owned(),
        ));
    }
    Ok(stack)
}

/// In init, after the root is pivoted and before the worker starts: the session's name files
/// over `/etc/hosts` and `/etc/resolv.conf` (read-only), then the nftables rules.
pub(crate) fn install_in_init(setup: &NetworkSetup) -> Result<(), NetworkError> {
    install_name_files(setup)?;
    install_rules(setup)
}

fn install_name_files(setup: &NetworkSetup) -> Result<(), NetworkError> {
    let directory = Path::new(NAME_FILES_DIR);
    std::fs::create_dir_all(directory).map_err(|e| fail("creating the name files", e))?;
    mount(
        Some("tmpfs"),
        directory,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=64k,mode=0755"),
    )
    .map_err(|e| fail("mounting the name files", e))?;
    // The resolver points at the session's DNS answerer (allowed names only), or at its
    // own loopback where nothing answers.
    let files = [
        ("hosts", setup.hosts.as_str()),
        ("resolv.conf", setup.resolv_conf.as_str()),
    ];
    for (name, contents) in files {
        let source = directory.join(name);
        std::fs::write(&source, contents).map_err(|e| fail(format!("writing {name}"), e))?;
        let target = Path::new("/etc").join(name);
        let is_file = std::fs::symlink_metadata(&target)
            .map(|metadata| metadata.is_file())
            .unwrap_or(false);
        if !is_file {
            // A symlink (or nothing) on the host: the read-only /etc cannot take a new file.
            continue;
        }
        mount(
            Some(&source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| fail(format!("binding /etc/{name}"), e))?;
        mount(
            None::<&str>,
            &target,
            None::<&str>,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_BIND
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV,
            None::<&str>,
        )
        .map_err(|e| fail(format!("making /etc/{name} read-only"), e))?;
    }
    // The binds keep the files; the scratch mount goes.
    umount2(directory, MntFlags::MNT_DETACH).map_err(|e| fail("detaching the name files", e))?;
    let _ = std::fs::remove_dir(directory);
    Ok(())
}

fn install_rules(setup: &NetworkSetup) -> Result<(), NetworkError> {
    let mut child = Command::new(&setup.nft)
        .args(["-f", "-"])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("starting {}", setup.nft.display()), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(setup.ruleset.as_bytes())
            .map_err(|e| fail("writing the rules to nft", e))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| fail("waiting for nft", e))?;
    if !output.status.success() {
        return Err(NetworkError(format!(
            "nft refused the rules ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}
