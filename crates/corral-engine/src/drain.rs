//! Shutdown bookkeeping: whether the engine still takes new work, and how much accepted work
//! (session creations and executions, queued or running) has not finished yet.
//!
//! Only counts and waits; closing the sessions afterwards is `Engine::shutdown`'s job.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

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
