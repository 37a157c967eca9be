//! `corral files put|get|ls|rm`: streaming transfers to and from a session's workspace.

use std::process::ExitCode;

use anyhow::Context;
use corral_api::client::FileProgress;

use super::{progress, FilesCommand};

pub async fn run(command: FilesCommand) -> anyhow::Result<ExitCode> {
    match command {
        FilesCommand::Put {
            session,
            local,
            remote,
            server,
        } => {
            let remote = match remote {
                Some(remote) => remote,
                None => local
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .context("the local path has no file name; give the remote path")?,
            };
            corral_api::client::check_workspace_path(&remote)?;
            let file = tokio::fs::File::open(&local)
                .await
                .with_context(|| format!("opening {}", local.display()))?;
            let length = file.metadata().await.ok().map(|metadata| metadata.len());
            let bar = progress::transfer(length, &remote);
            let ticker = bar.clone();
            let written = server
                .client()?
                .put_file(&session, &remote, file, move |sent| ticker.inc(sent))
                .await;
            bar.finish_and_clear();
            let written = written?;
            eprintln!(
                "{} -> {} ({} bytes)",
                local.display(),
                written.path,
                written.size
            );
        }
        FilesCommand::Get {
            session,
            remote,
            local,
            server,
        } => {
            let client = server.client()?;
            let local = local.unwrap_or_else(|| {
                remote
                    .rsplit('/')
                    .next()
                    .filter(|name| !name.is_empty())
                    .unwrap_or("download")
                    .into()
            });
            if local.as_os_str() == "-" {
                let mut stdout = tokio::io::stdout();
                client
                    .get_file(&session, &remote, &mut stdout, |_| {})
                    .await?;
            } else {
                let partial = local.with_extension("corral-partial");
                let mut file = tokio::fs::File::create(&partial)
                    .await
                    .with_context(|| format!("creating {}", partial.display()))?;
                let bar = progress::transfer(None, &remote);
                let on_progress = |step| match step {
                    FileProgress::Length(Some(length)) => {
                        bar.set_length(length);
                        bar.set_style(progress::transfer(Some(length), &remote).style());
                    }
                    FileProgress::Length(None) => {}
                    FileProgress::Chunk(received) => bar.inc(received),
                };
                let copied = client
                    .get_file(&session, &remote, &mut file, on_progress)
                    .await;
                bar.finish_and_clear();
                let copied = match copied {
                    Ok(copied) => copied,
                    Err(error) => {
                        let _ = tokio::fs::remove_file(&partial).await;
                        return Err(error.into());
                    }
                };
                tokio::fs::rename(&partial, &local)
                    .await
                    .with_context(|| format!("writing {}", local.display()))?;
                eprintln!("{remote} -> {} ({copied} bytes)", local.display());
            }
        }
        FilesCommand::Ls {
            session,
            dir,
            json,
            server,
        } => {
            let listing = server.client()?.list_files(&session, &dir).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&listing)?);
            } else {
                for entry in &listing.entries {
                    let suffix = if entry.kind == "directory" { "/" } else { "" };
                    println!(
                        "{:>12}  {}  {}{suffix}",
                        entry.size,
                        entry.modified.format("%Y-%m-%dT%H:%M:%SZ"),
                        entry.name
                    );
                }
            }
        }
        FilesCommand::Rm {
            session,
            remote,
            server,
        } => {
            server.client()?.delete_file(&session, &remote).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
