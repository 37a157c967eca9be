//! `corral serve`: resolve the configuration, claim the data directory (one server per
//! directory, `data_dir_lock`), open the store, start the engine, serve HTTP
//! until SIGINT/SIGTERM, then shut down cleanly: stop accepting, let running executions
//! finish within the grace period, close every session (`server shutdown`) — or, with
//! `shutdown_mode = "detach"`, leave them running for the next server — and exit 0.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use corral_api::{build_router, serve, ApiOptions, MetricsRegistry};
use corral_core::Limits;
use corral_engine::{
    Engine, EngineConfig, FleetConfig, Sandbox, SandboxSettings, DEFAULT_NODE_LEASE,
};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use super::data_dir_lock::DataDirLock;
use super::ServeArgs;
use crate::config::{
    self, FileConfig, LogFormat, Origin, Origins, ServeConfig, ShutdownMode, DEFAULT_BIND,
    DEFAULT_SHUTDOWN_GRACE,
};

/// Host uids given to sessions: a range no system account uses.
const SESSION_UID_BASE: u32 = 300_000;
const SESSION_UID_COUNT: u32 = 100_000;
/// How long in-flight HTTP requests get to finish once the sessions are closed.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

pub(super) fn resolve(arguments: ServeArgs) -> anyhow::Result<ServeConfig> {
    let (file, mut origins) = match &arguments.config {
        Some(path) => config::read_file(path)?,
        None => (FileConfig::default(), Origins::default()),
    };
    let config_file = match &arguments.config {
        Some(path) => Some(
            std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?,
        ),
        None => None,
    };
    // A flag or its environment variable beats the file.
    let from_environment = |id: &str| arguments.from_environment.iter().any(|set| set == id);
    for (id, key, flag, variable, given) in [
        (
            "bind",
            "bind",
            "--bind",
            "CORRAL_BIND",
            arguments.bind.is_some(),
        ),
        (
            "data_dir",
            "data_dir",
            "--data-dir",
            "CORRAL_DATA_DIR",
            arguments.data_dir.is_some(),
        ),
        (
            "python",
            "python",
            "--python",
            "CORRAL_PYTHON",
            arguments.python.is_some(),
        ),
        (
            "log_format",
            "log_format",
            "--log-format",
            "CORRAL_LOG_FORMAT",
            arguments.log_format.is_some(),
        ),
        (
            "require_auth",
            "require_auth",
            "--require-auth",
            "CORRAL_REQUIRE_AUTH",
            arguments.require_auth,
        ),
        (
            "pool_size",
            "pool.size",
            "--pool-size",
            "CORRAL_POOL_SIZE",
            arguments.pool_size.is_some(),
        ),
        (
            "shutdown_mode",
            "shutdown_mode",
            "--shutdown-mode",
            "CORRAL_SHUTDOWN_MODE",
            arguments.shutdown_mode.is_some(),
        ),
        (
            "adoption_timeout_seconds",
            "adoption_timeout_seconds",
            "--adoption-timeout-seconds",
            "CORRAL_ADOPTION_TIMEOUT_SECONDS",
            arguments.adoption_timeout_seconds.is_some(),
        ),
        (
            "database_url",
            "database_url",
            "--database-url",
            "CORRAL_DATABASE_URL",
            arguments.fleet.database_url.is_some(),
        ),
        (
            "node_id",
            "node_id",
            "--node-id",
            "CORRAL_NODE_ID",
            arguments.fleet.node_id.is_some(),
        ),
        (
            "advertise_url",
            "advertise_url",
            "--advertise-url",
            "CORRAL_ADVERTISE_URL",
            arguments.fleet.advertise_url.is_some(),
        ),
        (
            "node_lease_seconds",
            "node_lease_seconds",
            "--node-lease-seconds",
            "CORRAL_NODE_LEASE_SECONDS",
            arguments.fleet.node_lease_seconds.is_some(),
        ),
        (
            "insecure_no_sandbox",
            "sandbox.insecure_no_sandbox",
            "--insecure-no-sandbox",
            "CORRAL_INSECURE_NO_SANDBOX",
            arguments.insecure_no_sandbox,
        ),
    ] {
        if given {
            let origin = if from_environment(id) {
                Origin::Environment(variable)
            } else {
                Origin::Flag(flag)
            };
            origins.set(key, origin);
        }
    }
    let (session_limits, max_session_limits) = file.sandbox.limits_and_maximum()?;
    let python: std::path::PathBuf = arguments
        .python
        .clone()
        .or(file.python.clone())
        .unwrap_or_else(|| "python3".into());
    Ok(ServeConfig {
        bind: arguments
            .bind
            .or(file.bind)
            .unwrap_or_else(|| DEFAULT_BIND.to_owned()),
        data_dir: arguments
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(config::default_data_dir),
        python: python.clone(),
        runtimes: crate::runtime_config::resolve_runtimes(
            &file.runtimes,
            &python,
            config_file
                .as_deref()
                .and_then(std::path::Path::parent)
                .unwrap_or(std::path::Path::new(".")),
        )?,
        limits: file.limits.apply(Limits::default())?,
        shutdown_grace: config::seconds(
            "shutdown_grace_seconds",
            file.shutdown_grace_seconds,
            DEFAULT_SHUTDOWN_GRACE,
        )?,
        shutdown_mode: arguments
            .shutdown_mode
            .or(file.shutdown_mode)
            .unwrap_or_default(),
        adoption_timeout: config::seconds(
            "adoption_timeout_seconds",
            arguments
                .adoption_timeout_seconds
                .or(file.adoption_timeout_seconds),
            config::DEFAULT_ADOPTION_TIMEOUT,
        )?,
        mounts: config::resolve_mounts(
            &file.mounts,
            &arguments.mounts,
            from_environment("mounts"),
            &mut origins,
        )?,
        session_limits,
        max_session_limits,
        pool: file.pool.apply(arguments.pool_size)?,
        network: file.network.apply()?,
        insecure_no_sandbox: arguments.insecure_no_sandbox
            || file.sandbox.insecure_no_sandbox.unwrap_or(false),
        config_file,
        log_format: arguments.log_format.or(file.log_format).unwrap_or_default(),
        require_auth: arguments.require_auth || file.require_auth.unwrap_or(false),
        node_lease: config::seconds(
            "node_lease_seconds",
            arguments
                .fleet
                .node_lease_seconds
                .or(file.node_lease_seconds),
            DEFAULT_NODE_LEASE,
        )?,
        database_url: arguments.fleet.database_url.or(file.database_url),
        node_id: arguments.fleet.node_id.or(file.node_id),
        advertise_url: arguments.fleet.advertise_url.or(file.advertise_url),
        node_secret: arguments.fleet.node_secret,
        origins,
    })
}

/// This node's place in a fleet: only with a PostgreSQL store. The node id defaults to the
/// host name, the advertise URL to the bound address (the host name instead of an unspecified
/// address such as 0.0.0.0).
fn fleet_config(
    config: &ServeConfig,
    address: std::net::SocketAddr,
) -> anyhow::Result<Option<FleetConfig>> {
    if config.database_url.is_none() {
        if config.node_id.is_some() || config.advertise_url.is_some() {
            anyhow::bail!("--node-id and --advertise-url need --database-url (a fleet shares a PostgreSQL store)");
        }
        return Ok(None);
    }
    match &config.node_secret {
        Some(secret) if secret.chars().count() >= 16 => {}
        _ => anyhow::bail!(
            "a fleet node needs the node-to-node credential: set CORRAL_NODE_SECRET (or \
             --node-secret) to the same secret of at least 16 characters on every node"
        ),
    }
    let host_name = || {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .ok()
            .filter(|name| !name.is_empty())
    };
    let node_id = match &config.node_id {
        Some(id) => id.clone(),
        None => host_name().context("no --node-id given and the host name is unknown")?,
    };
    if !corral_core::is_valid_node_id(&node_id) {
        anyhow::bail!(
            "node id {node_id:?} is not valid: 1 to {} letters, digits, '.', '-' or '_'",
            corral_core::MAX_NODE_ID_CHARS
        );
    }
    let advertise_url = match &config.advertise_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None if address.ip().is_unspecified() => format!(
            "http://{}:{}",
            host_name().context("no --advertise-url given and the host name is unknown")?,
            address.port()
        ),
        None => format!("http://{address}"),
    };
    if !(advertise_url.starts_with("http://") || advertise_url.starts_with("https://")) {
        anyhow::bail!("--advertise-url must be an http:// or https:// URL, not {advertise_url:?}");
    }
    if config.node_lease < std::time::Duration::from_millis(300) {
        anyhow::bail!("node_lease_seconds must be at least 0.3");
    }
    Ok(Some(FleetConfig {
        node_id,
        advertise_url,
        lease: config.node_lease,
    }))
}

/// Logs to standard error in the configured format; `CORRAL_LOG` filters (default `info`).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CORRAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// The sandbox sessions run in, or the reason the server must not start.
fn sandbox(
    config: &ServeConfig,
    data_dir: &std::path::Path,
) -> anyhow::Result<Option<Arc<Sandbox>>> {
    if config.insecure_no_sandbox {
        tracing::warn!("sandboxing disabled by --insecure-no-sandbox: sessions run as plain processes with the server's rights");
        return Ok(None);
    }
    let mut hidden_paths = vec![data_dir.to_owned()];
    hidden_paths.extend(config.config_file.clone());
    let settings = SandboxSettings {
        keeper_dir: data_dir.join("workers"),
        adoption_timeout: config.adoption_timeout,
        launcher: std::env::current_exe()
            .context("finding the corral binary for the sandbox launcher")?,
        runtime_dir: data_dir.join("runtime").join("sandbox"),
        hidden_paths,
        uid_base: SESSION_UID_BASE,
        uid_count: SESSION_UID_COUNT,
        cgroup_root: "/sys/fs/cgroup".into(),
    };
    match Sandbox::new(settings) {
        Ok(sandbox) => Ok(Some(Arc::new(sandbox))),
        Err(error) => anyhow::bail!(
            "this host cannot sandbox sessions ({error}); refusing to start. Pass --insecure-no-sandbox to run sessions unsandboxed (trusted code only)"
        ),
    }
}

pub async fn run(arguments: ServeArgs) -> anyhow::Result<ExitCode> {
    let print_config = arguments.print_config;
    let config = resolve(arguments)?;
    if print_config {
        print!("{}", config.to_annotated_toml());
        return Ok(ExitCode::SUCCESS);
    }
    init_logging(config.log_format);
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&config.data_dir)
        .with_context(|| format!("resolving data directory {}", config.data_dir.display()))?;
    // Before the store is touched: a second server would mark the first one's sessions dead.
    let mut data_dir_lock = DataDirLock::acquire(&data_dir)?;
    let store = match &config.database_url {
        Some(url) => corral_store::open_store(&data_dir, Some(url))
            .await
            .with_context(|| {
                format!(
                    "opening the store in the PostgreSQL database {}",
                    config::redact_password(url)
                )
            })?,
        None => corral_store::open_store(&data_dir, None)
            .await
            .with_context(|| format!("opening the store in {}", data_dir.display()))?,
    };
    let sandbox = sandbox(&config, &data_dir)?;
    if let Some(sandbox) = &sandbox {
        if sandbox.cgroup_version().is_none() {
            anyhow::bail!("no usable cgroup hierarchy (memory, pids, cpu) for session limits; refusing to start. Pass --insecure-no-sandbox to run sessions unsandboxed (trusted code only)");
        }
    }
    let listener = TcpListener::bind(&config.bind)
        .await
        .with_context(|| format!("binding {}", config.bind))?;
    let address = listener.local_addr().context("reading the bound address")?;
    data_dir_lock.record_address(address)?;
    // Without keys anyone who can connect is admin: only acceptable on loopback.
    let loopback = address.ip().is_loopback();
    let has_keys = store
        .has_active_api_keys()
        .await
        .context("reading API keys")?;
    if !loopback && !has_keys {
        anyhow::bail!(
            "refusing to serve on {address} without API keys: anyone who can connect would be \
             admin. Create one first: corral keys create --scope admin --data-dir {}",
            data_dir.display()
        );
    }
    let fleet = fleet_config(&config, address)?;
    // Installed before the engine starts, so what its start-up counts (adopted sessions) is
    // exported.
    let metrics = MetricsRegistry::install()?;
    let engine = Engine::start(
        EngineConfig {
            data_dir: data_dir.clone(),
            python: config.python.clone(),
            runtimes: config.runtimes.clone(),
            limits: config.limits.clone(),
            sandbox,
            session_limits: config.session_limits,
            max_session_limits: config.max_session_limits,
            open_mode: loopback && !config.require_auth,
            pool: config.pool.clone(),
            fleet,
            network: config.network.clone(),
        },
        store,
    )
    .await
    .context("starting the engine")?;
    let router = build_router(
        engine.clone(),
        &ApiOptions {
            mounts: config.mounts.clone(),
            metrics: Some(metrics),
            node_secret: config.node_secret.clone(),
        },
    )?;
    let info = engine.info();
    let runtime = info.runtimes.first();
    let isolation = if info.isolation.sandboxed() {
        "sandboxed".to_owned()
    } else {
        let active: Vec<&str> = info
            .isolation
            .features
            .iter()
            .filter(|feature| feature.active)
            .map(|feature| feature.name)
            .collect();
        format!("NOT sandboxed (active: {})", active.join(", "))
    };
    let inactive = info.isolation.inactive();
    if !inactive.is_empty() {
        tracing::warn!(
            "isolation features not applied on this host: {}",
            inactive.join(", ")
        );
    }
    let open = loopback && !config.require_auth && !has_keys;
    let auth = if open { "open" } else { "keys-required" };
    tracing::info!(
        "corral listening on http://{address} auth={auth} data_dir={} python={} ({}) isolation={isolation}",
        data_dir.display(),
        runtime
            .map(|runtime| runtime.interpreter.as_str())
            .unwrap_or("?"),
        runtime
            .map(|runtime| runtime.language_version.as_str())
            .unwrap_or("?"),
    );
    if open {
        tracing::warn!(
            "open mode: no API keys exist, so every caller on loopback is admin; the first key \
             (corral keys create --scope admin) makes the server require keys"
        );
    } else {
        tracing::info!("API keys required on every request (Authorization: Bearer <key>)");
    }

    let (stop_sender, stop_receiver) = tokio::sync::watch::channel(false);
    let mut stop = stop_receiver.clone();
    let shutdown = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    let mut server = tokio::spawn(serve(listener, router, shutdown));
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        result = &mut server => {
            result.context("the HTTP server task failed")?.context("serving HTTP")?;
            return Ok(ExitCode::FAILURE);
        }
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
        _ = terminate.recv() => tracing::info!("SIGTERM received; shutting down"),
    }
    // Stop accepting connections; requests already in flight go on. Running and queued
    // executions get the grace period, then every session is closed and recorded.
    // A second signal cuts the grace period short.
    let _ = stop_sender.send(true);
    tracing::info!(
        grace_seconds = config.shutdown_grace.as_secs_f64(),
        "no longer accepting connections; letting running executions finish"
    );
    let detach = config.shutdown_mode == ShutdownMode::Detach;
    let stop_engine = |grace: Duration| {
        let engine = engine.clone();
        async move {
            if detach {
                engine.detach(grace).await;
            } else {
                engine.shutdown(grace).await;
            }
        }
    };
    let graceful = stop_engine(config.shutdown_grace);
    tokio::pin!(graceful);
    let second = if detach {
        "second signal; leaving every session to the next server now"
    } else {
        "second signal; closing every session now"
    };
    tokio::select! {
        _ = &mut graceful => {}
        _ = tokio::signal::ctrl_c() => {
            tracing::warn!("{second}");
            stop_engine(Duration::ZERO).await;
        }
        _ = terminate.recv() => {
            tracing::warn!("{second}");
            stop_engine(Duration::ZERO).await;
        }
    }
    match tokio::time::timeout(DRAIN_DEADLINE, &mut server).await {
        Ok(_) => tracing::info!("stopped"),
        Err(_) => {
            server.abort();
            tracing::warn!("some requests were still open at the drain deadline");
        }
    }
    drop(data_dir_lock);
    Ok(ExitCode::SUCCESS)
}
