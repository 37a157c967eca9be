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
