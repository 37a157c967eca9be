//! Bad input and misbehaving code: each gets a clear, structured error with the right status,
//! and none of it panics the server, leaks a process or touches another session's state.

mod support;

use serde_json::json;
use support::TestServer;

const UNKNOWN: &str = "00000000-0000-7000-8000-000000000000";

#[tokio::test]
async fn malformed_and_invalid_bodies() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let executions = format!("/v1/sessions/{id}/executions");
    let cases: Vec<(&str, &str, u16, &str)> = vec![
        ("malformed JSON", "{\"code\": ", 400, "malformed_json"),
        ("not JSON at all", "print(1)", 400, "malformed_json"),
        ("wrong type", "{\"code\": 5}", 422, "invalid_body"),
        (
            "wrong timeout type",
            "{\"code\": \"1\", \"timeout\": \"soon\"}",
            422,
            "invalid_body",
        ),
        ("missing field", "{}", 422, "invalid_body"),
        (
            "unknown field",
            "{\"code\": \"1\", \"cwd\": \"/\"}",
            422,
            "invalid_body",
        ),
        ("array body", "[1]", 422, "invalid_body"),
        (
            "NUL in code",
            "{\"code\": \"print(1)\\u0000\"}",
            422,
            "invalid_input",
        ),
        (
            "negative timeout",
            "{\"code\": \"1\", \"timeout\": -1}",
            422,
            "invalid_input",
        ),
        (
            "timeout above the maximum",
            "{\"code\": \"1\", \"timeout\": 100000}",
            422,
            "invalid_input",
        ),
    ];
    for (what, body, status, code) in cases {
        let response = server
            .http
            .post(server.url(&executions))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status().as_u16(), status, "{what}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
        let problem: serde_json::Value = response.json().await.expect("problem body");
        assert_eq!(problem["code"], code, "{what}: {problem}");
        assert_eq!(problem["status"], status, "{what}");
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}"
        );
    }
    let (status, problem) = server
        .post_raw(&executions, "text/plain", "{\"code\": \"1\"}")
        .await;
    assert_eq!(status, 415, "{problem}");

    let (status, problem) = server.post("/v1/sessions", json!({"name": 7})).await;
    assert_eq!((status, &problem["code"]), (422, &json!("invalid_body")));
    let (status, problem) = server
        .post("/v1/sessions", json!({"runtime": "cobol"}))
        .await;
    assert_eq!(
        (status, &problem["code"]),
        (422, &json!("invalid_input")),
        "{problem}"
    );
    let (status, _) = server
        .patch(
            &format!("/v1/sessions/{id}"),
            json!({"accepting_executions": "no"}),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = server
        .patch(&format!("/v1/sessions/{id}"), json!({"metadata": [1]}))
        .await;
    assert_eq!(status, 422);

    // Nothing above disturbed the session.
    assert_eq!(
        server.execute(&id, "1 + 1").await["result"]["text/plain"],
        "2"
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let server = TestServer::start_with_config("[limits]\nmax_code_bytes = 1000\n");
    let id = server.create_session().await;
    let (_, info) = server.get("/v1/info").await;
    let limit = info["limits"]["max_request_body_bytes"]
        .as_u64()
        .expect("limit") as usize;
    let huge = format!("{{\"code\": \"{}\"}}", "x".repeat(limit + 1));
    let (status, problem) = server
        .post_raw(
            &format!("/v1/sessions/{id}/executions"),
            "application/json",
            huge.clone(),
        )
        .await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(problem["code"], "body_too_large");
    let (status, _) = server
        .post_raw("/sessions/execute", "application/json", huge)
        .await;
    assert_eq!(status, 413);
    // Within the body limit but over the code limit: 422.
    let (status, problem) = server
        .post(
            &format!("/v1/sessions/{id}/executions"),
            json!({"code": "#".repeat(1001)}),
        )
        .await;
    assert_eq!((status, &problem["code"]), (422, &json!("invalid_input")));
}

#[tokio::test]
async fn unknown_session_ids_are_404_on_every_route() {
    let server = TestServer::start();
    for id in [UNKNOWN, "not-a-uuid", "a%20b%2Fc"] {
        let requests = [
            ("GET", format!("/v1/sessions/{id}")),
            ("PATCH", format!("/v1/sessions/{id}")),
            ("DELETE", format!("/v1/sessions/{id}")),
            ("POST", format!("/v1/sessions/{id}/executions")),
            ("GET", format!("/v1/sessions/{id}/executions")),
            ("GET", format!("/v1/sessions/{id}/executions/1")),
            ("POST", format!("/v1/sessions/{id}/interrupt")),
            ("POST", format!("/v1/sessions/{id}/restart")),
            ("POST", format!("/v1/sessions/{id}/refresh")),
        ];
        for (method, path) in requests {
            let mut request = server
                .http
                .request(method.parse().expect("method"), server.url(&path));
            if method == "POST" {
                request = request.json(&json!({"code": "1"}));
            } else if method == "PATCH" {
                request = request.json(&json!({"name": "x"}));
            }
            let (status, problem) = support::response(request.send().await).await;
            assert_eq!(status, 404, "{method} {path}: {problem}");
            assert_eq!(problem["code"], "session_not_found", "{method} {path}");
        }
    }
}

#[tokio::test]
async fn operations_on_ended_sessions_are_409_with_the_reason() {
    let server = TestServer::start();
    let id = server.create_session().await;
    server.delete(&format!("/v1/sessions/{id}")).await;
    for (method, path, body) in [
        (
            "POST",
            format!("/v1/sessions/{id}/executions"),
            json!({"code": "1"}),
        ),
        ("POST", format!("/v1/sessions/{id}/interrupt"), json!({})),
        ("POST", format!("/v1/sessions/{id}/restart"), json!({})),
        ("POST", format!("/v1/sessions/{id}/refresh"), json!({})),
        ("PATCH", format!("/v1/sessions/{id}"), json!({"name": "x"})),
    ] {
        let (status, problem) = support::response(
            server
                .http
                .request(method.parse().expect("method"), server.url(&path))
                .json(&body)
                .send()
                .await,
        )
        .await;
        assert_eq!(status, 409, "{method} {path}: {problem}");
        assert_eq!(problem["code"], "session_not_running");
        assert_eq!(problem["state"], "closed");
        assert_eq!(problem["state_reason"], "closed by client");
    }
}

#[tokio::test]
async fn a_flood_of_executions_hits_the_bounded_queue() {
    let server = TestServer::start_with_config("[limits]\nexecution_queue_capacity = 2\n");
    let id = server.create_session().await;
    let executions = server.url(&format!("/v1/sessions/{id}/executions"));
    let blocker = {
        let http = server.http.clone();
        let url = executions.clone();
        tokio::spawn(async move {
            support::response(
                http.post(url)
                    .json(&json!({"code": "import time\ntime.sleep(60)"}))
                    .send()
                    .await,
            )
            .await
        })
    };
    server.wait_for_state(&id, "busy").await;
    let flood: Vec<_> = (0..10)
        .map(|n| {
            let http = server.http.clone();
            let url = executions.clone();
            tokio::spawn(async move {
                let response = http
                    .post(url)
                    .json(&json!({"code": format!("{n}")}))
                    .send()
                    .await
                    .expect("send");
                let retry_after = response.headers().get("retry-after").cloned();
                let status = response.status().as_u16();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                (status, body, retry_after)
            })
        })
        .collect();
    // At most two fit in the queue; the rest are refused at once, before the blocker ends.
    let mut refused = 0;
    let mut pending = Vec::new();
    for task in flood {
        if task.is_finished() {
            let (status, body, retry_after) = task.await.expect("task");
            assert_eq!(status, 429, "{body}");
            assert_eq!(body["code"], "queue_full");
            assert!(retry_after.is_some());
            refused += 1;
        } else {
            pending.push(task);
        }
    }
    let deadline = std::time::Instant::now() + support::DEADLINE;
    while refused < 8 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {refused} refused"
        );
        let mut still = Vec::new();
        for task in pending {
            if task.is_finished() {
                let (status, body, _) = task.await.expect("task");
                assert_eq!(
                    status, 429,
                    "a queued execution finished before the blocker: {body}"
                );
                refused += 1;
            } else {
                still.push(task);
            }
        }
        pending = still;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(pending.len(), 2);
    server
        .post(&format!("/v1/sessions/{id}/interrupt"), json!({}))
        .await;
    let (_, blocked) = blocker.await.expect("blocker");
    assert_eq!(blocked["status"], "interrupted");
    for task in pending {
        let (status, body, _) = task.await.expect("task");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "ok");
    }
}

#[tokio::test]
async fn a_worker_exiting_mid_execution_kills_only_its_session() {
    let server = TestServer::start();
    let doomed = server.create_session().await;
    let bystander = server.create_session().await;
    server.execute(&bystander, "state = [1, 2, 3]").await;
    let execution = server
        .execute(&doomed, "import os\nprint('bye', flush=True)\nos._exit(1)")
        .await;
    assert_eq!(execution["status"], "killed", "{execution}");
    assert_eq!(execution["stdout"], "bye\n");
    let session = server.wait_for_state(&doomed, "dead").await;
    assert!(session["state_reason"]
        .as_str()
        .is_some_and(|reason| !reason.is_empty()));
    let (status, problem) = server
        .post(
            &format!("/v1/sessions/{doomed}/executions"),
            json!({"code": "1"}),
        )
        .await;
    assert_eq!((status, &problem["state"]), (409, &json!("dead")));
    assert_eq!(
        server.execute(&bystander, "state").await["result"]["text/plain"],
        "[1, 2, 3]"
    );
    server.wait_for_children(1).await;
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_worker_closing_its_stdout_keeps_working() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let closed = server
        .execute(&id, "import os, sys\nos.close(1)\nos.close(2)")
        .await;
    assert_eq!(closed["status"], "ok", "{closed}");
    let after = server.execute(&id, "print('back')\n'value'").await;
    assert_eq!(after["status"], "ok", "{after}");
    assert_eq!(after["stdout"], "back\n");
    assert_eq!(after["result"]["text/plain"], "'value'");
}

#[tokio::test]
async fn closing_sessions_leaves_no_processes() {
    let server = TestServer::start();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = server.create_session().await;
        server
            .execute(
                &id,
                "import subprocess\np = subprocess.Popen(['sleep', '600'])",
            )
            .await;
        ids.push(id);
    }
    assert_eq!(server.child_pids().len(), 3);
    for id in &ids {
        server.delete(&format!("/v1/sessions/{id}")).await;
    }
    server.wait_for_children(0).await;
    // The grandchildren (`sleep`) died with their session's process group.
    let deadline = std::time::Instant::now() + support::DEADLINE;
    loop {
        let sleepers = std::fs::read_dir("/proc")
            .expect("proc")
            .flatten()
            .filter(|entry| {
                std::fs::read_to_string(entry.path().join("cmdline"))
                    .is_ok_and(|cmdline| cmdline == "sleep\u{0}600\u{0}")
            })
            .filter(|entry| {
                std::fs::read_to_string(entry.path().join("stat")).is_ok_and(|stat| {
                    !stat
                        .rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
                })
            })
            .count();
        if sleepers == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{sleepers} sleep processes survived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
