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
/// How long each throughput measurement runs: a fixed window, so that runs compare whatever
/// `--iterations` is.
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(3);
/// How long the benchmark waits for the warm pool to hold a worker again.
const POOL_REFILL_DEADLINE: Duration = Duration::from_secs(60);
/// How long the child server gets to print its listen line.
const SERVER_START_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize)]
pub(super) struct Latency {
    pub(super) name: &'static str,
    pub(super) samples: usize,
    pub(super) p50_ms: f64,
    pub(super) p95_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) mean_ms: f64,
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
    /// Memory of one idle session's processes (sandbox launcher, init and interpreter),
    /// averaged over the 16 parallel sessions, as each session reports it.
    memory_per_session: Option<SessionMemory>,
}

#[derive(Debug, Serialize)]
struct SessionMemory {
    sessions: usize,
    pss_kib: u64,
    uss_kib: u64,
    rss_kib: u64,
}

pub(super) fn latency(name: &'static str, mut samples: Vec<Duration>) -> Latency {
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
pub(super) struct ChildServer {
    child: Child,
    data_dir: std::path::PathBuf,
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Starts `corral serve` for the benchmark; `config` (TOML) becomes its config file.
pub(super) async fn start_server(
    arguments: &BenchArgs,
    config: Option<&str>,
) -> anyhow::Result<(ChildServer, String)> {
    start_server_with(arguments, config, "", &[]).await
}

/// [`start_server`] with extra `serve` arguments; `name` tells apart the data directories of
/// several servers of one run.
pub(super) async fn start_server_with(
    arguments: &BenchArgs,
    config: Option<&str>,
    name: &str,
    extra: &[&str],
) -> anyhow::Result<(ChildServer, String)> {
    let with_zygote;
    let config = if arguments.zygote {
        with_zygote = format!("{}\n[pool]\nzygote = true\n", config.unwrap_or(""));
        Some(with_zygote.as_str())
    } else {
        config
    };
    let data_dir = std::env::temp_dir().join(format!("corral-bench-{}{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut command = Command::new(std::env::current_exe().context("finding this binary")?);
    command
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .env("CORRAL_LOG", "warn,corral::cli::serve=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .args(extra)
        .kill_on_drop(true);
    if let Some(python) = &arguments.python {
        command.arg("--python").arg(python);
    }
    if arguments.insecure_no_sandbox {
        command.arg("--insecure-no-sandbox");
    }
    if let Some(size) = arguments.pool_size {
        command.arg("--pool-size").arg(size.to_string());
    }
    if let Some(config) = config {
        std::fs::create_dir_all(&data_dir).context("creating the data directory")?;
        let path = data_dir.join("bench.toml");
        std::fs::write(&path, config).context("writing the config file")?;
        command.arg("--config").arg(path);
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
    if let Some(peer) = arguments.compare {
        return super::bench_compare::run(&arguments, peer).await;
    }
    if let Some(sessions) = arguments.fleet {
        return super::bench_fleet::run(&arguments, sessions).await;
    }
    if let Some(sessions) = arguments.scale {
        return super::bench_scale::run(&arguments, sessions).await;
    }
    let iterations = arguments.iterations.max(1);
    let (_server, url) = match &arguments.server {
        Some(url) => (None, url.clone()),
        None => {
            let (server, url) = start_server(&arguments, None).await?;
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

    let info = client.info().await?;
    let pooled = info.pool.size > 0;
    let mut create = Vec::with_capacity(iterations);
    let mut create_run = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        if pooled {
            wait_for_warm_worker(&client).await?;
        }
        let started = Instant::now();
        let session = client.create_session(None).await?;
        create.push(started.elapsed());
        client.close_session(&session.id).await?;
        if pooled {
            wait_for_warm_worker(&client).await?;
        }
        let started = Instant::now();
        let session = client.create_session(None).await?;
        client.execute(&session.id, "1 + 1", None).await?;
        create_run.push(started.elapsed());
        client.close_session(&session.id).await?;
    }
    // Limits no pool worker has: the session gets a freshly started worker.
    let fresh_body = serde_json::json!({
        "limits": { "max_open_files": info.limits.session_max_open_files.saturating_sub(1) }
    });
    let mut create_fresh = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        let session = client.create_session_with(&fresh_body).await?;
        create_fresh.push(started.elapsed());
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
    let mut sequential = 0;
    while sequential_started.elapsed() < THROUGHPUT_WINDOW {
        client.execute(&session.id, "x += 1", None).await?;
        sequential += 1;
    }
    let one_session = Throughput {
        name: "executions/s, 1 session",
        sessions: 1,
        executions: sequential,
        executions_per_second: sequential as f64 / sequential_started.elapsed().as_secs_f64(),
    };
    client.close_session(&session.id).await?;
    bar.inc(1);

    let mut lifecycle = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        if pooled {
            wait_for_warm_worker(&client).await?;
        }
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
    let parallel_started = Instant::now();
    let deadline = parallel_started + THROUGHPUT_WINDOW;
    let tasks: Vec<_> = sessions
        .iter()
        .cloned()
        .map(|id| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut done = 0usize;
                while Instant::now() < deadline {
                    client.execute(&id, "1 + 1", None).await?;
                    done += 1;
                }
                Ok::<_, corral_api::client::ClientError>(done)
            })
        })
        .collect();
    let mut parallel = 0;
    for task in tasks {
        parallel += task.await.context("a benchmark task panicked")??;
    }
    let parallel_elapsed = parallel_started.elapsed();
    let mut measured = Vec::with_capacity(sessions.len());
    for id in &sessions {
        if let Some(memory) = client.get_session(id).await?.memory {
            measured.push(memory);
        }
    }
    let memory_per_session = (!measured.is_empty()).then(|| {
        let average = |pick: fn(&corral_api::views::MemoryView) -> u64| {
            measured.iter().map(pick).sum::<u64>() / measured.len() as u64 / 1024
        };
        SessionMemory {
            sessions: measured.len(),
            pss_kib: average(|memory| memory.pss_bytes),
            uss_kib: average(|memory| memory.uss_bytes),
            rss_kib: average(|memory| memory.rss_bytes),
        }
    });
    let sandboxed = match client.info().await {
        Ok(info) => Some(info.isolation.sandboxed),
        Err(_) => None,
    };
    let sixteen_sessions = Throughput {
        name: "executions/s, 16 sessions",
        sessions: PARALLEL_SESSIONS,
        executions: parallel,
        executions_per_second: parallel as f64 / parallel_elapsed.as_secs_f64(),
    };
    for id in &sessions {
        client.close_session(id).await?;
    }

    bar.finish_and_clear();
    let report = Report {
        server: url,
        sandboxed,
        memory_per_session,
        latencies: vec![
            latency(
                if pooled {
                    "session create (warm pool)"
                } else {
                    "session create"
                },
                create,
            ),
            latency("create, 1st execute answered", create_run),
            latency("create, no warm worker", create_fresh),
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
        if let Some(memory) = &report.memory_per_session {
            println!(
                "{:<28} {:>7} {:>9.2} MiB PSS, {:.2} MiB USS, {:.2} MiB RSS",
                "memory per idle session",
                memory.sessions,
                memory.pss_kib as f64 / 1024.0,
                memory.uss_kib as f64 / 1024.0,
                memory.rss_kib as f64 / 1024.0,
            );
        }
        if let Some(sandboxed) = report.sandboxed {
            println!("sandboxed: {sandboxed}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Untimed: waits until the server's warm pool holds a worker, as a pool sized for the rate
/// at which sessions arrive would.
pub(super) async fn wait_for_warm_worker(client: &CorralClient) -> anyhow::Result<()> {
    let deadline = Instant::now() + POOL_REFILL_DEADLINE;
    while client.info().await?.pool.ready == 0 {
        if Instant::now() > deadline {
            bail!("the warm pool did not refill within {POOL_REFILL_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Where benchmark reports go: `target/bench/` beside this binary's build (or under the
/// current directory).
pub(super) fn report_dir() -> std::path::PathBuf {
    let target = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .find(|dir| dir.file_name().is_some_and(|name| name == "target"))
            .map(std::path::Path::to_owned)
    });
    target
        .unwrap_or_else(|| std::path::PathBuf::from("target"))
        .join("bench")
}
