//! Sessions and executions survive a server stop: after `kill -9` of the server and its
//! workers live sessions come back `dead` with reason `server restarted` (with their workers
//! alive they are adopted: `tests/adoption.rs`), after a clean stop (SIGTERM) `closed` with reason
//! `server shutdown`; either way every acknowledged execution is readable.

mod support;

use nix::sys::signal::Signal;
use serde_json::json;
use support::TestServer;

async fn survives(signal: Signal, state: &str, reason: &str) {
    let server = TestServer::start();
    let id = server.create_session().await;
    let closed = server.create_session().await;
    server.delete(&format!("/v1/sessions/{closed}")).await;
    let mut acknowledged = Vec::new();
    for n in 0..5 {
        let execution = server.execute(&id, &format!("print({n})\n{n} * 2")).await;
        acknowledged.push(execution);
    }
    // A killed server's workers would be adopted (tests/adoption.rs): here they die too.
    let server = if signal == Signal::SIGKILL {
        server.restart_without_workers()
    } else {
        server.restart_with(signal)
    };

    let (status, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(session["state"], state);
    assert_eq!(session["state_reason"], reason);
    assert_eq!(session["execution_count"], 5);
    let (_, closed_session) = server.get(&format!("/v1/sessions/{closed}")).await;
    assert_eq!(
        closed_session["state"], "closed",
        "ended sessions keep their state"
    );
    assert_eq!(closed_session["state_reason"], "closed by client");

    let (_, ended) = server.get(&format!("/v1/sessions?state={state}")).await;
    assert!(
        ended["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .any(|session| session["id"] == id.as_str()),
        "{ended}"
    );

    let (status, history) = server.get(&format!("/v1/sessions/{id}/executions")).await;
    assert_eq!(status, 200);
    assert_eq!(history["executions"], json!(acknowledged));

    let (status, problem) = server
        .post(
            &format!("/v1/sessions/{id}/executions"),
            json!({"code": "1"}),
        )
        .await;
    assert_eq!((status, &problem["state_reason"]), (409, &json!(reason)));
    // New sessions work as usual after the restart.
    let fresh = server.create_session().await;
    assert_eq!(server.execute(&fresh, "1").await["execution_count"], 1);
}

#[tokio::test]
async fn survives_kill_9() {
    survives(Signal::SIGKILL, "dead", "server restarted").await;
}

#[tokio::test]
async fn survives_sigterm() {
    survives(Signal::SIGTERM, "closed", "server shutdown").await;
}

#[tokio::test]
async fn sigterm_exits_cleanly_and_stops_the_workers() {
    let mut server = TestServer::start();
    let id = server.create_session().await;
    server.execute(&id, "1").await;
    let workers = server.child_pids();
    assert_eq!(workers.len(), 1);
    let status = server.stop_with(Signal::SIGTERM);
    assert!(status.success(), "{status:?}\n{}", server.log());
    for pid in workers {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty()
                || stat
                    .rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
            "worker {pid} outlived the server"
        );
    }
}
