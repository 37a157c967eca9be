//! `corral keys create|list|revoke`: offline against a data directory's store
//! (`--data-dir`, e.g. to make the first admin key) or a fleet's PostgreSQL database
//! (`--database-url`), or through a running server's `/v1/keys`.
//!
//! Issuing and checking keys is `corral_engine::keys`; this module only parses and prints.
//! A key is printed once, on creation, and never logged.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use corral_api::views::{IssuedKeyView, KeyView};
use corral_core::KeyScope;
use corral_engine::keys::{self, NewKey};
use corral_store::Store;

use super::{KeysCommand, KeysTarget};

pub async fn run(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Create {
            scope,
            tenant,
            session,
            name,
            expires_at,
            format,
            target,
        } => {
            let issued = match open(&target).await? {
                Some(store) => {
                    let scope = KeyScope::parse(&scope)
                        .ok_or_else(|| anyhow!("--scope must be admin, tenant or session"))?;
                    let session_id = session
                        .as_deref()
                        .map(|text| text.parse())
                        .transpose()
                        .context("--session is not a session id")?;
                    let issued = keys::issue_key(
                        store.as_ref(),
                        NewKey {
                            scope,
                            tenant,
                            session_id,
                            name,
                            expires_at,
                        },
                    )
                    .await?;
                    store.close().await;
                    IssuedKeyView {
                        key: issued.key,
                        details: KeyView::from(issued.record),
                    }
                }
                None => {
                    target
                        .server
                        .client()?
                        .create_key(&serde_json::json!({
                            "scope": scope,
                            "tenant": tenant,
                            "session_id": session,
                            "name": name,
                            "expires_at": expires_at,
                        }))
                        .await?
                }
            };
            let issued = match format.as_str() {
                "corral" => issued,
                "e2b" => IssuedKeyView {
                    key: keys::e2b_form(&issued.key)
                        .ok_or_else(|| anyhow!("the issued key has no E2B spelling"))?,
                    details: issued.details,
                },
                other => return Err(anyhow!("--format must be corral or e2b, not {other:?}")),
            };
            if target.json {
                println!("{}", serde_json::to_string_pretty(&issued)?);
            } else {
                println!("{}", issued.key);
                eprintln!(
                    "key {} ({}{}) issued; store it now, it cannot be shown again",
                    issued.details.id,
                    issued.details.scope,
                    issued
                        .details
                        .tenant
                        .as_deref()
                        .map(|tenant| format!(", tenant {tenant}"))
                        .unwrap_or_default()
                );
            }
        }
        KeysCommand::List { target } => {
            let keys: Vec<KeyView> = match open(&target).await? {
                Some(store) => {
                    let listed = keys::list_keys(store.as_ref(), None).await?;
                    store.close().await;
                    listed.into_iter().map(KeyView::from).collect()
                }
                None => target.server.client()?.list_keys().await?.keys,
            };
            print_keys(&keys, &target)?;
        }
        KeysCommand::Revoke { id, target } => {
            let key = match open(&target).await? {
                Some(store) => {
                    let revoked = keys::revoke_key(store.as_ref(), &id).await?;
                    store.close().await;
                    KeyView::from(revoked)
                }
                None => target.server.client()?.revoke_key(&id).await?,
            };
            print_keys(&[key], &target)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The store to work on offline (`--database-url` or `--data-dir`), or `None` to go through
/// the server.
async fn open(target: &KeysTarget) -> anyhow::Result<Option<Arc<dyn Store>>> {
    if let Some(url) = &target.database_url {
        let store = corral_store::open_store(std::path::Path::new("."), Some(url))
            .await
            .context("opening the store in the PostgreSQL database of --database-url")?;
        return Ok(Some(store));
    }
    match &target.data_dir {
        Some(data_dir) => Ok(Some(
            corral_store::open_store(data_dir, None)
                .await
                .with_context(|| format!("opening the store in {}", data_dir.display()))?,
        )),
        None => Ok(None),
    }
}

fn print_keys(keys: &[KeyView], target: &KeysTarget) -> anyhow::Result<()> {
    if target.json {
        println!("{}", serde_json::to_string_pretty(keys)?);
        return Ok(());
    }
    println!(
        "{:<14} {:<8} {:<20} {:<8} NAME",
        "ID", "SCOPE", "TENANT", "REVOKED"
    );
    for key in keys {
        println!(
            "{:<14} {:<8} {:<20} {:<8} {}",
            key.id,
            key.scope,
            key.tenant.as_deref().unwrap_or("-"),
            if key.revoked_at.is_some() {
                "yes"
            } else {
                "no"
            },
            key.name.as_deref().unwrap_or("")
        );
    }
    Ok(())
}
