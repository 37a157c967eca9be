//! Sessions outliving the server: at start-up, taking over the workers a previous server on
//! this data directory left running (after a crash, or a stop with `shutdown_mode =
//! "detach"`), so each session keeps its id, variables, files, execution count and TTL
//! clocks.
//!
//! The workers' launchers keep them (`corral_sandbox`'s keeper); `corral_worker` connects and
//! brings each back in step. This module decides which workers a session still wants (its
//! record is live, on this node, with a runtime this server offers), ends the others, records
//! an execution the previous server did not see finish, and marks the sessions whose worker
//! is gone `dead` (`server restarted`). It does not start workers or touch the sandbox.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use corral_core::{
    ErrorInfo, ExecutionRecord, ExecutionStatus, OutputItem, SessionId, SessionRecord,
    SessionState, StreamName,
};
use corral_worker::{left_workers, LeftWorker, Worker, WorkerInfo};

use crate::engine::{EngineInner, Launch, RESTART_REASON};
use crate::{fleet, Engine, EngineError};

/// A worker taken over, waiting for its session to be launched.
pub(crate) struct Adopted {
    record: SessionRecord,
    worker: Worker,
    unfinished: Option<ExecutionRecord>,
}

/// The session ids whose worker a previous server left running (by its keeper socket's
/// name): their workspaces must survive the start-up's clean-up.
pub(crate) fn left_session_ids(keeper_dir: Option<&Path>) -> HashSet<SessionId> {
    keeper_dir
        .map(left_workers)
        .unwrap_or_default()
        .iter()
        .filter_map(|left| left.label.parse().ok())
        .collect()
}

/// Connects to every worker left under `keeper_dir` and resumes the ones a live session of
/// this node owns; ends the rest. Runs before the previous run's sessions are marked dead.
pub(crate) async fn take_over(inner: &EngineInner, keeper_dir: &Path) -> Vec<Adopted> {
    let mut adopted = Vec::new();
    for left in left_workers(keeper_dir) {
        match wanted_session(inner, &left).await {
            Some(record) => match resume(inner, &left, record).await {
                Ok(found) => adopted.push(found),
                Err(reason) => {
                    tracing::warn!(session_id = %left.label, %reason, "a session's worker could not be taken over");
                }
            },
            None => end_unwanted(inner, &left).await,
        }
    }
    adopted
}

/// The live record of this node's session that `left` served, if any.
async fn wanted_session(inner: &EngineInner, left: &LeftWorker) -> Option<SessionRecord> {
    let id: SessionId = left.label.parse().ok()?;
    let record = inner.store.get_session(id).await.ok()??;
    if record.state.is_terminal() {
        return None;
    }
    if let Some(fleet) = &inner.fleet {
        let owner = inner.store.session_owner(id).await.ok()?;
        if owner.as_deref() != Some(fleet.node_id.as_str()) {
            return None;
        }
    }
    Some(record)
}

/// Ends a worker no session wants (a warm pool's, or a closed session's).
async fn end_unwanted(inner: &EngineInner, left: &LeftWorker) {
    let workspace = inner.workspaces_dir.join(&left.label);
    if left.end(&inner.worker_config, workspace).await.is_ok() {
        tracing::info!(worker = %left.label, "a worker no session owns was ended");
    }
}

async fn resume(
    inner: &EngineInner,
    left: &LeftWorker,
    mut record: SessionRecord,
) -> Result<Adopted, String> {
    let config = inner
        .runtimes
        .config(&record.runtime)
        .map_err(|error| error.to_string())?;
    let info = inner
        .info
        .runtimes
        .iter()
        .find(|runtime| runtime.name == record.runtime)
        .map(|runtime| WorkerInfo {
            pid: 0,
            language: runtime.language.clone(),
            language_version: runtime.language_version.clone(),
        })
        .unwrap_or_default();
    let workspace = inner.workspaces_dir.join(record.id.to_string());
    let mut worker = match left.connect(config, workspace, info) {
        Ok(worker) => worker,
        Err(corral_worker::AdoptionError::Gone) => {
            left.forget();
            return Err("its worker is gone".to_owned());
        }
        Err(error) => return Err(error.to_string()),
    };
    let mut resumed = match worker.resume(inner.limits.interrupt_grace).await {
        Ok(resumed) => resumed,
        Err(error) => {
            worker.kill().await;
            return Err(error.to_string());
        }
    };
    let now = Utc::now();
    let unfinished = resumed
        .unfinished_execution
        .filter(|count| *count > record.execution_count)
        .map(|count| {
            record.execution_count = count;
            let evalue = if resumed.interrupted {
                "the server stopped while this execution ran; it was interrupted when the \
                 next server took the session over. Its code, and what it printed before the \
                 server stopped, were not kept; what it printed afterwards is below"
            } else {
                "the server stopped before this execution finished; it finished unobserved. \
                 Its code, and what it printed before the server stopped, were not kept"
            };
            let stdout = std::mem::take(&mut resumed.unread_stdout);
            let stderr = std::mem::take(&mut resumed.unread_stderr);
            let outputs = [(StreamName::Stdout, &stdout), (StreamName::Stderr, &stderr)]
                .into_iter()
                .filter(|(_, text)| !text.is_empty())
                .map(|(name, text)| OutputItem::Stream {
                    name,
                    text: text.clone(),
                })
                .collect();
            let traceback = resumed
                .error
                .take()
                .map(|error| error.traceback)
                .unwrap_or_default();
            ExecutionRecord {
                session_id: record.id,
                execution_count: count,
                code: String::new(),
                status: ExecutionStatus::Interrupted,
                result: None,
                stdout,
                stderr,
                outputs,
                error: Some(ErrorInfo {
                    ename: "ServerRestarted".to_owned(),
                    evalue: evalue.to_owned(),
                    traceback,
                }),
                duration_ms: 0,
                truncated: false,
                started_at: now,
                finished_at: now,
            }
        });
    record.state = SessionState::Idle;
    record.state_reason = None;
    Ok(Adopted {
        record,
        worker,
        unfinished,
    })
}

impl Engine {
    /// Marks the previous run's sessions dead, then brings the adopted ones back (the one way
    /// out of `dead`) and launches them; returns how many were adopted and how many marked.
    pub(crate) async fn settle_previous_run(
        &self,
        adopted: Vec<Adopted>,
    ) -> Result<(usize, u64), EngineError> {
        let inner: &Arc<EngineInner> = &self.inner;
        let marked = fleet::mark_previous_run_dead(inner, RESTART_REASON).await?;
        let mut count = 0;
        for Adopted {
            record,
            mut worker,
            unfinished,
        } in adopted
        {
            let id = record.id;
            let Ok((tenant_claim, slot)) = inner.claim_place(&record.tenant) else {
                tracing::warn!(session_id = %id, "no session slot left for an adopted session; it stays dead");
                worker.terminate().await;
                continue;
            };
            match inner.store.revive_session(&record).await {
                Ok(true) => {}
                Ok(false) | Err(_) => {
                    worker.terminate().await;
                    continue;
                }
            }
            if let Some(execution) = &unfinished {
                if let Err(error) = inner
                    .store
                    .record_execution(execution, &record, inner.limits.executions_kept_per_session)
                    .await
                {
                    tracing::error!(session_id = %id, %error, "could not record an execution left unfinished");
                }
            }
            let mut worker_config = match inner.runtimes.config(&record.runtime) {
                Ok(config) => config.clone(),
                Err(_) => {
                    worker.kill().await;
                    continue;
                }
            };
            worker_config.session_limits = record.resources;
            // The adopted worker's stack lives in its launcher; its rules point at the
            // proxy ports in the record, listened on again here.
            let prepared = match inner
                .info
                .network
                .prepare(&record.network, &record.egress_ports)
                .await
            {
                Ok(prepared) => prepared,
                Err(error) => {
                    tracing::error!(session_id = %id, %error, "could not listen for an adopted session's names again");
                    crate::network::PreparedNetwork::default()
                }
            };
            worker_config.network = prepared.setup.clone();
            let workspace = inner.workspaces_dir.join(id.to_string());
            tracing::info!(session_id = %id, execution_count = record.execution_count, "session adopted from the previous server");
            self.launch(
                record,
                worker,
                Launch {
                    worker_config,
                    workspace,
                    slot,
                    tenant_claim,
                    egress: prepared.proxy,
                },
            );
            count += 1;
        }
        if count > 0 {
            crate::measurements::sessions_adopted(count);
        }
        Ok((count, marked.saturating_sub(count as u64)))
    }
}
