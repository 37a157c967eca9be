//! `corral runtimes build NAME`: builds (or confirms up to date) the venv of a `[runtimes.NAME]`
//! table with `requirements` or `packages`, ahead of the server start that would otherwise
//! build it. Progress (pip's lines, on one line) only on a terminal.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;
use corral_engine::{venv_directory, RuntimeKind};

use super::ServeArgs;

#[derive(Debug, Subcommand)]
pub enum RuntimesCommand {
    /// Build the venv of a runtime (takes serve's configuration flags; rebuilt only when the
    /// requirements file, the package list or the base interpreter changed).
    Build {
        /// The runtime's name (`[runtimes.NAME]`).
        name: String,
        #[command(flatten)]
        serve: ServeArgs,
    },
}

/// Longest a build may take.
const BUILD_LIMIT: Duration = Duration::from_secs(1800);

pub async fn run(command: RuntimesCommand) -> anyhow::Result<ExitCode> {
    let RuntimesCommand::Build { name, serve } = command;
    let config = super::serve::resolve(serve)?;
    let Some(spec) = config.runtimes.iter().find(|spec| spec.name == name) else {
        let names: Vec<&str> = config
            .runtimes
            .iter()
            .map(|spec| spec.name.as_str())
            .collect();
        bail!(
            "no runtime {name:?} in the configuration (runtimes: {})",
            names.join(", ")
        );
    };
    let RuntimeKind::Venv { recipe } = &spec.kind else {
        bail!("the runtime {name:?} has no `requirements` or `packages`: nothing to build");
    };
    let directory = venv_directory(&config.data_dir, &name);
    let terminal = std::io::stderr().is_terminal();
    let venv = corral_worker::ensure_venv(recipe, &directory, BUILD_LIMIT, |line| {
        if terminal {
            let shown: String = line.chars().take(100).collect();
            eprint!("\r\x1b[K{shown}");
            let _ = std::io::stderr().flush();
        }
    })
    .await;
    if terminal {
        eprint!("\r\x1b[K");
    }
    match venv {
        Ok(venv) => {
            let what = if venv.built { "built" } else { "up to date" };
            println!(
                "runtime {name}: {what} ({}, {} packages)",
                venv.python.display(),
                venv.packages.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("corral: runtime {name}: {error}");
            Ok(ExitCode::FAILURE)
        }
    }
}
