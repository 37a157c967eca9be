//! Workers forked by a runtime's zygote (`[pool] zygote = true`): they are the zygote's
//! children on the host but live in their session's sandbox, with no capabilities, the seccomp
//! filter and the session's rlimits; the zygote is out of their reach; interrupts, exit
//! statuses and a server's restart work as for any sandboxed worker. The isolation checks
//! shared with pool-born sessions are in `warm_pool.rs`.

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::json;
use support::{child_pids, value, TestServer, DEADLINE};

const CONFIG: &str = "[pool]\nzygote = true\nsize = 2\n";

/// The server's zygote: its child running `zygote-*.py`.
fn zygote_of(server: &TestServer) -> u32 {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let found = child_pids(server.pid()).into_iter().find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| String::from_utf8_lossy(&cmdline).contains("\0zygote-"))
                .unwrap_or(false)
        });
        if let Some(pid) = found {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no zygote among the server's children\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the zygote has `count` workers: each is the only child of one of the
/// zygote's children (the joining process that stays as its reaper). Returns the
/// (reaper, worker) pairs.
async fn wait_for_workers(zygote: u32, count: usize) -> Vec<(u32, u32)> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let workers: Vec<(u32, u32)> = child_pids(zygote)
            .into_iter()
            .flat_map(|reaper| {
                child_pids(reaper)
                    .into_iter()
                    .map(move |worker| (reaper, worker))
            })
            .collect();
        if workers.len() == count {
            return workers;
        }
        assert!(
            Instant::now() < deadline,
            "the zygote has {workers:?}, not {count} workers"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `field` line of `/proc/PID/status`.
fn status_line(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} for {pid}"))
        .to_owned()
}

#[tokio::test]
async fn a_zygote_forks_sandboxed_workers_that_cannot_reach_it() {
    let server = TestServer::start_with_config(CONFIG);
    if server.get("/v1/info").await.1["isolation"]["sandboxed"] != true {
        return; // a zygote joins sandboxes; an unsandboxed host has none
    }
    let zygote = zygote_of(&server);
    wait_for_workers(zygote, 2).await;
    let id = server.create_session().await;
    // The pool refills from the zygote: two idle workers and the session's.
    let workers = wait_for_workers(zygote, 3).await;

    // The session's interpreter is one of them (its host pid, seen from its PID namespace).
    let ns_pid = value(&server, &id, "import os; os.getpid()").await;
    let (reaper, host_pid) = workers
        .iter()
        .copied()
        .find(|(_, pid)| {
            status_line(*pid, "NSpid:").split_whitespace().last() == Some(ns_pid.as_str())
        })
        .unwrap_or_else(|| panic!("no zygote worker is the session's pid {ns_pid}: {workers:?}"));
    for (field, wanted) in [
        ("CapEff:", "0000000000000000"),
        ("CapPrm:", "0000000000000000"),
        ("CapBnd:", "0000000000000000"),
        ("NoNewPrivs:", "1"),
        ("Seccomp:", "2"),
    ] {
        let line = status_line(host_pid, field);
        assert!(line.ends_with(wanted), "worker {line} (wanted {wanted})");
    }
    // Its reaper keeps no capability either, and is in no namespace of the session's that
    // would let the session reach it (it is outside the session's PID namespace).
    for field in ["CapEff:", "CapPrm:", "CapBnd:"] {
        let line = status_line(reaper, field);
        assert!(line.ends_with("0000000000000000"), "reaper {line}");
    }
    assert_eq!(
        status_line(reaper, "NSpid:").split_whitespace().count(),
        2,
        "NSpid: pid only on the host"
    );
    // It is `corral sandbox-reap`, not a copy of the zygote.
    let command = std::fs::read(format!("/proc/{reaper}/cmdline")).expect("reaper cmdline");
    let command = String::from_utf8_lossy(&command).replace('\0', " ");
    assert!(command.contains("sandbox-reap"), "{command}");
    // In the session's cgroup and namespaces, not the zygote's.
    let (zygote_ns, worker_ns) = (
        std::fs::read_link(format!("/proc/{zygote}/ns/pid")).expect("zygote ns"),
        std::fs::read_link(format!("/proc/{host_pid}/ns/pid")).expect("worker ns"),
    );
    assert_ne!(zygote_ns, worker_ns);
    assert_ne!(
        std::fs::read_to_string(format!("/proc/{zygote}/cgroup")).expect("zygote cgroup"),
        std::fs::read_to_string(format!("/proc/{host_pid}/cgroup")).expect("worker cgroup"),
    );

    // Inside: root of its own user namespace with nothing else, the session's rlimits, and
    // the zygote neither visible nor signallable.
    assert_eq!(
        value(
            &server,
            &id,
            "import os; (os.getuid(), os.getgid(), os.getgroups())"
        )
        .await,
        "(0, 0, [])"
    );
    assert_eq!(
        value(
            &server,
            &id,
            "import resource; resource.getrlimit(resource.RLIMIT_NOFILE)"
        )
        .await,
        "(1024, 1024)"
    );
    let reach = format!(
        "import os\ntry:\n    os.kill({zygote}, 0)\n    r = 'signalled'\nexcept ProcessLookupError:\n    r = 'no such process'\nexcept PermissionError:\n    r = 'refused'\n(r, os.path.exists('/proc/{zygote}'))"
    );
    assert_eq!(
        value(&server, &id, &reach).await,
        "('no such process', False)"
    );
    // Its parent is outside its PID namespace (the zygote), so it sees none.
    assert_eq!(value(&server, &id, "import os; os.getppid()").await, "0");
    // The driver and the state work as in any session.
    server.execute(&id, "kept = 41").await;
    assert_eq!(value(&server, &id, "kept + 1").await, "42");
}

#[tokio::test]
async fn a_zygote_born_worker_is_interrupted_and_its_exit_status_reported() {
    let server = TestServer::start_with_config(CONFIG);
    if server.get("/v1/info").await.1["isolation"]["sandboxed"] != true {
        return;
    }
    zygote_of(&server);
    let id = server.create_session().await;
    let (status, timed_out) = server
        .post(
            &format!("/v1/sessions/{id}/executions"),
            json!({"code": "import time\nprint('started', flush=True)\ntime.sleep(60)", "timeout": 0.5}),
        )
        .await;
    assert_eq!(status, 200, "{timed_out}");
    assert_eq!(timed_out["status"], "timeout", "{timed_out}");
    assert_eq!(value(&server, &id, "'still here'").await, "'still here'");

    let (status, exited) = server
        .post(
            &format!("/v1/sessions/{id}/executions"),
            json!({"code": "import os; os._exit(3)"}),
        )
        .await;
    assert_eq!(status, 200, "{exited}");
    let dead = server.wait_for_state(&id, "dead").await;
    assert_eq!(
        dead["state_reason"], "worker exited with status 3",
        "{dead}"
    );
}

#[tokio::test]
async fn zygote_born_sessions_outlive_a_server_restart() {
    let server = TestServer::start_with_config(CONFIG);
    if server.get("/v1/info").await.1["isolation"]["sandboxed"] != true {
        return;
    }
    let first_zygote = zygote_of(&server);
    let id = server.create_session().await;
    server.execute(&id, "kept = 'across'").await;

    let server = server.restart_with(Signal::SIGKILL);
    assert_eq!(value(&server, &id, "kept").await, "'across'");
    // A new zygote serves the new server; the old one died with its server.
    let zygote = zygote_of(&server);
    assert_ne!(zygote, first_zygote);
    let fresh = server.create_session().await;
    assert_eq!(value(&server, &fresh, "1 + 1").await, "2");
    // The adopted worker still ends cleanly when its session is closed.
    let (status, _) = server.delete(&format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 200);
}
