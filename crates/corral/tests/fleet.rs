//! A fleet: three real nodes on loopback ports sharing one PostgreSQL database (a fresh one
//! per test on the server `CORRAL_TEST_DATABASE_URL` names; `scripts/test` runs a private
//! server). Without that variable each test says why it does nothing; with it, a server that
//! cannot be reached fails the test.

mod support;

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use support::{TestServer, DEADLINE};
use tokio_tungstenite::tungstenite::Message;

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

fn node(database: &str, id: &str, lease_seconds: &str, config: &str) -> TestServer {
    TestServer::start_with_arguments(
        config,
        &[
            "--database-url",
            database,
            "--node-id",
            id,
            "--node-lease-seconds",
            lease_seconds,
            "--node-secret",
            NODE_SECRET,
        ],
    )
}

async fn execute(node: &TestServer, session: &str, code: &str) -> (u16, Value) {
    node.post(
        &format!("/v1/sessions/{session}/executions"),
        json!({ "code": code }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_node_serves_a_session_that_runs_on_another() {
    let Some(database) = fleet_database().await else {
        return;
    };
    let a = node(&database, "node-a", "5", "");
    let b = node(&database, "node-b", "5", "");
    let c = node(&database, "node-c", "5", "");
    let session = a.create_session().await;

    // State is kept whichever node the executions go through.
    let (status, body) = execute(&b, &session, "x = 41").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = execute(&c, &session, "x + 1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["text/plain"], "42");
    assert_eq!(body["execution_count"], 2);

    // Streamed through B: the events arrive as they happen, ending in `done`.
    let response = b
        .http
        .post(b.url(&format!("/v1/sessions/{session}/executions")))
        .header("accept", "text/event-stream")
        .json(&json!({"code": "import time\nprint('first', flush=True)\ntime.sleep(0.3)\nprint('second')"}))
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status(), 200);
    assert!(response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream")));
    let mut events = String::new();
    let mut chunks = response.bytes_stream();
    let mut first_alone = false;
    while let Some(chunk) = tokio::time::timeout(DEADLINE, chunks.next())
        .await
        .expect("an event within the deadline")
    {
        events.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
        if events.contains("first") && !events.contains("second") {
            first_alone = true;
        }
    }
    assert!(
        first_alone,
        "output was not streamed as it happened: {events}"
    );
    assert!(events.contains("event: done"), "{events}");

    // The Jupyter kernel channels through C.
    let url = c
        .url(&format!("/api/kernels/{session}/channels?session_id=fleet"))
        .replacen("http://", "ws://", 1);
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket through node C");
    let msg_id = uuid::Uuid::new_v4().to_string();
    let request = json!({
        "header": {"msg_id": msg_id, "username": "t", "session": "fleet", "date": "2026-12-02T00:00:00.000000Z",
                   "msg_type": "execute_request", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "buffers": [], "channel": "shell",
        "content": {"code": "x * 2", "silent": false, "store_history": true, "user_expressions": {},
                    "allow_stdin": false, "stop_on_error": true}});
    socket
        .send(Message::Text(request.to_string().into()))
        .await
        .expect("send");
    let mut result = None;
    let deadline = Instant::now() + DEADLINE;
    while result.is_none() {
        assert!(Instant::now() < deadline, "no execute_result");
        let frame = tokio::time::timeout(DEADLINE, socket.next())
            .await
            .expect("a frame")
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = frame {
            let message: Value = serde_json::from_str(&text).expect("json");
            if message["msg_type"] == "execute_result" {
                result = Some(message["content"]["data"]["text/plain"].clone());
            }
        }
    }
    assert_eq!(result, Some(json!("82")));
    socket.close(None).await.ok();

    // Listed and read on C, from the store.
    let (status, list) = c.get("/v1/sessions").await;
    assert_eq!(status, 200);
    assert!(list["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .any(|listed| listed["id"] == session));
    let (status, history) = c.get(&format!("/v1/sessions/{session}/executions")).await;
    assert_eq!(status, 200, "{history}");
    assert!(history["executions"].as_array().expect("executions").len() >= 3);

    // A client cannot pose as a node.
    let (status, body) = b
        .send_with_headers(
            "GET",
            &format!("/v1/sessions/{session}"),
            &[("x-corral-forwarded-by", "node-a")],
        )
        .await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = b
        .send_with_headers(
            "GET",
            &format!("/v1/sessions/{session}"),
            &[
                ("x-corral-forwarded-by", "node-a"),
                ("x-corral-node-credential", "a guess"),
            ],
        )
        .await;
    assert_eq!(status, 401);

    // Closed through C; every node then says so.
    let (status, closed) = c.delete(&format!("/v1/sessions/{session}")).await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["state"], "closed");
    for node in [&a, &b, &c] {
        let (_, body) = node.get(&format!("/v1/sessions/{session}")).await;
        assert_eq!(body["state"], "closed", "{body}");
    }
    let (status, _) = execute(&b, &session, "1").await;
    assert_eq!(status, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenants_quota_holds_across_nodes_under_concurrent_creates() {
    let Some(database) = fleet_database().await else {
        return;
    };
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["keys", "create", "--scope", "tenant", "--tenant", "team"])
        .args(["--database-url", &database])
        .output()
        .expect("corral keys create --database-url");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let key = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let key = key
        .split_whitespace()
        .find(|word| word.starts_with("corral_"))
        .expect("the key is printed")
        .to_owned();
    let config = "[limits]\nmax_sessions_per_tenant = 2\n";
    let nodes = [
        node(&database, "quota-a", "5", config),
        node(&database, "quota-b", "5", config),
        node(&database, "quota-c", "5", config),
    ];
    let mut creates = Vec::new();
    for round in 0..3 {
        for node in &nodes {
            let request = node
                .http
                .post(node.url("/v1/sessions"))
                .bearer_auth(&key)
                .json(&json!({"name": format!("round {round}")}));
            creates.push(tokio::spawn(async move {
                let response = request.send().await.expect("create");
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.expect("json"))
            }));
        }
    }
    let mut created = Vec::new();
    for create in creates {
        let (status, body) = create.await.expect("task");
        match status {
            201 => created.push(body["id"].as_str().expect("id").to_owned()),
            429 => {}
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(created.len(), 2, "the quota of 2 held across three nodes");
    // Closing one, through a node that does not run it, gives its place back.
    let (status, _) = nodes[2]
        .send(
            "DELETE",
            &format!("/v1/sessions/{}", created[0]),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = nodes[1]
        .send("POST", "/v1/sessions", Some(&key), Some("{}"))
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_nodes_sessions_die_and_the_others_keep_serving() {
    let Some(database) = fleet_database().await else {
        return;
    };
    let lease = Duration::from_secs(2);
    let mut a = node(&database, "lost-a", "2", "");
    let b = node(&database, "lost-b", "2", "");
    let c = node(&database, "lost-c", "2", "");
    let on_a = [a.create_session().await, a.create_session().await];
    let on_b = b.create_session().await;
    // Acknowledged executions of A's sessions, through B.
    for (index, session) in on_a.iter().enumerate() {
        let (status, body) = execute(&b, session, &format!("value = {index}")).await;
        assert_eq!(status, 200, "{body}");
    }
    // Clients keep executing through B while A dies.
    let worker = {
        let http = b.http.clone();
        let url = b.url(&format!("/v1/sessions/{on_b}/executions"));
        tokio::spawn(async move {
            let mut answered = 0;
            for round in 0..40 {
                let response = http
                    .post(&url)
                    .json(&json!({"code": format!("{round} * 2")}))
                    .send()
                    .await
                    .expect("execute through B");
                assert_eq!(response.status(), 200);
                answered += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answered
        })
    };
    a.stop_with(Signal::SIGKILL);
    let killed = Instant::now();
    for session in &on_a {
        let deadline = killed + DEADLINE;
        loop {
            let (_, body) = c.get(&format!("/v1/sessions/{session}")).await;
            if body["state"] == "dead" {
                assert_eq!(body["state_reason"], "node lost", "{body}");
                break;
            }
            assert!(Instant::now() < deadline, "never declared dead: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let noticed = killed.elapsed();
    assert!(
        noticed <= 2 * lease,
        "A's sessions became dead {noticed:?} after the kill; the lease is {lease:?}"
    );
    assert_eq!(worker.await.expect("worker"), 40, "B kept serving");
    // Nothing acknowledged was lost; the dead sessions answer like any dead session.
    for (index, session) in on_a.iter().enumerate() {
        let (status, history) = b.get(&format!("/v1/sessions/{session}/executions")).await;
        assert_eq!(status, 200);
        assert_eq!(history["executions"][0]["code"], format!("value = {index}"));
        let (status, body) = execute(&c, session, "1").await;
        assert_eq!(status, 409, "{body}");
    }
    // A comes back with the same id: its old sessions stay dead, it serves new ones.
    let a = node(&database, "lost-a", "2", "");
    let (_, body) = a.get(&format!("/v1/sessions/{}", on_a[0])).await;
    assert_eq!(body["state"], "dead");
    assert_eq!(body["state_reason"], "node lost");
    let fresh = a.create_session().await;
    let (status, body) = execute(&c, &fresh, "6 * 7").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["text/plain"], "42");
    let (status, body) = execute(&b, &on_b, "'still here'").await;
    assert_eq!(status, 200, "{body}");
    // The log says once which node declared A lost.
    let declared = [&b, &c]
        .iter()
        .map(|node| node.log().matches("node lost: its lease lapsed").count())
        .sum::<usize>();
    assert_eq!(declared, 1, "A was declared lost exactly once");
}

/// Waits until `/v1/nodes` on `node` satisfies `check`; returns the nodes.
async fn wait_for_nodes(node: &TestServer, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, body) = node.get("/v1/nodes").await;
        assert_eq!(status, 200, "{body}");
        let nodes = body["nodes"].as_array().expect("nodes").clone();
        if check(&nodes) {
            return nodes;
        }
        assert!(Instant::now() < deadline, "nodes never got there: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn live_sessions(nodes: &[Value], id: &str) -> u64 {
    nodes
        .iter()
        .find(|node| node["id"] == id)
        .and_then(|node| node["live_sessions"].as_u64())
        .unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_node_places_new_sessions_on_the_least_loaded_one() {
    let Some(database) = fleet_database().await else {
        return;
    };
    let config = "[limits]\nmax_sessions = 1\n";
    let a = node(&database, "place-a", "1", config);
    let b = node(&database, "place-b", "1", config);
    let c = node(&database, "place-c", "1", "[limits]\nmax_sessions = 3\n");
    let first = a.create_session().await;
    // B is busier than C once it runs a session of its own.
    let on_b = b.create_session().await;
    let nodes = wait_for_nodes(&a, |nodes| {
        nodes.len() == 3
            && live_sessions(nodes, "place-a") == 1
            && live_sessions(nodes, "place-b") == 1
    })
    .await;
    assert!(nodes.iter().all(|node| node["alive"] == true), "{nodes:?}");
    // A is full: its create goes to C, the only node with room.
    let placed = a.create_session().await;
    wait_for_nodes(&a, |nodes| live_sessions(nodes, "place-c") == 1).await;
    let (status, body) = execute(&a, &placed, "21 * 2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["text/plain"], "42");
    for session in [&first, &on_b] {
        let (status, _) = execute(&c, session, "1").await;
        assert_eq!(status, 200);
    }

    // The same list offline, from the database.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["nodes", "list", "--json", "--database-url", &database])
        .output()
        .expect("corral nodes list");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: Value = serde_json::from_slice(&output.stdout).expect("json");
    let ids: Vec<&str> = listed
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|node| node["id"].as_str())
        .collect();
    assert_eq!(ids, ["place-a", "place-b", "place-c"]);
    // And through a server.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["nodes", "list", "--server", &b.url])
        .output()
        .expect("corral nodes list");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("place-c") && text.contains(&c.url), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_admins_list_nodes_and_a_single_node_lists_none() {
    let single = TestServer::start();
    let (status, body) = single.get("/v1/nodes").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["nodes"], json!([]));
    let tenant = single.corral_key(&["--scope", "tenant", "--tenant", "t"]);
    let tenant = tenant
        .split_whitespace()
        .find(|word| word.starts_with("corral_"))
        .expect("key")
        .to_owned();
    let (status, body) = single.send("GET", "/v1/nodes", Some(&tenant), None).await;
    assert_eq!(status, 403, "{body}");
}

/// `corral bench --fleet N` with a tiny N: both fleet sizes measured, the simulated records
/// all listed, the forwarded columns only with several nodes.
#[test]
fn bench_fleet_measures_one_and_three_nodes() {
    let Ok(server) = std::env::var("CORRAL_TEST_DATABASE_URL") else {
        eprintln!("skipping: CORRAL_TEST_DATABASE_URL is not set (scripts/test sets it)");
        return;
    };
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["bench", "--fleet", "30", "--iterations", "3", "--json"])
        .args(["--python", &support::python(), "--database-url", &server])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run bench --fleet");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("json report");
    let runs = report["runs"].as_array().expect("runs");
    let nodes: Vec<u64> = runs
        .iter()
        .filter_map(|run| run["nodes"].as_u64())
        .collect();
    assert_eq!(nodes, [1, 3], "{report}");
    for run in runs {
        assert_eq!(run["records"], 30, "{run}");
        // The simulated records and the real (closed) sessions of that run's database.
        assert!(run["listed"].as_u64() >= Some(30), "{run}");
        for rate in [
            "creates_per_second",
            "executes_per_second",
            "records_per_second",
        ] {
            assert!(run[rate].as_f64().is_some_and(|rate| rate > 0.0), "{run}");
        }
        assert_eq!(run["execute_direct"]["samples"], 3, "{run}");
        assert_eq!(run["get_direct"]["samples"], 3, "{run}");
        let several = run["nodes"] != 1;
        assert_eq!(run["execute_forwarded"].is_object(), several, "{run}");
        assert_eq!(run["get_forwarded"].is_object(), several, "{run}");
    }
    assert!(stderr.contains("fleet.json"), "{stderr}");
}

/// The Jupyter, python_rce and agents surfaces list the fleet's sessions, not only this node's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compatibility_lists_show_sessions_running_on_another_node() {
    let Some(database) = fleet_database().await else {
        return;
    };
    let a = node(&database, "node-a", "5", "");
    let c = node(&database, "node-c", "5", "");
    let (status, kernel) = a.post("/api/kernels", json!({"name": "python3"})).await;
    assert_eq!(status, 201, "{kernel}");
    let kernel_id = kernel["id"].as_str().expect("kernel id").to_owned();
    let (status, session) = a
        .post(
            "/api/sessions",
            json!({"path": "fleet.ipynb", "type": "notebook", "name": "fleet.ipynb",
                   "kernel": {"name": "python3"}}),
        )
        .await;
    assert_eq!(status, 201, "{session}");

    let (status, kernels) = c.get("/api/kernels").await;
    assert_eq!(status, 200, "{kernels}");
    let listed: Vec<&str> = kernels
        .as_array()
        .expect("kernels")
        .iter()
        .filter_map(|kernel| kernel["id"].as_str())
        .collect();
    assert!(listed.contains(&kernel_id.as_str()), "{kernels}");
    assert!(
        listed.contains(&session["kernel"]["id"].as_str().expect("its kernel")),
        "{kernels}"
    );
    let (status, sessions) = c.get("/api/sessions").await;
    assert_eq!(status, 200, "{sessions}");
    assert!(
        sessions
            .as_array()
            .expect("sessions")
            .iter()
            .any(|listed| listed["id"] == session["id"] && listed["path"] == "fleet.ipynb"),
        "{sessions}"
    );

    // python_rce's list, through C, of a session created on A.
    let (status, created) = a.post_raw("/sessions/create", "application/json", "").await;
    assert_eq!(status, 200, "{created}");
    let (status, listed) = c.get("/sessions/list").await;
    assert_eq!(status, 200, "{listed}");
    assert!(
        listed["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .any(|listed| listed["session_id"] == created["session_id"]),
        "{listed}"
    );

    // The agents surface's list, through C, of an agent session put on A.
    let (status, agent) = a
        .send(
            "PUT",
            "/agents/sessions/fleet-agent",
            None,
            Some(&json!({"name": "fleet"}).to_string()),
        )
        .await;
    assert_eq!(status, 200, "{agent}");
    let (status, agents) = c.get("/agents/sessions").await;
    assert_eq!(status, 200, "{agents}");
    assert!(
        agents
            .as_array()
            .expect("agent sessions")
            .iter()
            .any(|listed| listed["id"] == agent["session"]["id"]),
        "{agents}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenants_executions_in_flight_are_counted_across_nodes() {
    let Some(database) = fleet_database().await else {
        return;
    };
    let config = "[limits]\nmax_executions_per_tenant = 1\n";
    let a = node(&database, "running-a", "5", config);
    let b = node(&database, "running-b", "5", config);
    let on_a = a.create_session().await;
    let on_b = b.create_session().await;
    // One execution in flight on A uses the tenant's one place: B refuses another.
    let running = a.execute_in_background(&on_a, "import time\ntime.sleep(600)");
    a.wait_for_state(&on_a, "busy").await;
    let (status, problem) = execute(&b, &on_b, "1").await;
    assert_eq!(status, 429, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("executions in flight"),
        "{problem}"
    );
    // Its end (interrupted through B) gives the place back.
    let (status, body) = b
        .post(&format!("/v1/sessions/{on_a}/interrupt"), json!({}))
        .await;
    assert!(status < 300, "{status} {body}");
    let (status, record) = running.await.expect("task");
    assert_eq!((status, &record["status"]), (200, &json!("interrupted")));
    // Given back before the answer: executions one after another always find room.
    for round in 0..5 {
        let (status, body) = execute(&b, &on_b, &format!("{round} + 1")).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = execute(&a, &on_b, &format!("{round} + 2")).await;
        assert_eq!(status, 200, "{body}");
    }
}
