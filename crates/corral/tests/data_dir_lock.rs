//! One server per data directory: a second `corral serve` on a directory in use refuses to
//! start, names the running server's pid and address and leaves its sessions alone; the lock
//! goes with the server however it ends (a clean stop, `kill -9`); offline commands that write
//! the store keep working while a server runs.

mod support;

use std::process::{Command, Stdio};

use nix::sys::signal::Signal;
use serde_json::json;
use support::TestServer;

/// Runs a second `corral serve` on `server`'s data directory; it must exit by itself.
fn second_server(server: &TestServer) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(&server.data_dir)
        .args(["--python", &support::python()])
        .env_remove("CORRAL_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run a second corral serve")
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_refuses_and_names_the_first() {
    let server = TestServer::start();
    let id = server.create_session().await;
    server.execute(&id, "x = 41").await;

    let second = second_server(&server);
    assert!(!second.status.success(), "the second server started");
    let message = String::from_utf8_lossy(&second.stderr);
    assert!(
        message.contains("another corral server")
            && message.contains(&format!("pid {}", server.pid()))
            && message.contains(&server.url),
        "{message}"
    );
    assert!(
        message.contains(&server.data_dir.display().to_string()),
        "the message names the directory: {message}"
    );

    // The first server's sessions were not touched: still live, state intact.
    let (status, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!((status, &session["state"]), (200, &json!("idle")));
    assert_eq!(
        server.execute(&id, "x + 1").await["result"]["text/plain"],
        "42"
    );
}

#[tokio::test]
async fn the_lock_is_released_by_a_clean_stop_and_by_kill_9() {
    let server = TestServer::start();
    let server = server.restart_with(Signal::SIGTERM);
    let id = server.create_session().await;
    // The kernel drops the lock of a killed process: the next start is not blocked.
    let server = server.restart_without_workers();
    let (status, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!((status, &session["state"]), (200, &json!("dead")));
    // And the restarted server holds it again.
    let second = second_server(&server);
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains(&format!("pid {}", server.pid())),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
}

#[tokio::test]
async fn offline_key_creation_works_while_a_server_runs() {
    let server = TestServer::start();
    let key = server.corral_key(&["--scope", "admin"]);
    let (status, _) = support::response(
        server
            .http
            .get(server.url("/v1/sessions"))
            .bearer_auth(&key)
            .send()
            .await,
    )
    .await;
    assert_eq!(status, 200, "the running server accepts the new key");
}
