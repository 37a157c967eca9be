//! The python_rce surface (seed 000): shapes, status codes and FastAPI-style errors.

mod support;

use serde_json::json;
use support::TestServer;

#[tokio::test]
async fn the_seed_flow() {
    let server = TestServer::start();
    let (status, created) = server
        .post_raw("/sessions/create", "application/json", "")
        .await;
    assert_eq!(status, 200);
    let session_id = created["session_id"]
        .as_str()
        .expect("session_id")
        .to_owned();
    assert!(uuid::Uuid::parse_str(&session_id).is_ok());
    assert_eq!(created.as_object().map(|object| object.len()), Some(1));

    let (status, listed) = server.get("/sessions/list").await;
    assert_eq!(status, 200);
    assert_eq!(listed, json!({"sessions": [{"session_id": session_id}]}));

    let execute = |code: &str| json!({"session_id": session_id, "code": code});
    let (status, printed) = server
        .post("/sessions/execute", execute("print('hi')"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        printed,
        json!({"result": "Success", "output": "hi\n", "error": ""})
    );
    let (_, value) = server
        .post("/sessions/execute", execute("x = 41\nx + 1"))
        .await;
    assert_eq!(
        value,
        json!({"result": "Success", "output": "Out[2]: 42\n", "error": ""})
    );
    let (status, failed) = server.post("/sessions/execute", execute("1/0")).await;
    assert_eq!(status, 200, "a Python error is still a 200");
    assert_eq!(failed["result"], "Error");
    assert_eq!(failed["error"], "division by zero");
    let output = failed["output"].as_str().expect("output");
    assert!(
        output.starts_with("Traceback (most recent call last):"),
        "{output}"
    );
    assert!(
        output.ends_with("ZeroDivisionError: division by zero\n"),
        "{output}"
    );
    let (_, stderr) = server
        .post(
            "/sessions/execute",
            execute("import os\nos.system('echo shell >&2')"),
        )
        .await;
    assert_eq!(stderr["output"], "shell\nOut[4]: 0\n");

    let (status, closed) = server
        .post("/sessions/close", json!({"session_id": session_id}))
        .await;
    assert_eq!(
        (status, closed),
        (200, json!({"message": "Session closed"}))
    );
    let (_, listed) = server.get("/sessions/list").await;
    assert_eq!(listed, json!({"sessions": []}));
    let (status, gone) = server.post("/sessions/execute", execute("1")).await;
    assert_eq!(status, 404);
    assert_eq!(
        gone,
        json!({"session_id": session_id, "error": "Session not found"})
    );
    let (status, again) = server
        .post("/sessions/close", json!({"session_id": session_id}))
        .await;
    assert_eq!(
        (status, again),
        (
            404,
            json!({"session_id": session_id, "error": "Session not found"})
        )
    );
}

#[tokio::test]
async fn unknown_sessions_are_404_with_the_id() {
    let server = TestServer::start();
    for id in ["00000000-0000-4000-8000-000000000000", "nope"] {
        let (status, body) = server
            .post("/sessions/execute", json!({"session_id": id, "code": "1"}))
            .await;
        assert_eq!(
            (status, body),
            (404, json!({"session_id": id, "error": "Session not found"}))
        );
        let (status, body) = server
            .post("/sessions/close", json!({"session_id": id}))
            .await;
        assert_eq!(
            (status, body),
            (404, json!({"session_id": id, "error": "Session not found"}))
        );
    }
}

#[tokio::test]
async fn validation_errors_use_fastapi_shapes() {
    let server = TestServer::start();
    let (status, body) = server.post("/sessions/execute", json!({"code": "1"})).await;
    assert_eq!(status, 422);
    assert_eq!(
        body,
        json!({"detail": [{"type": "missing", "loc": ["body", "session_id"], "msg": "Field required", "input": {"code": "1"}}]})
    );
    let (status, body) = server
        .post("/sessions/execute", json!({"session_id": 5, "code": ["x"]}))
        .await;
    assert_eq!(status, 422);
    let types: Vec<&str> = body["detail"]
        .as_array()
        .expect("detail")
        .iter()
        .map(|item| item["type"].as_str().expect("type"))
        .collect();
    assert_eq!(types, ["string_type", "string_type"]);
    assert_eq!(body["detail"][1]["loc"], json!(["body", "code"]));

    let (status, body) = server
        .post_raw("/sessions/close", "application/json", "{\"session_id\": ")
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["type"], "json_invalid");
    let (status, body) = server
        .post_raw("/sessions/close", "application/json", "")
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["loc"], json!(["body"]));
    let (status, body) = server.post("/sessions/close", json!([1])).await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["type"], "model_attributes_type");

    let (_, created) = server
        .post_raw("/sessions/create", "application/json", "")
        .await;
    let session_id = created["session_id"].as_str().expect("id");
    let (status, body) = server
        .post(
            "/sessions/execute",
            json!({"session_id": session_id, "code": "1\u{0}"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["detail"][0]["loc"], json!(["body", "code"]));
    // Extra fields are ignored, as pydantic does.
    let (status, body) = server
        .post(
            "/sessions/execute",
            json!({"session_id": session_id, "code": "2", "environment_variables": {}}),
        )
        .await;
    assert_eq!((status, &body["result"]), (200, &json!("Success")));
}

#[tokio::test]
async fn dead_sessions_report_why() {
    let server = TestServer::start();
    let (_, created) = server
        .post_raw("/sessions/create", "application/json", "")
        .await;
    let session_id = created["session_id"].as_str().expect("id").to_owned();
    let (_, died) = server
        .post(
            "/sessions/execute",
            json!({"session_id": session_id, "code": "import os\nos._exit(3)"}),
        )
        .await;
    assert_eq!(died["result"], "Error");
    let (status, body) = server
        .post(
            "/sessions/execute",
            json!({"session_id": session_id, "code": "1"}),
        )
        .await;
    assert_eq!(status, 404);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|error| error.starts_with("Session not found: it died")),
        "{body}"
    );
}

#[tokio::test]
async fn the_mount_point_is_configurable() {
    let server = TestServer::start_with_config("[mounts]\npython_rce = \"/rce\"\n");
    let (status, _) = server
        .post_raw("/rce/sessions/create", "application/json", "")
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .post_raw("/sessions/create", "application/json", "")
        .await;
    assert_eq!(status, 404);
    let (_, document) = server.get("/openapi.json").await;
    assert!(document["paths"]["/rce/sessions/create"].is_object());
}
