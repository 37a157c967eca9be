//! `corral sessions list|show|close`: tables for people, `--json` for scripts.

use std::process::ExitCode;

use corral_api::views::SessionView;

use super::SessionsCommand;

/// Sessions fetched per request while listing.
const PAGE_SIZE: u32 = 500;

pub async fn run(command: SessionsCommand) -> anyhow::Result<ExitCode> {
    match command {
        SessionsCommand::List {
            state,
            all,
            json,
            server,
        } => {
            let client = server.client()?;
            let mut sessions = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = client
                    .list_sessions(state.as_deref(), cursor.as_deref(), PAGE_SIZE)
                    .await?;
                // Live sessions unless asked for more: ended ones are history.
                sessions.extend(
                    page.sessions
                        .into_iter()
                        .filter(|session| all || state.is_some() || is_live(&session.state)),
                );
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&sessions)?);
            } else {
                print!("{}", table(&sessions));
            }
        }
        SessionsCommand::Show { id, json, server } => {
            let session = server.client()?.get_session(&id).await?;
            print_session(&session, json)?;
        }
        SessionsCommand::Close { id, json, server } => {
            let session = server.client()?.close_session(&id).await?;
            print_session(&session, json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a session in `state` can still run code (not closed, expired or dead).
fn is_live(state: &str) -> bool {
    !matches!(state, "closed" | "expired" | "dead")
}

fn print_session(session: &SessionView, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(session)?);
        return Ok(());
    }
    let rows = [
        ("id", session.id.clone()),
        ("name", session.name.clone().unwrap_or_default()),
        ("runtime", session.runtime.clone()),
        ("state", session.state.clone()),
        ("reason", session.state_reason.clone().unwrap_or_default()),
        ("created", session.created_at.to_rfc3339()),
        ("last activity", session.last_activity_at.to_rfc3339()),
        ("executions", session.execution_count.to_string()),
        ("accepting", session.accepting_executions.to_string()),
        ("metadata", serde_json::to_string(&session.metadata)?),
    ];
    for (label, value) in rows {
        println!("{label:<14} {value}");
    }
    Ok(())
}

/// A plain aligned table, one session per row.
fn table(sessions: &[SessionView]) -> String {
    let header = ["ID", "STATE", "EXECS", "CREATED", "NAME", "REASON"];
    let rows: Vec<[String; 6]> = sessions
        .iter()
        .map(|session| {
            [
                session.id.clone(),
                session.state.clone(),
                session.execution_count.to_string(),
                session.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                session.name.clone().unwrap_or_default(),
                session.state_reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut push_row = |cells: Vec<&str>| {
        let line: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    };
    push_row(header.to_vec());
    for row in &rows {
        push_row(row.iter().map(String::as_str).collect());
    }
    if sessions.is_empty() {
        text.push_str("(no sessions; --all lists ended ones too)\n");
    }
    text
}
