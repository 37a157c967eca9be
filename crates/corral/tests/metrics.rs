//! `/metrics` against the real server: every series the operator relies on appears with the
//! values this test caused, HTTP requests are labelled by route template (never a raw id),
//! and with keys only an admin key reads it.

mod support;

use std::time::Instant;

use serde_json::json;
use support::{gate_path, start_gated_execution, TestServer, DEADLINE};

/// The value of the sample `name{labels}` (labels in any order), if present.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((series_name, rest)) => (series_name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let present: Vec<&str> = series_labels
                .split(',')
                .filter(|label| !label.is_empty())
                .collect();
            let wanted: Vec<String> = labels
                .iter()
                .map(|(key, value)| format!("{key}=\"{value}\""))
                .collect();
            (present.len() == wanted.len()
                && wanted.iter().all(|label| present.contains(&label.as_str())))
            .then(|| value.parse().ok())
            .flatten()
        })
}

async fn metrics_text(server: &TestServer, key: Option<&str>) -> (u16, String) {
    let mut request = server.http.get(server.url("/metrics"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("GET /metrics");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Polls `/metrics` until `ready` holds for its text.
async fn metrics_until(server: &TestServer, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, text) = metrics_text(server, None).await;
        assert_eq!(status, 200, "{text}");
        if ready(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never got there:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metrics_count_sessions_executions_and_requests() {
    let server = TestServer::start();
    let closed = server.create_session().await;
    let kept = server.create_session().await;
    assert_eq!(server.execute(&closed, "1 + 1").await["status"], "ok");
    assert_eq!(server.execute(&closed, "1 / 0").await["status"], "error");
    let (status, _) = server.delete(&format!("/v1/sessions/{closed}")).await;
    assert_eq!(status, 200);
    let unknown = uuid::Uuid::now_v7();
    let (status, _) = server.get(&format!("/v1/sessions/{unknown}")).await;
    assert_eq!(status, 404);

    let (status, text) = metrics_text(&server, None).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("# TYPE corral_sessions gauge"), "{text}");
    assert_eq!(
        sample(&text, "corral_sessions_created_total", &[]),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "corral_sessions_closed_total",
            &[("state", "closed"), ("reason", "closed by client")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "corral_executions_total", &[("outcome", "ok")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "corral_executions_total", &[("outcome", "error")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "corral_execution_duration_seconds_count", &[]),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "corral_execution_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "corral_session_start_duration_seconds_count", &[]),
        Some(2.0)
    );
    for (state, count) in [("starting", 0.0), ("idle", 1.0), ("busy", 0.0)] {
        assert_eq!(
            sample(&text, "corral_sessions", &[("state", state)]),
            Some(count),
            "{state}"
        );
    }
    assert_eq!(
        sample(&text, "corral_execution_queue_depth", &[]),
        Some(0.0)
    );
    let memory = sample(&text, "corral_worker_memory_bytes", &[]).expect("worker memory");
    assert!(
        memory > 1_000_000.0,
        "one live Python worker uses memory: {memory}"
    );
    let pss = sample(&text, "corral_worker_memory_pss_bytes", &[]).expect("worker PSS");
    let uss = sample(&text, "corral_worker_memory_uss_bytes", &[]).expect("worker USS");
    assert!(
        pss > 1_000_000.0 && uss > 0.0 && uss <= pss,
        "one live worker's PSS {pss} and USS {uss}"
    );
    assert_eq!(
        sample(
            &text,
            "corral_session_workers_total",
            &[("origin", "fresh")]
        ),
        Some(2.0),
        "this server has no warm pool: both workers were started for their sessions"
    );
    assert_eq!(sample(&text, "corral_pool_ready_workers", &[]), Some(0.0));
    assert_eq!(
        sample(
            &text,
            "corral_http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/v1/sessions/{id}/executions"),
                ("status", "200")
            ]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "corral_http_requests_total",
            &[
                ("method", "GET"),
                ("route", "/v1/sessions/{id}"),
                ("status", "404")
            ]
        ),
        Some(1.0)
    );
    // Routes are templates: no session id reaches a label.
    for id in [closed.as_str(), kept.as_str(), &unknown.to_string()] {
        assert!(!text.contains(id), "{id} in:\n{text}");
    }
}

#[tokio::test]
async fn metrics_show_busy_sessions_and_queued_executions() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let gate = gate_path(&server, &id, "go");
    let mut running = start_gated_execution(&server, &id, "go").await;
    let queued = {
        let server_url = server.url(&format!("/v1/sessions/{id}/executions"));
        let http = server.http.clone();
        tokio::spawn(async move {
            http.post(server_url)
                .json(&json!({"code": "'queued'"}))
                .send()
                .await
                .expect("queued execution")
                .status()
        })
    };
    metrics_until(&server, |text| {
        sample(text, "corral_execution_queue_depth", &[]) == Some(1.0)
            && sample(text, "corral_sessions", &[("state", "busy")]) == Some(1.0)
    })
    .await;
    std::fs::write(&gate, b"").expect("open the gate");
    while running.next().await.is_some() {}
    assert_eq!(queued.await.expect("join"), 200);
    let text = metrics_until(&server, |text| {
        sample(text, "corral_execution_queue_depth", &[]) == Some(0.0)
    })
    .await;
    assert_eq!(
        sample(&text, "corral_executions_total", &[("outcome", "ok")]),
        Some(2.0)
    );
}

#[tokio::test]
async fn metrics_need_an_admin_key_once_keys_exist() {
    let server = TestServer::start();
    let issue = |key: Option<String>, body: serde_json::Value| {
        let mut request = server.http.post(server.url("/v1/keys")).json(&body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        async move {
            let (status, issued) = support::response(request.send().await).await;
            assert_eq!(status, 201, "{issued}");
            issued["key"].as_str().expect("key").to_owned()
        }
    };
    let admin = issue(None, json!({"scope": "admin"})).await;
    let tenant = issue(
        Some(admin.clone()),
        json!({"scope": "tenant", "tenant": "acme"}),
    )
    .await;
    assert_eq!(metrics_text(&server, None).await.0, 401);
    let (status, body) = metrics_text(&server, Some(&tenant)).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = metrics_text(&server, Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("corral_http_requests_total"), "{body}");
}
