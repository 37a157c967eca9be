//! What a new user meets around `corral exec`, against a real server: one-line errors for an
//! unreachable server, a scheme-less `--server`, workspace path messages that say what is
//! wrong, errors without Rust internals, live sessions by default, completions and the man
//! page, `serve --help` defaults, bare `corral`, the start-up banner and the log line when the
//! first key appears, no progress bars when piped, RFC 3339 times in file listings.

mod support;

use std::process::{Command, Output, Stdio};

use support::TestServer;

fn corral(arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(arguments)
        .env_remove("CORRAL_SERVER")
        .env_remove("CORRAL_API_KEY")
        .stdin(Stdio::null())
        .output()
        .expect("run corral")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn an_unreachable_server_is_one_line_naming_the_url_and_the_way_out() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let output = corral(&["sessions", "list", "--server", &url]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&url), "{stderr}");
    assert!(
        stderr.contains("--server") && stderr.contains("CORRAL_SERVER"),
        "{stderr}"
    );
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(
        !stderr.contains("reqwest") && !stderr.contains("hyper"),
        "{stderr}"
    );

    let not_a_url = corral(&["sessions", "list", "--server", "ftp://example.org"]);
    assert_eq!(not_a_url.status.code(), Some(1));
    assert!(text(&not_a_url.stderr).contains("http:// or https://"));
}

#[tokio::test]
async fn server_without_a_scheme_works() {
    let server = TestServer::start();
    let address = server.url.trim_start_matches("http://");
    let output = corral(&["exec", "--server", address, "print('no scheme')"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "no scheme\n");
}

#[tokio::test]
async fn files_put_says_what_is_wrong_with_a_path() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let temp = tempfile::tempdir().expect("temp dir");
    let local = temp.path().join("data.csv");
    std::fs::write(&local, "a,b\n").expect("write");
    let local = local.to_str().expect("path");
    let put = |remote: &str| corral(&["files", "put", &id, local, remote, "--server", &server.url]);

    let escape = put("../escape.csv");
    assert_eq!(escape.status.code(), Some(1));
    assert_eq!(
        text(&escape.stderr),
        "corral: workspace path `../escape.csv`: contains `..`; paths may not leave the workspace\n"
    );
    let absolute = put("/etc/x");
    assert!(
        text(&absolute.stderr).contains("`/etc/x`: is absolute"),
        "{}",
        text(&absolute.stderr)
    );
    // The server says the same to clients that do not check first.
    let (status, problem) = server
        .send(
            "PUT",
            &format!("/v1/sessions/{id}/files//etc/x"),
            None,
            Some("x"),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or("")
            .contains("absolute"),
        "{problem}"
    );

    // A symlink leading out of the workspace.
    server
        .execute(&id, "import os\nos.symlink('/etc', 'out')")
        .await;
    let through_link = put("out/x.csv");
    assert_eq!(through_link.status.code(), Some(1));
    let stderr = text(&through_link.stderr);
    assert!(stderr.contains("leads outside the workspace"), "{stderr}");
    assert!(!stderr.contains("Cross-device"), "{stderr}");

    // Piped, a transfer prints its one summary line and no progress bar.
    let ok = put("in/data.csv");
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert_eq!(
        text(&ok.stderr),
        format!("{local} -> in/data.csv (4 bytes)\n")
    );
}

#[tokio::test]
async fn file_listings_use_rfc3339_times() {
    let server = TestServer::start();
    let id = server.create_session().await;
    server.execute(&id, "open('f.txt', 'w').write('x')").await;
    let (status, listing) = server.get(&format!("/v1/sessions/{id}/files")).await;
    assert_eq!(status, 200);
    let modified = listing["entries"][0]["modified"]
        .as_str()
        .expect("a string");
    chrono::DateTime::parse_from_rfc3339(modified).expect("RFC 3339");
    let ls = corral(&["files", "ls", &id, "--server", &server.url]);
    let line = text(&ls.stdout);
    assert!(
        line.contains(&modified[..10]) && line.contains("f.txt"),
        "{line}"
    );
}

#[tokio::test]
async fn bad_fields_are_described_without_rust_internals() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let (status, problem) = server
        .post(
            &format!("/v1/sessions/{id}/executions"),
            serde_json::json!({"code": "1", "timeout": "5"}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        problem["detail"],
        "field `timeout`: expected a number, got the string \"5\""
    );
    let (_, problem) = server
        .post(
            "/v1/sessions",
            serde_json::json!({"limits": {"memory_bytes": "1G"}}),
        )
        .await;
    let detail = problem["detail"].as_str().expect("detail");
    assert!(
        detail.starts_with("field `limits.memory_bytes`: expected"),
        "{detail}"
    );
    for internal in ["u64", "f64", "struct ", "Some("] {
        assert!(!detail.contains(internal), "{detail}");
    }
    // Logs name a tenant plainly, never as a Rust Option.
    server
        .post(
            "/v1/keys",
            serde_json::json!({"scope": "tenant", "tenant": "acme"}),
        )
        .await;
    wait_for_log(&server, "API key issued").await;
    assert!(!server.log().contains("Some("), "{}", server.log());
}

#[tokio::test]
async fn sessions_list_shows_live_sessions_unless_all() {
    let server = TestServer::start();
    let live = server.create_session().await;
    let ended = server.create_session().await;
    server.delete(&format!("/v1/sessions/{ended}")).await;
    let list = corral(&["sessions", "list", "--server", &server.url]);
    let table = text(&list.stdout);
    assert!(table.contains(&live) && !table.contains(&ended), "{table}");
    let all = corral(&["sessions", "list", "--all", "--server", &server.url]);
    let table = text(&all.stdout);
    assert!(table.contains(&live) && table.contains(&ended), "{table}");
}

#[test]
fn completions_and_the_man_page_come_from_the_commands() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef corral"),
        ("fish", "complete -c corral"),
    ] {
        let output = corral(&["completions", shell]);
        assert!(output.status.success(), "{shell}: {}", text(&output.stderr));
        let script = text(&output.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(
            script.contains("sessions") && script.contains("exec"),
            "{shell}"
        );
    }
    let man = corral(&["man"]);
    assert!(man.status.success());
    let page = text(&man.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH corral"),
        "{page}"
    );
    assert!(
        page.contains("serve") && page.contains("\\-\\-server"),
        "{page}"
    );
}

#[test]
fn serve_help_shows_defaults_and_bare_corral_prints_help() {
    let help = corral(&["serve", "--help"]);
    assert!(help.status.success());
    let help = text(&help.stdout);
    for default in [
        "[default: 127.0.0.1:8000]",
        "~/.local/share/corral",
        "[default: python3",
        "[default: text]",
    ] {
        assert!(help.contains(default), "missing {default}:\n{help}");
    }
    let bare = corral(&[]);
    assert_eq!(bare.status.code(), Some(0));
    let bare = text(&bare.stdout);
    assert!(
        bare.contains("Usage: corral") && bare.contains("exec"),
        "{bare}"
    );
}

#[tokio::test]
async fn the_banner_says_open_and_the_first_key_is_logged() {
    let server = TestServer::start();
    wait_for_log(&server, "auth=open").await;
    wait_for_log(&server, "open mode").await;
    let (status, _) = server
        .post("/v1/keys", serde_json::json!({"scope": "admin"}))
        .await;
    assert_eq!(status, 201);
    wait_for_log(&server, "now requires a key").await;

    let closed = TestServer::start_with_arguments("", &["--require-auth"]);
    wait_for_log(&closed, "auth=keys-required").await;
    wait_for_log(&closed, "API keys required").await;
}

#[tokio::test]
async fn a_key_made_offline_ends_open_mode_with_a_log_line() {
    let server = TestServer::start();
    server.corral_key(&["--scope", "admin"]);
    let (status, _) = server.get("/v1/sessions").await;
    assert_eq!(status, 401);
    wait_for_log(&server, "now requires a key").await;
}

async fn wait_for_log(server: &TestServer, words: &str) {
    let deadline = std::time::Instant::now() + support::DEADLINE;
    while !server.log().contains(words) {
        assert!(std::time::Instant::now() < deadline, "{}", server.log());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
