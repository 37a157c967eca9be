//! Test harness: the real `corral` binary on an ephemeral loopback port, an HTTP client for
//! it, and process accounting. Every server started here is killed by PID when dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// Upper bound for anything a test waits on.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The interpreter sessions use: `CORRAL_TEST_PYTHON` (the test venv) or `python3`.
pub fn python() -> String {
    std::env::var("CORRAL_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

pub struct TestServer {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    log: Arc<Mutex<Vec<String>>>,
    config: Option<String>,
    python: String,
    extra_args: Vec<String>,
    pub http: reqwest::Client,
    /// A newer server took over the data directory (and the workers in it): dropping this
    /// one must leave them alone.
    handed_over: bool,
}

impl TestServer {
    /// A server with the default configuration in a fresh data directory.
    pub fn start() -> TestServer {
        TestServer::start_with_config("")
    }

    /// A server with `config` (TOML) as its config file.
    pub fn start_with_config(config: &str) -> TestServer {
        TestServer::start_with_arguments(config, &[])
    }

    /// A server whose sessions run `python`.
    pub fn start_with_python(config: &str, python: &str) -> TestServer {
        TestServer::start_full(config, python, &[])
    }

    /// A server with `config` (TOML, or none when empty) and extra `serve` arguments.
    pub fn start_with_arguments(config: &str, arguments: &[&str]) -> TestServer {
        TestServer::start_full(config, &python(), arguments)
    }

    fn start_full(config: &str, python: &str, arguments: &[&str]) -> TestServer {
        let temp = tempfile::tempdir().expect("temporary directory");
        let data_dir = temp.path().join("data");
        let config = (!config.is_empty()).then(|| config.to_owned());
        let arguments: Vec<String> = arguments
            .iter()
            .map(|argument| argument.to_string())
            .collect();
        let mut server = TestServer::spawn(&data_dir, config.as_deref(), python, &arguments);
        server._temp = Some(temp);
        server
    }

    fn spawn(
        data_dir: &Path,
        config: Option<&str>,
        python: &str,
        extra_args: &[String],
    ) -> TestServer {
        let mut command = Command::new(env!("CARGO_BIN_EXE_corral"));
        command
            .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(["--python", python])
            .args(extra_args)
            .env_remove("CORRAL_POOL_SIZE");
        // Without a warm pool unless the test asks for one (`--pool-size`, or `[pool]` in its
        // config): most tests count a session's processes, which idle pool workers would
        // blur. `tests/warm_pool.rs` tests pool-born sessions; the conformance and security
        // suites run on the default pool.
        let pool_asked = extra_args.iter().any(|argument| argument == "--pool-size")
            || config.is_some_and(|config| config.contains("[pool]"));
        if !pool_asked {
            command.args(["--pool-size", "0"]);
        }
        command
            .env("CORRAL_LOG", "info")
            .env_remove("CORRAL_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(config) = config {
            std::fs::create_dir_all(data_dir).expect("data dir");
            let path = data_dir.with_extension("toml");
            std::fs::write(&path, config).expect("config file");
            command.arg("--config").arg(path);
        }
        adopt_orphaned_launchers();
        let mut child = command.spawn().expect("start corral serve");
        servers().lock().expect("servers").insert(child.id());
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (url_sender, url_receiver) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut url_sender = Some(url_sender);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        if let Some(sender) = url_sender.take() {
                            let url = rest.split_whitespace().next().unwrap_or("").to_owned();
                            let _ = sender.send(url);
                        }
                    }
                    log.lock().expect("log").push(line);
                }
            });
        }
        let url = match url_receiver.recv_timeout(DEADLINE) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the server did not start:\n{}",
                    log.lock().expect("log").join("\n")
                );
            }
        };
        TestServer {
            child,
            url,
            data_dir: data_dir.to_owned(),
            _temp: None,
            log,
            config: config.map(str::to_owned),
            python: python.to_owned(),
            extra_args: extra_args.to_vec(),
            handed_over: false,
            http: reqwest::Client::builder()
                .timeout(DEADLINE)
                .build()
                .expect("http client"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// Sends `signal` and waits for the process to exit; returns its exit status.
    pub fn stop_with(&mut self, signal: Signal) -> std::process::ExitStatus {
        let _ = kill(Pid::from_raw(self.child.id() as i32), signal);
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit after {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit by itself; returns its exit status.
    pub fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops this server (with `signal`) and starts a new one on the same data directory.
    pub fn restart_with(mut self, signal: Signal) -> TestServer {
        self.stop_with(signal);
        let temp = self._temp.take();
        self.handed_over = true;
        let mut next = TestServer::spawn(
            &self.data_dir,
            self.config.as_deref(),
            &self.python,
            &self.extra_args,
        );
        next._temp = temp;
        next
    }

    /// A new API key made offline with `corral keys create ARGUMENTS` in this server's data
    /// directory.
    pub fn corral_key(&self, arguments: &[&str]) -> String {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(["keys", "create"])
            .args(arguments)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()
            .expect("corral keys create");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        response(self.http.get(self.url(path)).send().await).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        response(self.http.post(self.url(path)).json(&body).send().await).await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        response(
            self.http
                .post(self.url(path))
                .header("content-type", content_type)
                .body(body)
                .send()
                .await,
        )
        .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        response(self.http.patch(self.url(path)).json(&body).send().await).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        response(self.http.delete(self.url(path)).send().await).await
    }

    /// Creates a session and returns its id.
    /// `method path` with an optional bearer key and an optional raw JSON body; the status
    /// and the body (JSON, or its text as a string).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method.parse().expect("method"), self.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        response(request.send().await).await
    }

    /// `method path` with extra request headers; the status and the body.
    pub async fn send_with_headers(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method.parse().expect("method"), self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        response(request.send().await).await
    }

    pub async fn create_session(&self) -> String {
        let (status, body) = self.post("/v1/sessions", serde_json::json!({})).await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Runs code and returns the execution (asserting 200).
    pub async fn execute(&self, session_id: &str, code: &str) -> Value {
        let (status, body) = self
            .post(
                &format!("/v1/sessions/{session_id}/executions"),
                serde_json::json!({ "code": code }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Starts an execution without waiting for it; the task yields its status and body.
    pub fn execute_in_background(
        &self,
        session_id: &str,
        code: &str,
    ) -> tokio::task::JoinHandle<(u16, Value)> {
        let request = self
            .http
            .post(self.url(&format!("/v1/sessions/{session_id}/executions")))
            .json(&serde_json::json!({ "code": code }));
        tokio::spawn(async move { response(request.send().await).await })
    }

    /// Waits until the session is in `state`.
    pub async fn wait_for_state(&self, session_id: &str, state: &str) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (_, body) = self.get(&format!("/v1/sessions/{session_id}")).await;
            if body["state"] == state {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "session never became {state}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Process ids whose parent is the server.
    pub fn child_pids(&self) -> Vec<u32> {
        child_pids(self.pid())
    }

    /// Waits until the server has exactly `count` child processes.
    pub async fn wait_for_children(&self, count: usize) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let children = self.child_pids();
            if children.len() == count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "expected {count} worker processes, found {children:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl TestServer {
    /// Stops this server with `kill -9` together with every worker it (or a server before
    /// it on this data directory) left running, and starts a new one on the same directory:
    /// its sessions then have no worker to adopt.
    pub fn restart_without_workers(mut self) -> TestServer {
        self.stop_with(Signal::SIGKILL);
        end_launchers_of(&self.data_dir);
        let temp = self._temp.take();
        self.handed_over = true;
        let mut next = TestServer::spawn(
            &self.data_dir,
            self.config.as_deref(),
            &self.python,
            &self.extra_args,
        );
        next._temp = temp;
        next
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let pid = self.child.id();
        let _ = self.child.kill();
        let _ = self.child.wait();
        servers().lock().expect("servers").remove(&pid);
        if self.handed_over {
            return;
        }
        // Workers outlive a killed server (their launchers wait to be adopted): end them.
        end_launchers_of(&self.data_dir);
        unmount_below(&self.data_dir);
        remove_cgroups_of(pid);
        reap_orphans();
    }
}

/// The servers this test process started (its own children, waited for by their handles).
fn servers() -> &'static Mutex<std::collections::HashSet<u32>> {
    static SERVERS: std::sync::OnceLock<Mutex<std::collections::HashSet<u32>>> =
        std::sync::OnceLock::new();
    SERVERS.get_or_init(|| Mutex::new(std::collections::HashSet::new()))
}

/// Makes this test process the reaper of the workers its servers leave behind when they die
/// (a worker's launcher outlives its server, and this host's init does not reap orphans).
fn adopt_orphaned_launchers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    });
}

/// Reaps this process's children that have exited and are not servers (orphaned launchers
/// whose sessions ended).
pub fn reap_orphans() {
    let own = std::process::id();
    let servers = servers().lock().expect("servers").clone();
    for (pid, parent, state) in processes() {
        if parent == own && state == "Z" && !servers.contains(&pid) {
            let _ = nix::sys::wait::waitpid(
                Pid::from_raw(pid as i32),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
    }
}

/// (pid, parent pid, state) of every process, read from `/proc`.
fn processes() -> Vec<(u32, u32, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if let (Some(state), Some(parent)) = (
            fields.first(),
            fields.get(1).and_then(|ppid| ppid.parse::<u32>().ok()),
        ) {
            found.push((pid, parent, (*state).to_owned()));
        }
    }
    found
}

/// The launch policies (`corral sandbox-init <policy>`) of live launchers whose keeper
/// socket is under `data_dir`, by launcher pid.
pub fn launchers_of(data_dir: &Path) -> Vec<(u32, Value)> {
    let workers = data_dir.join("workers");
    let workers = workers.to_string_lossy().into_owned();
    let mut found = Vec::new();
    let mut parents = std::collections::HashMap::new();
    for (pid, parent, state) in processes() {
        if state == "Z" {
            continue;
        }
        parents.insert(pid, parent);
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let arguments: Vec<String> = cmdline
            .split(|byte| *byte == 0)
            .map(|argument| String::from_utf8_lossy(argument).into_owned())
            .collect();
        if arguments.get(1).map(String::as_str) != Some("sandbox-init") {
            continue;
        }
        let Some(policy) = arguments
            .get(2)
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
        else {
            continue;
        };
        let in_data_dir = policy["keeper_socket"]
            .as_str()
            .is_some_and(|socket| socket.starts_with(&workers));
        if in_data_dir {
            found.push((pid, policy));
        }
    }
    // A session's init is a clone of its launcher (same command line): keep the launchers.
    let pids: std::collections::HashSet<u32> = found.iter().map(|(pid, _)| *pid).collect();
    found.retain(|(pid, _)| parents.get(pid).is_none_or(|parent| !pids.contains(parent)));
    found
}

/// Kills the launchers of `data_dir`'s workers and removes what they would have released
/// (their cgroups and root directories).
pub fn end_launchers_of(data_dir: &Path) {
    let launchers = launchers_of(data_dir);
    for (pid, _) in &launchers {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    for (pid, policy) in &launchers {
        // Orphans are this process's children (it is their subreaper); others the server's.
        let _ = nix::sys::wait::waitpid(Pid::from_raw(*pid as i32), None);
        let deadline = Instant::now() + DEADLINE;
        for procs in policy["cgroup_procs"].as_array().into_iter().flatten() {
            let Some(directory) = procs.as_str().and_then(|procs| Path::new(procs).parent()) else {
                continue;
            };
            while std::fs::remove_dir(directory)
                .is_err_and(|error| error.kind() != std::io::ErrorKind::NotFound)
                && Instant::now() < deadline
            {
                let procs =
                    std::fs::read_to_string(directory.join("cgroup.procs")).unwrap_or_default();
                for pid in procs
                    .lines()
                    .filter_map(|line| line.trim().parse::<i32>().ok())
                {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if let Some(root) = policy["root_dir"].as_str() {
            let _ = std::fs::remove_dir(root);
        }
        if let Some(mount) = policy["workspace_mount"].as_str() {
            let _ = Command::new("umount")
                .args(["-l", mount])
                .stderr(Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(mount);
        }
    }
}

/// Removes the session cgroups of a killed server (named `<server pid>-<n>`), killing what is
/// left in them; a later server would do the same at start.
pub fn remove_cgroups_of(server_pid: u32) {
    let prefix = format!("{server_pid}-");
    let deadline = Instant::now() + DEADLINE;
    for controller in ["memory", "pids", "cpu"] {
        let parent = Path::new("/sys/fs/cgroup").join(controller).join("corral");
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            // Gone already (the server removed it as it died) counts as removed.
            while std::fs::remove_dir(entry.path())
                .is_err_and(|error| error.kind() != std::io::ErrorKind::NotFound)
                && Instant::now() < deadline
            {
                let procs =
                    std::fs::read_to_string(entry.path().join("cgroup.procs")).unwrap_or_default();
                for pid in procs
                    .lines()
                    .filter_map(|line| line.trim().parse::<i32>().ok())
                {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Unmounts what a killed server left mounted under `directory` (session workspaces), so the
/// temporary directory can be removed.
pub fn unmount_below(directory: &Path) {
    // Workspaces are links to tmpfs mounts elsewhere (under /run).
    if let Ok(entries) = std::fs::read_dir(directory.join("workspaces")) {
        for entry in entries.flatten() {
            if let Ok(target) = std::fs::read_link(entry.path()) {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&target)
                    .stderr(Stdio::null())
                    .status();
                let _ = std::fs::remove_dir(&target);
            }
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = directory.to_string_lossy().into_owned();
    for line in mountinfo.lines() {
        if let Some(mount_point) = line.split(' ').nth(4) {
            if mount_point.starts_with(&prefix) {
                let _ = Command::new("umount")
                    .args(["-l", mount_point])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

pub async fn response(result: reqwest::Result<reqwest::Response>) -> (u16, Value) {
    let response = result.expect("request sent");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

/// Runs `code` in session `id` and returns its `text/plain` result (asserting it ran).
pub async fn value(server: &TestServer, id: &str, code: &str) -> String {
    let execution = server.execute(id, code).await;
    assert_eq!(execution["status"], "ok", "{execution}");
    execution["result"]["text/plain"]
        .as_str()
        .unwrap_or_else(|| panic!("no result: {execution}"))
        .to_owned()
}

/// Live children of `parent` (zombies excluded), read from `/proc`.
pub fn child_pids(parent: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|(_, ppid, state)| *ppid == parent && state != "Z")
        .map(|(pid, _, _)| pid)
        .collect()
}

/// Reads a server-sent-event stream to its end: `(event, data)` pairs.
pub async fn read_events(response: reqwest::Response) -> Vec<(String, Value)> {
    let mut reader = EventReader::new(response);
    let mut events = Vec::new();
    while let Some(event) = reader.next().await {
        events.push(event);
    }
    events
}

/// Incremental server-sent-event reader.
pub struct EventReader {
    response: reqwest::Response,
    buffer: String,
}

impl EventReader {
    pub fn new(response: reqwest::Response) -> Self {
        EventReader {
            response,
            buffer: String::new(),
        }
    }

    /// The next `(event, data)`, skipping comments; `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.strip_prefix(' ').unwrap_or(value));
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Some((
                    name,
                    serde_json::from_str(&data).unwrap_or(Value::String(data)),
                ));
            }
            let chunk = tokio::time::timeout(DEADLINE, self.response.chunk())
                .await
                .expect("event stream stalled")
                .expect("event stream read")?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// Where the test creates the file named `name` in the session's workspace: sessions are
/// sandboxed, so the gate lives in the workspace, which the server mounts on the host.
pub fn gate_path(server: &TestServer, id: &str, name: &str) -> std::path::PathBuf {
    server.data_dir.join("workspaces").join(id).join(name)
}

/// Starts an execution that waits for the workspace file `gate` to exist, returning its event
/// stream once the code is running.
pub async fn start_gated_execution(server: &TestServer, id: &str, gate: &str) -> EventReader {
    let code = format!(
        "import os, time\nprint('running', flush=True)\nwhile not os.path.exists({gate:?}):\n    time.sleep(0.02)\n'finished'"
    );
    let response = server
        .http
        .post(server.url(&format!("/v1/sessions/{id}/executions")))
        .header("accept", "text/event-stream")
        .json(&serde_json::json!({ "code": code }))
        .send()
        .await
        .expect("execute");
    assert_eq!(response.status(), 200);
    let mut events = EventReader::new(response);
    let (name, data) = events.next().await.expect("first event");
    assert_eq!(
        (name.as_str(), &data["text"]),
        ("stream", &serde_json::json!("running\n"))
    );
    events
}
