//! Mount points of the compatibility surfaces: `--mount SURFACE=PATH` / `[mounts]`, turning a
//! surface `off`, surfaces sharing a prefix when their routes do not collide, refusal at
//! start (naming the routes) when they do, and one OpenAPI tag per mounted surface.

mod support;

use std::process::{Command, Output};

use serde_json::json;
use support::TestServer;

/// `corral serve` with `arguments`, expected to refuse before it listens.
fn refused_start(arguments: &[&str]) -> (Output, String) {
    let temp = tempfile::tempdir().expect("temporary directory");
    let data_dir = temp.path().join("data");
    let output = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .args(arguments)
        .env_remove("CORRAL_CONFIG")
        .env_remove("CORRAL_MOUNT")
        .output()
        .expect("run corral serve");
    assert!(!output.status.success(), "the server started: {output:?}");
    assert!(
        !data_dir.exists(),
        "a refused configuration created the data directory"
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stderr)
}

#[test]
fn colliding_mounts_are_refused_at_start_naming_the_routes() {
    // E2B's `GET /sessions` under `/v1` is the native `GET /v1/sessions`.
    let (_, stderr) = refused_start(&["--mount", "e2b=/v1"]);
    assert!(
        stderr
            .contains("native GET /v1/sessions and e2b GET /v1/sessions answer the same requests"),
        "{stderr}"
    );
    assert!(
        stderr.contains("native POST /v1/sessions and e2b POST /v1/sessions"),
        "{stderr}"
    );
    // The same refusal from the config file.
    let temp = tempfile::tempdir().expect("temporary directory");
    let config = temp.path().join("corral.toml");
    std::fs::write(&config, "[mounts]\ne2b = \"/v1\"\n").expect("config file");
    let (_, stderr) = refused_start(&["--config", config.to_str().expect("utf-8 path")]);
    assert!(stderr.contains("e2b GET /v1/sessions"), "{stderr}");
}

#[test]
fn surfaces_moved_onto_each_other_are_refused() {
    // E2B and the agent sessions API both list with `GET /sessions`, and name the
    // `/sessions/{...}` parameter differently.
    let (_, stderr) = refused_start(&["--mount", "e2b=/x", "--mount", "agents=/x"]);
    assert!(
        stderr.contains("e2b GET /x/sessions and agents GET /x/sessions answer the same requests"),
        "{stderr}"
    );
    assert!(
        stderr.contains("e2b DELETE /x/sessions/{sessionID} and agents DELETE /x/sessions/{identifier} answer the same requests"),
        "{stderr}"
    );
    // python_rce's `GET /sessions/list` is also an agent `GET /sessions/{identifier}`.
    let (_, stderr) = refused_start(&["--mount", "agents=/"]);
    assert!(
        stderr.contains("python_rce GET /sessions/list and agents GET /sessions/{identifier} answer the same requests"),
        "{stderr}"
    );
}

#[test]
fn unknown_surfaces_and_malformed_mounts_are_refused() {
    let (_, stderr) = refused_start(&["--mount", "nope=/x"]);
    assert!(
        stderr.contains("unknown surface \"nope\"") && stderr.contains("e2b"),
        "{stderr}"
    );
    let (_, stderr) = refused_start(&["--mount", "e2b"]);
    assert!(stderr.contains("SURFACE=PATH"), "{stderr}");
    let (_, stderr) = refused_start(&["--mount", "e2b=no-slash"]);
    assert!(
        stderr.contains("must be \"off\" or start with '/'"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_surface_can_be_moved_or_turned_off() {
    let server =
        TestServer::start_with_arguments("", &["--mount", "e2b=off", "--mount", "python_rce=/rce"]);
    let (status, _) = server.get("/e2b/sessions?api_key=k").await;
    assert_eq!(status, 404);
    let (status, listed) = server.get("/rce/sessions/list").await;
    assert_eq!((status, &listed["sessions"]), (200, &json!([])));
    let (status, _) = server.get("/sessions/list").await;
    assert_eq!(status, 404);

    let (_, document) = server.get("/openapi.json").await;
    let tags: Vec<&str> = document["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|tag| tag["name"].as_str())
        .collect();
    assert!(
        tags.contains(&"python_rce") && !tags.contains(&"e2b"),
        "{tags:?}"
    );
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.contains_key("/rce/sessions/list"));
    assert!(
        !paths.keys().any(|path| path.starts_with("/e2b")),
        "{paths:?}"
    );
}

#[tokio::test]
async fn surfaces_whose_routes_do_not_collide_share_a_prefix() {
    // python_rce (`/sessions/create`, `/sessions/list`, ...) and E2B (`/sessions`,
    // `/sessions/{sessionID}`) both at the root.
    let server = TestServer::start_with_arguments("", &["--mount", "e2b=/"]);
    let (status, e2b_session) = server
        .post("/sessions?api_key=k", json!({"codeSnippetID": "snippet"}))
        .await;
    assert_eq!(status, 201, "{e2b_session}");
    assert_eq!(e2b_session["codeSnippetID"], "snippet");
    let (status, created) = server.post("/sessions/create", json!(null)).await;
    assert_eq!(status, 200, "{created}");
    let (status, listed) = server.get("/sessions/list").await;
    assert_eq!(status, 200);
    assert_eq!(listed["sessions"].as_array().expect("sessions").len(), 2);
}

#[tokio::test]
async fn every_mounted_surface_has_its_own_tag_on_every_operation() {
    let server = TestServer::start();
    let (_, document) = server.get("/openapi.json").await;
    let tags: Vec<String> = document["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|tag| tag["name"].as_str().map(str::to_owned))
        .collect();
    for surface in ["python_rce", "e2b", "agents", "jupyter", "qiskit"] {
        assert!(tags.iter().any(|tag| tag == surface), "{surface}: {tags:?}");
    }
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("item") {
            let operation_tags = operation["tags"].as_array().expect("operation tags");
            assert!(
                operation_tags.iter().all(|tag| tags
                    .iter()
                    .any(|known| Some(known.as_str()) == tag.as_str())),
                "{method} {path}: {operation_tags:?}"
            );
            assert_eq!(operation_tags.len(), 1, "{method} {path}");
        }
    }
}
