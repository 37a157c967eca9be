//! The reaper: closes live sessions whose idle TTL or max TTL has run out, recording
//! `idle timeout` or `max lifetime` as the reason, and removes the records of sessions that
//! ended longer ago than the retention period.
//!
//! It sleeps until the earliest moment a session could expire (or until woken because a
//! session was created or refreshed) and never holds the engine alive: it stops when the
//! engine is dropped or shuts down. Which session has expired is decided by
//! [`corral_core::SessionRecord::expiry`]; closing is [`Engine::close_session`].

use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use corral_core::Principal;
use tokio::sync::Notify;

use crate::engine::{Engine, EngineInner};
use crate::EngineError;

/// Longest nap between checks when no session is close to expiring.
const LONGEST_NAP: Duration = Duration::from_secs(60);
/// Shortest nap, so a clock that disagrees with the deadlines cannot spin the loop.
const SHORTEST_NAP: Duration = Duration::from_millis(10);

pub(crate) async fn run_reaper(engine: Weak<EngineInner>, wake: Arc<Notify>) {
    // When the next ended session's record is due for removal, once known; `None` means
    // "ask the store" (at start, and while it holds no ended session).
    let mut removal_due: Option<DateTime<Utc>> = None;
    loop {
        let nap = {
            let Some(inner) = engine.upgrade() else {
                return;
            };
            let engine = Engine::from_inner(inner);
            if engine.is_shutting_down() {
                return;
            }
            let now = Utc::now();
            let sessions = engine.live_sessions(&Principal::Admin);
            let mut expired = tokio::task::JoinSet::new();
            for session in &sessions {
                if let Some(expiry) = session.expiry(now) {
                    tracing::info!(session_id = %session.id, reason = expiry.reason(), "session expired");
                    let engine = engine.clone();
                    let id = session.id;
                    expired.spawn(async move {
                        if let Err(error) = engine
                            .close_session(&Principal::Admin, id, expiry.reason())
                            .await
                        {
                            tracing::error!(session_id = %id, %error, "could not close an expired session");
                        }
                    });
                }
            }
            if !expired.is_empty() {
                expired.join_all().await;
                continue;
            }
            // Ended sessions past their retention period go from the store. The store is
            // written only when a removal is due.
            if removal_due.is_none() {
                removal_due = engine.next_record_removal().await.unwrap_or_else(|error| {
                    tracing::error!(%error, "could not read when ended sessions expire");
                    None
                });
            }
            if removal_due.is_some_and(|due| due <= now) {
                removal_due = engine
                    .remove_expired_records()
                    .await
                    .unwrap_or_else(|error| {
                        tracing::error!(%error, "could not remove ended sessions past retention");
                        None
                    });
            }
            let next_removal = removal_due;
            sessions
                .iter()
                .filter_map(|session| session.next_expiry_check(now))
                .chain(next_removal)
                .min()
                .map(|next| (next - now).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(LONGEST_NAP)
                .clamp(SHORTEST_NAP, LONGEST_NAP)
        };
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = wake.notified() => {}
        }
    }
}

impl Engine {
    fn ended_session_retention(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.inner.limits.ended_session_retention)
            .unwrap_or(chrono::Duration::MAX)
    }

    /// When the longest-ended stored session is due for removal (`None`: none is stored).
    pub(crate) async fn next_record_removal(
        &self,
    ) -> Result<Option<chrono::DateTime<Utc>>, EngineError> {
        let retention = self.ended_session_retention();
        Ok(self
            .inner
            .store
            .oldest_ended_session()
            .await?
            .and_then(|ended| ended.checked_add_signed(retention)))
    }

    /// Removes the records of sessions that ended more than the retention period ago, and
    /// says when the next one is due (`None`: no ended session is stored).
    pub(crate) async fn remove_expired_records(
        &self,
    ) -> Result<Option<chrono::DateTime<Utc>>, EngineError> {
        let now = Utc::now();
        let cutoff = now
            .checked_sub_signed(self.ended_session_retention())
            .unwrap_or(now);
        let removed = self.inner.store.remove_ended_sessions(cutoff).await?;
        if removed > 0 {
            tracing::info!(
                sessions = removed,
                "ended sessions past their retention removed"
            );
        }
        self.next_record_removal().await
    }
}
