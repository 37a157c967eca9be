//! `corral bench`: latency percentiles and throughput of the native API, measured over HTTP
//! against a server this command starts as a child process (or one given with `--server`).
//!
//! Numbers depend on the machine; they are printed, never asserted.

use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use corral_api::client::CorralClient;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::BenchArgs;

/// Sessions used for the parallel throughput measurement.
const PARALLEL_SESSIONS: usize = 16;
/// How long the child server gets to print its listen line.
const SERVER_START_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize)]
struct Latency {
    name: &'static str,
    samples: usize,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    mean_ms: f64,
}

#[derive(Debug, Serialize)]
struct Throughput {
    name: &'static str,
    sessions: usize,
    executions: usize,
    executions_per_second: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    server: String,
    sandboxed: Option<bool>,
    latencies: Vec<Latency>,
    throughput: Vec<Throughput>,
    /// Proportional set size of one idle session's processes (sandbox launcher, init and
    /// interpreter), averaged over the 16 parallel sessions; only for a server this command
    /// started.
    memory_per_session_kib: Option<u64>,
}

/// Live descendants of `root`, from `/proc`.
fn descendants(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|parent| parent.parse::<u32>().ok());
            if let Some(parent) = parent {
                parents.push((pid, parent));
            }
        }
    }
    let mut found = vec![root];
    let mut index = 0;
    while index < found.len() {
        let current = found[index];
        found.extend(
            parents
                .iter()
                .filter(|(_, parent)| *parent == current)
                .map(|(pid, _)| *pid),
        );
        index += 1;
    }
    found.remove(0);
    found
}

/// Proportional set size of a process, in KiB.
fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("Pss:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

fn latency(name: &'static str, mut samples: Vec<Duration>) -> Latency {
    samples.sort();
    let at = |quantile: f64| -> f64 {
        if samples.is_empty() {
            return f64::NAN;
        }
        let index = ((samples.len() as f64 - 1.0) * quantile).round() as usize;
        samples[index.min(samples.len() - 1)].as_secs_f64() * 1000.0
    };
    let mean = if samples.is_empty() {
        f64::NAN
    } else {
        samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64 * 1000.0
    };
    Latency {
        name,
        samples: samples.len(),
        p50_ms: at(0.50),
        p95_ms: at(0.95),
        p99_ms: at(0.99),
        mean_ms: mean,
    }
}

/// A server started for the benchmark; killed and its data removed on drop.
struct ChildServer {
    child: Child,
    data_dir: std::path::PathBuf,
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

async fn start_server(arguments: &BenchArgs) -> anyhow::Result<(ChildServer, String)> {
    let data_dir = std::env::temp_dir().join(format!("corral-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut command = Command::new(std::env::current_exe().context("finding this binary")?);
    command
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .env("CORRAL_LOG", "warn,corral::cli::serve=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(python) = &arguments.python {
        command.arg("--python").arg(python);
    }
    if arguments.insecure_no_sandbox {
        command.arg("--insecure-no-sandbox");
    }
    let mut child = command.spawn().context("starting the server")?;
    let stderr = child.stderr.take().context("the server's stderr")?;
    let server = ChildServer { child, data_dir };
    let mut lines = BufReader::new(stderr).lines();
    let address = tokio::time::timeout(SERVER_START_DEADLINE, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let url = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                return Ok::<_, std::io::Error>(Some(url));
            }
            eprintln!("server: {line}");
        }
        Ok(None)
    })
    .await
    .context("the server did not start in time")??;
    let Some(url) = address else {
        bail!("the server exited before listening");
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((server, url))
}

pub async fn run(arguments: BenchArgs) -> anyhow::Result<ExitCode> {
    let iterations = arguments.iterations.max(1);
    let (server, url) = match &arguments.server {
        Some(url) => (None, url.clone()),
        None => {
            let (server, url) = start_server(&arguments).await?;
            (Some(server), url)
        }
    };
    // A server this command started has no keys; only a given server may need one.
    let api_key = arguments
        .server
        .is_some()
        .then(|| arguments.api_key.clone())
        .flatten();
    let client = CorralClient::new(&url)?.with_api_key(api_key);
    client.health().await?;
    eprintln!("benchmarking {url} with {iterations} samples per measurement");
    // One step per measurement; drawn only on a terminal.
    let bar = super::progress::steps(5, "measuring");

    let mut create = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        let session = client.create_session(None).await?;
        create.push(started.elapsed());
        client.close_session(&session.id).await?;
    }
    bar.inc(1);

    let session = client.create_session(Some("bench")).await?;
    client.execute(&session.id, "x = 0", None).await?;
    let mut execute = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        let execution = client.execute(&session.id, "x += 1\nx", None).await?;
        execute.push(started.elapsed());
        if execution.status != "ok" {
            bail!("a trivial execution failed: {:?}", execution.error);
        }
    }

    bar.inc(1);
    let sequential_started = Instant::now();
    for _ in 0..iterations {
        client.execute(&session.id, "x += 1", None).await?;
    }
    let one_session = Throughput {
        name: "executions/s, 1 session",
        sessions: 1,
        executions: iterations,
        executions_per_second: iterations as f64 / sequential_started.elapsed().as_secs_f64(),
    };
    client.close_session(&session.id).await?;
    bar.inc(1);

    let mut lifecycle = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        let session = client.create_session(None).await?;
        client.execute(&session.id, "1 + 1", None).await?;
        client.close_session(&session.id).await?;
        lifecycle.push(started.elapsed());
    }

    bar.inc(1);
    let mut sessions = Vec::with_capacity(PARALLEL_SESSIONS);
    for _ in 0..PARALLEL_SESSIONS {
        sessions.push(client.create_session(Some("bench")).await?.id);
    }
    let per_session = iterations.div_ceil(PARALLEL_SESSIONS).max(10);
    let parallel_started = Instant::now();
    let tasks: Vec<_> = sessions
        .iter()
        .cloned()
        .map(|id| {
            let client = client.clone();
            tokio::spawn(async move {
                for _ in 0..per_session {
                    client.execute(&id, "1 + 1", None).await?;
                }
                Ok::<_, corral_api::client::ClientError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.context("a benchmark task panicked")??;
    }
    let parallel_elapsed = parallel_started.elapsed();
    let memory_per_session_kib = server.as_ref().and_then(|server| {
        let pid = server.child.id()?;
        let total: u64 = descendants(pid).into_iter().map(pss_kib).sum();
        Some(total / PARALLEL_SESSIONS as u64)
    });
    let sandboxed = match client.info().await {
        Ok(info) => Some(info.isolation.sandboxed),
        Err(_) => None,
    };
    let sixteen_sessions = Throughput {
        name: "executions/s, 16 sessions",
        sessions: PARALLEL_SESSIONS,
        executions: per_session * PARALLEL_SESSIONS,
        executions_per_second: (per_session * PARALLEL_SESSIONS) as f64
            / parallel_elapsed.as_secs_f64(),
    };
    for id in &sessions {
        client.close_session(id).await?;
    }

    bar.finish_and_clear();
    let report = Report {
        server: url,
        sandboxed,
        memory_per_session_kib,
        latencies: vec![
            latency("session create", create),
            latency("execute round trip", execute),
            latency("create + execute + close", lifecycle),
        ],
        throughput: vec![one_session, sixteen_sessions],
    };
    if arguments.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{:<28} {:>7} {:>9} {:>9} {:>9} {:>9}",
            "measurement", "samples", "p50 ms", "p95 ms", "p99 ms", "mean ms"
        );
        for row in &report.latencies {
            println!(
                "{:<28} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                row.name, row.samples, row.p50_ms, row.p95_ms, row.p99_ms, row.mean_ms
            );
        }
        for row in &report.throughput {
            println!(
                "{:<28} {:>7} {:>9.0} executions/s",
                row.name, row.executions, row.executions_per_second
            );
        }
        if let Some(kib) = report.memory_per_session_kib {
            println!(
                "{:<28} {:>7} {:>9.1} MiB (PSS)",
                "memory per idle session",
                PARALLEL_SESSIONS,
                kib as f64 / 1024.0
            );
        }
        if let Some(sandboxed) = report.sandboxed {
            println!("sandboxed: {sandboxed}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
