//! The Qiskit Runtime sessions surface (seed 003) at `/api/v1/sessions`: the `JobSession`
//! object and its state mapping (open, active while an execution runs, inactive, closed),
//! TTL mapping onto the engine, drain (`PATCH accepting_jobs=false`), cancel
//! (`DELETE .../close`), `IBM-API-Version` validation, the `ErrorContainer` error body on
//! every route, keys and tenants, and the view after a server restart.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{gate_path, start_gated_execution, TestServer, DEADLINE};

const SESSIONS: &str = "/api/v1/sessions";

/// Every key of a `JobSession`.
const JOB_SESSION_KEYS: [&str; 17] = [
    "accepting_jobs",
    "activated_at",
    "active_ttl",
    "backend_name",
    "closed_at",
    "elapsed_time",
    "id",
    "interactive_ttl",
    "last_job_completed",
    "last_job_started",
    "max_ttl",
    "mode",
    "started_at",
    "state",
    "state_reason",
    "timestamps",
    "user_id",
];

/// A request to this API with optional key (`Authorization: Bearer`), extra headers and a
/// raw body; returns the status, the `x-request-id` the server answered with, and the body.
async fn call(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, Value) {
    let mut request = server
        .http
        .request(method.parse().expect("method"), server.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().await.expect("request sent");
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let (status, body) = support::response(Ok(response)).await;
    (status, request_id, body)
}

async fn create(server: &TestServer, body: Value) -> Value {
    let (status, _, session) = call(server, "POST", SESSIONS, &[], Some(&body.to_string())).await;
    assert_eq!(status, 200, "{session}");
    session
}

async fn details(server: &TestServer, id: &str) -> Value {
    let (status, _, session) = call(server, "GET", &format!("{SESSIONS}/{id}"), &[], None).await;
    assert_eq!(status, 200, "{session}");
    session
}

async fn set_accepting(server: &TestServer, id: &str, accepting: bool) -> (u16, Value) {
    let body = json!({ "accepting_jobs": accepting }).to_string();
    let (status, _, reply) = call(
        server,
        "PATCH",
        &format!("{SESSIONS}/{id}"),
        &[],
        Some(&body),
    )
    .await;
    (status, reply)
}

/// Waits until the session's Qiskit `state` is `state`.
async fn wait_for_qiskit_state(server: &TestServer, id: &str, state: &str) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let session = details(server, id).await;
        if session["state"] == state {
            return session;
        }
        assert!(Instant::now() < deadline, "never {state}: {session}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the server's execution queue holds `depth` executions.
async fn wait_for_queue_depth(server: &TestServer, depth: u32) {
    let wanted = format!("corral_execution_queue_depth {depth}");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = server
            .http
            .get(server.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        if text.lines().any(|line| line == wanted) {
            return;
        }
        assert!(Instant::now() < deadline, "queue never {depth}:\n{text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts an `ErrorContainer` with `status` whose trace is the request's id.
fn assert_error(status: u16, request_id: &str, body: &Value, expected: u16, context: &str) {
    assert_eq!(status, expected, "{context}: {body}");
    let errors = body["errors"].as_array().expect("errors array");
    assert_eq!(errors.len(), 1, "{context}: {body}");
    for field in ["code", "message", "more_info"] {
        assert!(
            errors[0][field]
                .as_str()
                .is_some_and(|text| !text.is_empty()),
            "{context}: {field} in {body}"
        );
    }
    assert!(!request_id.is_empty(), "{context}: the response has an id");
    assert_eq!(body["trace"], request_id, "{context}: {body}");
    assert_eq!(body["status_code"], expected, "{context}: {body}");
}

/// RFC 3339 with milliseconds and `Z`: `2023-10-01T00:00:00.000Z`.
fn assert_timestamp(value: &Value, context: &str) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{context}: {value}"));
    let shape: String = text
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    assert_eq!(shape, "9999-99-99T99:99:99.999Z", "{context}: {text}");
}

fn statuses(session: &Value) -> Vec<String> {
    session["timestamps"]
        .as_array()
        .expect("timestamps")
        .iter()
        .map(|entry| {
            assert_timestamp(&entry["timestamp"], "timestamps");
            entry["status"].as_str().expect("status").to_owned()
        })
        .collect()
}

#[tokio::test]
async fn sessions_are_created_read_and_cancelled() {
    let server = TestServer::start();
    let (status, _, session) = call(
        &server,
        "POST",
        SESSIONS,
        &[
            ("IBM-API-Version", "2026-04-15"),
            ("Service-CRN", "crn:v1:anything"),
        ],
        Some(r#"{"mode": "dedicated", "backend": "python3", "max_ttl": 600, "instance": "crn:v1", "extra": [1]}"#),
    )
    .await;
    assert_eq!(status, 200, "{session}");
    let mut keys: Vec<&str> = session
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, JOB_SESSION_KEYS);
    let id = session["id"].as_str().expect("id").to_owned();
    assert_eq!(session["state"], "open");
    assert_eq!(session["accepting_jobs"], true);
    assert_eq!(session["mode"], "dedicated");
    assert_eq!(session["backend_name"], "python3");
    assert_eq!(session["user_id"], "default");
    assert_eq!(session["max_ttl"], 600);
    assert_eq!(session["active_ttl"], 600);
    assert_eq!(session["elapsed_time"], 0.0);
    assert_timestamp(&session["started_at"], "started_at");
    for unset in [
        "activated_at",
        "closed_at",
        "last_job_started",
        "last_job_completed",
        "state_reason",
    ] {
        assert_eq!(session[unset], Value::Null, "{unset}");
    }
    assert_eq!(statuses(&session), ["open"]);
    assert_eq!(details(&server, &id).await, session);

    // The same session on the native API, with the Qiskit fields in its metadata.
    let (_, native) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(native["state"], "idle");
    assert_eq!(native["max_ttl"], 600.0);
    assert_eq!(native["metadata"]["qiskit"]["mode"], "dedicated");
    assert_eq!(native["metadata"]["qiskit"]["backend"], "python3");
    assert_eq!(native["metadata"]["qiskit"]["instance"], "crn:v1");

    // One job (an execution through the native API): inactive afterwards.
    assert_eq!(server.execute(&id, "1 + 1").await["status"], "ok");
    let after_job = details(&server, &id).await;
    assert_eq!(after_job["state"], "inactive");
    assert_eq!(after_job["accepting_jobs"], true);
    assert_eq!(statuses(&after_job), ["open", "active", "inactive"]);
    let timestamps = after_job["timestamps"].as_array().expect("timestamps");
    assert_eq!(after_job["activated_at"], timestamps[1]["timestamp"]);
    assert_eq!(after_job["last_job_started"], timestamps[1]["timestamp"]);
    assert_eq!(after_job["last_job_completed"], timestamps[2]["timestamp"]);
    assert!(after_job["elapsed_time"].as_f64().is_some_and(|s| s >= 0.0));

    // Cancel: 204 without a body, closed everywhere; again is a no-op.
    for _ in 0..2 {
        let response = server
            .http
            .delete(server.url(&format!("{SESSIONS}/{id}/close")))
            .header("IBM-API-Version", "2025-01-01")
            .send()
            .await
            .expect("cancel");
        assert_eq!(response.status(), 204);
        assert_eq!(response.text().await.expect("body"), "");
    }
    let closed = details(&server, &id).await;
    assert_eq!(closed["state"], "closed");
    assert_eq!(closed["state_reason"], "cancelled");
    assert_eq!(closed["accepting_jobs"], false);
    assert_timestamp(&closed["closed_at"], "closed_at");
    assert_eq!(statuses(&closed), ["open", "active", "inactive", "closed"]);
    let (_, native) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(native["state"], "closed");
    let (status, _) = server
        .post(
            &format!("/v1/sessions/{id}/executions"),
            json!({"code": "1"}),
        )
        .await;
    assert_eq!(status, 409, "a cancelled session runs nothing");

    // Closing through the native API closes it here too.
    let other = create(&server, json!({"mode": "batch"})).await;
    let other_id = other["id"].as_str().expect("id");
    assert_eq!(other["mode"], "batch");
    let (status, _) = server.delete(&format!("/v1/sessions/{other_id}")).await;
    assert_eq!(status, 200);
    let other = details(&server, other_id).await;
    assert_eq!(other["state"], "closed");
    assert_eq!(other["state_reason"], "closed by client");
    assert_eq!(statuses(&other), ["open", "closed"]);
}

#[tokio::test]
async fn a_running_job_makes_the_session_active_and_cancel_kills_it() {
    let server = TestServer::start();
    let id = create(&server, json!({"mode": "dedicated"})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let mut events = start_gated_execution(&server, &id, "go").await;
    let active = details(&server, &id).await;
    assert_eq!(active["state"], "active");
    assert_eq!(active["accepting_jobs"], true);
    assert_eq!(statuses(&active), ["open", "active"]);
    assert_eq!(active["activated_at"], active["last_job_started"]);
    assert_eq!(active["last_job_completed"], Value::Null);

    let (status, _, body) = call(
        &server,
        "DELETE",
        &format!("{SESSIONS}/{id}/close"),
        &[],
        None,
    )
    .await;
    assert_eq!((status, body), (204, Value::Null));
    while events.next().await.is_some() {}
    let (_, execution) = server.get(&format!("/v1/sessions/{id}/executions/1")).await;
    assert_eq!(execution["status"], "killed", "{execution}");
    let closed = details(&server, &id).await;
    assert_eq!(closed["state"], "closed");
    assert_eq!(closed["state_reason"], "cancelled");
    assert_eq!(statuses(&closed), ["open", "active", "closed"]);
    assert!(!gate_path(&server, &id, "go").exists());
}

#[tokio::test]
async fn accepting_jobs_false_drains_the_queue_then_closes() {
    let server = TestServer::start();
    let id = create(&server, json!({"mode": "batch"})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let gate = gate_path(&server, &id, "go");
    let mut running = start_gated_execution(&server, &id, "go").await;
    let queued = server.execute_in_background(&id, "'queued'");
    wait_for_queue_depth(&server, 1).await;

    let response = server
        .http
        .patch(server.url(&format!("{SESSIONS}/{id}")))
        .json(&json!({"accepting_jobs": false}))
        .send()
        .await
        .expect("patch");
    assert_eq!(response.status(), 204);
    assert_eq!(response.text().await.expect("body"), "");

    // Draining: still active, no new jobs on any surface.
    let draining = details(&server, &id).await;
    assert_eq!(draining["state"], "active");
    assert_eq!(draining["accepting_jobs"], false);
    let (status, refused) = server
        .post(
            &format!("/v1/sessions/{id}/executions"),
            json!({"code": "'refused'"}),
        )
        .await;
    assert_eq!(status, 409, "native: {refused}");
    assert_eq!(refused["code"], "not_accepting_executions");
    let (status, refused) = server
        .post(
            "/sessions/execute",
            json!({"session_id": id, "code": "'refused'"}),
        )
        .await;
    assert_eq!(status, 409, "python_rce: {refused}");

    // The running and the queued job finish; then the session closes by itself.
    std::fs::write(&gate, b"").expect("open the gate");
    while running.next().await.is_some() {}
    let (status, queued) = queued.await.expect("join");
    assert_eq!(status, 200, "{queued}");
    assert_eq!(queued["result"]["text/plain"], "'queued'");
    let closed = wait_for_qiskit_state(&server, &id, "closed").await;
    assert_eq!(closed["state_reason"], "drained");
    assert_eq!(closed["accepting_jobs"], false);
    assert_eq!(
        statuses(&closed),
        ["open", "active", "inactive", "active", "inactive", "closed"]
    );
    let (_, native) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(
        (&native["state"], &native["execution_count"]),
        (&json!("closed"), &json!(2))
    );
    let (_, history) = server.get(&format!("/v1/sessions/{id}/executions")).await;
    assert!(
        history.to_string().contains("'queued'") && !history.to_string().contains("refused"),
        "{history}"
    );

    // Once closed: false again changes nothing, true is a conflict.
    assert_eq!(set_accepting(&server, &id, false).await.0, 204);
    let (status, request_id, body) = call(
        &server,
        "PATCH",
        &format!("{SESSIONS}/{id}"),
        &[],
        Some(r#"{"accepting_jobs": true}"#),
    )
    .await;
    assert_error(status, &request_id, &body, 409, "reopen a closed session");
}

#[tokio::test]
async fn draining_an_idle_session_closes_it_and_true_cancels_a_drain() {
    let server = TestServer::start();
    let idle = create(&server, json!({"mode": "dedicated"})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(set_accepting(&server, &idle, false).await.0, 204);
    let closed = wait_for_qiskit_state(&server, &idle, "closed").await;
    assert_eq!(closed["state_reason"], "drained");
    assert_eq!(statuses(&closed), ["open", "closed"]);

    // false then true while a job runs: the drain is cancelled. Stopping executions later
    // through the native API (which drains without closing) does not revive it.
    let id = create(&server, json!({"mode": "dedicated"})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let gate = gate_path(&server, &id, "go");
    let mut running = start_gated_execution(&server, &id, "go").await;
    assert_eq!(set_accepting(&server, &id, false).await.0, 204);
    assert_eq!(details(&server, &id).await["accepting_jobs"], false);
    assert_eq!(set_accepting(&server, &id, true).await.0, 204);
    assert_eq!(details(&server, &id).await["accepting_jobs"], true);
    let queued = server.execute_in_background(&id, "'queued'");
    wait_for_queue_depth(&server, 1).await;
    let native_path = format!("/v1/sessions/{id}");
    let native_accepting =
        |accepting: bool| server.patch(&native_path, json!({ "accepting_executions": accepting }));
    assert_eq!(native_accepting(false).await.0, 200);
    std::fs::write(&gate, b"").expect("open the gate");
    while running.next().await.is_some() {}
    assert_eq!(queued.await.expect("join").0, 200);
    let (status, reopened) = native_accepting(true).await;
    assert_eq!(status, 200, "still live: {reopened}");
    assert_eq!(server.execute(&id, "'still open'").await["status"], "ok");
    let session = details(&server, &id).await;
    assert_eq!(session["state"], "inactive");
    assert_eq!(session["accepting_jobs"], true);
}

#[tokio::test]
async fn ttls_map_to_the_engine_and_are_validated() {
    let server = TestServer::start();
    let session = create(
        &server,
        json!({"mode": "dedicated", "interactive_ttl": 60, "active_ttl": 300, "max_ttl": 600}),
    )
    .await;
    assert_eq!(
        (
            &session["interactive_ttl"],
            &session["active_ttl"],
            &session["max_ttl"]
        ),
        (&json!(60), &json!(300), &json!(600))
    );
    let id = session["id"].as_str().expect("id");
    let (_, native) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(
        (&native["idle_ttl"], &native["max_ttl"]),
        (&json!(60.0), &json!(600.0))
    );

    // Without interactive_ttl the operator's idle TTL applies, capped at active_ttl; without
    // max_ttl the operator's max TTL.
    let capped = create(&server, json!({"mode": "batch", "max_ttl": 100})).await;
    assert_eq!(capped["interactive_ttl"], 100);
    let defaults = create(&server, json!({"mode": "batch"})).await;
    let (_, info) = server.get("/v1/info").await;
    let limits = &info["limits"];
    assert_eq!(
        defaults["max_ttl"].as_f64(),
        limits["max_ttl_seconds"].as_f64(),
        "{info}"
    );
    assert_eq!(defaults["active_ttl"], defaults["max_ttl"]);
    assert_eq!(
        defaults["interactive_ttl"].as_f64(),
        limits["idle_ttl_seconds"].as_f64(),
        "{info}"
    );

    // The largest value this API can express is still beyond the operator's ceiling.
    for (body, context) in [
        (json!({"mode": "batch", "max_ttl": 0}), "zero"),
        (json!({"mode": "batch", "max_ttl": -5}), "negative"),
        (
            json!({"mode": "batch", "max_ttl": 2147483648_i64}),
            "beyond i32",
        ),
        (
            json!({"mode": "batch", "max_ttl": 2147483647}),
            "beyond the ceiling",
        ),
        (json!({"mode": "batch", "max_ttl": "600"}), "string"),
        (json!({"mode": "batch", "max_ttl": 1.5}), "fraction"),
        (json!({"mode": "batch", "interactive_ttl": 0}), "zero idle"),
        (json!({"mode": "batch", "active_ttl": 0}), "zero active"),
        (
            json!({"mode": "batch", "interactive_ttl": 301, "active_ttl": 300}),
            "interactive > active",
        ),
        (
            json!({"mode": "batch", "active_ttl": 601, "max_ttl": 600}),
            "active > max",
        ),
        (
            json!({"mode": "batch", "interactive_ttl": 601, "max_ttl": 600}),
            "interactive > max",
        ),
    ] {
        let (status, request_id, reply) =
            call(&server, "POST", SESSIONS, &[], Some(&body.to_string())).await;
        assert_error(status, &request_id, &reply, 400, context);
    }
    // The smallest TTLs are accepted.
    let smallest = create(
        &server,
        json!({"mode": "batch", "interactive_ttl": 1, "active_ttl": 1, "max_ttl": 1}),
    )
    .await;
    assert_eq!(smallest["max_ttl"], 1);
}

#[tokio::test]
async fn ttl_ceilings_of_the_operator_apply() {
    let server = TestServer::start_with_config(
        "[limits]\nidle_ttl_ceiling_seconds = 100\nmax_ttl_ceiling_seconds = 200\n",
    );
    create(
        &server,
        json!({"mode": "batch", "interactive_ttl": 100, "max_ttl": 200}),
    )
    .await;
    for body in [
        json!({"mode": "batch", "interactive_ttl": 101, "max_ttl": 200}),
        json!({"mode": "batch", "max_ttl": 201}),
    ] {
        let (status, request_id, reply) =
            call(&server, "POST", SESSIONS, &[], Some(&body.to_string())).await;
        assert_error(status, &request_id, &reply, 400, &body.to_string());
        assert!(reply.to_string().contains("exceeds the maximum"), "{reply}");
    }
}

#[tokio::test]
async fn backends_name_corral_runtimes() {
    let server = TestServer::start();
    for body in [
        json!({"mode": "batch", "backend_name": "python3"}),
        json!({"mode": "batch", "backend": "python3", "backend_name": "ignored"}),
        json!({"mode": "batch", "backend": null}),
    ] {
        assert_eq!(create(&server, body).await["backend_name"], "python3");
    }
    for body in [
        json!({"mode": "batch", "backend": "ibm_brisbane"}),
        json!({"mode": "batch", "backend_name": "ibm_brisbane"}),
        json!({"mode": "batch", "backend": ""}),
        json!({"mode": "batch", "backend": 5}),
        json!({"mode": "batch", "instance": 5}),
    ] {
        let (status, request_id, reply) =
            call(&server, "POST", SESSIONS, &[], Some(&body.to_string())).await;
        assert_error(status, &request_id, &reply, 400, &body.to_string());
    }
}

#[tokio::test]
async fn bad_input_on_every_route_gets_an_error_container() {
    let server = TestServer::start_with_config("[limits]\nmax_code_bytes = 1000\n");
    let id = create(&server, json!({"mode": "batch"})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let item = format!("{SESSIONS}/{id}");

    for (body, context) in [
        (Some("{"), "malformed JSON"),
        (Some("null"), "null"),
        (Some(""), "empty body"),
        (None, "no body"),
        (Some("[]"), "array"),
        (Some("{}"), "mode missing"),
        (Some(r#"{"mode": "exclusive"}"#), "unknown mode"),
        (Some(r#"{"mode": 1}"#), "mode of the wrong type"),
        (Some(r#"{"mode": null}"#), "mode null"),
    ] {
        let (status, request_id, reply) = call(&server, "POST", SESSIONS, &[], body).await;
        assert_error(status, &request_id, &reply, 400, context);
    }
    for (body, context) in [
        (Some("{"), "malformed JSON"),
        (Some("null"), "null"),
        (None, "no body"),
        (Some("{}"), "accepting_jobs missing"),
        (Some(r#"{"accepting_jobs": "no"}"#), "string"),
        (Some(r#"{"accepting_jobs": 0}"#), "number"),
        (Some(r#"{"accepting_jobs": null}"#), "null field"),
    ] {
        let (status, request_id, reply) = call(&server, "PATCH", &item, &[], body).await;
        assert_error(status, &request_id, &reply, 400, context);
    }
    assert_eq!(details(&server, &id).await["accepting_jobs"], true);

    // A body just over the server's limit.
    let (_, info) = server.get("/v1/info").await;
    let limit = info["limits"]["max_request_body_bytes"]
        .as_u64()
        .expect("limit") as usize;
    let oversized = format!(r#"{{"mode": "batch", "pad": "{}"}}"#, "x".repeat(limit));
    for (method, path) in [("POST", SESSIONS.to_owned()), ("PATCH", item.clone())] {
        let (status, request_id, reply) = call(&server, method, &path, &[], Some(&oversized)).await;
        assert_error(status, &request_id, &reply, 413, method);
    }

    // Unknown and malformed ids on every route with an id.
    let unknown = uuid::Uuid::now_v7().to_string();
    for session_id in [unknown.as_str(), "not-a-uuid", "%FF"] {
        for (method, path, body) in [
            ("GET", format!("{SESSIONS}/{session_id}"), None),
            (
                "PATCH",
                format!("{SESSIONS}/{session_id}"),
                Some(r#"{"accepting_jobs": false}"#),
            ),
            ("DELETE", format!("{SESSIONS}/{session_id}/close"), None),
        ] {
            let (status, request_id, reply) = call(&server, method, &path, &[], body).await;
            let context = format!("{method} {path}");
            let expected = if session_id == "%FF" { 400 } else { 404 };
            assert_error(status, &request_id, &reply, expected, &context);
        }
    }

    // The trace is the request id the client chose.
    let (status, request_id, reply) = call(
        &server,
        "GET",
        &format!("{SESSIONS}/{unknown}"),
        &[("x-request-id", "trace-me-1")],
        None,
    )
    .await;
    assert_eq!(request_id, "trace-me-1");
    assert_error(status, &request_id, &reply, 404, "chosen request id");
}

#[tokio::test]
async fn ibm_api_version_must_be_a_date_when_present() {
    let server = TestServer::start();
    let id = create(&server, json!({"mode": "batch"})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let routes = [
        ("POST", SESSIONS.to_owned(), Some(r#"{"mode": "batch"}"#)),
        ("GET", format!("{SESSIONS}/{id}"), None),
        (
            "PATCH",
            format!("{SESSIONS}/{id}"),
            Some(r#"{"accepting_jobs": true}"#),
        ),
        ("DELETE", format!("{SESSIONS}/{id}/close"), None),
    ];
    for version in [
        "2025-13-01",
        "2025-02-30",
        "20250101",
        "2025-1-01",
        "2025-01-01T00:00:00Z",
        "latest",
        "",
    ] {
        for (method, path, body) in &routes {
            let (status, request_id, reply) = call(
                &server,
                method,
                path,
                &[("IBM-API-Version", version)],
                *body,
            )
            .await;
            let context = format!("{method} {path} with {version:?}");
            assert_error(status, &request_id, &reply, 400, &context);
            assert_eq!(
                reply["errors"][0]["code"], "invalid_api_version",
                "{context}"
            );
        }
    }
    assert_eq!(
        details(&server, &id).await["state"],
        "open",
        "nothing changed"
    );
    // Valid dates on every route, the cancel last.
    for (method, path, body) in &routes {
        let (status, _, reply) = call(
            &server,
            method,
            path,
            &[("IBM-API-Version", "2024-02-29")],
            *body,
        )
        .await;
        assert!(status == 200 || status == 204, "{method} {path}: {reply}");
    }
}

#[tokio::test]
async fn keys_are_required_and_tenants_are_isolated() {
    let server = TestServer::start();
    let issue = |key: Option<String>, body: Value| {
        let request = server.http.post(server.url("/v1/keys")).json(&body);
        let request = match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        };
        async move {
            let (status, issued) = support::response(request.send().await).await;
            assert_eq!(status, 201, "{issued}");
            issued["key"].as_str().expect("key").to_owned()
        }
    };
    let admin = issue(None, json!({"scope": "admin"})).await;
    let alice = issue(
        Some(admin.clone()),
        json!({"scope": "tenant", "tenant": "alice"}),
    )
    .await;
    let bob = issue(
        Some(admin.clone()),
        json!({"scope": "tenant", "tenant": "bob"}),
    )
    .await;

    // Alice with `Authorization: apikey` (as qiskit-ibm-runtime sends without an IAM token).
    let apikey = format!("apikey {alice}");
    let (status, _, session) = call(
        &server,
        "POST",
        SESSIONS,
        &[("Authorization", &apikey), ("Service-CRN", "crn:v1")],
        Some(r#"{"mode": "dedicated"}"#),
    )
    .await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["user_id"], "alice");
    let id = session["id"].as_str().expect("id").to_owned();
    let bearer = format!("Bearer {alice}");
    let (status, _, read) = call(
        &server,
        "GET",
        &format!("{SESSIONS}/{id}"),
        &[("Authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!((status, &read["user_id"]), (200, &json!("alice")));

    let routes = [
        ("POST", SESSIONS.to_owned(), Some(r#"{"mode": "batch"}"#)),
        ("GET", format!("{SESSIONS}/{id}"), None),
        (
            "PATCH",
            format!("{SESSIONS}/{id}"),
            Some(r#"{"accepting_jobs": false}"#),
        ),
        ("DELETE", format!("{SESSIONS}/{id}/close"), None),
    ];
    let forged = format!("Bearer {alice}x");
    let wrong_apikey = "apikey corral_nothing_here".to_owned();
    for (method, path, body) in &routes {
        for headers in [
            vec![],
            vec![("Authorization", forged.as_str())],
            vec![("Authorization", wrong_apikey.as_str())],
        ] {
            let (status, request_id, reply) = call(&server, method, path, &headers, *body).await;
            assert_error(
                status,
                &request_id,
                &reply,
                401,
                &format!("{method} {path}"),
            );
            assert!(!reply.to_string().contains(&alice), "keys are never echoed");
        }
    }
    // Bob sees nothing of Alice's session.
    let bob_header = format!("Bearer {bob}");
    for (method, path, body) in &routes[1..] {
        let (status, request_id, reply) = call(
            &server,
            method,
            path,
            &[("Authorization", bob_header.as_str())],
            *body,
        )
        .await;
        assert_error(
            status,
            &request_id,
            &reply,
            404,
            &format!("bob: {method} {path}"),
        );
    }
    let (status, _, read) = call(
        &server,
        "GET",
        &format!("{SESSIONS}/{id}"),
        &[("Authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(read["state"], "open", "Bob changed nothing: {read}");
    assert_eq!(read["accepting_jobs"], true);
    assert!(!server.log().contains(&alice), "keys are never logged");
}

#[tokio::test]
async fn job_history_is_read_in_pages_and_survives_a_restart() {
    let server = TestServer::start();
    let id = create(&server, json!({"mode": "dedicated", "max_ttl": 3600})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // More executions than one page of history (100).
    let jobs = 101;
    for n in 0..jobs {
        assert_eq!(server.execute(&id, &format!("{n}")).await["status"], "ok");
    }
    let before = details(&server, &id).await;
    assert_eq!(before["state"], "inactive");
    assert_eq!(
        before["timestamps"].as_array().expect("timestamps").len(),
        1 + 2 * jobs
    );

    let server = server.restart_without_workers();
    let after = details(&server, &id).await;
    assert_eq!(after["state"], "closed");
    assert_eq!(after["state_reason"], "server restarted");
    assert_eq!(after["accepting_jobs"], false);
    assert_timestamp(&after["closed_at"], "closed_at");
    let mut expected = before["timestamps"].as_array().expect("timestamps").clone();
    expected.push(json!({"status": "closed", "timestamp": after["closed_at"]}));
    assert_eq!(after["timestamps"], Value::Array(expected));
    for kept in [
        "started_at",
        "activated_at",
        "last_job_started",
        "last_job_completed",
        "elapsed_time",
        "max_ttl",
        "active_ttl",
        "interactive_ttl",
        "mode",
        "backend_name",
        "user_id",
    ] {
        assert_eq!(after[kept], before[kept], "{kept}");
    }
}
