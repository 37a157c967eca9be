//! The `corral` binary: command-line parsing and glue. Serving, the CLI commands and the
//! benchmark live in `cli/`; configuration in `config.rs`. No logic of the system lives here.

mod cli;
mod config;
mod network_config;
mod runtime_config;

use std::process::ExitCode;

fn main() -> ExitCode {
    // The sandbox launcher must stay single-threaded: dispatch before anything starts threads.
    // So must the file helper (it joins a session's namespaces) and a zygote-born worker's
    // reaper.
    let raw: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|argument| argument.to_string_lossy().into_owned())
        .collect();
    match raw.first().map(String::as_str) {
        Some(cli::SANDBOX_INIT) => {
            let policy = raw.get(1).map(String::as_str).unwrap_or_default();
            let code = corral_worker::launcher_main(policy);
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
        Some(corral_worker::REAPER_COMMAND) => {
            let code = corral_worker::reaper_main(&raw[1..]);
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
        Some(corral_worker::FILES_COMMAND) => {
            let code = corral_worker::files_main(&raw[1..]);
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
        _ => {}
    }
    let arguments = cli::Cli::parse_noting_origins();
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
