//! Sandboxes come and go without leaving anything behind: no process, mount or cgroup
//! survives a closed session, across many create/close cycles.

mod support;

use support::TestServer;

/// The leak check counts every mount on the host: the tests of this file run one at a time so
/// that the other's sessions do not move the count.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn mounts_under(directory: &std::path::Path) -> usize {
    let prefix = directory.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|line| {
            line.split(' ')
                .nth(4)
                .is_some_and(|point| point.starts_with(&prefix))
        })
        .count()
}

fn cgroups_of(server_pid: u32) -> usize {
    ["memory", "pids", "cpu"]
        .iter()
        .map(|controller| {
            std::fs::read_dir(format!("/sys/fs/cgroup/{controller}/corral"))
                .map(|entries| {
                    entries
                        .flatten()
                        .filter(|entry| {
                            entry
                                .file_name()
                                .to_string_lossy()
                                .starts_with(&format!("{server_pid}-"))
                        })
                        .count()
                })
                .unwrap_or(0)
        })
        .sum()
}

fn mounts_total() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .count()
}

#[tokio::test]
async fn a_hundred_create_close_cycles_leave_nothing_behind() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = TestServer::start();
    let keeper = server.create_session().await;
    server.execute(&keeper, "kept = 1").await;
    server.wait_for_children(1).await;
    let mounts_before = mounts_under(&server.data_dir);
    let total_before = mounts_total();
    let cgroups_before = cgroups_of(server.pid());
    for _ in 0..100 {
        let id = server.create_session().await;
        server
            .execute(
                &id,
                "import subprocess\nsubprocess.Popen(['sleep', '300'], start_new_session=True)\n1",
            )
            .await;
        let (status, _) = server.delete(&format!("/v1/sessions/{id}")).await;
        assert_eq!(status, 200);
    }
    server.wait_for_children(1).await;
    let deadline = std::time::Instant::now() + support::DEADLINE;
    loop {
        let settled = mounts_under(&server.data_dir) == mounts_before
            && mounts_total() == total_before
            && cgroups_of(server.pid()) == cgroups_before;
        if settled {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mounts {} -> {}, all mounts {} -> {}, cgroups {} -> {}",
            mounts_before,
            mounts_under(&server.data_dir),
            total_before,
            mounts_total(),
            cgroups_before,
            cgroups_of(server.pid())
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let sleepers = std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter(|entry| {
            std::fs::read_to_string(entry.path().join("cmdline"))
                .is_ok_and(|cmdline| cmdline == "sleep\u{0}300\u{0}")
        })
        .count();
    assert_eq!(sleepers, 0, "detached processes died with their sessions");
    assert_eq!(
        server.execute(&keeper, "kept").await["result"]["text/plain"],
        "1"
    );
}

/// Regression: an interpreter in a directory the sandbox replaces (a venv under /tmp, as in a
/// checkout cloned to /tmp) must still be visible to sessions.
#[tokio::test]
async fn an_interpreter_under_tmp_is_visible_to_sessions() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let venv = tempfile::Builder::new()
        .prefix("corral-venv-")
        .tempdir_in("/tmp")
        .expect("temporary directory");
    let created = std::process::Command::new(support::python())
        .args(["-m", "venv", "--without-pip"])
        .arg(venv.path())
        .status()
        .expect("python -m venv");
    assert!(created.success());
    let python = venv.path().join("bin/python");
    let server = TestServer::start_with_python("", python.to_str().expect("path"));
    let id = server.create_session().await;
    let execution = server.execute(&id, "import sys\nsys.prefix").await;
    assert_eq!(
        execution["result"]["text/plain"],
        format!("'{}'", venv.path().display())
    );
}

/// The CPU share file of the cgroup a launcher's policy names, with the values a starting and
/// a ready worker should have (`cpu.shares` on cgroup v1, `cpu.weight` on v2).
fn cpu_share_of(policy: &serde_json::Value) -> (std::path::PathBuf, (u64, u64)) {
    let procs: Vec<std::path::PathBuf> = policy["cgroup_procs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|path| path.as_str().map(std::path::PathBuf::from))
        .collect();
    if policy["cgroup_version"] == 2 {
        let directory = procs[0].parent().expect("a cgroup directory").to_owned();
        (directory.join("cpu.weight"), (800, 100))
    } else {
        let directory = procs
            .iter()
            .find(|path| path.to_string_lossy().contains("/cpu/"))
            .and_then(|path| path.parent())
            .expect("a cpu cgroup")
            .to_owned();
        (directory.join("cpu.shares"), (8192, 1024))
    }
}

fn read_share(file: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

#[tokio::test]
async fn a_starting_worker_outweighs_its_neighbours_until_it_is_ready() {
    let _one = ONE_AT_A_TIME.lock().await;
    // An interpreter that takes its time to start, so the start can be watched.
    let directory = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("slow-python-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("directory");
    let slow = directory.join("python");
    std::fs::write(
        &slow,
        format!("#!/bin/sh\nsleep 1\nexec {} \"$@\"\n", support::python()),
    )
    .expect("script");
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let server = TestServer::start_with_config(&format!(
        "[pool]\nsize = 0\n\n[runtimes.slow]\ninterpreter = {:?}\n",
        slow.display().to_string()
    ));
    let before: Vec<u32> = support::launchers_of(&server.data_dir)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect();
    let creating = {
        let http = server.http.clone();
        let url = server.url("/v1/sessions");
        tokio::spawn(async move {
            http.post(&url)
                .json(&serde_json::json!({"runtime": "slow"}))
                .send()
                .await
                .expect("create")
                .json::<serde_json::Value>()
                .await
                .expect("json")
        })
    };
    // While the interpreter starts, its cgroup has the starting share.
    let deadline = std::time::Instant::now() + support::DEADLINE;
    let (file, (starting, normal)) = loop {
        let fresh = support::launchers_of(&server.data_dir)
            .into_iter()
            .find(|(pid, _)| !before.contains(pid));
        if let Some((_, policy)) = fresh {
            break cpu_share_of(&policy);
        }
        assert!(std::time::Instant::now() < deadline, "no launcher appeared");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(read_share(&file), Some(starting), "{}", file.display());
    let session = creating.await.expect("create task");
    assert_eq!(session["state"], "idle", "{session}");
    // Ready: an ordinary share, like every running session's.
    assert_eq!(read_share(&file), Some(normal), "{}", file.display());
    std::fs::remove_dir_all(&directory).expect("cleanup");
}
