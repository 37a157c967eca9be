//! A bounded soak test over loopback: many clients mixing create, execute and close against
//! one server, then the books are checked — no 5xx (no error of any kind, in fact), no worker
//! left running, the store holding exactly what clients were told, and `/metrics` agreeing.
//!
//! The short form (20 clients × 25 requests) runs with every `cargo test`; the long form is
//! `CORRAL_SOAK_ROUNDS=500 cargo test --test soak -- --nocapture` (`CORRAL_SOAK_CLIENTS` sets
//! the number of clients). It prints its numbers; it asserts none of them.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::TestServer;

const DEFAULT_CLIENTS: usize = 20;
const DEFAULT_ROUNDS: usize = 25;

fn from_env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator, so a failing run can be repeated.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % sides
    }
}

/// What one client saw.
#[derive(Default)]
struct ClientBook {
    /// Every acknowledged execution: (session, reply).
    executions: Vec<(String, Value)>,
    /// Sessions this client created and how many executions each acknowledged.
    sessions: HashMap<String, u64>,
    /// (status, what was asked) of every non-2xx reply.
    failures: Vec<(u16, String)>,
    latencies: Vec<Duration>,
}

async fn call(
    server: &TestServer,
    book: &mut ClientBook,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Option<Value> {
    let mut request = server
        .http
        .request(method.parse().expect("method"), server.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let clock = Instant::now();
    let (status, reply) = support::response(request.send().await).await;
    book.latencies.push(clock.elapsed());
    if (200..300).contains(&status) {
        Some(reply)
    } else {
        book.failures
            .push((status, format!("{method} {path}: {reply}")));
        None
    }
}

async fn run_client(server: &TestServer, client: usize, rounds: usize) -> ClientBook {
    let mut book = ClientBook::default();
    let mut dice = Dice(client as u64 + 1);
    let mut open: Option<String> = None;
    for round in 0..rounds {
        let Some(id) = open.clone() else {
            if let Some(session) =
                call(server, &mut book, "POST", "/v1/sessions", Some(json!({}))).await
            {
                let id = session["id"].as_str().expect("id").to_owned();
                book.sessions.insert(id.clone(), 0);
                open = Some(id);
            }
            continue;
        };
        match dice.roll(10) {
            0 => {
                if call(
                    server,
                    &mut book,
                    "DELETE",
                    &format!("/v1/sessions/{id}"),
                    None,
                )
                .await
                .is_some()
                {
                    open = None;
                }
            }
            roll => {
                let value = client * 100_000 + round;
                let code = match roll {
                    1 => "1 / 0".to_owned(),
                    2 => format!("print('client {client} round {round}')"),
                    _ => format!("x = {value}\nx * 2"),
                };
                let path = format!("/v1/sessions/{id}/executions");
                if let Some(reply) = call(
                    server,
                    &mut book,
                    "POST",
                    &path,
                    Some(json!({ "code": code })),
                )
                .await
                {
                    *book.sessions.get_mut(&id).expect("own session") += 1;
                    book.executions.push((id.clone(), reply));
                }
            }
        }
    }
    if let Some(id) = open {
        call(
            server,
            &mut book,
            "DELETE",
            &format!("/v1/sessions/{id}"),
            None,
        )
        .await;
    }
    book
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_mixed_clients_leave_consistent_books_and_no_workers() {
    let clients = from_env("CORRAL_SOAK_CLIENTS", DEFAULT_CLIENTS);
    let rounds = from_env("CORRAL_SOAK_ROUNDS", DEFAULT_ROUNDS);
    let server = std::sync::Arc::new(TestServer::start_with_config(&format!(
        "[limits]\nmax_sessions = {}\n",
        clients.max(1) * 2
    )));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let server = server.clone();
        tasks.spawn(async move { run_client(&server, client, rounds).await });
    }
    let books: Vec<ClientBook> = tasks.join_all().await;
    let elapsed = started.elapsed();

    let failures: Vec<&(u16, String)> = books.iter().flat_map(|book| &book.failures).collect();
    assert!(failures.is_empty(), "failed requests: {failures:#?}");

    // Every worker is gone once every session is closed.
    server.wait_for_children(0).await;

    // The store agrees with what each client was told.
    let mut checked = 0;
    for book in &books {
        for (id, acknowledged) in &book.executions {
            let count = &acknowledged["execution_count"];
            let (status, stored) = server
                .get(&format!("/v1/sessions/{id}/executions/{count}"))
                .await;
            assert_eq!(status, 200, "{id} #{count}: {stored}");
            assert_eq!(&stored, acknowledged, "{id} #{count}");
            checked += 1;
        }
        for (id, executions) in &book.sessions {
            let (status, session) = server.get(&format!("/v1/sessions/{id}")).await;
            assert_eq!(status, 200, "{session}");
            assert_eq!(session["state"], "closed", "{session}");
            assert_eq!(session["execution_count"], *executions, "{session}");
        }
    }

    // The metrics agree too.
    let metrics = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    let total = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|line| {
                line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
            })
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    let sessions: usize = books.iter().map(|book| book.sessions.len()).sum();
    assert_eq!(
        total("corral_executions_total"),
        checked as f64,
        "{metrics}"
    );
    assert_eq!(total("corral_sessions_created_total"), sessions as f64);
    assert_eq!(total("corral_sessions_closed_total"), sessions as f64);
    assert_eq!(total("corral_sessions"), 0.0, "{metrics}");
    let server_errors: f64 = metrics
        .lines()
        .filter(|line| {
            line.starts_with("corral_http_requests_total{") && line.contains("status=\"5")
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(server_errors, 0.0, "{metrics}");

    let mut latencies: Vec<Duration> = books
        .iter()
        .flat_map(|book| book.latencies.iter().copied())
        .collect();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |latency| latency.as_secs_f64() * 1000.0)
    };
    println!(
        "soak: {clients} clients x {rounds} rounds: {} requests ({sessions} sessions, {checked} executions checked against the store) in {:.1}s = {:.0} req/s; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; 0 failed, 0 workers left",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(0.5),
        percentile(0.99),
        percentile(1.0),
    );
}
