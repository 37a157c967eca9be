//! `corral bench --scale N`: holds up to N idle sessions on a server this command starts and
//! reports, as their number grows, what each costs in memory (PSS and USS as the sessions
//! report them, and the host's available memory used per session) and how long a create
//! takes. Writes `target/bench/scale.json` and `target/bench/scale.svg`.
//!
//! Numbers depend on the machine; they are printed, never asserted.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use corral_api::client::CorralClient;
use serde::Serialize;

use super::bench::{latency, report_dir, start_server};
use super::BenchArgs;

/// Sessions whose memory is read at each step (reading every one of thousands is slow).
const MEMORY_SAMPLE: usize = 20;
/// Sessions closed at once at the end.
const CLOSE_PARALLELISM: usize = 8;

#[derive(Debug, Serialize)]
struct Step {
    sessions: usize,
    /// Creates since the previous step.
    create_p50_ms: f64,
    create_p99_ms: f64,
    pss_kib_per_session: u64,
    uss_kib_per_session: u64,
    /// The host's `MemAvailable` fall since before the first session, per session.
    host_kib_per_session: u64,
    /// Sessions started from the warm pool so far, and with a fresh worker.
    from_pool: u64,
    fresh: u64,
}

#[derive(Debug, Serialize)]
struct ScaleReport {
    server: String,
    steps: Vec<Step>,
}

fn available_kib() -> u64 {
    corral_worker::available_memory_bytes().unwrap_or(0) / 1024
}

/// 1, 10, 100, ... below `total`, then `total`.
fn checkpoints(total: usize) -> Vec<usize> {
    let mut points: Vec<usize> = std::iter::successors(Some(1usize), |point| point.checked_mul(10))
        .take_while(|point| *point < total)
        .collect();
    points.push(total);
    points
}

pub async fn run(arguments: &BenchArgs, total: usize) -> anyhow::Result<ExitCode> {
    if total == 0 {
        bail!("--scale needs at least one session");
    }
    let config = format!(
        "[limits]\nmax_sessions = {total}\n# Idle sessions must outlive the run.\nidle_ttl_seconds = 86400\n"
    );
    let (server, url) = start_server(arguments, Some(&config)).await?;
    let client = CorralClient::new(&url)?;
    client.health().await?;
    let progress = std::io::stderr().is_terminal();
    eprintln!("holding up to {total} idle sessions on {url}");
    let before = available_kib();
    let mut sessions: Vec<String> = Vec::with_capacity(total);
    let mut window: Vec<Duration> = Vec::new();
    let mut steps = Vec::new();
    for checkpoint in checkpoints(total) {
        while sessions.len() < checkpoint {
            let started = Instant::now();
            let session = client
                .create_session(None)
                .await
                .with_context(|| format!("creating session {}", sessions.len() + 1))?;
            window.push(started.elapsed());
            sessions.push(session.id);
            if progress && sessions.len() % 10 == 0 {
                eprint!("\r  {} / {total} sessions", sessions.len());
            }
        }
        let stride = (sessions.len() / MEMORY_SAMPLE).max(1);
        let (mut pss, mut uss, mut measured) = (0u64, 0u64, 0u64);
        for id in sessions.iter().step_by(stride).take(MEMORY_SAMPLE) {
            if let Some(memory) = client.get_session(id).await?.memory {
                pss += memory.pss_bytes;
                uss += memory.uss_bytes;
                measured += 1;
            }
        }
        let info = client.info().await?;
        let times = latency("create", std::mem::take(&mut window));
        let step = Step {
            sessions: sessions.len(),
            create_p50_ms: times.p50_ms,
            create_p99_ms: times.p99_ms,
            pss_kib_per_session: pss / measured.max(1) / 1024,
            uss_kib_per_session: uss / measured.max(1) / 1024,
            host_kib_per_session: before.saturating_sub(available_kib()) / sessions.len() as u64,
            from_pool: info.pool.handed_over,
            fresh: info.pool.started_fresh,
        };
        if progress {
            eprint!("\r");
        }
        eprintln!(
            "  {:>6} sessions: create p50 {:.2} ms, {:.2} MiB PSS per session",
            step.sessions,
            step.create_p50_ms,
            step.pss_kib_per_session as f64 / 1024.0
        );
        steps.push(step);
    }
    let closing: Vec<_> = sessions
        .chunks(sessions.len().div_ceil(CLOSE_PARALLELISM))
        .map(|chunk| {
            let client = client.clone();
            let chunk = chunk.to_vec();
            tokio::spawn(async move {
                for id in chunk {
                    client.close_session(&id).await?;
                }
                Ok::<_, corral_api::client::ClientError>(())
            })
        })
        .collect();
    for task in closing {
        task.await.context("a closing task panicked")??;
    }
    drop(server);

    let report = ScaleReport { server: url, steps };
    let directory = report_dir();
    std::fs::create_dir_all(&directory)
        .with_context(|| format!("creating {}", directory.display()))?;
    std::fs::write(
        directory.join("scale.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(directory.join("scale.svg"), chart(&report.steps))?;
    if arguments.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{:>8} {:>12} {:>12} {:>10} {:>10} {:>10} {:>7} {:>7}",
            "sessions",
            "create p50",
            "create p99",
            "PSS MiB",
            "USS MiB",
            "host MiB",
            "pool",
            "fresh"
        );
        for step in &report.steps {
            println!(
                "{:>8} {:>9.2} ms {:>9.2} ms {:>10.2} {:>10.2} {:>10.2} {:>7} {:>7}",
                step.sessions,
                step.create_p50_ms,
                step.create_p99_ms,
                step.pss_kib_per_session as f64 / 1024.0,
                step.uss_kib_per_session as f64 / 1024.0,
                step.host_kib_per_session as f64 / 1024.0,
                step.from_pool,
                step.fresh
            );
        }
        println!("(memory per session; the last columns count sessions started from the warm pool and with a fresh worker)");
    }
    eprintln!(
        "wrote {} and scale.svg",
        directory.join("scale.json").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Memory per session (PSS, USS, host) and create p50 against the number of sessions held,
/// log-scaled sessions axis (SVG).
fn chart(steps: &[Step]) -> String {
    let (left, top, width, height) = (60.0, 50.0, 560.0, 260.0);
    let most_sessions = steps
        .iter()
        .map(|step| step.sessions)
        .max()
        .unwrap_or(1)
        .max(10) as f64;
    let x =
        |sessions: usize| left + width * (sessions.max(1) as f64).log10() / most_sessions.log10();
    let most_mib = steps
        .iter()
        .flat_map(|step| [step.pss_kib_per_session, step.host_kib_per_session])
        .max()
        .unwrap_or(1024)
        .max(1024) as f64
        / 1024.0;
    let most_ms = steps
        .iter()
        .map(|step| step.create_p50_ms)
        .fold(1.0, f64::max);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"10\" y=\"18\" font-size=\"14\">Per idle session as sessions grow (log scale): PSS (blue), USS (green), host (grey) MiB;</text>\n\
         <text x=\"10\" y=\"36\" font-size=\"14\">create p50 in ms (orange, full height = {most_ms:.1} ms)</text>\n\
         <rect x=\"{left}\" y=\"{top}\" width=\"{width}\" height=\"{height}\" fill=\"none\" stroke=\"#999\"/>\n",
        left + width + 70.0,
        top + height + 40.0
    );
    let line = |values: Vec<(usize, f64)>, most: f64, colour: &str| {
        let points: Vec<String> = values
            .iter()
            .map(|(sessions, value)| {
                format!(
                    "{:.1},{:.1}",
                    x(*sessions),
                    top + height - height * (value / most).min(1.0)
                )
            })
            .collect();
        format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n",
            points.join(" ")
        )
    };
    let mib = |kib: u64| kib as f64 / 1024.0;
    svg.push_str(&line(
        steps
            .iter()
            .map(|s| (s.sessions, mib(s.pss_kib_per_session)))
            .collect(),
        most_mib,
        "#1f77b4",
    ));
    svg.push_str(&line(
        steps
            .iter()
            .map(|s| (s.sessions, mib(s.uss_kib_per_session)))
            .collect(),
        most_mib,
        "#2ca02c",
    ));
    svg.push_str(&line(
        steps
            .iter()
            .map(|s| (s.sessions, mib(s.host_kib_per_session)))
            .collect(),
        most_mib,
        "#888888",
    ));
    svg.push_str(&line(
        steps
            .iter()
            .map(|s| (s.sessions, s.create_p50_ms))
            .collect(),
        most_ms,
        "#ff7f0e",
    ));
    for step in steps {
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            x(step.sessions),
            top + height + 16.0,
            step.sessions
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\">{most_mib:.1} MiB</text>\n<text x=\"{:.1}\" y=\"{:.1}\">0</text>\n</svg>\n",
        5.0,
        top + 10.0,
        5.0,
        top + height
    ));
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_grow_tenfold_to_the_total() {
        assert_eq!(checkpoints(1), [1]);
        assert_eq!(checkpoints(2000), [1, 10, 100, 1000, 2000]);
        assert_eq!(checkpoints(100), [1, 10, 100]);
    }
}
