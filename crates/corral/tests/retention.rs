//! Execution history retention against the real server: a session keeps its last N
//! executions, stored output is capped per execution, and a closed session's record stays
//! until the retention period has passed, then the reaper removes it and its history.

mod support;

use std::time::Instant;

use support::{TestServer, DEADLINE};

#[tokio::test]
async fn a_session_keeps_only_its_last_executions() {
    let server = TestServer::start_with_config("[limits]\nexecutions_kept_per_session = 3\n");
    let (_, info) = server.get("/v1/info").await;
    assert_eq!(info["limits"]["executions_kept_per_session"], 3);
    assert_eq!(info["limits"]["ended_session_retention_seconds"], 604800.0);
    let id = server.create_session().await;
    for value in 1..=5 {
        let execution = server.execute(&id, &format!("{value}")).await;
        assert_eq!(execution["execution_count"], value);
    }
    let (status, page) = server.get(&format!("/v1/sessions/{id}/executions")).await;
    assert_eq!(status, 200, "{page}");
    let counts: Vec<u64> = page["executions"]
        .as_array()
        .expect("executions")
        .iter()
        .map(|execution| execution["execution_count"].as_u64().expect("count"))
        .collect();
    assert_eq!(counts, [3, 4, 5]);
    let (status, _) = server.get(&format!("/v1/sessions/{id}/executions/2")).await;
    assert_eq!(status, 404);
    let (status, kept) = server.get(&format!("/v1/sessions/{id}/executions/3")).await;
    assert_eq!((status, &kept["result"]["text/plain"]), (200, &"3".into()));
    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(session["execution_count"], 5);
}

#[tokio::test]
async fn stored_output_is_capped_per_execution() {
    let server = TestServer::start_with_config("[limits]\nstored_output_cap_bytes = 100\n");
    let id = server.create_session().await;
    let execution = server
        .execute(
            &id,
            "import sys\nprint('o' * 500)\nprint('e' * 500, file=sys.stderr)\n7",
        )
        .await;
    let stdout = execution["stdout"].as_str().expect("stdout");
    let stderr = execution["stderr"].as_str().expect("stderr");
    assert_eq!(stdout.len() + stderr.len(), 100, "{execution}");
    assert!(stdout.chars().all(|c| c == 'o'), "{stdout}");
    assert_eq!(execution["truncated"], true);
    assert_eq!(execution["result"]["text/plain"], "7");
    let output_text: usize = execution["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|item| item["text"].as_str().map_or(0, str::len))
        .sum();
    assert!(output_text <= 100, "{execution}");
    // What the client was told is what the store keeps.
    let (status, stored) = server.get(&format!("/v1/sessions/{id}/executions/1")).await;
    assert_eq!(status, 200);
    assert_eq!(stored, execution);
}

#[tokio::test]
async fn a_closed_session_is_kept_during_the_retention_period() {
    let server = TestServer::start();
    let id = server.create_session().await;
    server.execute(&id, "1").await;
    let (status, _) = server.delete(&format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 200);
    let (status, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!((status, &session["state"]), (200, &"closed".into()));
    let (status, _) = server.get(&format!("/v1/sessions/{id}/executions/1")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_reaper_removes_ended_sessions_after_the_retention_period() {
    let server = TestServer::start_with_config("[limits]\nended_session_retention_seconds = 0.2\n");
    let closed = server.create_session().await;
    let live = server.create_session().await;
    server.execute(&closed, "1").await;
    let (status, _) = server.delete(&format!("/v1/sessions/{closed}")).await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, _) = server.get(&format!("/v1/sessions/{closed}")).await;
        if status == 404 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            Instant::now() < deadline,
            "the closed session was never removed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, _) = server
        .get(&format!("/v1/sessions/{closed}/executions/1"))
        .await;
    assert_eq!(status, 404);
    // Live sessions are never removed.
    let (status, session) = server.get(&format!("/v1/sessions/{live}")).await;
    assert_eq!((status, &session["state"]), (200, &"idle".into()));
    assert_eq!(server.execute(&live, "2").await["status"], "ok");
}
