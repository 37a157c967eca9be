//! `corral bench --compare jupyter`: corral and Jupyter Kernel Gateway measured in one run.
//!
//! The peer's side lives in `benches/peer_jupyter.py` (it installs the pinned Kernel Gateway
//! into `target/bench-venv` when missing, starts both servers with the same interpreter, runs
//! the same operations against each, prints one table with both columns and the ratio, and
//! writes `target/bench/compare-jupyter.json` and `.svg`). This command finds that script
//! beside this binary's build and runs it on this binary.

use std::process::ExitCode;

use anyhow::{bail, Context};

use super::{BenchArgs, BenchPeer};

const PEER_SCRIPT: &str = "benches/peer_jupyter.py";

pub async fn run(arguments: &BenchArgs, peer: BenchPeer) -> anyhow::Result<ExitCode> {
    match peer {
        BenchPeer::Jupyter => {}
    }
    let exe = std::env::current_exe().context("finding this binary")?;
    let script = exe
        .ancestors()
        .map(|dir| dir.join(PEER_SCRIPT))
        .chain(std::iter::once(std::path::PathBuf::from(PEER_SCRIPT)))
        .find(|candidate| candidate.is_file());
    let Some(script) = script else {
        bail!("{PEER_SCRIPT} was not found beside this binary's build or in the current directory: run this from corral's source tree");
    };
    let python = std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into());
    let mut command = tokio::process::Command::new(&python);
    command
        .arg(&script)
        .arg("--corral")
        .arg(&exe)
        .arg("--iterations")
        .arg(arguments.iterations.max(1).to_string())
        .kill_on_drop(true);
    if arguments.json {
        command.arg("--json");
    }
    let status = command
        .status()
        .await
        .with_context(|| format!("running {} {}", python.to_string_lossy(), script.display()))?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
