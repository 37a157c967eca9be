//! A fleet and the requests that do not name their session in the path: python_rce's
//! execute and close (the session id is in the JSON body) and the caller-chosen identities
//! (a Jupyter session's path, an agent's identifier), which must name one session across the
//! fleet. Real nodes on loopback ports sharing one PostgreSQL database (a fresh one per test
//! on the server `CORRAL_TEST_DATABASE_URL` names; `scripts/test` runs a private server).
//! Without that variable each test says why it does nothing.

mod support;

use futures::StreamExt;
use serde_json::{json, Value};
use support::TestServer;

const NODE_SECRET: &str = "fleet-test-node-secret";

/// A fresh database for one test, or `None` (after saying so) without PostgreSQL.
async fn fleet_database() -> Option<String> {
    let Ok(server) = std::env::var("CORRAL_TEST_DATABASE_URL") else {
        eprintln!("skipping: CORRAL_TEST_DATABASE_URL is not set (scripts/test sets it)");
        return None;
    };
    Some(
        corral_store::scratch_database(&server)
            .await
            .expect("a database on CORRAL_TEST_DATABASE_URL's server"),
    )
}

fn node(database: &str, id: &str, config: &str) -> TestServer {
    TestServer::start_with_arguments(
        config,
        &[
            "--database-url",
            database,
            "--node-id",
            id,
            "--node-lease-seconds",
            "5",
            "--node-secret",
            NODE_SECRET,
        ],
    )
}

async fn rce_execute(node: &TestServer, session: &str, code: &str) -> (u16, Value) {
    node.post(
        "/sessions/execute",
        json!({ "session_id": session, "code": code }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_rce_requests_naming_their_session_in_the_body_reach_its_node() {
    let Some(database) = fleet_database().await else {
        return;
    };
    let config = "[limits]\nmax_code_bytes = 1000\n";
    let a = node(&database, "body-a", config);
    let b = node(&database, "body-b", config);
    let (status, created) = a.post("/sessions/create", json!({})).await;
    assert_eq!(status, 200, "{created}");
    let session = created["session_id"]
        .as_str()
        .expect("session_id")
        .to_owned();

    // Executed through B with its state kept, exactly as A answers.
    let (status, body) = rce_execute(&b, &session, "x = 41").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "Success", "{body}");
    let (status, through_b) = rce_execute(&b, &session, "x + 1").await;
    assert_eq!(status, 200, "{through_b}");
    assert_eq!(through_b["output"], "Out[2]: 42\n", "{through_b}");
    let (status, on_a) = rce_execute(&a, &session, "x + 2").await;
    assert_eq!(status, 200, "{on_a}");
    assert_eq!(on_a["output"], "Out[3]: 43\n", "{on_a}");
    let (status, failed) = rce_execute(&b, &session, "1/0").await;
    assert_eq!(status, 200, "{failed}");
    assert_eq!(failed["result"], "Error", "{failed}");
    assert_eq!(failed["error"], "division by zero", "{failed}");

    // What the surface answers itself is answered the same through B: malformed JSON, a
    // missing field, an unknown session, a body over the limit (declared or streamed).
    for (body, expected) in [
        (r#"{"session_id": "#.to_owned(), 422),
        (json!({ "session_id": session }).to_string(), 422),
        (
            json!({ "session_id": uuid::Uuid::new_v4().to_string(), "code": "1" }).to_string(),
            404,
        ),
        (
            json!({ "session_id": "not-an-id", "code": "1" }).to_string(),
            404,
        ),
    ] {
        let (on_a, answer_a) = a
            .post_raw("/sessions/execute", "application/json", body.clone())
            .await;
        let (on_b, answer_b) = b
            .post_raw("/sessions/execute", "application/json", body.clone())
            .await;
        assert_eq!((on_a, on_b), (expected, expected), "{body}: {answer_b}");
        assert_eq!(answer_a, answer_b, "{body}");
    }
    let large = json!({ "session_id": session, "code": "#".repeat(200_000) }).to_string();
    let (status, too_large) = b
        .post_raw("/sessions/execute", "application/json", large.clone())
        .await;
    assert_eq!(status, 413, "{too_large}");
    let (_, too_large_on_a) = a
        .post_raw("/sessions/execute", "application/json", large.clone())
        .await;
    assert_eq!(too_large, too_large_on_a);
    let chunks: Vec<Result<String, std::io::Error>> = large
        .as_bytes()
        .chunks(16 * 1024)
        .map(|chunk| Ok(String::from_utf8_lossy(chunk).into_owned()))
        .collect();
    let streamed = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let (status, streamed_answer) = b
        .post_raw("/sessions/execute", "application/json", streamed)
        .await;
    assert_eq!(status, 413, "{streamed_answer}");
    // A body under the limit but with code over max_code_bytes: the engine's own 422.
    let (status, long_code) = rce_execute(&b, &session, &"1\n".repeat(600)).await;
    assert_eq!(status, 422, "{long_code}");

    // Closed through B: A's session is closed, and B then says it is gone.
    let (status, closed) = b
        .post("/sessions/close", json!({ "session_id": session }))
        .await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["message"], "Session closed");
    let (_, record) = a.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(record["state"], "closed", "{record}");
    let (status, gone) = rce_execute(&b, &session, "x").await;
    assert_eq!(status, 404, "{gone}");
}

/// The answers of concurrent `POST /api/sessions` of one path, through both nodes.
async fn create_jupyter_sessions(nodes: [&TestServer; 2], path: &str, each: usize) -> Vec<Value> {
    let mut creates = Vec::new();
    for _ in 0..each {
        for node in nodes {
            let request = node
                .http
                .post(node.url("/api/sessions"))
                .json(&json!({"path": path, "type": "notebook", "name": path}));
            creates.push(tokio::spawn(async move {
                let response = request.send().await.expect("create");
                let status = response.status().as_u16();
                let body: Value = response.json().await.expect("json");
                assert_eq!(status, 201, "{body}");
                body
            }));
        }
    }
    futures::stream::iter(creates)
        .then(|create| async move { create.await.expect("task") })
        .collect()
        .await
}

async fn live_sessions(node: &TestServer) -> Vec<Value> {
    let (status, list) = node.get("/v1/sessions?limit=100").await;
    assert_eq!(status, 200, "{list}");
    list["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter(|session| session["state"] != "closed" && session["state"] != "dead")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_jupyter_path_names_one_session_across_the_fleet() {
    let Some(database) = fleet_database().await else {
        return;
    };
    let a = node(&database, "path-a", "");
    let b = node(&database, "path-b", "");
    let answers = create_jupyter_sessions([&a, &b], "shared.ipynb", 3).await;
    let first = &answers[0];
    for answer in &answers {
        assert_eq!(answer["id"], first["id"], "{answers:?}");
        assert_eq!(answer["kernel"]["id"], first["kernel"]["id"], "{answers:?}");
        assert_eq!(answer["path"], "shared.ipynb");
    }
    assert_eq!(live_sessions(&b).await.len(), 1, "one session in the fleet");
    let kernel = first["kernel"]["id"]
        .as_str()
        .expect("kernel id")
        .to_owned();
    // Both nodes answer for it as its node would (the kernel through B is forwarded).
    for node in [&a, &b] {
        let (status, listed) = node.get("/api/sessions").await;
        assert_eq!(status, 200, "{listed}");
        assert_eq!(listed.as_array().expect("sessions").len(), 1, "{listed}");
        let (status, read) = node.get(&format!("/api/kernels/{kernel}")).await;
        assert_eq!(status, 200, "{read}");
    }

    // Moved to another path (on the node that runs it: Jupyter's session ids are answered
    // where they are kept), it holds that path across the fleet and frees the old one.
    let session_path = format!("/api/sessions/{}", first["id"].as_str().expect("id"));
    let mut moved = None;
    for node in [&a, &b] {
        let (status, body) = node
            .patch(&session_path, json!({"path": "moved.ipynb"}))
            .await;
        if status == 200 {
            moved = Some(body);
            break;
        }
        assert_eq!(status, 404, "{body}");
    }
    let moved = moved.expect("the node that runs the session renames it");
    assert_eq!(moved["path"], "moved.ipynb");
    let to_moved = create_jupyter_sessions([&a, &b], "moved.ipynb", 1).await;
    for answer in &to_moved {
        assert_eq!(answer["id"], first["id"], "{to_moved:?}");
    }
    let to_old = create_jupyter_sessions([&a, &b], "shared.ipynb", 1).await;
    assert_eq!(to_old[0]["id"], to_old[1]["id"], "{to_old:?}");
    assert_ne!(to_old[0]["id"], first["id"], "the old path is free");
    assert_eq!(live_sessions(&a).await.len(), 2);
    let other_kernel = to_old[0]["kernel"]["id"]
        .as_str()
        .expect("kernel")
        .to_owned();
    let (status, _) = a.delete(&format!("/api/kernels/{other_kernel}")).await;
    assert_eq!(status, 204);

    // Once its kernel is shut down (through B), the path can be claimed again.
    let (status, _) = b.delete(&format!("/api/kernels/{kernel}")).await;
    assert_eq!(status, 204);
    let again = create_jupyter_sessions([&b, &a], "moved.ipynb", 1).await;
    assert_eq!(again[0]["id"], again[1]["id"], "{again:?}");
    assert_ne!(again[0]["id"], first["id"]);
    assert_ne!(again[0]["kernel"]["id"], first["kernel"]["id"]);
    assert_eq!(live_sessions(&a).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_identifier_names_one_session_across_the_fleet() {
    let Some(database) = fleet_database().await else {
        return;
    };
    let a = node(&database, "agent-a", "");
    let b = node(&database, "agent-b", "");
    let puts: Vec<_> = [&a, &b, &a, &b]
        .into_iter()
        .map(|node| {
            let request = node
                .http
                .put(node.url("/agents/sessions/helper"))
                .json(&json!({"name": "helper"}));
            tokio::spawn(async move {
                let response = request.send().await.expect("put");
                let status = response.status().as_u16();
                let body: Value = response.json().await.expect("json");
                assert_eq!(status, 200, "{body}");
                body["session"].clone()
            })
        })
        .collect();
    let mut answers = Vec::new();
    for put in puts {
        answers.push(put.await.expect("task"));
    }
    let id = answers[0]["agent_id"].clone();
    assert!(
        answers.iter().all(|answer| answer["agent_id"] == id),
        "{answers:?}"
    );
    let keys = answers
        .iter()
        .filter(|answer| answer.get("api_key").is_some())
        .count();
    assert_eq!(keys, 1, "only the create mints a key: {answers:?}");
    assert_eq!(live_sessions(&a).await.len(), 1, "one session in the fleet");

    // Read and deleted through either node, as on the one that runs it.
    for node in [&a, &b] {
        let (status, read) = node.get("/agents/sessions/helper").await;
        assert_eq!(status, 200, "{read}");
        assert_eq!(read["session"]["agent_id"], id);
        let (status, listed) = node.get("/agents/sessions").await;
        assert_eq!(status, 200, "{listed}");
        assert_eq!(listed.as_array().expect("list").len(), 1, "{listed}");
    }
    let (status, deleted) = b.delete("/agents/sessions/helper").await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["session"]["state"], "closed", "{deleted}");
    let (_, record) = a
        .get(&format!("/v1/sessions/{}", id.as_str().expect("id")))
        .await;
    assert_eq!(record["state"], "closed", "{record}");
    for node in [&a, &b] {
        let (status, _) = node.get("/agents/sessions/helper").await;
        assert_eq!(status, 404);
    }

    // The identifier is free again.
    let (status, fresh) = b
        .send("PUT", "/agents/sessions/helper", None, Some("{}"))
        .await;
    assert_eq!(status, 200, "{fresh}");
    assert_ne!(fresh["session"]["agent_id"], id);
    assert!(fresh["session"]["api_key"].is_string(), "{fresh}");
}
