//! The E2B surface (seed 001) at `/e2b`: exact `Session` shapes, 201/204 status codes,
//! `{code, message}` errors, the `api_key` query parameter.

mod support;

use serde_json::json;
use support::TestServer;

#[tokio::test]
async fn sessions_are_created_listed_refreshed_and_deleted() {
    let server = TestServer::start();
    let (status, session) = server
        .post(
            "/e2b/sessions",
            json!({"editEnabled": false, "codeSnippetID": "snip2"}),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    let object = session.as_object().expect("object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["clientID", "codeSnippetID", "editEnabled", "sessionID"]
    );
    assert_eq!(session["codeSnippetID"], "snip2");
    assert_eq!(session["editEnabled"], false);
    assert_eq!(session["clientID"], "default");
    let id = session["sessionID"].as_str().expect("id").to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok());

    // The same session is a corral session on the native API.
    let (_, native) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(native["state"], "idle");
    assert_eq!(
        server.execute(&id, "1 + 1").await["result"]["text/plain"],
        "2"
    );

    let (status, listed) = server.get("/e2b/sessions?api_key=anything").await;
    assert_eq!(status, 200);
    assert_eq!(listed, json!([session]));

    let refresh = server
        .http
        .post(server.url(&format!("/e2b/sessions/{id}/refresh")))
        .header("content-type", "application/json")
        .send()
        .await
        .expect("refresh");
    assert_eq!(refresh.status(), 204);
    assert_eq!(refresh.text().await.expect("body"), "");

    let delete = server
        .http
        .delete(server.url(&format!("/e2b/sessions/{id}?api_key=x")))
        .header("content-type", "application/json")
        .send()
        .await
        .expect("delete");
    assert_eq!(delete.status(), 204);
    let (_, native) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(native["state"], "closed", "closed everywhere");
    let (_, listed) = server.get("/e2b/sessions?api_key=anything").await;
    assert_eq!(listed, json!([]));
    let (status, error) = server
        .post(&format!("/e2b/sessions/{id}/refresh"), json!({}))
        .await;
    assert_eq!(
        (status, error),
        (404, json!({"code": 404, "message": "session not found"}))
    );
}

#[tokio::test]
async fn bad_bodies_and_unknown_ids() {
    let server = TestServer::start();
    for body in [
        json!({}),
        json!({"codeSnippetID": 5}),
        json!({"codeSnippetID": "a", "editEnabled": "true"}),
    ] {
        let (status, error) = server.post("/e2b/sessions", body.clone()).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["code"], 400);
        assert!(error["message"].is_string());
    }
    let (status, _) = server
        .post_raw("/e2b/sessions", "application/json", "{not json")
        .await;
    assert_eq!(status, 400);
    for id in ["00000000-0000-7000-8000-000000000000", "nope"] {
        let (status, error) = server
            .delete(&format!("/e2b/sessions/{id}?api_key=k"))
            .await;
        assert_eq!((status, &error["code"]), (404, &json!(404)), "{id}");
    }
}

#[tokio::test]
async fn the_api_key_parameter_is_a_corral_key() {
    let server = TestServer::start();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args([
            "keys",
            "create",
            "--scope",
            "tenant",
            "--tenant",
            "acme",
            "--data-dir",
        ])
        .arg(&server.data_dir)
        .output()
        .expect("corral keys create");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let key = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let (status, error) = server.get("/e2b/sessions?api_key=wrong").await;
    assert_eq!((status, &error["code"]), (401, &json!(401)));
    let (status, _) = server.get("/e2b/sessions").await;
    assert_eq!(status, 401);
    let (status, session) = server
        .post(
            &format!("/e2b/sessions?api_key={key}"),
            json!({"codeSnippetID": "s"}),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["clientID"], "acme");
    assert!(
        !session.to_string().contains(&key),
        "the key is never echoed"
    );
    let (status, listed) = server.get(&format!("/e2b/sessions?api_key={key}")).await;
    assert_eq!((status, listed.as_array().map(Vec::len)), (200, Some(1)));
}

#[tokio::test]
async fn quotas_answer_429_in_e2b_shape() {
    let server = TestServer::start_with_config("[limits]\nmax_sessions_per_tenant = 1\n");
    let (status, _) = server
        .post("/e2b/sessions", json!({"codeSnippetID": "a"}))
        .await;
    assert_eq!(status, 201);
    let (status, error) = server
        .post("/e2b/sessions", json!({"codeSnippetID": "b"}))
        .await;
    assert_eq!((status, &error["code"]), (429, &json!(429)), "{error}");
}
