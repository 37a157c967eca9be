//! The Jupyter Server surface (seed 002) at the root: kernels are corral sessions, Jupyter
//! sessions live on their kernels, jupyter_server's status codes and `{message, reason}`
//! errors, token auth answered with 403.

mod support;

use serde_json::{json, Value};
use support::TestServer;

/// A request with optional extra headers and a raw body; `(status, location, body)`.
async fn send(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Option<String>, Value) {
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
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|value| value.to_str().expect("location").to_owned());
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().expect("content type").to_owned());
    let text = response.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        assert_eq!(
            content_type.as_deref(),
            Some("application/json"),
            "{method} {path}: {text}"
        );
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, location, body)
}

fn error(message: &str) -> Value {
    json!({"message": message, "reason": null})
}

fn keys_of(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value.as_object().expect("object").keys().cloned().collect();
    keys.sort();
    keys
}

/// Checks the kernel model's exact shape and returns its id.
fn kernel_id(kernel: &Value) -> String {
    assert_eq!(
        keys_of(kernel),
        [
            "connections",
            "execution_state",
            "id",
            "last_activity",
            "name"
        ],
        "{kernel}"
    );
    assert_eq!(kernel["name"], "python3");
    assert_eq!(kernel["connections"], 0);
    let last_activity = kernel["last_activity"].as_str().expect("last_activity");
    // What the gateway client parses: %Y-%m-%dT%H:%M:%S.%fZ.
    assert!(
        chrono::NaiveDateTime::parse_from_str(last_activity, "%Y-%m-%dT%H:%M:%S%.6fZ").is_ok(),
        "{last_activity}"
    );
    let id = kernel["id"].as_str().expect("id").to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    id
}

async fn start_kernel(server: &TestServer) -> String {
    let (status, location, kernel) = send(server, "POST", "/api/kernels", &[], None).await;
    assert_eq!(status, 201, "{kernel}");
    let id = kernel_id(&kernel);
    assert_eq!(location, Some(format!("/api/kernels/{id}")));
    id
}

async fn create_session(server: &TestServer, body: Value) -> Value {
    let (status, location, session) = send(
        server,
        "POST",
        "/api/sessions",
        &[],
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(status, 201, "{body}: {session}");
    let id = session["id"].as_str().expect("id");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    assert_eq!(location, Some(format!("/api/sessions/{id}")));
    session
}

async fn native_state(server: &TestServer, id: &str) -> Value {
    let (status, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 200, "{session}");
    session["state"].clone()
}

async fn live_kernel_ids(server: &TestServer) -> Vec<String> {
    let (status, _, kernels) = send(server, "GET", "/api/kernels", &[], None).await;
    assert_eq!(status, 200);
    kernels
        .as_array()
        .expect("array")
        .iter()
        .map(kernel_id)
        .collect()
}

#[tokio::test]
async fn version_kernelspecs_and_status() {
    let server = TestServer::start();
    let (status, _, version) = send(&server, "GET", "/api", &[], None).await;
    assert_eq!((status, version), (200, json!({"version": "2.21.1"})));

    let (status, _, specs) = send(&server, "GET", "/api/kernelspecs", &[], None).await;
    assert_eq!(status, 200, "{specs}");
    assert_eq!(specs["default"], "python3");
    assert_eq!(
        keys_of(&specs["kernelspecs"]),
        ["bash", "javascript", "python3"]
    );
    let python = &specs["kernelspecs"]["python3"];
    assert_eq!(keys_of(python), ["name", "resources", "spec"]);
    assert_eq!(python["name"], "python3");
    assert_eq!(python["resources"], json!({}));
    assert_eq!(
        keys_of(&python["spec"]),
        [
            "argv",
            "display_name",
            "env",
            "interrupt_mode",
            "language",
            "metadata"
        ]
    );
    assert_eq!(python["spec"]["language"], "python");
    assert_eq!(python["spec"]["interrupt_mode"], "signal");
    assert!(python["spec"]["display_name"]
        .as_str()
        .is_some_and(|name| name.starts_with("Python 3")));

    let (status, _, single) = send(&server, "GET", "/api/kernelspecs/python3", &[], None).await;
    assert_eq!((status, &single), (200, python));
    for name in ["nope", "python3.x", "a-b-c-d-e"] {
        let (status, _, body) = send(
            &server,
            "GET",
            &format!("/api/kernelspecs/{name}"),
            &[],
            None,
        )
        .await;
        assert_eq!(
            (status, body),
            (404, error(&format!("Kernel spec {name} not found")))
        );
    }

    let (status, _, before) = send(&server, "GET", "/api/status", &[], None).await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(
        keys_of(&before),
        ["connections", "kernels", "last_activity", "started"]
    );
    assert_eq!(
        (&before["kernels"], &before["connections"]),
        (&json!(0), &json!(0))
    );
    start_kernel(&server).await;
    let (_, _, after) = send(&server, "GET", "/api/status", &[], None).await;
    assert_eq!(after["kernels"], 1);
    assert_eq!(after["started"], before["started"]);
    assert!(after["last_activity"].as_str() > before["last_activity"].as_str());
}

#[tokio::test]
async fn kernels_are_corral_sessions() {
    let server = TestServer::start();
    let id = start_kernel(&server).await;
    assert_eq!(native_state(&server, &id).await, "idle");
    assert_eq!(
        server.execute(&id, "1 + 1").await["result"]["text/plain"],
        "2"
    );
    let (status, _, kernel) = send(&server, "GET", &format!("/api/kernels/{id}"), &[], None).await;
    assert_eq!(status, 200);
    assert_eq!(kernel_id(&kernel), id);
    assert_eq!(kernel["execution_state"], "idle");

    // What the gateway client sends; a session started on the native API is a kernel too.
    let (status, _, named) = send(
        &server,
        "POST",
        "/api/kernels",
        &[],
        Some(
            r#"{"name": "python3", "env": {"KERNEL_USERNAME": "me", "KERNEL_WORKING_DIR": "/x"}}"#,
        ),
    )
    .await;
    assert_eq!(status, 201, "{named}");
    let named = kernel_id(&named);
    let native = server.create_session().await;
    let listed = live_kernel_ids(&server).await;
    assert_eq!(listed, [id.clone(), named.clone(), native.clone()]);

    // A kernel_id naming a running kernel returns it rather than starting one.
    let (status, location, again) = send(
        &server,
        "POST",
        "/api/kernels",
        &[],
        Some(&json!({"kernel_id": named}).to_string()),
    )
    .await;
    assert_eq!((status, kernel_id(&again)), (201, named.clone()));
    assert_eq!(location, Some(format!("/api/kernels/{named}")));
    assert_eq!(live_kernel_ids(&server).await.len(), 3);

    let (status, _, body) = send(
        &server,
        "POST",
        "/api/kernels",
        &[],
        Some(r#"{"name": "nope"}"#),
    )
    .await;
    assert_eq!((status, body), (404, error("No such kernel named nope")));

    let (status, _, body) = send(&server, "DELETE", &format!("/api/kernels/{id}"), &[], None).await;
    assert_eq!((status, body), (204, Value::Null));
    assert_eq!(
        native_state(&server, &id).await,
        "closed",
        "closed everywhere"
    );
    for (method, path) in [
        ("GET", format!("/api/kernels/{id}")),
        ("DELETE", format!("/api/kernels/{id}")),
        ("POST", format!("/api/kernels/{id}/interrupt")),
        ("POST", format!("/api/kernels/{id}/restart")),
    ] {
        let (status, _, body) = send(&server, method, &path, &[], Some("{}")).await;
        assert_eq!(
            (status, body),
            (404, error(&format!("Kernel does not exist: {id}"))),
            "{method} {path}"
        );
    }
    // Closing on the native API ends the kernel too.
    let (status, _) = server.delete(&format!("/v1/sessions/{native}")).await;
    assert_eq!(status, 200);
    let (status, _, _) = send(&server, "GET", &format!("/api/kernels/{native}"), &[], None).await;
    assert_eq!(status, 404);
    assert_eq!(live_kernel_ids(&server).await, [named]);
}

#[tokio::test]
async fn interrupt_stops_a_running_loop() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let running = server.execute_in_background(&id, "while True: pass");
    server.wait_for_state(&id, "busy").await;
    let (_, _, kernel) = send(&server, "GET", &format!("/api/kernels/{id}"), &[], None).await;
    assert_eq!(kernel["execution_state"], "busy");
    let (status, _, body) = send(
        &server,
        "POST",
        &format!("/api/kernels/{id}/interrupt"),
        &[],
        Some("{}"),
    )
    .await;
    assert_eq!((status, body), (204, Value::Null));
    let (status, execution) = running.await.expect("request task");
    assert_eq!(status, 200);
    assert_eq!(execution["status"], "interrupted", "{execution}");
    assert_eq!(execution["error"]["ename"], "KeyboardInterrupt");
    let (_, _, kernel) = send(&server, "GET", &format!("/api/kernels/{id}"), &[], None).await;
    assert_eq!(kernel["execution_state"], "idle");
    assert_eq!(server.execute(&id, "'ok'").await["status"], "ok");
    // Interrupting an idle kernel answers the same, with or without a body.
    let (status, _, _) = send(
        &server,
        "POST",
        &format!("/api/kernels/{id}/interrupt"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(native_state(&server, &id).await, "idle");
}

#[tokio::test]
async fn restart_keeps_the_id_and_loses_the_state() {
    let server = TestServer::start();
    let id = start_kernel(&server).await;
    server.execute(&id, "x = 41").await;
    assert_eq!(
        server.execute(&id, "x + 1").await["result"]["text/plain"],
        "42"
    );
    let (status, _, kernel) = send(
        &server,
        "POST",
        &format!("/api/kernels/{id}/restart"),
        &[],
        Some("{}"),
    )
    .await;
    assert_eq!(status, 200, "{kernel}");
    assert_eq!(kernel_id(&kernel), id);
    assert_eq!(kernel["execution_state"], "idle");
    let execution = server.execute(&id, "x").await;
    assert_eq!(execution["error"]["ename"], "NameError", "{execution}");
    assert_eq!(native_state(&server, &id).await, "idle");
}

#[tokio::test]
async fn sessions_are_created_found_renamed_and_deleted() {
    let server = TestServer::start();
    let session = create_session(
        &server,
        json!({"path": "work/nb.ipynb", "type": "notebook", "name": "nb"}),
    )
    .await;
    assert_eq!(
        keys_of(&session),
        ["id", "kernel", "name", "notebook", "path", "type"]
    );
    assert_eq!(session["path"], "work/nb.ipynb");
    assert_eq!(session["name"], "nb");
    assert_eq!(session["type"], "notebook");
    assert_eq!(
        session["notebook"],
        json!({"path": "work/nb.ipynb", "name": "nb"})
    );
    let id = session["id"].as_str().expect("id").to_owned();
    let kernel = kernel_id(&session["kernel"]);
    assert_ne!(id, kernel, "a session id of its own");
    // The kernel is a corral session carrying the Jupyter session.
    let (_, native) = server.get(&format!("/v1/sessions/{kernel}")).await;
    assert_eq!(native["state"], "idle");
    assert_eq!(
        native["metadata"]["jupyter"],
        json!({"session_id": id, "path": "work/nb.ipynb", "name": "nb", "type": "notebook"})
    );

    // Same path: the existing session, unchanged, still 201.
    let again = create_session(
        &server,
        json!({"path": "work/nb.ipynb", "type": "console", "name": "other", "kernel": {"name": "python3"}}),
    )
    .await;
    assert_eq!(again, session);
    let (status, _, listed) = send(&server, "GET", "/api/sessions", &[], None).await;
    assert_eq!((status, listed), (200, json!([session])));
    let (status, _, got) = send(&server, "GET", &format!("/api/sessions/{id}"), &[], None).await;
    assert_eq!((status, &got), (200, &session));

    // Another type: no notebook member; no name: null.
    let console = create_session(&server, json!({"path": "c1", "type": "console"})).await;
    assert_eq!(console["name"], Value::Null);
    assert!(console.get("notebook").is_none(), "{console}");
    assert_ne!(kernel_id(&console["kernel"]), kernel);

    // PATCH: {} changes nothing; rename and move; change the type.
    let path = format!("/api/sessions/{id}");
    let (status, _, same) = send(&server, "PATCH", &path, &[], Some("{}")).await;
    assert_eq!((status, &same), (200, &session));
    let (status, _, moved) = send(
        &server,
        "PATCH",
        &path,
        &[],
        Some(r#"{"name": "renamed", "path": "work/moved.ipynb"}"#),
    )
    .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(
        (&moved["id"], &moved["path"], &moved["name"], &moved["type"]),
        (
            &json!(id),
            &json!("work/moved.ipynb"),
            &json!("renamed"),
            &json!("notebook")
        )
    );
    assert_eq!(
        moved["notebook"],
        json!({"path": "work/moved.ipynb", "name": "renamed"})
    );
    assert_eq!(kernel_id(&moved["kernel"]), kernel, "same kernel");
    let (status, _, file) = send(
        &server,
        "PATCH",
        &path,
        &[],
        Some(r#"{"type": "file", "name": null}"#),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (&file["type"], &file["name"]),
        (&json!("file"), &Value::Null)
    );
    assert!(file.get("notebook").is_none());
    // The legacy notebook body on PATCH sets the path and the type.
    let (_, _, legacy) = send(
        &server,
        "PATCH",
        &path,
        &[],
        Some(r#"{"notebook": {"path": "work/legacy.ipynb"}}"#),
    )
    .await;
    assert_eq!(
        (&legacy["path"], &legacy["type"]),
        (&json!("work/legacy.ipynb"), &json!("notebook"))
    );
    // Moving onto another session's path is refused.
    let (status, _, body) = send(&server, "PATCH", &path, &[], Some(r#"{"path": "c1"}"#)).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("c1")));
    // The old path is free again.
    let fresh = create_session(
        &server,
        json!({"path": "work/nb.ipynb", "type": "notebook"}),
    )
    .await;
    assert_ne!(fresh["id"], json!(id));

    let (status, _, body) = send(&server, "DELETE", &path, &[], None).await;
    assert_eq!((status, body), (204, Value::Null));
    assert_eq!(
        native_state(&server, &kernel).await,
        "closed",
        "the kernel shut down"
    );
    let gone = error(&format!("Session not found: session_id='{id}'"));
    for method in ["GET", "DELETE"] {
        let (status, _, body) = send(&server, method, &path, &[], None).await;
        assert_eq!((status, &body), (404, &gone), "{method}");
    }
    let (status, _, body) = send(&server, "PATCH", &path, &[], Some("{}")).await;
    assert_eq!((status, body), (404, gone));
    let (_, _, listed) = send(&server, "GET", "/api/sessions", &[], None).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn a_session_ends_with_its_kernel() {
    let server = TestServer::start();
    let session = create_session(&server, json!({"path": "a.py", "type": "file"})).await;
    let id = session["id"].as_str().expect("id").to_owned();
    let kernel = kernel_id(&session["kernel"]);
    let (status, _) = server.delete(&format!("/v1/sessions/{kernel}")).await;
    assert_eq!(status, 200);
    let (status, _, body) = send(&server, "GET", &format!("/api/sessions/{id}"), &[], None).await;
    assert_eq!(
        (status, body),
        (404, error(&format!("Session not found: session_id='{id}'")))
    );
    let (_, _, listed) = send(&server, "GET", "/api/sessions", &[], None).await;
    assert_eq!(listed, json!([]));
    // The path can be opened again, on a new kernel.
    let again = create_session(&server, json!({"path": "a.py", "type": "file"})).await;
    assert_ne!(kernel_id(&again["kernel"]), kernel);
}

#[tokio::test]
async fn patch_switches_kernels_and_shuts_the_old_one_down() {
    let server = TestServer::start();
    let session = create_session(&server, json!({"path": "s.ipynb", "type": "notebook"})).await;
    let path = format!("/api/sessions/{}", session["id"].as_str().expect("id"));
    let first = kernel_id(&session["kernel"]);
    server.execute(&first, "marker = 'first'").await;

    // By id: a running kernel the session moves to.
    let second = start_kernel(&server).await;
    let (status, _, moved) = send(
        &server,
        "PATCH",
        &path,
        &[],
        Some(&json!({"kernel": {"id": second}}).to_string()),
    )
    .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(kernel_id(&moved["kernel"]), second);
    assert_eq!(moved["id"], session["id"]);
    assert_eq!(native_state(&server, &first).await, "closed");
    let (_, _, got) = send(&server, "GET", &path, &[], None).await;
    assert_eq!(got, moved);
    // Naming the kernel it already has changes nothing.
    let (status, _, same) = send(
        &server,
        "PATCH",
        &path,
        &[],
        Some(&json!({"kernel": {"id": second}}).to_string()),
    )
    .await;
    assert_eq!((status, &same), (200, &moved));
    assert_eq!(native_state(&server, &second).await, "idle");

    // By name: a new kernel.
    let (status, _, renewed) = send(
        &server,
        "PATCH",
        &path,
        &[],
        Some(r#"{"kernel": {"name": "python3"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{renewed}");
    let third = kernel_id(&renewed["kernel"]);
    assert!(third != first && third != second);
    assert_eq!(native_state(&server, &second).await, "closed");
    assert_eq!(live_kernel_ids(&server).await, vec![third.clone()]);
    let execution = server.execute(&third, "marker").await;
    assert_eq!(
        execution["error"]["ename"], "NameError",
        "a fresh interpreter"
    );

    // Kernels that cannot be used.
    let unknown = "00000000-0000-7000-8000-000000000000";
    for kernel in [unknown, first.as_str(), "a-b-c-d-e", "nope"] {
        let (status, _, body) = send(
            &server,
            "PATCH",
            &path,
            &[],
            Some(&json!({"kernel": {"id": kernel}}).to_string()),
        )
        .await;
        assert_eq!(
            (status, body),
            (400, error(&format!("No such kernel: {kernel}"))),
            "{kernel}"
        );
    }
    let (status, _, body) = send(
        &server,
        "PATCH",
        &path,
        &[],
        Some(r#"{"kernel": {"name": "nope"}}"#),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            501,
            json!({
                "message": "The 'nope' kernel could not be started: 'No such kernel named nope'",
                "short_message": "Error starting kernel nope",
            })
        )
    );
    // A kernel that backs another session is not taken from it.
    let other = create_session(&server, json!({"path": "other", "type": "console"})).await;
    let others_kernel = kernel_id(&other["kernel"]);
    let (status, _, body) = send(
        &server,
        "PATCH",
        &path,
        &[],
        Some(&json!({"kernel": {"id": others_kernel}}).to_string()),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            400,
            error(&format!(
                "Kernel {others_kernel} already backs session {}",
                other["id"].as_str().expect("id")
            ))
        )
    );
    let (_, _, unchanged) = send(&server, "GET", &path, &[], None).await;
    assert_eq!(kernel_id(&unchanged["kernel"]), third);
    assert_eq!(native_state(&server, &others_kernel).await, "idle");
}

#[tokio::test]
async fn create_with_a_kernel_id_and_bad_bodies() {
    let server = TestServer::start();
    // A running kernel without a session is used, no new kernel is started.
    let kernel = start_kernel(&server).await;
    let session = create_session(
        &server,
        json!({"path": "k", "type": "console", "kernel": {"id": kernel, "name": "ignored"}}),
    )
    .await;
    assert_eq!(kernel_id(&session["kernel"]), kernel);
    assert_eq!(live_kernel_ids(&server).await, vec![kernel.clone()]);
    // ... but not when it backs another session.
    let (status, _, body) = send(
        &server,
        "POST",
        "/api/sessions",
        &[],
        Some(&json!({"path": "k2", "type": "console", "kernel": {"id": kernel}}).to_string()),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            400,
            error(&format!(
                "Kernel {kernel} already backs session {}",
                session["id"].as_str().expect("id")
            ))
        )
    );
    // A kernel id that runs nothing starts a kernel (of kernel.name, else the default).
    let started = create_session(
        &server,
        json!({"path": "k3", "type": "console", "kernel": {"id": "00000000-0000-7000-8000-000000000000"}}),
    )
    .await;
    assert_ne!(kernel_id(&started["kernel"]), kernel);
    // The legacy notebook body.
    let legacy = create_session(&server, json!({"notebook": {"path": "legacy.ipynb"}})).await;
    assert_eq!(
        (&legacy["path"], &legacy["type"]),
        (&json!("legacy.ipynb"), &json!("notebook"))
    );
    let by_name = create_session(
        &server,
        json!({"notebook": {"name": "n.ipynb", "path": "p.ipynb"}}),
    )
    .await;
    assert_eq!(by_name["path"], "n.ipynb");

    let (status, _, body) = send(
        &server,
        "POST",
        "/api/sessions",
        &[],
        Some(r#"{"path": "x", "type": "notebook", "kernel": {"name": "nope"}}"#),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            501,
            json!({
                "message": "The 'nope' kernel is not available. Please pick another suitable kernel instead, or install that kernel.",
                "short_message": "nope not found",
            })
        )
    );
    for (body, message) in [
        (None, "No JSON data provided"),
        (Some(""), "No JSON data provided"),
        (Some("null"), "No JSON data provided"),
        (Some("{not json"), "Invalid JSON in body of request"),
        (Some("[]"), "The request body must be a JSON object"),
        (Some("{}"), "Missing field in JSON data: path"),
        (Some(r#"{"path": "x"}"#), "Missing field in JSON data: type"),
        (
            Some(r#"{"type": "notebook"}"#),
            "Missing field in JSON data: path",
        ),
        (
            Some(r#"{"path": 5, "type": "notebook"}"#),
            "Invalid value for path: expected a string",
        ),
        (
            Some(r#"{"path": "x", "type": ["notebook"]}"#),
            "Invalid value for type: expected a string",
        ),
        (
            Some(r#"{"path": "x", "type": "t", "name": 1}"#),
            "Invalid value for name: expected a string",
        ),
        (
            Some(r#"{"path": "x", "type": "t", "kernel": "python3"}"#),
            "Invalid value for kernel: expected an object",
        ),
        (
            Some(r#"{"path": "x", "type": "t", "kernel": {"name": 3}}"#),
            "Invalid value for kernel.name: expected a string",
        ),
        (
            Some(r#"{"path": "x", "type": "t", "kernel": {"id": true}}"#),
            "Invalid value for kernel.id: expected a string",
        ),
        (
            Some(r#"{"notebook": "n.ipynb", "type": "t"}"#),
            "Invalid value for notebook: expected an object",
        ),
    ] {
        let (status, _, reply) = send(&server, "POST", "/api/sessions", &[], body).await;
        assert_eq!((status, reply), (400, error(message)), "{body:?}");
    }
    // Metadata has a size limit; a path beyond it is refused, not stored.
    let (status, _, reply) = send(
        &server,
        "POST",
        "/api/sessions",
        &[],
        Some(&json!({"path": "p".repeat(20_000), "type": "file"}).to_string()),
    )
    .await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["reason"], Value::Null);
    // None of the refused requests started a kernel.
    assert_eq!(live_kernel_ids(&server).await.len(), 4);
}

#[tokio::test]
async fn concurrent_creates_of_one_path_make_one_session() {
    let server = TestServer::start();
    let requests = (0..4).map(|_| {
        send(
            &server,
            "POST",
            "/api/sessions",
            &[],
            Some(r#"{"path": "shared.ipynb", "type": "notebook"}"#),
        )
    });
    let replies = futures::future::join_all(requests).await;
    for (status, _, session) in &replies {
        assert_eq!(*status, 201, "{session}");
        assert_eq!(session, &replies[0].2);
    }
    assert_eq!(live_kernel_ids(&server).await.len(), 1);
}

#[tokio::test]
async fn bad_input_on_every_route() {
    let server = TestServer::start_with_config("[limits]\nmax_code_bytes = 1000\n");
    let kernel = start_kernel(&server).await;
    let session = create_session(&server, json!({"path": "b", "type": "file"})).await;
    let session_id = session["id"].as_str().expect("id").to_owned();
    let unknown = "00000000-0000-7000-8000-000000000000";

    // Ids outside jupyter_server's route pattern match no route; pattern-shaped unknown ids
    // are the handlers' own 404s.
    for id in ["nope", "a-b-c-d", "a-b-c-d-e-f", "x.y-b-c-d-e"] {
        for (method, path) in [
            ("GET", format!("/api/kernels/{id}")),
            ("DELETE", format!("/api/kernels/{id}")),
            ("POST", format!("/api/kernels/{id}/interrupt")),
            ("POST", format!("/api/kernels/{id}/restart")),
            ("GET", format!("/api/sessions/{id}")),
            ("PATCH", format!("/api/sessions/{id}")),
            ("DELETE", format!("/api/sessions/{id}")),
        ] {
            let (status, _, body) = send(&server, method, &path, &[], Some("{}")).await;
            assert_eq!((status, body), (404, error("Not Found")), "{method} {path}");
        }
    }
    for id in ["a-b-c-d-e", unknown] {
        for (method, path) in [
            ("GET", format!("/api/kernels/{id}")),
            ("DELETE", format!("/api/kernels/{id}")),
            ("POST", format!("/api/kernels/{id}/interrupt")),
            ("POST", format!("/api/kernels/{id}/restart")),
        ] {
            let (status, _, body) = send(&server, method, &path, &[], None).await;
            assert_eq!(
                (status, body),
                (404, error(&format!("Kernel does not exist: {id}"))),
                "{method} {path}"
            );
        }
        for (method, body) in [("GET", None), ("PATCH", Some("{}")), ("DELETE", None)] {
            let path = format!("/api/sessions/{id}");
            let (status, _, reply) = send(&server, method, &path, &[], body).await;
            assert_eq!(
                (status, reply),
                (404, error(&format!("Session not found: session_id='{id}'"))),
                "{method} {path}"
            );
        }
    }
    // A session id is not a kernel id, nor the other way round.
    let (status, _, _) = send(
        &server,
        "GET",
        &format!("/api/kernels/{session_id}"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, _) = send(
        &server,
        "GET",
        &format!("/api/sessions/{kernel}"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 404);

    // Bodies of POST /api/kernels (which may be absent or null).
    for body in ["", "null", "{}"] {
        let (status, _, reply) = send(&server, "POST", "/api/kernels", &[], Some(body)).await;
        assert_eq!(status, 201, "{body:?}: {reply}");
    }
    for (body, message) in [
        ("{nope", "Invalid JSON in body of request"),
        ("\"python3\"", "The request body must be a JSON object"),
        (
            r#"{"name": 3}"#,
            "Invalid value for name: expected a string",
        ),
        (
            r#"{"path": {}}"#,
            "Invalid value for path: expected a string",
        ),
        (
            r#"{"env": "A=1"}"#,
            "Invalid value for env: expected an object",
        ),
        (
            r#"{"env": {"A": 1}}"#,
            "Invalid value for env: expected an object of strings",
        ),
        (
            r#"{"kernel_id": 7}"#,
            "Invalid value for kernel_id: expected a string",
        ),
    ] {
        let (status, _, reply) = send(&server, "POST", "/api/kernels", &[], Some(body)).await;
        assert_eq!((status, reply), (400, error(message)), "{body}");
    }
    // Bodies of PATCH /api/sessions/{id}.
    let path = format!("/api/sessions/{session_id}");
    for (body, message) in [
        (None, "No JSON data provided"),
        (Some("null"), "No JSON data provided"),
        (Some("{nope"), "Invalid JSON in body of request"),
        (Some("[1]"), "The request body must be a JSON object"),
        (
            Some(r#"{"path": 1}"#),
            "Invalid value for path: expected a string",
        ),
        (
            Some(r#"{"type": {}}"#),
            "Invalid value for type: expected a string",
        ),
        (
            Some(r#"{"name": false}"#),
            "Invalid value for name: expected a string",
        ),
        (
            Some(r#"{"kernel": []}"#),
            "Invalid value for kernel: expected an object",
        ),
        (
            Some(r#"{"kernel": {"id": 1}}"#),
            "Invalid value for kernel.id: expected a string",
        ),
    ] {
        let (status, _, reply) = send(&server, "PATCH", &path, &[], body).await;
        assert_eq!((status, reply), (400, error(message)), "{body:?}");
    }
    let (_, _, unchanged) = send(&server, "GET", &path, &[], None).await;
    assert_eq!(unchanged, session);

    // Bodies past the server's limit.
    let (_, info) = server.get("/v1/info").await;
    let limit = info["limits"]["max_request_body_bytes"]
        .as_u64()
        .expect("limit") as usize;
    let huge = json!({"path": "x".repeat(limit + 1), "type": "file"}).to_string();
    for (method, path) in [("POST", "/api/sessions"), ("POST", "/api/kernels")] {
        let (status, _, reply) = send(&server, method, path, &[], Some(&huge)).await;
        assert_eq!(
            (status, reply),
            (413, error("The request body is too large")),
            "{method} {path}"
        );
    }

    // Methods a route does not have.
    for (method, path) in [
        ("PUT", "/api/kernels".to_owned()),
        ("DELETE", "/api/sessions".to_owned()),
        ("POST", "/api/kernelspecs".to_owned()),
        ("POST", "/api".to_owned()),
        ("PATCH", format!("/api/kernels/{kernel}")),
        ("GET", format!("/api/kernels/{kernel}/restart")),
        ("POST", format!("/api/sessions/{session_id}")),
    ] {
        let (status, _, reply) = send(&server, method, &path, &[], None).await;
        assert_eq!(
            (status, reply),
            (405, error("Method Not Allowed")),
            "{method} {path}"
        );
    }
    assert_eq!(native_state(&server, &kernel).await, "idle");
}

#[tokio::test]
async fn quotas_answer_429() {
    let server = TestServer::start_with_config("[limits]\nmax_sessions_per_tenant = 1\n");
    start_kernel(&server).await;
    let (status, _, body) = send(&server, "POST", "/api/kernels", &[], None).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["reason"], Value::Null);
    assert!(body["message"]
        .as_str()
        .is_some_and(|m| m.contains("quota")));
    let (status, _, body) = send(
        &server,
        "POST",
        "/api/sessions",
        &[],
        Some(r#"{"path": "q", "type": "file"}"#),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    let (_, _, sessions) = send(&server, "GET", "/api/sessions", &[], None).await;
    assert_eq!(sessions, json!([]));
}

#[tokio::test]
async fn tokens_are_corral_keys_and_tenants_are_apart() {
    let server = TestServer::start();
    let alice = server.corral_key(&["--scope", "tenant", "--tenant", "alice"]);
    let bob = server.corral_key(&["--scope", "tenant", "--tenant", "bob"]);
    let as_alice = format!("token {alice}");
    let alice_headers = [("authorization", as_alice.as_str())];
    let as_bob = format!("token {bob}");
    let bob_headers = [("authorization", as_bob.as_str())];

    // Without a usable key: 403 everywhere but /api.
    let forbidden = error("Forbidden");
    for headers in [
        &[][..],
        &[("authorization", "token ")][..],
        &[("authorization", "token wrong")][..],
        &[("x-api-key", "corral_nothing_here")][..],
    ] {
        for (method, path, body) in [
            ("GET", "/api/kernels", None),
            ("POST", "/api/kernels", None),
            ("GET", "/api/sessions", None),
            (
                "POST",
                "/api/sessions",
                Some(r#"{"path": "p", "type": "file"}"#),
            ),
            ("GET", "/api/kernelspecs", None),
            ("GET", "/api/kernelspecs/python3", None),
            ("GET", "/api/status", None),
        ] {
            let (status, _, reply) = send(&server, method, path, headers, body).await;
            assert_eq!(
                (status, &reply),
                (403, &forbidden),
                "{method} {path} {headers:?}"
            );
        }
    }
    let (status, _, _) = send(&server, "GET", "/api?token=wrong", &[], None).await;
    assert_eq!(status, 200, "the version is public, as in jupyter_server");

    // The key as a token header, a query parameter, a bearer token or X-API-Key.
    let session = {
        let (status, _, session) = send(
            &server,
            "POST",
            "/api/sessions",
            &alice_headers,
            Some(r#"{"path": "secret.ipynb", "type": "notebook"}"#),
        )
        .await;
        assert_eq!(status, 201, "{session}");
        session
    };
    let session_path = format!("/api/sessions/{}", session["id"].as_str().expect("id"));
    let kernel = kernel_id(&session["kernel"]);
    let bearer = format!("Bearer {alice}");
    for (path, headers) in [
        (
            session_path.clone(),
            vec![("authorization", as_alice.as_str())],
        ),
        (format!("{session_path}?token={alice}"), vec![]),
        (
            session_path.clone(),
            vec![("authorization", bearer.as_str())],
        ),
        (session_path.clone(), vec![("x-api-key", alice.as_str())]),
    ] {
        let (status, _, reply) = send(&server, "GET", &path, &headers, None).await;
        assert_eq!((status, &reply), (200, &session), "{headers:?}");
    }
    let native = server
        .http
        .get(server.url(&format!("/v1/sessions/{kernel}")))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("get");
    assert_eq!(native.status(), 200, "the kernel is Alice's corral session");

    // Bob sees none of it and reaches none of it.
    let (_, _, listed) = send(&server, "GET", "/api/sessions", &bob_headers, None).await;
    assert_eq!(listed, json!([]));
    let (_, _, kernels) = send(&server, "GET", "/api/kernels", &bob_headers, None).await;
    assert_eq!(kernels, json!([]));
    let (_, _, status_of_bob) = send(&server, "GET", "/api/status", &bob_headers, None).await;
    assert_eq!(status_of_bob["kernels"], 0);
    for (method, path, body) in [
        ("GET", session_path.clone(), None),
        ("PATCH", session_path.clone(), Some(r#"{"name": "mine"}"#)),
        ("DELETE", session_path.clone(), None),
        ("GET", format!("/api/kernels/{kernel}"), None),
        ("POST", format!("/api/kernels/{kernel}/interrupt"), None),
        ("POST", format!("/api/kernels/{kernel}/restart"), None),
        ("DELETE", format!("/api/kernels/{kernel}"), None),
    ] {
        let (status, _, reply) = send(&server, method, &path, &bob_headers, body).await;
        assert_eq!(status, 404, "{method} {path}: {reply}");
    }
    // Bob's own session on the same path is his, on a kernel of his.
    let (status, _, bobs) = send(
        &server,
        "POST",
        "/api/sessions",
        &bob_headers,
        Some(
            &json!({"path": "secret.ipynb", "type": "notebook", "kernel": {"id": kernel}})
                .to_string(),
        ),
    )
    .await;
    assert_eq!(status, 201, "{bobs}");
    assert_ne!(bobs["id"], session["id"]);
    assert_ne!(kernel_id(&bobs["kernel"]), kernel);
    let (_, _, still) = send(&server, "GET", &session_path, &alice_headers, None).await;
    assert_eq!(still, session, "Alice's session is untouched");

    // A session-scoped key reaches its own kernel and cannot start kernels.
    let scoped = server.corral_key(&[
        "--scope",
        "session",
        "--tenant",
        "alice",
        "--session",
        &kernel,
    ]);
    let as_scoped = format!("token {scoped}");
    let scoped_headers = [("authorization", as_scoped.as_str())];
    let (status, _, reply) = send(&server, "GET", &session_path, &scoped_headers, None).await;
    assert_eq!((status, reply), (200, session.clone()));
    let (status, _, reply) = send(&server, "POST", "/api/kernels", &scoped_headers, None).await;
    assert_eq!(status, 403, "{reply}");
    assert_eq!(reply["reason"], Value::Null);
}

#[tokio::test]
async fn mounted_elsewhere_the_locations_follow() {
    let server = TestServer::start_with_arguments("", &["--mount", "jupyter=/jupyter"]);
    let (status, _) = server.get("/api/kernels").await;
    assert_eq!(status, 404, "not at the root any more");
    let (status, location, kernel) = send(&server, "POST", "/jupyter/api/kernels", &[], None).await;
    assert_eq!(status, 201, "{kernel}");
    let id = kernel_id(&kernel);
    assert_eq!(location, Some(format!("/jupyter/api/kernels/{id}")));
    let (status, location, session) = send(
        &server,
        "POST",
        "/jupyter/api/sessions",
        &[],
        Some(r#"{"path": "m", "type": "file"}"#),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let session_id = session["id"].as_str().expect("id");
    assert_eq!(
        location,
        Some(format!("/jupyter/api/sessions/{session_id}"))
    );
    let (status, _, got) = send(
        &server,
        "GET",
        &format!("/jupyter/api/sessions/{session_id}"),
        &[],
        None,
    )
    .await;
    assert_eq!((status, got), (200, session));
}
