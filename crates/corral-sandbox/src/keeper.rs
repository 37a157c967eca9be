//! The keeper channel: how a sandboxed worker outlives the server that started it, and how
//! the next server takes it over.
//!
//! Each worker's launcher (`corral sandbox-init`, on the host) keeps a copy of the host ends
//! of the worker's channels — the control socket and the read ends of the stdout and stderr
//! pipes — and listens on a Unix socket under the data directory. Its *owner* (the server
//! that started it, then any server that adopted it) holds a connection to that socket; when
//! the connection ends without a [`KeeperMessage::Terminate`], the launcher is orphaned and
//! waits up to its adoption timeout for a new owner before it ends the worker itself. A
//! server that connects receives [`KeeperMessage::Hello`] with the three channels attached
//! (`SCM_RIGHTS`) and becomes the owner; the launcher reports the worker's end to its owner
//! with [`KeeperMessage::Exited`].
//!
//! Frames are a 4-byte big-endian length and a JSON object, as on the worker's own channel.
//! This module owns the launcher's side (`LauncherKeeper`, driven by the launcher's poll
//! loop) and the server's (`adopt`, `KeeperLink`); it knows nothing of sessions or of the
//! worker protocol carried by the channels it hands over.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where the launcher finds its copy of the control socket's host end.
pub(crate) const KEPT_CONTROL_FD: RawFd = 4;
/// Where the launcher finds its copy of the stdout pipe's read end.
pub(crate) const KEPT_STDOUT_FD: RawFd = 5;
/// Where the launcher finds its copy of the stderr pipe's read end.
pub(crate) const KEPT_STDERR_FD: RawFd = 6;
/// The launcher's end of its first owner's connection (the server that spawned it).
pub(crate) const OWNER_FD: RawFd = 7;
/// A joined session's init's end of its join socket (see `zygote`).
pub(crate) const JOIN_FD: RawFd = 8;
/// The first descriptor a launcher closes at start: everything from here up is not its own.
pub(crate) const FIRST_FOREIGN_FD: RawFd = 9;
/// Largest keeper frame: every message is a few dozen bytes.
const MAX_FRAME_BYTES: usize = 64 * 1024;

/// What launcher and owner say to each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KeeperMessage {
    /// Launcher → a connecting server, carrying the control socket, stdout and stderr.
    Hello { launcher_pid: u32, name: String },
    /// Launcher → owner: the worker's namespace ended; the launcher's own exit code follows.
    Exited { code: i32 },
    /// Owner → launcher: end the worker now and release what an orphan would.
    Terminate,
}

/// Failures of taking over a worker.
#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    #[error("the worker's launcher is gone")]
    Gone,
    #[error("keeper channel: {0}")]
    Io(#[from] std::io::Error),
    #[error("keeper channel: {0}")]
    Sys(#[from] nix::Error),
    #[error("keeper channel: unexpected frame: {0}")]
    Protocol(String),
}

fn encode(message: &KeeperMessage) -> Vec<u8> {
    // A unit-like enum of plain fields always serialises.
    let payload = serde_json::to_vec(message).unwrap_or_default();
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(0).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame
}

/// Takes one complete frame off the front of `buffer`, if it holds one.
fn take_frame(buffer: &mut Vec<u8>) -> Result<Option<KeeperMessage>, KeeperError> {
    if buffer.len() < 4 {
        return Ok(None);
    }
    let length = u32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]) as usize;
    if length > MAX_FRAME_BYTES {
        return Err(KeeperError::Protocol(format!("a frame of {length} bytes")));
    }
    if buffer.len() < 4 + length {
        return Ok(None);
    }
    let message = serde_json::from_slice(&buffer[4..4 + length])
        .map_err(|error| KeeperError::Protocol(error.to_string()));
    buffer.drain(..4 + length);
    message.map(Some)
}

/// A path for `path` short enough for `sockaddr_un` (108 bytes), through the directory's
/// descriptor when the path itself is longer; the directory handle must outlive its use.
fn short_socket_path(path: &Path) -> std::io::Result<(PathBuf, Option<std::fs::File>)> {
    if path.as_os_str().len() < 100 {
        return Ok((path.to_owned(), None));
    }
    let (Some(directory), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok((path.to_owned(), None));
    };
    let handle = std::fs::File::open(directory)?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd())).join(name);
    Ok((short, Some(handle)))
}

/// The launcher's half: its listening socket, its owner, its orphan clock.
pub(crate) struct LauncherKeeper {
    listener: Option<StdUnixListener>,
    owner: Option<StdUnixStream>,
    owner_buffer: Vec<u8>,
    kept: [OwnedFd; 3],
    orphaned_at: Option<Instant>,
    adoption_timeout: Duration,
    terminated: bool,
    /// The sandbox name (cgroup and root directory) of the worker, told to adopters.
    name: String,
}

/// What the owner's connection said.
pub(crate) enum OwnerEvent {
    Nothing,
    Terminate,
    Gone,
}

impl LauncherKeeper {
    /// Takes the kept channels and the first owner's connection from their fixed descriptors
    /// and listens on `socket` (replacing a stale file there).
    pub(crate) fn new(
        socket: &Path,
        name: String,
        adoption_timeout: Duration,
    ) -> std::io::Result<Self> {
        // SAFETY: the server placed these descriptors at these numbers before exec (see
        // `process::spawn_worker`), nothing else in this fresh process owns them, and each
        // is wrapped exactly once.
        let (kept, owner) = unsafe {
            (
                [
                    OwnedFd::from_raw_fd(KEPT_CONTROL_FD),
                    OwnedFd::from_raw_fd(KEPT_STDOUT_FD),
                    OwnedFd::from_raw_fd(KEPT_STDERR_FD),
                ],
                StdUnixStream::from_raw_fd(OWNER_FD),
            )
        };
        for fd in kept
            .iter()
            .map(AsRawFd::as_raw_fd)
            .chain([owner.as_raw_fd()])
        {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )?;
        }
        let _ = std::fs::remove_file(socket);
        let (bind_path, _directory) = short_socket_path(socket)?;
        let listener = StdUnixListener::bind(&bind_path)?;
        std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        owner.set_nonblocking(true)?;
        listener.set_nonblocking(true)?;
        Ok(LauncherKeeper {
            listener: Some(listener),
            owner: Some(owner),
            owner_buffer: Vec::new(),
            kept,
            orphaned_at: None,
            adoption_timeout,
            terminated: false,
            name,
        })
    }

    pub(crate) fn listener_fd(&self) -> Option<BorrowedFd<'_>> {
        self.listener.as_ref().map(AsFd::as_fd)
    }

    pub(crate) fn owner_fd(&self) -> Option<BorrowedFd<'_>> {
        self.owner.as_ref().map(AsFd::as_fd)
    }

    /// Whether the worker should end now: its owner asked, or it was orphaned for longer
    /// than the adoption timeout.
    pub(crate) fn should_end(&self, now: Instant) -> bool {
        self.terminated
            || self
                .orphaned_at
                .is_some_and(|since| now.duration_since(since) >= self.adoption_timeout)
    }

    /// Whether the worker ends without an owner to release what it leaves (its workspace).
    pub(crate) fn ends_as_orphan(&self) -> bool {
        self.terminated || self.owner.is_none()
    }

    /// How long the poll loop may sleep before [`Self::should_end`] may change.
    pub(crate) fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        self.orphaned_at.map(|since| {
            (since + self.adoption_timeout).saturating_duration_since(now)
                + Duration::from_millis(1)
        })
    }

    /// A server connected: it becomes the owner and receives the channels.
    pub(crate) fn accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let frame = encode(&KeeperMessage::Hello {
            launcher_pid: std::process::id(),
            name: self.name.clone(),
        });
        let fds: Vec<RawFd> = self.kept.iter().map(AsRawFd::as_raw_fd).collect();
        let rights = [ControlMessage::ScmRights(&fds)];
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let sent = sendmsg::<()>(
            stream.as_raw_fd(),
            &[IoSlice::new(&frame)],
            &rights,
            MsgFlags::MSG_NOSIGNAL,
            None,
        );
        if !matches!(sent, Ok(count) if count == frame.len())
            || stream.set_nonblocking(true).is_err()
        {
            return;
        }
        // A newer server replaces the old owner (which is gone, or about to be).
        self.owner = Some(stream);
        self.owner_buffer.clear();
        self.orphaned_at = None;
    }

    /// The owner's connection is readable: a request, or its end.
    pub(crate) fn read_owner(&mut self) -> OwnerEvent {
        let Some(owner) = &mut self.owner else {
            return OwnerEvent::Nothing;
        };
        let mut chunk = [0u8; 512];
        let gone = loop {
            match owner.read(&mut chunk) {
                Ok(0) => break true,
                Ok(count) => self.owner_buffer.extend_from_slice(&chunk[..count]),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break false,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break true,
            }
        };
        let mut event = OwnerEvent::Nothing;
        loop {
            match take_frame(&mut self.owner_buffer) {
                Ok(Some(KeeperMessage::Terminate)) => {
                    self.terminated = true;
                    event = OwnerEvent::Terminate;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    self.owner_buffer.clear();
                    break;
                }
            }
        }
        if gone && !self.terminated {
            self.owner = None;
            self.orphaned_at = Some(Instant::now());
            return OwnerEvent::Gone;
        }
        event
    }

    /// Tells the owner (if any) that the worker ended, and stops listening.
    pub(crate) fn report_exit(&mut self, code: i32) {
        self.listener = None;
        if let Some(owner) = &mut self.owner {
            let _ = owner.set_nonblocking(false);
            let _ = owner.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = owner.write_all(&encode(&KeeperMessage::Exited { code }));
        }
    }
}

/// The channels of a worker taken over from its launcher.
#[derive(Debug)]
pub struct AdoptedChannels {
    pub launcher_pid: u32,
    /// The worker's sandbox name (its cgroup and root directory).
    pub name: String,
    pub control: tokio::net::UnixStream,
    pub stdout: tokio::net::unix::pipe::Receiver,
    pub stderr: tokio::net::unix::pipe::Receiver,
    pub keeper: KeeperLink,
}

/// The owner's end of a launcher's keeper channel.
#[derive(Debug)]
pub struct KeeperLink {
    stream: tokio::net::UnixStream,
    buffer: Vec<u8>,
    exit: Option<Option<i32>>,
}

impl KeeperLink {
    pub(crate) fn new(stream: tokio::net::UnixStream) -> KeeperLink {
        KeeperLink {
            stream,
            buffer: Vec::new(),
            exit: None,
        }
    }

    /// Waits for the worker's end: its exit code, or `None` when the launcher went away
    /// without saying (killed). Cancel-safe.
    pub async fn exited(&mut self) -> Option<i32> {
        loop {
            if let Some(exit) = self.exit {
                return exit;
            }
            match take_frame(&mut self.buffer) {
                Ok(Some(KeeperMessage::Exited { code })) => {
                    self.exit = Some(Some(code));
                    continue;
                }
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(_) => {
                    self.exit = Some(None);
                    continue;
                }
            }
            match self.stream.read_buf(&mut self.buffer).await {
                Ok(0) | Err(_) => self.exit = Some(None),
                Ok(_) => {}
            }
        }
    }

    /// The worker's end if it is already known, without waiting (see [`Self::exited`]).
    pub fn exited_now(&mut self) -> Option<Option<i32>> {
        loop {
            if let Some(exit) = self.exit {
                return Some(exit);
            }
            match take_frame(&mut self.buffer) {
                Ok(Some(KeeperMessage::Exited { code })) => self.exit = Some(Some(code)),
                Ok(Some(_)) => {}
                Ok(None) => match self.stream.try_read_buf(&mut self.buffer) {
                    Ok(0) => self.exit = Some(None),
                    Ok(_) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return None,
                    Err(_) => self.exit = Some(None),
                },
                Err(_) => self.exit = Some(None),
            }
        }
    }

    /// Asks the launcher to end the worker and release everything (as an orphan would).
    pub async fn terminate(&mut self) {
        let _ = self
            .stream
            .write_all(&encode(&KeeperMessage::Terminate))
            .await;
    }
}

/// Connects to the launcher listening on `socket` and takes over its worker's channels.
/// Must run inside a tokio runtime (the channels are registered with it).
pub fn adopt(socket: &Path, timeout: Duration) -> Result<AdoptedChannels, KeeperError> {
    let (path, _directory) = short_socket_path(socket)?;
    let stream = match StdUnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) =>
        {
            return Err(KeeperError::Gone)
        }
        Err(error) => return Err(error.into()),
    };
    stream.set_read_timeout(Some(timeout))?;
    let mut buffer = vec![0u8; 4096];
    let mut space = nix::cmsg_space!([RawFd; 3]);
    let (count, fds) = {
        let mut iov = [IoSliceMut::new(&mut buffer)];
        let message = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        for control in message.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = control {
                // SAFETY: the kernel just installed these descriptors in this process for
                // this message; nothing else refers to them, and each is wrapped once.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        (message.bytes, fds)
    };
    if count == 0 {
        return Err(KeeperError::Gone);
    }
    let mut received = buffer[..count].to_vec();
    let hello = loop {
        match take_frame(&mut received)? {
            Some(message) => break message,
            None => {
                let mut chunk = [0u8; 512];
                let more = (&stream).read(&mut chunk)?;
                if more == 0 {
                    return Err(KeeperError::Gone);
                }
                received.extend_from_slice(&chunk[..more]);
            }
        }
    };
    let KeeperMessage::Hello { launcher_pid, name } = hello else {
        return Err(KeeperError::Protocol(format!("{hello:?}")));
    };
    let [control, stdout, stderr]: [OwnedFd; 3] = fds
        .try_into()
        .map_err(|fds: Vec<OwnedFd>| KeeperError::Protocol(format!("{} channels", fds.len())))?;
    stream.set_read_timeout(None)?;
    stream.set_nonblocking(true)?;
    let control = StdUnixStream::from(control);
    control.set_nonblocking(true)?;
    let mut link = KeeperLink::new(tokio::net::UnixStream::from_std(stream)?);
    link.buffer = received;
    Ok(AdoptedChannels {
        launcher_pid,
        name,
        control: tokio::net::UnixStream::from_std(control)?,
        stdout: tokio::net::unix::pipe::Receiver::from_owned_fd(stdout)?,
        stderr: tokio::net::unix::pipe::Receiver::from_owned_fd(stderr)?,
        keeper: link,
    })
}

/// The keeper sockets in `directory`: (file name without `.sock`, path).
pub fn keeper_sockets(directory: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return Vec::new();
    };
    let mut sockets: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let label = name.strip_suffix(".sock")?.to_owned();
            Some((label, entry.path()))
        })
        .collect();
    sockets.sort();
    sockets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_split_anywhere() {
        let messages = [
            KeeperMessage::Hello {
                launcher_pid: 42,
                name: "7-1".into(),
            },
            KeeperMessage::Exited { code: -3 },
            KeeperMessage::Terminate,
        ];
        let bytes: Vec<u8> = messages.iter().flat_map(encode).collect();
        for split in 0..bytes.len() {
            let mut buffer = bytes[..split].to_vec();
            let mut seen = Vec::new();
            while let Some(message) = take_frame(&mut buffer).expect("valid frames") {
                seen.push(message);
            }
            buffer.extend_from_slice(&bytes[split..]);
            while let Some(message) = take_frame(&mut buffer).expect("valid frames") {
                seen.push(message);
            }
            assert_eq!(seen, messages, "split at {split}");
        }
    }

    #[test]
    fn an_oversized_frame_is_refused() {
        let mut buffer = (u32::MAX).to_be_bytes().to_vec();
        assert!(matches!(
            take_frame(&mut buffer),
            Err(KeeperError::Protocol(_))
        ));
    }

    #[test]
    fn long_socket_paths_go_through_the_directory() {
        let long = std::env::temp_dir()
            .join(format!(
                "corral-keeper-{}-{}",
                std::process::id(),
                "d".repeat(100)
            ))
            .join("w.sock");
        let directory = long.parent().expect("has a parent");
        std::fs::create_dir_all(directory).expect("create");
        let (short, handle) = short_socket_path(&long).expect("short path");
        assert!(handle.is_some());
        assert!(short.as_os_str().len() < 100, "{}", short.display());
        let listener = StdUnixListener::bind(&short).expect("bind through the directory");
        assert!(long.exists());
        let (connect, _handle) = short_socket_path(&long).expect("short path");
        StdUnixStream::connect(connect).expect("connect through the directory");
        drop(listener);
        std::fs::remove_dir_all(directory).expect("clean up");
    }
}
