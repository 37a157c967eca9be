//! Finding out where the operator's Python really lives, so sandboxes can show it to the
//! session: `python3` may be a shim, and a venv's base installation may sit under a directory
//! other users cannot enter.
//!
//! Runs the interpreter once, unsandboxed, with a fixed script (never session code).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::WorkerError;

/// What the interpreter says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interpreter {
    /// `sys.executable`: an absolute path that works without the server's `PATH`.
    pub executable: PathBuf,
    /// `sys.prefix` and `sys.base_prefix` (the venv and its base installation), and the
    /// executable's real location: everything a session needs to read to run it.
    pub installation_paths: Vec<PathBuf>,
}

const DISCOVERY_DEADLINE: Duration = Duration::from_secs(30);
const SCRIPT: &str = "import os, sys\nfor p in (sys.executable, sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))):\n    print(p)\n";

/// Asks `python` for its executable and installation directories.
pub async fn discover_interpreter(python: &Path) -> Result<Interpreter, WorkerError> {
    let failed = |detail: String| WorkerError::Interpreter {
        python: python.display().to_string(),
        detail,
    };
    let output = tokio::time::timeout(
        DISCOVERY_DEADLINE,
        tokio::process::Command::new(python)
            .args(["-I", "-c", SCRIPT])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| failed("did not answer in time".to_owned()))?
    .map_err(|error| failed(error.to_string()))?;
    if !output.status.success() {
        return Err(failed(format!(
            "exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines().map(PathBuf::from);
    let executable = lines
        .next()
        .filter(|path| path.is_absolute())
        .ok_or_else(|| failed("did not report an absolute sys.executable".to_owned()))?;
    let mut installation_paths: Vec<PathBuf> = Vec::new();
    for path in lines.filter(|path| path.is_absolute()) {
        if !installation_paths.contains(&path) {
            installation_paths.push(path);
        }
    }
    Ok(Interpreter {
        executable,
        installation_paths,
    })
}
