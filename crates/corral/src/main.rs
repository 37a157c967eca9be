//! The `corral` binary: command-line parsing and glue. Serving, the CLI commands and the
//! benchmark live in `cli/`; configuration in `config.rs`. No logic of the system lives here.

mod cli;
mod config;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The sandbox launcher must stay single-threaded: dispatch before anything starts threads.
    let mut raw = std::env::args_os().skip(1);
    if raw.next().as_deref() == Some(std::ffi::OsStr::new(cli::SANDBOX_INIT)) {
        let policy = raw.next().unwrap_or_default();
        let code = corral_worker::launcher_main(&policy.to_string_lossy());
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let arguments = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("corral: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(arguments)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("corral: {error:#}");
            ExitCode::FAILURE
        }
    }
}
