//! Session lifecycle against the real server: idle and max TTLs and the reaper, refresh,
//! the server-wide session cap, and graceful shutdown on SIGTERM/SIGINT.

mod support;

use std::time::Instant;

use nix::sys::signal::Signal;
use serde_json::{json, Value};
use support::{gate_path, start_gated_execution, TestServer, DEADLINE};

fn timestamp(value: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(value.as_str().expect("timestamp")).expect("rfc3339")
}

async fn create(server: &TestServer, body: Value) -> (u16, Value) {
    server.post("/v1/sessions", body).await
}

/// Waits until the session has ended and returns it.
async fn wait_until_ended(server: &TestServer, id: &str) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
        if session["state"] == "closed" || session["state"] == "dead" {
            return session;
        }
        assert!(Instant::now() < deadline, "session never ended: {session}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits until the server's log has a line containing `text`.
async fn wait_for_log(server: &TestServer, text: &str) {
    let deadline = Instant::now() + DEADLINE;
    while !server.log().contains(text) {
        assert!(
            Instant::now() < deadline,
            "the log never said {text:?}:\n{}",
            server.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sessions_show_their_ttls_and_expiry() {
    let server =
        TestServer::start_with_config("[limits]\nidle_ttl_seconds = 600\nmax_ttl_seconds = 7200\n");
    let (status, info) = server.get("/v1/info").await;
    assert_eq!(status, 200);
    assert_eq!(info["limits"]["idle_ttl_seconds"], 600.0);
    assert_eq!(info["limits"]["max_ttl_seconds"], 7200.0);
    assert!(info["limits"]["max_sessions"].as_u64().is_some());

    let (status, session) = create(&server, json!({})).await;
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["idle_ttl"], 600.0);
    assert_eq!(session["max_ttl"], 7200.0);
    let expires = timestamp(&session["expires_at"]);
    assert_eq!(
        expires,
        timestamp(&session["last_activity_at"]) + chrono::Duration::seconds(600),
        "the idle TTL comes first"
    );

    let (status, chosen) = create(&server, json!({"idle_ttl": 30, "max_ttl": 10.5})).await;
    assert_eq!(status, 201, "{chosen}");
    assert_eq!(
        (chosen["idle_ttl"].clone(), chosen["max_ttl"].clone()),
        (json!(30.0), json!(10.5))
    );
    assert_eq!(
        timestamp(&chosen["expires_at"]),
        timestamp(&chosen["created_at"]) + chrono::Duration::milliseconds(10_500),
        "the max TTL comes first"
    );

    let id = session["id"].as_str().expect("id");
    let (_, closed) = server.delete(&format!("/v1/sessions/{id}")).await;
    assert_eq!(
        closed["expires_at"],
        Value::Null,
        "ended sessions do not expire"
    );
}

#[tokio::test]
async fn ttls_beyond_the_operators_ceiling_are_refused() {
    let server = TestServer::start_with_config(
        "[limits]\nidle_ttl_ceiling_seconds = 60\nmax_ttl_ceiling_seconds = 120\n",
    );
    for body in [
        json!({"idle_ttl": 61}),
        json!({"max_ttl": 121}),
        json!({"idle_ttl": 0}),
        json!({"max_ttl": -5}),
        json!({"idle_ttl": "soon"}),
    ] {
        let (status, problem) = create(&server, body.clone()).await;
        assert_eq!(status, 422, "{body}: {problem}");
    }
    let (status, problem) = create(&server, json!({"idle_ttl": 61})).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("invalid_input"))
    );
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("idle_ttl")),
        "{problem}"
    );
    let (status, _) = create(&server, json!({"idle_ttl": 60, "max_ttl": 120})).await;
    assert_eq!(status, 201, "exactly the ceiling is allowed");

    let id = server.create_session().await;
    let (status, problem) = server
        .post(
            &format!("/v1/sessions/{id}/refresh"),
            json!({"idle_ttl": 61}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
}

#[tokio::test]
async fn idle_sessions_are_closed_with_reason_idle_timeout() {
    let server = TestServer::start();
    let (_, session) = create(&server, json!({"idle_ttl": 0.5})).await;
    let id = session["id"].as_str().expect("id").to_owned();
    let ended = wait_until_ended(&server, &id).await;
    assert_eq!(ended["state"], "closed");
    assert_eq!(ended["state_reason"], "idle timeout");
    server.wait_for_children(0).await;
    let (status, problem) = server
        .post(
            &format!("/v1/sessions/{id}/executions"),
            json!({"code": "1"}),
        )
        .await;
    assert_eq!(
        (status, &problem["state_reason"]),
        (409, &json!("idle timeout"))
    );
}

#[tokio::test]
async fn a_running_execution_is_activity_for_the_idle_ttl() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let gate = gate_path(&server, &id, "go");
    let mut events = start_gated_execution(&server, &id, "go").await;
    let (status, refreshed) = server
        .post(
            &format!("/v1/sessions/{id}/refresh"),
            json!({"idle_ttl": 0.2}),
        )
        .await;
    assert_eq!(status, 200, "{refreshed}");
    // Well past the idle deadline the busy session is still running.
    let past = timestamp(&refreshed["expires_at"]) + chrono::Duration::milliseconds(600);
    while chrono::Utc::now() < past {
        let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
        assert_eq!(session["state"], "busy", "{session}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    std::fs::write(&gate, b"").expect("open the gate");
    let mut last = None;
    while let Some(event) = events.next().await {
        last = Some(event);
    }
    assert_eq!(last.expect("done").1["status"], "ok");
    // Once idle, the idle TTL applies again.
    let ended = wait_until_ended(&server, &id).await;
    assert_eq!(ended["state_reason"], "idle timeout");
}

#[tokio::test]
async fn max_ttl_ends_a_session_even_while_it_runs_code() {
    let server = TestServer::start();
    let (_, session) = create(&server, json!({"max_ttl": 3})).await;
    let id = session["id"].as_str().expect("id").to_owned();
    let (status, execution) = server
        .post(
            &format!("/v1/sessions/{id}/executions"),
            json!({"code": "import time\nwhile True:\n    time.sleep(0.05)"}),
        )
        .await;
    assert_eq!(status, 200, "{execution}");
    assert_eq!(execution["status"], "killed");
    let ended = wait_until_ended(&server, &id).await;
    assert_eq!(ended["state"], "closed");
    assert_eq!(ended["state_reason"], "max lifetime");
    server.wait_for_children(0).await;
}

#[tokio::test]
async fn refresh_extends_the_idle_ttl() {
    let server = TestServer::start();
    let (_, session) = create(&server, json!({"idle_ttl": 300})).await;
    let id = session["id"].as_str().expect("id").to_owned();
    let (status, refreshed) = server
        .post(&format!("/v1/sessions/{id}/refresh"), json!({}))
        .await;
    assert_eq!(status, 200, "{refreshed}");
    assert!(timestamp(&refreshed["expires_at"]) >= timestamp(&session["expires_at"]));
    assert_eq!(
        timestamp(&refreshed["expires_at"]),
        timestamp(&refreshed["last_activity_at"]) + chrono::Duration::seconds(300)
    );

    let (status, longer) = server
        .post(
            &format!("/v1/sessions/{id}/refresh"),
            json!({"idle_ttl": 900}),
        )
        .await;
    assert_eq!(status, 200, "{longer}");
    assert_eq!(longer["idle_ttl"], 900.0);
    assert_eq!(
        timestamp(&longer["expires_at"]),
        timestamp(&longer["last_activity_at"]) + chrono::Duration::seconds(900)
    );

    // A short idle TTL set by refresh is enforced from the refresh on.
    let (status, _) = server
        .post(
            &format!("/v1/sessions/{id}/refresh"),
            json!({"idle_ttl": 0.3}),
        )
        .await;
    assert_eq!(status, 200);
    let ended = wait_until_ended(&server, &id).await;
    assert_eq!(ended["state_reason"], "idle timeout");
    let (_, stored) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(stored["idle_ttl"], 0.3);
}

#[tokio::test]
async fn the_session_cap_answers_429_until_a_session_ends() {
    let server = TestServer::start_with_config("[limits]\nmax_sessions = 2\n");
    let first = server.create_session().await;
    server.create_session().await;
    let response = server
        .http
        .post(server.url("/v1/sessions"))
        .json(&json!({}))
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(problem["code"], "too_many_sessions");

    let (status, body) = server.post("/sessions/create", json!({})).await;
    assert_eq!(status, 429, "python_rce too: {body}");
    assert!(body["detail"].is_string());

    server.delete(&format!("/v1/sessions/{first}")).await;
    let (status, _) = create(&server, json!({})).await;
    assert_eq!(status, 201, "a closed session frees its place");
}

async fn finishes_running_executions_on(signal: Signal) {
    let mut server = TestServer::start();
    let busy = server.create_session().await;
    let idle = server.create_session().await;
    server.execute(&idle, "x = 1").await;
    let gate = gate_path(&server, &busy, "go");
    let mut events = start_gated_execution(&server, &busy, "go").await;

    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.pid() as i32), signal);
    wait_for_log(&server, "letting running executions finish").await;
    // The server is draining: it stops accepting connections; the running execution goes on.
    let deadline = Instant::now() + DEADLINE;
    while server.http.get(server.url("/healthz")).send().await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting connections");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    std::fs::write(&gate, b"").expect("open the gate");
    let mut last = None;
    while let Some(event) = events.next().await {
        last = Some(event);
    }
    let (name, execution) = last.expect("a last event");
    assert_eq!(name, "done", "{execution}");
    assert_eq!(execution["status"], "ok");
    assert_eq!(execution["result"]["text/plain"], "'finished'");
    let status = server.wait_for_exit();
    assert!(status.success(), "{status:?}\n{}", server.log());

    // The store has every session's final state.
    let server = server.restart_with(Signal::SIGKILL);
    for id in [&busy, &idle] {
        let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
        assert_eq!(session["state"], "closed", "{session}");
        assert_eq!(session["state_reason"], "server shutdown");
    }
    let (_, execution) = server
        .get(&format!("/v1/sessions/{busy}/executions/1"))
        .await;
    assert_eq!(execution["status"], "ok");
    assert_eq!(execution["stdout"], "running\n");
}

#[tokio::test]
async fn sigterm_lets_running_executions_finish_and_closes_every_session() {
    finishes_running_executions_on(Signal::SIGTERM).await;
}

#[tokio::test]
async fn sigint_shuts_down_the_same_way() {
    finishes_running_executions_on(Signal::SIGINT).await;
}

#[tokio::test]
async fn executions_still_running_after_the_grace_period_are_killed() {
    let mut server = TestServer::start_with_config("shutdown_grace_seconds = 0.5\n");
    let id = server.create_session().await;
    // Never opened: the execution would run forever.
    let mut events = start_gated_execution(&server, &id, "never").await;
    let workers = server.child_pids();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid() as i32),
        Signal::SIGTERM,
    );
    let status = server.wait_for_exit();
    assert!(status.success(), "{status:?}\n{}", server.log());
    let mut last = None;
    while let Some(event) = events.next().await {
        last = Some(event);
    }
    let (name, execution) = last.expect("a last event");
    assert_eq!(
        (name.as_str(), &execution["status"]),
        ("done", &json!("killed"))
    );
    for pid in workers {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
            "worker {pid} outlived the server"
        );
    }

    let server = server.restart_with(Signal::SIGKILL);
    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(
        (&session["state"], &session["state_reason"]),
        (&json!("closed"), &json!("server shutdown"))
    );
    let (_, execution) = server.get(&format!("/v1/sessions/{id}/executions/1")).await;
    assert_eq!(execution["status"], "killed");
}

#[tokio::test]
async fn new_sessions_are_refused_when_the_host_is_short_of_memory() {
    // More free memory than any test machine has: every new session is refused.
    let server = TestServer::start_with_config("[limits]\nmin_available_memory_mib = 1000000000\n");
    let (_, info) = server.get("/v1/info").await;
    assert_eq!(
        info["limits"]["min_available_memory_bytes"],
        1_000_000_000u64 * 1024 * 1024
    );
    let response = server
        .http
        .post(server.url("/v1/sessions"))
        .json(&json!({}))
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(problem["code"], "host_memory_low");
    let (status, body) = server.post("/sessions/create", json!({})).await;
    assert_eq!(status, 429, "python_rce too: {body}");
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, 200);
}
