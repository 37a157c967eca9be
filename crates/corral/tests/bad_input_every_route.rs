//! Bad input on every route of every surface, walked from `/openapi.json` so no route escapes:
//! a missing key, a wrong key, unknown ids, a malformed JSON body, wrongly typed bodies and
//! a method the path does not take.
//! Each must get a 4xx (never a 5xx, never success without a key) whose body is JSON in the
//! error shape of the route's own API (known by its OpenAPI tag). The surfaces' own tests
//! check the exact status and message of each case; this one proves nothing is left out.

mod support;

use serde_json::{json, Value};
use support::TestServer;

/// Whether `body` is an error in the shape of the API tagged `tag`; `None` for a tag this
/// test does not know yet (a new surface must teach it its shape).
fn has_error_shape(tag: &str, body: &Value) -> Option<bool> {
    let text = |key: &str| body[key].is_string();
    Some(match tag {
        // problem+json
        "sessions" | "executions" | "files" | "keys" | "system" => {
            text("type") && text("title") && body["status"].is_u64() && text("code")
        }
        // FastAPI: {"detail": "..."} or {"detail": [{loc, msg, type}]}, or the documented
        // {"session_id", "error"} for unknown sessions.
        "python_rce" => {
            text("detail")
                || body["detail"].as_array().is_some_and(|items| {
                    items
                        .iter()
                        .all(|item| item["loc"].is_array() && item["msg"].is_string())
                })
                || (text("session_id") && text("error"))
        }
        "e2b" | "e2b_api" => body["code"].is_u64() && text("message"),
        // E2B's {code, message} on REST routes; Connect's {code: "not_found", message} on
        // the envd services.
        "e2b_sandbox" => (body["code"].is_u64() || text("code")) && text("message"),
        // ErrorList
        "agents" => body["errors"].as_array().is_some_and(|errors| {
            !errors.is_empty()
                && errors
                    .iter()
                    .all(|error| error["code"].is_string() && error["message"].is_string())
        }),
        // jupyter_server: {"message", "reason"}, or {"message", "short_message"} for a 501.
        "jupyter" => text("message") && (body.get("reason").is_some() || text("short_message")),
        // ErrorContainer, with the HTTP status and the request's id.
        "qiskit" => {
            body["errors"].as_array().is_some_and(|errors| {
                !errors.is_empty()
                    && errors.iter().all(|error| {
                        error["code"].is_string()
                            && error["message"].is_string()
                            && error["more_info"].is_string()
                    })
            }) && text("trace")
                && body["status_code"].is_u64()
        }
        _ => return None,
    })
}

fn tag_of(operation: &Value) -> String {
    operation["tags"][0].as_str().unwrap_or("").to_owned()
}

/// The route with every path parameter replaced by `value`.
fn filled(path: &str, value: &str) -> String {
    let mut filled = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        filled.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .map_or(rest.len(), |end| start + end + 1);
        filled.push_str(value);
        rest = &rest[end..];
    }
    filled.push_str(rest);
    filled
}

struct Sent {
    status: u16,
    body: Value,
}

async fn send(
    server: &TestServer,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> Sent {
    let (status, body) = server.send(method, path, key, body).await;
    Sent { status, body }
}

#[tokio::test]
async fn every_route_answers_bad_input_in_its_own_error_shape() {
    let server = TestServer::start();
    let issued = send(
        &server,
        "POST",
        "/v1/keys",
        None,
        Some(&json!({"scope": "admin"}).to_string()),
    )
    .await;
    assert_eq!(issued.status, 201, "{}", issued.body);
    let admin = issued.body["key"].as_str().expect("key").to_owned();

    let document = send(&server, "GET", "/openapi.json", None, None).await.body;
    // `/api` is jupyter_server's version, public there too.
    let public = ["/healthz", "/openapi.json", "/api"];
    let unknown_ids = [
        "0190b6a1-7a6e-7cc2-8c4e-0123456789ab".to_owned(),
        "not-an-id".to_owned(),
    ];
    let mut checked = 0;
    for (path, item) in document["paths"].as_object().expect("paths") {
        let operations = item.as_object().expect("item");
        // A method the path does not take: 405 in the path's own API's shape.
        let unsupported = ["PATCH", "PUT", "DELETE", "POST", "GET"]
            .into_iter()
            .find(|method| !operations.contains_key(&method.to_lowercase()));
        if let Some(method) = unsupported {
            let tag = operations.values().next().map(tag_of).unwrap_or_default();
            let route = format!("{method} {path} ({tag})");
            let sent = send(
                &server,
                method,
                &filled(path, &unknown_ids[0]),
                Some(&admin),
                None,
            )
            .await;
            assert_eq!(sent.status, 405, "{route}: {}", sent.body);
            check(&route, "an unsupported method", &tag, &sent, false);
            checked += 1;
        }
        for (method, operation) in operations {
            let method = method.to_uppercase();
            let tag = tag_of(operation);
            let route = format!("{method} {path} ({tag})");
            let has_body = ["POST", "PUT", "PATCH"].contains(&method.as_str());
            let mut cases: Vec<(String, Option<&str>, Option<String>)> = Vec::new();
            let concrete = filled(path, &unknown_ids[0]);
            if !public.contains(&path.as_str()) {
                cases.push(("no key".into(), None, None));
                cases.push(("a wrong key".into(), Some("corral_wrong"), None));
            }
            if path.contains('{') {
                for id in &unknown_ids {
                    cases.push((
                        format!("unknown id {id}"),
                        Some(&admin),
                        Some(filled(path, id)),
                    ));
                }
            }
            let mut bodies: Vec<(&str, &str)> = Vec::new();
            if has_body {
                bodies = vec![
                    ("malformed JSON", "{not json"),
                    ("a JSON array", "[1, 2]"),
                    (
                        "wrongly typed fields",
                        r#"{"code": 5, "session_id": 7, "codeSnippetID": 1, "editEnabled": "yes", "name": 3, "metadata": [], "path": 1, "type": 2, "kernel": 3, "mode": 4, "accepting_jobs": "no", "scope": 9}"#,
                    ),
                ];
            }
            for (label, key, target) in cases {
                let target = target.unwrap_or_else(|| concrete.clone());
                let body = has_body.then_some("{}");
                let sent = send(&server, &method, &target, key, body).await;
                check(
                    &route,
                    &label,
                    &tag,
                    &sent,
                    key.is_none() || label == "a wrong key",
                );
                checked += 1;
            }
            for (label, body) in bodies {
                let sent = send(&server, &method, &concrete, Some(&admin), Some(body)).await;
                check(&route, label, &tag, &sent, false);
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "only {checked} cases");
    assert!(
        !server.log().contains("panicked"),
        "a handler panicked:\n{}",
        server.log()
    );
}

fn check(route: &str, case: &str, tag: &str, sent: &Sent, must_refuse: bool) {
    assert!(
        sent.status < 500,
        "{route} with {case}: {} {}",
        sent.status,
        sent.body
    );
    if must_refuse {
        assert!(
            sent.status == 401 || sent.status == 403,
            "{route} with {case}: {} {}",
            sent.status,
            sent.body
        );
    }
    if sent.status >= 400 {
        let shaped = has_error_shape(tag, &sent.body).unwrap_or_else(|| {
            panic!("{route}: teach this test the error shape of the {tag:?} API")
        });
        assert!(
            shaped,
            "{route} with {case}: {} is not a {tag} error: {}",
            sent.status, sent.body
        );
    }
}
