//! Building a runtime's Python venv from a requirements file and/or a package list: `python -m
//! venv`, then `pip install`, in a directory of its own; rebuilt only when its inputs (the base
//! interpreter, the requirements file's text, the package list) change.
//!
//! Runs the operator's interpreter and pip on the host, unsandboxed, with the operator's
//! inputs (never session code). Deliberately not here: where the venv lives (the caller
//! says), showing progress (the caller gets pip's lines and decides).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

/// What a venv is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VenvRecipe {
    /// The interpreter that makes the venv.
    pub base_python: PathBuf,
    /// A pip requirements file (it may name its own `--index-url` / `--find-links`).
    pub requirements: Option<PathBuf>,
    /// Requirement specifiers, as on pip's command line.
    pub packages: Vec<String>,
}

/// A built venv.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltVenv {
    pub python: PathBuf,
    /// `name==version` of every distribution installed in it.
    pub packages: Vec<String>,
    /// False when an up-to-date venv was found and nothing was built.
    pub built: bool,
}

/// Why a venv could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VenvError {
    #[error("the requirements file {path}: {source}")]
    Requirements {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{step} could not run: {source}")]
    Spawn {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{step} failed ({status}): {output}")]
    Failed {
        step: &'static str,
        status: String,
        /// The last lines it printed.
        output: String,
    },
    #[error("{step} did not finish within {0:?}", .limit)]
    TimedOut { step: &'static str, limit: Duration },
    #[error("the venv directory {path}: {source}")]
    Directory {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

const STAMP: &str = ".corral-inputs";
const PACKAGES: &str = ".corral-packages";
/// Lines of a failed step's output kept for its error.
const KEPT_LINES: usize = 12;
const LIST_SCRIPT: &str = "import importlib.metadata as m\nfor d in sorted(m.distributions(), key=lambda d: (d.metadata['Name'] or '').lower()):\n    print('%s==%s' % (d.metadata['Name'], d.version))\n";

impl VenvRecipe {
    /// A fingerprint of everything the venv is built from.
    pub fn fingerprint(&self) -> Result<String, VenvError> {
        let mut text = format!("base={}\n", self.base_python.display());
        if let Some(path) = &self.requirements {
            let contents =
                std::fs::read_to_string(path).map_err(|source| VenvError::Requirements {
                    path: path.display().to_string(),
                    source,
                })?;
            text.push_str(&format!("requirements={}\n{contents}\n", path.display()));
        }
        for package in &self.packages {
            text.push_str(&format!("package={package}\n"));
        }
        Ok(format!("{:016x}", fnv1a(text.as_bytes())))
    }
}

/// The venv in `directory` if it was built from `recipe` as it is now.
pub fn existing_venv(
    recipe: &VenvRecipe,
    directory: &Path,
) -> Result<Option<BuiltVenv>, VenvError> {
    let fingerprint = recipe.fingerprint()?;
    let python = directory.join("bin").join("python");
    let stamp = std::fs::read_to_string(directory.join(STAMP)).unwrap_or_default();
    if stamp.trim() != fingerprint || !python.is_file() {
        return Ok(None);
    }
    let packages = std::fs::read_to_string(directory.join(PACKAGES))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    Ok(Some(BuiltVenv {
        python,
        packages,
        built: false,
    }))
}

/// Builds the venv in `directory` unless it is up to date; `progress` gets each line pip
/// prints. A failed build leaves no venv behind (the next attempt starts afresh).
pub async fn ensure_venv(
    recipe: &VenvRecipe,
    directory: &Path,
    limit: Duration,
    mut progress: impl FnMut(&str),
) -> Result<BuiltVenv, VenvError> {
    if let Some(venv) = existing_venv(recipe, directory)? {
        return Ok(venv);
    }
    let fingerprint = recipe.fingerprint()?;
    let directory_error = |source| VenvError::Directory {
        path: directory.display().to_string(),
        source,
    };
    if directory.exists() {
        std::fs::remove_dir_all(directory).map_err(directory_error)?;
    }
    if let Some(parent) = directory.parent() {
        std::fs::create_dir_all(parent).map_err(directory_error)?;
    }
    let outcome = build(recipe, directory, limit, &mut progress).await;
    if outcome.is_err() {
        let _ = std::fs::remove_dir_all(directory);
        outcome?;
    }
    let python = directory.join("bin").join("python");
    let listed = run_step(
        "listing the venv's packages",
        tokio::process::Command::new(&python).args(["-I", "-c", LIST_SCRIPT]),
        limit,
        &mut |_| {},
    )
    .await?;
    std::fs::write(directory.join(PACKAGES), listed.join("\n")).map_err(directory_error)?;
    std::fs::write(directory.join(STAMP), &fingerprint).map_err(directory_error)?;
    Ok(BuiltVenv {
        python,
        packages: listed,
        built: true,
    })
}

async fn build(
    recipe: &VenvRecipe,
    directory: &Path,
    limit: Duration,
    progress: &mut impl FnMut(&str),
) -> Result<(), VenvError> {
    // The base interpreter's pip installs into the venv when it can (`pip --python`, pip
    // 22.3+): that spares the venv its own copy of pip, the slow part of making one.
    let base_pip = tokio::process::Command::new(&recipe.base_python)
        .args(["-m", "pip", "--python", "/nonexistent", "--version"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .is_ok_and(|output| !String::from_utf8_lossy(&output.stderr).contains("no such option"))
        && tokio::process::Command::new(&recipe.base_python)
            .args(["-m", "pip", "--version"])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .is_ok_and(|output| output.status.success());
    let mut venv = tokio::process::Command::new(&recipe.base_python);
    venv.args(["-m", "venv"]);
    if base_pip {
        venv.arg("--without-pip");
    }
    run_step("creating the venv", venv.arg(directory), limit, progress).await?;
    if recipe.requirements.is_none() && recipe.packages.is_empty() {
        return Ok(());
    }
    let venv_python = directory.join("bin").join("python");
    let mut pip = if base_pip {
        let mut pip = tokio::process::Command::new(&recipe.base_python);
        pip.args(["-m", "pip", "--python"]).arg(&venv_python);
        pip
    } else {
        let mut pip = tokio::process::Command::new(&venv_python);
        pip.args(["-m", "pip"]);
        pip
    };
    pip.args([
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
    ]);
    if let Some(requirements) = &recipe.requirements {
        pip.arg("-r").arg(requirements);
    }
    pip.args(&recipe.packages);
    run_step("pip install", &mut pip, limit, progress).await?;
    Ok(())
}

/// Runs one step with its output lines (stdout and stderr) sent to `progress`; its stdout
/// lines on success.
async fn run_step(
    step: &'static str,
    command: &mut tokio::process::Command,
    limit: Duration,
    progress: &mut impl FnMut(&str),
) -> Result<Vec<String>, VenvError> {
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .env("PIP_NO_INPUT", "1")
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| VenvError::Spawn { step, source })?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(VenvError::Spawn {
            step,
            source: std::io::Error::other("no pipes"),
        });
    };
    let mut out_lines = tokio::io::BufReader::new(stdout).lines();
    let mut err_lines = tokio::io::BufReader::new(stderr).lines();
    let mut stdout_lines = Vec::new();
    let mut recent: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let (mut out_open, mut err_open) = (true, true);
    let reading = async {
        while out_open || err_open {
            let line = tokio::select! {
                line = out_lines.next_line(), if out_open => match line {
                    Ok(Some(line)) => { stdout_lines.push(line.clone()); line }
                    _ => { out_open = false; continue }
                },
                line = err_lines.next_line(), if err_open => match line {
                    Ok(Some(line)) => line,
                    _ => { err_open = false; continue }
                },
            };
            progress(&line);
            if recent.len() == KEPT_LINES {
                recent.pop_front();
            }
            recent.push_back(line);
        }
        child.wait().await
    };
    let status = match tokio::time::timeout(limit, reading).await {
        Ok(Ok(status)) => status,
        Ok(Err(source)) => return Err(VenvError::Spawn { step, source }),
        Err(_) => return Err(VenvError::TimedOut { step, limit }),
    };
    if !status.success() {
        return Err(VenvError::Failed {
            step,
            status: status.to_string(),
            output: recent.into_iter().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(stdout_lines)
}

/// FNV-1a: a stable fingerprint (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100000001b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_follows_every_input() {
        let recipe = VenvRecipe {
            base_python: "/usr/bin/python3".into(),
            requirements: None,
            packages: vec!["a==1".into()],
        };
        let same = recipe.clone();
        let other_package = VenvRecipe {
            packages: vec!["a==2".into()],
            ..recipe.clone()
        };
        let other_base = VenvRecipe {
            base_python: "/opt/python".into(),
            ..recipe.clone()
        };
        let fingerprint = recipe.fingerprint().unwrap();
        assert_eq!(fingerprint, same.fingerprint().unwrap());
        assert_ne!(fingerprint, other_package.fingerprint().unwrap());
        assert_ne!(fingerprint, other_base.fingerprint().unwrap());
        let missing = VenvRecipe {
            requirements: Some("/nonexistent/requirements.txt".into()),
            ..recipe
        };
        assert!(missing
            .fingerprint()
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/requirements.txt"));
    }
}
