//! Chaos, bounded: clients on two surfaces (native and python_rce) run executions against
//! their sessions while the server is killed with `kill -9` at varying points, several rounds
//! in a row. After each restart every execution a client saw acknowledged is in the store
//! with its output, and every session was adopted with its interpreter state. At the end, no
//! worker, cgroup or mount is left and the database passes `PRAGMA integrity_check`.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use support::{launchers_of, python, reap_orphans, TestServer, DEADLINE};

/// Kill/restart rounds.
const ROUNDS: u64 = 4;
/// Each client's cell: counts the executions that ran in its interpreter.
const CELL: &str = "n = globals().get('n', 0) + 1\nprint(n)";

#[derive(Clone, Copy, Debug)]
enum Surface {
    Native,
    PythonRce,
}

/// One client's session and what the server acknowledged to it (the printed counters).
struct Client {
    surface: Surface,
    session: String,
    acknowledged: BTreeSet<u64>,
}

/// Runs the cell until a request fails (the server was killed); returns the counters of the
/// executions acknowledged.
async fn run_client(url: String, surface: Surface, session: String) -> Vec<u64> {
    let http = reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .expect("client");
    let mut acknowledged = Vec::new();
    // Bounded: a round lasts well under this many executions.
    for _ in 0..10_000 {
        let request = match surface {
            Surface::Native => http
                .post(format!("{url}/v1/sessions/{session}/executions"))
                .json(&json!({"code": CELL})),
            Surface::PythonRce => http
                .post(format!("{url}/sessions/execute"))
                .json(&json!({"session_id": session, "code": CELL})),
        };
        let Ok(response) = request.send().await else {
            break;
        };
        if !response.status().is_success() {
            break;
        }
        let Ok(body) = response.json::<Value>().await else {
            break;
        };
        let printed = match surface {
            Surface::Native if body["status"] == "ok" => body["stdout"].as_str(),
            Surface::PythonRce if body["result"] == "Success" => body["output"].as_str(),
            _ => None,
        };
        match printed.and_then(|text| text.trim().parse::<u64>().ok()) {
            Some(counter) => acknowledged.push(counter),
            None => break,
        }
    }
    acknowledged
}

/// Every stdout of the session's stored history, by counter printed.
async fn stored_counters(server: &TestServer, session: &str) -> BTreeSet<u64> {
    let mut counters = BTreeSet::new();
    let mut after: Option<u64> = None;
    for _ in 0..1_000 {
        let path = match after {
            Some(after) => format!("/v1/sessions/{session}/executions?limit=100&after={after}"),
            None => format!("/v1/sessions/{session}/executions?limit=100"),
        };
        let (status, page) = server.get(&path).await;
        assert_eq!(status, 200, "{page}");
        for execution in page["executions"].as_array().expect("executions") {
            if execution["status"] == "ok" {
                if let Some(counter) = execution["stdout"]
                    .as_str()
                    .and_then(|text| text.trim().parse::<u64>().ok())
                {
                    counters.insert(counter);
                }
            }
        }
        match page["next_after"].as_u64() {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    counters
}

#[tokio::test]
async fn kill_9_under_load_loses_nothing_acknowledged_and_leaks_nothing() {
    // History must keep everything the test checks.
    let mut server =
        TestServer::start_with_config("[limits]\nexecutions_kept_per_session = 100000\n");
    let mut server_pids = vec![server.pid()];
    let mut clients = Vec::new();
    for surface in [Surface::Native, Surface::Native, Surface::PythonRce] {
        let session = match surface {
            Surface::Native => server.create_session().await,
            Surface::PythonRce => {
                let (status, created) = server
                    .post_raw("/sessions/create", "application/json", "")
                    .await;
                assert_eq!(status, 200, "{created}");
                created["session_id"].as_str().expect("id").to_owned()
            }
        };
        clients.push(Client {
            surface,
            session,
            acknowledged: BTreeSet::new(),
        });
    }

    let mut adopted_total = 0usize;
    let mut acknowledged_total = 0usize;
    for round in 0..ROUNDS {
        let tasks: Vec<_> = clients
            .iter()
            .map(|client| {
                tokio::spawn(run_client(
                    server.url.clone(),
                    client.surface,
                    client.session.clone(),
                ))
            })
            .collect();
        // Varying points: 150 to 750 ms into the load.
        tokio::time::sleep(Duration::from_millis(150 + (round * 389) % 600)).await;
        let _ = kill(Pid::from_raw(server.pid() as i32), Signal::SIGKILL);
        for (client, task) in clients.iter_mut().zip(tasks) {
            let acknowledged = task.await.expect("client task");
            acknowledged_total += acknowledged.len();
            client.acknowledged.extend(acknowledged);
        }
        server = server.restart_with(Signal::SIGKILL);
        server_pids.push(server.pid());

        for client in &clients {
            let (_, session) = server
                .get(&format!("/v1/sessions/{}", client.session))
                .await;
            assert_eq!(
                session["state"],
                "idle",
                "round {round}: {session}\n{}",
                server.log()
            );
            adopted_total += 1;
            let stored = stored_counters(&server, &client.session).await;
            let missing: Vec<&u64> = client.acknowledged.difference(&stored).collect();
            assert!(
                missing.is_empty(),
                "round {round}: acknowledged but not stored: {missing:?}"
            );
            // The interpreter kept its state: at least every acknowledged execution ran.
            let highest = client.acknowledged.iter().max().copied().unwrap_or(0);
            let state = server.execute(&client.session, "n").await;
            let value: u64 = state["result"]["text/plain"]
                .as_str()
                .and_then(|text| text.parse().ok())
                .unwrap_or(0);
            assert!(
                value >= highest,
                "round {round}: n = {value} < {highest} acknowledged"
            );
        }
    }
    eprintln!(
        "chaos: {ROUNDS} kill -9 rounds, {acknowledged_total} executions acknowledged and found, \
         {adopted_total} session adoptions"
    );
    assert!(acknowledged_total > 0, "the clients ran executions");

    // Nothing leaks: close every session, stop, and look.
    for client in &clients {
        let (status, _) = server
            .delete(&format!("/v1/sessions/{}", client.session))
            .await;
        assert_eq!(status, 200);
    }
    let data_dir = server.data_dir.clone();
    let status = server.stop_with(Signal::SIGTERM);
    assert!(status.success(), "{status:?}\n{}", server.log());
    let deadline = Instant::now() + DEADLINE;
    while !launchers_of(&data_dir).is_empty() {
        assert!(Instant::now() < deadline, "workers left behind");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reap_orphans();
    for pid in &server_pids {
        for controller in ["memory", "pids", "cpu", ""] {
            let parent = std::path::Path::new("/sys/fs/cgroup")
                .join(controller)
                .join("corral");
            let prefix = format!("{pid}-");
            let left: Vec<String> = std::fs::read_dir(&parent)
                .into_iter()
                .flatten()
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(&prefix))
                .collect();
            assert!(left.is_empty(), "cgroups left: {left:?}");
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let pids: Vec<String> = server_pids.iter().map(|pid| format!("/{pid}-")).collect();
    let leaked: Vec<&str> = mountinfo
        .lines()
        .filter(|line| {
            line.split(' ').nth(4).is_some_and(|mount| {
                mount.starts_with(&*data_dir.to_string_lossy())
                    || (mount.starts_with("/run/corral/workspaces")
                        && pids.iter().any(|pid| mount.contains(pid.as_str())))
            })
        })
        .collect();
    assert!(leaked.is_empty(), "mounts left: {leaked:?}");
    let integrity = std::process::Command::new(python())
        .args([
            "-c",
            "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])",
        ])
        .arg(data_dir.join("corral.sqlite3"))
        .output()
        .expect("integrity check");
    assert_eq!(
        String::from_utf8_lossy(&integrity.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&integrity.stderr)
    );
}
