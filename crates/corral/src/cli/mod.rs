//! The command line: `serve`, `exec`, `sessions`, `files`, `keys`, `bench`, and the
//! generated `completions` and `man` page.

mod bench;
mod bench_compare;
mod bench_fleet;
mod bench_scale;
mod data_dir_lock;
mod exec;
mod files;
mod keys;
mod manual;
mod nodes;
mod progress;
mod runtimes;
mod serve;
mod sessions;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

/// The hidden command the server runs for each sandboxed worker (see `corral-sandbox`).
pub const SANDBOX_INIT: &str = "sandbox-init";

#[derive(Debug, Parser)]
#[command(
    name = "corral",
    version,
    about = "Stateful, sandboxed code-execution sessions over HTTP"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Run code like `python -c`, in a throwaway session or an existing one.
    Exec(ExecArgs),
    /// List, show and close sessions.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Move files between this machine and a session's workspace.
    #[command(subcommand)]
    Files(FilesCommand),
    /// Issue, list and revoke API keys (offline with --data-dir, else through the server).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Measure session start and execution latency against a fresh server.
    Bench(BenchArgs),
    /// Print a shell completion script: `corral completions bash > /etc/bash_completion.d/corral`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `corral man | man -l -`.
    Man,
    /// The nodes of a fleet (through a server's /v1/nodes, or offline with --database-url).
    #[command(subcommand)]
    Nodes(NodesCommand),
    /// Build the venvs of runtimes from their requirements.
    #[command(subcommand)]
    Runtimes(runtimes::RuntimesCommand),
}

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// List the nodes, their leases, live sessions and memory.
    List {
        /// Read the fleet's PostgreSQL database directly (no server needed).
        #[arg(long, env = "CORRAL_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Where a client command finds the server.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Base URL of the corral server (`http://` is assumed without a scheme).
    #[arg(
        long,
        env = "CORRAL_SERVER",
        default_value = "http://127.0.0.1:8000",
        global = true
    )]
    server: String,
    /// API key to present (`Authorization: Bearer`).
    #[arg(long, env = "CORRAL_API_KEY", global = true, hide_env_values = true)]
    api_key: Option<String>,
}

impl ServerArgs {
    pub fn client(&self) -> anyhow::Result<corral_api::client::CorralClient> {
        Ok(corral_api::client::CorralClient::new(&self.server)?.with_api_key(self.api_key.clone()))
    }
}

/// Where `corral keys` works: the store itself (offline, `--data-dir`) or a server.
#[derive(Debug, Args)]
pub struct KeysTarget {
    /// Manage the keys in this data directory directly (no server needed).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Manage the keys in this PostgreSQL database directly (a fleet's store; no server
    /// needed).
    #[arg(long, env = "CORRAL_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Issue a key; it is printed once and cannot be shown again.
    Create {
        /// admin, tenant or session.
        #[arg(long)]
        scope: String,
        /// Tenant of a tenant key.
        #[arg(long)]
        tenant: Option<String>,
        /// Session of a session key.
        #[arg(long)]
        session: Option<String>,
        /// A label for people.
        #[arg(long)]
        name: Option<String>,
        /// When the key stops working (RFC 3339, e.g. 2027-01-01T00:00:00Z).
        #[arg(long)]
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
        /// How to print the key: `corral` (`corral_<id>_<secret>`) or `e2b`
        /// (`e2b_<id><secret>`, the form the E2B SDKs accept as `E2B_API_KEY`); both
        /// spellings authenticate as the same key.
        #[arg(long, default_value = "corral")]
        format: String,
        #[command(flatten)]
        target: KeysTarget,
    },
    /// List keys (never their secrets).
    List {
        #[command(flatten)]
        target: KeysTarget,
    },
    /// Revoke a key by id.
    Revoke {
        id: String,
        #[command(flatten)]
        target: KeysTarget,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port) [default: 127.0.0.1:8000].
    #[arg(long, env = "CORRAL_BIND")]
    bind: Option<String>,
    /// Where the store and workspaces live (created on first start) [default:
    /// $XDG_DATA_HOME/corral, else ~/.local/share/corral].
    #[arg(long, env = "CORRAL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Python interpreter for sessions (a venv's python gives sessions its packages)
    /// [default: python3 on PATH].
    #[arg(long, env = "CORRAL_PYTHON")]
    python: Option<PathBuf>,
    /// TOML config file; flags and CORRAL_* variables override it [default: none; built-in
    /// defaults, see --print-config].
    #[arg(long, env = "CORRAL_CONFIG")]
    config: Option<PathBuf>,
    /// Mount a compatibility surface at a path prefix, or turn it `off`: `--mount e2b=/e2b`
    /// (repeatable; the variable takes a comma-separated list). Surfaces and defaults:
    /// python_rce=/, e2b=/e2b, ... (`corral serve --print-config` lists them all).
    #[arg(
        long = "mount",
        value_name = "SURFACE=PATH",
        env = "CORRAL_MOUNT",
        value_delimiter = ','
    )]
    mounts: Vec<String>,
    /// Idle sandboxed workers kept ready so a session starts by hand-over (0 turns the warm
    /// pool off; `[pool]` in the config file has the other settings) [default: 4].
    #[arg(long, env = "CORRAL_POOL_SIZE", value_name = "WORKERS")]
    pool_size: Option<usize>,
    /// What a stop (SIGTERM, Ctrl-C) does to live sessions: `close` them, or `detach` and
    /// leave them running for the next server on this data directory to adopt [default:
    /// close].
    #[arg(long, env = "CORRAL_SHUTDOWN_MODE", value_enum, value_name = "MODE")]
    shutdown_mode: Option<crate::config::ShutdownMode>,
    /// How long sessions whose server is gone (crashed, or detached) wait for the next server
    /// to adopt them before they end themselves [default: 300].
    #[arg(long, env = "CORRAL_ADOPTION_TIMEOUT_SECONDS", value_name = "SECONDS")]
    adoption_timeout_seconds: Option<f64>,
    /// Run sessions WITHOUT a sandbox (plain child processes). Only for hosts that cannot
    /// sandbox and trusted code; the server refuses to start unsandboxed otherwise [default:
    /// off].
    #[arg(long, env = "CORRAL_INSECURE_NO_SANDBOX")]
    insecure_no_sandbox: bool,
    /// Require an API key on every request even while the store has none (no open mode on
    /// loopback) [default: off: open while no key exists, and only on loopback].
    #[arg(long, env = "CORRAL_REQUIRE_AUTH")]
    require_auth: bool,
    /// Log lines as human-readable text or one JSON object per line [default: text].
    #[arg(long, env = "CORRAL_LOG_FORMAT", value_enum)]
    log_format: Option<crate::config::LogFormat>,
    #[command(flatten)]
    fleet: FleetArgs,
    /// Print the effective configuration (TOML, each value with its origin) and exit.
    #[arg(long)]
    print_config: bool,
    /// The arguments above that came from environment variables rather than flags.
    #[arg(skip)]
    from_environment: Vec<String>,
}

/// `corral serve`'s fleet settings (see docs/fleet.md).
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Keep the store in this PostgreSQL database (`postgres://user:password@host/db`)
    /// instead of SQLite in the data directory; nodes sharing it form a fleet.
    #[arg(long, env = "CORRAL_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// This node's id in the fleet (default: the host name).
    #[arg(long, env = "CORRAL_NODE_ID")]
    node_id: Option<String>,
    /// Where the other nodes reach this one (default: http:// and the bound address, or
    /// the host name when bound to every interface).
    #[arg(long, env = "CORRAL_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// Seconds a node's lease lasts; a node that misses renewing it is declared lost.
    #[arg(long, env = "CORRAL_NODE_LEASE_SECONDS")]
    node_lease_seconds: Option<f64>,
    /// The credential nodes present to each other on forwarded requests (at least 16
    /// characters, the same on every node; required with --database-url).
    #[arg(long, env = "CORRAL_NODE_SECRET", hide_env_values = true)]
    node_secret: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Run in this session instead of a throwaway one.
    #[arg(long)]
    session: Option<String>,
    /// Seconds before the execution is interrupted.
    #[arg(long)]
    timeout: Option<f64>,
    /// Print the execution as JSON instead of its output.
    #[arg(long)]
    json: bool,
    /// Code to run; `-` or nothing reads it from standard input.
    code: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
enum SessionsCommand {
    /// List live sessions (`--all` adds ended ones).
    List {
        /// Only sessions in this state.
        #[arg(long)]
        state: Option<String>,
        /// Also sessions that have ended (closed, expired, dead).
        #[arg(long, conflicts_with = "state")]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show one session.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Close a session.
    Close {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// Upload a local file into the session's workspace.
    Put {
        session: String,
        local: PathBuf,
        /// Path in the workspace (default: the local file's name).
        remote: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Download a file from the session's workspace (`-` writes to standard output).
    Get {
        session: String,
        remote: String,
        /// Local path (default: the remote file's name).
        local: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List a directory of the session's workspace.
    Ls {
        session: String,
        /// Directory in the workspace (default: the workspace).
        #[arg(default_value = "")]
        dir: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a file or directory in the session's workspace.
    Rm {
        session: String,
        remote: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Samples per measurement.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// Python interpreter for the benchmarked server's sessions.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Benchmark this running server instead of starting one.
    #[arg(long)]
    server: Option<String>,
    /// API key to present to a `--server` that requires keys (`Authorization: Bearer`).
    #[arg(long, env = "CORRAL_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    /// Start the benchmarked server without the sandbox (to measure what the sandbox costs).
    #[arg(long)]
    insecure_no_sandbox: bool,
    /// Idle workers in the started server's warm pool (its default when not given; 0 turns
    /// it off).
    #[arg(long, value_name = "WORKERS")]
    pool_size: Option<usize>,
    /// Fork the started server's Python workers from a zygote (`[pool] zygote = true`).
    #[arg(long, conflicts_with = "server")]
    zygote: bool,
    /// Measure a peer in the same run and print both side by side (with the ratio), writing
    /// JSON and an SVG chart under target/bench/: `jupyter` runs benches/peer_jupyter.py,
    /// which installs its pinned Jupyter Kernel Gateway into target/bench-venv when missing.
    #[arg(long, value_enum, value_name = "PEER", conflicts_with_all = ["server", "scale"])]
    compare: Option<BenchPeer>,
    /// Hold up to N idle sessions at once and report memory per session and create latency
    /// as their number grows (1, 10, 100, 1000, ... N), writing JSON and an SVG chart under
    /// target/bench/.
    #[arg(long, value_name = "N", conflicts_with = "server")]
    scale: Option<usize>,
    /// Fleet mode: 1 node vs 3 nodes on the PostgreSQL database at `--database-url`
    /// (creates/s, executes/s, direct vs forwarded execute latency), then N session records
    /// spread across the 3 nodes (workers stubbed: rows inserted through the store), read
    /// directly and forwarded, and listed. Writes target/bench/fleet.json.
    #[arg(long, value_name = "N", conflicts_with_all = ["server", "scale", "compare"], requires = "database_url")]
    fleet: Option<usize>,
    /// PostgreSQL server for `--fleet`: each run makes fresh databases on it.
    #[arg(long, env = "CORRAL_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

/// A server `corral bench --compare` measures beside corral.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchPeer {
    /// Jupyter Kernel Gateway (with ipykernel), the pins of benches/requirements-peer.txt.
    Jupyter,
}

impl Cli {
    /// Parses the command line (exiting on errors, like `Parser::parse`), noting which of
    /// `serve`'s settings came from environment variables.
    pub fn parse_noting_origins() -> Cli {
        let matches = Cli::command().get_matches();
        let mut cli = match Cli::from_arg_matches(&matches) {
            Ok(cli) => cli,
            Err(error) => error.exit(),
        };
        if let (Some(Command::Serve(arguments)), Some(("serve", serve))) =
            (&mut cli.command, matches.subcommand())
        {
            arguments.from_environment = serve
                .ids()
                .filter(|id| serve.value_source(id.as_str()) == Some(ValueSource::EnvVariable))
                .map(|id| id.as_str().to_owned())
                .collect();
        }
        cli
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Some(command) = cli.command else {
        // `corral` alone: the help, like `--help`, and success.
        Cli::command().print_help()?;
        return Ok(ExitCode::SUCCESS);
    };
    match command {
        Command::Completions { shell } => manual::completions(shell),
        Command::Man => manual::man_page(),
        Command::Serve(arguments) => serve::run(arguments).await,
        Command::Exec(arguments) => exec::run(arguments).await,
        Command::Sessions(command) => sessions::run(command).await,
        Command::Files(command) => files::run(command).await,
        Command::Keys(command) => keys::run(command).await,
        Command::Bench(arguments) => bench::run(arguments).await,
        Command::Nodes(command) => nodes::run(command).await,
        Command::Runtimes(command) => runtimes::run(command).await,
    }
}
