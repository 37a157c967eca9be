//! `corral nodes list`: the fleet's nodes, from a server's `/v1/nodes` (admin key) or
//! straight from the fleet's database (`--database-url`). Only parses and prints.

use std::process::ExitCode;

use anyhow::Context;
use corral_api::views::NodeView;

use super::NodesCommand;

pub async fn run(command: NodesCommand) -> anyhow::Result<ExitCode> {
    let NodesCommand::List {
        database_url,
        json,
        server,
    } = command;
    let nodes: Vec<NodeView> = match database_url {
        Some(url) => {
            let store = corral_store::open_store(std::path::Path::new("."), Some(&url))
                .await
                .context("opening the fleet's PostgreSQL database")?;
            let listed = store.list_nodes().await.context("reading the nodes")?;
            store.close().await;
            let now = chrono::Utc::now();
            listed
                .into_iter()
                .map(|node| NodeView::new(node, now))
                .collect()
        }
        None => server.client()?.list_nodes().await?.nodes,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&nodes)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<6} {:>8} {:>8} {:>12} {:<26} ADVERTISE URL",
        "ID", "ALIVE", "SESSIONS", "MAX", "MEMORY MIB", "LEASE UNTIL"
    );
    for node in &nodes {
        println!(
            "{:<24} {:<6} {:>8} {:>8} {:>12} {:<26} {}",
            node.id,
            if node.alive { "yes" } else { "no" },
            node.live_sessions,
            node.max_sessions,
            node.available_memory_bytes
                .map(|bytes| (bytes / (1024 * 1024)).to_string())
                .unwrap_or_else(|| "-".to_owned()),
            node.lease_expires_at.to_rfc3339(),
            node.advertise_url
        );
    }
    Ok(ExitCode::SUCCESS)
}
