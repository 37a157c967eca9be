//! Server configuration: defaults, then the config file, then environment variables and
//! flags (clap merges those two; a flag beats its `CORRAL_*` variable).
//!
//! Only reads and validates settings; starting anything is `cli::serve`'s job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use corral_core::Limits;
use corral_worker::{PoolSettings, SessionLimits};
use serde::Deserialize;

/// The config file (TOML). Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub bind: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub python: Option<PathBuf>,
    /// How long running executions may take to finish after SIGTERM/SIGINT.
    pub shutdown_grace_seconds: Option<f64>,
    /// `text` (default) or `json`.
    pub log_format: Option<LogFormat>,
    /// What a stop does to live sessions: `close` (default) or `detach`.
    pub shutdown_mode: Option<ShutdownMode>,
    /// How long a session whose server is gone waits for the next server to adopt it.
    pub adoption_timeout_seconds: Option<f64>,
    /// Require a key even while none exists (no open mode).
    pub require_auth: Option<bool>,
    /// The fleet's PostgreSQL database (see docs/fleet.md); SQLite in `data_dir` without it.
    pub database_url: Option<String>,
    pub node_id: Option<String>,
    pub advertise_url: Option<String>,
    pub node_lease_seconds: Option<f64>,
    #[serde(default)]
    pub limits: FileLimits,
    /// `[mounts]`: surface name → path prefix or `off`.
    #[serde(default)]
    pub mounts: BTreeMap<String, String>,
    #[serde(default)]
    pub sandbox: FileSandbox,
    #[serde(default)]
    pub pool: FilePool,
    /// `[network]`: the operator's network maximum (see `network_config.rs`).
    #[serde(default)]
    pub network: crate::network_config::FileNetwork,
    /// `[runtimes.NAME]`: runtimes besides `python3` (see `runtime_config.rs`).
    #[serde(default)]
    pub runtimes: BTreeMap<String, crate::runtime_config::FileRuntime>,
}

/// `[pool]` in the config file: the warm pool of idle sandboxed workers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePool {
    /// Idle workers kept ready (0 turns the pool off).
    pub size: Option<usize>,
    /// Idle workers kept after `shrink_after_seconds` without a session start.
    pub idle_size: Option<usize>,
    pub shrink_after_seconds: Option<f64>,
    /// The most memory the pool's idle workers may use together.
    pub max_memory_mib: Option<u64>,
    /// Modules each pool worker imports before it is handed over.
    pub preload: Option<Vec<String>>,
    /// Fork each sandboxed Python runtime's workers from a zygote.
    pub zygote: Option<bool>,
}

impl FilePool {
    /// The pool's settings: the defaults, this section, then `size` from `--pool-size`.
    pub fn apply(&self, size_flag: Option<usize>) -> anyhow::Result<PoolSettings> {
        const MIB: u64 = 1024 * 1024;
        let defaults = PoolSettings::default();
        let size = size_flag.or(self.size).unwrap_or(defaults.size);
        if size > MAX_POOL_SIZE {
            bail!("pool.size must be at most {MAX_POOL_SIZE}, not {size}");
        }
        let preload = self.preload.clone().unwrap_or_default();
        if let Some(bad) = preload.iter().find(|name| !is_module_name(name)) {
            bail!(
                "pool.preload names a module as {bad:?}, which is not a dotted Python module name"
            );
        }
        Ok(PoolSettings {
            size,
            idle_size: self.idle_size.unwrap_or(defaults.idle_size).min(size),
            shrink_after: seconds(
                "pool.shrink_after_seconds",
                self.shrink_after_seconds,
                defaults.shrink_after,
            )?,
            max_memory_bytes: self
                .max_memory_mib
                .map(|mib| mib.saturating_mul(MIB))
                .unwrap_or(defaults.max_memory_bytes),
            min_available_memory_bytes: defaults.min_available_memory_bytes,
            preload,
            zygote: self.zygote.unwrap_or(defaults.zygote),
        })
    }
}

/// The most idle workers the pool may hold.
const MAX_POOL_SIZE: usize = 1024;

/// `a`, `a.b_c`: what `import` accepts.
pub(crate) fn is_module_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|first| first == '_' || first.is_ascii_alphabetic())
                && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
        })
}

/// `[sandbox]` in the config file: per-session resource limits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSandbox {
    pub memory_mib: Option<u64>,
    pub max_processes: Option<u64>,
    pub cpus: Option<f64>,
    pub workspace_mib: Option<u64>,
    pub max_open_files: Option<u64>,
    pub insecure_no_sandbox: Option<bool>,
    /// `[sandbox.maximum]`: the most a session may ask for at creation (same keys).
    #[serde(default)]
    pub maximum: FileSandboxMaximum,
}

/// `[sandbox.maximum]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSandboxMaximum {
    pub memory_mib: Option<u64>,
    pub max_processes: Option<u64>,
    pub cpus: Option<f64>,
    pub workspace_mib: Option<u64>,
    pub max_open_files: Option<u64>,
}

impl FileSandbox {
    /// The default limits and the maximum a session may ask for.
    pub fn limits_and_maximum(&self) -> anyhow::Result<(SessionLimits, SessionLimits)> {
        let defaults = self.limits(SessionLimits::default())?;
        let maximum = FileSandbox {
            memory_mib: self.maximum.memory_mib,
            max_processes: self.maximum.max_processes,
            cpus: self.maximum.cpus,
            workspace_mib: self.maximum.workspace_mib,
            max_open_files: self.maximum.max_open_files,
            ..FileSandbox::default()
        }
        .limits(defaults)?;
        let violations = defaults.violations(&maximum);
        if !violations.is_empty() {
            bail!(
                "[sandbox] defaults exceed [sandbox.maximum]: {}",
                violations.join(", ")
            );
        }
        Ok((defaults, maximum))
    }

    fn limits(&self, defaults: SessionLimits) -> anyhow::Result<SessionLimits> {
        const MIB: u64 = 1024 * 1024;
        let limits = SessionLimits {
            memory_bytes: self
                .memory_mib
                .map(|mib| mib * MIB)
                .unwrap_or(defaults.memory_bytes),
            max_processes: self.max_processes.unwrap_or(defaults.max_processes),
            cpu_millicores: match self.cpus {
                None => defaults.cpu_millicores,
                Some(cpus) if cpus.is_finite() && cpus > 0.0 && cpus <= 1024.0 => {
                    (cpus * 1000.0).round() as u64
                }
                Some(cpus) => bail!("sandbox.cpus must be a positive number, not {cpus}"),
            },
            workspace_bytes: self
                .workspace_mib
                .map(|mib| mib * MIB)
                .unwrap_or(defaults.workspace_bytes),
            max_open_files: self.max_open_files.unwrap_or(defaults.max_open_files),
        };
        let too_small = limits.violations(&SessionLimits {
            memory_bytes: u64::MAX,
            max_processes: u64::MAX,
            cpu_millicores: u64::MAX,
            workspace_bytes: u64::MAX,
            max_open_files: u64::MAX,
        });
        if !too_small.is_empty() {
            bail!("sandbox limits below the minimum: {}", too_small.join(", "));
        }
        Ok(limits)
    }
}

/// `[limits]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub default_execution_timeout_seconds: Option<f64>,
    pub max_execution_timeout_seconds: Option<f64>,
    pub interrupt_grace_seconds: Option<f64>,
    pub output_cap_bytes: Option<usize>,
    pub execution_queue_capacity: Option<usize>,
    pub max_code_bytes: Option<usize>,
    pub idle_ttl_seconds: Option<f64>,
    pub idle_ttl_ceiling_seconds: Option<f64>,
    pub max_ttl_seconds: Option<f64>,
    pub max_ttl_ceiling_seconds: Option<f64>,
    pub max_sessions: Option<usize>,
    pub min_available_memory_mib: Option<u64>,
    pub max_sessions_per_tenant: Option<usize>,
    pub max_executions_per_tenant: Option<usize>,
    pub executions_kept_per_session: Option<u64>,
    pub stored_output_cap_bytes: Option<usize>,
    pub ended_session_retention_seconds: Option<f64>,
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub bind: String,
    pub data_dir: PathBuf,
    pub python: PathBuf,
    /// The runtimes besides `python3`.
    pub runtimes: Vec<corral_engine::RuntimeSpec>,
    pub limits: Limits,
    /// Every surface's mount point (a path prefix, or `off`).
    pub mounts: BTreeMap<String, String>,
    pub session_limits: SessionLimits,
    pub max_session_limits: SessionLimits,
    pub pool: PoolSettings,
    /// The operator's network maximum.
    pub network: corral_engine::NetworkSettings,
    pub insecure_no_sandbox: bool,
    pub config_file: Option<PathBuf>,
    pub shutdown_grace: Duration,
    pub shutdown_mode: ShutdownMode,
    pub adoption_timeout: Duration,
    pub log_format: LogFormat,
    pub require_auth: bool,
    /// PostgreSQL instead of SQLite; with it the node joins a fleet.
    pub database_url: Option<String>,
    pub node_id: Option<String>,
    pub advertise_url: Option<String>,
    pub node_lease: Duration,
    /// Never printed.
    pub node_secret: Option<String>,
    /// Where each setting came from, by its key in the config file (`limits.max_sessions`).
    pub origins: Origins,
}

/// What a stop (SIGTERM, SIGINT) does to the live sessions once executions have had their
/// grace period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ShutdownMode {
    /// Close every session (`server shutdown`).
    #[default]
    Close,
    /// Leave every session running for the next server on this data directory to adopt.
    Detach,
}

impl ShutdownMode {
    fn as_str(self) -> &'static str {
        match self {
            ShutdownMode::Close => "close",
            ShutdownMode::Detach => "detach",
        }
    }
}

/// How long an orphaned session waits to be adopted, unless configured.
pub const DEFAULT_ADOPTION_TIMEOUT: Duration = Duration::from_secs(300);

/// How log lines are written to standard error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the request id of the request it belongs to.
    Json,
}

impl LogFormat {
    fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Where one setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Default,
    File,
    /// The environment variable of that name.
    Environment(&'static str),
    /// The command-line flag of that name.
    Flag(&'static str),
}

impl Origin {
    fn describe(&self) -> String {
        match self {
            Origin::Default => "default".to_owned(),
            Origin::File => "config file".to_owned(),
            Origin::Environment(name) => format!("environment {name}"),
            Origin::Flag(name) => format!("flag {name}"),
        }
    }
}

/// The origin of every setting not taken from the defaults, by config-file key.
#[derive(Clone, Debug, Default)]
pub struct Origins(std::collections::BTreeMap<String, Origin>);

impl Origins {
    pub fn set(&mut self, key: &str, origin: Origin) {
        if origin != Origin::Default {
            self.0.insert(key.to_owned(), origin);
        }
    }

    fn of(&self, key: &str) -> Origin {
        self.0.get(key).cloned().unwrap_or(Origin::Default)
    }
}

impl ServeConfig {
    /// The effective configuration as a config file, each value commented with its origin.
    /// Nothing secret lives in the configuration (API keys are in the store, as hashes).
    pub fn to_annotated_toml(&self) -> String {
        const MIB: u64 = 1024 * 1024;
        let text_value = |value: &str| toml::Value::String(value.to_owned());
        let path = |path: &Path| toml::Value::String(path.display().to_string());
        let count = |value: usize| toml::Value::Integer(i64::try_from(value).unwrap_or(i64::MAX));
        let large = |value: u64| toml::Value::Integer(i64::try_from(value).unwrap_or(i64::MAX));
        let seconds = |value: Duration| toml::Value::Float(value.as_secs_f64());
        let limits = &self.limits;
        let unlimited = |value: Option<usize>| value.map(count);
        let mut optional: Vec<(&str, &str, Option<toml::Value>)> = vec![
            (
                "limits",
                "max_sessions_per_tenant",
                unlimited(limits.max_sessions_per_tenant),
            ),
            (
                "limits",
                "max_executions_per_tenant",
                unlimited(limits.max_executions_per_tenant),
            ),
        ];
        let mut entries: Vec<(&str, &str, toml::Value)> = vec![
            ("", "bind", text_value(&self.bind)),
            ("", "data_dir", path(&self.data_dir)),
            ("", "python", path(&self.python)),
            ("", "shutdown_grace_seconds", seconds(self.shutdown_grace)),
            ("", "shutdown_mode", text_value(self.shutdown_mode.as_str())),
            (
                "",
                "adoption_timeout_seconds",
                seconds(self.adoption_timeout),
            ),
            ("", "log_format", text_value(self.log_format.as_str())),
            ("", "require_auth", toml::Value::Boolean(self.require_auth)),
            ("", "node_lease_seconds", seconds(self.node_lease)),
            (
                "limits",
                "default_execution_timeout_seconds",
                seconds(limits.default_exec_timeout),
            ),
            (
                "limits",
                "max_execution_timeout_seconds",
                seconds(limits.max_exec_timeout),
            ),
            (
                "limits",
                "interrupt_grace_seconds",
                seconds(limits.interrupt_grace),
            ),
            ("limits", "output_cap_bytes", count(limits.output_cap_bytes)),
            (
                "limits",
                "execution_queue_capacity",
                count(limits.queue_capacity),
            ),
            ("limits", "max_code_bytes", count(limits.max_code_bytes)),
            ("limits", "idle_ttl_seconds", seconds(limits.idle_ttl)),
            (
                "limits",
                "idle_ttl_ceiling_seconds",
                seconds(limits.idle_ttl_ceiling),
            ),
            ("limits", "max_ttl_seconds", seconds(limits.max_ttl)),
            (
                "limits",
                "max_ttl_ceiling_seconds",
                seconds(limits.max_ttl_ceiling),
            ),
            ("limits", "max_sessions", count(limits.max_sessions)),
            (
                "limits",
                "min_available_memory_mib",
                large(limits.min_available_memory_bytes / (1024 * 1024)),
            ),
            (
                "limits",
                "executions_kept_per_session",
                large(limits.executions_kept_per_session),
            ),
            (
                "limits",
                "stored_output_cap_bytes",
                count(limits.stored_output_cap_bytes),
            ),
            (
                "limits",
                "ended_session_retention_seconds",
                seconds(limits.ended_session_retention),
            ),
            (
                "sandbox",
                "insecure_no_sandbox",
                toml::Value::Boolean(self.insecure_no_sandbox),
            ),
        ];
        for (section, resources) in [
            ("sandbox", &self.session_limits),
            ("sandbox.maximum", &self.max_session_limits),
        ] {
            entries.extend([
                (section, "memory_mib", large(resources.memory_bytes / MIB)),
                (section, "max_processes", large(resources.max_processes)),
                (
                    section,
                    "cpus",
                    toml::Value::Float(resources.cpu_millicores as f64 / 1000.0),
                ),
                (
                    section,
                    "workspace_mib",
                    large(resources.workspace_bytes / MIB),
                ),
                (section, "max_open_files", large(resources.max_open_files)),
            ]);
        }
        let pool = &self.pool;
        entries.extend([
            ("pool", "size", count(pool.size)),
            ("pool", "idle_size", count(pool.idle_size)),
            ("pool", "shrink_after_seconds", seconds(pool.shrink_after)),
            ("pool", "max_memory_mib", large(pool.max_memory_bytes / MIB)),
            (
                "pool",
                "preload",
                toml::Value::Array(pool.preload.iter().map(|name| text_value(name)).collect()),
            ),
            ("pool", "zygote", toml::Value::Boolean(pool.zygote)),
        ]);
        let network = &self.network;
        entries.extend([
            (
                "network",
                "sessions_may_connect",
                toml::Value::Boolean(network.sessions_may_connect),
            ),
            (
                "network",
                "allow",
                toml::Value::Array(
                    network
                        .allow
                        .iter()
                        .map(|entry| text_value(&entry.to_string()))
                        .collect(),
                ),
            ),
            (
                "network",
                "max_connections",
                large(u64::from(network.max_connections)),
            ),
        ]);
        // Fleet settings only when set, before the sections; a database URL's password is
        // not printed.
        let mut position = 6;
        for (key, value) in [
            (
                "database_url",
                self.database_url.as_deref().map(redact_password),
            ),
            ("node_id", self.node_id.clone()),
            ("advertise_url", self.advertise_url.clone()),
        ] {
            if let Some(value) = value {
                entries.insert(position, ("", key, text_value(&value)));
                position += 1;
            }
        }
        for (surface, mount) in &self.mounts {
            entries.push(("mounts", surface, text_value(mount)));
        }
        // Unset optional limits print as comments (TOML has no null), after their section's
        // other keys.
        let mut all: Vec<(&str, &str, Option<toml::Value>)> = Vec::new();
        for (section, key, value) in entries {
            if section != "limits" && all.last().is_some_and(|(last, _, _)| *last == "limits") {
                all.append(&mut optional);
            }
            all.push((section, key, Some(value)));
        }
        all.append(&mut optional);

        let mut text = String::from(
            "# corral's effective configuration. Precedence, lowest first:\n\
             # defaults < config file < environment variables < flags.\n",
        );
        let mut current_section = "";
        for (section, key, value) in all {
            if section != current_section {
                text.push_str(&format!("\n[{section}]\n"));
                current_section = section;
            }
            let full_key = if section.is_empty() {
                key.to_owned()
            } else {
                format!("{section}.{key}")
            };
            let origin = self.origins.of(&full_key).describe();
            match value {
                Some(value) => text.push_str(&format!("{key} = {value}  # {origin}\n")),
                None => text.push_str(&format!("# {key} = (unlimited)  # {origin}\n")),
            }
        }
        text
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|index| index + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &rest[..colon],
                &rest[at..]
            ),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

pub const DEFAULT_BIND: &str = "127.0.0.1:8000";
/// How long running executions may take to finish at shutdown, unless configured.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// `$XDG_DATA_HOME/corral`, else `~/.local/share/corral`, else `./corral-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|value| !value.is_empty()) {
        return PathBuf::from(xdg).join("corral");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|value| !value.is_empty()) {
        return PathBuf::from(home).join(".local/share/corral");
    }
    PathBuf::from("corral-data")
}

/// The config file, and the keys it sets (each with origin `File`).
pub fn read_file(path: &Path) -> anyhow::Result<(FileConfig, Origins)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let config: FileConfig = toml::from_str(&text).map_err(|error| {
        anyhow::anyhow!(
            "parsing config file {}: {}",
            path.display(),
            file_error_text(&error)
        )
    })?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))?;
    let mut origins = Origins::default();
    mark_file_keys(&mut origins, "", &table);
    Ok((config, origins))
}

/// A config file error for people: TOML's excerpt of the line, with serde's Rust type names
/// reworded, and a hint where an API field name (`memory_bytes`) was written for a file key.
fn file_error_text(error: &toml::de::Error) -> String {
    let message = error.message();
    let mut text = error.to_string();
    if let Some(start) = text.rfind(message) {
        text.replace_range(start.., &corral_api::json_errors::describe_value(message));
    }
    for (api_field, file_key) in [
        ("memory_bytes", "memory_mib"),
        ("workspace_bytes", "workspace_mib"),
        ("cpu_millicores", "cpus"),
    ] {
        if message.contains(&format!("`{api_field}`")) {
            text.push_str(&format!(
                "\nthe config file counts this as `{file_key}` (`{api_field}` is the API's name \
                 for the same limit)"
            ));
        }
    }
    text.trim_end().to_owned()
}

fn mark_file_keys(origins: &mut Origins, prefix: &str, table: &toml::Table) {
    for (key, value) in table {
        let full_key = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => mark_file_keys(origins, &full_key, inner),
            _ => origins.set(&full_key, Origin::File),
        }
    }
}

/// Every surface's mount point: its default, then the file's `[mounts]`, then `--mount
/// SURFACE=PATH` flags (or `CORRAL_MOUNT`); refused when a surface is unknown, a prefix is
/// malformed or two surfaces' routes would collide (the message names the routes).
pub fn resolve_mounts(
    file: &BTreeMap<String, String>,
    flags: &[String],
    flags_from_environment: bool,
    origins: &mut Origins,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut mounts: BTreeMap<String, String> = corral_api::SURFACES
        .iter()
        .map(|surface| (surface.name.to_owned(), surface.default_mount.to_owned()))
        .collect();
    let known = || corral_api::surface_names().join(", ");
    for (surface, mount) in file {
        if !mounts.contains_key(surface) {
            bail!(
                "unknown surface {surface:?} in [mounts] (known: {})",
                known()
            );
        }
        mounts.insert(surface.clone(), mount.clone());
    }
    for flag in flags {
        let Some((surface, mount)) = flag.split_once('=') else {
            bail!("--mount takes SURFACE=PATH (or SURFACE=off), not {flag:?}");
        };
        let surface = surface.trim();
        if !mounts.contains_key(surface) {
            bail!(
                "unknown surface {surface:?} in --mount (known: {})",
                known()
            );
        }
        mounts.insert(surface.to_owned(), mount.trim().to_owned());
        origins.set(
            &format!("mounts.{surface}"),
            if flags_from_environment {
                Origin::Environment("CORRAL_MOUNT")
            } else {
                Origin::Flag("--mount")
            },
        );
    }
    corral_api::check_mounts(&mounts)?;
    Ok(mounts)
}

/// A positive number of seconds (below 10^9), or `default` when absent.
pub fn seconds(name: &str, value: Option<f64>, default: Duration) -> anyhow::Result<Duration> {
    match value {
        None => Ok(default),
        Some(value) if value.is_finite() && value > 0.0 && value < 1.0e9 => {
            Ok(Duration::from_secs_f64(value))
        }
        Some(value) => bail!("{name} must be a positive number of seconds, not {value}"),
    }
}

impl FileLimits {
    pub fn apply(&self, defaults: Limits) -> anyhow::Result<Limits> {
        let limits = Limits {
            default_exec_timeout: seconds(
                "limits.default_execution_timeout_seconds",
                self.default_execution_timeout_seconds,
                defaults.default_exec_timeout,
            )?,
            max_exec_timeout: seconds(
                "limits.max_execution_timeout_seconds",
                self.max_execution_timeout_seconds,
                defaults.max_exec_timeout,
            )?,
            interrupt_grace: seconds(
                "limits.interrupt_grace_seconds",
                self.interrupt_grace_seconds,
                defaults.interrupt_grace,
            )?,
            idle_ttl: seconds(
                "limits.idle_ttl_seconds",
                self.idle_ttl_seconds,
                defaults.idle_ttl,
            )?,
            idle_ttl_ceiling: seconds(
                "limits.idle_ttl_ceiling_seconds",
                self.idle_ttl_ceiling_seconds,
                defaults.idle_ttl_ceiling,
            )?,
            max_ttl: seconds(
                "limits.max_ttl_seconds",
                self.max_ttl_seconds,
                defaults.max_ttl,
            )?,
            max_ttl_ceiling: seconds(
                "limits.max_ttl_ceiling_seconds",
                self.max_ttl_ceiling_seconds,
                defaults.max_ttl_ceiling,
            )?,
            max_sessions: self.max_sessions.unwrap_or(defaults.max_sessions),
            min_available_memory_bytes: self
                .min_available_memory_mib
                .map(|mib| mib.saturating_mul(1024 * 1024))
                .unwrap_or(defaults.min_available_memory_bytes),
            max_sessions_per_tenant: self
                .max_sessions_per_tenant
                .or(defaults.max_sessions_per_tenant),
            max_executions_per_tenant: self
                .max_executions_per_tenant
                .or(defaults.max_executions_per_tenant),
            executions_kept_per_session: self
                .executions_kept_per_session
                .unwrap_or(defaults.executions_kept_per_session),
            stored_output_cap_bytes: self
                .stored_output_cap_bytes
                .unwrap_or(defaults.stored_output_cap_bytes),
            ended_session_retention: seconds(
                "limits.ended_session_retention_seconds",
                self.ended_session_retention_seconds,
                defaults.ended_session_retention,
            )?,
            output_cap_bytes: self.output_cap_bytes.unwrap_or(defaults.output_cap_bytes),
            queue_capacity: self
                .execution_queue_capacity
                .unwrap_or(defaults.queue_capacity),
            max_code_bytes: self.max_code_bytes.unwrap_or(defaults.max_code_bytes),
            ..defaults
        };
        if limits.default_exec_timeout > limits.max_exec_timeout {
            bail!("limits.default_execution_timeout_seconds is above limits.max_execution_timeout_seconds");
        }
        // When only one of a TTL's default and ceiling is configured, the other follows it
        // (a default above its ceiling would refuse every create that names no TTL); when
        // both are, they must agree.
        let (idle_ttl, idle_ttl_ceiling) = fit_ttl(
            limits.idle_ttl,
            self.idle_ttl_seconds.is_some(),
            limits.idle_ttl_ceiling,
            self.idle_ttl_ceiling_seconds.is_some(),
        );
        let (max_ttl, max_ttl_ceiling) = fit_ttl(
            limits.max_ttl,
            self.max_ttl_seconds.is_some(),
            limits.max_ttl_ceiling,
            self.max_ttl_ceiling_seconds.is_some(),
        );
        let limits = Limits {
            idle_ttl,
            idle_ttl_ceiling,
            max_ttl,
            max_ttl_ceiling,
            ..limits
        };
        if limits.idle_ttl > limits.idle_ttl_ceiling {
            bail!("limits.idle_ttl_seconds is above limits.idle_ttl_ceiling_seconds");
        }
        if limits.max_ttl > limits.max_ttl_ceiling {
            bail!("limits.max_ttl_seconds is above limits.max_ttl_ceiling_seconds");
        }
        if limits.queue_capacity == 0
            || limits.output_cap_bytes == 0
            || limits.max_code_bytes == 0
            || limits.max_sessions == 0
            || limits.max_sessions_per_tenant == Some(0)
            || limits.max_executions_per_tenant == Some(0)
            || limits.executions_kept_per_session == 0
            || limits.stored_output_cap_bytes == 0
        {
            bail!("limits.execution_queue_capacity, output_cap_bytes, max_code_bytes, max_sessions, max_sessions_per_tenant, max_executions_per_tenant, executions_kept_per_session and stored_output_cap_bytes must be positive");
        }
        Ok(limits)
    }
}

/// A TTL default and its ceiling, the unconfigured one moved to fit the configured one.
fn fit_ttl(
    default: Duration,
    default_set: bool,
    ceiling: Duration,
    ceiling_set: bool,
) -> (Duration, Duration) {
    match (default_set, ceiling_set) {
        (true, false) => (default, ceiling.max(default)),
        (false, true) => (default.min(ceiling), ceiling),
        _ => (default, ceiling),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_limits_override_defaults_and_are_checked() {
        let file: FileConfig = toml::from_str(
            "bind = \"127.0.0.1:0\"\n[limits]\nexecution_queue_capacity = 2\nmax_execution_timeout_seconds = 5\ndefault_execution_timeout_seconds = 1\n",
        )
        .expect("parses");
        let limits = file.limits.apply(Limits::default()).expect("valid");
        assert_eq!(limits.queue_capacity, 2);
        assert_eq!(limits.max_exec_timeout, Duration::from_secs(5));
        let bad: FileConfig =
            toml::from_str("[limits]\ndefault_execution_timeout_seconds = -1\n").expect("parses");
        assert!(bad.limits.apply(Limits::default()).is_err());
        assert!(toml::from_str::<FileConfig>("unknown = 1\n").is_err());
    }

    #[test]
    fn ttl_defaults_must_fit_their_ceilings() {
        let parse = |text: &str| {
            toml::from_str::<FileConfig>(text)
                .expect("parses")
                .limits
                .apply(Limits::default())
        };
        let raised = parse("[limits]\nidle_ttl_seconds = 1e8\n").expect("valid");
        assert_eq!(raised.idle_ttl_ceiling, raised.idle_ttl);
        let lowered = parse("[limits]\nmax_ttl_ceiling_seconds = 5\n").expect("valid");
        assert_eq!(lowered.max_ttl, Duration::from_secs(5));
        assert!(parse("[limits]\nidle_ttl_seconds = 20\nidle_ttl_ceiling_seconds = 10\n").is_err());
        assert!(parse("[limits]\nmax_ttl_seconds = 20\nmax_ttl_ceiling_seconds = 10\n").is_err());
        assert!(parse("[limits]\nmax_sessions = 0\n").is_err());
        assert!(parse("[limits]\nmax_ttl_seconds = 0\n").is_err());
    }

    #[test]
    fn pool_settings_are_checked() {
        let pool = |text: &str| {
            toml::from_str::<FileConfig>(text)
                .map_err(anyhow::Error::from)
                .and_then(|file| file.pool.apply(None))
        };
        let defaults = pool("").expect("defaults");
        assert_eq!(defaults, PoolSettings::default());
        let set = pool("[pool]\nsize = 8\nidle_size = 2\npreload = [\"json\", \"xml.dom\"]\n")
            .expect("valid");
        assert_eq!((set.size, set.idle_size), (8, 2));
        assert_eq!(set.preload, ["json", "xml.dom"]);
        assert!(pool("[pool]\nsize = 100000\n").is_err());
        assert!(pool("[pool]\npreload = [\"os; import x\"]\n").is_err());
        assert!(pool("[pool]\nshrink_after_seconds = -1\n").is_err());
        assert!(pool("[pool]\nsizes = 1\n").is_err());
        let flag = toml::from_str::<FileConfig>("[pool]\nsize = 8\n")
            .expect("parses")
            .pool
            .apply(Some(0))
            .expect("valid");
        assert_eq!((flag.size, flag.idle_size), (0, 0));
    }
}
