//! The command line against a real server: `exec`, `sessions list|show|close`, `bench`.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use support::TestServer;

fn corral(server: &TestServer, arguments: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(arguments)
        .args(["--server", &server.url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run corral");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("write stdin");
    drop(input);
    child.wait_with_output().expect("corral output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn exec_runs_code_like_python_c() {
    let server = TestServer::start();
    let output = corral(
        &server,
        &[
            "exec",
            "import sys\nprint('out')\nprint('err', file=sys.stderr)\n6 * 7",
        ],
        None,
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "out\n42\n");
    assert_eq!(text(&output.stderr), "err\n");

    let failed = corral(&server, &["exec", "1/0"], None);
    assert_eq!(failed.status.code(), Some(1));
    assert!(text(&failed.stderr).contains("ZeroDivisionError: division by zero"));

    let from_stdin = corral(&server, &["exec", "-"], Some("print('piped')"));
    assert_eq!(text(&from_stdin.stdout), "piped\n");
    let implicit_stdin = corral(&server, &["exec"], Some("print('implicit')"));
    assert_eq!(text(&implicit_stdin.stdout), "implicit\n");

    // Throwaway sessions are closed afterwards.
    let (_, live) = server.get("/v1/sessions?state=idle").await;
    assert_eq!(live["sessions"], serde_json::json!([]));
    server.wait_for_children(0).await;
}

#[tokio::test]
async fn exec_in_a_named_session_keeps_state() {
    let server = TestServer::start();
    let id = server.create_session().await;
    assert!(corral(
        &server,
        &["exec", "--session", &id, "greeting = 'hi'"],
        None
    )
    .status
    .success());
    let output = corral(&server, &["exec", "--session", &id, "greeting"], None);
    assert_eq!(text(&output.stdout), "'hi'\n");
    let json = corral(
        &server,
        &["exec", "--session", &id, "--json", "greeting"],
        None,
    );
    let execution: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(execution["execution_count"], 3);

    let missing = corral(
        &server,
        &[
            "exec",
            "--session",
            "00000000-0000-7000-8000-000000000000",
            "1",
        ],
        None,
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("not found"),
        "{}",
        text(&missing.stderr)
    );
}

#[tokio::test]
async fn sessions_list_show_and_close() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let list = corral(&server, &["sessions", "list"], None);
    assert!(list.status.success());
    let table = text(&list.stdout);
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(&id) && table.contains("idle"), "{table}");

    let json = corral(&server, &["sessions", "list", "--json"], None);
    let sessions: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(sessions[0]["id"], id.as_str());

    let show = corral(&server, &["sessions", "show", &id], None);
    assert!(
        text(&show.stdout).contains("state          idle"),
        "{}",
        text(&show.stdout)
    );

    let close = corral(&server, &["sessions", "close", &id, "--json"], None);
    let closed: serde_json::Value = serde_json::from_slice(&close.stdout).expect("json");
    assert_eq!(closed["state"], "closed");
    let empty = corral(&server, &["sessions", "list", "--state", "idle"], None);
    assert!(text(&empty.stdout).contains("(no sessions"));
}

#[test]
fn bench_reports_every_measurement() {
    let output = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args([
            "bench",
            "--iterations",
            "3",
            "--json",
            "--python",
            &support::python(),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run bench");
    assert!(output.status.success(), "{}", text(&output.stderr));
    // Piped, no progress bar is drawn.
    assert!(
        !text(&output.stderr).contains("measuring"),
        "{}",
        text(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json report");
    let names: Vec<&str> = report["latencies"]
        .as_array()
        .expect("latencies")
        .iter()
        .map(|row| row["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "session create (warm pool)",
            "create, 1st execute answered",
            "create, no warm worker",
            "execute round trip",
            "create + execute + close"
        ]
    );
    for row in report["latencies"].as_array().expect("latencies") {
        assert_eq!(row["samples"], 3);
        assert!(row["p50_ms"].as_f64().is_some_and(|ms| ms > 0.0));
    }
    assert_eq!(report["throughput"][1]["sessions"], 16);
    let memory = &report["memory_per_session"];
    assert_eq!(memory["sessions"], 16, "{report}");
    let pss = memory["pss_kib"].as_u64().expect("pss");
    assert!(
        pss > 1024 && memory["uss_kib"].as_u64() <= Some(pss),
        "{report}"
    );
}

#[test]
fn bench_scale_reports_each_step() {
    let output = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args([
            "bench",
            "--scale",
            "12",
            "--json",
            "--python",
            &support::python(),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run bench");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json report");
    let steps = report["steps"].as_array().expect("steps");
    let held: Vec<u64> = steps
        .iter()
        .map(|step| step["sessions"].as_u64().expect("sessions"))
        .collect();
    assert_eq!(held, [1, 10, 12]);
    for step in steps {
        assert!(step["pss_kib_per_session"].as_u64() > Some(1024), "{step}");
        assert!(step["create_p50_ms"].as_f64().is_some_and(|ms| ms > 0.0));
    }
    let last = &steps[2];
    assert_eq!(
        last["from_pool"]
            .as_u64()
            .zip(last["fresh"].as_u64())
            .map(|(a, b)| a + b),
        Some(12),
        "{last}"
    );
    let written = text(&output.stderr);
    let json = written
        .split("wrote ")
        .nth(1)
        .and_then(|rest| rest.split(" and ").next())
        .expect("the report's path");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).expect("scale.json")).expect("json");
    assert_eq!(saved["steps"].as_array().map(Vec::len), Some(3));
    let svg = std::path::Path::new(json).with_file_name("scale.svg");
    assert!(std::fs::read_to_string(svg)
        .expect("scale.svg")
        .starts_with("<svg"));
}

#[tokio::test]
async fn bench_targets_a_server_that_requires_keys() {
    let server = TestServer::start();
    let (status, issued) = server
        .post("/v1/keys", serde_json::json!({"scope": "admin"}))
        .await;
    assert_eq!(status, 201, "{issued}");
    let key = issued["key"].as_str().expect("key");
    let bench = |key: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_corral"));
        command
            .args([
                "bench",
                "--iterations",
                "2",
                "--json",
                "--server",
                &server.url,
            ])
            .env_remove("CORRAL_API_KEY")
            .stdin(Stdio::null());
        if let Some(key) = key {
            command.args(["--api-key", key]);
        }
        command.output().expect("run bench")
    };
    let refused = bench(None);
    assert!(!refused.status.success(), "bench without a key succeeded");
    let output = bench(Some(key));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json report");
    assert_eq!(report["latencies"][0]["samples"], 2);
    server.wait_for_children(0).await;
}

#[tokio::test]
async fn files_put_get_ls_rm() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let temp = tempfile::tempdir().expect("temp dir");
    let local = temp.path().join("data.csv");
    std::fs::write(&local, "a,b\n1,2\n").expect("write");
    let put = corral(
        &server,
        &[
            "files",
            "put",
            &id,
            local.to_str().expect("path"),
            "in/data.csv",
        ],
        None,
    );
    assert!(put.status.success(), "{}", text(&put.stderr));
    let read = server.execute(&id, "open('in/data.csv').read()").await;
    assert_eq!(read["result"]["text/plain"], "'a,b\\n1,2\\n'");

    let listing = corral(&server, &["files", "ls", &id, "in"], None);
    assert!(
        text(&listing.stdout).contains("data.csv"),
        "{}",
        text(&listing.stdout)
    );
    let root = corral(&server, &["files", "ls", &id], None);
    assert!(text(&root.stdout).contains("in/"), "{}", text(&root.stdout));

    let to_stdout = corral(&server, &["files", "get", &id, "in/data.csv", "-"], None);
    assert_eq!(text(&to_stdout.stdout), "a,b\n1,2\n");
    let copy = temp.path().join("copy.csv");
    let get = corral(
        &server,
        &[
            "files",
            "get",
            &id,
            "in/data.csv",
            copy.to_str().expect("path"),
        ],
        None,
    );
    assert!(get.status.success(), "{}", text(&get.stderr));
    assert_eq!(std::fs::read_to_string(&copy).expect("copy"), "a,b\n1,2\n");

    let missing = corral(&server, &["files", "get", &id, "nope.txt", "-"], None);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("404"),
        "{}",
        text(&missing.stderr)
    );

    let rm = corral(&server, &["files", "rm", &id, "in"], None);
    assert!(rm.status.success());
    let gone = server.execute(&id, "import os\nos.path.exists('in')").await;
    assert_eq!(gone["result"]["text/plain"], "False");
}
