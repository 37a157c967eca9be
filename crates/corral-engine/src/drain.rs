//! The clean stop: whether the engine still takes new work, how much accepted work (session
//! creations and executions, queued or running) has not finished yet, and
//! [`Engine::shutdown`], which waits for it and then closes every live session, or
//! [`Engine::detach`], which leaves them running for the next server.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral_core::Principal;
use tokio::sync::Notify;

use crate::session_task::Control;
use crate::{Engine, SHUTDOWN_REASON};

/// Accepted, unfinished work, and the switch that stops new work being accepted.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    unfinished: AtomicUsize,
    closed: AtomicBool,
    finished: Notify,
}

/// One piece of accepted work; dropping it marks the work finished.
#[derive(Debug)]
pub(crate) struct WorkGuard {
    drain: Arc<Drain>,
}

impl Drop for WorkGuard {
    fn drop(&mut self) {
        if self.drain.unfinished.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.drain.finished.notify_waiters();
        }
    }
}

impl Drain {
    /// Counts new work, or `None` once the engine is shutting down.
    pub fn begin(self: &Arc<Self>) -> Option<WorkGuard> {
        // Count first, then look at the switch: `wait_until_finished` sets the switch before
        // it reads the count, so no work can slip between the two unseen.
        self.unfinished.fetch_add(1, Ordering::SeqCst);
        let guard = WorkGuard {
            drain: self.clone(),
        };
        if self.closed.load(Ordering::SeqCst) {
            return None;
        }
        Some(guard)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Refuses new work from now on and waits until the accepted work has finished.
    pub async fn close_and_wait(&self) {
        self.closed.store(true, Ordering::SeqCst);
        loop {
            let finished = self.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            if self.unfinished.load(Ordering::SeqCst) == 0 {
                return;
            }
            finished.await;
        }
    }
}

/// How long closing the sessions at shutdown may take once executions have drained.
const SHUTDOWN_CLOSE_DEADLINE: Duration = Duration::from_secs(10);

impl Engine {
    /// A clean stop: refuses new sessions and executions from now on, lets accepted
    /// executions (running and queued) finish for up to `grace`, then closes every live
    /// session with reason `server shutdown` — killing what still runs, which is recorded as
    /// `killed` — so the store holds every session's final state.
    pub async fn shutdown(&self, grace: Duration) {
        if tokio::time::timeout(grace, self.inner.drain.close_and_wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_seconds = grace.as_secs_f64(),
                "executions still running at the end of the shutdown grace period are killed"
            );
        }
        let mut closing = tokio::task::JoinSet::new();
        for record in self.live_sessions(&Principal::Admin) {
            let engine = self.clone();
            closing.spawn(async move {
                if let Err(error) = engine
                    .close_session(&Principal::Admin, record.id, SHUTDOWN_REASON)
                    .await
                {
                    tracing::error!(session_id = %record.id, %error, "could not close a session at shutdown");
                }
            });
        }
        if tokio::time::timeout(SHUTDOWN_CLOSE_DEADLINE, closing.join_all())
            .await
            .is_err()
        {
            tracing::error!("some sessions did not close at shutdown; they will show as dead");
        }
        self.inner.workers.close().await;
    }

    /// A stop that leaves the sessions to the next server (`shutdown_mode = "detach"`):
    /// refuses new work, lets accepted executions finish for up to `grace`, then lets go of
    /// every session's worker without ending it. The store keeps the sessions live; the next
    /// server on this data directory adopts them (an execution still running then is
    /// interrupted and recorded as such). The warm pool's idle workers are ended.
    pub async fn detach(&self, grace: Duration) {
        if tokio::time::timeout(grace, self.inner.drain.close_and_wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_seconds = grace.as_secs_f64(),
                "executions still running at the end of the shutdown grace period are left to the next server"
            );
        }
        let mut detaching = tokio::task::JoinSet::new();
        for record in self.live_sessions(&Principal::Admin) {
            let Some(live) = self.live(record.id) else {
                continue;
            };
            let (reply, done) = tokio::sync::oneshot::channel();
            if live.control.send(Control::Detach { reply }).is_ok() {
                detaching.spawn(done);
            }
        }
        let count = detaching.len();
        if tokio::time::timeout(SHUTDOWN_CLOSE_DEADLINE, detaching.join_all())
            .await
            .is_err()
        {
            tracing::warn!("some sessions were still running an execution when the server stopped");
        }
        tracing::info!(
            sessions = count,
            "sessions left running for the next server"
        );
        self.inner.workers.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_accepted_work_and_refuses_new_work() {
        let drain = Arc::new(Drain::default());
        let work = drain.begin().expect("open");
        let waiter = {
            let drain = drain.clone();
            tokio::spawn(async move { drain.close_and_wait().await })
        };
        while !drain.is_closed() {
            tokio::task::yield_now().await;
        }
        assert!(drain.begin().is_none(), "closed to new work");
        assert!(!waiter.is_finished());
        drop(work);
        waiter.await.expect("waiter");
    }
}
