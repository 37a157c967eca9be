//! Configuration and logs against the real binary: `serve --print-config` shows the effective
//! configuration with each value's origin (defaults < config file < environment < flags) and
//! starts nothing; `--log-format json` writes one JSON object per line, and every line of a
//! request carries its request id, which the response repeats.

mod support;

use std::process::Command;
use std::time::Instant;

use support::{TestServer, DEADLINE};

/// `key = value  # origin` lines of a section, as (value, origin).
fn annotated(output: &str, section: &str, key: &str) -> (toml::Value, String) {
    let mut current = String::new();
    for line in output.lines() {
        if let Some(name) = line
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            current = name.to_owned();
            continue;
        }
        if current != section {
            continue;
        }
        let Some((assignment, origin)) = line.split_once("  # ") else {
            continue;
        };
        let Some((name, _)) = assignment.split_once(" = ") else {
            continue;
        };
        if name == key {
            let table: toml::Table = toml::from_str(assignment).expect("a TOML assignment");
            return (table[key].clone(), origin.to_owned());
        }
    }
    panic!("no {section}.{key} in:\n{output}");
}

#[test]
fn print_config_shows_values_with_their_origin_and_exits() {
    let temp = tempfile::tempdir().expect("temporary directory");
    let config = temp.path().join("corral.toml");
    std::fs::write(
        &config,
        "bind = \"127.0.0.1:1111\"\nshutdown_grace_seconds = 4\n[limits]\nmax_sessions = 7\n[mounts]\npython_rce = \"/from-file\"\ne2b = \"/from-file\"\n",
    )
    .expect("config file");
    let data_dir = temp.path().join("data");
    let output = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["serve", "--print-config", "--config"])
        .arg(&config)
        .args(["--mount", "python_rce=/from-flag", "--log-format", "text"])
        .env("CORRAL_DATA_DIR", &data_dir)
        .env("CORRAL_BIND", "127.0.0.1:2222")
        .env("CORRAL_LOG_FORMAT", "json")
        .env_remove("CORRAL_PYTHON")
        .env_remove("CORRAL_CONFIG")
        .output()
        .expect("run corral serve --print-config");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The whole output is a valid config file.
    toml::from_str::<toml::Table>(&stdout).expect("valid TOML");
    let check = |section: &str, key: &str, value: toml::Value, origin: &str| {
        assert_eq!(
            annotated(&stdout, section, key),
            (value, origin.to_owned()),
            "{section}.{key}"
        );
    };
    check(
        "",
        "bind",
        "127.0.0.1:2222".into(),
        "environment CORRAL_BIND",
    );
    check(
        "",
        "data_dir",
        data_dir.display().to_string().into(),
        "environment CORRAL_DATA_DIR",
    );
    check("", "python", "python3".into(), "default");
    check("", "shutdown_grace_seconds", 4.0.into(), "config file");
    check("", "log_format", "text".into(), "flag --log-format");
    check("limits", "max_sessions", 7.into(), "config file");
    check("limits", "idle_ttl_seconds", 1800.0.into(), "default");
    check("mounts", "python_rce", "/from-flag".into(), "flag --mount");
    check("mounts", "e2b", "/from-file".into(), "config file");
    check("sandbox", "insecure_no_sandbox", false.into(), "default");
    // Printing starts nothing.
    assert!(
        !data_dir.exists(),
        "--print-config created the data directory"
    );
}

#[test]
fn print_config_rejects_an_invalid_configuration() {
    let temp = tempfile::tempdir().expect("temporary directory");
    let config = temp.path().join("corral.toml");
    std::fs::write(&config, "[limits]\nmax_sessions = 0\n").expect("config file");
    let output = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["serve", "--print-config", "--config"])
        .arg(&config)
        .env_remove("CORRAL_CONFIG")
        .output()
        .expect("run corral");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("max_sessions"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn config_file_errors_name_the_key_without_rust_types() {
    let temp = tempfile::tempdir().expect("temporary directory");
    let config = temp.path().join("corral.toml");
    let run = |text: &str| {
        std::fs::write(&config, text).expect("config file");
        let output = Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(["serve", "--print-config", "--config"])
            .arg(&config)
            .env_remove("CORRAL_CONFIG")
            .output()
            .expect("run corral");
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let wrong_type = run("[sandbox]\nmemory_mib = \"x\"\n");
    assert!(wrong_type.contains("memory_mib = \"x\""), "{wrong_type}");
    assert!(
        wrong_type.contains("expected a non-negative integer, got the string \"x\""),
        "{wrong_type}"
    );
    assert!(!wrong_type.contains("u64"), "{wrong_type}");
    let api_name = run("[sandbox]\nmemory_bytes = 536870912\n");
    assert!(
        api_name.contains("counts this as `memory_mib`"),
        "{api_name}"
    );
}

#[tokio::test]
async fn json_logs_carry_the_request_id_of_each_request() {
    let server = TestServer::start_with_arguments("", &["--log-format", "json"]);
    let response = server
        .http
        .get(server.url("/v1/sessions/not-a-session"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    // A request without an id gets one.
    let response = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("request");
    let generated = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(generated.len(), 36, "{generated}");

    let deadline = Instant::now() + DEADLINE;
    loop {
        let log = server.log();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
            .collect();
        let of_request = |id: &str| {
            lines
                .iter()
                .filter(|line| line["span"]["request_id"] == id)
                .count()
        };
        if of_request("trace-me-42") > 0 && of_request(&generated) > 0 {
            let line = lines
                .iter()
                .find(|line| line["span"]["request_id"] == "trace-me-42")
                .expect("a line");
            assert_eq!(line["span"]["path"], "/v1/sessions/not-a-session", "{line}");
            assert!(
                line["level"].is_string() && line["timestamp"].is_string(),
                "{line}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no request lines in:\n{log}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
