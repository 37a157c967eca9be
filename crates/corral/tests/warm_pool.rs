//! The warm pool: sessions handed a pre-started sandboxed worker are as isolated as freshly
//! started ones, get the limits they ask for, and the pool refills, shrinks and keeps to its
//! memory budget. The same behaviour holds for workers forked by a zygote (`[pool] zygote`;
//! its own checks are in `zygote.rs`).

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{value, TestServer};

const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `/v1/info` until `ready(pool)` holds; returns that pool view.
async fn wait_for_pool(server: &TestServer, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, info) = server.get("/v1/info").await;
        assert_eq!(status, 200, "{info}");
        if ready(&info["pool"]) {
            return info["pool"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the pool never {what}: {}",
            info["pool"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates a session and returns its id, asserting where its worker came from by the pool's
/// counters.
async fn create_from_pool(server: &TestServer) -> String {
    let before = server.get("/v1/info").await.1["pool"]["handed_over"]
        .as_u64()
        .expect("handed_over");
    let id = server.create_session().await;
    let after = server.get("/v1/info").await.1["pool"]["handed_over"]
        .as_u64()
        .expect("handed_over");
    assert_eq!(after, before + 1, "the session did not come from the pool");
    id
}

/// The config of a server whose Python workers are forked by a zygote.
const ZYGOTE: &str = "[pool]\nzygote = true\n";

#[tokio::test]
async fn pool_born_sessions_are_isolated_from_each_other() {
    sessions_are_isolated_from_each_other("").await;
}

#[tokio::test]
async fn zygote_born_sessions_are_isolated_from_each_other() {
    sessions_are_isolated_from_each_other(ZYGOTE).await;
}

async fn sessions_are_isolated_from_each_other(config: &str) {
    let server = TestServer::start_with_arguments(config, &["--pool-size", "3"]);
    wait_for_pool(&server, "filled", |pool| pool["ready"] == 3).await;
    let first = create_from_pool(&server).await;
    let second = create_from_pool(&server).await;

    // Each has its own namespaces: PID, mount, network, IPC, UTS and user.
    let namespaces = "import os; sorted((n, os.readlink('/proc/self/ns/' + n)) for n in \
                      ('pid', 'mnt', 'net', 'ipc', 'uts', 'user'))";
    let first_namespaces = value(&server, &first, namespaces).await;
    let second_namespaces = value(&server, &second, namespaces).await;
    for name in ["pid", "mnt", "net", "ipc", "uts", "user"] {
        let pick = |text: &str| {
            text.split(&format!("('{name}', '"))
                .nth(1)
                .and_then(|rest| rest.split('\'').next())
                .unwrap_or_else(|| panic!("no {name} namespace in {text}"))
                .to_owned()
        };
        assert_ne!(
            pick(&first_namespaces),
            pick(&second_namespaces),
            "the two sessions share their {name} namespace"
        );
    }

    // Its own PID namespace: only its own few processes, none of its sibling's.
    let marker = server
        .execute(
            &first,
            "import subprocess; p = subprocess.Popen(['sleep', '300']); print(p.pid)",
        )
        .await;
    assert_eq!(marker["status"], "ok", "{marker}");
    let processes = value(
        &server,
        &second,
        "import os; sorted(int(p) for p in os.listdir('/proc') if p.isdigit())",
    )
    .await;
    let visible: Vec<u32> = processes
        .trim_matches(['[', ']'])
        .split(',')
        .filter_map(|pid| pid.trim().parse().ok())
        .collect();
    assert!(
        visible.len() <= 3 && visible.contains(&1),
        "the second session sees processes beyond its own: {visible:?}"
    );
    // It cannot signal anything of its sibling's (not even by guessing host pids).
    let signal = server
        .execute(
            &second,
            "import os\nhits = []\nfor pid in range(2, 400):\n    try:\n        os.kill(pid, 0)\n        hits.append(pid)\n    except OSError:\n        pass\nhits",
        )
        .await;
    let hits = signal["result"]["text/plain"].as_str().unwrap_or("");
    assert!(
        hits.trim_matches(['[', ']'])
            .split(',')
            .filter(|pid| !pid.trim().is_empty())
            .count()
            <= 2,
        "the second session can signal processes beyond its own: {signal}"
    );

    // Its own workspace: the first session's file is not in the second's.
    let write = server
        .execute(&first, "open('mine.txt', 'w').write('first'); 0")
        .await;
    assert_eq!(write["status"], "ok", "{write}");
    assert_eq!(
        value(&server, &second, "import os; sorted(os.listdir('.'))").await,
        "[]"
    );
    let (status, file) = server
        .get(&format!("/v1/sessions/{first}/files/mine.txt"))
        .await;
    assert_eq!(
        status, 200,
        "the handed-over workspace serves files: {file}"
    );

    // Its own host uid and workspace mount (a privileged server gives each its own).
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::fs::MetadataExt;
        let owner = |id: &str| {
            std::fs::metadata(server.data_dir.join("workspaces").join(id))
                .expect("workspace on the host")
                .uid()
        };
        assert_ne!(
            owner(&first),
            owner(&second),
            "the sessions share a host uid"
        );
    }

    // No shared random state: each worker seeded itself.
    let random =
        "import random, uuid, os; (random.random(), str(uuid.uuid4()), os.urandom(8).hex())";
    assert_ne!(
        value(&server, &first, random).await,
        value(&server, &second, random).await
    );
}

#[tokio::test]
async fn a_session_with_other_limits_gets_a_fresh_worker_with_them() {
    other_limits_get_a_fresh_worker("").await;
}

#[tokio::test]
async fn a_session_with_other_limits_gets_a_zygote_born_worker_with_them() {
    other_limits_get_a_fresh_worker(ZYGOTE).await;
}

async fn other_limits_get_a_fresh_worker(config: &str) {
    let server = TestServer::start_with_arguments(config, &["--pool-size", "2"]);
    let filled = wait_for_pool(&server, "filled", |pool| pool["ready"] == 2).await;
    let (status, session) = server
        .post(
            "/v1/sessions",
            json!({ "limits": { "memory_bytes": 96 * 1024 * 1024 } }),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().expect("id").to_owned();
    let (_, info) = server.get("/v1/info").await;
    assert_eq!(info["pool"]["handed_over"], filled["handed_over"]);
    assert_eq!(
        info["pool"]["started_fresh"].as_u64(),
        filled["started_fresh"].as_u64().map(|count| count + 1)
    );
    assert_eq!(
        session["limits"]["memory_bytes"],
        96 * 1024 * 1024,
        "{session}"
    );
    // The limit holds: blocks of 8 MiB do not fit in 96 for long.
    let execution = server
        .execute(
            &id,
            "blocks = []\nwhile True:\n    blocks.append(bytearray(8 * 1024 * 1024))",
        )
        .await;
    match execution["status"].as_str() {
        Some("error") => assert_eq!(execution["error"]["ename"], "MemoryError"),
        Some("killed") => {
            let dead = server.wait_for_state(&id, "dead").await;
            assert_eq!(dead["state_reason"], "memory limit exceeded", "{dead}");
        }
        other => panic!("the memory limit did not hold: {other:?} {execution}"),
    }

    // A session with the default limits still comes from the pool.
    create_from_pool(&server).await;
}

#[tokio::test]
async fn the_pool_refills_after_a_burst() {
    refills_after_a_burst("").await;
}

#[tokio::test]
async fn a_zygote_refills_the_pool_after_a_burst() {
    refills_after_a_burst(ZYGOTE).await;
}

async fn refills_after_a_burst(config: &str) {
    let server = TestServer::start_with_arguments(config, &["--pool-size", "2"]);
    wait_for_pool(&server, "filled", |pool| pool["ready"] == 2).await;
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(server.create_session().await);
    }
    let (_, info) = server.get("/v1/info").await;
    let pool = &info["pool"];
    let handed = pool["handed_over"].as_u64().expect("handed_over");
    let fresh = pool["started_fresh"].as_u64().expect("started_fresh");
    assert_eq!(handed + fresh, 5, "{pool}");
    assert!(handed >= 2, "{pool}");
    wait_for_pool(&server, "refilled", |pool| pool["ready"] == 2).await;
    for id in &sessions {
        let execution = server.execute(id, "21 * 2").await;
        assert_eq!(execution["result"]["text/plain"], "42", "{execution}");
    }
    // Closing the server ends the pool's idle workers with the sessions.
    let status = server_stop(server);
    assert!(status.success(), "{status:?}");
}

fn server_stop(mut server: TestServer) -> std::process::ExitStatus {
    let pid = server.pid();
    let status = server.stop_with(nix::sys::signal::Signal::SIGTERM);
    assert!(
        support::child_pids(pid).is_empty(),
        "processes left behind by the server"
    );
    status
}

#[tokio::test]
async fn the_pool_keeps_to_its_memory_budget() {
    // Room for about two idle workers (each uses several MiB), not the six asked for.
    let server = TestServer::start_with_config("[pool]\nsize = 6\nmax_memory_mib = 20\n");
    let pool = wait_for_pool(&server, "held back for memory", |pool| {
        pool["ready"].as_u64().unwrap_or(0) >= 1 && pool["held_back"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    let budget = pool["max_memory_bytes"].as_u64().expect("budget");
    assert_eq!(budget, 20 * 1024 * 1024);
    assert!(
        pool["memory_bytes"].as_u64().expect("memory") <= budget,
        "{pool}"
    );
    assert!(pool["ready"].as_u64().expect("ready") < 6, "{pool}");
    // Sessions still start (fresh ones once the pool is empty).
    for _ in 0..3 {
        server.create_session().await;
    }
}

#[tokio::test]
async fn the_pool_shrinks_when_idle_and_preloads_modules() {
    let config = "[pool]\nsize = 3\nidle_size = 1\nshrink_after_seconds = 1\n\
                  preload = [\"xml.dom.minidom\", \"no_such_module_here\"]\n";
    let server = TestServer::start_with_config(config);
    wait_for_pool(&server, "shrank to its idle size", |pool| {
        pool["ready"] == 1 && pool["target"] == 1
    })
    .await;
    let id = create_from_pool(&server).await;
    assert_eq!(
        value(&server, &id, "import sys; 'xml.dom.minidom' in sys.modules").await,
        "True"
    );
    // A hand-over brings the pool back to its full size.
    wait_for_pool(&server, "grew back", |pool| pool["ready"] == 3).await;
}

#[tokio::test]
async fn pool_settings_are_reported_and_checked() {
    let server = TestServer::start_with_arguments("", &["--pool-size", "0"]);
    let (_, info) = server.get("/v1/info").await;
    assert_eq!(info["pool"]["size"], 0);
    assert_eq!(info["pool"]["ready"], 0);
    server.create_session().await;
    let (_, info) = server.get("/v1/info").await;
    assert_eq!(info["pool"]["started_fresh"], 1);

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["serve", "--pool-size", "100000", "--print-config"])
        .output()
        .expect("run corral");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("pool.size must be at most 1024"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_live_session_reports_its_memory() {
    reports_its_memory("").await;
}

#[tokio::test]
async fn a_zygote_born_session_reports_its_memory() {
    reports_its_memory(ZYGOTE).await;
}

async fn reports_its_memory(config: &str) {
    let server = TestServer::start_with_arguments(config, &["--pool-size", "1"]);
    wait_for_pool(&server, "filled", |pool| pool["ready"] == 1).await;
    let id = create_from_pool(&server).await;
    let (status, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 200, "{session}");
    let memory = &session["memory"];
    let field = |name: &str| {
        memory[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: {session}"))
    };
    let (pss, uss, rss) = (field("pss_bytes"), field("uss_bytes"), field("rss_bytes"));
    assert!(pss > 1024 * 1024, "{memory}");
    assert!(uss <= pss && pss <= rss, "{memory}");
    // The launcher, the namespace's init and the interpreter (when sandboxed), and a
    // zygote-born interpreter's reaper.
    let processes = field("processes");
    let sandboxed = server.get("/v1/info").await.1["isolation"]["sandboxed"] == true;
    let expected = match (sandboxed, config == ZYGOTE) {
        (false, _) => 1,
        (true, false) => 3,
        (true, true) => 4,
    };
    assert_eq!(processes, expected, "{memory}");

    // A child the cell starts is counted with the session.
    let started = server
        .execute(
            &id,
            "import subprocess; p = subprocess.Popen(['sleep', '300']); 0",
        )
        .await;
    assert_eq!(started["status"], "ok", "{started}");
    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(
        session["memory"]["processes"].as_u64(),
        Some(processes + 1),
        "{session}"
    );

    // Lists and ended sessions carry none.
    let (_, list) = server.get("/v1/sessions").await;
    assert!(list["sessions"][0]["memory"].is_null(), "{list}");
    let (status, _) = server.delete(&format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 200);
    let (_, ended) = server.get(&format!("/v1/sessions/{id}")).await;
    assert!(ended["memory"].is_null(), "{ended}");
}

#[tokio::test]
async fn a_pool_worker_warm_up_leaves_no_trace_in_the_session() {
    warm_up_leaves_no_trace("").await;
}

#[tokio::test]
async fn a_zygote_born_worker_leaves_no_trace_in_the_session() {
    warm_up_leaves_no_trace(ZYGOTE).await;
}

async fn warm_up_leaves_no_trace(config: &str) {
    let server = TestServer::start_with_arguments(config, &["--pool-size", "1"]);
    wait_for_pool(&server, "filled", |pool| pool["ready"] == 1).await;
    let id = create_from_pool(&server).await;
    let first = server
        .execute(
            &id,
            "sorted(name for name in globals() if not name.startswith('_'))",
        )
        .await;
    assert_eq!(first["execution_count"], 1, "{first}");
    assert_eq!(first["result"]["text/plain"], "[]", "{first}");
    let (_, history) = server.get(&format!("/v1/sessions/{id}/executions")).await;
    assert_eq!(
        history["executions"].as_array().map(Vec::len),
        Some(1),
        "{history}"
    );
    assert_eq!(
        value(&server, &id, "_").await,
        "[]",
        "`_` is the first cell's result"
    );
}
