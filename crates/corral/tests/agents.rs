//! The agent sessions surface (seed 004, schema inferred) at `/agents`: idempotent `PUT` by
//! identifier with a session key minted once, `{"session": …}` containers, bare arrays,
//! `ErrorList` errors, the minted key's reach on the native API, tenancy and limits.

mod support;

use serde_json::{json, Value};
use support::TestServer;

/// Sends `method path` with an optional bearer key and an optional raw body.
async fn send(
    server: &TestServer,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<String>,
) -> (u16, Value) {
    server.send(method, path, key, body.as_deref()).await
}

async fn put(
    server: &TestServer,
    identifier: &str,
    key: Option<&str>,
    body: Value,
) -> (u16, Value) {
    send(
        server,
        "PUT",
        &format!("/agents/sessions/{identifier}"),
        key,
        Some(body.to_string()),
    )
    .await
}

/// Asserts an `ErrorList` with one error of `code`, and the status.
fn assert_error(reply: &(u16, Value), status: u16, code: &str) {
    let (got, body) = reply;
    assert_eq!(*got, status, "{body}");
    let errors = body["errors"].as_array().expect("ErrorList");
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["code"], code, "{body}");
    assert!(errors[0]["message"].is_string(), "{body}");
    assert_eq!(
        body.as_object().map(|object| object.len()),
        Some(1),
        "{body}"
    );
}

fn field(value: &Value, name: &str) -> String {
    value[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} in {value}"))
        .to_owned()
}

/// Issues a key through `/v1/keys` (as `by`, or in open mode).
async fn issue(server: &TestServer, by: Option<&str>, body: Value) -> String {
    let (status, issued) = send(server, "POST", "/v1/keys", by, Some(body.to_string())).await;
    assert_eq!(status, 201, "{issued}");
    field(&issued, "key")
}

#[tokio::test]
async fn sessions_are_put_read_listed_and_deleted() {
    let server = TestServer::start();
    let (status, created) = put(
        &server,
        "agent|1",
        None,
        json!({"name": "helper", "description": "does things", "metadata": {"team": "a", "n": 1}}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let session = &created["session"];
    let mut keys: Vec<&str> = session
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "agent_id",
            "api_key",
            "created_at",
            "description",
            "expires_at",
            "identifier",
            "last_activity_at",
            "metadata",
            "name",
            "state"
        ]
    );
    assert_eq!(session["identifier"], "agent|1");
    assert_eq!(session["state"], "idle");
    assert_eq!(session["metadata"], json!({"team": "a", "n": 1}));
    assert_eq!(session["description"], "does things");
    let agent_id = field(session, "agent_id");
    let api_key = field(session, "api_key");
    assert!(api_key.starts_with("corral_"), "{api_key}");
    for stamp in ["created_at", "last_activity_at", "expires_at"] {
        assert!(
            chrono::DateTime::parse_from_rfc3339(&field(session, stamp)).is_ok(),
            "{stamp}: {session}"
        );
    }

    // The same session is a corral session on the native API, with the same expiry.
    let (status, native) = server.get(&format!("/v1/sessions/{agent_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(native["name"], "helper");
    assert_eq!(native["expires_at"], session["expires_at"]);
    assert_eq!(
        server.execute(&agent_id, "6 * 7").await["result"]["text/plain"],
        "42"
    );

    // Minting a session key does not end open mode.
    let (status, _) = server.get("/v1/sessions").await;
    assert_eq!(status, 200, "still open: a session key is not an admin key");

    // A repeat PUT returns the session without a key and without changing it.
    let (status, again) = put(
        &server,
        "agent|1",
        None,
        json!({"metadata": {"other": true}}),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["session"]["agent_id"], agent_id.as_str());
    assert!(again["session"].get("api_key").is_none(), "{again}");
    assert_eq!(again["session"]["metadata"], json!({"team": "a", "n": 1}));
    assert_eq!(again["session"]["state"], "idle");

    let (status, read) = server.get("/agents/sessions/agent%7C1").await;
    assert_eq!(status, 200);
    assert_eq!(read, again, "GET answers what a repeat PUT answers");
    assert!(
        read["session"]["last_activity_at"] != session["last_activity_at"],
        "the execution was activity: {read}"
    );

    let (status, listed) = server.get("/agents/sessions").await;
    assert_eq!(status, 200);
    assert_eq!(listed, json!([read["session"]]));
    // Sessions made elsewhere are not agent sessions.
    server.create_session().await;
    let (_, listed) = server.get("/agents/sessions").await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1));

    let (status, deleted) = server.delete("/agents/sessions/agent%7C1").await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["session"]["agent_id"], agent_id.as_str());
    assert_eq!(deleted["session"]["state"], "closed");
    assert_eq!(deleted["session"]["expires_at"], Value::Null);
    assert!(deleted["session"].get("api_key").is_none());
    let (_, native) = server.get(&format!("/v1/sessions/{agent_id}")).await;
    assert_eq!(native["state"], "closed", "closed everywhere");
    assert_eq!(native["state_reason"], "closed by client");
    assert_error(
        &server.get("/agents/sessions/agent%7C1").await,
        404,
        "session_not_found",
    );
    assert_error(
        &server.delete("/agents/sessions/agent%7C1").await,
        404,
        "session_not_found",
    );
    let (_, listed) = server.get("/agents/sessions").await;
    assert_eq!(listed, json!([]));

    // The identifier is free again: a new session and a new key.
    let (status, renewed) = put(&server, "agent|1", None, json!({})).await;
    assert_eq!(status, 200, "{renewed}");
    assert_ne!(renewed["session"]["agent_id"], agent_id.as_str());
    let new_key = field(&renewed["session"], "api_key");
    assert_ne!(new_key, api_key);
    assert_eq!(renewed["session"]["metadata"], json!({}));
    assert!(renewed["session"].get("name").is_none(), "{renewed}");

    let log = server.log();
    assert!(
        !log.contains(&api_key) && !log.contains(&new_key),
        "keys are never logged"
    );
}

#[tokio::test]
async fn empty_and_absent_bodies_and_unknown_fields_are_accepted() {
    let server = TestServer::start();
    let response = server
        .http
        .put(server.url("/agents/sessions/no-body"))
        .send()
        .await
        .expect("put");
    let (status, created) = support::response(Ok(response)).await;
    assert_eq!(status, 200, "{created}");
    assert!(created["session"]["api_key"].is_string());
    let (status, created) = send(
        &server,
        "PUT",
        "/agents/sessions/blank",
        None,
        Some("  \n".to_owned()),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    // A returned session sent back as the body: its read-only fields are ignored.
    let echoed = created["session"].clone();
    let (status, created) = put(&server, "echoed", None, echoed).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["session"]["identifier"], "echoed");
    assert!(created["session"]["api_key"].is_string());
    let (status, created) = put(
        &server,
        "nulls",
        None,
        json!({"name": null, "metadata": null, "description": null, "x": [1]}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["session"]["metadata"], json!({}));
}

#[tokio::test]
async fn the_minted_key_reaches_its_own_session_only() {
    let server = TestServer::start();
    let (_, first) = put(&server, "first", None, json!({})).await;
    let (_, second) = put(&server, "second", None, json!({})).await;
    let first_id = field(&first["session"], "agent_id");
    let second_id = field(&second["session"], "agent_id");
    let key = field(&first["session"], "api_key");

    let (status, execution) = send(
        &server,
        "POST",
        &format!("/v1/sessions/{first_id}/executions"),
        Some(&key),
        Some(json!({"code": "x = 20\nx + 1"}).to_string()),
    )
    .await;
    assert_eq!(
        (status, &execution["result"]["text/plain"]),
        (200, &json!("21")),
        "{execution}"
    );
    let (status, _) = send(
        &server,
        "GET",
        &format!("/v1/sessions/{second_id}"),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(status, 404, "another session is out of reach");
    let (status, _) = send(
        &server,
        "POST",
        &format!("/v1/sessions/{second_id}/executions"),
        Some(&key),
        Some(json!({"code": "1"}).to_string()),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = send(
        &server,
        "POST",
        "/v1/sessions",
        Some(&key),
        Some("{}".into()),
    )
    .await;
    assert_eq!(status, 403, "a session key cannot create sessions");
    let (status, _) = send(&server, "GET", "/v1/keys", Some(&key), None).await;
    assert_eq!(status, 403, "nor list keys");

    // On this API too: its own session only.
    let (status, listed) = send(&server, "GET", "/agents/sessions", Some(&key), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        listed
            .as_array()
            .expect("array")
            .iter()
            .map(|session| field(session, "agent_id"))
            .collect::<Vec<_>>(),
        vec![first_id.as_str()]
    );
    assert_error(
        &send(&server, "GET", "/agents/sessions/second", Some(&key), None).await,
        404,
        "session_not_found",
    );
    assert_error(
        &put(&server, "third", Some(&key), json!({})).await,
        403,
        "forbidden",
    );
    let (status, same) = put(&server, "first", Some(&key), json!({})).await;
    assert_eq!(status, 200, "{same}");
    assert_eq!(same["session"]["agent_id"], first_id.as_str());
    assert!(same["session"].get("api_key").is_none());
    assert_error(
        &send(
            &server,
            "DELETE",
            "/agents/sessions/first",
            Some(&key),
            None,
        )
        .await,
        403,
        "forbidden",
    );
    let (_, native) = server.get(&format!("/v1/sessions/{first_id}")).await;
    assert_eq!(native["state"], "idle", "a refused delete closes nothing");

    let (status, _) = server.delete("/agents/sessions/first").await;
    assert_eq!(status, 200);
    let (status, _) = send(
        &server,
        "GET",
        &format!("/v1/sessions/{first_id}"),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(status, 401, "the key is revoked with its session");
    assert_error(
        &send(&server, "GET", "/agents/sessions", Some(&key), None).await,
        401,
        "unauthorized",
    );
    // The other session's key is untouched.
    let other = field(&second["session"], "api_key");
    let (status, _) = send(
        &server,
        "GET",
        &format!("/v1/sessions/{second_id}"),
        Some(&other),
        None,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn concurrent_puts_of_one_identifier_make_one_session_and_one_key() {
    let server = TestServer::start();
    let replies =
        futures::future::join_all((0..8).map(|_| put(&server, "race", None, json!({})))).await;
    let mut agent_ids = Vec::new();
    let mut keys = Vec::new();
    for (status, reply) in &replies {
        assert_eq!(*status, 200, "{reply}");
        agent_ids.push(field(&reply["session"], "agent_id"));
        if let Some(key) = reply["session"].get("api_key") {
            keys.push(key.clone());
        }
    }
    agent_ids.dedup();
    assert_eq!(agent_ids.len(), 1, "one session: {replies:?}");
    assert_eq!(keys.len(), 1, "one key: {replies:?}");
    let (_, listed) = server.get("/agents/sessions").await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    let (_, native) = server.get("/v1/sessions").await;
    assert_eq!(native["sessions"].as_array().map(Vec::len), Some(1));
    let (_, issued) = server.get("/v1/keys").await;
    let session_keys: Vec<&Value> = issued["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter(|key| key["session_id"] == agent_ids[0].as_str())
        .collect();
    assert_eq!(session_keys.len(), 1, "{issued}");
    assert_eq!(session_keys[0]["scope"], "session");
}

#[tokio::test]
async fn bad_input_gets_an_error_list_on_every_route() {
    let server = TestServer::start_with_config("[limits]\nmax_code_bytes = 1000\n");
    // Bodies.
    assert_error(
        &send(
            &server,
            "PUT",
            "/agents/sessions/a",
            None,
            Some("{not json".into()),
        )
        .await,
        400,
        "malformed_json",
    );
    for body in [
        json!([]),
        json!("x"),
        json!(5),
        json!(null),
        json!({"metadata": 5}),
        json!({"metadata": []}),
        json!({"name": 5}),
        json!({"description": ["d"]}),
    ] {
        assert_error(&put(&server, "a", None, body).await, 422, "invalid_body");
    }
    // Limits: description, metadata, name (the engine's), identifier, body size.
    let (status, _) = put(&server, "d", None, json!({"description": "d".repeat(1024)})).await;
    assert_eq!(status, 200, "1024 characters is the limit");
    assert_error(
        &put(&server, "a", None, json!({"description": "d".repeat(1025)})).await,
        422,
        "invalid_body",
    );
    let (status, _) = put(
        &server,
        "m",
        None,
        json!({"metadata": {"k": "v".repeat(8000)}}),
    )
    .await;
    assert_eq!(status, 200, "under 8 KiB");
    assert_error(
        &put(
            &server,
            "a",
            None,
            json!({"metadata": {"k": "v".repeat(8200)}}),
        )
        .await,
        422,
        "invalid_body",
    );
    assert_error(
        &put(&server, "a", None, json!({"name": "n".repeat(257)})).await,
        422,
        "invalid_input",
    );
    let longest = "i".repeat(128);
    let (status, _) = put(&server, &longest, None, json!({})).await;
    assert_eq!(status, 200, "128 characters is the limit");
    let (status, _) = server.get(&format!("/agents/sessions/{longest}")).await;
    assert_eq!(status, 200);
    let huge = json!({"metadata": {"k": "x".repeat(70_000)}}).to_string();
    assert_error(
        &send(&server, "PUT", "/agents/sessions/a", None, Some(huge)).await,
        413,
        "body_too_large",
    );
    // Identifiers, on every route that takes one.
    for bad in [
        "i".repeat(129),
        "a%2Fb".to_owned(),
        "a%0Ab".to_owned(),
        "a%FFb".to_owned(),
    ] {
        let path = format!("/agents/sessions/{bad}");
        assert_error(
            &put(&server, &bad, None, json!({})).await,
            422,
            "invalid_identifier",
        );
        assert_error(&server.get(&path).await, 422, "invalid_identifier");
        assert_error(&server.delete(&path).await, 422, "invalid_identifier");
    }
    // Unknown identifiers.
    assert_error(
        &server.get("/agents/sessions/nobody").await,
        404,
        "session_not_found",
    );
    assert_error(
        &server.delete("/agents/sessions/nobody").await,
        404,
        "session_not_found",
    );
    // Nothing above created a session except the three accepted PUTs.
    let (_, listed) = server.get("/agents/sessions").await;
    let mut identifiers: Vec<String> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|session| field(session, "identifier"))
        .collect();
    identifiers.sort();
    assert_eq!(identifiers, ["d".to_owned(), longest, "m".to_owned()]);
}

#[tokio::test]
async fn keys_are_required_and_tenants_are_apart() {
    let server = TestServer::start();
    let admin = issue(&server, None, json!({"scope": "admin"})).await;
    let alice = issue(
        &server,
        Some(&admin),
        json!({"scope": "tenant", "tenant": "alice"}),
    )
    .await;
    let bob = issue(
        &server,
        Some(&admin),
        json!({"scope": "tenant", "tenant": "bob"}),
    )
    .await;

    // No key, or a wrong one: 401 on every route.
    for key in [None, Some("corral_000000000000_nothing"), Some("x")] {
        for (method, path) in [
            ("GET", "/agents/sessions"),
            ("PUT", "/agents/sessions/shared"),
            ("GET", "/agents/sessions/shared"),
            ("DELETE", "/agents/sessions/shared"),
        ] {
            let body = (method == "PUT").then(|| "{}".to_owned());
            let reply = send(&server, method, path, key, body).await;
            assert_error(&reply, 401, "unauthorized");
        }
    }
    // X-API-Key works as well as a bearer token.
    let response = server
        .http
        .get(server.url("/agents/sessions"))
        .header("x-api-key", &alice)
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);

    let (status, alices) = put(
        &server,
        "shared",
        Some(&alice),
        json!({"metadata": {"owner": "alice"}}),
    )
    .await;
    assert_eq!(status, 200, "{alices}");
    let alice_id = field(&alices["session"], "agent_id");
    // It is in Alice's tenant.
    for (key, expected) in [(&alice, 200), (&bob, 404), (&admin, 200)] {
        let (status, _) = send(
            &server,
            "GET",
            &format!("/v1/sessions/{alice_id}"),
            Some(key),
            None,
        )
        .await;
        assert_eq!(status, expected);
    }

    // Bob cannot see, read or delete Alice's session; his PUT makes his own.
    let (_, listed) = send(&server, "GET", "/agents/sessions", Some(&bob), None).await;
    assert_eq!(listed, json!([]));
    assert_error(
        &send(&server, "GET", "/agents/sessions/shared", Some(&bob), None).await,
        404,
        "session_not_found",
    );
    assert_error(
        &send(
            &server,
            "DELETE",
            "/agents/sessions/shared",
            Some(&bob),
            None,
        )
        .await,
        404,
        "session_not_found",
    );
    let (status, bobs) = put(&server, "shared", Some(&bob), json!({})).await;
    assert_eq!(status, 200, "{bobs}");
    let bob_id = field(&bobs["session"], "agent_id");
    assert_ne!(
        bob_id, alice_id,
        "one identifier in two tenants is two sessions"
    );
    assert!(bobs["session"]["api_key"].is_string());
    assert_eq!(bobs["session"]["metadata"], json!({}));
    assert!(!bobs.to_string().contains(&alice_id));

    for (key, own) in [(&alice, &alice_id), (&bob, &bob_id)] {
        let (_, listed) = send(&server, "GET", "/agents/sessions", Some(key), None).await;
        assert_eq!(listed.as_array().map(Vec::len), Some(1));
        assert_eq!(listed[0]["agent_id"], own.as_str());
        let (_, read) = send(&server, "GET", "/agents/sessions/shared", Some(key), None).await;
        assert_eq!(read["session"]["agent_id"], own.as_str());
    }
    // Alice's minted key cannot reach Bob's session.
    let alice_session_key = field(&alices["session"], "api_key");
    let (status, _) = send(
        &server,
        "GET",
        &format!("/v1/sessions/{bob_id}"),
        Some(&alice_session_key),
        None,
    )
    .await;
    assert_eq!(status, 404);

    let (status, deleted) = send(
        &server,
        "DELETE",
        "/agents/sessions/shared",
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(deleted["session"]["agent_id"], bob_id.as_str());
    let (_, read) = send(
        &server,
        "GET",
        "/agents/sessions/shared",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(read["session"]["state"], "idle", "Alice's session lives on");
    let (status, _) = send(
        &server,
        "GET",
        &format!("/v1/sessions/{alice_id}"),
        Some(&alice_session_key),
        None,
    )
    .await;
    assert_eq!(status, 200, "and so does her key");
}

#[tokio::test]
async fn a_session_closed_elsewhere_leaves_the_list() {
    let server = TestServer::start();
    let (_, created) = put(&server, "x", None, json!({})).await;
    let agent_id = field(&created["session"], "agent_id");
    let (status, _) = server.delete(&format!("/v1/sessions/{agent_id}")).await;
    assert_eq!(status, 200);
    let (_, listed) = server.get("/agents/sessions").await;
    assert_eq!(listed, json!([]));
    assert_error(
        &server.get("/agents/sessions/x").await,
        404,
        "session_not_found",
    );
    let (status, renewed) = put(&server, "x", None, json!({})).await;
    assert_eq!(status, 200);
    assert_ne!(renewed["session"]["agent_id"], agent_id.as_str());
    assert!(renewed["session"]["api_key"].is_string());
}

#[tokio::test]
async fn quota_refusals_are_429_error_lists() {
    let server = TestServer::start_with_config("[limits]\nmax_sessions_per_tenant = 1\n");
    let (status, _) = put(&server, "one", None, json!({})).await;
    assert_eq!(status, 200);
    let response = server
        .http
        .put(server.url("/agents/sessions/two"))
        .send()
        .await
        .expect("put");
    assert!(response.headers().contains_key("retry-after"));
    let reply = support::response(Ok(response)).await;
    assert_error(&reply, 429, "quota_exceeded");
    let (status, _) = put(&server, "one", None, json!({})).await;
    assert_eq!(status, 200, "the existing session is still answered");
    let (_, listed) = server.get("/agents/sessions").await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
}
