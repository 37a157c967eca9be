//! Network by policy, against the real server with servers only on this machine's loopback:
//! a `none` session reaches nothing; an allow-listed session reaches its allowed
//! `host.corral.internal:PORT` and nothing else (another port, the metadata address, the
//! server's own port); a domain allowed by name is reached through the session's proxy (the
//! test name mapped to 127.0.0.1 in `[network] hosts`), another name is refused; a policy
//! beyond the operator's maximum is a 403 naming the entries; `pip install` from a local
//! index works only when allowed and lands in the workspace; `/metrics` counts the proxy's
//! decisions; a session adopted after `kill -9` still reaches its allowed name.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::Signal;
use serde_json::{json, Value};
use support::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A TCP server on 127.0.0.1 that answers any HTTP request with 200 and `body`, or a plain
/// connection's first bytes with `body`; runs until dropped.
struct LoopbackService {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl LoopbackService {
    async fn start(body: Vec<u8>, content_type: &'static str) -> LoopbackService {
        Self::start_serving(move |_path| (content_type, body.clone())).await
    }

    async fn start_serving(
        answer: impl Fn(&str) -> (&'static str, Vec<u8>) + Send + Sync + 'static,
    ) -> LoopbackService {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let answer = std::sync::Arc::new(answer);
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(count) => request.extend_from_slice(&buffer[..count]),
                        }
                    }
                    let text = String::from_utf8_lossy(&request).into_owned();
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let (content_type, body) = answer(&path);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&body).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        LoopbackService { port, task }
    }
}

impl Drop for LoopbackService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn server_port(server: &TestServer) -> u16 {
    server
        .url
        .rsplit(':')
        .next()
        .and_then(|port| port.trim_end_matches('/').parse().ok())
        .expect("server port")
}

/// Python that reports how connecting to each `(label, host, port)` went.
fn probe_code(targets: &[(&str, &str, u16)]) -> String {
    let list: Vec<String> = targets
        .iter()
        .map(|(label, host, port)| format!("({label:?}, {host:?}, {port})"))
        .collect();
    format!(
        r#"
import socket, json
report = {{}}
for label, host, port in [{}]:
    try:
        s = socket.create_connection((host, port), timeout=5)
        s.close()
        report[label] = "connected"
    except Exception as error:
        report[label] = type(error).__name__
print(json.dumps(report))
"#,
        list.join(", ")
    )
}

async fn probe(server: &TestServer, id: &str, targets: &[(&str, &str, u16)]) -> Value {
    let result = server.execute(id, &probe_code(targets)).await;
    let stdout = result["stdout"].as_str().unwrap_or_default();
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("probe output: {result}"))
}

/// Python that fetches `url` (optionally with another Host header) and prints status and body.
fn fetch_code(url: &str, host: Option<&str>) -> String {
    let headers = host
        .map(|host| format!("{{'Host': {host:?}}}"))
        .unwrap_or_else(|| "{}".to_owned());
    format!(
        r#"
import urllib.request, urllib.error
try:
    answer = urllib.request.urlopen(urllib.request.Request({url:?}, headers={headers}), timeout=10)
    print(answer.status, answer.read().decode())
except urllib.error.HTTPError as error:
    print(error.code, error.read().decode())
except Exception as error:
    print("failed", type(error).__name__, error)
"#
    )
}

async fn create_with(server: &TestServer, network: Value) -> (u16, Value) {
    server
        .post("/v1/sessions", json!({ "network": network }))
        .await
}

fn network_config(allow: &[String], hosts: &[(&str, &str)]) -> String {
    let allow: Vec<String> = allow.iter().map(|entry| format!("{entry:?}")).collect();
    let mut config = format!(
        "[network]\nsessions_may_connect = true\nallow = [{}]\n",
        allow.join(", ")
    );
    if !hosts.is_empty() {
        config.push_str("[network.hosts]\n");
        for (name, address) in hosts {
            config.push_str(&format!("{name:?} = {address:?}\n"));
        }
    }
    config
}

#[tokio::test]
async fn a_none_session_reaches_nothing() {
    let service = LoopbackService::start(b"hello".to_vec(), "text/plain").await;
    let server = TestServer::start();
    let (_, info) = server.get("/v1/info").await;
    assert_eq!(info["network"]["sessions_may_connect"], false, "{info}");
    // The server gives no network at all: asking is refused, naming why.
    let (status, body) = create_with(
        &server,
        json!({"allow": [format!("host.corral.internal:{}", service.port)]}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["detail"].as_str().unwrap_or("").contains("no network"),
        "{body}"
    );

    let id = server.create_session().await;
    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(session["network"], "none");
    let report = probe(
        &server,
        &id,
        &[
            ("gateway", "10.0.2.2", service.port),
            ("metadata", "169.254.169.254", 80),
            ("public", "192.0.2.1", 80),
        ],
    )
    .await;
    for (label, outcome) in report.as_object().expect("report") {
        assert_ne!(outcome, "connected", "{label} reached from a none session");
    }
}

#[tokio::test]
async fn an_allow_list_reaches_its_destinations_and_nothing_else() {
    let allowed = LoopbackService::start(b"allowed service".to_vec(), "text/plain").await;
    let other = LoopbackService::start(b"other service".to_vec(), "text/plain").await;
    let named = LoopbackService::start(b"named service".to_vec(), "text/plain").await;
    let config = network_config(
        &[
            format!("host.corral.internal:{}", allowed.port),
            format!("svc.test:{}", named.port),
            format!("other.test:{}", named.port),
            "10.0.0.0/8".to_owned(),
        ],
        &[("svc.test", "127.0.0.1"), ("other.test", "127.0.0.1")],
    );
    let server = TestServer::start_with_config(&config);
    let (_, info) = server.get("/v1/info").await;
    assert_eq!(info["network"]["sessions_may_connect"], true, "{info}");
    assert_eq!(info["network"]["allow"].as_array().map(Vec::len), Some(4));

    // Beyond the maximum: 403 naming each refused entry.
    let (status, body) = create_with(
        &server,
        json!({"allow": [format!("host.corral.internal:{}", other.port), "192.0.2.0/24"]}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let detail = body["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains(&format!("host.corral.internal:{}", other.port))
            && detail.contains("192.0.2.0/24"),
        "{body}"
    );
    // Bad entries: 422 with the reason.
    let (status, body) = create_with(&server, json!({"allow": ["10.0.0.1/8"]})).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap_or("").contains("host bits"),
        "{body}"
    );

    let (status, session) = create_with(
        &server,
        json!({"allow": [
            format!("host.corral.internal:{}", allowed.port),
            format!("svc.test:{}", named.port),
        ]}),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().expect("id").to_owned();
    let own_port = server_port(&server);
    let report = probe(
        &server,
        &id,
        &[
            ("allowed", "host.corral.internal", allowed.port),
            ("other port", "host.corral.internal", other.port),
            ("server", "10.0.2.2", own_port),
            ("metadata", "169.254.169.254", 80),
            ("slirp dns", "10.0.2.3", 53),
        ],
    )
    .await;
    assert_eq!(report["allowed"], "connected", "{report}");
    for label in ["other port", "server", "metadata", "slirp dns"] {
        assert_ne!(report[label], "connected", "{label}: {report}");
    }

    // The allowed name, through the proxy, which dials it itself.
    let through = server
        .execute(
            &id,
            &fetch_code(&format!("http://svc.test:{}/", named.port), None),
        )
        .await;
    assert_eq!(
        through["stdout"].as_str().unwrap_or("").trim(),
        "200 named service",
        "{through}"
    );
    // Another name at the same address and port (allowed to the operator, not to this
    // session): refused by the proxy.
    let refused = server
        .execute(
            &id,
            &fetch_code(
                &format!("http://svc.test:{}/", named.port),
                Some("other.test"),
            ),
        )
        .await;
    let refused_text = refused["stdout"].as_str().unwrap_or("");
    assert!(refused_text.starts_with("403"), "{refused}");
    assert!(refused_text.contains("other.test"), "{refused}");
    // The session's DNS answers its own names (with the names address) and no others.
    let dns = server
        .execute(
            &id,
            "import socket
print(socket.getaddrinfo('svc.test', 80, socket.AF_INET)[0][4][0])
try:
    socket.getaddrinfo('other.test', 80)
    print('resolved')
except socket.gaierror as error:
    print('unknown')",
        )
        .await;
    assert_eq!(
        dns["stdout"].as_str().unwrap_or("").trim(),
        "10.0.2.50\nunknown",
        "{dns}"
    );
    // Names the session was not given do not resolve.
    let unknown = server
        .execute(&id, &fetch_code("http://other.test/", None))
        .await;
    assert!(
        unknown["stdout"]
            .as_str()
            .unwrap_or("")
            .starts_with("failed"),
        "{unknown}"
    );

    let text = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for decision in ["allowed", "refused"] {
        assert!(
            text.contains(&format!(
                "corral_network_connections_total{{decision=\"{decision}\"}}"
            )),
            "{decision} counted:\n{text}"
        );
    }
}

/// Writes a pure-Python wheel (`corral_netdemo`, `ANSWER = 7`) into `directory`.
fn build_wheel(directory: &Path) -> PathBuf {
    let name = "corral_netdemo-1.0-py3-none-any.whl";
    let path = directory.join(name);
    let script = r#"
import base64, hashlib, sys, zipfile
files = {
    "corral_netdemo/__init__.py": "ANSWER = 7\n",
    "corral_netdemo-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: corral_netdemo\nVersion: 1.0\n",
    "corral_netdemo-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: corral-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = []
with zipfile.ZipFile(sys.argv[1], "w") as wheel:
    for name, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
        wheel.writestr(name, data)
    record.append("corral_netdemo-1.0.dist-info/RECORD,,")
    wheel.writestr("corral_netdemo-1.0.dist-info/RECORD", "\n".join(record) + "\n")
"#;
    let status = Command::new(support::python())
        .args(["-c", script])
        .arg(&path)
        .status()
        .expect("python runs");
    assert!(status.success());
    path
}

const PIP_INSTALL: &str = r#"
import subprocess, sys
done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", "URL", "--trusted-host", "host.corral.internal", "corral-netdemo"], capture_output=True, text=True, timeout=120)
print("pip", done.returncode)
if done.returncode != 0:
    print(done.stdout[-1500:], done.stderr[-1500:])
if done.returncode == 0:
    import corral_netdemo, os
    print("answer", corral_netdemo.ANSWER, os.path.exists("/workspace/.packages/corral_netdemo/__init__.py"))
"#;

#[tokio::test]
async fn pip_install_works_only_when_the_index_is_allowed() {
    let temp = tempfile::tempdir().expect("temp");
    let wheel = build_wheel(temp.path());
    let wheel_name = wheel
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let bytes = std::fs::read(&wheel).expect("wheel");
    let page_name = wheel_name.clone();
    let index = LoopbackService::start_serving(move |path| {
        if path.ends_with(".whl") {
            ("application/octet-stream", bytes.clone())
        } else {
            (
                "text/html",
                format!("<html><body><a href=\"{page_name}\">{page_name}</a></body></html>")
                    .into_bytes(),
            )
        }
    })
    .await;
    let entry = format!("host.corral.internal:{}", index.port);
    let server = TestServer::start_with_config(&network_config(std::slice::from_ref(&entry), &[]));
    let code = PIP_INSTALL.replace("URL", &format!("http://{entry}/"));

    let offline = server.create_session().await;
    let refused = server.execute(&offline, &code).await;
    let refused_text = refused["stdout"].as_str().unwrap_or("");
    assert!(
        refused_text.starts_with("pip ") && !refused_text.starts_with("pip 0"),
        "{refused}"
    );

    let (status, session) = create_with(&server, json!({"allow": [entry]})).await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().expect("id");
    let installed = server.execute(id, &code).await;
    assert_eq!(
        installed["stdout"].as_str().unwrap_or("").trim(),
        "pip 0\nanswer 7 True",
        "{installed}"
    );
    // Installed into the workspace: a fresh interpreter of the session finds it too.
    let again = server
        .execute(
            id,
            "import subprocess, sys
print(subprocess.run([sys.executable, '-c', 'import corral_netdemo; print(corral_netdemo.ANSWER)'], capture_output=True, text=True).stdout.strip())",
        )
        .await;
    assert_eq!(
        again["stdout"].as_str().unwrap_or("").trim(),
        "7",
        "{again}"
    );
}

#[tokio::test]
async fn an_adopted_session_still_reaches_its_allowed_name() {
    let named = LoopbackService::start(b"named service".to_vec(), "text/plain").await;
    let entry = format!("svc.test:{}", named.port);
    let server = TestServer::start_with_config(&network_config(
        std::slice::from_ref(&entry),
        &[("svc.test", "127.0.0.1")],
    ));
    let (status, session) = create_with(&server, json!({"allow": [entry]})).await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().expect("id").to_owned();
    let code = fetch_code(&format!("http://svc.test:{}/", named.port), None);
    let before = server.execute(&id, &code).await;
    assert_eq!(
        before["stdout"].as_str().unwrap_or("").trim(),
        "200 named service",
        "{before}"
    );

    let server = server.restart_with(Signal::SIGKILL);
    let (status, adopted) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 200, "{adopted}");
    assert_eq!(adopted["state"], "idle", "{adopted}\n{}", server.log());
    let after = server.execute(&id, &code).await;
    assert_eq!(
        after["stdout"].as_str().unwrap_or("").trim(),
        "200 named service",
        "{after}\n{}",
        server.log()
    );
}

#[tokio::test]
async fn e2b_sandboxes_ask_in_e2b_s_words() {
    let allowed = LoopbackService::start(b"allowed service".to_vec(), "text/plain").await;
    let entry = format!("host.corral.internal:{}", allowed.port);
    let server = TestServer::start_with_config(&network_config(std::slice::from_ref(&entry), &[]));
    let create = |body: Value| {
        let request = server.http.post(server.url("/v2/sandboxes")).json(&body);
        async move { support::response(request.send().await).await }
    };
    let (status, sandbox) = create(json!({
        "templateID": "base",
        "network": {"allowOut": [entry], "denyOut": ["0.0.0.0/0"]},
    }))
    .await;
    assert_eq!(status, 201, "{sandbox}");
    let id = sandbox["sandboxID"].as_str().expect("sandboxID").to_owned();
    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(session["network"], json!({"allow": [entry]}), "{session}");
    let report = probe(
        &server,
        &id,
        &[("allowed", "host.corral.internal", allowed.port)],
    )
    .await;
    assert_eq!(report["allowed"], "connected", "{report}");

    // allow_internet_access: the operator's maximum; false, or denying everything: none.
    let (status, open) = create(json!({"templateID": "base", "allow_internet_access": true})).await;
    assert_eq!(status, 201, "{open}");
    let (_, session) = server
        .get(&format!(
            "/v1/sessions/{}",
            open["sandboxID"].as_str().expect("id")
        ))
        .await;
    assert_eq!(session["network"], json!({"allow": [entry]}), "{session}");
    for body in [
        json!({"templateID": "base", "allow_internet_access": false}),
        json!({"templateID": "base", "network": {"denyOut": ["0.0.0.0/0"]}}),
    ] {
        let (status, closed) = create(body).await;
        assert_eq!(status, 201, "{closed}");
        let (_, session) = server
            .get(&format!(
                "/v1/sessions/{}",
                closed["sandboxID"].as_str().expect("id")
            ))
            .await;
        assert_eq!(session["network"], "none", "{session}");
    }
    // Beyond the maximum: refused, naming the entry.
    let (status, refused) = create(json!({
        "templateID": "base",
        "network": {"allowOut": ["192.0.2.0/24"]},
    }))
    .await;
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or("")
            .contains("192.0.2.0/24"),
        "{refused}"
    );
}

#[tokio::test]
async fn the_connection_cap_refuses_one_more() {
    let allowed = LoopbackService::start(b"allowed service".to_vec(), "text/plain").await;
    let entry = format!("host.corral.internal:{}", allowed.port);
    let config = format!(
        "{}max_connections = 2\n",
        network_config(std::slice::from_ref(&entry), &[])
    );
    let server = TestServer::start_with_config(&config);
    let (status, session) = create_with(&server, json!({"allow": [entry]})).await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().expect("id");
    let code = format!(
        r#"
import socket
held, outcomes = [], []
for _ in range(3):
    try:
        held.append(socket.create_connection(("host.corral.internal", {}), timeout=5))
        outcomes.append("connected")
    except OSError as error:
        outcomes.append(type(error).__name__)
print(" ".join(outcomes))
for sock in held:
    sock.close()
"#,
        allowed.port
    );
    let result = server.execute(id, &code).await;
    let outcomes = result["stdout"].as_str().unwrap_or("").trim().to_owned();
    assert!(
        outcomes.starts_with("connected connected ")
            && !outcomes.ends_with("connected connected connected"),
        "{result}"
    );
}

#[tokio::test]
async fn a_revived_session_keeps_its_network() {
    let named = LoopbackService::start(b"named service".to_vec(), "text/plain").await;
    let entry = format!("svc.test:{}", named.port);
    let server = TestServer::start_with_config(&network_config(
        std::slice::from_ref(&entry),
        &[("svc.test", "127.0.0.1")],
    ));
    let (status, session) = create_with(&server, json!({"allow": [entry]})).await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().expect("id").to_owned();
    // Killed by its timeout (the cell ignores interrupts), then restarted with a fresh worker.
    let stubborn = "import time\nwhile True:\n    try:\n        time.sleep(60)\n    except KeyboardInterrupt:\n        pass";
    let (status, killed) = server
        .post(
            &format!("/v1/sessions/{id}/executions"),
            json!({"code": stubborn, "timeout": 0.5}),
        )
        .await;
    assert_eq!(
        (status, &killed["status"]),
        (200, &json!("killed")),
        "{killed}"
    );
    server.wait_for_state(&id, "dead").await;
    let (status, restarted) = server
        .post(&format!("/v1/sessions/{id}/restart"), json!({}))
        .await;
    assert_eq!(status, 200, "{restarted}");
    let code = fetch_code(&format!("http://svc.test:{}/", named.port), None);
    let after = server.execute(&id, &code).await;
    assert_eq!(
        after["stdout"].as_str().unwrap_or("").trim(),
        "200 named service",
        "{after}\n{}",
        server.log()
    );
}

#[tokio::test]
async fn an_unsandboxed_server_refuses_allow_lists() {
    let server = TestServer::start_with_arguments(
        &network_config(&["host.corral.internal:9".to_owned()], &[]),
        &["--insecure-no-sandbox"],
    );
    let (status, body) = create_with(&server, json!({"allow": ["host.corral.internal:9"]})).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["detail"].as_str().unwrap_or("").contains("sandbox"),
        "{body}"
    );
}

/// The running `slirp4netns` children of `launcher`.
fn slirp_children(launcher: u32) -> Vec<u32> {
    support::child_pids(launcher)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "slirp4netns")
        })
        .collect()
}

#[tokio::test]
async fn the_stack_is_the_launchers_child_and_ends_with_the_session() {
    let entry = "host.corral.internal:9".to_owned();
    let server = TestServer::start_with_config(&network_config(std::slice::from_ref(&entry), &[]));
    let plain = server.create_session().await;
    let (status, session) = create_with(&server, json!({"allow": [entry]})).await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().expect("id").to_owned();
    let launchers = support::launchers_of(&server.data_dir);
    assert_eq!(launchers.len(), 2, "{launchers:?}");
    let networked: Vec<u32> = launchers
        .iter()
        .filter(|(_, policy)| !policy["network"].is_null())
        .map(|(pid, _)| *pid)
        .collect();
    assert_eq!(
        networked.len(),
        1,
        "only the networked session has a stack: {launchers:?}"
    );
    let stacks = slirp_children(networked[0]);
    assert_eq!(stacks.len(), 1, "one slirp4netns, the launcher's child");
    for (pid, _) in &launchers {
        if *pid != networked[0] {
            assert!(slirp_children(*pid).is_empty());
        }
    }
    // slirp4netns holds none of the worker's or keeper's descriptors: only its own.
    let descriptors = std::fs::read_dir(format!("/proc/{}/fd", stacks[0]))
        .expect("fds")
        .count();
    assert!(descriptors <= 16, "{descriptors} descriptors");

    let (status, _) = server.delete(&format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 200);
    let deadline = std::time::Instant::now() + support::DEADLINE;
    while std::path::Path::new(&format!("/proc/{}", stacks[0])).exists()
        && std::fs::read_to_string(format!("/proc/{}/stat", stacks[0]))
            .is_ok_and(|stat| !stat.contains(") Z "))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "slirp4netns outlived its session"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.execute(&plain, "1").await;
}
