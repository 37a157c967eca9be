//! `corral bench --fleet N --database-url postgres://…`: a fleet of real nodes on this machine
//! sharing one PostgreSQL server, measured with 1 node and then with 3 (each on a fresh
//! database made on that server): creates/s, executes/s, execute latency direct and
//! forwarded; then N session records spread across the nodes — inserted through the store as
//! owned by them, with no worker behind them (the only stub, and only here) — read through
//! their owner and through another node, and listed whole, to show that the store and the
//! routing are not what limits a fleet. Writes `target/bench/fleet.json`.
//!
//! Numbers depend on the machine; they are printed, never asserted. It does not measure node
//! loss or placement (the tests cover their behaviour).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::Utc;
use corral_api::client::CorralClient;
use corral_core::{SessionId, SessionRecord, SessionState, SessionTtl};
use corral_store::{PostgresStore, Store};
use serde::Serialize;

use super::bench::{latency, report_dir, start_server_with, ChildServer, Latency};
use super::BenchArgs;

/// Fleet sizes compared.
const FLEET_SIZES: [usize; 2] = [1, 3];
/// Real sessions created (and held) per fleet size, at most: each is a sandboxed interpreter.
const MAX_CREATES: usize = 24;
/// Real sessions per node that execute in parallel for executes/s.
const SESSIONS_PER_NODE: usize = 2;
/// Concurrent inserters of the simulated records.
const INSERTERS: usize = 8;
/// Page size of the full listing (the native API's largest).
const LIST_PAGE: u32 = 1000;

#[derive(Debug, Serialize)]
struct FleetRun {
    nodes: usize,
    creates: usize,
    creates_per_second: f64,
    executions: usize,
    executes_per_second: f64,
    execute_direct: Latency,
    /// Through another node than the owner; absent with one node.
    execute_forwarded: Option<Latency>,
    /// Simulated sessions (records only) spread across the nodes.
    records: usize,
    records_per_second: f64,
    get_direct: Latency,
    get_forwarded: Option<Latency>,
    /// Every session of the database listed through one node, page by page.
    list_all_ms: f64,
    listed: usize,
}

#[derive(Debug, Serialize)]
struct FleetReport {
    runs: Vec<FleetRun>,
}

struct Fleet {
    _servers: Vec<ChildServer>,
    clients: Vec<CorralClient>,
    node_ids: Vec<String>,
    store: Arc<PostgresStore>,
}

async fn start_fleet(
    arguments: &BenchArgs,
    server_url: &str,
    nodes: usize,
) -> anyhow::Result<Fleet> {
    let database = corral_store::scratch_database(server_url)
        .await
        .context("making a fresh database on --database-url's server")?;
    // Random enough for nodes that live as long as this command, on loopback.
    let secret = SessionId::new().to_string();
    let config = "[limits]\nmax_sessions = 256\nidle_ttl_seconds = 86400\n";
    let mut servers = Vec::with_capacity(nodes);
    let mut clients = Vec::with_capacity(nodes);
    let mut node_ids = Vec::with_capacity(nodes);
    for index in 0..nodes {
        let node_id = format!("bench-node-{index}");
        let (server, url) = start_server_with(
            arguments,
            Some(config),
            &format!("-fleet{nodes}-{index}"),
            &[
                "--database-url",
                &database,
                "--node-id",
                &node_id,
                "--node-secret",
                &secret,
            ],
        )
        .await
        .with_context(|| format!("starting {node_id}"))?;
        let client = CorralClient::new(&url)?;
        client.health().await?;
        servers.push(server);
        clients.push(client);
        node_ids.push(node_id);
    }
    let store = Arc::new(PostgresStore::connect(&database).await?);
    Ok(Fleet {
        _servers: servers,
        clients,
        node_ids,
        store,
    })
}

pub async fn run(arguments: &BenchArgs, records: usize) -> anyhow::Result<ExitCode> {
    let Some(server_url) = arguments.database_url.as_deref() else {
        bail!("--fleet needs --database-url (a PostgreSQL server; scripts/postgres runs one)");
    };
    let iterations = arguments.iterations.max(1);
    let mut runs = Vec::new();
    for nodes in FLEET_SIZES {
        eprintln!("{nodes} node(s): real sessions, then {records} simulated sessions");
        let fleet = start_fleet(arguments, server_url, nodes).await?;
        runs.push(measure(&fleet, iterations, records).await?);
        fleet.store.close().await;
    }
    let report = FleetReport { runs };
    let directory = report_dir();
    std::fs::create_dir_all(&directory)
        .with_context(|| format!("creating {}", directory.display()))?;
    let path = directory.join("fleet.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    if arguments.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    eprintln!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

async fn measure(fleet: &Fleet, iterations: usize, records: usize) -> anyhow::Result<FleetRun> {
    let nodes = fleet.clients.len();
    // Creates, spread over the nodes, one creator per node.
    let creates = iterations.clamp(nodes, MAX_CREATES);
    let started = Instant::now();
    let tasks: Vec<_> = fleet
        .clients
        .iter()
        .enumerate()
        .map(|(index, client)| {
            let client = client.clone();
            let count = creates / nodes + usize::from(index < creates % nodes);
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(count);
                for _ in 0..count {
                    ids.push(client.create_session(None).await?.id);
                }
                Ok::<_, corral_api::client::ClientError>((client, ids))
            })
        })
        .collect();
    let mut created = Vec::new();
    for task in tasks {
        created.push(task.await.context("a create task panicked")??);
    }
    let creates_per_second = creates as f64 / started.elapsed().as_secs_f64();
    for (client, ids) in &created {
        for id in ids {
            client.close_session(id).await?;
        }
    }

    // Executes/s: sessions on every node, each executed through its own node.
    let mut executing = Vec::new();
    for client in &fleet.clients {
        for _ in 0..SESSIONS_PER_NODE {
            executing.push((client.clone(), client.create_session(None).await?.id));
        }
    }
    let per_session = iterations.div_ceil(executing.len()).max(5);
    let started = Instant::now();
    let tasks: Vec<_> = executing
        .iter()
        .cloned()
        .map(|(client, id)| {
            tokio::spawn(async move {
                for _ in 0..per_session {
                    client.execute(&id, "1 + 1", None).await?;
                }
                Ok::<_, corral_api::client::ClientError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.context("an execute task panicked")??;
    }
    let executions = per_session * executing.len();
    let executes_per_second = executions as f64 / started.elapsed().as_secs_f64();
    for (client, id) in &executing {
        client.close_session(id).await?;
    }

    // Direct vs forwarded: one session on the first node, executed through it and through
    // the second, alternately.
    let owner = &fleet.clients[0];
    let other = fleet.clients.get(1);
    let session = owner.create_session(None).await?.id;
    let (mut direct, mut forwarded) = (Vec::new(), Vec::new());
    for _ in 0..iterations {
        let started = Instant::now();
        owner.execute(&session, "1 + 1", None).await?;
        direct.push(started.elapsed());
        if let Some(other) = other {
            let started = Instant::now();
            let execution = other.execute(&session, "1 + 1", None).await?;
            forwarded.push(started.elapsed());
            if execution.status != "ok" {
                bail!("a forwarded execution failed: {:?}", execution.error);
            }
        }
    }
    owner.close_session(&session).await?;

    // The simulation: records only, owned by the nodes in turn.
    let now = Utc::now();
    let ttl = SessionTtl {
        idle: Duration::from_secs(86_400),
        max: Duration::from_secs(86_400),
    };
    let simulated: Vec<(SessionRecord, usize)> = (0..records)
        .map(|index| {
            let mut record = SessionRecord::new(
                SessionId::new(),
                "python3".into(),
                None,
                serde_json::Map::new(),
                ttl,
                now,
            );
            record.state = SessionState::Idle;
            (record, index % nodes)
        })
        .collect();
    let started = Instant::now();
    let chunk = records.div_ceil(INSERTERS).max(1);
    let tasks: Vec<_> = simulated
        .chunks(chunk)
        .map(|part| {
            let part: Vec<(SessionRecord, String)> = part
                .iter()
                .map(|(record, node)| (record.clone(), fleet.node_ids[*node].clone()))
                .collect();
            let store = fleet.store.clone();
            tokio::spawn(async move {
                for (record, owner) in part {
                    store.insert_owned_session(&record, &owner, None).await?;
                }
                Ok::<_, corral_store::StoreError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.context("an insert task panicked")??;
    }
    let records_per_second = records as f64 / started.elapsed().as_secs_f64().max(1e-9);

    let (mut get_direct, mut get_forwarded) = (Vec::new(), Vec::new());
    let stride = (records / iterations).max(1);
    for (record, node) in simulated.iter().step_by(stride).take(iterations) {
        let id = record.id.to_string();
        let started = Instant::now();
        fleet.clients[*node].get_session(&id).await?;
        get_direct.push(started.elapsed());
        if nodes > 1 {
            let started = Instant::now();
            fleet.clients[(*node + 1) % nodes].get_session(&id).await?;
            get_forwarded.push(started.elapsed());
        }
    }

    let started = Instant::now();
    let mut listed = 0;
    let mut cursor: Option<String> = None;
    loop {
        let page = fleet.clients[nodes - 1]
            .list_sessions(None, cursor.as_deref(), LIST_PAGE)
            .await?;
        listed += page.sessions.len();
        match page.next_cursor {
            Some(next) if !page.sessions.is_empty() => cursor = Some(next),
            _ => break,
        }
    }
    let list_all_ms = started.elapsed().as_secs_f64() * 1000.0;

    Ok(FleetRun {
        nodes,
        creates,
        creates_per_second,
        executions,
        executes_per_second,
        execute_direct: latency("execute, direct", direct),
        execute_forwarded: (nodes > 1).then(|| latency("execute, forwarded", forwarded)),
        records,
        records_per_second,
        get_direct: latency("GET record, direct", get_direct),
        get_forwarded: (nodes > 1).then(|| latency("GET record, forwarded", get_forwarded)),
        list_all_ms,
        listed,
    })
}

fn print_table(report: &FleetReport) {
    println!(
        "{:>5} {:>10} {:>11} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "nodes",
        "creates/s",
        "executes/s",
        "exec p50",
        "exec p99",
        "fwd p50",
        "fwd p99",
        "records/s",
        "GET p50",
        "GET fwd p50",
        "list all ms"
    );
    let or_dash = |latency: &Option<Latency>, pick: fn(&Latency) -> f64| {
        latency
            .as_ref()
            .map_or_else(|| "-".to_owned(), |latency| format!("{:.2}", pick(latency)))
    };
    for run in &report.runs {
        println!(
            "{:>5} {:>10.1} {:>11.0} {:>10.2} {:>10.2} {:>10} {:>10} {:>10.0} {:>10.2} {:>10} {:>12.0}",
            run.nodes,
            run.creates_per_second,
            run.executes_per_second,
            run.execute_direct.p50_ms,
            run.execute_direct.p99_ms,
            or_dash(&run.execute_forwarded, |latency| latency.p50_ms),
            or_dash(&run.execute_forwarded, |latency| latency.p99_ms),
            run.records_per_second,
            run.get_direct.p50_ms,
            or_dash(&run.get_forwarded, |latency| latency.p50_ms),
            run.list_all_ms,
        );
    }
    if let Some(run) = report.runs.last() {
        println!(
            "(latencies in ms; {} simulated sessions, records only, inserted through the store; {} listed in the last run)",
            run.records, run.listed
        );
    }
}
