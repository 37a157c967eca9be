//! `corral-store`: durable records of sessions, executions, tenants and API keys — the only
//! crate with SQL.
//!
//! Owns the [`Store`] trait and its two implementations: SQLite (`sqlite`: one file in the
//! data directory, WAL, the default) and PostgreSQL (`postgres`: one database shared by a
//! fleet of nodes), each with its own migrations under `migrations/<backend>/` and the same
//! behaviour (one test suite, `tests/store_suite.rs`, runs against both). Rows become records
//! in `records`, shared by both. `group_commit` batches concurrent execution records into one
//! transaction per batch.
//!
//! Deliberately holds no live state: which sessions are running, and their workers, belong to
//! the engine; which node is alive is decided by the engine's `fleet` module from the leases
//! stored here. This crate only remembers, atomically where several nodes race.

mod group_commit;
mod postgres;
mod records;
mod sqlite;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use corral_core::{
    ApiKeyRecord, ExecutionRecord, ExecutionTiming, NodeLoad, NodeRecord, SessionId, SessionRecord,
    SessionState,
};

pub use group_commit::GroupCommit;
pub use postgres::{scratch_database, PostgresStore};
pub use sqlite::SqliteStore;

/// Opens the store a server or an offline command uses: the PostgreSQL database at
/// `database_url` when given, else the SQLite file in `data_dir`.
pub async fn open_store(
    data_dir: &Path,
    database_url: Option<&str>,
) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match database_url {
        Some(url) => Arc::new(PostgresStore::connect(url).await?),
        None => Arc::new(SqliteStore::open(data_dir).await?),
    })
}

/// Failures of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("database URL: {0}")]
    DatabaseUrl(String),
    #[error("the execution writer stopped")]
    WriterStopped,
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
    #[error("data directory {path}: {source}")]
    DataDirectory {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// The database could not be reached (no connection in time, connection refused or lost):
    /// a passing condition a client may retry, unlike a failed statement or corrupt data.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
            )
        )
    }
}

/// One finished execution to record: the execution, its session's new state, and how many of
/// the session's executions to keep.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutionWrite {
    pub execution: ExecutionRecord,
    pub session: SessionRecord,
    pub keep_last: u64,
}

/// What [`Store::insert_claimed_session`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimedInsert {
    /// The session is stored and holds the claim.
    Inserted,
    /// Nothing was stored: this live session of the tenant holds the claim.
    AlreadyClaimed(SessionId),
    /// Nothing was stored: the tenant has its maximum of live sessions.
    TenantFull,
}

/// How many times an insert of a claimed session is tried when its claim was held but the
/// holder ended before it could be named.
pub(crate) const CLAIM_ATTEMPTS: usize = 3;

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
    /// Replaces the stored record of an existing session, unless the stored one has ended
    /// (`closed` or `dead` is final: a node that lost its lease cannot bring its sessions
    /// back).
    async fn update_session(&self, session: &SessionRecord) -> Result<(), StoreError>;
    /// Replaces the stored record of a `dead` session with `session` (a restart gave it a
    /// fresh worker): the one way out of an ended state. `false` when the stored session is
    /// not dead (closed sessions stay closed).
    async fn revive_session(&self, session: &SessionRecord) -> Result<bool, StoreError>;
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
    ) -> Result<(), StoreError> {
        let write = ExecutionWrite {
            execution: execution.clone(),
            session: session.clone(),
            keep_last,
        };
        self.record_executions(std::slice::from_ref(&write)).await
    }
    /// Records several finished executions (of one session or many), each as
    /// [`Store::record_execution`] would, in order and in one transaction: all or none. The
    /// group commit ([`GroupCommit`]) writes concurrent executions this way.
    async fn record_executions(&self, batch: &[ExecutionWrite]) -> Result<(), StoreError>;
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

    /// Records a new session owned by `owner` (a node id), unless its tenant already has
    /// `max_live_in_tenant` live sessions in the store (across every node): then nothing is
    /// stored and the answer is `false`. Concurrent inserts of one tenant, from any node, are
    /// serialised so that the limit holds.
    async fn insert_owned_session(
        &self,
        session: &SessionRecord,
        owner: &str,
        max_live_in_tenant: Option<u64>,
    ) -> Result<bool, StoreError>;
    /// Records a new session that holds `claim` (a caller-chosen identity, unique among
    /// its tenant's live sessions), owned by `owner` when given and within
    /// `max_live_in_tenant` as [`Store::insert_owned_session`]: nothing is stored when a
    /// live session of the tenant already holds the claim (its id is the answer) or the
    /// tenant is full. Concurrent inserts of one claim, from any node, store one session. The
    /// claim is given back when its session ends (`closed` or `dead`), however it ends.
    async fn insert_claimed_session(
        &self,
        session: &SessionRecord,
        claim: &str,
        owner: Option<&str>,
        max_live_in_tenant: Option<u64>,
    ) -> Result<ClaimedInsert, StoreError>;
    /// Live session `id` holds `claim` from now on, in place of any claim it held, taking it
    /// from session `from` when given (an identity moving from one session to another) — in
    /// one transaction. `Some(holder)` when another live session of the tenant holds it:
    /// then nothing changed. A session that is not live holds nothing (`None`).
    async fn hold_claim(
        &self,
        id: SessionId,
        claim: &str,
        from: Option<SessionId>,
    ) -> Result<Option<SessionId>, StoreError>;
    /// Session `id` no longer holds `claim` (its holder's own identity moved elsewhere).
    async fn release_claim(&self, id: SessionId, claim: &str) -> Result<(), StoreError>;
    /// The live session of `tenant` that holds `claim`, if any.
    async fn claimed_session(
        &self,
        tenant: &str,
        claim: &str,
    ) -> Result<Option<SessionId>, StoreError>;
    /// The node that owns a session, if it has one (sessions of a single-node server
    /// before fleets existed have none).
    async fn session_owner(&self, id: SessionId) -> Result<Option<String>, StoreError>;
    /// Every live session owned by `node` becomes `dead` with `reason`. Returns how many.
    async fn mark_node_sessions_dead(
        &self,
        node: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
    /// Registers a node, or registers it again: its address, start, lease and load are
    /// replaced and it is no longer lost. Sessions it owned before stay as they are.
    async fn register_node(&self, node: &NodeRecord) -> Result<(), StoreError>;
    /// Extends a node's lease and records its load; `false` when the node is unknown or was
    /// declared lost (it must register again, and its old sessions stay dead).
    async fn renew_node_lease(
        &self,
        id: &str,
        now: DateTime<Utc>,
        lease_expires_at: DateTime<Utc>,
        load: &NodeLoad,
    ) -> Result<bool, StoreError>;
    /// Every registered node, by id.
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError>;
    /// Declares lost every node whose lease expired before `now` and that is not lost yet,
    /// and marks its live sessions `dead` with `reason`, in one transaction per node: of
    /// several nodes racing, exactly one declares each node lost. Returns each node declared
    /// lost here with how many of its sessions died.
    async fn declare_lapsed_nodes_lost(
        &self,
        now: DateTime<Utc>,
        reason: &str,
    ) -> Result<Vec<(String, u64)>, StoreError>;
    /// Closes the connections (SQLite checkpoints its WAL).
    /// Takes one of `tenant`'s `limit` executions in flight across the fleet, for `node`:
    /// false when the tenant's live nodes already have `limit`. A store of one node (SQLite)
    /// counts nothing here and always agrees: the engine's own count is exact there.
    async fn claim_fleet_execution(
        &self,
        _node: &str,
        _tenant: &str,
        _limit: u64,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// Gives back what [`Store::claim_fleet_execution`] took.
    async fn release_fleet_execution(&self, _node: &str, _tenant: &str) -> Result<(), StoreError> {
        Ok(())
    }

    async fn close(&self);
}
