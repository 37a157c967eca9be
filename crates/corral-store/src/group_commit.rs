//! Group commit of execution records: one writer task per store takes every finished
//! execution waiting to be recorded and writes them in one transaction
//! ([`Store::record_executions`]), so that concurrent sessions share a commit instead of
//! queueing for SQLite's single writer one transaction each.
//!
//! Durability is unchanged: [`GroupCommit::record`] answers only after the transaction that
//! holds its execution committed, so nothing acknowledged is lost. A batch is what arrived
//! while the previous one was being written (no timer, no waiting for company): a lone
//! execution is written at once. If a batch fails, each of its executions is written again on
//! its own, so one bad record fails only its own caller.
//!
//! Deliberately does not decide what to record (the engine's session task does) and keeps no
//! records in memory beyond the batch in flight. The queue is unbounded because every caller
//! waits for its answer: it never holds more than one execution per live session.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::{ExecutionWrite, Store, StoreError};

/// Executions written in one transaction at most.
const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<ExecutionWrite, StoreError>>;

/// A handle on the writer task; cheap to clone. The task ends when every handle is dropped.
#[derive(Clone, Debug)]
pub struct GroupCommit {
    queue: mpsc::UnboundedSender<(ExecutionWrite, Reply)>,
}

impl GroupCommit {
    /// Starts the writer task for `store` on the current tokio runtime.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(store, waiting));
        GroupCommit { queue }
    }

    /// Records `write` durably, batched with whatever other executions are waiting; returns
    /// it once its transaction committed.
    pub async fn record(&self, write: ExecutionWrite) -> Result<ExecutionWrite, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((write, reply))
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }
}

async fn write_batches(
    store: Arc<dyn Store>,
    mut waiting: mpsc::UnboundedReceiver<(ExecutionWrite, Reply)>,
) {
    let mut writes = Vec::with_capacity(MAX_BATCH);
    let mut replies = Vec::with_capacity(MAX_BATCH);
    while let Some((write, reply)) = waiting.recv().await {
        writes.push(write);
        replies.push(reply);
        while writes.len() < MAX_BATCH {
            match waiting.try_recv() {
                Ok((write, reply)) => {
                    writes.push(write);
                    replies.push(reply);
                }
                Err(_) => break,
            }
        }
        match store.record_executions(&writes).await {
            Ok(()) => {
                for (write, reply) in writes.drain(..).zip(replies.drain(..)) {
                    let _ = reply.send(Ok(write));
                }
            }
            Err(error) if writes.len() == 1 => {
                writes.clear();
                if let Some(reply) = replies.pop() {
                    let _ = reply.send(Err(error));
                }
            }
            Err(error) => {
                tracing::warn!(%error, executions = writes.len(), "a batch of executions failed; writing each on its own");
                for (write, reply) in writes.drain(..).zip(replies.drain(..)) {
                    let result = store
                        .record_executions(std::slice::from_ref(&write))
                        .await
                        .map(|()| write);
                    let _ = reply.send(result);
                }
            }
        }
    }
}
