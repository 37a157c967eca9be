//! Sandbox limits: chosen per session within the operator's maximum, shown on the session,
//! and enforced — each limit is hit here, and the session's state says what happened.

mod support;

use serde_json::json;
use support::TestServer;

const MIB: u64 = 1024 * 1024;

async fn create_with(server: &TestServer, limits: serde_json::Value) -> (u16, serde_json::Value) {
    server
        .post("/v1/sessions", json!({ "limits": limits }))
        .await
}

#[tokio::test]
async fn limits_are_chosen_within_the_maximum_and_reported() {
    let server = TestServer::start_with_config(
        "[sandbox]\nmemory_mib = 256\n[sandbox.maximum]\nmemory_mib = 1024\nmax_processes = 256\n",
    );
    let (_, info) = server.get("/v1/info").await;
    assert_eq!(info["limits"]["session_memory_bytes"], 256 * MIB);
    assert_eq!(
        info["limits"]["session_maximum"]["memory_bytes"],
        1024 * MIB
    );

    let (status, default) = server.post("/v1/sessions", json!({})).await;
    assert_eq!(status, 201);
    assert_eq!(default["limits"]["memory_bytes"], 256 * MIB);
    assert_eq!(default["limits"]["max_processes"], 128);

    let (status, chosen) = create_with(
        &server,
        json!({"memory_bytes": 512 * MIB, "max_processes": 200}),
    )
    .await;
    assert_eq!(status, 201, "{chosen}");
    assert_eq!(chosen["limits"]["memory_bytes"], 512 * MIB);
    assert_eq!(chosen["limits"]["max_processes"], 200);
    let id = chosen["id"].as_str().expect("id");
    let (_, fetched) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(fetched["limits"], chosen["limits"]);

    for (limits, field) in [
        (json!({"memory_bytes": 2048 * MIB}), "memory_bytes"),
        (json!({"max_processes": 1}), "max_processes"),
        (
            json!({"workspace_bytes": 10_000_000_000u64}),
            "workspace_bytes",
        ),
    ] {
        let (status, problem) = create_with(&server, limits).await;
        assert_eq!(status, 422, "{problem}");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|detail| detail.contains(field)),
            "{problem}"
        );
    }
    let (status, _) = create_with(&server, json!({"memory": 1})).await;
    assert_eq!(status, 422, "unknown limit names are refused");
}

#[tokio::test]
async fn the_process_limit_makes_fork_fail() {
    let server = TestServer::start();
    let (_, session) = create_with(&server, json!({"max_processes": 16})).await;
    let id = session["id"].as_str().expect("id");
    let code = r#"
import os, errno
children, failure = [], None
for _ in range(64):
    try:
        pid = os.fork()
    except OSError as error:
        failure = error.errno
        break
    if pid == 0:
        import time
        time.sleep(30)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
(len(children) < 16, failure == errno.EAGAIN)
"#;
    let execution = server.execute(id, code).await;
    assert_eq!(
        execution["result"]["text/plain"], "(True, True)",
        "{execution}"
    );
    assert_eq!(
        server.execute(id, "'alive'").await["result"]["text/plain"],
        "'alive'"
    );
}

#[tokio::test]
async fn the_memory_limit_stops_the_session_not_the_server() {
    let server = TestServer::start();
    let bystander = server.create_session().await;
    server.execute(&bystander, "kept = 'here'").await;
    let (_, session) = create_with(&server, json!({"memory_bytes": 64 * MIB})).await;
    let id = session["id"].as_str().expect("id");
    let execution = server
        .execute(
            id,
            "blocks = []\nwhile True:\n    blocks.append(bytearray(8 * 1024 * 1024))",
        )
        .await;
    match execution["status"].as_str() {
        Some("error") => assert_eq!(execution["error"]["ename"], "MemoryError"),
        Some("killed") => {
            let dead = server.wait_for_state(id, "dead").await;
            assert_eq!(dead["state_reason"], "memory limit exceeded");
        }
        other => panic!("memory bomb was not stopped: {other:?} {execution}"),
    }
    assert_eq!(
        server.execute(&bystander, "kept").await["result"]["text/plain"],
        "'here'"
    );
}

#[tokio::test]
async fn the_workspace_size_limit_gives_enospc() {
    let server = TestServer::start();
    let (_, session) = create_with(&server, json!({"workspace_bytes": 4 * MIB})).await;
    let id = session["id"].as_str().expect("id");
    let code = r#"
import errno
try:
    with open('fill.bin', 'wb') as f:
        for _ in range(64):
            f.write(b'x' * 1024 * 1024)
            f.flush()
    outcome = 'no error'
except OSError as error:
    outcome = errno.errorcode.get(error.errno)
outcome
"#;
    let execution = server.execute(id, code).await;
    let outcome = execution["result"]["text/plain"]
        .as_str()
        .expect("outcome")
        .to_owned();
    assert!(outcome == "'ENOSPC'" || outcome == "'EFBIG'", "{execution}");
    let cleaned = server
        .execute(
            id,
            "import os\nos.remove('fill.bin')\nopen('small', 'w').write('ok')",
        )
        .await;
    assert_eq!(cleaned["status"], "ok");
}

#[tokio::test]
async fn the_open_files_limit_gives_emfile() {
    let server = TestServer::start();
    let (_, session) = create_with(&server, json!({"max_open_files": 64})).await;
    let id = session["id"].as_str().expect("id");
    let code = "import errno\nfiles = []\ntry:\n    for _ in range(200):\n        files.append(open('/dev/null'))\n    outcome = 'no error'\nexcept OSError as error:\n    outcome = errno.errorcode[error.errno]\nfor f in files:\n    f.close()\noutcome";
    let execution = server.execute(id, code).await;
    assert_eq!(execution["result"]["text/plain"], "'EMFILE'", "{execution}");
}
