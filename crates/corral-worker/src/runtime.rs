//! Which driver a worker runs and how it is started: the Python driver
//! (`drivers/python/driver.py`), the JavaScript driver on Node.js (`drivers/node/driver.js`)
//! and the Bash driver (`drivers/bash/driver.py`, the configured Python supervising one
//! persistent `bash`). All three speak the same protocol (`docs/protocol.md`).
//!
//! Owns each driver's embedded source, its file name on the host and inside the sandbox, the
//! program and arguments that start it, and the worker's environment. Deliberately not here:
//! spawning (`worker.rs`), finding interpreters (`interpreter.rs`), which runtimes a server
//! offers (the engine).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::WorkerConfig;

/// The driver a worker runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DriverKind {
    /// `python driver.py` on [`WorkerConfig::python`].
    #[default]
    Python,
    /// `node --expose-internals driver.js` (the flag gives the driver Node's own REPL rewrite
    /// of top-level `await`).
    JavaScript {
        /// Absolute path of the `node` executable.
        node: PathBuf,
    },
    /// The Bash driver, a Python program on [`WorkerConfig::python`] running `bash` from the
    /// sandbox's `PATH`.
    Bash,
}

const PYTHON_SOURCE: &str = include_str!("../../../drivers/python/driver.py");
const JAVASCRIPT_SOURCE: &str = include_str!("../../../drivers/node/driver.js");
const BASH_SOURCE: &str = include_str!("../../../drivers/bash/driver.py");

impl DriverKind {
    /// The language the driver runs cells in, as its `ready` frame names it.
    pub fn language(&self) -> &'static str {
        match self {
            DriverKind::Python => "python",
            DriverKind::JavaScript { .. } => "javascript",
            DriverKind::Bash => "bash",
        }
    }

    /// The driver's source, compiled into the binary.
    pub fn source(&self) -> &'static str {
        match self {
            DriverKind::Python => PYTHON_SOURCE,
            DriverKind::JavaScript { .. } => JAVASCRIPT_SOURCE,
            DriverKind::Bash => BASH_SOURCE,
        }
    }

    /// The start of the driver's installed file name; the extension says how it is run.
    pub(crate) fn file_stem_and_extension(&self) -> (&'static str, &'static str) {
        match self {
            DriverKind::Python => ("driver", "py"),
            DriverKind::JavaScript { .. } => ("driver-node", "js"),
            DriverKind::Bash => ("driver-bash", "py"),
        }
    }

    /// Where the driver appears inside the sandbox.
    pub(crate) fn sandbox_path(&self) -> &'static str {
        match self {
            DriverKind::Python => "/run/corral/driver.py",
            DriverKind::JavaScript { .. } => "/run/corral/driver.js",
            DriverKind::Bash => "/run/corral/driver-bash.py",
        }
    }

    /// The program that runs the driver.
    fn program<'a>(&'a self, config: &'a WorkerConfig) -> &'a Path {
        match self {
            DriverKind::JavaScript { node } => node,
            DriverKind::Python | DriverKind::Bash => &config.python,
        }
    }
}

/// The program and arguments that start `config`'s driver installed at `driver` (a host path
/// or the sandbox path); `resolve` turns the program into the path to execute.
pub(crate) fn driver_invocation(
    config: &WorkerConfig,
    driver: &OsStr,
    resolve: impl Fn(&Path) -> PathBuf,
) -> (PathBuf, Vec<OsString>) {
    let program = resolve(config.driver.program(config));
    let args = match config.driver {
        DriverKind::JavaScript { .. } => vec!["--expose-internals".into(), driver.to_owned()],
        DriverKind::Python | DriverKind::Bash => vec![driver.to_owned()],
    };
    (program, args)
}

/// The worker's whole environment (the server clears everything else).
/// Where `pip install` puts packages, inside the workspace.
pub(crate) const PACKAGES_DIR: &str = ".packages";

pub(crate) fn worker_environment(
    config: &WorkerConfig,
    workspace: &OsStr,
) -> Vec<(OsString, OsString)> {
    let mut path = OsString::new();
    // The interpreter's own directory first, so `python` (or `node`) in a subprocess is the
    // same installation.
    if let Some(directory) = config
        .driver
        .program(config)
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
    {
        path.push(directory.as_os_str());
        path.push(":");
    }
    path.push("/usr/local/bin:/usr/bin:/bin");
    let mut env: Vec<(OsString, OsString)> = vec![
        ("PATH".into(), path),
        ("HOME".into(), workspace.to_owned()),
        ("LANG".into(), "C.UTF-8".into()),
        ("PYTHONIOENCODING".into(), "utf-8".into()),
        // The driver's inline backend: Agg, with plt.show() displaying the figures.
        ("MPLBACKEND".into(), "module://corral_inline".into()),
        ("TERM".into(), "dumb".into()),
    ];
    // The warm pool's preload list (the Python driver imports these before it is handed over).
    if !config.preload.is_empty() {
        env.push(("CORRAL_PRELOAD".into(), config.preload.join(",").into()));
    }
    // A session that may reach a package index installs into its own workspace (counted
    // against its quota), which is on its `sys.path`.
    if config.network.is_some() {
        let mut packages = workspace.to_owned();
        packages.push("/");
        packages.push(PACKAGES_DIR);
        env.extend([
            ("PIP_TARGET".into(), packages.clone()),
            ("PYTHONPATH".into(), packages),
            ("PIP_NO_CACHE_DIR".into(), "1".into()),
            ("PIP_DISABLE_PIP_VERSION_CHECK".into(), "1".into()),
        ]);
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_driver_has_its_own_file_and_sandbox_path() {
        let kinds = [
            DriverKind::Python,
            DriverKind::JavaScript {
                node: PathBuf::from("/usr/bin/node"),
            },
            DriverKind::Bash,
        ];
        for (index, kind) in kinds.iter().enumerate() {
            for other in &kinds[index + 1..] {
                assert_ne!(kind.sandbox_path(), other.sandbox_path());
                assert_ne!(
                    kind.file_stem_and_extension(),
                    other.file_stem_and_extension()
                );
            }
            assert!(kind.source().contains("PROTOCOL_VERSION"));
        }
        assert_eq!(kinds[1].language(), "javascript");
    }
}
