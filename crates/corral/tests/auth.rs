//! API keys and tenants against the real server: open mode only without keys (and only on
//! loopback), bearer and X-API-Key, scopes, tenant isolation on every route of every surface
//! (the route list comes from `/openapi.json`, so no route escapes), offline key management.

mod support;

use std::process::Command;

use serde_json::{json, Value};
use support::TestServer;

async fn send(
    server: &TestServer,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|body| body.to_string());
    server.send(method, path, key, body.as_deref()).await
}

/// `send` naming an E2B sandbox in `E2b-Sandbox-Id`, as the E2B SDK does inside a sandbox.
async fn send_to_sandbox(
    server: &TestServer,
    method: &str,
    path: &str,
    key: Option<&str>,
    sandbox: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = server
        .http
        .request(method.parse().expect("method"), server.url(path))
        .header("e2b-sandbox-id", sandbox);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn issue(server: &TestServer, by: Option<&str>, body: Value) -> (String, String) {
    let (status, issued) = send(server, "POST", "/v1/keys", by, Some(body)).await;
    assert_eq!(status, 201, "{issued}");
    (
        issued["key"].as_str().expect("key").to_owned(),
        issued["id"].as_str().expect("id").to_owned(),
    )
}

#[tokio::test]
async fn open_until_the_first_key_then_keys_are_required() {
    let server = TestServer::start();
    let (status, _) = server.get("/v1/sessions").await;
    assert_eq!(status, 200, "open mode on loopback without keys");
    let (admin, _) = issue(&server, None, json!({"scope": "admin", "name": "root"})).await;
    assert!(admin.starts_with("corral_"));

    let response = server
        .http
        .get(server.url("/v1/sessions"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 401);
    assert!(response.headers()["www-authenticate"]
        .to_str()
        .expect("header")
        .starts_with("Bearer"));
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(problem["code"], "unauthorized");

    let (status, _) = send(&server, "GET", "/v1/sessions", Some(&admin), None).await;
    assert_eq!(status, 200, "Authorization: Bearer");
    let response = server
        .http
        .get(server.url("/v1/sessions"))
        .header("x-api-key", &admin)
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200, "X-API-Key");

    // The last hex digit changed (to one it is not: a fixed '0' matched the real key 1 in 16).
    let last = if admin.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &admin[..admin.len() - 1]);
    for bad in [forged.as_str(), "corral_nothing_here", "x"] {
        let (status, body) = send(&server, "GET", "/v1/sessions", Some(bad), None).await;
        assert_eq!(status, 401, "{bad}");
        assert!(!body.to_string().contains(bad), "keys are never echoed");
    }
    for public in ["/healthz", "/openapi.json"] {
        let (status, _) = server.get(public).await;
        assert_eq!(status, 200, "{public}");
    }
    assert!(!server.log().contains(&admin), "keys are never logged");
    assert!(!server.log().contains(&forged), "keys are never logged");

    let (status, keys) = send(&server, "GET", "/v1/keys", Some(&admin), None).await;
    assert_eq!(status, 200);
    assert!(
        keys["keys"][0].get("key").is_none() && !keys.to_string().contains(&admin),
        "listing never shows secrets: {keys}"
    );
}

/// The identifier of Alice's agent session (agent sessions API).
const AGENT_IDENTIFIER: &str = "alices-agent";

/// Fills a documented route's path parameters.
fn fill(path: &str, session: &str, key_id: &str, jupyter_session: &str) -> String {
    path.replace("{id}", session)
        .replace("{sessionID}", session)
        .replace("{kernel_id}", session)
        .replace("{session_id}", jupyter_session)
        .replace("{kernel_name}", "python3")
        .replace("{execution_count}", "1")
        .replace("{key_id}", key_id)
        .replace("{contextID}", "default")
        .replace(
            "/filesystem.Filesystem/{method}",
            "/filesystem.Filesystem/ListDir",
        )
        .replace("/process.Process/{method}", "/process.Process/List")
        .replace("{identifier}", AGENT_IDENTIFIER)
}

#[tokio::test]
async fn every_route_needs_a_key_and_hides_other_tenants() {
    let server = TestServer::start();
    let (admin, _) = issue(&server, None, json!({"scope": "admin"})).await;
    let (alice, alice_key_id) = issue(
        &server,
        Some(&admin),
        json!({"scope": "tenant", "tenant": "alice"}),
    )
    .await;
    let (bob, _) = issue(
        &server,
        Some(&admin),
        json!({"scope": "tenant", "tenant": "bob"}),
    )
    .await;
    let (status, session) = send(
        &server,
        "POST",
        "/v1/sessions",
        Some(&alice),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let alices = session["id"].as_str().expect("id").to_owned();
    let (status, _) = send(
        &server,
        "POST",
        &format!("/v1/sessions/{alices}/executions"),
        Some(&alice),
        Some(json!({"code": "secret = 42"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, agent) = send(
        &server,
        "PUT",
        &format!("/agents/sessions/{AGENT_IDENTIFIER}"),
        Some(&alice),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{agent}");
    let alices_agent = agent["session"]["agent_id"]
        .as_str()
        .expect("agent_id")
        .to_owned();
    let (status, jupyter_session) = send(
        &server,
        "POST",
        "/api/sessions",
        Some(&alice),
        Some(json!({"path": "alice.ipynb", "type": "notebook"})),
    )
    .await;
    assert_eq!(status, 201, "{jupyter_session}");
    let alices_jupyter = jupyter_session["id"].as_str().expect("id").to_owned();
    let (status, sandbox) = send(
        &server,
        "POST",
        "/v2/sandboxes",
        Some(&alice),
        Some(json!({"templateID": "base"})),
    )
    .await;
    assert_eq!(status, 201, "{sandbox}");
    let alices_sandbox = sandbox["sandboxID"].as_str().expect("id").to_owned();

    let (_, document) = server.get("/openapi.json").await;
    let mut routes = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("item") {
            let tag = operation["tags"][0].as_str().unwrap_or("").to_owned();
            routes.push((method.to_uppercase(), path.clone(), tag));
        }
    }
    assert!(routes.len() >= 20, "{routes:?}");
    let public = ["/healthz", "/openapi.json", "/api"];
    for (method, path, tag) in &routes {
        let concrete = fill(path, &alices, &alice_key_id, &alices_jupyter)
            .replace("{sandboxID}", &alices_sandbox);
        if tag == "e2b_sandbox" {
            // Inside a sandbox, named by header: Bob's key reaches Alice's sandbox exactly
            // as it would an unknown one (E2B's proxy answer; 503 for Connect's unary form).
            let body = (method == "POST").then(|| json!({"code": "secret", "path": "."}));
            let (status, reply) = send_to_sandbox(
                &server,
                method,
                &concrete,
                None,
                &alices_sandbox,
                body.clone(),
            )
            .await;
            assert_eq!(status, 401, "{method} {path} without a token: {reply}");
            let (status, reply) = send_to_sandbox(
                &server,
                method,
                &concrete,
                Some(&bob),
                &alices_sandbox,
                body,
            )
            .await;
            assert!(
                [502, 503].contains(&status)
                    && reply["message"]
                        .as_str()
                        .is_some_and(|message| message.contains("was not found")),
                "{method} {path} with another tenant's key: {status} {reply}"
            );
            continue;
        }
        // A valid body for the route, naming Alice's session where a body can.
        let body = (method != "GET" && method != "DELETE").then(|| match path.as_str() {
            "/v1/keys" => json!({"scope": "session", "session_id": alices}),
            "/e2b/sessions" => json!({"codeSnippetID": "snippet"}),
            "/sandboxes" | "/v2/sandboxes" => json!({"templateID": "base"}),
            "/sandboxes/{sandboxID}/timeout" => json!({"timeout": 60}),
            "/api/sessions" => json!({"path": "alice.ipynb", "type": "notebook"}),
            "/api/v1/sessions" => json!({"mode": "dedicated"}),
            "/api/v1/sessions/{id}" => json!({"accepting_jobs": false}),
            "/sessions/execute" | "/sessions/close" => {
                json!({"session_id": alices, "code": "secret"})
            }
            _ if path.ends_with("/executions") => json!({"code": "secret"}),
            _ => json!({}),
        });
        let (status, reply) = send(&server, method, &concrete, None, body.clone()).await;
        if public.contains(&path.as_str()) {
            assert_eq!(status, 200, "{method} {path} is public");
            continue;
        }
        // Jupyter's API handlers refuse with 403, as jupyter_server does.
        let jupyter = path.starts_with("/api/") && !path.starts_with("/api/v1/");
        let refused = if jupyter { 403 } else { 401 };
        assert_eq!(status, refused, "{method} {path} without a key: {reply}");

        // Bob must not reach, or even see, anything of Alice's.
        let (status, reply) = send(&server, method, &concrete, Some(&bob), body).await;
        let text = reply.to_string();
        if (method.as_str(), path.as_str()) == ("PUT", "/agents/sessions/{identifier}") {
            // Identifiers are per tenant: Bob's PUT makes a session of his own, which he
            // removes again so his other calls on this identifier still find nothing.
            assert_eq!(status, 200, "{method} {path}: {reply}");
            assert_ne!(reply["session"]["agent_id"], alices_agent.as_str());
            let (status, _) = send(&server, "DELETE", &concrete, Some(&bob), None).await;
            assert_eq!(status, 200);
        } else if path == "/api/kernelspecs/{kernel_name}" {
            // Kernelspecs are the same for every tenant.
            assert_eq!(status, 200, "{method} {path}: {reply}");
        } else if path.contains('{') {
            assert_eq!(
                status, 404,
                "{method} {path} with another tenant's key: {reply}"
            );
        } else {
            match (method.as_str(), path.as_str()) {
                // Bodies naming Alice's session.
                ("POST", "/sessions/execute" | "/sessions/close" | "/v1/keys") => {
                    assert_eq!(status, 404, "{method} {path}: {reply}")
                }
                // Creating is allowed (in Bob's tenant); listing shows only Bob's.
                (
                    "POST",
                    "/v1/sessions" | "/sessions/create" | "/e2b/sessions" | "/api/kernels"
                    | "/api/sessions" | "/api/v1/sessions" | "/sandboxes" | "/v2/sandboxes",
                )
                | (
                    "GET",
                    "/v1/sessions" | "/sessions/list" | "/v1/keys" | "/v1/info" | "/v1/runtimes"
                    | "/e2b/sessions" | "/agents/sessions" | "/api/kernels" | "/api/sessions"
                    | "/api/kernelspecs" | "/api/status" | "/sandboxes" | "/v2/sandboxes",
                ) => {
                    assert!(status < 300, "{method} {path}: {status} {reply}")
                }
                // Not supported for anyone.
                ("GET", "/sandboxes/metrics") => {
                    assert_eq!(status, 400, "{method} {path}: {reply}")
                }
                // Metrics are for admins only.
                ("GET", "/metrics") => assert_eq!(status, 403, "{method} {path}: {reply}"),
                _ => panic!("route {method} {path} is not covered by this test; add it"),
            }
        }
        assert!(
            // A 404 may repeat the id the client sent; nothing else may show it.
            !text.contains(&alices) || status == 404,
            "{method} {path} leaked Alice's session: {text}"
        );
        assert!(
            !text.contains(&alice_key_id) || status == 404,
            "{method} {path}: {text}"
        );
        assert!(
            !text.contains(&alices_agent),
            "{method} {path} leaked Alice's agent session: {text}"
        );
        assert!(
            !text.contains(&alices_sandbox) || status == 404,
            "{method} {path} leaked Alice's sandbox: {text}"
        );
    }
    // Alice still reaches her session and its state.
    let (status, execution) = send(
        &server,
        "POST",
        &format!("/v1/sessions/{alices}/executions"),
        Some(&alice),
        Some(json!({"code": "secret"})),
    )
    .await;
    assert_eq!(
        (status, &execution["result"]["text/plain"]),
        (200, &json!("42"))
    );
    let (_, agent_now) = send(
        &server,
        "GET",
        &format!("/agents/sessions/{AGENT_IDENTIFIER}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(agent_now["session"]["agent_id"], alices_agent.as_str());
    assert_eq!(agent_now["session"]["state"], "idle");
    // Admin sees every tenant.
    let (_, all) = send(&server, "GET", "/v1/sessions", Some(&admin), None).await;
    assert!(all.to_string().contains(&alices));
}

#[tokio::test]
async fn session_keys_reach_one_session_and_tenants_cannot_escalate() {
    let server = TestServer::start();
    let (admin, _) = issue(&server, None, json!({"scope": "admin"})).await;
    let (tenant, _) = issue(
        &server,
        Some(&admin),
        json!({"scope": "tenant", "tenant": "acme"}),
    )
    .await;
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let (_, session) = send(
            &server,
            "POST",
            "/v1/sessions",
            Some(&tenant),
            Some(json!({})),
        )
        .await;
        assert_eq!(session["state"], "idle");
        sessions.push(session["id"].as_str().expect("id").to_owned());
    }
    let (one, _) = issue(
        &server,
        Some(&tenant),
        json!({"scope": "session", "session_id": sessions[0]}),
    )
    .await;
    let (status, _) = send(
        &server,
        "GET",
        &format!("/v1/sessions/{}", sessions[0]),
        Some(&one),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        &server,
        "GET",
        &format!("/v1/sessions/{}", sessions[1]),
        Some(&one),
        None,
    )
    .await;
    assert_eq!(status, 404, "the tenant's other session is out of reach");
    let (_, listed) = send(&server, "GET", "/v1/sessions", Some(&one), None).await;
    assert_eq!(listed["sessions"].as_array().map(Vec::len), Some(1));
    let (status, problem) =
        send(&server, "POST", "/v1/sessions", Some(&one), Some(json!({}))).await;
    assert_eq!((status, &problem["code"]), (403, &json!("forbidden")));
    let (status, _) = send(&server, "GET", "/v1/keys", Some(&one), None).await;
    assert_eq!(status, 403);

    let (status, _) = send(
        &server,
        "POST",
        "/v1/keys",
        Some(&tenant),
        Some(json!({"scope": "admin"})),
    )
    .await;
    assert_eq!(status, 403, "a tenant cannot mint admin keys");
    let (status, _) = send(
        &server,
        "POST",
        "/v1/keys",
        Some(&tenant),
        Some(json!({"scope": "tenant", "tenant": "other"})),
    )
    .await;
    assert_eq!(status, 403, "nor keys of another tenant");
    for bad in [
        json!({"scope": "root"}),
        json!({"scope": "tenant", "tenant": "Not Valid"}),
    ] {
        let (status, _) = send(&server, "POST", "/v1/keys", Some(&admin), Some(bad.clone())).await;
        assert_eq!(status, 422, "{bad}");
    }
}

fn corral(arguments: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(arguments)
        .env_remove("CORRAL_API_KEY")
        .output()
        .expect("run corral")
}

#[tokio::test]
async fn keys_are_managed_offline_and_revocation_is_immediate() {
    let server = TestServer::start();
    let data_dir = server.data_dir.to_str().expect("utf-8 path").to_owned();
    let created = corral(&[
        "keys",
        "create",
        "--scope",
        "tenant",
        "--tenant",
        "acme",
        "--name",
        "ci",
        "--data-dir",
        &data_dir,
    ]);
    assert!(created.status.success(), "{created:?}");
    let key = String::from_utf8(created.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    assert!(key.starts_with("corral_"), "{key}");
    let (status, _) = server.get("/v1/sessions").await;
    assert_eq!(status, 401, "the server is no longer open");
    let (status, _) = send(&server, "GET", "/v1/sessions", Some(&key), None).await;
    assert_eq!(status, 200);

    let listed = corral(&["keys", "list", "--json", "--data-dir", &data_dir]);
    let keys: Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(keys[0]["tenant"], "acme");
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(&key));
    let id = keys[0]["id"].as_str().expect("id").to_owned();

    // Through the server too, with the key itself.
    let over_http = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["keys", "list", "--json", "--server", &server.url])
        .env("CORRAL_API_KEY", &key)
        .output()
        .expect("run");
    assert!(over_http.status.success(), "{over_http:?}");

    let revoked = corral(&["keys", "revoke", &id, "--data-dir", &data_dir]);
    assert!(revoked.status.success(), "{revoked:?}");
    let (status, _) = send(&server, "GET", "/v1/sessions", Some(&key), None).await;
    assert_eq!(status, 401, "revoked at once");
}

#[test]
fn a_non_loopback_bind_without_keys_is_refused() {
    let temp = tempfile::tempdir().expect("tempdir");
    let data_dir = temp.path().to_str().expect("utf-8").to_owned();
    let output = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args([
            "serve",
            "--bind",
            "0.0.0.0:0",
            "--data-dir",
            &data_dir,
            "--python",
            &support::python(),
        ])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refusing to serve"), "{stderr}");
}

#[tokio::test]
async fn keys_with_an_expiry_stop_working_when_it_passes() {
    let server = TestServer::start();
    let (admin, _) = issue(&server, None, json!({"scope": "admin"})).await;
    let (status, problem) = send(
        &server,
        "POST",
        "/v1/keys",
        Some(&admin),
        Some(json!({"scope": "tenant", "tenant": "t", "expires_at": "2001-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(status, 422, "an expiry in the past is refused: {problem}");

    let expiry = chrono::Utc::now() + chrono::Duration::seconds(2);
    let (short, short_id) = issue(
        &server,
        Some(&admin),
        json!({"scope": "tenant", "tenant": "t", "expires_at": expiry.to_rfc3339()}),
    )
    .await;
    let (status, _) = send(&server, "GET", "/v1/sessions", Some(&short), None).await;
    assert_eq!(status, 200, "valid before its expiry");
    let (_, listed) = send(&server, "GET", "/v1/keys", Some(&admin), None).await;
    let entry = listed["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|key| key["id"] == short_id.as_str())
        .expect("listed")
        .clone();
    assert!(entry["expires_at"].is_string(), "{entry}");

    let deadline = std::time::Instant::now() + support::DEADLINE;
    loop {
        let (status, _) = send(&server, "GET", "/v1/sessions", Some(&short), None).await;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            std::time::Instant::now() < deadline,
            "the key never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(chrono::Utc::now() >= expiry, "refused only once expired");
    let (status, _) = send(&server, "GET", "/v1/sessions", Some(&admin), None).await;
    assert_eq!(status, 200, "other keys are unaffected");
}

#[tokio::test]
async fn require_auth_closes_open_mode_and_failures_are_logged_without_the_key() {
    let server = TestServer::start_with_arguments("", &["--require-auth"]);
    let (status, _) = server.get("/v1/sessions").await;
    assert_eq!(status, 401, "no open mode even on loopback without keys");
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, 200);
    let bogus = "corral_0123456789ab_notarealsecretnotarealsecret";
    let (status, _) = send(&server, "GET", "/v1/sessions", Some(bogus), None).await;
    assert_eq!(status, 401);
    let deadline = std::time::Instant::now() + support::DEADLINE;
    while !server.log().contains("authentication failed") {
        assert!(std::time::Instant::now() < deadline, "{}", server.log());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        !server.log().contains("notarealsecret"),
        "the key is never logged"
    );
}
