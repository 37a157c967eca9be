//! Asking an idle worker about code without running it: completion, inspection and
//! completeness, one request and one reply over the control channel.
//!
//! Only between executions: the engine queues these like executions, so the interpreter is
//! never asked while a cell runs. Output printed meanwhile (by background threads or
//! processes) belongs to no execution and is dropped, as while idle.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use corral_core::{CodeQuery, CodeQueryReply};
use corral_protocol::{WorkerEvent, WorkerRequest};

use crate::worker::Worker;

/// Distinguishes the replies of successive queries.
static NEXT_QUERY: AtomicU64 = AtomicU64::new(1);

/// Why a query got no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("the interpreter did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the worker is gone")]
    WorkerGone,
}

impl Worker {
    /// Asks the worker `query` and waits up to `timeout` for its reply.
    pub async fn query(
        &mut self,
        query: CodeQuery,
        timeout: Duration,
    ) -> Result<CodeQueryReply, QueryError> {
        let id = format!("q{}", NEXT_QUERY.fetch_add(1, Ordering::Relaxed));
        let request = match query {
            CodeQuery::Barrier => return Ok(CodeQueryReply::Barrier),
            CodeQuery::Complete { code, cursor_pos } => WorkerRequest::Complete {
                id: id.clone(),
                code,
                cursor_pos,
            },
            CodeQuery::Inspect {
                code,
                cursor_pos,
                detail_level,
            } => WorkerRequest::Inspect {
                id: id.clone(),
                code,
                cursor_pos,
                detail_level,
            },
            CodeQuery::IsComplete { code } => WorkerRequest::IsComplete {
                id: id.clone(),
                code,
            },
            CodeQuery::Evaluate { expressions } => WorkerRequest::Evaluate {
                id: id.clone(),
                expressions,
            },
        };
        if self.has_exited() || self.send(&request).await.is_err() {
            return Err(QueryError::WorkerGone);
        }
        match tokio::time::timeout(timeout, self.await_reply(&id)).await {
            Ok(answer) => answer,
            Err(_) => {
                // Stuck in user code (a repr, a property): interrupted, it answers nothing
                // and takes the next request.
                if let Err(error) = corral_sandbox::interrupt(self.info.pid) {
                    tracing::debug!(%error, "could not interrupt a query");
                }
                Err(QueryError::Timeout(timeout))
            }
        }
    }

    async fn await_reply(&mut self, id: &str) -> Result<CodeQueryReply, QueryError> {
        loop {
            tokio::select! {
                event = self.events.recv(), if self.events_open => match event {
                    Some(Ok(event)) => if let Some(reply) = reply_for(event, id) {
                        return Ok(reply);
                    },
                    Some(Err(error)) => {
                        tracing::warn!(%error, "worker sent a malformed frame");
                        return Err(QueryError::WorkerGone);
                    }
                    None => {
                        self.events_open = false;
                        return Err(QueryError::WorkerGone);
                    }
                },
                chunk = self.stdout.recv(), if self.stdout_open => {
                    if chunk.is_none() { self.stdout_open = false }
                }
                chunk = self.stderr.recv(), if self.stderr_open => {
                    if chunk.is_none() { self.stderr_open = false }
                }
                else => return Err(QueryError::WorkerGone),
            }
        }
    }
}

/// The reply in `event` when it answers query `id`.
fn reply_for(event: WorkerEvent, id: &str) -> Option<CodeQueryReply> {
    match event {
        WorkerEvent::CompleteReply {
            id: answered,
            matches,
            cursor_start,
            cursor_end,
        } if answered == id => Some(CodeQueryReply::Complete {
            matches,
            cursor_start,
            cursor_end,
        }),
        WorkerEvent::InspectReply {
            id: answered,
            found,
            data,
        } if answered == id => Some(CodeQueryReply::Inspect { found, data }),
        WorkerEvent::IsCompleteReply {
            id: answered,
            status,
            indent,
        } if answered == id => Some(CodeQueryReply::IsComplete { status, indent }),
        WorkerEvent::EvaluateReply {
            id: answered,
            results,
        } if answered == id => Some(CodeQueryReply::Evaluate { results }),
        other => {
            tracing::debug!(?other, "frame while waiting for a query reply ignored");
            None
        }
    }
}
