//! Per-tenant quotas against the real server: live sessions and executions in flight per
//! tenant, each hit on the native API (429 problem+json, `Retry-After`) and on python_rce
//! (429 `{detail}`), without touching other tenants, and given back when work ends.

mod support;

use std::time::Instant;

use serde_json::{json, Value};
use support::{gate_path, EventReader, TestServer, DEADLINE};

struct Reply {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

async fn send(server: &TestServer, path: &str, key: &str, body: Value) -> Reply {
    let response = server
        .http
        .post(server.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().expect("ascii").to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    Reply {
        status,
        retry_after,
        body,
    }
}

/// An admin key, then a tenant key for each of `tenants`.
async fn tenant_keys(server: &TestServer, tenants: &[&str]) -> Vec<String> {
    let (status, admin) = server.post("/v1/keys", json!({"scope": "admin"})).await;
    assert_eq!(status, 201, "{admin}");
    let admin = admin["key"].as_str().expect("key").to_owned();
    let mut keys = Vec::new();
    for tenant in tenants {
        let reply = send(
            server,
            "/v1/keys",
            &admin,
            json!({"scope": "tenant", "tenant": tenant}),
        )
        .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        keys.push(reply.body["key"].as_str().expect("key").to_owned());
    }
    keys
}

async fn execute(server: &TestServer, id: &str, key: &str) -> Reply {
    send(
        server,
        &format!("/v1/sessions/{id}/executions"),
        key,
        json!({"code": "1 + 1"}),
    )
    .await
}

async fn create(server: &TestServer, key: &str) -> Reply {
    send(server, "/v1/sessions", key, json!({})).await
}

fn assert_quota_problem(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert_eq!(reply.body["code"], "quota_exceeded", "{}", reply.body);
    assert!(
        reply.body["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains(what)),
        "{}",
        reply.body
    );
    assert!(reply.retry_after.is_some(), "Retry-After missing");
}

#[tokio::test]
async fn a_tenant_cannot_exceed_its_live_session_quota() {
    let server = TestServer::start_with_config("[limits]\nmax_sessions_per_tenant = 2\n");
    let (_, info) = server.get("/v1/info").await;
    assert_eq!(info["limits"]["max_sessions_per_tenant"], 2);
    assert_eq!(info["limits"]["max_executions_per_tenant"], Value::Null);
    let keys = tenant_keys(&server, &["acme", "globex"]).await;
    let (acme, globex) = (&keys[0], &keys[1]);
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let reply = create(&server, acme).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        sessions.push(reply.body["id"].as_str().expect("id").to_owned());
    }
    assert_quota_problem(&create(&server, acme).await, "2 live sessions");
    // python_rce answers in its own shape.
    let reply = send(&server, "/sessions/create", acme, json!({})).await;
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert!(reply.body["detail"].is_string(), "{}", reply.body);
    assert!(reply.retry_after.is_some());
    // Other tenants are not affected.
    assert_eq!(create(&server, globex).await.status, 201);
    // Closing a session gives its place back.
    let response = server
        .http
        .delete(server.url(&format!("/v1/sessions/{}", sessions[0])))
        .bearer_auth(acme)
        .send()
        .await
        .expect("close");
    assert_eq!(response.status(), 200);
    assert_eq!(create(&server, acme).await.status, 201);
}

#[tokio::test]
async fn a_tenant_cannot_exceed_its_execution_quota() {
    let server = TestServer::start_with_config("[limits]\nmax_executions_per_tenant = 1\n");
    let keys = tenant_keys(&server, &["acme", "globex"]).await;
    let (acme, globex) = (&keys[0], &keys[1]);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let reply = create(&server, acme).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        ids.push(reply.body["id"].as_str().expect("id").to_owned());
    }
    let globex_session = create(&server, globex).await.body["id"]
        .as_str()
        .expect("id")
        .to_owned();

    // One acme execution runs until the test opens its gate.
    let code = "import os, time\nprint('running', flush=True)\nwhile not os.path.exists('go'):\n    time.sleep(0.02)\n";
    let response = server
        .http
        .post(server.url(&format!("/v1/sessions/{}/executions", ids[0])))
        .bearer_auth(acme)
        .header("accept", "text/event-stream")
        .json(&json!({ "code": code }))
        .send()
        .await
        .expect("execute");
    assert_eq!(response.status(), 200);
    let mut running = EventReader::new(response);
    assert_eq!(running.next().await.expect("running").0, "stream");

    // Any other acme execution, in any of its sessions, is over the quota.
    assert_quota_problem(
        &execute(&server, &ids[1], acme).await,
        "1 executions in flight",
    );
    assert_quota_problem(
        &execute(&server, &ids[0], acme).await,
        "1 executions in flight",
    );
    let reply = send(
        &server,
        "/sessions/execute",
        acme,
        json!({"session_id": ids[1], "code": "1 + 1"}),
    )
    .await;
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert!(reply.body["detail"].is_string(), "{}", reply.body);
    // Another tenant runs as usual.
    assert_eq!(execute(&server, &globex_session, globex).await.status, 200);

    std::fs::write(gate_path(&server, &ids[0], "go"), b"").expect("open the gate");
    while running.next().await.is_some() {}
    // Once the running execution has finished, acme may run again.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let reply = execute(&server, &ids[1], acme).await;
        if reply.status == 200 {
            assert_eq!(reply.body["result"]["text/plain"], "2");
            break;
        }
        assert_quota_problem(&reply, "executions in flight");
        assert!(Instant::now() < deadline, "the quota was never given back");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
