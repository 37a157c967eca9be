//! The fleet's database restarted under load: two nodes keep serving once PostgreSQL is back,
//! and every execution a client was told succeeded is in the history. A test binary of its
//! own, because it restarts the shared test server (`CORRAL_TEST_DATABASE_RESTART`, set by
//! `scripts/test` with `CORRAL_TEST_DATABASE_URL`); without them it says why it does nothing.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{TestServer, DEADLINE};

/// How long one request may take while the database is away before the test calls it a hang.
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_reconnect_after_a_database_restart_and_nothing_acknowledged_is_lost() {
    let (Ok(server), Ok(restart)) = (
        std::env::var("CORRAL_TEST_DATABASE_URL"),
        std::env::var("CORRAL_TEST_DATABASE_RESTART"),
    ) else {
        eprintln!(
            "skipping: CORRAL_TEST_DATABASE_URL and CORRAL_TEST_DATABASE_RESTART are not set \
             (scripts/test sets them)"
        );
        return;
    };
    let database = corral_store::scratch_database(&server)
        .await
        .expect("a database on CORRAL_TEST_DATABASE_URL's server");
    let node = |id: &str| {
        TestServer::start_with_arguments(
            "",
            &[
                "--database-url",
                &database,
                "--node-id",
                id,
                "--node-lease-seconds",
                "10",
                "--node-secret",
                "restart-test-node-secret",
            ],
        )
    };
    let a = node("restart-a");
    let b = node("restart-b");
    let session = a.create_session().await;

    // Clients execute through both nodes (B forwards to A) while the database restarts, and
    // go on until some executions succeeded after it.
    let restarted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = |node: &TestServer, tag: &'static str| {
        let http = node.http.clone();
        let url = node.url(&format!("/v1/sessions/{session}/executions"));
        let restarted = restarted.clone();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut after_restart = 0;
            let mut unavailable = 0;
            let mut slowest = Duration::ZERO;
            let deadline = Instant::now() + DEADLINE;
            for attempt in 0.. {
                assert!(Instant::now() < deadline, "{tag}: no recovery");
                let done = restarted.load(std::sync::atomic::Ordering::SeqCst);
                let code = format!("'{tag}-{attempt}'");
                // No request may hang through the outage: each has a deadline of its own.
                let sent = Instant::now();
                let answer = http
                    .post(&url)
                    .json(&json!({ "code": code }))
                    .timeout(REQUEST_DEADLINE)
                    .send()
                    .await;
                // The node keeps running: it answers every request, never drops the connection.
                let response = answer.unwrap_or_else(|error| {
                    panic!("{tag}: no answer from the node during the restart: {error}")
                });
                slowest = slowest.max(sent.elapsed());
                let status = response.status();
                if status == 200 {
                    let body: Value = response.json().await.expect("json");
                    acknowledged.push(body["execution_count"].as_u64().expect("count"));
                    if done {
                        after_restart += 1;
                    }
                } else {
                    // A failure during the outage is a clean 503 problem a client can retry,
                    // with no internal text (no driver or SQL error leaks out).
                    unavailable += 1;
                    let body = response.text().await.expect("body");
                    assert_eq!(status, 503, "{tag}: {status} {body}");
                    let problem: Value = serde_json::from_str(&body)
                        .unwrap_or_else(|_| panic!("{tag}: 503 is not a problem: {body}"));
                    assert_eq!(problem["status"], 503, "{body}");
                    assert!(
                        problem["code"].is_string(),
                        "{tag}: a problem names its code: {body}"
                    );
                    let lower = body.to_lowercase();
                    for leak in ["sqlx", "postgres", "connection refused", "pool timed out"] {
                        assert!(!lower.contains(leak), "{tag}: 503 leaks {leak:?}: {body}");
                    }
                }
                if after_restart >= 10 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            eprintln!(
                "{tag}: {} acknowledged, {unavailable} answered 503 during the restart, \
                 slowest answer {slowest:?}",
                acknowledged.len()
            );
            acknowledged
        })
    };
    let through_a = client(&a, "a");
    let through_b = client(&b, "b");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = std::process::Command::new("sh")
        .args(["-c", &restart])
        .status()
        .expect("restart the database");
    assert!(status.success(), "restarting the database failed");
    restarted.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut acknowledged = through_a.await.expect("client a");
    acknowledged.extend(through_b.await.expect("client b"));

    // Every acknowledged execution is in the history, whichever node is asked.
    for node in [&a, &b] {
        let (status, history) = node
            .get(&format!("/v1/sessions/{session}/executions?limit=1000"))
            .await;
        assert_eq!(status, 200, "{history}");
        let stored: Vec<u64> = history["executions"]
            .as_array()
            .expect("executions")
            .iter()
            .filter_map(|execution| execution["execution_count"].as_u64())
            .collect();
        for count in &acknowledged {
            assert!(
                stored.contains(count),
                "acknowledged execution {count} is missing"
            );
        }
    }
    // Both nodes kept their leases: nobody was declared lost, the session lives on.
    let (_, body) = b.get(&format!("/v1/sessions/{session}")).await;
    assert_ne!(body["state"], "dead", "{body}");
    let (status, nodes) = a.get("/v1/nodes").await;
    assert_eq!(status, 200);
    assert!(
        nodes["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .all(|node| node["lost_at"].is_null()),
        "{nodes}"
    );
}
