//! Runtimes built from a requirements file: corral makes the venv and installs from a package
//! index this test serves on loopback (a wheel it builds itself), sessions import the
//! package, `/v1/runtimes` lists it; a broken requirements file is a clear, reported error,
//! never a hang; `corral runtimes build` builds ahead and rebuilds only when inputs change.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use support::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WHEEL: &str = "corral_demo-1.0-py3-none-any.whl";

/// Writes a pure-Python wheel (`corral_demo`, `ANSWER = 42`) into `directory`.
fn build_wheel(directory: &Path) -> PathBuf {
    let path = directory.join(WHEEL);
    let script = r#"
import base64, hashlib, sys, zipfile
files = {
    "corral_demo/__init__.py": "ANSWER = 42\n",
    "corral_demo-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: corral_demo\nVersion: 1.0\n",
    "corral_demo-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: corral-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = []
with zipfile.ZipFile(sys.argv[1], "w") as wheel:
    for name, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
        wheel.writestr(name, data)
    record.append("corral_demo-1.0.dist-info/RECORD,,")
    wheel.writestr("corral_demo-1.0.dist-info/RECORD", "\n".join(record) + "\n")
"#;
    let status = Command::new(support::python())
        .args(["-c", script])
        .arg(&path)
        .status()
        .expect("python runs");
    assert!(status.success());
    path
}

/// A `--find-links` page and the wheel, over HTTP on loopback; stops when dropped.
struct PackageIndex {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl PackageIndex {
    async fn serve(wheel: PathBuf) -> PackageIndex {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("address"));
        let bytes = std::fs::read(&wheel).expect("wheel");
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let bytes = bytes.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(count) => request.extend_from_slice(&buffer[..count]),
                        }
                    }
                    let line = String::from_utf8_lossy(&request);
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let (content_type, body) = if path.ends_with(".whl") {
                        ("application/octet-stream", bytes)
                    } else {
                        (
                            "text/html",
                            format!("<html><body><a href=\"{WHEEL}\">{WHEEL}</a></body></html>")
                                .into_bytes(),
                        )
                    };
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
        PackageIndex { url, task }
    }
}

impl Drop for PackageIndex {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn requirements(directory: &Path, index: &PackageIndex, requirement: &str) -> PathBuf {
    let path = directory.join(format!("requirements-{}.txt", requirement.len()));
    std::fs::write(
        &path,
        format!("--no-index\n--find-links {}\n{requirement}\n", index.url),
    )
    .expect("requirements");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_built_from_requirements_installs_from_the_local_index() {
    let temp = tempfile::tempdir().expect("temp");
    let index = PackageIndex::serve(build_wheel(temp.path())).await;
    let good = requirements(temp.path(), &index, "corral-demo==1.0");
    let broken = requirements(temp.path(), &index, "corral-missing==9.9");
    let config = format!(
        "[runtimes.demo]\nrequirements = {good:?}\ndisplay_name = \"Demo\"\n\n[runtimes.broken]\nrequirements = {broken:?}\n"
    );
    let server = TestServer::start_with_config(&config);
    let (_, list) = server.get("/v1/runtimes").await;
    let demo = list["runtimes"]
        .as_array()
        .expect("runtimes")
        .iter()
        .find(|runtime| runtime["name"] == "demo")
        .unwrap_or_else(|| panic!("demo listed: {list}"))
        .clone();
    assert_eq!(demo["language"], "python");
    assert_eq!(demo["display_name"], "Demo");
    assert!(demo["packages"]
        .as_array()
        .expect("packages")
        .contains(&json!("corral_demo==1.0")));
    // The broken one is reported with pip's reason, and refused at once.
    assert_eq!(list["unavailable"][0]["name"], "broken", "{list}");
    let reason = list["unavailable"][0]["reason"].as_str().expect("reason");
    assert!(reason.contains("pip install failed"), "{reason}");
    assert!(reason.contains("corral-missing==9.9"), "{reason}");
    let (status, _) = server
        .post("/v1/sessions", json!({"runtime": "broken"}))
        .await;
    assert_eq!(status, 503);

    let (status, session) = server
        .post("/v1/sessions", json!({"runtime": "demo"}))
        .await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().expect("id");
    let imported = server
        .execute(id, "import corral_demo, sys\n(corral_demo.ANSWER, sys.prefix.endswith('.runtimes/demo/venv'))")
        .await;
    assert_eq!(imported["result"]["text/plain"], "(42, True)", "{imported}");
    // Jupyter sees the runtime as a kernelspec.
    let (status, spec) = server.get("/api/kernelspecs/demo").await;
    assert_eq!(status, 200);
    assert_eq!(spec["spec"]["display_name"], "Demo (corral)");
    assert!(server.log().contains("venv built"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtimes_build_builds_ahead_and_only_when_the_inputs_change() {
    let temp = tempfile::tempdir().expect("temp");
    let index = PackageIndex::serve(build_wheel(temp.path())).await;
    let requirements = requirements(temp.path(), &index, "corral-demo==1.0");
    let config = temp.path().join("corral.toml");
    std::fs::write(
        &config,
        format!("[runtimes.demo]\nrequirements = {requirements:?}\n"),
    )
    .expect("config");
    let data_dir = temp.path().join("data");
    let build = |name: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(["runtimes", "build", name, "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--python", &support::python()])
            .output()
            .expect("corral runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = build("demo");
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("runtime demo: built"), "{stdout}");
    // Not a terminal: no progress lines.
    assert_eq!(stderr, "");
    let (ok, stdout, _) = build("demo");
    assert!(ok);
    assert!(stdout.contains("runtime demo: up to date"), "{stdout}");
    // A changed requirements file means a new build.
    std::fs::write(
        &requirements,
        std::fs::read_to_string(&requirements).expect("read") + "# changed\n",
    )
    .expect("write");
    let (ok, stdout, _) = build("demo");
    assert!(ok);
    assert!(stdout.contains("runtime demo: built"), "{stdout}");
    // A failing install is a clear error and a failure status.
    std::fs::write(
        &requirements,
        format!("--no-index\n--find-links {}\nnot-there==1\n", index.url),
    )
    .expect("write");
    let (ok, _, stderr) = build("demo");
    assert!(!ok);
    assert!(
        stderr.contains("corral: runtime demo: pip install failed"),
        "{stderr}"
    );
    assert!(stderr.contains("not-there==1"), "{stderr}");
    let (ok, _, stderr) = build("nonesuch");
    assert!(!ok);
    assert!(stderr.contains("no runtime \"nonesuch\""), "{stderr}");
}
