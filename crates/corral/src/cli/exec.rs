//! `corral exec`: run code and print what it printed, like `python -c`.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::Context;
use corral_api::views::{ExecutionView, OutputView};

use super::ExecArgs;

pub async fn run(arguments: ExecArgs) -> anyhow::Result<ExitCode> {
    let code = match arguments.code.as_deref() {
        None | Some("-") => {
            let mut code = String::new();
            std::io::stdin()
                .read_to_string(&mut code)
                .context("reading code from standard input")?;
            code
        }
        Some(code) => code.to_owned(),
    };
    let client = arguments.server.client()?;
    let execution = match &arguments.session {
        Some(session_id) => client.execute(session_id, &code, arguments.timeout).await?,
        None => {
            let session = client.create_session(Some("corral exec")).await?;
            let outcome = client.execute(&session.id, &code, arguments.timeout).await;
            let closed = client.close_session(&session.id).await;
            let execution = outcome?;
            closed?;
            execution
        }
    };
    if arguments.json {
        println!("{}", serde_json::to_string_pretty(&execution)?);
    } else {
        print_execution(&execution)?;
    }
    Ok(if execution.status == "ok" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_execution(execution: &ExecutionView) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    for output in &execution.outputs {
        match output {
            OutputView::Stream { name, text } if name == "stderr" => {
                stderr.write_all(text.as_bytes())?;
                stderr.flush()?;
            }
            OutputView::Stream { text, .. } => {
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
            }
            OutputView::Display { data, .. } => {
                if let Some(text) = data.get("text/plain").and_then(|value| value.as_str()) {
                    writeln!(stdout, "{text}")?;
                }
            }
        }
    }
    if let Some(text) = execution
        .result
        .as_ref()
        .and_then(|bundle| bundle.get("text/plain"))
        .and_then(|value| value.as_str())
    {
        writeln!(stdout, "{text}")?;
    }
    stdout.flush()?;
    if let Some(error) = &execution.error {
        for chunk in &error.traceback {
            stderr.write_all(chunk.as_bytes())?;
        }
        if error.traceback.is_empty() {
            writeln!(stderr, "{}: {}", error.ename, error.evalue)?;
        }
    } else if execution.status != "ok" {
        writeln!(stderr, "execution {}", execution.status)?;
    }
    if execution.truncated {
        writeln!(stderr, "[output truncated at the server's cap]")?;
    }
    Ok(())
}
