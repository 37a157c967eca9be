//! What interactive clients (a Jupyter front-end, an editor) ask of a live session besides
//! executions: questions about code answered by its interpreter in queue order, and the
//! session's signals (restarts, its end) to follow.
//!
//! Executions themselves, with their input channel and cancellation, are submitted through
//! [`Engine::submit_with`]; this module adds nothing to how they run.

use corral_core::{CodeQuery, CodeQueryReply, Principal, SessionId};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::session_task::{Job, QueryJob, SessionSignal};
use crate::{measurements, Engine, EngineError};

impl Engine {
    /// Asks the session's interpreter `query`, after whatever is queued before it (so the
    /// answer sees the state those executions leave).
    pub async fn query(
        &self,
        caller: &Principal,
        id: SessionId,
        query: CodeQuery,
    ) -> Result<CodeQueryReply, EngineError> {
        self.submit_query(caller, id, query).await?.answer().await
    }

    /// Queues `query` behind what the session's queue holds now; its answer comes from
    /// [`PendingQuery::answer`]. Errors known up front (not found, ended, queue full, too
    /// large) come from here.
    pub async fn submit_query(
        &self,
        caller: &Principal,
        id: SessionId,
        query: CodeQuery,
    ) -> Result<PendingQuery, EngineError> {
        let code_bytes = match &query {
            CodeQuery::Complete { code, .. }
            | CodeQuery::Inspect { code, .. }
            | CodeQuery::IsComplete { code } => code.len(),
            CodeQuery::Evaluate { expressions } => expressions
                .iter()
                .map(|(name, expression)| name.len() + expression.len())
                .sum(),
            CodeQuery::Barrier => 0,
        };
        if code_bytes > self.limits().max_code_bytes {
            return Err(EngineError::InvalidInput(format!(
                "code is {code_bytes} bytes; the limit is {}",
                self.limits().max_code_bytes
            )));
        }
        let live = self.require_live(caller, id).await?;
        let (reply, answer) = oneshot::channel();
        match live.jobs.try_send(Job::Query(QueryJob { query, reply })) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                measurements::refused("execution_queue");
                return Err(EngineError::QueueFull {
                    id,
                    capacity: self.limits().queue_capacity,
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(self.ended_error(id).await),
        }
        Ok(PendingQuery {
            engine: self.clone(),
            session_id: id,
            answer,
        })
    }

    /// Follows a live session: its restarts as they happen; the channel closes when the
    /// session ends.
    pub async fn session_signals(
        &self,
        caller: &Principal,
        id: SessionId,
    ) -> Result<broadcast::Receiver<SessionSignal>, EngineError> {
        let live = self.require_live(caller, id).await?;
        Ok(live.signals.subscribe())
    }
}

/// A queued question about code; [`PendingQuery::answer`] waits for the interpreter's answer.
pub struct PendingQuery {
    engine: Engine,
    session_id: SessionId,
    answer: oneshot::Receiver<Result<CodeQueryReply, EngineError>>,
}

impl PendingQuery {
    pub async fn answer(self) -> Result<CodeQueryReply, EngineError> {
        match self.answer.await {
            Ok(result) => result,
            Err(_) => Err(self.engine.ended_error(self.session_id).await),
        }
    }
}
