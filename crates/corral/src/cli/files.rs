//! `corral files put|get|ls|rm`: streaming transfers to and from a session's workspace.

use std::process::ExitCode;

use anyhow::Context;
use corral_api::client::CorralClient;

use super::FilesCommand;

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
            let file = tokio::fs::File::open(&local)
                .await
                .with_context(|| format!("opening {}", local.display()))?;
            let written = CorralClient::new(&server.server)?
                .put_file(&session, &remote, file)
                .await?;
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
            let client = CorralClient::new(&server.server)?;
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
                client.get_file(&session, &remote, &mut stdout).await?;
            } else {
                let partial = local.with_extension("corral-partial");
                let mut file = tokio::fs::File::create(&partial)
                    .await
                    .with_context(|| format!("creating {}", partial.display()))?;
                let copied = match client.get_file(&session, &remote, &mut file).await {
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
            let listing = CorralClient::new(&server.server)?
                .list_files(&session, &dir)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&listing)?);
            } else {
                for entry in &listing.entries {
                    let suffix = if entry.kind == "directory" { "/" } else { "" };
                    println!("{:>12}  {}{suffix}", entry.size, entry.name);
                }
            }
        }
        FilesCommand::Rm {
            session,
            remote,
            server,
        } => {
            CorralClient::new(&server.server)?
                .delete_file(&session, &remote)
                .await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
