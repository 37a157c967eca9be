//! The native API's session routes, against the real server.

mod support;

use serde_json::json;
use support::TestServer;

#[tokio::test]
async fn healthz_and_info_describe_the_server() {
    let server = TestServer::start();
    let (status, body) = server.get("/healthz").await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));

    let (status, info) = server.get("/v1/info").await;
    assert_eq!(status, 200);
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["runtimes"][0]["name"], "python3");
    assert!(info["runtimes"][0]["language_version"]
        .as_str()
        .is_some_and(|version| version.starts_with("3.")));
    assert_eq!(info["limits"]["default_execution_timeout_seconds"], 60.0);
    assert_eq!(info["limits"]["output_cap_bytes_per_stream"], 1024 * 1024);
    assert_eq!(info["isolation"]["sandboxed"], true);
    let features = info["isolation"]["features"].as_array().expect("features");
    for name in [
        "process_group",
        "user_namespace",
        "pid_namespace",
        "mount_namespace",
        "network_namespace",
        "cgroups",
        "seccomp",
        "no_new_privs",
        "capabilities_dropped",
    ] {
        assert!(
            features
                .iter()
                .any(|feature| feature["name"] == name && feature["active"] == true),
            "{name} is active: {features:?}"
        );
    }
    assert_eq!(info["limits"]["session_memory_bytes"], 512 * 1024 * 1024);
    assert_eq!(info["limits"]["session_max_processes"], 128);
}

#[tokio::test]
async fn create_get_update_and_delete_a_session() {
    let server = TestServer::start();
    let response = server
        .http
        .post(server.url("/v1/sessions"))
        .json(&json!({"name": "analysis", "metadata": {"owner": "ada"}}))
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let session: serde_json::Value = response.json().await.expect("json");
    let id = session["id"].as_str().expect("id").to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id} is a UUID");
    assert_eq!(location, format!("/v1/sessions/{id}"));
    assert_eq!(session["name"], "analysis");
    assert_eq!(session["state"], "idle");
    assert_eq!(session["state_reason"], serde_json::Value::Null);
    assert_eq!(session["execution_count"], 0);
    assert_eq!(session["metadata"], json!({"owner": "ada"}));
    assert_eq!(session["runtime"], "python3");
    for field in ["created_at", "last_activity_at"] {
        assert!(
            chrono::DateTime::parse_from_rfc3339(session[field].as_str().expect(field)).is_ok(),
            "{field}"
        );
    }

    let (status, fetched) = server.get(&location).await;
    assert_eq!(status, 200);
    assert_eq!(fetched["id"], session["id"]);

    let (status, renamed) = server
        .patch(&location, json!({"name": "renamed", "metadata": {"k": 1}}))
        .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["name"], "renamed");
    assert_eq!(renamed["metadata"], json!({"k": 1}));
    let (_, cleared) = server.patch(&location, json!({"name": null})).await;
    assert_eq!(cleared["name"], serde_json::Value::Null);
    assert_eq!(
        cleared["metadata"],
        json!({"k": 1}),
        "absent fields are unchanged"
    );

    let (status, closed) = server.delete(&location).await;
    assert_eq!(status, 200);
    assert_eq!(closed["state"], "closed");
    assert_eq!(closed["state_reason"], "closed by client");
    let (status, again) = server.delete(&location).await;
    assert_eq!(
        (status, &again["state"]),
        (200, &json!("closed")),
        "delete is idempotent"
    );
    let (status, after) = server.get(&location).await;
    assert_eq!(
        (status, &after["state"]),
        (200, &json!("closed")),
        "the record stays readable"
    );
    server.wait_for_children(0).await;
}

#[tokio::test]
async fn an_empty_create_body_is_fine() {
    let server = TestServer::start();
    let response = server
        .http
        .post(server.url("/v1/sessions"))
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn list_filters_by_state_and_paginates() {
    let server = TestServer::start();
    let first = server.create_session().await;
    let second = server.create_session().await;
    let third = server.create_session().await;
    server.delete(&format!("/v1/sessions/{second}")).await;

    let (status, all) = server.get("/v1/sessions").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = all["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|session| session["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        ids,
        [first.as_str(), second.as_str(), third.as_str()],
        "oldest first"
    );
    assert_eq!(all["next_cursor"], serde_json::Value::Null);

    let (_, idle) = server.get("/v1/sessions?state=idle").await;
    let idle_ids: Vec<&str> = idle["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|session| session["id"].as_str().expect("id"))
        .collect();
    assert_eq!(idle_ids, [first.as_str(), third.as_str()]);
    let (_, closed) = server.get("/v1/sessions?state=closed").await;
    assert_eq!(closed["sessions"][0]["id"], second.as_str());
    assert_eq!(closed["sessions"].as_array().map(Vec::len), Some(1));

    let mut seen = Vec::new();
    let mut path = "/v1/sessions?limit=1".to_owned();
    for _ in 0..10 {
        let (status, page) = server.get(&path).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["sessions"].as_array().map(Vec::len), Some(1));
        seen.push(page["sessions"][0]["id"].as_str().expect("id").to_owned());
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/sessions?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, [first, second, third]);

    for bad in [
        "state=sleeping",
        "limit=0",
        "limit=x",
        "limit=1001",
        "cursor=nope",
    ] {
        let (status, problem) = server.get(&format!("/v1/sessions?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {problem}");
        assert_eq!(problem["code"], "invalid_query");
    }
}

#[tokio::test]
async fn a_draining_session_refuses_new_executions() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let (status, session) = server
        .patch(
            &format!("/v1/sessions/{id}"),
            json!({"accepting_executions": false}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(session["accepting_executions"], false);
    let (status, problem) = server
        .post(
            &format!("/v1/sessions/{id}/executions"),
            json!({"code": "1"}),
        )
        .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["code"], "not_accepting_executions");
    server
        .patch(
            &format!("/v1/sessions/{id}"),
            json!({"accepting_executions": true}),
        )
        .await;
    assert_eq!(server.execute(&id, "1").await["status"], "ok");
}

#[tokio::test]
async fn restart_gives_a_fresh_interpreter_under_the_same_id() {
    let server = TestServer::start();
    let id = server.create_session().await;
    server.execute(&id, "x = 42").await;
    let (status, restarted) = server
        .post(&format!("/v1/sessions/{id}/restart"), json!({}))
        .await;
    assert_eq!(status, 200, "{restarted}");
    assert_eq!(restarted["id"], id.as_str());
    assert_eq!(restarted["state"], "idle");
    let after = server.execute(&id, "x").await;
    assert_eq!(after["status"], "error");
    assert_eq!(after["error"]["ename"], "NameError");
    server.wait_for_children(1).await;
}

#[tokio::test]
async fn refresh_touches_the_session() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let (_, before) = server.get(&format!("/v1/sessions/{id}")).await;
    let (status, after) = server
        .post(&format!("/v1/sessions/{id}/refresh"), json!({}))
        .await;
    assert_eq!(status, 200);
    let parse = |value: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(value.as_str().expect("timestamp")).expect("rfc3339")
    };
    assert!(parse(&after["last_activity_at"]) >= parse(&before["last_activity_at"]));
}

#[tokio::test]
async fn openapi_document_covers_every_route() {
    let server = TestServer::start();
    let (status, document) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(document["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.")));
    let paths = document["paths"].as_object().expect("paths");
    let mut routes: Vec<String> = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().expect("path item").keys() {
            routes.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    routes.sort();
    let mut expected = vec![
        "GET /healthz",
        "GET /openapi.json",
        "GET /v1/info",
        "GET /metrics",
        "POST /v1/sessions",
        "GET /v1/sessions",
        "GET /v1/sessions/{id}",
        "PATCH /v1/sessions/{id}",
        "DELETE /v1/sessions/{id}",
        "POST /v1/sessions/{id}/interrupt",
        "POST /v1/sessions/{id}/restart",
        "POST /v1/sessions/{id}/refresh",
        "POST /v1/sessions/{id}/executions",
        "GET /v1/sessions/{id}/executions",
        "GET /v1/sessions/{id}/executions/{execution_count}",
        "GET /v1/sessions/{id}/files",
        "PUT /v1/sessions/{id}/files/{path}",
        "GET /v1/sessions/{id}/files/{path}",
        "DELETE /v1/sessions/{id}/files/{path}",
        "POST /v1/keys",
        "GET /v1/keys",
        "GET /v1/runtimes",
        "DELETE /v1/keys/{key_id}",
        "POST /sessions/create",
        "GET /sessions/list",
        "POST /sessions/execute",
        "POST /sessions/close",
        "GET /e2b/sessions",
        "POST /e2b/sessions",
        "DELETE /e2b/sessions/{sessionID}",
        "POST /e2b/sessions/{sessionID}/refresh",
        "GET /agents/sessions",
        "PUT /agents/sessions/{identifier}",
        "GET /agents/sessions/{identifier}",
        "DELETE /agents/sessions/{identifier}",
        "GET /api",
        "GET /api/status",
        "GET /api/kernelspecs",
        "GET /api/kernelspecs/{kernel_name}",
        "GET /api/kernels",
        "POST /api/kernels",
        "GET /api/kernels/{kernel_id}",
        "DELETE /api/kernels/{kernel_id}",
        "POST /api/kernels/{kernel_id}/interrupt",
        "POST /api/kernels/{kernel_id}/restart",
        "GET /api/kernels/{kernel_id}/channels",
        "GET /api/sessions",
        "POST /api/sessions",
        "GET /api/sessions/{session_id}",
        "PATCH /api/sessions/{session_id}",
        "DELETE /api/sessions/{session_id}",
        "POST /api/v1/sessions",
        "GET /api/v1/sessions/{id}",
        "PATCH /api/v1/sessions/{id}",
        "DELETE /api/v1/sessions/{id}/close",
        "POST /sandboxes",
        "GET /sandboxes",
        "POST /v2/sandboxes",
        "GET /v2/sandboxes",
        "GET /sandboxes/metrics",
        "GET /sandboxes/{sandboxID}",
        "DELETE /sandboxes/{sandboxID}",
        "POST /sandboxes/{sandboxID}/timeout",
        "POST /sandboxes/{sandboxID}/refreshes",
        "POST /sandboxes/{sandboxID}/connect",
        "POST /v2/sandboxes/{sandboxID}/connect",
        "POST /sandboxes/{sandboxID}/pause",
        "POST /sandboxes/{sandboxID}/resume",
        "POST /sandboxes/{sandboxID}/snapshots",
        "POST /sandboxes/{sandboxID}/fork",
        "GET /sandboxes/{sandboxID}/metrics",
        "GET /sandboxes/{sandboxID}/logs",
        "GET /v2/sandboxes/{sandboxID}/logs",
        "PUT /sandboxes/{sandboxID}/network",
        "GET /health",
        "POST /execute",
        "GET /contexts",
        "POST /contexts",
        "DELETE /contexts/{contextID}",
        "POST /contexts/{contextID}/restart",
        "GET /files",
        "POST /files",
        "POST /filesystem.Filesystem/{method}",
        "POST /process.Process/{method}",
    ];
    expected.sort();
    assert_eq!(routes, expected);

    // Every documented route is really served: none falls through to the unknown-route 404.
    let session = server.create_session().await;
    for route in &routes {
        let (method, path) = route.split_once(' ').expect("method and path");
        let path = path
            .replace("{id}", &session)
            .replace("{execution_count}", "1")
            .replace("{path}", "some/file.txt")
            .replace("{sessionID}", &session)
            .replace("{identifier}", "agent-1")
            .replace("{kernel_id}", &session)
            .replace("{session_id}", "00000000-0000-4000-8000-000000000000")
            .replace("{kernel_name}", "python3")
            .replace("{key_id}", "nope");
        let request = server
            .http
            .request(method.parse().expect("method"), server.url(&path));
        let request = if method == "GET" || method == "DELETE" {
            request
        } else {
            request.json(&json!({}))
        };
        let (_, body) = support::response(request.send().await).await;
        assert_ne!(body["detail"], "no route matches this path", "{route}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let server = TestServer::start();
    let response = server
        .http
        .get(server.url("/v2/nothing"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(response.headers().contains_key("x-request-id"));
    let response = server
        .http
        .put(server.url("/v1/sessions"))
        .send()
        .await
        .expect("put");
    assert_eq!(response.status(), 405);
}

#[tokio::test]
async fn an_unsandboxed_server_says_so() {
    let server = TestServer::start_with_config("[sandbox]\ninsecure_no_sandbox = true\n");
    let (_, info) = server.get("/v1/info").await;
    assert_eq!(info["isolation"]["sandboxed"], false);
    let features = info["isolation"]["features"].as_array().expect("features");
    for name in [
        "user_namespace",
        "pid_namespace",
        "network_namespace",
        "cgroups",
        "seccomp",
    ] {
        assert!(
            features
                .iter()
                .any(|feature| feature["name"] == name && feature["active"] == false),
            "{name} is reported inactive: {features:?}"
        );
    }
    assert!(server.log().contains("NOT sandboxed"), "{}", server.log());
    let id = server.create_session().await;
    assert_eq!(
        server.execute(&id, "6 * 7").await["result"]["text/plain"],
        "42"
    );
}
