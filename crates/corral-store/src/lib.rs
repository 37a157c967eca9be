//! `corral-store`: durable records of sessions, executions, tenants and API keys — the only
//! crate with SQL.
//!
//! Owns the [`Store`] trait, its SQLite implementation (WAL, created on first start) and the
//! schema migrations under `migrations/`. PostgreSQL, for fleets of nodes, is a second
//! implementation of the same trait with the same schema (a later step).
//!
//! Deliberately holds no live state: which sessions are running, and their workers, belong to
//! the engine; this crate only remembers.

mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use corral_core::{
    ApiKeyRecord, ExecutionRecord, ExecutionTiming, SessionId, SessionRecord, SessionState,
};

pub use sqlite::SqliteStore;

/// Failures of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
    #[error("data directory {path}: {source}")]
    DataDirectory {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Which sessions to list: optionally one state, after a cursor, at most `limit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionQuery {
    pub state: Option<SessionState>,
    /// Only this tenant's sessions; `None` for every tenant.
    pub tenant: Option<String>,
    /// Only sessions whose id sorts after this one (ids are time-ordered).
    pub after: Option<SessionId>,
    pub limit: u32,
}

/// Durable storage of sessions and executions.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError>;
    /// Replaces the stored record of an existing session.
    async fn update_session(&self, session: &SessionRecord) -> Result<(), StoreError>;
    async fn get_session(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError>;
    /// Sessions in id (creation) order.
    async fn list_sessions(&self, query: &SessionQuery) -> Result<Vec<SessionRecord>, StoreError>;
    /// Records a finished execution and the session's new state in one transaction, and
    /// removes the session's executions older than the last `keep_last`.
    async fn record_execution(
        &self,
        execution: &ExecutionRecord,
        session: &SessionRecord,
        keep_last: u64,
    ) -> Result<(), StoreError>;
    async fn get_execution(
        &self,
        session_id: SessionId,
        execution_count: u64,
    ) -> Result<Option<ExecutionRecord>, StoreError>;
    /// The timing of every stored execution of a session, in order (no code or output).
    async fn list_execution_timings(
        &self,
        session_id: SessionId,
    ) -> Result<Vec<ExecutionTiming>, StoreError>;
    /// Executions in order, after `after_count`, at most `limit`.
    async fn list_executions(
        &self,
        session_id: SessionId,
        after_count: Option<u64>,
        limit: u32,
    ) -> Result<Vec<ExecutionRecord>, StoreError>;
    /// At start-up: every session the store still thinks is live becomes `dead` with
    /// `reason`. Returns how many.
    async fn mark_live_sessions_dead(
        &self,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
    /// Removes closed and dead sessions that ended before `ended_before`, with their
    /// executions and session keys. Returns how many sessions.
    async fn remove_ended_sessions(&self, ended_before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// When the longest-ended closed or dead session ended, if there is one.
    async fn oldest_ended_session(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Stores a new key, creating its tenant if it is new.
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;
    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// Keys in creation order (revoked ones included), optionally of one tenant.
    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Marks a key revoked; `false` if there is no such key or it was already revoked.
    async fn revoke_api_key(&self, id: &str, now: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Whether any admin or tenant key is not revoked (none means the server may run open).
    /// Session keys do not count: each reaches one session only, so it cannot administer
    /// the server, and minting one (as the agent sessions API does) must not close open mode.
    async fn has_active_api_keys(&self) -> Result<bool, StoreError>;
}
