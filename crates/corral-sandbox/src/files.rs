//! Workspace files for the files API: the code behind `corral sandbox-files`, a helper the
//! server runs for each file request.
//!
//! The helper joins the session's user and mount namespaces (or, for an unsandboxed server,
//! stays on the host and treats the workspace directory as its root), becomes the session's
//! uid with no capabilities, and works under `/workspace` with `openat2(RESOLVE_BENEATH)`:
//! absolute paths, `..` and symlinks leading out of the workspace are refused. File data flows
//! through the helper's stdin and stdout and is never held whole in memory; the workspace's
//! size limit caps uploads.
//!
//! Wire format on stdout: a header line (`OK <size>` for get, `OK <bytes>` for put, `OK` for
//! delete and list) followed by the file (get) or a JSON array of entries (list). On failure
//! nothing is written to stdout; stderr gets `ERR <kind> <message>` and the exit code is the
//! kind's number ([`FileFailure`]).

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sched::{setns, CloneFlags};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};
use serde::{Deserialize, Serialize};

use crate::policy::SANDBOX_WORKSPACE;

/// The hidden command that runs [`files_main`].
pub const FILES_COMMAND: &str = "sandbox-files";

/// What a file request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileOperation {
    Put,
    Get,
    Delete,
    List,
}

impl FileOperation {
    pub fn as_str(self) -> &'static str {
        match self {
            FileOperation::Put => "put",
            FileOperation::Get => "get",
            FileOperation::Delete => "delete",
            FileOperation::List => "list",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            FileOperation::Put,
            FileOperation::Get,
            FileOperation::Delete,
            FileOperation::List,
        ]
        .into_iter()
        .find(|operation| operation.as_str() == text)
    }
}

/// Why a file request failed; the helper's exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFailure {
    NotFound = 2,
    InvalidPath = 3,
    WrongType = 4,
    NoSpace = 5,
    Other = 6,
}

impl FileFailure {
    pub fn from_exit_code(code: i32) -> FileFailure {
        match code {
            2 => FileFailure::NotFound,
            3 => FileFailure::InvalidPath,
            4 => FileFailure::WrongType,
            5 => FileFailure::NoSpace,
            _ => FileFailure::Other,
        }
    }
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    /// `file`, `directory`, `symlink` or `other`.
    pub kind: String,
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub modified: i64,
}

struct Failure(FileFailure, String);

fn failure(kind: FileFailure) -> impl FnOnce(nix::Error) -> Failure {
    move |error| Failure(classify(error, kind), describe(error))
}

/// What an errno means for a workspace path, in words (openat2's `EXDEV` is "Cross-device
/// link" to libc, but here it means a symlink or `..` led out of the workspace).
fn describe(error: nix::Error) -> String {
    match error {
        nix::Error::EXDEV => {
            "the path leads outside the workspace (through a symlink or a mount)".to_owned()
        }
        nix::Error::ELOOP => "the path has too many symlinks on the way".to_owned(),
        nix::Error::ENOENT => "no such file or directory in the workspace".to_owned(),
        nix::Error::EISDIR => "the path is a directory".to_owned(),
        nix::Error::ENOTDIR => "a part of the path is not a directory".to_owned(),
        nix::Error::ENOSPC | nix::Error::EDQUOT | nix::Error::EFBIG => {
            "the workspace is full".to_owned()
        }
        other => other.desc().to_owned(),
    }
}

fn classify(error: nix::Error, otherwise: FileFailure) -> FileFailure {
    match error {
        nix::Error::ENOENT => FileFailure::NotFound,
        nix::Error::EXDEV | nix::Error::ELOOP => FileFailure::InvalidPath,
        nix::Error::EISDIR | nix::Error::ENOTDIR => FileFailure::WrongType,
        nix::Error::ENOSPC | nix::Error::EFBIG | nix::Error::EDQUOT => FileFailure::NoSpace,
        _ => otherwise,
    }
}

fn io_failure(error: std::io::Error) -> Failure {
    match error.raw_os_error() {
        Some(code) => {
            let errno = nix::Error::from_raw(code);
            Failure(classify(errno, FileFailure::Other), describe(errno))
        }
        None => Failure(FileFailure::Other, error.to_string()),
    }
}

/// Entry point of `corral sandbox-files (--pid PID | --root DIR) <op> <path>`.
pub fn files_main(arguments: &[String]) -> i32 {
    crate::process::close_descriptors_from(3);
    match run(arguments) {
        Ok(()) => 0,
        Err(Failure(kind, message)) => {
            let name = match kind {
                FileFailure::NotFound => "not_found",
                FileFailure::InvalidPath => "invalid_path",
                FileFailure::WrongType => "wrong_type",
                FileFailure::NoSpace => "no_space",
                FileFailure::Other => "other",
            };
            eprintln!("ERR {name} {message}");
            kind as i32
        }
    }
}

/// The validated relative path: no absolute paths, no `..`, no NUL.
pub fn relative_workspace_path(path: &str) -> Option<PathBuf> {
    if path.contains('\0') {
        return None;
    }
    let path = Path::new(path);
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(clean)
}

fn run(arguments: &[String]) -> Result<(), Failure> {
    let usage = || {
        Failure(
            FileFailure::Other,
            "usage: sandbox-files (--pid PID | --root DIR) <put|get|delete|list> <path>".to_owned(),
        )
    };
    let [mode, target, operation, path] = arguments else {
        return Err(usage());
    };
    let operation = FileOperation::parse(operation).ok_or_else(usage)?;
    let relative = relative_workspace_path(path).ok_or_else(|| {
        let why = if path.starts_with('/') {
            "the path is absolute; paths are relative to the workspace (e.g. data.csv)"
        } else if path.contains('\0') {
            "the path contains a NUL byte"
        } else {
            "the path contains '..'; paths may not leave the workspace"
        };
        Failure(FileFailure::InvalidPath, why.to_owned())
    })?;
    let workspace = match mode.as_str() {
        "--pid" => enter_session(target)?,
        "--root" => Path::new(target).to_owned(),
        _ => return Err(usage()),
    };
    let workspace_fd = open_beneath_root(&workspace)?;
    match operation {
        FileOperation::Get => get(&workspace_fd, &relative),
        FileOperation::Put => put(&workspace_fd, &relative),
        FileOperation::Delete => delete(&workspace_fd, &relative),
        FileOperation::List => list(&workspace_fd, &relative),
    }
}

/// Joins the namespaces of the sandbox whose launcher is `launcher_pid`, becomes the
/// session's uid without capabilities and returns the workspace path.
fn enter_session(launcher_pid: &str) -> Result<PathBuf, Failure> {
    let launcher: u32 = launcher_pid
        .parse()
        .map_err(|_| Failure(FileFailure::Other, "bad pid".to_owned()))?;
    let children = std::fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children"))
        .map_err(io_failure)?;
    let init: u32 = children
        .split_whitespace()
        .next()
        .and_then(|pid| pid.parse().ok())
        .ok_or_else(|| {
            Failure(
                FileFailure::Other,
                "the session's sandbox is not running".to_owned(),
            )
        })?;
    let open_namespace = |name: &str| -> Result<std::fs::File, Failure> {
        std::fs::File::open(format!("/proc/{init}/ns/{name}")).map_err(io_failure)
    };
    let user = open_namespace("user")?;
    let mount = open_namespace("mnt")?;
    setns(user.as_fd(), CloneFlags::CLONE_NEWUSER).map_err(failure(FileFailure::Other))?;
    setns(mount.as_fd(), CloneFlags::CLONE_NEWNS).map_err(failure(FileFailure::Other))?;
    nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .map_err(failure(FileFailure::Other))?;
    nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .map_err(failure(FileFailure::Other))?;
    drop_privileges()?;
    Ok(PathBuf::from(SANDBOX_WORKSPACE))
}

fn drop_privileges() -> Result<(), Failure> {
    crate::launcher::drop_capabilities()
        .map_err(|error| Failure(FileFailure::Other, error.to_string()))?;
    nix::sys::prctl::set_no_new_privs().map_err(failure(FileFailure::Other))
}

fn open_beneath_root(workspace: &Path) -> Result<OwnedFd, Failure> {
    let raw = nix::fcntl::open(
        workspace,
        OFlag::O_DIRECTORY | OFlag::O_PATH | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(failure(FileFailure::Other))?;
    // SAFETY: `open` just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Opens `relative` under `workspace` without leaving it.
fn open_beneath(
    workspace: &OwnedFd,
    relative: &Path,
    flags: OFlag,
    mode: Mode,
) -> Result<OwnedFd, Failure> {
    let path: &Path = if relative.as_os_str().is_empty() {
        Path::new(".")
    } else {
        relative
    };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(mode)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let raw = openat2(workspace.as_raw_fd(), path, how).map_err(failure(FileFailure::Other))?;
    // SAFETY: `openat2` just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn header(text: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").map_err(io_failure)?;
    stdout.flush().map_err(io_failure)
}

fn get(workspace: &OwnedFd, relative: &Path) -> Result<(), Failure> {
    let fd = open_beneath(workspace, relative, OFlag::O_RDONLY, Mode::empty())?;
    let mut file = std::fs::File::from(fd);
    let metadata = file.metadata().map_err(io_failure)?;
    if !metadata.is_file() {
        return Err(Failure(
            FileFailure::WrongType,
            "not a regular file".to_owned(),
        ));
    }
    header(&format!("OK {}", metadata.len()))?;
    let mut stdout = std::io::stdout().lock();
    std::io::copy(&mut file, &mut stdout).map_err(io_failure)?;
    stdout.flush().map_err(io_failure)
}

fn put(workspace: &OwnedFd, relative: &Path) -> Result<(), Failure> {
    if relative.as_os_str().is_empty() {
        return Err(Failure(
            FileFailure::WrongType,
            "the workspace itself is a directory".to_owned(),
        ));
    }
    let mut parent = PathBuf::new();
    if let Some(directories) = relative.parent() {
        for component in directories.components() {
            parent.push(component);
            let parent_of = parent.parent().unwrap_or(Path::new(""));
            let name = parent.file_name().unwrap_or_default();
            let directory = open_beneath(
                workspace,
                parent_of,
                OFlag::O_DIRECTORY | OFlag::O_PATH,
                Mode::empty(),
            )?;
            match nix::sys::stat::mkdirat(
                Some(directory.as_raw_fd()),
                name,
                Mode::from_bits_truncate(0o755),
            ) {
                Ok(()) | Err(nix::Error::EEXIST) => {}
                Err(error) => return Err(failure(FileFailure::Other)(error)),
            }
        }
    }
    let fd = open_beneath(
        workspace,
        relative,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(0o644),
    )?;
    let mut file = std::fs::File::from(fd);
    let mut stdin = std::io::stdin().lock();
    let written = std::io::copy(&mut stdin, &mut file).map_err(io_failure)?;
    file.sync_data().ok();
    header(&format!("OK {written}"))
}

fn delete(workspace: &OwnedFd, relative: &Path) -> Result<(), Failure> {
    let (Some(name), parent) = (
        relative.file_name(),
        relative.parent().unwrap_or(Path::new("")),
    ) else {
        return Err(Failure(
            FileFailure::InvalidPath,
            "the workspace itself cannot be deleted".to_owned(),
        ));
    };
    let directory = open_beneath(
        workspace,
        parent,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY,
        Mode::empty(),
    )?;
    remove_entry(&directory, Path::new(name), 0)?;
    header("OK")
}

/// Deepest directory nesting a delete descends into.
const MAX_DELETE_DEPTH: usize = 256;

/// Removes `name` in `directory` (recursively for a directory), never following symlinks.
fn remove_entry(directory: &OwnedFd, name: &Path, depth: usize) -> Result<(), Failure> {
    use nix::sys::stat::{fstatat, SFlag};
    use nix::unistd::{unlinkat, UnlinkatFlags};
    let status = fstatat(
        Some(directory.as_raw_fd()),
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(failure(FileFailure::Other))?;
    let is_directory = SFlag::from_bits_truncate(status.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
    if is_directory {
        if depth >= MAX_DELETE_DEPTH {
            return Err(Failure(
                FileFailure::Other,
                "directory tree too deep".to_owned(),
            ));
        }
        let child = open_beneath(
            directory,
            name,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )?;
        for entry in entry_names(&child)? {
            remove_entry(&child, Path::new(&entry), depth + 1)?;
        }
        unlinkat(Some(directory.as_raw_fd()), name, UnlinkatFlags::RemoveDir)
            .map_err(failure(FileFailure::Other))
    } else {
        unlinkat(
            Some(directory.as_raw_fd()),
            name,
            UnlinkatFlags::NoRemoveDir,
        )
        .map_err(failure(FileFailure::Other))
    }
}

/// The names in an open directory, without `.` and `..`.
fn entry_names(directory: &OwnedFd) -> Result<Vec<std::ffi::OsString>, Failure> {
    use std::os::unix::ffi::OsStrExt;
    let duplicate = nix::unistd::dup(directory.as_raw_fd()).map_err(failure(FileFailure::Other))?;
    let mut listing = nix::dir::Dir::from_fd(duplicate).map_err(failure(FileFailure::Other))?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry.map_err(failure(FileFailure::Other))?;
        let bytes = entry.file_name().to_bytes();
        if bytes != b"." && bytes != b".." {
            names.push(std::ffi::OsStr::from_bytes(bytes).to_owned());
        }
    }
    Ok(names)
}

fn list(workspace: &OwnedFd, relative: &Path) -> Result<(), Failure> {
    use nix::sys::stat::{fstatat, SFlag};
    let directory = open_beneath(
        workspace,
        relative,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY,
        Mode::empty(),
    )?;
    let mut entries = Vec::new();
    for name in entry_names(&directory)? {
        let Ok(status) = fstatat(
            Some(directory.as_raw_fd()),
            Path::new(&name),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) else {
            continue;
        };
        let kind = match SFlag::from_bits_truncate(status.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFLNK => "symlink",
            SFlag::S_IFDIR => "directory",
            SFlag::S_IFREG => "file",
            _ => "other",
        };
        entries.push(FileEntry {
            name: name.to_string_lossy().into_owned(),
            kind: kind.to_owned(),
            size: u64::try_from(status.st_size).unwrap_or(0),
            modified: status.st_mtime,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    header("OK")?;
    let text = serde_json::to_string(&entries)
        .map_err(|error| Failure(FileFailure::Other, error.to_string()))?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).map_err(io_failure)?;
    stdout.flush().map_err(io_failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_paths_stay_relative() {
        assert_eq!(
            relative_workspace_path("a/b.txt"),
            Some(PathBuf::from("a/b.txt"))
        );
        assert_eq!(relative_workspace_path("./a"), Some(PathBuf::from("a")));
        assert_eq!(relative_workspace_path(""), Some(PathBuf::new()));
        assert_eq!(relative_workspace_path("../etc/passwd"), None);
        assert_eq!(relative_workspace_path("a/../../b"), None);
        assert_eq!(relative_workspace_path("/etc/passwd"), None);
        assert_eq!(relative_workspace_path("a\0b"), None);
    }
}
