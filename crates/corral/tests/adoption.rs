//! Sessions outlive the server: after `kill -9`, or a stop with `--shutdown-mode detach`, the
//! next server on the data directory adopts every worker still alive — same id, variables,
//! files, execution count and TTL clocks; an execution running at the crash is recorded as
//! interrupted; workers nobody adopts end themselves after `adoption_timeout_seconds` and
//! leave no process, cgroup or mount behind; a warm pool's idle workers are not adopted.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{json, Value};
use support::{launchers_of, reap_orphans, TestServer, DEADLINE};

/// Waits, up to the deadline, until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn alive(pid: u32) -> bool {
    reap_orphans();
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn mounted(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(path))
}

async fn metric(server: &TestServer, name: &str) -> f64 {
    let text = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find(|line| line.starts_with(name))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn kill_9_keeps_every_session_with_its_state() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let other = server.create_session().await;
    server
        .execute(&id, "x = 41\nopen('kept.txt', 'w').write('kept')")
        .await;
    server.execute(&other, "y = 'other'").await;
    server.execute(&id, "print('second')").await;
    let (_, before) = server.get(&format!("/v1/sessions/{id}")).await;
    let launchers = launchers_of(&server.data_dir);
    assert_eq!(
        launchers.len(),
        2,
        "one launcher per session: {launchers:?}"
    );

    let server = server.restart_with(Signal::SIGKILL);
    for (pid, _) in &launchers {
        assert!(alive(*pid), "the worker {pid} outlived the server");
    }
    let (status, after) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(after["state"], "idle", "{after}\n{}", server.log());
    assert_eq!(after["state_reason"], Value::Null);
    assert_eq!(after["accepting_executions"], true);
    assert_eq!(after["execution_count"], 2);
    for field in [
        "created_at",
        "last_activity_at",
        "expires_at",
        "runtime",
        "limits",
        "idle_ttl",
    ] {
        assert_eq!(after[field], before[field], "{field} kept");
    }

    let next = server
        .execute(&id, "print(open('kept.txt').read())\nx + 1")
        .await;
    assert_eq!(next["status"], "ok", "{next}");
    assert_eq!(next["execution_count"], 3);
    assert_eq!(next["stdout"], "kept\n");
    assert_eq!(next["result"]["text/plain"], "42");
    let (_, history) = server.get(&format!("/v1/sessions/{id}/executions")).await;
    let counts: Vec<&Value> = history["executions"]
        .as_array()
        .expect("executions")
        .iter()
        .map(|execution| &execution["execution_count"])
        .collect();
    assert_eq!(counts, [&json!(1), &json!(2), &json!(3)]);
    assert_eq!(
        server.execute(&other, "y").await["result"]["text/plain"],
        "'other'"
    );
    assert_eq!(metric(&server, "corral_sessions_adopted_total").await, 2.0);
    assert!(server
        .log()
        .contains("sessions of the previous run adopted"));

    // Adopted sessions close like any other, and their workers go.
    let (status, closed) = server.delete(&format!("/v1/sessions/{id}")).await;
    assert_eq!((status, &closed["state"]), (200, &json!("closed")));
    eventually("the closed session's worker ends", || {
        launchers_of(&server.data_dir).len() == 1
    })
    .await;
}

#[tokio::test]
async fn a_detached_stop_leaves_the_sessions_to_the_next_server() {
    let mut server = TestServer::start_with_arguments("", &["--shutdown-mode", "detach"]);
    let id = server.create_session().await;
    server.execute(&id, "import os\nstate = [1, 2, 3]").await;
    let status = server.stop_with(Signal::SIGTERM);
    assert!(status.success(), "{status:?}\n{}", server.log());
    assert!(
        server
            .log()
            .contains("sessions left running for the next server"),
        "{}",
        server.log()
    );
    assert_eq!(launchers_of(&server.data_dir).len(), 1, "the worker waits");

    let server = server.restart_with(Signal::SIGTERM);
    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(session["state"], "idle", "{session}\n{}", server.log());
    let next = server.execute(&id, "sum(state)").await;
    assert_eq!(next["result"]["text/plain"], "6");
    assert_eq!(next["execution_count"], 2);
}

#[tokio::test]
async fn the_default_stop_still_closes_the_sessions() {
    let mut server = TestServer::start();
    let id = server.create_session().await;
    server.execute(&id, "1").await;
    let status = server.stop_with(Signal::SIGTERM);
    assert!(status.success());
    let data_dir = server.data_dir.clone();
    eventually("the worker ends with a closing stop", || {
        launchers_of(&data_dir).is_empty()
    })
    .await;
    let server = server.restart_with(Signal::SIGTERM);
    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(
        (&session["state"], &session["state_reason"]),
        (&json!("closed"), &json!("server shutdown"))
    );
}

#[tokio::test]
async fn an_execution_running_at_the_crash_is_recorded_as_interrupted() {
    let server = TestServer::start();
    let id = server.create_session().await;
    server.execute(&id, "total = 0").await;
    let running = server.execute_in_background(
        &id,
        "import time\nfor _ in range(100000):\n    total += 1\n    print('tick', total, flush=True)\n    time.sleep(0.01)",
    );
    server.wait_for_state(&id, "busy").await;
    let server = server.restart_with(Signal::SIGKILL);
    let _ = running.await;

    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(session["state"], "idle", "{session}\n{}", server.log());
    assert_eq!(session["execution_count"], 2);
    let (status, interrupted) = server.get(&format!("/v1/sessions/{id}/executions/2")).await;
    assert_eq!(status, 200, "{interrupted}");
    assert_eq!(interrupted["status"], "interrupted");
    assert_eq!(interrupted["error"]["ename"], "ServerRestarted");
    let evalue = interrupted["error"]["evalue"].as_str().unwrap_or_default();
    assert!(evalue.contains("interrupted"), "{evalue}");
    // What the cell printed after the crash, which no server had read, is kept (markers
    // removed), and so is the interrupt's traceback.
    let stdout = interrupted["stdout"].as_str().unwrap_or_default();
    assert!(stdout.contains("tick"), "{interrupted}");
    assert!(!stdout.contains("CORRAL-SYNC"), "{interrupted}");
    let traceback = interrupted["error"]["traceback"].to_string();
    assert!(traceback.contains("KeyboardInterrupt"), "{interrupted}");
    // The interrupted loop's work so far is still in the interpreter.
    let next = server.execute(&id, "total > 0").await;
    assert_eq!(next["execution_count"], 3);
    assert_eq!(next["result"]["text/plain"], "True");
}

#[tokio::test]
async fn orphans_nobody_adopts_end_themselves_and_leave_nothing_behind() {
    let mut server = TestServer::start_with_config("adoption_timeout_seconds = 1\n");
    let id = server.create_session().await;
    server.execute(&id, "1").await;
    let launchers = launchers_of(&server.data_dir);
    assert_eq!(launchers.len(), 1);
    let (pid, policy) = launchers[0].clone();
    let cgroups: Vec<PathBuf> = policy["cgroup_procs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|procs| procs.as_str().and_then(|procs| Path::new(procs).parent()))
        .map(Path::to_owned)
        .collect();
    let workspace_mount = policy["workspace_mount"].as_str().map(str::to_owned);
    let root = policy["root_dir"].as_str().map(PathBuf::from);

    server.stop_with(Signal::SIGKILL);
    eventually(
        "the orphaned worker ends after the adoption timeout",
        || !alive(pid),
    )
    .await;
    eventually("its cgroups are removed", || {
        cgroups.iter().all(|cgroup| !cgroup.exists())
    })
    .await;
    if let Some(mount) = &workspace_mount {
        assert!(!mounted(mount), "the workspace {mount} is unmounted");
    }
    if let Some(root) = &root {
        assert!(!root.exists(), "{} removed", root.display());
    }
    assert!(launchers_of(&server.data_dir).is_empty());

    // The next server finds nothing to adopt: the session is dead.
    let server = server.restart_with(Signal::SIGTERM);
    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(
        (&session["state"], &session["state_reason"]),
        (&json!("dead"), &json!("server restarted"))
    );
}

#[tokio::test]
async fn a_warm_pools_idle_workers_are_ended_not_adopted() {
    let server = TestServer::start_with_arguments("", &["--pool-size", "2"]);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, info) = server.get("/v1/info").await;
        if info["pool"]["ready"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the pool never filled: {info}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = server.create_session().await;
    server.execute(&id, "kept = True").await;
    // The pool refills after the create; a launcher killed before it listens on its keeper
    // socket is invisible to the next server (it ends itself after the adoption timeout), so
    // the crash comes once the refill is ready.
    loop {
        let (_, info) = server.get("/v1/info").await;
        if info["pool"]["ready"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the pool never refilled: {info}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before: Vec<u32> = launchers_of(&server.data_dir)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(
        before.len(),
        3,
        "the session's worker and two in the pool: {before:?}"
    );

    let server = server.restart_with(Signal::SIGKILL);
    assert_eq!(
        server.execute(&id, "kept").await["result"]["text/plain"],
        "True"
    );
    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(session["state"], "idle");
    // Of the previous server's workers only the session's is still running (the others' launchers
    // end once they have released what they held).
    loop {
        let survivors: Vec<u32> = before.iter().copied().filter(|pid| alive(*pid)).collect();
        if survivors.len() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{survivors:?} of {before:?}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(server.log().contains("a worker no session owns was ended"));
}
