//! Regressions for what schemathesis (`tests/fuzz/run.py`) found: answers whose status or
//! body `/openapi.json` did not describe. Each test provokes the answer and checks the
//! document describes it.

mod support;

use serde_json::{json, Value};
use support::TestServer;

/// The operation `method path` of the server's OpenAPI document.
async fn operation(server: &TestServer, method: &str, path: &str) -> Value {
    let (status, document) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    document["paths"][path][method].clone()
}

async fn assert_documented(server: &TestServer, method: &str, path: &str, status: u16) {
    let operation = operation(server, method, path).await;
    assert!(
        operation["responses"].get(status.to_string()).is_some(),
        "{method} {path} answers {status}, not in its responses: {}",
        operation["responses"]
    );
}

/// Every native operation that takes a JSON body answers malformed JSON with a documented
/// 400 (schemathesis found PATCH /v1/sessions/{id}, POST .../refresh and POST /v1/keys
/// without it).
#[tokio::test]
async fn malformed_json_is_a_documented_400_on_every_native_json_route() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let (_, document) = server.get("/openapi.json").await;
    let mut checked = Vec::new();
    for (template, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("item") {
            let native = operation["tags"][0]
                .as_str()
                .is_some_and(|tag| ["sessions", "executions", "keys"].contains(&tag));
            let json_body = operation["requestBody"]["content"]
                .get("application/json")
                .is_some();
            if !native || !json_body {
                continue;
            }
            let path = template.replace("{id}", &id);
            let (status, problem) = server
                .send(&method.to_uppercase(), &path, None, Some("\u{0}"))
                .await;
            assert_eq!(
                (status, &problem["code"]),
                (400, &json!("malformed_json")),
                "{method} {path}"
            );
            assert!(
                operation["responses"].get("400").is_some(),
                "{method} {template} answers 400, not in its responses"
            );
            checked.push(format!("{method} {template}"));
        }
    }
    for expected in [
        "patch /v1/sessions/{id}",
        "post /v1/sessions/{id}/refresh",
        "post /v1/keys",
        "post /v1/sessions",
        "post /v1/sessions/{id}/executions",
    ] {
        assert!(checked.iter().any(|route| route == expected), "{checked:?}");
    }
}

#[tokio::test]
async fn deleting_a_file_of_an_ended_session_is_a_documented_409() {
    let server = TestServer::start();
    let id = server.create_session().await;
    server.delete(&format!("/v1/sessions/{id}")).await;
    let (status, problem) = server
        .delete(&format!("/v1/sessions/{id}/files/notes.txt"))
        .await;
    assert_eq!((status, &problem["state"]), (409, &json!("closed")));
    assert_documented(&server, "delete", "/v1/sessions/{id}/files/{path}", 409).await;
}

#[tokio::test]
async fn python_rce_validation_errors_match_their_schema() {
    let server = TestServer::start();
    // No body at all: FastAPI's `{"detail": [{"loc": ["body"], "input": null, ...}]}`.
    let (status, body) = server.send("POST", "/sessions/execute", None, None).await;
    assert_eq!(status, 422, "{body}");
    let item = &body["detail"][0];
    assert_eq!(item["loc"], json!(["body"]));
    assert_eq!(item["input"], Value::Null);
    let (_, document) = server.get("/openapi.json").await;
    let schema = &document["components"]["schemas"]["ValidationError"]["properties"];
    // The schema once said `loc` items and `input` were objects; strings and null are what
    // FastAPI (and corral) send.
    assert_ne!(schema["loc"]["items"]["type"], "object", "{schema}");
    assert!(
        schema["input"].get("type").is_none() || schema["input"]["type"] != "object",
        "{schema}"
    );
}
