//! `corral exec`: run code and print what it prints as it prints it, like `python -c`:
//! output streams (server-sent events), `sys.exit(n)` exits `n`, a timeout is one
//! `TimeoutError` line, Ctrl-C interrupts the remote cell and a second Ctrl-C detaches.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::Context;
use corral_api::client::{CorralClient, ExecutionEvent};
use corral_api::views::ExecutionView;

use super::ExecArgs;

/// The exit status of a process stopped by SIGINT, as shells report it.
const INTERRUPTED: u8 = 130;

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
    let (session_id, throwaway) = match &arguments.session {
        Some(session_id) => (session_id.clone(), false),
        None => (client.create_session(Some("corral exec")).await?.id, true),
    };
    let outcome = run_streaming(&client, &session_id, &code, &arguments).await;
    if throwaway {
        let closed = client.close_session(&session_id).await;
        if outcome.is_ok() {
            closed?;
        }
    }
    let execution = match outcome? {
        Finished::Execution(execution) => execution,
        Finished::Detached => {
            if throwaway {
                eprintln!("corral: detached; the throwaway session was closed");
            } else {
                eprintln!(
                    "corral: detached; the execution goes on in session {session_id} \
                     (corral sessions show {session_id})"
                );
            }
            return Ok(ExitCode::from(INTERRUPTED));
        }
    };
    let execution = *execution;
    if arguments.json {
        println!("{}", serde_json::to_string_pretty(&execution)?);
    } else {
        print_ending(&execution)?;
    }
    Ok(exit_code(&execution))
}

enum Finished {
    Execution(Box<ExecutionView>),
    Detached,
}

/// Runs the code, printing events as they come (unless `--json`), with Ctrl-C handled.
async fn run_streaming(
    client: &CorralClient,
    session_id: &str,
    code: &str,
    arguments: &ExecArgs,
) -> anyhow::Result<Finished> {
    let quiet = arguments.json;
    let execution = client.execute_streaming(session_id, code, arguments.timeout, |event| {
        if !quiet {
            let _ = print_event(&event);
        }
    });
    tokio::pin!(execution);
    // One listener for the whole execution, made before it starts: a `ctrl_c()` future made
    // per loop turn registers only when first polled, so a Ctrl-C arriving while the stream
    // was being printed could be lost.
    let mut ctrl_c = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("listening for Ctrl-C")?;
    let mut interrupts = 0;
    loop {
        tokio::select! {
            finished = &mut execution => {
                return Ok(Finished::Execution(Box::new(finished?)));
            }
            _ = ctrl_c.recv() => {
                interrupts += 1;
                if interrupts > 1 {
                    return Ok(Finished::Detached);
                }
                eprintln!("\ncorral: interrupting (Ctrl-C again to detach)");
                client.interrupt_session(session_id).await?;
            }
        }
    }
}

fn print_event(event: &ExecutionEvent) -> std::io::Result<()> {
    match event {
        ExecutionEvent::Stream { name, text } if name == "stderr" => {
            let mut stderr = std::io::stderr().lock();
            stderr.write_all(text.as_bytes())?;
            stderr.flush()
        }
        ExecutionEvent::Stream { text, .. } => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()
        }
        ExecutionEvent::Display { data } | ExecutionEvent::Result { data } => {
            let mut stdout = std::io::stdout().lock();
            match data.get("text/plain").and_then(|value| value.as_str()) {
                Some(text) => writeln!(stdout, "{text}")?,
                None => {
                    let kinds: Vec<&str> = data.keys().map(String::as_str).collect();
                    writeln!(stdout, "[{} output]", kinds.join(", "))?
                }
            }
            stdout.flush()
        }
        // Errors are printed from the finished execution, which says what really happened
        // (a timeout rather than the KeyboardInterrupt that delivered it).
        ExecutionEvent::Error(_) | ExecutionEvent::Done(_) | ExecutionEvent::Problem(_) => Ok(()),
    }
}

/// What `python -c` prints at the end: the traceback, a timeout's one line, nothing for
/// `sys.exit`.
fn print_ending(execution: &ExecutionView) -> anyhow::Result<()> {
    let mut stderr = std::io::stderr().lock();
    match &execution.error {
        // `sys.exit("message")`: Python prints the message and exits 1; a code is silent.
        Some(error) if error.ename == "SystemExit" && system_exit_code(&error.evalue).is_none() => {
            writeln!(stderr, "{}", error.evalue)?;
        }
        Some(error) if error.ename == "SystemExit" => {}
        Some(error) if execution.status == "timeout" || execution.status == "killed" => {
            writeln!(stderr, "{}: {}", error.ename, error.evalue)?;
        }
        Some(error) => {
            for chunk in &error.traceback {
                stderr.write_all(chunk.as_bytes())?;
            }
            if error.traceback.is_empty() {
                writeln!(stderr, "{}: {}", error.ename, error.evalue)?;
            }
        }
        None if execution.status != "ok" => writeln!(stderr, "execution {}", execution.status)?,
        None => {}
    }
    if execution.truncated {
        writeln!(stderr, "[output truncated at the server's cap]")?;
    }
    Ok(())
}

/// `SystemExit`'s code from its `str()`: `""`/`None` → 0, an integer → itself; `None` for a
/// message.
fn system_exit_code(evalue: &str) -> Option<u8> {
    match evalue.trim() {
        "" | "None" => Some(0),
        number => number
            .parse::<i64>()
            .ok()
            .map(|code| (code.rem_euclid(256)) as u8),
    }
}

fn exit_code(execution: &ExecutionView) -> ExitCode {
    match (&execution.error, execution.status.as_str()) {
        (_, "ok") => ExitCode::SUCCESS,
        (Some(error), _) if error.ename == "SystemExit" => {
            ExitCode::from(system_exit_code(&error.evalue).unwrap_or(1))
        }
        (_, "interrupted") => ExitCode::from(INTERRUPTED),
        _ => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::system_exit_code;

    #[test]
    fn system_exit_codes_like_python() {
        assert_eq!(system_exit_code(""), Some(0));
        assert_eq!(system_exit_code("None"), Some(0));
        assert_eq!(system_exit_code("3"), Some(3));
        assert_eq!(system_exit_code("256"), Some(0));
        assert_eq!(system_exit_code("-1"), Some(255));
        assert_eq!(system_exit_code("bye"), None);
    }
}
