//! The runtimes a server offers: the default Python (`python3`, the operator's interpreter)
//! and the others the configuration names (JavaScript on Node.js, Bash, more Pythons). Each is
//! started once at server start (a probe worker); one that cannot start is logged then and
//! refused by name on use with the reason, never left to hang a session's start.
//!
//! Owns the table from runtime name to the worker configuration that starts it and what
//! `/v1/info` shows about each. Deliberately not here: how a driver is started
//! (`corral-worker`'s `runtime.rs`), reading the configuration file (the binary).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use std::time::Duration;

use corral_worker::{
    discover_interpreter, ensure_venv, install_driver_of, DriverKind, VenvRecipe, Worker,
    WorkerConfig,
};

use crate::EngineError;

/// The default runtime's name.
pub const PYTHON_RUNTIME: &str = "python3";

/// A runtime besides the default one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeSpec {
    /// Its name on every surface (`runtime`, Jupyter kernelspec, E2B template).
    pub name: String,
    pub kind: RuntimeKind,
    /// Shown to people (Jupyter's `display_name`); `None` derives one from the language.
    pub display_name: Option<String>,
    /// Modules its workers import before they are ready (Python runtimes).
    pub preload: Vec<String>,
}

/// What a runtime runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuntimeKind {
    /// Python on this interpreter.
    Python { interpreter: PathBuf },
    /// Python in a venv corral builds (under the data directory) from this recipe.
    Venv { recipe: VenvRecipe },
    /// JavaScript on this `node`.
    JavaScript { node: PathBuf },
    /// A persistent `bash` (its driver runs on the default Python).
    Bash,
}

/// A runtime sessions can use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeInfo {
    pub name: String,
    /// `python`, `javascript` or `bash`.
    pub language: String,
    pub display_name: String,
    /// The program that runs the driver.
    pub interpreter: String,
    pub language_version: String,
    /// `name==version` of what is installed in a venv corral built (empty otherwise).
    pub packages: Vec<String>,
    /// Modules its workers import before they are ready.
    pub preload: Vec<String>,
}

/// Longest a venv build may take at server start.
const VENV_BUILD_LIMIT: Duration = Duration::from_secs(600);

/// Where the venv of runtime `name` lives: beside the data directory (`DATA_DIR.runtimes/`),
/// not in it, because sandboxes hide the data directory and a session must read its venv.
pub fn venv_directory(data_dir: &Path, name: &str) -> PathBuf {
    let mut directory = data_dir.as_os_str().to_owned();
    directory.push(".runtimes");
    PathBuf::from(directory).join(name).join("venv")
}

/// The runtimes that started, in order (the default first), and those that did not.
pub(crate) struct RuntimeTable {
    pub configs: HashMap<String, WorkerConfig>,
    pub infos: Vec<RuntimeInfo>,
    /// Name → why it cannot start.
    pub unavailable: BTreeMap<String, String>,
}

impl RuntimeTable {
    /// The worker configuration of `name`, or why there is none.
    pub fn config(&self, name: &str) -> Result<&WorkerConfig, EngineError> {
        if let Some(config) = self.configs.get(name) {
            return Ok(config);
        }
        if let Some(reason) = self.unavailable.get(name) {
            return Err(EngineError::WorkerStart(format!(
                "the runtime {name:?} cannot start: {reason}"
            )));
        }
        let available: Vec<&str> = self.infos.iter().map(|info| info.name.as_str()).collect();
        Err(EngineError::InvalidInput(format!(
            "unknown runtime {name:?} (available: {})",
            available.join(", ")
        )))
    }
}

/// Starts a probe worker of every runtime (at the same time). The default runtime must
/// start; the others are reported and left out when they cannot.
pub(crate) async fn start_runtimes(
    python: &Path,
    template: WorkerConfig,
    extra: &[RuntimeSpec],
    data_dir: &Path,
    driver_dir: &Path,
    probe_dir: &Path,
) -> Result<RuntimeTable, EngineError> {
    let default = RuntimeSpec {
        name: PYTHON_RUNTIME.to_owned(),
        kind: RuntimeKind::Python {
            interpreter: python.to_owned(),
        },
        display_name: None,
        preload: Vec::new(),
    };
    let specs: Vec<&RuntimeSpec> = std::iter::once(&default).chain(extra).collect();
    let probes = specs.iter().map(|spec| {
        let template = template.clone();
        async move {
            let (config, packages) = worker_config(spec, template, data_dir, driver_dir).await?;
            let workspace = probe_dir.join(&spec.name);
            let mut probe = Worker::start(&config, workspace)
                .await
                .map_err(|error| error.to_string())?;
            let version = probe.info().language_version.clone();
            probe.kill().await;
            probe.remove_workspace();
            Ok::<_, String>((config, version, packages))
        }
    });
    let outcomes = futures::future::join_all(probes).await;
    let mut table = RuntimeTable {
        configs: HashMap::new(),
        infos: Vec::new(),
        unavailable: BTreeMap::new(),
    };
    for (spec, outcome) in specs.into_iter().zip(outcomes) {
        match outcome {
            Ok((config, language_version, packages)) => {
                table.infos.push(RuntimeInfo {
                    name: spec.name.clone(),
                    language: config.driver.language().to_owned(),
                    display_name: spec
                        .display_name
                        .clone()
                        .unwrap_or_else(|| display_name(&config.driver, &language_version)),
                    interpreter: match (&spec.kind, &config.driver) {
                        (_, DriverKind::JavaScript { node }) => node.display().to_string(),
                        (RuntimeKind::Venv { .. }, _) => config.python.display().to_string(),
                        _ => program(spec),
                    },
                    language_version,
                    packages,
                    preload: config.preload.clone(),
                });
                table.configs.insert(spec.name.clone(), config);
            }
            Err(error) if spec.name == PYTHON_RUNTIME => {
                return Err(EngineError::WorkerStart(format!(
                    "{} could not run the worker driver: {error}",
                    python.display()
                )));
            }
            Err(error) => {
                tracing::warn!(runtime = %spec.name, %error, "a runtime cannot start; sessions cannot use it");
                table
                    .unavailable
                    .insert(spec.name.clone(), error.to_string());
            }
        }
    }
    Ok(table)
}

/// The worker configuration of one runtime (building its venv first if it has one and it is
/// not up to date), and the packages of that venv.
async fn worker_config(
    spec: &RuntimeSpec,
    mut config: WorkerConfig,
    data_dir: &Path,
    driver_dir: &Path,
) -> Result<(WorkerConfig, Vec<String>), String> {
    let mut packages = Vec::new();
    match &spec.kind {
        RuntimeKind::Venv { recipe } => {
            let name = spec.name.clone();
            let venv = ensure_venv(
                recipe,
                &venv_directory(data_dir, &spec.name),
                VENV_BUILD_LIMIT,
                |line| tracing::info!(runtime = %name, "venv build: {line}"),
            )
            .await
            .map_err(|error| format!("its venv could not be built: {error}"))?;
            if venv.built {
                tracing::info!(runtime = %spec.name, "venv built");
            }
            let found = discover_interpreter(&venv.python)
                .await
                .map_err(|error| error.to_string())?;
            config.python = found.executable;
            config.interpreter_paths = found.installation_paths;
            config.driver = DriverKind::Python;
            packages = venv.packages;
        }
        RuntimeKind::Python { interpreter } => {
            let found = discover_interpreter(interpreter)
                .await
                .map_err(|error| error.to_string())?;
            config.python = found.executable;
            config.interpreter_paths = found.installation_paths;
            config.driver = DriverKind::Python;
        }
        RuntimeKind::JavaScript { node } => {
            let node = absolute_program(node)
                .ok_or_else(|| format!("the interpreter {} was not found", node.display()))?;
            let real = std::fs::canonicalize(&node).unwrap_or_else(|_| node.clone());
            config.interpreter_paths = real
                .parent()
                .map(|directory| vec![directory.to_owned()])
                .unwrap_or_default();
            config.driver = DriverKind::JavaScript { node: real };
        }
        RuntimeKind::Bash => config.driver = DriverKind::Bash,
    }
    config.preload = spec.preload.clone();
    config.driver_path =
        install_driver_of(&config.driver, driver_dir).map_err(|error| error.to_string())?;
    Ok((config, packages))
}

/// The program that runs the runtime's driver, as configured.
fn program(spec: &RuntimeSpec) -> String {
    match &spec.kind {
        RuntimeKind::Python { interpreter } => interpreter.display().to_string(),
        RuntimeKind::Venv { recipe } => format!("a venv of {}", recipe.base_python.display()),
        RuntimeKind::JavaScript { node } => node.display().to_string(),
        RuntimeKind::Bash => "bash".to_owned(),
    }
}

fn display_name(driver: &DriverKind, version: &str) -> String {
    match driver {
        DriverKind::Python => format!("Python {version}"),
        DriverKind::JavaScript { .. } => format!("JavaScript (Node.js {version})"),
        DriverKind::Bash => format!("Bash {version}"),
    }
}

/// `program` as an absolute path: as given when it has a `/`, else found on `PATH`.
pub fn absolute_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return std::path::absolute(program)
            .ok()
            .filter(|path| path.is_file());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|directory| directory.join(program))
        .find(|candidate| candidate.is_file())
}
