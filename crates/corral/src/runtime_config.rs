//! `[runtimes.NAME]` in the config file: the runtimes sessions may choose besides `python3`.
//!
//! Built in, unless switched off with `enabled = false`: `javascript` (Node.js, `node` on the
//! server's `PATH`) and `bash`. Only reads and validates; starting runtimes is the engine's job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::bail;
use corral_engine::{RuntimeKind, RuntimeSpec, VenvRecipe, PYTHON_RUNTIME};
use serde::Deserialize;

/// One `[runtimes.NAME]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRuntime {
    /// `python`, `javascript` or `bash`; `python` unless the name is a built-in one.
    pub language: Option<String>,
    /// The interpreter: a Python for `python` (with `requirements` or `packages`, the one
    /// the venv is made from; default the server's `python`), `node` for `javascript`.
    pub interpreter: Option<PathBuf>,
    /// A pip requirements file (relative to the config file) to build a venv from.
    pub requirements: Option<PathBuf>,
    /// Requirement specifiers to install into the venv.
    pub packages: Option<Vec<String>>,
    /// Shown to people (Jupyter's `display_name`).
    pub display_name: Option<String>,
    /// Modules a Python runtime's workers import before they are ready (dotted names).
    pub preload: Option<Vec<String>>,
    /// `false` removes the runtime (also a built-in one).
    pub enabled: Option<bool>,
}

const JAVASCRIPT: &str = "javascript";
const BASH: &str = "bash";

/// The runtimes besides `python3`: the built-in ones (`javascript`, `bash`), then those of
/// the file, by name.
///
/// `python` is the server's interpreter (a venv's default base); relative `requirements`
/// paths are resolved from `config_dir`.
pub fn resolve_runtimes(
    file: &BTreeMap<String, FileRuntime>,
    python: &Path,
    config_dir: &Path,
) -> anyhow::Result<Vec<RuntimeSpec>> {
    let mut tables: Vec<(String, FileRuntime)> = [JAVASCRIPT, BASH]
        .into_iter()
        .map(|name| (name.to_owned(), file.get(name).cloned().unwrap_or_default()))
        .collect();
    for (name, table) in file {
        validate_name(name)?;
        if name != JAVASCRIPT && name != BASH {
            tables.push((name.clone(), table.clone()));
        }
    }
    let mut specs = Vec::new();
    for (name, table) in tables {
        if table.enabled == Some(false) {
            continue;
        }
        let language = table
            .language
            .clone()
            .unwrap_or_else(|| match name.as_str() {
                JAVASCRIPT | BASH => name.clone(),
                _ => "python".to_owned(),
            });
        let builds_venv = table.requirements.is_some() || table.packages.is_some();
        if builds_venv && language != "python" {
            bail!("[runtimes.{name}]: `requirements` and `packages` are for Python runtimes");
        }
        let preload = table.preload.clone().unwrap_or_default();
        if !preload.is_empty() && language != "python" {
            bail!("[runtimes.{name}]: `preload` is for Python runtimes (it names Python modules)");
        }
        if let Some(bad) = preload
            .iter()
            .find(|module| !crate::config::is_module_name(module))
        {
            bail!("[runtimes.{name}]: preload names a module as {bad:?}, which is not a dotted Python module name");
        }
        let kind = match language.as_str() {
            "python" if builds_venv => RuntimeKind::Venv {
                recipe: VenvRecipe {
                    base_python: table
                        .interpreter
                        .clone()
                        .unwrap_or_else(|| python.to_owned()),
                    requirements: table
                        .requirements
                        .as_ref()
                        .map(|path| config_dir.join(path)),
                    packages: table.packages.clone().unwrap_or_default(),
                },
            },
            "python" => RuntimeKind::Python {
                interpreter: table.interpreter.clone().ok_or_else(|| {
                    anyhow::anyhow!("[runtimes.{name}]: a Python runtime needs `interpreter`")
                })?,
            },
            "javascript" => RuntimeKind::JavaScript {
                node: table.interpreter.clone().unwrap_or_else(|| "node".into()),
            },
            "bash" => {
                if table.interpreter.is_some() {
                    bail!("[runtimes.{name}]: a bash runtime takes no `interpreter` (it runs the `bash` on the sandbox's PATH)");
                }
                RuntimeKind::Bash
            }
            other => {
                bail!("[runtimes.{name}]: unknown language {other:?} (python, javascript or bash)")
            }
        };
        specs.push(RuntimeSpec {
            name,
            kind,
            display_name: table.display_name.clone(),
            preload,
        });
    }
    Ok(specs)
}

fn validate_name(name: &str) -> anyhow::Result<()> {
    if name == PYTHON_RUNTIME {
        bail!("[runtimes.{PYTHON_RUNTIME}]: the default runtime is set with `python`, not a [runtimes] table");
    }
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if !valid {
        bail!("[runtimes.{name:?}]: a runtime name is 1 to 64 characters of a-z, 0-9, '-', '_' and '.'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn javascript_and_bash_are_built_in_and_can_be_switched_off() {
        let names = |file: &BTreeMap<String, FileRuntime>| -> Vec<String> {
            resolve_runtimes(file, Path::new("python3"), Path::new("/"))
                .unwrap()
                .into_iter()
                .map(|spec| spec.name)
                .collect()
        };
        assert_eq!(names(&BTreeMap::new()), ["javascript", "bash"]);
        let mut file = BTreeMap::new();
        file.insert(
            "javascript".to_owned(),
            FileRuntime {
                enabled: Some(false),
                ..FileRuntime::default()
            },
        );
        assert_eq!(names(&file), ["bash"]);
    }

    #[test]
    fn preload_is_for_python_runtimes_and_names_modules() {
        let resolve = |name: &str, table: FileRuntime| {
            let mut file = BTreeMap::new();
            file.insert(name.to_owned(), table);
            resolve_runtimes(&file, Path::new("python3"), Path::new("/"))
        };
        let python = |preload: &[&str]| FileRuntime {
            interpreter: Some("/usr/bin/python3".into()),
            preload: Some(preload.iter().map(|name| name.to_string()).collect()),
            ..FileRuntime::default()
        };
        let specs = resolve("warm", python(&["json", "xml.dom"])).expect("valid");
        let warm = specs.iter().find(|spec| spec.name == "warm").expect("warm");
        assert_eq!(warm.preload, ["json", "xml.dom"]);
        let error = resolve("warm", python(&["os; import x"])).expect_err("not a module");
        assert!(error.to_string().contains("\"os; import x\""), "{error}");
        let error = resolve(
            "bash",
            FileRuntime {
                preload: Some(vec!["json".to_owned()]),
                ..FileRuntime::default()
            },
        )
        .expect_err("not python");
        assert!(error.to_string().contains("for Python runtimes"), "{error}");
    }

    #[test]
    fn requirements_make_a_venv_runtime_relative_to_the_config_file() {
        let mut file = BTreeMap::new();
        file.insert(
            "science".to_owned(),
            FileRuntime {
                requirements: Some("reqs.txt".into()),
                ..FileRuntime::default()
            },
        );
        let specs = resolve_runtimes(
            &file,
            Path::new("/usr/bin/python3"),
            Path::new("/etc/corral"),
        )
        .unwrap();
        assert_eq!(
            specs[2].kind,
            RuntimeKind::Venv {
                recipe: VenvRecipe {
                    base_python: "/usr/bin/python3".into(),
                    requirements: Some("/etc/corral/reqs.txt".into()),
                    packages: Vec::new(),
                }
            }
        );
    }

    #[test]
    fn bad_tables_are_refused_by_name() {
        for (name, table, message) in [
            ("python3", FileRuntime::default(), "default runtime"),
            ("Bad Name", FileRuntime::default(), "runtime name"),
            ("science", FileRuntime::default(), "needs `interpreter`"),
            (
                "x",
                FileRuntime {
                    language: Some("cobol".into()),
                    ..FileRuntime::default()
                },
                "unknown language",
            ),
        ] {
            let mut file = BTreeMap::new();
            file.insert(name.to_owned(), table);
            let error = resolve_runtimes(&file, Path::new("python3"), Path::new("/"))
                .unwrap_err()
                .to_string();
            assert!(error.contains(message), "{name}: {error}");
        }
    }
}
