//! One engine behind every surface: a session created through any API is a corral session,
//! visible with its own id through the native API and `corral sessions list`, runs code
//! natively, and closing it through any other API closes it everywhere (its creator's list
//! no longer shows it).

mod support;

use std::process::Command;

use serde_json::{json, Value};
use support::TestServer;

/// Creates a session through `surface`; returns the corral session id.
async fn create_through(server: &TestServer, surface: &str, label: &str) -> String {
    let (status, body) = match surface {
        "native" => server.post("/v1/sessions", json!({})).await,
        "python_rce" => server.post("/sessions/create", json!(null)).await,
        "e2b" => {
            server
                .post("/e2b/sessions?api_key=k", json!({"codeSnippetID": label}))
                .await
        }
        "agents" => {
            let response = server
                .http
                .put(server.url(&format!("/agents/sessions/{label}")))
                .json(&json!({}))
                .send()
                .await;
            support::response(response).await
        }
        "jupyter_kernel" => {
            server
                .post("/api/kernels", json!({"name": "python3"}))
                .await
        }
        "jupyter_session" => {
            server
                .post(
                    "/api/sessions",
                    json!({"path": format!("{label}.ipynb"), "type": "notebook"}),
                )
                .await
        }
        "qiskit" => {
            server
                .post("/api/v1/sessions", json!({"mode": "dedicated"}))
                .await
        }
        other => panic!("no creator for {other}"),
    };
    assert!(status < 300, "{surface}: {status} {body}");
    let id = match surface {
        "native" => &body["id"],
        "python_rce" => &body["session_id"],
        "e2b" => &body["sessionID"],
        "agents" => &body["session"]["agent_id"],
        "jupyter_kernel" => &body["id"],
        "jupyter_session" => &body["kernel"]["id"],
        "qiskit" => &body["id"],
        _ => unreachable!(),
    };
    id.as_str().expect("session id").to_owned()
}

/// Closes the corral session `id` through `surface`.
async fn close_through(server: &TestServer, surface: &str, id: &str) {
    let (status, body) = match surface {
        "native" => server.delete(&format!("/v1/sessions/{id}")).await,
        "python_rce" => {
            server
                .post("/sessions/close", json!({"session_id": id}))
                .await
        }
        "e2b" => {
            server
                .delete(&format!("/e2b/sessions/{id}?api_key=k"))
                .await
        }
        "jupyter_kernel" => server.delete(&format!("/api/kernels/{id}")).await,
        "qiskit" => server.delete(&format!("/api/v1/sessions/{id}/close")).await,
        other => panic!("no closer for {other}"),
    };
    assert!(status < 300, "closing through {surface}: {status} {body}");
}

/// Whether the creator's own listing still shows the session.
async fn listed_by(server: &TestServer, surface: &str, id: &str) -> bool {
    let (status, body) = match surface {
        "native" => server.get("/v1/sessions?state=idle").await,
        "python_rce" => server.get("/sessions/list").await,
        "e2b" => server.get("/e2b/sessions?api_key=k").await,
        "agents" => server.get("/agents/sessions").await,
        "jupyter_kernel" => server.get("/api/kernels").await,
        "jupyter_session" => server.get("/api/sessions").await,
        // Qiskit has no listing: its view of one session is the listing.
        "qiskit" => {
            let (status, body) = server.get(&format!("/api/v1/sessions/{id}")).await;
            return status == 200 && body["state"] != "closed";
        }
        other => panic!("no listing for {other}"),
    };
    assert_eq!(status, 200, "{surface}: {body}");
    body.to_string().contains(id)
}

fn corral_sessions_list(server: &TestServer) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["sessions", "list", "--json", "--server", &server.url])
        .output()
        .expect("corral sessions list");
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).expect("json")
}

#[tokio::test]
async fn sessions_from_every_surface_are_one_kind_of_session() {
    let server = TestServer::start();
    let creators = [
        "native",
        "python_rce",
        "e2b",
        "agents",
        "jupyter_kernel",
        "jupyter_session",
        "qiskit",
    ];
    let closers = ["native", "python_rce", "e2b", "jupyter_kernel", "qiskit"];
    let mut created = Vec::new();
    for (index, surface) in creators.iter().enumerate() {
        let id = create_through(&server, surface, &format!("made-by-{surface}")).await;
        let (status, native) = server.get(&format!("/v1/sessions/{id}")).await;
        assert_eq!(
            (status, native["state"].as_str()),
            (200, Some("idle")),
            "{native}"
        );
        let execution = server.execute(&id, "21 * 2").await;
        assert_eq!(
            execution["result"]["text/plain"], "42",
            "{surface}: {execution}"
        );
        assert!(
            listed_by(&server, surface, &id).await,
            "{surface} lists {id}"
        );
        created.push((index, *surface, id));
    }
    let listed = corral_sessions_list(&server).to_string();
    for (_, surface, id) in &created {
        assert!(
            listed.contains(id.as_str()),
            "{surface}'s {id} not in `corral sessions list`"
        );
    }
    for (index, creator, id) in &created {
        // Closed through another surface than the one that created it.
        let closer = closers[(index + 1) % closers.len()];
        close_through(&server, closer, id).await;
        let (_, native) = server.get(&format!("/v1/sessions/{id}")).await;
        assert_eq!(
            native["state"], "closed",
            "{creator} closed by {closer}: {native}"
        );
        assert!(
            !listed_by(&server, creator, id).await,
            "{creator} still lists {id} closed by {closer}"
        );
    }
    server.wait_for_children(0).await;
}
