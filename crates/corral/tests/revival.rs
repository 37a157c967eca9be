//! A dead session can be restarted: `POST /v1/sessions/{id}/restart` (and the Jupyter kernel
//! restart) gives a session whose worker was killed (its timeout, the server restarting) a
//! fresh worker under the same id, its history kept and its state reset. Closed sessions stay
//! closed; ended sessions say `accepting_executions: false`; a death is logged with its
//! reason.

mod support;

use serde_json::{json, Value};
use support::TestServer;

/// A cell that ignores interrupts, so its timeout kills the worker.
const STUBBORN: &str = "import time\nwhile True:\n    try:\n        time.sleep(60)\n    except KeyboardInterrupt:\n        pass";

/// Kills `id`'s worker through an execution timeout and returns the dead session.
async fn kill_by_timeout(server: &TestServer, id: &str) -> Value {
    let (status, execution) = server
        .post(
            &format!("/v1/sessions/{id}/executions"),
            json!({"code": STUBBORN, "timeout": 0.5}),
        )
        .await;
    assert_eq!((status, &execution["status"]), (200, &json!("killed")));
    server.wait_for_state(id, "dead").await
}

#[tokio::test]
async fn a_session_killed_by_its_timeout_restarts_with_history_kept_and_state_reset() {
    let server = TestServer::start();
    let id = server.create_session().await;
    server.execute(&id, "x = 41").await;
    let dead = kill_by_timeout(&server, &id).await;
    assert_eq!(dead["accepting_executions"], false, "{dead}");
    let reason = dead["state_reason"].as_str().expect("reason").to_owned();
    assert!(
        server
            .log()
            .lines()
            .any(|line| line.contains("session died") && line.contains(&reason)),
        "the death is logged with its reason:\n{}",
        server.log()
    );

    let (status, restarted) = server
        .post(&format!("/v1/sessions/{id}/restart"), json!({}))
        .await;
    assert_eq!(status, 200, "{restarted}");
    assert_eq!(restarted["id"], id.as_str());
    assert_eq!(restarted["state"], "idle");
    assert_eq!(restarted["accepting_executions"], true);
    assert_eq!(restarted["state_reason"], Value::Null);
    assert_eq!(restarted["execution_count"], 2);

    let fresh = server.execute(&id, "'x' in globals()").await;
    assert_eq!(fresh["result"]["text/plain"], "False", "state reset");
    assert_eq!(fresh["execution_count"], 3, "the count goes on");
    let (_, history) = server.get(&format!("/v1/sessions/{id}/executions")).await;
    let counts: Vec<&Value> = history["executions"]
        .as_array()
        .expect("executions")
        .iter()
        .map(|execution| &execution["execution_count"])
        .collect();
    assert_eq!(counts, [&json!(1), &json!(2), &json!(3)], "history kept");
    server.wait_for_children(1).await;
}

#[tokio::test]
async fn a_session_dead_from_a_server_restart_restarts() {
    let server = TestServer::start();
    let id = server.create_session().await;
    server.execute(&id, "print('before')").await;
    let server = server.restart_without_workers();
    let (_, dead) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(
        (&dead["state"], &dead["accepting_executions"]),
        (&json!("dead"), &json!(false))
    );

    let (status, restarted) = server
        .post(&format!("/v1/sessions/{id}/restart"), json!({}))
        .await;
    assert_eq!((status, &restarted["state"]), (200, &json!("idle")));
    let next = server.execute(&id, "6 * 7").await;
    assert_eq!(next["execution_count"], 2);
    assert_eq!(next["result"]["text/plain"], "42");
    let (_, first) = server.get(&format!("/v1/sessions/{id}/executions/1")).await;
    assert_eq!(first["stdout"], "before\n");
}

#[tokio::test]
async fn closed_sessions_stay_closed() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let (status, closed) = server.delete(&format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(closed["accepting_executions"], false, "{closed}");
    let (status, problem) = server
        .post(&format!("/v1/sessions/{id}/restart"), json!({}))
        .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(
        problem["type"]
            .as_str()
            .map(|t| t.ends_with("session_not_running")),
        Some(true),
        "{problem}"
    );
    assert_eq!(problem["state"], "closed");
    assert_eq!(problem["state_reason"], "closed by client");
    server.wait_for_children(0).await;
}

#[tokio::test]
async fn concurrent_restarts_of_a_dead_session_make_one_worker() {
    let server = TestServer::start();
    let id = server.create_session().await;
    kill_by_timeout(&server, &id).await;
    let path = format!("/v1/sessions/{id}/restart");
    let (first, second) =
        tokio::join!(server.post(&path, json!({})), server.post(&path, json!({})));
    assert_eq!((first.0, second.0), (200, 200), "{first:?} {second:?}");
    server.wait_for_children(1).await;
    assert_eq!(server.execute(&id, "1").await["status"], "ok");
}

#[tokio::test]
async fn the_jupyter_restart_brings_a_dead_kernel_back() {
    let server = TestServer::start();
    let (status, kernel) = server.post("/api/kernels", json!({})).await;
    assert_eq!(status, 201, "{kernel}");
    let id = kernel["id"].as_str().expect("kernel id").to_owned();
    kill_by_timeout(&server, &id).await;
    let (status, _) = server.get(&format!("/api/kernels/{id}")).await;
    assert_eq!(status, 404, "a dead kernel is not running");

    let (status, restarted) = server
        .post(&format!("/api/kernels/{id}/restart"), json!({}))
        .await;
    assert_eq!(status, 200, "{restarted}");
    assert_eq!(restarted["id"], id.as_str());
    let (status, running) = server.get(&format!("/api/kernels/{id}")).await;
    assert_eq!((status, &running["execution_state"]), (200, &json!("idle")));

    // A shut-down kernel is gone for good.
    let (status, _) = server.delete(&format!("/api/kernels/{id}")).await;
    assert_eq!(status, 204);
    let (status, _) = server
        .post(&format!("/api/kernels/{id}/restart"), json!({}))
        .await;
    assert_eq!(status, 404);
}
