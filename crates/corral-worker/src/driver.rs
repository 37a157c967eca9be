//! The drivers, embedded in the binary (see `runtime.rs`) and written out once at start.

use std::path::{Path, PathBuf};

use crate::{DriverKind, WorkerError};

/// `drivers/python/driver.py`, compiled into the binary.
pub const DRIVER_SOURCE: &str = include_str!("../../../drivers/python/driver.py");

/// Writes the Python driver into `directory`; see [`install_driver_of`].
pub fn install_driver(directory: &Path) -> Result<PathBuf, WorkerError> {
    install_driver_of(&DriverKind::Python, directory)
}

/// Writes `kind`'s driver into `directory` (created if needed) as a read-only file and
/// returns its path. The file name carries a hash of the source so two versions never share
/// a file.
pub fn install_driver_of(kind: &DriverKind, directory: &Path) -> Result<PathBuf, WorkerError> {
    let (stem, extension) = kind.file_stem_and_extension();
    install_source(directory, stem, extension, kind.source())
}

/// Writes `source` into `directory` as a read-only `<stem>-<hash>.<extension>` (unless that
/// file already holds it) and returns its path.
pub(crate) fn install_source(
    directory: &Path,
    stem: &str,
    extension: &str,
    source: &str,
) -> Result<PathBuf, WorkerError> {
    let workspace_error = |source| WorkerError::Workspace {
        path: directory.display().to_string(),
        source,
    };
    std::fs::create_dir_all(directory).map_err(workspace_error)?;
    let path = directory.join(format!(
        "{stem}-{:016x}.{extension}",
        fnv1a(source.as_bytes())
    ));
    if std::fs::read_to_string(&path).ok().as_deref() != Some(source) {
        let staging = directory.join(format!("{stem}-{}.tmp", std::process::id()));
        std::fs::write(&staging, source).map_err(workspace_error)?;
        let mut permissions = std::fs::metadata(&staging)
            .map_err(workspace_error)?
            .permissions();
        permissions.set_readonly(true);
        std::fs::set_permissions(&staging, permissions).map_err(workspace_error)?;
        std::fs::rename(&staging, &path).map_err(workspace_error)?;
    }
    Ok(path)
}

/// FNV-1a: a stable content hash for the file name (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100000001b3)
    })
}
