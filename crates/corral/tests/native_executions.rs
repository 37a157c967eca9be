//! Python execution semantics through the native API, against the real server and worker.

mod support;

use serde_json::json;
use support::{read_events, EventReader, TestServer};

#[tokio::test]
async fn state_results_and_counts_carry_across_executions() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let first = server.execute(&id, "import math\nx = 40").await;
    assert_eq!(first["status"], "ok");
    assert_eq!(first["execution_count"], 1);
    assert_eq!(first["result"], serde_json::Value::Null);
    assert_eq!(first["session_id"], id.as_str());
    assert!(first["duration_ms"].is_u64());
    assert_eq!(first["truncated"], false);

    let second = server.execute(&id, "x + 2").await;
    assert_eq!(second["execution_count"], 2);
    assert_eq!(second["result"]["text/plain"], "42");
    let third = server.execute(&id, "_ * 2, math.floor(2.5)").await;
    assert_eq!(third["result"]["text/plain"], "(84, 2)");
    let suppressed = server.execute(&id, "x;").await;
    assert_eq!(
        suppressed["result"],
        serde_json::Value::Null,
        "a trailing ; hides the value"
    );

    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(session["execution_count"], 4);
    assert_eq!(session["state"], "idle");
}

#[tokio::test]
async fn stdout_and_stderr_are_captured_at_the_descriptor_level() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let code = r#"
import os, subprocess, sys
print("from print")
sys.stdout.flush()
os.system("echo from-shell")
subprocess.run(["sh", "-c", "echo from-subprocess; echo to-stderr >&2"])
os.write(1, b"raw fd\n")
print("warning", file=sys.stderr)
"#;
    let execution = server.execute(&id, code).await;
    assert_eq!(execution["status"], "ok", "{execution}");
    assert_eq!(
        execution["stdout"],
        "from print\nfrom-shell\nfrom-subprocess\nraw fd\n"
    );
    assert_eq!(execution["stderr"], "to-stderr\nwarning\n");
    let stream_text: String = execution["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .filter(|item| item["type"] == "stream" && item["name"] == "stdout")
        .map(|item| item["text"].as_str().expect("text"))
        .collect();
    assert_eq!(stream_text, execution["stdout"].as_str().expect("stdout"));
}

#[tokio::test]
async fn errors_are_structured_without_server_frames() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let execution = server
        .execute(&id, "def divide(a, b):\n    return a / b\n\ndivide(1, 0)")
        .await;
    assert_eq!(execution["status"], "error");
    assert_eq!(execution["error"]["ename"], "ZeroDivisionError");
    assert_eq!(execution["error"]["evalue"], "division by zero");
    let traceback: String = execution["error"]["traceback"]
        .as_array()
        .expect("traceback")
        .iter()
        .map(|line| line.as_str().expect("line"))
        .collect();
    assert!(traceback.contains("return a / b"), "{traceback}");
    assert!(traceback.contains("<cell 1>"), "{traceback}");
    assert!(
        !traceback.contains("driver"),
        "no driver frames: {traceback}"
    );
    assert_eq!(execution["result"], serde_json::Value::Null);

    let syntax = server.execute(&id, "def broken(:\n  pass").await;
    assert_eq!(syntax["error"]["ename"], "SyntaxError");
    let exit = server.execute(&id, "raise SystemExit(3)").await;
    assert_eq!(exit["error"]["ename"], "SystemExit");
    let alive = server.execute(&id, "'still here'").await;
    assert_eq!(alive["result"]["text/plain"], "'still here'");
}

#[tokio::test]
async fn rich_results_and_display_outputs() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let code = r#"
class Table:
    def _repr_html_(self):
        return "<table><tr><td>1</td></tr></table>"
    def _repr_markdown_(self):
        return "| 1 |"
    def _repr_json_(self):
        return {"rows": [1]}
    def __repr__(self):
        return "Table(1)"

class Broken:
    def _repr_html_(self):
        raise RuntimeError("no html")
    def __repr__(self):
        return "Broken()"

display(Broken(), "second")
Table()
"#;
    let execution = server.execute(&id, code).await;
    assert_eq!(execution["status"], "ok", "{execution}");
    let result = &execution["result"];
    assert_eq!(result["text/plain"], "Table(1)");
    assert_eq!(result["text/html"], "<table><tr><td>1</td></tr></table>");
    assert_eq!(result["text/markdown"], "| 1 |");
    assert_eq!(result["application/json"], json!({"rows": [1]}));
    let displays: Vec<&serde_json::Value> = execution["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .filter(|item| item["type"] == "display")
        .collect();
    assert_eq!(displays.len(), 2);
    assert_eq!(displays[0]["data"], json!({"text/plain": "Broken()"}));
    assert_eq!(displays[1]["data"]["text/plain"], "'second'");
}

#[tokio::test]
async fn non_utf8_output_is_replaced_not_fatal() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let execution = server
        .execute(
            &id,
            "import os\nos.write(1, b'a\\xff\\xfeb\\n')\nos.write(2, b'\\xc3')",
        )
        .await;
    assert_eq!(execution["status"], "ok");
    assert_eq!(execution["stdout"], "a\u{fffd}\u{fffd}b\n");
    assert_eq!(execution["stderr"], "\u{fffd}");
    assert_eq!(server.execute(&id, "1").await["result"]["text/plain"], "1");
}

#[tokio::test]
async fn output_beyond_the_cap_is_truncated() {
    let server = TestServer::start_with_config("[limits]\noutput_cap_bytes = 1000\n");
    let id = server.create_session().await;
    let execution = server
        .execute(
            &id,
            "import sys\nfor i in range(1000):\n    print('x' * 99)\nsys.stderr.write('e')\n'done'",
        )
        .await;
    assert_eq!(execution["status"], "ok");
    assert_eq!(execution["truncated"], true);
    let stdout = execution["stdout"].as_str().expect("stdout");
    assert!(stdout.len() <= 1000, "{} bytes kept", stdout.len());
    assert!(stdout.starts_with("xxxx"));
    assert_eq!(execution["stderr"], "e");
    assert_eq!(execution["result"]["text/plain"], "'done'");
}

#[tokio::test]
async fn history_is_listed_and_fetched_by_number() {
    let server = TestServer::start();
    let id = server.create_session().await;
    for n in 0..3 {
        server.execute(&id, &format!("{n} * 10")).await;
    }
    let (status, page) = server
        .get(&format!("/v1/sessions/{id}/executions?limit=2"))
        .await;
    assert_eq!(status, 200);
    let counts: Vec<u64> = page["executions"]
        .as_array()
        .expect("executions")
        .iter()
        .map(|execution| execution["execution_count"].as_u64().expect("count"))
        .collect();
    assert_eq!(counts, [1, 2]);
    assert_eq!(page["next_after"], 2);
    let (_, rest) = server
        .get(&format!("/v1/sessions/{id}/executions?after=2"))
        .await;
    assert_eq!(rest["executions"][0]["code"], "2 * 10");
    assert_eq!(rest["next_after"], serde_json::Value::Null);

    let (status, second) = server.get(&format!("/v1/sessions/{id}/executions/2")).await;
    assert_eq!(status, 200);
    assert_eq!(second["result"]["text/plain"], "10");
    for missing in ["4", "0", "x"] {
        let (status, problem) = server
            .get(&format!("/v1/sessions/{id}/executions/{missing}"))
            .await;
        assert_eq!(status, 404, "{missing}");
        assert_eq!(problem["code"], "execution_not_found");
    }
}

#[tokio::test]
async fn a_timeout_interrupts_and_the_session_survives() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let (status, execution) = server
        .post(
            &format!("/v1/sessions/{id}/executions"),
            json!({"code": "import time\nprint('started', flush=True)\ntime.sleep(60)", "timeout": 0.5}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(execution["status"], "timeout", "{execution}");
    assert_eq!(execution["stdout"], "started\n");
    assert_eq!(execution["error"]["ename"], "TimeoutError");
    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(session["state"], "idle");
    assert_eq!(
        server.execute(&id, "21 * 2").await["result"]["text/plain"],
        "42"
    );
}

#[tokio::test]
async fn code_that_ignores_the_interrupt_is_killed_and_the_session_dies() {
    let server = TestServer::start_with_config("[limits]\ninterrupt_grace_seconds = 0.5\n");
    let id = server.create_session().await;
    let other = server.create_session().await;
    server.execute(&other, "kept = 'yes'").await;
    let code = "import time\nwhile True:\n    try:\n        time.sleep(60)\n    except KeyboardInterrupt:\n        pass";
    let (status, execution) = server
        .post(
            &format!("/v1/sessions/{id}/executions"),
            json!({"code": code, "timeout": 0.5}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(execution["status"], "killed", "{execution}");
    let session = server.wait_for_state(&id, "dead").await;
    let reason = session["state_reason"].as_str().expect("reason");
    assert!(
        reason.contains("timeout") || reason.contains("time limit"),
        "{reason}"
    );
    let (status, problem) = server
        .post(
            &format!("/v1/sessions/{id}/executions"),
            json!({"code": "1"}),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(problem["state"], "dead");
    assert_eq!(problem["state_reason"], reason);
    assert_eq!(
        server.execute(&other, "kept").await["result"]["text/plain"],
        "'yes'"
    );
    server.wait_for_children(1).await;
}

#[tokio::test]
async fn interrupt_stops_the_running_execution() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let running = server.execute_in_background(&id, "import time\ntime.sleep(60)");
    server.wait_for_state(&id, "busy").await;
    let (status, _) = server
        .post(&format!("/v1/sessions/{id}/interrupt"), json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, execution) = running.await.expect("request task");
    assert_eq!(status, 200);
    assert_eq!(execution["status"], "interrupted", "{execution}");
    assert_eq!(execution["error"]["ename"], "KeyboardInterrupt");
    assert_eq!(server.execute(&id, "'ok'").await["status"], "ok");
}

#[tokio::test]
async fn one_session_runs_in_order_while_others_run_in_parallel() {
    let server = TestServer::start();
    let slow = server.create_session().await;
    let fast = server.create_session().await;
    server.execute(&slow, "log = []").await;
    let first =
        server.execute_in_background(&slow, "import time\nlog.append('first')\ntime.sleep(60)");
    server.wait_for_state(&slow, "busy").await;
    let second = server.execute_in_background(&slow, "log.append('second')\nlog");
    // The other session answers while the slow one is still busy.
    assert_eq!(
        server.execute(&fast, "1 + 1").await["result"]["text/plain"],
        "2"
    );
    let (_, slow_session) = server.get(&format!("/v1/sessions/{slow}")).await;
    assert_eq!(slow_session["state"], "busy");
    server
        .post(&format!("/v1/sessions/{slow}/interrupt"), json!({}))
        .await;
    let (_, first) = first.await.expect("first");
    assert_eq!(first["status"], "interrupted");
    let (_, second) = second.await.expect("second");
    assert_eq!(second["result"]["text/plain"], "['first', 'second']");
    assert_eq!(second["execution_count"], 3);
}

#[tokio::test]
async fn server_sent_events_stream_output_as_it_is_printed() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let response = server
        .http
        .post(server.url(&format!("/v1/sessions/{id}/executions")))
        .header("accept", "text/event-stream")
        .json(&json!({"code": "import time\nprint('first', flush=True)\ntime.sleep(60)"}))
        .send()
        .await
        .expect("execute");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .expect("content type")
        .starts_with("text/event-stream"));
    let mut events = EventReader::new(response);
    let (name, data) = events.next().await.expect("first event");
    assert_eq!(name, "stream");
    assert_eq!(data, json!({"name": "stdout", "text": "first\n"}));
    // The execution is still running: the event arrived before the end.
    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(session["state"], "busy");
    server
        .post(&format!("/v1/sessions/{id}/interrupt"), json!({}))
        .await;
    let mut rest = Vec::new();
    while let Some(event) = events.next().await {
        rest.push(event);
    }
    let names: Vec<&str> = rest.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["error", "done"], "{rest:?}");
    assert_eq!(rest[0].1["ename"], "KeyboardInterrupt");
    assert_eq!(rest[1].1["status"], "interrupted");
    assert_eq!(rest[1].1["stdout"], "first\n");
}

#[tokio::test]
async fn server_sent_events_carry_display_and_result() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let response = server
        .http
        .post(server.url(&format!("/v1/sessions/{id}/executions")))
        .header("accept", "text/event-stream")
        .json(&json!({"code": "print('a')\ndisplay('shown')\n6 * 7"}))
        .send()
        .await
        .expect("execute");
    let events = read_events(response).await;
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["stream", "display", "result", "done"], "{events:?}");
    assert_eq!(events[1].1["data"]["text/plain"], "'shown'");
    assert_eq!(
        events[2].1,
        json!({"execution_count": 1, "data": {"text/plain": "42"}})
    );
    assert_eq!(events[3].1["status"], "ok");

    // Errors known before the stream starts are ordinary problem responses.
    let response = server
        .http
        .post(server.url("/v1/sessions/00000000-0000-0000-0000-000000000000/executions"))
        .header("accept", "text/event-stream")
        .json(&json!({"code": "1"}))
        .send()
        .await
        .expect("execute");
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn display_outputs_and_results_share_a_capped_budget() {
    let server = TestServer::start_with_config("[limits]\noutput_cap_bytes = 10000\n");
    let id = server.create_session().await;
    let execution = server
        .execute(
            &id,
            "for i in range(100):\n    display('y' * 1000)\n'z' * 100000",
        )
        .await;
    assert_eq!(execution["status"], "ok");
    assert_eq!(execution["truncated"], true);
    let displays = execution["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .filter(|item| item["type"] == "display")
        .count();
    assert!(displays > 0 && displays < 100, "{displays} displays kept");
    let text = execution["result"]["text/plain"].as_str().expect("text");
    assert!(
        text.len() <= 10_002,
        "result shortened to {} bytes",
        text.len()
    );
    assert!(text.starts_with("'zzz"));
}

/// Regression: an interrupt sent while the session is idle used to reach the driver and
/// interrupt the *next* execution (2 rounds in 40 in one run).
#[tokio::test]
async fn an_interrupt_while_idle_does_not_hit_the_next_execution() {
    let server = TestServer::start();
    let id = server.create_session().await;
    for round in 0..300 {
        let (status, _) = server
            .post(&format!("/v1/sessions/{id}/interrupt"), json!({}))
            .await;
        assert_eq!(status, 200, "round {round}");
        let execution = server.execute(&id, "sum(range(1000))").await;
        assert_eq!(
            (
                execution["status"].as_str(),
                &execution["result"]["text/plain"]
            ),
            (Some("ok"), &json!("499500")),
            "round {round}: {execution}"
        );
    }
}

/// Regression: stdout, stderr and rich output reach the server on three channels; printed
/// text could come after a display that followed it (a clean-clone run saw it once). Rich
/// frames are now fenced, so the order is the cell's.
#[tokio::test]
async fn printed_text_and_rich_output_keep_the_cells_order() {
    let server = TestServer::start();
    let id = server.create_session().await;
    for round in 0..100 {
        let execution = server
            .execute(
                &id,
                "import sys\nprint('a')\nprint('e', file=sys.stderr)\ndisplay('shown')\nprint('b')\n6 * 7",
            )
            .await;
        let kinds: Vec<String> = execution["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .map(|item| match item["type"].as_str() {
                Some("stream") => format!(
                    "{}:{}",
                    item["name"].as_str().unwrap_or(""),
                    item["text"].as_str().unwrap_or("")
                ),
                other => other.unwrap_or("").to_owned(),
            })
            .collect();
        let display_at = kinds.iter().position(|kind| kind == "display");
        let before: Vec<&String> = kinds.iter().take(display_at.unwrap_or(0)).collect();
        assert!(
            display_at.is_some()
                && before.iter().any(|kind| *kind == "stdout:a\n")
                && before.iter().any(|kind| *kind == "stderr:e\n")
                && kinds.last().map(String::as_str) == Some("stdout:b\n"),
            "round {round}: {kinds:?}"
        );
        assert_eq!(execution["result"]["text/plain"], "42");
    }
}
