//! Restarting a dead session: a session whose worker is gone (killed for memory or a
//! timeout, or `server restarted`) gets a fresh worker under the same id, as a Jupyter user
//! expects from "Restart kernel". Its history and execution count are kept; its interpreter
//! state and workspace files start empty (the workspace went with the dead worker).
//!
//! Closed sessions stay closed. Restarting a live session is `session_task`'s business
//! (`Control::Restart`); this module only brings back sessions that have no task.

use chrono::Utc;
use corral_core::{Principal, SessionId, SessionRecord, SessionState};
use corral_worker::Worker;

use crate::engine::Launch;
use crate::{measurements, Engine, EngineError};

/// Longest wait for a dying session's task to finish recording its end.
const END_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Engine {
    /// Gives the dead session `id` a fresh worker; the session is `idle` and accepts
    /// executions again. A session that is live by now (another restart won) is returned as
    /// it is; a closed one is [`EngineError::SessionNotRunning`].
    pub(crate) async fn revive(
        &self,
        caller: &Principal,
        id: SessionId,
    ) -> Result<SessionRecord, EngineError> {
        // One revival at a time, so two restarts of one dead session make one worker.
        let _revivals = self.inner.revivals.lock().await;
        // Whoever may not see the session learns nothing more than "not found".
        self.get_session(caller, id).await?;
        if let Some(current) = self.wait_until_ended_or_live(id).await? {
            return Ok(current);
        }
        let mut record = self.get_session(caller, id).await?;
        let starting = record
            .state
            .transition(SessionState::Starting)
            .map_err(|_| EngineError::SessionNotRunning {
                id,
                state: record.state,
                reason: record.state_reason.clone(),
            })?;
        let Some(_work) = self.inner.drain.begin() else {
            return Err(EngineError::ShuttingDown);
        };
        let (tenant_claim, slot) = self.inner.claim_place(&record.tenant)?;
        // The session's own runtime (a JavaScript session comes back as JavaScript).
        let mut worker_config = self.inner.runtimes.config(&record.runtime)?.clone();
        worker_config.session_limits = record.resources;
        let prepared = self
            .inner
            .info
            .network
            // Fresh proxy ports: the fresh worker gets fresh rules, and the dead worker's
            // proxy may still hold its old ports for a moment.
            .prepare(&record.network, &[])
            .await?;
        worker_config.network = prepared.setup.clone();
        record.egress_ports = prepared.egress_ports();
        let workspace = self.inner.workspaces_dir.join(id.to_string());
        let clock = std::time::Instant::now();
        let worker = Worker::start(&worker_config, workspace.clone())
            .await
            .map_err(|error| EngineError::WorkerStart(error.to_string()))?;
        let previous_reason = record.state_reason.take();
        record.state = starting
            .transition(SessionState::Idle)
            .unwrap_or(SessionState::Idle);
        record.accepting_executions = true;
        record.last_activity_at = Utc::now();
        let revived = match self.inner.store.revive_session(&record).await {
            Ok(true) => Ok(()),
            // Closed meanwhile (or not dead at all): it stays as the store has it.
            Ok(false) => Err(self.ended_error(id).await),
            Err(error) => Err(error.into()),
        };
        if let Err(error) = revived {
            let mut worker = worker;
            worker.kill().await;
            worker.remove_workspace();
            return Err(error);
        }
        tracing::info!(
            session_id = %id,
            previous_reason = previous_reason.as_deref().unwrap_or(""),
            "dead session restarted with a fresh worker"
        );
        self.launch(
            record.clone(),
            worker,
            Launch {
                worker_config,
                workspace,
                slot,
                tenant_claim,
                egress: prepared.proxy,
            },
        );
        self.inner.reaper_wake.notify_one();
        measurements::session_started(clock.elapsed(), corral_worker::Origin::Fresh);
        Ok(record)
    }

    /// A session that just died is still registered while its task records the end: waits
    /// (up to [`END_WAIT`]) until it has left the live set. `Some` is a session that is live
    /// (another restart brought it back); `None`, one with no task.
    async fn wait_until_ended_or_live(
        &self,
        id: SessionId,
    ) -> Result<Option<SessionRecord>, EngineError> {
        let deadline = tokio::time::Instant::now() + END_WAIT;
        loop {
            let left = self.inner.session_left.notified();
            tokio::pin!(left);
            left.as_mut().enable();
            let Some(live) = self.live(id) else {
                return Ok(None);
            };
            let current = live.snapshot();
            drop(live);
            if !current.state.is_terminal() {
                return Ok(Some(current));
            }
            if tokio::time::timeout_at(deadline, left).await.is_err() {
                return Err(EngineError::SessionNotRunning {
                    id,
                    state: current.state,
                    reason: current.state_reason,
                });
            }
        }
    }
}
