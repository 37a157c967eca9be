//! The command line: `serve`, `exec`, `sessions`, `keys` and `bench`.

mod bench;
mod exec;
mod files;
mod keys;
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
    command: Command,
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
    /// Build the venvs of runtimes from their requirements.
    #[command(subcommand)]
    Runtimes(runtimes::RuntimesCommand),
}

/// Where a client command finds the server.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Base URL of the corral server.
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
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "CORRAL_BIND")]
    bind: Option<String>,
    /// Where the store and workspaces live (created on first start).
    #[arg(long, env = "CORRAL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Python interpreter for sessions (a venv's python gives sessions its packages).
    #[arg(long, env = "CORRAL_PYTHON")]
    python: Option<PathBuf>,
    /// TOML config file; flags and CORRAL_* variables override it.
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
    /// Run sessions WITHOUT a sandbox (plain child processes). Only for hosts that cannot
    /// sandbox and trusted code; the server refuses to start unsandboxed otherwise.
    #[arg(long, env = "CORRAL_INSECURE_NO_SANDBOX")]
    insecure_no_sandbox: bool,
    /// Require an API key on every request even while the store has none (no open mode on
    /// loopback).
    #[arg(long, env = "CORRAL_REQUIRE_AUTH")]
    require_auth: bool,
    /// Log lines as human-readable text (default) or one JSON object per line.
    #[arg(long, env = "CORRAL_LOG_FORMAT", value_enum)]
    log_format: Option<crate::config::LogFormat>,
    /// Print the effective configuration (TOML, each value with its origin) and exit.
    #[arg(long)]
    print_config: bool,
    /// The arguments above that came from environment variables rather than flags.
    #[arg(skip)]
    from_environment: Vec<String>,
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
    /// List sessions.
    List {
        /// Only sessions in this state.
        #[arg(long)]
        state: Option<String>,
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
        if let (Command::Serve(arguments), Some(("serve", serve))) =
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
    match cli.command {
        Command::Serve(arguments) => serve::run(arguments).await,
        Command::Exec(arguments) => exec::run(arguments).await,
        Command::Sessions(command) => sessions::run(command).await,
        Command::Files(command) => files::run(command).await,
        Command::Keys(command) => keys::run(command).await,
        Command::Bench(arguments) => bench::run(arguments).await,
        Command::Runtimes(command) => runtimes::run(command).await,
    }
}
