//! `corral exec` behaves like `python -c` against a real server: output streams as it is
//! printed, `sys.exit(n)` exits `n` silently, a timeout is one `TimeoutError` line (also in
//! `--json`), rich results print their `text/plain`, Ctrl-C interrupts the remote cell and a
//! second Ctrl-C detaches.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::{gate_path, TestServer, DEADLINE};

fn exec(server: &TestServer, arguments: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .arg("exec")
        .args(arguments)
        .args(["--server", &server.url])
        .stdin(Stdio::null())
        .output()
        .expect("run corral exec")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A running `corral exec` whose standard output arrives line by line on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    fn start(server: &TestServer, arguments: &[&str]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_corral"))
            .arg("exec")
            .args(arguments)
            .args(["--server", &server.url])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run corral exec");
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Running {
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    fn next_line(&mut self) -> String {
        match self.lines.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(error) => {
                let _ = self.child.kill();
                let status = self.child.wait();
                let stderr = self.stderr.take().map(|thread| thread.join());
                panic!("no line of output ({error}); corral exec ended {status:?}: {stderr:?}");
            }
        }
    }

    fn interrupt(&self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT).expect("SIGINT");
    }

    /// Waits for the exit (bounded) and returns the exit code and standard error.
    fn finish(mut self) -> (Option<i32>, String) {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let stderr = self.stderr.take().expect("stderr reader");
                return (status.code(), stderr.join().expect("stderr"));
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("corral exec did not exit");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[tokio::test]
async fn output_streams_while_the_cell_runs() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let gate = gate_path(&server, &id, "gate");
    let code = "import os, time\nprint('first', flush=True)\nwhile not os.path.exists('gate'):\n    time.sleep(0.02)\nprint('second')";
    let mut running = Running::start(&server, &["--session", &id, code]);
    // The first line arrives while the cell still waits for the gate: nothing ends before it.
    assert_eq!(running.next_line(), "first");
    std::fs::write(&gate, "").expect("open the gate");
    assert_eq!(running.next_line(), "second");
    let (code, stderr) = running.finish();
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test]
async fn sys_exit_exits_with_its_code_silently() {
    let server = TestServer::start();
    let three = exec(&server, &["import sys\nprint('before')\nsys.exit(3)"]);
    assert_eq!(three.status.code(), Some(3));
    assert_eq!(text(&three.stdout), "before\n");
    assert_eq!(text(&three.stderr), "", "no traceback for sys.exit");
    let zero = exec(&server, &["import sys; sys.exit()"]);
    assert_eq!(zero.status.code(), Some(0), "{}", text(&zero.stderr));
    let message = exec(&server, &["import sys; sys.exit('bye')"]);
    assert_eq!(message.status.code(), Some(1));
    assert_eq!(text(&message.stderr), "bye\n");
}

#[tokio::test]
async fn a_timeout_says_so_in_one_line_and_in_json() {
    let server = TestServer::start();
    let output = exec(&server, &["--timeout", "1", "import time\ntime.sleep(30)"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stderr),
        "TimeoutError: execution exceeded its 1s timeout\n"
    );
    let json = exec(
        &server,
        &["--json", "--timeout", "1", "import time\ntime.sleep(30)"],
    );
    let execution: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(execution["status"], "timeout");
    assert_eq!(execution["error"]["ename"], "TimeoutError");
    assert_eq!(
        execution["error"]["evalue"],
        "execution exceeded its 1s timeout"
    );
}

#[tokio::test]
async fn rich_results_print_their_text_plain() {
    let server = TestServer::start();
    let code = r#"
class Table:
    def _repr_html_(self):
        return "<table></table>"
    def __repr__(self):
        return "Table(3 rows)"
class Picture:
    def _repr_png_(self):
        return b"\x89PNG\r\n\x1a\n"
    def __repr__(self):
        return "<Picture>"
from IPython.display import display
display(Table())
Picture()
"#;
    // IPython may be missing from the test interpreter: fall back to the driver's display.
    let output = exec(&server, &[code]);
    if text(&output.stderr).contains("No module named 'IPython'") {
        let plain = exec(&server, &["class T:\n    def _repr_html_(self): return '<b>x</b>'\n    def __repr__(self): return 'T()'\nT()"]);
        assert_eq!(text(&plain.stdout), "T()\n", "{}", text(&plain.stderr));
        return;
    }
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "Table(3 rows)\n<Picture>\n");
}

#[tokio::test]
async fn ctrl_c_interrupts_the_remote_cell() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let code = "import time\nprint('sleeping', flush=True)\ntime.sleep(60)";
    let mut running = Running::start(&server, &["--session", &id, code]);
    assert_eq!(running.next_line(), "sleeping");
    running.interrupt();
    let (code, stderr) = running.finish();
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("KeyboardInterrupt"), "{stderr}");
    // The session survives and keeps its state, like Python after a Ctrl-C.
    let after = server.execute(&id, "'alive'").await;
    assert_eq!(after["result"]["text/plain"], "'alive'");
}

#[tokio::test]
async fn a_second_ctrl_c_detaches() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let gate = gate_path(&server, &id, "stop");
    // A cell that swallows interrupts (its own SIGINT handler, so an interrupt landing
    // anywhere in the loop is caught, not only inside a `try`) until the gate opens. The
    // handler writes with os.write: the interrupt can land while `print('ready')` is still
    // inside stdout's buffer, and a print from the handler would then be a reentrant call
    // (seen on a loaded run).
    let code = "import os, signal, time\nsignal.signal(signal.SIGINT, lambda *_: os.write(1, b'caught\\n'))\nprint('ready', flush=True)\nwhile not os.path.exists('stop'):\n    time.sleep(0.02)\n'done'";
    let mut running = Running::start(&server, &["--session", &id, code]);
    assert_eq!(running.next_line(), "ready");
    running.interrupt();
    assert_eq!(running.next_line(), "caught");
    running.interrupt();
    let (code, stderr) = running.finish();
    assert_eq!(code, Some(130), "{stderr}");
    assert!(
        stderr.contains(&format!("detached; the execution goes on in session {id}")),
        "{stderr}"
    );
    // The cell is still running remotely; opening the gate lets it finish.
    let session = server.get(&format!("/v1/sessions/{id}")).await.1;
    assert_eq!(session["state"], "busy");
    std::fs::write(&gate, "").expect("open the gate");
    server.wait_for_state(&id, "idle").await;
}
